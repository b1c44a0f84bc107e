/*
 * sp_quic_window_test.c: what a peer can make an endpoint and its node
 * hold of received bytes.  B's fake node reads frames as the real one does
 * (sp_node_stream_held reports the bytes of an unfinished frame); A opens
 * many streams and sends each an unfinished large frame.  B's transport
 * plus node must never hold more than conn_recv_window + one frame
 * (docs/security.md), and frames larger than a window must still complete.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

typedef struct watch {
  qt_device *b;
  size_t frame;
  /* The bound, and the most B held at any step. */
  uint64_t bound;
  uint64_t max_held;
  /* Stop once this many bytes arrived at B's node (0: never). */
  uint64_t until;
} watch;

/* Received bytes B holds: in its streams' buffers, and in its node's
 * unfinished frames. */
static uint64_t b_holds(const watch *w) { return qt_held(w->b, w->frame); }

static int step(void *arg) {
  watch *w = arg;
  uint64_t h = b_holds(w);

  if (h > w->max_held) {
    w->max_held = h;
  }
  return w->until && w->b->node->total_received >= w->until;
}

static void start(qt_device *a, qt_device *b, size_t frame) {
  qt_pair_start(a, b);
  b->node->hold_frame = frame;
  b->node->count_only = 1;
}

/* `n` streams from A to B in a new library `lib`, each given `bytes` of
 * its fixed pattern (seeded with its index); kept in `s` unless NULL. */
static void open_streams(qt_device *a, qt_device *b, sp_uuid *lib,
                         fn_stream **s, size_t n, uint64_t bytes) {
  size_t i;

  sp_uuid_generate(lib);
  for (i = 0; i < n; ++i) {
    int rv;
    fn_stream *x = fn_open(a->node, sp_identity_device_id(b->id), lib, &rv);
    assert_non_null(x);
    x->fixed_pattern = 1;
    fn_produce(a->node, x, bytes, (uint8_t)i, 0);
    if (s) {
      s[i] = x;
    }
  }
}

/* Watch B's holdings against the bound for `frame`-byte frames. */
static void watch_init(watch *w, qt_device *b, size_t frame,
                       const sp_quic_config *cfg) {
  memset(w, 0, sizeof(*w));
  w->b = b;
  w->frame = frame;
  w->bound = cfg->conn_recv_window + frame;
}

/* 24 streams, each an unfinished frame of the largest size (4 MiB body):
 * the reported case held 24 x 4 MiB.  The stated bound holds at every
 * step, and B stops granting credit at it. */
static void test_unfinished_frames_bounded(void **state) {
  enum { STREAMS = 24 };
  const size_t frame = SP_MAX_FRAME_DEFAULT + SP_FRAME_HEADER_LEN;
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  sp_quic_config cfg = qt_config();
  watch w;
  sp_uuid lib;

  (void)state;
  start(&a, &b, frame);
  /* Everything but the frame's last byte. */
  open_streams(&a, &b, &lib, NULL, STREAMS, frame - 1);
  watch_init(&w, &b, frame, &cfg);
  qt_run(d, 2, NULL, step, &w, 2.0);
  printf("%d streams with an unfinished %zu-byte frame each: B received "
         "%llu bytes, held at most %llu (bound %llu)\n",
         STREAMS, frame, (unsigned long long)b.node->total_received,
         (unsigned long long)w.max_held, (unsigned long long)w.bound);
  assert_true(w.max_held <= w.bound);
  assert_true(b.node->total_received <= w.bound);
  /* The allowance was used: one frame could grow past the windows. */
  assert_true(b.node->total_received > cfg.conn_recv_window);
  qt_device_free(&a);
  qt_device_free(&b);
}

/* Frames larger than the stream window (3 MiB against 1 MiB) on several
 * streams at once all complete, within the same bound. */
static void test_large_frames_complete(void **state) {
  enum { STREAMS = 3, FRAMES = 2 };
  const size_t frame = 3 * 1024 * 1024;
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  sp_quic_config cfg = qt_config();
  fn_stream *s[STREAMS];
  watch w;
  sp_uuid lib;
  size_t i;

  (void)state;
  start(&a, &b, frame);
  open_streams(&a, &b, &lib, s, STREAMS, (uint64_t)frame * FRAMES);
  watch_init(&w, &b, frame, &cfg);
  w.until = (uint64_t)frame * FRAMES * STREAMS;
  assert_true(qt_run(d, 2, NULL, step, &w, 10.0));
  for (i = 0; i < b.node->nstreams; ++i) {
    assert_true(b.node->streams[i].remote);
    assert_int_equal(b.node->streams[i].received, (uint64_t)frame * FRAMES);
  }
  assert_int_equal(b.node->nstreams, STREAMS);
  assert_true(w.max_held <= w.bound);
  qt_device_free(&a);
  qt_device_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unfinished_frames_bounded),
      cmocka_unit_test(test_large_frames_complete),
  };
  return QT_RUN_TESTS(tests);
}
