/*
 * sp_abi_test.c: the ABI promises of the public surface.
 *
 * Each versioned getter called with version 1 on a buffer the size of
 * version 1 writes nothing past it (a canary follows the buffer), an
 * unknown version is refused without touching the buffer, the follower
 * list uses the version's stride, the vtables the library fills (stores,
 * transports, snapshot sources and sinks) hold only the bytes of the
 * version asked for, sp_event points at its progress structs only when
 * it has them, and every constructor leaves `*out` NULL when it fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sp_cluster.h"
#include "sync_protocol/features.h"
#include "sync_protocol/mem_store.h"
#ifdef SP_HAVE_QUIC
#include "sync_protocol/quic.h"
#endif
#ifdef SP_HAVE_SQLITE
#include "sync_protocol/sqlite_store.h"
#endif

#define MS SP_MILLISECONDS
#define LEADER 0
#define F1 1
#define F2 2
#define LIB 0
#define CANARY 0xA5
#define CANARY_LEN 32

/* A version-1-sized struct followed by a canary, both pre-filled. */
#define ABI_BUF(type) \
  struct {            \
    type v;           \
    unsigned char canary[CANARY_LEN]; \
  }

static void fill(void *p, size_t n) { memset(p, CANARY, n); }

static void assert_canary(const unsigned char *c, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    assert_int_equal(c[i], CANARY);
  }
}

/* Every byte still CANARY: the call wrote nothing. */
static void assert_untouched(const void *p, size_t n) {
  assert_canary(p, n);
}

/* ---- a leader with two followers that acknowledged ---- */

static void cluster_up(tc *t) {
  int d;

  assert_int_equal(tc_init(t, 3, 1, 1 * MS, NULL), 0);
  for (d = 0; d < 3; ++d) {
    assert_int_equal(tc_open(t, d, LIB), 0);
  }
  tc_append(t, LIB, 5, 16);
  tc_notify(t, LIB);
  assert_int_equal(tc_converge(t, LIB, 5 * SP_SECONDS), 1);
  tc_run_for(t, 1 * SP_SECONDS); /* the acks reach the leader */
}

static void test_handler_status_v1(void **state) {
  ABI_BUF(sp_handler_status) b;
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_get_status_versioned(t.dev[LEADER].h[LIB], 1,
                                                   &b.v),
                   0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.role, SP_ROLE_LEADER);
  assert_int_equal(b.v.sequence, 5);
  assert_int_equal(b.v.stepped_down, 0);
  /* Through the short name too (the current version). */
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &b.v), 0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.role, SP_ROLE_FOLLOWER);
  assert_int_equal(b.v.sequence, 5);
  /* Unknown versions: refused, nothing written. */
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_get_status_versioned(t.dev[F1].h[LIB], 0, &b.v),
                   SP_ERR_VERSION);
  assert_int_equal(sp_handler_get_status_versioned(
                       t.dev[F1].h[LIB], SP_HANDLER_STATUS_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  tc_free(&t);
}

/* A caller built against version 1 has only version 1's bytes (not
 * today's sizeof): nothing past them is written. */
static void test_handler_status_v1_short_buffer(void **state) {
  enum {
    V1 = offsetof(sp_handler_status, stepped_down) +
         sizeof(((sp_handler_status *)0)->stepped_down)
  };
  union {
    sp_handler_status align;
    unsigned char bytes[V1 + CANARY_LEN];
  } b;
  sp_handler_status v1;
  tc t;

  (void)state;
  assert_true(V1 < sizeof(sp_handler_status));
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_get_status_versioned(
                       t.dev[F1].h[LIB], 1, (sp_handler_status *)b.bytes),
                   0);
  assert_canary(b.bytes + V1, CANARY_LEN);
  memcpy(&v1, b.bytes, V1);
  assert_int_equal(v1.role, SP_ROLE_FOLLOWER);
  assert_int_equal(v1.sequence, 5);
  tc_free(&t);
}

