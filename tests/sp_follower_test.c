/*
 * sp_follower_test.c: the follower's side over the in-memory network:
 * pipelined catch-up, duplicates, torn and cut streams, heartbeat timeout
 * and reconnect, store failures, explicit requests, epochs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define MS SP_MILLISECONDS
#define LIB 0
#define LEADER 0
#define F1 1

static void open_all(tc *t) {
  int i;

  for (i = 0; i < t->ndevs; ++i) {
    assert_int_equal(tc_open(t, i, LIB), 0);
  }
  tc_run_for(t, SP_SECONDS);
}

static void start(tc *t, int ndevs, sp_duration latency) {
  assert_int_equal(tc_init(t, ndevs, 1, latency, NULL), 0);
  open_all(t);
}

/* Like start, with the follower's fetch limit set first. */
static void start_limit(tc *t, uint32_t fetch_limit) {
  assert_int_equal(tc_init(t, 2, 1, 1 * MS, NULL), 0);
  t->dev[F1].cfg[LIB].fetch_limit = fetch_limit;
  open_all(t);
}

/* 100,000 entries behind: caught up in far fewer round trips than pages. */
static void test_catchup_pipelined(void **state) {
  const sp_duration latency = 5 * MS;
  tc t;
  sp_tstamp t0;
  long pages, round_trips;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, latency, NULL), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 100000, 64);
  t0 = t.now;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 600 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, F1, LIB), 100000);
  assert_true(tc_is_prefix(&t, F1, LIB));
  pages = t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE];
  round_trips = (long)((t.now - t0) / (2 * latency));
  print_message("catch-up of 100000 entries: %ld pages, %ld round trips\n",
                pages, round_trips);
  /* One round trip per page would take `pages` round trips. */
  assert_true(pages >= 50);
  assert_true(round_trips * 3 < pages);
  assert_int_equal(t.dev[F1].counts.applied_entries, 100000);
  tc_free(&t);
}

/* Every third frame from the leader arrives twice. */
static int dup_every_third(tc *t, const sp_mem_delivery *d,
                           sp_mem_verdict *v) {
  static long n;

  if (sp_uuid_equal(&d->from, &t->dev[LEADER].id) && ++n % 3 == 0) {
    v->action = SP_MEM_DUPLICATE;
  }
  return 0;
}

static void test_duplicates_skipped(void **state) {
  tc t;

  (void)state;
  start_limit(&t, 50);
  t.fault = dup_every_third;
  tc_append(&t, LIB, 1000, 32);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  tc_append(&t, LIB, 1000, 32);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  /* Applied exactly once each, and the store never refused a batch. */
  assert_int_equal(t.dev[F1].counts.applied_entries, 2000);
  assert_int_not_equal(t.dev[F1].counts.last_error, SP_ERR_STORE);
  tc_free(&t);
}

/* Bytes lost inside a stream: the stream is refused or stalls, the
 * follower reconnects from its durable state, nothing wrong is applied. */
static int drop_some(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  static long n;

  if (sp_uuid_equal(&d->from, &t->dev[LEADER].id) && t->now < 20 * SP_SECONDS &&
      ++n % 7 == 0) {
    v->action = SP_MEM_DROP;
  }
  return 0;
}

static void test_torn_stream_recovers(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[F1].cfg[LIB].fetch_limit = 20;
  t.dev[LEADER].cfg[LIB].response_max_bytes = 2000; /* many frames */
  open_all(&t);
  t.fault = drop_some;
  tc_append(&t, LIB, 3000, 40);
  assert_true(tc_converge(&t, LIB, 600 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.applied_entries, 3000);
  assert_true(t.dev[F1].counts.ev[SP_EVENT_PEER_LOST] >= 1);
  tc_free(&t);
}

/* The connection cut in the middle of a frame. */
static int cut_once(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  static int done;

  if (!done && sp_uuid_equal(&d->from, &t->dev[LEADER].id) && d->len > 100) {
    done = 1;
    v->action = SP_MEM_CUT;
    v->keep = d->len / 2;
  }
  return 0;
}

static void test_cut_mid_frame(void **state) {
  tc t;

  (void)state;
  start(&t, 2, 1 * MS);
  t.fault = cut_once;
  tc_append(&t, LIB, 500, 200);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.last_lost, SP_ERR_CONNECTION_LOST);
  assert_int_equal(t.dev[LEADER].counts.last_lost, SP_ERR_CONNECTION_LOST);
  assert_int_equal(t.dev[F1].counts.applied_entries, 500);
  tc_free(&t);
}

