/*
 * sqlite_store.h: the reference sync-log store on an SQLite file.
 *
 * One row per entry keyed by sequence, with its chain hash and origin_seq,
 * and a small metadata table (applied sequence, head hash, epoch,
 * pruned-through point).  It implements the whole store vtable, version 3
 * included: an index of origin ids, the committed set (every origin id
 * the log ever held, as per-device ranges kept through pruning:
 * find_origin) and the outbox, in the same file.  WAL journal;
 * every call is one transaction with prepared statements (a follower batch,
 * with the outbox items it commits, is applied in one); the leader's next
 * sequence is always read from the file inside the appending transaction,
 * never from a counter in memory.  A store object is single-threaded: call
 * it from one thread at a time (its own apply thread, below, is the
 * store's business).
 *
 * Apply thread (sp_sqlite_config.apply_thread): the store commits the
 * follower's batches on a thread of its own, through a second connection
 * to the file, so that a follower decodes and verifies its next page
 * while SQLite writes the last one.  The vtable's `apply` then copies the
 * batch into a queue bounded in bytes (waiting for room when it is full)
 * and returns SP_STORE_PENDING; `durable` reports what is committed; the
 * host polls sp_sqlite_store_wait_fd and calls sp_node_handle_expiry when
 * it turns readable (sys/store.h, `durable`).  Every other call waits
 * until the queue is drained and then answers from the file, except
 * `state`, which answers from what is queued at once.
 */
#ifndef SYNC_PROTOCOL_SQLITE_STORE_H
#define SYNC_PROTOCOL_SQLITE_STORE_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/sys/snapshot.h"
#include "sync_protocol/sys/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_sqlite_store sp_sqlite_store;

typedef enum sp_sqlite_sync {
  /* PRAGMA synchronous=NORMAL: durable across process crashes; a power
   * loss may roll back the last transactions (never corrupt).  The
   * outbox's own transactions (outbox_put, outbox_remove, outbox_anchor)
   * run under FULL whatever this says: an origin is never assigned twice,
   * even across a power loss (about 0.25 ms more per call on a VM disk). */
  SP_SQLITE_SYNC_NORMAL = 0,
  /* PRAGMA synchronous=FULL: durable across power loss too. */
  SP_SQLITE_SYNC_FULL = 1
} sp_sqlite_sync;

/* 2 added apply_thread and apply_queue_bytes; a version 1 struct is still
 * accepted (they then take their defaults). */
#define SP_SQLITE_CONFIG_VERSION 2

/* Default of apply_queue_bytes. */
#define SP_SQLITE_APPLY_QUEUE_DEFAULT (4u * 1024u * 1024u)

typedef struct sp_sqlite_config {
  /* SP_SQLITE_CONFIG_VERSION; set by sp_sqlite_config_default. */
  unsigned int version;
  sp_sqlite_sync synchronous;
  /* 1: create the file and schema if missing (1).  0: refuse. */
  int create;
  /* 1: open read-only (status tools) (0). */
  int read_only;
  /* Milliseconds to wait on a lock held by another connection (5000). */
  int busy_timeout_ms;
  /* Version 2.  1: commit follower batches on a thread of the store's own
   * (above; the vtable gets `durable`).  0: `apply` commits before it
   * returns, and the store starts no thread (0).  Not with read_only, and
   * only for a database with a file name (not ":memory:"). */
  int apply_thread;
  /* Version 2.  With apply_thread: the most bytes of copied batches
   * (entries, payloads, hashes) waiting or being committed; `apply` waits
   * for room beyond it.  A batch larger than this is taken alone, once
   * the queue is empty.  0 means SP_SQLITE_APPLY_QUEUE_DEFAULT (4 MiB). */
  size_t apply_queue_bytes;
} sp_sqlite_config;

/* Fill `cfg` with the defaults above. */
SP_API void sp_sqlite_config_default(sp_sqlite_config *cfg);

