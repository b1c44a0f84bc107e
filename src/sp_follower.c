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
  if (cb(h, status, h->st.applied, h->request_ud) != 0) {
    sp_node_set_fatal(h->node, SP_ERR_CALLBACK_FAILURE);
  }
}

static void schedule_reconnect(sp_handler *h) {
  h->reconnect_at = sp_handler_backoff(h, &h->backoff);
}

static void connect_leader(sp_handler *h) {
  sp_node *node = h->node;
  sp_uuid leader;
  sp_session *s;
  uint64_t id;
  int rv;

  /* Resume from what the store holds, not from what we believe it
   * holds: the durable state is the only truth across reconnects. */
  if (h->store.state(&h->st, h->store.user_data) != 0) {
    sp_log(node, SP_LOG_WARN, "store state failed; retrying");
    schedule_reconnect(h);
    return;
  }
  rv = node->reg.leader(&h->cfg.library_id, &leader, node->reg.user_data);
  if (rv != 0 || sp_uuid_equal(&leader, &node->cfg.device_id)) {
    sp_log(node, SP_LOG_WARN, "no leader to follow (%s)",
           rv ? sp_err_name(rv) : "registry names this device");
    schedule_reconnect(h);
    return;
  }
  rv = node->tr.open_stream(&leader, &h->cfg.library_id, &id,
                            node->tr.user_data);
  if (rv != 0) {
    sp_log(node, SP_LOG_INFO, "cannot reach leader: %s", sp_err_name(rv));
    schedule_reconnect(h);
    return;
  }
  rv = sp_session_new_local(&s, h, id, &leader);
  if (rv != 0) {
    sp_node_set_fatal(node, rv);
    schedule_reconnect(h);
    return;
  }
  sp_session_pump(s);
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
  f->acked_sent = h->st.applied;
  f->last_progress = h->node->now;
  /* What the last leader had says nothing about this stream's leader (a
   * failover, a restart that lost entries): asking past its end would
   * look like a follower ahead of it.  Learn it again. */
  h->leader_latest = 0;
  h->leader = s;
  if (h->fstate == SP_F_DISCONNECTED) {
    h->fstate = SP_F_CONNECTED;
  }
  return 0;
}

void sp_follower_detach(sp_session *s) {
  sp_handler *h = hof(s);

  sp_free(&h->node->mem, s->u.f.ring);
  s->u.f.ring = NULL;
  if (h->leader != s) {
    return;
  }
  h->leader = NULL;
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
    ev.follower_sequence = h->st.applied;
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

static void caught_up(sp_session *s) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;
  sp_event ev = {0};

  h->backoff = 0;
  if (!f->caught_up_reported) {
    f->caught_up_reported = 1;
    ev.to_sequence = h->st.applied;
    sp_emit_simple(h, SP_EVENT_CAUGHT_UP, &s->peer, &ev);
  }
  request_done(h, 0);
}

static void on_page(sp_session *s, const sp_msg_entries_response *r) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;
  int rv;

  if (r->since_sequence > f->covered) {
    /* Entries would not follow what is applied: never apply past a gap;
     * reconnect and resume from the durable state instead. */
    sp_log(s->node, SP_LOG_WARN, "page (%llu, %llu] does not follow %llu",
           (unsigned long long)r->since_sequence,
           (unsigned long long)r->through_sequence,
           (unsigned long long)f->covered);
    sp_session_close(s, SP_ERR_GAP);
    return;
  }
  if (r->since_sequence < f->covered) {
    if (r->through_sequence <= f->covered) {
      return; /* a duplicate of something applied: skip it */
    }
    /* Overlaps what we hold (a pushed page crossed our fetch): apply only
     * the part past `covered`; the chain still runs from our head. */
    sp_msg_entries_response tail = *r;
    while (tail.entry_count > 0 && tail.entries[0].sequence <= f->covered) {
      tail.entries++;
      tail.entry_count--;
    }
    tail.since_sequence = f->covered;
    on_page(s, &tail);
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
    rv = h->store.apply(r->entries, h->hashes.data, r->entry_count,
                        h->st.epoch, h->store.user_data);
    if (rv != 0) {
      sp_event ev = {0};
      ev.error_code = SP_ERR_STORE;
      ev.message = "store apply failed";
      sp_emit_simple(h, SP_EVENT_ERROR, &s->peer, &ev);
      sp_session_close(s, SP_ERR_STORE);
      return;
    }
    {
      sp_event ev = {0};
      ev.from_sequence = r->entries[0].sequence;
      ev.to_sequence = r->entries[r->entry_count - 1].sequence;
      h->st.applied = ev.to_sequence;
      memcpy(h->st.head_hash,
             h->hashes.data + (r->entry_count - 1) * SP_HASH_LEN,
             SP_HASH_LEN);
      sp_emit_simple(h, SP_EVENT_ENTRIES_APPLIED, &s->peer, &ev);
    }
  }
  f->covered = r->through_sequence;
  f->last_progress = s->node->now;
  if (r->leader_latest > h->leader_latest) {
    h->leader_latest = r->leader_latest;
  }
  if (f->requested < f->covered) {
    f->requested = f->covered;
  }
  if (f->rlen > 0) {
    sp_range *head = &f->ring[f->rhead];
    if (r->through_sequence >= head->end || !r->has_more) {
      f->rhead = (f->rhead + 1) % h->cfg.fetch_window;
      f->rlen--;
    }
  }
  if (!r->has_more) {
    /* Nothing exists past `through`: later requests restart from here. */
    f->rlen = 0;
    f->requested = f->covered;
    caught_up(s);
  }
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
  if (epoch > h->st.epoch && h->fstate != SP_F_SYNC_REQUIRED) {
    if (h->store.apply(NULL, NULL, 0, epoch, h->store.user_data) != 0) {
      sp_session_close(s, SP_ERR_STORE);
      return -1;
    }
    h->st.epoch = epoch;
  }
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
    break;
  case SP_MSG_ENTRIES_RESPONSE:
    if (h->fstate == SP_F_CONNECTED) {
      on_page(s, &msg->u.entries_response);
    }
    break;
  case SP_MSG_SYNC_REQUIRED:
    if (h->fstate != SP_F_CONNECTED) {
      break;
    }
    if (msg->u.sync_required.reason == SP_SYNC_BEHIND_RETENTION &&
        s->u.f.covered + 1 >= msg->u.sync_required.leader_oldest) {
      /* About a position we already left (a late request): what we need
       * next is retained.  A full sync would be waste; a fresh stream's
       * resume check judges where we really stand. */
      sp_log(s->node, SP_LOG_WARN, "stale SyncRequired for %llu ignored",
             (unsigned long long)msg->u.sync_required.follower_sequence);
      sp_session_close(s, SP_ERR_UNEXPECTED);
      break;
    }
    enter_sync_required(s, msg->u.sync_required.reason,
                        &msg->u.sync_required);
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
  if (!f->resume_sent || (h->request_cb && f->rlen == 0)) {
    return 1;
  }
  return f->rlen < h->cfg.fetch_window && f->requested < h->leader_latest;
}

