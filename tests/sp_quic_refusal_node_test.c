/*
 * sp_quic_refusal_node_test.c: refusals as a real follower node hears
 * them over QUIC (loopback): the leader's Error frame, code and message,
 * for a follower that is not a member; and, for a follower whose key the
 * leader does not know, the documented close (SP_ERR_UNKNOWN_KEY) within
 * a second, with the leader's endpoint logging the refused key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/quic.h"
#include "sync_protocol/sync_protocol.h"
#include "quic_node_util.h"
#include "transport/quic/sp_quic_int.h"

/* G is a raw client: an endpoint without a node, whose stream the test
 * writes and reads through the transport itself. */
enum { L = 0, F = 1, G = 2, NDEV = 3 };

typedef struct dev {
  sp_identity *id;
  sp_quic_endpoint *ep;
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  char addr[64];
  /* The first SP_EVENT_ERROR: its code, message, and when. */
  int error_code;
  char message[256];
  sp_tstamp error_at;
  /* The endpoint's warnings. */
  char warn[8][512];
  size_t nwarn;
} dev;

static dev devs[NDEV];
static sp_uuid library;
/* The leader's view of the follower: a member, its key known. */
static int f_member, f_key_known;

static const sp_uuid *dev_id(int i) {
  return sp_identity_device_id(devs[i].id);
}

/* Device `d` as registry `self` sees it (-1: unknown). */
static int lookup(const sp_uuid *d, int self) {
  if (sp_uuid_equal(d, dev_id(L))) {
    return L;
  }
  if (sp_uuid_equal(d, dev_id(F)) && (self == F || f_key_known)) {
    return F;
  }
  if (sp_uuid_equal(d, dev_id(G))) {
    return G;
  }
  return -1;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *m,
                       void *ud) {
  int self = (int)(intptr_t)ud, i = lookup(d, self);

  *m = sp_uuid_equal(lib, &library) && i >= 0 &&
       (i == L || self == F || f_member);
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)ud;
  if (!sp_uuid_equal(lib, &library)) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = *dev_id(L);
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  (void)lib;
  (void)ud;
  if (cap >= 2) {
    out[0] = *dev_id(L);
    out[1] = *dev_id(F);
  }
  *count = 2;
  return 0;
}

static int r_key(const sp_uuid *d, uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  int i = lookup(d, (int)(intptr_t)ud);

  if (i < 0) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(devs[i].id, key);
  return 0;
}

