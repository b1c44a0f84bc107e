/*
 * sp_writer_test.c: the follower's side of the write path (sp_writer.c)
 * end to end over the in-memory network: submit, forwarding, commit and
 * refusal, waits, back-pressure, lost answers, crashes, concurrent
 * writers; and, against a hand-made leader speaking raw frames, the
 * negotiation and the answer matching.
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
#define F2 2

/* ---- what the devices reported ---- */

#define MAX_OUTCOMES 4096

typedef struct outcome {
  int dev;
  sp_event_type type;
  uint64_t origin;
  sp_seq seq;
  int code;
  char message[64];
} outcome;

static outcome outcomes[MAX_OUTCOMES];
static size_t noutcomes;

static void record(tc *t, int dev, const sp_event *ev) {
  outcome *o;

  (void)t;
  if (ev->type != SP_EVENT_SUBMISSION_COMMITTED &&
      ev->type != SP_EVENT_SUBMISSION_REFUSED) {
    return;
  }
  assert_true(noutcomes < MAX_OUTCOMES);
  o = &outcomes[noutcomes++];
  memset(o, 0, sizeof(*o));
  o->dev = dev;
  o->type = ev->type;
  o->origin = ev->origin_seq;
  o->seq = ev->to_sequence;
  o->code = ev->error_code;
  if (ev->message) {
    strncpy(o->message, ev->message, sizeof(o->message) - 1);
  }
}

/* How many outcomes of `type` device `dev` reported for `origin`. */
static int outcomes_of(int dev, sp_event_type type, uint64_t origin,
                       sp_seq *seq) {
  size_t i;
  int n = 0;

  for (i = 0; i < noutcomes; ++i) {
    if (outcomes[i].dev == dev && outcomes[i].type == type &&
        outcomes[i].origin == origin) {
      n++;
      if (seq) {
        *seq = outcomes[i].seq;
      }
    }
  }
  return n;
}

static void init(tc *t, int ndevs, sp_duration latency) {
  noutcomes = 0;
  assert_int_equal(tc_init(t, ndevs, 1, latency, NULL), 0);
  t->on_event = record;
}

static void open_all(tc *t) {
  int i;

  for (i = 0; i < t->ndevs; ++i) {
    assert_int_equal(tc_open(t, i, LIB), 0);
  }
}

/* An entry of `dev` (device_id left zero: the handler fills it in). */
static sp_entry make_entry(uint32_t tag, const uint8_t *data, size_t len) {
  sp_entry e;

  memset(&e, 0, sizeof(e));
  e.timestamp_ms = 1700000000000ULL + tag;
  e.model_type = "tag";
  e.model_type_len = 3;
  e.record_id.bytes[0] = 0xee;
  e.record_id.bytes[1] = (uint8_t)tag;
  e.record_id.bytes[2] = (uint8_t)(tag >> 8);
  e.change_type = SP_CHANGE_INSERT;
  e.version = (int64_t)tag;
  e.data = data;
  e.data_len = len;
  return e;
}

static int submit(tc *t, int dev, uint32_t tag, uint64_t *origin) {
  static const uint8_t payload[16] = "0123456789abcde";
  sp_entry e = make_entry(tag, payload, sizeof(payload));

  return sp_handler_submit(t->dev[dev].h[LIB], &e, 1, origin, t->now);
}

/* Times (device, origin) is in `dev`'s log, and its sequence. */
static int in_log(tc *t, int dev, const sp_uuid *origin_dev, uint64_t origin,
                  sp_seq *where) {
  sp_mem_store *st = t->dev[dev].store[LIB];
  sp_seq seq, latest = tc_applied(t, dev, LIB);
  int n = 0;

  if (dev == t->leader[LIB]) {
    latest = tc_latest(t, LIB);
  }
  for (seq = 1; seq <= latest; ++seq) {
    sp_entry e;
    if (sp_mem_store_get(st, seq, &e, NULL) == 0 && e.origin_seq == origin &&
        sp_uuid_equal(&e.device_id, origin_dev)) {
      n++;
      if (where) {
        *where = seq;
      }
    }
  }
  return n;
}

static void assert_outbox(tc *t, int dev, uint64_t pending) {
  sp_outbox_status st;

  assert_int_equal(sp_handler_outbox_status(t->dev[dev].h[LIB], &st), 0);
  assert_int_equal(st.pending, pending);
}

/* ---- submit, forward, commit ---- */

/* Written while the leader is unreachable: durable in the outbox, then
 * committed once connected, with the leader's sequence, in every log. */
static void test_offline_then_connect(void **state) {
  tc t;
  uint64_t o1, o2;
  sp_seq seq = 0, where = 0;
  int i;

  (void)state;
  init(&t, 3, 1 * MS);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_int_equal(tc_open(&t, F2, LIB), 0);
  tc_append(&t, LIB, 5, 10);
  assert_int_equal(submit(&t, F1, 1, &o1), 0);
  assert_int_equal(submit(&t, F1, 2, &o2), 0);
  assert_int_equal(o2, o1 + 1);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_outbox(&t, F1, 2);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o1, NULL),
                   0);
  assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], o1, &seq),
                   SP_ERR_NOT_FOUND);

  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0), 0);
  tc_run_for(&t, 60 * SP_SECONDS);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_latest(&t, LIB), 7);
  for (i = 0; i < 2; ++i) {
    uint64_t o = i ? o2 : o1;
    assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, &seq),
                     1);
    assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, &where), 1);
    assert_int_equal(seq, where);
    assert_int_equal(in_log(&t, F1, &t.dev[F1].id, o, NULL), 1);
    assert_int_equal(in_log(&t, F2, &t.dev[F1].id, o, NULL), 1);
    assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], o, &seq), 0);
    assert_int_equal(seq, where);
  }
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_true(tc_is_prefix(&t, F2, LIB));
  assert_outbox(&t, F1, 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_REFUSED], 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* On a stream the leader opened (it dials its followers when its term
 * starts), writes are negotiated the same way. */
static void test_leader_opened_stream(void **state) {
  tc t;
  uint64_t o;

  (void)state;
  init(&t, 2, 1 * MS);
  t.dev[F1].cfg[LIB].reconnect_min = 60 * SP_SECONDS;
  t.dev[F1].cfg[LIB].reconnect_max = 60 * SP_SECONDS;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(submit(&t, F1, 1, &o), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, NULL), 1);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, NULL), 1);
  assert_int_equal(in_log(&t, F1, &t.dev[F1].id, o, NULL), 1);
  assert_outbox(&t, F1, 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- read-your-writes ---- */

typedef struct wait_res {
  int calls;
  uint64_t origin;
  int status;
  sp_seq seq;
} wait_res;

static int on_committed(sp_handler *h, uint64_t origin, int status,
                        sp_seq seq, void *ud) {
  wait_res *r = ud;

  (void)h;
  r->calls++;
  r->origin = origin;
  r->status = status;
  r->seq = seq;
  return 0;
}

static void test_wait_committed(void **state) {
  tc t;
  wait_res lands = {0}, late = {0}, canceled = {0};
  uint64_t o1, o2, o3;
  sp_seq where = 0;

  (void)state;
  init(&t, 2, 1 * MS);
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(submit(&t, F1, 1, &o1), 0);
  /* Registered before it lands: called back once, with its place. */
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o1,
                                             t.now + 10 * SP_SECONDS,
                                             on_committed, &lands, t.now),
                   0);
  assert_int_equal(lands.calls, 0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(lands.calls, 1);
  assert_int_equal(lands.status, 0);
  assert_int_equal(lands.origin, o1);
  assert_int_equal(in_log(&t, F1, &t.dev[F1].id, o1, &where), 1);
  assert_int_equal(lands.seq, where);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o1, NULL),
                   1);
  /* Already in the log: 1, no callback. */
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o1,
                                             t.now + SP_SECONDS,
                                             on_committed, &late, t.now),
                   1);
  /* Never submitted. */
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o1 + 100,
                                             t.now + SP_SECONDS,
                                             on_committed, &late, t.now),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], 0,
                                             t.now + SP_SECONDS,
                                             on_committed, &late, t.now),
                   SP_ERR_INVALID_ARGUMENT);

  /* The leader out of reach: the deadline ends the wait. */
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1), 0);
  assert_int_equal(submit(&t, F1, 2, &o2), 0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o2,
                                             t.now + 2 * SP_SECONDS,
                                             on_committed, &late, t.now),
                   0);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(late.calls, 0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(late.calls, 1);
  assert_int_equal(late.status, SP_ERR_DEADLINE);
  assert_int_equal(late.origin, o2);

  /* Deleting the handler cancels what is left. */
  assert_int_equal(submit(&t, F1, 3, &o3), 0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o3,
                                             t.now + 100 * SP_SECONDS,
                                             on_committed, &canceled, t.now),
                   0);
  tc_close(&t, F1, LIB);
  assert_int_equal(canceled.calls, 1);
  assert_int_equal(canceled.status, SP_ERR_CANCELED);
  assert_int_equal(canceled.origin, o3);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A role change ends the follower term's waits too. */
