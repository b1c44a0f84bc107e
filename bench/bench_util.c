/*
 * bench_util.c: see bench_util.h.
 */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- time ---- */

uint64_t bu_now(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bu_sleep_ns(uint64_t ns) {
  struct timespec ts;

  ts.tv_sec = (time_t)(ns / 1000000000u);
  ts.tv_nsec = (long)(ns % 1000000000u);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- statistics ---- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void bu_sort_u64(uint64_t *v, size_t n) { qsort(v, n, sizeof(*v), cmp_u64); }

uint64_t bu_pct(const uint64_t *sorted, size_t n, double p) {
  size_t rank;

  if (n == 0) {
    return 0;
  }
  /* Nearest rank: the smallest value with at least p% at or below it. */
  rank = (size_t)((p / 100.0) * (double)n + 0.999999);
  if (rank < 1) {
    rank = 1;
  }
  if (rank > n) {
    rank = n;
  }
  return sorted[rank - 1];
}

size_t bu_latencies(const uint64_t *start, const uint64_t *end, size_t first,
                    size_t count, uint64_t *out, size_t *lost) {
  size_t n = 0, i;

  *lost = 0;
  for (i = first; i < first + count; ++i) {
    if (end[i] && end[i] >= start[i]) {
      out[n++] = end[i] - start[i];
    } else {
      ++*lost;
    }
  }
  bu_sort_u64(out, n);
  return n;
}

double bu_median(double *v, size_t n) {
  if (n == 0) {
    return 0;
  }
  qsort(v, n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double bu_min(const double *v, size_t n) {
  double m = n ? v[0] : 0;
  size_t i;

  for (i = 1; i < n; ++i) {
    if (v[i] < m) {
      m = v[i];
    }
  }
  return m;
}

double bu_max(const double *v, size_t n) {
  double m = n ? v[0] : 0;
  size_t i;

  for (i = 1; i < n; ++i) {
    if (v[i] > m) {
      m = v[i];
    }
  }
  return m;
}

/* ---- processes, memory, errors ---- */

void bu_die(const char *fmt, ...) {
  va_list ap;

  fflush(stdout);
  fprintf(stderr, "bench[%d]: ", (int)getpid());
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

void bu_check(int rv, const char *what) {
  if (rv != 0) {
    bu_die("%s: %s (%s)", what, sp_strerror(rv), sp_err_name(rv));
  }
}

void *bu_shm(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);

  if (p == MAP_FAILED) {
    bu_die("mmap %zu bytes: %s", len, strerror(errno));
  }
  return p;
}

void bu_shm_free(void *p, size_t len) {
  if (p) {
    munmap(p, len);
  }
}

pid_t bu_spawn(int (*fn)(void *), void *arg) {
  pid_t pid;

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    bu_die("fork: %s", strerror(errno));
  }
  if (pid == 0) {
    int rv;
    /* A child never outlives the run that made it. */
    signal(SIGPIPE, SIG_IGN);
    rv = fn(arg);
    fflush(NULL);
    _exit(rv);
  }
  return pid;
}

int bu_join(pid_t pid) {
  int status;

  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return -1;
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

long bu_status_kib(const char *field) {
  /* read(2) into the stack, not stdio: measuring must not allocate. */
  char buf[4096];
  const char *p;
  ssize_t n;
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

  if (fd < 0) {
    return -1;
  }
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) {
    return -1;
  }
  buf[n] = '\0';
  p = strstr(buf, field);
  return p ? strtol(p + strlen(field), NULL, 10) : -1;
}

long bu_rss_kib(void) { return bu_status_kib("VmRSS:"); }

long bu_opt(int argc, char **argv, const char *name, long def) {
  size_t n = strlen(name);
  int i;

  for (i = 1; i < argc; ++i) {
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') {
      return strtol(argv[i] + n + 1, NULL, 10);
    }
  }
  return def;
}

/* ---- counting allocator ---- */

static void *c_malloc(size_t size, void *ud) {
  bu_counter *c = ud;
  void *p = malloc(size);

  c->mallocs++;
  c->live += p ? (int64_t)malloc_usable_size(p) : 0;
  return p;
}

static void c_free(void *p, void *ud) {
  bu_counter *c = ud;

  if (p) {
    c->frees++;
    c->live -= (int64_t)malloc_usable_size(p);
  }
  free(p);
}

static void *c_calloc(size_t n, size_t size, void *ud) {
  bu_counter *c = ud;
  void *p = calloc(n, size);

  c->callocs++;
  c->live += p ? (int64_t)malloc_usable_size(p) : 0;
  return p;
}

static void *c_realloc(void *p, size_t size, void *ud) {
  bu_counter *c = ud;
  int64_t before = p ? (int64_t)malloc_usable_size(p) : 0;
  void *q = realloc(p, size);

  c->reallocs++;
  if (q || size == 0) {
    c->live += (q ? (int64_t)malloc_usable_size(q) : 0) - before;
  }
  return q;
}

void bu_counting_mem(sp_mem *out, bu_counter *c) {
  memset(c, 0, sizeof(*c));
  out->user_data = c;
  out->malloc = c_malloc;
  out->free = c_free;
  out->calloc = c_calloc;
  out->realloc = c_realloc;
}

uint64_t bu_counter_allocs(const bu_counter *c) {
  return c->mallocs + c->callocs + c->reallocs;
}

/* ---- deterministic entries ---- */

#define PATTERN 65536
static uint8_t g_pattern[PATTERN + BU_MAX_PAYLOAD];
static int g_pattern_ready;
static const char g_model[] = "bench_item";

static void make_pattern(void) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  size_t i;

  for (i = 0; i < sizeof(g_pattern); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    g_pattern[i] = (uint8_t)(x >> 24);
  }
  g_pattern_ready = 1;
}

void bu_entry(sp_entry *e, sp_seq seq, size_t payload) {
  int k;

  if (!g_pattern_ready) {
    make_pattern();
  }
  if (payload > BU_MAX_PAYLOAD) {
    payload = BU_MAX_PAYLOAD;
  }
  memset(e, 0, sizeof(*e));
  e->sequence = seq;
  for (k = 0; k < 16; ++k) {
    e->device_id.bytes[k] = (uint8_t)(0xd0 + k);
    e->record_id.bytes[k] = k < 8 ? (uint8_t)(seq >> (8 * k)) : (uint8_t)k;
  }
  e->timestamp_ms = 1700000000000ull + seq;
  e->model_type = g_model;
  e->model_type_len = sizeof(g_model) - 1;
  e->change_type = (sp_change_type)(seq % 3);
  e->version = (int64_t)seq;
  e->data = g_pattern + (size_t)((seq * 2654435761ull) % PATTERN);
  e->data_len = payload;
}

void bu_chain(const uint8_t prev[SP_HASH_LEN], const sp_entry *e,
              uint8_t out[SP_HASH_LEN]) {
  bu_check(sp_chain_next(prev, e, out), "sp_chain_next");
}

sp_seq bu_mem_append(sp_mem_store *st, size_t n, size_t payload) {
  sp_store vt;
  sp_log_bounds b;
  sp_seq seq = 0;
  size_t i;

  sp_mem_store_get_vtable(st, &vt);
  vt.bounds(&b, vt.user_data);
  for (i = 0; i < n; ++i) {
    sp_entry e;
    bu_entry(&e, b.latest + 1 + i, payload);
    bu_check(sp_mem_store_append(st, &e, &seq), "sp_mem_store_append");
  }
  return n ? seq : b.latest;
}

/* ---- generated leader store ---- */

#define CKPT 65536u

struct bu_gen_store {
  size_t payload;
  sp_seq latest;
  /* The chain hash after entry `cur`. */
  sp_seq cur;
  uint8_t cur_hash[SP_HASH_LEN];
  /* ckpt[k]: hash after entry k * CKPT, known for k < nckpt. */
  uint8_t (*ckpt)[SP_HASH_LEN];
  size_t nckpt;
  size_t capckpt;
};

static void gen_reserve(bu_gen_store *g, sp_seq latest) {
  size_t need = (size_t)(latest / CKPT) + 2;

  if (need > g->capckpt) {
    void *p = realloc(g->ckpt, need * SP_HASH_LEN);
    if (!p) {
      bu_die("out of memory");
    }
    g->ckpt = p;
    g->capckpt = need;
  }
}

bu_gen_store *bu_gen_store_new(size_t payload, sp_seq latest) {
  bu_gen_store *g = calloc(1, sizeof(*g));

  if (!g) {
    bu_die("out of memory");
  }
  g->payload = payload;
  g->latest = latest;
  gen_reserve(g, latest);
  memset(g->ckpt[0], 0, SP_HASH_LEN);
  g->nckpt = 1;
  return g;
}

void bu_gen_store_del(bu_gen_store *g) {
  if (g) {
    free(g->ckpt);
    free(g);
  }
}

void bu_gen_store_set_latest(bu_gen_store *g, sp_seq latest) {
  gen_reserve(g, latest);
  g->latest = latest;
}

/* Advance the cursor by one entry whose hash is `h`. */
static void gen_step(bu_gen_store *g, const uint8_t h[SP_HASH_LEN]) {
  g->cur++;
  memcpy(g->cur_hash, h, SP_HASH_LEN);
  if (g->cur % CKPT == 0 && g->cur / CKPT == g->nckpt) {
    memcpy(g->ckpt[g->nckpt++], h, SP_HASH_LEN);
  }
}

/* Put the cursor at `seq` (<= latest). */
static void gen_seek(bu_gen_store *g, sp_seq seq) {
  if (seq < g->cur) {
    size_t k = (size_t)(seq / CKPT);
    g->cur = (sp_seq)k * CKPT;
    memcpy(g->cur_hash, g->ckpt[k], SP_HASH_LEN);
  }
  while (g->cur < seq) {
    sp_entry e;
    uint8_t h[SP_HASH_LEN];
    bu_entry(&e, g->cur + 1, g->payload);
    bu_chain(g->cur_hash, &e, h);
    gen_step(g, h);
  }
}

static int gen_read(sp_seq after, sp_seq through, size_t max_count,
                    sp_entry_sink sink, void *ctx, void *ud) {
  bu_gen_store *g = ud;
  sp_seq seq;
  size_t fed = 0;

  if (through > g->latest) {
    through = g->latest;
  }
  if (after >= through) {
    return 0;
  }
  gen_seek(g, after);
  for (seq = after + 1; seq <= through && fed < max_count; ++seq) {
    sp_entry e;
    uint8_t h[SP_HASH_LEN];
    int rv;
    bu_entry(&e, seq, g->payload);
    bu_chain(g->cur_hash, &e, h);
    rv = sink(&e, h, ctx);
    if (rv != 0) {
      return rv < 0 ? rv : 0;
    }
    gen_step(g, h);
    ++fed;
  }
  return 0;
}

static int gen_bounds(sp_log_bounds *out, void *ud) {
  bu_gen_store *g = ud;

  out->pruned_through = 0;
  out->latest = g->latest;
  return 0;
}

static int gen_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ud) {
  bu_gen_store *g = ud;

  if (seq > g->latest) {
    return SP_ERR_NOT_FOUND;
  }
  gen_seek(g, seq);
  memcpy(out, g->cur_hash, SP_HASH_LEN);
  return 0;
}

