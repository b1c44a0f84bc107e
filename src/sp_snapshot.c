/*
 * sp_snapshot.c: the snapshot transfer engine (sp_snapshot.h).
 *
 * The follower writes chunks strictly in order, each checked against the
 * manifest first, so what the sink holds is always "chunks 0 .. k-1 of
 * this manifest, verified": exactly what a resume needs to name.  The
 * hashes use libsodium's BLAKE2b, as the log's chain does (sp_chain.c).
 */
#include <string.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sp_mem_int.h"
#include "sp_snapshot.h"

int sp_snapshot_chunk_hash(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                           uint64_t index, const uint8_t *data, size_t len,
                           uint8_t out[SP_HASH_LEN]) {
  crypto_generichash_state st;
  uint8_t be[8];
  int i;

  if (!id || !out || (!data && len)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < 8; ++i) {
    be[i] = (uint8_t)(index >> (56 - 8 * i));
  }
  crypto_generichash_init(&st, NULL, 0, SP_HASH_LEN);
  crypto_generichash_update(&st, id, SP_SNAPSHOT_ID_LEN);
  crypto_generichash_update(&st, be, sizeof(be));
  if (len) {
    crypto_generichash_update(&st, data, len);
  }
  crypto_generichash_final(&st, out, SP_HASH_LEN);
  return 0;
}

static uint64_t chunk_count_of(uint64_t total, uint32_t chunk_size) {
  return total / chunk_size + (total % chunk_size != 0);
}

/* Length of chunk `i` of a snapshot of `total` bytes. */
static size_t chunk_len(uint64_t total, uint32_t chunk_size, uint64_t i) {
  uint64_t off = i * chunk_size;
  uint64_t left = total - off;

  return (size_t)(left < chunk_size ? left : chunk_size);
}

/* ---- follower ---- */

void sp_snap_fol_init(sp_snap_fol *f, const sp_snapshot_sink *sink,
                      uint32_t window, size_t max_frame, const sp_mem *mem) {
  memset(f, 0, sizeof(*f));
  sp_mem_resolve(&f->mem, mem);
  f->sink = sink;
  /* The request carries a real limit, never 0, so that the leader cuts
   * chunks for this node's frames rather than for its own default. */
  f->max_frame = max_frame ? max_frame : SP_MAX_FRAME_DEFAULT;
  f->window = window == 0 ? SP_SNAP_WINDOW_DEFAULT
              : window > SP_MAX_SNAPSHOT_WINDOW ? SP_MAX_SNAPSHOT_WINDOW
                                                : window;
}

void sp_snap_fol_free(sp_snap_fol *f) {
  sp_free(&f->mem, f->hashes);
  f->hashes = NULL;
}

static int in_recovery(const sp_snap_fol *f) {
  return f->state != SP_SNAP_F_IDLE && f->state != SP_SNAP_F_DONE &&
         f->state != SP_SNAP_F_FAILED;
}

/* Whatever is in flight on the current stream will still arrive: drop it
 * when it does, and owe a request. */
static void ask_again(sp_snap_fol *f, sp_snap_fstate state) {
  f->stale += f->outstanding;
  f->outstanding = 0;
  f->next_fetch = f->next_write;
  f->state = state;
}

int sp_snap_fol_start(sp_snap_fol *f) {
  if (in_recovery(f)) {
    return SP_ERR_INVALID_STATE;
  }
  sp_free(&f->mem, f->hashes);
  f->hashes = NULL;
  memset(&f->info, 0, sizeof(f->info));
  memset(&f->stats, 0, sizeof(f->stats));
  f->next_write = f->next_fetch = 0;
  f->outstanding = f->stale = 0;
  f->fails = f->stalls = 0;
  f->progress_mark = 0;
  f->retry_after = 0;
  f->last_error = 0;
  f->fresh = 0;
  f->asked_have = 0;
  f->state = SP_SNAP_F_REQUEST;
  f->need_request = 1;
  return 0;
}

/* Start over with a new snapshot, or give up when that was the last
 * restart allowed. */
