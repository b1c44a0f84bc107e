/*
 * sp_durable.c: a follower over a store that applies asynchronously
 * (sys/store.h, version 5: `durable` and SP_STORE_PENDING).
 *
 * The chain, the fetch pipeline and every store call run ahead on what
 * the store answers (as if applied: h->st); what tells the leader or the
 * host "applied" waits for `durable`: acknowledgements (sp_follower.c
 * acks sp_durable_through), SP_EVENT_ENTRIES_APPLIED, the own
 * submissions' SP_EVENT_SUBMISSION_COMMITTED, CAUGHT_UP and the
 * sp_handler_request_entries it ends, and the end of a store failure
 * episode.  The node asks `durable` on every entry point while anything
 * is pending (sp_node_reap); it promises no timer for it (the store's own
 * wake-up, e.g. sp_sqlite_store_wait_fd, makes the host call
 * sp_node_handle_expiry).  No clock, no thread: the store has them.
 */
#include <string.h>

#include "sync_protocol/sys/store.h"
#include "sp_core.h"
#include "sp_mem_int.h"

int sp_durable_apply(sp_handler *h, const sp_entry *entries,
                     const uint8_t *hashes, size_t n, uint64_t epoch,
                     int *pending) {
  int rv;

  *pending = 0;
  /* Nothing goes on top of a store whose state is unknown: a failure may
   * have lost applies that h->st still counts (the page was verified
   * against a head the store may not hold). */
  if (h->st_unknown) {
    (void)sp_durable_known(h);
    return SP_ERR_STORE; /* the stream starts over from what is known */
  }
  rv = h->store.apply(entries, hashes, n, epoch, h->store.user_data);
  /* Only a store that can say when it is durable may answer PENDING
   * (an older store's copy has durable NULL), and never for an epoch
   * record (n == 0: the fence is acted on once durable, and `durable`
   * could not report it): otherwise it stays the failure it always
   * was.  A batch durable at once behind pending ones is tracked as
   * they are, so that the events keep the log's order (`durable` says
   * it next). */
  if (h->store.durable && n > 0 &&
      (rv == SP_STORE_PENDING || (rv == 0 && h->ndpend > 0))) {
    *pending = 1;
    return 0;
  }
  return rv;
}

sp_seq sp_durable_through(const sp_handler *h) {
  return h->ndpend ? h->durable_seq : h->st.applied;
}

int sp_durable_pending_at(const sp_handler *h, sp_seq seq) {
  return h->ndpend && seq > h->durable_seq && seq <= h->st.applied;
}

static int reserve(sp_handler *h, sp_dpend **v, size_t n, size_t *cap,
                   size_t more) {
  size_t c = *cap;
  sp_dpend *p;

  if (n + more <= c) {
    return 0;
  }
  while (c < n + more) {
    c = c ? c * 2 : 8;
  }
  p = sp_realloc(&h->node->mem, *v, c * sizeof(*p));
  if (!p) {
    return SP_ERR_NOMEM;
  }
  *v = p;
  *cap = c;
  return 0;
}

static int push(sp_handler *h, sp_dpend **v, size_t *n, size_t *cap,
                const sp_dpend *x) {
  if (reserve(h, v, *n, cap, 1) != 0) {
    return SP_ERR_NOMEM;
  }
  (*v)[(*n)++] = *x;
  return 0;
}

/* Room first: once the store took a batch, tracking it cannot fail (a
 * range tracked without its own entries, or the other way round, would
 * report what is not durable or lose a commit). */
int sp_durable_reserve(sp_handler *h, const sp_entry *entries, size_t n) {
  const sp_uuid *self = &h->node->cfg.device_id;
  size_t i, own = 0;

  for (i = 0; i < n; ++i) {
    own += entries[i].origin_seq != 0 &&
           sp_uuid_equal(&entries[i].device_id, self);
  }
  if (reserve(h, &h->dpend, h->ndpend, &h->capdpend, 1) != 0 ||
      reserve(h, &h->downs, h->ndowns, &h->capdowns, own) != 0) {
    return SP_ERR_NOMEM;
  }
  return 0;
}

