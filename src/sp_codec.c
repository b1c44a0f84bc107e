/*
 * sp_codec.c: whole-frame encoding and body decoding of SyncMessages.
 *
 * Layouts (docs/protocol.md has them byte by byte): every body is a msgpack
 * array [type, library_id, epoch, fields...]; a decoder skips elements past
 * the fields it knows, which is how the format grows.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_codec_int.h"
#include "sp_enc.h"
#include "sp_mem_int.h"
#include "sp_mpack.h"

struct sp_decoder {
  sp_mem mem;
  sp_entry *entries;
  size_t cap;
  sp_propose_result *results;
  size_t rcap;
};

/* Smallest possible encoding of one entry: fixarray, fixint sequence,
 * bin8 uuid (18), fixint timestamp, empty fixstr, bin8 uuid (18), fixint
 * change type, fixint version, empty bin8 (2). */
#define MIN_ENTRY_LEN 44

/* Smallest ProposeResult result: fixarray, three fixints, empty fixstr. */
#define MIN_RESULT_LEN 5

/* Fields each message type requires (type, library and epoch included). */
static uint32_t required_fields(uint64_t type) {
  switch (type) {
  case SP_MSG_NEW_ENTRIES: return 6;
  case SP_MSG_FETCH_ENTRIES: return 6;
  case SP_MSG_ENTRIES_RESPONSE: return 9;
  case SP_MSG_ACKNOWLEDGE: return 4;
  case SP_MSG_HEARTBEAT: return 5;
  case SP_MSG_SYNC_REQUIRED: return 7;
  case SP_MSG_ERROR: return 5;
  case SP_MSG_PROPOSE: return 4;
  case SP_MSG_PROPOSE_RESULT: return 4;
  case SP_MSG_SNAPSHOT_REQUEST: return 6;
  case SP_MSG_SNAPSHOT_MANIFEST: return 10;
  case SP_MSG_SNAPSHOT_FETCH: return 6;
  case SP_MSG_SNAPSHOT_CHUNK: return 6;
  default: return 0;
  }
}

/* Fields read_fields consumed: the required ones plus the optional ones
 * a message type has. */
static uint32_t known_fields(const sp_msg *msg, uint32_t n, uint32_t need) {
  if (msg->type == SP_MSG_HEARTBEAT) {
    return n < 9 ? n : 9;
  }
  if (msg->type == SP_MSG_ERROR) {
    return n < 6 ? n : 6;
  }
  if (msg->type == SP_MSG_FETCH_ENTRIES) {
    return n < 7 ? n : 7;
  }
  return need;
}

/* ---- encoding ---- */

size_t sp_msg_encoded_len(const sp_msg *msg) {
  msgpack_packer pk;
  sp_wr wr;

  if (sp_enc_check_msg(msg) != 0) {
    return 0;
  }
  sp_wr_count(&wr, &pk);
  sp_enc_body(&pk, msg);
  return SP_FRAME_HEADER_LEN + wr.len;
}

