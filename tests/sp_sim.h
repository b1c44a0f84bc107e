/*
 * sp_sim.h: the fault simulation's state, shared by sp_sim.c (the
 * faults, the read path's invariants, the runs) and sp_sim_writes.c
 * (submissions, admission, the write path's invariants and verdict).
 */
#ifndef SP_SIM_H
#define SP_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "sp_async_store.h"
#include "sp_cluster.h"
#include "sp_core.h"
#include "sp_rand.h"

#define LIB 0
#define MS SP_MILLISECONDS
#define MAX_SEQ 200000
#define SIM_MAX_EPOCH 256

typedef enum mode {
  M_DOWN = 0,
  M_LEADER,
  M_FOLLOWER,
  /* An old leader back with its old epoch, not yet fenced. */
  M_STALE
} mode;

typedef struct sim {
  tc t;
  sp_rand rng;
  uint64_t seed;
  int step;
  const char *argv0;
  mode mode[TC_MAX_DEVS];
  /* Stepped down since the host last looked. */
  int stepped[TC_MAX_DEVS];
  /* The log may hold entries the current history lacks: it must not
   * apply anything until a full sync (applied frozen at this value). */
  int diverged[TC_MAX_DEVS];
  sp_seq frozen[TC_MAX_DEVS];
  /* Highest epoch each device's log recorded (checked never to fall). */
  uint64_t last_epoch[TC_MAX_DEVS];
  /* The epoch a deposed leader believes it still has. */
  uint64_t lead_epoch[TC_MAX_DEVS];
  /* Drop what the device sends, then crash it (crash between apply and
   * ack). */
  int crash_armed[TC_MAX_DEVS];
  int crash_now[TC_MAX_DEVS];
  sp_tstamp heal_at[TC_MAX_DEVS];
  uint64_t epoch;
  /* The highest sequence of the current history some log pruned: a
   * failover must not cut the history below it (failover()). */
  sp_seq pruned_hist;
  /* The history's length when epoch e began (a failover's cut; none for
   * the first epoch: UINT64_MAX), for epochs below SIM_MAX_EPOCH. */
  sp_seq epoch_cut[SIM_MAX_EPOCH];
  /* Marked diverged by unaware_divergence (a deposed leader's late page):
   * it may go on applying that leader's pages until it hears the epoch. */
  int unaware[TC_MAX_DEVS];
  /* The history: chain hash after each sequence the leader serves. */
  uint8_t (*oracle)[SP_HASH_LEN];
  sp_seq oracle_len;
  /* A corrupted page was sent to the device since its last full sync. */
  int corrupted[TC_MAX_DEVS];
  /* Taken out of the library's registry (registry_change), and, once the
   * leader was told, the most it may ever have applied until put back. */
  int removed[TC_MAX_DEVS];
  sp_seq removed_cap[TC_MAX_DEVS];
  /* A fault changed the bytes the device sent (a duplicated request is
   * one the device did not send): the leader may then count more
   * requests than the follower's window. */
  int tampered[TC_MAX_DEVS];
  sp_decoder *dec;
  /* Fault rates in 1/10000 per delivery. */
  unsigned p_drop, p_dup, p_reorder, p_delay, p_cut, p_corrupt;
  /* Prune inside the leader's store read, in 1/10000 per read. */
  unsigned p_read_prune;
  int faults_on;
  char failure[512];
  /* ---- the write path (sp_sim_writes.c) ---- */
  struct wsub *subs;
  size_t nsubs, capsubs;
  /* Per history sequence: the submission it carries (index + 1, 0 for
   * none) and its origin_seq (0 for none). */
  uint32_t *hist_tag;
  uint64_t *hist_origin;
  /* Per device: origin_seq -> submission index + 1 (outbox and log). */
  uint32_t *omap[TC_MAX_DEVS];
  size_t omap_cap[TC_MAX_DEVS];
  /* Per device and origin device: origin ids its log has held, and how
   * far the log was scanned (every origin id at most once per log). */
  uint8_t *seen[TC_MAX_DEVS][TC_MAX_DEVS];
  size_t seen_cap[TC_MAX_DEVS][TC_MAX_DEVS];
  sp_seq scanned[TC_MAX_DEVS];
  /* Rates in 1/10000: per step, submissions; per proposal, the leader's
   * host refuses, replaces, or replaces changing the record (refused);
   * per admitted batch, the leader crashes between append and answer. */
  unsigned p_submit, p_refuse, p_replace, p_bad_replace, p_crash_append;
  /* Listed read-only for the library (-1: none): its proposals are
   * refused SP_ERR_READ_ONLY. */
  int ro_dev;
  uint8_t rep_buf[96];
  /* ---- leadership claims (sp_sim.c) ---- */
  /* The device the sim made leader at each epoch (open_dev, failover;
   * -1: none), below SIM_MAX_EPOCH: the only claims that may depose. */
  int given[SIM_MAX_EPOCH];
  /* A device no registry knows (process-wide): it signs strangers'
   * claims. */
  sp_identity *stranger;
  /* Streams a forged frame went into, until the leader's refusal shows
   * on them. */
  struct forgery {
    uint64_t stream;
    int forger;
  } forgeries[16];
  size_t nforgeries;
  /* ---- asynchronous apply (sp_sim_async.c) ---- */
  /* Its own generator; how eager the stores are (1/100 per wake); some
   * device of the seed applies asynchronously; what each device's
   * wrapper had done when last counted. */
  sp_rand arng;
  unsigned async_eager;
  int async_any;
  sp_async_stats async_seen[TC_MAX_DEVS];
} sim;

