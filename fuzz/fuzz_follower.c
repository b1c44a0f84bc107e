/*
 * fuzz_follower.c: one node following library L, fed arbitrary bytes as if
 * from its leader, and driven by its host.
 *
 * The node (device F1) follows L; its registry names X as the leader (an
 * op can name F2 or nobody instead).  At creation the handler opens a
 * stream to X through the capture transport; that stream is stream 0.
 * Its store is an in-memory store, pre-filled with a prefix of "the
 * leader's log" R (or with a divergent or longer log), behind the failing
 * and checking store of fuzz_session_util.c.  R is the harness's model of
 * what the leader holds: synthesized pages are cut from it with real
 * chain hashes, so the fuzzer reaches `apply` without forging BLAKE2b.
 *
 * Input: an 8-byte header, then operations (fuzz_session_util.h lists the
 * common ones).
 *
 *   hdr[0] flags: 1 fetch_window 1 + (hdr[3] & 3); 2 fetch_limit
 *          1 + ((hdr[3] >> 2) & 7); 4 small max frame
 *          256 + 64 * (hdr[4] & 15); 8 heartbeat interval 1 s, factor 2;
 *          16 log lines on; 32 new local streams start connecting;
 *          64 the store's prefix diverges from R; 128 the registry names
 *          no leader at first
 *   hdr[1] R holds hdr[1] & 31 entries
 *   hdr[2] the store holds hdr[2] & 31 entries (past R's end: ahead);
 *          32 stall timeout 1 s; 64 reconnect 1..20 ms; 128 R and the
 *          store skip sequence 3
 *   hdr[3] parameters of the flags above; snapshot window
 *          1 + (hdr[3] >> 5)
 *   hdr[4] max frame parameter; payload class hdr[4] >> 4
 *   hdr[5] store epoch hdr[5] & 3; leader epoch E = that + ((hdr[5] >> 2)
 *          & 3)
 *   hdr[6] failure mask while the handler is created (one shot)
 *   hdr[7] node seed
 *
 * Role operations (op byte = kind << 4 | p):
 *   0x4p      request_entries(since applied - (p & 3); p & 4: past the
 *             applied sequence)
 *   0x9p ...  host API, p: 0 resync_done; 1 full sync (the store becomes
 *             a copy of R) then resync_done; 2 get_status; 3 leader-only
 *             calls; 4 registry leader := X, F2 or none (u8 % 3);
 *             5 stream calls with a wrong peer or NULL data (u8 picks);
 *             6 handle_expiry now
 *   0xap u8   R grows by 1 + (p & 3) entries of class u8 & 15 (p & 4:
 *             skip one sequence first)
 *   0xbp f b v  a synthesized frame from the current stream's peer,
 *             p & 7: 0 EntriesResponse cut from R: since from b (the
 *             store's applied sequence, before it, after it, absolute),
 *             f & 7 entries, f & 8 through one further, f & 16 has_more
 *             flipped, f & 32 leader_latest = through, f & 64 last_hash
 *             bit flipped, f & 128 no last_hash; 1 NewEntries; 2
 *             Heartbeat (f & 2: role follower); 3 SyncRequired(reason
 *             1 + (f & 3), oldest b); 4 Error; 5 FetchEntries or
 *             Acknowledge (wrong role); 6 a forged page: 1 + (f & 3)
 *             entries that R does not hold, chained correctly from the
 *             store's head; 7 a burst of 1 + (b & 7) consecutive R pages
 *             of 1 + (f & 3) entries from the applied sequence; p & 8 the
 *             write path instead: f & 3: 0 a ProposeResult answering the
 *             first 1 + (b & 3) proposals unanswered (f & 4: one answer
 *             for an origin never proposed; code from f >> 4), 1 the
 *             leader's Heartbeat with features (WRITES if f & 4,
 *             origin_high b), 2 a Propose (a leader's message to a
 *             follower), 3 a ProposeResult before any proposal.  v & 3
 *             picks the epoch (E, E + 1, E - 1, 0), v & 4 another library,
 *             v & 8 write-path answers "appended" at sequence 0.
 *   0x97 a b  sp_handler_submit of 1 + (a & 3) entries (a & 4: one names
 *             another device, a & 8: one is larger than a frame), payload
 *             class b & 15; a & 16: sp_handler_wait_committed on the
 *             first origin (deadline b ms on); a & 32:
 *             sp_handler_outbox_status and sp_handler_submission
 *   0x4p f b  with p & 8: the snapshot path (synth_snapshot below)
 *   0xdp      leader epoch E: p < 8: E += p + 1; else E -= p - 7
 *
 * Oracles (besides the common ones, which include the checked apply):
 * only follower messages are sent; Acknowledge never claims more than the
 * store durably holds; the resume fetch's since_hash is the store's own
 * link at `since`; Heartbeats claim no more than applied; the applied
 * sequence and the recorded epoch never go down (handler and store); the
 * handler never believes more than the store holds; events are follower
 * events and ENTRIES_APPLIED reports what the store holds.  The write
 * path: the store has the whole version-3 group (forwarded to the
 * in-memory store; outbox writes fail with FSU_FAIL_APPLY); Propose
 * entries carry this device's id, sequence 0 and increasing origins,
 * never an origin proposed and unanswered on the stream, at most
 * cfg.propose_window unanswered; SUBMISSION_COMMITTED names an entry of
 * this device the store holds at to_sequence, or (to_sequence 0) one in
 * its committed set but pruned, or one a synthesized answer said was
 * appended at to_sequence, at or below the applied sequence;
 * SUBMISSION_REFUSED carries a negative code.  Snapshots (the handler
 * has the in-memory store's sink, window 1 + (hdr[3] >> 5)): the store
 * is never a mix: its head is always its own link at `applied`, it moves
 * only by applied entries, a full sync or an install; an install of R's
 * snapshot holds exactly R's entries; an install may lower the applied
 * sequence, never the epoch; SnapshotRequest and SnapshotFetch are the
 * only new messages, and a FetchEntries of limit 1 off the configured
 * limit is the verify fetch at the transfer's S.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_session_util.h"

#define FSU_MAX_FULL_SYNCS 8
/* Proposals remembered (unanswered, oldest first) for synthesized
 * answers; the window below keeps the follower within it. */
#define F_MAX_PROPOSED 64
#define F_PROPOSE_WINDOW 16

typedef struct follower_ctx {
  fsu_world w; /* first: the hooks cast */
  sp_mem_store *rlog;
  sp_store rvt;
  sp_seq rlatest;
  uint64_t E;
  uint32_t fetch_limit;
  unsigned cls;
  /* The store's content before each full sync (index: generation), for
   * frames built before it and sent after it. */
  sp_mem_store *gens[FSU_MAX_FULL_SYNCS];
  /* Monotonic views. */
  sp_seq max_applied;
  uint64_t max_epoch;
  sp_seq max_store_applied;
  uint64_t max_store_epoch;
  /* Origins proposed on the current stream and not answered by a
   * synthesized ProposeResult yet, oldest first; the stream they went on. */
  uint64_t proposed[F_MAX_PROPOSED];
  size_t nproposed;
  size_t proposed_stream;
  uint64_t last_proposed;
  /* Synthesized answers "appended at sequence" (code 0), last ones: the
   * follower may take one at or below where it stands as committed. */
  uint64_t answered[F_MAX_PROPOSED];
  sp_seq answered_seq[F_MAX_PROPOSED];
  size_t nanswered;
  /* Snapshots: the sink into the store; the last manifest the harness
   * fed (a snapshot of R by the in-memory store's source, its bytes
   * kept); the follower's last SnapshotFetch and FetchEntries. */
  sp_snapshot_sink sink;
  uint8_t man_id[SP_SNAPSHOT_ID_LEN];
  uint32_t man_chunk;
  uint8_t *img;
  size_t img_len;
  int have_man;
  /* Chunks asked for and not fed yet, as a leader tracks them:
   * [want_next, want_end). */
  uint64_t want_next;
  uint64_t want_end;
  sp_msg_fetch_entries last_fetch;
  int have_fetch;
  /* The store's state after the last op, and the applies then. */
  sp_seq seen_applied;
  uint8_t seen_head[SP_HASH_LEN];
  long seen_applies;
  int seen_gen;
  int installed; /* SNAPSHOT_INSTALLED since the last check */
} follower_ctx;

