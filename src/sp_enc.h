/*
 * sp_enc.h: msgpack encoding of messages and entries on msgpack-c's
 * packer, into a fixed buffer, a growable sp_buf, or a byte counter.
 *
 * The encoding is canonical: integers, strings and binaries take their
 * smallest msgpack form (msgpack-c's choice), and the one exception is the
 * entries array of an EntriesResponse, always an array 32 so that a leader
 * can stream entries into a frame and patch the count afterwards.
 */
#ifndef SP_ENC_H
#define SP_ENC_H

#include <msgpack.h>

#include "sync_protocol/codec.h"
#include "sp_buf.h"

/* Where the packer's bytes go. */
typedef struct sp_wr {
  /* Fixed mode: `fixed`/`cap`; growable mode: `buf`; counting: neither. */
  uint8_t *fixed;
  size_t cap;
  sp_buf *buf;
  size_t len;
  int err;
} sp_wr;

/* Prepare `pk` to write into `dst` (cap bytes). */
void sp_wr_fixed(sp_wr *wr, msgpack_packer *pk, uint8_t *dst, size_t cap);
/* Prepare `pk` to append to `buf`. */
void sp_wr_buf(sp_wr *wr, msgpack_packer *pk, sp_buf *buf);
/* Prepare `pk` to count bytes only. */
void sp_wr_count(sp_wr *wr, msgpack_packer *pk);

/* Fixed size of the entries array header in an EntriesResponse. */
#define SP_ENC_ENTRIES_HDR_LEN 5

/* 0 if `msg` can be encoded, else SP_ERR_INVALID_ARGUMENT. */
int sp_enc_check_msg(const sp_msg *msg);
/* 0 if `e` can be encoded, else SP_ERR_INVALID_ARGUMENT. */
int sp_enc_check_entry(const sp_entry *e);

/* sp_chain_next for an entry already checked (a decoded one): no second
 * validation on the follower's hot path. */
int sp_chain_link(const uint8_t prev[SP_HASH_LEN], const sp_entry *entry,
                  uint8_t out[SP_HASH_LEN]);

/* The encoders below return 0, or the writer's error (SP_ERR_NOBUF in
 * fixed mode, SP_ERR_NOMEM in growable mode); `pk` comes from sp_wr_*. */

/* Encode a whole message body (checked with sp_enc_check_msg first). */
int sp_enc_body(msgpack_packer *pk, const sp_msg *msg);
/* Encode one entry (the canonical form the hash chain covers). */
int sp_enc_entry(msgpack_packer *pk, const sp_entry *e);
/*
 * Encode one entry as it goes on the wire: the canonical 8-element form,
 * or, when `with_origin` and e->origin_seq != 0, the 9-element form with
 * origin_seq (only to a peer that negotiated SP_FEATURE_WRITES).
 */
int sp_enc_entry_wire(msgpack_packer *pk, const sp_entry *e, int with_origin);
/* Exact byte length sp_enc_entry_wire writes for `e` (checked entry). */
size_t sp_enc_entry_len(const sp_entry *e, int with_origin);
/* Everything of the entry but the payload bytes (which follow it). */
int sp_enc_entry_head(msgpack_packer *pk, const sp_entry *e);
/* Upper bound of sp_enc_entry_head's output. */
#define SP_ENC_ENTRY_HEAD_MAX 400
/* sp_enc_entry_head's bytes stored straight into `dst`: their length, or
 * 0 when the model type or the change type is out of the range a check
 * allows (sp_enc_entry_head still encodes such an entry). */
size_t sp_enc_entry_head_raw(uint8_t dst[SP_ENC_ENTRY_HEAD_MAX],
                             const sp_entry *e);

/*
 * Streaming EntriesResponse: the head ends with an array 32 header whose
 * count is written later with sp_enc_patch_count at the offset the head
 * reports (relative to the writer's start).
 */
int sp_enc_response_head(msgpack_packer *pk, const sp_uuid *lib,
                         uint64_t epoch, sp_seq since, size_t *count_off);
int sp_enc_response_tail(msgpack_packer *pk, sp_seq through,
                         int has_more, sp_seq leader_latest,
                         const uint8_t *last_hash, size_t last_hash_len);
void sp_enc_patch_count(uint8_t *at, uint32_t count);

/*
 * Streaming Propose: [8, lib, epoch, entries] where entries is an array 32
 * whose count is patched later at `*count_off`, as for a response.  The
 * entries follow with sp_enc_entry_wire(pk, e, 1); nothing comes after.
 */
int sp_enc_propose_head(msgpack_packer *pk, const sp_uuid *lib,
                        uint64_t epoch, size_t *count_off);
/* Upper bound of sp_enc_propose_head's output (with any epoch). */
#define SP_ENC_PROPOSE_HEAD_MAX (1 + 1 + 18 + 9 + SP_ENC_ENTRIES_HDR_LEN)

/* Big-endian 32-bit store, for frame prefixes. */
void sp_put_be32(uint8_t *p, uint32_t v);

#endif /* SP_ENC_H */
