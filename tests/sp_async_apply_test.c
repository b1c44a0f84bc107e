/*
 * sp_async_apply_test.c: a follower over a store that applies
 * asynchronously (sys/store.h version 5: `durable`, SP_STORE_PENDING),
 * through the deterministic wrapper sp_async_store.c: the pipeline runs
 * ahead, while acks, ENTRIES_APPLIED, CAUGHT_UP, a request's end and a
 * submission's commit wait for `durable`; a failed pending batch goes
 * down the store-failure path; a lost stream or a crash loses nothing
 * durable and duplicates nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sp_async_store.h"
#include "sp_cluster.h"
#include "sp_core.h"

#define MS SP_MILLISECONDS
#define LIB 0
#define LEADER 0
#define F1 1

/* Leader and one follower whose store applies asynchronously; with a
 * fetch limit, the leader holds `behind` entries first, which the
 * follower catches up on page by page (a push would bring them in one). */
static void start_behind(tc *t, uint32_t fetch_limit, int behind) {
  assert_int_equal(tc_init(t, 2, 1, 1 * MS, NULL), 0);
  t->dev[F1].async[LIB] = 1;
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  if (behind) {
    tc_append(t, LIB, behind, 50);
  }
  if (fetch_limit) {
    t->dev[F1].cfg[LIB].fetch_limit = fetch_limit;
    /* Room for every page of these tests in the store's queue. */
    t->dev[F1].cfg[LIB].fetch_window = 16;
  }
  assert_int_equal(tc_open(t, F1, LIB), 0);
  tc_run_for(t, SP_SECONDS);
}

static void start(tc *t) { start_behind(t, 0, 0); }

static sp_seq leader_acked(tc *t) {
  sp_follower_progress p[2];
  sp_ssize n = sp_handler_list_followers(t->dev[LEADER].h[LIB], p, 2, t->now);

  assert_int_equal(n, 1);
  return p[0].has_acked ? p[0].acked_sequence : 0;
}

static sp_seq status_seq(tc *t) {
  sp_handler_status hs;

  assert_int_equal(sp_handler_get_status(t->dev[F1].h[LIB], &hs), 0);
  return hs.sequence;
}

static size_t pending(tc *t) {
  return sp_async_store_pending(t->dev[F1].astore[LIB]);
}

/* Run, making everything durable every `every` (a store that keeps up). */
static void run_flushing(tc *t, sp_duration d, sp_duration every) {
  sp_tstamp until = t->now + d;

  while (t->now < until) {
    tc_run_for(t, every);
    (void)tc_flush(t, F1, LIB, SIZE_MAX);
  }
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

/* Everything arrives and is taken, nothing is durable: no ack, no
 * ENTRIES_APPLIED, no CAUGHT_UP, no request ends, the status says 0.
 * Once durable, all of it, once. */
static void test_acks_wait_for_durable(void **state) {
  tc t;
  req_result r = {0};

  (void)state;
  start(&t);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_CAUGHT_UP], 1);
  assert_int_equal(sp_handler_request_entries(t.dev[F1].h[LIB], 0,
                                              on_request, &r, t.now),
                   0);
  tc_append(&t, LIB, 100, 50);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_CAUGHT_UP], 1);
  assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_ACKNOWLEDGE], 0);
  assert_int_equal(leader_acked(&t), 0);
  assert_int_equal(status_seq(&t), 0);
  assert_int_equal(r.calls, 0);

  assert_int_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  assert_int_equal(tc_applied(&t, F1, LIB), 100);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 1);
  assert_int_equal(t.dev[F1].counts.applied_entries, 100);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_CAUGHT_UP], 2);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.applied, 100);
  assert_int_equal(status_seq(&t), 100);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 100);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* Small pages: the fetch pipeline does not wait for the store (every page
 * is queued before the first is durable), and durable moves page by
 * page, each ack and event reporting exactly what is durable. */
