/*
 * sp_quic_conn.c: one QUIC connection on ngtcp2 0.12: creation, reading,
 * writing, timers, and how it ends.  (Its callbacks: sp_quic_callbacks.c.)
 * Nothing here calls the node.
 *
 * How a connection ends decides the reason its streams are closed with:
 *   our verify callback refused the peer   -> its verify_error
 *                                            (SP_ERR_UNKNOWN_KEY, _ALPN...)
 *   the peer refused us with a TLS alert    -> certificate alerts:
 *                                            SP_ERR_UNKNOWN_KEY;
 *                                            no_application_protocol:
 *                                            SP_ERR_ALPN; others:
 *                                            SP_ERR_HANDSHAKE
 *   the peer closed with an application     -> that code's sp_error
 *   error code (our key refused: 404)          (SP_ERR_UNKNOWN_KEY...)
 *   no answer at all before the timeout     -> SP_ERR_UNREACHABLE
 *   other failures before authentication    -> SP_ERR_HANDSHAKE
 *   closed, reset or idle after it          -> SP_ERR_CONNECTION_LOST
 */
#include <string.h>

#include <ngtcp2/ngtcp2_crypto.h>
#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "sp_mem_int.h"
#include "sp_quic_int.h"

/* CONNECTION_CLOSE re-sent at most this often to stray packets. */
#define MAX_CLOSE_RESENDS 8

static void path_of(ngtcp2_path *path, const sp_quic_endpoint *ep,
                    const sp_quic_addr *remote) {
  memset(path, 0, sizeof(*path));
  path->local.addr = (ngtcp2_sockaddr *)&ep->local.u.sa;
  path->local.addrlen = ep->local.len;
  path->remote.addr = (ngtcp2_sockaddr *)&remote->u.sa;
  path->remote.addrlen = remote->len;
}

static void random_cid(ngtcp2_cid *cid) {
  uint8_t b[SP_QUIC_CID_LEN];

  randombytes_buf(b, sizeof(b));
  ngtcp2_cid_init(cid, b, sizeof(b));
}

void sp_quic_conn_free(sp_quic_conn *c) {
  sp_quic_endpoint *ep;

  if (!c) {
    return;
  }
  ep = c->ep;
  while (c->streams) {
    sp_quic_stream_conn_ended(c->streams, c->end_reason
                                              ? c->end_reason
                                              : SP_ERR_CONNECTION_LOST);
  }
  sp_quic_cid_remove_conn(ep, c);
  if (c->qc) {
    ngtcp2_conn_del(c->qc);
  }
  if (c->session) {
    gnutls_deinit(c->session);
  }
  sp_free(&ep->mem, c->close_pkt);
  sp_free(&ep->mem, c);
}

static sp_quic_conn *conn_alloc(sp_quic_endpoint *ep, int server,
                                const sp_quic_addr *remote) {
  sp_quic_conn *c = sp_calloc(&ep->mem, 1, sizeof(*c));

  if (c) {
    c->ep = ep;
    c->server = server;
    c->remote = *remote;
    c->state = SP_QUIC_CONN_HANDSHAKE;
  }
  return c;
}

int sp_quic_conn_client_new(sp_quic_conn **pc, sp_quic_endpoint *ep,
                            const sp_uuid *peer, const sp_quic_addr *remote,
                            sp_tstamp now) {
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params params;
  ngtcp2_cid dcid, scid;
  ngtcp2_path path;
  sp_quic_conn *c;
  int rv;

  if (ep->nconns >= SP_QUIC_MAX_CONNS) {
    return SP_ERR_NOMEM;
  }
  c = conn_alloc(ep, 0, remote);
  if (!c) {
    return SP_ERR_NOMEM;
  }
  c->peer = *peer;
  random_cid(&dcid);
  random_cid(&scid);
  sp_quic_conn_config(ep, 0, now, &cb, &st, &params);
  path_of(&path, ep, remote);
  rv = ngtcp2_conn_client_new(&c->qc, &dcid, &scid, &path,
                              NGTCP2_PROTO_VER_V1, &cb, &st, &params,
                              &ep->nmem, c);
  if (rv != 0) {
    sp_free(&ep->mem, c);
    return rv == NGTCP2_ERR_NOMEM ? SP_ERR_NOMEM : SP_ERR_QUIC;
  }
  rv = sp_quic_tls_session_new(c);
  if (rv == 0) {
    rv = sp_quic_cid_add(ep, &scid, c);
  }
  if (rv == 0) {
    rv = sp_quic_conn_table_add(ep, c);
  }
  if (rv != 0) {
    sp_quic_conn_free(c);
    return rv;
  }
  ++ep->stats.connections_opened;
  ep->output_pending = 1;
  *pc = c;
  return 0;
}

static int same_host(const sp_quic_addr *a, const sp_quic_addr *b) {
  if (a->u.sa.sa_family != b->u.sa.sa_family) {
    return 0;
  }
  if (a->u.sa.sa_family == AF_INET6) {
    return memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr,
                  sizeof(a->u.in6.sin6_addr)) == 0;
  }
  return a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
}

/* Accepted connections in their handshake; in `*host`, those of them
 * from `remote`'s host whose address is as proven as this one's. */