/* Version 2: a follower that lost its leader says when it dials next. */
static void test_handler_status_v2_next_attempt(void **state) {
  ABI_BUF(sp_handler_status) b;
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_get_status_versioned(t.dev[F1].h[LIB], 2, &b.v),
                   0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.next_attempt, 0); /* connected */
  assert_int_equal(sp_handler_get_status(t.dev[LEADER].h[LIB], &b.v), 0);
  assert_int_equal(b.v.next_attempt, 0); /* a leader dials no one */
  tc_crash(&t, LEADER);
  tc_run_for(&t, 3 * SP_SECONDS); /* the loss is seen, dials fail */
  assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &b.v), 0);
  assert_int_equal(b.v.connected_peers, 0);
  assert_true(b.v.next_attempt > t.now);
  /* It dials then, and fails again: a later attempt is scheduled. */
  {
    sp_tstamp first = b.v.next_attempt;
    tc_run_until(&t, first + 10 * MS);
    assert_int_equal(sp_handler_get_status(t.dev[F1].h[LIB], &b.v), 0);
    assert_true(b.v.next_attempt > first);
  }
  tc_free(&t);
}

static void test_outbox_status_v1(void **state) {
  ABI_BUF(sp_outbox_status) b;
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_outbox_status_versioned(t.dev[F1].h[LIB], 1,
                                                      &b.v),
                   0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.pending, 0);
  assert_int_equal(b.v.in_flight, 0);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_outbox_status_versioned(
                       t.dev[F1].h[LIB], SP_OUTBOX_STATUS_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  tc_free(&t);
}

static void test_follower_progress_v1(void **state) {
  ABI_BUF(sp_follower_progress) b;
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_follower_progress_versioned(
                       t.dev[LEADER].h[LIB], &t.dev[F1].id, t.now, 1, &b.v),
                   0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_true(sp_uuid_equal(&b.v.device_id, &t.dev[F1].id));
  assert_int_equal(b.v.acked_sequence, 5);
  assert_int_equal(b.v.lag, 0);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_follower_progress_versioned(
                       t.dev[LEADER].h[LIB], &t.dev[F1].id, t.now,
                       SP_FOLLOWER_PROGRESS_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  tc_free(&t);
}

static void test_list_followers_stride(void **state) {
  /* Room for exactly one element of version 1, then the canary: a cap of
   * 1 writes one element although two followers are known. */
  ABI_BUF(sp_follower_progress) one;
  struct {
    sp_follower_progress v[2];
    unsigned char canary[CANARY_LEN];
  } two;
  sp_ssize n;
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&one, sizeof(one));
  n = sp_handler_list_followers_versioned(t.dev[LEADER].h[LIB], 1, &one.v, 1,
                                          t.now);
  assert_int_equal(n, 2);
  assert_canary(one.canary, sizeof(one.canary));
  fill(&two, sizeof(two));
  n = sp_handler_list_followers(t.dev[LEADER].h[LIB], two.v, 2, t.now);
  assert_int_equal(n, 2);
  assert_canary(two.canary, sizeof(two.canary));
  /* The second element sits one version-1 stride after the first. */
  assert_false(sp_uuid_equal(&two.v[0].device_id, &two.v[1].device_id));
  assert_int_equal(two.v[0].acked_sequence, 5);
  assert_int_equal(two.v[1].acked_sequence, 5);
  assert_int_equal(two.v[1].connected, 1);
  fill(&two, sizeof(two));
  assert_int_equal(sp_handler_list_followers_versioned(
                       t.dev[LEADER].h[LIB], SP_FOLLOWER_PROGRESS_VERSION + 1,
                       two.v, 2, t.now),
                   SP_ERR_VERSION);
  assert_untouched(&two, sizeof(two));
  tc_free(&t);
}

/* A caller built against version 1 holds only up to version 1's last
 * field, not today's sizeof: every getter (and the follower list's stride)
 * must stop there, so a later version that forgets its case fails here. */
#define V1_END(type, field) \
  (offsetof(type, field) + sizeof(((type *)0)->field))

