/*
 * throughput_bench.c: leader -> one follower over QUIC on 127.0.0.1, two
 * processes, entries with 256-byte payloads, in-memory stores.
 *
 * Ours (bu_pair_run): the leader process appends entries in batches and
 * notifies after each batch while fewer than `backlog` entries are
 * unacknowledged, and prunes its store to sp_handler_retention_floor every
 * 2 ms (the follower prunes its own store to what it applied), so memory
 * stays flat however long the run.  After a warm-up the follower's applied
 * sequence is read at the start and end of a `seconds`-long window:
 * entries/s, payload MB/s (entries x 256 B), and the UDP payload bytes the
 * leader sent (wire MB/s, all QUIC overhead included).
 *
 * Reference, in the same run: a raw UDP sender process blasting 1200-byte
 * datagrams at a receiver process, with the send method of the QUIC
 * endpoint: UDP GSO (a UDP_SEGMENT control message per message, up to 64
 * segments / 65000 bytes per message, the queue of 256 datagrams given to
 * one sendmmsg), or plain sendmmsg where the kernel refuses GSO; the
 * receiver uses recvmmsg with 64 slots of 2048 bytes, as the endpoint does.
 * Its figure is what the receiver got (UDP drops what it cannot take).
 *
 * Transport reference, in the same run: bare ngtcp2 + GnuTLS (bare_quic.c),
 * a sender and a receiver process with the endpoint's settings and send
 * method, one stream and nothing above it, moving as many stream bytes as
 * our leader put on the wire in its window.  throughput_ratio_quic is our
 * wire MB/s over its wire MB/s (UDP payload the sender sent per second,
 * both): how much of the transport's rate the protocol keeps.
 *
 * Runs alternate reference and ours; every figure is the median of
 * `runs`.  Summary line:
 *   throughput: entries_s A payload_mb_s B wire_mb_s C udp_mb_s D ratio E
 *     udp_method M bare_quic_mb_s F throughput_ratio_quic G
 *     cpu_us_entry_leader L cpu_us_entry_follower W
 * (CPU microseconds each process spent per entry in the window.)
 *
 *   throughput_bench [runs=3] [seconds=10] [udp_seconds=3]
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bare_quic.h"
#include "bench_util.h"

#define DGRAM 1200
#define QUEUE 256       /* datagrams per flush, as SP_QUIC_TX_PACKETS */
#define GSO_SEGS 64
#define GSO_BYTES 65000
#define RECV_BATCH 64
#define RECV_SLOT 2048

typedef struct udp_shared {
  volatile int port;
  volatile int phase; /* 0 setup, 1 warm-up, 2 window, 3 done, 4 stop */
  volatile int gso_used;
  uint64_t rx_bytes[2];
  uint64_t rx_at[2];
  uint64_t tx_bytes;
  uint64_t tx_calls;
} udp_shared;

static int udp_receiver(void *arg) {
  udp_shared *sh = arg;
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  static uint8_t buf[RECV_BATCH][RECV_SLOT];
  struct mmsghdr msgs[RECV_BATCH];
  struct iovec iov[RECV_BATCH];
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), one = 4 << 20;
  uint64_t bytes = 0;
  int seen = 0, i;

  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one));
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    bu_die("receiver socket: %s", strerror(errno));
  }
  sh->port = ntohs(a.sin_port);
  while (sh->phase != 4) {
    struct pollfd p;
    int n;
    if (sh->phase != seen) {
      if (sh->phase == 2 || sh->phase == 3) {
        sh->rx_bytes[sh->phase - 2] = bytes;
        sh->rx_at[sh->phase - 2] = bu_now();
      }
      seen = sh->phase;
    }
    p.fd = fd;
    p.events = POLLIN;
    poll(&p, 1, 5);
    for (i = 0; i < RECV_BATCH; ++i) {
      memset(&msgs[i], 0, sizeof(msgs[i]));
      iov[i].iov_base = buf[i];
      iov[i].iov_len = RECV_SLOT;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while ((n = recvmmsg(fd, msgs, RECV_BATCH, MSG_DONTWAIT, NULL)) > 0) {
      for (i = 0; i < n; ++i) {
        bytes += msgs[i].msg_len;
      }
    }
  }
  close(fd);
  return 0;
}

