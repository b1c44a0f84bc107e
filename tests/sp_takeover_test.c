/*
 * sp_takeover_test.c: the newest stream from a library's leader wins on
 * the follower (issue 17, item 1): a leader that crashed without a word
 * and came back reaches its follower at once, not after the follower's
 * timeouts give up on the dead stream.
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

/* A kill -9 the follower does not hear of: its stream stays open. */
static void vanish(tc *t, int dev) {
  tc_dev *d = &t->dev[dev];
  int l;

  assert_int_equal(sp_mem_net_vanish(t->net, &d->id), 0);
  sp_node_del(d->node);
  d->node = NULL;
  for (l = 0; l < t->nlibs; ++l) {
    d->h[l] = NULL;
  }
}

static void start_latency(tc *t, sp_duration latency) {
  assert_int_equal(tc_init(t, 2, 1, latency, NULL), 0);
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  assert_int_equal(tc_open(t, F1, LIB), 0);
  tc_append(t, LIB, 100, 20);
  assert_true(tc_converge(t, LIB, SP_SECONDS));
}

static void start(tc *t) { start_latency(t, 1 * MS); }

static void restart_leader_silently(tc *t) {
  vanish(t, LEADER);
  tc_run_for(t, 2 * SP_SECONDS);
  assert_int_equal(tc_boot(t, LEADER), 0);
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
}

/* The restarted leader dials the follower at once; the follower, still
 * holding its silent stream to the dead process, takes the new stream
 * and resumes on it from what it applied: nothing twice, nothing lost. */
static void test_restarted_leader_wins(void **state) {
  tc t;
  sp_handler_status st;

  (void)state;
  start(&t);
  restart_leader_silently(&t);
  tc_append(&t, LIB, 50, 20);
  tc_run_for(&t, 500 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 150);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.applied_entries, 150);
  /* The resume check of the new stream starts where the store stands. */
  assert_int_equal(t.dev[F1].sent.fetch_since_first, 100);
  assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &st), 0);
  assert_int_equal(st.connected_peers, 1);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A request the host made on the dead stream is served on the new one,
 * not failed by the switch. */
static int on_request(sp_handler *h, int status, sp_seq applied, void *ud) {
  int *res = ud;

  (void)h;
  res[0]++;
  res[1] = status;
  res[2] = (int)applied;
  return 0;
}

static void test_request_survives_takeover(void **state) {
  tc t;
  int res[3] = {0, 0, 0};

  (void)state;
  start(&t);
  vanish(&t, LEADER);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(sp_handler_request_entries(t.dev[F1].h[LIB], 100,
                                              on_request, res, t.now),
                   0);
  assert_int_equal(tc_boot(&t, LEADER), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 10, 20);
  tc_run_for(&t, 500 * MS);
  assert_int_equal(res[0], 1);
  assert_int_equal(res[1], 0);
  assert_int_equal(tc_applied(&t, F1, LIB), 110);
  tc_free(&t);
}

/* Both sides dialing at once (a cut connection, both reconnecting within
 * a latency of each other): the two streams cross, and one of them must
 * survive, not both be closed by each side preferring the other's. */
static void test_crossed_dials_settle(void **state) {
  tc t;
  sp_mem_net_stats st;
  int i;

  (void)state;
  start_latency(&t, 60 * MS);
  for (i = 0; i < 20; ++i) {
    assert_int_equal(sp_mem_net_cut(t.net, &t.dev[LEADER].id,
                                    &t.dev[F1].id),
                     0);
    tc_append(&t, LIB, 5, 20);
    assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  }
  sp_mem_net_get_stats(t.net, &st);
  print_message("20 cuts: %llu streams opened\n",
                (unsigned long long)st.streams_opened);
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 200);
  assert_int_equal(t.dev[F1].counts.applied_entries, 200);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_restarted_leader_wins),
      cmocka_unit_test(test_request_survives_takeover),
      cmocka_unit_test(test_crossed_dials_settle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