static void test_durable_across_pages(void **state) {
  tc t;

  (void)state;
  start_behind(&t, 10, 100);
  assert_int_equal(pending(&t), 10);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 0);

  assert_int_equal(tc_flush(&t, F1, LIB, 3), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 3);
  assert_int_equal(t.dev[F1].counts.applied_entries, 30);
  assert_int_equal(status_seq(&t), 30);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 30);

  assert_int_equal(tc_flush(&t, F1, LIB, 5), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 80);
  assert_int_equal(t.dev[F1].counts.applied_entries, 80);
  assert_int_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 100);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 10);
  assert_int_equal(t.dev[F1].counts.applied_entries, 100);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 0);
  tc_free(&t);
}

/* A store slower than the network: the follower stops asking once a
 * window's worth of pages waits in the store's queue (beside a window in
 * flight), and goes on as the store catches up. */
static void test_queue_bounded(void **state) {
  tc t;
  size_t most = 0;
  int i;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[F1].async[LIB] = 1;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 200, 50);
  t.dev[F1].cfg[LIB].fetch_limit = 10;
  t.dev[F1].cfg[LIB].fetch_window = 2;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_true(pending(&t) >= 2);
  assert_true(pending(&t) <= 4);
  for (i = 0; i < 200 && tc_applied(&t, F1, LIB) < 200; ++i) {
    most = pending(&t) > most ? pending(&t) : most;
    assert_int_equal(tc_flush(&t, F1, LIB, 1), 0);
    tc_run_for(&t, 10 * MS);
  }
  assert_true(most <= 4);
  assert_int_equal(tc_applied(&t, F1, LIB), 200);
  assert_int_equal(t.dev[F1].counts.applied_entries, 200);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 200);
  tc_free(&t);
}

/* A pending batch fails: the store forgets it and the later ones;
 * STORE_FAILED, the backoff, and the fetch starts over from what is
 * durable.  In the end every entry is applied and reported exactly once. */
static void test_pending_failure_restarts(void **state) {
  tc t;

  (void)state;
  start_behind(&t, 10, 100);
  assert_int_equal(pending(&t), 10);
  assert_int_equal(tc_flush(&t, F1, LIB, 2), 0);
  assert_int_equal(sp_async_store_fail(t.dev[F1].astore[LIB], SP_ERR_STORE),
                   8);
  assert_int_equal(tc_flush(&t, F1, LIB, 0), 0); /* the fd wakes the node */
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.applied_entries, 20);
  assert_int_equal(status_seq(&t), 20);
  assert_int_equal(tc_applied(&t, F1, LIB), 20);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 20);

  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 100);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.dev[F1].counts.applied_entries, 100);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  assert_int_equal(leader_acked(&t), 100);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The inner store's own failure while making a batch durable takes the
 * same path (the wrapper latches it for `durable`). */
static void test_inner_failure_while_flushing(void **state) {
  tc t;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(pending(&t), 5);
  sp_mem_store_fail_applies(t.dev[F1].store[LIB], 1);
  assert_int_not_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_int_equal(t.dev[F1].counts.applied_entries, 50);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

static int cut_leader(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  if (sp_uuid_equal(&d->from, &t->dev[LEADER].id) && t->fault_ud) {
    t->fault_ud = NULL;
    v->action = SP_MEM_CUT;
    v->keep = 0;
  }
  return 0;
}

/* The stream is lost with applies pending: the next stream waits for
 * them before its resume fetch (which the leader counts as durable), then
 * goes on from there; nothing is lost, fetched or reported twice. */
static void test_stream_loss_with_pending(void **state) {
  tc t;
  long pages;

  (void)state;
  start_behind(&t, 10, 60);
  assert_int_equal(pending(&t), 6);
  t.fault = cut_leader;
  t.fault_ud = &t;
  tc_append(&t, LIB, 40, 50);
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.last_lost, SP_ERR_CONNECTION_LOST);
  /* Reconnected; the resume fetch waits: nothing more, nothing durable,
   * nothing acknowledged. */
  assert_int_equal(pending(&t), 6);
  assert_int_equal(leader_acked(&t), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 0);
  pages = t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE];
  assert_int_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 60);
  assert_int_equal(pending(&t), 4); /* (60, 100] in pages of 10 */
  assert_int_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 100);
  assert_int_equal(t.dev[LEADER].sent.msgs[SP_MSG_ENTRIES_RESPONSE] - pages,
                   4);
  assert_int_equal(t.dev[F1].counts.applied_entries, 100);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* A crash loses what was pending: the restarted follower resumes from
 * what is durable, and the leader never heard of more. */
