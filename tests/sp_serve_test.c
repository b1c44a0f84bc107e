/*
 * sp_serve_test.c: what the leader serves when its store changes or rots
 * under it: a prune that lands between the bounds and the read, and rows
 * that no longer match their stored chain hashes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define MS SP_MILLISECONDS
#define LIB 0
#define LEADER 0
#define F1 1

/* The leader's store, wrapped: `read` can prune first, or hand one row
 * over with a flipped byte (in its payload or in its stored hash).  The
 * other callbacks and user_data stay the store's own. */
typedef struct wrap {
  sp_store inner;
  sp_mem_store *ms;
  /* Prune through this on the next read that starts below it (0: off). */
  sp_seq prune_to;
  int prunes;
  /* Sequence whose row is corrupt at rest (0: none). */
  sp_seq bad_seq;
  int bad_hash; /* 1: the stored hash is wrong, 0: the payload is;
                 * 2: the row no longer decodes as an entry; 3: the store
                 * itself cannot decode it (its read fails, corrupt) */
  /* Keep the mem store's SP_STORE_ROWS_VOUCHED: rows altered under it
   * then stand for a store that vouches falsely (0: the flag is dropped,
   * as a store whose rows rot at rest must). */
  int vouch;
  /* The sink being wrapped, during a read. */
  sp_entry_sink sink;
  void *sink_ctx;
} wrap;

static wrap g_wrap;

static int corrupting_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                           void *arg) {
  wrap *w = arg;
  uint8_t data[4096], h[SP_HASH_LEN];
  sp_entry copy;

  if (e->sequence != w->bad_seq || e->data_len == 0 ||
      e->data_len > sizeof(data)) {
    return w->sink(e, hash, w->sink_ctx);
  }
  if (w->bad_hash == 3) {
    return SP_ERR_STORE_CORRUPT;
  }
  copy = *e;
  memcpy(data, e->data, e->data_len);
  memcpy(h, hash, SP_HASH_LEN);
  if (w->bad_hash == 2) {
    copy.change_type = (sp_change_type)77;
  } else if (w->bad_hash) {
    h[7] ^= 0x40;
  } else {
    data[e->data_len / 2] ^= 0x01;
  }
  copy.data = data;
  return w->sink(&copy, h, w->sink_ctx);
}

static int wrap_read(sp_seq after, sp_seq through, size_t max_count,
                     sp_entry_sink sink, void *sink_ctx, void *user_data) {
  wrap *w = &g_wrap;

  assert_ptr_equal(user_data, w->ms);
  if (w->prune_to && after < w->prune_to) {
    /* The host prunes after the leader read the bounds, before the rows:
     * the read finds them gone. */
    assert_int_equal(sp_mem_store_prune(w->ms, w->prune_to), 0);
    w->prune_to = 0;
    w->prunes++;
  }
  w->sink = sink;
  w->sink_ctx = sink_ctx;
  return w->inner.read(after, through, max_count, corrupting_sink, w,
                       user_data);
}

static int wrap_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ud) {
  wrap *w = &g_wrap;
  int rv = w->inner.hash_at(seq, out, ud);

  if (rv == 0 && seq == w->bad_seq && w->bad_hash == 1) {
    out[7] ^= 0x40;
  }
  return rv;
}

static void hook(tc *t, int dev, int lib, sp_store *st) {
  if (dev != LEADER || lib != LIB) {
    return;
  }
  g_wrap.inner = *st;
  g_wrap.ms = t->dev[dev].store[lib];
  st->read = wrap_read;
  st->hash_at = wrap_hash_at;
  if (!g_wrap.vouch) {
    st->flags &= ~SP_STORE_ROWS_VOUCHED;
  }
}

/* Leader open with `n` entries, wrapped store; the follower not yet. */
static void start_vouched(tc *t, int n, int vouch) {
  memset(&g_wrap, 0, sizeof(g_wrap));
  g_wrap.vouch = vouch;
  assert_int_equal(tc_init(t, 2, 1, 1 * MS, NULL), 0);
  t->store_hook = hook;
  t->dev[F1].cfg[LIB].fetch_limit = 40;
  t->dev[F1].cfg[LIB].fetch_window = 1;
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  tc_append(t, LIB, n, 100);
}

static void start(tc *t, int n) { start_vouched(t, n, 0); }

/* A prune between the leader's bounds and its read: the follower is
 * behind retention, and must be told so, not that its log diverged. */
static void prune_racing_read(sp_seq prune_to) {
  tc t;

  start(&t, 100);
  g_wrap.prune_to = prune_to;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);

  assert_int_equal(g_wrap.prunes, 1);
  assert_int_equal(t.dev[F1].counts.last_sync_reason,
                   SP_SYNC_BEHIND_RETENTION);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_SYNC_REQUIRED_SENT], 1);
  /* Nothing past the hole was applied. */
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* Part of the requested range is gone: the page would have a hole. */
static void test_prune_racing_read_partial(void **state) {
  (void)state;
  prune_racing_read(25);
}

/* All of it is gone: the page would be empty and move the follower on
 * past rows it never got, to a position the leader still serves from. */
