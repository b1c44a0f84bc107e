/*
 * sp_frame_test.c: reassembling frames from a stream cut anywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sp_codec_int.h"
#include "sp_test_mem.h"

/* A stream of frames and the bodies it carries. */
typedef struct stream {
  uint8_t *bytes;
  size_t len;
  size_t nframes;
  size_t body_off[64];
  size_t body_len[64];
} stream;

static void stream_add(stream *s, const uint8_t *body, size_t n) {
  uint8_t *p = realloc(s->bytes, s->len + 4 + n);

  assert_non_null(p);
  assert_true(s->nframes < 64);
  s->bytes = p;
  p += s->len;
  p[0] = (uint8_t)(n >> 24);
  p[1] = (uint8_t)(n >> 16);
  p[2] = (uint8_t)(n >> 8);
  p[3] = (uint8_t)n;
  memcpy(p + 4, body, n);
  s->body_off[s->nframes] = s->len + 4;
  s->body_len[s->nframes] = n;
  ++s->nframes;
  s->len += 4 + n;
}

static void stream_free(stream *s) { free(s->bytes); }

/* Bodies collected from a reader, copied at once (valid until next call). */
typedef struct got {
  size_t n;
  uint8_t *body[64];
  size_t len[64];
} got;

static void got_free(got *g) {
  size_t i;

  for (i = 0; i < g->n; ++i) {
    free(g->body[i]);
  }
  g->n = 0;
}

