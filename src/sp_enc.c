/*
 * sp_enc.c: message and entry encoding on msgpack-c's packer.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_enc.h"
#include "sp_mpack.h"

/* Field counts of each message body (docs/protocol.md). */
#define RESPONSE_FIELDS 9
#define PROPOSE_FIELDS 4
#define RESULT_FIELDS 4

static int wr_fixed_cb(void *data, const char *src, size_t len) {
  sp_wr *wr = data;

  if (wr->err) {
    return wr->err;
  }
  if (len == 0) {
    return 0; /* src may be NULL: keep it away from memcpy */
  }
  if (len > wr->cap - wr->len) {
    wr->err = SP_ERR_NOBUF;
    return wr->err;
  }
  memcpy(wr->fixed + wr->len, src, len);
  wr->len += len;
  return 0;
}

static int wr_buf_cb(void *data, const char *src, size_t len) {
  sp_wr *wr = data;

  if (wr->err) {
    return wr->err;
  }
  if (sp_buf_append(wr->buf, src, len) != 0) {
    wr->err = SP_ERR_NOMEM;
    return wr->err;
  }
  wr->len += len;
  return 0;
}

static int wr_count_cb(void *data, const char *src, size_t len) {
  sp_wr *wr = data;

  (void)src;
  wr->len += len;
  return 0;
}

void sp_wr_fixed(sp_wr *wr, msgpack_packer *pk, uint8_t *dst, size_t cap) {
  memset(wr, 0, sizeof(*wr));
  wr->fixed = dst;
  wr->cap = cap;
  msgpack_packer_init(pk, wr, wr_fixed_cb);
}

void sp_wr_buf(sp_wr *wr, msgpack_packer *pk, sp_buf *buf) {
  memset(wr, 0, sizeof(*wr));
  wr->buf = buf;
  msgpack_packer_init(pk, wr, wr_buf_cb);
}

void sp_wr_count(sp_wr *wr, msgpack_packer *pk) {
  memset(wr, 0, sizeof(*wr));
  msgpack_packer_init(pk, wr, wr_count_cb);
}

void sp_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

void sp_enc_patch_count(uint8_t *at, uint32_t count) {
  at[0] = 0xdd;
  sp_put_be32(at + 1, count);
}

static int err_of(msgpack_packer *pk) { return ((sp_wr *)pk->data)->err; }

static void pack_uuid(msgpack_packer *pk, const sp_uuid *u) {
  msgpack_pack_bin_with_body(pk, u->bytes, sizeof(u->bytes));
}

static void pack_hash(msgpack_packer *pk, const uint8_t *h, size_t len) {
  msgpack_pack_bin_with_body(pk, h, len);
}

/* [epoch, leader, signature] (docs/protocol.md section 15). */
static void pack_claim(msgpack_packer *pk, const sp_leader_claim *c) {
  msgpack_pack_array(pk, 3);
  msgpack_pack_uint64(pk, c->epoch);
  pack_uuid(pk, &c->leader);
  msgpack_pack_bin_with_body(pk, c->signature, SP_CLAIM_SIG_LEN);
}

