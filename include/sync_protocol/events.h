/*
 * events.h: what the library tells the host (the host's EventBus), and
 * its log sink.
 *
 * One callback receives every event as a tagged struct, so new event types
 * never change the vtable.  Callback contract: `on_event` returns 0, or
 * non-zero to make the library call in progress fail with
 * SP_ERR_CALLBACK_FAILURE (fatal).  `on_log` returns nothing: a log line
 * cannot fail an operation.  Neither may call back into the same node.
 */
#ifndef SYNC_PROTOCOL_EVENTS_H
#define SYNC_PROTOCOL_EVENTS_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_EVENTS_VERSION 1
#define SP_EVENTS_INIT {SP_EVENTS_VERSION, NULL, NULL, NULL, SP_LOG_ERROR}

/*
 * Output structs grow.  Each caller-allocated output struct has a version
 * (SP_<NAME>_VERSION, raised when fields are added at its end); its getter
 * is exported as `<getter>_versioned(..., version, out)` and the header's
 * short name is a macro passing the version the caller compiled against.
 * The library writes only the bytes that version has, so a program built
 * against an older header keeps working with a newer library.
 */

/* sp_follower_progress's version (sp_handler_follower_progress,
 * sp_handler_list_followers). */
#define SP_FOLLOWER_PROGRESS_VERSION 1

/* A leader's view of one follower. */
typedef struct sp_follower_progress {
  sp_uuid device_id;
  /* 1 if a stream to the follower is open now. */
  int connected;
  /* Highest sequence the follower acknowledged as durable (0 if none). */
  sp_seq acked_sequence;
  /* 1 once the follower has acknowledged anything since the leader began. */
  int has_acked;
  /* Leader's latest minus acked_sequence (entries, counting gaps). */
  uint64_t lag;
  /* Time since the last ack, or SP_TSTAMP_MAX if never. */
  sp_duration since_last_ack;
} sp_follower_progress;

