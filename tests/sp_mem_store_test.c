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

/* -- writes from every device (vtable version 3) -- */

static int prune_cb(void *ctx, sp_seq through) {
  return sp_mem_store_prune(ctx, through);
}

static void arm_apply(void *ctx, int on) {
  sp_mem_store_fail_applies(ctx, on ? 1 : 0);
}

static void test_v3_origins(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  (void)state;

  assert_int_equal(st_check_origins(&vt, prune_cb, s), 0);
  sp_mem_store_del(s);
}

static void test_v3_outbox(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  (void)state;

  assert_int_equal(st_check_outbox(&vt), 0);
  sp_mem_store_del(s);
}

static void test_v3_committed_set(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  (void)state;

  assert_int_equal(st_check_committed_set(&vt, prune_cb, s), 0);
  sp_mem_store_del(s);
}

static void test_v3_retire(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  (void)state;

  assert_int_equal(st_check_retire(&vt, arm_apply, s), 0);
  sp_mem_store_del(s);
}

static void test_v3_anchor(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  (void)state;

  assert_int_equal(st_check_anchor(&vt), 0);
  sp_mem_store_del(s);
  s = new_store(NULL);
  vt = vtable(s);
  assert_int_equal(st_check_anchor_no_shift(&vt), 0);
  sp_mem_store_del(s);
}

/* Origins above SP_MAX_ORIGIN_SEQ refused as the SQLite store does. */
static void test_v3_origin_max(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  sp_entry e = st_origin_entry(1, ST_OTHER, SP_MAX_ORIGIN_SEQ + 1);
  sp_seq seq = 0;
  (void)state;

  assert_int_equal(st_check_origin_max(&vt), 0);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), SP_ERR_INVALID_ARGUMENT);
  sp_mem_store_del(s);
}

/* An anchor near 2^64 refused, not wrapped around. */
static void test_v3_anchor_max(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  (void)state;

  assert_int_equal(st_check_anchor_max(&vt), 0);
  sp_mem_store_del(s);
}

/* The public append keeps origin ids and refuses a repeat; get gives it. */
static void test_append_public_origin(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  sp_entry e = st_origin_entry(1, ST_OTHER, 4), got;
  st_snapshot before, after;
  sp_seq seq = 0;
  (void)state;

  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(seq, 1);
  assert_int_equal(sp_mem_store_get(s, 1, &got, NULL), 0);
  e.sequence = 1;
  assert_true(st_entry_equal(&got, &e));
  st_snapshot_take(&vt, &before);
  e = st_origin_entry(2, ST_OTHER, 4);
  assert_int_equal(sp_mem_store_append(s, &e, &seq), SP_ERR_EXISTS);
  e.sequence = 9; /* a given sequence changes nothing */
  assert_int_equal(sp_mem_store_append(s, &e, &seq), SP_ERR_EXISTS);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  e.origin_seq = 5;
  assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  assert_int_equal(seq, 9);
  assert_int_equal(st_find(&vt, ST_OTHER, 5), 9005);
  assert_int_equal(st_find(&vt, ST_OTHER, 4), 1005);
  sp_mem_store_del(s);
}

static void test_fail_appends(void **state) {
  sp_mem_store *s = new_store(NULL);
  sp_store vt = vtable(s);
  sp_entry es[2] = {st_origin_entry(1, ST_OTHER, 1),
                    st_origin_entry(2, ST_OTHER, 2)};
  st_snapshot before, after;
  sp_seq first = 0;
  (void)state;

  sp_mem_store_fail_appends(s, 2);
  st_snapshot_take(&vt, &before);
  assert_int_equal(vt.append(es, 2, &first, vt.user_data), SP_ERR_STORE);
  assert_int_equal(vt.append(es, 2, &first, vt.user_data), SP_ERR_STORE);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  assert_int_equal(st_find(&vt, ST_OTHER, 1), ST_NF(0));
  /* The public helper is not a vtable call: not counted. */
  sp_mem_store_fail_appends(s, 1);
  assert_int_equal(sp_mem_store_append(s, &es[0], NULL), 0);
  assert_int_equal(vt.append(es + 1, 1, &first, vt.user_data),
                   SP_ERR_STORE);
  assert_int_equal(vt.append(es + 1, 1, &first, vt.user_data), 0);
  assert_int_equal(first, 2);
  assert_int_equal(st_find(&vt, ST_OTHER, 2), 2002);
  sp_mem_store_fail_appends(NULL, 1);
  sp_mem_store_del(s);
}

