/*
 * sp_enc_test.c: what the encoder writes and what it refuses.
 *
 * The bytes are checked with msgpack-c's own unpacker as an independent
 * reference decoder: whatever we write must be standard msgpack with the
 * documented layout, whoever reads it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sp_enc.h"
#include "sp_mem_int.h"

static uint8_t g_payload[300];
static char g_model[SP_MAX_MODEL_TYPE_LEN];
static char g_message[SP_MAX_ERROR_MESSAGE_LEN];
static sp_entry g_entries[3], g_origin_entries[3], g_proposed[3];
static sp_propose_result g_results[3];

static void fill_uuid(sp_uuid *u, uint8_t base) {
  size_t i;

  for (i = 0; i < 16; ++i) {
    u->bytes[i] = (uint8_t)(base + i);
  }
}

static void msg_init(sp_msg *m, sp_msg_type type) {
  memset(m, 0, sizeof(*m));
  m->type = type;
  fill_uuid(&m->library_id, 0x10);
  m->epoch = 3;
}

static void setup_entries(void) {
  size_t i;

  memset(g_payload, 0xd7, sizeof(g_payload));
  memset(g_model, 'M', sizeof(g_model));
  memset(g_message, 'E', sizeof(g_message));
  for (i = 0; i < 3; ++i) {
    sp_entry *e = &g_entries[i];
    memset(e, 0, sizeof(*e));
    e->sequence = 10 + 2 * i;
    fill_uuid(&e->device_id, 0xa0);
    e->timestamp_ms = 1000 * i;
    e->model_type = g_model;
    e->model_type_len = i == 0 ? 0 : i == 1 ? 5 : SP_MAX_MODEL_TYPE_LEN;
    fill_uuid(&e->record_id, (uint8_t)(0xb0 + i));
    e->change_type = (sp_change_type)(i + 1);
    e->version = i == 0 ? INT64_MIN : i == 1 ? -1 : INT64_MAX;
    e->data = g_payload;
    e->data_len = i == 0 ? 0 : i == 1 ? 1 : sizeof(g_payload);
  }
}

static void response_init(sp_msg *m) {
  msg_init(m, SP_MSG_ENTRIES_RESPONSE);
  m->u.entries_response.since_sequence = 9;
  m->u.entries_response.through_sequence = 20;
  m->u.entries_response.has_more = 1;
  m->u.entries_response.leader_latest = UINT64_MAX;
  memset(m->u.entries_response.last_hash, 0x4e, SP_HASH_LEN);
  m->u.entries_response.last_hash_len = SP_HASH_LEN;
  m->u.entries_response.entries = g_entries;
  m->u.entries_response.entry_count = 3;
}

/* Room for sample_messages' output. */
#define N_SAMPLES 16

/* One valid message of each type, with edge values. */
static size_t sample_messages(sp_msg *out) {
  size_t n = 0, i;

  for (i = 0; i < 3; ++i) {
    g_origin_entries[i] = g_entries[i];
    g_origin_entries[i].origin_seq = i == 0 ? 0 : i == 1 ? 200 : (uint64_t)INT64_MAX;
    g_proposed[i] = g_origin_entries[i];
    g_proposed[i].sequence = 0;
    g_proposed[i].origin_seq = 1 + i * 70000;
  }
  memset(g_results, 0, sizeof(g_results));
  g_results[0].origin_seq = 1;
  g_results[0].sequence = UINT64_MAX;
  g_results[1].origin_seq = 70001;
  g_results[1].code = INT32_MIN;
  g_results[2].origin_seq = 140001;
  g_results[2].code = SP_ERR_REFUSED;
  g_results[2].message = g_message;
  g_results[2].message_len = SP_MAX_ERROR_MESSAGE_LEN;

  msg_init(&out[n], SP_MSG_NEW_ENTRIES);
  out[n].epoch = 0;
  out[n].u.new_entries.from_sequence = 0;
  out[n].u.new_entries.to_sequence = UINT64_MAX;
  out[n++].u.new_entries.entry_count = 1u << 31;
  msg_init(&out[n], SP_MSG_FETCH_ENTRIES);
  out[n].u.fetch_entries.since_sequence = 77;
  out[n].u.fetch_entries.limit = SP_MAX_FETCH_LIMIT;
  memset(out[n].u.fetch_entries.since_hash, 0x21, SP_HASH_LEN);
  out[n++].u.fetch_entries.since_hash_len = SP_HASH_LEN;
  response_init(&out[n++]);
  msg_init(&out[n], SP_MSG_ACKNOWLEDGE);
  out[n].epoch = UINT64_MAX;
  out[n++].u.acknowledge.up_to_sequence = 128;
  msg_init(&out[n], SP_MSG_HEARTBEAT);
  out[n].u.heartbeat.current_sequence = 65536;
  out[n++].u.heartbeat.role = SP_ROLE_FOLLOWER;
  msg_init(&out[n], SP_MSG_SYNC_REQUIRED);
  out[n].u.sync_required.reason = SP_SYNC_RETENTION_CAP;
  out[n].u.sync_required.leader_latest = 1;
  out[n].u.sync_required.leader_oldest = 2;
  out[n++].u.sync_required.follower_sequence = 3;
  msg_init(&out[n], SP_MSG_ERROR);
  out[n].u.error.code = INT32_MIN;
  out[n].u.error.message = g_message;
  out[n++].u.error.message_len = SP_MAX_ERROR_MESSAGE_LEN;
  msg_init(&out[n], SP_MSG_HEARTBEAT);
  out[n].u.heartbeat.role = SP_ROLE_LEADER;
  out[n].u.heartbeat.has_features = 1;
  out[n].u.heartbeat.features = UINT64_MAX;
  out[n].u.heartbeat.origin_high = 65536;
  out[n++].u.heartbeat.max_frame = SP_MAX_FRAME_LIMIT;
  msg_init(&out[n], SP_MSG_FETCH_ENTRIES);
  out[n].u.fetch_entries.since_sequence = UINT64_MAX;
  out[n].u.fetch_entries.limit = 1;
  out[n].u.fetch_entries.has_features = 1;
  out[n++].u.fetch_entries.features = UINT64_MAX;
  response_init(&out[n]);
  out[n].with_origin = 1;
  out[n++].u.entries_response.entries = g_origin_entries;
  msg_init(&out[n], SP_MSG_PROPOSE);
  out[n].u.propose.entries = g_proposed;
  out[n++].u.propose.entry_count = 3;
  msg_init(&out[n], SP_MSG_PROPOSE_RESULT);
  out[n].u.propose_result.results = g_results;
  out[n++].u.propose_result.result_count = 3;
  assert_true(n <= N_SAMPLES);
  return n;
}

