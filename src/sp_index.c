/*
 * sp_index.c: see sp_index.h.  Kept at most half full, so a lookup looks
 * at a couple of slots whatever the number of values.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_index.h"
#include "sp_mem_int.h"

#define MIN_CAP 16

uint64_t sp_index_hash_u64(uint64_t x) {
  /* splitmix64's finaliser: stream ids count up from small numbers. */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t sp_index_hash_uuid(const sp_uuid *id) {
  uint64_t a = 0, b = 0;
  int i;

  /* Device ids may be made by hand (a counter in the last bytes): mix
   * every byte. */
  for (i = 0; i < 8; ++i) {
    a = a << 8 | id->bytes[i];
    b = b << 8 | id->bytes[8 + i];
  }
  return sp_index_hash_u64(a ^ sp_index_hash_u64(b));
}

static size_t home(const sp_index *ix, uint64_t hash) {
  return (size_t)hash & (ix->cap - 1);
}

static void place(sp_index_slot *slots, size_t cap, uint64_t hash,
                  uintptr_t val) {
  size_t i = (size_t)hash & (cap - 1);

  while (slots[i].val) {
    i = (i + 1) & (cap - 1);
  }
  slots[i].hash = hash;
  slots[i].val = val;
}

static int grow(sp_index *ix, const sp_mem *mem) {
  size_t cap = ix->cap ? ix->cap * 2 : MIN_CAP, i;
  sp_index_slot *slots;

  if (cap < ix->cap || cap > (size_t)-1 / sizeof(*slots)) {
    return SP_ERR_NOMEM;
  }
  slots = sp_calloc(mem, cap, sizeof(*slots));
  if (!slots) {
    return SP_ERR_NOMEM;
  }
  for (i = 0; i < ix->cap; ++i) {
    if (ix->slots[i].val) {
      place(slots, cap, ix->slots[i].hash, ix->slots[i].val);
    }
  }
  sp_free(mem, ix->slots);
  ix->slots = slots;
  ix->cap = cap;
  return 0;
}

int sp_index_reserve(sp_index *ix, const sp_mem *mem, size_t more) {
  int rv;

  if (more > ((size_t)-1 >> 2) - ix->n) {
    return SP_ERR_NOMEM;
  }
  while ((ix->n + more) * 2 > ix->cap) {
    if ((rv = grow(ix, mem)) != 0) {
      return rv;
    }
  }
  return 0;
}

int sp_index_put(sp_index *ix, const sp_mem *mem, uint64_t hash,
                 uintptr_t val) {
  int rv;

  if (val == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if ((ix->n + 1) * 2 > ix->cap && (rv = grow(ix, mem)) != 0) {
    return rv;
  }
  place(ix->slots, ix->cap, hash, val);
  ix->n++;
  return 0;
}

int sp_index_del(sp_index *ix, uint64_t hash, uintptr_t val) {
  size_t mask = ix->cap - 1, i, j;

  if (ix->cap == 0) {
    return SP_ERR_NOT_FOUND;
  }
  for (i = home(ix, hash);; i = (i + 1) & mask) {
    if (!ix->slots[i].val) {
      return SP_ERR_NOT_FOUND;
    }
    if (ix->slots[i].hash == hash && ix->slots[i].val == val) {
      break;
    }
  }
  /* Backward shift: pull later members of the probe run into the hole
   * when their home is not between the hole and them, so that no run is
   * broken and no tombstone is left. */
  for (j = i;;) {
    size_t k;
    j = (j + 1) & mask;
    if (!ix->slots[j].val) {
      break;
    }
    k = home(ix, ix->slots[j].hash);
    if (((j - k) & mask) >= ((j - i) & mask)) {
      ix->slots[i] = ix->slots[j];
      i = j;
    }
  }
  ix->slots[i].val = 0;
  ix->slots[i].hash = 0;
  ix->n--;
  return 0;
}

uintptr_t sp_index_next(const sp_index *ix, uint64_t hash, size_t *pos,
                        uint64_t *probes) {
  size_t mask = ix->cap - 1;

  if (ix->cap == 0) {
    return 0;
  }
  while (*pos < ix->cap) {
    const sp_index_slot *s = &ix->slots[(home(ix, hash) + *pos) & mask];
    ++*pos;
    if (probes) {
      ++*probes;
    }
    if (!s->val) {
      *pos = ix->cap;
      return 0;
    }
    if (s->hash == hash) {
      return s->val;
    }
  }
  return 0;
}

void sp_index_clear(sp_index *ix) {
  if (ix->slots) {
    memset(ix->slots, 0, ix->cap * sizeof(*ix->slots));
  }
  ix->n = 0;
}

void sp_index_free(sp_index *ix, const sp_mem *mem) {
  sp_free(mem, ix->slots);
  memset(ix, 0, sizeof(*ix));
}
