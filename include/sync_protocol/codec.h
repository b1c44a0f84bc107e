/*
 * codec.h: the SyncMessage wire format.
 *
 * A frame is a 4-byte big-endian body length followed by a msgpack body.
 * docs/protocol.md specifies every byte; this header is the C view of it.
 *
 * Encoding writes whole frames.  Decoding is split in two steps that can be
 * used apart: sp_frame_reader cuts a byte stream (split anywhere) into frame
 * bodies, enforcing the maximum frame size before buffering any body byte;
 * sp_decoder turns one body into an sp_msg without copying strings or
 * payloads.
 */
#ifndef SYNC_PROTOCOL_CODEC_H
#define SYNC_PROTOCOL_CODEC_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes in the length prefix of every frame. */
#define SP_FRAME_HEADER_LEN 4
/* Default and absolute maximum body length of one frame. */
#define SP_MAX_FRAME_DEFAULT (4u * 1024u * 1024u)
#define SP_MAX_FRAME_LIMIT (64u * 1024u * 1024u)
/* Longest body of the first frame on a stream a peer opened (the frame
 * that names its library): a node refuses a longer one
 * (SP_ERR_FRAME_TOO_LARGE) before it is routed, whatever its max_frame. */
#define SP_UNROUTED_MAX_FRAME (16u * 1024u)
/* Longest model_type string accepted, in bytes. */
#define SP_MAX_MODEL_TYPE_LEN 255u
/* Longest Error message accepted, in bytes. */
#define SP_MAX_ERROR_MESSAGE_LEN 1024u
/* Largest sequence span one FetchEntries may ask for. */
#define SP_MAX_FETCH_LIMIT 65536u

/* Message type numbers, the first element of every body. */
typedef enum sp_msg_type {
  SP_MSG_NEW_ENTRIES = 1,
  SP_MSG_FETCH_ENTRIES = 2,
  SP_MSG_ENTRIES_RESPONSE = 3,
  SP_MSG_ACKNOWLEDGE = 4,
  SP_MSG_HEARTBEAT = 5,
  SP_MSG_SYNC_REQUIRED = 6,
  SP_MSG_ERROR = 7
} sp_msg_type;

/* Leader -> follower: entries (from, to] exist; `entry_count` of them. */
typedef struct sp_msg_new_entries {
  sp_seq from_sequence;
  sp_seq to_sequence;
  uint64_t entry_count;
} sp_msg_new_entries;

/*
 * Follower -> leader: send the entries with since < sequence <= since+limit.
 * `since_hash_len` is 0 (no check) or SP_HASH_LEN: the chain hash the
 * follower holds at `since`, which the leader compares with its own.
 */
typedef struct sp_msg_fetch_entries {
  sp_seq since_sequence;
  uint64_t limit;
  uint8_t since_hash[SP_HASH_LEN];
  size_t since_hash_len;
} sp_msg_fetch_entries;

/*
 * Leader -> follower: every entry with since < sequence <= through, in
 * order.  `has_more` is set when the leader holds entries past `through`.
 * `last_hash` (length 0 or SP_HASH_LEN, 0 only with no entries) is the
 * chain hash after the last entry.  `entries` points into storage owned by
 * the decoder or by the caller of the encoder.
 */
typedef struct sp_msg_entries_response {
  sp_seq since_sequence;
  sp_seq through_sequence;
  int has_more;
  sp_seq leader_latest;
  uint8_t last_hash[SP_HASH_LEN];
  size_t last_hash_len;
  const sp_entry *entries;
  size_t entry_count;
} sp_msg_entries_response;

/* Follower -> leader: everything up to this sequence is durably applied. */
typedef struct sp_msg_acknowledge {
  sp_seq up_to_sequence;
} sp_msg_acknowledge;

/* Both ways: liveness plus the sender's position and role. */
typedef struct sp_msg_heartbeat {
  sp_seq current_sequence;
  sp_role role;
} sp_msg_heartbeat;

/* Leader -> follower: incremental sync cannot continue. */
typedef struct sp_msg_sync_required {
  sp_sync_reason reason;
  sp_seq leader_latest;
  sp_seq leader_oldest;
  sp_seq follower_sequence;
} sp_msg_sync_required;

/* Either way: a refusal.  `message` is UTF-8, not NUL-terminated. */
typedef struct sp_msg_error {
  int32_t code;
  const char *message;
  size_t message_len;
} sp_msg_error;

/*
 * One decoded or to-be-encoded message.  `epoch` is the leader epoch: a
 * leader sends its own, a follower the highest it has seen.
 */
typedef struct sp_msg {
  sp_msg_type type;
  sp_uuid library_id;
  uint64_t epoch;
  union {
    sp_msg_new_entries new_entries;
    sp_msg_fetch_entries fetch_entries;
    sp_msg_entries_response entries_response;
    sp_msg_acknowledge acknowledge;
    sp_msg_heartbeat heartbeat;
    sp_msg_sync_required sync_required;
    sp_msg_error error;
  } u;
} sp_msg;

/*
 * sp_msg_encoded_len returns the exact length of the frame (prefix included)
 * that sp_msg_encode would write for `msg`, or 0 if `msg` is invalid (unknown
 * type, enum out of range, string over its limit, hash length not 0 or 32).
 * `msg` is only read.
 */
SP_API size_t sp_msg_encoded_len(const sp_msg *msg);

