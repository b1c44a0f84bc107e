/*
 * sp_writer.c: the follower's side of the write path.
 *
 * host -> submit -> outbox (durable) -> Propose -> the leader's admission
 * -> the leader's log -> a page -> store.apply (retires the outbox item)
 * -> SUBMISSION_COMMITTED.  A submission ends only once it is in our own
 * history (applied; brought by a full sync; or answered as appended at or
 * below where we stand, when our own committed set holds it: the answer
 * alone speaks only for the leader's history),
 * or with a refusal made durable by outbox_remove; so a crash or a cut
 * stream anywhere only means proposing again, and the leader's exact
 * committed set of origins makes that harmless.  Everything per stream
 * (the cursor, what is in flight) starts over with each stream to the
 * leader.
 */
#include <string.h>

#include "sp_core.h"
#include "sp_enc.h"
#include "sp_mem_int.h"

struct sp_cwait {
  sp_cwait *next;
  uint64_t origin;
  sp_tstamp deadline;
  sp_commit_wait_cb cb;
  void *user_data;
};

uint64_t sp_writer_entry_bytes(const sp_entry *e) {
  return (uint64_t)e->model_type_len + (uint64_t)e->data_len;
}

static sp_mem *mem_of(sp_handler *h) { return &h->node->mem; }

void sp_writer_init(sp_handler *h) { memset(&h->w, 0, sizeof(h->w)); }

void sp_writer_free(sp_handler *h) {
  sp_writer_cancel_waits(h);
  sp_free(mem_of(h), h->w.q);
  h->w.q = NULL;
  h->w.qcap = h->w.qlen = h->w.qhead = 0;
  sp_free(mem_of(h), h->w.tracked);
  h->w.tracked = NULL;
  h->w.tracked_cap = 0;
}

void sp_writer_reset_stream(sp_handler *h) {
  sp_writer *w = &h->w;

  w->negotiated = 0;
  w->ready = 0;
  w->owed = 0;
  w->leader_max_frame = 0;
  w->sent_through = 0;
  w->drained = 0;
  w->qhead = w->qlen = 0;
  w->in_flight_bytes = 0;
  /* A full sync between streams may have put items back: read the
   * figures again when next needed. */
  w->stats_valid = 0;
}

void sp_writer_attach(sp_session *s) {
  sp_handler *h = s->handler;

  sp_writer_reset_stream(h);
  /* Our Heartbeat with features is the stream's first frame (sp_session.c
   * sends it before anything else).  Every handler advertises claims, so
   * every follower sends it, carrying the claim it holds. */
  if (sp_handler_local_features(h) != 0) {
    s->features_pending = 1;
  }
}

/* ---- tracked origins (sorted; at most the outbox's items) ---- */

/* Index of the first tracked origin >= `origin`. */
static size_t track_pos(const sp_writer *w, uint64_t origin) {
  size_t lo = 0, hi = w->ntracked;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->tracked[mid] < origin) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

static int track_add(sp_handler *h, uint64_t origin) {
  sp_writer *w = &h->w;
  size_t i = track_pos(w, origin);

  if (i < w->ntracked && w->tracked[i] == origin) {
    return 0; /* proposed again on a later stream */
  }
  if (w->ntracked == w->tracked_cap) {
    size_t cap = w->tracked_cap ? w->tracked_cap * 2 : 16;
    uint64_t *v = sp_realloc(mem_of(h), w->tracked, cap * sizeof(*v));
    if (!v) {
      return SP_ERR_NOMEM;
    }
    w->tracked = v;
    w->tracked_cap = cap;
  }
  memmove(w->tracked + i + 1, w->tracked + i,
          (w->ntracked - i) * sizeof(*w->tracked));
  w->tracked[i] = origin;
  w->ntracked++;
  return 0;
}

/* Its outcome was reported. */
static void track_del(sp_handler *h, uint64_t origin) {
  sp_writer *w = &h->w;
  size_t i = track_pos(w, origin);

  if (i < w->ntracked && w->tracked[i] == origin) {
    memmove(w->tracked + i, w->tracked + i + 1,
            (w->ntracked - i - 1) * sizeof(*w->tracked));
    w->ntracked--;
  }
}

static int read_stats(sp_handler *h) {
  int rv = h->store.outbox_stats(&h->w.stats, h->store.user_data);

  h->w.stats_valid = rv == 0;
  if (rv != 0) {
    /* Maybe the failure of a pending apply, reported by this call. */
    sp_durable_recheck(h);
  }
  return rv;
}

/* ---- commit waits ---- */

/* Take out the waits for `origin` (by_deadline: those due at `now`)
 * before calling any back: a callback may register another. */
