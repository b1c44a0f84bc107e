/*
 * sp_sim_scale.c: the leader's work as its followers go 10 -> 100 -> 1000
 * (issue 15 item 5).  Opt-in: built with the tests, never run by ctest.
 *
 * One leader, N followers, 10 libraries (every follower a member of each),
 * on the in-memory network with a simulated clock, for a simulated hour:
 * an entry appended on the leader at a steady rate (the libraries in
 * turn), jitter on some deliveries, a few torn streams, connections cut
 * and followers restarted at a rate per follower.  The outcome is
 * deterministic for a seed (--seed); only the CPU figures vary.
 *
 * The leader's work is the thread CPU time spent inside the calls into
 * its node (every sp_node_* entry point the network or this loop makes,
 * and sp_handler_notify_new_entries), taken with the linker's --wrap
 * around those symbols so that the network's own work is not counted,
 * less the simulated network's sends made inside them (timed_send).
 * Beside it, a deterministic count: the node's `visits` (records,
 * sessions and index slots its lookups and walks looked at), plus calls
 * into the leader, plus the bytes it sent.
 *
 * At the end every follower must hold the leader's log of every library
 * (the same chain hash at the same latest sequence) and have applied each
 * entry exactly once (ENTRIES_APPLIED events cover each sequence once):
 * exit 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sync_protocol/sync_protocol.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/mem_transport.h"
#include "sp_core.h" /* node->visits */

#define NLIBS 10
#define MAXDEV 1001

/* ---- timing the leader's entry points ---- */

typedef struct lwork {
  uint64_t ns;     /* leader thread CPU inside its entry points */
  uint64_t calls;
  uint64_t notify_ns;
  uint64_t notifies;
  uint64_t bytes;  /* what the leader sent */
  uint64_t kind_ns[6]; /* by entry point (KIND_*) */
  uint64_t kind_calls[6];
} lwork;

enum { K_OPENED, K_DATA, K_WRITABLE, K_CLOSED, K_GET_EXPIRY, K_EXPIRE };
static const char *const kind_name[6] = {
    "opened", "data", "writable", "closed", "get_expiry", "handle_expiry"};

static sp_node *g_leader;
static lwork g_work;
static int g_depth;
static uint64_t g_overhead; /* one empty start/stop pair, subtracted */
/* The simulated network's sends, taken out of the leader's current window
 * and counted over the run (see timed_send). */
static uint64_t g_net_ns, g_net_total;

/* Marks the nodes called into since the loop last looked at their timers. */
static void mark_dirty(sp_node *node);

static uint64_t cpu_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t t_start(const sp_node *node) {
  if (node != g_leader || g_depth++ > 0) {
    return 0;
  }
  return cpu_ns();
}

static void t_stop_kind(const sp_node *node, uint64_t t0, int kind) {
  uint64_t d;

  if (node != g_leader || --g_depth > 0) {
    return;
  }
  d = cpu_ns() - t0;
  d = d > g_overhead + g_net_ns ? d - g_overhead - g_net_ns : 0;
  g_net_total += g_net_ns;
  g_net_ns = 0;
  g_work.ns += d;
  g_work.calls++;
  if (kind >= 0) {
    g_work.kind_ns[kind] += d;
    g_work.kind_calls[kind]++;
  }
}

static void t_stop(const sp_node *node, uint64_t t0) {
  t_stop_kind(node, t0, -1);
}

int __real_sp_node_stream_opened(sp_node *, uint64_t, const sp_uuid *,
                                 sp_tstamp);
int __real_sp_node_stream_data(sp_node *, uint64_t, const sp_uuid *,
                               const uint8_t *, size_t, sp_tstamp);
int __real_sp_node_stream_writable(sp_node *, uint64_t, const sp_uuid *,
                                   sp_tstamp);
int __real_sp_node_stream_closed(sp_node *, uint64_t, const sp_uuid *, int,
                                 sp_tstamp);
sp_tstamp __real_sp_node_get_expiry(const sp_node *);
int __real_sp_node_handle_expiry(sp_node *, sp_tstamp);
int __wrap_sp_node_stream_opened(sp_node *, uint64_t, const sp_uuid *,
                                 sp_tstamp);
int __wrap_sp_node_stream_data(sp_node *, uint64_t, const sp_uuid *,
                               const uint8_t *, size_t, sp_tstamp);
