/*
 * sp_fetch_window_test.c: the follower's fetch window and the leader's
 * fetch queue agree on what is outstanding, so a follower that stays
 * within its window is never refused (SP_ERR_TOO_MANY_REQUESTS), across
 * pushed pages, page boundaries, partitions and reconnects.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"
#include "sp_core.h"

#define MS SP_MILLISECONDS
#define LIB 0
#define LEADER 0
#define F1 1

/* Refusals of the follower's stream, as the leader reported them. */
typedef struct refusals {
  long too_many;
  long other;
} refusals;

static refusals g_ref;
/* The leader's queue limit: the default, or tighter to show it is the
 * window that bounds the queue. */
static uint32_t g_max_queued = 8;
/* The follower's window and request size. */
static uint32_t g_window = 4, g_limit = 10;

static void count_refusals(tc *t, int dev, const sp_event *ev) {
  (void)t;
  if (dev != LEADER || ev->type != SP_EVENT_ERROR) {
    return;
  }
  if (ev->error_code == SP_ERR_TOO_MANY_REQUESTS) {
    g_ref.too_many++;
  } else {
    g_ref.other++;
  }
}

static long g_max_queued_seen;

/* The leader's requests queued for the follower (its own push or resend
 * at the head is none of them) never exceed the follower's window. */
static void check_queues(tc *t) {
  const sp_session *s;
  uint32_t window = t->dev[F1].cfg[LIB].fetch_window;

  for (s = t->dev[LEADER].h[LIB]->sessions; s; s = s->hnext) {
    long queued;
    if (s->dead || !s->u.l.queue) {
      continue;
    }
    queued = (long)s->u.l.qlen - (s->u.l.head_own ? 1 : 0);
    if (queued > g_max_queued_seen) {
      g_max_queued_seen = queued;
    }
    assert_true(queued <= (long)window);
  }
}

static int g_drop_leader_sends; /* lose the leader's next sends */

/* Checked on every delivery too: the queues change within a run. */
static int check_on_delivery(tc *t, const sp_mem_delivery *d,
                             sp_mem_verdict *v) {
  if (t->dev[LEADER].h[LIB]) {
    check_queues(t);
  }
  if (g_drop_leader_sends > 0 && sp_uuid_equal(&d->from, &t->dev[LEADER].id)) {
    g_drop_leader_sends--;
    v->action = SP_MEM_DROP;
  }
  return 0;
}

/* tc_converge, checking the queues every millisecond. */
static int converge_checked(tc *t, sp_duration max) {
  sp_tstamp until = t->now + max;

  while (t->now < until) {
    tc_run_for(t, MS);
    check_queues(t);
    if (tc_applied(t, F1, LIB) == tc_latest(t, LIB)) {
      return 1;
    }
  }
  return 0;
}

static void run_checked(tc *t, sp_duration d) {
  sp_tstamp until = t->now + d;

  while (t->now < until) {
    tc_run_for(t, MS);
    check_queues(t);
  }
}

/* Small pages and small requests, so that pages and requests end at
 * different sequences: about three entries a page, ten a request. */
static void start(tc *t, sp_duration latency) {
  int k;

  memset(&g_ref, 0, sizeof(g_ref));
  g_max_queued_seen = 0;
  assert_int_equal(tc_init(t, 2, 1, latency, NULL), 0);
  t->on_event = count_refusals;
  t->fault = check_on_delivery;
  t->dev[LEADER].cfg[LIB].response_max_bytes = 1000;
  t->dev[LEADER].cfg[LIB].max_queued_fetches = g_max_queued;
  t->dev[F1].cfg[LIB].fetch_limit = g_limit;
  t->dev[F1].cfg[LIB].fetch_window = g_window;
  /* Heartbeats carry the leader's latest across a partition (which must
   * not time the stream out). */
  for (k = 0; k < 2; ++k) {
    t->dev[k].cfg[LIB].heartbeat_interval = 2 * SP_SECONDS;
    t->dev[k].cfg[LIB].heartbeat_timeout_factor = 30;
  }
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  assert_int_equal(tc_open(t, F1, LIB), 0);
  tc_append(t, LIB, 5, 300);
  assert_true(tc_converge(t, LIB, SP_SECONDS));
}

static void finish(tc *t) {
  const sp_session *f;

  if (g_ref.too_many || g_ref.other) {
    print_message("the leader refused the follower: too many requests %ld, "
                  "otherwise %ld (window %u)\n",
                  g_ref.too_many, g_ref.other,
                  t->dev[F1].cfg[LIB].fetch_window);
  }
  /* Nothing in flight: the follower counts no request out either (one
   * it counted but the leader had ended would stall it). */
  tc_run_for(t, 100 * MS);
  f = t->dev[F1].h[LIB]->leader;
  assert_non_null(f);
  assert_int_equal(f->u.f.rlen, 0);
  assert_true(tc_is_prefix(t, F1, LIB));
  assert_int_equal(tc_applied(t, F1, LIB), tc_latest(t, LIB));
  assert_int_equal(g_ref.too_many, 0);
  assert_int_equal(g_ref.other, 0);
  assert_int_equal(t->fatal, 0);
  tc_free(t);
}

/* A caught-up follower and a burst far larger than one page: the leader
 * pushes it page by page while the follower, having learned the new
 * latest from the first page, fetches the rest.  Pushed pages must not
 * free window slots on one side only. */
