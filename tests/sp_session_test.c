/*
 * sp_session_test.c: the bad-input catalogue at the core level.
 *
 * One real node is driven directly through the sp_node_stream_* entry
 * points with a capture transport written here: open_stream hands out ids
 * and records them, send appends to a per-stream capture buffer (or
 * answers SP_ERR_WOULD_BLOCK / takes a short count when a test asks), and
 * close_stream records (stream, code).  Peer bytes are hand-built frames:
 * valid messages encoded with sp_msg_encode, malformed ones byte by byte.
 * After each injection the captured output is cut with sp_frame_reader and
 * decoded with sp_decoder, and the events, the close and the state of the
 * store / handler are checked.
 *
 * Catalogue: every refused input, the code, and what the peer sees.
 * "Error+close": an Error frame carrying the code is the last frame sent on
 * the stream, then the stream is closed with the same code, and the host
 * gets SP_EVENT_ERROR with it.  For every refused input nothing is applied,
 * acknowledged or served.  Codes are SP_ERR_<name>.  Side: L = leader,
 * F = follower, * = either (decided before a role is involved), T = the
 * transport's calls into the node (returned, nothing sent).
 *
 * side input                               code              peer sees
 * ---- ----------------------------------- ----------------- --------------
 * *    length prefix > node max_frame      FRAME_TOO_LARGE   Error+close,
 *      (refused on the 4 prefix bytes; no                    on the prefix
 *      body byte buffered)                                   alone
 * *    length prefix 0                     EMPTY_FRAME       Error+close
 * *    reserved byte 0xc1                  MSGPACK           Error+close
 * *    wrong msgpack type (str as library) WRONG_TYPE        Error+close
 * *    body ends inside a value            TRUNCATED         Error+close
 * *    array shorter than the type needs   MISSING_FIELD     Error+close
 * *    uuid not 16 bytes                   UUID_LENGTH       Error+close
 * *    role / reason / change type unknown ENUM_RANGE        Error+close
 * *    hash neither 0 nor 32 bytes         HASH_LENGTH       Error+close
 * *    Error code outside int32            INT_RANGE         Error+close
 * *    Error message over 1024 bytes       OVERSIZE          Error+close
 * *    string not UTF-8                    UTF8              Error+close
 * *    unknown extension nested > 32 deep  NESTING           Error+close
 * *    page with through < since           ENTRY_ORDER       Error+close
 * *    unknown message type (99)           UNKNOWN_MESSAGE   Error+close
 * *    bytes after the message array       TRAILING_BYTES    Error+close
 * *    first frame for a library not open  UNKNOWN_LIBRARY   Error+close
 * *    peer not a member of the library    NOT_MEMBER        Error+close
 * *    frame for library B on a stream     LIBRARY_MISMATCH  Error+close
 *      bound to library A
 * L    NewEntries, EntriesResponse or      WRONG_ROLE        Error+close
 *      SyncRequired from a follower
 * L    FetchEntries limit 0, 65537, 2^64-1 FETCH_LIMIT       Error+close
 * L    Acknowledge past the latest seq     ACK_BEYOND        Error+close
 * L    Acknowledge below an earlier ack    SEQ_REGRESSION    Error+close
 *      on the same stream
 * L    more FetchEntries queued than       TOO_MANY_REQUESTS Error+close,
 *      max_queued_fetches (peer not                          behind frames
 *      reading)                                              already built
 *      (a refused peer that never reads                      (it is closed
 *      is dropped at the heartbeat timeout)                  PEER_TIMEOUT)
 * L    Heartbeat role leader, same epoch   TWO_LEADERS       Error+close;
 *                                                            host also gets
 *                                                            ROLE_CONFLICT
 * L    Heartbeat role leader, lower epoch  STALE_EPOCH       Error+close
 * L    any frame with a higher epoch and   UNPROVEN_EPOCH    Error+close;
 *      no valid leadership claim proving                     the leader
 *      it (docs/protocol.md section 15)                      leads on
 * L    Error frame, same                   PEER_ERROR        stream closed,
 *                                                            nothing sent
 * L    any frame with a claim above the    UNPROVEN_EPOCH    Error+close
 *      leader's epoch that is not valid,   (Error frame:     (an Error
 *      whatever the frame's own epoch      PEER_ERROR)       frame: closed)
 * L    any frame (Error included) with a   (steps down)      every stream
 *      valid claim of a higher epoch                         of the library
 *                                                            closed with
 *                                                            STALE_EPOCH,
 *                                                            no Error frame;
 *                                                            host gets
 *                                                            STEPPED_DOWN,
 *                                                            waits canceled;
 *                                                            new streams
 *                                                            Error+close
 *                                                            STALE_EPOCH
 * L    resume FetchEntries whose since_hash (not an error)   SyncRequired
 *      is not the leader's hash at since                     DIVERGENCE
 *                                                            (latest, oldest
 *                                                            since); stream
 *                                                            stays open
 * L    FetchEntries since > latest         (not an error)    SyncRequired
 *                                                            AHEAD_OF_LEADER
 * L    follower Heartbeat seq > latest     (not an error)    SyncRequired
 *                                                            AHEAD_OF_LEADER
 * *    bytes that never complete a frame   PEER_TIMEOUT      stream closed
 *      for 3 heartbeat intervals (torn                       with
 *      stream, or a peer trickling bytes)                    PEER_TIMEOUT
 * *    Error frame from the peer           PEER_ERROR (the   stream closed
 *                                          host's event has  with PEER_ERROR,
 *                                          the peer's code)  nothing sent
 * F    page whose since is past the        GAP               stream closed
 *      applied position                                      with GAP, no
 *                                                            Error frame;
 *                                                            reconnect
 * F    page whose chain does not verify    CHAIN_MISMATCH    Error+close;
 *      (hash or content altered)                             follower stops
 *                                                            (SYNC_REQUIRED_
 *                                                            RECEIVED
 *                                                            DIVERGENCE)
 * F    page with entries and no last_hash  HASH_LENGTH       Error+close
 * F    duplicate of an applied page        (ignored)         nothing
 * F    epoch lower than the store's        STALE_EPOCH       Error+close
 * F    FetchEntries or Acknowledge         WRONG_ROLE        Error+close
 * F    Heartbeat role follower from the    WRONG_ROLE        Error+close
 *      leader's stream
 * F    incoming stream from a device the   NOT_LEADER        Error+close
 *      registry does not name as leader
 * T    data/writable/closed naming a peer  INVALID_ARGUMENT  (nothing read)
 *      other than the stream's
 * T    unknown or closed stream id         NOT_FOUND         (bytes dropped)
 * T    stream_opened with an id in use     EXISTS            -
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/sync_protocol.h"

#define MS SP_MILLISECONDS
#define MAX_STREAMS 32
#define MAX_OPENS 16
#define MAX_EVENTS 128
#define ANY_CODE 1 /* matches every error code in count_ev */
#define LEADER_EPOCH 3
#define FOLLOWER_EPOCH 2
#define LOG_LEN 5
#define NODE_MAX_FRAME (64u * 1024u)

/* ---- capture transport ---- */

typedef struct cap_stream {
  uint64_t id;
  uint8_t *buf;
  size_t len;
  size_t cap;
  size_t rd; /* read offset of read_frame */
  sp_frame_reader *reader;
  int close_calls;
  int close_code;
  int block;       /* send answers SP_ERR_WOULD_BLOCK */
  size_t max_take; /* send takes at most this much (0: everything) */
  long sends;
} cap_stream;

typedef struct cap_open {
  sp_uuid peer;
  sp_uuid lib;
  uint64_t id;
} cap_open;

typedef struct rec_event {
  sp_event_type type;
  sp_uuid lib;
  sp_uuid peer;
  int has_peer;
  int code;
  char message[64];
  sp_sync_reason sync_reason;
  sp_seq leader_latest;
  sp_seq leader_oldest;
  sp_seq follower_sequence;
  sp_seq from;
  sp_seq to;
  uint64_t epoch;
  sp_uuid leader;
} rec_event;

typedef struct fx {
  sp_uuid self, lib, lib2, lib3, P, Q, X, Y, S;
  /* registry: members of lib and lib2; leader of both */
  sp_uuid members[8];
  size_t nmembers;
  sp_uuid leader;
  /* transport */
  cap_stream st[MAX_STREAMS];
  size_t nst;
  cap_open opens[MAX_OPENS];
  size_t nopens;
  uint64_t next_local_id;
  uint64_t next_remote_id;
  int open_fail;
  /* events */
  rec_event ev[MAX_EVENTS];
  size_t nev;
  /* stores: `store` is this node's, `ref` the leader's log a follower
   * test serves from */
  sp_mem_store *store;
  sp_mem_store *ref;
  sp_store inner;
  long applies;         /* apply calls with entries */
  long entries_applied; /* entries handed to apply */
  /* allocation tracking */
  sp_mem mem;
  size_t max_alloc;
  size_t total_alloc;
  /* the node */
  sp_node *node;
  sp_handler *h;
  sp_handler *h2;
  sp_decoder *dec;
  sp_tstamp now;
  /* ack waits */
  int wait_calls;
  int wait_status;
  /* P's identity: the registry knows its key, so P's leadership claims
   * verify; with no may_lead (unless fx_may_lead), only the device
   * `leader` names may lead. */
  sp_identity *id_p;
  /* This node's own identity: as a leader it holds a claim of its own. */
  sp_identity *id_self;
  /* device_key fails (not NOT_FOUND): the registry cannot tell. */
  int key_fail;
  /* Registry answers about P (0: as usual; else the code is_member,
   * leader or may_lead return for it), and may_lead's answer for P. */
  int member_fail_p, leader_fail, may_lead_fail_p;
  int may_lead_p;
  /* The last WARN log lines (a ring). */
  char logs[8][320];
  size_t nlogs;
} fx;

/* fx_base: the registry has may_lead (version 3's), answering
 * fx.may_lead_p for P and 1 for everyone else. */
static int fx_may_lead;

static sp_uuid mkid(uint8_t tag, uint8_t n) {
  sp_uuid u;

  memset(&u, 0, sizeof(u));
  u.bytes[0] = tag;
  u.bytes[15] = n;
  return u;
}

static cap_stream *cs(fx *f, uint64_t id) {
  size_t i;
  cap_stream *c;

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

static int t_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  fx *f = ud;
  cap_open *o;

  if (f->open_fail) {
    return f->open_fail;
  }
  assert_true(f->nopens < MAX_OPENS);
  o = &f->opens[f->nopens++];
  o->peer = *peer;
  o->lib = *library;
  o->id = f->next_local_id++;
  cs(f, o->id);
  *stream_id = o->id;
  return 0;
}

static sp_ssize t_send(uint64_t stream_id, const uint8_t *data, size_t len,
                       void *ud) {
  fx *f = ud;
  cap_stream *c = cs(f, stream_id);
  size_t n = len;

  c->sends++;
  assert_int_equal(c->close_calls, 0); /* never a send after close */
  assert_true(len > 0);
  if (c->block) {
    return SP_ERR_WOULD_BLOCK;
  }
  if (c->max_take && n > c->max_take) {
    n = c->max_take;
  }
  if (c->len + n > c->cap) {
    size_t cap = c->cap ? c->cap : 1024;
    uint8_t *p;
    while (cap < c->len + n) {
      cap *= 2;
    }
    p = realloc(c->buf, cap);
    assert_non_null(p);
    c->buf = p;
    c->cap = cap;
  }
  memcpy(c->buf + c->len, data, n);
  c->len += n;
  return (sp_ssize)n;
}

static int t_close(uint64_t stream_id, int error_code, void *ud) {
  fx *f = ud;
  cap_stream *c = cs(f, stream_id);

  c->close_calls++;
  c->close_code = error_code;
  return 0;
}

/* ---- registry ---- */

static int known_lib(const fx *f, const sp_uuid *lib) {
  return sp_uuid_equal(lib, &f->lib) || sp_uuid_equal(lib, &f->lib2);
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  fx *f = ud;
  size_t i;

  *is_member = 0;
  if (f->member_fail_p && sp_uuid_equal(device, &f->P)) {
    return f->member_fail_p;
  }
  if (!known_lib(f, lib)) {
    return 0;
  }
  for (i = 0; i < f->nmembers; ++i) {
    if (sp_uuid_equal(&f->members[i], device)) {
      *is_member = 1;
    }
  }
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  fx *f = ud;

  if (!known_lib(f, lib)) {
    return SP_ERR_NOT_FOUND;
  }
  if (f->leader_fail) {
    return f->leader_fail;
  }
  *leader = f->leader;
  return 0;
}

static int r_may_lead(const sp_uuid *lib, const sp_uuid *device,
                      int *may_lead, void *ud) {
  fx *f = ud;

  (void)lib;
  if (!sp_uuid_equal(device, &f->P)) {
    *may_lead = 1;
    return 0;
  }
  *may_lead = f->may_lead_p;
  return f->may_lead_fail_p;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  fx *f = ud;
  size_t i;

  *count = 0;
  if (!known_lib(f, lib)) {
    return 0;
  }
  for (i = 0; i < f->nmembers && i < cap; ++i) {
    out[i] = f->members[i];
  }
  *count = f->nmembers;
  return 0;
}

static int r_device_key(const sp_uuid *device,
                        uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  fx *f = ud;

  if (f->key_fail) {
    return SP_ERR_IO;
  }
  if (sp_uuid_equal(device, &f->self)) {
    sp_identity_public_key(f->id_self, key);
    return 0;
  }
  if (!sp_uuid_equal(device, &f->P)) {
    return SP_ERR_NOT_FOUND;
  }
  sp_identity_public_key(f->id_p, key);
  return 0;
}

/* ---- events ---- */

static void on_log(sp_log_level level, const char *msg, void *ud) {
  fx *f = ud;

  if (level <= SP_LOG_WARN) {
    snprintf(f->logs[f->nlogs++ % 8], sizeof(f->logs[0]), "%s", msg);
  }
}

/* A WARN line among the last 8 contains `text`. */
static int logged(const fx *f, const char *text) {
  size_t i;

  for (i = 0; i < 8 && i < f->nlogs; ++i) {
    if (strstr(f->logs[i], text)) {
      return 1;
    }
  }
  return 0;
}

static int on_event(const sp_event *ev, void *ud) {
  fx *f = ud;
  rec_event *r;

  assert_true(f->nev < MAX_EVENTS);
  r = &f->ev[f->nev++];
  memset(r, 0, sizeof(*r));
  r->type = ev->type;
  r->lib = ev->library_id;
  r->peer = ev->peer_id;
  r->has_peer = ev->has_peer;
  r->code = ev->error_code;
  if (ev->message) {
    strncpy(r->message, ev->message, sizeof(r->message) - 1);
  }
  r->sync_reason = ev->sync_reason;
  r->leader_latest = ev->leader_latest;
  r->leader_oldest = ev->leader_oldest;
  r->follower_sequence = ev->follower_sequence;
  r->from = ev->from_sequence;
  r->to = ev->to_sequence;
  r->epoch = ev->epoch;
  r->leader = ev->leader;
  return 0;
}

