/*
 * sp_snapshot_test.c: the snapshot transfer engine (src/sp_snapshot.c)
 * between a test source and a test sink, every message through the codec.
 *
 * The sink keeps what a durable sink would keep across a crash (the
 * pending manifest and the chunks written) and checks every write against
 * the source's true bytes, so a chunk written before verification fails
 * the test at once.  The driver models one ordered stream: fetches go out
 * within the window, chunks come back in order, and what was in flight
 * when the follower rewound still arrives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/sys/snapshot.h"
#include "sp_snapshot.h"
#include "sp_test_mem.h"

#define S_SEQ 10
#define S_EPOCH 3
#define CHUNK 1000u
#define TOTAL (10u * CHUNK + 500u) /* 11 chunks, the last one short */

/* ---- test source ---- */

typedef struct tsource {
  uint8_t *bytes;
  uint64_t total;
  uint8_t hash[SP_HASH_LEN];
  int with_reopen;
  /* ids the host still keeps (for reopen) */
  uint8_t kept[8][SP_SNAPSHOT_ID_LEN];
  int n_kept;
  int opens, reopens, closes, forgets, reads, fail_read;
  int open_handles;
  /* Reopen reports a hash at S other than the one the snapshot was
   * opened with (the log's history changed while the host kept it). */
  int stale_reopen;
  /* S of the next snapshot opened (0: S_SEQ). */
  sp_seq seq;
} tsource;

static uint8_t pattern(uint64_t i) { return (uint8_t)(i * 31u + (i >> 8)); }

static int src_open(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                    sp_snapshot_desc *out, void **handle, void *ud) {
  tsource *t = ud;

  ++t->opens;
  ++t->open_handles;
  memset(out, 0, sizeof(*out));
  out->sequence = t->seq ? t->seq : S_SEQ;
  memcpy(out->hash_at, t->hash, SP_HASH_LEN);
  out->epoch = S_EPOCH;
  out->total_size = t->total;
  *handle = t;
  if (t->n_kept < 8) {
    memcpy(t->kept[t->n_kept++], id, SP_SNAPSHOT_ID_LEN);
  }
  return 0;
}