static size_t handshaking(const sp_quic_endpoint *ep,
                          const sp_quic_addr *remote, int validated,
                          size_t *host) {
  size_t i, n = 0;

  *host = 0;
  for (i = 0; i < ep->nconns; ++i) {
    const sp_quic_conn *c = ep->conns[i];
    if (c->server && c->state == SP_QUIC_CONN_HANDSHAKE) {
      ++n;
      *host += same_host(&c->remote, remote) &&
               (!validated || c->validated);
    }
  }
  return n;
}

/*
 * Ask the client to prove its address: a Retry carrying a token that
 * binds that address, the id we make up for it and the id it chose.  It
 * costs no state, and is smaller than the Initial it answers.
 */
static void send_retry(sp_quic_endpoint *ep, const ngtcp2_pkt_hd *hd,
                       const sp_quic_addr *remote, sp_tstamp now) {
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
  uint8_t buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
  ngtcp2_ssize tokenlen, n;
  ngtcp2_cid scid;

  random_cid(&scid);
  tokenlen = ngtcp2_crypto_generate_retry_token(
      token, ep->token_key, sizeof(ep->token_key), hd->version,
      &remote->u.sa, remote->len, &scid, &hd->dcid, now);
  if (tokenlen < 0) {
    return;
  }
  n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid,
                                &scid, &hd->dcid, token, (size_t)tokenlen);
  if (n > 0 && sp_quic_udp_queue(ep, buf, (size_t)n, remote) == 0) {
    ++ep->retries_sent;
  }
}

/* A client that already took one Retry ignores another (RFC 9000 17.2.5):
 * tell it the token failed instead of letting it time out. */
static void refuse_token(sp_quic_endpoint *ep, const ngtcp2_pkt_hd *hd,
                         const sp_quic_addr *remote) {
  uint8_t buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
  ngtcp2_ssize n;

  ++ep->tokens_refused;
  {
    char addr[64] = "?";
    (void)sp_quic_addr_format(remote, addr, sizeof(addr));
    sp_quic_debug(ep, "peer at %s: Retry token refused (forged, expired or "
                  "other address)", addr);
  }
  n = ngtcp2_crypto_write_connection_close(buf, sizeof(buf), hd->version,
                                           &hd->scid, &hd->dcid,
                                           NGTCP2_INVALID_TOKEN, NULL, 0);
  if (n > 0) {
    (void)sp_quic_udp_queue(ep, buf, (size_t)n, remote);
  }
}

/* 1: the Initial carries a Retry token we made for this address and id
 * (`*odcid` is then the id of the client's first Initial); 0: no Retry
 * token (a NEW_TOKEN one is never issued, so treated as none); -1: a
 * Retry token that is forged, expired or made for another address. */
static int check_token(sp_quic_endpoint *ep, const ngtcp2_pkt_hd *hd,
                       const sp_quic_addr *remote, sp_tstamp now,
                       ngtcp2_cid *odcid) {
  if (hd->token.len == 0 ||
      hd->token.base[0] != NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
    return 0;
  }
  if (ngtcp2_crypto_verify_retry_token(
          odcid, hd->token.base, hd->token.len, ep->token_key,
          sizeof(ep->token_key), hd->version, &remote->u.sa, remote->len,
          &hd->dcid, SP_QUIC_RETRY_TOKEN_TTL, now) != 0) {
    return -1;
  }
  return 1;
}

int sp_quic_conn_accept(sp_quic_endpoint *ep, const sp_quic_addr *remote,
                        const uint8_t *pkt, size_t len, sp_tstamp now) {
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params params;
  ngtcp2_pkt_hd hd;
  ngtcp2_cid scid, odcid;
  ngtcp2_path path;
  sp_quic_conn *c;
  size_t busy, host;
  int rv, validated;

  if (ngtcp2_accept(&hd, pkt, len) != 0 || ep->nconns >= SP_QUIC_MAX_CONNS) {
    return 0;
  }
  validated = check_token(ep, &hd, remote, now, &odcid);
  if (validated < 0) {
    refuse_token(ep, &hd, remote);
    return 0;
  }
  busy = handshaking(ep, remote, validated, &host);
  if (!validated &&
      (busy >= ep->retry_threshold || host >= SP_QUIC_MAX_HOST_HANDSHAKES)) {
    /* Even with every slot taken: the client re-sends its Initial, now
     * with the token, and gets the next slot that frees. */
    send_retry(ep, &hd, remote, now);
    return 0;
  }
  if (busy >= SP_QUIC_MAX_HANDSHAKES ||
      host >= SP_QUIC_MAX_HOST_HANDSHAKES) {
    return 0;
  }
  c = conn_alloc(ep, 1, remote);
  if (!c) {
    return SP_ERR_NOMEM;
  }
  c->validated = validated;
  random_cid(&scid);
  sp_quic_conn_config(ep, 1, now, &cb, &st, &params);
  /* Without original_dcid the client fails the handshake (see notes);
   * after a Retry it checks retry_scid too, and the token is what tells
   * ngtcp2 the address is validated (no 3x limit). */
  if (validated) {
    params.original_dcid = odcid;
    params.retry_scid = hd.dcid;
    params.retry_scid_present = 1;
    st.token = hd.token;
  } else {
    params.original_dcid = hd.dcid;
  }
  /* Only a server may give a token for its first id (RFC 9000 18.2). */
  params.stateless_reset_token_present = 1;
  sp_quic_reset_token(ep, &scid, params.stateless_reset_token);
  path_of(&path, ep, remote);
  rv = ngtcp2_conn_server_new(&c->qc, &hd.scid, &scid, &path, hd.version,
                              &cb, &st, &params, &ep->nmem, c);
  if (rv != 0) {
    sp_free(&ep->mem, c);
    return rv == NGTCP2_ERR_NOMEM ? SP_ERR_NOMEM : 0;
  }
  rv = sp_quic_tls_session_new(c);
  if (rv == 0) {
    rv = sp_quic_cid_add(ep, &scid, c);
  }
  /* Until the client learns our id it keeps using the one it made up. */
  if (rv == 0) {
    rv = sp_quic_cid_add(ep, &hd.dcid, c);
  }
  if (rv == 0) {
    rv = sp_quic_conn_table_add(ep, c);
  }
  if (rv != 0) {
    sp_quic_conn_free(c);
    return rv == SP_ERR_NOMEM ? rv : 0;
  }
  ++ep->stats.connections_accepted;
  sp_quic_conn_log(c, SP_LOG_DEBUG, "accepted a connection");
  sp_quic_conn_read(c, remote, pkt, len, now);
  return 0;
}

