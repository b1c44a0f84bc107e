/*
 * sp_quic_stream.c: transport streams, their send buffers, and the events
 * the node hears about them.
 *
 * Send side: `send` copies into a chain of fixed chunks, at most
 * stream_send_buffer bytes not yet acknowledged.  ngtcp2 does not copy
 * stream data and may retransmit from it, so a chunk is freed only once
 * the peer acknowledged all of it.  A short send or SP_ERR_WOULD_BLOCK
 * owes the node a sp_node_stream_writable, paid when acks free space.
 *
 * Receive side: bytes are copied out of ngtcp2's callback and handed to
 * the node in sp_quic_stream_dispatch.  The peer's windows (stream and
 * connection) are extended only by what the node consumed: bytes it took
 * minus those it still holds of a frame not received whole
 * (sp_node_stream_held).  A node that is slow to run stalls its sender at
 * the window, and what this endpoint and the node hold of a peer's bytes
 * stays inside the windows granted, plus one exception that keeps frames
 * larger than a window from stalling for ever: per connection, one stream
 * whose unfinished frame cannot complete inside its stream window may be
 * granted credit for the whole of it (stream and connection, up to the
 * node's max_frame plus its prefix), until that frame completes or the
 * stream ends.  A limit ngtcp2 would not announce (unblock) may add half a
 * window.  So a connection holds at most conn_recv_window * 1.5 +
 * max_frame + 4 received bytes, whatever its streams do.  When the node
 * is done with a stream, what it held of an unfinished frame is dropped
 * and counts as consumed.
 *
 * Order per stream: opened, data, writable, closed (after all data).
 * Once the node closed a stream, or was told it closed, it hears nothing
 * more about it; buffered output still goes out (then a FIN, or, after
 * a close with an error code, a reset with that code once the peer has
 * it or SP_QUIC_LINGER ran out), and what arrives is dropped with its
 * window given back.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "sp_mem_int.h"
#include "sp_quic_int.h"

typedef struct sp_quic_chunk {
  struct sp_quic_chunk *next;
  size_t len;
  uint8_t data[SP_QUIC_CHUNK];
} sp_quic_chunk;

static int grow_table(sp_quic_endpoint *ep) {
  size_t cap = ep->streams_cap ? ep->streams_cap * 2 : 16;
  sp_quic_stream **t = sp_realloc(&ep->mem, ep->streams, cap * sizeof(*t));

  if (!t) {
    return SP_ERR_NOMEM;
  }
  ep->streams = t;
  ep->streams_cap = cap;
  return 0;
}

static void link_conn(sp_quic_stream *s, sp_quic_conn *c) {
  s->conn = c;
  s->cprev = NULL;
  s->cnext = c->streams;
  if (c->streams) {
    c->streams->cprev = s;
  }
  c->streams = s;
}

static void pass_allowance(sp_quic_conn *c);

static void unlink_conn(sp_quic_stream *s) {
  sp_quic_conn *c = s->conn;
  int passes;

  if (!c) {
    return;
  }
  passes = c->rx_big == s;
  if (passes) {
    c->rx_big = NULL;
  }
  if (c->cursor == s) {
    c->cursor = s->cnext;
  }
  if (s->cprev) {
    s->cprev->cnext = s->cnext;
  } else {
    c->streams = s->cnext;
  }
  if (s->cnext) {
    s->cnext->cprev = s->cprev;
  }
  s->cprev = s->cnext = NULL;
  s->conn = NULL;
  if (passes) {
    pass_allowance(c);
  }
}

sp_quic_stream *sp_quic_stream_new(sp_quic_endpoint *ep, sp_quic_conn *c,
                                   const sp_uuid *peer, int local) {
  sp_quic_stream *s;

  if (ep->nstreams == ep->streams_cap && grow_table(ep) != 0) {
    return NULL;
  }
  s = sp_calloc(&ep->mem, 1, sizeof(*s));
  if (!s) {
    return NULL;
  }
  s->id = ep->next_stream_id++;
  s->ep = ep;
  s->qsid = -1;
  s->peer = *peer;
  s->local = local ? 1 : 0;
  s->node_knows = local ? 1 : 0;
  sp_buf_init(&s->rbuf, &ep->mem);
  link_conn(s, c);
  ep->streams[ep->nstreams++] = s;
  return s;
}

sp_quic_stream *sp_quic_stream_find(sp_quic_endpoint *ep, uint64_t id) {
  size_t i;

  for (i = 0; i < ep->nstreams; ++i) {
    if (ep->streams[i]->id == id) {
      return ep->streams[i];
    }
  }
  return NULL;
}

static size_t buffered(const sp_quic_stream *s);
static void node_forgets(sp_quic_stream *s);

/* ---- chunk pool ---- */

