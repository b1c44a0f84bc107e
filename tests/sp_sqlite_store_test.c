/*
 * sp_sqlite_store_test.c: the SQLite reference store on real files in a
 * temporary directory, including a crash test that SIGKILLs a writer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/sqlite_store.h"
#include "sp_test_mem.h"
#include "store_test_util.h"

static const uint8_t zeros[SP_HASH_LEN];
static char tmpdir[64];
static unsigned file_counter;

/* A fresh path in the temporary directory. */
static const char *new_path(char *buf, size_t len, const char *tag) {
  snprintf(buf, len, "%s/%s-%u.db", tmpdir, tag, file_counter++);
  return buf;
}

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp_sqlite_store_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state) {
  DIR *d = opendir(tmpdir);
  struct dirent *de;
  char p[sizeof(tmpdir) + 300];
  (void)state;

  if (!d) {
    return -1;
  }
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
      snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
      unlink(p);
    }
  }
  closedir(d);
  return rmdir(tmpdir);
}

/* -- entries -- */

#define PAY 512
static uint8_t pay[64][PAY];

/* Entry k, its payload in pay[k % 64] (so 64 can be alive at once). */
static sp_entry entry_k(sp_seq seq, unsigned k) {
  size_t len = (k * 37u) % PAY;
  st_fill(pay[k % 64], len, k);
  return st_entry(seq, k, pay[k % 64], len);
}

/* Chain hashes for `n` entries after `prev`, into `hashes`. */
static void chain(const uint8_t prev[SP_HASH_LEN], const sp_entry *es,
                  size_t n, uint8_t *hashes) {
  const uint8_t *p = prev;
  for (size_t i = 0; i < n; ++i) {
    assert_int_equal(sp_chain_next(p, &es[i], hashes + i * SP_HASH_LEN), 0);
    p = hashes + i * SP_HASH_LEN;
  }
}

/* -- store helpers -- */

static sp_sqlite_store *open_ok(const char *path, const sp_sqlite_config *cfg) {
  sp_sqlite_store *s = NULL;
  int rv = sp_sqlite_store_open(&s, path, cfg, NULL);
  if (rv != 0) {
    print_error("open %s: %s\n", path, sp_err_name(rv));
  }
  assert_int_equal(rv, 0);
  assert_non_null(s);
  return s;
}

static sp_store vtable(sp_sqlite_store *s) {
  sp_store vt;
  sp_sqlite_store_get_vtable(s, &vt);
  return vt;
}

/* Append entries k = first_k .. first_k + n - 1; returns the first seq. */
static sp_seq append_n(sp_sqlite_store *s, unsigned first_k, size_t n) {
  sp_entry es[32];
  sp_seq first = 0;

  assert_true(n <= 32);
  for (size_t i = 0; i < n; ++i) {
    es[i] = entry_k(999, first_k + (unsigned)i); /* sequence ignored */
  }
  assert_int_equal(sp_sqlite_store_append(s, es, n, &first), 0);
  return first;
}

static int open_rv(const char *path, const sp_sqlite_config *cfg) {
  sp_sqlite_store *s = NULL;
  int rv = sp_sqlite_store_open(&s, path, cfg, NULL);
  if (rv == 0) {
    sp_sqlite_store_close(s);
  } else {
    assert_null(s);
  }
  return rv;
}

/* Run SQL on the file through a raw connection (tampering, checks). */
static void raw_exec(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  char *err = NULL;

  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    print_error("raw_exec %s: %s\n", sql, err ? err : "?");
  }
  sqlite3_free(err);
  assert_int_equal(rc, SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static sqlite3_int64 raw_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  sqlite3_int64 v;

  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  return v;
}

/* How many steps of the query plan of `sql` mention `needle`. */
static int raw_plan_uses(const char *path, const char *sql,
                         const char *needle) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  char q[512];
  int uses = 0;

  snprintf(q, sizeof(q), "EXPLAIN QUERY PLAN %s", sql);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *d = (const char *)sqlite3_column_text(st, 3);
    uses += d && strstr(d, needle) != NULL;
  }
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  return uses;
}

/* -- tests -- */

static void test_open_args(void **state) {
  char p[PATH_MAX];
  sp_sqlite_config cfg;
  sp_sqlite_store *s = NULL;
  (void)state;

  sp_sqlite_config_default(&cfg);
  assert_int_equal(cfg.version, SP_SQLITE_CONFIG_VERSION);
  assert_int_equal(cfg.synchronous, SP_SQLITE_SYNC_NORMAL);
  assert_int_equal(cfg.create, 1);
  assert_int_equal(cfg.read_only, 0);
  assert_int_equal(cfg.busy_timeout_ms, 5000);

  new_path(p, sizeof(p), "args");
  assert_int_equal(sp_sqlite_store_open(NULL, p, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_open(&s, NULL, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  cfg.version = 0;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_VERSION);
  cfg.version = SP_SQLITE_CONFIG_VERSION + 1;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_VERSION);
  sp_sqlite_config_default(&cfg);
  cfg.synchronous = (sp_sqlite_sync)5;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_INVALID_ARGUMENT);
  sp_sqlite_config_default(&cfg);
  cfg.busy_timeout_ms = -1;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_INVALID_ARGUMENT);

  /* Missing file, creation not allowed; missing directory. */
  sp_sqlite_config_default(&cfg);
  cfg.create = 0;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_IO);
  assert_int_equal(access(p, F_OK), -1);
  cfg.create = 1;
  assert_int_equal(open_rv("/nonexistent-dir-sp/x.db", &cfg), SP_ERR_IO);
  cfg.read_only = 1;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_IO);
  sp_sqlite_store_close(NULL);

  /* Created with the WAL journal, marked as a sync log. */
  s = open_ok(p, NULL);
  sp_sqlite_store_close(s);
  assert_int_equal(raw_int(p, "PRAGMA application_id"), 0x53504c47);
  sqlite3 *db;
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st,
                                      NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