/* ---- liveness ----
 *
 * A peer that vanished (crashed, unplugged, its address gone) sends
 * nothing, not even a close.  ngtcp2 only re-sends into the void until
 * the idle timeout (minutes): we declare the connection lost when what we
 * sent has waited ack_timeout (3 PTO at least) with no acknowledgement.
 * An idle connection has nothing waiting, so the keep-alive PING gives
 * the clock something to time (and a restarted peer something to answer
 * with a stateless reset). */

static uint64_t in_flight(sp_quic_conn *c) {
  ngtcp2_conn_stat cs;

  ngtcp2_conn_get_conn_stat(c->qc, &cs);
  return cs.bytes_in_flight;
}

/* After ngtcp2 ran with `before` bytes in flight.  Bytes in flight only
 * go down when an ACK arrives (ngtcp2 declares nothing lost without
 * one), so a drop is the peer's sign of life. */
static void ack_clock(sp_quic_conn *c, uint64_t before, sp_tstamp now) {
  uint64_t after = in_flight(c);

  if (after < before) {
    c->probe_by = 0;
  }
  if (after == 0) {
    c->unacked_since = 0;
  } else if (c->unacked_since == 0 || after < before) {
    c->unacked_since = now;
  }
}

static sp_tstamp ack_deadline(sp_quic_conn *c) {
  sp_duration t = c->ep->cfg.ack_timeout, floor;
  sp_tstamp d = c->probe_by ? c->probe_by : SP_TSTAMP_MAX;

  if (c->state != SP_QUIC_CONN_OPEN) {
    return SP_TSTAMP_MAX;
  }
  if (t != 0 && c->unacked_since != 0) {
    floor = 3 * ngtcp2_conn_get_pto(c->qc);
    t = t > floor ? t : floor;
    if (c->unacked_since + t < d) {
      d = c->unacked_since + t;
    }
  }
  return d;
}

/* How long an older connection has to answer the probe, at least. */
#define PROBE_MIN (1 * SP_SECONDS)

/* From the PING on: as long as any packet may wait for its ACK
 * (ack_timeout), so a lossy path gets the same retransmissions; 3 PTO
 * and PROBE_MIN at least, for a slow path or ack_timeout 0. */
static sp_duration probe_window(sp_quic_conn *c) {
  sp_duration w = 3 * ngtcp2_conn_get_pto(c->qc);

  if (w < c->ep->cfg.ack_timeout) {
    w = c->ep->cfg.ack_timeout;
  }
  return w > PROBE_MIN ? w : PROBE_MIN;
}

/* Open connections of `c`'s peer other than `c`. */
static size_t older_of_peer(const sp_quic_conn *c) {
  const sp_quic_endpoint *ep = c->ep;
  size_t i, n = 0;

  for (i = 0; i < ep->nconns; ++i) {
    const sp_quic_conn *o = ep->conns[i];
    n += o != c && o->state == SP_QUIC_CONN_OPEN &&
         sp_uuid_equal(&o->peer, &c->peer);
  }
  return n;
}

/*
 * `c` just proved its peer, who may hold older connections with us: a
 * restarted process, a new address.  The peer is up and reachable, so an
 * older connection to it either acknowledges a PING within a few round
 * trips or is dead; meanwhile no new stream goes on it.  (A restarted
 * dialler's stateless reset cannot be checked on our side, RFC 9000
 * 10.3: without this, only the keep-alive and ack timeout would tell.)
 * Past SP_QUIC_MAX_PEER_CONNS the oldest are closed at once instead, so
 * that the newest win as they do for streams: each connection may make us
 * hold a window and a frame, and a device opening connections without
 * end must not multiply that.
 */
