/*
 * sp_mem_outbox.h: the in-memory store's outbox (sys/store.h, version 3).
 *
 * Items sorted by origin_seq in one array with a movable head: new items
 * go at the end and committed ones usually leave from the front, both
 * O(1).  Each item owns one allocation holding its model_type and data;
 * an item is made (allocated) apart from the box, so a caller allocates
 * everything first and then links it in without a failure to undo.
 */
#ifndef SP_MEM_OUTBOX_H
#define SP_MEM_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/mem.h"
#include "sync_protocol/sys/store.h"

typedef struct sp_mobox_item {
  sp_entry e; /* e.origin_seq is the item's origin; pointers into buf */
  uint8_t *buf;
} sp_mobox_item;

typedef struct sp_mobox {
  sp_mobox_item *items; /* live: items[head, head + len) */
  size_t head;
  size_t len;
  size_t cap;
  uint64_t bytes;
  uint64_t next_origin;
  int anchored;
  int has_device;
  sp_uuid device;
} sp_mobox;

/* An empty outbox (next origin 1). */
void sp_mobox_init(sp_mobox *b);

/* Free every item. */
void sp_mobox_free(const sp_mem *mem, sp_mobox *b);

/* Copy `e` into `*out` with origin `origin`.  0 or SP_ERR_NOMEM. */
int sp_mobox_make(const sp_mem *mem, const sp_entry *e, uint64_t origin,
                  sp_mobox_item *out);

/* Free an item that was made but not linked. */
void sp_mobox_item_free(const sp_mem *mem, sp_mobox_item *it);

/* Room for `n` more items.  0 or SP_ERR_NOMEM (the box unchanged). */
int sp_mobox_reserve(const sp_mem *mem, sp_mobox *b, size_t n);

/* Link a made item at its place (room reserved); 0, or SP_ERR_EXISTS if
 * that origin is already there (the item is then not linked). */
int sp_mobox_link(sp_mobox *b, const sp_mobox_item *it);

/* Index (relative to head) of item `origin`, or SIZE_MAX. */
size_t sp_mobox_find(const sp_mobox *b, uint64_t origin);

/* Remove and free item `origin`: 0 or SP_ERR_NOT_FOUND. */
int sp_mobox_remove(const sp_mem *mem, sp_mobox *b, uint64_t origin);

/* Feed items with origin > after (outbox_read's contract). */
int sp_mobox_read(const sp_mobox *b, uint64_t after, size_t max_count,
                  sp_entry_sink sink, void *sink_ctx);

/* outbox_anchor's contract: 0, or SP_ERR_INVALID_ARGUMENT (nothing
 * changed) if an origin or next_origin would pass SP_MAX_ORIGIN_SEQ. */
int sp_mobox_anchor(sp_mobox *b, const sp_uuid *device,
                    uint64_t device_high);

/* Raise next_origin above `origin`. */
void sp_mobox_raise(sp_mobox *b, uint64_t origin);

#endif /* SP_MEM_OUTBOX_H */
