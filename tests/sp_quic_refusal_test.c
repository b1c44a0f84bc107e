/*
 * sp_quic_refusal_test.c: what a refused peer hears over QUIC.
 *
 * A stream closed with an error code first delivers what was queued (the
 * Error frame of a refusal), then is reset with the code, within
 * SP_QUIC_LINGER even when the peer never reads.  A client whose key the
 * server refuses gets CONNECTION_CLOSE 404 within a second, and both
 * sides log the refused key with address and fingerprint.  Real UDP on
 * 127.0.0.1, fake nodes (the transport alone).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

typedef struct logbook {
  char lines[16][512];
  size_t n;
} logbook;

static void log_cb(sp_log_level level, const char *msg, void *user_data) {
  logbook *b = user_data;

  if (level == SP_LOG_WARN && b->n < 16) {
    snprintf(b->lines[b->n++], sizeof(b->lines[0]), "%s", msg);
  }
}

/* The line of `b` that holds every one of the NULL-terminated `parts`. */
static const char *logged(const logbook *b, const char *const *parts) {
  size_t i, k;

  for (i = 0; i < b->n; ++i) {
    for (k = 0; parts[k] && strstr(b->lines[i], parts[k]); ++k) {
    }
    if (!parts[k]) {
      return b->lines[i];
    }
  }
  return NULL;
}

typedef struct pair {
  qt_device a; /* client: opens the stream */
  qt_device b; /* server */
  logbook la, lb;
  sp_uuid lib;
} pair;

static void pair_start(pair *p, const sp_quic_config *ca) {
  sp_quic_config ca2 = ca ? *ca : qt_config(), cb = qt_config();

  memset(p, 0, sizeof(*p));
  ca2.on_log = log_cb;
  ca2.log_user_data = &p->la;
  cb.on_log = log_cb;
  cb.log_user_data = &p->lb;
  qt_device_init(&p->a);
  qt_device_init(&p->b);
  qt_device_start(&p->a, &ca2);
  qt_device_start(&p->b, &cb);
  qt_know(&p->a, &p->b);
  qt_know(&p->b, &p->a);
  sp_uuid_generate(&p->lib);
}

static void pair_free(pair *p) {
  qt_device_free(&p->a);
  qt_device_free(&p->b);
}

static int run2(pair *p, int (*done)(void *), void *arg, double s) {
  qt_device *d[2] = {&p->a, &p->b};
  return qt_run(d, 2, NULL, done, arg, s);
}

static int closed(void *arg) { return ((fn_stream *)arg)->closed; }

static int both_gone(void *arg) {
  pair *p = arg;
  return p->a.ep->nstreams == 0 && p->b.ep->nstreams == 0;
}

static void assert_promises_kept(const sp_node *n) {
  assert_int_equal(n->reentrant_calls, 0);
  assert_int_equal(n->peer_mismatch, 0);
  assert_int_equal(n->after_close, 0);
  assert_int_equal(n->unknown_stream, 0);
}

/* The client's stream, and the server's side of it once `bytes` of the
 * client's arrived there. */
static fn_stream *open_and_reach(pair *p, size_t bytes, fn_stream **server) {
  qt_nth_has w = {p->b.node, 0, bytes};
  fn_stream *cs;
  int rv;

  cs = fn_open(p->a.node, sp_identity_device_id(p->b.id), &p->lib, &rv);
  assert_non_null(cs);
  assert_int_equal(fn_send(p->a.node, cs, "hello, leader", bytes),
                   (sp_ssize)bytes);
  assert_true(run2(p, qt_remote_has, &w, 5));
  *server = qt_nth_remote(p->b.node, 0);
  assert_non_null(*server);
  return cs;
}

static size_t error_frame(uint8_t *buf, size_t cap, const sp_uuid *lib,
                          int code, const char *text) {
  sp_msg m;
  size_t n = 0;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ERROR;
  m.library_id = *lib;
  m.u.error.code = code;
  m.u.error.message = text;
  m.u.error.message_len = strlen(text);
  assert_int_equal(sp_msg_encode(&m, buf, cap, &n), 0);
  return n;
}

/* The server queues an Error frame and closes the stream with its code,
 * as a refusing node does: the client reads the frame (code, message),
 * then hears the code as the stream's end, and both sides free it. */
