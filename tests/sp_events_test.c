/*
 * sp_events_test.c: the follower's progress events mean what events.h
 * says, over the in-memory network: ENTRIES_APPLIED ranges are half-open
 * (from, to] and tile the log, CAUGHT_UP comes each time the follower
 * reaches the leader's latest (pushed pages and NewEntries alike), at 0
 * only when the leader's log is empty, and never for nothing.
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
#define MAX_REC 4096

/* The follower's ENTRIES_APPLIED and CAUGHT_UP, in order. */
typedef struct rec {
  sp_event_type type;
  sp_seq from, to;
  sp_seq store_applied; /* the store's applied sequence at the event */
} rec;

static rec g_rec[MAX_REC];
static size_t g_n;

static void record(tc *t, int dev, const sp_event *ev) {
  if (dev != F1 || (ev->type != SP_EVENT_ENTRIES_APPLIED &&
                    ev->type != SP_EVENT_CAUGHT_UP)) {
    return;
  }
  assert_true(g_n < MAX_REC);
  g_rec[g_n].type = ev->type;
  g_rec[g_n].from = ev->from_sequence;
  g_rec[g_n].to = ev->to_sequence;
  g_rec[g_n].store_applied = tc_applied(t, F1, LIB);
  g_n++;
}

static size_t count(sp_event_type type, size_t from_index) {
  size_t i, n = 0;

  for (i = from_index; i < g_n; ++i) {
    n += g_rec[i].type == type;
  }
  return n;
}

static const rec *last(sp_event_type type) {
  size_t i = g_n;

  while (i-- > 0) {
    if (g_rec[i].type == type) {
      return &g_rec[i];
    }
  }
  return NULL;
}

/* Every ENTRIES_APPLIED range starts where the previous one ended (the
 * store's position before it: `start` for the first), ends where the
 * store stands, and is not empty; returns where the last one ended. */
static sp_seq check_tiling(size_t from_index, sp_seq start) {
  sp_seq at = start;
  size_t i;

  for (i = from_index; i < g_n; ++i) {
    if (g_rec[i].type != SP_EVENT_ENTRIES_APPLIED) {
      continue;
    }
    assert_int_equal(g_rec[i].from, at);
    assert_true(g_rec[i].to > g_rec[i].from);
    assert_int_equal(g_rec[i].to, g_rec[i].store_applied);
    at = g_rec[i].to;
  }
  return at;
}

static void start(tc *t, int push_inline) {
  g_n = 0;
  assert_int_equal(tc_init(t, 2, 1, 1 * MS, NULL), 0);
  t->on_event = record;
  t->dev[LEADER].cfg[LIB].push_inline = push_inline;
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
}

/* A fresh follower catching up over many pages: the ranges tile (0, N]
 * and their widths add up to N; one CAUGHT_UP, at N, after the last
 * page, none before (not "caught up to 0"). */
static void test_catch_up_ranges_and_one_caught_up(void **state) {
  tc t;
  const rec *c;

  (void)state;
  start(&t, 1);
  tc_append(&t, LIB, 3000, 16);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  tc_run_for(&t, SP_SECONDS);
  assert_true(count(SP_EVENT_ENTRIES_APPLIED, 0) >= 3); /* fetch_limit 1024 */
  assert_int_equal(check_tiling(0, 0), 3000);
  assert_int_equal(t.dev[F1].counts.applied_entries, 3000);
  assert_int_equal(count(SP_EVENT_CAUGHT_UP, 0), 1);
  c = last(SP_EVENT_CAUGHT_UP);
  assert_int_equal(c->to, 3000);
  assert_ptr_equal(c, &g_rec[g_n - 1]); /* after every apply */
  tc_free(&t);
}

/* The case of the report: the leader's log empty at connect (CAUGHT_UP
 * at 0 is then the truth), then entries pushed inline: each push that
 * brings the follower back to the leader's latest is a CAUGHT_UP at it,
 * and an idle stream (Heartbeats only) adds none. */
