/*
 * sp_recover_test.c: a follower with a snapshot sink recovers from
 * SyncRequired by itself, from a leader with a snapshot source (issue
 * 13): real handlers on the in-memory transport, real mem stores.
 *
 * The test's source serializes a frozen copy of the leader's log (what a
 * host's catalogue would be); the test's sink reassembles the bytes and,
 * on commit, installs the frozen copy whose serialization they are (with
 * sp_mem_store_copy_from, the full sync of the mem store): a sink that
 * got other bytes installs nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"
#include "sp_snapshot.h"

#define MS SP_MILLISECONDS
#define MINUTES (60u * SP_SECONDS)
#define HOURS (60u * MINUTES)
#define LIB 0
#define LEADER 0
#define F1 1

#define CHUNK 256u
#define WINDOW 4u
#define PAD 6000u
#define MAX_IMGS 64

/* ---- the test's source: frozen copies of the leader's log ---- */

typedef struct img {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  sp_mem_store *store;
  uint8_t *bytes;
  size_t len;
  sp_snapshot_desc desc;
} img;

typedef struct src_ctx {
  sp_mem_store *log;
  img imgs[MAX_IMGS];
  int nimg;
  int opens, reopens, closes, forgets;
  /* Report a hash at S that is not the log's (lie 1), or an S the log
   * pruned with a made-up hash (lie 2: nothing to compare it with). */
  int lie;
  /* Flip a byte of the next `corrupt` reads covering `corrupt_at`, once
   * `corrupt_armed` (after the manifest went out: serving, not hashing). */
  int corrupt, corrupt_armed;
  uint64_t corrupt_at;
} src_ctx;

static void put64(uint8_t **p, uint64_t v) {
  int i;

  for (i = 0; i < 8; ++i) {
    *(*p)++ = (uint8_t)(v >> (56 - 8 * i));
  }
}

/* The bytes of a frozen log: its position, then every retained entry
 * with its link, then filler so that the snapshot spans many chunks. */
static void serialize(img *m) {
  sp_store vt;
  sp_log_bounds b;
  sp_seq seq;
  size_t cap = 64 + PAD;
  uint8_t *p;

  sp_mem_store_get_vtable(m->store, &vt);
  assert_int_equal(vt.bounds(&b, vt.user_data), 0);
  for (seq = b.pruned_through + 1; seq <= b.latest; ++seq) {
    sp_entry e;
    if (sp_mem_store_get(m->store, seq, &e, NULL) == 0) {
      cap += 8 + SP_HASH_LEN + 4 + e.data_len;
    }
  }
  m->bytes = malloc(cap);
  assert_non_null(m->bytes);
  p = m->bytes;
  memcpy(p, "SPTS", 4);
  p += 4;
  put64(&p, m->desc.sequence);
  memcpy(p, m->desc.hash_at, SP_HASH_LEN);
  p += SP_HASH_LEN;
  put64(&p, m->desc.epoch);
  put64(&p, b.pruned_through);
  for (seq = b.pruned_through + 1; seq <= b.latest; ++seq) {
    sp_entry e;
    uint8_t h[SP_HASH_LEN];
    if (sp_mem_store_get(m->store, seq, &e, h) != 0) {
      continue;
    }
    put64(&p, seq);
    memcpy(p, h, SP_HASH_LEN);
    p += SP_HASH_LEN;
    *p++ = (uint8_t)(e.data_len >> 24);
    *p++ = (uint8_t)(e.data_len >> 16);
    *p++ = (uint8_t)(e.data_len >> 8);
    *p++ = (uint8_t)e.data_len;
    memcpy(p, e.data, e.data_len);
    p += e.data_len;
  }
  while ((size_t)(p - m->bytes) < cap) {
    *p = (uint8_t)((p - m->bytes) * 7 + m->desc.sequence);
    ++p;
  }
  m->len = cap;
  m->desc.total_size = cap;
}

static int s_open(const uint8_t id[SP_SNAPSHOT_ID_LEN], sp_snapshot_desc *out,
                  void **handle, void *ud) {
  src_ctx *c = ud;
  img *m = NULL;
  sp_store vt;
  sp_store_state st;
  int i;

  /* A forgotten image's slot is reused. */
  for (i = 0; i < c->nimg && !m; ++i) {
    if (!c->imgs[i].store) {
      m = &c->imgs[i];
    }
  }
  if (!m) {
    assert_true(c->nimg < MAX_IMGS);
    m = &c->imgs[c->nimg++];
  }
  memset(m, 0, sizeof(*m));
  memcpy(m->id, id, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_mem_store_new(&m->store, NULL), 0);
  assert_int_equal(sp_mem_store_copy_from(m->store, c->log), 0);
  sp_mem_store_get_vtable(m->store, &vt);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  m->desc.sequence = st.applied;
  if (st.applied > 0) {
    assert_int_equal(vt.hash_at(st.applied, m->desc.hash_at, vt.user_data),
                     0);
  }
  if (c->lie) {
    m->desc.hash_at[0] ^= 0x55;
  }
  if (c->lie == 2) {
    m->desc.sequence = 40;
  }
  m->desc.epoch = st.epoch;
  serialize(m);
  c->opens++;
  *out = m->desc;
  *handle = m;
  return 0;
}

