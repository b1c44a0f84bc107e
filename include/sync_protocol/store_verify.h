/*
 * store_verify.h: check a whole stored log against its hash chain.
 *
 * A device's log can rot at rest (a bad disk, a copied file, an edit made
 * outside the library).  A leader notices only the rows it serves and a
 * follower only the rows it receives; this walks every retained row of a
 * store through its vtable, as a host may do when it opens a log (before
 * handing the store to a handler) or in the background.
 */
#ifndef SYNC_PROTOCOL_STORE_VERIFY_H
#define SYNC_PROTOCOL_STORE_VERIFY_H

#include "sync_protocol/sys/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows verified between two calls of the progress callback. */
#define SP_VERIFY_PROGRESS_ROWS 4096

/*
 * Called by sp_store_verify after every SP_VERIFY_PROGRESS_ROWS rows and
 * once after the last (once, before the head check, when there is no row
 * to walk): every row up to `verified_through` chains, out of a log whose
 * latest sequence is `latest`.  Return 0 to go on, non-zero
 * to stop the walk.
 */
typedef int (*sp_verify_progress_cb)(sp_seq verified_through, sp_seq latest,
                                     void *user_data);

/*
 * sp_store_verify checks that every row of `store` after `from` matches
 * its stored chain hash: hash(n) == link(link before n, entry n), starting
 * from the hash the store keeps for `from` (0, or below the prune point:
 * from the oldest retained row).  Rows must come in strictly increasing
 * order and decode as valid entries; the walk ends at the log's latest
 * sequence, which must be the last row; the durable state (`state`), if
 * it is at that row, must hold the same head hash.  The store is read a
 * page at a time (`read`, `bounds`, `hash_at`, `state`); nothing is held
 * but one link.  The host must not prune or apply while it runs.
 * `progress` may be NULL; `user_data` is passed to it.  On
 * SP_ERR_STORE_CORRUPT, `*bad_seq` (if not NULL) is the first sequence
 * whose row does not verify (or the row after one whose stored hash is
 * wrong; or, when the store's read itself returns SP_ERR_STORE_CORRUPT,
 * the row after the last one it fed).
 *
 * Returns 0 (every row verified), SP_ERR_STORE_CORRUPT, SP_ERR_NOT_FOUND
 * (`from` is neither 0, at or below the prune point, nor a stored row),
 * SP_ERR_STORE (a store callback failed), SP_ERR_CANCELED (`progress`
 * returned non-zero) or SP_ERR_INVALID_ARGUMENT (`store` NULL or missing
 * a callback).
 */
SP_API int sp_store_verify(const sp_store *store, sp_seq from,
                           sp_verify_progress_cb progress, void *user_data,
                           sp_seq *bad_seq);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_STORE_VERIFY_H */
