/*
 * sp_leader.c: the leader's side of the protocol.
 *
 * Per follower stream the leader keeps a small queue of requested ranges
 * and serves them one EntriesResponse at a time, reading from the store
 * straight into the stream's out buffer, only when the previous frame was
 * taken: a slow follower holds at most one frame of the leader's memory.
 * Per follower device it keeps acknowledged progress (which outlives
 * streams) and dials followers that are not connected.
 */
#include <string.h>

#include "sp_core.h"
#include "sp_enc.h"
#include "sp_mem_int.h"

/* Room kept after the entries of a page for its trailing fields. */
#define PAGE_TAIL_MAX 64

static sp_handler *hof(sp_session *s) { return s->handler; }

static int refresh_bounds(sp_handler *h) {
  sp_log_bounds b;

  if (h->store.bounds(&b, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  h->bounds = b;
  return 0;
}

/* ---- follower records ---- */

sp_frec *sp_leader_frec(sp_handler *h, const sp_uuid *device, int add) {
  size_t i;
  sp_frec *r;

  for (i = 0; i < h->nfrecs; ++i) {
    if (sp_uuid_equal(&h->frecs[i].device, device)) {
      return &h->frecs[i];
    }
  }
  if (!add) {
    return NULL;
  }
  if (h->nfrecs == h->capfrecs) {
    size_t cap = h->capfrecs ? h->capfrecs * 2 : 8;
    sp_frec *p = sp_realloc(&h->node->mem, h->frecs, cap * sizeof(*p));
    size_t k;
    if (!p) {
      sp_node_set_fatal(h->node, SP_ERR_NOMEM);
      return NULL;
    }
    /* Sessions point at records: re-point them after the move. */
    for (k = 0; k < h->nfrecs; ++k) {
      if (p[k].session) {
        p[k].session->rec = &p[k];
      }
    }
    h->frecs = p;
    h->capfrecs = cap;
  }
  r = &h->frecs[h->nfrecs++];
  memset(r, 0, sizeof(*r));
  r->device = *device;
  r->dial_at = h->node->now;
  return r;
}

/* Mark registry members as registered followers (adding records). */
static int refresh_members(sp_handler *h) {
  sp_node *node = h->node;
  size_t n, i;
  int rv = sp_node_members(node, &h->cfg.library_id, &n);

  if (rv != 0) {
    return rv;
  }
  for (i = 0; i < h->nfrecs; ++i) {
    h->frecs[i].registered = 0;
  }
  for (i = 0; i < n; ++i) {
    sp_frec *r;
    if (sp_uuid_equal(&node->members[i], &node->cfg.device_id)) {
      continue;
    }
    r = sp_leader_frec(h, &node->members[i], 1);
    if (!r) {
      return SP_ERR_NOMEM;
    }
    r->registered = 1;
  }
  return 0;
}

/* ---- sessions ---- */

int sp_leader_attach(sp_session *s) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_frec *r;

  memset(l, 0, sizeof(*l));
  l->queue = sp_calloc(&h->node->mem, h->cfg.max_queued_fetches,
                       sizeof(*l->queue));
  if (!l->queue) {
    return SP_ERR_NOMEM;
  }
  r = sp_leader_frec(h, &s->peer, 1);
  if (!r) {
    sp_free(&h->node->mem, l->queue);
    l->queue = NULL;
    return SP_ERR_NOMEM;
  }
  if (r->session && r->session != s) {
    /* One stream per follower: the newer one replaces the older (the
     * follower dialed while our own dial was under way). */
    sp_session *old = r->session;
    r->session = NULL;
    old->rec = NULL;
    sp_session_close(old, 0);
  }
  r->session = s;
  s->rec = r;
  return 0;
}

void sp_leader_detach(sp_session *s) {
  sp_handler *h = hof(s);
  sp_frec *r = s->rec;

  sp_free(&h->node->mem, s->u.l.queue);
  s->u.l.queue = NULL;
  if (r && r->session == s) {
    r->session = NULL;
    if (r->dial_backoff < h->cfg.reconnect_min) {
      r->dial_backoff = h->cfg.reconnect_min;
    }
    r->dial_at = h->node->now + r->dial_backoff;
  }
  s->rec = NULL;
}

static void progress_of(const sp_handler *h, const sp_frec *r, sp_tstamp now,
                        sp_follower_progress *p) {
  memset(p, 0, sizeof(*p));
  p->device_id = r->device;
  p->connected = r->session != NULL && !r->session->dead;
  p->acked_sequence = r->acked;
  p->has_acked = r->has_acked;
  p->lag = h->bounds.latest > r->acked ? h->bounds.latest - r->acked : 0;
  p->since_last_ack =
      r->has_acked ? (now > r->last_ack_at ? now - r->last_ack_at : 0)
                   : SP_TSTAMP_MAX;
}

static void queue_sync_required(sp_session *s, sp_sync_reason reason,
                                sp_seq follower_seq) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_event ev = {0};

  l->qlen = 0;
  /* It stops fetching: announcing entries to it would be noise, and
   * pushing them would be refused again at once, forever. */
  l->announced = h->bounds.latest;
  l->follower_current = 0;
  l->sync.reason = reason;
  l->sync.leader_latest = h->bounds.latest;
  l->sync.leader_oldest = h->bounds.pruned_through + 1;
  l->sync.follower_sequence = follower_seq;
  ev.sync_reason = reason;
  ev.leader_latest = l->sync.leader_latest;
  ev.leader_oldest = l->sync.leader_oldest;
  ev.follower_sequence = follower_seq;
  sp_emit_simple(h, SP_EVENT_SYNC_REQUIRED_SENT, &s->peer, &ev);
}