int __wrap_sp_node_stream_writable(sp_node *, uint64_t, const sp_uuid *,
                                   sp_tstamp);
int __wrap_sp_node_stream_closed(sp_node *, uint64_t, const sp_uuid *, int,
                                 sp_tstamp);
sp_tstamp __wrap_sp_node_get_expiry(const sp_node *);
int __wrap_sp_node_handle_expiry(sp_node *, sp_tstamp);

int __wrap_sp_node_stream_opened(sp_node *node, uint64_t id,
                                 const sp_uuid *peer, sp_tstamp now) {
  uint64_t t0 = t_start(node);
  int rv = __real_sp_node_stream_opened(node, id, peer, now);

  t_stop_kind(node, t0, K_OPENED);
  mark_dirty(node);
  return rv;
}

int __wrap_sp_node_stream_data(sp_node *node, uint64_t id,
                               const sp_uuid *peer, const uint8_t *data,
                               size_t len, sp_tstamp now) {
  uint64_t t0 = t_start(node);
  int rv = __real_sp_node_stream_data(node, id, peer, data, len, now);

  t_stop_kind(node, t0, K_DATA);
  mark_dirty(node);
  return rv;
}

int __wrap_sp_node_stream_writable(sp_node *node, uint64_t id,
                                   const sp_uuid *peer, sp_tstamp now) {
  uint64_t t0 = t_start(node);
  int rv = __real_sp_node_stream_writable(node, id, peer, now);

  t_stop_kind(node, t0, K_WRITABLE);
  mark_dirty(node);
  return rv;
}

int __wrap_sp_node_stream_closed(sp_node *node, uint64_t id,
                                 const sp_uuid *peer, int reason,
                                 sp_tstamp now) {
  uint64_t t0 = t_start(node);
  int rv = __real_sp_node_stream_closed(node, id, peer, reason, now);

  t_stop_kind(node, t0, K_CLOSED);
  mark_dirty(node);
  return rv;
}

sp_tstamp __wrap_sp_node_get_expiry(const sp_node *node) {
  uint64_t t0 = t_start(node);
  sp_tstamp t = __real_sp_node_get_expiry(node);

  t_stop_kind(node, t0, K_GET_EXPIRY);
  return t;
}

int __wrap_sp_node_handle_expiry(sp_node *node, sp_tstamp now) {
  uint64_t t0 = t_start(node);
  int rv = __real_sp_node_handle_expiry(node, now);

  t_stop_kind(node, t0, K_EXPIRE);
  mark_dirty(node);
  return rv;
}

/* ---- the simulated network's share ----
 *
 * The leader's sends run the in-memory network inside its entry points
 * (a copy and a push on one event heap for the whole cluster, which grows
 * with the followers): not the leader's work.  Every send the leader makes
 * is timed on the monotonic clock (a vDSO read, ~20 ns, where the thread
 * CPU clock is a system call of ~500 ns) and taken out of the leader's
 * window, with the two clock reads it added.  A send that took longer than
 * NET_PREEMPTED was preempted: it is not subtracted (the CPU clock did not
 * run meanwhile), which can only overcharge the leader. */
#define NET_PREEMPTED (50 * 1000u)

static sp_ssize (*g_real_send)(uint64_t, const uint8_t *, size_t, void *);
static uint64_t g_mono_read; /* one monotonic clock read */

static uint64_t mono_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static sp_ssize timed_send(uint64_t id, const uint8_t *data, size_t len,
                           void *ud) {
  uint64_t t0, d;
  sp_ssize rv;

  if (g_depth == 0) {
    return g_real_send(id, data, len, ud);
  }
  t0 = mono_ns();
  rv = g_real_send(id, data, len, ud);
  d = mono_ns() - t0;
  /* d holds the send and one clock read; the window holds both reads. */
  if (d < NET_PREEMPTED) {
    g_net_ns += d + g_mono_read;
  }
  return rv;
}

/* ---- the cluster ---- */

typedef struct dev {
  int index;
  sp_uuid id;
  sp_transport tr;
  sp_node *node;
  sp_handler *h[NLIBS];
  sp_mem_store *store[NLIBS];
  /* Sequences covered by ENTRIES_APPLIED, per library (exactly once). */
  uint64_t applied[NLIBS];
  sp_tstamp exp;  /* the node's expiry when last asked */
  int dirty;      /* called into since */
  int down;       /* crashed, boots at up_at */
  sp_tstamp up_at;
} dev;

