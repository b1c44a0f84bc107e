/*
 * store_test_util.h: entries, sinks and snapshots shared by the store
 * tests.  Header-only (static functions) so each test program stands alone.
 */
#ifndef STORE_TEST_UTIL_H
#define STORE_TEST_UTIL_H

#include <stdint.h>
#include <string.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/sys/store.h"
#include "sync_protocol/sys/transport.h"

static const char *const st_model_types[] = {"Tag", "Location", "", "File"};

/* Deterministic payload byte `i` of entry `k`. */
static inline uint8_t st_byte(unsigned k, size_t i) {
  return (uint8_t)((k * 131u + i * 7u + (i >> 8)) & 0xffu);
}

/* Fill `buf` (len bytes) with entry k's payload. */
static inline void st_fill(uint8_t *buf, size_t len, unsigned k) {
  for (size_t i = 0; i < len; ++i) {
    buf[i] = st_byte(k, i);
  }
}

/* An entry derived from `k`; `data` (len bytes) must be st_fill'ed by k. */
static inline sp_entry st_entry(sp_seq seq, unsigned k, const uint8_t *data,
                                size_t len) {
  sp_entry e;

  memset(&e, 0, sizeof(e));
  e.sequence = seq;
  memset(e.device_id.bytes, (int)(k & 0xff), 16);
  e.device_id.bytes[0] = 0xd0;
  e.timestamp_ms = 1700000000000ull + k;
  e.model_type = st_model_types[k % 4];
  e.model_type_len = strlen(e.model_type);
  memset(e.record_id.bytes, (int)((k * 3) & 0xff), 16);
  e.record_id.bytes[15] = 0x7e;
  e.change_type = (sp_change_type)(k % 4);
  e.version = (int64_t)k * 1000 - 5;
  e.data = len ? data : NULL;
  e.data_len = len;
  return e;
}

/* 1 if `got` carries exactly the fields of `want` (pointers aside). */
static inline int st_entry_equal(const sp_entry *got, const sp_entry *want) {
  return got->sequence == want->sequence &&
         memcmp(got->device_id.bytes, want->device_id.bytes, 16) == 0 &&
         got->timestamp_ms == want->timestamp_ms &&
         got->model_type_len == want->model_type_len &&
         (got->model_type_len == 0 ||
          memcmp(got->model_type, want->model_type, got->model_type_len) ==
              0) &&
         memcmp(got->record_id.bytes, want->record_id.bytes, 16) == 0 &&
         got->change_type == want->change_type &&
         got->version == want->version && got->data_len == want->data_len &&
         got->origin_seq == want->origin_seq &&
         (got->data_len == 0 ||
          memcmp(got->data, want->data, got->data_len) == 0);
}

/* A sink that records what it is fed and can stop or fail on demand. */
#define ST_COLLECT_MAX 256
typedef struct st_collect {
  sp_seq seqs[ST_COLLECT_MAX];
  uint64_t origins[ST_COLLECT_MAX];
  uint8_t hashes[ST_COLLECT_MAX][SP_HASH_LEN];
  size_t n;
  /* Return SP_SINK_STOP when offered the entry with this sequence (0 =
   * never). */
  sp_seq stop_at;
  /* Return `err` when offered the entry with this sequence (0 = never). */
  sp_seq fail_at;
  int err;
  /* Running digest of everything taken (fields, payload and hash). */
  uint64_t digest;
} st_collect;

static inline uint64_t st_mix(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; ++i) {
    h = (h ^ b[i]) * 1099511628211ull;
  }
  return h;
}

static inline uint64_t st_entry_digest(uint64_t h, const sp_entry *e,
                                       const uint8_t hash[SP_HASH_LEN]) {
  uint64_t ct = (uint64_t)e->change_type;
  h = st_mix(h, &e->sequence, sizeof(e->sequence));
  h = st_mix(h, e->device_id.bytes, 16);
  h = st_mix(h, &e->timestamp_ms, sizeof(e->timestamp_ms));
  h = st_mix(h, &e->model_type_len, sizeof(e->model_type_len));
  h = st_mix(h, e->model_type, e->model_type_len);
  h = st_mix(h, e->record_id.bytes, 16);
  h = st_mix(h, &ct, sizeof(ct));
  h = st_mix(h, &e->version, sizeof(e->version));
  h = st_mix(h, &e->data_len, sizeof(e->data_len));
  if (e->data_len) {
    h = st_mix(h, e->data, e->data_len);
  }
  h = st_mix(h, &e->origin_seq, sizeof(e->origin_seq));
  return hash ? st_mix(h, hash, SP_HASH_LEN) : h;
}

static inline void st_collect_init(st_collect *c) {
  memset(c, 0, sizeof(*c));
  c->digest = 14695981039346656037ull;
}

static inline int st_collect_sink(const sp_entry *entry,
                                  const uint8_t hash[SP_HASH_LEN],
                                  void *ctx) {
  st_collect *c = ctx;

  if (c->stop_at && entry->sequence == c->stop_at) {
    return SP_SINK_STOP;
  }
  if (c->fail_at && entry->sequence == c->fail_at) {
    return c->err;
  }
  if (c->n < ST_COLLECT_MAX) {
    c->seqs[c->n] = entry->sequence;
    c->origins[c->n] = entry->origin_seq;
    if (hash) {
      memcpy(c->hashes[c->n], hash, SP_HASH_LEN);
    }
  }
  ++c->n;
  c->digest = st_entry_digest(c->digest, entry, hash);
  return 0;
}

