/*
 * node.h: the node (one per device) and its handlers (one per library).
 *
 * A node routes each stream its transport reports to the handler of the
 * stream's library, so several libraries share one connection, each on its
 * own stream.  A handler is the seed's SyncProtocolHandler: as leader it
 * pushes NewEntries and serves fetches; as follower it connects to the
 * leader, fetches, applies and acknowledges.
 *
 * Sans-I/O: nothing here reads a clock or touches a socket.  Every call
 * takes `now` (nanoseconds, the host's monotonic clock); the host calls
 * sp_node_handle_expiry when sp_node_get_expiry says so.  A node and its
 * handlers are single-threaded: call them from one thread, and never from
 * inside a callback the same node is making.
 */
#ifndef SYNC_PROTOCOL_NODE_H
#define SYNC_PROTOCOL_NODE_H

#include "sync_protocol/types.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/events.h"
#include "sync_protocol/sys/store.h"
#include "sync_protocol/sys/snapshot.h"
#include "sync_protocol/sys/registry.h"
#include "sync_protocol/sys/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_handler sp_handler;

/* ---- node ---- */

/* 2 added identity. */
#define SP_NODE_CONFIG_VERSION 2

struct sp_identity;

typedef struct sp_node_config {
  /* SP_NODE_CONFIG_VERSION; set by sp_node_config_default. */
  unsigned int version;
  /* This device. */
  sp_uuid device_id;
  /* Seed of the generator that jitters reconnect delays.  Two nodes should
   * not share a seed; a simulation sets it to replay a run exactly. */
  uint64_t seed;
  /* Largest frame body accepted on any stream; 0 = SP_MAX_FRAME_DEFAULT. */
  size_t max_frame;

  /* -- version 2 -- */

  /*
   * This device's key (identity.h), borrowed: it must outlive the node,
   * and its device id must be `device_id`.  A handler that leads signs
   * its leadership claim with it (docs/protocol.md section 15), so that
   * an older leader it meets steps down.  NULL: this node's leaderships
   * carry no claim; its followers still follow it (they know their
   * leader from the registry), but no leader of this build steps down
   * for its epoch.
   */
  const struct sp_identity *identity;
} sp_node_config;

/* Fill `cfg` with defaults (zero device id, seed 0, default frame size,
 * no identity). */
SP_API void sp_node_config_default(sp_node_config *cfg);

/*
 * sp_node_new creates a node.  `cfg`, `registry`, `events` and
 * `transport` are copied (their user_data pointers must outlive the
 * node); `events` may be NULL.  `mem` NULL means the default allocator.
 * Returns 0, SP_ERR_INVALID_ARGUMENT (a required pointer NULL, a missing
 * required callback, max_frame over SP_MAX_FRAME_LIMIT), SP_ERR_VERSION
 * (a struct version this build does not know) or SP_ERR_NOMEM.
 */
SP_API int sp_node_new(sp_node **pnode, const sp_node_config *cfg,
                       const sp_registry *registry, const sp_events *events,
                       const sp_transport *transport, const sp_mem *mem);

/*
 * sp_node_del deletes every handler still attached (as sp_handler_del
 * does: streams closed through the transport, pending waits canceled) and
 * frees the node.  NULL is allowed.
 */
SP_API void sp_node_del(sp_node *node);

/* Returns the earliest time sp_node_handle_expiry must be called, or
 * SP_TSTAMP_MAX if no timer is armed.  `node` is only read. */
SP_API sp_tstamp sp_node_get_expiry(const sp_node *node);

/*
 * sp_node_handle_expiry runs every timer due at `now`: heartbeats sent,
 * silent peers declared lost, reconnects started, deadlines of waits.
 * Returns 0 or a fatal code.
 */
SP_API int sp_node_handle_expiry(sp_node *node, sp_tstamp now);

/* The handler of `library` on this node, or NULL.  Not owned by caller. */
SP_API sp_handler *sp_node_find_handler(sp_node *node, const sp_uuid *library);

