/*
 * sp_leader_test.c: the leader's side over the in-memory network: push,
 * paging, gaps, acks and progress, SyncRequired, retention.
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

static void start(tc *t, int ndevs, sp_duration latency) {
  int i;

  assert_int_equal(tc_init(t, ndevs, 1, latency, NULL), 0);
  for (i = 0; i < ndevs; ++i) {
    assert_int_equal(tc_open(t, i, LIB), 0);
  }
  tc_run_for(t, SP_SECONDS);
}

/* Append -> notify -> applied, with no fetch while idle before it, and
 * nothing but heartbeats on the wire while idle.  With push_inline the
 * entries travel in one trip; without, NewEntries then a fetch. */
static void live_push(int push_inline) {
  tc t;
  long msgs0[8], msgs1[8];
  sp_tstamp t0;
  int k;

  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[LEADER].cfg[LIB].push_inline = push_inline;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  memcpy(msgs0, t.dev[LEADER].sent.msgs, sizeof(msgs0));
  memcpy(msgs1, t.dev[F1].sent.msgs, sizeof(msgs1));

  tc_run_for(&t, 10 * 60 * SP_SECONDS);
  for (k = 0; k < 8; ++k) {
    if (k != SP_MSG_HEARTBEAT) {
      assert_int_equal(t.dev[LEADER].sent.msgs[k], msgs0[k]);
      assert_int_equal(t.dev[F1].sent.msgs[k], msgs1[k]);
    }
  }
  /* 30 s heartbeats: about 20 each way in 10 minutes, never more. */
  assert_in_range(t.dev[F1].sent.msgs[SP_MSG_HEARTBEAT] -
                      msgs1[SP_MSG_HEARTBEAT], 1, 21);
  assert_in_range(t.dev[LEADER].sent.msgs[SP_MSG_HEARTBEAT] -
                      msgs0[SP_MSG_HEARTBEAT], 1, 21);

  t0 = t.now;
  tc_append(&t, LIB, 1, 100);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  if (push_inline) {
    /* One trip: the page itself. */
    assert_true(t.now - t0 <= 1 * MS);
    assert_int_equal(t.dev[LEADER].sent.msgs[SP_MSG_NEW_ENTRIES],
                     msgs0[SP_MSG_NEW_ENTRIES]);
    assert_int_equal(t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE],
                     msgs0[SP_MSG_ENTRIES_RESPONSE] + 1);
    assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_FETCH_ENTRIES],
                     msgs1[SP_MSG_FETCH_ENTRIES]);
  } else {
    /* NewEntries, FetchEntries, EntriesResponse: three one-way trips. */
    assert_true(t.now - t0 <= 3 * MS);
    assert_int_equal(t.dev[LEADER].sent.msgs[SP_MSG_NEW_ENTRIES],
                     msgs0[SP_MSG_NEW_ENTRIES] + 1);
    assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_FETCH_ENTRIES],
                     msgs1[SP_MSG_FETCH_ENTRIES] + 1);
  }
  tc_run_for(&t, 10 * MS);
  assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_ACKNOWLEDGE],
                   msgs1[SP_MSG_ACKNOWLEDGE] + 1);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static void test_live_push(void **state) {
  (void)state;
  live_push(1);
}

static void test_live_announce_then_fetch(void **state) {
  (void)state;
  live_push(0);
}

/* Notifications coalesce: many appends while one is outstanding give one
 * NewEntries, and the follower still gets everything. */
static void test_notify_coalesces(void **state) {
  tc t;
  long n0;
  int i;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 5 * MS, NULL), 0);
  t.dev[LEADER].cfg[LIB].push_inline = 0;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  n0 = t.dev[LEADER].sent.msgs[SP_MSG_NEW_ENTRIES];
  for (i = 0; i < 50; ++i) {
    tc_append(&t, LIB, 1, 10); /* no time passes between them */
  }
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(t.dev[LEADER].sent.msgs[SP_MSG_NEW_ENTRIES], n0 + 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  tc_free(&t);
}

