/*
 * uuid.h: formatting, parsing and generating the 16-byte UUIDs used for
 * libraries, devices and records.
 */
#ifndef SYNC_PROTOCOL_UUID_H
#define SYNC_PROTOCOL_UUID_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Characters of a formatted UUID, without the terminating NUL. */
#define SP_UUID_STRING_LEN 36

/*
 * Write `uuid` as 36 lowercase characters (8-4-4-4-12) plus a NUL into
 * `out`, which must hold SP_UUID_STRING_LEN + 1 bytes.  Returns `out`.
 */
SP_API char *sp_uuid_format(const sp_uuid *uuid,
                            char out[SP_UUID_STRING_LEN + 1]);

/*
 * Parse the 8-4-4-4-12 hex form (either case) from the NUL-terminated
 * `text` into `*out`.  Returns 0, or SP_ERR_INVALID_ARGUMENT (NULL, wrong
 * length, bad character); `*out` is untouched on error.
 */
SP_API int sp_uuid_parse(sp_uuid *out, const char *text);

/* Fill `*out` with a random (version 4) UUID from libsodium's CSPRNG. */
SP_API void sp_uuid_generate(sp_uuid *out);

/* Return 1 if the two UUIDs are equal, else 0. */
SP_API int sp_uuid_equal(const sp_uuid *a, const sp_uuid *b);

/* Return 1 if every byte is zero, else 0. */
SP_API int sp_uuid_is_nil(const sp_uuid *uuid);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_UUID_H */
