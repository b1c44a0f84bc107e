/*
 * write_bench.c: writes from a follower (issue 12), over QUIC, leader and
 * follower in two processes (forked) on 127.0.0.1, in-memory stores.
 *
 * Latency: the follower submits one entry (256-byte payload) every
 * 1/rate seconds with sp_handler_submit and records the time just before
 * the call; the time of the SP_EVENT_SUBMISSION_COMMITTED event for it
 * (the entry is back in the follower's own log: outbox -> Propose ->
 * leader's admission and append -> NewEntries -> fetch -> apply) ends the
 * sample.  The reference is the UDP round trip of the same run between
 * the same two processes, measured as bench/latency_bench.c does it: half
 * a period after each submission the follower sends a 64-byte datagram to
 * an echo socket in the leader process, which returns it from its poll
 * loop.  Goal: p50 <= 3 round trips (two trips and the leader's append).
 *
 * Throughput, in the same processes right after: for `seconds` (after a
 * short warm-up) the leader submits batches of `batch` entries as fast as
 * the follower applies them (at most `backlog` unapplied): leader-origin
 * entries applied per second on the follower; then the follower submits
 * batches of `batch` as fast as they commit (at most `backlog`
 * uncommitted): follower-origin entries committed per second on the
 * follower.  Goal: follower / leader >= 0.5.
 *
 * Every figure is the median over `runs` runs (fresh processes each).
 * Summary line:
 *   writes: p50_us A p99_us B rtt_p50_us C write_latency_ratio D
 *           leader_eps E follower_eps F write_throughput_ratio G
 *
 *   write_bench [runs=3] [samples=2000] [rate=400] [seconds=3] [batch=256]
 *               [backlog=16384]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define PAYLOAD 256
#define WARMUP 100
#define MAX_SAMPLES 100000
#define MAX_BATCH 1024
#define WARMUP_NS 500000000ull
#define SEC 1000000000ull

enum { PH_SETUP, PH_LATENCY, PH_LEADER, PH_FOLLOWER, PH_STOP };

typedef struct shared {
  volatile int echo_port;
  volatile int leader_up;
  volatile int phase;
  volatile uint64_t applied;    /* follower's applied sequence */
  volatile uint64_t phase_start;
  volatile int phase_done;
  uint64_t submit_ts[WARMUP + MAX_SAMPLES + 2];
  uint64_t commit_ts[WARMUP + MAX_SAMPLES + 2];
  uint64_t rtt[WARMUP + MAX_SAMPLES + 2];
  double leader_eps, follower_eps;
} shared;

typedef struct run_ctx {
  bu_cluster *cl;
  shared *sh;
  int samples, rate, batch;
  uint64_t window_ns, backlog;
} run_ctx;

/* Wait for input or `wait_ns`, then let the endpoint do its work. */
static int step(int fd, sp_quic_endpoint *ep, uint64_t wait_ns) {
  uint64_t now = bu_now(), next = sp_quic_endpoint_get_expiry(ep);
  int ready;

  if (next > now && next - now < wait_ns) {
    wait_ns = next - now;
  } else if (next <= now) {
    wait_ns = 0;
  }
  ready = bu_wait_udp_or_endpoint(fd, ep, wait_ns, 20000000u);
  now = bu_now();
  if ((ready & BU_EP_READY) || sp_quic_endpoint_get_expiry(ep) <= now) {
    bu_check(sp_quic_endpoint_process(ep, now), "process");
  }
  return ready;
}

static void make_entry(sp_entry *e, uint64_t k) {
  bu_entry(e, k, PAYLOAD);
  /* Submitted entries carry no device (the library sets its own). */
  memset(&e->device_id, 0, sizeof(e->device_id));
  e->sequence = 0;
}

/* ---- leader process: serves, echoes pings, writes in its phase ---- */