static void caught_up_after_appends(int push_inline) {
  tc t;
  size_t mark;
  int round;
  sp_seq latest = 0;

  start(&t, push_inline);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(count(SP_EVENT_CAUGHT_UP, 0), 1);
  assert_int_equal(last(SP_EVENT_CAUGHT_UP)->to, 0);
  assert_int_equal(count(SP_EVENT_ENTRIES_APPLIED, 0), 0);
  for (round = 1; round <= 3; ++round) {
    mark = g_n;
    latest = tc_append(&t, LIB, round * 2, 16);
    assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
    tc_run_for(&t, 100 * MS);
    assert_int_equal(check_tiling(mark, latest - (sp_seq)(round * 2)),
                     latest);
    assert_int_equal(count(SP_EVENT_CAUGHT_UP, mark), 1);
    assert_int_equal(last(SP_EVENT_CAUGHT_UP)->to, latest);
    assert_ptr_equal(last(SP_EVENT_CAUGHT_UP), &g_rec[g_n - 1]);
  }
  assert_int_equal(latest, 12);
  assert_int_equal(t.dev[F1].counts.applied_entries, 12);
  /* Idle: Heartbeats both ways for minutes, nothing to report. */
  mark = g_n;
  tc_run_for(&t, 200 * SP_SECONDS);
  assert_true(t.dev[LEADER].sent.msgs[SP_MSG_HEARTBEAT] > 0);
  assert_int_equal(g_n, mark);
  tc_free(&t);
}

static void test_caught_up_after_pushes(void **state) {
  (void)state;
  caught_up_after_appends(1);
}

static void test_caught_up_after_new_entries(void **state) {
  (void)state;
  caught_up_after_appends(0);
}

/* A gap in the leader's log lies inside a range: the ranges still tile
 * up to the leader's latest, and (from, to] counts sequences. */
static void test_ranges_across_a_gap(void **state) {
  tc t;

  (void)state;
  start(&t, 1);
  tc_append(&t, LIB, 5, 16);
  tc_append_at(&t, LIB, 9, 16);
  tc_notify(&t, LIB);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 9);
  assert_int_equal(check_tiling(0, 0), 9);
  assert_int_equal(last(SP_EVENT_CAUGHT_UP)->to, 9);
  assert_int_equal(count(SP_EVENT_CAUGHT_UP, 0), 1);
  /* Pushed after the gap: (9, 11]. */
  tc_append(&t, LIB, 2, 16);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(last(SP_EVENT_ENTRIES_APPLIED)->from, 9);
  assert_int_equal(last(SP_EVENT_ENTRIES_APPLIED)->to, 11);
  assert_int_equal(count(SP_EVENT_CAUGHT_UP, 0), 2);
  tc_free(&t);
}

/* A follower that restarts resumes at its durable position: its first
 * range starts there, not at 0 or at its first new entry; its new stream
 * reports CAUGHT_UP once it holds the leader's latest again. */
static void test_ranges_after_restart(void **state) {
  tc t;
  size_t mark;

  (void)state;
  start(&t, 1);
  tc_append(&t, LIB, 40, 16);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  tc_crash(&t, F1);
  tc_append(&t, LIB, 25, 16);
  mark = g_n;
  assert_int_equal(tc_boot(&t, F1), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(check_tiling(mark, 40), 65);
  assert_int_equal(count(SP_EVENT_CAUGHT_UP, mark), 1);
  assert_int_equal(last(SP_EVENT_CAUGHT_UP)->to, 65);
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_catch_up_ranges_and_one_caught_up),
      cmocka_unit_test(test_caught_up_after_pushes),
      cmocka_unit_test(test_caught_up_after_new_entries),
      cmocka_unit_test(test_ranges_across_a_gap),
      cmocka_unit_test(test_ranges_after_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
