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
  SP_MSG_ERROR = 7,
  /* Sent only to a peer that advertised SP_FEATURE_WRITES (below). */
  SP_MSG_PROPOSE = 8,
  SP_MSG_PROPOSE_RESULT = 9,
  /* Sent only to a peer that advertised SP_FEATURE_SNAPSHOT (below). */
  SP_MSG_SNAPSHOT_REQUEST = 10,
  SP_MSG_SNAPSHOT_MANIFEST = 11,
  SP_MSG_SNAPSHOT_FETCH = 12,
  SP_MSG_SNAPSHOT_CHUNK = 13
} sp_msg_type;

/*
 * Feature bits a peer advertises in the `features` element of its
 * Heartbeat (docs/protocol.md, "Negotiation").  A message or element a
 * feature brings is sent only to a peer that advertised the feature;
 * a peer that speaks only the seed's messages advertises none.
 */
/* Propose / ProposeResult and the entries' origin_seq element. */
#define SP_FEATURE_WRITES 0x1u
/* SnapshotRequest / Manifest / Fetch / Chunk (docs/protocol.md,
 * "Snapshots").  A handler advertises it only when it has a snapshot
 * sink (follower) or source (leader) configured. */
#define SP_FEATURE_SNAPSHOT 0x2u
/* The claim element of Heartbeat and Error (docs/protocol.md,
 * "Leadership claims"): a leader writes it to a follower only when the
 * follower advertised this bit.  Every handler of this build advertises
 * it. */
#define SP_FEATURE_CLAIMS 0x4u
/* The features this build implements (a handler advertises those of
 * them its store and configuration make usable). */
#define SP_FEATURES_SUPPORTED \
  (SP_FEATURE_WRITES | SP_FEATURE_SNAPSHOT | SP_FEATURE_CLAIMS)

/* Bytes of a leadership claim's Ed25519 signature. */
#define SP_CLAIM_SIG_LEN 64u

/*
 * A leadership claim: device `leader` leads the library at `epoch`,
 * signed with that device's Ed25519 key over the bytes of
 * docs/protocol.md section 15 (the library id is the frame's).  Carried
 * by a Heartbeat (element 8) or an Error (element 5); a leader steps
 * down only for a claim that verifies against the key its registry holds
 * for `leader`, by a device the registry allows to lead.
 */
typedef struct sp_leader_claim {
  uint64_t epoch;
  sp_uuid leader;
  uint8_t signature[SP_CLAIM_SIG_LEN];
} sp_leader_claim;

/* Bytes of a snapshot id (random, chosen by the leader). */
#define SP_SNAPSHOT_ID_LEN 16u
/* Largest chunk of a snapshot, so that a SnapshotChunk always fits a
 * frame of SP_MAX_FRAME_DEFAULT. */
#define SP_SNAPSHOT_CHUNK_MAX (2u * 1024u * 1024u)
/* Most chunks in one snapshot: the manifest's hashes (32 bytes each) then
 * take at most 2 MiB, so a manifest fits a frame of SP_MAX_FRAME_DEFAULT. */
#define SP_MAX_SNAPSHOT_CHUNKS 65536u
/* Most chunks one SnapshotFetch may ask for. */
#define SP_MAX_SNAPSHOT_WINDOW 64u

/* Most entries in one Propose, and results in one ProposeResult. */
#define SP_MAX_PROPOSE_ENTRIES 1024u

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
  /* Optional element 6 (has_features): the follower's SP_FEATURE_* bits,
   * so that a leader knows them before it serves any entry. */
  int has_features;
  uint64_t features;
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

/*
 * Both ways: liveness plus the sender's position and role.  `has_features`
 * says whether the optional elements are present (decoded) or written
 * (encoded): `features`, the sender's SP_FEATURE_* bits, and
 * `origin_high`, which only a leader fills in (0 otherwise): the highest
 * origin_seq its log has ever held for the receiving device.  `max_frame`
 * (optional element 7, only with the features; a leader writes it, 0 =
 * not sent / unknown): the largest frame body the sender accepts, so a
 * follower sizes its Propose frames for it.
 */
typedef struct sp_msg_heartbeat {
  sp_seq current_sequence;
  sp_role role;
  int has_features;
  uint64_t features;
  uint64_t origin_high;
  uint64_t max_frame;
  /* Element 8 (docs/protocol.md 3.6, 15): a leadership claim.  Encoding
   * with has_claim set writes elements 5 to 8, so has_features must be
   * set too.  Decoding sets has_claim only for a claim array (a nil
   * element 8 is no claim). */
  int has_claim;
  sp_leader_claim claim;
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
  /* Element 5 (docs/protocol.md 3.8, 15): the sender's leadership claim,
   * as in sp_msg_heartbeat. */
  int has_claim;
  sp_leader_claim claim;
} sp_msg_error;

/*
 * Follower -> leader: submissions to append.  Every entry has sequence 0,
 * device_id the proposer's own id and origin_seq >= 1; at most
 * SP_MAX_PROPOSE_ENTRIES, in increasing origin_seq order.  `entries`
 * points into storage owned by the decoder or the encoder's caller.
 */
typedef struct sp_msg_propose {
  const sp_entry *entries;
  size_t entry_count;
} sp_msg_propose;