/* Logs around the fetch limit and a small byte budget. */
static void test_paging_boundaries(void **state) {
  static const int sizes[] = {1, 9, 10, 11, 19, 20, 21, 57};
  size_t k;

  (void)state;
  for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); ++k) {
    tc t;
    assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
    t.dev[LEADER].cfg[LIB].response_max_bytes = 1000;
    t.dev[F1].cfg[LIB].fetch_limit = 10;
    t.dev[F1].cfg[LIB].fetch_window = 2;
    assert_int_equal(tc_open(&t, LEADER, LIB), 0);
    tc_append(&t, LIB, sizes[k], 300); /* about three entries a page */
    assert_int_equal(tc_open(&t, F1, LIB), 0);
    assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
    assert_true(tc_is_prefix(&t, F1, LIB));
    /* A page holds at most what fits the budget: 3 entries of ~340 B. */
    assert_true(t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE] >=
                (sizes[k] + 2) / 3);
    /* The follower stays caught up as more arrives, across a limit. */
    tc_append(&t, LIB, 10, 300);
    assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
    assert_true(tc_is_prefix(&t, F1, LIB));
    tc_free(&t);
  }
}

/* An entry larger than the budget still goes out, alone in its page. */
static void test_entry_over_budget(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[LEADER].cfg[LIB].response_max_bytes = 512;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 5, 4096);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_true(t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE] >= 5);
  tc_free(&t);
}

/* Sequences with gaps, one wider than a fetch. */
static void test_gaps(void **state) {
  static const sp_seq seqs[] = {1, 2, 3, 7, 8, 2000, 2001, 5000, 5003};
  tc t;
  size_t k;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[F1].cfg[LIB].fetch_limit = 100;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  for (k = 0; k < sizeof(seqs) / sizeof(seqs[0]); ++k) {
    tc_append_at(&t, LIB, seqs[k], 50);
  }
  tc_notify(&t, LIB);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, F1, LIB), 5003);
  assert_true(tc_is_prefix(&t, F1, LIB));
  /* Live entries after the gaps follow as usual. */
  tc_append(&t, LIB, 3, 50);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(tc_applied(&t, F1, LIB), 5006);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ERROR], 0);
  tc_free(&t);
}

/* Acks become progress; waits fire on acks or at their deadline. */
typedef struct wait_result {
  int calls;
  int status;
  size_t acked;
} wait_result;

static int on_wait(sp_handler *h, sp_seq seq, int status, size_t acked,
                   void *ud) {
  wait_result *w = ud;

  (void)h;
  (void)seq;
  w->calls++;
  w->status = status;
  w->acked = acked;
  return 0;
}

static void test_acks_progress_waits(void **state) {
  tc t;
  sp_follower_progress p[4];
  wait_result all = {0}, one = {0}, late = {0};
  sp_handler *lh;
  sp_seq latest, floor;
  sp_ssize n;

  (void)state;
  start(&t, 3, 2 * MS);
  lh = t.dev[LEADER].h[LIB];
  latest = tc_append(&t, LIB, 100, 20);
  assert_int_equal(sp_handler_wait_acks(lh, latest, 0, t.now + SP_SECONDS,
                                        on_wait, &all, t.now), 0);
  assert_int_equal(sp_handler_wait_acks(lh, latest, 1, t.now + SP_SECONDS,
                                        on_wait, &one, t.now), 0);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_run_for(&t, 20 * MS);
  assert_int_equal(all.calls, 1);
  assert_int_equal(all.status, 0);
  assert_int_equal(all.acked, 2);
  assert_int_equal(one.calls, 1);
  assert_int_equal(one.status, 0);
  /* Already satisfied: answered at once, no callback. */
  assert_int_equal(sp_handler_wait_acks(lh, latest, 0, t.now + SP_SECONDS,
                                        on_wait, &all, t.now), 1);
  assert_int_equal(all.calls, 1);

  n = sp_handler_list_followers(lh, p, 4, t.now);
  assert_int_equal(n, 2);
  assert_int_equal(p[0].acked_sequence, latest);
  assert_int_equal(p[0].lag, 0);
  assert_true(p[0].connected);
  assert_true(p[0].since_last_ack < 100 * MS);
  assert_int_equal(sp_handler_follower_progress(lh, &t.dev[2].id, t.now, p),
                   0);
  assert_int_equal(p[0].acked_sequence, latest);
  assert_int_equal(sp_handler_retention_floor(lh, &floor), 0);
  assert_int_equal(floor, latest);
  assert_true(t.dev[LEADER].counts.ev[SP_EVENT_ACK_RECEIVED] >= 2);

  /* A follower down: a wait for all of them times out. */
  tc_crash(&t, 2);
  latest = tc_append(&t, LIB, 5, 20);
  assert_int_equal(sp_handler_wait_acks(lh, latest, 0, t.now + 500 * MS,
                                        on_wait, &late, t.now), 0);
  tc_run_for(&t, 400 * MS);
  assert_int_equal(late.calls, 0);
  tc_run_for(&t, 200 * MS);
  assert_int_equal(late.calls, 1);
  assert_int_equal(late.status, SP_ERR_DEADLINE);
  assert_int_equal(late.acked, 1);
  /* The crashed follower holds retention back. */
  assert_int_equal(sp_handler_retention_floor(lh, &floor), 0);
  assert_int_equal(floor, latest - 5);
  assert_int_equal(sp_handler_follower_progress(lh, &t.dev[2].id, t.now, p),
                   0);
  assert_int_equal(p[0].lag, 5);
  assert_false(p[0].connected);
  tc_free(&t);
}

