/*
 * snapshot_bench.c: recovery by snapshot (issue 13) over QUIC on
 * 127.0.0.1, leader and follower in two processes (forked), real SQLite
 * stores in a temporary directory.
 *
 * Setup, not timed: the leader's log (sp_sqlite_store, WAL,
 * synchronous=NORMAL) is filled with `size_mb` MiB of entry payloads
 * (`payload`-byte entries, bench_util's deterministic ones) and pruned
 * through 1, so an empty follower is told SyncRequired.
 *
 * Each run: a fresh follower (an empty sp_sqlite_store with
 * sp_sqlite_store_snapshot_sink, window `window`) and a leader process on
 * the filled log with sp_sqlite_store_snapshot_source (chunk size
 * `chunk_kib`).  Timed from the follower's SP_EVENT_SYNC_REQUIRED_RECEIVED
 * (its SnapshotRequest goes out with the same turn of its loop) to its
 * SP_EVENT_SNAPSHOT_INSTALLED: the leader preparing the snapshot (a
 * consistent read of its log written to <log>-snapshots/<id>.snap, every
 * chunk hashed), the chunks moving and being verified and written durably
 * (one synchronous=FULL transaction each, in <log>-snapin), the check of
 * the chain at S and the install (one transaction).  snapshot MB/s is the
 * snapshot's bytes over that time; the three parts are printed too.
 *
 * The reference, in the same run: throughput_bench's wire MB/s
 * (bu_pair_run, `seconds` long): UDP payload bytes a leader sends per
 * second while streaming entries to a follower, all QUIC overhead
 * included.  snapshot_ratio = snapshot MB/s / wire MB/s (goal >= 0.8).
 *
 * Then a transfer cut at 50 %: once the follower holds half the chunks
 * durably, its node is destroyed (endpoint, node, handler; the chunks in
 * flight are lost) and recreated on the same SQLite files, and the
 * recovery goes on.  The leader counts the chunks it reads to send
 * (after the follower accepted the manifest: the preparing reads are
 * not counted); chunks re-sent = reads beyond one per chunk, which must
 * be at most one window.
 *
 * Figures are medians over `runs`.  Summary line:
 *   snapshot: snapshot_mb_s A wire_mb_s B snapshot_ratio C resent_chunks D
 *             window E
 *
 *   snapshot_bench [runs=1] [size_mb=1024] [payload=4000] [chunk_kib=256]
 *                  [window=8] [seconds=5] [dir=$TMPDIR or /tmp]
 *
 * chunk_kib is 256, the library's default (it was 1 MiB): a chunk frame
 * larger than half the QUIC stream window (1 MiB) can stall the transfer (the
 * receiver's credit grows by less than ngtcp2 announces; see
 * docs/performance.md).  A transfer without progress for 60 s ends the
 * benchmark with a message.  SNAPSHOT_BENCH_LOG=1 in the environment
 * prints the library's log lines and the follower's events on stderr.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_protocol/sqlite_store.h"

#include "bench_util.h"

#define FILL_BATCH 1000
#define SEC 1000000000ull
#define RUN_LIMIT_NS (1800ull * SEC)
#define STALL_NS (60ull * SEC)

typedef struct shared {
  volatile int stop;
  volatile int leader_up;
  /* Follower: 1 once the manifest was accepted (the leader counts reads
   * to send from then on), 2 once every chunk is durable. */
  volatile int mark;
  volatile int done;
  volatile int failed;
  /* Follower's times. */
  volatile uint64_t t_request, t_manifest, t_chunks, t_installed;
  volatile uint64_t total_size, chunk_count, chunks_done, resumes, restarts;
  volatile uint64_t cut_at; /* chunks held when cut (0: not cut) */
  /* Leader's bytes sent at the marks. */
  volatile uint64_t l_bytes[3];
  volatile uint64_t l_at[3];
  /* Chunks read to be sent, per index (SP_MAX_SNAPSHOT_CHUNKS). */
  volatile uint32_t sends[SP_MAX_SNAPSHOT_CHUNKS];
} shared;

typedef struct ctx {
  bu_cluster *cl;
  shared *sh;
  uint32_t chunk;
  uint32_t window;
  int cut;
} ctx;

static char g_dir[512], g_leader_db[640], g_follower_db[640];

/* ---- files ---- */

static void rm_f(const char *base, const char *suffix) {
  char p[700];
  snprintf(p, sizeof(p), "%s%s", base, suffix);
  unlink(p);
}

