/*
 * sp_index_test.c: the hash index: lookups against a plain list as the
 * reference through random puts and deletes, values sharing a hash,
 * reserve, and every allocation failing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"
#include "sp_index.h"
#include "sp_test_mem.h"

#define N 3000

/* How many times `val` is stored under `hash`. */
static int count(const sp_index *ix, uint64_t hash, uintptr_t val) {
  size_t pos = 0;
  uintptr_t v;
  int n = 0;

  while ((v = sp_index_next(ix, hash, &pos, NULL)) != 0) {
    n += v == val;
  }
  return n;
}

static uint64_t rnd(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void test_matches_a_list(void **state) {
  sp_test_mem t;
  sp_index ix;
  static uint64_t hash[N];
  static int in[N];
  uint64_t x = 88172645463325252ULL, probes = 0;
  size_t held = 0, pos;
  int i, k;

  (void)state;
  sp_test_mem_init(&t);
  memset(&ix, 0, sizeof(ix));
  for (i = 0; i < N; ++i) {
    /* Few distinct hashes among the first values: long shared runs. */
    hash[i] = i < 64 ? (uint64_t)(i % 4) : sp_index_hash_u64((uint64_t)i);
  }
  for (k = 0; k < 40000; ++k) {
    i = (int)(rnd(&x) % N);
    if (in[i]) {
      assert_int_equal(sp_index_del(&ix, hash[i], (uintptr_t)i + 1), 0);
      in[i] = 0;
      --held;
    } else {
      assert_int_equal(sp_index_put(&ix, &t.mem, hash[i], (uintptr_t)i + 1),
                       0);
      in[i] = 1;
      ++held;
    }
    assert_int_equal(ix.n, held);
    if (k % 97 == 0) {
      int j;
      for (j = 0; j < N; ++j) {
        assert_int_equal(count(&ix, hash[j], (uintptr_t)j + 1), in[j]);
      }
    }
  }
  assert_int_equal(sp_index_del(&ix, 12345, 1), SP_ERR_NOT_FOUND);
  /* A lookup looks at a few slots, not at every value. */
  for (i = 64; i < N; ++i) {
    pos = 0;
    while (sp_index_next(&ix, hash[i], &pos, &probes) != 0) {
    }
  }
  assert_true(probes < 4u * (N - 64));
  sp_index_clear(&ix);
  assert_int_equal(ix.n, 0);
  assert_int_equal(count(&ix, hash[100], 101), 0);
  sp_index_free(&ix, &t.mem);
  assert_int_equal(t.live, 0);
}

static void test_uuid_hash_and_zero(void **state) {
  sp_test_mem t;
  sp_index ix;
  sp_uuid a, b;

  (void)state;
  sp_test_mem_init(&t);
  memset(&ix, 0, sizeof(ix));
  memset(&a, 0, sizeof(a));
  b = a;
  b.bytes[15] = 1;
  assert_true(sp_index_hash_uuid(&a) != sp_index_hash_uuid(&b));
  b = a;
  b.bytes[0] = 1;
  assert_true(sp_index_hash_uuid(&a) != sp_index_hash_uuid(&b));
  assert_int_equal(sp_index_put(&ix, &t.mem, 1, 0), SP_ERR_INVALID_ARGUMENT);
  /* An empty index answers without memory. */
  assert_int_equal(count(&ix, 1, 1), 0);
  assert_int_equal(sp_index_del(&ix, 1, 1), SP_ERR_NOT_FOUND);
  assert_int_equal(t.count, 0);
  sp_index_free(&ix, &t.mem);
}

static void test_reserve_then_puts_cannot_fail(void **state) {
  sp_test_mem t;
  sp_index ix;
  uintptr_t v;

  (void)state;
  sp_test_mem_init(&t);
  memset(&ix, 0, sizeof(ix));
  assert_int_equal(sp_index_reserve(&ix, &t.mem, 100), 0);
  t.fail_at = t.count + 1;
  t.fail_all = 1;
  for (v = 1; v <= 100; ++v) {
    assert_int_equal(sp_index_put(&ix, &t.mem, v * 7, v), 0);
  }
  /* Past what the memory holds a put fails cleanly: nothing added. */
  while (sp_index_put(&ix, &t.mem, v * 7, v) == 0) {
    ++v;
  }
  assert_int_equal(sp_index_put(&ix, &t.mem, v * 7, v), SP_ERR_NOMEM);
  assert_int_equal(ix.n, v - 1);
  assert_true(ix.n >= 100);
  assert_int_equal(count(&ix, 7, 1), 1);
  assert_int_equal(count(&ix, v * 7, v), 0);
  /* After a delete a put needs no memory. */
  assert_int_equal(sp_index_del(&ix, 7, 1), 0);
  assert_int_equal(sp_index_put(&ix, &t.mem, 1, 1000), 0);
  assert_int_equal(sp_index_reserve(&ix, &t.mem, 200), SP_ERR_NOMEM);
  assert_int_equal(count(&ix, 1, 1000), 1);
  sp_index_free(&ix, &t.mem);
  assert_int_equal(t.live, 0);
}

static int fill(const sp_mem *mem, void *arg) {
  sp_index ix;
  uintptr_t v;
  int rv = 0;

  (void)arg;
  memset(&ix, 0, sizeof(ix));
  for (v = 1; v <= 200 && rv == 0; ++v) {
    rv = sp_index_put(&ix, mem, sp_index_hash_u64(v), v);
    if (rv == 0) {
      assert_int_equal(count(&ix, sp_index_hash_u64(v), v), 1);
    }
  }
  /* Whatever failed, what was put is still found. */
  for (v = 1; v <= ix.n; ++v) {
    assert_int_equal(count(&ix, sp_index_hash_u64(v), v), 1);
  }
  sp_index_free(&ix, mem);
  return rv;
}

static void test_every_allocation_failing(void **state) {
  (void)state;
  assert_true(sp_test_mem_fail_each(fill, NULL, NULL) > 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matches_a_list),
      cmocka_unit_test(test_uuid_hash_and_zero),
      cmocka_unit_test(test_reserve_then_puts_cannot_fail),
      cmocka_unit_test(test_every_allocation_failing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
