/*
 * sp_sqlite_async_test.c: the SQLite store's apply thread
 * (sp_sqlite_config.apply_thread; sys/store.h `durable`): order, the
 * durable point and its descriptor, backpressure, calls answering as if
 * the queue were applied, a failing commit, close with batches queued,
 * and the store's whole vtable through the thread.
 *
 * The worker's test hook (called on its thread before each commit) holds
 * it at a gate, so that what is queued and what is committed are known.
 */
#include <dirent.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/sqlite_store.h"
#include "sp_test_mem.h"
#include "store/sp_sqlite_worker.h"
#include "store_test_util.h"

static char tmpdir[64];
static unsigned file_counter;

static const char *new_path(char *buf, size_t len, const char *tag) {
  snprintf(buf, len, "%s/%s-%u.db", tmpdir, tag, file_counter++);
  return buf;
}

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp_sqlite_async_XXXXXX");
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

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* -- the gate: the worker waits in its hook while it is closed -- */

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  int closed;
  int entered; /* commits that reached the hook */
  long delay_ms;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};

static void gate_hook(void *ctx) {
  (void)ctx;
  pthread_mutex_lock(&gate.lock);
  gate.entered++;
  pthread_cond_broadcast(&gate.cv);
  while (gate.closed) {
    pthread_cond_wait(&gate.cv, &gate.lock);
  }
  pthread_mutex_unlock(&gate.lock);
  if (gate.delay_ms) {
    sleep_ms(gate.delay_ms);
  }
}

static void gate_set(int closed) {
  pthread_mutex_lock(&gate.lock);
  gate.closed = closed;
  pthread_cond_broadcast(&gate.cv);
  pthread_mutex_unlock(&gate.lock);
}

/* Wait until `n` commits reached the hook in all. */
static void gate_wait_entered(int n) {
  pthread_mutex_lock(&gate.lock);
  while (gate.entered < n) {
    pthread_cond_wait(&gate.cv, &gate.lock);
  }
  pthread_mutex_unlock(&gate.lock);
}

static void *open_gate_later(void *arg) {
  sleep_ms(*(long *)arg);
  gate_set(0);
  return NULL;
}

/* -- entries -- */

#define PAY 300
#define MAXE 4096
static uint8_t pay[MAXE][PAY];
static sp_entry ents[MAXE + 1];     /* entry seq at ents[seq] */
static uint8_t hs[MAXE + 1][SP_HASH_LEN]; /* chain hash after seq */

/* Entries 1..MAXE and their chain, once. */
static void make_entries(void) {
  static int done;
  if (done) {
    return;
  }
  memset(hs[0], 0, SP_HASH_LEN);
  for (unsigned k = 1; k <= MAXE; ++k) {
    size_t len = (k * 37u) % PAY;
    st_fill(pay[k - 1], len, k);
    ents[k] = st_entry(k, k, pay[k - 1], len);
    assert_int_equal(sp_chain_next(hs[k - 1], &ents[k], hs[k]), 0);
  }
  done = 1;
}

/* Apply entries first..last (one batch) with `epoch`. */
static int apply_range(const sp_store *vt, sp_seq first, sp_seq last,
                       uint64_t epoch) {
  return vt->apply(&ents[first], hs[first], (size_t)(last - first + 1), epoch,
                   vt->user_data);
}

/* -- store helpers -- */

static sp_sqlite_store *open_cfg(const char *path, int thread, size_t qbytes,
                                 void (*hook)(void *)) {
  sp_sqlite_config cfg;
  sp_sqlite_store *s = NULL;
  int rv;

  sp_sqlite_config_default(&cfg);
  cfg.apply_thread = thread;
  cfg.apply_queue_bytes = qbytes;
  sp_sqlite_worker_set_test_hook(hook, NULL);
  rv = sp_sqlite_store_open(&s, path, &cfg, NULL);
  sp_sqlite_worker_set_test_hook(NULL, NULL);
  if (rv != 0) {
    print_error("open %s: %s %s\n", path, sp_err_name(rv),
                sp_sqlite_store_errmsg(NULL));
  }
  assert_int_equal(rv, 0);
  return s;
}

