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

#include "sp_abi.h"
#include "sp_core.h"
#include "sp_enc.h"
#include "sp_leadership.h"
#include "sp_mem_int.h"

/* Room kept after the entries of a page for its trailing fields. */
#define PAGE_TAIL_MAX 64

/* A queue head that is no request of the follower's (l->head_own), and
 * the queue's size: the follower's requests plus that one. */
#define OWN_PUSH 1
#define OWN_RESEND 2
#define QCAP(h) ((h)->cfg.max_queued_fetches + 1u)

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

/* The index holds each record's position + 1 under its device's hash. */
sp_frec *sp_leader_frec(sp_handler *h, const sp_uuid *device, int add) {
  uint64_t hash = sp_index_hash_uuid(device);
  size_t pos = 0;
  uintptr_t v;
  sp_frec *r;

  while ((v = sp_index_next(&h->frec_ix, hash, &pos, &h->node->visits))) {
    if (sp_uuid_equal(&h->frecs[v - 1].device, device)) {
      return &h->frecs[v - 1];
    }
  }
  if (!add) {
    return NULL;
  }
  if (sp_index_reserve(&h->frec_ix, &h->node->mem, 1) != 0) {
    sp_node_set_fatal(h->node, SP_ERR_NOMEM);
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
  h->dial_min = h->node->now;
  (void)sp_index_put(&h->frec_ix, &h->node->mem, hash, h->nfrecs);
  return r;
}

/* Forget the records from position `n` on (only records with no
 * session: those just added). */
static void truncate_frecs(sp_handler *h, size_t n) {
  while (h->nfrecs > n) {
    --h->nfrecs;
    (void)sp_index_del(&h->frec_ix,
                       sp_index_hash_uuid(&h->frecs[h->nfrecs].device),
                       h->nfrecs + 1);
  }
}

static void forget_kept(sp_handler *h, const sp_uuid *device);
static void load_kept_acks(sp_handler *h, size_t first);

/* The device of record `i` left the library.  It is treated as one that
 * never was a member (the node refuses those on incoming streams): its
 * stream is refused, and what it acknowledged is forgotten, here and in
 * the position kept with the log, so a device that comes back counts from
 * what it acknowledges then and a device that left never stands in for
 * one that joined. */
static void drop_frec(sp_handler *h, size_t i) {
  sp_frec *r = &h->frecs[i];
  sp_session *s = r->session;

  (void)sp_index_del(&h->frec_ix, sp_index_hash_uuid(&r->device), i + 1);
  forget_kept(h, &r->device);
  sp_leader_forget_address(h, &r->device);
  if (s) {
    r->session = NULL;
    s->rec = NULL;
    sp_session_refuse(s, SP_ERR_NOT_MEMBER,
                      "device is no longer a member of this library");
  }
  if (i != --h->nfrecs) {
    uint64_t hash = sp_index_hash_uuid(&h->frecs[h->nfrecs].device);
    h->frecs[i] = h->frecs[h->nfrecs];
    /* A put right after a delete needs no memory. */
    (void)sp_index_del(&h->frec_ix, hash, h->nfrecs + 1);
    (void)sp_index_put(&h->frec_ix, &h->node->mem, hash, i + 1);
    if (h->frecs[i].session) {
      h->frecs[i].session->rec = &h->frecs[i];
    }
  }
}

/* Re-read the registry's member list: records added for new members
 * (seeded with their positions kept with the log), dropped for devices no
 * longer listed. */
static int refresh_members(sp_handler *h) {
  sp_node *node = h->node;
  size_t n, i, old = h->nfrecs;
  int rv = sp_node_members(node, &h->cfg.library_id, &n);

  if (rv != 0) {
    return rv;
  }
  /* New records go at the end, and are taken back if one cannot be
   * made: until every one exists, the last list read stays in force. */
  for (i = 0; i < n; ++i) {
    if (!sp_uuid_equal(&node->members[i], &node->cfg.device_id) &&
        !sp_leader_frec(h, &node->members[i], 0) &&
        !sp_leader_frec(h, &node->members[i], 1)) {
      truncate_frecs(h, old);
      return SP_ERR_NOMEM;
    }
  }
  for (i = 0; i < h->nfrecs; ++i) {
    h->frecs[i].registered = 0;
  }
  for (i = 0; i < n; ++i) {
    sp_frec *r = sp_leader_frec(h, &node->members[i], 0);
    if (r && !sp_uuid_equal(&node->members[i], &node->cfg.device_id)) {
      r->registered = 1;
    }
  }
  /* Before any drop moves a record below `old`. */
  if (h->nfrecs > old) {
    load_kept_acks(h, old);
  }
  /* Backwards: drop_frec moves the last record, already kept, into i. */
  for (i = h->nfrecs; i-- > 0;) {
    if (!h->frecs[i].registered) {
      drop_frec(h, i);
    }
  }
  /* Records listed again may be due. */
  h->dial_min = SP_TSTAMP_MAX;
  for (i = 0; i < h->nfrecs; ++i) {
    const sp_frec *r = &h->frecs[i];
    if (r->registered && !r->session && r->dial_at < h->dial_min) {
      h->dial_min = r->dial_at;
    }
  }
  sp_waits_check(h);
  return 0;
}

/* Credit a follower with the durable position `seq` (an ack, or a resume
 * point the chain vouches for).  Only a position that moves forward resets
 * the dial backoff: a follower that connects, resumes and fails again
 * (a full disk) must not be dialled every reconnect_min forever. */
static void credit(sp_handler *h, sp_frec *r, sp_seq seq) {
  if (seq > r->acked) {
    r->dial_backoff = 0;
  }
  r->acked = seq;
  r->has_acked = 1;
  r->last_ack_at = h->node->now;
}

/* ---- follower keys and positions kept with the log ---- */

/* A follower's position is handed to the store at most this often while
 * its stream lives (and always when the stream or the term ends).  The
 * kept position serves only a later leader of the log, and one lower than
 * the truth is safe (it keeps more log, the follower resumes and acks
 * again): at a thousand followers, saving on every ack would be a store
 * write per delivered entry (with SQLite, a transaction).  Within this
 * interval a crashed leader's successor may see a follower a little
 * behind, never ahead. */
#define KEEP_INTERVAL (30 * SP_SECONDS)

static const uint8_t no_key[SP_PUBLIC_KEY_LEN];

static int can_keep(const sp_handler *h) {
  return h->store.save_follower_ack && h->store.load_follower_acks;
}

/* List the record's position to be kept with the next batch (keep_due):
 * 0, or -1 when there is no memory for it (kept at once then). */
static int hold_keep(sp_handler *h, sp_frec *r) {
  if (r->keep_listed) {
    return 0;
  }
  if (h->nkeeps == h->capkeeps) {
    size_t cap = h->capkeeps ? h->capkeeps * 2 : 16;
    sp_uuid *p = sp_realloc(&h->node->mem, h->keeps, cap * sizeof(*p));
    if (!p) {
      return -1;
    }
    h->keeps = p;
    h->capkeeps = cap;
  }
  if (h->nkeeps == 0) {
    h->keep_at = h->node->now + KEEP_INTERVAL;
  }
  h->keeps[h->nkeeps++] = r->device;
  r->keep_listed = 1;
  return 0;
}

/* Hand the record's position to the store when it moved: the first time
 * in the term, when `force`d (its stream ends), else at most every
 * KEEP_INTERVAL (held back until then: keep_due).  A lost save only makes
 * the position look older, which is safe, so failures are only logged. */
static void keep_ack(sp_handler *h, sp_frec *r, int force) {
  uint8_t hash[SP_HASH_LEN];
  sp_tstamp now = h->node->now;
  int rv;

  if (!can_keep(h) || !r->has_acked || r->acked == r->saved) {
    return;
  }
  if (!force && r->has_saved && now >= r->saved_at &&
      now - r->saved_at < KEEP_INTERVAL && hold_keep(h, r) == 0) {
    return;
  }
  rv = h->store.hash_at(r->acked, hash, h->store.user_data);
  if (rv == 0) {
    rv = h->store.save_follower_ack(&r->device, r->has_key ? r->key : no_key,
                                    r->acked, hash, h->store.user_data);
  }
  if (rv != 0) {
    sp_hlog(h, &r->device, SP_LOG_WARN,
            "keeping a follower position failed: %s", sp_err_name(rv));
    return;
  }
  r->saved = r->acked;
  r->saved_at = now;
  r->has_saved = 1;
}

/* Keep the held-back positions, all at once: one timer for the handler
 * (a timer per record would have one due every few milliseconds).  A
 * record kept less than KEEP_INTERVAL ago (at once, after a quiet spell)
 * waits for the next batch, so none is kept more often than that. */
static void keep_due(sp_handler *h, sp_tstamp now) {
  size_t i, n = h->nkeeps, left = 0;

  if (n == 0 || h->keep_at > now) {
    return;
  }
  for (i = 0; i < n; ++i) {
    sp_frec *r = sp_leader_frec(h, &h->keeps[i], 0);
    if (!r || !r->keep_listed) {
      continue; /* dropped, or listed again since */
    }
    if (r->acked != r->saved && now >= r->saved_at &&
        now - r->saved_at < KEEP_INTERVAL) {
      h->keeps[left++] = h->keeps[i];
      continue;
    }
    r->keep_listed = 0;
    keep_ack(h, r, 1);
  }
  h->nkeeps = left;
  h->keep_at = now + KEEP_INTERVAL;
}

/* The term starts or ends: nothing is held back (a stream's end kept its
 * position). */
static void keep_reset(sp_handler *h) {
  sp_free(&h->node->mem, h->keeps);
  h->keeps = NULL;
  h->nkeeps = h->capkeeps = 0;
}

/* Forget what `device` acknowledged in the position kept with the log
 * (sequence 0: nothing). */
static void forget_kept(sp_handler *h, const sp_uuid *device) {
  static const uint8_t none[SP_HASH_LEN];

  if (can_keep(h) &&
      h->store.save_follower_ack(device, no_key, 0, none,
                                 h->store.user_data) != 0) {
    sp_hlog(h, device, SP_LOG_WARN, "forgetting a follower position failed");
  }
}

typedef struct kept_ctx {
  sp_handler *h;
  size_t first; /* records before it are not seeded */
  int failed;
} kept_ctx;

static int kept_sink(const sp_uuid *device,
                     const uint8_t key[SP_PUBLIC_KEY_LEN], sp_seq acked,
                     const uint8_t hash[SP_HASH_LEN], void *arg) {
  kept_ctx *c = arg;
  sp_handler *h = c->h;
  sp_frec *r = sp_leader_frec(h, device, 0);
  uint8_t mine[SP_HASH_LEN];
  int rv;

  if (!r || (size_t)(r - h->frecs) < c->first || !r->registered ||
      r->has_key) {
    return 0;
  }
  if (memcmp(key, no_key, SP_PUBLIC_KEY_LEN) != 0) {
    uint8_t listed[SP_PUBLIC_KEY_LEN];
    const sp_registry *reg = &h->node->reg;
    /* The host replaced the device's key since (a reinstall): what the
     * old key acknowledged says nothing about the new key's log.  (The
     * core needs no device_key otherwise: it may be absent.) */
    if (reg->device_key &&
        reg->device_key(device, listed, reg->user_data) == 0 &&
        memcmp(listed, key, SP_PUBLIC_KEY_LEN) != 0) {
      return 0;
    }
    memcpy(r->key, key, SP_PUBLIC_KEY_LEN);
    r->has_key = 1;
  }
  if (acked == 0 || (r->has_acked && r->acked >= acked) ||
      acked > h->bounds.latest || acked < h->bounds.pruned_through) {
    return 0;
  }
  /* The chain hash commits to the whole prefix: only a position on this
   * log's own history says anything about what the follower holds. */
  rv = h->store.hash_at(acked, mine, h->store.user_data);
  if (rv == SP_ERR_NOT_FOUND ||
      (rv == 0 && memcmp(mine, hash, SP_HASH_LEN) != 0)) {
    return 0;
  }
  if (rv != 0) {
    c->failed = 1; /* unknown: the position is not counted */
    return 0;
  }
  r->acked = acked;
  r->has_acked = 1;
  r->saved = acked;
  return 0;
}

/* Seed the records from `first` on with the positions kept with the
 * log: a follower that synced and went away before this leader started
 * (or before the registry listed it) still counts as holding what it
 * acknowledged.  Best-effort, as store.h says: a position that cannot be
 * read or checked only counts as none, so errors are logged and the
 * leader goes on. */
static void load_kept_acks(sp_handler *h, size_t first) {
  kept_ctx c;
  int rv;

  if (!can_keep(h)) {
    return;
  }
  c.h = h;
  c.first = first;
  c.failed = 0;
  rv = refresh_bounds(h);
  if (rv == 0) {
    rv = h->store.load_follower_acks(kept_sink, &c, h->store.user_data);
  }
  if (rv != 0 || c.failed) {
    sp_hlog(h, NULL, SP_LOG_WARN, "loading kept follower positions: %s",
            sp_err_name(rv ? rv : SP_ERR_STORE));
  }
}

/* The key the peer of `s` proved, if the transport tells: 1, else 0. */
static int stream_key(const sp_session *s, uint8_t key[SP_PUBLIC_KEY_LEN]) {
  const sp_transport *tr = &s->node->tr;

  return tr->version >= 2 && tr->peer_key &&
         tr->peer_key(s->stream_id, key, tr->user_data) == 0;
}

/* Bind the record to the key `s` proved, once the transport knows it.  A
 * key other than the record's is another device under the same id (or
 * this one reinstalled): what the old key acknowledged says nothing about
 * the new key's log, so the record starts over. */
static void bind_key(sp_session *s) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_frec *r = s->rec;
  char id[SP_UUID_STRING_LEN + 1];

  if (l->has_key || !r || !stream_key(s, l->key)) {
    return;
  }
  l->has_key = 1;
  if (r->has_key && memcmp(r->key, l->key, SP_PUBLIC_KEY_LEN) == 0) {
    return;
  }
  if (r->has_key) {
    sp_hlog(h, &r->device, SP_LOG_WARN,
            "follower %s proves another key: its acknowledgements start over",
            sp_uuid_format(&r->device, id));
    r->acked = 0;
    r->has_acked = 0;
    r->saved = 0;
    memcpy(r->key, l->key, SP_PUBLIC_KEY_LEN);
    /* Forget the old key's kept position too (sequence 0: nothing). */
    if (can_keep(h)) {
      static const uint8_t none[SP_HASH_LEN];
      if (h->store.save_follower_ack(&r->device, r->key, 0, none,
                                     h->store.user_data) != 0) {
        sp_hlog(h, &r->device, SP_LOG_WARN, "keeping a follower key failed");
      }
    }
    return;
  }
  /* First key for the record: what it holds (a position kept without a
   * key) is now kept under this key, or the next leader would find the
   * row keyless and this key's acks, equal to it, never saved. */
  memcpy(r->key, l->key, SP_PUBLIC_KEY_LEN);
  r->has_key = 1;
  r->saved = 0;
  keep_ack(h, r, 1);
}

