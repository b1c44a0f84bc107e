/*
 * sp_mem_store_test.c: the in-memory store, both roles.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/mem_store.h"
#include "sp_test_mem.h"
#include "store_test_util.h"

static const uint8_t zeros[SP_HASH_LEN];

/* Payload storage: entry k uses bufs[k % 8] filled by k, length lens[k]. */
#define PAY 300
static uint8_t pay[16][PAY];

static sp_entry entry_k(sp_seq seq, unsigned k) {
  size_t len = (k * 37u) % PAY;
  st_fill(pay[k % 16], len, k);
  return st_entry(seq, k, pay[k % 16], len);
}

static sp_mem_store *new_store(const sp_mem *mem) {
  sp_mem_store *s = NULL;
  assert_int_equal(sp_mem_store_new(&s, mem), 0);
  assert_non_null(s);
  return s;
}

static sp_store vtable(sp_mem_store *s) {
  sp_store vt;
  sp_mem_store_get_vtable(s, &vt);
  return vt;
}

/* Leader log 1, 2, 5, 6 (entries k = seq), hashes chained by the test. */
static sp_mem_store *gapped_log(uint8_t hashes[7][SP_HASH_LEN]) {
  sp_mem_store *s = new_store(NULL);
  static const sp_seq seqs[] = {1, 2, 5, 6};
  uint8_t prev[SP_HASH_LEN] = {0};

  memset(hashes, 0, 7 * SP_HASH_LEN);
  for (size_t i = 0; i < 4; ++i) {
    /* 1 and 6 are assigned by the store (sequence 0), 2 and 5 given. */
    sp_entry e = entry_k(seqs[i] == 1 || seqs[i] == 6 ? 0 : seqs[i],
                         (unsigned)seqs[i]);
    sp_seq got = 0;
    assert_int_equal(sp_mem_store_append(s, &e, &got), 0);
    assert_int_equal(got, seqs[i]);
    e.sequence = got;
    assert_int_equal(sp_chain_next(prev, &e, hashes[got]), 0);
    memcpy(prev, hashes[got], SP_HASH_LEN);
  }
  return s;
}