static void test_wait_canceled_by_role_change(void **state) {
  tc t;
  wait_res r = {0};
  uint64_t o;

  (void)state;
  init(&t, 2, 1 * MS);
  open_all(&t);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1), 0);
  assert_int_equal(submit(&t, F1, 1, &o), 0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o,
                                             t.now + 100 * SP_SECONDS,
                                             on_committed, &r, t.now),
                   0);
  assert_int_equal(sp_handler_set_role(t.dev[F1].h[LIB], SP_ROLE_FOLLOWER, 0,
                                       t.now),
                   0);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, SP_ERR_CANCELED);
  /* Still in the outbox: the next term proposes it. */
  assert_outbox(&t, F1, 1);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0), 0);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, NULL), 1);
  assert_outbox(&t, F1, 0);
  tc_free(&t);
}

/* ---- refusal ---- */

static int admitted;

/* Refuses every entry whose version is 666. */
static int refuse_666(sp_handler *h, const sp_uuid *proposer,
                      const sp_entry *e, sp_admission *out, void *ud) {
  (void)h;
  (void)proposer;
  (void)ud;
  admitted++;
  if (e->version == 666) {
    out->decision = SP_ADMIT_REFUSE;
    out->code = SP_ERR_READ_ONLY;
    out->message = "not that one";
  }
  return 0;
}

static void test_refused(void **state) {
  tc t;
  wait_res r = {0};
  uint64_t bad, good;
  sp_seq seq = 0;
  size_t i;

  (void)state;
  admitted = 0;
  init(&t, 2, 1 * MS);
  t.dev[LEADER].cfg[LIB].admit = refuse_666;
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(submit(&t, F1, 666, &bad), 0);
  assert_int_equal(submit(&t, F1, 7, &good), 0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], bad,
                                             t.now + 10 * SP_SECONDS,
                                             on_committed, &r, t.now),
                   0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, bad, NULL), 1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, bad, NULL),
                   0);
  for (i = 0; i < noutcomes; ++i) {
    if (outcomes[i].type == SP_EVENT_SUBMISSION_REFUSED) {
      assert_int_equal(outcomes[i].code, SP_ERR_READ_ONLY);
      assert_string_equal(outcomes[i].message, "not that one");
    }
  }
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, SP_ERR_READ_ONLY);
  /* The refusal is durable: gone from the outbox, never in a log. */
  assert_outbox(&t, F1, 0);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, bad, NULL), 0);
  assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], bad, &seq),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], bad,
                                             t.now + SP_SECONDS, on_committed,
                                             &r, t.now),
                   SP_ERR_NOT_FOUND);
  /* The one after it was not held up. */
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, good, NULL),
                   1);
  assert_int_equal(admitted, 2);
  /* Nothing asked again on a later stream. */
  assert_int_equal(sp_mem_net_cut(t.net, &t.dev[F1].id, &t.dev[LEADER].id), 0);
  tc_run_for(&t, 10 * SP_SECONDS);
  assert_int_equal(admitted, 2);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- bad input and back-pressure ---- */

static void test_outbox_full(void **state) {
  tc t;
  uint8_t big[600];
  sp_entry batch[3], e;
  uint64_t o = 0;

  (void)state;
  memset(big, 7, sizeof(big));
  init(&t, 2, 1 * MS);
  t.dev[F1].cfg[LIB].outbox_max_items = 4;
  t.dev[F1].cfg[LIB].outbox_max_bytes = 1000;
  open_all(&t);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1), 0);
  assert_int_equal(submit(&t, F1, 1, &o), 0);
  assert_int_equal(submit(&t, F1, 2, &o), 0);
  batch[0] = make_entry(3, big, 10);
  batch[1] = make_entry(4, big, 10);
  batch[2] = make_entry(5, big, 10);
  /* 2 + 3 > 4 items: nothing of the batch goes in. */
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], batch, 3, &o, t.now),
                   SP_ERR_OUTBOX_FULL);
  assert_outbox(&t, F1, 2);
  /* Over the bytes. */
  e = make_entry(6, big, sizeof(big));
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &o, t.now), 0);
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &o, t.now),
                   SP_ERR_OUTBOX_FULL);
  assert_outbox(&t, F1, 3);
  /* Room again once they are committed. */
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0), 0);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_outbox(&t, F1, 0);
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], batch, 3, &o, t.now),
                   0);
  tc_free(&t);
}

static void test_bad_submissions(void **state) {
  tc t;
  uint8_t *huge;
  size_t huge_len = SP_MAX_FRAME_DEFAULT;
  sp_entry e, two[2];
  uint64_t o = 0;

  (void)state;
  init(&t, 2, 1 * MS);
  open_all(&t);
  huge = calloc(1, huge_len);
  assert_non_null(huge);
  /* Over what one frame can carry: refused at submit, nothing written. */
  e = make_entry(1, huge, huge_len);
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &o, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  /* Just under it is taken. */
  e = make_entry(1, huge, huge_len - 1024);
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &o, t.now), 0);
  assert_outbox(&t, F1, 1);
  /* Another device's name. */
  e = make_entry(2, huge, 1);
  e.device_id = t.dev[LEADER].id;
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &o, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  /* Its own id is fine. */
  e.device_id = t.dev[F1].id;
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], &e, 1, &o, t.now), 0);
  /* A batch with one bad entry writes nothing. */
  two[0] = make_entry(3, huge, 1);
  two[1] = make_entry(4, huge, 1);
  two[1].change_type = (sp_change_type)42;
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], two, 2, &o, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], two, 0, &o, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_submit(NULL, two, 1, &o, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_outbox(&t, F1, 2);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_outbox(&t, F1, 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 2);
  free(huge);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A store without the version-3 group: no writes, syncing as before. */
static void strip_outbox(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)lib;
  if (dev == F1) {
    st->outbox_put = NULL;
    st->outbox_read = NULL;
    st->outbox_remove = NULL;
    st->outbox_stats = NULL;
    st->outbox_anchor = NULL;
  }
}

static void test_store_without_outbox(void **state) {
  tc t;
  sp_outbox_status os;
  sp_seq seq;
  uint64_t o;

  (void)state;
  init(&t, 2, 1 * MS);
  t.store_hook = strip_outbox;
  open_all(&t);
  tc_append(&t, LIB, 10, 10);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(submit(&t, F1, 1, &o), SP_ERR_NOT_SUPPORTED);
  assert_int_equal(sp_handler_outbox_status(t.dev[F1].h[LIB], &os),
                   SP_ERR_NOT_SUPPORTED);
  assert_int_equal(sp_handler_submission(t.dev[F1].h[LIB], 1, &seq),
                   SP_ERR_NOT_SUPPORTED);
  /* It never said it could write, so nothing new went either way. */
  assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_PROPOSE], 0);
  assert_int_equal(t.dev[LEADER].sent.msgs[SP_MSG_PROPOSE_RESULT], 0);
  tc_free(&t);
}

/* ---- pipelining ---- */

static long max_in_flight;
static uint64_t max_in_flight_bytes_seen;