static void test_append_reopen(void **state) {
  char p[PATH_MAX];
  uint8_t hashes[5 * SP_HASH_LEN], digest[SP_HASH_LEN];
  sp_entry es[5];
  sp_sqlite_status stt;
  sp_store_state ss;
  st_collect c;
  (void)state;

  new_path(p, sizeof(p), "reopen");
  sp_sqlite_store *s = open_ok(p, NULL);
  assert_int_equal(sp_sqlite_store_status(s, &stt), 0);
  assert_int_equal(stt.entry_count, 0);
  assert_int_equal(stt.latest, 0);
  assert_int_equal(append_n(s, 1, 3), 1);
  sp_sqlite_store_close(s);

  /* The next sequence comes from the file. */
  s = open_ok(p, NULL);
  assert_int_equal(append_n(s, 4, 2), 4);
  sp_store vt = vtable(s);
  for (unsigned k = 1; k <= 5; ++k) {
    es[k - 1] = entry_k(k, k);
  }
  chain(zeros, es, 5, hashes);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 5);
  for (size_t i = 0; i < 5; ++i) {
    assert_int_equal(c.seqs[i], i + 1);
    assert_memory_equal(c.hashes[i], hashes + i * SP_HASH_LEN, SP_HASH_LEN);
  }
  /* Field by field, through a sink that compares. */
  st_collect want;
  st_collect_init(&want);
  for (size_t i = 0; i < 5; ++i) {
    st_collect_sink(&es[i], hashes + i * SP_HASH_LEN, &want);
  }
  assert_true(want.digest == c.digest);

  assert_int_equal(sp_sqlite_store_status(s, &stt), 0);
  assert_int_equal(stt.entry_count, 5);
  assert_int_equal(stt.first, 1);
  assert_int_equal(stt.latest, 5);
  assert_int_equal(stt.pruned_through, 0);
  assert_memory_equal(stt.head_hash, hashes + 4 * SP_HASH_LEN, SP_HASH_LEN);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 5);
  assert_memory_equal(ss.head_hash, hashes + 4 * SP_HASH_LEN, SP_HASH_LEN);
  assert_int_equal(sp_sqlite_store_verify(s, digest), 0);
  assert_memory_equal(digest, hashes + 4 * SP_HASH_LEN, SP_HASH_LEN);

  /* Invalid appends change nothing. */
  sp_entry bad = entry_k(0, 1);
  bad.change_type = (sp_change_type)9;
  assert_int_equal(sp_sqlite_store_append(s, &bad, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  bad = entry_k(0, 1);
  bad.model_type_len = SP_MAX_MODEL_TYPE_LEN + 1;
  assert_int_equal(sp_sqlite_store_append(s, &bad, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_append(s, es, 0, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_append(s, NULL, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_append(NULL, es, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_status(s, &stt), 0);
  assert_int_equal(stt.entry_count, 5);
  sp_sqlite_store_close(s);
}

/* Two store objects on one file never hand out the same sequence. */
static void test_two_writers(void **state) {
  char p[PATH_MAX];
  sp_sqlite_status stt;
  uint8_t digest[SP_HASH_LEN];
  st_collect c;
  (void)state;

  new_path(p, sizeof(p), "two");
  sp_sqlite_store *a = open_ok(p, NULL);
  sp_sqlite_store *b = open_ok(p, NULL);
  sp_seq expect = 1;
  for (unsigned round = 0; round < 60; ++round) {
    size_t n = 1 + round % 3;
    sp_sqlite_store *w = round % 2 ? b : a;
    assert_int_equal(append_n(w, round * 3, n), expect);
    expect += n;
  }
  assert_int_equal(sp_sqlite_store_status(b, &stt), 0);
  assert_int_equal(stt.entry_count, expect - 1);
  assert_int_equal(stt.latest, expect - 1);
  assert_int_equal(sp_sqlite_store_verify(a, digest), 0);
  assert_memory_equal(digest, stt.head_hash, SP_HASH_LEN);
  sp_store va = vtable(a);
  st_collect_init(&c);
  assert_int_equal(va.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           va.user_data), 0);
  assert_int_equal(c.n, expect - 1);
  for (size_t i = 0; i < c.n; ++i) {
    assert_int_equal(c.seqs[i], i + 1);
  }
  sp_sqlite_store_close(a);
  sp_sqlite_store_close(b);
}

/* A follower log 1, 2, 5, 6 (gaps come from the leader). */
static sp_sqlite_store *gapped(const char *path, uint8_t h[7][SP_HASH_LEN]) {
  static const sp_seq seqs[] = {1, 2, 5, 6};
  sp_entry es[4];
  uint8_t hashes[4 * SP_HASH_LEN];

  sp_sqlite_store *s = open_ok(path, NULL);
  sp_store vt = vtable(s);
  for (size_t i = 0; i < 4; ++i) {
    es[i] = entry_k(seqs[i], (unsigned)seqs[i]);
  }
  chain(zeros, es, 4, hashes);
  memset(h, 0, 7 * SP_HASH_LEN);
  for (size_t i = 0; i < 4; ++i) {
    memcpy(h[seqs[i]], hashes + i * SP_HASH_LEN, SP_HASH_LEN);
  }
  assert_int_equal(vt.apply(es, hashes, 4, 1, vt.user_data), 0);
  return s;
}

static void test_read_gaps(void **state) {
  char p[PATH_MAX];
  uint8_t h[7][SP_HASH_LEN], out[SP_HASH_LEN];
  sp_log_bounds b;
  st_collect c;
  (void)state;

  sp_sqlite_store *s = gapped(new_path(p, sizeof(p), "gaps"), h);
  sp_store vt = vtable(s);

  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 4);
  assert_int_equal(c.seqs[2], 5);
  assert_memory_equal(c.hashes[3], h[6], SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(vt.read(3, 5, SIZE_MAX, st_collect_sink, &c, vt.user_data),
                   0);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.seqs[0], 5);
  st_collect_init(&c);
  assert_int_equal(vt.read(2, 4, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);
  st_collect_init(&c);
  assert_int_equal(vt.read(1, 100, 2, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.seqs[0], 2);
  assert_int_equal(c.seqs[1], 5);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 100, 0, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 0);
  st_collect_init(&c);
  assert_int_equal(vt.read(6, UINT64_MAX, 10, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 0);

  /* Sink stop (entry not taken) and sink error (returned unchanged). */
  st_collect_init(&c);
  c.stop_at = 5;
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 2);
  st_collect_init(&c);
  c.fail_at = 2;
  c.err = -4242;
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data),
                   -4242);
  assert_int_equal(c.n, 1);
  /* The statement was reset: the next read starts over. */
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 4);

  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.latest, 6);
  assert_int_equal(b.pruned_through, 0);
  for (sp_seq q = 0; q <= 8; ++q) {
    int want = (q == 0 || q == 1 || q == 2 || q == 5 || q == 6)
                   ? 0
                   : SP_ERR_NOT_FOUND;
    assert_int_equal(vt.hash_at(q, out, vt.user_data), want);
    if (want == 0) {
      assert_memory_equal(out, q ? h[q] : zeros, SP_HASH_LEN);
    }
  }
  assert_int_equal(vt.hash_at(UINT64_MAX, out, vt.user_data),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);
}

/* From inside a sink: one-row queries work, the rest is refused. */
typedef struct reenter {
  sp_sqlite_store *s;
  sp_store vt;
  int calls;
} reenter;

static int reenter_sink(const sp_entry *entry, const uint8_t *hash,
                        void *ctx) {
  reenter *r = ctx;
  uint8_t out[SP_HASH_LEN];
  sp_log_bounds b;
  sp_sqlite_status stt;
  sp_entry e = entry_k(0, 50);
  st_collect c;

  ++r->calls;
  assert_int_equal(r->vt.hash_at(entry->sequence, out, r->vt.user_data), 0);
  assert_memory_equal(out, hash, SP_HASH_LEN);
  assert_int_equal(r->vt.bounds(&b, r->vt.user_data), 0);
  assert_int_equal(b.latest, 6);
  st_collect_init(&c);
  assert_int_equal(r->vt.read(0, 100, 10, st_collect_sink, &c,
                              r->vt.user_data), SP_ERR_INVALID_STATE);
  assert_int_equal(sp_sqlite_store_append(r->s, &e, 1, NULL),
                   SP_ERR_INVALID_STATE);
  assert_int_equal(sp_sqlite_store_prune(r->s, 1), SP_ERR_INVALID_STATE);
  assert_int_equal(sp_sqlite_store_verify(r->s, NULL), SP_ERR_INVALID_STATE);
  assert_int_equal(sp_sqlite_store_status(r->s, &stt), SP_ERR_INVALID_STATE);
  e.sequence = 40;
  assert_int_equal(r->vt.apply(&e, hash, 1, 1, r->vt.user_data),
                   SP_ERR_INVALID_STATE);
  return 0;
}

static void test_sink_reentry(void **state) {
  char p[PATH_MAX];
  uint8_t h[7][SP_HASH_LEN];
  reenter r;
  (void)state;

  r.s = gapped(new_path(p, sizeof(p), "reenter"), h);
  r.vt = vtable(r.s);
  r.calls = 0;
  assert_int_equal(r.vt.read(0, 100, 10, reenter_sink, &r, r.vt.user_data),
                   0);
  assert_int_equal(r.calls, 4);
  assert_int_equal(sp_sqlite_store_verify(r.s, NULL), 0);
  assert_int_equal(sp_sqlite_store_prune(r.s, 1), 0);
  sp_sqlite_store_close(r.s);
}

static void test_prune(void **state) {
  char p[PATH_MAX];
  uint8_t h[7][SP_HASH_LEN], out[SP_HASH_LEN], want[SP_HASH_LEN];
  sp_log_bounds b;
  sp_sqlite_status stt;
  st_collect c;
  (void)state;

  sp_sqlite_store *s = gapped(new_path(p, sizeof(p), "prune"), h);
  sp_store vt = vtable(s);
  assert_int_equal(sp_sqlite_store_prune(s, 7), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_prune(s, 0), 0);
  assert_int_equal(sp_sqlite_store_prune(s, 2), 0);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 2);
  assert_int_equal(b.latest, 6);
  assert_int_equal(vt.hash_at(2, out, vt.user_data), 0);
  assert_memory_equal(out, h[2], SP_HASH_LEN);
  assert_int_equal(vt.hash_at(1, out, vt.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(vt.hash_at(0, out, vt.user_data), 0);
  assert_memory_equal(out, zeros, SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 100, 10, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.seqs[0], 5);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);

  /* Inside the gap: the link there is the one after 2. */
  assert_int_equal(sp_sqlite_store_prune(s, 3), 0);
  assert_int_equal(vt.hash_at(3, out, vt.user_data), 0);
  assert_memory_equal(out, h[2], SP_HASH_LEN);
  assert_int_equal(vt.hash_at(2, out, vt.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_sqlite_store_prune(s, 1), 0);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 3);
  sp_sqlite_store_close(s);

  /* Survives reopen (and the open-time check accepts a pruned file). */
  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(vt.hash_at(3, out, vt.user_data), 0);
  assert_memory_equal(out, h[2], SP_HASH_LEN);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);

  /* Everything. */
  assert_int_equal(sp_sqlite_store_prune(s, 6), 0);
  assert_int_equal(sp_sqlite_store_status(s, &stt), 0);
  assert_int_equal(stt.entry_count, 0);
  assert_int_equal(stt.first, 0);
  assert_int_equal(stt.latest, 0);
  assert_int_equal(stt.pruned_through, 6);
  assert_memory_equal(stt.head_hash, h[6], SP_HASH_LEN);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 6);
  assert_int_equal(b.latest, 6);
  sp_sqlite_store_close(s);
  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(vt.hash_at(6, out, vt.user_data), 0);
  assert_memory_equal(out, h[6], SP_HASH_LEN);
  /* The chain continues from the kept link. */
  assert_int_equal(append_n(s, 7, 1), 7);
  sp_entry e = entry_k(7, 7);
  assert_int_equal(sp_chain_next(h[6], &e, want), 0);
  assert_int_equal(vt.hash_at(7, out, vt.user_data), 0);
  assert_memory_equal(out, want, SP_HASH_LEN);
  assert_int_equal(sp_sqlite_store_verify(s, out), 0);
  assert_memory_equal(out, want, SP_HASH_LEN);
  sp_sqlite_store_close(s);
}

