/*
 * sp_mem.c: the default allocator and the wrappers every object uses.
 */
#include <stdlib.h>

#include "sp_mem_int.h"

static void *default_malloc(size_t size, void *user_data) {
  (void)user_data;
  return malloc(size);
}

static void default_free(void *ptr, void *user_data) {
  (void)user_data;
  free(ptr);
}

static void *default_calloc(size_t nmemb, size_t size, void *user_data) {
  (void)user_data;
  return calloc(nmemb, size);
}

static void *default_realloc(void *ptr, size_t size, void *user_data) {
  (void)user_data;
  return realloc(ptr, size);
}

static const sp_mem mem_default = {NULL, default_malloc, default_free,
                                   default_calloc, default_realloc};

const sp_mem *sp_mem_default(void) { return &mem_default; }

void sp_mem_resolve(sp_mem *dst, const sp_mem *mem) {
  *dst = mem ? *mem : mem_default;
}

void *sp_malloc(const sp_mem *mem, size_t size) {
  return mem->malloc(size, mem->user_data);
}

void *sp_calloc(const sp_mem *mem, size_t nmemb, size_t size) {
  return mem->calloc(nmemb, size, mem->user_data);
}

void *sp_realloc(const sp_mem *mem, void *ptr, size_t size) {
  return mem->realloc(ptr, size, mem->user_data);
}

void sp_free(const sp_mem *mem, void *ptr) {
  if (ptr) {
    mem->free(ptr, mem->user_data);
  }
}
