/*
 * bare_quic.c: the transport alone, as throughput_bench's reference.
 *
 * Two processes on 127.0.0.1: a receiver (the QUIC server) and a sender
 * (the client) that opens one bidirectional stream and writes a fixed
 * number of bytes on it with FIN.  No protocol above the stream.  The
 * settings are those of src/transport/quic/: transport parameters
 * (stream window 1 MiB, connection window 4 MiB, max_udp_payload 1500),
 * max_tx_udp_payload 1452, window auto-tuning off, ngtcp2's default
 * congestion control (CUBIC), the send quantum per burst, 4 MiB socket
 * buffers, GSO (UDP_SEGMENT, <= 64 segments / 65000 bytes per message,
 * up to 64 messages per sendmmsg, 256 packets per flush) or plain
 * sendmmsg, recvmmsg with 64 slots of 2048 bytes, TLS 1.3 with the same
 * priority string and a self-signed Ed25519 certificate on each side
 * (the server requires the client's).  The library's own QUIC code is
 * not reused: its endpoint only runs under a node.
 *
 * What it does not do, on purpose: verify the peer's certificate beyond
 * GnuTLS's own signature checks, copy or retain stream data (the sender
 * writes from one constant buffer, so acknowledged data needs no release),
 * keep-alives, retry tokens, several connections.
 */
#include "bare_quic.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

/* As src/transport/quic/ (sp_quic_int.h, sp_quic_udp.c, sp_quic_tls.c,
 * sp_quic_endpoint.c). */
#define MAX_RECV_PAYLOAD 1500
#define MAX_TX_PAYLOAD 1452
#define TX_PACKETS 256
#define RECV_BATCH 64
#define RECV_SLOT 2048
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65000
#define MMSG_MAX 64
#define SOCKET_BUFFER (4 * 1024 * 1024)
#define STREAM_WINDOW (1024 * 1024)
#define CONN_WINDOW (4 * 1024 * 1024)
#define CID_LEN 16
#define ALPN "bare-quic"
static const char priority_text[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
    "-SIGN-ALL:+SIGN-EDDSA-ED25519:%DISABLE_TLS13_COMPAT_MODE";

/* The sender's source: constant, so it outlives every packet. */
#define SRC_LEN (1024 * 1024)
static uint8_t src_buf[SRC_LEN];

typedef struct bq_shared {
  volatile int port;
  volatile int failed;
  volatile int done;
  uint64_t bytes;
  /* Receiver: stream bytes, first and last arrival. */
  uint64_t rx_bytes, rx_first, rx_last;
  /* Sender: from its first stream packet to the FIN's acknowledgement. */
  uint64_t tx_bytes, tx_dgrams, tx_calls, tx_first, tx_last;
  int gso;
} bq_shared;

typedef struct bq_ep {
  bq_shared *sh;
  int server, fd, gso;
  ngtcp2_conn *conn;
  ngtcp2_crypto_conn_ref ref;
  gnutls_session_t tls;
  gnutls_certificate_credentials_t cred;
  gnutls_priority_t prio;
  struct sockaddr_in local, remote;
  ngtcp2_path path;
  uint8_t *txbuf;
  size_t txlen[TX_PACKETS];
  size_t txoff[TX_PACKETS];
  size_t npkts, txused;
  uint8_t (*rbuf)[RECV_SLOT];
  /* Sender. */
  int64_t sid;
  uint64_t sent, acked;
  int counting;
  /* Receiver. */
  int fin;
  /* UDP payload bytes, datagrams, sendmmsg calls. */
  uint64_t tx_bytes, tx_dgrams, tx_calls;
} bq_ep;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

static int new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token,
                      size_t cidlen, void *ud) {
  (void)conn;
  (void)ud;
  gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen);
  cid->datalen = cidlen;
  gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN);
  return 0;
}

static int recv_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid,
                        uint64_t off, const uint8_t *data, size_t len,
                        void *ud, void *sud) {
  bq_ep *e = ud;
  uint64_t t = now_ns();
  (void)off;
  (void)data;
  (void)sud;
  if (len) {
    if (e->sh->rx_bytes == 0) {
      e->sh->rx_first = t;
    }
    e->sh->rx_bytes += len;
    e->sh->rx_last = t;
  }
  /* Consumed at once: give the window back, as a node that keeps up. */
  ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
  ngtcp2_conn_extend_max_offset(conn, len);
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
    e->fin = 1;
  }
  return 0;
}

