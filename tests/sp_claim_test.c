/*
 * sp_claim_test.c: leadership claims (sp_claim.c): the signed bytes, the
 * published signatures of docs/protocol.md section 15 and
 * tests/data/vectors.txt, what verification refuses, and a claim through
 * the codec.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/identity.h"
#include "sp_claim.h"

/* The test key: Ed25519 seed 00 01 .. 1f, standing for device a0..af. */
static const char k_public_hex[] =
    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
/* The signed bytes of the claims in vectors heartbeat_claim (epoch 7) and
 * error_claim (epoch 2), and their signatures. */
static const char k_msg7_hex[] =
    "73796e635f70726f746f636f6c206c656164657220636c61696d207631"
    "101112131415161718191a1b1c1d1e1f"
    "0000000000000007"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
static const char k_msg2_hex[] =
    "73796e635f70726f746f636f6c206c656164657220636c61696d207631"
    "101112131415161718191a1b1c1d1e1f"
    "0000000000000002"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
static const char k_sig7_hex[] =
    "b2d841d2764af2542de2659f4d424c6768fe8fe216242d460d3860263eaecaed"
    "263c183635a15bd603b7e147c05357deb4088e13d7d929fafe810ba8835d0d03";
static const char k_sig2_hex[] =
    "ce0d4ef65c60af6a9ee7c9cbf570fd9515ef3dc78534987b4620f81a43fc2dc7"
    "0ea1625790478bff1b86b76d567b69485bd4eb7d7858862958c5096163f49301";

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c - 'a' + 10;
}

static void from_hex(const char *hex, uint8_t *out, size_t n) {
  size_t i;

  assert_int_equal(strlen(hex), 2 * n);
  for (i = 0; i < n; ++i) {
    out[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
  }
}

static void fill(uint8_t *p, uint8_t base, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    p[i] = (uint8_t)(base + i);
  }
}

static sp_uuid library_id(void) {
  sp_uuid u;

  fill(u.bytes, 0x10, sizeof(u.bytes));
  return u;
}

static void test_keys(uint8_t pk[SP_PUBLIC_KEY_LEN],
                      uint8_t sk[crypto_sign_SECRETKEYBYTES]) {
  uint8_t seed[crypto_sign_SEEDBYTES];

  fill(seed, 0, sizeof(seed));
  assert_int_equal(crypto_sign_seed_keypair(pk, sk, seed), 0);
}

/* A vector's claim: device a0..af at `epoch`, with `sig_hex`. */
static sp_leader_claim vector_claim(uint64_t epoch, const char *sig_hex) {
  sp_leader_claim c;

  memset(&c, 0, sizeof(c));
  c.epoch = epoch;
  fill(c.leader.bytes, 0xa0, sizeof(c.leader.bytes));
  from_hex(sig_hex, c.signature, SP_CLAIM_SIG_LEN);
  return c;
}

/* The test identity, through a key file as a host would have it. */
static sp_identity *load_test_identity(void) {
  char path[] = "/tmp/sp_claim_test.XXXXXX";
  char text[512];
  char seed_hex[2 * 32 + 1];
  sp_identity *id = NULL;
  size_t i, len;
  int fd = mkstemp(path); /* mode 0600, as a key file must be */

  assert_true(fd >= 0);
  for (i = 0; i < 32; ++i) {
    snprintf(seed_hex + 2 * i, 3, "%02x", (unsigned)i);
  }
  len = (size_t)snprintf(text, sizeof(text),
                         "sync_protocol device key v1\n"
                         "device a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf\n"
                         "public %s\nsecret %s\n",
                         k_public_hex, seed_hex);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
  assert_int_equal(sp_identity_load(&id, path, NULL), 0);
  unlink(path);
  return id;
}

/* ---- the key and the signed bytes ---- */

static void test_public_key_of_the_test_seed(void **state) {
  uint8_t pk[SP_PUBLIC_KEY_LEN], sk[crypto_sign_SECRETKEYBYTES];
  uint8_t want[SP_PUBLIC_KEY_LEN];
  sp_identity *id;

  (void)state;
  test_keys(pk, sk);
  from_hex(k_public_hex, want, sizeof(want));
  assert_memory_equal(pk, want, sizeof(want));
  /* The key file's identity is that key (load checks public vs seed). */
  id = load_test_identity();
  sp_identity_public_key(id, pk);
  assert_memory_equal(pk, want, sizeof(want));
  sp_identity_del(id);
}

static void test_message_bytes(void **state) {
  uint8_t got[SP_CLAIM_MSG_LEN], want[SP_CLAIM_MSG_LEN];
  sp_uuid lib = library_id(), leader;

  (void)state;
  assert_int_equal(strlen(SP_CLAIM_CONTEXT), 29);
  fill(leader.bytes, 0xa0, sizeof(leader.bytes));
  sp_claim_message(got, &lib, 7, &leader);
  from_hex(k_msg7_hex, want, sizeof(want));
  assert_memory_equal(got, want, sizeof(want));
  sp_claim_message(got, &lib, 2, &leader);
  from_hex(k_msg2_hex, want, sizeof(want));
  assert_memory_equal(got, want, sizeof(want));
  /* Big-endian epoch, all eight bytes. */
  sp_claim_message(got, &lib, 0x0102030405060708ull, &leader);
  from_hex("0102030405060708", want, 8);
  assert_memory_equal(got + 29 + 16, want, 8);
  assert_memory_equal(got + 29 + 16 + 8, leader.bytes, 16);
  assert_memory_equal(got + 29, lib.bytes, 16);
}

