/*
 * sp_cluster.c: the simulated cluster used by the integration tests and
 * the fault simulation.  See sp_cluster.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_cluster.h"
#include "sp_async_store.h"

/* ---- registry ---- */

static int lib_index(const tc *t, const sp_uuid *lib) {
  int i;

  for (i = 0; i < t->nlibs; ++i) {
    if (sp_uuid_equal(&t->lib[i], lib)) {
      return i;
    }
  }
  return -1;
}

static int dev_index(const tc *t, const sp_uuid *id) {
  int i;

  for (i = 0; i < t->ndevs; ++i) {
    if (sp_uuid_equal(&t->dev[i].id, id)) {
      return i;
    }
  }
  return -1;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  tc *t = ud;
  int l = lib_index(t, lib), d = dev_index(t, device);

  *is_member = l >= 0 && d >= 0 && t->dev[d].member[l];
  return 0;
}

static int r_can_write(const sp_uuid *lib, const sp_uuid *device,
                       int *can_write, void *ud) {
  tc *t = ud;
  int l = lib_index(t, lib), d = dev_index(t, device);

  *can_write = l >= 0 && d >= 0 && !t->dev[d].read_only[l];
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  tc *t = ud;
  int l = lib_index(t, lib);

  if (l < 0 || t->leader[l] < 0) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = t->dev[t->leader[l]].id;
  return 0;
}

/* Every device of the cluster has its key here, member or not (a device
 * taken out of a library keeps its key). */
static int r_device_key(const sp_uuid *device,
                        uint8_t public_key[SP_PUBLIC_KEY_LEN], void *ud) {
  tc *t = ud;
  int d = dev_index(t, device);

  if (d < 0 || !t->dev[d].identity) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(public_key, t->dev[d].key, SP_PUBLIC_KEY_LEN);
  return 0;
}

