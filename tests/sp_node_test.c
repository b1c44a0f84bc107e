/*
 * sp_node_test.c: routing between nodes: several libraries over one
 * connection, unknown libraries, non-members, two leaders, the leader
 * dialing a follower that could not reach it, many followers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define MS SP_MILLISECONDS

/* Two libraries between the same two devices share one connection, each
 * on its own stream, and stay independent. */
static void test_two_libraries_one_connection(void **state) {
  tc t;
  sp_mem_net_stats st;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 2, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0);
  assert_int_equal(tc_open(&t, 0, 1), 0);
  assert_int_equal(tc_open(&t, 1, 0), 0);
  assert_int_equal(tc_open(&t, 1, 1), 0);
  tc_append(&t, 0, 300, 20);
  tc_append(&t, 1, 7, 500);
  assert_true(tc_converge(&t, 0, SP_SECONDS));
  assert_true(tc_converge(&t, 1, SP_SECONDS));
  assert_int_equal(tc_applied(&t, 1, 0), 300);
  assert_int_equal(tc_applied(&t, 1, 1), 7);
  assert_true(tc_is_prefix(&t, 1, 0));
  assert_true(tc_is_prefix(&t, 1, 1));
  sp_mem_net_get_stats(t.net, &st);
  assert_int_equal(st.connections_opened, 1);
  assert_true(st.streams_opened >= 2);
  /* Closing one library leaves the other working. */
  tc_close(&t, 1, 1);
  tc_append(&t, 0, 5, 20);
  tc_append(&t, 1, 5, 20);
  assert_true(tc_converge(&t, 0, SP_SECONDS));
  assert_int_equal(tc_applied(&t, 1, 0), 305);
  assert_int_equal(tc_applied(&t, 1, 1), 7);
  tc_free(&t);
}

/* A follower asking for a library the leader does not have open. */
static void test_unknown_library(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 2, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0); /* library 1 not open there */
  assert_int_equal(tc_open(&t, 1, 1), 0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(t.dev[1].counts.last_error, SP_ERR_UNKNOWN_LIBRARY);
  assert_int_equal(tc_applied(&t, 1, 1), 0);
  /* It keeps trying, with backoff, and gets in once the library opens. */
  assert_int_equal(tc_open(&t, 0, 1), 0);
  tc_append(&t, 1, 3, 10);
  assert_true(tc_converge(&t, 1, 60 * SP_SECONDS));
  tc_free(&t);
}

/* A registered device that is not a member of the library is refused
 * and never dialed. */
static void test_non_member(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 3, 1, 1 * MS, NULL), 0);
  t.dev[2].member[0] = 0;
  assert_int_equal(tc_open(&t, 0, 0), 0);
  assert_int_equal(tc_open(&t, 1, 0), 0);
  assert_int_equal(tc_open(&t, 2, 0), 0);
  tc_append(&t, 0, 10, 10);
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, 1, 0), 10);
  assert_int_equal(tc_applied(&t, 2, 0), 0);
  assert_int_equal(t.dev[2].counts.last_error, SP_ERR_NOT_MEMBER);
  assert_int_equal(t.dev[0].counts.last_error, SP_ERR_NOT_MEMBER);
  assert_int_equal(t.dev[2].counts.ev[SP_EVENT_ENTRIES_APPLIED], 0);
  tc_free(&t);
}

/* Two devices both leading one library at the same epoch: reported on
 * both sides, nothing replicated between them. */
static void test_two_leaders(void **state) {
  tc t;
  sp_store st;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0);
  t.dev[1].cfg[0].role = SP_ROLE_LEADER;
  sp_mem_store_get_vtable(t.dev[1].store[0], &st);
  assert_int_equal(
      sp_handler_new(&t.dev[1].h[0], t.dev[1].node, &t.dev[1].cfg[0], &st,
                     t.now),
      0);
  tc_append(&t, 0, 5, 10);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_true(t.dev[0].counts.ev[SP_EVENT_ROLE_CONFLICT] +
                  t.dev[1].counts.ev[SP_EVENT_ROLE_CONFLICT] >= 1);
  assert_true(t.dev[0].counts.last_error == SP_ERR_TWO_LEADERS ||
              t.dev[1].counts.last_error == SP_ERR_TWO_LEADERS);
  assert_int_equal(tc_applied(&t, 1, 0), 0);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_STEPPED_DOWN], 0);
  tc_free(&t);
}

/* Two leaders with different epochs: the older one steps down. */
static void test_older_leader_steps_down(void **state) {
  tc t;
  sp_store st;
  sp_handler_status hs;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[0].cfg[0].epoch = 4;
  assert_int_equal(tc_open(&t, 0, 0), 0);
  t.dev[1].cfg[0].role = SP_ROLE_LEADER;
  t.dev[1].cfg[0].epoch = 2;
  sp_mem_store_get_vtable(t.dev[1].store[0], &st);
  assert_int_equal(
      sp_handler_new(&t.dev[1].h[0], t.dev[1].node, &t.dev[1].cfg[0], &st,
                     t.now),
      0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_STEPPED_DOWN], 1);
  assert_int_equal(t.dev[1].counts.last_epoch, 4);
  /* Proven by device 0's claim, in its refusal of device 1's dial. */
  assert_true(sp_uuid_equal(&t.dev[1].counts.last_leader, &t.dev[0].id));
  assert_int_equal(t.dev[0].counts.ev[SP_EVENT_STEPPED_DOWN], 0);
  assert_int_equal(sp_handler_notify_new_entries(t.dev[1].h[0], 1, 1, t.now),
                   SP_ERR_INVALID_STATE);
  /* The host makes it a follower; it then follows the leader. */
  assert_int_equal(
      sp_handler_set_role(t.dev[1].h[0], SP_ROLE_FOLLOWER, 0, t.now), 0);
  tc_append(&t, 0, 5, 10);
  assert_true(tc_converge(&t, 0, 5 * SP_SECONDS));
  assert_int_equal(sp_handler_get_status(t.dev[1].h[0], &hs), 0);
  assert_int_equal(hs.role, SP_ROLE_FOLLOWER);
  assert_int_equal(hs.epoch, 4);
  tc_free(&t);
}