static int leader_main(void *arg) {
  run_ctx *rc = arg;
  shared *sh = rc->sh;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d;
  sp_entry batch[MAX_BATCH];
  uint64_t k = 0, last_prune = 0;
  int port, fd, i;

  fd = bu_udp_socket(&port);
  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, rc->cl, 0, NULL, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  sh->echo_port = port;
  sh->leader_up = 1;
  while (sh->phase != PH_STOP) {
    uint64_t now = bu_now();
    int ready;

    if (sh->phase == PH_LEADER && !sh->phase_done) {
      sp_handler_status hs;
      sp_handler_get_status(d.h, &hs);
      if (hs.sequence - sh->applied + (uint64_t)rc->batch <= rc->backlog) {
        for (i = 0; i < rc->batch; ++i) {
          make_entry(&batch[i], ++k);
        }
        bu_check(sp_handler_submit(d.h, batch, (size_t)rc->batch, NULL, now),
                 "leader submit");
        bu_check(sp_quic_endpoint_process(d.ep, bu_now()), "process");
        continue;
      }
    }
    if (now - last_prune > 100000000u) {
      sp_seq floor = 0;
      /* Keep memory flat: drop what the follower has. */
      if (sp_handler_retention_floor(d.h, &floor) == 0 && floor > 0) {
        sp_mem_store_prune(ms, floor);
      }
      last_prune = now;
    }
    ready = step(fd, d.ep, 5000000u);
    if (ready & BU_UDP_READY) {
      bu_udp_echo(fd);
    }
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  close(fd);
  return 0;
}

/* ---- follower process: submits, pings, measures ---- */

static shared *g_sh;
static uint64_t g_committed, g_applied_entries;
static int g_caught_up;

static int f_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_SUBMISSION_COMMITTED) {
    g_committed++;
    if (ev->origin_seq < WARMUP + MAX_SAMPLES + 2 &&
        !g_sh->commit_ts[ev->origin_seq]) {
      g_sh->commit_ts[ev->origin_seq] = bu_now();
    }
  } else if (ev->type == SP_EVENT_SUBMISSION_REFUSED) {
    bu_die("submission %llu refused: %d", (unsigned long long)ev->origin_seq,
           ev->error_code);
  } else if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_applied_entries += ev->to_sequence - ev->from_sequence; /* (from, to] */
    g_sh->applied = ev->to_sequence;
  } else if (ev->type == SP_EVENT_CAUGHT_UP) {
    g_caught_up = 1;
  }
  return 0;
}

/* The latency phase: one submission per period, pings in between. */
static void latency_phase(run_ctx *rc, bu_dev *d, int fd) {
  shared *sh = rc->sh;
  uint64_t period = SEC / (uint64_t)rc->rate, t_entry, t_ping;
  uint64_t end;
  int total = WARMUP + rc->samples, entries = 0;
  bu_pinger pg;

  memset(&pg, 0, sizeof(pg));
  pg.fd = fd;
  pg.rtt = sh->rtt;
  t_entry = bu_now() + period;
  t_ping = t_entry + period / 2;
  while (entries < total || pg.n < total || pg.out) {
    uint64_t now = bu_now(), next = UINT64_MAX;

    if (entries < total && now >= t_entry) {
      sp_entry e;
      uint64_t origin = 0, t;
      make_entry(&e, (uint64_t)entries + 1);
      t = bu_now();
      bu_check(sp_handler_submit(d->h, &e, 1, &origin, t), "submit");
      if (origin >= WARMUP + MAX_SAMPLES + 2) {
        bu_die("origin %llu out of range", (unsigned long long)origin);
      }
      sh->submit_ts[origin] = t;
      bu_check(sp_quic_endpoint_process(d->ep, bu_now()), "process");
      ++entries;
      t_entry += period;
      continue;
    }
    if (pg.n < total && !pg.out && now >= t_ping) {
      bu_ping_send(&pg);
      t_ping += period;
      continue;
    }
    if (entries < total) {
      next = t_entry;
    }
    if (pg.n < total && !pg.out && t_ping < next) {
      next = t_ping;
    }
    if (step(fd, d->ep, next <= now ? 0 : next - now) & BU_UDP_READY) {
      bu_ping_recv(&pg);
    }
  }
  /* Let the last ones commit. */
  end = bu_now() + 5 * SEC;
  while (g_committed < (uint64_t)total && bu_now() < end) {
    step(fd, d->ep, 1000000u);
  }
}

/* A measured window over a counter: `counter` per second between
 * phase_start + warm-up and the window's end. */
static double window_rate(const uint64_t *counter, uint64_t c0, uint64_t t0,
                          uint64_t now) {
  return now > t0 ? (double)(*counter - c0) * 1e9 / (double)(now - t0) : 0;
}

