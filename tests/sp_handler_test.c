/*
 * sp_handler_test.c: node and handler lifecycle: argument and version
 * validation of sp_node_new / sp_handler_new, one handler per library,
 * status and user data, failover with sp_handler_set_role, finding
 * handlers, and deletion in any order without leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"
#include "sp_core.h"
#include "sp_test_mem.h"

#define MS SP_MILLISECONDS
#define LIB 0

/* ---- a minimal host for validation tests ---- */

typedef struct host {
  sp_uuid self;
  sp_uuid other;
  sp_uuid lib;
  int opens;
  int registry_fails;
  int state_fails;
  int bounds_fails;
  /* The transport's open_stream fails with this code (0: it succeeds). */
  int open_fails;
  /* The registry names no leader. */
  int no_leader;
  sp_mem_store *store;
  sp_store inner;
} host;

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  (void)lib;
  (void)device;
  (void)ud;
  *is_member = 1;
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  host *h = ud;

  (void)lib;
  if (h->no_leader) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = h->other;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  host *h = ud;

  (void)lib;
  if (h->registry_fails) {
    return -1;
  }
  if (cap >= 2) {
    out[0] = h->self;
    out[1] = h->other;
  }
  *count = 2;
  return 0;
}

static int t_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  host *h = ud;

  (void)peer;
  (void)library;
  if (h->open_fails) {
    return h->open_fails;
  }
  *stream_id = (uint64_t)++h->opens;
  return 0;
}

static sp_ssize t_send(uint64_t stream_id, const uint8_t *data, size_t len,
                       void *ud) {
  (void)stream_id;
  (void)data;
  (void)ud;
  return (sp_ssize)len;
}

static int t_close(uint64_t stream_id, int error_code, void *ud) {
  (void)stream_id;
  (void)error_code;
  (void)ud;
  return 0;
}

static int s_read(sp_seq after, sp_seq through, size_t max_count,
                  sp_entry_sink sink, void *sink_ctx, void *ud) {
  host *h = ud;
  return h->inner.read(after, through, max_count, sink, sink_ctx,
                       h->inner.user_data);
}

static int s_bounds(sp_log_bounds *out, void *ud) {
  host *h = ud;
  return h->bounds_fails ? -1 : h->inner.bounds(out, h->inner.user_data);
}

static int s_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ud) {
  host *h = ud;
  return h->inner.hash_at(seq, out, h->inner.user_data);
}

static int s_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                   uint64_t epoch, void *ud) {
  host *h = ud;
  return h->inner.apply(entries, hashes, n, epoch, h->inner.user_data);
}

static int s_state(sp_store_state *out, void *ud) {
  host *h = ud;
  return h->state_fails ? -1 : h->inner.state(out, h->inner.user_data);
}

static void host_init(host *h, sp_node_config *cfg, sp_registry *reg,
                      sp_transport *tr, sp_store *st) {
  memset(h, 0, sizeof(*h));
  h->self.bytes[0] = 1;
  h->other.bytes[0] = 2;
  h->lib.bytes[0] = 0x11;
  sp_node_config_default(cfg);
  cfg->device_id = h->self;
  *reg = (sp_registry)SP_REGISTRY_INIT;
  reg->user_data = h;
  reg->is_member = r_is_member;
  reg->leader = r_leader;
  reg->members = r_members;
  *tr = (sp_transport)SP_TRANSPORT_INIT;
  tr->user_data = h;
  tr->open_stream = t_open;
  tr->send = t_send;
  tr->close_stream = t_close;
  assert_int_equal(sp_mem_store_new(&h->store, NULL), 0);
  sp_mem_store_get_vtable(h->store, &h->inner);
  memset(st, 0, sizeof(*st));
  st->version = SP_STORE_VERSION;
  st->user_data = h;
  st->read = s_read;
  st->bounds = s_bounds;
  st->hash_at = s_hash_at;
  st->apply = s_apply;
  st->state = s_state;
}

static void host_free(host *h) { sp_mem_store_del(h->store); }

