/*
 * sp_quic_window_edge_test.c: a frame ending just past the limit the peer
 * knows must complete.  ngtcp2 0.12 announces a raised limit (MAX_DATA,
 * MAX_STREAM_DATA) only once it is more than half a window past the last
 * one announced, and the transport credits only bytes the node consumed:
 * a small frame consumed (credited, not announced) and then a frame
 * ending less than half a window past the announced limit left the
 * sender blocked there for ever (found by a benchmark).  B's fake node
 * reads each stream as a list of frames of given sizes and holds the
 * unfinished one, as the real frame reader does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"

#define SMALL 865
#define MAX_FRAMES 4

/* The frames of B's k-th remote stream, in order; 0 ends the list. */
static size_t frames[2][MAX_FRAMES];

static void held_of(const sp_node *n, const fn_stream *s, size_t *held,
                    size_t *need) {
  size_t k = (size_t)(s - n->streams), i;
  uint64_t r = s->received;

  *held = *need = 0;
  if (k >= 2) {
    return;
  }
  for (i = 0; i < MAX_FRAMES && frames[k][i]; ++i) {
    if (r < frames[k][i]) {
      *held = (size_t)r;
      *need = r ? frames[k][i] - (size_t)r : 0;
      return;
    }
    r -= frames[k][i];
  }
}

static uint64_t total(size_t k) {
  uint64_t t = 0;
  size_t i;

  for (i = 0; i < MAX_FRAMES && frames[k][i]; ++i) {
    t += frames[k][i];
  }
  return t;
}

static void start(qt_device *a, qt_device *b, const sp_quic_config *cfg) {
  qt_device_init(a);
  qt_device_init(b);
  qt_device_start(a, cfg);
  qt_device_start(b, cfg);
  qt_know(a, b);
  qt_know(b, a);
  b->node->held_of = held_of;
  b->node->count_only = 1;
}

/* A stream from A to B carrying frames[k]; returns once B has it all, or
 * fails after two seconds (the deadlock never ends: the sender waits for
 * credit nobody announces). */
static void send_frames(qt_device *a, qt_device *b, const sp_uuid *lib,
                        size_t k) {
  qt_device *d[2] = {a, b};
  qt_nth_has w;
  fn_stream *x;
  int rv;

  x = fn_open(a->node, sp_identity_device_id(b->id), lib, &rv);
  assert_non_null(x);
  x->fixed_pattern = 1;
  fn_produce(a->node, x, total(k), (uint8_t)k, 0);
  w.node = b->node;
  w.k = k;
  w.bytes = total(k);
  assert_true(qt_run(d, 2, NULL, qt_remote_has, &w, 2.0));
}

/* One stream: a small frame, then `big` bytes. */
static void one_stream(size_t big) {
  qt_device a, b;
  sp_quic_config cfg = qt_config();
  sp_uuid lib;

  memset(frames, 0, sizeof(frames));
  frames[0][0] = SMALL;
  frames[0][1] = big;
  start(&a, &b, &cfg);
  sp_uuid_generate(&lib);
  send_frames(&a, &b, &lib, 0);
  qt_device_free(&a);
  qt_device_free(&b);
}

/* The reported case: 1,048,625 bytes against a 1 MiB stream window, a
 * frame that takes the allowance and still needs 914 bytes past it. */
static void test_stream_frame_just_over_window(void **state) {
  (void)state;
  one_stream(qt_config().stream_recv_window + 49);
}

/* A frame inside the window whose end lies past the announced limit. */
static void test_stream_frame_just_under_window(void **state) {
  (void)state;
  one_stream(qt_config().stream_recv_window - 100);
}

/* The same edge on the connection window: the small frame on one stream,
 * then on another a frame that fits its stream window but ends past the
 * connection limit announced. */
static void conn_edge(size_t big) {
  qt_device a, b;
  sp_quic_config cfg = qt_config();
  sp_uuid lib;

  cfg.stream_recv_window = 1024 * 1024;
  cfg.conn_recv_window = 1024 * 1024;
  memset(frames, 0, sizeof(frames));
  frames[0][0] = SMALL;
  frames[1][0] = big;
  start(&a, &b, &cfg);
  sp_uuid_generate(&lib);
  send_frames(&a, &b, &lib, 0);
  send_frames(&a, &b, &lib, 1);
  qt_device_free(&a);
  qt_device_free(&b);
}

static void test_conn_frame_just_under_window(void **state) {
  (void)state;
  conn_edge(1024 * 1024 - 100);
}

static void test_conn_frame_just_over_window(void **state) {
  (void)state;
  conn_edge(1024 * 1024 + 49);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stream_frame_just_over_window),
      cmocka_unit_test(test_stream_frame_just_under_window),
      cmocka_unit_test(test_conn_frame_just_under_window),
      cmocka_unit_test(test_conn_frame_just_over_window),
  };
  return QT_RUN_TESTS(tests);
}