static void test_new_args(void **state) {
  sp_store vt;
  (void)state;

  assert_int_equal(sp_mem_store_new(NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  sp_mem_store_del(NULL);
  sp_mem_store *s = new_store(NULL);
  sp_mem_store_get_vtable(s, &vt);
  assert_int_equal(vt.version, SP_STORE_VERSION);
  assert_ptr_equal(vt.user_data, s);
  assert_non_null(vt.read);
  assert_non_null(vt.bounds);
  assert_non_null(vt.hash_at);
  assert_non_null(vt.apply);
  assert_non_null(vt.state);
  assert_int_equal(sp_mem_store_count(s), 0);
  sp_mem_store_del(s);
}

static void test_append_read_gaps(void **state) {
  uint8_t h[7][SP_HASH_LEN];
  sp_mem_store *s = gapped_log(h);
  sp_store vt = vtable(s);
  st_collect c;
  sp_entry e, got;
  sp_seq seq;
  (void)state;

  assert_int_equal(sp_mem_store_count(s), 4);
  /* Not after latest: refused, nothing changes. */
  e = entry_k(6, 9);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), SP_ERR_INVALID_ARGUMENT);
  e = entry_k(3, 9);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), SP_ERR_INVALID_ARGUMENT);
  e = entry_k(0, 9);
  e.change_type = (sp_change_type)7;
  assert_int_equal(sp_mem_store_append(s, &e, NULL), SP_ERR_INVALID_ARGUMENT);
  e = entry_k(0, 9);
  e.model_type_len = SP_MAX_MODEL_TYPE_LEN + 1;
  assert_int_equal(sp_mem_store_append(s, &e, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_store_append(s, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_store_count(s), 4);

  /* Every entry, with its content and hash. */
  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 4);
  static const sp_seq all[] = {1, 2, 5, 6};
  for (size_t i = 0; i < 4; ++i) {
    assert_int_equal(c.seqs[i], all[i]);
    assert_memory_equal(c.hashes[i], h[all[i]], SP_HASH_LEN);
    assert_int_equal(sp_mem_store_get(s, all[i], &got, NULL), 0);
    e = entry_k(all[i], (unsigned)all[i]);
    assert_true(st_entry_equal(&got, &e));
  }
  assert_int_equal(sp_mem_store_get(s, 3, &got, NULL), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_store_get(s, 0, &got, NULL), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_store_get(s, 7, &got, NULL), SP_ERR_NOT_FOUND);

  /* `after` inside a gap, `through` bound. */
  st_collect_init(&c);
  assert_int_equal(vt.read(3, 5, SIZE_MAX, st_collect_sink, &c, vt.user_data),
                   0);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.seqs[0], 5);
  /* Only a gap in the range. */
  st_collect_init(&c);
  assert_int_equal(vt.read(2, 4, SIZE_MAX, st_collect_sink, &c, vt.user_data),
                   0);
  assert_int_equal(c.n, 0);
  /* max_count. */
  st_collect_init(&c);
  assert_int_equal(vt.read(1, 100, 2, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.seqs[0], 2);
  assert_int_equal(c.seqs[1], 5);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 100, 0, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);
  /* Past the end, and an empty range. */
  st_collect_init(&c);
  assert_int_equal(vt.read(6, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);
  st_collect_init(&c);
  assert_int_equal(vt.read(5, 2, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);

  /* A gap left on purpose, then assignment continues after it. */
  e = entry_k(10, 10);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(seq, 10);
  e = entry_k(0, 11);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(seq, 11);
  sp_mem_store_del(s);
}

static void test_sink_stop_and_error(void **state) {
  uint8_t h[7][SP_HASH_LEN];
  sp_mem_store *s = gapped_log(h);
  sp_store vt = vtable(s);
  st_collect c;
  (void)state;

  st_collect_init(&c);
  c.stop_at = 5;
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.seqs[1], 2);

  st_collect_init(&c);
  c.stop_at = 1;
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);

  st_collect_init(&c);
  c.fail_at = 5;
  c.err = -12345;
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data),
                   -12345);
  assert_int_equal(c.n, 2);
  sp_mem_store_del(s);
}

/* From inside a sink: queries work, mutations are refused. */
typedef struct reenter {
  sp_mem_store *s;
  sp_store vt;
  int calls;
} reenter;

