/*
 * sp_snapshot.c: the snapshot transfer engine (sp_snapshot.h).
 *
 * The follower writes chunks strictly in order, each checked against the
 * manifest first, so what the sink holds is always "chunks 0 .. k-1 of
 * this manifest, verified": exactly what a resume needs to name.  The
 * hashes use libsodium's BLAKE2b, as the log's chain does (sp_chain.c).
 * The leader side is in sp_snap_srv.c.
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

/* ---- follower ---- */

void sp_snap_fol_init(sp_snap_fol *f, const sp_snapshot_sink *sink,
                      uint32_t window, size_t max_frame, uint64_t max_bytes,
                      const sp_mem *mem) {
  memset(f, 0, sizeof(*f));
  sp_mem_resolve(&f->mem, mem);
  f->sink = sink;
  f->max_bytes = max_bytes;
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

/* Discard what the sink holds pending; once that worked nothing stale
 * is left of an abandoned recovery. */
static int abort_pending(sp_snap_fol *f) {
  int rv = f->sink->abort(f->sink->user_data);

  if (rv == 0) {
    f->abandoned = 0;
  }
  return rv;
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
  f->fails = f->stalls = f->commit_fails = 0;
  f->progress_mark = 0;
  f->retry_after = 0;
  f->last_error = 0;
  f->fresh = 0;
  f->asked_have = 0;
  f->has_pending = 0;
  memset(&f->pending, 0, sizeof(f->pending));
  f->state = SP_SNAP_F_REQUEST;
  f->need_request = 1;
  /* What an abandoned recovery left: discarded now if the sink lets us;
   * if not, the request names nothing (next_request) and the manifest's
   * abort before begin tries once more. */
  if (f->abandoned) {
    (void)abort_pending(f);
  }
  return 0;
}

int sp_snap_fol_abandon(sp_snap_fol *f) {
  if (in_recovery(f)) {
    f->state = SP_SNAP_F_IDLE;
    f->need_request = 0;
    f->fresh = 0;
    f->has_pending = 0;
    f->outstanding = f->stale = 0;
    sp_free(&f->mem, f->hashes);
    f->hashes = NULL;
    memset(&f->stats, 0, sizeof(f->stats));
    memset(&f->info, 0, sizeof(f->info));
  }
  if (abort_pending(f) != 0) {
    f->abandoned = 1;
    return SP_ERR_STORE;
  }
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
  (void)abort_pending(f);
  sp_free(&f->mem, f->hashes);
  f->hashes = NULL;
  f->next_write = f->next_fetch = 0;
  f->fails = f->stalls = f->commit_fails = 0;
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
  /* Checked, only the commit failed: the check was against the old
   * stream's leader, which may not be the next one's.  The request names
   * the pending snapshot again (every chunk held), so the same manifest
   * leads to VERIFY and a new check; commit_fails bounds the loop, so it
   * is no stall. */
  if (f->state == SP_SNAP_F_COMMIT) {
    f->progress_mark = f->next_write;
    f->state = SP_SNAP_F_REQUEST;
    f->need_request = 1;
    f->retry_after = 0;
    return 0;
  }
  if (f->next_write == f->progress_mark && ++f->stalls > SP_SNAP_MAX_STALLS) {
    return restart(f, SP_ERR_STALLED);
  }
  if (f->next_write != f->progress_mark) {
    f->stalls = 0;
  }
  f->progress_mark = f->next_write;
  /* A restart's wait not yet served survives the cut: a new stream must
   * not ask for the new snapshot at once. */
  if (!(f->state == SP_SNAP_F_REQUEST && f->need_request)) {
    f->retry_after = 0;
  }
  f->state = SP_SNAP_F_REQUEST;
  f->need_request = 1;
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
  rv = f->fresh || f->abandoned
           ? SP_ERR_NOT_FOUND
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
  count = sp_snap_chunk_count(m->total_size, m->chunk_size);
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
  /* No restart would make it smaller: give up before the sink spends a
   * byte (and keep what it holds, which may be a smaller pending one). */
  if (f->max_bytes != 0 && m->total_size > f->max_bytes) {
    f->last_error = SP_ERR_SNAPSHOT_TOO_LARGE;
    f->state = SP_SNAP_F_FAILED;
    return SP_ERR_SNAPSHOT_TOO_LARGE;
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
    f->commit_fails = 0; /* another snapshot: its own commits */
    if (abort_pending(f) != 0) {
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
  want = sp_snap_chunk_len(f->info.total_size, f->info.chunk_size,
                           c->index);
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
  int rv;

  if (f->state != SP_SNAP_F_COMMIT) {
    return SP_ERR_INVALID_STATE;
  }
  rv = f->sink->commit(f->sink->user_data);
  if (rv == 0) {
    f->commit_fails = 0;
    f->state = SP_SNAP_F_DONE;
    return 0;
  }
  /* Every chunk matched its hash, yet the sink cannot install them (a
   * leader's rotten file, bytes its parser refuses): the same bytes
   * would fail again, a new snapshot may not. */
  if (rv == SP_ERR_SNAPSHOT_CORRUPT) {
    return restart(f, SP_ERR_SNAPSHOT_CORRUPT);
  }
  /* A store error may pass (a busy database), or never (what the sink
   * cannot tell from corrupt bytes): bounded like the rest. */
  if (++f->commit_fails >= SP_SNAP_MAX_COMMIT_FAILS) {
    return restart(f, SP_ERR_STORE);
  }
  f->last_error = SP_ERR_STORE;
  return SP_ERR_STORE;
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
