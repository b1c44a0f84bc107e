/*
 * gen_session_corpus.c: seeds for fuzz_leader and fuzz_follower, recorded
 * from real sessions.
 *
 *   gen_session_corpus <leader corpus dir> <follower corpus dir>
 *
 * Each scenario builds the fuzz target's world (the node under test, with
 * its capture transport and failing store: fuzz_session_util.c) from a
 * header, and next to it one or two real peer nodes: real followers (F1,
 * F2, or the non-member N) for the leader target, a real leader X holding
 * the same log as the harness's R for the follower target.  The generator
 * then plays the network between them: whatever the peer sends becomes a
 * FEED op (after a SELECT when needed) run on the world at once, peer
 * streams become OPEN ops, closes become CLOSE ops, time goes forward with
 * TIME ops, and the scenario adds host operations (appends, prunes, waits,
 * full syncs, transport modes).  Every op is appended to the script as it
 * runs, so the script replays the same calls in the same order: the
 * generator checks that by replaying each seed and comparing a digest of
 * everything the node sent.  The seeds start libFuzzer deep inside the
 * protocol: catch-up over many pages with real chain hashes, live pushes,
 * NewEntries, heartbeats, SyncRequired of every reason, Error frames,
 * reconnects.
 *
 * Not run by ctest; run it by hand after changing the input format.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_session_util.h"

#define MAX_PEERS 3
#define MAX_EVENTS 4096

/* ---- recorder ---- */

typedef struct g_peer {
  struct rec *r;
  int dev;
  sp_node *node;
  sp_handler *h;
  sp_mem_store *store;
  sp_handler_config cfg;
  uint64_t next_id;
} g_peer;

typedef enum g_kind {
  TO_PEER_OPEN,
  TO_PEER_DATA,
  TO_PEER_CLOSE,
  TO_H_OPEN,
  TO_H_DATA,
  TO_H_CLOSE
} g_kind;

typedef struct g_event {
  g_kind kind;
  int peer;
  uint64_t pid;
  int code;
  uint8_t *data;
  size_t len;
} g_event;

typedef struct g_link {
  int peer; /* -1: nobody behind this stream */
  uint64_t pid;
} g_link;

typedef struct rec {
  const fsu_role_entry *role;
  fsu_world *w;
  fsu_tap tap;
  int ended;
  uint8_t *script;
  size_t len, cap;
  long ops;
  g_peer peers[MAX_PEERS];
  int npeers;
  g_link links[FSU_MAX_STREAMS];
  g_event ev[MAX_EVENTS];
  size_t nev;
  /* Scenario switches: lose what goes one way. */
  int mute_peer;
  int deaf_peer;
  /* Digest of the bytes the node under test sent (FNV-1a). */
  uint64_t digest;
} rec;

static void fnv(uint64_t *h, const uint8_t *p, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    *h = (*h ^ p[i]) * 0x100000001b3ULL;
  }
}

static void die(const char *what) {
  fprintf(stderr, "gen_session_corpus: %s\n", what);
  exit(1);
}

static void push_event(rec *r, g_kind kind, int peer, uint64_t pid, int code,
                       const uint8_t *data, size_t len) {
  g_event *e;

  if (r->nev == MAX_EVENTS) {
    die("event queue full");
  }
  e = &r->ev[r->nev++];
  memset(e, 0, sizeof(*e));
  e->kind = kind;
  e->peer = peer;
  e->pid = pid;
  e->code = code;
  if (len) {
    e->data = malloc(len);
    if (!e->data) {
      die("out of memory");
    }
    memcpy(e->data, data, len);
    e->len = len;
  }
}

static int peer_of_dev(rec *r, int dev) {
  int i;

  for (i = 0; i < r->npeers; ++i) {
    if (r->peers[i].dev == dev) {
      return i;
    }
  }
  return -1;
}

/* Taps: what the node under test does on its transport. */
static void tap_opened(void *ud, size_t idx, const sp_uuid *peer) {
  rec *r = ud;
  int d, p = -1;

  for (d = 0; d < FSU_NDEV; ++d) {
    if (sp_uuid_equal(peer, &fsu_dev[d])) {
      p = peer_of_dev(r, d);
    }
  }
  r->links[idx].peer = p;
  if (p >= 0) {
    r->links[idx].pid = r->peers[p].next_id++;
    push_event(r, TO_PEER_OPEN, p, r->links[idx].pid, 0, NULL, 0);
  }
}

static void tap_sent(void *ud, size_t idx, const uint8_t *data, size_t len) {
  rec *r = ud;

  fnv(&r->digest, data, len);
  if (r->links[idx].peer >= 0 && !r->deaf_peer) {
    push_event(r, TO_PEER_DATA, r->links[idx].peer, r->links[idx].pid, 0,
               data, len);
  }
}

static void tap_closed(void *ud, size_t idx, int code) {
  rec *r = ud;

  if (r->links[idx].peer >= 0) {
    push_event(r, TO_PEER_CLOSE, r->links[idx].peer, r->links[idx].pid, code,
               NULL, 0);
  }
}