static sp_store vtable(sp_sqlite_store *s) {
  sp_store vt;
  assert_int_equal(sp_sqlite_store_get_vtable(s, &vt), 0);
  return vt;
}

/* Wait (on the descriptor) until `durable` reaches `want` or fails;
 * returns durable's result. */
static int wait_durable(sp_sqlite_store *s, const sp_store *vt, sp_seq want,
                        sp_seq *got) {
  struct pollfd p;
  int rv;

  p.fd = sp_sqlite_store_wait_fd(s);
  assert_true(p.fd >= 0);
  p.events = POLLIN;
  for (int i = 0; i < 2000; ++i) {
    rv = vt->durable(got, vt->user_data);
    if (rv != 0 || *got >= want) {
      return rv;
    }
    p.revents = 0;
    assert_true(poll(&p, 1, 50) >= 0);
  }
  fail_msg("durable stuck at %llu, waiting for %llu",
           (unsigned long long)*got, (unsigned long long)want);
  return -1;
}

static void expect_state(const sp_store *vt, sp_seq applied, uint64_t epoch) {
  sp_store_state st;
  assert_int_equal(vt->state(&st, vt->user_data), 0);
  assert_int_equal(st.applied, applied);
  assert_memory_equal(st.head_hash, hs[applied], SP_HASH_LEN);
  assert_int_equal(st.epoch, epoch);
}

/* Reopen without the thread: the file holds exactly 1..last, chained. */
static void expect_file(const char *path, sp_seq last) {
  sp_sqlite_store *s = open_cfg(path, 0, 0, NULL);
  sp_sqlite_status st;
  uint8_t digest[SP_HASH_LEN];

  assert_int_equal(sp_sqlite_store_status(s, &st), 0);
  assert_int_equal(st.entry_count, last);
  assert_int_equal(st.latest, last);
  assert_int_equal(sp_sqlite_store_verify(s, digest), 0);
  assert_memory_equal(digest, hs[last], SP_HASH_LEN);
  sp_sqlite_store_close(s);
}

/* -- tests -- */