static long count_ev(const fx *f, sp_event_type type, int code) {
  size_t i;
  long n = 0;

  for (i = 0; i < f->nev; ++i) {
    if (f->ev[i].type == type && (code == ANY_CODE || f->ev[i].code == code)) {
      ++n;
    }
  }
  return n;
}

static const rec_event *find_ev(const fx *f, sp_event_type type) {
  size_t i;

  for (i = 0; i < f->nev; ++i) {
    if (f->ev[i].type == type) {
      return &f->ev[i];
    }
  }
  return NULL;
}

/* ---- store wrapper (counts applies) ---- */

static int s_read(sp_seq after, sp_seq through, size_t max_count,
                  sp_entry_sink sink, void *sink_ctx, void *ud) {
  fx *f = ud;
  return f->inner.read(after, through, max_count, sink, sink_ctx,
                       f->inner.user_data);
}

static int s_bounds(sp_log_bounds *out, void *ud) {
  fx *f = ud;
  return f->inner.bounds(out, f->inner.user_data);
}

static int s_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ud) {
  fx *f = ud;
  return f->inner.hash_at(seq, out, f->inner.user_data);
}

static int s_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                   uint64_t epoch, void *ud) {
  fx *f = ud;
  int rv = f->inner.apply(entries, hashes, n, epoch, f->inner.user_data);

  if (rv == 0 && n > 0) {
    f->applies++;
    f->entries_applied += (long)n;
  }
  return rv;
}

static int s_state(sp_store_state *out, void *ud) {
  fx *f = ud;
  return f->inner.state(out, f->inner.user_data);
}

/* The write path (store version 3), passed through when a test asks. */
static int store_writes;
/* fx_leader: the leader also serves snapshots (its store's source). */
static int leader_snapshots;

static int s_append(const sp_entry *e, size_t n, sp_seq *first, void *ud) {
  fx *f = ud;
  return f->inner.append(e, n, first, f->inner.user_data);
}

static int s_find_origin(const sp_uuid *d, uint64_t o, sp_seq *seq,
                         uint64_t *high, void *ud) {
  fx *f = ud;
  return f->inner.find_origin(d, o, seq, high, f->inner.user_data);
}

static int s_outbox_put(const sp_entry *e, size_t n, uint64_t *first,
                        void *ud) {
  fx *f = ud;
  return f->inner.outbox_put(e, n, first, f->inner.user_data);
}

static int s_outbox_read(uint64_t after, size_t max, sp_entry_sink sink,
                         void *ctx, void *ud) {
  fx *f = ud;
  return f->inner.outbox_read(after, max, sink, ctx, f->inner.user_data);
}

static int s_outbox_remove(uint64_t o, void *ud) {
  fx *f = ud;
  return f->inner.outbox_remove(o, f->inner.user_data);
}

static int s_outbox_stats(sp_outbox_stats *out, void *ud) {
  fx *f = ud;
  return f->inner.outbox_stats(out, f->inner.user_data);
}

static int s_outbox_anchor(const sp_uuid *d, uint64_t high, void *ud) {
  fx *f = ud;
  return f->inner.outbox_anchor(d, high, f->inner.user_data);
}

static void store_vtable(fx *f, sp_store *vt) {
  sp_mem_store_get_vtable(f->store, &f->inner);
  memset(vt, 0, sizeof(*vt));
  vt->version = SP_STORE_VERSION;
  vt->user_data = f;
  vt->read = s_read;
  vt->bounds = s_bounds;
  vt->hash_at = s_hash_at;
  vt->apply = s_apply;
  vt->state = s_state;
  if (store_writes) {
    vt->append = s_append;
    vt->find_origin = s_find_origin;
    vt->outbox_put = s_outbox_put;
    vt->outbox_read = s_outbox_read;
    vt->outbox_remove = s_outbox_remove;
    vt->outbox_stats = s_outbox_stats;
    vt->outbox_anchor = s_outbox_anchor;
  }
}

/* ---- allocation tracking ---- */

static void track(fx *f, size_t n) {
  if (n > f->max_alloc) {
    f->max_alloc = n;
  }
  f->total_alloc += n;
}

static void *m_malloc(size_t n, void *ud) {
  track(ud, n);
  return malloc(n);
}

static void m_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *m_calloc(size_t k, size_t n, void *ud) {
  track(ud, k * n);
  return calloc(k, n);
}

static void *m_realloc(void *p, size_t n, void *ud) {
  track(ud, n);
  return realloc(p, n);
}

/* ---- entries ---- */

static void fill_entry(sp_entry *e, sp_seq seq, uint8_t *buf, size_t len,
                       const sp_uuid *dev) {
  size_t i;

  memset(e, 0, sizeof(*e));
  e->sequence = seq;
  e->device_id = *dev;
  e->timestamp_ms = 1700000000000ULL + seq;
  e->model_type = "tag";
  e->model_type_len = 3;
  e->record_id.bytes[0] = (uint8_t)seq;
  e->change_type = (sp_change_type)(seq % 4);
  e->version = (int64_t)seq;
  for (i = 0; i < len; ++i) {
    buf[i] = (uint8_t)(seq * 7 + i);
  }
  e->data = buf;
  e->data_len = len;
}

static void append_log(sp_mem_store *st, int n, const sp_uuid *dev) {
  uint8_t buf[64];
  int i;

  for (i = 0; i < n; ++i) {
    sp_entry e;
    sp_seq seq;
    fill_entry(&e, 0, buf, 10 + (size_t)i, dev);
    assert_int_equal(sp_mem_store_append(st, &e, &seq), 0);
    (void)seq;
  }
}

/* Entries a follower `dev` submitted, origin ids first, first + 1... */
static void append_forwarded(sp_mem_store *st, int n, const sp_uuid *dev,
                             uint64_t first) {
  uint8_t buf[64];
  int i;

  for (i = 0; i < n; ++i) {
    sp_entry e;
    fill_entry(&e, 0, buf, 20 + (size_t)i, dev);
    e.origin_seq = first + (uint64_t)i;
    assert_int_equal(sp_mem_store_append(st, &e, NULL), 0);
  }
}

/* ---- fixture ---- */

/*
 * Fixtures live in static storage and are tracked while alive, so that one
 * left behind by a failed assertion (cmocka jumps out of the test) is still
 * freed by the group teardown: a failing test reports its failure, not a
 * cascade of leaks.
 */
static fx *live_fx[4];

static void fx_track(fx *f, int on) {
  size_t i;

  for (i = 0; i < sizeof(live_fx) / sizeof(live_fx[0]); ++i) {
    if (on ? live_fx[i] == NULL : live_fx[i] == f) {
      live_fx[i] = on ? f : NULL;
      return;
    }
  }
  assert_false(on);
}

static void fx_free(fx *f);

static int free_leftovers(void **state) {
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(live_fx) / sizeof(live_fx[0]); ++i) {
    if (live_fx[i]) {
      fx_free(live_fx[i]);
    }
  }
  return 0;
}

static void fx_base(fx *f) {
  sp_node_config cfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;

  memset(f, 0, sizeof(*f));
  fx_track(f, 1);
  f->self = mkid(0xa0, 1);
  f->P = mkid(0xa0, 2);
  f->Q = mkid(0xa0, 3);
  f->S = mkid(0xa0, 4); /* a stranger: member of nothing */
  f->X = mkid(0xa0, 5);
  f->Y = mkid(0xa0, 6);
  f->lib = mkid(0x11, 1);
  f->lib2 = mkid(0x11, 2);
  f->lib3 = mkid(0x11, 3); /* open nowhere */
  f->next_local_id = 1;
  f->next_remote_id = 1001;
  f->now = 10 * SP_SECONDS;
  f->mem.user_data = f;
  f->mem.malloc = m_malloc;
  f->mem.free = m_free;
  f->mem.calloc = m_calloc;
  f->mem.realloc = m_realloc;
  assert_int_equal(sp_decoder_new(&f->dec, NULL), 0);
  assert_int_equal(sp_mem_store_new(&f->store, NULL), 0);
  assert_int_equal(sp_mem_store_new(&f->ref, NULL), 0);
  assert_int_equal(sp_identity_generate(&f->id_p, &f->P, NULL), 0);
  assert_int_equal(sp_identity_generate(&f->id_self, &f->self, NULL), 0);

  sp_node_config_default(&cfg);
  cfg.device_id = f->self;
  cfg.seed = 42;
  cfg.max_frame = NODE_MAX_FRAME;
  cfg.identity = f->id_self;
  reg.user_data = f;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_key = r_device_key;
  if (fx_may_lead) {
    reg.may_lead = r_may_lead;
  }
  ev.user_data = f;
  ev.on_event = on_event;
  ev.on_log = on_log;
  ev.log_level = SP_LOG_WARN;
  tr.user_data = f;
  tr.open_stream = t_open;
  tr.send = t_send;
  tr.close_stream = t_close;
  assert_int_equal(sp_node_new(&f->node, &cfg, &reg, &ev, &tr, &f->mem), 0);
}

/* This node leads lib (epoch 3, 5 entries) and lib2 (empty); P and Q are
 * followers. */
static void fx_leader(fx *f) {
  sp_handler_config hc;
  sp_store vt;
  sp_snapshot_source src;

  fx_base(f);
  f->members[0] = f->self;
  f->members[1] = f->P;
  f->members[2] = f->Q;
  f->nmembers = 3;
  f->leader = f->self;
  append_log(f->store, LOG_LEN, &f->self);
  store_vtable(f, &vt);
  sp_handler_config_default(&hc);
  hc.library_id = f->lib;
  hc.role = SP_ROLE_LEADER;
  hc.epoch = LEADER_EPOCH;
  hc.max_queued_fetches = 2;
  if (leader_snapshots) {
    sp_mem_store_snapshot_source(f->store, &src);
    hc.snapshot_source = &src;
  }
  assert_int_equal(sp_handler_new(&f->h, f->node, &hc, &vt, f->now), 0);
  hc.snapshot_source = NULL;
  /* lib2 is open too, on its own (empty) store. */
  {
    sp_store vt2;
    sp_mem_store_get_vtable(f->ref, &vt2);
    hc.library_id = f->lib2;
    assert_int_equal(sp_handler_new(&f->h2, f->node, &hc, &vt2, f->now), 0);
  }
  assert_int_equal(f->nopens, 0); /* a leader dials only on expiry */
}

/* This node follows lib; the registry names X as leader; Y is another
 * member.  The store has recorded epoch 2; `ref` holds the leader's log
 * (5 entries). */
static void fx_follower(fx *f) {
  sp_handler_config hc;
  sp_store vt;

  fx_base(f);
  f->members[0] = f->self;
  f->members[1] = f->X;
  f->members[2] = f->Y;
  f->nmembers = 3;
  f->leader = f->X;
  append_log(f->ref, LOG_LEN, &f->X);
  store_vtable(f, &vt);
  assert_int_equal(vt.apply(NULL, NULL, 0, FOLLOWER_EPOCH, vt.user_data), 0);
  sp_handler_config_default(&hc);
  hc.library_id = f->lib;
  hc.role = SP_ROLE_FOLLOWER;
  assert_int_equal(sp_handler_new(&f->h, f->node, &hc, &vt, f->now), 0);
}

static void fx_free(fx *f) {
  size_t i;

  fx_track(f, 0);
  sp_node_del(f->node);
  for (i = 0; i < f->nst; ++i) {
    free(f->st[i].buf);
    sp_frame_reader_del(f->st[i].reader);
  }
  sp_mem_store_del(f->store);
  sp_mem_store_del(f->ref);
  sp_decoder_del(f->dec);
  sp_identity_del(f->id_p);
  sp_identity_del(f->id_self);
}

/* ---- injecting ---- */

static uint64_t open_in(fx *f, const sp_uuid *peer) {
  uint64_t id = f->next_remote_id++;

  cs(f, id);
  assert_int_equal(sp_node_stream_opened(f->node, id, peer, f->now), 0);
  return id;
}

static void inject(fx *f, uint64_t id, const sp_uuid *peer, const uint8_t *p,
                   size_t n) {
  assert_int_equal(sp_node_stream_data(f->node, id, peer, p, n, f->now), 0);
}

static size_t enc(const sp_msg *m, uint8_t *out, size_t cap) {
  size_t n = 0;

  assert_int_equal(sp_msg_encode(m, out, cap, &n), 0);
  return n;
}

static void inject_msg(fx *f, uint64_t id, const sp_uuid *peer,
                       const sp_msg *m) {
  uint8_t buf[8192];
  size_t n = enc(m, buf, sizeof(buf));

  inject(f, id, peer, buf, n);
}

/* Inject a raw body with its length prefix. */
static void inject_body(fx *f, uint64_t id, const sp_uuid *peer,
                        const uint8_t *body, size_t n) {
  uint8_t buf[4096];

  assert_true(n + 4 <= sizeof(buf));
  buf[0] = (uint8_t)(n >> 24);
  buf[1] = (uint8_t)(n >> 16);
  buf[2] = (uint8_t)(n >> 8);
  buf[3] = (uint8_t)n;
  memcpy(buf + 4, body, n);
  inject(f, id, peer, buf, n + 4);
}

static sp_msg mk(sp_msg_type type, const sp_uuid *lib, uint64_t epoch) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = type;
  m.library_id = *lib;
  m.epoch = epoch;
  return m;
}

static sp_msg mk_fetch(const sp_uuid *lib, uint64_t epoch, sp_seq since,
                       uint64_t limit, const uint8_t *hash) {
  sp_msg m = mk(SP_MSG_FETCH_ENTRIES, lib, epoch);

  m.u.fetch_entries.since_sequence = since;
  m.u.fetch_entries.limit = limit;
  if (hash) {
    memcpy(m.u.fetch_entries.since_hash, hash, SP_HASH_LEN);
    m.u.fetch_entries.since_hash_len = SP_HASH_LEN;
  }
  return m;
}

static sp_msg mk_ack(const sp_uuid *lib, uint64_t epoch, sp_seq up_to) {
  sp_msg m = mk(SP_MSG_ACKNOWLEDGE, lib, epoch);

  m.u.acknowledge.up_to_sequence = up_to;
  return m;
}

static sp_msg mk_hb(const sp_uuid *lib, uint64_t epoch, sp_seq seq,
                    sp_role role) {
  sp_msg m = mk(SP_MSG_HEARTBEAT, lib, epoch);

  m.u.heartbeat.current_sequence = seq;
  m.u.heartbeat.role = role;
  return m;
}

/* ---- reading the capture ---- */

/* Decode the next complete frame sent on `id`; 1 if there was one.  Its
 * body's bytes stay at `*body` until the next read (NULL: not wanted). */
static int read_frame_body(fx *f, uint64_t id, sp_msg *msg,
                           const uint8_t **pbody, size_t *pblen) {
  cap_stream *c = cs(f, id);

  while (c->rd < c->len) {
    const uint8_t *body;
    size_t blen;
    sp_ssize n = sp_frame_reader_read(c->reader, c->buf + c->rd,
                                      c->len - c->rd, &body, &blen);
    assert_true(n >= 0);
    c->rd += (size_t)n;
    if (body) {
      assert_int_equal(sp_decoder_decode(f->dec, body, blen, msg), 0);
      if (pbody) {
        *pbody = body;
        *pblen = blen;
      }
      return 1;
    }
  }
  return 0;
}