/* A follower that could not reach the leader is in a long backoff; the
 * leader, once up, dials it and it adopts that stream at once. */
static void test_leader_dials_follower(void **state) {
  tc t;
  sp_tstamp t0;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[1].cfg[0].reconnect_max = 600 * SP_SECONDS;
  tc_crash(&t, 0);
  assert_int_equal(tc_open(&t, 1, 0), 0);
  tc_run_for(&t, 300 * SP_SECONDS); /* backoff now minutes long */
  assert_int_equal(tc_boot(&t, 0), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0);
  tc_append(&t, 0, 10, 10);
  t0 = t.now;
  assert_true(tc_converge(&t, 0, 60 * SP_SECONDS));
  assert_true(t.now - t0 < 100 * MS);
  assert_true(tc_is_prefix(&t, 1, 0));
  tc_free(&t);
}

/* Seven followers, some joining late. */
static void test_many_followers(void **state) {
  tc t;
  int i;

  (void)state;
  assert_int_equal(tc_init(&t, 8, 1, 2 * MS, NULL), 0);
  for (i = 0; i < 5; ++i) {
    assert_int_equal(tc_open(&t, i, 0), 0);
  }
  tc_append(&t, 0, 2000, 50);
  tc_run_for(&t, 10 * MS);
  for (i = 5; i < 8; ++i) {
    assert_int_equal(tc_open(&t, i, 0), 0);
  }
  tc_append(&t, 0, 2000, 50);
  assert_true(tc_converge(&t, 0, 30 * SP_SECONDS));
  for (i = 1; i < 8; ++i) {
    assert_true(tc_is_prefix(&t, i, 0));
  }
  tc_free(&t);
}

/* Deleting a node closes its streams cleanly: peers see them end. */
static void test_node_delete_closes(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0);
  assert_int_equal(tc_open(&t, 1, 0), 0);
  tc_run_for(&t, SP_SECONDS);
  /* Not a crash: the node says goodbye (its closes are queued on the
   * network), then leaves the network before anything is delivered. */
  sp_node_del(t.dev[1].node);
  sp_mem_net_detach(t.net, &t.dev[1].id);
  t.dev[1].node = NULL;
  t.dev[1].h[0] = NULL;
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(t.dev[0].counts.ev[SP_EVENT_PEER_LOST], 1);
  assert_int_equal(t.dev[0].counts.last_lost, 0);
  tc_free(&t);
}

/* Transport calls are checked against the stream's peer. */
static void test_transport_checks(void **state) {
  tc t;
  uint8_t junk[4] = {0, 0, 0, 1};

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  assert_int_equal(sp_node_stream_opened(t.dev[0].node, 777, &t.dev[1].id,
                                         t.now), 0);
  assert_int_equal(sp_node_stream_opened(t.dev[0].node, 777, &t.dev[1].id,
                                         t.now), SP_ERR_EXISTS);
  assert_int_equal(sp_node_stream_data(t.dev[0].node, 777, &t.dev[0].id,
                                       junk, 4, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_data(t.dev[0].node, 778, &t.dev[1].id,
                                       junk, 4, t.now), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_writable(t.dev[0].node, 778, &t.dev[1].id,
                                           t.now), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_closed(t.dev[0].node, 777, &t.dev[1].id, 0,
                                         t.now), 0);
  assert_int_equal(sp_node_stream_closed(t.dev[0].node, 777, &t.dev[1].id, 0,
                                         t.now), SP_ERR_NOT_FOUND);
  /* An opened stream that never says which library it is for is closed
   * after 30 s. */
  assert_int_equal(sp_node_stream_opened(t.dev[0].node, 779, &t.dev[1].id,
                                         t.now), 0);
  assert_true(sp_node_get_expiry(t.dev[0].node) <= t.now + 30 * SP_SECONDS);
  assert_int_equal(sp_node_handle_expiry(t.dev[0].node,
                                         t.now + 31 * SP_SECONDS), 0);
  assert_int_equal(sp_node_stream_data(t.dev[0].node, 779, &t.dev[1].id,
                                       junk, 4, t.now + 32 * SP_SECONDS),
                   SP_ERR_NOT_FOUND);
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_libraries_one_connection),
      cmocka_unit_test(test_unknown_library),
      cmocka_unit_test(test_non_member),
      cmocka_unit_test(test_two_leaders),
      cmocka_unit_test(test_older_leader_steps_down),
      cmocka_unit_test(test_leader_dials_follower),
      cmocka_unit_test(test_many_followers),
      cmocka_unit_test(test_node_delete_closes),
      cmocka_unit_test(test_transport_checks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