static int s_reopen(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                    sp_snapshot_desc *out, void **handle, void *ud) {
  src_ctx *c = ud;
  int i;

  for (i = 0; i < c->nimg; ++i) {
    img *m = &c->imgs[i];
    if (m->store && memcmp(m->id, id, SP_SNAPSHOT_ID_LEN) == 0) {
      c->reopens++;
      *out = m->desc;
      *handle = m;
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int s_read(void *handle, uint64_t offset, uint8_t *buf, size_t len,
                  void *ud) {
  src_ctx *c = ud;
  img *m = handle;

  assert_true(offset + len <= m->len);
  memcpy(buf, m->bytes + offset, len);
  if (c->corrupt > 0 && c->corrupt_armed && c->corrupt_at >= offset &&
      c->corrupt_at < offset + len) {
    c->corrupt--;
    buf[c->corrupt_at - offset] ^= 0x01;
  }
  return 0;
}

static void s_close(void *handle, int forget, void *ud) {
  src_ctx *c = ud;
  img *m = handle;

  c->closes++;
  if (forget) {
    c->forgets++;
    sp_mem_store_del(m->store);
    free(m->bytes);
    memset(m, 0, sizeof(*m));
  }
}

static void src_vtable(src_ctx *c, sp_snapshot_source *vt) {
  sp_snapshot_source init = SP_SNAPSHOT_SOURCE_INIT;

  *vt = init;
  vt->user_data = c;
  vt->open = s_open;
  vt->reopen = s_reopen;
  vt->read = s_read;
  vt->close = s_close;
}

static void src_free(src_ctx *c) {
  int i;

  for (i = 0; i < c->nimg; ++i) {
    sp_mem_store_del(c->imgs[i].store);
    free(c->imgs[i].bytes);
  }
  c->nimg = 0;
}

/* ---- the test's sink: chunks in memory, commit = full sync ---- */

typedef struct sink_ctx {
  sp_mem_store *log;
  src_ctx *src;
  int has_pending;
  sp_snapshot_info info;
  uint64_t have;
  uint8_t *buf;
  int begins, resumed_begins, aborts, writes, commits;
  /* Contract breaches seen (begin over another pending, out of order). */
  int breaches;
  /* Fail the next `fail_commits` commits, the next `fail_writes` writes,
   * the next `fail_aborts` aborts (nothing discarded). */
  int fail_commits, fail_writes, fail_aborts;
  /* What a failing commit returns (0: SP_ERR_STORE); commits called; the
   * snapshot the last failing commit refused. */
  int commit_rv, commit_calls;
  uint8_t refused[SP_SNAPSHOT_ID_LEN];
} sink_ctx;

static int same_info(const sp_snapshot_info *a, const sp_snapshot_info *b) {
  return memcmp(a->id, b->id, SP_SNAPSHOT_ID_LEN) == 0 &&
         a->sequence == b->sequence && a->total_size == b->total_size &&
         a->chunk_size == b->chunk_size && a->chunk_count == b->chunk_count &&
         memcmp(a->digest, b->digest, SP_HASH_LEN) == 0;
}

static int k_pending(sp_snapshot_info *info, uint64_t *have, void *ud) {
  sink_ctx *c = ud;

  if (!c->has_pending) {
    return SP_ERR_NOT_FOUND;
  }
  *info = c->info;
  *have = c->have;
  return 0;
}

static int k_begin(const sp_snapshot_info *info, uint64_t *have, void *ud) {
  sink_ctx *c = ud;

  c->begins++;
  if (c->has_pending) {
    if (!same_info(&c->info, info)) {
      c->breaches++; /* the library must abort first */
    }
    c->resumed_begins++;
    *have = c->have;
    return 0;
  }
  free(c->buf);
  c->buf = malloc(info->total_size ? info->total_size : 1);
  assert_non_null(c->buf);
  c->info = *info;
  c->have = 0;
  c->has_pending = 1;
  *have = 0;
  return 0;
}

static int k_write(uint64_t index, const uint8_t *data, size_t len,
                   void *ud) {
  sink_ctx *c = ud;

  if (!c->has_pending || index != c->have) {
    c->breaches++;
    return SP_ERR_STORE;
  }
  if (c->fail_writes > 0) {
    c->fail_writes--;
    return SP_ERR_STORE;
  }
  memcpy(c->buf + index * c->info.chunk_size, data, len);
  c->have++;
  c->writes++;
  return 0;
}

static int k_commit(void *ud) {
  sink_ctx *c = ud;
  int i;

  c->commit_calls++;
  if (c->fail_commits > 0) {
    c->fail_commits--;
    memcpy(c->refused, c->info.id, SP_SNAPSHOT_ID_LEN);
    return c->commit_rv ? c->commit_rv : SP_ERR_STORE;
  }
  if (!c->has_pending || c->have != c->info.chunk_count) {
    c->breaches++;
    return SP_ERR_STORE;
  }
  for (i = 0; i < c->src->nimg; ++i) {
    img *m = &c->src->imgs[i];
    if (m->store && m->len == c->info.total_size &&
        memcmp(m->bytes, c->buf, m->len) == 0) {
      assert_int_equal(sp_mem_store_copy_from(c->log, m->store), 0);
      c->has_pending = 0;
      c->commits++;
      return 0;
    }
  }
  c->breaches++; /* bytes no source produced */
  return SP_ERR_STORE;
}

static int k_abort(void *ud) {
  sink_ctx *c = ud;

  c->aborts++;
  if (c->fail_aborts > 0) {
    c->fail_aborts--;
    return SP_ERR_STORE;
  }
  c->has_pending = 0;
  c->have = 0;
  return 0;
}

static void sink_vtable(sink_ctx *c, sp_snapshot_sink *vt) {
  sp_snapshot_sink init = SP_SNAPSHOT_SINK_INIT;

  *vt = init;
  vt->user_data = c;
  vt->pending = k_pending;
  vt->begin = k_begin;
  vt->write_chunk = k_write;
  vt->commit = k_commit;
  vt->abort = k_abort;
}

/* ---- fixture ---- */

typedef struct fx {
  tc t;
  src_ctx src;
  sink_ctx sink;
  sp_snapshot_source src_vt;
  sp_snapshot_sink sink_vt;
  /* Follower's snapshot events. */
  long progress, installed, failed;
  int last_failed_code;
  sp_seq installed_at;
  uint64_t epoch_at_install;
  sp_snapshot_progress last;
  /* Once the follower wrote this many chunks (0: never), cut the
   * connection, or only raise cut_now (restart_leader: the test pauses
   * there to act). */
  uint64_t cut_at_chunks;
  int restart_leader;
  int cut_now;
  /* Events by type, all devices (tc counts only the first 16). */
  long ev[32];
  /* F1's requests and fetches sent when it installed; installs at any
   * sequence but `install_want` (0: any). */
  long requests_at_install, fetches_at_install;
  sp_seq install_want;
  long wrong_installs;
  /* While set, every SyncRequired to F1 is lost (a lossy stream), until
   * a page reaches it; how many were lost, pages that came meanwhile. */
  int drop_sync;
  long syncs_dropped, pages_after_drop;
  /* While set, F1's connections are cut at their first byte. */
  int hold_f1;
  sp_decoder *dec;
} fx;

static fx *g_fx;

static void on_event(tc *t, int dev, const sp_event *ev) {
  fx *f = g_fx;

  if ((int)ev->type < 32) {
    f->ev[ev->type]++;
  }
  if (dev != F1) {
    return;
  }
  switch (ev->type) {
  case SP_EVENT_SNAPSHOT_PROGRESS:
    f->progress++;
    f->last = *ev->snapshot;
    if (ev->snapshot->chunks_done == 0) {
      f->src.corrupt_armed = 1; /* the manifest is out */
    }
    if (f->cut_at_chunks && ev->snapshot->chunks_done == f->cut_at_chunks) {
      f->cut_at_chunks = 0;
      f->cut_now = 1;
    }
    break;
  case SP_EVENT_SNAPSHOT_INSTALLED: {
    sp_store vt;
    sp_store_state st;
    f->installed++;
    f->installed_at = ev->to_sequence;
    f->requests_at_install = t->dev[F1].sent.msgs[SP_MSG_SNAPSHOT_REQUEST];
    f->fetches_at_install = t->dev[F1].sent.msgs[SP_MSG_FETCH_ENTRIES];
    if (f->install_want && ev->to_sequence != f->install_want) {
      f->wrong_installs++;
    }
    /* What the log says at once, before any frame of the next stream. */
    sp_mem_store_get_vtable(t->dev[F1].store[LIB], &vt);
    assert_int_equal(vt.state(&st, vt.user_data), 0);
    assert_int_equal(st.applied, ev->to_sequence);
    f->epoch_at_install = st.epoch;
    f->last = *ev->snapshot;
    break;
  }
  case SP_EVENT_SNAPSHOT_FAILED:
    f->failed++;
    f->last_failed_code = ev->error_code;
    assert_non_null(ev->message);
    f->last = *ev->snapshot;
    break;
  default:
    break;
  }
}

/* The type of the frame a delivery carries (one a write), or -1. */
static int frame_type(fx *f, const sp_mem_delivery *d) {
  size_t body;
  sp_msg msg;

  if (!f->dec || d->len < SP_FRAME_HEADER_LEN) {
    return -1;
  }
  body = (size_t)d->data[0] << 24 | (size_t)d->data[1] << 16 |
         (size_t)d->data[2] << 8 | d->data[3];
  if (body + SP_FRAME_HEADER_LEN != d->len ||
      sp_decoder_decode(f->dec, d->data + SP_FRAME_HEADER_LEN, body, &msg) !=
          0) {
    return -1;
  }
  return (int)msg.type;
}

static int on_fault(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  fx *f = g_fx;

  if (f->cut_now && !f->restart_leader) {
    f->cut_now = 0;
    v->action = SP_MEM_CUT;
    v->keep = 0;
    return 0;
  }
  if (f->hold_f1 && (sp_uuid_equal(&d->to, &t->dev[F1].id) ||
                     sp_uuid_equal(&d->from, &t->dev[F1].id))) {
    v->action = SP_MEM_CUT;
    v->keep = 0;
    return 0;
  }
  if (f->drop_sync && sp_uuid_equal(&d->to, &t->dev[F1].id)) {
    int type = frame_type(f, d);
    if (type == SP_MSG_SYNC_REQUIRED) {
      f->syncs_dropped++;
      v->action = SP_MEM_DROP;
    } else if (type == SP_MSG_ENTRIES_RESPONSE) {
      f->pages_after_drop++;
      f->drop_sync = 0;
    }
  }
  return 0;
}

/* A leader with `n` entries, pruned through `pruned`, with the test's
 * source; a follower with an empty log (behind retention) and the test's
 * sink (`sink` 0: none). */
static int setup_without_source;

static void setup(fx *f, int n, sp_seq pruned, int sink) {
  tc *t = &f->t;

  memset(f, 0, sizeof(*f));
  g_fx = f;
  assert_int_equal(tc_init(t, 2, 1, 1 * MS, NULL), 0);
  t->on_event = on_event;
  t->fault = on_fault;
  f->src.log = t->dev[LEADER].store[LIB];
  f->sink.log = t->dev[F1].store[LIB];
  f->sink.src = &f->src;
  src_vtable(&f->src, &f->src_vt);
  sink_vtable(&f->sink, &f->sink_vt);
  if (!setup_without_source) {
    t->dev[LEADER].cfg[LIB].snapshot_source = &f->src_vt;
  }
  t->dev[LEADER].cfg[LIB].snapshot_chunk_size = CHUNK;
  if (sink) {
    t->dev[F1].cfg[LIB].snapshot_sink = &f->sink_vt;
    t->dev[F1].cfg[LIB].snapshot_window = WINDOW;
  }
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  tc_append(t, LIB, n, 100);
  if (pruned) {
    assert_int_equal(sp_mem_store_prune(f->src.log, pruned), 0);
  }
}

static void open_follower(fx *f) {
  assert_int_equal(tc_open(&f->t, F1, LIB), 0);
}

static void teardown(fx *f) {
  tc_free(&f->t);
  sp_decoder_del(f->dec);
  src_free(&f->src);
  free(f->sink.buf);
  g_fx = NULL;
}

static uint64_t chunk_count(const fx *f) {
  return f->last.chunk_count;
}

static long sent(const fx *f, int dev, sp_msg_type type) {
  return f->t.dev[dev].sent.msgs[type];
}

static uint64_t follower_epoch(fx *f) {
  sp_store vt;
  sp_store_state st;

  sp_mem_store_get_vtable(f->t.dev[F1].store[LIB], &vt);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  return st.epoch;
}

/* After an install: the leader's log grows, and the follower follows
 * incrementally from S to the leader's head, entry for entry. */
static void follows_incrementally(fx *f, sp_seq s) {
  tc *t = &f->t;
  long applied = t->dev[F1].counts.applied_entries;

  assert_int_equal(tc_applied(t, F1, LIB), s);
  tc_append(t, LIB, 10, 50);
  assert_true(tc_converge(t, LIB, 10 * SP_SECONDS));
  assert_int_equal(tc_applied(t, F1, LIB), s + 10);
  assert_int_equal(t->dev[F1].counts.applied_entries - applied, 10);
  assert_true(tc_is_prefix(t, F1, LIB));
  assert_int_equal(t->fatal, 0);
}

/* ---- tests ---- */

/* The whole path: SyncRequired, manifest, every chunk verified into the
 * sink, the binding checked, commit, then incremental sync from S. */
static void test_install_then_incremental(void **state) {
  fx f;
  sp_snapshot_progress p;
  sp_handler_status hs;
  sp_seq floor;
  sp_follower_progress fp;

  (void)state;
  setup(&f, 60, 50, 1);
  open_follower(&f);
  /* The handlers copied the vtables. */
  memset(&f.src_vt, 0, sizeof(f.src_vt));
  memset(&f.sink_vt, 0, sizeof(f.sink_vt));
  tc_run_for(&f.t, 5 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 60);
  assert_int_equal(f.failed, 0);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(f.t.dev[F1].counts.last_sync_reason,
                   SP_SYNC_BEHIND_RETENTION);
  assert_true(chunk_count(&f) > 2 * WINDOW);
  /* One progress event per chunk, one for the manifest. */
  assert_int_equal(f.progress, (long)chunk_count(&f) + 1);
  assert_int_equal(f.sink.commits, 1);
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.sink.breaches, 0);
  assert_int_equal(sent(&f, LEADER, SP_MSG_SNAPSHOT_CHUNK),
                   (long)chunk_count(&f));
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 1);
  assert_int_equal(sent(&f, LEADER, SP_MSG_SNAPSHOT_MANIFEST), 1);
  assert_int_equal(f.src.opens, 1);
  /* Nothing was acknowledged for a log not yet installed. */
  assert_int_equal(sp_handler_snapshot_status(f.t.dev[F1].h[LIB], &p), 0);
  assert_int_equal(p.state, SP_SNAPSHOT_INSTALLED);
  assert_int_equal(p.sequence, 60);
  assert_int_equal(p.chunks_done, p.chunk_count);
  assert_int_equal(p.bytes_done, p.bytes_total);
  assert_int_equal(p.restarts, 0);
  assert_int_equal(sp_handler_get_status(f.t.dev[F1].h[LIB], &hs), 0);
  assert_int_equal(hs.sync_required, 0);
  assert_int_equal(hs.sequence, 60);
  /* A leader has no snapshot status. */
  assert_int_equal(sp_handler_snapshot_status(f.t.dev[LEADER].h[LIB], &p),
                   SP_ERR_NOT_FOUND);
  follows_incrementally(&f, 60);
  assert_int_equal(f.installed, 1);
  /* While the snapshot stays open (for others to resume), its S's link
   * is pinned for the host's pruning though the follower acked 70; once
   * it expired, the acks alone hold the floor. */
  tc_run_for(&f.t, 1 * SP_SECONDS);
  assert_int_equal(sp_handler_follower_progress(f.t.dev[LEADER].h[LIB],
                                                &f.t.dev[F1].id, f.t.now,
                                                &fp),
                   0);
  assert_int_equal(fp.acked_sequence, 70);
  assert_int_equal(sp_handler_retention_floor(f.t.dev[LEADER].h[LIB], &floor),
                   0);
  assert_int_equal(floor, 60);
  tc_run_for(&f.t, 11 * MINUTES);
  assert_int_equal(f.src.forgets, 1);
  assert_int_equal(sp_handler_retention_floor(f.t.dev[LEADER].h[LIB], &floor),
                   0);
  assert_int_equal(floor, 70);
  teardown(&f);
}

/* A cut mid-transfer: the next stream resumes the same snapshot from the
 * chunks the sink holds; at most the window in flight is sent twice. */
static void test_resume_after_cut(void **state) {
  fx f;

  (void)state;
  setup(&f, 60, 50, 1);
  f.cut_at_chunks = 10;
  open_follower(&f);
  tc_run_for(&f.t, 10 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.failed, 0);
  assert_true(f.last.resumes >= 1);
  assert_int_equal(f.last.restarts, 0);
  /* An interrupted recovery continues: reported once. */
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_true(f.t.dev[F1].counts.ev[SP_EVENT_PEER_LOST] >= 1);
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_true(f.sink.resumed_begins >= 1);
  assert_int_equal(f.sink.aborts, 1); /* the first begin only */
  assert_int_equal(f.sink.breaches, 0);
  assert_int_equal(f.src.opens, 1);
  assert_true(sent(&f, LEADER, SP_MSG_SNAPSHOT_CHUNK) <=
              (long)(chunk_count(&f) + 2 * WINDOW));
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 2);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* A chunk that does not verify is never written: fetched again once, and
 * the transfer goes on; twice in a row restarts the snapshot. */
static void test_corrupt_chunk_refetched(void **state) {
  fx f;

  (void)state;
  setup(&f, 60, 50, 1);
  f.src.corrupt = 1;
  f.src.corrupt_at = 5 * CHUNK + 17;
  open_follower(&f);
  tc_run_for(&f.t, 5 * SP_SECONDS);
  assert_int_equal(f.src.corrupt, 0);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.last.restarts, 0);
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.sink.breaches, 0);
  assert_true(sent(&f, LEADER, SP_MSG_SNAPSHOT_CHUNK) > (long)chunk_count(&f));
  assert_true(sent(&f, F1, SP_MSG_SNAPSHOT_FETCH) >
              (long)(chunk_count(&f) / WINDOW));
  follows_incrementally(&f, 60);
  teardown(&f);

  setup(&f, 60, 50, 1);
  f.src.corrupt = 2;
  f.src.corrupt_at = 3 * CHUNK;
  open_follower(&f);
  tc_run_for(&f.t, 10 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.last.restarts, 1);
  assert_int_equal(f.src.opens, 2); /* a new snapshot after the restart */
  assert_int_equal(f.sink.breaches, 0);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* The leader restarts between chunks (a new handler on the same store
 * and source): its source reopens the snapshot by id, the recomputed
 * manifest is the same, and the follower resumes. */
