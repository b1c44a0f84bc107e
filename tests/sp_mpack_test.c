/*
 * sp_mpack_test.c: the bounded msgpack reader, one primitive at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"
#include "sp_mpack.h"

#define MP(name, ...) static const uint8_t name[] = {__VA_ARGS__}

/* Runs a reader over exactly `len` bytes and requires it to use them all. */
static int read_uint_all(const uint8_t *p, size_t len, uint64_t *v) {
  sp_mp mp;
  int rv;

  sp_mp_init(&mp, p, len);
  rv = sp_mp_uint(&mp, v);
  if (rv == 0) {
    assert_int_equal(sp_mp_left(&mp), 0);
  }
  return rv;
}

static int read_int_all(const uint8_t *p, size_t len, int64_t *v) {
  sp_mp mp;
  int rv;

  sp_mp_init(&mp, p, len);
  rv = sp_mp_int(&mp, v);
  if (rv == 0) {
    assert_int_equal(sp_mp_left(&mp), 0);
  }
  return rv;
}

static void test_uint_every_width(void **state) {
  MP(fix0, 0x00);
  MP(fix127, 0x7f);
  MP(u8, 0xcc, 0xff);
  MP(u16, 0xcd, 0xff, 0xfe);
  MP(u32, 0xce, 0xff, 0xff, 0xff, 0xfd);
  MP(u64, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  MP(s8pos, 0xd0, 0x05);
  MP(s64pos, 0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  uint64_t v;

  (void)state;
  assert_int_equal(read_uint_all(fix0, sizeof(fix0), &v), 0);
  assert_true(v == 0);
  assert_int_equal(read_uint_all(fix127, sizeof(fix127), &v), 0);
  assert_true(v == 127);
  assert_int_equal(read_uint_all(u8, sizeof(u8), &v), 0);
  assert_true(v == 255);
  assert_int_equal(read_uint_all(u16, sizeof(u16), &v), 0);
  assert_true(v == 0xfffe);
  assert_int_equal(read_uint_all(u32, sizeof(u32), &v), 0);
  assert_true(v == 0xfffffffdu);
  assert_int_equal(read_uint_all(u64, sizeof(u64), &v), 0);
  assert_true(v == UINT64_MAX);
  /* Signed encodings of non-negative values are accepted too. */
  assert_int_equal(read_uint_all(s8pos, sizeof(s8pos), &v), 0);
  assert_true(v == 5);
  assert_int_equal(read_uint_all(s64pos, sizeof(s64pos), &v), 0);
  assert_true(v == (uint64_t)INT64_MAX);
}

static void test_uint_refuses_negative(void **state) {
  MP(negfix, 0xff);
  MP(neg32, 0xe0);
  MP(s8, 0xd0, 0x80);
  MP(s16, 0xd1, 0xff, 0xff);
  MP(s32, 0xd2, 0x80, 0x00, 0x00, 0x00);
  MP(s64, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
  uint64_t v;

  (void)state;
  assert_int_equal(read_uint_all(negfix, 1, &v), SP_ERR_INT_RANGE);
  assert_int_equal(read_uint_all(neg32, 1, &v), SP_ERR_INT_RANGE);
  assert_int_equal(read_uint_all(s8, 2, &v), SP_ERR_INT_RANGE);
  assert_int_equal(read_uint_all(s16, 3, &v), SP_ERR_INT_RANGE);
  assert_int_equal(read_uint_all(s32, 5, &v), SP_ERR_INT_RANGE);
  assert_int_equal(read_uint_all(s64, 9, &v), SP_ERR_INT_RANGE);
}

static void test_int_every_width(void **state) {
  MP(negfix, 0xe0);
  MP(m1, 0xff);
  MP(s8, 0xd0, 0x80);
  MP(s16, 0xd1, 0x80, 0x00);
  MP(s32, 0xd2, 0x80, 0x00, 0x00, 0x00);
  MP(s64min, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
  MP(s64m1, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  MP(u64max, 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  MP(u64over, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0);
  MP(u16, 0xcd, 0x12, 0x34);
  int64_t v;

  (void)state;
  assert_int_equal(read_int_all(negfix, 1, &v), 0);
  assert_true(v == -32);
  assert_int_equal(read_int_all(m1, 1, &v), 0);
  assert_true(v == -1);
  assert_int_equal(read_int_all(s8, 2, &v), 0);
  assert_true(v == -128);
  assert_int_equal(read_int_all(s16, 3, &v), 0);
  assert_true(v == INT16_MIN);
  assert_int_equal(read_int_all(s32, 5, &v), 0);
  assert_true(v == INT32_MIN);
  assert_int_equal(read_int_all(s64min, 9, &v), 0);
  assert_true(v == INT64_MIN);
  assert_int_equal(read_int_all(s64m1, 9, &v), 0);
  assert_true(v == -1);
  assert_int_equal(read_int_all(u64max, 9, &v), 0);
  assert_true(v == INT64_MAX);
  assert_int_equal(read_int_all(u16, 3, &v), 0);
  assert_true(v == 0x1234);
  /* 2^63 does not fit an int64. */
  assert_int_equal(read_int_all(u64over, 9, &v), SP_ERR_INT_RANGE);
}

static void test_int_wrong_type_and_truncated(void **state) {
  static const uint8_t not_int[] = {0xc0, 0xc2, 0xc3, 0xa0, 0x90, 0x80,
                                    0xc4, 0xca, 0xcb, 0xd4, 0xd9, 0xdc};
  static const uint8_t widths[] = {0xcc, 0xcd, 0xce, 0xcf,
                                   0xd0, 0xd1, 0xd2, 0xd3};
  uint8_t buf[9] = {0};
  uint64_t u;
  int64_t s;
  size_t i, k;

  (void)state;
  for (i = 0; i < sizeof(not_int); ++i) {
    assert_int_equal(read_uint_all(&not_int[i], 1, &u), SP_ERR_WRONG_TYPE);
    assert_int_equal(read_int_all(&not_int[i], 1, &s), SP_ERR_WRONG_TYPE);
  }
  buf[0] = 0xc1;
  assert_int_equal(read_uint_all(buf, 1, &u), SP_ERR_MSGPACK);
  assert_int_equal(read_uint_all(buf, 0, &u), SP_ERR_TRUNCATED);
  for (i = 0; i < sizeof(widths); ++i) {
    size_t w = (size_t)1 << (widths[i] & 3);
    buf[0] = widths[i];
    /* Every short length fails, the full one succeeds. */
    for (k = 1; k <= w; ++k) {
      assert_int_equal(read_int_all(buf, k, &s), SP_ERR_TRUNCATED);
    }
    assert_int_equal(read_int_all(buf, w + 1, &s), 0);
  }
}

static void test_bool(void **state) {
  MP(t, 0xc3);
  MP(f, 0xc2);
  MP(one, 0x01);
  MP(nil, 0xc0);
  sp_mp mp;
  int v = 7;

  (void)state;
  sp_mp_init(&mp, t, 1);
  assert_int_equal(sp_mp_bool(&mp, &v), 0);
  assert_int_equal(v, 1);
  sp_mp_init(&mp, f, 1);
  assert_int_equal(sp_mp_bool(&mp, &v), 0);
  assert_int_equal(v, 0);
  sp_mp_init(&mp, one, 1);
  assert_int_equal(sp_mp_bool(&mp, &v), SP_ERR_WRONG_TYPE);
  sp_mp_init(&mp, nil, 1);
  assert_int_equal(sp_mp_bool(&mp, &v), SP_ERR_WRONG_TYPE);
  sp_mp_init(&mp, t, 0);
  assert_int_equal(sp_mp_bool(&mp, &v), SP_ERR_TRUNCATED);
}

/* nil is taken only when it is there; anything else stays to be read. */
static void test_nil(void **state) {
  MP(two, 0xc0, 0x91);
  MP(empty, 0x00);
  sp_mp mp;
  uint32_t n;

  (void)state;
  sp_mp_init(&mp, two, 2);
  assert_int_equal(sp_mp_nil(&mp), 1);
  assert_int_equal(sp_mp_left(&mp), 1);
  assert_int_equal(sp_mp_nil(&mp), 0);
  assert_int_equal(sp_mp_left(&mp), 1);
  assert_int_equal(sp_mp_array(&mp, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(sp_mp_nil(&mp), 0);
  sp_mp_init(&mp, empty, 0);
  assert_int_equal(sp_mp_nil(&mp), 0);
}

static void test_bin_widths(void **state) {
  MP(b8, 0xc4, 0x02, 0xaa, 0xbb);
  MP(b16, 0xc5, 0x00, 0x02, 0xaa, 0xbb);
  MP(b32, 0xc6, 0x00, 0x00, 0x00, 0x02, 0xaa, 0xbb);
  MP(empty, 0xc4, 0x00);
  MP(str, 0xa2, 'h', 'i');
  MP(shortb, 0xc4, 0x03, 0xaa, 0xbb);
  MP(huge, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00);
  const uint8_t *all[] = {b8, b16, b32};
  const size_t lens[] = {sizeof(b8), sizeof(b16), sizeof(b32)};
  const uint8_t *d;
  uint32_t n;
  sp_mp mp;
  size_t i;

  (void)state;
  for (i = 0; i < 3; ++i) {
    sp_mp_init(&mp, all[i], lens[i]);
    assert_int_equal(sp_mp_bin(&mp, &d, &n), 0);
    assert_int_equal(n, 2);
    /* Not copied: points into the input. */
    assert_ptr_equal(d, all[i] + lens[i] - 2);
    assert_int_equal(sp_mp_left(&mp), 0);
  }
  sp_mp_init(&mp, empty, sizeof(empty));
  assert_int_equal(sp_mp_bin(&mp, &d, &n), 0);
  assert_int_equal(n, 0);
  sp_mp_init(&mp, str, sizeof(str));
  assert_int_equal(sp_mp_bin(&mp, &d, &n), SP_ERR_WRONG_TYPE);
  sp_mp_init(&mp, shortb, sizeof(shortb));
  assert_int_equal(sp_mp_bin(&mp, &d, &n), SP_ERR_TRUNCATED);
  sp_mp_init(&mp, huge, sizeof(huge));
  assert_int_equal(sp_mp_bin(&mp, &d, &n), SP_ERR_TRUNCATED);
}

static void test_str_widths_and_utf8(void **state) {
  MP(fix, 0xa3, 'a', 'b', 'c');
  MP(s8, 0xd9, 0x03, 'a', 'b', 'c');
  MP(s16, 0xda, 0x00, 0x03, 'a', 'b', 'c');
  MP(s32, 0xdb, 0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c');
  MP(bad, 0xa2, 0xc3, 0x28);
  MP(bin, 0xc4, 0x01, 'a');
  MP(trunc, 0xd9, 0x05, 'a');
  const uint8_t *all[] = {fix, s8, s16, s32};
  const size_t lens[] = {sizeof(fix), sizeof(s8), sizeof(s16), sizeof(s32)};
  const char *s;
  uint32_t n;
  sp_mp mp;
  size_t i;

  (void)state;
  for (i = 0; i < 4; ++i) {
    sp_mp_init(&mp, all[i], lens[i]);
    assert_int_equal(sp_mp_str(&mp, &s, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "abc", 3);
    assert_int_equal(sp_mp_left(&mp), 0);
  }
  sp_mp_init(&mp, bad, sizeof(bad));
  assert_int_equal(sp_mp_str(&mp, &s, &n), SP_ERR_UTF8);
  sp_mp_init(&mp, bin, sizeof(bin));
  assert_int_equal(sp_mp_str(&mp, &s, &n), SP_ERR_WRONG_TYPE);
  sp_mp_init(&mp, trunc, sizeof(trunc));
  assert_int_equal(sp_mp_str(&mp, &s, &n), SP_ERR_TRUNCATED);
}

static void test_array_headers(void **state) {
  MP(fix, 0x93);
  MP(a16, 0xdc, 0x01, 0x00);
  MP(a32, 0xdd, 0x00, 0x01, 0x00, 0x00);
  MP(map, 0x81);
  MP(t16, 0xdc, 0x01);
  uint32_t n;
  sp_mp mp;

  (void)state;
  sp_mp_init(&mp, fix, 1);
  assert_int_equal(sp_mp_array(&mp, &n), 0);
  assert_int_equal(n, 3);
  sp_mp_init(&mp, a16, 3);
  assert_int_equal(sp_mp_array(&mp, &n), 0);
  assert_int_equal(n, 256);
  sp_mp_init(&mp, a32, 5);
  assert_int_equal(sp_mp_array(&mp, &n), 0);
  assert_int_equal(n, 65536);
  sp_mp_init(&mp, map, 1);
  assert_int_equal(sp_mp_array(&mp, &n), SP_ERR_WRONG_TYPE);
  sp_mp_init(&mp, t16, 2);
  assert_int_equal(sp_mp_array(&mp, &n), SP_ERR_TRUNCATED);
}

static int skip_all(const uint8_t *p, size_t len, size_t *used) {
  sp_mp mp;
  int rv;

  sp_mp_init(&mp, p, len);
  rv = sp_mp_skip(&mp);
  *used = len - sp_mp_left(&mp);
  return rv;
}

static void test_skip_every_type(void **state) {
  /* One value of each msgpack family, then a sentinel byte 0x2a. */
  MP(v_nil, 0xc0, 0x2a);
  MP(v_true, 0xc3, 0x2a);
  MP(v_fixint, 0x05, 0x2a);
  MP(v_negfix, 0xf0, 0x2a);
  MP(v_u64, 0xcf, 1, 2, 3, 4, 5, 6, 7, 8, 0x2a);
  MP(v_i16, 0xd1, 1, 2, 0x2a);
  MP(v_f32, 0xca, 0, 0, 0, 0, 0x2a);
  MP(v_f64, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a);
  MP(v_fixstr, 0xa2, 'o', 'k', 0x2a);
  MP(v_str8, 0xd9, 0x01, 'x', 0x2a);
  MP(v_str16, 0xda, 0x00, 0x01, 'x', 0x2a);
  MP(v_str32, 0xdb, 0, 0, 0, 1, 'x', 0x2a);
  MP(v_bin16, 0xc5, 0x00, 0x01, 0xff, 0x2a);
  MP(v_bin32, 0xc6, 0, 0, 0, 1, 0xff, 0x2a);
  MP(v_fixext1, 0xd4, 0x01, 0xaa, 0x2a);
  MP(v_fixext16, 0xd8, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
     15, 16, 0x2a);
  MP(v_ext8, 0xc7, 0x02, 0x05, 0xaa, 0xbb, 0x2a);
  MP(v_ext16, 0xc8, 0x00, 0x01, 0x05, 0xaa, 0x2a);
  MP(v_ext32, 0xc9, 0, 0, 0, 1, 0x05, 0xaa, 0x2a);
  MP(v_fixarr, 0x92, 0x01, 0xa1, 'a', 0x2a);
  MP(v_arr16, 0xdc, 0x00, 0x02, 0x01, 0x02, 0x2a);
  MP(v_arr32, 0xdd, 0, 0, 0, 1, 0xc0, 0x2a);
  MP(v_fixmap, 0x82, 0x01, 0x02, 0xa1, 'k', 0x90, 0x2a);
  MP(v_map16, 0xde, 0x00, 0x01, 0x01, 0x81, 0x02, 0x03, 0x2a);
  MP(v_map32, 0xdf, 0, 0, 0, 1, 0xc0, 0xc0, 0x2a);
  /* Skipping does not check UTF-8: an unknown field is opaque. */
  MP(v_badstr, 0xa1, 0xff, 0x2a);
  struct {
    const uint8_t *p;
    size_t len;
  } v[] = {
#define V(x) {x, sizeof(x)}
      V(v_nil),     V(v_true),    V(v_fixint), V(v_negfix),  V(v_u64),
      V(v_i16),     V(v_f32),     V(v_f64),    V(v_fixstr),  V(v_str8),
      V(v_str16),   V(v_str32),   V(v_bin16),  V(v_bin32),   V(v_fixext1),
      V(v_fixext16), V(v_ext8),   V(v_ext16),  V(v_ext32),   V(v_fixarr),
      V(v_arr16),   V(v_arr32),   V(v_fixmap), V(v_map16),   V(v_map32),
      V(v_badstr),
#undef V
  };
  size_t i, k, used;

  (void)state;
  for (i = 0; i < sizeof(v) / sizeof(v[0]); ++i) {
    assert_int_equal(skip_all(v[i].p, v[i].len, &used), 0);
    assert_int_equal(used, v[i].len - 1);
    /* Every prefix of the value is truncated. */
    for (k = 0; k < v[i].len - 1; ++k) {
      assert_int_equal(skip_all(v[i].p, k, &used), SP_ERR_TRUNCATED);
    }
  }
}

static void test_skip_reserved_and_nesting(void **state) {
  uint8_t buf[64];
  size_t used, i;
  MP(reserved, 0xc1);
  MP(inner_reserved, 0x92, 0x01, 0xc1);
  MP(map_lie, 0xdf, 0xff, 0xff, 0xff, 0xff, 0x01);
  MP(arr_lie, 0xdd, 0x10, 0x00, 0x00, 0x00, 0x01);

  (void)state;
  assert_int_equal(skip_all(reserved, 1, &used), SP_ERR_MSGPACK);
  assert_int_equal(skip_all(inner_reserved, 3, &used), SP_ERR_MSGPACK);
  /* Counts larger than the bytes left fail at once, without looping. */
  assert_int_equal(skip_all(map_lie, sizeof(map_lie), &used),
                   SP_ERR_TRUNCATED);
  assert_int_equal(skip_all(arr_lie, sizeof(arr_lie), &used),
                   SP_ERR_TRUNCATED);

  /* SP_MP_MAX_DEPTH nested non-empty arrays are fine, one more is not. */
  for (i = 0; i < SP_MP_MAX_DEPTH; ++i) {
    buf[i] = 0x91;
  }
  buf[i] = 0xc0;
  assert_int_equal(skip_all(buf, SP_MP_MAX_DEPTH + 1, &used), 0);
  assert_int_equal(used, SP_MP_MAX_DEPTH + 1);
  for (i = 0; i <= SP_MP_MAX_DEPTH; ++i) {
    buf[i] = 0x81;
  }
  buf[i] = 0xc0;
  buf[i + 1] = 0xc0;
  assert_int_equal(skip_all(buf, SP_MP_MAX_DEPTH + 3, &used),
                   SP_ERR_NESTING);
}

static void test_utf8(void **state) {
  static const struct {
    const char *s;
    size_t len;
    int ok;
  } cases[] = {
      {"", 0, 1},
      {"plain ascii", 11, 1},
      {"\xc3\xa9", 2, 1},              /* U+00E9 */
      {"\xe2\x82\xac", 3, 1},          /* U+20AC */
      {"\xf0\x9f\x98\x80", 4, 1},      /* U+1F600 */
      {"\xf4\x8f\xbf\xbf", 4, 1},      /* U+10FFFF, the last */
      {"\xed\x9f\xbf", 3, 1},          /* U+D7FF, before surrogates */
      {"\xee\x80\x80", 3, 1},          /* U+E000, after them */
      {"a\0b", 3, 1},                  /* NUL is a valid code point */
      {"\x80", 1, 0},                  /* lone continuation */
      {"\xc0\x80", 2, 0},              /* overlong NUL */
      {"\xc1\xbf", 2, 0},              /* overlong */
      {"\xe0\x80\x80", 3, 0},          /* overlong */
      {"\xf0\x80\x80\x80", 4, 0},      /* overlong */
      {"\xed\xa0\x80", 3, 0},          /* U+D800 surrogate */
      {"\xed\xbf\xbf", 3, 0},          /* U+DFFF surrogate */
      {"\xf4\x90\x80\x80", 4, 0},      /* above U+10FFFF */
      {"\xf8\x88\x80\x80\x80", 5, 0},  /* 5-byte form */
      {"\xff", 1, 0},
      {"\xe2\x82", 2, 0},              /* cut short */
      {"\xc3\x28", 2, 0},              /* bad continuation */
      {"ok\xc3", 3, 0},                /* cut at the end */
  };
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    if (sp_utf8_valid((const uint8_t *)cases[i].s, cases[i].len) !=
        cases[i].ok) {
      print_error("utf8 case %zu\n", i);
      fail();
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uint_every_width),
      cmocka_unit_test(test_uint_refuses_negative),
      cmocka_unit_test(test_int_every_width),
      cmocka_unit_test(test_int_wrong_type_and_truncated),
      cmocka_unit_test(test_bool),
      cmocka_unit_test(test_nil),
      cmocka_unit_test(test_bin_widths),
      cmocka_unit_test(test_str_widths_and_utf8),
      cmocka_unit_test(test_array_headers),
      cmocka_unit_test(test_skip_every_type),
      cmocka_unit_test(test_skip_reserved_and_nesting),
      cmocka_unit_test(test_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
