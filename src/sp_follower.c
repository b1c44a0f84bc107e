/*
 * sp_follower.c: the follower's side of the protocol.
 *
 * The follower pulls at its own pace: it asks for consecutive ranges of
 * sequence numbers, keeping up to cfg.fetch_window requests in flight while
 * it is behind, verifies each page against the hash chain, applies it
 * through the store, and acknowledges what the store made durable.  Pages
 * are self-describing (since, through]: one is applied only if its `since`
 * is exactly where the follower stands, so a duplicate is skipped and a gap
 * is never applied.  Anything that breaks the stream sends the follower back
 * to its durable state through a reconnect.
 */
#include <stdio.h>
#include <string.h>

#include "sp_core.h"
#include "sp_enc.h"
#include "sp_mem_int.h"

static sp_handler *hof(sp_session *s) { return s->handler; }

static void request_done(sp_handler *h, int status) {
  sp_request_cb cb = h->request_cb;

  if (!cb) {
    return;
  }
  h->request_cb = NULL;
  if (cb(h, status, sp_durable_through(h), h->request_ud) != 0) {
    sp_node_set_fatal(h->node, SP_ERR_CALLBACK_FAILURE);
  }
}

void sp_follower_request_done(sp_handler *h, int status) {
  request_done(h, status);
}

static void schedule_reconnect(sp_handler *h) {
  h->reconnect_at = sp_handler_backoff(h, &h->backoff);
}

/* What opened a store failure episode (h->store_failing): a write ends
 * only with a write that succeeds (a full disk still reads): an apply, an
 * epoch record, or an outbox write (a submit, a durable refusal or
 * retirement; sp_writer.c); a failed state() read ends with the next read
 * that succeeds, or an idle, caught-up follower, which writes nothing,
 * would stay failing.  Nothing waits for an episode to end but the
 * backoff: proposing writes nothing, and the episode's stream is closed,
 * so a stream to the leader exists only once the backoff let it. */
#define FAILING_WRITE 1
#define FAILING_STATE 2

/* A local store failure.  Retrying at once would only fail again (a full
 * disk stays full), and accepting the leader's next stream is retrying at
 * once: so the episode keeps the backoff growing until the failed call
 * succeeds, incoming streams are refused meanwhile, and the host is told
 * once per episode, not once per retry.  A pending request ends with it. */
static void store_failed(sp_handler *h, const sp_uuid *peer, int rv,
                         const char *what) {
  char text[256];
  const char *why = NULL;
  sp_event ev = {0};

  /* Asked at once: the text is the store's only until its next call.  A
   * snapshot call went to the sink, which may be another object. */
  if (h->store.version >= 4 && h->store.errmsg &&
      strncmp(what, "snapshot ", 9) != 0) {
    why = h->store.errmsg(h->store.user_data);
  }
  if (why && !why[0]) {
    why = NULL;
  }
  sp_hlog(h, NULL, SP_LOG_WARN, "store %s failed (%s%s%.160s); backing off",
          what, sp_err_name(rv), why ? ": " : "", why ? why : "");
  request_done(h, SP_ERR_STORE);
  if (strcmp(what, "apply") != 0 && strcmp(what, "state") != 0) {
    sp_durable_recheck(h);
  }
  if (h->store_failing) {
    if (strcmp(what, "state") != 0) {
      h->store_failing = FAILING_WRITE; /* a read alone no longer ends it */
    }
    return;
  }
  h->store_failing = strcmp(what, "state") == 0 ? FAILING_STATE
                                                 : FAILING_WRITE;
  /* The store's own code is its cause, when it is one of ours. */
  ev.error_code =
      rv < 0 && strcmp(sp_err_name(rv), "SP_ERR_UNKNOWN") != 0 ? rv
                                                               : SP_ERR_STORE;
  snprintf(text, sizeof(text), "store %s failed: %.160s", what,
           why ? why : sp_strerror(ev.error_code));
  ev.message = text;
  ev.store_call = what;
  ev.store_cause = why ? why : sp_strerror(ev.error_code);
  sp_emit_simple(h, SP_EVENT_STORE_FAILED, peer, &ev);
}

void sp_follower_store_failed(sp_handler *h, const sp_uuid *peer, int rv,
                              const char *what) {
  store_failed(h, peer, rv, what);
}

/* A store call that wrote succeeded (`wrote`), or state() did: an
 * episode that such a call ends is over. */
