/*
 * sp_node.c: one device.  Owns the handlers and every stream's session,
 * routes transport calls to sessions, aggregates timers.
 *
 * Every public entry point stores `now`, does its work, then calls
 * sp_node_reap, which frees the sessions that ended during the call and
 * returns the first fatal error met.
 */
#include <stddef.h>
#include <string.h>

#include "sync_protocol/identity.h"
#include "sp_codec_int.h"
#include "sp_core.h"
#include "sp_mem_int.h"

void sp_node_config_default(sp_node_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->version = SP_NODE_CONFIG_VERSION;
  cfg->max_frame = SP_MAX_FRAME_DEFAULT;
}

int sp_node_new(sp_node **pnode, const sp_node_config *cfg,
                const sp_registry *registry, const sp_events *events,
                const sp_transport *transport, const sp_mem *mem) {
  sp_mem m;
  sp_node *node;
  int rv;

  if (pnode) {
    *pnode = NULL;
  }
  if (!pnode || !cfg || !registry || !transport) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (cfg->version == 0 || cfg->version > SP_NODE_CONFIG_VERSION ||
      registry->version == 0 || registry->version > SP_REGISTRY_VERSION ||
      transport->version == 0 || transport->version > SP_TRANSPORT_VERSION ||
      (events &&
       (events->version == 0 || events->version > SP_EVENTS_VERSION))) {
    return SP_ERR_VERSION;
  }
  if (cfg->max_frame > SP_MAX_FRAME_LIMIT || !registry->is_member ||
      !registry->leader || !registry->members || !transport->open_stream ||
      !transport->send || !transport->close_stream) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* Claims signed with another device's key would prove nothing. */
  if (cfg->version >= 2 && cfg->identity &&
      !sp_uuid_equal(sp_identity_device_id(cfg->identity), &cfg->device_id)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&m, mem);
  node = sp_calloc(&m, 1, sizeof(*node));
  if (!node) {
    return SP_ERR_NOMEM;
  }
  node->mem = m;
  /* A version-1 config is a shorter struct (no identity). */
  memcpy(&node->cfg, cfg,
         cfg->version >= 2 ? sizeof(*cfg)
                           : offsetof(sp_node_config, identity));
  if (node->cfg.max_frame == 0) {
    node->cfg.max_frame = SP_MAX_FRAME_DEFAULT;
  }
  /* An older registry is a shorter struct (version 1: no can_write,
   * 2: no may_lead); the calloc left the later callbacks NULL. */
  memcpy(&node->reg, registry,
         registry->version >= 3   ? sizeof(*registry)
         : registry->version == 2 ? offsetof(sp_registry, may_lead)
                                  : offsetof(sp_registry, can_write));
  if (events) {
    node->ev = *events;
  }
  /* A version-1 transport is a shorter struct: copy only what it has
   * (the calloc left peer_key NULL). */
  memcpy(&node->tr, transport,
         transport->version >= 2 ? sizeof(*transport)
                                 : offsetof(sp_transport, peer_key));
  sp_rand_seed(&node->rng, cfg->seed);
  rv = sp_decoder_new(&node->dec, &node->mem);
  if (rv != 0) {
    sp_free(&m, node);
    return rv;
  }
  *pnode = node;
  return 0;
}

void sp_node_del(sp_node *node) {
  sp_session *s;

  if (!node) {
    return;
  }
  while (node->handlers) {
    sp_handler_del(node->handlers);
  }
  for (s = node->sessions; s; s = s->next) {
    sp_session_close(s, 0);
  }
  sp_node_reap(node);
  sp_index_free(&node->streams, &node->mem);
  sp_index_free(&node->peers, &node->mem);
  sp_free(&node->mem, node->timers);
  sp_decoder_del(node->dec);
  sp_free(&node->mem, node->members);
  sp_free(&node->mem, node);
}

void sp_node_set_fatal(sp_node *node, int code) {
  if (!node->fatal) {
    node->fatal = code;
  }
}

/* ---- session timers ----
 *
 * A leader with thousands of streams has one of them due every few
 * milliseconds: walking them all on every timer would cost more than
 * serving them.  The indexed sessions sit in a min-heap keyed by a lower
 * bound of their expiry: a session's expiry only moves later (it sends or
 * hears a frame, it is blocked, it dies) except when it is routed or
 * unblocked, which happens in sp_node_stream_data / _writable, where it
 * is keyed again.  A follower's sessions (few, and their expiry moves with
 * the fetch pipeline) stay out of the heap: they are walked through their
 * handler. */

static int of_follower(const sp_session *s) {
  return s->handler && s->handler->role == SP_ROLE_FOLLOWER;
}

