/*
 * sp_err_test.c: names, descriptions and bands of every error code.
 *
 * The list below is written out by hand from errors.h on purpose: a code
 * added to the enum without a name in sp_err.c shows up here as a test to
 * extend, and the name strings are checked against the identifiers
 * themselves (the macro stringifies them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"

typedef struct code_name {
  int code;
  const char *name;
} code_name;

#define C(x) {x, #x}
static const code_name codes[] = {
    C(SP_OK),
    C(SP_ERR_TRUNCATED), C(SP_ERR_WRONG_TYPE), C(SP_ERR_UUID_LENGTH),
    C(SP_ERR_ENUM_RANGE), C(SP_ERR_OVERSIZE), C(SP_ERR_FRAME_TOO_LARGE),
    C(SP_ERR_TRAILING_BYTES), C(SP_ERR_UNKNOWN_MESSAGE), C(SP_ERR_MSGPACK),
    C(SP_ERR_MISSING_FIELD), C(SP_ERR_INT_RANGE), C(SP_ERR_EMPTY_FRAME),
    C(SP_ERR_ENTRY_ORDER), C(SP_ERR_HASH_LENGTH), C(SP_ERR_UTF8),
    C(SP_ERR_NESTING),
    C(SP_ERR_INVALID_ARGUMENT), C(SP_ERR_INVALID_STATE),
    C(SP_ERR_WOULD_BLOCK), C(SP_ERR_NOT_FOUND), C(SP_ERR_VERSION),
    C(SP_ERR_NOBUF), C(SP_ERR_EXISTS), C(SP_ERR_CLOSED),
    C(SP_ERR_OUTBOX_FULL), C(SP_ERR_NOT_SUPPORTED),
    C(SP_ERR_UNKNOWN_LIBRARY), C(SP_ERR_NOT_MEMBER), C(SP_ERR_WRONG_ROLE),
    C(SP_ERR_SEQ_REGRESSION), C(SP_ERR_GAP), C(SP_ERR_ACK_BEYOND),
    C(SP_ERR_TWO_LEADERS), C(SP_ERR_STALE_EPOCH), C(SP_ERR_CHAIN_MISMATCH),
    C(SP_ERR_FETCH_LIMIT), C(SP_ERR_PEER_TIMEOUT), C(SP_ERR_SYNC_REQUIRED),
    C(SP_ERR_PEER_ERROR), C(SP_ERR_UNEXPECTED), C(SP_ERR_DEADLINE),
    C(SP_ERR_TOO_MANY_REQUESTS), C(SP_ERR_LIBRARY_MISMATCH),
    C(SP_ERR_STALLED), C(SP_ERR_CANCELED), C(SP_ERR_NOT_LEADER),
    C(SP_ERR_BACKING_OFF), C(SP_ERR_REFUSED), C(SP_ERR_READ_ONLY),
    C(SP_ERR_ORIGIN_CONFLICT), C(SP_ERR_NOT_NEGOTIATED), C(SP_ERR_IMPERSONATION),
    C(SP_ERR_BAD_PROPOSAL),
    C(SP_ERR_IO), C(SP_ERR_TLS), C(SP_ERR_HANDSHAKE), C(SP_ERR_UNKNOWN_KEY),
    C(SP_ERR_ALPN), C(SP_ERR_KEYFILE_PERMISSIONS), C(SP_ERR_KEYFILE_FORMAT),
    C(SP_ERR_ADDRESS), C(SP_ERR_CONNECTION_LOST), C(SP_ERR_QUIC),
    C(SP_ERR_UNREACHABLE), C(SP_ERR_DUPLICATE_DEVICE),
    C(SP_ERR_STORE), C(SP_ERR_REGISTRY), C(SP_ERR_STORE_CORRUPT),
    C(SP_ERR_NOMEM), C(SP_ERR_CALLBACK_FAILURE), C(SP_ERR_INTERNAL),
};
#undef C
#define NCODES (sizeof(codes) / sizeof(codes[0]))

static void test_names_match_identifiers(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < NCODES; ++i) {
    assert_string_equal(sp_err_name(codes[i].code), codes[i].name);
  }
}

static void test_descriptions_known_and_distinct(void **state) {
  size_t i, j;

  (void)state;
  for (i = 0; i < NCODES; ++i) {
    const char *d = sp_strerror(codes[i].code);
    assert_non_null(d);
    assert_true(strlen(d) > 0);
    assert_string_not_equal(d, "unknown error");
    for (j = 0; j < i; ++j) {
      /* Two codes with one text would be indistinguishable in a log. */
      assert_string_not_equal(d, sp_strerror(codes[j].code));
      assert_int_not_equal(codes[i].code, codes[j].code);
    }
  }
}