static sp_cwait *take_waits(sp_handler *h, uint64_t origin, int by_deadline,
                            sp_tstamp now) {
  sp_cwait **pp = &h->w.waits, *done = NULL, **tail = &done;

  while (*pp) {
    sp_cwait *c = *pp;
    int hit = by_deadline ? c->deadline <= now : c->origin == origin;
    if (hit) {
      *pp = c->next;
      c->next = NULL;
      *tail = c;
      tail = &c->next;
    } else {
      pp = &c->next;
    }
  }
  return done;
}

static void finish_waits(sp_handler *h, sp_cwait *done, int status,
                         sp_seq seq) {
  while (done) {
    sp_cwait *c = done;
    done = c->next;
    if (c->cb(h, c->origin, status, seq, c->user_data) != 0) {
      sp_node_set_fatal(h->node, SP_ERR_CALLBACK_FAILURE);
    }
    sp_free(mem_of(h), c);
  }
}

static void end_waits(sp_handler *h, uint64_t origin, int status,
                      sp_seq seq) {
  if (h->w.waits) {
    finish_waits(h, take_waits(h, origin, 0, 0), status, seq);
  }
}

void sp_writer_expire(sp_handler *h, sp_tstamp now) {
  if (h->w.waits) {
    finish_waits(h, take_waits(h, 0, 1, now), SP_ERR_DEADLINE, 0);
  }
}

sp_tstamp sp_writer_expiry(const sp_handler *h) {
  sp_tstamp t = SP_TSTAMP_MAX;
  const sp_cwait *c;

  for (c = h->w.waits; c; c = c->next) {
    if (c->deadline < t) {
      t = c->deadline;
    }
  }
  return t;
}

void sp_writer_cancel_waits(sp_handler *h) {
  h->w.ntracked = 0;
  while (h->w.waits) {
    finish_waits(h, take_waits(h, 0, 1, SP_TSTAMP_MAX), SP_ERR_CANCELED, 0);
  }
}

/* ---- outcomes ---- */

void sp_writer_applied(sp_handler *h, const sp_uuid *peer,
                       const sp_entry *entries, size_t n) {
  const sp_uuid *self = &h->node->cfg.device_id;
  int own = 0;
  size_t i;

  for (i = 0; i < n; ++i) {
    const sp_entry *e = &entries[i];
    if (e->origin_seq == 0 || !sp_uuid_equal(&e->device_id, self)) {
      continue;
    }
    /* store.apply retired the outbox item in the same transaction. */
    own = 1;
    sp_writer_report_committed(h, peer, e->origin_seq, e->sequence);
  }
  if (own) {
    /* A failure only means reading the figures again when they are
     * needed. */
    (void)read_stats(h);
  }
}

void sp_writer_report_committed(sp_handler *h, const sp_uuid *peer,
                                uint64_t origin, sp_seq seq) {
  sp_event ev = {0};

  track_del(h, origin);
  ev.origin_seq = origin;
  ev.from_sequence = ev.to_sequence = seq;
  sp_emit_simple(h, SP_EVENT_SUBMISSION_COMMITTED, peer, &ev);
  end_waits(h, origin, 0, seq);
}

/* Submission `origin` is in our own history at `seq` (0: pruned): retire
 * its item and report it, unless its apply retired it already (and
 * reported it then, or will once durable: sp_durable.c; the store
 * answers as if applied, so the item is gone already).  Returns 0 or the
 * store's failure. */
static int retire_committed(sp_session *s, uint64_t origin, sp_seq seq) {
  sp_handler *h = s->handler;
  int rv = h->store.outbox_remove(origin, h->store.user_data);

  if (rv == SP_ERR_NOT_FOUND) {
    return 0;
  }
  if (rv != 0) {
    return rv;
  }
  sp_follower_store_wrote(h, &s->peer);
  (void)read_stats(h);
  sp_writer_report_committed(h, &s->peer, origin, seq);
  return 0;
}

/* If our own log's committed set holds submission `origin` (retained or
 * pruned), it is committed whatever an answer says (a full sync can bring
 * it without an apply to retire the item): retire it.  *done says whether
 * it was there. */
static int retire_if_in_log(sp_session *s, uint64_t origin, int *done) {
  sp_handler *h = s->handler;
  sp_seq seq = 0;
  uint64_t high;
  int rv;

  *done = 0;
  rv = h->store.find_origin(&h->node->cfg.device_id, origin, &seq, &high,
                            h->store.user_data);
  if (rv == SP_ERR_NOT_FOUND) {
    return 0;
  }
  if (rv != 0) {
    return rv;
  }
  *done = 1;
  return retire_committed(s, origin, seq);
}