/* ---- handler ---- */

/* Largest max_queued_fetches a handler accepts (a ring of that many is
 * allocated per follower stream). */
#define SP_MAX_QUEUED_FETCHES 65536

/* Defaults of the write path (sp_handler_config version 3). */
#define SP_OUTBOX_MAX_ITEMS_DEFAULT 100000u
#define SP_OUTBOX_MAX_BYTES_DEFAULT (64u * 1024u * 1024u)
#define SP_PROPOSE_WINDOW_DEFAULT 1024u
#define SP_PROPOSE_MAX_BYTES_DEFAULT (1024u * 1024u)

/* What an admission callback decides about one proposed entry. */
typedef enum sp_admit_decision {
  /* Append the entry as proposed. */
  SP_ADMIT_ACCEPT = 0,
  /* Do not append it: `code` (a negative sp_error, SP_ERR_REFUSED if 0)
   * and `message` travel back to the proposer. */
  SP_ADMIT_REFUSE = 1,
  /* Append `replacement` instead (the host's merge rules: another
   * payload, version or change type for the same record).  The library
   * keeps the proposal's device_id and origin_seq on it, so the
   * submission is still appended exactly once. */
  SP_ADMIT_REPLACE = 2
} sp_admit_decision;

typedef struct sp_admission {
  sp_admit_decision decision;
  int code;
  /* NUL-terminated; copied by the library.  May stay NULL. */
  const char *message;
  /* SP_ADMIT_REPLACE: the entry to append; what it points to must stay
   * valid until the callback's caller returns (the next callback or the
   * end of the proposal batch, whichever is first). */
  sp_entry replacement;
} sp_admission;

/*
 * Leader: a follower `proposer` (the device its connection proved) asks
 * to append `entry` (device_id is `proposer`, origin_seq set; pointers
 * valid during the call).  Fill `*out` (zeroed: SP_ADMIT_ACCEPT) and
 * return 0; a non-zero return fails the node (SP_ERR_CALLBACK_FAILURE).
 * Called only for submissions not already in the log, and at most once
 * per proposal the leader receives (a retried proposal is asked again if
 * it was refused, never if it was appended).  Must not call into the node.
 */
typedef int (*sp_admit_cb)(sp_handler *handler, const sp_uuid *proposer,
                           const sp_entry *entry, sp_admission *out,
                           void *user_data);

/* 2 added registry_refresh_interval; 3 the write path (outbox_max_items
 * to admit_user_data); 4 snapshots (snapshot_source to
 * snapshot_max_bytes).  An older config gets the defaults of what it
 * lacks. */
#define SP_HANDLER_CONFIG_VERSION 4

