/*
 * sp_mem_transport.c: an in-memory network of nodes.
 *
 * Every send, open and close becomes an event with a delivery time in one
 * priority queue (ordered by time, then by creation), handed to nodes by
 * sp_mem_net_run.  Nothing is delivered from inside a vtable call, so nodes
 * never re-enter each other, and a run is a pure function of the calls and
 * the fault hook's answers: the property the deterministic simulation
 * needs.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/mem_transport.h"
#include "sync_protocol/uuid.h"
#include "../sp_abi.h"
#include "../sp_mem_int.h"

typedef struct mt_dev mt_dev;

typedef struct mt_dev {
  sp_mem_net *net;
  sp_uuid id;
  sp_node *node;
  int partitioned;
} mt_dev;

typedef struct mt_conn {
  mt_dev *a;
  mt_dev *b;
} mt_conn;

/* Side 0 opened the stream, side 1 accepted it. */
typedef struct mt_stream {
  uint64_t id;
  mt_conn *conn;
  mt_dev *side[2]; /* side[1] is NULL if the device does not exist */
  sp_uuid ids[2];
  /* The side closed it (no more sends from it). */
  int closed[2];
  /* The side's node was told it ended, or is gone. */
  int gone[2];
  /* Bytes queued toward a side and not yet delivered. */
  size_t inflight[2];
  /* The side was told to wait (short send or would block). */
  int want_writable[2];
  /* Delivery time of the last in-order event toward a side. */
  sp_tstamp last_at[2];
  /* The open failed (peer unknown, gone or partitioned): the opener's
   * SP_ERR_UNREACHABLE is its own news, never held by a partition. */
  int unreachable;
} mt_stream;

typedef enum mt_kind {
  MT_OPENED,
  MT_DATA,
  MT_WRITABLE,
  MT_CLOSED,
  MT_CUT
} mt_kind;

typedef struct mt_event {
  sp_tstamp at;
  uint64_t seq;
  mt_kind kind;
  mt_stream *st;
  int to; /* side the event is for */
  int code;
  uint8_t *data;
  size_t len;
} mt_event;

struct sp_mem_net {
  sp_mem mem;
  sp_mem_net_config cfg;
  sp_tstamp now;
  uint64_t next_seq;
  mt_dev **devs;
  size_t ndevs;
  mt_conn **conns;
  size_t nconns;
  mt_stream **streams; /* index = id - 1 */
  size_t nstreams;
  size_t capstreams;
  mt_event *heap;
  size_t nheap;
  size_t capheap;
  /* Events held while an end is partitioned, in order. */
  mt_event *held;
  size_t nheld;
  size_t capheld;
  sp_mem_net_stats stats;
};

void sp_mem_net_config_default(sp_mem_net_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->version = SP_MEM_NET_CONFIG_VERSION;
  cfg->stream_window = 256 * 1024;
}

/* ---- event queue ---- */

static int ev_before(const mt_event *x, const mt_event *y) {
  return x->at < y->at || (x->at == y->at && x->seq < y->seq);
}

static int grow(sp_mem_net *net, void **p, size_t *cap, size_t need,
                size_t elem) {
  size_t c = *cap ? *cap : 16;
  void *q;

  if (need <= *cap) {
    return 0;
  }
  while (c < need) {
    c *= 2;
  }
  q = sp_realloc(&net->mem, *p, c * elem);
  if (!q) {
    return SP_ERR_NOMEM;
  }
  *p = q;
  *cap = c;
  return 0;
}

static int heap_push(sp_mem_net *net, const mt_event *e) {
  size_t i;

  if (grow(net, (void **)&net->heap, &net->capheap, net->nheap + 1,
           sizeof(*e)) != 0) {
    return SP_ERR_NOMEM;
  }
  i = net->nheap++;
  net->heap[i] = *e;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    mt_event tmp;
    if (!ev_before(&net->heap[i], &net->heap[p])) {
      break;
    }
    tmp = net->heap[p];
    net->heap[p] = net->heap[i];
    net->heap[i] = tmp;
    i = p;
  }
  return 0;
}

