/*
 * sp_quic_node_test.c: real nodes over the QUIC transport, leader and
 * follower on two endpoints in one process, on 127.0.0.1: live push,
 * catch-up of 100,000 entries, refusal of an unknown key, a wrong ALPN and
 * a registered non-member, and an idle connection carrying heartbeats and
 * nothing else.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/quic.h"
#include "sync_protocol/sync_protocol.h"
#include "quic_node_util.h"

#define NDEV 4
enum { L = 0, F = 1, NONMEMBER = 2, STRANGER = 3 };

typedef struct dev {
  sp_identity *id;
  sp_quic_endpoint *ep;
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  char addr[64];
  long errors;
  int last_error;
  long applied_events;
} dev;

static dev devs[NDEV];
static sp_uuid library;
/* Which devices each device's registry knows: the stranger is known to
 * nobody but itself, the non-member is registered but not a member. */
static int knows[NDEV][NDEV];

static int dev_of(const sp_uuid *id) {
  int i;

  for (i = 0; i < NDEV; ++i) {
    if (devs[i].id && sp_uuid_equal(sp_identity_device_id(devs[i].id), id)) {
      return i;
    }
  }
  return -1;
}

static int self_of(void *ud) { return (int)(intptr_t)ud; }

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *m,
                       void *ud) {
  int i = dev_of(d);

  *m = sp_uuid_equal(lib, &library) && i >= 0 && i != NONMEMBER &&
       knows[self_of(ud)][i];
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)ud;
  if (!sp_uuid_equal(lib, &library)) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = *sp_identity_device_id(devs[L].id);
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  int i, self = self_of(ud);
  size_t n = 0;

  (void)lib;
  for (i = 0; i < NDEV; ++i) {
    if (i != NONMEMBER && i != STRANGER && knows[self][i]) {
      if (n < cap) {
        out[n] = *sp_identity_device_id(devs[i].id);
      }
      ++n;
    }
  }
  *count = n;
  return 0;
}

static int r_key(const sp_uuid *d, uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  int i = dev_of(d);

  if (i < 0 || !knows[self_of(ud)][i]) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(devs[i].id, key);
  return 0;
}