static void probe_older(sp_quic_conn *c, sp_tstamp now) {
  sp_quic_endpoint *ep = c->ep;
  size_t i, older = older_of_peer(c);
  size_t excess =
      older >= SP_QUIC_MAX_PEER_CONNS ? older + 1 - SP_QUIC_MAX_PEER_CONNS : 0;

  for (i = 0; i < ep->nconns; ++i) {
    sp_quic_conn *o = ep->conns[i];

    if (o == c || o->state != SP_QUIC_CONN_OPEN ||
        !sp_uuid_equal(&o->peer, &c->peer)) {
      continue;
    }
    if (excess > 0) {
      /* The table keeps creation order: this is the oldest left. */
      --excess;
      sp_quic_conn_log(o, SP_LOG_INFO,
                       "peer holds more than %d connections: oldest closed",
                       SP_QUIC_MAX_PEER_CONNS);
      sp_quic_conn_shutdown(o, SP_ERR_CONNECTION_LOST, now);
      continue;
    }
    if (o->probe_by) {
      continue;
    }
    /* The clock starts when the PING is out (sp_quic_conn_write): a
     * blocked socket must not eat the peer's time to answer. */
    o->probe_by = SP_TSTAMP_MAX;
    o->probe_pending = 1;
    if (o->suspect_at < now) {
      o->suspect_at = now;
    }
    ep->output_pending = 1;
  }
}

int sp_quic_conn_usable(const sp_quic_conn *c) {
  return c->state == SP_QUIC_CONN_HANDSHAKE || c->state == SP_QUIC_CONN_OPEN;
}

/* The connection is over: streams learn `reason`, the failure is
 * counted if it never got through its handshake. */
static void conn_ended(sp_quic_conn *c, int reason) {
  c->end_reason = reason;
  if (!(c->authenticated && c->confirmed) && !c->counted_failure) {
    c->counted_failure = 1;
    ++c->ep->stats.handshakes_failed;
  }
  sp_quic_conn_log(c, SP_LOG_DEBUG, "%s connection ended: %s",
                   c->server ? "server" : "client", sp_err_name(reason));
  while (c->streams) {
    sp_quic_stream_conn_ended(c->streams, reason);
  }
}

static int reason_before_auth(const sp_quic_conn *c) {
  if (c->verify_error) {
    return c->verify_error;
  }
  return c->heard ? SP_ERR_HANDSHAKE : SP_ERR_UNREACHABLE;
}

/* A TLS alert code, seen from the side that did not send it. */
static int reason_from_alert(uint8_t alert) {
  switch (alert) {
  case 42:  /* bad_certificate */
  case 43:  /* unsupported_certificate */
  case 44:  /* certificate_revoked */
  case 45:  /* certificate_expired */
  case 46:  /* certificate_unknown */
  case 48:  /* unknown_ca */
  case 49:  /* access_denied */
    return SP_ERR_UNKNOWN_KEY;
  case 120: /* no_application_protocol */
    return SP_ERR_ALPN;
  default:
    return SP_ERR_HANDSHAKE;
  }
}

/* The peer closed the connection. */
static int reason_from_peer_close(sp_quic_conn *c) {
  ngtcp2_connection_close_error ce;

  ngtcp2_conn_get_connection_close_error(c->qc, &ce);
  if (ce.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION &&
      ce.error_code != 0) {
    int reason = sp_quic_reason_from_app_code(ce.error_code);

    sp_quic_conn_log(c, SP_LOG_WARN,
                "closed the connection with code %llu (%s): %.*s",
                (unsigned long long)ce.error_code, sp_err_name(reason),
                (int)(ce.reasonlen < 200 ? ce.reasonlen : 200),
                ce.reason ? (const char *)ce.reason : "");
    return reason;
  }
  if (ce.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
      (ce.error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR) {
    return reason_from_alert((uint8_t)(ce.error_code & 0xff));
  }
  if (!c->authenticated) {
    return reason_before_auth(c);
  }
  return SP_ERR_CONNECTION_LOST;
}

static void enter_quiet(sp_quic_conn *c, sp_quic_conn_state state,
                        sp_tstamp now) {
  c->state = state;
  c->deadline = now + 3 * ngtcp2_conn_get_pto(c->qc);
}

/* Send CONNECTION_CLOSE carrying `ccerr`, keep it for stray packets. */
static void close_with(sp_quic_conn *c,
                       const ngtcp2_connection_close_error *ccerr,
                       int reason, sp_tstamp now) {
  uint8_t buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n;

  if (!sp_quic_conn_usable(c)) {
    return;
  }
  ngtcp2_path_storage_zero(&ps);
  n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, buf,
                                         sizeof(buf), ccerr, now);
  if (n > 0) {
    c->close_pkt = sp_malloc(&c->ep->mem, (size_t)n);
    if (c->close_pkt) {
      memcpy(c->close_pkt, buf, (size_t)n);
      c->close_pktlen = (size_t)n;
    }
    /* A full queue loses it; the peer then times out instead. */
    (void)sp_quic_udp_queue(c->ep, buf, (size_t)n, &c->remote);
    enter_quiet(c, SP_QUIC_CONN_CLOSING, now);
  } else {
    c->state = SP_QUIC_CONN_DEAD;
  }
  conn_ended(c, reason);
}