int sp_durable_track(sp_handler *h, const sp_uuid *peer, sp_seq from,
                     const sp_entry *entries, size_t n) {
  const sp_uuid *self = &h->node->cfg.device_id;
  sp_dpend x;
  size_t i;

  if (n == 0) {
    return 0;
  }
  if (h->ndpend == 0) {
    h->durable_seq = from;
  }
  x.from = from;
  x.to = entries[n - 1].sequence;
  x.peer = *peer;
  if (push(h, &h->dpend, &h->ndpend, &h->capdpend, &x) != 0) {
    return SP_ERR_NOMEM;
  }
  for (i = 0; i < n; ++i) {
    if (entries[i].origin_seq == 0 ||
        !sp_uuid_equal(&entries[i].device_id, self)) {
      continue;
    }
    x.from = entries[i].origin_seq;
    x.to = entries[i].sequence;
    if (push(h, &h->downs, &h->ndowns, &h->capdowns, &x) != 0) {
      return SP_ERR_NOMEM;
    }
  }
  return 0;
}

static void forget(sp_handler *h) {
  /* Only where nothing pending is this handler's to report any more (a
   * replaced log, a leader term in between): a failure truncates
   * instead (sp_durable_state_read), so that what was durable before it
   * is still reported. */
  h->ndpend = 0;
  h->ndowns = 0;
  h->has_caught_owed = 0;
  h->durable_seq = h->st.applied;
}

/* A range's peer; none (NULL) for one tracked at load. */
static const sp_uuid *peer_of(const sp_dpend *d) {
  return sp_uuid_is_nil(&d->peer) ? NULL : &d->peer;
}

/* The store made everything up to `through` durable. */
static void advance(sp_handler *h, sp_seq through) {
  size_t i, k;
  const sp_uuid *peer = NULL;
  sp_uuid last;
  int wrote = 0;

  if (h->ndpend == 0 || through <= h->durable_seq) {
    goto owed;
  }
  if (through > h->st.applied) {
    through = h->st.applied;
  }
  for (i = 0; i < h->ndpend && h->dpend[i].from < through; ++i) {
    sp_event ev = {0};
    sp_dpend *d = &h->dpend[i];
    ev.from_sequence = d->from;
    ev.to_sequence = d->to <= through ? d->to : through;
    last = d->peer;
    peer = sp_uuid_is_nil(&last) ? NULL : &last;
    wrote = 1;
    sp_emit_simple(h, SP_EVENT_ENTRIES_APPLIED, peer_of(d), &ev);
    if (d->to > through) {
      /* Part of one transaction: only a store that commits several
       * together says so; the rest is reported when it says more. */
      d->from = through;
      break;
    }
  }
  memmove(h->dpend, h->dpend + i, (h->ndpend - i) * sizeof(*h->dpend));
  h->ndpend -= i;
  h->durable_seq = through;
  for (k = 0; k < h->ndowns && h->downs[k].to <= through; ++k) {
    /* The same transaction retired the outbox item. */
    sp_writer_report_committed(h, &h->downs[k].peer, h->downs[k].from,
                               h->downs[k].to);
  }
  if (k > 0) {
    memmove(h->downs, h->downs + k, (h->ndowns - k) * sizeof(*h->downs));
    h->ndowns -= k;
    h->w.stats_valid = 0;
  }
  if (h->ndpend == 0) {
    h->ndowns = 0;
  }
  /* A write that succeeded ends a store failure episode. */
  if (wrote) {
    sp_follower_store_wrote(h, peer);
  }
owed:
  if (h->has_caught_owed && sp_durable_through(h) >= h->caught_owed) {
    sp_event ev = {0};
    h->has_caught_owed = 0;
    ev.to_sequence = h->caught_owed;
    sp_emit_simple(h, SP_EVENT_CAUGHT_UP, &h->caught_peer, &ev);
    sp_follower_request_done(h, 0);
  }
}