static int watch_window(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  sp_outbox_status st;

  (void)d;
  (void)v;
  if (t->dev[F1].h[LIB] &&
      sp_handler_outbox_status(t->dev[F1].h[LIB], &st) == 0 &&
      (long)st.in_flight > max_in_flight) {
    max_in_flight = (long)st.in_flight;
  }
  return 0;
}

/* Open the cluster, submit `n` entries of `len` payload bytes on F1
 * with watch_window on, and check that all of them commit. */
static void window_run(tc *t, int n, const uint8_t *payload, size_t len) {
  sp_entry batch[100];
  uint64_t first;
  int i;

  assert_true(n <= 100);
  open_all(t);
  tc_run_for(t, SP_SECONDS);
  for (i = 0; i < n; ++i) {
    batch[i] = make_entry((uint32_t)i, payload, len);
  }
  t->fault = watch_window;
  assert_int_equal(
      sp_handler_submit(t->dev[F1].h[LIB], batch, (size_t)n, &first, t->now),
      0);
  tc_run_for(t, 30 * SP_SECONDS);
  assert_outbox(t, F1, 0);
  assert_int_equal(t->dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED],
                   (uint64_t)n);
}

static void test_window(void **state) {
  tc t;
  static const uint8_t payload[8] = "payload";

  (void)state;
  max_in_flight = 0;
  max_in_flight_bytes_seen = 0;
  init(&t, 2, 5 * MS);
  t.dev[F1].cfg[LIB].propose_window = 4;
  window_run(&t, 100, payload, sizeof(payload));
  assert_true(max_in_flight >= 2); /* pipelined */
  assert_true(max_in_flight <= 4);
  /* At most 4 a frame: at least 25 frames. */
  assert_true(t.dev[F1].sent.msgs[SP_MSG_PROPOSE] >= 25);
  assert_int_equal(tc_latest(&t, LIB), 100);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_free(&t);
}

/* The byte bound: entries of 1000 bytes, at most 2500 bytes in flight:
 * never more than two at once (one always goes). */
static void test_window_bytes(void **state) {
  tc t;
  static uint8_t payload[1000];

  (void)state;
  max_in_flight = 0;
  init(&t, 2, 5 * MS);
  t.dev[F1].cfg[LIB].propose_max_bytes = 2500;
  window_run(&t, 20, payload, sizeof(payload));
  assert_true(max_in_flight >= 1);
  assert_true(max_in_flight <= 2);
  tc_free(&t);
}

/* ---- exactly once through failures ---- */

/* Type of the first frame a delivery starts with (deliveries here start
 * at frame boundaries: each is one send of whole frames), or -1. */
static int first_type(const sp_mem_delivery *d) {
  sp_decoder *dec;
  sp_msg msg;
  size_t len;
  int type = -1;

  if (d->len < SP_FRAME_HEADER_LEN) {
    return -1;
  }
  len = ((size_t)d->data[0] << 24) | ((size_t)d->data[1] << 16) |
        ((size_t)d->data[2] << 8) | d->data[3];
  if (len + SP_FRAME_HEADER_LEN > d->len || sp_decoder_new(&dec, NULL) != 0) {
    return -1;
  }
  if (sp_decoder_decode(dec, d->data + SP_FRAME_HEADER_LEN, len, &msg) == 0) {
    type = (int)msg.type;
  }
  sp_decoder_del(dec);
  return type;
}

static int results_cut;

/* The first answer to F1 is lost with its connection: the leader has
 * appended, the follower never hears so. */
static int cut_first_result(tc *t, const sp_mem_delivery *d,
                            sp_mem_verdict *v) {
  if (!results_cut && sp_uuid_equal(&d->from, &t->dev[LEADER].id) &&
      sp_uuid_equal(&d->to, &t->dev[F1].id) &&
      first_type(d) == SP_MSG_PROPOSE_RESULT) {
    results_cut = 1;
    v->action = SP_MEM_CUT;
    v->keep = 0;
  }
  return 0;
}

static void test_lost_answer(void **state) {
  tc t;
  uint64_t o;
  long proposes;

  (void)state;
  admitted = 0;
  results_cut = 0;
  init(&t, 2, 2 * MS);
  t.dev[LEADER].cfg[LIB].admit = refuse_666;
  /* The follower fetches in small steps (nothing pushed to it). */
  t.dev[LEADER].cfg[LIB].push_inline = 0;
  t.dev[F1].cfg[LIB].fetch_limit = 10;
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  t.fault = cut_first_result;
  /* The follower proposes while 200 entries it has not fetched yet come
   * before its own; the leader appends it and the answer dies with the
   * connection.  On the next stream the follower's first page comes
   * before its entry: it proposes again, and the leader's dedupe
   * answers without asking its host again. */
  tc_append(&t, LIB, 200, 10);
  assert_int_equal(submit(&t, F1, 1, &o), 0);
  tc_run_for(&t, 20 * MS);
  assert_int_equal(results_cut, 1);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, NULL), 1);
  assert_true(tc_applied(&t, F1, LIB) < 200);
  proposes = t.dev[F1].sent.msgs[SP_MSG_PROPOSE];
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_true(t.dev[F1].sent.msgs[SP_MSG_PROPOSE] > proposes);
  /* Appended once, asked once, committed once. */
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, NULL), 1);
  assert_int_equal(in_log(&t, F1, &t.dev[F1].id, o, NULL), 1);
  assert_int_equal(admitted, 1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, NULL), 1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o, NULL), 0);
  assert_outbox(&t, F1, 0);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The answer and the page are lost; before the follower is back its
 * store is replaced by a copy of the leader's log (a host's full sync),
 * which holds the entry: no apply will retire the item, so the leader's
 * answer to the proposal made again does, and the entry stays once. */
static void test_full_sync_brings_own_entry(void **state) {
  tc t;
  uint64_t o;
  sp_seq where = 0;

  (void)state;
  results_cut = 0;
  init(&t, 2, 2 * MS);
  t.dev[F1].cfg[LIB].reconnect_min = 5 * SP_SECONDS;
  t.dev[F1].cfg[LIB].reconnect_max = 5 * SP_SECONDS;
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  t.fault = cut_first_result;
  assert_int_equal(submit(&t, F1, 1, &o), 0);
  tc_run_for(&t, 20 * MS);
  assert_int_equal(results_cut, 1);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, &where), 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  assert_int_equal(sp_mem_store_copy_from(t.dev[F1].store[LIB],
                                          t.dev[LEADER].store[LIB]),
                   0);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_outbox(&t, F1, 0);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, NULL), 1);
  assert_int_equal(in_log(&t, F1, &t.dev[F1].id, o, NULL), 1);
  assert_true(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, NULL) <= 1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o, NULL), 0);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The answer is lost, and the leader prunes past the entry before the
 * follower is back: it needs a full sync, whose new log holds the entry
 * only in its committed set.  The store retires the item; resync_done
 * reports it committed (below the retained log: sequence 0) and ends the
 * wait; nothing is proposed or appended again. */
