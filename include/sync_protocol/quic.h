/*
 * quic.h: the QUIC transport (ngtcp2 + GnuTLS), one UDP socket per
 * endpoint carrying both the connections it accepts and those it opens.
 *
 * Each side proves its device key in a mutually authenticated TLS 1.3
 * handshake (a certificate made from the Ed25519 device key); the peer's
 * key must be in the device registry, and the ALPN must be SP_ALPN.  One
 * bidirectional QUIC stream carries one library.
 *
 * An endpoint keeps at most 64 accepted connections in their handshake.
 * From 32 on, a new peer must first prove its source address with a QUIC
 * Retry (one more round trip, unseen by the node), so a flood of Initials
 * from spoofed addresses cannot lock registered peers out; so must a peer
 * whose host (IP address) already has 8 in progress, and a host gets at
 * most 8 more slots with a proven address.
 *
 * A peer that vanished is found by the endpoint itself (keep_alive,
 * ack_timeout below): the streams of its connection close with
 * SP_ERR_CONNECTION_LOST, and a connection that ended never carries a new
 * stream.  When a peer proves its key on a new connection (a restarted
 * process, a new address), its older connections are sent a PING and
 * dropped if they do not answer within ack_timeout of its leaving (3 PTO
 * and 1 s at least); new streams go on the newest connection.  A peer
 * device holds at most 4 authenticated connections with an endpoint, both
 * directions together: proving its key on a fifth closes its oldest at
 * once, which bounds what one device can make us hold
 * (docs/security.md).
 *
 * Event-loop integration: sp_quic_endpoint_fd is one descriptor that turns
 * readable when a datagram or a doorbell ring is waiting; call
 * sp_quic_endpoint_process when it does or when the time returned by
 * sp_quic_endpoint_get_expiry has come.  The endpoint drives its node's
 * timers too.  Unlike the core, this module reads CLOCK_MONOTONIC in its
 * run loop and sp_quic_now, and uses sockets.  An endpoint is
 * single-threaded except for sp_quic_endpoint_wake and
 * sp_quic_endpoint_stop, which any thread (or a signal handler) may call.
 */
#ifndef SYNC_PROTOCOL_QUIC_H
#define SYNC_PROTOCOL_QUIC_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/identity.h"
#include "sync_protocol/events.h"
#include "sync_protocol/sys/registry.h"
#include "sync_protocol/sys/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_quic_endpoint sp_quic_endpoint;

/* Called in the loop thread after sp_quic_endpoint_wake rang the doorbell.
 * Return 0, or non-zero to make sp_quic_endpoint_process/run return
 * SP_ERR_CALLBACK_FAILURE. */
typedef int (*sp_quic_wake_cb)(sp_quic_endpoint *ep, void *user_data);

/* 2 added keep_alive and ack_timeout, 3 on_log and log_user_data;
 * older structs are still accepted (the new fields then take their
 * defaults). */
#define SP_QUIC_CONFIG_VERSION 3

/* Application error codes of this transport on the wire (RESET_STREAM,
 * STOP_SENDING, CONNECTION_CLOSE of type 0x1d): the absolute value of an
 * sp_error (SP_ERR_NOT_MEMBER = -302 is sent as 302), 0 for no error.  A
 * receiver maps 100..599 back to the sp_error and anything else to
 * SP_ERR_CONNECTION_LOST.  A client whose device key the server refuses
 * (unknown, or a second key for a known device) completes the TLS
 * handshake and gets a CONNECTION_CLOSE with 404 (SP_ERR_UNKNOWN_KEY) and
 * the reason phrase "device key refused" (docs/protocol.md 12.6). */

/* A stream the node closes with an error code first delivers what was
 * queued before the close (the Error frame of a refusal): STOP_SENDING
 * with the code goes out at once, RESET_STREAM with the code once the
 * peer acknowledged the last byte, or after this long (5 s) if it does
 * not (a peer that does not read); then the stream is freed.  A close for
 * SP_ERR_PEER_TIMEOUT or SP_ERR_STALLED resets at once. */
