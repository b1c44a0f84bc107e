/*
 * mem.h: per-object memory hooks.
 *
 * Every constructor takes a `const sp_mem *`; NULL means the C library's
 * allocator.  There is no process-wide setter.  The library copies the
 * struct, so it need not outlive the call, but `user_data` must outlive
 * every object created with it.
 */
#ifndef SYNC_PROTOCOL_MEM_H
#define SYNC_PROTOCOL_MEM_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_mem {
  void *user_data;
  /* Same contracts as malloc/free/calloc/realloc; may return NULL. */
  void *(*malloc)(size_t size, void *user_data);
  void (*free)(void *ptr, void *user_data);
  void *(*calloc)(size_t nmemb, size_t size, void *user_data);
  void *(*realloc)(void *ptr, size_t size, void *user_data);
} sp_mem;

/*
 * sp_mem_default returns the hooks backed by malloc/free/calloc/realloc.
 * The pointer refers to static storage owned by the library.
 */
SP_API const sp_mem *sp_mem_default(void);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_MEM_H */
