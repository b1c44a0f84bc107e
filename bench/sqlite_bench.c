/*
 * sqlite_bench.c: a follower `count` entries behind catches up over QUIC
 * into the reference SQLite store, beside raw sqlite3 inserts of the same
 * entries.
 *
 * The leader process holds `count` entries (256-byte payloads) in an
 * in-memory store, built once and served to every run.  Each run starts a
 * fresh follower process on an empty sp_sqlite_store (defaults: WAL,
 * synchronous=NORMAL) in a temporary directory and times it from opening
 * the library to the ENTRIES_APPLIED event of the last entry: connect,
 * handshake, fetch pipeline, chain verification and one SQLite transaction
 * per page all included.  It counts the apply calls, hence the batch size
 * the follower ended up using.
 *
 * The store's apply is timed too (wall and CPU time inside the call), to
 * tell SQLite's share from the protocol's, and the follower's time spent
 * waiting for a CPU (/proc/self/schedstat) tells the machine's other work
 * from waiting for data.
 *
 * Then, in the same process, the reference: the same entries (chain hashes
 * computed beforehand, not timed) inserted with raw sqlite3 into a new file
 * with the store's sync_log schema, the same pragmas (journal_mode=WAL,
 * synchronous=NORMAL), one prepared INSERT bound as the store binds it,
 * and one BEGIN IMMEDIATE .. COMMIT per batch of the size just measured.
 * Only the inserts: no metadata row, no checks.
 *
 * The follower opens its store with the apply thread (sqlite_store.h,
 * apply_thread: SQLite commits page n on the store's thread while the
 * follower receives, decrypts, decodes and verifies page n + 1) and polls
 * the store's wake fd in its loop; the last ENTRIES_APPLIED then comes
 * once the last page is durable.  With compare=1 (default) each run also
 * catches up once with the store committing inside apply (no thread), as
 * before, for comparison.
 *
 * Figures are medians over `runs`.  Summary line (ratio: with the apply
 * thread, the best mode the library offers; ratio_no_thread: without):
 *   sqlite: ours_entries_s A raw_entries_s B ratio C batch D
 *           ratio_no_thread E
 *
 *   sqlite_bench [count=1000000] [runs=3] [compare=1] [dir=$TMPDIR or /tmp]
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "sync_protocol/sqlite_store.h"

#include "bench_util.h"

#define PAYLOAD 256

typedef struct shared {
  volatile int leader_ready;
  volatile int stop;
  volatile sp_seq applied;
  volatile uint64_t applied_at;
  volatile uint64_t batches;
  /* Per run results, written by the follower process. */
  double ours_s;
  double raw_s;
  double batch;
  double hash_s;
  /* Of ours_s: time inside the store's apply (SQLite), and the
   * follower's CPU time. */
  double apply_s;
  double apply_cpu_s;
  double cpu_s;
  /* Of cpu_s: the loop thread's (the rest is the store's apply thread). */
  double loop_cpu_s;
  /* Of the follower's wall time: waiting for a CPU (schedstat). */
  double wait_s;
  /* The same for the store's apply thread, since it started. */
  double thread_wait_s;
  /* Of ours_s: until the first page reached the store's apply (connect,
   * handshake, first fetch). */
  double first_s;
} shared;

typedef struct ctx {
  bu_cluster *cl;
  shared *sh;
  long count;
  const char *dir;
  int run;
  /* 1: the store's apply thread. */
  int thread;
} ctx;

static shared *g_sh;

static int leader_main(void *arg) {
  ctx *c = arg;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;

  bu_check(sp_mem_store_new(&ms, NULL), "store");
  bu_mem_append(ms, (size_t)c->count, PAYLOAD);
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, c->cl, 0, NULL, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  c->sh->leader_ready = 1;
  while (!c->sh->stop) {
    bu_poll(&dp, 1, 10000000u);
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

static int f_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_sh->applied = ev->to_sequence;
    g_sh->applied_at = bu_now();
    g_sh->batches++;
  }
  return 0;
}

/* The SQLite store's vtable, with the time spent in apply measured. */
static sp_store g_inner;
static uint64_t g_apply_ns;
static uint64_t g_first_apply;
static double g_apply_cpu;

/* CPU time of the calling thread (the process's counts the store's apply
 * thread too). */
static double thread_cpu_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* run_delay of this process's threads other than the main one
 * (/proc/self/task/<tid>/schedstat), seconds. */
