/*
 * spsync_jsonl_test.c: spsync's strict JSON-object parser
 * (examples/spsync/jsonl.c) and its mapping of a line to an entry
 * (examples/spsync/entry_json.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "entry_json.h"
#include "jsonl.h"

/* Parse a copy of `text` (the parser rewrites its input, and a heap copy
 * of the exact length lets the sanitizers see any read past it). */
static int parse(const char *text, jsonl_field *f, size_t *n, char *err,
                 char **keep) {
  size_t len = strlen(text);
  char *buf = malloc(len ? len : 1);
  int rv;

  assert_non_null(buf);
  memcpy(buf, text, len);
  rv = jsonl_parse(buf, len, f, JSONL_MAX_FIELDS, n, err, 256);
  *keep = buf;
  return rv;
}

static void expect_refused(const char *text, const char *why) {
  jsonl_field f[JSONL_MAX_FIELDS];
  char err[256] = "", *buf;
  size_t n;

  if (parse(text, f, &n, err, &buf) != -1) {
    fail_msg("accepted: %s", text);
  }
  if (!strstr(err, why)) {
    fail_msg("'%s': message '%s' lacks '%s'", text, err, why);
  }
  free(buf);
}

static void test_strings_and_integers(void **state) {
  jsonl_field f[JSONL_MAX_FIELDS];
  char err[256], *buf;
  size_t n;

  (void)state;
  assert_int_equal(parse(" {\"a\" : \"x\\\"y\\\\z\\/\\n\", \"b\":-42,"
                         "\"c\":18446744073709551615, \"d\":0}\r\n",
                         f, &n, err, &buf),
                   0);
  assert_int_equal(n, 4);
  assert_int_equal(f[0].type, JSONL_STRING);
  assert_int_equal(f[0].key_len, 1);
  assert_memory_equal(f[0].key, "a", 1);
  assert_int_equal(f[0].str_len, 7);
  assert_memory_equal(f[0].str, "x\"y\\z/\n", 7);
  assert_int_equal(f[1].type, JSONL_INT);
  assert_true(f[1].negative);
  assert_true(f[1].magnitude == 42);
  assert_true(f[2].magnitude == UINT64_MAX);
  assert_false(f[3].negative);
  assert_true(f[3].magnitude == 0);
  assert_ptr_equal(jsonl_find(f, n, "c"), &f[2]);
  assert_null(jsonl_find(f, n, "e"));
  free(buf);

  assert_int_equal(parse("{}", f, &n, err, &buf), 0);
  assert_int_equal(n, 0);
  free(buf);
}

static void test_unicode(void **state) {
  jsonl_field f[JSONL_MAX_FIELDS];
  char err[256], *buf;
  size_t n;

  (void)state;
  /* \u escapes (BMP, surrogate pair, NUL) and raw UTF-8 side by side. */
  assert_int_equal(parse("{\"k\\u00e9\":\"\\u00e9\\ud83d\\ude00\\u0000"
                         "\xc3\xa9\xf0\x9f\x98\x80\"}",
                         f, &n, err, &buf),
                   0);
  assert_int_equal(n, 1);
  assert_int_equal(f[0].key_len, 3);
  assert_memory_equal(f[0].key, "k\xc3\xa9", 3);
  assert_int_equal(f[0].str_len, 2 + 4 + 1 + 2 + 4);
  assert_memory_equal(f[0].str, "\xc3\xa9\xf0\x9f\x98\x80\0\xc3\xa9\xf0\x9f\x98\x80",
                      13);
  free(buf);
}