/*
 * A follower whose log holds its own writes takes a new history: the
 * ones not in the new log's committed set go back into the outbox.
 * dst's log: 1 other, 2..4 own o1..o3, 5 other o9, 6..7 own o4, o5; its
 * outbox still holds o6.  src: own o3 (pruned) and own o1 (retained), so
 * o2 is a hole below src's highest own origin.
 */
static void build_put_back(const sp_mem *mem, sp_mem_store **pdst,
                           sp_mem_store **psrc, sp_entry *log) {
  sp_mem_store *dst = NULL, *src = NULL;
  sp_entry mine[6];
  uint64_t first = 0;
  sp_store vd, vs;

  assert_int_equal(sp_mem_store_new(&dst, mem), 0);
  assert_int_equal(sp_mem_store_new(&src, NULL), 0);
  vd = vtable(dst);
  vs = vtable(src);
  for (unsigned i = 0; i < 6; ++i) {
    mine[i] = st_origin_entry(60 + i, ST_OWN, 0);
  }
  assert_int_equal(vd.outbox_put(mine, 6, &first, vd.user_data), 0);
  log[0] = st_origin_entry(70, ST_OTHER, 0);
  log[1] = st_origin_entry(71, ST_OWN, 1);
  log[2] = st_origin_entry(72, ST_OWN, 2);
  log[3] = st_origin_entry(73, ST_OWN, 3);
  log[4] = st_origin_entry(74, ST_OTHER, 9);
  assert_int_equal(st_apply_next(&vd, log, 5), 0);
  log[5] = st_origin_entry(75, ST_OWN, 4);
  log[6] = st_origin_entry(76, ST_OWN, 5);
  assert_int_equal(st_apply_next(&vd, log + 5, 2), 0);
  assert_true(st_stats_are(&vd, 1, st_payload(&mine[5]), 7, 0));

  sp_entry se[3] = {st_origin_entry(80, ST_OWN, 3),
                    st_origin_entry(81, ST_OWN, 1),
                    st_origin_entry(82, ST_THIRD, 0)};
  assert_int_equal(vs.append(se, 3, NULL, vs.user_data), 0);
  assert_int_equal(sp_mem_store_prune(src, 1), 0);
  *pdst = dst;
  *psrc = src;
}