static int restart(sp_snap_fol *f, int why) {
  uint32_t shift;

  f->last_error = why;
  ask_again(f, SP_SNAP_F_REQUEST);
  /* A failing abort leaves chunks behind; begin discards them anyway
   * (another id or digest), so it only costs disk until then. */
  (void)f->sink->abort(f->sink->user_data);
  sp_free(&f->mem, f->hashes);
  f->hashes = NULL;
  f->next_write = f->next_fetch = 0;
  f->fails = f->stalls = 0;
  f->progress_mark = 0;
  f->stats.bytes_done = f->stats.chunks_done = 0;
  if (f->stats.restarts >= SP_SNAP_MAX_RESTARTS) {
    f->state = SP_SNAP_F_FAILED;
    f->need_request = 0;
    return SP_ERR_SNAPSHOT_FAILED;
  }
  ++f->stats.restarts;
  f->need_request = 1;
  /* Ask for a new snapshot even if the abort failed and the sink still
   * names the old one. */
  f->fresh = 1;
  shift = f->stats.restarts - 1;
  f->retry_after = shift >= 16 ? SP_SNAP_BACKOFF_MAX
                               : (sp_duration)SP_SNAP_BACKOFF_BASE << shift;
  if (f->retry_after > SP_SNAP_BACKOFF_MAX) {
    f->retry_after = SP_SNAP_BACKOFF_MAX;
  }
  return 0;
}

int sp_snap_fol_reconnect(sp_snap_fol *f) {
  if (!in_recovery(f)) {
    return SP_ERR_INVALID_STATE;
  }
  /* A new stream: nothing of the old one will arrive. */
  f->outstanding = f->stale = 0;
  f->next_fetch = f->next_write;
  if (f->state == SP_SNAP_F_COMMIT) {
    return 0; /* all durable and checked: only the commit is left */
  }
  if (f->next_write == f->progress_mark && ++f->stalls > SP_SNAP_MAX_STALLS) {
    return restart(f, SP_ERR_STALLED);
  }
  if (f->next_write != f->progress_mark) {
    f->stalls = 0;
  }
  f->progress_mark = f->next_write;
  f->state = SP_SNAP_F_REQUEST;
  f->need_request = 1;
  f->retry_after = 0;
  return 0;
}

int sp_snap_fol_next_request(sp_snap_fol *f, sp_msg_snapshot_request *out) {
  uint64_t have = 0;
  int rv;

  if (!f->need_request || f->state != SP_SNAP_F_REQUEST) {
    return 0;
  }
  memset(out, 0, sizeof(*out));
  memset(&f->pending, 0, sizeof(f->pending));
  rv = f->fresh ? SP_ERR_NOT_FOUND
                : f->sink->pending(&f->pending, &have, f->sink->user_data);
  if (rv == 0) {
    memcpy(out->id, f->pending.id, SP_SNAPSHOT_ID_LEN);
    out->id_len = SP_SNAPSHOT_ID_LEN;
    out->have_chunks = have;
  } else if (rv != SP_ERR_NOT_FOUND) {
    return SP_ERR_STORE;
  }
  f->has_pending = rv == 0;
  out->max_frame = f->max_frame;
  memcpy(f->asked_id, out->id, SP_SNAPSHOT_ID_LEN);
  f->asked_have = out->have_chunks;
  f->need_request = 0;
  f->fresh = 0;
  f->retry_after = 0;
  return 1;
}

/* Field by field: a sink's copy may differ in padding. */
static int info_equal(const sp_snapshot_info *a, const sp_snapshot_info *b) {
  return memcmp(a->id, b->id, SP_SNAPSHOT_ID_LEN) == 0 &&
         a->sequence == b->sequence &&
         memcmp(a->hash_at, b->hash_at, SP_HASH_LEN) == 0 &&
         a->epoch == b->epoch && a->total_size == b->total_size &&
         a->chunk_size == b->chunk_size &&
         a->chunk_count == b->chunk_count &&
         memcmp(a->digest, b->digest, SP_HASH_LEN) == 0;
}

/* The decoder checks the same; a manifest built by hand must not get
 * past the engine either. */
static int manifest_consistent(const sp_msg_snapshot_manifest *m) {
  uint64_t count;

  if (m->chunk_size == 0 || m->chunk_size > SP_SNAPSHOT_CHUNK_MAX) {
    return 0;
  }
  count = chunk_count_of(m->total_size, m->chunk_size);
  return count <= SP_MAX_SNAPSHOT_CHUNKS && count == m->chunk_count &&
         (count == 0 || m->chunk_hashes != NULL);
}

