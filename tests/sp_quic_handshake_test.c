/*
 * sp_quic_handshake_test.c: connecting, mutual authentication against the
 * registry, ALPN, and what refused peers see.  Real UDP on 127.0.0.1.
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
#include "sync_protocol/version.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"
#include "sp_test_mem.h"

typedef struct pair {
  qt_device a; /* client: opens the stream */
  qt_device b; /* server */
  sp_uuid lib;
} pair;

static void pair_start(pair *p, const sp_quic_config *ca,
                       const sp_quic_config *cb) {
  qt_device_init(&p->a);
  qt_device_init(&p->b);
  qt_device_start(&p->a, ca);
  qt_device_start(&p->b, cb);
  qt_know(&p->a, &p->b);
  qt_know(&p->b, &p->a);
  sp_uuid_generate(&p->lib);
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

static void run2(pair *p, int (*done)(void *), void *arg, double s) {
  qt_device *d[2] = {&p->a, &p->b};
  assert_true(qt_run(d, 2, NULL, done, arg, s));
}

static void run2_for(pair *p, double s) {
  qt_device *d[2] = {&p->a, &p->b};
  qt_run_for(d, 2, NULL, s);
}

static int stream_got(void *arg) {
  fn_stream *s = arg;
  return s->received >= 15;
}

static int stream_closed(void *arg) {
  fn_stream *s = arg;
  return s->closed;
}

static void test_handshake_one_stream(void **state) {
  static const char msg[] = "hello over quic";
  pair p;
  fn_stream *cs, *ss;
  qt_wait_bytes w;
  sp_quic_stats sa, sb;
  int rv;

  (void)state;
  pair_start(&p, NULL, NULL);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_int_equal(rv, 0);
  assert_non_null(cs);
  /* Taken before the connection exists: buffered until it does. */
  assert_int_equal(fn_send(p.a.node, cs, msg, 15), 15);

  w.node = p.b.node;
  w.bytes = 15;
  run2(&p, qt_remote_got, &w, 5);
  ss = fn_first_remote(p.b.node);
  assert_int_equal(p.b.node->opened_calls, 1);
  /* The server learns who the client is from the handshake alone. */
  assert_true(sp_uuid_equal(&ss->peer, sp_identity_device_id(p.a.id)));
  assert_int_equal(ss->received, 15);
  assert_memory_equal(ss->kept, msg, 15);
  /* The client is told once the stream can carry bytes (perhaps only
   * after the server already has them: the event is delivered in the
   * client's next step). */
  run2(&p, qt_stream_writable, cs, 5);

  assert_int_equal(fn_send(p.b.node, ss, ss->kept, 15), 15);
  run2(&p, stream_got, cs, 5);
  assert_memory_equal(cs->kept, msg, 15);
  assert_false(cs->closed);
  assert_false(ss->closed);

  /* Let the last ACKs land before comparing both sides' counters. */
  run2_for(&p, 0.3);
  sp_quic_endpoint_get_stats(p.a.ep, &sa);
  sp_quic_endpoint_get_stats(p.b.ep, &sb);
  assert_int_equal(sa.connections_opened, 1);
  assert_int_equal(sa.connections_accepted, 0);
  assert_int_equal(sb.connections_accepted, 1);
  assert_int_equal(sb.connections_opened, 0);
  assert_int_equal(sa.handshakes_failed, 0);
  assert_int_equal(sb.handshakes_failed, 0);
  assert_int_equal(sa.stream_bytes_sent, 15);
  assert_int_equal(sa.stream_bytes_received, 15);
  assert_int_equal(sb.stream_bytes_sent, 15);
  assert_int_equal(sb.stream_bytes_received, 15);
  /* What one side sent is what the other received (loopback: no loss). */
  assert_true(sa.datagrams_sent > 0 && sa.send_calls > 0);
  assert_int_equal(sa.bytes_sent, sb.bytes_received);
  assert_int_equal(sb.bytes_sent, sa.bytes_received);
  assert_int_equal(sa.datagrams_sent, sb.datagrams_received);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

static int got4(void *arg) {
  fn_stream *s = arg;
  return s->received >= 4;
}

/* Once the handshake is confirmed both sides free their TLS session
 * (memory per connection), and the connection keeps working without it:
 * a key update (ngtcp2's own) and CRYPTO data a peer sends afterwards (a
 * session ticket, say) are handled, data flows both ways after both. */
static void test_tls_released_after_handshake(void **state) {
  static const uint8_t ticket[] = {4, 0, 0, 4, 1, 2, 3, 4};
  pair p;
  fn_stream *cs, *ss;
  qt_wait_bytes w;
  sp_quic_conn *ca, *cb;
  int rv;

  (void)state;
  pair_start(&p, NULL, NULL);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_int_equal(rv, 0);
  assert_int_equal(fn_send(p.a.node, cs, "ping", 4), 4);
  w.node = p.b.node;
  w.bytes = 4;
  run2(&p, qt_remote_got, &w, 5);
  ss = fn_first_remote(p.b.node);
  run2_for(&p, 0.2);
  assert_int_equal(p.a.ep->nconns, 1);
  assert_int_equal(p.b.ep->nconns, 1);
  ca = p.a.ep->conns[0];
  cb = p.b.ep->conns[0];
  assert_true(ca->confirmed && cb->confirmed);
  assert_null(ca->session);
  assert_null(cb->session);

  /* The server sends 1-RTT CRYPTO data; the client initiates a key
   * update.  Both must leave the connection usable. */
  assert_int_equal(ngtcp2_conn_submit_crypto_data(
                       cb->qc, NGTCP2_CRYPTO_LEVEL_APPLICATION, ticket,
                       sizeof(ticket)),
                   0);
  assert_int_equal(ngtcp2_conn_initiate_key_update(ca->qc, sp_quic_now()), 0);
  p.b.ep->output_pending = 1;
  p.a.ep->output_pending = 1;
  assert_int_equal(fn_send(p.b.node, ss, "pong", 4), 4);
  run2(&p, got4, cs, 5);
  assert_int_equal(fn_send(p.a.node, cs, "ping", 4), 4);
  w.bytes = 8;
  run2(&p, qt_remote_got, &w, 5);
  assert_int_equal(p.a.ep->nconns, 1);
  assert_true(sp_quic_conn_usable(p.a.ep->conns[0]));
  assert_true(sp_quic_conn_usable(p.b.ep->conns[0]));
  assert_false(cs->closed);
  assert_false(ss->closed);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* IPv6 on both sides, then a dual-stack server ("[::]:0") reached over
 * IPv4: it sees the client as a v4-mapped address, same device. */
static void test_ipv6_and_dual_stack(void **state) {
  sp_quic_config c6 = qt_config(), any6 = qt_config();
  pair p;
  fn_stream *cs;
  qt_wait_bytes w;
  qt_entry *e;
  int rv;

  (void)state;
  c6.bind_address = "[::1]:0";
  pair_start(&p, &c6, &c6);
  assert_memory_equal(p.b.addr, "[::1]:", 6);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  assert_int_equal(fn_send(p.a.node, cs, "over six", 8), 8);
  w.node = p.b.node;
  w.bytes = 8;
  run2(&p, qt_remote_got, &w, 5);
  assert_true(sp_uuid_equal(&fn_first_remote(p.b.node)->peer,
                            sp_identity_device_id(p.a.id)));
  pair_free(&p);

  any6.bind_address = "[::]:0";
  pair_start(&p, NULL, &any6);
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  snprintf(e->hints, sizeof(e->hints), "127.0.0.1:%u",
           (unsigned)sp_quic_endpoint_port(p.b.ep));
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  assert_int_equal(fn_send(p.a.node, cs, "over four", 9), 9);
  w.node = p.b.node;
  w.bytes = 9;
  run2(&p, qt_remote_got, &w, 5);
  assert_true(sp_uuid_equal(&fn_first_remote(p.b.node)->peer,
                            sp_identity_device_id(p.a.id)));
  pair_free(&p);
}

/* Median time from open_stream to "writable" (handshake completed). */
static void test_handshake_time(void **state) {
  enum { N = 21 };
  double t[N], tmp;
  qt_device srv;
  size_t i, j;

  (void)state;
  qt_device_init(&srv);
  qt_device_start(&srv, NULL);
  for (i = 0; i < N; ++i) {
    qt_device cli;
    qt_device *d[2] = {&cli, &srv};
    fn_stream *cs;
    sp_tstamp t0;
    int rv;

    qt_device_init(&cli);
    qt_device_start(&cli, NULL);
    qt_know(&cli, &srv);
    qt_know(&srv, &cli);
    t0 = sp_quic_now();
    cs = fn_open(cli.node, sp_identity_device_id(srv.id), &cli.reg.dev[0].id,
                 &rv);
    assert_non_null(cs);
    assert_true(qt_run(d, 2, NULL, qt_stream_writable, cs, 5));
    t[i] = qt_seconds(sp_quic_now() - t0) * 1e3;
    qt_device_free(&cli);
    /* The server forgets the client; its connection idles out later. */
    srv.reg.n = 0;
  }
  for (i = 0; i < N; ++i) {
    for (j = i + 1; j < N; ++j) {
      if (t[j] < t[i]) {
        tmp = t[i];
        t[i] = t[j];
        t[j] = tmp;
      }
    }
  }
  printf("handshake (open_stream -> writable, new connection, loopback): "
         "median %.2f ms, min %.2f ms, max %.2f ms (n=%d)\n",
         t[N / 2], t[0], t[N - 1], N);
  qt_device_free(&srv);
}

static void refused_common(pair *p, int client_reason) {
  fn_stream *cs;
  sp_quic_stats sa, sb;
  int rv;

  cs = fn_open(p->a.node, sp_identity_device_id(p->b.id), &p->lib, &rv);
  assert_non_null(cs);
  (void)fn_send(p->a.node, cs, "secret", 6);
  run2(p, stream_closed, cs, 5);
  assert_int_equal(cs->closed_reason, client_reason);
  /* Let anything in flight land: still nothing at the server's node. */
  run2_for(p, 0.3);
  assert_int_equal(p->b.node->opened_calls, 0);
  assert_int_equal(p->b.node->data_calls, 0);
  sp_quic_endpoint_get_stats(p->a.ep, &sa);
  sp_quic_endpoint_get_stats(p->b.ep, &sb);
  assert_int_equal(sa.handshakes_failed, 1);
  assert_int_equal(sb.handshakes_failed, 1);
  assert_int_equal(sb.stream_bytes_received, 0);
  /* A later send is refused, and the stream is gone for the node. */
  assert_true(fn_send(p->a.node, cs, "x", 1) < 0);
  assert_promises_kept(p->a.node);
  assert_promises_kept(p->b.node);
}

/* The server's registry does not know the client's key. */
static void test_unknown_client_key(void **state) {
  pair p;

  (void)state;
  pair_start(&p, NULL, NULL);
  p.b.reg.n = 0;
  refused_common(&p, SP_ERR_UNKNOWN_KEY);
  pair_free(&p);
}

/* The client's registry says the server device has another key. */
static void test_unknown_server_key(void **state) {
  pair p;
  qt_entry *e;

  (void)state;
  pair_start(&p, NULL, NULL);
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  e->key[0] ^= 0x01;
  refused_common(&p, SP_ERR_UNKNOWN_KEY);
  pair_free(&p);
}

/* The server is a registered device, but not the one the client dialled
 * (its key belongs to device C). */
static void test_server_is_other_device(void **state) {
  pair p;
  sp_identity *c;
  qt_entry *e;

  (void)state;
  pair_start(&p, NULL, NULL);
  assert_int_equal(sp_identity_generate(&c, NULL, NULL), 0);
  /* The client knows C at B's address, and B under its own id. */
  qt_registry_add(&p.a.reg, c, p.b.addr);
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  sp_identity_public_key(c, e->key);
  qt_registry_find(&p.a.reg, sp_identity_device_id(c))->present = 0;
  /* Now: device B -> key of C; no device has B's real key. */
  refused_common(&p, SP_ERR_UNKNOWN_KEY);
  sp_identity_del(c);
  pair_free(&p);
}

/* The server's registry lists the client's device id twice, under another
 * key first (a copied id, a reinstall): the client's key leads to that id,
 * but it is not the device's one key, so the handshake is refused. */
static void test_second_key_for_device(void **state) {
  pair p;
  sp_identity *c;
  qt_entry *e;

  (void)state;
  pair_start(&p, NULL, NULL);
  assert_int_equal(sp_identity_generate(&c, NULL, NULL), 0);
  e = qt_registry_find(&p.b.reg, sp_identity_device_id(p.a.id));
  sp_identity_public_key(c, e->key);
  assert_true(p.b.reg.n < QT_MAX_DEVICES);
  e = &p.b.reg.dev[p.b.reg.n++];
  e->present = 1;
  e->id = *sp_identity_device_id(p.a.id);
  sp_identity_public_key(p.a.id, e->key);
  /* Now: device_by_key(A's key) = A, device_key(A) = C's key. */
  refused_common(&p, SP_ERR_UNKNOWN_KEY);
  sp_identity_del(c);
  pair_free(&p);
}

/* Someone who copied device B's certificate (but not its key) connects
 * as B: the TLS CertificateVerify cannot be made, the server refuses. */
static void test_forged_certificate(void **state) {
  pair p;
  qt_device victim;
  fn_stream *cs;
  sp_quic_stats sb;
  int rv;

  (void)state;
  pair_start(&p, NULL, NULL);
  qt_device_init(&victim);
  /* The server knows the victim (registered, trusted) but not A. */
  p.b.reg.n = 0;
  qt_know(&p.b, &victim);
  assert_int_equal(sp_quic_endpoint_test_forge_cert(p.a.ep, victim.id), 0);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  (void)fn_send(p.a.node, cs, "i am the victim", 15);
  run2(&p, stream_closed, cs, 5);
  assert_true(cs->closed_reason < 0);
  run2_for(&p, 0.3);
  assert_int_equal(p.b.node->opened_calls, 0);
  sp_quic_endpoint_get_stats(p.b.ep, &sb);
  assert_int_equal(sb.handshakes_failed, 1);
  assert_int_equal(sb.stream_bytes_received, 0);
  qt_device_free(&victim);
  pair_free(&p);
}

/* The same forging client, when the key matches: it gets through.  This
 * proves the test above fails for the signature, not for the setup. */
static void test_forge_hook_sound(void **state) {
  pair p;
  fn_stream *cs;
  qt_wait_bytes w;
  int rv;

  (void)state;
  pair_start(&p, NULL, NULL);
  assert_int_equal(sp_quic_endpoint_test_forge_cert(p.a.ep, p.a.id), 0);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  assert_int_equal(fn_send(p.a.node, cs, "genuine", 7), 7);
  w.node = p.b.node;
  w.bytes = 7;
  run2(&p, qt_remote_got, &w, 5);
  pair_free(&p);
}

static void test_wrong_alpn(void **state) {
  sp_quic_config ca = qt_config();
  pair p;

  (void)state;
  ca.alpn = "/spacedrive/sync/0.9.0";
  pair_start(&p, &ca, NULL);
  refused_common(&p, SP_ERR_ALPN);
  pair_free(&p);
}

static void test_unreachable(void **state) {
  sp_quic_config ca = qt_config();
  pair p;
  qt_entry *e;
  fn_stream *cs;
  sp_tstamp t0;
  int rv;

  (void)state;
  ca.idle_timeout = 1 * SP_SECONDS;
  pair_start(&p, &ca, NULL);
  /* No address known: refused at once. */
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  e->hints[0] = '\0';
  assert_null(fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv));
  assert_int_equal(rv, SP_ERR_UNREACHABLE);
  /* A device the registry does not know: no address either. */
  assert_null(fn_open(p.a.node, &p.lib, &p.lib, &rv));
  assert_int_equal(rv, SP_ERR_UNREACHABLE);
  {
    sp_uuid nil;
    memset(&nil, 0, sizeof(nil));
    assert_null(fn_open(p.a.node, &nil, &p.lib, &rv));
    assert_int_equal(rv, SP_ERR_INVALID_ARGUMENT);
  }
  /* Only unparseable or IPv6 hints for an IPv4 socket. */
  snprintf(e->hints, sizeof(e->hints), "nonsense, [::1]:4433");
  assert_null(fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv));
  assert_int_equal(rv, SP_ERR_UNREACHABLE);

  /* An address nobody answers at: the handshake times out. */
  qt_device_stop(&p.b);
  snprintf(e->hints, sizeof(e->hints), "bad, %s", p.b.addr);
  t0 = sp_quic_now();
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  {
    qt_device *d[1] = {&p.a};
    assert_true(qt_run(d, 1, NULL, stream_closed, cs, 5));
  }
  assert_int_equal(cs->closed_reason, SP_ERR_UNREACHABLE);
  assert_true(sp_quic_now() - t0 >= SP_SECONDS / 2);
  pair_free(&p);
}

/* A node that refuses a stream: the peer sees it closed with that code. */
static void test_node_refuses_stream(void **state) {
  pair p;
  fn_stream *cs;
  int rv;

  (void)state;
  pair_start(&p, NULL, NULL);
  p.b.node->refuse_open = SP_ERR_NOT_MEMBER;
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  assert_int_equal(fn_send(p.a.node, cs, "hi", 2), 2);
  run2(&p, stream_closed, cs, 5);
  assert_int_equal(cs->closed_reason, SP_ERR_NOT_MEMBER);
  assert_int_equal(p.b.node->opened_calls, 1);
  assert_int_equal(p.b.node->data_calls, 0);
  assert_promises_kept(p.a.node);
  pair_free(&p);
}

static void test_new_arguments(void **state) {
  sp_quic_config cfg = qt_config();
  qt_device d;
  sp_quic_endpoint *ep = NULL;
  sp_registry reg;
  char buf[64];

  (void)state;
  qt_device_init(&d);
  reg = d.reg.reg;
  assert_int_equal(sp_quic_endpoint_new(NULL, &cfg, d.id, &reg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_quic_endpoint_new(&ep, NULL, d.id, &reg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, NULL, &reg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  cfg.version = 99;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_VERSION);
  cfg = qt_config();
  reg.version = 7;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_VERSION);
  reg = d.reg.reg;
  reg.device_by_key = NULL;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  reg = d.reg.reg;
  cfg.alpn = "";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  cfg = qt_config();
  cfg.stream_send_buffer = 0;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  cfg = qt_config();
  cfg.bind_address = "localhost:0";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_ADDRESS);
  cfg.bind_address = "127.0.0.1:99999";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_ADDRESS);
  /* An address not on this host. */
  cfg.bind_address = "192.0.2.1:0";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL),
                   SP_ERR_IO);
  assert_null(ep);

  /* IPv6, with a fixed port taken from a first endpoint. */
  cfg.bind_address = "[::1]:0";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, d.id, &reg, NULL), 0);
  assert_int_equal(sp_quic_endpoint_local_address(ep, buf, sizeof(buf)), 0);
  assert_memory_equal(buf, "[::1]:", 6);
  assert_int_equal((unsigned)atoi(buf + 6), sp_quic_endpoint_port(ep));
  assert_true(sp_quic_endpoint_port(ep) != 0);
  assert_int_equal(sp_quic_endpoint_local_address(ep, buf, 5), SP_ERR_NOBUF);
  assert_true(sp_quic_endpoint_fd(ep) >= 0);
  assert_int_equal(sp_quic_endpoint_get_expiry(ep), SP_TSTAMP_MAX);
  {
    sp_quic_endpoint *ep2 = NULL;
    char same[64];
    snprintf(same, sizeof(same), "[::1]:%u", sp_quic_endpoint_port(ep));
    cfg.bind_address = same;
    assert_int_equal(sp_quic_endpoint_new(&ep2, &cfg, d.id, &reg, NULL),
                     SP_ERR_IO);
  }
  sp_quic_endpoint_del(ep);
  sp_quic_endpoint_del(NULL);
  qt_device_free(&d);
}