static void test_refusals(void **state) {
  (void)state;
  expect_refused("", "expected '{'");
  expect_refused("[1]", "expected '{'");
  expect_refused("{\"a\":1", "expected ',' or '}'");
  expect_refused("{\"a\":1,}", "expected a string");
  expect_refused("{\"a\" 1}", "expected ':'");
  expect_refused("{\"a\":1}x", "unexpected bytes after the object");
  expect_refused("{\"a\":1}{}", "unexpected bytes");
  expect_refused("{\"a\":{}}", "strings or integers");
  expect_refused("{\"a\":[1]}", "strings or integers");
  expect_refused("{\"a\":true}", "strings or integers");
  expect_refused("{\"a\":null}", "strings or integers");
  expect_refused("{\"a\":1.5}", "only integers");
  expect_refused("{\"a\":1e3}", "only integers");
  expect_refused("{\"a\":01}", "leading zero");
  expect_refused("{\"a\":-}", "expected a digit");
  expect_refused("{\"a\":18446744073709551616}", "out of range");
  expect_refused("{\"a\":1,\"a\":2}", "duplicate key");
  /* Duplicates are found after decoding: "\u0061" is "a". */
  expect_refused("{\"a\":1,\"\\u0061\":2}", "duplicate key");
  expect_refused("{\"a\":\"x", "unterminated string");
  expect_refused("{\"a\":\"x\\", "unterminated escape");
  expect_refused("{\"a\":\"\\x\"}", "unknown escape");
  expect_refused("{\"a\":\"\\u12\"}", "four hex digits");
  expect_refused("{\"a\":\"\\u12", "four hex digits");
  expect_refused("{\"a\":\"\\ud800\"}", "high surrogate");
  expect_refused("{\"a\":\"\\ud800\\u0041\"}", "low surrogate");
  expect_refused("{\"a\":\"\\udc00\"}", "lone low surrogate");
  expect_refused("{\"a\":\"\t\"}", "control character");
  expect_refused("{\"a\":\"\xc3\"}", "invalid UTF-8");     /* truncated */
  expect_refused("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8"); /* overlong */
  expect_refused("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8"); /* surrogate */
  expect_refused("{\"a\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8");
  expect_refused("{\"a\":\"\xff\"}", "invalid UTF-8");
  expect_refused("{\"\xc3\":1}", "invalid UTF-8");
  /* The column is where the trouble is, 1-based. */
  expect_refused("{\"a\":1 ,x}", "column 9:");
}

static void test_too_many_keys(void **state) {
  char line[1024];
  size_t len = 0;
  int i;

  (void)state;
  len += (size_t)snprintf(line + len, sizeof(line) - len, "{");
  for (i = 0; i <= JSONL_MAX_FIELDS; ++i) {
    len += (size_t)snprintf(line + len, sizeof(line) - len, "%s\"k%d\":%d",
                            i ? "," : "", i, i);
  }
  snprintf(line + len, sizeof(line) - len, "}");
  expect_refused(line, "too many keys");
}

static int entry(const char *text, sp_entry *e, char *err, char **keep) {
  size_t len = strlen(text);
  char *buf = malloc(len ? len : 1);

  assert_non_null(buf);
  memcpy(buf, text, len);
  *keep = buf;
  return entry_from_json(buf, len, 777, e, err, 256);
}

static void test_entry_full(void **state) {
  char err[256], *buf, id[SP_UUID_STRING_LEN + 1];
  sp_entry e;

  (void)state;
  assert_int_equal(
      entry("{\"model_type\":\"album\",\"record_id\":"
            "\"10213243-5465-7687-98a9-bacbdcedfe0f\",\"change_type\":"
            "\"bulk_insert\",\"version\":-9223372036854775808,"
            "\"timestamp_ms\":1700000000000,\"data_hex\":\"00ff10\"}\n",
            &e, err, &buf),
      0);
  assert_int_equal(e.model_type_len, 5);
  assert_memory_equal(e.model_type, "album", 5);
  assert_string_equal(sp_uuid_format(&e.record_id, id),
                      "10213243-5465-7687-98a9-bacbdcedfe0f");
  assert_int_equal(e.change_type, SP_CHANGE_BULK_INSERT);
  assert_true(e.version == INT64_MIN);
  assert_true(e.timestamp_ms == 1700000000000ull);
  assert_int_equal(e.data_len, 3);
  assert_memory_equal(e.data, "\x00\xff\x10", 3);
  assert_true(e.sequence == 0 && e.origin_seq == 0);
  free(buf);
}