static void test_full_sync_committed_pruned(void **state) {
  tc t;
  wait_res wr = {0};
  sp_handler_status hs;
  sp_seq where = 0, latest;
  uint64_t o;
  long proposes;

  (void)state;
  results_cut = 0;
  init(&t, 2, 2 * MS);
  t.dev[F1].cfg[LIB].reconnect_min = 5 * SP_SECONDS;
  t.dev[F1].cfg[LIB].reconnect_max = 5 * SP_SECONDS;
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  t.fault = cut_first_result;
  assert_int_equal(submit(&t, F1, 1, &o), 0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o,
                                             t.now + 100 * SP_SECONDS,
                                             on_committed, &wr, t.now),
                   0);
  tc_run_for(&t, 20 * MS);
  assert_int_equal(results_cut, 1);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, &where), 1);
  assert_int_equal(tc_applied(&t, F1, LIB), 0);
  tc_append(&t, LIB, 20, 10);
  latest = tc_latest(&t, LIB);
  assert_int_equal(sp_mem_store_prune(t.dev[LEADER].store[LIB], where + 5),
                   0);
  tc_run_for(&t, 6 * SP_SECONDS);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &hs), 0);
  assert_true(hs.sync_required);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, NULL),
                   0);
  assert_int_equal(wr.calls, 0);

  assert_int_equal(sp_mem_store_copy_from(t.dev[F1].store[LIB],
                                          t.dev[LEADER].store[LIB]),
                   0);
  assert_int_equal(sp_handler_resync_done(t.dev[F1].h[LIB], t.now), 0);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, &where),
                   1);
  assert_int_equal(where, 0);
  assert_int_equal(wr.calls, 1);
  assert_int_equal(wr.status, 0);
  assert_int_equal(wr.origin, o);
  assert_int_equal(wr.seq, 0);
  assert_outbox(&t, F1, 0);
  proposes = t.dev[F1].sent.msgs[SP_MSG_PROPOSE];
  tc_run_for(&t, 10 * SP_SECONDS);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_latest(&t, LIB), latest);
  assert_int_equal(t.dev[F1].sent.msgs[SP_MSG_PROPOSE], proposes);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o, NULL),
                   1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o, NULL), 0);
  assert_int_equal(wr.calls, 1);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A reinstalled device: the leader's log holds origins 1..3 of its
 * former self, and its new store (not anchored) numbered two offline
 * submissions 1 and 2, with waits on them.  Anchoring renumbers the
 * items to 4 and 5: the waits follow them (the former self's 1 and 2,
 * applied from the leader's log, must not end them). */
static void test_renumbered_waits(void **state) {
  static const uint8_t p[8] = "former";
  tc t;
  wait_res w1 = {0}, w2 = {0};
  sp_seq at4 = 0, at5 = 0;
  uint64_t o1, o2, i;

  (void)state;
  init(&t, 2, 1 * MS);
  for (i = 1; i <= 3; ++i) {
    sp_entry e = make_entry(100 + (uint32_t)i, p, sizeof(p));
    e.device_id = t.dev[F1].id;
    e.origin_seq = i;
    assert_int_equal(sp_mem_store_append(t.dev[LEADER].store[LIB], &e, NULL),
                     0);
  }
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 1), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_int_equal(submit(&t, F1, 1, &o1), 0);
  assert_int_equal(submit(&t, F1, 2, &o2), 0);
  assert_int_equal(o1, 1);
  assert_int_equal(o2, 2);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o1,
                                             t.now + 100 * SP_SECONDS,
                                             on_committed, &w1, t.now),
                   0);
  assert_int_equal(sp_handler_wait_committed(t.dev[F1].h[LIB], o2,
                                             t.now + 100 * SP_SECONDS,
                                             on_committed, &w2, t.now),
                   0);
  assert_int_equal(sp_mem_net_set_partitioned(t.net, &t.dev[F1].id, 0), 0);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_latest(&t, LIB), 5);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, 4, &at4), 1);
  assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, 5, &at5), 1);
  assert_int_equal(at4, 4);
  assert_int_equal(at5, 5);
  assert_int_equal(w1.calls, 1);
  assert_int_equal(w1.status, 0);
  assert_int_equal(w1.origin, 4);
  assert_int_equal(w1.seq, 4);
  assert_int_equal(w2.calls, 1);
  assert_int_equal(w2.status, 0);
  assert_int_equal(w2.origin, 5);
  assert_int_equal(w2.seq, 5);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, 4, NULL),
                   1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, 5, NULL),
                   1);
  assert_outbox(&t, F1, 0);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The follower dies with proposals in flight (some appended, some not,
 * none answered); a new process on the same store finishes the job. */
