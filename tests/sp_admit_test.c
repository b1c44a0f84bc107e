/*
 * sp_admit_test.c: the leader's side of writes from every device.
 *
 * One real leader node is driven through the sp_node_stream_* entry points
 * with a capture transport; its followers are hand-made (frames built with
 * sp_msg_encode, answers decoded with sp_decoder), so every case -- the
 * negotiation, each refusal code, dedupe across streams and leader
 * restarts, store failures -- is reached on purpose and checked on the
 * wire, in the store and in the events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/sync_protocol.h"
#include "sp_cluster.h"
#include "sp_core.h"

#define MAX_STREAMS 32
#define MAX_EVENTS 256
#define EPOCH 4
#define LOG_LEN 3
#define ANY 1

/* ---- fixture ---- */

typedef struct cap {
  uint64_t id;
  uint8_t *buf;
  size_t len, cap, rd;
  sp_frame_reader *reader;
  int closes;
  int close_code;
  int block; /* send answers SP_ERR_WOULD_BLOCK */
} cap;

typedef struct rec {
  sp_event_type type;
  int code;
  uint64_t origin;
  sp_seq from;
  sp_seq to;
  int has_peer;
} rec;

/* What a hand-made follower read from its stream. */
typedef struct seen {
  int hb, hb_features;
  uint64_t features, origin_high;
  int results;
  sp_propose_result res[16];
  char msg[16][SP_MAX_ERROR_MESSAGE_LEN + 1];
  int pages, new_entries;
  /* A page arrived after the feature Heartbeat. */
  int page_after_features;
  int nentries;
  sp_seq eseq[64];
  uint64_t eorigin[64];
  sp_uuid edev[64];
  int errors;
  int32_t error_code;
} seen;

typedef enum amode {
  A_ACCEPT,
  A_REFUSE,
  A_REPLACE,
  A_REPLACE_OTHER,
  A_FAIL
} amode;

typedef struct fx {
  sp_uuid self, lib, P, Q, R, S;
  cap st[MAX_STREAMS];
  size_t nst;
  uint64_t next_local, next_remote;
  rec ev[MAX_EVENTS];
  size_t nev;
  sp_mem_store *store;
  sp_node *node;
  sp_handler *h;
  sp_decoder *dec;
  sp_tstamp now;
  int no_writes; /* the leader's store lacks the version-3 group */
  size_t max_frame; /* the node's (0: default) */
  int reg_fail;  /* can_write fails */
  int p_read_only; /* can_write says no to P too */
  long can_write_calls;
  int arm_nomem; /* the admission callback makes the node's next
                  * allocation fail */
  int nomem;
  int p_leads;   /* the registry names P the leader (self follows) */
  /* P's key, when a test needs P's leadership claims to verify. */
  sp_identity *id_p;
  /* admission */
  amode mode;
  int code;
  const char *message;
  int calls;
  uint8_t rep_data[8];
} fx;

static sp_uuid mkid(uint8_t tag, uint8_t n) {
  sp_uuid u;

  memset(&u, 0, sizeof(u));
  u.bytes[0] = tag;
  u.bytes[15] = n;
  return u;
}

static cap *cs(fx *f, uint64_t id) {
  size_t i;
  cap *c;

  for (i = 0; i < f->nst; ++i) {
    if (f->st[i].id == id) {
      return &f->st[i];
    }
  }
  assert_true(f->nst < MAX_STREAMS);
  c = &f->st[f->nst++];
  memset(c, 0, sizeof(*c));
  c->id = id;
  assert_int_equal(sp_frame_reader_new(&c->reader, SP_MAX_FRAME_LIMIT, NULL),
                   0);
  return c;
}

static int t_open(const sp_uuid *peer, const sp_uuid *lib, uint64_t *id,
                  void *ud) {
  fx *f = ud;

  (void)peer;
  (void)lib;
  *id = f->next_local++;
  cs(f, *id);
  return 0;
}

static sp_ssize t_send(uint64_t id, const uint8_t *data, size_t len,
                       void *ud) {
  fx *f = ud;
  cap *c = cs(f, id);

  assert_int_equal(c->closes, 0);
  if (c->block) {
    return SP_ERR_WOULD_BLOCK;
  }
  if (c->len + len > c->cap) {
    size_t ncap = c->cap ? c->cap : 1024;
    while (ncap < c->len + len) {
      ncap *= 2;
    }
    c->buf = realloc(c->buf, ncap);
    assert_non_null(c->buf);
    c->cap = ncap;
  }
  memcpy(c->buf + c->len, data, len);
  c->len += len;
  return (sp_ssize)len;
}

static int t_close(uint64_t id, int code, void *ud) {
  fx *f = ud;
  cap *c = cs(f, id);

  c->closes++;
  c->close_code = code;
  return 0;
}

static int is_member_id(const fx *f, const sp_uuid *d) {
  return sp_uuid_equal(d, &f->self) || sp_uuid_equal(d, &f->P) ||
         sp_uuid_equal(d, &f->Q) || sp_uuid_equal(d, &f->R);
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *d, int *out,
                       void *ud) {
  fx *f = ud;

  *out = sp_uuid_equal(lib, &f->lib) && is_member_id(f, d);
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  fx *f = ud;

  (void)lib;
  *leader = f->p_leads ? f->P : f->self;
  return 0;
}

static int r_device_key(const sp_uuid *device,
                        uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  fx *f = ud;

  if (!f->id_p || !sp_uuid_equal(device, &f->P)) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(f->id_p, key);
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap_,
                     size_t *count, void *ud) {
  fx *f = ud;
  sp_uuid all[4];
  size_t i;

  (void)lib;
  all[0] = f->self;
  all[1] = f->P;
  all[2] = f->Q;
  all[3] = f->R;
  for (i = 0; i < 4 && i < cap_; ++i) {
    out[i] = all[i];
  }
  *count = 4;
  return 0;
}

/* R is a read-only member. */
static int r_can_write(const sp_uuid *lib, const sp_uuid *d, int *out,
                       void *ud) {
  fx *f = ud;

  (void)lib;
  f->can_write_calls++;
  if (f->reg_fail) {
    return SP_ERR_REGISTRY;
  }
  *out = !sp_uuid_equal(d, &f->R) &&
         !(f->p_read_only && sp_uuid_equal(d, &f->P));
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  fx *f = ud;
  rec *r;

  assert_true(f->nev < MAX_EVENTS);
  r = &f->ev[f->nev++];
  r->type = ev->type;
  r->code = ev->error_code;
  r->origin = ev->origin_seq;
  r->from = ev->from_sequence;
  r->to = ev->to_sequence;
  r->has_peer = ev->has_peer;
  return 0;
}

static const rec *last_ev(const fx *f, sp_event_type type) {
  size_t i = f->nev;

  while (i-- > 0) {
    if (f->ev[i].type == type) {
      return &f->ev[i];
    }
  }
  fail_msg("no event of type %d", (int)type);
  return NULL;
}

static long count_ev(const fx *f, sp_event_type type, int code) {
  size_t i;
  long n = 0;

  for (i = 0; i < f->nev; ++i) {
    n += f->ev[i].type == type && (code == ANY || f->ev[i].code == code);
  }
  return n;
}

static int admit(sp_handler *h, const sp_uuid *proposer, const sp_entry *e,
                 sp_admission *out, void *ud) {
  fx *f = ud;

  (void)h;
  assert_true(sp_uuid_equal(proposer, &e->device_id));
  assert_true(e->origin_seq != 0);
  assert_int_equal(out->decision, SP_ADMIT_ACCEPT);
  f->calls++;
  if (f->arm_nomem) {
    f->arm_nomem = 0;
    f->nomem = 1;
  }
  switch (f->mode) {
  case A_ACCEPT:
    break;
  case A_FAIL:
    return -1;
  case A_REFUSE:
    out->decision = SP_ADMIT_REFUSE;
    out->code = f->code;
    out->message = f->message;
    break;
  case A_REPLACE:
  case A_REPLACE_OTHER:
    out->decision = SP_ADMIT_REPLACE;
    out->replacement = *e;
    /* Garbage where the library forces its own values. */
    out->replacement.device_id = f->Q;
    out->replacement.origin_seq = 999;
    memset(f->rep_data, 0x5a, sizeof(f->rep_data));
    out->replacement.data = f->rep_data;
    out->replacement.data_len = sizeof(f->rep_data);
    out->replacement.version = 77;
    if (f->mode == A_REPLACE_OTHER) {
      out->replacement.record_id.bytes[5] ^= 1;
    }
    break;
  }
  return 0;
}