/* The leader refused `origin`: record it durably (the item leaves the
 * outbox), then tell the host.  Returns 0 or the store's failure. */
static int refuse_item(sp_session *s, uint64_t origin, uint64_t bytes,
                       int code, const char *msg, size_t msg_len) {
  sp_handler *h = s->handler;
  char text[SP_MAX_ERROR_MESSAGE_LEN + 1];
  sp_event ev = {0};
  int rv, done;

  rv = retire_if_in_log(s, origin, &done);
  if (rv != 0 || done) {
    return rv;
  }
  rv = h->store.outbox_remove(origin, h->store.user_data);
  if (rv == SP_ERR_NOT_FOUND) {
    /* Gone already: applied (committed) meanwhile, nothing to refuse. */
    return 0;
  }
  if (rv != 0) {
    return rv;
  }
  sp_follower_store_wrote(h, &s->peer);
  if (h->w.stats_valid) {
    h->w.stats.items -= h->w.stats.items > 0;
    h->w.stats.bytes -= bytes < h->w.stats.bytes ? bytes : h->w.stats.bytes;
  }
  if (msg_len > SP_MAX_ERROR_MESSAGE_LEN) {
    msg_len = SP_MAX_ERROR_MESSAGE_LEN;
  }
  if (msg_len) {
    memcpy(text, msg, msg_len);
  }
  text[msg_len] = '\0';
  sp_hlog(h, NULL, SP_LOG_INFO, "submission %llu refused: %s (%s)",
          (unsigned long long)origin, text, sp_err_name(code));
  track_del(h, origin);
  ev.origin_seq = origin;
  ev.error_code = code;
  ev.message = text;
  sp_emit_simple(h, SP_EVENT_SUBMISSION_REFUSED, &s->peer, &ev);
  end_waits(h, origin, code, 0);
  return 0;
}

void sp_writer_on_result(sp_session *s, const sp_msg *msg) {
  sp_handler *h = s->handler;
  sp_writer *w = &h->w;
  const sp_msg_propose_result *m = &msg->u.propose_result;
  size_t i;

  if (h->leader != s || !w->negotiated) {
    sp_session_refuse(s, SP_ERR_NOT_NEGOTIATED, "results without proposals");
    return;
  }
  if (h->fstate != SP_F_CONNECTED) {
    /* A full sync is pending: the host owns the store.  Whatever these
     * answer is proposed again on a later stream. */
    return;
  }
  for (i = 0; i < m->result_count && !s->dead && !s->refused; ++i) {
    const sp_propose_result *r = &m->results[i];
    sp_inflight head;
    int rv;
    /* Answers come in the order the proposals went: anything else is a
     * leader we cannot follow on this stream. */
    if (w->qlen == 0 || w->q[w->qhead].origin != r->origin_seq ||
        r->code > 0) {
      sp_session_refuse(s, SP_ERR_UNEXPECTED,
                        "result for %llu does not answer a proposal",
                        (unsigned long long)r->origin_seq);
      return;
    }
    head = w->q[w->qhead];
    w->progress_at = s->node->now;
    /* Room in the window: the outbox is worth reading again. */
    w->drained = 0;
    w->qhead++;
    w->qlen--;
    if (w->qlen == 0) {
      w->qhead = 0;
    }
    w->in_flight_bytes -= head.bytes;
    if (r->code == 0) {
      int done = 1;
      /* Appended: past where we stand, the item stays in the outbox
       * until the page bringing it is applied.  At or below it (or
       * below the leader's retained log: sequence 0) no page will bring
       * it; it is retired only if our own committed set holds it.  The
       * answer alone is not enough: it speaks for the leader's history,
       * and if ours lacks the entry there (it diverged; a snapshot we
       * sync from later may lack it too) the item is all that is left of
       * the write.  It stays in the outbox, out of flight: a full sync's
       * rules or a later apply settle it, or the next stream proposes it
       * again. */
      rv = 0;
      if (r->sequence == 0 || r->sequence <= h->st.applied) {
        rv = retire_if_in_log(s, head.origin, &done);
      }
      if (rv == 0 && !done) {
        sp_hlog(h, NULL, SP_LOG_INFO,
                "submission %llu: appended at %llu by the leader, not in "
                "our log: kept",
                (unsigned long long)head.origin,
                (unsigned long long)r->sequence);
      }
    } else {
      rv = refuse_item(s, head.origin, head.bytes, r->code, r->message,
                       r->message_len);
    }
    if (rv != 0) {
      /* Not recorded: the answer comes again on the next stream. */
      sp_follower_store_failed(h, &s->peer, rv, "outbox remove");
      sp_session_close(s, SP_ERR_STORE);
      return;
    }
  }
}

