/*
 * sp_origin_index_test.c: the in-memory store's origin index (hash table
 * of origin ids, the committed set of ranges), against plain arrays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/errors.h"
#include "sp_test_mem.h"
#include "store/sp_origin_index.h"

static sp_uuid dev(unsigned d) {
  sp_uuid u;
  memset(&u, 0, sizeof(u));
  u.bytes[0] = (uint8_t)d;
  u.bytes[15] = (uint8_t)(d * 7);
  return u;
}

/* A deterministic generator (the test must not depend on a clock). */
static uint64_t next_rand(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 33;
}

#define N 3000

/* Counts allocations; fails none (its mem is a resolved allocator, as
 * the store hands the index). */
static sp_test_mem tm;

typedef struct ref {
  unsigned d;
  uint64_t origin;
  sp_seq seq;
  int live;
} ref;

/* Insert, find and remove in random order; every live mapping is found
 * after every removal (backward-shift deletion keeps clusters whole),
 * every removed one is gone. */
static void test_against_reference(void **state) {
  static ref r[N];
  sp_oidx x;
  uint64_t rs = 7;
  size_t live = 0;
  (void)state;

  sp_test_mem_init(&tm);
  sp_oidx_init(&x, 12345);
  for (size_t i = 0; i < N; ++i) {
    r[i].d = (unsigned)(next_rand(&rs) % 5);
    /* Small, overlapping numbers across devices: many collisions. */
    r[i].origin = 1 + next_rand(&rs) % 400;
    r[i].seq = i + 1;
    r[i].live = 0;
    for (size_t j = 0; j < i; ++j) {
      if (r[j].live && r[j].d == r[i].d && r[j].origin == r[i].origin) {
        r[i].origin = 0; /* the index holds each origin id once here */
      }
    }
    if (r[i].origin == 0) {
      continue;
    }
    sp_uuid d = dev(r[i].d);
    assert_int_equal(sp_oidx_reserve(&tm.mem, &x, 1, 1), 0);
    assert_int_equal(sp_oidx_find(&x, &d, r[i].origin), 0);
    sp_oidx_insert(&x, &d, r[i].origin, r[i].seq);
    sp_oidx_commit(&x, &d, r[i].origin);
    r[i].live = 1;
    ++live;
    /* Now and then remove a random live one. */
    if (next_rand(&rs) % 3 == 0) {
      size_t k = (size_t)(next_rand(&rs) % (i + 1));
      if (r[k].live) {
        sp_uuid dk = dev(r[k].d);
        sp_oidx_remove(&x, &dk, r[k].origin, r[k].seq);
        r[k].live = 0;
        --live;
      }
    }
    if (i % 97 == 0) {
      for (size_t j = 0; j <= i; ++j) {
        sp_uuid dj = dev(r[j].d);
        /* A removed id may have come back with a later sequence. */
        if (r[j].live) {
          assert_int_equal(sp_oidx_find(&x, &dj, r[j].origin), r[j].seq);
        } else if (r[j].origin) {
          assert_int_not_equal(sp_oidx_find(&x, &dj, r[j].origin),
                               r[j].seq);
        }
      }
    }
  }
  assert_int_equal(x.n, live);
  assert_true(x.cap >= 2 * live);
  /* The committed set: every origin each device ever had, removals or
   * not; its high the largest. */
  for (unsigned d = 0; d < 6; ++d) {
    uint64_t want = 0;
    sp_uuid u = dev(d);
    for (uint64_t o = 0; o <= 401; ++o) {
      int had = 0;
      for (size_t j = 0; j < N; ++j) {
        had |= r[j].d == d && r[j].origin == o && o != 0;
      }
      assert_int_equal(sp_oidx_committed(&x, &u, o), had);
      want = had ? o : want;
    }
    assert_int_equal(sp_oidx_high(&x, &u), want);
  }
  /* Removing what is not there (wrong sequence, unknown id) is a no-op. */
  for (size_t j = 0; j < N; ++j) {
    if (r[j].live) {
      sp_uuid dj = dev(r[j].d);
      sp_oidx_remove(&x, &dj, r[j].origin, r[j].seq + 1);
      assert_int_equal(sp_oidx_find(&x, &dj, r[j].origin), r[j].seq);
      sp_oidx_remove(&x, &dj, r[j].origin, r[j].seq);
      assert_int_equal(sp_oidx_find(&x, &dj, r[j].origin), 0);
    }
  }
  assert_int_equal(x.n, 0);
  sp_oidx_free(&tm.mem, &x);
  assert_int_equal(tm.live, 0);
}

/* The same origin id twice (a leader's log that broke the rule): both
 * kept, each removable by its sequence. */
static void test_duplicates(void **state) {
  sp_oidx x;
  sp_uuid d = dev(1);
  (void)state;

  sp_test_mem_init(&tm);
  sp_oidx_init(&x, 1);
  assert_int_equal(sp_oidx_find(&x, &d, 3), 0); /* empty table */
  assert_int_equal(sp_oidx_high(&x, &d), 0);
  assert_int_equal(sp_oidx_reserve(&tm.mem, &x, 2, 1), 0);
  sp_oidx_insert(&x, &d, 3, 10);
  sp_oidx_insert(&x, &d, 3, 11);
  sp_oidx_remove(&x, &d, 3, 10);
  assert_int_equal(sp_oidx_find(&x, &d, 3), 11);
  sp_oidx_remove(&x, &d, 3, 11);
  assert_int_equal(sp_oidx_find(&x, &d, 3), 0);
  assert_int_equal(sp_oidx_find(&x, &d, 0), 0);
  sp_oidx_free(&tm.mem, &x);
}