static void test_leader_restart_resumes(void **state) {
  fx f;

  (void)state;
  setup(&f, 60, 50, 1);
  f.cut_at_chunks = 12;
  f.restart_leader = 1;
  open_follower(&f);
  while (!f.cut_now && f.t.now < 10 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
  }
  assert_true(f.cut_now);
  f.cut_now = 0;
  assert_int_equal(tc_restart(&f.t, LEADER), 0);
  assert_int_equal(f.src.forgets, 0); /* kept for reopen */
  tc_run_for(&f.t, 20 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.src.opens, 1);
  assert_true(f.src.reopens >= 1);
  assert_true(f.last.resumes >= 1);
  assert_int_equal(f.last.restarts, 0);
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.sink.aborts, 1);
  assert_int_equal(f.sink.breaches, 0);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* A source whose hash at S is not the log's: the leader never offers it,
 * the follower never installs anything, its restarts are bounded, it
 * reports the failure and backs off. */
static void test_lying_source_never_installed(void **state) {
  fx f;
  sp_snapshot_progress p;
  sp_handler_status hs;
  long requests;

  (void)state;
  /* At a pruned S the leader cannot compare: a new snapshot's S is the
   * log's head, which it holds, so the lie is caught all the same. */
  setup(&f, 60, 50, 1);
  f.src.lie = 2;
  open_follower(&f);
  tc_run_for(&f.t, 2 * HOURS);
  assert_true(f.src.opens > 0);
  assert_int_equal(f.installed, 0);
  assert_true(f.failed >= 1);
  assert_int_equal(f.sink.begins, 0);
  assert_int_equal(sent(&f, LEADER, SP_MSG_SNAPSHOT_MANIFEST), 0);
  assert_int_equal(tc_applied(&f.t, F1, LIB), 0);
  teardown(&f);

  setup(&f, 60, 50, 1);
  f.src.lie = 1;
  open_follower(&f);
  tc_run_for(&f.t, 2 * HOURS);
  assert_int_equal(f.installed, 0);
  assert_true(f.failed >= 1);
  assert_int_equal(f.last_failed_code, SP_ERR_SNAPSHOT_FAILED);
  assert_int_equal(f.sink.commits, 0);
  assert_int_equal(f.sink.writes, 0);
  assert_int_equal(sent(&f, LEADER, SP_MSG_SNAPSHOT_MANIFEST), 0);
  assert_int_equal(tc_applied(&f.t, F1, LIB), 0);
  assert_int_equal(sp_handler_snapshot_status(f.t.dev[F1].h[LIB], &p), 0);
  assert_true(p.restarts <= 5);
  assert_int_equal(sp_handler_get_status(f.t.dev[F1].h[LIB], &hs), 0);
  assert_int_equal(hs.sync_required, 1);
  /* No hot loop: a day later, a handful of recoveries more at most. */
  requests = sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST);
  tc_run_for(&f.t, 24 * HOURS);
  print_message("lying source: %ld requests in 2 h, %ld in the next 24 h, "
                "%ld failures\n",
                requests, sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST) - requests,
                f.failed);
  assert_true(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST) - requests <=
              8 * requests);
  assert_true(f.failed <= 14);
  assert_int_equal(f.installed, 0);
  assert_int_equal(tc_applied(&f.t, F1, LIB), 0);
  assert_int_equal(f.t.fatal, 0);
  teardown(&f);
}