static void test_follower_crash_in_flight(void **state) {
  tc t;
  sp_entry batch[20];
  static const uint8_t payload[8] = "crashed";
  uint64_t first, o;
  int i;

  (void)state;
  init(&t, 2, 5 * MS);
  t.dev[F1].cfg[LIB].propose_window = 8;
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  for (i = 0; i < 20; ++i) {
    batch[i] = make_entry((uint32_t)i, payload, sizeof(payload));
  }
  assert_int_equal(sp_handler_submit(t.dev[F1].h[LIB], batch, 20, &first,
                                     t.now),
                   0);
  /* Past the first proposals' arrival, before their answers. */
  tc_run_for(&t, 7 * MS);
  assert_true(t.dev[F1].sent.msgs[SP_MSG_PROPOSE] >= 1);
  tc_crash(&t, F1);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_true(tc_latest(&t, LIB) >= 1); /* some were appended */
  assert_true(tc_latest(&t, LIB) < 20);
  assert_int_equal(tc_boot(&t, F1), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_latest(&t, LIB), 20);
  for (o = first; o < first + 20; ++o) {
    assert_int_equal(in_log(&t, LEADER, &t.dev[F1].id, o, NULL), 1);
  }
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_outbox(&t, F1, 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* Two followers and the leader writing at once: one log everywhere,
 * every submission in it once. */
static void test_concurrent_writers(void **state) {
  tc t;
  const int rounds = 30;
  uint64_t firsts[3][30];
  int r, d;
  sp_seq latest;

  (void)state;
  init(&t, 3, 3 * MS);
  t.dev[F1].cfg[LIB].propose_window = 3;
  open_all(&t);
  tc_run_for(&t, SP_SECONDS);
  for (r = 0; r < rounds; ++r) {
    for (d = 0; d < 3; ++d) {
      sp_entry two[2];
      static const uint8_t p[4] = "abc";
      two[0] = make_entry((uint32_t)(r * 10 + d), p, sizeof(p));
      two[1] = make_entry((uint32_t)(r * 10 + d + 1000), p, sizeof(p));
      assert_int_equal(sp_handler_submit(t.dev[d].h[LIB], two, 2,
                                         &firsts[d][r], t.now),
                       0);
    }
    if (r % 5 == 0) {
      tc_append(&t, LIB, 3, 10);
    }
    tc_run_for(&t, (sp_duration)(r % 4) * MS);
  }
  tc_run_for(&t, 30 * SP_SECONDS);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  latest = tc_latest(&t, LIB);
  assert_int_equal(latest, (sp_seq)(rounds * 3 * 2 + 6 * 3));
  for (d = 0; d < 3; ++d) {
    for (r = 0; r < rounds; ++r) {
      int k;
      for (k = 0; k < 2; ++k) {
        uint64_t o = firsts[d][r] + (uint64_t)k;
        assert_int_equal(in_log(&t, LEADER, &t.dev[d].id, o, NULL), 1);
        assert_int_equal(in_log(&t, F1, &t.dev[d].id, o, NULL), 1);
        assert_int_equal(in_log(&t, F2, &t.dev[d].id, o, NULL), 1);
        assert_int_equal(
            outcomes_of(d, SP_EVENT_SUBMISSION_COMMITTED, o, NULL), 1);
      }
    }
  }
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_true(tc_is_prefix(&t, F2, LIB));
  assert_outbox(&t, F1, 0);
  assert_outbox(&t, F2, 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The write path's bounds must be usable; a version-2 config gets the
 * defaults. */
static void test_config(void **state) {
  tc t;
  int i;

  (void)state;
  init(&t, 2, 1 * MS);
  for (i = 0; i < 5; ++i) {
    tc_default_cfg(&t, F1, LIB, SP_ROLE_FOLLOWER);
    switch (i) {
    case 0:
      t.dev[F1].cfg[LIB].propose_window = 0;
      break;
    case 4:
      /* Over what a leader holds answers for. */
      t.dev[F1].cfg[LIB].propose_window = SP_MAX_PROPOSE_ENTRIES + 1;
      break;
    case 1:
      t.dev[F1].cfg[LIB].propose_max_bytes = 0;
      break;
    case 2:
      t.dev[F1].cfg[LIB].outbox_max_items = 0;
      break;
    default:
      t.dev[F1].cfg[LIB].outbox_max_bytes = 0;
      break;
    }
    assert_int_equal(tc_open(&t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  }
  tc_default_cfg(&t, F1, LIB, SP_ROLE_FOLLOWER);
  t.dev[F1].cfg[LIB].version = 2;
  t.dev[F1].cfg[LIB].propose_window = 0; /* not read */
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_run_for(&t, SP_SECONDS);
  {
    uint64_t o;
    assert_int_equal(submit(&t, F1, 1, &o), 0);
  }
  tc_run_for(&t, SP_SECONDS);
  assert_outbox(&t, F1, 0);
  assert_int_equal(t.dev[F1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 1);
  tc_free(&t);
}

/* ---- a hand-made leader speaking raw frames ---- */

typedef struct raw {
  sp_node *node;
  sp_mem_store *store;
  sp_handler *h;
  sp_uuid self, leader, lib;
  sp_tstamp now;
  uint64_t stream;
  int open;
  int closed_code;
  /* What the follower sent, and the frames decoded from it. */
  sp_frame_reader *reader;
  sp_decoder *dec;
  long by_type[16];
  int first_type;
  int first_has_features;
  long fetch_with_features;
  long fetch_with_claims;
  uint64_t proposed[64];
  size_t nproposed;
  size_t max_propose; /* the largest Propose body sent */
  /* The msgpack array head (0x90 + elements) of the last Heartbeat and
   * Error sent, and how many carried a claim. */
  int hb_head, err_head;
  long hb_claims, err_claims;
  /* The leader's key (raw_device_key), for a claim the follower holds. */
  sp_identity *lid;
  tc_counts counts;
} raw;

static int raw_device_key(const sp_uuid *dev, uint8_t key[SP_PUBLIC_KEY_LEN],
                          void *ud) {
  raw *r = ud;

  if (!r->lid || !sp_uuid_equal(dev, &r->leader)) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(r->lid, key);
  return 0;
}

static int raw_is_member(const sp_uuid *lib, const sp_uuid *dev, int *m,
                         void *ud) {
  (void)lib;
  (void)dev;
  (void)ud;
  *m = 1;
  return 0;
}

static int raw_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  raw *r = ud;

  (void)lib;
  *leader = r->leader;
  return 0;
}

static int raw_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                       size_t *n, void *ud) {
  raw *r = ud;

  (void)lib;
  *n = 2;
  if (cap >= 2) {
    out[0] = r->self;
    out[1] = r->leader;
  }
  return 0;
}

static int raw_open(const sp_uuid *peer, const sp_uuid *lib, uint64_t *id,
                    void *ud) {
  raw *r = ud;

  (void)peer;
  (void)lib;
  *id = ++r->stream;
  r->open = 1;
  r->closed_code = 0;
  return 0;
}

static sp_ssize raw_send(uint64_t id, const uint8_t *data, size_t len,
                         void *ud) {
  raw *r = ud;
  size_t left = len;

  (void)id;
  while (left > 0) {
    const uint8_t *body;
    size_t blen;
    sp_msg msg;
    sp_ssize n = sp_frame_reader_read(r->reader, data, left, &body, &blen);
    assert_true(n > 0);
    data += n;
    left -= (size_t)n;
    if (!body) {
      continue;
    }
    assert_int_equal(sp_decoder_decode(r->dec, body, blen, &msg), 0);
    if (r->first_type < 0) {
      r->first_type = (int)msg.type;
      r->first_has_features =
          msg.type == SP_MSG_HEARTBEAT && msg.u.heartbeat.has_features;
    }
    r->by_type[msg.type]++;
    if (msg.type == SP_MSG_HEARTBEAT) {
      r->hb_head = body[0];
      r->hb_claims += msg.u.heartbeat.has_claim;
    } else if (msg.type == SP_MSG_ERROR) {
      r->err_head = body[0];
      r->err_claims += msg.u.error.has_claim;
    }
    if (msg.type == SP_MSG_FETCH_ENTRIES &&
        msg.u.fetch_entries.has_features &&
        (msg.u.fetch_entries.features & SP_FEATURE_WRITES)) {
      r->fetch_with_features++;
    }
    if (msg.type == SP_MSG_FETCH_ENTRIES &&
        msg.u.fetch_entries.has_features &&
        (msg.u.fetch_entries.features & SP_FEATURE_CLAIMS)) {
      r->fetch_with_claims++;
    }
    if (msg.type == SP_MSG_PROPOSE) {
      size_t i;
      if (blen > r->max_propose) {
        r->max_propose = blen;
      }
      for (i = 0; i < msg.u.propose.entry_count && r->nproposed < 64; ++i) {
        assert_true(sp_uuid_equal(&msg.u.propose.entries[i].device_id,
                                  &r->self));
        r->proposed[r->nproposed++] = msg.u.propose.entries[i].origin_seq;
      }
    }
  }
  return (sp_ssize)len;
}

static int raw_close(uint64_t id, int code, void *ud) {
  raw *r = ud;

  (void)id;
  r->open = 0;
  r->closed_code = code;
  return 0;
}

static int raw_event(const sp_event *ev, void *ud) {
  raw *r = ud;

  r->counts.ev[ev->type]++;
  if (ev->type == SP_EVENT_ERROR) {
    r->counts.last_error = ev->error_code;
  }
  record(NULL, F1, ev);
  return 0;
}

/* raw_start's follower store lacks the version-3 group. */
static int raw_no_writes;

/* The next `raw_fail_removes` outbox_remove calls of raw_start's store
 * fail (as a full disk would). */
static unsigned raw_fail_removes;
static int (*raw_real_remove)(uint64_t origin, void *ud);

/* The stack's extent over the outbox_remove calls (how deep the caller
 * was each time). */
static uintptr_t raw_stack_lo, raw_stack_hi;

static int raw_outbox_remove(uint64_t origin, void *ud) {
  volatile char mark = 0;
  uintptr_t at = (uintptr_t)&mark;

  if (raw_stack_lo == 0 || at < raw_stack_lo) {
    raw_stack_lo = at;
  }
  if (at > raw_stack_hi) {
    raw_stack_hi = at;
  }
  if (raw_fail_removes > 0) {
    raw_fail_removes--;
    return SP_ERR_STORE;
  }
  return raw_real_remove(origin, ud);
}

static void raw_start(raw *r) {
  sp_node_config ncfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_handler_config cfg;
  sp_store st;

  memset(r, 0, sizeof(*r));
  noutcomes = 0;
  r->now = SP_SECONDS;
  r->first_type = -1;
  r->self.bytes[0] = 0xf1;
  r->leader.bytes[0] = 0x1e;
  r->lib.bytes[0] = 0x11;
  assert_int_equal(sp_frame_reader_new(&r->reader, 0, NULL), 0);
  assert_int_equal(sp_decoder_new(&r->dec, NULL), 0);
  sp_node_config_default(&ncfg);
  ncfg.device_id = r->self;
  reg.user_data = r;
  reg.is_member = raw_is_member;
  reg.leader = raw_leader;
  reg.members = raw_members;
  reg.device_key = raw_device_key;
  tr.user_data = r;
  tr.open_stream = raw_open;
  tr.send = raw_send;
  tr.close_stream = raw_close;
  ev.user_data = r;
  ev.on_event = raw_event;
  assert_int_equal(sp_node_new(&r->node, &ncfg, &reg, &ev, &tr, NULL), 0);
  assert_int_equal(sp_mem_store_new(&r->store, NULL), 0);
  sp_mem_store_get_vtable(r->store, &st);
  if (raw_no_writes) {
    st.outbox_anchor = NULL;
  }
  raw_fail_removes = 0;
  raw_stack_lo = raw_stack_hi = 0;
  raw_real_remove = st.outbox_remove;
  st.outbox_remove = raw_outbox_remove;
  sp_handler_config_default(&cfg);
  cfg.library_id = r->lib;
  cfg.role = SP_ROLE_FOLLOWER;
  assert_int_equal(sp_handler_new(&r->h, r->node, &cfg, &st, SP_SECONDS), 0);
  assert_true(r->open);
}

static void raw_free(raw *r) {
  sp_identity_del(r->lid);
  sp_handler_del(r->h);
  sp_node_del(r->node);
  sp_mem_store_del(r->store);
  sp_frame_reader_del(r->reader);
  sp_decoder_del(r->dec);
}

/* Hand the follower one frame from the leader. */
static void raw_deliver(raw *r, sp_msg *msg) {
  uint8_t buf[4096];
  size_t n;

  msg->library_id = r->lib;
  msg->epoch = 1;
  assert_int_equal(sp_msg_encode(msg, buf, sizeof(buf), &n), 0);
  assert_int_equal(
      sp_node_stream_data(r->node, r->stream, &r->leader, buf, n, r->now), 0);
}

/* The leader's hello, with or without features, then an empty page (the
 * answer to the follower's resume fetch). */
static void raw_greet(raw *r, int features) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.has_features = features;
  m.u.heartbeat.features = features ? SP_FEATURES_SUPPORTED : 0;
  raw_deliver(r, &m);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ENTRIES_RESPONSE;
  raw_deliver(r, &m);
}

static void raw_submit(raw *r, uint32_t tag, uint64_t *origin) {
  static const uint8_t p[4] = "raw";
  sp_entry e = make_entry(tag, p, sizeof(p));

  assert_int_equal(sp_handler_submit(r->h, &e, 1, origin, r->now), 0);
}

/* A leader that speaks only the seed's messages never gets a Propose,
 * though the follower advertised and has items waiting. */
static void test_seed_only_leader(void **state) {
  raw r;
  uint64_t o;
  sp_outbox_status st;

  (void)state;
  raw_start(&r);
  assert_int_equal(r.first_type, SP_MSG_HEARTBEAT);
  assert_true(r.first_has_features);
  raw_submit(&r, 1, &o);
  raw_greet(&r, 0);
  raw_submit(&r, 2, &o);
  assert_true(r.by_type[SP_MSG_FETCH_ENTRIES] >= 1);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 0);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 2);
  assert_int_equal(st.leader_accepts, 0);
  assert_true(r.open);
  raw_free(&r);
}

/* A follower that holds a leadership claim (its leader sent one on an
 * earlier stream; the leader then came back as a build that speaks only
 * the seed's messages): its features Heartbeat has 9 elements (features,
 * origin_high, max_frame 0, the claim) and its Errors 6 (the claim);
 * nothing else of it is new.  A seed-only leader skips the extra
 * elements. */
static void raw_reconnect(raw *r);

static void test_seed_only_leader_claim(void **state) {
  raw r;
  sp_msg m;
  sp_leader_claim held;
  long fetches;

  (void)state;
  raw_start(&r);
  assert_int_equal(sp_identity_generate(&r.lid, &r.leader, NULL), 0);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  m.u.heartbeat.has_claim = 1;
  assert_int_equal(
      sp_leader_claim_sign(&m.u.heartbeat.claim, r.lid, &r.lib, 1), 0);
  raw_deliver(&r, &m);
  assert_int_equal(sp_handler_leader_claim(r.h, &held), 0);
  assert_true(sp_uuid_equal(&held.leader, &r.leader));

  /* The new stream, to the seed-only leader. */
  r.hb_claims = 0;
  r.by_type[SP_MSG_HEARTBEAT] = 0;
  r.by_type[SP_MSG_FETCH_ENTRIES] = 0;
  raw_reconnect(&r);
  assert_int_equal(r.by_type[SP_MSG_HEARTBEAT], 1);
  assert_int_equal(r.hb_head, 0x99);
  assert_int_equal(r.hb_claims, 1);
  fetches = r.by_type[SP_MSG_FETCH_ENTRIES];
  assert_true(fetches >= 1);
  /* The seed leader's hello and an empty page: no answer to either is
   * new; then a frame it may not send is refused with the claim. */
  raw_greet(&r, 0);
  assert_int_equal(r.by_type[SP_MSG_HEARTBEAT], 1);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 0);
  assert_int_equal(r.by_type[SP_MSG_ERROR], 0);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  raw_deliver(&r, &m);
  assert_int_equal(r.by_type[SP_MSG_ERROR], 1);
  assert_int_equal(r.err_head, 0x96);
  assert_int_equal(r.err_claims, 1);
  assert_int_equal(r.counts.last_error, SP_ERR_WRONG_ROLE);
  raw_free(&r);
}

/* Against a leader that negotiates: proposals only after the first page;
 * answers matched in order; a refusal is durable; an answer out of order
 * ends the stream. */
static void test_raw_results(void **state) {
  raw r;
  uint64_t o1, o2, o3;
  sp_propose_result res[2];
  sp_outbox_status st;
  sp_msg m;

  (void)state;
  raw_start(&r);
  raw_submit(&r, 1, &o1);
  raw_submit(&r, 2, &o2);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 0);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  raw_deliver(&r, &m);
  /* Negotiated, but no page yet: nothing proposed. */
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 0);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ENTRIES_RESPONSE;
  raw_deliver(&r, &m);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 1);
  assert_int_equal(r.nproposed, 2);
  assert_int_equal(r.proposed[0], o1);
  assert_int_equal(r.proposed[1], o2);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.in_flight, 2);
  assert_int_equal(st.leader_accepts, 1);

  /* o1 refused, o2 appended (it stays until its page is applied). */
  memset(res, 0, sizeof(res));
  res[0].origin_seq = o1;
  res[0].code = SP_ERR_REFUSED;
  res[0].message = "no";
  res[0].message_len = 2;
  res[1].origin_seq = o2;
  res[1].sequence = 1;
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_PROPOSE_RESULT;
  m.u.propose_result.results = res;
  m.u.propose_result.result_count = 2;
  raw_deliver(&r, &m);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o1, NULL), 1);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 1);
  assert_int_equal(st.in_flight, 0);
  assert_true(r.open);

  /* An answer for something never proposed on this stream. */
  raw_submit(&r, 3, &o3);
  assert_int_equal(r.proposed[r.nproposed - 1], o3);
  res[0].origin_seq = o3 + 5;
  res[0].code = 0;
  res[0].sequence = 2;
  m.u.propose_result.result_count = 1;
  raw_deliver(&r, &m);
  assert_false(r.open);
  assert_int_equal(r.closed_code, SP_ERR_UNEXPECTED);
  /* Nothing was lost by it: both still wait in the outbox. */
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 2);
  raw_free(&r);
}