static int reenter_sink(const sp_entry *entry, const uint8_t *hash,
                        void *ctx) {
  reenter *r = ctx;
  uint8_t out[SP_HASH_LEN];
  sp_entry e = entry_k(0, 50);
  st_collect c;

  ++r->calls;
  assert_int_equal(r->vt.hash_at(entry->sequence, out, r->vt.user_data), 0);
  assert_memory_equal(out, hash, SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(r->vt.read(0, 100, 10, st_collect_sink, &c,
                              r->vt.user_data), 0);
  assert_int_equal(c.n, 4);
  assert_int_equal(sp_mem_store_append(r->s, &e, NULL), SP_ERR_INVALID_STATE);
  assert_int_equal(sp_mem_store_prune(r->s, 1), SP_ERR_INVALID_STATE);
  e.sequence = 40;
  assert_int_equal(r->vt.apply(&e, hash, 1, 1, r->vt.user_data),
                   SP_ERR_INVALID_STATE);
  return 0;
}

static void test_sink_reentry(void **state) {
  uint8_t h[7][SP_HASH_LEN];
  reenter r;
  (void)state;

  r.s = gapped_log(h);
  r.vt = vtable(r.s);
  r.calls = 0;
  assert_int_equal(r.vt.read(0, 100, 10, reenter_sink, &r, r.vt.user_data),
                   0);
  assert_int_equal(r.calls, 4);
  assert_int_equal(sp_mem_store_count(r.s), 4);
  /* Mutations work again once the read is over. */
  assert_int_equal(sp_mem_store_prune(r.s, 1), 0);
  sp_mem_store_del(r.s);
}

static void test_bounds_hash_state(void **state) {
  uint8_t h[7][SP_HASH_LEN];
  uint8_t out[SP_HASH_LEN];
  sp_log_bounds b;
  sp_store_state st;
  (void)state;

  sp_mem_store *empty = new_store(NULL);
  sp_store ve = vtable(empty);
  assert_int_equal(ve.bounds(&b, ve.user_data), 0);
  assert_int_equal(b.latest, 0);
  assert_int_equal(b.pruned_through, 0);
  assert_int_equal(ve.state(&st, ve.user_data), 0);
  assert_int_equal(st.applied, 0);
  assert_int_equal(st.epoch, 0);
  assert_memory_equal(st.head_hash, zeros, SP_HASH_LEN);
  memset(out, 0xaa, sizeof(out));
  assert_int_equal(ve.hash_at(0, out, ve.user_data), 0);
  assert_memory_equal(out, zeros, SP_HASH_LEN);
  assert_int_equal(ve.hash_at(1, out, ve.user_data), SP_ERR_NOT_FOUND);
  sp_mem_store_del(empty);

  sp_mem_store *s = gapped_log(h);
  sp_store vt = vtable(s);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.latest, 6);
  assert_int_equal(b.pruned_through, 0);
  /* Used as a follower's log after a failover: same view. */
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_int_equal(st.applied, 6);
  assert_memory_equal(st.head_hash, h[6], SP_HASH_LEN);
  for (sp_seq q = 0; q <= 8; ++q) {
    int want = (q == 0 || q == 1 || q == 2 || q == 5 || q == 6)
                   ? 0
                   : SP_ERR_NOT_FOUND;
    assert_int_equal(vt.hash_at(q, out, vt.user_data), want);
    if (want == 0) {
      assert_memory_equal(out, q ? h[q] : zeros, SP_HASH_LEN);
    }
  }
  sp_mem_store_del(s);
}

static void test_prune(void **state) {
  uint8_t h[7][SP_HASH_LEN];
  uint8_t out[SP_HASH_LEN], want[SP_HASH_LEN];
  sp_mem_store *s = gapped_log(h);
  sp_store vt = vtable(s);
  sp_log_bounds b;
  sp_store_state st;
  st_collect c;
  sp_entry e;
  sp_seq seq;
  (void)state;

  assert_int_equal(sp_mem_store_prune(s, 7), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_store_count(s), 4);
  assert_int_equal(sp_mem_store_prune(s, 0), 0);
  assert_int_equal(sp_mem_store_count(s), 4);

  assert_int_equal(sp_mem_store_prune(s, 2), 0);
  assert_int_equal(sp_mem_store_count(s), 2);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 2);
  assert_int_equal(b.latest, 6);
  assert_int_equal(vt.hash_at(2, out, vt.user_data), 0);
  assert_memory_equal(out, h[2], SP_HASH_LEN);
  assert_int_equal(vt.hash_at(1, out, vt.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(vt.hash_at(0, out, vt.user_data), 0);
  assert_memory_equal(out, zeros, SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.seqs[0], 5);

  /* Prune point inside the gap: the link there is the one after 2. */
  assert_int_equal(sp_mem_store_prune(s, 3), 0);
  assert_int_equal(vt.hash_at(3, out, vt.user_data), 0);
  assert_memory_equal(out, h[2], SP_HASH_LEN);
  assert_int_equal(vt.hash_at(2, out, vt.user_data), SP_ERR_NOT_FOUND);
  /* Going back is a no-op. */
  assert_int_equal(sp_mem_store_prune(s, 1), 0);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 3);
  assert_int_equal(sp_mem_store_count(s), 2);

  /* Everything: bounds and state keep the position and link. */
  assert_int_equal(sp_mem_store_prune(s, 6), 0);
  assert_int_equal(sp_mem_store_count(s), 0);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 6);
  assert_int_equal(b.latest, 6);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_int_equal(st.applied, 6);
  assert_memory_equal(st.head_hash, h[6], SP_HASH_LEN);
  assert_int_equal(vt.hash_at(6, out, vt.user_data), 0);
  assert_memory_equal(out, h[6], SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);

  /* The chain continues from the kept link. */
  e = entry_k(0, 7);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(seq, 7);
  e.sequence = 7;
  assert_int_equal(sp_chain_next(h[6], &e, want), 0);
  assert_int_equal(vt.hash_at(7, out, vt.user_data), 0);
  assert_memory_equal(out, want, SP_HASH_LEN);
  sp_mem_store_del(s);
}

