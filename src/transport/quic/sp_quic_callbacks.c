/*
 * sp_quic_callbacks.c: what ngtcp2 calls back, and the settings and
 * transport parameters of a new connection.
 *
 * Callbacks only record: received bytes are copied into their stream,
 * events are flagged, and the node hears of them later, in
 * sp_quic_stream_dispatch.  Nothing here calls the node, and nothing
 * ngtcp2 forbids inside its callbacks (read, write) happens in them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "sp_quic_int.h"

/* How long a handshake may take at most (ngtcp2's default). */
#define HANDSHAKE_TIMEOUT (10 * SP_SECONDS)

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  randombytes_buf(dest, len);
}

static int new_cid_cb(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token,
                      size_t cidlen, void *user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  randombytes_buf(cid->data, cidlen);
  cid->datalen = cidlen;
  sp_quic_reset_token(c->ep, cid, token);
  return sp_quic_cid_add(c->ep, cid, c) == 0 ? 0
                                             : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int remove_cid_cb(ngtcp2_conn *qc, const ngtcp2_cid *cid,
                         void *user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  sp_quic_cid_remove(c->ep, cid);
  return 0;
}

static int handshake_completed_cb(ngtcp2_conn *qc, void *user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  /* A refused key: sp_quic_conn_read closes with its code after this. */
  if (c->refuse_code) {
    return 0;
  }
  /* A handshake that completed without our certificate checks having
   * accepted the peer must never carry a byte. */
  if (!c->cert_ok) {
    c->verify_error = SP_ERR_HANDSHAKE;
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  c->authenticated = 1;
  c->state = SP_QUIC_CONN_OPEN;
  if (c->server) {
    c->confirmed = 1;
  }
  c->ep->output_pending = 1;
  c->ep->events_pending = 1;
  sp_quic_conn_log(c, SP_LOG_DEBUG, "%s connection authenticated",
                   c->server ? "server" : "client");
  return 0;
}

static int handshake_confirmed_cb(ngtcp2_conn *qc, void *user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  c->confirmed = 1;
  return 0;
}

/* The stream object of a peer-opened stream, made on first sight (ngtcp2
 * does not announce streams the peer opened implicitly). */
static sp_quic_stream *remote_stream(sp_quic_conn *c, int64_t qsid) {
  sp_quic_stream *s;

  if (ngtcp2_conn_is_local_stream(c->qc, qsid) ||
      !ngtcp2_is_bidi_stream(qsid)) {
    return NULL;
  }
  s = sp_quic_stream_new(c->ep, c, &c->peer, 0);
  if (!s) {
    return NULL;
  }
  s->qsid = qsid;
  s->opened_pending = 1;
  c->ep->events_pending = 1;
  if (ngtcp2_conn_set_stream_user_data(c->qc, qsid, s) != 0) {
    s->quic_done = 1;
    s->node_done = 1;
    return NULL;
  }
  return s;
}

static int stream_open_cb(ngtcp2_conn *qc, int64_t qsid, void *user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  if (!ngtcp2_is_bidi_stream(qsid)) {
    return 0;
  }
  return remote_stream(c, qsid) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int recv_stream_data_cb(ngtcp2_conn *qc, uint32_t flags, int64_t qsid,
                               uint64_t offset, const uint8_t *data,
                               size_t len, void *user_data,
                               void *stream_user_data) {
  sp_quic_conn *c = user_data;
  sp_quic_stream *s = stream_user_data;
  int fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0;

  (void)offset;
  if (!s) {
    s = remote_stream(c, qsid);
    if (!s) {
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
  }
  if (s->node_done) {
    /* Nobody will read it: give the window back at once. */
    ngtcp2_conn_extend_max_stream_offset(qc, qsid, len);
    ngtcp2_conn_extend_max_offset(qc, len);
    return 0;
  }
  return sp_quic_stream_received(s, data, len, fin) == 0
             ? 0
             : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int recv_crypto_cb(ngtcp2_conn *qc, ngtcp2_crypto_level level,
                          uint64_t offset, const uint8_t *data, size_t len,
                          void *user_data) {
  sp_quic_conn *c = user_data;

  /* The TLS session is gone once the handshake was confirmed
   * (sp_quic_conn.c): what a peer may still send then (a session
   * ticket) is nothing we use, as a client without tickets ignores it. */
  if (!c->session) {
    return 0;
  }
  return ngtcp2_crypto_recv_crypto_data_cb(qc, level, offset, data, len,
                                           user_data);
}

static int acked_cb(ngtcp2_conn *qc, int64_t qsid, uint64_t offset,
                    uint64_t len, void *user_data, void *stream_user_data) {
  (void)qc;
  (void)qsid;
  (void)user_data;
  if (stream_user_data) {
    sp_quic_stream_acked(stream_user_data, offset, len);
  }
  return 0;
}

static int stream_close_cb(ngtcp2_conn *qc, uint32_t flags, int64_t qsid,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  (void)user_data;
  if (stream_user_data) {
    sp_quic_stream_quic_closed(
        stream_user_data,
        (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0,
        app_error_code);
  }
  /* ngtcp2 does not replenish the peer's stream credit by itself. */
  if (!ngtcp2_conn_is_local_stream(qc, qsid) && ngtcp2_is_bidi_stream(qsid)) {
    ngtcp2_conn_extend_max_streams_bidi(qc, 1);
  }
  return 0;
}

static int stream_reset_cb(ngtcp2_conn *qc, int64_t qsid, uint64_t final_size,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  (void)qc;
  (void)qsid;
  (void)final_size;
  (void)user_data;
  if (stream_user_data) {
    sp_quic_stream_peer_reset(stream_user_data, app_error_code);
  }
  return 0;
}

static int extend_streams_cb(ngtcp2_conn *qc, uint64_t max_streams,
                             void *user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  (void)max_streams;
  c->streams_blocked = 0;
  c->ep->output_pending = 1;
  return 0;
}

static int extend_stream_data_cb(ngtcp2_conn *qc, int64_t qsid,
                                 uint64_t max_data, void *user_data,
                                 void *stream_user_data) {
  sp_quic_conn *c = user_data;

  (void)qc;
  (void)qsid;
  (void)max_data;
  (void)stream_user_data;
  c->ep->output_pending = 1;
  return 0;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void log_cb(void *user_data, const char *fmt, ...) {
  sp_quic_conn *c = user_data;
  char line[400];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  sp_quic_conn_log(c, SP_LOG_DEBUG, "ngtcp2: %s", line);
}

/* Packets that passed AEAD on this thread.  ngtcp2 0.12 drops a packet
 * it cannot decrypt and still returns 0 from read_pkt, and its decrypt
 * callback carries no user data: this count is the only way to tell a
 * packet from the peer from a forged one.  Per thread, because endpoints
 * may run on different threads (each one on one). */
static _Thread_local uint64_t decrypted;

uint64_t sp_quic_decrypted(void) { return decrypted; }

static int decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                      const ngtcp2_crypto_aead_ctx *aead_ctx,
                      const uint8_t *ciphertext, size_t ciphertextlen,
                      const uint8_t *nonce, size_t noncelen,
                      const uint8_t *aad, size_t aadlen) {
  int rv = ngtcp2_crypto_decrypt_cb(dest, aead, aead_ctx, ciphertext,
                                    ciphertextlen, nonce, noncelen, aad,
                                    aadlen);

  if (rv == 0) {
    ++decrypted;
  }
  return rv;
}

static void fill_callbacks(ngtcp2_callbacks *cb, int server) {
  memset(cb, 0, sizeof(*cb));
  if (server) {
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb->handshake_confirmed = handshake_confirmed_cb;
  }
  cb->extend_max_local_streams_bidi = extend_streams_cb;
  cb->recv_crypto_data = recv_crypto_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = new_cid_cb;
  cb->remove_connection_id = remove_cid_cb;
  cb->handshake_completed = handshake_completed_cb;
  cb->stream_open = stream_open_cb;
  cb->recv_stream_data = recv_stream_data_cb;
  cb->acked_stream_data_offset = acked_cb;
  cb->stream_close = stream_close_cb;
  cb->stream_reset = stream_reset_cb;
  cb->extend_max_stream_data = extend_stream_data_cb;
}

static void fill_settings(const sp_quic_endpoint *ep, ngtcp2_settings *st,
                          sp_tstamp now) {
  ngtcp2_settings_default(st);
  st->initial_ts = now;
  st->handshake_timeout = ep->cfg.idle_timeout < HANDSHAKE_TIMEOUT
                              ? ep->cfg.idle_timeout
                              : HANDSHAKE_TIMEOUT;
  st->max_tx_udp_payload_size = SP_QUIC_MAX_TX_PAYLOAD;
  /* No window auto-tuning: the windows move only as the node consumes,
   * which is what makes a slow reader throttle its sender. */
  st->max_window = 0;
  st->max_stream_window = 0;
  /* ngtcp2 logs a line per packet: only for a host that asked. */
  if (ep->cfg.debug && ep->cfg.on_log) {
    st->log_printf = log_cb;
  }
}

static void fill_params(const sp_quic_endpoint *ep,
                        ngtcp2_transport_params *p) {
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = ep->cfg.stream_recv_window;
  p->initial_max_stream_data_bidi_remote = ep->cfg.stream_recv_window;
  p->initial_max_stream_data_uni = 0;
  p->initial_max_data = ep->cfg.conn_recv_window;
  p->initial_max_streams_bidi = SP_QUIC_MAX_PEER_STREAMS;
  p->initial_max_streams_uni = 0;
  p->max_idle_timeout = ep->cfg.idle_timeout;
  p->max_udp_payload_size = SP_QUIC_MAX_RECV_PAYLOAD;
}

void sp_quic_conn_config(const sp_quic_endpoint *ep, int server,
                         sp_tstamp now, ngtcp2_callbacks *cb,
                         ngtcp2_settings *st, ngtcp2_transport_params *p) {
  fill_callbacks(cb, server);
  fill_settings(ep, st, now);
  fill_params(ep, p);
}
