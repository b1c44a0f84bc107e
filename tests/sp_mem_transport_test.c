/*
 * sp_mem_transport_test.c: the in-memory network's contract: flow control
 * through a small stream window, statistics, cuts, crashes, unreachable
 * devices, partitions, reordering, determinism, and the argument checks of
 * every public sp_mem_net_* function.
 *
 * Most tests use a small harness written here (real nodes, handlers and
 * in-memory stores on one sp_mem_net, whose config the test chooses); the
 * crash and cut tests use the shared cluster.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define MS SP_MILLISECONDS
#define MAXD 4

/* ---- harness ---- */

typedef struct mn mn;

typedef struct mdev {
  mn *m;
  int idx;
  sp_uuid id;
  sp_transport tr;
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  sp_handler_config cfg;
  long ev[16];
  int last_lost;
  int last_error;
} mdev;

struct mn {
  sp_mem_net *net;
  sp_mem_net_config cfg;
  mdev d[MAXD];
  int n;
  sp_uuid lib;
  int leader;
  sp_uuid unknown;     /* a device id the network has never heard of */
  int leader_unknown;  /* the registry names `unknown` as leader */
  sp_tstamp now;
  int fatal;
  /* the fault hook sees every send that reaches a live peer */
  int (*fault)(mn *m, const sp_mem_delivery *d, sp_mem_verdict *v);
  long hook_calls;
  uint64_t hook_bytes;
  uint64_t rng;
  int aligned;
  long faults;
};

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  mn *m = ud;
  int i;

  (void)lib;
  *is_member = 0;
  for (i = 0; i < m->n; ++i) {
    *is_member |= sp_uuid_equal(&m->d[i].id, device);
  }
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  mn *m = ud;

  (void)lib;
  *leader = m->leader_unknown ? m->unknown : m->d[m->leader].id;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  mn *m = ud;
  int i;

  (void)lib;
  for (i = 0; i < m->n && (size_t)i < cap; ++i) {
    out[i] = m->d[i].id;
  }
  *count = (size_t)m->n;
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  mdev *d = ud;

  if (ev->type < 16) {
    d->ev[ev->type]++;
  }
  if (ev->type == SP_EVENT_PEER_LOST) {
    d->last_lost = ev->error_code;
  } else if (ev->type == SP_EVENT_ERROR) {
    d->last_error = ev->error_code;
  }
  return 0;
}

static void on_log(sp_log_level level, const char *msg, void *ud) {
  mdev *d = ud;

  fprintf(stderr, "[%llu us] dev%d log%d %s\n",
          (unsigned long long)(d->m->now / SP_MICROSECONDS), d->idx,
          (int)level, msg);
}

static int hook(const sp_mem_delivery *dl, sp_mem_verdict *v, void *ud) {
  mn *m = ud;

  m->hook_calls++;
  m->hook_bytes += dl->len;
  assert_int_equal(v->action, SP_MEM_DELIVER);
  assert_int_equal(v->delay, 0);
  assert_int_equal(v->keep, dl->len);
  return m->fault ? m->fault(m, dl, v) : 0;
}

/* Harnesses are static and tracked while alive, so that one left behind by
 * a failed assertion is still freed by the group teardown. */
static mn *live_mn[2];

static void mn_track(mn *m, int on) {
  size_t i;

  for (i = 0; i < sizeof(live_mn) / sizeof(live_mn[0]); ++i) {
    if (on ? live_mn[i] == NULL : live_mn[i] == m) {
      live_mn[i] = on ? m : NULL;
      return;
    }
  }
  assert_false(on);
}

static void mn_init(mn *m, int n, size_t window, sp_duration latency) {
  int i;

  memset(m, 0, sizeof(*m));
  mn_track(m, 1);
  m->n = n;
  m->now = SP_SECONDS;
  m->lib.bytes[0] = 0x11;
  m->unknown.bytes[0] = 0xee;
  sp_mem_net_config_default(&m->cfg);
  m->cfg.latency = latency;
  m->cfg.stream_window = window;
  m->cfg.fault = hook;
  m->cfg.fault_user_data = m;
  assert_int_equal(sp_mem_net_new(&m->net, &m->cfg, NULL), 0);
  assert_int_equal(sp_mem_net_run(m->net, m->now), 0);
  for (i = 0; i < n; ++i) {
    mdev *d = &m->d[i];
    sp_node_config nc;
    sp_registry reg = SP_REGISTRY_INIT;
    sp_events ev = SP_EVENTS_INIT;

    d->m = m;
    d->idx = i;
    d->id.bytes[0] = 0xd0;
    d->id.bytes[15] = (uint8_t)(i + 1);
    assert_int_equal(sp_mem_net_add_device(m->net, &d->id, &d->tr), 0);
    sp_node_config_default(&nc);
    nc.device_id = d->id;
    nc.seed = 7u + (uint64_t)i;
    reg.user_data = m;
    reg.is_member = r_is_member;
    reg.leader = r_leader;
    reg.members = r_members;
    ev.user_data = d;
    ev.on_event = on_event;
    if (getenv("SP_TEST_LOG")) {
      ev.on_log = on_log;
      ev.log_level = SP_LOG_DEBUG;
    }
    assert_int_equal(sp_node_new(&d->node, &nc, &reg, &ev, &d->tr, NULL), 0);
    assert_int_equal(sp_mem_net_attach(m->net, &d->id, d->node), 0);
    assert_int_equal(sp_mem_store_new(&d->store, NULL), 0);
    sp_handler_config_default(&d->cfg);
    d->cfg.library_id = m->lib;
  }
}