typedef struct sp_handler_config {
  /* SP_HANDLER_CONFIG_VERSION; set by sp_handler_config_default. */
  unsigned int version;
  sp_uuid library_id;
  sp_role role;
  /* Leader: its epoch, raised by the host on every leadership change and
   * kept with the log.  Follower: ignored (the store's epoch counts). */
  uint64_t epoch;
  /* Both: a Heartbeat goes out after this much silence (30 s). */
  sp_duration heartbeat_interval;
  /* Both: a peer silent for factor x interval is lost (3). */
  uint32_t heartbeat_timeout_factor;
  /* Follower: sequence span of one FetchEntries (1024). */
  uint32_t fetch_limit;
  /* Follower: FetchEntries kept in flight while catching up (4); the
   * leader holds no more of them than this (docs/protocol.md 12.2, "The
   * fetch window"), so keep it at most the leader's max_queued_fetches. */
  uint32_t fetch_window;
  /* Follower: re-connect when asked-for entries do not come, or when
   * the leader answers none of the proposals in flight (60 s). */
  sp_duration stall_timeout;
  /* Both: first and largest delay of a follower's reconnects and of a
   * leader's dials to a follower (100 ms, 30 s); each failure doubles the
   * delay, with jitter of up to half of it.  A leader resets a follower's
   * delay only when its acknowledged sequence moves forward. */
  sp_duration reconnect_min;
  sp_duration reconnect_max;
  /* Leader: FetchEntries of a follower it holds unanswered, at most
   * (32; 1..SP_MAX_QUEUED_FETCHES); more is refused
   * (SP_ERR_TOO_MANY_REQUESTS).  A follower within its fetch_window never
   * reaches it. */
  uint32_t max_queued_fetches;
  /* Leader: byte budget of one EntriesResponse body (64 KiB).  At least
   * one entry always goes out, if it fits the frame limit. */
  size_t response_max_bytes;
  /* Leader: a registered follower lagging more than this many entries no
   * longer holds retention back and is sent SyncRequired
   * (SP_SYNC_RETENTION_CAP) when it asks; 0 = no cap. */
  uint64_t retention_cap;
  /* Returned by sp_handler_get_user_data; not used by the library. */
  void *user_data;
  /* Leader: when a follower is known to hold everything, push new entries
   * to it at once as an EntriesResponse (one trip) instead of announcing
   * them with NewEntries for it to fetch (three trips) (1).  0 keeps the
   * seed's announce-then-fetch flow. */
  int push_inline;
  /* Leader: re-read the registry's member list this often (60 s): a device
   * added since is dialled, one removed is refused and forgotten.  0 = only
   * at the start of a term and on sp_handler_registry_changed. */
  sp_duration registry_refresh_interval;
  /* Both: sp_handler_submit refuses (SP_ERR_OUTBOX_FULL) a batch that
   * would take the outbox past this many items or payload bytes
   * (100000, 64 MiB). */
  uint64_t outbox_max_items;
  uint64_t outbox_max_bytes;
  /* Follower: proposed entries sent and not yet answered, at most
   * (1024; 1..SP_MAX_PROPOSE_ENTRIES, larger is SP_ERR_INVALID_ARGUMENT:
   * a leader bounds the answers it holds for a follower by one Propose's
   * worth), and their payload bytes (1 MiB; one entry always goes). */
  uint32_t propose_window;
  size_t propose_max_bytes;
  /* Leader: decides about followers' proposals; NULL accepts every one
   * (the registry still refuses read-only devices). */
  sp_admit_cb admit;
  void *admit_user_data;
  /* Leader: where snapshots come from (sys/snapshot.h), for followers the
   * retained log cannot serve any more; NULL: none, such a follower is
   * told SyncRequired and recovers by its host's means.  Follower: where
   * a snapshot goes; NULL: SyncRequired stops the follower until
   * sp_handler_resync_done, as before.  Either vtable is copied by
   * sp_handler_new (its user_data must outlive the handler); a handler
   * advertises SP_FEATURE_SNAPSHOT only with the one its role uses. */
  const sp_snapshot_source *snapshot_source;
  const sp_snapshot_sink *snapshot_sink;
  /* Follower: chunks requested and not yet received (8; 1 ..
   * SP_MAX_SNAPSHOT_WINDOW). */
  uint32_t snapshot_window;
  /* Leader: preferred chunk size (256 KiB; 1 .. SP_SNAPSHOT_CHUNK_MAX),
   * raised when a snapshot would need more chunks than a manifest can
   * list. */
  uint32_t snapshot_chunk_size;
  /* Follower: a snapshot larger than this is refused and the recovery
   * fails with SP_ERR_SNAPSHOT_TOO_LARGE (0: no limit). */
  uint64_t snapshot_max_bytes;
} sp_handler_config;

/* Fill `cfg` with the defaults shown above (role leader, epoch 1). */
SP_API void sp_handler_config_default(sp_handler_config *cfg);