/* Why the follower at `since` cannot be served incrementally, or 0. */
static sp_sync_reason unservable(sp_handler *h, sp_seq since) {
  if (since > h->bounds.latest) {
    return SP_SYNC_AHEAD_OF_LEADER;
  }
  if (since < h->bounds.pruned_through) {
    return SP_SYNC_BEHIND_RETENTION;
  }
  if (h->cfg.retention_cap && h->bounds.latest - since > h->cfg.retention_cap) {
    return SP_SYNC_RETENTION_CAP;
  }
  return 0;
}

static void on_fetch(sp_session *s, const sp_msg_fetch_entries *m) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_sync_reason why;
  sp_range *slot;

  if (m->limit == 0 || m->limit > SP_MAX_FETCH_LIMIT) {
    sp_session_refuse(s, SP_ERR_FETCH_LIMIT,
                      "fetch limit must be 1..%u", SP_MAX_FETCH_LIMIT);
    return;
  }
  if (refresh_bounds(h) != 0) {
    sp_session_close(s, SP_ERR_STORE);
    return;
  }
  why = unservable(h, m->since_sequence);
  if (!why && m->since_hash_len == SP_HASH_LEN) {
    uint8_t mine[SP_HASH_LEN];
    int rv = h->store.hash_at(m->since_sequence, mine, h->store.user_data);
    if (rv == SP_ERR_NOT_FOUND ||
        (rv == 0 && memcmp(mine, m->since_hash, SP_HASH_LEN) != 0)) {
      why = SP_SYNC_DIVERGENCE;
    } else if (rv != 0) {
      sp_session_close(s, SP_ERR_STORE);
      return;
    }
  }
  if (why) {
    queue_sync_required(s, why, m->since_sequence);
    return;
  }
  if (m->since_hash_len == SP_HASH_LEN && s->rec) {
    /* A resume point the chain vouches for is the follower's durable
     * position: count it as an acknowledgement. */
    s->rec->acked = m->since_sequence;
    s->rec->has_acked = 1;
    s->rec->last_ack_at = h->node->now;
    s->rec->dial_backoff = 0;
    l->acked = m->since_sequence;
    l->has_acked = 1;
    sp_waits_check(h);
  }
  if (l->qlen == h->cfg.max_queued_fetches) {
    sp_session_refuse(s, SP_ERR_TOO_MANY_REQUESTS,
                      "more than %u fetches queued", h->cfg.max_queued_fetches);
    return;
  }
  l->follower_current = 0;
  slot = &l->queue[(l->qhead + l->qlen++) % h->cfg.max_queued_fetches];
  slot->cur = m->since_sequence;
  slot->end = m->since_sequence + m->limit < m->since_sequence
                  ? UINT64_MAX
                  : m->since_sequence + m->limit;
  l->notify_outstanding = 0;
}