/* Read `state` again after a failure: 0 and h->st the truth (what the
 * store forgot dropped from what is pending), or the read's failure with
 * h->st left as it was and h->st_unknown set. */
static int reread(sp_handler *h) {
  sp_store_state st;
  int r = h->store.state(&st, h->store.user_data);

  if (r != 0) {
    h->st_unknown = 1;
    return r;
  }
  h->st = st;
  sp_durable_state_read(h);
  return 0;
}

/* The stream ran ahead of what the store kept: start over from it. */
static void restart(sp_handler *h) {
  if (h->leader) {
    sp_session_close(h->leader, SP_ERR_STORE);
  } else if (h->fstate == SP_F_DISCONNECTED) {
    h->reconnect_at = sp_handler_backoff(h, &h->backoff);
  }
}

/* A pending transaction failed: the store forgot it and every later one
 * (sys/store.h), and `state` answers what is durable.  What the store
 * made durable before it, `durable` had no chance to say: it is
 * reported first (ENTRIES_APPLIED, the commits), then the store-failure
 * path of a failed apply: STORE_FAILED, backoff, the state read again,
 * the fetch restarted from there on a new stream.  Were the read to fail
 * too, what is pending stays so (status and acks stay at what was
 * durable) and nothing is applied until a read succeeds. */
static void failed(sp_handler *h, int rv) {
  sp_uuid peer = h->ndpend ? h->dpend[0].peer : h->caught_peer;
  int r = reread(h);

  if (r == 0) {
    advance(h, h->st.applied);
  }
  sp_follower_store_failed(h, sp_uuid_is_nil(&peer) ? NULL : &peer, rv,
                           "apply");
  if (r != 0) {
    sp_follower_store_failed(h, NULL, r, "state");
  }
  restart(h);
}

int sp_durable_known(sp_handler *h) {
  sp_seq before = h->st.applied;

  if (!h->st_unknown) {
    return 0;
  }
  if (reread(h) != 0) {
    return SP_ERR_STORE;
  }
  if (h->st.applied < before) {
    advance(h, h->st.applied);
  }
  return 0;
}

void sp_durable_recheck(sp_handler *h) {
  sp_seq before = h->st.applied;
  int r;

  if (h->ndpend == 0 && !h->st_unknown) {
    return;
  }
  r = reread(h);
  if (r != 0) {
    /* Whether a pending apply failed cannot be told: as if one had
     * (the store may take entries on top of what it forgot). */
    sp_follower_store_failed(h, NULL, r, "state");
    restart(h);
    return;
  }
  if (h->st.applied < before) {
    /* A pending apply failed and this call consumed the report: the
     * state is what is durable, as from `durable`. */
    advance(h, h->st.applied);
    sp_follower_store_failed(h, NULL, SP_ERR_STORE, "apply");
    restart(h);
  }
}

void sp_durable_poll(sp_handler *h) {
  sp_seq through = 0;
  int rv;

  /* Only with applies pending: an epoch record never is (sys/store.h),
   * and a term or stream starts by tracking what an earlier one left
   * pending (sp_durable_load). */
  if (!h->store.durable || h->role != SP_ROLE_FOLLOWER || h->ndpend == 0) {
    return;
  }
  rv = h->store.durable(&through, h->store.user_data);
  if (rv != 0) {
    failed(h, rv < 0 ? rv : SP_ERR_STORE);
    return;
  }
  advance(h, through);
}