static void rm_db(const char *db) {
  rm_f(db, "");
  rm_f(db, "-wal");
  rm_f(db, "-shm");
  rm_f(db, "-journal");
  rm_f(db, "-snapin");
  rm_f(db, "-snapin-wal");
  rm_f(db, "-snapin-shm");
  rm_f(db, "-snapin-journal");
}

/* Delete <db>-snapshots and what is in it (kept .snap files of earlier
 * runs: a gigabyte each). */
static void rm_snapshots(const char *db) {
  char dir[700], p[1000];
  struct dirent *de;
  DIR *d;

  snprintf(dir, sizeof(dir), "%s-snapshots", db);
  d = opendir(dir);
  if (!d) {
    return;
  }
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') {
      continue;
    }
    snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

/* ---- setup ---- */

static uint64_t fill(uint64_t entries, size_t payload) {
  sp_entry batch[FILL_BATCH];
  sp_sqlite_store *st;
  sp_seq next = 1;

  rm_db(g_leader_db);
  rm_snapshots(g_leader_db);
  bu_check(sp_sqlite_store_open(&st, g_leader_db, NULL, NULL), "open leader");
  while (next <= entries) {
    size_t n = 0;
    while (n < FILL_BATCH && next <= entries) {
      bu_entry(&batch[n++], next++, payload);
    }
    bu_check(sp_sqlite_store_append(st, batch, n, NULL), "append");
  }
  /* An empty follower needs entry 1: gone, so SyncRequired. */
  bu_check(sp_sqlite_store_prune(st, 1), "prune");
  sp_sqlite_store_close(st);
  return entries;
}

/* ---- leader process ---- */

/* SNAPSHOT_BENCH_LOG=1: the library's log lines on stderr. */
static void on_log(sp_log_level level, const char *msg, void *ud) {
  (void)ud;
  fprintf(stderr, "snapshot_bench %d: [%d] %s\n", (int)getpid(), (int)level,
          msg);
}

static shared *g_sh;
static sp_snapshot_source g_src;
static uint32_t g_chunk;

static int src_open(const uint8_t id[SP_SNAPSHOT_ID_LEN], sp_snapshot_desc *out,
                    void **handle, void *ud) {
  (void)ud;
  return g_src.open(id, out, handle, g_src.user_data);
}

static int src_reopen(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      sp_snapshot_desc *out, void **handle, void *ud) {
  (void)ud;
  return g_src.reopen(id, out, handle, g_src.user_data);
}

static int src_read(void *handle, uint64_t offset, uint8_t *buf, size_t len,
                    void *ud) {
  (void)ud;
  /* Reads once the follower holds the manifest are reads to send: the
   * preparing pass is over before the manifest leaves.  The first one
   * is a whole chunk (unless it is the only one): its length is the chunk
   * size the leader chose, which may be above the one asked for. */
  if (g_sh->mark >= 1) {
    if (!g_chunk) {
      g_chunk = (uint32_t)len;
    }
    if (offset % g_chunk == 0 && offset / g_chunk < SP_MAX_SNAPSHOT_CHUNKS) {
      g_sh->sends[offset / g_chunk]++;
    }
  }
  return g_src.read(handle, offset, buf, len, g_src.user_data);
}

static void src_close(void *handle, int forget, void *ud) {
  (void)ud;
  g_src.close(handle, forget, g_src.user_data);
}

static int leader_proc(void *arg) {
  ctx *c = arg;
  shared *sh = c->sh;
  sp_snapshot_source wrap = SP_SNAPSHOT_SOURCE_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_handler_config hc;
  sp_sqlite_store *st;
  sp_store vt;
  bu_dev d, *dp = &d;
  int seen = 0;

  g_sh = sh;
  g_chunk = 0;
  bu_check(sp_sqlite_store_open(&st, g_leader_db, NULL, NULL), "open leader");
  bu_check(sp_sqlite_store_snapshot_source(st, &g_src), "source");
  wrap.open = src_open;
  wrap.reopen = src_reopen;
  wrap.read = src_read;
  wrap.close = src_close;
  sp_sqlite_store_get_vtable(st, &vt);
  sp_handler_config_default(&hc);
  hc.snapshot_source = &wrap;
  hc.snapshot_chunk_size = c->chunk;
  if (getenv("SNAPSHOT_BENCH_LOG")) {
    ev.on_log = on_log;
    ev.log_level = SP_LOG_DEBUG;
  }
  bu_dev_start(&d, c->cl, 0, NULL, &ev, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, &hc);
  sh->leader_up = 1;
  while (!sh->stop) {
    if (sh->mark != seen) {
      sp_quic_stats qs;
      seen = sh->mark;
      sp_quic_endpoint_get_stats(d.ep, &qs);
      sh->l_bytes[seen] = qs.bytes_sent;
      sh->l_at[seen] = bu_now();
    }
    bu_poll(&dp, 1, 2000000u);
  }
  bu_dev_stop(&d);
  sp_sqlite_store_close(st);
  return 0;
}