static int acked_cb(ngtcp2_conn *conn, int64_t sid, uint64_t off,
                    uint64_t len, void *ud, void *sud) {
  bq_ep *e = ud;
  (void)conn;
  (void)sid;
  (void)sud;
  if (off + len > e->acked) {
    e->acked = off + len;
  }
  return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  bq_ep *e = ref->user_data;
  return e->conn;
}

static int verify_cb(gnutls_session_t s) {
  (void)s;
  return 0;
}

static int tls_creds(bq_ep *e) {
  gnutls_x509_privkey_t key;
  gnutls_x509_crt_t crt;
  uint8_t serial[16];
  time_t now = time(NULL);
  int rv = -1;

  if (gnutls_certificate_allocate_credentials(&e->cred) != 0 ||
      gnutls_x509_privkey_init(&key) != 0) {
    return -1;
  }
  if (gnutls_x509_crt_init(&crt) != 0) {
    gnutls_x509_privkey_deinit(key);
    return -1;
  }
  gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
  serial[0] = (uint8_t)((serial[0] & 0x7f) | 0x01);
  if (gnutls_x509_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519, 0, 0) == 0 &&
      gnutls_x509_crt_set_version(crt, 3) == 0 &&
      gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) == 0 &&
      gnutls_x509_crt_set_activation_time(crt, now - 24 * 3600) == 0 &&
      gnutls_x509_crt_set_expiration_time(
          crt, GNUTLS_X509_NO_WELL_DEFINED_EXPIRATION) == 0 &&
      gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                    "bare", 4) == 0 &&
      gnutls_x509_crt_set_key(crt, key) == 0 &&
      gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) == 0 &&
      gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_UNKNOWN, 0) == 0 &&
      gnutls_certificate_set_x509_key(e->cred, &crt, 1, key) >= 0 &&
      gnutls_priority_init(&e->prio, priority_text, NULL) == 0) {
    gnutls_certificate_set_verify_function(e->cred, verify_cb);
    rv = 0;
  }
  gnutls_x509_crt_deinit(crt);
  gnutls_x509_privkey_deinit(key);
  return rv;
}

static int tls_session(bq_ep *e) {
  gnutls_datum_t alpn = {(unsigned char *)ALPN, sizeof(ALPN) - 1};
  unsigned flags = GNUTLS_NO_TICKETS | GNUTLS_NO_END_OF_EARLY_DATA;

  if (gnutls_init(&e->tls,
                  flags | (e->server ? GNUTLS_SERVER : GNUTLS_CLIENT)) != 0) {
    return -1;
  }
  if ((e->server ? ngtcp2_crypto_gnutls_configure_server_session(e->tls)
                 : ngtcp2_crypto_gnutls_configure_client_session(e->tls)) !=
          0 ||
      gnutls_priority_set(e->tls, e->prio) != 0 ||
      gnutls_credentials_set(e->tls, GNUTLS_CRD_CERTIFICATE, e->cred) != 0 ||
      gnutls_alpn_set_protocols(e->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) !=
          0) {
    return -1;
  }
  if (e->server) {
    gnutls_certificate_server_set_request(e->tls, GNUTLS_CERT_REQUIRE);
  }
  e->ref.get_conn = get_conn;
  e->ref.user_data = e;
  gnutls_session_set_ptr(e->tls, &e->ref);
  ngtcp2_conn_set_tls_native_handle(e->conn, e->tls);
  return 0;
}

static void set_int(int fd, int level, int name, int value) {
  setsockopt(fd, level, name, &value, sizeof(value));
}