/* Feeds `len` bytes (possibly several frames), collecting bodies. */
static int feed(sp_frame_reader *rd, const uint8_t *p, size_t len, got *g) {
  while (len > 0) {
    const uint8_t *body;
    size_t blen;
    sp_ssize n = sp_frame_reader_read(rd, p, len, &body, &blen);

    if (n < 0) {
      if (n != SP_ERR_NOMEM) {
        print_message("reader refused: %s\n", sp_err_name((int)n));
      }
      return (int)n;
    }
    assert_true(n > 0 && (size_t)n <= len);
    if (body) {
      assert_true(g->n < 64);
      assert_int_equal(sp_frame_reader_pending(rd), 0);
      g->body[g->n] = malloc(blen);
      assert_non_null(g->body[g->n]);
      memcpy(g->body[g->n], body, blen);
      g->len[g->n++] = blen;
    } else {
      /* Nothing completed: everything was taken. */
      assert_int_equal((size_t)n, len);
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void check_got(const stream *s, const got *g) {
  size_t i;

  assert_int_equal(g->n, s->nframes);
  for (i = 0; i < g->n; ++i) {
    assert_int_equal(g->len[i], s->body_len[i]);
    assert_memory_equal(g->body[i], s->bytes + s->body_off[i], g->len[i]);
  }
}

static void small_stream(stream *s) {
  static const uint8_t a[] = {0xaa};
  static const uint8_t b[] = {1, 2, 3, 4, 5};
  static const uint8_t c[] = {0x00, 0x00, 0x00};

  memset(s, 0, sizeof(*s));
  stream_add(s, a, sizeof(a));
  stream_add(s, b, sizeof(b));
  stream_add(s, c, sizeof(c)); /* a body of zeros looks like a prefix */
}

static void test_every_two_split_points(void **state) {
  stream s;
  size_t i, j;

  (void)state;
  small_stream(&s);
  for (i = 0; i <= s.len; ++i) {
    for (j = i; j <= s.len; ++j) {
      sp_frame_reader *rd;
      got g = {0};

      assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
      assert_int_equal(feed(rd, s.bytes, i, &g), 0);
      assert_int_equal(feed(rd, s.bytes + i, j - i, &g), 0);
      assert_int_equal(feed(rd, s.bytes + j, s.len - j, &g), 0);
      check_got(&s, &g);
      assert_int_equal(sp_frame_reader_pending(rd), 0);
      got_free(&g);
      sp_frame_reader_del(rd);
    }
  }
  stream_free(&s);
}

static void test_one_byte_at_a_time(void **state) {
  stream s;
  sp_frame_reader *rd;
  got g = {0};
  size_t i, in_frame = 0, k = 0;

  (void)state;
  small_stream(&s);
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  for (i = 0; i < s.len; ++i) {
    size_t before = g.n;
    assert_int_equal(feed(rd, s.bytes + i, 1, &g), 0);
    ++in_frame;
    if (g.n != before) {
      in_frame = 0;
      ++k;
    }
    /* pending counts the bytes of the frame in progress, prefix included */
    assert_int_equal(sp_frame_reader_pending(rd), in_frame);
  }
  assert_int_equal(k, 3);
  check_got(&s, &g);
  got_free(&g);
  sp_frame_reader_del(rd);
  stream_free(&s);
}

static uint32_t rnd(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

static void test_random_chunkings(void **state) {
  uint32_t seed = 12345;
  uint8_t body[5000];
  int round;

  (void)state;
  for (round = 0; round < 300; ++round) {
    stream s;
    sp_frame_reader *rd;
    got g = {0};
    size_t i, off = 0, nf = 1 + rnd(&seed) % 20;
    size_t maxchunk = 1 + rnd(&seed) % 6000;

    memset(&s, 0, sizeof(s));
    for (i = 0; i < nf; ++i) {
      size_t n = 1 + rnd(&seed) % sizeof(body), k;
      for (k = 0; k < n; ++k) {
        body[k] = (uint8_t)rnd(&seed);
      }
      stream_add(&s, body, n);
    }
    assert_int_equal(sp_frame_reader_new(&rd, sizeof(body), NULL), 0);
    while (off < s.len) {
      size_t c = 1 + rnd(&seed) % maxchunk;
      if (c > s.len - off) {
        c = s.len - off;
      }
      assert_int_equal(feed(rd, s.bytes + off, c, &g), 0);
      off += c;
    }
    check_got(&s, &g);
    got_free(&g);
    sp_frame_reader_del(rd);
    stream_free(&s);
  }
}

static void test_in_place_when_whole(void **state) {
  stream s;
  sp_frame_reader *rd;
  const uint8_t *body;
  size_t blen;
  sp_ssize n;

  (void)state;
  small_stream(&s);
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  /* Three whole frames in one chunk: each body points into the chunk. */
  n = sp_frame_reader_read(rd, s.bytes, s.len, &body, &blen);
  assert_int_equal(n, 5);
  assert_ptr_equal(body, s.bytes + 4);
  assert_int_equal(blen, 1);
  n = sp_frame_reader_read(rd, s.bytes + 5, s.len - 5, &body, &blen);
  assert_int_equal(n, 9);
  assert_ptr_equal(body, s.bytes + 9);
  n = sp_frame_reader_read(rd, s.bytes + 14, s.len - 14, &body, &blen);
  assert_int_equal(n, 7);
  assert_ptr_equal(body, s.bytes + 18);
  assert_int_equal(blen, 3);

  /* Prefix split off in an earlier call, body whole: still in place. */
  n = sp_frame_reader_read(rd, s.bytes + 5, 2, &body, &blen);
  assert_int_equal(n, 2);
  assert_null(body);
  n = sp_frame_reader_read(rd, s.bytes + 7, 7, &body, &blen);
  assert_int_equal(n, 7);
  assert_ptr_equal(body, s.bytes + 9);
  assert_int_equal(blen, 5);

  /* Body split: returned from the reader's buffer, not the input. */
  n = sp_frame_reader_read(rd, s.bytes + 5, 6, &body, &blen);
  assert_int_equal(n, 6);
  assert_null(body);
  assert_int_equal(sp_frame_reader_pending(rd), 6);
  n = sp_frame_reader_read(rd, s.bytes + 11, 3, &body, &blen);
  assert_int_equal(n, 3);
  assert_non_null(body);
  assert_true(body < s.bytes || body >= s.bytes + s.len);
  assert_memory_equal(body, s.bytes + 9, 5);
  sp_frame_reader_del(rd);
  stream_free(&s);
}

static void test_empty_input(void **state) {
  sp_frame_reader *rd;
  const uint8_t *body = (const uint8_t *)"x";
  size_t blen = 9;

  (void)state;
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  assert_int_equal(sp_frame_reader_read(rd, NULL, 0, &body, &blen), 0);
  assert_null(body);
  assert_int_equal(blen, 0);
  assert_int_equal(sp_frame_reader_pending(rd), 0);
  sp_frame_reader_del(rd);
}

static void test_oversize_refused_before_buffering(void **state) {
  static const uint8_t at_max[] = {0, 0, 0, 100};
  uint8_t data[4 + 200];
  sp_test_mem t;
  sp_frame_reader *rd;
  const uint8_t *body;
  size_t blen;
  long after_new;

  (void)state;
  memset(data, 0x61, sizeof(data));
  data[0] = 0;
  data[1] = 0;
  data[2] = 0;
  data[3] = 101;
  sp_test_mem_init(&t);
  assert_int_equal(sp_frame_reader_new(&rd, 100, &t.mem), 0);
  after_new = t.count;
  /* Prefix split over two calls, followed by body bytes. */
  assert_int_equal(sp_frame_reader_read(rd, data, 3, &body, &blen), 3);
  assert_int_equal(sp_frame_reader_read(rd, data + 3, 50, &body, &blen),
                   SP_ERR_FRAME_TOO_LARGE);
  assert_null(body);
  /* No body byte was buffered: not a single allocation since creation. */
  assert_int_equal(t.count, after_new);
  /* The stream is lost: the reader stays in error. */
  assert_int_equal(sp_frame_reader_read(rd, data + 4, 10, &body, &blen),
                   SP_ERR_FRAME_TOO_LARGE);
  assert_int_equal(t.count, after_new);
  sp_frame_reader_del(rd);

  /* Exactly the maximum is fine. */
  assert_int_equal(sp_frame_reader_new(&rd, 100, &t.mem), 0);
  assert_int_equal(sp_frame_reader_read(rd, at_max, 4, &body, &blen), 4);
  assert_int_equal(sp_frame_reader_read(rd, data + 4, 100, &body, &blen),
                   100);
  assert_non_null(body);
  assert_int_equal(blen, 100);
  sp_frame_reader_del(rd);

  /* The largest prefix there is. */
  memset(data, 0xff, 4);
  assert_int_equal(sp_frame_reader_new(&rd, SP_MAX_FRAME_LIMIT, &t.mem), 0);
  after_new = t.count;
  assert_int_equal(sp_frame_reader_read(rd, data, 8, &body, &blen),
                   SP_ERR_FRAME_TOO_LARGE);
  assert_int_equal(t.count, after_new);
  sp_frame_reader_del(rd);
  assert_int_equal(t.live, 0);
}

static void test_empty_frame(void **state) {
  static const uint8_t zero[] = {0, 0, 0, 0, 0, 0, 0, 1, 0x42};
  sp_frame_reader *rd;
  const uint8_t *body;
  size_t blen;

  (void)state;
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  assert_int_equal(sp_frame_reader_read(rd, zero, sizeof(zero), &body, &blen),
                   SP_ERR_EMPTY_FRAME);
  assert_null(body);
  assert_int_equal(sp_frame_reader_read(rd, zero + 4, 5, &body, &blen),
                   SP_ERR_EMPTY_FRAME);
  sp_frame_reader_del(rd);
}

static void test_max_frame_setting(void **state) {
  uint8_t pfx[4];
  sp_frame_reader *rd;
  const uint8_t *body;
  size_t blen;

  (void)state;
  assert_int_equal(sp_frame_reader_new(&rd, SP_MAX_FRAME_LIMIT + 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_frame_reader_new(&rd, SIZE_MAX, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_frame_reader_new(NULL, 0, NULL),
                   SP_ERR_INVALID_ARGUMENT);

  /* 0 means the default maximum: accepted at it, refused one past. */
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  pfx[0] = (uint8_t)(SP_MAX_FRAME_DEFAULT >> 24);
  pfx[1] = (uint8_t)(SP_MAX_FRAME_DEFAULT >> 16);
  pfx[2] = (uint8_t)(SP_MAX_FRAME_DEFAULT >> 8);
  pfx[3] = (uint8_t)SP_MAX_FRAME_DEFAULT;
  assert_int_equal(sp_frame_reader_read(rd, pfx, 4, &body, &blen), 4);
  assert_int_equal(sp_frame_reader_pending(rd), 4);
  sp_frame_reader_del(rd);
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  pfx[3] = (uint8_t)(SP_MAX_FRAME_DEFAULT + 1);
  assert_int_equal(sp_frame_reader_read(rd, pfx, 4, &body, &blen),
                   SP_ERR_FRAME_TOO_LARGE);
  sp_frame_reader_del(rd);

  /* The absolute limit itself is a valid setting. */
  assert_int_equal(sp_frame_reader_new(&rd, SP_MAX_FRAME_LIMIT, NULL), 0);
  pfx[0] = (uint8_t)(SP_MAX_FRAME_LIMIT >> 24);
  pfx[1] = pfx[2] = pfx[3] = 0;
  assert_int_equal(sp_frame_reader_read(rd, pfx, 4, &body, &blen), 4);
  sp_frame_reader_del(rd);
}

static void test_invalid_arguments(void **state) {
  static const uint8_t d[] = {0, 0, 0, 1, 7};
  sp_frame_reader *rd;
  const uint8_t *body;
  size_t blen;

  (void)state;
  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  assert_int_equal(sp_frame_reader_read(NULL, d, 5, &body, &blen),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_frame_reader_read(rd, NULL, 5, &body, &blen),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_frame_reader_read(rd, d, 5, NULL, &blen),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_frame_reader_read(rd, d, 5, &body, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  /* Refused calls consumed nothing. */
  assert_int_equal(sp_frame_reader_read(rd, d, 5, &body, &blen), 5);
  assert_int_equal(blen, 1);
  assert_int_equal(body[0], 7);
  sp_frame_reader_del(rd);
  sp_frame_reader_del(NULL);
}

static void test_buffer_reused(void **state) {
  stream s;
  uint8_t body[1000];
  sp_test_mem t;
  sp_frame_reader *rd;
  got g = {0};
  size_t i;
  long before;

  (void)state;
  memset(&s, 0, sizeof(s));
  memset(body, 0x3c, sizeof(body));
  for (i = 0; i < 10; ++i) {
    stream_add(&s, body, sizeof(body) - i);
  }
  sp_test_mem_init(&t);
  assert_int_equal(sp_frame_reader_new(&rd, 0, &t.mem), 0);
  /* First frame split in two calls grows the buffer... */
  assert_int_equal(feed(rd, s.bytes, 500, &g), 0);
  assert_int_equal(feed(rd, s.bytes + 500, s.body_off[1] - 4 - 500, &g), 0);
  before = t.count;
  /* ...and the other nine, all split, need no more memory. */
  for (i = 1; i < 10; ++i) {
    size_t start = s.body_off[i] - 4, end = start + 4 + s.body_len[i];
    assert_int_equal(feed(rd, s.bytes + start, 300, &g), 0);
    assert_int_equal(feed(rd, s.bytes + start + 300, end - start - 300, &g),
                     0);
  }
  assert_int_equal(t.count, before);
  check_got(&s, &g);
  got_free(&g);
  sp_frame_reader_del(rd);
  assert_int_equal(t.live, 0);
  stream_free(&s);
}

/* Pages of the default response budget (64 KiB), each arriving in
 * several reads: the buffer the first one grew is kept for the next ones,
 * not given back and regrown in quarter steps for every page. */
static void test_page_sized_buffer_reused(void **state) {
  enum { PAGE = 64 * 1024 + 300, CHUNK = 1400, PAGES = 4 };
  stream s;
  uint8_t *body = malloc(PAGE);
  sp_test_mem t;
  sp_frame_reader *rd;
  got g = {0};
  size_t i, off;
  long after_first = 0;

  (void)state;
  assert_non_null(body);
  memset(&s, 0, sizeof(s));
  memset(body, 0x5a, PAGE);
  for (i = 0; i < PAGES; ++i) {
    stream_add(&s, body, PAGE - i);
  }
  sp_test_mem_init(&t);
  assert_int_equal(sp_frame_reader_new(&rd, 0, &t.mem), 0);
  for (i = 0, off = 0; off < s.len; off += CHUNK) {
    size_t c = s.len - off < CHUNK ? s.len - off : CHUNK;
    assert_int_equal(feed(rd, s.bytes + off, c, &g), 0);
    sp_frame_reader_trim(rd);
    if (i == 0 && off + c >= s.body_off[1] - 4) {
      after_first = t.count;
      i = 1;
    }
  }
  print_message("allocations: %ld for the first page, %ld for %d more\n",
                after_first, t.count - after_first, PAGES - 1);
  assert_true(after_first > 0);
  /* At most one to reach a slightly larger page; not one per read. */
  assert_true(t.count - after_first <= PAGES - 1);
  check_got(&s, &g);
  got_free(&g);
  sp_frame_reader_del(rd);
  assert_int_equal(t.live, 0);
  stream_free(&s);
  free(body);
}

/* A byte-counting allocator (the size kept in front of each block). */
typedef union bhdr {
  size_t n;
  max_align_t align;
} bhdr;

static void *b_malloc(size_t n, void *ud) {
  bhdr *h = malloc(sizeof(bhdr) + n);
  if (!h) {
    return NULL;
  }
  h->n = n;
  *(size_t *)ud += n;
  return h + 1;
}

static void b_free(void *p, void *ud) {
  if (p) {
    bhdr *h = (bhdr *)p - 1;
    *(size_t *)ud -= h->n;
    free(h);
  }
}

static void *b_calloc(size_t k, size_t n, void *ud) {
  void *p = b_malloc(k * n, ud);
  if (p) {
    memset(p, 0, k * n);
  }
  return p;
}

static void *b_realloc(void *p, size_t n, void *ud) {
  bhdr *h, *q;
  if (!p) {
    return b_malloc(n, ud);
  }
  h = (bhdr *)p - 1;
  *(size_t *)ud -= h->n;
  q = realloc(h, sizeof(bhdr) + n);
  if (!q) {
    *(size_t *)ud += h->n;
    return NULL;
  }
  q->n = n;
  *(size_t *)ud += n;
  return q + 1;
}

/* What a reader allocates follows the bytes a peer sent (a quarter more
 * at most, past a small floor), not twice that; and a large frame's
 * buffer is given back once the frame was handed out and trimmed, and
 * at the latest when the next frame starts. */
static void test_memory_follows_bytes(void **state) {
  enum { BODY = 2 * 1024 * 1024, STEP = 10 * 1000 };
  size_t live = 0, off, idle;
  sp_mem m = {&live, b_malloc, b_free, b_calloc, b_realloc};
  uint8_t *frame = calloc(1, 4 + BODY);
  sp_frame_reader *rd;
  const uint8_t *body;
  size_t blen;

  (void)state;
  assert_non_null(frame);
  frame[1] = (uint8_t)(BODY >> 16);
  assert_int_equal(sp_frame_reader_new(&rd, 0, &m), 0);
  idle = live;
  for (off = 0; off + STEP < 4 + BODY; off += STEP) {
    size_t held;
    assert_int_equal(sp_frame_reader_read(rd, frame + off, STEP, &body, &blen),
                     STEP);
    assert_null(body);
    held = sp_frame_reader_pending(rd);
    assert_int_equal(held, off + STEP);
    assert_true(live - idle <= held + held / 4 + 4096);
  }
  assert_int_equal(sp_frame_reader_read(rd, frame + off, 4 + BODY - off,
                                        &body, &blen),
                   (sp_ssize)(4 + BODY - off));
  assert_int_equal(blen, BODY);
  assert_int_equal(sp_frame_reader_pending(rd), 0);
  assert_int_equal(sp_frame_reader_need(rd), 0);
  sp_frame_reader_trim(rd);
  assert_int_equal(live, idle);
  /* Need counts the rest of a prefix, then the rest of the body. */
  assert_int_equal(sp_frame_reader_read(rd, frame, 2, &body, &blen), 2);
  assert_int_equal(sp_frame_reader_need(rd), 2);
  assert_int_equal(sp_frame_reader_read(rd, frame + 2, 100, &body, &blen),
                   100);
  assert_int_equal(sp_frame_reader_need(rd), BODY - 98);
  sp_frame_reader_del(rd);
  assert_int_equal(live, 0);
  free(frame);
}

/* Reader creation and split reads with an allocation failing. */
static int reader_body(const sp_mem *mem, void *arg) {
  const stream *s = arg;
  sp_frame_reader *rd;
  got g = {0};
  size_t off;
  int rv;

  rv = sp_frame_reader_new(&rd, 0, mem);
  if (rv != 0) {
    return rv;
  }
  for (off = 0; off < s->len; off += 7) {
    size_t c = s->len - off < 7 ? s->len - off : 7;
    rv = feed(rd, s->bytes + off, c, &g);
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0) {
    check_got(s, &g);
  }
  got_free(&g);
  sp_frame_reader_del(rd);
  return rv;
}

static void test_allocation_failures(void **state) {
  stream s;
  uint8_t body[3000];
  long runs;

  (void)state;
  memset(&s, 0, sizeof(s));
  memset(body, 0x99, sizeof(body));
  stream_add(&s, body, 200);
  stream_add(&s, body, 3000); /* grows the buffer past its first size */
  stream_add(&s, body, 100);
  runs = sp_test_mem_fail_each(reader_body, &s, NULL);
  /* reader, buffer, at least one regrowth */
  assert_true(runs >= 4);
  stream_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_two_split_points),
      cmocka_unit_test(test_one_byte_at_a_time),
      cmocka_unit_test(test_random_chunkings),
      cmocka_unit_test(test_in_place_when_whole),
      cmocka_unit_test(test_empty_input),
      cmocka_unit_test(test_oversize_refused_before_buffering),
      cmocka_unit_test(test_empty_frame),
      cmocka_unit_test(test_max_frame_setting),
      cmocka_unit_test(test_invalid_arguments),
      cmocka_unit_test(test_buffer_reused),
      cmocka_unit_test(test_page_sized_buffer_reused),
      cmocka_unit_test(test_memory_follows_bytes),
      cmocka_unit_test(test_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
