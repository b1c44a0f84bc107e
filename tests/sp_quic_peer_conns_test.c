/*
 * sp_quic_peer_conns_test.c: what one registered device can make an
 * endpoint hold across many connections.  Each connection is bounded by
 * conn_recv_window + one frame (sp_quic_window_test); the device is
 * bounded by SP_QUIC_MAX_PEER_CONNS of those.  The attacker runs ten
 * endpoints with one key, one after the other, each opening streams to
 * the victim V and sending every stream all but the last byte of a frame.
 * V must never hold more than the cap's worth, and the newest connections
 * are the ones kept.  Handshakes in progress are capped per host too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

#define ATTACKERS 10
#define STREAMS 6
#define FRAME (256 * 1024)

typedef struct world {
  qt_device v;
  qt_device a[ATTACKERS];
  size_t started;
  /* The most V held at any step, and the most connections of the
   * attacker's device V had authenticated at once. */
  uint64_t max_held;
  size_t max_conns;
} world;

/* Received bytes V holds: in its streams' buffers, and in its node's
 * unfinished frames. */
static uint64_t v_holds(const world *w) { return qt_held(&w->v, FRAME); }

static size_t v_conns(const world *w) {
  const sp_quic_endpoint *ep = w->v.ep;
  size_t i, n = 0;

  for (i = 0; i < ep->nconns; ++i) {
    const sp_quic_conn *c = ep->conns[i];
    n += c->authenticated && sp_quic_conn_usable(c) &&
         sp_uuid_equal(&c->peer, sp_identity_device_id(w->a[0].id));
  }
  return n;
}

static void run(world *w, double seconds) {
  sp_tstamp end = sp_quic_now() + (sp_tstamp)(seconds * 1e9);
  struct pollfd p[ATTACKERS + 1];
  size_t i, n;

  while (sp_quic_now() < end) {
    uint64_t h;

    assert_int_equal(sp_quic_endpoint_process(w->v.ep, sp_quic_now()), 0);
    for (i = 0; i < w->started; ++i) {
      assert_int_equal(sp_quic_endpoint_process(w->a[i].ep, sp_quic_now()),
                       0);
    }
    h = v_holds(w);
    w->max_held = h > w->max_held ? h : w->max_held;
    n = v_conns(w);
    w->max_conns = n > w->max_conns ? n : w->max_conns;
    p[0].fd = sp_quic_endpoint_fd(w->v.ep);
    p[0].events = POLLIN;
    for (i = 0; i < w->started; ++i) {
      p[i + 1].fd = sp_quic_endpoint_fd(w->a[i].ep);
      p[i + 1].events = POLLIN;
    }
    (void)poll(p, w->started + 1, 2);
  }
}

/* Attacker `k`: another endpoint with the same key, its streams each
 * an unfinished frame. */
static void attack(world *w, size_t k) {
  qt_device *a = &w->a[k];
  sp_uuid lib;
  size_t i;

  if (k > 0) {
    memset(a, 0, sizeof(*a));
    a->id = w->a[0].id;
    qt_registry_init(&a->reg);
  }
  qt_device_start(a, NULL);
  qt_know(a, &w->v);
  ++w->started;
  sp_uuid_generate(&lib);
  for (i = 0; i < STREAMS; ++i) {
    int rv;
    fn_stream *s = fn_open(a->node, sp_identity_device_id(w->v.id), &lib, &rv);
    assert_non_null(s);
    s->fixed_pattern = 1;
    fn_produce(a->node, s, FRAME - 1, (uint8_t)i, 0);
  }
}

/* Streams of attacker `k` that V closed under it. */
static size_t closed_streams(const world *w, size_t k) {
  const sp_node *n = w->a[k].node;
  size_t i, c = 0;

  for (i = 0; i < n->nstreams; ++i) {
    c += n->streams[i].closed != 0;
  }
  return c;
}

static void test_device_bounded_across_connections(void **state) {
  static world w;
  sp_quic_config cfg = qt_config();
  uint64_t bound;
  size_t k;

  (void)state;
  memset(&w, 0, sizeof(w));
  /* Small windows keep the test fast; a frame larger than the stream
   * window takes the connection's allowance, as a 4 MiB frame would. */
  cfg.stream_recv_window = 64 * 1024;
  cfg.conn_recv_window = 256 * 1024;
  qt_device_init(&w.v);
  qt_device_start(&w.v, &cfg);
  w.v.node->hold_frame = FRAME;
  w.v.node->count_only = 1;
  qt_device_init(&w.a[0]);
  qt_know(&w.v, &w.a[0]);
  for (k = 0; k < ATTACKERS; ++k) {
    attack(&w, k);
    run(&w, 0.25);
  }
  run(&w, 0.5);
  bound = (uint64_t)SP_QUIC_MAX_PEER_CONNS * (cfg.conn_recv_window + FRAME);
  printf("%d endpoints of one device, %d unfinished %d-byte frames each: V "
         "held at most %llu bytes (bound %llu) on at most %zu connections "
         "(cap %d)\n",
         ATTACKERS, STREAMS, FRAME, (unsigned long long)w.max_held,
         (unsigned long long)bound, w.max_conns, SP_QUIC_MAX_PEER_CONNS);
  assert_true(w.max_held <= bound);
  assert_true(w.max_conns <= SP_QUIC_MAX_PEER_CONNS);
  /* Newest wins: the latest connections carry their streams still, the
   * oldest were closed, with their streams. */
  for (k = 0; k < ATTACKERS; ++k) {
    if (k + SP_QUIC_MAX_PEER_CONNS < ATTACKERS) {
      assert_int_equal(closed_streams(&w, k), STREAMS);
    } else {
      assert_int_equal(closed_streams(&w, k), 0);
    }
  }
  assert_int_equal(v_conns(&w), SP_QUIC_MAX_PEER_CONNS);
  assert_int_equal(w.v.node->reentrant_calls + w.v.node->after_close, 0);
  for (k = ATTACKERS; k-- > 1;) {
    qt_device_stop(&w.a[k]);
  }
  qt_device_free(&w.a[0]);
  qt_device_free(&w.v);
}

