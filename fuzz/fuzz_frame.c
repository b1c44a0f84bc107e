/*
 * fuzz_frame.c: the frame reader and the decoder under one target.
 *
 * Input: one control byte, then a byte stream.  The control byte picks how
 * the stream is cut into reads (0: one read; c: chunks of 1..c bytes from
 * a PRNG seeded with c), so split handling is explored along with content.
 *
 * Oracle: every body the decoder accepts must re-encode (the decoder never
 * accepts what the encoder refuses), the re-encoding must decode to the
 * same fields, and encoding that again must give the same bytes (the
 * encoding is canonical).  Any mismatch aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAME (1u << 20)

static int entry_same(const sp_entry *a, const sp_entry *b) {
  return a->sequence == b->sequence &&
         memcmp(&a->device_id, &b->device_id, sizeof(sp_uuid)) == 0 &&
         a->timestamp_ms == b->timestamp_ms &&
         a->model_type_len == b->model_type_len &&
         (a->model_type_len == 0 ||
          memcmp(a->model_type, b->model_type, a->model_type_len) == 0) &&
         memcmp(&a->record_id, &b->record_id, sizeof(sp_uuid)) == 0 &&
         a->change_type == b->change_type && a->version == b->version &&
         a->data_len == b->data_len &&
         (a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0) &&
         a->origin_seq == b->origin_seq;
}

static int entries_same(const sp_entry *a, const sp_entry *b, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    if (!entry_same(&a[i], &b[i])) {
      return 0;
    }
  }
  return 1;
}

static int result_same(const sp_propose_result *a,
                       const sp_propose_result *b) {
  return a->origin_seq == b->origin_seq && a->code == b->code &&
         a->sequence == b->sequence && a->message_len == b->message_len &&
         (a->message_len == 0 ||
          memcmp(a->message, b->message, a->message_len) == 0);
}

static int bytes_same(const uint8_t *a, const uint8_t *b, size_t n) {
  return n == 0 || memcmp(a, b, n) == 0;
}

/* Types 10-13: ids, sizes and the bytes they carry. */
static int snapshot_same(const sp_msg *a, const sp_msg *b) {
  switch (a->type) {
  case SP_MSG_SNAPSHOT_REQUEST: {
    const sp_msg_snapshot_request *x = &a->u.snapshot_request;
    const sp_msg_snapshot_request *y = &b->u.snapshot_request;
    return x->id_len == y->id_len && bytes_same(x->id, y->id, x->id_len) &&
           x->have_chunks == y->have_chunks && x->max_frame == y->max_frame;
  }
  case SP_MSG_SNAPSHOT_MANIFEST: {
    const sp_msg_snapshot_manifest *x = &a->u.snapshot_manifest;
    const sp_msg_snapshot_manifest *y = &b->u.snapshot_manifest;
    return bytes_same(x->id, y->id, SP_SNAPSHOT_ID_LEN) &&
           x->sequence == y->sequence &&
           bytes_same(x->hash_at, y->hash_at, SP_HASH_LEN) &&
           x->snap_epoch == y->snap_epoch && x->total_size == y->total_size &&
           x->chunk_size == y->chunk_size &&
           x->chunk_count == y->chunk_count &&
           bytes_same(x->chunk_hashes, y->chunk_hashes,
                      x->chunk_count * SP_HASH_LEN);
  }
  case SP_MSG_SNAPSHOT_FETCH:
    return bytes_same(a->u.snapshot_fetch.id, b->u.snapshot_fetch.id,
                      SP_SNAPSHOT_ID_LEN) &&
           a->u.snapshot_fetch.first_chunk == b->u.snapshot_fetch.first_chunk &&
           a->u.snapshot_fetch.count == b->u.snapshot_fetch.count;
  default:
    return bytes_same(a->u.snapshot_chunk.id, b->u.snapshot_chunk.id,
                      SP_SNAPSHOT_ID_LEN) &&
           a->u.snapshot_chunk.index == b->u.snapshot_chunk.index &&
           a->u.snapshot_chunk.data_len == b->u.snapshot_chunk.data_len &&
           bytes_same(a->u.snapshot_chunk.data, b->u.snapshot_chunk.data,
                      a->u.snapshot_chunk.data_len);
  }
}

