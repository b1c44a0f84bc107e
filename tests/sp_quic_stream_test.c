/*
 * sp_quic_stream_test.c: streams through the transport vtable: several on
 * one connection, FIN and reset, lost peers, loss, flow control with a
 * slow reader, and bulk transfer (with a throughput figure).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

typedef struct pair {
  qt_device a; /* opens streams */
  qt_device b;
  sp_uuid lib1, lib2;
} pair;

static void pair_start(pair *p, const sp_quic_config *ca,
                       const sp_quic_config *cb) {
  qt_device_init(&p->a);
  qt_device_init(&p->b);
  qt_device_start(&p->a, ca);
  qt_device_start(&p->b, cb);
  qt_know(&p->a, &p->b);
  qt_know(&p->b, &p->a);
  sp_uuid_generate(&p->lib1);
  sp_uuid_generate(&p->lib2);
}

static void pair_free(pair *p) {
  qt_device_free(&p->a);
  qt_device_free(&p->b);
}

static void assert_promises_kept(const sp_node *n) {
  assert_int_equal(n->reentrant_calls, 0);
  assert_int_equal(n->peer_mismatch, 0);
  assert_int_equal(n->after_close, 0);
  assert_int_equal(n->unknown_stream, 0);
}

static int run2(pair *p, int (*done)(void *), void *arg, double s) {
  qt_device *d[2] = {&p->a, &p->b};
  return qt_run(d, 2, NULL, done, arg, s);
}

static fn_stream *open_to_b(pair *p, const sp_uuid *lib) {
  int rv;
  fn_stream *s = fn_open(p->a.node, sp_identity_device_id(p->b.id), lib, &rv);

  assert_int_equal(rv, 0);
  assert_non_null(s);
  return s;
}

static int closed(void *arg) { return ((fn_stream *)arg)->closed; }

typedef struct remote_n {
  sp_node *node;
  size_t n;
} remote_n;

/* `n` remote streams, all closed. */
static int remotes_closed(void *arg) {
  remote_n *w = arg;
  size_t i, k = 0;

  for (i = 0; i < w->node->nstreams; ++i) {
    if (w->node->streams[i].remote && w->node->streams[i].closed) {
      ++k;
    }
  }
  return k == w->n;
}

static void assert_received(fn_stream *s, uint64_t total, uint8_t seed) {
  uint8_t want[32], got[32];

  assert_int_equal(s->received, total);
  fn_expected_hash(want, total, seed);
  fn_rx_digest(s, got);
  assert_memory_equal(want, got, 32);
}

