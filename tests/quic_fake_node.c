/*
 * quic_fake_node.c: see quic_fake_node.h.
 */
#include <string.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/node.h"
#include "sync_protocol/uuid.h"
#include "quic_fake_node.h"
#include "transport/quic/sp_quic_int.h"

void fn_init(sp_node *n, sp_quic_endpoint *ep) {
  memset(n, 0, sizeof(*n));
  n->block_seed = -1;
  n->ep = ep;
  n->expiry = SP_TSTAMP_MAX;
  sp_quic_endpoint_get_transport(ep, &n->tr);
  n->send_buffer_limit = ep->cfg.stream_send_buffer;
}

void fn_free(sp_node *n) { (void)n; }

fn_stream *fn_find(sp_node *n, uint64_t id) {
  size_t i;

  for (i = 0; i < n->nstreams; ++i) {
    if (n->streams[i].id == id) {
      return &n->streams[i];
    }
  }
  return NULL;
}

fn_stream *fn_first_remote(sp_node *n) {
  size_t i;

  for (i = 0; i < n->nstreams; ++i) {
    if (n->streams[i].remote) {
      return &n->streams[i];
    }
  }
  return NULL;
}

static fn_stream *add_stream(sp_node *n, uint64_t id, const sp_uuid *peer,
                             int remote) {
  fn_stream *s;

  if (n->nstreams == FN_MAX_STREAMS) {
    return NULL;
  }
  s = &n->streams[n->nstreams++];
  memset(s, 0, sizeof(*s));
  s->id = id;
  s->peer = *peer;
  s->remote = remote;
  crypto_generichash_init(&s->rx_hash, NULL, 0, 32);
  crypto_generichash_init(&s->tx_hash, NULL, 0, 32);
  return s;
}

fn_stream *fn_open(sp_node *n, const sp_uuid *peer, const sp_uuid *library,
                   int *rv) {
  uint64_t id = 0;
  int r;

  n->in_vtable = 1;
  r = n->tr.open_stream(peer, library, &id, n->tr.user_data);
  n->in_vtable = 0;
  if (rv) {
    *rv = r;
  }
  return r == 0 ? add_stream(n, id, peer, 0) : NULL;
}

sp_ssize fn_send(sp_node *n, fn_stream *s, const void *data, size_t len) {
  sp_ssize r;

  n->in_vtable = 1;
  r = n->tr.send(s->id, data, len, n->tr.user_data);
  n->in_vtable = 0;
  return r;
}

int fn_close(sp_node *n, fn_stream *s, int code) {
  int r;

  n->in_vtable = 1;
  r = n->tr.close_stream(s->id, code, n->tr.user_data);
  n->in_vtable = 0;
  s->close_sent = 1;
  return r;
}

static void keystream_block(uint8_t *out, uint8_t seed, uint64_t index) {
  uint8_t key[crypto_stream_chacha20_ietf_KEYBYTES];
  uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];

  memset(key, seed, sizeof(key));
  memset(nonce, 0, sizeof(nonce));
  memcpy(nonce, &index, sizeof(index));
  crypto_stream_chacha20_ietf(out, 65536, nonce, key);
}

void fn_produce(sp_node *n, fn_stream *s, uint64_t total, uint8_t seed,
                int fin) {
  s->to_send = total;
  s->seed = seed;
  s->fin_after = fin;
  fn_pump(n, s);
}

void fn_pump(sp_node *n, fn_stream *s) {
  while (s->sent < s->to_send && !s->close_sent) {
    uint64_t index = s->sent / 65536;
    size_t off = (size_t)(s->sent % 65536), want = 65536 - off;
    sp_ssize r;
    size_t buffered;

    if (s->fixed_pattern) {
      index = 0;
    }
    if (n->block_seed != s->seed || n->block_index != index) {
      keystream_block(n->block, s->seed, index);
      n->block_index = index;
      n->block_seed = s->seed;
    }
    if (want > s->to_send - s->sent) {
      want = (size_t)(s->to_send - s->sent);
    }
    r = fn_send(n, s, n->block + off, want);
    buffered = sp_quic_stream_buffered(n->ep, s->id);
    if (buffered > s->max_buffered) {
      s->max_buffered = buffered;
    }
    if (r == SP_ERR_WOULD_BLOCK) {
      ++s->would_block;
      return;
    }
    if (r < 0) {
      s->send_error = (int)r;
      return;
    }
    if (!s->fixed_pattern) {
      crypto_generichash_update(&s->tx_hash, n->block + off, (size_t)r);
    }
    s->sent += (uint64_t)r;
    if ((size_t)r < want) {
      ++s->short_sends;
      return;
    }
  }
  if (s->to_send > 0 && s->sent == s->to_send && s->fin_after &&
      !s->close_sent) {
    fn_close(n, s, 0);
  }
}

void fn_expected_hash(uint8_t out[32], uint64_t total, uint8_t seed) {
  static uint8_t block[65536];
  crypto_generichash_state h;
  uint64_t done = 0, index = 0;

  crypto_generichash_init(&h, NULL, 0, 32);
  while (done < total) {
    size_t n = total - done < 65536 ? (size_t)(total - done) : 65536;
    keystream_block(block, seed, index++);
    crypto_generichash_update(&h, block, n);
    done += n;
  }
  crypto_generichash_final(&h, out, 32);
}

