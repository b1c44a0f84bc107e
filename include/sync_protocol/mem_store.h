/*
 * mem_store.h: a sync-log store held in memory.
 *
 * It implements every callback of sp_store (version 3: the outbox and the
 * origin index too), for either role, and adds the leader-side append and
 * prune a host needs.  Nothing is durable: it suits tests, benchmarks,
 * caches and examples.  Payloads are copied into large arena blocks, so
 * appending does not allocate per entry.
 */
#ifndef SYNC_PROTOCOL_MEM_STORE_H
#define SYNC_PROTOCOL_MEM_STORE_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/sys/snapshot.h"
#include "sync_protocol/sys/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_mem_store sp_mem_store;

/* Create an empty store.  Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_NOMEM. */
SP_API int sp_mem_store_new(sp_mem_store **pstore, const sp_mem *mem);

/* Free the store and every entry in it.  NULL is allowed. */
SP_API void sp_mem_store_del(sp_mem_store *store);

/*
 * Fill `*out` with the store's vtable (user_data is `store`) as struct
 * version `version` (SP_STORE_VERSION: the macro
 * sp_mem_store_get_vtable(store, out) passes it; out->version is set to
 * it and only that version's bytes are written).  The store must outlive
 * every handler given the vtable.  Returns 0, SP_ERR_INVALID_ARGUMENT or
 * SP_ERR_VERSION (a version this build does not know).
 */
SP_API int sp_mem_store_get_vtable_versioned(sp_mem_store *store, int version,
                                             sp_store *out);
#define sp_mem_store_get_vtable(store, out)                                \
  sp_mem_store_get_vtable_versioned((store), SP_STORE_VERSION, (out))

/*
 * Leader: append a copy of `entry` as the next entry.  If
 * entry->sequence is 0 the store assigns latest + 1; otherwise it must
 * exceed the latest sequence (leaving a gap is allowed).  entry->origin_seq
 * is kept with the entry (0 for none).  The assigned sequence goes to
 * `*seq` (may be NULL).  Returns 0, SP_ERR_INVALID_ARGUMENT (sequence not
 * after latest, invalid entry), SP_ERR_EXISTS (the origin id (device_id,
 * origin_seq) is in the log's committed set, retained or pruned: nothing
 * appended), or SP_ERR_NOMEM.
 */
SP_API int sp_mem_store_append(sp_mem_store *store, const sp_entry *entry,
                               sp_seq *seq);

/*
 * Drop every entry with sequence <= `through` (the chain hash at `through`
 * is kept so a follower there can still be checked; so is the committed
 * set of origin ids, for find_origin).  Returns 0 or
 * SP_ERR_INVALID_ARGUMENT (`through` past the latest sequence).
 */
SP_API int sp_mem_store_prune(sp_mem_store *store, sp_seq through);

/*
 * Copy the entry numbered `sequence` into `*out` (pointers into the store,
 * valid until the entry is pruned or the store deleted) and, if `hash` is
 * not NULL, its chain hash.  Returns 0 or SP_ERR_NOT_FOUND.
 */
SP_API int sp_mem_store_get(const sp_mem_store *store, sp_seq sequence,
                            sp_entry *out, uint8_t hash[SP_HASH_LEN]);

/* Returns the number of entries held (pruned ones not counted). */
SP_API size_t sp_mem_store_count(const sp_mem_store *store);

/*
 * Replace the whole log by a snapshot of `src` (a full sync): entries,
 * chain hashes, bounds, epoch and the committed set of origin ids (every
 * origin id `src`'s log ever held, pruned ones included: sys/store.h,
 * find_origin).  The outbox of `store` stays (next origin, anchored flag,
 * device), except that an item whose origin id is in `src`'s committed
 * set is removed (it is committed in the new history).  Every entry of the
 * discarded log that carried the outbox device's origin id and is not in
 * `src`'s committed set goes back into the outbox with the same
 * origin_seq: a write the new history lost is proposed again.  The next
 * origin is raised above the device's highest origin_seq in `src`'s
 * committed set.  Returns 0 or SP_ERR_NOMEM (then `store` is unchanged).
 */
SP_API int sp_mem_store_copy_from(sp_mem_store *store,
                                  const sp_mem_store *src);

/*
 * TESTING ONLY (fault injection): make the next `count` calls to the
 * vtable's `apply` fail with SP_ERR_STORE before changing anything.
 */
SP_API void sp_mem_store_fail_applies(sp_mem_store *store, unsigned count);

/*
 * TESTING ONLY (fault injection): make the next `count` calls to the
 * vtable's `append` (version 3) fail with SP_ERR_STORE before changing
 * anything.
 */
SP_API void sp_mem_store_fail_appends(sp_mem_store *store, unsigned count);

/*
 * Fill `*out` with a snapshot source over this store (sys/snapshot.h;
 * user_data is `store`), for a leader whose followers recover from
 * SyncRequired.  `open` keeps an image of the log at its latest sequence
 * S (entries, links, the prune point and its link, the epoch, the
 * committed set of origin ids) in the store under the snapshot id, so
 * appends and prunes after it do not show through; the bytes are "log
 * snapshot v1" (docs/integration.md).  `reopen` finds the image while the
 * store lives (a new handler on the same store resumes transfers);
 * `close` with forget 1 frees it, with forget 0 keeps it: at most 8 kept
 * images, the least recently used dropped first.  `open` with an id
 * already kept makes a new image; one still open stays readable through
 * its handle until closed.  The store must outlive
 * every handler given the source.  Written as struct version `version`
 * (SP_SNAPSHOT_SOURCE_VERSION: the macro
 * sp_mem_store_snapshot_source(store, out) passes it; out->version is set
 * to it and only that version's bytes are written).  Returns 0,
 * SP_ERR_INVALID_ARGUMENT or SP_ERR_VERSION (a version this build does
 * not know).
 */
SP_API int sp_mem_store_snapshot_source_versioned(sp_mem_store *store,
                                                  int version,
                                                  sp_snapshot_source *out);
#define sp_mem_store_snapshot_source(store, out)                           \
  sp_mem_store_snapshot_source_versioned((store),                          \
                                         SP_SNAPSHOT_SOURCE_VERSION, (out))

/*
 * Fill `*out` with a snapshot sink into this store (sys/snapshot.h;
 * user_data is `store`), for a follower that recovers from SyncRequired.
 * The pending snapshot and its chunks are held by the store (they
 * survive a handler being deleted and recreated on it, as a disk would).
 * `commit` parses the chunks (log snapshot v1; anything malformed or not
 * matching the info begun is SP_ERR_SNAPSHOT_CORRUPT and changes
 * nothing) and replaces the log as sp_mem_store_copy_from does (the
 * outbox rules of a full sync); then the store's state is S, link(S) and
 * the higher of its old epoch and the snapshot's, and nothing is
 * pending.  The store must outlive
 * every handler given the sink.  Written as struct version `version`
 * (SP_SNAPSHOT_SINK_VERSION: the macro sp_mem_store_snapshot_sink(store,
 * out) passes it; out->version is set to it and only that version's bytes
 * are written).  Returns 0, SP_ERR_INVALID_ARGUMENT or SP_ERR_VERSION (a
 * version this build does not know).
 */
SP_API int sp_mem_store_snapshot_sink_versioned(sp_mem_store *store,
                                                int version,
                                                sp_snapshot_sink *out);
#define sp_mem_store_snapshot_sink(store, out)                             \
  sp_mem_store_snapshot_sink_versioned((store), SP_SNAPSHOT_SINK_VERSION,  \
                                       (out))

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_MEM_STORE_H */