/* Silence: both sides declare the other lost after 3 x 30 s; after the
 * partition heals the follower reconnects on its own and resumes from its
 * applied sequence. */
static void test_heartbeat_timeout_and_resume(void **state) {
  tc t;
  sp_seq before;

  (void)state;
  start(&t, 2, 1 * MS);
  tc_append(&t, LIB, 100, 20);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  before = tc_applied(&t, F1, LIB);
  sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1);
  tc_append(&t, LIB, 50, 20);
  tc_run_for(&t, 80 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_PEER_LOST], 0);
  tc_run_for(&t, 20 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.last_lost, SP_ERR_PEER_TIMEOUT);
  assert_int_equal(t.dev[LEADER].counts.last_lost, SP_ERR_PEER_TIMEOUT);
  tc_run_for(&t, 60 * SP_SECONDS);
  sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  assert_int_equal(t.dev[F1].sent.fetch_since_first, (long)before);
  assert_int_equal(tc_applied(&t, F1, LIB), 150);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* A short partition is ridden out on the same stream: held traffic is
 * delivered after it heals, no one is declared lost. */
static void test_short_partition_no_loss(void **state) {
  tc t;

  (void)state;
  start(&t, 2, 1 * MS);
  sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1);
  tc_append(&t, LIB, 20, 20);
  tc_run_for(&t, 10 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(t.dev[LEADER].counts.ev[SP_EVENT_PEER_LOST], 0);
  tc_free(&t);
}

/* The store fails three batches: nothing half-applied, retried, done. */
static void test_store_apply_failures(void **state) {
  tc t;

  (void)state;
  start_limit(&t, 100);
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 3);
  tc_append(&t, LIB, 1000, 20);
  assert_true(tc_converge(&t, LIB, 120 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.applied_entries, 1000);
  /* Consecutive failures are one episode: reported once, then its end. */
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  tc_free(&t);
}

/* Attempts a follower with a persistently failing store may make in
 * `span`: the doublings from reconnect_min up to reconnect_max, then one
 * per half of reconnect_max (the shortest jittered delay), plus slack for
 * the first attempt and the leader's stream arriving at a due moment. */
static long backoff_attempt_bound(const sp_handler_config *c,
                                  sp_duration span) {
  sp_duration b = c->reconnect_min;
  long n = 0;

  while (b < c->reconnect_max) {
    b *= 2;
    n++;
  }
  return n + (long)(span / (c->reconnect_max / 2)) + 3;
}

/* Disk full: every apply fails for a minute.  The follower backs off on
 * its own, refusing the leader's dials meanwhile, so streams and pages
 * stay few; the host hears of the failure once; when the store heals the
 * follower catches up and the host hears of that once. */
