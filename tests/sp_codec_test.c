/*
 * sp_codec_test.c: message encoding and decoding (sp_codec.c): round
 * trips at the edges, every decode error, forward compatibility, the test
 * vectors, and allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sp_buf.h"
#include "sp_codec_int.h"
#include "sp_mpack.h"
#include "sp_test_mem.h"

/* ---- comparing messages ---- */

static void expect_entry_eq(const sp_entry *a, const sp_entry *b) {
  assert_true(a->sequence == b->sequence);
  assert_memory_equal(&a->device_id, &b->device_id, sizeof(sp_uuid));
  assert_true(a->timestamp_ms == b->timestamp_ms);
  assert_int_equal(a->model_type_len, b->model_type_len);
  if (a->model_type_len) {
    assert_memory_equal(a->model_type, b->model_type, a->model_type_len);
  }
  assert_memory_equal(&a->record_id, &b->record_id, sizeof(sp_uuid));
  assert_int_equal(a->change_type, b->change_type);
  assert_true(a->version == b->version);
  assert_int_equal(a->data_len, b->data_len);
  if (a->data_len) {
    assert_memory_equal(a->data, b->data, a->data_len);
  }
  assert_true(a->origin_seq == b->origin_seq);
}

static void expect_result_eq(const sp_propose_result *a,
                             const sp_propose_result *b) {
  assert_true(a->origin_seq == b->origin_seq);
  assert_int_equal(a->code, b->code);
  assert_true(a->sequence == b->sequence);
  assert_int_equal(a->message_len, b->message_len);
  if (a->message_len) {
    assert_memory_equal(a->message, b->message, a->message_len);
  }
}

static void expect_claim_eq(int has_a, const sp_leader_claim *a, int has_b,
                            const sp_leader_claim *b) {
  assert_int_equal(has_a != 0, has_b != 0);
  if (has_a) {
    assert_true(a->epoch == b->epoch);
    assert_memory_equal(&a->leader, &b->leader, sizeof(sp_uuid));
    assert_memory_equal(a->signature, b->signature, SP_CLAIM_SIG_LEN);
  }
}

static void expect_msg_eq(const sp_msg *a, const sp_msg *b) {
  assert_int_equal(a->type, b->type);
  assert_memory_equal(&a->library_id, &b->library_id, sizeof(sp_uuid));
  assert_true(a->epoch == b->epoch);
  switch (a->type) {
  case SP_MSG_NEW_ENTRIES:
    assert_true(a->u.new_entries.from_sequence ==
                b->u.new_entries.from_sequence);
    assert_true(a->u.new_entries.to_sequence == b->u.new_entries.to_sequence);
    assert_true(a->u.new_entries.entry_count == b->u.new_entries.entry_count);
    break;
  case SP_MSG_FETCH_ENTRIES:
    assert_true(a->u.fetch_entries.since_sequence ==
                b->u.fetch_entries.since_sequence);
    assert_true(a->u.fetch_entries.limit == b->u.fetch_entries.limit);
    assert_int_equal(a->u.fetch_entries.since_hash_len,
                     b->u.fetch_entries.since_hash_len);
    assert_memory_equal(a->u.fetch_entries.since_hash,
                        b->u.fetch_entries.since_hash,
                        a->u.fetch_entries.since_hash_len);
    assert_int_equal(a->u.fetch_entries.has_features != 0,
                     b->u.fetch_entries.has_features != 0);
    assert_true(a->u.fetch_entries.features == b->u.fetch_entries.features);
    break;
  case SP_MSG_ENTRIES_RESPONSE: {
    const sp_msg_entries_response *x = &a->u.entries_response;
    const sp_msg_entries_response *y = &b->u.entries_response;
    size_t i;
    assert_true(x->since_sequence == y->since_sequence);
    assert_true(x->through_sequence == y->through_sequence);
    assert_int_equal(x->has_more != 0, y->has_more != 0);
    assert_true(x->leader_latest == y->leader_latest);
    assert_int_equal(x->last_hash_len, y->last_hash_len);
    assert_memory_equal(x->last_hash, y->last_hash, x->last_hash_len);
    assert_int_equal(x->entry_count, y->entry_count);
    for (i = 0; i < x->entry_count; ++i) {
      expect_entry_eq(&x->entries[i], &y->entries[i]);
    }
    break;
  }
  case SP_MSG_ACKNOWLEDGE:
    assert_true(a->u.acknowledge.up_to_sequence ==
                b->u.acknowledge.up_to_sequence);
    break;
  case SP_MSG_HEARTBEAT:
    assert_true(a->u.heartbeat.current_sequence ==
                b->u.heartbeat.current_sequence);
    assert_int_equal(a->u.heartbeat.role, b->u.heartbeat.role);
    assert_int_equal(a->u.heartbeat.has_features != 0,
                     b->u.heartbeat.has_features != 0);
    assert_true(a->u.heartbeat.features == b->u.heartbeat.features);
    assert_true(a->u.heartbeat.origin_high == b->u.heartbeat.origin_high);
    assert_true(a->u.heartbeat.max_frame == b->u.heartbeat.max_frame);
    expect_claim_eq(a->u.heartbeat.has_claim, &a->u.heartbeat.claim,
                    b->u.heartbeat.has_claim, &b->u.heartbeat.claim);
    break;
  case SP_MSG_SYNC_REQUIRED:
    assert_int_equal(a->u.sync_required.reason, b->u.sync_required.reason);
    assert_true(a->u.sync_required.leader_latest ==
                b->u.sync_required.leader_latest);
    assert_true(a->u.sync_required.leader_oldest ==
                b->u.sync_required.leader_oldest);
    assert_true(a->u.sync_required.follower_sequence ==
                b->u.sync_required.follower_sequence);
    break;
  case SP_MSG_ERROR:
    assert_int_equal(a->u.error.code, b->u.error.code);
    assert_int_equal(a->u.error.message_len, b->u.error.message_len);
    if (a->u.error.message_len) {
      assert_memory_equal(a->u.error.message, b->u.error.message,
                          a->u.error.message_len);
    }
    expect_claim_eq(a->u.error.has_claim, &a->u.error.claim,
                    b->u.error.has_claim, &b->u.error.claim);
    break;
  case SP_MSG_PROPOSE: {
    size_t i;
    assert_int_equal(a->u.propose.entry_count, b->u.propose.entry_count);
    for (i = 0; i < a->u.propose.entry_count; ++i) {
      expect_entry_eq(&a->u.propose.entries[i], &b->u.propose.entries[i]);
    }
    break;
  }
  case SP_MSG_PROPOSE_RESULT: {
    size_t i;
    assert_int_equal(a->u.propose_result.result_count,
                     b->u.propose_result.result_count);
    for (i = 0; i < a->u.propose_result.result_count; ++i) {
      expect_result_eq(&a->u.propose_result.results[i],
                       &b->u.propose_result.results[i]);
    }
    break;
  }
  case SP_MSG_SNAPSHOT_REQUEST:
    assert_int_equal(a->u.snapshot_request.id_len,
                     b->u.snapshot_request.id_len);
    assert_memory_equal(a->u.snapshot_request.id, b->u.snapshot_request.id,
                        a->u.snapshot_request.id_len);
    assert_true(a->u.snapshot_request.have_chunks ==
                b->u.snapshot_request.have_chunks);
    assert_true(a->u.snapshot_request.max_frame ==
                b->u.snapshot_request.max_frame);
    break;
  case SP_MSG_SNAPSHOT_MANIFEST: {
    const sp_msg_snapshot_manifest *x = &a->u.snapshot_manifest;
    const sp_msg_snapshot_manifest *y = &b->u.snapshot_manifest;
    assert_memory_equal(x->id, y->id, SP_SNAPSHOT_ID_LEN);
    assert_true(x->sequence == y->sequence);
    assert_memory_equal(x->hash_at, y->hash_at, SP_HASH_LEN);
    assert_true(x->snap_epoch == y->snap_epoch);
    assert_true(x->total_size == y->total_size);
    assert_int_equal(x->chunk_size, y->chunk_size);
    assert_int_equal(x->chunk_count, y->chunk_count);
    if (x->chunk_count) {
      assert_memory_equal(x->chunk_hashes, y->chunk_hashes,
                          x->chunk_count * SP_HASH_LEN);
    }
    break;
  }
  case SP_MSG_SNAPSHOT_FETCH:
    assert_memory_equal(a->u.snapshot_fetch.id, b->u.snapshot_fetch.id,
                        SP_SNAPSHOT_ID_LEN);
    assert_true(a->u.snapshot_fetch.first_chunk ==
                b->u.snapshot_fetch.first_chunk);
    assert_int_equal(a->u.snapshot_fetch.count, b->u.snapshot_fetch.count);
    break;
  case SP_MSG_SNAPSHOT_CHUNK:
    assert_memory_equal(a->u.snapshot_chunk.id, b->u.snapshot_chunk.id,
                        SP_SNAPSHOT_ID_LEN);
    assert_true(a->u.snapshot_chunk.index == b->u.snapshot_chunk.index);
    assert_int_equal(a->u.snapshot_chunk.data_len,
                     b->u.snapshot_chunk.data_len);
    if (a->u.snapshot_chunk.data_len) {
      assert_memory_equal(a->u.snapshot_chunk.data, b->u.snapshot_chunk.data,
                          a->u.snapshot_chunk.data_len);
    }
    break;
  default:
    fail();
  }
}

/* ---- building messages ---- */

static void fill_uuid(sp_uuid *u, uint8_t base) {
  size_t i;

  for (i = 0; i < 16; ++i) {
    u->bytes[i] = (uint8_t)(base + i);
  }
}

static void fill_bytes(uint8_t *p, uint8_t base, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    p[i] = (uint8_t)(base + i);
  }
}

static void msg_init(sp_msg *m, sp_msg_type type) {
  memset(m, 0, sizeof(*m));
  m->type = type;
  fill_uuid(&m->library_id, 0x10);
  m->epoch = 1;
}

static uint8_t g_payload[64];
static char g_model[SP_MAX_MODEL_TYPE_LEN + 1];
static char g_message[SP_MAX_ERROR_MESSAGE_LEN + 1];

static void entry_init(sp_entry *e, sp_seq seq) {
  memset(e, 0, sizeof(*e));
  e->sequence = seq;
  fill_uuid(&e->device_id, 0xa0);
  e->timestamp_ms = 1700000000000ull + seq;
  e->model_type = "tag";
  e->model_type_len = 3;
  fill_uuid(&e->record_id, (uint8_t)(0xb0 + seq));
  e->change_type = (sp_change_type)(seq % 4);
  e->version = (int64_t)seq - 5;
  e->data = g_payload;
  e->data_len = seq % sizeof(g_payload);
}

static sp_entry g_two[2], g_prop[2];
static sp_propose_result g_results[2];

/* Room for sample_messages' output. */
#define N_SAMPLES 16

/* One small valid message of each type (the prefix/type tests use these).
 * The Heartbeat and the Error carry their optional elements (the claim
 * included), so that every element of every message is known to the
 * decoder (the seed's 5-element forms have their own tests). */
static size_t sample_messages(sp_msg *out) {
  size_t n = 0;

  entry_init(&g_two[0], 3);
  entry_init(&g_two[1], 4);
  entry_init(&g_prop[0], 0);
  g_prop[0].origin_seq = 9;
  entry_init(&g_prop[1], 0);
  g_prop[1].origin_seq = 300;
  g_prop[1].model_type = "album";
  g_prop[1].model_type_len = 5;
  memset(g_results, 0, sizeof(g_results));
  g_results[0].origin_seq = 9;
  g_results[0].sequence = 70000;
  g_results[1].origin_seq = 300;
  g_results[1].code = SP_ERR_REFUSED;
  g_results[1].message = "no";
  g_results[1].message_len = 2;
  msg_init(&out[n], SP_MSG_NEW_ENTRIES);
  out[n].u.new_entries.from_sequence = 2;
  out[n].u.new_entries.to_sequence = 300;
  out[n++].u.new_entries.entry_count = 298;
  msg_init(&out[n], SP_MSG_FETCH_ENTRIES);
  out[n].u.fetch_entries.since_sequence = 77;
  out[n].u.fetch_entries.limit = 500;
  memset(out[n].u.fetch_entries.since_hash, 0x21, SP_HASH_LEN);
  out[n].u.fetch_entries.since_hash_len = SP_HASH_LEN;
  out[n].u.fetch_entries.has_features = 1;
  out[n++].u.fetch_entries.features = SP_FEATURE_WRITES;
  msg_init(&out[n], SP_MSG_ENTRIES_RESPONSE);
  out[n].u.entries_response.since_sequence = 2;
  out[n].u.entries_response.through_sequence = 5;
  out[n].u.entries_response.has_more = 1;
  out[n].u.entries_response.leader_latest = 9;
  memset(out[n].u.entries_response.last_hash, 0x4e, SP_HASH_LEN);
  out[n].u.entries_response.last_hash_len = SP_HASH_LEN;
  out[n].u.entries_response.entries = g_two;
  out[n++].u.entries_response.entry_count = 2;
  msg_init(&out[n], SP_MSG_ACKNOWLEDGE);
  out[n++].u.acknowledge.up_to_sequence = 128;
  msg_init(&out[n], SP_MSG_HEARTBEAT);
  out[n].u.heartbeat.current_sequence = 65536;
  out[n].u.heartbeat.has_features = 1;
  out[n].u.heartbeat.features = SP_FEATURE_WRITES;
  out[n].u.heartbeat.origin_high = 1000;
  out[n].u.heartbeat.max_frame = 65536;
  out[n].u.heartbeat.has_claim = 1;
  out[n].u.heartbeat.claim.epoch = 1;
  fill_uuid(&out[n].u.heartbeat.claim.leader, 0xa0);
  fill_bytes(out[n].u.heartbeat.claim.signature, 0x40, SP_CLAIM_SIG_LEN);
  out[n++].u.heartbeat.role = SP_ROLE_FOLLOWER;
  msg_init(&out[n], SP_MSG_SYNC_REQUIRED);
  out[n].u.sync_required.reason = SP_SYNC_DIVERGENCE;
  out[n].u.sync_required.leader_latest = 10;
  out[n].u.sync_required.leader_oldest = 2;
  out[n++].u.sync_required.follower_sequence = 11;
  msg_init(&out[n], SP_MSG_ERROR);
  out[n].u.error.code = -302;
  out[n].u.error.message = "not a member";
  out[n].u.error.message_len = 12;
  out[n].u.error.has_claim = 1;
  out[n].u.error.claim.epoch = 300;
  fill_uuid(&out[n].u.error.claim.leader, 0xa0);
  fill_bytes(out[n++].u.error.claim.signature, 0x80, SP_CLAIM_SIG_LEN);
  msg_init(&out[n], SP_MSG_PROPOSE);
  out[n].u.propose.entries = g_prop;
  out[n++].u.propose.entry_count = 2;
  msg_init(&out[n], SP_MSG_PROPOSE_RESULT);
  out[n].u.propose_result.results = g_results;
  out[n++].u.propose_result.result_count = 2;
  assert_true(n <= N_SAMPLES);
  return n;
}

/* Encodes `m` into a fresh frame; returns it and its length. */
static uint8_t *encode(const sp_msg *m, size_t *len) {
  size_t need = sp_msg_encoded_len(m), nw;
  uint8_t *buf;

  assert_true(need > SP_FRAME_HEADER_LEN);
  buf = malloc(need);
  assert_non_null(buf);
  assert_int_equal(sp_msg_encode(m, buf, need, &nw), 0);
  assert_int_equal(nw, need);
  *len = nw;
  return buf;
}

/* Decodes the body of a frame; returns the decoder's result code. */
static int decode_body(const uint8_t *body, size_t len, sp_msg *out) {
  sp_decoder *dec;
  int rv;

  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  rv = sp_decoder_decode(dec, body, len, out);
  sp_decoder_del(dec);
  return rv;
}

/* Encode, decode with `dec`, compare, and check pointers point into the
 * body (the decoder copies no string or payload). */
static void round_trip_with(sp_decoder *dec, const sp_msg *m) {
  size_t len, i;
  uint8_t *frame = encode(m, &len);
  const uint8_t *body = frame + SP_FRAME_HEADER_LEN, *end = frame + len;
  sp_msg got;

  assert_int_equal(sp_decoder_decode(dec, body, len - SP_FRAME_HEADER_LEN,
                                     &got),
                   0);
  expect_msg_eq(m, &got);
  if (got.type == SP_MSG_ENTRIES_RESPONSE) {
    for (i = 0; i < got.u.entries_response.entry_count; ++i) {
      const sp_entry *e = &got.u.entries_response.entries[i];
      assert_true((const uint8_t *)e->model_type >= body &&
                  (const uint8_t *)e->model_type + e->model_type_len <= end);
      assert_true(e->data >= body && e->data + e->data_len <= end);
    }
  } else if (got.type == SP_MSG_PROPOSE) {
    for (i = 0; i < got.u.propose.entry_count; ++i) {
      const sp_entry *e = &got.u.propose.entries[i];
      assert_true(e->data >= body && e->data + e->data_len <= end);
    }
  } else if (got.type == SP_MSG_PROPOSE_RESULT) {
    for (i = 0; i < got.u.propose_result.result_count; ++i) {
      const sp_propose_result *x = &got.u.propose_result.results[i];
      assert_true((const uint8_t *)x->message + x->message_len <= end);
    }
  } else if (got.type == SP_MSG_ERROR) {
    assert_true((const uint8_t *)got.u.error.message >= body &&
                (const uint8_t *)got.u.error.message +
                        got.u.error.message_len <= end);
  }
  free(frame);
}

static void round_trip(const sp_msg *m) {
  sp_decoder *dec;

  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  round_trip_with(dec, m);
  sp_decoder_del(dec);
}

static int setup(void **state) {
  (void)state;
  memset(g_payload, 0x5d, sizeof(g_payload));
  memset(g_model, 'm', sizeof(g_model));
  memset(g_message, 'e', sizeof(g_message));
  return 0;
}

/* ---- round trips ---- */

static const uint64_t u64_edges[] = {0, 1, 127, 128, 255, 256, 65535, 65536,
                                     UINT32_MAX, (uint64_t)UINT32_MAX + 1,
                                     UINT64_MAX - 1, UINT64_MAX};
#define N_EDGES (sizeof(u64_edges) / sizeof(u64_edges[0]))

