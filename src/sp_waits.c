/*
 * sp_waits.c: "call me when N followers have durably acknowledged S".
 *
 * Read-your-writes for the host, and a way to gate writes on follower
 * health.  Waits are few (one per host write at most), so a list is
 * enough; each ack re-checks them all.
 */
#include "sp_core.h"
#include "sp_mem_int.h"

struct sp_wait {
  sp_wait *next;
  sp_seq seq;
  size_t min_followers;
  sp_tstamp deadline;
  sp_ack_wait_cb cb;
  void *user_data;
  /* Followers that had acked `seq` when it ended, for its callback. */
  size_t acked;
};

/* Followers that acked `seq`, and how many are needed for `min`, among
 * the first `n` entries of node->members (one reading of the registry,
 * shared by every wait of a pass).  Only devices the registry lists now
 * count, as for the retention floor: the leader may not have dropped the
 * record of one that left yet, and its acks must not stand in for a
 * member's. */
static void count_in(sp_handler *h, size_t n, sp_seq seq, size_t min,
                     size_t *acked, size_t *needed) {
  sp_node *node = h->node;
  size_t i, k = 0, followers = 0;

  for (i = 0; i < n; ++i) {
    const sp_frec *r;
    if (sp_uuid_equal(&node->members[i], &node->cfg.device_id)) {
      continue;
    }
    followers++;
    r = sp_leader_frec(h, &node->members[i], 0);
    k += r && r->has_acked && r->acked >= seq;
  }
  *acked = k;
  *needed = min ? min : followers;
}

static int tally(sp_handler *h, sp_seq seq, size_t min, size_t *acked,
                 size_t *needed) {
  size_t n;
  int rv = sp_node_members(h->node, &h->cfg.library_id, &n);

  if (rv == 0) {
    count_in(h, n, seq, min, acked, needed);
  }
  return rv;
}

static void finish(sp_handler *h, sp_wait *w, int status, size_t acked) {
  if (w->cb(h, w->seq, status, acked, w->user_data) != 0) {
    sp_node_set_fatal(h->node, SP_ERR_CALLBACK_FAILURE);
  }
  sp_free(&h->node->mem, w);
}

int sp_handler_wait_acks(sp_handler *h, sp_seq sequence, size_t min_followers,
                         sp_tstamp deadline, sp_ack_wait_cb cb,
                         void *user_data, sp_tstamp now) {
  size_t acked, needed;
  sp_wait *w;
  int rv;

  if (!h || !cb) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return SP_ERR_INVALID_STATE;
  }
  h->node->now = now;
  rv = tally(h, sequence, min_followers, &acked, &needed);
  if (rv != 0) {
    return rv == SP_ERR_NOMEM ? rv : SP_ERR_REGISTRY;
  }
  if (acked >= needed || sequence == 0) {
    return 1; /* sequence 0 is the empty log: everyone holds it */
  }
  w = sp_calloc(&h->node->mem, 1, sizeof(*w));
  if (!w) {
    return SP_ERR_NOMEM;
  }
  w->seq = sequence;
  w->min_followers = min_followers;
  w->deadline = deadline;
  w->cb = cb;
  w->user_data = user_data;
  /* Sorted by sequence (first come first among equals): waits that one
   * ack or one expiry ends complete in sequence order. */
  {
    sp_wait **pp = &h->waits;
    while (*pp && (*pp)->seq <= sequence) {
      pp = &(*pp)->next;
    }
    w->next = *pp;
    *pp = w;
  }
  return 0;
}

/* Take out the waits that `ends` (status 0: enough acks; else past
 * `now`), judged against one reading of the member list and before any
 * callback runs (a callback may read the registry again, into the same
 * buffer), then call them back in sequence order with `status`. */
static void end_waits(sp_handler *h, int status, sp_tstamp now) {
  sp_wait **pp = &h->waits, *done = NULL, **tail = &done;
  size_t n = 0;
  int have = sp_node_members(h->node, &h->cfg.library_id, &n) == 0;

  if (status == 0 && !have) {
    return; /* unknown who counts: nothing completes */
  }
  while (*pp) {
    sp_wait *w = *pp;
    size_t needed = 0;
    w->acked = 0;
    if (have) {
      count_in(h, n, w->seq, w->min_followers, &w->acked, &needed);
    }
    if (status == 0 ? w->acked >= needed : w->deadline <= now) {
      *pp = w->next;
      w->next = NULL;
      *tail = w;
      tail = &w->next;
    } else {
      pp = &w->next;
    }
  }
  while (done) {
    sp_wait *w = done;
    done = w->next;
    finish(h, w, status, w->acked);
  }
}

void sp_waits_check(sp_handler *h) {
  if (h->waits) {
    end_waits(h, 0, 0);
  }
}

void sp_waits_expire(sp_handler *h, sp_tstamp now) {
  if (h->waits) {
    end_waits(h, SP_ERR_DEADLINE, now);
  }
}

sp_tstamp sp_waits_expiry(const sp_handler *h) {
  sp_tstamp t = SP_TSTAMP_MAX;
  const sp_wait *w;

  for (w = h->waits; w; w = w->next) {
    if (w->deadline < t) {
      t = w->deadline;
    }
  }
  return t;
}

void sp_waits_cancel_all(sp_handler *h) {
  /* Every wait is past an infinite "now". */
  while (h->waits) {
    end_waits(h, SP_ERR_CANCELED, SP_TSTAMP_MAX);
  }
}
