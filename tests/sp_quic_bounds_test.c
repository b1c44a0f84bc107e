/*
 * sp_quic_bounds_test.c: a registered peer tries to make a real node over
 * QUIC hold more than docs/security.md allows.  The victim V leads four
 * libraries the attacker A is a member of; A, a bare endpoint driven
 * through its transport vtable, opens 24 streams that never name a library
 * and start a 1 MiB first frame each, and on each library a stream that
 * routes with a Heartbeat and then sends all but the last byte of a frame
 * of the largest size.  Everything V's endpoint and node allocate is
 * counted: what they hold beyond their idle state must stay within
 * conn_recv_window + max_frame + 4, times the frame reader's growth
 * (1.25), plus fixed per-stream state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/sync_protocol.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/quic.h"

#define NLIB 4
#define UNROUTED 24

/* ---- a byte-counting allocator (size kept in front of each block) ---- */

typedef struct counter {
  size_t live, peak;
} counter;

typedef union hdr {
  size_t n;
  max_align_t align;
} hdr;

static void *c_malloc(size_t n, void *ud) {
  counter *c = ud;
  hdr *h = malloc(sizeof(hdr) + n);

  if (!h) {
    return NULL;
  }
  h->n = n;
  c->live += n;
  if (c->live > c->peak) {
    c->peak = c->live;
  }
  return h + 1;
}

static void c_free(void *p, void *ud) {
  counter *c = ud;
  hdr *h;

  if (!p) {
    return;
  }
  h = (hdr *)p - 1;
  c->live -= h->n;
  free(h);
}

static void *c_calloc(size_t k, size_t n, void *ud) {
  void *p;

  if (n && k > SIZE_MAX / n) {
    return NULL;
  }
  p = c_malloc(k * n, ud);
  if (p) {
    memset(p, 0, k * n);
  }
  return p;
}

static void *c_realloc(void *p, size_t n, void *ud) {
  counter *c = ud;
  hdr *h, *q;
  size_t old;

  if (!p) {
    return c_malloc(n, ud);
  }
  h = (hdr *)p - 1;
  old = h->n;
  q = realloc(h, sizeof(hdr) + n);
  if (!q) {
    return NULL;
  }
  q->n = n;
  c->live = c->live - old + n;
  if (c->live > c->peak) {
    c->peak = c->live;
  }
  return q + 1;
}

/* ---- two devices ---- */

typedef struct dev {
  sp_identity *id;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  sp_quic_endpoint *ep;
  char addr[64];
} dev;

static dev V, A;
static sp_uuid libs[NLIB];

static dev *by_id(const sp_uuid *d) {
  if (sp_uuid_equal(d, sp_identity_device_id(V.id))) {
    return &V;
  }
  if (sp_uuid_equal(d, sp_identity_device_id(A.id))) {
    return &A;
  }
  return NULL;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *m,
                       void *ud) {
  (void)lib;
  (void)ud;
  *m = by_id(d) != NULL;
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)lib;
  (void)ud;
  *leader = *sp_identity_device_id(V.id);
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *n, void *ud) {
  (void)lib;
  (void)ud;
  *n = 1;
  if (cap >= 1) {
    out[0] = *sp_identity_device_id(A.id);
  }
  return 0;
}

static int r_key(const sp_uuid *d, uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  dev *x = by_id(d);

  (void)ud;
  if (!x) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(key, x->key, SP_PUBLIC_KEY_LEN);
  return 0;
}

static int r_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *d,
                    void *ud) {
  (void)ud;
  if (memcmp(key, V.key, SP_PUBLIC_KEY_LEN) == 0) {
    *d = *sp_identity_device_id(V.id);
    return 0;
  }
  if (memcmp(key, A.key, SP_PUBLIC_KEY_LEN) == 0) {
    *d = *sp_identity_device_id(A.id);
    return 0;
  }
  return SP_ERR_NOT_FOUND;
}