static void store_ok(sp_handler *h, const sp_uuid *peer, int wrote) {
  sp_event ev = {0};

  if (!h->store_failing || (!wrote && h->store_failing != FAILING_STATE)) {
    return;
  }
  h->store_failing = 0;
  h->backoff = 0;
  ev.to_sequence = sp_durable_through(h);
  sp_emit_simple(h, SP_EVENT_STORE_RECOVERED, peer, &ev);
}

void sp_follower_store_wrote(sp_handler *h, const sp_uuid *peer) {
  if (h->role == SP_ROLE_FOLLOWER) {
    store_ok(h, peer, 1);
  }
}

static int backing_off_after_store_failure(const sp_handler *h) {
  return h->store_failing && h->node->now < h->reconnect_at;
}

int sp_follower_refuse_while_backing_off(sp_handler *h, sp_session *s) {
  if (!backing_off_after_store_failure(h)) {
    if (sp_durable_known(h) == 0) {
      return 0;
    }
    /* A failure may have lost applies h->st counts: no stream until the
     * state is read (sp_durable.c). */
    sp_session_refuse(s, SP_ERR_BACKING_OFF,
                      "follower backing off: store state unknown");
    return 1;
  }
  sp_session_refuse(s, SP_ERR_BACKING_OFF,
                    "follower backing off after a store failure (%llu ms)",
                    (unsigned long long)((h->reconnect_at - h->node->now) /
                                         SP_MILLISECONDS));
  return 1;
}

/* How long two streams of one follower and its leader may cross (each
 * side dialing before it hears of the other's dial): about a handshake.
 * Within it the leader keeps the follower's stream (sp_leader_attach), so
 * the follower must keep it too; past it, a new stream from the leader is
 * a restarted or reconnected leader, whose old stream is dead or dying. */
#define CROSSED_DIAL_WINDOW (1 * SP_SECONDS)

int sp_follower_yield_leader(sp_handler *h) {
  sp_session *old = h->leader;

  if (h->node->now < old->u.f.attached_at + CROSSED_DIAL_WINDOW) {
    return 0;
  }
  sp_hlog(h, &old->peer, SP_LOG_INFO,
          "a newer stream from the leader replaces ours");
  /* Unlinked first so the close schedules no reconnect and ends no
   * request: the new stream takes over, a pending request with it.  The
   * host still sees PEER_LOST for the old stream, then PEER_CONNECTED for
   * the new one.  Were attaching it to fail, the reconnect is due at
   * once. */
  h->leader = NULL;
  h->fstate = SP_F_DISCONNECTED;
  h->reconnect_at = h->node->now;
  sp_session_close(old, 0);
  return 1;
}

/* A connection attempt that failed before any stream existed: nothing
 * will close a stream later, so a pending request ends here. */
static int connect_failed(sp_handler *h, int rv) {
  schedule_reconnect(h);
  request_done(h, rv);
  return rv;
}

/* Open a stream to the registry's leader.  Returns 0 (a stream exists,
 * or is being connected) or why none could be opened. */
static int connect_leader(sp_handler *h) {
  sp_node *node = h->node;
  sp_uuid leader;
  sp_session *s;
  uint64_t id;
  int rv;

  /* Resume from what the store holds, not from what we believe it
   * holds: the durable state is the only truth across reconnects. */
  /* Applies still pending stay so (the store answers as if applied): the
   * new stream resumes past them, and their acks follow once durable. */
  rv = sp_durable_load(h);
  if (rv != 0) {
    store_failed(h, NULL, rv, "state");
    return connect_failed(h, SP_ERR_STORE);
  }
  store_ok(h, NULL, 0);
  rv = node->reg.leader(&h->cfg.library_id, &leader, node->reg.user_data);
  if (rv != 0 || sp_uuid_equal(&leader, &node->cfg.device_id)) {
    sp_hlog(h, NULL, SP_LOG_WARN, "no leader to follow (%s)",
            rv ? sp_err_name(rv) : "registry names this device");
    return connect_failed(h, rv == 0 || rv == SP_ERR_NOT_FOUND
                                 ? SP_ERR_NOT_FOUND
                                 : SP_ERR_REGISTRY);
  }
  rv = node->tr.open_stream(&leader, &h->cfg.library_id, &id,
                            node->tr.user_data);
  if (rv != 0) {
    sp_hlog(h, &leader, SP_LOG_INFO, "cannot reach leader: %s",
            sp_err_name(rv));
    return connect_failed(h, rv < 0 ? rv : SP_ERR_UNREACHABLE);
  }
  rv = sp_session_new_local(&s, h, id, &leader);
  if (rv != 0) {
    sp_node_set_fatal(node, rv);
    return connect_failed(h, rv);
  }
  sp_session_pump(s);
  return 0;
}

