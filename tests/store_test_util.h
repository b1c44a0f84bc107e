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
         (got->data_len == 0 ||
          memcmp(got->data, want->data, got->data_len) == 0);
}

/* A sink that records what it is fed and can stop or fail on demand. */
#define ST_COLLECT_MAX 256
typedef struct st_collect {
  sp_seq seqs[ST_COLLECT_MAX];
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
  return st_mix(h, hash, SP_HASH_LEN);
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
    memcpy(c->hashes[c->n], hash, SP_HASH_LEN);
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

#endif /* STORE_TEST_UTIL_H */
