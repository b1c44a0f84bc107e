/*
 * sp_quic_udp.c: the endpoint's UDP socket.
 *
 * Sending is where the speed is: packets of a step are queued, then sent
 * with one sendmmsg per batch.  With GSO, consecutive packets to the same
 * address share one message (all segments the same size but the last),
 * so the kernel walks the stack once per group instead of once per
 * packet.  If the kernel refuses GSO at run time (EIO from a device
 * without checksum offload, EINVAL), it is switched off for the socket
 * and the same packets go out one message each.
 *
 * When the socket buffer is full (EAGAIN) the unsent packets stay queued,
 * nothing new is written, and the endpoint polls for POLLOUT.
 */
#include <errno.h>
#include <netinet/udp.h>
#include <string.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sp_mem_int.h"
#include "sp_quic_int.h"

/* UDP payload of one GSO message: below 64 KiB with the headers. */
#define GSO_MAX_BYTES 65000
#define GSO_MAX_SEGMENTS 64
/* Messages given to one sendmmsg. */
#define MMSG_MAX 64
#define SOCKET_BUFFER (4 * 1024 * 1024)

static void set_int(int fd, int level, int name, int value) {
  /* Best effort: the limits may be lower; we work with what we get. */
  (void)setsockopt(fd, level, name, &value, sizeof(value));
}

int sp_quic_udp_open(sp_quic_endpoint *ep, const sp_quic_addr *bind_addr) {
  sp_quic_udp *u = &ep->udp;
  int family = bind_addr->u.sa.sa_family;
  int fd, zero = 0;

  u->fd = -1;
  u->buflen = (size_t)SP_QUIC_TX_PACKETS * SP_QUIC_MAX_TX_PAYLOAD;
  u->buf = sp_malloc(&ep->mem, u->buflen);
  u->pkts = sp_calloc(&ep->mem, SP_QUIC_TX_PACKETS, sizeof(*u->pkts));
  u->rbuf = sp_malloc(&ep->mem, (size_t)SP_QUIC_RECV_BATCH * SP_QUIC_RECV_SLOT);
  u->raddr = sp_calloc(&ep->mem, SP_QUIC_RECV_BATCH, sizeof(*u->raddr));
  if (!u->buf || !u->pkts || !u->rbuf || !u->raddr) {
    return SP_ERR_NOMEM;
  }
  fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "socket");
  }
  u->fd = fd;
  if (family == AF_INET6) {
    /* "[::]:port" also serves IPv4 peers (as v4-mapped addresses). */
    set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    /* Don't fragment, but let ngtcp2's path-MTU probes go out. */
    set_int(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE);
  } else {
    set_int(fd, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE);
  }
  set_int(fd, SOL_SOCKET, SO_RCVBUF, SOCKET_BUFFER);
  set_int(fd, SOL_SOCKET, SO_SNDBUF, SOCKET_BUFFER);
  /* The bare errno text: the host names the address it asked for
   * ("cannot listen on 127.0.0.1:7400: Address already in use"). */
  if (bind(fd, &bind_addr->u.sa, bind_addr->len) != 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "%s", "");
  }
  ep->local.len = sizeof(ep->local.u.ss);
  if (getsockname(fd, &ep->local.u.sa, &ep->local.len) != 0) {
    return sp_quic_set_error(ep, SP_ERR_IO, errno, "getsockname");
  }
  /* Probe: a kernel without UDP GSO does not know the option. */
  u->gso = ep->cfg.gso &&
           setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0;
  sp_quic_debug(ep, "socket bound, gso %s", u->gso ? "on" : "off");
  return 0;
}

void sp_quic_udp_close(sp_quic_endpoint *ep) {
  sp_quic_udp *u = &ep->udp;

  if (u->fd >= 0) {
    close(u->fd);
  }
  sp_free(&ep->mem, u->buf);
  sp_free(&ep->mem, u->pkts);
  sp_free(&ep->mem, u->rbuf);
  sp_free(&ep->mem, u->raddr);
  memset(u, 0, sizeof(*u));
  u->fd = -1;
}

static size_t queue_tail(const sp_quic_udp *u) {
  if (u->npkts == 0) {
    return 0;
  }
  return u->pkts[u->npkts - 1].off + u->pkts[u->npkts - 1].len;
}

uint8_t *sp_quic_udp_space(sp_quic_endpoint *ep, size_t need) {
  sp_quic_udp *u = &ep->udp;
  size_t tail = queue_tail(u);

  if (u->blocked || u->npkts == SP_QUIC_TX_PACKETS || need > u->buflen - tail) {
    return NULL;
  }
  return u->buf + tail;
}

void sp_quic_udp_commit(sp_quic_endpoint *ep, size_t len,
                        const sp_quic_addr *dst) {
  sp_quic_udp *u = &ep->udp;
  size_t off = queue_tail(u);
  sp_quic_pkt *p = &u->pkts[u->npkts++];

  p->off = off;
  p->len = len;
  p->dst = *dst;
}

int sp_quic_udp_queue(sp_quic_endpoint *ep, const uint8_t *pkt, size_t len,
                      const sp_quic_addr *dst) {
  uint8_t *p = sp_quic_udp_space(ep, len);

  if (!p) {
    return SP_ERR_WOULD_BLOCK;
  }
  memcpy(p, pkt, len);
  sp_quic_udp_commit(ep, len, dst);
  return 0;
}

typedef struct group {
  size_t first;
  size_t count;
  size_t bytes;
  size_t seg;
} group;