/* Blocks are released once no retained entry uses them. */
static void test_prune_releases_blocks(void **state) {
  enum { N = 40, LEN = 100 * 1024 };
  sp_test_mem tm;
  uint8_t *big = malloc(3u << 20);
  uint8_t *buf = malloc(LEN);
  long live_full, live;
  st_collect c;
  (void)state;

  assert_non_null(big);
  assert_non_null(buf);
  sp_test_mem_init(&tm);
  sp_mem_store *s = new_store(&tm.mem);
  sp_store vt = vtable(s);
  for (unsigned k = 1; k <= N; ++k) {
    st_fill(buf, LEN, k);
    sp_entry e = st_entry(0, k, buf, LEN);
    assert_int_equal(sp_mem_store_append(s, &e, NULL), 0);
  }
  live_full = tm.live;
  /* Each block is twice the last, up to 1 MiB: blocks of 1, 2, 4, 8, 10,
   * 10 and 5 entries (plus the store, record and block arrays), not one
   * block per entry. */
  assert_int_equal(live_full, 3 + 7);

  /* Entry 3 shares the second block with entry 2: only the first block
   * can go. */
  assert_int_equal(sp_mem_store_prune(s, 2), 0);
  assert_int_equal(tm.live, live_full - 1);
  /* Entries 16-25 fill the fifth block, 26 starts the sixth. */
  assert_int_equal(sp_mem_store_prune(s, 25), 0);
  live = tm.live;
  assert_int_equal(live, live_full - 5);
  /* What is left is intact. */
  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, N - 25);
  for (unsigned k = 26; k <= N; ++k) {
    sp_entry got;
    st_fill(buf, LEN, k);
    sp_entry want = st_entry(k, k, buf, LEN);
    assert_int_equal(sp_mem_store_get(s, k, &got, NULL), 0);
    assert_true(st_entry_equal(&got, &want));
  }

  /* An entry larger than a block gets a block of its own. */
  st_fill(big, 3u << 20, 99);
  sp_entry e = st_entry(0, 99, big, 3u << 20);
  sp_seq seq;
  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(tm.live, live + 1);
  sp_entry got;
  assert_int_equal(sp_mem_store_get(s, seq, &got, NULL), 0);
  e.sequence = seq;
  assert_true(st_entry_equal(&got, &e));

  /* Everything pruned: only the store, record and block arrays remain. */
  assert_int_equal(sp_mem_store_prune(s, seq), 0);
  assert_int_equal(tm.live, 3);
  sp_mem_store_del(s);
  assert_int_equal(tm.live, 0);
  free(big);
  free(buf);
}