static int read_frame(fx *f, uint64_t id, sp_msg *msg) {
  return read_frame_body(f, id, msg, NULL, NULL);
}

typedef struct frames {
  int n;
  sp_msg_type type[64];
  int32_t code[64];
  sp_uuid lib[64];
} frames;

static void read_all(fx *f, uint64_t id, frames *fr) {
  sp_msg m;

  memset(fr, 0, sizeof(*fr));
  while (read_frame(f, id, &m)) {
    assert_true(fr->n < 64);
    fr->type[fr->n] = m.type;
    fr->code[fr->n] = m.type == SP_MSG_ERROR ? m.u.error.code : 0;
    fr->lib[fr->n] = m.library_id;
    fr->n++;
  }
}

/* Go back to byte `rd` of the capture (a frame boundary) to read again. */
static void rewind_to(fx *f, uint64_t id, size_t rd) {
  cap_stream *c = cs(f, id);

  c->rd = rd;
  sp_frame_reader_del(c->reader);
  assert_int_equal(sp_frame_reader_new(&c->reader, SP_MAX_FRAME_LIMIT, NULL),
                   0);
}

static void skip_all(fx *f, uint64_t id) {
  frames fr;
  read_all(f, id, &fr);
}

/*
 * The peer was refused with `code`: an Error frame with that code is the
 * last (and only Error) frame sent, the stream was closed once with the
 * code, the host saw SP_EVENT_ERROR with it, and the node forgot the
 * stream (later bytes are not read).
 */
static void expect_refusal(fx *f, uint64_t id, const sp_uuid *peer, int code) {
  cap_stream *c = cs(f, id);
  static const uint8_t more[] = {0, 0, 0, 1, 0xc0};
  frames fr;
  int i;

  read_all(f, id, &fr);
  assert_true(fr.n >= 1);
  assert_int_equal(fr.type[fr.n - 1], SP_MSG_ERROR);
  assert_int_equal(fr.code[fr.n - 1], code);
  for (i = 0; i < fr.n - 1; ++i) {
    assert_int_not_equal(fr.type[i], SP_MSG_ERROR);
  }
  assert_int_equal(c->close_calls, 1);
  assert_int_equal(c->close_code, code);
  assert_int_equal(count_ev(f, SP_EVENT_ERROR, code), 1);
  assert_int_equal(
      sp_node_stream_data(f->node, id, peer, more, sizeof(more), f->now),
      SP_ERR_NOT_FOUND);
}

/* ---- leader state ---- */

typedef struct lsnap {
  sp_handler_status st;
  sp_follower_progress p[4];
  sp_ssize n;
  sp_log_bounds b;
} lsnap;

static void lsnap_take(fx *f, lsnap *s) {
  memset(s, 0, sizeof(*s));
  assert_int_equal(sp_handler_get_status(f->h, &s->st), 0);
  s->n = sp_handler_list_followers(f->h, s->p, 4, f->now);
  assert_true(s->n >= 0 && s->n <= 4);
  assert_int_equal(f->inner.bounds(&s->b, f->inner.user_data), 0);
}

/* Nothing about the followers' progress or the log changed, and the
 * handler still leads (notify is accepted). */
static void lsnap_same(fx *f, const lsnap *s) {
  lsnap now;
  sp_ssize i;

  lsnap_take(f, &now);
  assert_int_equal(now.st.role, SP_ROLE_LEADER);
  assert_int_equal(now.st.epoch, s->st.epoch);
  assert_int_equal(now.st.sequence, s->st.sequence);
  assert_int_equal(now.b.latest, s->b.latest);
  assert_int_equal(now.b.pruned_through, s->b.pruned_through);
  assert_int_equal(now.n, s->n);
  for (i = 0; i < now.n; ++i) {
    assert_true(sp_uuid_equal(&now.p[i].device_id, &s->p[i].device_id));
    assert_int_equal(now.p[i].acked_sequence, s->p[i].acked_sequence);
    assert_int_equal(now.p[i].has_acked, s->p[i].has_acked);
  }
  assert_int_equal(sp_handler_notify_new_entries(f->h, 0, 0, f->now), 0);
  assert_int_equal(sp_handler_epoch(f->h), LEADER_EPOCH);
}

/* ---- follower state ---- */

typedef struct fsnap {
  sp_store_state st;
  long applies;
} fsnap;

static void fsnap_take(fx *f, fsnap *s) {
  assert_int_equal(f->inner.state(&s->st, f->inner.user_data), 0);
  s->applies = f->applies;
}

static void fsnap_same(fx *f, const fsnap *s) {
  sp_store_state now;

  assert_int_equal(f->inner.state(&now, f->inner.user_data), 0);
  assert_int_equal(now.applied, s->st.applied);
  assert_memory_equal(now.head_hash, s->st.head_hash, SP_HASH_LEN);
  assert_int_equal(now.epoch, s->st.epoch);
  assert_int_equal(f->applies, s->applies);
}

/* ======================================================================
 * Leader side
 * ====================================================================== */

/* A leader-side refusal of the first frame on a fresh stream from `peer`. */
static void leader_refuses_body(const uint8_t *body, size_t n, int code) {
  static fx f; /* static: reclaimable after a failed assertion */
  lsnap s;
  uint64_t id;

  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.P);
  inject_body(&f, id, &f.P, body, n);
  expect_refusal(&f, id, &f.P, code);
  lsnap_same(&f, &s);
  fx_free(&f);
}

/* A follower that speaks only the seed's messages (the first wave's six
 * and Error): one FetchEntries, no resume hash, one request per page, its
 * own chain over the entry fields it knows.  It syncs with a leader that
 * has every later feature, is sent nothing but seed message types, each
 * frame byte for byte what the seed's encoding of it is (no features, no
 * origin element, even for forwarded entries), and its chain matches the
 * leader's, before and after pushed entries. */
static void seed_peer_read(fx *f, uint64_t id, sp_seq *applied,
                           uint8_t chain[SP_HASH_LEN], int *announced) {
  static uint8_t seed[NODE_MAX_FRAME + SP_FRAME_HEADER_LEN];
  const uint8_t *body;
  size_t blen, n;
  sp_msg m;
  size_t i;

  while (read_frame_body(f, id, &m, &body, &blen)) {
    assert_true(m.type == SP_MSG_NEW_ENTRIES ||
                m.type == SP_MSG_ENTRIES_RESPONSE ||
                m.type == SP_MSG_HEARTBEAT);
    m.with_origin = 0;
    assert_int_equal(sp_msg_encode(&m, seed, sizeof(seed), &n), 0);
    assert_int_equal(n, blen + SP_FRAME_HEADER_LEN);
    assert_memory_equal(seed + SP_FRAME_HEADER_LEN, body, blen);
    if (m.type == SP_MSG_HEARTBEAT) {
      assert_false(m.u.heartbeat.has_features);
    }
    if (m.type == SP_MSG_NEW_ENTRIES) {
      *announced = 1;
      continue;
    }
    if (m.type != SP_MSG_ENTRIES_RESPONSE) {
      continue;
    }
    for (i = 0; i < m.u.entries_response.entry_count; ++i) {
      const sp_entry *e = &m.u.entries_response.entries[i];
      assert_int_equal(e->origin_seq, 0);
      if (e->sequence <= *applied) {
        continue;
      }
      assert_int_equal(e->sequence, *applied + 1);
      assert_int_equal(sp_chain_next(chain, e, chain), 0);
      *applied = e->sequence;
    }
    if (m.u.entries_response.last_hash_len == SP_HASH_LEN &&
        m.u.entries_response.through_sequence == *applied) {
      assert_memory_equal(m.u.entries_response.last_hash, chain,
                          SP_HASH_LEN);
    }
  }
}

static void test_leader_seed_only_follower(void **state) {
  static fx f;
  uint8_t chain[SP_HASH_LEN] = {0}, want[SP_HASH_LEN];
  sp_seq applied = 0;
  sp_store vt;
  sp_msg m;
  uint64_t id;
  int announced = 0, round;

  (void)state;
  /* The leader has the write path and serves snapshots, and its log
   * holds entries forwarded from followers (origin ids set). */
  store_writes = 1;
  leader_snapshots = 1;
  fx_leader(&f);
  store_writes = 0;
  leader_snapshots = 0;
  /* A leader that holds a claim of its own (the node has an identity):
   * none of it reaches a peer that never asked for claims. */
  {
    sp_leader_claim own;
    assert_int_equal(sp_handler_leader_claim(f.h, &own), 0);
    assert_int_equal(own.epoch, LEADER_EPOCH);
    assert_true(sp_uuid_equal(&own.leader, &f.self));
  }
  append_forwarded(f.store, 2, &f.Q, 1);
  sp_mem_store_get_vtable(f.store, &vt);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 100, NULL);
  inject_msg(&f, id, &f.P, &m);
  seed_peer_read(&f, id, &applied, chain, &announced);
  assert_int_equal(applied, LOG_LEN + 2);
  assert_int_equal(vt.hash_at(LOG_LEN + 2, want, vt.user_data), 0);
  assert_memory_equal(chain, want, SP_HASH_LEN);
  m = mk_ack(&f.lib, LEADER_EPOCH, applied);
  inject_msg(&f, id, &f.P, &m);

  /* New entries: pushed or announced, the seed peer follows either. */
  append_log(f.store, 1, &f.self);
  append_forwarded(f.store, 2, &f.Q, 3);
  assert_int_equal(
      sp_handler_notify_new_entries(f.h, LOG_LEN + 3, LOG_LEN + 5, f.now), 0);
  for (round = 0; round < 4 && applied < LOG_LEN + 5; ++round) {
    announced = 0;
    seed_peer_read(&f, id, &applied, chain, &announced);
    if (announced && applied < LOG_LEN + 5) {
      m = mk_fetch(&f.lib, LEADER_EPOCH, applied, 100, NULL);
      inject_msg(&f, id, &f.P, &m);
    }
  }
  assert_int_equal(applied, LOG_LEN + 5);
  assert_int_equal(vt.hash_at(LOG_LEN + 5, want, vt.user_data), 0);
  assert_memory_equal(chain, want, SP_HASH_LEN);
  m = mk_ack(&f.lib, LEADER_EPOCH, applied);
  inject_msg(&f, id, &f.P, &m);
  seed_peer_read(&f, id, &applied, chain, &announced);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY_CODE), 0);
  assert_int_equal(cs(&f, id)->close_calls, 0);

  /* Pruned past it, the seed peer is told SyncRequired in the seed's
   * bytes, and nothing of a snapshot: its host does the full sync. */
  assert_int_equal(sp_mem_store_prune(f.store, LOG_LEN + 3), 0);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 1, 100, NULL);
  inject_msg(&f, id, &f.P, &m);
  {
    static uint8_t seed[NODE_MAX_FRAME + SP_FRAME_HEADER_LEN];
    const uint8_t *body;
    size_t blen, n;
    int told = 0;

    while (read_frame_body(&f, id, &m, &body, &blen)) {
      assert_true(m.type == SP_MSG_SYNC_REQUIRED ||
                  m.type == SP_MSG_HEARTBEAT);
      assert_int_equal(sp_msg_encode(&m, seed, sizeof(seed), &n), 0);
      assert_int_equal(n, blen + SP_FRAME_HEADER_LEN);
      assert_memory_equal(seed + SP_FRAME_HEADER_LEN, body, blen);
      told += m.type == SP_MSG_SYNC_REQUIRED;
    }
    assert_int_equal(told, 1);
  }
  fx_free(&f);
}

static void test_leader_malformed_msgpack(void **state) {
  static const uint8_t body[] = {0xc1};
  static fx f;
  uint64_t id;

  (void)state;
  leader_refuses_body(body, sizeof(body), SP_ERR_MSGPACK);
  /* Also after a valid array head: the reserved byte where a uuid goes. */
  fx_leader(&f);
  id = open_in(&f, &f.P);
  {
    static const uint8_t b2[] = {0x96, 0x02, 0xc1};
    inject_body(&f, id, &f.P, b2, sizeof(b2));
  }
  expect_refusal(&f, id, &f.P, SP_ERR_MSGPACK);
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_CONNECTED, ANY_CODE), 0);
  fx_free(&f);
}

static void test_leader_wrong_type(void **state) {
  static fx f;
  uint64_t id;
  uint8_t body[64];
  size_t n = 0;

  (void)state;
  fx_leader(&f);
  /* [2, "0123456789abcdef" (str, not bin), 3, 0, 10, bin ""] */
  body[n++] = 0x96;
  body[n++] = 0x02;
  body[n++] = 0xb0;
  memcpy(body + n, "0123456789abcdef", 16);
  n += 16;
  body[n++] = LEADER_EPOCH;
  body[n++] = 0x00;
  body[n++] = 0x0a;
  body[n++] = 0xc4;
  body[n++] = 0x00;
  id = open_in(&f, &f.P);
  inject_body(&f, id, &f.P, body, n);
  expect_refusal(&f, id, &f.P, SP_ERR_WRONG_TYPE);
  /* A str where the since sequence goes, with the right library. */
  {
    uint8_t b2[64];
    size_t k = 0;
    b2[k++] = 0x96;
    b2[k++] = 0x02;
    b2[k++] = 0xc4;
    b2[k++] = 16;
    memcpy(b2 + k, f.lib.bytes, 16);
    k += 16;
    b2[k++] = LEADER_EPOCH;
    b2[k++] = 0xa1;
    b2[k++] = '0';
    b2[k++] = 0x0a;
    b2[k++] = 0xc4;
    b2[k++] = 0x00;
    id = open_in(&f, &f.P);
    inject_body(&f, id, &f.P, b2, k);
    read_all(&f, id, &(frames){0});
    assert_int_equal(cs(&f, id)->close_code, SP_ERR_WRONG_TYPE);
    assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_WRONG_TYPE), 2);
  }
  fx_free(&f);
}

/* A length prefix above the node's maximum is refused on the four prefix
 * bytes, before any body byte is buffered. */
