/*
 * sp_snapshot.h: the snapshot transfer engine, sans-I/O (docs/protocol.md,
 * "Snapshots").
 *
 * Two state machines the sessions drive; neither sends a byte, reads a
 * clock or knows a stream.  The follower side (sp_snap_fol) turns
 * manifests and chunks into sink calls and says what to ask for next; the
 * leader side (sp_snap_srv) keeps the open snapshots of one library and
 * answers requests and fetches from the source.  Times are the caller's
 * `now` (an sp_tstamp: nanoseconds, any origin, never decreasing, as
 * the node passes it); durations are sp_duration nanoseconds.
 */
#ifndef SP_SNAPSHOT_H
#define SP_SNAPSHOT_H

#include "sync_protocol/codec.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/sys/snapshot.h"

/* Restarts (a new snapshot from chunk 0) one recovery may make before it
 * gives up with SP_ERR_SNAPSHOT_FAILED: what keeps a broken snapshot from
 * looping.  Documented in docs/protocol.md. */
#define SP_SNAP_MAX_RESTARTS 5u
/* Times one chunk may fail verification before the snapshot restarts:
 * the first failure re-fetches it, the second restarts. */
#define SP_SNAP_CHUNK_ATTEMPTS 2u
/* Resumes in a row that wrote no new chunk before a restart. */
#define SP_SNAP_MAX_STALLS 5u
/* Failed commits in a row (SP_ERR_STORE, across reconnects) before the
 * snapshot restarts: a store that never takes it must not be asked for
 * ever. */
#define SP_SNAP_MAX_COMMIT_FAILS 3u
/* Chunks a follower keeps requested and not yet received, by default. */
#define SP_SNAP_WINDOW_DEFAULT 8u
/* Backoff before the request after restart n: base << (n-1), capped. */
#define SP_SNAP_BACKOFF_BASE SP_SECONDS
#define SP_SNAP_BACKOFF_MAX (60u * SP_SECONDS)
/* Leader defaults: chunk size, open snapshots, idle time kept. */
/* 256 KiB: a chunk frame well under half of a QUIC stream's default
 * receive window (1 MiB), so a chunk never waits on a window update the
 * transport has not announced yet; 16 GiB before the manifest's 65,536
 * hashes force larger chunks. */
#define SP_SNAP_CHUNK_DEFAULT (256u * 1024u)
#define SP_SNAP_MAX_OPEN_DEFAULT 4u
#define SP_SNAP_IDLE_DEFAULT (10u * 60u * SP_SECONDS)
/* With every slot taken, a request may evict the least recently used
 * snapshot unused for this long: a follower that went away must not lock
 * others out for the whole idle time. */
#define SP_SNAP_EVICT_IDLE (60u * SP_SECONDS)
/* Devices remembered per open snapshot; more are not recorded (it is
 * shared anyway, so never closed as abandoned). */
#define SP_SNAP_MAX_OWNERS 4u
/* Bytes of a SnapshotChunk / SnapshotManifest frame body besides the
 * chunk or the hashes (upper bounds: array, type, library, epoch, id,
 * integers, bin headers). */
#define SP_SNAP_CHUNK_OVERHEAD 64u
#define SP_SNAP_MANIFEST_OVERHEAD 128u

/* ---- follower ---- */

typedef enum sp_snap_fstate {
  SP_SNAP_F_IDLE = 0, /* no recovery under way */
  SP_SNAP_F_REQUEST,  /* a request is to be sent or awaits its manifest */
  SP_SNAP_F_FETCHING, /* manifest accepted, chunks being fetched */
  SP_SNAP_F_VERIFY,   /* every chunk durable: check S's hash with the
                         leader (sp_snap_fol_verify_fetch) */
  SP_SNAP_F_COMMIT,   /* checked; commit (again) with sp_snap_fol_commit */
  SP_SNAP_F_CUT,      /* stream lost or sink failed: sp_snap_fol_reconnect */
  SP_SNAP_F_DONE,     /* installed: the log stands at info.sequence */
  SP_SNAP_F_FAILED    /* gave up (SP_ERR_SNAPSHOT_FAILED) */
} sp_snap_fstate;