static void test_follower_apply(void **state) {
  sp_entry es[4];
  uint8_t hs[4 * SP_HASH_LEN];
  uint8_t out[SP_HASH_LEN];
  sp_store_state st;
  st_snapshot before, after;
  st_collect c;
  (void)state;

  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  /* Arbitrary hashes: the store keeps what it is given. */
  for (int i = 0; i < 4; ++i) {
    es[i] = entry_k((sp_seq)(i + 1), (unsigned)i + 1);
    memset(hs + i * SP_HASH_LEN, 0x40 + i, SP_HASH_LEN);
  }
  assert_int_equal(vt.apply(es, hs, 3, 4, vt.user_data), 0);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_int_equal(st.applied, 3);
  assert_int_equal(st.epoch, 4);
  assert_memory_equal(st.head_hash, hs + 2 * SP_HASH_LEN, SP_HASH_LEN);
  assert_int_equal(vt.hash_at(2, out, vt.user_data), 0);
  assert_memory_equal(out, hs + SP_HASH_LEN, SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 10, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 3);
  assert_memory_equal(c.hashes[0], hs, SP_HASH_LEN);

  /* n == 0 records only the epoch, and only upwards. */
  assert_int_equal(vt.apply(NULL, NULL, 0, 7, vt.user_data), 0);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_int_equal(st.applied, 3);
  assert_int_equal(st.epoch, 7);
  assert_int_equal(vt.apply(NULL, NULL, 0, 5, vt.user_data), 0);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_int_equal(st.epoch, 7);

  /* Invalid batches change nothing (not even the epoch). */
  st_snapshot_take(&vt, &before);
  sp_entry bad[3];
  bad[0] = entry_k(3, 3); /* not after applied */
  assert_true(vt.apply(bad, hs, 1, 9, vt.user_data) < 0);
  bad[0] = entry_k(4, 4);
  bad[1] = entry_k(4, 5); /* not strictly increasing */
  assert_true(vt.apply(bad, hs, 2, 9, vt.user_data) < 0);
  bad[1] = entry_k(6, 6);
  bad[2] = entry_k(5, 7); /* decreasing at the end */
  assert_true(vt.apply(bad, hs, 3, 9, vt.user_data) < 0);
  bad[2] = entry_k(7, 7);
  bad[2].change_type = (sp_change_type)4; /* invalid entry last */
  assert_true(vt.apply(bad, hs, 3, 9, vt.user_data) < 0);
  assert_true(vt.apply(NULL, hs, 1, 9, vt.user_data) < 0);
  assert_true(vt.apply(bad, NULL, 1, 9, vt.user_data) < 0);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));

  /* Injected failures: SP_ERR_STORE, nothing changes, then it works. */
  sp_mem_store_fail_applies(s, 2);
  assert_int_equal(vt.apply(&es[3], hs + 3 * SP_HASH_LEN, 1, 9, vt.user_data),
                   SP_ERR_STORE);
  assert_int_equal(vt.apply(NULL, NULL, 0, 9, vt.user_data), SP_ERR_STORE);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  assert_int_equal(vt.apply(&es[3], hs + 3 * SP_HASH_LEN, 1, 9, vt.user_data),
                   0);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_int_equal(st.applied, 4);
  assert_int_equal(st.epoch, 9);
  assert_memory_equal(st.head_hash, hs + 3 * SP_HASH_LEN, SP_HASH_LEN);

  /* A batch with gaps in it is the library's business; the store takes
   * any increasing run past applied. */
  sp_entry gap[2] = {entry_k(10, 10), entry_k(12, 12)};
  assert_int_equal(vt.apply(gap, hs, 2, 9, vt.user_data), 0);
  assert_int_equal(vt.hash_at(11, out, vt.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(vt.hash_at(12, out, vt.user_data), 0);
  assert_memory_equal(out, hs + SP_HASH_LEN, SP_HASH_LEN);

  /* After a failover the same object leads: append chains from the head. */
  sp_entry e = entry_k(0, 13);
  sp_seq seq;
  uint8_t want[SP_HASH_LEN];
  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(seq, 13);
  e.sequence = 13;
  assert_int_equal(sp_chain_next(hs + SP_HASH_LEN, &e, want), 0);
  assert_int_equal(vt.hash_at(13, out, vt.user_data), 0);
  assert_memory_equal(out, want, SP_HASH_LEN);
  sp_mem_store_del(s);
}

static void test_copy_from(void **state) {
  uint8_t h[7][SP_HASH_LEN];
  st_snapshot a, b;
  uint8_t out[SP_HASH_LEN];
  (void)state;

  sp_mem_store *src = gapped_log(h);
  sp_store vs = vtable(src);
  assert_int_equal(vs.apply(NULL, NULL, 0, 3, vs.user_data), 0);
  assert_int_equal(sp_mem_store_prune(src, 2), 0);

  sp_mem_store *dst = new_store(NULL);
  sp_store vd = vtable(dst);
  for (unsigned k = 1; k <= 20; ++k) {
    sp_entry e = entry_k(0, k + 50);
    assert_int_equal(sp_mem_store_append(dst, &e, NULL), 0);
  }
  assert_int_equal(sp_mem_store_copy_from(dst, src), 0);
  st_snapshot_take(&vs, &a);
  st_snapshot_take(&vd, &b);
  assert_true(st_snapshot_equal(&a, &b));
  assert_int_equal(b.count, 2);
  assert_int_equal(b.state.epoch, 3);
  assert_int_equal(b.bounds.pruned_through, 2);
  assert_int_equal(vd.hash_at(2, out, vd.user_data), 0);
  assert_memory_equal(out, h[2], SP_HASH_LEN);
  assert_int_equal(sp_mem_store_copy_from(dst, dst), 0);
  st_snapshot_take(&vd, &b);
  assert_true(st_snapshot_equal(&a, &b));

  /* A snapshot, not a view: the source can go away. */
  sp_mem_store_del(src);
  st_snapshot_take(&vd, &b);
  assert_true(st_snapshot_equal(&a, &b));
  sp_mem_store_del(dst);
}

/* The source store of the allocation tests, built with the default
 * allocator so only the copy's allocations are counted. */
static sp_mem_store *copy_src;

static int body_copy(const sp_mem *mem, void *arg) {
  sp_mem_store *dst = NULL;
  st_snapshot before, after;
  int rv;
  (void)arg;

  rv = sp_mem_store_new(&dst, mem);
  if (rv != 0) {
    return rv;
  }
  sp_store vd = vtable(dst);
  for (unsigned k = 1; k <= 3 && rv == 0; ++k) {
    sp_entry e = entry_k(0, k);
    rv = sp_mem_store_append(dst, &e, NULL);
  }
  if (rv == 0) {
    st_snapshot_take(&vd, &before);
    rv = sp_mem_store_copy_from(dst, copy_src);
    st_snapshot_take(&vd, &after);
    if (rv != 0) {
      assert_true(st_snapshot_equal(&before, &after));
    } else {
      sp_store vs = vtable(copy_src);
      st_snapshot_take(&vs, &before);
      assert_true(st_snapshot_equal(&before, &after));
    }
  }
  sp_mem_store_del(dst);
  return rv;
}

static void test_copy_from_nomem(void **state) {
  uint8_t *big = malloc(2u << 20);
  (void)state;

  assert_non_null(big);
  copy_src = new_store(NULL);
  for (unsigned k = 1; k <= 100; ++k) {
    sp_entry e = entry_k(0, k);
    assert_int_equal(sp_mem_store_append(copy_src, &e, NULL), 0);
  }
  st_fill(big, 2u << 20, 3);
  sp_entry e = st_entry(0, 3, big, 2u << 20);
  assert_int_equal(sp_mem_store_append(copy_src, &e, NULL), 0);
  assert_int_equal(sp_mem_store_prune(copy_src, 10), 0);
  assert_true(sp_test_mem_fail_each(body_copy, NULL, NULL) > 4);
  sp_mem_store_del(copy_src);
  copy_src = NULL;
  free(big);
}

/* A call that fails must leave the store exactly as it was. */
#define CHECKED(vt, call)                                                     \
  do {                                                                        \
    st_snapshot b_, a_;                                                       \
    st_snapshot_take((vt), &b_);                                              \
    rv = (call);                                                              \
    if (rv != 0) {                                                            \
      st_snapshot_take((vt), &a_);                                            \
      assert_true(st_snapshot_equal(&b_, &a_));                               \
      goto out;                                                               \
    }                                                                         \
  } while (0)

static uint8_t *big_payload;
#define BIG_LEN ((size_t)1536 * 1024)

static int body_sequence(const sp_mem *mem, void *arg) {
  sp_mem_store *leader = NULL, *follower = NULL;
  sp_entry batch[80];
  uint8_t hashes[80 * SP_HASH_LEN];
  sp_store vl, vf;
  st_collect c;
  int rv;
  (void)arg;

  rv = sp_mem_store_new(&leader, mem);
  if (rv != 0) {
    goto out;
  }
  rv = sp_mem_store_new(&follower, mem);
  if (rv != 0) {
    goto out;
  }
  vl = vtable(leader);
  vf = vtable(follower);
  /* Crosses the initial record capacity and opens several blocks. */
  for (unsigned k = 1; k <= 70; ++k) {
    sp_entry e = entry_k(0, k);
    CHECKED(&vl, sp_mem_store_append(leader, &e, NULL));
    if (k == 30) {
      sp_entry b = st_entry(0, 3, big_payload, BIG_LEN);
      CHECKED(&vl, sp_mem_store_append(leader, &b, NULL));
    }
  }
  /* Ship it to the follower in two batches. */
  st_collect_init(&c);
  rv = vl.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c, vl.user_data);
  assert_int_equal(rv, 0);
  assert_int_equal(c.n, 71);
  for (size_t i = 0; i < 71; ++i) {
    assert_int_equal(sp_mem_store_get(leader, c.seqs[i], &batch[i], NULL), 0);
    memcpy(hashes + i * SP_HASH_LEN, c.hashes[i], SP_HASH_LEN);
  }
  CHECKED(&vf, vf.apply(batch, hashes, 40, 2, vf.user_data));
  CHECKED(&vf, vf.apply(batch + 40, hashes + 40 * SP_HASH_LEN, 31, 2,
                        vf.user_data));
  CHECKED(&vf, sp_mem_store_copy_from(follower, leader));
  assert_int_equal(sp_mem_store_prune(leader, 60), 0);
out:
  sp_mem_store_del(leader);
  sp_mem_store_del(follower);
  return rv;
}