static mt_event heap_pop(sp_mem_net *net) {
  mt_event top = net->heap[0];
  size_t i = 0;

  net->heap[0] = net->heap[--net->nheap];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    mt_event tmp;
    if (l < net->nheap && ev_before(&net->heap[l], &net->heap[m])) {
      m = l;
    }
    if (r < net->nheap && ev_before(&net->heap[r], &net->heap[m])) {
      m = r;
    }
    if (m == i) {
      break;
    }
    tmp = net->heap[m];
    net->heap[m] = net->heap[i];
    net->heap[i] = tmp;
    i = m;
  }
  return top;
}

static int schedule(sp_mem_net *net, mt_kind kind, mt_stream *st, int to,
                    sp_tstamp at, int code, const uint8_t *data, size_t len) {
  mt_event e;

  memset(&e, 0, sizeof(e));
  e.at = at;
  e.seq = net->next_seq++;
  e.kind = kind;
  e.st = st;
  e.to = to;
  e.code = code;
  if (len) {
    e.data = sp_malloc(&net->mem, len);
    if (!e.data) {
      return SP_ERR_NOMEM;
    }
    memcpy(e.data, data, len);
    e.len = len;
  }
  if (heap_push(net, &e) != 0) {
    sp_free(&net->mem, e.data);
    return SP_ERR_NOMEM;
  }
  return 0;
}

/* Invert one byte of the event just scheduled (its copy of the data). */
static void corrupt_last(sp_mem_net *net, size_t at) {
  size_t i;

  for (i = 0; i < net->nheap; ++i) {
    if (net->heap[i].seq == net->next_seq - 1) {
      net->heap[i].data[at] ^= 0xff;
      return;
    }
  }
}

/* In-order delivery time toward side `to`. */
static sp_tstamp ordered_at(sp_mem_net *net, mt_stream *st, int to,
                            sp_duration extra) {
  sp_tstamp at = net->now + net->cfg.latency + extra;

  if (at < st->last_at[to]) {
    at = st->last_at[to];
  }
  st->last_at[to] = at;
  return at;
}

/* ---- devices, connections, streams ---- */

static mt_dev *find_dev(const sp_mem_net *net, const sp_uuid *id) {
  size_t i;

  for (i = 0; i < net->ndevs; ++i) {
    if (sp_uuid_equal(&net->devs[i]->id, id)) {
      return net->devs[i];
    }
  }
  return NULL;
}

static mt_conn *find_conn(sp_mem_net *net, mt_dev *a, mt_dev *b, int add) {
  size_t i;
  mt_conn *c;

  for (i = 0; i < net->nconns; ++i) {
    c = net->conns[i];
    if ((c->a == a && c->b == b) || (c->a == b && c->b == a)) {
      return c;
    }
  }
  if (!add) {
    return NULL;
  }
  c = sp_calloc(&net->mem, 1, sizeof(*c));
  if (!c) {
    return NULL;
  }
  {
    mt_conn **p = sp_realloc(&net->mem, net->conns,
                             (net->nconns + 1) * sizeof(*p));
    if (!p) {
      sp_free(&net->mem, c);
      return NULL;
    }
    net->conns = p;
  }
  c->a = a;
  c->b = b;
  net->conns[net->nconns++] = c;
  net->stats.connections_opened++;
  return c;
}

static mt_stream *find_stream(const sp_mem_net *net, uint64_t id) {
  return id >= 1 && id <= net->nstreams ? net->streams[id - 1] : NULL;
}

static int side_of(const mt_stream *st, const mt_dev *d) {
  return st->side[0] == d ? 0 : 1;
}

/* ---- the vtable ---- */

static int t_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  mt_dev *self = ud;
  sp_mem_net *net = self->net;
  mt_dev *other = find_dev(net, peer);
  mt_stream *st;
  int reachable;

  (void)library;
  if (grow(net, (void **)&net->streams, &net->capstreams, net->nstreams + 1,
           sizeof(*net->streams)) != 0) {
    return SP_ERR_NOMEM;
  }
  st = sp_calloc(&net->mem, 1, sizeof(*st));
  if (!st) {
    return SP_ERR_NOMEM;
  }
  reachable = other && other->node && !other->partitioned &&
              !self->partitioned && other != self;
  st->conn = reachable ? find_conn(net, self, other, 1) : NULL;
  if (reachable && !st->conn) {
    sp_free(&net->mem, st);
    return SP_ERR_NOMEM;
  }
  st->id = net->nstreams + 1;
  st->side[0] = self;
  st->side[1] = other;
  st->ids[0] = self->id;
  st->ids[1] = *peer;
  net->streams[net->nstreams++] = st;
  /* Connecting takes one latency; failing to connect is reported then. */
  if (reachable) {
    if (schedule(net, MT_OPENED, st, 1, ordered_at(net, st, 1, 0), 0, NULL,
                 0) != 0) {
      return SP_ERR_NOMEM;
    }
  } else {
    st->gone[1] = 1;
    st->closed[1] = 1;
    st->unreachable = 1;
    if (schedule(net, MT_CLOSED, st, 0, net->now + net->cfg.latency,
                 SP_ERR_UNREACHABLE, NULL, 0) != 0) {
      return SP_ERR_NOMEM;
    }
  }
  net->stats.streams_opened++;
  *stream_id = st->id;
  return 0;
}