static int setup(void **state) {
  (void)state;
  setup_entries();
  return 0;
}

/* ---- refusals ---- */

static void expect_refused(const sp_msg *m) {
  uint8_t buf[4096];
  size_t nw = 12345;

  memset(buf, 0x5a, sizeof(buf));
  assert_int_equal(sp_msg_encoded_len(m), 0);
  assert_int_equal(sp_msg_encode(m, buf, sizeof(buf), &nw),
                   SP_ERR_INVALID_ARGUMENT);
  /* Nothing written. */
  assert_int_equal(nw, 12345);
  assert_int_equal(buf[0], 0x5a);
  assert_int_equal(buf[4], 0x5a);
}

static void test_refuses_bad_type_and_enums(void **state) {
  sp_msg m;

  (void)state;
  msg_init(&m, (sp_msg_type)0);
  expect_refused(&m);
  msg_init(&m, (sp_msg_type)14); /* 10..13: the snapshot messages */
  expect_refused(&m);
  msg_init(&m, SP_MSG_PROPOSE); /* no entries */
  expect_refused(&m);
  msg_init(&m, SP_MSG_PROPOSE_RESULT); /* no results */
  expect_refused(&m);
  msg_init(&m, (sp_msg_type)-1);
  expect_refused(&m);
  msg_init(&m, SP_MSG_HEARTBEAT);
  m.u.heartbeat.role = (sp_role)2;
  expect_refused(&m);
  m.u.heartbeat.role = (sp_role)-1;
  expect_refused(&m);
  msg_init(&m, SP_MSG_SYNC_REQUIRED);
  m.u.sync_required.reason = (sp_sync_reason)0;
  expect_refused(&m);
  m.u.sync_required.reason = (sp_sync_reason)5;
  expect_refused(&m);
}

static void test_refuses_bad_strings(void **state) {
  char big[SP_MAX_ERROR_MESSAGE_LEN + 1];
  sp_entry e;
  sp_msg m;

  (void)state;
  memset(big, 'x', sizeof(big));
  msg_init(&m, SP_MSG_ERROR);
  m.u.error.message = big;
  m.u.error.message_len = sizeof(big);
  expect_refused(&m);
  m.u.error.message = "ok\xff";
  m.u.error.message_len = 3;
  expect_refused(&m);
  m.u.error.message = "\xed\xa0\x80"; /* a surrogate */
  expect_refused(&m);
  m.u.error.message = NULL;
  m.u.error.message_len = 1;
  expect_refused(&m);

  response_init(&m);
  e = g_entries[0];
  m.u.entries_response.entries = &e;
  m.u.entries_response.entry_count = 1;
  e.model_type = big;
  e.model_type_len = SP_MAX_MODEL_TYPE_LEN + 1;
  expect_refused(&m);
  e.model_type = "\xc0\xaf";
  e.model_type_len = 2;
  expect_refused(&m);
  e.model_type = NULL;
  e.model_type_len = 4;
  expect_refused(&m);
}

static void test_refuses_bad_hashes(void **state) {
  sp_msg m;

  (void)state;
  msg_init(&m, SP_MSG_FETCH_ENTRIES);
  m.u.fetch_entries.since_hash_len = 17;
  expect_refused(&m);
  m.u.fetch_entries.since_hash_len = SP_HASH_LEN + 1;
  expect_refused(&m);
  m.u.fetch_entries.since_hash_len = 1;
  expect_refused(&m);
  response_init(&m);
  m.u.entries_response.last_hash_len = 17;
  expect_refused(&m);
}

