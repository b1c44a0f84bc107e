/*
 * sys/transport.h: what a transport implements, and the calls it makes
 * into a node.
 *
 * A transport carries ordered, reliable byte streams between authenticated
 * devices: one stream per (peer, library), several streams per connection.
 * Stream ids are chosen by the transport and unique within it.  The node
 * sends by calling the vtable; the transport reports opened streams,
 * received bytes, regained write space and closed streams through the
 * sp_node_stream_* functions below, always from the node's thread and never
 * from inside a vtable call made by that node.
 */
#ifndef SYNC_PROTOCOL_SYS_TRANSPORT_H
#define SYNC_PROTOCOL_SYS_TRANSPORT_H

#include "sync_protocol/types.h"
#include "sync_protocol/sys/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_TRANSPORT_VERSION 2
#define SP_TRANSPORT_INIT \
  {SP_TRANSPORT_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL}

/* Room for a peer address, terminating NUL included ("[v6%zone]:port"). */
#define SP_PEER_ADDRESS_MAX 64

typedef struct sp_node sp_node;

typedef struct sp_transport {
  /* SP_TRANSPORT_VERSION. */
  unsigned int version;
  /* Passed to every callback; must outlive the node. */
  void *user_data;

  /*
   * Open a stream to `peer` for `library` and store its id in
   * `*stream_id`.  Connecting may go on afterwards: until the stream can
   * carry bytes, `send` may take bytes into a bounded buffer or return
   * SP_ERR_WOULD_BLOCK; the transport calls sp_node_stream_writable once
   * it connects, and sp_node_stream_closed if connecting fails.  Return 0, or a negative code
   * (SP_ERR_UNREACHABLE, SP_ERR_NOMEM, ...) if no stream was created.
   */
  int (*open_stream)(const sp_uuid *peer, const sp_uuid *library,
                     uint64_t *stream_id, void *user_data);

  /*
   * Take up to `len` bytes of `data` for the stream, copying what it
   * takes (the node reuses its buffer).  Return the number of bytes taken
   * (0 < n <= len), or SP_ERR_WOULD_BLOCK when it takes none now (it then
   * calls sp_node_stream_writable when space frees up), or another
   * negative code if the stream is unusable.  Taking fewer than `len`
   * bytes also promises a later sp_node_stream_writable.
   */
  sp_ssize (*send)(uint64_t stream_id, const uint8_t *data, size_t len,
                   void *user_data);

  /*
   * Close the stream: bytes already taken are still delivered, then the
   * peer sees the stream end.  `error_code` is 0 for a clean close, else a
   * negative sp_error telling the peer why.  The node passes 0 only when
   * the transport took every byte it queued, so a clean end falls between
   * frames; a close that drops queued bytes carries SP_ERR_CLOSED (or the
   * refusal's code).  After this the transport makes no further
   * sp_node_stream_* call for `stream_id`.
   */
  int (*close_stream)(uint64_t stream_id, int error_code, void *user_data);

  /* -- version 2 -- */

  /*
   * Optional (NULL, or a version-1 vtable: the node cannot tell two keys
   * of one device apart and relies on the registry's one key per device).
   * Copy the public key the peer of `stream_id` proved in the handshake.
   * A leader binds each follower to the key of its first stream: a stream
   * from the same device id with another key is refused while the first
   * is connected (SP_ERR_DUPLICATE_DEVICE), and acknowledgements are
   * never credited for two keys.  Return 0, or SP_ERR_NOT_FOUND while the
   * key is not known yet (a stream still connecting).
   */
  int (*peer_key)(uint64_t stream_id, uint8_t public_key[SP_PUBLIC_KEY_LEN],
                  void *user_data);

  /*
   * Optional (NULL: a restarted leader reaches only the followers the
   * registry gives addresses for).  Write the address the peer of
   * `stream_id` is seen at, NUL-terminated, into `buf` (`len` bytes,
   * SP_PEER_ADDRESS_MAX is enough), in the form the transport takes back
   * in add_address_hint.  A leader keeps it with the follower's position
   * (sys/store.h, save_follower_address) for the next time it starts.
   * Return 0, SP_ERR_NOT_FOUND (not known, or not an address worth
   * dialing back) or SP_ERR_NOBUF.
   */
  int (*peer_address)(uint64_t stream_id, char *buf, size_t len,
                      void *user_data);

  /*
   * Optional, with peer_address.  `address` (from peer_address, only read
   * during the call) is where `device` was last seen: open_stream may dial
   * it when the registry gives no address for the device.  A leader calls
   * it as it starts, before it dials any follower, so a follower that only
   * ever dialed out hears of the restarted leader at once.  A later hint
   * for the same device replaces the earlier one.  Return 0,
   * SP_ERR_INVALID_ARGUMENT (an address the transport cannot parse) or
   * SP_ERR_NOMEM; a failure only costs the shortcut.
   */
  int (*add_address_hint)(const sp_uuid *device, const char *address,
                          void *user_data);
} sp_transport;