static void heap_set(sp_node *node, size_t i, sp_timer t) {
  node->timers[i] = t;
  t.s->tpos = i + 1;
}

/* Move the entry at `i` to its place. */
static void heap_fix(sp_node *node, size_t i) {
  sp_timer t = node->timers[i];
  size_t n = node->ntimers;

  while (i > 0 && node->timers[(i - 1) / 2].key > t.key) {
    heap_set(node, i, node->timers[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) {
      break;
    }
    if (c + 1 < n && node->timers[c + 1].key < node->timers[c].key) {
      ++c;
    }
    if (node->timers[c].key >= t.key) {
      break;
    }
    heap_set(node, i, node->timers[c]);
    i = c;
  }
  heap_set(node, i, t);
}

static void heap_remove(sp_node *node, sp_session *s) {
  size_t i = s->tpos - 1;
  sp_timer last = node->timers[--node->ntimers];

  s->tpos = 0;
  if (last.s != s) {
    heap_set(node, i, last);
    heap_fix(node, i);
  }
}

static int heap_reserve(sp_node *node, size_t more) {
  size_t cap = node->captimers;
  sp_timer *p;

  if (node->ntimers + more <= cap) {
    return 0;
  }
  while (cap < node->ntimers + more) {
    cap = cap ? cap * 2 : 16;
  }
  p = sp_realloc(&node->mem, node->timers, cap * sizeof(*p));
  if (!p) {
    return SP_ERR_NOMEM;
  }
  node->timers = p;
  node->captimers = cap;
  return 0;
}

/* Key `s` by its expiry now (an indexed session: in the heap or, a
 * follower's, out of it). */
static void rekey(sp_node *node, sp_session *s) {
  if (!s->indexed) {
    return;
  }
  if (s->dead || of_follower(s)) {
    if (s->tpos) {
      heap_remove(node, s);
    }
    return;
  }
  if (!s->tpos) {
    /* Room for every indexed session was reserved (index_new). */
    sp_timer t;
    t.key = 0;
    t.s = s;
    heap_set(node, node->ntimers++, t);
  }
  node->timers[s->tpos - 1].key = sp_session_expiry(s);
  heap_fix(node, s->tpos - 1);
}

/* Index the sessions created since the last call: they are the ones at
 * the head of the list, up to the first indexed.  All or none, so that
 * the unindexed ones stay a prefix of the list, which find_session and
 * the timers walk (without memory for the index they only get slower). */
static void index_new(sp_node *node) {
  sp_session *s, *prev = NULL;
  size_t n = 0;

  for (s = node->sessions; s && !s->indexed; s = s->next) {
    ++n;
  }
  if (n == 0 || sp_index_reserve(&node->streams, &node->mem, n) != 0 ||
      sp_index_reserve(&node->peers, &node->mem, n) != 0 ||
      heap_reserve(node, n) != 0) {
    return;
  }
  for (s = node->sessions; s && !s->indexed; s = s->next) {
    node->visits++;
    (void)sp_index_put(&node->streams, &node->mem,
                       sp_index_hash_u64(s->stream_id), (uintptr_t)s);
    (void)sp_index_put(&node->peers, &node->mem,
                       sp_index_hash_uuid(&s->peer), (uintptr_t)s);
    s->prev = prev;
    s->indexed = 1;
    rekey(node, s);
    prev = s;
  }
  if (s) {
    s->prev = prev;
  }
}

static void unindex(sp_node *node, sp_session *s) {
  if (s->indexed) {
    (void)sp_index_del(&node->streams, sp_index_hash_u64(s->stream_id),
                       (uintptr_t)s);
    (void)sp_index_del(&node->peers, sp_index_hash_uuid(&s->peer),
                       (uintptr_t)s);
  }
  if (s->tpos) {
    heap_remove(node, s);
  }
}

/* Free every dead session by walking the whole list: when the newest
 * could not be indexed (their `prev` is not set). */
static void reap_walk(sp_node *node) {
  sp_session **pp = &node->sessions, *prev = NULL;

  while (*pp) {
    sp_session *s = *pp;
    node->visits++;
    if (s->dead) {
      *pp = s->next;
      if (s->next) {
        s->next->prev = prev;
      }
      unindex(node, s);
      sp_session_free(s);
    } else {
      prev = s;
      pp = &s->next;
    }
  }
  node->dead = NULL;
}

int sp_node_reap(sp_node *node) {
  sp_session *s;
  int fatal;

  /* Every entry point ends here: a follower's store that applies
   * asynchronously is asked what became durable (one cheap call per such
   * handler), before the sessions its answer may close are freed. */
  sp_durable_poll_node(node);
  fatal = node->fatal;
  /* First, so that every session has its `prev`: a dead one is then
   * unlinked without walking the list. */
  index_new(node);
  if (node->dead && node->sessions && !node->sessions->indexed) {
    reap_walk(node);
  }
  while ((s = node->dead) != NULL) {
    node->dead = s->dnext;
    node->visits++;
    if (s->prev) {
      s->prev->next = s->next;
    } else {
      node->sessions = s->next;
    }
    if (s->next) {
      s->next->prev = s->prev;
    }
    unindex(node, s);
    sp_session_free(s);
  }
  node->fatal = 0;
  return fatal;
}

int sp_node_members(sp_node *node, const sp_uuid *lib, size_t *n) {
  for (;;) {
    size_t count = 0;
    int rv = node->reg.members(lib, node->members, node->capmembers, &count,
                               node->reg.user_data);
    sp_uuid *p;
    if (rv != 0) {
      return SP_ERR_REGISTRY;
    }
    if (count <= node->capmembers) {
      *n = count;
      return 0;
    }
    p = sp_realloc(&node->mem, node->members, count * sizeof(*p));
    if (!p) {
      sp_node_set_fatal(node, SP_ERR_NOMEM);
      return SP_ERR_NOMEM;
    }
    node->members = p;
    node->capmembers = count;
  }
}

sp_handler *sp_node_find_handler(sp_node *node, const sp_uuid *library) {
  sp_handler *h;

  if (!node || !library) {
    return NULL;
  }
  for (h = node->handlers; h; h = h->next) {
    if (sp_uuid_equal(&h->cfg.library_id, library)) {
      return h;
    }
  }
  return NULL;
}

/* The live session of stream `id`: among those not yet indexed (the
 * head of the list), then in the index.  *visits counts what it looked
 * at. */
static sp_session *find_in(const sp_node *node, uint64_t id,
                           uint64_t *visits) {
  sp_session *s;
  uint64_t hash = sp_index_hash_u64(id);
  size_t pos = 0;
  uintptr_t v;

  for (s = node->sessions; s && !s->indexed; s = s->next) {
    ++*visits;
    if (s->stream_id == id && !s->dead) {
      return s;
    }
  }
  while ((v = sp_index_next(&node->streams, hash, &pos, visits)) != 0) {
    s = (sp_session *)v;
    if (s->stream_id == id && !s->dead) {
      return s;
    }
  }
  return NULL;
}

static sp_session *find_session(sp_node *node, uint64_t id) {
  return find_in(node, id, &node->visits);
}

/* Look up a live stream whose authenticated peer is `peer`. */
static int lookup(sp_node *node, uint64_t id, const sp_uuid *peer,
                  sp_session **ps) {
  sp_session *s;

  if (!node || !peer) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  s = find_session(node, id);
  if (!s) {
    return SP_ERR_NOT_FOUND;
  }
  if (!sp_uuid_equal(&s->peer, peer)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *ps = s;
  return 0;
}

/* Incoming streams of `peer` still waiting for a first frame to route
 * them (refused ones read nothing more). */
static size_t unrouted(const sp_node *node, const sp_uuid *peer) {
  const sp_session *s;
  uint64_t hash = sp_index_hash_uuid(peer);
  size_t n = 0, pos = 0;
  uintptr_t v;

  for (s = node->sessions; s && !s->indexed; s = s->next) {
    n += !s->dead && !s->handler && !s->local && !s->refused &&
         sp_uuid_equal(&s->peer, peer);
  }
  while ((v = sp_index_next(&node->peers, hash, &pos, NULL)) != 0) {
    s = (const sp_session *)v;
    n += !s->dead && !s->handler && !s->local && !s->refused &&
         sp_uuid_equal(&s->peer, peer);
  }
  return n;
}

int sp_node_stream_opened(sp_node *node, uint64_t stream_id,
                          const sp_uuid *peer, sp_tstamp now) {
  sp_session *s;
  int rv;

  if (!node || !peer) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (find_session(node, stream_id)) {
    return SP_ERR_EXISTS;
  }
  if (unrouted(node, peer) >= SP_MAX_UNROUTED_PER_PEER) {
    return SP_ERR_TOO_MANY_REQUESTS;
  }
  node->now = now;
  rv = sp_session_new(&s, node, stream_id, peer, 0);
  if (rv != 0) {
    return rv;
  }
  return sp_node_reap(node);
}

int sp_node_stream_data(sp_node *node, uint64_t stream_id,
                        const sp_uuid *peer, const uint8_t *data, size_t len,
                        sp_tstamp now) {
  sp_session *s;
  int routed, rv = lookup(node, stream_id, peer, &s);

  if (rv != 0) {
    return rv;
  }
  if (!data && len) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  node->now = now;
  routed = s->handler != NULL;
  sp_session_input(s, data, len);
  if (!routed) {
    rekey(node, s); /* routed by its first frame: its expiry moved */
  }
  return sp_node_reap(node);
}

int sp_node_stream_held(const sp_node *node, uint64_t stream_id,
                        size_t *held, size_t *need) {
  const sp_session *s;
  uint64_t visits = 0;

  if (!node || !held || !need) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *held = *need = 0;
  s = find_in(node, stream_id, &visits);
  if (!s) {
    return SP_ERR_NOT_FOUND;
  }
  *held = sp_frame_reader_pending(s->reader);
  /* A refused stream reads nothing more: its frame never completes. */
  *need = s->refused ? 0 : sp_frame_reader_need(s->reader);
  return 0;
}

int sp_node_stream_writable(sp_node *node, uint64_t stream_id,
                            const sp_uuid *peer, sp_tstamp now) {
  sp_session *s;
  int blocked, rv = lookup(node, stream_id, peer, &s);

  if (rv != 0) {
    return rv;
  }
  node->now = now;
  blocked = s->blocked;
  s->blocked = 0;
  sp_session_pump(s);
  if (blocked) {
    rekey(node, s); /* its heartbeat counts again */
  }
  return sp_node_reap(node);
}

int sp_node_stream_closed(sp_node *node, uint64_t stream_id,
                          const sp_uuid *peer, int reason, sp_tstamp now) {
  sp_session *s;
  int rv = lookup(node, stream_id, peer, &s);

  if (rv != 0) {
    return rv;
  }
  node->now = now;
  s->transport_gone = 1;
  sp_session_close(s, reason);
  return sp_node_reap(node);
}

sp_tstamp sp_node_get_expiry(const sp_node *node) {
  sp_tstamp t = SP_TSTAMP_MAX, x;
  const sp_handler *h;
  const sp_session *s;

  for (h = node->handlers; h; h = h->next) {
    x = sp_handler_expiry(h);
    if (x < t) {
      t = x;
    }
    for (s = h->role == SP_ROLE_FOLLOWER ? h->sessions : NULL; s;
         s = s->hnext) {
      x = sp_session_expiry(s);
      if (x < t) {
        t = x;
      }
    }
  }
  for (s = node->sessions; s && !s->indexed; s = s->next) {
    x = sp_session_expiry(s);
    if (x < t) {
      t = x;
    }
  }
  if (node->ntimers > 0 && node->timers[0].key < t) {
    t = node->timers[0].key;
  }
  return t;
}

/* The heap's sessions whose key passed: each is keyed again by its
 * expiry, and expired first if that passed too.  Each at most once a
 * call (a session still due after expiring waits for the next call). */
static void expire_timers(sp_node *node, sp_tstamp now) {
  size_t guard = node->ntimers;
  sp_session *s;
  sp_tstamp t;

  while (node->ntimers > 0 && guard-- > 0) {
    if (node->timers[0].key > now) {
      break;
    }
    s = node->timers[0].s;
    node->visits++;
    if (!s->dead && !of_follower(s) && sp_session_expiry(s) <= now) {
      sp_session_expire(s, now);
    }
    if (s->dead || of_follower(s)) {
      heap_remove(node, s);
      continue;
    }
    t = sp_session_expiry(s);
    node->timers[s->tpos - 1].key = t > now ? t : now + 1;
    heap_fix(node, s->tpos - 1);
  }
}

int sp_node_handle_expiry(sp_node *node, sp_tstamp now) {
  sp_handler *h;
  sp_session *s, *next;

  if (!node) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  node->now = now;
  for (h = node->handlers; h; h = h->next) {
    sp_handler_expire(h, now);
  }
  /* Sessions created above sit at the head of the list; running their
   * timers too is harmless (nothing is due yet). */
  for (s = node->sessions; s && !s->indexed; s = s->next) {
    if (!s->dead && sp_session_expiry(s) <= now) {
      sp_session_expire(s, now);
    }
  }
  for (h = node->handlers; h; h = h->next) {
    for (s = h->role == SP_ROLE_FOLLOWER ? h->sessions : NULL; s; s = next) {
      next = s->hnext;
      if (s->indexed && !s->dead && sp_session_expiry(s) <= now) {
        sp_session_expire(s, now);
      }
    }
  }
  expire_timers(node, now);
  return sp_node_reap(node);
}
