/*
 * sp_session.c: one stream: frames in, frames out, liveness.
 *
 * Output is pulled, not pushed: a session generates its next frame only
 * when everything before it was taken by the transport.  So a session
 * holds at most one frame, a slow peer costs one frame of memory, and
 * coalescing (acks, notifications) happens by itself: whatever changed
 * while the stream was blocked goes out as one frame when it unblocks.
 */
#include <stdio.h>
#include <string.h>

#include "sp_codec_int.h"
#include "sp_core.h"
#include "sp_leadership.h"
#include "sp_mem_int.h"

/* An incoming stream must say which library it is for within this time. */
#define UNROUTED_TIMEOUT (30 * SP_SECONDS)

static size_t max_frame(const sp_node *node) {
  return node->cfg.max_frame ? node->cfg.max_frame : SP_MAX_FRAME_DEFAULT;
}

int sp_session_new(sp_session **ps, sp_node *node, uint64_t stream_id,
                   const sp_uuid *peer, int local) {
  sp_session *s = sp_calloc(&node->mem, 1, sizeof(*s));
  int rv;

  if (!s) {
    return SP_ERR_NOMEM;
  }
  rv = sp_frame_reader_new(&s->reader,
                           local || max_frame(node) < SP_UNROUTED_MAX_FRAME
                               ? max_frame(node)
                               : SP_UNROUTED_MAX_FRAME,
                           &node->mem);
  if (rv != 0) {
    sp_free(&node->mem, s);
    return rv;
  }
  s->node = node;
  s->stream_id = stream_id;
  s->peer = *peer;
  s->local = local ? 1u : 0u;
  s->last_recv = s->last_send = node->now;
  sp_buf_init(&s->out, &node->mem);
  s->next = node->sessions;
  node->sessions = s;
  *ps = s;
  return 0;
}

void sp_session_free(sp_session *s) {
  sp_frame_reader_del(s->reader);
  sp_buf_free(&s->out);
  sp_free(&s->node->mem, s);
}

int sp_session_new_local(sp_session **ps, sp_handler *h, uint64_t stream_id,
                         const sp_uuid *peer) {
  sp_node *node = h->node;
  int rv = sp_session_new(ps, node, stream_id, peer, 1);

  if (rv != 0) {
    node->tr.close_stream(stream_id, rv, node->tr.user_data);
    return rv;
  }
  rv = sp_session_attach(*ps, h);
  if (rv != 0) {
    sp_session_close(*ps, rv);
  }
  return rv;
}

int sp_session_attach(sp_session *s, sp_handler *h) {
  int rv;

  s->handler = h;
  s->lib = h->cfg.library_id;
  rv = h->role == SP_ROLE_LEADER ? sp_leader_attach(s) : sp_follower_attach(s);
  if (rv != 0) {
    s->handler = NULL;
    return rv;
  }
  s->hprev = NULL;
  s->hnext = h->sessions;
  if (h->sessions) {
    h->sessions->hprev = s;
  }
  h->sessions = s;
  /* Routed: frames of the node's full size from now on. */
  sp_frame_reader_set_max(s->reader, max_frame(s->node));
  return 0;
}

/* Doubly linked: a leader with thousands of streams closes one every
 * few milliseconds. */
static void unlink_from_handler(sp_session *s) {
  if (s->hprev) {
    s->hprev->hnext = s->hnext;
  } else if (s->handler->sessions == s) {
    s->handler->sessions = s->hnext;
  }
  if (s->hnext) {
    s->hnext->hprev = s->hprev;
  }
  s->hnext = s->hprev = NULL;
}

/* The code the transport closes the stream with.  A clean close (0)
 * promises the peer whole frames up to the stream's end, which holds only
 * when every queued byte was handed over: otherwise the peer would read a
 * frame cut short (the transport may already hold part of it).  A stream
 * being refused keeps its refusal's code whatever closes it. */
static int wire_code(const sp_session *s, int code) {
  if (code != 0) {
    return code;
  }
  if (s->close_after && s->close_code != 0) {
    return s->close_code;
  }
  return sp_buf_pending(&s->out) > 0 ? SP_ERR_CLOSED : 0;
}

