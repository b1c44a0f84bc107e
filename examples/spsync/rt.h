/*
 * rt.h: what the leader and follower commands share: a device running
 * one library over QUIC with a SQLite log.
 */
#ifndef SPSYNC_RT_H
#define SPSYNC_RT_H

#include <signal.h>

#include <sync_protocol/quic.h>
#include <sync_protocol/sqlite_store.h>

#include "pairing.h"
#include "snapsink.h"

typedef struct rt_options {
  const char *key_path;
  const char *pairing_path;
  const char *log_path;
  const char *listen; /* NULL: the device's pairing address, or 127.0.0.1:0 */
  sp_role role;
  uint64_t epoch;     /* leader: 0 = the epoch stored with the log, or 1 */
  int sync_full;
  /* Follower: the log commits pages on a thread of its own (sqlite_store.h
   * apply_thread) while the next ones are verified. */
  int apply_thread;
  int verbose;
  uint64_t outbox_max_bytes; /* 0: the handler's default */
  /* Snapshots (recovery from SyncRequired): the leader serves them from
   * its log, the follower installs them into its log, unless this is set
   * (the follower then stops at SyncRequired, exit status 3). */
  int no_snapshots;
  uint32_t snapshot_chunk;    /* leader: chunk size; 0: the library's */
  uint32_t snapshot_window;   /* follower: chunks in flight; 0: default */
  uint64_t snapshot_max;      /* follower: largest accepted; 0: no limit */
  unsigned snapshot_delay_ms; /* follower: pause after each chunk written */
  /* Leader: may go on as a follower after stepping down (rt_follow), so
   * the handler gets a snapshot sink too. */
  int follow_on_step_down;
} rt_options;

typedef struct rt {
  pairing pair;
  sp_identity *id;
  sp_sqlite_store *store;
  sp_quic_endpoint *ep;
  sp_node *node;
  sp_handler *h;
  const pairing_device *self;
  int verbose;
  /* From events. */
  uint64_t applied_batches;
  int sync_required;
  sp_sync_reason sync_reason;
  int peers;
  /* Submissions of this process that reached the own log / were refused
   * (SP_EVENT_SUBMISSION_*). */
  uint64_t committed;
  uint64_t refused;
  /* Polled with the network when >= 0 (a pipe spsync reads entries from). */
  int watch_fd;
  /* Snapshots: what the handler was given (it copies the vtables; the
   * sink wrapper is their user_data and lives here). */
  int snapshots;
  sp_snapshot_source source;
  sp_snapshot_sink sink_vt;
  snapsink sink;
  /* From SP_EVENT_SNAPSHOT_*: the last progress; snapshot events since
   * the last SP_EVENT_SYNC_REQUIRED_RECEIVED (a recovery answered it);
   * installs the command has not reported yet. */
  sp_snapshot_progress snap;
  int snap_events;
  int snap_installed;
  /* From SP_EVENT_STEPPED_DOWN: the epoch and the device whose claim
   * proved it (zero if the event named none). */
  int stepped_down;
  uint64_t step_epoch;
  sp_uuid step_leader;
  /* Follower: its link to the leader, for the display (events carry no
   * time: these are the host's clock when the event came).  leader_up:
   * a stream to the leader is accepted (PEER_CONNECTED, no PEER_LOST
   * since).  link_down_at: when the last attempt failed or the stream was
   * lost (0: neither yet); link_code, link_why: why; link_failures:
   * failed attempts since the last connection. */
  int leader_up;
  sp_tstamp link_down_at;
  int link_code;
  char link_why[128];
  unsigned link_failures;
} rt;

/* Set by SIGINT/SIGTERM: the loops end cleanly. */
extern volatile sig_atomic_t rt_stop;

/* Open everything; on error print why to stderr and return -1. */
int rt_open(rt *r, const rt_options *o);
void rt_close(rt *r);

/* Wait for the network or a timer, at most `max_wait`, then process.
 * Returns 0, or -1 after printing a fatal error. */
int rt_step(rt *r, sp_duration max_wait);

/* After SP_EVENT_STEPPED_DOWN: follow `leader` (the registry names it
 * the leader from now on).  Not from inside a callback.  Returns 0, or -1
 * after printing why (`leader` is not in the pairing file, or the role
 * change failed). */
int rt_follow(rt *r, const sp_uuid *leader);

/* Print "<who>: submitted N, committed N, refused N". */
void rt_print_writes(const rt *r, const char *who, uint64_t submitted);

/* Print an error code with context. */
void rt_error(const char *what, int code);

/* "SP_SYNC_BEHIND_RETENTION: the follower's position was pruned from the
 * leader's log", or "reason N" for one this build does not know. */
const char *rt_sync_reason(sp_sync_reason reason, char *buf, size_t len);

/* "<uuid> (<name>)", or "<uuid>" if the pairing file names none; `buf`
 * holds at least RT_PEER_LEN bytes. */
#define RT_PEER_LEN (SP_UUID_STRING_LEN + 40)
const char *rt_peer_label(const rt *r, const sp_uuid *id, char *buf);

#endif