int sp_snap_fol_on_manifest(sp_snap_fol *f,
                            const sp_msg_snapshot_manifest *m) {
  size_t hlen;
  uint64_t have = 0;
  uint8_t *h;

  if (f->state != SP_SNAP_F_REQUEST || f->need_request) {
    return SP_ERR_UNEXPECTED;
  }
  if (!manifest_consistent(m)) {
    f->last_error = SP_ERR_SNAPSHOT_CORRUPT;
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  hlen = m->chunk_count * SP_HASH_LEN;
  h = hlen ? sp_malloc(&f->mem, hlen) : NULL;
  if (hlen && !h) {
    return SP_ERR_NOMEM;
  }
  if (hlen) {
    memcpy(h, m->chunk_hashes, hlen);
  }
  sp_free(&f->mem, f->hashes);
  f->hashes = h;
  memset(&f->info, 0, sizeof(f->info));
  memcpy(f->info.id, m->id, SP_SNAPSHOT_ID_LEN);
  f->info.sequence = m->sequence;
  memcpy(f->info.hash_at, m->hash_at, SP_HASH_LEN);
  f->info.epoch = m->snap_epoch;
  f->info.total_size = m->total_size;
  f->info.chunk_size = m->chunk_size;
  f->info.chunk_count = m->chunk_count;
  crypto_generichash(f->info.digest, SP_HASH_LEN, h, hlen, NULL, 0);
  /* Only the engine decides what resumes: a sink that compared ids alone
   * would mix two snapshots' chunks.  Anything but the very manifest it
   * holds is discarded before begin. */
  if (!f->has_pending || !info_equal(&f->pending, &f->info)) {
    f->has_pending = 0;
    if (f->sink->abort(f->sink->user_data) != 0) {
      f->state = SP_SNAP_F_CUT;
      return SP_ERR_STORE;
    }
  }
  if (f->sink->begin(&f->info, &have, f->sink->user_data) != 0 ||
      have > m->chunk_count) {
    f->state = SP_SNAP_F_CUT;
    return SP_ERR_STORE;
  }
  /* Chunks we held are lost (the leader could not serve that snapshot,
   * or served it changed): that counts against the bound like a restart,
   * so that a leader that keeps losing snapshots cannot keep us
   * transferring for ever. */
  if (have < f->asked_have) {
    f->asked_have = 0;
    if (f->stats.restarts >= SP_SNAP_MAX_RESTARTS) {
      return restart(f, SP_ERR_SNAPSHOT_UNAVAILABLE);
    }
    ++f->stats.restarts;
    f->last_error = SP_ERR_SNAPSHOT_UNAVAILABLE;
  }
  if (have > 0) {
    ++f->stats.resumes;
  }
  f->next_write = f->next_fetch = have;
  f->outstanding = 0; /* nothing was asked of this manifest yet */
  f->fails = 0;
  f->stats.total_size = m->total_size;
  f->stats.chunk_count = m->chunk_count;
  f->stats.chunks_done = have;
  f->stats.bytes_done =
      have == m->chunk_count ? m->total_size : have * m->chunk_size;
  f->state = have == m->chunk_count ? SP_SNAP_F_VERIFY : SP_SNAP_F_FETCHING;
  return 0;
}

int sp_snap_fol_next_fetch(sp_snap_fol *f, sp_msg_snapshot_fetch *out) {
  uint64_t left;
  uint32_t room, n;

  if (f->state != SP_SNAP_F_FETCHING || f->outstanding >= f->window ||
      f->next_fetch >= f->info.chunk_count) {
    return 0;
  }
  left = f->info.chunk_count - f->next_fetch;
  room = f->window - f->outstanding;
  n = left < room ? (uint32_t)left : room;
  memcpy(out->id, f->info.id, SP_SNAPSHOT_ID_LEN);
  out->first_chunk = f->next_fetch;
  out->count = n;
  f->next_fetch += n;
  f->outstanding += n;
  return 1;
}

/* Chunk `c` failed its hash (or length): fetch it again once, then
 * restart. */
static int chunk_refused(sp_snap_fol *f, uint64_t index) {
  ++f->stats.bad_chunks;
  if (f->fails > 0 && f->fail_index == index) {
    ++f->fails;
  } else {
    f->fail_index = index;
    f->fails = 1;
  }
  if (f->fails >= SP_SNAP_CHUNK_ATTEMPTS) {
    return restart(f, SP_ERR_SNAPSHOT_CORRUPT);
  }
  ask_again(f, SP_SNAP_F_FETCHING);
  return 0;
}

int sp_snap_fol_on_chunk(sp_snap_fol *f, const sp_msg_snapshot_chunk *c) {
  uint8_t h[SP_HASH_LEN];
  size_t want;

  if (f->state != SP_SNAP_F_FETCHING || f->outstanding == 0 ||
      memcmp(c->id, f->info.id, SP_SNAPSHOT_ID_LEN) != 0 ||
      c->index != f->next_write) {
    /* Sent before we rewound or restarted: it still had to arrive. */
    if (f->stale > 0) {
      --f->stale;
      return 0;
    }
    return SP_ERR_UNEXPECTED;
  }
  --f->outstanding;
  want = chunk_len(f->info.total_size, f->info.chunk_size, c->index);
  if (c->data_len != want ||
      sp_snapshot_chunk_hash(f->info.id, c->index, c->data, c->data_len,
                             h) != 0 ||
      sodium_memcmp(h, f->hashes + c->index * SP_HASH_LEN, SP_HASH_LEN) !=
          0) {
    return chunk_refused(f, c->index);
  }
  if (f->sink->write_chunk(c->index, c->data, c->data_len,
                           f->sink->user_data) != 0) {
    ask_again(f, SP_SNAP_F_CUT);
    return SP_ERR_STORE;
  }
  ++f->next_write;
  f->stats.chunks_done = f->next_write;
  f->stats.bytes_done += c->data_len;
  if (f->fails > 0 && f->fail_index == c->index) {
    f->fails = 0;
  }
  if (f->next_write == f->info.chunk_count) {
    f->state = SP_SNAP_F_VERIFY;
  }
  return 0;
}

int sp_snap_fol_verify_fetch(const sp_snap_fol *f, sp_msg_fetch_entries *out) {
  if (f->state != SP_SNAP_F_VERIFY) {
    return SP_ERR_INVALID_STATE;
  }
  memset(out, 0, sizeof(*out));
  out->since_sequence = f->info.sequence;
  out->limit = 1;
  memcpy(out->since_hash, f->info.hash_at, SP_HASH_LEN);
  out->since_hash_len = SP_HASH_LEN;
  return 0;
}

int sp_snap_fol_commit(sp_snap_fol *f) {
  if (f->state != SP_SNAP_F_COMMIT) {
    return SP_ERR_INVALID_STATE;
  }
  if (f->sink->commit(f->sink->user_data) != 0) {
    return SP_ERR_STORE;
  }
  f->state = SP_SNAP_F_DONE;
  return 0;
}

int sp_snap_fol_on_chain_checked(sp_snap_fol *f, int ok) {
  if (f->state != SP_SNAP_F_VERIFY) {
    return SP_ERR_INVALID_STATE;
  }
  if (!ok) {
    return restart(f, SP_ERR_CHAIN_MISMATCH);
  }
  f->state = SP_SNAP_F_COMMIT;
  return sp_snap_fol_commit(f);
}

/* ---- leader ---- */

int sp_snap_srv_init(sp_snap_srv *s, const sp_snapshot_source *src,
                     const sp_snap_srv_config *cfg, const sp_mem *mem) {
  memset(s, 0, sizeof(*s));
  if (!src || !src->open || !src->read || !src->close) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&s->mem, mem);
  s->src = src;
  if (cfg) {
    s->cfg = *cfg;
  }
  if (s->cfg.max_open == 0) {
    s->cfg.max_open = SP_SNAP_MAX_OPEN_DEFAULT;
  }
  if (s->cfg.idle == 0) {
    s->cfg.idle = SP_SNAP_IDLE_DEFAULT;
  }
  if (s->cfg.chunk_size == 0) {
    s->cfg.chunk_size = SP_SNAP_CHUNK_DEFAULT;
  }
  if (s->cfg.max_frame == 0) {
    s->cfg.max_frame = SP_MAX_FRAME_DEFAULT;
  }
  s->open = sp_calloc(&s->mem, s->cfg.max_open, sizeof(*s->open));
  return s->open ? 0 : SP_ERR_NOMEM;
}