static void test_crash_loses_pending(void **state) {
  tc t;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(tc_flush(&t, F1, LIB, 2), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(leader_acked(&t), 20);
  assert_int_equal(pending(&t), 3);
  assert_int_equal(tc_restart(&t, F1), 0);
  assert_int_equal(tc_applied(&t, F1, LIB), 20);
  run_flushing(&t, 10 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(leader_acked(&t), 50);
  tc_free(&t);
}

/* A SyncRequired met while applies are pending: a full sync or a
 * snapshot would replace the log the store is still writing, so the
 * follower does not act on it yet: the stream ends, the next one asks
 * again once everything is durable (here the leader serves it). */
static void test_sync_required_waits(void **state) {
  tc t;
  sp_session *x;
  sp_msg m;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(pending(&t), 5);
  for (x = t.dev[LEADER].h[LIB]->sessions; x; x = x->hnext) {
    if (sp_uuid_equal(&x->peer, &t.dev[F1].id) && !x->dead) {
      break;
    }
  }
  assert_non_null(x);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_SYNC_REQUIRED;
  m.library_id = t.lib[LIB];
  m.epoch = 1;
  m.u.sync_required.reason = SP_SYNC_BEHIND_RETENTION;
  m.u.sync_required.leader_latest = 5000;
  m.u.sync_required.leader_oldest = 4000;
  m.u.sync_required.follower_sequence = 50;
  assert_int_equal(tc_inject(&t, LEADER, x->stream_id, &m), 0);
  tc_run_for(&t, 50 * MS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  assert_true(t.dev[F1].counts.ev[SP_EVENT_PEER_LOST] >= 1);
  assert_int_equal(pending(&t), 5);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 0);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_int_equal(t.dev[F1].counts.applied_entries, 50);
  assert_int_equal(leader_acked(&t), 50);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* The role changes with applies pending: what is durable was reported,
 * the rest no longer is (a leader's log is what its store answers, and
 * its host lets the store finish before promoting: sys/store.h). */
static void test_role_change_with_pending(void **state) {
  tc t;
  sp_handler_status hs;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(pending(&t), 5);
  assert_int_equal(tc_flush(&t, F1, LIB, 2), 0);
  assert_int_equal(t.dev[F1].counts.applied_entries, 20);
  assert_int_equal(sp_handler_set_role(t.dev[F1].h[LIB], SP_ROLE_LEADER, 2,
                                       t.now),
                   0);
  assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &hs), 0);
  assert_int_equal(hs.role, SP_ROLE_LEADER);
  assert_int_equal(hs.sequence, 50);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.applied_entries, 20);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A store that reports a failure once, by whichever call comes first
 * (the SQLite store's apply thread drains before every other call): here
 * a submit's outbox write meets it, and `durable` never says it.  The
 * follower reads the state again, takes the store-failure path and
 * starts over from what is durable. */
static void test_failure_reported_by_another_call(void **state) {
  static const uint8_t payload[8] = "payload";
  sp_entry e;
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.dev[F1].async[LIB] = 2;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 50, 50);
  t.dev[F1].cfg[LIB].fetch_limit = 10;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 5);
  assert_int_equal(tc_flush(&t, F1, LIB, 1), 0);
  assert_int_equal(sp_async_store_fail(t.dev[F1].astore[LIB], SP_ERR_STORE),
                   4);
  memset(&e, 0, sizeof(e));
  e.model_type = "tag";
  e.model_type_len = 3;
  e.data = payload;
  e.data_len = sizeof(payload);
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, NULL, t.now),
                   SP_ERR_STORE);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(status_seq(&t), 10);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_int_equal(t.dev[F1].counts.applied_entries, 50);
  assert_int_equal(leader_acked(&t), 50);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static sp_entry own_entry(const uint8_t *data, size_t len) {
  sp_entry e;

  memset(&e, 0, sizeof(e));
  e.timestamp_ms = 1700000000000ULL;
  e.model_type = "tag";
  e.model_type_len = 3;
  e.record_id.bytes[0] = 0xee;
  e.change_type = SP_CHANGE_INSERT;
  e.data = data;
  e.data_len = len;
  return e;
}