int sp_follower_attach(sp_session *s) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;

  memset(f, 0, sizeof(*f));
  f->ring = sp_calloc(&h->node->mem, h->cfg.fetch_window, sizeof(*f->ring));
  if (!f->ring) {
    return SP_ERR_NOMEM;
  }
  f->covered = f->requested = h->st.applied;
  f->acked_sent = sp_durable_through(h);
  f->last_progress = h->node->now;
  f->attached_at = h->node->now;
  /* What the last leader had says nothing about this stream's leader (a
   * failover, a restart that lost entries): asking past its end would
   * look like a follower ahead of it.  Learn it again. */
  h->leader_latest = 0;
  h->leader = s;
  sp_writer_attach(s);
  if (h->fstate == SP_F_DISCONNECTED) {
    h->fstate = SP_F_CONNECTED;
  }
  return 0;
}

void sp_follower_detach(sp_session *s) {
  sp_handler *h = hof(s);

  sp_free(&h->node->mem, s->u.f.ring);
  s->u.f.ring = NULL;
  sp_recover_detach(s);
  if (h->leader != s) {
    return;
  }
  h->leader = NULL;
  sp_writer_reset_stream(h);
  if (h->fstate == SP_F_CONNECTED) {
    h->fstate = SP_F_DISCONNECTED;
    schedule_reconnect(h);
    request_done(h, SP_ERR_CONNECTION_LOST);
  }
}

static void enter_sync_required(sp_session *s, sp_sync_reason reason,
                                const sp_msg_sync_required *info) {
  sp_handler *h = hof(s);
  sp_event ev = {0};

  h->fstate = SP_F_SYNC_REQUIRED;
  h->sync_reason = reason;
  s->u.f.rlen = 0;
  ev.sync_reason = reason;
  if (info) {
    ev.leader_latest = info->leader_latest;
    ev.leader_oldest = info->leader_oldest;
    ev.follower_sequence = info->follower_sequence;
  } else {
    ev.leader_latest = h->leader_latest;
    ev.follower_sequence = sp_durable_through(h);
  }
  sp_emit_simple(h, SP_EVENT_SYNC_REQUIRED_RECEIVED, &s->peer, &ev);
  request_done(h, SP_ERR_SYNC_REQUIRED);
}

/* Chain-verify a page from the durable head; the links go to h->hashes. */
static int verify_chain(sp_handler *h, const sp_msg_entries_response *r) {
  const uint8_t *prev = h->st.head_hash;
  uint8_t *links;
  size_t i;

  h->hashes.len = 0;
  if (sp_buf_reserve(&h->hashes, r->entry_count * SP_HASH_LEN) != 0) {
    return SP_ERR_NOMEM;
  }
  links = h->hashes.data;
  for (i = 0; i < r->entry_count; ++i) {
    /* The decoder validated every entry of the page. */
    if (sp_chain_link(prev, &r->entries[i], links + i * SP_HASH_LEN) != 0) {
      return SP_ERR_CHAIN_MISMATCH;
    }
    prev = links + i * SP_HASH_LEN;
  }
  return memcmp(prev, r->last_hash, SP_HASH_LEN) == 0 ? 0
                                                        : SP_ERR_CHAIN_MISMATCH;
}

/* A page said has_more = false: the leader said where it stands and the
 * follower holds all of it.  CAUGHT_UP is news once per stream (at 0 too,
 * when the leader's log is empty), then again only after something was
 * applied or announced since (a push that brought everything included):
 * the host hears each return to lag 0, not every empty page. */
static void caught_up(sp_session *s) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;
  sp_event ev = {0};

  /* Nothing applied proves a failed store works again. */
  if (!h->store_failing) {
    h->backoff = 0;
  }
  if (h->ndpend > 0) {
    /* Caught up with what the store will hold: the host hears it (and
     * its request ends) once that is durable (sp_durable.c).  A later
     * one replaces it: still one event per return to lag 0. */
    f->caught_up_reported = 1;
    h->has_caught_owed = 1;
    h->caught_owed = h->st.applied;
    h->caught_peer = s->peer;
    return;
  }
  if (!f->caught_up_reported) {
    f->caught_up_reported = 1;
    ev.to_sequence = h->st.applied;
    sp_emit_simple(h, SP_EVENT_CAUGHT_UP, &s->peer, &ev);
  }
  request_done(h, 0);
}

