/*
 * sp_quic_retry_test.c: handshake slots under a flood of Initials.  Real
 * UDP on 127.0.0.0/8: the flood's Initials are genuine ones (made by a
 * client connection of a third endpoint) sent from addresses that never
 * answer, as spoofed ones would be.
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
#include <time.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

/* ---- the flood ---- */

typedef struct flood {
  qt_device atk;   /* makes the Initials; never processes its socket */
  sp_quic_addr to; /* the victim */
  uint32_t sent;
} flood;

static void flood_open(flood *f, const qt_device *victim) {
  qt_device_init(&f->atk);
  qt_device_start(&f->atk, NULL);
  assert_int_equal(
      sp_quic_addr_parse(&f->to, victim->addr, strlen(victim->addr)), 0);
  f->sent = 0;
}

/* Its connections are all dead already: nothing is sent at the end. */
static void flood_close(flood *f) { qt_device_free(&f->atk); }

/* One genuine client Initial (a ClientHello for a fresh connection id). */
static size_t make_initial(flood *f, uint8_t *out, size_t cap) {
  sp_quic_udp *u = &f->atk.ep->udp;
  sp_quic_conn *c;
  sp_uuid peer;
  size_t len;

  sp_uuid_generate(&peer);
  assert_int_equal(
      sp_quic_conn_client_new(&c, f->atk.ep, &peer, &f->to, sp_quic_now()), 0);
  sp_quic_conn_write(c, sp_quic_now());
  assert_true(u->npkts > u->head);
  len = u->pkts[u->head].len;
  assert_true(len <= cap);
  memcpy(out, u->buf + u->pkts[u->head].off, len);
  u->head = u->npkts = 0;
  /* Only the datagram was wanted; the attacker's next step sweeps it. */
  c->state = SP_QUIC_CONN_DEAD;
  return len;
}

/* Send `pkt` to `to` from 127.1.0.0 + n: every Initial from another
 * address, none of which will ever read the answer. */
static void send_spoofed(const sp_quic_addr *to, uint32_t n,
                         const uint8_t *pkt, size_t len) {
  struct sockaddr_in src;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);

  assert_true(fd >= 0);
  memset(&src, 0, sizeof(src));
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl(0x7f000000u | (0x010000u + n));
  assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
  assert_int_equal(sendto(fd, pkt, len, 0, &to->u.sa, to->len),
                   (ssize_t)len);
  close(fd);
}

/* `n` Initials; `garbage`: with their protected payload scrambled (the
 * header still passes ngtcp2_accept). */
static void flood_send(flood *f, unsigned n, int garbage) {
  uint8_t pkt[SP_QUIC_RECV_SLOT];
  unsigned i;

  for (i = 0; i < n; ++i) {
    size_t len = make_initial(f, pkt, sizeof(pkt)), k;
    for (k = garbage ? len / 2 : len; k < len; ++k) {
      pkt[k] ^= 0x5a;
    }
    send_spoofed(&f->to, f->sent++, pkt, len);
  }
  /* Sweep the attacker's dead connections. */
  assert_int_equal(sp_quic_endpoint_process(f->atk.ep, sp_quic_now()), 0);
}

/* Accepted connections still in their handshake: the slots. */
static size_t handshaking(const sp_quic_endpoint *ep) {
  size_t i, n = 0;

  for (i = 0; i < ep->nconns; ++i) {
    n += ep->conns[i]->server && ep->conns[i]->state == SP_QUIC_CONN_HANDSHAKE;
  }
  return n;
}

static void process(qt_device *d) {
  assert_int_equal(sp_quic_endpoint_process(d->ep, sp_quic_now()), 0);
}

static void wait_ms(qt_device **d, size_t n, int ms) {
  struct pollfd p[QT_MAX_DEVICES];
  size_t i;

  for (i = 0; i < n; ++i) {
    p[i].fd = sp_quic_endpoint_fd(d[i]->ep);
    p[i].events = POLLIN;
    p[i].revents = 0;
  }
  (void)poll(p, n, ms);
}

/*
 * Every handshake slot is held by an address that never answers, and
 * the flood goes on while a registered peer connects: it must get in
 * promptly (one Retry round trip), and the flood may hold no more slots
 * than the Retry threshold.
 */
