/*
 * sp_quic_endpoint.c: the endpoint: one UDP socket, its connections, the
 * event-loop integration (epoll fd, expiry, process, run), the doorbell,
 * and stateless resets for connections it no longer knows.
 *
 * A process step: answer the doorbell, then in rounds of one receive
 * batch: read datagrams (routed by destination connection id), run due
 * timers (first round), deliver node events, run the node's timers (first
 * round), write and send what every connection has ready.  Interleaving
 * reads and writes keeps ACKs and window updates flowing during bulk
 * transfers.  Dead connections and finished streams are swept last.
 *
 * Connections without streams are kept, not closed: they cost a little
 * memory and nothing on the wire, and end by QUIC's idle timeout unless a
 * stream reuses them first (closing early would race with a peer opening
 * a stream on them).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/node.h"
#include "sync_protocol/uuid.h"
#include "sync_protocol/version.h"
#include "sp_abi.h"
#include "sp_identity_int.h"
#include "sp_mem_int.h"
#include "sp_quic_int.h"

/* Datagrams in one receive batch from which they are acknowledged before
 * the node sees them (a bulk transfer; a lone packet goes to the node at
 * once). */
#define EARLY_ACK_BATCH 8
/* Receive batches per process step before yielding to the caller. */
#define MAX_ROUNDS 16
#define TAG_UDP 1
#define TAG_BELL 2

void sp_quic_config_default(sp_quic_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->version = SP_QUIC_CONFIG_VERSION;
  cfg->bind_address = "0.0.0.0:0";
  cfg->idle_timeout = 180 * SP_SECONDS;
  cfg->stream_send_buffer = 1024 * 1024;
  cfg->stream_recv_window = 1024 * 1024;
  cfg->conn_recv_window = 4 * 1024 * 1024;
  cfg->gso = 1;
  cfg->alpn = SP_ALPN;
  /* A caught-up follower must notice a vanished leader within 10 s: a
   * PING after 5 s idle, then a reset within a round trip or 4 s without
   * an ACK.  The cost is in docs/performance.md (idle). */
  cfg->keep_alive = 5 * SP_SECONDS;
  cfg->ack_timeout = 4 * SP_SECONDS;
}

sp_tstamp sp_quic_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (sp_tstamp)ts.tv_sec * SP_SECONDS + (sp_tstamp)ts.tv_nsec;
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 0)))
#endif
static void vlog(const sp_quic_endpoint *ep, sp_log_level level,
                 const char *prefix, const char *fmt, va_list ap) {
  char line[512];
  int n;

  n = snprintf(line, sizeof(line), "quic[%u]: %s",
               (unsigned)sp_quic_endpoint_port(ep), prefix);
  if (n < 0 || (size_t)n >= sizeof(line)) {
    n = 0;
  }
  vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  ep->cfg.on_log(level, line, ep->cfg.log_user_data);
}

void sp_quic_debug(const sp_quic_endpoint *ep, const char *fmt, ...) {
  va_list ap;

  if (!ep->cfg.debug || !ep->cfg.on_log) {
    return;
  }
  va_start(ap, fmt);
  vlog(ep, SP_LOG_DEBUG, "", fmt, ap);
  va_end(ap);
}

void sp_quic_log(const sp_quic_endpoint *ep, sp_log_level level,
                 const char *fmt, ...) {
  va_list ap;

  if (!ep->cfg.on_log || (level == SP_LOG_DEBUG && !ep->cfg.debug)) {
    return;
  }
  va_start(ap, fmt);
  vlog(ep, level, "", fmt, ap);
  va_end(ap);
}

void sp_quic_conn_log(const sp_quic_conn *c, sp_log_level level,
                      const char *fmt, ...) {
  static const sp_uuid nil;
  const sp_quic_endpoint *ep = c->ep;
  char addr[64] = "?", uuid[SP_UUID_STRING_LEN + 1], prefix[160];
  va_list ap;

  if (!ep->cfg.on_log || (level == SP_LOG_DEBUG && !ep->cfg.debug)) {
    return;
  }
  (void)sp_quic_addr_format(&c->remote, addr, sizeof(addr));
  /* An accepted connection learns its device only from the handshake. */
  if (memcmp(&c->peer, &nil, sizeof(nil)) != 0) {
    snprintf(prefix, sizeof(prefix), "peer %s at %s: ",
             sp_uuid_format(&c->peer, uuid), addr);
  } else {
    snprintf(prefix, sizeof(prefix), "peer at %s: ", addr);
  }
  va_start(ap, fmt);
  vlog(ep, level, prefix, fmt, ap);
  va_end(ap);
}