/* The packets starting at `i` that can go out in one message. */
static group make_group(const sp_quic_udp *u, size_t i) {
  const sp_quic_pkt *p = &u->pkts[i];
  group g = {i, 1, p->len, p->len};

  if (!u->gso) {
    return g;
  }
  while (i + g.count < u->npkts && g.count < GSO_MAX_SEGMENTS) {
    const sp_quic_pkt *q = &u->pkts[i + g.count];
    if (q->len > g.seg || g.bytes + q->len > GSO_MAX_BYTES ||
        q->off != p->off + g.bytes || !sp_quic_addr_equal(&q->dst, &p->dst)) {
      break;
    }
    g.bytes += q->len;
    ++g.count;
    if (q->len < g.seg) {
      break; /* only the last segment may be short */
    }
  }
  return g;
}

static void sent_group(sp_quic_endpoint *ep, const group *g) {
  ep->stats.datagrams_sent += g->count;
  ep->stats.bytes_sent += g->bytes;
  ep->udp.head = g->first + g->count;
}

int sp_quic_udp_flush(sp_quic_endpoint *ep, sp_tstamp now) {
  sp_quic_udp *u = &ep->udp;
  struct mmsghdr msgs[MMSG_MAX];
  struct iovec iov[MMSG_MAX];
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctrl[MMSG_MAX];
  group groups[MMSG_MAX];

  while (u->head < u->npkts) {
    size_t n = 0, i = u->head, k;
    int r;

    while (i < u->npkts && n < MMSG_MAX) {
      group g = make_group(u, i);
      struct msghdr *h = &msgs[n].msg_hdr;

      memset(&msgs[n], 0, sizeof(msgs[n]));
      iov[n].iov_base = u->buf + u->pkts[i].off;
      iov[n].iov_len = g.bytes;
      h->msg_iov = &iov[n];
      h->msg_iovlen = 1;
      h->msg_name = (void *)&u->pkts[i].dst.u.sa;
      h->msg_namelen = u->pkts[i].dst.len;
      if (g.count > 1) {
        struct cmsghdr *cm;
        uint16_t seg = (uint16_t)g.seg;

        memset(&ctrl[n], 0, sizeof(ctrl[n]));
        h->msg_control = ctrl[n].buf;
        h->msg_controllen = sizeof(ctrl[n].buf);
        cm = CMSG_FIRSTHDR(h);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(seg));
        memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
      }
      groups[n++] = g;
      i += g.count;
    }
    if (u->test_eagain_every &&
        ++u->test_calls % u->test_eagain_every == 0) {
      r = -1;
      errno = EAGAIN;
    } else if (u->test_gso_eio && groups[0].count > 1) {
      r = -1;
      errno = EIO;
    } else {
      r = sendmmsg(u->fd, msgs, (unsigned)n, 0);
      ++ep->stats.send_calls;
    }
    if (r < 0) {
      int err = errno;
      if (err == EINTR) {
        continue;
      }
      if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
        u->blocked = 1;
        ++u->blocked_count;
        u->retry_at = now + SP_MILLISECONDS;
        sp_quic_want_pollout(ep, 1);
        return SP_ERR_WOULD_BLOCK;
      }
      if ((err == EIO || err == EINVAL) && groups[0].count > 1) {
        sp_quic_debug(ep, "GSO refused (errno %d): sendmmsg only", err);
        u->gso = 0;
        continue;
      }
      /* EMSGSIZE (a path-MTU probe too large), unreachable networks...:
       * the packet is lost, QUIC's recovery deals with it. */
      sp_quic_debug(ep, "sendmmsg: errno %d, %zu packet(s) dropped", err,
                    groups[0].count);
      u->head = groups[0].first + groups[0].count;
      continue;
    }
    for (k = 0; k < (size_t)r; ++k) {
      sent_group(ep, &groups[k]);
    }
  }
  u->head = u->npkts = 0;
  if (u->blocked) {
    u->blocked = 0;
    sp_quic_want_pollout(ep, 0);
  }
  return 0;
}

int sp_quic_udp_recv_batch(sp_quic_endpoint *ep, sp_tstamp now) {
  sp_quic_udp *u = &ep->udp;
  struct mmsghdr msgs[SP_QUIC_RECV_BATCH];
  struct iovec iov[SP_QUIC_RECV_BATCH];
  int i, n;

  for (i = 0; i < SP_QUIC_RECV_BATCH; ++i) {
    memset(&msgs[i], 0, sizeof(msgs[i]));
    iov[i].iov_base = u->rbuf + (size_t)i * SP_QUIC_RECV_SLOT;
    iov[i].iov_len = SP_QUIC_RECV_SLOT;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &u->raddr[i].u.ss;
    msgs[i].msg_hdr.msg_namelen = sizeof(u->raddr[i].u.ss);
  }
  do {
    n = recvmmsg(u->fd, msgs, SP_QUIC_RECV_BATCH, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    /* EAGAIN: nothing waiting.  Anything else (a queued ICMP error) is
     * not about a datagram we could read. */
    return 0;
  }
  for (i = 0; i < n; ++i) {
    size_t len = msgs[i].msg_len;

    ++ep->stats.datagrams_received;
    ep->stats.bytes_received += len;
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      continue;
    }
    u->raddr[i].len = msgs[i].msg_hdr.msg_namelen;
    sp_quic_endpoint_on_datagram(ep, &u->raddr[i], iov[i].iov_base, len, now);
  }
  return n;
}