void sp_durable_state_read(sp_handler *h) {
  size_t i;

  h->st_unknown = 0;
  if (h->has_caught_owed && h->caught_owed > h->st.applied) {
    /* Caught up with entries the store lost: not news any more. */
    h->has_caught_owed = 0;
  }
  if (h->ndpend == 0) {
    h->durable_seq = h->st.applied;
    return;
  }
  if (h->dpend[h->ndpend - 1].to <= h->st.applied) {
    return;
  }
  /* The store no longer answers what was pending: a failure another call
   * consumed (sys/store.h: `durable` or the next call returns it).  What
   * it lost is never reported; the fetch goes on from what it says. */
  for (i = 0; i < h->ndpend && h->dpend[i].to <= h->st.applied; ++i) {
  }
  if (i < h->ndpend && h->dpend[i].from < h->st.applied) {
    h->dpend[i++].to = h->st.applied;
  }
  h->ndpend = i;
  while (h->ndowns > 0 && h->downs[h->ndowns - 1].to > h->st.applied) {
    h->ndowns--;
  }
  if (h->durable_seq > h->st.applied) {
    h->durable_seq = h->st.applied;
  }
  if (h->ndpend == 0) {
    h->has_caught_owed = 0;
    h->durable_seq = h->st.applied;
  }
}

int sp_durable_load(sp_handler *h) {
  sp_seq through = 0;
  int rv, floor = 0;

  /* Applies this handler did not track may be pending (an earlier
   * term's, an earlier handler's on the same store): what `durable` has
   * not said yet is tracked as one range, so that acks, the status, the
   * resume fetch, CAUGHT_UP and ENTRIES_APPLIED wait for it as for any.
   * Asked before `state`: a failure in between leaves the state read the
   * truth, and `durable` reports the failure next. */
  if (h->ndpend == 0 && h->store.durable && h->role == SP_ROLE_FOLLOWER) {
    rv = h->store.durable(&through, h->store.user_data);
    if (rv != 0) {
      /* Those applies failed: `state` answers what is durable now. */
      sp_follower_store_failed(h, NULL, rv < 0 ? rv : SP_ERR_STORE,
                               "apply");
    } else {
      floor = 1;
    }
  }
  rv = reread(h);
  if (rv != 0) {
    return rv;
  }
  if (floor && through < h->st.applied) {
    sp_dpend x;
    memset(&x, 0, sizeof(x));
    x.from = through;
    x.to = h->st.applied;
    if (push(h, &h->dpend, &h->ndpend, &h->capdpend, &x) != 0) {
      h->st_unknown = 1;
      return SP_ERR_NOMEM;
    }
    h->durable_seq = through;
  }
  return 0;
}

void sp_durable_settle(sp_handler *h, int report) {
  if (report) {
    /* The follower term ends: what is durable now is reported.  The
     * rest is kept for a next follower term (set_role follower ->
     * follower), which waits for it as for its own, commits included;
     * after a leader term in between it is dropped
     * (sp_follower_start): its host let the store finish before the
     * promotion (sys/store.h), so it is simply the log. */
    sp_durable_poll(h);
    h->dpend_epoch = h->epoch;
    return;
  }
  /* The host replaced the log (a full sync, after letting the store
   * finish: sys/store.h): what was pending is moot, and the writer
   * settles our submissions against the new log (sp_writer_resynced).
   * Nothing is said "applied" for it; the state read next is the
   * truth. */
  forget(h);
}

void sp_durable_free(sp_handler *h) {
  sp_free(&h->node->mem, h->dpend);
  sp_free(&h->node->mem, h->downs);
  h->dpend = h->downs = NULL;
  h->ndpend = h->ndowns = h->capdpend = h->capdowns = 0;
}

void sp_durable_poll_node(sp_node *node) {
  sp_handler *h;

  for (h = node->handlers; h; h = h->next) {
    if (!h->store.durable || h->role != SP_ROLE_FOLLOWER) {
      continue;
    }
    sp_durable_poll(h);
    /* The acknowledgement, or a fetch that waited (a resume, or one held
     * back while the store's queue was full), goes out as soon as the
     * stream can take it (here, between frames, never inside one's
     * handling). */
    if (h->leader && !h->leader->dead &&
        (sp_durable_through(h) > h->leader->u.f.acked_sent ||
         !h->leader->u.f.resume_sent ||
         h->ndpend < h->cfg.fetch_window)) {
      sp_session_pump(h->leader);
    }
  }
}
