/*
 * sp_index.h: a small open-addressing hash index (linear probing,
 * backward-shift deletion), so that a leader with thousands of follower
 * records and streams finds one without walking them all.
 *
 * It maps a 64-bit hash to non-zero values and may hold several values
 * under one hash: the caller hashes its key, walks the values stored
 * under that hash with sp_index_next and compares the keys itself.
 * Memory comes from the owner's sp_mem; a zeroed struct is an empty index.
 */
#ifndef SP_INDEX_H
#define SP_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/mem.h"
#include "sync_protocol/uuid.h"

typedef struct sp_index_slot {
  uint64_t hash;
  uintptr_t val; /* 0: empty */
} sp_index_slot;

typedef struct sp_index {
  sp_index_slot *slots;
  size_t cap; /* a power of two, or 0 */
  size_t n;
} sp_index;

/* Hashes of the keys the core indexes. */
uint64_t sp_index_hash_u64(uint64_t key);
uint64_t sp_index_hash_uuid(const sp_uuid *id);

/* Add `val` (non-zero) under `hash`.  Returns 0 or SP_ERR_NOMEM (the
 * index is unchanged); SP_ERR_INVALID_ARGUMENT for val 0.  Never fails
 * when a value was deleted since the index last grew past its size now. */
int sp_index_put(sp_index *ix, const sp_mem *mem, uint64_t hash,
                 uintptr_t val);

/* Make room for `more` values beyond those held, so that as many
 * sp_index_put calls cannot fail.  Returns 0 or SP_ERR_NOMEM. */
int sp_index_reserve(sp_index *ix, const sp_mem *mem, size_t more);

/* Remove `val` stored under `hash`.  Returns 0 or SP_ERR_NOT_FOUND. */
int sp_index_del(sp_index *ix, uint64_t hash, uintptr_t val);

/* The values stored under `hash`, one per call: start with *pos = 0;
 * returns 0 when there are no more.  *probes (may be NULL) counts the
 * slots looked at. */
uintptr_t sp_index_next(const sp_index *ix, uint64_t hash, size_t *pos,
                        uint64_t *probes);

/* Forget every value, keeping the memory. */
void sp_index_clear(sp_index *ix);

/* Free the memory; the index is empty again. */
void sp_index_free(sp_index *ix, const sp_mem *mem);

#endif /* SP_INDEX_H */