static void on_ack(sp_session *s, sp_seq up_to) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_event ev = {0};

  if (up_to > h->bounds.latest && refresh_bounds(h) != 0) {
    sp_session_close(s, SP_ERR_STORE);
    return;
  }
  if (up_to > h->bounds.latest) {
    sp_session_refuse(s, SP_ERR_ACK_BEYOND, "ack %llu beyond latest %llu",
                      (unsigned long long)up_to,
                      (unsigned long long)h->bounds.latest);
    return;
  }
  if (l->has_acked && up_to < l->acked) {
    sp_session_refuse(s, SP_ERR_SEQ_REGRESSION, "ack %llu after ack %llu",
                      (unsigned long long)up_to, (unsigned long long)l->acked);
    return;
  }
  l->acked = up_to;
  l->has_acked = 1;
  if (s->rec) {
    s->rec->acked = up_to;
    s->rec->has_acked = 1;
    s->rec->last_ack_at = h->node->now;
    s->rec->dial_backoff = 0;
    progress_of(h, s->rec, h->node->now, &ev.progress);
  }
  sp_emit_simple(h, SP_EVENT_ACK_RECEIVED, &s->peer, &ev);
  sp_waits_check(h);
}

/* Another device claims to lead this library. */
static void on_other_leader(sp_session *s, const sp_msg *msg) {
  sp_handler *h = hof(s);
  sp_event ev = {0};

  if (msg->epoch > h->epoch) {
    sp_handler_step_down(h, msg->epoch, &s->peer);
    return;
  }
  if (msg->epoch == h->epoch) {
    ev.epoch = msg->epoch;
    sp_emit_simple(h, SP_EVENT_ROLE_CONFLICT, &s->peer, &ev);
    sp_session_refuse(s, SP_ERR_TWO_LEADERS, "two leaders at epoch %llu",
                      (unsigned long long)msg->epoch);
    return;
  }
  sp_session_refuse(s, SP_ERR_STALE_EPOCH, "epoch %llu is fenced by %llu",
                    (unsigned long long)msg->epoch,
                    (unsigned long long)h->epoch);
}

void sp_leader_on_msg(sp_session *s, const sp_msg *msg) {
  sp_handler *h = hof(s);

  if (msg->epoch > h->epoch) {
    sp_handler_step_down(h, msg->epoch, &s->peer);
    return;
  }
  switch (msg->type) {
  case SP_MSG_FETCH_ENTRIES:
    on_fetch(s, &msg->u.fetch_entries);
    break;
  case SP_MSG_ACKNOWLEDGE:
    on_ack(s, msg->u.acknowledge.up_to_sequence);
    break;
  case SP_MSG_HEARTBEAT:
    if (msg->u.heartbeat.role == SP_ROLE_LEADER) {
      on_other_leader(s, msg);
    } else if (msg->u.heartbeat.current_sequence > h->bounds.latest) {
      if (refresh_bounds(h) != 0) {
        sp_session_close(s, SP_ERR_STORE);
      } else if (msg->u.heartbeat.current_sequence > h->bounds.latest) {
        queue_sync_required(s, SP_SYNC_AHEAD_OF_LEADER,
                            msg->u.heartbeat.current_sequence);
      }
    }
    break;
  default:
    sp_session_refuse(s, SP_ERR_WRONG_ROLE,
                      "a follower may not send message type %d",
                      (int)msg->type);
    break;
  }
}

/* ---- serving pages ---- */