/*
 * The answer to one proposed entry: `code` 0 and `sequence` the log
 * sequence it has (appended now or before), or `code` a negative sp_error
 * (why it was refused; `sequence` 0) with `message` (UTF-8, not
 * NUL-terminated, at most SP_MAX_ERROR_MESSAGE_LEN bytes).
 */
typedef struct sp_propose_result {
  uint64_t origin_seq;
  int32_t code;
  sp_seq sequence;
  const char *message;
  size_t message_len;
} sp_propose_result;

/* Leader -> follower: answers, in the order the proposals came. */
typedef struct sp_msg_propose_result {
  const sp_propose_result *results;
  size_t result_count;
} sp_msg_propose_result;

/*
 * Follower -> leader: send me a snapshot.  `id_len` 0: a new one; 16:
 * the snapshot `id` whose chunks 0 .. have_chunks-1 the follower already
 * holds durably (a resume).  `max_frame`: the largest frame body the
 * follower accepts (0: SP_MAX_FRAME_DEFAULT), which the manifest and the
 * chunks must fit.  The leader answers with a manifest either way (of
 * that snapshot if it can still serve it, else of a new one).
 */
typedef struct sp_msg_snapshot_request {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  size_t id_len;
  uint64_t have_chunks;
  uint64_t max_frame;
} sp_msg_snapshot_request;

/*
 * Leader -> follower: the snapshot `id` of the host's state at `sequence`
 * (S), whose chain hash is `hash_at` (the leader's link(S)) and recorded
 * epoch `snap_epoch`; `total_size` bytes cut into chunks of `chunk_size`
 * (the last one shorter), chunk_count = ceil(total_size / chunk_size),
 * and `chunk_hashes` (chunk_count * SP_HASH_LEN bytes: chunk i's at
 * i * SP_HASH_LEN) as sp_snapshot_chunk_hash computes them.  The decoder
 * checks chunk_size (1 .. SP_SNAPSHOT_CHUNK_MAX), chunk_count
 * (<= SP_MAX_SNAPSHOT_CHUNKS) and the hashes' length against the sizes.
 * `chunk_hashes` points into the body or the encoder's caller's storage.
 */
typedef struct sp_msg_snapshot_manifest {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  sp_seq sequence;
  uint8_t hash_at[SP_HASH_LEN];
  uint64_t snap_epoch;
  uint64_t total_size;
  uint32_t chunk_size;
  const uint8_t *chunk_hashes;
  size_t chunk_count;
} sp_msg_snapshot_manifest;

/* Follower -> leader: send chunks first_chunk .. first_chunk+count-1 of
 * snapshot `id`, in order (1 <= count <= SP_MAX_SNAPSHOT_WINDOW). */
typedef struct sp_msg_snapshot_fetch {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  uint64_t first_chunk;
  uint32_t count;
} sp_msg_snapshot_fetch;

/* Leader -> follower: chunk `index` of snapshot `id` (`data`, at most
 * SP_SNAPSHOT_CHUNK_MAX bytes, points into the body or the caller's
 * storage). */
typedef struct sp_msg_snapshot_chunk {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  uint64_t index;
  const uint8_t *data;
  size_t data_len;
} sp_msg_snapshot_chunk;

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
    sp_msg_propose propose;
    sp_msg_propose_result propose_result;
    sp_msg_snapshot_request snapshot_request;
    sp_msg_snapshot_manifest snapshot_manifest;
    sp_msg_snapshot_fetch snapshot_fetch;
    sp_msg_snapshot_chunk snapshot_chunk;
  } u;
  /*
   * Encoding only: write each entry's origin_seq element (an
   * EntriesResponse entry with origin_seq != 0) -- set it only for a peer
   * that advertised SP_FEATURE_WRITES.  A Propose's entries carry theirs
   * whatever it says (only a negotiated peer gets one).  Decoding sets
   * origin_seq from the element when present, else 0, and leaves this 0.
   */
  int with_origin;
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
 * out = BLAKE2b-256(prev || canonical msgpack encoding of `entry`'s eight
 * seed fields).  origin_seq is not hashed: a seed-only peer never sees it.  The
 * first entry of a log chains from SP_HASH_LEN zero bytes.  `out` may alias
 * `prev`.  The payload is hashed in place, never copied.  Returns 0, or
 * SP_ERR_INVALID_ARGUMENT (a NULL pointer, or an entry the codec would
 * refuse to encode: change type out of range, model_type over its limit).
 */
SP_API int sp_chain_next(const uint8_t prev[SP_HASH_LEN],
                         const sp_entry *entry, uint8_t out[SP_HASH_LEN]);

/*
 * sp_snapshot_chunk_hash computes the hash a SnapshotManifest lists for a
 * chunk: out = BLAKE2b-256(id (16 bytes) || index as 8 bytes big-endian
 * || data), which binds the bytes to their snapshot and place.  `data`
 * may be NULL when `len` is 0.  Returns 0 or SP_ERR_INVALID_ARGUMENT (a
 * NULL pointer).
 */
SP_API int sp_snapshot_chunk_hash(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                                  uint64_t index, const uint8_t *data,
                                  size_t len, uint8_t out[SP_HASH_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_CODEC_H */