static void test_round_trip_simple_messages(void **state) {
  size_t i;
  sp_msg m;

  (void)state;
  for (i = 0; i < N_EDGES; ++i) {
    uint64_t v = u64_edges[i], w = u64_edges[N_EDGES - 1 - i];

    msg_init(&m, SP_MSG_NEW_ENTRIES);
    m.epoch = v;
    m.u.new_entries.from_sequence = v;
    m.u.new_entries.to_sequence = w;
    m.u.new_entries.entry_count = v;
    round_trip(&m);

    msg_init(&m, SP_MSG_FETCH_ENTRIES);
    m.epoch = w;
    m.u.fetch_entries.since_sequence = v;
    m.u.fetch_entries.limit = w;
    m.u.fetch_entries.since_hash_len = (i % 2) ? SP_HASH_LEN : 0;
    memset(m.u.fetch_entries.since_hash, (int)i, SP_HASH_LEN);
    round_trip(&m);
    m.u.fetch_entries.has_features = 1;
    m.u.fetch_entries.features = w;
    round_trip(&m);

    msg_init(&m, SP_MSG_ACKNOWLEDGE);
    m.epoch = v;
    m.u.acknowledge.up_to_sequence = w;
    round_trip(&m);

    msg_init(&m, SP_MSG_HEARTBEAT);
    m.epoch = w;
    m.u.heartbeat.current_sequence = v;
    m.u.heartbeat.role = (i % 2) ? SP_ROLE_FOLLOWER : SP_ROLE_LEADER;
    round_trip(&m);

    msg_init(&m, SP_MSG_SYNC_REQUIRED);
    m.epoch = v;
    m.u.sync_required.reason = (sp_sync_reason)(1 + i % 4);
    m.u.sync_required.leader_latest = v;
    m.u.sync_required.leader_oldest = w;
    m.u.sync_required.follower_sequence = v ^ w;
    round_trip(&m);
  }
}

static void test_round_trip_error(void **state) {
  static const int32_t codes[] = {INT32_MIN, INT32_MIN + 1, -32769, -32768,
                                  -129, -128, -33, -32, -1, 0, 1, 127, 128,
                                  65535, 65536, INT32_MAX};
  static const char utf8[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  size_t i;
  sp_msg m;

  (void)state;
  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); ++i) {
    msg_init(&m, SP_MSG_ERROR);
    m.u.error.code = codes[i];
    m.u.error.message = i % 3 == 0 ? NULL : i % 3 == 1 ? g_message : utf8;
    m.u.error.message_len = i % 3 == 0   ? 0
                            : i % 3 == 1 ? SP_MAX_ERROR_MESSAGE_LEN - i
                                         : sizeof(utf8) - 1;
    round_trip(&m);
  }
  /* The largest message, and the largest short forms. */
  msg_init(&m, SP_MSG_ERROR);
  m.u.error.message = g_message;
  m.u.error.message_len = SP_MAX_ERROR_MESSAGE_LEN;
  round_trip(&m);
  m.u.error.message_len = 31;
  round_trip(&m);
  m.u.error.message_len = 255;
  round_trip(&m);
}

static void response_init(sp_msg *m, sp_seq since, sp_seq through,
                          const sp_entry *entries, size_t n) {
  msg_init(m, SP_MSG_ENTRIES_RESPONSE);
  m->u.entries_response.since_sequence = since;
  m->u.entries_response.through_sequence = through;
  m->u.entries_response.leader_latest = through;
  m->u.entries_response.entries = entries;
  m->u.entries_response.entry_count = n;
  if (n) {
    memset(m->u.entries_response.last_hash, 0x77, SP_HASH_LEN);
    m->u.entries_response.last_hash_len = SP_HASH_LEN;
  }
}

static void test_round_trip_response_edges(void **state) {
  sp_entry e[4];
  sp_msg m;
  uint8_t *big = malloc(1u << 20);

  (void)state;
  assert_non_null(big);
  memset(big, 0xb1, 1u << 20);

  /* Empty pages: no hash, and a hash (an empty page may carry one). */
  response_init(&m, 0, 0, NULL, 0);
  round_trip(&m);
  response_init(&m, UINT64_MAX, UINT64_MAX, NULL, 0);
  m.u.entries_response.has_more = 1;
  m.u.entries_response.last_hash_len = SP_HASH_LEN;
  round_trip(&m);

  /* Edge entries. */
  entry_init(&e[0], 1);
  e[0].timestamp_ms = 0;
  e[0].version = INT64_MIN;
  e[0].model_type = NULL;
  e[0].model_type_len = 0;
  e[0].data = NULL;
  e[0].data_len = 0;
  e[0].change_type = SP_CHANGE_INSERT;
  entry_init(&e[1], 2);
  e[1].version = INT64_MAX;
  e[1].model_type = g_model;
  e[1].model_type_len = SP_MAX_MODEL_TYPE_LEN;
  e[1].change_type = SP_CHANGE_BULK_INSERT;
  e[1].timestamp_ms = UINT64_MAX;
  entry_init(&e[2], 1000);
  e[2].data = big;
  e[2].data_len = 1u << 20;
  e[2].model_type = "r\xc3\xa9sum\xc3\xa9";
  e[2].model_type_len = 8;
  entry_init(&e[3], UINT64_MAX);
  e[3].version = 0;
  response_init(&m, 0, UINT64_MAX, e, 4);
  m.u.entries_response.has_more = 0;
  round_trip(&m);
  m.u.entries_response.has_more = 1;
  m.u.entries_response.leader_latest = 0;
  round_trip(&m);
  free(big);
}

static void test_round_trip_many_entries(void **state) {
  const size_t n = 10000;
  sp_entry *e = calloc(n, sizeof(*e));
  sp_decoder *dec;
  sp_msg m;
  size_t i;

  (void)state;
  assert_non_null(e);
  for (i = 0; i < n; ++i) {
    entry_init(&e[i], 100 + 3 * i); /* gaps are fine, order is not */
  }
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  response_init(&m, 99, 100 + 3 * n, e, n);
  round_trip_with(dec, &m);
  /* The same decoder then decodes a small page (its array is reused). */
  response_init(&m, 99, 200, e, 3);
  round_trip_with(dec, &m);
  response_init(&m, 99, 100 + 3 * n, e, n);
  round_trip_with(dec, &m);
  sp_decoder_del(dec);
  free(e);
}

/* ---- splicing bodies for the error tests ---- */

typedef struct fields {
  size_t hdr;      /* bytes of the array header */
  uint32_t n;      /* elements */
  size_t off[64];  /* offset of each element */
  size_t len[64];  /* its length */
} fields;

static void split(const uint8_t *p, size_t len, fields *f) {
  sp_mp mp;
  uint32_t i;

  sp_mp_init(&mp, p, len);
  assert_int_equal(sp_mp_array(&mp, &f->n), 0);
  assert_true(f->n <= 64);
  f->hdr = len - sp_mp_left(&mp);
  for (i = 0; i < f->n; ++i) {
    f->off[i] = len - sp_mp_left(&mp);
    assert_int_equal(sp_mp_skip(&mp), 0);
    f->len[i] = len - sp_mp_left(&mp) - f->off[i];
  }
}

/* A growable byte string. */
typedef struct bytes {
  uint8_t *p;
  size_t len;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
  uint8_t *q = realloc(b->p, b->len + n + 1);

  assert_non_null(q);
  b->p = q;
  if (n) {
    memcpy(b->p + b->len, src, n);
  }
  b->len += n;
}

static void put_array_hdr(bytes *b, uint32_t n) {
  uint8_t h[5];

  if (n < 16) {
    h[0] = (uint8_t)(0x90 | n);
    put(b, h, 1);
  } else {
    h[0] = 0xdd;
    h[1] = (uint8_t)(n >> 24);
    h[2] = (uint8_t)(n >> 16);
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
    put(b, h, 5);
  }
}

/* body with element `i` replaced by `rep` */
static bytes replace_field(const uint8_t *body, size_t len, uint32_t i,
                           const void *rep, size_t replen) {
  fields f;
  bytes b = {NULL, 0};

  split(body, len, &f);
  assert_true(i < f.n);
  put(&b, body, f.off[i]);
  put(&b, rep, replen);
  put(&b, body + f.off[i] + f.len[i], len - f.off[i] - f.len[i]);
  return b;
}

/* body keeping only its first `keep` elements (header rewritten) */
static bytes keep_fields(const uint8_t *body, size_t len, uint32_t keep) {
  fields f;
  bytes b = {NULL, 0};
  uint32_t i;

  split(body, len, &f);
  put_array_hdr(&b, keep);
  for (i = 0; i < keep && i < f.n; ++i) {
    put(&b, body + f.off[i], f.len[i]);
  }
  return b;
}

/* body with `extra` raw elements appended (header rewritten) */
static bytes add_fields(const uint8_t *body, size_t len, uint32_t nextra,
                        const void *extra, size_t extralen) {
  fields f;
  bytes b = {NULL, 0};

  split(body, len, &f);
  put_array_hdr(&b, f.n + nextra);
  put(&b, body + f.hdr, len - f.hdr);
  put(&b, extra, extralen);
  return b;
}

/* A one-entry EntriesResponse body and the location of its entry. */
typedef struct one_entry {
  uint8_t *frame;
  size_t len;
  const uint8_t *body;
  size_t body_len;
  size_t entry_off; /* within body */
  size_t entry_len;
} one_entry;

static sp_entry g_one;

static void one_entry_make(one_entry *o) {
  sp_msg m;
  fields f;

  entry_init(&g_one, 7);
  response_init(&m, 6, 7, &g_one, 1);
  o->frame = encode(&m, &o->len);
  o->body = o->frame + SP_FRAME_HEADER_LEN;
  o->body_len = o->len - SP_FRAME_HEADER_LEN;
  split(o->body, o->body_len, &f);
  /* element 4 is the entries array: a 5-byte array 32 header, one entry */
  assert_int_equal(o->body[f.off[4]], 0xdd);
  o->entry_off = f.off[4] + 5;
  o->entry_len = f.len[4] - 5;
}

/* The response body with its entry replaced by `entry` bytes. */
static bytes with_entry(const one_entry *o, const bytes *entry) {
  bytes b = {NULL, 0};

  put(&b, o->body, o->entry_off);
  put(&b, entry->p, entry->len);
  put(&b, o->body + o->entry_off + o->entry_len,
      o->body_len - o->entry_off - o->entry_len);
  return b;
}

static int decode_bytes(const bytes *b) {
  sp_msg m;
  /* An exact-size copy: ASan catches any read past the body. */
  uint8_t *copy = malloc(b->len ? b->len : 1);
  int rv;

  assert_non_null(copy);
  memcpy(copy, b->p, b->len);
  rv = decode_body(copy, b->len, &m);
  free(copy);
  return rv;
}

static void expect_decode(bytes b, int want) {
  int rv = decode_bytes(&b);

  if (rv != want) {
    print_error("decode gave %s, want %s\n", sp_err_name(rv),
                sp_err_name(want));
  }
  assert_int_equal(rv, want);
  free(b.p);
}

/* `o` with its entry replaced by `entry` (freed here) decodes to `want`. */
static void expect_entry(const one_entry *o, bytes entry, int want) {
  expect_decode(with_entry(o, &entry), want);
  free(entry.p);
}

/* ---- decode errors ---- */

static void test_every_prefix_truncated(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i, k;

  (void)state;
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *frame = encode(&msgs[i], &len);
    const uint8_t *body = frame + SP_FRAME_HEADER_LEN;
    size_t blen = len - SP_FRAME_HEADER_LEN;
    sp_msg m;

    for (k = 0; k < blen; ++k) {
      uint8_t *copy = malloc(k ? k : 1);
      int rv;
      assert_non_null(copy);
      memcpy(copy, body, k);
      rv = decode_body(copy, k, &m);
      if (rv != SP_ERR_TRUNCATED) {
        print_error("type %d prefix %zu: %s\n", msgs[i].type, k,
                    sp_err_name(rv));
      }
      assert_int_equal(rv, SP_ERR_TRUNCATED);
      free(copy);
    }
    assert_int_equal(decode_body(body, blen, &m), 0);
    free(frame);
  }
}

/* A value of a type no field accepts as `like`'s type. */
static size_t wrong_type_for(uint8_t like, uint8_t *out) {
  if (like <= 0x7f || like >= 0xe0 || (like >= 0xcc && like <= 0xd3)) {
    memcpy(out, "\xca\x00\x00\x00\x00", 5); /* float for an int */
    return 5;
  }
  if (like >= 0xc4 && like <= 0xc6) {
    memcpy(out, "\xa0", 1); /* str for a bin */
    return 1;
  }
  if ((like >= 0xa0 && like <= 0xbf) || (like >= 0xd9 && like <= 0xdb)) {
    memcpy(out, "\xc4\x00", 2); /* bin for a str */
    return 2;
  }
  if (like == 0xc2 || like == 0xc3) {
    out[0] = 0x00; /* int for a bool */
    return 1;
  }
  out[0] = 0x80; /* map for an array */
  return 1;
}

/* Each of the `nfields` fields of `o`'s entry, as nil and as a value of
 * a wrong type, is refused with WRONG_TYPE. */
static void expect_entry_fields_wrong_type(const one_entry *o,
                                           uint32_t nfields) {
  const uint8_t *eb = o->body + o->entry_off;
  fields f;
  uint32_t k;

  split(eb, o->entry_len, &f);
  assert_int_equal(f.n, nfields);
  for (k = 0; k < f.n; ++k) {
    uint8_t rep[8];
    size_t rl = wrong_type_for(eb[f.off[k]], rep);
    expect_entry(o, replace_field(eb, o->entry_len, k, "\xc0", 1),
                 SP_ERR_WRONG_TYPE);
    expect_entry(o, replace_field(eb, o->entry_len, k, rep, rl),
                 SP_ERR_WRONG_TYPE);
  }
}

/* Element `k` of `m` is its leadership claim. */
static int is_claim_field(const sp_msg *m, uint32_t k) {
  return (m->type == SP_MSG_HEARTBEAT && k == 8) ||
         (m->type == SP_MSG_ERROR && k == 5);
}

static void test_wrong_type_every_field(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;
  one_entry o;
  fields f;
  uint32_t k;

  (void)state;
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *frame = encode(&msgs[i], &len);
    const uint8_t *body = frame + SP_FRAME_HEADER_LEN;
    size_t blen = len - SP_FRAME_HEADER_LEN;

    split(body, blen, &f);
    for (k = 0; k < f.n; ++k) {
      uint8_t rep[8];
      size_t rl = wrong_type_for(body[f.off[k]], rep);
      /* A nil claim is no claim (the claim's own fields: below). */
      expect_decode(replace_field(body, blen, k, "\xc0", 1),
                    is_claim_field(&msgs[i], k) ? 0 : SP_ERR_WRONG_TYPE);
      expect_decode(replace_field(body, blen, k, rep, rl), SP_ERR_WRONG_TYPE);
    }
    free(frame);
  }
  /* Each field of an entry. */
  one_entry_make(&o);
  expect_entry_fields_wrong_type(&o, 8);
  /* The body itself must be an array; an entry too. */
  {
    bytes b = {NULL, 0};
    put(&b, "\x81\x01\x02", 3);
    expect_decode(b, SP_ERR_WRONG_TYPE);
    b.p = NULL;
    b.len = 0;
    put(&b, "\x01", 1);
    expect_decode(b, SP_ERR_WRONG_TYPE);
    b.p = NULL;
    b.len = 0;
    put(&b, "\x81\x01\x02", 3);
    expect_decode(with_entry(&o, &b), SP_ERR_WRONG_TYPE);
    free(b.p);
  }
  free(o.frame);
}

static void test_uuid_lengths(void **state) {
  static const uint8_t u15[] = {0xc4, 15, 1, 2, 3, 4, 5, 6, 7, 8,
                                9, 10, 11, 12, 13, 14, 15};
  static const uint8_t u17[] = {0xc4, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                10, 11, 12, 13, 14, 15, 16, 17};
  static const uint8_t u0[] = {0xc4, 0};
  static const uint8_t u16w[] = {0xc5, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8,
                                 9, 10, 11, 12, 13, 14, 15, 16};
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;
  one_entry o;

  (void)state;
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *frame = encode(&msgs[i], &len);
    const uint8_t *body = frame + SP_FRAME_HEADER_LEN;
    size_t blen = len - SP_FRAME_HEADER_LEN;

    expect_decode(replace_field(body, blen, 1, u15, sizeof(u15)),
                  SP_ERR_UUID_LENGTH);
    expect_decode(replace_field(body, blen, 1, u17, sizeof(u17)),
                  SP_ERR_UUID_LENGTH);
    expect_decode(replace_field(body, blen, 1, u0, sizeof(u0)),
                  SP_ERR_UUID_LENGTH);
    /* 16 bytes in a wider bin header is still a UUID. */
    expect_decode(replace_field(body, blen, 1, u16w, sizeof(u16w)), 0);
    free(frame);
  }
  one_entry_make(&o);
  for (i = 1; i <= 4; i += 3) { /* device_id, record_id */
    const uint8_t *eb = o.body + o.entry_off;
    bytes e1 = replace_field(eb, o.entry_len, (uint32_t)i, u15, sizeof(u15));
    bytes e2 = replace_field(eb, o.entry_len, (uint32_t)i, u17, sizeof(u17));
    expect_decode(with_entry(&o, &e1), SP_ERR_UUID_LENGTH);
    expect_decode(with_entry(&o, &e2), SP_ERR_UUID_LENGTH);
    free(e1.p);
    free(e2.p);
  }
  free(o.frame);
}

/* Body of the sample message of `type`, in a fresh frame. */
static uint8_t *sample_frame(sp_msg_type type, const uint8_t **body,
                             size_t *blen) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i, len;
  uint8_t *frame;

  for (i = 0; i < n && msgs[i].type != type; ++i) {
  }
  assert_true(i < n);
  frame = encode(&msgs[i], &len);
  *body = frame + SP_FRAME_HEADER_LEN;
  *blen = len - SP_FRAME_HEADER_LEN;
  return frame;
}