static sp_quic_chunk *chunk_get(sp_quic_endpoint *ep) {
  sp_quic_chunk *ch = ep->chunk_pool;

  if (ch) {
    ep->chunk_pool = ch->next;
    ep->npool--;
    return ch;
  }
  return sp_malloc(&ep->mem, sizeof(*ch));
}

static void chunk_put(sp_quic_endpoint *ep, sp_quic_chunk *ch) {
  if (ep->npool < SP_QUIC_CHUNK_POOL) {
    ch->next = ep->chunk_pool;
    ep->chunk_pool = ch;
    ep->npool++;
  } else {
    sp_free(&ep->mem, ch);
  }
}

void sp_quic_chunk_pool_free(sp_quic_endpoint *ep) {
  while (ep->chunk_pool) {
    sp_quic_chunk *ch = ep->chunk_pool;
    ep->chunk_pool = ch->next;
    sp_free(&ep->mem, ch);
  }
  ep->npool = 0;
}

void sp_quic_stream_free(sp_quic_stream *s) {
  sp_quic_endpoint *ep = s->ep;
  sp_quic_chunk *ch = s->head;

  ep->send_buffered -= buffered(s);
  if (s->budget_wait) {
    ep->budget_waiters--;
  }
  if (s->conn && s->node_done) {
    node_forgets(s);
  }
  unlink_conn(s);
  while (ch) {
    sp_quic_chunk *next = ch->next;
    chunk_put(ep, ch);
    ch = next;
  }
  sp_buf_free(&s->rbuf);
  sp_free(&ep->mem, s);
}

/* ---- send buffer ---- */

static size_t buffered(const sp_quic_stream *s) {
  return (size_t)(s->end - s->acked);
}

static size_t append(sp_quic_stream *s, const uint8_t *data, size_t len) {
  sp_quic_endpoint *ep = s->ep;
  size_t done = 0;

  while (done < len) {
    sp_quic_chunk *t = s->tail;
    size_t n;

    if (!t || t->len == SP_QUIC_CHUNK) {
      sp_quic_chunk *ch = chunk_get(ep);
      if (!ch) {
        break;
      }
      ch->next = NULL;
      ch->len = 0;
      if (t) {
        t->next = ch;
      } else {
        s->head = ch;
      }
      s->tail = t = ch;
    }
    n = SP_QUIC_CHUNK - t->len;
    if (n > len - done) {
      n = len - done;
    }
    memcpy(t->data + t->len, data + done, n);
    t->len += n;
    done += n;
  }
  s->end += done;
  return done;
}

size_t sp_quic_stream_unsent(sp_quic_stream *s, ngtcp2_vec *v, size_t max,
                             int *fin) {
  sp_quic_chunk *ch = s->head;
  uint64_t base = s->head_base, off = s->sent;
  size_t n = 0;

  while (ch && off >= base + ch->len) {
    base += ch->len;
    ch = ch->next;
  }
  while (ch && n < max) {
    size_t start = (size_t)(off - base);
    v[n].base = ch->data + start;
    v[n].len = ch->len - start;
    ++n;
    off = base + ch->len;
    base += ch->len;
    ch = ch->next;
  }
  *fin = s->fin_requested && !s->fin_sent && off == s->end;
  return n;
}

void sp_quic_stream_mark_sent(sp_quic_stream *s, size_t n, int fin) {
  s->sent += n;
  if (fin) {
    s->fin_sent = 1;
  }
}

int sp_quic_stream_has_output(const sp_quic_stream *s) {
  return s->sent < s->end || (s->fin_requested && !s->fin_sent);
}

/* A stream whose send was cut short is owed a writable call once its
 * buffer has room again. */
static void wake_writable(sp_quic_endpoint *ep, sp_quic_stream *s) {
  if (s->want_writable && !s->node_done &&
      buffered(s) < ep->cfg.stream_send_buffer) {
    s->want_writable = 0;
    s->writable_pending = 1;
    ep->events_pending = 1;
  }
}

/* A stream refused for the endpoint's budget may send again. */
static void budget_wake(sp_quic_endpoint *ep, sp_quic_stream *w) {
  w->budget_wait = 0;
  ep->budget_waiters--;
  wake_writable(ep, w);
}

/* The budget has room again: wake the waiting streams, starting after the
 * last one woken so that no stream is always served last. */
static void budget_freed(sp_quic_endpoint *ep) {
  size_t k, n = ep->nstreams;

  for (k = 0; k < n && ep->budget_waiters > 0; ++k) {
    sp_quic_stream *w = ep->streams[(ep->budget_cursor + k) % n];
    if (w->budget_wait) {
      budget_wake(ep, w);
    }
  }
  ep->budget_cursor = n ? (ep->budget_cursor + 1) % n : 0;
}