/* ---- handshakes from one host ---- */

/* A genuine client Initial for a fresh connection id, made by a client
 * connection of `maker` that is then dropped unsent. */
static size_t initial(qt_device *maker, const sp_quic_addr *to, uint8_t *out,
                      size_t cap) {
  sp_quic_udp *u = &maker->ep->udp;
  sp_quic_conn *c;
  sp_uuid peer;
  size_t len;

  sp_uuid_generate(&peer);
  assert_int_equal(
      sp_quic_conn_client_new(&c, maker->ep, &peer, to, sp_quic_now()), 0);
  sp_quic_conn_write(c, sp_quic_now());
  assert_true(u->npkts > u->head);
  len = u->pkts[u->head].len;
  assert_true(len <= cap);
  memcpy(out, u->buf + u->pkts[u->head].off, len);
  u->head = u->npkts = 0;
  c->state = SP_QUIC_CONN_DEAD;
  return len;
}

/* Handshakes `ep` accepted from 127.0.0.1. */
static size_t from_localhost(const sp_quic_endpoint *ep) {
  size_t i, n = 0;

  for (i = 0; i < ep->nconns; ++i) {
    const sp_quic_conn *c = ep->conns[i];
    n += c->server && c->state == SP_QUIC_CONN_HANDSHAKE &&
         c->remote.u.in.sin_addr.s_addr == htonl(INADDR_LOOPBACK);
  }
  return n;
}

/* One host's Initials (each from its own port, none ever answered) stay
 * below the global Retry threshold, so only the per-host cap stands
 * between them and the slots: past it they are sent a Retry.  A device
 * on that same host still gets through, with its Retry round trip. */
static void test_host_handshakes_capped(void **state) {
  enum { FLOOD = 20 };
  qt_device v, maker, b;
  qt_device *d[2] = {&v, &b};
  uint8_t pkt[SP_QUIC_RECV_SLOT];
  sp_quic_addr to;
  fn_stream *s;
  sp_uuid lib;
  size_t i, held;
  int rv;

  (void)state;
  assert_true(FLOOD < SP_QUIC_RETRY_THRESHOLD);
  qt_device_init(&v);
  qt_device_start(&v, NULL);
  qt_device_init(&maker);
  qt_device_start(&maker, NULL);
  assert_int_equal(sp_quic_addr_parse(&to, v.addr, strlen(v.addr)), 0);
  for (i = 0; i < FLOOD; ++i) {
    size_t len = initial(&maker, &to, pkt, sizeof(pkt));
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(sendto(fd, pkt, len, 0, &to.u.sa, to.len), (ssize_t)len);
    close(fd);
  }
  assert_int_equal(sp_quic_endpoint_process(maker.ep, sp_quic_now()), 0);
  for (i = 0; i < 50 && v.ep->stats.datagrams_received < FLOOD; ++i) {
    assert_int_equal(sp_quic_endpoint_process(v.ep, sp_quic_now()), 0);
    usleep(2000);
  }
  held = from_localhost(v.ep);
  printf("%d Initials from one host: %zu took a handshake slot (cap %d), "
         "%llu were sent a Retry\n",
         FLOOD, held, SP_QUIC_MAX_HOST_HANDSHAKES,
         (unsigned long long)v.ep->retries_sent);
  assert_int_equal(held, SP_QUIC_MAX_HOST_HANDSHAKES);
  assert_int_equal(v.ep->retries_sent, FLOOD - SP_QUIC_MAX_HOST_HANDSHAKES);

  qt_device_init(&b);
  qt_device_start(&b, NULL);
  qt_know(&b, &v);
  qt_know(&v, &b);
  sp_uuid_generate(&lib);
  s = fn_open(b.node, sp_identity_device_id(v.id), &lib, &rv);
  assert_non_null(s);
  assert_true(qt_run(d, 2, NULL, qt_stream_writable, s, 5.0));
  assert_int_equal(v.ep->retries_sent, FLOOD - SP_QUIC_MAX_HOST_HANDSHAKES + 1);
  qt_device_free(&b);
  qt_device_free(&maker);
  qt_device_free(&v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_device_bounded_across_connections),
      cmocka_unit_test(test_host_handshakes_capped),
  };
  return QT_RUN_TESTS(tests);
}