/* ---- follower process ---- */

typedef struct fol {
  ctx *c;
  sp_sqlite_store *st;
  bu_dev d;
  int up;
} fol;

static int f_event(const sp_event *ev, void *ud) {
  shared *sh = ud;
  uint64_t now = bu_now();

  if (getenv("SNAPSHOT_BENCH_LOG")) {
    fprintf(stderr, "snapshot_bench: follower event %d (%s)\n",
            (int)ev->type, ev->error_code ? sp_err_name(ev->error_code) : "");
  }
  switch (ev->type) {
  case SP_EVENT_SYNC_REQUIRED_RECEIVED:
    if (!sh->t_request) {
      sh->t_request = now;
    }
    break;
  case SP_EVENT_SNAPSHOT_PROGRESS:
    if (!sh->t_manifest) {
      sh->t_manifest = now;
      sh->total_size = ev->snapshot->bytes_total;
      sh->chunk_count = ev->snapshot->chunk_count;
      sh->mark = 1;
    }
    sh->chunks_done = ev->snapshot->chunks_done;
    if (ev->snapshot->chunks_done == ev->snapshot->chunk_count &&
        !sh->t_chunks) {
      sh->t_chunks = now;
      sh->mark = 2;
    }
    break;
  case SP_EVENT_SNAPSHOT_INSTALLED:
    sh->t_installed = now;
    sh->resumes = ev->snapshot->resumes;
    sh->restarts = ev->snapshot->restarts;
    sh->done = 1;
    break;
  case SP_EVENT_SNAPSHOT_FAILED:
    fprintf(stderr, "snapshot_bench: %s\n",
            ev->message ? ev->message : sp_err_name(ev->error_code));
    sh->failed = 1;
    break;
  default:
    break;
  }
  return 0;
}

static void fol_up(fol *f) {
  ctx *c = f->c;
  sp_events ev = SP_EVENTS_INIT;
  sp_snapshot_sink sink;
  sp_handler_config hc;
  sp_store vt;

  ev.on_event = f_event;
  ev.user_data = c->sh;
  if (getenv("SNAPSHOT_BENCH_LOG")) {
    ev.on_log = on_log;
    ev.log_level = SP_LOG_DEBUG;
  }
  bu_check(sp_sqlite_store_open(&f->st, g_follower_db, NULL, NULL),
           "open follower");
  bu_check(sp_sqlite_store_snapshot_sink(f->st, &sink), "sink");
  sp_sqlite_store_get_vtable(f->st, &vt);
  sp_handler_config_default(&hc);
  hc.snapshot_sink = &sink;
  hc.snapshot_window = c->window;
  bu_dev_start(&f->d, c->cl, 1, NULL, &ev, NULL);
  bu_dev_open(&f->d, SP_ROLE_FOLLOWER, &vt, &hc);
  f->up = 1;
}

static void fol_down(fol *f) {
  bu_dev_stop(&f->d);
  sp_sqlite_store_close(f->st);
  f->st = NULL;
  f->up = 0;
}

static int follower_proc(void *arg) {
  ctx *c = arg;
  shared *sh = c->sh;
  fol f;
  bu_dev *dp;

  memset(&f, 0, sizeof(f));
  f.c = c;
  rm_db(g_follower_db);
  while (!sh->leader_up) {
    bu_sleep_ns(1000000u);
  }
  fol_up(&f);
  while (!sh->stop) {
    if (c->cut && !sh->cut_at && sh->chunk_count &&
        sh->chunks_done * 2 >= sh->chunk_count) {
      /* As a crash: what was in flight is lost, the SQLite files stay. */
      sh->cut_at = sh->chunks_done;
      fol_down(&f);
      memset(c->cl->board->addr[1], 0, BU_ADDR_LEN);
      fol_up(&f);
    }
    dp = &f.d;
    bu_poll(&dp, 1, 2000000u);
  }
  if (sh->done) {
    /* The installed log must be the leader's: same head at S. */
    sp_sqlite_status a, b;
    sp_sqlite_store *l;
    bu_check(sp_sqlite_store_status(f.st, &b), "follower status");
    bu_check(sp_sqlite_store_open(&l, g_leader_db, NULL, NULL), "leader");
    bu_check(sp_sqlite_store_status(l, &a), "leader status");
    sp_sqlite_store_close(l);
    if (a.latest != b.latest ||
        memcmp(a.head_hash, b.head_hash, SP_HASH_LEN) != 0 ||
        a.entry_count != b.entry_count) {
      bu_die("the installed log differs from the leader's");
    }
    bu_check(sp_sqlite_store_verify(f.st, NULL), "verify the installed log");
  }
  fol_down(&f);
  return 0;
}