/* The peers' transport: everything is queued for the recorder. */
static int p_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  g_peer *gp = ud;
  rec *r = gp->r;

  (void)library;
  if (!sp_uuid_equal(peer, &fsu_dev[r->w->self])) {
    return SP_ERR_UNREACHABLE;
  }
  *stream_id = gp->next_id++;
  push_event(r, TO_H_OPEN, (int)(gp - r->peers), *stream_id, 0, NULL, 0);
  return 0;
}

static sp_ssize p_send(uint64_t stream_id, const uint8_t *data, size_t len,
                       void *ud) {
  g_peer *gp = ud;
  rec *r = gp->r;

  if (!r->mute_peer) {
    push_event(r, TO_H_DATA, (int)(gp - r->peers), stream_id, 0, data, len);
  }
  return (sp_ssize)len;
}

static int p_close(uint64_t stream_id, int error_code, void *ud) {
  g_peer *gp = ud;
  rec *r = gp->r;

  push_event(r, TO_H_CLOSE, (int)(gp - r->peers), stream_id, error_code, NULL,
             0);
  return 0;
}

/* The peers' registry: the same library as the harness's. */
static int g_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  (void)ud;
  *is_member = sp_uuid_equal(lib, &fsu_lib) &&
               !sp_uuid_equal(device, &fsu_dev[FSU_N]);
  return 0;
}

static int g_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)ud;
  if (!sp_uuid_equal(lib, &fsu_lib)) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = fsu_dev[FSU_X];
  return 0;
}

static int g_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  static const int m[3] = {FSU_X, FSU_F1, FSU_F2};
  size_t i;

  (void)ud;
  if (!sp_uuid_equal(lib, &fsu_lib)) {
    *count = 0;
    return 0;
  }
  for (i = 0; i < 3 && i < cap; ++i) {
    out[i] = fsu_dev[m[i]];
  }
  *count = 3;
  return 0;
}

/* ---- running ops ---- */

static void script_add(rec *r, const uint8_t *p, size_t n) {
  if (r->len + n > r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 4096;
    while (cap < r->len + n) {
      cap *= 2;
    }
    r->script = realloc(r->script, cap);
    if (!r->script) {
      die("out of memory");
    }
    r->cap = cap;
  }
  memcpy(r->script + r->len, p, n);
  r->len += n;
}

/* Append one op (with its operands) to the script and run it. */
static void run_op(rec *r, const uint8_t *op, size_t n) {
  fsu_in in;

  if (r->ended) {
    return;
  }
  if (r->ops + 1 >= FSU_MAX_OPS) {
    die("scenario longer than FSU_MAX_OPS");
  }
  script_add(r, op, n);
  in.p = op;
  in.n = n;
  r->ops++;
  if (r->role->step(r->w, &in)) {
    r->ended = 1;
  }
  if (in.n != 0) {
    die("an op did not read exactly its operands");
  }
}

static void op1(rec *r, uint8_t a) { run_op(r, &a, 1); }

static void op2(rec *r, uint8_t a, uint8_t b) {
  uint8_t o[2];
  o[0] = a;
  o[1] = b;
  run_op(r, o, 2);
}

static void op3(rec *r, uint8_t a, uint8_t b, uint8_t c) {
  uint8_t o[3];
  o[0] = a;
  o[1] = b;
  o[2] = c;
  run_op(r, o, 3);
}

static void op4(rec *r, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  uint8_t o[4];
  o[0] = a;
  o[1] = b;
  o[2] = c;
  o[3] = d;
  run_op(r, o, 4);
}

static int link_of(rec *r, int peer, uint64_t pid) {
  size_t i;

  for (i = 0; i < r->w->nstreams; ++i) {
    if (r->links[i].peer == peer && r->links[i].pid == pid) {
      return (int)i;
    }
  }
  return -1;
}

static void select_stream(rec *r, size_t idx) {
  if (r->w->cur != idx) {
    op2(r, (uint8_t)(FSU_OP_SELECT << 4), (uint8_t)idx);
  }
}

static int h_stream_open(rec *r, int idx) {
  const fsu_stream *s = &r->w->streams[idx];
  return !s->node_closed && !s->tr_closed;
}

