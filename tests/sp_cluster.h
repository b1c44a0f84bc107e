/*
 * sp_cluster.h: a simulated cluster for tests: devices with nodes and
 * in-memory stores on one sp_mem_net, each with its Ed25519 identity, a
 * registry (members, leader, keys, who may write and lead), a clock, an
 * event recorder, and a wire tap that decodes every frame on every
 * stream.
 */
#ifndef SP_CLUSTER_H
#define SP_CLUSTER_H

#include "sync_protocol/sync_protocol.h"
#include "sync_protocol/identity.h"

#define TC_MAX_DEVS 8
#define TC_MAX_LIBS 3

typedef struct tc tc;

/* What one device saw through its events. */
typedef struct tc_counts {
  long ev[32];           /* by sp_event_type */
  long applied_entries;  /* sequences covered by ENTRIES_APPLIED events */
  int last_error;        /* last SP_EVENT_ERROR code */
  int last_lost;         /* last PEER_LOST code */
  sp_sync_reason last_sync_reason;
  uint64_t last_epoch;   /* STEPPED_DOWN / ROLE_CONFLICT */
  sp_uuid last_leader;   /* STEPPED_DOWN: whose claim proved the epoch */
  sp_seq last_corrupt_seq; /* LOG_CORRUPT */
} tc_counts;

/* Frames seen on the wire, by sender and type. */
typedef struct tc_wire {
  long msgs[16];         /* by sp_msg_type */
  long errors_by_code[8];/* unused slots for tests */
  long fetch_since_first;/* since of the last hashed (resume) fetch */
  long bytes;
  long max_inflight_fetches;
} tc_wire;

typedef struct tc_dev {
  tc *tc;
  int index;
  sp_uuid id;
  sp_transport tr;
  sp_node *node;
  sp_handler *h[TC_MAX_LIBS];
  sp_mem_store *store[TC_MAX_LIBS];
  sp_handler_config cfg[TC_MAX_LIBS];
  int member[TC_MAX_LIBS];
  /* Listed read-only for the library (registry can_write says 0). */
  int read_only[TC_MAX_LIBS];
  /* What the registry's may_lead says (tc_init: 1, every member may
   * lead). */
  int may_lead[TC_MAX_LIBS];
  /* The device's key (tc_init; kept across restarts): its node signs its
   * leaderships with it, and the registry's device_key gives `key`, so
   * every step-down in a cluster is proven by a real claim. */
  sp_identity *identity;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  /* Set by a test, then tc_restart / tc_boot: the node runs without its
   * identity (its leaderships carry no claim; the registry still knows
   * its key). */
  int anonymous;
  /* Set by a test before tc_open: the library's store applies
   * asynchronously, through an sp_async_store (sp_async_store.h) around
   * the mem store (after store_hook); `astore` is it while the library
   * is open.  The mem store holds what is durable; the test makes queued
   * batches durable with tc_flush, a crash (tc_crash) loses them, a
   * clean close (tc_close) lets the store finish them. */
  int async[TC_MAX_LIBS]; /* 2: report failures once (report_once) */
  struct sp_async_store *astore[TC_MAX_LIBS];
  tc_counts counts;
  tc_wire sent;
  /* Fetches sent minus pages ending a request (pipeline depth). */
  long fetch_depth;
} tc_dev;