int sp_enc_check_entry(const sp_entry *e) {
  if (!e || (unsigned)e->change_type > SP_CHANGE_BULK_INSERT ||
      e->model_type_len > SP_MAX_MODEL_TYPE_LEN ||
      (e->model_type_len && !e->model_type) ||
      !sp_utf8_valid((const uint8_t *)e->model_type, e->model_type_len) ||
      e->data_len > SP_MAX_FRAME_LIMIT || (e->data_len && !e->data) ||
      e->origin_seq > (uint64_t)INT64_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

static int check_response(const sp_msg_entries_response *r) {
  size_t i;
  sp_seq prev = r->since_sequence;

  if (r->through_sequence < r->since_sequence ||
      (r->last_hash_len != 0 && r->last_hash_len != SP_HASH_LEN) ||
      (r->entry_count && !r->entries)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < r->entry_count; ++i) {
    const sp_entry *e = &r->entries[i];
    if (sp_enc_check_entry(e) != 0 || e->sequence <= prev ||
        e->sequence > r->through_sequence) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    prev = e->sequence;
  }
  return 0;
}

static int check_message(const char *m, size_t len) {
  return len <= SP_MAX_ERROR_MESSAGE_LEN && (len == 0 || m) &&
                 sp_utf8_valid((const uint8_t *)m, len)
             ? 0
             : SP_ERR_INVALID_ARGUMENT;
}

/* Sequence, device and order are the leader's to judge (admission), so a
 * test can still send a proposal the leader must refuse. */
static int check_propose(const sp_msg_propose *p) {
  size_t i;

  if (p->entry_count == 0 || p->entry_count > SP_MAX_PROPOSE_ENTRIES ||
      !p->entries) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < p->entry_count; ++i) {
    if (sp_enc_check_entry(&p->entries[i]) != 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
  }
  return 0;
}

static int check_results(const sp_msg_propose_result *r) {
  size_t i;

  if (r->result_count == 0 || r->result_count > SP_MAX_PROPOSE_ENTRIES ||
      !r->results) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < r->result_count; ++i) {
    const sp_propose_result *x = &r->results[i];
    if (x->code > 0 || check_message(x->message, x->message_len) != 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
  }
  return 0;
}

/* Sizes and counts must agree, as the decoder demands of a peer. */
static int check_manifest(const sp_msg_snapshot_manifest *m) {
  uint64_t count;

  if (m->chunk_size == 0 || m->chunk_size > SP_SNAPSHOT_CHUNK_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  count = m->total_size / m->chunk_size + (m->total_size % m->chunk_size != 0);
  return count == m->chunk_count && count <= SP_MAX_SNAPSHOT_CHUNKS &&
                 (count == 0 || m->chunk_hashes)
             ? 0
             : SP_ERR_INVALID_ARGUMENT;
}

static int check_fetch(const sp_msg_snapshot_fetch *f) {
  return f->count >= 1 && f->count <= SP_MAX_SNAPSHOT_WINDOW &&
                 f->first_chunk < SP_MAX_SNAPSHOT_CHUNKS
             ? 0
             : SP_ERR_INVALID_ARGUMENT;
}

int sp_enc_check_msg(const sp_msg *msg) {
  if (!msg) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  switch (msg->type) {
  case SP_MSG_NEW_ENTRIES:
  case SP_MSG_ACKNOWLEDGE:
    return 0;
  case SP_MSG_FETCH_ENTRIES:
    return msg->u.fetch_entries.since_hash_len == 0 ||
                   msg->u.fetch_entries.since_hash_len == SP_HASH_LEN
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  case SP_MSG_ENTRIES_RESPONSE:
    return check_response(&msg->u.entries_response);
  case SP_MSG_HEARTBEAT:
    /* The claim is element 8: it needs elements 5-7 before it. */
    return (unsigned)msg->u.heartbeat.role <= SP_ROLE_FOLLOWER &&
                   (!msg->u.heartbeat.has_claim ||
                    msg->u.heartbeat.has_features)
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  case SP_MSG_SYNC_REQUIRED:
    return msg->u.sync_required.reason >= SP_SYNC_BEHIND_RETENTION &&
                   msg->u.sync_required.reason <= SP_SYNC_RETENTION_CAP
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  case SP_MSG_ERROR:
    return check_message(msg->u.error.message, msg->u.error.message_len);
  case SP_MSG_PROPOSE:
    return check_propose(&msg->u.propose);
  case SP_MSG_PROPOSE_RESULT:
    return check_results(&msg->u.propose_result);
  case SP_MSG_SNAPSHOT_REQUEST:
    return msg->u.snapshot_request.id_len == 0 ||
                   msg->u.snapshot_request.id_len == SP_SNAPSHOT_ID_LEN
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  case SP_MSG_SNAPSHOT_MANIFEST:
    return check_manifest(&msg->u.snapshot_manifest);
  case SP_MSG_SNAPSHOT_FETCH:
    return check_fetch(&msg->u.snapshot_fetch);
  case SP_MSG_SNAPSHOT_CHUNK:
    return msg->u.snapshot_chunk.index < SP_MAX_SNAPSHOT_CHUNKS &&
                   msg->u.snapshot_chunk.data_len <= SP_SNAPSHOT_CHUNK_MAX &&
                   (msg->u.snapshot_chunk.data_len == 0 ||
                    msg->u.snapshot_chunk.data)
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  default:
    return SP_ERR_INVALID_ARGUMENT;
  }
}

static int has_origin(const sp_entry *e, int with_origin) {
  return with_origin && e->origin_seq != 0;
}

/*
 * Entries are most of every page and every hash: their fields are stored
 * straight, in the smallest forms msgpack-c's packer would pick
 * (tests/sp_enc_test.c compares the two), instead of one packer callback
 * per field.
 */
static uint8_t *put_be(uint8_t *p, uint8_t tag, uint64_t v, size_t n) {
  *p++ = tag;
  while (n-- > 0) {
    *p++ = (uint8_t)(v >> (8 * n));
  }
  return p;
}

static uint8_t *put_uint(uint8_t *p, uint64_t v) {
  if (v < 128) {
    *p = (uint8_t)v;
    return p + 1;
  }
  return v < 256           ? put_be(p, 0xcc, v, 1)
         : v < 65536       ? put_be(p, 0xcd, v, 2)
         : v <= UINT32_MAX ? put_be(p, 0xce, v, 4)
                           : put_be(p, 0xcf, v, 8);
}

static uint8_t *put_int(uint8_t *p, int64_t v) {
  if (v >= 0) {
    return put_uint(p, (uint64_t)v);
  }
  if (v >= -32) {
    *p = (uint8_t)v;
    return p + 1;
  }
  return v >= -128        ? put_be(p, 0xd0, (uint64_t)v, 1)
         : v >= -32768    ? put_be(p, 0xd1, (uint64_t)v, 2)
         : v >= INT32_MIN ? put_be(p, 0xd2, (uint64_t)v, 4)
                          : put_be(p, 0xd3, (uint64_t)v, 8);
}

static uint8_t *put_bin_head(uint8_t *p, size_t n) {
  return n < 256     ? put_be(p, 0xc4, n, 1)
         : n < 65536 ? put_be(p, 0xc5, n, 2)
                     : put_be(p, 0xc6, n, 4);
}

static uint8_t *put_uuid(uint8_t *p, const sp_uuid *u) {
  p[0] = 0xc4;
  p[1] = (uint8_t)sizeof(u->bytes);
  memcpy(p + 2, u->bytes, sizeof(u->bytes));
  return p + 2 + sizeof(u->bytes);
}

/* What put_entry_head and sp_enc_entry_len take for granted, true of
 * every checked entry: a short model type, a one-byte change type.  Any
 * other entry goes through the packer, field by field. */
static int plain(const sp_entry *e) {
  return e->model_type_len <= SP_MAX_MODEL_TYPE_LEN &&
         (uint8_t)e->change_type < 128;
}

/* Field by field, for an entry that is not plain. */
static void pack_entry_head(msgpack_packer *pk, const sp_entry *e,
                            size_t fields) {
  msgpack_pack_array(pk, fields);
  msgpack_pack_uint64(pk, e->sequence);
  pack_uuid(pk, &e->device_id);
  msgpack_pack_uint64(pk, e->timestamp_ms);
  msgpack_pack_str_with_body(pk, e->model_type, e->model_type_len);
  pack_uuid(pk, &e->record_id);
  msgpack_pack_uint8(pk, (uint8_t)e->change_type);
  msgpack_pack_int64(pk, e->version);
  msgpack_pack_bin(pk, e->data_len);
}

/* The entry up to its payload bytes, SP_ENC_ENTRY_HEAD_MAX at most for a
 * plain one. */
static size_t put_entry_head(uint8_t *dst, const sp_entry *e, size_t fields) {
  uint8_t *p = dst;
  size_t mt = e->model_type_len;

  *p++ = (uint8_t)(0x90 | fields);
  p = put_uint(p, e->sequence);
  p = put_uuid(p, &e->device_id);
  p = put_uint(p, e->timestamp_ms);
  if (mt < 32) {
    *p++ = (uint8_t)(0xa0 | mt);
  } else {
    p = put_be(p, 0xd9, mt, 1); /* plain: mt < 256 */
  }
  if (mt) {
    memcpy(p, e->model_type, mt);
    p += mt;
  }
  p = put_uuid(p, &e->record_id);
  p = put_uint(p, (uint8_t)e->change_type);
  p = put_int(p, e->version);
  p = put_bin_head(p, e->data_len);
  return (size_t)(p - dst);
}

size_t sp_enc_entry_head_raw(uint8_t dst[SP_ENC_ENTRY_HEAD_MAX],
                             const sp_entry *e) {
  return plain(e) ? put_entry_head(dst, e, 8) : 0;
}

/* Room for `n` more bytes where a fixed or growable writer puts them
 * (NULL: its error is set). */
static uint8_t *wr_room(sp_wr *wr, size_t n) {
  if (wr->err) {
    return NULL;
  }
  if (wr->fixed) {
    if (n > wr->cap - wr->len) {
      wr->err = SP_ERR_NOBUF;
      return NULL;
    }
    return wr->fixed + wr->len;
  }
  if (wr->buf) {
    if (sp_buf_reserve(wr->buf, n) != 0) {
      wr->err = SP_ERR_NOMEM;
      return NULL;
    }
    return wr->buf->data + wr->buf->len;
  }
  return NULL;
}

/* The writer took `n` bytes written at wr_room's address. */
static void wr_commit(sp_wr *wr, size_t n) {
  if (wr->buf) {
    wr->buf->len += n;
  }
  wr->len += n;
}

int sp_enc_entry_head(msgpack_packer *pk, const sp_entry *e) {
  uint8_t head[SP_ENC_ENTRY_HEAD_MAX];

  if (plain(e)) {
    pk->callback(pk->data, (const char *)head, put_entry_head(head, e, 8));
  } else {
    pack_entry_head(pk, e, 8);
  }
  return err_of(pk);
}

int sp_enc_entry(msgpack_packer *pk, const sp_entry *e) {
  return sp_enc_entry_wire(pk, e, 0);
}

int sp_enc_entry_wire(msgpack_packer *pk, const sp_entry *e, int with_origin) {
  int origin = has_origin(e, with_origin);
  sp_wr *wr = pk->data;
  uint8_t *p;

  if (!plain(e)) {
    pack_entry_head(pk, e, origin ? 9 : 8);
  } else if (pk->callback == wr_fixed_cb || pk->callback == wr_buf_cb) {
    /* Straight into the writer's bytes: one reservation per entry. */
    size_t n = sp_enc_entry_len(e, with_origin);
    uint8_t *q;
    p = wr_room(wr, n);
    if (!p) {
      return wr->err;
    }
    q = p + put_entry_head(p, e, origin ? 9 : 8);
    if (e->data_len) {
      memcpy(q, e->data, e->data_len);
      q += e->data_len;
    }
    if (origin) {
      q = put_uint(q, e->origin_seq);
    }
    wr_commit(wr, (size_t)(q - p));
    return 0;
  } else {
    uint8_t head[SP_ENC_ENTRY_HEAD_MAX];
    pk->callback(pk->data, (const char *)head,
                 put_entry_head(head, e, origin ? 9 : 8));
  }
  msgpack_pack_bin_body(pk, e->data, e->data_len);
  if (origin) {
    msgpack_pack_uint64(pk, e->origin_seq);
  }
  return err_of(pk);
}

/* Lengths of msgpack-c's smallest forms, as sp_enc_entry_wire writes. */
static size_t uint_len(uint64_t v) {
  return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

static size_t int_len(int64_t v) {
  if (v >= 0) {
    return uint_len((uint64_t)v);
  }
  return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3
                                               : v >= INT32_MIN ? 5 : 9;
}

size_t sp_enc_entry_len(const sp_entry *e, int with_origin) {
  size_t mt = e->model_type_len, d = e->data_len;

  return 1 + uint_len(e->sequence) + 18 + uint_len(e->timestamp_ms) +
         (mt < 32 ? 1 : mt < 256 ? 2 : mt < 65536 ? 3 : 5) + mt + 18 + 1 +
         int_len(e->version) + (d < 256 ? 2 : d < 65536 ? 3 : 5) + d +
         (has_origin(e, with_origin) ? uint_len(e->origin_seq) : 0);
}

/* Type, library id and epoch open every body. */
static void pack_common(msgpack_packer *pk, size_t fields, sp_msg_type type,
                        const sp_uuid *lib, uint64_t epoch) {
  msgpack_pack_array(pk, fields);
  msgpack_pack_uint8(pk, (uint8_t)type);
  pack_uuid(pk, lib);
  msgpack_pack_uint64(pk, epoch);
}

int sp_enc_response_head(msgpack_packer *pk, const sp_uuid *lib,
                         uint64_t epoch, sp_seq since, size_t *count_off) {
  uint8_t hdr[SP_ENC_ENTRIES_HDR_LEN];

  pack_common(pk, RESPONSE_FIELDS, SP_MSG_ENTRIES_RESPONSE, lib, epoch);
  msgpack_pack_uint64(pk, since);
  *count_off = ((sp_wr *)pk->data)->len;
  sp_enc_patch_count(hdr, 0);
  pk->callback(pk->data, (const char *)hdr, sizeof(hdr));
  return err_of(pk);
}

int sp_enc_response_tail(msgpack_packer *pk, sp_seq through, int has_more,
                         sp_seq leader_latest, const uint8_t *last_hash,
                         size_t last_hash_len) {
  msgpack_pack_uint64(pk, through);
  if (has_more) {
    msgpack_pack_true(pk);
  } else {
    msgpack_pack_false(pk);
  }
  msgpack_pack_uint64(pk, leader_latest);
  pack_hash(pk, last_hash, last_hash_len);
  return err_of(pk);
}

int sp_enc_propose_head(msgpack_packer *pk, const sp_uuid *lib,
                        uint64_t epoch, size_t *count_off) {
  uint8_t hdr[SP_ENC_ENTRIES_HDR_LEN];

  pack_common(pk, PROPOSE_FIELDS, SP_MSG_PROPOSE, lib, epoch);
  *count_off = ((sp_wr *)pk->data)->len;
  sp_enc_patch_count(hdr, 0);
  pk->callback(pk->data, (const char *)hdr, sizeof(hdr));
  return err_of(pk);
}

/* The head wrote a zero count at `count_off`; overwrite it where the
 * bytes live (a counting writer has none). */
static void patch_own_count(msgpack_packer *pk, size_t count_off,
                            size_t count) {
  sp_wr *wr = pk->data;

  if (wr->err) {
    return;
  }
  if (wr->fixed) {
    sp_enc_patch_count(wr->fixed + count_off, (uint32_t)count);
  } else if (wr->buf) {
    sp_enc_patch_count(wr->buf->data + wr->buf->len - (wr->len - count_off),
                       (uint32_t)count);
  }
}

static int enc_entries(msgpack_packer *pk, const sp_entry *entries, size_t n,
                       int with_origin) {
  size_t i;

  for (i = 0; i < n; ++i) {
    int rv = sp_enc_entry_wire(pk, &entries[i], with_origin);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

static int enc_response(msgpack_packer *pk, const sp_msg *msg) {
  const sp_msg_entries_response *r = &msg->u.entries_response;
  size_t count_off;
  int rv;

  rv = sp_enc_response_head(pk, &msg->library_id, msg->epoch,
                            r->since_sequence, &count_off);
  if (rv != 0) {
    return rv;
  }
  patch_own_count(pk, count_off, r->entry_count);
  rv = enc_entries(pk, r->entries, r->entry_count, msg->with_origin);
  if (rv != 0) {
    return rv;
  }
  return sp_enc_response_tail(pk, r->through_sequence, r->has_more,
                              r->leader_latest, r->last_hash,
                              r->last_hash_len);
}

/* A Propose exists only between negotiated peers: its entries always
 * carry their origin_seq (with_origin is implied). */
static int enc_propose(msgpack_packer *pk, const sp_msg *msg) {
  const sp_msg_propose *p = &msg->u.propose;
  size_t count_off;
  int rv;

  rv = sp_enc_propose_head(pk, &msg->library_id, msg->epoch, &count_off);
  if (rv != 0) {
    return rv;
  }
  patch_own_count(pk, count_off, p->entry_count);
  return enc_entries(pk, p->entries, p->entry_count, 1);
}

static int enc_results(msgpack_packer *pk, const sp_msg *msg) {
  const sp_msg_propose_result *r = &msg->u.propose_result;
  uint8_t hdr[SP_ENC_ENTRIES_HDR_LEN];
  size_t i;

  pack_common(pk, RESULT_FIELDS, msg->type, &msg->library_id, msg->epoch);
  /* Array 32 like the entries, so a leader may stream results too. */
  sp_enc_patch_count(hdr, (uint32_t)r->result_count);
  pk->callback(pk->data, (const char *)hdr, sizeof(hdr));
  for (i = 0; i < r->result_count; ++i) {
    const sp_propose_result *x = &r->results[i];
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, x->origin_seq);
    msgpack_pack_int32(pk, x->code);
    msgpack_pack_uint64(pk, x->sequence);
    msgpack_pack_str_with_body(pk, x->message, x->message_len);
  }
  return err_of(pk);
}

/* The snapshot messages (docs/protocol.md, "Snapshots"). */
static int enc_snapshot(msgpack_packer *pk, const sp_msg *msg) {
  switch (msg->type) {
  case SP_MSG_SNAPSHOT_REQUEST: {
    const sp_msg_snapshot_request *r = &msg->u.snapshot_request;
    pack_common(pk, 6, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_bin_with_body(pk, r->id, r->id_len);
    msgpack_pack_uint64(pk, r->have_chunks);
    msgpack_pack_uint64(pk, r->max_frame);
    break;
  }
  case SP_MSG_SNAPSHOT_MANIFEST: {
    const sp_msg_snapshot_manifest *m = &msg->u.snapshot_manifest;
    pack_common(pk, 10, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_bin_with_body(pk, m->id, SP_SNAPSHOT_ID_LEN);
    msgpack_pack_uint64(pk, m->sequence);
    pack_hash(pk, m->hash_at, SP_HASH_LEN);
    msgpack_pack_uint64(pk, m->snap_epoch);
    msgpack_pack_uint64(pk, m->total_size);
    msgpack_pack_uint32(pk, m->chunk_size);
    msgpack_pack_bin_with_body(pk, m->chunk_hashes,
                               m->chunk_count * SP_HASH_LEN);
    break;
  }
  case SP_MSG_SNAPSHOT_FETCH: {
    const sp_msg_snapshot_fetch *f = &msg->u.snapshot_fetch;
    pack_common(pk, 6, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_bin_with_body(pk, f->id, SP_SNAPSHOT_ID_LEN);
    msgpack_pack_uint64(pk, f->first_chunk);
    msgpack_pack_uint32(pk, f->count);
    break;
  }
  default: {
    const sp_msg_snapshot_chunk *c = &msg->u.snapshot_chunk;
    pack_common(pk, 6, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_bin_with_body(pk, c->id, SP_SNAPSHOT_ID_LEN);
    msgpack_pack_uint64(pk, c->index);
    msgpack_pack_bin_with_body(pk, c->data, c->data_len);
    break;
  }
  }
  return err_of(pk);
}

int sp_enc_body(msgpack_packer *pk, const sp_msg *msg) {
  switch (msg->type) {
  case SP_MSG_NEW_ENTRIES:
    pack_common(pk, 6, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, msg->u.new_entries.from_sequence);
    msgpack_pack_uint64(pk, msg->u.new_entries.to_sequence);
    msgpack_pack_uint64(pk, msg->u.new_entries.entry_count);
    break;
  case SP_MSG_FETCH_ENTRIES: {
    const sp_msg_fetch_entries *f = &msg->u.fetch_entries;
    /* Without features: exactly the seed's 6 elements. */
    pack_common(pk, f->has_features ? 7 : 6, msg->type, &msg->library_id,
                msg->epoch);
    msgpack_pack_uint64(pk, f->since_sequence);
    msgpack_pack_uint64(pk, f->limit);
    pack_hash(pk, f->since_hash, f->since_hash_len);
    if (f->has_features) {
      msgpack_pack_uint64(pk, f->features);
    }
    break;
  }
  case SP_MSG_ENTRIES_RESPONSE:
    return enc_response(pk, msg);
  case SP_MSG_ACKNOWLEDGE:
    pack_common(pk, 4, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, msg->u.acknowledge.up_to_sequence);
    break;
  case SP_MSG_HEARTBEAT: {
    const sp_msg_heartbeat *hb = &msg->u.heartbeat;
    /* Without features: exactly the seed's 5 elements.  The frame
     * maximum only after them, and only when known (a leader's) or when
     * the claim, element 8, needs a place after it (0 = unknown). */
    int with_claim = hb->has_features && hb->has_claim;
    int with_max = with_claim || (hb->has_features && hb->max_frame != 0);
    pack_common(pk, with_claim ? 9 : with_max ? 8 : hb->has_features ? 7 : 5,
                msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, hb->current_sequence);
    msgpack_pack_uint8(pk, (uint8_t)hb->role);
    if (hb->has_features) {
      msgpack_pack_uint64(pk, hb->features);
      msgpack_pack_uint64(pk, hb->origin_high);
    }
    if (with_max) {
      msgpack_pack_uint64(pk, hb->max_frame);
    }
    if (with_claim) {
      pack_claim(pk, &hb->claim);
    }
    break;
  }
  case SP_MSG_SYNC_REQUIRED:
    pack_common(pk, 7, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint8(pk, (uint8_t)msg->u.sync_required.reason);
    msgpack_pack_uint64(pk, msg->u.sync_required.leader_latest);
    msgpack_pack_uint64(pk, msg->u.sync_required.leader_oldest);
    msgpack_pack_uint64(pk, msg->u.sync_required.follower_sequence);
    break;
  case SP_MSG_ERROR:
    pack_common(pk, msg->u.error.has_claim ? 6 : 5, msg->type,
                &msg->library_id, msg->epoch);
    msgpack_pack_int32(pk, msg->u.error.code);
    msgpack_pack_str_with_body(pk, msg->u.error.message,
                               msg->u.error.message_len);
    if (msg->u.error.has_claim) {
      pack_claim(pk, &msg->u.error.claim);
    }
    break;
  case SP_MSG_PROPOSE:
    return enc_propose(pk, msg);
  case SP_MSG_PROPOSE_RESULT:
    return enc_results(pk, msg);
  case SP_MSG_SNAPSHOT_REQUEST:
  case SP_MSG_SNAPSHOT_MANIFEST:
  case SP_MSG_SNAPSHOT_FETCH:
  case SP_MSG_SNAPSHOT_CHUNK:
    return enc_snapshot(pk, msg);
  default:
    return SP_ERR_INVALID_ARGUMENT;
  }
  return err_of(pk);
}