static void close_at(sp_snap_srv *s, size_t i, int forget) {
  sp_snap_open *o = &s->open[i];

  s->src->close(o->handle, forget, s->src->user_data);
  sp_free(&s->mem, o->hashes);
  s->open[i] = s->open[--s->n_open];
}

void sp_snap_srv_free(sp_snap_srv *s, int forget) {
  while (s->n_open > 0) {
    close_at(s, s->n_open - 1, forget != 0);
  }
  sp_free(&s->mem, s->open);
  sp_free(&s->mem, s->scratch);
  memset(s, 0, sizeof(*s));
}

void sp_snap_srv_expire(sp_snap_srv *s, sp_tstamp now) {
  size_t i = 0;

  while (i < s->n_open) {
    if (now - s->open[i].last_use >= s->cfg.idle &&
        now >= s->open[i].last_use) {
      close_at(s, i, 1);
    } else {
      ++i;
    }
  }
}

sp_tstamp sp_snap_srv_next_expiry(const sp_snap_srv *s) {
  sp_tstamp next = UINT64_MAX;
  size_t i;

  for (i = 0; i < s->n_open; ++i) {
    sp_tstamp t = s->open[i].last_use + s->cfg.idle;
    if (t < next) {
      next = t;
    }
  }
  return next;
}