/* Exact encoded size of an entry (the canonical forms of sp_enc.c). */
static size_t uint_len(uint64_t v) {
  return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

static size_t int_len(int64_t v) {
  if (v >= 0) {
    return uint_len((uint64_t)v);
  }
  return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3
                                               : v >= INT32_MIN ? 5 : 9;
}

static size_t entry_len(const sp_entry *e) {
  size_t mt = e->model_type_len, d = e->data_len;
  return 1 + uint_len(e->sequence) + 18 + uint_len(e->timestamp_ms) +
         (mt < 32 ? 1 : mt < 256 ? 2 : mt < 65536 ? 3 : 5) + mt + 18 + 1 +
         int_len(e->version) + (d < 256 ? 2 : d < 65536 ? 3 : 5) + d;
}

typedef struct page_ctx {
  msgpack_packer *pk;
  size_t body_start; /* offset of the body from out.off */
  sp_buf *out;
  size_t budget;
  size_t max_frame;
  size_t count;
  sp_seq last_seq;
  uint8_t last_hash[SP_HASH_LEN];
  int stopped;
  int too_big;
} page_ctx;

static int page_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                     void *arg) {
  page_ctx *c = arg;
  size_t body = sp_buf_pending(c->out) - c->body_start;
  size_t need = body + entry_len(e) + PAGE_TAIL_MAX;

  if (need > c->max_frame) {
    c->too_big = c->count == 0;
    c->stopped = 1;
    return SP_SINK_STOP;
  }
  if (c->count > 0 && need > c->budget) {
    c->stopped = 1;
    return SP_SINK_STOP;
  }
  if (sp_enc_check_entry(e) != 0) {
    return SP_ERR_STORE_CORRUPT;
  }
  if (sp_enc_entry(c->pk, e) != 0) {
    return SP_ERR_NOMEM;
  }
  c->count++;
  c->last_seq = e->sequence;
  memcpy(c->last_hash, hash, SP_HASH_LEN);
  return 0;
}

/* Fail a page: drop what was written, tell the host, close the stream. */
static int page_failed(sp_session *s, size_t frame_rel, int code,
                       const char *what) {
  sp_event ev = {0};

  s->out.len = s->out.off + frame_rel;
  ev.error_code = code;
  ev.message = what;
  sp_emit_simple(hof(s), SP_EVENT_ERROR, &s->peer, &ev);
  if (code == SP_ERR_NOMEM) {
    sp_node_set_fatal(s->node, code);
  }
  sp_session_close(s, code);
  return 0;
}