/* The one simulation: fault, event and store hooks reach it here. */
extern sim *g_sim;

/* sp_sim.c */
unsigned below(sim *s, unsigned n);
int chance(sim *s, unsigned per10000);
void fail(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int leader_of(sim *s);
int dev_of(sim *s, const sp_uuid *id);
sp_store_state state_of(sim *s, int dev);
int matches_oracle(sim *s, const sp_store_state *st);
/* The current leader holds (from, to]: extend the history. */
void oracle_record(sim *s, sp_seq from, sp_seq to);
void crash(sim *s, int d);
/* Device d's log left the history only because a deposed leader's page
 * reached it before it heard of the newer epoch (sp_sim.c). */
int unaware_divergence(sim *s, int d, const sp_store_state *st);

/* sp_sim_writes.c */

/* What the write path's faults and outcomes added up to over all seeds. */
typedef struct wtotals {
  long submitted, committed_once, refused, lost, duplicated;
  /* Submissions of seeds that failed before their verdict. */
  long unjudged;
  long host_refusals, replacements, leader_side;
  long crash_after_submit, crash_after_append, append_failures, outbox_full,
      truncated, committed_events;
} wtotals;
extern wtotals wtot;

/* Draw the write path's knobs and rates (after the devices' configs). */
void configure_writes(sim *s);
/* One step's submissions and store faults. */
void writes_step(sim *s);
/* Wrap a store's append and outbox_anchor (store_hook). */
void writes_store_hook(sp_store *st);
void writes_event(sim *s, int d, const sp_event *ev);
/* A failover: the history ends at `len`; device `promoted` leads. */
void writes_failover(sim *s, sp_seq len, int promoted);
/* A full sync replaced device d's log. */
void writes_full_sync(sim *s, int d);
int outbox_items(sim *s, int d, sp_outbox_stats *os);
void check_writes(sim *s);
/* Submissions neither in the history nor refused (liveness bound). */
long writes_pending(sim *s);
void writes_reset(sim *s);
void writes_free(sim *s);
/* After convergence: every submission once, or refused. */
void writes_verdict(sim *s);
/* The seed failed before its verdict: count its submissions apart. */
void writes_unjudged(sim *s);

/* sp_sim.c, for the snapshot hosts: the most a leader's host may prune
 * (the host contract), and the note of a prune. */
sp_seq prune_cap(sim *s);
void note_prune(sim *s, sp_seq to);

/* sp_sim_async.c */

/* What the asynchronous stores did over all seeds. */
typedef struct atotals {
  long devices, seeds, queued, flushed, failed, injected;
  /* Batches queued when their device crashed (lost with the process),
   * and the crashes that found some. */
  long pending_at_crash, crashes_pending;
  /* Acknowledgements past what an async device held durably (each also
   * fails its seed). */
  long lost;
} atotals;
extern atotals atot;

/* Draw which devices apply asynchronously (after tc_init, before they
 * open) and how eager their stores are. */
void configure_async(sim *s);
/* tc_run_for, cut at random points where the async stores wake. */
void async_run_for(sim *s, sp_duration d);
/* Device d's store finishes what it queued (its host waits for it before
 * promoting it or replacing its log). */
void async_settle(sim *s, int d);
/* Device d is about to crash / was opened / the seed ends: count. */
void async_crashed(sim *s, int d);
void async_opened(sim *s, int d);
void async_seed_done(sim *s);

/* sp_sim_snap.c */

/* What snapshot recoveries and their faults added up to over all seeds. */
typedef struct stotals {
  long installed, resumed, half, loops;
  long recoveries, failed, too_large, restarts;
  /* Seeds with at least one snapshot installed. */
  long seeds;
  long sink_failures, sink_crashes, source_failures, read_corruptions,
      wire_corruptions, host_syncs_mid, prunes;
} stotals;
extern stotals stot;

/* Draw sinks, sources, chunk sizes, windows and fault rates (after the
 * devices' configs). */
void configure_snapshots(sim *s);
/* One step's host action: a prune past lagging followers. */
void snap_step(sim *s);
/* Wrap a store's apply: a process that crashed inside a sink call
 * writes nothing more. */
void snap_store_hook(sp_store *st);
/* A flipped byte in a snapshot frame (1 if the verdict was set). */
int snap_wire_fault(sim *s, const sp_mem_delivery *d, sp_mem_verdict *v);
void snap_event(sim *s, int d, const sp_event *ev);
/* Device d crashed; a new cause for SyncRequired on d (-1: all); the
 * leader's host pruned through `to`. */
void snap_crashed(sim *s, int d);
void snap_cause(sim *s, int d);
void snap_pruned(sim *s, sp_seq to);
/* 1 if device d's host leaves its SyncRequired to the library now. */
int snap_host_waits(sim *s, int d);
/* Device d's host did its own full sync. */
void snap_full_sync(sim *s, int d);
void check_snapshots(sim *s);
/* What recoveries add to the liveness bound when the faults stop. */
sp_duration snap_liveness(sim *s);

#endif /* SP_SIM_H */
