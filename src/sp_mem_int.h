/*
 * sp_mem_int.h: allocation helpers used by every object.
 *
 * Objects copy the caller's sp_mem at creation (NULL resolves to the
 * default) and allocate only through these wrappers, so a test can fail
 * any single allocation.
 */
#ifndef SP_MEM_INT_H
#define SP_MEM_INT_H

#include "sync_protocol/mem.h"

/* Copy `mem` (or the default hooks when NULL) into `dst`. */
void sp_mem_resolve(sp_mem *dst, const sp_mem *mem);

void *sp_malloc(const sp_mem *mem, size_t size);
void *sp_calloc(const sp_mem *mem, size_t nmemb, size_t size);
void *sp_realloc(const sp_mem *mem, void *ptr, size_t size);
void sp_free(const sp_mem *mem, void *ptr);

#endif /* SP_MEM_INT_H */
