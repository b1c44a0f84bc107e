/*
 * sp_errdetail_test.c: a host that gets SP_ERR_IO or SP_ERR_STORE can find
 * out why (issue 14 item 4).  The SQLite store keeps SQLite's text of its
 * last failure (sp_sqlite_store_errmsg, the vtable's errmsg), also for an
 * open that failed; the core puts a store's text into
 * SP_EVENT_STORE_FAILED's message, and asks only stores of version 4;
 * the key file calls leave errno set on SP_ERR_IO.  A full disk is
 * SQLite's max_page_count on the store's own connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_protocol/sync_protocol.h"
#include "sync_protocol/identity.h"
#include "sync_protocol/sqlite_store.h"
#include "sp_cluster.h"
#include "store/sp_sqlite_int.h"
#include "store_test_util.h"

#define LIB 0
#define LEADER 0
#define F1 1

static char tmpdir[64];

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp_errdetail_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  char cmd[128];

  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* A store whose file may grow by about `pages` pages more. */
static sp_sqlite_store *open_limited(const char *name, int pages) {
  sp_sqlite_store *s = NULL;
  char path[128], sql[96];
  sqlite3_int64 count = 0;
  sqlite3_stmt *st = NULL;

  path_of(path, sizeof(path), name);
  assert_int_equal(sp_sqlite_store_open(&s, path, NULL, NULL), 0);
  assert_int_equal(
      sqlite3_prepare_v2(s->db, "PRAGMA page_count", -1, &st, NULL), 0);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  count = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
           (long long)count + pages);
  assert_int_equal(sqlite3_exec(s->db, sql, NULL, NULL, NULL), SQLITE_OK);
  return s;
}

/* Apply entries `from`.. of 2000 bytes, 8 a batch, until a batch fails:
 * returns its code. */
static int apply_until_full(sp_store *vt, sp_seq from) {
  static uint8_t data[2000];
  uint8_t prev[SP_HASH_LEN] = {0}, hashes[8 * SP_HASH_LEN];
  sp_entry es[8];

  for (sp_seq seq = from; seq < from + 100000; seq += 8) {
    int rv;
    for (size_t i = 0; i < 8; ++i) {
      es[i] = st_entry(seq + i, (unsigned)(seq + i), data, sizeof(data));
      assert_int_equal(sp_chain_next(i ? hashes + (i - 1) * SP_HASH_LEN
                                       : prev,
                                     &es[i], hashes + i * SP_HASH_LEN),
                       0);
    }
    rv = vt->apply(es, hashes, 8, 1, vt->user_data);
    if (rv != 0) {
      return rv;
    }
    memcpy(prev, hashes + 7 * SP_HASH_LEN, SP_HASH_LEN);
  }
  return 0;
}

/* The disk fills: SP_ERR_STORE, and the store says why. */
static void test_sqlite_full(void **state) {
  sp_sqlite_store *s = open_limited("full.db", 40);
  sp_store_state ss;
  sp_store vt;

  (void)state;
  assert_string_equal(sp_sqlite_store_errmsg(s), "");
  sp_sqlite_store_get_vtable(s, &vt);
  assert_true(vt.version >= 4);
  assert_non_null(vt.errmsg);
  assert_int_equal(apply_until_full(&vt, 1), SP_ERR_STORE);
  assert_string_equal(sp_sqlite_store_errmsg(s), "database or disk is full");
  assert_string_equal(vt.errmsg(vt.user_data), "database or disk is full");
  /* Nothing half-applied; the next write transaction starts afresh. */
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied % 8, 0);
  assert_int_equal(vt.apply(NULL, NULL, 0, 2, vt.user_data), 0);
  assert_string_equal(sp_sqlite_store_errmsg(s), "");
  sp_sqlite_store_close(s);
}

/* An open that fails has no store: the thread's text and errno say why;
 * the next open that works clears the text. */
static void test_sqlite_open_failure(void **state) {
  sp_sqlite_store *s = (sp_sqlite_store *)&s; /* must become NULL */
  char path[128];

  (void)state;
  path_of(path, sizeof(path), "no/such/dir.db");
  errno = 0;
  assert_int_equal(sp_sqlite_store_open(&s, path, NULL, NULL), SP_ERR_IO);
  assert_null(s);
  assert_int_equal(errno, ENOENT);
  assert_non_null(strstr(sp_sqlite_store_errmsg(NULL),
                         "unable to open database file"));
  assert_non_null(strstr(sp_sqlite_store_errmsg(NULL), strerror(ENOENT)));

  path_of(path, sizeof(path), "fine.db");
  assert_int_equal(sp_sqlite_store_open(&s, path, NULL, NULL), 0);
  assert_string_equal(sp_sqlite_store_errmsg(NULL), "");
  sp_sqlite_store_close(s);
}

/* -- the core carries the store's text to the host -- */

typedef struct watch {
  sp_sqlite_store *sqlite; /* F1's store, when set */
  int old_version;         /* F1's vtable claims version 3 */
  long failed;
  char message[256];
  char parts[256]; /* "call|cause": store_call and store_cause */
  int code;
} watch;

static watch w;

static void hook(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)lib;
  if (dev != F1) {
    return;
  }
  if (w.sqlite) {
    sp_sqlite_store_get_vtable(w.sqlite, st);
  }
  if (w.old_version) {
    st->version = 3;
  }
}