/* Which requests a page ends, by the rule the leader follows too
 * (retire_requests in sp_leader.c), so that both count the same ones
 * out: a request ends once all it asked for arrived, whichever page
 * brought it (a pushed one too), and every one ends with a page saying
 * has_more = false. */
static void end_requests(sp_session *s, int has_more) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;

  while (f->rlen > 0 && f->ring[f->rhead].end <= f->covered) {
    f->rhead = (f->rhead + 1) % h->cfg.fetch_window;
    f->rlen--;
  }
  if (!has_more) {
    /* Nothing exists past `covered`: later requests restart from here. */
    f->rlen = 0;
    f->requested = f->covered;
    caught_up(s);
  }
}

static int check_epoch(sp_session *s, uint64_t epoch);

/* A page about to apply (it follows our durable position, and its chain
 * our head), or one from that position with nothing past it, proves this
 * leader serves us incrementally: a recovery under way ends, and the log
 * is ours again, so the epoch held back meanwhile is recorded first.  Any other page (one for a later fetch, after the
 * SyncRequired that answered the first was lost) is refused as ever and
 * leaves the recovery as it was, for the next stream to go on with.
 * Returns -1 if the stream is gone. */
static int recovery_over(sp_session *s, uint64_t epoch) {
  sp_handler *h = hof(s);

  if (!sp_recover_active(h)) {
    return 0;
  }
  sp_recover_abandon(h);
  if (check_epoch(s, epoch) != 0) {
    return -1;
  }
  sp_writer_recovery_over(s);
  return s->dead ? -1 : 0;
}

static void on_page(sp_session *s, const sp_msg_entries_response *r,
                    uint64_t epoch) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;
  int rv, pending;

  if (r->since_sequence > f->covered) {
    /* Entries would not follow what is applied: never apply past a gap;
     * reconnect and resume from the durable state instead. */
    sp_slog(s, SP_LOG_WARN, "page (%llu, %llu] does not follow %llu",
            (unsigned long long)r->since_sequence,
            (unsigned long long)r->through_sequence,
            (unsigned long long)f->covered);
    sp_session_close(s, SP_ERR_GAP);
    return;
  }
  if (r->since_sequence < f->covered) {
    if (r->through_sequence <= f->covered) {
      /* A duplicate of something applied: nothing to apply, but it ends
       * requests as any page does (the leader counts it as one). */
      sp_writer_ready(s);
      end_requests(s, r->has_more);
      return;
    }
    /* Overlaps what we hold (a pushed page crossed our fetch): apply only
     * the part past `covered`; the chain still runs from our head. */
    sp_msg_entries_response tail = *r;
    while (tail.entry_count > 0 && tail.entries[0].sequence <= f->covered) {
      tail.entries++;
      tail.entry_count--;
    }
    tail.since_sequence = f->covered;
    on_page(s, &tail, epoch);
    return;
  }
  if (r->entry_count > 0) {
    if (r->last_hash_len != SP_HASH_LEN) {
      sp_session_refuse(s, SP_ERR_HASH_LENGTH, "entries without a chain hash");
      return;
    }
    rv = verify_chain(h, r);
    if (rv == SP_ERR_NOMEM) {
      sp_node_set_fatal(s->node, rv);
      sp_session_close(s, rv);
      return;
    }
    if (rv != 0) {
      /* Divergence is never applied, and never retried in a loop: stop
       * and let the host decide (a full sync). */
      enter_sync_required(s, SP_SYNC_DIVERGENCE, NULL);
      sp_session_refuse(s, SP_ERR_CHAIN_MISMATCH,
                        "hash chain does not verify after %llu",
                        (unsigned long long)h->st.applied);
      return;
    }
    if (recovery_over(s, epoch) != 0) {
      return;
    }
    if (h->store.durable &&
        sp_durable_reserve(h, r->entries, r->entry_count) != 0) {
      sp_node_set_fatal(s->node, SP_ERR_NOMEM);
      sp_session_close(s, SP_ERR_NOMEM);
      return;
    }
    rv = sp_durable_apply(h, r->entries, h->hashes.data, r->entry_count,
                          h->st.epoch, &pending);
    if (rv != 0) {
      /* With applies pending, the failure may be theirs: the store forgot
       * them too (sys/store.h); what it made durable before is reported
       * first. */
      sp_durable_recheck(h);
      store_failed(h, &s->peer, rv, "apply");
      sp_session_close(s, SP_ERR_STORE);
      return;
    }
    if (pending) {
      /* The store writes it while we go on: the chain and the pipeline
       * move now, what says "applied" waits for `durable`. */
      rv = sp_durable_track(h, &s->peer, h->st.applied, r->entries,
                            r->entry_count);
      if (rv != 0) {
        sp_node_set_fatal(s->node, rv);
        sp_session_close(s, rv);
        return;
      }
      h->st.applied = r->entries[r->entry_count - 1].sequence;
      memcpy(h->st.head_hash,
             h->hashes.data + (r->entry_count - 1) * SP_HASH_LEN,
             SP_HASH_LEN);
      f->caught_up_reported = 0;
    } else {
      /* Half-open (from, to], as every range of the protocol: `from` is
       * where the store stood, so that consecutive events tile the log
       * (a gap the leader's log has falls inside the next one). */
      sp_event ev = {0};
      ev.from_sequence = h->st.applied;
      ev.to_sequence = r->entries[r->entry_count - 1].sequence;
      h->st.applied = ev.to_sequence;
      memcpy(h->st.head_hash,
             h->hashes.data + (r->entry_count - 1) * SP_HASH_LEN,
             SP_HASH_LEN);
      sp_emit_simple(h, SP_EVENT_ENTRIES_APPLIED, &s->peer, &ev);
      /* Applied something: reaching the leader's latest again is news,
       * even when this very page (a push) brought all of it. */
      f->caught_up_reported = 0;
      store_ok(h, &s->peer, 1);
      sp_writer_applied(h, &s->peer, r->entries, r->entry_count);
      if (s->dead) {
        return; /* a failure the writer met ended the stream */
      }
    }
  } else if (recovery_over(s, epoch) != 0) {
    return;
  }
  /* The resume check passed (or this page follows one that did): the
   * leader can judge our proposals against a log it knows we hold. */
  sp_writer_ready(s);
  f->covered = r->through_sequence;
  f->last_progress = s->node->now;
  if (r->leader_latest > h->leader_latest) {
    h->leader_latest = r->leader_latest;
  }
  if (f->requested < f->covered) {
    f->requested = f->covered;
  }
  end_requests(s, r->has_more);
}