static void mn_open(mn *m, int i) {
  mdev *d = &m->d[i];
  sp_store st;

  sp_mem_store_get_vtable(d->store, &st);
  d->cfg.role = i == m->leader ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
  assert_int_equal(sp_handler_new(&d->h, d->node, &d->cfg, &st, m->now), 0);
}

static void mn_free(mn *m) {
  int i;

  mn_track(m, 0);
  for (i = 0; i < m->n; ++i) {
    if (m->d[i].node) {
      sp_mem_net_detach(m->net, &m->d[i].id);
      sp_node_del(m->d[i].node);
    }
    sp_mem_store_del(m->d[i].store);
  }
  sp_mem_net_del(m->net);
}

static int free_leftovers(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(live_mn) / sizeof(live_mn[0]); ++i) {
    if (live_mn[i]) {
      mn_free(live_mn[i]);
    }
  }
  return 0;
}

static sp_seq latest_of(mn *m) {
  sp_store st;
  sp_log_bounds b;

  sp_mem_store_get_vtable(m->d[m->leader].store, &st);
  assert_int_equal(st.bounds(&b, st.user_data), 0);
  return b.latest;
}

static sp_seq applied_of(mn *m, int i) {
  sp_store st;
  sp_store_state s;

  sp_mem_store_get_vtable(m->d[i].store, &st);
  assert_int_equal(st.state(&s, st.user_data), 0);
  return s.applied;
}

static void mn_append(mn *m, int count, size_t payload) {
  mdev *l = &m->d[m->leader];
  uint8_t *buf = malloc(payload ? payload : 1);
  sp_seq seq = 0;
  int i;

  assert_non_null(buf);
  for (i = 0; i < count; ++i) {
    sp_entry e;
    size_t k;
    memset(&e, 0, sizeof(e));
    e.device_id = l->id;
    e.timestamp_ms = (uint64_t)i;
    for (k = 0; k < payload; ++k) {
      buf[k] = (uint8_t)(i + k);
    }
    e.data = buf;
    e.data_len = payload;
    assert_int_equal(sp_mem_store_append(l->store, &e, &seq), 0);
  }
  free(buf);
  if (l->h) {
    assert_int_equal(sp_handler_notify_new_entries(l->h, 1, seq, m->now), 0);
  }
}

static int mn_step(mn *m, sp_tstamp until) {
  sp_tstamp next = sp_mem_net_get_expiry(m->net), x;
  int i, rv;

  for (i = 0; i < m->n; ++i) {
    if (m->d[i].node && (x = sp_node_get_expiry(m->d[i].node)) < next) {
      next = x;
    }
  }
  if (next > until) {
    m->now = until;
    assert_int_equal(sp_mem_net_run(m->net, m->now), 0);
    return 0;
  }
  if (next > m->now) {
    m->now = next;
  }
  rv = sp_mem_net_run(m->net, m->now);
  if (rv != 0 && !m->fatal) {
    m->fatal = rv;
  }
  for (i = 0; i < m->n; ++i) {
    sp_node *node = m->d[i].node;
    if (node && sp_node_get_expiry(node) <= m->now) {
      rv = sp_node_handle_expiry(node, m->now);
      if (rv != 0 && !m->fatal) {
        m->fatal = rv;
      }
    }
  }
  return 1;
}

static void mn_run_for(mn *m, sp_duration d) {
  sp_tstamp until = m->now + d;
  long guard = 0;

  while (mn_step(m, until)) {
    assert_true(++guard < 50000000);
  }
}

static int mn_converged(mn *m) {
  sp_seq latest = latest_of(m);
  int i;

  for (i = 0; i < m->n; ++i) {
    if (i != m->leader && m->d[i].h && applied_of(m, i) != latest) {
      return 0;
    }
  }
  return 1;
}

static int mn_converge(mn *m, sp_duration max) {
  sp_tstamp until = m->now + max;

  while (!mn_converged(m)) {
    if (!mn_step(m, until)) {
      return mn_converged(m);
    }
  }
  return 1;
}

/* Follower i holds exactly the leader's entries, chain hashes included. */
static int same_log(mn *m, int i) {
  sp_seq s, applied = applied_of(m, i);

  for (s = 1; s <= applied; ++s) {
    sp_entry a, b;
    uint8_t ha[SP_HASH_LEN], hb[SP_HASH_LEN];
    if (sp_mem_store_get(m->d[i].store, s, &a, ha) != 0 ||
        sp_mem_store_get(m->d[m->leader].store, s, &b, hb) != 0 ||
        memcmp(ha, hb, SP_HASH_LEN) != 0 || a.data_len != b.data_len ||
        memcmp(a.data, b.data, a.data_len) != 0) {
      return 0;
    }
  }
  return 1;
}

