/*
 * sp_logsnap.c: log snapshot v1 (sp_logsnap.h): the streaming writer and
 * the streaming parser.
 *
 * The writer stages one item (the header, a range, a row) at a time and
 * copies the part of it a read asks for; a read that goes backwards
 * restarts from a seek point (offset, section, range index or the
 * sequence before the row) recorded every `step` bytes on the first pass,
 * so a re-read costs at most `step` bytes of regeneration.
 */
#include <string.h>

#include <sodium.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sp_enc.h"
#include "sp_logsnap.h"
#include "sp_mem_int.h"

static const uint8_t zero_hash[SP_HASH_LEN];

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v = v << 8 | p[i];
  }
  return v;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

uint64_t sp_ls_total_size(uint64_t range_count, uint64_t row_count,
                          uint64_t var_bytes) {
  uint64_t t = SP_LS_HEADER_LEN + SP_LS_TRAILER_LEN;

  if (range_count > (UINT64_MAX - t) / SP_LS_RANGE_LEN) {
    return UINT64_MAX;
  }
  t += range_count * SP_LS_RANGE_LEN;
  if (row_count > (UINT64_MAX - t) / SP_LS_ROW_FIXED) {
    return UINT64_MAX;
  }
  t += row_count * SP_LS_ROW_FIXED;
  return var_bytes > UINT64_MAX - t ? UINT64_MAX : t + var_bytes;
}

void sp_ls_header_encode(const sp_ls_header *h, uint8_t *out) {
  memcpy(out, SP_LS_MAGIC, 8);
  put32(out + 8, SP_LS_VERSION);
  put32(out + 12, 0);
  put64(out + 16, h->sequence);
  memcpy(out + 24, h->hash_at, SP_HASH_LEN);
  put64(out + 56, h->epoch);
  put64(out + 64, h->base);
  memcpy(out + 72, h->base_link, SP_HASH_LEN);
  put64(out + 104, h->range_count);
  put64(out + 112, h->row_count);
}

int sp_ls_header_decode(const uint8_t *in, sp_ls_header *h) {
  if (memcmp(in, SP_LS_MAGIC, 8) != 0 || get32(in + 8) != SP_LS_VERSION ||
      get32(in + 12) != 0) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  h->sequence = get64(in + 16);
  memcpy(h->hash_at, in + 24, SP_HASH_LEN);
  h->epoch = get64(in + 56);
  h->base = get64(in + 64);
  memcpy(h->base_link, in + 72, SP_HASH_LEN);
  h->range_count = get64(in + 104);
  h->row_count = get64(in + 112);
  /* Position 0 has the all-zero link (sys/store.h); the log cannot have
   * been pruned past its own end, nor hold more rows than sequences. */
  if (h->base > h->sequence ||
      (h->base == 0 && memcmp(h->base_link, zero_hash, SP_HASH_LEN) != 0) ||
      (h->sequence == 0 &&
       memcmp(h->hash_at, zero_hash, SP_HASH_LEN) != 0) ||
      h->row_count > h->sequence - h->base ||
      (h->row_count == 0 && (h->base != h->sequence ||
                             memcmp(h->base_link, h->hash_at,
                                    SP_HASH_LEN) != 0)) ||
      (h->row_count != 0 && h->base == h->sequence)) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  return 0;
}

static void range_encode(const sp_oidx_range *r, uint8_t *out) {
  memcpy(out, r->device.bytes, 16);
  put64(out + 16, r->lo);
  put64(out + 24, r->hi);
}

