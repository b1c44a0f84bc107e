/*
 * sys/snapshot.h: the snapshot source (leader) and sink (follower) a host
 * implements, for recovery after SyncRequired (docs/protocol.md,
 * "Snapshots").
 *
 * What the bytes of a snapshot are is the host's business (its catalogue
 * database at S, the retained log and the base it was pruned to, ...):
 * the library cuts them into chunks, hashes, moves and verifies them, and
 * hands them to the follower's sink one chunk at a time, in order, each
 * verified before it is written.  A handler uses them when its config
 * (version 4) names them: snapshot_source on a leader, snapshot_sink on a
 * follower.  The stores provide reference ones (mem_store.h,
 * sqlite_store.h; docs/integration.md 6.3).
 *
 * Callback contract (as for sys/store.h): return 0 on success or a
 * negative value on failure.  A failing callback is reported to the caller
 * as SP_ERR_STORE, except where a callback's doc names a code that is
 * passed through (SP_ERR_NOT_FOUND from `reopen` and `pending`,
 * SP_ERR_SNAPSHOT_CORRUPT from `commit`).  Every pointer the library passes is
 * valid during the call only, unless the doc says otherwise.
 */
#ifndef SYNC_PROTOCOL_SYS_SNAPSHOT_H
#define SYNC_PROTOCOL_SYS_SNAPSHOT_H

#include "sync_protocol/types.h"
#include "sync_protocol/codec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_SNAPSHOT_SOURCE_VERSION 1
#define SP_SNAPSHOT_SOURCE_INIT \
  {SP_SNAPSHOT_SOURCE_VERSION, NULL, NULL, NULL, NULL, NULL}

#define SP_SNAPSHOT_SINK_VERSION 1
#define SP_SNAPSHOT_SINK_INIT \
  {SP_SNAPSHOT_SINK_VERSION, NULL, NULL, NULL, NULL, NULL, NULL}

/* What a source says about the snapshot it opened. */
typedef struct sp_snapshot_desc {
  /* S: the log sequence the snapshot's state stands at (every entry up
   * to S is in it, none after). */
  sp_seq sequence;
  /* The log's chain hash after entry S (its link(S); zeros for S = 0). */
  uint8_t hash_at[SP_HASH_LEN];
  /* The leader epoch recorded with the log at S. */
  uint64_t epoch;
  /* Bytes of the snapshot (0 is allowed: an empty state). */
  uint64_t total_size;
} sp_snapshot_desc;

typedef struct sp_snapshot_source {
  /* SP_SNAPSHOT_SOURCE_VERSION. */
  unsigned int version;
  /* Passed to every callback; must outlive the handler using the source. */
  void *user_data;

  /*
   * Open a consistent snapshot of the host's state at the log's current
   * position S under the new snapshot id `id` (chosen at random by the
   * library; copy it if needed), fill `*out`, and set `*handle` to
   * anything the host needs to read it later (the library only passes it
   * back).  The bytes must not change while the snapshot is open: later
   * appends or prunes of the log must not show through.  `out->hash_at`
   * must be the chain hash the log holds at S; the library checks it
   * against the store's hash_at(S) where the store still has it and
   * refuses the snapshot (SP_ERR_CHAIN_MISMATCH) if they differ.
   */
  int (*open)(const uint8_t id[SP_SNAPSHOT_ID_LEN], sp_snapshot_desc *out,
              void **handle, void *user_data);

  /*
   * Optional (NULL: never).  Open again the snapshot a previous `open`
   * created under `id`, after the library lost it (a leader restart),
   * with exactly the same bytes and description: this is what lets a
   * follower resume across a leader restart.  Return SP_ERR_NOT_FOUND
   * (passed through) if the host no longer keeps it; the library then
   * opens a new one and the follower starts over.  The library recomputes
   * the chunk hashes from the bytes, and a follower resumes only if they
   * all equal those it began with.
   */
  int (*reopen)(const uint8_t id[SP_SNAPSHOT_ID_LEN], sp_snapshot_desc *out,
                void **handle, void *user_data);

  /*
   * Copy exactly `len` bytes of the snapshot, starting at byte `offset`,
   * into `buf` (offset + len <= total_size).  Called many times, in any
   * order, while the snapshot is open.
   */
  int (*read)(void *handle, uint64_t offset, uint8_t *buf, size_t len,
              void *user_data);

  /*
   * The library is done with `handle`.  `forget` is 1 when the library
   * will never ask for this id again (it expired, or was replaced): the
   * host may delete it; 0 when the handler is being deleted, which may be
   * a restart: a host with `reopen` keeps the snapshot a while (its own
   * policy) so that followers can resume.  Cannot fail.
   */
  void (*close)(void *handle, int forget, void *user_data);
} sp_snapshot_source;