static void fill(sp_entry *e, const sp_uuid *dev, uint64_t origin,
                 uint8_t rec_tag) {
  static const uint8_t payload[] = {1, 2, 3, 4};

  memset(e, 0, sizeof(*e));
  e->device_id = *dev;
  e->timestamp_ms = 1700000000000ULL + origin;
  e->model_type = "tag";
  e->model_type_len = 3;
  e->record_id.bytes[0] = rec_tag;
  e->record_id.bytes[1] = (uint8_t)origin;
  e->change_type = SP_CHANGE_INSERT;
  e->version = 1;
  e->data = payload;
  e->data_len = sizeof(payload);
  e->origin_seq = origin;
}

/* Counts the store's append calls (one per Propose frame). */
static int (*g_append)(const sp_entry *, size_t, sp_seq *, void *);
static long g_appends;

static int count_append(const sp_entry *e, size_t n, sp_seq *first,
                        void *ud) {
  g_appends++;
  return g_append(e, n, first, ud);
}

static void store_vt(fx *f, sp_store *vt) {
  sp_mem_store_get_vtable(f->store, vt);
  g_append = vt->append;
  vt->append = count_append;
  if (f->no_writes) {
    vt->append = NULL;
    vt->find_origin = NULL;
    vt->outbox_put = NULL;
    vt->outbox_read = NULL;
    vt->outbox_remove = NULL;
    vt->outbox_stats = NULL;
    vt->outbox_anchor = NULL;
  }
}

/* The node's allocator: the default, but the next allocation fails once
 * f->nomem is set. */
static fx *live;

static int take_nomem(void) {
  if (live && live->nomem) {
    live->nomem = 0;
    return 1;
  }
  return 0;
}

static void *m_malloc(size_t n, void *ud) {
  (void)ud;
  return take_nomem() ? NULL : malloc(n);
}

static void m_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *m_calloc(size_t k, size_t n, void *ud) {
  (void)ud;
  return take_nomem() ? NULL : calloc(k, n);
}

static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return take_nomem() ? NULL : realloc(p, n);
}

static const sp_mem node_mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};

/* A node that leads `lib`, on the fixture's store (kept across restarts). */
static void fx_node(fx *f) {
  sp_node_config nc;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_handler_config hc;
  sp_store vt;

  sp_node_config_default(&nc);
  nc.device_id = f->self;
  nc.seed = 7;
  nc.max_frame = f->max_frame;
  reg.user_data = f;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.can_write = r_can_write;
  reg.device_key = r_device_key;
  ev.user_data = f;
  ev.on_event = on_event;
  tr.user_data = f;
  tr.open_stream = t_open;
  tr.send = t_send;
  tr.close_stream = t_close;
  assert_int_equal(sp_node_new(&f->node, &nc, &reg, &ev, &tr, &node_mem),
                   0);
  sp_handler_config_default(&hc);
  hc.library_id = f->lib;
  hc.role = SP_ROLE_LEADER;
  hc.epoch = EPOCH;
  hc.admit = admit;
  hc.admit_user_data = f;
  store_vt(f, &vt);
  assert_int_equal(sp_handler_new(&f->h, f->node, &hc, &vt, f->now), 0);
}

static void fx_init(fx *f) {
  int i;

  memset(f, 0, sizeof(*f));
  live = f;
  f->self = mkid(0xb0, 1);
  f->P = mkid(0xb0, 2);
  f->Q = mkid(0xb0, 3);
  f->R = mkid(0xb0, 4);
  f->S = mkid(0xb0, 5);
  f->lib = mkid(0x22, 1);
  f->next_local = 1;
  f->next_remote = 1001;
  f->now = 10 * SP_SECONDS;
  assert_int_equal(sp_decoder_new(&f->dec, NULL), 0);
  assert_int_equal(sp_mem_store_new(&f->store, NULL), 0);
  for (i = 0; i < LOG_LEN; ++i) {
    sp_entry e;
    fill(&e, &f->self, 0, 0xee);
    e.record_id.bytes[2] = (uint8_t)i;
    assert_int_equal(sp_mem_store_append(f->store, &e, NULL), 0);
  }
}

static void fx_start(fx *f) {
  fx_init(f);
  fx_node(f);
}

static void fx_free(fx *f) {
  size_t i;

  live = NULL;
  sp_node_del(f->node);
  for (i = 0; i < f->nst; ++i) {
    free(f->st[i].buf);
    sp_frame_reader_del(f->st[i].reader);
  }
  sp_mem_store_del(f->store);
  sp_decoder_del(f->dec);
  sp_identity_del(f->id_p);
}

static int teardown(void **state) {
  (void)state;
  if (live) {
    fx_free(live);
  }
  return 0;
}

/* ---- the hand-made follower ---- */

static sp_msg mk(sp_msg_type type, const fx *f) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = type;
  m.library_id = f->lib;
  m.epoch = EPOCH;
  return m;
}

static uint64_t open_in(fx *f, const sp_uuid *peer) {
  uint64_t id = f->next_remote++;

  cs(f, id);
  assert_int_equal(sp_node_stream_opened(f->node, id, peer, f->now), 0);
  return id;
}

static void send_msg(fx *f, uint64_t id, const sp_uuid *peer, sp_msg *m) {
  static uint8_t buf[256 * 1024];
  size_t n = 0;

  m->with_origin = 1;
  assert_int_equal(sp_msg_encode(m, buf, sizeof(buf), &n), 0);
  assert_int_equal(sp_node_stream_data(f->node, id, peer, buf, n, f->now), 0);
}

static void hello(fx *f, uint64_t id, const sp_uuid *peer, int features) {
  sp_msg m = mk(SP_MSG_HEARTBEAT, f);

  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = features;
  m.u.heartbeat.features = features ? SP_FEATURES_SUPPORTED : 0;
  send_msg(f, id, peer, &m);
}

/* The resume fetch: the follower stands at 0 and catches up. */
static void fetch(fx *f, uint64_t id, const sp_uuid *peer) {
  sp_msg m = mk(SP_MSG_FETCH_ENTRIES, f);

  m.u.fetch_entries.since_sequence = 0;
  m.u.fetch_entries.limit = 1000;
  send_msg(f, id, peer, &m);
}

static void propose(fx *f, uint64_t id, const sp_uuid *peer,
                    const sp_entry *e, size_t n) {
  sp_msg m = mk(SP_MSG_PROPOSE, f);

  m.u.propose.entries = e;
  m.u.propose.entry_count = n;
  send_msg(f, id, peer, &m);
}

/* Decode everything new on stream `id` into `s`. */
static void take(fx *f, uint64_t id, seen *s) {
  cap *c = cs(f, id);

  memset(s, 0, sizeof(*s));
  while (c->rd < c->len) {
    const uint8_t *body;
    size_t blen, i;
    sp_msg m;
    sp_ssize n = sp_frame_reader_read(c->reader, c->buf + c->rd,
                                      c->len - c->rd, &body, &blen);
    assert_true(n >= 0);
    c->rd += (size_t)n;
    if (!body) {
      continue;
    }
    assert_int_equal(sp_decoder_decode(f->dec, body, blen, &m), 0);
    switch (m.type) {
    case SP_MSG_HEARTBEAT:
      s->hb++;
      if (m.u.heartbeat.has_features) {
        s->hb_features++;
        s->features = m.u.heartbeat.features;
        s->origin_high = m.u.heartbeat.origin_high;
      }
      break;
    case SP_MSG_PROPOSE_RESULT:
      s->results = (int)m.u.propose_result.result_count;
      assert_true(s->results <= 16);
      for (i = 0; i < m.u.propose_result.result_count; ++i) {
        const sp_propose_result *r = &m.u.propose_result.results[i];
        s->res[i] = *r;
        memcpy(s->msg[i], r->message, r->message_len);
        s->msg[i][r->message_len] = '\0';
      }
      break;
    case SP_MSG_ENTRIES_RESPONSE:
      s->pages++;
      s->page_after_features |= s->hb_features > 0;
      for (i = 0; i < m.u.entries_response.entry_count; ++i) {
        const sp_entry *e = &m.u.entries_response.entries[i];
        assert_true(s->nentries < 64);
        s->eseq[s->nentries] = e->sequence;
        s->eorigin[s->nentries] = e->origin_seq;
        s->edev[s->nentries] = e->device_id;
        s->nentries++;
      }
      break;
    case SP_MSG_NEW_ENTRIES:
      s->new_entries++;
      break;
    case SP_MSG_ERROR:
      s->errors++;
      s->error_code = m.u.error.code;
      break;
    default:
      fail_msg("unexpected message type %d", (int)m.type);
    }
  }
}

/* A follower `peer` on a new stream: negotiated (or not) and caught up. */
static uint64_t join(fx *f, const sp_uuid *peer, int features) {
  uint64_t id = open_in(f, peer);
  seen s;

  hello(f, id, peer, features);
  fetch(f, id, peer);
  take(f, id, &s);
  assert_int_equal(s.hb_features, features ? 1 : 0);
  assert_int_equal(s.errors, 0);
  return id;
}

