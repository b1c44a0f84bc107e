/*
 * sp_origin_index.c: origin id -> sequence, and the committed set.
 *
 * Linear probing at most half full, deletion by shifting the cluster
 * back (no tombstones, so a log that prunes forever keeps short probes).
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "sp_mem_int.h"
#include "sp_origin_index.h"

#define MIN_CAP ((size_t)16)

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

static size_t slot_of(const sp_oidx *x, const sp_uuid *device,
                      uint64_t origin) {
  uint64_t h = mix(load64(device->bytes) ^ x->seed);
  h = mix(h ^ load64(device->bytes + 8));
  h = mix(h ^ origin);
  return (size_t)h & (x->cap - 1);
}

void sp_oidx_init(sp_oidx *x, uint64_t seed) {
  memset(x, 0, sizeof(*x));
  x->seed = seed;
}

void sp_oidx_free(const sp_mem *mem, sp_oidx *x) {
  uint64_t seed = x->seed;
  sp_free(mem, x->slots);
  sp_free(mem, x->ranges);
  memset(x, 0, sizeof(*x));
  x->seed = seed;
}

static void place(sp_oidx_slot *slots, size_t i, size_t mask,
                  const sp_oidx_slot *s) {
  while (slots[i].origin != 0) {
    i = (i + 1) & mask;
  }
  slots[i] = *s;
}

int sp_oidx_reserve(const sp_mem *mem, sp_oidx *x, size_t more,
                    size_t ranges) {
  size_t need, cap;

  if (more > SIZE_MAX / 4 - x->n ||
      ranges > SIZE_MAX / 4 / sizeof(sp_oidx_range) - x->nranges) {
    return SP_ERR_NOMEM;
  }
  if (x->nranges + ranges > x->capranges) {
    size_t rc = x->capranges ? x->capranges : 8;
    sp_oidx_range *r;
    while (rc < x->nranges + ranges) {
      rc *= 2;
    }
    r = sp_realloc(mem, x->ranges, rc * sizeof(*r));
    if (!r) {
      return SP_ERR_NOMEM;
    }
    x->ranges = r;
    x->capranges = rc;
  }
  need = (x->n + more) * 2;
  if (need <= x->cap) {
    return 0;
  }
  cap = x->cap ? x->cap : MIN_CAP;
  while (cap < need) {
    if (cap > SIZE_MAX / sizeof(sp_oidx_slot) / 2) {
      return SP_ERR_NOMEM;
    }
    cap *= 2;
  }
  {
    sp_oidx_slot *slots = sp_calloc(mem, cap, sizeof(*slots));
    sp_oidx_slot *old = x->slots;
    size_t oldcap = x->cap;
    if (!slots) {
      return SP_ERR_NOMEM;
    }
    x->slots = slots;
    x->cap = cap;
    for (size_t i = 0; i < oldcap; ++i) {
      if (old[i].origin != 0) {
        place(slots, slot_of(x, &old[i].device, old[i].origin), cap - 1,
              &old[i]);
      }
    }
    sp_free(mem, old);
  }
  return 0;
}

void sp_oidx_insert(sp_oidx *x, const sp_uuid *device, uint64_t origin,
                    sp_seq seq) {
  sp_oidx_slot s;

  s.device = *device;
  s.origin = origin;
  s.seq = seq;
  place(x->slots, slot_of(x, device, origin), x->cap - 1, &s);
  x->n++;
}

static size_t find_slot(const sp_oidx *x, const sp_uuid *device,
                        uint64_t origin, sp_seq seq) {
  size_t i;

  if (x->cap == 0 || origin == 0) {
    return SIZE_MAX;
  }
  for (i = slot_of(x, device, origin); x->slots[i].origin != 0;
       i = (i + 1) & (x->cap - 1)) {
    const sp_oidx_slot *s = &x->slots[i];
    if (s->origin == origin && (seq == 0 || s->seq == seq) &&
        memcmp(s->device.bytes, device->bytes, 16) == 0) {
      return i;
    }
  }
  return SIZE_MAX;
}

sp_seq sp_oidx_find(const sp_oidx *x, const sp_uuid *device,
                    uint64_t origin) {
  size_t i = find_slot(x, device, origin, 0);
  return i == SIZE_MAX ? 0 : x->slots[i].seq;
}

void sp_oidx_remove(sp_oidx *x, const sp_uuid *device, uint64_t origin,
                    sp_seq seq) {
  size_t mask, i, j;

  i = find_slot(x, device, origin, seq);
  if (i == SIZE_MAX) {
    return;
  }
  mask = x->cap - 1;
  /* Shift later members of the cluster back into the hole when their
   * home slot does not lie (cyclically) between the hole and them. */
  for (j = (i + 1) & mask; x->slots[j].origin != 0; j = (j + 1) & mask) {
    size_t home = slot_of(x, &x->slots[j].device, x->slots[j].origin);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      x->slots[i] = x->slots[j];
      i = j;
    }
  }
  memset(&x->slots[i], 0, sizeof(x->slots[i]));
  x->n--;
}