static int committed_cb(sp_handler *h, uint64_t origin, int status,
                        sp_seq seq, void *ud) {
  req_result *r = ud;

  (void)h;
  (void)origin;
  r->calls++;
  r->status = status;
  r->applied = seq;
  return 0;
}

/* A follower's own submission comes back in a page that is applied but
 * pending: not committed yet (no event, no wait ends, the submission is
 * not found) until it is durable. */
static void test_own_commit_waits_for_durable(void **state) {
  static const uint8_t payload[8] = "payload";
  sp_entry e = own_entry(payload, sizeof(payload));
  tc t;
  req_result w = {0};
  uint64_t origin = 0;
  sp_seq seq = 0;
  sp_handler *fh;

  (void)state;
  start(&t);
  fh = t.dev[F1].h[LIB];
  tc_append(&t, LIB, 5, 20);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  assert_int_equal(sp_handler_submit(fh, &e, 1, &origin, t.now), 0);
  assert_int_equal(sp_handler_wait_committed(fh, origin, SP_TSTAMP_MAX,
                                             committed_cb, &w, t.now),
                   0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(tc_latest(&t, LIB), 6);
  assert_int_equal(pending(&t), 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 0);
  assert_int_equal(w.calls, 0);
  assert_int_equal(sp_handler_submission(fh, origin, &seq),
                   SP_ERR_NOT_FOUND);
  /* A wait registered now waits too (the outbox no longer shows it). */
  assert_int_equal(sp_handler_wait_committed(fh, origin, SP_TSTAMP_MAX,
                                             committed_cb, &w, t.now),
                   0);

  assert_int_equal(tc_flush(&t, F1, LIB, SIZE_MAX), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 1);
  assert_int_equal(w.calls, 2);
  assert_int_equal(w.status, 0);
  assert_int_equal(w.applied, 6);
  assert_int_equal(sp_handler_submission(fh, origin, &seq), 0);
  assert_int_equal(seq, 6);
  tc_free(&t);
}

/* The same submission, its pending batch failing: the item is back in
 * the outbox, proposed again, and committed exactly once in the end. */
static void test_own_commit_after_failure(void **state) {
  static const uint8_t payload[8] = "payload";
  sp_entry e = own_entry(payload, sizeof(payload));
  tc t;
  uint64_t origin = 0;
  sp_seq seq = 0;

  (void)state;
  start(&t);
  assert_int_equal(
      sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &origin, t.now), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 1);
  assert_int_equal(sp_async_store_fail(t.dev[F1].astore[LIB], SP_ERR_STORE),
                   1);
  assert_int_equal(tc_flush(&t, F1, LIB, 0), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 0);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 1);
  assert_int_equal(tc_latest(&t, LIB), 1); /* the leader's dedupe */
  assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], origin, &seq), 0);
  assert_int_equal(seq, 1);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* A store without `durable` that answers SP_STORE_PENDING: not the
 * contract, so a failure as before version 5 (nothing reported as
 * applied, the store-failure path). */
static int (*g_inner_apply)(const sp_entry *, const uint8_t *, size_t,
                            uint64_t, void *);

static int pending_apply(const sp_entry *entries, const uint8_t *hashes,
                         size_t n, uint64_t epoch, void *ud) {
  int rv = g_inner_apply(entries, hashes, n, epoch, ud);

  return rv != 0 ? rv : SP_STORE_PENDING;
}

static void no_durable_hook(tc *t, int dev, int lib, sp_store *st) {
  (void)lib;
  if (dev == F1) {
    assert_null(st->durable);
    g_inner_apply = st->apply;
    st->apply = pending_apply;
  }
  (void)t;
}

