/*
 * sp_quic_peer_key_test.c: the keys the QUIC transport proves, as the core
 * sees them (sp_transport.peer_key) and as the server's key check names
 * its refusals.
 *
 * Real nodes on 127.0.0.1: a leader L and device D, first installed with
 * key K1, then reinstalled with a new key K2 under the same device id (the
 * host updates its registry to K2).  What D acknowledged under K1 says
 * nothing about the reinstalled log: it must not be credited to K2, not
 * while connected and not through the position kept with the leader's log.
 */
#include <poll.h>
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

enum { L = 0, K1 = 1, K2 = 2, NDEV = 3 };
#define LOG_LEN 20

typedef struct dev {
  sp_identity *id;
  sp_quic_endpoint *ep;
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  char addr[64];
  int last_error;
} dev;

static dev devs[NDEV];
static sp_uuid library;
/* Which install of D the leader's registry lists (K1 or K2). */
static int d_install = K1;

static const sp_uuid *dev_id(int i) { return sp_identity_device_id(devs[i].id); }

/* The install a device's registry sees for device id `d` (-1: none). */
static int lookup(const sp_uuid *d, int self) {
  if (sp_uuid_equal(d, dev_id(L))) {
    return L;
  }
  if (sp_uuid_equal(d, dev_id(K1))) {
    return self == L ? d_install : self;
  }
  return -1;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *m,
                       void *ud) {
  *m = sp_uuid_equal(lib, &library) && lookup(d, (int)(intptr_t)ud) >= 0;
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
    out[1] = *dev_id(K1);
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
  int self = (int)(intptr_t)ud, cand[2], k;

  cand[0] = L;
  cand[1] = self == L ? d_install : self;
  for (k = 0; k < 2; ++k) {
    uint8_t pk[SP_PUBLIC_KEY_LEN];
    sp_identity_public_key(devs[cand[k]].id, pk);
    if (memcmp(pk, key, sizeof(pk)) == 0) {
      *d = *dev_id(cand[k]);
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

static void fill_registry(sp_registry *reg, int i) {
  sp_registry r = SP_REGISTRY_INIT;

  r.user_data = (void *)(intptr_t)i;
  r.is_member = r_is_member;
  r.leader = r_leader;
  r.members = r_members;
  r.device_key = r_key;
  r.device_by_key = r_by_key;
  r.address_hints = r_hints;
  *reg = r;
}

static int on_event(const sp_event *ev, void *ud) {
  if (ev->type == SP_EVENT_ERROR) {
    devs[(int)(intptr_t)ud].last_error = ev->error_code;
  }
  return 0;
}

static void open_handler(int i, sp_role role) {
  sp_handler_config hc = qn_handler_config(&library, role);

  /* Retries come quickly once the way is clear. */
  hc.reconnect_max = SP_SECONDS;
  qn_open_handler(&devs[i].h, devs[i].node, devs[i].store, &hc);
}

static void start(int i, sp_role role) {
  dev *d = &devs[i];
  sp_registry reg;
  sp_quic_config qc;
  sp_events ev = SP_EVENTS_INIT;

  fill_registry(&reg, i);
  ev.user_data = (void *)(intptr_t)i;
  ev.on_event = on_event;
  d->last_error = 0;
  sp_quic_config_default(&qc);
  qc.bind_address = "127.0.0.1:0";
  qn_start(&qc, d->id, &reg, &ev, (uint64_t)i + 1, &d->ep, &d->node, d->addr,
           sizeof(d->addr));
  if (!d->store) {
    assert_int_equal(sp_mem_store_new(&d->store, NULL), 0);
  }
  open_handler(i, role);
}

static void stop(int i) {
  dev *d = &devs[i];

  qn_stop(&d->h, &d->node, &d->ep, &d->store);
  memset(d->addr, 0, sizeof(d->addr));
}

static sp_quic_endpoint *ep_of(size_t i) { return devs[i].ep; }

/* Drive every running endpoint until `until` holds or `seconds` pass. */
static int run(double seconds, int (*until)(void)) {
  return qn_run(ep_of, NDEV, seconds, until);
}

static sp_follower_progress progress(void) {
  sp_follower_progress p;

  assert_int_equal(
      sp_handler_follower_progress(devs[L].h, dev_id(K1), sp_quic_now(), &p),
      0);
  return p;
}

static int k1_acked_all(void) {
  sp_follower_progress p = progress();
  return p.has_acked && p.acked_sequence == LOG_LEN;
}

static int d_gone(void) { return !progress().connected; }

/* While K2 is connected: was it ever credited with a sequence?  (It may
 * acknowledge 0, which is its own.) */
static int k2_seen_connected, k2_credited;

static int k2_watch(void) {
  sp_follower_progress p = progress();

  if (p.connected) {
    k2_seen_connected++;
    k2_credited += p.has_acked && p.acked_sequence > 0;
  }
  return 0;
}

static void fill_log(void) {
  (void)qn_append_items(devs[L].store, LOG_LEN, 32, 1);
}

/* D installed as K1, following a leader whose log it has all acked. */
static void start_synced_k1(void) {
  d_install = K1;
  assert_int_equal(sp_mem_store_new(&devs[L].store, NULL), 0);
  fill_log();
  start(L, SP_ROLE_LEADER);
  start(K1, SP_ROLE_FOLLOWER);
  assert_true(run(10, k1_acked_all));
}

/* D reinstalled with a new key: neither its old acks nor the position
 * kept for its old key are credited to the new key.  Before, the QUIC
 * transport reported no keys, so K1's position was kept under no key at
 * all, and a restarted leader credited it to D whatever key D has now. */
static void test_reinstall_not_credited(void **state) {
  (void)state;
  start_synced_k1();

  /* The old install goes away; the host registers the new key. */
  stop(K1);
  assert_true(run(10, d_gone));
  d_install = K2;
  /* A leader restarted now reads K1's position kept with its log: it is
   * not D's any more. */
  sp_handler_del(devs[L].h);
  devs[L].h = NULL;
  open_handler(L, SP_ROLE_LEADER);
  printf("restarted leader: D credited with %llu (has_acked %d)\n",
         (unsigned long long)progress().acked_sequence,
         progress().has_acked);
  assert_false(progress().has_acked);

  start(K2, SP_ROLE_FOLLOWER);
  /* The reinstalled store cannot apply: whatever L credits K2 with came
   * from somewhere else. */
  sp_mem_store_fail_applies(devs[K2].store, 1000000);
  k2_seen_connected = k2_credited = 0;
  run(3, k2_watch);
  printf("K2 seen connected in %d steps, credited in %d\n", k2_seen_connected,
         k2_credited);
  assert_true(k2_seen_connected > 0);
  assert_int_equal(k2_credited, 0);

  /* A restarted leader reads the positions kept with its log. */
  sp_handler_del(devs[L].h);
  devs[L].h = NULL;
  open_handler(L, SP_ROLE_LEADER);
  assert_int_equal(progress().acked_sequence, 0);
  stop(K2);
  stop(L);
}

static sp_seq applied(int i) { return qn_applied(devs[i].store); }

static int k2_refused(void) {
  return devs[K2].last_error == SP_ERR_DUPLICATE_DEVICE;
}

static int k2_synced(void) {
  sp_follower_progress p = progress();
  return applied(K2) == LOG_LEN && p.connected && p.acked_sequence == LOG_LEN;
}

/* The host registers D's new key while the old install is still
 * connected: the leader's record is bound to K1, so K2 is refused
 * (SP_ERR_DUPLICATE_DEVICE) instead of being fed beside it, and takes
 * over once K1 is gone.  Before, the QUIC transport reported no keys: K2
 * was accepted, knocked K1's stream off and was credited on its record. */
static void test_new_key_while_old_connected(void **state) {
  sp_follower_progress p;

  (void)state;
  start_synced_k1();

  d_install = K2;
  start(K2, SP_ROLE_FOLLOWER);
  run(5, k2_refused);
  p = progress();
  printf("K2: last error %s, applied %llu; D's record: connected %d, acked "
         "%llu\n",
         sp_err_name(devs[K2].last_error), (unsigned long long)applied(K2),
         p.connected, (unsigned long long)p.acked_sequence);
  assert_int_equal(devs[K2].last_error, SP_ERR_DUPLICATE_DEVICE);
  assert_int_equal(applied(K2), 0);
  assert_true(p.connected);
  assert_int_equal(p.acked_sequence, LOG_LEN);

  /* The old install goes away: the new key starts over and syncs. */
  stop(K1);
  assert_true(run(15, k2_synced));
  stop(K2);
  stop(L);
}

/* ---- the server's key check, by itself ---- */

static int vk_by_key_rv, vk_key_rv;
static sp_uuid vk_dev;
static uint8_t vk_key[SP_PUBLIC_KEY_LEN];

static int vk_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *d,
                     void *ud) {
  (void)key;
  (void)ud;
  *d = vk_dev;
  return vk_by_key_rv;
}

static int vk_device_key(const sp_uuid *d, uint8_t key[SP_PUBLIC_KEY_LEN],
                         void *ud) {
  (void)d;
  (void)ud;
  memcpy(key, vk_key, SP_PUBLIC_KEY_LEN);
  return vk_key_rv;
}

static int server_verdict(int by_key_rv, int key_rv, int same_key) {
  sp_quic_endpoint *ep = calloc(1, sizeof(*ep));
  sp_quic_conn *c = calloc(1, sizeof(*c));
  uint8_t proven[SP_PUBLIC_KEY_LEN];
  int rv;

  assert_non_null(ep);
  assert_non_null(c);
  ep->registry.device_by_key = vk_by_key;
  ep->registry.device_key = vk_device_key;
  c->ep = ep;
  c->server = 1;
  sp_uuid_generate(&vk_dev);
  memset(proven, 0x11, sizeof(proven));
  memset(vk_key, same_key ? 0x11 : 0x22, sizeof(vk_key));
  vk_by_key_rv = by_key_rv;
  vk_key_rv = key_rv;
  rv = sp_quic_conn_verify_peer(c, proven);
  assert_int_equal(rv == 0, c->verify_error == 0);
  rv = c->verify_error;
  free(c);
  free(ep);
  return rv;
}

/* The registry named a device for the key, then knew no key for it (it
 * changed in between, or is inconsistent): that is an unknown key, not a
 * second device; a failing registry is the registry's failure.  Before,
 * both were reported as SP_ERR_DUPLICATE_DEVICE. */
static void test_server_key_check_reasons(void **state) {
  (void)state;
  assert_int_equal(server_verdict(0, 0, 1), 0);
  assert_int_equal(server_verdict(0, 0, 0), SP_ERR_DUPLICATE_DEVICE);
  assert_int_equal(server_verdict(0, SP_ERR_NOT_FOUND, 0), SP_ERR_UNKNOWN_KEY);
  assert_int_equal(server_verdict(0, SP_ERR_IO, 0), SP_ERR_REGISTRY);
  assert_int_equal(server_verdict(SP_ERR_NOT_FOUND, 0, 1), SP_ERR_UNKNOWN_KEY);
  assert_int_equal(server_verdict(SP_ERR_IO, 0, 1), SP_ERR_REGISTRY);
}

static int setup(void **state) {
  (void)state;
  sp_uuid_generate(&library);
  if (sp_identity_generate(&devs[L].id, NULL, NULL) != 0 ||
      sp_identity_generate(&devs[K1].id, NULL, NULL) != 0 ||
      sp_identity_generate(&devs[K2].id, dev_id(K1), NULL) != 0) {
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  int i;

  (void)state;
  for (i = 0; i < NDEV; ++i) {
    if (devs[i].ep) {
      stop(i);
    }
    sp_mem_store_del(devs[i].store);
    devs[i].store = NULL;
    sp_identity_del(devs[i].id);
  }
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reinstall_not_credited),
      cmocka_unit_test(test_new_key_while_old_connected),
      cmocka_unit_test(test_server_key_check_reasons),
  };
  if (getenv("SP_TEST_FILTER")) {
    cmocka_set_test_filter(getenv("SP_TEST_FILTER"));
  }
  return cmocka_run_group_tests(tests, setup, teardown);
}