static void test_leader_frame_too_large(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  uint8_t *big;
  const size_t body = 1024 * 1024; /* declared; far over NODE_MAX_FRAME */
  const size_t sent = 32 * 1024;   /* actually sent with the prefix */

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  /* The prefix alone is enough to refuse. */
  id = open_in(&f, &f.P);
  {
    const uint8_t prefix[4] = {0x00, 0x01, 0x00, 0x01}; /* 65537 */
    inject(&f, id, &f.P, prefix, sizeof(prefix));
  }
  expect_refusal(&f, id, &f.P, SP_ERR_FRAME_TOO_LARGE);

  /* With body bytes in the same call: none of them is buffered. */
  f.nev = 0;
  big = calloc(1, 4 + sent);
  assert_non_null(big);
  big[0] = (uint8_t)(body >> 24);
  big[1] = (uint8_t)(body >> 16);
  big[2] = (uint8_t)(body >> 8);
  big[3] = (uint8_t)body;
  id = open_in(&f, &f.Q);
  f.max_alloc = 0;
  f.total_alloc = 0;
  inject(&f, id, &f.Q, big, 4 + sent);
  print_message("after a %zu-byte declared frame: largest allocation %zu, "
                "total %zu\n", body, f.max_alloc, f.total_alloc);
  assert_true(f.max_alloc < 4096);
  assert_true(f.total_alloc < sent);
  expect_refusal(&f, id, &f.Q, SP_ERR_FRAME_TOO_LARGE);
  free(big);

  /* On a routed stream, a frame of exactly the maximum is not refused for
   * its size: it is buffered whole, then refused for its content ([2, 0,
   * ...]: a uint where the library id goes).  (Before a first frame routes
   * the stream, the limit is SP_UNROUTED_MAX_FRAME: sp_node_bounds_test.) */
  id = open_in(&f, &f.P);
  {
    sp_msg hb = mk_hb(&f.lib, LEADER_EPOCH, 0, SP_ROLE_FOLLOWER);
    inject_msg(&f, id, &f.P, &hb);
    skip_all(&f, id);
  }
  big = calloc(1, 4 + NODE_MAX_FRAME);
  assert_non_null(big);
  big[1] = (uint8_t)(NODE_MAX_FRAME >> 16);
  big[2] = (uint8_t)(NODE_MAX_FRAME >> 8);
  big[3] = (uint8_t)NODE_MAX_FRAME;
  big[4] = 0x96; /* [2, then 0x00 bytes: a positive fixint, not a uuid */
  big[5] = 0x02;
  f.nev = 0;
  inject(&f, id, &f.P, big, 4 + NODE_MAX_FRAME);
  read_all(&f, id, &(frames){0});
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_WRONG_TYPE);
  free(big);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_unknown_message(void **state) {
  uint8_t body[32];
  size_t n = 0;

  (void)state;
  body[n++] = 0x93;
  body[n++] = 99;
  body[n++] = 0xc4;
  body[n++] = 16;
  memset(body + n, 0x11, 16);
  n += 16;
  body[n++] = LEADER_EPOCH;
  leader_refuses_body(body, n, SP_ERR_UNKNOWN_MESSAGE);
}

static void test_leader_trailing_bytes(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  uint8_t buf[256];
  size_t n;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  m = mk_ack(&f.lib, LEADER_EPOCH, 2);
  n = enc(&m, buf, sizeof(buf));
  buf[n] = 0xc0; /* nil after the array, inside the frame */
  buf[3] = (uint8_t)(buf[3] + 1);
  id = open_in(&f, &f.P);
  inject(&f, id, &f.P, buf, n + 1);
  expect_refusal(&f, id, &f.P, SP_ERR_TRAILING_BYTES);
  /* The ack inside was not taken. */
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_unknown_library(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;
  frames fr;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib3, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  /* The Error frame names the library the peer asked for. */
  read_all(&f, id, &fr);
  assert_int_equal(fr.n, 1);
  assert_true(sp_uuid_equal(&fr.lib[0], &f.lib3));
  rewind_to(&f, id, 0);
  expect_refusal(&f, id, &f.P, SP_ERR_UNKNOWN_LIBRARY);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_not_member(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.S);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.S, &m);
  expect_refusal(&f, id, &f.S, SP_ERR_NOT_MEMBER);
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_CONNECTED, ANY_CODE), 0);
  /* The stranger got no follower record and nothing was served. */
  {
    sp_follower_progress p;
    assert_int_equal(sp_handler_follower_progress(f.h, &f.S, f.now, &p),
                     SP_ERR_NOT_FOUND);
  }
  /* Same for an ack and a heartbeat as first frame. */
  id = open_in(&f, &f.S);
  m = mk_ack(&f.lib, LEADER_EPOCH, 1);
  inject_msg(&f, id, &f.S, &m);
  read_all(&f, id, &(frames){0});
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_NOT_MEMBER);
  lsnap_same(&f, &s);
  fx_free(&f);
}

/* A follower may not send what only a leader sends. */
static void test_leader_wrong_role(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;
  sp_entry e;
  uint8_t payload[10] = {0};
  uint8_t hash[SP_HASH_LEN];
  int k;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  for (k = 0; k < 3; ++k) {
    id = open_in(&f, &f.P);
    switch (k) {
    case 0:
      m = mk(SP_MSG_NEW_ENTRIES, &f.lib, LEADER_EPOCH);
      m.u.new_entries.from_sequence = 6;
      m.u.new_entries.to_sequence = 7;
      m.u.new_entries.entry_count = 2;
      break;
    case 1:
      /* A follower sending entries. */
      fill_entry(&e, 6, payload, sizeof(payload), &f.P);
      memset(hash, 0x5a, sizeof(hash));
      m = mk(SP_MSG_ENTRIES_RESPONSE, &f.lib, LEADER_EPOCH);
      m.u.entries_response.since_sequence = 5;
      m.u.entries_response.through_sequence = 6;
      m.u.entries_response.leader_latest = 6;
      m.u.entries_response.entries = &e;
      m.u.entries_response.entry_count = 1;
      memcpy(m.u.entries_response.last_hash, hash, SP_HASH_LEN);
      m.u.entries_response.last_hash_len = SP_HASH_LEN;
      break;
    default:
      m = mk(SP_MSG_SYNC_REQUIRED, &f.lib, LEADER_EPOCH);
      m.u.sync_required.reason = SP_SYNC_DIVERGENCE;
      break;
    }
    inject_msg(&f, id, &f.P, &m);
    expect_refusal(&f, id, &f.P, SP_ERR_WRONG_ROLE);
    f.nev = 0;
  }
  /* And after a valid exchange on an established stream. */
  id = open_in(&f, &f.P);
  m = mk_hb(&f.lib, LEADER_EPOCH, 0, SP_ROLE_FOLLOWER);
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  m = mk(SP_MSG_NEW_ENTRIES, &f.lib, LEADER_EPOCH);
  m.u.new_entries.from_sequence = 1;
  m.u.new_entries.to_sequence = 1;
  m.u.new_entries.entry_count = 1;
  inject_msg(&f, id, &f.P, &m);
  expect_refusal(&f, id, &f.P, SP_ERR_WRONG_ROLE);
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_LOST, SP_ERR_WRONG_ROLE), 1);
  /* The entries the follower sent were not taken. */
  assert_int_equal(sp_mem_store_count(f.store), LOG_LEN);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_fetch_limit(void **state) {
  static const uint64_t limits[] = {0, SP_MAX_FETCH_LIMIT + 1ull, UINT64_MAX};
  static fx f;
  lsnap s;
  size_t k;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  for (k = 0; k < sizeof(limits) / sizeof(limits[0]); ++k) {
    uint64_t id = open_in(&f, &f.P);
    sp_msg m = mk_fetch(&f.lib, LEADER_EPOCH, 0, limits[k], NULL);
    frames fr;
    inject_msg(&f, id, &f.P, &m);
    /* Nothing served before the refusal. */
    read_all(&f, id, &fr);
    assert_int_equal(fr.n, 1);
    rewind_to(&f, id, 0);
    expect_refusal(&f, id, &f.P, SP_ERR_FETCH_LIMIT);
    f.nev = 0;
  }
  /* The largest allowed limit is served. */
  {
    uint64_t id = open_in(&f, &f.P);
    sp_msg m = mk_fetch(&f.lib, LEADER_EPOCH, 0, SP_MAX_FETCH_LIMIT, NULL);
    sp_msg r;
    inject_msg(&f, id, &f.P, &m);
    assert_true(read_frame(&f, id, &r));
    assert_int_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
    assert_int_equal(r.u.entries_response.entry_count, LOG_LEN);
    assert_int_equal(cs(&f, id)->close_calls, 0);
  }
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_ack_beyond(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.P);
  m = mk_ack(&f.lib, LEADER_EPOCH, LOG_LEN + 1);
  inject_msg(&f, id, &f.P, &m);
  expect_refusal(&f, id, &f.P, SP_ERR_ACK_BEYOND);
  assert_int_equal(count_ev(&f, SP_EVENT_ACK_RECEIVED, ANY_CODE), 0);
  lsnap_same(&f, &s);
  /* UINT64_MAX too. */
  id = open_in(&f, &f.Q);
  m = mk_ack(&f.lib, LEADER_EPOCH, UINT64_MAX);
  inject_msg(&f, id, &f.Q, &m);
  read_all(&f, id, &(frames){0});
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_ACK_BEYOND);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_seq_regression(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;
  sp_follower_progress p;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  m = mk_ack(&f.lib, LEADER_EPOCH, 4);
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ACK_RECEIVED, ANY_CODE), 1);
  m = mk_ack(&f.lib, LEADER_EPOCH, 4); /* the same again is fine */
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  m = mk_ack(&f.lib, LEADER_EPOCH, 3);
  inject_msg(&f, id, &f.P, &m);
  expect_refusal(&f, id, &f.P, SP_ERR_SEQ_REGRESSION);
  assert_int_equal(sp_handler_follower_progress(f.h, &f.P, f.now, &p), 0);
  assert_int_equal(p.acked_sequence, 4);
  assert_true(p.has_acked);
  assert_false(p.connected);
  /* On a new stream the follower may start lower (not a regression of
   * that stream). */
  id = open_in(&f, &f.P);
  m = mk_ack(&f.lib, LEADER_EPOCH, 2);
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  fx_free(&f);
}

static void test_leader_library_mismatch(void **state) {
  static fx f;
  lsnap s;
  size_t rd;
  uint64_t id;
  sp_msg m, r;
  frames fr;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
  skip_all(&f, id);
  rd = cs(&f, id)->rd;
  lsnap_take(&f, &s);
  /* lib2 is open on this node too: still refused on lib's stream. */
  m = mk_ack(&f.lib2, LEADER_EPOCH, 0);
  inject_msg(&f, id, &f.P, &m);
  read_all(&f, id, &fr);
  assert_int_equal(fr.n, 1);
  assert_true(sp_uuid_equal(&fr.lib[0], &f.lib)); /* stamped with lib */
  rewind_to(&f, id, rd);
  expect_refusal(&f, id, &f.P, SP_ERR_LIBRARY_MISMATCH);
  lsnap_same(&f, &s);
  /* lib2's handler saw nothing of it. */
  {
    sp_handler_status st;
    assert_int_equal(sp_handler_get_status(f.h2, &st), 0);
    assert_int_equal(st.connected_peers, 0);
  }
  fx_free(&f);
}

/* A peer that does not read while piling up fetches is refused once more
 * than max_queued_fetches (2) wait; the refusal goes out behind what was
 * already queued for it, and the stream closes after it. */
static void test_leader_too_many_requests(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;
  frames fr;
  cap_stream *c;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  c = cs(&f, id);
  c->block = 1;
  /* The first is served at once into the out buffer (blocked there). */
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  /* Two more wait in the queue. */
  m = mk_fetch(&f.lib, LEADER_EPOCH, 5, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY_CODE), 0);
  assert_int_equal(c->close_calls, 0);
  /* One too many. */
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_TOO_MANY_REQUESTS), 1);
  assert_int_equal(c->len, 0);
  /* Not closed before the Error frame could go out. */
  assert_int_equal(c->close_calls, 0);
  /* Input after the refusal is ignored. */
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY_CODE), 1);
  c->block = 0;
  assert_int_equal(sp_node_stream_writable(f.node, id, &f.P, f.now), 0);
  read_all(&f, id, &fr);
  /* The page already built, then the refusal; the queued fetches are not
   * served. */
  assert_int_equal(fr.n, 2);
  assert_int_equal(fr.type[0], SP_MSG_ENTRIES_RESPONSE);
  rewind_to(&f, id, 0);
  expect_refusal(&f, id, &f.P, SP_ERR_TOO_MANY_REQUESTS);
  fx_free(&f);
}

/* A refused peer that never reads, and keeps sending, is not kept
 * forever: its stream goes within the heartbeat timeout. */
static void test_leader_refused_peer_not_reading(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;
  cap_stream *c;
  sp_tstamp start, t;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  c = cs(&f, id);
  c->block = 1;
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  /* Past the page just built (a request below it crossed that page and
   * would take no slot). */
  m = mk_fetch(&f.lib, LEADER_EPOCH, 5, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  inject_msg(&f, id, &f.P, &m);
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_TOO_MANY_REQUESTS), 1);
  start = f.now;
  for (t = start; t <= start + 300 * SP_SECONDS; t += 20 * SP_SECONDS) {
    f.now = t;
    assert_int_equal(sp_node_handle_expiry(f.node, t), 0);
    if (c->close_calls) {
      break;
    }
    inject_msg(&f, id, &f.P, &m);
  }
  print_message("refused, unread stream %s after %llu s\n",
                c->close_calls ? "closed" : "still open",
                (unsigned long long)((f.now - start) / SP_SECONDS));
  assert_int_equal(c->close_calls, 1);
  assert_true(c->close_code == SP_ERR_PEER_TIMEOUT ||
              c->close_code == SP_ERR_TOO_MANY_REQUESTS);
  assert_true(f.now - start <= 90 * SP_SECONDS + 20 * SP_SECONDS);
  fx_free(&f);
}

static void test_leader_two_leaders(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;
  const rec_event *e;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.P);
  m = mk_hb(&f.lib, LEADER_EPOCH, 9, SP_ROLE_LEADER);
  inject_msg(&f, id, &f.P, &m);
  e = find_ev(&f, SP_EVENT_ROLE_CONFLICT);
  assert_non_null(e);
  assert_int_equal(e->epoch, LEADER_EPOCH);
  assert_true(e->has_peer);
  assert_true(sp_uuid_equal(&e->peer, &f.P));
  assert_int_equal(count_ev(&f, SP_EVENT_ROLE_CONFLICT, ANY_CODE), 1);
  expect_refusal(&f, id, &f.P, SP_ERR_TWO_LEADERS);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);
  lsnap_same(&f, &s);
  /* A leader with an older epoch is fenced. */
  f.nev = 0;
  id = open_in(&f, &f.Q);
  m = mk_hb(&f.lib, LEADER_EPOCH - 1, 9, SP_ROLE_LEADER);
  inject_msg(&f, id, &f.Q, &m);
  expect_refusal(&f, id, &f.Q, SP_ERR_STALE_EPOCH);
  assert_int_equal(count_ev(&f, SP_EVENT_ROLE_CONFLICT, ANY_CODE), 0);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static int on_wait(sp_handler *h, sp_seq seq, int status, size_t acked,
                   void *ud) {
  fx *f = ud;

  (void)h;
  (void)seq;
  (void)acked;
  f->wait_calls++;
  f->wait_status = status;
  return 0;
}

/* A higher epoch proven by a valid claim (P's, relayed or its own)
 * fences this leader: it steps down, closes every stream of the library
 * with SP_ERR_STALE_EPOCH and serves nothing more. */