static int src_reopen(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      sp_snapshot_desc *out, void **handle, void *ud) {
  tsource *t = ud;
  int i;

  for (i = 0; i < t->n_kept; ++i) {
    if (memcmp(t->kept[i], id, SP_SNAPSHOT_ID_LEN) == 0) {
      ++t->reopens;
      ++t->open_handles;
      memset(out, 0, sizeof(*out));
      out->sequence = S_SEQ;
      memcpy(out->hash_at, t->hash, SP_HASH_LEN);
      if (t->stale_reopen) {
        out->hash_at[0] ^= 0xff;
      }
      out->epoch = S_EPOCH;
      out->total_size = t->total;
      *handle = t;
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int src_read(void *handle, uint64_t offset, uint8_t *buf, size_t len,
                    void *ud) {
  tsource *t = ud;

  assert_ptr_equal(handle, t);
  assert_true(offset + len <= t->total);
  ++t->reads;
  if (t->fail_read) {
    return -1;
  }
  memcpy(buf, t->bytes + offset, len);
  return 0;
}

static void src_close(void *handle, int forget, void *ud) {
  tsource *t = ud;

  assert_ptr_equal(handle, t);
  ++t->closes;
  t->forgets += forget != 0;
  --t->open_handles;
}

static void tsource_init(tsource *t, sp_snapshot_source *vt, uint64_t total,
                         int with_reopen) {
  uint64_t i;

  memset(t, 0, sizeof(*t));
  t->total = total;
  t->bytes = malloc(total ? total : 1);
  assert_non_null(t->bytes);
  for (i = 0; i < total; ++i) {
    t->bytes[i] = pattern(i);
  }
  memset(t->hash, 0x5a, sizeof(t->hash));
  t->with_reopen = with_reopen;
  {
    sp_snapshot_source init = SP_SNAPSHOT_SOURCE_INIT;
    *vt = init;
  }
  vt->user_data = t;
  vt->open = src_open;
  vt->reopen = with_reopen ? src_reopen : NULL;
  vt->read = src_read;
  vt->close = src_close;
}

/* ---- test sink (its fields are its "disk") ---- */

typedef struct tsink {
  const tsource *truth;
  int has_pending;
  sp_snapshot_info pending;
  uint64_t have;
  uint8_t *chunks;
  /* the installed state */
  int installed;
  sp_snapshot_info state;
  uint8_t *state_bytes;
  int begins, resumed_begins, writes, commits, aborts;
  int fail_write, fail_commit;
  /* What a failing commit returns (0: -1), and commits called. */
  int commit_rv, commit_calls;
  /* Aborts with nothing pending; `trusting`: begin resumes whatever is
   * pending without comparing (the library promises it compared). */
  int idle_aborts, trusting;
} tsink;

static int sink_pending(sp_snapshot_info *info, uint64_t *have, void *ud) {
  tsink *k = ud;

  if (!k->has_pending) {
    return SP_ERR_NOT_FOUND;
  }
  *info = k->pending;
  *have = k->have;
  return 0;
}

static int sink_begin(const sp_snapshot_info *info, uint64_t *have,
                      void *ud) {
  tsink *k = ud;

  ++k->begins;
  if (k->has_pending &&
      (k->trusting || memcmp(&k->pending, info, sizeof(*info)) == 0)) {
    ++k->resumed_begins;
    *have = k->have;
    return 0;
  }
  free(k->chunks);
  k->chunks = malloc(info->total_size ? info->total_size : 1);
  assert_non_null(k->chunks);
  k->pending = *info;
  k->has_pending = 1;
  k->have = 0;
  *have = 0;
  return 0;
}

static int sink_write(uint64_t index, const uint8_t *data, size_t len,
                      void *ud) {
  tsink *k = ud;
  uint64_t off = index * k->pending.chunk_size;

  assert_true(k->has_pending);
  assert_true(index == k->have); /* in order, no gap, no rewrite */
  assert_true(off + len <= k->pending.total_size);
  /* Verified before the write: only true bytes ever land. */
  assert_memory_equal(data, k->truth->bytes + off, len);
  if (k->fail_write) {
    --k->fail_write;
    return -1;
  }
  ++k->writes;
  memcpy(k->chunks + off, data, len);
  ++k->have;
  return 0;
}

static int sink_commit(void *ud) {
  tsink *k = ud;

  assert_true(k->has_pending);
  assert_true(k->have == k->pending.chunk_count);
  ++k->commit_calls;
  if (k->fail_commit) {
    --k->fail_commit;
    return k->commit_rv ? k->commit_rv : -1;
  }
  ++k->commits;
  free(k->state_bytes);
  k->state_bytes = k->chunks;
  k->chunks = NULL;
  k->state = k->pending;
  k->installed = 1;
  k->has_pending = 0;
  k->have = 0;
  return 0;
}

static int sink_abort(void *ud) {
  tsink *k = ud;

  if (k->has_pending) {
    ++k->aborts;
  } else {
    ++k->idle_aborts;
  }
  k->has_pending = 0;
  k->have = 0;
  return 0;
}

static void tsink_init(tsink *k, sp_snapshot_sink *vt, const tsource *truth) {
  sp_snapshot_sink init = SP_SNAPSHOT_SINK_INIT;

  memset(k, 0, sizeof(*k));
  k->truth = truth;
  *vt = init;
  vt->user_data = k;
  vt->pending = sink_pending;
  vt->begin = sink_begin;
  vt->write_chunk = sink_write;
  vt->commit = sink_commit;
  vt->abort = sink_abort;
}

static void tsink_free(tsink *k) {
  free(k->chunks);
  free(k->state_bytes);
}

/* ---- the codec in between ---- */

typedef struct wire {
  sp_decoder *dec;
  uint8_t *frame;
  size_t cap;
  sp_msg msg;
} wire;

/* Encode `m`, decode it again: what the peer sees (valid until the next
 * pass through `w`). */
static const sp_msg *pass(wire *w, const sp_msg *m) {
  size_t need = sp_msg_encoded_len(m), n;

  assert_true(need > SP_FRAME_HEADER_LEN);
  if (need > w->cap) {
    w->frame = realloc(w->frame, need);
    assert_non_null(w->frame);
    w->cap = need;
  }
  assert_int_equal(sp_msg_encode(m, w->frame, w->cap, &n), 0);
  assert_int_equal(n, need);
  assert_int_equal(sp_decoder_decode(w->dec, w->frame + SP_FRAME_HEADER_LEN,
                                     n - SP_FRAME_HEADER_LEN, &w->msg),
                   0);
  assert_int_equal(w->msg.type, m->type);
  return &w->msg;
}

static void wire_init(wire *w) {
  memset(w, 0, sizeof(*w));
  assert_int_equal(sp_decoder_new(&w->dec, NULL), 0);
}

static void wire_free(wire *w) {
  sp_decoder_del(w->dec);
  free(w->frame);
}

/* ---- the driver: one ordered stream ---- */

typedef struct run_opts {
  /* Chunks delivered before the stream is cut (-1: never). */
  long cut_after;
  /* Chunk index to corrupt, and how many times (-1: every time). */
  long corrupt_index;
  long corrupt_times;
  /* What the leader's chain says at S when the follower checks. */
  int chain_ok;
} run_opts;

typedef struct run_out {
  long delivered; /* chunks delivered to the follower */
  long served[64]; /* times each chunk was served */
  int last_rv;
} run_out;

static uint8_t next_id_byte = 1;

static void new_id(uint8_t id[SP_SNAPSHOT_ID_LEN]) {
  memset(id, next_id_byte++, SP_SNAPSHOT_ID_LEN);
}

/* A request answered as the session sees it in the end: a snapshot
 * being prepared is stepped (in slices, as the node's loop does) until
 * its manifest is ready. */
static int srv_req_as(sp_snap_srv *s, const sp_msg_snapshot_request *req,
                      const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      const sp_uuid *owner, sp_tstamp now,
                      sp_msg_snapshot_manifest *m) {
  uint8_t got[SP_SNAPSHOT_ID_LEN];
  int rv = sp_snap_srv_request(s, req, id, owner, now, m);
  int steps = 0;

  if (rv != SP_SNAP_PREPARING) {
    return rv;
  }
  memcpy(got, m->id, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_srv_manifest(s, got, now, m), SP_SNAP_PREPARING);
  /* Whole chunks per slice, so that each is read once (test_step_slices
   * cuts them). */
  while (sp_snap_srv_step(s, 4 * CHUNK, now) == 1) {
    assert_true(++steps < 1000000);
  }
  return sp_snap_srv_manifest(s, got, now, m);
}

/* Most tests have one follower of unknown identity. */
static int srv_req(sp_snap_srv *s, const sp_msg_snapshot_request *req,
                   const uint8_t id[SP_SNAPSHOT_ID_LEN], sp_tstamp now,
                   sp_msg_snapshot_manifest *m) {
  return srv_req_as(s, req, id, NULL, now, m);
}

/* Runs the stream until the follower is done, failed, waits for a
 * reconnect, or the cut comes. */
static void run(sp_snap_fol *f, sp_snap_srv *s, uint64_t now,
                const run_opts *o, run_out *out) {
  wire up, down;
  sp_msg m;
  /* Fetched chunk indexes queued on the leader, in order. */
  uint64_t queue[4096];
  uint8_t qid[4096][SP_SNAPSHOT_ID_LEN];
  size_t qh = 0, qt = 0;
  long corrupted = 0;

  wire_init(&up);
  wire_init(&down);
  memset(out, 0, sizeof(*out));
  for (;;) {
    const sp_msg *got;
    int rv;

    memset(&m, 0, sizeof(m));
    rv = sp_snap_fol_next_request(f, &m.u.snapshot_request);
    assert_true(rv >= 0);
    if (rv == 1) {
      uint8_t id[SP_SNAPSHOT_ID_LEN];
      m.type = SP_MSG_SNAPSHOT_REQUEST;
      got = pass(&up, &m);
      new_id(id);
      memset(&m, 0, sizeof(m));
      m.type = SP_MSG_SNAPSHOT_MANIFEST;
      rv = srv_req(s, &got->u.snapshot_request, id, now,
                   &m.u.snapshot_manifest);
      assert_int_equal(rv, 0);
      got = pass(&down, &m);
      rv = sp_snap_fol_on_manifest(f, &got->u.snapshot_manifest);
      if (rv != 0) {
        out->last_rv = rv;
        break;
      }
    }
    while (sp_snap_fol_next_fetch(f, &m.u.snapshot_fetch) == 1) {
      uint32_t i;
      m.type = SP_MSG_SNAPSHOT_FETCH;
      got = pass(&up, &m);
      assert_int_equal(sp_snap_srv_check_fetch(s, &got->u.snapshot_fetch,
                                               now),
                       0);
      for (i = 0; i < got->u.snapshot_fetch.count; ++i) {
        assert_true(qt < 4096);
        memcpy(qid[qt], got->u.snapshot_fetch.id, SP_SNAPSHOT_ID_LEN);
        queue[qt++] = got->u.snapshot_fetch.first_chunk + i;
      }
    }
    if (f->state == SP_SNAP_F_VERIFY) {
      sp_msg_fetch_entries fe;
      assert_int_equal(sp_snap_fol_verify_fetch(f, &fe), 0);
      assert_true(fe.since_sequence == S_SEQ);
      assert_int_equal(fe.since_hash_len, SP_HASH_LEN);
      out->last_rv = sp_snap_fol_on_chain_checked(f, o->chain_ok);
      break;
    }
    if (qh == qt) {
      if (f->need_request) {
        continue;
      }
      break; /* nothing in flight and nothing to ask: the caller acts */
    }
    if (o->cut_after >= 0 && out->delivered >= o->cut_after) {
      break; /* the stream is gone with what was in flight */
    }
    memset(&m, 0, sizeof(m));
    m.type = SP_MSG_SNAPSHOT_CHUNK;
    rv = sp_snap_srv_chunk(s, qid[qh], queue[qh], now, &m.u.snapshot_chunk);
    assert_int_equal(rv, 0);
    if (queue[qh] < 64) {
      ++out->served[queue[qh]];
    }
    ++qh;
    got = pass(&down, &m);
    if ((long)got->u.snapshot_chunk.index == o->corrupt_index &&
        (o->corrupt_times < 0 || corrupted < o->corrupt_times)) {
      /* Flip a bit in the decoded frame's bytes: the wire lied. */
      ((uint8_t *)got->u.snapshot_chunk.data)[7] ^= 0x10;
      ++corrupted;
    }
    ++out->delivered;
    rv = sp_snap_fol_on_chunk(f, &got->u.snapshot_chunk);
    if (rv != 0) {
      out->last_rv = rv;
      break;
    }
  }
  wire_free(&up);
  wire_free(&down);
}

static const run_opts plain = {-1, -1, 0, 1};

static void srv_init(sp_snap_srv *s, const sp_snapshot_source *vt,
                     size_t max_open, sp_duration idle) {
  sp_snap_srv_config cfg;

  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = CHUNK;
  cfg.max_open = max_open;
  cfg.idle = idle;
  assert_int_equal(sp_snap_srv_init(s, vt, &cfg, NULL), 0);
}

static void expect_installed(const tsink *k, const tsource *t) {
  assert_true(k->installed);
  assert_int_equal(k->commits, 1);
  assert_true(k->state.sequence == S_SEQ);
  assert_true(k->state.epoch == S_EPOCH);
  assert_memory_equal(k->state.hash_at, t->hash, SP_HASH_LEN);
  assert_true(k->state.total_size == t->total);
  assert_memory_equal(k->state_bytes, t->bytes, t->total);
}

/* ---- tests ---- */

static void test_chunk_hash(void **state) {
  uint8_t id[SP_SNAPSHOT_ID_LEN], a[SP_HASH_LEN], b[SP_HASH_LEN];
  const uint8_t data[3] = {1, 2, 3};

  (void)state;
  memset(id, 7, sizeof(id));
  assert_int_equal(sp_snapshot_chunk_hash(id, 0, data, 3, a), 0);
  /* Bound to the index and to the id, not only to the bytes. */
  assert_int_equal(sp_snapshot_chunk_hash(id, 1, data, 3, b), 0);
  assert_memory_not_equal(a, b, SP_HASH_LEN);
  id[15] ^= 1;
  assert_int_equal(sp_snapshot_chunk_hash(id, 0, data, 3, b), 0);
  assert_memory_not_equal(a, b, SP_HASH_LEN);
  assert_int_equal(sp_snapshot_chunk_hash(id, 0, NULL, 0, b), 0);
  assert_int_equal(sp_snapshot_chunk_hash(NULL, 0, data, 3, b),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_snapshot_chunk_hash(id, 0, NULL, 3, b),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_snapshot_chunk_hash(id, 0, data, 3, NULL),
                   SP_ERR_INVALID_ARGUMENT);
}

static void test_full_transfer(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  int i;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(sp_snap_fol_start(&f), SP_ERR_INVALID_STATE);
  run(&f, &s, 100, &plain, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_int_equal(k.writes, 11);
  for (i = 0; i < 11; ++i) {
    assert_int_equal(out.served[i], 1); /* nothing sent twice */
  }
  assert_true(f.stats.bytes_done == TOTAL);
  assert_true(f.stats.chunks_done == 11);
  assert_int_equal(f.stats.resumes, 0);
  assert_int_equal(f.stats.restarts, 0);
  /* The leader read everything once to hash it, then once to serve. */
  assert_int_equal(t.reads, 22);
  assert_int_equal(t.opens, 1);
  /* Done: a new recovery may start, a reconnect has nothing to do. */
  assert_int_equal(sp_snap_fol_reconnect(&f), SP_ERR_INVALID_STATE);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.closes, 1);
  assert_int_equal(t.forgets, 0); /* kept for a restarted leader */
  tsink_free(&k);
  free(t.bytes);
}

static void test_resume_after_cut(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  sp_msg_snapshot_request req;
  run_out out;
  run_opts cut = plain;
  long total_served = 0;
  int i;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  cut.cut_after = 4; /* four chunks land, the rest of the window is lost */
  run(&f, &s, 100, &cut, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(f.state, SP_SNAP_F_FETCHING);
  assert_true(k.have == 4);
  for (i = 0; i < 64; ++i) {
    total_served += out.served[i];
  }
  /* The follower crashes too: a new engine over the same durable sink. */
  sp_snap_fol_free(&f);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
  assert_int_equal(req.id_len, SP_SNAPSHOT_ID_LEN);
  assert_memory_equal(req.id, k.pending.id, SP_SNAPSHOT_ID_LEN);
  assert_true(req.have_chunks == 4);
  /* The node's real limit, even when it was left to the default. */
  assert_true(req.max_frame == SP_MAX_FRAME_DEFAULT);
  /* Hand it back as owed and let the driver send it. */
  f.need_request = 1;
  run(&f, &s, 200, &plain, &out);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_int_equal(f.stats.resumes, 1);
  assert_int_equal(k.resumed_begins, 1);
  assert_int_equal(t.opens, 1); /* the same snapshot served on */
  /* Chunks 0..3 are not sent again. */
  for (i = 0; i < 4; ++i) {
    assert_int_equal(out.served[i], 0);
  }
  for (i = 4; i < 11; ++i) {
    total_served += out.served[i];
  }
  /* At most one window re-sent over the whole transfer. */
  assert_true(total_served <= 11 + 4);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A reconnect on the same engine (stream lost, no crash) resumes too. */
static void test_reconnect_resumes(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  run_opts cut = plain;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 3, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  cut.cut_after = 5;
  run(&f, &s, 100, &cut, &out);
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  run(&f, &s, 200, &plain, &out);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_int_equal(f.stats.resumes, 1);
  assert_int_equal(out.served[4], 0);
  assert_int_equal(out.served[5], 1);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A leader restart between chunks: with reopen the same id is served on;
 * without, the follower starts a new snapshot from chunk 0. */
static void test_leader_restart(void **state) {
  int reopen;

  (void)state;
  for (reopen = 0; reopen <= 1; ++reopen) {
    tsource t;
    tsink k;
    sp_snapshot_source sv;
    sp_snapshot_sink kv;
    sp_snap_srv s;
    sp_snap_fol f;
    run_out out;
    run_opts cut = plain;

    tsource_init(&t, &sv, TOTAL, reopen);
    tsink_init(&k, &kv, &t);
    srv_init(&s, &sv, 0, 0);
    sp_snap_fol_init(&f, &kv, 2, 0, 0, NULL);
    assert_int_equal(sp_snap_fol_start(&f), 0);
    cut.cut_after = 6;
    run(&f, &s, 100, &cut, &out);
    assert_true(k.have == 6);
    sp_snap_srv_free(&s, 0); /* the leader process ends */
    assert_int_equal(t.forgets, 0);
    srv_init(&s, &sv, 0, 0);
    assert_int_equal(sp_snap_fol_reconnect(&f), 0);
    run(&f, &s, 200, &plain, &out);
    assert_int_equal(f.state, SP_SNAP_F_DONE);
    expect_installed(&k, &t);
    if (reopen) {
      assert_int_equal(t.reopens, 1);
      assert_int_equal(t.opens, 1);
      assert_int_equal(f.stats.resumes, 1);
      assert_int_equal(f.stats.restarts, 0);
      assert_int_equal(out.served[0], 0);
    } else {
      /* The six chunks held are lost: that counts as a restart. */
      assert_int_equal(t.opens, 2);
      assert_int_equal(f.stats.resumes, 0);
      assert_int_equal(f.stats.restarts, 1);
      assert_int_equal(f.last_error, SP_ERR_SNAPSHOT_UNAVAILABLE);
      assert_int_equal(out.served[0], 1);
      assert_int_equal(k.writes, 6 + 11);
    }
    sp_snap_fol_free(&f);
    sp_snap_srv_free(&s, 0);
    assert_int_equal(t.open_handles, 0);
    tsink_free(&k);
    free(t.bytes);
  }
}

/* A leader that loses the snapshot after every few chunks (restarts
 * without reopen) cannot keep the follower transferring for ever. */
static void test_lost_snapshots_bounded(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  run_opts cut = plain;
  unsigned i;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  sp_snap_fol_init(&f, &kv, 2, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  cut.cut_after = 3;
  for (i = 0; i <= SP_SNAP_MAX_RESTARTS + 1 && f.state != SP_SNAP_F_FAILED;
       ++i) {
    srv_init(&s, &sv, 0, 0);
    if (i > 0) {
      assert_int_equal(sp_snap_fol_reconnect(&f), 0);
    }
    run(&f, &s, 100 * i, &cut, &out);
    sp_snap_srv_free(&s, 0);
  }
  assert_int_equal(f.state, SP_SNAP_F_FAILED);
  assert_int_equal(out.last_rv, SP_ERR_SNAPSHOT_FAILED);
  assert_int_equal(i, SP_SNAP_MAX_RESTARTS + 2);
  assert_int_equal(f.stats.restarts, SP_SNAP_MAX_RESTARTS);
  assert_false(k.installed);
  assert_false(k.has_pending);
  sp_snap_fol_free(&f);
  tsink_free(&k);
  free(t.bytes);
}

static void test_corrupt_chunk_refetched(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  run_opts bad = plain;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  bad.corrupt_index = 3;
  bad.corrupt_times = 1;
  run(&f, &s, 100, &bad, &out);
  assert_int_equal(out.last_rv, 0);
  /* The sink's write check proves the bad bytes never reached it. */
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_int_equal(f.stats.bad_chunks, 1);
  assert_int_equal(f.stats.restarts, 0);
  assert_int_equal(out.served[3], 2);
  assert_int_equal(k.writes, 11);
  assert_int_equal(k.aborts, 0);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A chunk that never verifies: two attempts, then a restart with backoff,
 * and after SP_SNAP_MAX_RESTARTS the recovery gives up. */
static void test_restart_bound(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  run_opts bad = plain;
  uint64_t prev_delay = 0;
  unsigned r;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 8, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  bad.corrupt_index = 2;
  bad.corrupt_times = -1;
  for (r = 0; r < SP_SNAP_MAX_RESTARTS; ++r) {
    bad.cut_after = -1;
    /* Stop at the restart: the driver leaves when a request is owed but
     * the test wants to see the delay first. */
    run(&f, &s, 100 + r, &bad, &out);
    (void)out;
    if (f.state == SP_SNAP_F_FAILED) {
      break;
    }
  }
  assert_int_equal(f.state, SP_SNAP_F_FAILED);
  assert_int_equal(out.last_rv, SP_ERR_SNAPSHOT_FAILED);
  assert_int_equal(f.stats.restarts, SP_SNAP_MAX_RESTARTS);
  assert_int_equal(f.last_error, SP_ERR_SNAPSHOT_CORRUPT);
  assert_false(k.installed);
  assert_false(k.has_pending);
  assert_int_equal(k.aborts, SP_SNAP_MAX_RESTARTS + 1);
  assert_int_equal(k.commits, 0);
  /* Each snapshot: chunk 2 served twice (one re-fetch), then restart. */
  assert_int_equal(f.stats.bad_chunks, 2 * (SP_SNAP_MAX_RESTARTS + 1));
  assert_int_equal(sp_snap_fol_reconnect(&f), SP_ERR_INVALID_STATE);
  /* A later recovery (the host or the next SyncRequired) starts afresh. */
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(f.stats.restarts, 0);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);

  /* The backoff grows with each restart and is capped. */
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  srv_init(&s, &sv, 8, 0);
  for (r = 1; r <= SP_SNAP_MAX_RESTARTS; ++r) {
    sp_msg_snapshot_request req;
    run_opts chain_bad = plain;
    chain_bad.chain_ok = 0;
    run(&f, &s, 1000 * r, &chain_bad, &out);
    assert_int_equal(f.state, SP_SNAP_F_REQUEST);
    assert_int_equal(f.last_error, SP_ERR_CHAIN_MISMATCH);
    assert_true(f.retry_after > prev_delay);
    assert_true(f.retry_after <= SP_SNAP_BACKOFF_MAX);
    prev_delay = f.retry_after;
    /* A restart asks for a new snapshot: no id. */
    assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
    assert_int_equal(req.id_len, 0);
    f.need_request = 1;
    sp_snap_srv_expire(&s, UINT64_MAX - 1);
  }
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

static void test_manifest_inconsistent(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_fol f;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  uint8_t hashes[4 * SP_HASH_LEN];

  (void)state;
  tsource_init(&t, &sv, 0, 0);
  tsink_init(&k, &kv, &t);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  memset(hashes, 1, sizeof(hashes));
  memset(&m, 0, sizeof(m));
  m.total_size = 3500;
  m.chunk_size = 1000;
  m.chunk_hashes = hashes;
  m.chunk_count = 4;
  /* Before any request: unexpected. */
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_UNEXPECTED);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_UNEXPECTED);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
  m.chunk_count = 3; /* sizes say 4 */
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_SNAPSHOT_CORRUPT);
  m.chunk_count = 5;
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_SNAPSHOT_CORRUPT);
  m.chunk_count = 4;
  m.chunk_size = 0;
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_SNAPSHOT_CORRUPT);
  m.chunk_size = SP_SNAPSHOT_CHUNK_MAX + 1;
  m.chunk_count = 1;
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_SNAPSHOT_CORRUPT);
  m.chunk_size = 1;
  m.total_size = (uint64_t)SP_MAX_SNAPSHOT_CHUNKS + 1;
  m.chunk_count = SP_MAX_SNAPSHOT_CHUNKS + 1;
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_SNAPSHOT_CORRUPT);
  m.total_size = 3500;
  m.chunk_size = 1000;
  m.chunk_count = 4;
  m.chunk_hashes = NULL;
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), SP_ERR_SNAPSHOT_CORRUPT);
  /* None of it reached the sink. */
  assert_int_equal(k.begins, 0);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  /* The consistent one is taken. */
  m.chunk_hashes = hashes;
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), 0);
  assert_int_equal(k.begins, 1);
  assert_int_equal(f.state, SP_SNAP_F_FETCHING);
  sp_snap_fol_free(&f);
  tsink_free(&k);
  free(t.bytes);
}

