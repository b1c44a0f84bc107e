/*
 * memory_bench.c: what a leader holds per follower, and whether a long
 * catch-up makes memory or the heap move.
 *
 * Part 1, RSS per follower.  A leader process (in-memory store of `entries`
 * entries of 256 bytes) and 64 followers in 4 processes, one QUIC endpoint
 * and node each, in-memory stores.  The registry lists only the followers
 * switched on, so the leader dials nobody.  For 0, 1, 16 and 64 followers:
 * switch them on, let them connect and catch up (whole pages of the log),
 * push them 10 live batches of 10 entries, wait until every one applied
 * everything, settle, then read the leader's VmRSS (/proc/self/status)
 * five times 100 ms apart (median).
 *   rss_per_follower_kib = (RSS with 64 - RSS with 0) / 64.
 *
 * Part 2, a `catchup`-entry catch-up (10,000,000) of one follower.  The
 * leader serves a generated store (bu_gen_store: entry i synthesised on
 * read, the chain computed incrementally, nothing held per entry); the
 * follower applies into a store that discards entries and keeps the chain
 * head (bu_sink_store).  The leader samples its VmRSS every 250 ms.  Both
 * count their heap calls two ways: through a counting sp_mem given to the
 * endpoint and node (the library's and ngtcp2's allocations), and
 * process-wide by wrapping malloc/calloc/realloc in this program (GnuTLS,
 * libc, everything).  Heap calls per entry = calls between 20% and 80% of
 * the catch-up / entries applied meanwhile.
 *
 * Summary line:
 *   memory: rss0_kib A rss1_kib B rss16_kib C rss64_kib D per_follower_kib
 *   E catchup_rss_min_kib F catchup_rss_max_kib G leader_allocs_per_entry H
 *   follower_allocs_per_entry I
 *
 *   memory_bench [entries=10000] [catchup=10000000] [payload=256]
 */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"

/* ---- process-wide heap call counting ---- */

/* A sanitizer brings its own allocator: no wrapping then (the process-wide
 * counts stay 0 and say so). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NO_HEAP_WRAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define NO_HEAP_WRAP 1
#endif
#endif

static uint64_t g_heap_calls;
/* Bytes allocated and not freed, process-wide. */
static int64_t g_heap_live;

#ifndef NO_HEAP_WRAP
static const int g_heap_wrapped = 1;

/* The build hides symbols by default; the wrappers must be exported, or
 * the shared libraries (GnuTLS, libc itself) keep calling libc's own and
 * only this program's calls are counted. */
#define HEAP_WRAP __attribute__((visibility("default")))

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

HEAP_WRAP void *malloc(size_t size) {
  void *p = __libc_malloc(size);

  g_heap_calls++;
  g_heap_live += p ? (int64_t)malloc_usable_size(p) : 0;
  return p;
}

HEAP_WRAP void *calloc(size_t n, size_t size) {
  void *p = __libc_calloc(n, size);

  g_heap_calls++;
  g_heap_live += p ? (int64_t)malloc_usable_size(p) : 0;
  return p;
}

HEAP_WRAP void *realloc(void *p, size_t size) {
  int64_t before = p ? (int64_t)malloc_usable_size(p) : 0;
  void *q = __libc_realloc(p, size);

  g_heap_calls++;
  if (q || size == 0) {
    g_heap_live += (q ? (int64_t)malloc_usable_size(q) : 0) - before;
  }
  return q;
}

HEAP_WRAP void free(void *p) {
  if (p) {
    g_heap_live -= (int64_t)malloc_usable_size(p);
  }
  __libc_free(p);
}
#else
static const int g_heap_wrapped = 0;
#endif

/* ---- part 1 ---- */

#define NF 64
#define NPROC 4
#define PAYLOAD 256

typedef struct shared1 {
  volatile int active;
  volatile int ready[BU_MAX_DEV];
  volatile sp_seq applied[BU_MAX_DEV];
  volatile int stop;
  /* Orchestrator -> leader: 1 push live batches, 2 measure. */
  volatile int cmd;
  volatile int cmd_done;
  volatile sp_seq latest;
  volatile long rss;
  /* At the last measurement: live heap bytes, process-wide and through
   * the endpoint's and node's sp_mem; RSS after malloc_trim(0). */
  volatile long live_kib;
  volatile long lib_kib;
  volatile long trimmed_kib;
  volatile long file_kib;
} shared1;