void sp_session_close(sp_session *s, int code) {
  sp_handler *h = s->handler;
  sp_node *node = s->node;

  if (s->dead) {
    return;
  }
  s->dead = 1;
  s->dnext = node->dead; /* freed by sp_node_reap */
  node->dead = s;
  if (!s->transport_gone) {
    node->tr.close_stream(s->stream_id, wire_code(s, code),
                          node->tr.user_data);
  }
  if (!h) {
    return;
  }
  if (h->role == SP_ROLE_LEADER) {
    sp_leader_detach(s);
  } else {
    sp_follower_detach(s);
  }
  unlink_from_handler(s);
  s->handler = NULL;
  if (s->connected_event) {
    sp_event ev = {0};
    ev.error_code = code;
    sp_emit_simple(h, SP_EVENT_PEER_LOST, &s->peer, &ev);
  } else if (s->local && !s->heard && code != 0) {
    /* Never got through (unreachable, handshake refused...): the host
     * hears of it, or it could not tell "down" from "connecting". */
    sp_event ev = {0};
    ev.error_code = code;
    ev.message = code == SP_ERR_UNKNOWN_KEY
                     ? "key refused in the handshake, by the peer or by us "
                       "(the transport's log names address and keys)"
                 : code == SP_ERR_HANDSHAKE || code == SP_ERR_ALPN
                     ? "the handshake with the peer failed"
                     : "could not reach the peer";
    sp_emit_simple(h, SP_EVENT_ERROR, &s->peer, &ev);
  }
}

/* The library id and epoch every frame on this stream carries. */
static void stamp(const sp_session *s, sp_msg *msg) {
  const sp_handler *h = s->handler;

  msg->library_id = s->lib;
  msg->epoch = 0;
  if (h) {
    msg->epoch = h->role == SP_ROLE_LEADER ? h->epoch : h->st.epoch;
  }
}

int sp_session_queue(sp_session *s, sp_msg *msg) {
  int rv;

  stamp(s, msg);
  /* Entries carry their origin element only to a peer that advertised
   * writes; to any other they are the seed's bytes. */
  msg->with_origin = (s->features & SP_FEATURE_WRITES) != 0;
  rv = sp_codec_append_frame(&s->out, msg, max_frame(s->node));
  if (rv == SP_ERR_NOMEM) {
    sp_node_set_fatal(s->node, rv);
  }
  return rv;
}

void sp_session_refuse(sp_session *s, int code, const char *fmt, ...) {
  char text[256];
  sp_msg msg;
  sp_event ev = {0};
  va_list ap;
  int n;

  if (s->refused || s->dead) {
    return;
  }
  va_start(ap, fmt);
  n = vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  if (n < 0) {
    text[0] = '\0';
  }
  memset(&msg, 0, sizeof(msg));
  msg.type = SP_MSG_ERROR;
  msg.u.error.code = code;
  msg.u.error.message = text;
  msg.u.error.message_len = strlen(text);
  /* A first frame may be refused before the stream is attached: the
   * library's handler still answers with its claim. */
  sp_leadership_stamp(s,
                      s->handler ? s->handler
                                 : sp_node_find_handler(s->node, &s->lib),
                      &msg);
  s->refused = 1;
  s->close_after = 1;
  s->close_code = code;
  sp_slog(s, SP_LOG_WARN, "refusing stream %llu: %s (%s)",
          (unsigned long long)s->stream_id, text, sp_err_name(code));
  ev.type = SP_EVENT_ERROR;
  ev.library_id = s->lib;
  ev.peer_id = s->peer;
  ev.has_peer = 1;
  ev.error_code = code;
  ev.message = text;
  sp_emit(s->node, &ev);
  /* Queued after what is pending; nothing is generated after it. */
  if (sp_session_queue(s, &msg) != 0) {
    sp_session_close(s, code);
    return;
  }
  sp_session_pump(s);
}

/* A leader tells a negotiated follower the highest origin_seq its log
 * ever held for it (the follower anchors its outbox above it). */
