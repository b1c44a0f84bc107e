/*
 * sp_buf.c: growable byte buffer.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_buf.h"
#include "sp_mem_int.h"

void sp_buf_init(sp_buf *buf, const sp_mem *mem) {
  memset(buf, 0, sizeof(*buf));
  buf->mem = mem;
}

void sp_buf_free(sp_buf *buf) {
  sp_free(buf->mem, buf->data);
  buf->data = NULL;
  buf->off = buf->len = buf->cap = 0;
}

int sp_buf_reserve(sp_buf *buf, size_t extra) {
  size_t need, cap;
  uint8_t *p;

  if (extra <= buf->cap - buf->len) {
    return 0;
  }
  /* Reclaim consumed space before growing. */
  if (buf->off > 0) {
    memmove(buf->data, buf->data + buf->off, buf->len - buf->off);
    buf->len -= buf->off;
    buf->off = 0;
    if (extra <= buf->cap - buf->len) {
      return 0;
    }
  }
  if (extra > SIZE_MAX - buf->len) {
    return SP_ERR_NOMEM;
  }
  need = buf->len + extra;
  cap = buf->cap ? buf->cap : 256;
  while (cap < need) {
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  }
  p = sp_realloc(buf->mem, buf->data, cap);
  if (!p) {
    return SP_ERR_NOMEM;
  }
  buf->data = p;
  buf->cap = cap;
  return 0;
}

int sp_buf_append(sp_buf *buf, const void *src, size_t n) {
  int rv;

  if (n == 0) {
    return 0;
  }
  rv = sp_buf_reserve(buf, n);
  if (rv != 0) {
    return rv;
  }
  memcpy(buf->data + buf->len, src, n);
  buf->len += n;
  return 0;
}

void sp_buf_consume(sp_buf *buf, size_t n) {
  buf->off += n;
  if (buf->off >= buf->len) {
    buf->off = buf->len = 0;
  }
}
