/*
 * sp_recover.c: a follower with a snapshot sink recovers from
 * SyncRequired by itself (docs/protocol.md, "Snapshots").
 *
 * The engine (sp_snapshot.c) decides what to ask for and what to keep;
 * this file gives it a stream.  Every stream starts as any other, with
 * the resume check: only the leader's SyncRequired on that stream lets a
 * recovery start or go on there, so a leader that can serve the log we
 * hold ends a recovery without a byte of snapshot.  While recovering the
 * log is not ours: no acks, no fetches, no applies, no epoch written, no
 * proposals; what the snapshot installs is the log's new start.
 */
#include <stdio.h>
#include <string.h>

#include "sp_abi.h"
#include "sp_core.h"

/* After a recovery gave up: the first wait before the next, and the
 * longest (docs/protocol.md 14.8; events.h). */
#define FAIL_BACKOFF_MIN (10u * 60u * SP_SECONDS)
#define FAIL_BACKOFF_MAX (6u * 3600u * SP_SECONDS)

static int in_recovery(const sp_snap_fol *f) {
  return f->state != SP_SNAP_F_IDLE && f->state != SP_SNAP_F_DONE &&
         f->state != SP_SNAP_F_FAILED;
}

void sp_recover_init(sp_handler *h) {
  sp_snap_fol_init(&h->snap, &h->snap_sink, h->cfg.snapshot_window,
                   h->node->cfg.max_frame, h->cfg.snapshot_max_bytes,
                   &h->node->mem);
}

void sp_recover_free(sp_handler *h) {
  if (h->has_snap_sink) {
    sp_snap_fol_free(&h->snap);
  }
}

static void progress_of(const sp_handler *h, sp_snapshot_progress *p) {
  const sp_snap_fol *f = &h->snap;

  memset(p, 0, sizeof(*p));
  switch (f->state) {
  case SP_SNAP_F_IDLE:
    p->state = SP_SNAPSHOT_IDLE;
    break;
  case SP_SNAP_F_DONE:
    p->state = SP_SNAPSHOT_INSTALLED;
    break;
  case SP_SNAP_F_FAILED:
    p->state = SP_SNAPSHOT_FAILED;
    break;
  default:
    p->state = SP_SNAPSHOT_TRANSFERRING;
    break;
  }
  p->sequence = f->info.sequence;
  p->bytes_done = f->stats.bytes_done;
  p->bytes_total = f->stats.total_size;
  p->chunks_done = f->stats.chunks_done;
  p->chunk_count = f->stats.chunk_count;
  p->resumes = f->stats.resumes;
  p->restarts = f->stats.restarts;
}

static void emit(sp_handler *h, const sp_session *s, sp_event_type type,
                 int code, const char *message) {
  sp_event ev = {0};
  sp_snapshot_progress snap;

  progress_of(h, &snap);
  ev.snapshot = &snap;
  ev.error_code = code;
  ev.message = message;
  if (type == SP_EVENT_SNAPSHOT_INSTALLED) {
    ev.to_sequence = h->snap.info.sequence;
  }
  sp_emit_simple(h, type, s ? &s->peer : NULL, &ev);
}

/* The recovery gave up: stopped as by SyncRequired without a sink (the
 * host's resync_done works), and a new recovery only after a backoff
 * that grows with each failure, so a broken snapshot costs the leader a
 * transfer every few hours at most. */
static void fail(sp_handler *h, sp_session *s, int why) {
  sp_node *node = h->node;
  sp_duration b = h->snap_fail_backoff ? h->snap_fail_backoff * 2
                                       : (sp_duration)FAIL_BACKOFF_MIN;
  char text[128];

  if (b > FAIL_BACKOFF_MAX) {
    b = FAIL_BACKOFF_MAX;
  }
  h->snap_fail_backoff = b;
  h->snap_fail_until = node->now + b / 2 + sp_rand_below(&node->rng, b / 2 + 1);
  h->snap_wake_at = h->snap_fail_until;
  h->snap_retry_armed = 0;
  h->fstate = SP_F_SYNC_REQUIRED;
  if (s) {
    s->u.f.snap_on = 0;
  }
  snprintf(text, sizeof(text), "snapshot recovery gave up: %s",
           sp_strerror(why == SP_ERR_SNAPSHOT_FAILED && h->snap.last_error
                           ? h->snap.last_error
                           : why));
  sp_hlog(h, NULL, SP_LOG_WARN, "%s; next try in %llu s", text,
          (unsigned long long)((h->snap_fail_until - node->now) / SP_SECONDS));
  emit(h, s, SP_EVENT_SNAPSHOT_FAILED, why, text);
}