static void test_refuses_bad_entries(void **state) {
  sp_entry e[3];
  sp_msg m;

  (void)state;
  response_init(&m);
  memcpy(e, g_entries, sizeof(e));
  m.u.entries_response.entries = e;

  e[1].sequence = e[0].sequence; /* duplicate */
  expect_refused(&m);
  e[1].sequence = e[0].sequence - 1; /* going back */
  expect_refused(&m);
  memcpy(e, g_entries, sizeof(e));
  e[0].sequence = m.u.entries_response.since_sequence; /* not after since */
  expect_refused(&m);
  memcpy(e, g_entries, sizeof(e));
  e[2].sequence = m.u.entries_response.through_sequence + 1; /* past it */
  expect_refused(&m);
  memcpy(e, g_entries, sizeof(e));
  e[1].change_type = (sp_change_type)4;
  expect_refused(&m);
  memcpy(e, g_entries, sizeof(e));
  e[2].data = NULL;
  expect_refused(&m);
  memcpy(e, g_entries, sizeof(e));
  m.u.entries_response.through_sequence = 8; /* before since */
  m.u.entries_response.entry_count = 0;
  expect_refused(&m);
  response_init(&m);
  m.u.entries_response.entries = NULL;
  expect_refused(&m);
}

static void test_null_arguments(void **state) {
  uint8_t buf[64];
  size_t nw;
  sp_msg m;

  (void)state;
  msg_init(&m, SP_MSG_ACKNOWLEDGE);
  assert_int_equal(sp_msg_encoded_len(NULL), 0);
  assert_int_equal(sp_msg_encode(NULL, buf, sizeof(buf), &nw),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_msg_encode(&m, NULL, sizeof(buf), &nw),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), NULL),
                   SP_ERR_INVALID_ARGUMENT);
}

/* ---- lengths and short buffers ---- */

static void test_encoded_len_and_nobuf(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;

  (void)state;
  for (i = 0; i < n; ++i) {
    size_t need = sp_msg_encoded_len(&msgs[i]), nw, k;
    uint8_t *buf = malloc(need + 8);

    assert_non_null(buf);
    assert_true(need > SP_FRAME_HEADER_LEN);
    /* Every short capacity is refused (ASan checks nothing is written
     * past it: the buffer is exactly that long). */
    for (k = 0; k < need; ++k) {
      uint8_t *exact = malloc(k ? k : 1);
      assert_non_null(exact);
      assert_int_equal(sp_msg_encode(&msgs[i], exact, k, &nw), SP_ERR_NOBUF);
      free(exact);
    }
    memset(buf, 0xee, need + 8);
    assert_int_equal(sp_msg_encode(&msgs[i], buf, need + 8, &nw), 0);
    assert_int_equal(nw, need);
    assert_int_equal(buf[need], 0xee);
    /* The prefix is the body length, big-endian. */
    assert_int_equal((size_t)buf[0] << 24 | (size_t)buf[1] << 16 |
                         (size_t)buf[2] << 8 | buf[3],
                     need - SP_FRAME_HEADER_LEN);
    free(buf);
  }
}

static void test_frame_too_large(void **state) {
  size_t big = 17u << 20;
  uint8_t *data = calloc(1, big);
  sp_entry e[4];
  uint8_t buf[64];
  size_t i, nw;
  sp_msg m;

  (void)state;
  assert_non_null(data);
  response_init(&m);
  for (i = 0; i < 4; ++i) {
    e[i] = g_entries[0];
    e[i].sequence = 10 + i;
    e[i].data = data; /* the same 17 MiB four times: 68 MiB of body */
    e[i].data_len = big;
  }
  m.u.entries_response.entries = e;
  m.u.entries_response.entry_count = 4;
  assert_true(sp_msg_encoded_len(&m) > SP_MAX_FRAME_LIMIT);
  /* Refused before the short buffer matters. */
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw),
                   SP_ERR_FRAME_TOO_LARGE);
  free(data);
}

/* ---- canonical forms ---- */

/* Encodes an Acknowledge and returns the bytes of its epoch field. */
static size_t epoch_bytes(uint64_t epoch, uint8_t *out) {
  uint8_t buf[64];
  size_t nw, n;
  sp_msg m;

  msg_init(&m, SP_MSG_ACKNOWLEDGE);
  m.epoch = epoch;
  m.u.acknowledge.up_to_sequence = 0;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw), 0);
  /* prefix(4) 0x94 0x04 0xc4 0x10 uuid(16) epoch... 0x00 */
  n = nw - 24 - 1;
  memcpy(out, buf + 24, n);
  assert_int_equal(buf[nw - 1], 0x00);
  return n;
}