/* A lingering stream is done delivering (or out of time): reset both
 * directions with its code. */
static void linger_end(sp_quic_stream *s) {
  s->linger_until = 0;
  s->stop_pending = 0;
  s->shutdown_pending = 1;
  s->shutdown_both = 1;
  s->shutdown_code = s->linger_code;
  s->ep->output_pending = 1;
}

void sp_quic_stream_acked(sp_quic_stream *s, uint64_t offset, uint64_t len) {
  sp_quic_endpoint *ep = s->ep;

  if (offset + len > s->acked) {
    ep->send_buffered -= (size_t)(offset + len - s->acked);
    s->acked = offset + len;
  }
  /* Only full chunks are released: the tail may still be filling. */
  while (s->head && s->head->len == SP_QUIC_CHUNK &&
         s->acked >= s->head_base + SP_QUIC_CHUNK) {
    sp_quic_chunk *ch = s->head;
    s->head = ch->next;
    if (!s->head) {
      s->tail = NULL;
    }
    s->head_base += SP_QUIC_CHUNK;
    chunk_put(ep, ch);
  }
  /* Everything written was acknowledged: the last, partly filled chunk
   * goes back to the pool too (the next send takes one from there). */
  if (s->head && s->acked == s->end && s->sent == s->end &&
      s->head == s->tail) {
    s->head_base += s->head->len;
    chunk_put(ep, s->head);
    s->head = s->tail = NULL;
  }
  if (s->budget_wait && buffered(s) < SP_QUIC_STREAM_FLOOR) {
    /* Under its guaranteed share: it may send whatever the budget says. */
    budget_wake(ep, s);
  } else if (!s->budget_wait) {
    wake_writable(ep, s);
  }
  if (ep->budget_waiters > 0 && ep->send_buffered < ep->send_budget) {
    budget_freed(ep);
  }
  if (s->linger_until && s->acked == s->end) {
    linger_end(s);
  }
}

/* ---- events recorded from ngtcp2 callbacks ---- */

int sp_quic_reason_from_app_code(uint64_t code) {
  /* Only codes of the non-fatal sp_error bands pass: a peer must not be
   * able to make us report a fatal (local) failure. */
  if (code >= 100 && code < 600) {
    return -(int)code;
  }
  return SP_ERR_CONNECTION_LOST;
}

static void set_closed(sp_quic_stream *s, int reason) {
  if (s->node_done || s->closed_pending) {
    return;
  }
  s->closed_pending = 1;
  s->closed_reason = reason;
  s->ep->events_pending = 1;
}

int sp_quic_stream_received(sp_quic_stream *s, const uint8_t *data,
                            size_t len, int fin) {
  if (len > 0 && sp_buf_append(&s->rbuf, data, len) != 0) {
    return SP_ERR_NOMEM;
  }
  if (s->conn) {
    s->conn->rx_received += len;
  }
  if (fin) {
    s->fin_received = 1;
    set_closed(s, 0);
  }
  s->ep->events_pending = 1;
  return 0;
}

void sp_quic_stream_peer_reset(sp_quic_stream *s, uint64_t app_code) {
  set_closed(s, sp_quic_reason_from_app_code(app_code));
  /* A refusal still delivering its Error frame (the peer answered our
   * STOP_SENDING): the frame still goes out, our reset after it. */
  if (s->linger_until) {
    return;
  }
  /* Reset our side too, so the stream ends in both directions. */
  if (!s->write_shut && !s->fin_sent) {
    s->shutdown_pending = 1;
    s->shutdown_both = 0;
    s->shutdown_code = app_code;
    s->ep->output_pending = 1;
  }
}

/* The node never saw this remote stream and there is nothing to show. */
static int unseen(const sp_quic_stream *s) {
  return s->opened_pending && sp_buf_pending(&s->rbuf) == 0 &&
         !s->fin_received;
}

void sp_quic_stream_quic_closed(sp_quic_stream *s, int has_code,
                                uint64_t app_code) {
  s->quic_done = 1;
  if (unseen(s)) {
    s->opened_pending = 0;
    s->node_done = 1;
    return;
  }
  set_closed(s, has_code ? sp_quic_reason_from_app_code(app_code) : 0);
}

void sp_quic_stream_conn_ended(sp_quic_stream *s, int reason) {
  s->peer_proven = s->conn && s->conn->authenticated;
  if (s->peer_proven) {
    memcpy(s->peer_key, s->conn->peer_key, SP_PUBLIC_KEY_LEN);
  }
  unlink_conn(s);
  s->quic_done = 1;
  s->shutdown_pending = 0;
  if (unseen(s)) {
    s->opened_pending = 0;
    s->node_done = 1;
    return;
  }
  set_closed(s, reason);
}

