/*
 * sp_enc.c: message and entry encoding on msgpack-c's packer.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_enc.h"
#include "sp_mpack.h"

/* Field counts of each message body (docs/protocol.md). */
#define RESPONSE_FIELDS 9

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

int sp_enc_check_entry(const sp_entry *e) {
  if (!e || (unsigned)e->change_type > SP_CHANGE_BULK_INSERT ||
      e->model_type_len > SP_MAX_MODEL_TYPE_LEN ||
      (e->model_type_len && !e->model_type) ||
      !sp_utf8_valid((const uint8_t *)e->model_type, e->model_type_len) ||
      e->data_len > SP_MAX_FRAME_LIMIT || (e->data_len && !e->data)) {
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
    return (unsigned)msg->u.heartbeat.role <= SP_ROLE_FOLLOWER
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  case SP_MSG_SYNC_REQUIRED:
    return msg->u.sync_required.reason >= SP_SYNC_BEHIND_RETENTION &&
                   msg->u.sync_required.reason <= SP_SYNC_RETENTION_CAP
               ? 0
               : SP_ERR_INVALID_ARGUMENT;
  case SP_MSG_ERROR: {
    const sp_msg_error *e = &msg->u.error;
    if (e->message_len > SP_MAX_ERROR_MESSAGE_LEN ||
        (e->message_len && !e->message) ||
        !sp_utf8_valid((const uint8_t *)e->message, e->message_len)) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    return 0;
  }
  default:
    return SP_ERR_INVALID_ARGUMENT;
  }
}

int sp_enc_entry_head(msgpack_packer *pk, const sp_entry *e) {
  msgpack_pack_array(pk, 8);
  msgpack_pack_uint64(pk, e->sequence);
  pack_uuid(pk, &e->device_id);
  msgpack_pack_uint64(pk, e->timestamp_ms);
  msgpack_pack_str_with_body(pk, e->model_type, e->model_type_len);
  pack_uuid(pk, &e->record_id);
  msgpack_pack_uint8(pk, (uint8_t)e->change_type);
  msgpack_pack_int64(pk, e->version);
  msgpack_pack_bin(pk, e->data_len);
  return err_of(pk);
}

int sp_enc_entry(msgpack_packer *pk, const sp_entry *e) {
  sp_enc_entry_head(pk, e);
  msgpack_pack_bin_body(pk, e->data, e->data_len);
  return err_of(pk);
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

static int enc_response(msgpack_packer *pk, const sp_msg *msg) {
  const sp_msg_entries_response *r = &msg->u.entries_response;
  sp_wr *wr = pk->data;
  size_t count_off, i;
  int rv;

  rv = sp_enc_response_head(pk, &msg->library_id, msg->epoch,
                            r->since_sequence, &count_off);
  if (rv != 0) {
    return rv;
  }
  /* The head wrote a zero count; overwrite it where the bytes live. */
  if (wr->fixed) {
    sp_enc_patch_count(wr->fixed + count_off, (uint32_t)r->entry_count);
  } else if (wr->buf) {
    sp_enc_patch_count(wr->buf->data + wr->buf->len -
                           (wr->len - count_off),
                       (uint32_t)r->entry_count);
  }
  for (i = 0; i < r->entry_count; ++i) {
    rv = sp_enc_entry(pk, &r->entries[i]);
    if (rv != 0) {
      return rv;
    }
  }
  return sp_enc_response_tail(pk, r->through_sequence, r->has_more,
                              r->leader_latest, r->last_hash,
                              r->last_hash_len);
}

int sp_enc_body(msgpack_packer *pk, const sp_msg *msg) {
  switch (msg->type) {
  case SP_MSG_NEW_ENTRIES:
    pack_common(pk, 6, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, msg->u.new_entries.from_sequence);
    msgpack_pack_uint64(pk, msg->u.new_entries.to_sequence);
    msgpack_pack_uint64(pk, msg->u.new_entries.entry_count);
    break;
  case SP_MSG_FETCH_ENTRIES:
    pack_common(pk, 6, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, msg->u.fetch_entries.since_sequence);
    msgpack_pack_uint64(pk, msg->u.fetch_entries.limit);
    pack_hash(pk, msg->u.fetch_entries.since_hash,
              msg->u.fetch_entries.since_hash_len);
    break;
  case SP_MSG_ENTRIES_RESPONSE:
    return enc_response(pk, msg);
  case SP_MSG_ACKNOWLEDGE:
    pack_common(pk, 4, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, msg->u.acknowledge.up_to_sequence);
    break;
  case SP_MSG_HEARTBEAT:
    pack_common(pk, 5, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint64(pk, msg->u.heartbeat.current_sequence);
    msgpack_pack_uint8(pk, (uint8_t)msg->u.heartbeat.role);
    break;
  case SP_MSG_SYNC_REQUIRED:
    pack_common(pk, 7, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_uint8(pk, (uint8_t)msg->u.sync_required.reason);
    msgpack_pack_uint64(pk, msg->u.sync_required.leader_latest);
    msgpack_pack_uint64(pk, msg->u.sync_required.leader_oldest);
    msgpack_pack_uint64(pk, msg->u.sync_required.follower_sequence);
    break;
  case SP_MSG_ERROR:
    pack_common(pk, 5, msg->type, &msg->library_id, msg->epoch);
    msgpack_pack_int32(pk, msg->u.error.code);
    msgpack_pack_str_with_body(pk, msg->u.error.message,
                               msg->u.error.message_len);
    break;
  default:
    return SP_ERR_INVALID_ARGUMENT;
  }
  return err_of(pk);
}