static int udp_sender(void *arg) {
  udp_shared *sh = arg;
  static uint8_t buf[QUEUE * DGRAM];
  struct sockaddr_in dst;
  struct mmsghdr msgs[QUEUE];
  struct iovec iov[QUEUE];
  union {
    char b[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctrl[QUEUE];
  int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 4 << 20, zero = 0;
  int gso;
  uint64_t bytes = 0, calls = 0;

  memset(buf, 0x5a, sizeof(buf));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
  gso = setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0;
  memset(&dst, 0, sizeof(dst));
  dst.sin_family = AF_INET;
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  dst.sin_port = htons((uint16_t)sh->port);
  while (sh->phase != 4 && sh->phase != 3) {
    unsigned n = 0, i = 0;
    int r;
    /* The queue of QUEUE datagrams as GSO messages of <= 64 segments and
     * <= 65000 bytes, or one message per datagram. */
    while (i < QUEUE) {
      unsigned segs = gso ? GSO_SEGS : 1;
      struct msghdr *h = &msgs[n].msg_hdr;
      if (segs * DGRAM > GSO_BYTES) {
        segs = GSO_BYTES / DGRAM;
      }
      if (segs > QUEUE - i) {
        segs = QUEUE - i;
      }
      memset(&msgs[n], 0, sizeof(msgs[n]));
      iov[n].iov_base = buf + (size_t)i * DGRAM;
      iov[n].iov_len = (size_t)segs * DGRAM;
      h->msg_iov = &iov[n];
      h->msg_iovlen = 1;
      h->msg_name = &dst;
      h->msg_namelen = sizeof(dst);
      if (segs > 1) {
        struct cmsghdr *cm;
        uint16_t seg = DGRAM;
        memset(&ctrl[n], 0, sizeof(ctrl[n]));
        h->msg_control = ctrl[n].b;
        h->msg_controllen = sizeof(ctrl[n].b);
        cm = CMSG_FIRSTHDR(h);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(seg));
        memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
      }
      i += segs;
      ++n;
    }
    r = sendmmsg(fd, msgs, n, 0);
    ++calls;
    if (r < 0) {
      if (gso && (errno == EIO || errno == EINVAL)) {
        gso = 0; /* the kernel refused GSO: plain sendmmsg from now on */
        continue;
      }
      if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR) {
        continue;
      }
      bu_die("sendmmsg: %s", strerror(errno));
    }
    for (i = 0; i < (unsigned)r; ++i) {
      bytes += iov[i].iov_len;
    }
  }
  sh->gso_used = gso;
  sh->tx_bytes = bytes;
  sh->tx_calls = calls;
  close(fd);
  return 0;
}

static double udp_run(double seconds, int *gso) {
  udp_shared *sh = bu_shm(sizeof(*sh));
  pid_t r, s;
  double mb;

  r = bu_spawn(udp_receiver, sh);
  while (!sh->port) {
    bu_sleep_ns(1000000u);
  }
  s = bu_spawn(udp_sender, sh);
  sh->phase = 1;
  bu_sleep_ns(300000000u);
  sh->phase = 2;
  bu_sleep_ns((uint64_t)(seconds * 1e9));
  sh->phase = 3;
  bu_sleep_ns(20000000u);
  sh->phase = 4;
  if (bu_join(s) != 0 || bu_join(r) != 0) {
    bu_die("udp reference failed");
  }
  mb = (double)(sh->rx_bytes[1] - sh->rx_bytes[0]) / 1e6 /
       ((double)(sh->rx_at[1] - sh->rx_at[0]) / 1e9);
  *gso = sh->gso_used;
  bu_shm_free(sh, sizeof(*sh));
  return mb;
}