struct tc {
  const sp_mem *mem;
  sp_mem_net *net;
  sp_mem_net_config net_cfg;
  sp_tstamp now;
  int ndevs;
  int nlibs;
  tc_dev dev[TC_MAX_DEVS];
  sp_uuid lib[TC_MAX_LIBS];
  int leader[TC_MAX_LIBS];
  /* Optional extra fault hook run after the tap. */
  int (*fault)(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v);
  void *fault_ud;
  /* Optional: sees every frame the tap decodes (`to` is -1 for a device
   * the cluster does not know), before the fault hook's verdict. */
  void (*on_msg)(tc *t, int from, int to, uint64_t stream, const sp_msg *m);
  /* Optional: sees every event after it is counted. */
  void (*on_event)(tc *t, int dev, const sp_event *ev);
  /* Optional: sees every log line (DEBUG and up) of the nodes booted
   * while it is set (set it, then tc_restart). */
  void (*on_log)(tc *t, int dev, sp_log_level level, const char *line);
  /* Optional: may wrap a store's vtable before tc_open / tc_open_as hand
   * it to the handler (faults inside store calls). */
  void (*store_hook)(tc *t, int dev, int lib, sp_store *st);
  /* Tap state: one reader + decoder per (stream, direction). */
  struct tc_tap *taps;
  size_t ntaps;
  int verbose;
  /* First fatal error from a node (tests assert it stays 0). */
  int fatal;
  /* Stop running once a fatal error was seen. */
  int stop_on_fatal;
  uint64_t seed;
};

/* Build `ndevs` devices (all members of `nlibs` libraries, device 0 the
 * leader of each) on a network with `latency`.  Nodes exist but no
 * handler yet.  `mem` may be NULL. */
int tc_init(tc *t, int ndevs, int nlibs, sp_duration latency,
            const sp_mem *mem);
void tc_free(tc *t);

/* Handler config used by tc_open (defaults with short test timers). */
void tc_default_cfg(tc *t, int dev, int lib, sp_role role);

/* Open library `lib` on device `dev` with its role from the registry
 * (leader if t->leader[lib] == dev) and dev->cfg[lib]. */
int tc_open(tc *t, int dev, int lib);
/* Open with an explicit role and epoch, whatever the registry says. */
int tc_open_as(tc *t, int dev, int lib, sp_role role, uint64_t epoch);
void tc_close(tc *t, int dev, int lib);

/* Crash and restart a device's node (store kept): detach, delete node,
 * create a new node and reopen the libraries it had open. */
int tc_restart(tc *t, int dev);
/* Delete a device's node (as a crash) and keep it down. */
void tc_crash(tc *t, int dev);
int tc_boot(tc *t, int dev);

/* Append `n` entries of `payload` bytes to the leader's store of `lib`
 * and notify.  Returns the latest sequence. */
sp_seq tc_append(tc *t, int lib, int n, size_t payload);
/* Append with an explicit sequence (gaps). */
void tc_append_at(tc *t, int lib, sp_seq seq, size_t payload);
/* Only notify the leader of entries already in its store. */
void tc_notify(tc *t, int lib);

/* Write `m` as one frame into stream `stream` of device `dev`, as if its
 * node had sent it (through the fault hook like any bytes).  Returns 0,
 * 1 if the transport took only part of the frame (the stream is torn),
 * or a negative code (nothing sent). */
int tc_inject(tc *t, int dev, uint64_t stream, const sp_msg *m);

/* Run the network and timers until `until` (absolute). */
void tc_run_until(tc *t, sp_tstamp until);
void tc_run_for(tc *t, sp_duration d);
/* Run until every open follower of `lib` applied the leader's latest, or
 * `max` passes; returns 1 if converged. */
int tc_converge(tc *t, int lib, sp_duration max);

/* Make the oldest `n` batches queued in `dev`'s async store of `lib`
 * durable (SIZE_MAX: all), then wake its node as the store's fd would
 * (sp_node_handle_expiry).  Returns what sp_async_store_flush returned
 * (0 if the library has no async store). */
int tc_flush(tc *t, int dev, int lib, size_t n);

/* 1 if follower `dev`'s log of `lib` is a byte-identical prefix of the
 * leader's (equal sequence, chain hash and content). */
int tc_is_prefix(tc *t, int dev, int lib);
sp_seq tc_applied(tc *t, int dev, int lib);
sp_seq tc_latest(tc *t, int lib);

#endif /* SP_CLUSTER_H */