static void test_entry_defaults(void **state) {
  char err[256], *buf;
  sp_entry a, b;
  sp_uuid zero;

  (void)state;
  memset(&zero, 0, sizeof(zero));
  assert_int_equal(entry("{\"model_type\":\"t\",\"change_type\":\"delete\","
                         "\"version\":3,\"data\":\"h\\u00e9\"}",
                         &a, err, &buf),
                   0);
  assert_int_equal(a.change_type, SP_CHANGE_DELETE);
  assert_true(a.version == 3);
  assert_true(a.timestamp_ms == 777); /* now, as given */
  assert_int_equal(a.data_len, 3);    /* the string's UTF-8 bytes */
  assert_memory_equal(a.data, "h\xc3\xa9", 3);
  /* A random version-4 record id, another one each time. */
  assert_int_equal(a.record_id.bytes[6] >> 4, 4);
  assert_int_equal(a.record_id.bytes[8] >> 6, 2);
  free(buf);
  assert_int_equal(entry("{\"model_type\":\"t\",\"change_type\":\"insert\","
                         "\"version\":3}",
                         &b, err, &buf),
                   0);
  assert_memory_not_equal(a.record_id.bytes, b.record_id.bytes, 16);
  assert_memory_not_equal(b.record_id.bytes, zero.bytes, 16);
  assert_int_equal(b.data_len, 0);
  free(buf);
  /* Blank lines carry nothing. */
  assert_int_equal(entry(" \t\r\n", &b, err, &buf), 1);
  free(buf);
  assert_int_equal(entry("", &b, err, &buf), 1);
  free(buf);
  /* NUL bytes are not blank: such a line is malformed, not skipped. */
  {
    char nul[4] = {0, 0, 0, 0};
    assert_int_equal(entry_from_json(nul, sizeof(nul), 777, &b, err, 256),
                     -1);
    char sp_nul[3] = {' ', 0, ' '};
    assert_int_equal(
        entry_from_json(sp_nul, sizeof(sp_nul), 777, &b, err, 256), -1);
  }
  /* Printable model types, UTF-8 included, are fine. */
  assert_int_equal(entry("{\"model_type\":\"caf\\u00e9 ~\","
                         "\"change_type\":\"insert\",\"version\":1}",
                         &b, err, &buf),
                   0);
  assert_int_equal(b.model_type_len, 7);
  free(buf);
}

static void expect_entry_refused(const char *text, const char *why) {
  char err[256] = "", *buf;
  sp_entry e;

  if (entry(text, &e, err, &buf) != -1) {
    fail_msg("accepted: %s", text);
  }
  if (!strstr(err, why)) {
    fail_msg("'%s': message '%s' lacks '%s'", text, err, why);
  }
  free(buf);
}

static void test_entry_refusals(void **state) {
  char big[400];

  (void)state;
#define OK_REST "\"change_type\":\"insert\",\"version\":1"
  expect_entry_refused("{" OK_REST "}", "missing key \"model_type\"");
  expect_entry_refused("{\"model_type\":\"t\",\"version\":1}",
                       "missing key \"change_type\"");
  expect_entry_refused("{\"model_type\":\"t\",\"change_type\":\"insert\"}",
                       "missing key \"version\"");
  expect_entry_refused("{\"model_type\":1," OK_REST "}",
                       "\"model_type\" must be a string");
  expect_entry_refused("{\"model_type\":\"\"," OK_REST "}", "1 to 255 bytes");
  snprintf(big, sizeof(big), "{\"model_type\":\"%0256d\"," OK_REST "}", 0);
  expect_entry_refused(big, "1 to 255 bytes");
  expect_entry_refused("{\"model_type\":\"t\",\"change_type\":\"upsert\","
                       "\"version\":1}",
                       "\"change_type\" must be");
  expect_entry_refused("{\"model_type\":\"t\",\"change_type\":\"insert\","
                       "\"version\":\"1\"}",
                       "\"version\" must be an integer");
  expect_entry_refused("{\"model_type\":\"t\",\"change_type\":\"insert\","
                       "\"version\":9223372036854775808}",
                       "64-bit signed range");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"timestamp_ms\":-1}",
                       "must not be negative");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"record_id\":\"x\"}",
                       "\"record_id\" must be a UUID");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST
                       ",\"record_id\":\"10213243-5465-7687-98a9-bacbdcedfe0g\"}",
                       "\"record_id\" must be a UUID");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST
                       ",\"data\":\"a\",\"data_hex\":\"00\"}",
                       "not both");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"data_hex\":\"0\"}",
                       "even number of hex digits");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"data_hex\":\"zz\"}",
                       "\"data_hex\" must hold only hex digits");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"data_hex\":\"0g\"}",
                       "only hex digits");
  /* A model type is a name: no control characters (a NUL would cut it
   * short for any C reader). */
  expect_entry_refused("{\"model_type\":\"a\\u0000b\"," OK_REST "}",
                       "\"model_type\" must not hold control characters");
  expect_entry_refused("{\"model_type\":\"a\\tb\"," OK_REST "}",
                       "control characters");
  expect_entry_refused("{\"model_type\":\"\\u001f\"," OK_REST "}",
                       "control characters");
  /* No key may name the device: the library sets it (the leader takes it
   * from the connection). */
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"device_id\":\"x\"}",
                       "unknown key \"device_id\"");
  expect_entry_refused("{\"model_type\":\"t\"," OK_REST ",\"data\":1.5}",
                       "only integers");
#undef OK_REST
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strings_and_integers),
      cmocka_unit_test(test_unicode),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_too_many_keys),
      cmocka_unit_test(test_entry_full),
      cmocka_unit_test(test_entry_defaults),
      cmocka_unit_test(test_entry_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
