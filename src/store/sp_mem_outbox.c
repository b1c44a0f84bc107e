/*
 * sp_mem_outbox.c: the in-memory store's outbox.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_mem_int.h"
#include "sp_mem_outbox.h"

void sp_mobox_init(sp_mobox *b) {
  memset(b, 0, sizeof(*b));
  b->next_origin = 1;
}

void sp_mobox_free(const sp_mem *mem, sp_mobox *b) {
  for (size_t i = 0; i < b->len; ++i) {
    sp_free(mem, b->items[b->head + i].buf);
  }
  sp_free(mem, b->items);
  sp_mobox_init(b);
}

int sp_mobox_make(const sp_mem *mem, const sp_entry *e, uint64_t origin,
                  sp_mobox_item *out) {
  size_t n = e->model_type_len + e->data_len;

  out->e = *e;
  out->e.sequence = 0;
  out->e.origin_seq = origin;
  out->buf = NULL;
  out->e.model_type = "";
  out->e.data = NULL;
  if (n) {
    out->buf = sp_malloc(mem, n);
    if (!out->buf) {
      return SP_ERR_NOMEM;
    }
    if (e->model_type_len) {
      memcpy(out->buf, e->model_type, e->model_type_len);
      out->e.model_type = (const char *)out->buf;
    }
    if (e->data_len) {
      memcpy(out->buf + e->model_type_len, e->data, e->data_len);
      out->e.data = out->buf + e->model_type_len;
    }
  }
  return 0;
}

void sp_mobox_item_free(const sp_mem *mem, sp_mobox_item *it) {
  sp_free(mem, it->buf);
  it->buf = NULL;
}

int sp_mobox_reserve(const sp_mem *mem, sp_mobox *b, size_t n) {
  size_t cap;
  sp_mobox_item *p;

  if (n > SIZE_MAX / sizeof(*p) / 2 - b->len) {
    return SP_ERR_NOMEM;
  }
  if (b->head + b->len + n <= b->cap) {
    return 0;
  }
  if (b->head) {
    memmove(b->items, b->items + b->head, b->len * sizeof(*p));
    b->head = 0;
    if (b->len + n <= b->cap) {
      return 0;
    }
  }
  cap = b->cap ? b->cap : 16;
  while (cap < b->len + n) {
    cap *= 2;
  }
  p = sp_realloc(mem, b->items, cap * sizeof(*p));
  if (!p) {
    return SP_ERR_NOMEM;
  }
  b->items = p;
  b->cap = cap;
  return 0;
}

/* Index (relative to head) of the first item with origin >= `origin`. */
static size_t lower(const sp_mobox *b, uint64_t origin) {
  size_t lo = 0, hi = b->len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (b->items[b->head + mid].e.origin_seq < origin) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

size_t sp_mobox_find(const sp_mobox *b, uint64_t origin) {
  size_t i = lower(b, origin);
  return i < b->len && b->items[b->head + i].e.origin_seq == origin
             ? i
             : SIZE_MAX;
}

static uint64_t item_bytes(const sp_mobox_item *it) {
  return (uint64_t)it->e.model_type_len + it->e.data_len;
}

int sp_mobox_link(sp_mobox *b, const sp_mobox_item *it) {
  size_t i = lower(b, it->e.origin_seq);
  sp_mobox_item *base = b->items + b->head;

  if (i < b->len && base[i].e.origin_seq == it->e.origin_seq) {
    return SP_ERR_EXISTS;
  }
  memmove(base + i + 1, base + i, (b->len - i) * sizeof(*base));
  base[i] = *it;
  b->len++;
  b->bytes += item_bytes(it);
  return 0;
}

int sp_mobox_remove(const sp_mem *mem, sp_mobox *b, uint64_t origin) {
  size_t i = sp_mobox_find(b, origin);
  sp_mobox_item *base;

  if (i == SIZE_MAX) {
    return SP_ERR_NOT_FOUND;
  }
  base = b->items + b->head;
  b->bytes -= item_bytes(&base[i]);
  sp_free(mem, base[i].buf);
  if (i == 0) {
    b->head++;
  } else {
    memmove(base + i, base + i + 1, (b->len - i - 1) * sizeof(*base));
  }
  if (--b->len == 0) {
    b->head = 0;
  }
  return 0;
}

int sp_mobox_read(const sp_mobox *b, uint64_t after, size_t max_count,
                  sp_entry_sink sink, void *sink_ctx) {
  size_t fed = 0;

  for (size_t i = lower(b, after == UINT64_MAX ? after : after + 1);
       i < b->len && fed < max_count; ++i, ++fed) {
    const sp_mobox_item *it = &b->items[b->head + i];
    int rv;
    if (it->e.origin_seq <= after) {
      continue;
    }
    rv = sink(&it->e, NULL, sink_ctx);
    if (rv != 0) {
      return rv < 0 ? rv : 0;
    }
  }
  return 0;
}

void sp_mobox_raise(sp_mobox *b, uint64_t origin) {
  if (origin < SP_MAX_ORIGIN_SEQ && origin >= b->next_origin) {
    b->next_origin = origin + 1;
  }
}

int sp_mobox_anchor(sp_mobox *b, const sp_uuid *device,
                    uint64_t device_high) {
  /* Checked before any change: every origin and next_origin stay within
   * SP_MAX_ORIGIN_SEQ (as in the SQLite store). */
  if (device_high >= SP_MAX_ORIGIN_SEQ) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!b->anchored && b->len &&
      b->items[b->head].e.origin_seq <= device_high) {
    /* One shift keeps order and gaps; next_origin moves with it. */
    uint64_t delta = device_high + 1 - b->items[b->head].e.origin_seq;
    uint64_t hi = b->items[b->head + b->len - 1].e.origin_seq;
    if (delta > SP_MAX_ORIGIN_SEQ - hi ||
        delta > SP_MAX_ORIGIN_SEQ - b->next_origin) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < b->len; ++i) {
      b->items[b->head + i].e.origin_seq += delta;
    }
    b->next_origin += delta;
  }
  sp_mobox_raise(b, device_high);
  b->device = *device;
  b->has_device = 1;
  b->anchored = 1;
  return 0;
}