static int origin_high(sp_session *s, uint64_t *high) {
  sp_handler *h = s->handler;
  sp_seq seq;

  *high = 0;
  /* Only writes have an origin_high (a store may have no find_origin). */
  if (h->role != SP_ROLE_LEADER || !(s->features & SP_FEATURE_WRITES)) {
    return 0;
  }
  return h->store.find_origin(&s->peer, 0, &seq, high, h->store.user_data);
}

/* Generate the next frame; 1 if one was queued. */
static int next_frame(sp_session *s) {
  sp_handler *h = s->handler;
  sp_msg msg;

  if (!h || s->refused) {
    return 0;
  }
  if (s->hello_pending || s->heartbeat_due || s->features_pending) {
    memset(&msg, 0, sizeof(msg));
    msg.type = SP_MSG_HEARTBEAT;
    msg.u.heartbeat.role = h->role;
    msg.u.heartbeat.current_sequence =
        h->role == SP_ROLE_LEADER ? h->bounds.latest : h->st.applied;
    if (s->features_pending || s->advertised) {
      msg.u.heartbeat.has_features = 1;
      msg.u.heartbeat.features = sp_handler_local_features(h);
      /* A leader's opening Heartbeat to a device that reads claims
       * (sp_leadership_open), before the follower's features: writes are
       * offered by the answer to those, which carries the origin_high the
       * follower anchors its outbox on. */
      if (h->role == SP_ROLE_LEADER && s->features == 0) {
        msg.u.heartbeat.features &= ~(uint64_t)SP_FEATURE_WRITES;
      }
      if (origin_high(s, &msg.u.heartbeat.origin_high) != 0) {
        sp_event ev = {0};
        ev.error_code = SP_ERR_STORE;
        ev.message = "store find_origin failed";
        sp_emit_simple(h, SP_EVENT_ERROR, &s->peer, &ev);
        sp_session_close(s, SP_ERR_STORE);
        return 0;
      }
      /* A follower sizes its Propose frames for what we accept. */
      if (h->role == SP_ROLE_LEADER) {
        msg.u.heartbeat.max_frame = max_frame(s->node);
      }
      s->advertised = 1;
    }
    s->hello_pending = 0;
    s->heartbeat_due = 0;
    s->features_pending = 0;
    if (h->role == SP_ROLE_LEADER && s->u.l.announced < h->bounds.latest) {
      s->u.l.announced = h->bounds.latest;
    }
    sp_leadership_stamp(s, h, &msg);
    return sp_session_queue(s, &msg) == 0;
  }
  return h->role == SP_ROLE_LEADER ? sp_leader_next_frame(s)
                                   : sp_follower_next_frame(s);
}

/* Capacity of the out buffer kept by an idle session: a catch-up page
 * (up to response_max_bytes) is not held for the stream's whole life. */
#define OUT_KEEP (16 * 1024)

/* Nothing to send and nothing queued: a leader session whose follower
 * holds everything gives its page-sized buffer back.  (Not between pages
 * of a catch-up: the queue is empty only once the follower is current.) */
static void release_idle_buffer(sp_session *s) {
  const sp_handler *h = s->handler;

  if (s->out.cap > OUT_KEEP && sp_buf_pending(&s->out) == 0 && h &&
      h->role == SP_ROLE_LEADER && s->u.l.follower_current &&
      s->u.l.qlen == 0) {
    sp_buf_free(&s->out);
  }
}

void sp_session_pump(sp_session *s) {
  sp_node *node = s->node;

  while (!s->dead && !s->blocked) {
    size_t pending = sp_buf_pending(&s->out);

    if (pending > 0) {
      sp_ssize n = node->tr.send(s->stream_id, s->out.data + s->out.off,
                                 pending, node->tr.user_data);
      if (n == SP_ERR_WOULD_BLOCK) {
        s->blocked = 1;
        return;
      }
      if (n <= 0 || (size_t)n > pending) {
        sp_session_close(s, n < 0 ? (int)n : SP_ERR_INTERNAL);
        return;
      }
      sp_buf_consume(&s->out, (size_t)n);
      s->last_send = node->now;
      if ((size_t)n < pending) {
        s->blocked = 1; /* a short send promises a writable call */
        return;
      }
      continue;
    }
    if (s->close_after) {
      sp_session_close(s, s->close_code);
      return;
    }
    if (!next_frame(s)) {
      release_idle_buffer(s);
      return;
    }
  }
}