static void test_enum_ranges(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  one_entry o;
  const uint8_t *eb;

  (void)state;
  frame = sample_frame(SP_MSG_HEARTBEAT, &body, &blen);
  expect_decode(replace_field(body, blen, 4, "\x00", 1), 0);
  expect_decode(replace_field(body, blen, 4, "\x01", 1), 0);
  expect_decode(replace_field(body, blen, 4, "\x02", 1), SP_ERR_ENUM_RANGE);
  expect_decode(replace_field(body, blen, 4, "\x7f", 1), SP_ERR_ENUM_RANGE);
  expect_decode(replace_field(body, blen, 4, "\xcc\x01", 2), 0);
  expect_decode(replace_field(body, blen, 4, "\xcd\x01\x00", 3),
                SP_ERR_ENUM_RANGE);
  expect_decode(replace_field(body, blen, 4,
                              "\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 9),
                SP_ERR_ENUM_RANGE);
  free(frame);

  frame = sample_frame(SP_MSG_SYNC_REQUIRED, &body, &blen);
  expect_decode(replace_field(body, blen, 3, "\x00", 1), SP_ERR_ENUM_RANGE);
  expect_decode(replace_field(body, blen, 3, "\x01", 1), 0);
  expect_decode(replace_field(body, blen, 3, "\x04", 1), 0);
  expect_decode(replace_field(body, blen, 3, "\x05", 1), SP_ERR_ENUM_RANGE);
  expect_decode(replace_field(body, blen, 3, "\xce\x00\x01\x00\x01", 5),
                SP_ERR_ENUM_RANGE);
  free(frame);

  one_entry_make(&o);
  eb = o.body + o.entry_off;
  expect_entry(&o, replace_field(eb, o.entry_len, 5, "\x03", 1), 0);
  expect_entry(&o, replace_field(eb, o.entry_len, 5, "\x04", 1),
               SP_ERR_ENUM_RANGE);
  expect_entry(&o, replace_field(eb, o.entry_len, 5, "\xcc\xff", 2),
               SP_ERR_ENUM_RANGE);
  free(o.frame);
}

static void test_int_ranges(void **state) {
  static const uint8_t code_over[] = {0xce, 0x80, 0x00, 0x00, 0x00};
  static const uint8_t code_under[] = {0xd3, 0xff, 0xff, 0xff, 0xff,
                                       0x7f, 0xff, 0xff, 0xff};
  static const uint8_t code_max[] = {0xce, 0x7f, 0xff, 0xff, 0xff};
  static const uint8_t code_min[] = {0xd3, 0xff, 0xff, 0xff, 0xff,
                                     0x80, 0x00, 0x00, 0x00};
  static const uint8_t ver_over[] = {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0};
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  one_entry o;
  fields f;
  uint32_t k;

  (void)state;
  /* A negative number in every unsigned field of every message (the
   * entries array, hashes, strings, role and reason aside). */
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *fr = encode(&msgs[i], &len);
    const uint8_t *b = fr + SP_FRAME_HEADER_LEN;
    size_t bl = len - SP_FRAME_HEADER_LEN;

    split(b, bl, &f);
    for (k = 0; k < f.n; ++k) {
      uint8_t t = b[f.off[k]];
      int is_uint = t <= 0x7f || (t >= 0xcc && t <= 0xcf);
      if (!is_uint || (msgs[i].type == SP_MSG_ERROR && k == 3)) {
        continue;
      }
      expect_decode(replace_field(b, bl, k, "\xff", 1), SP_ERR_INT_RANGE);
      expect_decode(replace_field(b, bl, k, "\xd3\x80\0\0\0\0\0\0\0", 9),
                    SP_ERR_INT_RANGE);
    }
    free(fr);
  }
  frame = sample_frame(SP_MSG_ERROR, &body, &blen);
  expect_decode(replace_field(body, blen, 3, code_over, 5), SP_ERR_INT_RANGE);
  expect_decode(replace_field(body, blen, 3, code_under, 9),
                SP_ERR_INT_RANGE);
  expect_decode(replace_field(body, blen, 3, code_max, 5), 0);
  expect_decode(replace_field(body, blen, 3, code_min, 9), 0);
  free(frame);

  one_entry_make(&o);
  {
    const uint8_t *eb = o.body + o.entry_off;
    bytes e = replace_field(eb, o.entry_len, 6, ver_over, sizeof(ver_over));
    expect_decode(with_entry(&o, &e), SP_ERR_INT_RANGE);
    free(e.p);
    e = replace_field(eb, o.entry_len, 0, "\xe0", 1); /* sequence -32 */
    expect_decode(with_entry(&o, &e), SP_ERR_INT_RANGE);
    free(e.p);
    e = replace_field(eb, o.entry_len, 2, "\xd0\x80", 2); /* timestamp */
    expect_decode(with_entry(&o, &e), SP_ERR_INT_RANGE);
    free(e.p);
  }
  free(o.frame);
}

/* A str of `n` bytes of `c` with the smallest header. */
static bytes str_of(size_t n, char c) {
  bytes b = {NULL, 0};
  uint8_t h[3];
  char *s = malloc(n + 1);

  assert_non_null(s);
  memset(s, c, n);
  if (n < 32) {
    h[0] = (uint8_t)(0xa0 | n);
    put(&b, h, 1);
  } else if (n < 256) {
    h[0] = 0xd9;
    h[1] = (uint8_t)n;
    put(&b, h, 2);
  } else {
    h[0] = 0xda;
    h[1] = (uint8_t)(n >> 8);
    h[2] = (uint8_t)n;
    put(&b, h, 3);
  }
  put(&b, s, n);
  free(s);
  return b;
}

static void test_oversize_strings(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  one_entry o;
  bytes s, e;

  (void)state;
  frame = sample_frame(SP_MSG_ERROR, &body, &blen);
  s = str_of(SP_MAX_ERROR_MESSAGE_LEN, 'a');
  expect_decode(replace_field(body, blen, 4, s.p, s.len), 0);
  free(s.p);
  s = str_of(SP_MAX_ERROR_MESSAGE_LEN + 1, 'a');
  expect_decode(replace_field(body, blen, 4, s.p, s.len), SP_ERR_OVERSIZE);
  free(s.p);
  free(frame);

  one_entry_make(&o);
  s = str_of(SP_MAX_MODEL_TYPE_LEN, 'm');
  e = replace_field(o.body + o.entry_off, o.entry_len, 3, s.p, s.len);
  expect_decode(with_entry(&o, &e), 0);
  free(s.p);
  free(e.p);
  s = str_of(SP_MAX_MODEL_TYPE_LEN + 1, 'm');
  e = replace_field(o.body + o.entry_off, o.entry_len, 3, s.p, s.len);
  expect_decode(with_entry(&o, &e), SP_ERR_OVERSIZE);
  free(s.p);
  free(e.p);
  free(o.frame);
}

static void test_invalid_utf8(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  one_entry o;
  bytes e;

  (void)state;
  frame = sample_frame(SP_MSG_ERROR, &body, &blen);
  expect_decode(replace_field(body, blen, 4, "\xa2\xc3\x28", 3), SP_ERR_UTF8);
  expect_decode(replace_field(body, blen, 4, "\xa3\xed\xa0\x80", 4),
                SP_ERR_UTF8);
  expect_decode(replace_field(body, blen, 4, "\xa2\xc3\xa9", 3), 0);
  free(frame);
  one_entry_make(&o);
  e = replace_field(o.body + o.entry_off, o.entry_len, 3, "\xa2\xc0\x80", 3);
  expect_decode(with_entry(&o, &e), SP_ERR_UTF8);
  free(e.p);
  free(o.frame);
}

static void test_trailing_bytes(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;

  (void)state;
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *frame = encode(&msgs[i], &len);
    bytes b = {NULL, 0};

    put(&b, frame + 4, len - 4);
    put(&b, "\xc0", 1);
    expect_decode(b, SP_ERR_TRAILING_BYTES);
    b.p = NULL;
    b.len = 0;
    /* Two messages in one body is trailing bytes too. */
    put(&b, frame + 4, len - 4);
    put(&b, frame + 4, len - 4);
    expect_decode(b, SP_ERR_TRAILING_BYTES);
    free(frame);
  }
}

static void test_unknown_message(void **state) {
  static const struct {
    const char *b;
    size_t n;
  } cases[] = {
      {"\x91\x00", 2},
      {"\x91\x0e", 2}, /* 10..13 are the snapshot messages */
      {"\x91\x7f", 2},
      {"\x91\xcc\xff", 3},
      {"\x91\xcf\x00\x00\x01\x00\x00\x00\x00\x01", 10},
      /* a newer message with fields this decoder cannot know */
      {"\x93\x0e\xc4\x00\xc0", 5},
  };
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    bytes b = {NULL, 0};
    put(&b, cases[i].b, cases[i].n);
    expect_decode(b, SP_ERR_UNKNOWN_MESSAGE);
  }
}

static void test_reserved_byte(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  bytes b = {NULL, 0};

  (void)state;
  put(&b, "\xc1", 1);
  expect_decode(b, SP_ERR_MSGPACK);
  b.p = NULL;
  b.len = 0;
  put(&b, "\x94\xc1", 2);
  expect_decode(b, SP_ERR_MSGPACK);
  frame = sample_frame(SP_MSG_ACKNOWLEDGE, &body, &blen);
  expect_decode(replace_field(body, blen, 2, "\xc1", 1), SP_ERR_MSGPACK);
  /* In an extension element, deep inside. */
  expect_decode(add_fields(body, blen, 1, "\x92\x01\x91\xc1", 4),
                SP_ERR_MSGPACK);
  free(frame);
}

static void test_missing_fields(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;
  one_entry o;
  bytes b = {NULL, 0};
  uint32_t k;

  (void)state;
  put(&b, "\x90", 1);
  expect_decode(b, SP_ERR_MISSING_FIELD);
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *frame = encode(&msgs[i], &len);
    fields f;

    split(frame + 4, len - 4, &f);
    for (k = 1; k < f.n; ++k) {
      /* A Heartbeat without its optional elements 5 to 8, a
       * FetchEntries without its element 6, an Error without its claim
       * (element 5), is whole. */
      int want = (msgs[i].type == SP_MSG_HEARTBEAT && k >= 5) ||
                         (msgs[i].type == SP_MSG_FETCH_ENTRIES && k >= 6) ||
                         (msgs[i].type == SP_MSG_ERROR && k >= 5)
                     ? 0
                     : SP_ERR_MISSING_FIELD;
      expect_decode(keep_fields(frame + 4, len - 4, k), want);
    }
    free(frame);
  }
  one_entry_make(&o);
  for (k = 0; k < 8; ++k) {
    bytes e = keep_fields(o.body + o.entry_off, o.entry_len, k);
    expect_decode(with_entry(&o, &e), SP_ERR_MISSING_FIELD);
    free(e.p);
  }
  free(o.frame);
}

static void test_entry_order(void **state) {
  sp_entry e[3];
  sp_msg m;
  size_t len;
  uint8_t *frame;
  const uint8_t *body;
  fields f;

  (void)state;
  entry_init(&e[0], 5);
  entry_init(&e[1], 6);
  entry_init(&e[2], 9);
  response_init(&m, 4, 10, e, 3);
  frame = encode(&m, &len);
  body = frame + 4;
  split(body, len - 4, &f);
  /* Patch sequences in place (each is a fixint right after 0x98). */
  {
    static const struct {
      uint8_t s0, s1, s2, since, through;
      int want;
    } cases[] = {
        {5, 6, 9, 4, 10, 0},
        {5, 6, 9, 4, 9, 0},                   /* through = last */
        {5, 5, 9, 4, 10, SP_ERR_ENTRY_ORDER}, /* duplicate */
        {5, 9, 6, 4, 10, SP_ERR_ENTRY_ORDER}, /* out of order */
        {4, 6, 9, 4, 10, SP_ERR_ENTRY_ORDER}, /* not after since */
        {3, 6, 9, 4, 10, SP_ERR_ENTRY_ORDER}, /* before since */
        {5, 6, 11, 4, 10, SP_ERR_ENTRY_ORDER}, /* past through */
        {5, 6, 9, 4, 3, SP_ERR_ENTRY_ORDER},  /* through < since */
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
      bytes b = {NULL, 0};
      fields ef;
      put(&b, body, len - 4);
      b.p[f.off[3]] = cases[i].since;
      b.p[f.off[5]] = cases[i].through;
      /* entries: 0xdd + count, then each entry 0x98 <seq> ... */
      {
        size_t at = f.off[4] + 5, k;
        const uint8_t seqs[3] = {cases[i].s0, cases[i].s1, cases[i].s2};
        for (k = 0; k < 3; ++k) {
          split(b.p + at, len - 4 - at, &ef);
          b.p[at + ef.off[0]] = seqs[k];
          at += ef.off[7] + ef.len[7];
        }
      }
      expect_decode(b, cases[i].want);
    }
  }
  free(frame);

  /* An empty page with through < since. */
  response_init(&m, 4, 4, NULL, 0);
  frame = encode(&m, &len);
  split(frame + 4, len - 4, &f);
  expect_decode(replace_field(frame + 4, len - 4, 5, "\x03", 1),
                SP_ERR_ENTRY_ORDER);
  free(frame);
}

static void test_hash_lengths(void **state) {
  static const uint8_t h1[] = {0xc4, 1, 0};
  uint8_t h31[33], h33[35], h32w[35];
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;

  (void)state;
  memset(h31, 1, sizeof(h31));
  h31[0] = 0xc4;
  h31[1] = 31;
  memset(h33, 1, sizeof(h33));
  h33[0] = 0xc4;
  h33[1] = 33;
  memset(h32w, 1, sizeof(h32w));
  h32w[0] = 0xc5;
  h32w[1] = 0;
  h32w[2] = 32;
  frame = sample_frame(SP_MSG_FETCH_ENTRIES, &body, &blen);
  expect_decode(replace_field(body, blen, 5, h1, sizeof(h1)),
                SP_ERR_HASH_LENGTH);
  expect_decode(replace_field(body, blen, 5, h31, sizeof(h31)),
                SP_ERR_HASH_LENGTH);
  expect_decode(replace_field(body, blen, 5, h33, sizeof(h33)),
                SP_ERR_HASH_LENGTH);
  expect_decode(replace_field(body, blen, 5, h32w, sizeof(h32w)), 0);
  expect_decode(replace_field(body, blen, 5, "\xc4\x00", 2), 0);
  free(frame);
  frame = sample_frame(SP_MSG_ENTRIES_RESPONSE, &body, &blen);
  expect_decode(replace_field(body, blen, 8, h1, sizeof(h1)),
                SP_ERR_HASH_LENGTH);
  expect_decode(replace_field(body, blen, 8, h33, sizeof(h33)),
                SP_ERR_HASH_LENGTH);
  free(frame);
}

/* Wraps `inner` in `depth` one-element arrays. */
static bytes nested(size_t depth, const char *inner, size_t inner_len) {
  bytes b = {NULL, 0};
  uint8_t *hdrs = malloc(depth ? depth : 1);

  /* One put for all the headers: a realloc per byte is quadratic under
   * ASan, whose realloc always moves. */
  assert_non_null(hdrs);
  memset(hdrs, 0x91, depth);
  put(&b, hdrs, depth);
  put(&b, inner, inner_len);
  free(hdrs);
  return b;
}

static void test_nesting_in_extension(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  one_entry o;
  bytes x, e;

  (void)state;
  frame = sample_frame(SP_MSG_HEARTBEAT, &body, &blen);
  x = nested(SP_MP_MAX_DEPTH, "\xc0", 1);
  expect_decode(add_fields(body, blen, 1, x.p, x.len), 0);
  free(x.p);
  x = nested(SP_MP_MAX_DEPTH + 1, "\xc0", 1);
  expect_decode(add_fields(body, blen, 1, x.p, x.len), SP_ERR_NESTING);
  free(x.p);
  /* Far deeper than any stack would like: still a clean error. */
  x = nested(100000, "\xc0", 1);
  expect_decode(add_fields(body, blen, 1, x.p, x.len), SP_ERR_NESTING);
  free(x.p);
  free(frame);
  /* Same inside an entry. */
  one_entry_make(&o);
  /* (element 8 is origin_seq: the extension comes after it) */
  x.p = NULL;
  x.len = 0;
  put(&x, "\x00", 1);
  {
    bytes deep = nested(SP_MP_MAX_DEPTH + 1, "\xc0", 1);
    put(&x, deep.p, deep.len);
    free(deep.p);
  }
  e = add_fields(o.body + o.entry_off, o.entry_len, 2, x.p, x.len);
  expect_decode(with_entry(&o, &e), SP_ERR_NESTING);
  free(x.p);
  free(e.p);
  free(o.frame);
}

/* An allocator that records the largest request (sizes are what matter
 * here; sp_test_mem counts calls). */
typedef struct size_mem {
  sp_mem mem;
  long calls;
  size_t largest;
} size_mem;

static void note(size_mem *m, size_t n) {
  ++m->calls;
  if (n > m->largest) {
    m->largest = n;
  }
}

static void *sm_malloc(size_t n, void *ud) {
  note(ud, n);
  return malloc(n);
}

static void sm_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *sm_calloc(size_t k, size_t n, void *ud) {
  note(ud, k * n);
  return calloc(k, n);
}

static void *sm_realloc(void *p, size_t n, void *ud) {
  note(ud, n);
  return realloc(p, n);
}

static void size_mem_init(size_mem *m) {
  m->mem.user_data = m;
  m->mem.malloc = sm_malloc;
  m->mem.free = sm_free;
  m->mem.calloc = sm_calloc;
  m->mem.realloc = sm_realloc;
  m->calls = 0;
  m->largest = 0;
}

static void test_huge_counts_fail_fast(void **state) {
  /* 5 bytes declaring 2^28 elements. */
  static const uint8_t five[] = {0xdd, 0x10, 0x00, 0x00, 0x00};
  size_mem sm;
  sp_decoder *dec;
  sp_msg m;
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  fields f;
  long after_new;
  bytes b = {NULL, 0};

  (void)state;
  size_mem_init(&sm);
  assert_int_equal(sp_decoder_new(&dec, &sm.mem), 0);
  after_new = sm.calls;
  assert_int_equal(sp_decoder_decode(dec, five, sizeof(five), &m),
                   SP_ERR_TRUNCATED);
  assert_int_equal(sm.calls, after_new);

  /* A response whose entries array declares 2^28 entries and stops. */
  frame = sample_frame(SP_MSG_ENTRIES_RESPONSE, &body, &blen);
  split(body, blen, &f);
  put(&b, body, f.off[4]);
  put(&b, "\xdd\x10\x00\x00\x00", 5);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_TRUNCATED);
  assert_int_equal(sm.calls, after_new); /* nothing allocated */

  /* The same with the two real entries and the tail after it: the third
   * "entry" is the through_sequence integer.  Only room for what the
   * bytes could hold was allocated: a few entries, not 2^28. */
  put(&b, body + f.off[4] + 5, blen - f.off[4] - 5);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_WRONG_TYPE);
  assert_true(sm.largest <= 4 * sizeof(sp_entry));
  free(b.p);

  /* Extension elements declaring 2^32-1 elements fail without looping. */
  b = add_fields(body, blen, 1, "\xdd\xff\xff\xff\xff\xc0", 6);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_TRUNCATED);
  free(b.p);
  b = add_fields(body, blen, 1, "\xdf\xff\xff\xff\xff\xc0\xc0", 7);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_TRUNCATED);
  free(b.p);
  assert_int_equal(sp_decoder_decode(dec, body, blen, &m), 0);
  assert_true(sm.largest <= 4 * sizeof(sp_entry));
  sp_decoder_del(dec);
  free(frame);
}