/* ---- the published signatures ---- */

static void test_signatures_are_the_vectors(void **state) {
  static const struct {
    uint64_t epoch;
    const char *sig;
  } v[] = {{7, k_sig7_hex}, {2, k_sig2_hex}};
  uint8_t pk[SP_PUBLIC_KEY_LEN], sk[crypto_sign_SECRETKEYBYTES];
  uint8_t msg[SP_CLAIM_MSG_LEN], sig[SP_CLAIM_SIG_LEN];
  sp_uuid lib = library_id();
  sp_identity *id = load_test_identity();
  size_t i;

  (void)state;
  test_keys(pk, sk);
  for (i = 0; i < sizeof(v) / sizeof(v[0]); ++i) {
    sp_leader_claim want = vector_claim(v[i].epoch, v[i].sig), got;
    /* Ed25519 is deterministic: libsodium over our bytes, and our
     * signing through an identity, both give exactly the vector's. */
    sp_claim_message(msg, &lib, v[i].epoch, &want.leader);
    assert_int_equal(crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk),
                     0);
    assert_memory_equal(sig, want.signature, SP_CLAIM_SIG_LEN);
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(sp_leader_claim_sign(&got, id, &lib, v[i].epoch), 0);
    assert_true(got.epoch == v[i].epoch);
    assert_memory_equal(&got.leader, &want.leader, sizeof(sp_uuid));
    assert_memory_equal(got.signature, want.signature, SP_CLAIM_SIG_LEN);
    assert_int_equal(sp_leader_claim_verify(&want, &lib, pk), 0);
  }
  sp_identity_del(id);
}

/* ---- what verification refuses ---- */

static void flip(uint8_t *p, size_t bit) {
  p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
}

static void test_verify_refuses_every_flipped_bit(void **state) {
  uint8_t pk[SP_PUBLIC_KEY_LEN], sk[crypto_sign_SECRETKEYBYTES];
  const sp_leader_claim good = vector_claim(7, k_sig7_hex);
  const sp_uuid lib = library_id();
  size_t bit;

  (void)state;
  test_keys(pk, sk);
  assert_int_equal(sp_leader_claim_verify(&good, &lib, pk), 0);
  for (bit = 0; bit < 8 * SP_CLAIM_SIG_LEN; ++bit) {
    sp_leader_claim c = good;
    flip(c.signature, bit);
    assert_int_equal(sp_leader_claim_verify(&c, &lib, pk),
                     SP_ERR_UNPROVEN_EPOCH);
  }
  for (bit = 0; bit < 64; ++bit) {
    sp_leader_claim c = good;
    c.epoch ^= 1ull << bit;
    assert_int_equal(sp_leader_claim_verify(&c, &lib, pk),
                     SP_ERR_UNPROVEN_EPOCH);
  }
  for (bit = 0; bit < 128; ++bit) {
    sp_leader_claim c = good;
    sp_uuid other = lib;
    flip(c.leader.bytes, bit);
    assert_int_equal(sp_leader_claim_verify(&c, &lib, pk),
                     SP_ERR_UNPROVEN_EPOCH);
    /* The same claim for another library proves nothing there. */
    flip(other.bytes, bit);
    assert_int_equal(sp_leader_claim_verify(&good, &other, pk),
                     SP_ERR_UNPROVEN_EPOCH);
  }
}

static void test_verify_refuses_another_key(void **state) {
  const sp_leader_claim good = vector_claim(7, k_sig7_hex);
  const sp_uuid lib = library_id();
  uint8_t pk[SP_PUBLIC_KEY_LEN], sk[crypto_sign_SECRETKEYBYTES];
  uint8_t seed[crypto_sign_SEEDBYTES];
  sp_identity *id;
  sp_leader_claim own;

  (void)state;
  fill(seed, 1, sizeof(seed));
  assert_int_equal(crypto_sign_seed_keypair(pk, sk, seed), 0);
  assert_int_equal(sp_leader_claim_verify(&good, &lib, pk),
                   SP_ERR_UNPROVEN_EPOCH);
  /* A device that signs a claim naming another device as leader: its
   * signature does not verify under the named device's key. */
  assert_int_equal(sp_identity_generate(&id, &good.leader, NULL), 0);
  assert_int_equal(sp_leader_claim_sign(&own, id, &lib, 7), 0);
  test_keys(pk, sk);
  assert_int_equal(sp_leader_claim_verify(&own, &lib, pk),
                   SP_ERR_UNPROVEN_EPOCH);
  sp_identity_del(id);
}

