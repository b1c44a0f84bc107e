/*
 * idle_bench.c: bytes on the wire while nothing happens.
 *
 * A leader and a follower in two processes over QUIC on 127.0.0.1, every
 * setting at its default (heartbeat_interval 30 s, QUIC idle timeout
 * 180 s).  The follower catches up with 1000 entries, a few live entries
 * are pushed, the link settles for 2 s, then both endpoints' counters
 * (sp_quic_endpoint_get_stats) are read at the start and the end of a
 * `seconds`-long idle window (60 s, two heartbeat intervals: each side
 * sends exactly two Heartbeats in it, wherever the window starts).
 *
 * Reported: UDP payload bytes and datagrams each way (and with 28 bytes of
 * IPv4 + UDP header per datagram), the stream bytes each node handed to its
 * QUIC stream (stream_bytes_sent) and what they are made of: a whole number
 * of Heartbeat frames (sp_msg_encoded_len of each side's Heartbeat, with
 * the features element the stream negotiated) and nothing else.  Bytes per 5 minutes = window bytes x 300 / seconds: exact
 * when the window is a whole number of heartbeat intervals, since the
 * pattern repeats every interval.
 *
 * Summary line:
 *   idle: seconds S udp_bytes B per_5min P heartbeats H stream_bytes T
 *         heartbeat_only Y|N
 *
 *   idle_bench [seconds=60]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define PAYLOAD 256

typedef struct shared {
  volatile int ready;
  volatile int phase; /* 0 setup, 1 window open, 2 window closed, 3 stop */
  volatile sp_seq applied;
  volatile sp_seq latest;
  sp_quic_stats st[2][2]; /* [device][start/end] */
} shared;

typedef struct ctx {
  bu_cluster *cl;
  shared *sh;
} ctx;

static shared *g_sh;

static int f_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_sh->applied = ev->to_sequence;
  }
  return 0;
}

/* Run device `idx` until the orchestrator says stop, taking snapshots. */
static void serve(bu_dev *d, shared *sh, int idx) {
  bu_dev *dp = d;
  int seen = 0;

  while (sh->phase != 3) {
    if (sh->phase != seen) {
      if (sh->phase == 1 || sh->phase == 2) {
        sp_quic_endpoint_get_stats(d->ep, &sh->st[idx][sh->phase - 1]);
      }
      seen = sh->phase;
    }
    /* Wake at least every 100 ms to see the phase: waking costs nothing
     * on the wire. */
    bu_poll(&dp, 1, 100000000u);
  }
}

static int follower_main(void *arg) {
  ctx *c = arg;
  sp_events ev = SP_EVENTS_INIT;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d;

  g_sh = c->sh;
  ev.on_event = f_event;
  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, c->cl, 1, NULL, &ev, NULL);
  bu_wait_addrs(c->cl, 0, 0);
  bu_dev_open(&d, SP_ROLE_FOLLOWER, &vt, NULL);
  serve(&d, c->sh, 1);
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

static int leader_main(void *arg) {
  ctx *c = arg;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;
  uint64_t end;
  int k;

  bu_check(sp_mem_store_new(&ms, NULL), "store");
  c->sh->latest = bu_mem_append(ms, 1000, PAYLOAD);
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, c->cl, 0, NULL, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  end = bu_now() + 30ull * 1000000000u;
  while (c->sh->applied < c->sh->latest) {
    if (bu_now() > end) {
      bu_die("follower did not catch up");
    }
    bu_poll(&dp, 1, 5000000u);
  }
  for (k = 0; k < 5; ++k) {
    sp_seq first = c->sh->latest + 1;
    c->sh->latest = bu_mem_append(ms, 1, PAYLOAD);
    bu_check(sp_handler_notify_new_entries(d.h, first, c->sh->latest,
                                           bu_now()),
             "notify");
    end = bu_now() + 20000000u;
    while (bu_now() < end) {
      bu_poll(&dp, 1, 5000000u);
    }
  }
  while (c->sh->applied < c->sh->latest) {
    bu_poll(&dp, 1, 5000000u);
  }
  c->sh->ready = 1;
  serve(&d, c->sh, 0);
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

/* The Heartbeat each side sends once the stream negotiated features (both
 * advertise at least SP_FEATURE_CLAIMS, so every Heartbeat after the
 * first carries the features element; a leader adds its max_frame): the
 * handler's own encoding, so the figure follows the protocol. */
static size_t heartbeat_len(const bu_cluster *cl, sp_role role, sp_seq seq) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = cl->library;
  m.epoch = 1;
  m.u.heartbeat.role = role;
  m.u.heartbeat.current_sequence = seq;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  m.u.heartbeat.max_frame = role == SP_ROLE_LEADER ? SP_MAX_FRAME_DEFAULT : 0;
  return sp_msg_encoded_len(&m);
}

