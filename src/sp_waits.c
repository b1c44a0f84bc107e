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
};

/* Followers that acked `seq`, and how many are needed for `min`. */
static int tally(sp_handler *h, sp_seq seq, size_t min, size_t *acked,
                 size_t *needed) {
  sp_node *node = h->node;
  size_t i, n = 0, k = 0;

  for (i = 0; i < h->nfrecs; ++i) {
    k += h->frecs[i].has_acked && h->frecs[i].acked >= seq;
  }
  if (min == 0) {
    int rv = sp_node_members(node, &h->cfg.library_id, &n);
    size_t followers = 0;
    if (rv != 0) {
      return rv;
    }
    for (i = 0; i < n; ++i) {
      followers += !sp_uuid_equal(&node->members[i], &node->cfg.device_id);
    }
    min = followers;
  }
  *acked = k;
  *needed = min;
  return 0;
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
    return SP_ERR_REGISTRY;
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

void sp_waits_check(sp_handler *h) {
  sp_wait **pp = &h->waits;

  while (*pp) {
    sp_wait *w = *pp;
    size_t acked, needed;
    if (tally(h, w->seq, w->min_followers, &acked, &needed) == 0 &&
        acked >= needed) {
      *pp = w->next;
      finish(h, w, 0, acked);
    } else {
      pp = &w->next;
    }
  }
}

void sp_waits_expire(sp_handler *h, sp_tstamp now) {
  sp_wait **pp = &h->waits;

  while (*pp) {
    sp_wait *w = *pp;
    size_t acked = 0, needed;
    if (w->deadline <= now) {
      *pp = w->next;
      tally(h, w->seq, w->min_followers, &acked, &needed);
      finish(h, w, SP_ERR_DEADLINE, acked);
    } else {
      pp = &w->next;
    }
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
  while (h->waits) {
    sp_wait *w = h->waits;
    size_t acked = 0, needed;
    h->waits = w->next;
    tally(h, w->seq, w->min_followers, &acked, &needed);
    finish(h, w, SP_ERR_CANCELED, acked);
  }
}