static int serve_page(sp_session *s) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_range *r = &l->queue[l->qhead];
  size_t frame_rel = sp_buf_pending(&s->out), count_off;
  uint8_t prefix[SP_FRAME_HEADER_LEN] = {0};
  msgpack_packer pk;
  sp_wr wr;
  page_ctx c;
  sp_seq end, through;
  size_t width;
  int rv, has_more;

  if (refresh_bounds(h) != 0) {
    return page_failed(s, frame_rel, SP_ERR_STORE, "store bounds failed");
  }
  if (r->cur < h->bounds.pruned_through) {
    /* Pruned while the request waited. */
    queue_sync_required(s, SP_SYNC_BEHIND_RETENTION, r->cur);
    return 1;
  }
  end = r->end < h->bounds.latest ? r->end : h->bounds.latest;
  if (sp_buf_append(&s->out, prefix, sizeof(prefix)) != 0) {
    return page_failed(s, frame_rel, SP_ERR_NOMEM, "out of memory");
  }
  memset(&c, 0, sizeof(c));
  sp_wr_buf(&wr, &pk, &s->out);
  c.pk = &pk;
  c.out = &s->out;
  c.body_start = frame_rel + SP_FRAME_HEADER_LEN;
  c.budget = h->cfg.response_max_bytes;
  c.max_frame = s->node->cfg.max_frame;
  if (sp_enc_response_head(&pk, &h->cfg.library_id, h->epoch, r->cur,
                           &count_off) != 0) {
    return page_failed(s, frame_rel, SP_ERR_NOMEM, "out of memory");
  }
  width = end > r->cur ? (size_t)(end - r->cur) : 0;
  if (width > 0) {
    rv = h->store.read(r->cur, end, width, page_sink, &c, h->store.user_data);
    if (rv < 0) {
      return page_failed(s, frame_rel,
                         rv == SP_ERR_NOMEM ? rv : SP_ERR_STORE,
                         "store read failed");
    }
  }
  if (c.too_big) {
    return page_failed(s, frame_rel, SP_ERR_OVERSIZE,
                       "entry larger than the maximum frame");
  }
  /* A stopped read covers up to its last entry; otherwise the page
   * covers the whole of (cur, end], gaps included. */
  through = c.stopped ? c.last_seq : end;
  has_more = through < h->bounds.latest;
  if (sp_enc_response_tail(&pk, through, has_more, h->bounds.latest,
                           c.last_hash, c.count ? SP_HASH_LEN : 0) != 0) {
    return page_failed(s, frame_rel, SP_ERR_NOMEM, "out of memory");
  }
  sp_enc_patch_count(s->out.data + s->out.off + c.body_start + count_off,
                     (uint32_t)c.count);
  sp_put_be32(s->out.data + s->out.off + frame_rel,
              (uint32_t)(sp_buf_pending(&s->out) - c.body_start));
  r->cur = through;
  if (through >= r->end || through >= h->bounds.latest) {
    l->qhead = (l->qhead + 1) % h->cfg.max_queued_fetches;
    l->qlen--;
  }
  l->sent_through = through;
  l->follower_current = !has_more;
  if (l->announced < h->bounds.latest) {
    l->announced = h->bounds.latest;
  }
  return 1;
}

int sp_leader_next_frame(sp_session *s) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_msg msg;

  if (l->sync.reason) {
    memset(&msg, 0, sizeof(msg));
    msg.type = SP_MSG_SYNC_REQUIRED;
    msg.u.sync_required = l->sync;
    l->sync.reason = 0;
    return sp_session_queue(s, &msg) == 0;
  }
  if (l->qlen > 0) {
    return serve_page(s);
  }
  if (h->cfg.push_inline && l->follower_current &&
      h->bounds.latest > l->sent_through) {
    /* The follower holds everything up to sent_through: the new entries
     * go out as a page it will apply on arrival. */
    l->queue[l->qhead].cur = l->sent_through;
    l->queue[l->qhead].end = h->bounds.latest;
    l->qlen = 1;
    return serve_page(s);
  }
  if (!l->notify_outstanding && h->bounds.latest > l->announced) {
    memset(&msg, 0, sizeof(msg));
    msg.type = SP_MSG_NEW_ENTRIES;
    msg.u.new_entries.from_sequence = l->announced + 1;
    msg.u.new_entries.to_sequence = h->bounds.latest;
    msg.u.new_entries.entry_count = h->bounds.latest - l->announced;
    l->announced = h->bounds.latest;
    l->notify_outstanding = 1;
    return sp_session_queue(s, &msg) == 0;
  }
  return 0;
}

/* ---- handler-level leader duties ---- */

int sp_leader_start(sp_handler *h) {
  size_t i;
  int rv = refresh_bounds(h);

  if (rv != 0) {
    return rv;
  }
  rv = refresh_members(h);
  if (rv != 0) {
    return rv;
  }
  for (i = 0; i < h->nfrecs; ++i) {
    h->frecs[i].dial_at = h->node->now;
    h->frecs[i].dial_backoff = 0;
  }
  return 0;
}

void sp_leader_stop(sp_handler *h) {
  while (h->sessions) {
    sp_session_close(h->sessions, 0);
  }
  sp_waits_cancel_all(h);
}

