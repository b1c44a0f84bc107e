/*
 * sp_node_bounds_test.c: what a registered peer can make a node hold on
 * incoming streams before and after their first frame routes them, and
 * what the node tells its transport it holds (sp_node_stream_held).
 *
 * The test is the node's transport: it opens streams and delivers bytes
 * with the sp_node_stream_* calls, and records what the node sends and
 * closes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/node.h"
#include "sync_protocol/sys/transport.h"
#include "sync_protocol/uuid.h"
#include "sp_codec_int.h"
#include "sp_core.h"
#include "sp_mem_int.h"

#define MAX_CLOSED 256

typedef struct rig {
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  sp_uuid self, member, stranger, lib;
  /* Streams the node closed, and with which code. */
  uint64_t closed_id[MAX_CLOSED];
  int closed_code[MAX_CLOSED];
  size_t nclosed;
  sp_tstamp now;
} rig;

static int r_is_member(const sp_uuid *lib, const sp_uuid *dev, int *m,
                       void *ud) {
  rig *r = ud;
  *m = sp_uuid_equal(lib, &r->lib) && sp_uuid_equal(dev, &r->member);
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  rig *r = ud;
  (void)lib;
  *leader = r->self;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *n, void *ud) {
  rig *r = ud;
  (void)lib;
  *n = 1;
  if (cap >= 1) {
    out[0] = r->member;
  }
  return 0;
}

static int t_open(const sp_uuid *peer, const sp_uuid *lib, uint64_t *id,
                  void *ud) {
  (void)peer;
  (void)lib;
  (void)id;
  (void)ud;
  return SP_ERR_UNREACHABLE;
}

static sp_ssize t_send(uint64_t id, const uint8_t *data, size_t len,
                       void *ud) {
  (void)id;
  (void)data;
  (void)ud;
  return (sp_ssize)len;
}

static int t_close(uint64_t id, int code, void *ud) {
  rig *r = ud;
  if (r->nclosed < MAX_CLOSED) {
    r->closed_id[r->nclosed] = id;
    r->closed_code[r->nclosed] = code;
    r->nclosed++;
  }
  return 0;
}

/* The code the node closed `id` with, or 1 while it is open. */
static int closed_with(const rig *r, uint64_t id) {
  size_t i;
  for (i = 0; i < r->nclosed; ++i) {
    if (r->closed_id[i] == id) {
      return r->closed_code[i];
    }
  }
  return 1;
}

static void rig_init(rig *r) {
  sp_node_config nc;
  sp_handler_config hc;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_store st;

  memset(r, 0, sizeof(*r));
  sp_uuid_generate(&r->self);
  sp_uuid_generate(&r->member);
  sp_uuid_generate(&r->stranger);
  sp_uuid_generate(&r->lib);
  r->now = SP_SECONDS;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.user_data = r;
  tr.open_stream = t_open;
  tr.send = t_send;
  tr.close_stream = t_close;
  tr.user_data = r;
  sp_node_config_default(&nc);
  nc.device_id = r->self;
  assert_int_equal(sp_node_new(&r->node, &nc, &reg, NULL, &tr, NULL), 0);
  assert_int_equal(sp_mem_store_new(&r->store, NULL), 0);
  sp_mem_store_get_vtable(r->store, &st);
  sp_handler_config_default(&hc);
  hc.library_id = r->lib;
  hc.role = SP_ROLE_LEADER;
  assert_int_equal(sp_handler_new(&r->h, r->node, &hc, &st, r->now), 0);
}

static void rig_free(rig *r) {
  sp_node_del(r->node);
  sp_mem_store_del(r->store);
}

static int deliver(rig *r, uint64_t id, const sp_uuid *peer,
                   const uint8_t *data, size_t len) {
  return sp_node_stream_data(r->node, id, peer, data, len, r->now);
}

/* A length prefix announcing a body of `n` bytes. */
static void prefix(uint8_t out[SP_FRAME_HEADER_LEN], size_t n) {
  out[0] = (uint8_t)(n >> 24);
  out[1] = (uint8_t)(n >> 16);
  out[2] = (uint8_t)(n >> 8);
  out[3] = (uint8_t)n;
}

/* A follower's first frame: the Heartbeat that routes its stream. */
static void hello(rig *r, uint64_t id) {
  sp_msg msg;
  sp_mem m;
  sp_buf b;

  memset(&msg, 0, sizeof(msg));
  msg.type = SP_MSG_HEARTBEAT;
  msg.library_id = r->lib;
  msg.epoch = 1;
  msg.u.heartbeat.role = SP_ROLE_FOLLOWER;
  sp_mem_resolve(&m, NULL);
  sp_buf_init(&b, &m);
  assert_int_equal(sp_codec_append_frame(&b, &msg, SP_MAX_FRAME_DEFAULT), 0);
  assert_int_equal(deliver(r, id, &r->member, b.data, b.len), 0);
  sp_buf_free(&b);
}

/* A stream no frame routed yet takes a first frame of a few KiB, not of
 * the node's max_frame: a longer prefix is refused before any body byte
 * is kept, whether the peer is a member or not. */
