/*
 * sp_quic_liveness_test.c: how soon an endpoint learns that its peer is
 * gone, over real UDP on 127.0.0.1, and that a connection found dead is
 * never used again.
 *
 * A "crash" is a peer endpoint deleted with every send failing (its
 * CONNECTION_CLOSE never leaves), as kill -9 would leave it; a "restart"
 * binds a new endpoint with the same key on the same address.  F is the
 * follower, L the leader; the timers are scaled down for speed, and the
 * defaults are checked against the goal separately.
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

#define MS (SP_SECONDS / 1000)

typedef struct lv {
  qt_device f, l;
  char l_addr[64];
  sp_uuid lib;
  /* The stream carrying the library, on F's node and on L's. */
  fn_stream *fs, *ls;
  sp_tstamp crashed_at;
} lv;

static int run_both(lv *t, int (*done)(void *), void *arg, double s) {
  qt_device *d[2] = {&t->f, &t->l};
  return qt_run(d, 2, NULL, done, arg, s);
}

static int is_closed(void *arg) { return ((fn_stream *)arg)->closed; }

typedef struct has {
  sp_node *node;
  uint64_t bytes;
} has;

/* The node's latest remote stream holds `bytes`. */
static int last_remote_has(void *arg) {
  has *w = arg;
  size_t i;

  for (i = w->node->nstreams; i-- > 0;) {
    if (w->node->streams[i].remote) {
      return w->node->streams[i].received >= w->bytes;
    }
  }
  return 0;
}

static fn_stream *last_remote(sp_node *n) {
  size_t i;

  for (i = n->nstreams; i-- > 0;) {
    if (n->streams[i].remote) {
      return &n->streams[i];
    }
  }
  return NULL;
}

/* F and L know each other.  `f_dials`: F opens the stream (a follower
 * without an address); else L does (F listens, L dials it). */
static void lv_start(lv *t, const sp_quic_config *fcfg, int f_dials) {
  qt_device *opener, *other;
  has w;
  int rv;

  qt_device_init(&t->f);
  qt_device_init(&t->l);
  qt_device_start(&t->f, fcfg);
  qt_device_start(&t->l, NULL);
  snprintf(t->l_addr, sizeof(t->l_addr), "%s", t->l.addr);
  qt_know(&t->f, &t->l);
  qt_know(&t->l, &t->f);
  sp_uuid_generate(&t->lib);
  opener = f_dials ? &t->f : &t->l;
  other = f_dials ? &t->l : &t->f;
  t->fs = fn_open(opener->node, sp_identity_device_id(other->id), &t->lib,
                  &rv);
  assert_non_null(t->fs);
  assert_int_equal(fn_send(opener->node, t->fs, "hello", 5), 5);
  w.node = other->node;
  w.bytes = 5;
  assert_true(run_both(t, last_remote_has, &w, 5));
  t->ls = last_remote(other->node);
  /* Settle: what was in flight is acknowledged before any crash. */
  run_both(t, NULL, NULL, 0.2);
  if (!f_dials) {
    fn_stream *x = t->fs;
    t->fs = t->ls;
    t->ls = x;
  }
}

/* L dies without a word. */
static void lv_crash(lv *t) {
  t->l.ep->udp.test_eagain_every = 1;
  qt_device_stop(&t->l);
  t->crashed_at = sp_quic_now();
}

/* L comes back with its key on its address. */
static void lv_restart(lv *t) {
  sp_quic_config cfg = qt_config();

  cfg.bind_address = t->l_addr;
  qt_device_start(&t->l, &cfg);
}

static void lv_free(lv *t) {
  qt_device_free(&t->f);
  qt_device_free(&t->l);
}

/* Wait (driving F, and L when it runs) until F's stream is closed;
 * returns the seconds it took. */
static double wait_f_closed(lv *t, double limit) {
  sp_tstamp t0 = sp_quic_now();
  qt_device *d[2] = {&t->f, &t->l};
  int done = qt_run(d, t->l.ep ? 2 : 1, NULL, is_closed, t->fs, limit);
  double took = qt_seconds(sp_quic_now() - t0);

  if (!done) {
    print_error("F's stream still open after %.2f s\n", took);
  }
  assert_true(done);
  print_message("  F noticed %.3f s after the crash, %.3f s after waiting "
                "began\n",
                qt_seconds(sp_quic_now() - t->crashed_at), took);
  return took;
}