typedef enum sp_event_type {
  /* A stream to a peer for this library is open and accepted. */
  SP_EVENT_PEER_CONNECTED = 1,
  /* That stream ended; `error_code` says why (0: clean close). */
  SP_EVENT_PEER_LOST = 2,
  /* Follower: entries (from_sequence, to_sequence] are durably applied,
   * half-open as every range here: from_sequence is the sequence the
   * store stood at before (0 on an empty log), to_sequence the last entry
   * applied, so consecutive events tile the log ((0, 3] then (3, 7]) and
   * to_sequence - from_sequence counts sequences, not entries (a gap in
   * the leader's log is inside the range and holds none). */
  SP_EVENT_ENTRIES_APPLIED = 3,
  /* Leader: a follower acknowledged; see `progress`. */
  SP_EVENT_ACK_RECEIVED = 4,
  /* Leader: SyncRequired sent to `peer`; see `sync`. */
  SP_EVENT_SYNC_REQUIRED_SENT = 5,
  /* Follower: SyncRequired received; fetching stopped until the host calls
   * sp_handler_resync_done. */
  SP_EVENT_SYNC_REQUIRED_RECEIVED = 6,
  /* Two devices both claim to lead this library with the same epoch. */
  SP_EVENT_ROLE_CONFLICT = 7,
  /* Something failed or a peer was refused; `error_code`, `message`. */
  SP_EVENT_ERROR = 8,
  /* Leader: met a higher epoch and stopped leading; `epoch` is it. */
  SP_EVENT_STEPPED_DOWN = 9,
  /* Follower: applied everything the leader announced (lag 0);
   * to_sequence is the store's applied sequence.  Emitted when a page
   * saying has_more = false leaves the follower at the leader's latest
   * (docs/protocol.md "Events and the wire"): once per stream when that
   * first happens -- at 0 only if the leader's log is empty, never
   * before the leader said where it stands -- and again each time it
   * happens after entries were applied or announced since (a pushed page
   * that brought them all counts), never for an empty page that changed
   * nothing. */
  SP_EVENT_CAUGHT_UP = 10,
  /* Leader: its own log is corrupt at rest: the stored row `to_sequence`
   * does not match its chain hash (`error_code` SP_ERR_STORE_CORRUPT).
   * The row and everything after it are not served until the host
   * repairs the store; followers are refused, never told to resync.
   * Reported when first met, and again only when another row was met in
   * between (the handler remembers the last row reported, not every
   * one): serving the same row again is not reported again. */
  SP_EVENT_LOG_CORRUPT = 11,
  /* Follower: the store failed to apply (disk full, I/O error...): one
   * event per failure episode, not one per retry.  `error_code` is the
   * store's own code when it returned an sp_error (SP_ERR_IO,
   * SP_ERR_STORE_CORRUPT...), else SP_ERR_STORE; `message` says which
   * call failed and why, in the store's words when its vtable has
   * `errmsg` (sys/store.h): "store apply failed: database or disk is
   * full".  Until the episode ends the follower retries with its
   * backoff (reconnect_min doubling to reconnect_max) and refuses the
   * leader's streams in between (SP_ERR_BACKING_OFF).  The episode ends
   * with SP_EVENT_STORE_RECOVERED. */
  SP_EVENT_STORE_FAILED = 12,
  /* Follower: the end of an SP_EVENT_STORE_FAILED episode
   * (`to_sequence` is the applied sequence); the backoff is reset.  An
   * episode a write opened (apply, epoch record, an outbox write) ends
   * with the first write that succeeds (an apply, an epoch record, a
   * submit's outbox_put, a refusal or retirement's outbox_remove; not
   * the outbox anchoring each new stream does); one only the state read
   * opened ends with the first state read that succeeds (a caught-up
   * follower may have nothing to write).  An episode outlives role
   * changes (sp_handler_set_role) and ends in the next follower term by
   * the same rule. */
  SP_EVENT_STORE_RECOVERED = 13,
  /* The submission `origin_seq` (sp_handler_submit) is in this device's
   * own log at `to_sequence` (0: committed, below what this log retains).
   * Outcome events are per process, and not every outcome is one:
   * a submission committed while the process was down, or retired by a
   * full sync (sp_handler_resync_done) before this process proposed it,
   * is not reported -- ask sp_handler_submission (or
   * sp_handler_wait_committed, which returns 1 for it).  And a commit is
   * only as final as the history it is in: after a COMMITTED from a
   * history later discarded (a page of a stale leader that a full sync
   * throws away; a failover to a leader that never had the entry), the
   * store puts the item back into the outbox and the submission gets a
   * second outcome (COMMITTED again, or REFUSED).  Otherwise one outcome
   * per submission per process. */
  SP_EVENT_SUBMISSION_COMMITTED = 14,
  /* The leader refused the submission `origin_seq`: `error_code` and
   * `message` are its reason.  The refusal is durable (the item left the
   * outbox) when this is emitted; it is final (the same per-process rules
   * as SP_EVENT_SUBMISSION_COMMITTED say when it is not emitted). */
  SP_EVENT_SUBMISSION_REFUSED = 15,
  /* Leader: the library appended entries (from_sequence, to_sequence] to
   * the log through the store's `append`: followers' accepted proposals,
   * this device's drained outbox, or its own sp_handler_submit.  A host
   * that keeps its own state beside the log applies them from here, as a
   * follower's host does on SP_EVENT_ENTRIES_APPLIED. */
  SP_EVENT_ENTRIES_APPENDED = 16,
  /* Follower with a snapshot sink: a recovery after SyncRequired is under
   * way (SP_EVENT_SYNC_REQUIRED_RECEIVED came first): a manifest was
   * accepted, or a chunk was written durably.  `snapshot` says how far. */
  SP_EVENT_SNAPSHOT_PROGRESS = 17,
  /* The snapshot is installed: the log stands at `to_sequence` (S) and
   * incremental sync resumes from S + 1.  The host's state is the
   * snapshot's: a host that keeps its own state beside the log reloads
   * it from the sink's result now. */
  SP_EVENT_SNAPSHOT_INSTALLED = 18,
  /* The recovery gave up (`error_code`: SP_ERR_SNAPSHOT_FAILED after its
   * bounded restarts, SP_ERR_SNAPSHOT_TOO_LARGE; `message` says why).
   * The follower stays stopped by SyncRequired: it tries again by itself
   * after a backoff (10 minutes, doubling, at most 6 hours), and
   * sp_handler_resync_done still works for a host that recovers by its
   * own means. */
  SP_EVENT_SNAPSHOT_FAILED = 19
} sp_event_type;

/* Where a snapshot recovery stands (SP_EVENT_SNAPSHOT_*,
 * sp_handler_snapshot_status). */