/* The stream dies and the follower dials again (a new stream). */
static void raw_reconnect(raw *r) {
  uint64_t old = r->stream;

  if (r->open) {
    assert_int_equal(sp_node_stream_closed(r->node, r->stream, &r->leader,
                                           SP_ERR_CONNECTION_LOST, r->now),
                     0);
  }
  r->open = 0;
  r->now += 120 * SP_SECONDS;
  assert_int_equal(sp_node_handle_expiry(r->node, r->now), 0);
  assert_true(r->open);
  assert_true(r->stream > old);
}

/* A page of `n` entries of the leader after `since` (chained from
 * `prev`, updated), through since + n, has_more as given. */
static void raw_page(raw *r, sp_seq since, int n, uint8_t *prev,
                     int has_more) {
  static const uint8_t p[4] = "raw";
  sp_entry e[8];
  sp_msg m;
  int i;

  assert_true(n <= 8);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ENTRIES_RESPONSE;
  for (i = 0; i < n; ++i) {
    e[i] = make_entry(200 + (uint32_t)i, p, sizeof(p));
    e[i].sequence = since + 1 + (sp_seq)i;
    e[i].device_id = r->leader;
    assert_int_equal(sp_chain_next(prev, &e[i], prev), 0);
  }
  m.u.entries_response.since_sequence = since;
  m.u.entries_response.through_sequence = since + (sp_seq)n;
  m.u.entries_response.has_more = has_more;
  m.u.entries_response.leader_latest =
      since + (sp_seq)n + (has_more ? 1000000 : 0);
  m.u.entries_response.entries = e;
  m.u.entries_response.entry_count = (size_t)n;
  if (n > 0) {
    m.u.entries_response.last_hash_len = SP_HASH_LEN;
    memcpy(m.u.entries_response.last_hash, prev, SP_HASH_LEN);
  }
  raw_deliver(r, &m);
}

/* Every FetchEntries carries the follower's features (element 6), on
 * every stream, whether or not the leader answered: the leader knows
 * them before it serves any page.  A store without the outbox advertises
 * no writes (only claims, which every handler reads). */
