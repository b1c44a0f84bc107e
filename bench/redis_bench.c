/*
 * redis_bench.c: replicating the same entries with Redis 7 and with us.
 *
 * Redis: a master and a replica on 127.0.0.1 (started by scripts/bench
 * without persistence).  A pipelined client written here in raw RESP
 * sends `count` commands XADD <key> * d <256 bytes> to the master over one
 * non-blocking connection, writing while it reads the replies.  The clock
 * starts before the first byte is written and stops when the replica's
 * slave_repl_offset (INFO replication, polled every 200 us from a second
 * connection) reaches the master's master_repl_offset read after the last
 * reply: every entry is then in the replica.  Each run uses a fresh stream
 * key and deletes it afterwards.
 *
 * Ours: the same count of entries with 256-byte payloads from the first
 * append in the leader process to the follower's ENTRIES_APPLIED event for
 * the last one, over QUIC between two processes (bu_pair_run, count mode).
 *
 * Runs alternate the two; figures are medians.  Summary line:
 *   redis: ours_entries_s A redis_entries_s B ratio C
 *
 *   redis_bench master=PORT replica=PORT [count=500000] [runs=3]
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_util.h"

#define PAYLOAD 256
/* Commands formatted per refill of the send buffer. */
#define CHUNK 512

typedef struct conn {
  int fd;
  /* Received bytes not parsed yet. */
  char *in;
  size_t inlen, incap;
} conn;

static void conn_open(conn *c, int port) {
  struct sockaddr_in a;
  int one = 1;

  memset(c, 0, sizeof(*c));
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    bu_die("connect to redis on port %d: %s", port, strerror(errno));
  }
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c->incap = 1 << 20;
  c->in = malloc(c->incap);
  if (!c->in) {
    bu_die("out of memory");
  }
}

static void conn_close(conn *c) {
  close(c->fd);
  free(c->in);
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      bu_die("write to redis: %s", strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
}

/* Read what is available into c->in (blocking if `block`); returns the
 * byte count read. */
static size_t conn_fill(conn *c, int block) {
  ssize_t r;

  if (c->incap - c->inlen < 65536) {
    char *p = realloc(c->in, c->incap * 2);
    if (!p) {
      bu_die("out of memory");
    }
    c->in = p;
    c->incap *= 2;
  }
  r = recv(c->fd, c->in + c->inlen, c->incap - c->inlen,
           block ? 0 : MSG_DONTWAIT);
  if (r == 0) {
    bu_die("redis closed the connection");
  }
  if (r < 0) {
    if (!block && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    }
    bu_die("recv from redis: %s", strerror(errno));
  }
  c->inlen += (size_t)r;
  return (size_t)r;
}

/* Length of one complete reply at `p` (simple, error, integer or bulk),
 * 0 if incomplete.  An error reply is fatal. */
static size_t reply_len(const char *p, size_t n) {
  const char *nl = memchr(p, '\n', n);
  size_t head;
  long blen;

  if (!nl) {
    return 0;
  }
  head = (size_t)(nl - p) + 1;
  switch (p[0]) {
  case '+':
  case ':':
    return head;
  case '-':
    bu_die("redis error: %.*s", (int)head, p);
  case '$':
    blen = strtol(p + 1, NULL, 10);
    if (blen < 0) {
      return head;
    }
    return n >= head + (size_t)blen + 2 ? head + (size_t)blen + 2 : 0;
  default:
    bu_die("unexpected redis reply byte 0x%02x", (unsigned char)p[0]);
  }
}

/* Parse complete replies; returns how many were consumed. */
static size_t conn_take(conn *c) {
  size_t off = 0, n = 0, len;

  while (off < c->inlen && (len = reply_len(c->in + off, c->inlen - off))) {
    off += len;
    ++n;
  }
  memmove(c->in, c->in + off, c->inlen - off);
  c->inlen -= off;
  return n;
}

/* Send a command made of `argc` arguments and wait for its one reply,
 * copied NUL-terminated into `out` (may be NULL). */
static void command(conn *c, char *out, size_t outcap, int argc, ...) {
  char buf[1024];
  size_t len, rl;
  va_list ap;
  int i;

  len = (size_t)snprintf(buf, sizeof(buf), "*%d\r\n", argc);
  va_start(ap, argc);
  for (i = 0; i < argc; ++i) {
    const char *a = va_arg(ap, const char *);
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "$%zu\r\n%s\r\n",
                            strlen(a), a);
  }
  va_end(ap);
  write_all(c->fd, buf, len);
  while ((rl = c->inlen ? reply_len(c->in, c->inlen) : 0) == 0) {
    conn_fill(c, 1);
  }
  if (out) {
    size_t n = rl < outcap - 1 ? rl : outcap - 1;
    memcpy(out, c->in, n);
    out[n] = '\0';
  }
  memmove(c->in, c->in + rl, c->inlen - rl);
  c->inlen -= rl;
}

static char g_info[65536];

/* A field of INFO replication, or -1. */
static long long info_field(conn *c, const char *field) {
  const char *p;

  command(c, g_info, sizeof(g_info), 2, "INFO", "replication");
  p = strstr(g_info, field);
  if (!p) {
    return -1;
  }
  return strtoll(p + strlen(field), NULL, 10);
}