static void deliver(rec *r, g_event *e) {
  g_peer *gp = &r->peers[e->peer];
  const sp_uuid *me = &fsu_dev[r->w->self];
  sp_tstamp now = r->w->now;
  int idx;

  switch (e->kind) {
  case TO_PEER_OPEN:
    sp_node_stream_opened(gp->node, e->pid, me, now);
    break;
  case TO_PEER_DATA:
    sp_node_stream_data(gp->node, e->pid, me, e->data, e->len, now);
    break;
  case TO_PEER_CLOSE:
    sp_node_stream_closed(gp->node, e->pid, me, e->code, now);
    break;
  case TO_H_OPEN: {
    size_t before = r->w->nstreams;
    op1(r, (uint8_t)(FSU_OP_OPEN << 4 | gp->dev));
    if (r->w->nstreams > before) {
      r->links[before].peer = e->peer;
      r->links[before].pid = e->pid;
    } else if (!r->ended) {
      sp_node_stream_closed(gp->node, e->pid, me, SP_ERR_CONNECTION_LOST, now);
    }
    break;
  }
  case TO_H_DATA: {
    size_t off = 0;
    idx = link_of(r, e->peer, e->pid);
    if (idx < 0 || !h_stream_open(r, idx)) {
      break;
    }
    select_stream(r, (size_t)idx);
    while (off < e->len && !r->ended) {
      size_t n = e->len - off > 4096 ? 4096 : e->len - off;
      uint8_t hdr[2];
      hdr[0] = (uint8_t)(FSU_OP_FEED << 4 | ((n - 1) >> 8));
      hdr[1] = (uint8_t)((n - 1) & 0xff);
      {
        uint8_t *buf = malloc(n + 2);
        if (!buf) {
          die("out of memory");
        }
        memcpy(buf, hdr, 2);
        memcpy(buf + 2, e->data + off, n);
        run_op(r, buf, n + 2);
        free(buf);
      }
      off += n;
    }
    break;
  }
  case TO_H_CLOSE:
    idx = link_of(r, e->peer, e->pid);
    if (idx < 0 || !h_stream_open(r, idx)) {
      break;
    }
    select_stream(r, (size_t)idx);
    op1(r, (uint8_t)(FSU_OP_CLOSE << 4 | (e->code == 0 ? 0 : 1)));
    break;
  }
}

/* Deliver everything queued, and run the peers' due timers, until quiet. */
static void pump(rec *r) {
  int rounds;

  if (!r->w) {
    return;
  }
  for (rounds = 0; rounds < 100000 && !r->ended; ++rounds) {
    int i, busy = 0;
    if (r->nev > 0) {
      g_event e = r->ev[0];
      memmove(r->ev, r->ev + 1, (r->nev - 1) * sizeof(g_event));
      r->nev--;
      deliver(r, &e);
      free(e.data);
      continue;
    }
    for (i = 0; i < r->npeers; ++i) {
      if (sp_node_get_expiry(r->peers[i].node) <= r->w->now) {
        sp_node_handle_expiry(r->peers[i].node, r->w->now);
        busy = 1;
      }
    }
    if (!busy) {
      return;
    }
  }
}

static void op_pump(rec *r, uint8_t a) {
  op1(r, a);
  pump(r);
}

static sp_tstamp next_expiry(rec *r) {
  sp_tstamp t = sp_node_get_expiry(r->w->node), x;
  int i;

  for (i = 0; i < r->npeers; ++i) {
    x = sp_node_get_expiry(r->peers[i].node);
    if (x < t) {
      t = x;
    }
  }
  return t;
}

/* Let `d` pass, stopping at every timer of the node or its peers (to the
 * millisecond: TIME ops move by the steps of fsu_time_step). */
static void run_for(rec *r, sp_duration d) {
  sp_tstamp until = r->w->now + d;

  pump(r);
  while (!r->ended && r->w->now < until) {
    sp_tstamp next = next_expiry(r);
    sp_duration gap;
    unsigned p, best = 1;
    if (next > until) {
      next = until;
    }
    gap = next > r->w->now ? next - r->w->now : 0;
    for (p = 1; p < 15; ++p) {
      if (fsu_time_step(p) <= gap && fsu_time_step(p) >= fsu_time_step(best)) {
        best = p;
      }
    }
    op1(r, (uint8_t)(FSU_OP_TIME << 4 | best));
    pump(r);
  }
}

/* ---- peers ---- */

/* A peer device's node (its handler is opened later by open_peer, once
 * its store is filled and the world exists). */
static g_peer *add_peer(rec *r, int dev, size_t max_frame) {
  static const sp_transport trinit = SP_TRANSPORT_INIT;
  g_peer *gp;
  sp_node_config nc;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr = trinit;

  if (r->npeers == MAX_PEERS) {
    die("too many peers");
  }
  gp = &r->peers[r->npeers++];
  memset(gp, 0, sizeof(*gp));
  gp->r = r;
  gp->dev = dev;
  gp->next_id = 1000 + 1000 * (uint64_t)dev;
  if (sp_mem_store_new(&gp->store, NULL) != 0) {
    die("out of memory");
  }
  sp_node_config_default(&nc);
  nc.device_id = fsu_dev[dev];
  nc.seed = 77 + (uint64_t)dev;
  nc.max_frame = max_frame;
  reg.is_member = g_is_member;
  reg.leader = g_leader;
  reg.members = g_members;
  tr.user_data = gp;
  tr.open_stream = p_open;
  tr.send = p_send;
  tr.close_stream = p_close;
  if (sp_node_new(&gp->node, &nc, &reg, NULL, &tr, NULL) != 0) {
    die("peer node");
  }
  return gp;
}

/* Open the peer's handler (after its store is filled). */
static void open_peer(rec *r, g_peer *gp, const sp_handler_config *cfg) {
  sp_store st;

  sp_mem_store_get_vtable(gp->store, &st);
  if (sp_handler_new(&gp->h, gp->node, cfg, &st,
                     r->w ? r->w->now : 1000 * SP_SECONDS) != 0) {
    die("peer handler");
  }
  pump(r);
}