static follower_ctx *ctx_of(fsu_world *w) { return (follower_ctx *)w; }

static void log_append(sp_mem_store *store, sp_seq seq, unsigned cls) {
  static uint8_t buf[FSU_PAYLOAD_MAX];
  sp_entry e;
  sp_seq got = 0;

  fsu_make_entry(&e, seq, cls, buf);
  if (sp_mem_store_append(store, &e, &got) != 0 || got != seq) {
    fsu_fail("the harness could not append entry %llu",
             (unsigned long long)seq);
  }
}

static void set_epoch(const sp_store *vt, uint64_t epoch) {
  if (vt->apply(NULL, NULL, 0, epoch, vt->user_data) != 0) {
    fsu_fail("the in-memory store refused an epoch");
  }
}

/* ---- the write path's store: the in-memory store's version-3 group ----
 *
 * Forwarded as is (the checking wrapper of fuzz_session_util.c has only the
 * seed's callbacks); the outbox's writes fail with FSU_FAIL_APPLY. */

static fsu_world *wof(void *ud) { return ud; }

static int fail_write(fsu_world *w) {
  if (!(w->fail_mask & FSU_FAIL_APPLY)) {
    return 0;
  }
  if (w->fail_once) {
    w->fail_mask &= ~(unsigned)FSU_FAIL_APPLY;
  }
  return 1;
}

static int v_append(const sp_entry *e, size_t n, sp_seq *first, void *ud) {
  (void)e;
  (void)n;
  (void)first;
  (void)ud;
  fsu_fail("a follower appended to its log as a leader would");
  return SP_ERR_STORE;
}

static int v_find_origin(const sp_uuid *device, uint64_t origin, sp_seq *seq,
                         uint64_t *high, void *ud) {
  fsu_world *w = wof(ud);
  return w->inner.find_origin(device, origin, seq, high, w->inner.user_data);
}

static int v_outbox_put(const sp_entry *e, size_t n, uint64_t *first,
                        void *ud) {
  fsu_world *w = wof(ud);
  if (fail_write(w)) {
    return SP_ERR_STORE;
  }
  return w->inner.outbox_put(e, n, first, w->inner.user_data);
}

static int v_outbox_read(uint64_t after, size_t max_count, sp_entry_sink sink,
                         void *sink_ctx, void *ud) {
  fsu_world *w = wof(ud);
  return w->inner.outbox_read(after, max_count, sink, sink_ctx,
                              w->inner.user_data);
}

static int v_outbox_remove(uint64_t origin, void *ud) {
  fsu_world *w = wof(ud);
  if (fail_write(w)) {
    return SP_ERR_STORE;
  }
  return w->inner.outbox_remove(origin, w->inner.user_data);
}

static int v_outbox_stats(sp_outbox_stats *out, void *ud) {
  fsu_world *w = wof(ud);
  return w->inner.outbox_stats(out, w->inner.user_data);
}

static int v_outbox_anchor(const sp_uuid *device, uint64_t high, void *ud) {
  fsu_world *w = wof(ud);
  if (fail_write(w)) {
    return SP_ERR_STORE;
  }
  return w->inner.outbox_anchor(device, high, w->inner.user_data);
}

static void add_write_path(fsu_world *w) {
  w->wrapped.append = v_append;
  w->wrapped.find_origin = v_find_origin;
  w->wrapped.outbox_put = v_outbox_put;
  w->wrapped.outbox_read = v_outbox_read;
  w->wrapped.outbox_remove = v_outbox_remove;
  w->wrapped.outbox_stats = v_outbox_stats;
  w->wrapped.outbox_anchor = v_outbox_anchor;
}

/* ---- checks ---- */

static void f_check_propose(follower_ctx *c, fsu_stream *s,
                            const sp_msg_propose *p) {
  size_t i, sid = (size_t)(s - c->w.streams);

  if (sid != c->proposed_stream) {
    /* A new stream starts over: everything unanswered is proposed again. */
    c->proposed_stream = sid;
    c->nproposed = 0;
    c->last_proposed = 0;
  }
  if (p->entry_count == 0 || p->entry_count > SP_MAX_PROPOSE_ENTRIES) {
    fsu_fail("Propose with %zu entries", p->entry_count);
  }
  for (i = 0; i < p->entry_count; ++i) {
    const sp_entry *e = &p->entries[i];
    if (e->sequence != 0 || e->origin_seq <= c->last_proposed ||
        !sp_uuid_equal(&e->device_id, &fsu_dev[FSU_F1])) {
      fsu_fail("proposed entry {sequence %llu, origin %llu} after origin "
               "%llu",
               (unsigned long long)e->sequence,
               (unsigned long long)e->origin_seq,
               (unsigned long long)c->last_proposed);
    }
    c->last_proposed = e->origin_seq;
    if (c->nproposed == F_MAX_PROPOSED) {
      fsu_fail("more than %d proposals unanswered (window %d)",
               F_MAX_PROPOSED, F_PROPOSE_WINDOW);
    }
    c->proposed[c->nproposed++] = e->origin_seq;
  }
  if (c->nproposed > F_PROPOSE_WINDOW) {
    fsu_fail("%zu proposals unanswered, window %d", c->nproposed,
             F_PROPOSE_WINDOW);
  }
}