int sp_leader_key_refused(sp_handler *h, sp_session *s) {
  sp_frec *r = sp_leader_frec(h, &s->peer, 0);
  sp_session *live = r ? r->session : NULL;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  char id[SP_UUID_STRING_LEN + 1];

  if (!live || live == s || live->dead || !stream_key(s, key)) {
    return 0;
  }
  bind_key(live);
  if (!live->u.l.has_key ||
      memcmp(live->u.l.key, key, SP_PUBLIC_KEY_LEN) == 0) {
    return 0;
  }
  sp_session_refuse(s, SP_ERR_DUPLICATE_DEVICE,
                    "device %s is connected with another key",
                    sp_uuid_format(&s->peer, id));
  return 1;
}

/* ---- sessions ---- */

int sp_leader_attach(sp_session *s) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_frec *r;

  memset(l, 0, sizeof(*l));
  l->queue = sp_calloc(&h->node->mem, QCAP(h), sizeof(*l->queue));
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
  sp_leadership_remember(s); /* an incoming stream's first frame */
  bind_key(s);
  sp_leader_remember_address(s);
  return 0;
}

void sp_leader_detach(sp_session *s) {
  sp_handler *h = hof(s);
  sp_frec *r = s->rec;

  sp_free(&h->node->mem, s->u.l.queue);
  s->u.l.queue = NULL;
  if (r && r->session == s) {
    keep_ack(h, r, 1); /* what the catch-up interval held back */
    r->session = NULL;
    if (r->dial_backoff < h->cfg.reconnect_min) {
      r->dial_backoff = h->cfg.reconnect_min;
    }
    r->dial_at = h->node->now + r->dial_backoff;
    if (r->dial_at < h->dial_min) {
      h->dial_min = r->dial_at;
    }
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
  /* The same news again (a follower's opening Heartbeat and its resume
   * fetch both stand ahead): told once per stream. */
  int repeat = l->sync_told == reason && l->sync_told_seq == follower_seq;

  l->qlen = 0;
  l->head_own = 0;
  /* It stops fetching: announcing entries to it would be noise, and
   * pushing them would be refused again at once, forever. */
  l->announced = h->bounds.latest;
  l->follower_current = 0;
  if (repeat) {
    return;
  }
  l->sync_told = reason;
  l->sync_told_seq = follower_seq;
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
  /* An open snapshot's S is served whatever the cap: that is where its
   * follower verifies and resumes. */
  if (h->cfg.retention_cap && h->bounds.latest - since > h->cfg.retention_cap &&
      !sp_snap_serve_pins(h, since)) {
    return SP_SYNC_RETENTION_CAP;
  }
  return 0;
}

static int own_row_corrupt(sp_handler *h, sp_seq seq);
static void report_corrupt(sp_session *s, sp_seq seq);

/* Queue one page from `since` ahead of the follower's requests. */
static void resend_from(sp_session *s, sp_seq since, sp_seq end) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_range *head;

  if (l->head_own == 0) {
    l->qhead = (l->qhead + QCAP(h) - 1) % QCAP(h);
    l->qlen++;
    head = &l->queue[l->qhead];
    head->cur = since;
    head->end = end;
  } else {
    /* A push turns into it; several become one, from the lowest. */
    head = &l->queue[l->qhead];
    if (l->head_own == OWN_PUSH || since < head->cur) {
      head->cur = since;
    }
    if (head->end < end) {
      head->end = end;
    }
  }
  l->head_own = OWN_RESEND;
}