static int open_socket(bq_ep *e) {
  socklen_t len = sizeof(e->local);
  int zero = 0;

  e->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (e->fd < 0) {
    return -1;
  }
  set_int(e->fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE);
  set_int(e->fd, SOL_SOCKET, SO_RCVBUF, SOCKET_BUFFER);
  set_int(e->fd, SOL_SOCKET, SO_SNDBUF, SOCKET_BUFFER);
  memset(&e->local, 0, sizeof(e->local));
  e->local.sin_family = AF_INET;
  e->local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(e->fd, (struct sockaddr *)&e->local, sizeof(e->local)) != 0 ||
      getsockname(e->fd, (struct sockaddr *)&e->local, &len) != 0) {
    return -1;
  }
  e->gso = setsockopt(e->fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0;
  e->txbuf = malloc((size_t)TX_PACKETS * MAX_TX_PAYLOAD);
  e->rbuf = malloc((size_t)RECV_BATCH * RECV_SLOT);
  e->path.local.addr = (ngtcp2_sockaddr *)&e->local;
  e->path.local.addrlen = sizeof(e->local);
  e->path.remote.addr = (ngtcp2_sockaddr *)&e->remote;
  e->path.remote.addrlen = sizeof(e->remote);
  return e->txbuf && e->rbuf ? 0 : -1;
}

static void config(bq_ep *e, ngtcp2_callbacks *cb, ngtcp2_settings *st,
                   ngtcp2_transport_params *p) {
  memset(cb, 0, sizeof(*cb));
  if (e->server) {
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = ngtcp2_crypto_decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = new_cid_cb;
  cb->recv_stream_data = recv_data_cb;
  cb->acked_stream_data_offset = acked_cb;

  ngtcp2_settings_default(st);
  st->initial_ts = now_ns();
  st->handshake_timeout = 10 * NGTCP2_SECONDS;
  st->max_tx_udp_payload_size = MAX_TX_PAYLOAD;
  st->max_window = 0;
  st->max_stream_window = 0;

  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = STREAM_WINDOW;
  p->initial_max_stream_data_bidi_remote = STREAM_WINDOW;
  p->initial_max_stream_data_uni = 0;
  p->initial_max_data = CONN_WINDOW;
  p->initial_max_streams_bidi = 100;
  p->initial_max_streams_uni = 0;
  p->max_idle_timeout = 180 * NGTCP2_SECONDS;
  p->max_udp_payload_size = MAX_RECV_PAYLOAD;
}

/* Send the queued packets: GSO groups of equal-size segments (the last
 * may be short), up to MMSG_MAX messages per sendmmsg. */
static int flush(bq_ep *e) {
  struct mmsghdr msgs[MMSG_MAX];
  struct iovec iov[MMSG_MAX];
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctrl[MMSG_MAX];
  size_t gcount[MMSG_MAX], gbytes[MMSG_MAX];
  size_t head = 0;

  while (head < e->npkts) {
    size_t n = 0, i = head, k;
    int r;
    while (i < e->npkts && n < MMSG_MAX) {
      size_t seg = e->txlen[i], count = 1, bytes = seg;
      struct msghdr *h = &msgs[n].msg_hdr;
      if (e->gso) {
        while (i + count < e->npkts && count < GSO_MAX_SEGMENTS) {
          size_t q = e->txlen[i + count];
          if (q > seg || bytes + q > GSO_MAX_BYTES) {
            break;
          }
          bytes += q;
          ++count;
          if (q < seg) {
            break;
          }
        }
      }
      memset(&msgs[n], 0, sizeof(msgs[n]));
      iov[n].iov_base = e->txbuf + e->txoff[i];
      iov[n].iov_len = bytes;
      h->msg_iov = &iov[n];
      h->msg_iovlen = 1;
      h->msg_name = &e->remote;
      h->msg_namelen = sizeof(e->remote);
      if (count > 1) {
        struct cmsghdr *cm;
        uint16_t s16 = (uint16_t)seg;
        memset(&ctrl[n], 0, sizeof(ctrl[n]));
        h->msg_control = ctrl[n].buf;
        h->msg_controllen = sizeof(ctrl[n].buf);
        cm = CMSG_FIRSTHDR(h);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(s16));
        memcpy(CMSG_DATA(cm), &s16, sizeof(s16));
      }
      gcount[n] = count;
      gbytes[n] = bytes;
      ++n;
      i += count;
    }
    r = sendmmsg(e->fd, msgs, (unsigned)n, 0);
    ++e->tx_calls;
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == ENOBUFS) {
        struct pollfd p = {e->fd, POLLOUT, 0};
        poll(&p, 1, 1);
        continue;
      }
      if ((errno == EIO || errno == EINVAL) && gcount[0] > 1) {
        e->gso = 0; /* the kernel refused GSO: plain sendmmsg */
        continue;
      }
      head += gcount[0]; /* EMSGSIZE (an MTU probe): lost */
      continue;
    }
    for (k = 0; k < (size_t)r; ++k) {
      e->tx_bytes += gbytes[k];
      e->tx_dgrams += gcount[k];
      head += gcount[k];
    }
  }
  e->npkts = e->txused = 0;
  return 0;
}