static int r_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *d,
                    void *ud) {
  int i;

  for (i = 0; i < NDEV; ++i) {
    uint8_t k[SP_PUBLIC_KEY_LEN];
    sp_identity_public_key(devs[i].id, k);
    if (knows[self_of(ud)][i] && memcmp(k, key, sizeof(k)) == 0) {
      *d = *sp_identity_device_id(devs[i].id);
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int r_hints(const sp_uuid *d, char *buf, size_t len, void *ud) {
  int i = dev_of(d);

  if (i < 0 || !knows[self_of(ud)][i] || strlen(devs[i].addr) >= len) {
    return SP_ERR_NOT_FOUND;
  }
  strcpy(buf, devs[i].addr);
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  dev *d = &devs[self_of(ud)];

  if (ev->type == SP_EVENT_ERROR) {
    d->errors++;
    d->last_error = ev->error_code;
  } else if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    d->applied_events++;
  }
  return 0;
}

static void start(int i, const char *alpn) {
  dev *d = &devs[i];
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_quic_config qc;

  reg.user_data = (void *)(intptr_t)i;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  ev.user_data = (void *)(intptr_t)i;
  ev.on_event = on_event;
  sp_quic_config_default(&qc);
  qc.bind_address = "127.0.0.1:0";
  if (alpn) {
    qc.alpn = alpn;
  }
  qn_start(&qc, d->id, &reg, &ev, (uint64_t)i + 1, &d->ep, &d->node, d->addr,
           sizeof(d->addr));
  assert_int_equal(sp_mem_store_new(&d->store, NULL), 0);
}

static void open_lib(int i, sp_role role, sp_duration heartbeat) {
  sp_handler_config hc = qn_handler_config(&library, role);

  if (heartbeat) {
    hc.heartbeat_interval = heartbeat;
  }
  qn_open_handler(&devs[i].h, devs[i].node, devs[i].store, &hc);
}

static void stop_all(void) {
  int i;

  for (i = 0; i < NDEV; ++i) {
    dev *d = &devs[i];
    qn_stop(&d->h, &d->node, &d->ep, &d->store);
    d->errors = d->applied_events = 0;
    d->last_error = 0;
  }
}

static sp_quic_endpoint *ep_of(size_t i) { return devs[i].ep; }

/* Drive every running endpoint for `seconds`, or until `until` holds. */
static int run(double seconds, int (*until)(void)) {
  return qn_run(ep_of, NDEV, seconds, until);
}

static sp_seq applied(int i) { return qn_applied(devs[i].store); }

static sp_seq latest(void) { return qn_latest(devs[L].store); }

static int follower_caught_up(void) { return applied(F) == latest(); }

static void append(int n, size_t payload) {
  sp_seq seq = qn_append_items(devs[L].store, n, payload, 1);

  assert_int_equal(sp_handler_notify_new_entries(devs[L].h, 1, seq,
                                                 sp_quic_now()), 0);
}

static int same_head(void) {
  sp_store a, b;
  sp_store_state sa, sb;

  sp_mem_store_get_vtable(devs[L].store, &a);
  sp_mem_store_get_vtable(devs[F].store, &b);
  a.state(&sa, a.user_data);
  b.state(&sb, b.user_data);
  return sa.applied == sb.applied &&
         memcmp(sa.head_hash, sb.head_hash, SP_HASH_LEN) == 0;
}

static void test_catchup_and_live_push(void **state) {
  sp_tstamp t0;
  int k;

  (void)state;
  start(L, NULL);
  start(F, NULL);
  open_lib(L, SP_ROLE_LEADER, 0);
  append(100000, 64);
  open_lib(F, SP_ROLE_FOLLOWER, 0);
  t0 = sp_quic_now();
  assert_true(run(60, follower_caught_up));
  print_message("catch-up of 100000 entries over QUIC: %.2f s\n",
                (double)(sp_quic_now() - t0) / 1e9);
  assert_true(same_head());
  /* Live: one entry at a time, each applied at once. */
  for (k = 0; k < 20; ++k) {
    append(1, 100);
    t0 = sp_quic_now();
    assert_true(run(5, follower_caught_up));
    assert_true(sp_quic_now() - t0 < SP_SECONDS);
  }
  assert_true(same_head());
  assert_int_equal(devs[F].errors, 0);
  stop_all();
}

static int errored(void) { return devs[F].errors > 0 && devs[NONMEMBER].errors > 0; }

static void test_refusals(void **state) {
  sp_quic_stats st;

  (void)state;
  start(L, NULL);
  start(NONMEMBER, NULL);
  open_lib(L, SP_ROLE_LEADER, 0);
  append(10, 10);
  /* A stranger's key: the handshake fails, nothing is applied. */
  knows[L][STRANGER] = 0;
  start(STRANGER, NULL);
  knows[STRANGER][L] = 1;
  open_lib(STRANGER, SP_ROLE_FOLLOWER, 0);
  /* A registered device outside the library: refused per library. */
  open_lib(NONMEMBER, SP_ROLE_FOLLOWER, 0);
  /* A follower offering another ALPN. */
  start(F, "/other/9.9");
  open_lib(F, SP_ROLE_FOLLOWER, 0);
  assert_true(run(10, errored));
  run(1, NULL);
  assert_int_equal(devs[NONMEMBER].last_error, SP_ERR_NOT_MEMBER);
  assert_true(devs[F].last_error == SP_ERR_ALPN ||
              devs[F].last_error == SP_ERR_HANDSHAKE);
  assert_true(devs[STRANGER].errors > 0);
  assert_int_equal(applied(F), 0);
  assert_int_equal(applied(NONMEMBER), 0);
  assert_int_equal(applied(STRANGER), 0);
  sp_quic_endpoint_get_stats(devs[L].ep, &st);
  assert_true(st.handshakes_failed >= 2);
  stop_all();
}

/* After syncing, an idle connection carries heartbeats and nothing else:
 * the stream bytes each side sent are a whole number of Heartbeat frames,
 * one per interval, and the datagrams no more than those and their acks. */
static size_t heartbeat_len(sp_role role, sp_seq seq) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = library;
  m.epoch = 1;
  m.u.heartbeat.role = role;
  m.u.heartbeat.current_sequence = seq;
  /* Both stores have the write path (and neither handler a snapshot
   * vtable): the stream negotiated writes, and every Heartbeat carries
   * the features (a leader's also its frame maximum; no device submitted,
   * so origin_high is 0). */
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_WRITES;
  if (role == SP_ROLE_LEADER) {
    m.u.heartbeat.max_frame = SP_MAX_FRAME_DEFAULT;
  }
  return sp_msg_encoded_len(&m);
}

static void test_idle_heartbeats_only(void **state) {
  sp_quic_stats a0, b0, a1, b1;
  const double idle = 5.5;
  size_t hl, hf;
  uint64_t sl, sf;

  (void)state;
  start(L, NULL);
  start(F, NULL);
  open_lib(L, SP_ROLE_LEADER, SP_SECONDS);
  append(50, 100);
  open_lib(F, SP_ROLE_FOLLOWER, SP_SECONDS);
  assert_true(run(10, follower_caught_up));
  run(1.2, NULL); /* the last acks and heartbeats settle */
  sp_quic_endpoint_get_stats(devs[L].ep, &a0);
  sp_quic_endpoint_get_stats(devs[F].ep, &b0);
  run(idle, NULL);
  sp_quic_endpoint_get_stats(devs[L].ep, &a1);
  sp_quic_endpoint_get_stats(devs[F].ep, &b1);
  hl = heartbeat_len(SP_ROLE_LEADER, latest());
  hf = heartbeat_len(SP_ROLE_FOLLOWER, applied(F));
  sl = a1.stream_bytes_sent - a0.stream_bytes_sent;
  sf = b1.stream_bytes_sent - b0.stream_bytes_sent;
  print_message("idle %.1f s, heartbeat every 1 s: leader sent %llu stream "
                "bytes (%llu heartbeats) in %llu datagrams, %llu bytes; "
                "follower %llu stream bytes (%llu heartbeats) in %llu "
                "datagrams, %llu bytes\n",
                idle, (unsigned long long)sl, (unsigned long long)(sl / hl),
                (unsigned long long)(a1.datagrams_sent - a0.datagrams_sent),
                (unsigned long long)(a1.bytes_sent - a0.bytes_sent),
                (unsigned long long)sf, (unsigned long long)(sf / hf),
                (unsigned long long)(b1.datagrams_sent - b0.datagrams_sent),
                (unsigned long long)(b1.bytes_sent - b0.bytes_sent));
  assert_int_equal(sl % hl, 0);
  assert_int_equal(sf % hf, 0);
  assert_in_range(sl / hl, 4, 6);
  assert_in_range(sf / hf, 4, 6);
  /* One packet per heartbeat, at most one ack for each of the peer's. */
  assert_true(a1.datagrams_sent - a0.datagrams_sent <= 2 * (sl / hl) + 2);
  assert_true(b1.datagrams_sent - b0.datagrams_sent <= 2 * (sf / hf) + 2);
  stop_all();
}

static int setup(void **state) {
  int i, j;

  (void)state;
  sp_uuid_generate(&library);
  for (i = 0; i < NDEV; ++i) {
    if (sp_identity_generate(&devs[i].id, NULL, NULL) != 0) {
      return -1;
    }
    for (j = 0; j < NDEV; ++j) {
      knows[i][j] = i == STRANGER ? j == STRANGER : j != STRANGER;
    }
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
      cmocka_unit_test(test_catchup_and_live_push),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_idle_heartbeats_only),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
