/*
 * sp_quic_lifetime_test.c: every stream state against every way its
 * connection ends; afterwards the endpoint holds no stream and no
 * received byte, and the node heard each stream it knew end exactly once.
 *
 * States (of B's view of a stream A opened): not yet dispatched to the
 * node, dispatched, half-closed (B's node ended its side cleanly, A has
 * not), reset by A, closed by B's node with output still unacknowledged.
 * Ends: A's endpoint deleted (its CONNECTION_CLOSE reaches B), the idle
 * timeout (network cut), a stateless reset (A restarted without a word),
 * B's own endpoint deleted (the sanitizers' leak check), and a handshake
 * that fails under a stream the node opened.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

typedef enum st_kind {
  ST_UNDISPATCHED,
  ST_DISPATCHED,
  ST_HALF_CLOSED,
  ST_RESET,
  ST_NODE_CLOSED,
  ST_COUNT
} st_kind;

typedef enum end_kind {
  END_PEER_DEL,
  END_IDLE,
  END_STATELESS_RESET,
  END_LOCAL_DEL,
  END_COUNT
} end_kind;

static const char *st_name[ST_COUNT] = {"undispatched", "dispatched",
                                        "half-closed", "reset",
                                        "node-closed"};
static const char *end_name[END_COUNT] = {"peer endpoint deleted",
                                          "idle timeout", "stateless reset",
                                          "local endpoint deleted"};

typedef struct lt {
  qt_device a, b;
  qt_relay relay;
  char a_addr[64];
  sp_uuid lib;
} lt;

static int run_all(lt *t, int (*done)(void *), void *arg, double s) {
  qt_device *d[2] = {&t->a, &t->b};
  return qt_run(d, 2, &t->relay, done, arg, s);
}

static int is_closed(void *arg) { return ((fn_stream *)arg)->closed; }

/* Received bytes an endpoint still holds, over all its streams. */
static size_t rx_held(const sp_quic_endpoint *ep) {
  size_t i, n = 0;

  for (i = 0; i < ep->nstreams; ++i) {
    n += sp_buf_pending(&ep->streams[i]->rbuf);
  }
  return n;
}

static int b_empty(void *arg) {
  lt *t = arg;
  return t->b.ep->nstreams == 0;
}

/* A remote stream on B the node has not heard of, holding `bytes`. */
static int b_undispatched(void *arg) {
  lt *t = arg;
  size_t i;

  for (i = 0; i < t->b.ep->nstreams; ++i) {
    const sp_quic_stream *s = t->b.ep->streams[i];
    if (s->opened_pending && sp_buf_pending(&s->rbuf) >= 1000) {
      return 1;
    }
  }
  return 0;
}

static void assert_promises_kept(const sp_node *n) {
  assert_int_equal(n->reentrant_calls, 0);
  assert_int_equal(n->peer_mismatch, 0);
  assert_int_equal(n->after_close, 0);
  assert_int_equal(n->unknown_stream, 0);
}

/* A (client, behind a relay) and B (server), the connection
 * authenticated by a first stream that stays open. */
static void lt_start(lt *t) {
  sp_quic_config cfg = qt_config();
  qt_entry *e;
  fn_stream *s0;
  qt_nth_has w;
  int rv;

  cfg.idle_timeout = 1 * SP_SECONDS;
  qt_device_init(&t->a);
  qt_device_init(&t->b);
  qt_device_start(&t->a, &cfg);
  qt_device_start(&t->b, &cfg);
  snprintf(t->a_addr, sizeof(t->a_addr), "%s", t->a.addr);
  qt_relay_open(&t->relay, t->b.addr);
  qt_know(&t->a, &t->b);
  qt_know(&t->b, &t->a);
  e = qt_registry_find(&t->a.reg, sp_identity_device_id(t->b.id));
  snprintf(e->hints, sizeof(e->hints), "%s", t->relay.addr);
  sp_uuid_generate(&t->lib);
  s0 = fn_open(t->a.node, sp_identity_device_id(t->b.id), &t->lib, &rv);
  assert_non_null(s0);
  assert_int_equal(fn_send(t->a.node, s0, "hello", 5), 5);
  w.node = t->b.node;
  w.k = 0;
  w.bytes = 5;
  assert_true(run_all(t, qt_remote_has, &w, 5));
}

static void lt_free(lt *t) {
  qt_relay_close(&t->relay);
  qt_device_free(&t->a);
  qt_device_free(&t->b);
}

/* Put A's stream `s1` into state `st` as B sees it.  Returns B's view
 * (NULL while B's node has not heard of it). */
