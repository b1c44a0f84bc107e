/*
 * sp_handler.c: one library on one node: configuration, lifecycle, the
 * acceptance of incoming streams, role changes.
 */
#include <stddef.h>
#include <string.h>

#include "sp_abi.h"
#include "sp_core.h"
#include "sp_leadership.h"
#include "sp_mem_int.h"

void sp_handler_config_default(sp_handler_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->version = SP_HANDLER_CONFIG_VERSION;
  cfg->role = SP_ROLE_LEADER;
  cfg->epoch = 1;
  cfg->heartbeat_interval = 30 * SP_SECONDS;
  cfg->heartbeat_timeout_factor = 3;
  cfg->fetch_limit = 1024;
  cfg->fetch_window = 4;
  cfg->stall_timeout = 60 * SP_SECONDS;
  cfg->reconnect_min = 100 * SP_MILLISECONDS;
  cfg->reconnect_max = 30 * SP_SECONDS;
  cfg->max_queued_fetches = 32;
  cfg->response_max_bytes = 64 * 1024;
  cfg->push_inline = 1;
  cfg->registry_refresh_interval = 60 * SP_SECONDS;
  cfg->outbox_max_items = SP_OUTBOX_MAX_ITEMS_DEFAULT;
  cfg->outbox_max_bytes = SP_OUTBOX_MAX_BYTES_DEFAULT;
  cfg->propose_window = SP_PROPOSE_WINDOW_DEFAULT;
  cfg->propose_max_bytes = SP_PROPOSE_MAX_BYTES_DEFAULT;
  cfg->snapshot_window = SP_SNAP_WINDOW_DEFAULT;
  cfg->snapshot_chunk_size = SP_SNAP_CHUNK_DEFAULT;
}

