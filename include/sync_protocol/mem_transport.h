/*
 * mem_transport.h: an in-memory network of nodes in one process.
 *
 * Each device on the network gets a transport vtable; streams between two
 * devices share one simulated connection.  Nothing is delivered inside a
 * vtable call: deliveries are queued with a delivery time and handed to the
 * receiving node by sp_mem_net_run, so a host or a test drives the whole
 * network from one loop and one clock.  A fault hook sees every delivery
 * and may drop, delay, duplicate, reorder or cut it: the basis of the
 * deterministic fault simulation.
 */
#ifndef SYNC_PROTOCOL_MEM_TRANSPORT_H
#define SYNC_PROTOCOL_MEM_TRANSPORT_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/sys/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_mem_net sp_mem_net;

/* What the fault hook decides for one delivery. */
typedef enum sp_mem_action {
  /* Deliver after the network latency (plus `delay`), in stream order. */
  SP_MEM_DELIVER = 0,
  /* Lose these bytes; the stream goes on (its byte stream is now torn). */
  SP_MEM_DROP = 1,
  /* Deliver the bytes twice. */
  SP_MEM_DUPLICATE = 2,
  /* Deliver after `delay`, even past bytes sent later on the stream. */
  SP_MEM_REORDER = 3,
  /* Deliver the first `keep` bytes, then cut the whole connection. */
  SP_MEM_CUT = 4,
  /* Deliver with the byte at offset `keep` inverted (silent corruption,
   * as from a faulty disk on the sending side). */
  SP_MEM_CORRUPT = 5
} sp_mem_action;

/* One delivery, as shown to the fault hook (valid during the call). */
typedef struct sp_mem_delivery {
  sp_uuid from;
  sp_uuid to;
  uint64_t stream_id;
  const uint8_t *data;
  size_t len;
} sp_mem_delivery;

/* The hook's answer; prefilled with {SP_MEM_DELIVER, 0, len}. */
typedef struct sp_mem_verdict {
  sp_mem_action action;
  sp_duration delay;
  size_t keep;
} sp_mem_verdict;

#define SP_MEM_NET_CONFIG_VERSION 1

typedef struct sp_mem_net_config {
  /* SP_MEM_NET_CONFIG_VERSION; set by sp_mem_net_config_default. */
  unsigned int version;
  /* One-way delay of every delivery (0: delivered on the next run). */
  sp_duration latency;
  /* Bytes a stream direction holds undelivered before `send` would block
   * (256 KiB). */
  size_t stream_window;
  /* TESTING ONLY (fault injection, like the rest of this transport):
   * optional hook that may drop, delay or cut deliveries; returns 0 or
   * non-zero (treated as DELIVER). */
  int (*fault)(const sp_mem_delivery *d, sp_mem_verdict *verdict,
               void *user_data);
  void *fault_user_data;
} sp_mem_net_config;

/* Fill `cfg` with defaults: no latency, 256 KiB window, no fault hook. */
SP_API void sp_mem_net_config_default(sp_mem_net_config *cfg);

/*
 * sp_mem_net_new creates an empty network; `cfg` is copied, NULL means
 * the defaults.  Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION or
 * SP_ERR_NOMEM.
 */
SP_API int sp_mem_net_new(sp_mem_net **pnet, const sp_mem_net_config *cfg,
                          const sp_mem *mem);

/* sp_mem_net_del frees the network.  Delete its nodes first.  NULL ok. */
SP_API void sp_mem_net_del(sp_mem_net *net);

/*
 * sp_mem_net_add_device registers `device` and fills `*transport` with the
 * vtable its node must be created with, as struct version `version`
 * (SP_TRANSPORT_VERSION: the macro sp_mem_net_add_device(net, device,
 * transport) passes it; only that version's bytes are written).  The
 * device is unreachable until sp_mem_net_attach.  Returns 0,
 * SP_ERR_EXISTS, SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION (a version this
 * build does not know) or SP_ERR_NOMEM.
 */
SP_API int sp_mem_net_add_device_versioned(sp_mem_net *net,
                                           const sp_uuid *device, int version,
                                           sp_transport *transport);