static double other_threads_delay_s(void) {
  char p[300], buf[256];
  unsigned long long run, wait;
  double sum = 0;
  struct dirent *de;
  DIR *d = opendir("/proc/self/task");

  if (!d) {
    return 0;
  }
  while ((de = readdir(d)) != NULL) {
    FILE *f;
    if (de->d_name[0] == '.' || atol(de->d_name) == (long)getpid()) {
      continue;
    }
    snprintf(p, sizeof(p), "/proc/self/task/%s/schedstat", de->d_name);
    f = fopen(p, "r");
    if (f) {
      if (fgets(buf, sizeof(buf), f) &&
          sscanf(buf, "%llu %llu", &run, &wait) == 2) {
        sum += (double)wait * 1e-9;
      }
      fclose(f);
    }
  }
  closedir(d);
  return sum;
}

static int timed_apply(const sp_entry *entries, const uint8_t *hashes,
                       size_t n, uint64_t epoch, void *ud) {
  uint64_t t0 = bu_now();
  double c0 = thread_cpu_s();
  int rv;

  if (!g_first_apply) {
    g_first_apply = t0;
  }
  rv = g_inner.apply(entries, hashes, n, epoch, ud);

  g_apply_cpu += thread_cpu_s() - c0;
  g_apply_ns += bu_now() - t0;
  return rv;
}

/* The store's wake fd turned readable: a commit finished; the follower
 * acknowledges (and reports) what is durable now. */
static bu_dev *g_dev;
static sp_sqlite_store *g_store;

static void on_durable(void *arg) {
  (void)arg;
  bu_check(sp_sqlite_store_wait_clear(g_store), "wait_clear");
  bu_check(sp_node_handle_expiry(g_dev->node, bu_now()), "handle_expiry");
}