/* Epoch fencing: refuse an older leader, record a newer epoch.  Not while
 * a full sync is pending: the host owns the store until resync_done (it
 * may be replacing it, with an epoch this handler has not read yet), so
 * nothing is written to it. */
static int check_epoch(sp_session *s, uint64_t epoch) {
  sp_handler *h = hof(s);

  if (epoch < h->st.epoch) {
    sp_session_refuse(s, SP_ERR_STALE_EPOCH, "epoch %llu is fenced by %llu",
                      (unsigned long long)epoch,
                      (unsigned long long)h->st.epoch);
    return -1;
  }
  if (h->fstate == SP_F_SYNC_REQUIRED || h->fstate == SP_F_RECOVERING ||
      sp_recover_active(h)) {
    /* Written once the log is ours again (an installed snapshot). */
    if (epoch > h->st.epoch && epoch > h->snap_epoch_seen) {
      h->snap_epoch_seen = epoch;
    }
    return 0;
  }
  /* One an install could not write yet (installed() failed) goes too. */
  if (h->snap_epoch_seen > epoch) {
    epoch = h->snap_epoch_seen;
  }
  if (epoch > h->st.epoch) {
    /* Never pending (sys/store.h): the fence is durable before the
     * follower acts on it. */
    int pending, rv = sp_durable_apply(h, NULL, NULL, 0, epoch, &pending);
    if (rv != 0) {
      store_failed(h, &s->peer, rv, "epoch record");
      sp_session_close(s, SP_ERR_STORE);
      return -1;
    }
    h->st.epoch = epoch;
    store_ok(h, &s->peer, 1);
  }
  h->snap_epoch_seen = 0;
  return 0;
}