static void test_decode_arguments(void **state) {
  static const uint8_t ack[] = {0x94, 0x04, 0xc4, 0x10, 0, 0, 0, 0, 0, 0,
                                0,    0,    0,    0,    0, 0, 0, 0, 0, 0,
                                0x01, 0x02};
  sp_decoder *dec;
  sp_msg m;

  (void)state;
  assert_int_equal(sp_decoder_new(NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  assert_int_equal(sp_decoder_decode(NULL, ack, sizeof(ack), &m),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_decoder_decode(dec, ack, sizeof(ack), NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_decoder_decode(dec, NULL, 3, &m),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_decoder_decode(dec, NULL, 0, &m), SP_ERR_TRUNCATED);
  assert_int_equal(sp_decoder_decode(dec, ack, 0, &m), SP_ERR_TRUNCATED);
  assert_int_equal(sp_decoder_decode(dec, ack, sizeof(ack), &m), 0);
  assert_int_equal(m.type, SP_MSG_ACKNOWLEDGE);
  assert_true(m.epoch == 1);
  assert_true(m.u.acknowledge.up_to_sequence == 2);
  sp_decoder_del(dec);
  sp_decoder_del(NULL);
}

/* ---- forward compatibility ---- */

/* Extra elements a newer peer might add: ints, strings, floats, nil,
 * nested maps and arrays, ext values of every size class. */
static const char k_extras[] =
    "\x2a"                                 /* 42 */
    "\xa5hello"                            /* "hello" */
    "\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18" /* 3.14159... */
    "\xc0"                                 /* nil */
    "\x82\xa1k\x93\x01\x92\x02\x03\x80\xa1z\xc3" /* {k:[1,[2,3],{}],z:true} */
    "\xd6\x05\x01\x02\x03\x04"             /* fixext4 */
    "\xc7\x03\x07\x01\x02\x03"             /* ext8 */
    "\xc8\x00\x01\x09\xff"                 /* ext16 */
    "\xc6\x00\x00\x00\x02\xbe\xef"         /* bin32 */
    "\xdc\x00\x01\xde\x00\x00";            /* array16 [map16 {}] */
#define K_NEXTRA 10

static void test_extra_trailing_elements(void **state) {
  sp_msg msgs[N_SAMPLES];
  size_t n = sample_messages(msgs), i;
  sp_decoder *dec;

  (void)state;
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  for (i = 0; i < n; ++i) {
    size_t len;
    uint8_t *frame = encode(&msgs[i], &len);
    bytes b = add_fields(frame + 4, len - 4, K_NEXTRA, k_extras,
                         sizeof(k_extras) - 1);
    sp_msg got;

    assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &got), 0);
    expect_msg_eq(&msgs[i], &got);
    free(b.p);
    /* One extra element and an array16 header: also fine. */
    b = add_fields(frame + 4, len - 4, 1, "\x91\x91\x90", 3);
    assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &got), 0);
    expect_msg_eq(&msgs[i], &got);
    free(b.p);
    free(frame);
  }
  sp_decoder_del(dec);
}

static void test_entries_with_extra_elements(void **state) {
  sp_entry e[3];
  sp_msg m, got;
  size_t len, k;
  uint8_t *frame;
  fields f;
  bytes b = {NULL, 0};
  sp_decoder *dec;

  (void)state;
  for (k = 0; k < 3; ++k) {
    entry_init(&e[k], 10 + k);
  }
  response_init(&m, 9, 12, e, 3);
  frame = encode(&m, &len);
  split(frame + 4, len - 4, &f);
  /* Rebuild the entries array with extra elements in each entry, and
   * extra elements after the message's known fields too. */
  put(&b, "\x9a", 1);
  put(&b, frame + 4 + f.hdr, f.off[4] - f.hdr);
  put(&b, "\x93", 1); /* a fixarray entries header is valid too */
  {
    const uint8_t *p = frame + 4 + f.off[4] + 5;
    size_t left = f.len[4] - 5;
    for (k = 0; k < 3; ++k) {
      fields ef;
      bytes x = {NULL, 0};
      split(p, left, &ef);
      x = add_fields(p, ef.off[7] + ef.len[7], (uint32_t)(k + 1) * 2,
                     "\x00\xa1x\x81\x01\x91\x02\xd4\x01\x02\xc0\xc3", 12);
      /* only the first (k+1)*2 extras are declared; trim the rest */
      {
        fields xf;
        split(x.p, x.len, &xf);
        x.len = xf.off[xf.n - 1] + xf.len[xf.n - 1];
      }
      put(&b, x.p, x.len);
      free(x.p);
      p += ef.off[7] + ef.len[7];
      left -= ef.off[7] + ef.len[7];
    }
    assert_int_equal(left, 0);
  }
  put(&b, frame + 4 + f.off[5], len - 4 - f.off[5]);
  put(&b, "\x81\xa3new\x92\xc4\x01\x00\xd5\x00\x00\x00", 13);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &got), 0);
  expect_msg_eq(&m, &got);
  sp_decoder_del(dec);
  free(b.p);
  free(frame);
}

/* ---- writes from every device: Heartbeat features, origin_seq,
 * Propose and ProposeResult ---- */

/* A decoder that outlives the call, for tests that read decoded entries
 * or results (they live in the decoder); freed by the group teardown. */
static sp_decoder *g_kept;

static int decode_kept(const bytes *b, sp_msg *out) {
  if (!g_kept) {
    assert_int_equal(sp_decoder_new(&g_kept, NULL), 0);
  }
  return sp_decoder_decode(g_kept, b->p, b->len, out);
}

static int teardown(void **state) {
  (void)state;
  sp_decoder_del(g_kept);
  g_kept = NULL;
  return 0;
}

static void test_round_trip_features_heartbeat(void **state) {
  size_t i, len;
  sp_msg m, got;
  uint8_t *frame;

  (void)state;
  for (i = 0; i < N_EDGES; ++i) {
    msg_init(&m, SP_MSG_HEARTBEAT);
    m.u.heartbeat.current_sequence = u64_edges[i];
    m.u.heartbeat.role = (i % 2) ? SP_ROLE_FOLLOWER : SP_ROLE_LEADER;
    m.u.heartbeat.has_features = 1;
    m.u.heartbeat.features = u64_edges[N_EDGES - 1 - i];
    m.u.heartbeat.origin_high = u64_edges[i];
    m.u.heartbeat.max_frame = u64_edges[N_EDGES - 1 - i];
    round_trip(&m);
  }
  /* has_features 0: the seed's 5 elements, whatever the other fields say. */
  msg_init(&m, SP_MSG_HEARTBEAT);
  m.u.heartbeat.current_sequence = 5;
  m.u.heartbeat.features = SP_FEATURE_WRITES;
  m.u.heartbeat.origin_high = 77;
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x95);
  assert_int_equal(decode_body(frame + 4, len - 4, &got), 0);
  assert_int_equal(got.u.heartbeat.has_features, 0);
  assert_true(got.u.heartbeat.features == 0);
  assert_true(got.u.heartbeat.origin_high == 0);
  free(frame);
  /* With them: 7 elements. */
  m.u.heartbeat.has_features = 1;
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x97);
  assert_int_equal(frame[len - 2], SP_FEATURE_WRITES);
  assert_int_equal(frame[len - 1], 77);
  free(frame);
  /* A frame maximum (a leader's): 8 elements, element 7 last. */
  m.u.heartbeat.max_frame = 100;
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x98);
  assert_int_equal(frame[len - 1], 100);
  assert_int_equal(decode_body(frame + 4, len - 4, &got), 0);
  assert_true(got.u.heartbeat.max_frame == 100);
  assert_true(got.u.heartbeat.origin_high == 77);
  free(frame);
  /* Never without the features, and 0 is not written. */
  m.u.heartbeat.has_features = 0;
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x95);
  free(frame);
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.max_frame = 0;
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x97);
  free(frame);
}

/* FetchEntries element 6: written only with has_features, read when
 * present; without it the seed's 6 elements, byte for byte. */
static void test_fetch_features(void **state) {
  const uint8_t *body;
  size_t blen, len;
  uint8_t *frame;
  sp_msg m, got;
  bytes b;

  (void)state;
  msg_init(&m, SP_MSG_FETCH_ENTRIES);
  m.u.fetch_entries.since_sequence = 9;
  m.u.fetch_entries.limit = 100;
  m.u.fetch_entries.features = SP_FEATURE_WRITES; /* ignored: no has_ */
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x96);
  assert_int_equal(decode_body(frame + 4, len - 4, &got), 0);
  assert_int_equal(got.u.fetch_entries.has_features, 0);
  assert_true(got.u.fetch_entries.features == 0);
  free(frame);
  m.u.fetch_entries.has_features = 1;
  frame = encode(&m, &len);
  assert_int_equal(frame[4], 0x97);
  assert_int_equal(frame[len - 1], SP_FEATURE_WRITES);
  assert_int_equal(decode_body(frame + 4, len - 4, &got), 0);
  assert_int_equal(got.u.fetch_entries.has_features, 1);
  assert_true(got.u.fetch_entries.features == SP_FEATURE_WRITES);
  free(frame);

  frame = sample_frame(SP_MSG_FETCH_ENTRIES, &body, &blen);
  /* The seed's form: no features. */
  b = keep_fields(body, blen, 6);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_int_equal(got.u.fetch_entries.has_features, 0);
  assert_true(got.u.fetch_entries.features == 0);
  free(b.p);
  /* Unknown bits are kept (the receiver masks them), 0 is "none". */
  expect_decode(replace_field(body, blen, 6, "\xcf\xff\xff\xff\xff\xff\xff"
                                             "\xff\xff", 9), 0);
  expect_decode(replace_field(body, blen, 6, "\x00", 1), 0);
  /* Extension space in the seed; now a uint and nothing else. */
  expect_decode(replace_field(body, blen, 6, "\xa1x", 2), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 6, "\xc0", 1), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 6, "\xc3", 1), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 6, "\x91\x01", 2),
                SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 6, "\xff", 1), SP_ERR_INT_RANGE);
  /* Elements after it are skipped. */
  b = add_fields(body, blen, 2, "\xc0\x81\x01\x02", 4);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_true(got.u.fetch_entries.features == SP_FEATURE_WRITES);
  free(b.p);
  free(frame);
}

static void test_heartbeat_optional_elements(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  sp_msg got;
  bytes b;

  (void)state;
  frame = sample_frame(SP_MSG_HEARTBEAT, &body, &blen);
  /* Element 5 alone: features, origin_high 0. */
  b = keep_fields(body, blen, 6);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_int_equal(got.u.heartbeat.has_features, 1);
  assert_true(got.u.heartbeat.features == SP_FEATURE_WRITES);
  assert_true(got.u.heartbeat.origin_high == 0);
  free(b.p);
  /* The seed's form: no features. */
  b = keep_fields(body, blen, 5);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_int_equal(got.u.heartbeat.has_features, 0);
  assert_true(got.u.heartbeat.features == 0);
  free(b.p);
  /* Unknown feature bits are kept: the receiver masks them. */
  expect_decode(replace_field(body, blen, 5, "\xcf\xff\xff\xff\xff\xff\xff"
                                             "\xff\xff", 9), 0);
  /* Element 5 and 6 were extension space in the seed; now they are
   * uints and nothing else. */
  expect_decode(replace_field(body, blen, 5, "\xa1x", 2), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 5, "\x80", 1), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 5, "\xc3", 1), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 5, "\xff", 1), SP_ERR_INT_RANGE);
  expect_decode(replace_field(body, blen, 6, "\xc0", 1), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 6, "\xd0\x80", 2),
                SP_ERR_INT_RANGE);
  /* Element 7, the frame maximum (the sample has it): a uint when
   * present; absent, 0. */
  assert_int_equal(decode_body(body, blen, &got), 0);
  assert_true(got.u.heartbeat.max_frame == 65536);
  b = keep_fields(body, blen, 7);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_true(got.u.heartbeat.max_frame == 0);
  assert_true(got.u.heartbeat.origin_high == 1000);
  free(b.p);
  expect_decode(replace_field(body, blen, 7, "\xc0", 1), SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(body, blen, 7, "\xff", 1), SP_ERR_INT_RANGE);
  /* Extension elements after them are skipped. */
  expect_decode(add_fields(body, blen, 2, "\xc0\x81\x01\x02", 4), 0);
  free(frame);
}

/* Entries with origin_seq at every width. */
static void origin_entries(sp_entry *e, size_t n, sp_seq first_seq) {
  size_t i;

  for (i = 0; i < n; ++i) {
    uint64_t v = u64_edges[i % N_EDGES];
    entry_init(&e[i], first_seq ? first_seq + i : 0);
    /* origin_seq stops at 2^63-1 (what every store keeps). */
    e[i].origin_seq = v > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : v;
  }
}

static void test_round_trip_origin_entries(void **state) {
  sp_entry e[N_EDGES], zero[N_EDGES];
  sp_msg m, got;
  uint8_t *with, *without, *seed;
  size_t lw, lo, ls, i;
  sp_decoder *dec;

  (void)state;
  origin_entries(e, N_EDGES, 1);
  response_init(&m, 0, N_EDGES, e, N_EDGES);
  m.with_origin = 1;
  round_trip(&m); /* compares origin_seq too */
  with = encode(&m, &lw);
  /* Without with_origin (a peer that did not negotiate): the seed's
   * bytes, as if no entry carried an origin. */
  m.with_origin = 0;
  without = encode(&m, &lo);
  memcpy(zero, e, sizeof(e));
  for (i = 0; i < N_EDGES; ++i) {
    zero[i].origin_seq = 0;
  }
  m.u.entries_response.entries = zero;
  m.with_origin = 1;
  seed = encode(&m, &ls);
  assert_int_equal(lo, ls);
  assert_memory_equal(without, seed, ls);
  /* Element 8 costs exactly its uint per entry with an origin. */
  {
    size_t extra = 0;
    for (i = 0; i < N_EDGES; ++i) {
      uint64_t v = e[i].origin_seq;
      extra += v == 0 ? 0 : v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3
               : v <= UINT32_MAX ? 5 : 9;
    }
    assert_int_equal(lw, ls + extra);
  }
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  assert_int_equal(sp_decoder_decode(dec, without + 4, lo - 4, &got), 0);
  for (i = 0; i < N_EDGES; ++i) {
    assert_true(got.u.entries_response.entries[i].origin_seq == 0);
  }
  /* Decoding never sets with_origin: it says how to encode. */
  assert_int_equal(sp_decoder_decode(dec, with + 4, lw - 4, &got), 0);
  assert_int_equal(got.with_origin, 0);
  sp_decoder_del(dec);
  free(with);
  free(without);
  free(seed);
}

static void test_entry_origin_element(void **state) {
  one_entry o;
  const uint8_t *eb;
  bytes e;
  sp_msg got;

  (void)state;
  one_entry_make(&o);
  eb = o.body + o.entry_off;
  /* Present and 0: no origin, as when absent. */
  e = add_fields(eb, o.entry_len, 1, "\x00", 1);
  {
    bytes b = with_entry(&o, &e);
    assert_int_equal(decode_kept(&b, &got), 0);
    assert_true(got.u.entries_response.entries[0].origin_seq == 0);
    free(b.p);
  }
  free(e.p);
  e = add_fields(eb, o.entry_len, 2, "\xcd\x01\x00\xa1x", 5);
  {
    bytes b = with_entry(&o, &e);
    assert_int_equal(decode_kept(&b, &got), 0);
    assert_true(got.u.entries_response.entries[0].origin_seq == 256);
    free(b.p);
  }
  free(e.p);
  /* Any other type there is refused (it was extension space in the
   * seed, which never wrote anything there). */
  expect_entry(&o, add_fields(eb, o.entry_len, 1, "\xc0", 1),
               SP_ERR_WRONG_TYPE);
  expect_entry(&o, add_fields(eb, o.entry_len, 1, "\xa5hello", 6),
               SP_ERR_WRONG_TYPE);
  e = add_fields(eb, o.entry_len, 1, "\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18",
                 9);
  expect_decode(with_entry(&o, &e), SP_ERR_WRONG_TYPE);
  free(e.p);
  expect_entry(&o, add_fields(eb, o.entry_len, 1, "\xe0", 1), SP_ERR_INT_RANGE);
  /* 2^63-1 is the largest origin_seq; 2^63 is out of range. */
  e = add_fields(eb, o.entry_len, 1, "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff",
                 9);
  {
    bytes b = with_entry(&o, &e);
    assert_int_equal(decode_kept(&b, &got), 0);
    assert_true(got.u.entries_response.entries[0].origin_seq ==
                (uint64_t)INT64_MAX);
    free(b.p);
  }
  free(e.p);
  e = add_fields(eb, o.entry_len, 1, "\xcf\x80\x00\x00\x00\x00\x00\x00\x00",
                 9);
  expect_decode(with_entry(&o, &e), SP_ERR_INT_RANGE);
  free(e.p);
  free(o.frame);
}

static void test_round_trip_propose(void **state) {
  sp_entry *e = calloc(SP_MAX_PROPOSE_ENTRIES, sizeof(*e));
  sp_decoder *dec;
  sp_msg m;
  uint8_t *a, *b;
  size_t la, lb, i;

  (void)state;
  assert_non_null(e);
  origin_entries(e, SP_MAX_PROPOSE_ENTRIES, 0);
  for (i = 0; i < SP_MAX_PROPOSE_ENTRIES; ++i) {
    e[i].origin_seq = 1 + i;
  }
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  msg_init(&m, SP_MSG_PROPOSE);
  m.u.propose.entries = e;
  m.u.propose.entry_count = 1;
  round_trip_with(dec, &m);
  m.u.propose.entry_count = SP_MAX_PROPOSE_ENTRIES;
  round_trip_with(dec, &m);
  m.u.propose.entry_count = 2;
  round_trip_with(dec, &m);
  /* Origins of every width, and the decoder does not judge sequence,
   * device or order: the leader does. */
  origin_entries(e, N_EDGES, 7);
  m.u.propose.entry_count = N_EDGES;
  round_trip_with(dec, &m);
  /* with_origin is implied: a Propose always carries its origins. */
  a = encode(&m, &la);
  m.with_origin = 1;
  b = encode(&m, &lb);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  /* Array 32 for the entries, whatever their count. */
  assert_int_equal(a[4], 0x94);
  assert_int_equal(a[4 + 1 + 1 + 18 + 1], 0xdd);
  free(a);
  free(b);
  sp_decoder_del(dec);
  free(e);
}

