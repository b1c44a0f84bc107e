/*
 * sp_verify_test.c: sp_store_verify on both reference stores, with rows
 * corrupted at rest (a payload byte, a stored hash, a missing row).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sync_protocol/mem_store.h"
#include "sync_protocol/store_verify.h"
#include "store_test_util.h"
#ifdef SP_TEST_SQLITE
#include <sqlite3.h>

#include "sync_protocol/sqlite_store.h"
#endif

#define PAYLOAD 64

typedef struct seen {
  int calls;
  sp_seq last;
  sp_seq latest;
  int stop_at; /* return non-zero on this call (0: never) */
} seen;

static int on_progress(sp_seq through, sp_seq latest, void *ud) {
  seen *s = ud;

  assert_true(through > s->last); /* always forward */
  s->calls++;
  s->last = through;
  s->latest = latest;
  return s->calls == s->stop_at;
}

static sp_mem_store *mem_log(unsigned n) {
  sp_mem_store *ms;
  uint8_t data[PAYLOAD];
  unsigned k;

  assert_int_equal(sp_mem_store_new(&ms, NULL), 0);
  for (k = 1; k <= n; ++k) {
    sp_entry e;
    st_fill(data, sizeof(data), k);
    e = st_entry(0, k, data, sizeof(data));
    assert_int_equal(sp_mem_store_append(ms, &e, NULL), 0);
  }
  return ms;
}

/* A whole log verifies, with progress every SP_VERIFY_PROGRESS_ROWS rows
 * and once at the end. */
static void test_mem_clean_with_progress(void **state) {
  unsigned n = 2 * SP_VERIFY_PROGRESS_ROWS + 100;
  sp_mem_store *ms = mem_log(n);
  sp_store st;
  seen s = {0};
  sp_seq bad = 0;

  (void)state;
  sp_mem_store_get_vtable(ms, &st);
  assert_int_equal(sp_store_verify(&st, 0, on_progress, &s, &bad), 0);
  assert_int_equal(s.calls, 3);
  assert_int_equal(s.last, n);
  assert_int_equal(s.latest, n);
  assert_int_equal(bad, 0);
  /* From a later row, and after a prune (from the prune point on). */
  assert_int_equal(sp_store_verify(&st, 5000, NULL, NULL, NULL), 0);
  assert_int_equal(sp_mem_store_prune(ms, 300), 0);
  assert_int_equal(sp_store_verify(&st, 0, NULL, NULL, NULL), 0);
  assert_int_equal(sp_store_verify(&st, n, NULL, NULL, NULL), 0);
  assert_int_equal(sp_store_verify(&st, n + 1, NULL, NULL, NULL),
                   SP_ERR_NOT_FOUND);
  /* The host can stop a long walk. */
  memset(&s, 0, sizeof(s));
  s.stop_at = 1;
  assert_int_equal(sp_store_verify(&st, 0, on_progress, &s, NULL),
                   SP_ERR_CANCELED);
  assert_int_equal(s.calls, 1);
  sp_mem_store_del(ms);
}

/* One payload byte flipped in memory: found at its row, wherever the walk
 * starts before it; a walk starting past it does not look at it. */
static void test_mem_corrupt_payload(void **state) {
  sp_mem_store *ms = mem_log(6000);
  sp_store st;
  sp_entry e;
  seen s = {0};
  sp_seq bad = 0;
  uint8_t *p;

  (void)state;
  assert_int_equal(sp_mem_store_get(ms, 4500, &e, NULL), 0);
  p = (uint8_t *)(uintptr_t)e.data; /* the store's own bytes: rot at rest */
  p[3] ^= 0x20;
  sp_mem_store_get_vtable(ms, &st);
  assert_int_equal(sp_store_verify(&st, 0, on_progress, &s, &bad),
                   SP_ERR_STORE_CORRUPT);
  assert_int_equal(bad, 4500);
  assert_int_equal(s.calls, 1); /* the first 4096 rows were reported */
  assert_int_equal(s.last, SP_VERIFY_PROGRESS_ROWS);
  bad = 0;
  assert_int_equal(sp_store_verify(&st, 4499, NULL, NULL, &bad),
                   SP_ERR_STORE_CORRUPT);
  assert_int_equal(bad, 4500);
  assert_int_equal(sp_store_verify(&st, 4500, NULL, NULL, NULL), 0);
  p[3] ^= 0x20;
  assert_int_equal(sp_store_verify(&st, 0, NULL, NULL, NULL), 0);
  sp_mem_store_del(ms);
}

