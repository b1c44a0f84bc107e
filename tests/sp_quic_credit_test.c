/*
 * sp_quic_credit_test.c: receive credit of one connection over its
 * streams' lives (sp_quic_stream.c).  B's fake node reads frames as the
 * real one does and reports what it holds of an unfinished frame; the
 * transport must give that back to the connection window when the stream
 * ends, and pass the large-frame allowance only to a frame that cannot
 * complete inside its stream window.
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

#define BIG_FRAME (3 * 1024 * 1024)
/* Pages a little under 64 KiB: their ends rarely meet a packet's. */
#define PAGE_FRAME 65521

typedef struct until_bytes {
  sp_node *n;
  uint64_t bytes;
} until_bytes;

static int total_has(void *arg) {
  until_bytes *u = arg;
  return u->n->total_received >= u->bytes;
}

static int swept(void *arg) {
  qt_device *b = arg;
  return b->ep->nstreams == 0;
}

static void start(qt_device *a, qt_device *b) {
  qt_pair_start(a, b);
  b->node->count_only = 1;
}

/* The QUIC stream id under B's node stream `s`. */
static int64_t qsid_of(const sp_node *n, const fn_stream *s) {
  sp_quic_stream *t = sp_quic_stream_find(n->ep, s->id);
  return t ? t->qsid : -1;
}

static void frame_held(const fn_stream *s, size_t frame, size_t *held,
                       size_t *need) {
  *held = (size_t)(s->received % frame);
  *need = *held ? frame - *held : 0;
}

/* A's first stream carries pages, every later one a large frame. */
static void held_pages_then_big(const sp_node *n, const fn_stream *s,
                                size_t *held, size_t *need) {
  frame_held(s, qsid_of(n, s) == 0 ? PAGE_FRAME : BIG_FRAME, held, need);
}

/* A's first stream was refused: the node keeps the bytes of the frame it
 * had begun but reads no more (need 0); later ones carry large frames. */
static void held_refused_then_big(const sp_node *n, const fn_stream *s,
                                  size_t *held, size_t *need) {
  if (qsid_of(n, s) == 0) {
    *held = (size_t)s->received;
    *need = 0;
    return;
  }
  frame_held(s, BIG_FRAME, held, need);
}

/* The B-side (remote) stream the node heard of last. */
static fn_stream *last_remote(sp_node *n) {
  size_t i = n->nstreams;

  while (i > 0) {
    if (n->streams[--i].remote) {
      return &n->streams[i];
    }
  }
  return NULL;
}

/* A peer that ends stream after stream in the middle of a large frame
 * (FIN or reset) must not shrink the connection's window: what the node
 * held of each unfinished frame is given back when the stream ends.
 * Before, each round kept 1.5 MiB of the 4 MiB window (plus the 3 MiB
 * allowance) for good, and the last frame stalled. */
static void test_ended_mid_frame_keeps_window(void **state) {
  enum { ROUNDS = 4 };
  const uint64_t half = BIG_FRAME / 2;
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  until_bytes u;
  sp_uuid lib;
  fn_stream *s;
  int i, rv;

  (void)state;
  start(&a, &b);
  b.node->hold_frame = BIG_FRAME;
  sp_uuid_generate(&lib);
  for (i = 0; i < ROUNDS; ++i) {
    s = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
    assert_non_null(s);
    s->fixed_pattern = 1;
    fn_produce(a.node, s, half, (uint8_t)i, 0);
    u.n = b.node;
    u.bytes = half * (uint64_t)(i + 1);
    assert_true(qt_run(d, 2, NULL, total_has, &u, 5.0));
    /* FIN and reset in turn, both in the middle of the frame. */
    assert_int_equal(fn_close(a.node, s, i % 2 ? SP_ERR_CLOSED : 0), 0);
    assert_true(qt_run(d, 2, NULL, swept, &b, 5.0));
    assert_int_equal(last_remote(b.node)->closed, 1);
  }
  s = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(s);
  s->fixed_pattern = 1;
  fn_produce(a.node, s, BIG_FRAME, 9, 0);
  u.bytes = half * ROUNDS + BIG_FRAME;
  rv = qt_run(d, 2, NULL, total_has, &u, 5.0);
  printf("after %d streams ended mid-frame, a %d-byte frame: B received "
         "%llu of %llu bytes\n",
         ROUNDS, BIG_FRAME, (unsigned long long)b.node->total_received,
         (unsigned long long)u.bytes);
  assert_true(rv);
  qt_device_free(&a);
  qt_device_free(&b);
}