/* An engine call failed on stream `s`. */
static void failed(sp_session *s, int rv, const char *what) {
  sp_handler *h = s->handler;
  char call[48];

  switch (rv) {
  case SP_ERR_SNAPSHOT_FAILED:
  case SP_ERR_SNAPSHOT_TOO_LARGE:
    fail(h, s, rv);
    break;
  case SP_ERR_STORE:
    /* The sink is the host's store: its failures back off as the
     * store's do; the engine resumes on the next stream. */
    snprintf(call, sizeof(call), "snapshot %s", what);
    sp_follower_store_failed(h, &s->peer, rv, call);
    sp_session_close(s, SP_ERR_STORE);
    break;
  case SP_ERR_NOMEM:
    sp_node_set_fatal(s->node, rv);
    sp_session_close(s, rv);
    break;
  default: /* SNAPSHOT_CORRUPT, UNEXPECTED: the leader's fault */
    sp_session_refuse(s, rv, "snapshot %s refused", what);
    break;
  }
}

/* Installed: the log stands at S.  What the leader's epoch became while
 * we could not write it is written now (the snapshot's is S's, maybe
 * older), then sync starts over from S as after the host's full sync. */
static void installed(sp_session *s) {
  sp_handler *h = s->handler;
  /* h->st.epoch still holds every epoch recorded before the commit; a
   * sink may have committed the snapshot's older one. */
  uint64_t keep = h->snap_epoch_seen > h->st.epoch ? h->snap_epoch_seen
                                                   : h->st.epoch;
  int rv = h->store.state(&h->st, h->store.user_data);

  /* Kept until written: a failure leaves it for the next stream's epoch
   * check (sp_follower.c), which writes it as the leader's. */
  h->snap_epoch_seen = keep;
  if (rv != 0) {
    sp_follower_store_failed(h, &s->peer, rv, "state");
  } else {
    sp_durable_state_read(h); /* nothing was pending: gated on it */
    sp_follower_store_wrote(h, &s->peer); /* the commit wrote */
  }
  if (rv == 0 && keep > h->st.epoch) {
    int pending; /* an epoch record is never pending (sys/store.h) */
    rv = sp_durable_apply(h, NULL, NULL, 0, keep, &pending);
    if (rv != 0) {
      sp_follower_store_failed(h, &s->peer, rv, "epoch record");
    } else {
      h->st.epoch = keep;
      sp_follower_store_wrote(h, &s->peer);
    }
  }
  if (rv == 0) {
    h->snap_epoch_seen = 0;
  }
  h->snap_fail_backoff = 0;
  h->snap_fail_until = h->snap_wake_at = 0;
  sp_hlog(h, NULL, SP_LOG_INFO, "snapshot installed at %llu",
          (unsigned long long)h->snap.info.sequence);
  emit(h, s, SP_EVENT_SNAPSHOT_INSTALLED, 0, NULL);
  (void)sp_follower_resync(h);
}

/* What the sink's commit came to (sp_snap_fol_commit's `rv`).  A restart
 * (bytes the sink can never install, or commits failing in a row) goes
 * on on this stream: a request for a new snapshot after the engine's
 * backoff.  The store episode of the failed commits was reported at the
 * first of them, and no write ended it since. */
static void committed(sp_session *s, int rv) {
  sp_handler *h = s->handler;
  sp_snap_fol *f = &h->snap;

  if (rv != 0) {
    failed(s, rv, "commit");
    return;
  }
  if (f->state == SP_SNAP_F_DONE) {
    installed(s);
    return;
  }
  h->snap_retry_armed = 0;
  sp_hlog(h, NULL, SP_LOG_WARN,
          "snapshot at %llu could not be installed (%s): restarting",
          (unsigned long long)f->info.sequence, sp_err_name(f->last_error));
  emit(h, s, SP_EVENT_SNAPSHOT_PROGRESS, 0, NULL);
}