static void commit(bq_ep *e, size_t len) {
  e->txoff[e->npkts] = e->txused;
  e->txlen[e->npkts++] = len;
  e->txused += len;
}

/* One burst: at most the send quantum, as the endpoint does.  Returns 1
 * if the quantum was spent (more may be ready), 0, or -1 on error. */
static int write_burst(bq_ep *e) {
  size_t max_payload = ngtcp2_conn_get_max_tx_udp_payload_size(e->conn);
  size_t max_pkts = ngtcp2_conn_get_send_quantum(e->conn) / max_payload;
  size_t pkts = 0;
  uint64_t now = now_ns();
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  int more = 0;

  if (max_pkts == 0) {
    max_pkts = 1;
  }
  if (max_payload > MAX_TX_PAYLOAD) {
    max_payload = MAX_TX_PAYLOAD;
  }
  ngtcp2_path_storage_zero(&ps);
  for (;;) {
    ngtcp2_vec v;
    size_t vcnt = 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
    ngtcp2_ssize nwrite, ndatalen = -1;
    int64_t sid = -1;
    uint8_t *dest;

    if (e->npkts == TX_PACKETS ||
        e->txused + max_payload > (size_t)TX_PACKETS * MAX_TX_PAYLOAD) {
      flush(e);
    }
    dest = e->txbuf + e->txused;
    if (!e->server && e->sid >= 0 && e->sent < e->sh->bytes) {
      uint64_t left = e->sh->bytes - e->sent;
      size_t at = (size_t)(e->sent % SRC_LEN);
      v.base = src_buf + at;
      v.len = SRC_LEN - at;
      if (v.len > left) {
        v.len = (size_t)left;
      }
      vcnt = 1;
      sid = e->sid;
      flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      if (v.len == left) {
        flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
      }
    }
    nwrite = ngtcp2_conn_writev_stream(e->conn, &ps.path, &pi, dest,
                                       max_payload, &ndatalen, flags, sid,
                                       vcnt ? &v : NULL, vcnt, now);
    if (nwrite < 0) {
      if (nwrite == NGTCP2_ERR_WRITE_MORE) {
        e->sent += (uint64_t)ndatalen;
        continue;
      }
      if (nwrite == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        /* Again without stream data so ACKs still go out. */
        uint8_t *d2 = dest;
        nwrite = ngtcp2_conn_writev_stream(e->conn, &ps.path, &pi, d2,
                                           max_payload, NULL,
                                           NGTCP2_WRITE_STREAM_FLAG_NONE, -1,
                                           NULL, 0, now);
        if (nwrite < 0) {
          fprintf(stderr, "bare_quic: write: %s\n",
                  ngtcp2_strerror((int)nwrite));
          return -1;
        }
        if (nwrite == 0) {
          break;
        }
        commit(e, (size_t)nwrite);
        if (++pkts >= max_pkts) {
          more = 1;
          break;
        }
        continue;
      }
      fprintf(stderr, "bare_quic: write: %s\n", ngtcp2_strerror((int)nwrite));
      return -1;
    }
    if (sid >= 0 && ndatalen > 0) {
      e->sent += (uint64_t)ndatalen;
    }
    if (nwrite == 0) {
      break;
    }
    commit(e, (size_t)nwrite);
    if (++pkts >= max_pkts) {
      more = 1;
      break;
    }
  }
  flush(e);
  ngtcp2_conn_update_pkt_tx_time(e->conn, now);
  return more;
}

/* Receive what is there; the server creates its connection on the first
 * Initial.  Returns 0, 1 if the peer closed, -1 on error. */
