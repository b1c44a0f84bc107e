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
#define SP_EVENTS_INIT {SP_EVENTS_VERSION, NULL, NULL, NULL, 0}

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
  /* Follower: entries (from_sequence, to_sequence] are durably applied. */
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
  /* Follower: applied everything the leader announced (lag 0). */
  SP_EVENT_CAUGHT_UP = 10
} sp_event_type;

typedef struct sp_event {
  sp_event_type type;
  sp_uuid library_id;
  /* The peer device, when `has_peer` is 1. */
  sp_uuid peer_id;
  int has_peer;
  /* SP_EVENT_PEER_LOST, SP_EVENT_ERROR: an sp_error code. */
  int error_code;
  /* SP_EVENT_ERROR: NUL-terminated text, valid during the callback. */
  const char *message;
  /* SP_EVENT_ENTRIES_APPLIED: the applied range; CAUGHT_UP: to_sequence. */
  sp_seq from_sequence;
  sp_seq to_sequence;
  /* SP_EVENT_ACK_RECEIVED. */
  sp_follower_progress progress;
  /* SP_EVENT_SYNC_REQUIRED_*: reason and sequences. */
  sp_sync_reason sync_reason;
  sp_seq leader_latest;
  sp_seq leader_oldest;
  sp_seq follower_sequence;
  /* SP_EVENT_STEPPED_DOWN, SP_EVENT_ROLE_CONFLICT: the other epoch. */
  uint64_t epoch;
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