static void test_v1_end_buffers(void **state) {
  enum {
    OUTBOX = V1_END(sp_outbox_status, leader_accepts),
    PROGRESS = V1_END(sp_follower_progress, since_last_ack),
    NET = V1_END(sp_mem_net_stats, connections_opened)
  };
  union {
    sp_follower_progress align;
    unsigned char bytes[2 * PROGRESS + CANARY_LEN];
  } b;
  sp_follower_progress p[2];
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_outbox_status_versioned(
                       t.dev[F1].h[LIB], 1, (sp_outbox_status *)b.bytes),
                   0);
  assert_canary(b.bytes + OUTBOX, CANARY_LEN);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_follower_progress_versioned(
                       t.dev[LEADER].h[LIB], &t.dev[F1].id, t.now, 1,
                       (sp_follower_progress *)b.bytes),
                   0);
  assert_canary(b.bytes + PROGRESS, CANARY_LEN);
  fill(&b, sizeof(b));
  assert_int_equal(sp_mem_net_get_stats_versioned(t.net, 1,
                                                  (sp_mem_net_stats *)b.bytes),
                   0);
  assert_canary(b.bytes + NET, CANARY_LEN);
  /* Two version-1 elements, PROGRESS bytes apart. */
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_list_followers_versioned(
                       t.dev[LEADER].h[LIB], 1,
                       (sp_follower_progress *)b.bytes, 2, t.now),
                   2);
  assert_canary(b.bytes + 2 * PROGRESS, CANARY_LEN);
  memcpy(&p[0], b.bytes, PROGRESS);
  memcpy(&p[1], b.bytes + PROGRESS, PROGRESS);
  assert_false(sp_uuid_equal(&p[0].device_id, &p[1].device_id));
  assert_int_equal(p[0].acked_sequence, 5);
  assert_int_equal(p[1].acked_sequence, 5);
  tc_free(&t);
}