static void close_liberr(sp_quic_conn *c, int liberr, int reason,
                         sp_tstamp now) {
  ngtcp2_connection_close_error ce;

  ngtcp2_connection_close_error_set_transport_error_liberr(&ce, liberr, NULL,
                                                           0);
  close_with(c, &ce, reason, now);
}

/* Close a connection whose peer proved a key we refuse, now that the
 * handshake completed: CONNECTION_CLOSE (application) with the code's
 * absolute value (404) and a reason phrase for people. */
static void refuse_close(sp_quic_conn *c, sp_tstamp now) {
  static const char why[] = "device key refused";
  ngtcp2_connection_close_error ce;

  ngtcp2_connection_close_error_default(&ce);
  ngtcp2_connection_close_error_set_application_error(
      &ce, (uint64_t)-c->refuse_code, (const uint8_t *)why, strlen(why));
  close_with(c, &ce, c->verify_error, now);
}

static void drop(sp_quic_conn *c, int reason) {
  c->state = SP_QUIC_CONN_DEAD;
  conn_ended(c, reason);
}

static int local_reason(const sp_quic_conn *c) {
  return c->authenticated ? SP_ERR_CONNECTION_LOST : reason_before_auth(c);
}

static void on_error(sp_quic_conn *c, int liberr, sp_tstamp now) {
  ngtcp2_connection_close_error ce;
  uint8_t alert;

  switch (liberr) {
  case NGTCP2_ERR_DRAINING:
    enter_quiet(c, SP_QUIC_CONN_DRAINING, now);
    conn_ended(c, reason_from_peer_close(c));
    return;
  case NGTCP2_ERR_DROP_CONN:
  case NGTCP2_ERR_RETRY:
    drop(c, local_reason(c));
    return;
  case NGTCP2_ERR_CRYPTO:
    alert = ngtcp2_conn_get_tls_alert(c->qc);
    if (!c->verify_error) {
      /* Refused by TLS itself (no common ALPN, a bad signature...)
       * before our checks saw a key: still a refused handshake. */
      char addr[64] = "?";
      (void)sp_quic_addr_format(&c->remote, addr, sizeof(addr));
      sp_quic_log(c->ep, SP_LOG_WARN,
                  "refused handshake %s %s: TLS alert %u (%s)",
                  c->server ? "from" : "with server", addr, (unsigned)alert,
                  sp_err_name(reason_from_alert(alert)));
    }
    ngtcp2_connection_close_error_set_transport_error_tls_alert(&ce, alert,
                                                                NULL, 0);
    close_with(c, &ce,
               c->verify_error ? c->verify_error : reason_from_alert(alert),
               now);
    return;
  default:
    sp_quic_conn_log(c, SP_LOG_INFO, "connection error: ngtcp2: %s",
                     ngtcp2_strerror(liberr));
    close_liberr(c, liberr,
                 c->verify_error ? c->verify_error : local_reason(c), now);
    return;
  }
}

/* Once the handshake is confirmed, TLS has nothing left to do on a QUIC
 * connection: no session tickets (sp_quic_tls.c), key updates are
 * ngtcp2's own, and ngtcp2 copied every handshake byte it may resend.  The
 * GnuTLS session (~10 KiB a connection, measured with memory_bench) goes,
 * so a leader holds less per connected follower.  Later CRYPTO data is
 * dropped (sp_quic_callbacks.c).  Never inside an ngtcp2 call: ngtcp2
 * reaches the session through its native handle. */
static void tls_release(sp_quic_conn *c) {
  ngtcp2_conn_set_tls_native_handle(c->qc, NULL);
  gnutls_deinit(c->session);
  c->session = NULL;
}

void sp_quic_conn_read(sp_quic_conn *c, const sp_quic_addr *remote,
                       const uint8_t *pkt, size_t len, sp_tstamp now) {
  ngtcp2_path path;
  ngtcp2_pkt_info pi;
  uint64_t before, decrypted;
  int rv, was_authenticated;

  switch (c->state) {
  case SP_QUIC_CONN_CLOSING:
    if (c->close_pkt && c->close_resends < MAX_CLOSE_RESENDS) {
      ++c->close_resends;
      (void)sp_quic_udp_queue(c->ep, c->close_pkt, c->close_pktlen, remote);
    }
    return;
  case SP_QUIC_CONN_DRAINING:
  case SP_QUIC_CONN_DEAD:
    return;
  default:
    break;
  }
  c->heard = 1;
  memset(&pi, 0, sizeof(pi));
  path_of(&path, c->ep, remote);
  before = in_flight(c);
  was_authenticated = c->authenticated;
  decrypted = sp_quic_decrypted();
  rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, pkt, len, now);
  if (rv != 0) {
    on_error(c, rv, now);
    return;
  }
  /* Only a packet that passed AEAD is the peer's sign of life: an
   * undecryptable or forged one (the connection id is visible), which
   * ngtcp2 drops and still returns 0 for, must not clear a suspicion. */
  if (sp_quic_decrypted() != decrypted) {
    c->last_rx = now;
  }
  if (c->refuse_code && ngtcp2_conn_get_handshake_completed(c->qc)) {
    refuse_close(c, now);
    return;
  }
  ack_clock(c, before, now);
  if (!was_authenticated && c->authenticated) {
    probe_older(c, now);
  }
  if (c->session && c->confirmed && c->authenticated) {
    tls_release(c);
  }
}