static void test_leader_steps_down(void **state) {
  static fx f;
  uint64_t p_id, q_id, id;
  sp_msg m, r;
  frames fr;
  const rec_event *e;

  (void)state;
  fx_leader(&f);
  p_id = open_in(&f, &f.P);
  q_id = open_in(&f, &f.Q);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, p_id, &f.P, &m);
  inject_msg(&f, q_id, &f.Q, &m);
  assert_true(read_frame(&f, p_id, &r));
  assert_true(read_frame(&f, q_id, &r));
  assert_int_equal(sp_handler_wait_acks(f.h, LOG_LEN, 1, f.now + SP_SECONDS,
                                        on_wait, &f, f.now), 0);
  /* lib2 has a stream of its own, which is not touched. */
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib2, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  skip_all(&f, id);

  /* Failover as a registry with no may_lead has it: the host's registry
   * names P, which may then lead. */
  f.leader = f.P;
  m = mk_hb(&f.lib, LEADER_EPOCH + 1, 0, SP_ROLE_FOLLOWER);
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_CLAIMS;
  m.u.heartbeat.has_claim = 1;
  assert_int_equal(sp_leader_claim_sign(&m.u.heartbeat.claim, f.id_p, &f.lib,
                                        LEADER_EPOCH + 1),
                   0);
  inject_msg(&f, p_id, &f.P, &m);
  e = find_ev(&f, SP_EVENT_STEPPED_DOWN);
  assert_non_null(e);
  assert_int_equal(e->epoch, LEADER_EPOCH + 1);
  assert_true(sp_uuid_equal(&e->peer, &f.P));
  assert_true(sp_uuid_equal(&e->leader, &f.P));
  assert_int_equal(cs(&f, p_id)->close_calls, 1);
  assert_int_equal(cs(&f, p_id)->close_code, SP_ERR_STALE_EPOCH);
  assert_int_equal(cs(&f, q_id)->close_calls, 1);
  assert_int_equal(cs(&f, q_id)->close_code, SP_ERR_STALE_EPOCH);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  /* No Error frame: the streams just end. */
  read_all(&f, p_id, &fr);
  assert_int_equal(fr.n, 0);
  read_all(&f, q_id, &fr);
  assert_int_equal(fr.n, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_LOST, SP_ERR_STALE_EPOCH), 2);
  assert_int_equal(f.wait_calls, 1);
  assert_int_equal(f.wait_status, SP_ERR_CANCELED);
  /* Serving is over. */
  assert_int_equal(sp_handler_notify_new_entries(f.h, 1, LOG_LEN, f.now),
                   SP_ERR_INVALID_STATE);
  assert_int_equal(sp_handler_wait_acks(f.h, 1, 1, f.now + SP_SECONDS,
                                        on_wait, &f, f.now),
                   SP_ERR_INVALID_STATE);
  assert_int_equal(sp_node_stream_data(f.node, p_id, &f.P, (uint8_t *)"x", 1,
                                       f.now),
                   SP_ERR_NOT_FOUND);
  /* A new stream is refused. */
  f.nev = 0;
  id = open_in(&f, &f.Q);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.Q, &m);
  expect_refusal(&f, id, &f.Q, SP_ERR_STALE_EPOCH);
  /* It does not dial followers any more. */
  assert_int_equal(sp_node_handle_expiry(f.node, f.now + 60 * SP_SECONDS), 0);
  {
    size_t i;
    for (i = 0; i < f.nopens; ++i) {
      assert_false(sp_uuid_equal(&f.opens[i].lib, &f.lib));
    }
  }
  fx_free(&f);
}

/* An Error frame with a higher epoch its claim proves fences the leader
 * too (a newer leader refusing this one's dial). */
static void test_leader_steps_down_on_error_frame(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  f.leader = f.P;
  id = open_in(&f, &f.P);
  m = mk(SP_MSG_ERROR, &f.lib, LEADER_EPOCH + 5);
  m.u.error.code = SP_ERR_STALE_EPOCH;
  m.u.error.message = "fenced";
  m.u.error.message_len = 6;
  m.u.error.has_claim = 1;
  assert_int_equal(sp_leader_claim_sign(&m.u.error.claim, f.id_p, &f.lib,
                                        LEADER_EPOCH + 5),
                   0);
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 1);
  assert_int_equal(find_ev(&f, SP_EVENT_STEPPED_DOWN)->epoch,
                   LEADER_EPOCH + 5);
  assert_true(sp_uuid_equal(&find_ev(&f, SP_EVENT_STEPPED_DOWN)->leader,
                            &f.P));
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_STALE_EPOCH);
  assert_int_equal(sp_handler_notify_new_entries(f.h, 1, 1, f.now),
                   SP_ERR_INVALID_STATE);
  fx_free(&f);
}

/* An epoch above the leader's that no valid claim proves deposes nobody:
 * a frame is refused SP_ERR_UNPROVEN_EPOCH (a bare epoch, a claim whose
 * signature does not verify, a claim for a lower epoch, a good claim the
 * registry cannot vouch for as its key lookup fails), an Error frame only
 * closes its stream; the leader leads on. */
static void test_leader_unproven_epoch(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;
  frames fr;
  int round;

  static const char *const why[4] = {
      ("asserted epoch 4 above ours (3) without a valid leadership claim: "
       "no claim"),
      "signature does not verify", "its claim is not above ours",
      "registry failed"};

  (void)state;
  fx_leader(&f);
  f.leader = f.P; /* P may lead: each claim fails for its own reason */
  lsnap_take(&f, &s);
  for (round = 0; round < 4; ++round) {
    f.nev = 0;
    f.key_fail = round == 3;
    id = open_in(&f, &f.P);
    m = mk_hb(&f.lib, LEADER_EPOCH + 1, 0, SP_ROLE_FOLLOWER);
    if (round > 0) {
      m.u.heartbeat.has_features = 1;
      m.u.heartbeat.features = SP_FEATURE_CLAIMS;
      m.u.heartbeat.has_claim = 1;
      assert_int_equal(
          sp_leader_claim_sign(&m.u.heartbeat.claim, f.id_p, &f.lib,
                               round == 2 ? LEADER_EPOCH : LEADER_EPOCH + 1),
          0);
      if (round == 1) {
        m.u.heartbeat.claim.signature[7] ^= 0x01;
      }
    }
    f.nlogs = 0;
    inject_msg(&f, id, &f.P, &m);
    expect_refusal(&f, id, &f.P, SP_ERR_UNPROVEN_EPOCH);
    assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);
    assert_true(logged(&f, why[round]));
    lsnap_same(&f, &s);
  }
  f.key_fail = 0;
  f.nev = 0;
  id = open_in(&f, &f.P);
  m = mk(SP_MSG_ERROR, &f.lib, LEADER_EPOCH + 5);
  m.u.error.code = SP_ERR_STALE_EPOCH;
  m.u.error.message = "fenced";
  m.u.error.message_len = 6;
  inject_msg(&f, id, &f.P, &m);
  assert_int_equal(cs(&f, id)->close_calls, 1);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_PEER_ERROR);
  read_all(&f, id, &fr);
  assert_int_equal(fr.n, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);
  lsnap_same(&f, &s);
  fx_free(&f);
}

/* A Heartbeat as a follower at `epoch` that reads claims, carrying P's
 * claim for `claim_epoch`. */
static sp_msg claim_hb(fx *f, uint64_t epoch, uint64_t claim_epoch) {
  sp_msg m = mk_hb(&f->lib, epoch, 0, SP_ROLE_FOLLOWER);

  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_CLAIMS;
  m.u.heartbeat.has_claim = 1;
  assert_int_equal(sp_leader_claim_sign(&m.u.heartbeat.claim, f->id_p,
                                        &f->lib, claim_epoch),
                   0);
  return m;
}

/* A claim above the leader's epoch that is not valid refuses the stream
 * (UNPROVEN_EPOCH) even when the frame's own epoch is not raised: no
 * stream goes on buying a signature check and a log line per frame.  An
 * Error frame carrying one only closes its stream.  (No may_lead, and the
 * registry names this node: P may not lead.) */
static void test_leader_invalid_claim_any_epoch(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;
  frames fr;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  /* As the first frame of a stream. */
  id = open_in(&f, &f.Q);
  m = claim_hb(&f, LEADER_EPOCH, 99);
  inject_msg(&f, id, &f.Q, &m);
  expect_refusal(&f, id, &f.Q, SP_ERR_UNPROVEN_EPOCH);
  assert_true(logged(&f, "refused a leadership claim for epoch 99 by"));
  assert_true(logged(&f, "not the registry's leader (no may_lead)"));
  lsnap_same(&f, &s);
  /* On a stream that is syncing, at an epoch below the leader's. */
  f.nev = 0;
  f.nlogs = 0;
  id = open_in(&f, &f.Q);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.Q, &m);
  m = claim_hb(&f, LEADER_EPOCH - 1, 99);
  inject_msg(&f, id, &f.Q, &m);
  expect_refusal(&f, id, &f.Q, SP_ERR_UNPROVEN_EPOCH);
  assert_true(logged(&f, "refused a leadership claim for epoch 99 by"));
  /* An Error frame: closed, nothing answers it. */
  f.nev = 0;
  f.nlogs = 0;
  id = open_in(&f, &f.Q);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.Q, &m);
  skip_all(&f, id);
  m = mk(SP_MSG_ERROR, &f.lib, LEADER_EPOCH);
  m.u.error.code = SP_ERR_STALE_EPOCH;
  m.u.error.message = "fenced";
  m.u.error.message_len = 6;
  m.u.error.has_claim = 1;
  assert_int_equal(
      sp_leader_claim_sign(&m.u.error.claim, f.id_p, &f.lib, 99), 0);
  inject_msg(&f, id, &f.Q, &m);
  assert_int_equal(cs(&f, id)->close_calls, 1);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_PEER_ERROR);
  read_all(&f, id, &fr);
  assert_int_equal(fr.n, 0);
  assert_true(logged(&f, "refused a leadership claim for epoch 99 by"));
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);
  lsnap_same(&f, &s);
  fx_free(&f);
}

/* P's claim for LEADER_EPOCH + 1 from Q is refused UNPROVEN_EPOCH, and
 * the log says `why`. */
static void claim_refused(fx *f, const char *why) {
  uint64_t id;
  sp_msg m;

  f->nev = 0;
  f->nlogs = 0;
  id = open_in(f, &f->Q);
  m = claim_hb(f, LEADER_EPOCH + 1, LEADER_EPOCH + 1);
  inject_msg(f, id, &f->Q, &m);
  expect_refusal(f, id, &f->Q, SP_ERR_UNPROVEN_EPOCH);
  assert_true(logged(f, why));
  assert_int_equal(count_ev(f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);
}

/* The registry's part of a claim: NOT_FOUND is its "no"; any other
 * failure of is_member, leader or may_lead makes the claim invalid too
 * ("registry failed", fail closed).  Without may_lead only the device
 * the registry's leader callback names may lead; with it, may_lead
 * decides. */
static void test_leader_claim_registry_answers(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  f.leader = f.P;
  f.member_fail_p = SP_ERR_IO;
  claim_refused(&f, "registry failed");
  f.member_fail_p = SP_ERR_NOT_FOUND;
  claim_refused(&f, "not a member");
  f.member_fail_p = 0;
  f.leader_fail = SP_ERR_IO;
  claim_refused(&f, "registry failed");
  f.leader_fail = SP_ERR_NOT_FOUND;
  claim_refused(&f, "not the registry's leader (no may_lead)");
  f.leader_fail = 0;
  f.leader = f.Q; /* another device is the named leader */
  claim_refused(&f, "not the registry's leader (no may_lead)");
  fx_free(&f);

  fx_may_lead = 1;
  fx_leader(&f);
  fx_may_lead = 0;
  f.leader = f.self; /* may_lead decides, not the named leader */
  f.may_lead_p = 1;
  f.may_lead_fail_p = SP_ERR_IO;
  claim_refused(&f, "registry failed");
  f.may_lead_fail_p = SP_ERR_NOT_FOUND;
  claim_refused(&f, "may not lead");
  f.may_lead_fail_p = 0;
  f.may_lead_p = 0;
  claim_refused(&f, "may not lead");
  f.may_lead_p = 1;
  id = open_in(&f, &f.Q);
  m = claim_hb(&f, LEADER_EPOCH + 1, LEADER_EPOCH + 1);
  inject_msg(&f, id, &f.Q, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 1);
  fx_free(&f);
}

/* After stepping down: the handler takes newer claims (it relays the
 * newest proof), drops another device's claim the registry no longer
 * backs when the host says the registry changed, and refuses to lead at
 * an epoch another device's held claim already proved. */
static void test_leader_claims_after_step_down(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;
  sp_leader_claim c;
  sp_handler_status hs;

  (void)state;
  fx_leader(&f);
  f.leader = f.P;
  id = open_in(&f, &f.Q);
  m = claim_hb(&f, LEADER_EPOCH + 2, LEADER_EPOCH + 2);
  inject_msg(&f, id, &f.Q, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 1);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), 0);
  assert_int_equal(c.epoch, LEADER_EPOCH + 2);
  assert_true(sp_uuid_equal(&c.leader, &f.P));

  /* A term at or below P's proven epoch: refused, nothing changes. */
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, LEADER_EPOCH + 1, f.now),
      SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, LEADER_EPOCH + 2, f.now),
      SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_get_status(f.h, &hs), 0);
  assert_true(hs.stepped_down);
  assert_int_equal(hs.epoch, LEADER_EPOCH);

  /* A newer claim on a new stream: the stream is refused (this leader
   * stepped down), the claim is kept; an older one changes nothing. */
  f.nev = 0;
  id = open_in(&f, &f.Q);
  m = claim_hb(&f, LEADER_EPOCH + 4, LEADER_EPOCH + 4);
  inject_msg(&f, id, &f.Q, &m);
  expect_refusal(&f, id, &f.Q, SP_ERR_STALE_EPOCH);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), 0);
  assert_int_equal(c.epoch, LEADER_EPOCH + 4);
  f.nev = 0;
  id = open_in(&f, &f.Q);
  m = claim_hb(&f, LEADER_EPOCH + 3, LEADER_EPOCH + 3);
  inject_msg(&f, id, &f.Q, &m);
  expect_refusal(&f, id, &f.Q, SP_ERR_STALE_EPOCH);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), 0);
  assert_int_equal(c.epoch, LEADER_EPOCH + 4);
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);

  /* The registry still names P: the claim stays.  Then it names this
   * node again: the claim it no longer backs is dropped. */
  assert_int_equal(sp_handler_registry_changed(f.h, f.now), 0);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), 0);
  f.leader = f.self;
  f.nlogs = 0;
  assert_int_equal(sp_handler_registry_changed(f.h, f.now), 0);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), SP_ERR_NOT_FOUND);
  assert_true(logged(&f, "dropped the held leadership claim for epoch 7"));

  /* A new term signs its own claim, which no registry change drops. */
  assert_int_equal(
      sp_handler_set_role(f.h, SP_ROLE_LEADER, LEADER_EPOCH + 8, f.now), 0);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), 0);
  assert_int_equal(c.epoch, LEADER_EPOCH + 8);
  assert_true(sp_uuid_equal(&c.leader, &f.self));
  f.leader = f.P;
  assert_int_equal(sp_handler_registry_changed(f.h, f.now), 0);
  assert_int_equal(sp_handler_leader_claim(f.h, &c), 0);
  assert_int_equal(c.epoch, LEADER_EPOCH + 8);
  fx_free(&f);
}

/* A Heartbeat with role leader at a higher epoch and no claim (a new
 * leader's seed-shaped opening Heartbeat): refused, with a log line of
 * its own that does not read as a forgery. */