/* Everything observable through a store vtable, to prove "unchanged". */
typedef struct st_snapshot {
  int bounds_rv, state_rv, read_rv;
  sp_log_bounds bounds;
  sp_store_state state;
  size_t count;
  uint64_t digest;
} st_snapshot;

static inline void st_snapshot_take(const sp_store *vt, st_snapshot *s) {
  st_collect c;

  memset(s, 0, sizeof(*s));
  st_collect_init(&c);
  s->bounds_rv = vt->bounds(&s->bounds, vt->user_data);
  s->state_rv = vt->state(&s->state, vt->user_data);
  s->read_rv = vt->read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                        vt->user_data);
  s->count = c.n;
  s->digest = c.digest;
}

static inline int st_snapshot_equal(const st_snapshot *a,
                                    const st_snapshot *b) {
  return a->bounds_rv == b->bounds_rv && a->state_rv == b->state_rv &&
         a->read_rv == b->read_rv &&
         a->bounds.pruned_through == b->bounds.pruned_through &&
         a->bounds.latest == b->bounds.latest &&
         a->state.applied == b->state.applied &&
         memcmp(a->state.head_hash, b->state.head_hash, SP_HASH_LEN) == 0 &&
         a->state.epoch == b->state.epoch && a->count == b->count &&
         a->digest == b->digest;
}

/* ---- follower positions (store vtable version 2) ---- */

#define ST_MAX_FACKS 8

typedef struct st_facks {
  size_t n;
  sp_uuid device[ST_MAX_FACKS];
  uint8_t key[ST_MAX_FACKS][SP_PUBLIC_KEY_LEN];
  sp_seq acked[ST_MAX_FACKS];
  uint8_t hash[ST_MAX_FACKS][SP_HASH_LEN];
  int fail_at; /* > 0: the sink fails with SP_ERR_CANCELED on this call */
} st_facks;

static inline int st_facks_sink(const sp_uuid *device,
                                const uint8_t key[SP_PUBLIC_KEY_LEN],
                                sp_seq acked, const uint8_t hash[SP_HASH_LEN],
                                void *ctx) {
  st_facks *f = ctx;

  if (f->fail_at > 0 && (size_t)f->fail_at == f->n + 1) {
    return SP_ERR_CANCELED;
  }
  if (f->n == ST_MAX_FACKS) {
    return SP_ERR_NOBUF;
  }
  f->device[f->n] = *device;
  memcpy(f->key[f->n], key, SP_PUBLIC_KEY_LEN);
  f->acked[f->n] = acked;
  memcpy(f->hash[f->n], hash, SP_HASH_LEN);
  f->n++;
  return 0;
}

/* Position kept for `tag`'s device in `f`, or -1 (its key in `key`; its
 * hash must be the key's first byte repeated, as the check saves them). */
static inline long long st_facks_find(const st_facks *f, uint8_t tag,
                                      uint8_t key[SP_PUBLIC_KEY_LEN]) {
  for (size_t i = 0; i < f->n; ++i) {
    if (f->device[i].bytes[0] == tag) {
      for (size_t j = 0; j < SP_HASH_LEN; ++j) {
        if (f->hash[i][j] != f->key[i][0]) {
          return -2;
        }
      }
      memcpy(key, f->key[i], SP_PUBLIC_KEY_LEN);
      return (long long)f->acked[i];
    }
  }
  return -1;
}

static inline sp_uuid st_fack_device(uint8_t tag) {
  sp_uuid u;
  memset(&u, 0x5a, sizeof(u));
  u.bytes[0] = tag;
  return u;
}

/* Saves for two devices, a replacement (position and key together), a
 * failing sink; returns 0 or the line of the first failed check. */
static inline int st_check_follower_acks(const sp_store *vt) {
  uint8_t k1[SP_PUBLIC_KEY_LEN], k2[SP_PUBLIC_KEY_LEN], got[SP_PUBLIC_KEY_LEN];
  sp_uuid a = st_fack_device(0xa1), b = st_fack_device(0xb2);
  st_facks f;

  memset(k1, 0x11, sizeof(k1));
  memset(k2, 0x22, sizeof(k2));
  if (vt->version < 2 || !vt->save_follower_ack || !vt->load_follower_acks) {
    return __LINE__;
  }
  memset(&f, 0, sizeof(f));
  if (vt->load_follower_acks(st_facks_sink, &f, vt->user_data) != 0 ||
      f.n != 0) {
    return __LINE__; /* nothing kept yet */
  }
  if (vt->save_follower_ack(&a, k1, 7, k1, vt->user_data) != 0 ||
      vt->save_follower_ack(&b, k2, 3, k2, vt->user_data) != 0 ||
      vt->save_follower_ack(&a, k1, 9, k1, vt->user_data) != 0) {
    return __LINE__;
  }
  if (vt->load_follower_acks(st_facks_sink, &f, vt->user_data) != 0 ||
      f.n != 2 || st_facks_find(&f, 0xa1, got) != 9 ||
      memcmp(got, k1, sizeof(k1)) != 0 || st_facks_find(&f, 0xb2, got) != 3 ||
      memcmp(got, k2, sizeof(k2)) != 0) {
    return __LINE__;
  }
  /* A new key for a device replaces key and position at once. */
  if (vt->save_follower_ack(&a, k2, 1, k2, vt->user_data) != 0) {
    return __LINE__;
  }
  memset(&f, 0, sizeof(f));
  if (vt->load_follower_acks(st_facks_sink, &f, vt->user_data) != 0 ||
      f.n != 2 || st_facks_find(&f, 0xa1, got) != 1 ||
      memcmp(got, k2, sizeof(k2)) != 0) {
    return __LINE__;
  }
  /* A sink's error comes back unchanged. */
  memset(&f, 0, sizeof(f));
  f.fail_at = 2;
  if (vt->load_follower_acks(st_facks_sink, &f, vt->user_data) !=
      SP_ERR_CANCELED) {
    return __LINE__;
  }
  return 0;
}