static void test_epoch(void **state) {
  char p[PATH_MAX];
  sp_store_state ss;
  (void)state;

  new_path(p, sizeof(p), "epoch");
  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  assert_int_equal(sp_sqlite_store_set_epoch(s, 5), 0);
  assert_int_equal(sp_sqlite_store_set_epoch(s, 3), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_set_epoch(s, 5), 0);
  sp_sqlite_store_close(s);
  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.epoch, 5);
  assert_int_equal(vt.apply(NULL, NULL, 0, 7, vt.user_data), 0);
  assert_int_equal(vt.apply(NULL, NULL, 0, 6, vt.user_data), 0);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.epoch, 7);
  assert_int_equal(ss.applied, 0);
  /* Epochs use the whole u64 range. */
  assert_int_equal(sp_sqlite_store_set_epoch(s, UINT64_MAX - 1), 0);
  sp_sqlite_store_close(s);
  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_true(ss.epoch == UINT64_MAX - 1);
  assert_int_equal(sp_sqlite_store_set_epoch(s, 9), SP_ERR_INVALID_ARGUMENT);
  sp_sqlite_store_close(s);
}

static void test_follower_apply_reopen(void **state) {
  char p[PATH_MAX];
  sp_entry es[20];
  uint8_t hashes[20 * SP_HASH_LEN], out[SP_HASH_LEN];
  sp_store_state ss;
  st_collect c;
  (void)state;

  new_path(p, sizeof(p), "follower");
  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  for (unsigned i = 0; i < 20; ++i) {
    es[i] = entry_k(i + 1, i + 1);
  }
  chain(zeros, es, 20, hashes);
  assert_int_equal(vt.apply(es, hashes, 12, 3, vt.user_data), 0);
  assert_int_equal(vt.apply(es + 12, hashes + 12 * SP_HASH_LEN, 8, 4,
                            vt.user_data), 0);
  sp_sqlite_store_close(s);

  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 20);
  assert_int_equal(ss.epoch, 4);
  assert_memory_equal(ss.head_hash, hashes + 19 * SP_HASH_LEN, SP_HASH_LEN);
  st_collect want;
  st_collect_init(&want);
  for (size_t i = 0; i < 20; ++i) {
    st_collect_sink(&es[i], hashes + i * SP_HASH_LEN, &want);
  }
  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 20);
  assert_true(c.digest == want.digest);
  assert_int_equal(sp_sqlite_store_verify(s, out), 0);
  assert_memory_equal(out, hashes + 19 * SP_HASH_LEN, SP_HASH_LEN);

  /* The store keeps the hashes it is given; verify notices they are not
   * the chain. */
  sp_entry more = entry_k(21, 21);
  uint8_t fake[SP_HASH_LEN];
  memset(fake, 0x5a, sizeof(fake));
  assert_int_equal(vt.apply(&more, fake, 1, 4, vt.user_data), 0);
  assert_int_equal(vt.hash_at(21, out, vt.user_data), 0);
  assert_memory_equal(out, fake, SP_HASH_LEN);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), SP_ERR_CHAIN_MISMATCH);
  sp_sqlite_store_close(s);
}

static void test_apply_atomic(void **state) {
  char p[PATH_MAX], sql[256];
  sp_entry es[12];
  uint8_t hashes[12 * SP_HASH_LEN];
  st_snapshot before, after;
  sp_store_state ss;
  (void)state;

  new_path(p, sizeof(p), "atomic");
  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  for (unsigned i = 0; i < 12; ++i) {
    es[i] = entry_k(i + 1, i + 1);
  }
  chain(zeros, es, 12, hashes);
  assert_int_equal(vt.apply(es, hashes, 4, 2, vt.user_data), 0);
  st_snapshot_take(&vt, &before);
  assert_int_equal(before.count, 4);

  /* Refused before touching the file. */
  assert_true(vt.apply(es + 3, hashes, 2, 9, vt.user_data) < 0);
  sp_entry dup[3] = {es[4], es[5], es[5]};
  assert_true(vt.apply(dup, hashes, 3, 9, vt.user_data) < 0);
  sp_entry bad[2] = {es[4], es[5]};
  bad[1].change_type = (sp_change_type)8;
  assert_true(vt.apply(bad, hashes, 2, 9, vt.user_data) < 0);
  bad[1] = es[5];
  bad[1].sequence = (sp_seq)INT64_MAX + 1;
  assert_true(vt.apply(bad, hashes, 2, 9, vt.user_data) < 0);
  assert_true(vt.apply(NULL, hashes, 2, 9, vt.user_data) < 0);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  /* At or below applied where no row is left to collide with. */
  assert_int_equal(sp_sqlite_store_prune(s, 4), 0);
  st_snapshot_take(&vt, &before);
  assert_true(vt.apply(es + 2, hashes + 2 * SP_HASH_LEN, 3, 9,
                       vt.user_data) < 0);
  assert_true(vt.apply(es + 3, hashes + 3 * SP_HASH_LEN, 1, 9,
                       vt.user_data) < 0);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sync_log"), 0);

  /* Fails midway in SQLite: a row already sits at sequence 7 (written
   * behind the store's back), so the batch 5..10 hits it at its third
   * insert. */
  raw_exec(p, "INSERT INTO sync_log VALUES(7, zeroblob(16), 0, 'x',"
              " zeroblob(16), 0, 0, X'', zeroblob(32), 0)");
  st_snapshot_take(&vt, &before);
  assert_int_equal(vt.apply(es + 4, hashes + 4 * SP_HASH_LEN, 6, 9,
                            vt.user_data), SP_ERR_STORE);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sync_log"), 1);
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sync_log"
                              " WHERE sequence IN (5, 6, 8)"), 0);
  raw_exec(p, "DELETE FROM sync_log WHERE sequence = 7");

  /* An injected SQLite failure on the last row of the batch. */
  snprintf(sql, sizeof(sql),
           "CREATE TRIGGER inject BEFORE INSERT ON sync_log"
           " WHEN NEW.sequence = 10 BEGIN SELECT RAISE(ABORT, 'injected');"
           " END");
  raw_exec(p, sql);
  st_snapshot_take(&vt, &before);
  assert_int_equal(vt.apply(es + 4, hashes + 4 * SP_HASH_LEN, 6, 9,
                            vt.user_data), SP_ERR_STORE);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 4);
  assert_int_equal(ss.epoch, 2);
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sync_log"), 0);
  raw_exec(p, "DROP TRIGGER inject");

  /* Whatever failed, the same batch now goes through whole. */
  assert_int_equal(vt.apply(es + 4, hashes + 4 * SP_HASH_LEN, 6, 9,
                            vt.user_data), 0);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 10);
  assert_int_equal(ss.epoch, 9);
  assert_memory_equal(ss.head_hash, hashes + 9 * SP_HASH_LEN, SP_HASH_LEN);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);
  /* The file is consistent after all that. */
  assert_int_equal(open_rv(p, NULL), 0);
}

static void test_reset(void **state) {
  char p[PATH_MAX];
  uint8_t head[SP_HASH_LEN], out[SP_HASH_LEN], h2[SP_HASH_LEN];
  sp_log_bounds b;
  sp_store_state ss;
  st_collect c;
  (void)state;

  new_path(p, sizeof(p), "reset");
  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  append_n(s, 1, 8);
  assert_int_equal(sp_sqlite_store_set_epoch(s, 4), 0);
  memset(head, 0x33, sizeof(head));
  assert_int_equal(sp_sqlite_store_reset(s, 0, head), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_reset(s, 5, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_reset(s, 100, head), 0);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 100);
  assert_memory_equal(ss.head_hash, head, SP_HASH_LEN);
  assert_int_equal(ss.epoch, 4);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.pruned_through, 100);
  assert_int_equal(b.latest, 100);
  assert_int_equal(vt.hash_at(100, out, vt.user_data), 0);
  assert_memory_equal(out, head, SP_HASH_LEN);
  assert_int_equal(vt.hash_at(5, out, vt.user_data), SP_ERR_NOT_FOUND);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 0);
  sp_sqlite_store_close(s);

  /* After reopen the chain continues from the reset link. */
  s = open_ok(p, NULL);
  vt = vtable(s);
  sp_entry e = entry_k(101, 101);
  assert_int_equal(sp_chain_next(head, &e, h2), 0);
  assert_int_equal(vt.apply(&e, h2, 1, 4, vt.user_data), 0);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 101);
  assert_int_equal(sp_sqlite_store_verify(s, out), 0);
  assert_memory_equal(out, h2, SP_HASH_LEN);
  /* Reset back to nothing. */
  assert_int_equal(sp_sqlite_store_reset(s, 0, zeros), 0);
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 0);
  assert_int_equal(append_n(s, 1, 1), 1);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);
}

static void test_verify_tamper(void **state) {
  static const char *const tamper[] = {
      "UPDATE sync_log SET data = X'00' || data WHERE sequence = 7",
      "UPDATE sync_log SET model_type = 'Other' WHERE sequence = 3",
      "UPDATE sync_log SET version = version + 1 WHERE sequence = 12",
      "UPDATE sync_log SET timestamp = 1 WHERE sequence = 1",
      "UPDATE sync_log SET device_id = zeroblob(16) WHERE sequence = 9",
      "UPDATE sync_log SET record_id = X'01' WHERE sequence = 9",
      "UPDATE sync_log SET change_type = 9 WHERE sequence = 4",
      "UPDATE sync_log SET hash = zeroblob(32) WHERE sequence = 5",
      /* The whole tail rewritten with its own (wrong) link: */
      "UPDATE sync_log SET hash = zeroblob(32) WHERE sequence = 20;"
      "UPDATE sync_log_meta SET head_hash = zeroblob(32)",
      /* A row moved to a sequence that is not the chained one. */
      "UPDATE sync_log SET sequence = 25 WHERE sequence = 20;"
      "UPDATE sync_log_meta SET applied = 25",
  };
  char p[PATH_MAX];
  (void)state;

  for (size_t t = 0; t < sizeof(tamper) / sizeof(tamper[0]); ++t) {
    new_path(p, sizeof(p), "tamper");
    sp_sqlite_store *s = open_ok(p, NULL);
    append_n(s, 1, 20);
    assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
    raw_exec(p, tamper[t]);
    assert_int_equal(sp_sqlite_store_verify(s, NULL), SP_ERR_CHAIN_MISMATCH);
    sp_sqlite_store_close(s);
  }
}

