/*
 * identity.h: a device's Ed25519 identity (libsodium) and its key file.
 *
 * The key file holds the device id and the secret key.  It is created with
 * mode 0600, and loading refuses a file that group or others may read, as
 * ssh does: a key others could have copied no longer proves anything.
 */
#ifndef SYNC_PROTOCOL_IDENTITY_H
#define SYNC_PROTOCOL_IDENTITY_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/codec.h"
#include "sync_protocol/sys/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_identity sp_identity;

/* Characters of a fingerprint, without the terminating NUL. */
#define SP_FINGERPRINT_LEN 53

/*
 * Generate a new key pair for `device_id` (NULL: a random device id).
 * Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_NOMEM, or SP_ERR_INTERNAL
 * (libsodium could not initialise).
 */
SP_API int sp_identity_generate(sp_identity **pid, const sp_uuid *device_id,
                                const sp_mem *mem);

/*
 * Write the identity to a new file at `path` (NUL-terminated; copied),
 * created with mode 0600 and fsync'ed.  An existing file is never
 * overwritten.  Returns 0, SP_ERR_EXISTS (a file is there), SP_ERR_IO
 * (errno tells why), SP_ERR_INVALID_ARGUMENT.
 */
SP_API int sp_identity_save(const sp_identity *id, const char *path);

/*
 * Read an identity from `path`.  Returns 0, SP_ERR_KEYFILE_PERMISSIONS
 * (group or others may read or write it, or it is not a regular file),
 * SP_ERR_KEYFILE_FORMAT (not a key file, or its public key does not match
 * its secret), SP_ERR_IO (missing, unreadable; errno tells why),
 * SP_ERR_INVALID_ARGUMENT, SP_ERR_NOMEM, SP_ERR_INTERNAL (libsodium could
 * not initialise).
 */
SP_API int sp_identity_load(sp_identity **pid, const char *path,
                            const sp_mem *mem);

/* Wipe the secret key and free.  NULL is allowed. */
SP_API void sp_identity_del(sp_identity *id);

/* Returns the device id (owned by `id`, valid while it lives). */
SP_API const sp_uuid *sp_identity_device_id(const sp_identity *id);

/* Copy the raw Ed25519 public key into `out`. */
SP_API void sp_identity_public_key(const sp_identity *id,
                                   uint8_t out[SP_PUBLIC_KEY_LEN]);

/*
 * Write the printable fingerprint of `public_key` into `out` (at least
 * SP_FINGERPRINT_LEN + 1 bytes): "sp1:" then the first 20 bytes of
 * BLAKE2b-256(key) as 40 lowercase hex digits in ten groups of four joined
 * by ":" (53 characters).
 * Returns 0, SP_ERR_INVALID_ARGUMENT or SP_ERR_NOBUF.
 */
SP_API int sp_identity_fingerprint(const uint8_t public_key[SP_PUBLIC_KEY_LEN],
                                   char *out, size_t outlen);

/*
 * Write `key` as 64 lowercase hex characters plus a NUL into `out`, the
 * form pairing files use.
 */
SP_API void sp_public_key_format(const uint8_t key[SP_PUBLIC_KEY_LEN],
                                 char out[2 * SP_PUBLIC_KEY_LEN + 1]);

/*
 * Parse 64 hex digits (either case) from NUL-terminated `text` into `key`.
 * Returns 0, or SP_ERR_INVALID_ARGUMENT (NULL, wrong length, not hex);
 * `key` is untouched on error.
 */
SP_API int sp_public_key_parse(uint8_t key[SP_PUBLIC_KEY_LEN],
                               const char *text);

/*
 * Sign a leadership claim: this identity's device leads `library` at
 * `epoch` (docs/protocol.md section 15).  Fills `*out` (epoch, leader =
 * the identity's device id, the Ed25519 signature).  Returns 0 or
 * SP_ERR_INVALID_ARGUMENT (a NULL pointer).
 */
SP_API int sp_leader_claim_sign(sp_leader_claim *out, const sp_identity *id,
                                const sp_uuid *library, uint64_t epoch);

/*
 * Check the signature of `claim` for `library` against `public_key` (the
 * key of claim->leader).  Only the signature: whether that device may
 * lead is the registry's to say.  Returns 0, SP_ERR_UNPROVEN_EPOCH (it
 * does not verify) or SP_ERR_INVALID_ARGUMENT.
 */
SP_API int sp_leader_claim_verify(const sp_leader_claim *claim,
                                  const sp_uuid *library,
                                  const uint8_t public_key[SP_PUBLIC_KEY_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_IDENTITY_H */