/* Addresses kept by load_follower_addresses, by device tag. */
typedef struct st_faddrs {
  size_t n;
  uint8_t tag[8];
  char address[8][SP_PEER_ADDRESS_MAX];
} st_faddrs;

static inline int st_faddrs_sink(const sp_uuid *device, const char *address,
                                 void *ctx) {
  st_faddrs *f = ctx;

  if (f->n == 8 || strlen(address) >= SP_PEER_ADDRESS_MAX) {
    return SP_ERR_NOBUF;
  }
  f->tag[f->n] = device->bytes[0];
  strcpy(f->address[f->n++], address);
  return 0;
}

static inline const char *st_faddrs_find(const st_faddrs *f, uint8_t tag) {
  for (size_t i = 0; i < f->n; ++i) {
    if (f->tag[i] == tag) {
      return f->address[i];
    }
  }
  return NULL;
}

/* Addresses for two devices, a replacement, a forgotten one, one too long;
 * returns 0 or the line of the first failed check. */
static inline int st_check_follower_addresses(const sp_store *vt) {
  sp_uuid a = st_fack_device(0xa1), b = st_fack_device(0xb2);
  char longest[SP_PEER_ADDRESS_MAX + 1];
  const char *got;
  st_faddrs f;

  if (vt->version < 2 || !vt->save_follower_address ||
      !vt->load_follower_addresses) {
    return __LINE__;
  }
  memset(&f, 0, sizeof(f));
  if (vt->load_follower_addresses(st_faddrs_sink, &f, vt->user_data) != 0 ||
      f.n != 0) {
    return __LINE__; /* nothing kept yet */
  }
  if (vt->save_follower_address(&a, "192.0.2.1:7000", vt->user_data) != 0 ||
      vt->save_follower_address(&b, "[2001:db8::1]:7001", vt->user_data) !=
          0 ||
      vt->save_follower_address(&a, "192.0.2.9:7002", vt->user_data) != 0) {
    return __LINE__;
  }
  if (vt->load_follower_addresses(st_faddrs_sink, &f, vt->user_data) != 0 ||
      f.n != 2 || !(got = st_faddrs_find(&f, 0xa1)) ||
      strcmp(got, "192.0.2.9:7002") != 0 ||
      !(got = st_faddrs_find(&f, 0xb2)) ||
      strcmp(got, "[2001:db8::1]:7001") != 0) {
    return __LINE__;
  }
  /* An empty address forgets; one that does not fit is refused. */
  memset(longest, '1', SP_PEER_ADDRESS_MAX);
  longest[SP_PEER_ADDRESS_MAX] = '\0';
  if (vt->save_follower_address(&b, "", vt->user_data) != 0 ||
      vt->save_follower_address(&a, longest, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT) {
    return __LINE__;
  }
  memset(&f, 0, sizeof(f));
  if (vt->load_follower_addresses(st_faddrs_sink, &f, vt->user_data) != 0 ||
      f.n != 1 || !(got = st_faddrs_find(&f, 0xa1)) ||
      strcmp(got, "192.0.2.9:7002") != 0) {
    return __LINE__;
  }
  /* A sink's error comes back unchanged. */
  f.n = 8;
  if (vt->load_follower_addresses(st_faddrs_sink, &f, vt->user_data) !=
      SP_ERR_NOBUF) {
    return __LINE__;
  }
  return 0;
}

/* ---- writes from every device (store vtable version 3) ---- */

/* Devices of the version 3 checks: the store's own, and two others. */
static inline sp_uuid st_dev(uint8_t tag) {
  sp_uuid u;
  memset(&u, 0x3c, sizeof(u));
  u.bytes[0] = tag;
  return u;
}
#define ST_OWN 0x01
#define ST_OTHER 0x02
#define ST_THIRD 0x03

/* Entry k of device `tag` with origin `origin` (payload from a static
 * buffer per k % 8, so a batch of up to 8 stays valid together). */
static inline sp_entry st_origin_entry(unsigned k, uint8_t tag,
                                       uint64_t origin) {
  static uint8_t bufs[8][64];
  size_t len = (k * 13u) % 64;
  sp_entry e;

  st_fill(bufs[k % 8], len, k);
  e = st_entry(0, k, bufs[k % 8], len);
  e.device_id = st_dev(tag);
  e.origin_seq = origin;
  return e;
}

static inline int st_has_v3(const sp_store *vt) {
  return vt->version >= 3 && vt->append && vt->find_origin &&
         vt->outbox_put && vt->outbox_read && vt->outbox_remove &&
         vt->outbox_stats && vt->outbox_anchor;
}

/* find_origin's answer for an origin never held (SP_ERR_NOT_FOUND, seq
 * 0) as st_find gives it. */
#define ST_NF(high) (-100000 - (long long)(high))

/* find_origin's answer as one value (small numbers in the checks):
 * seq * 1000 + device_high when it returns 0 (seq 0: held and pruned),
 * ST_NF(device_high) for SP_ERR_NOT_FOUND, -1 on anything else. */
static inline long long st_find(const sp_store *vt, uint8_t tag,
                                uint64_t origin) {
  sp_uuid d = st_dev(tag);
  sp_seq seq = 99;
  uint64_t high = 99;
  int rv = vt->find_origin(&d, origin, &seq, &high, vt->user_data);

  if (rv == SP_ERR_NOT_FOUND && seq == 0) {
    return ST_NF(high);
  }
  if (rv != 0) {
    return -1;
  }
  return (long long)(seq * 1000 + high);
}

/* Apply `n` entries numbered from the store's applied sequence + 1,
 * chained from its head hash. */
static inline int st_apply_next(const sp_store *vt, sp_entry *es, size_t n) {
  uint8_t hashes[8 * SP_HASH_LEN];
  uint8_t prev[SP_HASH_LEN];
  sp_store_state ss;
  int rv;

  if (n > 8 || vt->state(&ss, vt->user_data) != 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  memcpy(prev, ss.head_hash, SP_HASH_LEN);
  for (size_t i = 0; i < n; ++i) {
    es[i].sequence = ss.applied + 1 + i;
    rv = sp_chain_next(prev, &es[i], hashes + i * SP_HASH_LEN);
    if (rv != 0) {
      return rv;
    }
    memcpy(prev, hashes + i * SP_HASH_LEN, SP_HASH_LEN);
  }
  return vt->apply(es, hashes, n, ss.epoch, vt->user_data);
}

/* The outbox's origins (increasing), read after `after`; count or -1. */
static inline long st_outbox_origins(const sp_store *vt, uint64_t after,
                                     size_t max, uint64_t *out) {
  st_collect c;

  st_collect_init(&c);
  if (vt->outbox_read(after, max, st_collect_sink, &c, vt->user_data) != 0 ||
      c.n > ST_COLLECT_MAX) {
    return -1;
  }
  for (size_t i = 0; i < c.n; ++i) {
    if (c.seqs[i] != 0) {
      return -1; /* outbox items carry no sequence */
    }
    out[i] = c.origins[i];
  }
  return (long)c.n;
}

static inline int st_stats_are(const sp_store *vt, uint64_t items,
                               uint64_t bytes, uint64_t next, int anchored) {
  sp_outbox_stats os;
  memset(&os, 0xee, sizeof(os));
  return vt->outbox_stats(&os, vt->user_data) == 0 && os.items == items &&
         os.bytes == bytes && os.next_origin == next &&
         os.anchored == anchored;
}

static inline uint64_t st_payload(const sp_entry *e) {
  return (uint64_t)e->model_type_len + e->data_len;
}

/*
 * Origin ids through the leader's append and read, find_origin over
 * retained and pruned rows, duplicate origins refused with nothing
 * appended.  `prune(ctx, through)` prunes the store.  Call on an empty
 * store; returns 0 or the line of the first failed check.
 */
static inline int st_check_origins(const sp_store *vt,
                                   int (*prune)(void *ctx, sp_seq through),
                                   void *ctx) {
  sp_entry es[4];
  st_snapshot before, after;
  st_collect c;
  sp_seq first = 0;

  if (!st_has_v3(vt)) {
    return __LINE__;
  }
  es[0] = st_origin_entry(1, ST_OTHER, 0);
  es[1] = st_origin_entry(2, ST_OWN, 5);
  es[2] = st_origin_entry(3, ST_OTHER, 1);
  es[0].sequence = 77; /* ignored */
  if (vt->append(es, 3, &first, vt->user_data) != 0 || first != 1) {
    return __LINE__;
  }
  /* Kept with the rows, chained as if it were not there. */
  st_collect_init(&c);
  if (vt->read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
               vt->user_data) != 0 ||
      c.n != 3 || c.origins[0] != 0 || c.origins[1] != 5 ||
      c.origins[2] != 1) {
    return __LINE__;
  }
  {
    uint8_t prev[SP_HASH_LEN] = {0};
    for (size_t i = 0; i < 3; ++i) {
      sp_entry plain = es[i];
      plain.sequence = i + 1;
      plain.origin_seq = 0;
      if (sp_chain_next(prev, &plain, prev) != 0 ||
          memcmp(prev, c.hashes[i], SP_HASH_LEN) != 0) {
        return __LINE__;
      }
    }
  }
  if (st_find(vt, ST_OWN, 5) != 2005 || st_find(vt, ST_OWN, 4) != ST_NF(5) ||
      st_find(vt, ST_OWN, 0) != 5 || st_find(vt, ST_OTHER, 1) != 3001 ||
      st_find(vt, ST_OTHER, 5) != ST_NF(1) ||
      st_find(vt, ST_THIRD, 1) != ST_NF(0) ||
      st_find(vt, ST_THIRD, 0) != 0) {
    return __LINE__;
  }
  /* Either out pointer may be left out. */
  {
    sp_uuid d = st_dev(ST_OWN);
    sp_seq seq = 0;
    uint64_t high = 0;
    if (vt->find_origin(&d, 5, &seq, NULL, vt->user_data) != 0 ||
        seq != 2 ||
        vt->find_origin(&d, 5, NULL, &high, vt->user_data) != 0 ||
        high != 5) {
      return __LINE__;
    }
  }
  /* A duplicate origin id, in the log or twice in one batch: refused,
   * nothing appended. */
  st_snapshot_take(vt, &before);
  es[0] = st_origin_entry(4, ST_THIRD, 0);
  es[1] = st_origin_entry(5, ST_OWN, 5);
  if (vt->append(es, 2, &first, vt->user_data) != SP_ERR_EXISTS) {
    return __LINE__;
  }
  es[0] = st_origin_entry(4, ST_THIRD, 9);
  es[1] = st_origin_entry(5, ST_THIRD, 9);
  if (vt->append(es, 2, &first, vt->user_data) != SP_ERR_EXISTS) {
    return __LINE__;
  }
  st_snapshot_take(vt, &after);
  if (!st_snapshot_equal(&before, &after) ||
      st_find(vt, ST_THIRD, 9) != ST_NF(0)) {
    return __LINE__;
  }
  /* The same number from another device is another origin id. */
  es[0] = st_origin_entry(6, ST_THIRD, 5);
  es[1] = st_origin_entry(7, ST_OWN, 6);
  if (vt->append(es, 2, &first, vt->user_data) != 0 || first != 4 ||
      st_find(vt, ST_THIRD, 5) != 4005 || st_find(vt, ST_OWN, 6) != 5006) {
    return __LINE__;
  }
  /* A lower origin than the device's highest is still a new one. */
  es[0] = st_origin_entry(8, ST_OWN, 3);
  if (vt->append(es, 1, &first, vt->user_data) != 0 || first != 6 ||
      st_find(vt, ST_OWN, 3) != 6006) {
    return __LINE__;
  }
  /* Pruned rows leave the index but stay in the committed set (0, seq
   * 0); an origin never held (4: a hole below the highest) is not. */
  if (prune(ctx, 5) != 0 || st_find(vt, ST_OWN, 5) != 6 ||
      st_find(vt, ST_OWN, 6) != 6 || st_find(vt, ST_OTHER, 1) != 1 ||
      st_find(vt, ST_THIRD, 5) != 5 || st_find(vt, ST_OWN, 3) != 6006 ||
      st_find(vt, ST_OWN, 4) != ST_NF(6)) {
    return __LINE__;
  }
  /* A pruned origin id is still refused: the log held it once. */
  st_snapshot_take(vt, &before);
  es[0] = st_origin_entry(9, ST_OTHER, 1);
  if (vt->append(es, 1, &first, vt->user_data) != SP_ERR_EXISTS) {
    return __LINE__;
  }
  st_snapshot_take(vt, &after);
  if (!st_snapshot_equal(&before, &after)) {
    return __LINE__;
  }
  es[0] = st_origin_entry(9, ST_OTHER, 2);
  if (vt->append(es, 1, &first, vt->user_data) != 0 || first != 7) {
    return __LINE__;
  }
  st_collect_init(&c);
  if (vt->read(5, 7, 1, st_collect_sink, &c, vt->user_data) != 0 ||
      c.n != 1 || c.seqs[0] != 6 || c.origins[0] != 3) {
    return __LINE__;
  }
  return 0;
}

/* Feeds the outbox's items to `want` in order, comparing all fields. */
typedef struct st_expect {
  const sp_entry *want;
  size_t n;
  size_t seen;
  int bad;
} st_expect;

static inline int st_expect_sink(const sp_entry *e,
                                 const uint8_t hash[SP_HASH_LEN], void *ctx) {
  st_expect *x = ctx;
  if (hash != NULL || x->seen >= x->n ||
      !st_entry_equal(e, &x->want[x->seen])) {
    x->bad = 1;
  }
  x->seen++;
  return 0;
}

/*
 * outbox_put / read / remove / stats on an empty store (never anchored);
 * returns 0 or the line of the first failed check.
 */
static inline int st_check_outbox(const sp_store *vt) {
  sp_entry es[4], want[4];
  uint64_t o[8], first = 0, bytes;
  st_expect x;

  if (!st_has_v3(vt) || !st_stats_are(vt, 0, 0, 1, 0)) {
    return __LINE__;
  }
  if (st_outbox_origins(vt, 0, 10, o) != 0 ||
      vt->outbox_remove(1, vt->user_data) != SP_ERR_NOT_FOUND) {
    return __LINE__;
  }
  es[0] = st_origin_entry(11, ST_OWN, 0);
  es[1] = st_origin_entry(12, ST_OWN, 42); /* ignored: the store numbers */
  es[2] = st_origin_entry(13, ST_OWN, 0);
  es[1].sequence = 5;                      /* ignored */
  es[2].data = NULL;
  es[2].data_len = 0;
  bytes = st_payload(&es[0]) + st_payload(&es[1]) + st_payload(&es[2]);
  if (vt->outbox_put(es, 3, &first, vt->user_data) != 0 || first != 1 ||
      !st_stats_are(vt, 3, bytes, 4, 0)) {
    return __LINE__;
  }
  /* Everything as given, except sequence 0 and the assigned origin. */
  for (size_t i = 0; i < 3; ++i) {
    want[i] = es[i];
    want[i].sequence = 0;
    want[i].origin_seq = i + 1;
  }
  memset(&x, 0, sizeof(x));
  x.want = want;
  x.n = 3;
  if (vt->outbox_read(0, 10, st_expect_sink, &x, vt->user_data) != 0 ||
      x.seen != 3 || x.bad) {
    return __LINE__;
  }
  /* after / max_count (a stopping or failing sink: st_check_retire). */
  if (st_outbox_origins(vt, 1, 1, o) != 1 || o[0] != 2 ||
      st_outbox_origins(vt, 3, 10, o) != 0 ||
      st_outbox_origins(vt, 0, 0, o) != 0) {
    return __LINE__;
  }
  /* Remove the middle one (a refusal), then the others. */
  if (vt->outbox_remove(2, vt->user_data) != 0 ||
      vt->outbox_remove(2, vt->user_data) != SP_ERR_NOT_FOUND ||
      vt->outbox_remove(0, vt->user_data) != SP_ERR_NOT_FOUND ||
      !st_stats_are(vt, 2, bytes - st_payload(&es[1]), 4, 0) ||
      st_outbox_origins(vt, 0, 10, o) != 2 || o[0] != 1 || o[1] != 3) {
    return __LINE__;
  }
  /* Numbers are never reused, whatever was removed. */
  if (vt->outbox_remove(3, vt->user_data) != 0 ||
      vt->outbox_remove(1, vt->user_data) != 0 ||
      !st_stats_are(vt, 0, 0, 4, 0)) {
    return __LINE__;
  }
  es[0] = st_origin_entry(14, ST_OWN, 0);
  if (vt->outbox_put(es, 1, &first, vt->user_data) != 0 || first != 4 ||
      !st_stats_are(vt, 1, st_payload(&es[0]), 5, 0)) {
    return __LINE__;
  }
  /* Invalid input changes nothing. */
  es[1] = st_origin_entry(15, ST_OWN, 0);
  es[1].change_type = (sp_change_type)9;
  if (vt->outbox_put(es, 2, &first, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT ||
      vt->outbox_put(es, 0, &first, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT ||
      !st_stats_are(vt, 1, st_payload(&es[0]), 5, 0)) {
    return __LINE__;
  }
  return 0;
}

/* A sink that stops at once: outbox_read returns 0 having fed nothing. */
static inline int st_stop_sink(const sp_entry *e,
                               const uint8_t hash[SP_HASH_LEN], void *ctx) {
  (void)e;
  (void)hash;
  ++*(int *)ctx;
  return *(int *)ctx == 1 ? SP_SINK_STOP : SP_ERR_CANCELED;
}

/*
 * The committed set with holes (refused submissions leave them), through
 * append (device THIRD) and apply (device OTHER), across a prune: every
 * origin held once answers 0 (its sequence while retained, 0 once
 * pruned), a hole or anything above answers SP_ERR_NOT_FOUND, and filling
 * a hole joins its neighbours.  `prune(ctx, through)` prunes the store.
 * Call on an empty store; returns 0 or the line of the first failure.
 * st_check_committed_after tells the same set apart later (after a
 * reopen).
 */
static inline int st_check_committed_after(const sp_store *vt) {
  static const uint64_t held[] = {1, 2, 3, 4, 5};
  for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); ++i) {
    long long f = st_find(vt, ST_THIRD, held[i]);
    if (f < 0 || f % 1000 != 5) {
      return __LINE__;
    }
  }
  if (st_find(vt, ST_THIRD, 6) != ST_NF(5) ||
      st_find(vt, ST_OTHER, 7) != 9 || st_find(vt, ST_OTHER, 9) != 9 ||
      st_find(vt, ST_OTHER, 8) != ST_NF(9) ||
      st_find(vt, ST_OTHER, 10) != ST_NF(9) ||
      st_find(vt, ST_OWN, 1) != ST_NF(0)) {
    return __LINE__;
  }
  return 0;
}

static inline int st_check_committed_set(const sp_store *vt,
                                         int (*prune)(void *ctx,
                                                      sp_seq through),
                                         void *ctx) {
  sp_entry es[2];
  sp_seq first = 0;

  if (!st_has_v3(vt)) {
    return __LINE__;
  }
  /* Origins 1, 2, 4, 5 of THIRD: 3 was refused (a hole). */
  es[0] = st_origin_entry(40, ST_THIRD, 1);
  es[1] = st_origin_entry(41, ST_THIRD, 2);
  if (vt->append(es, 2, &first, vt->user_data) != 0 || first != 1) {
    return __LINE__;
  }
  es[0] = st_origin_entry(42, ST_THIRD, 4);
  es[1] = st_origin_entry(43, ST_THIRD, 5);
  if (vt->append(es, 2, &first, vt->user_data) != 0 || first != 3) {
    return __LINE__;
  }
  if (st_find(vt, ST_THIRD, 3) != ST_NF(5) ||
      st_find(vt, ST_THIRD, 6) != ST_NF(5) ||
      st_find(vt, ST_THIRD, 1) != 1005 || st_find(vt, ST_THIRD, 4) != 3005) {
    return __LINE__;
  }
  /* A follower's apply builds the set the same way: 7 and 9 of OTHER. */
  es[0] = st_origin_entry(44, ST_OTHER, 9);
  es[1] = st_origin_entry(45, ST_OTHER, 7);
  if (st_apply_next(vt, es, 2) != 0 || st_find(vt, ST_OTHER, 8) != ST_NF(9) ||
      st_find(vt, ST_OTHER, 7) != 6009) {
    return __LINE__;
  }
  /* Pruning keeps the set; the hole stays a hole. */
  if (prune(ctx, 3) != 0 || st_find(vt, ST_THIRD, 1) != 5 ||
      st_find(vt, ST_THIRD, 4) != 5 || st_find(vt, ST_THIRD, 5) != 4005 ||
      st_find(vt, ST_THIRD, 3) != ST_NF(5)) {
    return __LINE__;
  }
  /* Filling the hole joins 1..5; a held one is refused. */
  es[0] = st_origin_entry(46, ST_THIRD, 3);
  if (vt->append(es, 1, &first, vt->user_data) != 0 || first != 7 ||
      st_find(vt, ST_THIRD, 3) != 7005) {
    return __LINE__;
  }
  es[0] = st_origin_entry(47, ST_THIRD, 1);
  if (vt->append(es, 1, &first, vt->user_data) != SP_ERR_EXISTS) {
    return __LINE__;
  }
  if (prune(ctx, 7) != 0) {
    return __LINE__;
  }
  return st_check_committed_after(vt);
}

/*
 * apply keeps origins and retires the outbox items it commits, raising
 * the next origin; `arm(ctx, 1)` makes the next apply fail (after as much
 * of its work as the store can be made to do), `arm(ctx, 0)` undoes it.
 * Call on an empty store; returns 0 or the line of the first failure.
 */
static inline int st_check_retire(const sp_store *vt,
                                  void (*arm)(void *ctx, int on), void *ctx) {
  sp_entry es[6], mine[3];
  uint64_t o[8], first = 0, bytes;
  st_snapshot before, after;
  st_collect c;
  int calls = 0;

  if (!st_has_v3(vt)) {
    return __LINE__;
  }
  for (unsigned i = 0; i < 3; ++i) {
    mine[i] = st_origin_entry(20 + i, ST_OWN, 0);
  }
  bytes = st_payload(&mine[0]) + st_payload(&mine[1]) + st_payload(&mine[2]);
  if (vt->outbox_put(mine, 3, &first, vt->user_data) != 0 || first != 1) {
    return __LINE__;
  }
  if (vt->outbox_read(0, 10, st_stop_sink, &calls, vt->user_data) != 0 ||
      calls != 1) {
    return __LINE__;
  }
  calls = 1;
  if (vt->outbox_read(0, 10, st_stop_sink, &calls, vt->user_data) !=
      SP_ERR_CANCELED) {
    return __LINE__;
  }
  /* A failing apply that would retire item 1 retires nothing. */
  es[0] = st_origin_entry(30, ST_OTHER, 0);
  es[1] = mine[0];
  es[1].origin_seq = 1;
  st_snapshot_take(vt, &before);
  arm(ctx, 1);
  if (st_apply_next(vt, es, 2) == 0) {
    return __LINE__;
  }
  arm(ctx, 0);
  st_snapshot_take(vt, &after);
  if (!st_snapshot_equal(&before, &after) ||
      !st_stats_are(vt, 3, bytes, 4, 0) ||
      st_find(vt, ST_OWN, 1) != ST_NF(0)) {
    return __LINE__;
  }
  /* The leader's log brings: another device's entry; item 1 (as the
   * leader's host may have replaced it: other payload); the same number
   * from another device (not ours: item 2 stays); one of our numbers the
   * outbox no longer holds (next origin goes past it). */
  es[0] = st_origin_entry(30, ST_OTHER, 0);
  es[1] = st_origin_entry(31, ST_OWN, 1);
  es[2] = st_origin_entry(32, ST_OTHER, 2);
  es[3] = st_origin_entry(33, ST_OWN, 7);
  if (st_apply_next(vt, es, 4) != 0) {
    return __LINE__;
  }
  st_collect_init(&c);
  if (vt->read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
               vt->user_data) != 0 ||
      c.n != 4 || c.origins[0] != 0 || c.origins[1] != 1 ||
      c.origins[2] != 2 || c.origins[3] != 7) {
    return __LINE__;
  }
  if (!st_stats_are(vt, 2, bytes - st_payload(&mine[0]), 8, 0) ||
      st_outbox_origins(vt, 0, 10, o) != 2 || o[0] != 2 || o[1] != 3 ||
      st_find(vt, ST_OWN, 1) != 2007 || st_find(vt, ST_OTHER, 2) != 3002) {
    return __LINE__;
  }
  /* Item 3 and 2 arrive in one batch, out of order. */
  es[0] = st_origin_entry(34, ST_OWN, 3);
  es[1] = st_origin_entry(35, ST_OWN, 2);
  if (st_apply_next(vt, es, 2) != 0 || !st_stats_are(vt, 0, 0, 8, 0) ||
      st_outbox_origins(vt, 0, 10, o) != 0) {
    return __LINE__;
  }
  /* An epoch-only apply touches nothing of the outbox. */
  if (vt->apply(NULL, NULL, 0, 5, vt->user_data) != 0 ||
      !st_stats_are(vt, 0, 0, 8, 0)) {
    return __LINE__;
  }
  es[0] = st_origin_entry(36, ST_OWN, 0);
  if (vt->outbox_put(es, 1, &first, vt->user_data) != 0 || first != 8) {
    return __LINE__;
  }
  return 0;
}