int sp_recover_wanted(sp_session *s, int *starts) {
  sp_handler *h = s->handler;

  *starts = 1;
  if (!h->has_snap_sink || h->leader != s ||
      !(s->features & SP_FEATURE_SNAPSHOT) ||
      h->node->now < h->snap_fail_until) {
    return 0;
  }
  *starts = !in_recovery(&h->snap);
  return 1;
}

void sp_recover_begin(sp_session *s) {
  sp_handler *h = s->handler;
  sp_snap_fol *f = &h->snap;
  int rv = 0;

  h->fstate = SP_F_RECOVERING;
  /* The snapshot's epoch is S's, maybe older than the one our log
   * already recorded: what is installed must not lower it. */
  if (h->st.epoch > h->snap_epoch_seen) {
    h->snap_epoch_seen = h->st.epoch;
  }
  s->u.f.rlen = 0;
  s->u.f.snap_on = 1;
  s->u.f.snap_verify_sent = 0;
  s->u.f.last_progress = h->node->now;
  if (!in_recovery(f)) {
    h->snap_used = 1;
    h->snap_retry_armed = 0;
    rv = sp_snap_fol_start(f);
  } else if (f->state != SP_SNAP_F_REQUEST && f->state != SP_SNAP_F_VERIFY) {
    rv = sp_snap_fol_reconnect(f);
  }
  if (rv != 0) {
    failed(s, rv, "restart");
  }
}

/* The verify fetch was answered: `ok` when the leader's chain runs
 * through (S, hash_at). */
static void checked(sp_session *s, int ok) {
  sp_handler *h = s->handler;
  int rv = sp_snap_fol_on_chain_checked(&h->snap, ok);

  s->u.f.snap_verify_sent = 0;
  s->u.f.last_progress = h->node->now;
  if (ok) {
    committed(s, rv);
  } else if (rv != 0) {
    failed(s, rv, "check");
  } else {
    sp_hlog(h, NULL, SP_LOG_WARN,
            "snapshot at %llu is not on the leader's chain: restarting",
            (unsigned long long)h->snap.info.sequence);
  }
}

void sp_recover_on_msg(sp_session *s, const sp_msg *msg) {
  sp_handler *h = s->handler;
  sp_snap_fol *f = &h->snap;
  sp_fsess *fs = &s->u.f;
  uint64_t before = f->stats.chunks_done;
  int rv;

  /* Late frames of a recovery this stream no longer carries. */
  if (h->fstate != SP_F_RECOVERING || !fs->snap_on) {
    return;
  }
  switch (msg->type) {
  case SP_MSG_SNAPSHOT_MANIFEST:
    rv = sp_snap_fol_on_manifest(f, &msg->u.snapshot_manifest);
    if (rv != 0) {
      failed(s, rv, "manifest");
      return;
    }
    fs->last_progress = h->node->now;
    fs->snap_verify_sent = 0;
    emit(h, s, SP_EVENT_SNAPSHOT_PROGRESS, 0, NULL);
    break;
  case SP_MSG_SNAPSHOT_CHUNK:
    rv = sp_snap_fol_on_chunk(f, &msg->u.snapshot_chunk);
    if (rv != 0) {
      failed(s, rv, "chunk");
      return;
    }
    fs->last_progress = h->node->now;
    if (f->stats.chunks_done > before) {
      sp_follower_store_wrote(h, &s->peer);
      /* A cut after progress is no failure to back off from. */
      h->backoff = 0;
      emit(h, s, SP_EVENT_SNAPSHOT_PROGRESS, 0, NULL);
    }
    if (f->state == SP_SNAP_F_REQUEST) {
      h->snap_retry_armed = 0; /* restarted: wait its backoff */
    }
    break;
  case SP_MSG_ENTRIES_RESPONSE:
    /* Only the answer to the verify fetch; its entries are not applied
     * (the log is fetched again from S once installed). */
    if (f->state == SP_SNAP_F_VERIFY && fs->snap_verify_sent &&
        msg->u.entries_response.since_sequence == f->info.sequence) {
      checked(s, 1);
    }
    break;
  case SP_MSG_SYNC_REQUIRED:
    /* A heartbeat's AHEAD_OF_LEADER about our old log says nothing of S. */
    if (f->state == SP_SNAP_F_VERIFY && fs->snap_verify_sent &&
        msg->u.sync_required.follower_sequence == f->info.sequence) {
      checked(s, 0);
    }
    break;
  default:
    break;
  }
}