static void test_corrupt_refused(void **state) {
  static const char *const inconsistent[] = {
      "UPDATE sync_log_meta SET applied = 9",
      "UPDATE sync_log_meta SET applied = 11",
      "DELETE FROM sync_log WHERE sequence = 10",
      "UPDATE sync_log_meta SET head_hash = zeroblob(32)",
      "UPDATE sync_log_meta SET pruned_through = 3",
      "UPDATE sync_log_meta SET head_hash = X'00'",
      "DELETE FROM sync_log_meta",
      "INSERT INTO sync_log SELECT 11, device_id, timestamp, model_type,"
      " record_id, change_type, version, data, hash, origin_seq"
      " FROM sync_log WHERE sequence = 1",
      "DROP TABLE sync_log",
      "PRAGMA user_version = 0",
      "PRAGMA application_id = 7",
  };
  char p[PATH_MAX];
  sp_sqlite_config cfg;
  FILE *f;
  (void)state;

  /* Not SQLite at all. */
  new_path(p, sizeof(p), "garbage");
  f = fopen(p, "wb");
  assert_non_null(f);
  for (int i = 0; i < 4096; ++i) {
    fputc((i * 7) & 0xff, f);
  }
  fclose(f);
  assert_int_equal(open_rv(p, NULL), SP_ERR_STORE_CORRUPT);

  /* SQLite, but some other application's database. */
  new_path(p, sizeof(p), "other");
  raw_exec(p, "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)");
  assert_int_equal(open_rv(p, NULL), SP_ERR_STORE_CORRUPT);
  /* ... and left exactly as it was: no table, no journal mode change. */
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sqlite_master"), 1);
  assert_int_equal(raw_int(p, "SELECT journal_mode = 'delete'"
                              " FROM pragma_journal_mode"), 1);
  assert_int_equal(raw_int(p, "PRAGMA application_id"), 0);

  /* An empty file is a new database only where creating is allowed. */
  new_path(p, sizeof(p), "empty");
  f = fopen(p, "wb");
  assert_non_null(f);
  fclose(f);
  sp_sqlite_config_default(&cfg);
  cfg.create = 0;
  assert_int_equal(open_rv(p, &cfg), SP_ERR_STORE_CORRUPT);
  assert_int_equal(open_rv(p, NULL), 0);

  /* A newer schema. */
  new_path(p, sizeof(p), "newer");
  assert_int_equal(open_rv(p, NULL), 0);
  raw_exec(p, "PRAGMA user_version = 3");
  assert_int_equal(open_rv(p, NULL), SP_ERR_VERSION);

  /* Metadata that disagrees with the rows. */
  for (size_t t = 0; t < sizeof(inconsistent) / sizeof(inconsistent[0]);
       ++t) {
    new_path(p, sizeof(p), "inconsistent");
    sp_sqlite_store *s = open_ok(p, NULL);
    append_n(s, 1, 10);
    sp_sqlite_store_close(s);
    raw_exec(p, inconsistent[t]);
    int rv = open_rv(p, NULL);
    if (rv != SP_ERR_STORE_CORRUPT) {
      print_error("after '%s': %s\n", inconsistent[t], sp_err_name(rv));
    }
    assert_int_equal(rv, SP_ERR_STORE_CORRUPT);
  }

  /* Rows below the prune point. */
  new_path(p, sizeof(p), "below");
  sp_sqlite_store *s = open_ok(p, NULL);
  append_n(s, 1, 10);
  assert_int_equal(sp_sqlite_store_prune(s, 4), 0);
  sp_sqlite_store_close(s);
  assert_int_equal(open_rv(p, NULL), 0);
  raw_exec(p, "INSERT INTO sync_log SELECT 2, device_id, timestamp,"
              " model_type, record_id, change_type, version, data, hash,"
              " origin_seq FROM sync_log WHERE sequence = 5");
  assert_int_equal(open_rv(p, NULL), SP_ERR_STORE_CORRUPT);
}

static void test_sync_full_and_read_only(void **state) {
  char p[PATH_MAX];
  sp_sqlite_config cfg;
  sp_sqlite_status stt;
  st_collect c;
  (void)state;

  new_path(p, sizeof(p), "full");
  sp_sqlite_config_default(&cfg);
  cfg.synchronous = SP_SQLITE_SYNC_FULL;
  sp_sqlite_store *s = open_ok(p, &cfg);
  assert_int_equal(append_n(s, 1, 5), 1);
  sp_sqlite_store_close(s);
  s = open_ok(p, &cfg);
  assert_int_equal(append_n(s, 6, 5), 6);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);

  /* A read-only opener sees the log but cannot change it. */
  sp_sqlite_config ro;
  sp_sqlite_config_default(&ro);
  ro.read_only = 1;
  sp_sqlite_store *r = open_ok(p, &ro);
  sp_store vr = vtable(r);
  assert_int_equal(sp_sqlite_store_status(r, &stt), 0);
  assert_int_equal(stt.entry_count, 10);
  st_collect_init(&c);
  assert_int_equal(vr.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vr.user_data), 0);
  assert_int_equal(c.n, 10);
  assert_int_equal(append_n(s, 11, 1), 11);
  assert_int_equal(sp_sqlite_store_status(r, &stt), 0);
  assert_int_equal(stt.entry_count, 11);
  sp_entry e = entry_k(0, 1);
  assert_int_equal(sp_sqlite_store_append(r, &e, 1, NULL), SP_ERR_STORE);
  assert_int_equal(sp_sqlite_store_prune(r, 3), SP_ERR_STORE);
  assert_int_equal(sp_sqlite_store_set_epoch(r, 3), SP_ERR_STORE);
  sp_sqlite_store_close(r);
  assert_int_equal(sp_sqlite_store_status(s, &stt), 0);
  assert_int_equal(stt.entry_count, 11);
  assert_int_equal(stt.epoch, 0);
  sp_sqlite_store_close(s);
}

/* -- crash safety -- */

#define CRASH_BATCH 1500

/* Child: apply batches forever from wherever the file is, reporting each
 * committed position on `fd`.  Never returns. */
static void crash_child(const char *path, int fd) {
  static sp_entry es[CRASH_BATCH];
  static uint8_t hashes[CRASH_BATCH * SP_HASH_LEN];
  static uint8_t data[CRASH_BATCH][64];
  sp_sqlite_store *s = NULL;
  sp_store_state ss;
  sp_store vt;

  if (sp_sqlite_store_open(&s, path, NULL, NULL) != 0) {
    _exit(3);
  }
  sp_sqlite_store_get_vtable(s, &vt);
  if (vt.state(&ss, vt.user_data) != 0) {
    _exit(4);
  }
  for (;;) {
    const uint8_t *prev = ss.head_hash;
    for (size_t i = 0; i < CRASH_BATCH; ++i) {
      unsigned k = (unsigned)(ss.applied + 1 + i);
      size_t len = k % 64;
      st_fill(data[i], len, k);
      es[i] = st_entry(ss.applied + 1 + i, k, data[i], len);
      if (sp_chain_next(prev, &es[i], hashes + i * SP_HASH_LEN) != 0) {
        _exit(5);
      }
      prev = hashes + i * SP_HASH_LEN;
    }
    if (vt.apply(es, hashes, CRASH_BATCH, 1, vt.user_data) != 0) {
      _exit(6);
    }
    ss.applied += CRASH_BATCH;
    memcpy(ss.head_hash, hashes + (CRASH_BATCH - 1) * SP_HASH_LEN,
           SP_HASH_LEN);
    if (write(fd, &ss.applied, sizeof(ss.applied)) !=
        (ssize_t)sizeof(ss.applied)) {
      _exit(7);
    }
  }
}