/*
 * Open (and if allowed create) the store at `path` (NUL-terminated,
 * copied).  `cfg` NULL means defaults.  The file's metadata is checked
 * against its rows; a file whose applied sequence disagrees with its table
 * is refused.  A file of the previous schema (written before the outbox
 * existed) is migrated in one transaction by the first writable open; a
 * read-only open of such a file fails with SP_ERR_VERSION, as does a file
 * of a newer schema.  Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION,
 * SP_ERR_IO (cannot open or create), SP_ERR_STORE (an SQLite error),
 * SP_ERR_STORE_CORRUPT (not a sync log, or inconsistent), SP_ERR_NOMEM.
 * With apply_thread also SP_ERR_INVALID_ARGUMENT (read_only, or no file
 * name), SP_ERR_NOT_SUPPORTED (an SQLite built without threads) and
 * SP_ERR_IO (no thread or eventfd could be made).
 */
SP_API int sp_sqlite_store_open(sp_sqlite_store **pstore, const char *path,
                                const sp_sqlite_config *cfg,
                                const sp_mem *mem);

/* Finalize statements, close the database, free.  NULL is allowed.  With
 * apply_thread, the batches still queued are committed first (a failure
 * among them drops it and the later ones, as ever), then the thread is
 * joined: closing may take as long as the queue takes to commit. */
SP_API void sp_sqlite_store_close(sp_sqlite_store *store);

/*
 * With apply_thread: a descriptor (an eventfd) that turns readable when
 * `durable` advanced or a failed commit is waiting to be reported.  Poll
 * it for reading in the loop that drives the node, and when it is
 * readable call sp_sqlite_store_wait_clear, then sp_node_handle_expiry
 * (the follower asks `durable`, acknowledges and reports
 * SP_EVENT_ENTRIES_APPLIED).  The vtable's `durable` clears it too, so it
 * never stays readable for news the node has seen.  Owned by the store:
 * do not read, write or close it; valid until sp_sqlite_store_close.
 * Returns the descriptor (>= 0), SP_ERR_INVALID_ARGUMENT (NULL) or
 * SP_ERR_INVALID_STATE (opened without apply_thread).
 */
SP_API int sp_sqlite_store_wait_fd(const sp_sqlite_store *store);

/*
 * With apply_thread: make sp_sqlite_store_wait_fd unreadable until the
 * next news.  Call it before handing the news to the node, so that a
 * commit finishing in between wakes the loop again.  Returns 0,
 * SP_ERR_INVALID_ARGUMENT (NULL) or SP_ERR_INVALID_STATE (opened without
 * apply_thread).
 */
SP_API int sp_sqlite_store_wait_clear(sp_sqlite_store *store);

/*
 * Returns why the store's most recent failed call failed, in the manner
 * of sqlite3_errmsg (which it is, most of the time): "database or disk is
 * full", "database is locked", with the OS's errno text when SQLite had
 * one ("disk I/O error (File too large)"); "" if the call had no
 * such detail.  With `store` NULL: the text of the calling thread's most
 * recent sp_sqlite_store_open if it failed ("unable to open database file
 * (No such file or directory)"; SP_ERR_IO also leaves errno set), else
 * "".  Ask right after the failure, as with errno: a later call may
 * replace or clear the text (a successful one need not).  The string is
 * owned by the store (the thread, for NULL) and valid until the next
 * call on it (the thread's next open).  Never NULL.
 *
 * The store has no log of its own: the vtable's `errmsg` (sys/store.h) is
 * this call, so the library puts the text into SP_EVENT_STORE_FAILED's
 * message and its WARN log line ("store apply failed: database or disk
 * is full"), the one channel the host already reads.
 */
SP_API const char *sp_sqlite_store_errmsg(const sp_sqlite_store *store);

/* Fill `*out` with the store vtable (user_data is `store`) as struct
 * version `version` (SP_STORE_VERSION: the macro
 * sp_sqlite_store_get_vtable(store, out) passes it; out->version is set to
 * it and only that version's bytes are written).  With apply_thread and a
 * version of 5 or more, `durable` is set and `apply` returns
 * SP_STORE_PENDING; for an older version (a caller that knows no PENDING)
 * `apply` commits before it returns, as without the thread.  Returns 0,
 * SP_ERR_INVALID_ARGUMENT or SP_ERR_VERSION (a version this build does not
 * know). */
SP_API int sp_sqlite_store_get_vtable_versioned(sp_sqlite_store *store,
                                                int version, sp_store *out);