static void test_node_new_validation(void **state) {
  host h;
  sp_node_config cfg, c;
  sp_registry reg, r;
  sp_transport tr, t;
  sp_events ev = SP_EVENTS_INIT, e;
  sp_store st;
  sp_node *node = NULL;

  (void)state;
  host_init(&h, &cfg, &reg, &tr, &st);
  /* NULL pointers. */
  assert_int_equal(sp_node_new(NULL, &cfg, &reg, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_new(&node, NULL, &reg, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_new(&node, &cfg, NULL, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  /* Versions: 0 and newer than this build, of every struct. */
  c = cfg;
  c.version = 0;
  assert_int_equal(sp_node_new(&node, &c, &reg, NULL, &tr, NULL),
                   SP_ERR_VERSION);
  c.version = SP_NODE_CONFIG_VERSION + 1;
  assert_int_equal(sp_node_new(&node, &c, &reg, NULL, &tr, NULL),
                   SP_ERR_VERSION);
  r = reg;
  r.version = 0;
  assert_int_equal(sp_node_new(&node, &cfg, &r, NULL, &tr, NULL),
                   SP_ERR_VERSION);
  r.version = SP_REGISTRY_VERSION + 1;
  assert_int_equal(sp_node_new(&node, &cfg, &r, NULL, &tr, NULL),
                   SP_ERR_VERSION);
  t = tr;
  t.version = 0;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &t, NULL),
                   SP_ERR_VERSION);
  t.version = SP_TRANSPORT_VERSION + 1;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &t, NULL),
                   SP_ERR_VERSION);
  e = ev;
  e.version = 0;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, &e, &tr, NULL),
                   SP_ERR_VERSION);
  e.version = SP_EVENTS_VERSION + 1;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, &e, &tr, NULL),
                   SP_ERR_VERSION);
  /* Missing required callbacks. */
  r = reg;
  r.is_member = NULL;
  assert_int_equal(sp_node_new(&node, &cfg, &r, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  r = reg;
  r.leader = NULL;
  assert_int_equal(sp_node_new(&node, &cfg, &r, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  r = reg;
  r.members = NULL;
  assert_int_equal(sp_node_new(&node, &cfg, &r, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  t = tr;
  t.open_stream = NULL;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &t, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  t = tr;
  t.send = NULL;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &t, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  t = tr;
  t.close_stream = NULL;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &t, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  /* max_frame over the absolute limit. */
  c = cfg;
  c.max_frame = SP_MAX_FRAME_LIMIT + 1;
  assert_int_equal(sp_node_new(&node, &c, &reg, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_null(node);

  /* What is optional: events, event callbacks, the registry's transport
   * lookups; max_frame 0 (default) and exactly the limit. */
  c.max_frame = SP_MAX_FRAME_LIMIT;
  assert_int_equal(sp_node_new(&node, &c, &reg, NULL, &tr, NULL), 0);
  sp_node_del(node);
  c.max_frame = 0;
  assert_int_equal(sp_node_new(&node, &c, &reg, &ev, &tr, NULL), 0);
  sp_node_del(node);
  sp_node_del(NULL);
  host_free(&h);
}

static void test_handler_new_validation(void **state) {
  host h;
  sp_node_config cfg;
  sp_registry reg;
  sp_transport tr;
  sp_store st, s;
  sp_node *node;
  sp_handler *hd = NULL;
  sp_handler_config hc, c;
  int role;

  (void)state;
  host_init(&h, &cfg, &reg, &tr, &st);
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &tr, NULL), 0);
  sp_handler_config_default(&hc);
  hc.library_id = h.lib;
  /* The documented defaults. */
  assert_int_equal(hc.version, SP_HANDLER_CONFIG_VERSION);
  assert_int_equal(hc.role, SP_ROLE_LEADER);
  assert_int_equal(hc.epoch, 1);
  assert_int_equal(hc.heartbeat_interval, 30 * SP_SECONDS);
  assert_int_equal(hc.heartbeat_timeout_factor, 3);
  assert_int_equal(hc.fetch_limit, 1024);
  assert_int_equal(hc.fetch_window, 4);
  assert_int_equal(hc.stall_timeout, 60 * SP_SECONDS);
  assert_int_equal(hc.reconnect_min, 100 * MS);
  assert_int_equal(hc.reconnect_max, 30 * SP_SECONDS);
  assert_int_equal(hc.max_queued_fetches, 32);
  assert_int_equal(hc.response_max_bytes, 64 * 1024);
  assert_int_equal(hc.retention_cap, 0);

  assert_int_equal(sp_handler_new(NULL, node, &hc, &st, 0),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_new(&hd, NULL, &hc, &st, 0),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_new(&hd, node, NULL, &st, 0),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_new(&hd, node, &hc, NULL, 0),
                   SP_ERR_INVALID_ARGUMENT);

  for (role = SP_ROLE_LEADER; role <= SP_ROLE_FOLLOWER; ++role) {
    hc.role = (sp_role)role;
#define BAD(field, value, code)                                               \
  do {                                                                        \
    c = hc;                                                                   \
    c.field = value;                                                          \
    assert_int_equal(sp_handler_new(&hd, node, &c, &st, 0), code);            \
    assert_null(sp_node_find_handler(node, &h.lib));                          \
  } while (0)
    BAD(version, 0, SP_ERR_VERSION);
    BAD(version, SP_HANDLER_CONFIG_VERSION + 1, SP_ERR_VERSION);
    BAD(role, (sp_role)2, SP_ERR_INVALID_ARGUMENT);
    BAD(role, (sp_role)-1, SP_ERR_INVALID_ARGUMENT);
    BAD(heartbeat_interval, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(heartbeat_timeout_factor, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(stall_timeout, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(reconnect_min, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(reconnect_max, hc.reconnect_min - 1, SP_ERR_INVALID_ARGUMENT);
    BAD(fetch_limit, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(fetch_limit, SP_MAX_FETCH_LIMIT + 1, SP_ERR_INVALID_ARGUMENT);
    BAD(fetch_window, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(max_queued_fetches, 0, SP_ERR_INVALID_ARGUMENT);
    BAD(max_queued_fetches, SP_MAX_QUEUED_FETCHES + 1,
        SP_ERR_INVALID_ARGUMENT);
    BAD(max_queued_fetches, UINT32_MAX, SP_ERR_INVALID_ARGUMENT);
    BAD(response_max_bytes, 0, SP_ERR_INVALID_ARGUMENT);
#undef BAD
    /* Store: versions, and every callback (a handler can change role). */
    s = st;
    s.version = 0;
    assert_int_equal(sp_handler_new(&hd, node, &hc, &s, 0), SP_ERR_VERSION);
    s.version = SP_STORE_VERSION + 1;
    assert_int_equal(sp_handler_new(&hd, node, &hc, &s, 0), SP_ERR_VERSION);
#define BADSTORE(cb)                                                          \
  do {                                                                        \
    s = st;                                                                   \
    s.cb = NULL;                                                              \
    assert_int_equal(sp_handler_new(&hd, node, &hc, &s, 0),                   \
                     SP_ERR_INVALID_ARGUMENT);                                \
  } while (0)
    BADSTORE(read);
    BADSTORE(bounds);
    BADSTORE(hash_at);
    BADSTORE(apply);
    BADSTORE(state);
#undef BADSTORE
    assert_null(sp_node_find_handler(node, &h.lib));
    assert_null(hd);
  }
  /* Border values are accepted. */
  c = hc;
  c.role = SP_ROLE_LEADER;
  c.fetch_limit = SP_MAX_FETCH_LIMIT;
  c.reconnect_max = c.reconnect_min;
  assert_int_equal(sp_handler_new(&hd, node, &c, &st, 0), 0);
  assert_ptr_equal(sp_node_find_handler(node, &h.lib), hd);
  /* One handler per library, whatever the role. */
  {
    sp_handler *h2 = NULL;
    c.role = SP_ROLE_FOLLOWER;
    assert_int_equal(sp_handler_new(&h2, node, &c, &st, 0), SP_ERR_EXISTS);
    assert_null(h2);
    c.role = SP_ROLE_LEADER;
    assert_int_equal(sp_handler_new(&h2, node, &c, &st, 0), SP_ERR_EXISTS);
    assert_ptr_equal(sp_node_find_handler(node, &h.lib), hd);
  }
  sp_handler_del(hd);
  assert_null(sp_node_find_handler(node, &h.lib));
  sp_handler_del(NULL);
  sp_node_del(node);
  host_free(&h);
}

/* A host compiled against version 1 of sp_handler_config passes a shorter
 * struct: nothing past it is read, and the later fields get defaults.  The
 * config sits at the end of an exact-size heap block so ASan sees any read
 * beyond it. */
static void test_handler_config_version_1(void **state) {
  const size_t v1 = offsetof(sp_handler_config, registry_refresh_interval);
  host h;
  sp_node_config cfg;
  sp_registry reg;
  sp_transport tr;
  sp_store st;
  sp_node *node;
  sp_handler *hd = NULL;
  sp_handler_config hc, *old;

  (void)state;
  host_init(&h, &cfg, &reg, &tr, &st);
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &tr, NULL), 0);
  sp_handler_config_default(&hc);
  hc.library_id = h.lib;
  hc.version = 1;
  hc.fetch_window = 7;
  old = malloc(v1);
  assert_non_null(old);
  memcpy(old, &hc, v1);
  assert_int_equal(sp_handler_new(&hd, node, old, &st, 0), 0);
  free(old);
  assert_int_equal(hd->cfg.fetch_window, 7);
  assert_int_equal(hd->cfg.registry_refresh_interval, 60 * SP_SECONDS);
  sp_handler_del(hd);
  sp_node_del(node);
  host_free(&h);
}

/* The host's callbacks failing during creation: nothing stays attached. */
static void test_handler_new_host_failures(void **state) {
  host h;
  sp_node_config cfg;
  sp_registry reg;
  sp_transport tr;
  sp_store st;
  sp_node *node;
  sp_handler *hd = NULL;
  sp_handler_config hc;

  (void)state;
  host_init(&h, &cfg, &reg, &tr, &st);
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &tr, NULL), 0);
  sp_handler_config_default(&hc);
  hc.library_id = h.lib;
  /* Follower: the store cannot report its state. */
  hc.role = SP_ROLE_FOLLOWER;
  h.state_fails = 1;
  assert_int_equal(sp_handler_new(&hd, node, &hc, &st, 0), SP_ERR_STORE);
  assert_null(sp_node_find_handler(node, &h.lib));
  assert_int_equal(h.opens, 0);
  h.state_fails = 0;
  /* Leader: bounds fail. */
  hc.role = SP_ROLE_LEADER;
  h.bounds_fails = 1;
  assert_int_equal(sp_handler_new(&hd, node, &hc, &st, 0), SP_ERR_STORE);
  assert_null(sp_node_find_handler(node, &h.lib));
  h.bounds_fails = 0;
  /* Leader: the registry cannot list the members (not in node.h's list of
   * codes, but what a host sees). */
  h.registry_fails = 1;
  assert_int_equal(sp_handler_new(&hd, node, &hc, &st, 0), SP_ERR_REGISTRY);
  assert_null(sp_node_find_handler(node, &h.lib));
  h.registry_fails = 0;
  assert_null(hd);
  /* And then it works. */
  assert_int_equal(sp_handler_new(&hd, node, &hc, &st, 0), 0);
  assert_non_null(hd);
  sp_node_del(node);
  host_free(&h);
}

/* ---- sp_handler_request_entries: exactly one ending per request ---- */

typedef struct req_seen {
  int calls;
  int status;
} req_seen;

static int on_req(sp_handler *hd, int status, sp_seq applied, void *ud) {
  req_seen *r = ud;

  (void)hd;
  (void)applied;
  r->calls++;
  r->status = status;
  return 0;
}

/* Run the node's timers (reconnects included) for `span`. */
static void run_timers(sp_node *node, sp_tstamp *now, sp_duration span) {
  sp_tstamp end = *now + span, t;

  while ((t = sp_node_get_expiry(node)) <= end) {
    *now = t > *now ? t : *now;
    assert_int_equal(sp_node_handle_expiry(node, *now), 0);
  }
  *now = end;
}

static sp_handler *open_follower(host *h, sp_node **node) {
  sp_node_config cfg;
  sp_registry reg;
  sp_transport tr;
  sp_store st;
  sp_handler_config hc;
  sp_handler *hd = NULL;
  int open_fails = h->open_fails, no_leader = h->no_leader;

  host_init(h, &cfg, &reg, &tr, &st);
  h->open_fails = open_fails;
  h->no_leader = no_leader;
  assert_int_equal(sp_node_new(node, &cfg, &reg, NULL, &tr, NULL), 0);
  sp_handler_config_default(&hc);
  hc.library_id = h->lib;
  hc.role = SP_ROLE_FOLLOWER;
  assert_int_equal(sp_handler_new(&hd, *node, &hc, &st, 0), 0);
  return hd;
}

/* Connecting fails synchronously (the transport cannot open a stream, the
 * registry names no leader): the request is refused at once, and no
 * callback ever comes for it. */
static void request_when_connect_fails(int open_fails, int no_leader,
                                       int want) {
  host h;
  sp_node *node;
  sp_handler *hd;
  req_seen r = {0, 0};
  sp_tstamp now = 0;
  int rv;

  memset(&h, 0, sizeof(h));
  h.open_fails = open_fails;
  h.no_leader = no_leader;
  hd = open_follower(&h, &node);
  run_timers(node, &now, 5 * SP_SECONDS);
  rv = sp_handler_request_entries(hd, 0, on_req, &r, now);
  run_timers(node, &now, 120 * SP_SECONDS);
  /* Either refused with no callback, or accepted with exactly one. */
  assert_true((rv < 0 && r.calls == 0) || (rv == 0 && r.calls == 1));
  assert_int_equal(rv, want);
  /* Still one request at a time once connecting works again. */
  h.open_fails = 0;
  h.no_leader = 0;
  assert_int_equal(sp_handler_request_entries(hd, 0, on_req, &r, now), 0);
  assert_int_equal(r.calls, 0);
  sp_node_del(node);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, SP_ERR_CANCELED);
  host_free(&h);
}

static void test_request_entries_connect_fails(void **state) {
  (void)state;
  request_when_connect_fails(SP_ERR_UNREACHABLE, 0, SP_ERR_UNREACHABLE);
  request_when_connect_fails(SP_ERR_IO, 0, SP_ERR_IO);
  request_when_connect_fails(0, 1, SP_ERR_NOT_FOUND);
}

/* An accepted request ends in exactly one callback whatever ends it: the
 * stream lost, the role changed, the handler deleted. */
static void test_request_entries_one_callback(void **state) {
  host h;
  sp_node *node;
  sp_handler *hd;
  req_seen r = {0, 0};
  sp_tstamp now = 0;

  (void)state;
  memset(&h, 0, sizeof(h));
  hd = open_follower(&h, &node);
  assert_int_equal(h.opens, 1);

  /* The stream is lost; reconnecting then fails synchronously. */
  assert_int_equal(sp_handler_request_entries(hd, 0, on_req, &r, now), 0);
  h.open_fails = SP_ERR_UNREACHABLE;
  assert_int_equal(sp_node_stream_closed(node, 1, &h.other,
                                         SP_ERR_CONNECTION_LOST, now),
                   0);
  run_timers(node, &now, 120 * SP_SECONDS);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.status, SP_ERR_CONNECTION_LOST);

  /* Connecting works again: a request made while disconnected connects
   * at once instead of waiting out the backoff. */
  h.open_fails = 0;
  assert_int_equal(sp_handler_request_entries(hd, 0, on_req, &r, now), 0);
  assert_int_equal(h.opens, 2);
  /* The role changes under it. */
  assert_int_equal(sp_handler_set_role(hd, SP_ROLE_LEADER, 5, now), 0);
  assert_int_equal(r.calls, 2);
  assert_int_equal(r.status, SP_ERR_CANCELED);
  run_timers(node, &now, 60 * SP_SECONDS);
  assert_int_equal(r.calls, 2);

  /* Back to follower; the handler is deleted under a pending request. */
  assert_int_equal(sp_handler_set_role(hd, SP_ROLE_FOLLOWER, 0, now), 0);
  assert_int_equal(sp_handler_request_entries(hd, 0, on_req, &r, now), 0);
  sp_handler_del(hd);
  assert_int_equal(r.calls, 3);
  assert_int_equal(r.status, SP_ERR_CANCELED);
  run_timers(node, &now, 60 * SP_SECONDS);
  assert_int_equal(r.calls, 3);
  sp_node_del(node);
  host_free(&h);
}

/* ---- with the cluster ---- */

static void test_status_and_user_data(void **state) {
  tc t;
  sp_handler_status s;
  int ud_leader = 0, ud_follower = 0;
  sp_handler *lh, *fh;

  (void)state;
  assert_int_equal(tc_init(&t, 3, 1, 1 * MS, NULL), 0);
  t.dev[0].cfg[LIB].epoch = 4;
  t.dev[0].cfg[LIB].user_data = &ud_leader;
  t.dev[1].cfg[LIB].user_data = &ud_follower;
  assert_int_equal(tc_open(&t, 0, LIB), 0);
  assert_int_equal(tc_open(&t, 1, LIB), 0);
  lh = t.dev[0].h[LIB];
  fh = t.dev[1].h[LIB];
  assert_ptr_equal(sp_handler_get_user_data(lh), &ud_leader);
  assert_ptr_equal(sp_handler_get_user_data(fh), &ud_follower);
  assert_null(sp_handler_get_user_data(NULL));
  assert_int_equal(sp_handler_role(lh), SP_ROLE_LEADER);
  assert_int_equal(sp_handler_role(fh), SP_ROLE_FOLLOWER);
  assert_int_equal(sp_handler_get_status(NULL, &s), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_get_status(lh, NULL), SP_ERR_INVALID_ARGUMENT);

  /* Before anything happened. */
  assert_int_equal(sp_handler_get_status(fh, &s), 0);
  assert_int_equal(s.role, SP_ROLE_FOLLOWER);
  assert_int_equal(s.epoch, 0);
  assert_int_equal(s.sequence, 0);
  assert_int_equal(s.leader_latest, 0);
  assert_false(s.sync_required);

  tc_append(&t, LIB, 25, 16);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_run_for(&t, 10 * MS);
  assert_int_equal(sp_handler_get_status(lh, &s), 0);
  assert_int_equal(s.role, SP_ROLE_LEADER);
  assert_int_equal(s.epoch, 4);
  assert_int_equal(s.sequence, 25);
  assert_int_equal(s.leader_latest, 0);
  assert_int_equal(s.connected_peers, 1);
  assert_false(s.sync_required);
  assert_int_equal(sp_handler_epoch(lh), 4);
  assert_int_equal(sp_handler_get_status(fh, &s), 0);
  assert_int_equal(s.role, SP_ROLE_FOLLOWER);
  assert_int_equal(s.epoch, 4); /* the leader's, recorded with the log */
  assert_int_equal(s.sequence, 25);
  assert_int_equal(s.leader_latest, 25);
  assert_int_equal(s.connected_peers, 1);
  assert_false(s.sync_required);
  assert_int_equal(sp_handler_epoch(fh), 4);

  /* A second follower shows on the leader. */
  assert_int_equal(tc_open(&t, 2, LIB), 0);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(sp_handler_get_status(lh, &s), 0);
  assert_int_equal(s.connected_peers, 2);
  /* The follower's applied sequence moves with the log. */
  tc_append(&t, LIB, 5, 16);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  assert_int_equal(sp_handler_get_status(fh, &s), 0);
  assert_int_equal(s.sequence, 30);
  assert_int_equal(s.leader_latest, 30);
  /* A lost follower is no longer counted. */
  tc_crash(&t, 2);
  tc_run_for(&t, 10 * MS);
  assert_int_equal(sp_handler_get_status(lh, &s), 0);
  assert_int_equal(s.connected_peers, 1);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static void test_find_handler(void **state) {
  tc t;
  sp_uuid other;

  (void)state;
  assert_int_equal(tc_init(&t, 2, 3, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, 0), 0);
  assert_int_equal(tc_open(&t, 0, 2), 0);
  assert_ptr_equal(sp_node_find_handler(t.dev[0].node, &t.lib[0]),
                   t.dev[0].h[0]);
  assert_ptr_equal(sp_node_find_handler(t.dev[0].node, &t.lib[2]),
                   t.dev[0].h[2]);
  assert_true(t.dev[0].h[0] != t.dev[0].h[2]);
  assert_null(sp_node_find_handler(t.dev[0].node, &t.lib[1]));
  assert_null(sp_node_find_handler(t.dev[1].node, &t.lib[0]));
  memset(&other, 0x77, sizeof(other));
  assert_null(sp_node_find_handler(t.dev[0].node, &other));
  assert_null(sp_node_find_handler(NULL, &t.lib[0]));
  assert_null(sp_node_find_handler(t.dev[0].node, NULL));
  tc_close(&t, 0, 0);
  assert_null(sp_node_find_handler(t.dev[0].node, &t.lib[0]));
  assert_ptr_equal(sp_node_find_handler(t.dev[0].node, &t.lib[2]),
                   t.dev[0].h[2]);
  /* Reopened: found again. */
  assert_int_equal(tc_open(&t, 0, 0), 0);
  assert_ptr_equal(sp_node_find_handler(t.dev[0].node, &t.lib[0]),
                   t.dev[0].h[0]);
  tc_free(&t);
}

/* Open `lib` on `dev` with an explicit role and epoch, whatever the
 * registry says. */
static int open_as(tc *t, int dev, sp_role role, uint64_t epoch) {
  tc_dev *d = &t->dev[dev];
  sp_store st;

  sp_mem_store_get_vtable(d->store[LIB], &st);
  d->cfg[LIB].role = role;
  d->cfg[LIB].epoch = epoch;
  return sp_handler_new(&d->h[LIB], d->node, &d->cfg[LIB], &st, t->now);
}

/*
 * Failover: device 1 follows device 0; device 0 crashes; the host makes
 * device 1 the leader at epoch 2; device 2 then follows it and converges;
 * device 0 comes back as a leader at epoch 1, meets epoch 2 and steps down.
 */
static void test_failover_set_role(void **state) {
  tc t;
  sp_handler *h1;
  sp_handler_status s;
  sp_seq latest;

  (void)state;
  assert_int_equal(tc_init(&t, 3, 1, 1 * MS, NULL), 0);
  assert_int_equal(tc_open(&t, 0, LIB), 0);
  assert_int_equal(tc_open(&t, 1, LIB), 0);
  tc_append(&t, LIB, 40, 32);
  assert_true(tc_converge(&t, LIB, SP_SECONDS));
  tc_run_for(&t, 10 * MS);
  h1 = t.dev[1].h[LIB];
  assert_int_equal(sp_handler_epoch(h1), 1);

  tc_crash(&t, 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(t.dev[1].counts.last_lost, SP_ERR_CONNECTION_LOST);

  /* The new leader's epoch must exceed every epoch it has seen. */
  assert_int_equal(sp_handler_set_role(h1, SP_ROLE_LEADER, 1, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_set_role(h1, SP_ROLE_LEADER, 0, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_set_role(h1, (sp_role)5, 9, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_set_role(NULL, SP_ROLE_LEADER, 9, t.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_role(h1), SP_ROLE_FOLLOWER);

  t.leader[LIB] = 1;
  assert_int_equal(sp_handler_set_role(h1, SP_ROLE_LEADER, 2, t.now), 0);
  assert_int_equal(sp_handler_role(h1), SP_ROLE_LEADER);
  assert_int_equal(sp_handler_epoch(h1), 2);
  assert_int_equal(sp_handler_get_status(h1, &s), 0);
  assert_int_equal(s.role, SP_ROLE_LEADER);
  assert_int_equal(s.epoch, 2);
  assert_int_equal(s.sequence, 40); /* it leads the log it holds */
  /* Leading twice at the same epoch is refused too. */
  assert_int_equal(sp_handler_set_role(h1, SP_ROLE_LEADER, 2, t.now),
                   SP_ERR_INVALID_ARGUMENT);

  /* Device 2 follows the new leader from scratch. */
  assert_int_equal(tc_open(&t, 2, LIB), 0);
  latest = tc_append(&t, LIB, 15, 32);
  assert_int_equal(latest, 55);
  assert_true(tc_converge(&t, LIB, 5 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, 2, LIB), 55);
  assert_true(tc_is_prefix(&t, 2, LIB));
  assert_int_equal(sp_handler_epoch(t.dev[2].h[LIB]), 2);
  {
    sp_follower_progress p;
    tc_run_for(&t, 10 * MS);
    assert_int_equal(
        sp_handler_follower_progress(h1, &t.dev[2].id, t.now, &p), 0);
    assert_int_equal(p.acked_sequence, 55);
  }

  /* The old leader restarts, still believing it leads at epoch 1. */
  assert_int_equal(tc_boot(&t, 0), 0);
  assert_int_equal(open_as(&t, 0, SP_ROLE_LEADER, 1), 0);
  tc_run_for(&t, 5 * SP_SECONDS);
  assert_int_equal(t.dev[0].counts.ev[SP_EVENT_STEPPED_DOWN], 1);
  assert_int_equal(t.dev[0].counts.last_epoch, 2);
  /* Proven by the new leader's claim (its own, or relayed). */
  assert_true(sp_uuid_equal(&t.dev[0].counts.last_leader, &t.dev[1].id));
  assert_int_equal(sp_handler_notify_new_entries(t.dev[0].h[LIB], 1, 1,
                                                 t.now),
                   SP_ERR_INVALID_STATE);
  /* The real leader did not step down and still serves. */
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_STEPPED_DOWN], 0);
  tc_append(&t, LIB, 5, 32);
  /* (tc_converge would wait for device 0 too, which serves nothing.) */
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(tc_applied(&t, 2, LIB), 60);
  assert_int_equal(tc_applied(&t, 0, LIB), 40);
  assert_true(tc_is_prefix(&t, 2, LIB));

  /* The host turns the old leader into a follower of the new one: it
   * catches up (its log is a prefix of the new leader's). */
  assert_int_equal(sp_handler_set_role(t.dev[0].h[LIB], SP_ROLE_FOLLOWER, 0,
                                       t.now), 0);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, 0, LIB), 60);
  assert_true(tc_is_prefix(&t, 0, LIB));
  assert_int_equal(sp_handler_epoch(t.dev[0].h[LIB]), 2);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

static int on_wait(sp_handler *h, sp_seq seq, int status, size_t acked,
                   void *ud) {
  int *canceled = ud;

  (void)h;
  (void)seq;
  (void)acked;
  if (status == SP_ERR_CANCELED) {
    ++*canceled;
  }
  return 0;
}

/* Deleting handlers and nodes in any order, mid-conversation, leaks
 * nothing (every allocation goes through the counting allocator). */
static void run_delete_order(int order) {
  sp_test_mem tm;
  tc t;
  int i, l, canceled = 0;

  sp_test_mem_init(&tm);
  assert_int_equal(tc_init(&t, 3, 2, 1 * MS, &tm.mem), 0);
  for (i = 0; i < 3; ++i) {
    for (l = 0; l < 2; ++l) {
      assert_int_equal(tc_open(&t, i, l), 0);
    }
  }
  tc_append(&t, 0, 200, 100);
  tc_append(&t, 1, 50, 1000);
  /* Stop mid-transfer: frames queued, pages half sent, waits pending. */
  tc_run_for(&t, 1 * MS + 1);
  assert_int_equal(sp_handler_wait_acks(t.dev[0].h[0], 200, 0,
                                        t.now + 60 * SP_SECONDS, on_wait,
                                        &canceled, t.now), 0);
  switch (order) {
  case 0: /* handlers first, leader's first, then nodes */
    for (l = 0; l < 2; ++l) {
      for (i = 0; i < 3; ++i) {
        tc_close(&t, i, l);
      }
    }
    tc_run_for(&t, SP_SECONDS);
    break;
  case 1: /* followers' handlers first, from the last device */
    for (i = 2; i >= 0; --i) {
      for (l = 1; l >= 0; --l) {
        tc_close(&t, i, l);
      }
    }
    break;
  case 2: /* nodes with their handlers still attached, leader first */
    for (i = 0; i < 3; ++i) {
      sp_mem_net_detach(t.net, &t.dev[i].id);
      sp_node_del(t.dev[i].node);
      t.dev[i].node = NULL;
      for (l = 0; l < 2; ++l) {
        t.dev[i].h[l] = NULL;
      }
    }
    break;
  default: /* one handler gone, the node of another, then the rest */
    tc_close(&t, 1, 0);
    tc_run_for(&t, 5 * MS);
    /* A graceful shutdown: the node closes its streams on the wire, then
     * leaves the network before anything is delivered to it. */
    sp_node_del(t.dev[0].node);
    sp_mem_net_detach(t.net, &t.dev[0].id);
    t.dev[0].node = NULL;
    t.dev[0].h[0] = t.dev[0].h[1] = NULL;
    tc_run_for(&t, SP_SECONDS);
    tc_close(&t, 2, 1);
    break;
  }
  tc_free(&t);
  assert_int_equal(canceled, 1);
  assert_int_equal(tm.live, 0);
  assert_int_equal(t.fatal, 0);
}

static void test_delete_any_order(void **state) {
  int order;

  (void)state;
  for (order = 0; order < 4; ++order) {
    run_delete_order(order);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_node_new_validation),
      cmocka_unit_test(test_handler_new_validation),
      cmocka_unit_test(test_handler_config_version_1),
      cmocka_unit_test(test_handler_new_host_failures),
      cmocka_unit_test(test_request_entries_connect_fails),
      cmocka_unit_test(test_request_entries_one_callback),
      cmocka_unit_test(test_status_and_user_data),
      cmocka_unit_test(test_find_handler),
      cmocka_unit_test(test_failover_set_role),
      cmocka_unit_test(test_delete_any_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