static void test_config(void **state) {
  char p[PATH_MAX];
  sp_sqlite_config cfg;
  sp_sqlite_store *s = NULL;
  sp_store vt;
  (void)state;

  sp_sqlite_config_default(&cfg);
  assert_int_equal(cfg.version, 2);
  assert_int_equal(cfg.apply_thread, 0);
  assert_int_equal(cfg.apply_queue_bytes, 0);

  /* Without the thread: today's store, no `durable`, no descriptor. */
  new_path(p, sizeof(p), "config");
  s = open_cfg(p, 0, 0, NULL);
  vt = vtable(s);
  assert_null(vt.durable);
  assert_int_equal(sp_sqlite_store_wait_fd(s), SP_ERR_INVALID_STATE);
  assert_int_equal(sp_sqlite_store_wait_clear(s), SP_ERR_INVALID_STATE);
  sp_sqlite_store_close(s);
  assert_int_equal(sp_sqlite_store_wait_fd(NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_sqlite_store_wait_clear(NULL), SP_ERR_INVALID_ARGUMENT);

  /* A version 1 struct ends before apply_thread: whatever follows it in
   * the caller's memory is not read. */
  sp_sqlite_config_default(&cfg);
  cfg.version = 1;
  cfg.apply_thread = 7;
  assert_int_equal(sp_sqlite_store_open(&s, p, &cfg, NULL), 0);
  assert_int_equal(sp_sqlite_store_wait_fd(s), SP_ERR_INVALID_STATE);
  sp_sqlite_store_close(s);

  sp_sqlite_config_default(&cfg);
  cfg.apply_thread = 2;
  assert_int_equal(sp_sqlite_store_open(&s, p, &cfg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  cfg.apply_thread = 1;
  cfg.read_only = 1;
  assert_int_equal(sp_sqlite_store_open(&s, p, &cfg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  cfg.read_only = 0;
  /* A second connection to ":memory:" is another database. */
  assert_int_equal(sp_sqlite_store_open(&s, ":memory:", &cfg, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_null(s);

  /* With the thread: `durable`, a descriptor, nothing to report yet. */
  s = open_cfg(p, 1, 0, NULL);
  vt = vtable(s);
  assert_non_null(vt.durable);
  assert_true(sp_sqlite_store_wait_fd(s) >= 0);
  assert_int_equal(sp_sqlite_store_wait_clear(s), 0);
  {
    sp_seq d = 99;
    assert_int_equal(vt.durable(&d, vt.user_data), 0);
    assert_int_equal(d, 0);
    assert_int_equal(vt.durable(NULL, vt.user_data), SP_ERR_INVALID_ARGUMENT);
  }
  sp_sqlite_store_close(s);
}

/* Batches of 1..23 entries: each PENDING, `state` at the queued head at
 * once, `durable` reaching the last, the file in order. */
static void test_order_and_durable(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  sp_seq next = 1, d = 0, prev_d = 0;
  st_collect c;
  (void)state;

  make_entries();
  s = open_cfg(new_path(p, sizeof(p), "order"), 1, 0, NULL);
  vt = vtable(s);
  for (unsigned b = 0; b < 60; ++b) {
    sp_seq last = next + (b % 23);
    assert_int_equal(apply_range(&vt, next, last, 1), SP_STORE_PENDING);
    expect_state(&vt, last, 1);
    assert_int_equal(vt.durable(&d, vt.user_data), 0);
    assert_true(d >= prev_d && d <= last);
    prev_d = d;
    next = last + 1;
  }
  assert_int_equal(wait_durable(s, &vt, next - 1, &d), 0);
  assert_int_equal(d, next - 1);
  /* Read back through the vtable (it drains first: nothing left). */
  st_collect_init(&c);
  assert_int_equal(vt.read(0, 200, 200, st_collect_sink, &c, vt.user_data),
                   0);
  assert_int_equal(c.n, 200);
  for (size_t i = 0; i < c.n; ++i) {
    assert_int_equal(c.seqs[i], i + 1);
    assert_memory_equal(c.hashes[i], hs[i + 1], SP_HASH_LEN);
  }
  sp_sqlite_store_close(s);
  expect_file(p, next - 1);
}

/* A full queue makes apply wait for a commit. */
typedef struct applier {
  const sp_store *vt;
  sp_seq first, last;
  volatile int rv;
  volatile int done;
} applier;

static void *apply_thread(void *arg) {
  applier *a = arg;
  a->rv = apply_range(a->vt, a->first, a->last, 1);
  __atomic_store_n(&a->done, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static void test_backpressure(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  applier a;
  pthread_t t;
  sp_seq d = 0;
  (void)state;

  make_entries();
  gate.entered = 0;
  gate_set(1);
  /* Room for one batch: the second waits for the first's commit. */
  s = open_cfg(new_path(p, sizeof(p), "full"), 1, 1, gate_hook);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 10, 1), SP_STORE_PENDING);
  gate_wait_entered(1);
  expect_state(&vt, 10, 1);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 0);
  memset(&a, 0, sizeof(a));
  a.vt = &vt;
  a.first = 11;
  a.last = 20;
  assert_int_equal(pthread_create(&t, NULL, apply_thread, &a), 0);
  sleep_ms(100);
  assert_int_equal(__atomic_load_n(&a.done, __ATOMIC_SEQ_CST), 0);
  gate_set(0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a.rv, SP_STORE_PENDING);
  assert_int_equal(wait_durable(s, &vt, 20, &d), 0);
  assert_int_equal(d, 20);
  expect_state(&vt, 20, 1);
  sp_sqlite_store_close(s);
  expect_file(p, 20);
}

/* Calls other than apply/state/durable see the queued entries (they wait
 * for the commit), and so does every public function. */
static void test_reads_see_queued(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  sp_log_bounds b;
  uint8_t h[SP_HASH_LEN];
  long later = 50;
  pthread_t t;
  sp_seq d = 0;
  sp_sqlite_status st;
  (void)state;

  make_entries();
  gate.entered = 0;
  gate_set(1);
  s = open_cfg(new_path(p, sizeof(p), "reads"), 1, 0, gate_hook);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 30, 1), SP_STORE_PENDING);
  assert_int_equal(apply_range(&vt, 31, 40, 1), SP_STORE_PENDING);
  gate_wait_entered(1);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 0);
  expect_state(&vt, 40, 1);
  assert_int_equal(pthread_create(&t, NULL, open_gate_later, &later), 0);
  assert_int_equal(vt.hash_at(35, h, vt.user_data), 0);
  assert_memory_equal(h, hs[35], SP_HASH_LEN);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 40);

  gate_set(1);
  assert_int_equal(apply_range(&vt, 41, 50, 1), SP_STORE_PENDING);
  assert_int_equal(pthread_create(&t, NULL, open_gate_later, &later), 0);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  assert_int_equal(b.latest, 50);
  assert_int_equal(pthread_join(t, NULL), 0);

  gate_set(1);
  assert_int_equal(apply_range(&vt, 51, 60, 1), SP_STORE_PENDING);
  assert_int_equal(pthread_create(&t, NULL, open_gate_later, &later), 0);
  assert_int_equal(sp_sqlite_store_status(s, &st), 0);
  assert_int_equal(st.latest, 60);
  assert_int_equal(st.entry_count, 60);
  assert_int_equal(pthread_join(t, NULL), 0);
  sp_sqlite_store_close(s);
}

/* What is checked without the file is refused at once; an epoch-only
 * batch is never pending (sys/store.h): committed before it returns, or
 * nothing. */
static void test_refused_and_epoch(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  sp_entry bad[2];
  sp_seq d = 0;
  (void)state;

  make_entries();
  s = open_cfg(new_path(p, sizeof(p), "epoch"), 1, 0, NULL);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 5, 3), SP_STORE_PENDING);
  /* At or below the queued head: refused before the commit. */
  assert_int_equal(apply_range(&vt, 5, 6, 3), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(apply_range(&vt, 2, 8, 3), SP_ERR_INVALID_ARGUMENT);
  bad[0] = ents[7];
  bad[1] = ents[6];
  assert_int_equal(vt.apply(bad, hs[6], 2, 3, vt.user_data),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(vt.apply(NULL, NULL, 1, 3, vt.user_data),
                   SP_ERR_INVALID_ARGUMENT);
  /* An older or equal epoch alone is nothing to record. */
  assert_int_equal(vt.apply(NULL, NULL, 0, 2, vt.user_data), 0);
  assert_int_equal(vt.apply(NULL, NULL, 0, 9, vt.user_data), 0);
  expect_state(&vt, 5, 9);
  assert_int_equal(apply_range(&vt, 6, 8, 9), SP_STORE_PENDING);
  expect_state(&vt, 8, 9);
  assert_int_equal(wait_durable(s, &vt, 8, &d), 0);
  sp_sqlite_store_close(s);
  expect_file(p, 8);
  s = open_cfg(p, 0, 0, NULL);
  vt = vtable(s);
  expect_state(&vt, 8, 9);
  sp_sqlite_store_close(s);
}

/* rev15a B4: an epoch record waits for the queue and is committed when
 * `apply` returns: another connection sees it (and what came before)
 * at once, and `durable` says everything before it is durable. */
static void test_epoch_record_never_pending(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s, *other;
  sp_store vt, ovt;
  long later = 50;
  pthread_t t;
  sp_seq d = 0;
  (void)state;

  make_entries();
  gate.entered = 0;
  gate_set(1);
  s = open_cfg(new_path(p, sizeof(p), "fence"), 1, 0, gate_hook);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 5, 3), SP_STORE_PENDING);
  gate_wait_entered(1);
  assert_int_equal(pthread_create(&t, NULL, open_gate_later, &later), 0);
  assert_int_equal(vt.apply(NULL, NULL, 0, 9, vt.user_data), 0);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 5);
  other = open_cfg(p, 0, 0, NULL);
  ovt = vtable(other);
  expect_state(&ovt, 5, 9);
  sp_sqlite_store_close(other);
  assert_int_equal(pthread_join(t, NULL), 0);
  expect_state(&vt, 5, 9);
  sp_sqlite_store_close(s);
}