int sp_quic_set_error(sp_quic_endpoint *ep, int rv, int err, const char *fmt,
                      ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(ep->errmsg, sizeof(ep->errmsg), fmt, ap);
  va_end(ap);
  if (err) {
    if (n < 0 || (size_t)n >= sizeof(ep->errmsg)) {
      n = 0;
    }
    snprintf(ep->errmsg + n, sizeof(ep->errmsg) - (size_t)n, "%s%s",
             n ? ": " : "", strerror(err));
    errno = err;
  }
  return rv;
}

/* The text of the calling thread's last failed sp_quic_endpoint_new: its
 * endpoint is gone by the time the host asks (sp_quic_errmsg(NULL)). */
static _Thread_local char new_errmsg[SP_QUIC_ERRMSG_MAX];

const char *sp_quic_errmsg(const sp_quic_endpoint *ep) {
  return ep ? ep->errmsg : new_errmsg;
}

/* ---- tables ---- */

static int grow(const sp_mem *mem, void **arr, size_t *cap, size_t elem) {
  size_t n = *cap ? *cap * 2 : 8;
  void *p = sp_realloc(mem, *arr, n * elem);

  if (!p) {
    return SP_ERR_NOMEM;
  }
  *arr = p;
  *cap = n;
  return 0;
}

int sp_quic_cid_add(sp_quic_endpoint *ep, const ngtcp2_cid *cid,
                    sp_quic_conn *c) {
  if (ep->ncids == ep->cids_cap &&
      grow(&ep->mem, (void **)&ep->cids, &ep->cids_cap, sizeof(*ep->cids)) !=
          0) {
    return SP_ERR_NOMEM;
  }
  ep->cids[ep->ncids].cid = *cid;
  ep->cids[ep->ncids].conn = c;
  ++ep->ncids;
  return 0;
}

void sp_quic_cid_remove(sp_quic_endpoint *ep, const ngtcp2_cid *cid) {
  size_t i;

  for (i = 0; i < ep->ncids; ++i) {
    if (ngtcp2_cid_eq(&ep->cids[i].cid, cid)) {
      ep->cids[i] = ep->cids[--ep->ncids];
      return;
    }
  }
}

void sp_quic_cid_remove_conn(sp_quic_endpoint *ep, sp_quic_conn *c) {
  size_t i = 0;

  while (i < ep->ncids) {
    if (ep->cids[i].conn == c) {
      ep->cids[i] = ep->cids[--ep->ncids];
    } else {
      ++i;
    }
  }
}

static sp_quic_conn *cid_find(sp_quic_endpoint *ep, const uint8_t *dcid,
                              size_t len) {
  size_t i;

  for (i = 0; i < ep->ncids; ++i) {
    const ngtcp2_cid *cid = &ep->cids[i].cid;
    if (cid->datalen == len && memcmp(cid->data, dcid, len) == 0) {
      return ep->cids[i].conn;
    }
  }
  return NULL;
}

int sp_quic_conn_table_add(sp_quic_endpoint *ep, sp_quic_conn *c) {
  if (ep->nconns == ep->conns_cap &&
      grow(&ep->mem, (void **)&ep->conns, &ep->conns_cap,
           sizeof(*ep->conns)) != 0) {
    return SP_ERR_NOMEM;
  }
  ep->conns[ep->nconns++] = c;
  return 0;
}

void sp_quic_want_pollout(sp_quic_endpoint *ep, int on) {
  struct epoll_event ev;

  if (ep->epollout == on || ep->epfd < 0) {
    return;
  }
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
  ev.data.u32 = TAG_UDP;
  if (epoll_ctl(ep->epfd, EPOLL_CTL_MOD, ep->udp.fd, &ev) == 0) {
    ep->epollout = on;
  }
}

/* ---- datagram routing ---- */

void sp_quic_reset_token(const sp_quic_endpoint *ep, const ngtcp2_cid *cid,
                         uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN]) {
  crypto_generichash(token, NGTCP2_STATELESS_RESET_TOKENLEN, cid->data,
                     cid->datalen, ep->reset_key, sizeof(ep->reset_key));
}