typedef struct sim {
  int n; /* followers; device 0 leads */
  dev *d;
  sp_uuid lib[NLIBS];
  sp_mem_net *net;
  sp_tstamp now;
  uint64_t rng;
  int fatal;
  /* fault counters (deterministic) */
  long jittered, torn, cuts, restarts;
  uint64_t deliveries; /* entries applied at a follower (all libraries) */
  int faults_on;
} sim;

static sim *g_sim;

static uint64_t rnd(sim *s) {
  /* xorshift64*: deterministic for a seed. */
  s->rng ^= s->rng >> 12;
  s->rng ^= s->rng << 25;
  s->rng ^= s->rng >> 27;
  return s->rng * 2685821657736338717ULL;
}

static int dev_of(const sim *s, const sp_uuid *id) {
  int i;

  if (id->bytes[0] != 0xd0) {
    return -1;
  }
  i = (id->bytes[14] << 8 | id->bytes[15]) - 1;
  return i >= 0 && i <= s->n ? i : -1;
}

static int lib_of(const sim *s, const sp_uuid *lib) {
  int l = lib->bytes[15] - 1;

  return l >= 0 && l < NLIBS && sp_uuid_equal(&s->lib[l], lib) ? l : -1;
}

/* Node pointer -> device: an open-addressing table, rebuilt on restarts. */
#define NODE_SLOTS 4096
static sp_node *g_slot_node[NODE_SLOTS];
static int g_slot_dev[NODE_SLOTS];

static size_t node_hash(const sp_node *node) {
  uint64_t x = (uint64_t)(uintptr_t)node;

  x ^= x >> 17;
  x *= 0x9e3779b97f4a7c15ULL;
  return (size_t)(x >> 40) & (NODE_SLOTS - 1);
}

static void rebuild_nodes(sim *s) {
  int i;

  memset(g_slot_node, 0, sizeof(g_slot_node));
  for (i = 0; i <= s->n; ++i) {
    size_t k;
    if (!s->d[i].node) {
      continue;
    }
    for (k = node_hash(s->d[i].node); g_slot_node[k];
         k = (k + 1) & (NODE_SLOTS - 1)) {
    }
    g_slot_node[k] = s->d[i].node;
    g_slot_dev[k] = i;
  }
}

static void mark_dirty(sp_node *node) {
  size_t k;

  for (k = node_hash(node); g_slot_node[k]; k = (k + 1) & (NODE_SLOTS - 1)) {
    if (g_slot_node[k] == node) {
      g_sim->d[g_slot_dev[k]].dirty = 1;
      return;
    }
  }
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  sim *s = ud;

  *is_member = lib_of(s, lib) >= 0 && dev_of(s, device) >= 0;
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  sim *s = ud;

  if (lib_of(s, lib) < 0) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = s->d[0].id;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  sim *s = ud;
  size_t i, n = (size_t)s->n + 1;

  (void)lib;
  for (i = 0; i < n && i < cap; ++i) {
    out[i] = s->d[i].id;
  }
  *count = n;
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  dev *d = ud;
  int l;

  if (ev->type == SP_EVENT_ENTRIES_APPLIED &&
      (l = lib_of(g_sim, &ev->library_id)) >= 0) {
    d->applied[l] += ev->to_sequence - ev->from_sequence; /* (from, to] */
    g_sim->deliveries += ev->to_sequence - ev->from_sequence;
  }
  return 0;
}

static int fault(const sp_mem_delivery *dl, sp_mem_verdict *v, void *ud) {
  sim *s = ud;
  uint64_t r;

  if (sp_uuid_equal(&dl->from, &s->d[0].id)) {
    g_work.bytes += dl->len;
  }
  if (!s->faults_on) {
    return 0;
  }
  r = rnd(s) % 100000;
  if (r < 1000) { /* 1 %: late by up to 200 ms, in order */
    v->delay = (sp_duration)(rnd(s) % 200) * SP_MILLISECONDS;
    s->jittered++;
  } else if (r < 1002) { /* 2e-5: bytes lost, the stream is torn */
    v->action = SP_MEM_DROP;
    s->torn++;
  }
  return 0;
}