void sp_follower_on_msg(sp_session *s, const sp_msg *msg) {
  sp_handler *h = hof(s);

  switch (msg->type) {
  case SP_MSG_FETCH_ENTRIES:
  case SP_MSG_ACKNOWLEDGE:
    sp_session_refuse(s, SP_ERR_WRONG_ROLE, "a follower serves no fetches");
    return;
  case SP_MSG_HEARTBEAT:
    if (msg->u.heartbeat.role != SP_ROLE_LEADER) {
      sp_session_refuse(s, SP_ERR_WRONG_ROLE, "peer is not a leader");
      return;
    }
    break;
  default:
    break;
  }
  if (check_epoch(s, msg->epoch) != 0) {
    return;
  }
  switch (msg->type) {
  case SP_MSG_NEW_ENTRIES:
    if (msg->u.new_entries.to_sequence > h->leader_latest) {
      h->leader_latest = msg->u.new_entries.to_sequence;
    }
    break;
  case SP_MSG_HEARTBEAT:
    if (msg->u.heartbeat.current_sequence > h->leader_latest) {
      h->leader_latest = msg->u.heartbeat.current_sequence;
    }
    if (msg->u.heartbeat.has_features) {
      /* Snapshots need no outbox: negotiated here, writes by the
       * writer (which sets the same bits when it negotiates). */
      if (h->leader == s && s->advertised) {
        s->features |= msg->u.heartbeat.features &
                       sp_handler_local_features(h) & SP_FEATURE_SNAPSHOT;
      }
      sp_writer_on_features(s, msg);
    }
    break;
  case SP_MSG_PROPOSE_RESULT:
    sp_writer_on_result(s, msg);
    break;
  case SP_MSG_ENTRIES_RESPONSE:
    if (h->fstate == SP_F_CONNECTED) {
      /* A recovery under way ends only with a page that applies
       * (recovery_over). */
      on_page(s, &msg->u.entries_response, msg->epoch);
    } else if (h->fstate == SP_F_RECOVERING) {
      sp_recover_on_msg(s, msg);
    }
    break;
  case SP_MSG_SNAPSHOT_MANIFEST:
  case SP_MSG_SNAPSHOT_CHUNK:
    sp_recover_on_msg(s, msg);
    break;
  case SP_MSG_SYNC_REQUIRED:
    if (h->fstate == SP_F_RECOVERING) {
      sp_recover_on_msg(s, msg);
      break;
    }
    if (h->fstate != SP_F_CONNECTED) {
      break;
    }
    sp_durable_poll(h);
    if (s->dead) {
      break;
    }
    if (h->ndpend > 0 || h->st_unknown) {
      /* A full sync or a snapshot replaces the log: not while the store
       * still writes pages into it (the host could not tell what it
       * replaced, nor a snapshot's install what it installed over).
       * Waiting is the simplest sound rule: this stream ends, the next
       * one asks again, and by then the store has caught up. */
      sp_slog(s, SP_LOG_INFO, "SyncRequired while applies are pending: "
              "asking again once they are durable");
      sp_session_close(s, 0);
      break;
    }
    if (msg->u.sync_required.reason == SP_SYNC_BEHIND_RETENTION &&
        s->u.f.covered + 1 >= msg->u.sync_required.leader_oldest) {
      /* About a position we already left (a late request): what we need
       * next is retained.  A full sync would be waste; a fresh stream's
       * resume check judges where we really stand. */
      sp_slog(s, SP_LOG_WARN, "stale SyncRequired for %llu ignored",
              (unsigned long long)msg->u.sync_required.follower_sequence);
      sp_session_close(s, SP_ERR_UNEXPECTED);
      break;
    }
    {
      int starts = 1, recover = sp_recover_wanted(s, &starts);
      if (starts) {
        enter_sync_required(s, msg->u.sync_required.reason,
                            &msg->u.sync_required);
      }
      if (recover && !starts) {
        /* Continued on a new stream: a request the host made between
         * the streams ends here, as a new one would. */
        request_done(h, SP_ERR_SYNC_REQUIRED);
      }
      if (recover) {
        sp_recover_begin(s);
      }
    }
    break;
  default:
    break;
  }
  if (!s->dead && h->leader_latest > s->u.f.covered) {
    s->u.f.caught_up_reported = 0;
  }
}

static int want_fetch(const sp_session *s) {
  const sp_handler *h = s->handler;
  const sp_fsess *f = &s->u.f;

  if (h->fstate != SP_F_CONNECTED || s->refused) {
    return 0;
  }
  if (!f->resume_sent) {
    /* The leader counts a resume point as the follower's durable
     * position (an acknowledgement): with applies pending it waits for
     * them (sp_durable.c pumps the stream when they are durable). */
    return h->ndpend == 0 && !h->st_unknown;
  }
  if (h->request_cb && f->rlen == 0) {
    return 1;
  }
  /* A store slower than the network would otherwise queue the whole log
   * in memory: a window's worth of pages pending beside a window in
   * flight keeps it busy, more only grows its queue. */
  if (h->ndpend >= h->cfg.fetch_window) {
    return 0;
  }
  return f->rlen < h->cfg.fetch_window && f->requested < h->leader_latest;
}