/* Progress, for the events the sessions will emit. */
typedef struct sp_snap_stats {
  uint64_t bytes_done;
  uint64_t total_size;
  uint64_t chunks_done;
  uint64_t chunk_count;
  /* Manifests accepted with chunks already held (a resume that kept
   * work), chunks refused by their hash, restarts made. */
  uint32_t resumes;
  uint32_t bad_chunks;
  uint32_t restarts;
} sp_snap_stats;

typedef struct sp_snap_fol {
  sp_mem mem;
  const sp_snapshot_sink *sink;
  uint32_t window;
  size_t max_frame;
  sp_snap_fstate state;
  /* A request is owed (sp_snap_fol_next_request hands it out); `fresh`:
   * for a new snapshot, whatever the sink has pending. */
  int need_request;
  int fresh;
  /* What the last request named (to tell a resume refused). */
  uint8_t asked_id[SP_SNAPSHOT_ID_LEN];
  uint64_t asked_have;
  /* What the sink said it holds when the request was made (has_pending
   * 0: nothing, or not asked): a manifest resumes only if equal. */
  sp_snapshot_info pending;
  int has_pending;
  /* Wait this long before sending it (after a restart), then 0. */
  sp_duration retry_after;
  /* The manifest being installed, its hashes (owned copy). */
  sp_snapshot_info info;
  uint8_t *hashes;
  uint64_t next_write; /* chunks durable in the sink */
  uint64_t next_fetch; /* chunks requested on this stream */
  uint32_t outstanding; /* requested, not received */
  uint32_t stale;       /* in flight but no longer wanted: dropped */
  /* 0, or the largest snapshot this follower accepts. */
  uint64_t max_bytes;
  uint64_t fail_index;
  uint32_t fails;
  uint32_t stalls;
  uint32_t commit_fails; /* in a row, this snapshot */
  uint64_t progress_mark;
  /* Why the last restart or failure happened (an SP_ERR_*). */
  int last_error;
  sp_snap_stats stats;
  /* A recovery was abandoned and the sink's abort failed: what it holds
   * pending is stale (the log may have moved past its S), never named
   * in a request, and aborted again before the next one begins. */
  int abandoned;
} sp_snap_fol;

/* Prepare `f` for `sink` (kept, not copied); window 0 means
 * SP_SNAP_WINDOW_DEFAULT, above SP_MAX_SNAPSHOT_WINDOW is clamped;
 * `max_frame` is the node's real frame limit (0: SP_MAX_FRAME_DEFAULT),
 * sent in requests so that the leader's chunks fit it.  `max_bytes` (0:
 * no limit) refuses larger snapshots with SP_ERR_SNAPSHOT_TOO_LARGE. */
void sp_snap_fol_init(sp_snap_fol *f, const sp_snapshot_sink *sink,
                      uint32_t window, size_t max_frame, uint64_t max_bytes,
                      const sp_mem *mem);
/* Free what `f` holds; the sink is not called. */
void sp_snap_fol_free(sp_snap_fol *f);

/*
 * A recovery begins (SyncRequired from a leader that advertised
 * SP_FEATURE_SNAPSHOT), from IDLE, DONE or FAILED: counters and stats
 * reset, a request is owed (resuming the sink's pending snapshot if it
 * has one, unless it is an abandoned one: sp_snap_fol_abandon).
 * Returns 0, or SP_ERR_INVALID_STATE (a recovery is under way).
 */
int sp_snap_fol_start(sp_snap_fol *f);

/*
 * The recovery is dropped for good (the host's full sync, a role change,
 * a leader serving the log again): under way, it goes IDLE with nothing
 * of it left in the stats (IDLE, DONE and FAILED stay), and the sink's
 * pending snapshot, if any, is aborted in any state: what it holds
 * may lie below the position the log reaches by other means, so no later
 * recovery may resume it.  A failing abort is tried again when the next
 * recovery starts; until one succeeds no request names the pending
 * snapshot.  Returns 0 or SP_ERR_STORE (the abort failed).
 */
int sp_snap_fol_abandon(sp_snap_fol *f);

/*
 * The stream carrying the transfer is gone (or the sink failed and the
 * session backed off): a new request is owed, resuming what the sink
 * holds.  From COMMIT too (commit_fails kept): the same manifest with
 * every chunk held goes to VERIFY, so the new stream's leader checks the
 * binding again before the commit (docs/protocol.md 14.8).  A restart's
 * wait not yet served (f->retry_after) is kept.  A reconnect that
 * follows one without a new durable chunk is a stall (not from COMMIT);
 * more than SP_SNAP_MAX_STALLS in a row restart the snapshot.
 * Returns 0, SP_ERR_INVALID_STATE (no recovery under way) or
 * SP_ERR_SNAPSHOT_FAILED (restarts exhausted; state FAILED).
 */