static void test_flood_does_not_lock_out(void **state) {
  qt_device srv, cli;
  qt_device *d[2] = {&srv, &cli};
  flood f;
  fn_stream *cs;
  qt_wait_bytes w;
  sp_quic_stats st;
  sp_tstamp t0, deadline, next_burst;
  sp_uuid lib;
  int rv, i;
  enum { GARBAGE = 16 };

  (void)state;
  qt_device_init(&srv);
  qt_device_init(&cli);
  qt_device_start(&srv, NULL);
  qt_device_start(&cli, NULL);
  qt_know(&srv, &cli);
  qt_know(&cli, &srv);
  sp_uuid_generate(&lib);
  flood_open(&f, &srv);

  /* Garbage costs no slot (its first packet never decrypts)... */
  flood_send(&f, GARBAGE, 1);
  process(&srv);
  assert_int_equal(handshaking(srv.ep), 0);
  assert_int_equal(srv.ep->nconns, 0);
  /* ...genuine Initials do: twice as many as there are slots. */
  for (i = 0; i < 2 * SP_QUIC_MAX_HANDSHAKES / 16; ++i) {
    flood_send(&f, 16, 0);
    process(&srv);
  }
  for (i = 0; i < 20; ++i) {
    wait_ms(d, 1, 5);
    process(&srv);
  }
  printf("after %u spoofed Initials: %zu of %d handshake slots held\n",
         (unsigned)f.sent, handshaking(srv.ep), SP_QUIC_MAX_HANDSHAKES);
  /* The flood holds every slot it can without answering. */
  assert_true(handshaking(srv.ep) >= SP_QUIC_RETRY_THRESHOLD);

  t0 = sp_quic_now();
  deadline = t0 + 3 * SP_SECONDS;
  next_burst = t0;
  cs = fn_open(cli.node, sp_identity_device_id(srv.id), &lib, &rv);
  assert_non_null(cs);
  while (!qt_stream_writable(cs) && sp_quic_now() < deadline) {
    if (sp_quic_now() >= next_burst) {
      /* 800 Initials a second, a quarter of them garbage. */
      flood_send(&f, 6, 0);
      flood_send(&f, 2, 1);
      next_burst += 10 * SP_MILLISECONDS;
    }
    process(&srv);
    process(&cli);
    wait_ms(d, 2, 2);
  }
  printf("genuine peer %s after %.1f ms; %u spoofed Initials in all; "
         "%zu handshakes in progress at the server\n",
         qt_stream_writable(cs) ? "connected" : "still locked out",
         qt_seconds(sp_quic_now() - t0) * 1e3, (unsigned)f.sent,
         handshaking(srv.ep));
  assert_true(qt_stream_writable(cs));

  /* And it carries bytes. */
  assert_int_equal(fn_send(cli.node, cs, "through", 7), 7);
  w.node = srv.node;
  w.bytes = 7;
  assert_true(qt_run(d, 2, NULL, qt_remote_got, &w, 2));
  sp_quic_endpoint_get_stats(cli.ep, &st);
  assert_int_equal(st.handshakes_failed, 0);
  assert_int_equal(st.connections_opened, 1);
  /* The genuine handshake is over; the flood's never end before their
   * timeout, and took no slot above the threshold: the rest got Retries
   * they never answered. */
  printf("slots held by the flood: %zu; Retries sent: %llu\n",
         handshaking(srv.ep), (unsigned long long)srv.ep->retries_sent);
  assert_int_equal(handshaking(srv.ep), SP_QUIC_RETRY_THRESHOLD);
  assert_true(srv.ep->retries_sent >=
              f.sent - GARBAGE - SP_QUIC_RETRY_THRESHOLD);
  assert_int_equal(srv.ep->tokens_refused, 0);

  flood_close(&f);
  qt_device_free(&cli);
  qt_device_free(&srv);
}

/* ---- a relay that can hold back the client's Initial with a token ---- */

typedef struct holder {
  qt_relay r;
  uint8_t held[SP_QUIC_RECV_SLOT];
  size_t heldlen;
} holder;

static void holder_pump(holder *h) {
  uint8_t buf[65536];

  for (;;) {
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(h->r.fd, buf, sizeof(buf), 0,
                         (struct sockaddr *)&from, &flen);
    ngtcp2_pkt_hd hd;

    if (n < 0) {
      return;
    }
    if (flen == h->r.server_len && memcmp(&from, &h->r.server, flen) == 0) {
      if (h->r.have_client) {
        (void)sendto(h->r.fd, buf, (size_t)n, 0,
                     (struct sockaddr *)&h->r.client, h->r.client_len);
      }
      continue;
    }
    memcpy(&h->r.client, &from, flen);
    h->r.client_len = flen;
    h->r.have_client = 1;
    if (h->heldlen == 0 && ngtcp2_accept(&hd, buf, (size_t)n) == 0 &&
        hd.token.len > 0) {
      assert_true((size_t)n <= sizeof(h->held));
      memcpy(h->held, buf, (size_t)n);
      h->heldlen = (size_t)n;
      continue;
    }
    (void)sendto(h->r.fd, buf, (size_t)n, 0, (struct sockaddr *)&h->r.server,
                 h->r.server_len);
  }
}