static void test_round_trip_propose_result(void **state) {
  static const int32_t codes[] = {0, -1, -32, -33, -128, -129, -322, -328,
                                  -32768, -32769, INT32_MIN};
  static const char utf8[] = "caf\xc3\xa9 \xf0\x9f\x98\x80";
  sp_propose_result *r = calloc(SP_MAX_PROPOSE_ENTRIES, sizeof(*r));
  sp_decoder *dec;
  sp_msg m;
  size_t i;

  (void)state;
  assert_non_null(r);
  for (i = 0; i < SP_MAX_PROPOSE_ENTRIES; ++i) {
    r[i].origin_seq = u64_edges[i % N_EDGES];
    r[i].code = codes[i % (sizeof(codes) / sizeof(codes[0]))];
    r[i].sequence = r[i].code == 0 ? u64_edges[(i + 3) % N_EDGES] : 0;
    r[i].message = i % 3 == 0 ? NULL : i % 3 == 1 ? g_message : utf8;
    r[i].message_len = i % 3 == 0   ? 0
                       : i % 3 == 1 ? SP_MAX_ERROR_MESSAGE_LEN - i % 40
                                    : sizeof(utf8) - 1;
  }
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  msg_init(&m, SP_MSG_PROPOSE_RESULT);
  m.u.propose_result.results = r;
  m.u.propose_result.result_count = 1;
  round_trip_with(dec, &m);
  m.u.propose_result.result_count = SP_MAX_PROPOSE_ENTRIES;
  round_trip_with(dec, &m);
  m.u.propose_result.result_count = 40;
  round_trip_with(dec, &m);
  r[0].message = g_message;
  r[0].message_len = SP_MAX_ERROR_MESSAGE_LEN;
  round_trip_with(dec, &m);
  sp_decoder_del(dec);
  free(r);
}

/* A Propose or ProposeResult body (library 10..1f, epoch 1) whose array
 * declares `count` items and holds `copies` copies of `item`. */
static bytes batch_body(sp_msg_type type, uint32_t count, uint32_t copies,
                        const void *item, size_t item_len) {
  bytes b = {NULL, 0};
  uint8_t hdr[5] = {0xdd, (uint8_t)(count >> 24), (uint8_t)(count >> 16),
                    (uint8_t)(count >> 8), (uint8_t)count};
  uint8_t t = (uint8_t)type;
  uint32_t i;

  put(&b, "\x94", 1);
  put(&b, &t, 1);
  put(&b, "\xc4\x10\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c"
          "\x1d\x1e\x1f",
      18);
  put(&b, "\x01", 1);
  put(&b, hdr, 5);
  for (i = 0; i < copies; ++i) {
    put(&b, item, item_len);
  }
  return b;
}

/* The one-entry Propose of sample_messages' first entry, as a one_entry. */
static void one_propose_make(one_entry *o) {
  sp_msg m;
  fields f;

  entry_init(&g_one, 0);
  g_one.origin_seq = 5;
  msg_init(&m, SP_MSG_PROPOSE);
  m.u.propose.entries = &g_one;
  m.u.propose.entry_count = 1;
  o->frame = encode(&m, &o->len);
  o->body = o->frame + SP_FRAME_HEADER_LEN;
  o->body_len = o->len - SP_FRAME_HEADER_LEN;
  split(o->body, o->body_len, &f);
  assert_int_equal(o->body[f.off[3]], 0xdd);
  o->entry_off = f.off[3] + 5;
  o->entry_len = f.len[3] - 5;
}

/* The same for a one-result ProposeResult (refused, message "no"). */
static void one_result_make(one_entry *o) {
  static sp_propose_result r;
  sp_msg m;
  fields f;

  memset(&r, 0, sizeof(r));
  r.origin_seq = 5;
  r.code = SP_ERR_REFUSED;
  r.message = "no";
  r.message_len = 2;
  msg_init(&m, SP_MSG_PROPOSE_RESULT);
  m.u.propose_result.results = &r;
  m.u.propose_result.result_count = 1;
  o->frame = encode(&m, &o->len);
  o->body = o->frame + SP_FRAME_HEADER_LEN;
  o->body_len = o->len - SP_FRAME_HEADER_LEN;
  split(o->body, o->body_len, &f);
  assert_int_equal(o->body[f.off[3]], 0xdd);
  o->entry_off = f.off[3] + 5;
  o->entry_len = f.len[3] - 5;
}

static void test_propose_decode_errors(void **state) {
  one_entry o;
  const uint8_t *eb;
  bytes e;
  uint32_t k;
  sp_msg got;

  (void)state;
  one_propose_make(&o);
  eb = o.body + o.entry_off;
  /* Every element of a proposed entry, origin_seq included. */
  expect_entry_fields_wrong_type(&o, 9);
  expect_entry(&o, replace_field(eb, o.entry_len, 8, "\xff", 1),
               SP_ERR_INT_RANGE);
  /* Fewer than 8 elements: missing; 8 (no origin) decodes with origin 0
   * (the leader refuses it: SP_ERR_BAD_PROPOSAL). */
  for (k = 0; k < 8; ++k) {
    expect_entry(&o, keep_fields(eb, o.entry_len, k), SP_ERR_MISSING_FIELD);
  }
  e = keep_fields(eb, o.entry_len, 8);
  {
    bytes b = with_entry(&o, &e);
    assert_int_equal(decode_kept(&b, &got), 0);
    assert_true(got.u.propose.entries[0].origin_seq == 0);
    free(b.p);
  }
  free(e.p);
  /* Over-long model_type, bad UTF-8 in it, a short UUID. */
  {
    bytes s = str_of(SP_MAX_MODEL_TYPE_LEN + 1, 'm');
    expect_entry(&o, replace_field(eb, o.entry_len, 3, s.p, s.len),
                 SP_ERR_OVERSIZE);
    free(s.p);
  }
  expect_entry(&o, replace_field(eb, o.entry_len, 3, "\xa2\xc3\x28", 3),
               SP_ERR_UTF8);
  expect_entry(&o, replace_field(eb, o.entry_len, 1, "\xc4\x01\x00", 3),
               SP_ERR_UUID_LENGTH);
  /* Extension elements after origin_seq are skipped. */
  expect_entry(&o, add_fields(eb, o.entry_len, 2, "\xc0\x91\x80", 3), 0);
  /* An entries array that is not an array, empty, or too long. */
  expect_decode(replace_field(o.body, o.body_len, 3, "\x80", 1),
                SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(o.body, o.body_len, 3, "\x90", 1),
                SP_ERR_MISSING_FIELD);
  expect_decode(replace_field(o.body, o.body_len, 3, "\xdd\0\0\0\0", 5),
                SP_ERR_MISSING_FIELD);
  expect_decode(batch_body(SP_MSG_PROPOSE, SP_MAX_PROPOSE_ENTRIES + 1,
                           SP_MAX_PROPOSE_ENTRIES + 1, eb, o.entry_len),
                SP_ERR_OVERSIZE);
  /* The count is judged before any entry: a lying count costs nothing. */
  expect_decode(batch_body(SP_MSG_PROPOSE, UINT32_MAX, 0, NULL, 0),
                SP_ERR_OVERSIZE);
  expect_decode(batch_body(SP_MSG_PROPOSE, 3, 2, eb, o.entry_len),
                SP_ERR_TRUNCATED);
  {
    bytes b = batch_body(SP_MSG_PROPOSE, SP_MAX_PROPOSE_ENTRIES,
                         SP_MAX_PROPOSE_ENTRIES, eb, o.entry_len);
    assert_int_equal(decode_kept(&b, &got), 0);
    assert_int_equal(got.u.propose.entry_count, SP_MAX_PROPOSE_ENTRIES);
    free(b.p);
  }
  /* Short bodies. */
  expect_decode(keep_fields(o.body, o.body_len, 3), SP_ERR_MISSING_FIELD);
  expect_decode(add_fields(o.body, o.body_len, 1, "\x2a", 1), 0);
  free(o.frame);
}

static void test_propose_result_decode_errors(void **state) {
  one_entry o;
  const uint8_t *rb;
  uint32_t k;
  bytes r, s;
  sp_msg got;

  (void)state;
  one_result_make(&o);
  rb = o.body + o.entry_off;
  expect_entry_fields_wrong_type(&o, 4);
  for (k = 0; k < 4; ++k) {
    expect_entry(&o, keep_fields(rb, o.entry_len, k), SP_ERR_MISSING_FIELD);
  }
  /* A result must be an array. */
  r.p = NULL;
  r.len = 0;
  put(&r, "\x81\x01\x02", 3);
  expect_decode(with_entry(&o, &r), SP_ERR_WRONG_TYPE);
  free(r.p);
  /* origin_seq and sequence: uints. */
  expect_entry(&o, replace_field(rb, o.entry_len, 0, "\xff", 1),
               SP_ERR_INT_RANGE);
  expect_entry(&o, replace_field(rb, o.entry_len, 2, "\xd0\x80", 2),
               SP_ERR_INT_RANGE);
  /* code: 0 or negative, in int32. */
  expect_entry(&o, replace_field(rb, o.entry_len, 1, "\x01", 1),
               SP_ERR_INT_RANGE);
  expect_entry(&o, replace_field(rb, o.entry_len, 1, "\xce\x80\x00\x00\x00", 5),
               SP_ERR_INT_RANGE);
  r = replace_field(rb, o.entry_len, 1, "\xd3\xff\xff\xff\xff\x7f\xff\xff\xff",
                    9);
  expect_decode(with_entry(&o, &r), SP_ERR_INT_RANGE);
  free(r.p);
  r = replace_field(rb, o.entry_len, 1, "\xd3\xff\xff\xff\xff\x80\x00\x00\x00",
                    9);
  expect_decode(with_entry(&o, &r), 0);
  free(r.p);
  r = replace_field(rb, o.entry_len, 1, "\xd0\x00", 2); /* 0, as int 8 */
  expect_decode(with_entry(&o, &r), 0);
  free(r.p);
  /* message: as the Error frame's. */
  s = str_of(SP_MAX_ERROR_MESSAGE_LEN, 'a');
  expect_entry(&o, replace_field(rb, o.entry_len, 3, s.p, s.len), 0);
  free(s.p);
  s = str_of(SP_MAX_ERROR_MESSAGE_LEN + 1, 'a');
  expect_entry(&o, replace_field(rb, o.entry_len, 3, s.p, s.len),
               SP_ERR_OVERSIZE);
  free(s.p);
  expect_entry(&o, replace_field(rb, o.entry_len, 3, "\xa2\xc3\x28", 3),
               SP_ERR_UTF8);
  expect_entry(&o, replace_field(rb, o.entry_len, 3, "\xa3\xed\xa0\x80", 4),
               SP_ERR_UTF8);
  /* Extension elements in a result are skipped. */
  r = add_fields(rb, o.entry_len, 2, "\xc0\x81\xa1k\x90", 5);
  {
    bytes b = with_entry(&o, &r);
    assert_int_equal(decode_kept(&b, &got), 0);
    assert_int_equal(got.u.propose_result.results[0].code, SP_ERR_REFUSED);
    assert_int_equal(got.u.propose_result.results[0].message_len, 2);
    free(b.p);
  }
  free(r.p);
  /* The results array: an array, 1 .. SP_MAX_PROPOSE_ENTRIES. */
  expect_decode(replace_field(o.body, o.body_len, 3, "\xc4\x00", 2),
                SP_ERR_WRONG_TYPE);
  expect_decode(replace_field(o.body, o.body_len, 3, "\x90", 1),
                SP_ERR_MISSING_FIELD);
  expect_decode(batch_body(SP_MSG_PROPOSE_RESULT, SP_MAX_PROPOSE_ENTRIES + 1,
                           SP_MAX_PROPOSE_ENTRIES + 1, rb, o.entry_len),
                SP_ERR_OVERSIZE);
  expect_decode(batch_body(SP_MSG_PROPOSE_RESULT, UINT32_MAX, 0, NULL, 0),
                SP_ERR_OVERSIZE);
  expect_decode(batch_body(SP_MSG_PROPOSE_RESULT, SP_MAX_PROPOSE_ENTRIES,
                           SP_MAX_PROPOSE_ENTRIES, rb, o.entry_len),
                0);
  /* Fewer results than declared: truncated. */
  expect_decode(batch_body(SP_MSG_PROPOSE_RESULT, 3, 2, rb, o.entry_len),
                SP_ERR_TRUNCATED);
  free(o.frame);
}

static void test_batch_counts_allocate_by_bytes(void **state) {
  size_mem sm;
  sp_decoder *dec;
  sp_msg m;
  bytes b;
  long after_new;

  (void)state;
  size_mem_init(&sm);
  assert_int_equal(sp_decoder_new(&dec, &sm.mem), 0);
  after_new = sm.calls;
  /* The largest counts with no bytes behind them: nothing allocated. */
  b = batch_body(SP_MSG_PROPOSE, SP_MAX_PROPOSE_ENTRIES, 0, NULL, 0);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_TRUNCATED);
  free(b.p);
  b = batch_body(SP_MSG_PROPOSE_RESULT, SP_MAX_PROPOSE_ENTRIES, 0, NULL, 0);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_TRUNCATED);
  free(b.p);
  assert_int_equal(sm.calls, after_new);
  /* Ten bytes of results: at most two results' room. */
  b = batch_body(SP_MSG_PROPOSE_RESULT, SP_MAX_PROPOSE_ENTRIES, 1,
                 "\x94\x01\x00\x01\xa0\x94\x02\x00\x02\xa0", 10);
  assert_int_equal(sp_decoder_decode(dec, b.p, b.len, &m), SP_ERR_TRUNCATED);
  assert_true(sm.largest <= 2 * sizeof(sp_propose_result));
  free(b.p);
  sp_decoder_del(dec);
}

static void test_encoder_refuses_bad_batches(void **state) {
  sp_entry e[2];
  sp_propose_result r[2];
  sp_msg m;
  uint8_t buf[512];
  size_t nw;

  (void)state;
  entry_init(&e[0], 0);
  e[0].origin_seq = 1;
  entry_init(&e[1], 0);
  e[1].origin_seq = 2;
  msg_init(&m, SP_MSG_PROPOSE);
  m.u.propose.entries = e;
  m.u.propose.entry_count = 2;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw), 0);
  m.u.propose.entry_count = 0;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw),
                   SP_ERR_INVALID_ARGUMENT);
  m.u.propose.entry_count = SP_MAX_PROPOSE_ENTRIES + 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.propose.entry_count = 2;
  m.u.propose.entries = NULL;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.propose.entries = e;
  e[1].change_type = (sp_change_type)4;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  e[1].change_type = SP_CHANGE_INSERT;
  e[1].model_type = "\xc3\x28";
  e[1].model_type_len = 2;
  assert_int_equal(sp_msg_encoded_len(&m), 0);

  memset(r, 0, sizeof(r));
  r[0].origin_seq = 1;
  r[0].sequence = 4;
  r[1].origin_seq = 2;
  r[1].code = SP_ERR_READ_ONLY;
  msg_init(&m, SP_MSG_PROPOSE_RESULT);
  m.u.propose_result.results = r;
  m.u.propose_result.result_count = 2;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &nw), 0);
  m.u.propose_result.result_count = 0;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.propose_result.result_count = SP_MAX_PROPOSE_ENTRIES + 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.propose_result.result_count = 2;
  m.u.propose_result.results = NULL;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.propose_result.results = r;
  r[1].code = 1; /* a result is appended (0) or refused (< 0) */
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  r[1].code = SP_ERR_REFUSED;
  r[1].message_len = 3; /* NULL message */
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  r[1].message = g_message;
  r[1].message_len = SP_MAX_ERROR_MESSAGE_LEN + 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  r[1].message = "\xed\xa0\x80";
  r[1].message_len = 3;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  r[1].message = "ok";
  r[1].message_len = 2;
  assert_true(sp_msg_encoded_len(&m) > 0);
}

typedef struct batch_fail_arg {
  const bytes *bodies;
  const sp_msg *want;
  size_t n;
} batch_fail_arg;

static int decode_batches_under_failure(const sp_mem *mem, void *arg) {
  const batch_fail_arg *a = arg;
  sp_decoder *dec;
  sp_msg got;
  size_t i;
  int rv;

  rv = sp_decoder_new(&dec, mem);
  if (rv != 0) {
    return rv;
  }
  for (i = 0; i < a->n && rv == 0; ++i) {
    rv = sp_decoder_decode(dec, a->bodies[i].p, a->bodies[i].len, &got);
    if (rv == 0) {
      expect_msg_eq(&a->want[i], &got);
    }
  }
  sp_decoder_del(dec);
  return rv;
}

static void test_batch_allocation_failures(void **state) {
  sp_entry e[40];
  sp_propose_result r[40];
  sp_msg want[4];
  bytes bodies[4];
  batch_fail_arg a;
  size_t i, len;

  (void)state;
  memset(r, 0, sizeof(r));
  for (i = 0; i < 40; ++i) {
    entry_init(&e[i], 0);
    e[i].origin_seq = 1 + i;
    r[i].origin_seq = 1 + i;
    r[i].sequence = 100 + i;
  }
  /* small then big of each: both arrays grow, and again after. */
  for (i = 0; i < 4; ++i) {
    uint8_t *frame;
    msg_init(&want[i], i < 2 ? SP_MSG_PROPOSE : SP_MSG_PROPOSE_RESULT);
    if (i < 2) {
      want[i].u.propose.entries = e;
      want[i].u.propose.entry_count = i == 0 ? 2 : 40;
    } else {
      want[i].u.propose_result.results = r;
      want[i].u.propose_result.result_count = i == 2 ? 2 : 40;
    }
    frame = encode(&want[i], &len);
    bodies[i].p = frame;
    bodies[i].len = len;
  }
  for (i = 0; i < 4; ++i) {
    memmove(bodies[i].p, bodies[i].p + 4, bodies[i].len - 4);
    bodies[i].len -= 4;
  }
  a.bodies = bodies;
  a.want = want;
  a.n = 4;
  assert_true(sp_test_mem_fail_each(decode_batches_under_failure, &a, NULL) >=
              3);
  for (i = 0; i < 4; ++i) {
    free(bodies[i].p);
  }
}

/* ---- test vectors (tests/data/vectors.txt) ---- */

typedef struct vector {
  char name[64];
  uint8_t *bytes;
  size_t len;
} vector;

typedef struct vectors {
  vector v[64];
  size_t n;
} vectors;