static int boot(sim *s, int i) {
  dev *d = &s->d[i];
  sp_node_config cfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  int l, rv;

  sp_node_config_default(&cfg);
  cfg.device_id = d->id;
  cfg.seed = s->rng * 1000003u + (uint64_t)i;
  reg.user_data = s;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  ev.user_data = d;
  ev.on_event = on_event;
  rv = sp_node_new(&d->node, &cfg, &reg, &ev, &d->tr, NULL);
  if (rv == 0) {
    rv = sp_mem_net_attach(s->net, &d->id, d->node);
  }
  for (l = 0; rv == 0 && l < NLIBS; ++l) {
    sp_handler_config hc;
    sp_store st;
    sp_handler_config_default(&hc);
    hc.library_id = s->lib[l];
    hc.role = i == 0 ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
    hc.epoch = 1;
    sp_mem_store_get_vtable(d->store[l], &st);
    if (i == 0 && getenv("SCALE_NO_KEEP")) {
      st.save_follower_ack = NULL;
      st.load_follower_acks = NULL;
    }
    rv = sp_handler_new(&d->h[l], d->node, &hc, &st, s->now);
  }
  if (i == 0) {
    g_leader = d->node;
  }
  d->down = 0;
  d->dirty = 1;
  rebuild_nodes(s);
  return rv;
}

static void crash(sim *s, int i, int silently) {
  dev *d = &s->d[i];
  int l;

  if (silently) {
    sp_mem_net_vanish(s->net, &d->id);
  } else {
    sp_mem_net_detach(s->net, &d->id);
  }
  sp_node_del(d->node);
  d->node = NULL;
  for (l = 0; l < NLIBS; ++l) {
    d->h[l] = NULL;
  }
  d->down = 1;
  rebuild_nodes(s);
}

static int sim_init(sim *s, int n, uint64_t seed) {
  sp_mem_net_config nc;
  int i, l, rv;

  memset(s, 0, sizeof(*s));
  g_sim = s;
  s->n = n;
  s->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
  s->now = 1 * SP_SECONDS;
  s->d = calloc((size_t)n + 1, sizeof(*s->d));
  if (!s->d) {
    return SP_ERR_NOMEM;
  }
  for (l = 0; l < NLIBS; ++l) {
    s->lib[l].bytes[0] = 0x11;
    s->lib[l].bytes[15] = (uint8_t)(l + 1);
  }
  sp_mem_net_config_default(&nc);
  nc.latency = 5 * SP_MILLISECONDS;
  nc.fault = fault;
  nc.fault_user_data = s;
  rv = sp_mem_net_new(&s->net, &nc, NULL);
  if (rv != 0) {
    return rv;
  }
  sp_mem_net_run(s->net, s->now);
  for (i = 0; i <= n; ++i) {
    dev *d = &s->d[i];
    d->index = i;
    d->id.bytes[0] = 0xd0;
    d->id.bytes[14] = (uint8_t)((i + 1) >> 8);
    d->id.bytes[15] = (uint8_t)(i + 1);
    for (l = 0; l < NLIBS; ++l) {
      if ((rv = sp_mem_store_new(&d->store[l], NULL)) != 0) {
        return rv;
      }
    }
    if ((rv = sp_mem_net_add_device(s->net, &d->id, &d->tr)) != 0) {
      return rv;
    }
    if (i == 0) {
      g_real_send = d->tr.send;
      d->tr.send = timed_send;
    }
    if ((rv = boot(s, i)) != 0) {
      return rv;
    }
  }
  return 0;
}

static void sim_free(sim *s) {
  int i, l;

  for (i = 0; i <= s->n; ++i) {
    if (s->d[i].node) {
      sp_mem_net_detach(s->net, &s->d[i].id);
      sp_node_del(s->d[i].node);
    }
    for (l = 0; l < NLIBS; ++l) {
      sp_mem_store_del(s->d[i].store[l]);
    }
  }
  sp_mem_net_del(s->net);
  free(s->d);
  g_leader = NULL;
  memset(g_slot_node, 0, sizeof(g_slot_node));
}

static void note(sim *s, int rv) {
  if (rv != 0 && sp_err_is_fatal(rv) && !s->fatal) {
    s->fatal = rv;
    fprintf(stderr, "fatal %s at %llu ms\n", sp_err_name(rv),
            (unsigned long long)(s->now / SP_MILLISECONDS));
  }
}