static sp_seq latest(fx *f) {
  sp_store vt;
  sp_log_bounds b;

  sp_mem_store_get_vtable(f->store, &vt);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  return b.latest;
}

static void get(fx *f, sp_seq seq, sp_entry *e) {
  assert_int_equal(sp_mem_store_get(f->store, seq, e, NULL), 0);
}

/* One answer on `id`: `code` at `seq`. */
static void expect_one(fx *f, uint64_t id, int code, sp_seq seq) {
  seen s;

  take(f, id, &s);
  assert_int_equal(s.results, 1);
  assert_int_equal(s.res[0].code, code);
  assert_int_equal(s.res[0].sequence, seq);
  assert_int_equal(s.errors, 0);
}

/* ---- negotiation ---- */

/* A follower that does not advertise is never sent a feature element or
 * a new message, even with forwarded entries in the log, and a Propose
 * from it is refused NOT_NEGOTIATED. */
static void test_no_features(void **state) {
  static fx f;
  sp_entry e;
  seen s;
  uint64_t id;
  int i;

  (void)state;
  fx_init(&f);
  fill(&e, &f.P, 3, 1);
  assert_int_equal(sp_mem_store_append(f.store, &e, NULL), 0);
  fx_node(&f);
  id = open_in(&f, &f.Q);
  hello(&f, id, &f.Q, 0);
  fetch(&f, id, &f.Q);
  f.now += 31 * SP_SECONDS;
  assert_int_equal(sp_node_handle_expiry(f.node, f.now), 0);
  take(&f, id, &s);
  assert_int_equal(s.nentries, LOG_LEN + 1);
  for (i = 0; i < s.nentries; ++i) {
    assert_int_equal(s.eorigin[i], 0);
  }
  assert_true(s.hb >= 1);
  assert_int_equal(s.hb_features, 0);

  fill(&e, &f.Q, 1, 2);
  propose(&f, id, &f.Q, &e, 1);
  take(&f, id, &s);
  assert_int_equal(s.errors, 1);
  assert_int_equal(s.error_code, SP_ERR_NOT_NEGOTIATED);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_NOT_NEGOTIATED);
  assert_int_equal(latest(&f), LOG_LEN + 1);
  assert_int_equal(f.calls, 0);
  fx_free(&f);
}

/* A snapshot message (a feature this leader never advertised) is refused
 * NOT_NEGOTIATED even on a stream that negotiated writes, and one meant
 * for a follower is refused WRONG_ROLE: never silently dropped. */
static void test_snapshot_not_negotiated(void **state) {
  static fx f;
  seen s;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_init(&f);
  fx_node(&f);
  id = open_in(&f, &f.P);
  hello(&f, id, &f.P, 1);
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 1);
  m = mk(SP_MSG_SNAPSHOT_REQUEST, &f);
  m.u.snapshot_request.max_frame = SP_MAX_FRAME_DEFAULT;
  send_msg(&f, id, &f.P, &m);
  take(&f, id, &s);
  assert_int_equal(s.errors, 1);
  assert_int_equal(s.error_code, SP_ERR_NOT_NEGOTIATED);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_NOT_NEGOTIATED);

  id = open_in(&f, &f.Q);
  hello(&f, id, &f.Q, 1);
  take(&f, id, &s);
  m = mk(SP_MSG_SNAPSHOT_CHUNK, &f);
  send_msg(&f, id, &f.Q, &m);
  take(&f, id, &s);
  assert_int_equal(s.errors, 1);
  assert_int_equal(s.error_code, SP_ERR_WRONG_ROLE);
  fx_free(&f);
}

/* Features advertised: one feature Heartbeat back with the device's
 * origin_high, then entries carry origin_seq. */
static void test_negotiation(void **state) {
  static fx f;
  sp_entry e;
  seen s;
  uint64_t id;

  (void)state;
  fx_init(&f);
  fill(&e, &f.P, 7, 1);
  assert_int_equal(sp_mem_store_append(f.store, &e, NULL), 0);
  fill(&e, &f.Q, 9, 1);
  assert_int_equal(sp_mem_store_append(f.store, &e, NULL), 0);
  fx_node(&f);
  id = open_in(&f, &f.P);
  hello(&f, id, &f.P, 1);
  take(&f, id, &s);
  assert_int_equal(s.hb, 1);
  assert_int_equal(s.hb_features, 1);
  /* Ours (no snapshot source; claims, which every handler reads) AND
   * the follower's. */
  assert_int_equal(s.features, SP_FEATURE_WRITES | SP_FEATURE_CLAIMS);
  assert_int_equal(s.origin_high, 7);
  /* A second advertisement does not renegotiate. */
  hello(&f, id, &f.P, 1);
  fetch(&f, id, &f.P);
  take(&f, id, &s);
  assert_int_equal(s.hb, 0);
  assert_int_equal(s.nentries, LOG_LEN + 2);
  assert_int_equal(s.eorigin[LOG_LEN], 7);
  assert_int_equal(s.eorigin[LOG_LEN + 1], 9);
  assert_int_equal(s.eorigin[0], 0);
  /* Later heartbeats keep the features. */
  f.now += 31 * SP_SECONDS;
  assert_int_equal(sp_node_handle_expiry(f.node, f.now), 0);
  take(&f, id, &s);
  assert_true(s.hb >= 1);
  assert_int_equal(s.hb_features, s.hb);
  fx_free(&f);
}

/* A leader whose store lacks the write path never negotiates writes
 * (claims only). */
static void test_no_writes_store(void **state) {
  static fx f;
  sp_entry e;
  seen s;
  uint64_t id;
  int i;

  (void)state;
  fx_init(&f);
  f.no_writes = 1;
  fx_node(&f);
  id = open_in(&f, &f.P);
  hello(&f, id, &f.P, 1);
  fetch(&f, id, &f.P);
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 1);
  assert_int_equal(s.features, SP_FEATURE_CLAIMS);
  assert_int_equal(s.nentries, LOG_LEN);
  for (i = 0; i < s.nentries; ++i) {
    assert_int_equal(s.eorigin[i], 0);
  }
  fill(&e, &f.P, 1, 1);
  propose(&f, id, &f.P, &e, 1);
  take(&f, id, &s);
  assert_int_equal(s.error_code, SP_ERR_NOT_NEGOTIATED);
  assert_int_equal(sp_admit_submit_local(f.h, &e, 1, NULL),
                   SP_ERR_NOT_SUPPORTED);
  fx_free(&f);
}

static void fetch_features(fx *f, uint64_t id, const sp_uuid *peer,
                           uint64_t features) {
  sp_msg m = mk(SP_MSG_FETCH_ENTRIES, f);

  m.u.fetch_entries.since_sequence = 0;
  m.u.fetch_entries.limit = 1000;
  m.u.fetch_entries.has_features = 1;
  m.u.fetch_entries.features = features;
  send_msg(f, id, peer, &m);
}

/* A follower whose features Heartbeat was lost: its FetchEntries carries
 * them too, so the leader negotiates there -- one feature Heartbeat,
 * ahead of the page, whose entries carry their origins -- and a later
 * advertisement changes nothing.  Bits this leader lacks negotiate
 * nothing; a leader whose store lacks the write path negotiates claims
 * only, and its entries carry no origins. */
static void test_fetch_negotiates(void **state) {
  static fx f;
  sp_entry e;
  seen s;
  uint64_t id;
  int i;

  (void)state;
  fx_init(&f);
  fill(&e, &f.P, 7, 1);
  assert_int_equal(sp_mem_store_append(f.store, &e, NULL), 0);
  fx_node(&f);
  id = open_in(&f, &f.P);
  hello(&f, id, &f.P, 0); /* what is left when the features one is lost */
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 0);
  fetch_features(&f, id, &f.P, SP_FEATURES_SUPPORTED);
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 1);
  assert_int_equal(s.features, SP_FEATURE_WRITES | SP_FEATURE_CLAIMS);
  assert_int_equal(s.origin_high, 7);
  assert_true(s.pages >= 1);
  assert_true(s.page_after_features);
  assert_int_equal(s.nentries, LOG_LEN + 1);
  assert_int_equal(s.eorigin[LOG_LEN], 7);
  hello(&f, id, &f.P, 1);
  fetch_features(&f, id, &f.P, SP_FEATURES_SUPPORTED);
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 0);
  assert_int_equal(s.errors, 0);
  fill(&e, &f.P, 8, 2);
  propose(&f, id, &f.P, &e, 1);
  expect_one(&f, id, 0, LOG_LEN + 2);

  /* Unknown bits only: the seed's bytes. */
  id = open_in(&f, &f.Q);
  hello(&f, id, &f.Q, 0);
  fetch_features(&f, id, &f.Q, SP_FEATURE_WRITES << 1);
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 0);
  assert_int_equal(s.nentries, LOG_LEN + 2);
  for (i = 0; i < s.nentries; ++i) {
    assert_int_equal(s.eorigin[i], 0);
  }
  fill(&e, &f.Q, 1, 1);
  propose(&f, id, &f.Q, &e, 1);
  take(&f, id, &s);
  assert_int_equal(s.error_code, SP_ERR_NOT_NEGOTIATED);
  fx_free(&f);

  fx_init(&f);
  f.no_writes = 1;
  fx_node(&f);
  id = open_in(&f, &f.P);
  fetch_features(&f, id, &f.P, SP_FEATURES_SUPPORTED);
  take(&f, id, &s);
  assert_int_equal(s.hb_features, 1);
  assert_int_equal(s.features, SP_FEATURE_CLAIMS);
  assert_int_equal(s.nentries, LOG_LEN);
  for (i = 0; i < s.nentries; ++i) {
    assert_int_equal(s.eorigin[i], 0);
  }
  assert_int_equal(s.errors, 0);
  fx_free(&f);
}