/* A trigger, written by another connection, fails the metadata update of
 * the next commit (after its rows and outbox work). */
static void raw_exec(const char *path, const char *sql) {
  sqlite3 *db;
  char *err = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fail_msg("%s: %s", sql, err ? err : "?");
  }
  sqlite3_close(db);
}

static void arm(const char *path, int on) {
  raw_exec(path, on ? "CREATE TRIGGER sp_fail BEFORE UPDATE ON sync_log_meta"
                      " BEGIN SELECT RAISE(ABORT, 'injected'); END"
                    : "DROP TRIGGER sp_fail");
}

/* A trigger that fails the insert of entry `seq` only: a batch queued
 * after the failing one would commit if it were tried. */
static void arm_seq(const char *path, sp_seq seq) {
  char sql[200];
  if (seq) {
    snprintf(sql, sizeof(sql),
             "CREATE TRIGGER sp_fail_seq BEFORE INSERT ON sync_log"
             " WHEN NEW.sequence = %llu"
             " BEGIN SELECT RAISE(ABORT, 'injected'); END",
             (unsigned long long)seq);
    raw_exec(path, sql);
  } else {
    raw_exec(path, "DROP TRIGGER sp_fail_seq");
  }
}

/* A failed commit: its batch and the later ones are forgotten, the error
 * comes once (from durable, or from whichever call is next), and the
 * store answers what is durable. */
