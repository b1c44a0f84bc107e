/*
 * entry_json.c: JSON line -> sp_entry for spsync's --input.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "entry_json.h"
#include "jsonl.h"

static const char *const known[] = {"model_type",   "record_id", "change_type",
                                    "version",      "timestamp_ms", "data",
                                    "data_hex"};
static const char *const changes[] = {"insert", "update", "delete",
                                      "bulk_insert"};

void entry_random_uuid(sp_uuid *out) {
  randombytes_buf(out->bytes, sizeof(out->bytes));
  out->bytes[6] = (uint8_t)((out->bytes[6] & 0x0f) | 0x40);
  out->bytes[8] = (uint8_t)((out->bytes[8] & 0x3f) | 0x80);
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static const jsonl_field *get(const jsonl_field *f, size_t n, const char *key,
                              jsonl_type type, int required, char *err,
                              size_t errlen, int *rv) {
  const jsonl_field *v = jsonl_find(f, n, key);

  *rv = 0;
  if (!v) {
    if (required) {
      *rv = bad(err, errlen, "missing key \"%s\"", key);
    }
    return NULL;
  }
  if (v->type != type) {
    *rv = bad(err, errlen,
              type == JSONL_STRING ? "\"%s\" must be a string"
                                   : "\"%s\" must be an integer",
              key);
    return NULL;
  }
  return v;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decode hex in place (the bytes take half the room of their digits):
 * 0, -1 for an odd count, -2 for a character that is not a hex digit. */
static int unhex(char *s, size_t len, size_t *out_len) {
  size_t i;

  for (i = 0; i < len; ++i) {
    if (hexval(s[i]) < 0) {
      return -2;
    }
  }
  if (len % 2) {
    return -1;
  }
  for (i = 0; i < len; i += 2) {
    int hi = hexval(s[i]), lo = hexval(s[i + 1]);
    s[i / 2] = (char)(hi << 4 | lo);
  }
  *out_len = len / 2;
  return 0;
}

static int check_keys(const jsonl_field *f, size_t n, char *err,
                      size_t errlen) {
  size_t i, k;

  for (i = 0; i < n; ++i) {
    for (k = 0; k < sizeof(known) / sizeof(known[0]); ++k) {
      if (f[i].key_len == strlen(known[k]) &&
          memcmp(f[i].key, known[k], f[i].key_len) == 0) {
        break;
      }
    }
    if (k == sizeof(known) / sizeof(known[0])) {
      snprintf(err, errlen, "unknown key \"%.*s\"",
               (int)(f[i].key_len > 64 ? 64 : f[i].key_len), f[i].key);
      return -1;
    }
  }
  return 0;
}

static int payload(const jsonl_field *f, size_t n, sp_entry *e, char *err,
                   size_t errlen) {
  const jsonl_field *d, *h;
  int rv;

  d = get(f, n, "data", JSONL_STRING, 0, err, errlen, &rv);
  if (rv) return rv;
  h = get(f, n, "data_hex", JSONL_STRING, 0, err, errlen, &rv);
  if (rv) return rv;
  if (d && h) {
    return bad(err, errlen, "give \"data\" or \"%s\", not both", "data_hex");
  }
  if (h) {
    size_t len;
    rv = unhex(h->str, h->str_len, &len);
    if (rv == -2) {
      return bad(err, errlen, "\"%s\" must hold only hex digits",
                 "data_hex");
    }
    if (rv != 0) {
      return bad(err, errlen, "\"%s\" must be an even number of hex digits",
                 "data_hex");
    }
    e->data = (const uint8_t *)h->str;
    e->data_len = len;
  } else if (d) {
    e->data = (const uint8_t *)d->str;
    e->data_len = d->str_len;
  }
  if (e->data_len > ENTRY_JSON_MAX_DATA) {
    return bad(err, errlen, "the payload is over 1 MiB%s", "");
  }
  return 0;
}

int entry_from_json(char *line, size_t len, uint64_t now_ms, sp_entry *e,
                    char *err, size_t errlen) {
  jsonl_field f[JSONL_MAX_FIELDS];
  const jsonl_field *v;
  char uuid[SP_UUID_STRING_LEN + 1];
  size_t n, i;
  int rv;

  memset(e, 0, sizeof(*e));
  /* strchr finds the terminator too: a NUL byte is not blank. */
  for (i = 0; i < len && line[i] != 0 && strchr(" \t\r\n", line[i]); ++i) {
  }
  if (i == len) {
    return 1;
  }
  if (jsonl_parse(line, len, f, JSONL_MAX_FIELDS, &n, err, errlen) != 0 ||
      check_keys(f, n, err, errlen) != 0) {
    return -1;
  }
  v = get(f, n, "model_type", JSONL_STRING, 1, err, errlen, &rv);
  if (rv) return rv;
  if (v->str_len == 0 || v->str_len > SP_MAX_MODEL_TYPE_LEN) {
    return bad(err, errlen, "\"%s\" must be 1 to 255 bytes", "model_type");
  }
  /* A name: a NUL would cut it short for any C reader of the log. */
  for (i = 0; i < v->str_len; ++i) {
    if ((unsigned char)v->str[i] < 0x20) {
      return bad(err, errlen, "\"%s\" must not hold control characters",
                 "model_type");
    }
  }
  e->model_type = v->str;
  e->model_type_len = v->str_len;

  v = get(f, n, "change_type", JSONL_STRING, 1, err, errlen, &rv);
  if (rv) return rv;
  for (i = 0; i < sizeof(changes) / sizeof(changes[0]); ++i) {
    if (v->str_len == strlen(changes[i]) &&
        memcmp(v->str, changes[i], v->str_len) == 0) {
      break;
    }
  }
  if (i == sizeof(changes) / sizeof(changes[0])) {
    return bad(err, errlen,
               "\"%s\" must be \"insert\", \"update\", \"delete\" or "
               "\"bulk_insert\"",
               "change_type");
  }
  e->change_type = (sp_change_type)i;

  v = get(f, n, "version", JSONL_INT, 1, err, errlen, &rv);
  if (rv) return rv;
  if (v->magnitude > (uint64_t)INT64_MAX + (v->negative ? 1u : 0u)) {
    return bad(err, errlen, "\"%s\" is out of the 64-bit signed range",
               "version");
  }
  e->version = v->negative ? (int64_t)(0 - v->magnitude) : (int64_t)v->magnitude;

  v = get(f, n, "timestamp_ms", JSONL_INT, 0, err, errlen, &rv);
  if (rv) return rv;
  if (v && v->negative && v->magnitude) {
    return bad(err, errlen, "\"%s\" must not be negative", "timestamp_ms");
  }
  e->timestamp_ms = v ? v->magnitude : now_ms;

  v = get(f, n, "record_id", JSONL_STRING, 0, err, errlen, &rv);
  if (rv) return rv;
  if (v) {
    if (v->str_len != SP_UUID_STRING_LEN) {
      return bad(err, errlen, "\"%s\" must be a UUID", "record_id");
    }
    memcpy(uuid, v->str, v->str_len);
    uuid[v->str_len] = '\0';
    if (sp_uuid_parse(&e->record_id, uuid) != 0) {
      return bad(err, errlen, "\"%s\" must be a UUID", "record_id");
    }
  } else {
    entry_random_uuid(&e->record_id);
  }
  return payload(f, n, e, err, errlen);
}