static void f_check_sent(fsu_world *w, fsu_stream *s, const sp_msg *msg) {
  follower_ctx *c = ctx_of(w);
  sp_store_state st;

  fsu_store_state(w, &st);
  if (msg->epoch > st.epoch) {
    fsu_fail("follower message %d with epoch %llu, the store recorded %llu",
             (int)msg->type, (unsigned long long)msg->epoch,
             (unsigned long long)st.epoch);
  }
  switch (msg->type) {
  case SP_MSG_ERROR:
    break;
  case SP_MSG_ACKNOWLEDGE:
    if (msg->u.acknowledge.up_to_sequence == 0 ||
        msg->u.acknowledge.up_to_sequence > st.applied) {
      fsu_fail("Acknowledge(%llu) with %llu durably applied",
               (unsigned long long)msg->u.acknowledge.up_to_sequence,
               (unsigned long long)st.applied);
    }
    break;
  case SP_MSG_SNAPSHOT_REQUEST:
    break;
  case SP_MSG_SNAPSHOT_FETCH:
    if (msg->u.snapshot_fetch.first_chunk != c->want_end) {
      c->want_next = msg->u.snapshot_fetch.first_chunk;
    }
    c->want_end =
        msg->u.snapshot_fetch.first_chunk + msg->u.snapshot_fetch.count;
    break;
  case SP_MSG_FETCH_ENTRIES: {
    const sp_msg_fetch_entries *f = &msg->u.fetch_entries;
    sp_snapshot_progress sp;
    c->last_fetch = *f;
    c->have_fetch = 1;
    if (f->limit == 1 && f->since_hash_len == SP_HASH_LEN &&
        sp_handler_snapshot_status(w->h, &sp) == 0 &&
        sp.state == SP_SNAPSHOT_TRANSFERRING &&
        sp.sequence == f->since_sequence) {
      /* The verify fetch: since S with the manifest's hash_at. */
      break;
    }
    if (f->limit != c->fetch_limit) {
      fsu_fail("FetchEntries limit %llu, configured %u",
               (unsigned long long)f->limit, c->fetch_limit);
    }
    if (f->since_hash_len == SP_HASH_LEN) {
      /* The store as it was when the fetch was built: at some point
       * between the stream's start and now (a full sync may have replaced
       * the store's content in between). */
      int g, ok = 0;
      for (g = s->store_gen; g <= w->store_gen && !ok; ++g) {
        const sp_mem_store *then = g < w->store_gen ? c->gens[g] : w->store;
        uint8_t link[SP_HASH_LEN] = {0};
        sp_entry e;
        ok = f->since_sequence <= st.applied &&
             (f->since_sequence == 0 ||
              sp_mem_store_get(then, f->since_sequence, &e, link) == 0) &&
             memcmp(link, f->since_hash, SP_HASH_LEN) == 0;
      }
      /* After an install the store's head may be a base it holds no
       * entry for. */
      ok = ok || (f->since_sequence == st.applied &&
                  memcmp(st.head_hash, f->since_hash, SP_HASH_LEN) == 0);
      if (!ok) {
        fsu_fail("resume fetch since %llu: since_hash is not the store's "
                 "link there (applied %llu)",
                 (unsigned long long)f->since_sequence,
                 (unsigned long long)st.applied);
      }
    }
    break;
  }
  case SP_MSG_HEARTBEAT:
    if (msg->u.heartbeat.role != SP_ROLE_FOLLOWER ||
        msg->u.heartbeat.current_sequence > st.applied) {
      fsu_fail("follower Heartbeat{%llu, role %d} with %llu applied",
               (unsigned long long)msg->u.heartbeat.current_sequence,
               (int)msg->u.heartbeat.role, (unsigned long long)st.applied);
    }
    break;
  case SP_MSG_PROPOSE:
    f_check_propose(c, s, &msg->u.propose);
    break;
  default:
    fsu_fail("the follower sent a leader's message, type %d", (int)msg->type);
  }
}

/* The store is never a mix: its head is its own link at `applied`; it
 * moves only by applied entries or an install; an install that took R's
 * snapshot holds exactly R's entries. */
static void check_store_consistent(follower_ctx *c, const sp_store_state *st) {
  fsu_world *w = &c->w;
  uint8_t link[SP_HASH_LEN];

  if (st->applied > 0 &&
      (w->inner.hash_at(st->applied, link, w->inner.user_data) != 0 ||
       memcmp(link, st->head_hash, SP_HASH_LEN) != 0)) {
    fsu_fail("the store's head at %llu is not its link there",
             (unsigned long long)st->applied);
  }
  if ((st->applied != c->seen_applied ||
       memcmp(st->head_hash, c->seen_head, SP_HASH_LEN) != 0) &&
      w->applies == c->seen_applies && !c->installed &&
      w->store_gen == c->seen_gen) {
    fsu_fail("the store moved from %llu to %llu with nothing applied or "
             "installed",
             (unsigned long long)c->seen_applied,
             (unsigned long long)st->applied);
  }
  c->seen_applied = st->applied;
  memcpy(c->seen_head, st->head_hash, SP_HASH_LEN);
  c->seen_applies = w->applies;
  c->seen_gen = w->store_gen;
  c->installed = 0;
}

static void f_check_state(fsu_world *w) {
  follower_ctx *c = ctx_of(w);
  sp_handler_status hs;
  sp_store_state st;

  fsu_status(w, &hs);
  fsu_store_state(w, &st);
  if (hs.role != SP_ROLE_FOLLOWER) {
    fsu_fail("the follower's role changed to %d", (int)hs.role);
  }
  if (hs.sequence < c->max_applied || st.applied < c->max_store_applied) {
    fsu_fail("applied sequence went back: handler %llu (was %llu), store "
             "%llu (was %llu)",
             (unsigned long long)hs.sequence,
             (unsigned long long)c->max_applied,
             (unsigned long long)st.applied,
             (unsigned long long)c->max_store_applied);
  }
  if (hs.sequence > st.applied) {
    fsu_fail("the handler believes %llu applied, the store holds %llu",
             (unsigned long long)hs.sequence, (unsigned long long)st.applied);
  }
  if (hs.epoch < c->max_epoch || st.epoch < c->max_store_epoch ||
      hs.epoch > st.epoch) {
    fsu_fail("epoch went back: handler %llu (was %llu), store %llu (was "
             "%llu)",
             (unsigned long long)hs.epoch, (unsigned long long)c->max_epoch,
             (unsigned long long)st.epoch,
             (unsigned long long)c->max_store_epoch);
  }
  check_store_consistent(c, &st);
  c->max_applied = hs.sequence;
  c->max_store_applied = st.applied;
  c->max_epoch = hs.epoch;
  c->max_store_epoch = st.epoch;
}