#define sp_mem_net_add_device(net, device, transport)                      \
  sp_mem_net_add_device_versioned((net), (device), SP_TRANSPORT_VERSION,   \
                                  (transport))

/*
 * sp_mem_net_attach binds the node created with that vtable (the node is
 * not owned by the network).  Returns 0, SP_ERR_NOT_FOUND,
 * SP_ERR_INVALID_STATE (already attached).
 */
SP_API int sp_mem_net_attach(sp_mem_net *net, const sp_uuid *device,
                             sp_node *node);

/*
 * sp_mem_net_detach unbinds the device's node, as if its process died:
 * every connection it had is cut, its peers see their streams close, and
 * nothing more is delivered to it.  For a crash, call it before deleting
 * the node (sp_node_del then closes nothing on the network); for a clean
 * shutdown, delete the node first (its closes are queued) and detach
 * before the network runs again.  Returns 0 or SP_ERR_NOT_FOUND.
 */
SP_API int sp_mem_net_detach(sp_mem_net *net, const sp_uuid *device);

/*
 * sp_mem_net_vanish unbinds the device's node as a crash the peers do not
 * hear of (a process killed behind a transport that tells nobody, as a
 * QUIC peer learns only from a timeout or a stateless reset): its peers'
 * streams stay open and what they send is lost.  Call it before deleting
 * the node; sp_mem_net_attach may then bind a new node (a restart), whose
 * streams use fresh connections.  Returns 0 or SP_ERR_NOT_FOUND.
 */
SP_API int sp_mem_net_vanish(sp_mem_net *net, const sp_uuid *device);

/*
 * sp_mem_net_cut cuts the connection between devices `a` and `b`: bytes in
 * flight are lost and both sides see every stream on it close with
 * SP_ERR_CONNECTION_LOST.  Returns 0 or SP_ERR_NOT_FOUND (no connection).
 */
SP_API int sp_mem_net_cut(sp_mem_net *net, const sp_uuid *a,
                          const sp_uuid *b);

/*
 * sp_mem_net_set_partitioned cuts `device` off (1) or heals it (0).  While
 * it is cut off nothing is delivered to or from it and streams opened to or
 * by it fail; deliveries already under way wait and resume, in order, when
 * it heals, as with a transport that retransmits.  Nodes meanwhile see only
 * silence (their heartbeat timeouts decide).  Returns 0, SP_ERR_NOT_FOUND
 * or SP_ERR_NOMEM.
 */
SP_API int sp_mem_net_set_partitioned(sp_mem_net *net, const sp_uuid *device,
                                      int partitioned);

/* Returns the earliest pending delivery time, or SP_TSTAMP_MAX. */
SP_API sp_tstamp sp_mem_net_get_expiry(const sp_mem_net *net);

/*
 * sp_mem_net_run sets the network clock to `now` and hands every delivery
 * due by then to its node, in time order (ties in send order).  Returns
 * 0, or the first fatal code a node returned (the run stops there).
 */
SP_API int sp_mem_net_run(sp_mem_net *net, sp_tstamp now);

/* sp_mem_net_stats's version (sp_mem_net_get_stats). */
#define SP_MEM_NET_STATS_VERSION 1

/* Counters since creation. */
typedef struct sp_mem_net_stats {
  uint64_t bytes_sent;
  uint64_t bytes_delivered;
  uint64_t deliveries;
  uint64_t streams_opened;
  uint64_t connections_cut;
  uint64_t connections_opened;
} sp_mem_net_stats;

/* Fill `*out` with the counters, as struct version `version`
 * (SP_MEM_NET_STATS_VERSION: the macro sp_mem_net_get_stats(net, out)
 * passes it; only the bytes of that version are written).  Returns 0,
 * SP_ERR_INVALID_ARGUMENT or SP_ERR_VERSION (a version this build does not
 * know). */
SP_API int sp_mem_net_get_stats_versioned(const sp_mem_net *net, int version,
                                          sp_mem_net_stats *out);
#define sp_mem_net_get_stats(net, out)                                     \
  sp_mem_net_get_stats_versioned((net), SP_MEM_NET_STATS_VERSION, (out))

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_MEM_TRANSPORT_H */
