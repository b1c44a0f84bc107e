/*
 * sp_quic_restart_test.c: a leader killed and restarted reaches its
 * follower at once over QUIC (issue 17, items 1 and 2), real nodes on
 * 127.0.0.1.
 *
 * The follower F has no address in the leader's registry: it dialed the
 * leader L.  L dies without a word (every send fails, as after kill -9),
 * and comes back on its address with the same key and the same store.
 * F still holds its stream on the dead connection.  L dials F where it
 * last saw it (kept with the log), F takes the new stream in place of the
 * dead one, and applies L's next entry within the 2 s.
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

enum { L = 0, F = 1, NDEV = 2 };

typedef struct dev {
  sp_identity *id;
  sp_quic_endpoint *ep;
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  char addr[64];
} dev;

static dev devs[NDEV];
static sp_uuid library;

static int dev_of(const sp_uuid *id) {
  int i;

  for (i = 0; i < NDEV; ++i) {
    if (sp_uuid_equal(sp_identity_device_id(devs[i].id), id)) {
      return i;
    }
  }
  return -1;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *m,
                       void *ud) {
  (void)ud;
  *m = sp_uuid_equal(lib, &library) && dev_of(d) >= 0;
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)ud;
  (void)lib;
  *leader = *sp_identity_device_id(devs[L].id);
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  (void)lib;
  (void)ud;
  if (cap >= 2) {
    out[0] = *sp_identity_device_id(devs[L].id);
    out[1] = *sp_identity_device_id(devs[F].id);
  }
  *count = 2;
  return 0;
}

static int r_key(const sp_uuid *d, uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  int i = dev_of(d);

  (void)ud;
  if (i < 0) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(devs[i].id, key);
  return 0;
}

static int r_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *d,
                    void *ud) {
  int i;

  (void)ud;
  for (i = 0; i < NDEV; ++i) {
    uint8_t k[SP_PUBLIC_KEY_LEN];
    sp_identity_public_key(devs[i].id, k);
    if (memcmp(k, key, sizeof(k)) == 0) {
      *d = *sp_identity_device_id(devs[i].id);
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

/* Only the leader has an address (the README's default). */
static int r_hints(const sp_uuid *d, char *buf, size_t len, void *ud) {
  (void)ud;
  if (dev_of(d) != L || strlen(devs[L].addr) >= len) {
    return SP_ERR_NOT_FOUND;
  }
  strcpy(buf, devs[L].addr);
  return 0;
}

static void start(int i, const char *bind) {
  dev *d = &devs[i];
  sp_registry reg = SP_REGISTRY_INIT;
  sp_quic_config qc;

  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  sp_quic_config_default(&qc);
  qc.bind_address = bind;
  qn_start(&qc, d->id, &reg, NULL, (uint64_t)i + 1, &d->ep, &d->node,
           d->addr, sizeof(d->addr));
}

static void open_lib(int i, sp_role role) {
  sp_handler_config hc = qn_handler_config(&library, role);

  qn_open_handler(&devs[i].h, devs[i].node, devs[i].store, &hc);
}

/* Every send fails from now on, so not even a CONNECTION_CLOSE leaves. */
static void crash(int i) {
  dev *d = &devs[i];

  d->ep->udp.test_eagain_every = 1;
  qn_stop(&d->h, &d->node, &d->ep, NULL);
}

static sp_quic_endpoint *ep_of(size_t i) { return devs[i].ep; }

static int run(double seconds, int (*until)(void)) {
  return qn_run(ep_of, NDEV, seconds, until);
}

static sp_seq applied(int i) { return qn_applied(devs[i].store); }

static sp_seq latest(void) { return qn_latest(devs[L].store); }

static int caught_up(void) { return applied(F) == latest(); }

static void append(int n) {
  sp_seq seq = qn_append_items(devs[L].store, n, 16, 0);

  assert_int_equal(
      sp_handler_notify_new_entries(devs[L].h, 1, seq, sp_quic_now()), 0);
}

static void test_restarted_leader_reaches_follower_without_address(
    void **state) {
  char l_addr[64];
  sp_tstamp t0;
  double took;

  (void)state;
  start(L, "127.0.0.1:0");
  start(F, "127.0.0.1:0");
  snprintf(l_addr, sizeof(l_addr), "%s", devs[L].addr);
  open_lib(L, SP_ROLE_LEADER);
  append(10);
  open_lib(F, SP_ROLE_FOLLOWER);
  assert_true(run(10, caught_up));
  run(1.5, NULL); /* settled, and F's stream is older than a crossed dial */

  crash(L);
  start(L, l_addr);
  open_lib(L, SP_ROLE_LEADER);
  t0 = sp_quic_now();
  append(1);
  assert_true(run(10, caught_up));
  took = (double)(sp_quic_now() - t0) / 1e9;
  print_message("follower applied the restarted leader's entry after "
                "%.3f s\n",
                took);
  assert_true(took < 2.0);
  assert_int_equal(applied(F), 11);
}

static int setup(void **state) {
  int i;

  (void)state;
  sp_uuid_generate(&library);
  for (i = 0; i < NDEV; ++i) {
    memset(&devs[i], 0, sizeof(devs[i]));
    assert_int_equal(sp_identity_generate(&devs[i].id, NULL, NULL), 0);
    assert_int_equal(sp_mem_store_new(&devs[i].store, NULL), 0);
  }
  return 0;
}

static int teardown(void **state) {
  int i;

  (void)state;
  for (i = 0; i < NDEV; ++i) {
    qn_stop(&devs[i].h, &devs[i].node, &devs[i].ep, &devs[i].store);
    sp_identity_del(devs[i].id);
  }
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          test_restarted_leader_reaches_follower_without_address, setup,
          teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