static void test_pending_without_durable_fails(void **state) {
  tc t;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.store_hook = no_durable_hook;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 10, 50);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_true(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED] >= 1);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_ENTRIES_APPLIED], 0);
  assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_ACKNOWLEDGE], 0);
  tc_free(&t);
}

/* rev15a B2: two batches become durable and a later one fails with no
 * call into the node in between, so `durable` never says the first two:
 * they are reported all the same (ENTRIES_APPLIED tiles the log, exactly
 * once), before the failure's restart. */
static void test_durable_before_failure_reported(void **state) {
  tc t;

  (void)state;
  start_behind(&t, 10, 100);
  assert_int_equal(pending(&t), 10);
  assert_int_equal(sp_async_store_flush(t.dev[F1].astore[LIB], 2), 0);
  assert_int_equal(sp_async_store_fail(t.dev[F1].astore[LIB], SP_ERR_STORE),
                   8);
  assert_int_equal(t.dev[F1].counts.applied_entries, 0);
  assert_int_equal(tc_flush(&t, F1, LIB, 0), 0); /* the wake */
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(t.dev[F1].counts.applied_entries, 20);
  assert_int_equal(status_seq(&t), 20);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 100);
  assert_int_equal(t.dev[F1].counts.applied_entries, 100);
  assert_int_equal(leader_acked(&t), 100);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* The same with an own submission in a batch made durable before the
 * failure: SUBMISSION_COMMITTED once, and the wait ends. */
static void test_own_commit_before_failure_reported(void **state) {
  static const uint8_t payload[8] = "payload";
  sp_entry e = own_entry(payload, sizeof(payload));
  tc t;
  req_result w = {0};
  uint64_t origin = 0;

  (void)state;
  start(&t);
  assert_int_equal(
      sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &origin, t.now), 0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], origin,
                                             SP_TSTAMP_MAX, committed_cb, &w,
                                             t.now),
                   0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 1);
  tc_append(&t, LIB, 5, 20);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 2);
  assert_int_equal(sp_async_store_flush(t.dev[F1].astore[LIB], 1), 0);
  assert_int_equal(sp_async_store_fail(t.dev[F1].astore[LIB], SP_ERR_STORE),
                   1);
  assert_int_equal(tc_flush(&t, F1, LIB, 0), 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 1);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.status, 0);
  assert_int_equal(w.applied, 1);
  assert_int_equal(t.dev[F1].counts.applied_entries, 1);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(t.dev[F1].counts.applied_entries, 6);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 1);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* rev15a B3: a follower term restarts (follower -> follower) over a store
 * with applies pending: they are not taken for durable (status, acks,
 * the resume fetch), and reported once they are. */
static void test_refollow_with_pending(void **state) {
  tc t;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(pending(&t), 5);
  assert_int_equal(tc_flush(&t, F1, LIB, 2), 0);
  assert_int_equal(t.dev[F1].counts.applied_entries, 20);
  assert_int_equal(sp_handler_set_role(t.dev[F1].h[LIB], SP_ROLE_FOLLOWER, 0,
                                       t.now),
                   0);
  assert_int_equal(status_seq(&t), 20);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 3);
  assert_int_equal(leader_acked(&t), 20);
  assert_int_equal(status_seq(&t), 20);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_int_equal(t.dev[F1].counts.applied_entries, 50);
  assert_int_equal(leader_acked(&t), 50);
  assert_int_equal(status_seq(&t), 50);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* A follower term restarted with an own submission's batch queued: its
 * commit is reported once durable, once. */