typedef struct first_ctx {
  uint64_t origin;
} first_ctx;

static int first_sink(const sp_entry *e, const uint8_t *hash, void *arg) {
  (void)hash;
  ((first_ctx *)arg)->origin = e->origin_seq;
  return 0;
}

/* The smallest origin in the outbox (0: empty). */
static int lowest_item(sp_handler *h, uint64_t *origin) {
  first_ctx c = {0};
  int rv = h->store.outbox_read(0, 1, first_sink, &c, h->store.user_data);

  *origin = c.origin;
  if (rv < 0) {
    sp_durable_recheck(h);
  }
  return rv < 0 ? rv : 0;
}

/* The first anchoring renumbers every item by one shift (sys/store.h):
 * the waits registered under the old numbers follow their items. */
static void remap_waits(sp_handler *h, uint64_t before, uint64_t after) {
  uint64_t delta = after - before;
  sp_cwait *c;
  size_t i;

  if (before == 0 || after <= before) {
    return;
  }
  for (c = h->w.waits; c; c = c->next) {
    c->origin += delta;
  }
  for (i = 0; i < h->w.ntracked; ++i) {
    h->w.tracked[i] += delta;
  }
  sp_hlog(h, NULL, SP_LOG_INFO, "outbox anchored: items renumbered by %llu",
          (unsigned long long)delta);
}

/* Anchor the outbox at the leader's origin_high for us, keeping the waits
 * on their items.  Returns 0 or the store's failure. */
static int anchor(sp_handler *h, uint64_t origin_high) {
  uint64_t before = 0, after = 0;
  int first, rv;

  if (!h->w.stats_valid && (rv = read_stats(h)) != 0) {
    return rv;
  }
  first = !h->w.stats.anchored && (h->w.waits || h->w.ntracked);
  if (first && (rv = lowest_item(h, &before)) != 0) {
    return rv;
  }
  rv = h->store.outbox_anchor(&h->node->cfg.device_id, origin_high,
                              h->store.user_data);
  if (rv == 0 && first) {
    rv = lowest_item(h, &after);
  }
  if (rv == 0) {
    rv = read_stats(h);
  }
  if (rv == 0 && first) {
    remap_waits(h, before, after);
  }
  return rv;
}

/* Anchor the outbox at the leader's origin_high; then writes are
 * usable on `s`. */
static void negotiate(sp_session *s, uint64_t features,
                      uint64_t origin_high) {
  sp_handler *h = s->handler;
  int rv;

  /* A successful anchor ends no store failure episode, though it wrote:
   * every stream anchors, so it would reset the backoff at each reconnect
   * of a follower whose applies keep failing. */
  rv = anchor(h, origin_high);
  if (rv != 0) {
    sp_follower_store_failed(h, &s->peer, rv, "outbox anchor");
    sp_session_close(s, SP_ERR_STORE);
    return;
  }
  s->features = features & sp_handler_local_features(h);
  h->w.negotiated = 1;
}

void sp_writer_on_features(sp_session *s, const sp_msg *msg) {
  sp_handler *h = s->handler;
  const sp_msg_heartbeat *hb = &msg->u.heartbeat;

  if (h->leader == s && hb->max_frame != 0) {
    h->w.leader_max_frame = hb->max_frame;
  }
  /* Only a leader that can hear our features (every fetch and our first
   * Heartbeat carry them when the store has the outbox), once per
   * stream; any of its feature Heartbeats will do (one may be lost).
   * Not while a full sync is pending: the host owns the store. */
  if (h->leader != s || h->fstate != SP_F_CONNECTED ||
      !sp_store_has_writes(&h->store) || h->w.negotiated ||
      !(hb->features & SP_FEATURE_WRITES)) {
    return;
  }
  /* Nor while a snapshot recovery is under way between its streams (the
   * log is not ours): kept for when this stream's leader serves us
   * after all, or for the stream after the install. */
  if (sp_recover_active(h)) {
    h->w.owed = 1;
    h->w.owed_features = hb->features;
    h->w.owed_origin_high = hb->origin_high;
    return;
  }
  negotiate(s, hb->features, hb->origin_high);
}

void sp_writer_recovery_over(sp_session *s) {
  sp_handler *h = s->handler;

  if (h->leader != s || !h->w.owed || h->w.negotiated ||
      h->fstate != SP_F_CONNECTED) {
    return;
  }
  h->w.owed = 0;
  negotiate(s, h->w.owed_features, h->w.owed_origin_high);
}

void sp_writer_ready(sp_session *s) {
  if (s->handler->leader == s) {
    s->handler->w.ready = 1;
  }
}

/* ---- proposing ---- */

