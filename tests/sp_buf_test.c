/*
 * sp_buf_test.c: growable buffer: growth, consumption, failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"
#include "sp_buf.h"
#include "sp_test_mem.h"

static void test_append_grows_and_keeps_bytes(void **state) {
  sp_test_mem t;
  sp_buf b;
  uint8_t chunk[100];
  size_t i, k, last_cap = 0;
  long grows = 0;

  (void)state;
  sp_test_mem_init(&t);
  sp_buf_init(&b, &t.mem);
  assert_int_equal(b.len, 0);
  assert_int_equal(sp_buf_pending(&b), 0);
  for (i = 0; i < 100; ++i) {
    for (k = 0; k < sizeof(chunk); ++k) {
      chunk[k] = (uint8_t)(i * 7 + k);
    }
    assert_int_equal(sp_buf_append(&b, chunk, sizeof(chunk)), 0);
    if (b.cap != last_cap) {
      ++grows;
      assert_true(b.cap >= b.len);
      last_cap = b.cap;
    }
  }
  assert_int_equal(b.len, 10000);
  for (i = 0; i < 100; ++i) {
    for (k = 0; k < sizeof(chunk); ++k) {
      assert_int_equal(b.data[i * 100 + k], (uint8_t)(i * 7 + k));
    }
  }
  /* Geometric growth: 256 -> 16384 is 7 steps, not one per append. */
  assert_true(grows <= 8);
  assert_int_equal(t.live, 1);
  sp_buf_free(&b);
  assert_int_equal(t.live, 0);
  assert_null(b.data);
  assert_int_equal(b.cap, 0);
}

static void test_empty_append_allocates_nothing(void **state) {
  sp_test_mem t;
  sp_buf b;

  (void)state;
  sp_test_mem_init(&t);
  sp_buf_init(&b, &t.mem);
  assert_int_equal(sp_buf_append(&b, NULL, 0), 0);
  assert_int_equal(t.count, 0);
  assert_int_equal(sp_buf_reserve(&b, 0), 0);
  assert_int_equal(t.count, 0);
  sp_buf_free(&b);
}

static void test_consume_and_reclaim(void **state) {
  sp_test_mem t;
  sp_buf b;
  uint8_t x[200];
  size_t cap;

  (void)state;
  memset(x, 0xab, sizeof(x));
  sp_test_mem_init(&t);
  sp_buf_init(&b, &t.mem);
  assert_int_equal(sp_buf_append(&b, x, sizeof(x)), 0);
  cap = b.cap;
  assert_int_equal(cap, 256);
  sp_buf_consume(&b, 150);
  assert_int_equal(b.off, 150);
  assert_int_equal(sp_buf_pending(&b), 50);
  b.data[150] = 0x01; /* mark the first pending byte */
  /* 200 more do not fit after len, but do after moving the 50 pending
   * bytes to the front: no new allocation. */
  assert_int_equal(sp_buf_append(&b, x, sizeof(x)), 0);
  assert_int_equal(b.cap, cap);
  assert_int_equal(t.count, 1);
  assert_int_equal(b.off, 0);
  assert_int_equal(b.len, 250);
  assert_int_equal(b.data[0], 0x01);
  /* Consuming everything (or more) rewinds to empty. */
  sp_buf_consume(&b, 250);
  assert_int_equal(b.off, 0);
  assert_int_equal(b.len, 0);
  assert_int_equal(sp_buf_append(&b, x, 10), 0);
  sp_buf_consume(&b, 1000);
  assert_int_equal(sp_buf_pending(&b), 0);
  assert_int_equal(b.len, 0);
  /* reset keeps the capacity */
  assert_int_equal(sp_buf_append(&b, x, 10), 0);
  sp_buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, cap);
  sp_buf_free(&b);
  assert_int_equal(t.live, 0);
}

static void test_failure_leaves_buffer_intact(void **state) {
  sp_test_mem t;
  sp_buf b;
  uint8_t x[300];

  (void)state;
  memset(x, 0x11, sizeof(x));
  sp_test_mem_init(&t);
  sp_buf_init(&b, &t.mem);
  assert_int_equal(sp_buf_append(&b, x, 100), 0);
  t.fail_at = t.count + 1;
  assert_string_equal(sp_err_name(sp_buf_append(&b, x, sizeof(x))),
                      "SP_ERR_NOMEM");
  assert_int_equal(b.len, 100);
  assert_int_equal(b.cap, 256);
  assert_int_equal(b.data[99], 0x11);
  /* An impossible size fails without calling the allocator. */
  t.fail_at = 0;
  t.count = 0;
  assert_int_equal(sp_buf_reserve(&b, SIZE_MAX), SP_ERR_NOMEM);
  assert_int_equal(t.count, 0);
  assert_int_equal(sp_buf_reserve(&b, SIZE_MAX - 50), SP_ERR_NOMEM);
  assert_int_equal(t.count, 0);
  sp_buf_free(&b);
  assert_int_equal(t.live, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_append_grows_and_keeps_bytes),
      cmocka_unit_test(test_empty_append_allocates_nothing),
      cmocka_unit_test(test_consume_and_reclaim),
      cmocka_unit_test(test_failure_leaves_buffer_intact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