/*
 * sp_msg_encode writes one complete frame for `msg` into `dst` (capacity
 * `dstlen`) and stores its length in `*nwritten`.  `msg` and everything it
 * points to are only read; the caller keeps ownership of all of it.
 *
 * Returns 0, or
 *   SP_ERR_INVALID_ARGUMENT  NULL pointer, or `msg` invalid as described for
 *                            sp_msg_encoded_len; nothing written;
 *   SP_ERR_NOBUF             `dstlen` too small; `dst` content undefined;
 *   SP_ERR_FRAME_TOO_LARGE   the body would exceed SP_MAX_FRAME_LIMIT.
 */
SP_API int sp_msg_encode(const sp_msg *msg, uint8_t *dst, size_t dstlen,
                         size_t *nwritten);

/* sp_decoder: decodes bodies, reusing its entry array between calls. */
typedef struct sp_decoder sp_decoder;

/*
 * sp_decoder_new creates a decoder in `*pdec`, allocated with `mem` (NULL:
 * default).  Delete it with sp_decoder_del.
 * Returns 0, SP_ERR_INVALID_ARGUMENT (pdec NULL) or SP_ERR_NOMEM.
 */
SP_API int sp_decoder_new(sp_decoder **pdec, const sp_mem *mem);

/* sp_decoder_del frees `dec` and its entry array.  NULL is allowed. */
SP_API void sp_decoder_del(sp_decoder *dec);

/*
 * sp_decoder_decode decodes one frame body (`body`, `len` bytes, without the
 * length prefix) into `*msg`.  On success every pointer in `*msg` points
 * either into `body` (strings, payloads: not copied) or into the decoder's
 * entry array; they stay valid until `body` is released or the next call to
 * sp_decoder_decode / sp_decoder_del on `dec`, whichever comes first.
 *
 * Unknown trailing elements of the message array are skipped (after being
 * checked to be well-formed msgpack): that is how the format grows.
 *
 * Returns 0, or one of the decode band codes (SP_ERR_TRUNCATED,
 * SP_ERR_WRONG_TYPE, SP_ERR_UUID_LENGTH, SP_ERR_ENUM_RANGE,
 * SP_ERR_OVERSIZE, SP_ERR_TRAILING_BYTES, SP_ERR_UNKNOWN_MESSAGE,
 * SP_ERR_MSGPACK, SP_ERR_MISSING_FIELD, SP_ERR_INT_RANGE,
 * SP_ERR_ENTRY_ORDER, SP_ERR_HASH_LENGTH), SP_ERR_INVALID_ARGUMENT, or
 * SP_ERR_NOMEM.  On error `*msg` is unspecified and must not be used.
 */
SP_API int sp_decoder_decode(sp_decoder *dec, const uint8_t *body,
                             size_t len, sp_msg *msg);

/* sp_frame_reader: reassembles frames from a byte stream. */
typedef struct sp_frame_reader sp_frame_reader;

/*
 * sp_frame_reader_new creates a reader accepting bodies of at most
 * `max_frame` bytes (0 means SP_MAX_FRAME_DEFAULT; above SP_MAX_FRAME_LIMIT
 * is refused).  Returns 0, SP_ERR_INVALID_ARGUMENT or SP_ERR_NOMEM.
 */
SP_API int sp_frame_reader_new(sp_frame_reader **preader, size_t max_frame,
                               const sp_mem *mem);

/* sp_frame_reader_del frees the reader and its buffer.  NULL is allowed. */
SP_API void sp_frame_reader_del(sp_frame_reader *reader);

/*
 * sp_frame_reader_read consumes bytes from `data` (`len` bytes, any split).
 * It stops right after the first frame it completes and then sets `*body`
 * and `*bodylen`; otherwise it consumes everything and sets `*body` to
 * NULL.  `*body` points into `data` when the whole frame was there, else
 * into the reader's buffer; either way it is valid until the next call on
 * `reader` (and, in the first case, while `data` lives).
 *
 * Returns the number of bytes consumed (>= 0), or SP_ERR_FRAME_TOO_LARGE /
 * SP_ERR_EMPTY_FRAME (checked on the length prefix, before any body byte is
 * buffered; the reader stays in error until deleted), SP_ERR_NOMEM,
 * SP_ERR_INVALID_ARGUMENT.
 */
SP_API sp_ssize sp_frame_reader_read(sp_frame_reader *reader,
                                     const uint8_t *data, size_t len,
                                     const uint8_t **body, size_t *bodylen);

/*
 * sp_frame_reader_pending returns the number of bytes of an incomplete
 * frame held by the reader (0 at a frame boundary).
 */
SP_API size_t sp_frame_reader_pending(const sp_frame_reader *reader);

/*
 * sp_chain_next computes the next link of the log's hash chain:
 * out = BLAKE2b-256(prev || canonical msgpack encoding of `entry`).  The
 * first entry of a log chains from SP_HASH_LEN zero bytes.  `out` may alias
 * `prev`.  The payload is hashed in place, never copied.  Returns 0, or
 * SP_ERR_INVALID_ARGUMENT (a NULL pointer, or an entry the codec would
 * refuse to encode: change type out of range, model_type over its limit).
 */
SP_API int sp_chain_next(const uint8_t prev[SP_HASH_LEN],
                         const sp_entry *entry, uint8_t out[SP_HASH_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_CODEC_H */