#define SP_QUIC_LINGER ((sp_duration)5 * SP_SECONDS)

/* The largest keep_alive and ack_timeout accepted (1 hour): the
 * endpoint adds them to timestamps, and a larger value (SP_TSTAMP_MAX
 * for "never") would wrap into a deadline in the past.  Use 0 to turn
 * either off. */
#define SP_QUIC_MAX_TIMER ((sp_duration)3600 * SP_SECONDS)

typedef struct sp_quic_config {
  /* SP_QUIC_CONFIG_VERSION; set by sp_quic_config_default. */
  unsigned int version;
  /* "ipv4:port" or "[ipv6]:port" to bind; port 0 picks one
   * ("0.0.0.0:0").  Copied. */
  const char *bind_address;
  /* QUIC idle timeout (180 s), advertised as max_idle_timeout; keep it
   * above the protocol's peer timeout, heartbeat_interval x
   * heartbeat_timeout_factor (90 s by default; docs/protocol.md 12.4).  A
   * connection left with no stream stays open until it expires, so a
   * peer opening a new stream on it never races its closing. */
  sp_duration idle_timeout;
  /* Bytes a stream buffers unacknowledged before `send` would block
   * (1 MiB): the bound on what a slow follower can make the leader hold. */
  size_t stream_send_buffer;
  /* Flow-control windows granted to peers: per stream and per
   * connection (1 MiB, 4 MiB). */
  size_t stream_recv_window;
  size_t conn_recv_window;
  /* 1: send with UDP GSO where the kernel allows, falling back to
   * sendmmsg; 0: sendmmsg only (1). */
  int gso;
  /* TESTING ONLY: the ALPN offered and required (SP_ALPN).  A host
   * leaves the default; another value exists only so tests can check
   * that peers refuse it, and such an endpoint talks to no real peer.
   * Copied. */
  const char *alpn;
  /* Optional doorbell callback, see sp_quic_wake_cb. */
  sp_quic_wake_cb on_wake;
  void *wake_user_data;
  /* Optional: 1 adds this module's debug lines and ngtcp2's (one per
   * packet: for debugging only) to on_log, at SP_LOG_DEBUG.  Nothing is
   * ever written to stderr. */
  int debug;
  /* Version 2.  A connection carrying streams that has sent and received
   * nothing for this long sends a QUIC PING (5 s; 0: never; at most
   * SP_QUIC_MAX_TIMER; the side that accepted the connection waits
   * 1.25 x as long, so only one PING goes out while both sides are up).
   * This is how an idle link finds out its peer vanished: a peer that
   * restarted answers with a stateless reset, and a PING nobody
   * acknowledges runs into ack_timeout.  The cost is one PING and its
   * ACK, about 80 bytes of UDP payload, per interval
   * (docs/performance.md, idle).  It is not the
   * protocol's Heartbeat (30 s), which checks the peer's node, not the
   * path. */
  sp_duration keep_alive;
  /* Version 2.  A connection whose packets the peer has acknowledged none
   * of for this long is declared lost (4 s; 3 PTO at least, so a slow
   * path is not cut; 0: only idle_timeout ends it; at most
   * SP_QUIC_MAX_TIMER, else SP_ERR_INVALID_ARGUMENT); its streams close
   * with SP_ERR_CONNECTION_LOST and the next stream dials afresh.  With
   * keep_alive it bounds how long a vanished peer goes unnoticed:
   * keep_alive + ack_timeout on the dialling side (9 s by default),
   * 1.25 x keep_alive + ack_timeout on the accepting side (10.25 s). */
  sp_duration ack_timeout;
  /* Version 3.  Optional: the endpoint's log lines (SP_LOG_WARN: every
   * handshake it refuses, either side, with the peer's address and, when
   * a key was refused, its fingerprint and, dialling, the device and key
   * expected; a connection the peer closed with an error code).  Called
   * in the loop thread, inside sp_quic_endpoint_process; `msg` is valid
   * during the call; it must not call into the endpoint.  Hosts usually
   * pass the node's on_log.  Lines start with "quic[PORT]: " (the bound
   * port) and, for a connection, name its peer: "peer DEVICE at ADDRESS: "
   * (the device once known).  SP_LOG_INFO: a connection lost or failed
   * (with ngtcp2's error text).  SP_LOG_DEBUG only with `debug`.  NULL:
   * nothing is logged. */
  void (*on_log)(sp_log_level level, const char *msg, void *user_data);
  void *log_user_data;
} sp_quic_config;