typedef struct ctx1 {
  bu_cluster *cl;
  shared1 *sh;
  long entries;
  int first, last;
} ctx1;

static ctx1 *g_c1;

static int f1_event(const sp_event *ev, void *ud) {
  int f = (int)(intptr_t)ud;

  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_c1->sh->applied[f] = ev->to_sequence;
  } else if (ev->type == SP_EVENT_CAUGHT_UP) {
    g_c1->sh->ready[f] = 1;
  }
  return 0;
}

static int followers1(void *arg) {
  ctx1 *c = arg;
  bu_dev devs[NF], *dp[NF];
  sp_mem_store *ms[NF];
  int n = 0;

  g_c1 = c;
  while (!c->sh->stop) {
    /* Start the devices switched on since the last look. */
    while (c->first + n <= c->last && c->first + n <= c->sh->active) {
      sp_events ev = SP_EVENTS_INIT;
      sp_store vt;
      ev.on_event = f1_event;
      ev.user_data = (void *)(intptr_t)(c->first + n);
      bu_check(sp_mem_store_new(&ms[n], NULL), "store");
      sp_mem_store_get_vtable(ms[n], &vt);
      bu_dev_start(&devs[n], c->cl, c->first + n, NULL, &ev, NULL);
      bu_dev_open(&devs[n], SP_ROLE_FOLLOWER, &vt, NULL);
      dp[n] = &devs[n];
      ++n;
    }
    if (n) {
      bu_poll(dp, n, 5000000u);
    } else {
      bu_sleep_ns(5000000u);
    }
  }
  while (n-- > 0) {
    bu_dev_stop(&devs[n]);
    sp_mem_store_del(ms[n]);
  }
  return 0;
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return x < y ? -1 : x > y;
}

