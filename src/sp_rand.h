/*
 * sp_rand.h: a small deterministic generator (splitmix64) for reconnect
 * jitter.  Seeded from the node config, so a simulation replays exactly;
 * nothing here needs to be unpredictable.
 */
#ifndef SP_RAND_H
#define SP_RAND_H

#include <stdint.h>

typedef struct sp_rand {
  uint64_t state;
} sp_rand;

void sp_rand_seed(sp_rand *r, uint64_t seed);
uint64_t sp_rand_next(sp_rand *r);
/* Uniform in [0, n); 0 when n is 0. */
uint64_t sp_rand_below(sp_rand *r, uint64_t n);

#endif /* SP_RAND_H */
