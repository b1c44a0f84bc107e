/*
 * sp_uuid.c: UUID text form and generation.
 */
#include <string.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"

static const char hexdig[] = "0123456789abcdef";

/* Byte indexes after which the text form has a dash. */
static int dash_after(size_t i) { return i == 3 || i == 5 || i == 7 || i == 9; }

char *sp_uuid_format(const sp_uuid *uuid, char out[SP_UUID_STRING_LEN + 1]) {
  size_t i;
  char *p = out;

  for (i = 0; i < 16; ++i) {
    *p++ = hexdig[uuid->bytes[i] >> 4];
    *p++ = hexdig[uuid->bytes[i] & 0xf];
    if (dash_after(i)) {
      *p++ = '-';
    }
  }
  *p = '\0';
  return out;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

int sp_uuid_parse(sp_uuid *out, const char *text) {
  sp_uuid u;
  size_t i;
  const char *p = text;

  if (!out || !text || strlen(text) != SP_UUID_STRING_LEN) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < 16; ++i) {
    int hi = hexval(p[0]), lo = hexval(p[1]);
    if (hi < 0 || lo < 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    u.bytes[i] = (uint8_t)(hi << 4 | lo);
    p += 2;
    if (dash_after(i)) {
      if (*p != '-') {
        return SP_ERR_INVALID_ARGUMENT;
      }
      ++p;
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