int sp_quic_conn_take_reset(sp_quic_conn *c, const sp_quic_addr *remote,
                            const uint8_t *pkt, size_t len, sp_tstamp now) {
  ngtcp2_path path;
  ngtcp2_pkt_info pi;

  if (!sp_quic_conn_usable(c) || !sp_quic_addr_equal(&c->remote, remote)) {
    return 0;
  }
  memset(&pi, 0, sizeof(pi));
  path_of(&path, c->ep, remote);
  /* ngtcp2 discards a packet for an id it does not know, after checking
   * its tail against the peer's reset tokens.  Nothing else about the
   * connection changes: the packet proves nothing unless it is a reset. */
  if (ngtcp2_conn_read_pkt(c->qc, &path, &pi, pkt, len, now) !=
      NGTCP2_ERR_DRAINING) {
    return 0;
  }
  on_error(c, NGTCP2_ERR_DRAINING, now);
  return 1;
}

sp_tstamp sp_quic_conn_expiry(sp_quic_conn *c) {
  switch (c->state) {
  case SP_QUIC_CONN_CLOSING:
  case SP_QUIC_CONN_DRAINING:
    return c->deadline;
  case SP_QUIC_CONN_DEAD:
    return SP_TSTAMP_MAX;
  default: {
    sp_tstamp t = ngtcp2_conn_get_expiry(c->qc), a = ack_deadline(c);
    sp_tstamp l = sp_quic_stream_linger(c, 0);
    t = a < t ? a : t;
    return l < t ? l : t;
  }
  }
}

void sp_quic_conn_handle_expiry(sp_quic_conn *c, sp_tstamp now) {
  uint64_t before;
  int rv;

  switch (c->state) {
  case SP_QUIC_CONN_CLOSING:
  case SP_QUIC_CONN_DRAINING:
    if (now >= c->deadline) {
      c->state = SP_QUIC_CONN_DEAD;
    }
    return;
  case SP_QUIC_CONN_DEAD:
    return;
  default:
    break;
  }
  if (ack_deadline(c) <= now) {
    /* The close may still reach a peer that is only slow to answer. */
    sp_quic_conn_log(c, SP_LOG_INFO, "nothing acknowledged in time (%s)",
                     c->probe_by && c->probe_by <= now ? "probe"
                                                       : "ack timeout");
    sp_quic_conn_shutdown(c, SP_ERR_CONNECTION_LOST, now);
    return;
  }
  (void)sp_quic_stream_linger(c, now);
  if (ngtcp2_conn_get_expiry(c->qc) > now) {
    return;
  }
  before = in_flight(c);
  rv = ngtcp2_conn_handle_expiry(c->qc, now);
  if (rv == 0) {
    ack_clock(c, before, now);
    return;
  }
  if (rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    /* Nothing to tell a peer that went quiet. */
    drop(c, local_reason(c));
    return;
  }
  on_error(c, rv, now);
}

void sp_quic_conn_shutdown(sp_quic_conn *c, int reason, sp_tstamp now) {
  ngtcp2_connection_close_error ce;

  ngtcp2_connection_close_error_default(&ce);
  ngtcp2_connection_close_error_set_application_error(&ce, 0, NULL, 0);
  if (!c->authenticated) {
    /* Before the handshake an application close is not allowed. */
    ngtcp2_connection_close_error_set_transport_error(&ce, NGTCP2_NO_ERROR,
                                                      NULL, 0);
  }
  close_with(c, &ce, reason, now);
}

/* One line per key refused, on the refusing side: who answered or
 * called, from where, with which key, and (dialling) which was expected. */
static void log_refused_key(sp_quic_conn *c,
                            const uint8_t key[SP_PUBLIC_KEY_LEN],
                            const uint8_t *expected, int code) {
  char addr[64] = "?", fp[SP_FINGERPRINT_LEN + 1] = "?";
  char efp[SP_FINGERPRINT_LEN + 1] = "none registered";
  char uuid[SP_UUID_STRING_LEN + 1];

  (void)sp_quic_addr_format(&c->remote, addr, sizeof(addr));
  (void)sp_identity_fingerprint(key, fp, sizeof(fp));
  if (c->server) {
    sp_quic_log(c->ep, SP_LOG_WARN,
                "refused handshake from %s: key %s (%s)", addr, fp,
                sp_err_name(code));
    return;
  }
  if (expected) {
    (void)sp_identity_fingerprint(expected, efp, sizeof(efp));
  }
  sp_quic_log(c->ep, SP_LOG_WARN,
              "refused server %s: it presented key %s, expected device %s "
              "with key %s (%s)",
              addr, fp, sp_uuid_format(&c->peer, uuid), efp,
              sp_err_name(code));
}

