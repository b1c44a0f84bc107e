/*
 * sys/store.h: the sync-log store a host implements (its SyncLogDb).
 *
 * The library never assumes where entries live and never holds the whole
 * log in memory: a leader reads a page at a time through a sink, a
 * follower hands over one verified batch at a time.
 *
 * Callback contract (the same for every host callback): return 0 on
 * success or a negative value on failure.  A failing store callback is
 * reported to the caller as SP_ERR_STORE (the session backs off and retries
 * from the durable state; nothing is half-applied).  The one exception is
 * SP_ERR_NOT_FOUND from `hash_at`, which is passed through.
 */
#ifndef SYNC_PROTOCOL_SYS_STORE_H
#define SYNC_PROTOCOL_SYS_STORE_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_STORE_VERSION 1
#define SP_STORE_INIT {SP_STORE_VERSION, NULL, NULL, NULL, NULL, NULL, NULL}

/* Returned by an sp_entry_sink to stop a read before taking the entry. */
#define SP_SINK_STOP 1

/*
 * The store calls the sink once per entry during `read`, in sequence
 * order.  `entry` and `hash` (the chain hash after this entry) need only
 * stay valid during the call.  The sink returns 0 to take the entry and go
 * on, SP_SINK_STOP to end the read without taking it, or a negative error
 * that the store must return from `read` unchanged.
 */
typedef int (*sp_entry_sink)(const sp_entry *entry,
                             const uint8_t hash[SP_HASH_LEN], void *sink_ctx);

/* The leader's log bounds. */
typedef struct sp_log_bounds {
  /* Highest sequence pruned away (0 if nothing was pruned).  Every entry
   * after it is retained; a follower at or past it can be served. */
  sp_seq pruned_through;
  /* Highest sequence in the log (0 if empty). */
  sp_seq latest;
} sp_log_bounds;

/* A follower's durable position. */
typedef struct sp_store_state {
  /* Highest sequence durably applied (0 if none). */
  sp_seq applied;
  /* Chain hash after `applied` (zeros when `applied` is 0). */
  uint8_t head_hash[SP_HASH_LEN];
  /* Highest leader epoch recorded with the log. */
  uint64_t epoch;
} sp_store_state;

typedef struct sp_store {
  /* SP_STORE_VERSION. */
  unsigned int version;
  /* Passed to every callback; must outlive the handler using the store. */
  void *user_data;

  /* -- leader side -- */

  /*
   * Feed the entries with after < sequence <= through to `sink`, in
   * order, at most `max_count` of them, stopping early when the sink
   * returns SP_SINK_STOP.  Entries absent from the log (gaps) are simply
   * not fed.  Pointers passed to the sink are the store's, valid during
   * the sink call only.
   */
  int (*read)(sp_seq after, sp_seq through, size_t max_count,
              sp_entry_sink sink, void *sink_ctx, void *user_data);

  /* Fill `*out` with the log's current bounds. */
  int (*bounds)(sp_log_bounds *out, void *user_data);

  /*
   * Copy into `out` the chain hash after the entry numbered `sequence`.
   * For sequence 0 that is SP_HASH_LEN zero bytes; for the pruned-through
   * sequence the store keeps the hash it had.  Return SP_ERR_NOT_FOUND if
   * no such entry exists (a gap, or beyond the log).
   */
  int (*hash_at)(sp_seq sequence, uint8_t out[SP_HASH_LEN], void *user_data);

  /* -- follower side -- */

  /*
   * Apply `n` entries atomically and durably, together with their chain
   * hashes (`hashes`: n * SP_HASH_LEN bytes, entry i's at i * SP_HASH_LEN)
   * and the leader `epoch` they came under; on return 0 the new applied
   * sequence is entries[n-1].sequence.  `n` may be 0: then only `epoch`
   * is recorded.  Entries are in strictly increasing order and all after
   * the current applied sequence.  On failure nothing may have changed.
   * The arrays and what they point to are the library's, valid during the
   * call only.
   */
  int (*apply)(const sp_entry *entries, const uint8_t *hashes, size_t n,
               uint64_t epoch, void *user_data);

  /* Fill `*out` with the durable state (after restart: what is on disk). */
  int (*state)(sp_store_state *out, void *user_data);
} sp_store;

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_SYS_STORE_H */
