/*
 * sp_sim_async.c: followers whose store applies asynchronously (store
 * version 5: `durable`, SP_STORE_PENDING), in the fault simulation.
 *
 * About a third of the devices open their library through the wrapper
 * sp_async_store.c (tc_dev.async): their applies are queued, and become
 * durable at random simulated times (the run between two host steps is
 * cut at random points, and at each some queued batches are made durable
 * and the node is woken, as a store's fd would wake its host); some of
 * the queued batches fail (half the stores report a failure through
 * `durable` and every write until then, half once through whichever
 * call meets it first, reads included, as the SQLite store's apply
 * thread does); a crash loses what is queued.  The mem store
 * under the wrapper holds exactly what is durable, and that is what
 * every invariant of sp_sim.c reads: acknowledged is durable, exactly
 * once, prefix of the history.  The hosts keep the async host contract
 * (sys/store.h): before promoting a device or replacing its log (a full
 * sync) they let its store finish (async_settle).
 *
 * Every choice here draws from its own generator (seeded from the seed),
 * so the seed's other choices are the ones they were without it.
 */
#include <stdint.h>
#include <string.h>

#include "sp_async_store.h"
#include "sp_sim.h"

atotals atot;

static unsigned abelow(sim *s, unsigned n) {
  return (unsigned)sp_rand_below(&s->arng, n);
}

void configure_async(sim *s) {
  int d, any = 0;

  sp_rand_seed(&s->arng, s->seed * 0x9e3779b97f4a7c15ull + 0xa5);
  for (d = 0; d < s->t.ndevs; ++d) {
    /* Half of them report a failure once, by whichever call meets it. */
    s->t.dev[d].async[LIB] = abelow(s, 3) == 0 ? 1 + (int)abelow(s, 2) : 0;
    /* Counted as followers: all but the first leader start as one (it
     * may follow later too, after a failover or a step-down). */
    atot.devices += s->t.dev[d].async[LIB] && d != leader_of(s);
    any |= s->t.dev[d].async[LIB] != 0;
  }
  atot.seeds += any;
  s->async_any = any;
  /* How eager this seed's stores are, in 1/100 per wake: some keep up,
   * some lag seconds behind. */
  s->async_eager = 5 + abelow(s, 96);
}

static sp_async_store *astore(sim *s, int d) {
  return s->t.dev[d].node ? s->t.dev[d].astore[LIB] : NULL;
}

/* Count what a wrapper did before it goes (a crash, a reopen). */
static void account(sim *s, int d) {
  sp_async_store *a = s->t.dev[d].astore[LIB];
  const sp_async_stats *st;

  if (!a) {
    return;
  }
  st = sp_async_store_stats(a);
  atot.queued += st->queued - s->async_seen[d].queued;
  atot.flushed += st->flushed - s->async_seen[d].flushed;
  atot.failed += st->failed - s->async_seen[d].failed;
  s->async_seen[d] = *st;
}

void async_crashed(sim *s, int d) {
  sp_async_store *a = astore(s, d);

  if (!a) {
    return;
  }
  account(s, d);
  atot.pending_at_crash += (long)sp_async_store_pending(a);
  atot.crashes_pending += sp_async_store_pending(a) > 0;
  /* tc_crash loses them; its wrapper is replaced at the next open. */
}

void async_opened(sim *s, int d) {
  memset(&s->async_seen[d], 0, sizeof(s->async_seen[d]));
}

void async_settle(sim *s, int d) {
  if (astore(s, d) && sp_async_store_pending(astore(s, d)) > 0) {
    (void)tc_flush(&s->t, d, LIB, SIZE_MAX);
  }
}

/* One wake of device d's store: some of what it queued is durable now
 * (or, while faults run, rarely, the oldest batch fails). */
static void wake(sim *s, int d) {
  sp_async_store *a = astore(s, d);
  size_t n;

  if (!a || (n = sp_async_store_pending(a)) == 0) {
    return;
  }
  if (!s->faults_on) {
    (void)tc_flush(&s->t, d, LIB, SIZE_MAX);
    return;
  }
  if (abelow(s, 1000) < 15) {
    atot.injected++;
    if (abelow(s, 2)) {
      /* The store made some durable, then one failed, before the host
       * looked: what `durable` never said is reported all the same. */
      (void)sp_async_store_flush(a, abelow(s, (unsigned)n));
    }
    (void)sp_async_store_fail(a, SP_ERR_STORE);
    (void)tc_flush(&s->t, d, LIB, 0); /* the fd says: look */
    return;
  }
  if (s->mode[d] == M_FOLLOWER && s->t.dev[d].h[LIB] &&
      abelow(s, 1000) < 5) {
    /* The host restarts the follower term over the queue (no drain is
     * asked for that): what is pending is still waited for. */
    if (sp_handler_set_role(s->t.dev[d].h[LIB], SP_ROLE_FOLLOWER, 0,
                            s->t.now) != 0) {
      fail(s, "dev%d: set_role follower over pending applies failed", d);
    }
    return;
  }
  if (abelow(s, 100) < s->async_eager) {
    (void)tc_flush(&s->t, d, LIB, abelow(s, 2) ? SIZE_MAX
                                             : 1 + abelow(s, (unsigned)n));
  }
}

void async_run_for(sim *s, sp_duration dur) {
  sp_tstamp until = s->t.now + dur;
  int d;

  if (!s->async_any) {
    tc_run_for(&s->t, dur);
    return;
  }
  while (s->t.now < until && !s->failure[0]) {
    sp_duration left = until - s->t.now;
    /* Random points: a few per run, closer together as it ends. */
    sp_duration chunk =
        (sp_duration)(1 + abelow(s, (unsigned)(left / MS + 1))) * MS;
    tc_run_for(&s->t, chunk < left ? chunk : left);
    for (d = 0; d < s->t.ndevs; ++d) {
      wake(s, d);
      if (s->t.fatal) {
        return;
      }
    }
  }
}

void async_seed_done(sim *s) {
  int d;

  for (d = 0; d < s->t.ndevs; ++d) {
    account(s, d);
  }
}
