/*
 * sp_quic_int.h: internals shared by the QUIC transport's files.
 *
 *   sp_quic_addr.c      address text <-> sockaddr
 *   sp_quic_udp.c       the socket: batched receive, GSO/sendmmsg send
 *   sp_quic_tls.c       GnuTLS credentials from the device key, peer checks
 *   sp_quic_conn.c      one ngtcp2 connection: create, read, write, close
 *   sp_quic_callbacks.c what ngtcp2 calls back (records, never acts)
 *   sp_quic_stream.c    transport streams: vtable, send buffers, node events
 *   sp_quic_endpoint.c  the endpoint: routing, timers, process, run loop
 *
 * Ownership: the endpoint owns its connections and its streams (one table
 * each).  A stream points at its connection until that ends; a connection
 * lists its streams.  Nothing is freed in the middle of a callback or of a
 * node call: objects are marked and swept at the end of a process step.
 *
 * The node is called only from sp_quic_stream_dispatch, which runs outside
 * every ngtcp2 call and never inside a vtable call the node made.
 */
#ifndef SP_QUIC_INT_H
#define SP_QUIC_INT_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "sync_protocol/quic.h"
#include "sp_buf.h"

/* Length of the connection ids this endpoint issues; short-header packets
 * are routed by their first SP_QUIC_CID_LEN bytes. */
#define SP_QUIC_CID_LEN 16
/* Source addresses the stateless-reset rate limit remembers. */
#define SP_QUIC_RESET_LOG 16
/* Largest UDP payload this endpoint accepts (transport parameter) and
 * the size of one receive slot (larger datagrams are truncated: dropped). */
#define SP_QUIC_MAX_RECV_PAYLOAD 1500
#define SP_QUIC_RECV_SLOT 2048
#define SP_QUIC_RECV_BATCH 64
/* Largest UDP payload we write (ngtcp2's own ceiling with PMTUD). */
#define SP_QUIC_MAX_TX_PAYLOAD 1452
/* Packets the send queue holds before it must be flushed. */
#define SP_QUIC_TX_PACKETS 256
/* Send buffers grow and shrink by chunks of this size: ngtcp2 keeps
 * pointers into them until the bytes are acknowledged, so they never move.
 * Small, because every busy stream holds a partly used chunk at each end
 * of its unacknowledged bytes: with 48 followers catching up at once,
 * 32 KiB chunks made the leader's peak (and so its RSS) ~10 KiB per
 * follower larger (memory_bench). */
#define SP_QUIC_CHUNK (8 * 1024)
/* Spare chunks an endpoint keeps (1 MiB, the send budget of one stream:
 * a bulk send recycles chunks without allocating). */
#define SP_QUIC_CHUNK_POOL 128
/* Bytes a stream may always buffer, whatever the endpoint's budget. */
#define SP_QUIC_STREAM_FLOOR (2 * SP_QUIC_CHUNK)
/* Streams the peer may have open on one connection at once. */
#define SP_QUIC_MAX_PEER_STREAMS 100
/* Connections one endpoint keeps, both directions together, and of
 * those the accepted ones still in their handshake (a flood of Initials
 * costs at most this many TLS sessions). */
#define SP_QUIC_MAX_CONNS 1024
#define SP_QUIC_MAX_HANDSHAKES 64
/* Authenticated connections one peer device holds with us, both
 * directions together: each may make us hold conn_recv_window +
 * max_frame, so this is what bounds a device (docs/security.md).  An
 * honest device holds one, two for a moment after a restart. */
#define SP_QUIC_MAX_PEER_CONNS 4
/* Accepted handshakes in progress from one host (IP address, any port),
 * counted apart for Initials that proved their address with a Retry
 * token and those that did not.  Past it an unproven Initial is answered
 * with a Retry and a proven one gets no slot: a host that answers cannot
 * take every slot, and spoofing a host's address costs that host only a
 * round trip.  Devices behind one NAT rarely handshake at once. */