static void test_crash_safety(void **state) {
  char p[PATH_MAX];
  unsigned seed = (unsigned)time(NULL);
  sp_seq durable = 0;
  int kills = 0;
  (void)state;

  new_path(p, sizeof(p), "crash");
  sp_sqlite_store_close(open_ok(p, NULL));
  srand(seed);
  print_message("crash test seed %u\n", seed);
  for (int round = 0; round < 12; ++round) {
    int fds[2];
    pid_t pid;
    int status;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      crash_child(p, fds[1]);
    }
    close(fds[1]);
    /* 20..420 ms: from inside the first batch to several batches in. */
    struct timespec ts = {0, (long)(20 + rand() % 400) * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status)) {
      print_error("child exited with %d\n", WEXITSTATUS(status));
    }
    assert_true(WIFSIGNALED(status));
    ++kills;
    /* The last position the child saw committed. */
    sp_seq reported;
    while (read(fds[0], &reported, sizeof(reported)) ==
           (ssize_t)sizeof(reported)) {
      if (reported > durable) {
        durable = reported;
      }
    }
    close(fds[0]);

    /* Reopening checks metadata against rows; then check it by hand. */
    sp_sqlite_store *s = open_ok(p, NULL);
    sp_store vt = vtable(s);
    sp_store_state ss;
    sp_sqlite_status stt;
    uint8_t digest[SP_HASH_LEN];
    assert_int_equal(vt.state(&ss, vt.user_data), 0);
    assert_int_equal(sp_sqlite_store_status(s, &stt), 0);
    assert_int_equal(sp_sqlite_store_verify(s, digest), 0);
    sp_sqlite_store_close(s);
    assert_memory_equal(digest, ss.head_hash, SP_HASH_LEN);
    assert_true(ss.applied % CRASH_BATCH == 0);
    assert_true(ss.applied >= durable);
    assert_int_equal(stt.entry_count, ss.applied);
    assert_int_equal(stt.latest, ss.applied);
    assert_int_equal(raw_int(p, "SELECT applied FROM sync_log_meta"),
                     (sqlite3_int64)ss.applied);
    assert_int_equal(raw_int(p, "SELECT COALESCE(MAX(sequence), 0)"
                                " FROM sync_log"),
                     (sqlite3_int64)ss.applied);
    assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sync_log"),
                     (sqlite3_int64)ss.applied);
    durable = ss.applied;
  }
  assert_int_equal(kills, 12);
  /* The test means something only if the writer got somewhere. */
  print_message("crash test: %llu entries durable after %d kills\n",
                (unsigned long long)durable, kills);
  assert_true(durable >= CRASH_BATCH);
}

/* -- allocation failures -- */

static int body_alloc(const sp_mem *mem, void *arg) {
  char p1[PATH_MAX], p2[PATH_MAX];
  sp_sqlite_store *leader = NULL, *follower = NULL;
  sp_entry es[6], batch[6];
  uint8_t hashes[6 * SP_HASH_LEN];
  st_collect c;
  int rv;
  (void)arg;

  new_path(p1, sizeof(p1), "alloc-l");
  new_path(p2, sizeof(p2), "alloc-f");
  rv = sp_sqlite_store_open(&leader, p1, NULL, mem);
  if (rv != 0) {
    assert_null(leader);
    goto out;
  }
  for (unsigned i = 0; i < 6; ++i) {
    es[i] = entry_k(0, i + 1);
  }
  rv = sp_sqlite_store_append(leader, es, 6, NULL);
  if (rv != 0) {
    goto out;
  }
  sp_store vl = vtable(leader);
  st_collect_init(&c);
  rv = vl.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c, vl.user_data);
  if (rv != 0) {
    goto out;
  }
  assert_int_equal(c.n, 6);
  rv = sp_sqlite_store_open(&follower, p2, NULL, mem);
  if (rv != 0) {
    assert_null(follower);
    goto out;
  }
  for (unsigned i = 0; i < 6; ++i) {
    batch[i] = entry_k(i + 1, i + 1);
    memcpy(hashes + i * SP_HASH_LEN, c.hashes[i], SP_HASH_LEN);
  }
  sp_store vf = vtable(follower);
  rv = vf.apply(batch, hashes, 6, 1, vf.user_data);
  if (rv == 0) {
    rv = sp_sqlite_store_verify(follower, NULL);
  }
out:
  sp_sqlite_store_close(leader);
  sp_sqlite_store_close(follower);
  return rv;
}

static void test_alloc_failure(void **state) {
  (void)state;
  /* The store object itself is what goes through sp_mem (SQLite has its
   * own allocator): the first allocation of each open fails once. */
  assert_true(sp_test_mem_fail_each(body_alloc, NULL, NULL) >= 2);
}

/* A new file `tag` (its path in p) with entries 1 to 3 and what `save`
 * keeps there (follower positions or addresses, checked), closed. */
static void new_saved(char *p, size_t len, const char *tag,
                      int (*save)(const sp_store *)) {
  new_path(p, len, tag);
  sp_sqlite_store *s = open_ok(p, NULL);
  assert_int_equal(append_n(s, 1, 3), 1);
  sp_store vt = vtable(s);
  assert_int_equal(save(&vt), 0);
  sp_sqlite_store_close(s);
}

/* A new file `tag` (its path in p) with entries 1 and 2 and nothing else,
 * opened again with `cfg`. */
static sp_sqlite_store *new_bare(char *p, size_t len, const char *tag,
                                 const sp_sqlite_config *cfg) {
  new_path(p, len, tag);
  sp_sqlite_store *s = open_ok(p, NULL);
  assert_int_equal(append_n(s, 1, 2), 1);
  sp_sqlite_store_close(s);
  return open_ok(p, cfg);
}

/* Follower positions: kept across reopening, readable read-only, and a
 * file that never saved one (or was written before the table existed)
 * has none. */
static void test_follower_acks(void **state) {
  char p[PATH_MAX];
  uint8_t got[SP_PUBLIC_KEY_LEN], k2[SP_PUBLIC_KEY_LEN];
  sp_sqlite_config ro;
  st_facks f;
  (void)state;

  new_saved(p, sizeof(p), "facks", st_check_follower_acks);

  memset(k2, 0x22, sizeof(k2));
  sp_sqlite_config_default(&ro);
  ro.read_only = 1;
  sp_sqlite_store *s = open_ok(p, &ro);
  sp_store vt = vtable(s);
  memset(&f, 0, sizeof(f));
  assert_int_equal(vt.load_follower_acks(st_facks_sink, &f, vt.user_data), 0);
  assert_int_equal(f.n, 2);
  assert_int_equal(st_facks_find(&f, 0xa1, got), 1);
  assert_memory_equal(got, k2, sizeof(k2));
  assert_int_equal(st_facks_find(&f, 0xb2, got), 3);
  sp_sqlite_store_close(s);

  s = new_bare(p, sizeof(p), "nofacks", &ro);
  vt = vtable(s);
  memset(&f, 0, sizeof(f));
  assert_int_equal(vt.load_follower_acks(st_facks_sink, &f, vt.user_data), 0);
  assert_int_equal(f.n, 0);
  sp_sqlite_store_close(s);
}

/* Follower addresses: kept across reopening, readable read-only, none in
 * a file that never saved one (the table is created on the first save). */
static void test_follower_addresses(void **state) {
  char p[PATH_MAX];
  const char *got;
  sp_sqlite_config ro;
  st_faddrs f;
  (void)state;

  new_saved(p, sizeof(p), "faddrs", st_check_follower_addresses);

  sp_sqlite_config_default(&ro);
  ro.read_only = 1;
  sp_sqlite_store *s = open_ok(p, &ro);
  sp_store vt = vtable(s);
  memset(&f, 0, sizeof(f));
  assert_int_equal(
      vt.load_follower_addresses(st_faddrs_sink, &f, vt.user_data), 0);
  assert_int_equal(f.n, 1);
  got = st_faddrs_find(&f, 0xa1);
  assert_non_null(got);
  assert_string_equal(got, "192.0.2.9:7002");
  sp_sqlite_store_close(s);

  s = new_bare(p, sizeof(p), "nofaddrs", &ro);
  vt = vtable(s);
  memset(&f, 0, sizeof(f));
  assert_int_equal(
      vt.load_follower_addresses(st_faddrs_sink, &f, vt.user_data), 0);
  assert_int_equal(f.n, 0);
  sp_sqlite_store_close(s);
}

/* A kept position that no longer decodes is skipped: the others are still
 * fed, and the load says some row was corrupt. */
static void test_follower_acks_bad_row_skipped(void **state) {
  char p[PATH_MAX];
  st_facks f;
  (void)state;

  new_saved(p, sizeof(p), "facksbad", st_check_follower_acks);
  /* The first row (by device, the table's key) gets a key of the wrong
   * length. */
  raw_exec(p, "UPDATE sync_follower_ack SET key = x'00' WHERE device ="
              " (SELECT min(device) FROM sync_follower_ack)");
  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  memset(&f, 0, sizeof(f));
  assert_int_equal(vt.load_follower_acks(st_facks_sink, &f, vt.user_data),
                   SP_ERR_STORE_CORRUPT);
  assert_int_equal(f.n, 1);
  sp_sqlite_store_close(s);
}

/* -- writes from every device (vtable version 3) -- */

static int prune_cb(void *ctx, sp_seq through) {
  return sp_sqlite_store_prune(ctx, through);
}

/* Fail the next apply as late as possible: its metadata update, after its
 * rows are in and its outbox items retired (a trigger written by another
 * connection). */
static void arm_apply(void *ctx, int on) {
  raw_exec(ctx, on ? "CREATE TRIGGER sp_fail BEFORE UPDATE ON sync_log_meta"
                     " BEGIN SELECT RAISE(ABORT, 'injected'); END"
                   : "DROP TRIGGER sp_fail");
}

