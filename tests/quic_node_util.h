/*
 * quic_node_util.h: helpers for the tests that run real nodes over the
 * QUIC transport (sp_quic_node_test, sp_quic_peer_key_test,
 * sp_quic_restart_test): a driving loop over the running endpoints and
 * the positions of an in-memory store.
 */
#ifndef QUIC_NODE_UTIL_H
#define QUIC_NODE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/quic.h"
#include "sync_protocol/sync_protocol.h"

/* Drive every running endpoint until `until` holds or `seconds` pass.
 * `ep_of(i)`, i < n, is device i's endpoint, NULL for a stopped device
 * (asked again each round).  Returns 1 when `until` holds (or when there
 * is none), else 0. */
int qn_run(sp_quic_endpoint *(*ep_of)(size_t i), size_t n, double seconds,
           int (*until)(void));

/* A real node for `id` on a new endpoint with `qc`: both given `reg`
 * (copied), the node also `ev` (NULL: none) and the seed `seed`.  Fills
 * *ep, *node and the endpoint's local address in `addr`. */
void qn_start(const sp_quic_config *qc, const sp_identity *id,
              const sp_registry *reg, const sp_events *ev, uint64_t seed,
              sp_quic_endpoint **ep, sp_node **node, char *addr,
              size_t addr_len);

/* The handler config for `role` in `library`, defaults otherwise. */
sp_handler_config qn_handler_config(const sp_uuid *library, sp_role role);
/* A handler for `node` over `store` with `hc`, in *h. */
void qn_open_handler(sp_handler **h, sp_node *node, sp_mem_store *store,
                     const sp_handler_config *hc);
/* Delete a device's handler, node, endpoint and store (each that is not
 * NULL; `store` NULL: keep it) and clear the pointers. */
void qn_stop(sp_handler **h, sp_node **node, sp_quic_endpoint **ep,
             sp_mem_store **store);

/* Append `n` entries of model type "item" to `store`: entry k (from 0)
 * holds `len` bytes (at most 256), k in the first two (low byte first) and
 * zeros after, with version k if `versioned` (else 0).  Returns the
 * sequence of the last. */
sp_seq qn_append_items(sp_mem_store *store, int n, size_t len, int versioned);

/* The store's applied position, and the latest sequence of its log. */
sp_seq qn_applied(sp_mem_store *store);
sp_seq qn_latest(sp_mem_store *store);

#endif /* QUIC_NODE_UTIL_H */