static void test_store_failure_backs_off(void **state) {
  const sp_duration span = 60 * SP_SECONDS;
  tc t;
  long connects0, pages0, connects, pages, bound;

  (void)state;
  start(&t, 2, 1 * MS);
  tc_append(&t, LIB, 10, 20);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 1000000);
  connects0 = t.dev[F1].counts.ev[SP_EVENT_PEER_CONNECTED];
  pages0 = t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE];
  tc_append(&t, LIB, 200, 20);
  tc_run_for(&t, span);
  connects = t.dev[F1].counts.ev[SP_EVENT_PEER_CONNECTED] - connects0;
  pages = t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE] - pages0;
  bound = backoff_attempt_bound(&t.dev[F1].cfg[LIB], span);
  print_message("store failing for 60 s: %ld streams, %ld pages (bound %ld)\n",
                connects, pages, bound);
  assert_int_equal(tc_applied(&t, F1, LIB), 10);
  assert_true(connects >= 2); /* it does retry */
  assert_true(connects <= bound);
  assert_true(pages <= 2 * bound);
  /* Told once, with the store's cause; the leader's dials in between
   * were refused with a reason it can read. */
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 0);
  assert_int_equal(t.dev[LEADER].counts.last_error, SP_ERR_BACKING_OFF);

  /* The store heals: caught up at the next attempt. */
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 0);
  assert_true(tc_converge(&t, LIB, t.dev[F1].cfg[LIB].reconnect_max +
                                       5 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  /* A second episode is a second event. */
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 1);
  tc_append(&t, LIB, 5, 20);
  assert_true(tc_converge(&t, LIB, 5 * SP_SECONDS));
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 2);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 2);
  tc_free(&t);
}

/* The restarted follower resumes where its store stands. */
static void test_follower_restart_resumes(void **state) {
  tc t;
  sp_seq before;

  (void)state;
  start(&t, 2, 1 * MS);
  tc_append(&t, LIB, 300, 20);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  before = tc_applied(&t, F1, LIB);
  tc_crash(&t, F1);
  tc_append(&t, LIB, 200, 20);
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(tc_boot(&t, F1), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(t.dev[F1].sent.fetch_since_first, (long)before);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* The leader restarted: the follower reconnects by itself. */
static void test_leader_restart(void **state) {
  tc t;

  (void)state;
  start(&t, 2, 1 * MS);
  tc_append(&t, LIB, 100, 20);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_crash(&t, LEADER);
  tc_run_for(&t, 3 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.last_lost, SP_ERR_CONNECTION_LOST);
  assert_int_equal(tc_boot(&t, LEADER), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 100, 20);
  assert_true(tc_converge(&t, LIB, 60 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, F1, LIB), 200);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

typedef struct req_result {
  int calls;
  int status;
  sp_seq applied;
} req_result;

static int on_request(sp_handler *h, int status, sp_seq applied, void *ud) {
  req_result *r = ud;

  (void)h;
  r->calls++;
  r->status = status;
  r->applied = applied;
  return 0;
}

/* request_entries fetches what no notification announced. */
static void test_request_entries(void **state) {
  tc t;
  req_result r = {0};
  sp_handler *fh;
  sp_seq latest = 0;
  int i;

  (void)state;
  start(&t, 2, 1 * MS);
  fh = t.dev[F1].h[LIB];
  /* Entries the leader never announced (the host did not notify). */
  for (i = 0; i < 40; ++i) {
    tc_append_at(&t, LIB, (sp_seq)i + 1, 10);
    latest = (sp_seq)i + 1;
  }
  tc_run_for(&t, 10 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  assert_int_equal(sp_handler_request_entries(fh, 1, on_request, &r, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_request_entries(fh, 0, on_request, &r, t.now),
                   0);
  assert_int_equal(sp_handler_request_entries(fh, 0, on_request, &r, t.now),
                   SP_ERR_INVALID_STATE);
  assert_int_equal(sp_handler_request_entries(t.dev[LEADER].h[LIB], 0,
                                              on_request, &r, t.now),
                   SP_ERR_INVALID_STATE);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.applied, latest);
  /* Again when nothing is new: completes with the same position. */
  assert_int_equal(sp_handler_request_entries(fh, 0, on_request, &r, t.now),
                   0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(r.calls, 2);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.applied, latest);
  /* Closing the library cancels a pending request. */
  sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1);
  assert_int_equal(sp_handler_request_entries(fh, 0, on_request, &r, t.now),
                   0);
  tc_close(&t, F1, LIB);
  assert_int_equal(r.calls, 3);
  assert_int_equal(r.status, SP_ERR_CANCELED);
  tc_free(&t);
}

/* During a store failure episode a request waits for the next retry and
 * ends with its outcome: the store failing again, or, once the registry
 * names no leader, the attempt failing before any stream exists. */
static void test_request_during_store_failure(void **state) {
  tc t;
  req_result r = {0};
  sp_handler *fh;

  (void)state;
  start(&t, 2, 1 * MS);
  fh = t.dev[F1].h[LIB];
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 1000000);
  tc_append(&t, LIB, 50, 20);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(sp_handler_request_entries(fh, 0, on_request, &r, t.now),
                   0);
  tc_run_for(&t, 60 * SP_SECONDS);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, SP_ERR_STORE);
  assert_int_equal(r.applied, 0);

  t.leader[LIB] = -1;
  assert_int_equal(sp_handler_request_entries(fh, 0, on_request, &r, t.now),
                   0);
  tc_run_for(&t, 60 * SP_SECONDS);
  assert_int_equal(r.calls, 2);
  assert_int_equal(r.status, SP_ERR_NOT_FOUND);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  tc_free(&t);
}

/* Stall: asked-for entries never come (responses vanish, heartbeats
 * still flow), so the follower reconnects after the stall timeout. */
static int drop_responses(tc *t, const sp_mem_delivery *d,
                          sp_mem_verdict *v) {
  if (sp_uuid_equal(&d->from, &t->dev[LEADER].id) && d->len > 200 &&
      t->now < 40 * SP_SECONDS) {
    v->action = SP_MEM_DROP;
  }
  return 0;
}

static void test_stall_reconnects(void **state) {
  tc t;

  (void)state;
  start(&t, 2, 1 * MS);
  t.fault = drop_responses;
  tc_append(&t, LIB, 50, 100);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 120 * SP_SECONDS));
  assert_true(t.dev[F1].counts.ev[SP_EVENT_PEER_LOST] >= 1);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* Epochs: a newer leader's epoch is recorded with the log; an older one
 * is refused. */