/* ---- admission ---- */

/* Accepted: appended once (one append for the frame), answered with the
 * sequences, pushed to the proposer and to another follower. */
static void test_accept(void **state) {
  static fx f;
  sp_entry e[2], got;
  seen s;
  uint64_t p, q;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  q = join(&f, &f.Q, 0);
  fill(&e[0], &f.P, 1, 1);
  fill(&e[1], &f.P, 2, 2);
  g_appends = 0;
  propose(&f, p, &f.P, e, 2);
  assert_int_equal(f.calls, 2);
  assert_int_equal(g_appends, 1);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  get(&f, LOG_LEN + 2, &got);
  assert_true(sp_uuid_equal(&got.device_id, &f.P));
  assert_int_equal(got.origin_seq, 2);
  take(&f, p, &s);
  assert_int_equal(s.results, 2);
  assert_int_equal(s.res[0].origin_seq, 1);
  assert_int_equal(s.res[0].code, 0);
  assert_int_equal(s.res[0].sequence, LOG_LEN + 1);
  assert_int_equal(s.res[1].code, 0);
  assert_int_equal(s.res[1].sequence, LOG_LEN + 2);
  assert_int_equal(s.nentries, 2);
  assert_int_equal(s.eseq[1], LOG_LEN + 2);
  assert_int_equal(s.eorigin[0], 1);
  assert_int_equal(s.eorigin[1], 2);
  take(&f, q, &s);
  assert_int_equal(s.nentries, 2);
  assert_int_equal(s.eorigin[1], 0); /* Q did not negotiate */
  assert_true(sp_uuid_equal(&s.edev[1], &f.P));
  assert_int_equal(s.results, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 0);
  /* The leader's host hears of the rows the library appended. */
  assert_int_equal(count_ev(&f, SP_EVENT_ENTRIES_APPENDED, ANY), 1);
  assert_int_equal(last_ev(&f, SP_EVENT_ENTRIES_APPENDED)->from, LOG_LEN);
  assert_int_equal(last_ev(&f, SP_EVENT_ENTRIES_APPENDED)->to, LOG_LEN + 2);
  fx_free(&f);
}

/* A retried proposal is answered with the same sequence and not appended
 * again: on the same stream, a new stream, and a restarted leader. */
static void test_duplicate(void **state) {
  static fx f;
  sp_entry e[2];
  seen s;
  uint64_t p;
  int round;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  fill(&e[0], &f.P, 1, 1);
  propose(&f, p, &f.P, e, 1);
  take(&f, p, &s);
  assert_int_equal(s.res[0].sequence, LOG_LEN + 1);
  for (round = 0; round < 3; ++round) {
    if (round == 1) {
      p = join(&f, &f.P, 1);
    } else if (round == 2) {
      sp_node_del(f.node);
      f.node = NULL;
      fx_node(&f);
      p = join(&f, &f.P, 1);
    }
    fill(&e[1], &f.P, 2, 2);
    propose(&f, p, &f.P, e, 2); /* 1 again, and 2 new the first time */
    take(&f, p, &s);
    assert_int_equal(s.results, 2);
    assert_int_equal(s.res[0].code, 0);
    assert_int_equal(s.res[0].sequence, LOG_LEN + 1);
    assert_int_equal(s.res[1].code, 0);
    assert_int_equal(s.res[1].sequence, LOG_LEN + 2);
    assert_int_equal(latest(&f), LOG_LEN + 2);
  }
  assert_int_equal(f.calls, 2); /* never asked again about appended ones */
  fx_free(&f);
}

/* The log's committed set decides, on a stream that never fetched too:
 * an origin id it retains is answered with its sequence (ORIGIN_CONFLICT
 * for another record), one it held and pruned with code 0 and sequence 0,
 * neither judged nor appended again; one it never held is judged however
 * old it is -- a refused one again each time it is proposed. */
static void test_origin_committed_set(void **state) {
  static fx f;
  sp_entry e;
  seen s;
  uint64_t p;

  (void)state;
  fx_init(&f);
  fill(&e, &f.P, 2, 1);
  assert_int_equal(sp_mem_store_append(f.store, &e, NULL), 0);
  fill(&e, &f.P, 5, 1);
  assert_int_equal(sp_mem_store_append(f.store, &e, NULL), 0);
  assert_int_equal(sp_mem_store_prune(f.store, LOG_LEN + 1), 0);
  fx_node(&f);
  p = open_in(&f, &f.P);
  hello(&f, p, &f.P, 1);
  take(&f, p, &s);
  assert_int_equal(s.hb_features, 1);
  assert_int_equal(s.origin_high, 5);

  fill(&e, &f.P, 2, 1); /* committed, then pruned */
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, 0, 0);
  fill(&e, &f.P, 5, 9); /* retained, with record tag 1 */
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, SP_ERR_ORIGIN_CONFLICT, 0);
  fill(&e, &f.P, 5, 1); /* same record, other payload: already there */
  e.version = 99;
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, 0, LOG_LEN + 2);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  assert_int_equal(f.calls, 0);

  /* Below origin_high and never held: a refusal whose answer was lost
   * is judged again, as often as it comes. */
  f.mode = A_REFUSE;
  f.code = SP_ERR_REFUSED;
  f.message = "not now";
  fill(&e, &f.P, 3, 1);
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, SP_ERR_REFUSED, 0);
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, SP_ERR_REFUSED, 0);
  assert_int_equal(f.calls, 2);
  f.mode = A_ACCEPT;
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, 0, LOG_LEN + 3);
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, 0, LOG_LEN + 3);
  assert_int_equal(f.calls, 3);
  assert_int_equal(latest(&f), LOG_LEN + 3);
  assert_int_equal(cs(&f, p)->closes, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 0);
  fx_free(&f);
}

/* IMPERSONATION and BAD_PROPOSAL, entry by entry: the good ones of the
 * frame are still appended. */
static void test_bad_entries(void **state) {
  static fx f;
  sp_entry e[5], got;
  seen s;
  uint64_t p;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  fill(&e[0], &f.Q, 1, 1); /* another device's name */
  fill(&e[1], &f.P, 2, 2);
  e[1].sequence = 50;      /* sequence set */
  fill(&e[2], &f.P, 4, 3); /* good */
  fill(&e[3], &f.P, 3, 4); /* not increasing */
  fill(&e[4], &f.P, 6, 5); /* good */
  propose(&f, p, &f.P, e, 5);
  take(&f, p, &s);
  assert_int_equal(s.results, 5);
  assert_int_equal(s.res[0].code, SP_ERR_IMPERSONATION);
  assert_int_equal(s.res[1].code, SP_ERR_BAD_PROPOSAL);
  assert_int_equal(s.res[2].code, 0);
  assert_int_equal(s.res[2].sequence, LOG_LEN + 1);
  assert_int_equal(s.res[3].code, SP_ERR_BAD_PROPOSAL);
  assert_int_equal(s.res[3].sequence, 0);
  assert_int_equal(s.res[4].sequence, LOG_LEN + 2);
  assert_true(strlen(s.msg[0]) > 0);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  get(&f, LOG_LEN + 2, &got);
  assert_int_equal(got.origin_seq, 6);
  assert_int_equal(f.calls, 2);

  /* origin 0: the 8-element form, which a Propose must not use. */
  fill(&e[0], &f.P, 0, 1);
  propose(&f, p, &f.P, e, 1);
  expect_one(&f, p, SP_ERR_BAD_PROPOSAL, 0);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  fx_free(&f);
}

/* A read-only member: every entry READ_ONLY, the host never asked; a
 * failing can_write closes the stream unanswered. */
