/*
 * sp_claim.c: signing and verifying leadership claims (Ed25519, RFC 8032
 * pure, through libsodium).
 */
#include <string.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/identity.h"
#include "sp_claim.h"
#include "sp_identity_int.h"

_Static_assert(SP_CLAIM_CONTEXT_LEN + 16 + 8 + 16 == SP_CLAIM_MSG_LEN,
               "claim message layout");
_Static_assert(SP_CLAIM_SIG_LEN == crypto_sign_BYTES, "claim signature");
_Static_assert(SP_PUBLIC_KEY_LEN == crypto_sign_PUBLICKEYBYTES,
               "claim key");
_Static_assert(SP_SECRET_SEED_LEN == crypto_sign_SEEDBYTES, "claim seed");

void sp_claim_message(uint8_t out[SP_CLAIM_MSG_LEN], const sp_uuid *library,
                      uint64_t epoch, const sp_uuid *leader) {
  uint8_t *p = out;
  int i;

  memcpy(p, SP_CLAIM_CONTEXT, SP_CLAIM_CONTEXT_LEN);
  p += SP_CLAIM_CONTEXT_LEN;
  memcpy(p, library->bytes, sizeof(library->bytes));
  p += sizeof(library->bytes);
  for (i = 7; i >= 0; --i) {
    *p++ = (uint8_t)(epoch >> (8 * i));
  }
  memcpy(p, leader->bytes, sizeof(leader->bytes));
}

int sp_leader_claim_sign(sp_leader_claim *out, const sp_identity *id,
                         const sp_uuid *library, uint64_t epoch) {
  uint8_t seed[SP_SECRET_SEED_LEN];
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  uint8_t sk[crypto_sign_SECRETKEYBYTES];
  uint8_t msg[SP_CLAIM_MSG_LEN];

  if (!out || !id || !library) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  memset(out, 0, sizeof(*out));
  out->epoch = epoch;
  out->leader = *sp_identity_device_id(id);
  sp_claim_message(msg, library, epoch, &out->leader);
  /* The identity keeps only the seed; libsodium signs with the expanded
   * key, which is as secret and is wiped with it.  An identity exists, so
   * sodium_init has run. */
  sp_identity_secret_seed(id, seed);
  crypto_sign_seed_keypair(pk, sk, seed);
  crypto_sign_detached(out->signature, NULL, msg, sizeof(msg), sk);
  sodium_memzero(sk, sizeof(sk));
  sodium_memzero(seed, sizeof(seed));
  return 0;
}

int sp_leader_claim_verify(const sp_leader_claim *claim,
                           const sp_uuid *library,
                           const uint8_t public_key[SP_PUBLIC_KEY_LEN]) {
  uint8_t msg[SP_CLAIM_MSG_LEN];

  if (!claim || !library || !public_key) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* A library that cannot start proves nothing: fail closed. */
  if (sodium_init() < 0) {
    return SP_ERR_UNPROVEN_EPOCH;
  }
  sp_claim_message(msg, library, claim->epoch, &claim->leader);
  return crypto_sign_verify_detached(claim->signature, msg, sizeof(msg),
                                     public_key) == 0
             ? 0
             : SP_ERR_UNPROVEN_EPOCH;
}