static void test_unknown_codes(void **state) {
  /* -325 was SP_ERR_ORIGIN_STALE in a draft of the write path: retired,
   * never named again (an old peer's frame could still carry it). */
  static const int unknown[] = {1,    -1,   -100,         -117, -199, -299,
                                -325, -999, -1000, SP_ERR_FATAL, 12345};
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); ++i) {
    assert_string_equal(sp_strerror(unknown[i]), "unknown error");
    assert_string_equal(sp_err_name(unknown[i]), "SP_ERR_UNKNOWN");
  }
}

static void test_bands(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < NCODES; ++i) {
    int c = codes[i].code;
    int fatal = c == SP_ERR_NOMEM || c == SP_ERR_CALLBACK_FAILURE ||
                c == SP_ERR_INTERNAL;

    assert_int_equal(sp_err_is_fatal(c) != 0, fatal);
    if (c == SP_OK) {
      continue;
    }
    /* Every code sits in one of the documented bands. */
    assert_true((c <= -100 && c >= -599) || c < SP_ERR_FATAL);
    if (fatal) {
      assert_true(c < SP_ERR_FATAL);
    } else {
      assert_true(c > SP_ERR_FATAL);
    }
  }
  assert_false(sp_err_is_fatal(0));
  assert_false(sp_err_is_fatal(SP_ERR_FATAL)); /* the threshold itself */
  assert_true(sp_err_is_fatal(SP_ERR_FATAL - 1));
  assert_true(sp_err_is_fatal(-2000));
  assert_false(sp_err_is_fatal(SP_ERR_STORE_CORRUPT));
  assert_false(sp_err_is_fatal(1));
}

static void test_decode_band(void **state) {
  /* The codes the decoder and frame reader document are all -1xx. */
  static const int decode[] = {
      SP_ERR_TRUNCATED,   SP_ERR_WRONG_TYPE,     SP_ERR_UUID_LENGTH,
      SP_ERR_ENUM_RANGE,  SP_ERR_OVERSIZE,       SP_ERR_FRAME_TOO_LARGE,
      SP_ERR_TRAILING_BYTES, SP_ERR_UNKNOWN_MESSAGE, SP_ERR_MSGPACK,
      SP_ERR_MISSING_FIELD, SP_ERR_INT_RANGE,    SP_ERR_EMPTY_FRAME,
      SP_ERR_ENTRY_ORDER, SP_ERR_HASH_LENGTH,    SP_ERR_UTF8,
      SP_ERR_NESTING};
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(decode) / sizeof(decode[0]); ++i) {
    assert_true(decode[i] <= -100 && decode[i] >= -199);
    /* Codes never move: pin their numbers. */
    assert_int_equal(decode[i], -101 - (int)i);
  }
}

static void test_write_path_codes_pinned(void **state) {
  /* Issue 12's codes: their numbers are on the wire (ProposeResult
   * codes, Error frames) and must never move. */
  (void)state;
  assert_int_equal(SP_ERR_OUTBOX_FULL, -209);
  assert_int_equal(SP_ERR_NOT_SUPPORTED, -210);
  assert_int_equal(SP_ERR_REFUSED, -322);
  assert_int_equal(SP_ERR_READ_ONLY, -323);
  assert_int_equal(SP_ERR_ORIGIN_CONFLICT, -324);
  assert_int_equal(SP_ERR_NOT_NEGOTIATED, -326);
  assert_int_equal(SP_ERR_IMPERSONATION, -327);
  assert_int_equal(SP_ERR_BAD_PROPOSAL, -328);
  assert_false(sp_err_is_fatal(SP_ERR_BAD_PROPOSAL));
  assert_false(sp_err_is_fatal(SP_ERR_OUTBOX_FULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_match_identifiers),
      cmocka_unit_test(test_descriptions_known_and_distinct),
      cmocka_unit_test(test_unknown_codes),
      cmocka_unit_test(test_bands),
      cmocka_unit_test(test_write_path_codes_pinned),
      cmocka_unit_test(test_decode_band),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