static void test_smallest_uint_forms(void **state) {
  static const struct {
    uint64_t v;
    size_t n;
    uint8_t b[9];
  } cases[] = {
      {0, 1, {0x00}},
      {127, 1, {0x7f}},
      {128, 2, {0xcc, 0x80}},
      {255, 2, {0xcc, 0xff}},
      {256, 3, {0xcd, 0x01, 0x00}},
      {65535, 3, {0xcd, 0xff, 0xff}},
      {65536, 5, {0xce, 0x00, 0x01, 0x00, 0x00}},
      {4294967295u, 5, {0xce, 0xff, 0xff, 0xff, 0xff}},
      {4294967296u, 9, {0xcf, 0, 0, 0, 1, 0, 0, 0, 0}},
      {UINT64_MAX, 9, {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
  };
  uint8_t got[16];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    assert_int_equal(epoch_bytes(cases[i].v, got), cases[i].n);
    assert_memory_equal(got, cases[i].b, cases[i].n);
  }
}

/* Encodes a one-entry response; returns the entry's bytes. */
static size_t entry_bytes(const sp_entry *e, uint8_t *out, size_t cap) {
  uint8_t *buf = malloc(1 << 20);
  size_t nw, n;
  sp_msg m;

  assert_non_null(buf);
  response_init(&m);
  m.u.entries_response.since_sequence = 0;
  m.u.entries_response.through_sequence = e->sequence;
  m.u.entries_response.last_hash_len = 0;
  m.u.entries_response.entries = e;
  m.u.entries_response.entry_count = 1;
  assert_int_equal(sp_msg_encode(&m, buf, 1 << 20, &nw), 0);
  /* prefix, 0x99 0x03 uuid(18) epoch(0x03) since(0x00), 0xdd + 4 */
  assert_int_equal(buf[4 + 21], 0x00);
  assert_int_equal(buf[4 + 22], 0xdd);
  assert_memory_equal(buf + 4 + 23, "\x00\x00\x00\x01", 4);
  /* The entry and the response tail after it. */
  n = nw - (4 + 27);
  memcpy(out, buf + 4 + 27, n < cap ? n : cap);
  free(buf);
  return n;
}

static void test_smallest_int_and_container_forms(void **state) {
  static const struct {
    int64_t v;
    size_t n;
    uint8_t b[9];
  } vers[] = {
      {0, 1, {0x00}},
      {5, 1, {0x05}},
      {127, 1, {0x7f}},
      {128, 2, {0xcc, 0x80}},
      {-1, 1, {0xff}},
      {-32, 1, {0xe0}},
      {-33, 2, {0xd0, 0xdf}},
      {-128, 2, {0xd0, 0x80}},
      {-129, 3, {0xd1, 0xff, 0x7f}},
      {-32768, 3, {0xd1, 0x80, 0x00}},
      {-32769, 5, {0xd2, 0xff, 0xff, 0x7f, 0xff}},
      {INT64_MIN, 9, {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}},
      {INT64_MAX, 9, {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
  };
  static uint8_t got[70000];
  size_t i, off;
  sp_entry e = g_entries[0];

  (void)state;
  e.sequence = 1;
  e.timestamp_ms = 2;
  e.model_type_len = 0;
  e.data_len = 0;
  for (i = 0; i < sizeof(vers) / sizeof(vers[0]); ++i) {
    e.version = vers[i].v;
    entry_bytes(&e, got, sizeof(got));
    /* 0x98 01 c410 uuid 02 a0 c410 uuid ct version c4 00 | tail */
    off = 1 + 1 + 18 + 1 + 1 + 18 + 1;
    assert_int_equal(got[0], 0x98);
    assert_int_equal(got[off - 1], (uint8_t)e.change_type);
    assert_memory_equal(got + off, vers[i].b, vers[i].n);
    assert_memory_equal(got + off + vers[i].n, "\xc4\x00", 2);
  }

  /* String and binary headers take their smallest form. */
  {
    static const struct {
      size_t len;
      uint8_t hdr[5];
      size_t hlen;
    } strs[] = {{0, {0xa0}, 1},         {31, {0xbf}, 1},
                {32, {0xd9, 32}, 2},    {255, {0xd9, 255}, 2}},
      bins[] = {{0, {0xc4, 0}, 2},      {255, {0xc4, 255}, 2},
                {256, {0xc5, 1, 0}, 3}, {65535, {0xc5, 0xff, 0xff}, 3},
                {65536, {0xc6, 0, 1, 0, 0}, 5}};
    static uint8_t data[65536];
    e.version = 0;
    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); ++i) {
      e.model_type = g_model;
      e.model_type_len = strs[i].len;
      entry_bytes(&e, got, sizeof(got));
      off = 1 + 1 + 18 + 1;
      assert_memory_equal(got + off, strs[i].hdr, strs[i].hlen);
      assert_int_equal(got[off + strs[i].hlen + strs[i].len], 0xc4);
    }
    e.model_type_len = 0;
    e.data = data;
    for (i = 0; i < sizeof(bins) / sizeof(bins[0]); ++i) {
      e.data_len = bins[i].len;
      entry_bytes(&e, got, sizeof(got));
      off = 1 + 1 + 18 + 1 + 1 + 18 + 1 + 1;
      assert_memory_equal(got + off, bins[i].hdr, bins[i].hlen);
    }
  }
}

/* Error codes (int32) follow the same smallest-form rule as versions. */
static void test_error_code_forms(void **state) {
  static const struct {
    int32_t code;
    size_t n;
    uint8_t b[5];
  } cases[] = {
      {0, 1, {0x00}},
      {200, 2, {0xcc, 0xc8}},
      {-302, 3, {0xd1, 0xfe, 0xd2}},
      {INT32_MIN, 5, {0xd2, 0x80, 0x00, 0x00, 0x00}},
      {INT32_MAX, 5, {0xce, 0x7f, 0xff, 0xff, 0xff}},
  };
  uint8_t buf[64];
  size_t i, nw;
  sp_msg m;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    msg_init(&m, SP_MSG_ERROR);
    m.epoch = 0;
    m.u.error.code = cases[i].code;
    assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw), 0);
    /* prefix, 0x95 0x07 uuid(18) epoch(0x00), code, 0xa0 */
    assert_int_equal(nw, 4 + 21 + cases[i].n + 1);
    assert_memory_equal(buf + 25, cases[i].b, cases[i].n);
    assert_int_equal(buf[nw - 1], 0xa0);
  }
}