static void test_mem_net_stats_v1(void **state) {
  ABI_BUF(sp_mem_net_stats) b;
  tc t;

  (void)state;
  cluster_up(&t);
  fill(&b, sizeof(b));
  assert_int_equal(sp_mem_net_get_stats_versioned(t.net, 1, &b.v), 0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_true(b.v.deliveries > 0);
  assert_true(b.v.bytes_delivered <= b.v.bytes_sent);
  fill(&b, sizeof(b));
  assert_int_equal(sp_mem_net_get_stats_versioned(
                       t.net, SP_MEM_NET_STATS_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_int_equal(sp_mem_net_get_stats_versioned(NULL, 1, &b.v),
                   SP_ERR_INVALID_ARGUMENT);
  assert_untouched(&b, sizeof(b));
  tc_free(&t);
}

/* A pointer that is not NULL and must not be dereferenced: a failing
 * constructor must overwrite it. */
#define STALE_INIT ((void *)(uintptr_t)0x1)

/* ---- vtables the library fills ---- */

/* Where each sp_store version ends: the offset of the next version's
 * first field (sizeof for the current one). */
static size_t store_end(int version) {
  switch (version) {
  case 1: return offsetof(sp_store, save_follower_ack);
  case 2: return offsetof(sp_store, append);
  case 3: return offsetof(sp_store, errmsg);
  case 4: return offsetof(sp_store, flags);
  default: return sizeof(sp_store);
  }
}

/* A store's get_vtable of every known version writes that version's
 * bytes only, and says which version it is. */
static void check_store_versions(int (*get)(void *store, int version,
                                            sp_store *out),
                                 void *store) {
  struct {
    sp_store v;
    unsigned char canary[CANARY_LEN];
  } b;
  int v;

  for (v = 1; v <= SP_STORE_VERSION; ++v) {
    fill(&b, sizeof(b));
    assert_int_equal(get(store, v, &b.v), 0);
    assert_int_equal(b.v.version, (unsigned)v);
    assert_ptr_equal(b.v.user_data, store);
    assert_non_null(b.v.state);
    assert_untouched((unsigned char *)&b + store_end(v),
                     sizeof(b) - store_end(v));
  }
  fill(&b, sizeof(b));
  assert_int_equal(get(store, SP_STORE_VERSION + 1, &b.v), SP_ERR_VERSION);
  assert_int_equal(get(store, 0, &b.v), SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
}

static int mem_get(void *store, int version, sp_store *out) {
  return sp_mem_store_get_vtable_versioned(store, version, out);
}

static void test_store_vtable_versions(void **state) {
  ABI_BUF(sp_snapshot_source) src;
  ABI_BUF(sp_snapshot_sink) sink;
  sp_mem_store *ms;

  (void)state;
  assert_int_equal(sp_mem_store_new(&ms, NULL), 0);
  check_store_versions(mem_get, ms);
  {
    /* Its rows live in its own memory: it vouches for them (version 5). */
    sp_store v5;
    assert_int_equal(mem_get(ms, 5, &v5), 0);
    assert_int_equal(v5.flags, SP_STORE_ROWS_VOUCHED);
  }
  fill(&src, sizeof(src));
  assert_int_equal(sp_mem_store_snapshot_source_versioned(ms, 1, &src.v), 0);
  assert_canary(src.canary, sizeof(src.canary));
  assert_int_equal(src.v.version, 1);
  assert_non_null(src.v.close);
  fill(&sink, sizeof(sink));
  assert_int_equal(sp_mem_store_snapshot_sink_versioned(ms, 1, &sink.v), 0);
  assert_canary(sink.canary, sizeof(sink.canary));
  assert_int_equal(sink.v.version, 1);
  assert_non_null(sink.v.abort);
  fill(&src, sizeof(src));
  assert_int_equal(sp_mem_store_snapshot_source_versioned(
                       ms, SP_SNAPSHOT_SOURCE_VERSION + 1, &src.v),
                   SP_ERR_VERSION);
  assert_untouched(&src, sizeof(src));
  fill(&sink, sizeof(sink));
  assert_int_equal(sp_mem_store_snapshot_sink_versioned(
                       ms, SP_SNAPSHOT_SINK_VERSION + 1, &sink.v),
                   SP_ERR_VERSION);
  assert_untouched(&sink, sizeof(sink));
  sp_mem_store_del(ms);
}

/* A version-1 transport ends before peer_key. */
static void check_transport_v1(const void *buf, size_t size) {
  const sp_transport *t = buf;

  assert_int_equal(t->version, 1);
  assert_non_null(t->open_stream);
  assert_non_null(t->close_stream);
  assert_untouched((const unsigned char *)buf +
                       offsetof(sp_transport, peer_key),
                   size - offsetof(sp_transport, peer_key));
}

static void test_mem_transport_v1(void **state) {
  ABI_BUF(sp_transport) b;
  sp_mem_net *net;
  sp_uuid a, c;

  (void)state;
  assert_int_equal(sp_mem_net_new(&net, NULL, NULL), 0);
  sp_uuid_generate(&a);
  sp_uuid_generate(&c);
  fill(&b, sizeof(b));
  assert_int_equal(sp_mem_net_add_device_versioned(net, &a, 1, &b.v), 0);
  check_transport_v1(&b, sizeof(b));
  /* An unknown version registers nothing. */
  fill(&b, sizeof(b));
  assert_int_equal(sp_mem_net_add_device_versioned(
                       net, &c, SP_TRANSPORT_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  assert_int_equal(sp_mem_net_add_device(net, &c, &b.v), 0);
  assert_int_equal(b.v.version, SP_TRANSPORT_VERSION);
  sp_mem_net_del(net);
}

/* ---- events: progress pointers ---- */

static long g_acks, g_acks_with_progress, g_other_with_pointer;
static long g_snap_events, g_snap_with_progress;

static void count_event(tc *t, int dev, const sp_event *ev) {
  (void)t;
  (void)dev;
  if (ev->type == SP_EVENT_ACK_RECEIVED) {
    g_acks++;
    g_acks_with_progress += ev->progress != NULL &&
                            sp_uuid_equal(&ev->progress->device_id,
                                          &ev->peer_id);
  } else if (ev->type == SP_EVENT_SNAPSHOT_PROGRESS ||
             ev->type == SP_EVENT_SNAPSHOT_INSTALLED ||
             ev->type == SP_EVENT_SNAPSHOT_FAILED) {
    g_snap_events++;
    g_snap_with_progress += ev->snapshot != NULL;
  } else {
    g_other_with_pointer += ev->progress != NULL || ev->snapshot != NULL;
  }
}

static void test_event_pointers(void **state) {
  tc t;

  (void)state;
  g_acks = g_acks_with_progress = g_other_with_pointer = 0;
  assert_int_equal(tc_init(&t, 3, 1, 1 * MS, NULL), 0);
  t.on_event = count_event;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_int_equal(tc_open(&t, F2, LIB), 0);
  tc_append(&t, LIB, 5, 16);
  tc_notify(&t, LIB);
  assert_int_equal(tc_converge(&t, LIB, 5 * SP_SECONDS), 1);
  tc_run_for(&t, 1 * SP_SECONDS);
  assert_true(g_acks > 0);
  assert_int_equal(g_acks_with_progress, g_acks);
  assert_int_equal(g_other_with_pointer, 0);
  tc_free(&t);
}

/* A follower behind the leader's pruned log recovers from a snapshot of
 * the leader's mem store: snapshot events carry progress, and
 * sp_handler_snapshot_status writes only version 1. */
static void test_snapshot_status_v1(void **state) {
  ABI_BUF(sp_snapshot_progress) b;
  sp_snapshot_source src;
  sp_snapshot_sink sink;
  tc t;

  (void)state;
  g_snap_events = g_snap_with_progress = g_other_with_pointer = 0;
  assert_int_equal(tc_init(&t, 2, 1, 1 * MS, NULL), 0);
  t.on_event = count_event;
  sp_mem_store_snapshot_source(t.dev[LEADER].store[LIB], &src);
  sp_mem_store_snapshot_sink(t.dev[F1].store[LIB], &sink);
  t.dev[LEADER].cfg[LIB].snapshot_source = &src;
  t.dev[F1].cfg[LIB].snapshot_sink = &sink;
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 20, 16);
  assert_int_equal(sp_mem_store_prune(t.dev[LEADER].store[LIB], 10), 0);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  /* No recovery yet would be SP_ERR_NOT_FOUND; run until installed. */
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(tc_applied(&t, F1, LIB), 20);
  assert_true(g_snap_events > 0);
  assert_int_equal(g_snap_with_progress, g_snap_events);
  assert_int_equal(g_other_with_pointer, 0);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_snapshot_status_versioned(t.dev[F1].h[LIB], 1,
                                                        &b.v),
                   0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.state, SP_SNAPSHOT_INSTALLED);
  assert_true(b.v.sequence >= 10);
  fill(&b, sizeof(b));
  assert_int_equal(sp_handler_snapshot_status_versioned(
                       t.dev[F1].h[LIB], SP_SNAPSHOT_PROGRESS_VERSION + 1,
                       &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  tc_free(&t);
}

#ifdef SP_HAVE_SQLITE
static int sqlite_get(void *store, int version, sp_store *out) {
  return sp_sqlite_store_get_vtable_versioned(store, version, out);
}

static void test_sqlite_status_v1(void **state) {
  ABI_BUF(sp_sqlite_status) b;
  char dir[] = "/tmp/sp_abi_test_XXXXXX", path[64];
  sp_sqlite_store *ss = STALE_INIT;
  sp_sqlite_config cfg;
  uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  sp_entry e;

  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/abi.db", dir);
  /* A failing open leaves the handle NULL. */
  sp_sqlite_config_default(&cfg);
  cfg.create = 0;
  assert_int_not_equal(sp_sqlite_store_open(&ss, path, &cfg, NULL), 0);
  assert_null(ss);
  assert_int_equal(sp_sqlite_store_open(&ss, path, NULL, NULL), 0);
  memset(&e, 0, sizeof(e));
  sp_uuid_generate(&e.device_id);
  sp_uuid_generate(&e.record_id);
  e.model_type = "m";
  e.model_type_len = 1;
  e.change_type = SP_CHANGE_INSERT;
  e.data = data;
  e.data_len = sizeof(data);
  assert_int_equal(sp_sqlite_store_append(ss, &e, 1, NULL), 0);
  fill(&b, sizeof(b));
  assert_int_equal(sp_sqlite_store_status_versioned(ss, 1, &b.v), 0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.entry_count, 1);
  assert_int_equal(b.v.latest, 1);
  fill(&b, sizeof(b));
  assert_int_equal(sp_sqlite_store_status_versioned(
                       ss, SP_SQLITE_STATUS_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  check_store_versions(sqlite_get, ss);
  {
    /* Its rows come from disk: the leader must re-verify them. */
    sp_store v5;
    assert_int_equal(sqlite_get(ss, 5, &v5), 0);
    assert_int_equal(v5.flags & SP_STORE_ROWS_VOUCHED, 0);
  }
  sp_sqlite_store_close(ss);
  unlink(path);
  rmdir(dir);
}
#endif

#ifdef SP_HAVE_QUIC
static int r_key(const sp_uuid *device, uint8_t key[SP_PUBLIC_KEY_LEN],
                 void *ud) {
  (void)device;
  (void)key;
  (void)ud;
  return SP_ERR_NOT_FOUND;
}

static int r_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *device,
                    void *ud) {
  (void)key;
  (void)device;
  (void)ud;
  return SP_ERR_NOT_FOUND;
}

static int r_hints(const sp_uuid *device, char *buf, size_t buflen,
                   void *ud) {
  (void)device;
  (void)buf;
  (void)buflen;
  (void)ud;
  return SP_ERR_NOT_FOUND;
}

static void test_quic_stats_v1(void **state) {
  ABI_BUF(sp_quic_stats) b;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_quic_config cfg;
  sp_quic_endpoint *ep = STALE_INIT;
  sp_identity *id;

  (void)state;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  assert_int_equal(sp_identity_generate(&id, NULL, NULL), 0);
  sp_quic_config_default(&cfg);
  cfg.bind_address = "127.0.0.1:0";
  /* A failing constructor leaves the handle NULL. */
  cfg.version = SP_QUIC_CONFIG_VERSION + 1;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, id, &reg, NULL),
                   SP_ERR_VERSION);
  assert_null(ep);
  cfg.version = SP_QUIC_CONFIG_VERSION;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, id, &reg, NULL), 0);
  fill(&b, sizeof(b));
  assert_int_equal(sp_quic_endpoint_get_stats_versioned(ep, 1, &b.v), 0);
  assert_canary(b.canary, sizeof(b.canary));
  assert_int_equal(b.v.datagrams_sent, 0);
  assert_int_equal(b.v.connections_opened, 0);
  fill(&b, sizeof(b));
  assert_int_equal(sp_quic_endpoint_get_stats_versioned(
                       ep, SP_QUIC_STATS_VERSION + 1, &b.v),
                   SP_ERR_VERSION);
  assert_untouched(&b, sizeof(b));
  {
    ABI_BUF(sp_transport) tb;

    fill(&tb, sizeof(tb));
    assert_int_equal(sp_quic_endpoint_get_transport_versioned(ep, 1, &tb.v),
                     0);
    check_transport_v1(&tb, sizeof(tb));
    assert_ptr_equal(tb.v.user_data, ep);
    fill(&tb, sizeof(tb));
    assert_int_equal(sp_quic_endpoint_get_transport_versioned(
                         ep, SP_TRANSPORT_VERSION + 1, &tb.v),
                     SP_ERR_VERSION);
    assert_untouched(&tb, sizeof(tb));
  }
  assert_int_equal(sp_quic_endpoint_get_transport_versioned(NULL, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  sp_quic_endpoint_del(ep);
  sp_identity_del(id);
}

/* The endpoint takes a registry of every version from 1 (it uses only
 * version 1's callbacks) and reads only that version's bytes: the
 * version-1 struct sits alone on the heap, so ASan sees any read past it. */
static void test_quic_registry_versions(void **state) {
  sp_registry reg = SP_REGISTRY_INIT;
  unsigned char *v1;
  const unsigned int one = 1;
  sp_quic_config cfg;
  sp_quic_endpoint *ep = NULL;
  sp_identity *id;
  const size_t v1_size = offsetof(sp_registry, can_write);

  (void)state;
  reg.device_key = r_key;
  reg.device_by_key = r_by_key;
  reg.address_hints = r_hints;
  assert_int_equal(sp_identity_generate(&id, NULL, NULL), 0);
  sp_quic_config_default(&cfg);
  cfg.bind_address = "127.0.0.1:0";
  v1 = malloc(v1_size);
  assert_non_null(v1);
  memcpy(v1, &reg, v1_size);
  memcpy(v1 + offsetof(sp_registry, version), &one, sizeof(one));
  assert_int_equal(
      sp_quic_endpoint_new(&ep, &cfg, id, (const sp_registry *)v1, NULL), 0);
  sp_quic_endpoint_del(ep);
  free(v1);
  reg.version = 2;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, id, &reg, NULL), 0);
  sp_quic_endpoint_del(ep);
  reg.version = 0;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, id, &reg, NULL),
                   SP_ERR_VERSION);
  assert_null(ep);
  reg.version = SP_REGISTRY_VERSION + 1;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, id, &reg, NULL),
                   SP_ERR_VERSION);
  assert_null(ep);
  sp_identity_del(id);
}
#endif