#define SP_QUIC_MAX_HOST_HANDSHAKES 8
/* From this many accepted handshakes in progress on, an Initial takes a
 * slot only with a Retry token (RFC 9000 8.1.2): its source address must
 * have answered us, so spoofed addresses cost no slot.  Below it, no
 * Retry round trip is spent. */
#define SP_QUIC_RETRY_THRESHOLD (SP_QUIC_MAX_HANDSHAKES / 2)
/* A Retry token is echoed at once; this also covers the Initial carrying
 * it being lost and re-sent within a handshake timeout. */
#define SP_QUIC_RETRY_TOKEN_TTL (10 * SP_SECONDS)

typedef struct sp_quic_conn sp_quic_conn;
typedef struct sp_quic_stream sp_quic_stream;

typedef struct sp_quic_addr {
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct sockaddr_storage ss;
  } u;
  socklen_t len;
} sp_quic_addr;

/* ---- sp_quic_addr.c ---- */

/* Parse one "a.b.c.d:port" or "[v6]:port" (numeric only, no names).
 * Returns 0 or SP_ERR_ADDRESS. */
int sp_quic_addr_parse(sp_quic_addr *out, const char *text, size_t len);

/* Pick the first address of the comma-separated `list` that a socket of
 * `family` can reach (an AF_INET6 socket reaches IPv4 as v4-mapped).
 * Returns 0, SP_ERR_ADDRESS (nothing parseable) or SP_ERR_UNREACHABLE
 * (only addresses of another family). */
int sp_quic_addr_pick(sp_quic_addr *out, const char *list, int family);

/* Write "ip:port" / "[ip]:port".  Returns 0, SP_ERR_NOBUF, SP_ERR_ADDRESS. */
int sp_quic_addr_format(const sp_quic_addr *a, char *buf, size_t buflen);

int sp_quic_addr_equal(const sp_quic_addr *a, const sp_quic_addr *b);

/* ---- sp_quic_tls.c ---- */

typedef struct sp_quic_tls {
  gnutls_certificate_credentials_t cred;
  gnutls_priority_t prio;
  gnutls_datum_t alpn;
} sp_quic_tls;

/* Self-signed Ed25519 certificate of `cert_id` with the private key of
 * `key_id` (the same identity, except in a test that forges).  `alpn` must
 * outlive `tls`.  Returns 0, SP_ERR_TLS or SP_ERR_NOMEM. */
int sp_quic_tls_init(sp_quic_tls *tls, const sp_identity *cert_id,
                     const sp_identity *key_id, const char *alpn);
void sp_quic_tls_free(sp_quic_tls *tls);

/* Create and configure the TLS session of `c` (client or server side),
 * bound to its ngtcp2 connection.  Returns 0 or SP_ERR_TLS. */
int sp_quic_tls_session_new(sp_quic_conn *c);

/* ---- sp_quic_udp.c ---- */

typedef struct sp_quic_pkt {
  size_t off;
  size_t len;
  sp_quic_addr dst;
} sp_quic_pkt;

typedef struct sp_quic_udp {
  int fd;
  /* 1 while GSO works; cleared for good when the kernel refuses it. */
  int gso;
  /* Send queue: packets [head, npkts) of `pkts`, bytes in `buf`. */
  uint8_t *buf;
  size_t buflen;
  sp_quic_pkt *pkts;
  size_t head;
  size_t npkts;
  /* 1 while the kernel said EAGAIN: wait for POLLOUT or the retry time. */
  int blocked;
  sp_tstamp retry_at;
  /* Times the kernel said EAGAIN; tests may make every n-th send call
   * fail so (loopback never fills the socket buffer). */
  uint64_t blocked_count;
  unsigned test_eagain_every;
  unsigned test_calls;
  /* Tests: refuse GSO messages with EIO, as a device without checksum
   * offload does. */
  int test_gso_eio;
  /* Receive slots. */
  uint8_t *rbuf;
  sp_quic_addr *raddr;
} sp_quic_udp;