/* Resets sent per process step, at most (they answer unauthenticated
 * packets: keep them cheap to ask for). */
#define MAX_RESETS_PER_STEP 16
/* And one per source address per interval: two restarted endpoints
 * cannot chain resets at each other every time a peer restarts, and a
 * spoofed address gets at most one reset bounced at it per interval.  A
 * peer that missed its reset retransmits and gets one then. */
#define RESET_INTERVAL (100 * SP_SECONDS / 1000)
/* A reset is two bytes shorter than the packet it answers (ngtcp2 0.12's
 * randlen counts the first byte) and at most RESET_MAX bytes (RFC 9000
 * 10.3.3), so two endpoints that bounce resets at each other stop at
 * RESET_MIN, the shortest ngtcp2 recognises.  The shorter ones answer a
 * keep-alive PING (about 40 bytes), which is how an idle peer of a
 * restarted endpoint learns of the restart. */
#define RESET_MAX 42
#define RESET_MIN \
  (1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN)

/* Whether `to` may get a reset at `now`; if so, it is logged as sent,
 * in its own slot or the oldest. */
static int reset_allowed(sp_quic_endpoint *ep, const sp_quic_addr *to,
                         sp_tstamp now) {
  size_t i, slot = 0;

  for (i = 0; i < SP_QUIC_RESET_LOG; ++i) {
    if (ep->reset_log[i].at != 0 &&
        sp_quic_addr_equal(&ep->reset_log[i].to, to)) {
      if (now - ep->reset_log[i].at < RESET_INTERVAL) {
        return 0;
      }
      slot = i;
      break;
    }
    if (ep->reset_log[i].at < ep->reset_log[slot].at) {
      slot = i;
    }
  }
  ep->reset_log[slot].to = *to;
  ep->reset_log[slot].at = now ? now : 1;
  return 1;
}

/*
 * A short-header packet for a connection id we do not know: most likely
 * the peer of a connection this device had before it restarted.  A
 * stateless reset (RFC 9000 10.3) ends that connection at once instead of
 * after its idle timeout; the token proves we issued the id, because it
 * is derived from the device key.
 */
static void send_reset(sp_quic_endpoint *ep, const sp_quic_addr *from,
                       const uint8_t *dcid, size_t dcidlen, size_t len,
                       sp_tstamp now) {
  uint8_t pkt[RESET_MAX], rnd[RESET_MAX];
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
  size_t size = len - 1 < RESET_MAX ? len - 1 : RESET_MAX;
  ngtcp2_cid cid;
  ngtcp2_ssize n;

  if (dcidlen != SP_QUIC_CID_LEN || len <= RESET_MIN ||
      ep->resets_sent >= MAX_RESETS_PER_STEP ||
      !reset_allowed(ep, from, now)) {
    return;
  }
  ngtcp2_cid_init(&cid, dcid, dcidlen);
  sp_quic_reset_token(ep, &cid, token);
  randombytes_buf(rnd, sizeof(rnd));
  n = ngtcp2_pkt_write_stateless_reset(pkt, size, token, rnd,
                                       size - 1 - sizeof(token));
  if (n > 0 && sp_quic_udp_queue(ep, pkt, (size_t)n, from) == 0) {
    ++ep->resets_sent;
    sp_quic_debug(ep, "stateless reset sent for an unknown connection");
  }
}

void sp_quic_endpoint_on_datagram(sp_quic_endpoint *ep,
                                  const sp_quic_addr *from,
                                  const uint8_t *data, size_t len,
                                  sp_tstamp now) {
  ngtcp2_version_cid vc;
  sp_quic_conn *c;

  /* Version negotiation is not offered: every peer speaks QUIC v1. */
  if (ngtcp2_pkt_decode_version_cid(&vc, data, len, SP_QUIC_CID_LEN) != 0) {
    return;
  }
  c = cid_find(ep, vc.dcid, vc.dcidlen);
  if (c) {
    sp_quic_conn_read(c, from, data, len, now);
  } else if (vc.version != 0) {
    /* Only an Initial can start a connection; ngtcp2_accept says which. */
    (void)sp_quic_conn_accept(ep, from, data, len, now);
  } else {
    size_t i;
    /* A peer's stateless reset carries no id of ours: let the
     * connections with that peer check its token first. */
    for (i = 0; i < ep->nconns; ++i) {
      if (sp_quic_conn_take_reset(ep->conns[i], from, data, len, now)) {
        return;
      }
    }
    send_reset(ep, from, vc.dcid, vc.dcidlen, len, now);
  }
}