static int hexval(int c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

/* Parses one "name: hex" line into `out`; 0 if it is not one. */
static int parse_vector_line(const char *line, vector *out) {
  const char *colon = strstr(line, ": ");
  const char *h;
  size_t n, i;

  if (!colon || (size_t)(colon - line) >= sizeof(out->name) ||
      colon == line) {
    return 0;
  }
  for (h = line; h < colon; ++h) {
    if (!((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') ||
          *h == '_' || *h == '+')) {
      return 0;
    }
  }
  h = colon + 2;
  n = strcspn(h, "\r\n");
  if (n == 0 || n % 2) {
    return 0;
  }
  for (i = 0; i < n; ++i) {
    if (hexval(h[i]) < 0) {
      return 0;
    }
  }
  memcpy(out->name, line, (size_t)(colon - line));
  out->name[colon - line] = '\0';
  out->len = n / 2;
  out->bytes = malloc(out->len);
  assert_non_null(out->bytes);
  for (i = 0; i < out->len; ++i) {
    out->bytes[i] = (uint8_t)(hexval(h[2 * i]) << 4 | hexval(h[2 * i + 1]));
  }
  return 1;
}

static char *data_path(const char *rel) {
  const char *dir = getenv("SP_TEST_DATA");
  char *p;

  if (!dir) {
    print_error("SP_TEST_DATA is not set (run through ctest)\n");
    fail();
  }
  p = malloc(strlen(dir) + strlen(rel) + 2);
  assert_non_null(p);
  sprintf(p, "%s/%s", dir, rel);
  return p;
}

/* Reads vectors from a file.  With `fence`, only lines inside ```vectors
 * blocks count (the markdown spec); every other line is ignored. */
static void load_vectors(const char *rel, int fence, vectors *vs) {
  char *path = data_path(rel);
  FILE *f = fopen(path, "r");
  static char line[8192];
  int inside = !fence;

  if (!f) {
    print_error("cannot open %s\n", path);
    fail();
  }
  vs->n = 0;
  while (fgets(line, sizeof(line), f)) {
    assert_non_null(strchr(line, '\n')); /* no line is cut short */
    if (fence && strncmp(line, "```", 3) == 0) {
      inside = !inside && strncmp(line, "```vectors", 10) == 0;
      continue;
    }
    if (!inside || line[0] == '#' || line[0] == '\n') {
      continue;
    }
    assert_true(vs->n < 64);
    if (!parse_vector_line(line, &vs->v[vs->n])) {
      print_error("%s: bad vector line: %s", rel, line);
      fail();
    }
    ++vs->n;
  }
  fclose(f);
  free(path);
}

static void free_vectors(vectors *vs) {
  size_t i;

  for (i = 0; i < vs->n; ++i) {
    free(vs->v[i].bytes);
  }
  vs->n = 0;
}

/* The fields each canonical vector must decode to (docs/protocol.md). */
static sp_entry v_e1, v_e3, v_one[1], v_two[2], v_prop[2];
static sp_propose_result v_results[2];
static const uint8_t v_data1[] = {1, 2, 3};
/* The snapshot vectors: a 5-byte snapshot 01..05 in chunks of 3. */
static const uint8_t v_snap_chunk1[] = {4, 5};
static uint8_t v_snap_hashes[2 * SP_HASH_LEN];
static const char v_snap_h0[] =
    "7cecc057809ec384f0a94fc17bd51e8dd0a81f6a32517cb1ee25dcf7daef0c76";
static const char v_snap_h1[] =
    "5d7ad4d5ee8dda43127d382fa1df6810c570821a0cb3979b369e677998af3474";
static const char v_link1[] =
    "4a00700360f94e1e99eb8c6a1975b01a2c7cdc664dc80f9e35f584b98aa88285";
static const char v_link13[] =
    "88c8cf46d9e6ce66ca80593a3afed3139da9fb9b7415f644fc051f70e467a1a4";
/* The claims of device a0..af for the vectors' library at epochs 7 and 2,
 * signed with the test key of seed 00..1f (sp_claim_test signs them). */
static const char v_claim_sig7[] =
    "b2d841d2764af2542de2659f4d424c6768fe8fe216242d460d3860263eaecaed"
    "263c183635a15bd603b7e147c05357deb4088e13d7d929fafe810ba8835d0d03";
static const char v_claim_sig2[] =
    "ce0d4ef65c60af6a9ee7c9cbf570fd9515ef3dc78534987b4620f81a43fc2dc7"
    "0ea1625790478bff1b86b76d567b69485bd4eb7d7858862958c5096163f49301";

static void hex_to(const char *hex, uint8_t *out) {
  size_t i, n = strlen(hex) / 2;

  for (i = 0; i < n; ++i) {
    out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
  }
}

static int expected_vector(const char *name, sp_msg *m) {
  memset(m, 0, sizeof(*m));
  fill_uuid(&m->library_id, 0x10);
  memset(&v_e1, 0, sizeof(v_e1));
  v_e1.sequence = 1;
  fill_uuid(&v_e1.device_id, 0xa0);
  v_e1.timestamp_ms = 1700000000000ull;
  v_e1.model_type = "tag";
  v_e1.model_type_len = 3;
  fill_uuid(&v_e1.record_id, 0xb0);
  v_e1.change_type = SP_CHANGE_INSERT;
  v_e1.version = 1;
  v_e1.data = v_data1;
  v_e1.data_len = 3;
  memset(&v_e3, 0, sizeof(v_e3));
  v_e3.sequence = 3;
  fill_uuid(&v_e3.device_id, 0xa0);
  v_e3.timestamp_ms = 1700000000250ull;
  v_e3.model_type = "location";
  v_e3.model_type_len = 8;
  fill_uuid(&v_e3.record_id, 0xc0);
  v_e3.change_type = SP_CHANGE_DELETE;
  v_e3.version = -1;
  v_one[0] = v_e1;
  v_two[0] = v_e1;
  v_two[1] = v_e3;

  if (strcmp(name, "new_entries") == 0) {
    m->type = SP_MSG_NEW_ENTRIES;
    m->epoch = 1;
    m->u.new_entries.from_sequence = 0;
    m->u.new_entries.to_sequence = 2;
    m->u.new_entries.entry_count = 2;
  } else if (strcmp(name, "fetch_entries") == 0) {
    m->type = SP_MSG_FETCH_ENTRIES;
    m->epoch = 1;
    m->u.fetch_entries.since_sequence = 0;
    m->u.fetch_entries.limit = 1000;
  } else if (strcmp(name, "fetch_entries_features") == 0) {
    m->type = SP_MSG_FETCH_ENTRIES;
    m->epoch = 1;
    m->u.fetch_entries.since_sequence = 0;
    m->u.fetch_entries.limit = 1000;
    m->u.fetch_entries.has_features = 1;
    m->u.fetch_entries.features = SP_FEATURE_WRITES;
  } else if (strcmp(name, "fetch_entries_hash") == 0) {
    m->type = SP_MSG_FETCH_ENTRIES;
    m->epoch = 1;
    m->u.fetch_entries.since_sequence = 1;
    m->u.fetch_entries.limit = 1000;
    hex_to(v_link1, m->u.fetch_entries.since_hash);
    m->u.fetch_entries.since_hash_len = SP_HASH_LEN;
  } else if (strcmp(name, "entries_response_empty") == 0) {
    m->type = SP_MSG_ENTRIES_RESPONSE;
    m->epoch = 1;
    m->u.entries_response.since_sequence = 2;
    m->u.entries_response.through_sequence = 2;
    m->u.entries_response.has_more = 0;
    m->u.entries_response.leader_latest = 2;
  } else if (strcmp(name, "entries_response_one") == 0) {
    m->type = SP_MSG_ENTRIES_RESPONSE;
    m->epoch = 1;
    m->u.entries_response.since_sequence = 0;
    m->u.entries_response.entries = v_one;
    m->u.entries_response.entry_count = 1;
    m->u.entries_response.through_sequence = 1;
    m->u.entries_response.has_more = 1;
    m->u.entries_response.leader_latest = 3;
    hex_to(v_link1, m->u.entries_response.last_hash);
    m->u.entries_response.last_hash_len = SP_HASH_LEN;
  } else if (strcmp(name, "entries_response_gap") == 0) {
    m->type = SP_MSG_ENTRIES_RESPONSE;
    m->epoch = 1;
    m->u.entries_response.since_sequence = 0;
    m->u.entries_response.entries = v_two;
    m->u.entries_response.entry_count = 2;
    m->u.entries_response.through_sequence = 3;
    m->u.entries_response.has_more = 0;
    m->u.entries_response.leader_latest = 3;
    hex_to(v_link13, m->u.entries_response.last_hash);
    m->u.entries_response.last_hash_len = SP_HASH_LEN;
  } else if (strcmp(name, "acknowledge") == 0) {
    m->type = SP_MSG_ACKNOWLEDGE;
    m->epoch = 1;
    m->u.acknowledge.up_to_sequence = 1;
  } else if (strcmp(name, "acknowledge_max") == 0) {
    m->type = SP_MSG_ACKNOWLEDGE;
    m->epoch = UINT64_MAX;
    m->u.acknowledge.up_to_sequence = UINT64_MAX;
  } else if (strcmp(name, "heartbeat") == 0) {
    m->type = SP_MSG_HEARTBEAT;
    m->epoch = 7;
    m->u.heartbeat.current_sequence = 300;
    m->u.heartbeat.role = SP_ROLE_FOLLOWER;
  } else if (strcmp(name, "sync_required") == 0) {
    m->type = SP_MSG_SYNC_REQUIRED;
    m->epoch = 2;
    m->u.sync_required.reason = SP_SYNC_BEHIND_RETENTION;
    m->u.sync_required.leader_latest = 5000;
    m->u.sync_required.leader_oldest = 4000;
    m->u.sync_required.follower_sequence = 12;
  } else if (strcmp(name, "error") == 0) {
    m->type = SP_MSG_ERROR;
    m->epoch = 0;
    m->u.error.code = -302;
    m->u.error.message = "not a member";
    m->u.error.message_len = 12;
  } else if (strcmp(name, "error_min") == 0) {
    m->type = SP_MSG_ERROR;
    m->epoch = 0;
    m->u.error.code = INT32_MIN;
  } else if (strcmp(name, "heartbeat_features") == 0 ||
             strcmp(name, "heartbeat_features_leader") == 0) {
    int leader = strcmp(name, "heartbeat_features_leader") == 0;
    m->type = SP_MSG_HEARTBEAT;
    m->epoch = 7;
    m->u.heartbeat.current_sequence = 300;
    m->u.heartbeat.role = leader ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
    m->u.heartbeat.has_features = 1;
    m->u.heartbeat.features = SP_FEATURE_WRITES;
    m->u.heartbeat.origin_high = leader ? 42 : 0;
    m->u.heartbeat.max_frame = leader ? SP_MAX_FRAME_DEFAULT : 0;
  } else if (strcmp(name, "heartbeat_claim") == 0) {
    m->type = SP_MSG_HEARTBEAT;
    m->epoch = 7;
    m->u.heartbeat.current_sequence = 300;
    m->u.heartbeat.role = SP_ROLE_FOLLOWER;
    m->u.heartbeat.has_features = 1;
    m->u.heartbeat.features =
        SP_FEATURE_WRITES | SP_FEATURE_SNAPSHOT | SP_FEATURE_CLAIMS;
    m->u.heartbeat.has_claim = 1;
    m->u.heartbeat.claim.epoch = 7;
    fill_uuid(&m->u.heartbeat.claim.leader, 0xa0);
    hex_to(v_claim_sig7, m->u.heartbeat.claim.signature);
  } else if (strcmp(name, "error_claim") == 0) {
    static const char text[] = "epoch 1 is fenced by 2";
    m->type = SP_MSG_ERROR;
    m->epoch = 2;
    m->u.error.code = SP_ERR_STALE_EPOCH;
    m->u.error.message = text;
    m->u.error.message_len = sizeof(text) - 1;
    m->u.error.has_claim = 1;
    m->u.error.claim.epoch = 2;
    fill_uuid(&m->u.error.claim.leader, 0xa0);
    hex_to(v_claim_sig2, m->u.error.claim.signature);
  } else if (strcmp(name, "entries_response_origin") == 0) {
    /* Entry 1 as submitted by its device under origin_seq 5: the same
     * chain link as without it. */
    v_one[0].origin_seq = 5;
    m->type = SP_MSG_ENTRIES_RESPONSE;
    m->epoch = 1;
    m->u.entries_response.since_sequence = 0;
    m->u.entries_response.entries = v_one;
    m->u.entries_response.entry_count = 1;
    m->u.entries_response.through_sequence = 1;
    m->u.entries_response.has_more = 0;
    m->u.entries_response.leader_latest = 1;
    hex_to(v_link1, m->u.entries_response.last_hash);
    m->u.entries_response.last_hash_len = SP_HASH_LEN;
  } else if (strcmp(name, "propose") == 0) {
    /* Entries 1 and 3, proposed (sequence 0) under origins 5 and 6. */
    v_prop[0] = v_e1;
    v_prop[0].sequence = 0;
    v_prop[0].origin_seq = 5;
    v_prop[1] = v_e3;
    v_prop[1].sequence = 0;
    v_prop[1].origin_seq = 6;
    m->type = SP_MSG_PROPOSE;
    m->epoch = 1;
    m->u.propose.entries = v_prop;
    m->u.propose.entry_count = 2;
  } else if (strcmp(name, "propose_result") == 0) {
    memset(v_results, 0, sizeof(v_results));
    v_results[0].origin_seq = 5;
    v_results[0].sequence = 4;
    v_results[1].origin_seq = 6;
    v_results[1].code = SP_ERR_REFUSED;
    v_results[1].message = "record is locked";
    v_results[1].message_len = 16;
    m->type = SP_MSG_PROPOSE_RESULT;
    m->epoch = 1;
    m->u.propose_result.results = v_results;
    m->u.propose_result.result_count = 2;
  } else if (strcmp(name, "snapshot_request") == 0) {
    m->type = SP_MSG_SNAPSHOT_REQUEST;
    m->epoch = 1;
  } else if (strcmp(name, "snapshot_request_resume") == 0) {
    m->type = SP_MSG_SNAPSHOT_REQUEST;
    m->epoch = 1;
    fill_bytes(m->u.snapshot_request.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_request.id_len = SP_SNAPSHOT_ID_LEN;
    m->u.snapshot_request.have_chunks = 4;
    m->u.snapshot_request.max_frame = SP_MAX_FRAME_DEFAULT;
  } else if (strcmp(name, "snapshot_manifest") == 0) {
    /* The state of the vector log at S = 3: hash_at is link(3), the
     * last_hash of entries_response_gap. */
    m->type = SP_MSG_SNAPSHOT_MANIFEST;
    m->epoch = 1;
    fill_bytes(m->u.snapshot_manifest.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_manifest.sequence = 3;
    hex_to(v_link13, m->u.snapshot_manifest.hash_at);
    m->u.snapshot_manifest.snap_epoch = 1;
    m->u.snapshot_manifest.total_size = 5;
    m->u.snapshot_manifest.chunk_size = 3;
    hex_to(v_snap_h0, v_snap_hashes);
    hex_to(v_snap_h1, v_snap_hashes + SP_HASH_LEN);
    m->u.snapshot_manifest.chunk_hashes = v_snap_hashes;
    m->u.snapshot_manifest.chunk_count = 2;
  } else if (strcmp(name, "snapshot_fetch") == 0) {
    m->type = SP_MSG_SNAPSHOT_FETCH;
    m->epoch = 1;
    fill_bytes(m->u.snapshot_fetch.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_fetch.first_chunk = 0;
    m->u.snapshot_fetch.count = 2;
  } else if (strcmp(name, "snapshot_chunk") == 0) {
    m->type = SP_MSG_SNAPSHOT_CHUNK;
    m->epoch = 1;
    fill_bytes(m->u.snapshot_chunk.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_chunk.index = 1;
    m->u.snapshot_chunk.data = v_snap_chunk1;
    m->u.snapshot_chunk.data_len = 2;
  } else {
    return 0;
  }
  return 1;
}

static const vector *find_vector(const vectors *vs, const char *name) {
  size_t i;

  for (i = 0; i < vs->n; ++i) {
    if (strcmp(vs->v[i].name, name) == 0) {
      return &vs->v[i];
    }
  }
  return NULL;
}

static void test_vectors(void **state) {
  vectors vs;
  size_t i, n_plain = 0, n_ext = 0;
  int seen_type[14] = {0};
  sp_decoder *dec;

  (void)state;
  load_vectors("vectors.txt", 0, &vs);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  for (i = 0; i < vs.n; ++i) {
    const vector *v = &vs.v[i];
    char base[64];
    char *plus;
    const vector *bv;
    sp_msg want, got;
    size_t nw, blen;
    uint8_t *out;

    strcpy(base, v->name);
    plus = strchr(base, '+');
    if (plus) {
      assert_string_equal(plus, "+ext");
      *plus = '\0';
    }
    if (!expected_vector(base, &want)) {
      print_error("vector %s has no expected fields in this test\n", base);
      fail();
    }
    bv = find_vector(&vs, base);
    assert_non_null(bv);
    /* The frame prefix is the body length. */
    assert_true(v->len > 4);
    blen = (size_t)v->bytes[0] << 24 | (size_t)v->bytes[1] << 16 |
           (size_t)v->bytes[2] << 8 | v->bytes[3];
    assert_int_equal(blen, v->len - 4);
    assert_int_equal(sp_decoder_decode(dec, v->bytes + 4, blen, &got), 0);
    expect_msg_eq(&want, &got);
    /* Re-encoding gives the canonical vector, byte for byte, and so
     * does encoding the documented fields (for a negotiated peer: with
     * origins, which only entries_response_origin has). */
    out = malloc(bv->len);
    assert_non_null(out);
    got.with_origin = 1;
    assert_int_equal(sp_msg_encoded_len(&got), bv->len);
    assert_int_equal(sp_msg_encode(&got, out, bv->len, &nw), 0);
    assert_int_equal(nw, bv->len);
    assert_memory_equal(out, bv->bytes, bv->len);
    want.with_origin = 1;
    memset(out, 0, bv->len);
    assert_int_equal(sp_msg_encode(&want, out, bv->len, &nw), 0);
    assert_int_equal(nw, bv->len);
    assert_memory_equal(out, bv->bytes, bv->len);
    free(out);
    if (plus) {
      ++n_ext;
      assert_memory_not_equal(v->bytes + 4, bv->bytes + 4,
                              bv->len - 4 < blen ? bv->len - 4 : blen);
    } else {
      ++n_plain;
      seen_type[want.type] = 1;
    }
  }
  /* One vector per message type at least, and the extended ones. */
  for (i = 1; i <= 13; ++i) {
    assert_true(seen_type[i]);
  }
  assert_non_null(find_vector(&vs, "heartbeat_features"));
  assert_non_null(find_vector(&vs, "fetch_entries_features"));
  assert_non_null(find_vector(&vs, "entries_response_origin"));
  assert_true(find_vector(&vs, "entries_response_empty") != NULL);
  assert_true(find_vector(&vs, "entries_response_one") != NULL);
  assert_true(find_vector(&vs, "entries_response_gap") != NULL);
  assert_true(n_ext >= 1);
  assert_true(n_plain >= 7);
  sp_decoder_del(dec);
  free_vectors(&vs);
}

/* To a peer that did not negotiate writes our bytes are the seed's, even
 * for entries that carry an origin and with feature values set aside. */
static void test_seed_bytes_without_negotiation(void **state) {
  static const char *const names[] = {"entries_response_one",
                                      "entries_response_gap", "heartbeat",
                                      "fetch_entries"};
  vectors vs;
  size_t i, nw;
  sp_msg m;
  uint8_t out[512];

  (void)state;
  load_vectors("vectors.txt", 0, &vs);
  for (i = 0; i < sizeof(names) / sizeof(names[0]); ++i) {
    const vector *v = find_vector(&vs, names[i]);
    assert_non_null(v);
    assert_true(expected_vector(names[i], &m));
    if (m.type == SP_MSG_HEARTBEAT) {
      /* Ignored without has_features. */
      m.u.heartbeat.features = SP_FEATURE_WRITES;
      m.u.heartbeat.origin_high = 9;
    } else if (m.type == SP_MSG_FETCH_ENTRIES) {
      m.u.fetch_entries.features = SP_FEATURE_WRITES;
    } else {
      v_one[0].origin_seq = 5;
      v_two[0].origin_seq = 5;
      v_two[1].origin_seq = 1ull << 40;
    }
    m.with_origin = 0;
    assert_int_equal(sp_msg_encode(&m, out, sizeof(out), &nw), 0);
    assert_int_equal(nw, v->len);
    assert_memory_equal(out, v->bytes, v->len);
  }
  free_vectors(&vs);
}

static void test_doc_vectors_match_data_file(void **state) {
  vectors file, doc;
  size_t i;

  (void)state;
  load_vectors("vectors.txt", 0, &file);
  load_vectors("../../docs/protocol.md", 1, &doc);
  assert_int_equal(doc.n, file.n);
  for (i = 0; i < file.n; ++i) {
    const vector *d = find_vector(&doc, file.v[i].name);
    if (!d) {
      print_error("vector %s is not in docs/protocol.md\n", file.v[i].name);
      fail();
    }
    assert_int_equal(d->len, file.v[i].len);
    assert_memory_equal(d->bytes, file.v[i].bytes, d->len);
  }
  free_vectors(&file);
  free_vectors(&doc);
}

/* ---- leadership claims (Heartbeat element 8, Error element 5) ---- */

static void claim_init(sp_leader_claim *c, uint64_t epoch) {
  c->epoch = epoch;
  fill_uuid(&c->leader, 0xa0);
  fill_bytes(c->signature, 0x40, SP_CLAIM_SIG_LEN);
}

static void test_round_trip_claims(void **state) {
  static const uint64_t epochs[] = {0, 1, 127, 128, 65536, UINT64_MAX};
  sp_decoder *dec;
  size_t i;

  (void)state;
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  for (i = 0; i < sizeof(epochs) / sizeof(epochs[0]); ++i) {
    sp_msg m;
    size_t len;
    uint8_t *frame;

    /* A follower's Heartbeat (max_frame 0) and a leader's, with claim. */
    msg_init(&m, SP_MSG_HEARTBEAT);
    m.epoch = epochs[i];
    m.u.heartbeat.role = i % 2 ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
    m.u.heartbeat.has_features = 1;
    m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
    m.u.heartbeat.max_frame = i % 2 ? SP_MAX_FRAME_DEFAULT : 0;
    m.u.heartbeat.has_claim = 1;
    claim_init(&m.u.heartbeat.claim, epochs[i]);
    round_trip_with(dec, &m);
    frame = encode(&m, &len);
    assert_int_equal(frame[SP_FRAME_HEADER_LEN], 0x99); /* 9 elements */
    free(frame);
    /* An Error with and without. */
    msg_init(&m, SP_MSG_ERROR);
    m.epoch = epochs[i];
    m.u.error.code = SP_ERR_STALE_EPOCH;
    m.u.error.message = "fenced";
    m.u.error.message_len = 6;
    round_trip_with(dec, &m);
    m.u.error.has_claim = 1;
    claim_init(&m.u.error.claim, epochs[i]);
    round_trip_with(dec, &m);
    frame = encode(&m, &len);
    assert_int_equal(frame[SP_FRAME_HEADER_LEN], 0x96); /* 6 elements */
    free(frame);
  }
  sp_decoder_del(dec);
}

/* Without has_claim the claim's fields change nothing: the bytes are the
 * vectors' (seed and negotiated forms alike). */
static void test_no_claim_no_bytes(void **state) {
  static const char *const names[] = {"heartbeat", "heartbeat_features",
                                      "heartbeat_features_leader", "error",
                                      "error_min"};
  vectors vs;
  size_t i, nw;
  sp_msg m;
  uint8_t out[512];

  (void)state;
  load_vectors("vectors.txt", 0, &vs);
  for (i = 0; i < sizeof(names) / sizeof(names[0]); ++i) {
    const vector *v = find_vector(&vs, names[i]);
    assert_non_null(v);
    assert_true(expected_vector(names[i], &m));
    if (m.type == SP_MSG_HEARTBEAT) {
      claim_init(&m.u.heartbeat.claim, 9);
    } else {
      claim_init(&m.u.error.claim, 9);
    }
    assert_int_equal(sp_msg_encoded_len(&m), v->len);
    assert_int_equal(sp_msg_encode(&m, out, sizeof(out), &nw), 0);
    assert_int_equal(nw, v->len);
    assert_memory_equal(out, v->bytes, v->len);
  }
  free_vectors(&vs);
}

/* Element 8 needs elements 5 to 7 before it: a claim on a seed-form
 * Heartbeat is not a message. */
static void test_claim_needs_features(void **state) {
  sp_msg m;
  sp_buf buf;
  uint8_t out[256];
  size_t nw = 0;

  (void)state;
  msg_init(&m, SP_MSG_HEARTBEAT);
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_claim = 1;
  claim_init(&m.u.heartbeat.claim, 1);
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  assert_int_equal(sp_msg_encode(&m, out, sizeof(out), &nw),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(nw, 0);
  sp_buf_init(&buf, sp_mem_default());
  assert_int_equal(sp_codec_append_frame(&buf, &m, SP_MAX_FRAME_DEFAULT),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(buf.len - buf.off, 0);
  m.u.heartbeat.has_features = 1;
  assert_true(sp_msg_encoded_len(&m) > 0);
  assert_int_equal(sp_codec_append_frame(&buf, &m, SP_MAX_FRAME_DEFAULT), 0);
  sp_buf_free(&buf);
}

/* `claim` (msgpack bytes) in place of the claim of the sample Heartbeat
 * and the sample Error decodes to `want`. */
static void expect_claim_decode(const char *claim, size_t len, int want) {
  static const sp_msg_type types[] = {SP_MSG_HEARTBEAT, SP_MSG_ERROR};
  size_t i;

  for (i = 0; i < 2; ++i) {
    const uint8_t *body;
    size_t blen;
    uint8_t *frame = sample_frame(types[i], &body, &blen);
    uint32_t k = types[i] == SP_MSG_HEARTBEAT ? 8 : 5;
    bytes b = replace_field(body, blen, k, claim, len);
    sp_msg got;
    int rv = decode_body(b.p, b.len, &got);

    if (rv != want) {
      print_error("claim in type %d decoded to %s, want %s\n", types[i],
                  sp_err_name(rv), sp_err_name(want));
    }
    assert_int_equal(rv, want);
    free(b.p);
    free(frame);
  }
}

/* "\x93" epoch leader signature, with the parts given. */
static size_t claim_bytes(char *out, const char *head, size_t hlen,
                          const char *epoch, size_t elen, const char *leader,
                          size_t llen, const char *sig, size_t slen) {
  size_t n = 0;

  memcpy(out + n, head, hlen);
  n += hlen;
  memcpy(out + n, epoch, elen);
  n += elen;
  memcpy(out + n, leader, llen);
  n += llen;
  memcpy(out + n, sig, slen);
  return n + slen;
}

static void test_claim_decode(void **state) {
  char leader[2 + 17], sig[3 + 65], c[256];
  size_t n;
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  bytes b;
  sp_msg got;

  (void)state;
  memcpy(leader, "\xc4\x10", 2);
  fill_bytes((uint8_t *)leader + 2, 0xa0, 17);
  memcpy(sig, "\xc4\x40", 2);
  fill_bytes((uint8_t *)sig + 2, 0x40, 65);
  /* The sample's own claim, as written by hand: fine. */
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, sig, 66);
  expect_claim_decode(c, n, 0);
  /* nil is no claim. */
  expect_claim_decode("\xc0", 1, 0);
  frame = sample_frame(SP_MSG_HEARTBEAT, &body, &blen);
  b = replace_field(body, blen, 8, "\xc0", 1);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_int_equal(got.u.heartbeat.has_claim, 0);
  assert_true(got.u.heartbeat.max_frame == 65536);
  free(b.p);
  /* Further elements of the claim are skipped (extension rule), any
   * width of the array header, any integer form of the epoch. */
  n = claim_bytes(c, "\x95", 1, "\xcf\x00\x00\x00\x00\x00\x00\x00\x01", 9,
                  leader, 18, sig, 66);
  memcpy(c + n, "\xa1x\x81\x01\xc0", 5);
  b = replace_field(body, blen, 8, c, n + 5);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_int_equal(got.u.heartbeat.has_claim, 1);
  assert_true(got.u.heartbeat.claim.epoch == 1);
  assert_memory_equal(got.u.heartbeat.claim.signature, sig + 2,
                      SP_CLAIM_SIG_LEN);
  free(b.p);
  n = claim_bytes(c, "\xdc\x00\x03", 3, "\x01", 1, leader, 18, sig, 66);
  expect_claim_decode(c, n, 0);
  free(frame);
  /* Too few elements. */
  expect_claim_decode("\x90", 1, SP_ERR_MISSING_FIELD);
  n = claim_bytes(c, "\x91", 1, "\x01", 1, "", 0, "", 0);
  expect_claim_decode(c, n, SP_ERR_MISSING_FIELD);
  n = claim_bytes(c, "\x92", 1, "\x01", 1, leader, 18, "", 0);
  expect_claim_decode(c, n, SP_ERR_MISSING_FIELD);
  /* Not an array. */
  expect_claim_decode("\x80", 1, SP_ERR_WRONG_TYPE);
  expect_claim_decode("\x07", 1, SP_ERR_WRONG_TYPE);
  expect_claim_decode("\xc3", 1, SP_ERR_WRONG_TYPE);
  expect_claim_decode("\xa1x", 2, SP_ERR_WRONG_TYPE);
  expect_claim_decode(sig, 66, SP_ERR_WRONG_TYPE);
  /* Wrong types inside. */
  n = claim_bytes(c, "\x93", 1, "\xc0", 1, leader, 18, sig, 66);
  expect_claim_decode(c, n, SP_ERR_WRONG_TYPE);
  n = claim_bytes(c, "\x93", 1, "\xca\x00\x00\x00\x00", 5, leader, 18, sig,
                  66);
  expect_claim_decode(c, n, SP_ERR_WRONG_TYPE);
  n = claim_bytes(c, "\x93", 1, "\xff", 1, leader, 18, sig, 66);
  expect_claim_decode(c, n, SP_ERR_INT_RANGE);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, "\xa0", 1, sig, 66);
  expect_claim_decode(c, n, SP_ERR_WRONG_TYPE);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, "\xc0", 1, sig, 66);
  expect_claim_decode(c, n, SP_ERR_WRONG_TYPE);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, "\xa0", 1);
  expect_claim_decode(c, n, SP_ERR_WRONG_TYPE);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, "\xc0", 1);
  expect_claim_decode(c, n, SP_ERR_WRONG_TYPE);
  /* Wrong lengths: a leader is a uuid, a signature 64 bytes. */
  n = claim_bytes(c, "\x93", 1, "\x01", 1, "\xc4\x0f", 2, "", 0);
  memcpy(c + n, leader + 2, 15);
  memcpy(c + n + 15, sig, 66);
  expect_claim_decode(c, n + 15 + 66, SP_ERR_UUID_LENGTH);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, "\xc4\x11", 2, "", 0);
  memcpy(c + n, leader + 2, 17);
  memcpy(c + n + 17, sig, 66);
  expect_claim_decode(c, n + 17 + 66, SP_ERR_UUID_LENGTH);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, "\xc4\x3f", 2);
  memcpy(c + n, sig + 2, 63);
  expect_claim_decode(c, n + 63, SP_ERR_HASH_LENGTH);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, "\xc4\x41", 2);
  memcpy(c + n, sig + 2, 65);
  expect_claim_decode(c, n + 65, SP_ERR_HASH_LENGTH);
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, "\xc4\x00", 2);
  expect_claim_decode(c, n, SP_ERR_HASH_LENGTH);
  /* Cut short: the claim is the last element of both samples. */
  n = claim_bytes(c, "\x93", 1, "\x01", 1, leader, 18, sig, 40);
  expect_claim_decode(c, n, SP_ERR_TRUNCATED);
  n = claim_bytes(c, "\x94", 1, "\x01", 1, leader, 18, sig, 66);
  expect_claim_decode(c, n, SP_ERR_TRUNCATED);
  /* An extension inside the claim nested too deep. */
  n = claim_bytes(c, "\x94", 1, "\x01", 1, leader, 18, sig, 66);
  {
    bytes deep = nested(SP_MP_MAX_DEPTH + 1, "\xc0", 1);
    bytes x = {NULL, 0};
    put(&x, c, n);
    put(&x, deep.p, deep.len);
    expect_claim_decode((const char *)x.p, x.len, SP_ERR_NESTING);
    free(deep.p);
    free(x.p);
  }
}

