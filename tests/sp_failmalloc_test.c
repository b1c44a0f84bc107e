/*
 * sp_failmalloc_test.c: a full sync round -- connect, catch-up over
 * several pages, live push, acknowledgement -- with the i-th allocation of
 * the nodes, stores and network failing, for every i.  Each run must end
 * either correctly (the failure was absorbed, e.g. by a reconnect) or with
 * SP_ERR_NOMEM reported by the call that met it, and leak nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"
#include "sp_test_mem.h"

#define MS SP_MILLISECONDS

/* Appends through the test allocator, reporting failure instead of
 * aborting as tc_append does. */
static int append(tc *t, int n, size_t payload) {
  uint8_t buf[64] = {0};
  int i, rv;

  for (i = 0; i < n; ++i) {
    sp_entry e;
    memset(&e, 0, sizeof(e));
    e.model_type = "m";
    e.model_type_len = 1;
    e.data = buf;
    e.data_len = payload;
    rv = sp_mem_store_append(t->dev[0].store[0], &e, NULL);
    if (rv != 0) {
      return rv;
    }
  }
  rv = sp_handler_notify_new_entries(t->dev[0].h[0], 1, (sp_seq)n, t->now);
  return sp_err_is_fatal(rv) ? rv : 0;
}

static int round_trip(const sp_mem *mem) {
  tc t;
  int rv;

  rv = tc_init(&t, 2, 1, 1 * MS, mem);
  if (rv == 0) {
    t.stop_on_fatal = 1;
    t.dev[1].cfg[0].fetch_limit = 10; /* several pages */
    rv = tc_open(&t, 0, 0);
  }
  if (rv == 0) {
    rv = append(&t, 35, 40);
  }
  if (rv == 0) {
    rv = tc_open(&t, 1, 0);
  }
  if (rv == 0) {
    tc_converge(&t, 0, 60 * SP_SECONDS);
    rv = t.fatal;
  }
  if (rv == 0) {
    rv = append(&t, 5, 40); /* live push */
  }
  if (rv == 0) {
    tc_converge(&t, 0, 60 * SP_SECONDS);
    tc_run_for(&t, 100 * MS); /* the ack */
    rv = t.fatal;
  }
  if (rv == 0) {
    sp_follower_progress p;
    /* Absorbed failures must still give the right result. */
    assert_int_equal(tc_applied(&t, 1, 0), tc_latest(&t, 0));
    assert_true(tc_is_prefix(&t, 1, 0));
    assert_int_equal(sp_handler_follower_progress(t.dev[0].h[0], &t.dev[1].id,
                                                  t.now, &p), 0);
    assert_int_equal(p.acked_sequence, tc_latest(&t, 0));
  }
  tc_free(&t);
  return rv;
}

static void test_full_round_every_allocation(void **state) {
  long i, absorbed = 0, reported = 0;

  (void)state;
  for (i = 1;; ++i) {
    sp_test_mem tm;
    int rv;

    sp_test_mem_init(&tm);
    tm.fail_at = i;
    rv = round_trip(&tm.mem);
    if (tm.live != 0) {
      print_error("allocation %ld failing: %ld blocks leaked\n", i, tm.live);
    }
    assert_int_equal(tm.live, 0);
    if (tm.failed == 0) {
      assert_int_equal(rv, 0);
      break;
    }
    if (rv != 0 && rv != SP_ERR_NOMEM) {
      print_error("allocation %ld failing: %s\n", i, sp_err_name(rv));
    }
    assert_true(rv == 0 || rv == SP_ERR_NOMEM);
    if (rv == 0) {
      absorbed++;
    } else {
      reported++;
    }
  }
  print_message("%ld allocations in a full round: %ld failures reported as "
                "SP_ERR_NOMEM, %ld absorbed\n", i - 1, reported, absorbed);
  assert_true(i > 50);
}

/* The follower's log is untouched (empty) or exactly the leader's at some
 * S it installed or synced to: head hash equal to the leader's link. */