static int leader1(void *arg) {
  ctx1 *c = arg;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;
  bu_counter cnt;
  sp_mem mem;

  bu_counting_mem(&mem, &cnt);
  bu_check(sp_mem_store_new(&ms, NULL), "store");
  c->sh->latest = bu_mem_append(ms, (size_t)c->entries, PAYLOAD);
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, c->cl, 0, &mem, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  while (!c->sh->stop) {
    int cmd = c->sh->cmd;
    if (cmd == 1) {
      int k;
      for (k = 0; k < 10; ++k) {
        sp_seq first = c->sh->latest + 1;
        c->sh->latest = bu_mem_append(ms, 10, PAYLOAD);
        bu_check(sp_handler_notify_new_entries(d.h, first, c->sh->latest,
                                               bu_now()),
                 "notify");
        {
          uint64_t until = bu_now() + 10000000u;
          while (bu_now() < until) {
            bu_poll(&dp, 1, 1000000u);
          }
        }
      }
    } else if (cmd == 2) {
      long v[5];
      int k;
      for (k = 0; k < 5; ++k) {
        uint64_t until = bu_now() + 100000000u;
        while (bu_now() < until) {
          bu_poll(&dp, 1, 10000000u);
        }
        v[k] = bu_rss_kib();
      }
      qsort(v, 5, sizeof(long), cmp_long);
      c->sh->rss = v[2];
      c->sh->live_kib = (long)(g_heap_live / 1024);
      c->sh->lib_kib = (long)(cnt.live / 1024);
      c->sh->file_kib = bu_status_kib("RssFile:");
    } else if (cmd == 3) {
      /* What the allocator keeps that nothing uses (asked last, once:
       * it changes every later figure). */
      malloc_trim(0);
      c->sh->trimmed_kib = bu_rss_kib();
    }
    if (cmd) {
      c->sh->cmd = 0;
      c->sh->cmd_done = 1;
    }
    bu_poll(&dp, 1, 2000000u);
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

static void leader_cmd(shared1 *sh, int cmd) {
  uint64_t end = bu_now() + 60ull * 1000000000u;

  sh->cmd_done = 0;
  sh->cmd = cmd;
  while (!sh->cmd_done) {
    if (bu_now() > end) {
      bu_die("leader did not answer");
    }
    bu_sleep_ns(1000000u);
  }
}

static void wait_applied(shared1 *sh, int k) {
  uint64_t end = bu_now() + 120ull * 1000000000u;
  int f;

  for (f = 1; f <= k; ++f) {
    while (!sh->ready[f] || sh->applied[f] < sh->latest) {
      if (bu_now() > end) {
        bu_die("follower %d stuck at %llu of %llu", f,
               (unsigned long long)sh->applied[f],
               (unsigned long long)sh->latest);
      }
      bu_sleep_ns(2000000u);
    }
  }
}

static void part1(long entries, long rss[4], long live[4], long lib[4],
                  long file[4], long *trimmed) {
  static const int steps[4] = {0, 1, 16, NF};
  bu_cluster *cl = bu_cluster_new(NF + 1);
  shared1 *sh = bu_shm(sizeof(*sh));
  pid_t pids[NPROC + 1];
  ctx1 c;
  int i, p;

  for (i = 1; i <= NF; ++i) {
    cl->board->member[i] = 0;
  }
  c.cl = cl;
  c.sh = sh;
  c.entries = entries;
  pids[0] = bu_spawn(leader1, &c);
  for (p = 0; p < NPROC; ++p) {
    c.first = 1 + p * (NF / NPROC);
    c.last = c.first + NF / NPROC - 1;
    pids[p + 1] = bu_spawn(followers1, &c);
  }
  bu_wait_addrs(cl, 0, 0);
  for (i = 0; i < 4; ++i) {
    int f;
    for (f = 1; f <= steps[i]; ++f) {
      cl->board->member[f] = 1;
    }
    sh->active = steps[i];
    wait_applied(sh, steps[i]);
    leader_cmd(sh, 1);
    wait_applied(sh, steps[i]);
    bu_sleep_ns(500000000u);
    leader_cmd(sh, 2);
    rss[i] = sh->rss;
    live[i] = sh->live_kib;
    lib[i] = sh->lib_kib;
    file[i] = sh->file_kib;
    printf("  leader RSS with %2d followers connected and caught up: %6ld "
           "KiB (heap in use %6ld KiB, of it through the library's sp_mem "
           "%6ld KiB)\n",
           steps[i], rss[i], live[i], lib[i]);
  }
  leader_cmd(sh, 3);
  *trimmed = sh->trimmed_kib;
  sh->stop = 1;
  for (p = 0; p <= NPROC; ++p) {
    if (bu_join(pids[p]) != 0) {
      bu_die("a process of part 1 failed");
    }
  }
  bu_shm_free(sh, sizeof(*sh));
  bu_cluster_del(cl);
}

/* ---- part 2 ---- */

#define MAX_SAMPLES 4096

typedef struct shared2 {
  volatile sp_seq applied;
  volatile int done;
  /* Snapshots at 20% and 80%: [side][k], side 0 leader, 1 follower. */
  sp_seq at[2][2];
  uint64_t lib_calls[2][2];
  uint64_t heap_calls[2][2];
  uint64_t t_start, t_end;
  int nsamples;
  long rss[MAX_SAMPLES];
  sp_seq rss_at[MAX_SAMPLES];
  long f_rss_min, f_rss_max;
} shared2;

typedef struct ctx2 {
  bu_cluster *cl;
  shared2 *sh;
  sp_seq n;
  size_t payload;
} ctx2;

static shared2 *g_sh2;
static bu_sink_store g_sink;

static int f2_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_sh2->applied = ev->to_sequence;
  }
  return 0;
}

/* Take the snapshots of `side` as progress passes 20% and 80%. */
static void snap(ctx2 *c, int side, const bu_counter *cnt, int *k) {
  sp_seq a = c->sh->applied;

  while (*k < 2 && a >= c->n / 5 * (*k == 0 ? 1 : 4)) {
    c->sh->at[side][*k] = a;
    c->sh->lib_calls[side][*k] = bu_counter_allocs(cnt);
    c->sh->heap_calls[side][*k] = g_heap_calls;
    ++*k;
  }
}

