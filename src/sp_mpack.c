/*
 * sp_mpack.c: strict, bounded msgpack reader (see sp_mpack.h for why).
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_mpack.h"

static uint64_t be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  size_t i;

  for (i = 0; i < n; ++i) {
    v = v << 8 | p[i];
  }
  return v;
}

/* Take `n` bytes after the type byte, or fail with SP_ERR_TRUNCATED. */
static int take(sp_mp *mp, size_t n, const uint8_t **out) {
  if (sp_mp_left(mp) < n) {
    return SP_ERR_TRUNCATED;
  }
  *out = mp->p;
  mp->p += n;
  return 0;
}

static int type_byte(sp_mp *mp, uint8_t *b) {
  if (mp->p >= mp->end) {
    return SP_ERR_TRUNCATED;
  }
  *b = *mp->p++;
  return *b == 0xc1 ? SP_ERR_MSGPACK : 0;
}

/* Width of a length-prefixed header's length field, by type byte. */
static size_t len_width(uint8_t b, uint8_t first) {
  return (size_t)1 << (b - first);
}

int sp_mp_array(sp_mp *mp, uint32_t *n) {
  uint8_t b;
  const uint8_t *q;
  int rv = type_byte(mp, &b);

  if (rv != 0) {
    return rv;
  }
  if (b >= 0x90 && b <= 0x9f) {
    *n = b & 0x0f;
    return 0;
  }
  if (b != 0xdc && b != 0xdd) {
    return SP_ERR_WRONG_TYPE;
  }
  rv = take(mp, b == 0xdc ? 2 : 4, &q);
  if (rv != 0) {
    return rv;
  }
  *n = (uint32_t)be(q, b == 0xdc ? 2 : 4);
  return 0;
}

/* Reads any integer as sign + magnitude.  `neg` set means value < 0. */
static int read_int(sp_mp *mp, int *neg, uint64_t *mag) {
  uint8_t b;
  const uint8_t *q;
  size_t w;
  int rv = type_byte(mp, &b);

  if (rv != 0) {
    return rv;
  }
  if (b <= 0x7f) {
    *neg = 0;
    *mag = b;
    return 0;
  }
  if (b >= 0xe0) {
    *neg = 1;
    *mag = (uint64_t)(256 - b);
    return 0;
  }
  if (b >= 0xcc && b <= 0xcf) {
    w = len_width(b, 0xcc);
    rv = take(mp, w, &q);
    if (rv == 0) {
      *neg = 0;
      *mag = be(q, w);
    }
    return rv;
  }
  if (b >= 0xd0 && b <= 0xd3) {
    uint64_t raw;
    w = len_width(b, 0xd0);
    rv = take(mp, w, &q);
    if (rv != 0) {
      return rv;
    }
    raw = be(q, w);
    /* Two's complement of width w: the top bit says negative. */
    if (raw >> (w * 8 - 1)) {
      *neg = 1;
      *mag = w == 8 ? (~raw + 1) : ((uint64_t)1 << (w * 8)) - raw;
    } else {
      *neg = 0;
      *mag = raw;
    }
    return 0;
  }
  return SP_ERR_WRONG_TYPE;
}

int sp_mp_uint(sp_mp *mp, uint64_t *v) {
  int neg;
  uint64_t mag;
  int rv = read_int(mp, &neg, &mag);

  if (rv != 0) {
    return rv;
  }
  if (neg) {
    return SP_ERR_INT_RANGE;
  }
  *v = mag;
  return 0;
}

int sp_mp_int(sp_mp *mp, int64_t *v) {
  int neg;
  uint64_t mag;
  int rv = read_int(mp, &neg, &mag);

  if (rv != 0) {
    return rv;
  }
  if (!neg) {
    if (mag > (uint64_t)INT64_MAX) {
      return SP_ERR_INT_RANGE;
    }
    *v = (int64_t)mag;
  } else if (mag == (uint64_t)INT64_MAX + 1) {
    *v = INT64_MIN;
  } else {
    *v = -(int64_t)mag;
  }
  return 0;
}

int sp_mp_bool(sp_mp *mp, int *v) {
  uint8_t b;
  int rv = type_byte(mp, &b);

  if (rv != 0) {
    return rv;
  }
  if (b != 0xc2 && b != 0xc3) {
    return SP_ERR_WRONG_TYPE;
  }
  *v = b == 0xc3;
  return 0;
}

int sp_mp_nil(sp_mp *mp) {
  if (mp->p < mp->end && *mp->p == 0xc0) {
    ++mp->p;
    return 1;
  }
  return 0;
}

/* Reads a length-prefixed body whose header starts at `first` (3 widths). */
static int sized(sp_mp *mp, uint8_t b, uint8_t first, const uint8_t **data,
                 uint32_t *len) {
  const uint8_t *q;
  size_t w = len_width(b, first);
  uint64_t n;
  int rv = take(mp, w, &q);

  if (rv != 0) {
    return rv;
  }
  n = be(q, w);
  rv = take(mp, (size_t)n, data);
  if (rv == 0) {
    *len = (uint32_t)n;
  }
  return rv;
}