static void test_v3_conformance(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  (void)state;

  s = open_ok(new_path(p, sizeof(p), "origins"), NULL);
  vt = vtable(s);
  assert_int_equal(vt.version, SP_STORE_VERSION);
  assert_true(st_has_v3(&vt));
  assert_int_equal(st_check_origins(&vt, prune_cb, s), 0);
  sp_sqlite_store_close(s);

  /* The committed set, and that it survives a reopen. */
  s = open_ok(new_path(p, sizeof(p), "committed"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_committed_set(&vt, prune_cb, s), 0);
  sp_sqlite_store_close(s);
  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(st_check_committed_after(&vt), 0);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);

  s = open_ok(new_path(p, sizeof(p), "outbox"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_outbox(&vt), 0);
  sp_sqlite_store_close(s);

  s = open_ok(new_path(p, sizeof(p), "retire"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_retire(&vt, arm_apply, p), 0);
  sp_sqlite_store_close(s);

  s = open_ok(new_path(p, sizeof(p), "anchor"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_anchor(&vt), 0);
  sp_sqlite_store_close(s);
  s = open_ok(new_path(p, sizeof(p), "anchor0"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_anchor_no_shift(&vt), 0);
  sp_sqlite_store_close(s);
  s = open_ok(new_path(p, sizeof(p), "originmax"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_origin_max(&vt), 0);
  sp_sqlite_store_close(s);
  s = open_ok(new_path(p, sizeof(p), "anchormax"), NULL);
  vt = vtable(s);
  assert_int_equal(st_check_anchor_max(&vt), 0);
  sp_sqlite_store_close(s);
}

/* The public append keeps origin ids and refuses repeats, atomically. */
static void test_append_origin(void **state) {
  char p[PATH_MAX];
  sp_entry es[3];
  st_snapshot before, after;
  st_collect c;
  sp_seq first = 0;
  (void)state;

  sp_sqlite_store *s = open_ok(new_path(p, sizeof(p), "aorigin"), NULL);
  sp_store vt = vtable(s);
  es[0] = st_origin_entry(1, ST_OTHER, 4);
  es[1] = st_origin_entry(2, ST_OTHER, 0);
  assert_int_equal(sp_sqlite_store_append(s, es, 2, &first), 0);
  assert_int_equal(first, 1);
  st_snapshot_take(&vt, &before);
  es[0] = st_origin_entry(3, ST_THIRD, 1);
  es[1] = st_origin_entry(4, ST_OTHER, 4);
  assert_int_equal(sp_sqlite_store_append(s, es, 2, &first), SP_ERR_EXISTS);
  es[1] = st_origin_entry(4, ST_THIRD, 1);
  assert_int_equal(sp_sqlite_store_append(s, es, 2, &first), SP_ERR_EXISTS);
  es[1].origin_seq = (uint64_t)INT64_MAX + 1;
  assert_int_equal(sp_sqlite_store_append(s, es, 2, &first),
                   SP_ERR_INVALID_ARGUMENT);
  st_snapshot_take(&vt, &after);
  assert_true(st_snapshot_equal(&before, &after));
  assert_int_equal(st_find(&vt, ST_THIRD, 1), ST_NF(0));
  /* The committed set is searched through its primary key (O(log)). */
  assert_int_equal(raw_plan_uses(p,
                                 "SELECT lo, hi FROM sync_origin_range"
                                 " WHERE device = ?1 AND lo <= ?2"
                                 " ORDER BY lo DESC LIMIT 1",
                                 "PRIMARY KEY (device=? AND lo<?)"),
                   1);
  /* The planner finds origins through the partial index, whatever the
   * bound number. */
  assert_int_equal(raw_plan_uses(p,
                                 "SELECT sequence FROM sync_log"
                                 " WHERE device_id = ?1 AND origin_seq = ?2"
                                 " AND origin_seq != 0"
                                 " ORDER BY sequence LIMIT 1",
                                 "sync_log_origin"),
                   1);
  sp_sqlite_store_close(s);
  /* Durable, with the rest of the row. */
  s = open_ok(p, NULL);
  vt = vtable(s);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 1, 1, st_collect_sink, &c, vt.user_data), 0);
  assert_int_equal(c.origins[0], 4);
  assert_int_equal(st_find(&vt, ST_OTHER, 4), 1004);
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);
}

/* Outbox, origins and highs survive close and reopen. */
static void test_outbox_durable(void **state) {
  char p[PATH_MAX];
  sp_entry es[3];
  uint64_t o[8], first = 0, bytes;
  sp_uuid own = st_dev(ST_OWN);
  (void)state;

  sp_sqlite_store *s = open_ok(new_path(p, sizeof(p), "odurable"), NULL);
  sp_store vt = vtable(s);
  for (unsigned i = 0; i < 3; ++i) {
    es[i] = st_origin_entry(100 + i, ST_OWN, 0);
  }
  assert_int_equal(vt.outbox_put(es, 3, &first, vt.user_data), 0);
  assert_int_equal(vt.outbox_remove(2, vt.user_data), 0);
  assert_int_equal(vt.outbox_anchor(&own, 4, vt.user_data), 0);
  sp_entry applied = st_origin_entry(110, ST_OTHER, 8);
  assert_int_equal(st_apply_next(&vt, &applied, 1), 0);
  assert_int_equal(sp_sqlite_store_prune(s, 1), 0);
  bytes = st_payload(&es[0]) + st_payload(&es[2]);
  sp_sqlite_store_close(s);

  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_true(st_stats_are(&vt, 2, bytes, 8, 1));
  assert_int_equal(st_outbox_origins(&vt, 0, 8, o), 2);
  assert_int_equal(o[0], 5);
  assert_int_equal(o[1], 7);
  assert_int_equal(st_find(&vt, ST_OTHER, 8), 8);
  /* Still anchored: no renumbering on a later anchor. */
  assert_int_equal(vt.outbox_anchor(&own, 50, vt.user_data), 0);
  assert_int_equal(st_outbox_origins(&vt, 0, 8, o), 2);
  assert_int_equal(o[0], 5);
  assert_true(st_stats_are(&vt, 2, bytes, 51, 1));
  sp_sqlite_store_close(s);
  /* Read-only openers see it too. */
  sp_sqlite_config cfg;
  sp_sqlite_config_default(&cfg);
  cfg.read_only = 1;
  s = open_ok(p, &cfg);
  vt = vtable(s);
  assert_true(st_stats_are(&vt, 2, bytes, 51, 1));
  assert_int_equal(vt.outbox_put(es, 1, &first, vt.user_data), SP_ERR_STORE);
  sp_sqlite_store_close(s);
}

/* A process that puts into the outbox and dies without closing: the
 * items are there when the file is opened again. */
static void test_outbox_crash(void **state) {
  char p[PATH_MAX];
  uint64_t o[8];
  pid_t pid;
  int status;
  (void)state;

  new_path(p, sizeof(p), "ocrash");
  sp_sqlite_store_close(open_ok(p, NULL));
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    sp_sqlite_store *s = NULL;
    sp_store vt;
    sp_entry es[2] = {st_origin_entry(120, ST_OWN, 0),
                      st_origin_entry(121, ST_OWN, 0)};
    uint64_t first = 0;
    if (sp_sqlite_store_open(&s, p, NULL, NULL) != 0) {
      _exit(3);
    }
    sp_sqlite_store_get_vtable(s, &vt);
    if (vt.outbox_put(es, 2, &first, vt.user_data) != 0 || first != 1 ||
        vt.outbox_put(es, 1, &first, vt.user_data) != 0 || first != 3) {
      _exit(4);
    }
    _exit(0); /* no close, no checkpoint */
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);

  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  sp_entry a = st_origin_entry(120, ST_OWN, 0);
  sp_entry b = st_origin_entry(121, ST_OWN, 0);
  assert_true(st_stats_are(&vt, 3, 2 * st_payload(&a) + st_payload(&b), 4,
                           0));
  assert_int_equal(st_outbox_origins(&vt, 0, 8, o), 3);
  assert_int_equal(o[2], 3);
  sp_sqlite_store_close(s);
}

/* A full sync (reset) keeps the outbox and puts back the own writes above
 * the new applied sequence; they are there after reopening. */
static void test_reset_puts_back(void **state) {
  char p[PATH_MAX];
  sp_entry mine[4], log[5], want[3];
  uint8_t h2[SP_HASH_LEN];
  uint64_t o[8], first = 0, bytes;
  sp_store_state ss;
  st_expect x;
  (void)state;

  sp_sqlite_store *s = open_ok(new_path(p, sizeof(p), "reset3"), NULL);
  sp_store vt = vtable(s);
  for (unsigned i = 0; i < 4; ++i) {
    mine[i] = st_origin_entry(128 + i, ST_OWN, 0); /* buffers 0..3 */
  }
  assert_int_equal(vt.outbox_put(mine, 4, &first, vt.user_data), 0);
  log[0] = st_origin_entry(132, ST_OTHER, 0); /* buffers 4..7, 0 */
  log[1] = st_origin_entry(133, ST_OWN, 1);
  log[2] = st_origin_entry(134, ST_OWN, 2);
  log[3] = st_origin_entry(135, ST_OWN, 3);
  log[4] = st_origin_entry(136, ST_OTHER, 2);
  assert_int_equal(st_apply_next(&vt, log, 5), 0);
  assert_true(st_stats_are(&vt, 1, st_payload(&mine[3]), 5, 0));
  assert_int_equal(vt.hash_at(2, h2, vt.user_data), 0);

  assert_int_equal(sp_sqlite_store_reset(s, 2, h2), 0);
  bytes = st_payload(&log[2]) + st_payload(&log[3]) + st_payload(&mine[3]);
  assert_true(st_stats_are(&vt, 3, bytes, 5, 0));
  assert_int_equal(vt.state(&ss, vt.user_data), 0);
  assert_int_equal(ss.applied, 2);
  /* The put-back origins leave the committed set (pending again: a
   * leader draining this outbox must append them, and a wait must not
   * call them committed); the rest of it is kept (reset's documented
   * rule): own 1 at or below `applied`, and other devices' origins. */
  assert_int_equal(st_find(&vt, ST_OWN, 1), 1);
  assert_int_equal(st_find(&vt, ST_OWN, 2), ST_NF(1));
  assert_int_equal(st_find(&vt, ST_OWN, 3), ST_NF(1));
  assert_int_equal(st_find(&vt, ST_OTHER, 2), 2);
  assert_int_equal(st_find(&vt, ST_OWN, 4), ST_NF(1));
  sp_sqlite_store_close(s);

  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_true(st_stats_are(&vt, 3, bytes, 5, 0));
  want[0] = log[2];
  want[1] = log[3];
  want[2] = mine[3];
  want[2].origin_seq = 4;
  for (int i = 0; i < 3; ++i) {
    want[i].sequence = 0;
  }
  memset(&x, 0, sizeof(x));
  x.want = want;
  x.n = 3;
  assert_int_equal(vt.outbox_read(0, 8, st_expect_sink, &x, vt.user_data),
                   0);
  assert_int_equal(x.seen, 3);
  assert_false(x.bad);
  /* Nothing left to put back: a second reset changes no item. */
  assert_int_equal(sp_sqlite_store_reset(s, 2, h2), 0);
  assert_true(st_stats_are(&vt, 3, bytes, 5, 0));
  assert_int_equal(st_outbox_origins(&vt, 0, 8, o), 3);
  sp_sqlite_store_close(s);
}

/* A put-back origin inside a range of the committed set splits it, and
 * applying the write again commits it (and retires the item) again. */
static void test_reset_uncommits_split(void **state) {
  char p[PATH_MAX];
  sp_entry mine[3], log[3];
  uint8_t h2[SP_HASH_LEN];
  uint64_t o[8], first = 0;
  sp_uuid own = st_dev(ST_OWN);
  (void)state;

  sp_sqlite_store *s = open_ok(new_path(p, sizeof(p), "reset4"), NULL);
  sp_store vt = vtable(s);
  for (unsigned i = 0; i < 3; ++i) {
    mine[i] = st_origin_entry(140 + i, ST_OWN, 0);
  }
  assert_int_equal(vt.outbox_put(mine, 3, &first, vt.user_data), 0);
  assert_int_equal(vt.outbox_anchor(&own, 0, vt.user_data), 0);
  /* The leader appended them as 1, 3, 2: one range [1, 3]. */
  log[0] = mine[0];
  log[0].origin_seq = 1;
  log[1] = mine[2];
  log[1].origin_seq = 3;
  log[2] = mine[1];
  log[2].origin_seq = 2;
  assert_int_equal(st_apply_next(&vt, log, 3), 0);
  assert_true(st_stats_are(&vt, 0, 0, 4, 1));
  assert_int_equal(st_find(&vt, ST_OWN, 2), 3003);
  assert_int_equal(vt.hash_at(2, h2, vt.user_data), 0);

  assert_int_equal(sp_sqlite_store_reset(s, 2, h2), 0);
  assert_int_equal(st_outbox_origins(&vt, 0, 8, o), 1);
  assert_int_equal(o[0], 2);
  assert_int_equal(st_find(&vt, ST_OWN, 1), 3);
  assert_int_equal(st_find(&vt, ST_OWN, 2), ST_NF(3));
  assert_int_equal(st_find(&vt, ST_OWN, 3), 3);
  sp_sqlite_store_close(s);

  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(st_find(&vt, ST_OWN, 2), ST_NF(3));
  log[0] = mine[1];
  log[0].origin_seq = 2;
  assert_int_equal(st_apply_next(&vt, log, 1), 0);
  assert_true(st_stats_are(&vt, 0, 0, 4, 1));
  assert_int_equal(st_find(&vt, ST_OWN, 2), 3003);
  assert_int_equal(st_find(&vt, ST_OWN, 1), 3);
  assert_int_equal(st_find(&vt, ST_OWN, 3), 3);
  sp_sqlite_store_close(s);
}

/* -- durability of the outbox: a VFS that counts syncs --
 *
 * It opens files through the default VFS and swaps in a copy of their
 * methods whose xSync counts; a commit under synchronous=FULL syncs the
 * WAL, one under NORMAL does not (a power loss may lose it). */
static sqlite3_vfs *sync_real;
static sqlite3_vfs sync_vfs;
static int sync_count;
static struct {
  const sqlite3_io_methods *real;
  sqlite3_io_methods mine;
} sync_methods[4];

static int sync_sync(sqlite3_file *f, int flags) {
  for (size_t i = 0; i < 4; ++i) {
    if (f->pMethods == &sync_methods[i].mine) {
      ++sync_count;
      return sync_methods[i].real->xSync(f, flags);
    }
  }
  return SQLITE_IOERR;
}

static int sync_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                     int flags, int *out_flags) {
  int rc = sync_real->xOpen(sync_real, name, f, flags, out_flags);
  size_t i;
  (void)vfs;

  if (rc != SQLITE_OK || !f->pMethods) {
    return rc;
  }
  for (i = 0; i < 4 && sync_methods[i].real &&
              sync_methods[i].real != f->pMethods;
       ++i) {
  }
  assert_true(i < 4);
  if (!sync_methods[i].real) {
    sync_methods[i].real = f->pMethods;
    sync_methods[i].mine = *f->pMethods;
    sync_methods[i].mine.xSync = sync_sync;
  }
  f->pMethods = &sync_methods[i].mine;
  return rc;
}