/* Leadership claims: present in both or neither, and then equal. */
static int claim_same(int has_a, const sp_leader_claim *a, int has_b,
                      const sp_leader_claim *b) {
  return has_a == has_b &&
         (!has_a ||
          (a->epoch == b->epoch &&
           memcmp(&a->leader, &b->leader, sizeof(sp_uuid)) == 0 &&
           memcmp(a->signature, b->signature, SP_CLAIM_SIG_LEN) == 0));
}

static int msg_same(const sp_msg *a, const sp_msg *b) {
  if (a->type != b->type || a->epoch != b->epoch ||
      memcmp(&a->library_id, &b->library_id, sizeof(sp_uuid)) != 0) {
    return 0;
  }
  switch (a->type) {
  case SP_MSG_NEW_ENTRIES:
    return a->u.new_entries.from_sequence == b->u.new_entries.from_sequence &&
           a->u.new_entries.to_sequence == b->u.new_entries.to_sequence &&
           a->u.new_entries.entry_count == b->u.new_entries.entry_count;
  case SP_MSG_FETCH_ENTRIES: {
    const sp_msg_fetch_entries *x = &a->u.fetch_entries;
    const sp_msg_fetch_entries *y = &b->u.fetch_entries;
    return x->since_sequence == y->since_sequence && x->limit == y->limit &&
           x->since_hash_len == y->since_hash_len &&
           memcmp(x->since_hash, y->since_hash, x->since_hash_len) == 0 &&
           x->has_features == y->has_features && x->features == y->features;
  }
  case SP_MSG_ENTRIES_RESPONSE: {
    const sp_msg_entries_response *x = &a->u.entries_response;
    const sp_msg_entries_response *y = &b->u.entries_response;
    if (x->since_sequence != y->since_sequence ||
        x->through_sequence != y->through_sequence ||
        x->has_more != y->has_more || x->leader_latest != y->leader_latest ||
        x->last_hash_len != y->last_hash_len ||
        memcmp(x->last_hash, y->last_hash, x->last_hash_len) != 0 ||
        x->entry_count != y->entry_count) {
      return 0;
    }
    return entries_same(x->entries, y->entries, x->entry_count);
  }
  case SP_MSG_ACKNOWLEDGE:
    return a->u.acknowledge.up_to_sequence == b->u.acknowledge.up_to_sequence;
  case SP_MSG_HEARTBEAT:
    return a->u.heartbeat.current_sequence ==
               b->u.heartbeat.current_sequence &&
           a->u.heartbeat.role == b->u.heartbeat.role &&
           a->u.heartbeat.has_features == b->u.heartbeat.has_features &&
           a->u.heartbeat.features == b->u.heartbeat.features &&
           a->u.heartbeat.origin_high == b->u.heartbeat.origin_high &&
           a->u.heartbeat.max_frame == b->u.heartbeat.max_frame &&
           claim_same(a->u.heartbeat.has_claim, &a->u.heartbeat.claim,
                      b->u.heartbeat.has_claim, &b->u.heartbeat.claim);
  case SP_MSG_SYNC_REQUIRED:
    return a->u.sync_required.reason == b->u.sync_required.reason &&
           a->u.sync_required.leader_latest ==
               b->u.sync_required.leader_latest &&
           a->u.sync_required.leader_oldest ==
               b->u.sync_required.leader_oldest &&
           a->u.sync_required.follower_sequence ==
               b->u.sync_required.follower_sequence;
  case SP_MSG_ERROR:
    return a->u.error.code == b->u.error.code &&
           a->u.error.message_len == b->u.error.message_len &&
           (a->u.error.message_len == 0 ||
            memcmp(a->u.error.message, b->u.error.message,
                   a->u.error.message_len) == 0) &&
           claim_same(a->u.error.has_claim, &a->u.error.claim,
                      b->u.error.has_claim, &b->u.error.claim);
  case SP_MSG_PROPOSE:
    return a->u.propose.entry_count == b->u.propose.entry_count &&
           entries_same(a->u.propose.entries, b->u.propose.entries,
                        a->u.propose.entry_count);
  case SP_MSG_PROPOSE_RESULT: {
    size_t i;
    if (a->u.propose_result.result_count != b->u.propose_result.result_count) {
      return 0;
    }
    for (i = 0; i < a->u.propose_result.result_count; ++i) {
      if (!result_same(&a->u.propose_result.results[i],
                       &b->u.propose_result.results[i])) {
        return 0;
      }
    }
    return 1;
  }
  case SP_MSG_SNAPSHOT_REQUEST:
  case SP_MSG_SNAPSHOT_MANIFEST:
  case SP_MSG_SNAPSHOT_FETCH:
  case SP_MSG_SNAPSHOT_CHUNK:
    return snapshot_same(a, b);
  }
  return 0;
}

