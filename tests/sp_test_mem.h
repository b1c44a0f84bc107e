/*
 * sp_test_mem.h: a counting allocator for tests that can fail the i-th
 * allocation and reports what is still live (leaks).
 */
#ifndef SP_TEST_MEM_H
#define SP_TEST_MEM_H

#include <stddef.h>

#include "sync_protocol/mem.h"

typedef struct sp_test_mem {
  sp_mem mem;
  /* Allocation number (1-based) that fails; 0 = none.  With `fail_all`,
   * every allocation from that one on fails. */
  long fail_at;
  int fail_all;
  /* Allocations attempted so far. */
  long count;
  /* Allocations failed so far. */
  long failed;
  /* Blocks currently allocated. */
  long live;
} sp_test_mem;

/* Reset counters, fail nothing; `t->mem` becomes usable as an sp_mem. */
void sp_test_mem_init(sp_test_mem *t);

/*
 * Run `body(mem, arg)` with the i-th allocation failing, for i = 1, 2, ...
 * until a run completes without reaching allocation i.  After each run
 * the live count must be back to zero (checked with cmocka's assert).
 * `body` returns 0 on success or a negative code; a run whose allocation
 * failed must return SP_ERR_NOMEM (or any code in `also_ok`, 0-terminated
 * list, for bodies that map it).  Returns the number of runs.
 */
long sp_test_mem_fail_each(int (*body)(const sp_mem *mem, void *arg),
                           void *arg, const int *also_ok);

#endif /* SP_TEST_MEM_H */
