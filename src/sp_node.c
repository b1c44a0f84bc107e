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
  sp_decoder_del(node->dec);
  sp_free(&node->mem, node->members);
  sp_free(&node->mem, node);
}

void sp_node_set_fatal(sp_node *node, int code) {
  if (!node->fatal) {
    node->fatal = code;
  }
}

int sp_node_reap(sp_node *node) {
  sp_session **pp = &node->sessions;
  int fatal = node->fatal;

  while (*pp) {
    sp_session *s = *pp;
    if (s->dead) {
      *pp = s->next;
      sp_session_free(s);
    } else {
      pp = &s->next;
    }
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

static sp_session *find_session(sp_node *node, uint64_t id) {
  sp_session *s;

  for (s = node->sessions; s; s = s->next) {
    if (s->stream_id == id && !s->dead) {
      return s;
    }
  }
  return NULL;
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
  size_t n = 0;

  for (s = node->sessions; s; s = s->next) {
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
  int rv = lookup(node, stream_id, peer, &s);

  if (rv != 0) {
    return rv;
  }
  if (!data && len) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  node->now = now;
  sp_session_input(s, data, len);
  return sp_node_reap(node);
}

int sp_node_stream_held(const sp_node *node, uint64_t stream_id,
                        size_t *held, size_t *need) {
  const sp_session *s;

  if (!node || !held || !need) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *held = *need = 0;
  for (s = node->sessions; s; s = s->next) {
    if (s->stream_id == stream_id && !s->dead) {
      *held = sp_frame_reader_pending(s->reader);
      /* A refused stream reads nothing more: its frame never completes. */
      *need = s->refused ? 0 : sp_frame_reader_need(s->reader);
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

int sp_node_stream_writable(sp_node *node, uint64_t stream_id,
                            const sp_uuid *peer, sp_tstamp now) {
  sp_session *s;
  int rv = lookup(node, stream_id, peer, &s);

  if (rv != 0) {
    return rv;
  }
  node->now = now;
  s->blocked = 0;
  sp_session_pump(s);
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
  }
  for (s = node->sessions; s; s = s->next) {
    x = sp_session_expiry(s);
    if (x < t) {
      t = x;
    }
  }
  return t;
}

int sp_node_handle_expiry(sp_node *node, sp_tstamp now) {
  sp_handler *h;
  sp_session *s;

  if (!node) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  node->now = now;
  for (h = node->handlers; h; h = h->next) {
    sp_handler_expire(h, now);
  }
  /* Sessions created above sit at the head of the list; running their
   * timers too is harmless (nothing is due yet). */
  for (s = node->sessions; s; s = s->next) {
    if (!s->dead && sp_session_expiry(s) <= now) {
      sp_session_expire(s, now);
    }
  }
  return sp_node_reap(node);
}