/* ---- constructors leave *out NULL on failure ---- */

static void *fail_malloc(size_t n, void *ud) {
  (void)n;
  (void)ud;
  return NULL;
}

static void *fail_calloc(size_t n, size_t size, void *ud) {
  (void)n;
  (void)size;
  (void)ud;
  return NULL;
}

static void *fail_realloc(void *p, size_t n, void *ud) {
  (void)p;
  (void)n;
  (void)ud;
  return NULL;
}

static void no_free(void *p, void *ud) {
  (void)p;
  (void)ud;
}

#define STALE STALE_INIT

static void test_constructors_null_on_failure(void **state) {
  sp_mem failing = {NULL, fail_malloc, no_free, fail_calloc, fail_realloc};
  sp_node_config ncfg;
  sp_handler_config hcfg;
  sp_mem_net_config mcfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_node *node = STALE;
  sp_handler *h = STALE;
  sp_mem_store *ms = STALE;
  sp_mem_net *net = STALE;
  sp_identity *id = STALE;
  sp_decoder *dec = STALE;
  sp_frame_reader *fr = STALE;
  sp_store st = SP_STORE_INIT;
  tc t;

  (void)state;
  sp_node_config_default(&ncfg);
  ncfg.version = SP_NODE_CONFIG_VERSION + 1;
  assert_int_equal(sp_node_new(&node, &ncfg, &reg, NULL, &tr, NULL),
                   SP_ERR_VERSION);
  assert_null(node);

  /* A handler on a real node, with an unknown config version. */
  assert_int_equal(tc_init(&t, 1, 1, 1 * MS, NULL), 0);
  sp_handler_config_default(&hcfg);
  hcfg.version = SP_HANDLER_CONFIG_VERSION + 1;
  sp_mem_store_get_vtable(t.dev[0].store[LIB], &st);
  assert_int_equal(sp_handler_new(&h, t.dev[0].node, &hcfg, &st, t.now),
                   SP_ERR_VERSION);
  assert_null(h);
  /* A second handler for a library the node already has. */
  assert_int_equal(tc_open(&t, 0, LIB), 0);
  h = STALE;
  assert_int_equal(sp_handler_new(&h, t.dev[0].node, &t.dev[0].cfg[LIB], &st,
                                  t.now),
                   SP_ERR_EXISTS);
  assert_null(h);
  tc_free(&t);

  assert_int_equal(sp_mem_store_new(&ms, &failing), SP_ERR_NOMEM);
  assert_null(ms);

  sp_mem_net_config_default(&mcfg);
  mcfg.version = 0;
  assert_int_equal(sp_mem_net_new(&net, &mcfg, NULL), SP_ERR_VERSION);
  assert_null(net);

  assert_int_equal(sp_identity_generate(&id, NULL, &failing), SP_ERR_NOMEM);
  assert_null(id);
  id = STALE;
  assert_int_equal(
      sp_identity_load(&id, "/nonexistent/sp_abi_test/k.key", NULL),
      SP_ERR_IO);
  assert_null(id);

  assert_int_equal(sp_decoder_new(&dec, &failing), SP_ERR_NOMEM);
  assert_null(dec);
  assert_int_equal(sp_frame_reader_new(&fr, SP_MAX_FRAME_LIMIT + 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_null(fr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handler_status_v1),
      cmocka_unit_test(test_handler_status_v1_short_buffer),
      cmocka_unit_test(test_handler_status_v2_next_attempt),
      cmocka_unit_test(test_outbox_status_v1),
      cmocka_unit_test(test_follower_progress_v1),
      cmocka_unit_test(test_list_followers_stride),
      cmocka_unit_test(test_mem_net_stats_v1),
      cmocka_unit_test(test_v1_end_buffers),
      cmocka_unit_test(test_event_pointers),
      cmocka_unit_test(test_snapshot_status_v1),
      cmocka_unit_test(test_constructors_null_on_failure),
      cmocka_unit_test(test_store_vtable_versions),
      cmocka_unit_test(test_mem_transport_v1),
#ifdef SP_HAVE_SQLITE
      cmocka_unit_test(test_sqlite_status_v1),
#endif
#ifdef SP_HAVE_QUIC
      cmocka_unit_test(test_quic_stats_v1),
      cmocka_unit_test(test_quic_registry_versions),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