/* Chunks nobody asked for are refused; ones overtaken by a rewind are
 * dropped. */
static void test_unexpected_chunks(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_msg_snapshot_fetch fe;
  sp_msg_snapshot_chunk c;
  uint8_t id[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 2, 0, 0, NULL);
  memset(&c, 0, sizeof(c));
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), SP_ERR_UNEXPECTED);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
  new_id(id);
  assert_int_equal(srv_req(&s, &req, id, 0, &m), 0);
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), 0);
  /* Nothing fetched yet. */
  assert_int_equal(sp_snap_srv_chunk(&s, id, 0, 0, &c), 0);
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), SP_ERR_UNEXPECTED);
  assert_int_equal(sp_snap_fol_next_fetch(&f, &fe), 1);
  assert_true(fe.first_chunk == 0 && fe.count == 2);
  assert_int_equal(sp_snap_fol_next_fetch(&f, &fe), 0); /* window full */
  /* Out of order: refused. */
  assert_int_equal(sp_snap_srv_chunk(&s, id, 1, 0, &c), 0);
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), SP_ERR_UNEXPECTED);
  /* Another snapshot's chunk: refused. */
  assert_int_equal(sp_snap_srv_chunk(&s, id, 0, 0, &c), 0);
  c.id[0] ^= 1;
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), SP_ERR_UNEXPECTED);
  /* Chunk 0 corrupted: re-fetch; chunk 1, already in flight, dropped. */
  assert_int_equal(sp_snap_srv_chunk(&s, id, 0, 0, &c), 0);
  ((uint8_t *)c.data)[0] ^= 1;
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), 0);
  assert_int_equal(f.stale, 1);
  assert_int_equal(sp_snap_fol_next_fetch(&f, &fe), 1);
  assert_true(fe.first_chunk == 0 && fe.count == 2);
  assert_int_equal(sp_snap_srv_chunk(&s, id, 1, 0, &c), 0);
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), 0); /* the stale one */
  assert_int_equal(k.writes, 0);
  assert_int_equal(sp_snap_srv_chunk(&s, id, 0, 0, &c), 0);
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), 0);
  assert_int_equal(k.writes, 1);
  /* A short chunk is a bad chunk too (second failure of chunk 1 would
   * restart; one is a re-fetch). */
  assert_int_equal(sp_snap_srv_chunk(&s, id, 1, 0, &c), 0);
  c.data_len -= 1;
  assert_int_equal(sp_snap_fol_on_chunk(&f, &c), 0);
  assert_int_equal(f.stats.bad_chunks, 2);
  assert_int_equal(f.stats.restarts, 0);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

