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
  sp_node_config nc;
  sp_transport tr;

  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  sp_quic_config_default(&qc);
  qc.bind_address = bind;
  assert_int_equal(sp_quic_endpoint_new(&d->ep, &qc, d->id, &reg, NULL), 0);
  assert_int_equal(
      sp_quic_endpoint_local_address(d->ep, d->addr, sizeof(d->addr)), 0);
  sp_node_config_default(&nc);
  nc.device_id = *sp_identity_device_id(d->id);
  nc.seed = (uint64_t)i + 1;
  sp_quic_endpoint_get_transport(d->ep, &tr);
  assert_int_equal(sp_node_new(&d->node, &nc, &reg, NULL, &tr, NULL), 0);
  assert_int_equal(sp_quic_endpoint_attach(d->ep, d->node), 0);
}

static void open_lib(int i, sp_role role) {
  sp_handler_config hc;
  sp_store st;

  sp_handler_config_default(&hc);
  hc.library_id = library;
  hc.role = role;
  sp_mem_store_get_vtable(devs[i].store, &st);
  assert_int_equal(
      sp_handler_new(&devs[i].h, devs[i].node, &hc, &st, sp_quic_now()), 0);
}

/* Every send fails from now on, so not even a CONNECTION_CLOSE leaves. */
static void crash(int i) {
  dev *d = &devs[i];

  d->ep->udp.test_eagain_every = 1;
  sp_handler_del(d->h);
  sp_node_del(d->node);
  sp_quic_endpoint_del(d->ep);
  d->h = NULL;
  d->node = NULL;
  d->ep = NULL;
}

static int run(double seconds, int (*until)(void)) {
  sp_tstamp end = sp_quic_now() + (sp_tstamp)(seconds * 1e9);

  while (sp_quic_now() < end) {
    struct pollfd p[NDEV];
    sp_tstamp now = sp_quic_now(), next = end;
    int i, n = 0;
    for (i = 0; i < NDEV; ++i) {
      if (devs[i].ep) {
        sp_tstamp e = sp_quic_endpoint_get_expiry(devs[i].ep);
        if (e < next) {
          next = e;
        }
        p[n].fd = sp_quic_endpoint_fd(devs[i].ep);
        p[n].events = POLLIN;
        n++;
      }
    }
    poll(p, (nfds_t)n,
         next <= now ? 0 : (int)((next - now) / SP_MILLISECONDS) + 1);
    for (i = 0; i < NDEV; ++i) {
      if (devs[i].ep) {
        assert_int_equal(sp_quic_endpoint_process(devs[i].ep, sp_quic_now()),
                         0);
      }
    }
    if (until && until()) {
      return 1;
    }
  }
  return until ? until() : 1;
}

static sp_seq applied(int i) {
  sp_store st;
  sp_store_state s;

  sp_mem_store_get_vtable(devs[i].store, &st);
  st.state(&s, st.user_data);
  return s.applied;
}

static sp_seq latest(void) {
  sp_store st;
  sp_log_bounds b;

  sp_mem_store_get_vtable(devs[L].store, &st);
  st.bounds(&b, st.user_data);
  return b.latest;
}

static int caught_up(void) { return applied(F) == latest(); }

static void append(int n) {
  uint8_t buf[16] = {0};
  sp_seq seq = 0;
  int k;

  for (k = 0; k < n; ++k) {
    sp_entry e;
    memset(&e, 0, sizeof(e));
    buf[0] = (uint8_t)k;
    e.model_type = "item";
    e.model_type_len = 4;
    e.data = buf;
    e.data_len = sizeof(buf);
    assert_int_equal(sp_mem_store_append(devs[L].store, &e, &seq), 0);
  }
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
    sp_handler_del(devs[i].h);
    sp_node_del(devs[i].node);
    sp_quic_endpoint_del(devs[i].ep);
    sp_mem_store_del(devs[i].store);
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