/*
 * outbox_anchor renumbers once, keeping order, and only raises later;
 * call on an empty store; returns 0 or the line of the first failure.
 */
static inline int st_check_anchor(const sp_store *vt) {
  sp_entry es[3];
  uint64_t o[8], first = 0, kept;
  sp_uuid own = st_dev(ST_OWN);

  if (!st_has_v3(vt)) {
    return __LINE__;
  }
  for (unsigned i = 0; i < 3; ++i) {
    es[i] = st_origin_entry(40 + i, ST_OWN, 0);
  }
  if (vt->outbox_put(es, 3, &first, vt->user_data) != 0 ||
      vt->outbox_remove(2, vt->user_data) != 0) {
    return __LINE__;
  }
  kept = st_payload(&es[0]) + st_payload(&es[2]);
  /* Items 1 and 3 become 11 and 13: above 10, order and gap kept. */
  if (vt->outbox_anchor(&own, 10, vt->user_data) != 0 ||
      st_outbox_origins(vt, 0, 10, o) != 2 || o[0] != 11 || o[1] != 13 ||
      !st_stats_are(vt, 2, kept, 14, 1)) {
    return __LINE__;
  }
  /* Never again: later anchors only raise the next origin. */
  if (vt->outbox_anchor(&own, 20, vt->user_data) != 0 ||
      st_outbox_origins(vt, 0, 10, o) != 2 || o[0] != 11 || o[1] != 13 ||
      !st_stats_are(vt, 2, kept, 21, 1) ||
      vt->outbox_anchor(&own, 3, vt->user_data) != 0 ||
      !st_stats_are(vt, 2, kept, 21, 1)) {
    return __LINE__;
  }
  if (vt->outbox_put(es, 1, &first, vt->user_data) != 0 || first != 21) {
    return __LINE__;
  }
  kept += st_payload(&es[0]);
  /* The anchored device is the outbox's: its applied entries raise the
   * next origin even when no item matches. */
  es[0] = st_origin_entry(43, ST_OWN, 30);
  if (st_apply_next(vt, es, 1) != 0 || !st_stats_are(vt, 3, kept, 31, 1) ||
      st_outbox_origins(vt, 0, 10, o) != 3 || o[2] != 21) {
    return __LINE__;
  }
  return 0;
}