/* Syncs done by one call (`call` evaluated between two counts). */
#define SYNCS(call) \
  (sync_count = 0, assert_int_equal((call), 0), sync_count)

/* outbox_put, outbox_remove and outbox_anchor commit durably (the WAL
 * synced) even under synchronous=NORMAL: a lost outbox_put after its item
 * was proposed would assign its origin again to another write.  The log's
 * own transactions keep the configured setting. */
static void test_outbox_power_loss(void **state) {
  char p[PATH_MAX];
  sp_sqlite_config cfg;
  sp_entry e[2], log[1];
  sp_uuid own = st_dev(ST_OWN);
  uint64_t first = 0;
  (void)state;

  sync_real = sqlite3_vfs_find(NULL);
  assert_non_null(sync_real);
  sync_vfs = *sync_real;
  sync_vfs.zName = "sp-count-syncs";
  sync_vfs.pNext = NULL;
  sync_vfs.xOpen = sync_open;
  assert_int_equal(sqlite3_vfs_register(&sync_vfs, 1), SQLITE_OK);

  sp_sqlite_store *s = open_ok(new_path(p, sizeof(p), "durable"), NULL);
  sp_store vt = vtable(s);
  e[0] = st_origin_entry(150, ST_OWN, 0);
  e[1] = st_origin_entry(151, ST_OWN, 0);
  /* The first frame of a new WAL syncs its header whatever the setting. */
  log[0] = st_origin_entry(152, ST_OTHER, 1);
  assert_int_equal(st_apply_next(&vt, log, 1), 0);
  log[0] = st_origin_entry(153, ST_OTHER, 2);
  assert_int_equal(SYNCS(st_apply_next(&vt, log, 1)), 0);

  assert_true(SYNCS(vt.outbox_put(e, 2, &first, vt.user_data)) > 0);
  assert_true(SYNCS(vt.outbox_anchor(&own, 0, vt.user_data)) > 0);
  assert_true(SYNCS(vt.outbox_remove(first, vt.user_data)) > 0);
  /* Back to NORMAL after each of them. */
  log[0] = st_origin_entry(154, ST_OTHER, 3);
  assert_int_equal(SYNCS(st_apply_next(&vt, log, 1)), 0);
  sp_sqlite_store_close(s);

  /* Under FULL the log stays FULL after an outbox write. */
  sp_sqlite_config_default(&cfg);
  cfg.synchronous = SP_SQLITE_SYNC_FULL;
  s = open_ok(p, &cfg);
  vt = vtable(s);
  assert_true(SYNCS(vt.outbox_put(e, 1, &first, vt.user_data)) > 0);
  log[0] = st_origin_entry(155, ST_OTHER, 4);
  assert_true(SYNCS(st_apply_next(&vt, log, 1)) > 0);
  sp_sqlite_store_close(s);

  assert_int_equal(sqlite3_vfs_unregister(&sync_vfs), SQLITE_OK);
  assert_int_equal(sqlite3_vfs_register(sync_real, 1), SQLITE_OK);
}