/* A snapshot larger than the follower accepts: the recovery fails at once
 * (nothing begun), is tried again only after a backoff that grows, and
 * the host's own full sync still works. */
static void test_failure_backs_off(void **state) {
  fx f;
  sp_handler *h;
  long requests;

  (void)state;
  setup(&f, 60, 50, 1);
  f.t.dev[F1].cfg[LIB].snapshot_max_bytes = 100;
  open_follower(&f);
  h = f.t.dev[F1].h[LIB];
  tc_run_for(&f.t, 5 * SP_SECONDS);
  assert_int_equal(f.failed, 1);
  assert_int_equal(f.last_failed_code, SP_ERR_SNAPSHOT_TOO_LARGE);
  assert_int_equal(f.sink.begins, 0);
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 1);
  /* Within the first backoff (at least 5 minutes): nothing more. */
  tc_run_for(&f.t, 4 * MINUTES);
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 1);
  assert_int_equal(f.failed, 1);
  /* Then again, at most once per backoff, which doubles to 6 hours. */
  tc_run_for(&f.t, 24 * HOURS);
  requests = sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST);
  print_message("too large: %ld requests in 24 h\n", requests);
  /* Backoffs of at least 5, 10, 20, 40, 80, 160, then 180 minutes. */
  assert_true(requests >= 3);
  assert_true(requests <= 13);
  assert_int_equal(f.failed, requests);
  assert_int_equal(
      f.t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], requests);
  assert_int_equal(f.installed, 0);
  /* The host's full sync. */
  assert_int_equal(sp_mem_store_copy_from(f.t.dev[F1].store[LIB], f.src.log),
                   0);
  assert_int_equal(sp_handler_resync_done(h, f.t.now), 0);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* A follower without a sink, and one whose store has no write path and
 * no sink (a seed-only peer): today's SyncRequired, no snapshot message
 * either way, and resync_done works.  The seed-only peer's traffic is
 * the very traffic it has with a leader without a source. */
static void strip_writes(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)lib;
  if (dev == F1) {
    st->version = 2;
  }
}

static void test_no_sink_gets_sync_required(void **state) {
  fx f;
  sp_snapshot_progress p;
  sp_handler_status hs;
  tc_wire with[2];
  int seed;

  (void)state;
  /* 0: no sink; 1: a seed-only follower; 2: the same with a leader that
   * has no source, whose bytes the seed-only follower's must equal. */
  for (seed = 0; seed < 3; ++seed) {
    setup_without_source = seed == 2;
    setup(&f, 60, 50, 0);
    setup_without_source = 0;
    if (seed) {
      f.t.store_hook = strip_writes;
    }
    open_follower(&f);
    tc_run_for(&f.t, 10 * MINUTES);
    if (seed == 1) {
      with[0] = f.t.dev[LEADER].sent;
      with[1] = f.t.dev[F1].sent;
    } else if (seed == 2) {
      assert_int_equal(f.t.dev[LEADER].sent.bytes, with[0].bytes);
      assert_int_equal(f.t.dev[F1].sent.bytes, with[1].bytes);
      assert_memory_equal(f.t.dev[LEADER].sent.msgs, with[0].msgs,
                          sizeof(with[0].msgs));
      assert_memory_equal(f.t.dev[F1].sent.msgs, with[1].msgs,
                          sizeof(with[1].msgs));
    }
    assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED],
                     1);
    assert_int_equal(sent(&f, LEADER, SP_MSG_SYNC_REQUIRED), 1);
    assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 0);
    assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_FETCH), 0);
    assert_int_equal(sent(&f, LEADER, SP_MSG_SNAPSHOT_MANIFEST), 0);
    assert_int_equal(sent(&f, LEADER, SP_MSG_SNAPSHOT_CHUNK), 0);
    assert_int_equal(f.src.opens, 0);
    assert_int_equal(f.progress + f.installed + f.failed, 0);
    assert_int_equal(sp_handler_snapshot_status(f.t.dev[F1].h[LIB], &p),
                     SP_ERR_NOT_FOUND);
    assert_int_equal(sp_handler_get_status(f.t.dev[F1].h[LIB], &hs), 0);
    assert_int_equal(hs.sync_required, 1);
    assert_int_equal(
        sp_mem_store_copy_from(f.t.dev[F1].store[LIB], f.src.log), 0);
    assert_int_equal(sp_handler_resync_done(f.t.dev[F1].h[LIB], f.t.now), 0);
    follows_incrementally(&f, 60);
    teardown(&f);
  }
}

/* Neither store has the write path (version 2): the handlers still
 * negotiate snapshots alone, and nothing of writes goes on the wire. */
static void strip_all_writes(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)dev;
  (void)lib;
  st->version = 2;
}

