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
 * from the durable state; nothing is half-applied).  The exceptions:
 * SP_ERR_NOT_FOUND from `hash_at`, which is passed through, and
 * SP_STORE_PENDING, the one positive value `apply` may return (version 5,
 * with `durable`).
 *
 * Integrity: every stored row keeps the chain hash after it, and the rows
 * must chain (hash = link(hash of the entry before, entry)).  A leader
 * serves a row only if it does; the first row that does not is reported
 * as SP_EVENT_LOG_CORRUPT and nothing from it on is served.
 * sp_store_verify (store_verify.h) checks a whole log the same way.
 */
#ifndef SYNC_PROTOCOL_SYS_STORE_H
#define SYNC_PROTOCOL_SYS_STORE_H

#include "sync_protocol/types.h"
#include "sync_protocol/sys/registry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 3 added the write path: append, find_origin and the outbox; 4 errmsg;
 * 5 flags and durable. */
#define SP_STORE_VERSION 5
#define SP_STORE_INIT \
  {SP_STORE_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL}

/* sp_store.flags (version 5). */
/* `read` returns only rows whose chain hashes were computed (by the
 * store, or by the library before `apply`) from the very bytes it
 * returns, held in the process's memory since (the in-memory store): a
 * leader serves them without recomputing each row's chain link.
 * Without it a leader re-verifies every row it serves, so that a row
 * rotted at rest is reported (SP_EVENT_LOG_CORRUPT) and not served.  A
 * host that wraps a vouching store's vtable and changes or re-reads its
 * rows from elsewhere must clear the flag: a vouched row is never
 * checked. */
#define SP_STORE_ROWS_VOUCHED 0x1u

/* `apply` of a store with `durable` (version 5) may return this for a
 * batch of entries (never for an epoch record alone): the entries are the
 * store's, in order, but not yet durable. */
#define SP_STORE_PENDING 2

/* The highest origin_seq (sp_entry.origin_seq): stores may refuse a larger
 * one (SQLite keeps it in a signed 64-bit column); the library never
 * proposes, appends or assigns one. */
#define SP_MAX_ORIGIN_SEQ ((uint64_t)INT64_MAX)

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

/*
 * load_follower_acks calls the sink once per follower position kept with
 * the log.  `key` is the public key the follower proved on the stream that
 * acknowledged (all zeros if the transport did not say), `hash` the
 * leader's chain hash after `acked` when it was saved; the arguments are
 * valid during the call only.  The sink returns 0 to go on, or a
 * negative error that the store must return from load_follower_acks.
 */
typedef int (*sp_follower_ack_sink)(const sp_uuid *device,
                                    const uint8_t key[SP_PUBLIC_KEY_LEN],
                                    sp_seq acked,
                                    const uint8_t hash[SP_HASH_LEN],
                                    void *sink_ctx);

/*
 * load_follower_addresses calls the sink once per kept address: `device`
 * was last seen at `address` (NUL-terminated); both are valid during the
 * call only.  The sink returns 0 to go on, or a negative error that the
 * store must return from load_follower_addresses.
 */
typedef int (*sp_follower_address_sink)(const sp_uuid *device,
                                        const char *address, void *sink_ctx);