static void on_event(tc *t, int dev, const sp_event *ev) {
  (void)t;
  if (dev == F1 && ev->type == SP_EVENT_STORE_FAILED) {
    ++w.failed;
    w.code = ev->error_code;
    snprintf(w.message, sizeof(w.message), "%s",
             ev->message ? ev->message : "(none)");
    snprintf(w.parts, sizeof(w.parts), "%s|%s",
             ev->store_call ? ev->store_call : "(none)",
             ev->store_cause ? ev->store_cause : "(none)");
  }
}

static void run_cluster(void) {
  tc t;

  assert_int_equal(tc_init(&t, 2, 1, SP_MILLISECONDS, NULL), 0);
  t.store_hook = hook;
  t.on_event = on_event;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  if (!w.sqlite) {
    sp_mem_store_fail_applies(t.dev[F1].store[LIB], 1000000);
  }
  tc_append(&t, LIB, 400, 2000);
  tc_run_for(&t, 10 * SP_SECONDS);
  tc_free(&t);
}

/* A follower whose SQLite disk fills: the event says so in SQLite's
 * words, once. */
/* sp_sqlite_store_errmsg(NULL) is the calling thread's: a failed open in
 * one thread neither shows nor clears in another. */
typedef struct other_thread {
  char before[256];
  char after[256];
  int rv;
} other_thread;

static void *fail_elsewhere(void *arg) {
  other_thread *o = arg;
  sp_sqlite_store *s = NULL;
  char path[128];

  snprintf(o->before, sizeof(o->before), "%s", sp_sqlite_store_errmsg(NULL));
  path_of(path, sizeof(path), "fine.db");
  o->rv = sp_sqlite_store_open(&s, path, NULL, NULL);
  snprintf(o->after, sizeof(o->after), "%s", sp_sqlite_store_errmsg(NULL));
  sp_sqlite_store_close(s);
  return NULL;
}

static void test_sqlite_errmsg_per_thread(void **state) {
  sp_sqlite_store *s = NULL;
  char path[128];
  other_thread o;
  pthread_t th;

  (void)state;
  path_of(path, sizeof(path), "no/such/dir.db");
  assert_int_equal(sp_sqlite_store_open(&s, path, NULL, NULL), SP_ERR_IO);
  memset(&o, 0, sizeof(o));
  assert_int_equal(pthread_create(&th, NULL, fail_elsewhere, &o), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_string_equal(o.before, "");
  assert_int_equal(o.rv, 0);
  assert_string_equal(o.after, "");
  /* The other thread's success did not clear this thread's text. */
  assert_non_null(strstr(sp_sqlite_store_errmsg(NULL),
                         "unable to open database file"));
}

static void test_store_failed_says_why(void **state) {
  (void)state;
  memset(&w, 0, sizeof(w));
  w.sqlite = open_limited("follower.db", 40);
  run_cluster();
  sp_sqlite_store_close(w.sqlite);
  assert_int_equal(w.failed, 1);
  assert_int_equal(w.code, SP_ERR_STORE);
  assert_string_equal(w.message,
                      "store apply failed: database or disk is full");
  /* The same, apart: a host words its own line without parsing ours. */
  assert_string_equal(w.parts, "apply|database or disk is full");
}

/* The in-memory store names its injected failures. */
static void test_mem_store_says_why(void **state) {
  (void)state;
  memset(&w, 0, sizeof(w));
  run_cluster();
  assert_int_equal(w.failed, 1);
  /* The first apply is the epoch record's (no entries). */
  assert_string_equal(w.message, "store epoch record failed: injected "
                                 "failure (sp_mem_store_fail_applies)");
}

/* A version 3 store has no errmsg: the library never reads past its
 * struct, and the message falls back to the code's text. */
static void test_old_store_not_asked(void **state) {
  char want[128];

  (void)state;
  memset(&w, 0, sizeof(w));
  w.old_version = 1;
  run_cluster();
  assert_int_equal(w.failed, 1);
  snprintf(want, sizeof(want), "store epoch record failed: %s",
           sp_strerror(SP_ERR_STORE));
  assert_string_equal(w.message, want);
  snprintf(want, sizeof(want), "epoch record|%s", sp_strerror(SP_ERR_STORE));
  assert_string_equal(w.parts, want);
}

/* -- key files: no object, errno tells -- */

static void test_key_file_errno(void **state) {
  sp_identity *id = NULL, *back = (sp_identity *)&back;
  char path[128];

  (void)state;
  assert_int_equal(sp_identity_generate(&id, NULL, NULL), 0);
  path_of(path, sizeof(path), "nodir/k.key");
  errno = 0;
  assert_int_equal(sp_identity_save(id, path), SP_ERR_IO);
  assert_int_equal(errno, ENOENT);
  errno = 0;
  assert_int_equal(sp_identity_load(&back, path, NULL), SP_ERR_IO);
  assert_int_equal(errno, ENOENT);
  /* A directory where the key should be. */
  errno = 0;
  assert_int_equal(sp_identity_load(&back, tmpdir, NULL),
                   SP_ERR_KEYFILE_PERMISSIONS);
  sp_identity_del(id);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sqlite_full),
      cmocka_unit_test(test_sqlite_open_failure),
      cmocka_unit_test(test_sqlite_errmsg_per_thread),
      cmocka_unit_test(test_store_failed_says_why),
      cmocka_unit_test(test_mem_store_says_why),
      cmocka_unit_test(test_old_store_not_asked),
      cmocka_unit_test(test_key_file_errno),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