static void test_without_write_path(void **state) {
  fx f;

  (void)state;
  memset(&f, 0, sizeof(f));
  g_fx = &f;
  assert_int_equal(tc_init(&f.t, 2, 1, 1 * MS, NULL), 0);
  f.t.on_event = on_event;
  f.t.store_hook = strip_all_writes;
  f.src.log = f.t.dev[LEADER].store[LIB];
  f.sink.log = f.t.dev[F1].store[LIB];
  f.sink.src = &f.src;
  src_vtable(&f.src, &f.src_vt);
  sink_vtable(&f.sink, &f.sink_vt);
  f.t.dev[LEADER].cfg[LIB].snapshot_source = &f.src_vt;
  f.t.dev[LEADER].cfg[LIB].snapshot_chunk_size = CHUNK;
  f.t.dev[F1].cfg[LIB].snapshot_sink = &f.sink_vt;
  assert_int_equal(tc_open(&f.t, LEADER, LIB), 0);
  tc_append(&f.t, LIB, 60, 100);
  assert_int_equal(sp_mem_store_prune(f.src.log, 50), 0);
  open_follower(&f);
  tc_run_for(&f.t, 5 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.sink.breaches, 0);
  assert_int_equal(sent(&f, F1, SP_MSG_PROPOSE), 0);
  assert_int_equal(sent(&f, LEADER, SP_MSG_PROPOSE_RESULT), 0);
  assert_int_equal(f.t.dev[LEADER].counts.last_error, 0);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* The leader's epoch moved past the snapshot's: the installed log records
 * the epoch the follower saw, never the older one of S. */
static void test_epoch_not_below_seen(void **state) {
  fx f;
  sp_store vt;
  sp_store_state st;

  (void)state;
  memset(&f, 0, sizeof(f));
  g_fx = &f;
  assert_int_equal(tc_init(&f.t, 2, 1, 1 * MS, NULL), 0);
  f.t.on_event = on_event;
  f.src.log = f.t.dev[LEADER].store[LIB];
  f.sink.log = f.t.dev[F1].store[LIB];
  f.sink.src = &f.src;
  src_vtable(&f.src, &f.src_vt);
  sink_vtable(&f.sink, &f.sink_vt);
  f.t.dev[LEADER].cfg[LIB].snapshot_source = &f.src_vt;
  f.t.dev[LEADER].cfg[LIB].snapshot_chunk_size = CHUNK;
  f.t.dev[F1].cfg[LIB].snapshot_sink = &f.sink_vt;
  assert_int_equal(tc_open_as(&f.t, LEADER, LIB, SP_ROLE_LEADER, 3), 0);
  tc_append(&f.t, LIB, 60, 100);
  assert_int_equal(sp_mem_store_prune(f.src.log, 50), 0);
  sp_mem_store_get_vtable(f.src.log, &vt);
  assert_int_equal(vt.state(&st, vt.user_data), 0);
  assert_true(st.epoch < 3); /* else the test shows nothing */
  open_follower(&f);
  tc_run_for(&f.t, 5 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.epoch_at_install, 3);
  assert_int_equal(follower_epoch(&f), 3);
  assert_int_equal(sp_handler_epoch(f.t.dev[F1].h[LIB]), 3);
  follows_incrementally(&f, 60);
  assert_int_equal(follower_epoch(&f), 3);
  teardown(&f);
}

/* The sink's commit fails once: the store's failure is reported, and the
 * next stream checks the binding again and commits. */
static void test_commit_failure_retried(void **state) {
  fx f;
  sp_follower_progress fp;

  (void)state;
  setup(&f, 60, 50, 1);
  f.sink.fail_commits = 2;
  open_follower(&f);
  /* The leader answers the verify fetch since S, but never credits an
   * ack for a snapshot the follower has not installed: not on the
   * transfer's stream, nor on the streams that only retry the commit. */
  while (!f.installed && f.t.now < 60 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
    assert_int_equal(sp_handler_follower_progress(f.t.dev[LEADER].h[LIB],
                                                  &f.t.dev[F1].id, f.t.now,
                                                  &fp),
                     0);
    assert_true(fp.acked_sequence <= tc_applied(&f.t, F1, LIB));
  }
  tc_run_for(&f.t, 30 * SP_SECONDS);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  assert_int_equal(f.installed, 1);
  /* Each commit came after its own check, on its own stream: the first
   * stream's request, then one naming the snapshot again per retry, and
   * per stream its resume check and the verify fetch. */
  assert_int_equal(f.requests_at_install, 3);
  assert_int_equal(f.fetches_at_install, 2 * 3);
  assert_int_equal(f.sink.commits, 1);
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.last.restarts, 0);
  assert_int_equal(f.src.opens, 1);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* The sink's commit says the verified bytes can never install
 * (SP_ERR_SNAPSHOT_CORRUPT): the follower restarts at once with a new
 * snapshot, on the same stream, and installs that one. */
static void test_commit_corrupt_restarts(void **state) {
  fx f;

  (void)state;
  setup(&f, 60, 50, 1);
  f.sink.fail_commits = 1;
  f.sink.commit_rv = SP_ERR_SNAPSHOT_CORRUPT;
  open_follower(&f);
  tc_run_for(&f.t, 10 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 60);
  assert_int_equal(f.failed, 0);
  assert_int_equal(f.sink.commit_calls, 2);
  assert_int_equal(f.sink.commits, 1);
  assert_memory_not_equal(f.sink.info.id, f.sink.refused, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(f.last.restarts, 1);
  assert_int_equal(f.src.opens, 2);
  assert_int_equal(f.sink.writes, 2 * (int)chunk_count(&f));
  assert_int_equal(f.sink.breaches, 0);
  /* Not a store failure; one stream carried both snapshots (the one
   * stream lost is the one the install closes). */
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 0);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_PEER_LOST], 1);
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 2);
  /* Progress: a manifest and every chunk, twice, and the restart. */
  assert_int_equal(f.progress, 2 * ((long)chunk_count(&f) + 1) + 1);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* A commit that never succeeds: each failure is a store failure (stream
 * closed, backoff), SP_SNAP_MAX_COMMIT_FAILS in a row restart the
 * snapshot, and the recovery ends in SNAPSHOT_FAILED after the last
 * restart, within minutes, instead of committing for ever. */
static void test_commit_never_succeeds(void **state) {
  fx f;
  sp_snapshot_progress p;
  sp_handler_status hs;
  const int snapshots = SP_SNAP_MAX_RESTARTS + 1;

  (void)state;
  setup(&f, 60, 50, 1);
  f.sink.fail_commits = 1000000;
  open_follower(&f);
  while (!f.failed && f.t.now < 1 * HOURS) {
    tc_run_for(&f.t, 1 * SP_SECONDS);
  }
  print_message("commit never succeeds: failed after %llu s\n",
                (unsigned long long)(f.t.now / SP_SECONDS));
  assert_int_equal(f.failed, 1);
  assert_int_equal(f.last_failed_code, SP_ERR_SNAPSHOT_FAILED);
  assert_int_equal(f.installed, 0);
  assert_int_equal(f.sink.commits, 0);
  assert_int_equal(f.sink.commit_calls,
                   snapshots * (int)SP_SNAP_MAX_COMMIT_FAILS);
  assert_int_equal(f.src.opens, snapshots);
  /* Every commit after the first of a snapshot comes on a new stream,
   * whose request names the snapshot again (to check it once more). */
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST),
                   snapshots * (int)SP_SNAP_MAX_COMMIT_FAILS);
  assert_int_equal(f.sink.has_pending, 0);
  assert_int_equal(f.sink.breaches, 0);
  assert_true(f.t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED] >= 1);
  assert_int_equal(sp_handler_snapshot_status(f.t.dev[F1].h[LIB], &p), 0);
  assert_int_equal(p.state, SP_SNAPSHOT_FAILED);
  assert_int_equal(p.restarts, SP_SNAP_MAX_RESTARTS);
  assert_int_equal(sp_handler_get_status(f.t.dev[F1].h[LIB], &hs), 0);
  assert_int_equal(hs.sync_required, 1);
  /* Then quiet until the failure backoff is over. */
  tc_run_for(&f.t, 4 * MINUTES);
  assert_int_equal(f.sink.commit_calls,
                   snapshots * (int)SP_SNAP_MAX_COMMIT_FAILS);
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST),
                   snapshots * (int)SP_SNAP_MAX_COMMIT_FAILS);
  assert_int_equal(tc_applied(&f.t, F1, LIB), 0);
  assert_int_equal(f.t.fatal, 0);
  teardown(&f);
}

/* The host prunes past S while the transfer runs (ignoring the
 * retention floor): the check before commit fails, nothing of that
 * snapshot is installed, and the follower restarts with a new one. */
static void test_pruned_past_s_restarts(void **state) {
  fx f;

  (void)state;
  setup(&f, 60, 50, 1);
  f.cut_at_chunks = 6;
  f.restart_leader = 1; /* pause, no cut */
  open_follower(&f);
  while (!f.cut_now && f.t.now < 10 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
  }
  assert_true(f.cut_now);
  tc_append(&f.t, LIB, 20, 100);
  assert_int_equal(sp_mem_store_prune(f.src.log, 70), 0);
  tc_run_for(&f.t, 20 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 80);
  assert_int_equal(f.last.restarts, 1);
  assert_int_equal(f.sink.commits, 1);
  assert_int_equal(f.src.opens, 2);
  assert_int_equal(f.sink.breaches, 0);
  follows_incrementally(&f, 80);
  teardown(&f);
}

/* A chunk write fails (a full disk): the store's failure episode, a
 * backoff, then the transfer resumes from what the sink holds. */
static void test_sink_write_failure_resumes(void **state) {
  fx f;

  (void)state;
  setup(&f, 60, 50, 1);
  f.sink.fail_writes = 1;
  open_follower(&f);
  tc_run_for(&f.t, 30 * SP_SECONDS);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_STORE_FAILED], 1);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_STORE_RECOVERED], 1);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.last.restarts, 0);
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.sink.aborts, 1);
  assert_int_equal(f.sink.breaches, 0);
  assert_int_equal(f.src.opens, 1);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* The host's own full sync while a transfer runs ends the recovery. */
static void test_resync_done_while_recovering(void **state) {
  fx f;
  sp_snapshot_progress p;

  (void)state;
  setup(&f, 60, 50, 1);
  f.cut_at_chunks = 3;
  f.restart_leader = 1; /* only to stop the run, no cut */
  open_follower(&f);
  while (!f.cut_now && f.t.now < 10 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
  }
  assert_true(f.cut_now);
  assert_int_equal(
      sp_mem_store_copy_from(f.t.dev[F1].store[LIB], f.src.log), 0);
  assert_int_equal(sp_handler_resync_done(f.t.dev[F1].h[LIB], f.t.now), 0);
  assert_int_equal(sp_handler_snapshot_status(f.t.dev[F1].h[LIB], &p), 0);
  assert_int_equal(p.state, SP_SNAPSHOT_IDLE);
  follows_incrementally(&f, 60);
  assert_int_equal(f.installed, 0);
  assert_int_equal(f.sink.commits, 0);
  teardown(&f);
}

/* The mem store's own source and sink (mem_store.h), end to end: the
 * leader's log image moves into the follower's store, across a leader
 * restart between chunks, and the follower then follows from S. */