int sp_recover_next_frame(sp_session *s) {
  sp_handler *h = s->handler;
  sp_snap_fol *f = &h->snap;
  sp_fsess *fs = &s->u.f;
  sp_tstamp now = h->node->now;
  sp_msg msg;
  int rv;

  if (!fs->snap_on || s->refused) {
    return 0;
  }
  memset(&msg, 0, sizeof(msg));
  switch (f->state) {
  case SP_SNAP_F_REQUEST:
    if (!f->need_request) {
      return 0;
    }
    if (!h->snap_retry_armed) {
      h->snap_retry_armed = 1;
      h->snap_retry_at = now + f->retry_after;
    }
    if (now < h->snap_retry_at) {
      return 0;
    }
    rv = sp_snap_fol_next_request(f, &msg.u.snapshot_request);
    if (rv < 0) {
      failed(s, rv, "pending");
      return 0;
    }
    if (rv == 0) {
      return 0;
    }
    h->snap_retry_armed = 0;
    msg.type = SP_MSG_SNAPSHOT_REQUEST;
    fs->last_progress = now;
    break;
  case SP_SNAP_F_FETCHING:
    if (f->outstanding == 0) {
      fs->last_progress = now; /* the stall clock starts with the ask */
    }
    if (!sp_snap_fol_next_fetch(f, &msg.u.snapshot_fetch)) {
      return 0;
    }
    msg.type = SP_MSG_SNAPSHOT_FETCH;
    break;
  case SP_SNAP_F_VERIFY:
    if (fs->snap_verify_sent ||
        sp_snap_fol_verify_fetch(f, &msg.u.fetch_entries) != 0) {
      return 0;
    }
    msg.type = SP_MSG_FETCH_ENTRIES;
    msg.u.fetch_entries.features = sp_handler_local_features(h);
    msg.u.fetch_entries.has_features = msg.u.fetch_entries.features != 0;
    fs->snap_verify_sent = 1;
    fs->last_progress = now;
    break;
  default:
    return 0;
  }
  return sp_session_queue(s, &msg) == 0;
}

/* An answer is owed to us on the stream: a manifest, chunks, or the
 * verify fetch's page. */
static int waiting(const sp_session *s) {
  const sp_snap_fol *f = &s->handler->snap;

  switch (f->state) {
  case SP_SNAP_F_REQUEST:
    return !f->need_request;
  case SP_SNAP_F_FETCHING:
    return f->outstanding > 0;
  case SP_SNAP_F_VERIFY:
    return s->u.f.snap_verify_sent;
  default:
    return 0;
  }
}

static sp_tstamp stall_at(const sp_session *s) {
  if (!s->u.f.snap_on || s->handler->fstate != SP_F_RECOVERING ||
      !waiting(s)) {
    return SP_TSTAMP_MAX;
  }
  return s->u.f.last_progress + s->handler->cfg.stall_timeout;
}

sp_tstamp sp_recover_session_expiry(const sp_session *s) {
  const sp_handler *h = s->handler;
  sp_tstamp t = stall_at(s);

  if (s->u.f.snap_on && h->fstate == SP_F_RECOVERING &&
      h->snap.state == SP_SNAP_F_REQUEST && h->snap.need_request &&
      h->snap_retry_armed && h->snap_retry_at < t) {
    t = h->snap_retry_at;
  }
  return t;
}

void sp_recover_session_expire(sp_session *s, sp_tstamp now) {
  if (now >= stall_at(s)) {
    sp_slog(s, SP_LOG_WARN, "snapshot answer did not arrive");
    sp_session_close(s, SP_ERR_STALLED);
  }
  /* A request held back by its backoff goes out with the pump that
   * follows. */
}