static void test_raw_fetch_features(void **state) {
  uint8_t head[SP_HASH_LEN] = {0};
  sp_handler_status hs;
  raw r;
  int pass;

  (void)state;
  for (pass = 0; pass < 2; ++pass) {
    raw_no_writes = pass;
    raw_start(&r);
    /* The leader never answers the features; pages with more to come
     * make the follower fetch again. */
    raw_page(&r, 0, 2, head, 1);
    raw_page(&r, 2, 2, head, 1);
    raw_reconnect(&r);
    raw_page(&r, 4, 2, head, 0);
    assert_int_equal(sp_handler_get_status(r.h, &hs), 0);
    assert_int_equal(hs.sequence, 6);
    assert_true(r.open);
    assert_true(r.by_type[SP_MSG_FETCH_ENTRIES] >= 3);
    assert_int_equal(r.fetch_with_features,
                     pass ? 0 : r.by_type[SP_MSG_FETCH_ENTRIES]);
    assert_int_equal(r.fetch_with_claims, r.by_type[SP_MSG_FETCH_ENTRIES]);
    raw_free(&r);
    memset(head, 0, sizeof(head));
  }
  raw_no_writes = 0;
}

/* A page of the leader after `since` holding our own submissions
 * `origins` (device_id ours, in order), chained from `prev` (updated). */
static void raw_page_own(raw *r, sp_seq since, const uint64_t *origins,
                         int n, uint8_t *prev) {
  static const uint8_t p[4] = "raw";
  sp_entry e[8];
  sp_msg m;
  int i;

  assert_true(n > 0 && n <= 8);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ENTRIES_RESPONSE;
  for (i = 0; i < n; ++i) {
    e[i] = make_entry(300 + (uint32_t)i, p, sizeof(p));
    e[i].sequence = since + 1 + (sp_seq)i;
    e[i].device_id = r->self;
    e[i].origin_seq = origins[i];
    assert_int_equal(sp_chain_next(prev, &e[i], prev), 0);
  }
  m.u.entries_response.since_sequence = since;
  m.u.entries_response.through_sequence = since + (sp_seq)n;
  m.u.entries_response.leader_latest = since + (sp_seq)n;
  m.u.entries_response.entries = e;
  m.u.entries_response.entry_count = (size_t)n;
  m.u.entries_response.last_hash_len = SP_HASH_LEN;
  memcpy(m.u.entries_response.last_hash, prev, SP_HASH_LEN);
  m.with_origin = 1; /* the stream is negotiated */
  raw_deliver(r, &m);
}

static void raw_features(raw *r) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  raw_deliver(r, &m);
}

/* Answered "appended" at sequence 0 (below the leader's retained log) or
 * at or below where the follower stands, for submissions our own log
 * does not hold: the answer speaks for the leader's history, not ours (a
 * full sync from a history without them would lose the writes), so the
 * items stay in the outbox, out of flight, and nothing is reported; the
 * next stream proposes them again, and the page that brings them into
 * our log commits them, once.  An answer past where the follower stands
 * leaves the item for the page to come. */
static void test_raw_accepted_below(void **state) {
  uint8_t head[SP_HASH_LEN] = {0};
  sp_propose_result res[3];
  sp_outbox_status st;
  wait_res w1 = {0}, w2 = {0}, w3 = {0};
  uint64_t o1, o2, o3, own[2];
  sp_seq seq = 1;
  raw r;
  sp_msg m;

  (void)state;
  raw_start(&r);
  raw_submit(&r, 1, &o1);
  raw_submit(&r, 2, &o2);
  raw_submit(&r, 3, &o3);
  assert_int_equal(sp_handler_wait_committed(r.h, o1, r.now + 600 * SP_SECONDS,
                                             on_committed, &w1, r.now),
                   0);
  assert_int_equal(sp_handler_wait_committed(r.h, o2, r.now + 600 * SP_SECONDS,
                                             on_committed, &w2, r.now),
                   0);
  assert_int_equal(sp_handler_wait_committed(r.h, o3, r.now + 600 * SP_SECONDS,
                                             on_committed, &w3, r.now),
                   0);
  raw_features(&r);
  raw_page(&r, 0, 4, head, 0);
  assert_int_equal(r.nproposed, 3);

  memset(res, 0, sizeof(res));
  res[0].origin_seq = o1; /* sequence 0: pruned at the leader */
  res[1].origin_seq = o2;
  res[1].sequence = 3; /* at or below our 4 */
  res[2].origin_seq = o3;
  res[2].sequence = 9; /* past us: the page will bring it */
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_PROPOSE_RESULT;
  m.u.propose_result.results = res;
  m.u.propose_result.result_count = 3;
  raw_deliver(&r, &m);
  assert_true(r.open);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o1, NULL),
                   0);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o2, NULL),
                   0);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o3, NULL),
                   0);
  assert_int_equal(w1.calls + w2.calls + w3.calls, 0);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 3);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(sp_handler_submission(r.h, o1, &seq), SP_ERR_NOT_FOUND);

  /* A new stream: the page bringing o1 and o2 into our log commits them
   * (once), and only o3 is proposed again. */
  raw_reconnect(&r);
  raw_features(&r);
  own[0] = o1;
  own[1] = o2;
  raw_page_own(&r, 4, own, 2, head);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o1, &seq),
                   1);
  assert_int_equal(seq, 5);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o2, &seq),
                   1);
  assert_int_equal(seq, 6);
  assert_int_equal(w1.calls, 1);
  assert_int_equal(w1.status, 0);
  assert_int_equal(w1.seq, 5);
  assert_int_equal(w2.calls, 1);
  assert_int_equal(w2.seq, 6);
  assert_int_equal(w3.calls, 0);
  assert_int_equal(r.nproposed, 4);
  assert_int_equal(r.proposed[3], o3);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 1);
  raw_free(&r);
}

/* The leader's feature Heartbeat says it accepts frames of at most
 * `max_frame` bytes. */
static void raw_features_max(raw *r, uint64_t max_frame) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  m.u.heartbeat.max_frame = max_frame;
  raw_deliver(r, &m);
}

/* A leader that accepts smaller frames than we do: Propose frames are
 * sized for it (it would refuse a larger one, and the same frame would go
 * again on every stream), and an item that cannot fit its frame at all is
 * refused here, as the leader would. */
static void test_raw_leader_max_frame(void **state) {
  static uint8_t data[3000];
  sp_outbox_status st;
  uint64_t o[4];
  sp_msg m;
  raw r;
  int i;

  (void)state;
  memset(data, 'd', sizeof(data));
  raw_start(&r);
  for (i = 0; i < 4; ++i) {
    sp_entry e = make_entry(10 + (uint32_t)i, data, i == 3 ? 3000 : 900);
    assert_int_equal(sp_handler_submit(r.h, &e, 1, &o[i], r.now), 0);
  }
  raw_features_max(&r, 2048);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ENTRIES_RESPONSE;
  raw_deliver(&r, &m);
  assert_true(r.open);
  assert_int_equal(r.nproposed, 3);
  assert_true(r.by_type[SP_MSG_PROPOSE] >= 2);
  assert_true(r.max_propose > 0 && r.max_propose <= 2048);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o[3], NULL),
                   1);
  for (i = 0; i < 3; ++i) {
    assert_int_equal(r.proposed[i], o[i]);
    assert_int_equal(
        outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o[i], NULL), 0);
  }
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 3);
  raw_free(&r);
}

/* A long run of items that cannot go is refused one after the other
 * without the stack growing with the run (a loop, not a recursion). */
static void test_raw_unsendable_run(void **state) {
  static uint8_t data[1500];
  sp_outbox_status st;
  uint64_t first = 0, o;
  sp_msg m;
  raw r;
  int i;

  (void)state;
  memset(data, 'u', sizeof(data));
  raw_start(&r);
  for (i = 0; i < 2000; ++i) {
    sp_entry e = make_entry((uint32_t)i, data, sizeof(data));
    assert_int_equal(sp_handler_submit(r.h, &e, 1, &o, r.now), 0);
    if (i == 0) {
      first = o;
    }
  }
  raw_features_max(&r, 1024);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ENTRIES_RESPONSE;
  raw_deliver(&r, &m);
  assert_true(r.open);
  assert_int_equal(r.nproposed, 0);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, first, NULL),
                   1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o, NULL), 1);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 0);
  /* One level per item would be 2000 frames of sp_writer_propose_frame:
   * hundreds of KiB. */
  assert_true(raw_stack_hi - raw_stack_lo < 16 * 1024);
  raw_free(&r);
}