static void test_mem_store_vtables(void **state) {
  fx f;
  tc *t = &f.t;
  sp_snapshot_source src;
  sp_snapshot_sink sink;
  sp_snapshot_progress p;

  (void)state;
  memset(&f, 0, sizeof(f));
  g_fx = &f;
  assert_int_equal(tc_init(t, 2, 1, 1 * MS, NULL), 0);
  t->on_event = on_event;
  sp_mem_store_snapshot_source(t->dev[LEADER].store[LIB], &src);
  sp_mem_store_snapshot_sink(t->dev[F1].store[LIB], &sink);
  t->dev[LEADER].cfg[LIB].snapshot_source = &src;
  t->dev[LEADER].cfg[LIB].snapshot_chunk_size = 512;
  t->dev[F1].cfg[LIB].snapshot_sink = &sink;
  t->dev[F1].cfg[LIB].snapshot_window = WINDOW;
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  tc_append(t, LIB, 200, 100);
  assert_int_equal(
      sp_mem_store_prune(t->dev[LEADER].store[LIB], 150), 0);
  f.cut_at_chunks = 5;
  f.restart_leader = 1;
  open_follower(&f);
  while (!f.cut_now && t->now < 10 * SP_SECONDS) {
    tc_run_for(t, 1 * MS);
  }
  assert_true(f.cut_now);
  assert_int_equal(tc_restart(t, LEADER), 0);
  tc_run_for(t, 20 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 200);
  assert_int_equal(f.failed, 0);
  assert_int_equal(sp_handler_snapshot_status(t->dev[F1].h[LIB], &p), 0);
  assert_int_equal(p.state, SP_SNAPSHOT_INSTALLED);
  assert_true(p.resumes >= 1);
  assert_int_equal(p.restarts, 0);
  assert_true(p.chunk_count > 5);
  assert_true(sent(&f, LEADER, SP_MSG_SNAPSHOT_CHUNK) <=
              (long)(p.chunk_count + 2 * WINDOW));
  follows_incrementally(&f, 200);
  teardown(&f);
}

/* A failover mid-transfer to a leader that still holds the whole log:
 * the new stream's resume check passes, the follower syncs incrementally
 * and the recovery ends without installing anything. */
static void test_failover_ends_recovery(void **state) {
  fx f;
  tc *t = &f.t;
  sp_snapshot_progress p;

  (void)state;
  memset(&f, 0, sizeof(f));
  g_fx = &f;
  assert_int_equal(tc_init(t, 3, 1, 1 * MS, NULL), 0);
  t->on_event = on_event;
  f.src.log = t->dev[LEADER].store[LIB];
  f.sink.log = t->dev[F1].store[LIB];
  f.sink.src = &f.src;
  src_vtable(&f.src, &f.src_vt);
  sink_vtable(&f.sink, &f.sink_vt);
  t->dev[LEADER].cfg[LIB].snapshot_source = &f.src_vt;
  t->dev[LEADER].cfg[LIB].snapshot_chunk_size = CHUNK;
  t->dev[F1].cfg[LIB].snapshot_sink = &f.sink_vt;
  t->dev[F1].cfg[LIB].snapshot_window = WINDOW;
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  assert_int_equal(tc_open(t, 2, LIB), 0);
  tc_append(t, LIB, 60, 100);
  assert_true(tc_converge(t, LIB, 5 * SP_SECONDS));
  assert_int_equal(sp_mem_store_prune(f.src.log, 50), 0);
  f.cut_at_chunks = 5;
  f.restart_leader = 1; /* pause */
  open_follower(&f);
  while (!f.cut_now && t->now < 10 * SP_SECONDS) {
    tc_run_for(t, 1 * MS);
  }
  assert_true(f.cut_now);
  /* Device 2 takes over at epoch 2; the old leader follows. */
  t->leader[LIB] = 2;
  assert_int_equal(sp_handler_set_role(t->dev[2].h[LIB], SP_ROLE_LEADER, 2,
                                       t->now),
                   0);
  assert_int_equal(sp_handler_set_role(t->dev[LEADER].h[LIB],
                                       SP_ROLE_FOLLOWER, 0, t->now),
                   0);
  tc_run_for(t, 10 * SP_SECONDS);
  assert_int_equal(f.installed, 0);
  assert_int_equal(f.failed, 0);
  assert_int_equal(tc_applied(t, F1, LIB), 60);
  assert_true(tc_is_prefix(t, F1, LIB));
  assert_int_equal(sp_handler_snapshot_status(t->dev[F1].h[LIB], &p), 0);
  assert_int_equal(p.state, SP_SNAPSHOT_IDLE);
  /* Nothing under way: none of the abandoned snapshot's numbers. */
  assert_int_equal(p.sequence, 0);
  assert_int_equal(p.bytes_done, 0);
  assert_int_equal(p.bytes_total, 0);
  assert_int_equal(p.chunks_done, 0);
  assert_int_equal(p.chunk_count, 0);
  /* The log moved past the sink's pending snapshot: discarded. */
  assert_int_equal(f.sink.has_pending, 0);
  assert_int_equal(f.sink.commits, 0);
  assert_int_equal(follower_epoch(&f), 2);
  /* The new leader's feature Heartbeat came while the recovery was still
   * under way (not anchored then): writes work once it served the log. */
  {
    sp_outbox_status os;
    assert_int_equal(sp_handler_outbox_status(t->dev[F1].h[LIB], &os), 0);
    assert_int_equal(os.leader_accepts, 1);
  }
  assert_int_equal(t->fatal, 0);
  teardown(&f);
}

/* W1: a commit fails (SP_ERR_STORE), then a failover to a leader whose
 * history does not run through (S, hash_at): the snapshot checked by the
 * old leader is never installed; the new leader's replaces it. */
static void test_commit_retry_checks_new_leader(void **state) {
  fx f;
  tc *t = &f.t;
  sp_follower_progress fp;

  (void)state;
  memset(&f, 0, sizeof(f));
  g_fx = &f;
  assert_int_equal(tc_init(t, 3, 1, 1 * MS, NULL), 0);
  t->on_event = on_event;
  f.src.log = t->dev[LEADER].store[LIB];
  f.sink.log = t->dev[F1].store[LIB];
  f.sink.src = &f.src;
  src_vtable(&f.src, &f.src_vt);
  sink_vtable(&f.sink, &f.sink_vt);
  t->dev[LEADER].cfg[LIB].snapshot_source = &f.src_vt;
  t->dev[LEADER].cfg[LIB].snapshot_chunk_size = CHUNK;
  t->dev[2].cfg[LIB].snapshot_source = &f.src_vt;
  t->dev[2].cfg[LIB].snapshot_chunk_size = CHUNK;
  t->dev[F1].cfg[LIB].snapshot_sink = &f.sink_vt;
  t->dev[F1].cfg[LIB].snapshot_window = WINDOW;
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
  tc_append(t, LIB, 40, 100);
  /* Device 2 holds 1..40 (pruned through 30); 41..60 never reach it. */
  assert_int_equal(
      sp_mem_store_copy_from(t->dev[2].store[LIB], f.src.log), 0);
  assert_int_equal(sp_mem_store_prune(t->dev[2].store[LIB], 30), 0);
  tc_append(t, LIB, 20, 100);
  assert_int_equal(sp_mem_store_prune(f.src.log, 50), 0);
  f.sink.fail_commits = 1;
  f.install_want = 40;
  open_follower(&f);
  while (f.sink.commit_calls == 0 && t->now < 10 * SP_SECONDS) {
    tc_run_for(t, 1 * MS);
  }
  assert_int_equal(f.sink.commit_calls, 1);
  assert_int_equal(f.installed, 0);
  /* Failover: device 2 leads at epoch 2, its snapshots of its own log. */
  tc_close(t, LEADER, LIB);
  t->leader[LIB] = 2;
  f.src.log = t->dev[2].store[LIB];
  assert_int_equal(tc_open_as(t, 2, LIB, SP_ROLE_LEADER, 2), 0);
  while (!f.installed && t->now < 60 * SP_SECONDS) {
    tc_run_for(t, 1 * MS);
    if (sp_handler_follower_progress(t->dev[2].h[LIB], &t->dev[F1].id,
                                     t->now, &fp) == 0) {
      assert_true(fp.acked_sequence <= tc_applied(t, F1, LIB));
    }
  }
  tc_run_for(t, 10 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.wrong_installs, 0);
  assert_int_equal(f.installed_at, 40);
  assert_int_equal(f.sink.commit_calls, 2);
  assert_int_equal(f.sink.commits, 1);
  assert_int_equal(f.sink.breaches, 0);
  assert_true(f.last.restarts >= 1);
  assert_int_equal(tc_applied(t, F1, LIB), 40);
  assert_int_equal(follower_epoch(&f), 2);
  assert_int_equal(t->fatal, 0);
  teardown(&f);
}