int main(int argc, char **argv) {
  int runs = (int)bu_opt(argc, argv, "runs", 3);
  double seconds = (double)bu_opt(argc, argv, "seconds", 10);
  double udp_seconds = (double)bu_opt(argc, argv, "udp_seconds", 3);
  double *eps, *pmb, *wmb, *umb, *ratio, *bmb, *qratio, *cul, *cuf;
  bu_pair_cfg cfg;
  bu_cluster *cl;
  int r, gso = 0;

  if (runs < 1 || seconds < 1 || udp_seconds < 1) {
    fprintf(stderr, "usage: throughput_bench [runs=N] [seconds=N] "
                    "[udp_seconds=N]\n");
    return 2;
  }
  eps = calloc((size_t)runs, sizeof(double));
  pmb = calloc((size_t)runs, sizeof(double));
  wmb = calloc((size_t)runs, sizeof(double));
  umb = calloc((size_t)runs, sizeof(double));
  ratio = calloc((size_t)runs, sizeof(double));
  bmb = calloc((size_t)runs, sizeof(double));
  qratio = calloc((size_t)runs, sizeof(double));
  cul = calloc((size_t)runs, sizeof(double));
  cuf = calloc((size_t)runs, sizeof(double));
  cl = bu_cluster_new(2);
  bu_pair_cfg_default(&cfg);
  cfg.window_s = seconds;
  printf("throughput: %d runs; each: raw UDP %.0f s, then QUIC leader -> "
         "follower %.0f s (after %.0f s warm-up), %zu-byte payloads, batches "
         "of %zu, at most %llu unacknowledged; then bare ngtcp2 + GnuTLS "
         "moving the same wire bytes\n",
         runs, udp_seconds, seconds, cfg.warmup_s, cfg.payload, cfg.batch,
         (unsigned long long)cfg.backlog);
  for (r = 0; r < runs; ++r) {
    bu_pair_result q;
    bare_quic_result b;
    uint64_t volume;
    umb[r] = udp_run(udp_seconds, &gso);
    bu_pair_run(cl, &cfg, &q);
    eps[r] = q.entries_per_s;
    pmb[r] = q.payload_mb_s;
    wmb[r] = q.wire_mb_s;
    ratio[r] = q.payload_mb_s / umb[r];
    cul[r] = q.entries_per_s > 0 ? q.leader_cpu * 1e6 / q.entries_per_s : 0;
    cuf[r] =
        q.entries_per_s > 0 ? q.follower_cpu * 1e6 / q.entries_per_s : 0;
    printf("  run %d: udp %s %7.1f MB/s | quic %9.0f entries/s payload %6.1f "
           "MB/s wire %6.1f MB/s (acks %.2f MB/s) | %.1f datagrams/send "
           "call, %.0f entries/apply | cpu leader %.0f%% (%.2f us/entry, "
           "waited for a cpu %.0f%%) follower %.0f%% (%.2f us/entry, waited "
           "%.0f%%) | rss leader %ld KiB follower %ld KiB | ratio %.3f\n",
           r + 1, gso ? "GSO" : "sendmmsg", umb[r], q.entries_per_s,
           q.payload_mb_s, q.wire_mb_s, q.back_mb_s,
           q.send_calls ? (double)q.datagrams / (double)q.send_calls : 0,
           q.batch_entries, q.leader_cpu * 100, cul[r],
           q.leader_wait * 100, q.follower_cpu * 100, cuf[r],
           q.follower_wait * 100,
           q.leader_rss_kib, q.follower_rss_kib, ratio[r]);
    /* The bare transfer moves what our leader sent in its window. */
    volume = (uint64_t)(q.wire_mb_s * 1e6 * seconds);
    if (volume < 1000000u) {
      volume = 1000000u;
    }
    if (bare_quic_run(volume, &b) == 0) {
      bmb[r] = b.wire_mb_s;
      qratio[r] = q.wire_mb_s / b.wire_mb_s;
      printf("  run %d: bare quic %s %.1f MB stream in %.2f s: stream %6.1f "
             "MB/s wire %6.1f MB/s, %.1f datagrams/send call | ratio_quic "
             "%.3f\n",
             r + 1, b.gso ? "GSO" : "sendmmsg", (double)b.stream_bytes / 1e6,
             b.seconds, b.stream_mb_s, b.wire_mb_s,
             b.send_calls ? (double)b.datagrams / (double)b.send_calls : 0,
             qratio[r]);
    } else {
      /* A figure, never a failure: the run is reported without it. */
      bmb[r] = qratio[r] = 0;
      printf("  run %d: bare quic transfer failed (see stderr)\n", r + 1);
    }
  }
  printf("throughput: entries_s %.0f payload_mb_s %.1f wire_mb_s %.1f "
         "udp_mb_s %.1f ratio %.3f udp_method %s bare_quic_mb_s %.1f "
         "throughput_ratio_quic %.3f cpu_us_entry_leader %.2f "
         "cpu_us_entry_follower %.2f\n",
         bu_median(eps, (size_t)runs), bu_median(pmb, (size_t)runs),
         bu_median(wmb, (size_t)runs), bu_median(umb, (size_t)runs),
         bu_median(ratio, (size_t)runs), gso ? "gso" : "sendmmsg",
         bu_median(bmb, (size_t)runs), bu_median(qratio, (size_t)runs),
         bu_median(cul, (size_t)runs), bu_median(cuf, (size_t)runs));
  bu_cluster_del(cl);
  return 0;
}