static size_t row_encode(const sp_entry *e, const uint8_t link[SP_HASH_LEN],
                         uint8_t *out) {
  put64(out, e->sequence);
  memcpy(out + 8, e->device_id.bytes, 16);
  put64(out + 24, e->timestamp_ms);
  memcpy(out + 32, e->record_id.bytes, 16);
  out[48] = (uint8_t)e->change_type;
  put64(out + 49, (uint64_t)e->version);
  put64(out + 57, e->origin_seq);
  memcpy(out + 65, link, SP_HASH_LEN);
  out[97] = (uint8_t)(e->model_type_len >> 8);
  out[98] = (uint8_t)e->model_type_len;
  put32(out + 99, (uint32_t)e->data_len);
  if (e->model_type_len) {
    memcpy(out + SP_LS_ROW_FIXED, e->model_type, e->model_type_len);
  }
  if (e->data_len) {
    memcpy(out + SP_LS_ROW_FIXED + e->model_type_len, e->data, e->data_len);
  }
  return SP_LS_ROW_FIXED + e->model_type_len + e->data_len;
}

/* -- writer -- */

enum { SEC_HEADER, SEC_RANGES, SEC_ROWS, SEC_TRAILER, SEC_END };

typedef struct seekpt {
  uint64_t off;
  int sec;
  uint64_t idx;   /* ranges: the next range's number; rows: rows done */
  sp_seq after;   /* rows: the sequence before the next row */
} seekpt;

struct sp_ls_writer {
  sp_mem mem;
  sp_ls_header h;
  uint64_t total;
  sp_ls_source src;
  uint64_t step;
  /* The staged item: bytes [item_off, item_off + item_len). */
  uint8_t *stage;
  size_t stage_cap;
  size_t item_len;
  uint64_t item_off;
  /* The next item: where it starts and what it is. */
  uint64_t pos;
  int sec;
  uint64_t idx;
  sp_seq after;
  seekpt *pts;
  size_t npts;
  size_t cappts;
  /* The read in progress: bytes [cur, end) still go to out. */
  uint8_t *out;
  uint64_t cur;
  uint64_t end;
  int err;
  /* BLAKE2b over every byte before hashed_upto (the furthest any
   * production reached: items are always produced contiguously from a
   * seek point below it, so it never skips one), for the trailer. */
  crypto_generichash_state hash;
  uint64_t hashed_upto;
};

int sp_ls_writer_new(sp_ls_writer **pw, const sp_ls_header *h, uint64_t total,
                     const sp_ls_source *src, uint64_t step,
                     const sp_mem *mem) {
  sp_mem m;
  sp_ls_writer *w;

  if (!pw || !h || !src || !src->ranges || !src->rows ||
      total < sp_ls_total_size(h->range_count, h->row_count, 0)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&m, mem);
  w = sp_calloc(&m, 1, sizeof(*w));
  if (!w) {
    return SP_ERR_NOMEM;
  }
  w->mem = m;
  w->h = *h;
  w->total = total;
  w->src = *src;
  w->step = step ? step : (uint64_t)1 << 20;
  w->stage_cap = SP_LS_ROW_FIXED + SP_MAX_MODEL_TYPE_LEN + 4096;
  w->stage = sp_malloc(&m, w->stage_cap);
  if (!w->stage) {
    sp_free(&m, w);
    return SP_ERR_NOMEM;
  }
  crypto_generichash_init(&w->hash, NULL, 0, SP_HASH_LEN);
  *pw = w;
  return 0;
}

void sp_ls_writer_del(sp_ls_writer *w) {
  if (w) {
    sp_mem m = w->mem;
    sp_free(&m, w->stage);
    sp_free(&m, w->pts);
    sp_free(&m, w);
  }
}

/* Copy what the staged item holds of the read in progress; 1 once the
 * read is complete. */
static int copy_out(sp_ls_writer *w) {
  uint64_t item_end = w->item_off + w->item_len;

  if (w->cur >= w->item_off && w->cur < item_end) {
    uint64_t stop = item_end < w->end ? item_end : w->end;
    memcpy(w->out, w->stage + (w->cur - w->item_off), (size_t)(stop - w->cur));
    w->out += stop - w->cur;
    w->cur = stop;
  }
  return w->cur == w->end;
}

/* A seek point at the next item, on the first pass every `step` bytes.
 * Losing one to a failed allocation only makes a later seek longer. */
