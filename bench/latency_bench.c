/*
 * latency_bench.c: host append -> follower applied, one entry at a time.
 *
 * Over QUIC, leader and follower in two processes (forked), on 127.0.0.1,
 * in-memory stores.  The leader appends one entry every 1/rate seconds
 * (256-byte payload) and records the append time just before
 * sp_mem_store_append; the follower records the time of the
 * SP_EVENT_ENTRIES_APPLIED event that covers it.  Both are CLOCK_MONOTONIC
 * and written to shared memory, so they compare across the processes.
 *
 * The reference is measured in the same run between the same two
 * processes: half a period after each entry the leader sends a 64-byte UDP
 * datagram from a second socket to an echo socket in the follower
 * process, which sends it straight back from its poll loop; the round trip
 * is timed.  Pings and entries alternate, so both see the same machine,
 * the same wake-ups from idle and the same noise.
 *
 * A third measurement has no network at all: the same append -> applied
 * in one process over the in-memory transport, its clock set from the real
 * clock: the library's own cost (encode, frame, decode, chain check, store
 * apply, events).
 *
 * Every figure is the median over `runs` runs (fresh processes and a fresh
 * connection each run); the first `warmup` entries of a run are not
 * counted.  Summary line:
 *   latency: p50_us A p99_us B p999_us C rtt_p50_us D p50_ratio E
 *            mem_p50_us F mem_p99_us G
 *
 *   latency_bench [runs=5] [samples=2000] [rate=400] [mem_samples=20000]
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

typedef struct shared {
  volatile int follower_ready;
  volatile int stop;
  volatile int echo_port;
  uint64_t append_ts[WARMUP + MAX_SAMPLES + 2];
  uint64_t applied_ts[WARMUP + MAX_SAMPLES + 2];
  uint64_t rtt[WARMUP + MAX_SAMPLES + 2];
} shared;

typedef struct run_ctx {
  bu_cluster *cl;
  shared *sh;
  int samples;
  int rate;
} run_ctx;

/* ---- follower process ---- */

static shared *g_sh;

static int f_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    uint64_t now = bu_now();
    sp_seq s;
    for (s = ev->from_sequence + 1; s <= ev->to_sequence; ++s) { /* (from, to] */
      if (s < WARMUP + MAX_SAMPLES + 2) {
        g_sh->applied_ts[s] = now;
      }
    }
  } else if (ev->type == SP_EVENT_CAUGHT_UP) {
    g_sh->follower_ready = 1;
  }
  return 0;
}

static int follower_main(void *arg) {
  run_ctx *rc = arg;
  sp_events ev = SP_EVENTS_INIT;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d;
  int port, fd;

  g_sh = rc->sh;
  fd = bu_udp_socket(&port);
  ev.on_event = f_event;
  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, rc->cl, 1, NULL, &ev, NULL);
  rc->sh->echo_port = port;
  bu_wait_addrs(rc->cl, 0, 0);
  bu_dev_open(&d, SP_ROLE_FOLLOWER, &vt, NULL);
  while (!rc->sh->stop) {
    int ready;
    uint64_t now = bu_now(), next = sp_quic_endpoint_get_expiry(d.ep);
    uint64_t wait = next <= now ? 0 : next - now;

    /* Capped: look at the stop flag now and then. */
    ready = bu_wait_udp_or_endpoint(fd, d.ep, wait, 20000000u);
    if (ready & BU_UDP_READY) {
      bu_udp_echo(fd);
    }
    now = bu_now();
    if ((ready & BU_EP_READY) || sp_quic_endpoint_get_expiry(d.ep) <= now) {
      bu_check(sp_quic_endpoint_process(d.ep, now), "process");
    }
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  close(fd);
  return 0;
}

/* ---- leader process ---- */