/* The follower advertised features, in a Heartbeat or a FetchEntries
 * (whichever came first; later ones change nothing): the stream has
 * those it advertised and this leader has too (writes: a store that can
 * append them; snapshots: a source; claims: always, and our Heartbeats
 * carry our claim from then on); then one Heartbeat with our features
 * (and its origin_high) answers, ahead of any page not yet built. */
static void negotiate(sp_session *s, uint64_t peer) {
  uint64_t both = peer & sp_handler_local_features(hof(s));

  if (s->features || both == 0) {
    return;
  }
  s->features = both;
  s->features_pending = 1;
}

static void on_fetch(sp_session *s, const sp_msg_fetch_entries *m) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_sync_reason why;
  sp_range *slot;
  sp_seq end;

  /* Before anything is served: a follower whose features Heartbeat was
   * lost still gets the origins on every page it fetches. */
  if (m->has_features) {
    negotiate(s, m->features);
  }
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
    if (rv == 0 && memcmp(mine, m->since_hash, SP_HASH_LEN) != 0 &&
        own_row_corrupt(h, m->since_sequence)) {
      /* Our stored hash rotted, not the follower's log. */
      report_corrupt(s, m->since_sequence);
      return;
    }
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
  if (m->since_hash_len == SP_HASH_LEN && s->rec && !l->snap_active) {
    /* A resume point the chain vouches for is the follower's durable
     * position: count it as an acknowledgement.  Not on a stream that
     * asked for a snapshot: its fetch since S checks a snapshot not yet
     * installed. */
    credit(h, s->rec, m->since_sequence);
    l->acked = m->since_sequence;
    l->has_acked = 1;
    sp_waits_check(h);
  }
  l->notify_outstanding = 0;
  end = m->since_sequence + m->limit < m->since_sequence
            ? UINT64_MAX
            : m->since_sequence + m->limit;
  if (end <= l->sent_through) {
    /* It crossed pages already sent, which end it on the follower's side
     * too when they arrive: it takes no slot, or the two would count
     * differently. */
    return;
  }
  if (m->since_sequence < l->done_through) {
    /* It crossed a page saying has_more = false, which ended it on the
     * follower's side: no slot.  It still gets one page from its start
     * (one for any number of them), in case what it crossed never
     * arrived. */
    resend_from(s, m->since_sequence, end);
    return;
  }
  if (l->head_own == OWN_PUSH) {
    /* The follower's requests take over what the push had left. */
    l->qlen = 0;
    l->head_own = 0;
  }
  if (l->qlen - (l->head_own ? 1u : 0u) == h->cfg.max_queued_fetches) {
    sp_session_refuse(s, SP_ERR_TOO_MANY_REQUESTS,
                      "more than %u fetches queued", h->cfg.max_queued_fetches);
    return;
  }
  l->follower_current = 0;
  slot = &l->queue[(l->qhead + l->qlen++) % QCAP(h)];
  slot->cur = m->since_sequence;
  slot->end = end;
}

