/*
 * sp_mem_store_int.h: what the in-memory store shows its snapshot source
 * and sink (sp_mem_snap.c) and nobody else.
 */
#ifndef SP_MEM_STORE_INT_H
#define SP_MEM_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/mem_store.h"
#include "sp_origin_index.h"

const sp_mem *sp_mem_store_mem_(const sp_mem_store *store);

/* The store's snapshot state slot; `free_fn` frees it with the store. */
void **sp_mem_store_snap_(sp_mem_store *store,
                          void (*free_fn)(void *snap, const sp_mem *mem));

/* The log's base (prune point and its link), the model_type + data bytes
 * of its retained rows, and its committed set (the store's own array,
 * valid until the store changes). */
void sp_mem_store_base_(const sp_mem_store *store, sp_seq *base,
                        uint8_t base_link[SP_HASH_LEN], uint64_t *var_bytes,
                        const sp_oidx_range **ranges, size_t *nranges);

/* On an empty store never pruned: set the prune point `base` with its
 * link, the epoch, and the committed set (sorted ranges, copied), before
 * the rows after `base` are applied.  0, SP_ERR_INVALID_STATE,
 * SP_ERR_NOMEM. */
int sp_mem_store_load_base_(sp_mem_store *store, sp_seq base,
                            const uint8_t base_link[SP_HASH_LEN],
                            uint64_t epoch, const sp_oidx_range *ranges,
                            size_t nranges);

#endif /* SP_MEM_STORE_INT_H */