static int leader_main(void *arg) {
  run_ctx *rc = arg;
  shared *sh = rc->sh;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;
  bu_pinger pg;
  uint64_t period, t_entry, t_ping, end;
  int total = WARMUP + rc->samples, entries = 0, port, fd;
  sp_seq seq = 0;

  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, rc->cl, 0, NULL, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  end = bu_now() + 20ull * 1000000000u;
  while (!sh->follower_ready || !sh->echo_port) {
    if (bu_now() > end) {
      bu_die("follower did not connect");
    }
    bu_poll(&dp, 1, 5000000u);
  }
  fd = bu_udp_socket(&port);
  bu_udp_connect(fd, sh->echo_port);
  memset(&pg, 0, sizeof(pg));
  pg.fd = fd;
  pg.rtt = sh->rtt;
  period = 1000000000ull / (uint64_t)rc->rate;
  t_entry = bu_now() + period;
  t_ping = t_entry + period / 2;
  while (entries < total || pg.n < total || pg.out) {
    int ready;
    uint64_t now = bu_now(), next = sp_quic_endpoint_get_expiry(d.ep), w;

    if (entries < total && now >= t_entry) {
      sp_entry e;
      uint64_t t = bu_now();
      bu_entry(&e, seq + 1, PAYLOAD);
      sh->append_ts[seq + 1] = t;
      bu_check(sp_mem_store_append(ms, &e, &seq), "append");
      bu_check(sp_handler_notify_new_entries(d.h, seq, seq, t), "notify");
      bu_check(sp_quic_endpoint_process(d.ep, bu_now()), "process");
      ++entries;
      t_entry += period;
      continue;
    }
    if (pg.n < total && !pg.out && now >= t_ping) {
      bu_ping_send(&pg);
      t_ping += period;
      continue;
    }
    if (entries < total && t_entry < next) {
      next = t_entry;
    }
    if (pg.n < total && !pg.out && t_ping < next) {
      next = t_ping;
    }
    w = next <= now ? 0 : next - now;
    ready = bu_wait_udp_or_endpoint(fd, d.ep, w, 50000000u);
    if (ready & BU_UDP_READY) {
      bu_ping_recv(&pg);
    }
    now = bu_now();
    if ((ready & BU_EP_READY) || sp_quic_endpoint_get_expiry(d.ep) <= now) {
      bu_check(sp_quic_endpoint_process(d.ep, now), "process");
    }
  }
  /* Let the last entries land and their acks come back. */
  end = bu_now() + 2ull * 1000000000u;
  while (!sh->applied_ts[seq] && bu_now() < end) {
    bu_poll(&dp, 1, 1000000u);
  }
  sh->stop = 1;
  end = bu_now() + 50000000u;
  while (bu_now() < end) {
    bu_poll(&dp, 1, 5000000u);
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  close(fd);
  return 0;
}

/* ---- one QUIC run ---- */

typedef struct quic_result {
  double p50, p99, p999, rtt50, rtt99;
  size_t n, lost;
} quic_result;

static void quic_run(bu_cluster *cl, shared *sh, int samples, int rate,
                     quic_result *res) {
  run_ctx rc;
  pid_t f, l;
  uint64_t *lat = calloc((size_t)samples, sizeof(*lat));
  uint64_t *rtt = calloc((size_t)samples, sizeof(*rtt));
  size_t n;

  if (!lat || !rtt) {
    bu_die("out of memory");
  }
  memset(sh, 0, sizeof(*sh));
  memset(cl->board->addr, 0, sizeof(cl->board->addr));
  rc.cl = cl;
  rc.sh = sh;
  rc.samples = samples;
  rc.rate = rate;
  f = bu_spawn(follower_main, &rc);
  l = bu_spawn(leader_main, &rc);
  if (bu_join(l) != 0) {
    sh->stop = 1;
    bu_join(f);
    bu_die("leader process failed");
  }
  if (bu_join(f) != 0) {
    bu_die("follower process failed");
  }
  n = bu_latencies(sh->append_ts, sh->applied_ts, WARMUP + 1, (size_t)samples,
                   lat, &res->lost);
  memcpy(rtt, sh->rtt + WARMUP, (size_t)samples * sizeof(*rtt));
  bu_sort_u64(rtt, (size_t)samples);
  res->n = n;
  res->p50 = (double)bu_pct(lat, n, 50) / 1e3;
  res->p99 = (double)bu_pct(lat, n, 99) / 1e3;
  res->p999 = (double)bu_pct(lat, n, 99.9) / 1e3;
  res->rtt50 = (double)bu_pct(rtt, (size_t)samples, 50) / 1e3;
  res->rtt99 = (double)bu_pct(rtt, (size_t)samples, 99) / 1e3;
  free(lat);
  free(rtt);
}

/* ---- in-memory transport, one process ---- */

static sp_seq g_mem_applied;
static uint64_t g_mem_applied_at;

static int m_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_mem_applied = ev->to_sequence;
    g_mem_applied_at = bu_now();
  }
  return 0;
}

