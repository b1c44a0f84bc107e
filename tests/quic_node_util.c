/*
 * quic_node_util.c: see quic_node_util.h.
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "quic_node_util.h"

/* At most this many endpoints per call (the tests run two or three). */
#define QN_MAX_EPS 8

int qn_run(sp_quic_endpoint *(*ep_of)(size_t i), size_t n, double seconds,
           int (*until)(void)) {
  sp_tstamp end = sp_quic_now() + (sp_tstamp)(seconds * 1e9);

  assert_true(n <= QN_MAX_EPS);
  while (sp_quic_now() < end) {
    struct pollfd p[QN_MAX_EPS];
    sp_tstamp now = sp_quic_now(), next = end;
    size_t i, np = 0;
    for (i = 0; i < n; ++i) {
      sp_quic_endpoint *ep = ep_of(i);
      if (ep) {
        sp_tstamp e = sp_quic_endpoint_get_expiry(ep);
        if (e < next) {
          next = e;
        }
        p[np].fd = sp_quic_endpoint_fd(ep);
        p[np].events = POLLIN;
        np++;
      }
    }
    poll(p, (nfds_t)np,
         next <= now ? 0 : (int)((next - now) / SP_MILLISECONDS) + 1);
    for (i = 0; i < n; ++i) {
      sp_quic_endpoint *ep = ep_of(i);
      if (ep) {
        assert_int_equal(sp_quic_endpoint_process(ep, sp_quic_now()), 0);
      }
    }
    if (until && until()) {
      return 1;
    }
  }
  return until ? until() : 1;
}

void qn_start(const sp_quic_config *qc, const sp_identity *id,
              const sp_registry *reg, const sp_events *ev, uint64_t seed,
              sp_quic_endpoint **ep, sp_node **node, char *addr,
              size_t addr_len) {
  sp_node_config nc;
  sp_transport tr;

  assert_int_equal(sp_quic_endpoint_new(ep, qc, id, reg, NULL), 0);
  assert_int_equal(sp_quic_endpoint_local_address(*ep, addr, addr_len), 0);
  sp_node_config_default(&nc);
  nc.device_id = *sp_identity_device_id(id);
  nc.seed = seed;
  sp_quic_endpoint_get_transport(*ep, &tr);
  assert_int_equal(sp_node_new(node, &nc, reg, ev, &tr, NULL), 0);
  assert_int_equal(sp_quic_endpoint_attach(*ep, *node), 0);
}

sp_handler_config qn_handler_config(const sp_uuid *library, sp_role role) {
  sp_handler_config hc;

  sp_handler_config_default(&hc);
  hc.library_id = *library;
  hc.role = role;
  return hc;
}

void qn_open_handler(sp_handler **h, sp_node *node, sp_mem_store *store,
                     const sp_handler_config *hc) {
  sp_store st;

  sp_mem_store_get_vtable(store, &st);
  assert_int_equal(sp_handler_new(h, node, hc, &st, sp_quic_now()), 0);
}

void qn_stop(sp_handler **h, sp_node **node, sp_quic_endpoint **ep,
             sp_mem_store **store) {
  sp_handler_del(*h);
  sp_node_del(*node);
  sp_quic_endpoint_del(*ep);
  *h = NULL;
  *node = NULL;
  *ep = NULL;
  if (store) {
    sp_mem_store_del(*store);
    *store = NULL;
  }
}

sp_seq qn_append_items(sp_mem_store *store, int n, size_t len,
                       int versioned) {
  uint8_t buf[256] = {0};
  sp_seq seq = 0;
  int k;

  assert_true(len <= sizeof(buf));
  for (k = 0; k < n; ++k) {
    sp_entry e;
    memset(&e, 0, sizeof(e));
    buf[0] = (uint8_t)k;
    buf[1] = (uint8_t)(k >> 8);
    e.model_type = "item";
    e.model_type_len = 4;
    e.version = versioned ? k : 0;
    e.data = buf;
    e.data_len = len;
    assert_int_equal(sp_mem_store_append(store, &e, &seq), 0);
  }
  return seq;
}

sp_seq qn_applied(sp_mem_store *store) {
  sp_store st;
  sp_store_state s;

  sp_mem_store_get_vtable(store, &st);
  st.state(&s, st.user_data);
  return s.applied;
}

sp_seq qn_latest(sp_mem_store *store) {
  sp_store st;
  sp_log_bounds b;

  sp_mem_store_get_vtable(store, &st);
  st.bounds(&b, st.user_data);
  return b.latest;
}
