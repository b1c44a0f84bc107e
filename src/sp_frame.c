/*
 * sp_frame.c: reassembles length-prefixed frames from a byte stream.
 *
 * The length prefix is checked before any body byte is buffered, so a peer
 * cannot make the reader allocate more than the configured maximum.  A
 * frame that arrives whole in one call is returned in place, not copied.
 *
 * Memory follows the bytes a peer actually sent: the body buffer grows by
 * at most a quarter past what it holds (never past the frame), and a
 * buffer over READER_KEEP is given back once its frame is done, so a
 * stream that carried one big frame does not keep its size for life.
 */
#include <string.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sp_buf.h"
#include "sp_codec_int.h"
#include "sp_mem_int.h"

struct sp_frame_reader {
  sp_mem mem;
  size_t max_frame;
  uint8_t hdr[SP_FRAME_HEADER_LEN];
  size_t hdr_len;
  /* Body length once the prefix is parsed; 0 before (0 is refused). */
  size_t body_len;
  /* Partial body; capacity reused across frames. */
  sp_buf body;
  /* Set after a buffered frame was handed out: reset at the next call,
   * so the body stays valid until then. */
  int done;
  /* A negative code once a bad prefix was seen: the stream is lost. */
  int err;
};

int sp_frame_reader_new(sp_frame_reader **preader, size_t max_frame,
                        const sp_mem *mem) {
  sp_mem m;
  sp_frame_reader *r;

  if (preader) {
    *preader = NULL;
  }
  if (!preader || max_frame > SP_MAX_FRAME_LIMIT) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&m, mem);
  r = sp_calloc(&m, 1, sizeof(*r));
  if (!r) {
    return SP_ERR_NOMEM;
  }
  r->mem = m;
  r->max_frame = max_frame ? max_frame : SP_MAX_FRAME_DEFAULT;
  sp_buf_init(&r->body, &r->mem);
  *preader = r;
  return 0;
}

void sp_frame_reader_del(sp_frame_reader *r) {
  if (r) {
    sp_buf_free(&r->body);
    sp_free(&r->mem, r);
  }
}

size_t sp_frame_reader_pending(const sp_frame_reader *r) {
  return r->done ? 0 : r->hdr_len + r->body.len;
}

/* Body capacity a reader keeps between frames: room for a page of the
 * default response budget (64 KiB) and then some, so a follower reading
 * pages in several reads reuses one buffer instead of regrowing it from
 * 4 KiB in quarter steps for every page.  Larger buffers are given back:
 * a stream that carried one big frame does not keep its size for life. */
#define READER_KEEP (128 * 1024)

static void start_frame(sp_frame_reader *r) {
  r->hdr_len = 0;
  r->body_len = 0;
  r->done = 0;
  sp_buf_reset(&r->body);
  if (r->body.cap > READER_KEEP) {
    sp_buf_free(&r->body);
    sp_buf_init(&r->body, &r->mem);
  }
}

/* Room for `take` more body bytes, growing by at most a quarter of what
 * is held (sp_buf doubles, which would let half-sent frames cost twice
 * their bytes). */
static int reserve_body(sp_frame_reader *r, size_t take) {
  size_t need = r->body.len + take, cap;
  uint8_t *p;

  if (need <= r->body.cap) {
    return 0;
  }
  cap = r->body.cap + r->body.cap / 4;
  if (cap < 4096) {
    cap = 4096;
  }
  if (cap < need) {
    cap = need;
  }
  if (cap > r->body_len) {
    cap = r->body_len;
  }
  p = sp_realloc(&r->mem, r->body.data, cap);
  if (!p) {
    return SP_ERR_NOMEM;
  }
  r->body.data = p;
  r->body.cap = cap;
  return 0;
}

size_t sp_frame_reader_need(const sp_frame_reader *r) {
  if (r->done || r->err || r->hdr_len == 0) {
    return 0;
  }
  if (r->hdr_len < SP_FRAME_HEADER_LEN || r->body_len == 0) {
    return SP_FRAME_HEADER_LEN - r->hdr_len;
  }
  return r->body_len - r->body.len;
}

void sp_frame_reader_trim(sp_frame_reader *r) {
  if (r->done) {
    start_frame(r);
  }
}

void sp_frame_reader_set_max(sp_frame_reader *r, size_t max_frame) {
  r->max_frame = max_frame ? max_frame : SP_MAX_FRAME_DEFAULT;
}

sp_ssize sp_frame_reader_read(sp_frame_reader *r, const uint8_t *data,
                              size_t len, const uint8_t **body,
                              size_t *bodylen) {
  size_t used = 0, take;
  int rv;

  if (!r || !body || !bodylen || (!data && len)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *body = NULL;
  *bodylen = 0;
  if (r->err) {
    return r->err;
  }
  if (r->done) {
    start_frame(r);
  }
  while (r->hdr_len < SP_FRAME_HEADER_LEN) {
    if (used == len) {
      return (sp_ssize)used;
    }
    r->hdr[r->hdr_len++] = data[used++];
  }
  if (r->body_len == 0) {
    size_t n = (size_t)r->hdr[0] << 24 | (size_t)r->hdr[1] << 16 |
               (size_t)r->hdr[2] << 8 | r->hdr[3];
    if (n == 0) {
      r->err = SP_ERR_EMPTY_FRAME;
      return r->err;
    }
    if (n > r->max_frame) {
      r->err = SP_ERR_FRAME_TOO_LARGE;
      return r->err;
    }
    r->body_len = n;
    /* Whole body in this call and nothing buffered: hand it out in place. */
    if (len - used >= n) {
      *body = data + used;
      *bodylen = n;
      start_frame(r);
      return (sp_ssize)(used + n);
    }
  }
  take = r->body_len - r->body.len;
  if (take > len - used) {
    take = len - used;
  }
  rv = reserve_body(r, take);
  if (rv == 0) {
    rv = sp_buf_append(&r->body, data + used, take);
  }
  if (rv != 0) {
    r->err = rv; /* bytes of this call may be half-taken: stream lost */
    return rv;
  }
  used += take;
  if (r->body.len == r->body_len) {
    *body = r->body.data;
    *bodylen = r->body_len;
    r->done = 1;
  }
  return (sp_ssize)used;
}