static void f_check_event(fsu_world *w, const sp_event *ev) {
  sp_store_state st;

  fsu_store_state(w, &st);
  switch (ev->type) {
  case SP_EVENT_ACK_RECEIVED:
  case SP_EVENT_SYNC_REQUIRED_SENT:
  case SP_EVENT_STEPPED_DOWN:
  case SP_EVENT_ROLE_CONFLICT:
  case SP_EVENT_LOG_CORRUPT:
    fsu_fail("the follower reported leader event %d", (int)ev->type);
  case SP_EVENT_ENTRIES_APPLIED:
    /* (from, to]: from is where the store stood, to where it stands. */
    if (ev->from_sequence >= ev->to_sequence ||
        ev->to_sequence != st.applied) {
      fsu_fail("ENTRIES_APPLIED (%llu..%llu), the store holds %llu",
               (unsigned long long)ev->from_sequence,
               (unsigned long long)ev->to_sequence,
               (unsigned long long)st.applied);
    }
    break;
  case SP_EVENT_CAUGHT_UP:
    if (ev->to_sequence > st.applied) {
      fsu_fail("CAUGHT_UP at %llu, the store holds %llu",
               (unsigned long long)ev->to_sequence,
               (unsigned long long)st.applied);
    }
    break;
  case SP_EVENT_SYNC_REQUIRED_RECEIVED:
    if (ev->sync_reason < SP_SYNC_BEHIND_RETENTION ||
        ev->sync_reason > SP_SYNC_RETENTION_CAP) {
      fsu_fail("SyncRequired received with reason %d", (int)ev->sync_reason);
    }
    break;
  case SP_EVENT_SUBMISSION_COMMITTED: {
    follower_ctx *c = ctx_of(w);
    sp_store vt;
    sp_entry e;
    sp_seq at = 0;
    uint64_t high;
    int ok = 0;
    size_t i;
    sp_mem_store_get_vtable(w->store, &vt);
    if (ev->to_sequence != 0) {
      /* Applied, or brought by a full sync, at that place. */
      ok = ev->to_sequence <= st.applied &&
           sp_mem_store_get(w->store, ev->to_sequence, &e, NULL) == 0 &&
           e.origin_seq == ev->origin_seq &&
           sp_uuid_equal(&e.device_id, &fsu_dev[FSU_F1]);
    } else {
      /* In the store's committed set, pruned. */
      ok = vt.find_origin(&fsu_dev[FSU_F1], ev->origin_seq, &at, &high,
                          vt.user_data) == 0 &&
           at == 0;
    }
    /* Or an answer said so, at or below where the follower stands. */
    for (i = 0; !ok && i < c->nanswered; ++i) {
      ok = c->answered[i] == ev->origin_seq &&
           c->answered_seq[i] == ev->to_sequence &&
           ev->to_sequence <= st.applied;
    }
    if (ev->origin_seq == 0 || !ok) {
      fsu_fail("SUBMISSION_COMMITTED origin %llu at %llu: not in the store",
               (unsigned long long)ev->origin_seq,
               (unsigned long long)ev->to_sequence);
    }
    break;
  }
  case SP_EVENT_ENTRIES_APPENDED:
    fsu_fail("a follower reported a leader's append");
  case SP_EVENT_SUBMISSION_REFUSED:
    if (ev->origin_seq == 0 || ev->error_code >= 0) {
      fsu_fail("SUBMISSION_REFUSED origin %llu code %d",
               (unsigned long long)ev->origin_seq, ev->error_code);
    }
    break;
  case SP_EVENT_SNAPSHOT_PROGRESS:
    if (ev->snapshot->chunks_done > ev->snapshot->chunk_count ||
        ev->snapshot->bytes_done > ev->snapshot->bytes_total) {
      fsu_fail("snapshot progress past its totals");
    }
    break;
  case SP_EVENT_SNAPSHOT_INSTALLED: {
    follower_ctx *c = ctx_of(w);
    uint8_t link[SP_HASH_LEN] = {0};
    sp_entry e, r;
    sp_seq q;
    if (ev->to_sequence != st.applied) {
      fsu_fail("snapshot installed at %llu, the store holds %llu",
               (unsigned long long)ev->to_sequence,
               (unsigned long long)st.applied);
    }
    if (st.applied > 0 &&
        (w->inner.hash_at(st.applied, link, w->inner.user_data) != 0 ||
         memcmp(link, st.head_hash, SP_HASH_LEN) != 0)) {
      fsu_fail("installed at %llu, the head is not the store's link there",
               (unsigned long long)st.applied);
    }
    /* R's snapshot: every entry the store holds is R's. */
    if (st.applied <= c->rlatest &&
        (st.applied == 0 ||
         (sp_mem_store_get(c->rlog, st.applied, &r, link) == 0 &&
          memcmp(link, st.head_hash, SP_HASH_LEN) == 0))) {
      for (q = 1; q <= st.applied; ++q) {
        int a = sp_mem_store_get(w->store, q, &e, NULL);
        if (a == 0 && (sp_mem_store_get(c->rlog, q, &r, NULL) != 0 ||
                       !fsu_entry_equal(&e, &r))) {
          fsu_fail("installed snapshot of R holds at %llu an entry R does "
                   "not", (unsigned long long)q);
        }
      }
    }
    /* An install may lower the applied sequence (a log ahead of the
     * leader's is replaced), never the epoch. */
    c->max_applied = st.applied;
    c->max_store_applied = st.applied;
    c->installed = 1;
    break;
  }
  case SP_EVENT_SNAPSHOT_FAILED:
    if (ev->error_code != SP_ERR_SNAPSHOT_FAILED &&
        ev->error_code != SP_ERR_SNAPSHOT_TOO_LARGE) {
      fsu_fail("snapshot failed with %s", sp_err_name(ev->error_code));
    }
    break;
  default:
    break;
  }
}

static const fsu_role_ops follower_ops = {f_check_sent, f_check_state,
                                          f_check_event};

/* ---- operations ---- */

static sp_seq applied_now(fsu_world *w) {
  sp_store_state st;

  fsu_store_state(w, &st);
  return st.applied;
}

static void synth_snapshot(follower_ctx *c, uint8_t f, uint8_t b);

static void op_request(follower_ctx *c, unsigned p, fsu_in *in) {
  fsu_world *w = &c->w;
  sp_handler_status hs;
  sp_seq since;
  long owed;
  int rv;

  if (p & 8) {
    uint8_t f = fsu_u8(in), b = fsu_u8(in);
    synth_snapshot(c, f, b);
    return;
  }
  fsu_status(w, &hs);
  if (p & 4) {
    since = hs.sequence + 1 + (p & 3);
  } else {
    since = hs.sequence > (p & 3) ? hs.sequence - (p & 3) : 0;
  }
  /* Owed before the call: the request can end inside it (a send fails,
   * the stream closes, the callback runs before the call returns 0). */
  owed = ++w->requests_pending;
  FSU_CALL(w, rv,
           sp_handler_request_entries(w->h, since, fsu_request_cb, w, w->now));
  if (since > hs.sequence) {
    fsu_rc(w, "sp_handler_request_entries(past applied)", rv, 0,
           SP_ERR_INVALID_ARGUMENT, SP_ERR_INVALID_STATE, FSU_END);
  } else {
    /* Connecting at once can fail on the spot: no leader in the registry,
     * the registry or the store failing, the transport refusing. */
    fsu_rc(w, "sp_handler_request_entries", rv, 1, 0, SP_ERR_INVALID_STATE,
           SP_ERR_NOT_FOUND, SP_ERR_REGISTRY, SP_ERR_STORE,
           SP_ERR_UNREACHABLE, FSU_END);
  }
  if (rv != 0) {
    long before = w->requests_pending;
    if (before == owed - 1) {
      /* Called back inside the call: only a failing callback (fatal
       * SP_ERR_CALLBACK_FAILURE) may then make the call fail. */
      if (rv != SP_ERR_CALLBACK_FAILURE) {
        fsu_fail("request called back, then refused with %s",
                 sp_err_name(rv));
      }
    } else {
      w->requests_pending--;
    }
  }
}

static int commit_cb(sp_handler *h, uint64_t origin, int status, sp_seq seq,
                     void *ud) {
  fsu_world *w = ud;

  if (h != w->h || origin == 0) {
    fsu_fail("commit wait callback for another handler or origin 0");
  }
  /* Committed at 0: below the retained log (pruned, or answered so). */
  if (status > 0 || (status != 0 && seq != 0)) {
    fsu_fail("commit wait ended with %d at %llu", status,
             (unsigned long long)seq);
  }
  if (w->waits_pending <= 0) {
    fsu_fail("a commit wait was called back twice, or never registered");
  }
  w->waits_pending--;
  return 0;
}