/* ---- one transfer ---- */

typedef struct result {
  double seconds, prepare_s, transfer_s, install_s;
  double mb_s, wire_mb_s;
  uint64_t total_size, chunk_count, resumes, restarts, cut_at, resent;
  uint32_t max_sends;
} result;

/* End both processes (they would poll forever) and the benchmark. */
static void give_up(shared *sh, pid_t l, pid_t f, const char *why) {
  uint64_t done = sh->chunks_done, count = sh->chunk_count;

  sh->stop = 1;
  bu_join(f);
  bu_join(l);
  rm_db(g_follower_db);
  rm_db(g_leader_db);
  rm_snapshots(g_leader_db);
  rmdir(g_dir);
  bu_die("%s at chunk %llu of %llu", why, (unsigned long long)done,
         (unsigned long long)count);
}

static void transfer(ctx *c, int cut, result *r) {
  shared *sh = bu_shm(sizeof(*sh));
  uint64_t end = bu_now() + RUN_LIMIT_NS, i, seen = 0;
  uint64_t moved = bu_now();
  pid_t l, f;

  memset(c->cl->board->addr, 0, sizeof(c->cl->board->addr));
  rm_snapshots(g_leader_db);
  c->sh = sh;
  c->cut = cut;
  l = bu_spawn(leader_proc, c);
  f = bu_spawn(follower_proc, c);
  while (!sh->done && !sh->failed) {
    if (sh->chunks_done != seen || !sh->t_manifest) {
      seen = sh->chunks_done;
      moved = bu_now();
    } else if (bu_now() - moved > STALL_NS) {
      give_up(sh, l, f, "the transfer stalled");
    }
    if (bu_now() > end) {
      give_up(sh, l, f, "no install in time");
    }
    bu_sleep_ns(10000000u);
  }
  bu_sleep_ns(20000000u);
  sh->stop = 1;
  if (bu_join(f) != 0 || bu_join(l) != 0 || sh->failed) {
    bu_die("a process of the transfer failed");
  }
  memset(r, 0, sizeof(*r));
  r->seconds = (double)(sh->t_installed - sh->t_request) / 1e9;
  r->prepare_s = (double)(sh->t_manifest - sh->t_request) / 1e9;
  r->transfer_s = (double)(sh->t_chunks - sh->t_manifest) / 1e9;
  r->install_s = (double)(sh->t_installed - sh->t_chunks) / 1e9;
  r->total_size = sh->total_size;
  r->chunk_count = sh->chunk_count;
  r->mb_s = (double)sh->total_size / 1e6 / r->seconds;
  r->wire_mb_s = sh->l_at[2] > sh->l_at[1]
                     ? (double)(sh->l_bytes[2] - sh->l_bytes[1]) / 1e6 /
                           ((double)(sh->l_at[2] - sh->l_at[1]) / 1e9)
                     : 0;
  r->resumes = sh->resumes;
  r->restarts = sh->restarts;
  r->cut_at = sh->cut_at;
  for (i = 0; i < sh->chunk_count && i < SP_MAX_SNAPSHOT_CHUNKS; ++i) {
    if (sh->sends[i] == 0) {
      bu_die("chunk %llu was never sent", (unsigned long long)i);
    }
    r->resent += sh->sends[i] - 1;
    if (sh->sends[i] > r->max_sends) {
      r->max_sends = sh->sends[i];
    }
  }
  bu_shm_free(sh, sizeof(*sh));
  rm_db(g_follower_db);
}