/* The schema of files written before version 3 of the store vtable. */
static const char schema_1_sql[] =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE sync_log(sequence INTEGER PRIMARY KEY,"
    " device_id BLOB NOT NULL, timestamp INTEGER NOT NULL,"
    " model_type TEXT NOT NULL, record_id BLOB NOT NULL,"
    " change_type INTEGER NOT NULL, version INTEGER NOT NULL,"
    " data BLOB NOT NULL, hash BLOB NOT NULL);"
    "CREATE TABLE sync_log_meta(id INTEGER PRIMARY KEY CHECK (id = 1),"
    " schema_version INTEGER NOT NULL, applied INTEGER NOT NULL,"
    " head_hash BLOB NOT NULL, epoch INTEGER NOT NULL,"
    " pruned_through INTEGER NOT NULL, pruned_hash BLOB NOT NULL);"
    "INSERT INTO sync_log_meta VALUES(1, 1, 0, zeroblob(32), 0, 0,"
    " zeroblob(32));"
    "CREATE TABLE sync_follower_ack(device BLOB PRIMARY KEY,"
    " key BLOB NOT NULL, acked INTEGER NOT NULL, hash BLOB NOT NULL)"
    " WITHOUT ROWID;"
    "PRAGMA application_id = 1397771335;"
    "PRAGMA user_version = 1;";

/* Write a schema 1 file holding es[0, n) (chained) at epoch 3. */
static void write_schema_1(const char *path, sp_entry *es, size_t n,
                           uint8_t *hashes) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;

  raw_exec(path, schema_1_sql);
  chain(zeros, es, n, hashes);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(db,
                         "INSERT INTO sync_log VALUES(?1, ?2, ?3, ?4, ?5,"
                         " ?6, ?7, ?8, ?9)",
                         -1, &st, NULL),
      SQLITE_OK);
  for (size_t i = 0; i < n; ++i) {
    const sp_entry *e = &es[i];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)e->sequence);
    sqlite3_bind_blob(st, 2, e->device_id.bytes, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)e->timestamp_ms);
    sqlite3_bind_text(st, 4, e->model_type, (int)e->model_type_len,
                      SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, e->record_id.bytes, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, (int)e->change_type);
    sqlite3_bind_int64(st, 7, e->version);
    sqlite3_bind_blob(st, 8, e->data_len ? (const void *)e->data : "",
                      (int)e->data_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 9, hashes + i * SP_HASH_LEN, SP_HASH_LEN,
                      SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  assert_int_equal(
      sqlite3_prepare_v2(db,
                         "UPDATE sync_log_meta SET applied = ?1,"
                         " head_hash = ?2, epoch = 3",
                         -1, &st, NULL),
      SQLITE_OK);
  sqlite3_bind_int64(st, 1, (sqlite3_int64)es[n - 1].sequence);
  sqlite3_bind_blob(st, 2, hashes + (n - 1) * SP_HASH_LEN, SP_HASH_LEN,
                    SQLITE_STATIC);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_migrate_schema_1(void **state) {
  char p[PATH_MAX];
  sp_entry es[6];
  uint8_t hashes[6 * SP_HASH_LEN], digest[SP_HASH_LEN];
  sp_sqlite_config ro;
  st_collect c;
  uint64_t first = 0;
  (void)state;

  new_path(p, sizeof(p), "schema1");
  for (unsigned i = 0; i < 6; ++i) {
    es[i] = entry_k(i + 1, 200 + i);
  }
  write_schema_1(p, es, 6, hashes);

  /* A read-only opener cannot migrate: refused, the file untouched. */
  sp_sqlite_config_default(&ro);
  ro.read_only = 1;
  assert_int_equal(open_rv(p, &ro), SP_ERR_VERSION);
  assert_int_equal(raw_int(p, "PRAGMA user_version"), 1);

  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  assert_int_equal(raw_int(p, "PRAGMA user_version"), 2);
  assert_int_equal(raw_int(p, "SELECT schema_version FROM sync_log_meta"),
                   2);
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sqlite_master WHERE"
                              " name IN ('sync_outbox', 'sync_outbox_meta',"
                              " 'sync_origin_range', 'sync_log_origin')"),
                   4);
  /* Rows, chain and position as they were; no origin ids. */
  assert_int_equal(sp_sqlite_store_verify(s, digest), 0);
  assert_memory_equal(digest, hashes + 5 * SP_HASH_LEN, SP_HASH_LEN);
  st_collect_init(&c);
  assert_int_equal(vt.read(0, UINT64_MAX, SIZE_MAX, st_collect_sink, &c,
                           vt.user_data), 0);
  assert_int_equal(c.n, 6);
  for (size_t i = 0; i < 6; ++i) {
    assert_int_equal(c.seqs[i], i + 1);
    assert_int_equal(c.origins[i], 0);
    assert_memory_equal(c.hashes[i], hashes + i * SP_HASH_LEN, SP_HASH_LEN);
  }
  {
    sp_store_state ss;
    assert_int_equal(vt.state(&ss, vt.user_data), 0);
    assert_int_equal(ss.applied, 6);
    assert_int_equal(ss.epoch, 3);
  }
  /* And the new group works on it. */
  assert_true(st_stats_are(&vt, 0, 0, 1, 0));
  sp_entry e = st_origin_entry(210, ST_OTHER, 3);
  sp_seq seq = 0;
  assert_int_equal(vt.append(&e, 1, &seq, vt.user_data), 0);
  assert_int_equal(seq, 7);
  assert_int_equal(st_find(&vt, ST_OTHER, 3), 7003);
  e = st_origin_entry(211, ST_OWN, 0);
  assert_int_equal(vt.outbox_put(&e, 1, &first, vt.user_data), 0);
  assert_int_equal(first, 1);
  sp_sqlite_store_close(s);

  /* Opened again (and read-only now): nothing left to migrate. */
  s = open_ok(p, &ro);
  vt = vtable(s);
  assert_true(st_stats_are(&vt, 1, st_payload(&e), 2, 0));
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);
  s = open_ok(p, NULL);
  vt = vtable(s);
  assert_int_equal(st_find(&vt, ST_OTHER, 3), 7003);
  sp_sqlite_store_close(s);
}

/* A schema 1 file whose rows already carry origin ids (a development
 * build had the column): the migration seeds the committed set from them,
 * one range per run of consecutive origins of a device. */
static void test_migrate_seeds_ranges(void **state) {
  char p[PATH_MAX];
  sp_entry es[6];
  uint8_t hashes[6 * SP_HASH_LEN];
  (void)state;

  new_path(p, sizeof(p), "seed");
  for (unsigned i = 0; i < 6; ++i) {
    es[i] = entry_k(i + 1, 300 + i);
    es[i].device_id = st_dev(i < 3 ? ST_OTHER : ST_THIRD);
  }
  write_schema_1(p, es, 6, hashes);
  raw_exec(p, "ALTER TABLE sync_log ADD COLUMN origin_seq INTEGER NOT NULL"
              " DEFAULT 0;"
              "UPDATE sync_log SET origin_seq = CASE sequence WHEN 1 THEN 1"
              " WHEN 2 THEN 2 WHEN 3 THEN 4 WHEN 4 THEN 7 WHEN 5 THEN 8"
              " ELSE 0 END;");

  sp_sqlite_store *s = open_ok(p, NULL);
  sp_store vt = vtable(s);
  assert_int_equal(raw_int(p, "PRAGMA user_version"), 2);
  assert_int_equal(raw_int(p, "SELECT COUNT(*) FROM sync_origin_range"), 3);
  assert_int_equal(st_find(&vt, ST_OTHER, 1), 1004);
  assert_int_equal(st_find(&vt, ST_OTHER, 3), ST_NF(4));
  assert_int_equal(st_find(&vt, ST_OTHER, 4), 3004);
  assert_int_equal(st_find(&vt, ST_THIRD, 8), 5008);
  assert_int_equal(st_find(&vt, ST_THIRD, 6), ST_NF(8));
  assert_int_equal(st_find(&vt, ST_OWN, 1), ST_NF(0));
  /* Pruned, the rows' origins are still committed. */
  assert_int_equal(sp_sqlite_store_prune(s, 6), 0);
  assert_int_equal(st_find(&vt, ST_OTHER, 2), 4);
  assert_int_equal(st_find(&vt, ST_THIRD, 7), 8);
  assert_int_equal(st_find(&vt, ST_THIRD, 9), ST_NF(8));
  assert_int_equal(sp_sqlite_store_verify(s, NULL), 0);
  sp_sqlite_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_follower_acks_bad_row_skipped),
      cmocka_unit_test(test_open_args),
      cmocka_unit_test(test_append_reopen),
      cmocka_unit_test(test_two_writers),
      cmocka_unit_test(test_read_gaps),
      cmocka_unit_test(test_sink_reentry),
      cmocka_unit_test(test_prune),
      cmocka_unit_test(test_epoch),
      cmocka_unit_test(test_follower_apply_reopen),
      cmocka_unit_test(test_apply_atomic),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_verify_tamper),
      cmocka_unit_test(test_corrupt_refused),
      cmocka_unit_test(test_sync_full_and_read_only),
      cmocka_unit_test(test_crash_safety),
      cmocka_unit_test(test_alloc_failure),
      cmocka_unit_test(test_follower_acks),
      cmocka_unit_test(test_follower_addresses),
      cmocka_unit_test(test_v3_conformance),
      cmocka_unit_test(test_append_origin),
      cmocka_unit_test(test_outbox_durable),
      cmocka_unit_test(test_outbox_crash),
      cmocka_unit_test(test_reset_puts_back),
      cmocka_unit_test(test_reset_uncommits_split),
      cmocka_unit_test(test_outbox_power_loss),
      cmocka_unit_test(test_migrate_schema_1),
      cmocka_unit_test(test_migrate_seeds_ranges),
  };
  return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