static int read_batch(bq_ep *e) {
  struct mmsghdr msgs[RECV_BATCH];
  struct iovec iov[RECV_BATCH];
  struct sockaddr_in from[RECV_BATCH];
  int n, i, rounds;

  for (rounds = 0; rounds < 16; ++rounds) {
    for (i = 0; i < RECV_BATCH; ++i) {
      memset(&msgs[i], 0, sizeof(msgs[i]));
      iov[i].iov_base = e->rbuf[i];
      iov[i].iov_len = RECV_SLOT;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
    }
    n = recvmmsg(e->fd, msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) {
      return 0;
    }
    for (i = 0; i < n; ++i) {
      ngtcp2_pkt_info pi;
      uint64_t now = now_ns();
      int rv;
      memset(&pi, 0, sizeof(pi));
      if (!e->conn) {
        ngtcp2_pkt_hd hd;
        ngtcp2_callbacks cb;
        ngtcp2_settings st;
        ngtcp2_transport_params p;
        ngtcp2_cid scid;
        if (ngtcp2_accept(&hd, e->rbuf[i], msgs[i].msg_len) != 0) {
          continue;
        }
        e->remote = from[i];
        config(e, &cb, &st, &p);
        p.original_dcid = hd.dcid;
        scid.datalen = CID_LEN;
        gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, CID_LEN);
        if (ngtcp2_conn_server_new(&e->conn, &hd.scid, &scid, &e->path,
                                   hd.version, &cb, &st, &p, NULL, e) != 0 ||
            tls_session(e) != 0) {
          fprintf(stderr, "bare_quic: server connection failed\n");
          return -1;
        }
      }
      rv = ngtcp2_conn_read_pkt(e->conn, &e->path, &pi, e->rbuf[i],
                                msgs[i].msg_len, now);
      if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING) {
        return 1;
      }
      if (rv != 0) {
        fprintf(stderr, "bare_quic: read: %s\n", ngtcp2_strerror(rv));
        return -1;
      }
    }
    if (n < RECV_BATCH) {
      return 0;
    }
  }
  return 0;
}

static void wait_io(bq_ep *e, int busy) {
  struct pollfd p = {e->fd, POLLIN, 0};
  struct timespec ts = {0, 0};
  if (!busy) {
    uint64_t now = now_ns(), exp = e->conn ? ngtcp2_conn_get_expiry(e->conn)
                                           : UINT64_MAX;
    uint64_t wait = exp > now ? exp - now : 0;
    if (wait > 10000000u) {
      wait = 10000000u;
    }
    ts.tv_sec = 0;
    ts.tv_nsec = (long)wait;
  }
  ppoll(&p, 1, &ts, NULL);
}

static int expiry(bq_ep *e) {
  uint64_t now = now_ns();
  if (e->conn && ngtcp2_conn_get_expiry(e->conn) <= now) {
    int rv = ngtcp2_conn_handle_expiry(e->conn, now);
    if (rv != 0) {
      fprintf(stderr, "bare_quic: expiry: %s\n", ngtcp2_strerror(rv));
      return -1;
    }
  }
  return 0;
}

static void ep_free(bq_ep *e) {
  if (e->conn) {
    ngtcp2_conn_del(e->conn);
  }
  if (e->tls) {
    gnutls_deinit(e->tls);
  }
  if (e->prio) {
    gnutls_priority_deinit(e->prio);
  }
  if (e->cred) {
    gnutls_certificate_free_credentials(e->cred);
  }
  if (e->fd >= 0) {
    close(e->fd);
  }
  free(e->txbuf);
  free(e->rbuf);
}

static int receiver(void *arg) {
  bq_ep e;
  int rv = 0, more = 0;
  uint64_t deadline = now_ns() + 60 * NGTCP2_SECONDS;

  memset(&e, 0, sizeof(e));
  e.sh = arg;
  e.server = 1;
  e.sid = -1;
  if (tls_creds(&e) != 0 || open_socket(&e) != 0) {
    fprintf(stderr, "bare_quic: receiver setup failed\n");
    e.sh->failed = 1;
    return 1;
  }
  e.sh->port = ntohs(e.local.sin_port);
  /* Until the FIN, then a little longer so the last ACKs go out. */
  while (!e.sh->done && !e.sh->failed && now_ns() < deadline) {
    wait_io(&e, more);
    rv = read_batch(&e);
    if (rv == 0) {
      rv = expiry(&e);
    }
    if (rv == 0 && e.conn) {
      rv = write_burst(&e);
      more = rv == 1;
      rv = rv < 0 ? -1 : 0;
    }
    if (rv != 0) {
      break;
    }
  }
  if (rv < 0 || !e.fin) {
    e.sh->failed = 1;
  }
  ep_free(&e);
  return rv < 0 ? 1 : 0;
}