/* Open, bind and configure the socket.  Returns 0, SP_ERR_IO, SP_ERR_NOMEM. */
int sp_quic_udp_open(sp_quic_endpoint *ep, const sp_quic_addr *bind_addr);
void sp_quic_udp_close(sp_quic_endpoint *ep);

/* Room for one packet at the end of the queue (at least `need` bytes), or
 * NULL when the queue is full or blocked (flush first). */
uint8_t *sp_quic_udp_space(sp_quic_endpoint *ep, size_t need);
/* Commit `len` bytes written at sp_quic_udp_space's pointer. */
void sp_quic_udp_commit(sp_quic_endpoint *ep, size_t len,
                        const sp_quic_addr *dst);
/* Queue a copy of a packet (close packets).  0 or SP_ERR_WOULD_BLOCK. */
int sp_quic_udp_queue(sp_quic_endpoint *ep, const uint8_t *pkt, size_t len,
                      const sp_quic_addr *dst);
/* Send what is queued.  Returns 0 (all sent), SP_ERR_WOULD_BLOCK (some
 * kept for later) or SP_ERR_IO. */
int sp_quic_udp_flush(sp_quic_endpoint *ep, sp_tstamp now);

/* Receive up to SP_QUIC_RECV_BATCH datagrams and hand each to
 * sp_quic_endpoint_on_datagram.  Returns how many, or a fatal code. */
int sp_quic_udp_recv_batch(sp_quic_endpoint *ep, sp_tstamp now);

/* ---- sp_quic_conn.c ---- */

typedef enum sp_quic_conn_state {
  SP_QUIC_CONN_HANDSHAKE = 0,
  SP_QUIC_CONN_OPEN,
  /* We sent CONNECTION_CLOSE: answer stray packets with it until
   * `deadline`. */
  SP_QUIC_CONN_CLOSING,
  /* The peer closed: stay silent until `deadline`. */
  SP_QUIC_CONN_DRAINING,
  /* Gone: swept at the end of the step. */
  SP_QUIC_CONN_DEAD
} sp_quic_conn_state;

struct sp_quic_conn {
  sp_quic_endpoint *ep;
  ngtcp2_conn *qc;
  /* NULL once the handshake is confirmed (sp_quic_conn.c: tls_release). */
  gnutls_session_t session;
  /* What the GnuTLS session points at (see the ngtcp2 notes). */
  ngtcp2_crypto_conn_ref conn_ref;
  int server;
  sp_quic_conn_state state;
  sp_quic_addr remote;
  /* Client: the device we dialled, until authenticated.  Then (both
   * sides) the device whose key the handshake proved. */
  sp_uuid peer;
  /* The public key the peer proved (valid once cert_ok): the transport
   * reports it (peer_key), so the core can tell two keys of one id. */
  uint8_t peer_key[SP_PUBLIC_KEY_LEN];
  /* The peer certificate passed every check. */
  int cert_ok;
  /* cert_ok and the handshake completed: streams may carry bytes. */
  int authenticated;
  /* Handshake confirmed (client) / completed (server). */
  int confirmed;
  /* When a datagram last arrived, and when the node last declared the
   * peer silent on one of our streams (SP_ERR_PEER_TIMEOUT): such a
   * connection is not reused until the peer is heard again.  Resetting a
   * stream for SP_ERR_STALLED marks it the same way (sp_quic_conn.c). */
  sp_tstamp last_rx;
  sp_tstamp suspect_at;
  /* Since when packets we sent have waited for an acknowledgement with
   * none arriving (0: nothing waits): the ack timeout runs from it. */
  sp_tstamp unacked_since;
  /* The peer proved itself on a newer connection: a PING is due here
   * (probe_pending), and without an acknowledgement by probe_by this
   * connection is dead (0: no probe). */
  sp_tstamp probe_by;
  int probe_pending;
  /* Why our own checks refused the peer (an SP_ERR_*), or 0. */
  int verify_error;
  /* Server: the peer proved a key we refuse (SP_ERR_UNKNOWN_KEY,
   * SP_ERR_DUPLICATE_DEVICE): the handshake goes on, unauthenticated, and
   * the connection is closed with this code once it completed. */
  int refuse_code;
  /* A datagram came from the peer (tells unreachable from refused). */
  int heard;
  /* open_bidi_stream was refused for the peer's stream limit. */
  int streams_blocked;
  /* Counted in handshakes_failed already. */
  int counted_failure;
  /* Accepted with our Retry token: its address answered us. */
  int validated;
  /* Reason given to streams when the connection ended. */
  int end_reason;
  sp_tstamp deadline;
  uint8_t *close_pkt;
  size_t close_pktlen;
  unsigned close_resends;
  /* Streams of this connection and the round-robin position. */
  sp_quic_stream *streams;
  sp_quic_stream *cursor;
  /* Receive credit (sp_quic_stream.c): bytes its streams' node consumed
   * (whole frames, or dropped), the connection offset granted to the peer
   * (0: the initial window), and the one stream whose unfinished frame
   * may take credit past the window so that it can complete. */
  uint64_t rx_consumed;
  uint64_t rx_limit;
  /* Bytes its streams received into their buffers (not those of streams
   * the node is done with, given back at once): where a peer blocked at
   * the limit it knows has got to. */
  uint64_t rx_received;
  sp_quic_stream *rx_big;
  /* rx_big's consumed offset once the frame it was granted for is whole:
   * the allowance is released there. */
  uint64_t rx_big_end;
};

