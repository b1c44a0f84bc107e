/*
 * sp_logsnap_test.c: log snapshot v1 (src/store/sp_logsnap.c): the
 * streaming writer against itself (sequential, backwards, random reads)
 * and the streaming parser (any piece sizes; malformed and inconsistent
 * input refused even with a valid trailer).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "store/sp_logsnap.h"
#include "store_test_util.h"

#define NROWS 60
#define NRANGES 5

static uint8_t datas[NROWS][400];
static sp_entry rows[NROWS];
static uint8_t links[NROWS][SP_HASH_LEN];
static sp_oidx_range ranges[NRANGES];
static sp_ls_header hdr;
static uint64_t total;
/* The source fails (or runs short) from this row on; NROWS: never. */
static size_t short_at = NROWS;

/* Rows 11..70 with a gap at 40 (sequence 41 missing), base 10. */
static void build(void) {
  uint8_t prev[SP_HASH_LEN];
  uint64_t var = 0;
  sp_seq seq = 11;

  memset(&hdr, 0, sizeof(hdr));
  hdr.base = 10;
  memset(hdr.base_link, 0x3c, SP_HASH_LEN);
  memcpy(prev, hdr.base_link, SP_HASH_LEN);
  for (unsigned i = 0; i < NROWS; ++i, ++seq) {
    size_t len = (i * 53u) % 400u;
    if (seq == 41) {
      ++seq;
    }
    st_fill(datas[i], len, i);
    rows[i] = st_entry(seq, i, datas[i], len);
    rows[i].origin_seq = i % 2 ? i : 0;
    assert_int_equal(sp_chain_next(prev, &rows[i], links[i]), 0);
    memcpy(prev, links[i], SP_HASH_LEN);
    var += rows[i].model_type_len + len;
  }
  for (unsigned i = 0; i < NRANGES; ++i) {
    memset(ranges[i].device.bytes, (int)(0x10 * (i / 2 + 1)), 16);
    ranges[i].lo = (i % 2) * 100 + 1;
    ranges[i].hi = (i % 2) * 100 + 50;
  }
  hdr.sequence = rows[NROWS - 1].sequence;
  memcpy(hdr.hash_at, prev, SP_HASH_LEN);
  hdr.epoch = 9;
  hdr.range_count = NRANGES;
  hdr.row_count = NROWS;
  total = sp_ls_total_size(NRANGES, NROWS, var);
}

static int src_ranges(uint64_t from, sp_ls_range_sink sink, void *sink_ctx,
                      void *ctx) {
  (void)ctx;
  for (uint64_t i = from; i < NRANGES; ++i) {
    int rv = sink(&ranges[i], sink_ctx);
    if (rv != 0) {
      return rv < 0 ? rv : 0;
    }
  }
  return 0;
}

static int src_rows(sp_seq after, sp_entry_sink sink, void *sink_ctx,
                    void *ctx) {
  (void)ctx;
  for (size_t i = 0; i < short_at; ++i) {
    int rv;
    if (rows[i].sequence <= after) {
      continue;
    }
    rv = sink(&rows[i], links[i], sink_ctx);
    if (rv != 0) {
      return rv < 0 ? rv : 0;
    }
  }
  return 0;
}

static sp_ls_writer *writer(void) {
  sp_ls_source src = {src_ranges, src_rows, NULL};
  sp_ls_writer *w = NULL;

  assert_int_equal(sp_ls_writer_new(&w, &hdr, total, &src, 256, NULL), 0);
  return w;
}

static uint8_t *all_bytes(void) {
  sp_ls_writer *w = writer();
  uint8_t *b = malloc(total);

  assert_int_equal(sp_ls_writer_read(w, 0, b, total), 0);
  sp_ls_writer_del(w);
  return b;
}

/* What a parser emitted. */
typedef struct got {
  sp_ls_header h;
  int headers;
  size_t nranges;
  size_t nrows;
  int bad;
} got;