/*
 * Every call below carries `peer`, the device whose key the transport
 * authenticated for this stream's connection; it is only read.  For a
 * stream the node opened it must be the device the node asked for; for
 * later calls it must match what the stream was opened with, else the
 * call returns SP_ERR_INVALID_ARGUMENT and changes nothing.
 */

/*
 * A peer opened a stream.  Returns 0, SP_ERR_EXISTS (id already in use),
 * SP_ERR_TOO_MANY_REQUESTS (the peer already has 16 streams waiting for
 * the first frame that routes them: reset this one),
 * SP_ERR_INVALID_ARGUMENT, SP_ERR_NOMEM, or a fatal code.
 */
SP_API int sp_node_stream_opened(sp_node *node, uint64_t stream_id,
                                 const sp_uuid *peer, sp_tstamp now);

/*
 * Bytes arrived on a stream; the node consumes all of them (`data` is only
 * read during the call).  Protocol violations are handled inside (an Error
 * frame, then the stream is closed through the vtable) and are not
 * returned.  Returns 0, SP_ERR_NOT_FOUND (unknown or closed stream; the
 * bytes are dropped), SP_ERR_INVALID_ARGUMENT, or a fatal code.
 */
SP_API int sp_node_stream_data(sp_node *node, uint64_t stream_id,
                               const sp_uuid *peer, const uint8_t *data,
                               size_t len, sp_tstamp now);

/*
 * The stream can take bytes again (after SP_ERR_WOULD_BLOCK or a short
 * send, or once a locally opened stream connects).  Returns 0,
 * SP_ERR_NOT_FOUND, SP_ERR_INVALID_ARGUMENT, or a fatal code.
 */
SP_API int sp_node_stream_writable(sp_node *node, uint64_t stream_id,
                                   const sp_uuid *peer, sp_tstamp now);

/*
 * The stream ended (peer closed it, connection lost, connect failed).
 * `reason` is 0 for a clean end, else a negative sp_error.  The node forgets
 * the stream; a follower schedules its reconnect.  Returns 0,
 * SP_ERR_NOT_FOUND, SP_ERR_INVALID_ARGUMENT, or a fatal code.
 */
SP_API int sp_node_stream_closed(sp_node *node, uint64_t stream_id,
                                 const sp_uuid *peer, int reason,
                                 sp_tstamp now);

/*
 * How many of the bytes a stream delivered the node still holds as part of
 * a frame it has not received whole (`*held`), and how many more bytes that
 * frame needs (`*need`, 0 when none is begun or the stream reads no more).
 * Call it after sp_node_stream_data: a transport with flow control keeps
 * `*held` counted against the peer's windows and gives credit back as it
 * falls, so that what the node buffers for a peer stays inside the windows
 * granted to it; `*need` says how far a window must open for the frame
 * begun to complete (at most the node's max_frame plus the 4-byte prefix).
 * Returns 0, SP_ERR_NOT_FOUND (unknown or closed stream: both are 0), or
 * SP_ERR_INVALID_ARGUMENT.
 */
SP_API int sp_node_stream_held(const sp_node *node, uint64_t stream_id,
                               size_t *held, size_t *need);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_SYS_TRANSPORT_H */