/* ---- delivery to the node ---- */

/* The frame `s` has begun, whole (0: none begun). */
static uint64_t frame_size(const sp_quic_stream *s) {
  return (uint64_t)s->node_held + s->node_need;
}

/* Bytes of `s` the node consumed (whole frames, or dropped). */
static uint64_t consumed_of(const sp_quic_stream *s) {
  return s->rx_taken - s->node_held;
}

/* Only a frame that cannot complete inside its stream's window needs the
 * allowance; a frame the node will never finish (need 0: a refused
 * stream) must not hold it. */
static int needs_allowance(const sp_quic_stream *s) {
  return !s->node_done && s->qsid >= 0 && s->node_need > 0 &&
         frame_size(s) > s->ep->cfg.stream_recv_window;
}

/* The peer sent all the stream's window allows: it waits for credit. */
static int at_window(const sp_quic_stream *s) {
  uint64_t lim = s->rx_limit ? s->rx_limit : s->ep->cfg.stream_recv_window;
  return s->rx_taken + sp_buf_pending(&s->rbuf) >= lim;
}

/* The connection's allowance went free: a frame that needs it takes it,
 * one already waiting at its window first. */
static void pick_big(sp_quic_conn *c) {
  sp_quic_stream *t, *any = NULL;

  for (t = c->streams; t && !c->rx_big; t = t->cnext) {
    if (needs_allowance(t)) {
      if (at_window(t)) {
        c->rx_big = t;
      } else if (!any) {
        any = t;
      }
    }
  }
  if (!c->rx_big) {
    c->rx_big = any;
  }
  if (c->rx_big) {
    c->rx_big_end = consumed_of(c->rx_big) + frame_size(c->rx_big);
  }
}

/* The frame `s` has begun still needs bytes that are not here yet. */
static int waits(const sp_quic_stream *s) {
  return !s->node_done && s->qsid >= 0 &&
         s->node_need > sp_buf_pending(&s->rbuf);
}

static int any_waits(const sp_quic_conn *c) {
  const sp_quic_stream *t;

  for (t = c->streams; t; t = t->cnext) {
    if (waits(t)) {
      return 1;
    }
  }
  return 0;
}

/* ngtcp2 0.12 announces a raised limit only once it is more than half the
 * window past the one the peer knows (conn_should_send_max_stream_data,
 * _max_data), and offers no way to force it.  A peer blocked at the limit
 * it knows, with a frame the node waits for ending less than half a
 * window past it, would never hear of the credit that frame needs.
 * Blocked, it has sent everything up to that limit, so the limit is
 * `recv` (where it got to): when no announcement is sure to come (the
 * limit granted, `have`, at most half a window past `recv`), grant up to
 * `recv` + half a window + 1, which ngtcp2 announces.  Only while `recv`
 * is below `want`, the credit the rules grant anyway: so the limit stays
 * below `want` + half a window. */
static uint64_t unblock(uint64_t want, uint64_t have, uint64_t recv,
                        uint64_t window) {
  if (want > have) {
    have = want;
  }
  if (recv < want && 2 * (have - recv) <= window) {
    return recv + window / 2 + 1;
  }
  return want;
}

/* Stream offset = consumed + the window, or + the frame begun for the
 * allowance's stream.  Only that stream opens past its window: the others
 * then hold at most a window each, which leaves the allowance to its
 * frame. */
static void credit_stream(sp_quic_stream *s) {
  sp_quic_endpoint *ep = s->ep;
  sp_quic_conn *c = s->conn;
  uint64_t want, lim, frame = frame_size(s);

  if (s->qsid < 0 || s->node_done) {
    return;
  }
  want = s->rx_counted + (c->rx_big == s && frame > ep->cfg.stream_recv_window
                              ? frame
                              : ep->cfg.stream_recv_window);
  lim = s->rx_limit ? s->rx_limit : ep->cfg.stream_recv_window;
  /* A frame granted (it ends within `want`) must not wait for ever. */
  if (waits(s) && s->rx_taken + s->node_need <= want) {
    want = unblock(want, lim, s->rx_taken + sp_buf_pending(&s->rbuf),
                   ep->cfg.stream_recv_window);
  }
  if (want > lim) {
    ngtcp2_conn_extend_max_stream_offset(c->qc, s->qsid, want - lim);
    lim = want;
    ep->output_pending = 1;
  }
  s->rx_limit = lim;
}

/* Connection offset = consumed + window + the allowance's frame.  Offsets
 * only grow, so an allowance spent is not granted twice. */