/* An Error or Heartbeat from a peer that knows no claims, written with
 * something else there, is refused: elements 5 (Error) and 8 (Heartbeat)
 * are no longer extension space.  Elements after them still are. */
static void test_claim_position_then_extensions(void **state) {
  const uint8_t *body;
  size_t blen;
  uint8_t *frame;
  bytes b;
  sp_msg got;

  (void)state;
  frame = sample_frame(SP_MSG_ERROR, &body, &blen);
  b = keep_fields(body, blen, 5);
  assert_int_equal(decode_body(b.p, b.len, &got), 0);
  assert_int_equal(got.u.error.has_claim, 0);
  expect_decode(add_fields(b.p, b.len, 1, "\x2a", 1), SP_ERR_WRONG_TYPE);
  expect_decode(add_fields(b.p, b.len, 2, "\xc0\x2a", 2), 0);
  free(b.p);
  expect_decode(add_fields(body, blen, 2, "\x2a\x80", 2), 0);
  free(frame);
}

/* ---- allocation failures ---- */

typedef struct fail_arg {
  const uint8_t *small, *big;
  size_t small_len, big_len;
  const sp_msg *want_small, *want_big;
} fail_arg;

static int decode_under_failure(const sp_mem *mem, void *arg) {
  const fail_arg *a = arg;
  sp_decoder *dec;
  sp_msg got;
  int rv;

  rv = sp_decoder_new(&dec, mem);
  if (rv != 0) {
    return rv;
  }
  /* small, then big (the entry array grows), then small again */
  rv = sp_decoder_decode(dec, a->small, a->small_len, &got);
  if (rv == 0) {
    expect_msg_eq(a->want_small, &got);
    rv = sp_decoder_decode(dec, a->big, a->big_len, &got);
  }
  if (rv == 0) {
    expect_msg_eq(a->want_big, &got);
    rv = sp_decoder_decode(dec, a->small, a->small_len, &got);
  }
  sp_decoder_del(dec);
  return rv;
}

static void test_decoder_allocation_failures(void **state) {
  const size_t n = 500;
  sp_entry *e = calloc(n, sizeof(*e));
  sp_msg small, big;
  uint8_t *fs, *fb;
  size_t ls, lb, i;
  fail_arg a;
  long runs;

  (void)state;
  assert_non_null(e);
  for (i = 0; i < n; ++i) {
    entry_init(&e[i], i + 1);
  }
  response_init(&small, 0, 10, e, 10);
  response_init(&big, 0, n, e, n);
  fs = encode(&small, &ls);
  fb = encode(&big, &lb);
  a.small = fs + 4;
  a.small_len = ls - 4;
  a.big = fb + 4;
  a.big_len = lb - 4;
  a.want_small = &small;
  a.want_big = &big;
  runs = sp_test_mem_fail_each(decode_under_failure, &a, NULL);
  assert_true(runs >= 3); /* decoder, array, regrowth */
  free(fs);
  free(fb);
  free(e);
}

typedef struct append_arg {
  const sp_msg *msgs;
  size_t n;
} append_arg;

static int append_under_failure(const sp_mem *mem, void *arg) {
  const append_arg *a = arg;
  sp_buf b;
  size_t i;
  int rv = 0;

  sp_buf_init(&b, mem);
  for (i = 0; i < a->n; ++i) {
    size_t before = b.len, flen;
    uint8_t *frame;
    uint8_t *copy = NULL;

    if (before) {
      copy = malloc(before);
      assert_non_null(copy);
      memcpy(copy, b.data, before);
    }
    rv = sp_codec_append_frame(&b, &a->msgs[i], SP_MAX_FRAME_DEFAULT);
    if (rv != 0) {
      /* On error the buffer is as before. */
      assert_int_equal(b.len, before);
      if (before) {
        assert_memory_equal(b.data, copy, before);
      }
      free(copy);
      break;
    }
    /* The appended bytes are exactly sp_msg_encode's frame. */
    frame = encode(&a->msgs[i], &flen);
    assert_int_equal(b.len, before + flen);
    assert_memory_equal(b.data + before, frame, flen);
    free(frame);
    free(copy);
  }
  sp_buf_free(&b);
  return rv;
}

static void test_append_frame_allocation_failures(void **state) {
  sp_msg msgs[2 * (N_SAMPLES + 1)];
  size_t n = sample_messages(msgs);
  sp_entry *e = calloc(200, sizeof(*e));
  append_arg a;
  size_t i;

  (void)state;
  assert_non_null(e);
  for (i = 0; i < 200; ++i) {
    entry_init(&e[i], i + 1);
  }
  /* A large response makes the buffer grow in the middle of a frame. */
  response_init(&msgs[n++], 0, 200, e, 200);
  memcpy(&msgs[n], &msgs[0], n * sizeof(msgs[0]));
  n *= 2;
  a.msgs = msgs;
  a.n = n;
  assert_true(sp_test_mem_fail_each(append_under_failure, &a, NULL) >= 3);
  free(e);
}