static void holder_release(holder *h) {
  assert_int_equal(sendto(h->r.fd, h->held, h->heldlen, 0,
                          (struct sockaddr *)&h->r.server, h->r.server_len),
                   (ssize_t)h->heldlen);
}

/* Drive `d` through the holder until `done(arg)`, for `seconds` at most. */
static int drive(qt_device **d, size_t n, holder *h, int (*done)(void *),
                 void *arg, double seconds) {
  sp_tstamp deadline = sp_quic_now() + (sp_tstamp)(seconds * 1e9);
  size_t i;

  while (sp_quic_now() < deadline) {
    for (i = 0; i < n; ++i) {
      process(d[i]);
    }
    holder_pump(h);
    if (done(arg)) {
      return 1;
    }
    wait_ms(d, n, 1);
  }
  return 0;
}

static int have_held(void *arg) { return ((holder *)arg)->heldlen > 0; }

/*
 * Our client follows a Retry (every Initial without a token gets one
 * here), and a token is good only from the address it was made for and
 * for SP_QUIC_RETRY_TOKEN_TTL: someone who saw it elsewhere on the path
 * cannot take a slot with it.
 */
static void test_retry_token(void **state) {
  qt_device srv, cli;
  qt_device *d[2] = {&srv, &cli};
  holder h;
  fn_stream *cs, *ss;
  qt_wait_bytes w;
  sp_quic_stats sa, sb;
  sp_quic_addr to;
  sp_uuid lib;
  qt_entry *e;
  int rv;

  (void)state;
  qt_device_init(&srv);
  qt_device_init(&cli);
  qt_device_start(&srv, NULL);
  qt_device_start(&cli, NULL);
  srv.ep->retry_threshold = 0;
  qt_know(&srv, &cli);
  qt_know(&cli, &srv);
  memset(&h, 0, sizeof(h));
  qt_relay_open(&h.r, srv.addr);
  e = qt_registry_find(&cli.reg, sp_identity_device_id(srv.id));
  snprintf(e->hints, sizeof(e->hints), "%s", h.r.addr);
  assert_int_equal(sp_quic_addr_parse(&to, srv.addr, strlen(srv.addr)), 0);
  sp_uuid_generate(&lib);

  cs = fn_open(cli.node, sp_identity_device_id(srv.id), &lib, &rv);
  assert_non_null(cs);
  assert_int_equal(fn_send(cli.node, cs, "after retry", 11), 11);
  /* The Retry came back and the client answered it with its token. */
  assert_true(drive(d, 2, &h, have_held, &h, 2));
  assert_int_equal(srv.ep->retries_sent, 1);
  assert_int_equal(srv.ep->nconns, 0);

  /* The same datagram from another address: refused, no slot. */
  send_spoofed(&to, 7, h.held, h.heldlen);
  {
    int i;
    for (i = 0; i < 20 && srv.ep->tokens_refused == 0; ++i) {
      wait_ms(d, 1, 5);
      process(&srv);
    }
  }
  assert_int_equal(srv.ep->tokens_refused, 1);
  assert_int_equal(srv.ep->nconns, 0);
  assert_int_equal(srv.ep->retries_sent, 1);

  /* From the address that got the Retry: admitted. */
  holder_release(&h);
  w.node = srv.node;
  w.bytes = 11;
  assert_true(drive(d, 2, &h, qt_remote_got, &w, 2));
  ss = fn_first_remote(srv.node);
  assert_true(sp_uuid_equal(&ss->peer, sp_identity_device_id(cli.id)));
  assert_int_equal(fn_send(srv.node, ss, "ok", 2), 2);
  assert_true(drive(d, 2, &h, qt_stream_writable, cs, 2));
  sp_quic_endpoint_get_stats(cli.ep, &sa);
  sp_quic_endpoint_get_stats(srv.ep, &sb);
  assert_int_equal(sa.handshakes_failed, 0);
  assert_int_equal(sb.handshakes_failed, 0);
  assert_int_equal(sb.connections_accepted, 1);
  assert_int_equal(srv.ep->retries_sent, 1);

  /* The right address, but the token has expired: refused. */
  assert_int_equal(srv.ep->nconns, 1);
  assert_int_equal(sp_quic_conn_accept(srv.ep, &srv.ep->conns[0]->remote,
                                       h.held, h.heldlen,
                                       sp_quic_now() + SP_QUIC_RETRY_TOKEN_TTL +
                                           SP_SECONDS),
                   0);
  assert_int_equal(srv.ep->tokens_refused, 2);
  assert_int_equal(srv.ep->nconns, 1);

  qt_relay_close(&h.r);
  qt_device_free(&cli);
  qt_device_free(&srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flood_does_not_lock_out),
      cmocka_unit_test(test_retry_token),
  };
  return QT_RUN_TESTS(tests);
}