static void test_read_only(void **state) {
  static fx f;
  sp_entry e[2];
  seen s;
  uint64_t r;

  (void)state;
  fx_start(&f);
  r = join(&f, &f.R, 1);
  fill(&e[0], &f.R, 1, 1);
  fill(&e[1], &f.R, 2, 1);
  propose(&f, r, &f.R, e, 2);
  take(&f, r, &s);
  assert_int_equal(s.results, 2);
  assert_int_equal(s.res[0].code, SP_ERR_READ_ONLY);
  assert_int_equal(s.res[1].code, SP_ERR_READ_ONLY);
  assert_int_equal(f.calls, 0);
  assert_int_equal(latest(&f), LOG_LEN);

  f.reg_fail = 1;
  r = join(&f, &f.P, 1);
  fill(&e[0], &f.P, 1, 1);
  propose(&f, r, &f.P, e, 1);
  take(&f, r, &s);
  assert_int_equal(s.results, 0);
  assert_int_equal(cs(&f, r)->close_code, SP_ERR_REGISTRY);
  assert_int_equal(latest(&f), LOG_LEN);
  fx_free(&f);
}

/* The host refuses: its code and message travel back; codes it may not
 * use become REFUSED; a long message is cut at a character boundary. */
static void test_host_refuse(void **state) {
  static fx f;
  static char longmsg[3000];
  sp_entry e;
  seen s;
  uint64_t p;
  size_t i;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  f.mode = A_REFUSE;
  f.code = SP_ERR_INVALID_ARGUMENT;
  f.message = "no tags on Sundays";
  fill(&e, &f.P, 1, 1);
  propose(&f, p, &f.P, &e, 1);
  take(&f, p, &s);
  assert_int_equal(s.res[0].code, SP_ERR_INVALID_ARGUMENT);
  assert_string_equal(s.msg[0], "no tags on Sundays");
  assert_int_equal(latest(&f), LOG_LEN);

  /* Refused is not decided: asked again, the host may now accept. */
  f.code = 0;
  f.message = NULL;
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, SP_ERR_REFUSED, 0);
  f.code = 5;
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, SP_ERR_REFUSED, 0);
  f.code = SP_ERR_NOMEM; /* fatal band */
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, SP_ERR_REFUSED, 0);

  /* 1022 ASCII bytes, then two-byte characters: byte 1024 (the cap)
   * falls between two characters. */
  memset(longmsg, 'a', sizeof(longmsg) - 1);
  for (i = 1022; i + 2 < sizeof(longmsg); i += 2) {
    longmsg[i] = (char)0xc3; /* e acute */
    longmsg[i + 1] = (char)0xa9;
  }
  f.code = SP_ERR_REFUSED;
  f.message = longmsg;
  propose(&f, p, &f.P, &e, 1);
  take(&f, p, &s);
  assert_int_equal(s.res[0].code, SP_ERR_REFUSED);
  assert_int_equal(s.res[0].message_len, 1024);
  assert_memory_equal(s.msg[0], longmsg, 1024);
  /* One byte later, the cap cuts a character: it goes whole or not. */
  memset(longmsg, 'a', sizeof(longmsg) - 1);
  for (i = 1023; i + 2 < sizeof(longmsg); i += 2) {
    longmsg[i] = (char)0xc3;
    longmsg[i + 1] = (char)0xa9;
  }
  propose(&f, p, &f.P, &e, 1);
  take(&f, p, &s);
  assert_int_equal(s.res[0].message_len, 1023);

  f.mode = A_ACCEPT;
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, 0, LOG_LEN + 1);
  assert_int_equal(f.calls, 7);
  fx_free(&f);
}

/* The host replaces: its entry is appended with the proposer's device and
 * origin; a replacement for another record is refused. */
static void test_host_replace(void **state) {
  static fx f;
  sp_entry e, got;
  uint64_t p;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  f.mode = A_REPLACE;
  fill(&e, &f.P, 1, 1);
  propose(&f, p, &f.P, &e, 1);
  expect_one(&f, p, 0, LOG_LEN + 1);
  get(&f, LOG_LEN + 1, &got);
  assert_true(sp_uuid_equal(&got.device_id, &f.P));
  assert_int_equal(got.origin_seq, 1);
  assert_int_equal(got.version, 77);
  assert_int_equal(got.data_len, 8);
  assert_int_equal(got.data[0], 0x5a);
  assert_true(sp_uuid_equal(&got.record_id, &e.record_id));

  f.mode = A_REPLACE_OTHER;
  fill(&e, &f.P, 2, 2);
  propose(&f, p, &f.P, &e, 1);
  {
    seen s;
    take(&f, p, &s);
    assert_int_equal(s.res[0].code, SP_ERR_REFUSED);
    assert_string_equal(s.msg[0], "replacement changed the record");
  }
  assert_int_equal(latest(&f), LOG_LEN + 1);
  fx_free(&f);
}

/* The append fails: nothing answered, nothing appended, the stream closed
 * STORE with an ERROR event; the retry on the next stream is appended
 * once. */
static void test_append_fails(void **state) {
  static fx f;
  sp_entry e[2];
  seen s;
  uint64_t p;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  fill(&e[0], &f.P, 1, 1);
  fill(&e[1], &f.P, 2, 2);
  sp_mem_store_fail_appends(f.store, 1);
  propose(&f, p, &f.P, e, 2);
  take(&f, p, &s);
  assert_int_equal(s.results, 0);
  assert_int_equal(s.nentries, 0);
  assert_int_equal(cs(&f, p)->closes, 1);
  assert_int_equal(cs(&f, p)->close_code, SP_ERR_STORE);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_STORE), 1);
  assert_int_equal(latest(&f), LOG_LEN);

  p = join(&f, &f.P, 1);
  propose(&f, p, &f.P, e, 2);
  propose(&f, p, &f.P, e, 2);
  take(&f, p, &s);
  assert_int_equal(s.results, 2);
  assert_int_equal(s.res[1].sequence, LOG_LEN + 2);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  fx_free(&f);
}

/* A device that is not a member is refused at routing; a ProposeResult
 * sent to a leader is WRONG_ROLE. */
static void test_routing(void **state) {
  static fx f;
  sp_entry e;
  seen s;
  uint64_t id;
  sp_msg m;
  sp_propose_result r;

  (void)state;
  fx_start(&f);
  id = open_in(&f, &f.S);
  fill(&e, &f.S, 1, 1);
  propose(&f, id, &f.S, &e, 1);
  take(&f, id, &s);
  assert_int_equal(s.error_code, SP_ERR_NOT_MEMBER);
  assert_int_equal(latest(&f), LOG_LEN);

  id = join(&f, &f.P, 1);
  m = mk(SP_MSG_PROPOSE_RESULT, &f);
  memset(&r, 0, sizeof(r));
  r.origin_seq = 1;
  r.message = "";
  m.u.propose_result.results = &r;
  m.u.propose_result.result_count = 1;
  send_msg(&f, id, &f.P, &m);
  take(&f, id, &s);
  assert_int_equal(s.error_code, SP_ERR_WRONG_ROLE);
  assert_int_equal(f.calls, 0);
  fx_free(&f);
}

/* The leader's own submissions: origins after its device_high, one
 * append, COMMITTED events, followers told. */