static void append(sim *s, int l, uint64_t k) {
  uint8_t data[100];
  sp_entry e;
  sp_seq seq = 0;
  uint64_t t0;
  size_t i;
  int rv;

  memset(&e, 0, sizeof(e));
  e.device_id = s->d[0].id;
  e.timestamp_ms = 1700000000000ULL + k;
  e.model_type = "file_path";
  e.model_type_len = 9;
  e.record_id.bytes[0] = (uint8_t)k;
  e.record_id.bytes[1] = (uint8_t)(k >> 8);
  e.change_type = SP_CHANGE_INSERT;
  e.version = 1;
  for (i = 0; i < sizeof(data); ++i) {
    data[i] = (uint8_t)(k * 31 + i);
  }
  e.data = data;
  e.data_len = sizeof(data);
  if (sp_mem_store_append(s->d[0].store[l], &e, &seq) != 0) {
    abort();
  }
  t0 = t_start(g_leader);
  rv = sp_handler_notify_new_entries(s->d[0].h[l], seq, seq, s->now);
  if (g_depth == 1) {
    uint64_t d = cpu_ns() - t0;
    g_work.notify_ns +=
        d > g_overhead + g_net_ns ? d - g_overhead - g_net_ns : 0;
    g_work.notifies++;
  }
  t_stop(g_leader, t0);
  note(s, rv);
}

/* One tick of the host loop: the network, then every node whose timers
 * are due or that was called into (its expiry may have moved). */
static void tick(sim *s, sp_tstamp now) {
  int i;

  s->now = now;
  note(s, sp_mem_net_run(s->net, now));
  for (i = 0; i <= s->n; ++i) {
    dev *d = &s->d[i];
    if (!d->node) {
      if (d->down && d->up_at <= now) {
        note(s, boot(s, i));
      }
      continue;
    }
    if (d->exp <= now) {
      note(s, sp_node_handle_expiry(d->node, now));
      d->dirty = 1;
    }
    if (d->dirty) {
      d->dirty = 0;
      d->exp = sp_node_get_expiry(d->node);
    }
  }
}

static void faults(sim *s, uint64_t *acc) {
  /* Each follower: its connection cut once an hour and a restart every
   * other hour, on average. */
  *acc += (uint64_t)s->n;
  while (*acc >= 3600) {
    int f = 1 + (int)(rnd(s) % (uint64_t)s->n);
    uint64_t r = rnd(s) % 3;
    *acc -= 3600;
    if (s->d[f].down) {
      continue;
    }
    if (r < 2) {
      sp_mem_net_cut(s->net, &s->d[0].id, &s->d[f].id);
      s->cuts++;
    } else {
      crash(s, f, rnd(s) % 4 == 0);
      s->d[f].up_at = s->now + (sp_duration)(1 + rnd(s) % 30) * SP_SECONDS;
      s->restarts++;
    }
  }
}

typedef struct result {
  int n;
  double per_delivery_ns, per_notify_ns, per_follower_s_ns;
  double units_per_delivery, bytes_per_delivery;
  double net_ns; /* the simulated network's cost, not in per_delivery_ns */
  uint64_t deliveries, notifies, entries;
  double wall_s;
  int violations;
} result;

static int converged(sim *s) {
  int i, l;

  for (l = 0; l < NLIBS; ++l) {
    sp_store st;
    sp_log_bounds b;
    sp_mem_store_get_vtable(s->d[0].store[l], &st);
    if (st.bounds(&b, st.user_data) != 0) {
      return 0;
    }
    for (i = 1; i <= s->n; ++i) {
      if (s->d[i].applied[l] != b.latest) {
        return 0;
      }
    }
  }
  return 1;
}

static int check(sim *s) {
  int i, l, bad = 0;

  for (l = 0; l < NLIBS; ++l) {
    sp_entry e;
    uint8_t lh[SP_HASH_LEN], fh[SP_HASH_LEN];
    sp_store st;
    sp_log_bounds b;
    sp_mem_store_get_vtable(s->d[0].store[l], &st);
    if (st.bounds(&b, st.user_data) != 0 ||
        sp_mem_store_get(s->d[0].store[l], b.latest, &e, lh) != 0) {
      return 1;
    }
    for (i = 1; i <= s->n; ++i) {
      sp_store_state fs;
      sp_store fst;
      sp_mem_store_get_vtable(s->d[i].store[l], &fst);
      if (fst.state(&fs, fst.user_data) != 0 || fs.applied != b.latest ||
          sp_mem_store_get(s->d[i].store[l], b.latest, &e, fh) != 0 ||
          memcmp(lh, fh, SP_HASH_LEN) != 0 ||
          sp_mem_store_count(s->d[i].store[l]) != b.latest) {
        if (bad++ < 5) {
          fprintf(stderr, "follower %d lib %d: applied %llu of %llu\n", i, l,
                  (unsigned long long)fs.applied,
                  (unsigned long long)b.latest);
        }
      } else if (s->d[i].applied[l] != b.latest) {
        if (bad++ < 5) {
          fprintf(stderr, "follower %d lib %d: %llu applied for %llu\n", i,
                  l, (unsigned long long)s->d[i].applied[l],
                  (unsigned long long)b.latest);
        }
      }
    }
  }
  return bad;
}