/* ---- tests ---- */

/* A 1 KiB window with 4 KiB entries: every frame needs several sends,
 * each after a writable call; the follower still converges. */
static void test_small_window(void **state) {
  static mn m;
  sp_mem_net_stats st;

  (void)state;
  mn_init(&m, 2, 1024, 1 * MS);
  m.d[0].cfg.response_max_bytes = 16 * 1024;
  mn_open(&m, 0);
  mn_open(&m, 1);
  mn_append(&m, 40, 4096);
  assert_true(mn_converge(&m, 60 * SP_SECONDS));
  assert_int_equal(applied_of(&m, 1), 40);
  assert_true(same_log(&m, 1));
  mn_run_for(&m, 100 * MS);
  sp_mem_net_get_stats(m.net, &st);
  /* No delivery is larger than the window, so there were many. */
  assert_true(st.bytes_sent > 40 * 4096);
  assert_true(st.deliveries >= st.bytes_sent / 1024);
  assert_int_equal(st.bytes_delivered, st.bytes_sent);
  assert_int_equal(m.d[1].ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(m.d[0].ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(m.d[1].ev[SP_EVENT_ERROR], 0);
  /* Live entries keep flowing through the same window. */
  mn_append(&m, 10, 4096);
  assert_true(mn_converge(&m, 10 * SP_SECONDS));
  assert_true(same_log(&m, 1));
  assert_int_equal(m.fatal, 0);
  mn_free(&m);
}

/* A window of one byte: the smallest that works. */
static void test_tiny_window(void **state) {
  static mn m;

  (void)state;
  mn_init(&m, 2, 1, 0);
  mn_open(&m, 0);
  mn_open(&m, 1);
  mn_append(&m, 3, 300);
  assert_true(mn_converge(&m, 60 * SP_SECONDS));
  assert_true(same_log(&m, 1));
  assert_int_equal(m.fatal, 0);
  mn_free(&m);
}

/* Drops the leader's next frame (a NewEntries: nothing tears, the next
 * heartbeat tells the follower instead), then duplicates its next page. */
static uint64_t dropped_bytes, duplicated_bytes;

static int drop_then_dup(mn *m, const sp_mem_delivery *d, sp_mem_verdict *v) {
  if (!sp_uuid_equal(&d->from, &m->d[0].id)) {
    return 0;
  }
  if (m->faults == 0) {
    m->faults++;
    dropped_bytes += d->len;
    v->action = SP_MEM_DROP;
  } else if (m->faults == 1 && d->len > 500) {
    m->faults++;
    duplicated_bytes += d->len;
    v->action = SP_MEM_DUPLICATE;
  }
  return 0;
}

/* The counters add up. */
static void test_stats(void **state) {
  static mn m;
  sp_mem_net_stats st;

  (void)state;
  mn_init(&m, 2, 256 * 1024, 2 * MS);
  sp_mem_net_get_stats(m.net, &st);
  assert_int_equal(st.bytes_sent, 0);
  assert_int_equal(st.bytes_delivered, 0);
  assert_int_equal(st.deliveries, 0);
  assert_int_equal(st.streams_opened, 0);
  assert_int_equal(st.connections_opened, 0);
  assert_int_equal(st.connections_cut, 0);
  mn_open(&m, 0);
  mn_open(&m, 1); /* the follower dials at once */
  sp_mem_net_get_stats(m.net, &st);
  assert_int_equal(st.streams_opened, 1);
  assert_int_equal(st.connections_opened, 1);
  /* The leader dials its registered follower at its first expiry too:
   * two streams, one connection (the follower keeps its own stream). */
  mn_append(&m, 20, 100);
  assert_true(mn_converge(&m, SP_SECONDS));
  mn_run_for(&m, 50 * MS);
  sp_mem_net_get_stats(m.net, &st);
  /* Everything sent went through the hook and was delivered once. */
  assert_int_equal(st.bytes_sent, m.hook_bytes);
  assert_int_equal(st.bytes_delivered, st.bytes_sent);
  assert_int_equal(st.deliveries, (uint64_t)m.hook_calls);
  assert_int_equal(st.streams_opened, 2);
  assert_int_equal(st.connections_opened, 1);
  assert_int_equal(st.connections_cut, 0);

  /* A drop and a duplicate: sent once each, delivered 0 and 2 times. */
  {
    sp_mem_net_stats before = st;
    uint64_t hb = m.hook_bytes;
    long hc = m.hook_calls;
    dropped_bytes = duplicated_bytes = 0;
    m.fault = drop_then_dup;
    mn_append(&m, 5, 200);
    mn_run_for(&m, 40 * SP_SECONDS); /* the heartbeat brings the news */
    assert_int_equal(m.faults, 2);
    assert_int_equal(applied_of(&m, 1), 25);
    assert_int_equal(m.d[1].ev[SP_EVENT_PEER_LOST], 0);
    sp_mem_net_get_stats(m.net, &st);
    assert_int_equal(st.bytes_sent - before.bytes_sent, m.hook_bytes - hb);
    assert_int_equal(st.bytes_delivered - before.bytes_delivered,
                     m.hook_bytes - hb - dropped_bytes + duplicated_bytes);
    assert_int_equal(st.deliveries - before.deliveries,
                     (uint64_t)(m.hook_calls - hc) - 1 + 1);
    m.fault = NULL;
  }
  /* A cut: counted, and the follower's new stream opens a new connection. */
  sp_mem_net_get_stats(m.net, &st);
  {
    sp_mem_net_stats before = st;
    assert_int_equal(sp_mem_net_cut(m.net, &m.d[0].id, &m.d[1].id), 0);
    mn_append(&m, 5, 100);
    assert_true(mn_converge(&m, 10 * SP_SECONDS));
    sp_mem_net_get_stats(m.net, &st);
    assert_int_equal(st.connections_cut, before.connections_cut + 1);
    assert_true(st.connections_opened >= before.connections_opened + 1);
    assert_true(st.streams_opened >= before.streams_opened + 1);
  }
  assert_true(same_log(&m, 1));
  mn_free(&m);
}

/* sp_mem_net_cut: both ends see SP_ERR_CONNECTION_LOST. */
static void test_cut(void **state) {
  tc t;
  sp_mem_net_stats st;
  int l;

  (void)state;
  assert_int_equal(tc_init(&t, 3, 2, 1 * MS, NULL), 0);
  for (l = 0; l < 2; ++l) {
    assert_int_equal(tc_open(&t, 0, l), 0);
    assert_int_equal(tc_open(&t, 1, l), 0);
    assert_int_equal(tc_open(&t, 2, l), 0);
  }
  tc_append(&t, 0, 10, 10);
  tc_append(&t, 1, 10, 10);
  assert_true(tc_converge(&t, 0, SP_SECONDS));
  assert_true(tc_converge(&t, 1, SP_SECONDS));
  assert_int_equal(t.dev[0].counts.ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(sp_mem_net_cut(t.net, &t.dev[1].id, &t.dev[0].id), 0);
  tc_run_for(&t, 5 * MS);
  /* Both libraries' streams on that connection, on both ends. */
  assert_int_equal(t.dev[0].counts.ev[SP_EVENT_PEER_LOST], 2);
  assert_int_equal(t.dev[0].counts.last_lost, SP_ERR_CONNECTION_LOST);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_PEER_LOST], 2);
  assert_int_equal(t.dev[1].counts.last_lost, SP_ERR_CONNECTION_LOST);
  /* The other connection is untouched. */
  assert_int_equal(t.dev[2].counts.ev[SP_EVENT_PEER_LOST], 0);
  sp_mem_net_get_stats(t.net, &st);
  assert_int_equal(st.connections_cut, 1);
  /* Nothing to cut any more (until the follower reconnects). */
  assert_int_equal(sp_mem_net_cut(t.net, &t.dev[0].id, &t.dev[1].id),
                   SP_ERR_NOT_FOUND);
  /* It reconnects on its own. */
  tc_append(&t, 0, 10, 10);
  assert_true(tc_converge(&t, 0, 10 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, 1, 0));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* Detaching a device (a crash) closes its peers' streams. */
static void test_detach_closes_peers(void **state) {
  tc t;
  sp_mem_net_stats st;
  long lost;

  (void)state;
  assert_int_equal(tc_init(&t, 3, 1, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0);
  assert_int_equal(tc_open(&t, 1, 0), 0);
  assert_int_equal(tc_open(&t, 2, 0), 0);
  tc_append(&t, 0, 10, 10);
  assert_true(tc_converge(&t, 0, SP_SECONDS));
  /* A follower crashes: the leader's stream to it closes. */
  lost = t.dev[0].counts.ev[SP_EVENT_PEER_LOST];
  tc_crash(&t, 2);
  tc_run_for(&t, 5 * MS);
  assert_int_equal(t.dev[0].counts.ev[SP_EVENT_PEER_LOST], lost + 1);
  assert_int_equal(t.dev[0].counts.last_lost, SP_ERR_CONNECTION_LOST);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_PEER_LOST], 0);
  sp_mem_net_get_stats(t.net, &st);
  assert_int_equal(st.connections_cut, 1);
  /* The leader crashes: its follower's stream closes. */
  tc_crash(&t, 0);
  tc_run_for(&t, 5 * MS);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_PEER_LOST], 1);
  assert_int_equal(t.dev[1].counts.last_lost, SP_ERR_CONNECTION_LOST);
  sp_mem_net_get_stats(t.net, &st);
  assert_int_equal(st.connections_cut, 2);
  /* Nothing is delivered to a detached device. */
  assert_int_equal(sp_mem_net_detach(t.net, &t.dev[0].id), 0);
  tc_run_for(&t, 10 * SP_SECONDS);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/*
 * Opening a stream to a device the network does not know, or to one that
 * is partitioned, returns a stream id at once and fails one latency later
 * (the opener's node is told SP_ERR_UNREACHABLE); bytes sent meanwhile
 * vanish.
 */