static void test_submit_local(void **state) {
  static fx f;
  sp_entry e[3], got;
  sp_uuid zero;
  seen s;
  uint64_t first = 0, p;
  size_t i, k;

  (void)state;
  fx_init(&f);
  fill(&e[0], &f.self, 4, 1); /* this device's origin 4 already */
  assert_int_equal(sp_mem_store_append(f.store, &e[0], NULL), 0);
  fx_node(&f);
  p = join(&f, &f.P, 1);
  memset(&zero, 0, sizeof(zero));
  fill(&e[0], &zero, 0, 1);
  fill(&e[1], &f.self, 0, 2);
  fill(&e[2], &f.self, 0, 3);
  e[2].sequence = 12345; /* ignored */
  assert_int_equal(sp_admit_submit_local(f.h, e, 3, &first), 0);
  assert_int_equal(first, 5);
  assert_int_equal(latest(&f), LOG_LEN + 4);
  assert_int_equal(count_ev(&f, SP_EVENT_ENTRIES_APPENDED, ANY), 1);
  assert_int_equal(last_ev(&f, SP_EVENT_ENTRIES_APPENDED)->from, LOG_LEN + 1);
  assert_int_equal(last_ev(&f, SP_EVENT_ENTRIES_APPENDED)->to, LOG_LEN + 4);
  for (i = 0; i < 3; ++i) {
    get(&f, LOG_LEN + 2 + i, &got);
    assert_true(sp_uuid_equal(&got.device_id, &f.self));
    assert_int_equal(got.origin_seq, 5 + i);
  }
  for (i = 0, k = 0; i < f.nev; ++i) {
    if (f.ev[i].type == SP_EVENT_SUBMISSION_COMMITTED) {
      assert_int_equal(f.ev[i].origin, 5 + k);
      assert_int_equal(f.ev[i].to, LOG_LEN + 2 + k);
      assert_false(f.ev[i].has_peer);
      ++k;
    }
  }
  assert_int_equal(k, 3);
  take(&f, p, &s);
  assert_int_equal(s.nentries, 3);
  assert_int_equal(s.eorigin[2], 7);

  fill(&e[0], &f.P, 0, 1);
  assert_int_equal(sp_admit_submit_local(f.h, e, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_admit_submit_local(f.h, e, 0, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  fill(&e[0], &zero, 0, 1);
  e[0].model_type = NULL;
  assert_int_equal(sp_admit_submit_local(f.h, e, 1, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  fill(&e[0], &zero, 0, 1);
  sp_mem_store_fail_appends(f.store, 1);
  assert_int_equal(sp_admit_submit_local(f.h, e, 1, NULL), SP_ERR_STORE);
  assert_int_equal(latest(&f), LOG_LEN + 4);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 3);
  fx_free(&f);
}

/* ---- a follower becomes leader with submissions in its outbox ---- */

static sp_outbox_stats outbox(fx *f) {
  sp_store vt;
  sp_outbox_stats st;

  sp_mem_store_get_vtable(f->store, &vt);
  assert_int_equal(vt.outbox_stats(&st, vt.user_data), 0);
  return st;
}

/* The COMMITTED events, in order, from event `from` on, must say
 * (origin[k], to[k]) for k < n. */
static void expect_commits(const fx *f, size_t from, const uint64_t *origin,
                           const sp_seq *to, size_t n) {
  size_t i, k = 0;

  for (i = from; i < f->nev; ++i) {
    if (f->ev[i].type == SP_EVENT_SUBMISSION_COMMITTED) {
      assert_true(k < n);
      assert_int_equal(f->ev[i].origin, origin[k]);
      assert_int_equal(f->ev[i].to, to[k]);
      ++k;
    }
  }
  assert_int_equal(k, n);
}

/* Submitted while following, never committed, then the device is made
 * leader: the new term starts by appending them (one append, with their
 * origins), COMMITTED for each; a later term finds nothing to append,
 * and the leader's own submissions number on after them. */
static void test_drain_at_term_start(void **state) {
  static fx f;
  static const uint64_t origins[] = {1, 2, 3};
  static const sp_seq seqs[] = {LOG_LEN + 1, LOG_LEN + 2, LOG_LEN + 3};
  sp_entry e[3], got;
  sp_uuid zero;
  uint64_t first = 0;
  size_t k, mark;

  (void)state;
  memset(&zero, 0, sizeof(zero));
  fx_start(&f);
  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  for (k = 0; k < 3; ++k) {
    fill(&e[k], &zero, 0, (uint8_t)(0x40 + k));
  }
  assert_int_equal(sp_handler_submit(f.h, e, 3, &first, f.now), 0);
  assert_int_equal(first, 1);
  assert_int_equal(outbox(&f).items, 3);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 0);

  f.p_leads = 0;
  g_appends = 0;
  mark = f.nev;
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 1, f.now), 0);
  assert_int_equal(g_appends, 1);
  assert_int_equal(latest(&f), LOG_LEN + 3);
  for (k = 0; k < 3; ++k) {
    get(&f, LOG_LEN + 1 + k, &got);
    assert_true(sp_uuid_equal(&got.device_id, &f.self));
    assert_int_equal(got.origin_seq, k + 1);
    assert_int_equal(got.record_id.bytes[0], 0x40 + k);
  }
  expect_commits(&f, mark, origins, seqs, 3);
  assert_int_equal(outbox(&f).items, 0);

  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  f.p_leads = 0;
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 2, f.now), 0);
  assert_int_equal(g_appends, 1);
  assert_int_equal(latest(&f), LOG_LEN + 3);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 3);
  assert_int_equal(sp_handler_submit(f.h, e, 1, &first, f.now), 0);
  assert_int_equal(first, 4);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 0);
  fx_free(&f);
}

/* A crash between the drain's append and its removals: the outbox still
 * holds items the log has (one retained, one pruned since).  The next
 * term -- here a handler created as leader -- only retires those, and
 * appends the one the log never held. */
static void test_drain_after_crash(void **state) {
  static fx f;
  static const uint64_t origins[] = {1, 2, 3};
  static const sp_seq seqs[] = {0, LOG_LEN + 2, LOG_LEN + 3};
  sp_store vt;
  sp_entry e[3], got;
  uint64_t first = 0;
  size_t k;

  (void)state;
  fx_init(&f);
  sp_mem_store_get_vtable(f.store, &vt);
  for (k = 0; k < 3; ++k) {
    fill(&e[k], &f.self, 0, (uint8_t)(0x40 + k));
  }
  assert_int_equal(vt.outbox_anchor(&f.self, 0, vt.user_data), 0);
  assert_int_equal(vt.outbox_put(e, 3, &first, vt.user_data), 0);
  assert_int_equal(first, 1);
  for (k = 0; k < 2; ++k) {
    e[k].origin_seq = k + 1;
    assert_int_equal(sp_mem_store_append(f.store, &e[k], NULL), 0);
  }
  assert_int_equal(sp_mem_store_prune(f.store, LOG_LEN + 1), 0);

  g_appends = 0;
  fx_node(&f);
  assert_int_equal(g_appends, 1);
  assert_int_equal(latest(&f), LOG_LEN + 3);
  get(&f, LOG_LEN + 3, &got);
  assert_int_equal(got.origin_seq, 3);
  assert_int_equal(got.record_id.bytes[0], 0x42);
  expect_commits(&f, 0, origins, seqs, 3);
  assert_int_equal(outbox(&f).items, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 0);
  fx_free(&f);
}

/* The append fails at term start: the term starts anyway, the host is
 * told (ERROR), the items stay; the next submit appends them first. */
static void test_drain_fails_at_term_start(void **state) {
  static fx f;
  static const uint64_t origins[] = {1, 2, 3};
  static const sp_seq seqs[] = {LOG_LEN + 1, LOG_LEN + 2, LOG_LEN + 3};
  sp_entry e[2], got;
  sp_uuid zero;
  uint64_t first = 0;
  size_t k, mark;

  (void)state;
  memset(&zero, 0, sizeof(zero));
  fx_start(&f);
  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  fill(&e[0], &zero, 0, 0x40);
  fill(&e[1], &zero, 0, 0x41);
  assert_int_equal(sp_handler_submit(f.h, e, 2, &first, f.now), 0);
  f.p_leads = 0;
  sp_mem_store_fail_appends(f.store, 1);
  mark = f.nev;
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 1, f.now), 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_STORE), 1);
  assert_int_equal(latest(&f), LOG_LEN);
  assert_int_equal(outbox(&f).items, 2);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 0);

  fill(&e[0], &zero, 0, 0x42);
  assert_int_equal(sp_handler_submit(f.h, e, 1, &first, f.now), 0);
  assert_int_equal(first, 3);
  assert_int_equal(latest(&f), LOG_LEN + 3);
  for (k = 0; k < 3; ++k) {
    get(&f, LOG_LEN + 1 + k, &got);
    assert_int_equal(got.origin_seq, k + 1);
    assert_int_equal(got.record_id.bytes[0], 0x40 + k);
  }
  expect_commits(&f, mark, origins, seqs, 3);
  assert_int_equal(outbox(&f).items, 0);
  /* The submit's drain ended the episode: no retry is left armed. */
  assert_int_equal(sp_admit_drain_expiry(f.h), SP_TSTAMP_MAX);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 1);
  fx_free(&f);
}

/* Run the node's timers, each at its time, up to `to`. */
static void advance(fx *f, sp_tstamp to) {
  int guard;

  for (guard = 0; guard < 10000; ++guard) {
    sp_tstamp t = sp_node_get_expiry(f->node);
    if (t > to) {
      f->now = to;
      return;
    }
    if (t > f->now) {
      f->now = t;
    }
    assert_int_equal(sp_node_handle_expiry(f->node, f->now), 0);
  }
  fail_msg("the node's timers never settle");
}

/* Items submitted as a follower; the device is made leader and the
 * drain's append fails at term start.  With no submit to come, the
 * leader's timers retry it, backing off from reconnect_min; a submit in
 * the episode fails the same way (returned, not reported again).  The
 * episode is reported once; the items are appended once, COMMITTED once
 * each, and announced; then the timer is gone. */