static void test_leader_unproven_leader(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  m = mk_hb(&f.lib, LEADER_EPOCH + 1, 0, SP_ROLE_LEADER);
  inject_msg(&f, id, &f.P, &m);
  expect_refusal(&f, id, &f.P, SP_ERR_UNPROVEN_EPOCH);
  assert_true(logged(&f, "is a leader at epoch 4 that proves nothing (ours "
                         "is 3): if it is the new leader, this one must be "
                         "demoted by its host"));
  assert_false(logged(&f, "asserted epoch"));
  assert_int_equal(count_ev(&f, SP_EVENT_STEPPED_DOWN, ANY_CODE), 0);
  fx_free(&f);
}

static void expect_sync_required(fx *f, uint64_t id, sp_sync_reason reason,
                                 sp_seq follower_seq) {
  sp_msg r;
  const rec_event *e;

  assert_true(read_frame(f, id, &r));
  assert_int_equal(r.type, SP_MSG_SYNC_REQUIRED);
  assert_true(sp_uuid_equal(&r.library_id, &f->lib));
  assert_int_equal(r.epoch, LEADER_EPOCH);
  assert_int_equal(r.u.sync_required.reason, reason);
  assert_int_equal(r.u.sync_required.leader_latest, LOG_LEN);
  assert_int_equal(r.u.sync_required.leader_oldest, 1);
  assert_int_equal(r.u.sync_required.follower_sequence, follower_seq);
  /* Nothing is served after it (a NewEntries may follow: the leader
   * announces its latest on every stream). */
  while (read_frame(f, id, &r)) {
    assert_int_not_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
    assert_int_not_equal(r.type, SP_MSG_ERROR);
  }
  assert_int_equal(cs(f, id)->close_calls, 0); /* not an error */
  assert_int_equal(count_ev(f, SP_EVENT_ERROR, ANY_CODE), 0);
  e = find_ev(f, SP_EVENT_SYNC_REQUIRED_SENT);
  assert_non_null(e);
  assert_int_equal(e->sync_reason, reason);
  assert_int_equal(e->leader_latest, LOG_LEN);
  assert_int_equal(e->leader_oldest, 1);
  assert_int_equal(e->follower_sequence, follower_seq);
}

static void test_leader_divergence(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;
  uint8_t hash[SP_HASH_LEN];
  sp_follower_progress p;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  assert_int_equal(f.inner.hash_at(3, hash, f.inner.user_data), 0);
  hash[7] ^= 0x01;
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 3, 10, hash);
  inject_msg(&f, id, &f.P, &m);
  expect_sync_required(&f, id, SP_SYNC_DIVERGENCE, 3);
  /* A diverged resume point is not an acknowledgement. */
  assert_int_equal(sp_handler_follower_progress(f.h, &f.P, f.now, &p), 0);
  assert_false(p.has_acked);
  assert_int_equal(p.acked_sequence, 0);
  lsnap_same(&f, &s);
  /* The right hash at the same point is served (and counts as an ack). */
  assert_int_equal(f.inner.hash_at(3, hash, f.inner.user_data), 0);
  id = open_in(&f, &f.Q);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 3, 10, hash);
  inject_msg(&f, id, &f.Q, &m);
  {
    sp_msg r;
    assert_true(read_frame(&f, id, &r));
    assert_int_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
    assert_int_equal(r.u.entries_response.since_sequence, 3);
    assert_int_equal(r.u.entries_response.entry_count, 2);
  }
  assert_int_equal(sp_handler_follower_progress(f.h, &f.Q, f.now, &p), 0);
  assert_true(p.has_acked);
  assert_int_equal(p.acked_sequence, 3);
  fx_free(&f);
}

static void test_leader_fetch_ahead(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, LOG_LEN + 4, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  expect_sync_required(&f, id, SP_SYNC_AHEAD_OF_LEADER, LOG_LEN + 4);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_heartbeat_ahead(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  lsnap_take(&f, &s);
  id = open_in(&f, &f.P);
  m = mk_hb(&f.lib, LEADER_EPOCH, LOG_LEN + 1, SP_ROLE_FOLLOWER);
  inject_msg(&f, id, &f.P, &m);
  expect_sync_required(&f, id, SP_SYNC_AHEAD_OF_LEADER, LOG_LEN + 1);
  /* At the leader's latest it is fine. */
  f.nev = 0;
  id = open_in(&f, &f.Q);
  m = mk_hb(&f.lib, LEADER_EPOCH, LOG_LEN, SP_ROLE_FOLLOWER);
  inject_msg(&f, id, &f.Q, &m);
  {
    sp_msg r;
    while (read_frame(&f, id, &r)) {
      assert_int_not_equal(r.type, SP_MSG_SYNC_REQUIRED);
      assert_int_not_equal(r.type, SP_MSG_ERROR);
    }
  }
  assert_int_equal(cs(&f, id)->close_calls, 0);
  assert_int_equal(count_ev(&f, SP_EVENT_SYNC_REQUIRED_SENT, ANY_CODE), 0);
  lsnap_same(&f, &s);
  fx_free(&f);
}

static void test_leader_peer_error(void **state) {
  static fx f;
  lsnap s;
  uint64_t id;
  sp_msg m, r;
  const rec_event *e;
  size_t before;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  assert_true(read_frame(&f, id, &r));
  before = cs(&f, id)->len;
  lsnap_take(&f, &s);
  m = mk(SP_MSG_ERROR, &f.lib, LEADER_EPOCH);
  m.u.error.code = SP_ERR_CHAIN_MISMATCH;
  m.u.error.message = "chain broke";
  m.u.error.message_len = 11;
  inject_msg(&f, id, &f.P, &m);
  e = find_ev(&f, SP_EVENT_ERROR);
  assert_non_null(e);
  assert_int_equal(e->code, SP_ERR_CHAIN_MISMATCH);
  assert_string_equal(e->message, "chain broke");
  assert_true(sp_uuid_equal(&e->peer, &f.P));
  assert_int_equal(cs(&f, id)->close_calls, 1);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_PEER_ERROR);
  assert_int_equal(cs(&f, id)->len, before); /* nothing sent back */
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_LOST, SP_ERR_PEER_ERROR), 1);
  lsnap_same(&f, &s);
  /* As the first frame of a stream: same, and no PEER_CONNECTED. */
  f.nev = 0;
  id = open_in(&f, &f.Q);
  m.u.error.code = SP_ERR_NOT_LEADER;
  inject_msg(&f, id, &f.Q, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_NOT_LEADER), 1);
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_CONNECTED, ANY_CODE), 0);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_PEER_ERROR);
  assert_int_equal(cs(&f, id)->len, 0);
  fx_free(&f);
}

/* A FetchEntries fed one byte at a time is handled exactly like the whole
 * frame: the same EntriesResponse, byte for byte. */
static void test_leader_split_bytes(void **state) {
  static fx f;
  uint64_t a, b;
  uint8_t buf[256], hash[SP_HASH_LEN];
  size_t n, i;
  sp_msg m, r;
  sp_entry e;

  (void)state;
  fx_leader(&f);
  memset(hash, 0, sizeof(hash));
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 100, hash);
  n = enc(&m, buf, sizeof(buf));
  a = open_in(&f, &f.P);
  b = open_in(&f, &f.Q);
  for (i = 0; i < n; ++i) {
    assert_int_equal(cs(&f, a)->len, 0);
    inject(&f, a, &f.P, buf + i, 1);
  }
  inject(&f, b, &f.Q, buf, n);
  assert_true(cs(&f, a)->len > 0);
  assert_int_equal(cs(&f, a)->len, cs(&f, b)->len);
  assert_memory_equal(cs(&f, a)->buf, cs(&f, b)->buf, cs(&f, a)->len);

  assert_true(read_frame(&f, a, &r));
  assert_int_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
  assert_int_equal(r.epoch, LEADER_EPOCH);
  assert_int_equal(r.u.entries_response.since_sequence, 0);
  assert_int_equal(r.u.entries_response.through_sequence, LOG_LEN);
  assert_false(r.u.entries_response.has_more);
  assert_int_equal(r.u.entries_response.leader_latest, LOG_LEN);
  assert_int_equal(r.u.entries_response.entry_count, LOG_LEN);
  assert_int_equal(r.u.entries_response.last_hash_len, SP_HASH_LEN);
  assert_int_equal(f.inner.hash_at(LOG_LEN, hash, f.inner.user_data), 0);
  assert_memory_equal(r.u.entries_response.last_hash, hash, SP_HASH_LEN);
  for (i = 0; i < LOG_LEN; ++i) {
    const sp_entry *x = &r.u.entries_response.entries[i];
    assert_int_equal(sp_mem_store_get(f.store, i + 1, &e, NULL), 0);
    assert_int_equal(x->sequence, i + 1);
    assert_int_equal(x->data_len, e.data_len);
    assert_memory_equal(x->data, e.data, e.data_len);
  }
  assert_false(read_frame(&f, a, &r));
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, ANY_CODE), 0);
  fx_free(&f);
}

/* Malformed bodies of every decode-band kind, each refused with its own
 * code (the rest of the catalogue). */
static void test_leader_decode_band(void **state) {
  static fx f;
  uint8_t body[2048];
  size_t n;
  int k;

  (void)state;
  fx_leader(&f);
  for (k = 0; k < 11; ++k) {
    int code;
    uint64_t id = open_in(&f, &f.P);
    n = 0;
#define HEAD(cnt, type)                                                        \
  do {                                                                         \
    body[n++] = (uint8_t)(0x90 | (cnt));                                       \
    body[n++] = (type);                                                        \
    body[n++] = 0xc4;                                                          \
    body[n++] = 16;                                                            \
    memcpy(body + n, f.lib.bytes, 16);                                         \
    n += 16;                                                                   \
    body[n++] = LEADER_EPOCH;                                                  \
  } while (0)
    switch (k) {
    case 0: /* ack whose sequence is cut: uint64 header, 2 of 8 bytes */
      HEAD(4, SP_MSG_ACKNOWLEDGE);
      body[n++] = 0xcf;
      body[n++] = 0;
      body[n++] = 0;
      code = SP_ERR_TRUNCATED;
      break;
    case 1: /* fetch with only 4 of 6 elements */
      body[n++] = 0x94;
      body[n++] = SP_MSG_FETCH_ENTRIES;
      body[n++] = 0xc4;
      body[n++] = 16;
      memcpy(body + n, f.lib.bytes, 16);
      n += 16;
      body[n++] = LEADER_EPOCH;
      body[n++] = 0;
      code = SP_ERR_MISSING_FIELD;
      break;
    case 2: /* 15-byte library id */
      body[n++] = 0x94;
      body[n++] = SP_MSG_ACKNOWLEDGE;
      body[n++] = 0xc4;
      body[n++] = 15;
      memset(body + n, 0x11, 15);
      n += 15;
      body[n++] = LEADER_EPOCH;
      body[n++] = 0;
      code = SP_ERR_UUID_LENGTH;
      break;
    case 3: /* heartbeat with role 2 */
      HEAD(5, SP_MSG_HEARTBEAT);
      body[n++] = 0;
      body[n++] = 2;
      code = SP_ERR_ENUM_RANGE;
      break;
    case 4: /* fetch since_hash of 5 bytes */
      HEAD(6, SP_MSG_FETCH_ENTRIES);
      body[n++] = 0;
      body[n++] = 10;
      body[n++] = 0xc4;
      body[n++] = 5;
      memset(body + n, 0, 5);
      n += 5;
      code = SP_ERR_HASH_LENGTH;
      break;
    case 5: /* Error code beyond int32 */
      HEAD(5, SP_MSG_ERROR);
      body[n++] = 0xce;
      body[n++] = 0x80;
      body[n++] = 0;
      body[n++] = 0;
      body[n++] = 0;
      body[n++] = 0xa0;
      code = SP_ERR_INT_RANGE;
      break;
    case 6: /* Error message of 1025 bytes */
      HEAD(5, SP_MSG_ERROR);
      body[n++] = 0xd0;
      body[n++] = (uint8_t)-1;
      body[n++] = 0xda;
      body[n++] = 0x04;
      body[n++] = 0x01;
      memset(body + n, 'a', 1025);
      n += 1025;
      code = SP_ERR_OVERSIZE;
      break;
    case 7: /* Error message not UTF-8 */
      HEAD(5, SP_MSG_ERROR);
      body[n++] = 0xd0;
      body[n++] = (uint8_t)-1;
      body[n++] = 0xa2;
      body[n++] = 0xc3;
      body[n++] = 0x28;
      code = SP_ERR_UTF8;
      break;
    case 8: { /* an unknown trailing element nested 40 deep */
      int d;
      HEAD(5, SP_MSG_ACKNOWLEDGE);
      body[n++] = 0;
      for (d = 0; d < 40; ++d) {
        body[n++] = 0x91;
      }
      body[n++] = 0xc0;
      code = SP_ERR_NESTING;
      break;
    }
    case 9: /* page with through < since */
      HEAD(9, SP_MSG_ENTRIES_RESPONSE);
      body[n++] = 5;
      body[n++] = 0x90;
      body[n++] = 4;
      body[n++] = 0xc2;
      body[n++] = 5;
      body[n++] = 0xc4;
      body[n++] = 0;
      code = SP_ERR_ENTRY_ORDER;
      break;
    default: { /* empty frame: prefix 0 */
      static const uint8_t zero[4] = {0, 0, 0, 0};
      inject(&f, id, &f.P, zero, sizeof(zero));
      expect_refusal(&f, id, &f.P, SP_ERR_EMPTY_FRAME);
      continue;
    }
    }
#undef HEAD
    inject_body(&f, id, &f.P, body, n);
    expect_refusal(&f, id, &f.P, code);
  }
  /* None of it reached a session. */
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_CONNECTED, ANY_CODE), 0);
  fx_free(&f);
}

/* ======================================================================
 * Follower side
 * ====================================================================== */

/* The stream the follower opened to its leader. */
static uint64_t leader_stream(fx *f) {
  assert_true(f->nopens >= 1);
  return f->opens[f->nopens - 1].id;
}

/* A follower's first frame on a stream to its leader: the Heartbeat with
 * its features (every handler reads claims), without a claim while it
 * holds none. */
static void expect_features_hb(fx *f, uint64_t id) {
  sp_msg r;

  assert_true(read_frame(f, id, &r));
  assert_int_equal(r.type, SP_MSG_HEARTBEAT);
  assert_int_equal(r.u.heartbeat.role, SP_ROLE_FOLLOWER);
  assert_true(r.u.heartbeat.has_features);
  assert_true(r.u.heartbeat.features & SP_FEATURE_CLAIMS);
  assert_false(r.u.heartbeat.has_claim);
}

typedef struct page {
  sp_entry e[LOG_LEN];
  sp_msg msg;
} page;

/* The page (since, through] of `ref`, chained from zeros with
 * sp_chain_next (and checked against the reference store's hashes). */