static void test_copy_from_puts_back(void **state) {
  sp_mem_store *dst, *src;
  sp_entry log[7], want[3];
  uint64_t o[8], bytes;
  st_snapshot a, b;
  st_expect x;
  (void)state;

  build_put_back(NULL, &dst, &src, log);
  sp_store vd = vtable(dst), vs = vtable(src);
  uint64_t kept = 0;
  {
    sp_outbox_stats os;
    assert_int_equal(vd.outbox_stats(&os, vd.user_data), 0);
    kept = os.bytes;
  }
  assert_int_equal(sp_mem_store_copy_from(dst, src), 0);
  st_snapshot_take(&vs, &a);
  st_snapshot_take(&vd, &b);
  assert_true(st_snapshot_equal(&a, &b));
  /* o1 is held and o3 committed and pruned in src: not put back.  o2 (a
   * hole below src's highest: src never held it), o4 and o5 were lost:
   * back in the outbox beside o6, with their content. */
  assert_int_equal(st_outbox_origins(&vd, 0, 8, o), 4);
  assert_int_equal(o[0], 2);
  assert_int_equal(o[1], 4);
  assert_int_equal(o[2], 5);
  assert_int_equal(o[3], 6);
  bytes = kept + st_payload(&log[2]) + st_payload(&log[5]) +
          st_payload(&log[6]);
  assert_true(st_stats_are(&vd, 4, bytes, 7, 0));
  /* Made again: src's entries reused its static payload buffer. */
  want[0] = st_origin_entry(72, ST_OWN, 2);
  want[1] = log[5];
  want[2] = log[6];
  want[0].sequence = want[1].sequence = want[2].sequence = 0;
  memset(&x, 0, sizeof(x));
  x.want = want;
  x.n = 3;
  assert_int_equal(vd.outbox_read(0, 3, st_expect_sink, &x, vd.user_data),
                   0);
  assert_int_equal(x.seen, 3);
  assert_false(x.bad);
  /* The committed set is src's: o3 pruned there, o2 and o4 never held. */
  assert_int_equal(st_find(&vd, ST_OWN, 1), 2003);
  assert_int_equal(st_find(&vd, ST_OWN, 3), 3);
  assert_int_equal(st_find(&vd, ST_OWN, 2), ST_NF(3));
  assert_int_equal(st_find(&vd, ST_OWN, 4), ST_NF(3));
  assert_int_equal(st_find(&vd, ST_OTHER, 9), ST_NF(0));
  /* Again from the same source: nothing more (the items are there). */
  assert_int_equal(sp_mem_store_copy_from(dst, src), 0);
  assert_true(st_stats_are(&vd, 4, bytes, 7, 0));
  sp_mem_store_del(src);
  sp_mem_store_del(dst);

  /* A source with a higher own origin raises the next one. */
  build_put_back(NULL, &dst, &src, log);
  vd = vtable(dst);
  vs = vtable(src);
  sp_entry hi = st_origin_entry(90, ST_OWN, 40);
  assert_int_equal(vs.append(&hi, 1, NULL, vs.user_data), 0);
  assert_int_equal(sp_mem_store_copy_from(dst, src), 0);
  /* A higher origin covers nothing: only what src held is not put back. */
  assert_int_equal(st_outbox_origins(&vd, 0, 8, o), 4);
  assert_int_equal(o[0], 2);
  assert_int_equal(o[3], 6);
  {
    sp_outbox_stats os;
    assert_int_equal(vd.outbox_stats(&os, vd.user_data), 0);
    assert_int_equal(os.next_origin, 41);
  }
  sp_mem_store_del(src);
  sp_mem_store_del(dst);

  /* A pending item src committed and pruned (o6, before dst applied it)
   * leaves the outbox: it is in the new history. */
  build_put_back(NULL, &dst, &src, log);
  vd = vtable(dst);
  vs = vtable(src);
  {
    sp_entry more[2] = {st_origin_entry(91, ST_OWN, 6),
                        st_origin_entry(92, ST_OWN, 7)};
    sp_store_state ss;
    assert_int_equal(vs.append(more, 2, NULL, vs.user_data), 0);
    assert_int_equal(vs.state(&ss, vs.user_data), 0);
    assert_int_equal(sp_mem_store_prune(src, ss.applied), 0);
  }
  assert_int_equal(sp_mem_store_copy_from(dst, src), 0);
  assert_int_equal(st_outbox_origins(&vd, 0, 8, o), 3);
  assert_int_equal(o[0], 2);
  assert_int_equal(o[1], 4);
  assert_int_equal(o[2], 5);
  bytes = st_payload(&log[2]) + st_payload(&log[5]) + st_payload(&log[6]);
  assert_true(st_stats_are(&vd, 3, bytes, 8, 0));
  assert_int_equal(st_find(&vd, ST_OWN, 6), 7);
  assert_int_equal(st_find(&vd, ST_OWN, 5), ST_NF(7));
  sp_mem_store_del(src);
  sp_mem_store_del(dst);
}