static void test_own_commit_across_refollow(void **state) {
  static const uint8_t payload[8] = "payload";
  sp_entry e = own_entry(payload, sizeof(payload));
  tc t;
  uint64_t origin = 0;
  sp_seq seq = 0;

  (void)state;
  start(&t);
  assert_int_equal(
      sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &origin, t.now), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 1);
  assert_int_equal(sp_handler_set_role(t.dev[F1].h[LIB], SP_ROLE_FOLLOWER, 0,
                                       t.now),
                   0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 0);
  assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], origin, &seq),
                   SP_ERR_NOT_FOUND);
  run_flushing(&t, 2 * SP_SECONDS, 10 * MS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 1);
  assert_int_equal(t.dev[F1].counts.applied_entries, 1);
  assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], origin, &seq), 0);
  assert_int_equal(seq, 1);
  assert_int_equal(tc_latest(&t, LIB), 1);
  tc_free(&t);
}

/* rev15a B3, the same for a handler created again over the store (its
 * applies still queued): it waits for them too, and reports them. */
static void test_new_handler_over_pending(void **state) {
  tc t;
  sp_store st;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(pending(&t), 5);
  assert_int_equal(tc_flush(&t, F1, LIB, 2), 0);
  sp_handler_del(t.dev[F1].h[LIB]);
  sp_async_store_vtable(t.dev[F1].astore[LIB], &st);
  assert_int_equal(sp_handler_new(&t.dev[F1].h[LIB], t.dev[F1].node,
                                  &t.dev[F1].cfg[LIB], &st, t.now),
                   0);
  assert_int_equal(status_seq(&t), 20);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 3);
  assert_int_equal(leader_acked(&t), 20);
  assert_int_equal(status_seq(&t), 20);
  assert_int_equal(t.dev[F1].counts.applied_entries, 20);
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_int_equal(tc_applied(&t, F1, LIB), 50);
  assert_int_equal(t.dev[F1].counts.applied_entries, 50);
  assert_int_equal(leader_acked(&t), 50);
  assert_true(tc_is_prefix(&t, F1, LIB));
  tc_free(&t);
}

/* rev15a B1: a store that reports a failure once, consumed by a submit,
 * and the state read after it fails too: the follower applies nothing
 * on top of what the store forgot (the hole), and starts over once a
 * read succeeds. */
static int (*g_state)(sp_store_state *, void *);
static int g_fail_state;

static int failing_state(sp_store_state *out, void *ud) {
  if (g_fail_state > 0) {
    g_fail_state--;
    return SP_ERR_STORE;
  }
  return g_state(out, ud);
}

static void state_hook(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)lib;
  if (dev == F1) {
    g_state = st->state;
    st->state = failing_state;
  }
}

static void test_recheck_state_fails(void **state) {
  static const uint8_t payload[8] = "payload";
  sp_entry e = own_entry(payload, sizeof(payload));
  tc t;

  (void)state;
  g_fail_state = 0;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.store_hook = state_hook;
  t.dev[F1].async[LIB] = 2;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 50, 50);
  t.dev[F1].cfg[LIB].fetch_limit = 10;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(pending(&t), 5);
  assert_int_equal(tc_flush(&t, F1, LIB, 1), 0);
  assert_int_equal(sp_async_store_fail(t.dev[F1].astore[LIB], SP_ERR_STORE),
                   4);
  g_fail_state = 1;
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, NULL, t.now),
                   SP_ERR_STORE);
  assert_int_equal(g_fail_state, 0);
  assert_int_equal(status_seq(&t), 10);
  tc_append(&t, LIB, 20, 50);
  tc_run_for(&t, 50 * MS);
  assert_true(tc_is_prefix(&t, F1, LIB));
  run_flushing(&t, 5 * SP_SECONDS, 10 * MS);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(tc_applied(&t, F1, LIB), 70);
  assert_int_equal(t.dev[F1].counts.applied_entries, 70);
  assert_int_equal(leader_acked(&t), 70);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* rev15a B4: an epoch record is never pending: with pages queued, the
 * fence of a new term is durable when the follower acts on it (after the
 * queued pages, in the store's order), so a crash right after cannot let
 * the follower serve the deposed leader. */
static void test_epoch_record_durable(void **state) {
  tc t;
  sp_store_state st;
  sp_store v;

  (void)state;
  start_behind(&t, 10, 50);
  assert_int_equal(pending(&t), 5);
  assert_int_equal(sp_handler_set_role(t.dev[LEADER].h[LIB], SP_ROLE_LEADER,
                                       7, t.now),
                   0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(sp_mem_store_get_vtable(t.dev[F1].store[LIB], &v), 0);
  assert_int_equal(v.state(&st, v.user_data), 0);
  assert_int_equal(st.epoch, 7);
  assert_int_equal(st.applied, 50);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 0);
  (void)sp_async_store_crash(t.dev[F1].astore[LIB]);
  assert_int_equal(v.state(&st, v.user_data), 0);
  assert_int_equal(st.epoch, 7);
  tc_free(&t);
}

/* A store that answers 0 (durable) for a batch behind pending ones:
 * everything before it is durable too, and the events keep the log's
 * order (each ENTRIES_APPLIED starts where the last ended). */
static sp_async_store *g_async;
static int (*g_async_apply)(const sp_entry *, const uint8_t *, size_t,
                            uint64_t, void *);
static int g_durable_now;
static sp_seq g_ev_at;
static int g_ev_gaps;

static int durable_now_apply(const sp_entry *entries, const uint8_t *hashes,
                             size_t n, uint64_t epoch, void *ud) {
  int rv = g_async_apply(entries, hashes, n, epoch, ud);

  if (rv == SP_STORE_PENDING && g_durable_now) {
    g_durable_now = 0;
    return sp_async_store_flush(g_async, SIZE_MAX);
  }
  return rv;
}

static void durable_now_hook(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)lib;
  if (dev == F1) {
    assert_int_equal(sp_async_store_new(&g_async, st), 0);
    sp_async_store_vtable(g_async, st);
    g_async_apply = st->apply;
    st->apply = durable_now_apply;
  }
}