/* V never dials A (no address); A reaches V. */
static int r_hints(const sp_uuid *d, char *buf, size_t len, void *ud) {
  (void)ud;
  if (sp_uuid_equal(d, sp_identity_device_id(V.id)) && V.addr[0]) {
    snprintf(buf, len, "%s", V.addr);
    return 0;
  }
  return SP_ERR_NOT_FOUND;
}

static void registry(sp_registry *reg) {
  sp_registry init = SP_REGISTRY_INIT;

  *reg = init;
  reg->is_member = r_is_member;
  reg->leader = r_leader;
  reg->members = r_members;
  reg->device_key = r_key;
  reg->device_by_key = r_by_key;
  reg->address_hints = r_hints;
}

static void endpoint(dev *d, const sp_mem *mem) {
  sp_quic_config qc;
  sp_registry reg;

  registry(&reg);
  sp_quic_config_default(&qc);
  qc.bind_address = "127.0.0.1:0";
  assert_int_equal(sp_quic_endpoint_new(&d->ep, &qc, d->id, &reg, mem), 0);
  assert_int_equal(
      sp_quic_endpoint_local_address(d->ep, d->addr, sizeof(d->addr)), 0);
}

/* ---- the attacker's streams ---- */

typedef struct astream {
  uint64_t id;
  uint8_t *data;
  size_t len, sent;
} astream;

static void pump(sp_transport *tr, astream *s, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    while (s[i].sent < s[i].len) {
      sp_ssize k = tr->send(s[i].id, s[i].data + s[i].sent,
                            s[i].len - s[i].sent, tr->user_data);
      if (k <= 0) {
        break;
      }
      s[i].sent += (size_t)k;
    }
  }
}

static void run(sp_transport *tr, astream *s, size_t n, double seconds) {
  sp_tstamp end = sp_quic_now() + (sp_tstamp)(seconds * 1e9);

  while (sp_quic_now() < end) {
    struct pollfd p[2];

    pump(tr, s, n);
    assert_int_equal(sp_quic_endpoint_process(A.ep, sp_quic_now()), 0);
    assert_int_equal(sp_quic_endpoint_process(V.ep, sp_quic_now()), 0);
    p[0].fd = sp_quic_endpoint_fd(A.ep);
    p[1].fd = sp_quic_endpoint_fd(V.ep);
    p[0].events = p[1].events = POLLIN;
    (void)poll(p, 2, 5);
  }
}

/* A Heartbeat naming `lib`, as a follower's first frame. */
static size_t hello(uint8_t *out, size_t cap, const sp_uuid *lib) {
  sp_msg m;
  size_t n = 0;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = *lib;
  m.epoch = 1;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  assert_int_equal(sp_msg_encode(&m, out, cap, &n), 0);
  return n;
}

static void prefix(uint8_t *out, size_t n) {
  out[0] = (uint8_t)(n >> 24);
  out[1] = (uint8_t)(n >> 16);
  out[2] = (uint8_t)(n >> 8);
  out[3] = (uint8_t)n;
}