/* L and F connected (F dialling if `f_dials`) with a 300 ms keep-alive,
 * `ack_timeout` and a 60 s idle timeout, run for `idle` seconds; then L
 * crashes (and starts again on its address if `restart`).  Returns how
 * long F took to find its connection lost.  `t` stays up (lv_free). */
static double crash_and_wait_lost(lv *t, sp_duration ack_timeout, int f_dials,
                                  double idle, int restart) {
  sp_quic_config cfg = qt_config();
  double took;

  cfg.keep_alive = 300 * MS;
  cfg.ack_timeout = ack_timeout;
  cfg.idle_timeout = 60 * SP_SECONDS;
  lv_start(t, &cfg, f_dials);
  run_both(t, NULL, NULL, idle);
  assert_false(t->fs->closed);
  lv_crash(t);
  if (restart) {
    lv_restart(t);
  }
  took = wait_f_closed(t, 5);
  assert_int_equal(t->fs->closed_reason, SP_ERR_CONNECTION_LOST);
  return took;
}

/* The defaults meet the goal: a caught-up follower notices a crashed
 * leader within 10 s (a PING after keep_alive, then a reset within a
 * round trip, or ack_timeout with no answer at all). */
static void test_defaults_meet_goal(void **state) {
  sp_quic_config cfg;

  (void)state;
  sp_quic_config_default(&cfg);
  assert_int_equal(cfg.version, SP_QUIC_CONFIG_VERSION);
  assert_true(cfg.keep_alive > 0);
  assert_true(cfg.ack_timeout > 0);
  assert_true(cfg.keep_alive + cfg.ack_timeout <= 9 * SP_SECONDS);
  /* The PING must come before the idle timeout could end the link. */
  assert_true(cfg.keep_alive < cfg.idle_timeout);
}

/* A version 1 caller's struct has no keep_alive/ack_timeout: the
 * endpoint must not read past it and takes the defaults. */
static void test_version1_config(void **state) {
  sp_quic_config def, old;
  unsigned char *v1;
  qt_device d;

  (void)state;
  sp_quic_config_default(&def);
  old = def;
  old.version = 1;
  old.bind_address = "127.0.0.1:0";
  /* Only the version 1 bytes exist (the sanitizers catch a read past). */
  v1 = malloc(offsetof(sp_quic_config, keep_alive));
  assert_non_null(v1);
  memcpy(v1, &old, offsetof(sp_quic_config, keep_alive));
  qt_device_init(&d);
  assert_int_equal(sp_quic_endpoint_new(&d.ep, (const sp_quic_config *)v1,
                                        d.id, &d.reg.reg, NULL),
                   0);
  assert_int_equal(d.ep->cfg.keep_alive, def.keep_alive);
  assert_int_equal(d.ep->cfg.ack_timeout, def.ack_timeout);
  sp_quic_endpoint_del(d.ep);
  d.ep = NULL;
  qt_device_free(&d);
  free(v1);
}

/* keep_alive and ack_timeout above SP_QUIC_MAX_TIMER (SP_TSTAMP_MAX meant
 * as "never") would overflow the deadlines they are added to: refused,
 * while the maximum itself and 0 (off) are accepted. */
static void test_timer_range_checked(void **state) {
  static const sp_duration bad[] = {SP_QUIC_MAX_TIMER + 1, SP_TSTAMP_MAX,
                                    SP_TSTAMP_MAX / 2};
  sp_quic_config cfg;
  qt_device d;
  size_t i;
  int field;

  (void)state;
  for (field = 0; field < 2; ++field) {
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
      sp_quic_config_default(&cfg);
      cfg.bind_address = "127.0.0.1:0";
      *(field ? &cfg.ack_timeout : &cfg.keep_alive) = bad[i];
      qt_device_init(&d);
      assert_int_equal(
          sp_quic_endpoint_new(&d.ep, &cfg, d.id, &d.reg.reg, NULL),
          SP_ERR_INVALID_ARGUMENT);
      qt_device_free(&d);
    }
  }
  sp_quic_config_default(&cfg);
  cfg.bind_address = "127.0.0.1:0";
  for (i = 0; i < 2; ++i) {
    cfg.keep_alive = i ? 0 : SP_QUIC_MAX_TIMER;
    cfg.ack_timeout = i ? 0 : SP_QUIC_MAX_TIMER;
    qt_device_init(&d);
    assert_int_equal(sp_quic_endpoint_new(&d.ep, &cfg, d.id, &d.reg.reg, NULL),
                     0);
    sp_quic_endpoint_del(d.ep);
    d.ep = NULL;
    qt_device_free(&d);
  }
}