static void test_empty_response_uses_array32(void **state) {
  uint8_t buf[128];
  size_t nw;
  sp_msg m;

  (void)state;
  response_init(&m);
  m.u.entries_response.entries = NULL;
  m.u.entries_response.entry_count = 0;
  m.u.entries_response.since_sequence = 5;
  m.u.entries_response.through_sequence = 5;
  m.u.entries_response.has_more = 0;
  m.u.entries_response.leader_latest = 5;
  m.u.entries_response.last_hash_len = 0;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw), 0);
  assert_int_equal(nw, 4 + 1 + 1 + 18 + 1 + 1 + 5 + 1 + 1 + 1 + 2);
  assert_memory_equal(buf + 4 + 22, "\xdd\x00\x00\x00\x00\x05\xc2\x05\xc4\x00",
                      10);
}

/* ---- msgpack-c as the reference decoder ---- */

static const msgpack_object *unpack_body(msgpack_unpacked *u,
                                         const uint8_t *frame, size_t len,
                                         uint32_t fields) {
  size_t off = 0;
  const msgpack_object *o;

  msgpack_unpacked_init(u);
  assert_int_equal(msgpack_unpack_next(u, (const char *)frame + 4, len - 4,
                                       &off),
                   MSGPACK_UNPACK_SUCCESS);
  /* Exactly one object fills the body. */
  assert_int_equal(off, len - 4);
  o = &u->data;
  assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(o->via.array.size, fields);
  return o->via.array.ptr;
}

