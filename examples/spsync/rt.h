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

typedef struct rt_options {
  const char *key_path;
  const char *pairing_path;
  const char *log_path;
  const char *listen; /* NULL: the device's pairing address, or 127.0.0.1:0 */
  sp_role role;
  uint64_t epoch;     /* leader: 0 = the epoch stored with the log, or 1 */
  int sync_full;
  int verbose;
  uint64_t outbox_max_bytes; /* 0: the handler's default */
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
} rt;

/* Set by SIGINT/SIGTERM: the loops end cleanly. */
extern volatile sig_atomic_t rt_stop;

/* Open everything; on error print why to stderr and return -1. */
int rt_open(rt *r, const rt_options *o);
void rt_close(rt *r);

/* Wait for the network or a timer, at most `max_wait`, then process.
 * Returns 0, or -1 after printing a fatal error. */
int rt_step(rt *r, sp_duration max_wait);

/* Print "<who>: submitted N, committed N, refused N". */
void rt_print_writes(const rt *r, const char *who, uint64_t submitted);

/* Print an error code with context. */
void rt_error(const char *what, int code);

#endif