/* Fill `cfg` with the defaults above. */
SP_API void sp_quic_config_default(sp_quic_config *cfg);

/*
 * Returns the text of the endpoint's most recent failed call, in the
 * manner of sqlite3_errmsg: the errno text of a system call (a bind:
 * "Address already in use"), or the library's message ("GnuTLS: ...");
 * "" if nothing failed yet.  A failure of one connection fails no call
 * (it closes that connection only): on_log has it, with ngtcp2's text.  With `ep` NULL: the text of the
 * calling thread's last sp_quic_endpoint_new that failed (its endpoint
 * does not exist), e.g. "Address already in use" for SP_ERR_IO from its
 * bind, which also leaves errno set.  The string is owned by the endpoint
 * (the thread, for NULL) and valid until the next call on it (the next
 * sp_quic_endpoint_new of the thread); not for sp_quic_endpoint_wake
 * and sp_quic_endpoint_stop from another thread, which record nothing.
 * Never NULL.
 */
SP_API const char *sp_quic_errmsg(const sp_quic_endpoint *ep);

/*
 * sp_quic_endpoint_new binds the UDP socket and prepares the TLS
 * credentials from `identity`.  `cfg` and `registry` are copied;
 * `identity` and registry->user_data must outlive the endpoint.  Create
 * the node with the vtable from sp_quic_endpoint_get_transport, then
 * sp_quic_endpoint_attach it.  On failure `*pep` is NULL and
 * sp_quic_errmsg(NULL) says why (SP_ERR_IO also leaves errno set).
 * Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION, SP_ERR_ADDRESS,
 * SP_ERR_IO (socket, bind), SP_ERR_TLS, SP_ERR_NOMEM.
 */
SP_API int sp_quic_endpoint_new(sp_quic_endpoint **pep,
                                const sp_quic_config *cfg,
                                const sp_identity *identity,
                                const sp_registry *registry,
                                const sp_mem *mem);

/*
 * Close every connection (a CONNECTION_CLOSE goes out), close the socket
 * and free.  Delete the node first: deleting the node closes its streams
 * through this endpoint.  NULL is allowed.
 */
SP_API void sp_quic_endpoint_del(sp_quic_endpoint *ep);

/* Fill `*out` with the transport vtable (user_data is `ep`) as struct
 * version `version` (SP_TRANSPORT_VERSION: the macro
 * sp_quic_endpoint_get_transport(ep, out) passes it; out->version is set
 * to it and only that version's bytes are written).  Returns 0,
 * SP_ERR_INVALID_ARGUMENT or SP_ERR_VERSION (a version this build does not
 * know). */
SP_API int sp_quic_endpoint_get_transport_versioned(sp_quic_endpoint *ep,
                                                    int version,
                                                    sp_transport *out);
#define sp_quic_endpoint_get_transport(ep, out)                            \
  sp_quic_endpoint_get_transport_versioned((ep), SP_TRANSPORT_VERSION, (out))