/* ---- creation ---- */

static int check_config(const sp_quic_config *cfg) {
  size_t alpnlen;

  if (cfg->version == 0 || cfg->version > SP_QUIC_CONFIG_VERSION) {
    return SP_ERR_VERSION;
  }
  if (!cfg->bind_address || cfg->idle_timeout == 0 ||
      cfg->stream_send_buffer == 0 || cfg->stream_recv_window == 0 ||
      cfg->conn_recv_window == 0 || !cfg->alpn) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* QUIC varints end at 2^62. */
  if ((uint64_t)cfg->stream_recv_window >= ((uint64_t)1 << 62) ||
      (uint64_t)cfg->conn_recv_window >= ((uint64_t)1 << 62)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  alpnlen = strlen(cfg->alpn);
  if (alpnlen == 0 || alpnlen > 255) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* Both are added to timestamps: bounded, no sum wraps into the past.
   * A version 1 struct ends before them. */
  if (cfg->version >= 2 && (cfg->keep_alive > SP_QUIC_MAX_TIMER ||
                            cfg->ack_timeout > SP_QUIC_MAX_TIMER)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

static int check_registry(const sp_registry *reg) {
  /* Only version 1's callbacks are used here, so every version is fine. */
  if (reg->version == 0 || reg->version > SP_REGISTRY_VERSION) {
    return SP_ERR_VERSION;
  }
  if (!reg->device_key || !reg->device_by_key || !reg->address_hints) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

static int setup_poll(sp_quic_endpoint *ep) {
  struct epoll_event ev;

  ep->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (ep->epfd < 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "epoll_create1");
  }
  ep->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ep->evfd < 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "eventfd");
  }
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.u32 = TAG_UDP;
  if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->udp.fd, &ev) != 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "epoll_ctl");
  }
  ev.data.u32 = TAG_BELL;
  if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->evfd, &ev) != 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "epoll_ctl");
  }
  return 0;
}

/* A failed sp_quic_endpoint_new: keep its text for sp_quic_errmsg(NULL)
 * and its errno for the caller across the cleanup. */
static int new_failed(sp_quic_endpoint *ep, int rv) {
  int err = errno;

  if (ep && ep->errmsg[0]) {
    memcpy(new_errmsg, ep->errmsg, sizeof(new_errmsg));
  } else {
    snprintf(new_errmsg, sizeof(new_errmsg), "%s", sp_strerror(rv));
  }
  sp_quic_endpoint_del(ep);
  errno = err;
  return rv;
}