static void remove_db(const char *path) {
  char p[4096 + 8];

  unlink(path);
  snprintf(p, sizeof(p), "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof(p), "%s-shm", path);
  unlink(p);
}

static void sql(sqlite3 *db, const char *q) {
  char *err = NULL;

  if (sqlite3_exec(db, q, NULL, NULL, &err) != SQLITE_OK) {
    bu_die("sqlite: %s: %s", q, err ? err : "?");
  }
}

/* The reference: raw inserts of entries 1..count in batches of `batch`. */
static double raw_insert(const char *path, long count, long batch,
                         const uint8_t *hashes) {
  static const char schema[] =
      "CREATE TABLE sync_log("
      " sequence INTEGER PRIMARY KEY,"
      " device_id BLOB NOT NULL,"
      " timestamp INTEGER NOT NULL,"
      " model_type TEXT NOT NULL,"
      " record_id BLOB NOT NULL,"
      " change_type INTEGER NOT NULL,"
      " version INTEGER NOT NULL,"
      " data BLOB NOT NULL,"
      " hash BLOB NOT NULL)";
  sqlite3 *db;
  sqlite3_stmt *ins, *begin, *commit;
  uint64_t t0, t1;
  long i = 0;

  remove_db(path);
  if (sqlite3_open_v2(path, &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                          SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    bu_die("sqlite open %s", path);
  }
  sql(db, "PRAGMA journal_mode = WAL");
  sql(db, schema);
  sql(db, "PRAGMA synchronous = NORMAL");
  if (sqlite3_prepare_v3(db,
                         "INSERT INTO sync_log(sequence, device_id, "
                         "timestamp, model_type, record_id, change_type, "
                         "version, data, hash) VALUES(?1, ?2, ?3, ?4, ?5, "
                         "?6, ?7, ?8, ?9)",
                         -1, SQLITE_PREPARE_PERSISTENT, &ins,
                         NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(db, "BEGIN IMMEDIATE", -1,
                         SQLITE_PREPARE_PERSISTENT, &begin,
                         NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT,
                         &commit, NULL) != SQLITE_OK) {
    bu_die("sqlite prepare: %s", sqlite3_errmsg(db));
  }
  t0 = bu_now();
  while (i < count) {
    long end = i + batch < count ? i + batch : count;
    sqlite3_step(begin);
    sqlite3_reset(begin);
    for (; i < end; ++i) {
      sp_entry e;
      bu_entry(&e, (sp_seq)(i + 1), PAYLOAD);
      sqlite3_bind_int64(ins, 1, (sqlite3_int64)e.sequence);
      sqlite3_bind_blob(ins, 2, e.device_id.bytes, 16, SQLITE_STATIC);
      sqlite3_bind_int64(ins, 3, (sqlite3_int64)e.timestamp_ms);
      sqlite3_bind_text(ins, 4, e.model_type, (int)e.model_type_len,
                        SQLITE_STATIC);
      sqlite3_bind_blob(ins, 5, e.record_id.bytes, 16, SQLITE_STATIC);
      sqlite3_bind_int(ins, 6, (int)e.change_type);
      sqlite3_bind_int64(ins, 7, (sqlite3_int64)e.version);
      sqlite3_bind_blob64(ins, 8, e.data, (sqlite3_uint64)e.data_len,
                          SQLITE_STATIC);
      sqlite3_bind_blob(ins, 9, hashes + (size_t)i * SP_HASH_LEN, SP_HASH_LEN,
                        SQLITE_STATIC);
      if (sqlite3_step(ins) != SQLITE_DONE) {
        bu_die("sqlite insert: %s", sqlite3_errmsg(db));
      }
      sqlite3_reset(ins);
    }
    sqlite3_clear_bindings(ins);
    if (sqlite3_step(commit) != SQLITE_DONE) {
      bu_die("sqlite commit: %s", sqlite3_errmsg(db));
    }
    sqlite3_reset(commit);
  }
  t1 = bu_now();
  sqlite3_finalize(ins);
  sqlite3_finalize(begin);
  sqlite3_finalize(commit);
  sqlite3_close(db);
  remove_db(path);
  return (double)(t1 - t0) / 1e9;
}

static int follower_main(void *arg) {
  ctx *c = arg;
  shared *sh = c->sh;
  sp_events ev = SP_EVENTS_INIT;
  sp_sqlite_config scfg;
  sp_sqlite_store *st;
  sp_store vt;
  bu_dev d, *dp = &d;
  char path[4096];
  uint8_t *hashes, h[SP_HASH_LEN] = {0};
  uint64_t t0, end;
  double cpu0, wait0, loop0;
  long i, batch;

  g_sh = sh;
  snprintf(path, sizeof(path), "%s/follower-%d.db", c->dir, c->run);
  remove_db(path);
  sp_sqlite_config_default(&scfg);
  scfg.apply_thread = c->thread;
  bu_check(sp_sqlite_store_open(&st, path, &scfg, NULL), "sqlite store");
  g_store = st;
  g_dev = &d;
  sp_sqlite_store_get_vtable(st, &vt);
  g_inner = vt;
  vt.apply = timed_apply;
  ev.on_event = f_event;
  cpu0 = bu_cpu_s();
  loop0 = thread_cpu_s();
  wait0 = bu_run_delay_s();
  t0 = bu_now();
  bu_dev_start(&d, c->cl, 1, NULL, &ev, NULL);
  bu_dev_open(&d, SP_ROLE_FOLLOWER, &vt, NULL);
  end = t0 + 600ull * 1000000000u;
  while (sh->applied < (sp_seq)c->count) {
    if (bu_now() > end) {
      bu_die("catch-up stuck at %llu", (unsigned long long)sh->applied);
    }
    if (c->thread) {
      bu_poll_fd(&dp, 1, 10000000u, sp_sqlite_store_wait_fd(st), on_durable,
                 NULL);
    } else {
      bu_poll(&dp, 1, 10000000u);
    }
  }
  sh->ours_s = (double)(sh->applied_at - t0) / 1e9;
  sh->first_s = (double)(g_first_apply - t0) / 1e9;
  sh->cpu_s = bu_cpu_s() - cpu0;
  sh->loop_cpu_s = thread_cpu_s() - loop0;
  sh->wait_s = bu_run_delay_s() - wait0;
  sh->thread_wait_s = other_threads_delay_s();
  sh->apply_s = (double)g_apply_ns / 1e9;
  sh->apply_cpu_s = g_apply_cpu;
  sh->batch = (double)c->count / (double)sh->batches;
  bu_dev_stop(&d);
  {
    sp_sqlite_status s;
    bu_check(sp_sqlite_store_status(st, &s), "status");
    if (s.latest != (sp_seq)c->count || s.entry_count != (uint64_t)c->count) {
      bu_die("the follower's log holds %llu entries",
             (unsigned long long)s.entry_count);
    }
  }
  sp_sqlite_store_close(st);
  remove_db(path);

  /* The reference, on the same entries. */
  hashes = malloc((size_t)c->count * SP_HASH_LEN);
  if (!hashes) {
    bu_die("out of memory");
  }
  t0 = bu_now();
  for (i = 0; i < c->count; ++i) {
    sp_entry e;
    bu_entry(&e, (sp_seq)(i + 1), PAYLOAD);
    bu_chain(h, &e, h);
    memcpy(hashes + (size_t)i * SP_HASH_LEN, h, SP_HASH_LEN);
  }
  sh->hash_s = (double)(bu_now() - t0) / 1e9;
  batch = (long)(sh->batch + 0.5);
  snprintf(path, sizeof(path), "%s/raw-%d.db", c->dir, c->run);
  sh->raw_s = raw_insert(path, c->count, batch < 1 ? 1 : batch, hashes);
  free(hashes);
  return 0;
}

int main(int argc, char **argv) {
  long count = bu_opt(argc, argv, "count", 1000000);
  int runs = (int)bu_opt(argc, argv, "runs", 3), r;
  int compare = (int)bu_opt(argc, argv, "compare", 1), mode;
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  double *ours, *raw, *ratio, *batch, *ratio0;
  bu_cluster *cl;
  shared *sh;
  ctx c;
  pid_t l;
  int i;

  for (i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "dir=", 4) == 0) {
      dir = argv[i] + 4;
    }
  }
  if (count < 1000 || runs < 1) {
    fprintf(stderr, "usage: sqlite_bench [count=N] [runs=N] [compare=0|1] "
                    "[dir=PATH]\n");
    return 2;
  }
  ours = calloc((size_t)runs, sizeof(double));
  raw = calloc((size_t)runs, sizeof(double));
  ratio = calloc((size_t)runs, sizeof(double));
  batch = calloc((size_t)runs, sizeof(double));
  ratio0 = calloc((size_t)runs, sizeof(double));
  cl = bu_cluster_new(2);
  sh = bu_shm(sizeof(*sh));
  c.cl = cl;
  c.sh = sh;
  c.count = count;
  c.dir = dir;
  c.run = 0;
  printf("sqlite: %d runs; a follower %ld entries (%d-byte payloads) behind "
         "catches up over QUIC into sp_sqlite_store (WAL, synchronous=NORMAL) "
         "in %s, then raw sqlite3 inserts of the same entries in the same "
         "process\n",
         runs, count, PAYLOAD, dir);
  l = bu_spawn(leader_main, &c);
  while (!sh->leader_ready) {
    bu_sleep_ns(5000000u);
  }
  for (r = 0; r < runs; ++r) {
    /* Mode 1 (the apply thread) is the figure; mode 0 the comparison. */
    for (mode = 1; mode >= (compare ? 0 : 1); --mode) {
      pid_t f;
      double o, w, q;
      sh->applied = 0;
      sh->batches = 0;
      c.run = r;
      c.thread = mode;
      f = bu_spawn(follower_main, &c);
      if (bu_join(f) != 0) {
        sh->stop = 1;
        bu_join(l);
        bu_die("follower process failed");
      }
      o = (double)count / sh->ours_s;
      w = (double)count / sh->raw_s;
      q = o / w;
      if (mode) {
        ours[r] = o;
        raw[r] = w;
        ratio[r] = q;
        batch[r] = sh->batch;
      } else {
        ratio0[r] = q;
      }
      printf("  run %d %-9s: ours %8.0f entries/s (%.2f s, first page at "
             "%.2f s, %.0f entries per transaction; in the store's apply %.2f s of which cpu %.2f s; "
             "loop cpu outside apply %.2f s; waited for a cpu %.2f s; apply "
             "thread cpu %.2f s, waited for a cpu %.2f s) | raw sqlite3 "
             "%8.0f entries/s (%.2f s) | ratio %.2f\n",
             r + 1, mode ? "thread" : "no thread", o, sh->ours_s,
             sh->first_s, sh->batch,
             sh->apply_s, sh->apply_cpu_s, sh->loop_cpu_s - sh->apply_cpu_s,
             sh->wait_s, sh->cpu_s - sh->loop_cpu_s, sh->thread_wait_s, w,
             sh->raw_s, q);
    }
  }
  sh->stop = 1;
  if (bu_join(l) != 0) {
    bu_die("leader process failed");
  }
  printf("sqlite: ours_entries_s %.0f raw_entries_s %.0f ratio %.2f batch "
         "%.0f",
         bu_median(ours, (size_t)runs), bu_median(raw, (size_t)runs),
         bu_median(ratio, (size_t)runs), bu_median(batch, (size_t)runs));
  if (compare) {
    printf(" ratio_no_thread %.2f", bu_median(ratio0, (size_t)runs));
  }
  printf("\n");
  bu_shm_free(sh, sizeof(*sh));
  bu_cluster_del(cl);
  return 0;
}