#define sp_sqlite_store_get_vtable(store, out)                             \
  sp_sqlite_store_get_vtable_versioned((store), SP_STORE_VERSION, (out))

/*
 * Leader: append `n` entries in one transaction.  Each entry's sequence
 * is ignored and assigned: latest + 1, latest + 2, ... read from the file;
 * the first assigned one goes to `*first` (may be NULL).  Entries are
 * copied, origin_seq included (0 for none).  The vtable's `append` is this
 * call.  Returns 0, SP_ERR_INVALID_ARGUMENT (NULL, n == 0, an invalid
 * entry: change type out of range, model_type over SP_MAX_MODEL_TYPE_LEN,
 * origin_seq over INT64_MAX), SP_ERR_EXISTS (an origin id (device_id,
 * origin_seq) in the log's committed set, retained or pruned, or twice in
 * the batch: nothing appended), SP_ERR_STORE (nothing appended).
 */
SP_API int sp_sqlite_store_append(sp_sqlite_store *store,
                                  const sp_entry *entries, size_t n,
                                  sp_seq *first);

/*
 * Delete every entry with sequence <= `through`, keeping the chain hash at
 * `through` and the committed set of origin ids (find_origin answers 0
 * with sequence 0 for a pruned one).  Returns 0, SP_ERR_INVALID_ARGUMENT
 * (`through` past the latest sequence), SP_ERR_STORE.
 */
SP_API int sp_sqlite_store_prune(sp_sqlite_store *store, sp_seq through);

/*
 * Record the leader epoch with the log (a new leader raises it before
 * serving).  Returns 0, SP_ERR_INVALID_ARGUMENT (lower than the stored
 * epoch), SP_ERR_STORE.
 */
SP_API int sp_sqlite_store_set_epoch(sp_sqlite_store *store, uint64_t epoch);

/*
 * Follower, after SyncRequired: empty the log and set its state to
 * `applied` with `head_hash` (what the full sync brought).  The outbox
 * stays (items, next origin, anchored flag), and in the same transaction
 * every discarded row carrying the outbox device's origin id with a
 * sequence above `applied` goes back into it with its origin_seq: the
 * full sync covers what is at or below `applied`, and a write of this
 * device above it must be proposed again (the leader's dedupe answers for
 * one it already holds).  The put-back origins leave the log's committed
 * set in the same transaction (find_origin: SP_ERR_NOT_FOUND until the
 * write is applied again), so the device treats them as pending, even if
 * it becomes leader.  The rest of the committed set is kept as it was
 * (there is no source to replace it from): this device's origins at or
 * below `applied`, and every other device's origins, discarded rows
 * above `applied` included, which still answer "held and pruned" (0,
 * sequence 0).  The host's full sync is assumed to bring the same
 * history up to `applied` (and the new history's entries above it bring
 * their origins when applied); the snapshot path (issue 13) carries the
 * source's committed set instead.
 * Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_STORE.
 */
SP_API int sp_sqlite_store_reset(sp_sqlite_store *store, sp_seq applied,
                                 const uint8_t head_hash[SP_HASH_LEN]);

/* sp_sqlite_status's version (sp_sqlite_store_status). */
#define SP_SQLITE_STATUS_VERSION 1

typedef struct sp_sqlite_status {
  uint64_t entry_count;
  /* Lowest and highest sequence held (0 if empty). */
  sp_seq first;
  sp_seq latest;
  sp_seq pruned_through;
  /* Chain hash after `latest` (or after pruned_through if empty). */
  uint8_t head_hash[SP_HASH_LEN];
  uint64_t epoch;
} sp_sqlite_status;

/* Fill `*out` as struct version `version` (SP_SQLITE_STATUS_VERSION: the
 * macro sp_sqlite_store_status(store, out) passes it; only the bytes of
 * that version are written).  Returns 0, SP_ERR_INVALID_ARGUMENT,
 * SP_ERR_VERSION (a version this build does not know),
 * SP_ERR_INVALID_STATE (inside a read the store has open) or
 * SP_ERR_STORE. */
SP_API int sp_sqlite_store_status_versioned(sp_sqlite_store *store,
                                            int version,
                                            sp_sqlite_status *out);