static int on_header(const sp_ls_header *h, void *ctx) {
  got *g = ctx;
  g->h = *h;
  ++g->headers;
  return 0;
}

static int on_range(const sp_oidx_range *r, void *ctx) {
  got *g = ctx;
  if (g->nranges >= NRANGES ||
      memcmp(r, &ranges[g->nranges], sizeof(*r)) != 0) {
    g->bad = 1;
  }
  ++g->nranges;
  return 0;
}

static int on_row(const sp_entry *e, const uint8_t link[SP_HASH_LEN],
                  void *ctx) {
  got *g = ctx;
  if (g->nrows >= NROWS || !st_entry_equal(e, &rows[g->nrows]) ||
      memcmp(link, links[g->nrows], SP_HASH_LEN) != 0) {
    g->bad = 1;
  }
  ++g->nrows;
  return 0;
}

/* Parse `b` (len bytes, `declared` the size told) in pieces of `piece`:
 * the first error, or finish's result. */
static int parse(const uint8_t *b, uint64_t len, uint64_t declared,
                 size_t piece, got *g) {
  sp_ls_sink sink = {on_header, on_range, on_row, g};
  sp_ls_parser *p = NULL;
  int rv = 0;

  memset(g, 0, sizeof(*g));
  assert_int_equal(sp_ls_parser_new(&p, &sink, declared, NULL), 0);
  for (uint64_t off = 0; rv == 0 && off < len; off += piece) {
    size_t n = len - off < piece ? (size_t)(len - off) : piece;
    rv = sp_ls_parser_feed(p, b + off, n);
  }
  if (rv == 0) {
    rv = sp_ls_parser_finish(p);
  }
  sp_ls_parser_del(p);
  return rv;
}

static void test_round_trip_pieces(void **state) {
  static const size_t pieces[] = {1, 2, 7, 103, 120, 4096, 1 << 20};
  uint8_t *b;
  got g;

  (void)state;
  build();
  b = all_bytes();
  for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); ++i) {
    assert_int_equal(parse(b, total, total, pieces[i], &g), 0);
    assert_int_equal(g.headers, 1);
    assert_int_equal(g.nranges, NRANGES);
    assert_int_equal(g.nrows, NROWS);
    assert_false(g.bad);
    assert_int_equal(g.h.sequence, hdr.sequence);
    assert_int_equal(g.h.base, 10);
    assert_int_equal(g.h.epoch, 9);
  }
  free(b);
}

/* Reads of any offset, in any order, give the sequential bytes. */
static void test_random_reads(void **state) {
  uint64_t seed = 12345;
  sp_ls_writer *w;
  uint8_t *b, buf[700];

  (void)state;
  build();
  b = all_bytes();
  w = writer();
  /* Backwards first: every seek point comes from a first forward pass
   * the writer makes itself. */
  for (uint64_t off = total; off > 0;) {
    size_t n = off < 333 ? (size_t)off : 333;
    off -= n;
    assert_int_equal(sp_ls_writer_read(w, off, buf, n), 0);
    assert_memory_equal(buf, b + off, n);
  }
  for (int i = 0; i < 2000; ++i) {
    uint64_t off, n;
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    off = (seed >> 33) % total;
    n = ((seed >> 20) % sizeof(buf)) + 1;
    if (n > total - off) {
      n = total - off;
    }
    assert_int_equal(sp_ls_writer_read(w, off, buf, (size_t)n), 0);
    assert_memory_equal(buf, b + off, (size_t)n);
  }
  assert_int_equal(sp_ls_writer_read(w, total, buf, 1),
                   SP_ERR_INVALID_ARGUMENT);
  sp_ls_writer_del(w);
  free(b);
}

/* A source with fewer rows than its counts fails the read. */
static void test_source_short(void **state) {
  sp_ls_writer *w;
  uint8_t *b;

  (void)state;
  build();
  short_at = NROWS - 1;
  w = writer();
  b = malloc(total);
  assert_int_equal(sp_ls_writer_read(w, 0, b, total), SP_ERR_STORE);
  sp_ls_writer_del(w);
  short_at = NROWS;
  free(b);
}