/* Callbacks, settings and transport parameters for a new connection
 * (sp_quic_callbacks.c). */
void sp_quic_conn_config(const sp_quic_endpoint *ep, int server,
                         sp_tstamp now, ngtcp2_callbacks *cb,
                         ngtcp2_settings *st, ngtcp2_transport_params *p);

/* Packets this thread's connections decrypted so far: read_pkt moved it
 * only if the datagram held one that passed AEAD (sp_quic_callbacks.c). */
uint64_t sp_quic_decrypted(void);

/* Dial `remote` for device `peer`.  Returns 0, SP_ERR_NOMEM, SP_ERR_TLS,
 * SP_ERR_QUIC. */
int sp_quic_conn_client_new(sp_quic_conn **pc, sp_quic_endpoint *ep,
                            const sp_uuid *peer, const sp_quic_addr *remote,
                            sp_tstamp now);
/* A datagram that may open a connection: accept it if it is a valid
 * Initial, answer it with a Retry when handshakes pile up and it has no
 * token, or with INVALID_TOKEN when its Retry token is not ours for that
 * address.  Never fails the endpoint (refusals only drop the packet),
 * except with SP_ERR_NOMEM. */
int sp_quic_conn_accept(sp_quic_endpoint *ep, const sp_quic_addr *remote,
                        const uint8_t *pkt, size_t len, sp_tstamp now);
/* Feed one packet.  Connection errors close the connection only. */
void sp_quic_conn_read(sp_quic_conn *c, const sp_quic_addr *remote,
                       const uint8_t *pkt, size_t len, sp_tstamp now);
/* Offer a packet for no known connection id to `c`: it may be a
 * stateless reset from its peer.  Returns 1 if it was (c then drains). */
int sp_quic_conn_take_reset(sp_quic_conn *c, const sp_quic_addr *remote,
                            const uint8_t *pkt, size_t len, sp_tstamp now);
/* Write what is ready into the send queue. */
void sp_quic_conn_write(sp_quic_conn *c, sp_tstamp now);
void sp_quic_conn_handle_expiry(sp_quic_conn *c, sp_tstamp now);
sp_tstamp sp_quic_conn_expiry(sp_quic_conn *c);
/* Close with CONNECTION_CLOSE (application NO_ERROR) and tell the streams
 * `reason`.  Used when the endpoint goes away. */