static void test_peer_cannot_exceed_bound(void **state) {
  const size_t frame = SP_MAX_FRAME_DEFAULT;
  counter cnt = {0, 0};
  sp_mem mem = {&cnt, c_malloc, c_free, c_calloc, c_realloc};
  sp_quic_config qc;
  sp_registry reg;
  sp_transport vtr, atr;
  sp_node_config nc;
  sp_node *node;
  sp_mem_store *stores[NLIB];
  sp_handler *h[NLIB];
  astream s[UNROUTED + NLIB];
  size_t i, base, bound, held;

  (void)state;
  sp_quic_config_default(&qc);
  assert_int_equal(sp_identity_generate(&V.id, NULL, NULL), 0);
  assert_int_equal(sp_identity_generate(&A.id, NULL, NULL), 0);
  sp_identity_public_key(V.id, V.key);
  sp_identity_public_key(A.id, A.key);
  endpoint(&V, &mem);
  endpoint(&A, NULL);
  registry(&reg);
  sp_quic_endpoint_get_transport(V.ep, &vtr);
  sp_node_config_default(&nc);
  nc.device_id = *sp_identity_device_id(V.id);
  assert_int_equal(sp_node_new(&node, &nc, &reg, NULL, &vtr, &mem), 0);
  assert_int_equal(sp_quic_endpoint_attach(V.ep, node), 0);
  for (i = 0; i < NLIB; ++i) {
    sp_handler_config hc;
    sp_store st;

    sp_uuid_generate(&libs[i]);
    assert_int_equal(sp_mem_store_new(&stores[i], NULL), 0);
    sp_mem_store_get_vtable(stores[i], &st);
    sp_handler_config_default(&hc);
    hc.library_id = libs[i];
    hc.role = SP_ROLE_LEADER;
    assert_int_equal(sp_handler_new(&h[i], node, &hc, &st, sp_quic_now()),
                     0);
  }
  sp_quic_endpoint_get_transport(A.ep, &atr);

  /* The connection, idle: the baseline. */
  memset(s, 0, sizeof(s));
  assert_int_equal(atr.open_stream(sp_identity_device_id(V.id), &libs[0],
                                   &s[0].id, atr.user_data),
                   0);
  s[0].data = calloc(1, 64);
  s[0].len = hello(s[0].data, 64, &libs[0]);
  run(&atr, s, 1, 0.3);
  base = cnt.live;

  /* 24 streams naming no library, each a 1 MiB first frame begun... */
  for (i = 1; i <= UNROUTED; ++i) {
    assert_int_equal(atr.open_stream(sp_identity_device_id(V.id), &libs[0],
                                     &s[i].id, atr.user_data),
                     0);
    s[i].len = SP_FRAME_HEADER_LEN + 1024 * 1024 - 1;
    s[i].data = calloc(1, s[i].len);
    assert_non_null(s[i].data);
    prefix(s[i].data, 1024 * 1024);
  }
  /* ...and on each library, after its Heartbeat, all but the last byte
   * of a frame of the largest size (stream 0 carries library 0's). */
  for (i = 0; i < NLIB; ++i) {
    astream *x = i == 0 ? &s[0] : &s[UNROUTED + i];
    size_t n;

    if (i > 0) {
      assert_int_equal(atr.open_stream(sp_identity_device_id(V.id), &libs[i],
                                       &x->id, atr.user_data),
                       0);
    }
    free(x->data);
    x->data = calloc(1, 64 + SP_FRAME_HEADER_LEN + frame);
    assert_non_null(x->data);
    n = hello(x->data, 64, &libs[i]);
    if (i == 0) {
      x->sent = n; /* already sent */
    }
    prefix(x->data + n, frame);
    x->len = n + SP_FRAME_HEADER_LEN + frame - 1;
  }
  cnt.peak = cnt.live;
  run(&atr, s, UNROUTED + NLIB, 3.0);

  held = cnt.peak - base;
  bound = (qc.conn_recv_window + frame + SP_FRAME_HEADER_LEN) / 4 * 5 +
          (UNROUTED + NLIB) * 16384;
  {
    size_t sent = 0;
    for (i = 0; i < UNROUTED + NLIB; ++i) {
      sent += s[i].sent;
    }
    printf("attacker handed %zu bytes to its transport; victim held at most "
           "%zu bytes above idle (bound %zu)\n",
           sent, held, bound);
  }
  assert_true(held <= bound);

  for (i = 0; i < NLIB; ++i) {
    sp_handler_del(h[i]);
    sp_mem_store_del(stores[i]);
  }
  sp_node_del(node);
  sp_quic_endpoint_del(V.ep);
  sp_quic_endpoint_del(A.ep);
  assert_int_equal(cnt.live, 0);
  for (i = 0; i < UNROUTED + NLIB; ++i) {
    free(s[i].data);
  }
  sp_identity_del(V.id);
  sp_identity_del(A.id);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peer_cannot_exceed_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