static void peer_fill(g_peer *gp, sp_seq from, sp_seq to, unsigned cls,
                      sp_seq skip) {
  static uint8_t buf[FSU_PAYLOAD_MAX];
  sp_seq q;

  for (q = from; q <= to; ++q) {
    sp_entry e;
    if (q == skip) {
      continue;
    }
    fsu_make_entry(&e, q, cls, buf);
    if (sp_mem_store_append(gp->store, &e, NULL) != 0) {
      die("peer append");
    }
  }
}

static void peer_epoch(g_peer *gp, uint64_t epoch) {
  sp_store st;

  sp_mem_store_get_vtable(gp->store, &st);
  if (st.apply(NULL, NULL, 0, epoch, st.user_data) != 0) {
    die("peer epoch");
  }
}

static void follower_cfg(sp_handler_config *c, uint32_t limit,
                         uint32_t window) {
  sp_handler_config_default(c);
  c->library_id = fsu_lib;
  c->role = SP_ROLE_FOLLOWER;
  c->fetch_limit = limit;
  c->fetch_window = window;
  c->reconnect_min = 50 * SP_MILLISECONDS;
  c->reconnect_max = 2 * SP_SECONDS;
}

static void leader_cfg(sp_handler_config *c, uint64_t epoch) {
  sp_handler_config_default(c);
  c->library_id = fsu_lib;
  c->role = SP_ROLE_LEADER;
  c->epoch = epoch;
  c->reconnect_min = 50 * SP_MILLISECONDS;
  c->reconnect_max = 2 * SP_SECONDS;
}

/* ---- scenario frame ---- */

static const fsu_role_entry leader_role = {fsu_leader_new, fsu_leader_step,
                                           fsu_leader_del};
static const fsu_role_entry follower_role = {
    fsu_follower_new, fsu_follower_step, fsu_follower_del};

static rec *rec_new(const fsu_role_entry *role, const uint8_t hdr[8]) {
  rec *r = calloc(1, sizeof(*r));
  size_t i;

  if (!r) {
    die("out of memory");
  }
  r->role = role;
  r->digest = 0xcbf29ce484222325ULL;
  r->tap.ud = r;
  r->tap.opened = tap_opened;
  r->tap.sent = tap_sent;
  r->tap.closed = tap_closed;
  for (i = 0; i < FSU_MAX_STREAMS; ++i) {
    r->links[i].peer = -1;
  }
  script_add(r, hdr, FSU_HDR_LEN);
  return r;
}

/* Create the world under test (after the peers' nodes exist, so that its
 * first streams reach them). */
static void rec_start(rec *r) {
  r->w = r->role->create(r->script, &r->tap);
  if (!r->w) {
    die("the world refused the scenario's header");
  }
  pump(r);
}

/* Replay the script as the fuzz target would and compare what was sent. */
static int replay_matches(rec *r) {
  rec *q = calloc(1, sizeof(*q));
  fsu_in in;
  fsu_world *w;
  uint64_t d;
  size_t i;

  if (!q) {
    die("out of memory");
  }
  q->digest = 0xcbf29ce484222325ULL;
  q->tap.ud = q;
  q->tap.sent = tap_sent;
  for (i = 0; i < FSU_MAX_STREAMS; ++i) {
    q->links[i].peer = -1;
  }
  w = r->role->create(r->script, &q->tap);
  if (!w) {
    die("replay: header refused");
  }
  in.p = r->script + FSU_HDR_LEN;
  in.n = r->len - FSU_HDR_LEN;
  while (in.n > 0) {
    if (r->role->step(w, &in)) {
      break;
    }
  }
  r->role->destroy(w);
  d = q->digest;
  free(q);
  return d == r->digest;
}