/*
 * sp_handler_new attaches a handler for cfg->library_id to `node`.  `cfg`
 * and `store` are copied; store->user_data must outlive the handler.  A
 * follower reads its durable state from the store and opens a stream to
 * the registry's leader at once.  A leader's term first drains this
 * device's own outbox (SP_EVENT_SUBMISSION_COMMITTED for its items; a
 * store failure there is reported as an SP_EVENT_ERROR event and retried,
 * not returned: see sp_handler_set_role).  That drain runs inside this
 * call: its events reach the host before the handle is returned, and
 * what it did (entries appended to the log, items removed from the
 * outbox) stays even if the start fails after it and this returns an
 * error.  The handler belongs to the node until sp_handler_del (or
 * sp_node_del).
 * Returns 0, SP_ERR_INVALID_ARGUMENT (NULL, a missing store callback the
 * role needs, a zero interval, fetch_limit over SP_MAX_FETCH_LIMIT),
 * SP_ERR_VERSION, SP_ERR_EXISTS (the library already has a handler),
 * SP_ERR_STORE (the store could not report its state), SP_ERR_REGISTRY
 * (a leader could not list the library's members), SP_ERR_NOMEM, or
 * SP_ERR_CALLBACK_FAILURE.
 */
SP_API int sp_handler_new(sp_handler **phandler, sp_node *node,
                          const sp_handler_config *cfg, const sp_store *store,
                          sp_tstamp now);

/*
 * sp_handler_del closes the library: its streams are closed through the
 * transport, pending waits and requests are called back with
 * SP_ERR_CANCELED, and the handler is freed.  NULL is allowed.
 */
SP_API void sp_handler_del(sp_handler *handler);

/* Returns the user_data of the handler's config (NULL for a NULL
 * handler); the library never dereferences it. */
SP_API void *sp_handler_get_user_data(const sp_handler *handler);

/* Returns the handler's current role (`handler` must not be NULL). */
SP_API sp_role sp_handler_role(const sp_handler *handler);

/* Returns the epoch the handler works under: a leader's own, or the
 * highest a follower recorded with its log (`handler` must not be NULL). */
SP_API uint64_t sp_handler_epoch(const sp_handler *handler);

/*
 * Leader: the host appended entries (from, to] to the store.  Every
 * connected follower is told at once, or as soon as its stream can take
 * the notification (one outstanding notification per follower; later ones
 * coalesce into it).  `from` < `to` is not required to be exact: the
 * leader re-reads its bounds.  Returns 0, SP_ERR_INVALID_STATE (not
 * leader), SP_ERR_INVALID_ARGUMENT (from > to), SP_ERR_STORE, or a fatal
 * code.
 */
SP_API int sp_handler_notify_new_entries(sp_handler *handler, sp_seq from,
                                         sp_seq to, sp_tstamp now);

/*
 * Called once when a wait registered with sp_handler_wait_acks ends:
 * `status` 0 when enough followers acknowledged `sequence`, SP_ERR_DEADLINE
 * or SP_ERR_CANCELED otherwise; `acked` is how many had.  Return 0, or
 * non-zero to fail the library call in progress (SP_ERR_CALLBACK_FAILURE).
 */
typedef int (*sp_ack_wait_cb)(sp_handler *handler, sp_seq sequence,
                              int status, size_t acked, void *user_data);

/*
 * Leader: call `cb` once `min_followers` followers (0: every follower the
 * registry lists) have durably acknowledged `sequence`, or at `deadline`.
 * Only devices the registry lists when the count is made count, and only
 * with what they acknowledged in this leadership term, or with a position
 * kept with the log (a store with save_follower_ack, sys/store.h) that is
 * on this log's history: such a position is a fact about the follower's
 * own durable log, whichever leader process heard it, so a follower that
 * synced and went away before this leader started still counts.  Acks are
 * credited per device and key: a device id proving a second key (when the
 * transport tells keys) starts over from what that key acknowledges.
 * Returns 1 if already satisfied (no callback will come), 0 if registered,
 * SP_ERR_INVALID_STATE (not leader), SP_ERR_INVALID_ARGUMENT, SP_ERR_REGISTRY,
 * or SP_ERR_NOMEM.
 */
SP_API int sp_handler_wait_acks(sp_handler *handler, sp_seq sequence,
                                size_t min_followers, sp_tstamp deadline,
                                sp_ack_wait_cb cb, void *user_data,
                                sp_tstamp now);

