/*
 * sp_chain_test.c: the hash chain against an independent computation
 * (libsodium's one-shot BLAKE2b over msgpack-c's own packing of the entry).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <sodium.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"

static sp_entry make_entry(sp_seq seq, const char *model, const uint8_t *data,
                           size_t data_len) {
  sp_entry e;
  size_t i;

  memset(&e, 0, sizeof(e));
  e.sequence = seq;
  for (i = 0; i < 16; ++i) {
    e.device_id.bytes[i] = (uint8_t)(0xa0 + i);
    e.record_id.bytes[i] = (uint8_t)(seq * 3 + i);
  }
  e.timestamp_ms = 1700000000000ull + seq;
  e.model_type = model;
  e.model_type_len = strlen(model);
  e.change_type = (sp_change_type)(seq % 4);
  e.version = (int64_t)seq * -1000003;
  e.data = data;
  e.data_len = data_len;
  return e;
}

/* The reference: pack with msgpack-c, hash in one go with libsodium. */
static void reference_link(const uint8_t prev[SP_HASH_LEN], const sp_entry *e,
                           uint8_t out[SP_HASH_LEN]) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  uint8_t *all;

  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 8);
  msgpack_pack_uint64(&pk, e->sequence);
  msgpack_pack_bin(&pk, 16);
  msgpack_pack_bin_body(&pk, e->device_id.bytes, 16);
  msgpack_pack_uint64(&pk, e->timestamp_ms);
  msgpack_pack_str(&pk, e->model_type_len);
  msgpack_pack_str_body(&pk, e->model_type, e->model_type_len);
  msgpack_pack_bin(&pk, 16);
  msgpack_pack_bin_body(&pk, e->record_id.bytes, 16);
  msgpack_pack_int(&pk, (int)e->change_type);
  msgpack_pack_int64(&pk, e->version);
  msgpack_pack_bin(&pk, e->data_len);
  msgpack_pack_bin_body(&pk, e->data, e->data_len);
  all = malloc(SP_HASH_LEN + sb.size);
  assert_non_null(all);
  memcpy(all, prev, SP_HASH_LEN);
  memcpy(all + SP_HASH_LEN, sb.data, sb.size);
  assert_int_equal(crypto_generichash(out, SP_HASH_LEN, all,
                                      SP_HASH_LEN + sb.size, NULL, 0),
                   0);
  free(all);
  msgpack_sbuffer_destroy(&sb);
}