static void rec_finish(rec *r, const char *dir, const char *name) {
  char path[4096];
  FILE *f;
  int i;

  pump(r);
  r->role->destroy(r->w);
  r->w = NULL;
  for (i = 0; i < r->npeers; ++i) {
    sp_node_del(r->peers[i].node);
    sp_mem_store_del(r->peers[i].store);
  }
  while (r->nev > 0) {
    free(r->ev[--r->nev].data);
  }
  if (!replay_matches(r)) {
    fprintf(stderr, "%s: replay differs from the recording\n", name);
    exit(1);
  }
  snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
  f = fopen(path, "wb");
  if (!f || fwrite(r->script, 1, r->len, f) != r->len || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
  printf("%-40s %6zu bytes %5ld ops\n", path, r->len, r->ops);
  free(r->script);
  free(r);
}

/* ---- leader scenarios (the node under test leads; real followers) ---- */

/* Append n entries of class cls (op 0x4p: n = 1 + (p & 3)) and notify. */
static void l_append(rec *r, unsigned n, unsigned cls) {
  while (n > 0 && !r->ended) {
    unsigned k = n > 4 ? 4 : n;
    op2(r, (uint8_t)(FSU_OP_ROLE4 << 4 | (k - 1)), (uint8_t)cls);
    pump(r);
    n -= k;
  }
}

static void leader_scenarios(const char *dir) {
  sp_handler_config fc;
  rec *r;
  g_peer *f1, *f2;

  /* Catch-up of an empty follower, live pushes, heartbeats, a wait, the
   * retention floor and a prune. */
  {
    static const uint8_t hdr[8] = {0x00, 0x2c, 0x00, 0, 0, 0, 1, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f1, &fc);
    run_for(r, 200 * SP_MILLISECONDS);
    op4(r, FSU_OP_API << 4 | 0, 0x40, 1, 9); /* wait_acks(latest+1, 1) */
    l_append(r, 3, 2);
    run_for(r, 100 * SP_MILLISECONDS);
    op1(r, FSU_OP_API << 4 | 3); /* retention_floor */
    op2(r, FSU_OP_API << 4 | 1, 4);
    op2(r, FSU_OP_API << 4 | 2, 1);
    l_append(r, 2, 5);
    run_for(r, 65 * SP_SECONDS);
    op1(r, FSU_OP_ROLE10 << 4 | 1); /* prune through the floor */
    l_append(r, 1, 0);
    run_for(r, 35 * SP_SECONDS);
    rec_finish(r, dir, "catchup-push");
  }
  /* Paged catch-up: small pages, small fetches in a window of four, two
   * followers, announce-then-fetch (push_inline off). */
  {
    static const uint8_t hdr[8] = {0x03, 0x3f, 0x00, 0x02, 0, 0, 2, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    f2 = add_peer(r, FSU_F2, 0);
    rec_start(r);
    follower_cfg(&fc, 3, 4);
    open_peer(r, f1, &fc);
    follower_cfg(&fc, 7, 2);
    open_peer(r, f2, &fc);
    run_for(r, 300 * SP_MILLISECONDS);
    l_append(r, 9, 3);
    run_for(r, 300 * SP_MILLISECONDS);
    op4(r, FSU_OP_API << 4 | 0, 0x00, 0, 8);
    l_append(r, 4, 1);
    run_for(r, 2 * SP_SECONDS);
    rec_finish(r, dir, "paged-two-followers");
  }
  /* A follower ahead of the leader: SyncRequired(ahead). */
  {
    static const uint8_t hdr[8] = {0x00, 0x35, 0x01, 0, 0, 0, 3, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    peer_fill(f1, 1, 9, 3, 0);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f1, &fc);
    run_for(r, 500 * SP_MILLISECONDS);
    l_append(r, 6, 3);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "follower-ahead");
  }
  /* A follower whose log diverged: SyncRequired(divergence). */
  {
    static const uint8_t hdr[8] = {0x00, 0x48, 0x02, 0, 0, 0, 4, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    peer_fill(f1, 1, 5, 5, 0);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f1, &fc);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "divergence");
  }
  /* Pruned past a follower: SyncRequired(behind retention). */
  {
    static const uint8_t hdr[8] = {0x00, 0x2c, 0x30, 0, 0, 0, 5, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    peer_fill(f1, 1, 2, 2, 0);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f1, &fc);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "behind-retention");
  }
  /* Retention cap, gap in the log, short heartbeats, lossy transport
   * modes: partial sends and would-block with writable calls. */
  {
    static const uint8_t hdr[8] = {0x26, 0x7f, 0x42, 0x12, 0, 0, 6, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    peer_fill(f1, 1, 13, 7, 3);
    rec_start(r);
    follower_cfg(&fc, 4, 3);
    open_peer(r, f1, &fc);
    op1(r, FSU_OP_MODE << 4 | 1 | 2 << 2); /* partial, 64 bytes */
    run_for(r, 100 * SP_MILLISECONDS);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    op1(r, FSU_OP_MODE << 4 | 2); /* would block */
    l_append(r, 4, 7);
    op1(r, FSU_OP_MODE << 4 | 0);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    run_for(r, 3 * SP_SECONDS);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    l_append(r, 12, 2);
    run_for(r, 4 * SP_SECONDS);
    rec_finish(r, dir, "cap-gap-lossy");
  }
  /* A follower with a newer epoch makes the leader step down; the host
   * raises the epoch with set_role; the follower comes back. */
  {
    static const uint8_t hdr[8] = {0x00, 0x26, 0x00, 0, 0, 0, 7, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    peer_fill(f1, 1, 3, 2, 0);
    peer_epoch(f1, 4);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f1, &fc);
    run_for(r, 300 * SP_MILLISECONDS);
    op2(r, FSU_OP_API << 4 | 5, 3); /* set_role(leader, epoch + 3) */
    pump(r);
    run_for(r, 3 * SP_SECONDS);
    l_append(r, 2, 2);
    run_for(r, 300 * SP_MILLISECONDS);
    rec_finish(r, dir, "stale-epoch-step-down");
  }
  /* A non-member connects (refused), the link to F1 breaks (transport
   * close), F1 goes silent until the heartbeat timeout. */
  {
    static const uint8_t hdr[8] = {0x20, 0x25, 0x00, 0, 0, 0, 8, 0};
    g_peer *n;
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    n = add_peer(r, FSU_N, 0);
    rec_start(r);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f1, &fc);
    open_peer(r, n, &fc);
    run_for(r, 300 * SP_MILLISECONDS);
    select_stream(r, 0);
    op_pump(r, FSU_OP_CLOSE << 4 | 1);
    run_for(r, 3 * SP_SECONDS);
    r->mute_peer = 1;
    run_for(r, 5 * SP_SECONDS);
    r->mute_peer = 0;
    run_for(r, 3 * SP_SECONDS);
    rec_finish(r, dir, "non-member-loss-timeout");
  }
  /* Store failures on the leader while a follower catches up. */
  {
    static const uint8_t hdr[8] = {0x02, 0x3c, 0x00, 0x01, 0, 0, 9, 0};
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    follower_cfg(&fc, 2, 4);
    op2(r, FSU_OP_FAIL << 4 | 1, FSU_FAIL_READ);
    open_peer(r, f1, &fc);
    run_for(r, 500 * SP_MILLISECONDS);
    op2(r, FSU_OP_FAIL << 4 | 1, FSU_FAIL_HASH_AT | FSU_FAIL_BOUNDS);
    run_for(r, 2 * SP_SECONDS);
    rec_finish(r, dir, "store-failures");
  }
  /* A follower behind retention recovers by a snapshot from the node's
   * source: its features Heartbeat, SnapshotRequest, SnapshotFetch
   * windows, the verify fetch, then incremental sync from S. */
  {
    static const uint8_t hdr[8] = {0x00, 0x2c, 0x30, 0, 0, 0, 5, 0x01};
    sp_snapshot_sink sink;
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    rec_start(r);
    follower_cfg(&fc, 1024, 4);
    sp_mem_store_snapshot_sink(f1->store, &sink);
    fc.snapshot_sink = &sink;
    open_peer(r, f1, &fc);
    run_for(r, 2 * SP_SECONDS);
    l_append(r, 3, 2);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "snapshot-serve");
  }
  /* Two followers behind retention, one with a sink (window 2, chunks of
   * 64 bytes) and one without (SyncRequired only). */
  {
    static const uint8_t hdr[8] = {0x00, 0x5a, 0x21, 0, 0, 0, 6, 0x00};
    sp_snapshot_sink sink;
    r = rec_new(&leader_role, hdr);
    f1 = add_peer(r, FSU_F1, 0);
    f2 = add_peer(r, FSU_F2, 0);
    rec_start(r);
    follower_cfg(&fc, 1024, 4);
    sp_mem_store_snapshot_sink(f1->store, &sink);
    fc.snapshot_sink = &sink;
    fc.snapshot_window = 2;
    open_peer(r, f1, &fc);
    follower_cfg(&fc, 1024, 4);
    open_peer(r, f2, &fc);
    run_for(r, 3 * SP_SECONDS);
    l_append(r, 2, 1);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "snapshot-serve-two");
  }
  /* The same path from synthesized frames (op 0xb8..0xbf), no real peer,
   * so that libFuzzer mutates their fields: features Heartbeat, a fetch
   * behind retention, SnapshotRequest, preparation, one SnapshotFetch per
   * chunk, the verify fetch, a resume request. */
  {
    static const uint8_t hdr[8] = {0x00, 0x2c, 0x30, 0, 0, 0, 5, 0x01};
    uint8_t i;
    r = rec_new(&leader_role, hdr);
    rec_start(r);
    op1(r, FSU_OP_OPEN << 4 | FSU_F1);
    op4(r, FSU_OP_SYNTH << 4 | 8, 0x00, 0x00, 0x00);
    op4(r, FSU_OP_SYNTH << 4 | 0, 0x00, 0x02, 0x00);
    op4(r, FSU_OP_SYNTH << 4 | 8, 0x01, 0x00, 0x00);
    op1(r, FSU_OP_TIME << 4 | 3);
    op1(r, FSU_OP_TIME << 4 | 3);
    for (i = 0; i < 4; ++i) {
      op4(r, FSU_OP_SYNTH << 4 | 8, 0x02, i, 0x00);
      op1(r, FSU_OP_WRITABLE << 4 | 1);
      op1(r, FSU_OP_TIME << 4 | 2);
    }
    op4(r, FSU_OP_SYNTH << 4 | 8, 0x03, 0x00, 0x00);
    op1(r, FSU_OP_WRITABLE << 4 | 1);
    op1(r, FSU_OP_TIME << 4 | 3);
    op4(r, FSU_OP_SYNTH << 4 | 8, 0x05, 0x03, 0x00);
    op1(r, FSU_OP_WRITABLE << 4 | 1);
    op1(r, FSU_OP_TIME << 4 | 3);
    rec_finish(r, dir, "synth-snapshot-serve");
  }
}