static void test_unreachable(void **state) {
  const sp_duration lat = 7 * MS;
  static mn m;
  sp_mem_net_stats st;
  uint64_t id;
  sp_tstamp t0;
  int k;

  (void)state;
  for (k = 0; k < 2; ++k) {
    mn_init(&m, 2, 256 * 1024, lat);
    if (k == 0) {
      m.leader_unknown = 1; /* the registry names a device never added */
    } else {
      m.leader = 0;
      /* The (cut off) leader dials the follower once, then waits. */
      m.d[0].cfg.reconnect_min = m.d[0].cfg.reconnect_max = 60 * SP_SECONDS;
      mn_open(&m, 0);
      assert_int_equal(sp_mem_net_set_partitioned(m.net, &m.d[0].id, 1), 0);
    }
    t0 = m.now;
    mn_open(&m, 1);
    sp_mem_net_get_stats(m.net, &st);
    assert_int_equal(st.streams_opened, 1);
    assert_int_equal(st.connections_opened, 0);
    assert_true(st.bytes_sent > 0); /* the fetch went out, into nothing */
    assert_int_equal(m.hook_calls, 0);
    /* The failure is due one latency after the open. */
    assert_int_equal(sp_mem_net_get_expiry(m.net), t0 + lat);
    id = 1; /* the network's first stream */
    mn_run_for(&m, lat - 1);
    assert_int_equal(sp_node_stream_data(m.d[1].node, id,
                                         k == 0 ? &m.unknown : &m.d[0].id,
                                         NULL, 0, m.now), 0);
    mn_run_for(&m, 1);
    /* The follower's stream is gone (the transport closed it). */
    assert_int_equal(sp_node_stream_data(m.d[1].node, id,
                                         k == 0 ? &m.unknown : &m.d[0].id,
                                         NULL, 0, m.now),
                     SP_ERR_NOT_FOUND);
    /* The follower retries with backoff: a few attempts, not a storm. */
    mn_run_for(&m, 10 * SP_SECONDS);
    sp_mem_net_get_stats(m.net, &st);
    assert_true(st.streams_opened >= 4 + (uint64_t)k);
    assert_true(st.streams_opened <= 12 + (uint64_t)k);
    assert_int_equal(st.connections_opened, 0);
    assert_int_equal(st.deliveries, 0);
    if (k == 1) {
      /* Healed: the next attempt connects and syncs. */
      assert_int_equal(sp_mem_net_set_partitioned(m.net, &m.d[0].id, 0), 0);
      mn_append(&m, 3, 10);
      assert_true(mn_converge(&m, 60 * SP_SECONDS));
      sp_mem_net_get_stats(m.net, &st);
      assert_int_equal(st.connections_opened, 1);
    }
    assert_int_equal(m.fatal, 0);
    mn_free(&m);
  }

  /* Direct transport calls: to an unknown device, and to itself. */
  mn_init(&m, 1, 256 * 1024, lat);
  {
    sp_transport *tr = &m.d[0].tr;
    uint64_t a = 0, b = 0;
    static const uint8_t bytes[3] = {1, 2, 3};
    t0 = m.now;
    assert_int_equal(tr->open_stream(&m.unknown, &m.lib, &a, tr->user_data),
                     0);
    assert_int_equal(tr->open_stream(&m.d[0].id, &m.lib, &b, tr->user_data),
                     0);
    assert_true(a != 0 && b != 0 && a != b);
    assert_int_equal(tr->send(a, bytes, sizeof(bytes), tr->user_data), 3);
    assert_int_equal(sp_mem_net_get_expiry(m.net), t0 + lat);
    sp_mem_net_get_stats(m.net, &st);
    assert_int_equal(st.streams_opened, 2);
    assert_int_equal(st.bytes_sent, 3);
    /* The node never heard of these ids: the failures are dropped. */
    assert_int_equal(sp_mem_net_run(m.net, t0 + lat), 0);
    assert_int_equal(sp_mem_net_get_expiry(m.net), SP_TSTAMP_MAX);
    /* After the close, sends are refused. */
    assert_int_equal(tr->close_stream(a, 0, tr->user_data), 0);
    assert_int_equal(tr->send(a, bytes, 1, tr->user_data), SP_ERR_CLOSED);
  }
  mn_free(&m);
}

