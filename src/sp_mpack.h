/*
 * sp_mpack.h: a strict, bounded msgpack reader.
 *
 * Why not msgpack-c's unpacker: it allocates storage for a container from
 * the length the container declares, before reading any element, so a
 * five-byte input can make it map gigabytes, and it allocates with malloc
 * rather than the caller's sp_mem.  This reader reads one value at a time
 * from a cursor, checks every length against the bytes that remain, never
 * allocates and says precisely what was wrong.  msgpack-c still encodes
 * (sp_enc.c) and serves as the reference decoder in the tests.
 */
#ifndef SP_MPACK_H
#define SP_MPACK_H

#include <stddef.h>
#include <stdint.h>

typedef struct sp_mp {
  const uint8_t *p;
  const uint8_t *end;
} sp_mp;

/* Deepest nesting sp_mp_skip accepts inside a skipped value. */
#define SP_MP_MAX_DEPTH 32

static inline void sp_mp_init(sp_mp *mp, const uint8_t *p, size_t len) {
  mp->p = p;
  /* (NULL, 0) is a valid empty input, and NULL + 0 is undefined in C. */
  mp->end = len ? p + len : p;
}

static inline size_t sp_mp_left(const sp_mp *mp) {
  return (size_t)(mp->end - mp->p);
}

/* Each reader consumes one value and returns 0, or returns an SP_ERR_*
 * decode code and leaves the cursor unspecified. */

/* An array header (fixarray, array16, array32): element count. */
int sp_mp_array(sp_mp *mp, uint32_t *n);
/* Any integer encoding whose value is >= 0 and fits in uint64. */
int sp_mp_uint(sp_mp *mp, uint64_t *v);
/* Any integer encoding whose value fits in int64. */
int sp_mp_int(sp_mp *mp, int64_t *v);
/* true / false. */
int sp_mp_bool(sp_mp *mp, int *v);
/* bin8/16/32: pointer into the input and length. */
int sp_mp_bin(sp_mp *mp, const uint8_t **data, uint32_t *len);
/* fixstr/str8/16/32, checked to be UTF-8. */
int sp_mp_str(sp_mp *mp, const char **data, uint32_t *len);
/* 1 and the nil consumed if the next value is nil; else 0, cursor kept
 * (the caller reads the value as its type, errors included). */
int sp_mp_nil(sp_mp *mp);
/* Skip one well-formed value of any type (nesting <= SP_MP_MAX_DEPTH). */
int sp_mp_skip(sp_mp *mp);

/* 1 if `s` (`len` bytes) is valid UTF-8 (no overlongs, no surrogates). */
int sp_utf8_valid(const uint8_t *s, size_t len);

#endif /* SP_MPACK_H */