/*
 * Bind the node (not owned); NULL unbinds it.  Unbind (or delete the
 * endpoint) before deleting the node's memory is reused: process and
 * get_expiry call into the bound node.  Returns 0, SP_ERR_INVALID_ARGUMENT
 * (ep NULL) or SP_ERR_INVALID_STATE (another node is bound).
 */
SP_API int sp_quic_endpoint_attach(sp_quic_endpoint *ep, sp_node *node);

/* Returns the descriptor to poll for reading (owned by the endpoint: do
 * not close it). */
SP_API int sp_quic_endpoint_fd(const sp_quic_endpoint *ep);

/*
 * Write the bound address ("127.0.0.1:40123") into `buf`.  Returns 0,
 * SP_ERR_NOBUF, SP_ERR_IO.
 */
SP_API int sp_quic_endpoint_local_address(const sp_quic_endpoint *ep,
                                          char *buf, size_t buflen);

/* Returns the bound UDP port. */
SP_API uint16_t sp_quic_endpoint_port(const sp_quic_endpoint *ep);

/* Returns when sp_quic_endpoint_process must run next (the connections'
 * and the node's timers), or SP_TSTAMP_MAX. */
SP_API sp_tstamp sp_quic_endpoint_get_expiry(const sp_quic_endpoint *ep);

/*
 * Read every waiting datagram, answer the doorbell, run due timers of the
 * connections and the node, and send what is ready.  `now` must come from
 * sp_quic_now's clock.  Never blocks.  Returns 0, SP_ERR_CALLBACK_FAILURE,
 * or a fatal code.  Per-connection failures close that connection only.
 */
SP_API int sp_quic_endpoint_process(sp_quic_endpoint *ep, sp_tstamp now);

/*
 * Block, processing, until sp_quic_endpoint_stop (a stop requested before
 * the call makes it return at once).  Returns 0 after a stop, or what
 * sp_quic_endpoint_process returned when it failed.
 */
SP_API int sp_quic_endpoint_run(sp_quic_endpoint *ep);

/* Thread- and signal-safe: ring the doorbell (the loop wakes and calls
 * on_wake).  Returns 0 or SP_ERR_IO. */
SP_API int sp_quic_endpoint_wake(sp_quic_endpoint *ep);

/* Thread- and signal-safe: make sp_quic_endpoint_run return. */
SP_API void sp_quic_endpoint_stop(sp_quic_endpoint *ep);

/* Returns CLOCK_MONOTONIC in nanoseconds: the clock every `now` given
 * to the endpoint (and its node) must come from. */
SP_API sp_tstamp sp_quic_now(void);

/* sp_quic_stats's version (sp_quic_endpoint_get_stats). */
#define SP_QUIC_STATS_VERSION 1

typedef struct sp_quic_stats {
  uint64_t datagrams_sent;
  uint64_t datagrams_received;
  /* UDP payload bytes. */
  uint64_t bytes_sent;
  uint64_t bytes_received;
  /* Stream bytes handed to / received from the node. */
  uint64_t stream_bytes_sent;
  uint64_t stream_bytes_received;
  uint64_t connections_accepted;
  uint64_t connections_opened;
  uint64_t handshakes_failed;
  /* Send system calls (sendmmsg or sendmsg), to see batching work. */
  uint64_t send_calls;
} sp_quic_stats;

/* Fill `*out` with the counters since creation, as struct version
 * `version` (SP_QUIC_STATS_VERSION: the macro
 * sp_quic_endpoint_get_stats(ep, out) passes it; only the bytes of that
 * version are written).  Returns 0, SP_ERR_INVALID_ARGUMENT or
 * SP_ERR_VERSION (a version this build does not know). */
SP_API int sp_quic_endpoint_get_stats_versioned(const sp_quic_endpoint *ep,
                                                int version,
                                                sp_quic_stats *out);
#define sp_quic_endpoint_get_stats(ep, out)                                \
  sp_quic_endpoint_get_stats_versioned((ep), SP_QUIC_STATS_VERSION, (out))

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_QUIC_H */
