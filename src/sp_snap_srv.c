/*
 * sp_snap_srv.c: the leader side of the snapshot engine (sp_snapshot.h).
 *
 * Opening a snapshot costs one source open and the binding check; its
 * chunk hashes, which need every byte read once, are computed later by
 * sp_snap_srv_step in bounded slices, so a large snapshot never stalls
 * the node's loop.  A snapshot serves nothing until all its hashes are
 * known: the manifest promises them before the first chunk moves.
 *
 * Slots are few (max_open), so each snapshot remembers which devices use
 * it: a device that asks for a new snapshot has abandoned the ones only
 * it used, and those are closed at once instead of after the idle time.
 */
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sp_mem_int.h"
#include "sp_snapshot.h"

int sp_snap_srv_init(sp_snap_srv *s, const sp_snapshot_source *src,
                     const sp_snap_srv_config *cfg, const sp_mem *mem) {
  uintptr_t p;

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
  /* libsodium wants its state aligned beyond what an allocator promises;
   * allocated once here so that step never fails for memory. */
  s->state_mem = sp_malloc(&s->mem, crypto_generichash_statebytes() + 64);
  if (!s->open || !s->state_mem) {
    sp_free(&s->mem, s->open);
    sp_free(&s->mem, s->state_mem);
    s->open = NULL;
    s->state_mem = NULL;
    return SP_ERR_NOMEM;
  }
  p = ((uintptr_t)s->state_mem + 63u) & ~(uintptr_t)63u;
  s->state = (void *)p;
  return 0;
}

static int preparing(const sp_snap_open *o) {
  return o->prepared < o->chunk_count;
}

static void close_at(sp_snap_srv *s, size_t i, int forget) {
  sp_snap_open *o = &s->open[i];

  if (s->hashing && memcmp(s->hash_id, o->id, SP_SNAPSHOT_ID_LEN) == 0) {
    s->hashing = 0;
  }
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
  sp_free(&s->mem, s->state_mem);
  memset(s, 0, sizeof(*s));
}

static int idle_for(const sp_snap_open *o, sp_tstamp now, sp_duration d) {
  return !preparing(o) && now >= o->last_use && now - o->last_use >= d;
}