static int r_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *d,
                    void *ud) {
  int k;

  for (k = 0; k < NDEV; ++k) {
    uint8_t pk[SP_PUBLIC_KEY_LEN];
    sp_identity_public_key(devs[k].id, pk);
    if (memcmp(pk, key, sizeof(pk)) == 0 &&
        lookup(dev_id(k), (int)(intptr_t)ud) == k) {
      *d = *dev_id(k);
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int r_hints(const sp_uuid *d, char *buf, size_t len, void *ud) {
  int i = lookup(d, (int)(intptr_t)ud);

  if (i < 0 || !devs[i].ep || strlen(devs[i].addr) >= len) {
    return SP_ERR_NOT_FOUND;
  }
  strcpy(buf, devs[i].addr);
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  dev *d = &devs[(int)(intptr_t)ud];

  if (ev->type == SP_EVENT_ERROR && d->error_code == 0) {
    d->error_code = ev->error_code;
    snprintf(d->message, sizeof(d->message), "%s",
             ev->message ? ev->message : "");
    d->error_at = sp_quic_now();
  }
  return 0;
}

static void on_quic_log(sp_log_level level, const char *msg, void *ud) {
  dev *d = ud;

  if (level == SP_LOG_WARN && d->nwarn < 8) {
    snprintf(d->warn[d->nwarn++], sizeof(d->warn[0]), "%s", msg);
  }
}

static void start(int i, sp_role role) {
  dev *d = &devs[i];
  sp_registry reg = SP_REGISTRY_INIT;
  sp_quic_config qc;
  sp_events ev = SP_EVENTS_INIT;
  sp_handler_config hc = qn_handler_config(&library, role);

  reg.user_data = (void *)(intptr_t)i;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  ev.user_data = (void *)(intptr_t)i;
  ev.on_event = on_event;
  d->error_code = 0;
  d->nwarn = 0;
  sp_quic_config_default(&qc);
  qc.bind_address = "127.0.0.1:0";
  qc.on_log = on_quic_log;
  qc.log_user_data = d;
  qn_start(&qc, d->id, &reg, &ev, (uint64_t)i + 1, &d->ep, &d->node, d->addr,
           sizeof(d->addr));
  assert_int_equal(sp_mem_store_new(&d->store, NULL), 0);
  qn_open_handler(&d->h, d->node, d->store, &hc);
}

static void stop_all(void) {
  int i;

  for (i = 0; i < NDEV; ++i) {
    if (devs[i].ep) {
      qn_stop(&devs[i].h, &devs[i].node, &devs[i].ep, &devs[i].store);
    }
  }
}

static sp_quic_endpoint *ep_of(size_t i) { return devs[i].ep; }

static int f_heard_error(void) { return devs[F].error_code != 0; }

/* A follower the leader does not count as a member reads why: the Error
 * frame's code and message, long before the stream's linger bound. */
static void test_not_member_reads_error_frame(void **state) {
  sp_tstamp t0;
  double took;

  (void)state;
  f_member = 0;
  f_key_known = 1;
  start(L, SP_ROLE_LEADER);
  t0 = sp_quic_now();
  start(F, SP_ROLE_FOLLOWER);
  assert_true(qn_run(ep_of, NDEV, 3, f_heard_error));
  took = (double)(devs[F].error_at - t0) / 1e9;
  printf("follower heard \"%s\" (%s) after %.3f s\n", devs[F].message,
         sp_err_name(devs[F].error_code), took);
  assert_int_equal(devs[F].error_code, SP_ERR_NOT_MEMBER);
  assert_string_equal(devs[F].message,
                      "device is not a member of this library");
  assert_true(took < 2.0);
  stop_all();
}

/* A follower whose key the leader does not know hears SP_ERR_UNKNOWN_KEY
 * within a second, and the leader's endpoint logs the refusal with the
 * follower's address and key fingerprint. */
static void test_unknown_key_within_a_second(void **state) {
  uint8_t key[SP_PUBLIC_KEY_LEN];
  char fp[SP_FINGERPRINT_LEN + 1];
  sp_tstamp t0;
  double took;
  size_t k;
  int found = 0;

  (void)state;
  f_member = 1;
  f_key_known = 0;
  start(L, SP_ROLE_LEADER);
  t0 = sp_quic_now();
  start(F, SP_ROLE_FOLLOWER);
  assert_true(qn_run(ep_of, NDEV, 3, f_heard_error));
  took = (double)(devs[F].error_at - t0) / 1e9;
  printf("follower heard %s (\"%s\") after %.3f s\n",
         sp_err_name(devs[F].error_code), devs[F].message, took);
  assert_int_equal(devs[F].error_code, SP_ERR_UNKNOWN_KEY);
  assert_true(took < 1.0);
  sp_identity_public_key(devs[F].id, key);
  assert_int_equal(sp_identity_fingerprint(key, fp, sizeof(fp)), 0);
  for (k = 0; k < devs[L].nwarn; ++k) {
    printf("leader: %s\n", devs[L].warn[k]);
    found |= strstr(devs[L].warn[k], "refused handshake from 127.0.0.1:") &&
             strstr(devs[L].warn[k], fp);
  }
  assert_true(found);
  for (k = 0; k < devs[F].nwarn; ++k) {
    printf("follower: %s\n", devs[F].warn[k]);
  }
  assert_true(devs[F].nwarn > 0);
  assert_non_null(strstr(devs[F].warn[0], "code 404"));
  stop_all();
}

static sp_quic_endpoint *g_ep;
static uint64_t g_stream;

static int g_stream_closed(void) {
  sp_quic_stream *s = sp_quic_stream_find(g_ep, g_stream);
  return s && s->closed_pending;
}

/* A member's malformed first frame is refused with the decode error: the
 * raw client reads the Error frame (code, message) before the reset that
 * carries the same code. */
static void test_bad_frame_reads_error_frame(void **state) {
  static const uint8_t bad[] = {0, 0, 0, 3, 0xc1, 0xc1, 0xc1};
  sp_registry reg = SP_REGISTRY_INIT;
  sp_quic_config qc;
  sp_transport tr;
  sp_quic_stream *s;
  sp_frame_reader *rd;
  sp_decoder *dec;
  const uint8_t *body;
  size_t bodylen;
  sp_msg m;

  (void)state;
  f_member = 1;
  f_key_known = 1;
  start(L, SP_ROLE_LEADER);
  reg.user_data = (void *)(intptr_t)G;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  sp_quic_config_default(&qc);
  qc.bind_address = "127.0.0.1:0";
  assert_int_equal(sp_quic_endpoint_new(&g_ep, &qc, devs[G].id, &reg, NULL),
                   0);
  devs[G].ep = g_ep;
  sp_quic_endpoint_get_transport(g_ep, &tr);
  assert_int_equal(tr.open_stream(dev_id(L), &library, &g_stream,
                                  tr.user_data),
                   0);
  assert_int_equal(tr.send(g_stream, bad, sizeof(bad), tr.user_data),
                   (sp_ssize)sizeof(bad));
  assert_true(qn_run(ep_of, NDEV, 3, g_stream_closed));
  s = sp_quic_stream_find(g_ep, g_stream);
  printf("raw client: %zu bytes, then closed with %s\n",
         sp_buf_pending(&s->rbuf), sp_err_name(s->closed_reason));
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  assert_true(sp_frame_reader_read(rd, s->rbuf.data + s->rbuf.off,
                                   sp_buf_pending(&s->rbuf), &body,
                                   &bodylen) > 0);
  assert_non_null(body);
  assert_int_equal(sp_decoder_decode(dec, body, bodylen, &m), 0);
  assert_int_equal(m.type, SP_MSG_ERROR);
  assert_true(m.u.error.code < 0);
  assert_int_equal(s->closed_reason, m.u.error.code);
  printf("Error frame: %d (%s) \"%.*s\"\n", (int)m.u.error.code,
         sp_err_name(m.u.error.code), (int)m.u.error.message_len,
         m.u.error.message);
  assert_true(m.u.error.message_len > 0);
  sp_decoder_del(dec);
  sp_frame_reader_del(rd);
  sp_quic_endpoint_del(g_ep);
  g_ep = devs[G].ep = NULL;
  stop_all();
}

static int setup(void **state) {
  (void)state;
  sp_uuid_generate(&library);
  if (sp_identity_generate(&devs[L].id, NULL, NULL) != 0 ||
      sp_identity_generate(&devs[F].id, NULL, NULL) != 0 ||
      sp_identity_generate(&devs[G].id, NULL, NULL) != 0) {
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  int i;

  (void)state;
  stop_all();
  for (i = 0; i < NDEV; ++i) {
    sp_identity_del(devs[i].id);
  }
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_not_member_reads_error_frame),
      cmocka_unit_test(test_unknown_key_within_a_second),
      cmocka_unit_test(test_bad_frame_reads_error_frame),
  };
  if (getenv("SP_TEST_FILTER")) {
    cmocka_set_test_filter(getenv("SP_TEST_FILTER"));
  }
  return cmocka_run_group_tests(tests, setup, teardown);
}