static void note_point(sp_ls_writer *w) {
  const seekpt *last = w->npts ? &w->pts[w->npts - 1] : NULL;

  if (last && w->pos < last->off + w->step) {
    return;
  }
  if (w->npts == w->cappts) {
    size_t cap = w->cappts ? w->cappts * 2 : 64;
    seekpt *p = sp_realloc(&w->mem, w->pts, cap * sizeof(*p));
    if (!p) {
      return;
    }
    w->pts = p;
    w->cappts = cap;
  }
  w->pts[w->npts].off = w->pos;
  w->pts[w->npts].sec = w->sec;
  w->pts[w->npts].idx = w->idx;
  w->pts[w->npts].after = w->after;
  ++w->npts;
}

/* Stage the next item, `len` bytes already encoded in w->stage. */
static int staged(sp_ls_writer *w, size_t len) {
  if (len > w->total - w->pos) {
    w->err = SP_ERR_STORE; /* more bytes than the size promised */
    return -1;
  }
  w->item_off = w->pos;
  w->item_len = len;
  w->pos += len;
  if (w->item_off == w->hashed_upto && w->sec != SEC_END) {
    crypto_generichash_update(&w->hash, w->stage, len);
    w->hashed_upto = w->pos;
  }
  return copy_out(w);
}

static int range_sink(const sp_oidx_range *r, void *ctx) {
  sp_ls_writer *w = ctx;
  int done;

  if (w->sec != SEC_RANGES) {
    return SP_SINK_STOP;
  }
  note_point(w);
  range_encode(r, w->stage);
  done = staged(w, SP_LS_RANGE_LEN);
  if (done < 0) {
    return w->err;
  }
  ++w->idx;
  if (w->idx == w->h.range_count) {
    w->sec = SEC_ROWS;
    w->idx = 0;
    w->after = w->h.base;
  }
  return done ? SP_SINK_STOP : 0;
}

static int row_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                    void *ctx) {
  sp_ls_writer *w = ctx;
  size_t need;
  int done;

  if (w->sec != SEC_ROWS) {
    return SP_SINK_STOP;
  }
  if (!hash || e->sequence <= w->after || e->sequence > w->h.sequence ||
      e->model_type_len > SP_MAX_MODEL_TYPE_LEN ||
      e->data_len > SP_LS_DATA_MAX) {
    w->err = SP_ERR_STORE;
    return w->err;
  }
  need = SP_LS_ROW_FIXED + e->model_type_len + e->data_len;
  if (need > w->stage_cap) {
    uint8_t *p = sp_realloc(&w->mem, w->stage, need);
    if (!p) {
      w->err = SP_ERR_NOMEM;
      return w->err;
    }
    w->stage = p;
    w->stage_cap = need;
  }
  note_point(w);
  done = staged(w, row_encode(e, hash, w->stage));
  if (done < 0) {
    return w->err;
  }
  w->after = e->sequence;
  if (++w->idx == w->h.row_count) {
    w->sec = SEC_TRAILER;
  }
  return done ? SP_SINK_STOP : 0;
}