static int new_body(const sp_mem *mem, void *arg) {
  qt_device *d = arg;
  sp_quic_config cfg = qt_config();
  sp_quic_endpoint *ep = NULL;
  int rv = sp_quic_endpoint_new(&ep, &cfg, d->id, &d->reg.reg, mem);

  if (rv == 0) {
    sp_quic_endpoint_del(ep);
  }
  return rv;
}

static void test_new_alloc_failures(void **state) {
  qt_device d;

  (void)state;
  qt_device_init(&d);
  assert_true(sp_test_mem_fail_each(new_body, &d, NULL) > 3);
  qt_device_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handshake_one_stream),
      cmocka_unit_test(test_handshake_time),
      cmocka_unit_test(test_tls_released_after_handshake),
      cmocka_unit_test(test_ipv6_and_dual_stack),
      cmocka_unit_test(test_unknown_client_key),
      cmocka_unit_test(test_unknown_server_key),
      cmocka_unit_test(test_server_is_other_device),
      cmocka_unit_test(test_second_key_for_device),
      cmocka_unit_test(test_forged_certificate),
      cmocka_unit_test(test_forge_hook_sound),
      cmocka_unit_test(test_wrong_alpn),
      cmocka_unit_test(test_unreachable),
      cmocka_unit_test(test_node_refuses_stream),
      cmocka_unit_test(test_new_arguments),
      cmocka_unit_test(test_new_alloc_failures),
  };
  return QT_RUN_TESTS(tests);
}