typedef struct prop_ctx {
  sp_handler *h;
  msgpack_packer *pk;
  size_t body_len;  /* body bytes written so far */
  size_t max_frame;
  size_t max_count;
  size_t count;
  uint64_t batch_bytes;
  /* The first item cannot go at all (corrupt, or over the frame). */
  uint64_t unsendable;
  uint64_t unsendable_bytes;
  /* Stopped by a bound (frame, bytes) rather than by the outbox's end. */
  int limited;
  int err;
} prop_ctx;

static int queue_push(sp_handler *h, uint64_t origin, uint64_t bytes) {
  sp_writer *w = &h->w;

  if (w->qhead + w->qlen == w->qcap) {
    if (w->qhead > 0) {
      memmove(w->q, w->q + w->qhead, w->qlen * sizeof(*w->q));
      w->qhead = 0;
    } else {
      size_t cap = w->qcap ? w->qcap * 2 : 16;
      sp_inflight *q = sp_realloc(mem_of(h), w->q, cap * sizeof(*q));
      if (!q) {
        return SP_ERR_NOMEM;
      }
      w->q = q;
      w->qcap = cap;
    }
  }
  w->q[w->qhead + w->qlen].origin = origin;
  w->q[w->qhead + w->qlen].bytes = bytes;
  if (w->qlen++ == 0) {
    w->progress_at = h->node->now;
  }
  return 0;
}

static int prop_sink(const sp_entry *e, const uint8_t *hash, void *arg) {
  prop_ctx *c = arg;
  sp_handler *h = c->h;
  sp_writer *w = &h->w;
  uint64_t bytes = sp_writer_entry_bytes(e);
  sp_entry x = *e;
  size_t len;

  (void)hash;
  x.sequence = 0;
  x.device_id = h->node->cfg.device_id;
  if (c->count >= c->max_count) {
    return SP_SINK_STOP;
  }
  if (x.origin_seq <= w->sent_through) {
    return SP_SINK_STOP; /* not in order: a broken store; nothing more */
  }
  c->limited = 1;
  len = sp_enc_check_entry(&x) == 0 ? sp_enc_entry_len(&x, 1) : 0;
  if (len == 0 || c->body_len + len > c->max_frame) {
    if (c->count == 0) {
      c->unsendable = x.origin_seq;
      c->unsendable_bytes = bytes;
    }
    return SP_SINK_STOP;
  }
  /* One entry always goes when nothing is in flight. */
  if ((c->count > 0 || w->qlen > 0) &&
      w->in_flight_bytes + c->batch_bytes + bytes > h->cfg.propose_max_bytes) {
    return SP_SINK_STOP;
  }
  c->limited = 0;
  if (track_add(h, x.origin_seq) != 0 ||
      queue_push(h, x.origin_seq, bytes) != 0 ||
      sp_enc_entry_wire(c->pk, &x, 1) != 0) {
    c->err = SP_ERR_NOMEM;
    return SP_ERR_NOMEM;
  }
  c->body_len += len;
  c->batch_bytes += bytes;
  c->count++;
  w->sent_through = x.origin_seq;
  return 0;
}

/* Not held back by a store failure episode (h->store_failing): a
 * proposal writes nothing locally, and the episode's backoff already kept
 * the follower off the leader until this stream.  Waiting for the episode
 * to end would wait forever on an idle, caught-up follower: only a write
 * ends it, and the answers and pages that the proposals bring are what
 * write next. */
static int may_propose(const sp_session *s) {
  const sp_handler *h = s->handler;
  const sp_writer *w = &h->w;

  return h->role == SP_ROLE_FOLLOWER && h->fstate == SP_F_CONNECTED &&
         h->leader == s && !s->refused && !s->close_after && w->negotiated &&
         w->ready && !w->drained && w->qlen < h->cfg.propose_window &&
         (w->qlen == 0 || w->in_flight_bytes < h->cfg.propose_max_bytes);
}

sp_tstamp sp_writer_stall_at(const sp_session *s) {
  const sp_handler *h = s->handler;

  /* While a full sync is pending answers are ignored, as pages are. */
  if (h->leader != s || h->role != SP_ROLE_FOLLOWER ||
      h->fstate != SP_F_CONNECTED || h->w.qlen == 0) {
    return SP_TSTAMP_MAX;
  }
  return h->w.progress_at + h->cfg.stall_timeout;
}

/* The largest Propose body: what we accept, or less if the leader said
 * it accepts less (it would refuse a larger frame and close the stream,
 * and we would send the same frame again on the next one, forever). */
static size_t propose_max_frame(const sp_session *s) {
  size_t mf = s->node->cfg.max_frame;
  uint64_t lm = s->handler->w.leader_max_frame;

  return lm != 0 && lm < mf ? (size_t)lm : mf;
}