static void check_untouched_or_installed(tc *t) {
  sp_store fv, lv;
  sp_store_state st;
  uint8_t link[SP_HASH_LEN];

  sp_mem_store_get_vtable(t->dev[1].store[0], &fv);
  sp_mem_store_get_vtable(t->dev[0].store[0], &lv);
  assert_int_equal(fv.state(&st, fv.user_data), 0);
  if (st.applied == 0) {
    return;
  }
  assert_int_equal(lv.hash_at(st.applied, link, lv.user_data), 0);
  assert_memory_equal(st.head_hash, link, SP_HASH_LEN);
  assert_true(tc_is_prefix(t, 1, 0));
}

static long g_installed;

static void count_installs(tc *t, int dev, const sp_event *ev) {
  (void)t;
  if (dev == 1 && ev->type == SP_EVENT_SNAPSHOT_INSTALLED) {
    g_installed++;
  }
}

/* SyncRequired after a prune, recovered by a snapshot from the in-memory
 * store's source into its sink (several chunks), then incremental sync
 * past S.  Returns 0, or the first fatal code; *installed counts the
 * follower's SNAPSHOT_INSTALLED events. */
static int snapshot_transfer(const sp_mem *mem, long *installed) {
  sp_snapshot_source src;
  sp_snapshot_sink sink;
  tc t;
  int rv;

  *installed = 0;
  g_installed = 0;
  rv = tc_init(&t, 2, 1, 1 * MS, mem);
  if (rv == 0) {
    t.stop_on_fatal = 1;
    t.on_event = count_installs;
    sp_mem_store_snapshot_source(t.dev[0].store[0], &src);
    sp_mem_store_snapshot_sink(t.dev[1].store[0], &sink);
    t.dev[0].cfg[0].snapshot_source = &src;
    t.dev[0].cfg[0].snapshot_chunk_size = 512; /* several chunks */
    t.dev[1].cfg[0].snapshot_sink = &sink;
    t.dev[1].cfg[0].snapshot_window = 2;
    rv = tc_open(&t, 0, 0);
  }
  if (rv == 0) {
    rv = append(&t, 30, 40);
  }
  if (rv == 0) {
    /* The follower is behind retention: only a snapshot brings it. */
    rv = sp_mem_store_prune(t.dev[0].store[0], 25);
  }
  if (rv == 0) {
    rv = tc_open(&t, 1, 0);
  }
  if (rv == 0) {
    tc_converge(&t, 0, 60 * SP_SECONDS);
    rv = t.fatal;
  }
  if (rv == 0) {
    rv = append(&t, 5, 40); /* incremental after the install */
  }
  if (rv == 0) {
    tc_converge(&t, 0, 60 * SP_SECONDS);
    rv = t.fatal;
  }
  if (t.dev[0].store[0] != NULL && t.dev[1].store[0] != NULL) {
    *installed = g_installed;
    check_untouched_or_installed(&t);
  }
  if (rv == 0 && mem == NULL) {
    /* Without failures: installed once, then followed to the head. */
    assert_int_equal(*installed, 1);
    assert_int_equal(tc_applied(&t, 1, 0), tc_latest(&t, 0));
  }
  tc_free(&t);
  return rv;
}

static void test_snapshot_transfer_every_allocation(void **state) {
  long i, installed = 0, runs_installed = 0;
  int rv;

  (void)state;
  rv = snapshot_transfer(NULL, &installed);
  assert_int_equal(rv, 0);
  assert_int_equal(installed, 1);
  for (i = 1;; ++i) {
    sp_test_mem tm;

    sp_test_mem_init(&tm);
    tm.fail_at = i;
    rv = snapshot_transfer(&tm.mem, &installed);
    if (tm.live != 0) {
      print_error("allocation %ld failing: %ld blocks leaked\n", i, tm.live);
    }
    assert_int_equal(tm.live, 0);
    if (tm.failed == 0) {
      assert_int_equal(rv, 0);
      assert_int_equal(installed, 1);
      break;
    }
    if (rv != 0 && rv != SP_ERR_NOMEM) {
      print_error("allocation %ld failing: %s\n", i, sp_err_name(rv));
    }
    assert_true(rv == 0 || rv == SP_ERR_NOMEM);
    runs_installed += installed > 0;
  }
  print_message("%ld allocations in a snapshot transfer; %ld failing runs "
                "still installed\n", i - 1, runs_installed);
  assert_true(i > 50);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_round_every_allocation),
      cmocka_unit_test(test_snapshot_transfer_every_allocation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
