/*
 * sp_test_mem.c: counting, failing allocator for tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"
#include "sp_test_mem.h"

static int should_fail(sp_test_mem *t) {
  ++t->count;
  if (t->fail_at > 0 &&
      (t->count == t->fail_at || (t->fail_all && t->count > t->fail_at))) {
    ++t->failed;
    return 1;
  }
  return 0;
}

static void *t_malloc(size_t size, void *ud) {
  sp_test_mem *t = ud;
  void *p;

  if (should_fail(t)) {
    return NULL;
  }
  p = malloc(size ? size : 1);
  if (p) {
    ++t->live;
  }
  return p;
}

static void t_free(void *ptr, void *ud) {
  sp_test_mem *t = ud;

  if (ptr) {
    --t->live;
    free(ptr);
  }
}

static void *t_calloc(size_t n, size_t size, void *ud) {
  sp_test_mem *t = ud;
  void *p;

  if (should_fail(t)) {
    return NULL;
  }
  p = calloc(n ? n : 1, size ? size : 1);
  if (p) {
    ++t->live;
  }
  return p;
}

static void *t_realloc(void *ptr, size_t size, void *ud) {
  sp_test_mem *t = ud;
  void *p;

  if (should_fail(t)) {
    return NULL;
  }
  p = realloc(ptr, size ? size : 1);
  if (p && !ptr) {
    ++t->live;
  }
  return p;
}

void sp_test_mem_init(sp_test_mem *t) {
  t->mem.user_data = t;
  t->mem.malloc = t_malloc;
  t->mem.free = t_free;
  t->mem.calloc = t_calloc;
  t->mem.realloc = t_realloc;
  t->fail_at = 0;
  t->fail_all = 0;
  t->count = 0;
  t->failed = 0;
  t->live = 0;
}

static int allowed(int rv, const int *also_ok) {
  if (rv == SP_ERR_NOMEM) {
    return 1;
  }
  for (; also_ok && *also_ok; ++also_ok) {
    if (rv == *also_ok) {
      return 1;
    }
  }
  return 0;
}

long sp_test_mem_fail_each(int (*body)(const sp_mem *mem, void *arg),
                           void *arg, const int *also_ok) {
  long i;

  for (i = 1;; ++i) {
    sp_test_mem t;
    int rv;

    sp_test_mem_init(&t);
    t.fail_at = i;
    rv = body(&t.mem, arg);
    if (t.live != 0) {
      print_error("allocation %ld failing: %ld blocks leaked\n", i, t.live);
    }
    assert_int_equal(t.live, 0);
    if (t.failed == 0) {
      assert_int_equal(rv, 0);
      return i;
    }
    if (!allowed(rv, also_ok)) {
      print_error("allocation %ld failing: body returned %d (%s)\n", i, rv,
                  sp_err_name(rv));
    }
    assert_true(allowed(rv, also_ok));
  }
}