int sp_quic_endpoint_new(sp_quic_endpoint **pep, const sp_quic_config *cfg,
                         const sp_identity *identity,
                         const sp_registry *registry, const sp_mem *mem) {
  sp_quic_endpoint *ep;
  sp_quic_addr bind_addr;
  sp_quic_config full;
  sp_mem m;
  size_t alpnlen;
  int rv;

  if (pep) {
    *pep = NULL;
  }
  new_errmsg[0] = '\0';
  if (!pep || !cfg || !identity || !registry) {
    return new_failed(NULL, SP_ERR_INVALID_ARGUMENT);
  }
  rv = check_config(cfg);
  if (rv == 0) {
    rv = check_registry(registry);
  }
  if (rv == 0 && cfg->version < SP_QUIC_CONFIG_VERSION) {
    /* An older caller's struct ends before the newer fields. */
    sp_quic_config_default(&full);
    memcpy(&full, cfg, cfg->version == 1 ? offsetof(sp_quic_config, keep_alive)
                                         : offsetof(sp_quic_config, on_log));
    full.version = SP_QUIC_CONFIG_VERSION;
    cfg = &full;
  }
  if (rv != 0) {
    return new_failed(NULL, rv);
  }
  if (sp_quic_addr_parse(&bind_addr, cfg->bind_address,
                         strlen(cfg->bind_address)) != 0) {
    snprintf(new_errmsg, sizeof(new_errmsg), "bad address \"%.200s\"",
             cfg->bind_address);
    return SP_ERR_ADDRESS;
  }
  if (sodium_init() < 0) {
    return new_failed(NULL, SP_ERR_INTERNAL);
  }
  sp_mem_resolve(&m, mem);
  ep = sp_calloc(&m, 1, sizeof(*ep));
  if (!ep) {
    return new_failed(NULL, SP_ERR_NOMEM);
  }
  ep->mem = m;
  /* ngtcp2 allocates through the same hooks (identical signatures). */
  ep->nmem.user_data = m.user_data;
  ep->nmem.malloc = m.malloc;
  ep->nmem.free = m.free;
  ep->nmem.calloc = m.calloc;
  ep->nmem.realloc = m.realloc;
  ep->epfd = ep->evfd = -1;
  ep->udp.fd = -1;
  ep->cfg = *cfg;
  ep->cfg.bind_address = NULL;
  /* One stream's worth for all of them together: a lone stream (bulk
   * catch-up) still gets its whole buffer, while many catching up at
   * once share it (each keeps SP_QUIC_STREAM_FLOOR).  What they hold at
   * the peak is heap the allocator keeps afterwards, and ngtcp2 keeps
   * its per-packet records for the most packets a connection ever had
   * in flight: 4 x this cost a leader of 64 followers ~50 KiB of RSS per
   * follower (memory_bench) for no throughput. */
  ep->send_budget = cfg->stream_send_buffer;
  ep->identity = identity;
  /* An older registry is a shorter struct: read only its own bytes. */
  memcpy(&ep->registry, registry,
         registry->version >= 3   ? sizeof(*registry)
         : registry->version == 2 ? offsetof(sp_registry, may_lead)
                                  : offsetof(sp_registry, can_write));
  ep->next_stream_id = 1;
  atomic_init(&ep->stop, 0);
  atomic_init(&ep->woken, 0);
  alpnlen = strlen(cfg->alpn);
  ep->alpn = sp_malloc(&m, alpnlen + 1);
  if (!ep->alpn) {
    return new_failed(ep, SP_ERR_NOMEM);
  }
  memcpy(ep->alpn, cfg->alpn, alpnlen + 1);
  ep->cfg.alpn = ep->alpn;
  {
    uint8_t seed[SP_SECRET_SEED_LEN];
    sp_identity_secret_seed(identity, seed);
    crypto_kdf_derive_from_key(ep->reset_key, sizeof(ep->reset_key), 1,
                               "spreset1", seed);
    sodium_memzero(seed, sizeof(seed));
  }
  randombytes_buf(ep->token_key, sizeof(ep->token_key));
  ep->retry_threshold = SP_QUIC_RETRY_THRESHOLD;
  rv = sp_quic_udp_open(ep, &bind_addr);
  if (rv == 0) {
    rv = sp_quic_tls_init(&ep->tls, identity, identity, ep->alpn);
    if (rv == SP_ERR_TLS) {
      (void)sp_quic_set_error(ep, rv, 0,
                              "GnuTLS: cannot make the certificate of the "
                              "device key (Ed25519 in TLS 1.3 needed)");
    }
  }
  if (rv == 0) {
    rv = setup_poll(ep);
  }
  if (rv != 0) {
    return new_failed(ep, rv);
  }
  *pep = ep;
  return 0;
}

static void sweep_conns(sp_quic_endpoint *ep) {
  size_t i, k = 0;

  for (i = 0; i < ep->nconns; ++i) {
    sp_quic_conn *c = ep->conns[i];
    if (c->state == SP_QUIC_CONN_DEAD) {
      sp_quic_conn_free(c);
    } else {
      ep->conns[k++] = c;
    }
  }
  ep->nconns = k;
}

void sp_quic_endpoint_del(sp_quic_endpoint *ep) {
  sp_tstamp now;
  size_t i;

  if (!ep) {
    return;
  }
  /* The node may be gone already: nothing below may call it. */
  ep->node = NULL;
  now = sp_quic_now();
  for (i = 0; i < ep->nconns; ++i) {
    sp_quic_conn *c = ep->conns[i];
    if (sp_quic_conn_usable(c)) {
      /* Last bytes and FINs the node queued, then the close. */
      sp_quic_conn_write(c, now);
      (void)sp_quic_udp_flush(ep, now);
      sp_quic_conn_shutdown(c, SP_ERR_CONNECTION_LOST, now);
    }
  }
  if (ep->udp.fd >= 0 && ep->udp.buf) {
    (void)sp_quic_udp_flush(ep, now);
  }
  for (i = 0; i < ep->nconns; ++i) {
    sp_quic_conn_free(ep->conns[i]);
  }
  for (i = 0; i < ep->nstreams; ++i) {
    sp_quic_stream_free(ep->streams[i]);
  }
  sp_quic_chunk_pool_free(ep);
  sp_free(&ep->mem, ep->conns);
  sp_free(&ep->mem, ep->streams);
  sp_free(&ep->mem, ep->cids);
  sp_free(&ep->mem, ep->hints);
  sp_quic_tls_free(&ep->tls);
  sp_quic_udp_close(ep);
  if (ep->epfd >= 0) {
    close(ep->epfd);
  }
  if (ep->evfd >= 0) {
    close(ep->evfd);
  }
  sp_free(&ep->mem, ep->alpn);
  sodium_memzero(ep->reset_key, sizeof(ep->reset_key));
  sodium_memzero(ep->token_key, sizeof(ep->token_key));
  sp_free(&ep->mem, ep);
}