static sp_snap_open *find_open(sp_snap_srv *s,
                               const uint8_t id[SP_SNAPSHOT_ID_LEN]) {
  size_t i;

  for (i = 0; i < s->n_open; ++i) {
    if (memcmp(s->open[i].id, id, SP_SNAPSHOT_ID_LEN) == 0) {
      return &s->open[i];
    }
  }
  return NULL;
}

static int grow_scratch(sp_snap_srv *s, size_t n) {
  uint8_t *p;

  if (n <= s->scratch_cap) {
    return 0;
  }
  p = sp_realloc(&s->mem, s->scratch, n);
  if (!p) {
    return SP_ERR_NOMEM;
  }
  s->scratch = p;
  s->scratch_cap = n;
  return 0;
}

/* The frame limit of a transfer: ours and the follower's, whichever is
 * smaller (its 0 is the default). */
static uint64_t frame_limit(const sp_snap_srv *s, uint64_t peer) {
  uint64_t lim = s->cfg.max_frame;

  if (peer == 0) {
    peer = SP_MAX_FRAME_DEFAULT;
  }
  return peer < lim ? peer : lim;
}

/* Whether `o`'s manifest and chunks fit frames of `limit` bytes. */
static int fits(const sp_snap_open *o, uint64_t limit) {
  return limit > SP_SNAP_MANIFEST_OVERHEAD &&
         (uint64_t)o->chunk_size + SP_SNAP_CHUNK_OVERHEAD <= limit &&
         o->chunk_count <= (limit - SP_SNAP_MANIFEST_OVERHEAD) / SP_HASH_LEN;
}

/* The chunk size for `total` bytes: the preferred one, raised until the
 * manifest's hashes fit a frame of `limit`; 0 if even the largest chunk
 * such a frame can carry does not make it fit. */
static uint32_t pick_chunk_size(const sp_snap_srv *s, uint64_t total,
                                uint64_t limit) {
  uint64_t cap = SP_SNAPSHOT_CHUNK_MAX, max_chunks = SP_MAX_SNAPSHOT_CHUNKS;
  uint64_t cs = s->cfg.chunk_size;

  if (limit <= SP_SNAP_MANIFEST_OVERHEAD) {
    return 0;
  }
  if (limit - SP_SNAP_CHUNK_OVERHEAD < cap) {
    cap = limit - SP_SNAP_CHUNK_OVERHEAD;
  }
  if ((limit - SP_SNAP_MANIFEST_OVERHEAD) / SP_HASH_LEN < max_chunks) {
    max_chunks = (limit - SP_SNAP_MANIFEST_OVERHEAD) / SP_HASH_LEN;
  }
  if (cs > cap) {
    cs = cap;
  }
  if (max_chunks == 0) {
    return total == 0 ? (uint32_t)cs : 0;
  }
  if (total / cs + (total % cs != 0) > max_chunks) {
    cs = total / max_chunks + (total % max_chunks != 0);
  }
  return cs > cap ? 0 : (uint32_t)cs;
}

