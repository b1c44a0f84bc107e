/*
 * sp_async_store.h: a test wrapper that makes any store apply
 * asynchronously (sys/store.h, version 5: `durable`, SP_STORE_PENDING),
 * deterministically: `apply` queues a copy of the batch and returns
 * SP_STORE_PENDING (an epoch record alone is applied at once, after the
 * queue: never pending); the test decides when queued batches become durable
 * (sp_async_store_flush applies them to the inner store, in order, each
 * with one inner apply), fails one (sp_async_store_fail), or crashes
 * (sp_async_store_crash: the pending ones are lost, as a process's queue
 * is).  The inner store always holds exactly what is durable.
 *
 * Every other call answers as if the queued batches were applied: `state`,
 * `hash_at`, find_origin, outbox_read and outbox_stats from the queue
 * over the inner store (a queued entry retired its outbox item); the
 * writes (append, the outbox's) and a leader's reads (read, bounds) after
 * making the queue durable first -- a store whose other writes wait for
 * its apply queue, which the contract allows (durable earlier is always
 * allowed).  A failure (an
 * injected one, or the inner apply's) forgets the failed batch and every
 * later one; `apply` and the writes return it until `durable` reports it,
 * once (reads answer what is durable meanwhile).
 */
#ifndef SP_ASYNC_STORE_H
#define SP_ASYNC_STORE_H

#include <stddef.h>

#include "sync_protocol/sys/store.h"

typedef struct sp_async_store sp_async_store;

/* What a wrapper did since it was created. */
typedef struct sp_async_stats {
  long queued;   /* apply calls answered SP_STORE_PENDING */
  long flushed;  /* batches made durable */
  long failed;   /* batches forgotten by a failure (the failed one too) */
  long lost;     /* batches lost by sp_async_store_crash */
} sp_async_stats;

/* Wrap `inner` (copied; its user_data must outlive the wrapper).
 * Returns 0, SP_ERR_NOMEM. */
int sp_async_store_new(sp_async_store **out, const sp_store *inner);
void sp_async_store_del(sp_async_store *a);
/* The wrapper's vtable (version 5, with `durable`). */
void sp_async_store_vtable(sp_async_store *a, sp_store *out);
/* Batches queued and not durable. */
size_t sp_async_store_pending(const sp_async_store *a);
/* Make the oldest `n` queued batches durable (SIZE_MAX: all).  Returns
 * 0, or the inner apply's failure (then that batch and every later one
 * are forgotten, and the failure is latched for the next call). */
int sp_async_store_flush(sp_async_store *a, size_t n);
/* The oldest queued batch fails with `code`: it and every later one are
 * forgotten, and `durable` (or the next call) returns `code`.  Nothing
 * happens if none is queued.  Returns how many were forgotten. */
size_t sp_async_store_fail(sp_async_store *a, int code);
/* The process dies: every queued batch is lost (and a latched failure
 * with it).  Returns how many were lost. */
size_t sp_async_store_crash(sp_async_store *a);
const sp_async_stats *sp_async_store_stats(const sp_async_store *a);
/* `on`: a failure is returned once, by whichever call (but `state`)
 * comes first -- reads too, as a store that drains its queue before every
 * other call does (the SQLite store's apply thread) -- instead of by
 * every write until `durable` reports it.  Both keep the contract. */
void sp_async_store_report_once(sp_async_store *a, int on);

#endif /* SP_ASYNC_STORE_H */
