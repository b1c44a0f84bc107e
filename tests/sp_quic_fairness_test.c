/*
 * sp_quic_fairness_test.c: streams of one connection share its sending
 * side.  A keeps one stream to B fed without pause (a follower catching
 * up on a large log) and then sends one small frame on a second stream of
 * the same connection (another library's Heartbeat).  That frame must not
 * wait for the first stream to run dry: it reaches B's node before the
 * first stream delivers more than what can already be ahead of it, the
 * peer's connection window plus one process step's receive batches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

#define SMALL 100

typedef struct watch {
  qt_device *b;
  /* The fed stream's id at B, once B saw it. */
  uint64_t bulk_id;
  uint64_t until;
} watch;

/* The fed stream (B's first remote stream). */
static fn_stream *bulk_at_b(const watch *w) {
  return fn_first_remote(w->b->node);
}

/* The second stream at B, once B saw it. */
static fn_stream *small_at_b(const watch *w) {
  sp_node *n = w->b->node;
  size_t i;

  for (i = 0; i < n->nstreams; ++i) {
    if (n->streams[i].remote && n->streams[i].id != w->bulk_id) {
      return &n->streams[i];
    }
  }
  return NULL;
}

static int bulk_flowing(void *arg) {
  watch *w = arg;
  fn_stream *s = bulk_at_b(w);

  return s && s->received >= w->until;
}

static int small_arrived(void *arg) {
  watch *w = arg;
  fn_stream *s = small_at_b(w);
  fn_stream *bulk = bulk_at_b(w);

  return (s && s->received >= SMALL) || bulk->received >= w->until;
}

static void test_second_stream_not_starved(void **state) {
  const uint64_t endless = (uint64_t)1 << 40;
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  sp_quic_config cfg = qt_config();
  uint8_t msg[SMALL];
  fn_stream *bulk, *small, *bulk_b, *small_b;
  uint64_t before, delta, bound;
  sp_uuid lib1, lib2;
  sp_tstamp t0;
  watch w;
  int rv;

  (void)state;
  qt_device_init(&a);
  qt_device_init(&b);
  qt_device_start(&a, &cfg);
  qt_device_start(&b, &cfg);
  qt_know(&a, &b);
  qt_know(&b, &a);
  b.node->count_only = 1;
  sp_uuid_generate(&lib1);
  sp_uuid_generate(&lib2);

  /* The fed stream, in full flow. */
  bulk = fn_open(a.node, sp_identity_device_id(b.id), &lib1, &rv);
  assert_non_null(bulk);
  bulk->fixed_pattern = 1;
  fn_produce(a.node, bulk, endless, 1, 0);
  memset(&w, 0, sizeof(w));
  w.b = &b;
  w.until = 8 * 1024 * 1024;
  assert_true(qt_run(d, 2, NULL, bulk_flowing, &w, 20.0));
  w.bulk_id = bulk_at_b(&w)->id;

  /* One small frame on a second stream of the same connection. */
  small = fn_open(a.node, sp_identity_device_id(b.id), &lib2, &rv);
  assert_non_null(small);
  assert_ptr_equal(sp_quic_stream_find(a.ep, small->id)->conn,
                   sp_quic_stream_find(a.ep, bulk->id)->conn);
  memset(msg, 0x5a, sizeof(msg));
  assert_int_equal(fn_send(a.node, small, msg, sizeof(msg)), SMALL);
  bulk_b = bulk_at_b(&w);
  before = bulk_b->received;
  /* Everything that can be ahead of the frame: what the connection
   * window lets A send before it, and what one process step of B reads
   * (receive batches of at most a full-size datagram each) before it
   * hands the node anything. */
  bound = cfg.conn_recv_window +
          (uint64_t)16 * SP_QUIC_RECV_BATCH * SP_QUIC_MAX_RECV_PAYLOAD;
  w.until = before + 16 * bound;
  t0 = sp_quic_now();
  (void)qt_run(d, 2, NULL, small_arrived, &w, 20.0);
  small_b = small_at_b(&w);
  delta = bulk_b->received - before;
  printf("the small frame %s after %.3f s; the fed stream delivered %llu "
         "bytes meanwhile (bound %llu)\n",
         small_b && small_b->received >= SMALL ? "arrived" : "had not arrived",
         qt_seconds(sp_quic_now() - t0), (unsigned long long)delta,
         (unsigned long long)bound);
  assert_non_null(small_b);
  assert_int_equal(small_b->received, SMALL);
  assert_true(delta <= bound);
  /* The fed stream kept flowing. */
  assert_true(bulk_b->received > before);
  assert_int_equal(a.node->reentrant_calls + b.node->reentrant_calls, 0);
  qt_device_free(&a);
  qt_device_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_second_stream_not_starved),
  };
  return QT_RUN_TESTS(tests);
}