static void test_prune_racing_read_whole(void **state) {
  (void)state;
  prune_racing_read(40); /* exactly the first request (fetch_limit 40) */
}

/* A row that no longer matches its chain hash is the leader's own fault:
 * it is never served, the host hears of it once with its sequence, and
 * the follower keeps what came before it and is not told to resync. */
static void corrupt_row(int bad_hash) {
  tc t;
  int i;

  start(&t, 100);
  g_wrap.bad_seq = 57;
  g_wrap.bad_hash = bad_hash;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  /* Several reconnects: the follower comes back and meets the row again. */
  for (i = 0; i < 10; ++i) {
    tc_run_for(&t, SP_SECONDS);
  }

  assert_int_equal(tc_applied(&t, F1, LIB), 56);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_SYNC_REQUIRED_SENT], 0);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_LOG_CORRUPT], 1);
  assert_int_equal(t.dev[LEADER].counts.last_corrupt_seq, 57);
  /* The follower was refused with the leader's reason. */
  assert_int_equal(t.dev[F1].counts.last_error, SP_ERR_STORE_CORRUPT);
  assert_true(t.dev[F1].counts.ev[SP_EVENT_ERROR] >= 1);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static void test_corrupt_payload_not_served(void **state) {
  (void)state;
  corrupt_row(0);
}

static void test_corrupt_stored_hash_not_served(void **state) {
  (void)state;
  corrupt_row(1);
}

/* The first row of a page is checked against the link before it. */
static void test_corrupt_first_row_of_page(void **state) {
  tc t;

  (void)state;
  start(&t, 100);
  g_wrap.bad_seq = 41; /* fetch_limit 40: the first row of page two */
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 3 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 40);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_LOG_CORRUPT], 1);
  assert_int_equal(t.dev[LEADER].counts.last_corrupt_seq, 41);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  tc_free(&t);
}

/* The leader's stored hash at a follower's resume point rots after the
 * follower took the row: the resume check fails on the leader's side, and
 * the follower must not be told its own log diverged. */
static void test_corrupt_hash_at_resume_point(void **state) {
  tc t;

  (void)state;
  start(&t, 100);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 5 * SP_SECONDS));
  g_wrap.bad_seq = 100;
  g_wrap.bad_hash = 1;
  assert_int_equal(tc_restart(&t, F1), 0); /* a new stream resumes at 100 */
  tc_run_for(&t, 3 * SP_SECONDS);

  assert_int_equal(tc_applied(&t, F1, LIB), 100);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_SYNC_REQUIRED_SENT], 0);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_LOG_CORRUPT], 1);
  assert_int_equal(t.dev[LEADER].counts.last_corrupt_seq, 100);
  assert_int_equal(t.dev[F1].counts.last_error, SP_ERR_STORE_CORRUPT);
  tc_free(&t);
}

/* A store that vouches for its rows (the mem store) has them served as
 * they are, with no second hash: a stored hash made wrong under the flag
 * goes out unchecked, and the follower, which chains the rows itself,
 * takes them all (the page's last hash is a good one).  Without the flag
 * the same row is refused (test_corrupt_stored_hash_not_served). */
static void test_vouched_rows_served_unverified(void **state) {
  tc t;
  sp_store vt;

  (void)state;
  start_vouched(&t, 100, 1);
  assert_int_equal(sp_mem_store_get_vtable(g_wrap.ms, &vt), 0);
  assert_true(vt.flags & SP_STORE_ROWS_VOUCHED);
  g_wrap.bad_seq = 57; /* inside the page (40, 80] */
  g_wrap.bad_hash = 1;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 3 * SP_SECONDS);

  assert_int_equal(tc_applied(&t, F1, LIB), 100);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_LOG_CORRUPT], 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A row that no longer decodes (as the leader checks it, or as the
 * store reads it) is corruption of the leader's log at that row, not a
 * store failure: reported once as such, and the follower refused with the
 * leader's reason, not sent to resync. */
static void undecodable_row(int kind) {
  tc t;

  start(&t, 100);
  g_wrap.bad_seq = 57;
  g_wrap.bad_hash = kind;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 3 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 56);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_LOG_CORRUPT], 1);
  assert_int_equal(t.dev[LEADER].counts.last_corrupt_seq, 57);
  assert_int_equal(t.dev[LEADER].counts.last_error, SP_ERR_STORE_CORRUPT);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  assert_int_equal(t.dev[F1].counts.last_error, SP_ERR_STORE_CORRUPT);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static void test_undecodable_row_is_corruption(void **state) {
  (void)state;
  undecodable_row(2);
}

static void test_store_read_corrupt_is_corruption(void **state) {
  (void)state;
  undecodable_row(3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_undecodable_row_is_corruption),
      cmocka_unit_test(test_store_read_corrupt_is_corruption),
      cmocka_unit_test(test_prune_racing_read_partial),
      cmocka_unit_test(test_prune_racing_read_whole),
      cmocka_unit_test(test_corrupt_payload_not_served),
      cmocka_unit_test(test_corrupt_stored_hash_not_served),
      cmocka_unit_test(test_corrupt_first_row_of_page),
      cmocka_unit_test(test_corrupt_hash_at_resume_point),
      cmocka_unit_test(test_vouched_rows_served_unverified),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