void fn_rx_digest(fn_stream *s, uint8_t out[32]) {
  crypto_generichash_state h = s->rx_hash;

  crypto_generichash_final(&h, out, 32);
}

/* ---- what the transport calls ---- */

static fn_stream *checked(sp_node *n, uint64_t id, const sp_uuid *peer) {
  fn_stream *s;

  if (n->in_vtable) {
    ++n->reentrant_calls;
  }
  s = fn_find(n, id);
  if (!s) {
    ++n->unknown_stream;
    return NULL;
  }
  if (!sp_uuid_equal(&s->peer, peer)) {
    ++n->peer_mismatch;
  }
  if (s->closed || s->close_sent) {
    ++n->after_close;
  }
  return s;
}

int sp_node_stream_opened(sp_node *node, uint64_t stream_id,
                          const sp_uuid *peer, sp_tstamp now) {
  (void)now;
  if (node->in_vtable) {
    ++node->reentrant_calls;
  }
  ++node->opened_calls;
  if (node->refuse_open) {
    return node->refuse_open;
  }
  if (fn_find(node, stream_id)) {
    return SP_ERR_EXISTS;
  }
  return add_stream(node, stream_id, peer, 1) ? 0 : SP_ERR_NOMEM;
}

static void echo_flush(sp_node *n, fn_stream *s) {
  sp_ssize r;

  if (s->echo_len == 0 || s->close_sent) {
    return;
  }
  r = fn_send(n, s, s->echo_buf, s->echo_len);
  if (r > 0) {
    memmove(s->echo_buf, s->echo_buf + r, s->echo_len - (size_t)r);
    s->echo_len -= (size_t)r;
  }
}

int sp_node_stream_data(sp_node *node, uint64_t stream_id,
                        const sp_uuid *peer, const uint8_t *data, size_t len,
                        sp_tstamp now) {
  fn_stream *s = checked(node, stream_id, peer);

  ++node->data_calls;
  if (!s) {
    return SP_ERR_NOT_FOUND;
  }
  if (node->first_data_at == 0) {
    node->first_data_at = now;
  }
  node->last_data_at = now;
  if (len > node->max_delivery) {
    node->max_delivery = len;
  }
  if (node->slow_us && now < node->slow_until) {
    ++node->slow_calls;
    node->slow_bytes += len;
    usleep(node->slow_us);
  }
  if (!node->count_only) {
    crypto_generichash_update(&s->rx_hash, data, len);
  }
  if (s->nkept < FN_KEEP) {
    size_t k = FN_KEEP - s->nkept < len ? FN_KEEP - s->nkept : len;
    memcpy(s->kept + s->nkept, data, k);
    s->nkept += k;
  }
  s->received += len;
  node->total_received += len;
  if (node->echo && len <= sizeof(s->echo_buf) - s->echo_len) {
    memcpy(s->echo_buf + s->echo_len, data, len);
    s->echo_len += len;
    echo_flush(node, s);
  }
  if (node->stop_after_bytes && node->total_received >= node->stop_after_bytes) {
    sp_quic_endpoint_stop(node->ep);
  }
  return 0;
}

int sp_node_stream_writable(sp_node *node, uint64_t stream_id,
                            const sp_uuid *peer, sp_tstamp now) {
  fn_stream *s = checked(node, stream_id, peer);

  (void)now;
  ++node->writable_calls;
  if (!s) {
    return SP_ERR_NOT_FOUND;
  }
  ++s->writable_calls;
  echo_flush(node, s);
  fn_pump(node, s);
  return 0;
}

int sp_node_stream_closed(sp_node *node, uint64_t stream_id,
                          const sp_uuid *peer, int reason, sp_tstamp now) {
  fn_stream *s = checked(node, stream_id, peer);

  (void)now;
  ++node->closed_calls;
  if (!s) {
    return SP_ERR_NOT_FOUND;
  }
  s->closed = 1;
  s->closed_reason = reason;
  return 0;
}

int sp_node_stream_held(const sp_node *node, uint64_t stream_id,
                        size_t *held, size_t *need) {
  size_t i;

  *held = *need = 0;
  for (i = 0; i < node->nstreams; ++i) {
    const fn_stream *s = &node->streams[i];
    if (s->id == stream_id && !s->closed && !s->close_sent) {
      if (node->held_of) {
        node->held_of(node, s, held, need);
      } else if (node->hold_frame) {
        *held = (size_t)(s->received % node->hold_frame);
        *need = *held ? node->hold_frame - *held : 0;
      }
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

sp_tstamp sp_node_get_expiry(const sp_node *node) { return node->expiry; }

int sp_node_handle_expiry(sp_node *node, sp_tstamp now) {
  size_t i;

  if (node->in_vtable) {
    ++node->reentrant_calls;
  }
  if (now >= node->expiry) {
    node->expiry = SP_TSTAMP_MAX;
    node->fired_at = now;
    ++node->expiry_calls;
    if (node->stop_on_expiry) {
      sp_quic_endpoint_stop(node->ep);
    }
  }
  if (node->stop_when_sent) {
    int done = 1;
    for (i = 0; i < node->nstreams; ++i) {
      fn_stream *s = &node->streams[i];
      if (s->to_send && (s->sent < s->to_send ||
                         sp_quic_stream_buffered(node->ep, s->id) > 0)) {
        done = 0;
      }
    }
    if (done) {
      sp_quic_endpoint_stop(node->ep);
    }
  }
  return 0;
}