/* An outbox item that can never go (it does not fit a frame the leader
 * accepts, or the store hands back something the codec refuses): refused here, as the
 * leader would, rather than blocking every item after it. */
static int refuse_unsendable(sp_session *s, uint64_t origin, uint64_t bytes) {
  static const char why[] = "entry cannot be proposed";
  int rv = refuse_item(s, origin, bytes, SP_ERR_BAD_PROPOSAL, why,
                       sizeof(why) - 1);

  if (rv != 0) {
    sp_follower_store_failed(s->handler, &s->peer, rv, "outbox remove");
    sp_session_close(s, SP_ERR_STORE);
    return 0;
  }
  return 1;
}

/* One try at a Propose: 1 if a frame was queued; *again when an item
 * that can never go was refused and the next one is worth a try. */
static int propose_once(sp_session *s, int *again) {
  sp_handler *h = s->handler;
  sp_writer *w = &h->w;
  size_t frame_rel, count_off, qlen0 = w->qlen;
  uint64_t through0 = w->sent_through;
  uint8_t prefix[SP_FRAME_HEADER_LEN] = {0};
  msgpack_packer pk;
  sp_wr wr;
  prop_ctx c;
  size_t body_start;
  int rv;

  if (!may_propose(s)) {
    return 0;
  }
  frame_rel = sp_buf_pending(&s->out);
  body_start = frame_rel + SP_FRAME_HEADER_LEN;
  if (sp_buf_append(&s->out, prefix, sizeof(prefix)) != 0) {
    goto nomem;
  }
  sp_wr_buf(&wr, &pk, &s->out);
  if (sp_enc_propose_head(&pk, &s->lib, h->st.epoch, &count_off) != 0) {
    goto nomem;
  }
  memset(&c, 0, sizeof(c));
  c.h = h;
  c.pk = &pk;
  c.body_len = sp_buf_pending(&s->out) - body_start;
  c.max_frame = propose_max_frame(s);
  c.max_count = h->cfg.propose_window - w->qlen;
  if (c.max_count > SP_MAX_PROPOSE_ENTRIES) {
    c.max_count = SP_MAX_PROPOSE_ENTRIES;
  }
  rv = h->store.outbox_read(w->sent_through, c.max_count, prop_sink, &c,
                            h->store.user_data);
  if (c.err == SP_ERR_NOMEM || rv == SP_ERR_NOMEM) {
    goto nomem;
  }
  if (rv < 0) {
    s->out.len = s->out.off + frame_rel;
    w->qlen = qlen0;
    w->sent_through = through0;
    sp_follower_store_failed(h, &s->peer, rv, "outbox read");
    sp_session_close(s, SP_ERR_STORE);
    return 0;
  }
  if (c.count == 0) {
    s->out.len = s->out.off + frame_rel;
    if (c.unsendable) {
      *again = refuse_unsendable(s, c.unsendable, c.unsendable_bytes);
      return 0;
    }
    /* Nothing more, or the byte bound holds the next one back: either
     * way, wait for a submit or an answer. */
    w->drained = 1;
    return 0;
  }
  sp_enc_patch_count(s->out.data + s->out.off + body_start + count_off,
                     (uint32_t)c.count);
  sp_put_be32(s->out.data + s->out.off + frame_rel,
              (uint32_t)(sp_buf_pending(&s->out) - body_start));
  w->in_flight_bytes += c.batch_bytes;
  /* The read ended before the window did, by itself: nothing more is
   * waiting until the next submit. */
  w->drained = c.count < c.max_count && !c.limited;
  return 1;

nomem:
  s->out.len = s->out.off + frame_rel;
  w->qlen = qlen0;
  w->sent_through = through0;
  sp_node_set_fatal(s->node, SP_ERR_NOMEM);
  sp_session_close(s, SP_ERR_NOMEM);
  return 0;
}

/* A loop, not a recursion: a long run of items that cannot go (a leader
 * with a smaller frame maximum than ours) is refused one by one. */
int sp_writer_propose_frame(sp_session *s) {
  int again, rv;

  do {
    again = 0;
    rv = propose_once(s, &again);
  } while (again);
  return rv;
}

/* ---- the public calls (sp_handler.c checks the handle) ---- */

/* Fill in and check one submitted entry: the leader must be able to serve
 * it in a page (sp_entry_max_len), with the largest sequence and origin
 * it could get. */
