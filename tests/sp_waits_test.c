/*
 * sp_waits_test.c: sp_handler_wait_acks edge cases, on a leader node driven
 * directly: followers' acknowledgements are injected as frames through
 * sp_node_stream_data, time through sp_node_handle_expiry, so every
 * callback can be tied to the entry point that caused it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/sync_protocol.h"

#define MS SP_MILLISECONDS
#define NF 3 /* followers in the registry */
#define LOG_LEN 10
#define MAX_CALLS 16

typedef struct call {
  sp_seq seq;
  int status;
  size_t acked;
} call;

typedef struct fx {
  sp_uuid self;
  sp_uuid f[NF];
  size_t nmembers; /* self + the first nmembers-1 followers */
  unsigned removed; /* bit i: follower i left the registry */
  int members_fail; /* the registry cannot list members */
  sp_uuid lib;
  sp_mem_store *store;
  sp_node *node;
  sp_handler *h;
  sp_tstamp now;
  uint64_t stream[NF];
  /* wait callbacks, in the order they came */
  call calls[MAX_CALLS];
  int ncalls;
  int fail_wait;              /* wait callbacks return non-zero */
  sp_event_type fail_event;   /* on_event fails for this type (0: none) */
  long events;
  int closes;
  int opens; /* the leader's dials */
  long members_calls; /* registry members() calls */
  /* f[0]'s key, when a test needs its leadership claims to verify. */
  sp_identity *id_f0;
  /* The registry names f[0] the leader (else this node). */
  int f0_leads;
} fx;

/* ---- host ---- */

static int r_device_key(const sp_uuid *device,
                        uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  fx *x = ud;

  if (!x->id_f0 || !sp_uuid_equal(device, &x->f[0])) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(x->id_f0, key);
  return 0;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  fx *x = ud;
  size_t i;

  (void)lib;
  *is_member = sp_uuid_equal(device, &x->self);
  for (i = 0; i + 1 < x->nmembers; ++i) {
    *is_member |=
        !(x->removed >> i & 1u) && sp_uuid_equal(device, &x->f[i]);
  }
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  fx *x = ud;

  (void)lib;
  *leader = x->f0_leads ? x->f[0] : x->self;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  fx *x = ud;
  size_t i;

  size_t n = 0;

  (void)lib;
  x->members_calls++;
  if (x->members_fail) {
    return SP_ERR_IO;
  }
  for (i = 0; i < x->nmembers; ++i) {
    if (i > 0 && (x->removed >> (i - 1) & 1u)) {
      continue;
    }
    if (n < cap) {
      out[n] = i == 0 ? x->self : x->f[i - 1];
    }
    ++n;
  }
  *count = n;
  return 0;
}

static int t_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  fx *x = ud;

  (void)peer;
  (void)library;
  (void)stream_id;
  x->opens++;
  return SP_ERR_UNREACHABLE; /* the leader's dials go nowhere */
}

static sp_ssize t_send(uint64_t stream_id, const uint8_t *data, size_t len,
                       void *ud) {
  (void)stream_id;
  (void)data;
  (void)ud;
  return (sp_ssize)len;
}

static int t_close(uint64_t stream_id, int error_code, void *ud) {
  fx *x = ud;

  (void)stream_id;
  (void)error_code;
  x->closes++;
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  fx *x = ud;

  x->events++;
  return x->fail_event && ev->type == x->fail_event ? -1 : 0;
}

/* user_data of every wait: the fixture. */
static int on_wait(sp_handler *h, sp_seq seq, int status, size_t acked,
                   void *ud) {
  fx *x = ud;
  call *c;

  assert_ptr_equal(h, x->h);
  assert_true(x->ncalls < MAX_CALLS);
  c = &x->calls[x->ncalls++];
  c->seq = seq;
  c->status = status;
  c->acked = acked;
  return x->fail_wait ? 1 : 0;
}

/* Fixtures are static and tracked while alive, so that one left behind by
 * a failed assertion is still freed by the group teardown. */
static fx *live_fx[16];

static void fx_track(fx *x, int on) {
  size_t i;

  for (i = 0; i < sizeof(live_fx) / sizeof(live_fx[0]); ++i) {
    if (on ? live_fx[i] == NULL : live_fx[i] == x) {
      live_fx[i] = on ? x : NULL;
      return;
    }
  }
  assert_false(on);
}