/* An anchor on a store whose items are already above the leader's
 * highest changes no number. */
static inline int st_check_anchor_no_shift(const sp_store *vt) {
  sp_entry e = st_origin_entry(50, ST_OWN, 0);
  sp_uuid own = st_dev(ST_OWN);
  uint64_t o[4], first = 0;

  if (vt->outbox_put(&e, 1, &first, vt->user_data) != 0 || first != 1 ||
      vt->outbox_anchor(&own, 0, vt->user_data) != 0 ||
      st_outbox_origins(vt, 0, 4, o) != 1 || o[0] != 1 ||
      !st_stats_are(vt, 1, st_payload(&e), 2, 1)) {
    return __LINE__;
  }
  return 0;
}

/*
 * SP_MAX_ORIGIN_SEQ bounds every origin a store takes or assigns: append
 * and apply refuse a larger one with nothing changed, anchor refuses a
 * high or a renumbering that would carry an item or the counter past it,
 * and outbox_put never assigns past it.  Both stores answer alike (a
 * member proposing 2^63 must not stop the SQLite followers only).  Call
 * on an empty store; returns 0 or the line of the first failure.
 */
static inline int st_check_origin_max(const sp_store *vt) {
  const uint64_t max = SP_MAX_ORIGIN_SEQ;
  sp_uuid other = st_dev(ST_OTHER);
  sp_entry es[1];
  st_snapshot before, after;
  uint64_t high = 0;
  sp_seq seq = 0;

  if (!st_has_v3(vt) || max != (uint64_t)INT64_MAX) {
    return __LINE__;
  }
  st_snapshot_take(vt, &before);
  es[0] = st_origin_entry(60, ST_OTHER, max + 1);
  if (vt->append(es, 1, &seq, vt->user_data) != SP_ERR_INVALID_ARGUMENT ||
      (es[0].origin_seq = UINT64_MAX,
       vt->append(es, 1, &seq, vt->user_data) != SP_ERR_INVALID_ARGUMENT)) {
    return __LINE__;
  }
  es[0] = st_origin_entry(61, ST_OTHER, max + 1);
  if (st_apply_next(vt, es, 1) != SP_ERR_INVALID_ARGUMENT) {
    return __LINE__;
  }
  st_snapshot_take(vt, &after);
  if (!st_snapshot_equal(&before, &after) ||
      st_find(vt, ST_OTHER, max + 1) != ST_NF(0)) {
    return __LINE__;
  }
  /* The bound itself is an origin like any other. */
  es[0] = st_origin_entry(62, ST_OTHER, max);
  if (st_apply_next(vt, es, 1) != 0 ||
      vt->find_origin(&other, max, &seq, &high, vt->user_data) != 0 ||
      seq != 1 || high != max) {
    return __LINE__;
  }
  return 0;
}