static void test_unrouted_first_frame_small(void **state) {
  static uint8_t body[8192];
  rig r;
  uint8_t p[SP_FRAME_HEADER_LEN];

  (void)state;
  rig_init(&r);
  prefix(p, 1024 * 1024);
  assert_int_equal(sp_node_stream_opened(r.node, 1, &r.stranger, r.now), 0);
  assert_int_equal(deliver(&r, 1, &r.stranger, p, sizeof(p)), 0);
  assert_int_equal(closed_with(&r, 1), SP_ERR_FRAME_TOO_LARGE);
  /* A first frame of a few KiB is fine (here refused as garbage only
   * once whole). */
  prefix(p, sizeof(body));
  assert_int_equal(sp_node_stream_opened(r.node, 3, &r.stranger, r.now), 0);
  assert_int_equal(deliver(&r, 3, &r.stranger, p, sizeof(p)), 0);
  assert_int_equal(deliver(&r, 3, &r.stranger, body, sizeof(body) - 1), 0);
  assert_int_equal(closed_with(&r, 3), 1);
  prefix(p, 1024 * 1024);

  assert_int_equal(sp_node_stream_opened(r.node, 2, &r.member, r.now), 0);
  assert_int_equal(deliver(&r, 2, &r.member, p, sizeof(p)), 0);
  assert_int_equal(closed_with(&r, 2), SP_ERR_FRAME_TOO_LARGE);
  rig_free(&r);
}

/* A peer may keep only so many streams waiting for their first frame; the
 * others are refused at once, and other peers are not affected. */
static void test_unrouted_streams_capped_per_peer(void **state) {
  enum { TRIES = 3 * SP_MAX_UNROUTED_PER_PEER };
  rig r;
  uint8_t p[SP_FRAME_HEADER_LEN];
  uint64_t id;
  size_t accepted = 0;

  (void)state;
  rig_init(&r);
  prefix(p, 1000);
  for (id = 1; id <= TRIES; ++id) {
    int rv = sp_node_stream_opened(r.node, id, &r.stranger, r.now);
    if (rv == 0) {
      ++accepted;
      /* Part of a first frame, never finished. */
      assert_int_equal(deliver(&r, id, &r.stranger, p, 3), 0);
    } else {
      assert_int_equal(rv, SP_ERR_TOO_MANY_REQUESTS);
    }
  }
  assert_int_equal(accepted, SP_MAX_UNROUTED_PER_PEER);
  /* The member still gets in, and its routed stream no longer counts. */
  assert_int_equal(sp_node_stream_opened(r.node, 1000, &r.member, r.now), 0);
  hello(&r, 1000);
  assert_int_equal(closed_with(&r, 1000), 1);
  for (id = 1001; id < 1001 + SP_MAX_UNROUTED_PER_PEER; ++id) {
    assert_int_equal(sp_node_stream_opened(r.node, id, &r.member, r.now), 0);
  }
  assert_int_equal(sp_node_stream_opened(r.node, id, &r.member, r.now),
                   SP_ERR_TOO_MANY_REQUESTS);
  rig_free(&r);
}

/* Once routed, a stream takes frames up to max_frame, and the node says
 * how much of an unfinished one it holds and how much is missing. */
static void test_held_reported(void **state) {
  static uint8_t body[300 * 1024];
  rig r;
  uint8_t p[SP_FRAME_HEADER_LEN];
  size_t held = 1, need = 1;

  (void)state;
  rig_init(&r);
  assert_int_equal(sp_node_stream_opened(r.node, 7, &r.member, r.now), 0);
  assert_int_equal(sp_node_stream_held(r.node, 7, &held, &need), 0);
  assert_int_equal(held, 0);
  assert_int_equal(need, 0);
  hello(&r, 7);
  assert_int_equal(sp_node_stream_held(r.node, 7, &held, &need), 0);
  assert_int_equal(held, 0);
  assert_int_equal(need, 0);
  /* Half a prefix: the rest of it is missing. */
  prefix(p, sizeof(body));
  assert_int_equal(deliver(&r, 7, &r.member, p, 2), 0);
  assert_int_equal(sp_node_stream_held(r.node, 7, &held, &need), 0);
  assert_int_equal(held, 2);
  assert_int_equal(need, 2);
  assert_int_equal(deliver(&r, 7, &r.member, p + 2, 2), 0);
  assert_int_equal(deliver(&r, 7, &r.member, body, 100 * 1024), 0);
  assert_int_equal(closed_with(&r, 7), 1);
  assert_int_equal(sp_node_stream_held(r.node, 7, &held, &need), 0);
  assert_int_equal(held, SP_FRAME_HEADER_LEN + 100 * 1024);
  assert_int_equal(need, sizeof(body) - 100 * 1024);
  /* The frame completes (and, being garbage, is refused): nothing is
   * held any more. */
  assert_int_equal(deliver(&r, 7, &r.member, body + 100 * 1024,
                           sizeof(body) - 100 * 1024),
                   0);
  assert_true(closed_with(&r, 7) < 0);
  assert_int_equal(sp_node_stream_held(r.node, 7, &held, &need),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(held, 0);
  assert_int_equal(need, 0);
  assert_int_equal(sp_node_stream_held(r.node, 99, &held, &need),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_held(NULL, 7, &held, &need),
                   SP_ERR_INVALID_ARGUMENT);
  rig_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unrouted_first_frame_small),
      cmocka_unit_test(test_unrouted_streams_capped_per_peer),
      cmocka_unit_test(test_held_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