static int dev_cmp(const sp_oidx_range *r, const sp_uuid *device) {
  return memcmp(r->device.bytes, device->bytes, 16);
}

/* Index of the first range after every range of `device` starting at or
 * below `origin` (so the one before it, if of `device`, is the only one
 * that can hold `origin`). */
static size_t range_upper(const sp_oidx *x, const sp_uuid *device,
                          uint64_t origin) {
  size_t lo = 0, hi = x->nranges;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = dev_cmp(&x->ranges[mid], device);
    if (c < 0 || (c == 0 && x->ranges[mid].lo <= origin)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* The range of `device` that starts at or below `origin` and is nearest
 * to it, or NULL. */
static const sp_oidx_range *range_before(const sp_oidx *x,
                                         const sp_uuid *device,
                                         uint64_t origin) {
  size_t i = range_upper(x, device, origin);
  if (i > 0 && dev_cmp(&x->ranges[i - 1], device) == 0) {
    return &x->ranges[i - 1];
  }
  return NULL;
}

uint64_t sp_oidx_high(const sp_oidx *x, const sp_uuid *device) {
  const sp_oidx_range *r = range_before(x, device, UINT64_MAX);
  return r ? r->hi : 0;
}

int sp_oidx_committed(const sp_oidx *x, const sp_uuid *device,
                      uint64_t origin) {
  const sp_oidx_range *r;

  if (origin == 0) {
    return 0;
  }
  r = range_before(x, device, origin);
  return r && r->hi >= origin;
}

/* 1 if committing (device, origin) would join or fall in an existing
 * range (so adds none). */
static int touches(const sp_oidx *x, const sp_uuid *device,
                   uint64_t origin) {
  size_t i = range_upper(x, device, origin);
  if (i > 0 && dev_cmp(&x->ranges[i - 1], device) == 0 &&
      x->ranges[i - 1].hi >= origin - 1) {
    return 1;
  }
  return i < x->nranges && dev_cmp(&x->ranges[i], device) == 0 &&
         origin != UINT64_MAX && x->ranges[i].lo == origin + 1;
}

size_t sp_oidx_new_ranges(const sp_oidx *x, const sp_entry *entries,
                          size_t n) {
  const sp_entry *prev = NULL;
  size_t count = 0;

  for (size_t i = 0; i < n; ++i) {
    const sp_entry *e = &entries[i];
    if (e->origin_seq == 0) {
      continue;
    }
    /* Right after the previous origin of the same device: that one's
     * range (made or joined just before) takes this one in. */
    if (!(prev && prev->origin_seq == e->origin_seq - 1 &&
          sp_uuid_equal(&prev->device_id, &e->device_id)) &&
        !touches(x, &e->device_id, e->origin_seq)) {
      count++;
    }
    prev = e;
  }
  return count;
}

void sp_oidx_commit(sp_oidx *x, const sp_uuid *device, uint64_t origin) {
  size_t i = range_upper(x, device, origin);
  sp_oidx_range *p = NULL, *nx = NULL;

  if (i > 0 && dev_cmp(&x->ranges[i - 1], device) == 0) {
    p = &x->ranges[i - 1];
    if (p->hi >= origin) {
      return;
    }
    if (p->hi != origin - 1) {
      p = NULL;
    }
  }
  if (i < x->nranges && dev_cmp(&x->ranges[i], device) == 0 &&
      origin != UINT64_MAX && x->ranges[i].lo == origin + 1) {
    nx = &x->ranges[i];
  }
  if (p && nx) {
    p->hi = nx->hi;
    memmove(nx, nx + 1, (x->nranges - i - 1) * sizeof(*nx));
    x->nranges--;
  } else if (p) {
    p->hi = origin;
  } else if (nx) {
    nx->lo = origin;
  } else {
    memmove(&x->ranges[i + 1], &x->ranges[i],
            (x->nranges - i) * sizeof(*x->ranges));
    x->ranges[i].device = *device;
    x->ranges[i].lo = origin;
    x->ranges[i].hi = origin;
    x->nranges++;
  }
}

int sp_oidx_copy_set(const sp_mem *mem, sp_oidx *dst, const sp_oidx *src) {
  if (src->nranges > dst->capranges) {
    sp_oidx_range *r =
        sp_realloc(mem, dst->ranges, src->nranges * sizeof(*dst->ranges));
    if (!r) {
      return SP_ERR_NOMEM;
    }
    dst->ranges = r;
    dst->capranges = src->nranges;
  }
  if (src->nranges) {
    memcpy(dst->ranges, src->ranges, src->nranges * sizeof(*dst->ranges));
  }
  dst->nranges = src->nranges;
  return 0;
}