static double redis_run(int master, int replica, long count, int run) {
  conn m, r;
  char key[64], head[128];
  char *buf;
  size_t cap, hlen, cmdlen, buflen = 0, bufoff = 0;
  long sent = 0, replied = 0;
  long long target, off;
  uint64_t t0, t1, deadline;

  conn_open(&m, master);
  conn_open(&r, replica);
  snprintf(key, sizeof(key), "bench:%d:%d", (int)getpid(), run);
  /* Start from a replica in step with the master. */
  deadline = bu_now() + 30ull * 1000000000u;
  do {
    target = info_field(&m, "master_repl_offset:");
    off = info_field(&r, "slave_repl_offset:");
    if (!strstr(g_info, "master_link_status:up")) {
      off = -1;
    }
    if (bu_now() > deadline) {
      bu_die("the replica is not in step (%lld vs %lld)", off, target);
    }
    if (off < target) {
      bu_sleep_ns(10000000u);
    }
  } while (off < target);
  hlen = (size_t)snprintf(head, sizeof(head),
                          "*5\r\n$4\r\nXADD\r\n$%zu\r\n%s\r\n$1\r\n*\r\n"
                          "$1\r\nd\r\n$%d\r\n",
                          strlen(key), key, PAYLOAD);
  cmdlen = hlen + PAYLOAD + 2;
  cap = cmdlen * CHUNK;
  buf = malloc(cap);
  if (!buf) {
    bu_die("out of memory");
  }
  t0 = bu_now();
  while (replied < count) {
    struct pollfd p;
    if (bufoff == buflen && sent < count) {
      long k, n = count - sent < CHUNK ? count - sent : CHUNK;
      buflen = bufoff = 0;
      for (k = 0; k < n; ++k) {
        sp_entry e;
        bu_entry(&e, (sp_seq)(sent + k + 1), PAYLOAD);
        memcpy(buf + buflen, head, hlen);
        memcpy(buf + buflen + hlen, e.data, PAYLOAD);
        memcpy(buf + buflen + hlen + PAYLOAD, "\r\n", 2);
        buflen += cmdlen;
      }
      sent += n;
    }
    p.fd = m.fd;
    p.events = POLLIN | (bufoff < buflen ? POLLOUT : 0);
    p.revents = 0;
    poll(&p, 1, 1000);
    if (p.revents & POLLOUT) {
      ssize_t w = send(m.fd, buf + bufoff, buflen - bufoff, MSG_DONTWAIT);
      if (w > 0) {
        bufoff += (size_t)w;
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        bu_die("send to redis: %s", strerror(errno));
      }
    }
    if (p.revents & POLLIN) {
      while (conn_fill(&m, 0) > 0) {
      }
      replied += (long)conn_take(&m);
    }
  }
  target = info_field(&m, "master_repl_offset:");
  deadline = bu_now() + 120ull * 1000000000u;
  for (;;) {
    off = info_field(&r, "slave_repl_offset:");
    if (off >= target) {
      break;
    }
    if (bu_now() > deadline) {
      bu_die("replica stuck at offset %lld of %lld", off, target);
    }
    bu_sleep_ns(200000u);
  }
  t1 = bu_now();
  {
    char len[32];
    command(&m, len, sizeof(len), 2, "XLEN", key);
    if (strtol(len + 1, NULL, 10) != count) {
      bu_die("stream has %s entries, not %ld", len + 1, count);
    }
  }
  command(&m, NULL, 0, 2, "DEL", key);
  free(buf);
  conn_close(&m);
  conn_close(&r);
  return (double)count / ((double)(t1 - t0) / 1e9);
}

int main(int argc, char **argv) {
  int master = (int)bu_opt(argc, argv, "master", 0);
  int replica = (int)bu_opt(argc, argv, "replica", 0);
  long count = bu_opt(argc, argv, "count", 500000);
  int runs = (int)bu_opt(argc, argv, "runs", 3), r;
  double *ours, *theirs, *ratio;
  bu_pair_cfg cfg;
  bu_cluster *cl;
  char version[256];

  if (!master || !replica || count < 1000 || runs < 1) {
    fprintf(stderr, "usage: redis_bench master=PORT replica=PORT [count=N] "
                    "[runs=N]\n");
    return 2;
  }
  ours = calloc((size_t)runs, sizeof(double));
  theirs = calloc((size_t)runs, sizeof(double));
  ratio = calloc((size_t)runs, sizeof(double));
  {
    conn m;
    char *p;
    conn_open(&m, master);
    command(&m, version, sizeof(version), 2, "INFO", "server");
    p = strstr(version, "redis_version:");
    if (p) {
      memmove(version, p + 14, strcspn(p + 14, "\r\n"));
      version[strcspn(p + 14, "\r\n")] = '\0';
    }
    conn_close(&m);
  }
  cl = bu_cluster_new(2);
  bu_pair_cfg_default(&cfg);
  cfg.count = (uint64_t)count;
  cfg.payload = PAYLOAD;
  printf("redis: %d runs of %ld entries with %d-byte payloads; Redis %s "
         "master -> replica (pipelined XADD from a raw-RESP client) vs "
         "leader -> follower over QUIC\n",
         runs, count, PAYLOAD, version);
  for (r = 0; r < runs; ++r) {
    bu_pair_result q;
    theirs[r] = redis_run(master, replica, count, r);
    bu_pair_run(cl, &cfg, &q);
    ours[r] = q.entries_per_s;
    ratio[r] = ours[r] / theirs[r];
    printf("  run %d: redis %9.0f entries/s | ours %9.0f entries/s (%.2f s, "
           "cpu leader %.0f%% follower %.0f%%, waited for a cpu %.0f%% and "
           "%.0f%%) | ratio %.2f\n",
           r + 1, theirs[r], ours[r], q.seconds, q.leader_cpu * 100,
           q.follower_cpu * 100, q.leader_wait * 100, q.follower_wait * 100,
           ratio[r]);
  }
  printf("redis: ours_entries_s %.0f redis_entries_s %.0f ratio %.2f\n",
         bu_median(ours, (size_t)runs), bu_median(theirs, (size_t)runs),
         bu_median(ratio, (size_t)runs));
  bu_cluster_del(cl);
  return 0;
}