int sp_follower_next_frame(sp_session *s) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;
  sp_msg msg;
  sp_range *slot;

  if (h->fstate == SP_F_RECOVERING) {
    return sp_recover_next_frame(s);
  }
  memset(&msg, 0, sizeof(msg));
  /* Acks mean durable: with applies pending, only what `durable` said. */
  if (sp_durable_through(h) > f->acked_sent &&
      h->fstate != SP_F_SYNC_REQUIRED) {
    msg.type = SP_MSG_ACKNOWLEDGE;
    msg.u.acknowledge.up_to_sequence = sp_durable_through(h);
    f->acked_sent = msg.u.acknowledge.up_to_sequence;
    return sp_session_queue(s, &msg) == 0;
  }
  if (!want_fetch(s)) {
    return sp_writer_propose_frame(s);
  }
  msg.type = SP_MSG_FETCH_ENTRIES;
  msg.u.fetch_entries.limit = h->cfg.fetch_limit;
  msg.u.fetch_entries.features = sp_handler_local_features(h);
  if (msg.u.fetch_entries.features) {
    /* On every fetch, not only in our first Heartbeat (which may be
     * lost): a leader that speaks writes then knows before it serves any
     * page that entries must keep their origin ids. */
    msg.u.fetch_entries.has_features = 1;
  }
  if (!f->resume_sent) {
    /* The first fetch of a stream proves where the follower stands: at
     * its durable head, the position since_hash is the link of (a page
     * pushed before this fetch may have moved `requested` past it). */
    f->requested = h->st.applied;
    memcpy(msg.u.fetch_entries.since_hash, h->st.head_hash, SP_HASH_LEN);
    msg.u.fetch_entries.since_hash_len = SP_HASH_LEN;
    f->resume_sent = 1;
  }
  msg.u.fetch_entries.since_sequence = f->requested;
  if (f->rlen == h->cfg.fetch_window) {
    /* A forced fetch with a full ring: forget the oldest slot. */
    f->rhead = (f->rhead + 1) % h->cfg.fetch_window;
    f->rlen--;
  }
  slot = &f->ring[(f->rhead + f->rlen++) % h->cfg.fetch_window];
  slot->cur = f->requested;
  slot->end = f->requested + h->cfg.fetch_limit;
  f->requested = slot->end;
  f->last_progress = s->node->now;
  return sp_session_queue(s, &msg) == 0;
}

static sp_tstamp fetch_stall_at(const sp_session *s) {
  if (s->u.f.rlen == 0 || s->handler->fstate != SP_F_CONNECTED) {
    return SP_TSTAMP_MAX;
  }
  return s->u.f.last_progress + s->handler->cfg.stall_timeout;
}

sp_tstamp sp_follower_session_expiry(const sp_session *s) {
  sp_tstamp fetch = fetch_stall_at(s), propose = sp_writer_stall_at(s);
  sp_tstamp snap = sp_recover_session_expiry(s);

  if (propose < fetch) {
    fetch = propose;
  }
  return snap < fetch ? snap : fetch;
}

void sp_follower_session_expire(sp_session *s, sp_tstamp now) {
  if (now >= fetch_stall_at(s)) {
    sp_slog(s, SP_LOG_WARN, "requested entries did not arrive");
    sp_session_close(s, SP_ERR_STALLED);
  } else if (now >= sp_writer_stall_at(s)) {
    /* A Propose or its answer was lost on a stream that lives on: only
     * a new stream proposes it again. */
    sp_slog(s, SP_LOG_WARN, "proposals were not answered");
    sp_session_close(s, SP_ERR_STALLED);
  } else {
    sp_recover_session_expire(s, now);
  }
}

/* ---- handler-level follower duties ---- */