int main(int argc, char **argv) {
  int runs = (int)bu_opt(argc, argv, "runs", 1);
  long size_mb = bu_opt(argc, argv, "size_mb", 1024);
  long payload = bu_opt(argc, argv, "payload", 4000);
  long chunk_kib = bu_opt(argc, argv, "chunk_kib", 256);
  long window = bu_opt(argc, argv, "window", 8);
  double seconds = (double)bu_opt(argc, argv, "seconds", 5);
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  double *smb, *wmb, *ratio;
  uint64_t entries, t0;
  bu_pair_cfg pc;
  bu_cluster *cl;
  result cut;
  char tmpl[512];
  ctx c;
  int i;

  for (i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "dir=", 4) == 0) {
      dir = argv[i] + 4;
    }
  }
  if (runs < 1 || size_mb < 1 || payload < 1 || payload > BU_MAX_PAYLOAD ||
      chunk_kib < 1 || chunk_kib * 1024 > SP_SNAPSHOT_CHUNK_MAX ||
      window < 1 || window > SP_MAX_SNAPSHOT_WINDOW || seconds < 1) {
    fprintf(stderr, "usage: snapshot_bench [runs=N] [size_mb=N] "
                    "[payload=1..%d] [chunk_kib=1..2048] [window=1..64] "
                    "[seconds=N] [dir=PATH]\n", BU_MAX_PAYLOAD);
    return 2;
  }
  snprintf(tmpl, sizeof(tmpl), "%s/spsnapbench.XXXXXX", dir);
  if (!mkdtemp(tmpl)) {
    bu_die("mkdtemp %s: %s", tmpl, strerror(errno));
  }
  memcpy(g_dir, tmpl, sizeof(g_dir));
  snprintf(g_leader_db, sizeof(g_leader_db), "%s/leader.db", tmpl);
  snprintf(g_follower_db, sizeof(g_follower_db), "%s/follower.db", tmpl);
  smb = calloc((size_t)runs, sizeof(double));
  wmb = calloc((size_t)runs, sizeof(double));
  ratio = calloc((size_t)runs, sizeof(double));
  cl = bu_cluster_new(2);
  entries = ((uint64_t)size_mb << 20) / (uint64_t)payload;
  printf("snapshot: %d runs; a follower recovers %ld MiB of entry payloads "
         "(%llu entries of %ld bytes) from a leader over QUIC, SQLite stores "
         "in %s, chunks of %ld KiB, window %ld; reference: throughput_bench's "
         "wire MB/s, %.0f s\n",
         runs, size_mb, (unsigned long long)entries, payload, tmpl,
         chunk_kib, window, seconds);
  fflush(stdout);
  t0 = bu_now();
  fill(entries, (size_t)payload);
  printf("  fill (not timed): %llu entries in %.1f s, pruned through 1\n",
         (unsigned long long)entries, (double)(bu_now() - t0) / 1e9);
  fflush(stdout);
  memset(&c, 0, sizeof(c));
  c.cl = cl;
  c.chunk = (uint32_t)(chunk_kib * 1024);
  c.window = (uint32_t)window;
  bu_pair_cfg_default(&pc);
  pc.window_s = seconds;
  for (i = 0; i < runs; ++i) {
    bu_pair_result q;
    result r;
    bu_pair_run(cl, &pc, &q);
    wmb[i] = q.wire_mb_s;
    transfer(&c, 0, &r);
    smb[i] = r.mb_s;
    ratio[i] = r.mb_s / q.wire_mb_s;
    printf("  run %d: wire %.1f MB/s | snapshot %llu bytes in %llu chunks: "
           "%.2f s (prepare %.2f s, chunks %.2f s at %.1f MB/s on the wire, "
           "verify + install %.2f s) = %.1f MB/s, resumed %llu, restarted "
           "%llu | ratio %.3f\n",
           i + 1, q.wire_mb_s, (unsigned long long)r.total_size,
           (unsigned long long)r.chunk_count, r.seconds, r.prepare_s,
           r.transfer_s, r.wire_mb_s, r.install_s, r.mb_s,
           (unsigned long long)r.resumes, (unsigned long long)r.restarts,
           ratio[i]);
    fflush(stdout);
  }
  transfer(&c, 1, &cut);
  printf("  cut at 50%%: the follower node destroyed at %llu of %llu chunks "
         "durable and recreated on the same SQLite files; installed after "
         "%.2f s, resumed %llu, restarted %llu; chunks re-sent %llu "
         "(window %ld: %s)\n",
         (unsigned long long)cut.cut_at, (unsigned long long)cut.chunk_count,
         cut.seconds, (unsigned long long)cut.resumes,
         (unsigned long long)cut.restarts, (unsigned long long)cut.resent,
         window, cut.resent <= (uint64_t)window ? "at most one window"
                                                : "MORE than one window");
  printf("snapshot: snapshot_mb_s %.1f wire_mb_s %.1f snapshot_ratio %.3f "
         "resent_chunks %llu window %ld\n",
         bu_median(smb, (size_t)runs), bu_median(wmb, (size_t)runs),
         bu_median(ratio, (size_t)runs), (unsigned long long)cut.resent,
         window);
  rm_db(g_leader_db);
  rm_snapshots(g_leader_db);
  rmdir(tmpl);
  bu_cluster_del(cl);
  free(smb);
  free(wmb);
  free(ratio);
  return 0;
}