static void on_ack(sp_session *s, sp_seq up_to) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;
  sp_event ev = {0};
  sp_follower_progress progress;

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
    credit(h, s->rec, up_to);
    keep_ack(h, s->rec, 0);
    progress_of(h, s->rec, h->node->now, &progress);
    ev.progress = &progress;
  }
  sp_emit_simple(h, SP_EVENT_ACK_RECEIVED, &s->peer, &ev);
  sp_waits_check(h);
}

/* Another device claims to lead this library, at our epoch or below (a
 * higher one was judged before: sp_leadership_judge). */
static void on_other_leader(sp_session *s, const sp_msg *msg) {
  sp_handler *h = hof(s);
  sp_event ev = {0};

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

  /* A stream we opened learns its key once connected.  (An epoch above
   * ours never gets here: sp_leadership_judge deposed us or refused it.) */
  bind_key(s);
  switch (msg->type) {
  case SP_MSG_FETCH_ENTRIES:
    on_fetch(s, &msg->u.fetch_entries);
    break;
  case SP_MSG_ACKNOWLEDGE:
    on_ack(s, msg->u.acknowledge.up_to_sequence);
    break;
  case SP_MSG_PROPOSE:
    sp_admit_on_propose(s, &msg->u.propose);
    break;
  case SP_MSG_SNAPSHOT_REQUEST:
    sp_snap_serve_on_request(s, &msg->u.snapshot_request);
    break;
  case SP_MSG_SNAPSHOT_FETCH:
    sp_snap_serve_on_fetch(s, &msg->u.snapshot_fetch);
    break;
  case SP_MSG_HEARTBEAT:
    if (msg->u.heartbeat.role == SP_ROLE_LEADER) {
      on_other_leader(s, msg);
      break;
    }
    if (msg->u.heartbeat.has_features) {
      negotiate(s, msg->u.heartbeat.features);
    }
    if (msg->u.heartbeat.current_sequence > h->bounds.latest) {
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

typedef struct page_ctx {
  msgpack_packer *pk;
  size_t body_start; /* offset of the body from out.off */
  sp_buf *out;
  size_t budget;
  size_t max_frame;
  /* The follower negotiated writes: entries carry origin_seq. */
  int with_origin;
  size_t count;
  sp_seq last_seq;
  uint8_t last_hash[SP_HASH_LEN];
  int stopped;
  int too_big;
  /* The link before the next entry, as the chain computes it (not as the
   * store claims it), when known. */
  uint8_t link[SP_HASH_LEN];
  int have_link;
  /* The store vouches for its rows (SP_STORE_ROWS_VOUCHED): take each
   * stored hash as the link, computing nothing. */
  int vouched;
  /* Sequence of the first entry the store fed (0: none). */
  sp_seq first_seq;
  /* First entry whose stored hash does not verify (0: none). */
  sp_seq corrupt_seq;
} page_ctx;

/* A stored row is served only if it still matches its chain hash: the
 * store is the leader's own, and a follower would otherwise take the
 * leader's rot for its own divergence. */
static int page_verify(page_ctx *c, const sp_entry *e,
                       const uint8_t hash[SP_HASH_LEN]) {
  uint8_t link[SP_HASH_LEN];

  if (!c->have_link || c->vouched) {
    /* After a gap the page starts in, the link before is not stored:
     * take the row's own; the follower's chain still checks it.  A
     * vouched row cannot have rotted: its store chained it from the
     * bytes it holds in memory, so it costs no second hash (a third of
     * the leader's CPU per entry in the throughput benchmark). */
    memcpy(c->link, hash, SP_HASH_LEN);
    c->have_link = 1;
    return 0;
  }
  if (sp_chain_link(c->link, e, link) != 0 ||
      memcmp(link, hash, SP_HASH_LEN) != 0) {
    return -1;
  }
  memcpy(c->link, link, SP_HASH_LEN);
  return 0;
}

static int page_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                     void *arg) {
  page_ctx *c = arg;
  size_t body = sp_buf_pending(c->out) - c->body_start;
  size_t need = body + sp_enc_entry_len(e, c->with_origin) + PAGE_TAIL_MAX;

  if (c->first_seq == 0) {
    c->first_seq = e->sequence;
  }
  if (need > c->max_frame) {
    c->too_big = c->count == 0;
    c->stopped = 1;
    return SP_SINK_STOP;
  }
  if (c->count > 0 && need > c->budget) {
    c->stopped = 1;
    return SP_SINK_STOP;
  }
  /* A row that no longer decodes rotted as much as one whose hash fails. */
  if (sp_enc_check_entry(e) != 0 || page_verify(c, e, hash) != 0) {
    c->corrupt_seq = e->sequence;
    c->stopped = 1;
    return SP_SINK_STOP;
  }
  if (sp_enc_entry_wire(c->pk, e, c->with_origin) != 0) {
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

/* The leader's own log is corrupt at `seq`: tell the host (not again for
 * the row last reported: every follower will meet it), and refuse the follower with the leader's
 * reason.  A SyncRequired would send it to copy the corruption.  The
 * session may be closed (and its queue freed) on return. */
static void report_corrupt(sp_session *s, sp_seq seq) {
  sp_handler *h = hof(s);

  if (h->corrupt_reported != seq) {
    sp_event ev = {0};
    h->corrupt_reported = seq;
    ev.error_code = SP_ERR_STORE_CORRUPT;
    ev.to_sequence = seq;
    ev.message = "stored row does not match its chain hash";
    sp_emit_simple(h, SP_EVENT_LOG_CORRUPT, NULL, &ev);
    sp_slog(s, SP_LOG_ERROR, "log corrupt at %llu: not served",
            (unsigned long long)seq);
  }
  sp_session_refuse(s, SP_ERR_STORE_CORRUPT, "leader's log is corrupt at %llu",
                    (unsigned long long)seq);
}

/* Drop the page being built, then report_corrupt. */
static int page_corrupt(sp_session *s, size_t frame_rel, sp_seq seq) {
  s->out.len = s->out.off + frame_rel;
  report_corrupt(s, seq);
  return 1;
}

static int row_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                    void *arg) {
  page_ctx *c = arg;

  c->first_seq = e->sequence;
  if (sp_enc_check_entry(e) != 0 || page_verify(c, e, hash) != 0) {
    c->corrupt_seq = e->sequence;
  }
  return SP_SINK_STOP;
}

/* 1 if the leader's stored row `seq` does not chain from the row before
 * it: its content or its stored hash rotted.  0 if it chains, or if that
 * cannot be told (no link kept before it, a store error). */
static int own_row_corrupt(sp_handler *h, sp_seq seq) {
  page_ctx c;

  if (seq == 0) {
    return 0;
  }
  memset(&c, 0, sizeof(c));
  c.vouched = (h->store.flags & SP_STORE_ROWS_VOUCHED) != 0;
  if (h->store.hash_at(seq - 1, c.link, h->store.user_data) != 0) {
    return 0;
  }
  c.have_link = 1;
  if (h->store.read(seq - 1, seq, 1, row_sink, &c, h->store.user_data) < 0) {
    return 0;
  }
  return c.first_seq == seq && c.corrupt_seq == seq;
}

/* Bounds and rows are separate store calls: a prune between them (or
 * during the read) takes rows out of the page.  Judge a page that does
 * not start right after `cur`, or that met a link that does not verify,
 * only after reading the bounds again: a prune past `cur` explains it,
 * and the follower is behind retention, not diverged. */
static int pruned_under_read(sp_handler *h, sp_seq cur, const page_ctx *c,
                             int *pruned) {
  *pruned = 0;
  if (c->first_seq == cur + 1 && c->corrupt_seq == 0) {
    return 0;
  }
  if (refresh_bounds(h) != 0) {
    return SP_ERR_STORE;
  }
  *pruned = cur < h->bounds.pruned_through;
  return 0;
}

/* The follower's side of this is on_page's: a request ends when a page
 * (pushed or not) reaches its end, and every one ends with a page saying
 * has_more = false. */
static void retire_requests(sp_session *s, sp_seq through, int has_more) {
  sp_handler *h = hof(s);
  sp_lsess *l = &s->u.l;

  if (!has_more) {
    l->qlen = 0;
    l->done_through = through;
  } else if (l->head_own == OWN_RESEND) {
    /* One page, whatever it reached. */
    l->qhead = (l->qhead + 1) % QCAP(h);
    l->qlen--;
    l->head_own = 0;
  }
  while (l->qlen > 0 && l->queue[l->qhead].end <= through) {
    l->qhead = (l->qhead + 1) % QCAP(h);
    l->qlen--;
    l->head_own = 0;
  }
  if (l->qlen == 0) {
    l->head_own = 0;
  }
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
  c.with_origin = (s->features & SP_FEATURE_WRITES) != 0;
  c.vouched = (h->store.flags & SP_STORE_ROWS_VOUCHED) != 0;
  if (sp_enc_response_head(&pk, &h->cfg.library_id, h->epoch, r->cur,
                           &count_off) != 0) {
    return page_failed(s, frame_rel, SP_ERR_NOMEM, "out of memory");
  }
  width = end > r->cur ? (size_t)(end - r->cur) : 0;
  if (width > 0) {
    int pruned;
    /* Only a check needs the link before the page. */
    rv = c.vouched ? SP_ERR_NOT_FOUND
                   : h->store.hash_at(r->cur, c.link, h->store.user_data);
    if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
      return page_failed(s, frame_rel, SP_ERR_STORE, "store hash_at failed");
    }
    c.have_link = rv == 0;
    rv = h->store.read(r->cur, end, width, page_sink, &c, h->store.user_data);
    if (rv == SP_ERR_STORE_CORRUPT) {
      /* The store could not decode the row after the last it fed: the
       * page ends before it, and that row is the corruption. */
      c.corrupt_seq = (c.count ? c.last_seq : r->cur) + 1;
      c.stopped = 1;
      rv = 0;
    }
    if (rv < 0) {
      return page_failed(s, frame_rel,
                         rv == SP_ERR_NOMEM ? rv : SP_ERR_STORE,
                         "store read failed");
    }
    if (pruned_under_read(h, r->cur, &c, &pruned) != 0) {
      return page_failed(s, frame_rel, SP_ERR_STORE, "store bounds failed");
    }
    if (pruned) {
      s->out.len = s->out.off + frame_rel;
      queue_sync_required(s, SP_SYNC_BEHIND_RETENTION, r->cur);
      return 1;
    }
    if (c.corrupt_seq && c.count == 0) {
      return page_corrupt(s, frame_rel, c.corrupt_seq);
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
  retire_requests(s, through, has_more);
  if (l->sent_through < through) {
    l->sent_through = through;
  }
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
  /* The follower holds what was sent: a request that pages sent already
   * cover is over (a peer may send ranges out of order), and the rest
   * start where it stands, so that no page is all duplicates. */
  if (l->head_own != OWN_RESEND) {
    retire_requests(s, l->sent_through, 1);
  }
  if (l->qlen > 0) {
    sp_range *r = &l->queue[l->qhead];
    if (l->head_own == OWN_RESEND && r->cur < h->bounds.pruned_through) {
      r->cur = h->bounds.pruned_through; /* the follower is past it */
    }
    if (r->cur < l->sent_through && l->head_own != OWN_RESEND) {
      r->cur = l->sent_through;
    }
    return serve_page(s);
  }
  if (sp_snap_serve_next_frame(s)) {
    return 1;
  }
  if (h->cfg.push_inline && l->follower_current &&
      h->bounds.latest > l->sent_through) {
    /* The follower holds everything up to sent_through: the new entries
     * go out as a page it will apply on arrival. */
    l->queue[l->qhead].cur = l->sent_through;
    l->queue[l->qhead].end = h->bounds.latest;
    l->qlen = 1;
    l->head_own = OWN_PUSH;
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

static void schedule_members(sp_handler *h) {
  sp_duration iv = h->cfg.registry_refresh_interval;

  h->members_at = iv && h->node->now <= SP_TSTAMP_MAX - iv
                      ? h->node->now + iv
                      : SP_TSTAMP_MAX;
}

int sp_leader_start(sp_handler *h) {
  int rv;

  /* Before the term's first bounds: what this device submitted as a
   * follower and no leader committed joins the log now, ahead of
   * anything its host submits in the term. */
  sp_admit_drain_at_start(h);
  rv = refresh_bounds(h);
  if (rv == 0) {
    rv = sp_snap_serve_start(h);
  }
  if (rv != 0) {
    return rv;
  }
  /* A term starts with what followers acknowledge in it: figures from an
   * earlier term (leader -> follower -> leader) may stand for entries this
   * log no longer holds, and would feed its retention floor and waits.
   * Every record starts afresh, due to be dialled now.  Unlike the term's
   * live acks, a kept position is a fact about the follower's own log,
   * checked against this log's chain on load (refresh_members). */
  h->nfrecs = 0;
  sp_index_clear(&h->frec_ix);
  keep_reset(h);
  schedule_members(h);
  rv = refresh_members(h);
  if (rv == 0) {
    sp_leader_hint_addresses(h);
  }
  return rv;
}

void sp_leader_stop(sp_handler *h) {
  sp_admit_drain_stop(h);
  sp_snap_serve_stop(h, 1);
  while (h->sessions) {
    sp_session_close(h->sessions, 0);
  }
  keep_reset(h);
  sp_waits_cancel_all(h);
}

static void dial(sp_handler *h, sp_frec *r) {
  sp_node *node = h->node;
  sp_session *s;
  uint64_t id;
  int rv;

  rv = node->tr.open_stream(&r->device, &h->cfg.library_id, &id,
                            node->tr.user_data);
  sp_hlog(h, &r->device, SP_LOG_DEBUG, "dialing follower: %s",
          rv ? sp_err_name(rv) : "stream opened");
  if (rv == 0) {
    rv = sp_session_new_local(&s, h, id, &r->device);
    if (rv == 0) {
      s->hello_pending = 1;
      sp_leadership_open(s);
      sp_session_pump(s);
    } else {
      sp_node_set_fatal(node, rv);
    }
  }
  /* Whatever happened, the next attempt waits a little longer; a stream
   * that works resets the backoff when the follower acknowledges progress
   * (a stream that connects and then fails does not). */
  r->dial_at = sp_handler_backoff(h, &r->dial_backoff);
}

/* With a thousand followers connected, walking their records on every
 * timer would cost more than serving them: the walk waits for dial_min. */
static void dial_due(sp_handler *h, sp_tstamp now) {
  sp_tstamp next = SP_TSTAMP_MAX;
  size_t i;

  if (h->dial_min > now) {
    return;
  }
  for (i = 0; i < h->nfrecs && !h->stepped_down; ++i) {
    sp_frec *r = &h->frecs[i];
    h->node->visits++;
    if (r->registered && !r->session && r->dial_at <= now) {
      dial(h, r);
    }
    if (r->registered && !r->session && r->dial_at < next) {
      next = r->dial_at;
    }
  }
  /* Stepped down, the walk stopped early: it is done again (no expiry
   * is asked then). */
  h->dial_min = h->stepped_down ? 0 : next;
}

void sp_leader_expire(sp_handler *h, sp_tstamp now) {
  sp_waits_expire(h, now);
  if (!h->stepped_down && h->members_at <= now) {
    int rv;
    schedule_members(h);
    rv = refresh_members(h);
    if (rv != 0) {
      /* The last list read stays in force until the next try. */
      sp_hlog(h, NULL, SP_LOG_WARN, "registry members: %s", sp_err_name(rv));
    }
  }
  sp_admit_drain_expire(h, now);
  if (!h->stepped_down) {
    sp_snap_serve_expire(h, now);
    keep_due(h, now);
  }
  dial_due(h, now);
}

sp_tstamp sp_leader_expiry(const sp_handler *h) {
  sp_tstamp t = sp_waits_expiry(h);

  if (h->stepped_down) {
    return t;
  }
  if (h->members_at < t) {
    t = h->members_at;
  }
  if (sp_admit_drain_expiry(h) < t) {
    t = sp_admit_drain_expiry(h);
  }
  if (sp_snap_serve_expiry(h) < t) {
    t = sp_snap_serve_expiry(h);
  }
  if (h->nkeeps > 0 && h->keep_at < t) {
    t = h->keep_at;
  }
  return h->dial_min < t ? h->dial_min : t;
}

/* ---- public leader API ---- */

int sp_leader_announce(sp_handler *h) {
  sp_session *s, *next;
  int rv = refresh_bounds(h);

  if (rv == 0) {
    for (s = h->sessions; s; s = next) {
      next = s->hnext;
      sp_session_pump(s);
    }
  }
  sp_waits_check(h);
  return rv;
}

int sp_handler_notify_new_entries(sp_handler *h, sp_seq from, sp_seq to,
                                  sp_tstamp now) {
  int rv;

  if (!h || from > to) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return SP_ERR_INVALID_STATE;
  }
  h->node->now = now;
  rv = sp_leader_announce(h);
  {
    int fatal = sp_node_reap(h->node);
    return fatal ? fatal : rv;
  }
}

int sp_handler_registry_changed(sp_handler *h, sp_tstamp now) {
  int rv, fatal;

  if (!h) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h->node->now = now;
  /* Every role: a claim held to relay or to show who deposed us. */
  sp_leadership_recheck(h);
  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return 0;
  }
  rv = refresh_members(h);
  if (rv == 0) {
    schedule_members(h);
    dial_due(h, now);
  }
  fatal = sp_node_reap(h->node);
  return fatal ? fatal : rv;
}

/* Version 2 of the struct must add its size and stride (a frozen copy of
 * version 1's layout) here. */
_Static_assert(SP_FOLLOWER_PROGRESS_VERSION == 1,
               "sp_follower_progress sizes");
#define PROGRESS_V1_END SP_ABI_END(sp_follower_progress, since_last_ack)
#define PROGRESS_V1_STRIDE sizeof(sp_follower_progress)

int sp_handler_follower_progress_versioned(sp_handler *h,
                                           const sp_uuid *device,
                                           sp_tstamp now, int version,
                                           sp_follower_progress *out) {
  sp_follower_progress full;
  const sp_frec *r;

  if (!h || !device || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  if (h->role != SP_ROLE_LEADER) {
    return SP_ERR_INVALID_STATE;
  }
  r = sp_leader_frec(h, device, 0);
  if (!r) {
    return SP_ERR_NOT_FOUND;
  }
  progress_of(h, r, now, &full);
  sp_abi_copy(out, &full, PROGRESS_V1_END);
  return 0;
}

sp_ssize sp_handler_list_followers_versioned(sp_handler *h, int version,
                                             sp_follower_progress *out,
                                             size_t cap, sp_tstamp now) {
  sp_follower_progress full;
  size_t i;

  if (!h || (!out && cap)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  if (h->role != SP_ROLE_LEADER) {
    return SP_ERR_INVALID_STATE;
  }
  /* The caller's array has its version's stride, not ours. */
  for (i = 0; i < h->nfrecs && i < cap; ++i) {
    progress_of(h, &h->frecs[i], now, &full);
    sp_abi_copy((unsigned char *)out + i * PROGRESS_V1_STRIDE, &full,
                PROGRESS_V1_END);
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
  /* S's link stays while a follower may still install and verify it. */
  if (sp_snap_serve_floor(h) < f) {
    f = sp_snap_serve_floor(h);
  }
  *floor = f;
  return 0;
}