/* Recompute the trailer, so that only the structural checks can refuse. */
static void reseal(uint8_t *b, uint64_t len) {
  crypto_generichash(b + len - SP_LS_TRAILER_LEN, SP_HASH_LEN, b,
                     len - SP_LS_TRAILER_LEN, NULL, 0);
}

static void test_refused(void **state) {
  uint8_t *b, *c;
  got g;
  uint64_t r0 = SP_LS_HEADER_LEN, row0 = r0 + NRANGES * SP_LS_RANGE_LEN;

  (void)state;
  build();
  b = all_bytes();
  c = malloc(total + 1);
  /* Any flipped bit. */
  for (uint64_t pos = 0; pos < total; ++pos) {
    memcpy(c, b, total);
    c[pos] ^= 0x40;
    assert_int_equal(parse(c, total, total, 64, &g),
                     SP_ERR_SNAPSHOT_CORRUPT);
  }
  /* Trailing, missing bytes; a size that does not match. */
  memcpy(c, b, total);
  c[total] = 0;
  assert_int_equal(parse(c, total + 1, total + 1, 64, &g),
                   SP_ERR_SNAPSHOT_CORRUPT);
  assert_int_equal(parse(c, total - 1, total, 64, &g),
                   SP_ERR_SNAPSHOT_CORRUPT);
  assert_int_equal(parse(c, total, total + 5, 64, &g),
                   SP_ERR_SNAPSHOT_CORRUPT);
  /* Inconsistent but sealed: a link, a range order, a row past S, the
   * header's S, base beyond S. */
  memcpy(c, b, total);
  c[row0 + 65] ^= 1; /* the first row's link */
  reseal(c, total);
  assert_int_equal(parse(c, total, total, 64, &g), SP_ERR_SNAPSHOT_CORRUPT);
  assert_int_equal(g.nrows, 0);
  memcpy(c, b, total);
  /* Ranges 0 and 1 are [1, 50] and [101, 150] of one device. */
  memset(c + r0 + SP_LS_RANGE_LEN + 16, 0, 8);
  c[r0 + SP_LS_RANGE_LEN + 23] = 20; /* lo 20 overlaps [1, 50] */
  reseal(c, total);
  assert_int_equal(parse(c, total, total, 64, &g), SP_ERR_SNAPSHOT_CORRUPT);
  memcpy(c, b, total);
  c[23] ^= 1; /* S */
  reseal(c, total);
  assert_int_equal(parse(c, total, total, 64, &g), SP_ERR_SNAPSHOT_CORRUPT);
  memcpy(c, b, total);
  c[64] = 0xff; /* base */
  reseal(c, total);
  assert_int_equal(parse(c, total, total, 64, &g), SP_ERR_SNAPSHOT_CORRUPT);
  assert_int_equal(g.headers, 0);
  free(b);
  free(c);
}

/* No rows, no ranges: the header and the trailer. */
static void test_empty(void **state) {
  sp_ls_source src = {src_ranges, src_rows, NULL};
  sp_ls_writer *w = NULL;
  uint8_t b[SP_LS_HEADER_LEN + SP_LS_TRAILER_LEN];
  got g;

  (void)state;
  memset(&hdr, 0, sizeof(hdr));
  total = sp_ls_total_size(0, 0, 0);
  assert_int_equal(total, sizeof(b));
  assert_int_equal(sp_ls_writer_new(&w, &hdr, total, &src, 0, NULL), 0);
  assert_int_equal(sp_ls_writer_read(w, 0, b, sizeof(b)), 0);
  sp_ls_writer_del(w);
  assert_int_equal(parse(b, sizeof(b), sizeof(b), 5, &g), 0);
  assert_int_equal(g.headers, 1);
  assert_int_equal(g.nrows, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_pieces),
      cmocka_unit_test(test_random_reads),
      cmocka_unit_test(test_source_short),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