int sp_snap_fol_reconnect(sp_snap_fol *f);

/*
 * If a request is owed, fill `*out` (the sink's pending id and chunk
 * count, or an empty id; the pending manifest is kept to compare with
 * the answer), clear the debt and return 1; else 0.  Send it
 * after f->retry_after.  Returns SP_ERR_STORE if the sink's `pending`
 * failed (the request stays owed).
 */
int sp_snap_fol_next_request(sp_snap_fol *f, sp_msg_snapshot_request *out);

/*
 * A manifest arrived.  It is checked (sizes against count, chunk size,
 * hashes present) and compared with the sink's pending snapshot: unless
 * every field is equal the sink aborts first; then it begins it and says
 * what it already holds.  Holding fewer chunks than the request named
 * (work lost) counts as a restart.  Returns 0 (state FETCHING,
 * or VERIFY when nothing is left to fetch), SP_ERR_UNEXPECTED (no
 * request awaits a manifest), SP_ERR_SNAPSHOT_FAILED (that was one
 * restart too many: state FAILED),
 * SP_ERR_SNAPSHOT_TOO_LARGE (total_size above max_bytes: nothing begun
 * or aborted, state FAILED),
 * SP_ERR_SNAPSHOT_CORRUPT (inconsistent manifest: nothing begun; the
 * caller refuses the stream), SP_ERR_STORE (sink failed: state CUT),
 * SP_ERR_NOMEM.
 */
int sp_snap_fol_on_manifest(sp_snap_fol *f,
                            const sp_msg_snapshot_manifest *m);

/*
 * If a chunk range should be requested now (within the window), fill
 * `*out`, count it as in flight and return 1; else 0.  Call until 0.
 */
int sp_snap_fol_next_fetch(sp_snap_fol *f, sp_msg_snapshot_fetch *out);

/*
 * A chunk arrived.  The next chunk in order is verified against the
 * manifest before the sink writes it; a chunk that fails is fetched again
 * (what followed it on the wire is dropped), a second failure restarts
 * the snapshot.  Chunks no longer wanted are dropped.
 * Returns 0 (written, dropped or being re-fetched: see the state and
 * stats), SP_ERR_UNEXPECTED (a chunk nobody asked for: refuse the
 * stream), SP_ERR_STORE (sink failed: state CUT),
 * SP_ERR_SNAPSHOT_FAILED (restarts exhausted: state FAILED).
 */
int sp_snap_fol_on_chunk(sp_snap_fol *f, const sp_msg_snapshot_chunk *c);

/*
 * In state VERIFY: fill `*out` with the FetchEntries that checks the
 * manifest's binding (since = S, since_hash = hash at S, limit 1).
 * Returns 0 or SP_ERR_INVALID_STATE.
 */
int sp_snap_fol_verify_fetch(const sp_snap_fol *f,
                             sp_msg_fetch_entries *out);

/*
 * The leader's answer to that fetch: `ok` 1 when it served entries after
 * S (it holds our hash at S), 0 when it said SyncRequired.  ok: the sink
 * commits, as sp_snap_fol_commit.  Not ok: the snapshot is not of the
 * leader's history: restart (0, state REQUEST).  Returns what
 * sp_snap_fol_commit returns, or SP_ERR_INVALID_STATE.
 */
int sp_snap_fol_on_chain_checked(sp_snap_fol *f, int ok);

/*
 * In state COMMIT: the sink's commit (a reconnect goes back to REQUEST,
 * then VERIFY, before the next).  A sink that says the verified bytes can never
 * install (SP_ERR_SNAPSHOT_CORRUPT) restarts the snapshot at once; other
 * failures restart it once SP_SNAP_MAX_COMMIT_FAILS came in a row.  A
 * restart aborts the sink's pending snapshot and owes a request for a
 * new one after f->retry_after; f->last_error says why.
 * Returns 0 (state DONE: installed; or state REQUEST: restarted),
 * SP_ERR_STORE (failed; state COMMIT: sp_snap_fol_reconnect, verified
 * again on a later stream, then committed again),
 * SP_ERR_SNAPSHOT_FAILED (that restart was one too many: state FAILED),
 * SP_ERR_INVALID_STATE.
 */