static void credit_conn(sp_quic_conn *c) {
  sp_quic_endpoint *ep = c->ep;
  uint64_t want, lim;

  want = c->rx_consumed + ep->cfg.conn_recv_window +
         (c->rx_big ? frame_size(c->rx_big) : 0);
  lim = c->rx_limit ? c->rx_limit : ep->cfg.conn_recv_window;
  if (any_waits(c)) {
    want = unblock(want, lim, c->rx_received, ep->cfg.conn_recv_window);
  }
  if (want > lim) {
    ngtcp2_conn_extend_max_offset(c->qc, want - lim);
    lim = want;
    ep->output_pending = 1;
  }
  c->rx_limit = lim;
}

/* Hand a free allowance on, with the credit it brings at once: its new
 * holder may be waiting at its window with nothing more to deliver that
 * would call us for it. */
static void pass_allowance(sp_quic_conn *c) {
  if (c->rx_big || !sp_quic_conn_usable(c)) {
    return;
  }
  pick_big(c);
  if (c->rx_big) {
    credit_conn(c);
    credit_stream(c->rx_big);
  }
}

/* Reopen the windows by what the node consumed since the last call. */
static void credit(sp_quic_stream *s) {
  sp_quic_conn *c = s->conn;
  uint64_t consumed;

  if (s->node_done) {
    s->node_held = s->node_need = 0;
  }
  consumed = consumed_of(s);
  if (!c) {
    s->rx_counted = consumed;
    return;
  }
  c->rx_consumed += consumed - s->rx_counted;
  s->rx_counted = consumed;
  /* The frame it was granted for is whole (or will never be). */
  if (c->rx_big == s &&
      (consumed >= c->rx_big_end || !needs_allowance(s))) {
    c->rx_big = NULL;
  }
  if (!sp_quic_conn_usable(c)) {
    return;
  }
  if (!c->rx_big) {
    pass_allowance(c);
  }
  credit_conn(c);
  credit_stream(s);
}

/* The node is done with `s`: the bytes it held of an unfinished frame
 * went with it, so they count as consumed, and the allowance, if `s` had
 * it, passes on. */
static void node_forgets(sp_quic_stream *s) {
  s->node_held = s->node_need = 0;
  credit(s);
}

static void drop_input(sp_quic_stream *s) {
  s->rx_taken += sp_buf_pending(&s->rbuf);
  sp_buf_reset(&s->rbuf);
  credit(s);
}

/* What the node holds of `s` after a delivery. */
static void ask_held(sp_quic_endpoint *ep, sp_quic_stream *s) {
  if (s->node_done ||
      sp_node_stream_held(ep->node, s->id, &s->node_held, &s->node_need) !=
          0) {
    s->node_held = s->node_need = 0;
  }
  /* The node cannot hold what it was not given. */
  if (s->node_held > s->rx_taken) {
    s->node_held = (size_t)s->rx_taken;
  }
}

/* Reset both directions with `code` (a negative sp_error). */
static void reset_stream(sp_quic_stream *s, int code) {
  if (s->conn && s->qsid >= 0) {
    s->shutdown_pending = 1;
    s->shutdown_both = 1;
    s->shutdown_code = (uint64_t)(code < 0 ? -code : code);
    s->ep->output_pending = 1;
  } else if (s->conn && s->qsid < 0) {
    unlink_conn(s);
    s->quic_done = 1;
  }
}

/* The node refused or forgot the stream. */
static void node_dropped(sp_quic_stream *s, int rv) {
  s->node_done = 1;
  drop_input(s);
  reset_stream(s, rv);
}