int main(int argc, char **argv) {
  long seconds = bu_opt(argc, argv, "seconds", 60);
  bu_cluster *cl;
  shared *sh;
  ctx c;
  pid_t l, f;
  uint64_t end, udp[2], dg[2], sb[2], total, total_dg;
  size_t hb[2];
  int i, only = 1;
  unsigned long beats = 0;

  if (seconds < 1) {
    fprintf(stderr, "usage: idle_bench [seconds=N]\n");
    return 2;
  }
  cl = bu_cluster_new(2);
  sh = bu_shm(sizeof(*sh));
  c.cl = cl;
  c.sh = sh;
  f = bu_spawn(follower_main, &c);
  l = bu_spawn(leader_main, &c);
  end = bu_now() + 60ull * 1000000000u;
  while (!sh->ready) {
    if (bu_now() > end) {
      bu_die("setup did not finish");
    }
    bu_sleep_ns(10000000u);
  }
  bu_sleep_ns(2000000000u);
  sh->phase = 1;
  bu_sleep_ns((uint64_t)seconds * 1000000000u);
  sh->phase = 2;
  bu_sleep_ns(300000000u);
  sh->phase = 3;
  if (bu_join(l) != 0 || bu_join(f) != 0) {
    bu_die("a process failed");
  }
  hb[0] = heartbeat_len(cl, SP_ROLE_LEADER, sh->latest);
  hb[1] = heartbeat_len(cl, SP_ROLE_FOLLOWER, sh->applied);
  printf("idle: %ld s with default settings (heartbeat 30 s) after a "
         "catch-up of %llu entries\n",
         seconds, (unsigned long long)sh->latest);
  total = total_dg = 0;
  for (i = 0; i < 2; ++i) {
    udp[i] = sh->st[i][1].bytes_sent - sh->st[i][0].bytes_sent;
    dg[i] = sh->st[i][1].datagrams_sent - sh->st[i][0].datagrams_sent;
    sb[i] = sh->st[i][1].stream_bytes_sent - sh->st[i][0].stream_bytes_sent;
    total += udp[i];
    total_dg += dg[i];
    if (sb[i] % hb[i] != 0) {
      only = 0;
    }
    beats += (unsigned long)(sb[i] / hb[i]);
    printf("  %s: %llu UDP payload bytes in %llu datagrams; stream bytes "
           "%llu = %llu Heartbeat frames of %zu bytes%s\n",
           i ? "follower" : "leader  ", (unsigned long long)udp[i],
           (unsigned long long)dg[i], (unsigned long long)sb[i],
           (unsigned long long)(sb[i] / hb[i]), hb[i],
           sb[i] % hb[i] ? " (plus other bytes!)" : "");
  }
  printf("  both ways: %llu bytes in %llu datagrams (%llu with IPv4 + UDP "
         "headers); per 5 minutes: %.0f bytes (%.0f with headers)\n",
         (unsigned long long)total, (unsigned long long)total_dg,
         (unsigned long long)(total + 28 * total_dg),
         (double)total * 300.0 / (double)seconds,
         (double)(total + 28 * total_dg) * 300.0 / (double)seconds);
  printf("idle: seconds %ld udp_bytes %llu per_5min %.0f heartbeats %lu "
         "stream_bytes %llu heartbeat_only %s\n",
         seconds, (unsigned long long)total,
         (double)total * 300.0 / (double)seconds, beats,
         (unsigned long long)(sb[0] + sb[1]), only ? "Y" : "N");
  bu_shm_free(sh, sizeof(*sh));
  bu_cluster_del(cl);
  return 0;
}
