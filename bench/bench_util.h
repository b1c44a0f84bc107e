/*
 * bench_util.h: what the benchmarks share.
 *
 *   time and statistics   CLOCK_MONOTONIC (the clock sp_quic_now reads, one
 *                         clock for every process of the machine), medians
 *                         and nearest-rank percentiles
 *   processes             fork helpers and shared memory for results
 *   entries               deterministic entries: entry `seq` is the same in
 *                         every process, payload bytes taken in place from a
 *                         fixed random pattern (nothing copied)
 *   stores                a generated leader store (entries synthesised on
 *                         read, chain computed incrementally) and a follower
 *                         store that discards entries but keeps the chain
 *                         head, for runs far larger than memory
 *   cluster               identities made before forking, a device registry
 *                         whose addresses live in shared memory, and QUIC
 *                         devices (endpoint + node + handler) with a poll
 *                         loop over any number of them
 *   counting allocator    an sp_mem that counts heap calls
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/quic.h"
#include "sync_protocol/sync_protocol.h"

/* ---- time ---- */

/* CLOCK_MONOTONIC in nanoseconds (the same clock as sp_quic_now). */
uint64_t bu_now(void);
void bu_sleep_ns(uint64_t ns);

/* ---- statistics ---- */

void bu_sort_u64(uint64_t *v, size_t n);
/* Nearest-rank percentile `p` (0..100) of `n` sorted values; 0 if n == 0. */
uint64_t bu_pct(const uint64_t *sorted, size_t n, double p);
/* The latencies end[i] - start[i], i in [first, first + count), of the
 * samples whose end is set and not before their start, sorted into `out`
 * (room for `count`).  Returns how many; the others count in *lost. */
size_t bu_latencies(const uint64_t *start, const uint64_t *end, size_t first,
                    size_t count, uint64_t *out, size_t *lost);
/* Median of `n` values (sorts them). */
double bu_median(double *v, size_t n);
double bu_min(const double *v, size_t n);
double bu_max(const double *v, size_t n);

/* ---- processes, memory, errors ---- */

#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2)))
#endif
void bu_die(const char *fmt, ...);
/* Die with `what` and the library's text for `rv` unless rv == 0. */
void bu_check(int rv, const char *what);
/* A zeroed MAP_SHARED anonymous mapping (shared with forked children). */
void *bu_shm(size_t len);
void bu_shm_free(void *p, size_t len);
/* Fork; the child runs fn(arg) and exits with its return value. */
pid_t bu_spawn(int (*fn)(void *), void *arg);
/* Wait for a child; returns its exit status, or -1 if it died. */
int bu_join(pid_t pid);
/* The value in KiB of `field` ("VmRSS:", "RssFile:", ...) of
 * /proc/self/status, read without allocating; -1 if it cannot be read. */
long bu_status_kib(const char *field);
/* VmRSS of this process in KiB (/proc/self/status). */
long bu_rss_kib(void);
/* Integer option `name=value` from argv[1..], or `def`. */
long bu_opt(int argc, char **argv, const char *name, long def);

/* ---- counting allocator ---- */

typedef struct bu_counter {
  uint64_t mallocs;
  uint64_t callocs;
  uint64_t reallocs;
  uint64_t frees;
  /* Bytes allocated and not freed (malloc_usable_size of each block). */
  int64_t live;
} bu_counter;

/* Hooks backed by malloc that count every call into `c` and the bytes
 * live. */
void bu_counting_mem(sp_mem *out, bu_counter *c);
/* Allocating calls (malloc + calloc + realloc). */
uint64_t bu_counter_allocs(const bu_counter *c);

/* ---- deterministic entries ---- */

#define BU_MAX_PAYLOAD 4096
/* Fill `e` with entry `seq` carrying `payload` bytes (pointers into static
 * storage: valid for the whole run). */
void bu_entry(sp_entry *e, sp_seq seq, size_t payload);
/* Chain hash after `e` given the hash before it (sp_chain_next). */
void bu_chain(const uint8_t prev[SP_HASH_LEN], const sp_entry *e,
              uint8_t out[SP_HASH_LEN]);
/* Append entries latest+1 .. latest+n to a memory store; returns the new
 * latest sequence. */
sp_seq bu_mem_append(sp_mem_store *st, size_t n, size_t payload);

/* ---- generated leader store ---- */

typedef struct bu_gen_store bu_gen_store;

/* Entries 1..latest exist (entry i as bu_entry(i)); nothing is stored but
 * a cursor and a checkpoint of the chain every 65536 entries. */
bu_gen_store *bu_gen_store_new(size_t payload, sp_seq latest);
void bu_gen_store_del(bu_gen_store *g);
void bu_gen_store_set_latest(bu_gen_store *g, sp_seq latest);
void bu_gen_store_vtable(bu_gen_store *g, sp_store *out);

/* ---- discarding follower store ---- */

typedef struct bu_sink_store {
  sp_seq applied;
  uint8_t head[SP_HASH_LEN];
  uint64_t epoch;
  uint64_t batches;
  uint64_t entries;
} bu_sink_store;

void bu_sink_store_vtable(bu_sink_store *s, sp_store *out);

/* ---- cluster: devices of one library, device 0 leads ---- */

#define BU_MAX_DEV 72
#define BU_ADDR_LEN 48

/* Shared between the processes of a run (bu_shm). */
typedef struct bu_board {
  char addr[BU_MAX_DEV][BU_ADDR_LEN];
  /* Members of the library: the registry lists only these. */
  volatile int member[BU_MAX_DEV];
} bu_board;

typedef struct bu_cluster {
  int ndev;
  sp_uuid library;
  sp_identity *id[BU_MAX_DEV];
  sp_uuid dev[BU_MAX_DEV];
  uint8_t key[BU_MAX_DEV][SP_PUBLIC_KEY_LEN];
  bu_board *board;
} bu_cluster;