static void build_page(fx *f, page *pg, sp_seq since, sp_seq through,
                       int has_more, sp_seq latest) {
  uint8_t h[SP_HASH_LEN];
  sp_seq s;
  size_t k = 0;

  memset(pg, 0, sizeof(*pg));
  memset(h, 0, sizeof(h));
  for (s = 1; s <= through; ++s) {
    sp_entry e;
    uint8_t want[SP_HASH_LEN];
    assert_int_equal(sp_mem_store_get(f->ref, s, &e, want), 0);
    assert_int_equal(sp_chain_next(h, &e, h), 0);
    assert_memory_equal(h, want, SP_HASH_LEN);
    if (s > since) {
      pg->e[k++] = e;
    }
  }
  pg->msg = mk(SP_MSG_ENTRIES_RESPONSE, &f->lib, FOLLOWER_EPOCH);
  pg->msg.u.entries_response.since_sequence = since;
  pg->msg.u.entries_response.through_sequence = through;
  pg->msg.u.entries_response.has_more = has_more;
  pg->msg.u.entries_response.leader_latest = latest;
  pg->msg.u.entries_response.entries = k ? pg->e : NULL;
  pg->msg.u.entries_response.entry_count = k;
  if (k) {
    memcpy(pg->msg.u.entries_response.last_hash, h, SP_HASH_LEN);
    pg->msg.u.entries_response.last_hash_len = SP_HASH_LEN;
  }
}

static void test_follower_opens_and_fetches(void **state) {
  static fx f;
  sp_msg r;
  uint8_t zero[SP_HASH_LEN] = {0};
  uint64_t id;

  (void)state;
  fx_follower(&f);
  assert_int_equal(f.nopens, 1);
  assert_true(sp_uuid_equal(&f.opens[0].peer, &f.X));
  assert_true(sp_uuid_equal(&f.opens[0].lib, &f.lib));
  id = leader_stream(&f);
  expect_features_hb(&f, id);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_FETCH_ENTRIES);
  assert_true(sp_uuid_equal(&r.library_id, &f.lib));
  assert_int_equal(r.epoch, FOLLOWER_EPOCH);
  assert_int_equal(r.u.fetch_entries.since_sequence, 0);
  assert_int_equal(r.u.fetch_entries.limit, 1024);
  assert_int_equal(r.u.fetch_entries.since_hash_len, SP_HASH_LEN);
  assert_memory_equal(r.u.fetch_entries.since_hash, zero, SP_HASH_LEN);
  assert_false(read_frame(&f, id, &r));
  fx_free(&f);

  /* A follower with entries resumes with its head hash. */
  {
    sp_store vt;
    sp_handler_config hc;
    uint8_t h3[SP_HASH_LEN];
    fx_base(&f);
    f.members[0] = f.self;
    f.members[1] = f.X;
    f.nmembers = 2;
    f.leader = f.X;
    append_log(f.ref, LOG_LEN, &f.X);
    append_log(f.store, 3, &f.X);
    assert_int_equal(sp_mem_store_get(f.ref, 3, &(sp_entry){0}, h3), 0);
    store_vtable(&f, &vt);
    sp_handler_config_default(&hc);
    hc.library_id = f.lib;
    hc.role = SP_ROLE_FOLLOWER;
    hc.fetch_limit = 77;
    assert_int_equal(sp_handler_new(&f.h, f.node, &hc, &vt, f.now), 0);
    id = leader_stream(&f);
    expect_features_hb(&f, id);
    assert_true(read_frame(&f, id, &r));
    assert_int_equal(r.type, SP_MSG_FETCH_ENTRIES);
    assert_int_equal(r.u.fetch_entries.since_sequence, 3);
    assert_int_equal(r.u.fetch_entries.limit, 77);
    assert_int_equal(r.u.fetch_entries.since_hash_len, SP_HASH_LEN);
    assert_memory_equal(r.u.fetch_entries.since_hash, h3, SP_HASH_LEN);
    fx_free(&f);
  }
}

static void test_follower_gap(void **state) {
  static fx f;
  fsnap s;
  page pg;
  uint64_t id;
  frames fr;
  sp_msg r;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  fsnap_take(&f, &s);
  build_page(&f, &pg, 3, LOG_LEN, 0, LOG_LEN);
  inject_msg(&f, id, &f.X, &pg.msg);
  fsnap_same(&f, &s);
  assert_int_equal(cs(&f, id)->close_calls, 1);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_GAP);
  read_all(&f, id, &fr);
  assert_int_equal(fr.n, 0); /* closed, no Error frame */
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_LOST, SP_ERR_GAP), 1);
  assert_int_equal(count_ev(&f, SP_EVENT_ENTRIES_APPLIED, ANY_CODE), 0);
  /* It reconnects and resumes from its durable position. */
  assert_int_equal(sp_node_handle_expiry(f.node, f.now + SP_SECONDS), 0);
  assert_int_equal(f.nopens, 2);
  id = leader_stream(&f);
  expect_features_hb(&f, id);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_FETCH_ENTRIES);
  assert_int_equal(r.u.fetch_entries.since_sequence, 0);
  fx_free(&f);
}

static void test_follower_chain_mismatch(void **state) {
  static fx f;
  fsnap s;
  page pg;
  uint64_t id;
  const rec_event *e;
  sp_handler_status st;
  sp_msg m;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  fsnap_take(&f, &s);
  build_page(&f, &pg, 0, 3, 1, LOG_LEN);
  pg.msg.u.entries_response.last_hash[9] ^= 0x80;
  inject_msg(&f, id, &f.X, &pg.msg);
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.X, SP_ERR_CHAIN_MISMATCH);
  e = find_ev(&f, SP_EVENT_SYNC_REQUIRED_RECEIVED);
  assert_non_null(e);
  assert_int_equal(e->sync_reason, SP_SYNC_DIVERGENCE);
  assert_int_equal(e->follower_sequence, 0);
  assert_int_equal(sp_handler_get_status(f.h, &st), 0);
  assert_true(st.sync_required);
  assert_int_equal(st.sequence, 0);
  /* Stopped: no reconnect, nothing fetched, even after NewEntries would
   * have come. */
  assert_int_equal(sp_node_handle_expiry(f.node, f.now + 5 * SP_SECONDS), 0);
  assert_int_equal(f.nopens, 1);
  /* Entries whose content was altered (hash consistent with nothing) are
   * caught the same way on a fresh follower. */
  fx_free(&f);
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  fsnap_take(&f, &s);
  build_page(&f, &pg, 0, 3, 0, 3);
  {
    uint8_t other[13];
    memcpy(other, pg.e[1].data, pg.e[1].data_len);
    other[0] ^= 1;
    pg.e[1].data = other;
    m = pg.msg;
    inject_msg(&f, id, &f.X, &m);
  }
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.X, SP_ERR_CHAIN_MISMATCH);
  fx_free(&f);
}

static void test_follower_hash_missing(void **state) {
  static fx f;
  fsnap s;
  page pg;
  uint64_t id;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  fsnap_take(&f, &s);
  build_page(&f, &pg, 0, 3, 0, 3);
  pg.msg.u.entries_response.last_hash_len = 0;
  inject_msg(&f, id, &f.X, &pg.msg);
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.X, SP_ERR_HASH_LENGTH);
  assert_int_equal(count_ev(&f, SP_EVENT_SYNC_REQUIRED_RECEIVED, ANY_CODE), 0);
  fx_free(&f);
}

/* A correct page is applied and acknowledged; its duplicate is skipped. */
static void test_follower_apply_and_duplicate(void **state) {
  static fx f;
  fsnap s;
  page pg;
  uint64_t id;
  sp_msg r;
  sp_store_state st;
  uint8_t h3[SP_HASH_LEN];
  const rec_event *e;
  size_t len;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  build_page(&f, &pg, 0, 3, 0, 3);
  memcpy(h3, pg.msg.u.entries_response.last_hash, SP_HASH_LEN);
  inject_msg(&f, id, &f.X, &pg.msg);
  assert_int_equal(f.inner.state(&st, f.inner.user_data), 0);
  assert_int_equal(st.applied, 3);
  assert_memory_equal(st.head_hash, h3, SP_HASH_LEN);
  assert_int_equal(st.epoch, FOLLOWER_EPOCH);
  assert_int_equal(f.entries_applied, 3);
  e = find_ev(&f, SP_EVENT_ENTRIES_APPLIED);
  assert_non_null(e);
  assert_int_equal(e->from, 0); /* (0, 3] */
  assert_int_equal(e->to, 3);
  assert_int_equal(count_ev(&f, SP_EVENT_CAUGHT_UP, ANY_CODE), 1);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_ACKNOWLEDGE);
  assert_int_equal(r.u.acknowledge.up_to_sequence, 3);
  assert_int_equal(r.epoch, FOLLOWER_EPOCH);
  assert_false(read_frame(&f, id, &r));

  /* The same page again: nothing. */
  fsnap_take(&f, &s);
  f.nev = 0;
  len = cs(&f, id)->len;
  inject_msg(&f, id, &f.X, &pg.msg);
  fsnap_same(&f, &s);
  assert_int_equal(f.nev, 0);
  assert_int_equal(cs(&f, id)->len, len);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  /* A page overlapping nothing new, (0, 2], likewise. */
  build_page(&f, &pg, 0, 2, 0, 3);
  inject_msg(&f, id, &f.X, &pg.msg);
  fsnap_same(&f, &s);
  assert_int_equal(f.nev, 0);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  /* The next page still applies on the same stream. */
  build_page(&f, &pg, 3, LOG_LEN, 0, LOG_LEN);
  inject_msg(&f, id, &f.X, &pg.msg);
  assert_int_equal(f.inner.state(&st, f.inner.user_data), 0);
  assert_int_equal(st.applied, LOG_LEN);
  assert_int_equal(f.entries_applied, LOG_LEN);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_ACKNOWLEDGE);
  assert_int_equal(r.u.acknowledge.up_to_sequence, LOG_LEN);
  fx_free(&f);
}

static void test_follower_stale_epoch(void **state) {
  static fx f;
  fsnap s;
  page pg;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  fsnap_take(&f, &s);
  m = mk_hb(&f.lib, FOLLOWER_EPOCH - 1, LOG_LEN, SP_ROLE_LEADER);
  inject_msg(&f, id, &f.X, &m);
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.X, SP_ERR_STALE_EPOCH);
  fx_free(&f);
  /* A page from the fenced epoch is not applied either. */
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  fsnap_take(&f, &s);
  build_page(&f, &pg, 0, 3, 0, 3);
  pg.msg.epoch = FOLLOWER_EPOCH - 1;
  inject_msg(&f, id, &f.X, &pg.msg);
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.X, SP_ERR_STALE_EPOCH);
  fx_free(&f);
}

/* The leader's SyncRequired (about follower sequence 0) on stream `id`. */
static void inject_sync_required(fx *f, uint64_t id, sp_sync_reason reason,
                                 sp_seq latest, sp_seq oldest) {
  sp_msg m = mk(SP_MSG_SYNC_REQUIRED, &f->lib, FOLLOWER_EPOCH);

  m.u.sync_required.reason = reason;
  m.u.sync_required.leader_latest = latest;
  m.u.sync_required.leader_oldest = oldest;
  m.u.sync_required.follower_sequence = 0;
  inject_msg(f, id, &f->X, &m);
}

/* While a full sync is pending the host owns the store: a frame from the
 * leader with a higher epoch is not recorded in it (the host may be
 * replacing the store, with an epoch the handler has not read yet; found
 * by fuzz_follower, regress-epoch-during-full-sync).  resync_done then
 * takes the store's epoch. */
static void test_follower_epoch_during_full_sync(void **state) {
  static fx f;
  fsnap s;
  uint64_t id;
  sp_msg m;
  sp_handler_status st;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  inject_sync_required(&f, id, SP_SYNC_DIVERGENCE, LOG_LEN, 1);
  assert_int_equal(sp_handler_get_status(f.h, &st), 0);
  assert_true(st.sync_required);

  fsnap_take(&f, &s);
  m = mk_hb(&f.lib, FOLLOWER_EPOCH + 3, LOG_LEN, SP_ROLE_LEADER);
  inject_msg(&f, id, &f.X, &m);
  fsnap_same(&f, &s);
  assert_int_equal(cs(&f, id)->close_calls, 0);

  /* The host's full sync recorded a newer epoch still. */
  assert_int_equal(f.inner.apply(NULL, NULL, 0, FOLLOWER_EPOCH + 5,
                                 f.inner.user_data),
                   0);
  assert_int_equal(sp_handler_resync_done(f.h, f.now), 0);
  assert_int_equal(sp_handler_epoch(f.h), FOLLOWER_EPOCH + 5);
  fx_free(&f);
}

static void test_follower_wrong_role(void **state) {
  static fx f;
  fsnap s;
  uint64_t id;
  sp_msg m;
  int k;

  (void)state;
  for (k = 0; k < 3; ++k) {
    fx_follower(&f);
    id = leader_stream(&f);
    skip_all(&f, id);
    fsnap_take(&f, &s);
    if (k == 0) {
      m = mk_fetch(&f.lib, FOLLOWER_EPOCH, 0, 10, NULL);
    } else if (k == 1) {
      m = mk_ack(&f.lib, FOLLOWER_EPOCH, 0);
    } else {
      /* The "leader" says it is a follower. */
      m = mk_hb(&f.lib, FOLLOWER_EPOCH, 0, SP_ROLE_FOLLOWER);
    }
    inject_msg(&f, id, &f.X, &m);
    fsnap_same(&f, &s);
    expect_refusal(&f, id, &f.X, SP_ERR_WRONG_ROLE);
    fx_free(&f);
  }
}

/* A device the registry does not name as leader may not serve entries. */
static void test_follower_not_leader(void **state) {
  static fx f;
  fsnap s;
  uint64_t own, id;
  sp_msg m;
  page pg;

  (void)state;
  fx_follower(&f);
  own = leader_stream(&f);
  skip_all(&f, own);
  fsnap_take(&f, &s);
  id = open_in(&f, &f.Y);
  m = mk_hb(&f.lib, FOLLOWER_EPOCH + 1, LOG_LEN, SP_ROLE_LEADER);
  inject_msg(&f, id, &f.Y, &m);
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.Y, SP_ERR_NOT_LEADER);
  /* Pages straight away are refused too. */
  f.nev = 0;
  id = open_in(&f, &f.Y);
  build_page(&f, &pg, 0, 3, 0, 3);
  inject_msg(&f, id, &f.Y, &pg.msg);
  fsnap_same(&f, &s);
  expect_refusal(&f, id, &f.Y, SP_ERR_NOT_LEADER);
  /* The follower's own stream to the leader is untouched. */
  assert_int_equal(cs(&f, own)->close_calls, 0);
  fx_free(&f);
}

static int on_request(sp_handler *h, int status, sp_seq applied, void *ud) {
  (void)h;
  (void)status;
  (void)applied;
  (void)ud;
  fail_msg("no request may complete here");
  return 0;
}