static int follower_main(void *arg) {
  run_ctx *rc = arg;
  shared *sh = rc->sh;
  sp_events ev = SP_EVENTS_INIT;
  sp_mem_store *ms;
  sp_store vt;
  sp_entry batch[MAX_BATCH];
  sp_outbox_status os;
  uint64_t end, submitted, k = 0, c0 = 0, t0 = 0, last_prune = 0;
  int port, fd, phase, i, counting;
  bu_dev d;

  g_sh = sh;
  fd = bu_udp_socket(&port);
  ev.on_event = f_event;
  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  while (!sh->leader_up) {
    bu_sleep_ns(1000000u);
  }
  bu_udp_connect(fd, sh->echo_port);
  bu_dev_start(&d, rc->cl, 1, NULL, &ev, NULL);
  bu_wait_addrs(rc->cl, 0, 0);
  bu_dev_open(&d, SP_ROLE_FOLLOWER, &vt, NULL);
  /* Start once the leader's stream accepts writes. */
  end = bu_now() + 20 * SEC;
  do {
    step(fd, d.ep, 5000000u);
    if (bu_now() > end) {
      bu_die("the follower never got a stream that accepts writes");
    }
  } while (!g_caught_up ||
           sp_handler_outbox_status(d.h, &os) != 0 || !os.leader_accepts);

  sh->phase = PH_LATENCY;
  latency_phase(rc, &d, fd);

  /* Leader-origin throughput: the leader writes, we count applies. */
  for (phase = PH_LEADER; phase <= PH_FOLLOWER; ++phase) {
    uint64_t *counter = phase == PH_LEADER ? &g_applied_entries : &g_committed;
    uint64_t start = bu_now();
    counting = 0;
    sh->phase_done = 0;
    sh->phase = phase;
    submitted = g_committed;
    for (;;) {
      uint64_t now = bu_now();
      if (!counting && now - start >= WARMUP_NS) {
        counting = 1;
        c0 = *counter;
        t0 = now;
      }
      if (now - last_prune > 100000000u) {
        /* Keep memory flat: the log's tail is all we need. */
        sp_mem_store_prune(ms, sh->applied);
        last_prune = now;
      }
      if (counting && now - t0 >= rc->window_ns) {
        double eps = window_rate(counter, c0, t0, now);
        if (phase == PH_LEADER) {
          sh->leader_eps = eps;
        } else {
          sh->follower_eps = eps;
        }
        break;
      }
      if (phase == PH_FOLLOWER &&
          submitted - g_committed + (uint64_t)rc->batch <= rc->backlog) {
        for (i = 0; i < rc->batch; ++i) {
          make_entry(&batch[i], ++k);
        }
        bu_check(sp_handler_submit(d.h, batch, (size_t)rc->batch, NULL, now),
                 "follower submit");
        submitted += (uint64_t)rc->batch;
        bu_check(sp_quic_endpoint_process(d.ep, bu_now()), "process");
        continue;
      }
      step(fd, d.ep, 2000000u);
    }
    sh->phase_done = 1;
    /* Drain what is in flight before the next phase. */
    end = bu_now() + 10 * SEC;
    for (;;) {
      sp_handler_status hs;
      sp_handler_get_status(d.h, &hs);
      if (bu_now() > end ||
          (phase == PH_FOLLOWER ? g_committed >= submitted
                                : hs.sequence >= hs.leader_latest)) {
        break;
      }
      step(fd, d.ep, 1000000u);
    }
  }
  sh->phase = PH_STOP;
  end = bu_now() + 50000000u;
  while (bu_now() < end) {
    step(fd, d.ep, 5000000u);
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  close(fd);
  return 0;
}

/* ---- one run ---- */

typedef struct result {
  double p50, p99, rtt50, ratio, leader_eps, follower_eps;
  size_t n, lost;
} result;

static void one_run(run_ctx *rc, result *res) {
  shared *sh = rc->sh;
  uint64_t *lat = calloc((size_t)rc->samples, sizeof(*lat));
  uint64_t *rtt = calloc((size_t)rc->samples, sizeof(*rtt));
  size_t n;
  pid_t f, l;

  if (!lat || !rtt) {
    bu_die("out of memory");
  }
  memset(sh, 0, sizeof(*sh));
  memset(rc->cl->board->addr, 0, sizeof(rc->cl->board->addr));
  l = bu_spawn(leader_main, rc);
  f = bu_spawn(follower_main, rc);
  if (bu_join(f) != 0) {
    sh->phase = PH_STOP;
    bu_join(l);
    bu_die("follower process failed");
  }
  if (bu_join(l) != 0) {
    bu_die("leader process failed");
  }
  n = bu_latencies(sh->submit_ts, sh->commit_ts, WARMUP + 1,
                   (size_t)rc->samples, lat, &res->lost);
  memcpy(rtt, sh->rtt + WARMUP, (size_t)rc->samples * sizeof(*rtt));
  bu_sort_u64(rtt, (size_t)rc->samples);
  res->n = n;
  res->p50 = (double)bu_pct(lat, n, 50) / 1e3;
  res->p99 = (double)bu_pct(lat, n, 99) / 1e3;
  res->rtt50 = (double)bu_pct(rtt, (size_t)rc->samples, 50) / 1e3;
  res->ratio = res->rtt50 > 0 ? res->p50 / res->rtt50 : 0;
  res->leader_eps = sh->leader_eps;
  res->follower_eps = sh->follower_eps;
  free(lat);
  free(rtt);
}

int main(int argc, char **argv) {
  int runs = (int)bu_opt(argc, argv, "runs", 3);
  long seconds = bu_opt(argc, argv, "seconds", 3);
  run_ctx rc;
  double *p50, *p99, *rtt, *ratio, *le, *fe, *tr;
  int r;

  rc.samples = (int)bu_opt(argc, argv, "samples", 2000);
  rc.rate = (int)bu_opt(argc, argv, "rate", 400);
  rc.batch = (int)bu_opt(argc, argv, "batch", 256);
  rc.backlog = (uint64_t)bu_opt(argc, argv, "backlog", 16384);
  if (runs < 1 || rc.samples < 100 || rc.samples > MAX_SAMPLES ||
      rc.rate < 1 || rc.rate > 20000 || seconds < 1 || rc.batch < 1 ||
      rc.batch > MAX_BATCH || rc.backlog < (uint64_t)rc.batch) {
    fprintf(stderr, "usage: write_bench [runs=N] [samples=N] [rate=N] "
                    "[seconds=N] [batch=1..1024] [backlog=N]\n");
    return 2;
  }
  rc.window_ns = (uint64_t)seconds * SEC;
  p50 = calloc((size_t)runs, sizeof(double));
  p99 = calloc((size_t)runs, sizeof(double));
  rtt = calloc((size_t)runs, sizeof(double));
  ratio = calloc((size_t)runs, sizeof(double));
  le = calloc((size_t)runs, sizeof(double));
  fe = calloc((size_t)runs, sizeof(double));
  tr = calloc((size_t)runs, sizeof(double));
  rc.cl = bu_cluster_new(2);
  rc.sh = bu_shm(sizeof(*rc.sh));
  printf("writes: %d runs; each: %d follower submissions of %d B at %d/s "
         "over QUIC (two processes) interleaved with %d UDP pings of %d B; "
         "then %ld s of leader-origin and %ld s of follower-origin writes "
         "(batches of %d, at most %llu outstanding)\n",
         runs, rc.samples, PAYLOAD, rc.rate, rc.samples, BU_PING_LEN, seconds,
         seconds, rc.batch, (unsigned long long)rc.backlog);
  for (r = 0; r < runs; ++r) {
    result q;
    one_run(&rc, &q);
    p50[r] = q.p50;
    p99[r] = q.p99;
    rtt[r] = q.rtt50;
    ratio[r] = q.ratio;
    le[r] = q.leader_eps;
    fe[r] = q.follower_eps;
    tr[r] = q.leader_eps > 0 ? q.follower_eps / q.leader_eps : 0;
    printf("  run %d: submit->committed p50 %7.1f us  p99 %7.1f us (%zu "
           "samples, %zu missing) | udp rtt p50 %6.1f us | ratio %.2f | "
           "leader-origin %.0f/s follower-origin %.0f/s ratio %.2f\n",
           r + 1, q.p50, q.p99, q.n, q.lost, q.rtt50, q.ratio, q.leader_eps,
           q.follower_eps, tr[r]);
    if (q.lost) {
      bu_die("%zu submissions never committed", q.lost);
    }
  }
  printf("writes: p50_us %.1f p99_us %.1f rtt_p50_us %.1f "
         "write_latency_ratio %.2f leader_eps %.0f follower_eps %.0f "
         "write_throughput_ratio %.2f\n",
         bu_median(p50, (size_t)runs), bu_median(p99, (size_t)runs),
         bu_median(rtt, (size_t)runs), bu_median(ratio, (size_t)runs),
         bu_median(le, (size_t)runs), bu_median(fe, (size_t)runs),
         bu_median(tr, (size_t)runs));
  bu_shm_free(rc.sh, sizeof(*rc.sh));
  bu_cluster_del(rc.cl);
  free(p50);
  free(p99);
  free(rtt);
  free(ratio);
  free(le);
  free(fe);
  free(tr);
  return 0;
}