static int dispatch_one(sp_quic_endpoint *ep, sp_quic_stream *s,
                        sp_tstamp now) {
  sp_node *node = ep->node;
  int rv;

  if (s->node_done) {
    s->opened_pending = s->writable_pending = s->closed_pending = 0;
    drop_input(s);
    return 0;
  }
  if (s->opened_pending) {
    /* Not before the peer is proven (handshake_completed rings again). */
    if (s->conn && !s->conn->authenticated) {
      return 0;
    }
    if (!s->conn && !s->peer_proven) {
      /* Ended unproven: nobody may ever read it, and nothing else would
       * free it. */
      s->opened_pending = s->closed_pending = 0;
      s->node_done = 1;
      drop_input(s);
      return 0;
    }
    /* A proven peer's stream whose connection ended before the node
     * heard of it (opened, sent and closed in one flight, as an endpoint
     * being deleted does): its last bytes still count, so the node hears
     * opened, data and closed like for any other stream. */
    s->opened_pending = 0;
    rv = sp_node_stream_opened(node, s->id, &s->peer, now);
    if (rv != 0) {
      node_dropped(s, rv);
      return sp_err_is_fatal(rv) ? rv : 0;
    }
    s->node_knows = 1;
  }
  if (!s->node_knows) {
    return 0;
  }
  while (!s->node_done && sp_buf_pending(&s->rbuf) > 0) {
    size_t n = sp_buf_pending(&s->rbuf);
    const uint8_t *data = s->rbuf.data + s->rbuf.off;

    /* Taken before the call: the memory stays put (nothing appends
     * during dispatch), and a close_stream from inside the call counts
     * these bytes as dropped.  Credit follows what the node consumed. */
    sp_buf_consume(&s->rbuf, n);
    s->rx_taken += n;
    ep->stats.stream_bytes_received += n;
    rv = sp_node_stream_data(node, s->id, &s->peer, data, n, now);
    if (rv != 0 && !s->node_done) {
      node_dropped(s, rv);
    }
    ask_held(ep, s);
    credit(s);
    if (sp_err_is_fatal(rv)) {
      return rv;
    }
  }
  if (!s->node_done && s->writable_pending) {
    s->writable_pending = 0;
    rv = sp_node_stream_writable(node, s->id, &s->peer, now);
    if (rv != 0 && !s->node_done) {
      node_dropped(s, rv);
    }
    if (sp_err_is_fatal(rv)) {
      return rv;
    }
  }
  if (!s->node_done && s->closed_pending && sp_buf_pending(&s->rbuf) == 0) {
    s->closed_pending = 0;
    s->node_done = 1;
    node_forgets(s);
    /* The peer ended its side cleanly: end ours once our bytes are out. */
    if (s->closed_reason == 0 && s->conn && !s->write_shut) {
      s->fin_requested = 1;
      ep->output_pending = 1;
    }
    rv = sp_node_stream_closed(node, s->id, &s->peer, s->closed_reason, now);
    if (sp_err_is_fatal(rv)) {
      return rv;
    }
  }
  return 0;
}

int sp_quic_stream_dispatch(sp_quic_endpoint *ep, sp_tstamp now) {
  size_t i;
  int rv;

  if (!ep->node || !ep->events_pending) {
    return 0;
  }
  ep->events_pending = 0;
  /* By index: the node may open streams (appended) while we iterate. */
  for (i = 0; i < ep->nstreams; ++i) {
    rv = dispatch_one(ep, ep->streams[i], now);
    if (rv != 0) {
      ep->events_pending = 1;
      return rv;
    }
  }
  return 0;
}

static int freeable(const sp_quic_stream *s) {
  return s->node_done && s->quic_done;
}

void sp_quic_stream_sweep(sp_quic_endpoint *ep) {
  size_t i, k = 0;

  for (i = 0; i < ep->nstreams; ++i) {
    sp_quic_stream *s = ep->streams[i];
    if (freeable(s)) {
      sp_quic_stream_free(s);
    } else {
      ep->streams[k++] = s;
    }
  }
  ep->nstreams = k;
}

size_t sp_quic_stream_buffered(sp_quic_endpoint *ep, uint64_t id) {
  sp_quic_stream *s = sp_quic_stream_find(ep, id);

  return s ? buffered(s) : 0;
}

/* ---- the transport vtable ---- */

/* A connection to `peer` we can put a stream on: an authenticated one
 * either side opened, else one we are dialling to it; never one the node
 * found silent, unless the peer was heard since.  The newest wins, and
 * one whose probe is unanswered only if no other is left: older
 * connections then drain of streams, and they are the ones the probe and
 * the per-device cap close (the table keeps creation order). */
static sp_quic_conn *conn_for(sp_quic_endpoint *ep, const sp_uuid *peer) {
  sp_quic_conn *probed = NULL, *dialling = NULL;
  size_t i;

  for (i = ep->nconns; i-- > 0;) {
    sp_quic_conn *c = ep->conns[i];
    if (!sp_quic_conn_usable(c) || !sp_uuid_equal(&c->peer, peer) ||
        (c->suspect_at && c->suspect_at >= c->last_rx)) {
      continue;
    }
    if (c->authenticated && c->probe_by == 0) {
      return c;
    }
    if (c->authenticated && !probed) {
      probed = c;
    }
    if (!c->authenticated && !c->server && !dialling) {
      dialling = c;
    }
  }
  return probed ? probed : dialling;
}

static sp_quic_hint *hint_find(sp_quic_endpoint *ep, const sp_uuid *peer) {
  size_t i;

  for (i = 0; i < ep->nhints; ++i) {
    if (sp_uuid_equal(&ep->hints[i].device, peer)) {
      return &ep->hints[i];
    }
  }
  return NULL;
}

/* The registry's addresses come first (the host's word); the node's hint
 * is where the device was last seen, for devices the registry has none
 * for that this socket can reach. */