static int r_device_by_key(const uint8_t public_key[SP_PUBLIC_KEY_LEN],
                           sp_uuid *device, void *ud) {
  tc *t = ud;
  int i;

  for (i = 0; i < t->ndevs; ++i) {
    if (t->dev[i].identity &&
        memcmp(t->dev[i].key, public_key, SP_PUBLIC_KEY_LEN) == 0) {
      *device = t->dev[i].id;
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int r_may_lead(const sp_uuid *lib, const sp_uuid *device,
                      int *may_lead, void *ud) {
  tc *t = ud;
  int l = lib_index(t, lib), d = dev_index(t, device);

  *may_lead = l >= 0 && d >= 0 && t->dev[d].may_lead[l];
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  tc *t = ud;
  int l = lib_index(t, lib), i;
  size_t n = 0;

  if (l < 0) {
    *count = 0;
    return 0;
  }
  for (i = 0; i < t->ndevs; ++i) {
    if (t->dev[i].member[l]) {
      if (n < cap) {
        out[n] = t->dev[i].id;
      }
      ++n;
    }
  }
  *count = n;
  return 0;
}

/* ---- events ---- */

static int on_event(const sp_event *ev, void *ud) {
  tc_dev *d = ud;

  if ((size_t)ev->type < sizeof(d->counts.ev) / sizeof(d->counts.ev[0])) {
    d->counts.ev[ev->type]++;
  }
  switch (ev->type) {
  case SP_EVENT_ENTRIES_APPLIED:
    d->counts.applied_entries +=
        (long)(ev->to_sequence - ev->from_sequence); /* (from, to] */
    break;
  case SP_EVENT_ERROR:
    d->counts.last_error = ev->error_code;
    break;
  case SP_EVENT_PEER_LOST:
    d->counts.last_lost = ev->error_code;
    break;
  case SP_EVENT_SYNC_REQUIRED_SENT:
  case SP_EVENT_SYNC_REQUIRED_RECEIVED:
    d->counts.last_sync_reason = ev->sync_reason;
    break;
  case SP_EVENT_STEPPED_DOWN:
    d->counts.last_epoch = ev->epoch;
    d->counts.last_leader = ev->leader;
    break;
  case SP_EVENT_ROLE_CONFLICT:
    d->counts.last_epoch = ev->epoch;
    break;
  case SP_EVENT_LOG_CORRUPT:
    d->counts.last_corrupt_seq = ev->to_sequence;
    break;
  default:
    break;
  }
  if (d->tc->on_event) {
    d->tc->on_event(d->tc, d->index, ev);
  }
  if (d->tc->verbose) {
    fprintf(stderr, "[%llu ms] dev%d event %d code %d (%llu..%llu)\n",
            (unsigned long long)(d->tc->now / SP_MILLISECONDS), d->index,
            (int)ev->type, ev->error_code,
            (unsigned long long)ev->from_sequence,
            (unsigned long long)ev->to_sequence);
  }
  return 0;
}

static void on_log(sp_log_level level, const char *msg, void *ud) {
  tc_dev *d = ud;

  if (d->tc->on_log) {
    d->tc->on_log(d->tc, d->index, level, msg);
  }
  if (getenv("SP_TEST_LOG")) {
    fprintf(stderr, "[%llu ms] dev%d log%d %s\n",
            (unsigned long long)(d->tc->now / SP_MILLISECONDS), d->index,
            (int)level, msg);
  }
}

/* ---- wire tap ---- */

typedef struct tc_tap {
  uint64_t stream;
  int from;
  sp_frame_reader *reader;
  int broken;
} tc_tap;

static tc_tap *tap_for(tc *t, uint64_t stream, int from) {
  size_t i;
  tc_tap *p;

  for (i = 0; i < t->ntaps; ++i) {
    if (t->taps[i].stream == stream && t->taps[i].from == from) {
      return &t->taps[i];
    }
  }
  p = realloc(t->taps, (t->ntaps + 1) * sizeof(*p));
  if (!p) {
    abort();
  }
  t->taps = p;
  p = &t->taps[t->ntaps++];
  memset(p, 0, sizeof(*p));
  p->stream = stream;
  p->from = from;
  if (sp_frame_reader_new(&p->reader, SP_MAX_FRAME_LIMIT, NULL) != 0) {
    abort();
  }
  return p;
}

/* Verbose traces: what the write path's frames carry. */
static void tap_detail(tc *t, const sp_msg *m) {
  const sp_leader_claim *c = NULL;
  size_t i;

  fprintf(stderr, " epoch %llu", (unsigned long long)m->epoch);
  if (m->type == SP_MSG_HEARTBEAT && m->u.heartbeat.has_claim) {
    c = &m->u.heartbeat.claim;
  } else if (m->type == SP_MSG_ERROR && m->u.error.has_claim) {
    c = &m->u.error.claim;
  }
  if (c) {
    /* The leaderships in play: who proves which epoch to whom. */
    fprintf(stderr, " claim %llu by dev%d", (unsigned long long)c->epoch,
            dev_index(t, &c->leader));
  }
  if (m->type == SP_MSG_ERROR) {
    fprintf(stderr, " %s", sp_err_name(m->u.error.code));
  }
  if (m->type == SP_MSG_HEARTBEAT && m->u.heartbeat.has_features) {
    fprintf(stderr, " features %llu origin_high %llu",
            (unsigned long long)m->u.heartbeat.features,
            (unsigned long long)m->u.heartbeat.origin_high);
  } else if (m->type == SP_MSG_ENTRIES_RESPONSE) {
    const sp_msg_entries_response *r = &m->u.entries_response;
    fprintf(stderr, " (%llu, %llu]", (unsigned long long)r->since_sequence,
            (unsigned long long)r->through_sequence);
    for (i = 0; i < r->entry_count; ++i) {
      if (r->entries[i].origin_seq) {
        fprintf(stderr, " %llu:o%llu",
                (unsigned long long)r->entries[i].sequence,
                (unsigned long long)r->entries[i].origin_seq);
      }
    }
  } else if (m->type == SP_MSG_FETCH_ENTRIES) {
    fprintf(stderr, " since %llu limit %u%s",
            (unsigned long long)m->u.fetch_entries.since_sequence,
            (unsigned)m->u.fetch_entries.limit,
            m->u.fetch_entries.since_hash_len ? " hashed" : "");
  } else if (m->type == SP_MSG_SNAPSHOT_MANIFEST) {
    fprintf(stderr, " S %llu, %llu bytes in %zu chunks",
            (unsigned long long)m->u.snapshot_manifest.sequence,
            (unsigned long long)m->u.snapshot_manifest.total_size,
            m->u.snapshot_manifest.chunk_count);
  } else if (m->type == SP_MSG_SNAPSHOT_REQUEST) {
    fprintf(stderr, " %s, have %llu",
            m->u.snapshot_request.id_len ? "resume" : "new",
            (unsigned long long)m->u.snapshot_request.have_chunks);
  } else if (m->type == SP_MSG_SNAPSHOT_FETCH) {
    fprintf(stderr, " chunks %llu+%u",
            (unsigned long long)m->u.snapshot_fetch.first_chunk,
            (unsigned)m->u.snapshot_fetch.count);
  } else if (m->type == SP_MSG_SNAPSHOT_CHUNK) {
    fprintf(stderr, " chunk %llu",
            (unsigned long long)m->u.snapshot_chunk.index);
  } else if (m->type == SP_MSG_SYNC_REQUIRED) {
    fprintf(stderr, " reason %d follower %llu",
            (int)m->u.sync_required.reason,
            (unsigned long long)m->u.sync_required.follower_sequence);
  } else if (m->type == SP_MSG_PROPOSE) {
    for (i = 0; i < m->u.propose.entry_count; ++i) {
      fprintf(stderr, " o%llu",
              (unsigned long long)m->u.propose.entries[i].origin_seq);
    }
  } else if (m->type == SP_MSG_PROPOSE_RESULT) {
    const sp_msg_propose_result *r = &m->u.propose_result;
    for (i = 0; i < r->result_count; ++i) {
      fprintf(stderr, " o%llu:%d@%llu",
              (unsigned long long)r->results[i].origin_seq,
              (int)r->results[i].code,
              (unsigned long long)r->results[i].sequence);
    }
  }
  fputc('\n', stderr);
}

static void tap(tc *t, const sp_mem_delivery *d) {
  int from = dev_index(t, &d->from);
  tc_tap *tp;
  const uint8_t *p = d->data;
  size_t len = d->len;
  sp_decoder *dec;

  if (from < 0) {
    return;
  }
  t->dev[from].sent.bytes += (long)len;
  tp = tap_for(t, d->stream_id, from);
  if (tp->broken || sp_decoder_new(&dec, NULL) != 0) {
    return;
  }
  while (len > 0) {
    const uint8_t *body;
    size_t blen;
    sp_msg msg;
    sp_ssize n = sp_frame_reader_read(tp->reader, p, len, &body, &blen);
    if (n < 0) {
      tp->broken = 1;
      break;
    }
    p += n;
    len -= (size_t)n;
    if (body && sp_decoder_decode(dec, body, blen, &msg) == 0 &&
        msg.type < 16) {
      tc_dev *dv = &t->dev[from];
      dv->sent.msgs[msg.type]++;
      if (msg.type == SP_MSG_FETCH_ENTRIES &&
          msg.u.fetch_entries.since_hash_len) {
        dv->sent.fetch_since_first = (long)msg.u.fetch_entries.since_sequence;
      }
      if (t->on_msg) {
        t->on_msg(t, from, dev_index(t, &d->to), d->stream_id, &msg);
      }
      if (t->verbose) {
        fprintf(stderr, "[%llu ms] dev%d -> msg %d (stream %llu)",
                (unsigned long long)(t->now / SP_MILLISECONDS), from,
                (int)msg.type, (unsigned long long)d->stream_id);
        tap_detail(t, &msg);
      }
    }
  }
  sp_decoder_del(dec);
}

static int fault_hook(const sp_mem_delivery *d, sp_mem_verdict *v, void *ud) {
  tc *t = ud;

  tap(t, d);
  return t->fault ? t->fault(t, d, v) : 0;
}

/* ---- devices ---- */

static int make_node(tc *t, int i) {
  tc_dev *d = &t->dev[i];
  sp_node_config cfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  int rv;

  sp_node_config_default(&cfg);
  cfg.device_id = d->id;
  cfg.seed = t->seed * 1000003u + (uint64_t)i;
  cfg.identity = d->anonymous ? NULL : d->identity;
  reg.user_data = t;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.can_write = r_can_write;
  reg.device_key = r_device_key;
  reg.device_by_key = r_device_by_key;
  reg.may_lead = r_may_lead;
  ev.user_data = d;
  ev.on_event = on_event;
  if (getenv("SP_TEST_LOG") || t->on_log) {
    ev.on_log = on_log;
    ev.log_level = SP_LOG_DEBUG;
  }
  rv = sp_node_new(&d->node, &cfg, &reg, &ev, &d->tr, t->mem);
  if (rv != 0) {
    return rv;
  }
  return sp_mem_net_attach(t->net, &d->id, d->node);
}

int tc_init(tc *t, int ndevs, int nlibs, sp_duration latency,
            const sp_mem *mem) {
  int i, l, rv;

  memset(t, 0, sizeof(*t));
  t->mem = mem;
  t->ndevs = ndevs;
  t->nlibs = nlibs;
  t->verbose = getenv("SP_TEST_VERBOSE") != NULL;
  t->now = 1 * SP_SECONDS;
  sp_mem_net_config_default(&t->net_cfg);
  t->net_cfg.latency = latency;
  t->net_cfg.fault = fault_hook;
  t->net_cfg.fault_user_data = t;
  rv = sp_mem_net_new(&t->net, &t->net_cfg, mem);
  if (rv != 0) {
    return rv;
  }
  /* The network's clock must agree with the nodes' from the start. */
  sp_mem_net_run(t->net, t->now);
  for (l = 0; l < nlibs; ++l) {
    memset(&t->lib[l], 0, sizeof(sp_uuid));
    t->lib[l].bytes[0] = 0x11;
    t->lib[l].bytes[15] = (uint8_t)(l + 1);
    t->leader[l] = 0;
  }
  for (i = 0; i < ndevs; ++i) {
    tc_dev *d = &t->dev[i];
    d->tc = t;
    d->index = i;
    d->id.bytes[0] = 0xd0;
    d->id.bytes[15] = (uint8_t)(i + 1);
    /* The default allocator: a failing `mem` (failmalloc) tests the
     * library's allocations, not the test's.  Signatures are
     * deterministic (RFC 8032) and their length fixed: a random key
     * changes no byte count, so no seed's run. */
    rv = sp_identity_generate(&d->identity, &d->id, NULL);
    if (rv != 0) {
      return rv;
    }
    sp_identity_public_key(d->identity, d->key);
    for (l = 0; l < nlibs; ++l) {
      d->member[l] = 1;
      d->may_lead[l] = 1;
      rv = sp_mem_store_new(&d->store[l], mem);
      if (rv != 0) {
        return rv;
      }
      tc_default_cfg(t, i, l, i == 0 ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER);
    }
    rv = sp_mem_net_add_device(t->net, &d->id, &d->tr);
    if (rv != 0) {
      return rv;
    }
    rv = make_node(t, i);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

void tc_free(tc *t) {
  int i, l;
  size_t k;

  for (i = 0; i < t->ndevs; ++i) {
    tc_dev *d = &t->dev[i];
    if (d->node) {
      sp_mem_net_detach(t->net, &d->id);
      sp_node_del(d->node);
      d->node = NULL;
    }
    for (l = 0; l < t->nlibs; ++l) {
      sp_async_store_del(d->astore[l]);
      d->astore[l] = NULL;
      d->async[l] = 0;
      sp_mem_store_del(d->store[l]);
      d->store[l] = NULL;
    }
    sp_identity_del(d->identity);
    d->identity = NULL;
  }
  sp_mem_net_del(t->net);
  for (k = 0; k < t->ntaps; ++k) {
    sp_frame_reader_del(t->taps[k].reader);
  }
  free(t->taps);
  t->taps = NULL;
  t->ntaps = 0;
}

void tc_default_cfg(tc *t, int dev, int lib, sp_role role) {
  sp_handler_config *c = &t->dev[dev].cfg[lib];

  sp_handler_config_default(c);
  c->library_id = t->lib[lib];
  c->role = role;
  c->epoch = 1;
}

/* The async wrapper of an open (tc_dev.async), fresh each time: a
 * process's queue does not outlive it. */
static int wrap_async(tc *t, int dev, int lib, sp_store *st) {
  tc_dev *d = &t->dev[dev];

  (void)t;
  sp_async_store_del(d->astore[lib]);
  d->astore[lib] = NULL;
  if (!d->async[lib]) {
    return 0;
  }
  if (sp_async_store_new(&d->astore[lib], st) != 0) {
    return SP_ERR_NOMEM;
  }
  sp_async_store_vtable(d->astore[lib], st);
  sp_async_store_report_once(d->astore[lib], d->async[lib] == 2);
  return 0;
}

int tc_flush(tc *t, int dev, int lib, size_t n) {
  tc_dev *d = &t->dev[dev];
  int rv;

  if (!d->astore[lib]) {
    return 0;
  }
  rv = sp_async_store_flush(d->astore[lib], n);
  if (d->node) {
    int r = sp_node_handle_expiry(d->node, t->now);
    if (r != 0 && !t->fatal) {
      t->fatal = r;
    }
  }
  return rv;
}

int tc_open(tc *t, int dev, int lib) {
  tc_dev *d = &t->dev[dev];
  sp_store st;

  sp_mem_store_get_vtable(d->store[lib], &st);
  if (t->store_hook) {
    t->store_hook(t, dev, lib, &st);
  }
  if (wrap_async(t, dev, lib, &st) != 0) {
    return SP_ERR_NOMEM;
  }
  d->cfg[lib].role = t->leader[lib] == dev ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
  return sp_handler_new(&d->h[lib], d->node, &d->cfg[lib], &st, t->now);
}

int tc_open_as(tc *t, int dev, int lib, sp_role role, uint64_t epoch) {
  tc_dev *d = &t->dev[dev];
  sp_store st;

  sp_mem_store_get_vtable(d->store[lib], &st);
  if (t->store_hook) {
    t->store_hook(t, dev, lib, &st);
  }
  if (wrap_async(t, dev, lib, &st) != 0) {
    return SP_ERR_NOMEM;
  }
  d->cfg[lib].role = role;
  d->cfg[lib].epoch = epoch;
  return sp_handler_new(&d->h[lib], d->node, &d->cfg[lib], &st, t->now);
}

void tc_close(tc *t, int dev, int lib) {
  sp_handler_del(t->dev[dev].h[lib]);
  t->dev[dev].h[lib] = NULL;
  if (t->dev[dev].astore[lib]) {
    /* A clean close lets the store finish what it took. */
    (void)sp_async_store_flush(t->dev[dev].astore[lib], SIZE_MAX);
  }
}

void tc_crash(tc *t, int dev) {
  tc_dev *d = &t->dev[dev];
  int l;

  if (!d->node) {
    return;
  }
  /* Detach first: the network cuts the device's connections, so deleting
   * the node closes nothing on the wire (a crash says nothing). */
  sp_mem_net_detach(t->net, &d->id);
  /* First: what the store had queued dies with the process. */
  for (l = 0; l < t->nlibs; ++l) {
    if (d->astore[l]) {
      (void)sp_async_store_crash(d->astore[l]);
    }
  }
  sp_node_del(d->node);
  d->node = NULL;
  for (l = 0; l < t->nlibs; ++l) {
    d->h[l] = NULL;
  }
}

int tc_boot(tc *t, int dev) {
  return make_node(t, dev);
}

int tc_restart(tc *t, int dev) {
  tc_dev *d = &t->dev[dev];
  int open[TC_MAX_LIBS], l, rv;

  for (l = 0; l < t->nlibs; ++l) {
    open[l] = d->h[l] != NULL;
  }
  tc_crash(t, dev);
  rv = tc_boot(t, dev);
  for (l = 0; rv == 0 && l < t->nlibs; ++l) {
    if (open[l]) {
      rv = tc_open(t, dev, l);
    }
  }
  return rv;
}

/* ---- entries ---- */

static void fill_entry(sp_entry *e, sp_seq seq, uint8_t *buf, size_t payload,
                       const sp_uuid *dev) {
  size_t i;

  memset(e, 0, sizeof(*e));
  e->sequence = seq;
  e->device_id = *dev;
  e->timestamp_ms = 1700000000000ULL + seq;
  e->model_type = "file_path";
  e->model_type_len = 9;
  e->record_id.bytes[0] = (uint8_t)seq;
  e->record_id.bytes[1] = (uint8_t)(seq >> 8);
  e->change_type = (sp_change_type)(seq % 4);
  e->version = (int64_t)seq - 5;
  for (i = 0; i < payload; ++i) {
    buf[i] = (uint8_t)(seq * 31 + i);
  }
  e->data = buf;
  e->data_len = payload;
}

void tc_notify(tc *t, int lib) {
  tc_dev *l = &t->dev[t->leader[lib]];
  sp_seq latest = tc_latest(t, lib);
  int rv;

  if (l->h[lib] && sp_handler_role(l->h[lib]) == SP_ROLE_LEADER) {
    rv = sp_handler_notify_new_entries(l->h[lib], 1, latest ? latest : 1,
                                       t->now);
    if (sp_err_is_fatal(rv) && !t->fatal) {
      t->fatal = rv;
    }
  }
}

sp_seq tc_append(tc *t, int lib, int n, size_t payload) {
  tc_dev *l = &t->dev[t->leader[lib]];
  uint8_t *buf = malloc(payload ? payload : 1);
  sp_seq seq = 0;
  int i;

  for (i = 0; i < n; ++i) {
    sp_entry e;
    fill_entry(&e, 0, buf, payload, &l->id);
    if (sp_mem_store_append(l->store[lib], &e, &seq) != 0) {
      abort();
    }
  }
  free(buf);
  tc_notify(t, lib);
  return seq;
}

void tc_append_at(tc *t, int lib, sp_seq seq, size_t payload) {
  tc_dev *l = &t->dev[t->leader[lib]];
  uint8_t *buf = malloc(payload ? payload : 1);
  sp_entry e;

  fill_entry(&e, seq, buf, payload, &l->id);
  if (sp_mem_store_append(l->store[lib], &e, NULL) != 0) {
    abort();
  }
  free(buf);
}

int tc_inject(tc *t, int dev, uint64_t stream, const sp_msg *m) {
  const sp_transport *tr = &t->dev[dev].tr;
  uint8_t buf[512];
  size_t len;
  sp_ssize n;
  int rv = sp_msg_encode(m, buf, sizeof(buf), &len);

  if (rv != 0) {
    return rv;
  }
  n = tr->send(stream, buf, len, tr->user_data);
  if (n < 0) {
    return (int)n;
  }
  return (size_t)n < len ? 1 : 0;
}

/* ---- running ---- */

static sp_tstamp next_time(tc *t) {
  sp_tstamp next = sp_mem_net_get_expiry(t->net), x;
  int i;

  for (i = 0; i < t->ndevs; ++i) {
    if (t->dev[i].node) {
      x = sp_node_get_expiry(t->dev[i].node);
      if (x < next) {
        next = x;
      }
    }
  }
  return next;
}

static int step(tc *t, sp_tstamp until) {
  sp_tstamp next = next_time(t);
  int i, rv;

  if (t->fatal && t->stop_on_fatal) {
    return 0;
  }
  if (next > until) {
    t->now = until;
    return 0;
  }
  if (next > t->now) {
    t->now = next;
  }
  rv = sp_mem_net_run(t->net, t->now);
  if (rv != 0 && !t->fatal) {
    t->fatal = rv;
  }
  for (i = 0; i < t->ndevs; ++i) {
    sp_node *node = t->dev[i].node;
    if (node && sp_node_get_expiry(node) <= t->now) {
      rv = sp_node_handle_expiry(node, t->now);
      if (rv != 0 && !t->fatal) {
        t->fatal = rv;
      }
    }
  }
  return 1;
}

void tc_run_until(tc *t, sp_tstamp until) {
  long same = 0;
  sp_tstamp last = t->now;

  while (step(t, until)) {
    same = t->now == last ? same + 1 : 0;
    last = t->now;
    if (same > 10000000) {
      fprintf(stderr, "livelock at %llu ns\n", (unsigned long long)t->now);
      abort();
    }
  }
}

void tc_run_for(tc *t, sp_duration d) { tc_run_until(t, t->now + d); }

static int converged(tc *t, int lib) {
  sp_seq latest = tc_latest(t, lib);
  int i;

  for (i = 0; i < t->ndevs; ++i) {
    if (i != t->leader[lib] && t->dev[i].h[lib] &&
        tc_applied(t, i, lib) != latest) {
      return 0;
    }
  }
  return 1;
}

int tc_converge(tc *t, int lib, sp_duration max) {
  sp_tstamp until = t->now + max;

  while (!converged(t, lib)) {
    if (!step(t, until)) {
      return converged(t, lib);
    }
  }
  return 1;
}

sp_seq tc_applied(tc *t, int dev, int lib) {
  sp_store st;
  sp_store_state s;

  sp_mem_store_get_vtable(t->dev[dev].store[lib], &st);
  if (st.state(&s, st.user_data) != 0) {
    abort();
  }
  return s.applied;
}

sp_seq tc_latest(tc *t, int lib) {
  sp_store st;
  sp_log_bounds b;

  sp_mem_store_get_vtable(t->dev[t->leader[lib]].store[lib], &st);
  if (st.bounds(&b, st.user_data) != 0) {
    abort();
  }
  return b.latest;
}

static int same_entry(const sp_entry *a, const sp_entry *b) {
  return a->sequence == b->sequence &&
         sp_uuid_equal(&a->device_id, &b->device_id) &&
         a->timestamp_ms == b->timestamp_ms &&
         a->model_type_len == b->model_type_len &&
         memcmp(a->model_type, b->model_type, a->model_type_len) == 0 &&
         sp_uuid_equal(&a->record_id, &b->record_id) &&
         a->change_type == b->change_type && a->version == b->version &&
         a->data_len == b->data_len &&
         (a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

static sp_seq pruned_through(sp_mem_store *ms) {
  sp_store st;
  sp_log_bounds b;

  sp_mem_store_get_vtable(ms, &st);
  if (st.bounds(&b, st.user_data) != 0) {
    abort();
  }
  return b.pruned_through;
}

int tc_is_prefix(tc *t, int dev, int lib) {
  sp_mem_store *f = t->dev[dev].store[lib];
  sp_mem_store *l = t->dev[t->leader[lib]].store[lib];
  sp_seq applied = tc_applied(t, dev, lib), seq;
  sp_seq pf = pruned_through(f), pl = pruned_through(l);

  /* Only what both still hold can be compared byte for byte (the chain
   * hash at `applied` vouches for the rest). */
  for (seq = (pf > pl ? pf : pl) + 1; seq <= applied; ++seq) {
    sp_entry a, b;
    uint8_t ha[SP_HASH_LEN], hb[SP_HASH_LEN];
    int ra = sp_mem_store_get(f, seq, &a, ha);
    int rb = sp_mem_store_get(l, seq, &b, hb);
    if (ra == SP_ERR_NOT_FOUND && rb == SP_ERR_NOT_FOUND) {
      continue;
    }
    if (ra != 0 || rb != 0 || !same_entry(&a, &b) ||
        memcmp(ha, hb, SP_HASH_LEN) != 0) {
      fprintf(stderr, "dev%d lib%d differs from the leader at %llu\n", dev,
              lib, (unsigned long long)seq);
      return 0;
    }
  }
  return 1;
}
