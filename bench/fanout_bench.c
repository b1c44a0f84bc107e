/*
 * fanout_bench.c: one leader, `followers` followers, the leader appending
 * `rate` entries/s; append -> applied latency across every follower.
 *
 * Every device is a real node with its own QUIC endpoint (UDP socket) on
 * 127.0.0.1, in-memory stores.  The leader has a process of its own; the
 * followers share `procs` processes (followers / procs each), every
 * process driving its endpoints from one poll loop, as a host running
 * several devices would.  The machine has 2 cores: the leader and the
 * follower processes compete for them.
 *
 * The leader's loop wakes every `tick_us` microseconds and appends the
 * entries due by then (rate x tick: 10 per 1 ms tick at 10,000/s), each
 * with 256-byte payloads and its own append time (CLOCK_MONOTONIC, shared
 * memory, taken just before sp_mem_store_append), then calls
 * sp_handler_notify_new_entries once and runs the endpoint: each follower
 * gets the tick's entries pushed as one EntriesResponse.  It prunes its
 * store to sp_handler_retention_floor every 10 ms.  Each follower records
 * the time of the ENTRIES_APPLIED event covering each entry; latency =
 * applied - append, per entry and follower (microseconds).  After every
 * follower caught up and a second of traffic, `seconds` of appends are
 * measured; every entry of the window must reach every follower (the run
 * waits up to 60 s for the last ones).
 *
 * Figures are medians over `runs` (fresh processes each run), but
 * p99_ms_max, the worst run's p99.  fanout_leader_us_delivery: the
 * leader process's CPU time from the window's opening until every
 * follower applied the window's last entry / the deliveries (one entry
 * applied by one follower) in that time, microseconds.  Counting to the
 * drain, not to the window's end, keeps the figure honest when the
 * followers fall behind: the leader then sends part of the window's
 * entries after it.  Without backlog this is the leader's CPU in the
 * window / (entries appended in it x followers).  The per-run line also
 * gives the followers' (all their processes), and the leader's datagrams
 * per follower per tick.  Summary:
 *   fanout: followers N p50_ms A p99_ms B p999_ms C max_ms D
 *           p99_ms_max E fanout_leader_us_delivery F
 *
 *   fanout_bench [followers=64] [procs=4] [rate=10000] [seconds=5]
 *                [runs=3] [tick_us=1000] [leader_wakes=1]
 *
 * leader_wakes=0: the leader's loop sends each tick's pushes, then sleeps
 * to the next tick and handles what arrived meanwhile (the followers'
 * acks) only then, instead of waking for every datagram: fewer wake-ups
 * and the leader's QUIC ACKs ride on the next tick's pages.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define PAYLOAD 256
#define WARMUP_S 1.0

typedef struct shared {
  volatile int ready[BU_MAX_DEV];
  volatile int stop;
  volatile sp_seq first_measured;
  volatile sp_seq last_measured;
  volatile int window_done;
  volatile sp_seq applied[BU_MAX_DEV];
  volatile double cpu[BU_MAX_DEV];
  volatile double wait[BU_MAX_DEV];
  volatile double leader_cpu;
  volatile double leader_wait;
  /* The leader endpoint's counters over the window. */
  sp_quic_stats leader_stats;
  /* The slowest follower's applied sequence when the window opened and
   * closed, and when the last entry of the window reached everyone. */
  volatile sp_seq min_at_start;
  volatile sp_seq min_at_end;
  volatile uint64_t t_start, t_end, t_drained;
  /* From the window's opening until every follower applied its last
   * entry: the leader's CPU time, the followers' (per device, as cpu[]),
   * and the deliveries (entries applied, summed over the followers). */
  volatile int drained;
  volatile double leader_cpu_drained;
  volatile double cpu_drained[BU_MAX_DEV];
  volatile sp_seq deliveries;
} shared;

typedef struct ctx {
  bu_cluster *cl;
  shared *sh;
  int followers, procs, rate, tick_us;
  /* 0: the leader sleeps from tick to tick and handles what arrived
   * (acks) then, instead of waking for every datagram. */
  int leader_wakes;
  double seconds;
  sp_seq max_seq;
  /* append_ts[seq] and lat[(f - 1) * (max_seq + 1) + seq]: shared. */
  uint64_t *append_ts;
  uint32_t *lat;
  int first, last; /* a follower process's devices */
} ctx;