/* A partition holds traffic; healing delivers it, in order. */
static void test_partition_heal(void **state) {
  static mn m;
  sp_mem_net_stats st, held;
  sp_seq applied;

  (void)state;
  mn_init(&m, 2, 256 * 1024, 1 * MS);
  m.d[1].cfg.fetch_limit = 50;
  m.d[1].cfg.fetch_window = 4;
  mn_open(&m, 0);
  mn_append(&m, 3000, 64);
  mn_open(&m, 1);
  /* Catching up: pages in flight one way, fetches and acks the other. */
  mn_run_for(&m, 4 * MS);
  assert_true(applied_of(&m, 1) > 0);
  mn_run_for(&m, 10 * MS); /* (the leader's own dial has come and gone) */
  assert_int_equal(sp_mem_net_set_partitioned(m.net, &m.d[1].id, 1), 0);
  sp_mem_net_get_stats(m.net, &held);
  applied = applied_of(&m, 1);
  assert_true(applied < 3000);
  mn_append(&m, 10, 64);
  mn_run_for(&m, 20 * SP_SECONDS); /* well under the heartbeat timeout */
  sp_mem_net_get_stats(m.net, &st);
  /* Nothing was delivered while cut off. */
  assert_int_equal(st.deliveries, held.deliveries);
  assert_int_equal(st.bytes_delivered, held.bytes_delivered);
  assert_true(st.bytes_sent >= held.bytes_sent);
  assert_true(applied_of(&m, 1) == applied);
  assert_int_equal(sp_mem_net_set_partitioned(m.net, &m.d[1].id, 0), 0);
  assert_true(mn_converge(&m, 60 * SP_SECONDS));
  mn_run_for(&m, 100 * MS);
  assert_int_equal(applied_of(&m, 1), 3010);
  assert_true(same_log(&m, 1));
  /* In order: the streams stayed whole (no refusal, no loss). */
  assert_int_equal(m.d[1].ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(m.d[0].ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(m.d[1].ev[SP_EVENT_ERROR], 0);
  assert_int_equal(m.d[0].ev[SP_EVENT_ERROR], 0);
  sp_mem_net_get_stats(m.net, &st);
  assert_int_equal(st.streams_opened, held.streams_opened); /* no redial */
  assert_int_equal(st.connections_cut, 0);
  assert_int_equal(m.fatal, 0);
  mn_free(&m);
}

/* The leader's third page is delayed past the fourth. */
static int reorder_once(mn *m, const sp_mem_delivery *d, sp_mem_verdict *v) {
  if (sp_uuid_equal(&d->from, &m->d[0].id) && d->len > 1000 &&
      ++m->faults == 3) {
    v->action = SP_MEM_REORDER;
    v->delay = 5 * MS;
  }
  return 0;
}

static void test_reorder_tears_stream(void **state) {
  static mn m;
  sp_mem_net_stats st;

  (void)state;
  mn_init(&m, 2, 256 * 1024, 1 * MS);
  m.d[1].cfg.fetch_limit = 20;
  m.d[1].cfg.fetch_window = 4;
  m.fault = reorder_once;
  mn_open(&m, 0);
  mn_append(&m, 500, 100);
  mn_open(&m, 1);
  assert_true(mn_converge(&m, 60 * SP_SECONDS));
  assert_true(m.faults >= 3);
  assert_true(same_log(&m, 1));
  /* The stream broke (a page past a gap is never applied) and the
   * follower came back on a new one. */
  assert_true(m.d[1].ev[SP_EVENT_PEER_LOST] >= 1);
  sp_mem_net_get_stats(m.net, &st);
  assert_true(st.streams_opened >= 2);
  assert_int_equal(applied_of(&m, 1), 500);
  assert_int_equal(m.fatal, 0);
  mn_free(&m);
}

/* 1 if the delivery is exactly one whole frame. */
static int whole_frame(const sp_mem_delivery *d) {
  return d->len >= SP_FRAME_HEADER_LEN &&
         d->len - SP_FRAME_HEADER_LEN ==
             ((size_t)d->data[0] << 24 | (size_t)d->data[1] << 16 |
              (size_t)d->data[2] << 8 | d->data[3]);
}

/*
 * A seeded mix of drops, duplicates, delays and reorders for the first 30
 * simulated seconds.  With `m->aligned` only deliveries that are whole
 * frames are touched, so frames are lost, doubled or swapped but never cut
 * in pieces; otherwise any delivery may be, tearing the byte stream.
 */
static int chaos(mn *m, const sp_mem_delivery *d, sp_mem_verdict *v) {
  uint64_t r;

  m->rng = m->rng * 6364136223846793005ULL + 1442695040888963407ULL;
  r = (m->rng >> 33) % 100;
  if (m->now > 30 * SP_SECONDS || (m->aligned && !whole_frame(d))) {
    return 0;
  }
  if (r < 5) {
    v->action = SP_MEM_DROP;
  } else if (r < 10) {
    v->action = SP_MEM_DUPLICATE;
  } else if (r < 15) {
    v->action = SP_MEM_REORDER;
    v->delay = (sp_duration)(r % 5) * MS;
  } else if (r < 25) {
    v->delay = (sp_duration)(r % 7) * MS;
  }
  if (v->action != SP_MEM_DELIVER) {
    m->faults++;
  }
  return 0;
}

typedef struct run_result {
  sp_mem_net_stats st;
  long ev[3][16];
  sp_seq applied[3];
  long faults;
  int converged;
  sp_tstamp end;
} run_result;

static void chaos_run(uint64_t seed, int aligned, run_result *out) {
  static mn m;
  int i;

  mn_init(&m, 3, 8 * 1024, 2 * MS);
  m.rng = seed;
  m.aligned = aligned;
  m.fault = chaos;
  for (i = 0; i < 3; ++i) {
    m.d[i].cfg.fetch_limit = 10;
    mn_open(&m, i);
  }
  for (i = 0; i < 10; ++i) {
    mn_append(&m, 100, 50 + (size_t)i * 10);
    mn_run_for(&m, 500 * MS);
  }
  memset(out, 0, sizeof(*out));
  out->converged = mn_converge(&m, 300 * SP_SECONDS);
  mn_run_for(&m, SP_SECONDS);
  sp_mem_net_get_stats(m.net, &out->st);
  for (i = 0; i < 3; ++i) {
    memcpy(out->ev[i], m.d[i].ev, sizeof(out->ev[i]));
    out->applied[i] = applied_of(&m, i);
  }
  out->faults = m.faults;
  out->end = m.now;
  assert_true(same_log(&m, 1));
  assert_true(same_log(&m, 2));
  assert_int_equal(m.fatal, 0);
  mn_free(&m);
}

/* The same scenario twice: byte for byte, event for event. */
static void test_deterministic(void **state) {
  run_result a, b, c;

  (void)state;
  chaos_run(12345, 1, &a);
  chaos_run(12345, 1, &b);
  assert_true(a.converged);
  assert_true(b.converged);
  assert_int_equal(a.st.bytes_sent, b.st.bytes_sent);
  assert_int_equal(a.st.bytes_delivered, b.st.bytes_delivered);
  assert_int_equal(a.st.deliveries, b.st.deliveries);
  assert_int_equal(a.st.streams_opened, b.st.streams_opened);
  assert_int_equal(a.st.connections_opened, b.st.connections_opened);
  assert_int_equal(a.st.connections_cut, b.st.connections_cut);
  assert_memory_equal(a.ev, b.ev, sizeof(a.ev));
  assert_int_equal(a.faults, b.faults);
  assert_int_equal(a.end, b.end);
  assert_int_equal(a.applied[1], 1000);
  assert_int_equal(a.applied[2], 1000);
  /* The faults did something: some stream broke and was replaced. */
  assert_true(a.faults > 10);
  assert_true(a.st.streams_opened > 2);
  assert_true(a.ev[1][SP_EVENT_PEER_LOST] + a.ev[2][SP_EVENT_PEER_LOST] > 0);
  /* Another seed is another run. */
  chaos_run(999, 1, &c);
  assert_true(c.converged);
  assert_true(c.st.bytes_sent != a.st.bytes_sent ||
              c.st.deliveries != a.st.deliveries);
}

/*
 * Torn byte streams (bytes of a frame lost, doubled or swapped in pieces)
 * are detected and every follower converges once the faults stop, for a
 * few seeds.
 */
static void test_torn_streams_converge(void **state) {
  static const uint64_t seeds[] = {12345, 1, 2, 3, 4, 5, 6, 7};
  size_t k;
  int failed = 0;

  (void)state;
  for (k = 0; k < sizeof(seeds) / sizeof(seeds[0]); ++k) {
    run_result r;
    chaos_run(seeds[k], 0, &r);
    if (!r.converged) {
      print_message("seed %llu: stuck at %llu / %llu (lost %ld / %ld)\n",
                    (unsigned long long)seeds[k],
                    (unsigned long long)r.applied[1],
                    (unsigned long long)r.applied[2],
                    r.ev[1][SP_EVENT_PEER_LOST], r.ev[2][SP_EVENT_PEER_LOST]);
      ++failed;
    }
  }
  assert_int_equal(failed, 0);
}

static void test_argument_validation(void **state) {
  sp_mem_net_config cfg, c;
  sp_mem_net *net = NULL;
  sp_transport tr, tr2;
  sp_uuid a, b, unknown;
  sp_mem_net_stats st;
  sp_node *node;
  sp_node_config nc;
  sp_registry reg = SP_REGISTRY_INIT;
  uint64_t id;
  static const uint8_t x = 1;

  (void)state;
  sp_mem_net_config_default(&cfg);
  assert_int_equal(cfg.version, SP_MEM_NET_CONFIG_VERSION);
  assert_int_equal(cfg.latency, 0);
  assert_int_equal(cfg.stream_window, 256 * 1024);
  assert_null(cfg.fault);
  assert_null(cfg.fault_user_data);

  assert_int_equal(sp_mem_net_new(NULL, &cfg, NULL), SP_ERR_INVALID_ARGUMENT);
  c = cfg;
  c.version = 0;
  assert_int_equal(sp_mem_net_new(&net, &c, NULL), SP_ERR_VERSION);
  c.version = SP_MEM_NET_CONFIG_VERSION + 1;
  assert_int_equal(sp_mem_net_new(&net, &c, NULL), SP_ERR_VERSION);
  c = cfg;
  c.stream_window = 0;
  assert_int_equal(sp_mem_net_new(&net, &c, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_null(net);
  assert_int_equal(sp_mem_net_new(&net, NULL, NULL), 0); /* defaults */
  sp_mem_net_del(net);
  sp_mem_net_del(NULL);
  assert_int_equal(sp_mem_net_new(&net, &cfg, NULL), 0);

  memset(&a, 0, sizeof(a));
  a.bytes[0] = 1;
  b = a;
  b.bytes[0] = 2;
  unknown = a;
  unknown.bytes[0] = 9;
  assert_int_equal(sp_mem_net_add_device(NULL, &a, &tr),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_net_add_device(net, NULL, &tr),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_net_add_device(net, &a, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_net_add_device(net, &a, &tr), 0);
  assert_int_equal(tr.version, SP_TRANSPORT_VERSION);
  assert_non_null(tr.open_stream);
  assert_non_null(tr.send);
  assert_non_null(tr.close_stream);
  assert_int_equal(sp_mem_net_add_device(net, &a, &tr2), SP_ERR_EXISTS);
  assert_int_equal(sp_mem_net_add_device(net, &b, &tr2), 0);

  /* A node to attach (no handlers). */
  sp_node_config_default(&nc);
  nc.device_id = a;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  assert_int_equal(sp_node_new(&node, &nc, &reg, NULL, &tr, NULL), 0);
  assert_int_equal(sp_mem_net_attach(NULL, &a, node), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_attach(net, NULL, node), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_attach(net, &unknown, node), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_attach(net, &a, NULL), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_attach(net, &a, node), 0);
  assert_int_equal(sp_mem_net_attach(net, &a, node), SP_ERR_INVALID_STATE);

  assert_int_equal(sp_mem_net_detach(NULL, &a), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_detach(net, NULL), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_detach(net, &unknown), SP_ERR_NOT_FOUND);

  assert_int_equal(sp_mem_net_cut(NULL, &a, &b), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_cut(net, NULL, &b), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_cut(net, &a, NULL), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_cut(net, &a, &unknown), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_cut(net, &a, &b), SP_ERR_NOT_FOUND); /* none */

  assert_int_equal(sp_mem_net_set_partitioned(NULL, &a, 1),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_set_partitioned(net, NULL, 1),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_set_partitioned(net, &unknown, 1),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_mem_net_set_partitioned(net, &b, 1), 0);
  assert_int_equal(sp_mem_net_set_partitioned(net, &b, 0), 0);

  assert_int_equal(sp_mem_net_run(NULL, 0), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_mem_net_get_expiry(net), SP_TSTAMP_MAX);
  assert_int_equal(sp_mem_net_run(net, 5 * SP_SECONDS), 0);

  /* The vtable: unknown ids, another device's stream, closed streams. */
  assert_int_equal(tr.send(77, &x, 1, tr.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(tr.close_stream(77, 0, tr.user_data), SP_ERR_NOT_FOUND);
  assert_int_equal(tr2.open_stream(&a, &a, &id, tr2.user_data), 0);
  /* b has no node: a's node is still told of the stream one latency on. */
  assert_int_equal(sp_mem_net_run(net, 5 * SP_SECONDS), 0);
  {
    sp_transport tr3;
    sp_uuid c3 = a;
    c3.bytes[0] = 3;
    assert_int_equal(sp_mem_net_add_device(net, &c3, &tr3), 0);
    assert_int_equal(tr3.send(id, &x, 1, tr3.user_data), SP_ERR_NOT_FOUND);
    assert_int_equal(tr3.close_stream(id, 0, tr3.user_data),
                     SP_ERR_NOT_FOUND);
  }
  assert_int_equal(tr2.close_stream(id, 0, tr2.user_data), 0);
  assert_int_equal(tr2.close_stream(id, 0, tr2.user_data), 0); /* twice ok */
  assert_int_equal(tr2.send(id, &x, 1, tr2.user_data), SP_ERR_CLOSED);

  sp_mem_net_get_stats(net, &st);
  assert_int_equal(st.streams_opened, 1);
  assert_int_equal(st.connections_opened, 1);

  assert_int_equal(sp_mem_net_detach(net, &a), 0);
  assert_int_equal(sp_mem_net_detach(net, &a), 0); /* already: still known */
  sp_node_del(node);
  sp_mem_net_del(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_window),
      cmocka_unit_test(test_tiny_window),
      cmocka_unit_test(test_stats),
      cmocka_unit_test(test_cut),
      cmocka_unit_test(test_detach_closes_peers),
      cmocka_unit_test(test_unreachable),
      cmocka_unit_test(test_partition_heal),
      cmocka_unit_test(test_reorder_tears_stream),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_torn_streams_converge),
      cmocka_unit_test(test_argument_validation),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftovers);
}