static sp_ssize t_send(uint64_t stream_id, const uint8_t *data, size_t len,
                       void *ud) {
  mt_dev *self = ud;
  sp_mem_net *net = self->net;
  mt_stream *st = find_stream(net, stream_id);
  sp_mem_verdict v;
  int from, to;
  size_t n, avail;
  sp_tstamp at;

  if (!st || (st->side[0] != self && st->side[1] != self)) {
    return SP_ERR_NOT_FOUND;
  }
  from = side_of(st, self);
  to = 1 - from;
  if (st->closed[from] || st->gone[from]) {
    return SP_ERR_CLOSED;
  }
  avail = net->cfg.stream_window > st->inflight[to]
              ? net->cfg.stream_window - st->inflight[to]
              : 0;
  if (avail == 0) {
    st->want_writable[from] = 1;
    return SP_ERR_WOULD_BLOCK;
  }
  n = len < avail ? len : avail;
  if (n < len) {
    st->want_writable[from] = 1;
  }
  net->stats.bytes_sent += n;
  if (st->gone[to]) {
    return (sp_ssize)n; /* the peer is gone: bytes vanish */
  }
  v.action = SP_MEM_DELIVER;
  v.delay = 0;
  v.keep = n;
  if (net->cfg.fault) {
    sp_mem_delivery d;
    d.from = self->id;
    d.to = st->side[to]->id;
    d.stream_id = stream_id;
    d.data = data;
    d.len = n;
    if (net->cfg.fault(&d, &v, net->cfg.fault_user_data) != 0) {
      v.action = SP_MEM_DELIVER;
    }
  }
  switch (v.action) {
  case SP_MEM_DROP:
    return (sp_ssize)n;
  case SP_MEM_REORDER:
    at = net->now + net->cfg.latency + v.delay;
    break;
  case SP_MEM_CUT:
    if (v.keep > n) {
      v.keep = n;
    }
    at = ordered_at(net, st, to, v.delay);
    if ((v.keep && schedule(net, MT_DATA, st, to, at, 0, data, v.keep) != 0) ||
        schedule(net, MT_CUT, st, to, at, 0, NULL, 0) != 0) {
      return SP_ERR_NOMEM;
    }
    st->inflight[to] += v.keep;
    return (sp_ssize)n;
  default:
    at = ordered_at(net, st, to, v.delay);
    break;
  }
  if (schedule(net, MT_DATA, st, to, at, 0, data, n) != 0) {
    return SP_ERR_NOMEM;
  }
  if (v.action == SP_MEM_CORRUPT && v.keep < n) {
    corrupt_last(net, v.keep);
  }
  st->inflight[to] += n;
  if (v.action == SP_MEM_DUPLICATE) {
    if (schedule(net, MT_DATA, st, to, ordered_at(net, st, to, 0), 0, data,
                 n) != 0) {
      return SP_ERR_NOMEM;
    }
    st->inflight[to] += n;
  }
  return (sp_ssize)n;
}

static int t_close(uint64_t stream_id, int error_code, void *ud) {
  mt_dev *self = ud;
  sp_mem_net *net = self->net;
  mt_stream *st = find_stream(net, stream_id);
  int from, to;

  if (!st || (st->side[0] != self && st->side[1] != self)) {
    return SP_ERR_NOT_FOUND;
  }
  from = side_of(st, self);
  to = 1 - from;
  if (st->closed[from]) {
    return 0;
  }
  st->closed[from] = 1;
  st->gone[from] = 1; /* the node forgets the stream when it closes it */
  if (!st->gone[to]) {
    return schedule(net, MT_CLOSED, st, to, ordered_at(net, st, to, 0),
                    error_code, NULL, 0);
  }
  return 0;
}