static fn_stream *make_state(lt *t, st_kind st, fn_stream *s1) {
  static uint8_t bulk[20000];
  fn_stream *r1;
  qt_nth_has w;

  if (st == ST_UNDISPATCHED) {
    /* B's node is away: the stream waits in the endpoint. */
    assert_int_equal(sp_quic_endpoint_attach(t->b.ep, NULL), 0);
    assert_int_equal(fn_send(t->a.node, s1, bulk, sizeof(bulk)),
                     (sp_ssize)sizeof(bulk));
    assert_true(run_all(t, b_undispatched, t, 5));
    return NULL;
  }
  assert_int_equal(fn_send(t->a.node, s1, "data", 4), 4);
  w.node = t->b.node;
  w.k = 1;
  w.bytes = 4;
  assert_true(run_all(t, qt_remote_has, &w, 5));
  r1 = qt_nth_remote(t->b.node, 1);
  switch (st) {
  case ST_HALF_CLOSED:
    assert_int_equal(fn_close(t->b.node, r1, 0), 0);
    /* B's FIN goes out and is acknowledged; A never ends its side. */
    run_all(t, NULL, NULL, 0.2);
    break;
  case ST_RESET:
    assert_int_equal(fn_close(t->a.node, s1, SP_ERR_SYNC_REQUIRED), 0);
    assert_true(run_all(t, is_closed, r1, 5));
    assert_int_equal(r1->closed_reason, SP_ERR_SYNC_REQUIRED);
    break;
  case ST_NODE_CLOSED:
    /* Output the peer will never acknowledge: the network is cut. */
    t->relay.cut = 1;
    assert_true(fn_send(t->b.node, r1, bulk, sizeof(bulk)) > 0);
    assert_int_equal(fn_close(t->b.node, r1, 0), 0);
    run_all(t, NULL, NULL, 0.05);
    break;
  default:
    break;
  }
  return r1;
}

static void end_conn(lt *t, end_kind end) {
  switch (end) {
  case END_PEER_DEL:
    t->relay.cut = 0;
    qt_device_stop(&t->a);
    break;
  case END_IDLE:
    t->relay.cut = 1;
    break;
  case END_STATELESS_RESET: {
    sp_quic_config cfg = qt_config();
    fn_stream *poke;
    int rv;

    t->relay.cut = 0;
    /* A crashes (its goodbye never leaves) and restarts on its address
     * with its key; B's next packet draws a stateless reset.  B pokes
     * through the transport vtable, which works with its node away. */
    t->a.ep->udp.test_eagain_every = 1;
    qt_device_stop(&t->a);
    cfg.bind_address = t->a_addr;
    qt_device_start(&t->a, &cfg);
    poke = fn_open(t->b.node, sp_identity_device_id(t->a.id), &t->lib, &rv);
    assert_non_null(poke);
    assert_true(fn_send(t->b.node, poke, "poke", 4) == 4);
    break;
  }
  default:
    break;
  }
}

static void one_case(st_kind st, end_kind end) {
  lt t;
  fn_stream *s1, *r1;
  int rv;

  print_message("  %s stream, %s\n", st_name[st], end_name[end]);
  lt_start(&t);
  s1 = fn_open(t.a.node, sp_identity_device_id(t.b.id), &t.lib, &rv);
  assert_non_null(s1);
  r1 = make_state(&t, st, s1);
  end_conn(&t, end);
  if (end == END_LOCAL_DEL) {
    /* Everything goes with the endpoint (leaks: the sanitizer run). */
    qt_device_stop(&t.b);
    lt_free(&t);
    return;
  }
  if (st == ST_UNDISPATCHED) {
    /* The connection ends while the node is away... */
    {
      qt_device *d[2] = {&t.a, &t.b};
      size_t i;
      for (i = 0; i < 40; ++i) {
        qt_run(d, 2, &t.relay, NULL, NULL, 0.1);
        if (t.b.ep->nconns == 0) {
          break;
        }
      }
    }
    assert_int_equal(t.b.ep->nconns, 0);
    /* ...and then it comes back. */
    assert_int_equal(sp_quic_endpoint_attach(t.b.ep, t.b.node), 0);
  }
  if (!run_all(&t, b_empty, &t, 6)) {
    print_error("B still holds %zu streams, %zu received bytes\n",
                t.b.ep->nstreams, rx_held(t.b.ep));
  }
  assert_int_equal(t.b.ep->nstreams, 0);
  assert_int_equal(rx_held(t.b.ep), 0);
  if (r1) {
    /* The node heard the end of what it knew, unless it ended the stream
     * itself (once: after_close). */
    assert_true(r1->closed || r1->close_sent);
  }
  assert_promises_kept(t.b.node);
  lt_free(&t);
}