/*
 * Leader: the progress of follower `device` (registered or connected),
 * written as struct version `version` (SP_FOLLOWER_PROGRESS_VERSION: the
 * macro sp_handler_follower_progress(handler, device, now, out) passes
 * it; only the bytes of that version are written).
 * Returns 0, SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION (a version this
 * build does not know), SP_ERR_NOT_FOUND, SP_ERR_INVALID_STATE (not
 * leader).
 */
SP_API int sp_handler_follower_progress_versioned(sp_handler *handler,
                                                  const sp_uuid *device,
                                                  sp_tstamp now, int version,
                                                  sp_follower_progress *out);
#define sp_handler_follower_progress(handler, device, now, out)            \
  sp_handler_follower_progress_versioned((handler), (device), (now),       \
                                         SP_FOLLOWER_PROGRESS_VERSION, (out))

/*
 * Leader: copy the progress of up to `cap` known followers into the array
 * `out` and return how many are known (may exceed `cap`), or a negative
 * error.  The array's elements are sp_follower_progress of struct version
 * `version`: the stride is that version's size (the macro
 * sp_handler_list_followers(handler, out, cap, now) passes
 * SP_FOLLOWER_PROGRESS_VERSION).  Known: the members found at the last
 * re-read of the registry (see sp_handler_registry_changed) and members
 * that connected since.  Returns the count, SP_ERR_INVALID_ARGUMENT,
 * SP_ERR_VERSION (a version this build does not know) or
 * SP_ERR_INVALID_STATE (not leader).
 */
SP_API sp_ssize sp_handler_list_followers_versioned(sp_handler *handler,
                                                    int version,
                                                    sp_follower_progress *out,
                                                    size_t cap,
                                                    sp_tstamp now);
#define sp_handler_list_followers(handler, out, cap, now)                  \
  sp_handler_list_followers_versioned((handler), SP_FOLLOWER_PROGRESS_VERSION, \
                                      (out), (cap), (now))

/*
 * Leader: store in `*floor` the highest sequence every registered follower
 * has durably acknowledged (followers past the retention cap excluded):
 * the host may prune up to it.  A registered follower that never
 * acknowledged keeps it at 0; positions kept with the log count as for
 * sp_handler_wait_acks.  Returns 0, SP_ERR_INVALID_STATE,
 * SP_ERR_REGISTRY, SP_ERR_STORE or SP_ERR_NOMEM.
 */
SP_API int sp_handler_retention_floor(sp_handler *handler, sp_seq *floor);

/*
 * The host changed the registry of this handler's library (a device added
 * or removed).  Leader: the member list is re-read at once.  A device added
 * is dialled now (and listed by sp_handler_list_followers); a device no
 * longer listed is treated as one that never was: its stream is refused
 * with SP_ERR_NOT_MEMBER, it is not dialled again, and its record and
 * acknowledgements are dropped, with its position kept with the log (if
 * it comes back, it counts from what it acknowledges then).  A device
 * added starts from its position kept with the log, if any.  Waits for "every follower" are re-checked.  Without
 * this call the leader sees the change at its next scheduled re-read
 * (cfg.registry_refresh_interval).  A follower reads the registry on every
 * connect.  Every role: a leadership claim of another device the handler
 * holds (sp_handler_leader_claim) is checked again against the registry
 * and dropped if it no longer holds.  Call it outside the node's callbacks.
 * Returns 0, SP_ERR_INVALID_ARGUMENT (NULL), SP_ERR_REGISTRY (the member
 * list could not be read: nothing changed), or a fatal code.
 */
SP_API int sp_handler_registry_changed(sp_handler *handler, sp_tstamp now);

/*
 * Called once when a request made with sp_handler_request_entries ends:
 * `status` 0 when the follower caught up with what the leader had, else why
 * not (SP_ERR_SYNC_REQUIRED, SP_ERR_CONNECTION_LOST, SP_ERR_CANCELED...);
 * `applied` is the durable applied sequence then.  Return 0 or non-zero
 * (SP_ERR_CALLBACK_FAILURE).
 */