void sp_quic_conn_shutdown(sp_quic_conn *c, int reason, sp_tstamp now);
void sp_quic_conn_free(sp_quic_conn *c);
/* Our checks of the peer's proven key (called by the TLS verify
 * callback).  0, or -1 with c->verify_error set. */
int sp_quic_conn_verify_peer(sp_quic_conn *c,
                             const uint8_t key[SP_PUBLIC_KEY_LEN]);
/* After sp_quic_conn_verify_peer refused a server's peer for its key
 * (unknown, or a second key of a device): the TLS handshake goes on and
 * the connection is closed with an application code the client can read
 * once it completed (sp_quic_conn_read), instead of a TLS alert that a
 * client which already finished its side of the handshake hears as a
 * bare handshake failure, or not at all.  Returns 1 if so (the verify
 * callback then accepts), 0 for a refusal by alert. */
int sp_quic_conn_refuse_later(sp_quic_conn *c,
                              const uint8_t key[SP_PUBLIC_KEY_LEN]);
int sp_quic_conn_usable(const sp_quic_conn *c);

/* ---- sp_quic_stream.c ---- */

struct sp_quic_stream {
  uint64_t id;
  sp_quic_endpoint *ep;
  /* NULL once the connection ended. */
  sp_quic_conn *conn;
  sp_quic_stream *cprev, *cnext;
  /* QUIC stream id, -1 until opened. */
  int64_t qsid;
  sp_uuid peer;
  unsigned local : 1;
  /* Node-facing state. */
  unsigned opened_pending : 1; /* remote stream the node has not seen */
  unsigned node_knows : 1;
  unsigned node_done : 1;      /* no more sp_node_* calls for it */
  unsigned writable_pending : 1;
  unsigned want_writable : 1;  /* a short send/WOULD_BLOCK owes a call */
  unsigned closed_pending : 1;
  /* Its connection had proven the peer when it ended (conn is NULL). */
  unsigned peer_proven : 1;
  /* QUIC-facing state. */
  unsigned fin_received : 1;
  unsigned fin_requested : 1;
  unsigned fin_sent : 1;
  unsigned write_shut : 1;
  unsigned shutdown_pending : 1;
  unsigned shutdown_both : 1;
  unsigned stop_pending : 1;   /* STOP_SENDING with linger_code due */
  unsigned quic_done : 1;      /* ngtcp2 forgot the stream */
  unsigned blocked : 1;        /* flow-control blocked in this write pass */
  unsigned budget_wait : 1;    /* refused for the endpoint's send budget */
  int closed_reason;
  uint64_t shutdown_code;
  /* Closed by the node with an error code while bytes were still to
   * deliver (a refusal's Error frame): they go out, and the stream is
   * reset with linger_code once they are acknowledged, or at
   * linger_until (SP_QUIC_LINGER, sp_quic_stream.c).  0: not lingering. */
  sp_tstamp linger_until;
  uint64_t linger_code;
  /* Send buffer: bytes [acked, end) of the stream kept, [sent, end) not
   * yet handed to ngtcp2.  `head_base` is the stream offset of head's
   * first byte. */
  struct sp_quic_chunk *head, *tail;
  uint64_t head_base, acked, sent, end;
  /* Received bytes the node has not taken yet (bounded by the window). */
  sp_buf rbuf;
  /* Receive credit (sp_quic_stream.c): bytes handed to the node or
   * dropped; of those, what the node still holds in a frame not received
   * whole and what that frame still needs (sp_node_stream_held); the
   * consumed bytes already counted on the connection; the stream offset
   * granted to the peer (0: the initial window). */
  uint64_t rx_taken;
  size_t node_held, node_need;
  uint64_t rx_counted;
  uint64_t rx_limit;
  /* The key its connection proved, kept when that ended (peer_proven). */
  uint8_t peer_key[SP_PUBLIC_KEY_LEN];
};

/* A stream on `c` (local: the node opened it).  Returns NULL on NOMEM. */
sp_quic_stream *sp_quic_stream_new(sp_quic_endpoint *ep, sp_quic_conn *c,
                                   const sp_uuid *peer, int local);