/* Read every chunk once to list its hash: the manifest promises them all
 * before the first one moves. */
static int hash_chunks(sp_snap_srv *s, sp_snap_open *o) {
  size_t i;
  int rv;

  if (o->chunk_count == 0) {
    return 0;
  }
  o->hashes = sp_malloc(&s->mem, o->chunk_count * SP_HASH_LEN);
  if (!o->hashes || grow_scratch(s, o->chunk_size) != 0) {
    return SP_ERR_NOMEM;
  }
  for (i = 0; i < o->chunk_count; ++i) {
    size_t len = chunk_len(o->desc.total_size, o->chunk_size, i);
    rv = s->src->read(o->handle, (uint64_t)i * o->chunk_size, s->scratch, len,
                      s->src->user_data);
    if (rv != 0) {
      return SP_ERR_STORE;
    }
    sp_snapshot_chunk_hash(o->id, i, s->scratch, len,
                           o->hashes + i * SP_HASH_LEN);
  }
  return 0;
}

/* The source's hash at S must be the log's: that is the manifest's
 * binding to the chain.  A new snapshot stands at the log's head, which
 * the store must have: NOT_FOUND there is a source lying about S.  A
 * reopened one may have been pruned past since: it is gone
 * (SP_ERR_NOT_FOUND), and the caller makes a new one rather than serve
 * bytes it can no longer vouch for. */
static int check_binding(const sp_snap_srv *s, const sp_snap_open *o,
                         int reopen) {
  static const uint8_t zero[SP_HASH_LEN];
  uint8_t h[SP_HASH_LEN];
  int rv;

  if (o->desc.sequence == 0) {
    return memcmp(o->desc.hash_at, zero, SP_HASH_LEN) == 0
               ? 0
               : SP_ERR_CHAIN_MISMATCH;
  }
  if (!s->cfg.hash_at) {
    return 0;
  }
  rv = s->cfg.hash_at(o->desc.sequence, h, s->cfg.hash_ctx);
  if (rv == SP_ERR_NOT_FOUND) {
    return reopen ? SP_ERR_NOT_FOUND : SP_ERR_CHAIN_MISMATCH;
  }
  if (rv != 0) {
    return SP_ERR_STORE;
  }
  return memcmp(h, o->desc.hash_at, SP_HASH_LEN) == 0 ? 0
                                                      : SP_ERR_CHAIN_MISMATCH;
}

/* Open (or reopen) into the next free slot; on failure nothing stays
 * open.  Returns 0, SP_ERR_NOT_FOUND (reopen: the host has no such id)
 * or an error of sp_snap_srv_request. */
static int open_into(sp_snap_srv *s, const uint8_t id[SP_SNAPSHOT_ID_LEN],
                     int reopen, uint64_t limit, sp_tstamp now) {
  sp_snap_open *o = &s->open[s->n_open];
  int rv;

  memset(o, 0, sizeof(*o));
  memcpy(o->id, id, SP_SNAPSHOT_ID_LEN);
  rv = reopen ? s->src->reopen(id, &o->desc, &o->handle, s->src->user_data)
              : s->src->open(id, &o->desc, &o->handle, s->src->user_data);
  if (rv != 0) {
    return reopen && rv == SP_ERR_NOT_FOUND ? SP_ERR_NOT_FOUND : SP_ERR_STORE;
  }
  o->chunk_size = pick_chunk_size(s, o->desc.total_size, limit);
  if (o->chunk_size == 0) {
    rv = SP_ERR_SNAPSHOT_UNAVAILABLE;
  } else {
    o->chunk_count =
        (size_t)chunk_count_of(o->desc.total_size, o->chunk_size);
    rv = check_binding(s, o, reopen);
  }
  if (rv == 0) {
    rv = hash_chunks(s, o);
  }
  if (rv != 0) {
    /* A reopened snapshot that failed for a passing reason (store, memory)
     * may serve the next request: the host keeps it. */
    s->src->close(o->handle,
                  !(reopen && (rv == SP_ERR_STORE || rv == SP_ERR_NOMEM)),
                  s->src->user_data);
    sp_free(&s->mem, o->hashes);
    memset(o, 0, sizeof(*o));
    return rv;
  }
  o->last_use = now;
  ++s->n_open;
  return 0;
}