static void test_drain_retried_on_timer(void **state) {
  static fx f;
  static const uint64_t origins[] = {1, 2};
  static const sp_seq seqs[] = {LOG_LEN + 1, LOG_LEN + 2};
  sp_entry e[2], got;
  sp_uuid zero;
  sp_tstamp base, at;
  sp_duration b;
  uint64_t first = 0, p;
  size_t k, mark;
  seen s;

  (void)state;
  memset(&zero, 0, sizeof(zero));
  fx_start(&f);
  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  fill(&e[0], &zero, 0, 0x40);
  fill(&e[1], &zero, 0, 0x41);
  assert_int_equal(sp_handler_submit(f.h, e, 2, &first, f.now), 0);
  f.p_leads = 0;
  /* Term start, the submit, and two timer retries fail. */
  sp_mem_store_fail_appends(f.store, 4);
  mark = f.nev;
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 1, f.now), 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_STORE), 1);
  assert_int_equal(f.h->drain_backoff, f.h->cfg.reconnect_min);
  p = join(&f, &f.P, 1);

  fill(&e[0], &zero, 0, 0x50);
  assert_int_equal(sp_handler_submit(f.h, e, 1, &first, f.now),
                   SP_ERR_STORE);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 1);
  base = f.now;
  g_appends = 0;
  for (k = 0, b = 2 * f.h->cfg.reconnect_min; k < 3; ++k, b *= 2) {
    assert_int_equal(f.h->drain_backoff, b);
    at = f.h->drain_at;
    assert_true(sp_node_get_expiry(f.node) <= at);
    assert_true(at >= base + b / 2 && at <= base + b);
    advance(&f, at - 1);
    assert_int_equal(g_appends, (long)k);
    assert_int_equal(latest(&f), LOG_LEN);
    advance(&f, at);
    assert_int_equal(g_appends, (long)k + 1);
    base = at;
  }
  assert_int_equal(latest(&f), LOG_LEN + 2);
  for (k = 0; k < 2; ++k) {
    get(&f, LOG_LEN + 1 + k, &got);
    assert_true(sp_uuid_equal(&got.device_id, &f.self));
    assert_int_equal(got.origin_seq, k + 1);
    assert_int_equal(got.record_id.bytes[0], 0x40 + k);
  }
  expect_commits(&f, mark, origins, seqs, 2);
  assert_int_equal(outbox(&f).items, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY), 1);
  assert_int_equal(sp_admit_drain_expiry(f.h), SP_TSTAMP_MAX);
  assert_int_equal(f.h->drain_backoff, 0);
  take(&f, p, &s);
  assert_int_equal(s.nentries, 2);
  assert_int_equal(s.eorigin[0], 1);
  assert_int_equal(s.eorigin[1], 2);

  advance(&f, f.now + 20 * SP_SECONDS);
  assert_int_equal(g_appends, 3);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 2);

  /* The next episode backs off from reconnect_min again. */
  assert_int_equal(sp_handler_submit(f.h, e, 1, &first, f.now), 0);
  assert_int_equal(first, 3);
  fx_free(&f);
}

/* The drain keeps failing; the leader steps down (a higher epoch): the
 * retries stop with the term, even once the store works again.  A
 * follower term has no drain timer; the next leader term drains at its
 * start, and a failure then is a new episode, reported again. */
static void test_drain_stops_with_term(void **state) {
  static fx f;
  sp_entry e[2];
  sp_uuid zero;
  uint64_t first = 0, id;
  sp_msg m;

  (void)state;
  memset(&zero, 0, sizeof(zero));
  fx_start(&f);
  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  fill(&e[0], &zero, 0, 0x40);
  fill(&e[1], &zero, 0, 0x41);
  assert_int_equal(sp_handler_submit(f.h, e, 2, &first, f.now), 0);
  f.p_leads = 0;
  sp_mem_store_fail_appends(f.store, 1000);
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 1, f.now), 0);
  advance(&f, f.now + 2 * SP_SECONDS);
  assert_true(f.h->drain_backoff > f.h->cfg.reconnect_min);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_STORE), 1);

  /* P leads at EPOCH + 5, and proves it with its claim (the host's
   * registry names it: with no may_lead, only that device may lead). */
  assert_int_equal(sp_identity_generate(&f.id_p, &f.P, NULL), 0);
  f.p_leads = 1;
  id = open_in(&f, &f.P);
  m = mk(SP_MSG_HEARTBEAT, &f);
  m.epoch = EPOCH + 5;
  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_CLAIMS;
  m.u.heartbeat.has_claim = 1;
  assert_int_equal(
      sp_leader_claim_sign(&m.u.heartbeat.claim, f.id_p, &f.lib, EPOCH + 5),
      0);
  send_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY), 1);
  assert_int_equal(sp_admit_drain_expiry(f.h), SP_TSTAMP_MAX);
  sp_mem_store_fail_appends(f.store, 0);
  g_appends = 0;
  advance(&f, f.now + 60 * SP_SECONDS);
  assert_int_equal(g_appends, 0);
  assert_int_equal(latest(&f), LOG_LEN);
  assert_int_equal(outbox(&f).items, 2);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 0);

  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  assert_int_equal(f.h->drain_failing, 0);
  assert_int_equal(sp_admit_drain_expiry(f.h), SP_TSTAMP_MAX);
  f.p_leads = 0;
  sp_mem_store_fail_appends(f.store, 1);
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 6, f.now), 0);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_STORE), 2);
  assert_int_equal(f.h->drain_backoff, f.h->cfg.reconnect_min);
  advance(&f, f.h->drain_at);
  assert_int_equal(latest(&f), LOG_LEN + 2);
  assert_int_equal(outbox(&f).items, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 2);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_STORE), 2);
  fx_free(&f);
}

/* A follower that keeps proposing without reading its answers is refused
 * before the leader holds more of them than a well-behaved one could
 * leave unread. */
static void test_not_reading(void **state) {
  static fx f;
  static char msg[1001];
  sp_entry e[16];
  uint64_t p;
  int round, k;

  (void)state;
  fx_init(&f);
  f.max_frame = 64 * 1024;
  fx_node(&f);
  p = join(&f, &f.P, 1);
  memset(msg, 'm', sizeof(msg) - 1);
  f.mode = A_REFUSE;
  f.code = SP_ERR_REFUSED;
  f.message = msg;
  cs(&f, p)->block = 1;
  for (round = 0; round < 200 && !cs(&f, p)->closes &&
                  count_ev(&f, SP_EVENT_ERROR, ANY) == 0;
       ++round) {
    for (k = 0; k < 16; ++k) {
      fill(&e[k], &f.P, (uint64_t)(round * 16 + k + 1), 1);
    }
    propose(&f, p, &f.P, e, 16);
  }
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_TOO_MANY_REQUESTS), 1);
  /* Everything a compliant window leaves unread was still answered. */
  assert_true(round * 16 > (int)SP_MAX_PROPOSE_ENTRIES);
  assert_true(round < 200);
  assert_int_equal(latest(&f), LOG_LEN);
  fx_free(&f);
}

/* The admission callback fails: the node fails (CALLBACK_FAILURE), and
 * nothing of the frame is appended or answered. */
static void test_callback_fails(void **state) {
  static fx f;
  static uint8_t buf[4096];
  sp_entry e;
  sp_msg m;
  seen s;
  size_t n = 0;
  uint64_t p;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  f.mode = A_FAIL;
  fill(&e, &f.P, 1, 1);
  m = mk(SP_MSG_PROPOSE, &f);
  m.u.propose.entries = &e;
  m.u.propose.entry_count = 1;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &n), 0);
  assert_int_equal(sp_node_stream_data(f.node, p, &f.P, buf, n, f.now),
                   SP_ERR_CALLBACK_FAILURE);
  take(&f, p, &s);
  assert_int_equal(s.results, 0);
  assert_int_equal(latest(&f), LOG_LEN);
  fx_free(&f);
}

/* ---- end to end, over the in-memory network ---- */

static long tc_committed[TC_MAX_DEVS];

static void count_commits(tc *t, int dev, const sp_event *ev) {
  (void)t;
  if (ev->type == SP_EVENT_SUBMISSION_COMMITTED) {
    tc_committed[dev]++;
  }
}

/* Followers and the leader submit; every log ends identical, each
 * submission once, each device told of its own. */
static void test_cluster_writes(void **state) {
  tc t;
  sp_entry e[4];
  sp_uuid zero;
  uint64_t first;
  sp_seq seq, i;
  long by_dev[3] = {0, 0, 0};
  int d, k;

  (void)state;
  memset(tc_committed, 0, sizeof(tc_committed));
  memset(&zero, 0, sizeof(zero));
  assert_int_equal(tc_init(&t, 3, 1, 1 * SP_MILLISECONDS, NULL), 0);
  t.on_event = count_commits;
  for (d = 0; d < 3; ++d) {
    assert_int_equal(tc_open(&t, d, 0), 0);
  }
  tc_run_for(&t, SP_SECONDS);
  for (d = 0; d < 3; ++d) {
    for (k = 0; k < 4; ++k) {
      fill(&e[k], &zero, 0, (uint8_t)(0x10 * (d + 1) + k));
    }
    assert_int_equal(sp_handler_submit(t.dev[d].h[0], e, 4, &first, t.now), 0);
    assert_int_equal(first, 1);
  }
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_true(tc_converge(&t, 0, 5 * SP_SECONDS));
  seq = tc_latest(&t, 0);
  assert_int_equal(seq, 12);
  for (d = 1; d < 3; ++d) {
    assert_true(tc_is_prefix(&t, d, 0));
    assert_int_equal(tc_applied(&t, d, 0), seq);
  }
  for (i = 1; i <= seq; ++i) {
    sp_entry got;
    assert_int_equal(sp_mem_store_get(t.dev[0].store[0], i, &got, NULL), 0);
    for (d = 0; d < 3; ++d) {
      if (sp_uuid_equal(&got.device_id, &t.dev[d].id)) {
        by_dev[d]++;
        assert_int_equal(got.origin_seq, (uint64_t)by_dev[d]);
      }
    }
  }
  for (d = 0; d < 3; ++d) {
    assert_int_equal(by_dev[d], 4);
    assert_int_equal(tc_committed[d], 4);
  }
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A read-only member's submissions come back refused (the registry's
 * can_write), durably: they leave its outbox and are never appended. */