static void test_append_frame_refusals(void **state) {
  sp_msg m, bad;
  sp_buf b;
  size_t len, n, i;
  uint8_t *frame;

  (void)state;
  sp_buf_init(&b, sp_mem_default());
  msg_init(&m, SP_MSG_ACKNOWLEDGE);
  m.u.acknowledge.up_to_sequence = 5;
  assert_int_equal(sp_codec_append_frame(&b, &m, SP_MAX_FRAME_DEFAULT), 0);
  frame = encode(&m, &len);
  assert_int_equal(b.len, len);
  /* Invalid message: refused, buffer unchanged. */
  msg_init(&bad, SP_MSG_HEARTBEAT);
  bad.u.heartbeat.role = (sp_role)9;
  assert_int_equal(sp_codec_append_frame(&b, &bad, SP_MAX_FRAME_DEFAULT),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(b.len, len);
  /* Body over the caller's maximum: refused, buffer unchanged. */
  assert_int_equal(sp_codec_append_frame(&b, &m, len - 5),
                   SP_ERR_FRAME_TOO_LARGE);
  assert_int_equal(b.len, len);
  assert_int_equal(sp_codec_append_frame(&b, &m, len - 4), 0);
  assert_int_equal(b.len, 2 * len);
  assert_memory_equal(b.data, frame, len);
  assert_memory_equal(b.data + len, frame, len);
  /* Appending after consumed bytes keeps the pending ones intact. */
  sp_buf_consume(&b, len);
  assert_int_equal(sp_codec_append_frame(&b, &m, SP_MAX_FRAME_DEFAULT), 0);
  assert_int_equal(sp_buf_pending(&b), 2 * len);
  assert_memory_equal(b.data + b.off, frame, len);
  assert_memory_equal(b.data + b.off + len, frame, len);
  sp_buf_free(&b);

  /* A full buffer with consumed bytes is compacted while the frame is
   * appended: the frame still lands whole behind the pending bytes (the
   * session fuzzer found the length prefix written at the old offset). */
  sp_buf_init(&b, sp_mem_default());
  do {
    assert_int_equal(sp_codec_append_frame(&b, &m, SP_MAX_FRAME_DEFAULT), 0);
  } while (b.cap - b.len >= len);
  n = b.len / len;
  sp_buf_consume(&b, len);
  assert_int_equal(sp_codec_append_frame(&b, &m, SP_MAX_FRAME_DEFAULT), 0);
  assert_int_equal(b.off, 0); /* compacted, not grown */
  assert_int_equal(sp_buf_pending(&b), n * len);
  for (i = 0; i < n; ++i) {
    assert_memory_equal(b.data + i * len, frame, len);
  }
  free(frame);
  sp_buf_free(&b);
}

/* ---- snapshot messages (types 10-13) ---- */

static uint8_t g_snap_hashes[3 * SP_HASH_LEN];
static uint8_t *g_big_chunk;

/* One of each snapshot message, `which` 0..4. */
static void snap_msg(sp_msg *m, int which) {
  switch (which) {
  case 0:
    msg_init(m, SP_MSG_SNAPSHOT_REQUEST);
    break;
  case 1:
    msg_init(m, SP_MSG_SNAPSHOT_REQUEST);
    fill_bytes(m->u.snapshot_request.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_request.id_len = SP_SNAPSHOT_ID_LEN;
    m->u.snapshot_request.have_chunks = UINT64_MAX;
    m->u.snapshot_request.max_frame = SP_MAX_FRAME_LIMIT;
    break;
  case 2:
    msg_init(m, SP_MSG_SNAPSHOT_MANIFEST);
    fill_bytes(m->u.snapshot_manifest.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_manifest.sequence = UINT64_MAX;
    memset(m->u.snapshot_manifest.hash_at, 0xab, SP_HASH_LEN);
    m->u.snapshot_manifest.snap_epoch = 1ull << 40;
    m->u.snapshot_manifest.total_size = 2 * 65536 + 1;
    m->u.snapshot_manifest.chunk_size = 65536;
    fill_bytes(g_snap_hashes, 1, sizeof(g_snap_hashes));
    m->u.snapshot_manifest.chunk_hashes = g_snap_hashes;
    m->u.snapshot_manifest.chunk_count = 3;
    break;
  case 3:
    msg_init(m, SP_MSG_SNAPSHOT_FETCH);
    fill_bytes(m->u.snapshot_fetch.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_fetch.first_chunk = SP_MAX_SNAPSHOT_CHUNKS - 1;
    m->u.snapshot_fetch.count = SP_MAX_SNAPSHOT_WINDOW;
    break;
  default:
    msg_init(m, SP_MSG_SNAPSHOT_CHUNK);
    fill_bytes(m->u.snapshot_chunk.id, 0xd0, SP_SNAPSHOT_ID_LEN);
    m->u.snapshot_chunk.index = SP_MAX_SNAPSHOT_CHUNKS - 1;
    m->u.snapshot_chunk.data = g_payload;
    m->u.snapshot_chunk.data_len = sizeof(g_payload);
    break;
  }
}

static void test_round_trip_snapshot(void **state) {
  sp_msg m;
  int i;

  (void)state;
  for (i = 0; i < 5; ++i) {
    snap_msg(&m, i);
    round_trip(&m);
  }
  /* An empty snapshot: no chunks, an empty hashes binary. */
  snap_msg(&m, 2);
  m.u.snapshot_manifest.total_size = 0;
  m.u.snapshot_manifest.chunk_count = 0;
  m.u.snapshot_manifest.chunk_hashes = NULL;
  round_trip(&m);
  /* The largest chunk (a bin32) and the fewest-bytes manifest. */
  g_big_chunk = malloc(SP_SNAPSHOT_CHUNK_MAX);
  assert_non_null(g_big_chunk);
  memset(g_big_chunk, 0x3c, SP_SNAPSHOT_CHUNK_MAX);
  snap_msg(&m, 4);
  m.u.snapshot_chunk.data = g_big_chunk;
  m.u.snapshot_chunk.data_len = SP_SNAPSHOT_CHUNK_MAX;
  round_trip(&m);
  m.u.snapshot_chunk.data = NULL;
  m.u.snapshot_chunk.data_len = 0;
  round_trip(&m);
  free(g_big_chunk);
  g_big_chunk = NULL;
  snap_msg(&m, 2);
  m.u.snapshot_manifest.total_size = 1;
  m.u.snapshot_manifest.chunk_size = 1;
  m.u.snapshot_manifest.chunk_count = 1;
  round_trip(&m);
}

static void test_snapshot_encoder_refusals(void **state) {
  sp_msg m;
  uint8_t out[256];
  size_t nw;

  (void)state;
  snap_msg(&m, 1);
  m.u.snapshot_request.id_len = 8;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  assert_int_equal(sp_msg_encode(&m, out, sizeof(out), &nw),
                   SP_ERR_INVALID_ARGUMENT);
  snap_msg(&m, 2);
  m.u.snapshot_manifest.chunk_count = 2; /* sizes say 3 */
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 2);
  m.u.snapshot_manifest.chunk_size = 0;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 2);
  m.u.snapshot_manifest.chunk_size = SP_SNAPSHOT_CHUNK_MAX + 1;
  m.u.snapshot_manifest.chunk_count = 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 2);
  m.u.snapshot_manifest.chunk_hashes = NULL;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 2);
  m.u.snapshot_manifest.chunk_size = 1;
  m.u.snapshot_manifest.total_size = SP_MAX_SNAPSHOT_CHUNKS + 1;
  m.u.snapshot_manifest.chunk_count = SP_MAX_SNAPSHOT_CHUNKS + 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 3);
  m.u.snapshot_fetch.count = 0;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.snapshot_fetch.count = SP_MAX_SNAPSHOT_WINDOW + 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  m.u.snapshot_fetch.count = 1;
  m.u.snapshot_fetch.first_chunk = SP_MAX_SNAPSHOT_CHUNKS;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 4);
  m.u.snapshot_chunk.index = SP_MAX_SNAPSHOT_CHUNKS;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 4);
  m.u.snapshot_chunk.data_len = SP_SNAPSHOT_CHUNK_MAX + 1;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
  snap_msg(&m, 4);
  m.u.snapshot_chunk.data = NULL;
  assert_int_equal(sp_msg_encoded_len(&m), 0);
}

/* Replace element `i` of the encoded message `m` and expect `want`. */
static void snap_bad_field(const sp_msg *m, uint32_t i, const void *rep,
                           size_t replen, int want) {
  size_t len;
  uint8_t *frame = encode(m, &len);

  expect_decode(replace_field(frame + SP_FRAME_HEADER_LEN,
                              len - SP_FRAME_HEADER_LEN, i, rep, replen),
                want);
  free(frame);
}

static void test_snapshot_decode_errors(void **state) {
  static const uint8_t bin8_id[] = {0xc4, 0x08, 1, 2, 3, 4, 5, 6, 7, 8};
  static const uint8_t bin_empty[] = {0xc4, 0x00};
  static const uint8_t str_id[] = {0xa2, 'i', 'd'};
  static const uint8_t zero[] = {0x00};
  static const uint8_t neg[] = {0xff};
  /* 2 MiB + 1 as a uint32, 65 as a fixint, 65536 as a uint32 */
  static const uint8_t over_chunk[] = {0xce, 0x00, 0x20, 0x00, 0x01};
  static const uint8_t window_over[] = {0x41};
  static const uint8_t chunks_max[] = {0xce, 0x00, 0x01, 0x00, 0x00};
  static const uint8_t huge_total[] = {0xce, 0x00, 0x01, 0x00, 0x01};
  static const uint8_t hashes_short[] = {0xc4, 0x01, 0x00};
  static const uint8_t hash31[] = {0xc4, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0};
  sp_msg m;
  size_t len, k;
  uint8_t *frame;
  int i;

  (void)state;
  /* ids: 16 bytes, or none in a request only */
  snap_msg(&m, 0);
  snap_bad_field(&m, 3, bin8_id, sizeof(bin8_id), SP_ERR_UUID_LENGTH);
  snap_bad_field(&m, 3, str_id, sizeof(str_id), SP_ERR_WRONG_TYPE);
  snap_bad_field(&m, 4, neg, sizeof(neg), SP_ERR_INT_RANGE);
  snap_bad_field(&m, 5, str_id, sizeof(str_id), SP_ERR_WRONG_TYPE);
  for (i = 2; i <= 4; ++i) {
    snap_msg(&m, i);
    snap_bad_field(&m, 3, bin_empty, sizeof(bin_empty), SP_ERR_UUID_LENGTH);
    snap_bad_field(&m, 3, bin8_id, sizeof(bin8_id), SP_ERR_UUID_LENGTH);
  }
  /* manifest: hash_at 32 bytes, chunk size in range, count and hashes
   * agree with the sizes */
  snap_msg(&m, 2);
  snap_bad_field(&m, 5, bin_empty, sizeof(bin_empty), SP_ERR_HASH_LENGTH);
  snap_bad_field(&m, 5, hash31, sizeof(hash31), SP_ERR_HASH_LENGTH);
  snap_bad_field(&m, 8, zero, sizeof(zero), SP_ERR_INT_RANGE);
  snap_bad_field(&m, 8, over_chunk, sizeof(over_chunk), SP_ERR_INT_RANGE);
  snap_bad_field(&m, 9, hashes_short, sizeof(hashes_short),
                 SP_ERR_HASH_LENGTH);
  snap_bad_field(&m, 9, bin_empty, sizeof(bin_empty), SP_ERR_HASH_LENGTH);
  /* total 65537 at chunk size 1: more chunks than a manifest may list,
   * refused before the hashes are even looked at */
  {
    sp_msg t = m;
    t.u.snapshot_manifest.chunk_size = 1;
    t.u.snapshot_manifest.total_size = 3;
    snap_bad_field(&t, 7, huge_total, sizeof(huge_total), SP_ERR_OVERSIZE);
    /* 65536 chunks is the most: then the hashes must be 2 MiB */
    snap_bad_field(&t, 7, chunks_max, sizeof(chunks_max),
                   SP_ERR_HASH_LENGTH);
  }
  /* fetch: count 1..window, first chunk below the most */
  snap_msg(&m, 3);
  snap_bad_field(&m, 5, zero, sizeof(zero), SP_ERR_INT_RANGE);
  snap_bad_field(&m, 5, window_over, sizeof(window_over), SP_ERR_INT_RANGE);
  snap_bad_field(&m, 4, chunks_max, sizeof(chunks_max), SP_ERR_INT_RANGE);
  /* chunk: index below the most, data a binary */
  snap_msg(&m, 4);
  snap_bad_field(&m, 4, chunks_max, sizeof(chunks_max), SP_ERR_INT_RANGE);
  snap_bad_field(&m, 5, str_id, sizeof(str_id), SP_ERR_WRONG_TYPE);
  /* data over SP_SNAPSHOT_CHUNK_MAX */
  {
    bytes b = {NULL, 0};
    static const uint8_t head[] = {0xc6, 0x00, 0x20, 0x00, 0x01};
    size_t n = SP_SNAPSHOT_CHUNK_MAX + 1;
    uint8_t *big = calloc(1, sizeof(head) + n);
    assert_non_null(big);
    memcpy(big, head, sizeof(head));
    frame = encode(&m, &len);
    b = replace_field(frame + SP_FRAME_HEADER_LEN, len - SP_FRAME_HEADER_LEN,
                      5, big, sizeof(head) + n);
    expect_decode(b, SP_ERR_OVERSIZE);
    free(frame);
    free(big);
  }
  /* Every message: missing fields, every truncation, extensions skipped. */
  for (i = 0; i < 5; ++i) {
    sp_msg got;
    uint32_t need = i == 2 ? 10 : 6;
    snap_msg(&m, i);
    frame = encode(&m, &len);
    expect_decode(keep_fields(frame + SP_FRAME_HEADER_LEN,
                              len - SP_FRAME_HEADER_LEN, need - 1),
                  SP_ERR_MISSING_FIELD);
    for (k = 0; k < len - SP_FRAME_HEADER_LEN; ++k) {
      assert_int_not_equal(decode_body(frame + SP_FRAME_HEADER_LEN, k, &got),
                           0);
    }
    {
      static const uint8_t ext[] = {0x81, 0xa1, 'k', 0xc3, 0xc0};
      bytes b = add_fields(frame + SP_FRAME_HEADER_LEN,
                           len - SP_FRAME_HEADER_LEN, 2, ext, sizeof(ext));
      assert_int_equal(decode_body(b.p, b.len, &got), 0);
      expect_msg_eq(&m, &got);
      free(b.p);
    }
    free(frame);
  }
}

/* The vectors' chunk hashes are what sp_snapshot_chunk_hash gives:
 * BLAKE2b-256(id || index big-endian || bytes). */
static void test_snapshot_vector_hashes(void **state) {
  static const uint8_t c0[] = {1, 2, 3}, c1[] = {4, 5};
  uint8_t id[SP_SNAPSHOT_ID_LEN], h[SP_HASH_LEN], want[SP_HASH_LEN];

  (void)state;
  fill_bytes(id, 0xd0, sizeof(id));
  assert_int_equal(sp_snapshot_chunk_hash(id, 0, c0, 3, h), 0);
  hex_to(v_snap_h0, want);
  assert_memory_equal(h, want, SP_HASH_LEN);
  assert_int_equal(sp_snapshot_chunk_hash(id, 1, c1, 2, h), 0);
  hex_to(v_snap_h1, want);
  assert_memory_equal(h, want, SP_HASH_LEN);
  /* This build implements snapshots (advertised per handler). */
  assert_int_equal(SP_FEATURES_SUPPORTED & SP_FEATURE_SNAPSHOT,
                   SP_FEATURE_SNAPSHOT);
  assert_int_equal(SP_FEATURE_SNAPSHOT, 0x2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_simple_messages),
      cmocka_unit_test(test_round_trip_error),
      cmocka_unit_test(test_round_trip_response_edges),
      cmocka_unit_test(test_round_trip_many_entries),
      cmocka_unit_test(test_every_prefix_truncated),
      cmocka_unit_test(test_wrong_type_every_field),
      cmocka_unit_test(test_uuid_lengths),
      cmocka_unit_test(test_enum_ranges),
      cmocka_unit_test(test_int_ranges),
      cmocka_unit_test(test_oversize_strings),
      cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_trailing_bytes),
      cmocka_unit_test(test_unknown_message),
      cmocka_unit_test(test_reserved_byte),
      cmocka_unit_test(test_missing_fields),
      cmocka_unit_test(test_entry_order),
      cmocka_unit_test(test_hash_lengths),
      cmocka_unit_test(test_nesting_in_extension),
      cmocka_unit_test(test_huge_counts_fail_fast),
      cmocka_unit_test(test_decode_arguments),
      cmocka_unit_test(test_extra_trailing_elements),
      cmocka_unit_test(test_entries_with_extra_elements),
      cmocka_unit_test(test_round_trip_features_heartbeat),
      cmocka_unit_test(test_heartbeat_optional_elements),
      cmocka_unit_test(test_fetch_features),
      cmocka_unit_test(test_round_trip_origin_entries),
      cmocka_unit_test(test_entry_origin_element),
      cmocka_unit_test(test_round_trip_propose),
      cmocka_unit_test(test_round_trip_propose_result),
      cmocka_unit_test(test_propose_decode_errors),
      cmocka_unit_test(test_propose_result_decode_errors),
      cmocka_unit_test(test_batch_counts_allocate_by_bytes),
      cmocka_unit_test(test_encoder_refuses_bad_batches),
      cmocka_unit_test(test_batch_allocation_failures),
      cmocka_unit_test(test_vectors),
      cmocka_unit_test(test_seed_bytes_without_negotiation),
      cmocka_unit_test(test_doc_vectors_match_data_file),
      cmocka_unit_test(test_decoder_allocation_failures),
      cmocka_unit_test(test_append_frame_allocation_failures),
      cmocka_unit_test(test_append_frame_refusals),
      cmocka_unit_test(test_round_trip_snapshot),
      cmocka_unit_test(test_snapshot_encoder_refusals),
      cmocka_unit_test(test_snapshot_decode_errors),
      cmocka_unit_test(test_snapshot_vector_hashes),
      cmocka_unit_test(test_round_trip_claims),
      cmocka_unit_test(test_no_claim_no_bytes),
      cmocka_unit_test(test_claim_needs_features),
      cmocka_unit_test(test_claim_decode),
      cmocka_unit_test(test_claim_position_then_extensions),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