static void test_failure(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  struct pollfd pf;
  sp_store_state st;
  sp_seq d = 0;
  (void)state;

  make_entries();
  gate.entered = 0;
  gate_set(0);
  s = open_cfg(new_path(p, sizeof(p), "fail"), 1, 0, gate_hook);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 5, 1), SP_STORE_PENDING);
  assert_int_equal(wait_durable(s, &vt, 5, &d), 0);

  /* 6..10 fails; 11..15, queued behind it, goes too. */
  gate_set(1);
  assert_int_equal(apply_range(&vt, 6, 10, 1), SP_STORE_PENDING);
  assert_int_equal(apply_range(&vt, 11, 15, 1), SP_STORE_PENDING);
  gate_wait_entered(2);
  arm_seq(p, 8);
  assert_int_equal(sp_sqlite_store_wait_clear(s), 0);
  gate_set(0);
  pf.fd = sp_sqlite_store_wait_fd(s);
  pf.events = POLLIN;
  pf.revents = 0;
  assert_int_equal(poll(&pf, 1, 10000), 1);
  assert_int_equal(vt.durable(&d, vt.user_data), SP_ERR_STORE);
  assert_non_null(strstr(vt.errmsg(vt.user_data), "injected"));
  /* Reported once; then what is durable. */
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 5);
  expect_state(&vt, 5, 1);
  {
    sp_sqlite_status ss;
    assert_int_equal(sp_sqlite_store_status(s, &ss), 0);
    assert_int_equal(ss.latest, 5);
    assert_int_equal(ss.entry_count, 5);
  }

  /* Reported by the next call when that is not durable: here state. */
  gate_set(1);
  assert_int_equal(apply_range(&vt, 6, 10, 1), SP_STORE_PENDING);
  gate_wait_entered(3);
  gate_set(0);
  pf.revents = 0;
  assert_int_equal(poll(&pf, 1, 10000), 1);
  assert_int_equal(vt.state(&st, vt.user_data), SP_ERR_STORE);
  expect_state(&vt, 5, 1);
  /* ... or apply: that batch is refused with it, nothing is queued. */
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(apply_range(&vt, 6, 10, 1), SP_STORE_PENDING);
  pf.revents = 0;
  assert_int_equal(poll(&pf, 1, 10000), 1);
  assert_int_equal(apply_range(&vt, 11, 15, 1), SP_ERR_STORE);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 5);
  expect_state(&vt, 5, 1);

  /* Disarmed: the same entries go in. */
  arm_seq(p, 0);
  assert_int_equal(apply_range(&vt, 6, 10, 1), SP_STORE_PENDING);
  assert_int_equal(apply_range(&vt, 11, 15, 1), SP_STORE_PENDING);
  assert_int_equal(wait_durable(s, &vt, 15, &d), 0);
  sp_sqlite_store_close(s);
  expect_file(p, 15);
}