typedef int (*sp_request_cb)(sp_handler *handler, int status, sp_seq applied,
                             void *user_data);

/*
 * Follower: fetch everything after `since` (at most the applied sequence;
 * entries already applied are skipped) and call `cb` when caught up.  One
 * request at a time.  With no stream to the leader, one is opened at once
 * (not after the reconnect backoff, except while backing off after a
 * store failure: then the request waits for the next retry).  A request
 * either fails here and `cb` is never called for it, or is accepted (0)
 * and `cb` is called exactly once: caught up, SP_ERR_SYNC_REQUIRED,
 * SP_ERR_CONNECTION_LOST, SP_ERR_STORE, SP_ERR_CANCELED (role change,
 * sp_handler_del), or why a later connection attempt failed
 * (SP_ERR_NOT_FOUND, SP_ERR_REGISTRY, the transport's code); that call
 * may come before this function returns if the stream fails during it
 * (SP_ERR_CONNECTION_LOST, also for a stream this call opened).
 * Returns 0, SP_ERR_INVALID_ARGUMENT (NULL, or `since` past the applied
 * sequence that sp_handler_get_status reports, judged before this call
 * connects: that would leave a gap), SP_ERR_INVALID_STATE (not follower, a
 * request pending, or waiting for a full sync), SP_ERR_NOT_FOUND (the
 * registry names no leader but this device), SP_ERR_REGISTRY, SP_ERR_STORE
 * (the store could not report its state), the transport's open_stream
 * code (SP_ERR_UNREACHABLE...), or a fatal code.
 */
SP_API int sp_handler_request_entries(sp_handler *handler, sp_seq since,
                                      sp_request_cb cb, void *user_data,
                                      sp_tstamp now);

/*
 * Follower: the host finished the full sync a SyncRequired asked for; the
 * handler re-reads the store's state and resumes incremental sync.  Until
 * this call succeeds the handler writes nothing to the store.
 * Returns 0, SP_ERR_INVALID_STATE (no SyncRequired pending), SP_ERR_STORE.
 */
SP_API int sp_handler_resync_done(sp_handler *handler, sp_tstamp now);

/*
 * Failover: change role and epoch.  Streams are closed and re-established
 * as the new role requires.  A new leader's epoch must exceed every epoch
 * it has seen.  A leadership term starts with no acknowledgement held in
 * memory: the retention floor and waits count what followers acknowledge
 * (or resume from) in it, and positions kept with the log (see
 * sp_handler_wait_acks).  A leader term first drains this device's own
 * outbox (what it submitted as a follower and no leader committed): the
 * items are appended with their origins, SP_EVENT_SUBMISSION_COMMITTED
 * for each.  A store failure there is reported as one SP_EVENT_ERROR
 * event and retried on the handler's timers (reconnect_min doubling to
 * reconnect_max) until a drain succeeds or the term ends (a role change,
 * stepping down); it is not returned.  Returns 0,
 * SP_ERR_INVALID_ARGUMENT (epoch not higher for a leader, or not above
 * the epoch of another device's leadership claim the handler holds, see
 * sp_handler_leader_claim), SP_ERR_STORE, or a fatal code.
 */
SP_API int sp_handler_set_role(sp_handler *handler, sp_role role,
                               uint64_t epoch, sp_tstamp now);

/* ---- writes from every device ---- */