static void test_invalid_arguments(void **state) {
  sp_store st = SP_STORE_INIT;

  (void)state;
  assert_int_equal(sp_store_verify(NULL, 0, NULL, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_store_verify(&st, 0, NULL, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
}

/* A store that cannot decode row 11 (malformed columns): its read fails
 * with SP_ERR_STORE_CORRUPT after feeding rows 1..10. */
static sp_store g_inner;
static sp_entry_sink g_sink;

static int undecodable_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                            void *arg) {
  if (e->sequence == 11) {
    return SP_ERR_STORE_CORRUPT;
  }
  return g_sink(e, hash, arg);
}

static int undecodable_read(sp_seq after, sp_seq through, size_t max_count,
                            sp_entry_sink sink, void *sink_ctx, void *ud) {
  g_sink = sink;
  return g_inner.read(after, through, max_count, undecodable_sink, sink_ctx,
                      ud);
}

static void test_store_read_corrupt(void **state) {
  sp_mem_store *ms = mem_log(20);
  sp_store st;
  sp_seq bad = 0;

  (void)state;
  sp_mem_store_get_vtable(ms, &g_inner);
  st = g_inner;
  st.read = undecodable_read;
  assert_int_equal(sp_store_verify(&st, 0, NULL, NULL, &bad),
                   SP_ERR_STORE_CORRUPT);
  assert_int_equal(bad, 11);
  sp_mem_store_del(ms);
}

static int count_progress(sp_seq through, sp_seq latest, void *ud) {
  seen *s = ud;

  s->calls++;
  s->last = through;
  s->latest = latest;
  return 0;
}

/* Nothing to walk (an empty log, a walk from the latest row): progress
 * still comes once, after the last row, which is the start. */
static void test_empty_range_progress(void **state) {
  sp_mem_store *ms = mem_log(5);
  sp_store st;
  seen s = {0};

  (void)state;
  sp_mem_store_get_vtable(ms, &st);
  assert_int_equal(sp_store_verify(&st, 5, count_progress, &s, NULL), 0);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.last, 5);
  assert_int_equal(s.latest, 5);
  sp_mem_store_del(ms);
  ms = mem_log(0);
  memset(&s, 0, sizeof(s));
  sp_mem_store_get_vtable(ms, &st);
  assert_int_equal(sp_store_verify(&st, 0, count_progress, &s, NULL), 0);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.last, 0);
  sp_mem_store_del(ms);
}

#ifdef SP_TEST_SQLITE
static char g_dir[64];

static void sqlite_log(char *path, size_t len, const char *tag, unsigned n) {
  sp_sqlite_store *ss;
  uint8_t data[PAYLOAD];
  unsigned k;

  snprintf(path, len, "%s/%s.db", g_dir, tag);
  assert_int_equal(sp_sqlite_store_open(&ss, path, NULL, NULL), 0);
  for (k = 1; k <= n; ++k) {
    sp_entry e;
    st_fill(data, sizeof(data), k);
    e = st_entry(0, k, data, sizeof(data));
    assert_int_equal(sp_sqlite_store_append(ss, &e, 1, NULL), 0);
  }
  sp_sqlite_store_close(ss);
}

/* Another program edits the file behind the store's back. */
static void raw_sql(const char *path, const char *sql) {
  sqlite3 *db;

  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_changes(db), 1);
  sqlite3_close(db);
}

static int verify_file(const char *path, sp_seq from, sp_seq *bad,
                       seen *s) {
  sp_sqlite_store *ss;
  sp_store st;
  int rv;

  assert_int_equal(sp_sqlite_store_open(&ss, path, NULL, NULL), 0);
  sp_sqlite_store_get_vtable(ss, &st);
  rv = sp_store_verify(&st, from, s ? on_progress : NULL, s, bad);
  sp_sqlite_store_close(ss);
  return rv;
}

static void test_sqlite_clean(void **state) {
  char path[128];
  seen s = {0};

  (void)state;
  sqlite_log(path, sizeof(path), "clean", 300);
  assert_int_equal(verify_file(path, 0, NULL, &s), 0);
  assert_int_equal(s.calls, 1);
  assert_int_equal(s.last, 300);
}

/* A payload edited in the file (the store still opens: its metadata
 * agrees with the rows). */
static void test_sqlite_corrupt_payload(void **state) {
  char path[128];
  sp_seq bad = 0;

  (void)state;
  sqlite_log(path, sizeof(path), "payload", 300);
  raw_sql(path, "UPDATE sync_log SET data = x'00' || substr(data, 2)"
                " WHERE sequence = 150");
  assert_int_equal(verify_file(path, 0, &bad, NULL), SP_ERR_STORE_CORRUPT);
  assert_int_equal(bad, 150);
}

/* A stored hash edited in the file: caught at its own row. */
static void test_sqlite_corrupt_hash(void **state) {
  char path[128];
  sp_seq bad = 0;

  (void)state;
  sqlite_log(path, sizeof(path), "hash", 300);
  raw_sql(path, "UPDATE sync_log SET hash = zeroblob(32) WHERE sequence = 77");
  assert_int_equal(verify_file(path, 0, &bad, NULL), SP_ERR_STORE_CORRUPT);
  assert_int_equal(bad, 77);
}

/* A row deleted from the middle: the next one does not chain. */
static void test_sqlite_missing_row(void **state) {
  char path[128];
  sp_seq bad = 0;

  (void)state;
  sqlite_log(path, sizeof(path), "missing", 300);
  raw_sql(path, "DELETE FROM sync_log WHERE sequence = 200");
  assert_int_equal(verify_file(path, 0, &bad, NULL), SP_ERR_STORE_CORRUPT);
  assert_int_equal(bad, 201);
}

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof(g_dir), "/tmp/sp_verify_XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}
#else
static int setup(void **state) {
  (void)state;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return 0;
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mem_clean_with_progress),
      cmocka_unit_test(test_mem_corrupt_payload),
      cmocka_unit_test(test_invalid_arguments),
      cmocka_unit_test(test_store_read_corrupt),
      cmocka_unit_test(test_empty_range_progress),
#ifdef SP_TEST_SQLITE
      cmocka_unit_test(test_sqlite_clean),
      cmocka_unit_test(test_sqlite_corrupt_payload),
      cmocka_unit_test(test_sqlite_corrupt_hash),
      cmocka_unit_test(test_sqlite_missing_row),
#endif
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