static void mem_step(sp_mem_net *net, sp_node *a, sp_node *b) {
  uint64_t now = bu_now();

  bu_check(sp_mem_net_run(net, now), "sp_mem_net_run");
  if (sp_node_get_expiry(a) <= now) {
    bu_check(sp_node_handle_expiry(a, now), "expiry");
  }
  if (sp_node_get_expiry(b) <= now) {
    bu_check(sp_node_handle_expiry(b, now), "expiry");
  }
}

static void mem_run(bu_cluster *cl, int samples, double *p50, double *p99,
                    double *p999) {
  sp_mem_net *net;
  sp_node *node[2];
  sp_handler *h[2];
  sp_mem_store *st[2];
  sp_registry reg;
  sp_events ev = SP_EVENTS_INIT;
  uint64_t *lat = calloc((size_t)samples, sizeof(*lat));
  sp_seq seq = 0;
  int i;

  if (!lat) {
    bu_die("out of memory");
  }
  ev.on_event = m_event;
  g_mem_applied = 0;
  bu_cluster_registry(cl, &reg);
  bu_check(sp_mem_net_new(&net, NULL, NULL), "sp_mem_net_new");
  for (i = 0; i < 2; ++i) {
    sp_node_config nc;
    sp_transport tr;
    sp_handler_config hc;
    sp_store vt;
    sp_node_config_default(&nc);
    nc.device_id = cl->dev[i];
    nc.seed = (uint64_t)i + 1;
    bu_check(sp_mem_net_add_device(net, &cl->dev[i], &tr), "add device");
    bu_check(sp_node_new(&node[i], &nc, &reg, &ev, &tr, NULL), "node");
    bu_check(sp_mem_net_attach(net, &cl->dev[i], node[i]), "attach");
    bu_check(sp_mem_store_new(&st[i], NULL), "store");
    sp_mem_store_get_vtable(st[i], &vt);
    sp_handler_config_default(&hc);
    hc.library_id = cl->library;
    hc.role = i == 0 ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
    bu_check(sp_handler_new(&h[i], node[i], &hc, &vt, bu_now()), "handler");
  }
  for (i = 0; i < 1000; ++i) {
    mem_step(net, node[0], node[1]);
  }
  for (i = 0; i < WARMUP + samples; ++i) {
    sp_entry e;
    uint64_t t0 = bu_now(), spin = 0;
    bu_entry(&e, seq + 1, PAYLOAD);
    bu_check(sp_mem_store_append(st[0], &e, &seq), "append");
    bu_check(sp_handler_notify_new_entries(h[0], seq, seq, t0), "notify");
    while (g_mem_applied < seq) {
      mem_step(net, node[0], node[1]);
      if (++spin > 1000000) {
        bu_die("in-memory follower stuck at %llu",
               (unsigned long long)g_mem_applied);
      }
    }
    if (i >= WARMUP) {
      lat[i - WARMUP] = g_mem_applied_at - t0;
    }
    /* Deliver the acknowledgement before the next entry (not timed). */
    while (sp_mem_net_get_expiry(net) != SP_TSTAMP_MAX) {
      mem_step(net, node[0], node[1]);
    }
  }
  bu_sort_u64(lat, (size_t)samples);
  *p50 = (double)bu_pct(lat, (size_t)samples, 50) / 1e3;
  *p99 = (double)bu_pct(lat, (size_t)samples, 99) / 1e3;
  *p999 = (double)bu_pct(lat, (size_t)samples, 99.9) / 1e3;
  for (i = 1; i >= 0; --i) {
    sp_handler_del(h[i]);
    sp_node_del(node[i]);
  }
  sp_mem_net_del(net);
  sp_mem_store_del(st[0]);
  sp_mem_store_del(st[1]);
  free(lat);
}