static int gen_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                     uint64_t epoch, void *ud) {
  (void)entries;
  (void)hashes;
  (void)n;
  (void)epoch;
  (void)ud;
  return SP_ERR_STORE; /* a leader's store */
}

static int gen_state(sp_store_state *out, void *ud) {
  (void)ud;
  memset(out, 0, sizeof(*out));
  return 0;
}

void bu_gen_store_vtable(bu_gen_store *g, sp_store *out) {
  memset(out, 0, sizeof(*out));
  out->version = SP_STORE_VERSION;
  out->user_data = g;
  out->read = gen_read;
  out->bounds = gen_bounds;
  out->hash_at = gen_hash_at;
  out->apply = gen_apply;
  out->state = gen_state;
}

/* ---- discarding follower store ---- */

static int sink_read(sp_seq after, sp_seq through, size_t max_count,
                     sp_entry_sink sink, void *ctx, void *ud) {
  (void)after;
  (void)through;
  (void)max_count;
  (void)sink;
  (void)ctx;
  (void)ud;
  return 0;
}

static int sink_bounds(sp_log_bounds *out, void *ud) {
  bu_sink_store *s = ud;

  out->pruned_through = s->applied;
  out->latest = s->applied;
  return 0;
}

static int sink_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ud) {
  bu_sink_store *s = ud;

  if (seq != s->applied) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(out, s->head, SP_HASH_LEN);
  return 0;
}