/* Item 3: F dialled L, the link is idle, L is killed and restarted.  F's
 * keep-alive PING draws a stateless reset from the new L: F learns
 * within one keep-alive interval, not at its next Heartbeat (30 s). */
static void test_restarted_peer_noticed_by_keep_alive(void **state) {
  double took;
  lv t;

  (void)state;
  /* The ack timeout is not what should find it here.  Idle for a while
   * first: keep-alives flow, nothing breaks.  (Not a multiple of the
   * interval: the crash falls between two PINGs.) */
  took = crash_and_wait_lost(&t, 20 * SP_SECONDS, 1, 1.15, 1);
  assert_true(took < 0.3 + 0.5);
  lv_free(&t);
}

/* Item 3: L's host is gone (nothing answers at all).  The unanswered PING
 * runs into the ack timeout: F learns within keep_alive + ack_timeout,
 * not after the 60 s idle timeout. */
static void test_vanished_peer_noticed_by_ack_timeout(void **state) {
  double took;
  lv t;

  (void)state;
  took = crash_and_wait_lost(&t, 500 * MS, 1, 1.0, 0);
  assert_true(took < 0.3 + 0.5 + 0.5);
  {
    /* Its close lingers 3 PTO for stray packets, then it is gone. */
    qt_device *d[1] = {&t.f};
    qt_run_for(d, 1, NULL, 0.5);
  }
  assert_int_equal(t.f.ep->nconns, 0);
  lv_free(&t);
}

/* F listens and L dialled it.  F cannot check the new L's reset (RFC 9000
 * gives no reset token for the id a client picks in its handshake), so
 * it is the ack timeout that finds L restarted: within 1.25 x keep_alive
 * (the accepting side's interval) + ack_timeout. */
static void test_restarted_dialler_noticed(void **state) {
  double took;
  lv t;

  (void)state;
  took = crash_and_wait_lost(&t, 500 * MS, 0, 1.0, 1);
  assert_true(took < 0.375 + 0.5 + 0.5);
  lv_free(&t);
}

/* Item 1, connection half: L dialled F, crashed and restarted, and dials
 * F again at once.  L proving itself on a new connection makes F probe
 * the old one: it is found dead ack_timeout after the PING, not after
 * 1.25 x keep_alive + ack_timeout. */
static void test_new_connection_probes_old(void **state) {
  sp_quic_config cfg = qt_config();
  fn_stream *s;
  double took;
  has w;
  lv t;
  int rv;

  (void)state;
  /* keep_alive: default.  The probe gets ack_timeout from its PING, as
   * any packet does, so a lossy path is not cut sooner than the ack
   * timeout would cut it (3 PTO, 1 s, covered one retransmission). */
  cfg.idle_timeout = 60 * SP_SECONDS;
  cfg.ack_timeout = 1500 * MS;
  lv_start(&t, &cfg, 0);
  lv_crash(&t);
  lv_restart(&t);
  s = fn_open(t.l.node, sp_identity_device_id(t.f.id), &t.lib, &rv);
  assert_non_null(s);
  assert_int_equal(fn_send(t.l.node, s, "back", 4), 4);
  w.node = t.f.node;
  w.bytes = 4;
  assert_true(run_both(&t, last_remote_has, &w, 2));
  took = wait_f_closed(&t, 3);
  assert_int_equal(t.fs->closed_reason, SP_ERR_CONNECTION_LOST);
  assert_true(took > 1.2);
  assert_true(took < 2.5);
  /* The new connection is untouched. */
  assert_false(last_remote(t.f.node)->closed);
  assert_false(s->closed);
  lv_free(&t);
}

/* Both sides dial each other at once: two live connections between the
 * same devices.  Each probes the other and both answer: nothing is
 * dropped. */