static int sender(void *arg) {
  bq_ep e;
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params p;
  ngtcp2_cid dcid, scid;
  int rv = 0, more = 0;
  uint64_t deadline = now_ns() + 60 * NGTCP2_SECONDS;

  memset(&e, 0, sizeof(e));
  e.sh = arg;
  e.sid = -1;
  memset(src_buf, 0x5a, sizeof(src_buf));
  if (tls_creds(&e) != 0 || open_socket(&e) != 0) {
    fprintf(stderr, "bare_quic: sender setup failed\n");
    e.sh->failed = 1;
    return 1;
  }
  memset(&e.remote, 0, sizeof(e.remote));
  e.remote.sin_family = AF_INET;
  e.remote.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  e.remote.sin_port = htons((uint16_t)e.sh->port);
  config(&e, &cb, &st, &p);
  dcid.datalen = scid.datalen = CID_LEN;
  gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, CID_LEN);
  gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, CID_LEN);
  if (ngtcp2_conn_client_new(&e.conn, &dcid, &scid, &e.path,
                             NGTCP2_PROTO_VER_V1, &cb, &st, &p, NULL,
                             &e) != 0 ||
      tls_session(&e) != 0) {
    fprintf(stderr, "bare_quic: client connection failed\n");
    e.sh->failed = 1;
    ep_free(&e);
    return 1;
  }
  while (!e.sh->failed && now_ns() < deadline) {
    if (e.sid < 0 && ngtcp2_conn_get_handshake_completed(e.conn)) {
      if (ngtcp2_conn_open_bidi_stream(e.conn, &e.sid, NULL) != 0) {
        rv = -1;
        break;
      }
      e.counting = 1;
      e.tx_bytes = e.tx_dgrams = e.tx_calls = 0;
      e.sh->tx_first = now_ns();
    }
    rv = write_burst(&e);
    if (rv < 0) {
      break;
    }
    more = rv == 1;
    rv = 0;
    if (e.sid >= 0 && e.acked >= e.sh->bytes) {
      e.sh->tx_last = now_ns();
      break;
    }
    wait_io(&e, more);
    rv = read_batch(&e);
    if (rv == 0) {
      rv = expiry(&e);
    }
    if (rv != 0) {
      break;
    }
  }
  e.sh->tx_bytes = e.tx_bytes;
  e.sh->tx_dgrams = e.tx_dgrams;
  e.sh->tx_calls = e.tx_calls;
  e.sh->gso = e.gso;
  if (rv != 0 || e.acked < e.sh->bytes) {
    fprintf(stderr, "bare_quic: sender stopped at %llu of %llu bytes\n",
            (unsigned long long)e.acked, (unsigned long long)e.sh->bytes);
    e.sh->failed = 1;
  }
  e.sh->done = 1;
  ep_free(&e);
  return e.sh->failed;
}

int bare_quic_run(uint64_t bytes, bare_quic_result *res) {
  bq_shared *sh = bu_shm(sizeof(*sh));
  pid_t r, s;
  int rc = 0;
  double tx_s, rx_s;

  memset(res, 0, sizeof(*res));
  sh->bytes = bytes;
  r = bu_spawn(receiver, sh);
  while (!sh->port && !sh->failed) {
    bu_sleep_ns(1000000u);
  }
  s = bu_spawn(sender, sh);
  if (bu_join(s) != 0 || bu_join(r) != 0 || sh->failed) {
    rc = -1;
  }
  tx_s = (double)(sh->tx_last - sh->tx_first) / 1e9;
  rx_s = (double)(sh->rx_last - sh->rx_first) / 1e9;
  if (rc == 0 && tx_s > 0 && rx_s > 0) {
    res->stream_bytes = sh->rx_bytes;
    res->seconds = tx_s;
    res->stream_mb_s = (double)sh->rx_bytes / 1e6 / rx_s;
    res->wire_mb_s = (double)sh->tx_bytes / 1e6 / tx_s;
    res->datagrams = sh->tx_dgrams;
    res->send_calls = sh->tx_calls;
    res->gso = sh->gso;
  } else {
    rc = -1;
  }
  bu_shm_free(sh, sizeof(*sh));
  return rc;
}