int sp_follower_start(sp_handler *h) {
  /* Checked here so that a broken store fails sp_handler_new. */
  if (h->ndpend > 0 && h->dpend_epoch != h->epoch) {
    sp_durable_settle(h, 0); /* a leader term came in between */
  }
  if (sp_durable_load(h) != 0) {
    return SP_ERR_STORE;
  }
  h->fstate = SP_F_DISCONNECTED;
  h->backoff = 0;
  h->snap_wake_at = 0; /* a failure's wake of an earlier term */
  /* An episode of an earlier follower term (set_role follower -> leader
   * -> follower) stays open, to end as any other: the host that heard of
   * the failure hears of the recovery. */
  store_ok(h, NULL, 0);
  h->reconnect_at = h->node->now;
  (void)connect_leader(h);
  return 0;
}

void sp_follower_stop(sp_handler *h) {
  /* What is durable is reported; the rest waits for the next term. */
  sp_durable_settle(h, 1);
  /* Canceled first, and out of the connected state, so closing the
   * streams below neither reports a lost connection nor reconnects. */
  request_done(h, SP_ERR_CANCELED);
  h->fstate = SP_F_DISCONNECTED;
  sp_recover_stop(h);
  while (h->sessions) {
    sp_session_close(h->sessions, 0);
  }
}

void sp_follower_expire(sp_handler *h, sp_tstamp now) {
  sp_recover_expire(h, now);
  if (h->fstate == SP_F_DISCONNECTED && !h->leader && now >= h->reconnect_at) {
    (void)connect_leader(h);
  }
}

sp_tstamp sp_follower_expiry(const sp_handler *h) {
  if (h->fstate == SP_F_DISCONNECTED && !h->leader) {
    return h->reconnect_at;
  }
  return sp_recover_expiry(h);
}

/* ---- public follower API ---- */

int sp_handler_request_entries(sp_handler *h, sp_seq since, sp_request_cb cb,
                               void *user_data, sp_tstamp now) {
  int connected = 0;

  if (!h || !cb) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_FOLLOWER || h->request_cb ||
      h->fstate == SP_F_SYNC_REQUIRED || h->fstate == SP_F_RECOVERING) {
    return SP_ERR_INVALID_STATE;
  }
  /* Judged against what this handler holds (sp_handler_get_status),
   * before any connect reads the store again: the answer does not depend
   * on whether a stream exists. */
  if (since > sp_durable_through(h)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h->node->now = now;
  /* No stream: the host asks now, so connect now rather than at the end
   * of the backoff, except after a store failure (that backoff protects
   * the store).  A synchronous failure refuses the request, which never
   * calls back; once accepted, exactly one callback ends it. */
  if (!h->leader && h->fstate == SP_F_DISCONNECTED &&
      !backing_off_after_store_failure(h)) {
    int rv = connect_leader(h);
    int fatal = sp_node_reap(h->node);
    if (fatal != 0 || rv != 0) {
      return fatal != 0 ? fatal : rv;
    }
    connected = 1;
  }
  h->request_cb = cb;
  h->request_ud = user_data;
  if (h->leader) {
    sp_session_pump(h->leader);
  } else if (connected) {
    /* The stream opened above already failed: the request ends with it,
     * as it would on that stream a moment later, not at the next retry. */
    request_done(h, SP_ERR_CONNECTION_LOST);
  }
  return sp_node_reap(h->node);
}

int sp_handler_resync_done(sp_handler *h, sp_tstamp now) {
  if (!h) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_FOLLOWER ||
      (h->fstate != SP_F_SYNC_REQUIRED && h->fstate != SP_F_RECOVERING)) {
    return SP_ERR_INVALID_STATE;
  }
  h->node->now = now;
  /* The host replaced the log (after letting the store finish its
   * pending applies: sys/store.h): what was pending is moot, the state
   * read next is the truth. */
  sp_durable_settle(h, 0);
  if (sp_durable_load(h) != 0) {
    return SP_ERR_STORE;
  }
  /* The host recovered by its own means: a snapshot under way is moot,
   * and so is the wake after a failure (sp_recover_abandon clears it). */
  h->snap_wake_at = 0;
  sp_recover_abandon(h);
  (void)sp_follower_resync(h);
  return sp_node_reap(h->node);
}

int sp_follower_resync(sp_handler *h) {
  /* Start over on a fresh stream: nothing in flight on the old one can
   * be mistaken for a page of the new state. */
  h->fstate = SP_F_DISCONNECTED;
  h->sync_reason = 0;
  while (h->sessions) {
    sp_session_close(h->sessions, 0);
  }
  /* The new store may have retired submissions (committed in the new
   * history) that no apply will report. */
  sp_writer_resynced(h);
  h->backoff = 0;
  return connect_leader(h);
}