static void op_submit(follower_ctx *c, fsu_in *in) {
  static uint8_t bufs[3][FSU_PAYLOAD_MAX];
  fsu_world *w = &c->w;
  uint8_t a = fsu_u8(in), b = fsu_u8(in);
  size_t n = 1 + (a & 3), i;
  uint8_t *big = NULL;
  sp_entry e[4];
  uint64_t first = 0;
  sp_outbox_status os;
  sp_seq seq;
  int rv, bad = (a & 12) != 0;

  for (i = 0; i < n; ++i) {
    fsu_make_entry(&e[i], 0, b & 15, bufs[i % 3]);
    /* Zero (this device), or this device's id. */
    memset(&e[i].device_id, 0, sizeof(e[i].device_id));
    if (i & 1) {
      e[i].device_id = fsu_dev[FSU_F1];
    }
    e[i].sequence = 7 * i;  /* ignored */
    e[i].origin_seq = 9;    /* ignored */
  }
  if (a & 4) {
    e[n - 1].device_id = fsu_dev[FSU_F2];
  }
  if (a & 8) {
    big = calloc(1, w->max_frame + 1);
    if (!big) {
      fsu_fail("out of memory in the harness");
    }
    e[0].data = big;
    e[0].data_len = w->max_frame + 1;
  }
  FSU_CALL(w, rv, sp_handler_submit(w->h, e, n, &first, w->now));
  free(big);
  if (bad) {
    fsu_rc(w, "sp_handler_submit(bad entry)", rv, 1, SP_ERR_INVALID_ARGUMENT,
           FSU_END);
  } else {
    fsu_rc(w, "sp_handler_submit", rv, 1, 0, SP_ERR_STORE, SP_ERR_OUTBOX_FULL,
           SP_ERR_INVALID_ARGUMENT, FSU_END);
  }
  if (w->fatal || rv != 0) {
    return;
  }
  if (first == 0) {
    fsu_fail("submit gave origin 0");
  }
  if (a & 16) {
    FSU_CALL(w, rv,
             sp_handler_wait_committed(w->h, first,
                                       w->now + b * SP_MILLISECONDS,
                                       commit_cb, w, w->now));
    fsu_rc(w, "sp_handler_wait_committed", rv, 1, 0, 1, SP_ERR_NOT_FOUND,
           SP_ERR_STORE, FSU_END);
    if (rv == 0) {
      w->waits_pending++;
    }
  }
  if (a & 32) {
    FSU_CALL(w, rv, sp_handler_outbox_status(w->h, &os));
    fsu_rc(w, "sp_handler_outbox_status", rv, 0, 0, SP_ERR_STORE, FSU_END);
    if (rv == 0 && os.in_flight > os.pending) {
      fsu_fail("%llu in flight of %llu pending",
               (unsigned long long)os.in_flight,
               (unsigned long long)os.pending);
    }
    FSU_CALL(w, rv, sp_handler_submission(w->h, first, &seq));
    fsu_rc(w, "sp_handler_submission", rv, 0, 0, SP_ERR_NOT_FOUND,
           SP_ERR_STORE, FSU_END);
  }
}

static void op_api(follower_ctx *c, unsigned p, fsu_in *in) {
  fsu_world *w = &c->w;
  sp_handler_status hs;
  int rv;

  switch (p) {
  case 0:
  case 1:
    fsu_status(w, &hs);
    if (p == 1 && hs.sync_required && c->rlatest >= applied_now(w) &&
        w->store_gen < FSU_MAX_FULL_SYNCS) {
      /* The host's full sync: the store becomes a snapshot of R (what it
       * held is kept for the checks of frames built before). */
      sp_store_state st;
      sp_mem_store *old;
      if (sp_mem_store_new(&old, NULL) != 0 ||
          sp_mem_store_copy_from(old, w->store) != 0) {
        fsu_fail("out of memory in the harness");
      }
      c->gens[w->store_gen++] = old;
      fsu_store_state(w, &st);
      set_epoch(&c->rvt, c->E > st.epoch ? c->E : st.epoch);
      if (sp_mem_store_copy_from(w->store, c->rlog) != 0) {
        fsu_fail("the host's full sync failed");
      }
    }
    FSU_CALL(w, rv, sp_handler_resync_done(w->h, w->now));
    if (!hs.sync_required) {
      fsu_rc(w, "sp_handler_resync_done (none pending)", rv, 0,
             SP_ERR_INVALID_STATE, FSU_END);
    } else {
      /* Fatal codes: resync_done reconnects (allocations, events); node.h
       * lists only SP_ERR_INVALID_STATE and SP_ERR_STORE (reported). */
      fsu_rc(w, "sp_handler_resync_done", rv, 1, 0, SP_ERR_STORE, FSU_END);
    }
    break;
  case 2:
    fsu_status(w, &hs);
    break;
  case 3: {
    sp_follower_progress out[2];
    sp_seq floor;
    sp_ssize n;
    FSU_CALL(w, rv, sp_handler_notify_new_entries(w->h, 0, 1, w->now));
    fsu_rc(w, "notify on a follower", rv, 0, SP_ERR_INVALID_STATE, FSU_END);
    FSU_CALL(w, rv,
             sp_handler_wait_acks(w->h, 1, 0, w->now + SP_SECONDS,
                                  fsu_wait_cb, w, w->now));
    fsu_rc(w, "wait_acks on a follower", rv, 0, SP_ERR_INVALID_STATE,
           FSU_END);
    FSU_CALL(w, rv,
             sp_handler_follower_progress(w->h, &fsu_dev[FSU_F2], w->now,
                                          out));
    fsu_rc(w, "follower_progress on a follower", rv, 0, SP_ERR_INVALID_STATE,
           FSU_END);
    FSU_CALL(w, n, sp_handler_list_followers(w->h, out, 2, w->now));
    fsu_rc(w, "list_followers on a follower", (int)n, 0,
           SP_ERR_INVALID_STATE, FSU_END);
    FSU_CALL(w, rv, sp_handler_retention_floor(w->h, &floor));
    fsu_rc(w, "retention_floor on a follower", rv, 0, SP_ERR_INVALID_STATE,
           FSU_END);
    break;
  }
  case 4: {
    static const int leaders[3] = {FSU_X, FSU_F2, -1};
    w->reg_leader = leaders[fsu_u8(in) % 3];
    if (w->reg_leader >= 0) {
      w->ever_leader[w->reg_leader] = 1;
    }
    break;
  }
  case 5:
    fsu_wrong_peer_calls(w, fsu_u8(in));
    break;
  case 6:
    fsu_advance(w, 0);
    break;
  case 7:
    op_submit(c, in);
    break;
  default:
    break;
  }
}

static void op_grow(follower_ctx *c, unsigned p, fsu_in *in) {
  unsigned n = 1 + (p & 3), cls = fsu_u8(in) & 15, i;

  for (i = 0; i < n; ++i) {
    sp_seq seq = c->rlatest + 1 + ((p & 4) && i == 0 ? 1 : 0);
    if (seq > FSU_MAX_SEQ) {
      break;
    }
    log_append(c->rlog, seq, cls);
    c->rlatest = seq;
  }
}