/* What an outbox holds (outbox_stats). */
typedef struct sp_outbox_stats {
  /* Items waiting to be committed or refused, and their payload bytes
   * (model_type + data). */
  uint64_t items;
  uint64_t bytes;
  /* origin_seq the next outbox_put assigns. */
  uint64_t next_origin;
  /* 1 once outbox_anchor ran on this store (it never renumbers again). */
  int anchored;
} sp_outbox_stats;

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
   * strictly increasing order, at most `max_count` of them, stopping
   * early when the sink returns SP_SINK_STOP.  Entries absent from the
   * log (gaps) are simply not fed.  Pointers passed to the sink are the
   * store's, valid during the sink call only.  Each entry comes with the
   * chain hash stored for it; the leader checks it against the chain
   * before serving the entry.
   *
   * Consistency with `bounds`: the two are separate calls and need not
   * see one snapshot.  The host may prune between them or while a read
   * runs (from another thread, with its own locking): then the entries
   * at or below the new prune point are not fed, and nothing else may be
   * missing.  A read never feeds an entry that is not in the log, and
   * feeds the entries that remain (after the prune point) without holes
   * the log did not have.  The leader re-reads the bounds after a read
   * whose first entry is not after + 1 (or that fed none): a prune past
   * `after` makes it tell the follower SyncRequired(behind retention).
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

  /* -- version 2: follower positions kept with the log (leader side) -- */

  /*
   * Optional (NULL: positions are not kept; only a store with `version` 2
   * or more is asked).  Remember that `device`, proving `key`, has durably
   * applied everything up to `acked`, where the chain hash is `hash`,
   * replacing what was kept for it (the hash lets a later leader check
   * that the position is on its own history).  The
   * leader calls it when a follower's acknowledgement moves forward: the
   * first time in a term, then at most about once every 30 seconds per
   * follower while its stream lives, and when the stream or the term
   * ends.  Need not be durable by
   * itself: losing the last saves only makes a position look older, which
   * is safe.  Must not be torn (key and position change together).
   */
  int (*save_follower_ack)(const sp_uuid *device,
                           const uint8_t key[SP_PUBLIC_KEY_LEN],
                           sp_seq acked, const uint8_t hash[SP_HASH_LEN],
                           void *user_data);

  /*
   * Optional, with save_follower_ack.  Feed every kept position to
   * `sink` (any order); a store that never saved any feeds none.  The
   * leader loads them when it starts (and when the registry lists a new
   * follower) and keeps those of registered followers whose hash is still
   * its own at that position: they count as acknowledgements for the
   * retention floor and sp_handler_wait_acks.  A row that no longer
   * decodes is skipped: the store feeds the others, then returns
   * SP_ERR_STORE_CORRUPT.  Best-effort: if this fails or a position
   * cannot be checked, the leader logs it and counts the positions not
   * loaded as none.
   */
  int (*load_follower_acks)(sp_follower_ack_sink sink, void *sink_ctx,
                            void *user_data);

  /*
   * Optional (NULL: a restarted leader dials only the addresses the
   * registry gives).  Remember that `device` last connected from
   * `address` (a NUL-terminated string shorter than SP_PEER_ADDRESS_MAX,
   * sys/transport.h; only read during the call), replacing what was kept
   * for it; an empty `address` forgets it.  The leader calls it when a
   * follower's stream arrives from an address the transport reports.  Need
   * not be durable by itself: a lost save only leaves an older address.
   */
  int (*save_follower_address)(const sp_uuid *device, const char *address,
                               void *user_data);

  /*
   * Optional, with save_follower_address.  Feed every kept address to
   * `sink` (any order).  The leader loads them when it starts and hands
   * those of registered followers to the transport (add_address_hint),
   * so that it reaches them at once.
   */
  int (*load_follower_addresses)(sp_follower_address_sink sink,
                                 void *sink_ctx, void *user_data);

  /* -- version 3: writes from every device (docs/integration.md) --
   *
   * All optional as a group: a store without them (or of an older
   * version) still serves and follows, but its handler refuses
   * sp_handler_submit (SP_ERR_NOT_SUPPORTED) and, as a leader, refuses
   * followers' proposals (SP_ERR_READ_ONLY).
   *
   * Every row carries its entry's origin_seq (0 for none), so the origin
   * id (device_id, origin_seq) of a submission travels with the log and a
   * later leader finds it there.  `apply` (above) also retires the
   * outbox: in the same transaction as the entries, it removes every
   * outbox item whose (device_id, origin_seq) equals an applied entry's,
   * and raises the next origin above every such origin_seq.  A store
   * that replaces its log wholesale (a full sync) keeps its outbox,
   * retires the items whose origin is in the new log's committed set
   * (find_origin), puts back into it every entry of the discarded log
   * that carried its own device's origin and is not in the new committed
   * set (a write the new history lost must be proposed again), and
   * raises next_origin above the new set's highest for its device. */

  /*
   * Leader: append `n` entries (1 <= n) as the next ones, atomically and
   * durably: each entry's sequence is ignored and becomes latest + 1,
   * latest + 2, ...; the store computes each chain hash (sp_chain_next)
   * and keeps origin_seq with the row.  The first sequence goes to
   * `*first`.  On failure nothing was appended.
   */
  int (*append)(const sp_entry *entries, size_t n, sp_seq *first,
                void *user_data);

  /*
   * Either role.  The log's committed set is every origin id its log has
   * ever held, retained or pruned (kept as per-device ranges: pruning
   * never shrinks it; a full sync replaces it with the source's).
   * Return 0 with `*seq` = the entry's sequence if the log retains the
   * entry whose origin id is (device, origin_seq); 0 with `*seq` = 0 if
   * the log held it and pruned it; SP_ERR_NOT_FOUND (`*seq` = 0) if the
   * log never held it.  `*device_high` = the highest origin_seq of
   * `device` in the committed set (0 if none), whatever the result.
   * origin_seq 0 only asks for device_high (returns 0).  A log holds each
   * origin id at most once.
   */
  int (*find_origin)(const sp_uuid *device, uint64_t origin_seq, sp_seq *seq,
                     uint64_t *device_high, void *user_data);

  /*
   * Follower (and leader): add `n` entries to the outbox, atomically and
   * durably, before returning.  The store assigns origin_seq: next_origin,
   * next_origin + 1, ... (the first goes to `*first_origin`); entries'
   * sequence and origin_seq are ignored, everything else is copied as
   * given.  An origin_seq is never assigned twice by one store, whatever
   * happens to its log or its process.
   */
  int (*outbox_put)(const sp_entry *entries, size_t n, uint64_t *first_origin,
                    void *user_data);

  /*
   * Feed to `sink` the outbox items with origin_seq > `after`, in
   * increasing origin_seq order, at most `max_count`, stopping on
   * SP_SINK_STOP (`hash` is NULL; sequence 0).  Pointers are valid
   * during the sink call only.
   */
  int (*outbox_read)(uint64_t after, size_t max_count, sp_entry_sink sink,
                     void *sink_ctx, void *user_data);

  /*
   * Remove the outbox item `origin_seq` durably (the leader refused it:
   * the removal is the durable record of the refusal).  SP_ERR_NOT_FOUND
   * if no such item.
   */
  int (*outbox_remove)(uint64_t origin_seq, void *user_data);

  /* Fill `*out` (sp_outbox_stats above). */
  int (*outbox_stats)(sp_outbox_stats *out, void *user_data);

  /*
   * The leader said its log has held origin_seq up to `device_high` for
   * `device` (this store's own device: a reinstalled device's numbers must
   * not collide with its former self's).  First call on a store (not
   * anchored): renumber every item so the smallest is above `device_high`
   * (keeping their order), raise next_origin likewise, remember `device`
   * as the outbox's device, and mark the store anchored -- all in one
   * transaction.  Later calls only raise next_origin above `device_high`;
   * items are never renumbered again (they may have been sent).  `apply`
   * raises next_origin above every applied entry of the outbox's device
   * (once known: from outbox_put's entries or this call).
   */
  int (*outbox_anchor)(const sp_uuid *device, uint64_t device_high,
                       void *user_data);

  /* -- version 4: why a call failed -- */

  /*
   * Optional (NULL, or a store of an older version: the host learns only
   * the error code).  Return a short text of why the store's most recent
   * failed call failed, as sqlite3_errmsg does ("database or disk is
   * full"), or NULL or "" if it has none.  The library asks right after a
   * call failed, and copies the text into the SP_EVENT_STORE_FAILED
   * message and its log line; it need only stay valid until the next call
   * on the store.  Must not call into the library.
   */
  const char *(*errmsg)(void *user_data);

  /* -- version 5: performance (docs/performance.md) -- */

  /* SP_STORE_ROWS_VOUCHED or 0. */
  unsigned int flags;

  /*
   * Optional (NULL: every `apply` is durable when it returns 0).  A store
   * that commits on a thread of its own (sp_sqlite_config
   * apply_thread) lets a follower decode and verify the next page while
   * it writes the last one.  Its `apply` of n > 0 entries may then return
   * SP_STORE_PENDING: it took them and will make them durable in the
   * order given, each call in one transaction.  An `apply` with n == 0
   * (an epoch record) is never pending: it returns once that record and
   * everything before it are durable (a fence is acted on only then).
   * Until a pending transaction is durable, every other call (`state`,
   * `hash_at`, `read`, `bounds`, a later `apply`, `find_origin` and the
   * outbox calls) answers as if it were done (its outbox items retired,
   * its origins in the committed set).  `durable` stores in `*through` the
   * highest sequence that is durable.  A follower-role handler asks it on
   * every call into the node while it has applies pending (a leader-role
   * handler never does); the store gives the host a way to be woken (e.g.
   * sp_sqlite_store_wait_fd), on which the host calls
   * sp_node_handle_expiry.  Acknowledgements, the status,
   * SP_EVENT_ENTRIES_APPLIED, SP_EVENT_SUBMISSION_COMMITTED and
   * SP_EVENT_CAUGHT_UP wait for it.  If a pending transaction fails, the
   * store forgets it and every later one, `state` from then on answers
   * what is durable, and the error is returned by `durable` or by
   * whichever call comes first (a store may return it from several;
   * `apply` never takes entries on top of what it forgot before it
   * returned the error once).  After a failed call while applies are
   * pending, the handler reads `state` again before it applies anything
   * more (nothing while that read fails), and starts over from what it
   * answers.  A follower term that starts over a store with applies
   * pending (sp_handler_set_role to follower, sp_handler_new) waits for
   * them as for its own (a new handler reports no SUBMISSION_COMMITTED
   * for them: the host asks sp_handler_submission).  The host lets the
   * pending transactions finish before it replaces the log (a full sync,
   * before sp_handler_resync_done) or makes the handler a leader
   * (sp_handler_set_role): what they wrote is then simply the log.
   * Return 0 or a negative code.  Must not call into the library.
   */
  int (*durable)(sp_seq *through, void *user_data);
} sp_store;

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_SYS_STORE_H */
