/*
 * sp_uuid.c: UUID text form and generation.
 */
#include <string.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"

/* The text form's groups (8-4-4-4-12 digits): their bytes, each group
 * followed by a dash but the last. */
static const size_t group_bytes[] = {4, 2, 2, 2, 6};
#define NGROUPS (sizeof(group_bytes) / sizeof(group_bytes[0]))

char *sp_uuid_format(const sp_uuid *uuid, char out[SP_UUID_STRING_LEN + 1]) {
  const uint8_t *b = uuid->bytes;
  char *p = out;
  size_t g;

  for (g = 0; g < NGROUPS; ++g) {
    /* Lowercase; writes a NUL after the group, which the dash replaces. */
    sodium_bin2hex(p, 2 * group_bytes[g] + 1, b, group_bytes[g]);
    p += 2 * group_bytes[g];
    b += group_bytes[g];
    if (g + 1 < NGROUPS) {
      *p++ = '-';
    }
  }
  return out;
}

int sp_uuid_parse(sp_uuid *out, const char *text) {
  sp_uuid u;
  uint8_t *b = u.bytes;
  const char *p = text, *end;
  size_t g, len;

  if (!out || !text || strlen(text) != SP_UUID_STRING_LEN) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (g = 0; g < NGROUPS; ++g) {
    size_t n = group_bytes[g];
    /* Each group on its own: dashes exactly where they belong, not
     * skipped anywhere as libsodium's `ignore` would. */
    if (sodium_hex2bin(b, n, p, 2 * n, NULL, &len, &end) != 0 || len != n ||
        end != p + 2 * n) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    p += 2 * n;
    b += n;
    if (g + 1 < NGROUPS && *p++ != '-') {
      return SP_ERR_INVALID_ARGUMENT;
    }
  }
  *out = u;
  return 0;
}

void sp_uuid_generate(sp_uuid *out) {
  /* Idempotent; makes the CSPRNG safe to use from any thread.  On failure
   * randombytes still works: it opens its source lazily. */
  if (sodium_init() < 0) {
    /* nothing to do */
  }
  randombytes_buf(out->bytes, sizeof(out->bytes));
  out->bytes[6] = (uint8_t)((out->bytes[6] & 0x0f) | 0x40);
  out->bytes[8] = (uint8_t)((out->bytes[8] & 0x3f) | 0x80);
}

int sp_uuid_equal(const sp_uuid *a, const sp_uuid *b) {
  return memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

int sp_uuid_is_nil(const sp_uuid *uuid) {
  static const sp_uuid nil;
  return sp_uuid_equal(uuid, &nil);
}
