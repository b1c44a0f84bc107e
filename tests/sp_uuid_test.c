/*
 * sp_uuid_test.c: UUID text form, parsing and generation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"

static void test_format_known(void **state) {
  sp_uuid u;
  char out[SP_UUID_STRING_LEN + 1];
  size_t i;

  (void)state;
  for (i = 0; i < 16; ++i) {
    u.bytes[i] = (uint8_t)(0x10 + i * 0x11);
  }
  memset(out, 'x', sizeof(out));
  assert_ptr_equal(sp_uuid_format(&u, out), out);
  assert_string_equal(out, "10213243-5465-7687-98a9-bacbdcedfe0f");
  memset(&u, 0, sizeof(u));
  assert_string_equal(sp_uuid_format(&u, out),
                      "00000000-0000-0000-0000-000000000000");
  memset(&u, 0xff, sizeof(u));
  assert_string_equal(sp_uuid_format(&u, out),
                      "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

static void test_parse_round_trip(void **state) {
  sp_uuid u, v;
  char out[SP_UUID_STRING_LEN + 1];
  int k;

  (void)state;
  for (k = 0; k < 100; ++k) {
    sp_uuid_generate(&u);
    sp_uuid_format(&u, out);
    memset(&v, 0, sizeof(v));
    assert_int_equal(sp_uuid_parse(&v, out), 0);
    assert_true(sp_uuid_equal(&u, &v));
  }
  /* Upper case is accepted and means the same bytes. */
  assert_int_equal(
      sp_uuid_parse(&u, "10213243-5465-7687-98A9-BACBDCEDFE0F"), 0);
  assert_int_equal(
      sp_uuid_parse(&v, "10213243-5465-7687-98a9-bacbdcedfe0f"), 0);
  assert_true(sp_uuid_equal(&u, &v));
  assert_int_equal(u.bytes[0], 0x10);
  assert_int_equal(u.bytes[15], 0x0f);
}

static void test_parse_refuses(void **state) {
  static const char *bad[] = {
      "",
      "10213243-5465-7687-98a9-bacbdcedfe0",    /* short */
      "10213243-5465-7687-98a9-bacbdcedfe0f0",  /* long */
      "102132430546507687098a90bacbdcedfe0f",   /* no dashes */
      "1021324-35465-7687-98a9-bacbdcedfe0f",   /* dash moved */
      "10213243-5465-7687-98a9_bacbdcedfe0f",   /* wrong separator */
      "g0213243-5465-7687-98a9-bacbdcedfe0f",   /* not hex */
      "10213243-5465-7687-98a9-bacbdcedfe0 ",
      " 10213243-5465-7687-98a9-bacbdcedfe0",
      "{0213243-5465-7687-98a9-bacbdcedfe0}",
      "10213243-5465-7687-98a9-bacbdcedfe:f",
  };
  sp_uuid u, keep;
  size_t i;

  (void)state;
  memset(&keep, 0x5a, sizeof(keep));
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
    u = keep;
    assert_int_equal(sp_uuid_parse(&u, bad[i]), SP_ERR_INVALID_ARGUMENT);
    /* Untouched on error. */
    assert_memory_equal(&u, &keep, sizeof(u));
  }
  assert_int_equal(sp_uuid_parse(NULL, "10213243-5465-7687-98a9-bacbdcedfe0f"),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_uuid_parse(&u, NULL), SP_ERR_INVALID_ARGUMENT);
}

static void test_generate_v4(void **state) {
  sp_uuid a, b;
  int k, ones_seen = 0;

  (void)state;
  for (k = 0; k < 256; ++k) {
    sp_uuid_generate(&a);
    assert_int_equal(a.bytes[6] >> 4, 4);      /* version 4 */
    assert_int_equal(a.bytes[8] >> 6, 2);      /* variant 10xx */
    assert_false(sp_uuid_is_nil(&a));
    sp_uuid_generate(&b);
    assert_false(sp_uuid_equal(&a, &b));
    ones_seen |= a.bytes[0] | a.bytes[15];
  }
  /* The random bits are not stuck at zero. */
  assert_int_equal(ones_seen, 0xff);
}

static void test_equal_and_nil(void **state) {
  sp_uuid a, b;

  (void)state;
  memset(&a, 0, sizeof(a));
  b = a;
  assert_true(sp_uuid_is_nil(&a));
  assert_true(sp_uuid_equal(&a, &b));
  b.bytes[15] = 1;
  assert_false(sp_uuid_is_nil(&b));
  assert_false(sp_uuid_equal(&a, &b));
  b.bytes[15] = 0;
  b.bytes[0] = 0x80;
  assert_false(sp_uuid_equal(&a, &b));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_known),
      cmocka_unit_test(test_parse_round_trip),
      cmocka_unit_test(test_parse_refuses),
      cmocka_unit_test(test_generate_v4),
      cmocka_unit_test(test_equal_and_nil),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
