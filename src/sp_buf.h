/*
 * sp_buf.h: a growable byte buffer with a read offset.
 *
 * Used for outgoing frames (appended at the end, flushed from `off`) and
 * for reassembling incoming ones.  Capacity only grows, so a steady-state
 * session allocates nothing.
 */
#ifndef SP_BUF_H
#define SP_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/mem.h"

typedef struct sp_buf {
  uint8_t *data;
  /* Bytes [off, len) are pending; [0, off) were consumed. */
  size_t off;
  size_t len;
  size_t cap;
  const sp_mem *mem;
} sp_buf;

void sp_buf_init(sp_buf *buf, const sp_mem *mem);
void sp_buf_free(sp_buf *buf);

/* Make room for `extra` more bytes after `len`.  0 or SP_ERR_NOMEM. */
int sp_buf_reserve(sp_buf *buf, size_t extra);

/* Append `n` bytes.  0 or SP_ERR_NOMEM. */
int sp_buf_append(sp_buf *buf, const void *src, size_t n);

/* Pending bytes. */
static inline size_t sp_buf_pending(const sp_buf *buf) {
  return buf->len - buf->off;
}

/* Mark `n` pending bytes consumed; rewinds to empty when all are. */
void sp_buf_consume(sp_buf *buf, size_t n);

/* Forget everything (keeps the capacity). */
static inline void sp_buf_reset(sp_buf *buf) {
  buf->off = 0;
  buf->len = 0;
}

#endif /* SP_BUF_H */