/* Route the first frame of an incoming stream to its library's handler. */
static int route(sp_session *s, const sp_msg *msg) {
  sp_node *node = s->node;
  sp_handler *h = sp_node_find_handler(node, &msg->library_id);
  int member = 0, rv;

  s->lib = msg->library_id;
  if (!h) {
    sp_session_refuse(s, SP_ERR_UNKNOWN_LIBRARY, "library not open here");
    return -1;
  }
  rv = node->reg.is_member(&msg->library_id, &s->peer, &member,
                           node->reg.user_data);
  if (rv != 0 || !member) {
    sp_session_refuse(s, rv != 0 ? SP_ERR_REGISTRY : SP_ERR_NOT_MEMBER,
                      "device is not a member of this library");
    return -1;
  }
  /* Before it may be refused: a claim is worth relaying whoever sent it
   * (a newer leader this follower does not follow yet). */
  sp_leadership_take(h, &s->peer, msg);
  return sp_handler_accept(h, s, msg);
}

/* A message type a feature brought (codec.h): the feature it needs, and
 * whether it travels towards the leader; 0 for the seed's messages. */
static uint64_t feature_of(sp_msg_type type, int *to_leader) {
  *to_leader = type == SP_MSG_PROPOSE || type == SP_MSG_SNAPSHOT_REQUEST ||
               type == SP_MSG_SNAPSHOT_FETCH;
  switch (type) {
  case SP_MSG_PROPOSE:
  case SP_MSG_PROPOSE_RESULT:
    return SP_FEATURE_WRITES;
  case SP_MSG_SNAPSHOT_REQUEST:
  case SP_MSG_SNAPSHOT_MANIFEST:
  case SP_MSG_SNAPSHOT_FETCH:
  case SP_MSG_SNAPSHOT_CHUNK:
    return SP_FEATURE_SNAPSHOT;
  default:
    return 0;
  }
}

/* A feature's messages go one way only, and only to a peer that
 * advertised the feature on this stream (docs/protocol.md §13): anything
 * else is refused, never silently dropped.  Returns 1 to go on. */
static int feature_gate(sp_session *s, const sp_msg *msg) {
  int to_leader;
  uint64_t need = feature_of(msg->type, &to_leader);

  if (need == 0) {
    return 1;
  }
  if (to_leader != (s->handler->role == SP_ROLE_LEADER)) {
    sp_session_refuse(s, SP_ERR_WRONG_ROLE, "message type %d is not for a %s",
                      (int)msg->type,
                      s->handler->role == SP_ROLE_LEADER ? "leader"
                                                         : "follower");
    return 0;
  }
  if (!(s->features & need)) {
    sp_session_refuse(s, SP_ERR_NOT_NEGOTIATED,
                      "message type %d of a feature not negotiated",
                      (int)msg->type);
    return 0;
  }
  return 1;
}

static void dispatch(sp_session *s, const sp_msg *msg) {
  sp_handler *h;
  int first = !s->handler;

  sp_leadership_note(s, msg);
  if (first && route(s, msg) != 0) {
    return;
  }
  h = s->handler;
  if (!h || s->dead || s->refused) {
    return;
  }
  if (memcmp(&msg->library_id, &h->cfg.library_id, sizeof(sp_uuid)) != 0) {
    sp_session_refuse(s, SP_ERR_LIBRARY_MISMATCH,
                      "frame for another library on this stream");
    return;
  }
  if (!first) {
    sp_leadership_take(h, &s->peer, msg); /* route took the first's */
  }
  if (!s->connected_event && msg->type != SP_MSG_ERROR) {
    sp_event ev = {0};
    s->connected_event = 1;
    sp_emit_simple(h, SP_EVENT_PEER_CONNECTED, &s->peer, &ev);
  }
  /* Before anything else may act on an epoch the peer wrote (an
   * incoming stream's first frame was judged before it was attached). */
  if (msg->type != SP_MSG_ERROR && !first && sp_leadership_judge(h, s, msg)) {
    return;
  }
  if (!feature_gate(s, msg)) {
    return;
  }
  if (msg->type == SP_MSG_ERROR) {
    sp_event ev = {0};
    char text[SP_MAX_ERROR_MESSAGE_LEN + 1];
    size_t n = msg->u.error.message_len;
    memcpy(text, msg->u.error.message, n);
    text[n] = '\0';
    ev.error_code = msg->u.error.code;
    ev.message = text;
    sp_emit_simple(h, SP_EVENT_ERROR, &s->peer, &ev);
    sp_slog(s, SP_LOG_WARN, "peer refused: %s (%s)", text,
            sp_err_name(msg->u.error.code));
    if (sp_leadership_judge(h, s, msg)) {
      return;
    }
    sp_session_close(s, SP_ERR_PEER_ERROR);
    return;
  }
  if (h->role == SP_ROLE_LEADER) {
    sp_leader_on_msg(s, msg);
  } else {
    sp_follower_on_msg(s, msg);
  }
}