/* What a sink is asked to begin: a manifest the follower accepted. */
typedef struct sp_snapshot_info {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  /* S, link(S) and the epoch at S: the follower's log stands there once
   * the snapshot is committed. */
  sp_seq sequence;
  uint8_t hash_at[SP_HASH_LEN];
  uint64_t epoch;
  uint64_t total_size;
  uint32_t chunk_size;
  uint64_t chunk_count;
  /* BLAKE2b-256 over the manifest's chunk hashes, in order: two manifests
   * with the same digest promise the same bytes. */
  uint8_t digest[SP_HASH_LEN];
} sp_snapshot_info;

typedef struct sp_snapshot_sink {
  /* SP_SNAPSHOT_SINK_VERSION. */
  unsigned int version;
  /* Passed to every callback; must outlive the handler using the sink. */
  void *user_data;

  /*
   * The snapshot begun and not yet committed or aborted, if any, even
   * from before a restart: copy the whole `sp_snapshot_info` it was begun
   * with to `*info` and the number of leading chunks it holds durably to
   * `*have`.  Return SP_ERR_NOT_FOUND (passed through) if there is none.
   * The follower asks the leader to resume that id, and resumes only if
   * the leader's manifest matches every field of `*info`.
   */
  int (*pending)(sp_snapshot_info *info, uint64_t *have, void *user_data);

  /*
   * Begin installing the snapshot `info` (copy what you keep).  The
   * library compares manifests itself: it calls `begin` either with
   * exactly the `info` that `pending` reported (resume: keep its chunks
   * and set `*have` to the number of leading chunks held durably) or
   * after `abort` (nothing pending: remember `info` durably and set
   * `*have` to 0).  Nothing of it may be visible as the host's state
   * before `commit`.
   */
  int (*begin)(const sp_snapshot_info *info, uint64_t *have, void *user_data);

  /*
   * Write chunk `index` (`len` bytes, already verified against the
   * manifest) durably before returning.  Chunks come in order: `index` is
   * always the number of chunks held so far.
   */
  int (*write_chunk)(uint64_t index, const uint8_t *data, size_t len,
                     void *user_data);

  /*
   * Every chunk is written and the snapshot's binding to the leader's
   * chain was checked: install it atomically and durably.  Afterwards the
   * host's state is the snapshot's and the follower's log stands at
   * info.sequence with chain head info.hash_at (store.state reports
   * that), and its recorded epoch is the higher of the one it had and
   * info.epoch, written in the same transaction: an epoch never goes
   * back.  The log's outbox is kept, and entries of the discarded log
   * that carry this device's origin and are neither in the new log nor
   * covered by it are put back into the outbox, as for a full sync
   * (sys/store.h).  On failure nothing changed (the old state stays, and
   * the chunks stay pending).  Return SP_ERR_SNAPSHOT_CORRUPT (passed
   * through) when the pending bytes can never install: they do not parse
   * or verify, disagree with `info`, or hold what the host cannot store;
   * the library then discards them and starts the snapshot over.  Any
   * other failure is taken for a store error that may clear: the library
   * keeps the chunks and tries the commit again later.
   */
  int (*commit)(void *user_data);

  /*
   * Discard the pending snapshot, if any (durably: `pending` then says
   * there is none).  The host's state is untouched.
   */
  int (*abort)(void *user_data);
} sp_snapshot_sink;

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_SYS_SNAPSHOT_H */