static void test_epochs(void **state) {
  tc t;
  sp_store st;
  sp_store_state s;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[LEADER].cfg[LIB].epoch = 7;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_append(&t, LIB, 10, 10);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  sp_mem_store_get_vtable(t.dev[F1].store[LIB], &st);
  assert_int_equal(st.state(&s, st.user_data), 0);
  assert_int_equal(s.epoch, 7);
  assert_int_equal(sp_handler_epoch(t.dev[F1].h[LIB]), 7);

  /* The leader comes back with an older epoch: refused, nothing new. */
  tc_close(&t, LEADER, LIB);
  t.dev[LEADER].cfg[LIB].epoch = 3;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 10, 10);
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 10);
  assert_int_equal(t.dev[F1].counts.last_error, SP_ERR_STALE_EPOCH);
  tc_free(&t);
}


/* One store.state() failure, then a store that works: the episode it
 * opened ends with the next state read that succeeds, though an idle,
 * caught-up follower applies nothing. */
static sp_store state_orig;
static int state_fail_once;

static int state_flaky(sp_store_state *out, void *ud) {
  if (state_fail_once) {
    state_fail_once = 0;
    return SP_ERR_IO;
  }
  return state_orig.state(out, ud);
}

static void hook_state(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)lib;
  if (dev == F1) {
    state_orig = *st;
    st->state = state_flaky;
  }
}

