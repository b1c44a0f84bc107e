/*
 * jsonl.c: the strict JSON-object parser of jsonl.h.
 */
#include <stdio.h>
#include <string.h>

#include "jsonl.h"

typedef struct parser {
  char *s;
  size_t len;
  size_t pos;
  char *err;
  size_t errlen;
} parser;

static int fail(parser *p, const char *what) {
  snprintf(p->err, p->errlen, "column %zu: %s", p->pos + 1, what);
  return -1;
}

static void skip_ws(parser *p) {
  while (p->pos < p->len &&
         (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
          p->s[p->pos] == '\n' || p->s[p->pos] == '\r')) {
    p->pos++;
  }
}

/* Length of the valid UTF-8 sequence at `s` (at most `avail` bytes), or
 * 0: overlong forms, surrogates and code points past U+10FFFF are
 * invalid, as RFC 3629 says. */
static size_t utf8_seq(const unsigned char *s, size_t avail) {
  unsigned c = s[0], need, i;
  uint32_t cp;

  if (c < 0x80) {
    return 1;
  }
  if (c >= 0xc2 && c <= 0xdf) {
    need = 1, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 2, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 3, cp = c & 0x07;
  } else {
    return 0;
  }
  if (avail < need + 1) {
    return 0;
  }
  for (i = 1; i <= need; ++i) {
    if ((s[i] & 0xc0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (need == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
    return 0;
  }
  return need + 1;
}

static int hex4(parser *p, uint32_t *out) {
  uint32_t v = 0;
  int i;

  if (p->len - p->pos < 4) {
    return fail(p, "\\u needs four hex digits");
  }
  for (i = 0; i < 4; ++i) {
    char c = p->s[p->pos + (size_t)i];
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= (uint32_t)(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v |= (uint32_t)(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v |= (uint32_t)(c - 'A' + 10);
    } else {
      return fail(p, "\\u needs four hex digits");
    }
  }
  p->pos += 4;
  *out = v;
  return 0;
}

static size_t put_utf8(char *d, uint32_t cp) {
  if (cp < 0x80) {
    d[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (char)(0xc0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (char)(0xe0 | (cp >> 12));
    d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  d[0] = (char)(0xf0 | (cp >> 18));
  d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  d[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* A \u escape (after the "\u"), possibly a surrogate pair; writes the
 * code point's UTF-8 at *w.  Escapes never take more bytes decoded than
 * written, so decoding in place cannot overrun what was read. */
static int unicode_escape(parser *p, char **w) {
  uint32_t cp, lo;

  if (hex4(p, &cp) != 0) {
    return -1;
  }
  if (cp >= 0xdc00 && cp <= 0xdfff) {
    return fail(p, "lone low surrogate in \\u escape");
  }
  if (cp >= 0xd800 && cp <= 0xdbff) {
    if (p->len - p->pos < 2 || p->s[p->pos] != '\\' ||
        p->s[p->pos + 1] != 'u') {
      return fail(p, "high surrogate not followed by a \\u low surrogate");
    }
    p->pos += 2;
    if (hex4(p, &lo) != 0) {
      return -1;
    }
    if (lo < 0xdc00 || lo > 0xdfff) {
      return fail(p, "high surrogate not followed by a low surrogate");
    }
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
  }
  *w += put_utf8(*w, cp);
  return 0;
}

/* A string starting at the opening quote; decoded in place. */
static int string(parser *p, char **out, size_t *out_len) {
  char *w;

  if (p->pos >= p->len || p->s[p->pos] != '"') {
    return fail(p, "expected a string");
  }
  p->pos++;
  *out = w = p->s + p->pos;
  for (;;) {
    unsigned char c;
    size_t n;

    if (p->pos >= p->len) {
      return fail(p, "unterminated string");
    }
    c = (unsigned char)p->s[p->pos];
    if (c == '"') {
      p->pos++;
      *out_len = (size_t)(w - *out);
      return 0;
    }
    if (c < 0x20) {
      return fail(p, "control character in a string (escape it)");
    }
    if (c != '\\') {
      n = utf8_seq((const unsigned char *)p->s + p->pos, p->len - p->pos);
      if (n == 0) {
        return fail(p, "invalid UTF-8");
      }
      memmove(w, p->s + p->pos, n);
      w += n;
      p->pos += n;
      continue;
    }
    if (++p->pos >= p->len) {
      return fail(p, "unterminated escape");
    }
    c = (unsigned char)p->s[p->pos++];
    switch (c) {
    case '"': *w++ = '"'; break;
    case '\\': *w++ = '\\'; break;
    case '/': *w++ = '/'; break;
    case 'b': *w++ = '\b'; break;
    case 'f': *w++ = '\f'; break;
    case 'n': *w++ = '\n'; break;
    case 'r': *w++ = '\r'; break;
    case 't': *w++ = '\t'; break;
    case 'u':
      if (unicode_escape(p, &w) != 0) {
        return -1;
      }
      break;
    default:
      p->pos--;
      return fail(p, "unknown escape");
    }
  }
}

static int integer(parser *p, jsonl_field *f) {
  uint64_t v = 0;
  size_t start;

  f->type = JSONL_INT;
  f->negative = 0;
  if (p->s[p->pos] == '-') {
    f->negative = 1;
    p->pos++;
  }
  start = p->pos;
  while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
    unsigned d = (unsigned)(p->s[p->pos] - '0');
    if (v > (UINT64_MAX - d) / 10) {
      return fail(p, "integer out of range");
    }
    v = v * 10 + d;
    p->pos++;
  }
  if (p->pos == start) {
    return fail(p, "expected a digit");
  }
  if (p->s[start] == '0' && p->pos - start > 1) {
    p->pos = start;
    return fail(p, "leading zero in an integer");
  }
  if (p->pos < p->len &&
      (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    return fail(p, "only integers are accepted (no fraction or exponent)");
  }
  f->magnitude = v;
  return 0;
}

static int value(parser *p, jsonl_field *f) {
  char c;

  if (p->pos >= p->len) {
    return fail(p, "expected a value");
  }
  c = p->s[p->pos];
  if (c == '"') {
    f->type = JSONL_STRING;
    return string(p, &f->str, &f->str_len);
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    return integer(p, f);
  }
  return fail(p, "values must be strings or integers");
}

int jsonl_parse(char *line, size_t len, jsonl_field *out, size_t max,
                size_t *n, char *err, size_t errlen) {
  parser p;
  size_t i;

  p.s = line;
  p.len = len;
  p.pos = 0;
  p.err = err;
  p.errlen = errlen;
  *n = 0;
  skip_ws(&p);
  if (p.pos >= p.len || p.s[p.pos] != '{') {
    return fail(&p, "expected '{' (one JSON object per line)");
  }
  p.pos++;
  skip_ws(&p);
  if (p.pos < p.len && p.s[p.pos] == '}') {
    p.pos++;
  } else {
    for (;;) {
      jsonl_field *f;

      if (*n == max) {
        return fail(&p, "too many keys");
      }
      f = &out[*n];
      memset(f, 0, sizeof(*f));
      if (string(&p, &f->key, &f->key_len) != 0) {
        return -1;
      }
      for (i = 0; i < *n; ++i) {
        if (out[i].key_len == f->key_len &&
            memcmp(out[i].key, f->key, f->key_len) == 0) {
          return fail(&p, "duplicate key");
        }
      }
      skip_ws(&p);
      if (p.pos >= p.len || p.s[p.pos] != ':') {
        return fail(&p, "expected ':'");
      }
      p.pos++;
      skip_ws(&p);
      if (value(&p, f) != 0) {
        return -1;
      }
      ++*n;
      skip_ws(&p);
      if (p.pos < p.len && p.s[p.pos] == ',') {
        p.pos++;
        skip_ws(&p);
        continue;
      }
      if (p.pos < p.len && p.s[p.pos] == '}') {
        p.pos++;
        break;
      }
      return fail(&p, "expected ',' or '}'");
    }
  }
  skip_ws(&p);
  if (p.pos != p.len) {
    return fail(&p, "unexpected bytes after the object");
  }
  return 0;
}

const jsonl_field *jsonl_find(const jsonl_field *f, size_t n,
                              const char *key) {
  size_t klen = strlen(key), i;

  for (i = 0; i < n; ++i) {
    if (f[i].key_len == klen && memcmp(f[i].key, key, klen) == 0) {
      return &f[i];
    }
  }
  return NULL;
}