static void test_live_connections_survive_probe(void **state) {
  sp_quic_config cfg = qt_config();
  fn_stream *a, *b;
  qt_device f, l;
  qt_device *d[2] = {&f, &l};
  sp_uuid lib;
  int rv;

  (void)state;
  cfg.idle_timeout = 60 * SP_SECONDS;
  qt_device_init(&f);
  qt_device_init(&l);
  qt_device_start(&f, &cfg);
  qt_device_start(&l, &cfg);
  qt_know(&f, &l);
  qt_know(&l, &f);
  sp_uuid_generate(&lib);
  a = fn_open(f.node, sp_identity_device_id(l.id), &lib, &rv);
  b = fn_open(l.node, sp_identity_device_id(f.id), &lib, &rv);
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(fn_send(f.node, a, "a", 1), 1);
  assert_int_equal(fn_send(l.node, b, "b", 1), 1);
  qt_run_for(d, 2, NULL, 2.5);
  assert_int_equal(f.ep->nconns, 2);
  assert_int_equal(l.ep->nconns, 2);
  assert_false(a->closed);
  assert_false(b->closed);
  assert_int_equal(fn_first_remote(f.node)->received, 1);
  assert_int_equal(fn_first_remote(l.node)->received, 1);
  /* A new stream goes on the newest connection, so the older one can
   * drain and be the first closed by the per-device cap. */
  sp_uuid_generate(&lib);
  a = fn_open(f.node, sp_identity_device_id(l.id), &lib, &rv);
  assert_non_null(a);
  assert_ptr_equal(sp_quic_stream_find(f.ep, a->id)->conn,
                   f.ep->conns[f.ep->nconns - 1]);
  b = fn_open(l.node, sp_identity_device_id(f.id), &lib, &rv);
  assert_non_null(b);
  assert_ptr_equal(sp_quic_stream_find(l.ep, b->id)->conn,
                   l.ep->conns[l.ep->nconns - 1]);
  qt_device_free(&f);
  qt_device_free(&l);
}

/* A connection the node found silent stays out of use until the peer is
 * really heard: a datagram carrying its (visible) connection id that does
 * not decrypt, as anyone on the path can forge, proves nothing. */
static void test_forged_packet_keeps_suspicion(void **state) {
  uint8_t pkt[64];
  sp_quic_conn *c;
  sp_tstamp now;
  size_t i;
  lv t;

  (void)state;
  lv_start(&t, NULL, 1);
  assert_int_equal(t.f.ep->nconns, 1);
  c = t.f.ep->conns[0];
  now = sp_quic_now();
  c->suspect_at = now;
  for (i = 0; i < t.f.ep->ncids && t.f.ep->cids[i].conn != c; ++i) {
  }
  assert_true(i < t.f.ep->ncids);
  memset(pkt, 0x5a, sizeof(pkt));
  pkt[0] = 0x40; /* short header, fixed bit */
  memcpy(pkt + 1, t.f.ep->cids[i].cid.data, SP_QUIC_CID_LEN);
  sp_quic_endpoint_on_datagram(t.f.ep, &c->remote, pkt, sizeof(pkt),
                               now + 1000);
  assert_true(sp_quic_conn_usable(c));
  assert_true(c->suspect_at >= c->last_rx);
  lv_free(&t);
}

/* Stateless resets answer unauthenticated packets: one source address
 * draws at most one per RESET_INTERVAL, however many short packets it
 * sends (two restarted endpoints cannot chain them, a spoofed address
 * gets little bounced at it), while another address still gets its own. */
static void test_resets_limited_per_address(void **state) {
  sp_quic_addr a, b;
  uint8_t pkt[60];
  sp_tstamp now = sp_quic_now();
  qt_device d;
  int i;

  (void)state;
  qt_device_init(&d);
  qt_device_start(&d, NULL);
  assert_int_equal(sp_quic_addr_parse(&a, "127.0.0.1:9", 11), 0);
  assert_int_equal(sp_quic_addr_parse(&b, "127.0.0.1:10", 12), 0);
  memset(pkt, 0x33, sizeof(pkt));
  pkt[0] = 0x40; /* short header for a connection id nobody issued */
  d.ep->resets_sent = 0;
  for (i = 0; i < 5; ++i) {
    sp_quic_endpoint_on_datagram(d.ep, &a, pkt, sizeof(pkt), now + i * MS);
  }
  assert_int_equal(d.ep->resets_sent, 1);
  sp_quic_endpoint_on_datagram(d.ep, &b, pkt, sizeof(pkt), now + 5 * MS);
  assert_int_equal(d.ep->resets_sent, 2);
  sp_quic_endpoint_on_datagram(d.ep, &a, pkt, sizeof(pkt), now + 200 * MS);
  assert_int_equal(d.ep->resets_sent, 3);
  qt_device_free(&d);
}

/* F's next stream to L, once L runs again, must reach L promptly on a
 * fresh connection (F's connections_opened moves by one). */