/* Produce items until the read is complete. */
static int produce(sp_ls_writer *w) {
  while (w->cur < w->end) {
    uint64_t before = w->pos;
    int rv = 0;

    switch (w->sec) {
    case SEC_HEADER:
      note_point(w);
      sp_ls_header_encode(&w->h, w->stage);
      w->sec = w->h.range_count ? SEC_RANGES : SEC_ROWS;
      w->idx = 0;
      w->after = w->h.base;
      if (w->sec == SEC_ROWS && w->h.row_count == 0) {
        w->sec = SEC_TRAILER;
      }
      if (staged(w, SP_LS_HEADER_LEN) < 0) {
        return w->err;
      }
      continue;
    case SEC_RANGES:
      rv = w->src.ranges(w->idx, range_sink, w, w->src.ctx);
      if (w->sec == SEC_ROWS && w->h.row_count == 0) {
        w->sec = SEC_TRAILER;
      }
      break;
    case SEC_ROWS:
      rv = w->src.rows(w->after, row_sink, w, w->src.ctx);
      break;
    case SEC_TRAILER: {
      crypto_generichash_state copy = w->hash;
      if (w->hashed_upto != w->pos) {
        return SP_ERR_INTERNAL; /* the invariant above */
      }
      crypto_generichash_final(&copy, w->stage, SP_HASH_LEN);
      w->sec = SEC_END;
      if (staged(w, SP_LS_TRAILER_LEN) < 0) {
        return w->err;
      }
      continue;
    }
    default:
      return SP_ERR_STORE; /* the items ended before the size */
    }
    if (w->err) {
      return w->err;
    }
    if (rv < 0) {
      return SP_ERR_STORE;
    }
    if (w->pos == before && w->cur < w->end) {
      return SP_ERR_STORE; /* the source ran out before its counts */
    }
  }
  return 0;
}

/* Go to the last seek point at or before `offset` (only if it is past
 * the next item when `forward`). */
static void seek(sp_ls_writer *w, uint64_t offset, int forward) {
  size_t lo = 0, hi = w->npts;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->pts[mid].off <= offset) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (forward && (lo == 0 || w->pts[lo - 1].off <= w->pos)) {
    return;
  }
  w->item_len = 0;
  w->item_off = 0;
  if (lo == 0) {
    w->pos = 0;
    w->sec = SEC_HEADER;
    w->idx = 0;
    w->after = 0;
    return;
  }
  w->pos = w->pts[lo - 1].off;
  w->sec = w->pts[lo - 1].sec;
  w->idx = w->pts[lo - 1].idx;
  w->after = w->pts[lo - 1].after;
}

int sp_ls_writer_read(sp_ls_writer *w, uint64_t offset, uint8_t *buf,
                      size_t len) {
  int rv;

  if (!w || (len && !buf) || offset > w->total || len > w->total - offset) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (w->err) {
    return w->err;
  }
  if (len == 0) {
    return 0;
  }
  if (offset < w->item_off || (offset >= w->item_off + w->item_len &&
                               offset < w->pos)) {
    seek(w, offset, 0);
  } else if (offset >= w->pos) {
    seek(w, offset, 1); /* far ahead after a re-read: jump forward */
  }
  w->out = buf;
  w->cur = offset;
  w->end = offset + len;
  copy_out(w);
  rv = produce(w);
  w->out = NULL;
  if (rv != 0) {
    w->err = rv;
  }
  return rv;
}

/* -- parser -- */

enum { P_HEADER, P_RANGE, P_ROW_FIXED, P_ROW_VAR, P_TRAILER, P_END, P_FAILED };

struct sp_ls_parser {
  sp_mem mem;
  sp_ls_sink sink;
  uint64_t total;
  uint64_t seen;
  int state;
  int err;
  sp_ls_header h;
  /* The item being gathered: `have` of `need` bytes in buf. */
  uint8_t *buf;
  size_t cap;
  size_t have;
  size_t need;
  uint64_t count; /* ranges or rows done */
  sp_oidx_range prev_range;
  sp_seq prev_seq;
  uint8_t prev_link[SP_HASH_LEN];
  /* The fixed part of the row in progress, decoded. */
  sp_entry e;
  uint8_t link[SP_HASH_LEN];
  crypto_generichash_state hash; /* every byte before the trailer */
};

int sp_ls_parser_new(sp_ls_parser **pp, const sp_ls_sink *sink,
                     uint64_t total, const sp_mem *mem) {
  sp_mem m;
  sp_ls_parser *p;

  if (!pp || !sink || !sink->header || !sink->range || !sink->row) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&m, mem);
  p = sp_calloc(&m, 1, sizeof(*p));
  if (!p) {
    return SP_ERR_NOMEM;
  }
  p->mem = m;
  p->sink = *sink;
  p->total = total;
  p->cap = SP_LS_HEADER_LEN + SP_LS_ROW_FIXED + SP_MAX_MODEL_TYPE_LEN;
  p->buf = sp_malloc(&m, p->cap);
  if (!p->buf) {
    sp_free(&m, p);
    return SP_ERR_NOMEM;
  }
  p->need = SP_LS_HEADER_LEN;
  crypto_generichash_init(&p->hash, NULL, 0, SP_HASH_LEN);
  *pp = p;
  return 0;
}