/* Everything observable of an outbox, to prove "unchanged". */
static uint64_t outbox_digest(const sp_store *vt) {
  st_collect c;
  sp_outbox_stats os;

  st_collect_init(&c);
  assert_int_equal(vt->outbox_read(0, SIZE_MAX, st_collect_sink, &c,
                                   vt->user_data), 0);
  assert_int_equal(vt->outbox_stats(&os, vt->user_data), 0);
  c.digest = st_mix(c.digest, &os.items, sizeof(os.items));
  c.digest = st_mix(c.digest, &os.bytes, sizeof(os.bytes));
  c.digest = st_mix(c.digest, &os.next_origin, sizeof(os.next_origin));
  return st_mix(c.digest, &os.anchored, sizeof(os.anchored));
}

/* Build dst with a failing allocator; every step either works or fails
 * leaving the store as it was. */
static int body_put_back_all(const sp_mem *mem, void *arg) {
  sp_mem_store *dst = NULL, *src = NULL;
  sp_entry mine[6], log[7];
  uint64_t first = 0, b2, a2, o[8];
  st_snapshot b1, a1;
  sp_store vd;
  int rv;
  (void)arg;

  rv = sp_mem_store_new(&dst, mem);
  if (rv != 0) {
    return rv;
  }
  vd = vtable(dst);
  for (unsigned i = 0; i < 6; ++i) {
    mine[i] = st_origin_entry(60 + i, ST_OWN, 0);
  }
#define STEP(call)                                                           \
  do {                                                                       \
    st_snapshot_take(&vd, &b1);                                              \
    b2 = outbox_digest(&vd);                                                 \
    rv = (call);                                                             \
    if (rv != 0) {                                                           \
      st_snapshot_take(&vd, &a1);                                            \
      a2 = outbox_digest(&vd);                                               \
      assert_true(st_snapshot_equal(&b1, &a1));                              \
      assert_true(a2 == b2);                                                 \
      goto out;                                                              \
    }                                                                        \
  } while (0)
  STEP(vd.outbox_put(mine, 6, &first, vd.user_data));
  log[0] = st_origin_entry(70, ST_OTHER, 0);
  log[1] = st_origin_entry(71, ST_OWN, 1);
  log[2] = st_origin_entry(72, ST_OWN, 2);
  log[3] = st_origin_entry(73, ST_OWN, 3);
  log[4] = st_origin_entry(74, ST_OTHER, 9);
  STEP(st_apply_next(&vd, log, 5));
  log[5] = st_origin_entry(75, ST_OWN, 4);
  log[6] = st_origin_entry(76, ST_OWN, 5);
  STEP(vd.append(log + 5, 2, NULL, vd.user_data));
  {
    sp_entry se[3] = {st_origin_entry(80, ST_OWN, 3),
                      st_origin_entry(81, ST_OWN, 1),
                      st_origin_entry(82, ST_OWN, 6)};
    sp_store vs;
    assert_int_equal(sp_mem_store_new(&src, NULL), 0);
    vs = vtable(src);
    assert_int_equal(vs.append(se, 3, NULL, vs.user_data), 0);
    assert_int_equal(sp_mem_store_prune(src, 1), 0);
  }
  STEP(sp_mem_store_copy_from(dst, src));
  /* Lost o2 back beside o4, o5 (appended, so never retired); o6 retired
   * (committed in src). */
  assert_int_equal(st_outbox_origins(&vd, 0, 8, o), 3);
  assert_int_equal(o[0], 2);
  assert_int_equal(o[2], 5);
out:
#undef STEP
  sp_mem_store_del(dst);
  sp_mem_store_del(src);
  return rv;
}

static void test_v3_fail_each_allocation(void **state) {
  (void)state;
  assert_true(sp_test_mem_fail_each(body_put_back_all, NULL, NULL) > 5);
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
      cmocka_unit_test(test_v3_origins),
      cmocka_unit_test(test_v3_outbox),
      cmocka_unit_test(test_v3_committed_set),
      cmocka_unit_test(test_v3_retire),
      cmocka_unit_test(test_v3_anchor),
      cmocka_unit_test(test_v3_origin_max),
      cmocka_unit_test(test_v3_anchor_max),
      cmocka_unit_test(test_append_public_origin),
      cmocka_unit_test(test_fail_appends),
      cmocka_unit_test(test_copy_from_puts_back),
      cmocka_unit_test(test_v3_fail_each_allocation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