static void test_burst_after_caught_up(void **state) {
  tc t;

  (void)state;
  start(&t, 5 * MS);
  /* Past the network's 256 KiB stream window: pushing takes longer than
   * a trip, so the follower's requests reach the leader meanwhile. */
  tc_append(&t, LIB, 3000, 300);
  assert_true(converge_checked(&t, 20 * SP_SECONDS));
  print_message("most requests queued on the leader: %ld (window %u)\n",
                g_max_queued_seen, g_window);
  finish(&t);
  /* The default limit (32) is no different: the window (4) bounds it. */
  g_max_queued = 32;
  start(&t, 5 * MS);
  tc_append(&t, LIB, 3000, 300);
  assert_true(converge_checked(&t, 20 * SP_SECONDS));
  g_max_queued = 8;
  finish(&t);
}

/* The same with latencies from zero to a long trip, windows from 1 to
 * 6 and requests from 1 entry to more than a page: pushes, pages and
 * requests cross in every order. */
static void test_bursts_any_latency(void **state) {
  static const uint32_t limits[] = {1, 4, 10, 1024};
  sp_duration lat;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(limits) / sizeof(limits[0]); ++i) {
    for (g_window = 1; g_window <= 6; ++g_window) {
      for (lat = 0; lat <= 40 * MS; lat += 8 * MS) {
        tc t;
        int k;
        g_limit = limits[i];
        start(&t, lat);
        for (k = 0; k < 6; ++k) {
          tc_append(&t, LIB, 1 + 37 * k, 300);
          run_checked(&t, lat + (sp_duration)k * MS);
        }
        assert_true(converge_checked(&t, 30 * SP_SECONDS));
        finish(&t);
      }
    }
  }
  g_window = 4;
  g_limit = 10;
}

/* A 25 s partition while the leader keeps appending, more than the
 * network holds: the first batches go out as pushed pages and wait, the
 * rest waits in the leader's log; on the heal the pushed pages arrive at
 * once, and the follower's requests meet the rest of the push. */
static void test_partition_while_appending(void **state) {
  tc t;
  int k;

  (void)state;
  start(&t, 5 * MS);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1), 0);
  for (k = 0; k < 25; ++k) {
    tc_append(&t, LIB, 100 + k % 4, 300);
    run_checked(&t, SP_SECONDS);
  }
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0), 0);
  assert_true(converge_checked(&t, 20 * SP_SECONDS));
  finish(&t);
}

/* The follower's heartbeat or a NewEntries names a latest past a pushed
 * page: requests sent on that news cross the page, whose
 * has_more = false ends them on the follower's side. */
static void test_requests_cross_pushed_pages(void **state) {
  tc t;
  int k;

  (void)state;
  start(&t, 20 * MS);
  for (k = 0; k < 40; ++k) {
    tc_append(&t, LIB, 1 + k % 7, 300);
    run_checked(&t, (sp_duration)(k % 5) * 3 * MS);
  }
  assert_true(converge_checked(&t, 30 * SP_SECONDS));
  finish(&t);
}

/* The connection is cut in the middle of a catch-up, twice: requests of
 * the old stream die with it, the new stream starts from nothing. */
static void test_reconnect_mid_burst(void **state) {
  tc t;
  int k;

  (void)state;
  start(&t, 5 * MS);
  for (k = 0; k < 2; ++k) {
    tc_append(&t, LIB, 3000, 300);
    run_checked(&t, 6 * MS + (sp_duration)k * 3 * MS);
    assert_true(tc_applied(&t, F1, LIB) < tc_latest(&t, LIB));
    assert_int_equal(sp_mem_net_cut(t.net, &t.dev[LEADER].id, &t.dev[F1].id),
                     0);
    tc_append(&t, LIB, 50, 300);
    run_checked(&t, 300 * MS); /* the follower's backoff: 100 ms at most */
  }
  assert_true(converge_checked(&t, 30 * SP_SECONDS));
  finish(&t);
}

/* Beyond a reliable stream: a pushed page is lost.  The follower learns
 * of the entries from a heartbeat and asks from where it stands, below
 * the page the leader believes it sent; the leader answers from there
 * (the request takes no slot), and nothing waits for a stall timeout. */
static void test_lost_page_answered(void **state) {
  tc t;
  long lost;

  (void)state;
  start(&t, 5 * MS);
  lost = t.dev[F1].counts.ev[SP_EVENT_PEER_LOST];
  g_drop_leader_sends = 1;
  tc_append(&t, LIB, 1, 300); /* one page, nothing after it */
  run_checked(&t, 100 * MS);
  assert_int_equal(g_drop_leader_sends, 0);
  assert_true(tc_applied(&t, F1, LIB) < tc_latest(&t, LIB));
  /* The next heartbeat (2 s) brings the news. */
  assert_true(converge_checked(&t, 3 * SP_SECONDS));
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_PEER_LOST], lost);
  finish(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_burst_after_caught_up),
      cmocka_unit_test(test_bursts_any_latency),
      cmocka_unit_test(test_partition_while_appending),
      cmocka_unit_test(test_requests_cross_pushed_pages),
      cmocka_unit_test(test_reconnect_mid_burst),
      cmocka_unit_test(test_lost_page_answered),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