static void test_sink_failures(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  k.fail_write = 1;
  run(&f, &s, 100, &plain, &out);
  assert_int_equal(out.last_rv, SP_ERR_STORE);
  assert_int_equal(f.state, SP_SNAP_F_CUT);
  assert_true(k.have == 0);
  /* After the session's backoff: a new stream resumes. */
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  k.fail_commit = 1;
  run(&f, &s, 200, &plain, &out);
  assert_int_equal(out.last_rv, SP_ERR_STORE);
  assert_int_equal(f.state, SP_SNAP_F_COMMIT);
  assert_false(k.installed);
  assert_int_equal(sp_snap_fol_commit(&f), 0);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_int_equal(sp_snap_fol_commit(&f), SP_ERR_INVALID_STATE);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A sink whose commit says the verified bytes can never install
 * (SP_ERR_SNAPSHOT_CORRUPT): the snapshot restarts at once, aborted, and
 * a new one (not the one refused) installs. */
static void test_commit_corrupt_restarts(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  uint8_t first[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  k.fail_commit = 1;
  k.commit_rv = SP_ERR_SNAPSHOT_CORRUPT;
  run(&f, &s, 100, &plain, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(k.commit_calls, 1);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  assert_true(f.need_request);
  assert_int_equal(f.stats.restarts, 1);
  assert_int_equal(f.last_error, SP_ERR_SNAPSHOT_CORRUPT);
  assert_true(f.retry_after == SP_SNAP_BACKOFF_BASE);
  assert_true(f.stats.chunks_done == 0 && f.stats.bytes_done == 0);
  assert_false(k.has_pending);
  assert_int_equal(k.aborts, 1);
  assert_false(k.installed);
  memcpy(first, k.pending.id, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_fol_commit(&f), SP_ERR_INVALID_STATE);
  run(&f, &s, 200, &plain, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_memory_not_equal(k.state.id, first, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(f.stats.restarts, 1);
  assert_int_equal(k.commit_calls, 2);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A failed commit is tried again only after a reconnect and a second
 * check (the same snapshot named again, all held: VERIFY), and a success
 * before the bound installs; SP_SNAP_MAX_COMMIT_FAILS in a row restart
 * the snapshot, so a commit that never succeeds ends in FAILED after the
 * restarts instead of being retried for ever. */
static void test_commit_failures_bounded(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  unsigned i, round;
  int rv = 0;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  k.fail_commit = SP_SNAP_MAX_COMMIT_FAILS - 1;
  run(&f, &s, 100, &plain, &out);
  assert_int_equal(out.last_rv, SP_ERR_STORE);
  for (i = 1; i < SP_SNAP_MAX_COMMIT_FAILS; ++i) {
    sp_msg_snapshot_request rq;
    assert_int_equal(sp_snap_fol_reconnect(&f), 0);
    assert_int_equal(f.state, SP_SNAP_F_REQUEST);
    assert_true(f.need_request);
    assert_int_equal(f.commit_fails, i);
    assert_int_equal(sp_snap_fol_commit(&f), SP_ERR_INVALID_STATE);
    /* The request names the pending snapshot, every chunk held. */
    assert_int_equal(sp_snap_fol_next_request(&f, &rq), 1);
    assert_memory_equal(rq.id, k.pending.id, SP_SNAPSHOT_ID_LEN);
    assert_true(rq.have_chunks == f.info.chunk_count);
    f.need_request = 1; /* run() sends it */
    run(&f, &s, 100 + i, &plain, &out);
    assert_int_equal(out.last_rv,
                     i + 1 < SP_SNAP_MAX_COMMIT_FAILS ? SP_ERR_STORE : 0);
    assert_int_equal(out.delivered, 0);
  }
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  assert_int_equal(f.stats.restarts, 0);
  assert_int_equal(k.commit_calls, SP_SNAP_MAX_COMMIT_FAILS);
  expect_installed(&k, &t);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);

  /* Never succeeds. */
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, SP_SNAP_MAX_RESTARTS + 1, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  k.fail_commit = 1000000;
  for (round = 0; round <= SP_SNAP_MAX_RESTARTS; ++round) {
    run(&f, &s, 1000 + round, &plain, &out);
    assert_int_equal(out.last_rv, SP_ERR_STORE);
    assert_int_equal(f.state, SP_SNAP_F_COMMIT);
    for (i = 1; i < SP_SNAP_MAX_COMMIT_FAILS; ++i) {
      assert_int_equal(sp_snap_fol_reconnect(&f), 0);
      run(&f, &s, 1000 + round, &plain, &out);
      rv = out.last_rv;
      if (i + 1 < SP_SNAP_MAX_COMMIT_FAILS) {
        assert_int_equal(rv, SP_ERR_STORE);
        assert_int_equal(f.state, SP_SNAP_F_COMMIT);
      }
    }
    assert_int_equal(f.last_error, SP_ERR_STORE);
    assert_false(k.has_pending);
    if (round < SP_SNAP_MAX_RESTARTS) {
      assert_int_equal(rv, 0);
      assert_int_equal(f.state, SP_SNAP_F_REQUEST);
      assert_int_equal(f.stats.restarts, round + 1);
    }
  }
  assert_int_equal(rv, SP_ERR_SNAPSHOT_FAILED);
  assert_int_equal(f.state, SP_SNAP_F_FAILED);
  assert_int_equal(k.commit_calls,
                   (SP_SNAP_MAX_RESTARTS + 1) * SP_SNAP_MAX_COMMIT_FAILS);
  assert_false(k.installed);
  assert_int_equal(sp_snap_fol_commit(&f), SP_ERR_INVALID_STATE);
  assert_int_equal(sp_snap_fol_reconnect(&f), SP_ERR_INVALID_STATE);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A commit failed, then the next stream's leader no longer has that
 * snapshot (expired, or another leader): its manifest is another one, so
 * the pending one is aborted and the change counts as a restart, and the
 * new snapshot's commits are its own. */
static void test_commit_retry_other_manifest(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s, s2;
  sp_snap_fol f;
  run_out out;
  uint8_t first[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  srv_init(&s2, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  k.fail_commit = 1;
  run(&f, &s, 100, &plain, &out);
  assert_int_equal(out.last_rv, SP_ERR_STORE);
  assert_int_equal(f.commit_fails, 1);
  memcpy(first, k.pending.id, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  /* Served by s2, which never opened `first`: a new snapshot, nothing
   * of the old one committed. */
  k.fail_commit = 0;
  run(&f, &s2, 200, &plain, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  assert_int_equal(k.aborts, 1);
  assert_int_equal(f.stats.restarts, 1);
  assert_int_equal(f.commit_fails, 0);
  assert_int_equal(k.commit_calls, 2);
  expect_installed(&k, &t);
  assert_memory_not_equal(k.state.id, first, SP_SNAPSHOT_ID_LEN);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  sp_snap_srv_free(&s2, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A restart's wait not yet served survives a cut; after the request went
 * out, a reconnect owes the next one at once. */
static void test_restart_wait_kept_across_cut(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  sp_msg_snapshot_request rq;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  k.fail_commit = 1;
  k.commit_rv = SP_ERR_SNAPSHOT_CORRUPT;
  run(&f, &s, 100, &plain, &out);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  assert_true(f.retry_after == SP_SNAP_BACKOFF_BASE);
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  assert_true(f.need_request);
  assert_true(f.retry_after == SP_SNAP_BACKOFF_BASE);
  assert_int_equal(sp_snap_fol_next_request(&f, &rq), 1);
  assert_true(f.retry_after == 0);
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  assert_true(f.need_request);
  assert_true(f.retry_after == 0);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* Resumes that make no progress count as stalls; too many restart. */
static void test_stalls_restart(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_fol f;
  sp_msg_snapshot_request req;
  unsigned i;

  (void)state;
  tsource_init(&t, &sv, 0, 0);
  tsink_init(&k, &kv, &t);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  for (i = 0; i < SP_SNAP_MAX_STALLS; ++i) {
    assert_int_equal(sp_snap_fol_reconnect(&f), 0);
    assert_int_equal(f.stats.restarts, 0);
  }
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  assert_int_equal(f.stats.restarts, 1);
  assert_int_equal(f.last_error, SP_ERR_STALLED);
  assert_true(f.retry_after == SP_SNAP_BACKOFF_BASE);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 0);
  sp_snap_fol_free(&f);
  tsink_free(&k);
  free(t.bytes);
}

static void test_empty_snapshot(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;

  (void)state;
  tsource_init(&t, &sv, 0, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 0, 0, 0, NULL);
  assert_int_equal(f.window, SP_SNAP_WINDOW_DEFAULT);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  run(&f, &s, 1, &plain, &out);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  assert_int_equal(k.commits, 1);
  assert_int_equal(k.writes, 0);
  assert_true(k.state.sequence == S_SEQ);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

static void test_leader_idle_expiry_and_cap(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_msg_snapshot_fetch fe;
  sp_msg_snapshot_chunk c;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], x[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s, &sv, 2, 1000);
  memset(&req, 0, sizeof(req));
  assert_true(sp_snap_srv_next_expiry(&s) == UINT64_MAX);
  new_id(a);
  new_id(b);
  new_id(x);
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_true(m.chunk_count == 11 && m.chunk_size == CHUNK);
  assert_int_equal(srv_req(&s, &req, b, 100, &m), 0);
  assert_true(sp_snap_srv_next_expiry(&s) == 1000);
  /* Cap: both in use. */
  assert_int_equal(srv_req(&s, &req, x, 500, &m),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(t.opens, 2);
  /* Using a keeps it: a fetch and a chunk at 900. */
  memcpy(fe.id, a, SP_SNAPSHOT_ID_LEN);
  fe.first_chunk = 9;
  fe.count = 2;
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 900), 0);
  fe.count = 3; /* past the end */
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 900), SP_ERR_UNEXPECTED);
  assert_int_equal(sp_snap_srv_chunk(&s, a, 10, 900, &c), 0);
  assert_int_equal(c.data_len, 500);
  assert_memory_equal(c.data, t.bytes + 10 * CHUNK, 500);
  assert_int_equal(sp_snap_srv_chunk(&s, a, 11, 900, &c), SP_ERR_UNEXPECTED);
  assert_true(sp_snap_srv_next_expiry(&s) == 1100);
  /* b idles out at 1100; a stays until 1900. */
  sp_snap_srv_expire(&s, 1099);
  assert_int_equal(t.closes, 0);
  sp_snap_srv_expire(&s, 1100);
  assert_int_equal(t.closes, 1);
  assert_int_equal(t.forgets, 1); /* never asked for again */
  memcpy(fe.id, b, SP_SNAPSHOT_ID_LEN);
  fe.count = 1;
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 1200),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(sp_snap_srv_chunk(&s, b, 0, 1200, &c),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  /* A resume of b gets a new snapshot (no reopen); of a, a itself. */
  memcpy(req.id, b, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  req.have_chunks = 3;
  assert_int_equal(srv_req(&s, &req, x, 1200, &m), 0);
  assert_memory_equal(m.id, x, SP_SNAPSHOT_ID_LEN);
  memcpy(req.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(srv_req(&s, &req, b, 1300, &m), 0);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.opens, 3);
  /* Time passes: the request itself expires the idle ones first. */
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req(&s, &req, b, 5000, &m), 0);
  assert_int_equal(t.closes, 3);
  assert_int_equal(s.n_open, 1);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* The source's hash at S must be the store's; the chunk size grows so
 * the manifest fits the frame, and a snapshot that cannot fit is
 * refused. */
static int store_hash(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ctx) {
  const uint8_t *h = ctx;

  if (seq != S_SEQ) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(out, h, SP_HASH_LEN);
  return 0;
}

static void test_leader_binding_and_sizes(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_snap_srv_config cfg;
  sp_msg_snapshot_request req;
  sp_msg m;
  sp_msg_snapshot_chunk c;
  uint8_t id[SP_SNAPSHOT_ID_LEN], store_h[SP_HASH_LEN];

  (void)state;
  tsource_init(&t, &sv, 100000, 0);
  memset(&req, 0, sizeof(req));
  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = CHUNK;
  cfg.hash_at = store_hash;
  cfg.hash_ctx = store_h;
  memset(store_h, 0x77, sizeof(store_h)); /* another history */
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  new_id(id);
  assert_int_equal(srv_req(&s, &req, id, 0, &m.u.snapshot_manifest),
                   SP_ERR_CHAIN_MISMATCH);
  assert_int_equal(t.closes, 1);
  assert_int_equal(t.forgets, 1);
  assert_int_equal(s.n_open, 0);
  memcpy(store_h, t.hash, SP_HASH_LEN);
  assert_int_equal(srv_req(&s, &req, id, 0, &m.u.snapshot_manifest),
                   0);
  sp_snap_srv_free(&s, 0);

  /* A 4 KiB frame: at most 124 hashes, so 100000 bytes take 807-byte
   * chunks; both the manifest and a chunk fit. */
  cfg.hash_at = NULL;
  cfg.max_frame = 4096;
  cfg.chunk_size = 500;
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_SNAPSHOT_MANIFEST;
  assert_int_equal(srv_req(&s, &req, id, 0, &m.u.snapshot_manifest),
                   0);
  assert_int_equal(m.u.snapshot_manifest.chunk_size, 807);
  assert_int_equal(m.u.snapshot_manifest.chunk_count, 124);
  assert_true(sp_msg_encoded_len(&m) - SP_FRAME_HEADER_LEN <= 4096);
  m.type = SP_MSG_SNAPSHOT_CHUNK;
  assert_int_equal(sp_snap_srv_chunk(&s, id, 0, 0, &m.u.snapshot_chunk), 0);
  assert_true(sp_msg_encoded_len(&m) - SP_FRAME_HEADER_LEN <= 4096);
  sp_snap_srv_free(&s, 0);
  free(t.bytes);

  /* 1 MiB cannot fit 124 chunks of at most 4032 bytes. */
  tsource_init(&t, &sv, 1u << 20, 0);
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  assert_int_equal(srv_req(&s, &req, id, 0, &m.u.snapshot_manifest),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(t.open_handles, 0);
  /* A source read failing while it is prepared closes it (the follower
   * asks again): nothing stays open. */
  cfg.max_frame = 0;
  sp_snap_srv_free(&s, 0);
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  t.fail_read = 1;
  assert_int_equal(srv_req(&s, &req, id, 0, &m.u.snapshot_manifest),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(s.n_open, 0);
  assert_int_equal(t.open_handles, 0);
  t.fail_read = 0;
  assert_int_equal(srv_req(&s, &req, id, 0, &m.u.snapshot_manifest),
                   0);
  t.fail_read = 1;
  assert_int_equal(sp_snap_srv_chunk(&s, id, 0, 0, &c), SP_ERR_STORE);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
  /* A source without its required callbacks is refused. */
  sv.read = NULL;
  assert_int_equal(sp_snap_srv_init(&s, &sv, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
}

/* The follower's frame limit bounds the transfer as much as the
 * leader's: its request says it, and an open snapshot cut for bigger
 * frames is not resumed into smaller ones. */
static void test_follower_frame_limit(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, 100000, 0);
  srv_init(&s, &sv, 0, 0); /* 1000-byte chunks, default frames */
  new_id(a);
  new_id(b);
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  assert_int_equal(m.chunk_size, CHUNK);
  assert_int_equal(m.chunk_count, 100);
  /* The same follower, now with 2 KiB frames, resumes a: too many
   * hashes for its frame (at most 60), so a new snapshot b with larger
   * chunks -- which still fit its frame. */
  memcpy(req.id, a, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  req.have_chunks = 10;
  req.max_frame = 2048;
  assert_int_equal(srv_req(&s, &req, b, 1, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_true(m.chunk_count <= (2048 - SP_SNAP_MANIFEST_OVERHEAD) / 32);
  assert_true(m.chunk_size + SP_SNAP_CHUNK_OVERHEAD <= 2048);
  /* Resuming b at that size serves b. */
  memcpy(req.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(srv_req(&s, &req, a, 2, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  /* A frame too small for any snapshot of this size: refused. */
  memset(&req, 0, sizeof(req));
  req.max_frame = 1024;
  new_id(a);
  assert_int_equal(srv_req(&s, &req, a, 3, &m),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* ---- review findings (issue 13) ---- */

/* Times are the node's sp_tstamp nanoseconds: the default idle time is
 * ten minutes of them, and the first backoff one second. */
static void test_times_are_nanoseconds(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  run_out out;
  run_opts chain_bad = plain;
  uint8_t a[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  assert_int_equal(sp_snap_srv_init(&s, &sv, NULL, NULL), 0);
  memset(&req, 0, sizeof(req));
  new_id(a);
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  assert_true(sp_snap_srv_next_expiry(&s) == 600 * SP_SECONDS);
  sp_snap_srv_expire(&s, 60 * SP_SECONDS); /* a minute is not idle */
  assert_int_equal(s.n_open, 1);
  assert_int_equal(t.closes, 0);
  sp_snap_srv_expire(&s, 600 * SP_SECONDS);
  assert_int_equal(s.n_open, 0);
  assert_int_equal(t.forgets, 1);
  sp_snap_srv_free(&s, 0);

  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  chain_bad.chain_ok = 0;
  run(&f, &s, 0, &chain_bad, &out);
  assert_int_equal(f.stats.restarts, 1);
  assert_true(f.retry_after == SP_SECONDS);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* A resume of an open snapshot too large for the follower's frames is
 * served under a new id, never by reopening the open id into a second
 * slot; the old one still serves followers whose frames it fits. */
static void test_too_large_open_gets_new_id(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], c[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, 100000, 1); /* with reopen */
  srv_init(&s, &sv, 0, 0);
  new_id(a);
  new_id(b);
  new_id(c);
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  assert_int_equal(m.chunk_count, 100);
  memcpy(req.id, a, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  req.have_chunks = 10;
  req.max_frame = 2048;
  assert_int_equal(srv_req(&s, &req, b, 1, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.reopens, 0);
  assert_int_equal(t.opens, 2);
  assert_int_equal(s.n_open, 2);
  /* a, at the default frame, is still a itself. */
  req.max_frame = 0;
  assert_int_equal(srv_req(&s, &req, c, 2, &m), 0);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(m.chunk_count, 100);
  assert_int_equal(s.n_open, 2);
  /* A new id that is already open is refused, nothing opened. */
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req(&s, &req, a, 3, &m),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(s.n_open, 2);
  assert_int_equal(t.opens, 2);
  /* No longer leader: the host may drop both. */
  sp_snap_srv_free(&s, 1);
  assert_int_equal(t.forgets, 2);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* The follower holds chunks of snapshot X; the leader answers with a
 * manifest under the same id that differs (here its chunk size: a
 * leader that restarted and reused the id).  The engine itself compares
 * the whole manifest with what the sink reports pending: abort, then
 * begin from chunk 0, and the lost chunks count as a restart.  `trust`:
 * a sink that resumes whatever is pending (the contract allows it). */
static void lost_chunks_case(int trust) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s, s2;
  sp_snap_srv_config cfg;
  sp_snap_fol f;
  sp_msg_snapshot_request req, empty;
  sp_msg_snapshot_manifest m;
  run_out out;
  run_opts cut = plain;

  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  k.trusting = trust;
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  cut.cut_after = 3;
  run(&f, &s, 0, &cut, &out);
  assert_true(k.have == 3);
  assert_int_equal(sp_snap_fol_reconnect(&f), 0);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
  assert_true(req.have_chunks == 3);
  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = 500;
  assert_int_equal(sp_snap_srv_init(&s2, &sv, &cfg, NULL), 0);
  memset(&empty, 0, sizeof(empty));
  assert_int_equal(srv_req(&s2, &empty, req.id, 1, &m), 0);
  assert_memory_equal(m.id, req.id, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(m.chunk_size, 500);
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m), 0);
  assert_int_equal(k.aborts, 1);
  assert_int_equal(k.resumed_begins, 0);
  assert_true(k.have == 0 && f.next_write == 0);
  assert_int_equal(f.stats.restarts, 1);
  assert_int_equal(f.stats.resumes, 0);
  assert_int_equal(f.last_error, SP_ERR_SNAPSHOT_UNAVAILABLE);
  run(&f, &s2, 2, &plain, &out);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  assert_int_equal(k.state.chunk_size, 500);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  sp_snap_srv_free(&s2, 0);
  tsink_free(&k);
  free(t.bytes);
}

static void test_lost_chunks_count_restart(void **state) {
  (void)state;
  lost_chunks_case(0);
}

static void test_resume_compares_whole_manifest(void **state) {
  (void)state;
  lost_chunks_case(1);
}

/* The store's hash at S, with failures to order. */
typedef struct thash {
  uint8_t h[SP_HASH_LEN];
  int not_found, fail, calls;
} thash;

static int thash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ctx) {
  thash *c = ctx;

  ++c->calls;
  assert_true(seq == S_SEQ);
  if (c->fail) {
    --c->fail;
    return -1;
  }
  if (c->not_found) {
    --c->not_found;
    return SP_ERR_NOT_FOUND;
  }
  memcpy(out, c->h, SP_HASH_LEN);
  return 0;
}

/* NOT_FOUND at S for a new snapshot is a lie (its S is the log's head);
 * for a reopened one, S was pruned: it is replaced by a new snapshot.  A
 * reopen that fails on the store keeps the host's copy (forget 0). */
static void test_binding_not_found(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_snap_srv_config cfg;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  thash hc;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], c[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 1);
  memset(&hc, 0, sizeof(hc));
  memcpy(hc.h, t.hash, SP_HASH_LEN);
  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = CHUNK;
  cfg.hash_at = thash_at;
  cfg.hash_ctx = &hc;
  new_id(a);
  new_id(b);
  new_id(c);
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  hc.not_found = 1;
  assert_int_equal(srv_req(&s, &req, c, 0, &m),
                   SP_ERR_CHAIN_MISMATCH);
  assert_int_equal(s.n_open, 0);
  assert_int_equal(t.forgets, 1);
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  sp_snap_srv_free(&s, 0); /* leader restart: a is kept */
  assert_int_equal(t.forgets, 1);

  /* a's S was pruned since: a new snapshot b instead. */
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  memcpy(req.id, a, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  req.have_chunks = 2;
  hc.not_found = 1;
  assert_int_equal(srv_req(&s, &req, b, 1, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.reopens, 1);
  assert_int_equal(t.forgets, 2);
  assert_int_equal(s.n_open, 1);
  sp_snap_srv_free(&s, 0);

  /* The store fails while b is reopened: b stays with the host, and the
   * next request reopens it. */
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  memcpy(req.id, b, SP_SNAPSHOT_ID_LEN);
  hc.fail = 1;
  assert_int_equal(srv_req(&s, &req, c, 2, &m), SP_ERR_STORE);
  assert_int_equal(t.forgets, 2);
  assert_int_equal(s.n_open, 0);
  assert_int_equal(srv_req(&s, &req, c, 3, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.reopens, 3);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* ---- follower limits and new recoveries ---- */

/* A snapshot above max_bytes fails the recovery before the sink sees
 * it; a new recovery (from FAILED, after free + init) installs one that
 * is exactly at the limit. */
static void test_follower_max_bytes(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  run_out out;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 0, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, TOTAL - 1, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 1);
  new_id(id);
  assert_int_equal(srv_req(&s, &req, id, 0, &m), 0);
  assert_int_equal(sp_snap_fol_on_manifest(&f, &m),
                   SP_ERR_SNAPSHOT_TOO_LARGE);
  assert_int_equal(f.state, SP_SNAP_F_FAILED);
  assert_int_equal(f.last_error, SP_ERR_SNAPSHOT_TOO_LARGE);
  assert_int_equal(k.begins, 0);
  assert_int_equal(k.aborts, 0);
  assert_int_equal(sp_snap_fol_next_request(&f, &req), 0);
  assert_int_equal(sp_snap_fol_reconnect(&f), SP_ERR_INVALID_STATE);
  sp_snap_fol_free(&f);
  sp_snap_fol_init(&f, &kv, 4, 0, TOTAL, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  run(&f, &s, 1, &plain, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  expect_installed(&k, &t);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* DONE and FAILED end a recovery: a new one starts from scratch. */
static void test_start_again(void **state) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  run_out out;
  run_opts bad = plain;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  srv_init(&s, &sv, 8, 0);
  sp_snap_fol_init(&f, &kv, 4, 0, 0, NULL);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  run(&f, &s, 1, &plain, &out);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  assert_true(f.stats.chunks_done == 11);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(f.state, SP_SNAP_F_REQUEST);
  assert_null(f.hashes);
  assert_true(f.stats.chunks_done == 0 && f.stats.bytes_done == 0 &&
              f.stats.total_size == 0 && f.stats.chunk_count == 0);
  assert_int_equal(sp_snap_fol_start(&f), SP_ERR_INVALID_STATE);
  /* A chain that never checks out: restarts run out, FAILED. */
  bad.chain_ok = 0;
  while (f.state != SP_SNAP_F_FAILED) {
    run(&f, &s, 2, &bad, &out);
  }
  assert_int_equal(f.last_error, SP_ERR_CHAIN_MISMATCH);
  assert_int_equal(f.stats.restarts, SP_SNAP_MAX_RESTARTS);
  assert_int_equal(sp_snap_fol_start(&f), 0);
  assert_int_equal(f.last_error, 0);
  assert_int_equal(f.stats.restarts, 0);
  run(&f, &s, 3, &plain, &out);
  assert_int_equal(out.last_rv, 0);
  assert_int_equal(f.state, SP_SNAP_F_DONE);
  assert_true(k.installed);
  assert_int_equal(k.commits, 2);
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  tsink_free(&k);
  free(t.bytes);
}

/* ---- leader: owners, eviction, preparing ---- */

static sp_uuid dev(uint8_t n) {
  sp_uuid u;

  memset(u.bytes, n, sizeof(u.bytes));
  return u;
}

/* A device asking for another snapshot has abandoned the ones only it
 * used; shared ones, named ones and those of unknown users stay. */
static void test_owners_abandoned(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_msg_snapshot_fetch fe;
  sp_uuid da = dev(1), db = dev(2);
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], c[SP_SNAPSHOT_ID_LEN];
  uint8_t d[SP_SNAPSHOT_ID_LEN], e[SP_SNAPSHOT_ID_LEN], g[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s, &sv, 4, 0);
  new_id(a);
  new_id(b);
  new_id(c);
  new_id(d);
  new_id(e);
  new_id(g);
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req_as(&s, &req, a, &da, 0, &m), 0);
  assert_int_equal(srv_req_as(&s, &req, b, &da, 1, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(s.n_open, 1); /* a went at once, forgotten */
  assert_int_equal(t.closes, 1);
  assert_int_equal(t.forgets, 1);
  /* B resumes b: now two use it. */
  memcpy(req.id, b, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  assert_int_equal(srv_req_as(&s, &req, c, &db, 2, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req_as(&s, &req, c, &da, 3, &m), 0);
  assert_int_equal(s.n_open, 2); /* b is B's too */
  /* Naming an open one is no new snapshot: nothing closes. */
  memcpy(req.id, b, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  assert_int_equal(srv_req_as(&s, &req, d, &da, 4, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(s.n_open, 2);
  /* An unknown device closes nothing; B has nothing of its own. */
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req_as(&s, &req, d, NULL, 5, &m), 0);
  assert_int_equal(srv_req_as(&s, &req, e, &db, 6, &m), 0);
  assert_int_equal(s.n_open, 4);
  assert_int_equal(t.closes, 1);
  /* All slots taken, none idle: A's new request frees c (its own). */
  assert_int_equal(srv_req_as(&s, &req, g, &da, 7, &m), 0);
  assert_memory_equal(m.id, g, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(s.n_open, 4);
  assert_int_equal(t.closes, 2);
  memset(&fe, 0, sizeof(fe));
  fe.count = 1;
  memcpy(fe.id, c, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 8),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  memcpy(fe.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 8), 0);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* With every slot taken, the least recently used snapshot idle for
 * SP_SNAP_EVICT_IDLE makes room; one being prepared never does, and is
 * not expired either. */
static void test_evict_lru(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_msg_snapshot_fetch fe;
  sp_uuid da = dev(1), db = dev(2), dc = dev(3);
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], x[SP_SNAPSHOT_ID_LEN];
  const sp_tstamp sec = SP_SECONDS, hour = 3600 * sec;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s, &sv, 2, 0);
  new_id(a);
  new_id(b);
  new_id(x);
  memset(&req, 0, sizeof(req));
  assert_int_equal(srv_req_as(&s, &req, a, &da, 0, &m), 0);
  assert_int_equal(srv_req_as(&s, &req, b, &db, 10 * sec, &m), 0);
  assert_int_equal(srv_req_as(&s, &req, x, &dc, 30 * sec, &m),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(t.opens, 2);
  /* At 65 s a has idled 65 s, b 55 s: a goes. */
  assert_int_equal(srv_req_as(&s, &req, x, &dc, 65 * sec, &m), 0);
  assert_memory_equal(m.id, x, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.closes, 1);
  assert_int_equal(t.forgets, 1);
  memset(&fe, 0, sizeof(fe));
  fe.count = 1;
  memcpy(fe.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 65 * sec),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  memcpy(fe.id, b, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 65 * sec), 0);
  sp_snap_srv_free(&s, 0);

  /* One slot, being prepared: no expiry, no eviction, however long. */
  srv_init(&s, &sv, 1, 0);
  new_id(a);
  new_id(b);
  assert_int_equal(sp_snap_srv_request(&s, &req, a, &da, 0, &m),
                   SP_SNAP_PREPARING);
  assert_true(sp_snap_srv_next_expiry(&s) == UINT64_MAX);
  sp_snap_srv_expire(&s, 2 * hour);
  assert_int_equal(s.n_open, 1);
  assert_int_equal(sp_snap_srv_request(&s, &req, b, &db, 2 * hour, &m),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(sp_snap_srv_step(&s, SIZE_MAX, 2 * hour), 0);
  /* Its idle time starts once it can be served. */
  assert_true(sp_snap_srv_next_expiry(&s) == 2 * hour + SP_SNAP_IDLE_DEFAULT);
  assert_int_equal(sp_snap_srv_manifest(&s, a, 2 * hour, &m), 0);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* A new snapshot is opened in the call but serves nothing until step
 * has hashed it; a read failure while preparing closes it. */
static void test_preparing(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_msg_snapshot_fetch fe;
  sp_msg_snapshot_chunk c;
  sp_uuid da = dev(1);
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], z[SP_SNAPSHOT_ID_LEN];
  uint8_t h[SP_HASH_LEN];
  uint64_t i;
  int steps = 0;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s, &sv, 0, 0);
  new_id(a);
  new_id(b);
  new_id(z);
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_preparing(&s), 0);
  assert_int_equal(sp_snap_srv_request(&s, &req, a, &da, 0, &m),
                   SP_SNAP_PREPARING);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.opens, 1);
  assert_int_equal(t.reads, 0); /* nothing hashed in the call */
  assert_int_equal(sp_snap_srv_preparing(&s), 1);
  assert_true(sp_snap_srv_min_sequence(&s) == S_SEQ);
  assert_int_equal(sp_snap_srv_manifest(&s, a, 0, &m), SP_SNAP_PREPARING);
  assert_int_equal(sp_snap_srv_manifest(&s, z, 0, &m),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  memset(&fe, 0, sizeof(fe));
  memcpy(fe.id, a, SP_SNAPSHOT_ID_LEN);
  fe.count = 1;
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 0),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(sp_snap_srv_chunk(&s, a, 0, 0, &c),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  /* Naming it while it is prepared: the same answer, no second open. */
  memcpy(req.id, a, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  assert_int_equal(sp_snap_srv_request(&s, &req, b, &da, 0, &m),
                   SP_SNAP_PREPARING);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(s.n_open, 1);
  while (sp_snap_srv_step(&s, CHUNK, 1) == 1) {
    ++steps;
  }
  assert_int_equal(steps, 10); /* 11 chunks, one per call */
  assert_int_equal(sp_snap_srv_preparing(&s), 0);
  assert_int_equal(sp_snap_srv_step(&s, CHUNK, 1), 0);
  assert_int_equal(sp_snap_srv_manifest(&s, a, 2, &m), 0);
  assert_true(m.chunk_count == 11 && m.total_size == TOTAL);
  for (i = 0; i < 11; ++i) {
    size_t len = i == 10 ? 500 : CHUNK;
    assert_int_equal(
        sp_snapshot_chunk_hash(a, i, t.bytes + i * CHUNK, len, h), 0);
    assert_memory_equal(m.chunk_hashes + i * SP_HASH_LEN, h, SP_HASH_LEN);
  }
  assert_int_equal(sp_snap_srv_check_fetch(&s, &fe, 2), 0);
  assert_int_equal(sp_snap_srv_request(&s, &req, b, &da, 3, &m), 0);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  /* A read failure while preparing: closed, forgotten. */
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_request(&s, &req, b, NULL, 4, &m),
                   SP_SNAP_PREPARING);
  t.fail_read = 1;
  assert_int_equal(sp_snap_srv_step(&s, SIZE_MAX, 5), 0);
  assert_int_equal(sp_snap_srv_manifest(&s, b, 5, &m),
                   SP_ERR_SNAPSHOT_UNAVAILABLE);
  assert_int_equal(s.n_open, 1);
  assert_int_equal(t.forgets, 1);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* A follower cut off while its snapshot is being prepared has no
 * manifest, so its sink names nothing (or an old snapshot the leader no
 * longer has) when it asks again: it gets the snapshot being prepared,
 * with the work done so far, not a new one from zero.  Once prepared, an
 * empty request from it is a restart: a new snapshot. */
static void test_preparing_reused(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_uuid da = dev(1), db = dev(2);
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], c[SP_SNAPSHOT_ID_LEN];
  uint8_t d[SP_SNAPSHOT_ID_LEN], z[SP_SNAPSHOT_ID_LEN];
  int i;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s, &sv, 0, 0);
  new_id(a);
  new_id(b);
  new_id(c);
  new_id(d);
  new_id(z);
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_request(&s, &req, a, &da, 0, &m),
                   SP_SNAP_PREPARING);
  for (i = 0; i < 9; ++i) {
    assert_int_equal(sp_snap_srv_step(&s, CHUNK, 1), 1);
  }
  assert_int_equal(sp_snap_srv_request(&s, &req, b, &da, 2, &m),
                   SP_SNAP_PREPARING);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(s.n_open, 1);
  assert_int_equal(s.open[0].prepared, 9);
  assert_int_equal(t.opens, 1);
  assert_int_equal(t.closes, 0);
  /* Naming a snapshot the leader does not hold (its sink's old one). */
  memcpy(req.id, z, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  req.have_chunks = 3;
  assert_int_equal(sp_snap_srv_request(&s, &req, b, &da, 3, &m),
                   SP_SNAP_PREPARING);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.opens, 1);
  /* Another device's empty request is its own snapshot. */
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_request(&s, &req, c, &db, 4, &m),
                   SP_SNAP_PREPARING);
  assert_memory_equal(m.id, c, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(s.n_open, 2);
  while (sp_snap_srv_step(&s, SIZE_MAX, 5) == 1) {
  }
  assert_int_equal(t.reads, 22); /* each chunk of a and c read once */
  assert_int_equal(sp_snap_srv_manifest(&s, a, 5, &m), 0);
  assert_memory_equal(m.id, a, SP_SNAPSHOT_ID_LEN);
  /* Prepared: A's empty request asks for a new snapshot. */
  assert_int_equal(sp_snap_srv_request(&s, &req, d, &da, 6, &m),
                   SP_SNAP_PREPARING);
  assert_memory_equal(m.id, d, SP_SNAPSHOT_ID_LEN);
  assert_int_equal(t.forgets, 1);
  assert_int_equal(s.n_open, 2);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* A kept snapshot whose hash at S is no longer the log's (the leader's
 * history changed while the host kept it): the reopen is forgotten and
 * the request gets a new snapshot, as for one whose S was pruned. */
static void test_reopen_mismatch_replaced(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_snap_srv_config cfg;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  thash hc;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 1);
  memset(&hc, 0, sizeof(hc));
  memcpy(hc.h, t.hash, SP_HASH_LEN);
  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = CHUNK;
  cfg.hash_at = thash_at;
  cfg.hash_ctx = &hc;
  new_id(a);
  new_id(b);
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  sp_snap_srv_free(&s, 0); /* leader restart: a is kept */
  assert_int_equal(t.forgets, 0);

  assert_int_equal(sp_snap_srv_init(&s, &sv, &cfg, NULL), 0);
  t.stale_reopen = 1;
  memcpy(req.id, a, SP_SNAPSHOT_ID_LEN);
  req.id_len = SP_SNAPSHOT_ID_LEN;
  req.have_chunks = 2;
  assert_int_equal(srv_req(&s, &req, b, 1, &m), 0);
  assert_memory_equal(m.id, b, SP_SNAPSHOT_ID_LEN);
  assert_memory_equal(m.hash_at, hc.h, SP_HASH_LEN);
  assert_int_equal(t.reopens, 1);
  assert_int_equal(t.opens, 2);
  assert_int_equal(t.forgets, 1);
  assert_int_equal(s.n_open, 1);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* Small slices cut chunks across calls and still give the hashes of one
 * big step; two snapshots being prepared take turns, chunk by chunk. */
static void test_step_slices(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s1, s2;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m1, m2;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], c[SP_SNAPSHOT_ID_LEN];
  int calls = 0;

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s1, &sv, 0, 0);
  srv_init(&s2, &sv, 0, 0);
  new_id(a);
  new_id(b);
  new_id(c);
  memset(&req, 0, sizeof(req));
  assert_int_equal(sp_snap_srv_request(&s1, &req, a, NULL, 0, &m1),
                   SP_SNAP_PREPARING);
  assert_int_equal(sp_snap_srv_request(&s2, &req, a, NULL, 0, &m2),
                   SP_SNAP_PREPARING);
  t.reads = 0;
  while (sp_snap_srv_step(&s1, 333, 0) == 1) {
    ++calls;
  }
  assert_int_equal(calls, (int)(TOTAL / 333)); /* 32 slices */
  assert_true(t.reads > 11);
  assert_int_equal(sp_snap_srv_step(&s2, SIZE_MAX, 0), 0);
  assert_int_equal(sp_snap_srv_manifest(&s1, a, 0, &m1), 0);
  assert_int_equal(sp_snap_srv_manifest(&s2, a, 0, &m2), 0);
  assert_true(m1.chunk_count == 11 && m2.chunk_count == 11);
  assert_memory_equal(m1.chunk_hashes, m2.chunk_hashes, 11 * SP_HASH_LEN);
  /* Round robin. */
  assert_int_equal(sp_snap_srv_request(&s1, &req, b, NULL, 1, &m1),
                   SP_SNAP_PREPARING);
  assert_int_equal(sp_snap_srv_request(&s1, &req, c, NULL, 1, &m1),
                   SP_SNAP_PREPARING);
  assert_int_equal(sp_snap_srv_step(&s1, CHUNK, 1), 1);
  assert_int_equal(sp_snap_srv_step(&s1, CHUNK, 1), 1);
  assert_int_equal(s1.open[1].prepared, 1);
  assert_int_equal(s1.open[2].prepared, 1);
  sp_snap_srv_free(&s1, 0);
  sp_snap_srv_free(&s2, 0);
  assert_int_equal(t.open_handles, 0);
  free(t.bytes);
}

/* The lowest S still open, preparing ones included. */
static void test_min_sequence(void **state) {
  tsource t;
  sp_snapshot_source sv;
  sp_snap_srv s;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  uint8_t a[SP_SNAPSHOT_ID_LEN], b[SP_SNAPSHOT_ID_LEN], c[SP_SNAPSHOT_ID_LEN];

  (void)state;
  tsource_init(&t, &sv, TOTAL, 0);
  srv_init(&s, &sv, 0, 1000);
  new_id(a);
  new_id(b);
  new_id(c);
  memset(&req, 0, sizeof(req));
  assert_true(sp_snap_srv_min_sequence(&s) == UINT64_MAX);
  t.seq = 30;
  assert_int_equal(srv_req(&s, &req, a, 0, &m), 0);
  assert_true(sp_snap_srv_min_sequence(&s) == 30);
  t.seq = 20;
  assert_int_equal(srv_req(&s, &req, b, 500, &m), 0);
  assert_true(sp_snap_srv_min_sequence(&s) == 20);
  t.seq = 40;
  assert_int_equal(sp_snap_srv_request(&s, &req, c, NULL, 600, &m),
                   SP_SNAP_PREPARING);
  assert_true(sp_snap_srv_min_sequence(&s) == 20);
  sp_snap_srv_expire(&s, 1500); /* a and b idle out */
  assert_int_equal(s.n_open, 1);
  assert_true(sp_snap_srv_min_sequence(&s) == 40);
  sp_snap_srv_free(&s, 0);
  assert_true(sp_snap_srv_min_sequence(&s) == UINT64_MAX);
  free(t.bytes);
}

/* ---- allocation failures ---- */

/* A whole transfer with the library's allocations on `mem`: every
 * failure comes back as SP_ERR_NOMEM and nothing leaks. */
static int transfer_with(const sp_mem *mem, void *arg) {
  tsource t;
  tsink k;
  sp_snapshot_source sv;
  sp_snapshot_sink kv;
  sp_snap_srv s;
  sp_snap_fol f;
  sp_snap_srv_config cfg;
  sp_msg_snapshot_request req;
  sp_msg_snapshot_manifest m;
  sp_msg_snapshot_fetch fe;
  sp_msg_snapshot_chunk c;
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  sp_uuid owner;
  int rv;

  (void)arg;
  memset(owner.bytes, 7, sizeof(owner.bytes));
  tsource_init(&t, &sv, TOTAL, 0);
  tsink_init(&k, &kv, &t);
  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = CHUNK;
  rv = sp_snap_srv_init(&s, &sv, &cfg, mem);
  if (rv != 0) {
    tsink_free(&k);
    free(t.bytes);
    return rv;
  }
  sp_snap_fol_init(&f, &kv, 4, 0, 0, mem);
  rv = sp_snap_fol_start(&f);
  memset(id, 0x42, sizeof(id));
  while (rv == 0 && f.state != SP_SNAP_F_DONE) {
    if (sp_snap_fol_next_request(&f, &req) == 1) {
      /* Stepped in slices: preparing allocates nothing of its own. */
      if ((rv = srv_req_as(&s, &req, id, &owner, 0, &m)) != 0 ||
          (rv = sp_snap_fol_on_manifest(&f, &m)) != 0) {
        break;
      }
    }
    while (rv == 0 && sp_snap_fol_next_fetch(&f, &fe) == 1) {
      uint32_t i;
      rv = sp_snap_srv_check_fetch(&s, &fe, 0);
      for (i = 0; rv == 0 && i < fe.count; ++i) {
        if ((rv = sp_snap_srv_chunk(&s, fe.id, fe.first_chunk + i, 0, &c)) ==
            0) {
          rv = sp_snap_fol_on_chunk(&f, &c);
        }
      }
    }
    if (rv == 0 && f.state == SP_SNAP_F_VERIFY) {
      rv = sp_snap_fol_on_chain_checked(&f, 1);
    }
  }
  if (rv == 0) {
    expect_installed(&k, &t);
  }
  sp_snap_fol_free(&f);
  sp_snap_srv_free(&s, 0);
  assert_int_equal(t.open_handles, 0);
  tsink_free(&k);
  free(t.bytes);
  return rv;
}

static void test_allocation_failures(void **state) {
  (void)state;
  /* the leader's table and hash state, hashes, scratch, the follower's
   * hashes */
  assert_true(sp_test_mem_fail_each(transfer_with, NULL, NULL) >= 6);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chunk_hash),
      cmocka_unit_test(test_full_transfer),
      cmocka_unit_test(test_resume_after_cut),
      cmocka_unit_test(test_reconnect_resumes),
      cmocka_unit_test(test_leader_restart),
      cmocka_unit_test(test_lost_snapshots_bounded),
      cmocka_unit_test(test_corrupt_chunk_refetched),
      cmocka_unit_test(test_restart_bound),
      cmocka_unit_test(test_manifest_inconsistent),
      cmocka_unit_test(test_unexpected_chunks),
      cmocka_unit_test(test_sink_failures),
      cmocka_unit_test(test_commit_corrupt_restarts),
      cmocka_unit_test(test_commit_failures_bounded),
      cmocka_unit_test(test_commit_retry_other_manifest),
      cmocka_unit_test(test_restart_wait_kept_across_cut),
      cmocka_unit_test(test_stalls_restart),
      cmocka_unit_test(test_empty_snapshot),
      cmocka_unit_test(test_leader_idle_expiry_and_cap),
      cmocka_unit_test(test_leader_binding_and_sizes),
      cmocka_unit_test(test_follower_frame_limit),
      cmocka_unit_test(test_times_are_nanoseconds),
      cmocka_unit_test(test_too_large_open_gets_new_id),
      cmocka_unit_test(test_lost_chunks_count_restart),
      cmocka_unit_test(test_resume_compares_whole_manifest),
      cmocka_unit_test(test_binding_not_found),
      cmocka_unit_test(test_follower_max_bytes),
      cmocka_unit_test(test_start_again),
      cmocka_unit_test(test_owners_abandoned),
      cmocka_unit_test(test_evict_lru),
      cmocka_unit_test(test_preparing),
      cmocka_unit_test(test_preparing_reused),
      cmocka_unit_test(test_reopen_mismatch_replaced),
      cmocka_unit_test(test_step_slices),
      cmocka_unit_test(test_min_sequence),
      cmocka_unit_test(test_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
