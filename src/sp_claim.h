/*
 * sp_claim.h: the bytes a leadership claim signs (docs/protocol.md
 * section 15).  Signing and verifying are public (identity.h); the
 * registry's part of a claim's validity is the handler's (sp_leadership.c).
 */
#ifndef SP_CLAIM_H
#define SP_CLAIM_H

#include <stdint.h>

#include "sync_protocol/codec.h"

/* Domain separation: no other signature of a device key can be taken for
 * a claim, and a new claim format gets a new context. */
#define SP_CLAIM_CONTEXT "sync_protocol leader claim v1"
#define SP_CLAIM_CONTEXT_LEN (sizeof(SP_CLAIM_CONTEXT) - 1)

/* Context (29) || library id (16) || epoch (8, big-endian) || leader (16). */
#define SP_CLAIM_MSG_LEN 69

/* The signed bytes of the claim that `leader` leads `library` at `epoch`. */
void sp_claim_message(uint8_t out[SP_CLAIM_MSG_LEN], const sp_uuid *library,
                      uint64_t epoch, const sp_uuid *leader);

#endif /* SP_CLAIM_H */