static int run(int n, uint64_t seed, sp_duration hour, sp_duration every,
               sp_duration step, result *out) {
  sim s;
  sp_tstamp t, end, next_append, next_fault;
  uint64_t acc = 0, k = 0, visits0;
  struct timespec w0, w1;
  int rv, i;

  clock_gettime(CLOCK_MONOTONIC, &w0);
  memset(&g_work, 0, sizeof(g_work));
  rv = sim_init(&s, n, seed);
  if (rv != 0) {
    fprintf(stderr, "init: %s\n", sp_err_name(rv));
    return 1;
  }
  /* Everyone connects and syncs an empty log first: not measured. */
  for (t = s.now + step; t < 60 * SP_SECONDS; t += step) {
    tick(&s, t);
  }
  memset(&g_work, 0, sizeof(g_work));
  g_net_total = 0;
  s.deliveries = 0;
  visits0 = g_leader->visits;
  s.faults_on = 1;
  end = s.now + hour;
  next_append = s.now + every;
  next_fault = s.now + SP_SECONDS;
  for (t = s.now + step; t <= end && !s.fatal; t += step) {
    while (next_append <= t) {
      append(&s, (int)(k % NLIBS), k);
      ++k;
      next_append += every;
    }
    if (next_fault <= t) {
      faults(&s, &acc);
      next_fault += SP_SECONDS;
    }
    tick(&s, t);
  }
  out->net_ns =
      s.deliveries ? (double)g_net_total / (double)s.deliveries : 0;
  out->n = n;
  out->deliveries = s.deliveries;
  out->notifies = g_work.notifies;
  out->entries = k;
  out->per_delivery_ns =
      s.deliveries ? (double)g_work.ns / (double)s.deliveries : 0;
  out->per_notify_ns =
      g_work.notifies ? (double)g_work.notify_ns / (double)g_work.notifies
                      : 0;
  out->per_follower_s_ns = (double)g_work.ns / (double)n /
                           ((double)hour / (double)SP_SECONDS);
  out->units_per_delivery =
      s.deliveries ? (double)(g_leader->visits - visits0 + g_work.calls) /
                         (double)s.deliveries
                   : 0;
  out->bytes_per_delivery =
      s.deliveries ? (double)g_work.bytes / (double)s.deliveries : 0;
  /* Where the leader's time went, per delivered entry (stderr). */
  fprintf(stderr, "scale: n=%d leader ns/delivery by entry point:", n);
  for (i = 0; i < 6; ++i) {
    fprintf(stderr, " %s %.0f (%llu calls)", kind_name[i],
            s.deliveries ? (double)g_work.kind_ns[i] / (double)s.deliveries
                         : 0.0,
            (unsigned long long)g_work.kind_calls[i]);
  }
  fprintf(stderr, " notify %.0f\n",
          s.deliveries ? (double)g_work.notify_ns / (double)s.deliveries
                       : 0.0);
  /* Quiet: faults off, everyone back, until all converge or 20 minutes
   * pass (not measured). */
  s.faults_on = 0;
  for (i = 1; i <= 20 * 60 * 100 && !(i % 1000 == 0 && converged(&s));
       ++i) {
    t += 10 * SP_MILLISECONDS;
    tick(&s, t);
  }
  out->violations = s.fatal ? 1 : 0;
  out->violations += check(&s);
  clock_gettime(CLOCK_MONOTONIC, &w1);
  out->wall_s = (double)(w1.tv_sec - w0.tv_sec) +
                (double)(w1.tv_nsec - w0.tv_nsec) / 1e9;
  fprintf(stderr,
          "scale: n=%d entries %llu deliveries %llu notifies %llu "
          "jittered %ld torn %ld cuts %ld restarts %ld wall %.1f s "
          "violations %d\n",
          n, (unsigned long long)k, (unsigned long long)s.deliveries,
          (unsigned long long)g_work.notifies, s.jittered, s.torn, s.cuts,
          s.restarts, out->wall_s, out->violations);
  sim_free(&s);
  return out->violations != 0;
}