/* A page of R: up to `count` entries after `since`. */
static void r_page(follower_ctx *c, sp_msg *m, sp_entry *ents, sp_seq since,
                   unsigned count, unsigned f) {
  sp_msg_entries_response *r = &m->u.entries_response;
  uint8_t hash[SP_HASH_LEN] = {0};
  size_t n = 0;
  sp_seq q;

  for (q = since + 1; q <= c->rlatest && n < count; ++q) {
    if (sp_mem_store_get(c->rlog, q, &ents[n], hash) == 0) {
      ++n;
    }
  }
  m->type = SP_MSG_ENTRIES_RESPONSE;
  r->since_sequence = since;
  r->entries = ents;
  r->entry_count = n;
  if (n < count) {
    r->through_sequence = since > c->rlatest ? since : c->rlatest;
  } else if (n > 0) {
    r->through_sequence = ents[n - 1].sequence;
  } else {
    r->through_sequence = since;
  }
  if (f & 8) {
    r->through_sequence++;
  }
  r->has_more = r->through_sequence < c->rlatest;
  if (f & 16) {
    r->has_more = !r->has_more;
  }
  r->leader_latest = f & 32 ? r->through_sequence : c->rlatest;
  if (n > 0) {
    memcpy(r->last_hash, hash, SP_HASH_LEN);
    r->last_hash_len = SP_HASH_LEN;
    if (f & 64) {
      r->last_hash[f % SP_HASH_LEN] ^= 1;
    }
    if (f & 128) {
      r->last_hash_len = 0;
    }
  } else if (f & 64) {
    r->last_hash_len = SP_HASH_LEN;
  }
}

/* The write path's frames from the leader (op 0xb8..0xbf). */
static void synth_write(follower_ctx *c, sp_msg *m, uint8_t f, uint8_t b,
                        uint8_t v) {
  static const int32_t codes[16] = {
      0, 0, 0, 0, SP_ERR_REFUSED, SP_ERR_READ_ONLY, SP_ERR_ORIGIN_CONFLICT,
      SP_ERR_INVALID_ARGUMENT, SP_ERR_IMPERSONATION, SP_ERR_BAD_PROPOSAL,
      -77777, SP_ERR_NOT_NEGOTIATED, SP_ERR_NOMEM, 0, 0, SP_ERR_REFUSED};
  static const char text[] = "synthetic answer";
  static uint8_t buf[FSU_PAYLOAD_MAX];
  sp_propose_result res[4];
  sp_entry e;
  size_t k, i;

  (void)v;
  memset(res, 0, sizeof(res));
  switch (f & 3) {
  case 0:
  case 3:
    m->type = SP_MSG_PROPOSE_RESULT;
    m->u.propose_result.results = res;
    k = 1 + (b & 3);
    if ((f & 3) == 3 || (f & 4)) {
      /* For something never proposed (or nothing at all). */
      res[0].origin_seq = c->last_proposed + 1 + b;
      res[0].sequence = 1;
      res[0].message = text;
      k = 1;
    } else {
      if (k > c->nproposed) {
        k = c->nproposed;
      }
      for (i = 0; i < k; ++i) {
        res[i].origin_seq = c->proposed[i];
        res[i].code = codes[(f >> 4) ^ (int)i];
        /* v & 8: appended below the leader's retained log (0). */
        res[i].sequence = res[i].code == 0 && !(v & 8) ? 1 + i : 0;
        res[i].message = text;
        res[i].message_len = res[i].code ? sizeof(text) - 1 : 0;
        if (res[i].code == 0) {
          size_t slot = c->nanswered < F_MAX_PROPOSED
                            ? c->nanswered++
                            : (size_t)b % F_MAX_PROPOSED;
          c->answered[slot] = res[i].origin_seq;
          c->answered_seq[slot] = res[i].sequence;
        }
      }
      if (k == 0) {
        return;
      }
      /* Answered: the follower drops them (or refuses the stream). */
      memmove(c->proposed, c->proposed + k,
              (c->nproposed - k) * sizeof(c->proposed[0]));
      c->nproposed -= k;
    }
    m->u.propose_result.result_count = k;
    break;
  case 1:
    m->type = SP_MSG_HEARTBEAT;
    m->u.heartbeat.current_sequence = c->rlatest;
    m->u.heartbeat.role = SP_ROLE_LEADER;
    m->u.heartbeat.has_features = 1;
    m->u.heartbeat.features = f & 4 ? SP_FEATURES_SUPPORTED : 2;
    m->u.heartbeat.origin_high = b;
    break;
  default:
    fsu_make_entry(&e, 0, f >> 4, buf);
    e.device_id = fsu_dev[FSU_F1];
    e.origin_seq = 1;
    m->type = SP_MSG_PROPOSE;
    m->u.propose.entries = &e;
    m->u.propose.entry_count = 1;
    break;
  }
  fsu_feed_msg(&c->w, m);
}

static void op_synth(follower_ctx *c, unsigned p, fsu_in *in) {
  static const int32_t codes[8] = {SP_ERR_NOT_MEMBER, SP_ERR_FETCH_LIMIT,
                                   SP_ERR_STALE_EPOCH, SP_ERR_TWO_LEADERS,
                                   SP_ERR_INTERNAL, 0, -77777,
                                   SP_ERR_ACK_BEYOND};
  static uint8_t bufs[4][FSU_PAYLOAD_MAX];
  fsu_world *w = &c->w;
  uint8_t f = fsu_u8(in), b = fsu_u8(in), v = fsu_u8(in);
  sp_entry ents[8];
  sp_store_state st;
  sp_msg m;
  sp_seq base;

  fsu_store_state(w, &st);
  base = st.applied;
  memset(&m, 0, sizeof(m));
  m.library_id = v & 4 ? fsu_other_lib : fsu_lib;
  if (p & 8) {
    synth_write(c, &m, f, b, v);
    return;
  }
  switch (v & 3) {
  case 0:
    m.epoch = c->E;
    break;
  case 1:
    m.epoch = c->E + 1;
    break;
  case 2:
    m.epoch = c->E ? c->E - 1 : 0;
    break;
  default:
    m.epoch = 0;
    break;
  }
  switch (p & 7) {
  case 0: {
    sp_seq k = 1 + ((b >> 2) & 3), since;
    switch (b & 3) {
    case 0:
      since = base;
      break;
    case 1:
      since = base > k ? base - k : 0;
      break;
    case 2:
      since = base + k;
      break;
    default:
      since = b >> 2;
      break;
    }
    r_page(c, &m, ents, since, f & 7, f);
    break;
  }
  case 1:
    m.type = SP_MSG_NEW_ENTRIES;
    m.u.new_entries.from_sequence = b;
    m.u.new_entries.to_sequence = f & 1 ? (sp_seq)b + (f >> 1) : c->rlatest;
    m.u.new_entries.entry_count =
        m.u.new_entries.to_sequence - m.u.new_entries.from_sequence + 1;
    break;
  case 2:
    m.type = SP_MSG_HEARTBEAT;
    m.u.heartbeat.current_sequence = f & 1 ? b : c->rlatest;
    m.u.heartbeat.role = f & 2 ? SP_ROLE_FOLLOWER : SP_ROLE_LEADER;
    break;
  case 3:
    m.type = SP_MSG_SYNC_REQUIRED;
    m.u.sync_required.reason = (sp_sync_reason)(1 + (f & 3));
    m.u.sync_required.leader_latest = c->rlatest;
    m.u.sync_required.leader_oldest = b;
    m.u.sync_required.follower_sequence = base;
    break;
  case 4:
    m.type = SP_MSG_ERROR;
    m.u.error.code = codes[f & 7];
    m.u.error.message = "synthetic refusal from the leader";
    m.u.error.message_len = (size_t)(f >> 3);
    break;
  case 5:
    if (f & 1) {
      m.type = SP_MSG_ACKNOWLEDGE;
      m.u.acknowledge.up_to_sequence = b;
    } else {
      m.type = SP_MSG_FETCH_ENTRIES;
      m.u.fetch_entries.since_sequence = b;
      m.u.fetch_entries.limit = 1 + (f >> 1);
    }
    break;
  case 6: {
    sp_msg_entries_response *r = &m.u.entries_response;
    uint8_t link[SP_HASH_LEN];
    size_t i, n = 1 + (f & 3);
    memcpy(link, st.head_hash, SP_HASH_LEN);
    for (i = 0; i < n; ++i) {
      fsu_make_entry(&ents[i], base + 1 + i, (f >> 2) & 15, bufs[i]);
      ents[i].device_id = fsu_dev[FSU_F2]; /* not R's content */
      if (sp_chain_next(link, &ents[i], link) != 0) {
        fsu_fail("cannot chain a forged entry");
      }
    }
    m.type = SP_MSG_ENTRIES_RESPONSE;
    r->since_sequence = base;
    r->entries = ents;
    r->entry_count = n;
    r->through_sequence = base + n;
    r->has_more = (f & 64) != 0;
    r->leader_latest = r->through_sequence + (r->has_more ? 1 : 0);
    memcpy(r->last_hash, link, SP_HASH_LEN);
    r->last_hash_len = SP_HASH_LEN;
    break;
  }
  default: {
    unsigned pages = 1 + (b & 7), i;
    sp_seq since = base;
    for (i = 0; i < pages && !w->fatal; ++i) {
      r_page(c, &m, ents, since, 1 + (f & 3), 0);
      fsu_feed_msg(w, &m);
      since = m.u.entries_response.through_sequence;
      if (!m.u.entries_response.has_more) {
        break;
      }
    }
    return;
  }
  }
  fsu_feed_msg(w, &m);
}