static void manifest_of(const sp_snap_open *o, sp_msg_snapshot_manifest *m) {
  memset(m, 0, sizeof(*m));
  memcpy(m->id, o->id, SP_SNAPSHOT_ID_LEN);
  m->sequence = o->desc.sequence;
  memcpy(m->hash_at, o->desc.hash_at, SP_HASH_LEN);
  m->snap_epoch = o->desc.epoch;
  m->total_size = o->desc.total_size;
  m->chunk_size = o->chunk_size;
  m->chunk_hashes = o->hashes;
  m->chunk_count = o->chunk_count;
}

int sp_snap_srv_request(sp_snap_srv *s, const sp_msg_snapshot_request *req,
                        const uint8_t new_id[SP_SNAPSHOT_ID_LEN],
                        sp_tstamp now, sp_msg_snapshot_manifest *out) {
  sp_snap_open *o = NULL;
  uint64_t limit = frame_limit(s, req->max_frame);
  int rv = SP_ERR_NOT_FOUND, found = 0;

  sp_snap_srv_expire(s, now);
  if (req->id_len == SP_SNAPSHOT_ID_LEN) {
    o = find_open(s, req->id);
    found = o != NULL;
  }
  if (o && !fits(o, limit)) {
    o = NULL; /* the follower's frames shrank: it needs smaller chunks */
  }
  if (!o) {
    /* Two slots under one id would make every later lookup ambiguous. */
    if (find_open(s, new_id)) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    if (s->n_open >= s->cfg.max_open) {
      return SP_ERR_SNAPSHOT_UNAVAILABLE;
    }
    /* An open snapshot too large for this frame limit is served under a
     * new id, cut smaller: reopening its id would only find it again. */
    if (req->id_len == SP_SNAPSHOT_ID_LEN && s->src->reopen && !found) {
      rv = open_into(s, req->id, 1, limit, now);
    }
    if (rv == SP_ERR_NOT_FOUND) {
      rv = open_into(s, new_id, 0, limit, now);
    }
    if (rv != 0) {
      return rv;
    }
    o = &s->open[s->n_open - 1];
  }
  o->last_use = now;
  manifest_of(o, out);
  return 0;
}

int sp_snap_srv_check_fetch(sp_snap_srv *s, const sp_msg_snapshot_fetch *f,
                            sp_tstamp now) {
  sp_snap_open *o = find_open(s, f->id);

  if (!o) {
    return SP_ERR_SNAPSHOT_UNAVAILABLE;
  }
  if (f->count == 0 || f->first_chunk >= o->chunk_count ||
      f->count > o->chunk_count - f->first_chunk) {
    return SP_ERR_UNEXPECTED;
  }
  o->last_use = now;
  return 0;
}

int sp_snap_srv_chunk(sp_snap_srv *s, const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      uint64_t index, sp_tstamp now,
                      sp_msg_snapshot_chunk *out) {
  sp_snap_open *o = find_open(s, id);
  size_t len;

  if (!o) {
    return SP_ERR_SNAPSHOT_UNAVAILABLE;
  }
  if (index >= o->chunk_count) {
    return SP_ERR_UNEXPECTED;
  }
  len = chunk_len(o->desc.total_size, o->chunk_size, index);
  if (grow_scratch(s, len) != 0) {
    return SP_ERR_NOMEM;
  }
  if (s->src->read(o->handle, index * o->chunk_size, s->scratch, len,
                   s->src->user_data) != 0) {
    return SP_ERR_STORE;
  }
  o->last_use = now;
  memset(out, 0, sizeof(*out));
  memcpy(out->id, o->id, SP_SNAPSHOT_ID_LEN);
  out->index = index;
  out->data = s->scratch;
  out->data_len = len;
  return 0;
}