/* Decode -> encode -> decode -> encode; abort on any disagreement. */
static void check_body(sp_decoder *dec, sp_decoder *dec2, const uint8_t *body,
                       size_t len) {
  sp_msg m1, m2;
  uint8_t *f1, *f2;
  size_t need, n1, n2;
  int rv = sp_decoder_decode(dec, body, len, &m1);

  if (rv == SP_ERR_INTERNAL) {
    abort(); /* a decoder invariant broke */
  }
  if (rv != 0) {
    return;
  }
  /* Re-encode as to a negotiated peer: every origin_seq read goes back. */
  m1.with_origin = 1;
  need = sp_msg_encoded_len(&m1);
  if (need < SP_FRAME_HEADER_LEN + 1) {
    abort(); /* accepted by the decoder, refused by the encoder */
  }
  f1 = malloc(need);
  f2 = malloc(need);
  if (!f1 || !f2) {
    abort();
  }
  /* One byte short must be refused, exactly enough must fit. */
  if (sp_msg_encode(&m1, f1, need - 1, &n1) != SP_ERR_NOBUF ||
      sp_msg_encode(&m1, f1, need, &n1) != 0 || n1 != need) {
    abort();
  }
  if (((size_t)f1[0] << 24 | (size_t)f1[1] << 16 | (size_t)f1[2] << 8 |
       f1[3]) != need - SP_FRAME_HEADER_LEN) {
    abort();
  }
  if (sp_decoder_decode(dec2, f1 + SP_FRAME_HEADER_LEN,
                        n1 - SP_FRAME_HEADER_LEN, &m2) != 0 ||
      !msg_same(&m1, &m2)) {
    abort();
  }
  m2.with_origin = 1;
  if (sp_msg_encode(&m2, f2, need, &n2) != 0 || n2 != n1 ||
      memcmp(f1, f2, n1) != 0) {
    abort();
  }
  free(f1);
  free(f2);
}

static uint32_t next_rand(uint32_t *s) {
  /* xorshift32: cheap and deterministic for a given control byte. */
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sp_frame_reader *rd;
  sp_decoder *dec, *dec2;
  uint8_t ctl;
  uint32_t seed;
  size_t off;

  if (size == 0) {
    return 0;
  }
  ctl = data[0];
  seed = 0x9e3779b9u ^ ctl;
  ++data;
  --size;
  if (sp_frame_reader_new(&rd, MAX_FRAME, NULL) != 0 ||
      sp_decoder_new(&dec, NULL) != 0 || sp_decoder_new(&dec2, NULL) != 0) {
    abort();
  }
  off = 0;
  while (off < size) {
    size_t chunk = size - off;
    size_t used = 0;

    if (ctl != 0) {
      size_t c = 1 + next_rand(&seed) % ctl;
      chunk = c < chunk ? c : chunk;
    }
    /* A read stops after each frame it completes: loop over the chunk. */
    while (used < chunk) {
      const uint8_t *body;
      size_t blen;
      sp_ssize n = sp_frame_reader_read(rd, data + off + used, chunk - used,
                                        &body, &blen);
      if (n < 0) {
        if (n != SP_ERR_FRAME_TOO_LARGE && n != SP_ERR_EMPTY_FRAME) {
          abort();
        }
        goto done;
      }
      if (n == 0 || (size_t)n > chunk - used) {
        abort(); /* no progress, or consumed more than given */
      }
      used += (size_t)n;
      if (body) {
        if (blen == 0 || blen > MAX_FRAME ||
            sp_frame_reader_pending(rd) != 0) {
          abort();
        }
        check_body(dec, dec2, body, blen);
      }
    }
    off += chunk;
  }
done:
  sp_decoder_del(dec);
  sp_decoder_del(dec2);
  sp_frame_reader_del(rd);
  return 0;
}