/* ---- follower scenarios (the node under test follows; a real leader) ---- */

/* R grows by n entries of class cls (op 0xap) and so does the real leader,
 * which is then notified. */
static void f_grow(rec *r, g_peer *x, unsigned n, unsigned cls) {
  sp_log_bounds b;
  sp_store st;

  while (n > 0 && !r->ended) {
    unsigned k = n > 4 ? 4 : n;
    op2(r, (uint8_t)(FSU_OP_ROLE10 << 4 | (k - 1)), (uint8_t)cls);
    sp_mem_store_get_vtable(x->store, &st);
    st.bounds(&b, st.user_data);
    peer_fill(x, b.latest + 1, b.latest + k, cls, 0);
    sp_handler_notify_new_entries(x->h, b.latest, b.latest + k, r->w->now);
    pump(r);
    n -= k;
  }
}

/* Set by a scenario: the next real leader serves snapshots from its
 * store (the in-memory source, chunks of 256 bytes). */
static int f_with_source;

/* The real leader holds what R holds (the header's n entries, class, gap
 * and epoch). */
static g_peer *f_leader(rec *r, const uint8_t hdr[8], int push_inline,
                        uint32_t max_queued, size_t budget, sp_seq prune) {
  sp_handler_config lc;
  size_t max_frame = hdr[0] & 4 ? 256 + 64 * (size_t)(hdr[4] & 15) : 0;
  uint64_t e = (hdr[5] & 3) + ((hdr[5] >> 2) & 3);
  g_peer *x = add_peer(r, FSU_X, max_frame);

  peer_fill(x, 1, hdr[1] & 31, hdr[4] >> 4, hdr[2] & 128 ? 3 : 0);
  leader_cfg(&lc, e);
  lc.push_inline = push_inline;
  lc.max_queued_fetches = max_queued;
  lc.response_max_bytes = budget;
  if (f_with_source) {
    /* The handler copies the vtable. */
    sp_snapshot_source src;
    sp_mem_store_snapshot_source(x->store, &src);
    lc.snapshot_source = &src;
    lc.snapshot_chunk_size = 256;
    if (prune && sp_mem_store_prune(x->store, prune) != 0) {
      die("peer prune");
    }
    open_peer(r, x, &lc);
    rec_start(r);
    return x;
  }
  if (prune && sp_mem_store_prune(x->store, prune) != 0) {
    die("peer prune");
  }
  /* The leader is up before the follower's first stream reaches it. */
  open_peer(r, x, &lc);
  rec_start(r);
  return x;
}