static void test_error_frame_arrives(void **state) {
  pair p;
  fn_stream *cs, *ss;
  uint8_t frame[256];
  const uint8_t *body;
  size_t n, bodylen;
  sp_frame_reader *rd;
  sp_decoder *dec;
  sp_msg m;

  (void)state;
  pair_start(&p, NULL);
  cs = open_and_reach(&p, 5, &ss);
  n = error_frame(frame, sizeof(frame), &p.lib, SP_ERR_NOT_MEMBER,
                  "device is not a member of this library");
  assert_int_equal(fn_send(p.b.node, ss, frame, n), (sp_ssize)n);
  assert_int_equal(fn_close(p.b.node, ss, SP_ERR_NOT_MEMBER), 0);
  assert_true(run2(&p, closed, cs, 5));
  assert_int_equal(cs->closed_reason, SP_ERR_NOT_MEMBER);
  assert_int_equal(cs->received, n);
  assert_int_equal(cs->nkept, n);
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  assert_int_equal(sp_frame_reader_read(rd, cs->kept, cs->nkept, &body,
                                        &bodylen),
                   (sp_ssize)n);
  assert_non_null(body);
  assert_int_equal(sp_decoder_decode(dec, body, bodylen, &m), 0);
  assert_int_equal(m.type, SP_MSG_ERROR);
  assert_int_equal(m.u.error.code, SP_ERR_NOT_MEMBER);
  assert_int_equal(m.u.error.message_len,
                   strlen("device is not a member of this library"));
  assert_memory_equal(m.u.error.message,
                      "device is not a member of this library",
                      m.u.error.message_len);
  sp_decoder_del(dec);
  sp_frame_reader_del(rd);
  /* The client's further sends are refused; both sides free the stream
   * without waiting for the linger bound. */
  assert_true(run2(&p, both_gone, &p, 2));
  assert_int_equal(p.b.ep->send_buffered, 0);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* Several frames before the close, more than the client's window: all of
 * them arrive, in order, before the code. */
static void test_all_queued_bytes_arrive(void **state) {
  sp_quic_config ca = qt_config();
  pair p;
  fn_stream *cs, *ss;
  static uint8_t big[200 * 1024];
  size_t i;

  (void)state;
  ca.stream_recv_window = 32 * 1024;
  pair_start(&p, &ca);
  cs = open_and_reach(&p, 5, &ss);
  for (i = 0; i < sizeof(big); ++i) {
    big[i] = (uint8_t)(i * 7 + 3);
  }
  assert_int_equal(fn_send(p.b.node, ss, big, sizeof(big)),
                   (sp_ssize)sizeof(big));
  assert_int_equal(fn_close(p.b.node, ss, SP_ERR_FRAME_TOO_LARGE), 0);
  assert_true(run2(&p, closed, cs, 5));
  assert_int_equal(cs->closed_reason, SP_ERR_FRAME_TOO_LARGE);
  assert_int_equal(cs->received, sizeof(big));
  assert_memory_equal(cs->kept, big, FN_KEEP);
  assert_true(run2(&p, both_gone, &p, 2));
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* The client's node holds every byte it gets and never consumes: the
 * windows stay shut. */
static void hold_all(const sp_node *n, const fn_stream *s, size_t *held,
                     size_t *need) {
  (void)n;
  *held = (size_t)s->received;
  *need = 0;
}

/* A refused peer that does not read: the server resets within
 * SP_QUIC_LINGER of the close and frees the stream and its buffer. */
static void test_peer_that_never_reads(void **state) {
  sp_quic_config ca = qt_config();
  pair p;
  fn_stream *cs, *ss;
  static uint8_t big[256 * 1024];
  sp_tstamp t0;
  double took;

  (void)state;
  ca.stream_recv_window = 16 * 1024;
  pair_start(&p, &ca);
  p.a.node->held_of = hold_all;
  cs = open_and_reach(&p, 5, &ss);
  memset(big, 0x5a, sizeof(big));
  assert_int_equal(fn_send(p.b.node, ss, big, sizeof(big)),
                   (sp_ssize)sizeof(big));
  t0 = sp_quic_now();
  assert_int_equal(fn_close(p.b.node, ss, SP_ERR_NOT_MEMBER), 0);
  assert_true(run2(&p, closed, cs, 10));
  took = qt_seconds(sp_quic_now() - t0);
  printf("never-reading peer reset after %.2f s\n", took);
  assert_true(took >= qt_seconds(SP_QUIC_LINGER) - 0.2);
  assert_true(took <= qt_seconds(SP_QUIC_LINGER) + 1.5);
  assert_int_equal(cs->closed_reason, SP_ERR_NOT_MEMBER);
  assert_true(cs->received < sizeof(big));
  assert_true(run2(&p, both_gone, &p, 2));
  assert_int_equal(p.b.ep->send_buffered, 0);
  assert_promises_kept(p.a.node);
  assert_promises_kept(p.b.node);
  pair_free(&p);
}

/* A peer found silent is not owed its bytes: reset at once. */
static void test_timeout_close_resets_at_once(void **state) {
  pair p;
  fn_stream *cs, *ss;
  static uint8_t big[128 * 1024];

  (void)state;
  pair_start(&p, NULL);
  p.a.node->held_of = hold_all;
  cs = open_and_reach(&p, 5, &ss);
  memset(big, 1, sizeof(big));
  assert_true(fn_send(p.b.node, ss, big, sizeof(big)) > 0);
  assert_int_equal(fn_close(p.b.node, ss, SP_ERR_PEER_TIMEOUT), 0);
  assert_true(run2(&p, closed, cs, 1));
  assert_int_equal(cs->closed_reason, SP_ERR_PEER_TIMEOUT);
  pair_free(&p);
}

/* The server does not know the client's key: the client hears 404 within
 * a second, and both sides log it, naming address and fingerprint. */
static void test_unknown_key_told(void **state) {
  pair p;
  fn_stream *cs;
  sp_tstamp t0;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  char fp[SP_FINGERPRINT_LEN + 1], port[16];
  sp_quic_stats sa;
  double took;
  int rv;

  (void)state;
  pair_start(&p, NULL);
  p.b.reg.n = 0;
  t0 = sp_quic_now();
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  (void)fn_send(p.a.node, cs, "hello", 5);
  assert_true(run2(&p, closed, cs, 1));
  took = qt_seconds(sp_quic_now() - t0);
  printf("unknown key told after %.3f s\n", took);
  assert_true(took < 1.0);
  assert_int_equal(cs->closed_reason, SP_ERR_UNKNOWN_KEY);
  /* The server's node never heard of it. */
  assert_int_equal(p.b.node->opened_calls, 0);
  sp_quic_endpoint_get_stats(p.a.ep, &sa);
  assert_int_equal(sa.handshakes_failed, 1);
  sp_identity_public_key(p.a.id, key);
  assert_int_equal(sp_identity_fingerprint(key, fp, sizeof(fp)), 0);
  snprintf(port, sizeof(port), ":%u", (unsigned)sp_quic_endpoint_port(p.a.ep));
  {
    const char *srv[] = {"refused handshake from 127.0.0.1", port, fp,
                         "SP_ERR_UNKNOWN_KEY", NULL};
    const char *cli[] = {"closed the connection with code 404",
                         "SP_ERR_UNKNOWN_KEY", NULL};
    assert_non_null(logged(&p.lb, srv));
    assert_non_null(logged(&p.la, cli));
  }
  pair_free(&p);
}

/* The client dialled a device whose registered key is not the one the
 * server proves (an impostor at the leader's address): it refuses, and
 * says which address presented which key, and which was expected. */
static void test_impostor_named(void **state) {
  pair p;
  fn_stream *cs;
  qt_entry *e;
  char real[SP_FINGERPRINT_LEN + 1], want[SP_FINGERPRINT_LEN + 1];
  char uuid[SP_UUID_STRING_LEN + 1];
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int rv;

  (void)state;
  pair_start(&p, NULL);
  e = qt_registry_find(&p.a.reg, sp_identity_device_id(p.b.id));
  assert_non_null(e);
  e->key[0] ^= 0x01;
  sp_identity_public_key(p.b.id, key);
  assert_int_equal(sp_identity_fingerprint(key, real, sizeof(real)), 0);
  assert_int_equal(sp_identity_fingerprint(e->key, want, sizeof(want)), 0);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  assert_true(run2(&p, closed, cs, 2));
  assert_int_equal(cs->closed_reason, SP_ERR_UNKNOWN_KEY);
  {
    const char *cli[] = {"refused server", p.b.addr, real,
                         sp_uuid_format(sp_identity_device_id(p.b.id), uuid),
                         want, NULL};
    assert_non_null(logged(&p.la, cli));
  }
  pair_free(&p);
}

/* A peer that does not speak the sync ALPN is refused before it names a
 * key; the refusing side still logs who it was. */
static void test_wrong_alpn_logged(void **state) {
  sp_quic_config ca = qt_config();
  pair p;
  fn_stream *cs;
  int rv;

  (void)state;
  ca.alpn = "not-sync/0";
  pair_start(&p, &ca);
  cs = fn_open(p.a.node, sp_identity_device_id(p.b.id), &p.lib, &rv);
  assert_non_null(cs);
  assert_true(run2(&p, closed, cs, 2));
  assert_int_equal(cs->closed_reason, SP_ERR_ALPN);
  {
    const char *srv[] = {"refused handshake from 127.0.0.1:", "SP_ERR_ALPN",
                         NULL};
    assert_non_null(logged(&p.lb, srv));
  }
  pair_free(&p);
}

/* A version 2 caller's struct ends before on_log: the endpoint must not
 * read past it (the sanitizers catch a read past) and logs nowhere. */
static void test_version2_config(void **state) {
  sp_quic_config def = qt_config();
  unsigned char *v2;
  qt_device d;

  (void)state;
  def.version = 2;
  v2 = malloc(offsetof(sp_quic_config, on_log));
  assert_non_null(v2);
  memcpy(v2, &def, offsetof(sp_quic_config, on_log));
  qt_device_init(&d);
  assert_int_equal(sp_quic_endpoint_new(&d.ep, (const sp_quic_config *)v2,
                                        d.id, &d.reg.reg, NULL),
                   0);
  assert_null(d.ep->cfg.on_log);
  assert_int_equal(d.ep->cfg.keep_alive, def.keep_alive);
  sp_quic_endpoint_del(d.ep);
  d.ep = NULL;
  qt_device_free(&d);
  free(v2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_frame_arrives),
      cmocka_unit_test(test_all_queued_bytes_arrive),
      cmocka_unit_test(test_peer_that_never_reads),
      cmocka_unit_test(test_timeout_close_resets_at_once),
      cmocka_unit_test(test_unknown_key_told),
      cmocka_unit_test(test_impostor_named),
      cmocka_unit_test(test_wrong_alpn_logged),
      cmocka_unit_test(test_version2_config),
  };
  return QT_RUN_TESTS(tests);
}