static ctx *g_c;

static int f_event(const sp_event *ev, void *ud) {
  int f = (int)(intptr_t)ud;

  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    uint64_t now = bu_now();
    uint32_t *row = g_c->lat + (size_t)(f - 1) * (g_c->max_seq + 1);
    sp_seq s;
    /* (from, to] */
    for (s = ev->from_sequence + 1;
         s <= ev->to_sequence && s <= g_c->max_seq; ++s) {
      uint64_t a = g_c->append_ts[s];
      /* Microseconds, rounded up so that 0 means "never applied". */
      uint64_t d = now > a ? (now - a + 999) / 1000 : 1;
      row[s] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)(d ? d : 1);
    }
    g_c->sh->applied[f] = ev->to_sequence;
  } else if (ev->type == SP_EVENT_CAUGHT_UP) {
    g_c->sh->ready[f] = 1;
  }
  return 0;
}

static int followers_main(void *arg) {
  ctx *c = arg;
  int n = c->last - c->first + 1, i;
  bu_dev *devs = calloc((size_t)n, sizeof(*devs));
  bu_dev **dp = calloc((size_t)n, sizeof(*dp));
  sp_mem_store **ms = calloc((size_t)n, sizeof(*ms));
  uint64_t last_prune = 0;
  double cpu0 = 0, wait0 = 0;
  int window_seen = 0, drained_seen = 0;

  g_c = c;
  if (!devs || !dp || !ms) {
    bu_die("out of memory");
  }
  bu_wait_addrs(c->cl, 0, 0);
  for (i = 0; i < n; ++i) {
    sp_events ev = SP_EVENTS_INIT;
    sp_store vt;
    ev.on_event = f_event;
    ev.user_data = (void *)(intptr_t)(c->first + i);
    bu_check(sp_mem_store_new(&ms[i], NULL), "store");
    sp_mem_store_get_vtable(ms[i], &vt);
    bu_dev_start(&devs[i], c->cl, c->first + i, NULL, &ev, NULL);
    bu_dev_open(&devs[i], SP_ROLE_FOLLOWER, &vt, NULL);
    dp[i] = &devs[i];
  }
  while (!c->sh->stop) {
    uint64_t now;
    bu_poll(dp, n, 5000000u);
    now = bu_now();
    if (c->sh->first_measured && !cpu0) {
      cpu0 = bu_cpu_s();
      wait0 = bu_run_delay_s();
    }
    if (c->sh->window_done && !window_seen) {
      double cpu = bu_cpu_s() - cpu0, wait = bu_run_delay_s() - wait0;
      window_seen = 1;
      for (i = 0; i < n; ++i) {
        c->sh->cpu[c->first + i] = cpu / n;
        c->sh->wait[c->first + i] = wait / n;
      }
    }
    if (c->sh->drained && !drained_seen) {
      double cpu = bu_cpu_s() - cpu0;
      drained_seen = 1;
      for (i = 0; i < n; ++i) {
        c->sh->cpu_drained[c->first + i] = cpu / n;
      }
    }
    if (now - last_prune > 20000000u) {
      for (i = 0; i < n; ++i) {
        sp_seq a = c->sh->applied[c->first + i];
        if (a) {
          bu_check(sp_mem_store_prune(ms[i], a), "prune");
        }
      }
      last_prune = now;
    }
  }
  for (i = 0; i < n; ++i) {
    bu_dev_stop(&devs[i]);
    sp_mem_store_del(ms[i]);
  }
  free(devs);
  free(dp);
  free(ms);
  return 0;
}

static int all_ready(const ctx *c) {
  int f;

  for (f = 1; f <= c->followers; ++f) {
    if (!c->sh->ready[f]) {
      return 0;
    }
  }
  return 1;
}

static sp_seq min_applied(const ctx *c) {
  sp_seq m = UINT64_MAX;
  int f;

  for (f = 1; f <= c->followers; ++f) {
    if (c->sh->applied[f] < m) {
      m = c->sh->applied[f];
    }
  }
  return m;
}

static sp_seq sum_applied(const ctx *c) {
  sp_seq sum = 0;
  int f;

  for (f = 1; f <= c->followers; ++f) {
    sum += c->sh->applied[f];
  }
  return sum;
}

static int all_cpu_drained(const ctx *c) {
  int f;

  for (f = 1; f <= c->followers; ++f) {
    if (c->sh->cpu_drained[f] <= 0) {
      return 0;
    }
  }
  return 1;
}