int sp_quic_conn_refuse_later(sp_quic_conn *c,
                              const uint8_t key[SP_PUBLIC_KEY_LEN]) {
  if (!c->server || (c->verify_error != SP_ERR_UNKNOWN_KEY &&
                     c->verify_error != SP_ERR_DUPLICATE_DEVICE)) {
    return 0;
  }
  memcpy(c->peer_key, key, SP_PUBLIC_KEY_LEN);
  /* A second key for a known device is, to the client, a key not known
   * here (the precise reason is in our log and stays ours). */
  c->refuse_code = SP_ERR_UNKNOWN_KEY;
  return 1;
}

int sp_quic_conn_verify_peer(sp_quic_conn *c,
                             const uint8_t key[SP_PUBLIC_KEY_LEN]) {
  const sp_registry *reg = &c->ep->registry;
  uint8_t expected[SP_PUBLIC_KEY_LEN];
  sp_uuid dev;
  int rv;

  rv = reg->device_by_key(key, &dev, reg->user_data);
  if (rv != 0) {
    c->verify_error =
        rv == SP_ERR_NOT_FOUND ? SP_ERR_UNKNOWN_KEY : SP_ERR_REGISTRY;
    if (!c->server) {
      /* Which key the dialled device should have had. */
      log_refused_key(c, key,
                      reg->device_key(&c->peer, expected, reg->user_data) == 0
                          ? expected
                          : NULL,
                      c->verify_error);
      return -1;
    }
    log_refused_key(c, key, NULL, c->verify_error);
    return -1;
  }
  if (c->server) {
    /* The registry holds one key per device: a key that leads to a device
     * whose key is another is a second device under that id (a copied
     * id, a reinstall listed twice).  Its acks would be credited to the
     * first device's record: refuse it before anything is exchanged. */
    rv = reg->device_key(&dev, expected, reg->user_data);
    if (rv != 0) {
      /* The device it named has no key now (the registry changed in
       * between): the key is unknown, not a second device. */
      rv = rv == SP_ERR_NOT_FOUND ? SP_ERR_UNKNOWN_KEY : SP_ERR_REGISTRY;
    } else if (sodium_memcmp(expected, key, SP_PUBLIC_KEY_LEN) != 0) {
      rv = SP_ERR_DUPLICATE_DEVICE;
    }
    if (rv != 0) {
      c->verify_error = rv;
      log_refused_key(c, key, NULL, rv);
      return -1;
    }
  } else {
    /* We dialled a device: the key must be that device's, both ways. */
    rv = reg->device_key(&c->peer, expected, reg->user_data);
    if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
      c->verify_error = SP_ERR_REGISTRY;
      return -1;
    }
    if (rv != 0 || sodium_memcmp(expected, key, SP_PUBLIC_KEY_LEN) != 0 ||
        !sp_uuid_equal(&dev, &c->peer)) {
      c->verify_error = SP_ERR_UNKNOWN_KEY;
      log_refused_key(c, key, rv == 0 ? expected : NULL, c->verify_error);
      return -1;
    }
  }
  c->peer = dev;
  memcpy(c->peer_key, key, SP_PUBLIC_KEY_LEN);
  c->cert_ok = 1;
  return 0;
}

/* Next stream with bytes or a FIN to write, from the cursor on.  The
 * writer moves the cursor past a stream once it filled a packet, so a
 * stream that always has output (a follower catching up) cannot starve
 * the others of its connection. */
static sp_quic_stream *next_stream(sp_quic_conn *c) {
  sp_quic_stream *start = c->cursor ? c->cursor : c->streams, *s = start;

  if (!s) {
    return NULL;
  }
  do {
    if (s->qsid >= 0 && !s->blocked && !s->write_shut &&
        sp_quic_stream_has_output(s)) {
      c->cursor = s;
      return s;
    }
    s = s->cnext ? s->cnext : c->streams;
  } while (s != start);
  return NULL;
}

/* The node gave up on a stream because the peer went silent or what it
 * asked for never came: the connection under it may be dead. */
static int doubts_path(uint64_t code) {
  return code == (uint64_t)-SP_ERR_PEER_TIMEOUT ||
         code == (uint64_t)-SP_ERR_STALLED;
}

/* Open QUIC streams for streams the node opened, apply deferred resets. */
static void prepare_streams(sp_quic_conn *c, sp_tstamp now) {
  sp_quic_stream *s;

  for (s = c->streams; s; s = s->cnext) {
    s->blocked = 0;
    if (s->shutdown_pending && s->qsid >= 0) {
      s->shutdown_pending = 0;
      if (doubts_path(s->shutdown_code) && c->suspect_at < now) {
        /* Not reused for a new stream until the peer is heard again
         * (the reset is acknowledged, or anything else arrives). */
        c->suspect_at = now;
      }
      if (s->shutdown_both) {
        ngtcp2_conn_shutdown_stream(c->qc, s->qsid, s->shutdown_code);
      } else {
        ngtcp2_conn_shutdown_stream_write(c->qc, s->qsid, s->shutdown_code);
      }
    }
    if (s->stop_pending && s->qsid >= 0) {
      /* A refusal: the peer should stop sending, we read no more. */
      s->stop_pending = 0;
      if (!s->fin_received) {
        ngtcp2_conn_shutdown_stream_read(c->qc, s->qsid, s->linger_code);
      }
    }
    if (s->qsid < 0 && c->authenticated && !c->streams_blocked) {
      int64_t qsid;
      int rv = ngtcp2_conn_open_bidi_stream(c->qc, &qsid, s);
      if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED) {
        c->streams_blocked = 1;
        continue;
      }
      if (rv != 0) {
        continue;
      }
      s->qsid = qsid;
      if (!s->node_done) {
        s->writable_pending = 1;
        c->ep->events_pending = 1;
      }
    }
  }
}