/* Answer the oldest in-flight proposals: `n` origins, all with `code`
 * (sequence `seq` when appended). */
static void raw_answer(raw *r, const uint64_t *origins, size_t n, int code,
                       sp_seq seq) {
  sp_propose_result res[8];
  sp_msg m;
  size_t i;

  assert_true(n <= 8);
  memset(res, 0, sizeof(res));
  for (i = 0; i < n; ++i) {
    res[i].origin_seq = origins[i];
    res[i].code = code;
    res[i].sequence = code == 0 ? seq : 0;
    if (code != 0) {
      res[i].message = "no";
      res[i].message_len = 2;
    }
  }
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_PROPOSE_RESULT;
  m.u.propose_result.results = res;
  m.u.propose_result.result_count = n;
  raw_deliver(r, &m);
}

/* A store failure episode opened by an outbox write (a refusal that could
 * not be recorded) does not keep a caught-up, idle follower from
 * proposing on its next stream: proposing writes nothing, and the
 * backoff already kept it off the leader.  A successful outbox write
 * (the refusal recorded, a submit) ends the episode. */
static void test_raw_propose_after_store_failure(void **state) {
  raw r;
  uint64_t o1, o2, o3;
  sp_outbox_status st;
  long proposes;

  (void)state;
  raw_start(&r);
  raw_greet(&r, 1);
  raw_submit(&r, 1, &o1);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 1);
  raw_fail_removes = 1;
  raw_answer(&r, &o1, 1, SP_ERR_REFUSED, 0);
  assert_false(r.open);
  assert_int_equal(r.closed_code, SP_ERR_STORE);
  assert_int_equal(r.counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o1, NULL), 0);

  /* Past the backoff: a new stream, on which the leader has nothing new
   * (an empty page: caught up, nothing applied, nothing written). */
  raw_reconnect(&r);
  raw_greet(&r, 1);
  assert_true(r.open);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 2);
  assert_int_equal(r.proposed[r.nproposed - 1], o1);
  raw_answer(&r, &o1, 1, SP_ERR_REFUSED, 0);
  assert_true(r.open);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_REFUSED, o1, NULL), 1);
  assert_int_equal(r.counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 0);

  /* Another episode, ended by the host's next submit (a write that
   * works); what was pending meanwhile goes on the next stream. */
  raw_submit(&r, 2, &o2);
  raw_fail_removes = 1;
  raw_answer(&r, &o2, 1, SP_ERR_REFUSED, 0);
  assert_false(r.open);
  assert_int_equal(r.counts.ev[SP_EVENT_STORE_FAILED], 2);
  raw_submit(&r, 3, &o3);
  assert_int_equal(r.counts.ev[SP_EVENT_STORE_RECOVERED], 2);
  proposes = r.by_type[SP_MSG_PROPOSE];
  raw_reconnect(&r);
  raw_greet(&r, 1);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], proposes + 1);
  assert_int_equal(r.proposed[r.nproposed - 2], o2);
  assert_int_equal(r.proposed[r.nproposed - 1], o3);
  assert_int_equal(r.counts.ev[SP_EVENT_STORE_FAILED], 2);
  raw_free(&r);
}

/* A Propose the leader never answers (lost on a stream that lives on:
 * heartbeats still flow) ends the stream after cfg.stall_timeout, by a
 * timer of its own; the next stream proposes everything pending again.
 * Answers that come keep the stream. */
static void test_raw_propose_stall(void **state) {
  uint8_t head[SP_HASH_LEN] = {0};
  sp_duration stall;
  sp_tstamp t1;
  sp_outbox_status st;
  sp_msg hb;
  raw r;
  uint64_t o1, o2, again[2];

  (void)state;
  {
    sp_handler_config cfg; /* raw_start's */
    sp_handler_config_default(&cfg);
    stall = cfg.stall_timeout;
  }
  raw_start(&r);
  memset(&hb, 0, sizeof(hb));
  hb.type = SP_MSG_HEARTBEAT;
  hb.u.heartbeat.role = SP_ROLE_LEADER;
  hb.u.heartbeat.has_features = 1;
  hb.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  raw_greet(&r, 1);

  /* Answered within the timeout: the stream stays, and with nothing in
   * flight no stall is due however long it is quiet. */
  raw_submit(&r, 1, &o1);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 1);
  r.now += stall / 2;
  assert_int_equal(sp_node_handle_expiry(r.node, r.now), 0);
  raw_answer(&r, &o1, 1, 0, 1); /* appended past us: the page will come */
  r.now += stall / 2 + SP_SECONDS;
  raw_deliver(&r, &hb);
  assert_int_equal(sp_node_handle_expiry(r.node, r.now), 0);
  assert_true(r.open);

  /* This one is swallowed: the leader's heartbeats still come. */
  raw_submit(&r, 2, &o2);
  t1 = r.now;
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 2);
  assert_int_equal(r.proposed[r.nproposed - 1], o2);
  r.now = t1 + stall - SP_SECONDS;
  raw_deliver(&r, &hb);
  assert_int_equal(sp_node_handle_expiry(r.node, r.now), 0);
  assert_true(r.open);
  /* A host that calls only when the node says so: the stall is a timer. */
  while (r.open) {
    r.now = sp_node_get_expiry(r.node);
    assert_true(r.now <= t1 + stall);
    assert_int_equal(sp_node_handle_expiry(r.node, r.now), 0);
  }
  assert_int_equal(r.now, t1 + stall);
  assert_int_equal(r.closed_code, SP_ERR_STALLED);

  /* Everything pending goes again, the answered-but-not-applied o1 too;
   * the leader's dedupe answers (here: below its retained log).  Our own
   * log does not hold them: they stay until the page bringing them. */
  raw_reconnect(&r);
  raw_greet(&r, 1);
  assert_int_equal(r.by_type[SP_MSG_PROPOSE], 3);
  assert_int_equal(r.proposed[r.nproposed - 2], o1);
  assert_int_equal(r.proposed[r.nproposed - 1], o2);
  again[0] = o1;
  again[1] = o2;
  raw_answer(&r, again, 2, 0, 0);
  assert_true(r.open);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o1, NULL), 0);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 2);
  assert_int_equal(st.in_flight, 0);
  raw_page_own(&r, 0, again, 2, head);
  assert_true(r.open);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o1, NULL), 1);
  assert_int_equal(outcomes_of(F1, SP_EVENT_SUBMISSION_COMMITTED, o2, NULL), 1);
  assert_int_equal(sp_handler_outbox_status(r.h, &st), 0);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.in_flight, 0);
  raw_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_offline_then_connect),
      cmocka_unit_test(test_leader_opened_stream),
      cmocka_unit_test(test_wait_committed),
      cmocka_unit_test(test_wait_canceled_by_role_change),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_outbox_full),
      cmocka_unit_test(test_bad_submissions),
      cmocka_unit_test(test_store_without_outbox),
      cmocka_unit_test(test_window),
      cmocka_unit_test(test_window_bytes),
      cmocka_unit_test(test_lost_answer),
      cmocka_unit_test(test_full_sync_brings_own_entry),
      cmocka_unit_test(test_full_sync_committed_pruned),
      cmocka_unit_test(test_renumbered_waits),
      cmocka_unit_test(test_follower_crash_in_flight),
      cmocka_unit_test(test_concurrent_writers),
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_seed_only_leader),
      cmocka_unit_test(test_seed_only_leader_claim),
      cmocka_unit_test(test_raw_results),
      cmocka_unit_test(test_raw_fetch_features),
      cmocka_unit_test(test_raw_accepted_below),
      cmocka_unit_test(test_raw_propose_after_store_failure),
      cmocka_unit_test(test_raw_propose_stall),
      cmocka_unit_test(test_raw_leader_max_frame),
      cmocka_unit_test(test_raw_unsendable_run),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