static int sink_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                      uint64_t epoch, void *ud) {
  bu_sink_store *s = ud;

  if (n) {
    if (entries[0].sequence <= s->applied) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    s->applied = entries[n - 1].sequence;
    memcpy(s->head, hashes + (n - 1) * SP_HASH_LEN, SP_HASH_LEN);
    s->batches++;
    s->entries += n;
  }
  if (epoch > s->epoch) {
    s->epoch = epoch;
  }
  return 0;
}

static int sink_state(sp_store_state *out, void *ud) {
  bu_sink_store *s = ud;

  out->applied = s->applied;
  memcpy(out->head_hash, s->head, SP_HASH_LEN);
  out->epoch = s->epoch;
  return 0;
}

void bu_sink_store_vtable(bu_sink_store *s, sp_store *out) {
  memset(out, 0, sizeof(*out));
  out->version = SP_STORE_VERSION;
  out->user_data = s;
  out->read = sink_read;
  out->bounds = sink_bounds;
  out->hash_at = sink_hash_at;
  out->apply = sink_apply;
  out->state = sink_state;
}

/* ---- cluster ---- */

static int dev_index(const bu_cluster *cl, const sp_uuid *d) {
  int i;

  for (i = 0; i < cl->ndev; ++i) {
    if (memcmp(cl->dev[i].bytes, d->bytes, 16) == 0) {
      return i;
    }
  }
  return -1;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *m,
                       void *ud) {
  bu_cluster *cl = ud;
  int i = dev_index(cl, d);

  *m = sp_uuid_equal(lib, &cl->library) && i >= 0 && cl->board->member[i];
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  bu_cluster *cl = ud;

  if (!sp_uuid_equal(lib, &cl->library)) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = cl->dev[0];
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  bu_cluster *cl = ud;
  size_t n = 0;
  int i;

  (void)lib;
  for (i = 0; i < cl->ndev; ++i) {
    if (cl->board->member[i]) {
      if (n < cap) {
        out[n] = cl->dev[i];
      }
      ++n;
    }
  }
  *count = n;
  return 0;
}