void sp_ls_parser_del(sp_ls_parser *p) {
  if (p) {
    sp_mem m = p->mem;
    sp_free(&m, p->buf);
    sp_free(&m, p);
  }
}

/* After the ranges: rows, or the end. */
static void to_rows(sp_ls_parser *p) {
  p->count = 0;
  p->need = p->h.row_count ? SP_LS_ROW_FIXED : SP_LS_TRAILER_LEN;
  p->state = p->h.row_count ? P_ROW_FIXED : P_TRAILER;
}

static int on_header(sp_ls_parser *p) {
  int rv = sp_ls_header_decode(p->buf, &p->h);

  if (rv != 0 ||
      sp_ls_total_size(p->h.range_count, p->h.row_count, 0) > p->total) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  rv = p->sink.header(&p->h, p->sink.ctx);
  if (rv != 0) {
    return rv;
  }
  p->prev_seq = p->h.base;
  memcpy(p->prev_link, p->h.base_link, SP_HASH_LEN);
  p->count = 0;
  if (p->h.range_count) {
    p->state = P_RANGE;
    p->need = SP_LS_RANGE_LEN;
  } else {
    to_rows(p);
  }
  return 0;
}

static int on_range(sp_ls_parser *p) {
  sp_oidx_range r;
  int rv;

  memcpy(r.device.bytes, p->buf, 16);
  r.lo = get64(p->buf + 16);
  r.hi = get64(p->buf + 24);
  if (r.lo == 0 || r.lo > r.hi || r.hi > (uint64_t)INT64_MAX) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  if (p->count) {
    int c = memcmp(p->prev_range.device.bytes, r.device.bytes, 16);
    /* Sorted, disjoint, never adjacent within a device. */
    if (c > 0 || (c == 0 && r.lo <= p->prev_range.hi + 1)) {
      return SP_ERR_SNAPSHOT_CORRUPT;
    }
  }
  rv = p->sink.range(&r, p->sink.ctx);
  if (rv != 0) {
    return rv;
  }
  p->prev_range = r;
  if (++p->count == p->h.range_count) {
    to_rows(p);
  }
  return 0;
}

static int on_row_fixed(sp_ls_parser *p) {
  const uint8_t *b = p->buf;
  uint64_t ct;
  size_t var;

  memset(&p->e, 0, sizeof(p->e));
  p->e.sequence = get64(b);
  memcpy(p->e.device_id.bytes, b + 8, 16);
  p->e.timestamp_ms = get64(b + 24);
  memcpy(p->e.record_id.bytes, b + 32, 16);
  ct = b[48];
  p->e.version = (int64_t)get64(b + 49);
  p->e.origin_seq = get64(b + 57);
  memcpy(p->link, b + 65, SP_HASH_LEN);
  p->e.model_type_len = (size_t)b[97] << 8 | b[98];
  p->e.data_len = get32(b + 99);
  if (p->e.sequence <= p->prev_seq || p->e.sequence > p->h.sequence ||
      ct > SP_CHANGE_BULK_INSERT || p->e.model_type_len > SP_MAX_MODEL_TYPE_LEN ||
      p->e.data_len > SP_MAX_FRAME_LIMIT ||
      p->e.origin_seq > (uint64_t)INT64_MAX ||
      p->e.model_type_len + p->e.data_len > p->total - p->seen ||
      (p->count + 1 == p->h.row_count) != (p->e.sequence == p->h.sequence)) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  p->e.change_type = (sp_change_type)ct;
  var = p->e.model_type_len + p->e.data_len;
  if (var > p->cap) {
    uint8_t *n = sp_realloc(&p->mem, p->buf, var);
    if (!n) {
      return SP_ERR_NOMEM;
    }
    p->buf = n;
    p->cap = var;
  }
  p->state = P_ROW_VAR;
  p->need = var;
  return 0;
}