static void calibrate(void) {
  uint64_t best = UINT64_MAX;
  int i;

  for (i = 0; i < 1000; ++i) {
    uint64_t a = cpu_ns(), b = cpu_ns();
    if (b - a < best) {
      best = b - a;
    }
  }
  g_overhead = best;
  {
    uint64_t a = mono_ns(), b;
    for (i = 0; i < 100000; ++i) {
      (void)mono_ns();
    }
    b = mono_ns();
    g_mono_read = (b - a) / 100000;
  }
}

int main(int argc, char **argv) {
  static const int sizes[3] = {10, 100, 1000};
  result r[3];
  uint64_t seed = 1;
  sp_duration hour = 3600 * SP_SECONDS;
  sp_duration every = 1 * SP_SECONDS, step = 10 * SP_MILLISECONDS;
  int i, max = 1000, bad = 0, j = 0;

  for (i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
      max = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--minutes") == 0 && i + 1 < argc) {
      hour = (sp_duration)atoi(argv[++i]) * 60 * SP_SECONDS;
    } else if (strcmp(argv[i], "--every-ms") == 0 && i + 1 < argc) {
      every = (sp_duration)atoi(argv[++i]) * SP_MILLISECONDS;
    } else {
      fprintf(stderr,
              "usage: sp_sim_scale [--seed N] [--max 10|100|1000] "
              "[--minutes M] [--every-ms MS]\n");
      return 2;
    }
  }
  calibrate();
  for (i = 0; i < 3 && sizes[i] <= max; ++i, ++j) {
    bad |= run(sizes[i], seed, hour, every, step, &r[i]);
  }
  /* Sizes not run (--max) print as 0. */
  for (i = j; i < 3; ++i) {
    memset(&r[i], 0, sizeof(r[i]));
  }
  printf("scale: followers 10 100 1000 work_per_delivery %.0f %.0f %.0f\n",
         r[0].per_delivery_ns, r[1].per_delivery_ns, r[2].per_delivery_ns);
  printf("scale: followers 10 100 1000 work_per_notification %.0f %.0f "
         "%.0f\n",
         r[0].per_notify_ns, r[1].per_notify_ns, r[2].per_notify_ns);
  printf("scale: followers 10 100 1000 work_per_notification_per_follower "
         "%.1f %.1f %.1f\n",
         r[0].per_notify_ns / 10, r[1].per_notify_ns / 100,
         r[2].per_notify_ns / 1000);
  printf("scale: followers 10 100 1000 work_per_follower_second %.0f %.0f "
         "%.0f\n",
         r[0].per_follower_s_ns, r[1].per_follower_s_ns,
         r[2].per_follower_s_ns);
  printf("scale: followers 10 100 1000 units_per_delivery %.2f %.2f %.2f\n",
         r[0].units_per_delivery, r[1].units_per_delivery,
         r[2].units_per_delivery);
  printf("scale: followers 10 100 1000 bytes_per_delivery %.1f %.1f %.1f\n",
         r[0].bytes_per_delivery, r[1].bytes_per_delivery,
         r[2].bytes_per_delivery);
  printf("scale: followers 10 100 1000 deliveries %llu %llu %llu\n",
         (unsigned long long)r[0].deliveries,
         (unsigned long long)r[1].deliveries,
         (unsigned long long)r[2].deliveries);
  /* Context: the simulated network's cost, taken out of
   * work_per_delivery. */
  printf("scale: followers 10 100 1000 net_per_delivery %.0f %.0f %.0f\n",
         r[0].net_ns, r[1].net_ns, r[2].net_ns);
  printf("scale: scale_ratio %.2f\n",
         r[0].per_delivery_ns > 0
             ? r[2].per_delivery_ns / r[0].per_delivery_ns
             : 0.0);
  printf("scale: %s\n", bad ? "INVARIANT VIOLATED" : "invariants hold");
  return bad ? 1 : 0;
}