static void test_two_streams_one_connection(void **state) {
  pair p;
  fn_stream *s1, *s2, *r1, *r2, *back;
  remote_n w;
  sp_quic_stats sa, sb;
  int rv;

  (void)state;
  pair_start(&p, NULL, NULL);
  s1 = open_to_b(&p, &p.lib1);
  s2 = open_to_b(&p, &p.lib2);
  assert_true(s1->id != s2->id);
  fn_produce(p.a.node, s1, 300000, 1, 1);
  fn_produce(p.a.node, s2, 700000, 2, 1);
  w.node = p.b.node;
  w.n = 2;
  assert_true(run2(&p, remotes_closed, &w, 10));
  r1 = qt_nth_remote(p.b.node, 0);
  r2 = qt_nth_remote(p.b.node, 1);
  /* Streams arrive in either order; match them by size. */
  if (r1->received != 300000) {
    fn_stream *t = r1;
    r1 = r2;
    r2 = t;
  }
  assert_received(r1, 300000, 1);
  assert_received(r2, 700000, 2);
  assert_int_equal(r1->closed_reason, 0);
  assert_int_equal(r2->closed_reason, 0);
  assert_true(sp_uuid_equal(&r1->peer, sp_identity_device_id(p.a.id)));

  /* B opens a stream back to A: it rides the connection A opened. */
  back = fn_open(p.b.node, sp_identity_device_id(p.a.id), &p.lib1, &rv);
  assert_non_null(back);
  assert_int_equal(fn_send(p.b.node, back, "reply", 5), 5);
  {
    qt_nth_has wr = {p.a.node, 0, 5};
    assert_true(run2(&p, qt_remote_has, &wr, 5));
  }
  {
    fn_stream *ra = qt_nth_remote(p.a.node, 0);
    assert_non_null(ra);
    assert_int_equal(ra->received, 5);
    assert_memory_equal(ra->kept, "reply", 5);
    assert_true(sp_uuid_equal(&ra->peer, sp_identity_device_id(p.b.id)));
  }
  sp_quic_endpoint_get_stats(p.a.ep, &sa);
  sp_quic_endpoint_get_stats(p.b.ep, &sb);
  assert_int_equal(sa.connections_opened, 1);
  assert_int_equal(sa.connections_accepted, 0);
  assert_int_equal(sb.connections_opened, 0);
  assert_int_equal(sb.connections_accepted, 1);
  assert_int_equal(sa.stream_bytes_sent, 1000000);
  assert_int_equal(sb.stream_bytes_received, 1000000);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* More streams than the peer allows at once (100): the rest wait for
 * credit, which comes back as streams end. */
static void test_many_streams(void **state) {
  enum { N = 110 };
  pair p;
  fn_stream *s[N];
  remote_n w;
  sp_quic_stats sa;
  size_t i, k;

  (void)state;
  pair_start(&p, NULL, NULL);
  for (i = 0; i < N; ++i) {
    uint8_t msg[3] = {(uint8_t)i, (uint8_t)(i >> 8), 0x77};
    s[i] = open_to_b(&p, &p.lib1);
    assert_int_equal(fn_send(p.a.node, s[i], msg, 3), 3);
  }
  /* The first 100 open; the others wait, however long we run. */
  {
    qt_nth_has w100 = {p.b.node, 99, 3};
    assert_true(run2(&p, qt_remote_has, &w100, 5));
    (void)run2(&p, NULL, NULL, 0.3);
    assert_null(qt_nth_remote(p.b.node, 100));
  }
  /* Ending streams gives credit back: the rest get through. */
  for (i = 0; i < N; ++i) {
    assert_int_equal(fn_close(p.a.node, s[i], 0), 0);
  }
  w.node = p.b.node;
  w.n = N;
  assert_true(run2(&p, remotes_closed, &w, 10));
  for (k = 0; k < N; ++k) {
    fn_stream *r = qt_nth_remote(p.b.node, k);
    assert_int_equal(r->received, 3);
    assert_int_equal(r->kept[2], 0x77);
    assert_int_equal(r->closed_reason, 0);
  }
  sp_quic_endpoint_get_stats(p.a.ep, &sa);
  assert_int_equal(sa.connections_opened, 1);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* One socket, two connections (A dials B and C); the answers come back
 * on connections the peers did not open. */
static void test_three_devices(void **state) {
  qt_device a, b, c;
  qt_device *d[3] = {&a, &b, &c};
  fn_stream *sb, *sc, *back;
  sp_quic_stats st;
  qt_nth_has wb, wc, wa;
  sp_uuid lib;
  int rv;

  (void)state;
  qt_device_init(&a);
  qt_device_init(&b);
  qt_device_init(&c);
  qt_device_start(&a, NULL);
  qt_device_start(&b, NULL);
  qt_device_start(&c, NULL);
  qt_know(&a, &b);
  qt_know(&a, &c);
  qt_know(&b, &a);
  qt_know(&c, &a);
  sp_uuid_generate(&lib);
  sb = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  sc = fn_open(a.node, sp_identity_device_id(c.id), &lib, &rv);
  assert_non_null(sb);
  assert_non_null(sc);
  assert_int_equal(fn_send(a.node, sb, "to b", 4), 4);
  assert_int_equal(fn_send(a.node, sc, "to c", 4), 4);
  wb.node = b.node;
  wb.k = 0;
  wb.bytes = 4;
  wc.node = c.node;
  wc.k = 0;
  wc.bytes = 4;
  assert_true(qt_run(d, 3, NULL, qt_remote_has, &wb, 5));
  assert_true(qt_run(d, 3, NULL, qt_remote_has, &wc, 5));
  assert_memory_equal(qt_nth_remote(b.node, 0)->kept, "to b", 4);
  assert_memory_equal(qt_nth_remote(c.node, 0)->kept, "to c", 4);
  assert_true(sp_uuid_equal(&qt_nth_remote(c.node, 0)->peer,
                            sp_identity_device_id(a.id)));
  back = fn_open(c.node, sp_identity_device_id(a.id), &lib, &rv);
  assert_non_null(back);
  assert_int_equal(fn_send(c.node, back, "from c", 6), 6);
  wa.node = a.node;
  wa.k = 0;
  wa.bytes = 6;
  assert_true(qt_run(d, 3, NULL, qt_remote_has, &wa, 5));
  assert_true(sp_uuid_equal(&qt_nth_remote(a.node, 0)->peer,
                            sp_identity_device_id(c.id)));
  sp_quic_endpoint_get_stats(a.ep, &st);
  assert_int_equal(st.connections_opened, 2);
  assert_int_equal(st.connections_accepted, 0);
  sp_quic_endpoint_get_stats(c.ep, &st);
  assert_int_equal(st.connections_opened, 0);
  qt_device_free(&a);
  qt_device_free(&b);
  qt_device_free(&c);
}

static int both_gone(void *arg) {
  pair *p = arg;
  return p->a.ep->nstreams == 0 && p->b.ep->nstreams == 0;
}

static void test_fin_and_reset(void **state) {
  pair p;
  fn_stream *s1, *s2, *s3, *r;
  remote_n w;
  uint64_t id1;

  (void)state;
  pair_start(&p, NULL, NULL);

  /* Clean close: all bytes first, then closed(0). */
  s1 = open_to_b(&p, &p.lib1);
  id1 = s1->id;
  fn_produce(p.a.node, s1, 100000, 7, 1);
  assert_true(s1->close_sent);
  w.node = p.b.node;
  w.n = 1;
  assert_true(run2(&p, remotes_closed, &w, 5));
  r = qt_nth_remote(p.b.node, 0);
  assert_received(r, 100000, 7);
  assert_int_equal(r->closed_reason, 0);
  /* The node closed it: the stream is unusable and unknown to close. */
  assert_true(fn_send(p.a.node, s1, "x", 1) < 0);
  assert_int_equal(p.a.node->tr.close_stream(id1, 0, p.a.ep),
                   SP_ERR_NOT_FOUND);

  /* The receiver resets with a protocol code; the sender hears it. */
  s2 = open_to_b(&p, &p.lib2);
  assert_int_equal(fn_send(p.a.node, s2, "0123456789", 10), 10);
  {
    qt_nth_has wr = {p.b.node, 1, 10};
    fn_stream *r2;
    assert_true(run2(&p, qt_remote_has, &wr, 5));
    r2 = qt_nth_remote(p.b.node, 1);
    assert_int_equal(r2->received, 10);
    assert_int_equal(fn_close(p.b.node, r2, SP_ERR_NOT_MEMBER), 0);
  }
  assert_true(run2(&p, closed, s2, 5));
  assert_int_equal(s2->closed_reason, SP_ERR_NOT_MEMBER);

  /* The sender resets; the receiver hears the code. */
  s3 = open_to_b(&p, &p.lib1);
  assert_int_equal(fn_send(p.a.node, s3, "abc", 3), 3);
  {
    qt_nth_has wr = {p.b.node, 2, 3};
    fn_stream *r3;
    assert_true(run2(&p, qt_remote_has, &wr, 5));
    r3 = qt_nth_remote(p.b.node, 2);
    assert_int_equal(fn_close(p.a.node, s3, SP_ERR_SYNC_REQUIRED), 0);
    assert_true(run2(&p, closed, r3, 5));
    assert_int_equal(r3->closed_reason, SP_ERR_SYNC_REQUIRED);
  }
  /* Everything ends in both directions and is freed on both sides. */
  assert_true(run2(&p, both_gone, &p, 5));
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

static void test_peer_deleted(void **state) {
  pair p;
  fn_stream *s;
  qt_nth_has w;
  sp_tstamp t0;

  (void)state;
  pair_start(&p, NULL, NULL);
  s = open_to_b(&p, &p.lib1);
  assert_int_equal(fn_send(p.a.node, s, "ping", 4), 4);
  w.node = p.b.node;
  w.k = 0;
  w.bytes = 4;
  assert_true(run2(&p, qt_remote_has, &w, 5));
  t0 = sp_quic_now();
  qt_device_stop(&p.b);
  {
    qt_device *d[1] = {&p.a};
    assert_true(qt_run(d, 1, NULL, closed, s, 5));
  }
  assert_int_equal(s->closed_reason, SP_ERR_CONNECTION_LOST);
  /* The CONNECTION_CLOSE tells at once, well within the idle timeout. */
  assert_true(sp_quic_now() - t0 < SP_SECONDS);
  assert_true(fn_send(p.a.node, s, "x", 1) < 0);
  pair_free(&p);
}

/* The peer crashes (nothing goes out) and restarts on the same address
 * with the same key: our next packet draws a stateless reset, the stream
 * ends at once instead of after the idle timeout, and a new stream gets
 * a new connection. */
static void test_restarted_peer_resets(void **state) {
  sp_quic_config cfg = qt_config();
  pair p;
  fn_stream *s, *s2;
  qt_nth_has w;
  char addr[64];
  sp_quic_stats st;
  sp_tstamp t0;

  (void)state;
  pair_start(&p, NULL, NULL);
  s = open_to_b(&p, &p.lib1);
  assert_int_equal(fn_send(p.a.node, s, "before", 6), 6);
  w.node = p.b.node;
  w.k = 0;
  w.bytes = 6;
  assert_true(run2(&p, qt_remote_has, &w, 5));
  snprintf(addr, sizeof(addr), "%s", p.b.addr);
  p.b.ep->udp.test_eagain_every = 1; /* its goodbye never leaves */
  qt_device_stop(&p.b);
  cfg.bind_address = addr;
  qt_device_start(&p.b, &cfg);
  t0 = sp_quic_now();
  assert_int_equal(fn_send(p.a.node, s, "after", 5), 5);
  assert_true(run2(&p, closed, s, 5));
  assert_int_equal(s->closed_reason, SP_ERR_CONNECTION_LOST);
  /* Well before the 10 s idle timeout. */
  assert_true(sp_quic_now() - t0 < 2 * SP_SECONDS);
  assert_int_equal(p.b.node->opened_calls, 0);

  s2 = open_to_b(&p, &p.lib1);
  assert_int_equal(fn_send(p.a.node, s2, "again", 5), 5);
  w.node = p.b.node;
  w.bytes = 5;
  assert_true(run2(&p, qt_remote_has, &w, 5));
  sp_quic_endpoint_get_stats(p.a.ep, &st);
  assert_int_equal(st.connections_opened, 2);
  assert_promises_kept(p.a.node);
  pair_free(&p);
}

/* When the node declares the peer silent (SP_ERR_PEER_TIMEOUT), its
 * reconnect must not land on that same, possibly dead, connection. */
static void test_silent_peer_not_reused(void **state) {
  pair p;
  qt_relay relay;
  qt_device *d[2];
  fn_stream *s, *s2;
  qt_entry *e;
  qt_nth_has w;
  sp_quic_stats st;

  (void)state;
  pair_start(&p, NULL, NULL);
  d[0] = &p.a;
  d[1] = &p.b;
  qt_relay_open(&relay, p.b.addr);
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  snprintf(e->hints, sizeof(e->hints), "%s", relay.addr);
  s = open_to_b(&p, &p.lib1);
  assert_int_equal(fn_send(p.a.node, s, "hello", 5), 5);
  w.node = p.b.node;
  w.k = 0;
  w.bytes = 5;
  assert_true(qt_run(d, 2, &relay, qt_remote_has, &w, 5));
  relay.cut = 1;
  qt_run_for(d, 2, &relay, 0.2);
  assert_int_equal(fn_close(p.a.node, s, SP_ERR_PEER_TIMEOUT), 0);
  relay.cut = 0;
  s2 = open_to_b(&p, &p.lib1);
  sp_quic_endpoint_get_stats(p.a.ep, &st);
  assert_int_equal(st.connections_opened, 2);
  assert_int_equal(fn_send(p.a.node, s2, "again", 5), 5);
  w.k = 1;
  assert_true(qt_run(d, 2, &relay, qt_remote_has, &w, 5));
  qt_relay_close(&relay);
  pair_free(&p);
}

/* The network goes away: both sides close their streams when the idle
 * timeout passes. */
static void test_idle_timeout_cut(void **state) {
  sp_quic_config cfg = qt_config();
  pair p;
  qt_relay relay;
  fn_stream *s, *r;
  qt_entry *e;
  sp_tstamp t0;
  double took;

  (void)state;
  cfg.idle_timeout = 1 * SP_SECONDS;
  pair_start(&p, &cfg, &cfg);
  qt_relay_open(&relay, p.b.addr);
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  snprintf(e->hints, sizeof(e->hints), "%s", relay.addr);
  s = open_to_b(&p, &p.lib1);
  assert_int_equal(fn_send(p.a.node, s, "ping", 4), 4);
  {
    qt_device *d[2] = {&p.a, &p.b};
    qt_nth_has w = {p.b.node, 0, 4};
    assert_true(qt_run(d, 2, &relay, qt_remote_has, &w, 5));
  }
  r = qt_nth_remote(p.b.node, 0);
  relay.cut = 1;
  t0 = sp_quic_now();
  {
    qt_device *d[2] = {&p.a, &p.b};
    assert_true(qt_run(d, 2, &relay, closed, s, 5));
    assert_true(qt_run(d, 2, &relay, closed, r, 5));
  }
  took = qt_seconds(sp_quic_now() - t0);
  assert_int_equal(s->closed_reason, SP_ERR_CONNECTION_LOST);
  assert_int_equal(r->closed_reason, SP_ERR_CONNECTION_LOST);
  /* ngtcp2 waits max(idle timeout, 3 PTO): about a second here. */
  assert_true(took > 0.8 && took < 4.0);
  qt_relay_close(&relay);
  pair_free(&p);
}

/* 5 % of datagrams lost both ways: ngtcp2 retransmits from our send
 * buffer (which must still hold the bytes), and everything arrives. */
static void test_lossy_network(void **state) {
  pair p;
  qt_relay relay;
  fn_stream *s, *r;
  qt_entry *e;
  remote_n w;
  sp_quic_stats sa;

  (void)state;
  pair_start(&p, NULL, NULL);
  qt_relay_open(&relay, p.b.addr);
  relay.drop_every = 20;
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  snprintf(e->hints, sizeof(e->hints), "%s", relay.addr);
  s = open_to_b(&p, &p.lib1);
  fn_produce(p.a.node, s, 4000000, 9, 1);
  w.node = p.b.node;
  w.n = 1;
  {
    qt_device *d[2] = {&p.a, &p.b};
    assert_true(qt_run(d, 2, &relay, remotes_closed, &w, 20));
  }
  r = qt_nth_remote(p.b.node, 0);
  assert_received(r, 4000000, 9);
  assert_int_equal(r->closed_reason, 0);
  assert_true(relay.dropped > 10);
  sp_quic_endpoint_get_stats(p.a.ep, &sa);
  /* Retransmissions: more sent than the payload needs. */
  assert_true(sa.bytes_sent > 4000000);
  printf("lossy relay: %llu of %llu datagrams dropped, sender sent %llu "
         "UDP bytes for 4000000 stream bytes\n",
         (unsigned long long)relay.dropped, (unsigned long long)relay.seen,
         (unsigned long long)sa.bytes_sent);
  qt_relay_close(&relay);
  pair_free(&p);
}

/* The socket says EAGAIN (injected on every 3rd send call: loopback
 * never fills a socket buffer): the queued packets wait for POLLOUT or
 * the retry time, and nothing is lost or reordered. */
static void test_send_buffer_full(void **state) {
  pair p;
  fn_stream *s, *r;
  remote_n w;

  (void)state;
  pair_start(&p, NULL, NULL);
  p.a.ep->udp.test_eagain_every = 3;
  s = open_to_b(&p, &p.lib1);
  fn_produce(p.a.node, s, 8000000, 4, 1);
  w.node = p.b.node;
  w.n = 1;
  assert_true(run2(&p, remotes_closed, &w, 20));
  r = qt_nth_remote(p.b.node, 0);
  assert_received(r, 8000000, 4);
  printf("send buffer full: EAGAIN %llu times\n",
         (unsigned long long)p.a.ep->udp.blocked_count);
  assert_true(p.a.ep->udp.blocked_count > 0);
  pair_free(&p);
}

/* The kernel refuses GSO at run time: the endpoint falls back to one
 * message per packet for good, and loses nothing. */
static void test_gso_refused(void **state) {
  pair p;
  fn_stream *s, *r;
  remote_n w;
  sp_quic_stats sa;

  (void)state;
  pair_start(&p, NULL, NULL);
  assert_int_equal(p.a.ep->udp.gso, 1);
  p.a.ep->udp.test_gso_eio = 1;
  s = open_to_b(&p, &p.lib1);
  fn_produce(p.a.node, s, 3000000, 6, 1);
  w.node = p.b.node;
  w.n = 1;
  assert_true(run2(&p, remotes_closed, &w, 20));
  r = qt_nth_remote(p.b.node, 0);
  assert_received(r, 3000000, 6);
  assert_int_equal(p.a.ep->udp.gso, 0);
  sp_quic_endpoint_get_stats(p.a.ep, &sa);
  assert_true(sa.datagrams_sent > sa.send_calls);
  pair_free(&p);
}

/* ---- flow control, single-threaded so the invariant can be checked
 * at every step ---- */

typedef struct fc_check {
  pair *p;
  fn_stream *s;
  size_t bound;
  int violated;
  uint64_t total;
} fc_check;

static int fc_done(void *arg) {
  fc_check *c = arg;
  fn_stream *r = fn_first_remote(c->p->b.node);
  uint64_t delivered = r ? r->received : 0;

  /* What the sender's transport took, minus what the receiving node
   * consumed, is at most the send buffer plus the receive window. */
  if (c->s->sent - delivered > c->bound) {
    c->violated = 1;
  }
  return r && r->received == c->total;
}

static void test_flow_control_slow_reader(void **state) {
  sp_quic_config cfg = qt_config();
  pair p;
  fc_check c;
  fn_stream *s;

  (void)state;
  cfg.stream_send_buffer = 256 * 1024;
  cfg.stream_recv_window = 128 * 1024;
  cfg.conn_recv_window = 512 * 1024;
  pair_start(&p, &cfg, &cfg);
  s = open_to_b(&p, &p.lib1);
  /* The reader takes 2 ms per delivery for its first second. */
  p.b.node->slow_us = 2000;
  p.b.node->slow_until = sp_quic_now() + SP_SECONDS;
  fn_produce(p.a.node, s, 6 * 1024 * 1024, 3, 0);
  c.p = &p;
  c.s = s;
  c.bound = cfg.stream_send_buffer + cfg.stream_recv_window;
  c.violated = 0;
  c.total = 6 * 1024 * 1024;
  assert_true(run2(&p, fc_done, &c, 20));
  assert_false(c.violated);
  assert_received(fn_first_remote(p.b.node), c.total, 3);
  assert_true(p.b.node->max_delivery <= cfg.stream_recv_window);
  /* The sender was told to wait, and its buffer never exceeded the
   * configured bound. */
  assert_true(s->would_block + s->short_sends > 0);
  assert_true(s->max_buffered <= cfg.stream_send_buffer);
  assert_true(s->writable_calls > 0);
  printf("flow control: %llu WOULD_BLOCK, %llu short sends, %llu writable "
         "calls, max %zu bytes buffered (bound %zu)\n",
         (unsigned long long)s->would_block,
         (unsigned long long)s->short_sends,
         (unsigned long long)s->writable_calls, s->max_buffered,
         cfg.stream_send_buffer);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* ---- bulk, each endpoint in its own thread ---- */

static void *run_thread(void *arg) {
  sp_quic_endpoint *ep = arg;
  intptr_t rv = sp_quic_endpoint_run(ep);
  return (void *)rv;
}

typedef struct bulk_result {
  double seconds;
  double mbps;
  sp_quic_stats sa, sb;
  uint64_t slow_calls, slow_bytes;
  fn_stream s;
} bulk_result;

/* `check`: hash both ends (else count only, for throughput figures). */
static void bulk(uint64_t total, int gso, double slow_s, int check,
                 bulk_result *out) {
  sp_quic_config cfg = qt_config();
  pair p;
  fn_stream *s, *r;
  pthread_t ta, tb;
  void *ra, *rb;
  sp_tstamp t0;

  cfg.gso = gso;
  pair_start(&p, &cfg, &cfg);
  s = open_to_b(&p, &p.lib1);
  if (slow_s > 0) {
    p.b.node->slow_us = 100000;
    p.b.node->slow_until = sp_quic_now() + (sp_tstamp)(slow_s * 1e9);
  }
  p.b.node->stop_after_bytes = total;
  p.b.node->count_only = !check;
  s->fixed_pattern = !check;
  t0 = sp_quic_now();
  fn_produce(p.a.node, s, total, 5, 0);
  assert_int_equal(pthread_create(&tb, NULL, run_thread, p.b.ep), 0);
  assert_int_equal(pthread_create(&ta, NULL, run_thread, p.a.ep), 0);
  assert_int_equal(pthread_join(tb, &rb), 0);
  out->seconds = qt_seconds(sp_quic_now() - t0);
  sp_quic_endpoint_stop(p.a.ep);
  assert_int_equal(pthread_join(ta, &ra), 0);
  assert_int_equal((intptr_t)ra, 0);
  assert_int_equal((intptr_t)rb, 0);
  r = fn_first_remote(p.b.node);
  assert_non_null(r);
  if (check) {
    assert_received(r, total, 5);
  } else {
    assert_int_equal(r->received, total);
  }
  assert_int_equal(s->sent, total);
  assert_true(s->max_buffered <= cfg.stream_send_buffer);
  /* The receiver never held more than one window for the stream. */
  assert_true(p.b.node->max_delivery <= cfg.stream_recv_window);
  out->slow_calls = p.b.node->slow_calls;
  out->slow_bytes = p.b.node->slow_bytes;
  out->mbps = (double)total / 1e6 / out->seconds;
  sp_quic_endpoint_get_stats(p.a.ep, &out->sa);
  sp_quic_endpoint_get_stats(p.b.ep, &out->sb);
  out->s = *s;
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

static void test_bulk_50mb_slow_start(void **state) {
  static bulk_result res;

  (void)state;
  bulk(50 * 1000 * 1000, 1, 1.0, 1, &res);
  /* The slow first second made the sender wait... */
  assert_true(res.s.would_block + res.s.short_sends > 0);
  assert_true(res.seconds >= 1.0);
  /* ...and while slow, the reader got at most a window per delivery. */
  assert_true(res.slow_calls > 0);
  assert_true(res.slow_bytes <= res.slow_calls * 1024 * 1024);
  printf("bulk 50 MB, reader slow for the first 1 s (100 ms per delivery): "
         "%.2f s; while slow %llu deliveries, %llu bytes; sender %llu "
         "WOULD_BLOCK, %llu short sends, max %zu bytes buffered\n",
         res.seconds, (unsigned long long)res.slow_calls,
         (unsigned long long)res.slow_bytes,
         (unsigned long long)res.s.would_block,
         (unsigned long long)res.s.short_sends, res.s.max_buffered);
}

static void report(const char *what, const bulk_result *r) {
  printf("%s: %.0f MB/s (%.2f s), sender %llu datagrams in %llu send calls "
         "(%.1f per call), receiver %llu datagrams\n",
         what, r->mbps, r->seconds,
         (unsigned long long)r->sa.datagrams_sent,
         (unsigned long long)r->sa.send_calls,
         (double)r->sa.datagrams_sent / (double)r->sa.send_calls,
         (unsigned long long)r->sb.datagrams_received);
}

static void test_bulk_throughput(void **state) {
  static bulk_result g1, g0;
  uint64_t total = 200 * 1000 * 1000;
  const char *env = getenv("SP_QUIC_BULK_MB");

  (void)state;
  if (env) {
    total = (uint64_t)atoi(env) * 1000 * 1000;
  }
  bulk(total, 1, 0, 0, &g1);
  bulk(total, 0, 0, 0, &g0);
  report("bulk, one stream through the vtable, gso=1", &g1);
  report("bulk, one stream through the vtable, gso=0", &g0);
  /* Batching works: several datagrams per send call either way. */
  assert_true(g0.sa.datagrams_sent > g0.sa.send_calls);
  assert_true(g1.sa.datagrams_sent > g1.sa.send_calls);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_streams_one_connection),
      cmocka_unit_test(test_fin_and_reset),
      cmocka_unit_test(test_many_streams),
      cmocka_unit_test(test_three_devices),
      cmocka_unit_test(test_peer_deleted),
      cmocka_unit_test(test_restarted_peer_resets),
      cmocka_unit_test(test_silent_peer_not_reused),
      cmocka_unit_test(test_idle_timeout_cut),
      cmocka_unit_test(test_lossy_network),
      cmocka_unit_test(test_send_buffer_full),
      cmocka_unit_test(test_gso_refused),
      cmocka_unit_test(test_flow_control_slow_reader),
      cmocka_unit_test(test_bulk_50mb_slow_start),
      cmocka_unit_test(test_bulk_throughput),
  };
  return QT_RUN_TESTS(tests);
}