/* Store vtable version fx_init hands over (0: the store's own). */
static unsigned fx_store_version;

static void fx_init(fx *x, size_t followers) {
  sp_node_config cfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_handler_config hc;
  sp_store st;
  size_t i;

  memset(x, 0, sizeof(*x));
  fx_track(x, 1);
  x->self.bytes[0] = 0xa0;
  for (i = 0; i < NF; ++i) {
    x->f[i].bytes[0] = 0xb0;
    x->f[i].bytes[15] = (uint8_t)(i + 1);
    x->stream[i] = 100 + i;
  }
  x->nmembers = 1 + followers;
  x->lib.bytes[0] = 0x11;
  x->now = SP_SECONDS;
  sp_node_config_default(&cfg);
  cfg.device_id = x->self;
  reg.user_data = x;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_device_key;
  ev.user_data = x;
  ev.on_event = on_event;
  tr.user_data = x;
  tr.open_stream = t_open;
  tr.send = t_send;
  tr.close_stream = t_close;
  assert_int_equal(sp_node_new(&x->node, &cfg, &reg, &ev, &tr, NULL), 0);
  assert_int_equal(sp_mem_store_new(&x->store, NULL), 0);
  for (i = 0; i < LOG_LEN; ++i) {
    sp_entry e;
    uint8_t b[8] = {0};
    memset(&e, 0, sizeof(e));
    e.data = b;
    e.data_len = sizeof(b);
    assert_int_equal(sp_mem_store_append(x->store, &e, NULL), 0);
  }
  sp_mem_store_get_vtable(x->store, &st);
  if (fx_store_version) {
    st.version = fx_store_version;
  }
  sp_handler_config_default(&hc);
  hc.library_id = x->lib;
  hc.reconnect_min = 10 * SP_SECONDS; /* dials rarely */
  hc.reconnect_max = 60 * SP_SECONDS;
  hc.heartbeat_interval = 3600 * SP_SECONDS; /* no timeouts in a test */
  assert_int_equal(sp_handler_new(&x->h, x->node, &hc, &st, x->now), 0);
}

static void fx_free(fx *x) {
  fx_track(x, 0);
  sp_node_del(x->node);
  sp_mem_store_del(x->store);
  sp_identity_del(x->id_f0);
}

static int free_leftovers(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(live_fx) / sizeof(live_fx[0]); ++i) {
    if (live_fx[i]) {
      fx_free(live_fx[i]);
    }
  }
  return 0;
}

/* Follower i acknowledges `seq`; returns what sp_node_stream_data says. */
static int ack(fx *x, int i, sp_seq seq) {
  sp_msg m;
  uint8_t buf[128];
  size_t n;
  int rv;

  if (x->stream[i] < 1000) {
    x->stream[i] += 1000; /* first ack: open the stream */
    assert_int_equal(
        sp_node_stream_opened(x->node, x->stream[i], &x->f[i], x->now), 0);
  }
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ACKNOWLEDGE;
  m.library_id = x->lib;
  m.epoch = 1;
  m.u.acknowledge.up_to_sequence = seq;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &n), 0);
  rv = sp_node_stream_data(x->node, x->stream[i], &x->f[i], buf, n, x->now);
  return rv;
}

static int expire(fx *x, sp_tstamp t) {
  x->now = t;
  return sp_node_handle_expiry(x->node, t);
}

/* ---- tests ---- */

