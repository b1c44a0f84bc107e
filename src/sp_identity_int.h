/*
 * sp_identity_int.h: what the transport needs from an identity beyond
 * the public API (the secret, to make the TLS credentials).
 */
#ifndef SP_IDENTITY_INT_H
#define SP_IDENTITY_INT_H

#include <stdint.h>

#include "sync_protocol/identity.h"

/* Length of an Ed25519 secret seed (RFC 8032 private key). */
#define SP_SECRET_SEED_LEN 32

/* Copy the secret seed into `seed`; the caller wipes it after use. */
void sp_identity_secret_seed(const sp_identity *id,
                             uint8_t seed[SP_SECRET_SEED_LEN]);

#endif /* SP_IDENTITY_INT_H */