int sp_snap_fol_commit(sp_snap_fol *f);

/* ---- leader ---- */

typedef struct sp_snap_srv_config {
  /* Most snapshots open at once (0: SP_SNAP_MAX_OPEN_DEFAULT). */
  size_t max_open;
  /* An open snapshot unused this long is closed (0: the default). */
  sp_duration idle;
  /* Preferred chunk size (0: SP_SNAP_CHUNK_DEFAULT); raised when the
   * snapshot would need more than its manifest can list. */
  uint32_t chunk_size;
  /* Our frame limit (0: default); a transfer uses the smaller of it and
   * the follower's, which its request carries. */
  size_t max_frame;
  /* Optional: the store's hash_at, to check the source's hash at S. */
  int (*hash_at)(sp_seq sequence, uint8_t out[SP_HASH_LEN], void *ctx);
  void *hash_ctx;
} sp_snap_srv_config;

typedef struct sp_snap_open {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  sp_snapshot_desc desc;
  void *handle;
  uint32_t chunk_size;
  size_t chunk_count;
  uint8_t *hashes;
  /* Chunks hashed so far: below chunk_count the snapshot is preparing
   * (sp_snap_srv_step) and serves nothing yet. */
  size_t prepared;
  sp_tstamp last_use;
  /* The devices that requested it (the first SP_SNAP_MAX_OWNERS). */
  sp_uuid owners[SP_SNAP_MAX_OWNERS];
  uint32_t n_owners;
} sp_snap_open;

typedef struct sp_snap_srv {
  sp_mem mem;
  const sp_snapshot_source *src;
  sp_snap_srv_config cfg;
  sp_snap_open *open;
  size_t n_open;
  uint8_t *scratch;
  size_t scratch_cap;
  /* One chunk is hashed across step calls at a time: whose, how far
   * (bytes fed), and the BLAKE2b state (aligned inside state_mem). */
  int hashing;
  uint8_t hash_id[SP_SNAPSHOT_ID_LEN];
  size_t hash_off;
  void *state_mem;
  void *state;
  /* Where the round robin of preparing snapshots goes on. */
  size_t rr;
} sp_snap_srv;

/*
 * Prepare `s` for `src` (kept, not copied) with `cfg` (copied; NULL: all
 * defaults).  Returns 0, SP_ERR_INVALID_ARGUMENT (a source without open,
 * read or close) or SP_ERR_NOMEM.
 */
int sp_snap_srv_init(sp_snap_srv *s, const sp_snapshot_source *src,
                     const sp_snap_srv_config *cfg, const sp_mem *mem);
/* Close every open snapshot and free `s`.  `forget` 0 when the handler
 * goes away and may restart as leader (the host may keep them for
 * reopen); 1 when no leader of this node will ask again (it stopped
 * being leader). */
void sp_snap_srv_free(sp_snap_srv *s, int forget);

/*
 * A SnapshotRequest from device `owner` (NULL: unknown): the snapshot it
 * names if still open (or reopened by the source), else a new one under
 * `new_id` (random, from the caller).  Idle snapshots are expired first.
 * A request that names no open snapshot (an empty id, or one not held)
 * from a device that alone uses a snapshot still being prepared gets
 * that one (SP_SNAP_PREPARING): cut off before its manifest came, the
 * follower has nothing of it to name.  A prepared snapshot is never
 * reused for such a request: an empty id is also how a follower
 * restarts away from a snapshot it could not use.
 * A request that opens one (new or reopened) first closes (forget 1)
 * every open snapshot `owner` alone used and did not name: a follower
 * runs one transfer at a time, so those are abandoned.  If every slot is
 * still taken, the least recently used snapshot unused for
 * SP_SNAP_EVICT_IDLE is closed to make room.  An opened snapshot serves
 * nothing until sp_snap_srv_step has hashed it: until then this returns
 * SP_SNAP_PREPARING with out->id alone set (and so does a request naming
 * one still preparing); sp_snap_srv_manifest gives the manifest later.
 * `*out` points into `s` (the hashes) until that snapshot is closed;
 * encode it at once.  An open snapshot too large for the request's frame
 * limit is not reopened: a new one is made under `new_id`.
 * Returns 0, SP_SNAP_PREPARING, SP_ERR_INVALID_ARGUMENT (`new_id` is
 * already open), SP_ERR_SNAPSHOT_UNAVAILABLE (max_open snapshots in use
 * and none idle long enough to evict, or too large for the frame
 * limit), SP_ERR_CHAIN_MISMATCH (a new snapshot's hash at S is not the
 * store's, or the store has no entry at its S; a reopened snapshot whose
 * S was pruned, or whose hash at S is no longer the store's, is
 * forgotten and replaced by a new one), SP_ERR_STORE (a source or
 * hash_at call failed), SP_ERR_NOMEM.
 */