static void test_cluster_read_only(void **state) {
  tc t;
  sp_entry e[2];
  sp_uuid zero;
  sp_outbox_status os;
  int d;

  (void)state;
  memset(&zero, 0, sizeof(zero));
  assert_int_equal(tc_init(&t, 2, 1, 1 * SP_MILLISECONDS, NULL), 0);
  t.dev[1].read_only[0] = 1;
  for (d = 0; d < 2; ++d) {
    assert_int_equal(tc_open(&t, d, 0), 0);
  }
  tc_run_for(&t, SP_SECONDS);
  fill(&e[0], &zero, 0, 1);
  fill(&e[1], &zero, 0, 2);
  assert_int_equal(sp_handler_submit(t.dev[1].h[0], e, 2, NULL, t.now), 0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_SUBMISSION_REFUSED], 2);
  assert_int_equal(t.dev[1].counts.ev[SP_EVENT_SUBMISSION_COMMITTED], 0);
  assert_int_equal(tc_latest(&t, 0), 0);
  assert_int_equal(sp_handler_outbox_status(t.dev[1].h[0], &os), 0);
  assert_int_equal(os.pending, 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* A submission appended once, re-proposed (its answer was lost) after
 * its device became read-only: the log holds it, so it is answered as
 * appended -- a READ_ONLY refusal would be recorded by the follower, which
 * then applies the entry too.  Only what the log never held is refused,
 * and can_write is not asked at all when the log holds everything. */
static void test_read_only_after_append(void **state) {
  static fx f;
  sp_entry e[2];
  seen s;
  uint64_t p;

  (void)state;
  fx_start(&f);
  p = join(&f, &f.P, 1);
  fill(&e[0], &f.P, 1, 1);
  propose(&f, p, &f.P, e, 1);
  expect_one(&f, p, 0, LOG_LEN + 1);
  f.p_read_only = 1;
  f.can_write_calls = 0;
  p = join(&f, &f.P, 1);
  propose(&f, p, &f.P, e, 1);
  expect_one(&f, p, 0, LOG_LEN + 1);
  assert_int_equal(f.can_write_calls, 0);
  fill(&e[1], &f.P, 2, 2);
  propose(&f, p, &f.P, e, 2);
  take(&f, p, &s);
  assert_int_equal(s.results, 2);
  assert_int_equal(s.res[0].code, 0);
  assert_int_equal(s.res[0].sequence, LOG_LEN + 1);
  assert_int_equal(s.res[1].code, SP_ERR_READ_ONLY);
  assert_int_equal(f.can_write_calls, 1);
  assert_int_equal(latest(&f), LOG_LEN + 1);
  assert_int_equal(f.calls, 1);
  fx_free(&f);
}

static int g_wait_calls, g_wait_status;
static sp_seq g_wait_seq;

static int wait_cb(sp_handler *h, uint64_t origin, int status, sp_seq seq,
                   void *ud) {
  (void)h;
  (void)origin;
  (void)ud;
  g_wait_calls++;
  g_wait_status = status;
  g_wait_seq = seq;
  return 0;
}

/* A commit wait registered on a leader for an item of its outbox (its
 * term-start drain failed) ends when the drain retried on the timer
 * appends it, not at its deadline. */
static void test_drain_ends_waits(void **state) {
  static fx f;
  sp_entry e[1];
  sp_uuid zero;
  sp_tstamp deadline;
  uint64_t first = 0;

  (void)state;
  g_wait_calls = 0;
  memset(&zero, 0, sizeof(zero));
  fx_start(&f);
  f.p_leads = 1;
  assert_int_equal(sp_handler_set_role(f.h, SP_ROLE_FOLLOWER, 0, f.now), 0);
  fill(&e[0], &zero, 0, 0x40);
  assert_int_equal(sp_handler_submit(f.h, e, 1, &first, f.now), 0);
  f.p_leads = 0;
  sp_mem_store_fail_appends(f.store, 1);
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, EPOCH + 1, f.now), 0);
  assert_int_equal(latest(&f), LOG_LEN);
  deadline = f.now + 30 * SP_SECONDS;
  assert_int_equal(
      sp_handler_wait_committed(f.h, first, deadline, wait_cb, NULL, f.now),
      0);
  assert_true(f.h->drain_at < deadline);
  advance(&f, f.h->drain_at);
  assert_int_equal(latest(&f), LOG_LEN + 1);
  assert_int_equal(count_ev(&f, SP_EVENT_SUBMISSION_COMMITTED, ANY), 1);
  assert_int_equal(g_wait_calls, 1);
  assert_int_equal(g_wait_status, 0);
  assert_int_equal(g_wait_seq, LOG_LEN + 1);
  advance(&f, deadline + 1);
  assert_int_equal(g_wait_calls, 1);
  fx_free(&f);
}

/* The answer cannot be queued after the append succeeded (out of
 * memory): the stream is closed unanswered, but the entries are in the
 * log and every other follower still hears of them. */
static void test_answer_fails_announces(void **state) {
  static fx f;
  static uint8_t buf[4096];
  sp_msg m;
  sp_entry e[1];
  size_t n = 0;
  seen s;
  uint64_t p, q;

  (void)state;
  fx_start(&f);
  q = join(&f, &f.Q, 1);
  p = join(&f, &f.P, 1);
  take(&f, q, &s);
  fill(&e[0], &f.P, 1, 1);
  m = mk(SP_MSG_PROPOSE, &f);
  m.u.propose.entries = e;
  m.u.propose.entry_count = 1;
  m.with_origin = 1;
  assert_int_equal(sp_msg_encode(&m, buf, sizeof(buf), &n), 0);
  f.arm_nomem = 1;
  (void)sp_node_stream_data(f.node, p, &f.P, buf, n, f.now);
  assert_int_equal(f.nomem, 0); /* the failure happened */
  assert_int_equal(latest(&f), LOG_LEN + 1);
  assert_int_equal(cs(&f, p)->close_code, SP_ERR_NOMEM);
  take(&f, q, &s);
  assert_true(s.new_entries + s.pages >= 1);
  fx_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_no_features, teardown),
      cmocka_unit_test_teardown(test_snapshot_not_negotiated, teardown),
      cmocka_unit_test_teardown(test_negotiation, teardown),
      cmocka_unit_test_teardown(test_no_writes_store, teardown),
      cmocka_unit_test_teardown(test_fetch_negotiates, teardown),
      cmocka_unit_test_teardown(test_accept, teardown),
      cmocka_unit_test_teardown(test_duplicate, teardown),
      cmocka_unit_test_teardown(test_origin_committed_set, teardown),
      cmocka_unit_test_teardown(test_bad_entries, teardown),
      cmocka_unit_test_teardown(test_read_only, teardown),
      cmocka_unit_test_teardown(test_host_refuse, teardown),
      cmocka_unit_test_teardown(test_host_replace, teardown),
      cmocka_unit_test_teardown(test_append_fails, teardown),
      cmocka_unit_test_teardown(test_routing, teardown),
      cmocka_unit_test_teardown(test_submit_local, teardown),
      cmocka_unit_test_teardown(test_drain_at_term_start, teardown),
      cmocka_unit_test_teardown(test_drain_after_crash, teardown),
      cmocka_unit_test_teardown(test_drain_fails_at_term_start, teardown),
      cmocka_unit_test_teardown(test_drain_retried_on_timer, teardown),
      cmocka_unit_test_teardown(test_drain_stops_with_term, teardown),
      cmocka_unit_test_teardown(test_not_reading, teardown),
      cmocka_unit_test_teardown(test_callback_fails, teardown),
      cmocka_unit_test_teardown(test_read_only_after_append, teardown),
      cmocka_unit_test_teardown(test_drain_ends_waits, teardown),
      cmocka_unit_test_teardown(test_answer_fails_announces, teardown),
      cmocka_unit_test(test_cluster_writes),
      cmocka_unit_test(test_cluster_read_only),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