static int follower2(void *arg) {
  ctx2 *c = arg;
  sp_events ev = SP_EVENTS_INIT;
  sp_store vt;
  bu_counter cnt;
  sp_mem mem;
  bu_dev d, *dp = &d;
  int k = 0;
  long rmin = -1, rmax = 0;
  uint64_t last = 0;

  g_sh2 = c->sh;
  ev.on_event = f2_event;
  bu_counting_mem(&mem, &cnt);
  memset(&g_sink, 0, sizeof(g_sink));
  bu_sink_store_vtable(&g_sink, &vt);
  bu_wait_addrs(c->cl, 0, 0);
  bu_dev_start(&d, c->cl, 1, &mem, &ev, NULL);
  c->sh->t_start = bu_now();
  bu_dev_open(&d, SP_ROLE_FOLLOWER, &vt, NULL);
  while (c->sh->applied < c->n) {
    bu_poll(&dp, 1, 10000000u);
    snap(c, 1, &cnt, &k);
    if (bu_now() - last > 250000000u && c->sh->applied > c->n / 10) {
      long r = bu_rss_kib();
      rmin = rmin < 0 || r < rmin ? r : rmin;
      rmax = r > rmax ? r : rmax;
      last = bu_now();
    }
  }
  c->sh->t_end = bu_now();
  c->sh->f_rss_min = rmin;
  c->sh->f_rss_max = rmax;
  c->sh->done = 1;
  {
    uint64_t until = bu_now() + 100000000u;
    while (bu_now() < until) {
      bu_poll(&dp, 1, 10000000u);
    }
  }
  bu_dev_stop(&d);
  return 0;
}