int sp_quic_endpoint_get_transport_versioned(sp_quic_endpoint *ep,
                                             int version, sp_transport *out) {
  sp_transport full;
  size_t n = sp_abi_transport_size(version);

  if (!ep || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (n == 0) {
    return SP_ERR_VERSION;
  }
  sp_quic_transport_fill(ep, &full);
  full.version = (unsigned int)version;
  sp_abi_copy(out, &full, n);
  return 0;
}

int sp_quic_endpoint_attach(sp_quic_endpoint *ep, sp_node *node) {
  if (!ep) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (ep->node && node && ep->node != node) {
    return SP_ERR_INVALID_STATE;
  }
  ep->node = node;
  /* Streams that arrived before the node did are announced now. */
  ep->events_pending = 1;
  return 0;
}

int sp_quic_endpoint_fd(const sp_quic_endpoint *ep) { return ep->epfd; }

int sp_quic_endpoint_local_address(const sp_quic_endpoint *ep, char *buf,
                                   size_t buflen) {
  int rv;

  if (!ep || !buf) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = sp_quic_addr_format(&ep->local, buf, buflen);
  return rv == SP_ERR_ADDRESS ? SP_ERR_IO : rv;
}

uint16_t sp_quic_endpoint_port(const sp_quic_endpoint *ep) {
  if (ep->local.u.sa.sa_family == AF_INET6) {
    return ntohs(ep->local.u.in6.sin6_port);
  }
  return ntohs(ep->local.u.in.sin_port);
}

/* Version 2 of the struct must add its size here. */
_Static_assert(SP_QUIC_STATS_VERSION == 1, "sp_quic_stats sizes");

int sp_quic_endpoint_get_stats_versioned(const sp_quic_endpoint *ep,
                                         int version, sp_quic_stats *out) {
  if (!ep || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  sp_abi_copy(out, &ep->stats, SP_ABI_END(sp_quic_stats, send_calls));
  return 0;
}

/* ---- the loop ---- */

sp_tstamp sp_quic_endpoint_get_expiry(const sp_quic_endpoint *ep) {
  sp_tstamp t = SP_TSTAMP_MAX, x;
  size_t i;

  if ((ep->events_pending && ep->node) ||
      (ep->output_pending && !ep->udp.blocked)) {
    return 0;
  }
  if (ep->udp.blocked && ep->udp.retry_at < t) {
    t = ep->udp.retry_at;
  }
  for (i = 0; i < ep->nconns; ++i) {
    x = sp_quic_conn_expiry(ep->conns[i]);
    if (x < t) {
      t = x;
    }
  }
  if (ep->node) {
    x = sp_node_get_expiry(ep->node);
    if (x < t) {
      t = x;
    }
  }
  return t;
}

static void write_all(sp_quic_endpoint *ep, sp_tstamp now) {
  size_t i;

  if (ep->udp.blocked && sp_quic_udp_flush(ep, now) != 0) {
    return;
  }
  ep->output_pending = 0;
  for (i = 0; i < ep->nconns; ++i) {
    sp_quic_conn_write(ep->conns[i], now);
  }
  (void)sp_quic_udp_flush(ep, now);
}

static void run_timers(sp_quic_endpoint *ep, sp_tstamp now) {
  size_t i;

  for (i = 0; i < ep->nconns; ++i) {
    sp_quic_conn *c = ep->conns[i];
    if (sp_quic_conn_expiry(c) <= now) {
      sp_quic_conn_handle_expiry(c, now);
    }
  }
}

static int answer_doorbell(sp_quic_endpoint *ep) {
  uint64_t v;

  while (read(ep->evfd, &v, sizeof(v)) == (ssize_t)sizeof(v)) {
  }
  if (atomic_exchange(&ep->woken, 0) && ep->cfg.on_wake &&
      ep->cfg.on_wake(ep, ep->cfg.wake_user_data) != 0) {
    return SP_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int sp_quic_endpoint_process(sp_quic_endpoint *ep, sp_tstamp now) {
  int round, rv, cbrv;

  if (!ep) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  cbrv = answer_doorbell(ep);
  ep->resets_sent = 0;
  rv = 0;
  for (round = 0; round < MAX_ROUNDS; ++round) {
    int n = sp_quic_udp_recv_batch(ep, now);

    if (round == 0) {
      run_timers(ep, now);
    }
    if (n >= EARLY_ACK_BATCH && ep->events_pending && ep->node) {
      /* Acknowledge what arrived before the node gets it: the node may
       * spend milliseconds in a store's apply, and a peer that hears no
       * ACK meanwhile sees that time as RTT and shrinks its window. */
      write_all(ep, now);
    }
    rv = sp_quic_stream_dispatch(ep, now);
    if (rv == 0 && round == 0 && ep->node &&
        sp_node_get_expiry(ep->node) <= now) {
      rv = sp_node_handle_expiry(ep->node, now);
    }
    if (rv != 0) {
      break;
    }
    write_all(ep, now);
    if (n < SP_QUIC_RECV_BATCH) {
      break;
    }
    /* A long step: keep ngtcp2's clock (RTT, pacing) honest. */
    {
      sp_tstamp t = sp_quic_now();
      if (t > now) {
        now = t;
      }
    }
  }
  sweep_conns(ep);
  sp_quic_stream_sweep(ep);
  rv = rv != 0 ? rv : cbrv;
  if (rv != 0) {
    (void)sp_quic_set_error(ep, rv, 0, "%s",
                            rv == SP_ERR_CALLBACK_FAILURE
                                ? "a host callback failed"
                                : sp_strerror(rv));
  }
  return rv;
}

int sp_quic_endpoint_run(sp_quic_endpoint *ep) {
  if (!ep) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (;;) {
    struct pollfd p;
    struct timespec ts, *tsp = NULL;
    sp_tstamp exp, now;
    int rv;

    if (atomic_exchange(&ep->stop, 0)) {
      return 0;
    }
    rv = sp_quic_endpoint_process(ep, sp_quic_now());
    if (rv != 0) {
      return rv;
    }
    if (atomic_exchange(&ep->stop, 0)) {
      return 0;
    }
    exp = sp_quic_endpoint_get_expiry(ep);
    now = sp_quic_now();
    if (exp <= now) {
      continue;
    }
    if (exp != SP_TSTAMP_MAX) {
      sp_duration d = exp - now;
      ts.tv_sec = (time_t)(d / SP_SECONDS);
      ts.tv_nsec = (long)(d % SP_SECONDS);
      tsp = &ts;
    }
    p.fd = ep->epfd;
    p.events = POLLIN;
    p.revents = 0;
    if (ppoll(&p, 1, tsp, NULL) < 0 && errno != EINTR) {
      return sp_quic_set_error(ep, SP_ERR_IO, errno, "ppoll");
    }
  }
}

int sp_quic_endpoint_wake(sp_quic_endpoint *ep) {
  uint64_t one = 1;
  int saved = errno, rv = 0;

  atomic_store(&ep->woken, 1);
  if (write(ep->evfd, &one, sizeof(one)) != (ssize_t)sizeof(one) &&
      errno != EAGAIN) {
    rv = SP_ERR_IO;
  }
  errno = saved;
  return rv;
}

void sp_quic_endpoint_stop(sp_quic_endpoint *ep) {
  uint64_t one = 1;
  int saved = errno;

  atomic_store(&ep->stop, 1);
  /* EAGAIN means the counter is full: the loop is awake anyway. */
  (void)!write(ep->evfd, &one, sizeof(one));
  errno = saved;
}

int sp_quic_endpoint_test_forge_cert(sp_quic_endpoint *ep,
                                     const sp_identity *cert_owner) {
  sp_quic_tls_free(&ep->tls);
  return sp_quic_tls_init(&ep->tls, cert_owner, ep->identity, ep->alpn);
}