static int on_row_var(sp_ls_parser *p) {
  uint8_t link[SP_HASH_LEN];
  int rv;

  p->e.model_type = p->e.model_type_len ? (const char *)p->buf : NULL;
  p->e.data = p->e.data_len ? p->buf + p->e.model_type_len : NULL;
  if (sp_enc_check_entry(&p->e) != 0 ||
      sp_chain_link(p->prev_link, &p->e, link) != 0 ||
      memcmp(link, p->link, SP_HASH_LEN) != 0) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  rv = p->sink.row(&p->e, link, p->sink.ctx);
  if (rv != 0) {
    return rv;
  }
  p->prev_seq = p->e.sequence;
  memcpy(p->prev_link, link, SP_HASH_LEN);
  if (++p->count == p->h.row_count) {
    if (memcmp(link, p->h.hash_at, SP_HASH_LEN) != 0) {
      return SP_ERR_SNAPSHOT_CORRUPT;
    }
    p->state = P_TRAILER;
    p->need = SP_LS_TRAILER_LEN;
    return 0;
  }
  p->state = P_ROW_FIXED;
  p->need = SP_LS_ROW_FIXED;
  return 0;
}

static int on_trailer(sp_ls_parser *p) {
  uint8_t digest[SP_HASH_LEN];

  crypto_generichash_final(&p->hash, digest, SP_HASH_LEN);
  if (sodium_memcmp(digest, p->buf, SP_HASH_LEN) != 0) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  p->state = P_END;
  return 0;
}

static int step_item(sp_ls_parser *p) {
  size_t n = p->have;

  p->have = 0;
  if (p->state == P_TRAILER) {
    return on_trailer(p);
  }
  if (n) {
    crypto_generichash_update(&p->hash, p->buf, n);
  }
  switch (p->state) {
  case P_HEADER:
    return on_header(p);
  case P_RANGE:
    return on_range(p);
  case P_ROW_FIXED:
    return on_row_fixed(p);
  default:
    return on_row_var(p);
  }
}

int sp_ls_parser_feed(sp_ls_parser *p, const uint8_t *data, size_t len) {
  if (!p || (len && !data)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (p->state == P_FAILED) {
    return p->err;
  }
  while (len > 0 || (p->state == P_ROW_VAR && p->need == 0)) {
    size_t take;
    int rv;

    if (p->state == P_END || len > p->total - p->seen) {
      p->err = SP_ERR_SNAPSHOT_CORRUPT; /* trailing bytes */
      p->state = P_FAILED;
      return p->err;
    }
    take = p->need - p->have < len ? p->need - p->have : len;
    if (take) {
      memcpy(p->buf + p->have, data, take);
    }
    p->have += take;
    p->seen += take;
    data += take;
    len -= take;
    if (p->have < p->need) {
      break;
    }
    rv = step_item(p);
    if (rv != 0) {
      p->err = rv;
      p->state = P_FAILED;
      return rv;
    }
  }
  return 0;
}

int sp_ls_parser_finish(sp_ls_parser *p) {
  if (!p) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* A row with nothing variable is complete once its fixed part is. */
  if (p->state == P_ROW_VAR && p->need == 0) {
    int rv = sp_ls_parser_feed(p, NULL, 0);
    if (rv != 0) {
      return rv;
    }
  }
  if (p->state == P_FAILED) {
    return p->err;
  }
  if (p->state != P_END || p->seen != p->total) {
    p->err = SP_ERR_SNAPSHOT_CORRUPT;
    p->state = P_FAILED;
  }
  return p->state == P_END ? 0 : p->err;
}