/* A failure reported by a call that drains (hash_at), and by a public
 * function. */
static void test_failure_on_drain(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  uint8_t h[SP_HASH_LEN];
  sp_sqlite_status st;
  sp_seq d = 0;
  (void)state;

  make_entries();
  s = open_cfg(new_path(p, sizeof(p), "faildrain"), 1, 0, NULL);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 5, 1), SP_STORE_PENDING);
  assert_int_equal(wait_durable(s, &vt, 5, &d), 0);
  arm(p, 1);
  assert_int_equal(apply_range(&vt, 6, 10, 1), SP_STORE_PENDING);
  assert_int_equal(vt.hash_at(7, h, vt.user_data), SP_ERR_STORE);
  assert_non_null(strstr(sp_sqlite_store_errmsg(s), "injected"));
  assert_int_equal(vt.hash_at(7, h, vt.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(apply_range(&vt, 6, 10, 1), SP_STORE_PENDING);
  assert_int_equal(sp_sqlite_store_status(s, &st), SP_ERR_STORE);
  assert_int_equal(sp_sqlite_store_status(s, &st), 0);
  assert_int_equal(st.latest, 5);
  arm(p, 0);
  sp_sqlite_store_close(s);
  expect_file(p, 5);
}

/* Close commits what is queued before it returns. */
static void test_close_drains(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  long later = 50;
  pthread_t t;
  sp_seq d = 0;
  (void)state;

  make_entries();
  gate.entered = 0;
  gate_set(1);
  s = open_cfg(new_path(p, sizeof(p), "close"), 1, 0, gate_hook);
  vt = vtable(s);
  for (sp_seq b = 0; b < 20; ++b) {
    assert_int_equal(apply_range(&vt, b * 10 + 1, b * 10 + 10, 1),
                     SP_STORE_PENDING);
  }
  gate_wait_entered(1);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 0);
  assert_int_equal(pthread_create(&t, NULL, open_gate_later, &later), 0);
  sp_sqlite_store_close(s);
  assert_int_equal(pthread_join(t, NULL), 0);
  expect_file(p, 200);
}

/* A reset (a call on the caller's connection) moves the file under the
 * in-memory head: state and durable follow it. */
static void test_reset_between(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  sp_seq d = 0;
  (void)state;

  make_entries();
  s = open_cfg(new_path(p, sizeof(p), "reset"), 1, 0, NULL);
  vt = vtable(s);
  assert_int_equal(apply_range(&vt, 1, 20, 1), SP_STORE_PENDING);
  assert_int_equal(sp_sqlite_store_reset(s, 100, hs[100]), 0);
  assert_int_equal(vt.durable(&d, vt.user_data), 0);
  assert_int_equal(d, 100);
  expect_state(&vt, 100, 1);
  assert_int_equal(apply_range(&vt, 101, 120, 1), SP_STORE_PENDING);
  assert_int_equal(wait_durable(s, &vt, 120, &d), 0);
  assert_int_equal(d, 120);
  sp_sqlite_store_close(s);
}

/* Many small batches through a small queue, the caller polling the
 * descriptor between them (the sanitizers' case). */
static void test_stress(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  struct pollfd pf;
  sp_seq next = 1, d = 0;
  unsigned wakes = 0;
  (void)state;

  make_entries();
  s = open_cfg(new_path(p, sizeof(p), "stress"), 1, 8192, NULL);
  vt = vtable(s);
  pf.fd = sp_sqlite_store_wait_fd(s);
  pf.events = POLLIN;
  while (next <= MAXE) {
    sp_seq last = next + (next % 7);
    if (last > MAXE) {
      last = MAXE;
    }
    assert_int_equal(apply_range(&vt, next, last, 1), SP_STORE_PENDING);
    next = last + 1;
    pf.revents = 0;
    if (poll(&pf, 1, 0) == 1) {
      wakes++;
      assert_int_equal(sp_sqlite_store_wait_clear(s), 0);
    }
    assert_int_equal(vt.durable(&d, vt.user_data), 0);
    assert_true(d < next);
  }
  assert_int_equal(wait_durable(s, &vt, MAXE, &d), 0);
  assert_true(wakes > 0);
  /* Cleared by durable: nothing new to tell. */
  pf.revents = 0;
  assert_int_equal(poll(&pf, 1, 0), 0);
  sp_sqlite_store_close(s);
  expect_file(p, MAXE);
}