/*
 * sp_handler_submit writes `n` entries (1 <= n <= SP_MAX_PROPOSE_ENTRIES)
 * from this device.  Each entry's sequence and origin_seq are ignored;
 * device_id must be zero (this device's id is filled in) or this device's
 * id.  `entries` and what they point to are only read.
 *
 * Follower: the entries go into the store's outbox, durably, before this
 * returns, whether or not the leader is reachable; they are proposed to
 * the leader while connected, and each ends with one
 * SP_EVENT_SUBMISSION_COMMITTED (it is in this device's own log) or
 * SP_EVENT_SUBMISSION_REFUSED, with two exceptions.  None at all: events
 * are per process, so a submission settled while the process was down,
 * or retired by a full sync (sp_handler_resync_done) before this process
 * proposed it, is not reported (sp_handler_submission and
 * sp_handler_wait_committed tell).  Two: a COMMITTED from a history that
 * is later discarded (a stale leader's page that a full sync throws
 * away; a failover to a leader that never had the entry) can be followed
 * by the item's return to the outbox and a second outcome.  Leader: this device's own outbox is
 * drained first, as at the start of a term (sp_handler_set_role;
 * SP_EVENT_SUBMISSION_COMMITTED for its items; if that fails, SP_ERR_STORE
 * and nothing of `entries` is appended, the drain is retried on the
 * timers), then the entries are appended at once (committed events follow
 * before this returns) and announced.  The first origin_seq goes to
 * `*first_origin` (may be NULL); the others follow it by one.
 *
 * Returns 0, SP_ERR_INVALID_ARGUMENT (NULL, n out of range, another
 * device's id, an entry the codec would refuse, an entry whose frame
 * would exceed the node's max_frame), SP_ERR_NOT_SUPPORTED (the store has
 * no outbox or append), SP_ERR_OUTBOX_FULL (nothing submitted),
 * SP_ERR_INVALID_STATE (a leader that stepped down), SP_ERR_STORE
 * (nothing submitted), or a fatal code.
 */
SP_API int sp_handler_submit(sp_handler *handler, const sp_entry *entries,
                             size_t n, uint64_t *first_origin, sp_tstamp now);

/*
 * Where submission `origin_seq` of this device stands: `*sequence` is its
 * sequence in this device's own log, or 0 if it is not there.  Returns 0
 * (in the log), SP_ERR_NOT_FOUND (not in the retained log: still in the
 * outbox, refused, or pruned), SP_ERR_NOT_SUPPORTED, SP_ERR_STORE.
 */
SP_API int sp_handler_submission(sp_handler *handler, uint64_t origin_seq,
                                 sp_seq *sequence);

/*
 * Called once when a wait registered with sp_handler_wait_committed ends:
 * `status` 0 and `sequence` the submission's place in this device's log
 * (0: committed, below what this log retains), or the refusal's code
 * (SP_ERR_REFUSED, SP_ERR_READ_ONLY...), SP_ERR_DEADLINE or
 * SP_ERR_CANCELED.  Return 0, or non-zero to fail the
 * library call in progress (SP_ERR_CALLBACK_FAILURE).
 */
typedef int (*sp_commit_wait_cb)(sp_handler *handler, uint64_t origin_seq,
                                 int status, sp_seq sequence,
                                 void *user_data);

/*
 * Read-your-writes: call `cb` once submission `origin_seq` of this device
 * is in this device's own log (then SP_EVENT_SUBMISSION_COMMITTED has
 * been emitted), refused, or at `deadline`.  On a leader, a wait on an
 * item still in its outbox (its drain failed) ends when a drain appends
 * it.  For "on N devices", wait for the sequence with
 * sp_handler_wait_acks on the leader.
 * Returns 1 if already in the log (`cb` is not called), 0 if registered,
 * SP_ERR_INVALID_ARGUMENT, SP_ERR_NOT_FOUND (no such submission pending
 * and none in the log), SP_ERR_NOT_SUPPORTED, SP_ERR_STORE, SP_ERR_NOMEM.
 */
SP_API int sp_handler_wait_committed(sp_handler *handler, uint64_t origin_seq,
                                     sp_tstamp deadline, sp_commit_wait_cb cb,
                                     void *user_data, sp_tstamp now);

/* sp_outbox_status's version (sp_handler_outbox_status). */
#define SP_OUTBOX_STATUS_VERSION 1