/* W2: a host request made between two streams of one recovery ends when
 * the next stream continues it, not when (or if) it installs. */
static int w2_calls, w2_status;
static long w2_installed;

static int w2_cb(sp_handler *h, int status, sp_seq applied, void *ud) {
  fx *f = ud;

  (void)h;
  (void)applied;
  w2_calls++;
  w2_status = status;
  w2_installed = f->installed;
  return 0;
}

static void test_request_between_streams_ends(void **state) {
  fx f;
  int rv = SP_ERR_INVALID_STATE;

  (void)state;
  w2_calls = w2_status = 0;
  setup(&f, 60, 50, 1);
  f.cut_at_chunks = 3;
  open_follower(&f);
  while ((f.cut_at_chunks || f.cut_now) && f.t.now < 10 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
  }
  assert_int_equal(f.cut_at_chunks, 0);
  /* Cut: until the next stream's SyncRequired the host may ask. */
  while (rv != 0 && !f.installed && f.t.now < 20 * SP_SECONDS) {
    rv = sp_handler_request_entries(f.t.dev[F1].h[LIB], 0, w2_cb, &f,
                                    f.t.now);
    if (rv != 0) {
      tc_run_for(&f.t, 1 * MS);
    }
  }
  assert_int_equal(rv, 0);
  tc_run_for(&f.t, 30 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(w2_calls, 1);
  assert_int_equal(w2_status, SP_ERR_SYNC_REQUIRED);
  assert_int_equal(w2_installed, 0);
  assert_int_equal(f.t.fatal, 0);
  teardown(&f);
}

/* W3: an epoch that rises while a recovery runs (here between two of
 * its streams) is not written until the snapshot is installed, and the
 * install (whose snapshot records an older one) does not lower it. */
static void test_epoch_held_while_recovering(void **state) {
  fx f;
  uint64_t before;

  (void)state;
  setup(&f, 60, 50, 1);
  f.cut_at_chunks = 3;
  f.restart_leader = 1; /* pause */
  open_follower(&f);
  while (!f.cut_now && f.t.now < 10 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
  }
  assert_true(f.cut_now);
  before = follower_epoch(&f);
  assert_true(before < 7);
  assert_int_equal(sp_handler_set_role(f.t.dev[LEADER].h[LIB],
                                       SP_ROLE_LEADER, 7, f.t.now),
                   0);
  f.restart_leader = 0; /* cut the stream at the next frame */
  while (!f.installed && f.t.now < 60 * SP_SECONDS) {
    tc_run_for(&f.t, 1 * MS);
    if (!f.installed) {
      assert_int_equal(follower_epoch(&f), before);
    }
  }
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.epoch_at_install, 7);
  follows_incrementally(&f, 60);
  assert_int_equal(follower_epoch(&f), 7);
  teardown(&f);
}

/* W4: a transfer cut again and again, with chunks written between the
 * cuts, reconnects as fast as the first time: progress resets the
 * reconnect backoff. */
static void test_cuts_with_progress_keep_pace(void **state) {
  fx f;
  uint64_t at = 2;

  (void)state;
  setup(&f, 60, 50, 1);
  f.t.dev[F1].cfg[LIB].reconnect_min = 1 * SP_SECONDS;
  f.t.dev[F1].cfg[LIB].reconnect_max = 60 * SP_SECONDS;
  f.cut_at_chunks = at;
  open_follower(&f);
  while (!f.installed && f.t.now < 5 * MINUTES) {
    tc_run_for(&f.t, 1 * MS);
    if (!f.cut_at_chunks && !f.cut_now && f.last.chunks_done >= at &&
        at + 2 < chunk_count(&f)) {
      at += 2;
      f.cut_at_chunks = at;
    }
  }
  print_message("%llu chunks, cut every 2: installed after %llu ms\n",
                (unsigned long long)chunk_count(&f),
                (unsigned long long)(f.t.now / MS));
  assert_int_equal(f.installed, 1);
  assert_true(f.last.resumes >= 5);
  /* Each reconnect waits about reconnect_min (1 s), not 1, 2, 4, ... */
  assert_true(f.t.now < (sp_tstamp)(3 * f.last.resumes + 5) * SP_SECONDS);
  teardown(&f);
}

/* W5: after a recovery gave up, the host's resync_done ends the failure's
 * wake: a SyncRequired that follows is the host's to handle, and no
 * stream opens by itself when the old backoff would have ended. */
static void test_resync_done_clears_wake(void **state) {
  fx f;
  long syncs;

  (void)state;
  setup(&f, 60, 50, 1);
  f.t.dev[F1].cfg[LIB].snapshot_max_bytes = 100;
  open_follower(&f);
  tc_run_for(&f.t, 5 * SP_SECONDS);
  assert_int_equal(f.failed, 1);
  /* The host gives up on a full sync too (its store unchanged). */
  assert_int_equal(sp_handler_resync_done(f.t.dev[F1].h[LIB], f.t.now), 0);
  tc_run_for(&f.t, 5 * SP_SECONDS);
  syncs = f.t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED];
  assert_int_equal(syncs, 2);
  tc_run_for(&f.t, 12 * HOURS);
  assert_int_equal(f.t.dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED],
                   syncs);
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 1);
  assert_int_equal(f.failed, 1);
  assert_int_equal(f.t.fatal, 0);
  teardown(&f);
}

/* Cut mid-transfer with some chunks in the sink, and pause there. */
static void pause_mid_transfer(fx *f, uint64_t chunks) {
  f->cut_at_chunks = chunks;
  f->restart_leader = 1; /* only to stop the run, no cut */
  open_follower(f);
  while (!f->cut_now && f->t.now < 10 * SP_SECONDS) {
    tc_run_for(&f->t, 1 * MS);
  }
  assert_true(f->cut_now);
  f->cut_now = 0;
  f->restart_leader = 0;
  assert_int_equal(f->sink.has_pending, 1);
  /* Chunks that came in the same run were written too. */
  assert_true(f->sink.have >= chunks && f->sink.have < chunk_count(f));
}

/* The follower is down while the leader's log grows past `latest` and is
 * pruned past where the follower stands: it comes back behind retention. */
static void down_while_pruned(fx *f, int more, sp_seq pruned) {
  tc_crash(&f->t, F1);
  tc_append(&f->t, LIB, more, 100);
  assert_int_equal(sp_mem_store_prune(f->src.log, pruned), 0);
  tc_notify(&f->t, LIB);
  assert_int_equal(tc_boot(&f->t, F1), 0);
  open_follower(f);
}

/* A recovery resumed on a new stream whose SyncRequired is lost, while a
 * page for one of its later (pipelined) fetches arrives: that page does
 * not follow the follower's position and is refused, and the recovery
 * goes on, on the next stream, as it was: not a new one from scratch,
 * which a lossy link could repeat for ever. */
static void test_page_refused_keeps_recovery(void **state) {
  fx f;
  tc *t = &f.t;
  sp_snapshot_progress p;

  (void)state;
  setup(&f, 60, 50, 1);
  assert_int_equal(sp_decoder_new(&f.dec, NULL), 0);
  /* Fetches since 0 and 25 are behind retention, since 50 is served. */
  t->dev[F1].cfg[LIB].fetch_limit = 25;
  f.cut_at_chunks = 3;
  open_follower(&f);
  while (f.t.dev[F1].counts.ev[SP_EVENT_PEER_LOST] == 0 &&
         t->now < 10 * SP_SECONDS) {
    tc_run_for(t, 1 * MS);
  }
  assert_true(f.sink.have >= 3 && f.sink.have < chunk_count(&f));
  f.drop_sync = 1;
  tc_run_for(t, 20 * SP_SECONDS);
  /* What the test is about did happen. */
  assert_true(f.syncs_dropped >= 1);
  assert_int_equal(f.pages_after_drop, 1);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 60);
  assert_int_equal(f.failed, 0);
  /* One recovery, continued: reported once, nothing fetched twice. */
  assert_int_equal(t->dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(sp_handler_snapshot_status(t->dev[F1].h[LIB], &p), 0);
  assert_int_equal(p.restarts, 0);
  assert_true(p.resumes >= 1);
  assert_int_equal(f.sink.aborts, 1); /* the first begin only */
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.sink.breaches, 0);
  assert_int_equal(f.src.opens, 1);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* The host's full sync ends a recovery: the sink's pending snapshot goes
 * with it, so that a much later recovery, with the leader still holding
 * that snapshot open, does not resume it and take the log back below
 * what the follower applied and acknowledged since. */
