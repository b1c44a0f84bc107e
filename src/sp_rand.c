/*
 * sp_rand.c: splitmix64.
 */
#include "sp_rand.h"

void sp_rand_seed(sp_rand *r, uint64_t seed) { r->state = seed; }

uint64_t sp_rand_next(sp_rand *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t sp_rand_below(sp_rand *r, uint64_t n) {
  /* Modulo bias is irrelevant for jitter. */
  return n ? sp_rand_next(r) % n : 0;
}