/* The page stream is fed as a leader feeds it, a little at a time
 * (whenever the transport has handed all of it to QUIC), so other streams
 * get their turn to send; its writes do not line up with its frames. */
#define PAGE_FEED 40000

typedef struct pages_watch {
  qt_device *a, *b;
  fn_stream *feed;
  const fn_stream *pages;
  uint64_t until;
} pages_watch;

static void feed_pages(pages_watch *w) {
  sp_quic_stream *t = sp_quic_stream_find(w->a->ep, w->feed->id);

  if (t && t->sent == t->end && w->feed->sent == w->feed->to_send) {
    w->feed->to_send += PAGE_FEED;
    fn_pump(w->a->node, w->feed);
  }
}

static int pages_flowing(void *arg) {
  pages_watch *w = arg;
  feed_pages(w);
  return w->b->node->total_received >= w->until;
}

/* The stream after the page stream received its whole large frame. */
static int big_done(void *arg) {
  pages_watch *w = arg;
  const fn_stream *s = last_remote(w->b->node);
  feed_pages(w);
  return s != w->pages && s->received >= BIG_FRAME;
}

/* One stream carries a steady run of pages (frames under the stream
 * window), another a frame larger than the stream window: the allowance
 * goes to the frame that needs it, and both streams move.  Before, the
 * page stream took the allowance with its first unfinished page and kept
 * it until a delivery happened to end on a page boundary. */
static void test_pages_leave_allowance(void **state) {
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  sp_uuid lib;
  fn_stream *big, *bbig;
  pages_watch w;
  uint64_t pages_before;
  int rv;

  (void)state;
  start(&a, &b);
  b.node->held_of = held_pages_then_big;
  sp_uuid_generate(&lib);
  memset(&w, 0, sizeof(w));
  w.a = &a;
  w.b = &b;
  w.feed = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(w.feed);
  w.feed->fixed_pattern = 1;
  w.until = 2 * 1024 * 1024;
  assert_true(qt_run(d, 2, NULL, pages_flowing, &w, 5.0));
  w.pages = last_remote(b.node);
  assert_int_equal(qsid_of(b.node, w.pages), 0);
  pages_before = w.pages->received;

  big = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(big);
  big->fixed_pattern = 1;
  fn_produce(a.node, big, BIG_FRAME, 2, 0);
  rv = qt_run(d, 2, NULL, big_done, &w, 3.0);
  bbig = last_remote(b.node);
  printf("page stream received %llu bytes meanwhile; large frame: %llu "
         "of %d bytes\n",
         (unsigned long long)(w.pages->received - pages_before),
         (unsigned long long)(bbig != w.pages ? bbig->received : 0),
         BIG_FRAME);
  assert_true(rv);
  assert_true(w.pages->received > pages_before);
  qt_device_free(&a);
  qt_device_free(&b);
}

/* A refused stream keeps the bytes of the frame it had begun but will
 * never read more (need 0): it must not take the allowance, or a large
 * frame on another stream waits for it for ever. */
static void test_refused_stream_no_allowance(void **state) {
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  until_bytes u;
  sp_uuid lib;
  fn_stream *r, *big, *bbig;
  int rv;

  (void)state;
  start(&a, &b);
  b.node->held_of = held_refused_then_big;
  sp_uuid_generate(&lib);
  r = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(r);
  fn_produce(a.node, r, 100, 1, 0);
  u.n = b.node;
  u.bytes = 100;
  assert_true(qt_run(d, 2, NULL, total_has, &u, 5.0));

  big = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(big);
  big->fixed_pattern = 1;
  fn_produce(a.node, big, BIG_FRAME, 2, 0);
  u.bytes = 100 + BIG_FRAME;
  rv = qt_run(d, 2, NULL, total_has, &u, 3.0);
  bbig = last_remote(b.node);
  printf("large frame beside a refused stream: %llu of %d bytes\n",
         (unsigned long long)(bbig ? bbig->received : 0), BIG_FRAME);
  assert_true(rv);
  qt_device_free(&a);
  qt_device_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ended_mid_frame_keeps_window),
      cmocka_unit_test(test_pages_leave_allowance),
      cmocka_unit_test(test_refused_stream_no_allowance),
  };
  return QT_RUN_TESTS(tests);
}
