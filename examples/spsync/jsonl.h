/*
 * jsonl.h: a small, strict parser for one line of JSON lines input: a
 * single JSON object (RFC 8259) whose values are strings or integers.
 * Anything else -- nested objects, arrays, true/false/null, fractions,
 * exponents, duplicate keys, invalid UTF-8, trailing bytes -- is refused
 * with a message naming the byte column.  spsync needs nothing more, and
 * Debian's minimal set has no JSON library for C.
 */
#ifndef SPSYNC_JSONL_H
#define SPSYNC_JSONL_H

#include <stddef.h>
#include <stdint.h>

/* Most keys one object may have. */
#define JSONL_MAX_FIELDS 16

typedef enum jsonl_type { JSONL_STRING = 0, JSONL_INT = 1 } jsonl_type;

typedef struct jsonl_field {
  /* Decoded (escapes resolved, valid UTF-8), not NUL-terminated; they
   * point into the line, which the parser rewrites in place. */
  char *key;
  size_t key_len;
  jsonl_type type;
  char *str; /* JSONL_STRING */
  size_t str_len;
  /* JSONL_INT: the value is -magnitude if `negative`, else magnitude. */
  int negative;
  uint64_t magnitude;
} jsonl_field;

/*
 * Parse `line` (`len` bytes, no NUL needed; a trailing "\n" or "\r\n" and
 * whitespace around the object are allowed) into at most `max` fields, in
 * the order they appear; their count goes to `*n`.  The line is decoded in
 * place.  Returns 0, or -1 with a message in `err` ("column C: ...").
 */
int jsonl_parse(char *line, size_t len, jsonl_field *out, size_t max,
                size_t *n, char *err, size_t errlen);

/* The field named `key` (NUL-terminated), or NULL. */
const jsonl_field *jsonl_find(const jsonl_field *f, size_t n,
                              const char *key);

#endif