static int r_key(const sp_uuid *d, uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  bu_cluster *cl = ud;
  int i = dev_index(cl, d);

  if (i < 0) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(key, cl->key[i], SP_PUBLIC_KEY_LEN);
  return 0;
}

static int r_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_uuid *d,
                    void *ud) {
  bu_cluster *cl = ud;
  int i;

  for (i = 0; i < cl->ndev; ++i) {
    if (memcmp(cl->key[i], key, SP_PUBLIC_KEY_LEN) == 0) {
      *d = cl->dev[i];
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int r_hints(const sp_uuid *d, char *buf, size_t len, void *ud) {
  bu_cluster *cl = ud;
  int i = dev_index(cl, d);

  if (i < 0 || !cl->board->addr[i][0]) {
    return SP_ERR_NOT_FOUND;
  }
  if (strlen(cl->board->addr[i]) >= len) {
    return SP_ERR_NOBUF;
  }
  strcpy(buf, cl->board->addr[i]);
  return 0;
}

bu_cluster *bu_cluster_new(int ndev) {
  bu_cluster *cl = calloc(1, sizeof(*cl));
  int i;

  if (!cl || ndev < 1 || ndev > BU_MAX_DEV) {
    bu_die("bad cluster size %d", ndev);
  }
  cl->ndev = ndev;
  sp_uuid_generate(&cl->library);
  for (i = 0; i < ndev; ++i) {
    bu_check(sp_identity_generate(&cl->id[i], NULL, NULL), "identity");
    cl->dev[i] = *sp_identity_device_id(cl->id[i]);
    sp_identity_public_key(cl->id[i], cl->key[i]);
  }
  cl->board = bu_shm(sizeof(*cl->board));
  for (i = 0; i < ndev; ++i) {
    cl->board->member[i] = 1;
  }
  return cl;
}

void bu_cluster_del(bu_cluster *cl) {
  int i;

  if (!cl) {
    return;
  }
  for (i = 0; i < cl->ndev; ++i) {
    sp_identity_del(cl->id[i]);
  }
  bu_shm_free(cl->board, sizeof(*cl->board));
  free(cl);
}

void bu_cluster_registry(bu_cluster *cl, sp_registry *out) {
  sp_registry r = SP_REGISTRY_INIT;

  r.user_data = cl;
  r.is_member = r_is_member;
  r.leader = r_leader;
  r.members = r_members;
  r.device_key = r_key;
  r.device_by_key = r_by_key;
  r.address_hints = r_hints;
  *out = r;
}

void bu_dev_start(bu_dev *d, bu_cluster *cl, int idx, const sp_mem *mem,
                  const sp_events *ev, const sp_quic_config *qcfg) {
  sp_quic_config qc;
  sp_node_config nc;
  sp_registry reg;
  sp_transport tr;
  char addr[BU_ADDR_LEN];

  memset(d, 0, sizeof(*d));
  d->cl = cl;
  d->idx = idx;
  if (qcfg) {
    qc = *qcfg;
  } else {
    sp_quic_config_default(&qc);
  }
  qc.bind_address = "127.0.0.1:0";
  bu_cluster_registry(cl, &reg);
  bu_check(sp_quic_endpoint_new(&d->ep, &qc, cl->id[idx], &reg, mem),
           "sp_quic_endpoint_new");
  bu_check(sp_quic_endpoint_local_address(d->ep, addr, sizeof(addr)),
           "local address");
  sp_node_config_default(&nc);
  nc.device_id = cl->dev[idx];
  nc.seed = (uint64_t)idx * 7919u + (uint64_t)getpid();
  sp_quic_endpoint_get_transport(d->ep, &tr);
  bu_check(sp_node_new(&d->node, &nc, &reg, ev, &tr, mem), "sp_node_new");
  bu_check(sp_quic_endpoint_attach(d->ep, d->node), "attach");
  memcpy(cl->board->addr[idx], addr, sizeof(addr));
  __sync_synchronize();
}

void bu_dev_open(bu_dev *d, sp_role role, const sp_store *st,
                 const sp_handler_config *hcfg) {
  sp_handler_config hc;

  if (hcfg) {
    hc = *hcfg;
  } else {
    sp_handler_config_default(&hc);
  }
  hc.library_id = d->cl->library;
  hc.role = role;
  bu_check(sp_handler_new(&d->h, d->node, &hc, st, sp_quic_now()),
           "sp_handler_new");
}

void bu_dev_stop(bu_dev *d) {
  sp_handler_del(d->h);
  sp_node_del(d->node);
  sp_quic_endpoint_del(d->ep);
  memset(d, 0, sizeof(*d));
}

void bu_poll(bu_dev **devs, int n, uint64_t max_wait) {
  struct pollfd p[BU_MAX_DEV];
  uint64_t now = bu_now(), next = now + max_wait;
  int i;

  for (i = 0; i < n; ++i) {
    uint64_t e = sp_quic_endpoint_get_expiry(devs[i]->ep);
    if (e < next) {
      next = e;
    }
    p[i].fd = sp_quic_endpoint_fd(devs[i]->ep);
    p[i].events = POLLIN;
    p[i].revents = 0;
  }
  {
    struct timespec ts;
    uint64_t d = next > now ? next - now : 0;
    ts.tv_sec = (time_t)(d / 1000000000u);
    ts.tv_nsec = (long)(d % 1000000000u);
    if (ppoll(p, (nfds_t)n, &ts, NULL) < 0 && errno != EINTR) {
      bu_die("ppoll: %s", strerror(errno));
    }
  }
  now = bu_now();
  for (i = 0; i < n; ++i) {
    if ((p[i].revents & POLLIN) ||
        sp_quic_endpoint_get_expiry(devs[i]->ep) <= now) {
      bu_check(sp_quic_endpoint_process(devs[i]->ep, now), "process");
    }
  }
}

void bu_poll_fd(bu_dev **devs, int n, uint64_t max_wait, int fd,
                void (*on_fd)(void *ctx), void *ctx) {
  struct pollfd p[BU_MAX_DEV + 1];
  uint64_t now = bu_now(), next = now + max_wait;
  int i, woke;

  for (i = 0; i < n; ++i) {
    uint64_t e = sp_quic_endpoint_get_expiry(devs[i]->ep);
    if (e < next) {
      next = e;
    }
    p[i].fd = sp_quic_endpoint_fd(devs[i]->ep);
    p[i].events = POLLIN;
    p[i].revents = 0;
  }
  p[n].fd = fd;
  p[n].events = POLLIN;
  p[n].revents = 0;
  {
    struct timespec ts;
    uint64_t d = next > now ? next - now : 0;
    ts.tv_sec = (time_t)(d / 1000000000u);
    ts.tv_nsec = (long)(d % 1000000000u);
    if (ppoll(p, (nfds_t)n + 1, &ts, NULL) < 0 && errno != EINTR) {
      bu_die("ppoll: %s", strerror(errno));
    }
  }
  woke = (p[n].revents & POLLIN) != 0;
  if (woke) {
    on_fd(ctx);
  }
  now = bu_now();
  for (i = 0; i < n; ++i) {
    if (woke || (p[i].revents & POLLIN) ||
        sp_quic_endpoint_get_expiry(devs[i]->ep) <= now) {
      bu_check(sp_quic_endpoint_process(devs[i]->ep, now), "process");
    }
  }
}

void bu_wait_addrs(bu_cluster *cl, int first, int last) {
  uint64_t end = bu_now() + 30ull * 1000000000u;
  int i;

  for (i = first; i <= last; ++i) {
    while (!((volatile char *)cl->board->addr[i])[0]) {
      if (bu_now() > end) {
        bu_die("device %d never published its address", i);
      }
      bu_sleep_ns(1000000);
    }
  }
  __sync_synchronize();
}

/* ---- leader -> follower stream over QUIC, two processes ---- */

enum { PH_SETUP = 0, PH_RUN, PH_WINDOW, PH_DONE, PH_STOP };

typedef struct pair_shared {
  volatile int phase;
  volatile int follower_ready;
  volatile int leader_done;
  /* Follower: applied sequence and when; apply calls. */
  volatile uint64_t applied;
  volatile uint64_t applied_at;
  volatile uint64_t apply_calls;
  /* Leader: time of the first append. */
  volatile uint64_t t0;
  /* Snapshots at the window's start [0] and end [1]. */
  uint64_t f_applied[2], f_at[2], f_calls[2];
  double f_cpu[2], l_cpu[2], f_wait[2], l_wait[2];
  sp_quic_stats l_stats[2], f_stats[2];
  long l_rss, f_rss;
} pair_shared;

typedef struct pair_ctx {
  bu_cluster *cl;
  const bu_pair_cfg *cfg;
  pair_shared *sh;
} pair_ctx;

double bu_cpu_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bu_run_delay_s(void) {
  char buf[256];
  unsigned long long run = 0, wait = 0;
  ssize_t n;
  int fd = open("/proc/self/schedstat", O_RDONLY | O_CLOEXEC);

  if (fd < 0) {
    return 0;
  }
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) {
    return 0;
  }
  buf[n] = '\0';
  if (sscanf(buf, "%llu %llu", &run, &wait) != 2) {
    return 0;
  }
  return (double)wait / 1e9;
}

void bu_pair_cfg_default(bu_pair_cfg *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->payload = 256;
  cfg->batch = 256;
  cfg->backlog = 65536;
  cfg->warmup_s = 1;
  cfg->window_s = 10;
}

static pair_shared *g_pair;

static int pair_f_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    g_pair->applied = ev->to_sequence;
    g_pair->applied_at = bu_now();
    g_pair->apply_calls++;
  } else if (ev->type == SP_EVENT_CAUGHT_UP) {
    g_pair->follower_ready = 1;
  }
  return 0;
}