static int body_reserve(const sp_mem *mem, void *arg) {
  sp_oidx x, y;
  int rv = 0;
  (void)arg;

  sp_oidx_init(&x, 9);
  sp_oidx_init(&y, 9);
  for (unsigned i = 1; i <= 200 && rv == 0; ++i) {
    sp_uuid d = dev(i % 40);
    size_t n = x.n, cap = x.cap, nh = x.nranges;
    rv = sp_oidx_reserve(mem, &x, 1, 1);
    if (rv != 0) {
      /* Nothing lost: every mapping and high still there. */
      assert_int_equal(x.n, n);
      assert_true(x.cap == cap || cap == 0 || x.cap >= cap);
      assert_int_equal(x.nranges, nh);
      for (unsigned j = 1; j < i; ++j) {
        sp_uuid dj = dev(j % 40);
        assert_int_equal(sp_oidx_find(&x, &dj, j), j);
      }
      break;
    }
    sp_oidx_insert(&x, &d, i, i);
    sp_oidx_commit(&x, &d, i);
  }
  if (rv == 0) {
    rv = sp_oidx_copy_set(mem, &y, &x);
    if (rv == 0) {
      sp_uuid d = dev(7);
      /* 5 origins 40 apart per device: 5 ranges each. */
      assert_int_equal(y.nranges, 200);
      assert_int_equal(sp_oidx_high(&y, &d), 167);
      assert_true(sp_oidx_committed(&y, &d, 127));
      assert_false(sp_oidx_committed(&y, &d, 128));
    }
  }
  sp_oidx_free(mem, &x);
  sp_oidx_free(mem, &y);
  return rv;
}

/* Ranges kept sorted, disjoint and never adjacent. */
static void assert_ranges_canonical(const sp_oidx *x) {
  for (size_t i = 0; i < x->nranges; ++i) {
    const sp_oidx_range *r = &x->ranges[i];
    assert_true(r->lo >= 1 && r->lo <= r->hi);
    if (i > 0) {
      const sp_oidx_range *p = &x->ranges[i - 1];
      int c = memcmp(p->device.bytes, r->device.bytes, 16);
      assert_true(c < 0 || (c == 0 && p->hi + 1 < r->lo));
    }
  }
}

/* Random batches of origins committed in any order (holes, joins, merges
 * of two ranges, repeats) against a reference bitmap; the reservation
 * bound is never exceeded. */
static void test_committed_ranges(void **state) {
  enum { DEVS = 3, MAXO = 300, ROUNDS = 400 };
  static uint8_t had[DEVS][MAXO + 2];
  uint64_t rs = 77;
  sp_oidx x;
  (void)state;

  memset(had, 0, sizeof(had));
  sp_test_mem_init(&tm);
  sp_oidx_init(&x, 5);
  for (unsigned round = 0; round < ROUNDS; ++round) {
    sp_entry batch[8];
    size_t n = 1 + (size_t)(next_rand(&rs) % 8), bound, before;
    memset(batch, 0, sizeof(batch));
    for (size_t i = 0; i < n; ++i) {
      batch[i].device_id = dev((unsigned)(next_rand(&rs) % DEVS));
      /* Runs of consecutive origins now and then, zeros too. */
      if (i > 0 && next_rand(&rs) % 2 == 0 && batch[i - 1].origin_seq &&
          batch[i - 1].origin_seq < MAXO) {
        batch[i].device_id = batch[i - 1].device_id;
        batch[i].origin_seq = batch[i - 1].origin_seq + 1;
      } else {
        batch[i].origin_seq = next_rand(&rs) % (MAXO + 1);
      }
    }
    bound = sp_oidx_new_ranges(&x, batch, n);
    assert_int_equal(sp_oidx_reserve(&tm.mem, &x, 0, bound), 0);
    before = x.nranges;
    for (size_t i = 0; i < n; ++i) {
      if (batch[i].origin_seq) {
        sp_oidx_commit(&x, &batch[i].device_id, batch[i].origin_seq);
        had[batch[i].device_id.bytes[0]][batch[i].origin_seq] = 1;
      }
    }
    assert_true(x.nranges <= before + bound);
    assert_ranges_canonical(&x);
    if (round % 40 == 0 || round == ROUNDS - 1) {
      for (unsigned d = 0; d < DEVS; ++d) {
        sp_uuid u = dev(d);
        uint64_t high = 0;
        for (uint64_t o = 0; o <= MAXO + 1; ++o) {
          assert_int_equal(sp_oidx_committed(&x, &u, o), had[d][o]);
          high = had[d][o] ? o : high;
        }
        assert_int_equal(sp_oidx_high(&x, &u), high);
      }
    }
  }
  sp_oidx_free(&tm.mem, &x);
  assert_int_equal(tm.live, 0);
}

static void test_reserve_nomem(void **state) {
  (void)state;
  assert_true(sp_test_mem_fail_each(body_reserve, NULL, NULL) > 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_reference),
      cmocka_unit_test(test_duplicates),
      cmocka_unit_test(test_committed_ranges),
      cmocka_unit_test(test_reserve_nomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