typedef enum sp_snapshot_state {
  SP_SNAPSHOT_IDLE = 0,        /* none under way (none yet, or abandoned) */
  SP_SNAPSHOT_TRANSFERRING = 1, /* asking, fetching or verifying */
  SP_SNAPSHOT_INSTALLED = 2,   /* the last one was installed */
  SP_SNAPSHOT_FAILED = 3       /* the last one gave up */
} sp_snapshot_state;

/* sp_snapshot_progress's version (sp_handler_snapshot_status). */
#define SP_SNAPSHOT_PROGRESS_VERSION 1

typedef struct sp_snapshot_progress {
  sp_snapshot_state state;
  /* S of the snapshot being (or last) transferred; 0 before a manifest. */
  sp_seq sequence;
  /* Bytes and chunks held durably by the sink, of the totals. */
  uint64_t bytes_done;
  uint64_t bytes_total;
  uint64_t chunks_done;
  uint64_t chunk_count;
  /* In this recovery: manifests that resumed with chunks already held
   * (after a cut, a crash, a leader restart), and restarts from chunk 0
   * (at most 5, docs/protocol.md 14.8). */
  uint32_t resumes;
  uint32_t restarts;
} sp_snapshot_progress;

/*
 * Built by the library and valid during on_event only.  It grows only at
 * its end (a host never allocates one); the structs it points to grow the
 * same way, which is why it holds pointers to them and not copies.
 */
typedef struct sp_event {
  sp_event_type type;
  sp_uuid library_id;
  /* The peer device, when `has_peer` is 1. */
  sp_uuid peer_id;
  int has_peer;
  /* SP_EVENT_PEER_LOST, SP_EVENT_ERROR, SP_EVENT_STORE_FAILED: an
   * sp_error code. */
  int error_code;
  /* SP_EVENT_ERROR, SP_EVENT_STORE_FAILED: NUL-terminated text, valid
   * during the callback. */
  const char *message;
  /* SP_EVENT_ENTRIES_APPLIED, SP_EVENT_ENTRIES_APPENDED: the range;
   * CAUGHT_UP: to_sequence;
   * LOG_CORRUPT: to_sequence is the first corrupt row. */
  sp_seq from_sequence;
  sp_seq to_sequence;
  /* SP_EVENT_ACK_RECEIVED: the follower's progress (NULL when the
   * event has none). */
  const sp_follower_progress *progress;
  /* SP_EVENT_SYNC_REQUIRED_*: reason and sequences. */
  sp_sync_reason sync_reason;
  sp_seq leader_latest;
  sp_seq leader_oldest;
  sp_seq follower_sequence;
  /* SP_EVENT_STEPPED_DOWN, SP_EVENT_ROLE_CONFLICT: the other epoch. */
  uint64_t epoch;
  /* SP_EVENT_SUBMISSION_*: the submission's origin_seq. */
  uint64_t origin_seq;
  /* SP_EVENT_SNAPSHOT_*: the recovery's progress (NULL for other
   * events). */
  const sp_snapshot_progress *snapshot;
  /* SP_EVENT_STEPPED_DOWN: the device whose leadership claim proved
   * `epoch` (docs/protocol.md section 15); it may differ from the peer,
   * a follower that relayed the claim. */
  sp_uuid leader;
  /* SP_EVENT_STORE_FAILED: the parts of `message` apart, for a host
   * that words its own: the store call that failed ("apply", "state",
   * "epoch record", "snapshot commit"...) and the cause (the store's
   * errmsg, else sp_strerror(error_code)).  NULL for other events; valid
   * during the callback. */
  const char *store_call;
  const char *store_cause;
} sp_event;

typedef enum sp_log_level {
  SP_LOG_ERROR = 0,
  SP_LOG_WARN = 1,
  SP_LOG_INFO = 2,
  SP_LOG_DEBUG = 3
} sp_log_level;

typedef struct sp_events {
  /* SP_EVENTS_VERSION. */
  unsigned int version;
  /* Passed to both callbacks; must outlive the node. */
  void *user_data;
  /* Optional.  `ev` and what it points to are valid during the call. */
  int (*on_event)(const sp_event *ev, void *user_data);
  /* Optional.  `msg` is NUL-terminated, valid during the call. */
  void (*on_log)(sp_log_level level, const char *msg, void *user_data);
  /* Lines above this level are not formatted at all. */
  sp_log_level log_level;
} sp_events;

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_EVENTS_H */