sp_quic_stream *sp_quic_stream_find(sp_quic_endpoint *ep, uint64_t id);
void sp_quic_stream_free(sp_quic_stream *s);

/* Fill up to `max` vectors with unsent bytes; returns the count (0 if
 * none) and sets `*fin` when they reach the end and a FIN is due. */
size_t sp_quic_stream_unsent(sp_quic_stream *s, ngtcp2_vec *v, size_t max,
                             int *fin);
void sp_quic_stream_mark_sent(sp_quic_stream *s, size_t n, int fin);
void sp_quic_stream_acked(sp_quic_stream *s, uint64_t offset, uint64_t len);
/* Something to write: unsent bytes or a FIN. */
int sp_quic_stream_has_output(const sp_quic_stream *s);
/* Bytes arrived (copied; the caller extends flow control itself when the
 * node will not see them).  0 or SP_ERR_NOMEM. */
int sp_quic_stream_received(sp_quic_stream *s, const uint8_t *data,
                            size_t len, int fin);
/* The peer reset its sending side with `app_code`. */
void sp_quic_stream_peer_reset(sp_quic_stream *s, uint64_t app_code);
/* ngtcp2 closed the stream. */
void sp_quic_stream_quic_closed(sp_quic_stream *s, int has_code,
                                uint64_t app_code);
/* The connection ended under the stream. */
void sp_quic_stream_conn_ended(sp_quic_stream *s, int reason);
/* Reset the lingering streams of `c` whose time ran out (none when `now`
 * is 0: only looks); returns the earliest linger deadline left
 * (SP_TSTAMP_MAX: none). */
sp_tstamp sp_quic_stream_linger(sp_quic_conn *c, sp_tstamp now);
/* Map a peer's application error code to the reason a node sees. */
int sp_quic_reason_from_app_code(uint64_t code);

/* Deliver pending events to the node.  Returns 0 or a fatal code. */
int sp_quic_stream_dispatch(sp_quic_endpoint *ep, sp_tstamp now);
/* Free streams nobody needs any more. */
void sp_quic_stream_sweep(sp_quic_endpoint *ep);
/* Bytes a stream holds unacknowledged (tests). */
size_t sp_quic_stream_buffered(sp_quic_endpoint *ep, uint64_t id);
/* Free the endpoint's pool of spare send chunks. */
void sp_quic_chunk_pool_free(sp_quic_endpoint *ep);

void sp_quic_transport_fill(sp_quic_endpoint *ep, sp_transport *out);

/* ---- sp_quic_endpoint.c ---- */

typedef struct sp_quic_cid_entry {
  ngtcp2_cid cid;
  sp_quic_conn *conn;
} sp_quic_cid_entry;

/* Where a device was last seen, from the node (add_address_hint): dialed
 * when the registry has no address for it. */
typedef struct sp_quic_hint {
  sp_uuid device;
  char address[SP_PEER_ADDRESS_MAX];
} sp_quic_hint;

#define SP_QUIC_ERRMSG_MAX 256

