/*
 * quic_fake_node.h: a stand-in for the node in the QUIC transport tests.
 *
 * It defines the seven functions the transport calls (sp_node_stream_*,
 * sp_node_get_expiry, sp_node_handle_expiry); static linking takes them
 * from here instead of the library.  It records what the transport
 * reports, checks the transport's promises (peer ids consistent, no call
 * from inside one of its own vtable calls, nothing after "closed"), can
 * echo what it receives, and can produce a long deterministic byte stream
 * through the vtable, hashing both ends.
 */
#ifndef QUIC_FAKE_NODE_H
#define QUIC_FAKE_NODE_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "sync_protocol/quic.h"

#define FN_MAX_STREAMS 128
#define FN_KEEP 4096

typedef struct fn_stream {
  uint64_t id;
  sp_uuid peer;
  int remote;
  int closed;
  int closed_reason;
  int close_sent;
  /* Received: count, BLAKE2b of everything, and the first FN_KEEP bytes. */
  uint64_t received;
  crypto_generichash_state rx_hash;
  uint8_t kept[FN_KEEP];
  size_t nkept;
  /* Producer: `to_send` bytes of a ChaCha20 keystream keyed by `seed`. */
  uint64_t to_send;
  uint64_t sent;
  uint8_t seed;
  int fin_after;
  /* Repeat one block, unhashed (throughput runs measure the transport,
   * not the generator). */
  int fixed_pattern;
  crypto_generichash_state tx_hash;
  uint64_t would_block;
  uint64_t short_sends;
  uint64_t writable_calls;
  size_t max_buffered;
  int send_error;
  /* Echo backlog (bytes taken from data, not yet accepted by send). */
  uint8_t echo_buf[FN_KEEP];
  size_t echo_len;
} fn_stream;

struct sp_node {
  sp_transport tr;
  /* The producers' current keystream block (seed, index). */
  uint8_t block[65536];
  uint64_t block_index;
  int block_seed;
  sp_quic_endpoint *ep;
  size_t send_buffer_limit;
  fn_stream streams[FN_MAX_STREAMS];
  size_t nstreams;
  /* Counters of calls. */
  unsigned opened_calls, data_calls, writable_calls, closed_calls;
  unsigned expiry_calls;
  /* Broken promises seen (all must stay 0). */
  unsigned reentrant_calls, peer_mismatch, after_close, unknown_stream;
  int in_vtable;
  /* Behaviour. */
  int echo;
  /* Count received bytes only (no hash, no copy). */
  int count_only;
  int refuse_open; /* sp_node_stream_opened returns this when non-zero */
  /* Sleep this long in each data call until `slow_until`. */
  unsigned slow_us;
  sp_tstamp slow_until;
  /* Deliveries and bytes while slow; the largest single delivery. */
  uint64_t slow_calls, slow_bytes;
  size_t max_delivery;
  /* Stop the endpoint's run loop once this many bytes arrived in total
   * or every producer finished and was acknowledged. */
  uint64_t stop_after_bytes;
  uint64_t total_received;
  int stop_when_sent;
  /* Node timer; stop the endpoint's run loop when it fires if set. */
  sp_tstamp expiry;
  sp_tstamp fired_at;
  int stop_on_expiry;
  sp_tstamp first_data_at;
  sp_tstamp last_data_at;
  /* When set, the node reads each stream as frames of this many bytes
   * and holds the bytes of an unfinished one (sp_node_stream_held says
   * so), as the real node's frame reader does. */
  size_t hold_frame;
  /* When set, says what the node holds of stream `s` instead (tests
   * giving streams their own frame sizes, or a refused stream). */
  void (*held_of)(const struct sp_node *n, const fn_stream *s, size_t *held,
                  size_t *need);
};

void fn_init(sp_node *n, sp_quic_endpoint *ep);
void fn_free(sp_node *n);
fn_stream *fn_find(sp_node *n, uint64_t id);
fn_stream *fn_first_remote(sp_node *n);
/* Open a stream through the vtable and track it.  Returns the stream or
 * NULL (and `*rv` the code). */
fn_stream *fn_open(sp_node *n, const sp_uuid *peer, const sp_uuid *library,
                   int *rv);
/* Send `len` bytes as the stream's payload; returns what send returned. */
sp_ssize fn_send(sp_node *n, fn_stream *s, const void *data, size_t len);
int fn_close(sp_node *n, fn_stream *s, int code);
/* Start producing `total` bytes on `s` (FIN after when `fin`). */
void fn_produce(sp_node *n, fn_stream *s, uint64_t total, uint8_t seed,
                int fin);
void fn_pump(sp_node *n, fn_stream *s);
/* Hash of the first `total` bytes of the producer stream `seed`. */
void fn_expected_hash(uint8_t out[32], uint64_t total, uint8_t seed);
void fn_rx_digest(fn_stream *s, uint8_t out[32]);

#endif /* QUIC_FAKE_NODE_H */