void sp_recover_detach(sp_session *s) {
  sp_handler *h = s->handler;
  int rv = 0;

  if (!s->u.f.snap_on) {
    return;
  }
  s->u.f.snap_on = 0;
  if (in_recovery(&h->snap)) {
    sp_snap_fol *f = &h->snap;
    uint32_t restarts = f->stats.restarts;
    /* A restart's wait under way goes on across the cut. */
    int keep = h->snap_retry_armed && f->state == SP_SNAP_F_REQUEST &&
               f->need_request && f->retry_after != 0;

    rv = sp_snap_fol_reconnect(f);
    h->snap_retry_armed = keep && rv == 0 && f->stats.restarts == restarts;
  } else {
    h->snap_retry_armed = 0;
  }
  if (h->fstate == SP_F_RECOVERING) {
    /* Lost as any leader stream: sp_follower_detach reconnects; the new
     * stream's SyncRequired resumes. */
    h->fstate = h->leader == s ? SP_F_CONNECTED : SP_F_DISCONNECTED;
  }
  if (rv == SP_ERR_SNAPSHOT_FAILED) {
    fail(h, NULL, rv);
  }
}

/* Nothing under way any more: the status says so, without the old
 * snapshot's numbers, and no wait of it is left. */
static void idle(sp_handler *h) {
  h->snap.state = SP_SNAP_F_IDLE;
  h->snap.need_request = 0;
  memset(&h->snap.stats, 0, sizeof(h->snap.stats));
  memset(&h->snap.info, 0, sizeof(h->snap.info));
  h->snap_retry_armed = 0;
}

void sp_recover_abandon(sp_handler *h) {
  /* A wake left by a failure must not reconnect a later SYNC_REQUIRED
   * the host is to handle. */
  h->snap_wake_at = 0;
  if (!h->has_snap_sink) {
    return;
  }
  h->snap_retry_armed = 0;
  /* The log reaches past where the sink's pending snapshot stands by
   * other means now: resumed by a later recovery, it would take the log
   * back below what was applied and acknowledged.  An abort that fails
   * is tried again when the next recovery starts, which resumes nothing
   * meanwhile. */
  if (sp_snap_fol_abandon(&h->snap) != 0) {
    sp_hlog(h, NULL, SP_LOG_WARN,
            "could not discard the abandoned snapshot: retried at the next "
            "recovery");
  }
}

void sp_recover_stop(sp_handler *h) {
  h->snap_wake_at = 0;
  if (!h->has_snap_sink || !in_recovery(&h->snap)) {
    return;
  }
  /* The handler goes away mid-transfer: the sink's pending snapshot
   * stays, for the next process to resume as after a crash. */
  idle(h);
}

int sp_recover_active(const sp_handler *h) {
  return h->has_snap_sink && in_recovery(&h->snap);
}

sp_tstamp sp_recover_expiry(const sp_handler *h) {
  if (h->has_snap_sink && h->fstate == SP_F_SYNC_REQUIRED && h->snap_wake_at) {
    return h->snap_wake_at;
  }
  return SP_TSTAMP_MAX;
}

void sp_recover_expire(sp_handler *h, sp_tstamp now) {
  if (sp_recover_expiry(h) > now) {
    return;
  }
  /* The backoff after a failure is over: a fresh stream, whose
   * SyncRequired starts a new recovery. */
  h->snap_wake_at = 0;
  sp_hlog(h, NULL, SP_LOG_INFO, "trying snapshot recovery again");
  (void)sp_follower_resync(h);
}

/* Version 2 of the struct must add its size here. */
_Static_assert(SP_SNAPSHOT_PROGRESS_VERSION == 1, "sp_snapshot_progress sizes");

int sp_handler_snapshot_status_versioned(const sp_handler *h, int version,
                                         sp_snapshot_progress *out) {
  sp_snapshot_progress full;

  if (!h || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  if (!h->has_snap_sink || !h->snap_used) {
    return SP_ERR_NOT_FOUND;
  }
  progress_of(h, &full);
  sp_abi_copy(out, &full, SP_ABI_END(sp_snapshot_progress, restarts));
  return 0;
}