static void tiling_event(tc *t, int dev, const sp_event *ev) {
  (void)t;
  if (dev == F1 && ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_ev_gaps += ev->from_sequence != g_ev_at;
    g_ev_at = ev->to_sequence;
  }
}

static void test_durable_at_once_behind_pending(void **state) {
  tc t;

  (void)state;
  g_durable_now = 0;
  g_ev_at = 0;
  g_ev_gaps = 0;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.store_hook = durable_now_hook;
  t.on_event = tiling_event;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 20, 50);
  t.dev[F1].cfg[LIB].fetch_limit = 10;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(sp_async_store_pending(g_async), 2);
  g_durable_now = 1;
  tc_append(&t, LIB, 5, 50);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(sp_async_store_pending(g_async), 0);
  assert_int_equal(t.dev[F1].counts.applied_entries, 25);
  assert_int_equal(g_ev_gaps, 0);
  assert_int_equal(g_ev_at, 25);
  assert_int_equal(leader_acked(&t), 25);
  tc_free(&t);
  sp_async_store_del(g_async);
  g_async = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_acks_wait_for_durable),
      cmocka_unit_test(test_durable_across_pages),
      cmocka_unit_test(test_queue_bounded),
      cmocka_unit_test(test_pending_failure_restarts),
      cmocka_unit_test(test_inner_failure_while_flushing),
      cmocka_unit_test(test_stream_loss_with_pending),
      cmocka_unit_test(test_crash_loses_pending),
      cmocka_unit_test(test_sync_required_waits),
      cmocka_unit_test(test_role_change_with_pending),
      cmocka_unit_test(test_failure_reported_by_another_call),
      cmocka_unit_test(test_own_commit_waits_for_durable),
      cmocka_unit_test(test_own_commit_after_failure),
      cmocka_unit_test(test_pending_without_durable_fails),
      cmocka_unit_test(test_durable_before_failure_reported),
      cmocka_unit_test(test_own_commit_before_failure_reported),
      cmocka_unit_test(test_refollow_with_pending),
      cmocka_unit_test(test_new_handler_over_pending),
      cmocka_unit_test(test_own_commit_across_refollow),
      cmocka_unit_test(test_durable_at_once_behind_pending),
      cmocka_unit_test(test_recheck_state_fails),
      cmocka_unit_test(test_epoch_record_durable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