static void dial(sp_handler *h, sp_frec *r) {
  sp_node *node = h->node;
  sp_session *s;
  uint64_t id;
  int rv;

  rv = node->tr.open_stream(&r->device, &h->cfg.library_id, &id,
                            node->tr.user_data);
  sp_log(node, SP_LOG_DEBUG, "dialing follower: %s",
         rv ? sp_err_name(rv) : "stream opened");
  if (rv == 0) {
    rv = sp_session_new_local(&s, h, id, &r->device);
    if (rv == 0) {
      s->hello_pending = 1;
      sp_session_pump(s);
    } else {
      sp_node_set_fatal(node, rv);
    }
  }
  /* Whatever happened, the next attempt waits a little longer; a stream
   * that works resets the backoff when the follower acknowledges. */
  r->dial_at = sp_handler_backoff(h, &r->dial_backoff);
}

void sp_leader_expire(sp_handler *h, sp_tstamp now) {
  size_t i;

  sp_waits_expire(h, now);
  for (i = 0; i < h->nfrecs && !h->stepped_down; ++i) {
    sp_frec *r = &h->frecs[i];
    if (r->registered && !r->session && r->dial_at <= now) {
      dial(h, r);
    }
  }
}

sp_tstamp sp_leader_expiry(const sp_handler *h) {
  sp_tstamp t = sp_waits_expiry(h);
  size_t i;

  if (h->stepped_down) {
    return t;
  }
  for (i = 0; i < h->nfrecs; ++i) {
    const sp_frec *r = &h->frecs[i];
    if (r->registered && !r->session && r->dial_at < t) {
      t = r->dial_at;
    }
  }
  return t;
}

/* ---- public leader API ---- */

int sp_handler_notify_new_entries(sp_handler *h, sp_seq from, sp_seq to,
                                  sp_tstamp now) {
  sp_session *s, *next;
  int rv;

  if (!h || from > to) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return SP_ERR_INVALID_STATE;
  }
  h->node->now = now;
  rv = refresh_bounds(h);
  if (rv == 0) {
    for (s = h->sessions; s; s = next) {
      next = s->hnext;
      sp_session_pump(s);
    }
  }
  sp_waits_check(h);
  {
    int fatal = sp_node_reap(h->node);
    return fatal ? fatal : rv;
  }
}

int sp_handler_follower_progress(sp_handler *h, const sp_uuid *device,
                                 sp_tstamp now, sp_follower_progress *out) {
  const sp_frec *r;

  if (!h || !device || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_LEADER) {
    return SP_ERR_INVALID_STATE;
  }
  r = sp_leader_frec(h, device, 0);
  if (!r) {
    return SP_ERR_NOT_FOUND;
  }
  progress_of(h, r, now, out);
  return 0;
}

sp_ssize sp_handler_list_followers(sp_handler *h, sp_follower_progress *out,
                                   size_t cap, sp_tstamp now) {
  size_t i;

  if (!h || (!out && cap)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_LEADER) {
    return SP_ERR_INVALID_STATE;
  }
  for (i = 0; i < h->nfrecs && i < cap; ++i) {
    progress_of(h, &h->frecs[i], now, &out[i]);
  }
  return (sp_ssize)h->nfrecs;
}

int sp_handler_retention_floor(sp_handler *h, sp_seq *floor) {
  sp_node *node;
  size_t n, i;
  sp_seq f;
  int rv;

  if (!h || !floor) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_LEADER) {
    return SP_ERR_INVALID_STATE;
  }
  node = h->node;
  if ((rv = refresh_bounds(h)) != 0 ||
      (rv = sp_node_members(node, &h->cfg.library_id, &n)) != 0) {
    return rv;
  }
  f = h->bounds.latest;
  for (i = 0; i < n; ++i) {
    const sp_frec *r;
    sp_seq acked;
    if (sp_uuid_equal(&node->members[i], &node->cfg.device_id)) {
      continue;
    }
    r = sp_leader_frec(h, &node->members[i], 0);
    acked = r && r->has_acked ? r->acked : 0;
    /* Past the cap a follower no longer holds the log back. */
    if (h->cfg.retention_cap &&
        h->bounds.latest - acked > h->cfg.retention_cap) {
      continue;
    }
    if (acked < f) {
      f = acked;
    }
  }
  *floor = f;
  return 0;
}