static void follower_scenarios(const char *dir) {
  rec *r;
  g_peer *x;

  /* Paged catch-up with a window of fetches, then live pushes and idle
   * heartbeats. */
  {
    static const uint8_t hdr[8] = {0x03, 0x1f, 0x00, 0x0b, 0x20, 0x01, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 300, 0);
    run_for(r, 300 * SP_MILLISECONDS);
    f_grow(r, x, 3, 2);
    run_for(r, 100 * SP_MILLISECONDS);
    op_pump(r, FSU_OP_ROLE4 << 4 | 0); /* request_entries */
    f_grow(r, x, 2, 4);
    run_for(r, 70 * SP_SECONDS);
    rec_finish(r, dir, "catchup-push");
  }
  /* Announce-then-fetch (NewEntries) with a gap in the log; the leader
   * also dials the follower (duplicate stream closed). */
  {
    static const uint8_t hdr[8] = {0x00, 0x09, 0x84, 0x00, 0x30, 0x05, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 0, 32, 256 * 1024, 0);
    run_for(r, 500 * SP_MILLISECONDS);
    f_grow(r, x, 5, 3);
    run_for(r, 500 * SP_MILLISECONDS);
    f_grow(r, x, 2, 0);
    run_for(r, 2 * SP_SECONDS);
    rec_finish(r, dir, "new-entries-gap");
  }
  /* The follower is ahead: SyncRequired(ahead); the host's full sync and
   * resync_done; catch-up again. */
  {
    static const uint8_t hdr[8] = {0x00, 0x05, 0x0a, 0x00, 0x20, 0x00, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 256 * 1024, 0);
    run_for(r, 300 * SP_MILLISECONDS);
    f_grow(r, x, 8, 2);
    run_for(r, 300 * SP_MILLISECONDS);
    op_pump(r, FSU_OP_API << 4 | 1); /* full sync + resync_done */
    run_for(r, 500 * SP_MILLISECONDS);
    f_grow(r, x, 1, 2);
    run_for(r, 300 * SP_MILLISECONDS);
    rec_finish(r, dir, "ahead-resync");
  }
  /* A diverged follower: SyncRequired(divergence), full sync. */
  {
    static const uint8_t hdr[8] = {0x40, 0x08, 0x04, 0x00, 0x50, 0x04, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 256 * 1024, 0);
    run_for(r, 300 * SP_MILLISECONDS);
    op_pump(r, FSU_OP_API << 4 | 1);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "divergence-resync");
  }
  /* A leader with a newer epoch (recorded by an empty apply), pruned past
   * a restarted follower: SyncRequired(behind retention). */
  {
    static const uint8_t hdr[8] = {0x00, 0x0c, 0x02, 0x00, 0x20, 0x09, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 256 * 1024, 6);
    run_for(r, 300 * SP_MILLISECONDS);
    rec_finish(r, dir, "epoch-behind-retention");
  }
  /* The leader refuses a window of fetches it cannot queue (Error frame
   * TOO_MANY_REQUESTS); reconnect with backoff. */
  {
    static const uint8_t hdr[8] = {0x03, 0x1e, 0x40, 0x07, 0x20, 0x00, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 1, 200, 0);
    run_for(r, 2 * SP_SECONDS);
    rec_finish(r, dir, "error-too-many-requests");
  }
  /* Stalls and silence: the leader's bytes are lost (stall timeout, then
   * heartbeat timeout), lossy sends on the follower's side. */
  {
    static const uint8_t hdr[8] = {0x0b, 0x14, 0x60, 0x01, 0x20, 0x01, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 300, 0);
    run_for(r, 20 * SP_MILLISECONDS);
    r->mute_peer = 1;
    run_for(r, 3 * SP_SECONDS);
    r->mute_peer = 0;
    op1(r, FSU_OP_MODE << 4 | 1 | 1 << 2); /* partial, 5 bytes */
    run_for(r, 200 * SP_MILLISECONDS);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    op1(r, FSU_OP_MODE << 4 | 0);
    op_pump(r, FSU_OP_WRITABLE << 4 | 1);
    run_for(r, 3 * SP_SECONDS);
    rec_finish(r, dir, "stall-silence-lossy");
  }
  /* No leader in the registry at first: the leader dials the follower,
   * whose store then fails applies for a while. */
  {
    static const uint8_t hdr[8] = {0x80, 0x10, 0x40, 0x00, 0x20, 0x00, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 256 * 1024, 0);
    op2(r, FSU_OP_FAIL << 4 | 1, FSU_FAIL_APPLY | FSU_FAIL_STATE);
    run_for(r, 300 * SP_MILLISECONDS);
    op2(r, FSU_OP_API << 4 | 4, 0); /* registry names X */
    run_for(r, 3 * SP_SECONDS);
    f_grow(r, x, 3, 1);
    run_for(r, 300 * SP_MILLISECONDS);
    rec_finish(r, dir, "leader-dials-store-fails");
  }
  /* Snapshot recovery from a leader with a source, the follower behind
   * its retention: features Heartbeat, SyncRequired, SnapshotRequest,
   * manifest, windows of chunks, the verify fetch, install, then
   * incremental sync from S. */
  f_with_source = 1;
  {
    static const uint8_t hdr[8] = {0x00, 0x14, 0x02, 0x40, 0x20, 0x04, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 256 * 1024, 10);
    run_for(r, 2 * SP_SECONDS);
    f_grow(r, x, 3, 2);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "snapshot-install");
  }
  /* The same with a window of one chunk, larger entries, a gap at 3 and a
   * follower ahead of the pruned leader (its log replaced by the
   * snapshot). */
  {
    static const uint8_t hdr[8] = {0x00, 0x0c, 0x8e, 0x00, 0x50, 0x05, 0, 0};
    r = rec_new(&follower_role, hdr);
    x = f_leader(r, hdr, 1, 32, 256 * 1024, 8);
    run_for(r, 3 * SP_SECONDS);
    f_grow(r, x, 2, 1);
    run_for(r, 500 * SP_MILLISECONDS);
    rec_finish(r, dir, "snapshot-ahead-window1");
  }
  /* A whole install from synthesized frames (op 0x48..0x4f), no real
   * peer: features Heartbeat, SyncRequired, a manifest of R in chunks of
   * 64 bytes, every chunk asked for, the verify fetch's answer, the fresh
   * stream's first page. */
  {
    static const uint8_t hdr[8] = {0x00, 0x14, 0x02, 0x40, 0x20, 0x04, 0, 0};
    r = rec_new(&follower_role, hdr);
    rec_start(r);
    op1(r, FSU_OP_WRITABLE << 4 | 1);
    op3(r, FSU_OP_ROLE4 << 4 | 8, 0x00, 0);
    op4(r, FSU_OP_SYNTH << 4 | 3, 0x00, 10, 0);
    op1(r, FSU_OP_TIME << 4 | 3);
    op3(r, FSU_OP_ROLE4 << 4 | 8, 0x01, 0);
    op3(r, FSU_OP_ROLE4 << 4 | 8, 0x06, 0);
    op1(r, FSU_OP_TIME << 4 | 2);
    op3(r, FSU_OP_ROLE4 << 4 | 8, 0x03, 0);
    op1(r, FSU_OP_TIME << 4 | 5);
    op3(r, FSU_OP_ROLE4 << 4 | 8, 0x03, 0);
    op1(r, FSU_OP_TIME << 4 | 5);
    rec_finish(r, dir, "synth-snapshot-install");
  }
  f_with_source = 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <leader corpus dir> <follower corpus dir>\n",
            argv[0]);
    return 2;
  }
  leader_scenarios(argv[1]);
  follower_scenarios(argv[2]);
  return 0;
}