static int dial(sp_quic_endpoint *ep, const sp_uuid *peer,
                sp_quic_conn **pc) {
  char hints[4096];
  sp_quic_addr addr;
  const sp_quic_hint *seen = hint_find(ep, peer);
  int rv;

  rv = ep->registry.address_hints(peer, hints, sizeof(hints),
                                  ep->registry.user_data);
  if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
    return SP_ERR_REGISTRY;
  }
  hints[sizeof(hints) - 1] = '\0';
  if ((rv != 0 ||
       sp_quic_addr_pick(&addr, hints, ep->local.u.sa.sa_family) != 0) &&
      (!seen ||
       sp_quic_addr_pick(&addr, seen->address, ep->local.u.sa.sa_family) !=
           0)) {
    return SP_ERR_UNREACHABLE;
  }
  return sp_quic_conn_client_new(pc, ep, peer, &addr, sp_quic_now());
}

static int tr_open_stream(const sp_uuid *peer, const sp_uuid *library,
                          uint64_t *stream_id, void *user_data) {
  sp_quic_endpoint *ep = user_data;
  sp_quic_conn *c;
  sp_quic_stream *s;
  int rv;

  (void)library;
  if (!peer || !stream_id || sp_uuid_is_nil(peer)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  c = conn_for(ep, peer);
  if (!c) {
    rv = dial(ep, peer, &c);
    if (rv != 0) {
      return rv;
    }
  }
  s = sp_quic_stream_new(ep, c, peer, 1);
  if (!s) {
    return SP_ERR_NOMEM;
  }
  *stream_id = s->id;
  ep->output_pending = 1;
  return 0;
}

static sp_ssize tr_send(uint64_t stream_id, const uint8_t *data, size_t len,
                        void *user_data) {
  sp_quic_endpoint *ep = user_data;
  sp_quic_stream *s = sp_quic_stream_find(ep, stream_id);
  size_t room, n;

  if (!s) {
    return SP_ERR_NOT_FOUND;
  }
  if (!data && len > 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->node_done || s->fin_requested) {
    return SP_ERR_CLOSED;
  }
  if (!s->conn) {
    return s->closed_reason ? s->closed_reason : SP_ERR_CONNECTION_LOST;
  }
  if (s->write_shut || s->shutdown_pending) {
    return s->closed_pending && s->closed_reason ? s->closed_reason
                                                 : SP_ERR_CLOSED;
  }
  if (len == 0) {
    return 0;
  }
  room = buffered(s) < ep->cfg.stream_send_buffer
             ? ep->cfg.stream_send_buffer - buffered(s)
             : 0;
  if (room > 0 && ep->send_buffered + room > ep->send_budget) {
    /* The endpoint's budget, shared by every stream, is the tighter; but
     * every stream may hold SP_QUIC_STREAM_FLOOR bytes whatever the
     * others hold, so none starves. */
    size_t left = ep->send_buffered < ep->send_budget
                      ? ep->send_budget - ep->send_buffered
                      : 0;
    size_t share = buffered(s) < SP_QUIC_STREAM_FLOOR
                       ? SP_QUIC_STREAM_FLOOR - buffered(s)
                       : 0;
    if (left < share) {
      left = share;
    }
    if (left < room) {
      if (left < len && !s->budget_wait) {
        s->budget_wait = 1;
        ep->budget_waiters++;
      }
      room = left;
    }
  }
  n = append(s, data, len < room ? len : room);
  ep->send_buffered += n;
  if (n < len) {
    s->want_writable = 1;
  }
  if (n == 0) {
    return room == 0 ? SP_ERR_WOULD_BLOCK : SP_ERR_NOMEM;
  }
  ep->stats.stream_bytes_sent += n;
  ep->output_pending = 1;
  return (sp_ssize)n;
}

static int tr_close_stream(uint64_t stream_id, int error_code,
                           void *user_data) {
  sp_quic_endpoint *ep = user_data;
  sp_quic_stream *s = sp_quic_stream_find(ep, stream_id);

  if (!s || s->node_done) {
    return SP_ERR_NOT_FOUND;
  }
  s->node_done = 1;
  s->opened_pending = s->writable_pending = s->closed_pending = 0;
  s->want_writable = 0;
  drop_input(s);
  if (error_code == SP_ERR_PEER_TIMEOUT && s->conn) {
    /* The node heard nothing from the peer for its heartbeat timeout:
     * the connection may be dead (a peer that vanished without a close
     * or restarted without resetting it), so a reconnect must not land
     * on it again.  It still ends by QUIC's own idle timeout. */
    s->conn->suspect_at = sp_quic_now();
  }
  if (error_code != 0 && s->conn && s->qsid >= 0 && s->end > s->acked &&
      !s->write_shut && !s->shutdown_pending && !s->fin_requested &&
      error_code != SP_ERR_PEER_TIMEOUT && error_code != SP_ERR_STALLED) {
    /* Bytes queued before an error close are what tells the peer why
     * (a refusal's Error frame): deliver them, stop the peer sending
     * (STOP_SENDING with the code), and reset with the code once the
     * peer acknowledged the last byte (its node has them then, and hears
     * the code after them), or when SP_QUIC_LINGER ran out.  A peer
     * found silent or stalled would not read them: reset at once. */
    s->linger_code = (uint64_t)-error_code;
    s->linger_until = sp_quic_now() + SP_QUIC_LINGER;
    s->stop_pending = 1;
    ep->output_pending = 1;
  } else if (error_code != 0) {
    reset_stream(s, error_code);
  } else if (s->conn && s->qsid < 0 && s->end == 0) {
    /* Never opened and nothing to deliver: nothing to tell the peer. */
    unlink_conn(s);
    s->quic_done = 1;
  } else if (s->conn) {
    s->fin_requested = 1;
    ep->output_pending = 1;
  }
  return 0;
}

sp_tstamp sp_quic_stream_linger(sp_quic_conn *c, sp_tstamp now) {
  sp_tstamp next = SP_TSTAMP_MAX;
  sp_quic_stream *s;

  for (s = c->streams; s; s = s->cnext) {
    if (!s->linger_until || s->quic_done) {
      continue;
    }
    /* Bytes not acknowledged in time: the peer does not read (or its
     * window stays shut), and owes us nothing more. */
    if (now != 0 && now >= s->linger_until) {
      sp_quic_conn_log(c, SP_LOG_DEBUG, "stream closed with code %llu not "
                       "delivered in time: reset",
                       (unsigned long long)s->linger_code);
      linger_end(s);
      continue;
    }
    if (s->linger_until < next) {
      next = s->linger_until;
    }
  }
  return next;
}

/* Until the connection is authenticated there is no key to tell; a
 * stream whose connection ended keeps the key it proved. */
static int tr_peer_key(uint64_t stream_id,
                       uint8_t public_key[SP_PUBLIC_KEY_LEN],
                       void *user_data) {
  sp_quic_endpoint *ep = user_data;
  sp_quic_stream *s = sp_quic_stream_find(ep, stream_id);

  if (!public_key) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s && s->conn && s->conn->authenticated) {
    memcpy(public_key, s->conn->peer_key, SP_PUBLIC_KEY_LEN);
    return 0;
  }
  if (s && !s->conn && s->peer_proven) {
    memcpy(public_key, s->peer_key, SP_PUBLIC_KEY_LEN);
    return 0;
  }
  return SP_ERR_NOT_FOUND;
}