static void from_hex(const char *hex, uint8_t *out, size_t n) {
  size_t i;

  assert_int_equal(strlen(hex), 2 * n);
  for (i = 0; i < n; ++i) {
    unsigned v;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
}

static void test_known_answer(void **state) {
  /* Entry 1 of tests/data/vectors.txt; the link was computed outside this
   * library (Python hashlib.blake2b(digest_size=32)) and is in
   * docs/protocol.md. */
  static const uint8_t data[] = {1, 2, 3};
  uint8_t zero[SP_HASH_LEN] = {0}, got[SP_HASH_LEN], want[SP_HASH_LEN];
  sp_entry e;
  size_t i;

  (void)state;
  memset(&e, 0, sizeof(e));
  e.sequence = 1;
  for (i = 0; i < 16; ++i) {
    e.device_id.bytes[i] = (uint8_t)(0xa0 + i);
    e.record_id.bytes[i] = (uint8_t)(0xb0 + i);
  }
  e.timestamp_ms = 1700000000000ull;
  e.model_type = "tag";
  e.model_type_len = 3;
  e.change_type = SP_CHANGE_INSERT;
  e.version = 1;
  e.data = data;
  e.data_len = sizeof(data);
  assert_int_equal(sp_chain_next(zero, &e, got), 0);
  from_hex("4a00700360f94e1e99eb8c6a1975b01a2c7cdc664dc80f9e35f584b98aa88285",
           want, SP_HASH_LEN);
  assert_memory_equal(got, want, SP_HASH_LEN);
  reference_link(zero, &e, want);
  assert_memory_equal(got, want, SP_HASH_LEN);
}

/* origin_seq rides on the wire to negotiated peers only; a seed-only peer
 * re-encodes the 8 seed fields, so the link must not depend on it. */
static void test_origin_not_hashed(void **state) {
  static const uint8_t data[] = {1, 2, 3};
  static const uint64_t origins[] = {1, 5, 127, 128, 65536, INT64_MAX};
  uint8_t zero[SP_HASH_LEN] = {0}, want[SP_HASH_LEN], got[SP_HASH_LEN];
  uint8_t ref[SP_HASH_LEN];
  sp_entry e = make_entry(1, "tag", data, sizeof(data));
  size_t i;

  (void)state;
  assert_int_equal(sp_chain_next(zero, &e, want), 0);
  for (i = 0; i < sizeof(origins) / sizeof(origins[0]); ++i) {
    e.origin_seq = origins[i];
    assert_int_equal(sp_chain_next(zero, &e, got), 0);
    assert_memory_equal(got, want, SP_HASH_LEN);
    reference_link(zero, &e, ref); /* the 8-element form */
    assert_memory_equal(got, ref, SP_HASH_LEN);
  }
  /* The documented vector entry 1, submitted as origin 5 (the vector
   * entries_response_origin): still link(1). */
  e = make_entry(1, "tag", data, sizeof(data));
  for (i = 0; i < 16; ++i) {
    e.record_id.bytes[i] = (uint8_t)(0xb0 + i);
  }
  e.timestamp_ms = 1700000000000ull;
  e.change_type = SP_CHANGE_INSERT;
  e.version = 1;
  e.origin_seq = 5;
  assert_int_equal(sp_chain_next(zero, &e, got), 0);
  from_hex("4a00700360f94e1e99eb8c6a1975b01a2c7cdc664dc80f9e35f584b98aa88285",
           want, SP_HASH_LEN);
  assert_memory_equal(got, want, SP_HASH_LEN);
}

static void test_chain_matches_reference(void **state) {
  static const char *models[] = {"", "tag", "location", "a\xc3\xa9\xe2\x82\xac"};
  uint8_t ours[SP_HASH_LEN] = {0}, ref[SP_HASH_LEN] = {0};
  uint8_t payload[600];
  sp_seq s;
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(payload); ++i) {
    payload[i] = (uint8_t)(i * 31);
  }
  /* Sequences and versions across every integer width. */
  for (s = 1; s < 200; ++s) {
    sp_seq seq = s < 100 ? s : (s << 25) + s;
    sp_entry e = make_entry(seq, models[s % 4], s % 5 ? payload : NULL,
                            s % 5 ? (size_t)(s * 3) : 0);
    if (s % 7 == 0) {
      e.version = s % 2 ? INT64_MIN : INT64_MAX;
      e.timestamp_ms = UINT64_MAX;
    }
    assert_int_equal(sp_chain_next(ours, &e, ours), 0);
    reference_link(ref, &e, ref);
    assert_memory_equal(ours, ref, SP_HASH_LEN);
  }
}

static void test_max_model_and_large_payload(void **state) {
  char model[SP_MAX_MODEL_TYPE_LEN];
  uint8_t prev[SP_HASH_LEN], ours[SP_HASH_LEN], ref[SP_HASH_LEN];
  size_t big = 1u << 20;
  uint8_t *data = malloc(big);
  sp_entry e;

  (void)state;
  assert_non_null(data);
  memset(model, 'm', sizeof(model));
  memset(data, 0x5c, big);
  memset(prev, 0x77, sizeof(prev));
  e = make_entry(UINT64_MAX, "x", data, big);
  e.model_type = model;
  e.model_type_len = sizeof(model);
  assert_int_equal(sp_chain_next(prev, &e, ours), 0);
  reference_link(prev, &e, ref);
  assert_memory_equal(ours, ref, SP_HASH_LEN);
  free(data);
}