#define sp_sqlite_store_status(store, out)                                 \
  sp_sqlite_store_status_versioned((store), SP_SQLITE_STATUS_VERSION, (out))

/*
 * Recompute the hash chain over every row and compare it with the stored
 * hashes; store the head in `digest` (may be NULL).  Returns 0,
 * SP_ERR_CHAIN_MISMATCH (the file's rows do not match their hashes),
 * SP_ERR_STORE.
 */
SP_API int sp_sqlite_store_verify(sp_sqlite_store *store,
                                  uint8_t digest[SP_HASH_LEN]);

/*
 * Fill `*out` with a snapshot source over this store's file
 * (sys/snapshot.h; user_data is `store`), for a leader whose followers
 * recover from SyncRequired.  The bytes are "log snapshot v1"
 * (docs/integration.md): the log at its latest sequence S when `open`
 * runs (entries, links, prune point, epoch, committed set of origin ids).
 * `open` reads through a second connection to the file inside one read
 * transaction (the store keeps appending meanwhile; nothing after S shows
 * through) and writes the bytes into `<path>-snapshots/<id hex>.part` as
 * reads reach further; once complete the file is synced and renamed
 * `<id hex>.snap` and the read transaction ends.  `reopen` opens a
 * complete `.snap` file again (SP_ERR_NOT_FOUND if there is none);
 * `close` deletes an incomplete file, and a complete one when forget is
 * 1 (with forget 0 it stays for a restarted leader).  Kept files expire:
 * this call deletes every `.part` file and every `.snap` file older than
 * 24 hours in that directory, so use one source per database file.  The
 * store must outlive every handler given the source.  Written as struct
 * version `version` (SP_SNAPSHOT_SOURCE_VERSION: the macro
 * sp_sqlite_store_snapshot_source(store, out) passes it; only that
 * version's bytes are written).  Returns 0, SP_ERR_INVALID_ARGUMENT (NULL,
 * or a database without a file name), SP_ERR_VERSION (a version this
 * build does not know).
 */
SP_API int sp_sqlite_store_snapshot_source_versioned(sp_sqlite_store *store,
                                                     int version,
                                                     sp_snapshot_source *out);
#define sp_sqlite_store_snapshot_source(store, out)                        \
  sp_sqlite_store_snapshot_source_versioned((store),                       \
                                            SP_SNAPSHOT_SOURCE_VERSION, (out))

/*
 * Fill `*out` with a snapshot sink into this store (sys/snapshot.h;
 * user_data is `store`), for a follower that recovers from SyncRequired.
 * The pending snapshot's info and chunks live in a side database
 * `<path>-snapin` (one synchronous=FULL transaction per chunk: a chunk is
 * durable when write_chunk returns, and a restarted process resumes from
 * `pending`).  `commit` parses the chunks in order (anything malformed,
 * not matching the info begun, or beyond what the file holds, such as S
 * above 2^63 - 1: SP_ERR_SNAPSHOT_CORRUPT) and installs them in ONE
 * transaction on the store's connection: the rows, the committed set, the
 * metadata (applied S, link(S), the higher of the old epoch and the
 * snapshot's, prune point) and the full-sync outbox rules (sys/store.h);
 * on any failure nothing changed and the chunks stay pending; after it
 * nothing is pending.  Once a commit or abort has emptied the side
 * database, its files are deleted (the next begin creates it again).  The
 * store must outlive every handler given the sink.  Written as struct
 * version `version` (SP_SNAPSHOT_SINK_VERSION: the macro
 * sp_sqlite_store_snapshot_sink(store, out) passes it; only that
 * version's bytes are written).  Returns 0, SP_ERR_INVALID_ARGUMENT (NULL,
 * or a database without a file name), SP_ERR_VERSION (a version this
 * build does not know).
 */
SP_API int sp_sqlite_store_snapshot_sink_versioned(sp_sqlite_store *store,
                                                   int version,
                                                   sp_snapshot_sink *out);
#define sp_sqlite_store_snapshot_sink(store, out)                          \
  sp_sqlite_store_snapshot_sink_versioned((store), SP_SNAPSHOT_SINK_VERSION, \
                                          (out))

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_SQLITE_STORE_H */