static void test_follower_sync_required(void **state) {
  static fx f;
  uint64_t id, id2;
  sp_msg m, r;
  const rec_event *e;
  sp_handler_status st;
  uint8_t h5[SP_HASH_LEN];

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  inject_sync_required(&f, id, SP_SYNC_BEHIND_RETENTION, 100, 50);
  e = find_ev(&f, SP_EVENT_SYNC_REQUIRED_RECEIVED);
  assert_non_null(e);
  assert_int_equal(e->sync_reason, SP_SYNC_BEHIND_RETENTION);
  assert_int_equal(e->leader_latest, 100);
  assert_int_equal(e->leader_oldest, 50);
  assert_int_equal(e->follower_sequence, 0);
  assert_int_equal(sp_handler_get_status(f.h, &st), 0);
  assert_true(st.sync_required);
  /* NewEntries does not restart fetching. */
  m = mk(SP_MSG_NEW_ENTRIES, &f.lib, FOLLOWER_EPOCH);
  m.u.new_entries.from_sequence = 1;
  m.u.new_entries.to_sequence = 110;
  m.u.new_entries.entry_count = 110;
  inject_msg(&f, id, &f.X, &m);
  assert_int_equal(sp_node_handle_expiry(f.node, f.now + SP_SECONDS), 0);
  while (read_frame(&f, id, &r)) {
    assert_int_not_equal(r.type, SP_MSG_FETCH_ENTRIES);
  }
  assert_int_equal(f.nopens, 1);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  /* No explicit request while stopped either. */
  assert_int_equal(sp_handler_request_entries(f.h, 0, on_request, &f, f.now),
                   SP_ERR_INVALID_STATE);
  /* The host's full sync, then resume: a fresh stream from the new
   * position, the old one closed cleanly. */
  assert_int_equal(sp_mem_store_copy_from(f.store, f.ref), 0);
  assert_int_equal(f.inner.hash_at(LOG_LEN, h5, f.inner.user_data), 0);
  f.now += SP_SECONDS;
  assert_int_equal(sp_handler_resync_done(f.h, f.now), 0);
  assert_int_equal(cs(&f, id)->close_calls, 1);
  assert_int_equal(cs(&f, id)->close_code, 0);
  assert_int_equal(f.nopens, 2);
  id2 = leader_stream(&f);
  assert_true(id2 != id);
  assert_true(sp_uuid_equal(&f.opens[1].peer, &f.X));
  expect_features_hb(&f, id2);
  assert_true(read_frame(&f, id2, &r));
  assert_int_equal(r.type, SP_MSG_FETCH_ENTRIES);
  assert_int_equal(r.u.fetch_entries.since_sequence, LOG_LEN);
  assert_int_equal(r.u.fetch_entries.since_hash_len, SP_HASH_LEN);
  assert_memory_equal(r.u.fetch_entries.since_hash, h5, SP_HASH_LEN);
  assert_int_equal(sp_handler_get_status(f.h, &st), 0);
  assert_false(st.sync_required);
  assert_int_equal(st.sequence, LOG_LEN);
  assert_int_equal(sp_handler_resync_done(f.h, f.now), SP_ERR_INVALID_STATE);
  fx_free(&f);
}

static void test_follower_peer_error(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  skip_all(&f, id);
  m = mk(SP_MSG_ERROR, &f.lib, FOLLOWER_EPOCH);
  m.u.error.code = SP_ERR_FETCH_LIMIT;
  m.u.error.message = "no";
  m.u.error.message_len = 2;
  inject_msg(&f, id, &f.X, &m);
  assert_int_equal(count_ev(&f, SP_EVENT_ERROR, SP_ERR_FETCH_LIMIT), 1);
  assert_int_equal(cs(&f, id)->close_code, SP_ERR_PEER_ERROR);
  assert_int_equal(cs(&f, id)->len, cs(&f, id)->rd); /* nothing sent back */
  /* Reconnects. */
  assert_int_equal(sp_node_handle_expiry(f.node, f.now + SP_SECONDS), 0);
  assert_int_equal(f.nopens, 2);
  fx_free(&f);
}

/* ======================================================================
 * Liveness: bytes are not frames
 * ====================================================================== */

/*
 * After a last complete frame at `start`, the peer declares a 60000-byte
 * frame and trickles 10 bytes of it every 20 s, forever.  A stream that has
 * carried no complete frame for the heartbeat timeout (3 x 30 s) is dead
 * whatever bytes still arrive: it must close with SP_ERR_PEER_TIMEOUT.
 */
static void trickle(fx *f, uint64_t id, const sp_uuid *peer) {
  static const uint8_t prefix[4] = {0x00, 0x00, 0xea, 0x60};
  static const uint8_t junk[10] = {0};
  const sp_tstamp start = f->now;
  sp_tstamp t;

  inject(f, id, peer, prefix, sizeof(prefix));
  for (t = start; t <= start + 300 * SP_SECONDS; t += 20 * SP_SECONDS) {
    f->now = t;
    assert_int_equal(sp_node_handle_expiry(f->node, t), 0);
    if (cs(f, id)->close_calls) {
      break;
    }
    inject(f, id, peer, junk, sizeof(junk));
  }
  print_message("trickled stream %s after %llu s\n",
                cs(f, id)->close_calls ? "closed" : "still open",
                (unsigned long long)((f->now - start) / SP_SECONDS));
  assert_int_equal(cs(f, id)->close_calls, 1);
  assert_int_equal(cs(f, id)->close_code, SP_ERR_PEER_TIMEOUT);
  assert_true(f->now - start <= 90 * SP_SECONDS + 20 * SP_SECONDS);
}

static void test_leader_partial_frame_times_out(void **state) {
  static fx f;
  uint64_t id;
  sp_msg m, r;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  assert_true(read_frame(&f, id, &r));
  trickle(&f, id, &f.P);
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_LOST, SP_ERR_PEER_TIMEOUT), 1);
  fx_free(&f);
}

static void test_follower_partial_frame_times_out(void **state) {
  static fx f;
  page pg;
  uint64_t id;

  (void)state;
  fx_follower(&f);
  id = leader_stream(&f);
  build_page(&f, &pg, 0, LOG_LEN, 0, LOG_LEN);
  inject_msg(&f, id, &f.X, &pg.msg); /* caught up: no fetch outstanding */
  skip_all(&f, id);
  trickle(&f, id, &f.X);
  /* ...and it reconnects. */
  assert_int_equal(sp_node_handle_expiry(f.node, f.now + SP_SECONDS), 0);
  assert_int_equal(f.nopens, 2);
  fx_free(&f);
}

/* ======================================================================
 * Transport contract
 * ====================================================================== */

static void test_transport_wrong_peer(void **state) {
  static fx f;
  uint64_t id;
  uint8_t buf[256];
  size_t n;
  sp_msg m, r;

  (void)state;
  fx_leader(&f);
  id = open_in(&f, &f.P);
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  n = enc(&m, buf, sizeof(buf));
  assert_int_equal(sp_node_stream_data(f.node, id, &f.Q, buf, n, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  /* Half a frame from the wrong peer is not read either. */
  assert_int_equal(sp_node_stream_data(f.node, id, &f.Q, buf, 3, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_writable(f.node, id, &f.Q, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_closed(f.node, id, &f.Q, 0, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(cs(&f, id)->len, 0);
  assert_int_equal(cs(&f, id)->close_calls, 0);
  assert_int_equal(f.nev, 0);
  /* The stream is intact: the right peer's frame is served. */
  inject(&f, id, &f.P, buf, n);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
  assert_int_equal(r.u.entries_response.entry_count, LOG_LEN);
  /* NULL arguments. */
  assert_int_equal(sp_node_stream_data(NULL, id, &f.P, buf, n, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_data(f.node, id, NULL, buf, n, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_data(f.node, id, &f.P, NULL, 3, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_opened(NULL, 77, &f.P, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_opened(f.node, 77, NULL, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_writable(NULL, id, &f.P, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_node_stream_closed(NULL, id, &f.P, 0, f.now),
                   SP_ERR_INVALID_ARGUMENT);
  /* Empty data is fine. */
  assert_int_equal(sp_node_stream_data(f.node, id, &f.P, NULL, 0, f.now), 0);
  fx_free(&f);
}

static void test_transport_unknown_and_duplicate_ids(void **state) {
  static fx f;
  uint64_t id;
  uint8_t b = 0;
  sp_msg m, r;

  (void)state;
  fx_leader(&f);
  assert_int_equal(sp_node_stream_data(f.node, 4242, &f.P, &b, 1, f.now),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_writable(f.node, 4242, &f.P, f.now),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_closed(f.node, 4242, &f.P, 0, f.now),
                   SP_ERR_NOT_FOUND);
  id = open_in(&f, &f.P);
  assert_int_equal(sp_node_stream_opened(f.node, id, &f.P, f.now),
                   SP_ERR_EXISTS);
  assert_int_equal(sp_node_stream_opened(f.node, id, &f.Q, f.now),
                   SP_ERR_EXISTS);
  /* The original is unharmed. */
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, id, &f.P, &m);
  assert_true(read_frame(&f, id, &r));
  assert_int_equal(r.type, SP_MSG_ENTRIES_RESPONSE);
  /* Closed by the transport: the id is forgotten, then reusable. */
  assert_int_equal(sp_node_stream_closed(f.node, id, &f.P, 0, f.now), 0);
  assert_int_equal(cs(&f, id)->close_calls, 0); /* not closed back */
  assert_int_equal(count_ev(&f, SP_EVENT_PEER_LOST, 0), 1);
  assert_int_equal(sp_node_stream_data(f.node, id, &f.P, &b, 1, f.now),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_closed(f.node, id, &f.P, 0, f.now),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_node_stream_opened(f.node, id, &f.P, f.now), 0);
  fx_free(&f);
}

/* A send that takes only part of the bytes: the rest goes out after
 * sp_node_stream_writable, byte-exact, and nothing is sent in between. */
static void test_transport_short_send(void **state) {
  static fx f;
  uint64_t a, b;
  sp_msg m;
  cap_stream *ca;
  long sends;
  int rounds = 0;

  (void)state;
  fx_leader(&f);
  a = open_in(&f, &f.P);
  b = open_in(&f, &f.Q);
  ca = cs(&f, a);
  ca->max_take = 7;
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, b, &f.Q, &m); /* the reference, in one send */
  inject_msg(&f, a, &f.P, &m);
  assert_int_equal(ca->len, 7);
  assert_int_equal(ca->sends, 1);
  /* More input while blocked sends nothing. */
  m = mk_ack(&f.lib, LEADER_EPOCH, 1);
  inject_msg(&f, a, &f.P, &m);
  inject_msg(&f, b, &f.Q, &m);
  assert_int_equal(ca->len, 7);
  assert_int_equal(ca->sends, 1);
  while (ca->len < cs(&f, b)->len) {
    size_t before = ca->len;
    sends = ca->sends;
    assert_int_equal(sp_node_stream_writable(f.node, a, &f.P, f.now), 0);
    assert_int_equal(ca->sends, sends + 1);
    assert_true(ca->len - before == 7 || ca->len == cs(&f, b)->len);
    assert_true(++rounds < 1000);
  }
  assert_int_equal(ca->len, cs(&f, b)->len);
  assert_memory_equal(ca->buf, cs(&f, b)->buf, ca->len);
  /* Writable with nothing pending sends nothing. */
  sends = ca->sends;
  assert_int_equal(sp_node_stream_writable(f.node, a, &f.P, f.now), 0);
  assert_int_equal(ca->sends, sends);
  assert_int_equal(ca->close_calls, 0);
  fx_free(&f);
}

/* A stream closed while the transport holds part of a frame is not
 * closed cleanly: a clean end would hand the peer a frame cut short. */
static void test_transport_close_inside_frame(void **state) {
  static fx f;
  uint64_t a, a2, b, b2;
  sp_msg m;

  (void)state;
  fx_leader(&f);
  a = open_in(&f, &f.P);
  b = open_in(&f, &f.Q);
  cs(&f, a)->max_take = 7;
  m = mk_fetch(&f.lib, LEADER_EPOCH, 0, 10, NULL);
  inject_msg(&f, a, &f.P, &m);
  inject_msg(&f, b, &f.Q, &m);
  assert_int_equal(cs(&f, a)->len, 7);
  /* Each follower opens a new stream, which replaces its old one. */
  a2 = open_in(&f, &f.P);
  b2 = open_in(&f, &f.Q);
  inject_msg(&f, a2, &f.P, &m);
  inject_msg(&f, b2, &f.Q, &m);
  assert_int_equal(cs(&f, a)->close_calls, 1);
  assert_int_equal(cs(&f, a)->close_code, SP_ERR_CLOSED);
  /* Everything handed over: that one ends cleanly. */
  assert_int_equal(cs(&f, b)->close_calls, 1);
  assert_int_equal(cs(&f, b)->close_code, 0);
  fx_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_leader_seed_only_follower),
      cmocka_unit_test(test_leader_malformed_msgpack),
      cmocka_unit_test(test_leader_wrong_type),
      cmocka_unit_test(test_leader_frame_too_large),
      cmocka_unit_test(test_leader_unknown_message),
      cmocka_unit_test(test_leader_trailing_bytes),
      cmocka_unit_test(test_leader_unknown_library),
      cmocka_unit_test(test_leader_not_member),
      cmocka_unit_test(test_leader_wrong_role),
      cmocka_unit_test(test_leader_fetch_limit),
      cmocka_unit_test(test_leader_ack_beyond),
      cmocka_unit_test(test_leader_seq_regression),
      cmocka_unit_test(test_leader_library_mismatch),
      cmocka_unit_test(test_leader_too_many_requests),
      cmocka_unit_test(test_leader_refused_peer_not_reading),
      cmocka_unit_test(test_leader_two_leaders),
      cmocka_unit_test(test_leader_steps_down),
      cmocka_unit_test(test_leader_steps_down_on_error_frame),
      cmocka_unit_test(test_leader_unproven_epoch),
      cmocka_unit_test(test_leader_invalid_claim_any_epoch),
      cmocka_unit_test(test_leader_claim_registry_answers),
      cmocka_unit_test(test_leader_claims_after_step_down),
      cmocka_unit_test(test_leader_unproven_leader),
      cmocka_unit_test(test_leader_divergence),
      cmocka_unit_test(test_leader_fetch_ahead),
      cmocka_unit_test(test_leader_heartbeat_ahead),
      cmocka_unit_test(test_leader_peer_error),
      cmocka_unit_test(test_leader_split_bytes),
      cmocka_unit_test(test_leader_decode_band),
      cmocka_unit_test(test_follower_opens_and_fetches),
      cmocka_unit_test(test_follower_gap),
      cmocka_unit_test(test_follower_chain_mismatch),
      cmocka_unit_test(test_follower_hash_missing),
      cmocka_unit_test(test_follower_apply_and_duplicate),
      cmocka_unit_test(test_follower_stale_epoch),
      cmocka_unit_test(test_follower_epoch_during_full_sync),
      cmocka_unit_test(test_follower_wrong_role),
      cmocka_unit_test(test_follower_not_leader),
      cmocka_unit_test(test_follower_sync_required),
      cmocka_unit_test(test_follower_peer_error),
      cmocka_unit_test(test_leader_partial_frame_times_out),
      cmocka_unit_test(test_follower_partial_frame_times_out),
      cmocka_unit_test(test_transport_wrong_peer),
      cmocka_unit_test(test_transport_unknown_and_duplicate_ids),
      cmocka_unit_test(test_transport_short_send),
      cmocka_unit_test(test_transport_close_inside_frame),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftovers);
}