int sp_mp_bin(sp_mp *mp, const uint8_t **data, uint32_t *len) {
  uint8_t b;
  int rv = type_byte(mp, &b);

  if (rv != 0) {
    return rv;
  }
  if (b < 0xc4 || b > 0xc6) {
    return SP_ERR_WRONG_TYPE;
  }
  return sized(mp, b, 0xc4, data, len);
}

int sp_mp_str(sp_mp *mp, const char **data, uint32_t *len) {
  uint8_t b;
  const uint8_t *q;
  int rv = type_byte(mp, &b);

  if (rv != 0) {
    return rv;
  }
  if (b >= 0xa0 && b <= 0xbf) {
    *len = b & 0x1f;
    rv = take(mp, *len, &q);
  } else if (b >= 0xd9 && b <= 0xdb) {
    rv = sized(mp, b, 0xd9, &q, len);
  } else {
    return SP_ERR_WRONG_TYPE;
  }
  if (rv != 0) {
    return rv;
  }
  if (!sp_utf8_valid(q, *len)) {
    return SP_ERR_UTF8;
  }
  *data = (const char *)q;
  return 0;
}

/* Skips the payload of a value whose type byte `b` was read; containers
 * report their element count in `*children` instead. */
static int skip_one(sp_mp *mp, uint8_t b, uint64_t *children) {
  const uint8_t *q;
  uint32_t n;
  size_t w;

  *children = 0;
  if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3)) {
    return 0;
  }
  if (b >= 0x80 && b <= 0x8f) {
    *children = 2u * (b & 0x0fu);
    return 0;
  }
  if (b >= 0x90 && b <= 0x9f) {
    *children = b & 0x0fu;
    return 0;
  }
  if (b >= 0xa0 && b <= 0xbf) {
    return take(mp, b & 0x1fu, &q);
  }
  switch (b) {
  case 0xc4: case 0xc5: case 0xc6:
    return sized(mp, b, 0xc4, &q, &n);
  case 0xd9: case 0xda: case 0xdb:
    return sized(mp, b, 0xd9, &q, &n);
  case 0xc7: case 0xc8: case 0xc9: {
    /* ext: length, type byte, data */
    int rv;
    w = len_width(b, 0xc7);
    rv = take(mp, w, &q);
    if (rv != 0) {
      return rv;
    }
    return take(mp, (size_t)be(q, w) + 1, &q);
  }
  case 0xca: return take(mp, 4, &q);
  case 0xcb: return take(mp, 8, &q);
  case 0xcc: case 0xcd: case 0xce: case 0xcf:
    return take(mp, len_width(b, 0xcc), &q);
  case 0xd0: case 0xd1: case 0xd2: case 0xd3:
    return take(mp, len_width(b, 0xd0), &q);
  case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
    return take(mp, 1 + len_width(b, 0xd4), &q);
  case 0xdc: case 0xdd: case 0xde: case 0xdf: {
    int is_map = b >= 0xde;
    int rv;
    w = (b == 0xdc || b == 0xde) ? 2 : 4;
    rv = take(mp, w, &q);
    if (rv != 0) {
      return rv;
    }
    *children = be(q, w) * (is_map ? 2u : 1u);
    return 0;
  }
  default:
    return SP_ERR_MSGPACK;
  }
}

int sp_mp_skip(sp_mp *mp) {
  /* remaining[d]: values still to skip at depth d. */
  uint64_t remaining[SP_MP_MAX_DEPTH + 1];
  int depth = 0;

  remaining[0] = 1;
  while (depth >= 0) {
    uint8_t b;
    uint64_t children;
    int rv;

    if (remaining[depth] == 0) {
      --depth;
      continue;
    }
    --remaining[depth];
    rv = type_byte(mp, &b);
    if (rv != 0) {
      return rv;
    }
    rv = skip_one(mp, b, &children);
    if (rv != 0) {
      return rv;
    }
    if (children > 0) {
      /* Every element takes at least one byte: reject impossible counts
       * before looping over them. */
      if (children > sp_mp_left(mp)) {
        return SP_ERR_TRUNCATED;
      }
      if (depth == SP_MP_MAX_DEPTH) {
        return SP_ERR_NESTING;
      }
      remaining[++depth] = children;
    }
  }
  return 0;
}

int sp_utf8_valid(const uint8_t *s, size_t len) {
  size_t i = 0;

  /* ASCII, eight bytes at a time: model types and messages mostly are. */
  while (len - i >= 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    if (w & 0x8080808080808080ull) {
      break;
    }
    i += 8;
  }
  while (i < len) {
    uint8_t c = s[i];
    size_t n;
    uint32_t cp, min;

    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (len - i - 1 < n) {
      return 0;
    }
    for (size_t k = 1; k <= n; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) {
        return 0;
      }
      cp = cp << 6 | (s[i + k] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return 0;
    }
    i += n + 1;
  }
  return 1;
}