struct sp_quic_endpoint {
  sp_mem mem;
  ngtcp2_mem nmem;
  sp_quic_config cfg;
  char *alpn;
  const sp_identity *identity;
  sp_registry registry;
  sp_node *node;
  int epfd;
  int evfd;
  sp_quic_addr local;
  sp_quic_udp udp;
  sp_quic_tls tls;
  sp_quic_conn **conns;
  size_t nconns, conns_cap;
  sp_quic_cid_entry *cids;
  size_t ncids, cids_cap;
  sp_quic_stream **streams;
  size_t nstreams, streams_cap;
  /* Send chunks no stream uses, for the next one that needs one: bulk
   * sends recycle them instead of allocating, and idle streams hold none.
   * At most SP_QUIC_CHUNK_POOL are kept. */
  struct sp_quic_chunk *chunk_pool;
  size_t npool;
  /* Bytes all streams hold unacknowledged, bounded by send_budget
   * (stream_send_buffer), so many streams catching up at once do not each
   * fill a whole buffer; and how many streams wait for that budget. */
  size_t send_buffered;
  size_t send_budget;
  size_t budget_waiters;
  size_t budget_cursor;
  uint64_t next_stream_id;
  /* Some stream has a node event waiting / some connection has output. */
  int events_pending;
  int output_pending;
  int epollout;
  /* Key of our stateless reset tokens, derived from the device key so a
   * restarted endpoint can still reset its previous connections. */
  uint8_t reset_key[32];
  unsigned resets_sent;
  /* Where the latest resets went and when (sp_quic_endpoint.c): one
   * source address draws one per interval at most. */
  struct {
    sp_quic_addr to;
    sp_tstamp at;
  } reset_log[SP_QUIC_RESET_LOG];
  /* Key of our Retry tokens: random per endpoint, as a token is only
   * ever answered within one handshake.  `retry_threshold` is
   * SP_QUIC_RETRY_THRESHOLD (tests lower it); the counters are for tests
   * and debugging. */
  uint8_t token_key[32];
  size_t retry_threshold;
  uint64_t retries_sent;
  uint64_t tokens_refused;
  atomic_int stop;
  /* sp_quic_endpoint_wake rang (stop rings the same bell). */
  atomic_int woken;
  sp_quic_stats stats;
  sp_quic_hint *hints;
  size_t nhints, hints_cap;
  /* sp_quic_errmsg: the text of the last failure (sp_quic_set_error). */
  char errmsg[SP_QUIC_ERRMSG_MAX];
};

/* The stateless reset token of one of our connection ids. */
void sp_quic_reset_token(const sp_quic_endpoint *ep, const ngtcp2_cid *cid,
                         uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN]);

void sp_quic_endpoint_on_datagram(sp_quic_endpoint *ep,
                                  const sp_quic_addr *from,
                                  const uint8_t *data, size_t len,
                                  sp_tstamp now);
int sp_quic_cid_add(sp_quic_endpoint *ep, const ngtcp2_cid *cid,
                    sp_quic_conn *c);
void sp_quic_cid_remove(sp_quic_endpoint *ep, const ngtcp2_cid *cid);
void sp_quic_cid_remove_conn(sp_quic_endpoint *ep, sp_quic_conn *c);
int sp_quic_conn_table_add(sp_quic_endpoint *ep, sp_quic_conn *c);
/* Ask for POLLOUT on the socket (on = 1) or stop asking. */
void sp_quic_want_pollout(sp_quic_endpoint *ep, int on);

/* A debug line: to the host's on_log at SP_LOG_DEBUG, only when the
 * host set `debug`.  Nothing in this module writes to stderr. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void sp_quic_debug(const sp_quic_endpoint *ep, const char *fmt, ...);
/* A line for the host's on_log (sp_quic_config), prefixed "quic[port]: "
 * so the host can tell it from the node's; dropped when there is none. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void sp_quic_log(const sp_quic_endpoint *ep, sp_log_level level,
                 const char *fmt, ...);
/* The same for a line about one connection: the prefix also names its
 * peer ("quic[port]: peer 1b2c... at 10.0.0.2:7400: "), the device once
 * known.  DEBUG lines only when the host set `debug`. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void sp_quic_conn_log(const sp_quic_conn *c, sp_log_level level,
                      const char *fmt, ...);
/* Record the text of a failure for sp_quic_errmsg; returns `rv`.  With
 * `err` non-zero the text ends in strerror(err), and errno is left at
 * `err` for the caller. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int sp_quic_set_error(sp_quic_endpoint *ep, int rv, int err, const char *fmt,
                      ...);

/* Test hooks (internal, not exported): present `cert_owner`'s
 * certificate while signing with the endpoint's own key, as someone who
 * copied another device's certificate would. */
int sp_quic_endpoint_test_forge_cert(sp_quic_endpoint *ep,
                                     const sp_identity *cert_owner);

#endif /* SP_QUIC_INT_H */
