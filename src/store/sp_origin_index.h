/*
 * sp_origin_index.h: the in-memory store's origin index.
 *
 * Maps an origin id (device, origin_seq) to the sequence of the retained
 * entry carrying it, and keeps the log's committed set: every origin id
 * the log ever held (which outlives pruning), as sorted per-device ranges
 * [lo, hi].  Writes are mostly consecutive, so a device needs one range
 * plus one per hole (a refused submission).  The leader looks up every
 * proposal: the retained map is O(1) (an open-addressing hash table with
 * linear probing), the committed set O(log ranges) (binary search).
 *
 * Allocation happens only in sp_oidx_reserve, so a caller reserves first
 * and then inserts and raises without any failure left to undo.
 */
#ifndef SP_ORIGIN_INDEX_H
#define SP_ORIGIN_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/mem.h"
#include "sync_protocol/types.h"

typedef struct sp_oidx_slot {
  sp_uuid device;
  uint64_t origin; /* 0: empty slot */
  sp_seq seq;
} sp_oidx_slot;

/* Origins lo..hi (inclusive) of `device` are committed. */
typedef struct sp_oidx_range {
  sp_uuid device;
  uint64_t lo;
  uint64_t hi;
} sp_oidx_range;

typedef struct sp_oidx {
  sp_oidx_slot *slots;
  size_t cap; /* 0 or a power of two */
  size_t n;
  /* Per-store hash seed: a device chooses its own origin numbers, so a
   * fixed hash would let one pick numbers that all collide. */
  uint64_t seed;
  /* Sorted by (device in memcmp order, lo), disjoint and never adjacent
   * within a device: binary search. */
  sp_oidx_range *ranges;
  size_t nranges;
  size_t capranges;
} sp_oidx;

/* An empty index; `seed` varies the hash. */
void sp_oidx_init(sp_oidx *x, uint64_t seed);

void sp_oidx_free(const sp_mem *mem, sp_oidx *x);

/* Room for `more` inserts and `ranges` new ranges without allocating.
 * Returns 0 or SP_ERR_NOMEM (the index unchanged). */
int sp_oidx_reserve(const sp_mem *mem, sp_oidx *x, size_t more,
                    size_t ranges);

/* An upper bound of the ranges that committing the origins of
 * entries[0, n) (in order) adds. */
size_t sp_oidx_new_ranges(const sp_oidx *x, const sp_entry *entries,
                          size_t n);

/* Add (device, origin) -> seq (origin != 0); room must be reserved. */
void sp_oidx_insert(sp_oidx *x, const sp_uuid *device, uint64_t origin,
                    sp_seq seq);

/* Sequence of the entry with that origin id, 0 if none. */
sp_seq sp_oidx_find(const sp_oidx *x, const sp_uuid *device,
                    uint64_t origin);

/* Remove the mapping (device, origin) -> seq if present. */
void sp_oidx_remove(sp_oidx *x, const sp_uuid *device, uint64_t origin,
                    sp_seq seq);

/* Highest committed origin_seq of `device` (0 if none). */
uint64_t sp_oidx_high(const sp_oidx *x, const sp_uuid *device);

/* 1 if (device, origin) is in the committed set, else 0. */
int sp_oidx_committed(const sp_oidx *x, const sp_uuid *device,
                      uint64_t origin);

/* Add (device, origin) (origin != 0) to the committed set (no-op if
 * there); room for one range must be reserved. */
void sp_oidx_commit(sp_oidx *x, const sp_uuid *device, uint64_t origin);

/* Make `dst`'s committed set a copy of `src`'s (replacing its own).
 * Returns 0 or SP_ERR_NOMEM (`dst` unchanged). */
int sp_oidx_copy_set(const sp_mem *mem, sp_oidx *dst, const sp_oidx *src);

#endif /* SP_ORIGIN_INDEX_H */