static void run_row(st_kind st) {
  int end;

  for (end = 0; end < END_COUNT; ++end) {
    one_case(st, (end_kind)end);
  }
}

static void test_undispatched(void **state) {
  (void)state;
  run_row(ST_UNDISPATCHED);
}

static void test_dispatched(void **state) {
  (void)state;
  run_row(ST_DISPATCHED);
}

static void test_half_closed(void **state) {
  (void)state;
  run_row(ST_HALF_CLOSED);
}

static void test_reset(void **state) {
  (void)state;
  run_row(ST_RESET);
}

static void test_node_closed(void **state) {
  (void)state;
  run_row(ST_NODE_CLOSED);
}

/* The reported case: a peer opens a stream, sends bytes and closes its
 * connection in one flight (sp_quic_endpoint_del flushes its last bytes
 * with the close), round after round.  Nothing may stay behind, and the
 * bytes reach the node (the peer was proven; its last words count). */
static void test_open_send_close_one_flight(void **state) {
  enum { ROUNDS = 8, LEN = 8000 };
  static uint8_t payload[LEN];
  qt_device b;
  size_t round;

  (void)state;
  memset(payload, 0x5a, sizeof(payload));
  qt_device_init(&b);
  qt_device_start(&b, NULL);
  for (round = 0; round < ROUNDS; ++round) {
    qt_device a;
    qt_device *d[1] = {&b};
    qt_device *both[2] = {&a, &b};
    fn_stream *s0, *s1, *r;
    sp_uuid lib;
    qt_nth_has w;
    int rv;

    qt_device_init(&a);
    qt_device_start(&a, NULL);
    qt_know(&a, &b);
    b.reg.n = 0; /* B knows this round's A only */
    qt_know(&b, &a);
    sp_uuid_generate(&lib);
    s0 = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
    assert_non_null(s0);
    assert_int_equal(fn_send(a.node, s0, "x", 1), 1);
    w.node = b.node;
    w.k = 2 * round;
    w.bytes = 1;
    assert_true(qt_run(both, 2, NULL, qt_remote_has, &w, 5));
    /* One flight: the new stream, its bytes, the close. */
    s1 = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
    assert_non_null(s1);
    assert_int_equal(fn_send(a.node, s1, payload, LEN), LEN);
    qt_device_free(&a);
    qt_run_for(d, 1, NULL, 0.2);
    if (b.ep->nstreams != 0) {
      print_error("round %zu: B holds %zu streams, %zu received bytes\n",
                  round, b.ep->nstreams, rx_held(b.ep));
    }
    assert_int_equal(b.ep->nstreams, 0);
    r = qt_nth_remote(b.node, 2 * round + 1);
    assert_non_null(r);
    assert_int_equal(r->received, LEN);
    assert_true(r->closed);
    assert_int_equal(r->closed_reason, SP_ERR_CONNECTION_LOST);
  }
  assert_promises_kept(b.node);
  qt_device_free(&b);
}

/* A stream the node opened on a connection whose handshake fails. */
static void test_handshake_failure(void **state) {
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  fn_stream *s;
  sp_uuid lib;
  int rv;

  (void)state;
  qt_device_init(&a);
  qt_device_init(&b);
  qt_device_start(&a, NULL);
  qt_device_start(&b, NULL);
  qt_know(&a, &b); /* B does not know A: it refuses the handshake */
  sp_uuid_generate(&lib);
  s = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(s);
  assert_int_equal(fn_send(a.node, s, "never", 5), 5);
  assert_true(qt_run(d, 2, NULL, is_closed, s, 5));
  assert_int_equal(s->closed_reason, SP_ERR_UNKNOWN_KEY);
  qt_run_for(d, 2, NULL, 0.1);
  assert_int_equal(a.ep->nstreams, 0);
  assert_int_equal(b.ep->nstreams, 0);
  assert_int_equal(b.node->opened_calls, 0);
  assert_promises_kept(a.node);
  qt_device_free(&a);
  qt_device_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_send_close_one_flight),
      cmocka_unit_test(test_undispatched),
      cmocka_unit_test(test_dispatched),
      cmocka_unit_test(test_half_closed),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_node_closed),
      cmocka_unit_test(test_handshake_failure),
  };
  return QT_RUN_TESTS(tests);
}