static void remote_addr(sp_quic_addr *out, const ngtcp2_path *path,
                        const sp_quic_conn *c) {
  if (path->remote.addrlen == 0 || path->remote.addrlen > sizeof(out->u)) {
    *out = c->remote;
    return;
  }
  memset(out, 0, sizeof(*out));
  memcpy(&out->u.sa, path->remote.addr, path->remote.addrlen);
  out->len = path->remote.addrlen;
}

void sp_quic_conn_write(sp_quic_conn *c, sp_tstamp now) {
  sp_quic_endpoint *ep = c->ep;
  size_t max_payload, max_pkts, pkts = 0;
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  sp_duration keep_alive;
  uint64_t before;

  if (!sp_quic_conn_usable(c)) {
    return;
  }
  /* Only a connection with streams is kept alive: one without ends by
   * its idle timeout, as before.  The accepting side waits a quarter
   * longer, so that only the dialling side's PING (and its ACK) goes out
   * while both are up, instead of two crossing PINGs. */
  keep_alive = ep->cfg.keep_alive + (c->server ? ep->cfg.keep_alive / 4 : 0);
  if (!(c->streams && c->authenticated)) {
    keep_alive = 0;
  }
  /* A probe is a keep-alive due at once (ngtcp2 0.12 has no other way to
   * ask for a PING). */
  ngtcp2_conn_set_keep_alive_timeout(c->qc, c->probe_pending ? 1 : keep_alive);
  before = in_flight(c);
  prepare_streams(c, now);
  max_payload = ngtcp2_conn_get_max_tx_udp_payload_size(c->qc);
  max_pkts = ngtcp2_conn_get_send_quantum(c->qc) / max_payload;
  if (max_pkts == 0) {
    max_pkts = 1;
  }
  ngtcp2_path_storage_zero(&ps);
  for (;;) {
    ngtcp2_vec v[4];
    size_t vcnt = 0, total = 0, i;
    ngtcp2_ssize nwrite, ndatalen = -1;
    sp_quic_stream *s;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
    uint8_t *dest = sp_quic_udp_space(ep, max_payload);
    sp_quic_addr dst;
    int fin = 0;

    if (!dest) {
      if (sp_quic_udp_flush(ep, now) != 0 ||
          !(dest = sp_quic_udp_space(ep, max_payload))) {
        break;
      }
    }
    s = next_stream(c);
    if (s) {
      vcnt = sp_quic_stream_unsent(s, v, 4, &fin);
      for (i = 0; i < vcnt; ++i) {
        total += v[i].len;
      }
      flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      if (fin) {
        flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
      }
    }
    nwrite = ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, dest, max_payload,
                                       &ndatalen, flags, s ? s->qsid : -1, v,
                                       vcnt, now);
    if (nwrite < 0) {
      switch (nwrite) {
      case NGTCP2_ERR_WRITE_MORE:
        sp_quic_stream_mark_sent(s, (size_t)ndatalen,
                                 fin && (size_t)ndatalen == total);
        continue;
      case NGTCP2_ERR_STREAM_DATA_BLOCKED:
        s->blocked = 1;
        continue;
      case NGTCP2_ERR_STREAM_SHUT_WR:
      case NGTCP2_ERR_STREAM_NOT_FOUND:
        s->write_shut = 1;
        continue;
      default:
        on_error(c, (int)nwrite, now);
        return;
      }
    }
    if (s && ndatalen >= 0) {
      sp_quic_stream_mark_sent(s, (size_t)ndatalen,
                               fin && (size_t)ndatalen == total);
    }
    if (nwrite == 0) {
      break;
    }
    remote_addr(&dst, &ps.path, c);
    sp_quic_udp_commit(ep, (size_t)nwrite, &dst);
    if (s) {
      /* Round robin: a packet's worth per stream in turn. */
      c->cursor = s->cnext;
    }
    if (++pkts >= max_pkts) {
      /* The send quantum is spent, not necessarily the data: ask the
       * host loop to come back at once (it reads what arrived first), or
       * the rest waits for the next datagram or timer. */
      ep->output_pending = 1;
      break;
    }
  }
  ngtcp2_conn_update_pkt_tx_time(c->qc, now);
  ack_clock(c, before, now);
  if (c->probe_pending && pkts > 0 && in_flight(c) > 0) {
    /* Something the peer must acknowledge is out: its answer decides. */
    c->probe_pending = 0;
    if (c->probe_by) {
      c->probe_by = now + probe_window(c);
    }
  }
}