/* ---- snapshots ---- */

/* Take a snapshot of R (all of it, at rlatest) with the in-memory store's
 * own source under `id`: the bytes a leader holding R would serve. */
static void snapshot_of_r(follower_ctx *c, const uint8_t *id,
                          sp_snapshot_desc *desc) {
  sp_snapshot_source src;
  void *handle = NULL;

  sp_mem_store_snapshot_source(c->rlog, &src);
  free(c->img);
  c->img = NULL;
  if (src.open(id, desc, &handle, src.user_data) != 0) {
    fsu_fail("the in-memory source could not snapshot R");
  }
  c->img_len = (size_t)desc->total_size;
  c->img = malloc(c->img_len + 1);
  if (!c->img || (c->img_len && src.read(handle, 0, c->img, c->img_len,
                                         src.user_data) != 0)) {
    fsu_fail("the in-memory source could not read its snapshot of R");
  }
  src.close(handle, 1, src.user_data);
}

static void feed_chunk(follower_ctx *c, uint64_t index, int corrupt,
                       uint64_t epoch) {
  sp_msg m;
  uint8_t one[1];
  size_t off = (size_t)index * c->man_chunk, len;

  if (!c->have_man || off >= c->img_len) {
    return;
  }
  len = c->img_len - off < c->man_chunk ? c->img_len - off : c->man_chunk;
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_SNAPSHOT_CHUNK;
  m.library_id = fsu_lib;
  m.epoch = epoch;
  memcpy(m.u.snapshot_chunk.id, c->man_id, SP_SNAPSHOT_ID_LEN);
  m.u.snapshot_chunk.index = index;
  m.u.snapshot_chunk.data = c->img + off;
  m.u.snapshot_chunk.data_len = len;
  if (corrupt) {
    one[0] = (uint8_t)(c->img[off] ^ 1);
    m.u.snapshot_chunk.data = one;
    m.u.snapshot_chunk.data_len = 1;
    if (len > 1) {
      /* Same length, one bit off: hash refusal, not a size one. */
      c->img[off] ^= 1;
      m.u.snapshot_chunk.data = c->img + off;
      m.u.snapshot_chunk.data_len = len;
      fsu_feed_msg(&c->w, &m);
      c->img[off] ^= 1;
      return;
    }
  }
  fsu_feed_msg(&c->w, &m);
}

/* The snapshot path's frames from the leader (op 0x48..0x4f), f & 3:
 *   0 the leader's Heartbeat with features SNAPSHOT (f & 4: and WRITES);
 *   1 a SnapshotManifest of R now (id from f >> 4 & 3 and R's length,
 *     chunk size 64 << 2 * ((f >> 2) & 3); b & 1: chunk hash b >> 1 one
 *     bit off, b & 2: hash_at one bit off);
 *   2 chunks of the last manifest, of those the follower asked for and
 *     was not fed yet: f & 4 all of them (and those it asks for
 *     meanwhile), else the next one (b & 7 != 0: b & 7 further, out of
 *     order); f & 8 the first one corrupted;
 *   3 the answer a leader holding R gives the follower's last
 *     FetchEntries: SyncRequired if its since_hash is not R's link
 *     there, else R's page.
 * f & 0x40: epoch E + 1; f & 0x80: epoch E - 1. */
static void synth_snapshot(follower_ctx *c, uint8_t f, uint8_t b) {
  fsu_world *w = &c->w;
  uint64_t epoch = c->E;
  sp_msg m;

  if (f & 0x40) {
    epoch = c->E + 1;
  } else if ((f & 0x80) && c->E > 0) {
    epoch = c->E - 1;
  }
  memset(&m, 0, sizeof(m));
  m.library_id = fsu_lib;
  m.epoch = epoch;
  switch (f & 3) {
  case 0:
    m.type = SP_MSG_HEARTBEAT;
    m.u.heartbeat.current_sequence = c->rlatest;
    m.u.heartbeat.role = SP_ROLE_LEADER;
    m.u.heartbeat.has_features = 1;
    m.u.heartbeat.features =
        SP_FEATURE_SNAPSHOT | (f & 4 ? SP_FEATURE_WRITES : 0);
    fsu_feed_msg(w, &m);
    return;
  case 1: {
    sp_snapshot_desc desc;
    sp_msg_snapshot_manifest *mf = &m.u.snapshot_manifest;
    uint8_t *hashes;
    size_t n, i;
    memset(c->man_id, 0, SP_SNAPSHOT_ID_LEN);
    c->man_id[0] = 0x5a;
    c->man_id[1] = (uint8_t)((f >> 4) & 3);
    c->man_id[2] = (uint8_t)c->rlatest;
    c->man_id[3] = (uint8_t)(c->rlatest >> 8);
    snapshot_of_r(c, c->man_id, &desc);
    c->man_chunk = 64u << (2 * ((f >> 2) & 3));
    c->have_man = 1;
    n = (c->img_len + c->man_chunk - 1) / c->man_chunk;
    hashes = malloc(n * SP_HASH_LEN + 1);
    if (!hashes) {
      fsu_fail("out of memory in the harness");
    }
    for (i = 0; i < n; ++i) {
      size_t off = i * c->man_chunk;
      size_t len = c->img_len - off < c->man_chunk ? c->img_len - off
                                                   : c->man_chunk;
      sp_snapshot_chunk_hash(c->man_id, i, c->img + off, len,
                             hashes + i * SP_HASH_LEN);
    }
    if ((b & 1) && n > 0) {
      hashes[((b >> 1) % n) * SP_HASH_LEN] ^= 0x40;
    }
    m.type = SP_MSG_SNAPSHOT_MANIFEST;
    memcpy(mf->id, c->man_id, SP_SNAPSHOT_ID_LEN);
    mf->sequence = desc.sequence;
    memcpy(mf->hash_at, desc.hash_at, SP_HASH_LEN);
    if (b & 2) {
      mf->hash_at[b & 31] ^= 0x02;
    }
    mf->snap_epoch = desc.epoch;
    mf->total_size = desc.total_size;
    mf->chunk_size = c->man_chunk;
    mf->chunk_hashes = hashes;
    mf->chunk_count = n;
    fsu_feed_msg(w, &m);
    free(hashes);
    return;
  }
  case 2:
    if (f & 4) {
      /* Feeding a chunk may make the follower ask for more: those too. */
      unsigned i;
      for (i = 0; i < 256 && c->want_next < c->want_end && !w->fatal; ++i) {
        feed_chunk(c, c->want_next++, i == 0 && (f & 8), epoch);
      }
    } else if ((b & 7) == 0 && c->want_next < c->want_end) {
      feed_chunk(c, c->want_next++, (f & 8) != 0, epoch);
    } else {
      feed_chunk(c, c->want_next + (b & 7), (f & 8) != 0, epoch);
    }
    return;
  default: {
    const sp_msg_fetch_entries *q = &c->last_fetch;
    uint8_t link[SP_HASH_LEN] = {0};
    sp_entry ents[8], e;
    if (!c->have_fetch) {
      return;
    }
    if (q->since_sequence > 0 &&
        sp_mem_store_get(c->rlog, q->since_sequence, &e, link) != 0) {
      memset(link, 0xee, SP_HASH_LEN); /* R holds no link there */
    }
    if (q->since_sequence > c->rlatest ||
        (q->since_hash_len == SP_HASH_LEN &&
         memcmp(link, q->since_hash, SP_HASH_LEN) != 0)) {
      m.type = SP_MSG_SYNC_REQUIRED;
      m.u.sync_required.reason = SP_SYNC_DIVERGENCE;
      m.u.sync_required.leader_latest = c->rlatest;
      m.u.sync_required.leader_oldest = 1;
      m.u.sync_required.follower_sequence = q->since_sequence;
      fsu_feed_msg(w, &m);
      return;
    }
    r_page(c, &m, ents, q->since_sequence,
           q->limit < 8 ? (unsigned)q->limit : 8, 0);
    m.epoch = epoch;
    fsu_feed_msg(w, &m);
    return;
  }
  }
}