static void test_payload_hashed_in_place(void **state) {
  /* Same bytes at different addresses (and alignments) hash the same:
   * only the content enters the hash, whichever buffer holds it. */
  uint8_t a[64], *b = malloc(65);
  uint8_t prev[SP_HASH_LEN] = {0}, h1[SP_HASH_LEN], h2[SP_HASH_LEN];
  sp_entry e1, e2;

  (void)state;
  assert_non_null(b);
  memset(a, 0x42, sizeof(a));
  memset(b, 0x42, 65);
  e1 = make_entry(9, "note", a, sizeof(a));
  e2 = make_entry(9, "note", b + 1, 64);
  assert_int_equal(sp_chain_next(prev, &e1, h1), 0);
  assert_int_equal(sp_chain_next(prev, &e2, h2), 0);
  assert_memory_equal(h1, h2, SP_HASH_LEN);
  /* And the content does matter. */
  b[64] = 0x43;
  assert_int_equal(sp_chain_next(prev, &e2, h2), 0);
  assert_memory_not_equal(h1, h2, SP_HASH_LEN);
  free(b);
}

static void test_alias_out_prev(void **state) {
  uint8_t link[SP_HASH_LEN], copy[SP_HASH_LEN], sep[SP_HASH_LEN];
  sp_entry e = make_entry(5, "t", NULL, 0);

  (void)state;
  memset(link, 0x33, sizeof(link));
  memcpy(copy, link, sizeof(link));
  assert_int_equal(sp_chain_next(copy, &e, sep), 0);
  assert_int_equal(sp_chain_next(link, &e, link), 0);
  assert_memory_equal(link, sep, SP_HASH_LEN);
  /* The previous link matters. */
  memset(copy, 0x34, sizeof(copy));
  assert_int_equal(sp_chain_next(copy, &e, copy), 0);
  assert_memory_not_equal(copy, sep, SP_HASH_LEN);
}

static void test_invalid_refused(void **state) {
  char big[SP_MAX_MODEL_TYPE_LEN + 1];
  uint8_t prev[SP_HASH_LEN] = {0}, out[SP_HASH_LEN], keep[SP_HASH_LEN];
  sp_entry good = make_entry(1, "t", NULL, 0), e;

  (void)state;
  memset(big, 'b', sizeof(big));
  memset(out, 0xee, sizeof(out));
  memcpy(keep, out, sizeof(out));

  e = good;
  e.change_type = (sp_change_type)4;
  assert_int_equal(sp_chain_next(prev, &e, out), SP_ERR_INVALID_ARGUMENT);
  e = good;
  e.change_type = (sp_change_type)-1;
  assert_int_equal(sp_chain_next(prev, &e, out), SP_ERR_INVALID_ARGUMENT);
  e = good;
  e.model_type = big;
  e.model_type_len = sizeof(big);
  assert_int_equal(sp_chain_next(prev, &e, out), SP_ERR_INVALID_ARGUMENT);
  e = good;
  e.model_type = "\xc0\x80";
  e.model_type_len = 2;
  assert_int_equal(sp_chain_next(prev, &e, out), SP_ERR_INVALID_ARGUMENT);
  e = good;
  e.model_type = NULL;
  assert_int_equal(sp_chain_next(prev, &e, out), SP_ERR_INVALID_ARGUMENT);
  e = good;
  e.data_len = 4;
  assert_int_equal(sp_chain_next(prev, &e, out), SP_ERR_INVALID_ARGUMENT);
  assert_memory_equal(out, keep, SP_HASH_LEN);

  assert_int_equal(sp_chain_next(NULL, &good, out), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_chain_next(prev, NULL, out), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_chain_next(prev, &good, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_memory_equal(out, keep, SP_HASH_LEN);
  assert_int_equal(sp_chain_next(prev, &good, out), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_answer),
      cmocka_unit_test(test_origin_not_hashed),
      cmocka_unit_test(test_chain_matches_reference),
      cmocka_unit_test(test_max_model_and_large_payload),
      cmocka_unit_test(test_payload_hashed_in_place),
      cmocka_unit_test(test_alias_out_prev),
      cmocka_unit_test(test_invalid_refused),
  };
  if (sodium_init() < 0) {
    return 1;
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