static void test_already_satisfied(void **state) {
  static fx x;

  (void)state;
  fx_init(&x, 2);
  assert_int_equal(ack(&x, 0, 5), 0);
  assert_int_equal(ack(&x, 1, 7), 0);
  /* Every follower (0 = all the registry lists), one, two: answered at
   * once, with no callback. */
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 0, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 1);
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 2, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 1);
  assert_int_equal(sp_handler_wait_acks(x.h, 7, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 1);
  assert_int_equal(sp_handler_wait_acks(x.h, 1, 0, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 1);
  /* Not yet: 7 by two. */
  assert_int_equal(sp_handler_wait_acks(x.h, 7, 2, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  assert_int_equal(x.ncalls, 0);
  assert_int_equal(ack(&x, 0, 7), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].seq, 7);
  assert_int_equal(x.calls[0].status, 0);
  assert_int_equal(x.calls[0].acked, 2);
  /* Nothing is left armed. */
  assert_int_equal(expire(&x, x.now + 2 * SP_SECONDS), 0);
  assert_int_equal(x.ncalls, 1);
  fx_free(&x);

  /* A library with no follower at all: "every follower" is nobody. */
  fx_init(&x, 0);
  assert_int_equal(sp_handler_wait_acks(x.h, LOG_LEN, 0, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 1);
  /* ...but one follower can never come. */
  assert_int_equal(sp_handler_wait_acks(x.h, LOG_LEN, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  assert_int_equal(expire(&x, x.now + SP_SECONDS), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].status, SP_ERR_DEADLINE);
  assert_int_equal(x.calls[0].acked, 0);
  fx_free(&x);
}

/* More followers asked for than exist: only the deadline ends it. */
static void test_more_than_followers(void **state) {
  static fx x;
  sp_tstamp deadline;

  (void)state;
  fx_init(&x, 2);
  deadline = x.now + 5 * SP_SECONDS;
  assert_int_equal(sp_handler_wait_acks(x.h, 4, 3, deadline, on_wait, &x,
                                        x.now), 0);
  assert_true(sp_node_get_expiry(x.node) <= deadline);
  assert_int_equal(ack(&x, 0, LOG_LEN), 0);
  assert_int_equal(ack(&x, 1, LOG_LEN), 0);
  assert_int_equal(x.ncalls, 0);
  assert_int_equal(expire(&x, deadline - 1), 0);
  assert_int_equal(x.ncalls, 0);
  assert_int_equal(expire(&x, deadline), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].seq, 4);
  assert_int_equal(x.calls[0].status, SP_ERR_DEADLINE);
  assert_int_equal(x.calls[0].acked, 2);
  assert_int_equal(expire(&x, deadline + 10 * SP_SECONDS), 0);
  assert_int_equal(x.ncalls, 1);
  fx_free(&x);
}

/* Waits on different sequences complete in order as acks arrive. */
static void test_order(void **state) {
  static fx x;
  sp_tstamp dl;

  (void)state;
  fx_init(&x, 3);
  dl = x.now + 60 * SP_SECONDS;
  /* Registered out of order. */
  assert_int_equal(sp_handler_wait_acks(x.h, 8, 2, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(sp_handler_wait_acks(x.h, 3, 2, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 2, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(sp_handler_wait_acks(x.h, 9, 0, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(ack(&x, 0, 5), 0);
  assert_int_equal(x.ncalls, 0);
  assert_int_equal(ack(&x, 1, 3), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].seq, 3);
  assert_int_equal(ack(&x, 1, 8), 0);
  assert_int_equal(x.ncalls, 2);
  assert_int_equal(x.calls[1].seq, 5);
  assert_int_equal(ack(&x, 0, 8), 0);
  assert_int_equal(x.ncalls, 3);
  assert_int_equal(x.calls[2].seq, 8);
  assert_int_equal(x.calls[2].acked, 2);
  /* "Every follower" needs the third one too. */
  assert_int_equal(ack(&x, 0, 9), 0);
  assert_int_equal(ack(&x, 1, 9), 0);
  assert_int_equal(x.ncalls, 3);
  assert_int_equal(ack(&x, 2, 9), 0);
  assert_int_equal(x.ncalls, 4);
  assert_int_equal(x.calls[3].seq, 9);
  assert_int_equal(x.calls[3].acked, 3);
  for (int i = 0; i < 4; ++i) {
    assert_int_equal(x.calls[i].status, 0);
  }
  fx_free(&x);
}

/* Waits satisfied by one and the same ack complete in the order of their
 * sequences (here also the order they were registered in). */
static void test_order_same_ack(void **state) {
  static fx x;
  sp_tstamp dl;

  (void)state;
  fx_init(&x, 1);
  dl = x.now + 60 * SP_SECONDS;
  assert_int_equal(sp_handler_wait_acks(x.h, 2, 1, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(sp_handler_wait_acks(x.h, 4, 1, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(sp_handler_wait_acks(x.h, 6, 1, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(ack(&x, 0, 6), 0);
  assert_int_equal(x.ncalls, 3);
  assert_int_equal(x.calls[0].seq, 2);
  assert_int_equal(x.calls[1].seq, 4);
  assert_int_equal(x.calls[2].seq, 6);
  fx_free(&x);
}

/* Several deadlines: each wait ends at its own, earliest first. */
static void test_deadlines(void **state) {
  static fx x;
  sp_tstamp t0;

  (void)state;
  fx_init(&x, 2);
  t0 = x.now;
  assert_int_equal(sp_handler_wait_acks(x.h, 9, 2, t0 + 3 * SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 8, 2, t0 + 1 * SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 7, 2, t0 + 2 * SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  /* A deadline already past ends at the next expiry. */
  assert_int_equal(sp_handler_wait_acks(x.h, 6, 2, t0 - 1, on_wait, &x,
                                        x.now), 0);
  assert_true(sp_node_get_expiry(x.node) <= t0);
  assert_int_equal(ack(&x, 0, 9), 0);
  assert_int_equal(expire(&x, t0), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].seq, 6);
  assert_int_equal(x.calls[0].status, SP_ERR_DEADLINE);
  assert_int_equal(x.calls[0].acked, 1);
  assert_int_equal(expire(&x, t0 + 1 * SP_SECONDS), 0);
  assert_int_equal(x.ncalls, 2);
  assert_int_equal(x.calls[1].seq, 8);
  assert_int_equal(x.calls[1].status, SP_ERR_DEADLINE);
  /* The second follower satisfies the one at 7 before its deadline. */
  assert_int_equal(ack(&x, 1, 7), 0);
  assert_int_equal(x.ncalls, 3);
  assert_int_equal(x.calls[2].seq, 7);
  assert_int_equal(x.calls[2].status, 0);
  assert_int_equal(x.calls[2].acked, 2);
  assert_int_equal(expire(&x, t0 + 3 * SP_SECONDS), 0);
  assert_int_equal(x.ncalls, 4);
  assert_int_equal(x.calls[3].seq, 9);
  assert_int_equal(x.calls[3].status, SP_ERR_DEADLINE);
  assert_int_equal(x.calls[3].acked, 1);
  fx_free(&x);
}

/* Closing the library cancels what is pending. */
static void test_del_cancels(void **state) {
  static fx x;

  (void)state;
  fx_init(&x, 2);
  assert_int_equal(ack(&x, 0, 4), 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 4, 2, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 9, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  sp_handler_del(x.h);
  x.h = NULL;
  assert_int_equal(x.ncalls, 2);
  assert_int_equal(x.calls[0].status, SP_ERR_CANCELED);
  assert_int_equal(x.calls[1].status, SP_ERR_CANCELED);
  assert_true((x.calls[0].seq == 4 && x.calls[0].acked == 1) ||
              (x.calls[1].seq == 4 && x.calls[1].acked == 1));
  assert_true((x.calls[0].seq == 9 && x.calls[0].acked == 0) ||
              (x.calls[1].seq == 9 && x.calls[1].acked == 0));
  /* Nothing fires later. */
  assert_int_equal(expire(&x, x.now + 5 * SP_SECONDS), 0);
  assert_int_equal(x.ncalls, 2);
  fx_free(&x);

  /* Deleting the node cancels as well. */
  fx_init(&x, 2);
  assert_int_equal(sp_handler_wait_acks(x.h, 9, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  sp_node_del(x.node);
  x.node = NULL;
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].status, SP_ERR_CANCELED);
  fx_free(&x);
}

/* A wait callback returning non-zero fails the entry point that ran it. */
static void test_wait_callback_failure(void **state) {
  static fx x;
  int rv;

  (void)state;
  /* Through an ack (sp_node_stream_data). */
  fx_init(&x, 1);
  x.fail_wait = 1;
  assert_int_equal(sp_handler_wait_acks(x.h, 3, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  rv = ack(&x, 0, 3);
  assert_int_equal(rv, SP_ERR_CALLBACK_FAILURE);
  assert_true(sp_err_is_fatal(rv));
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].status, 0);
  fx_free(&x);

  /* Through a deadline (sp_node_handle_expiry). */
  fx_init(&x, 1);
  x.fail_wait = 1;
  assert_int_equal(sp_handler_wait_acks(x.h, 3, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  rv = expire(&x, x.now + SP_SECONDS);
  assert_int_equal(rv, SP_ERR_CALLBACK_FAILURE);
  assert_true(sp_err_is_fatal(rv));
  assert_int_equal(x.calls[0].status, SP_ERR_DEADLINE);
  fx_free(&x);

  /* Only the call that ran the failing callback fails. */
  fx_init(&x, 2);
  x.fail_wait = 1;
  assert_int_equal(sp_handler_wait_acks(x.h, 3, 2, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  assert_int_equal(ack(&x, 0, 3), 0);
  assert_int_equal(ack(&x, 1, 3), SP_ERR_CALLBACK_FAILURE);
  fx_free(&x);
}

/* An event callback returning non-zero fails the entry point likewise. */
static void test_event_callback_failure(void **state) {
  static fx x;
  int rv;

  (void)state;
  fx_init(&x, 1);
  x.fail_event = SP_EVENT_ACK_RECEIVED;
  rv = ack(&x, 0, 3);
  assert_int_equal(rv, SP_ERR_CALLBACK_FAILURE);
  assert_true(sp_err_is_fatal(rv));
  fx_free(&x);

  /* PEER_CONNECTED is emitted on the first frame: same failure. */
  fx_init(&x, 1);
  x.fail_event = SP_EVENT_PEER_CONNECTED;
  assert_int_equal(ack(&x, 0, 3), SP_ERR_CALLBACK_FAILURE);
  fx_free(&x);

  /* PEER_LOST through sp_node_stream_closed. */
  fx_init(&x, 1);
  assert_int_equal(ack(&x, 0, 3), 0);
  x.fail_event = SP_EVENT_PEER_LOST;
  rv = sp_node_stream_closed(x.node, x.stream[0], &x.f[0], 0, x.now);
  assert_int_equal(rv, SP_ERR_CALLBACK_FAILURE);
  fx_free(&x);

  /* An ERROR event for a refused peer, through sp_node_stream_data. */
  fx_init(&x, 1);
  x.fail_event = SP_EVENT_ERROR;
  assert_int_equal(ack(&x, 0, LOG_LEN + 1), SP_ERR_CALLBACK_FAILURE);
  fx_free(&x);
}

static void test_invalid(void **state) {
  static fx x;

  (void)state;
  fx_init(&x, 1);
  assert_int_equal(sp_handler_wait_acks(NULL, 1, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_wait_acks(x.h, 1, 1, x.now + SP_SECONDS, NULL,
                                        &x, x.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(x.ncalls, 0);
  fx_free(&x);
}

/* Only a leader that still leads takes waits. */
static void test_follower_and_stepped_down(void **state) {
  static fx x;
  sp_msg m;
  uint8_t buf[256];
  size_t n;

  (void)state;
  fx_init(&x, 1);
  /* Stepped down: a frame at a higher epoch, proven by f[0]'s claim (the
   * registry names f[0]: with no may_lead, only it may lead). */
  assert_int_equal(sp_identity_generate(&x.id_f0, &x.f[0], NULL), 0);
  x.f0_leads = 1;
  assert_int_equal(sp_handler_wait_acks(x.h, 9, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = x.lib;
  m.epoch = 2;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_CLAIMS;
  m.u.heartbeat.has_claim = 1;
  assert_int_equal(
      sp_leader_claim_sign(&m.u.heartbeat.claim, x.id_f0, &x.lib, 2), 0);
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &n), 0);
  assert_int_equal(
      sp_node_stream_opened(x.node, 7, &x.f[0], x.now), 0);
  assert_int_equal(
      sp_node_stream_data(x.node, 7, &x.f[0], buf, n, x.now), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].status, SP_ERR_CANCELED);
  assert_int_equal(sp_handler_wait_acks(x.h, 9, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now),
                   SP_ERR_INVALID_STATE);
  /* A follower. */
  assert_int_equal(sp_handler_set_role(x.h, SP_ROLE_FOLLOWER, 0, x.now), 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 1, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now),
                   SP_ERR_INVALID_STATE);
  assert_int_equal(x.ncalls, 1);
  fx_free(&x);
}

/* The registry changing: a wait for "every follower" completes when the
 * missing follower leaves the library (rechecked on the next notify). */
static void test_registry_shrinks(void **state) {
  static fx x;

  (void)state;
  fx_init(&x, 2);
  assert_int_equal(ack(&x, 0, 5), 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 0, x.now + 60 * SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  x.nmembers = 2; /* the second follower is removed */
  assert_int_equal(sp_handler_notify_new_entries(x.h, LOG_LEN, LOG_LEN,
                                                 x.now), 0);
  assert_int_equal(x.ncalls, 1);
  assert_int_equal(x.calls[0].status, 0);
  assert_int_equal(x.calls[0].acked, 1);
  fx_free(&x);
}

/* "Every follower" means every follower the registry lists now: acks of
 * a device that left do not stand in for one that joined and has
 * acknowledged nothing. */
static void test_every_follower_counts_members_only(void **state) {
  static fx x;
  sp_tstamp dl;

  (void)state;
  fx_init(&x, 2);
  dl = x.now + 60 * SP_SECONDS;
  assert_int_equal(ack(&x, 0, 5), 0);
  assert_int_equal(ack(&x, 1, 5), 0);
  x.removed = 1u << 1; /* the second follower leaves... */
  x.nmembers = 4;      /* ...and a third joins */
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 0, dl, on_wait, &x, x.now),
                   0);
  /* Two followers asked for: the one that left is not one of them. */
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 2, dl, on_wait, &x, x.now),
                   0);
  assert_int_equal(x.ncalls, 0);
  assert_int_equal(ack(&x, 2, 5), 0);
  assert_int_equal(x.ncalls, 2);
  assert_int_equal(x.calls[0].status, 0);
  assert_int_equal(x.calls[0].acked, 2);
  assert_int_equal(x.calls[1].status, 0);
  assert_int_equal(x.calls[1].acked, 2);
  fx_free(&x);
}

/* A leader's term starts with nothing acknowledged: what followers
 * acknowledged in an earlier term (leader -> follower -> leader) neither
 * satisfies waits nor raises the retention floor until they acknowledge
 * again in this one. */
static void test_new_term_forgets_acks(void **state) {
  static fx x;
  sp_follower_progress p[NF];
  sp_seq floor = 99;
  sp_ssize n, i;

  (void)state;
  /* A store that keeps no follower positions of its own (version 1):
   * what counts here is only what the leader held in memory. */
  fx_store_version = 1;
  fx_init(&x, 2);
  fx_store_version = 0;
  assert_int_equal(ack(&x, 0, 5), 0);
  assert_int_equal(ack(&x, 1, 7), 0);
  assert_int_equal(sp_handler_retention_floor(x.h, &floor), 0);
  assert_int_equal(floor, 5);
  assert_int_equal(sp_handler_set_role(x.h, SP_ROLE_FOLLOWER, 0, x.now), 0);
  assert_int_equal(sp_handler_set_role(x.h, SP_ROLE_LEADER, 2, x.now), 0);
  assert_int_equal(sp_handler_retention_floor(x.h, &floor), 0);
  assert_int_equal(floor, 0);
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 1, x.now + SP_SECONDS,
                                        on_wait, &x, x.now), 0);
  n = sp_handler_list_followers(x.h, p, NF, x.now);
  assert_int_equal(n, 2);
  for (i = 0; i < n; ++i) {
    assert_false(p[i].has_acked);
    assert_int_equal(p[i].acked_sequence, 0);
  }
  assert_int_equal(x.ncalls, 0);
  fx_free(&x);
}

/* The registry failing to list members changes nothing: the leader keeps
 * the list it had, scheduled re-reads try again later, and the host's
 * call says why. */
static void test_registry_unreadable(void **state) {
  static fx x;
  sp_follower_progress p[NF];
  int closes;

  (void)state;
  fx_init(&x, 2);
  assert_int_equal(ack(&x, 0, 5), 0);
  assert_int_equal(ack(&x, 1, 5), 0);
  x.members_fail = 1;
  assert_int_equal(sp_handler_registry_changed(x.h, x.now), SP_ERR_REGISTRY);
  assert_int_equal(expire(&x, x.now + 3600 * SP_SECONDS), 0);
  assert_int_equal(sp_handler_list_followers(x.h, p, NF, x.now), 2);
  assert_int_equal(sp_handler_wait_acks(x.h, 5, 0, x.now + SP_SECONDS,
                                        on_wait, &x, x.now),
                   SP_ERR_REGISTRY);
  x.members_fail = 0;
  x.removed = 1u << 0;
  closes = x.closes;
  assert_int_equal(sp_handler_registry_changed(x.h, x.now), 0);
  assert_int_equal(sp_handler_list_followers(x.h, p, NF, x.now), 1);
  assert_true(sp_uuid_equal(&p[0].device_id, &x.f[1]));
  assert_int_equal(x.closes, closes + 1); /* the one that left */
  assert_int_equal(x.ncalls, 0);
  fx_free(&x);
}

/* Follower 0 comes back on a new stream, acknowledges `seq`, and leaves. */
static void visit(fx *x, uint64_t stream, sp_seq seq) {
  x->stream[0] = stream;
  assert_int_equal(sp_node_stream_opened(x->node, stream, &x->f[0], x->now),
                   0);
  assert_int_equal(ack(x, 0, seq), 0);
  assert_int_equal(sp_node_stream_closed(x->node, stream, &x->f[0], 0,
                                         x->now), 0);
}

/* Dials the leader makes in (now, now + d]. */
static int dials_within(fx *x, sp_duration d) {
  sp_tstamp end = x->now + d;
  int before = x->opens;

  while (sp_node_get_expiry(x->node) <= end) {
    assert_int_equal(expire(x, sp_node_get_expiry(x->node)), 0);
  }
  x->now = end;
  return x->opens - before;
}

/* The leader's dial backoff (reconnect_min 10 s, max 60 s here) resets
 * only when a follower's acknowledged sequence moves forward: a follower
 * that connects and acknowledges again what it had acknowledged (no
 * progress) leaves it as it grew. */
static void test_repeated_ack_keeps_dial_backoff(void **state) {
  static fx x;

  (void)state;
  fx_init(&x, 1);
  visit(&x, 2000, 5);
  assert_int_equal(dials_within(&x, 11 * SP_SECONDS), 1);
  /* Failing dials: the backoff grows to its cap. */
  assert_true(dials_within(&x, 300 * SP_SECONDS) >= 3);
  visit(&x, 2001, 5);
  assert_int_equal(dials_within(&x, 25 * SP_SECONDS), 0);
  assert_int_equal(dials_within(&x, 40 * SP_SECONDS), 1);
  /* Progress: back to reconnect_min. */
  visit(&x, 2002, 6);
  assert_int_equal(dials_within(&x, 11 * SP_SECONDS), 1);
  fx_free(&x);
}

/* One ack re-checks every wait against one reading of the member list,
 * and so does one expiry pass: the registry is asked once, not once per
 * wait. */
static void test_one_member_read_per_pass(void **state) {
  static fx x;
  sp_tstamp dl;
  int i;

  (void)state;
  fx_init(&x, 3);
  assert_int_equal(ack(&x, 0, 1), 0);
  dl = x.now + 10 * SP_SECONDS; /* before the registry's re-read */
  for (i = 0; i < 6; ++i) {
    assert_int_equal(
        sp_handler_wait_acks(x.h, 8, 0, dl, on_wait, &x, x.now), 0);
  }
  x.members_calls = 0;
  assert_int_equal(ack(&x, 0, 2), 0);
  assert_int_equal(x.members_calls, 1);
  assert_int_equal(x.ncalls, 0);
  x.members_calls = 0;
  assert_int_equal(expire(&x, dl), 0);
  assert_int_equal(x.ncalls, 6);
  assert_int_equal(x.members_calls, 1);
  for (i = 0; i < 6; ++i) {
    assert_int_equal(x.calls[i].status, SP_ERR_DEADLINE);
    assert_int_equal(x.calls[i].acked, 0);
  }
  fx_free(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_member_read_per_pass),
      cmocka_unit_test(test_already_satisfied),
      cmocka_unit_test(test_more_than_followers),
      cmocka_unit_test(test_order),
      cmocka_unit_test(test_order_same_ack),
      cmocka_unit_test(test_deadlines),
      cmocka_unit_test(test_del_cancels),
      cmocka_unit_test(test_wait_callback_failure),
      cmocka_unit_test(test_event_callback_failure),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_follower_and_stepped_down),
      cmocka_unit_test(test_registry_shrinks),
      cmocka_unit_test(test_every_follower_counts_members_only),
      cmocka_unit_test(test_new_term_forgets_acks),
      cmocka_unit_test(test_registry_unreadable),
      cmocka_unit_test(test_repeated_ack_keeps_dial_backoff),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftovers);
}