static int check_entry(const sp_handler *h, sp_entry *e) {
  const sp_uuid *self = &h->node->cfg.device_id;
  static const sp_uuid zero;
  sp_entry x;

  if (sp_uuid_equal(&e->device_id, &zero)) {
    e->device_id = *self;
  } else if (!sp_uuid_equal(&e->device_id, self)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  e->sequence = 0;
  e->origin_seq = 0;
  if (sp_enc_check_entry(e) != 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  x = *e;
  x.sequence = UINT64_MAX;
  x.origin_seq = UINT64_MAX;
  if (sp_enc_entry_len(&x, 1) > sp_entry_max_len(h->node)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

/* Copy `entries` with device_id filled in and checked.  The caller frees
 * *out. */
static int normalize(sp_handler *h, const sp_entry *entries, size_t n,
                     sp_entry **out, uint64_t *bytes) {
  sp_entry *v = sp_malloc(mem_of(h), n * sizeof(*v));
  size_t i;

  if (!v) {
    return SP_ERR_NOMEM;
  }
  *bytes = 0;
  for (i = 0; i < n; ++i) {
    v[i] = entries[i];
    if (check_entry(h, &v[i]) != 0) {
      sp_free(mem_of(h), v);
      return SP_ERR_INVALID_ARGUMENT;
    }
    *bytes += sp_writer_entry_bytes(&v[i]);
  }
  *out = v;
  return 0;
}

int sp_writer_submit(sp_handler *h, const sp_entry *entries, size_t n,
                     uint64_t *first_origin) {
  sp_writer *w = &h->w;
  sp_entry *v;
  uint64_t bytes, first = 0;
  int rv;

  if (!sp_store_has_writes(&h->store)) {
    return SP_ERR_NOT_SUPPORTED;
  }
  rv = normalize(h, entries, n, &v, &bytes);
  if (rv != 0) {
    return rv;
  }
  if (h->role == SP_ROLE_LEADER) {
    rv = sp_admit_submit_local(h, v, n, first_origin);
    sp_free(mem_of(h), v);
    return rv;
  }
  if (!w->stats_valid && read_stats(h) != 0) {
    sp_free(mem_of(h), v);
    return SP_ERR_STORE;
  }
  if (w->stats.items + n > h->cfg.outbox_max_items ||
      w->stats.bytes + bytes > h->cfg.outbox_max_bytes) {
    sp_free(mem_of(h), v);
    return SP_ERR_OUTBOX_FULL;
  }
  rv = h->store.outbox_put(v, n, &first, h->store.user_data);
  sp_free(mem_of(h), v);
  if (rv != 0) {
    /* The store wrote nothing (atomic); its figures may have moved. */
    w->stats_valid = 0;
    sp_durable_recheck(h);
    return rv == SP_ERR_NOMEM ? rv : SP_ERR_STORE;
  }
  /* A write to the store that works: it ends a failure episode (a
   * full disk would have refused it). */
  sp_follower_store_wrote(h, NULL);
  w->stats.items += n;
  w->stats.bytes += bytes;
  w->stats.next_origin = first + n;
  w->drained = 0;
  if (first_origin) {
    *first_origin = first;
  }
  if (h->leader && h->fstate == SP_F_CONNECTED) {
    sp_session_pump(h->leader);
  }
  return 0;
}

typedef struct find_ctx {
  uint64_t origin;
  int found;
} find_ctx;

static int find_sink(const sp_entry *e, const uint8_t *hash, void *arg) {
  find_ctx *c = arg;

  (void)hash;
  c->found = e->origin_seq == c->origin;
  return SP_SINK_STOP;
}

int sp_writer_submission(sp_handler *h, uint64_t origin, sp_seq *seq) {
  uint64_t high;
  int rv;

  *seq = 0;
  if (!sp_store_has_writes(&h->store)) {
    return SP_ERR_NOT_SUPPORTED;
  }
  rv = h->store.find_origin(&h->node->cfg.device_id, origin, seq, &high,
                            h->store.user_data);
  if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
    *seq = 0;
    sp_durable_recheck(h);
    return SP_ERR_STORE;
  }
  /* Pruned (committed, seq 0) is not in the retained log (node.h).  An
   * apply still pending is not committed yet: only a durable one
   * (sp_durable.c) retires the submission. */
  if (rv == 0 && h->role == SP_ROLE_FOLLOWER &&
      sp_durable_pending_at(h, *seq)) {
    *seq = 0;
    return SP_ERR_NOT_FOUND;
  }
  return rv == 0 && *seq ? 0 : SP_ERR_NOT_FOUND;
}

/* Whether the outbox holds item `origin`. */
static int in_outbox(sp_handler *h, uint64_t origin, int *found) {
  find_ctx fc;
  int rv;

  fc.origin = origin;
  fc.found = 0;
  rv = h->store.outbox_read(origin - 1, 1, find_sink, &fc,
                            h->store.user_data);
  *found = fc.found;
  if (rv < 0) {
    sp_durable_recheck(h);
  }
  return rv < 0 ? rv : 0;
}

/* A tracked or waited-on submission after a host's full sync: still in
 * the outbox (0), or gone, reported and its waits ended (1), or the store
 * failed (negative: it stays as it is). */
static int settle_after_resync(sp_handler *h, uint64_t origin) {
  sp_seq seq = 0;
  uint64_t high;
  int rv, found;

  rv = in_outbox(h, origin, &found);
  if (rv != 0 || found) {
    return rv;
  }
  rv = h->store.find_origin(&h->node->cfg.device_id, origin, &seq, &high,
                            h->store.user_data);
  if (rv == 0) {
    /* The new history holds it (seq 0: pruned there): the store retired
     * the item, no apply will report it. */
    sp_writer_report_committed(h, NULL, origin, seq);
    return 1;
  }
  if (rv != SP_ERR_NOT_FOUND) {
    return rv;
  }
  /* Neither pending nor committed: the store broke its full-sync rules
   * (sys/store.h).  Nothing will ever settle it. */
  sp_hlog(h, NULL, SP_LOG_WARN,
          "submission %llu left the outbox in a full sync without being "
          "committed",
          (unsigned long long)origin);
  track_del(h, origin);
  end_waits(h, origin, SP_ERR_CANCELED, 0);
  return 1;
}

void sp_writer_resynced(sp_handler *h) {
  sp_writer *w = &h->w;
  size_t i = 0;
  int again = 1;

  if (!sp_store_has_writes(&h->store)) {
    return;
  }
  w->stats_valid = 0;
  (void)read_stats(h);
  /* In submission order.  Settling one removes only its own slot (no
   * proposal can go while disconnected), so the next one moves into i. */
  while (i < w->ntracked) {
    if (settle_after_resync(h, w->tracked[i]) != 1) {
      i++;
    }
  }
  /* A callback may register or end waits: look again from the start
   * after each one settled. */
  while (again) {
    sp_cwait *c;
    again = 0;
    for (c = w->waits; c; c = c->next) {
      if (settle_after_resync(h, c->origin) == 1) {
        again = 1;
        break;
      }
    }
  }
}

int sp_writer_wait(sp_handler *h, uint64_t origin, sp_tstamp deadline,
                   sp_commit_wait_cb cb, void *user_data) {
  sp_cwait *c;
  sp_seq seq = 0;
  uint64_t high;
  int rv, found;

  if (!sp_store_has_writes(&h->store)) {
    return SP_ERR_NOT_SUPPORTED;
  }
  /* In the committed set (retained or pruned): committed already. */
  rv = h->store.find_origin(&h->node->cfg.device_id, origin, &seq, &high,
                            h->store.user_data);
  if (rv == 0 && h->role == SP_ROLE_FOLLOWER && sp_durable_pending_at(h, seq)) {
    /* Applied, not durable yet: its commit is reported then (and the
     * outbox no longer shows it). */
    found = 1;
  } else if (rv == 0) {
    return 1;
  } else if (rv != SP_ERR_NOT_FOUND) {
    sp_durable_recheck(h);
    return SP_ERR_STORE;
  } else {
    /* Not in the log: it must still be waiting in the outbox. */
    rv = in_outbox(h, origin, &found);
    if (rv != 0) {
      return rv == SP_ERR_NOMEM ? rv : SP_ERR_STORE;
    }
  }
  if (!found) {
    return SP_ERR_NOT_FOUND;
  }
  c = sp_calloc(mem_of(h), 1, sizeof(*c));
  if (!c) {
    return SP_ERR_NOMEM;
  }
  c->origin = origin;
  c->deadline = deadline;
  c->cb = cb;
  c->user_data = user_data;
  /* Appended: waits for one submission end in the order they came. */
  {
    sp_cwait **pp = &h->w.waits;
    while (*pp) {
      pp = &(*pp)->next;
    }
    *pp = c;
  }
  return 0;
}

int sp_writer_status(sp_handler *h, sp_outbox_status *out) {
  memset(out, 0, sizeof(*out));
  if (!sp_store_has_writes(&h->store)) {
    return SP_ERR_NOT_SUPPORTED;
  }
  if (read_stats(h) != 0) {
    return SP_ERR_STORE;
  }
  out->pending = h->w.stats.items;
  out->pending_bytes = h->w.stats.bytes;
  if (h->role == SP_ROLE_FOLLOWER && h->leader) {
    out->in_flight = h->w.qlen;
    out->leader_accepts = h->w.negotiated;
  }
  return 0;
}