static void test_state_failure_recovers_idle(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.store_hook = hook_state;
  open_all(&t);
  tc_append(&t, LIB, 10, 20);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  /* The leader goes away; the follower's first reconnect cannot read its
   * store; the next one can.  Nothing new to apply. */
  state_fail_once = 1;
  tc_crash(&t, LEADER);
  tc_run_for(&t, 3 * SP_SECONDS);
  assert_int_equal(state_fail_once, 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(tc_boot(&t, LEADER), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_run_for(&t, 60 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  assert_int_not_equal(t.dev[LEADER].counts.last_error, SP_ERR_BACKING_OFF);
  tc_append(&t, LIB, 5, 20);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  tc_free(&t);
}


/* A follower node driven directly, whose transport opens streams but
 * fails every send: the stream sp_handler_request_entries opens dies
 * during the call. */
static sp_uuid rq_self = {{0xf1}}, rq_leader = {{0x1e}}, rq_lib = {{0x11}};
static uint64_t rq_next_stream = 1;

static int rq_is_member(const sp_uuid *lib, const sp_uuid *dev, int *m,
                        void *ud) {
  (void)lib;
  (void)dev;
  (void)ud;
  *m = 1;
  return 0;
}

static int rq_leader_of(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)lib;
  (void)ud;
  *leader = rq_leader;
  return 0;
}

static int rq_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                      size_t *count, void *ud) {
  (void)lib;
  (void)ud;
  *count = 2;
  if (cap >= 2) {
    out[0] = rq_leader;
    out[1] = rq_self;
  }
  return 0;
}

static int rq_open(const sp_uuid *peer, const sp_uuid *lib, uint64_t *id,
                   void *ud) {
  (void)peer;
  (void)lib;
  (void)ud;
  *id = rq_next_stream++;
  return 0;
}

static sp_ssize rq_send(uint64_t id, const uint8_t *data, size_t len,
                        void *ud) {
  (void)id;
  (void)data;
  (void)len;
  (void)ud;
  return SP_ERR_IO;
}

static int rq_close(uint64_t id, int code, void *ud) {
  (void)id;
  (void)code;
  (void)ud;
  return 0;
}

static void test_request_stream_fails_in_call(void **state) {
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_node_config nc;
  sp_handler_config hc;
  sp_mem_store *ms;
  sp_store st;
  sp_node *node;
  sp_handler *h;
  req_result r = {0};
  sp_tstamp now = SP_SECONDS;

  (void)state;
  reg.is_member = rq_is_member;
  reg.leader = rq_leader_of;
  reg.members = rq_members;
  tr.open_stream = rq_open;
  tr.send = rq_send;
  tr.close_stream = rq_close;
  sp_node_config_default(&nc);
  nc.device_id = rq_self;
  assert_int_equal(sp_node_new(&node, &nc, &reg, &ev, &tr, NULL), 0);
  assert_int_equal(sp_mem_store_new(&ms, NULL), 0);
  sp_mem_store_get_vtable(ms, &st);
  sp_handler_config_default(&hc);
  hc.library_id = rq_lib;
  hc.role = SP_ROLE_FOLLOWER;
  assert_int_equal(sp_handler_new(&h, node, &hc, &st, now), 0);
  assert_int_equal(sp_handler_request_entries(h, 0, on_request, &r, now), 0);
  /* The stream it opened failed during the call: the request ended with
   * it, before the call returned, exactly once. */
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, SP_ERR_CONNECTION_LOST);
  assert_int_equal(r.applied, 0);
  now += 60 * SP_SECONDS;
  assert_int_equal(sp_node_handle_expiry(node, now), 0);
  assert_int_equal(r.calls, 1);
  sp_node_del(node);
  sp_mem_store_del(ms);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_stream_fails_in_call),
      cmocka_unit_test(test_state_failure_recovers_idle),
      cmocka_unit_test(test_catchup_pipelined),
      cmocka_unit_test(test_duplicates_skipped),
      cmocka_unit_test(test_torn_stream_recovers),
      cmocka_unit_test(test_cut_mid_frame),
      cmocka_unit_test(test_heartbeat_timeout_and_resume),
      cmocka_unit_test(test_short_partition_no_loss),
      cmocka_unit_test(test_store_apply_failures),
      cmocka_unit_test(test_store_failure_backs_off),
      cmocka_unit_test(test_follower_restart_resumes),
      cmocka_unit_test(test_leader_restart),
      cmocka_unit_test(test_request_entries),
      cmocka_unit_test(test_request_during_store_failure),
      cmocka_unit_test(test_stall_reconnects),
      cmocka_unit_test(test_epochs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