void sp_snap_srv_expire(sp_snap_srv *s, sp_tstamp now) {
  size_t i = 0;

  while (i < s->n_open) {
    if (idle_for(&s->open[i], now, s->cfg.idle)) {
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
    if (!preparing(&s->open[i]) && t < next) {
      next = t;
    }
  }
  return next;
}

sp_seq sp_snap_srv_min_sequence(const sp_snap_srv *s) {
  sp_seq min = UINT64_MAX;
  size_t i;

  for (i = 0; i < s->n_open; ++i) {
    if (s->open[i].desc.sequence < min) {
      min = s->open[i].desc.sequence;
    }
  }
  return min;
}

int sp_snap_srv_preparing(const sp_snap_srv *s) {
  size_t i;

  for (i = 0; i < s->n_open; ++i) {
    if (preparing(&s->open[i])) {
      return 1;
    }
  }
  return 0;
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

/* ---- owners ---- */

static int owned_by(const sp_snap_open *o, const sp_uuid *dev) {
  uint32_t i;

  for (i = 0; i < o->n_owners; ++i) {
    if (memcmp(o->owners[i].bytes, dev->bytes, sizeof(dev->bytes)) == 0) {
      return 1;
    }
  }
  return 0;
}

static void add_owner(sp_snap_open *o, const sp_uuid *dev) {
  if (!dev || owned_by(o, dev)) {
    return;
  }
  /* Past the array it is shared by several anyway: who else uses it
   * changes nothing. */
  if (o->n_owners < SP_SNAP_MAX_OWNERS) {
    o->owners[o->n_owners++] = *dev;
  }
}

/* `dev` asks for another snapshot than these: the ones only it used are
 * abandoned (a follower runs one transfer at a time).  `keep`, the one
 * its request named, stays. */
static void close_abandoned(sp_snap_srv *s, const sp_uuid *dev,
                            const uint8_t *keep) {
  size_t i = 0;

  while (dev && i < s->n_open) {
    sp_snap_open *o = &s->open[i];
    if (o->n_owners == 1 && owned_by(o, dev) &&
        (!keep || memcmp(o->id, keep, SP_SNAPSHOT_ID_LEN) != 0)) {
      close_at(s, i, 1);
    } else {
      ++i;
    }
  }
}

/* All slots taken: free the least recently used one that nobody touched
 * for SP_SNAP_EVICT_IDLE (never one being prepared).  1 if one went. */
static int evict_lru(sp_snap_srv *s, sp_tstamp now) {
  size_t i, best = s->n_open;

  for (i = 0; i < s->n_open; ++i) {
    if (idle_for(&s->open[i], now, SP_SNAP_EVICT_IDLE) &&
        (best == s->n_open || s->open[i].last_use < s->open[best].last_use)) {
      best = i;
    }
  }
  if (best == s->n_open) {
    return 0;
  }
  close_at(s, best, 1);
  return 1;
}

/* ---- opening ---- */

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

/* The snapshot still being prepared that only `dev` uses and that fits
 * frames of `limit`, if any. */
static sp_snap_open *preparing_for(sp_snap_srv *s, const sp_uuid *dev,
                                   uint64_t limit) {
  size_t i;

  for (i = 0; dev && i < s->n_open; ++i) {
    sp_snap_open *o = &s->open[i];
    if (o->n_owners == 1 && owned_by(o, dev) && preparing(o) &&
        fits(o, limit)) {
      return o;
    }
  }
  return NULL;
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

/* The source's hash at S must be the log's: that is the manifest's
 * binding to the chain.  A new snapshot stands at the log's head, which
 * the store must have: NOT_FOUND there is a source lying about S.  A
 * reopened one may have been pruned past since: it is gone
 * (SP_ERR_NOT_FOUND), and the caller makes a new one rather than serve
 * bytes it can no longer vouch for (as it does when a reopened one's
 * hash no longer matches). */
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

/* Open (or reopen) into the next free slot, preparing; on failure nothing
 * stays open.  The memory step needs is taken here, so that step itself
 * cannot fail for it.  Returns 0, SP_ERR_NOT_FOUND (reopen: the host has
 * no such id) or an error of sp_snap_srv_request. */
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
        (size_t)sp_snap_chunk_count(o->desc.total_size, o->chunk_size);
    rv = check_binding(s, o, reopen);
  }
  if (rv == 0 && o->chunk_count > 0) {
    o->hashes = sp_malloc(&s->mem, o->chunk_count * SP_HASH_LEN);
    if (!o->hashes || grow_scratch(s, o->chunk_size) != 0) {
      rv = SP_ERR_NOMEM;
    }
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

/* The answer for open snapshot `o`: its manifest, or only its id while it
 * is being prepared. */
static int answer(sp_snap_open *o, sp_tstamp now,
                  sp_msg_snapshot_manifest *out) {
  o->last_use = now;
  if (preparing(o)) {
    memset(out, 0, sizeof(*out));
    memcpy(out->id, o->id, SP_SNAPSHOT_ID_LEN);
    return SP_SNAP_PREPARING;
  }
  manifest_of(o, out);
  return 0;
}

int sp_snap_srv_request(sp_snap_srv *s, const sp_msg_snapshot_request *req,
                        const uint8_t new_id[SP_SNAPSHOT_ID_LEN],
                        const sp_uuid *owner, sp_tstamp now,
                        sp_msg_snapshot_manifest *out) {
  sp_snap_open *o = NULL;
  uint64_t limit = frame_limit(s, req->max_frame);
  const uint8_t *named = NULL;
  int rv = SP_ERR_NOT_FOUND, found = 0;

  sp_snap_srv_expire(s, now);
  if (req->id_len == SP_SNAPSHOT_ID_LEN) {
    named = req->id;
    o = find_open(s, req->id);
    found = o != NULL;
  }
  if (o && !fits(o, limit)) {
    o = NULL; /* the follower's frames shrank: it needs smaller chunks */
  }
  if (o) {
    add_owner(o, owner);
    return answer(o, now, out);
  }
  /* Cut off before its manifest came, a follower names nothing of the
   * snapshot prepared for it: it gets that one, work and all, instead of
   * a new one from zero (else a preparation longer than its stall
   * timeout would never end).  Not a prepared one: an empty request is
   * also how a follower restarts away from a snapshot it could not use,
   * and it has seen no byte of one still preparing. */
  o = preparing_for(s, owner, limit);
  if (o) {
    return answer(o, now, out);
  }
  /* Two slots under one id would make every later lookup ambiguous. */
  if (find_open(s, new_id)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  close_abandoned(s, owner, named);
  if (s->n_open >= s->cfg.max_open && !evict_lru(s, now)) {
    return SP_ERR_SNAPSHOT_UNAVAILABLE;
  }
  /* An open snapshot too large for this frame limit is served under a
   * new id, cut smaller: reopening its id would only find it again. */
  if (named && s->src->reopen && !found) {
    rv = open_into(s, named, 1, limit, now);
    /* Kept bytes that are no longer of this log at S (its history
     * changed since, e.g. the leader installed a snapshot itself) are
     * gone as surely as pruned ones: a new snapshot instead. */
    if (rv == SP_ERR_CHAIN_MISMATCH) {
      rv = SP_ERR_NOT_FOUND;
    }
  }
  if (rv == SP_ERR_NOT_FOUND) {
    rv = open_into(s, new_id, 0, limit, now);
  }
  if (rv != 0) {
    return rv;
  }
  o = &s->open[s->n_open - 1];
  add_owner(o, owner);
  return answer(o, now, out);
}

int sp_snap_srv_manifest(sp_snap_srv *s, const uint8_t id[SP_SNAPSHOT_ID_LEN],
                         sp_tstamp now, sp_msg_snapshot_manifest *out) {
  sp_snap_open *o = find_open(s, id);

  return o ? answer(o, now, out) : SP_ERR_SNAPSHOT_UNAVAILABLE;
}

/* ---- preparing ---- */

/* The snapshot whose chunk step works on next: the one with a chunk half
 * hashed, else the next preparing one after the last finished chunk's
 * (round robin per chunk, so a small snapshot is not stuck behind a large
 * one).  Its index, or n_open if none. */
static size_t next_to_hash(sp_snap_srv *s) {
  size_t i, k;

  if (s->hashing) {
    for (i = 0; i < s->n_open; ++i) {
      if (memcmp(s->open[i].id, s->hash_id, SP_SNAPSHOT_ID_LEN) == 0) {
        return i;
      }
    }
    s->hashing = 0; /* closed meanwhile (close_at clears it too) */
  }
  for (k = 0; k < s->n_open; ++k) {
    i = (s->rr + k) % s->n_open;
    if (preparing(&s->open[i])) {
      return i;
    }
  }
  return s->n_open;
}

int sp_snap_srv_step(sp_snap_srv *s, size_t budget, sp_tstamp now) {
  crypto_generichash_state *st = s->state;

  while (budget > 0) {
    size_t i = next_to_hash(s), len, n;
    sp_snap_open *o;
    uint64_t idx;

    if (i == s->n_open) {
      break;
    }
    o = &s->open[i];
    idx = o->prepared;
    if (!s->hashing) {
      /* The chunk hash of sp_snapshot_chunk_hash, fed in pieces. */
      uint8_t be[8];
      int b;
      for (b = 0; b < 8; ++b) {
        be[b] = (uint8_t)(idx >> (56 - 8 * b));
      }
      crypto_generichash_init(st, NULL, 0, SP_HASH_LEN);
      crypto_generichash_update(st, o->id, SP_SNAPSHOT_ID_LEN);
      crypto_generichash_update(st, be, sizeof(be));
      memcpy(s->hash_id, o->id, SP_SNAPSHOT_ID_LEN);
      s->hash_off = 0;
      s->hashing = 1;
    }
    len = sp_snap_chunk_len(o->desc.total_size, o->chunk_size, idx);
    n = len - s->hash_off < budget ? len - s->hash_off : budget;
    if (s->src->read(o->handle, idx * o->chunk_size + s->hash_off,
                     s->scratch, n, s->src->user_data) != 0) {
      /* Its manifest can never be promised: the waiting request learns
       * SP_ERR_SNAPSHOT_UNAVAILABLE and asks again. */
      close_at(s, i, 1);
      continue;
    }
    crypto_generichash_update(st, s->scratch, n);
    s->hash_off += n;
    budget -= n;
    if (s->hash_off == len) {
      crypto_generichash_final(st, o->hashes + idx * SP_HASH_LEN,
                               SP_HASH_LEN);
      s->hashing = 0;
      s->rr = i + 1;
      if (++o->prepared == o->chunk_count) {
        /* The idle clock starts when it can first be served. */
        o->last_use = now;
      }
    }
  }
  return sp_snap_srv_preparing(s);
}

/* ---- serving ---- */

int sp_snap_srv_check_fetch(sp_snap_srv *s, const sp_msg_snapshot_fetch *f,
                            sp_tstamp now) {
  sp_snap_open *o = find_open(s, f->id);

  if (!o || preparing(o)) {
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

  if (!o || preparing(o)) {
    return SP_ERR_SNAPSHOT_UNAVAILABLE;
  }
  if (index >= o->chunk_count) {
    return SP_ERR_UNEXPECTED;
  }
  len = sp_snap_chunk_len(o->desc.total_size, o->chunk_size, index);
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