int sp_snap_srv_request(sp_snap_srv *s, const sp_msg_snapshot_request *req,
                        const uint8_t new_id[SP_SNAPSHOT_ID_LEN],
                        const sp_uuid *owner, sp_tstamp now,
                        sp_msg_snapshot_manifest *out);

/* sp_snap_srv_request / sp_snap_srv_manifest: the snapshot is open but its
 * chunk hashes are still being computed (sp_snap_srv_step); out->id says
 * which one. */
#define SP_SNAP_PREPARING 1

/*
 * The manifest of open snapshot `id` once it is prepared: 0 (`*out` as
 * for sp_snap_srv_request), SP_SNAP_PREPARING (not yet),
 * SP_ERR_SNAPSHOT_UNAVAILABLE (not open any more, or preparing it failed).
 */
int sp_snap_srv_manifest(sp_snap_srv *s, const uint8_t id[SP_SNAPSHOT_ID_LEN],
                         sp_tstamp now, sp_msg_snapshot_manifest *out);

/*
 * Hash at most `budget` more bytes of the snapshots being prepared, so
 * that opening a large snapshot never blocks the node's loop for long.
 * Returns 1 if work remains (call again at once), 0 if none.  A source
 * read failure closes that snapshot (its manifest calls then return
 * SP_ERR_SNAPSHOT_UNAVAILABLE).
 */
int sp_snap_srv_step(sp_snap_srv *s, size_t budget, sp_tstamp now);

/* The lowest S of the open snapshots (UINT64_MAX: none): the log must
 * keep S's link while a follower may still install and verify one. */
sp_seq sp_snap_srv_min_sequence(const sp_snap_srv *s);

/* 1 if any open snapshot is still preparing (step has work), else 0. */
int sp_snap_srv_preparing(const sp_snap_srv *s);

/*
 * A SnapshotFetch: 0 if every chunk asked for exists (and the snapshot's
 * idle clock restarts), SP_ERR_SNAPSHOT_UNAVAILABLE (no such snapshot
 * open, or still preparing: the follower asks again), SP_ERR_UNEXPECTED
 * (chunks past the
 * end: refuse the stream).
 */
int sp_snap_srv_check_fetch(sp_snap_srv *s, const sp_msg_snapshot_fetch *f,
                            sp_tstamp now);

/*
 * Read chunk `index` of snapshot `id` into `*out` (data in a buffer of
 * `s`, valid until the next call on `s`).  Returns 0,
 * SP_ERR_SNAPSHOT_UNAVAILABLE (not open, or preparing),
 * SP_ERR_UNEXPECTED (no such chunk),
 * SP_ERR_STORE (the source failed), SP_ERR_NOMEM.
 */
int sp_snap_srv_chunk(sp_snap_srv *s, const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      uint64_t index, sp_tstamp now,
                      sp_msg_snapshot_chunk *out);

/* Close (forget 1) every snapshot idle for cfg.idle at `now`; one
 * preparing is in use (a request waits for it). */
void sp_snap_srv_expire(sp_snap_srv *s, sp_tstamp now);
/* When the next one would expire (UINT64_MAX: none open but preparing
 * ones, which do not expire). */
sp_tstamp sp_snap_srv_next_expiry(const sp_snap_srv *s);

/* Shared by both sides (and by sp_snap_srv.c). */
static inline uint64_t sp_snap_chunk_count(uint64_t total,
                                           uint32_t chunk_size) {
  return total / chunk_size + (total % chunk_size != 0);
}
/* Length of chunk `i` of a snapshot of `total` bytes. */
static inline size_t sp_snap_chunk_len(uint64_t total, uint32_t chunk_size,
                                       uint64_t i) {
  uint64_t left = total - i * chunk_size;

  return (size_t)(left < chunk_size ? left : chunk_size);
}

#endif /* SP_SNAPSHOT_H */