/* A registered follower that never acknowledged holds retention at 0,
 * until the cap lets it go. */
static void test_retention_cap(void **state) {
  tc t;
  sp_seq floor;

  (void)state;
  assert_int_equal(tc_init(&t, 3, 1, 1 * MS, NULL), 0);
  t.dev[LEADER].cfg[LIB].retention_cap = 1000;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0); /* device 2 never opens */
  tc_append(&t, LIB, 500, 10);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_run_for(&t, 10 * MS);
  assert_int_equal(
      sp_handler_retention_floor(t.dev[LEADER].h[LIB], &floor), 0);
  assert_int_equal(floor, 0);
  tc_append(&t, LIB, 600, 10);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_run_for(&t, 10 * MS);
  assert_int_equal(
      sp_handler_retention_floor(t.dev[LEADER].h[LIB], &floor), 0);
  assert_int_equal(floor, 1100);
  /* The capped follower gets SyncRequired when it shows up. */
  assert_int_equal(tc_open(&t, 2, LIB), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(t.dev[2].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(t.dev[2].counts.last_sync_reason, SP_SYNC_RETENTION_CAP);
  assert_int_equal(tc_applied(&t, 2, LIB), 0);
  tc_free(&t);
}

/* Pruned past a follower: SyncRequired(behind); after the host's full
 * sync the follower resumes. */
static void test_sync_required_behind(void **state) {
  tc t;
  sp_handler_status st;

  (void)state;
  start(&t, 2, 1 * MS);
  tc_append(&t, LIB, 10, 10);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_crash(&t, F1);
  tc_append(&t, LIB, 90, 10);
  assert_int_equal(sp_mem_store_prune(t.dev[LEADER].store[LIB], 50), 0);
  assert_int_equal(tc_boot(&t, F1), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(t.dev[F1].counts.last_sync_reason,
                   SP_SYNC_BEHIND_RETENTION);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_SYNC_REQUIRED_SENT], 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 10);
  assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &st), 0);
  assert_true(st.sync_required);
  /* Nothing is fetched while stopped, even when entries arrive. */
  tc_append(&t, LIB, 5, 10);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 10);

  /* The host's full sync: copy the leader's log, then resume. */
  assert_int_equal(sp_mem_store_copy_from(t.dev[F1].store[LIB],
                                          t.dev[LEADER].store[LIB]), 0);
  assert_int_equal(sp_handler_resync_done(t.dev[F1].h[LIB], t.now), 0);
  tc_append(&t, LIB, 5, 10);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(sp_handler_resync_done(t.dev[F1].h[LIB], t.now),
                   SP_ERR_INVALID_STATE);
  tc_free(&t);
}

/* A follower holding more than the leader: SyncRequired(ahead). */
static void test_sync_required_ahead(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  /* The follower's store is a copy of a longer log. */
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 30, 10);
  assert_int_equal(sp_mem_store_copy_from(t.dev[F1].store[LIB],
                                          t.dev[LEADER].store[LIB]), 0);
  tc_close(&t, LEADER, LIB);
  sp_mem_store_del(t.dev[LEADER].store[LIB]);
  assert_int_equal(sp_mem_store_new(&t.dev[LEADER].store[LIB], NULL), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 20, 10);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(t.dev[F1].counts.last_sync_reason,
                   SP_SYNC_AHEAD_OF_LEADER);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_SYNC_REQUIRED_SENT], 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 30);
  tc_free(&t);
}