int sp_follower_next_frame(sp_session *s) {
  sp_handler *h = hof(s);
  sp_fsess *f = &s->u.f;
  sp_msg msg;
  sp_range *slot;

  memset(&msg, 0, sizeof(msg));
  if (h->st.applied > f->acked_sent && h->fstate != SP_F_SYNC_REQUIRED) {
    msg.type = SP_MSG_ACKNOWLEDGE;
    msg.u.acknowledge.up_to_sequence = h->st.applied;
    f->acked_sent = h->st.applied;
    return sp_session_queue(s, &msg) == 0;
  }
  if (!want_fetch(s)) {
    return 0;
  }
  msg.type = SP_MSG_FETCH_ENTRIES;
  msg.u.fetch_entries.limit = h->cfg.fetch_limit;
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

sp_tstamp sp_follower_session_expiry(const sp_session *s) {
  if (s->u.f.rlen == 0 || s->handler->fstate != SP_F_CONNECTED) {
    return SP_TSTAMP_MAX;
  }
  return s->u.f.last_progress + s->handler->cfg.stall_timeout;
}

void sp_follower_session_expire(sp_session *s, sp_tstamp now) {
  if (now >= sp_follower_session_expiry(s)) {
    sp_log(s->node, SP_LOG_WARN, "requested entries did not arrive");
    sp_session_close(s, SP_ERR_STALLED);
  }
}

/* ---- handler-level follower duties ---- */

int sp_follower_start(sp_handler *h) {
  /* Checked here so that a broken store fails sp_handler_new. */
  if (h->store.state(&h->st, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  h->fstate = SP_F_DISCONNECTED;
  h->backoff = 0;
  h->reconnect_at = h->node->now;
  connect_leader(h);
  return 0;
}

void sp_follower_stop(sp_handler *h) {
  /* Canceled first, and out of the connected state, so closing the
   * streams below neither reports a lost connection nor reconnects. */
  request_done(h, SP_ERR_CANCELED);
  h->fstate = SP_F_DISCONNECTED;
  while (h->sessions) {
    sp_session_close(h->sessions, 0);
  }
}

void sp_follower_expire(sp_handler *h, sp_tstamp now) {
  if (h->fstate == SP_F_DISCONNECTED && !h->leader && now >= h->reconnect_at) {
    connect_leader(h);
  }
}

sp_tstamp sp_follower_expiry(const sp_handler *h) {
  if (h->fstate == SP_F_DISCONNECTED && !h->leader) {
    return h->reconnect_at;
  }
  return SP_TSTAMP_MAX;
}

/* ---- public follower API ---- */

int sp_handler_request_entries(sp_handler *h, sp_seq since, sp_request_cb cb,
                               void *user_data, sp_tstamp now) {
  if (!h || !cb) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_FOLLOWER || h->request_cb ||
      h->fstate == SP_F_SYNC_REQUIRED) {
    return SP_ERR_INVALID_STATE;
  }
  if (since > h->st.applied) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h->node->now = now;
  h->request_cb = cb;
  h->request_ud = user_data;
  if (h->leader) {
    sp_session_pump(h->leader);
  }
  return sp_node_reap(h->node);
}

int sp_handler_resync_done(sp_handler *h, sp_tstamp now) {
  if (!h) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_FOLLOWER || h->fstate != SP_F_SYNC_REQUIRED) {
    return SP_ERR_INVALID_STATE;
  }
  h->node->now = now;
  if (h->store.state(&h->st, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  /* Start over on a fresh stream: nothing in flight on the old one can
   * be mistaken for a page of the new state. */
  h->fstate = SP_F_DISCONNECTED;
  h->sync_reason = 0;
  while (h->sessions) {
    sp_session_close(h->sessions, 0);
  }
  h->backoff = 0;
  connect_leader(h);
  return sp_node_reap(h->node);
}
