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

#endif /* STORE_TEST_UTIL_H */