/* The outbox side of SP_MAX_ORIGIN_SEQ (st_check_origin_max): own items
 * 1, 2: no anchor may carry them, or the counter, past the bound (the
 * in-memory store's shift wrapped around 2^64); a refused one changes
 * nothing.  Call on an empty store; 0 or the line of the first failure. */
static inline int st_check_anchor_max(const sp_store *vt) {
  const uint64_t max = SP_MAX_ORIGIN_SEQ;
  sp_uuid own = st_dev(ST_OWN);
  sp_entry es[2];
  uint64_t o[4], first = 0;

  es[0] = st_origin_entry(63, ST_OWN, 0);
  es[1] = st_origin_entry(64, ST_OWN, 0);
  if (vt->outbox_put(es, 2, &first, vt->user_data) != 0 || first != 1) {
    return __LINE__;
  }
  if (vt->outbox_anchor(&own, UINT64_MAX - 1, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT ||
      vt->outbox_anchor(&own, max, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT ||
      vt->outbox_anchor(&own, max - 2, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT ||
      st_outbox_origins(vt, 0, 4, o) != 2 || o[0] != 1 || o[1] != 2 ||
      !st_stats_are(vt, 2, st_payload(&es[0]) + st_payload(&es[1]), 3, 0)) {
    return __LINE__;
  }
  /* The largest shift that fits: the items end at max - 1, the counter
   * at max, and outbox_put assigns nothing more. */
  if (vt->outbox_anchor(&own, max - 3, vt->user_data) != 0 ||
      st_outbox_origins(vt, 0, 4, o) != 2 || o[0] != max - 2 ||
      o[1] != max - 1 ||
      !st_stats_are(vt, 2, st_payload(&es[0]) + st_payload(&es[1]), max,
                    1) ||
      vt->outbox_put(es, 1, &first, vt->user_data) !=
          SP_ERR_INVALID_ARGUMENT ||
      st_outbox_origins(vt, 0, 4, o) != 2) {
    return __LINE__;
  }
  return 0;
}

#endif /* STORE_TEST_UTIL_H */