void sp_session_input(sp_session *s, const uint8_t *data, size_t len) {
  sp_node *node = s->node;

  while (len > 0 && !s->dead && !s->refused) {
    const uint8_t *body;
    size_t blen;
    sp_msg msg;
    sp_ssize n = sp_frame_reader_read(s->reader, data, len, &body, &blen);
    int rv;

    if (n < 0) {
      if (sp_err_is_fatal((int)n)) {
        sp_node_set_fatal(node, (int)n);
        sp_session_close(s, (int)n);
      } else {
        sp_session_refuse(s, (int)n, "bad frame: %s", sp_strerror((int)n));
      }
      return;
    }
    data += n;
    len -= (size_t)n;
    if (!body) {
      continue;
    }
    /* Liveness counts frames, not bytes: a stream that never completes a
     * frame (torn, or a peer trickling bytes) must still time out. */
    s->last_recv = node->now;
    s->heard = 1;
    rv = sp_decoder_decode(node->dec, body, blen, &msg);
    if (rv != 0) {
      if (sp_err_is_fatal(rv)) {
        sp_node_set_fatal(node, rv);
        sp_session_close(s, rv);
      } else {
        sp_session_refuse(s, rv, "malformed frame: %s", sp_strerror(rv));
      }
      return;
    }
    dispatch(s, &msg);
  }
  sp_frame_reader_trim(s->reader);
  sp_session_pump(s);
}

static sp_duration interval(const sp_session *s) {
  return s->handler ? s->handler->cfg.heartbeat_interval : UNROUTED_TIMEOUT;
}

static sp_duration timeout(const sp_session *s) {
  if (!s->handler) {
    return UNROUTED_TIMEOUT;
  }
  return s->handler->cfg.heartbeat_interval *
         s->handler->cfg.heartbeat_timeout_factor;
}

static sp_tstamp min_ts(sp_tstamp a, sp_tstamp b) { return a < b ? a : b; }

sp_tstamp sp_session_expiry(const sp_session *s) {
  sp_tstamp t;

  if (s->dead) {
    return SP_TSTAMP_MAX;
  }
  t = s->last_recv + timeout(s);
  if (s->handler && !s->blocked && !s->heartbeat_due && !s->refused) {
    t = min_ts(t, s->last_send + interval(s));
  }
  if (s->handler && s->handler->role == SP_ROLE_FOLLOWER) {
    t = min_ts(t, sp_follower_session_expiry(s));
  }
  return t;
}

void sp_session_expire(sp_session *s, sp_tstamp now) {
  if (s->dead) {
    return;
  }
  if (now >= s->last_recv + timeout(s)) {
    sp_slog(s, SP_LOG_INFO, "stream %llu: peer silent, closing",
            (unsigned long long)s->stream_id);
    sp_session_close(s, SP_ERR_PEER_TIMEOUT);
    return;
  }
  if (s->handler && s->handler->role == SP_ROLE_FOLLOWER) {
    sp_follower_session_expire(s, now);
    if (s->dead) {
      return;
    }
  }
  if (s->handler && !s->blocked && now >= s->last_send + interval(s)) {
    s->heartbeat_due = 1;
  }
  sp_session_pump(s);
}