/* Diverged logs are caught by the resume check, never applied. */
static void test_divergence_on_resume(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 10, 10);
  /* The follower holds 10 entries of another history. */
  {
    sp_mem_store *other;
    uint8_t b[10] = {0};
    sp_entry e;
    int i;
    assert_int_equal(sp_mem_store_new(&other, NULL), 0);
    for (i = 0; i < 10; ++i) {
      memset(&e, 0, sizeof(e));
      e.data = b;
      e.data_len = sizeof(b);
      assert_int_equal(sp_mem_store_append(other, &e, NULL), 0);
    }
    assert_int_equal(sp_mem_store_copy_from(t.dev[F1].store[LIB], other), 0);
    sp_mem_store_del(other);
  }
  tc_append(&t, LIB, 10, 10);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(t.dev[F1].counts.last_sync_reason, SP_SYNC_DIVERGENCE);
  assert_int_equal(tc_applied(&t, F1, LIB), 10);
  assert_false(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* Streams the leader opened, counted per follower: the leader speaks
 * first on a stream it dials (a follower's hello opens the others). */
typedef struct dials {
  uint64_t seen[8192];
  size_t nseen;
  long by_leader[TC_MAX_DEVS];
} dials;

static int count_dials(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  dials *c = t->fault_ud;
  size_t i;
  int k;

  (void)v;
  for (i = 0; i < c->nseen; ++i) {
    if (c->seen[i] == d->stream_id) {
      return 0;
    }
  }
  assert_true(c->nseen < sizeof(c->seen) / sizeof(c->seen[0]));
  c->seen[c->nseen++] = d->stream_id;
  if (!sp_uuid_equal(&d->from, &t->dev[LEADER].id)) {
    return 0;
  }
  for (k = 0; k < t->ndevs; ++k) {
    if (sp_uuid_equal(&d->to, &t->dev[k].id)) {
      c->by_leader[k]++;
    }
  }
  return 0;
}

/* A follower whose store keeps failing: the resume fetch succeeds every
 * time and the page fails every time.  Only acknowledged progress resets
 * the leader's dial backoff, so its dials to that follower thin out
 * (doubling from reconnect_min to reconnect_max) instead of coming every
 * reconnect_min forever; once the store works again it catches up. */
static void test_dial_backoff_without_progress(void **state) {
  static dials c;
  tc t;

  (void)state;
  memset(&c, 0, sizeof(c));
  start(&t, 2, 1 * MS);
  t.fault = count_dials;
  t.fault_ud = &c;
  tc_append(&t, LIB, 10, 10);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 1000000);
  tc_append(&t, LIB, 10, 10);
  tc_run_for(&t, 60 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 10);
  print_message("leader dials to the failing follower in 60 s: %ld\n",
                c.by_leader[F1]);
  /* 100 ms doubling to 30 s, drawn in [b/2, b]: about ten dials in a
   * minute. */
  assert_in_range(c.by_leader[F1], 1, 16);
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 0);
  assert_true(tc_converge(&t, LIB, 45 * SP_SECONDS));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static sp_ssize listed(tc *t, int dev) {
  sp_follower_progress p[TC_MAX_DEVS];
  sp_ssize n = sp_handler_list_followers(t->dev[LEADER].h[LIB], p,
                                         TC_MAX_DEVS, t->now);
  sp_ssize i;

  assert_true(n >= 0 && n <= TC_MAX_DEVS);
  for (i = 0; i < n; ++i) {
    if (sp_uuid_equal(&p[i].device_id, &t->dev[dev].id)) {
      return 1;
    }
  }
  return 0;
}

/* Three devices, device 2 not (yet) a member of LIB; every dial counted
 * in `c`. */
static void init_counting(tc *t, dials *c) {
  memset(c, 0, sizeof(*c));
  assert_int_equal(tc_init(t, 3, 1, 1 * MS, NULL), 0);
  t->fault = count_dials;
  t->fault_ud = c;
  t->dev[2].member[LIB] = 0;
}

/* The registry changes while the leader runs and nobody tells it: its
 * scheduled re-read dials a device added later and drops one removed
 * (its stream closed, never dialled again, no longer listed). */
static void test_registry_refreshed_on_schedule(void **state) {
  static dials c;
  tc t;
  sp_seq latest;
  int k;

  (void)state;
  init_counting(&t, &c);
  /* Device 2 hardly ever dials on its own: only the leader brings it in. */
  t.dev[2].cfg[LIB].reconnect_min = 600 * SP_SECONDS;
  t.dev[2].cfg[LIB].reconnect_max = 600 * SP_SECONDS;
  for (k = 0; k < 3; ++k) {
    assert_int_equal(tc_open(&t, k, LIB), 0);
  }
  latest = tc_append(&t, LIB, 10, 10);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), latest);
  assert_int_equal(tc_applied(&t, 2, LIB), 0);
  assert_false(listed(&t, 2));

  t.dev[2].member[LIB] = 1;
  tc_run_for(&t, 70 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, 2, LIB), latest);
  assert_true(listed(&t, 2));
  assert_true(c.by_leader[2] >= 1);

  t.dev[F1].member[LIB] = 0;
  tc_run_for(&t, 70 * SP_SECONDS);
  assert_false(listed(&t, F1));
  c.by_leader[F1] = 0;
  latest = tc_append(&t, LIB, 10, 10);
  tc_run_for(&t, 70 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, 2, LIB), latest);
  assert_int_equal(tc_applied(&t, F1, LIB), latest - 10);
  assert_int_equal(c.by_leader[F1], 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The host says the registry changed: the leader acts at once.  A device
 * removed loses its stream (refused: not a member), is not dialled, not
 * listed and no longer counts; put back, it is dialled and catches up. */
static void test_registry_changed_call(void **state) {
  static dials c;
  wait_result w = {0};
  tc t;
  sp_handler *lh;
  sp_follower_progress p;
  sp_seq latest;
  int k;

  (void)state;
  init_counting(&t, &c);
  /* Neither follower comes back on its own within the test. */
  for (k = 1; k < 3; ++k) {
    t.dev[k].cfg[LIB].reconnect_min = 600 * SP_SECONDS;
    t.dev[k].cfg[LIB].reconnect_max = 600 * SP_SECONDS;
  }
  t.dev[LEADER].cfg[LIB].registry_refresh_interval = 0; /* no schedule */
  for (k = 0; k < 3; ++k) {
    assert_int_equal(tc_open(&t, k, LIB), 0);
  }
  lh = t.dev[LEADER].h[LIB];
  latest = tc_append(&t, LIB, 10, 10);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), latest);
  assert_int_equal(tc_applied(&t, 2, LIB), 0);

  /* Added: dialled at once. */
  t.dev[2].member[LIB] = 1;
  assert_int_equal(sp_handler_registry_changed(lh, t.now), 0);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_true(listed(&t, 2));

  /* Removed: refused now, and nothing more reaches it. */
  t.dev[F1].member[LIB] = 0;
  c.by_leader[F1] = 0;
  assert_int_equal(sp_handler_registry_changed(lh, t.now), 0);
  tc_run_for(&t, 10 * MS);
  assert_int_equal(t.dev[F1].counts.last_error, SP_ERR_NOT_MEMBER);
  assert_false(listed(&t, F1));
  assert_int_equal(sp_handler_follower_progress(lh, &t.dev[F1].id, t.now, &p),
                   SP_ERR_NOT_FOUND);
  latest = tc_append(&t, LIB, 10, 10);
  tc_run_for(&t, 10 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, 2, LIB), latest);
  assert_int_equal(tc_applied(&t, F1, LIB), latest - 10);
  assert_int_equal(c.by_leader[F1], 0);
  /* Every follower now means device 2 alone. */
  assert_int_equal(sp_handler_wait_acks(lh, latest, 0, t.now + SP_SECONDS,
                                        on_wait, &w, t.now), 1);
  assert_int_equal(w.calls, 0);

  /* Back: dialled and caught up; its old figures were forgotten. */
  t.dev[F1].member[LIB] = 1;
  assert_int_equal(sp_handler_registry_changed(lh, t.now), 0);
  assert_int_equal(sp_handler_follower_progress(lh, &t.dev[F1].id, t.now, &p),
                   0);
  assert_false(p.has_acked);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(c.by_leader[F1], 1);
  assert_true(tc_is_prefix(&t, F1, LIB));

  /* A follower has nothing to do; NULL is refused. */
  assert_int_equal(sp_handler_registry_changed(t.dev[F1].h[LIB], t.now), 0);
  assert_int_equal(sp_handler_registry_changed(NULL, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_live_push),
      cmocka_unit_test(test_live_announce_then_fetch),
      cmocka_unit_test(test_notify_coalesces),
      cmocka_unit_test(test_paging_boundaries),
      cmocka_unit_test(test_entry_over_budget),
      cmocka_unit_test(test_gaps),
      cmocka_unit_test(test_acks_progress_waits),
      cmocka_unit_test(test_retention_cap),
      cmocka_unit_test(test_sync_required_behind),
      cmocka_unit_test(test_sync_required_ahead),
      cmocka_unit_test(test_divergence_on_resume),
      cmocka_unit_test(test_dial_backoff_without_progress),
      cmocka_unit_test(test_registry_refreshed_on_schedule),
      cmocka_unit_test(test_registry_changed_call),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