static int pair_follower(void *arg) {
  pair_ctx *pc = arg;
  pair_shared *sh = pc->sh;
  sp_events ev = SP_EVENTS_INIT;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;
  int seen = PH_SETUP;
  uint64_t last_prune = 0;

  g_pair = sh;
  ev.on_event = pair_f_event;
  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, pc->cl, 1, NULL, &ev, NULL);
  bu_wait_addrs(pc->cl, 0, 0);
  bu_dev_open(&d, SP_ROLE_FOLLOWER, &vt, NULL);
  while (sh->phase != PH_STOP) {
    int ph = sh->phase;
    uint64_t now;
    if (ph != seen) {
      int k = ph == PH_WINDOW ? 0 : ph == PH_DONE ? 1 : -1;
      if (k >= 0) {
        sh->f_applied[k] = sh->applied;
        sh->f_at[k] = bu_now();
        sh->f_calls[k] = sh->apply_calls;
        sh->f_cpu[k] = bu_cpu_s();
        sh->f_wait[k] = bu_run_delay_s();
        sp_quic_endpoint_get_stats(d.ep, &sh->f_stats[k]);
        if (k == 1) {
          sh->f_rss = bu_rss_kib();
        }
      }
      seen = ph;
    }
    bu_poll(&dp, 1, 5000000u);
    now = bu_now();
    if (now - last_prune > 10000000u && sh->applied > 0) {
      /* Keep the follower's memory flat too: its state stays the same
       * (the pruned point keeps the head hash). */
      bu_check(sp_mem_store_prune(ms, sh->applied), "follower prune");
      last_prune = now;
    }
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

static int pair_leader(void *arg) {
  pair_ctx *pc = arg;
  const bu_pair_cfg *cfg = pc->cfg;
  pair_shared *sh = pc->sh;
  sp_mem_store *ms;
  sp_store vt;
  bu_dev d, *dp = &d;
  uint64_t last_prune = 0, end;
  sp_seq latest = 0, floor = 0;
  int seen = PH_SETUP;

  bu_check(sp_mem_store_new(&ms, NULL), "store");
  sp_mem_store_get_vtable(ms, &vt);
  bu_dev_start(&d, pc->cl, 0, NULL, NULL, NULL);
  bu_dev_open(&d, SP_ROLE_LEADER, &vt, NULL);
  end = bu_now() + 20ull * 1000000000u;
  while (!sh->follower_ready) {
    if (bu_now() > end) {
      bu_die("follower did not connect");
    }
    bu_poll(&dp, 1, 5000000u);
  }
  sh->leader_done = 1; /* connected: the orchestrator may start */
  while (sh->phase == PH_SETUP) {
    bu_poll(&dp, 1, 1000000u);
  }
  sh->t0 = bu_now();
  while (sh->phase != PH_STOP) {
    int ph = sh->phase, room;
    uint64_t now = bu_now();
    if (ph != seen) {
      int k = ph == PH_WINDOW ? 0 : ph == PH_DONE ? 1 : -1;
      if (k >= 0) {
        sh->l_cpu[k] = bu_cpu_s();
        sh->l_wait[k] = bu_run_delay_s();
        sp_quic_endpoint_get_stats(d.ep, &sh->l_stats[k]);
        if (k == 1) {
          sh->l_rss = bu_rss_kib();
        }
      }
      seen = ph;
    }
    if (now - last_prune > 2000000u) {
      bu_check(sp_handler_retention_floor(d.h, &floor), "retention floor");
      if (floor > 0) {
        bu_check(sp_mem_store_prune(ms, floor), "prune");
      }
      last_prune = now;
    }
    room = latest - floor < cfg->backlog &&
           (cfg->count == 0 || latest < cfg->count) && ph < PH_DONE;
    if (room) {
      size_t n = cfg->batch;
      sp_seq first = latest + 1;
      if (cfg->count && latest + n > cfg->count) {
        n = (size_t)(cfg->count - latest);
      }
      latest = bu_mem_append(ms, n, cfg->payload);
      bu_check(sp_handler_notify_new_entries(d.h, first, latest, bu_now()),
               "notify");
    }
    bu_poll(&dp, 1, room ? 0 : 1000000u);
  }
  bu_dev_stop(&d);
  sp_mem_store_del(ms);
  return 0;
}

void bu_pair_run(bu_cluster *cl, const bu_pair_cfg *cfg, bu_pair_result *res) {
  pair_shared *sh = bu_shm(sizeof(*sh));
  pair_ctx pc;
  pid_t f, l;
  uint64_t end;

  memset(cl->board->addr, 0, sizeof(cl->board->addr));
  pc.cl = cl;
  pc.cfg = cfg;
  pc.sh = sh;
  f = bu_spawn(pair_follower, &pc);
  l = bu_spawn(pair_leader, &pc);
  end = bu_now() + 30ull * 1000000000u;
  while (!sh->leader_done) {
    if (bu_now() > end) {
      bu_die("pair did not connect");
    }
    bu_sleep_ns(1000000u);
  }
  sh->phase = PH_RUN;
  if (cfg->count == 0) {
    bu_sleep_ns((uint64_t)(cfg->warmup_s * 1e9));
    sh->phase = PH_WINDOW;
    bu_sleep_ns((uint64_t)(cfg->window_s * 1e9));
    sh->phase = PH_DONE;
  } else {
    /* Both ends snapshot at the start: the window covers the whole run. */
    sh->phase = PH_WINDOW;
    end = bu_now() + 600ull * 1000000000u;
    while (sh->applied < cfg->count) {
      if (bu_now() > end) {
        bu_die("follower stuck at %llu", (unsigned long long)sh->applied);
      }
      bu_sleep_ns(200000u);
    }
    sh->phase = PH_DONE;
  }
  bu_sleep_ns(50000000u); /* both snapshot */
  sh->phase = PH_STOP;
  if (bu_join(l) != 0 || bu_join(f) != 0) {
    bu_die("a process of the pair failed");
  }
  memset(res, 0, sizeof(*res));
  if (cfg->count) {
    res->seconds = (double)(sh->applied_at - sh->t0) / 1e9;
    res->entries = cfg->count;
  } else {
    res->seconds = (double)(sh->f_at[1] - sh->f_at[0]) / 1e9;
    res->entries = sh->f_applied[1] - sh->f_applied[0];
  }
  res->entries_per_s = (double)res->entries / res->seconds;
  res->payload_mb_s = res->entries_per_s * (double)cfg->payload / 1e6;
  res->wire_mb_s =
      (double)(sh->l_stats[1].bytes_sent - sh->l_stats[0].bytes_sent) / 1e6 /
      res->seconds;
  res->back_mb_s =
      (double)(sh->f_stats[1].bytes_sent - sh->f_stats[0].bytes_sent) / 1e6 /
      res->seconds;
  res->datagrams = sh->l_stats[1].datagrams_sent - sh->l_stats[0].datagrams_sent;
  res->send_calls = sh->l_stats[1].send_calls - sh->l_stats[0].send_calls;
  res->leader_cpu = (sh->l_cpu[1] - sh->l_cpu[0]) / res->seconds;
  res->follower_cpu = (sh->f_cpu[1] - sh->f_cpu[0]) / res->seconds;
  res->leader_wait = (sh->l_wait[1] - sh->l_wait[0]) / res->seconds;
  res->follower_wait = (sh->f_wait[1] - sh->f_wait[0]) / res->seconds;
  res->batch_entries = sh->f_calls[1] > sh->f_calls[0]
                           ? (double)(sh->f_applied[1] - sh->f_applied[0]) /
                                 (double)(sh->f_calls[1] - sh->f_calls[0])
                           : 0;
  res->leader_rss_kib = sh->l_rss;
  res->follower_rss_kib = sh->f_rss;
  bu_shm_free(sh, sizeof(*sh));
}

/* ---- the UDP reference ---- */

int bu_udp_socket(int *port) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);

  if (fd < 0) {
    bu_die("socket: %s", strerror(errno));
  }
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    bu_die("bind: %s", strerror(errno));
  }
  *port = ntohs(a.sin_port);
  return fd;
}