static void test_full_sync_discards_pending(void **state) {
  fx f;
  tc *t = &f.t;

  (void)state;
  setup(&f, 60, 50, 1);
  pause_mid_transfer(&f, 3);
  assert_int_equal(sp_mem_store_copy_from(t->dev[F1].store[LIB], f.src.log),
                   0);
  assert_int_equal(sp_handler_resync_done(t->dev[F1].h[LIB], t->now), 0);
  assert_int_equal(f.sink.has_pending, 0);
  assert_int_equal(f.sink.aborts, 2);
  follows_incrementally(&f, 60);
  down_while_pruned(&f, 30, 95);
  f.install_want = 100;
  tc_run_for(t, 20 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 100);
  assert_int_equal(f.wrong_installs, 0);
  assert_int_equal(f.sink.resumed_begins, 0);
  assert_int_equal(f.sink.breaches, 0);
  follows_incrementally(&f, 100);
  teardown(&f);
}

/* The sink cannot discard the abandoned snapshot at once: the next
 * recovery tries again, and until that works it names no snapshot in its
 * request, so the stale one is never resumed. */
static void test_abandoned_abort_retried(void **state) {
  fx f;
  tc *t = &f.t;

  (void)state;
  setup(&f, 60, 50, 1);
  pause_mid_transfer(&f, 3);
  assert_int_equal(sp_mem_store_copy_from(t->dev[F1].store[LIB], f.src.log),
                   0);
  /* At the full sync, then at the next recovery's start. */
  f.sink.fail_aborts = 2;
  assert_int_equal(sp_handler_resync_done(t->dev[F1].h[LIB], t->now), 0);
  assert_int_equal(f.sink.has_pending, 1);
  follows_incrementally(&f, 60);
  /* Within the handler's life (what it remembers is what counts), the
   * follower falls behind retention. */
  f.hold_f1 = 1;
  tc_append(t, LIB, 30, 100);
  assert_int_equal(sp_mem_store_prune(f.src.log, 95), 0);
  tc_notify(t, LIB);
  tc_run_for(t, 100 * MS);
  assert_int_equal(tc_applied(t, F1, LIB), 70);
  assert_int_equal(f.sink.fail_aborts, 1);
  f.hold_f1 = 0;
  f.install_want = 100;
  tc_run_for(t, 60 * SP_SECONDS);
  assert_int_equal(f.sink.fail_aborts, 0);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 100);
  assert_int_equal(f.wrong_installs, 0);
  assert_int_equal(f.sink.resumed_begins, 0);
  assert_int_equal(f.sink.breaches, 0);
  follows_incrementally(&f, 100);
  teardown(&f);
}

/* A role change ends a recovery too, and discards what the sink holds. */
static void test_role_change_discards_pending(void **state) {
  fx f;
  tc *t = &f.t;

  (void)state;
  setup(&f, 60, 50, 1);
  pause_mid_transfer(&f, 3);
  assert_int_equal(sp_handler_set_role(t->dev[F1].h[LIB], SP_ROLE_FOLLOWER,
                                       0, t->now),
                   0);
  assert_int_equal(f.sink.has_pending, 0);
  tc_run_for(t, 20 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 60);
  assert_int_equal(f.sink.resumed_begins, 0);
  assert_int_equal(f.sink.breaches, 0);
  teardown(&f);
}

/* A follower that goes down mid-transfer abandons nothing: after the
 * restart the sink's pending snapshot resumes. */
static void test_follower_restart_resumes(void **state) {
  fx f;
  tc *t = &f.t;

  (void)state;
  setup(&f, 60, 50, 1);
  pause_mid_transfer(&f, 3);
  assert_int_equal(tc_restart(t, F1), 0);
  assert_int_equal(f.sink.has_pending, 1);
  tc_run_for(t, 20 * SP_SECONDS);
  assert_int_equal(f.installed, 1);
  assert_int_equal(f.installed_at, 60);
  assert_int_equal(f.last.restarts, 0);
  assert_true(f.last.resumes >= 1);
  assert_true(f.sink.resumed_begins >= 1);
  assert_int_equal(f.sink.aborts, 1); /* the first begin only */
  assert_int_equal(f.sink.writes, (int)chunk_count(&f));
  assert_int_equal(f.sink.breaches, 0);
  follows_incrementally(&f, 60);
  teardown(&f);
}

/* Version 4 of the handler config: the vtables are checked as a
 * store's; a version-3 config knows nothing of snapshots. */
static void test_config(void **state) {
  fx f;
  tc *t = &f.t;
  sp_handler_config *c;
  sp_handler_config d;
  sp_snapshot_source bad_src;
  sp_snapshot_sink bad_sink;
  sp_handler *h;
  sp_store st;

  (void)state;
  setup(&f, 10, 5, 1);
  c = &t->dev[F1].cfg[LIB];
  sp_handler_config_default(&d);
  assert_int_equal(d.version, 4);
  assert_int_equal(d.snapshot_window, 8);
  assert_int_equal(d.snapshot_chunk_size, 256 * 1024);
  assert_int_equal(d.snapshot_max_bytes, 0);
  assert_null(d.snapshot_source);
  assert_null(d.snapshot_sink);

  bad_sink = f.sink_vt;
  c->snapshot_sink = &bad_sink;
  bad_sink.version = 0;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_VERSION);
  bad_sink.version = SP_SNAPSHOT_SINK_VERSION + 1;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_VERSION);
  bad_sink.version = SP_SNAPSHOT_SINK_VERSION;
  bad_sink.commit = NULL;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  c->snapshot_sink = &f.sink_vt;
  bad_src = f.src_vt;
  c->snapshot_source = &bad_src;
  bad_src.read = NULL;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  bad_src.read = f.src_vt.read;
  bad_src.version = 0;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_VERSION);
  c->snapshot_source = NULL;
  c->snapshot_window = 0;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  c->snapshot_window = SP_MAX_SNAPSHOT_WINDOW + 1;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  c->snapshot_window = WINDOW;
  c->snapshot_chunk_size = 0;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  c->snapshot_chunk_size = SP_SNAPSHOT_CHUNK_MAX + 1;
  assert_int_equal(tc_open(t, F1, LIB), SP_ERR_INVALID_ARGUMENT);
  assert_null(t->dev[F1].h[LIB]);

  /* Version 3: the snapshot fields are not read (here: garbage and a
   * sink): SyncRequired stops the follower as before. */
  c->snapshot_chunk_size = 0;
  c->snapshot_window = 0;
  c->snapshot_source = &bad_src;
  c->snapshot_sink = &f.sink_vt;
  c->version = 3;
  sp_mem_store_get_vtable(t->dev[F1].store[LIB], &st);
  c->role = SP_ROLE_FOLLOWER;
  assert_int_equal(
      sp_handler_new(&h, t->dev[F1].node, c, &st, t->now), 0);
  t->dev[F1].h[LIB] = h;
  tc_run_for(t, 10 * SP_SECONDS);
  assert_int_equal(t->dev[F1].counts.ev[SP_EVENT_SYNC_REQUIRED_RECEIVED], 1);
  assert_int_equal(tc_applied(t, F1, LIB), 0);
  assert_int_equal(sent(&f, F1, SP_MSG_SNAPSHOT_REQUEST), 0);
  assert_int_equal(sp_handler_snapshot_status(h, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  teardown(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_install_then_incremental),
      cmocka_unit_test(test_resume_after_cut),
      cmocka_unit_test(test_corrupt_chunk_refetched),
      cmocka_unit_test(test_leader_restart_resumes),
      cmocka_unit_test(test_lying_source_never_installed),
      cmocka_unit_test(test_failure_backs_off),
      cmocka_unit_test(test_no_sink_gets_sync_required),
      cmocka_unit_test(test_epoch_not_below_seen),
      cmocka_unit_test(test_commit_failure_retried),
      cmocka_unit_test(test_commit_corrupt_restarts),
      cmocka_unit_test(test_commit_never_succeeds),
      cmocka_unit_test(test_sink_write_failure_resumes),
      cmocka_unit_test(test_pruned_past_s_restarts),
      cmocka_unit_test(test_resync_done_while_recovering),
      cmocka_unit_test(test_failover_ends_recovery),
      cmocka_unit_test(test_mem_store_vtables),
      cmocka_unit_test(test_without_write_path),
      cmocka_unit_test(test_commit_retry_checks_new_leader),
      cmocka_unit_test(test_request_between_streams_ends),
      cmocka_unit_test(test_epoch_held_while_recovering),
      cmocka_unit_test(test_cuts_with_progress_keep_pace),
      cmocka_unit_test(test_resync_done_clears_wake),
      cmocka_unit_test(test_page_refused_keeps_recovery),
      cmocka_unit_test(test_full_sync_discards_pending),
      cmocka_unit_test(test_abandoned_abort_retried),
      cmocka_unit_test(test_role_change_discards_pending),
      cmocka_unit_test(test_follower_restart_resumes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