/* The network reaches devices by id: a device's address is its id, so a
 * leader keeping addresses is exercised the same way as over QUIC. */
#define MEM_ADDR_PREFIX "mem:"

static int t_peer_address(uint64_t stream_id, char *buf, size_t len,
                          void *ud) {
  mt_dev *self = ud;
  mt_stream *st = find_stream(self->net, stream_id);
  char id[SP_UUID_STRING_LEN + 1];

  if (!st || (st->side[0] != self && st->side[1] != self) || !buf) {
    return SP_ERR_NOT_FOUND;
  }
  sp_uuid_format(&st->ids[1 - side_of(st, self)], id);
  if (len < sizeof(MEM_ADDR_PREFIX) + SP_UUID_STRING_LEN) {
    return SP_ERR_NOBUF;
  }
  memcpy(buf, MEM_ADDR_PREFIX, sizeof(MEM_ADDR_PREFIX) - 1);
  memcpy(buf + sizeof(MEM_ADDR_PREFIX) - 1, id, SP_UUID_STRING_LEN + 1);
  return 0;
}

static int t_add_address_hint(const sp_uuid *device, const char *address,
                              void *ud) {
  sp_uuid id;

  (void)ud;
  if (!device || !address ||
      strncmp(address, MEM_ADDR_PREFIX, sizeof(MEM_ADDR_PREFIX) - 1) != 0 ||
      sp_uuid_parse(&id, address + sizeof(MEM_ADDR_PREFIX) - 1) != 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}

/* ---- public API ---- */

int sp_mem_net_new(sp_mem_net **pnet, const sp_mem_net_config *cfg,
                   const sp_mem *mem) {
  sp_mem m;
  sp_mem_net *net;

  if (!pnet) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *pnet = NULL;
  if (cfg && (cfg->version == 0 || cfg->version > SP_MEM_NET_CONFIG_VERSION)) {
    return SP_ERR_VERSION;
  }
  if (cfg && cfg->stream_window == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&m, mem);
  net = sp_calloc(&m, 1, sizeof(*net));
  if (!net) {
    return SP_ERR_NOMEM;
  }
  net->mem = m;
  if (cfg) {
    net->cfg = *cfg;
  } else {
    sp_mem_net_config_default(&net->cfg);
  }
  *pnet = net;
  return 0;
}

void sp_mem_net_del(sp_mem_net *net) {
  size_t i;

  if (!net) {
    return;
  }
  for (i = 0; i < net->nheap; ++i) {
    sp_free(&net->mem, net->heap[i].data);
  }
  for (i = 0; i < net->nheld; ++i) {
    sp_free(&net->mem, net->held[i].data);
  }
  for (i = 0; i < net->nstreams; ++i) {
    sp_free(&net->mem, net->streams[i]);
  }
  for (i = 0; i < net->nconns; ++i) {
    sp_free(&net->mem, net->conns[i]);
  }
  for (i = 0; i < net->ndevs; ++i) {
    sp_free(&net->mem, net->devs[i]);
  }
  sp_free(&net->mem, net->heap);
  sp_free(&net->mem, net->held);
  sp_free(&net->mem, net->streams);
  sp_free(&net->mem, net->conns);
  sp_free(&net->mem, net->devs);
  sp_free(&net->mem, net);
}

int sp_mem_net_add_device_versioned(sp_mem_net *net, const sp_uuid *device,
                                    int version, sp_transport *dst) {
  sp_transport full, *transport = &full;
  size_t n = sp_abi_transport_size(version);
  mt_dev *d, **p;

  if (!net || !device || !dst) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (n == 0) {
    return SP_ERR_VERSION;
  }
  if (find_dev(net, device)) {
    return SP_ERR_EXISTS;
  }
  d = sp_calloc(&net->mem, 1, sizeof(*d));
  if (!d) {
    return SP_ERR_NOMEM;
  }
  p = sp_realloc(&net->mem, net->devs, (net->ndevs + 1) * sizeof(*p));
  if (!p) {
    sp_free(&net->mem, d);
    return SP_ERR_NOMEM;
  }
  net->devs = p;
  d->net = net;
  d->id = *device;
  net->devs[net->ndevs++] = d;
  memset(transport, 0, sizeof(*transport));
  transport->version = (unsigned int)version;
  transport->user_data = d;
  transport->open_stream = t_open;
  transport->send = t_send;
  transport->close_stream = t_close;
  transport->peer_address = t_peer_address;
  transport->add_address_hint = t_add_address_hint;
  sp_abi_copy(dst, &full, n);
  return 0;
}

int sp_mem_net_attach(sp_mem_net *net, const sp_uuid *device, sp_node *node) {
  mt_dev *d = net && device ? find_dev(net, device) : NULL;

  if (!d || !node) {
    return SP_ERR_NOT_FOUND;
  }
  if (d->node) {
    return SP_ERR_INVALID_STATE;
  }
  d->node = node;
  return 0;
}

/* End every stream of `c` (or, with c NULL, every stream of `d`): the
 * sides still there are told, after what is already in flight to them. */
static int cut_streams(sp_mem_net *net, const mt_conn *c, const mt_dev *d) {
  size_t i;
  int k;

  for (i = 0; i < net->nstreams; ++i) {
    mt_stream *st = net->streams[i];
    if (c ? st->conn != c : (st->side[0] != d && st->side[1] != d)) {
      continue;
    }
    if (d && st->closed[side_of(st, d)]) {
      continue; /* it closed this stream itself: the peer hears that */
    }
    for (k = 0; k < 2; ++k) {
      if (d && st->side[k] == d) {
        st->gone[k] = 1;
        st->closed[k] = 1;
      }
    }
    for (k = 0; k < 2; ++k) {
      if (!st->gone[k]) {
        st->gone[k] = 1;
        st->closed[k] = 1;
        if (schedule(net, MT_CLOSED, st, k, net->now, SP_ERR_CONNECTION_LOST,
                     NULL, 0) != 0) {
          return SP_ERR_NOMEM;
        }
      }
    }
    st->conn = NULL;
  }
  return 0;
}

static void forget_conn(sp_mem_net *net, mt_conn *c) {
  size_t i;

  for (i = 0; i < net->nconns; ++i) {
    if (net->conns[i] == c) {
      net->conns[i] = net->conns[--net->nconns];
      sp_free(&net->mem, c);
      return;
    }
  }
}

int sp_mem_net_detach(sp_mem_net *net, const sp_uuid *device) {
  mt_dev *d = net && device ? find_dev(net, device) : NULL;
  size_t i;
  int rv;

  if (!d) {
    return SP_ERR_NOT_FOUND;
  }
  rv = cut_streams(net, NULL, d);
  for (i = net->nconns; i-- > 0;) {
    if (net->conns[i]->a == d || net->conns[i]->b == d) {
      forget_conn(net, net->conns[i]);
      net->stats.connections_cut++;
    }
  }
  d->node = NULL;
  return rv;
}

int sp_mem_net_vanish(sp_mem_net *net, const sp_uuid *device) {
  mt_dev *d = net && device ? find_dev(net, device) : NULL;
  size_t i;

  if (!d) {
    return SP_ERR_NOT_FOUND;
  }
  /* Only the vanished side is marked: its node's closes say nothing, and
   * what the peers send on is dropped (t_send), unheard. */
  for (i = 0; i < net->nstreams; ++i) {
    mt_stream *st = net->streams[i];
    if (st->side[0] == d || st->side[1] == d) {
      st->gone[side_of(st, d)] = 1;
      st->closed[side_of(st, d)] = 1;
      st->conn = NULL;
    }
  }
  for (i = net->nconns; i-- > 0;) {
    if (net->conns[i]->a == d || net->conns[i]->b == d) {
      forget_conn(net, net->conns[i]);
    }
  }
  d->node = NULL;
  return 0;
}

int sp_mem_net_cut(sp_mem_net *net, const sp_uuid *a, const sp_uuid *b) {
  mt_dev *da = net && a ? find_dev(net, a) : NULL;
  mt_dev *db = net && b ? find_dev(net, b) : NULL;
  mt_conn *c = da && db ? find_conn(net, da, db, 0) : NULL;
  int rv;

  if (!c) {
    return SP_ERR_NOT_FOUND;
  }
  rv = cut_streams(net, c, NULL);
  forget_conn(net, c);
  net->stats.connections_cut++;
  return rv;
}

int sp_mem_net_set_partitioned(sp_mem_net *net, const sp_uuid *device,
                               int partitioned) {
  mt_dev *d = net && device ? find_dev(net, device) : NULL;
  size_t i, k = 0;

  if (!d) {
    return SP_ERR_NOT_FOUND;
  }
  d->partitioned = partitioned != 0;
  if (partitioned) {
    return 0;
  }
  /* Healed: what was held goes out again, in its original order. */
  for (i = 0; i < net->nheld; ++i) {
    mt_event e = net->held[i];
    mt_stream *st = e.st;
    if ((st->side[0] && st->side[0]->partitioned) ||
        (st->side[1] && st->side[1]->partitioned)) {
      net->held[k++] = e;
      continue;
    }
    if (e.at < net->now) {
      e.at = net->now;
    }
    if (heap_push(net, &e) != 0) {
      sp_free(&net->mem, e.data);
      return SP_ERR_NOMEM;
    }
  }
  net->nheld = k;
  return 0;
}

sp_tstamp sp_mem_net_get_expiry(const sp_mem_net *net) {
  return net->nheap ? net->heap[0].at : SP_TSTAMP_MAX;
}

static int hold(sp_mem_net *net, const mt_event *e) {
  if (grow(net, (void **)&net->held, &net->capheld, net->nheld + 1,
           sizeof(*e)) != 0) {
    return SP_ERR_NOMEM;
  }
  net->held[net->nheld++] = *e;
  return 0;
}

/* Hand one event to its node; returns a fatal code or 0. */
static int deliver(sp_mem_net *net, mt_event *e) {
  mt_stream *st = e->st;
  mt_dev *to = st->side[e->to];
  const sp_uuid *peer = &st->ids[1 - e->to];
  sp_node *node = to ? to->node : NULL;
  int rv = 0;

  if (e->kind == MT_CUT) {
    if (st->conn) {
      mt_conn *c = st->conn;
      rv = cut_streams(net, c, NULL);
      forget_conn(net, c);
      net->stats.connections_cut++;
    }
    return rv;
  }
  if (e->kind == MT_DATA) {
    st->inflight[e->to] -= e->len;
  }
  if (!node || (st->gone[e->to] && e->kind != MT_CLOSED)) {
    return 0;
  }
  switch (e->kind) {
  case MT_OPENED:
    rv = sp_node_stream_opened(node, st->id, peer, net->now);
    break;
  case MT_DATA:
    net->stats.bytes_delivered += e->len;
    net->stats.deliveries++;
    rv = sp_node_stream_data(node, st->id, peer, e->data, e->len, net->now);
    if (st->want_writable[1 - e->to] && !st->gone[1 - e->to]) {
      st->want_writable[1 - e->to] = 0;
      if (schedule(net, MT_WRITABLE, st, 1 - e->to, net->now, 0, NULL, 0) !=
          0) {
        return SP_ERR_NOMEM;
      }
    }
    break;
  case MT_WRITABLE:
    rv = sp_node_stream_writable(node, st->id, peer, net->now);
    break;
  case MT_CLOSED:
    st->gone[e->to] = 1;
    st->closed[e->to] = 1;
    rv = sp_node_stream_closed(node, st->id, peer, e->code, net->now);
    break;
  default:
    break;
  }
  /* A node may not know the stream (it closed it meanwhile): fine. */
  return sp_err_is_fatal(rv) ? rv : 0;
}

int sp_mem_net_run(sp_mem_net *net, sp_tstamp now) {
  if (!net) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (now > net->now) {
    net->now = now;
  }
  while (net->nheap && net->heap[0].at <= net->now) {
    mt_event e = heap_pop(net);
    mt_stream *st = e.st;
    int rv;
    if (!st->unreachable &&
        ((st->side[0] && st->side[0]->partitioned) ||
         (st->side[1] && st->side[1]->partitioned))) {
      if (hold(net, &e) != 0) {
        sp_free(&net->mem, e.data);
        return SP_ERR_NOMEM;
      }
      continue;
    }
    rv = deliver(net, &e);
    sp_free(&net->mem, e.data);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

/* Version 2 of the struct must add its size here. */
_Static_assert(SP_MEM_NET_STATS_VERSION == 1, "sp_mem_net_stats sizes");

int sp_mem_net_get_stats_versioned(const sp_mem_net *net, int version,
                                   sp_mem_net_stats *out) {
  if (!net || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  sp_abi_copy(out, &net->stats,
              SP_ABI_END(sp_mem_net_stats, connections_opened));
  return 0;
}