void bu_udp_connect(int fd, int port) {
  struct sockaddr_in dst;

  memset(&dst, 0, sizeof(dst));
  dst.sin_family = AF_INET;
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  dst.sin_port = htons((uint16_t)port);
  if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
    bu_die("connect: %s", strerror(errno));
  }
}

int bu_wait_udp_or_endpoint(int fd, sp_quic_endpoint *ep, uint64_t wait_ns,
                            uint64_t cap_ns) {
  struct pollfd p[2];
  struct timespec ts;

  ts.tv_sec = 0;
  ts.tv_nsec = (long)(wait_ns < cap_ns ? wait_ns : cap_ns);
  p[0].fd = fd;
  p[0].events = POLLIN;
  p[1].fd = sp_quic_endpoint_fd(ep);
  p[1].events = POLLIN;
  p[0].revents = p[1].revents = 0;
  ppoll(p, 2, &ts, NULL);
  return ((p[0].revents & POLLIN) ? BU_UDP_READY : 0) |
         ((p[1].revents & POLLIN) ? BU_EP_READY : 0);
}

void bu_udp_echo(int fd) {
  uint8_t buf[2048];
  struct sockaddr_in from;
  socklen_t fl = sizeof(from);
  ssize_t n;

  while ((n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from,
                       &fl)) > 0) {
    (void)!sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    fl = sizeof(from);
  }
}

void bu_ping_send(bu_pinger *p) {
  uint8_t buf[BU_PING_LEN];

  memset(buf, 0, sizeof(buf));
  memcpy(buf, &p->n, sizeof(p->n));
  p->sent_at = bu_now();
  if (send(p->fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf)) {
    bu_die("send: %s", strerror(errno));
  }
  p->out = 1;
}

void bu_ping_recv(bu_pinger *p) {
  uint8_t buf[2048];
  uint64_t t = bu_now();
  ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
  int idx;

  if (n == BU_PING_LEN && p->out) {
    memcpy(&idx, buf, sizeof(idx));
    if (idx == p->n) {
      p->rtt[p->n++] = t - p->sent_at;
      p->out = 0;
    }
  }
}