int sp_msg_encode(const sp_msg *msg, uint8_t *dst, size_t dstlen,
                  size_t *nwritten) {
  msgpack_packer pk;
  sp_wr wr;
  size_t total;
  int rv;

  if (!dst || !nwritten) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  total = sp_msg_encoded_len(msg);
  if (total == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (total - SP_FRAME_HEADER_LEN > SP_MAX_FRAME_LIMIT) {
    return SP_ERR_FRAME_TOO_LARGE;
  }
  if (dstlen < total) {
    return SP_ERR_NOBUF;
  }
  sp_put_be32(dst, (uint32_t)(total - SP_FRAME_HEADER_LEN));
  sp_wr_fixed(&wr, &pk, dst + SP_FRAME_HEADER_LEN,
              dstlen - SP_FRAME_HEADER_LEN);
  rv = sp_enc_body(&pk, msg);
  if (rv != 0) {
    return rv;
  }
  *nwritten = total;
  return 0;
}

int sp_codec_append_frame(sp_buf *buf, const sp_msg *msg, size_t max_frame) {
  msgpack_packer pk;
  sp_wr wr;
  /* Offsets from buf->off: appending may compact the buffer (drop the
   * bytes already consumed), which moves the pending bytes to the front. */
  size_t start = buf->len - buf->off;
  uint8_t prefix[SP_FRAME_HEADER_LEN] = {0};
  int rv;

  rv = sp_enc_check_msg(msg);
  if (rv != 0) {
    return rv;
  }
  rv = sp_buf_append(buf, prefix, sizeof(prefix));
  if (rv != 0) {
    return rv;
  }
  sp_wr_buf(&wr, &pk, buf);
  rv = sp_enc_body(&pk, msg);
  if (rv == 0 && wr.len > max_frame) {
    rv = SP_ERR_FRAME_TOO_LARGE;
  }
  if (rv != 0) {
    buf->len = buf->off + start; /* nothing half-written stays queued */
    return rv;
  }
  sp_put_be32(buf->data + buf->off + start, (uint32_t)wr.len);
  return 0;
}

/* ---- decoding ---- */

int sp_decoder_new(sp_decoder **pdec, const sp_mem *mem) {
  sp_mem m;
  sp_decoder *dec;

  if (!pdec) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *pdec = NULL;
  sp_mem_resolve(&m, mem);
  dec = sp_calloc(&m, 1, sizeof(*dec));
  if (!dec) {
    return SP_ERR_NOMEM;
  }
  dec->mem = m;
  *pdec = dec;
  return 0;
}

void sp_decoder_del(sp_decoder *dec) {
  if (dec) {
    sp_free(&dec->mem, dec->entries);
    sp_free(&dec->mem, dec->results);
    sp_free(&dec->mem, dec);
  }
}

static int read_uuid(sp_mp *mp, sp_uuid *out) {
  const uint8_t *p;
  uint32_t n;
  int rv = sp_mp_bin(mp, &p, &n);

  if (rv != 0) {
    return rv;
  }
  if (n != sizeof(out->bytes)) {
    return SP_ERR_UUID_LENGTH;
  }
  memcpy(out->bytes, p, n);
  return 0;
}

static int read_hash(sp_mp *mp, uint8_t out[SP_HASH_LEN], size_t *len) {
  const uint8_t *p;
  uint32_t n;
  int rv = sp_mp_bin(mp, &p, &n);

  if (rv != 0) {
    return rv;
  }
  if (n != 0 && n != SP_HASH_LEN) {
    return SP_ERR_HASH_LENGTH;
  }
  memcpy(out, p, n);
  *len = n;
  return 0;
}

/* Reads a uint that must fit in `max`. */
static int read_small(sp_mp *mp, uint64_t min, uint64_t max, uint64_t *v) {
  int rv = sp_mp_uint(mp, v);

  if (rv == 0 && (*v < min || *v > max)) {
    rv = SP_ERR_ENUM_RANGE;
  }
  return rv;
}

/* Skips the elements past the `known` ones of an array of `n`. */
static int skip_rest(sp_mp *mp, uint32_t n, uint32_t known) {
  for (; n > known; --n) {
    int rv = sp_mp_skip(mp);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

static int read_entry(sp_mp *mp, sp_entry *e) {
  uint32_t n, len;
  uint64_t ct;
  const char *s;
  int rv;

  if ((rv = sp_mp_array(mp, &n)) != 0) {
    return rv;
  }
  if (n < 8) {
    return SP_ERR_MISSING_FIELD;
  }
  if ((rv = sp_mp_uint(mp, &e->sequence)) != 0 ||
      (rv = read_uuid(mp, &e->device_id)) != 0 ||
      (rv = sp_mp_uint(mp, &e->timestamp_ms)) != 0 ||
      (rv = sp_mp_str(mp, &s, &len)) != 0) {
    return rv;
  }
  if (len > SP_MAX_MODEL_TYPE_LEN) {
    return SP_ERR_OVERSIZE;
  }
  e->model_type = s;
  e->model_type_len = len;
  if ((rv = read_uuid(mp, &e->record_id)) != 0 ||
      (rv = read_small(mp, 0, SP_CHANGE_BULK_INSERT, &ct)) != 0 ||
      (rv = sp_mp_int(mp, &e->version)) != 0 ||
      (rv = sp_mp_bin(mp, &e->data, &len)) != 0) {
    return rv;
  }
  e->change_type = (sp_change_type)ct;
  e->data_len = len;
  /* Element 8 was extension space in the seed; now origin_seq, a uint
   * (0 = none, as when absent). */
  e->origin_seq = 0;
  if (n > 8 && (rv = sp_mp_uint(mp, &e->origin_seq)) != 0) {
    return rv;
  }
  /* 0 .. 2^63-1: what every store can keep (sys/store.h). */
  if (e->origin_seq > (uint64_t)INT64_MAX) {
    return SP_ERR_INT_RANGE;
  }
  return skip_rest(mp, n, n > 8 ? 9 : 8);
}

static int grow_entries(sp_decoder *dec, size_t n) {
  sp_entry *p;

  if (n <= dec->cap) {
    return 0;
  }
  p = sp_realloc(&dec->mem, dec->entries, n * sizeof(*p));
  if (!p) {
    return SP_ERR_NOMEM;
  }
  dec->entries = p;
  dec->cap = n;
  return 0;
}

/* Reads `count` entries into dec->entries. */
static int read_entries(sp_decoder *dec, sp_mp *mp, uint32_t count) {
  uint32_t i;
  size_t fit;
  int rv;

  /* Allocate no more than the bytes left could hold, so a lying count
   * costs nothing.  Entries past that are still parsed (into a scratch
   * entry) rather than refused at once: they must run out of bytes, and
   * parsing says precisely what is wrong first (a short entry is
   * SP_ERR_MISSING_FIELD, not SP_ERR_TRUNCATED). */
  fit = sp_mp_left(mp) / MIN_ENTRY_LEN;
  if ((rv = grow_entries(dec, count < fit ? count : fit)) != 0) {
    return rv;
  }
  for (i = 0; i < count; ++i) {
    sp_entry scratch;
    if ((rv = read_entry(mp, i < fit ? &dec->entries[i] : &scratch)) != 0) {
      return rv;
    }
  }
  return count > fit ? SP_ERR_INTERNAL /* MIN_ENTRY_LEN is wrong */ : 0;
}

static int read_response(sp_decoder *dec, sp_mp *mp,
                         sp_msg_entries_response *r) {
  uint32_t count, i;
  sp_seq prev;
  int rv;

  if ((rv = sp_mp_uint(mp, &r->since_sequence)) != 0 ||
      (rv = sp_mp_array(mp, &count)) != 0 ||
      (rv = read_entries(dec, mp, count)) != 0) {
    return rv;
  }
  r->entries = count ? dec->entries : NULL;
  r->entry_count = count;
  if ((rv = sp_mp_uint(mp, &r->through_sequence)) != 0 ||
      (rv = sp_mp_bool(mp, &r->has_more)) != 0 ||
      (rv = sp_mp_uint(mp, &r->leader_latest)) != 0 ||
      (rv = read_hash(mp, r->last_hash, &r->last_hash_len)) != 0) {
    return rv;
  }
  if (r->through_sequence < r->since_sequence) {
    return SP_ERR_ENTRY_ORDER;
  }
  prev = r->since_sequence;
  for (i = 0; i < count; ++i) {
    if (dec->entries[i].sequence <= prev ||
        dec->entries[i].sequence > r->through_sequence) {
      return SP_ERR_ENTRY_ORDER;
    }
    prev = dec->entries[i].sequence;
  }
  return 0;
}

/* The count of a Propose's entries or a ProposeResult's results. */
static int read_batch_count(sp_mp *mp, uint32_t *count) {
  int rv = sp_mp_array(mp, count);

  if (rv != 0) {
    return rv;
  }
  if (*count == 0) {
    return SP_ERR_MISSING_FIELD;
  }
  return *count > SP_MAX_PROPOSE_ENTRIES ? SP_ERR_OVERSIZE : 0;
}

/* Sequence, device and origin order are the leader's to judge: the
 * decoder checks only the shape. */
static int read_propose(sp_decoder *dec, sp_mp *mp, sp_msg_propose *p) {
  uint32_t count;
  int rv;

  if ((rv = read_batch_count(mp, &count)) != 0 ||
      (rv = read_entries(dec, mp, count)) != 0) {
    return rv;
  }
  p->entries = dec->entries;
  p->entry_count = count;
  return 0;
}

/* An int32 error code. */
static int read_code(sp_mp *mp, int32_t *code) {
  int64_t c;
  int rv = sp_mp_int(mp, &c);

  if (rv != 0) {
    return rv;
  }
  if (c < INT32_MIN || c > INT32_MAX) {
    return SP_ERR_INT_RANGE;
  }
  *code = (int32_t)c;
  return 0;
}

/* A UTF-8 message of at most SP_MAX_ERROR_MESSAGE_LEN bytes. */
static int read_message(sp_mp *mp, const char **msg, size_t *msg_len) {
  const char *s;
  uint32_t len;
  int rv = sp_mp_str(mp, &s, &len);

  if (rv != 0) {
    return rv;
  }
  if (len > SP_MAX_ERROR_MESSAGE_LEN) {
    return SP_ERR_OVERSIZE;
  }
  *msg = s;
  *msg_len = len;
  return 0;
}

/* [origin_seq, code, sequence, message, extensions...] */
static int read_result(sp_mp *mp, sp_propose_result *x) {
  uint32_t n;
  int rv;

  if ((rv = sp_mp_array(mp, &n)) != 0) {
    return rv;
  }
  if (n < 4) {
    return SP_ERR_MISSING_FIELD;
  }
  if ((rv = sp_mp_uint(mp, &x->origin_seq)) != 0 ||
      (rv = read_code(mp, &x->code)) != 0) {
    return rv;
  }
  /* 0 is appended, negative refused: there is nothing else to say. */
  if (x->code > 0) {
    return SP_ERR_INT_RANGE;
  }
  if ((rv = sp_mp_uint(mp, &x->sequence)) != 0 ||
      (rv = read_message(mp, &x->message, &x->message_len)) != 0) {
    return rv;
  }
  return skip_rest(mp, n, 4);
}

static int read_results(sp_decoder *dec, sp_mp *mp,
                        sp_msg_propose_result *r) {
  uint32_t count, i;
  size_t fit;
  int rv;

  if ((rv = read_batch_count(mp, &count)) != 0) {
    return rv;
  }
  /* As for entries: no more storage than the bytes left could fill. */
  fit = sp_mp_left(mp) / MIN_RESULT_LEN;
  if (fit > count) {
    fit = count;
  }
  if (fit > dec->rcap) {
    sp_propose_result *p =
        sp_realloc(&dec->mem, dec->results, fit * sizeof(*p));
    if (!p) {
      return SP_ERR_NOMEM;
    }
    dec->results = p;
    dec->rcap = fit;
  }
  for (i = 0; i < count; ++i) {
    sp_propose_result scratch;
    if ((rv = read_result(mp, i < fit ? &dec->results[i] : &scratch)) != 0) {
      return rv;
    }
  }
  if (count > fit) {
    return SP_ERR_INTERNAL; /* MIN_RESULT_LEN is wrong */
  }
  r->results = dec->results;
  r->result_count = count;
  return 0;
}

/* A leadership claim, [epoch, leader, signature, extensions...], or nil
 * for none (docs/protocol.md section 15).  A signature that is not 64
 * bytes is refused as a hash of the wrong size is: the codec's code for
 * a fixed-size binary that is not. */
static int read_claim(sp_mp *mp, int *has_claim, sp_leader_claim *c) {
  const uint8_t *p;
  uint32_t n, len;
  int rv;

  if (sp_mp_nil(mp)) {
    return 0;
  }
  if ((rv = sp_mp_array(mp, &n)) != 0) {
    return rv;
  }
  if (n < 3) {
    return SP_ERR_MISSING_FIELD;
  }
  if ((rv = sp_mp_uint(mp, &c->epoch)) != 0 ||
      (rv = read_uuid(mp, &c->leader)) != 0 ||
      (rv = sp_mp_bin(mp, &p, &len)) != 0) {
    return rv;
  }
  if (len != SP_CLAIM_SIG_LEN) {
    return SP_ERR_HASH_LENGTH;
  }
  memcpy(c->signature, p, len);
  *has_claim = 1;
  return skip_rest(mp, n, 3);
}

/* [.., current_sequence, role, features, origin_high, max_frame, claim]:
 * elements 5 and 6 (the seed's extension space) are the negotiation's; a
 * sender writes both or neither, a receiver takes 5 alone with
 * origin_high 0.  Element 7 (a leader's frame maximum) is optional after
 * them: absent, max_frame is 0 (unknown).  Element 8 is the claim. */
static int read_heartbeat(sp_mp *mp, uint32_t n, sp_msg_heartbeat *hb) {
  uint64_t v;
  int rv;

  if ((rv = sp_mp_uint(mp, &hb->current_sequence)) != 0 ||
      (rv = read_small(mp, 0, SP_ROLE_FOLLOWER, &v)) != 0) {
    return rv;
  }
  hb->role = (sp_role)v;
  if (n > 5) {
    hb->has_features = 1;
    if ((rv = sp_mp_uint(mp, &hb->features)) != 0) {
      return rv;
    }
  }
  if (n > 6 && (rv = sp_mp_uint(mp, &hb->origin_high)) != 0) {
    return rv;
  }
  if (n > 7 && (rv = sp_mp_uint(mp, &hb->max_frame)) != 0) {
    return rv;
  }
  if (n > 8) {
    return read_claim(mp, &hb->has_claim, &hb->claim);
  }
  return 0;
}

/* A snapshot id: exactly SP_SNAPSHOT_ID_LEN bytes, or also none when
 * `id_len` is given (a SnapshotRequest for a new snapshot). */
static int read_snap_id(sp_mp *mp, uint8_t out[SP_SNAPSHOT_ID_LEN],
                        size_t *id_len) {
  const uint8_t *p;
  uint32_t n;
  int rv = sp_mp_bin(mp, &p, &n);

  if (rv != 0) {
    return rv;
  }
  if (n != SP_SNAPSHOT_ID_LEN && !(n == 0 && id_len)) {
    return SP_ERR_UUID_LENGTH;
  }
  memcpy(out, p, n);
  if (id_len) {
    *id_len = n;
  }
  return 0;
}

/* Sizes, count and hashes must agree: a peer cannot make the receiver
 * trust a chunk count the hashes do not back. */
static int read_manifest(sp_mp *mp, sp_msg_snapshot_manifest *m) {
  const uint8_t *p;
  uint64_t v, count;
  uint32_t n;
  size_t hlen;
  int rv;

  if ((rv = read_snap_id(mp, m->id, NULL)) != 0 ||
      (rv = sp_mp_uint(mp, &m->sequence)) != 0 ||
      (rv = read_hash(mp, m->hash_at, &hlen)) != 0) {
    return rv;
  }
  if (hlen != SP_HASH_LEN) {
    return SP_ERR_HASH_LENGTH;
  }
  if ((rv = sp_mp_uint(mp, &m->snap_epoch)) != 0 ||
      (rv = sp_mp_uint(mp, &m->total_size)) != 0 ||
      (rv = sp_mp_uint(mp, &v)) != 0) {
    return rv;
  }
  if (v == 0 || v > SP_SNAPSHOT_CHUNK_MAX) {
    return SP_ERR_INT_RANGE;
  }
  m->chunk_size = (uint32_t)v;
  count = m->total_size / v + (m->total_size % v != 0);
  if (count > SP_MAX_SNAPSHOT_CHUNKS) {
    return SP_ERR_OVERSIZE;
  }
  if ((rv = sp_mp_bin(mp, &p, &n)) != 0) {
    return rv;
  }
  if (n != count * SP_HASH_LEN) {
    return SP_ERR_HASH_LENGTH;
  }
  m->chunk_hashes = count ? p : NULL;
  m->chunk_count = (size_t)count;
  return 0;
}

static int read_snapshot(sp_mp *mp, sp_msg *msg) {
  uint64_t v;
  const uint8_t *p;
  uint32_t n;
  int rv;

  switch (msg->type) {
  case SP_MSG_SNAPSHOT_REQUEST: {
    sp_msg_snapshot_request *r = &msg->u.snapshot_request;
    if ((rv = read_snap_id(mp, r->id, &r->id_len)) != 0 ||
        (rv = sp_mp_uint(mp, &r->have_chunks)) != 0) {
      return rv;
    }
    return sp_mp_uint(mp, &r->max_frame);
  }
  case SP_MSG_SNAPSHOT_MANIFEST:
    return read_manifest(mp, &msg->u.snapshot_manifest);
  case SP_MSG_SNAPSHOT_FETCH: {
    sp_msg_snapshot_fetch *f = &msg->u.snapshot_fetch;
    if ((rv = read_snap_id(mp, f->id, NULL)) != 0 ||
        (rv = sp_mp_uint(mp, &f->first_chunk)) != 0 ||
        (rv = sp_mp_uint(mp, &v)) != 0) {
      return rv;
    }
    if (f->first_chunk >= SP_MAX_SNAPSHOT_CHUNKS || v == 0 ||
        v > SP_MAX_SNAPSHOT_WINDOW) {
      return SP_ERR_INT_RANGE;
    }
    f->count = (uint32_t)v;
    return 0;
  }
  default: {
    sp_msg_snapshot_chunk *c = &msg->u.snapshot_chunk;
    if ((rv = read_snap_id(mp, c->id, NULL)) != 0 ||
        (rv = sp_mp_uint(mp, &c->index)) != 0) {
      return rv;
    }
    if (c->index >= SP_MAX_SNAPSHOT_CHUNKS) {
      return SP_ERR_INT_RANGE;
    }
    if ((rv = sp_mp_bin(mp, &p, &n)) != 0) {
      return rv;
    }
    if (n > SP_SNAPSHOT_CHUNK_MAX) {
      return SP_ERR_OVERSIZE;
    }
    c->data = n ? p : NULL;
    c->data_len = n;
    return 0;
  }
  }
}

static int read_fields(sp_decoder *dec, sp_mp *mp, uint32_t n, sp_msg *msg) {
  uint64_t v;
  int rv;

  switch (msg->type) {
  case SP_MSG_NEW_ENTRIES: {
    sp_msg_new_entries *m = &msg->u.new_entries;
    if ((rv = sp_mp_uint(mp, &m->from_sequence)) != 0 ||
        (rv = sp_mp_uint(mp, &m->to_sequence)) != 0) {
      return rv;
    }
    return sp_mp_uint(mp, &m->entry_count);
  }
  case SP_MSG_FETCH_ENTRIES: {
    sp_msg_fetch_entries *m = &msg->u.fetch_entries;
    if ((rv = sp_mp_uint(mp, &m->since_sequence)) != 0 ||
        (rv = sp_mp_uint(mp, &m->limit)) != 0) {
      return rv;
    }
    if ((rv = read_hash(mp, m->since_hash, &m->since_hash_len)) != 0) {
      return rv;
    }
    /* Element 6: the follower's features (the seed's extension space). */
    if (n > 6) {
      m->has_features = 1;
      return sp_mp_uint(mp, &m->features);
    }
    return 0;
  }
  case SP_MSG_ENTRIES_RESPONSE:
    return read_response(dec, mp, &msg->u.entries_response);
  case SP_MSG_ACKNOWLEDGE:
    return sp_mp_uint(mp, &msg->u.acknowledge.up_to_sequence);
  case SP_MSG_HEARTBEAT:
    return read_heartbeat(mp, n, &msg->u.heartbeat);
  case SP_MSG_SYNC_REQUIRED: {
    sp_msg_sync_required *m = &msg->u.sync_required;
    if ((rv = read_small(mp, SP_SYNC_BEHIND_RETENTION, SP_SYNC_RETENTION_CAP,
                         &v)) != 0) {
      return rv;
    }
    m->reason = (sp_sync_reason)v;
    if ((rv = sp_mp_uint(mp, &m->leader_latest)) != 0 ||
        (rv = sp_mp_uint(mp, &m->leader_oldest)) != 0) {
      return rv;
    }
    return sp_mp_uint(mp, &m->follower_sequence);
  }
  case SP_MSG_ERROR:
    if ((rv = read_code(mp, &msg->u.error.code)) != 0 ||
        (rv = read_message(mp, &msg->u.error.message,
                           &msg->u.error.message_len)) != 0) {
      return rv;
    }
    /* Element 5: the sender's claim (the seed's extension space). */
    if (n > 5) {
      return read_claim(mp, &msg->u.error.has_claim, &msg->u.error.claim);
    }
    return 0;
  case SP_MSG_PROPOSE:
    return read_propose(dec, mp, &msg->u.propose);
  case SP_MSG_PROPOSE_RESULT:
    return read_results(dec, mp, &msg->u.propose_result);
  case SP_MSG_SNAPSHOT_REQUEST:
  case SP_MSG_SNAPSHOT_MANIFEST:
  case SP_MSG_SNAPSHOT_FETCH:
  case SP_MSG_SNAPSHOT_CHUNK:
    return read_snapshot(mp, msg);
  default:
    return SP_ERR_UNKNOWN_MESSAGE;
  }
}

int sp_decoder_decode(sp_decoder *dec, const uint8_t *body, size_t len,
                      sp_msg *msg) {
  sp_mp mp;
  uint32_t n, need;
  uint64_t type;
  int rv;

  if (!dec || !msg || (!body && len)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  memset(msg, 0, sizeof(*msg));
  sp_mp_init(&mp, body, len);
  if ((rv = sp_mp_array(&mp, &n)) != 0) {
    return rv;
  }
  if (n == 0) {
    return SP_ERR_MISSING_FIELD;
  }
  if ((rv = sp_mp_uint(&mp, &type)) != 0) {
    return rv;
  }
  need = required_fields(type);
  if (need == 0) {
    return SP_ERR_UNKNOWN_MESSAGE;
  }
  if (n < need) {
    return SP_ERR_MISSING_FIELD;
  }
  msg->type = (sp_msg_type)type;
  if ((rv = read_uuid(&mp, &msg->library_id)) != 0 ||
      (rv = sp_mp_uint(&mp, &msg->epoch)) != 0 ||
      (rv = read_fields(dec, &mp, n, msg)) != 0 ||
      (rv = skip_rest(&mp, n, known_fields(msg, n, need))) != 0) {
    return rv;
  }
  return sp_mp_left(&mp) == 0 ? 0 : SP_ERR_TRAILING_BYTES;
}