/* ---- entry points ---- */

fsu_world *fsu_follower_new(const uint8_t hdr[FSU_HDR_LEN],
                            const fsu_tap *tap) {
  follower_ctx *c = calloc(1, sizeof(*c));
  sp_handler_config cfg;
  size_t max_frame = SP_MAX_FRAME_DEFAULT;
  unsigned rn = hdr[1] & 31, fn = hdr[2] & 31, cls = hdr[4] >> 4;
  uint64_t e0 = hdr[5] & 3;
  sp_seq seq;

  if (!c) {
    fsu_fail("out of memory in the harness");
  }
  if (hdr[0] & 4) {
    max_frame = 256 + 64 * (size_t)(hdr[4] & 15);
  }
  fsu_world_init(&c->w, SP_ROLE_FOLLOWER, FSU_F1, &follower_ops, c, tap,
                 max_frame, hdr[7], (hdr[0] & 16) != 0);
  c->w.connect_mode = (hdr[0] & 32) != 0;
  if (hdr[0] & 128) {
    c->w.reg_leader = -1;
  }
  c->cls = cls;
  c->E = e0 + ((hdr[5] >> 2) & 3);
  if (sp_mem_store_new(&c->rlog, NULL) != 0) {
    fsu_fail("out of memory in the harness");
  }
  sp_mem_store_get_vtable(c->rlog, &c->rvt);
  for (seq = 1; seq <= rn; ++seq) {
    if (!((hdr[2] & 128) && seq == 3)) {
      log_append(c->rlog, seq, cls);
      c->rlatest = seq;
    }
  }
  set_epoch(&c->rvt, c->E);
  for (seq = 1; seq <= fn; ++seq) {
    if (!((hdr[2] & 128) && seq == 3)) {
      log_append(c->w.store, seq, hdr[0] & 64 ? cls ^ 1 : cls);
    }
  }
  set_epoch(&c->w.inner, e0);

  sp_handler_config_default(&cfg);
  cfg.library_id = fsu_lib;
  cfg.role = SP_ROLE_FOLLOWER;
  if (hdr[0] & 1) {
    cfg.fetch_window = 1 + (hdr[3] & 3);
  }
  if (hdr[0] & 2) {
    cfg.fetch_limit = 1 + ((hdr[3] >> 2) & 7);
  }
  c->fetch_limit = cfg.fetch_limit;
  cfg.propose_window = F_PROPOSE_WINDOW;
  add_write_path(&c->w);
  sp_mem_store_snapshot_sink(c->w.store, &c->sink);
  cfg.snapshot_sink = &c->sink;
  cfg.snapshot_window = 1 + (hdr[3] >> 5);
  if (hdr[0] & 8) {
    cfg.heartbeat_interval = 1 * SP_SECONDS;
    cfg.heartbeat_timeout_factor = 2;
  }
  if (hdr[2] & 32) {
    cfg.stall_timeout = 1 * SP_SECONDS;
  }
  if (hdr[2] & 64) {
    cfg.reconnect_min = 1 * SP_MILLISECONDS;
    cfg.reconnect_max = 20 * SP_MILLISECONDS;
  }
  {
    sp_store_state st;
    fsu_store_state(&c->w, &st);
    c->seen_applied = st.applied;
    memcpy(c->seen_head, st.head_hash, SP_HASH_LEN);
  }
  if (fsu_world_open(&c->w, &cfg, hdr[6]) != 0) {
    fsu_follower_del(&c->w);
    return NULL;
  }
  return &c->w;
}

sp_mem_store *fsu_follower_leader_log(fsu_world *w) {
  return ctx_of(w)->rlog;
}

int fsu_follower_step(fsu_world *w, fsu_in *in) {
  follower_ctx *c = ctx_of(w);
  uint8_t op;

  if (w->fatal) {
    return 1;
  }
  op = fsu_u8(in);
  if (!fsu_step_common(w, op, in)) {
    unsigned p = op & 15;
    switch (op >> 4) {
    case FSU_OP_ROLE4:
      op_request(c, p, in);
      break;
    case FSU_OP_API:
      op_api(c, p, in);
      break;
    case FSU_OP_ROLE10:
      op_grow(c, p, in);
      break;
    case FSU_OP_SYNTH:
      op_synth(c, p, in);
      break;
    case FSU_OP_ROLE13:
      if (p < 8) {
        c->E += p + 1;
      } else {
        c->E = c->E > p - 7 ? c->E - (p - 7) : 0;
      }
      break;
    default:
      break;
    }
  }
  w->ops_done++;
  if (w->fatal) {
    return 1;
  }
  f_check_state(w);
  return 0;
}

void fsu_follower_del(fsu_world *w) {
  follower_ctx *c = ctx_of(w);
  sp_mem_store *rlog = c->rlog;
  int i;

  fsu_world_free(w);
  free(c->img);
  sp_mem_store_del(rlog);
  for (i = 0; i < FSU_MAX_FULL_SYNCS; ++i) {
    sp_mem_store_del(c->gens[i]);
  }
  free(c);
}

#ifndef FSU_NO_FUZZ_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const fsu_role_entry role = {fsu_follower_new, fsu_follower_step,
                                      fsu_follower_del};
  return fsu_run_input(&role, data, size);
}
#endif