int main(int argc, char **argv) {
  int runs = (int)bu_opt(argc, argv, "runs", 5);
  int samples = (int)bu_opt(argc, argv, "samples", 2000);
  int rate = (int)bu_opt(argc, argv, "rate", 400);
  int mem_samples = (int)bu_opt(argc, argv, "mem_samples", 20000);
  double *p50, *p99, *p999, *rtt, *ratio, *m50, *m99, *m999;
  bu_cluster *cl;
  shared *sh;
  int r;

  if (runs < 1 || samples < 100 || samples > MAX_SAMPLES || rate < 1 ||
      rate > 20000 || mem_samples < 100) {
    fprintf(stderr, "usage: latency_bench [runs=N] [samples=N] [rate=N] "
                    "[mem_samples=N]\n");
    return 2;
  }
  p50 = calloc((size_t)runs, sizeof(double));
  p99 = calloc((size_t)runs, sizeof(double));
  p999 = calloc((size_t)runs, sizeof(double));
  rtt = calloc((size_t)runs, sizeof(double));
  ratio = calloc((size_t)runs, sizeof(double));
  m50 = calloc((size_t)runs, sizeof(double));
  m99 = calloc((size_t)runs, sizeof(double));
  m999 = calloc((size_t)runs, sizeof(double));
  cl = bu_cluster_new(2);
  sh = bu_shm(sizeof(*sh));
  printf("latency: %d runs; each: %d entries of %d B at %d/s over QUIC "
         "(two processes) interleaved with %d UDP pings of %d B; then %d "
         "entries over the in-memory transport (one process)\n",
         runs, samples, PAYLOAD, rate, samples, BU_PING_LEN, mem_samples);
  for (r = 0; r < runs; ++r) {
    quic_result q;
    quic_run(cl, sh, samples, rate, &q);
    mem_run(cl, mem_samples, &m50[r], &m99[r], &m999[r]);
    p50[r] = q.p50;
    p99[r] = q.p99;
    p999[r] = q.p999;
    rtt[r] = q.rtt50;
    ratio[r] = q.p50 / q.rtt50;
    printf("  run %d: quic p50 %7.1f us  p99 %7.1f us  p99.9 %7.1f us "
           "(%zu samples, %zu missing) | udp rtt p50 %6.1f us p99 %6.1f us "
           "| ratio %.2f | in-memory p50 %5.1f us p99 %5.1f us p99.9 %5.1f "
           "us\n",
           r + 1, q.p50, q.p99, q.p999, q.n, q.lost, q.rtt50, q.rtt99,
           ratio[r], m50[r], m99[r], m999[r]);
    if (q.lost) {
      bu_die("%zu entries were never applied", q.lost);
    }
  }
  printf("latency: p50_us %.1f p99_us %.1f p999_us %.1f rtt_p50_us %.1f "
         "p50_ratio %.2f mem_p50_us %.1f mem_p99_us %.1f mem_p999_us %.1f\n",
         bu_median(p50, (size_t)runs), bu_median(p99, (size_t)runs),
         bu_median(p999, (size_t)runs), bu_median(rtt, (size_t)runs),
         bu_median(ratio, (size_t)runs), bu_median(m50, (size_t)runs),
         bu_median(m99, (size_t)runs), bu_median(m999, (size_t)runs));
  bu_shm_free(sh, sizeof(*sh));
  bu_cluster_del(cl);
  return 0;
}