static void reopen_reaches_new_peer(lv *t, uint64_t opened_before) {
  fn_stream *s;
  has w;
  int rv;

  s = fn_open(t->f.node, sp_identity_device_id(t->l.id), &t->lib, &rv);
  assert_non_null(s);
  assert_int_equal(fn_send(t->f.node, s, "again", 5), 5);
  w.node = t->l.node;
  w.bytes = 5;
  if (!run_both(t, last_remote_has, &w, 2)) {
    print_error("the new stream did not reach the restarted peer (%s)\n",
                s->closed ? sp_err_name(s->closed_reason) : "still open");
  }
  assert_false(s->closed);
  assert_true(last_remote_has(&w));
  assert_int_equal(t->f.ep->stats.connections_opened, opened_before + 1);
}

/* Item 1, connection half: a connection declared dead (here by the ack
 * timeout) is gone; the next stream dials a fresh one. */
static void test_dead_connection_not_reused(void **state) {
  sp_quic_config cfg = qt_config();
  uint64_t opened;
  lv t;

  (void)state;
  cfg.keep_alive = 300 * MS;
  cfg.ack_timeout = 500 * MS;
  cfg.idle_timeout = 60 * SP_SECONDS;
  lv_start(&t, &cfg, 1);
  opened = t.f.ep->stats.connections_opened;
  lv_crash(&t);
  (void)wait_f_closed(&t, 5);
  lv_restart(&t);
  reopen_reaches_new_peer(&t, opened);
  lv_free(&t);
}

/* Item 1, connection half: the node closes a stream because the peer
 * went silent (SP_ERR_PEER_TIMEOUT) or what it asked for never came
 * (SP_ERR_STALLED).  Both say the connection may be dead: the stream the
 * node opens next must not land on it (with the keep-alive and the ack
 * timeout off, nothing else would have found it dead). */
static void stalled_case(int code) {
  sp_quic_config cfg = qt_config();
  uint64_t opened;
  lv t;

  print_message("  closed with %s\n", sp_err_name(code));
  cfg.keep_alive = 0;
  cfg.ack_timeout = 0;
  cfg.idle_timeout = 60 * SP_SECONDS;
  lv_start(&t, &cfg, 1);
  opened = t.f.ep->stats.connections_opened;
  lv_crash(&t);
  assert_int_equal(fn_close(t.f.node, t.fs, code), 0);
  {
    qt_device *d[1] = {&t.f};
    /* The node's reconnect backoff (100 ms at least). */
    qt_run_for(d, 1, NULL, 0.1);
  }
  lv_restart(&t);
  reopen_reaches_new_peer(&t, opened);
  lv_free(&t);
}

static void test_stalled_connection_not_reused(void **state) {
  (void)state;
  stalled_case(SP_ERR_PEER_TIMEOUT);
  stalled_case(SP_ERR_STALLED);
}

/* The keep-alive must not keep a connection without streams alive: it
 * still ends by the idle timeout, as quic.h promises. */
static void test_idle_connection_still_expires(void **state) {
  sp_quic_config cfg = qt_config();
  lv t;

  (void)state;
  cfg.keep_alive = 100 * MS;
  cfg.idle_timeout = 1 * SP_SECONDS;
  lv_start(&t, &cfg, 1);
  assert_int_equal(fn_close(t.f.node, t.fs, 0), 0);
  assert_int_equal(fn_close(t.l.node, t.ls, 0), 0);
  run_both(&t, NULL, NULL, 2.5);
  assert_int_equal(t.f.ep->nconns, 0);
  lv_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_meet_goal),
      cmocka_unit_test(test_version1_config),
      cmocka_unit_test(test_timer_range_checked),
      cmocka_unit_test(test_restarted_peer_noticed_by_keep_alive),
      cmocka_unit_test(test_vanished_peer_noticed_by_ack_timeout),
      cmocka_unit_test(test_restarted_dialler_noticed),
      cmocka_unit_test(test_dead_connection_not_reused),
      cmocka_unit_test(test_stalled_connection_not_reused),
      cmocka_unit_test(test_forged_packet_keeps_suspicion),
      cmocka_unit_test(test_resets_limited_per_address),
      cmocka_unit_test(test_new_connection_probes_old),
      cmocka_unit_test(test_live_connections_survive_probe),
      cmocka_unit_test(test_idle_connection_still_expires),
  };
  return QT_RUN_TESTS(tests);
}