static int leader_main(void *arg) {
  ctx *c = arg;
  shared *sh = c->sh;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;
  uint64_t tick = (uint64_t)c->tick_us * 1000u, start, next, end;
  uint64_t warm_end, win_end, last_prune = 0, appended = 0;
  double cpu0 = 0, wait0 = 0;
  sp_seq seq = 0, floor, sum0 = 0;
  sp_quic_stats st0, st1;

  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, c->cl, 0, NULL, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  end = bu_now() + 60ull * 1000000000u;
  while (!all_ready(c)) {
    if (bu_now() > end) {
      bu_die("followers did not all connect");
    }
    bu_poll(&dp, 1, 5000000u);
  }
  start = bu_now();
  warm_end = start + (uint64_t)(WARMUP_S * 1e9);
  win_end = warm_end + (uint64_t)(c->seconds * 1e9);
  next = start + tick;
  while (bu_now() < win_end) {
    uint64_t now = bu_now();
    if (now >= next) {
      /* The entries due by now at `rate`, each stamped as appended. */
      uint64_t due = (uint64_t)((double)(now - start) * c->rate / 1e9);
      sp_seq first = seq + 1;
      while (appended < due && seq < c->max_seq) {
        sp_entry e;
        bu_entry(&e, seq + 1, PAYLOAD);
        c->append_ts[seq + 1] = bu_now();
        bu_check(sp_mem_store_append(ms, &e, &seq), "append");
        ++appended;
        if (!sh->first_measured && c->append_ts[seq] >= warm_end) {
          sh->first_measured = seq;
          sh->min_at_start = min_applied(c);
          sh->t_start = bu_now();
          cpu0 = bu_cpu_s();
          wait0 = bu_run_delay_s();
          bu_check(sp_quic_endpoint_get_stats(d.ep, &st0), "stats");
          sum0 = sum_applied(c);
        }
      }
      if (seq >= first) {
        bu_check(sp_handler_notify_new_entries(d.h, first, seq, bu_now()),
                 "notify");
      }
      next += tick;
      if (next < now) {
        next = now + tick; /* fell behind: no burst to catch up */
      }
    }
    if (now - last_prune > 10000000u) {
      bu_check(sp_handler_retention_floor(d.h, &floor), "floor");
      if (floor) {
        bu_check(sp_mem_store_prune(ms, floor), "prune");
      }
      last_prune = now;
    }
    {
      uint64_t t = bu_now();
      if (!c->leader_wakes) {
        /* Send the tick's pushes now, then sleep through to the next. */
        bu_poll(&dp, 1, 0);
        t = bu_now();
        if (next > t) {
          bu_sleep_ns(next - t);
        }
      } else {
        bu_poll(&dp, 1, next > t ? next - t : 0);
      }
    }
  }
  sh->last_measured = seq;
  sh->min_at_end = min_applied(c);
  sh->t_end = bu_now();
  sh->leader_cpu = (bu_cpu_s() - cpu0) / c->seconds;
  sh->leader_wait = (bu_run_delay_s() - wait0) / c->seconds;
  bu_check(sp_quic_endpoint_get_stats(d.ep, &st1), "stats");
  sh->leader_stats.datagrams_sent = st1.datagrams_sent - st0.datagrams_sent;
  sh->leader_stats.datagrams_received =
      st1.datagrams_received - st0.datagrams_received;
  sh->leader_stats.bytes_sent = st1.bytes_sent - st0.bytes_sent;
  sh->leader_stats.send_calls = st1.send_calls - st0.send_calls;
  sh->leader_stats.stream_bytes_received =
      st1.stream_bytes_received - st0.stream_bytes_received;
  sh->window_done = 1;
  end = bu_now() + 60ull * 1000000000u;
  while (min_applied(c) < seq && bu_now() < end) {
    bu_poll(&dp, 1, 1000000u);
  }
  sh->t_drained = bu_now();
  sh->leader_cpu_drained = bu_cpu_s() - cpu0;
  sh->deliveries = sum_applied(c) - sum0;
  sh->drained = 1;
  /* Until every follower process has read its CPU time. */
  end = bu_now() + 5ull * 1000000000u;
  while (!all_cpu_drained(c) && bu_now() < end) {
    bu_poll(&dp, 1, 1000000u);
  }
  sh->stop = 1;
  end = bu_now() + 100000000u;
  while (bu_now() < end) {
    bu_poll(&dp, 1, 10000000u);
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

typedef struct result {
  double p50, p99, p999, max, fcpu, lcpu, fwait, lwait;
  /* CPU per delivery of the leader (fanout_leader_us_delivery, see the
   * top) and of the followers' processes together, microseconds. */
  double lus_delivery, fus_delivery;
  /* The leader's datagrams out and in, UDP payload bytes out and send
   * calls, stream bytes in (the followers' acks and fetches) in the
   * window, per follower per tick. */
  double dg_out, dg_in, bytes_out, calls, stream_in;
  /* Entries/s the slowest follower applied during the window, and how
   * long the last ones took to arrive after it closed. */
  double delivered, drain_s;
  size_t n, missing;
} result;

static void run_once(ctx *c, result *res) {
  pid_t pids[BU_MAX_DEV];
  int p, per = c->followers / c->procs, extra = c->followers % c->procs;
  int next = 1, f;
  uint64_t *all;
  size_t n = 0, missing = 0;
  sp_seq s;
  double fcpu = 0, fwait = 0, fcpu_drained = 0;

  memset((void *)c->sh, 0, sizeof(*c->sh));
  memset(c->cl->board->addr, 0, sizeof(c->cl->board->addr));
  memset(c->append_ts, 0, (c->max_seq + 1) * sizeof(uint64_t));
  memset(c->lat, 0,
         (size_t)c->followers * (c->max_seq + 1) * sizeof(uint32_t));
  pids[0] = bu_spawn(leader_main, c);
  for (p = 0; p < c->procs; ++p) {
    c->first = next;
    c->last = next + per - 1 + (p < extra ? 1 : 0);
    next = c->last + 1;
    pids[p + 1] = bu_spawn(followers_main, c);
  }
  for (p = 0; p <= c->procs; ++p) {
    if (bu_join(pids[p]) != 0) {
      c->sh->stop = 1;
      bu_die("a process of the fan-out failed");
    }
  }
  all = malloc((size_t)c->followers *
               (c->sh->last_measured - c->sh->first_measured + 1) *
               sizeof(*all));
  if (!all || !c->sh->first_measured) {
    bu_die("nothing measured");
  }
  for (f = 1; f <= c->followers; ++f) {
    const uint32_t *row = c->lat + (size_t)(f - 1) * (c->max_seq + 1);
    for (s = c->sh->first_measured; s <= c->sh->last_measured; ++s) {
      if (row[s]) {
        all[n++] = row[s];
      } else {
        ++missing;
      }
    }
    fcpu += c->sh->cpu[f];
    fwait += c->sh->wait[f];
    fcpu_drained += c->sh->cpu_drained[f];
  }
  bu_sort_u64(all, n);
  res->n = n;
  res->missing = missing;
  res->p50 = (double)bu_pct(all, n, 50) / 1e3;
  res->p99 = (double)bu_pct(all, n, 99) / 1e3;
  res->p999 = (double)bu_pct(all, n, 99.9) / 1e3;
  res->max = n ? (double)all[n - 1] / 1e3 : 0;
  res->fcpu = fcpu / c->seconds;
  res->lcpu = c->sh->leader_cpu;
  res->fwait = fwait / c->seconds;
  res->lwait = c->sh->leader_wait;
  res->delivered = (double)(c->sh->min_at_end - c->sh->min_at_start) /
                   ((double)(c->sh->t_end - c->sh->t_start) / 1e9);
  res->drain_s = (double)(c->sh->t_drained - c->sh->t_end) / 1e9;
  if (c->sh->deliveries) {
    res->lus_delivery =
        c->sh->leader_cpu_drained * 1e6 / (double)c->sh->deliveries;
    res->fus_delivery = fcpu_drained * 1e6 / (double)c->sh->deliveries;
  } else {
    res->lus_delivery = res->fus_delivery = 0;
  }
  {
    double ft = (double)c->followers * c->seconds * 1e6 / c->tick_us;
    const sp_quic_stats *ls = &c->sh->leader_stats;
    res->dg_out = (double)ls->datagrams_sent / ft;
    res->dg_in = (double)ls->datagrams_received / ft;
    res->bytes_out = (double)ls->bytes_sent / ft;
    res->calls = (double)ls->send_calls / ft;
    res->stream_in = (double)ls->stream_bytes_received / ft;
  }
  free(all);
}

int main(int argc, char **argv) {
  ctx c;
  int runs = (int)bu_opt(argc, argv, "runs", 3), r;
  double *p50, *p99, *p999, *mx, *lus;

  memset(&c, 0, sizeof(c));
  c.followers = (int)bu_opt(argc, argv, "followers", 64);
  c.procs = (int)bu_opt(argc, argv, "procs", 4);
  c.rate = (int)bu_opt(argc, argv, "rate", 10000);
  c.seconds = (double)bu_opt(argc, argv, "seconds", 5);
  c.tick_us = (int)bu_opt(argc, argv, "tick_us", 1000);
  c.leader_wakes = (int)bu_opt(argc, argv, "leader_wakes", 1);
  if (c.followers < 1 || c.followers >= BU_MAX_DEV || c.procs < 1 ||
      c.procs > c.followers || c.rate < 1 || c.seconds < 1 || runs < 1 ||
      c.tick_us < 50 || c.leader_wakes < 0 || c.leader_wakes > 1) {
    fprintf(stderr, "usage: fanout_bench [followers=N] [procs=N] [rate=N] "
                    "[seconds=N] [runs=N] [tick_us=N] [leader_wakes=0|1]\n");
    return 2;
  }
  c.max_seq = (sp_seq)((c.seconds + WARMUP_S + 1) * c.rate) + 16;
  c.cl = bu_cluster_new(c.followers + 1);
  c.sh = bu_shm(sizeof(*c.sh));
  c.append_ts = bu_shm((c.max_seq + 1) * sizeof(uint64_t));
  c.lat = bu_shm((size_t)c.followers * (c.max_seq + 1) * sizeof(uint32_t));
  p50 = calloc((size_t)runs, sizeof(double));
  p99 = calloc((size_t)runs, sizeof(double));
  p999 = calloc((size_t)runs, sizeof(double));
  mx = calloc((size_t)runs, sizeof(double));
  lus = calloc((size_t)runs, sizeof(double));
  if (!p50 || !p99 || !p999 || !mx || !lus) {
    bu_die("out of memory");
  }
  printf("fanout: %d runs; %d followers in %d processes (one QUIC endpoint "
         "and node each), leader appending %d entries/s of %d B in %d us "
         "ticks%s, %.0f s measured after %.0f s\n",
         runs, c.followers, c.procs, c.rate, PAYLOAD, c.tick_us,
         c.leader_wakes ? "" : " (waking only at ticks)", c.seconds,
         WARMUP_S);
  for (r = 0; r < runs; ++r) {
    result res;
    run_once(&c, &res);
    p50[r] = res.p50;
    p99[r] = res.p99;
    p999[r] = res.p999;
    mx[r] = res.max;
    lus[r] = res.lus_delivery;
    printf("  run %d: p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms "
           "(%zu samples, %zu missing) | slowest follower applied %.0f "
           "entries/s of %d offered, last entry %.2f s after the window | cpu "
           "leader %.0f%% followers %.0f%%; waited for a cpu: leader %.0f%% "
           "followers %.0f%% | cpu per delivery: leader %.2f us followers "
           "%.2f us | leader per follower per tick: datagrams out %.2f in "
           "%.2f, %.0f B out, %.2f send calls, %.1f stream B in\n",
           r + 1, res.p50, res.p99, res.p999, res.max, res.n, res.missing,
           res.delivered, c.rate, res.drain_s, res.lcpu * 100,
           res.fcpu * 100, res.lwait * 100, res.fwait * 100,
           res.lus_delivery, res.fus_delivery, res.dg_out, res.dg_in,
           res.bytes_out, res.calls, res.stream_in);
    if (res.missing) {
      bu_die("%zu entries never reached a follower", res.missing);
    }
  }
  printf("fanout: followers %d p50_ms %.2f p99_ms %.2f p999_ms %.2f max_ms "
         "%.2f p99_ms_max %.2f fanout_leader_us_delivery %.3f\n",
         c.followers, bu_median(p50, (size_t)runs),
         bu_median(p99, (size_t)runs), bu_median(p999, (size_t)runs),
         bu_median(mx, (size_t)runs), bu_max(p99, (size_t)runs),
         bu_median(lus, (size_t)runs));
  return 0;
}