/* The snapshot vtables of a version-4 config: checked as the store's. */
static int check_snapshot_config(const sp_handler_config *c) {
  const sp_snapshot_source *src = c->snapshot_source;
  const sp_snapshot_sink *snk = c->snapshot_sink;

  if ((src && (src->version == 0 ||
               src->version > SP_SNAPSHOT_SOURCE_VERSION)) ||
      (snk && (snk->version == 0 || snk->version > SP_SNAPSHOT_SINK_VERSION))) {
    return SP_ERR_VERSION;
  }
  if ((src && (!src->open || !src->read || !src->close)) ||
      (snk && (!snk->pending || !snk->begin || !snk->write_chunk ||
               !snk->commit || !snk->abort)) ||
      c->snapshot_window == 0 || c->snapshot_window > SP_MAX_SNAPSHOT_WINDOW ||
      c->snapshot_chunk_size == 0 ||
      c->snapshot_chunk_size > SP_SNAPSHOT_CHUNK_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

static int check_config(const sp_handler_config *c, const sp_store *st) {
  if (c->version == 0 || c->version > SP_HANDLER_CONFIG_VERSION ||
      !st || st->version == 0 || st->version > SP_STORE_VERSION) {
    return SP_ERR_VERSION;
  }
  if ((c->role != SP_ROLE_LEADER && c->role != SP_ROLE_FOLLOWER) ||
      c->heartbeat_interval == 0 || c->heartbeat_timeout_factor == 0 ||
      c->fetch_limit == 0 || c->fetch_limit > SP_MAX_FETCH_LIMIT ||
      c->fetch_window == 0 || c->max_queued_fetches == 0 ||
      c->max_queued_fetches > SP_MAX_QUEUED_FETCHES ||
      c->response_max_bytes == 0 || c->reconnect_min == 0 ||
      c->reconnect_max < c->reconnect_min || c->stall_timeout == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (c->version >= 4) {
    int rv = check_snapshot_config(c);
    if (rv != 0) {
      return rv;
    }
  }
  /* The write path's bounds (a version-2 config gets the defaults).  The
   * window stays within one Propose's entries: a leader bounds what it
   * holds for a follower that does not read its answers by that many. */
  if (c->version >= 3 &&
      (c->outbox_max_items == 0 || c->outbox_max_bytes == 0 ||
       c->propose_window == 0 ||
       c->propose_window > SP_MAX_PROPOSE_ENTRIES ||
       c->propose_max_bytes == 0)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* Every callback of the store is needed: a handler can change role. */
  if (!st->read || !st->bounds || !st->hash_at || !st->apply || !st->state) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

static int start_role(sp_handler *h) {
  h->stepped_down = 0;
  return h->role == SP_ROLE_LEADER ? sp_leader_start(h)
                                   : sp_follower_start(h);
}

static void stop_role(sp_handler *h) {
  if (h->role == SP_ROLE_LEADER) {
    sp_leader_stop(h);
  } else {
    sp_follower_stop(h);
  }
}

static void unlink_handler(sp_handler *h) {
  sp_handler **pp;

  for (pp = &h->node->handlers; *pp; pp = &(*pp)->next) {
    if (*pp == h) {
      *pp = h->next;
      return;
    }
  }
}

static void free_handler(sp_handler *h) {
  sp_recover_free(h);
  sp_writer_free(h);
  sp_durable_free(h);
  sp_buf_free(&h->hashes);
  sp_free(&h->node->mem, h->frecs);
  sp_index_free(&h->frec_ix, &h->node->mem);
  sp_free(&h->node->mem, h);
}

int sp_handler_new(sp_handler **ph, sp_node *node,
                   const sp_handler_config *cfg, const sp_store *store,
                   sp_tstamp now) {
  sp_handler *h;
  int rv, fatal;

  if (ph) {
    *ph = NULL;
  }
  if (!ph || !node || !cfg || !store) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = check_config(cfg, store);
  if (rv != 0) {
    return rv;
  }
  if (sp_node_find_handler(node, &cfg->library_id)) {
    return SP_ERR_EXISTS;
  }
  h = sp_calloc(&node->mem, 1, sizeof(*h));
  if (!h) {
    return SP_ERR_NOMEM;
  }
  h->node = node;
  /* A version-1 config is a shorter struct: copy what it has and give the
   * later fields their defaults. */
  if (cfg->version >= 4) {
    h->cfg = *cfg;
  } else {
    sp_handler_config_default(&h->cfg);
    memcpy(&h->cfg, cfg,
           cfg->version == 3   ? offsetof(sp_handler_config, snapshot_source)
           : cfg->version == 2 ? offsetof(sp_handler_config, outbox_max_items)
               : offsetof(sp_handler_config, registry_refresh_interval));
  }
  /* The vtables are copied: the host's structs may go away. */
  if (h->cfg.snapshot_source) {
    h->snap_source = *h->cfg.snapshot_source;
    h->has_snap_source = 1;
    h->cfg.snapshot_source = &h->snap_source;
  }
  if (h->cfg.snapshot_sink) {
    h->snap_sink = *h->cfg.snapshot_sink;
    h->has_snap_sink = 1;
    h->cfg.snapshot_sink = &h->snap_sink;
    sp_recover_init(h);
  }
  /* An older store is a shorter struct: copy only what it has (the
   * calloc left the later callbacks NULL). */
  memcpy(&h->store, store,
         store->version >= 5   ? sizeof(*store)
         : store->version == 4 ? offsetof(sp_store, flags)
         : store->version == 3 ? offsetof(sp_store, errmsg)
         : store->version == 2 ? offsetof(sp_store, append)
                               : offsetof(sp_store, save_follower_ack));
  h->role = cfg->role;
  h->epoch = cfg->role == SP_ROLE_LEADER ? cfg->epoch : 0;
  if (h->role == SP_ROLE_LEADER) {
    sp_leadership_term(h);
  }
  sp_buf_init(&h->hashes, &node->mem);
  sp_writer_init(h);
  h->next = node->handlers;
  node->handlers = h;
  node->now = now;
  rv = start_role(h);
  fatal = sp_node_reap(node);
  if (rv == 0) {
    rv = fatal;
  }
  if (rv != 0) {
    stop_role(h);
    unlink_handler(h);
    sp_node_reap(node);
    free_handler(h);
    return rv;
  }
  *ph = h;
  return 0;
}

void sp_handler_del(sp_handler *h) {
  sp_node *node;

  if (!h) {
    return;
  }
  node = h->node;
  /* Before the term ends: a restarted leader may reopen them. */
  sp_snap_serve_stop(h, 0);
  stop_role(h);
  /* The waits end before the handler does (their callbacks get it). */
  sp_writer_cancel_waits(h);
  unlink_handler(h);
  sp_node_reap(node);
  free_handler(h);
}

void *sp_handler_get_user_data(const sp_handler *h) {
  return h ? h->cfg.user_data : NULL;
}

sp_role sp_handler_role(const sp_handler *h) { return h->role; }

uint64_t sp_handler_epoch(const sp_handler *h) {
  return h->role == SP_ROLE_LEADER ? h->epoch : h->st.epoch;
}

int sp_handler_leader_claim(const sp_handler *h, sp_leader_claim *out) {
  if (!h || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!h->has_claim) {
    return SP_ERR_NOT_FOUND;
  }
  *out = h->claim;
  return 0;
}

int sp_handler_get_status_versioned(const sp_handler *h, int version,
                                    sp_handler_status *dst) {
  sp_handler_status full, *out = &full;
  const sp_session *s;
  size_t size = sp_abi_handler_status_size(version);

  if (!h || !dst) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (size == 0) {
    return SP_ERR_VERSION;
  }
  memset(out, 0, sizeof(*out));
  out->role = h->role;
  out->epoch = sp_handler_epoch(h);
  if (h->role == SP_ROLE_LEADER) {
    out->sequence = h->bounds.latest;
    out->stepped_down = h->stepped_down;
  } else {
    /* Applied means durable (sp_durable.c). */
    out->sequence = sp_durable_through(h);
    out->leader_latest = h->leader_latest;
    out->sync_required =
        h->fstate == SP_F_SYNC_REQUIRED || h->fstate == SP_F_RECOVERING;
    /* As sp_follower_expiry schedules the dial. */
    if (h->fstate == SP_F_DISCONNECTED && !h->leader) {
      out->next_attempt = h->reconnect_at;
    }
  }
  for (s = h->sessions; s; s = s->hnext) {
    out->connected_peers += s->connected_event && !s->dead;
  }
  sp_abi_copy(dst, &full, size);
  return 0;
}

uint64_t sp_handler_local_features(const sp_handler *h) {
  uint64_t f = 0;

  if (sp_store_has_writes(&h->store)) {
    f |= SP_FEATURE_WRITES;
  }
  if (h->role == SP_ROLE_LEADER ? h->has_snap_source : h->has_snap_sink) {
    f |= SP_FEATURE_SNAPSHOT;
  }
  /* Every handler reads claims (a follower relays them). */
  f |= SP_FEATURE_CLAIMS;
  return f;
}

sp_tstamp sp_handler_backoff(sp_handler *h, sp_duration *backoff) {
  sp_node *node = h->node;
  sp_duration b = *backoff ? *backoff * 2 : h->cfg.reconnect_min;

  if (b > h->cfg.reconnect_max) {
    b = h->cfg.reconnect_max;
  }
  *backoff = b;
  return node->now + b / 2 + sp_rand_below(&node->rng, b / 2 + 1);
}

void sp_handler_step_down(sp_handler *h, uint64_t epoch, const sp_uuid *peer,
                          const sp_uuid *leader) {
  sp_event ev = {0};
  char who[SP_UUID_STRING_LEN + 1];

  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return;
  }
  sp_hlog(h, NULL, SP_LOG_WARN,
          "epoch %llu met epoch %llu, proven by %s's claim: stepping down",
          (unsigned long long)h->epoch, (unsigned long long)epoch,
          sp_uuid_format(leader, who));
  h->stepped_down = 1;
  sp_snap_serve_stop(h, 1);
  while (h->sessions) {
    sp_session_close(h->sessions, SP_ERR_STALE_EPOCH);
  }
  sp_waits_cancel_all(h);
  ev.epoch = epoch;
  ev.leader = *leader;
  sp_emit_simple(h, SP_EVENT_STEPPED_DOWN, peer, &ev);
}

int sp_handler_accept(sp_handler *h, sp_session *s, const sp_msg *first) {
  sp_node *node = h->node;
  int rv;

  if (h->role == SP_ROLE_LEADER) {
    if (h->stepped_down) {
      sp_session_refuse(s, SP_ERR_STALE_EPOCH, "this leader stepped down");
      return -1;
    }
    /* Before it is attached: a stream refused for its epoch must not
     * replace the device's stream that is still good (a crossed dial
     * whose other half carries the proof, STALE_EPOCH with a claim). */
    if (first->type != SP_MSG_ERROR && sp_leadership_judge(h, s, first)) {
      if (!s->dead && !s->refused) {
        sp_session_close(s, SP_ERR_STALE_EPOCH); /* stepped down */
      }
      return -1;
    }
    if (sp_leader_key_refused(h, s)) {
      return -1;
    }
    /* A leader's first word is a Heartbeat with role leader; such a peer
     * is handled by the leader logic once attached. */
  } else {
    sp_uuid leader;
    rv = node->reg.leader(&h->cfg.library_id, &leader, node->reg.user_data);
    if (rv != 0 || !sp_uuid_equal(&leader, &s->peer)) {
      sp_session_refuse(s, SP_ERR_NOT_LEADER,
                        "peer is not this library's leader");
      return -1;
    }
    if (first->epoch < h->st.epoch) {
      sp_session_refuse(s, SP_ERR_STALE_EPOCH, "epoch %llu is fenced by %llu",
                        (unsigned long long)first->epoch,
                        (unsigned long long)h->st.epoch);
      return -1;
    }
    if (h->fstate == SP_F_SYNC_REQUIRED) {
      /* Nothing is fetched until the host's full sync is done. */
      sp_session_close(s, 0);
      return -1;
    }
    if (sp_follower_refuse_while_backing_off(h, s)) {
      return -1;
    }
    if (h->leader && !sp_follower_yield_leader(h)) {
      /* Crossed dials: our own stream to the leader is the one that
       * counts, as it is on the leader. */
      sp_session_close(s, 0);
      return -1;
    }
  }
  rv = sp_session_attach(s, h);
  if (rv != 0) {
    sp_node_set_fatal(node, rv);
    sp_session_close(s, rv);
    return -1;
  }
  return 0;
}

int sp_handler_set_role(sp_handler *h, sp_role role, uint64_t epoch,
                        sp_tstamp now) {
  int rv, fatal;

  if (!h || (role != SP_ROLE_LEADER && role != SP_ROLE_FOLLOWER)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (role == SP_ROLE_LEADER &&
      (epoch <= h->epoch || epoch <= h->st.epoch)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* A term another device already proved it leads at (or above) would be
   * deposed by that very claim, relayed back by our own followers. */
  if (role == SP_ROLE_LEADER && h->has_claim && h->claim.epoch >= epoch &&
      !sp_uuid_equal(&h->claim.leader, &h->node->cfg.device_id)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h->node->now = now;
  /* Whatever the roles, the log may move past the sink's pending
   * snapshot before this device follows again: no later recovery may
   * resume it (sp_handler_del keeps it, for the next process). */
  if (h->has_snap_sink) {
    sp_recover_abandon(h);
  }
  stop_role(h);
  /* A commit wait belongs to the follower term that forwarded it. */
  sp_writer_cancel_waits(h);
  sp_node_reap(h->node);
  h->role = role;
  if (role == SP_ROLE_LEADER) {
    h->epoch = epoch;
    sp_leadership_term(h);
  }
  rv = start_role(h);
  fatal = sp_node_reap(h->node);
  return fatal ? fatal : rv;
}

sp_tstamp sp_handler_expiry(const sp_handler *h) {
  sp_tstamp t = h->role == SP_ROLE_LEADER ? sp_leader_expiry(h)
                                          : sp_follower_expiry(h);
  sp_tstamp w = sp_writer_expiry(h);

  return w < t ? w : t;
}

void sp_handler_expire(sp_handler *h, sp_tstamp now) {
  sp_writer_expire(h, now);
  if (h->role == SP_ROLE_LEADER) {
    sp_leader_expire(h, now);
  } else {
    sp_follower_expire(h, now);
  }
}

/* ---- writes from every device (sp_writer.c does the work) ---- */

int sp_handler_submit(sp_handler *h, const sp_entry *entries, size_t n,
                      uint64_t *first_origin, sp_tstamp now) {
  int rv, fatal;

  if (!h || !entries || n == 0 || n > SP_MAX_PROPOSE_ENTRIES) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role == SP_ROLE_LEADER && h->stepped_down) {
    return SP_ERR_INVALID_STATE;
  }
  h->node->now = now;
  rv = sp_writer_submit(h, entries, n, first_origin);
  fatal = sp_node_reap(h->node);
  return fatal ? fatal : rv;
}

int sp_handler_submission(sp_handler *h, uint64_t origin_seq,
                          sp_seq *sequence) {
  if (!h || !sequence || origin_seq == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return sp_writer_submission(h, origin_seq, sequence);
}

int sp_handler_wait_committed(sp_handler *h, uint64_t origin_seq,
                              sp_tstamp deadline, sp_commit_wait_cb cb,
                              void *user_data, sp_tstamp now) {
  if (!h || !cb || origin_seq == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h->node->now = now;
  return sp_writer_wait(h, origin_seq, deadline, cb, user_data);
}

/* Version 2 of the struct must add its size here. */
_Static_assert(SP_OUTBOX_STATUS_VERSION == 1, "sp_outbox_status sizes");

int sp_handler_outbox_status_versioned(sp_handler *h, int version,
                                       sp_outbox_status *out) {
  sp_outbox_status full;
  int rv;

  if (!h || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  memset(&full, 0, sizeof(full));
  /* Zeroed on failure too, as before versions. */
  rv = sp_writer_status(h, &full);
  sp_abi_copy(out, &full, SP_ABI_END(sp_outbox_status, leader_accepts));
  return rv;
}