/* -- the whole vtable through the thread (store_test_util.h) -- */

/* apply as a synchronous store's: wait for durable. */
static sp_store g_async;
static sp_sqlite_store *g_store;

static int apply_wait(const sp_entry *entries, const uint8_t *hashes,
                      size_t n, uint64_t epoch, void *ud) {
  int rv = g_async.apply(entries, hashes, n, epoch, ud);
  sp_seq d = 0;

  if (rv == SP_STORE_PENDING) {
    rv = wait_durable(g_store, &g_async, n ? entries[n - 1].sequence : 0, &d);
  }
  return rv;
}

static int prune_cb(void *ctx, sp_seq through) {
  return sp_sqlite_store_prune(ctx, through);
}

static void arm_cb(void *ctx, int on) { arm(ctx, on); }

static sp_store conformance_vt(sp_sqlite_store *s, int version) {
  sp_store vt;
  assert_int_equal(sp_sqlite_store_get_vtable_versioned(s, version, &vt), 0);
  if (version >= 5) {
    g_async = vt;
    g_store = s;
    vt.apply = apply_wait;
  } else {
    assert_true(sp_sqlite_store_wait_fd(s) >= 0);
  }
  return vt;
}

static void conformance(int version) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;

  s = open_cfg(new_path(p, sizeof(p), "origins"), 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_origins(&vt, prune_cb, s), 0);
  sp_sqlite_store_close(s);

  s = open_cfg(new_path(p, sizeof(p), "committed"), 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_committed_set(&vt, prune_cb, s), 0);
  sp_sqlite_store_close(s);
  s = open_cfg(p, 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_committed_after(&vt), 0);
  sp_sqlite_store_close(s);

  s = open_cfg(new_path(p, sizeof(p), "outbox"), 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_outbox(&vt), 0);
  sp_sqlite_store_close(s);

  s = open_cfg(new_path(p, sizeof(p), "retire"), 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_retire(&vt, arm_cb, p), 0);
  sp_sqlite_store_close(s);

  s = open_cfg(new_path(p, sizeof(p), "anchor"), 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_anchor(&vt), 0);
  sp_sqlite_store_close(s);

  s = open_cfg(new_path(p, sizeof(p), "acks"), 1, 0, NULL);
  vt = conformance_vt(s, version);
  assert_int_equal(st_check_follower_acks(&vt), 0);
  assert_int_equal(st_check_follower_addresses(&vt), 0);
  sp_sqlite_store_close(s);
}

static void test_conformance(void **state) {
  (void)state;
  conformance(SP_STORE_VERSION);
}

/* A caller of vtable version 4 knows no PENDING: apply commits before it
 * returns, through the same thread-owning store. */
static void test_conformance_v4(void **state) {
  char p[PATH_MAX];
  sp_sqlite_store *s;
  sp_store vt;
  (void)state;

  make_entries();
  conformance(4);
  s = open_cfg(new_path(p, sizeof(p), "v4"), 1, 0, NULL);
  assert_int_equal(sp_sqlite_store_get_vtable_versioned(s, 4, &vt), 0);
  assert_int_equal(apply_range(&vt, 1, 10, 1), 0);
  expect_state(&vt, 10, 1);
  sp_sqlite_store_close(s);
  expect_file(p, 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_order_and_durable),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_reads_see_queued),
      cmocka_unit_test(test_refused_and_epoch),
      cmocka_unit_test(test_epoch_record_never_pending),
      cmocka_unit_test(test_failure),
      cmocka_unit_test(test_failure_on_drain),
      cmocka_unit_test(test_close_drains),
      cmocka_unit_test(test_reset_between),
      cmocka_unit_test(test_stress),
      cmocka_unit_test(test_conformance),
      cmocka_unit_test(test_conformance_v4),
  };
  return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
