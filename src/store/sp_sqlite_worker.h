/*
 * sp_sqlite_worker.h: the SQLite store's apply thread (sqlite_store.h,
 * apply_thread).
 *
 * The worker owns a second store object on the same file (its own
 * connection and statements) and commits the queued batches through
 * sp_sqlite_apply on it, one transaction each, in order: the very code a
 * store without the thread runs.  The store's own connection stays the
 * caller's; the caller touches it only while the queue is empty (every
 * call but apply, state and durable drains the queue first), so the two
 * connections never write at once.
 */
#ifndef SP_SQLITE_WORKER_H
#define SP_SQLITE_WORKER_H

#include <stddef.h>

#include "sp_sqlite_int.h"

/* Start the thread for `s`, opened at `path` with `cfg` (its
 * apply_thread set; the worker's connection gets the same settings).
 * 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_NOT_SUPPORTED, SP_ERR_IO,
 * SP_ERR_NOMEM or what opening the file again returns. */
int sp_sqlite_worker_start(sp_sqlite_store *s, const char *path,
                           const sp_sqlite_config *cfg);

/* Commit what is queued, join the thread, free it all.  NULL-safe. */
void sp_sqlite_worker_stop(sp_sqlite_worker *w);

/* Before any call other than apply, state and durable: wait until the
 * queue is drained.  Returns 0 (also without a worker) or the error of a
 * failed commit not reported yet (reported once; the caller returns it). */
int sp_sqlite_worker_sync(sp_sqlite_store *s);

/* Replace the callbacks of a vtable filled for `s` (which has a worker)
 * by ones that drain first, and set apply, state and durable.  For a
 * `version` without `durable` (below 5), apply commits before it
 * returns. */
void sp_sqlite_worker_vtable(sp_sqlite_store *s, sp_store *out, int version);

/* Tests only: called on the worker thread before each commit, with
 * `ctx`; NULL: none. */
void sp_sqlite_worker_set_test_hook(void (*fn)(void *ctx), void *ctx);

#endif /* SP_SQLITE_WORKER_H */