/* Identities for `ndev` devices, every one a member.  Call before fork. */
bu_cluster *bu_cluster_new(int ndev);
void bu_cluster_del(bu_cluster *cl);
void bu_cluster_registry(bu_cluster *cl, sp_registry *out);

/* One device on QUIC: endpoint, node, and at most one handler. */
typedef struct bu_dev {
  bu_cluster *cl;
  int idx;
  sp_quic_endpoint *ep;
  sp_node *node;
  sp_handler *h;
} bu_dev;

/* Bind 127.0.0.1:0, publish the address on the board, create the node.
 * `qc` NULL means sp_quic_config_default. */
void bu_dev_start(bu_dev *d, bu_cluster *cl, int idx, const sp_mem *mem,
                  const sp_events *ev, const sp_quic_config *qc);
/* Open the library with `role` on `st`; `hc` NULL means defaults. */
void bu_dev_open(bu_dev *d, sp_role role, const sp_store *st,
                 const sp_handler_config *hc);
void bu_dev_stop(bu_dev *d);
/* Wait until a device has input or a timer is due (at most `max_wait`
 * ns), then process the devices that need it.  Dies on a fatal error. */
void bu_poll(bu_dev **devs, int n, uint64_t max_wait);
/* bu_poll with one more descriptor to wait for: when `fd` is readable,
 * `on_fd(ctx)` runs first (e.g. a store's wake fd: the host then calls
 * sp_node_handle_expiry), then every device is processed, so that what
 * on_fd queued goes out at once. */
void bu_poll_fd(bu_dev **devs, int n, uint64_t max_wait, int fd,
                void (*on_fd)(void *ctx), void *ctx);
/* Wait until every device in [first, last] has published its address. */
void bu_wait_addrs(bu_cluster *cl, int first, int last);

/* ---- the UDP reference: a datagram's round trip on loopback ---- */

/*
 * What the latency benchmarks compare against: a BU_PING_LEN datagram
 * sent from one process's socket to an echo socket in the other, which
 * returns it from the same poll loop as its QUIC endpoint (so both see
 * the same scheduling).
 */
#define BU_PING_LEN 64
#define BU_UDP_READY 1
#define BU_EP_READY 2

/* A nonblocking UDP socket bound to 127.0.0.1 on a free port (*port). */
int bu_udp_socket(int *port);
/* Connect `fd` to 127.0.0.1:`port`. */
void bu_udp_connect(int fd, int port);
/* Sleep until `fd` or the endpoint has input, or `wait_ns` passes (at
 * most `cap_ns`, so stop flags are looked at).  Returns which has input:
 * BU_UDP_READY, BU_EP_READY, both or neither. */
int bu_wait_udp_or_endpoint(int fd, sp_quic_endpoint *ep, uint64_t wait_ns,
                            uint64_t cap_ns);
/* Send every datagram waiting on `fd` back where it came from. */
void bu_udp_echo(int fd);

/* The pinging side: one ping out at a time on a connected socket; the
 * round trip of ping i goes to rtt[i]. */
typedef struct bu_pinger {
  int fd;
  int n;   /* pings answered */
  int out; /* ping n sent, not answered yet */
  uint64_t sent_at;
  uint64_t *rtt;
} bu_pinger;

/* Send ping p->n. */
void bu_ping_send(bu_pinger *p);
/* Read one datagram from p->fd (it has input): the answer to the ping
 * out, if it is one. */
void bu_ping_recv(bu_pinger *p);

#endif /* BENCH_UTIL_H */

/* ---- leader -> follower stream over QUIC, two processes ---- */

/*
 * The leader process appends entries of `payload` bytes to an in-memory
 * store in batches of `batch`, calling sp_handler_notify_new_entries after
 * each, as long as fewer than `backlog` entries are unacknowledged, and
 * prunes its store to sp_handler_retention_floor every few milliseconds;
 * the follower (in-memory store, pruned to what it applied) applies.
 * Either for a time window (count == 0: `warmup_s` then `window_s`), or
 * until the follower applied `count` entries, timed from the first append
 * to the follower's SP_EVENT_ENTRIES_APPLIED for the last.
 */
typedef struct bu_pair_cfg {
  size_t payload;
  size_t batch;
  uint64_t backlog;
  uint64_t count;
  double warmup_s;
  double window_s;
} bu_pair_cfg;

typedef struct bu_pair_result {
  double seconds;
  uint64_t entries;
  double entries_per_s;
  /* Payload bytes (entries x payload) per second, in MB (1e6). */
  double payload_mb_s;
  /* UDP payload bytes the leader / the follower sent per second, MB. */
  double wire_mb_s;
  double back_mb_s;
  /* Leader's datagrams and send calls in the window. */
  uint64_t datagrams;
  uint64_t send_calls;
  /* CPU time of each process in the window / the window, and time it
   * waited for a CPU (other work on the machine) / the window. */
  double leader_cpu;
  double follower_cpu;
  double leader_wait;
  double follower_wait;
  /* Entries per apply call on the follower. */
  double batch_entries;
  /* Leader RSS at the end, KiB. */
  long leader_rss_kib;
  long follower_rss_kib;
} bu_pair_result;

void bu_pair_cfg_default(bu_pair_cfg *cfg);
void bu_pair_run(bu_cluster *cl, const bu_pair_cfg *cfg, bu_pair_result *res);
/* CPU time of this process, seconds. */
double bu_cpu_s(void);
/* Time this process's thread spent runnable but waiting for a CPU
 * (/proc/self/schedstat, run_delay), seconds: how much other work on the
 * machine held it back. */
double bu_run_delay_s(void);