static void test_fail_each_allocation(void **state) {
  (void)state;
  big_payload = malloc(BIG_LEN);
  assert_non_null(big_payload);
  st_fill(big_payload, BIG_LEN, 3);
  long runs = sp_test_mem_fail_each(body_sequence, NULL, NULL);
  /* new x2, records, block table, blocks, growth, apply, copy... */
  assert_true(runs > 10);
  free(big_payload);
  big_payload = NULL;
}

/* Follower positions kept with the log (store vtable version 2). */
static void test_follower_acks(void **state) {
  sp_mem_store *s;
  sp_store vt;
  (void)state;

  assert_int_equal(sp_mem_store_new(&s, NULL), 0);
  sp_mem_store_get_vtable(s, &vt);
  assert_int_equal(st_check_follower_acks(&vt), 0);
  sp_mem_store_del(s);
}

/* Follower addresses kept with the log (store vtable version 2). */
static void test_follower_addresses(void **state) {
  sp_mem_store *s;
  sp_store vt;
  (void)state;

  assert_int_equal(sp_mem_store_new(&s, NULL), 0);
  sp_mem_store_get_vtable(s, &vt);
  assert_int_equal(st_check_follower_addresses(&vt), 0);
  sp_mem_store_del(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_args),
      cmocka_unit_test(test_append_read_gaps),
      cmocka_unit_test(test_sink_stop_and_error),
      cmocka_unit_test(test_sink_reentry),
      cmocka_unit_test(test_bounds_hash_state),
      cmocka_unit_test(test_prune),
      cmocka_unit_test(test_prune_releases_blocks),
      cmocka_unit_test(test_follower_apply),
      cmocka_unit_test(test_copy_from),
      cmocka_unit_test(test_copy_from_nomem),
      cmocka_unit_test(test_fail_each_allocation),
      cmocka_unit_test(test_follower_acks),
      cmocka_unit_test(test_follower_addresses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