static void test_sign_with_a_generated_identity(void **state) {
  const sp_uuid lib = library_id();
  uint8_t pk[SP_PUBLIC_KEY_LEN];
  sp_identity *id;
  sp_leader_claim c, c2;

  (void)state;
  assert_int_equal(sp_identity_generate(&id, NULL, NULL), 0);
  sp_identity_public_key(id, pk);
  assert_int_equal(sp_leader_claim_sign(&c, id, &lib, UINT64_MAX), 0);
  assert_true(c.epoch == UINT64_MAX);
  assert_memory_equal(&c.leader, sp_identity_device_id(id), sizeof(sp_uuid));
  assert_int_equal(sp_leader_claim_verify(&c, &lib, pk), 0);
  /* Deterministic: the same claim twice is byte-identical (a handler's
   * cache of its held claim relies on it). */
  assert_int_equal(sp_leader_claim_sign(&c2, id, &lib, UINT64_MAX), 0);
  assert_memory_equal(&c, &c2, sizeof(c));
  assert_int_equal(sp_leader_claim_sign(&c2, id, &lib, 1), 0);
  assert_memory_not_equal(c.signature, c2.signature, SP_CLAIM_SIG_LEN);
  sp_identity_del(id);
}

static void test_arguments(void **state) {
  const sp_uuid lib = library_id();
  const sp_leader_claim good = vector_claim(7, k_sig7_hex);
  uint8_t pk[SP_PUBLIC_KEY_LEN] = {0};
  sp_identity *id;
  sp_leader_claim c;

  (void)state;
  assert_int_equal(sp_identity_generate(&id, NULL, NULL), 0);
  assert_int_equal(sp_leader_claim_sign(NULL, id, &lib, 1),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_leader_claim_sign(&c, NULL, &lib, 1),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_leader_claim_sign(&c, id, NULL, 1),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_leader_claim_verify(NULL, &lib, pk),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_leader_claim_verify(&good, NULL, pk),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_leader_claim_verify(&good, &lib, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  /* An all-zero key (a small-order point) verifies nothing. */
  assert_int_equal(sp_leader_claim_verify(&good, &lib, pk),
                   SP_ERR_UNPROVEN_EPOCH);
  sp_identity_del(id);
}

/* ---- a claim through the codec ---- */

/* Sign, carry in a Heartbeat and an Error, decode, verify: what a
 * receiver holds is exactly what the signer made. */
static void test_claim_through_the_codec(void **state) {
  const sp_uuid lib = library_id();
  uint8_t pk[SP_PUBLIC_KEY_LEN], frame[256];
  sp_identity *id;
  sp_leader_claim c;
  sp_decoder *dec;
  sp_msg m, got;
  size_t nw;
  int k;

  (void)state;
  assert_int_equal(sp_identity_generate(&id, NULL, NULL), 0);
  sp_identity_public_key(id, pk);
  assert_int_equal(sp_leader_claim_sign(&c, id, &lib, 1000), 0);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  for (k = 0; k < 2; ++k) {
    const sp_leader_claim *gc;
    memset(&m, 0, sizeof(m));
    m.library_id = lib;
    m.epoch = 1000;
    if (k == 0) {
      m.type = SP_MSG_HEARTBEAT;
      m.u.heartbeat.role = SP_ROLE_FOLLOWER;
      m.u.heartbeat.has_features = 1;
      m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
      m.u.heartbeat.has_claim = 1;
      m.u.heartbeat.claim = c;
    } else {
      m.type = SP_MSG_ERROR;
      m.u.error.code = SP_ERR_STALE_EPOCH;
      m.u.error.has_claim = 1;
      m.u.error.claim = c;
    }
    assert_int_equal(sp_msg_encode(&m, frame, sizeof(frame), &nw), 0);
    assert_int_equal(nw, sp_msg_encoded_len(&m));
    assert_int_equal(sp_decoder_decode(dec, frame + SP_FRAME_HEADER_LEN,
                                       nw - SP_FRAME_HEADER_LEN, &got),
                     0);
    gc = k == 0 ? &got.u.heartbeat.claim : &got.u.error.claim;
    assert_true(k == 0 ? got.u.heartbeat.has_claim : got.u.error.has_claim);
    assert_memory_equal(gc, &c, sizeof(c));
    assert_int_equal(sp_leader_claim_verify(gc, &got.library_id, pk), 0);
  }
  sp_decoder_del(dec);
  sp_identity_del(id);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_public_key_of_the_test_seed),
      cmocka_unit_test(test_message_bytes),
      cmocka_unit_test(test_signatures_are_the_vectors),
      cmocka_unit_test(test_verify_refuses_every_flipped_bit),
      cmocka_unit_test(test_verify_refuses_another_key),
      cmocka_unit_test(test_sign_with_a_generated_identity),
      cmocka_unit_test(test_arguments),
      cmocka_unit_test(test_claim_through_the_codec),
  };

  if (sodium_init() < 0) {
    return 1;
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