/* The address the peer's datagrams come from: for a peer that dialed us,
 * the socket it listens on too, which is what makes it worth keeping. */
static int tr_peer_address(uint64_t stream_id, char *buf, size_t len,
                           void *user_data) {
  sp_quic_endpoint *ep = user_data;
  sp_quic_stream *s = sp_quic_stream_find(ep, stream_id);

  if (!buf) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!s || !s->conn || !s->conn->authenticated) {
    return SP_ERR_NOT_FOUND;
  }
  return sp_quic_addr_format(&s->conn->remote, buf, len) == 0
             ? 0
             : SP_ERR_NOBUF;
}

static int tr_add_address_hint(const sp_uuid *device, const char *address,
                               void *user_data) {
  sp_quic_endpoint *ep = user_data;
  sp_quic_hint *h;
  sp_quic_addr addr;
  size_t len;

  if (!device || !address) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  len = strlen(address);
  if (len >= SP_PEER_ADDRESS_MAX ||
      sp_quic_addr_parse(&addr, address, len) != 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h = hint_find(ep, device);
  if (!h) {
    if (ep->nhints == ep->hints_cap) {
      size_t cap = ep->hints_cap ? ep->hints_cap * 2 : 8;
      sp_quic_hint *p = sp_realloc(&ep->mem, ep->hints, cap * sizeof(*p));
      if (!p) {
        return SP_ERR_NOMEM;
      }
      ep->hints = p;
      ep->hints_cap = cap;
    }
    h = &ep->hints[ep->nhints++];
    h->device = *device;
  }
  memcpy(h->address, address, len + 1);
  return 0;
}

void sp_quic_transport_fill(sp_quic_endpoint *ep, sp_transport *out) {
  memset(out, 0, sizeof(*out));
  out->version = SP_TRANSPORT_VERSION;
  out->user_data = ep;
  out->open_stream = tr_open_stream;
  out->send = tr_send;
  out->close_stream = tr_close_stream;
  out->peer_key = tr_peer_key;
  out->peer_address = tr_peer_address;
  out->add_address_hint = tr_add_address_hint;
}