static void expect_uint(const msgpack_object *o, uint64_t v) {
  assert_int_equal(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  assert_true(o->via.u64 == v);
}

static void expect_int(const msgpack_object *o, int64_t v) {
  if (v >= 0) {
    expect_uint(o, (uint64_t)v);
  } else {
    assert_int_equal(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_true(o->via.i64 == v);
  }
}

static void expect_bin(const msgpack_object *o, const void *p, size_t n) {
  assert_int_equal(o->type, MSGPACK_OBJECT_BIN);
  assert_int_equal(o->via.bin.size, n);
  if (n) {
    assert_memory_equal(o->via.bin.ptr, p, n);
  }
}

static void expect_str(const msgpack_object *o, const void *p, size_t n) {
  assert_int_equal(o->type, MSGPACK_OBJECT_STR);
  assert_int_equal(o->via.str.size, n);
  if (n) {
    assert_memory_equal(o->via.str.ptr, p, n);
  }
}

/* `e` as the wire has it: 8 elements, or 9 with its origin_seq when
 * `with_origin` and it has one. */
static void expect_entry(const msgpack_object *o, const sp_entry *e,
                         int with_origin) {
  const msgpack_object *f;
  int origin = with_origin && e->origin_seq != 0;

  assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(o->via.array.size, origin ? 9 : 8);
  f = o->via.array.ptr;
  expect_uint(&f[0], e->sequence);
  expect_bin(&f[1], e->device_id.bytes, 16);
  expect_uint(&f[2], e->timestamp_ms);
  expect_str(&f[3], e->model_type, e->model_type_len);
  expect_bin(&f[4], e->record_id.bytes, 16);
  expect_uint(&f[5], (uint64_t)e->change_type);
  expect_int(&f[6], e->version);
  expect_bin(&f[7], e->data, e->data_len);
  if (origin) {
    expect_uint(&f[8], e->origin_seq);
  }
}

static void test_reference_decoder(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i, k;

  (void)state;
  for (i = 0; i < n; ++i) {
    const sp_msg *m = &msgs[i];
    size_t need = sp_msg_encoded_len(m), nw;
    uint8_t *buf = malloc(need);
    msgpack_unpacked u;
    const msgpack_object *f = NULL;

    assert_non_null(buf);
    assert_int_equal(sp_msg_encode(m, buf, need, &nw), 0);
    switch (m->type) {
    case SP_MSG_NEW_ENTRIES:
      f = unpack_body(&u, buf, nw, 6);
      expect_uint(&f[3], m->u.new_entries.from_sequence);
      expect_uint(&f[4], m->u.new_entries.to_sequence);
      expect_uint(&f[5], m->u.new_entries.entry_count);
      break;
    case SP_MSG_FETCH_ENTRIES:
      f = unpack_body(&u, buf, nw, m->u.fetch_entries.has_features ? 7 : 6);
      expect_uint(&f[3], m->u.fetch_entries.since_sequence);
      expect_uint(&f[4], m->u.fetch_entries.limit);
      expect_bin(&f[5], m->u.fetch_entries.since_hash,
                 m->u.fetch_entries.since_hash_len);
      if (m->u.fetch_entries.has_features) {
        expect_uint(&f[6], m->u.fetch_entries.features);
      }
      break;
    case SP_MSG_ENTRIES_RESPONSE: {
      const sp_msg_entries_response *r = &m->u.entries_response;
      f = unpack_body(&u, buf, nw, 9);
      expect_uint(&f[3], r->since_sequence);
      assert_int_equal(f[4].type, MSGPACK_OBJECT_ARRAY);
      assert_int_equal(f[4].via.array.size, r->entry_count);
      for (k = 0; k < r->entry_count; ++k) {
        expect_entry(&f[4].via.array.ptr[k], &r->entries[k],
                     m->with_origin);
      }
      expect_uint(&f[5], r->through_sequence);
      assert_int_equal(f[6].type, MSGPACK_OBJECT_BOOLEAN);
      assert_int_equal(f[6].via.boolean, r->has_more != 0);
      expect_uint(&f[7], r->leader_latest);
      expect_bin(&f[8], r->last_hash, r->last_hash_len);
      break;
    }
    case SP_MSG_ACKNOWLEDGE:
      f = unpack_body(&u, buf, nw, 4);
      expect_uint(&f[3], m->u.acknowledge.up_to_sequence);
      break;
    case SP_MSG_HEARTBEAT:
      f = unpack_body(&u, buf, nw,
                      !m->u.heartbeat.has_features ? 5
                      : m->u.heartbeat.max_frame   ? 8
                                                   : 7);
      expect_uint(&f[3], m->u.heartbeat.current_sequence);
      expect_uint(&f[4], (uint64_t)m->u.heartbeat.role);
      if (m->u.heartbeat.has_features) {
        expect_uint(&f[5], m->u.heartbeat.features);
        expect_uint(&f[6], m->u.heartbeat.origin_high);
      }
      if (m->u.heartbeat.has_features && m->u.heartbeat.max_frame) {
        expect_uint(&f[7], m->u.heartbeat.max_frame);
      }
      break;
    case SP_MSG_PROPOSE:
      f = unpack_body(&u, buf, nw, 4);
      assert_int_equal(f[3].type, MSGPACK_OBJECT_ARRAY);
      assert_int_equal(f[3].via.array.size, m->u.propose.entry_count);
      /* array 32 whatever the count, like a response's entries */
      assert_int_equal(buf[4 + 1 + 1 + 18 + 1], 0xdd);
      for (k = 0; k < m->u.propose.entry_count; ++k) {
        expect_entry(&f[3].via.array.ptr[k], &m->u.propose.entries[k], 1);
      }
      break;
    case SP_MSG_PROPOSE_RESULT:
      f = unpack_body(&u, buf, nw, 4);
      assert_int_equal(f[3].type, MSGPACK_OBJECT_ARRAY);
      assert_int_equal(f[3].via.array.size,
                       m->u.propose_result.result_count);
      assert_int_equal(buf[4 + 1 + 1 + 18 + 1], 0xdd);
      for (k = 0; k < m->u.propose_result.result_count; ++k) {
        const sp_propose_result *x = &m->u.propose_result.results[k];
        const msgpack_object *rf;
        assert_int_equal(f[3].via.array.ptr[k].type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(f[3].via.array.ptr[k].via.array.size, 4);
        rf = f[3].via.array.ptr[k].via.array.ptr;
        expect_uint(&rf[0], x->origin_seq);
        expect_int(&rf[1], x->code);
        expect_uint(&rf[2], x->sequence);
        expect_str(&rf[3], x->message, x->message_len);
      }
      break;
    case SP_MSG_SYNC_REQUIRED:
      f = unpack_body(&u, buf, nw, 7);
      expect_uint(&f[3], (uint64_t)m->u.sync_required.reason);
      expect_uint(&f[4], m->u.sync_required.leader_latest);
      expect_uint(&f[5], m->u.sync_required.leader_oldest);
      expect_uint(&f[6], m->u.sync_required.follower_sequence);
      break;
    case SP_MSG_ERROR:
      f = unpack_body(&u, buf, nw, 5);
      expect_int(&f[3], m->u.error.code);
      expect_str(&f[4], m->u.error.message, m->u.error.message_len);
      break;
    default:
      fail();
    }
    assert_non_null(f);
    /* The common head of every body. */
    expect_uint(&f[0], (uint64_t)m->type);
    expect_bin(&f[1], m->library_id.bytes, 16);
    expect_uint(&f[2], m->epoch);
    msgpack_unpacked_destroy(&u);
    free(buf);
  }
}

/* ---- the entry helpers the sessions stream with (sp_enc.h) ---- */

/* An entry of every size class: payload and model type lengths at the
 * msgpack header boundaries, integers at their width boundaries. */
static void varied_entry(sp_entry *e, size_t i, uint8_t *data) {
  static const size_t dlens[] = {0, 1, 255, 256, 65535, 65536, 70000};
  static const size_t mlens[] = {0, 31, 32, 255};
  static const uint64_t u[] = {0, 127, 128, 255, 256, 65535, 65536,
                               UINT32_MAX, (uint64_t)UINT32_MAX + 1,
                               UINT64_MAX};
  static const int64_t v[] = {INT64_MIN, (int64_t)INT32_MIN - 1, INT32_MIN,
                              -32769, -32768, -129, -128, -33, -32, -1, 0,
                              127, 128, INT64_MAX};

  *e = g_entries[0];
  e->sequence = u[i % 10];
  e->timestamp_ms = u[(i / 3) % 10];
  /* origin_seq stops at 2^63-1 (what every store keeps). */
  e->origin_seq = u[(i / 7) % 10] > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX
                                                        : u[(i / 7) % 10];
  e->version = v[i % 14];
  e->model_type = g_model;
  e->model_type_len = mlens[i % 4];
  e->data = data;
  e->data_len = dlens[(i / 2) % 7];
}

static void test_entry_len_exact(void **state) {
  uint8_t *data = calloc(1, 70000), *buf = malloc(71000);
  size_t i;

  (void)state;
  assert_non_null(data);
  assert_non_null(buf);
  for (i = 0; i < 700; ++i) {
    sp_entry e;
    int with;
    varied_entry(&e, i, data);
    assert_int_equal(sp_enc_check_entry(&e), 0);
    for (with = 0; with <= 1; ++with) {
      msgpack_packer pk;
      sp_wr wr;
      size_t len = sp_enc_entry_len(&e, with);

      sp_wr_count(&wr, &pk);
      assert_int_equal(sp_enc_entry_wire(&pk, &e, with), 0);
      assert_int_equal(wr.len, len);
      /* Exactly that much room suffices, one byte less does not. */
      sp_wr_fixed(&wr, &pk, buf, len);
      assert_int_equal(sp_enc_entry_wire(&pk, &e, with), 0);
      assert_int_equal(wr.len, len);
      sp_wr_fixed(&wr, &pk, buf, len - 1);
      assert_int_equal(sp_enc_entry_wire(&pk, &e, with), SP_ERR_NOBUF);
      /* The origin element is there only when asked and non-zero. */
      assert_int_equal(buf[0], with && e.origin_seq ? 0x99 : 0x98);
    }
    if (e.origin_seq == 0) {
      assert_int_equal(sp_enc_entry_len(&e, 1), sp_enc_entry_len(&e, 0));
    } else {
      assert_true(sp_enc_entry_len(&e, 1) > sp_enc_entry_len(&e, 0));
    }
  }
  free(data);
  free(buf);
}

/* The entry as msgpack-c's packer writes it field by field (the
 * canonical form of docs/protocol.md), into `sb`. */
static void reference_entry(msgpack_sbuffer *sb, const sp_entry *e,
                            int origin) {
  msgpack_packer pk;

  msgpack_sbuffer_clear(sb);
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, origin ? 9 : 8);
  msgpack_pack_uint64(&pk, e->sequence);
  msgpack_pack_bin_with_body(&pk, e->device_id.bytes, 16);
  msgpack_pack_uint64(&pk, e->timestamp_ms);
  msgpack_pack_str_with_body(&pk, e->model_type, e->model_type_len);
  msgpack_pack_bin_with_body(&pk, e->record_id.bytes, 16);
  msgpack_pack_uint8(&pk, (uint8_t)e->change_type);
  msgpack_pack_int64(&pk, e->version);
  msgpack_pack_bin_with_body(&pk, e->data, e->data_len);
  if (origin) {
    msgpack_pack_uint64(&pk, e->origin_seq);
  }
}

/* The entry encoder stores fields straight (no packer callback per
 * field): byte for byte what msgpack-c writes, into every writer, for
 * every size class and change type. */
static void test_entry_direct_matches_msgpack(void **state) {
  uint8_t *data = calloc(1, 70000), *buf = malloc(71000);
  uint8_t head[SP_ENC_ENTRY_HEAD_MAX];
  msgpack_sbuffer sb;
  sp_mem heap;
  size_t i;

  (void)state;
  sp_mem_resolve(&heap, NULL);
  assert_non_null(data);
  assert_non_null(buf);
  for (i = 0; i < 70000; ++i) {
    data[i] = (uint8_t)(i * 7);
  }
  msgpack_sbuffer_init(&sb);
  for (i = 0; i < 700 * 4; ++i) {
    sp_entry e;
    int with;
    varied_entry(&e, i / 4, data);
    e.change_type = (sp_change_type)(i % 4);
    for (with = 0; with <= 1; ++with) {
      int origin = with && e.origin_seq != 0;
      msgpack_packer pk;
      sp_wr wr;
      sp_buf b;
      size_t n;

      reference_entry(&sb, &e, origin);
      /* A fixed buffer. */
      sp_wr_fixed(&wr, &pk, buf, 71000);
      assert_int_equal(sp_enc_entry_wire(&pk, &e, with), 0);
      assert_int_equal(wr.len, sb.size);
      assert_memory_equal(buf, sb.data, sb.size);
      /* A growable one, after bytes already there. */
      sp_buf_init(&b, &heap);
      assert_int_equal(sp_buf_append(&b, "xyz", 3), 0);
      sp_wr_buf(&wr, &pk, &b);
      assert_int_equal(sp_enc_entry_wire(&pk, &e, with), 0);
      assert_int_equal(wr.len, sb.size);
      assert_int_equal(b.len, 3 + sb.size);
      assert_memory_equal(b.data, "xyz", 3);
      assert_memory_equal(b.data + 3, sb.data, sb.size);
      sp_buf_free(&b);
      /* A counting writer takes the packer's way. */
      sp_wr_count(&wr, &pk);
      assert_int_equal(sp_enc_entry_wire(&pk, &e, with), 0);
      assert_int_equal(wr.len, sb.size);
      /* The head alone, stored straight: the bytes before the payload. */
      n = sp_enc_entry_head_raw(head, &e);
      assert_true(n > 0 && n <= sizeof(head));
      assert_int_equal(n + e.data_len, sp_enc_entry_len(&e, 0));
      if (!origin) {
        assert_memory_equal(head, sb.data, n);
      }
    }
  }
  {
    /* An entry a check refuses still encodes as msgpack-c writes it
     * (the packer's way), and has no straight head. */
    msgpack_packer pk;
    sp_wr wr;
    sp_entry e;
    varied_entry(&e, 5, data);
    e.change_type = (sp_change_type)200;
    reference_entry(&sb, &e, 0);
    sp_wr_fixed(&wr, &pk, buf, 71000);
    assert_int_equal(sp_enc_entry_wire(&pk, &e, 0), 0);
    assert_int_equal(wr.len, sb.size);
    assert_memory_equal(buf, sb.data, sb.size);
    assert_int_equal(sp_enc_entry_head_raw(head, &e), 0);
  }
  msgpack_sbuffer_destroy(&sb);
  free(data);
  free(buf);
}

static void test_entry_wire_without_origin_is_canonical(void **state) {
  uint8_t a[512], b[512];
  msgpack_packer pk;
  sp_wr wa, wb;
  sp_entry e = g_entries[1];

  (void)state;
  e.origin_seq = 99;
  sp_wr_fixed(&wa, &pk, a, sizeof(a));
  assert_int_equal(sp_enc_entry(&pk, &e), 0);
  sp_wr_fixed(&wb, &pk, b, sizeof(b));
  assert_int_equal(sp_enc_entry_wire(&pk, &e, 0), 0);
  assert_int_equal(wa.len, wb.len);
  assert_memory_equal(a, b, wa.len);
  /* With the origin: the same bytes, then the element, under 0x99. */
  sp_wr_fixed(&wb, &pk, b, sizeof(b));
  assert_int_equal(sp_enc_entry_wire(&pk, &e, 1), 0);
  assert_int_equal(wb.len, wa.len + 1);
  assert_int_equal(b[0], 0x99);
  assert_memory_equal(a + 1, b + 1, wa.len - 1);
  assert_int_equal(b[wa.len], 99);
}

/* A Propose streamed with sp_enc_propose_head, the entries and a patched
 * count is byte for byte the one sp_msg_encode writes. */
static void test_propose_streamed(void **state) {
  uint8_t streamed[4096], whole[4096];
  msgpack_packer pk;
  sp_wr wr;
  size_t count_off, i, nw;
  sp_msg m, samples[N_SAMPLES];
  uint64_t epochs[] = {0, 1, 200, UINT64_MAX};
  size_t k;

  (void)state;
  sample_messages(samples); /* fills g_proposed */
  for (k = 0; k < 4; ++k) {
    sp_wr_fixed(&wr, &pk, streamed + 4, sizeof(streamed) - 4);
    msg_init(&m, SP_MSG_PROPOSE);
    m.epoch = epochs[k];
    m.u.propose.entries = g_proposed;
    m.u.propose.entry_count = 2;
    assert_int_equal(sp_enc_propose_head(&pk, &m.library_id, m.epoch,
                                         &count_off), 0);
    assert_true(wr.len <= SP_ENC_PROPOSE_HEAD_MAX);
    for (i = 0; i < 2; ++i) {
      assert_int_equal(sp_enc_entry_wire(&pk, &g_proposed[i], 1), 0);
    }
    sp_enc_patch_count(streamed + 4 + count_off, 2);
    assert_int_equal(sp_msg_encode(&m, whole, sizeof(whole), &nw), 0);
    assert_int_equal(nw, wr.len + 4);
    assert_memory_equal(whole + 4, streamed + 4, wr.len);
    /* And its length is the head plus the entries, exactly. */
    assert_int_equal(nw - 4, wr.len);
    assert_int_equal(wr.len - count_off - SP_ENC_ENTRIES_HDR_LEN,
                     sp_enc_entry_len(&g_proposed[0], 1) +
                         sp_enc_entry_len(&g_proposed[1], 1));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refuses_bad_type_and_enums),
      cmocka_unit_test(test_refuses_bad_strings),
      cmocka_unit_test(test_refuses_bad_hashes),
      cmocka_unit_test(test_refuses_bad_entries),
      cmocka_unit_test(test_null_arguments),
      cmocka_unit_test(test_encoded_len_and_nobuf),
      cmocka_unit_test(test_frame_too_large),
      cmocka_unit_test(test_smallest_uint_forms),
      cmocka_unit_test(test_smallest_int_and_container_forms),
      cmocka_unit_test(test_error_code_forms),
      cmocka_unit_test(test_empty_response_uses_array32),
      cmocka_unit_test(test_reference_decoder),
      cmocka_unit_test(test_entry_len_exact),
      cmocka_unit_test(test_entry_direct_matches_msgpack),
      cmocka_unit_test(test_entry_wire_without_origin_is_canonical),
      cmocka_unit_test(test_propose_streamed),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