/* The write path's state, for status displays. */
typedef struct sp_outbox_status {
  /* Submissions not yet committed or refused, and their payload bytes. */
  uint64_t pending;
  uint64_t pending_bytes;
  /* Of those, proposed to the current leader and not answered yet. */
  uint64_t in_flight;
  /* 1 while the current leader stream negotiated writes. */
  int leader_accepts;
} sp_outbox_status;

/* Fill `*out` as struct version `version` (SP_OUTBOX_STATUS_VERSION: the
 * macro sp_handler_outbox_status(handler, out) passes it).  Returns 0,
 * SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION (a version this build does not
 * know), SP_ERR_NOT_SUPPORTED, SP_ERR_STORE. */
SP_API int sp_handler_outbox_status_versioned(sp_handler *handler,
                                              int version,
                                              sp_outbox_status *out);
#define sp_handler_outbox_status(handler, out)                             \
  sp_handler_outbox_status_versioned((handler), SP_OUTBOX_STATUS_VERSION, (out))

/* sp_handler_status's version (sp_handler_get_status). */
#define SP_HANDLER_STATUS_VERSION 2

/* A handler's state, for status displays. */
typedef struct sp_handler_status {
  sp_role role;
  uint64_t epoch;
  /* Leader: its latest sequence.  Follower: durably applied sequence. */
  sp_seq sequence;
  /* Follower: the leader's latest sequence as last heard (0 if unknown). */
  sp_seq leader_latest;
  /* Streams open for this library. */
  size_t connected_peers;
  /* Follower: 1 while stopped by SyncRequired. */
  int sync_required;
  /* Leader: 1 once it met a higher epoch and stopped serving. */
  int stepped_down;
  /* Version 2. */
  /* Follower without a stream to the leader: when it dials next (the
   * clock the host passes in, e.g. to sp_node_handle_expiry; at or
   * before "now" means at the next call).  0 while a stream exists, for
   * a leader, and while stopped by SyncRequired. */
  sp_tstamp next_attempt;
} sp_handler_status;

/* Fill `*out` as struct version `version` (SP_HANDLER_STATUS_VERSION: the
 * macro sp_handler_get_status(handler, out) passes it; only the bytes of
 * that version are written).  Returns 0, SP_ERR_INVALID_ARGUMENT or
 * SP_ERR_VERSION (a version this build does not know). */
SP_API int sp_handler_get_status_versioned(const sp_handler *handler,
                                           int version,
                                           sp_handler_status *out);
#define sp_handler_get_status(handler, out)                                \
  sp_handler_get_status_versioned((handler), SP_HANDLER_STATUS_VERSION, (out))

/*
 * Copy into `*out` the highest-epoch leadership claim the handler holds
 * (docs/protocol.md section 15): a leader's own while it leads with an
 * identity; after it stepped down, the claim that proved the newer
 * leader (its `leader` is the device to follow); a follower's, the
 * newest valid one its leader sent, which it relays.  Returns 0,
 * SP_ERR_INVALID_ARGUMENT, or SP_ERR_NOT_FOUND (it holds none).
 */
SP_API int sp_handler_leader_claim(const sp_handler *handler,
                                   sp_leader_claim *out);

/*
 * Follower with a snapshot sink: the progress of the snapshot recovery
 * under way, or of the last one (`out->state` says which), written as
 * struct version `version` (SP_SNAPSHOT_PROGRESS_VERSION: the macro
 * sp_handler_snapshot_status(handler, out) passes it).  Returns 0,
 * SP_ERR_INVALID_ARGUMENT, SP_ERR_VERSION (a version this build does not
 * know), or SP_ERR_NOT_FOUND (no recovery since the handler was created).
 */
SP_API int sp_handler_snapshot_status_versioned(const sp_handler *handler,
                                                int version,
                                                sp_snapshot_progress *out);
#define sp_handler_snapshot_status(handler, out)                           \
  sp_handler_snapshot_status_versioned((handler),                          \
                                       SP_SNAPSHOT_PROGRESS_VERSION, (out))

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_NODE_H */