static int leader2(void *arg) {
  ctx2 *c = arg;
  bu_gen_store *g = bu_gen_store_new(c->payload, c->n);
  sp_store vt;
  bu_counter cnt;
  sp_mem mem;
  bu_dev d, *dp = &d;
  uint64_t last = 0;
  int k = 0;

  bu_gen_store_vtable(g, &vt);
  bu_counting_mem(&mem, &cnt);
  bu_dev_start(&d, c->cl, 0, &mem, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  while (!c->sh->done) {
    uint64_t now;
    bu_poll(&dp, 1, 10000000u);
    snap(c, 0, &cnt, &k);
    now = bu_now();
    if (now - last >= 250000000u && c->sh->applied > 0 &&
        c->sh->nsamples < MAX_SAMPLES) {
      c->sh->rss[c->sh->nsamples] = bu_rss_kib();
      c->sh->rss_at[c->sh->nsamples] = c->sh->applied;
      c->sh->nsamples++;
      last = now;
    }
  }
  bu_dev_stop(&d);
  bu_gen_store_del(g);
  return 0;
}

static void part2(sp_seq n, size_t payload, long *rmin, long *rmax,
                  double *lape, double *fape) {
  bu_cluster *cl = bu_cluster_new(2);
  shared2 *sh = bu_shm(sizeof(*sh));
  ctx2 c;
  pid_t l, f;
  double secs, heap[2], lib[2];
  long first = -1, last = 0;
  int i, side;

  c.cl = cl;
  c.sh = sh;
  c.n = n;
  c.payload = payload;
  l = bu_spawn(leader2, &c);
  f = bu_spawn(follower2, &c);
  if (bu_join(f) != 0 || bu_join(l) != 0) {
    bu_die("a process of part 2 failed");
  }
  secs = (double)(sh->t_end - sh->t_start) / 1e9;
  *rmin = -1;
  *rmax = 0;
  printf("  catch-up of %llu entries (%zu-byte payloads): %.1f s, %.0f "
         "entries/s\n",
         (unsigned long long)n, payload, secs, (double)n / secs);
  printf("  leader RSS (KiB) by progress:");
  for (i = 0; i < sh->nsamples; ++i) {
    long r = sh->rss[i];
    if (sh->rss_at[i] < n / 10 && sh->rss_at[sh->nsamples - 1] >= n / 10) {
      continue; /* warm-up: buffers and windows growing */
    }
    if (first < 0) {
      first = r;
    }
    last = r;
    *rmin = *rmin < 0 || r < *rmin ? r : *rmin;
    *rmax = r > *rmax ? r : *rmax;
  }
  for (i = 1; i <= 10; ++i) {
    /* The sample nearest to each tenth of the way. */
    int k, best = -1;
    for (k = 0; k < sh->nsamples; ++k) {
      if (best < 0 || llabs((long long)sh->rss_at[k] - (long long)(n / 10 * i)) <
                          llabs((long long)sh->rss_at[best] -
                                (long long)(n / 10 * i))) {
        best = k;
      }
    }
    if (best >= 0) {
      printf(" %d%%:%ld", i * 10, sh->rss[best]);
    }
  }
  printf("\n  leader RSS from 10%% on: first %ld, min %ld, max %ld, last %ld "
         "KiB (%d samples); follower RSS min %ld max %ld KiB\n",
         first, *rmin, *rmax, last, sh->nsamples, sh->f_rss_min,
         sh->f_rss_max);
  for (side = 0; side < 2; ++side) {
    double entries = (double)(sh->at[side][1] - sh->at[side][0]);
    lib[side] = (double)(sh->lib_calls[side][1] - sh->lib_calls[side][0]) /
                entries;
    heap[side] = (double)(sh->heap_calls[side][1] - sh->heap_calls[side][0]) /
                 entries;
    printf("  %s, from entry %llu to %llu: %llu heap calls through sp_mem "
           "(%.5f per entry), %llu process-wide (%.5f per entry)\n",
           side ? "follower" : "leader",
           (unsigned long long)sh->at[side][0],
           (unsigned long long)sh->at[side][1],
           (unsigned long long)(sh->lib_calls[side][1] -
                                sh->lib_calls[side][0]),
           lib[side],
           (unsigned long long)(sh->heap_calls[side][1] -
                                sh->heap_calls[side][0]),
           heap[side]);
  }
  *lape = heap[0];
  *fape = heap[1];
  bu_shm_free(sh, sizeof(*sh));
  bu_cluster_del(cl);
}

int main(int argc, char **argv) {
  long entries = bu_opt(argc, argv, "entries", 10000);
  long catchup = bu_opt(argc, argv, "catchup", 10000000);
  long payload = bu_opt(argc, argv, "payload", 256);
  long rss[4], live[4], lib[4], file[4], trimmed, rmin, rmax;
  double lape, fape;

  if (entries < 100 || catchup < 10000 || payload < 0 ||
      payload > BU_MAX_PAYLOAD) {
    fprintf(stderr, "usage: memory_bench [entries=N] [catchup=N] "
                    "[payload=N]\n");
    return 2;
  }
  printf("memory: leader RSS with 0/1/16/64 followers (log of %ld entries of "
         "%d B, 4 follower processes); then a %ld-entry catch-up from a "
         "generated store into a discarding store\n",
         entries, PAYLOAD, catchup);
  if (!g_heap_wrapped) {
    printf("  (built with a sanitizer: the process-wide heap figures are not "
           "counted and read 0)\n");
  }
  part1(entries, rss, live, lib, file, &trimmed);
  printf("  RSS per follower: 1: %ld KiB, 16: %.0f KiB, 64: %.0f KiB\n",
         rss[1] - rss[0], (double)(rss[2] - rss[0]) / 16,
         (double)(rss[3] - rss[0]) / 64);
  printf("  of the 64-follower figure, per follower: heap in use %.0f KiB "
         "(library + ngtcp2 through sp_mem %.0f KiB, GnuTLS and the rest "
         "%.0f KiB); freed heap the allocator kept and other pages %.0f KiB "
         "(RSS after malloc_trim(0): %.0f KiB per follower)\n",
         (double)(live[3] - live[0]) / 64, (double)(lib[3] - lib[0]) / 64,
         (double)((live[3] - live[0]) - (lib[3] - lib[0])) / 64,
         (double)((rss[3] - rss[0]) - (live[3] - live[0])) / 64,
         (double)(trimmed - rss[0]) / 64);
  printf("  of it file-backed pages (library code the first connections "
         "ran, paged in once): %.0f KiB per follower\n",
         (double)(file[3] - file[0]) / 64);
  part2((sp_seq)catchup, (size_t)payload, &rmin, &rmax, &lape, &fape);
  printf("memory: rss0_kib %ld rss1_kib %ld rss16_kib %ld rss64_kib %ld "
         "per_follower_kib %.0f catchup_rss_min_kib %ld catchup_rss_max_kib "
         "%ld leader_allocs_per_entry %.5f follower_allocs_per_entry %.5f\n",
         rss[0], rss[1], rss[2], rss[3], (double)(rss[3] - rss[0]) / 64, rmin,
         rmax, lape, fape);
  return 0;
}
