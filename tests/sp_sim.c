/*
 * sp_sim.c: deterministic fault simulation.
 *
 * One leader and one to three followers on the in-memory network with a
 * simulated clock; every choice (configuration, faults, host actions,
 * timing) comes from one seed, so a failing seed replays exactly.  Faults:
 * dropped, delayed, duplicated and reordered deliveries (reordering also
 * carries old streams' bytes past reconnects), connections cut mid-frame,
 * store apply failures, a follower crashing between apply and ack, leader
 * restarts, pruning while followers are behind, pruning between the
 * leader's read of its bounds and of its rows, failover with the old
 * leader coming back stale, partitions long enough to time heartbeats out,
 * followers taken out of the registry and put back while running, bursts
 * of appends past the network's stream window.  And the write path
 * (sp_sim_writes.c): every device submits at random while all of that
 * runs, the leader's host refuses or replaces some proposals, a follower
 * crashes between its outbox write and the send, the leader between its
 * append and its answer, the leader's store fails appends, failovers
 * strike with submissions in flight.  And snapshot recoveries
 * (sp_sim_snap.c): about half the followers recover from SyncRequired by
 * snapshot (a sink into their mem store; every leader has a source over
 * its store), in small chunks and narrow windows, while all of that runs
 * and more: the sink's calls fail, the follower crashes inside them
 * (right after a write_chunk, right before or after the commit), the
 * source's calls fail or a read comes back flipped, chunks and manifests
 * arrive with a flipped byte, the host does its own full sync in the
 * middle of a recovery, and the leader's host prunes past lagging
 * followers often; a storm of flipped chunks in some seeds makes
 * recoveries use up their restarts and fail.  And leadership claims
 * (docs/protocol.md section 15): every node signs its leaderships with
 * its own key and the registry knows every key (sp_cluster.c), so every
 * stale leader steps down only for a real claim; and a follower forges
 * a higher epoch to its leader (forge()): a Heartbeat with no claim, a
 * claim of its own while the registry says it may not lead, one with a
 * flipped signature bit, one by a device no registry knows, one in
 * another member's name under its own signature.  And asynchronous
 * applies (sp_sim_async.c): about a third of the devices' stores queue
 * their applies (SP_STORE_PENDING) and make them durable at random
 * simulated times; some queued batches fail, a crash loses the queued
 * ones; every invariant reads what is durable (the summary's async:
 * line).
 *
 * The hosts keep the contract a host must keep for exactly-once
 * (docs/integration.md 11.8; with two devices, snapshots extend it:
 * sp_sim_snap.c, snap_step): a leader's host prunes past a lagging
 * follower (sometimes past every follower's acknowledgement, so that
 * SyncRequired is exercised) but never an entry no other device holds:
 * at most to the highest sequence some other device (up or down, one a
 * failover could promote) has applied (prune_cap); and a host never
 * elects a leader that lacks part of the history some log pruned: that
 * failover is withheld until a candidate has caught up (failover()).
 * Pruning further, or electing such a device, throws away the last copy
 * of entries, which no protocol can bring back.
 *
 * After every step it checks the invariants:
 *   - every follower's log is a byte-identical prefix of the history the
 *     current leader serves (the chain hash at its applied sequence equals
 *     the oracle's, which BLAKE2b makes equivalent), with no hole;
 *   - a follower whose log diverged (an old leader) applies nothing until
 *     its host's full sync; the one follower that may leave the history
 *     without a fault of the library is one a deposed leader's late page
 *     reached before it heard of the newer epoch (unaware_divergence):
 *     it is then marked diverged, as a failover marks the others;
 *   - whatever a follower acknowledged is durably applied by it;
 *   - epochs recorded with a log never go back;
 *   - a follower the leader was told left the library applies nothing
 *     past the history it had then;
 *   - the leader holds no more of a follower's requests than its window
 *     and never refuses it for queueing too many, unless a fault dropped,
 *     duplicated or tore what it sent (both sides count alike);
 *   - the write path's (sp_sim_writes.c): no log holds an origin id twice,
 *     every append carries what was submitted (or the host's replacement)
 *     once and never after a refusal, events agree with the logs;
 *   - a leader steps down only for an epoch the sim gave some device,
 *     and its event names that device (claim_event): no forgery deposes;
 *   - the snapshots' (sp_sim_snap.c): a follower with a sink is at every
 *     step either unchanged or on the history, never anything else (a
 *     half-installed state), nor goes back along the history (after a
 *     recovery that began on it); at
 *     SNAPSHOT_INSTALLED it stands exactly at S with the history's hash
 *     at S; progress never passes its totals; no recovery makes more
 *     than SP_SNAP_MAX_RESTARTS restarts, and no device starts more than
 *     3 recoveries without a new cause (the leader pruning past it, a
 *     crash, a failover, ...): else a loop.
 * Then faults stop and every follower must converge within a bound derived
 * from the seed's timers (liveness_bound), its outbox drained, and every
 * submission is in the final history exactly once or was refused (the
 * summary's writes: line: submitted = committed exactly once + refused +
 * lost + duplicated, over the seeds that reached the verdict; any lost or
 * duplicated one fails its seed).  The bound includes what recoveries
 * need (snap_liveness): a failure's backoff still ahead, restarts'
 * backoffs, and two transfers of the leader's log as a snapshot.  The
 * snapshots: line counts SNAPSHOT_INSTALLED events, the resumes of the
 * recoveries that ended, and the half-installed states and loops found
 * (any of which fails its seed).
 *
 *   sp_sim [--seeds N] [--first S]     run seeds S .. S+N-1 (default 10000)
 *   sp_sim --seed S [--verbose]        replay one seed
 *   sp_sim --soak                      run seeds until one fails
 *   sp_sim --seeds N --keep-going      run all, list every failing seed
 *   ... --reliable-streams             drops, duplicates and reorders
 *                                      within a stream become cuts
 *   ... --valid-forgeries              forge() sends some valid claims:
 *                                      the seeds they reach must fail
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sp_sim.h"

sim *g_sim;
/* --reliable-streams (diagnosis only: not what ./scripts/test runs). */
static int g_reliable;
/* --crash-at-stop: every seed's faults end with a crash pending. */
static int g_crash_at_stop;
/* --valid-forgeries (diagnosis only): form 1 of forge() signs with
 * may_lead left at 1, a valid claim, so claim_event must fail the seed:
 * the check that no forgery deposes is shown to bite. */
static int g_valid_forgeries;

/* What the faults and host actions added up to over all seeds. */
static struct totals {
  long appends, crashes, boots, leader_restarts, prunes, failovers,
      stale_returns, step_downs, full_syncs, partitions, apply_failures,
      crash_before_ack, drops, dups, reorders, delays, cuts, corruptions,
      sync_required, read_prunes, unaware, failovers_withheld;
  uint64_t unaware_seed;
  /* Forged epochs sent, by form (forge()); refusals seen; step-downs
   * proven by a claim the sim made, and any that were not. */
  long forged[5], forged_refused, proven, deposed;
  /* Proven step-downs whose claim a follower relayed (the others came
   * from the claim's leader itself). */
  long relayed;
  /* Forgeries sent as an Error frame. */
  long forged_errors;
} tot;

unsigned below(sim *s, unsigned n) {
  return (unsigned)sp_rand_below(&s->rng, n);
}

int chance(sim *s, unsigned per10000) {
  return below(s, 10000) < per10000;
}

void fail(sim *s, const char *fmt, ...) {
  va_list ap;
  int d;

  if (s->t.verbose) {
    for (d = 0; d < s->t.ndevs; ++d) {
      fprintf(stderr, "sim: dev%d mode %d diverged %d frozen %llu\n", d,
              (int)s->mode[d], s->diverged[d],
              (unsigned long long)s->frozen[d]);
    }
  }

  if (s->failure[0]) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
  va_end(ap);
}

int leader_of(sim *s) { return s->t.leader[LIB]; }


/* ---- hooks ---- */

int dev_of(sim *s, const sp_uuid *id) {
  int i;

  for (i = 0; i < s->t.ndevs; ++i) {
    if (sp_uuid_equal(&s->t.dev[i].id, id)) {
      return i;
    }
  }
  return -1;
}

/* Bit rot in the leader's storage: one payload byte of a page from the
 * current leader arrives inverted, with the leader's own chain hash.  Only
 * whole frames are touched, and only payload bytes, so what changes is
 * what the hash chain exists to catch. */
static int corrupt_payload(sim *s, const sp_mem_delivery *d,
                           sp_mem_verdict *v) {
  int from = dev_of(s, &d->from), to = dev_of(s, &d->to);
  size_t body;
  sp_msg msg;
  size_t i;

  if (from != leader_of(s) || to < 0 || d->len < SP_FRAME_HEADER_LEN) {
    return 0;
  }
  body = (size_t)d->data[0] << 24 | (size_t)d->data[1] << 16 |
         (size_t)d->data[2] << 8 | d->data[3];
  if (body + SP_FRAME_HEADER_LEN != d->len ||
      sp_decoder_decode(s->dec, d->data + SP_FRAME_HEADER_LEN, body, &msg) !=
          0 ||
      msg.type != SP_MSG_ENTRIES_RESPONSE) {
    return 0;
  }
  for (i = 0; i < msg.u.entries_response.entry_count; ++i) {
    const sp_entry *e = &msg.u.entries_response.entries[i];
    if (e->data_len > 0) {
      v->action = SP_MEM_CORRUPT;
      v->keep = (size_t)(e->data - d->data) + below(s, (unsigned)e->data_len);
      s->corrupted[to] = 1;
      snap_cause(s, to);
      return 1;
    }
  }
  return 0;
}

static int fault_hook(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  sim *s = g_sim;
  int i;

  (void)t;
  for (i = 0; i < s->t.ndevs; ++i) {
    if (s->crash_armed[i] && sp_uuid_equal(&d->from, &s->t.dev[i].id)) {
      v->action = SP_MEM_DROP; /* the ack never leaves: then it dies */
      s->tampered[i] = 1;
      return 0;
    }
  }
  if (!s->faults_on) {
    return 0;
  }
  if (snap_wire_fault(s, d, v)) {
    if (dev_of(s, &d->from) >= 0) {
      s->tampered[dev_of(s, &d->from)] = 1;
    }
    return 0;
  }
  if (s->p_corrupt && chance(s, s->p_corrupt) && corrupt_payload(s, d, v)) {
    tot.corruptions++;
    if (dev_of(s, &d->from) >= 0) {
      s->tampered[dev_of(s, &d->from)] = 1;
    }
    return 0;
  }
  if (chance(s, s->p_cut)) {
    v->action = SP_MEM_CUT;
    v->keep = d->len ? below(s, (unsigned)d->len) : 0;
    tot.cuts++;
  } else if (chance(s, s->p_drop)) {
    v->action = SP_MEM_DROP;
    tot.drops++;
  } else if (chance(s, s->p_dup)) {
    v->action = SP_MEM_DUPLICATE;
    tot.dups++;
  } else if (chance(s, s->p_reorder)) {
    v->action = SP_MEM_REORDER;
    v->delay = (sp_duration)below(s, 3000) * MS;
    tot.reorders++;
  } else if (chance(s, s->p_delay)) {
    v->delay = (sp_duration)below(s, 500) * MS;
    tot.delays++;
  }
  if (g_reliable && (v->action == SP_MEM_DROP ||
                     v->action == SP_MEM_DUPLICATE ||
                     v->action == SP_MEM_REORDER)) {
    /* --reliable-streams: a stream loses, repeats or reorders no byte (as
     * QUIC's); what would have is a cut connection instead, and counts
     * as one. */
    tot.drops -= v->action == SP_MEM_DROP;
    tot.dups -= v->action == SP_MEM_DUPLICATE;
    tot.reorders -= v->action == SP_MEM_REORDER;
    tot.cuts++;
    v->action = SP_MEM_CUT;
    v->keep = 0;
    v->delay = 0;
  }
  if (v->action != SP_MEM_DELIVER && dev_of(s, &d->from) >= 0) {
    s->tampered[dev_of(s, &d->from)] = 1;
  }
  return 0;
}

/* SyncRequired must have a cause: a log that really diverged or is ahead,
 * a corrupted page, or pruning past the follower.  Anything else would be
 * a resync loop waiting to happen. */
static void check_sync_required(sim *s, int dev, const sp_event *ev) {
  sp_store_state st = state_of(s, dev);
  int l = leader_of(s);
  sp_store vt;
  sp_log_bounds b;

  if (ev->sync_reason == SP_SYNC_BEHIND_RETENTION) {
    sp_mem_store_get_vtable(s->t.dev[l].store[LIB], &vt);
    if (vt.bounds(&b, vt.user_data) == 0 && st.applied >= b.pruned_through) {
      fail(s, "dev%d: SyncRequired(behind) at %llu, pruned only to %llu", dev,
           (unsigned long long)st.applied,
           (unsigned long long)b.pruned_through);
    }
    return;
  }
  if (matches_oracle(s, &st) && !s->corrupted[dev] && !s->diverged[dev]) {
    fail(s, "dev%d: spurious SyncRequired (reason %d) at %llu", dev,
         (int)ev->sync_reason, (unsigned long long)st.applied);
  }
}

/* Only a claim the sim really made deposes: the epoch was given (open_dev,
 * failover) to the device the event names, and no later than now. */
static void claim_event(sim *s, int dev, const sp_event *ev) {
  int who = dev_of(s, &ev->leader);

  if (ev->epoch <= s->epoch && ev->epoch < SIM_MAX_EPOCH && who >= 0 &&
      s->given[ev->epoch] == who && s->mode[dev] != M_LEADER) {
    tot.proven++;
    tot.relayed += ev->has_peer && !sp_uuid_equal(&ev->peer_id, &ev->leader);
    if (s->t.verbose) {
      fprintf(stderr, "sim: dev%d stepped down: epoch %llu proven by dev%d's "
              "claim\n", dev, (unsigned long long)ev->epoch, who);
    }
    return;
  }
  tot.deposed++;
  fail(s, "dev%d (mode %d) stepped down for epoch %llu by dev%d, but the "
       "sim gave it to dev%d (current epoch %llu): deposed by a forgery",
       dev, (int)s->mode[dev], (unsigned long long)ev->epoch, who,
       ev->epoch < SIM_MAX_EPOCH ? s->given[ev->epoch] : -1,
       (unsigned long long)s->epoch);
}

/* A leader's refusal of a forged epoch, on the stream it came in by. */
static void msg_hook(tc *t, int from, int to, uint64_t stream,
                     const sp_msg *m) {
  sim *s = g_sim;
  size_t i;

  (void)t;
  (void)from;
  if (m->type != SP_MSG_ERROR || m->u.error.code != SP_ERR_UNPROVEN_EPOCH) {
    return;
  }
  for (i = 0; i < s->nforgeries; ++i) {
    if (s->forgeries[i].stream == stream && s->forgeries[i].forger == to) {
      tot.forged_refused++;
      s->forgeries[i] = s->forgeries[--s->nforgeries];
      return;
    }
  }
}

/* What the host heard tiles the log: in a follower term, each
 * ENTRIES_APPLIED starts where the last one ended (nothing reported
 * twice, nothing skipped: a store that applies asynchronously reports
 * once durable, rev15a B2/B3), and once converged the last ends where
 * the store durably stands.  ev_at: where the next must start, known
 * from the term's start (or after a snapshot install, from its next
 * event on). */
static sp_seq ev_at[TC_MAX_DEVS];
static int ev_known[TC_MAX_DEVS];

static void ev_follow(sim *s, int d) {
  ev_known[d] = 1;
  ev_at[d] = state_of(s, d).applied;
}

static void ev_applied(sim *s, int d, const sp_event *ev) {
  if (s->mode[d] != M_FOLLOWER) {
    ev_known[d] = 0;
    return;
  }
  if (ev_known[d] && ev->from_sequence != ev_at[d]) {
    fail(s, "dev%d: ENTRIES_APPLIED (%llu, %llu] does not follow %llu", d,
         (unsigned long long)ev->from_sequence,
         (unsigned long long)ev->to_sequence,
         (unsigned long long)ev_at[d]);
  }
  ev_known[d] = 1;
  ev_at[d] = ev->to_sequence;
}

static void event_hook(tc *t, int dev, const sp_event *ev) {
  sim *s = g_sim;

  (void)t;
  if (ev->type == SP_EVENT_ENTRIES_APPLIED) {
    ev_applied(s, dev, ev);
  } else if (ev->type == SP_EVENT_SNAPSHOT_INSTALLED) {
    ev_known[dev] = 0;
  }
  writes_event(s, dev, ev);
  snap_event(s, dev, ev);
  if (ev->type == SP_EVENT_SYNC_REQUIRED_RECEIVED) {
    tot.sync_required++;
    if (s->mode[dev] != M_STALE) {
      check_sync_required(s, dev, ev);
    }
  }
  if (ev->type == SP_EVENT_STEPPED_DOWN) {
    claim_event(s, dev, ev);
    s->stepped[dev] = 1;
  }
  /* Window and queue agree: a follower that sent no more requests than
   * its window is never refused for queueing too many. */
  if (ev->type == SP_EVENT_ERROR &&
      ev->error_code == SP_ERR_TOO_MANY_REQUESTS && ev->has_peer) {
    int f = dev_of(s, &ev->peer_id);
    if (f >= 0 && !s->tampered[f]) {
      fail(s, "dev%d refused dev%d: %s (window %u)", dev, f,
           sp_err_name(ev->error_code), s->t.dev[f].cfg[LIB].fetch_window);
    }
  }
  if (ev->type == SP_EVENT_ENTRIES_APPLIED && s->mode[dev] == M_FOLLOWER &&
      s->faults_on && chance(s, 30)) {
    s->crash_armed[dev] = 1;
    s->crash_now[dev] = 1;
    tot.crash_before_ack++;
  }
}

/* ---- the oracle ---- */

static int store_hash(sp_mem_store *st, sp_seq seq, uint8_t out[SP_HASH_LEN]) {
  sp_entry e;

  if (seq == 0) {
    memset(out, 0, SP_HASH_LEN);
    return 0;
  }
  return sp_mem_store_get(st, seq, &e, out);
}

void oracle_record(sim *s, sp_seq from, sp_seq to) {
  sp_mem_store *st = s->t.dev[leader_of(s)].store[LIB];
  sp_seq q;

  for (q = from; q <= to; ++q) {
    if (q >= MAX_SEQ || store_hash(st, q, s->oracle[q]) != 0) {
      fail(s, "oracle: leader has no entry %llu", (unsigned long long)q);
      return;
    }
    s->hist_tag[q] = 0;
    s->hist_origin[q] = 0;
  }
  s->oracle_len = to;
}

sp_store_state state_of(sim *s, int dev) {
  sp_store vt;
  sp_store_state st;

  sp_mem_store_get_vtable(s->t.dev[dev].store[LIB], &vt);
  if (vt.state(&st, vt.user_data) != 0) {
    fail(s, "dev%d: store state failed", dev);
  }
  return st;
}

int matches_oracle(sim *s, const sp_store_state *st) {
  static const uint8_t zero[SP_HASH_LEN];

  if (st->applied > s->oracle_len) {
    return 0;
  }
  return memcmp(st->head_hash, st->applied ? s->oracle[st->applied] : zero,
                SP_HASH_LEN) == 0;
}

/* ---- host actions ---- */

static void open_dev(sim *s, int d) {
  int rv;

  if (d == leader_of(s)) {
    /* Set first: opening may append (its outbox goes into the log). */
    s->mode[d] = M_LEADER;
    ev_known[d] = 0;
    if (s->epoch < SIM_MAX_EPOCH) {
      s->given[s->epoch] = d;
    }
    rv = tc_open_as(&s->t, d, LIB, SP_ROLE_LEADER, s->epoch);
  } else {
    rv = tc_open_as(&s->t, d, LIB, SP_ROLE_FOLLOWER, 0);
    s->mode[d] = M_FOLLOWER;
    ev_follow(s, d);
  }
  async_opened(s, d);
  if (rv != 0) {
    fail(s, "dev%d: open failed: %s", d, sp_err_name(rv));
  }
}

void crash(sim *s, int d) {
  /* Nothing boots a device that goes down once the faults stopped: it
   * would be counted as a follower that never converged. */
  if (!s->faults_on) {
    fail(s, "dev%d crashes after the faults stopped", d);
  }
  if (s->mode[d] == M_STALE) {
    /* Its log may hold entries written while it was fenced. */
    s->diverged[d] = 1;
    s->frozen[d] = state_of(s, d).applied;
  }
  async_crashed(s, d);
  tc_crash(&s->t, d);
  snap_crashed(s, d);
  tot.crashes++;
  s->mode[d] = M_DOWN;
  ev_known[d] = 0;
  s->crash_armed[d] = 0;
  s->crash_now[d] = 0;
  s->stepped[d] = 0;
}

static void boot(sim *s, int d) {
  sp_store_state st;

  if (tc_boot(&s->t, d) != 0) {
    fail(s, "dev%d: boot failed", d);
    return;
  }
  tot.boots++;
  open_dev(s, d);
  /* An old leader back as a follower may hold entries the history lost. */
  st = state_of(s, d);
  if (s->mode[d] == M_FOLLOWER && !matches_oracle(s, &st)) {
    s->diverged[d] = 1;
    s->frozen[d] = st.applied;
  }
}

static void append(sim *s, int n) {
  int l = leader_of(s);
  sp_mem_store *st = s->t.dev[l].store[LIB];
  sp_seq first = s->oracle_len + 1, last = 0;
  uint8_t buf[256];
  int i;

  if (s->mode[l] != M_LEADER || s->oracle_len + (sp_seq)n >= MAX_SEQ) {
    return;
  }
  for (i = 0; i < n; ++i) {
    sp_entry e;
    size_t len = below(s, sizeof(buf) + 1), k;
    memset(&e, 0, sizeof(e));
    for (k = 0; k < len; ++k) {
      buf[k] = (uint8_t)sp_rand_next(&s->rng);
    }
    e.device_id = s->t.dev[l].id;
    e.timestamp_ms = s->t.now / MS;
    e.model_type = "tag";
    e.model_type_len = 3;
    e.record_id.bytes[0] = (uint8_t)i;
    e.change_type = (sp_change_type)below(s, 4);
    e.version = (int64_t)below(s, 100) - 50;
    e.data = buf;
    e.data_len = len;
    if (sp_mem_store_append(st, &e, &last) != 0) {
      fail(s, "append failed");
      return;
    }
  }
  oracle_record(s, first, last);
  tot.appends += n;
  tc_notify(&s->t, LIB);
}

/* A stale leader's host goes on writing: entries no one may apply. */
static void append_stale(sim *s, int d) {
  uint8_t b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  sp_entry e;

  memset(&e, 0, sizeof(e));
  e.data = b;
  e.data_len = sizeof(b);
  e.version = 666;
  if (sp_mem_store_append(s->t.dev[d].store[LIB], &e, NULL) == 0 &&
      s->t.dev[d].h[LIB]) {
    sp_handler_notify_new_entries(s->t.dev[d].h[LIB], 1, 1, s->t.now);
  }
}

/*
 * The host contract the sim's hosts keep: a leader's host never prunes an
 * entry no other device holds.  It prunes at most to the highest sequence
 * some other device (up or down, but not diverged nor a stale leader: one
 * a failover could promote) has applied of the history.  Pruning past a
 * lagging follower still happens (SyncRequired, behind retention), but a
 * failover, which promotes the most advanced of those devices, then
 * never cuts the history below what the old leader still retains: its
 * tail, own submissions included, comes back through the put-back rule
 * of its full sync.  Pruning further would throw away the only copy of
 * entries, which no protocol can bring back.
 */
void note_prune(sim *s, sp_seq to) {
  snap_pruned(s, to);
  to = to < s->oracle_len ? to : s->oracle_len;
  s->pruned_hist = to > s->pruned_hist ? to : s->pruned_hist;
}

sp_seq prune_cap(sim *s) {
  int l = leader_of(s), d;
  sp_seq cap = 0;

  for (d = 0; d < s->t.ndevs; ++d) {
    sp_store_state st;
    if (d == l || s->diverged[d] || s->mode[d] == M_STALE) {
      continue;
    }
    st = state_of(s, d);
    if (matches_oracle(s, &st) && st.applied > cap) {
      cap = st.applied;
    }
  }
  return cap;
}

static void prune(sim *s) {
  int l = leader_of(s);
  sp_seq floor = 0, to, cap;

  if (s->mode[l] != M_LEADER || !s->t.dev[l].h[LIB] ||
      sp_handler_retention_floor(s->t.dev[l].h[LIB], &floor) != 0) {
    return;
  }
  /* Mostly what the followers allow; sometimes past a lagging one. */
  to = chance(s, 3000) && s->oracle_len > 0
           ? s->oracle_len - below(s, (unsigned)(s->oracle_len / 4 + 1))
           : floor;
  cap = prune_cap(s);
  to = to < cap ? to : cap;
  if (to > 0 && sp_mem_store_prune(s->t.dev[l].store[LIB], to) == 0) {
    note_prune(s, to);
    tot.prunes++;
  }
}

/* The prune lands after the leader read its bounds and before the rows:
 * the store's `read` prunes first, part or all of the range it was asked
 * for.  The follower must hear it is behind retention, never that its log
 * diverged (check_sync_required). */
static int (*g_inner_read)(sp_seq, sp_seq, size_t, sp_entry_sink, void *,
                           void *);

static int racing_read(sp_seq after, sp_seq through, size_t max_count,
                       sp_entry_sink sink, void *sink_ctx, void *user_data) {
  sim *s = g_sim;
  int l = leader_of(s);
  sp_mem_store *ms = s->t.dev[l].store[LIB];

  /* Only where the host contract (prune_cap) lets it prune into the
   * range: some other device holds more than the reader. */
  if (user_data == ms && s->faults_on && s->mode[l] == M_LEADER &&
      through > after && s->p_read_prune && prune_cap(s) > after &&
      chance(s, s->p_read_prune)) {
    sp_seq to = after + 1 + below(s, (unsigned)(through - after < 1000
                                                    ? through - after
                                                    : 1000));
    sp_seq cap = prune_cap(s);
    to = to < cap ? to : cap;
    if (sp_mem_store_prune(ms, to) == 0) {
      note_prune(s, to);
      tot.read_prunes++;
      if (s->t.verbose) {
        fprintf(stderr, "sim: prune through %llu inside a read of (%llu, "
                "%llu]\n", (unsigned long long)to, (unsigned long long)after,
                (unsigned long long)through);
      }
    }
  }
  return g_inner_read(after, through, max_count, sink, sink_ctx, user_data);
}

static void store_hook(tc *t, int dev, int lib, sp_store *st) {
  (void)t;
  (void)dev;
  (void)lib;
  g_inner_read = st->read;
  st->read = racing_read;
  writes_store_hook(st);
  snap_store_hook(st);
}

static void registry_put_back(sim *s, int d);

/* The epoch just begun cut the history at `len`. */
static void note_cut(sim *s, sp_seq len) {
  if (s->epoch < SIM_MAX_EPOCH) {
    s->epoch_cut[s->epoch] = len;
  }
}

/*
 * A deposed leader's page still in flight (delayed, reordered) reaches a
 * follower that has not yet heard of the newer epoch, after the failover
 * promoted a less advanced follower: the page links to the follower's
 * head and carries the epoch the follower knows, so it applies it.  It
 * cannot know better; its log has diverged, as the failover's own
 * bookkeeping marks the others (failover()).  Exactly that is excused:
 *   - the log's recorded epoch is older than the current one (every
 *     apply was under an older leader: the current one's messages carry
 *     its epoch, which the follower records before applying them);
 *   - the log is no longer a prefix of the history;
 *   - up to the lowest cut of the failovers it has not heard of, it
 *     still holds the history (it left it above the cut only: what a
 *     deposed leader had and the history lost);
 * the device is neither the leader nor a stale leader.  Anything else
 * that leaves the history stays a violation (check()).
 */
int unaware_divergence(sim *s, int d, const sp_store_state *st) {
  sp_seq cut = UINT64_MAX;
  uint64_t e;
  uint8_t h[SP_HASH_LEN];
  sp_entry ent;
  sp_store vt;
  sp_log_bounds b;

  if (d == leader_of(s) || s->mode[d] == M_STALE || st->epoch >= s->epoch ||
      matches_oracle(s, st)) {
    return 0;
  }
  for (e = st->epoch + 1; e <= s->epoch; ++e) {
    sp_seq c = e < SIM_MAX_EPOCH ? s->epoch_cut[e] : 0;
    cut = c < cut ? c : cut;
  }
  if (cut == UINT64_MAX || st->applied <= cut) {
    return 0;
  }
  if (cut == 0) {
    return 1;
  }
  if (sp_mem_store_get(s->t.dev[d].store[LIB], cut, &ent, h) == 0) {
    return memcmp(h, s->oracle[cut], SP_HASH_LEN) == 0;
  }
  /* The cut lies below what its log retains (a full sync from a pruned
   * log): the chain at its head linked the page, nothing more to see. */
  sp_mem_store_get_vtable(s->t.dev[d].store[LIB], &vt);
  return vt.bounds(&b, vt.user_data) == 0 && cut <= b.pruned_through;
}

static void failover(sim *s) {
  int old = leader_of(s), best = -1, d;
  sp_seq best_applied = 0;
  sp_store_state st;
  int rv;

  /* The host elects from what the logs hold: it lets each store finish
   * what it queued first (sys/store.h), as it would before promoting. */
  for (d = 0; d < s->t.ndevs; ++d) {
    async_settle(s, d);
  }
  for (d = 0; d < s->t.ndevs; ++d) {
    if (d == old || s->diverged[d] || s->mode[d] == M_STALE) {
      continue;
    }
    st = state_of(s, d);
    if (best < 0 || st.applied > best_applied) {
      best = d;
      best_applied = st.applied;
    }
  }
  if (best < 0) {
    return;
  }
  /* The other half of the host contract (prune_cap): a host never
   * elects a device that lacks part of the history some log pruned.
   * The device that held it when it was pruned may since have been
   * deposed (its log then no candidate), and a submitter whose own copy
   * was pruned relies on the history for it; a failover below that
   * point would throw away the last copies.  The host waits until a
   * candidate has caught up. */
  if (best_applied < s->pruned_hist) {
    tot.failovers_withheld++;
    if (s->t.verbose) {
      fprintf(stderr, "sim: no failover: the best candidate dev%d holds "
              "%llu, the history was pruned to %llu\n", best,
              (unsigned long long)best_applied,
              (unsigned long long)s->pruned_hist);
    }
    return;
  }
  /* A host elects a member of the library, one it lets lead. */
  registry_put_back(s, best);
  s->t.dev[best].may_lead[LIB] = 1;
  if (s->t.verbose) {
    fprintf(stderr, "sim: failover dev%d -> dev%d (applied %llu, history %llu)\n",
            old, best, (unsigned long long)best_applied,
            (unsigned long long)s->oracle_len);
  }
  tot.failovers++;
  snap_cause(s, -1);
  crash(s, old);
  s->lead_epoch[old] = s->epoch; /* it will come back with this one */
  st = state_of(s, best);
  if (!matches_oracle(s, &st)) {
    fail(s, "new leader dev%d does not hold the history", best);
    return;
  }
  /* The history is now what the new leader holds.  Whatever the old
   * leader had not replicated is lost: its log has diverged (its own
   * submissions there come back through the put-back rule).  Cut before
   * the promotion: a new leader appends its outbox at once. */
  writes_failover(s, st.applied, best);
  s->oracle_len = st.applied;
  if (s->mode[best] == M_DOWN) {
    if (tc_boot(&s->t, best) != 0) {
      fail(s, "boot failed");
      return;
    }
    s->t.leader[LIB] = best;
    s->epoch++;
    note_cut(s, st.applied);
    open_dev(s, best);
  } else {
    s->t.leader[LIB] = best;
    s->epoch++;
    note_cut(s, st.applied);
    s->mode[best] = M_LEADER;
    if (s->epoch < SIM_MAX_EPOCH) {
      s->given[s->epoch] = best;
    }
    rv = sp_handler_set_role(s->t.dev[best].h[LIB], SP_ROLE_LEADER, s->epoch,
                             s->t.now);
    if (rv != 0) {
      fail(s, "set_role failed: %s", sp_err_name(rv));
      return;
    }
  }
  for (d = 0; d < s->t.ndevs; ++d) {
    st = state_of(s, d);
    if (d != best && !s->diverged[d] && !matches_oracle(s, &st)) {
      s->diverged[d] = 1;
      s->frozen[d] = st.applied;
    }
  }
}

/* The old leader returns believing it still leads. */
static void return_stale(sim *s, int d) {
  if (tc_boot(&s->t, d) != 0) {
    fail(s, "boot failed");
    return;
  }
  if (tc_open_as(&s->t, d, LIB, SP_ROLE_LEADER, s->lead_epoch[d]) != 0) {
    fail(s, "stale open failed");
    return;
  }
  tot.stale_returns++;
  s->mode[d] = M_STALE;
}

/*
 * A member forges a higher epoch to its leader: a follower writes, into
 * its stream to the current leader and between two of its own frames, a
 * Heartbeat at the leader's epoch + k (or, one in four, an Error
 * SP_ERR_STALE_EPOCH, as a newer leader's refusal reads) with
 *   0: no claim (half of the Heartbeats with the features elements),
 *   1: a claim it signed itself while the registry says it may not lead,
 *   2: a claim it signed itself with one signature bit flipped,
 *   3: a claim by a device no registry knows (its own key, its own id),
 *   4: a claim in another member's name (one that may lead), under its
 *      own signature.
 * The leader must refuse it (SP_ERR_UNPROVEN_EPOCH, counted when it shows
 * on that stream; an Error it closes the stream on) and never step down
 * for it (claim_event).  The same
 * claim without the fault (form 2) or with may_lead 1 (form 1) would be
 * valid: a member allowed to lead may take over, which is what failover
 * does.
 */
static void forge(sim *s) {
  int l = leader_of(s), cand[TC_MAX_DEVS], n = 0, f, d, form, rv;
  sp_session *x;
  sp_msg m;
  sp_leader_claim claim, *c = &claim;
  uint64_t k;
  int error;

  if (s->mode[l] != M_LEADER) {
    return;
  }
  for (d = 0; d < s->t.ndevs; ++d) {
    sp_handler *h = s->t.dev[d].h[LIB];
    x = h ? h->leader : NULL;
    /* Between two whole frames of an established stream: nothing of the
     * node's is pending, its opening frames went out. */
    if (d != l && s->mode[d] == M_FOLLOWER && x && !x->dead && !x->blocked &&
        !x->close_after && !x->refused && x->heard && !x->hello_pending &&
        !x->features_pending && sp_buf_pending(&x->out) == 0 &&
        sp_uuid_equal(&x->peer, &s->t.dev[l].id)) {
      cand[n++] = d;
    }
  }
  if (n == 0) {
    return;
  }
  f = cand[below(s, (unsigned)n)];
  x = s->t.dev[f].h[LIB]->leader;
  form = (int)below(s, 5);
  k = chance(s, 1000) ? (uint64_t)1 << (32 + below(s, 31))
                      : 1 + below(s, 3);
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = s->t.lib[LIB];
  m.epoch = s->epoch + k;
  m.u.heartbeat.current_sequence = state_of(s, f).applied;
  m.u.heartbeat.role = chance(s, 5000) ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = form != 0 || chance(s, 5000);
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  error = chance(s, 2500);
  if (form == 3) {
    rv = sp_leader_claim_sign(c, s->stranger, &m.library_id, m.epoch);
  } else {
    rv = sp_leader_claim_sign(c, s->t.dev[f].identity, &m.library_id,
                              m.epoch);
  }
  if (rv != 0) {
    fail(s, "signing a claim: %s", sp_err_name(rv));
    return;
  }
  if (form == 1) {
    s->t.dev[f].may_lead[LIB] = g_valid_forgeries;
  } else if (form == 2) {
    c->signature[below(s, SP_CLAIM_SIG_LEN)] ^= (uint8_t)(1u << below(s, 8));
  } else if (form == 4) {
    d = (int)below(s, (unsigned)s->t.ndevs);
    d = d == f ? l : d;
    s->t.dev[d].may_lead[LIB] = 1;
    c->leader = s->t.dev[d].id;
  }
  if (error) {
    static const char why[] = "this leader is fenced";
    memset(&m.u, 0, sizeof(m.u));
    m.type = SP_MSG_ERROR;
    m.u.error.code = SP_ERR_STALE_EPOCH;
    m.u.error.message = why;
    m.u.error.message_len = sizeof(why) - 1;
    m.u.error.has_claim = form != 0;
    m.u.error.claim = *c;
  } else {
    m.u.heartbeat.has_claim = form != 0;
    m.u.heartbeat.claim = *c;
  }
  if (s->t.verbose) {
    fprintf(stderr, "sim: dev%d forges epoch %llu to dev%d (form %d%s)\n",
            f, (unsigned long long)m.epoch, l, form,
            error ? ", an Error" : "");
  }
  rv = tc_inject(&s->t, f, x->stream_id, &m);
  if (rv < 0) {
    return;
  }
  if (rv > 0) {
    s->tampered[f] = 1; /* torn: the rest of the frame never left */
  }
  tot.forged[form]++;
  if (error) {
    tot.forged_errors++;
    return; /* closed, not answered: no Error answers an Error */
  }
  if (s->nforgeries == sizeof(s->forgeries) / sizeof(s->forgeries[0])) {
    memmove(&s->forgeries[0], &s->forgeries[1],
            (s->nforgeries - 1) * sizeof(s->forgeries[0]));
    s->nforgeries--;
  }
  s->forgeries[s->nforgeries].stream = x->stream_id;
  s->forgeries[s->nforgeries].forger = f;
  s->nforgeries++;
}

/* What a host does on events: follow after stepping down, full sync when
 * told to. */
static void host_reactions(sim *s) {
  int d, l = leader_of(s);

  for (d = 0; d < s->t.ndevs; ++d) {
    sp_handler *h = s->t.dev[d].h[LIB];
    sp_handler_status hs;

    if (!h) {
      continue;
    }
    if (s->crash_now[d]) {
      crash(s, d);
      continue;
    }
    if (s->stepped[d]) {
      s->stepped[d] = 0;
      tot.step_downs++;
      if (sp_handler_set_role(h, SP_ROLE_FOLLOWER, 0, s->t.now) != 0) {
        fail(s, "dev%d: set_role follower failed", d);
      }
      s->mode[d] = M_FOLLOWER;
      ev_follow(s, d);
      s->diverged[d] = 1;
      s->frozen[d] = state_of(s, d).applied;
      snap_cause(s, d);
      continue;
    }
    if (s->mode[d] == M_FOLLOWER && sp_handler_get_status(h, &hs) == 0 &&
        hs.sync_required && !s->removed[d] && !snap_host_waits(s, d) &&
        chance(s, 5000)) {
      /* The full sync: a snapshot of the leader's log.  The epoch this
       * log already saw is kept: fencing must survive a full sync. */
      sp_store vt;
      sp_store_state before = state_of(s, d);
      sp_mem_store_get_vtable(s->t.dev[d].store[LIB], &vt);
      /* Injected failures target the protocol's batches, not this. */
      sp_mem_store_fail_applies(s->t.dev[d].store[LIB], 0);
      /* The store finishes what it queued before its log is replaced. */
      async_settle(s, d);
      int r1 = sp_mem_store_copy_from(s->t.dev[d].store[LIB],
                                      s->t.dev[l].store[LIB]);
      int r2 = r1 ? 0 : vt.apply(NULL, NULL, 0, before.epoch, vt.user_data);
      int r3 = r1 || r2 ? 0 : sp_handler_resync_done(h, s->t.now);
      if (r1 || r2 || r3) {
        fail(s, "dev%d: full sync failed: %s %s %s", d, sp_err_name(r1),
             sp_err_name(r2), sp_err_name(r3));
      }
      ev_follow(s, d);
      s->diverged[d] = 0;
      s->unaware[d] = 0;
      s->corrupted[d] = 0;
      tot.full_syncs++;
      writes_full_sync(s, d);
      snap_full_sync(s, d);
    }
  }
}

/* ---- registry changes ---- */

static long tot_removals, tot_readditions;

/* The host takes a follower out of the library, or puts it back, while
 * everything runs.  Half the time it tells the leader at once
 * (sp_handler_registry_changed); otherwise the leader's scheduled re-read
 * of the registry finds out. */
static void registry_change(sim *s, int d) {
  int l = leader_of(s), told;
  sp_handler *lh = s->t.dev[l].h[LIB];

  if (d == l || s->mode[d] == M_STALE) {
    return;
  }
  s->removed[d] = !s->removed[d];
  s->t.dev[d].member[LIB] = !s->removed[d];
  snap_cause(s, d);
  if (s->removed[d]) {
    tot_removals++;
  } else {
    tot_readditions++;
  }
  told = lh && s->mode[l] == M_LEADER && chance(s, 5000);
  if (s->t.verbose) {
    fprintf(stderr, "sim: dev%d %s the registry%s\n", d,
            s->removed[d] ? "taken out of" : "put back in",
            told ? ", leader told" : "");
  }
  if (told) {
    int rv = sp_handler_registry_changed(lh, s->t.now);
    if (rv != 0) {
      fail(s, "registry_changed: %s", sp_err_name(rv));
    }
  }
  s->removed_cap[d] = UINT64_MAX;
  if (s->removed[d] && told) {
    /* An old leader's log may already hold more than the history. */
    sp_seq applied = state_of(s, d).applied;
    s->removed_cap[d] = applied > s->oracle_len ? applied : s->oracle_len;
  }
}

static void registry_put_back(sim *s, int d) {
  if (s->removed[d]) {
    s->removed[d] = 0;
    s->t.dev[d].member[LIB] = 1;
    tot_readditions++;
  }
}

/* Faults stop: every device is a member again, and the leader is told. */
static void registry_restore(sim *s) {
  int d, l = leader_of(s);

  for (d = 0; d < s->t.ndevs; ++d) {
    registry_put_back(s, d);
  }
  if (s->t.dev[l].h[LIB] && s->mode[l] == M_LEADER &&
      sp_handler_registry_changed(s->t.dev[l].h[LIB], s->t.now) != 0) {
    fail(s, "registry_changed failed");
  }
}

/* A device the leader was told is no longer a member gets nothing more
 * from it: it never applies past what the history (or its own log) held
 * then. */
static void check_registry(sim *s) {
  int d;

  for (d = 0; d < s->t.ndevs; ++d) {
    sp_seq applied;
    if (!s->removed[d] || s->removed_cap[d] == UINT64_MAX ||
        s->mode[d] == M_DOWN) {
      continue;
    }
    applied = state_of(s, d).applied;
    if (applied > s->removed_cap[d]) {
      fail(s, "dev%d: removed from the library at %llu, applied %llu", d,
           (unsigned long long)s->removed_cap[d],
           (unsigned long long)applied);
    }
  }
}

/* ---- invariants ---- */

/* The leader holds no more of a follower's requests than the follower's
 * window (its own push or resend at the head is none of them). */
static void check_fetch_queues(sim *s, int l) {
  const sp_session *x;

  for (x = s->t.dev[l].h[LIB]->sessions; x; x = x->hnext) {
    int f = dev_of(s, &x->peer);
    uint32_t queued;
    if (x->dead || !x->u.l.queue || f < 0 || s->tampered[f]) {
      continue;
    }
    queued = x->u.l.qlen - (x->u.l.head_own ? 1u : 0u);
    if (queued > s->t.dev[f].cfg[LIB].fetch_window) {
      fail(s, "dev%d holds %u requests of dev%d (window %u)", l,
           (unsigned)queued, f, s->t.dev[f].cfg[LIB].fetch_window);
    }
  }
}

static void check(sim *s) {
  int d, l = leader_of(s);
  sp_follower_progress p[TC_MAX_DEVS];
  sp_ssize n, i;

  check_snapshots(s);
  check_registry(s);
  for (d = 0; d < s->t.ndevs; ++d) {
    sp_store_state st;
    if (s->mode[d] == M_STALE || d == l) {
      continue;
    }
    st = state_of(s, d);
    if (st.epoch < s->last_epoch[d] && !s->diverged[d]) {
      fail(s, "dev%d: epoch went back %llu -> %llu", d,
           (unsigned long long)s->last_epoch[d], (unsigned long long)st.epoch);
    }
    if (st.epoch > s->last_epoch[d]) {
      s->last_epoch[d] = st.epoch;
    }
    if (!s->diverged[d] && unaware_divergence(s, d, &st)) {
      if (s->t.verbose) {
        fprintf(stderr, "sim: dev%d diverged: a deposed leader's page took "
                "it to %llu at epoch %llu (history %llu, epoch %llu)\n", d,
                (unsigned long long)st.applied, (unsigned long long)st.epoch,
                (unsigned long long)s->oracle_len,
                (unsigned long long)s->epoch);
      }
      if (!tot.unaware++) {
        tot.unaware_seed = s->seed;
      }
      s->diverged[d] = 1;
      s->unaware[d] = 1;
      s->frozen[d] = st.applied;
    }
    if (s->diverged[d]) {
      if (matches_oracle(s, &st)) {
        s->diverged[d] = 0; /* it only held a prefix after all */
        s->unaware[d] = 0;
      } else if (st.applied > s->frozen[d] && s->unaware[d] &&
                 unaware_divergence(s, d, &st)) {
        s->frozen[d] = st.applied; /* more of that leader's late pages */
      } else if (st.applied != s->frozen[d]) {
        fail(s, "dev%d applied on top of a diverged log (%llu -> %llu)", d,
             (unsigned long long)s->frozen[d],
             (unsigned long long)st.applied);
      }
      continue;
    }
    if (!matches_oracle(s, &st)) {
      fail(s, "dev%d: log at %llu is not a prefix of the history (len %llu)",
           d, (unsigned long long)st.applied,
           (unsigned long long)s->oracle_len);
    }
    {
      sp_store vt;
      sp_log_bounds b;
      sp_mem_store_get_vtable(s->t.dev[d].store[LIB], &vt);
      if (vt.bounds(&b, vt.user_data) != 0 ||
          sp_mem_store_count(s->t.dev[d].store[LIB]) !=
              st.applied - b.pruned_through) {
        fail(s, "dev%d: hole in the log below %llu", d,
             (unsigned long long)st.applied);
      }
    }
  }
  if (s->mode[l] == M_LEADER && s->t.dev[l].h[LIB] &&
      sp_handler_role(s->t.dev[l].h[LIB]) == SP_ROLE_LEADER) {
    n = sp_handler_list_followers(s->t.dev[l].h[LIB], p, TC_MAX_DEVS,
                                  s->t.now);
    for (i = 0; i < n && i < TC_MAX_DEVS; ++i) {
      int f;
      for (f = 0; f < s->t.ndevs; ++f) {
        if (sp_uuid_equal(&s->t.dev[f].id, &p[i].device_id) && p[i].has_acked &&
            !s->diverged[f] && state_of(s, f).applied < p[i].acked_sequence) {
          atot.lost += s->t.dev[f].async[LIB];
          fail(s, "dev%d acknowledged %llu but applied %llu", f,
               (unsigned long long)p[i].acked_sequence,
               (unsigned long long)state_of(s, f).applied);
        }
      }
    }
  }
  if (s->mode[l] == M_LEADER && s->t.dev[l].h[LIB] &&
      sp_handler_role(s->t.dev[l].h[LIB]) == SP_ROLE_LEADER) {
    check_fetch_queues(s, l);
  }
  check_writes(s);
  if (s->t.fatal) {
    fail(s, "fatal error %s", sp_err_name(s->t.fatal));
  }
}

/* ---- one seed ---- */

static void configure(sim *s) {
  int d;
  sp_duration hb = (1 + below(s, 5)) * SP_SECONDS;

  for (d = 0; d < s->t.ndevs; ++d) {
    sp_handler_config *c = &s->t.dev[d].cfg[LIB];
    c->heartbeat_interval = hb;
    c->stall_timeout = (2 + below(s, 9)) * SP_SECONDS;
    c->reconnect_min = (10 + below(s, 190)) * MS;
    c->reconnect_max = (1 + below(s, 5)) * SP_SECONDS;
    c->fetch_limit = 1 + below(s, 200);
    c->fetch_window = 1 + below(s, 6);
    c->response_max_bytes = 256 + below(s, 65536);
    c->max_queued_fetches = 8 + below(s, 24);
  }
  configure_writes(s);
  configure_snapshots(s);
  configure_async(s);
  s->p_drop = chance(s, 5000) ? below(s, 200) : 0;
  s->p_dup = chance(s, 5000) ? below(s, 300) : 0;
  s->p_reorder = chance(s, 3000) ? below(s, 100) : 0;
  s->p_delay = chance(s, 5000) ? below(s, 1000) : 0;
  s->p_cut = chance(s, 3000) ? below(s, 100) : 0;
  s->p_corrupt = chance(s, 2000) ? below(s, 100) : 0;
  s->p_read_prune = chance(s, 3000) ? 1 + below(s, 100) : 0;
}

static void random_step(sim *s) {
  unsigned r = below(s, 1000);
  int n = s->t.ndevs, l = leader_of(s);
  int d = (int)below(s, (unsigned)n);

  if (r < 450) {
    append(s, 1 + (int)below(s, 20));
  } else if (r < 500) {
    if (d != l && s->mode[d] != M_DOWN) {
      crash(s, d);
    }
  } else if (r < 600) {
    if (s->mode[d] == M_DOWN) {
      boot(s, d);
    }
  } else if (r < 620) {
    /* The leader restarts: its host reopens it with the epoch it keeps
     * with the log. */
    if (s->mode[l] == M_LEADER) {
      crash(s, l);
      tot.leader_restarts++;
    }
    if (s->mode[l] == M_DOWN) {
      boot(s, l);
    }
  } else if (r < 650) {
    prune(s);
  } else if (r < 665) {
    if (n > 2 && s->mode[l] == M_LEADER) {
      int old = l;
      failover(s);
      /* Half the time the old leader returns at once, believing it still
       * leads: it must be fenced. */
      if (!s->failure[0] && chance(s, 5000) && leader_of(s) != old) {
        return_stale(s, old);
        if (chance(s, 5000)) {
          append_stale(s, old);
        }
      }
    }
  } else if (r < 700) {
    int k;
    sp_duration len = (sp_duration)below(s, 20000) * MS;
    for (k = 0; k < n; ++k) {
      if (chance(s, 5000)) {
        tot.partitions++;
        sp_mem_net_set_partitioned(s->t.net, &s->t.dev[k].id, 1);
        s->heal_at[k] = s->t.now + len;
      }
    }
  } else if (r < 730) {
    if (d != l) {
      sp_mem_store_fail_applies(s->t.dev[d].store[LIB], 1 + below(s, 3));
      tot.apply_failures++;
    }
  } else if (r < 740) {
    int k;
    for (k = 0; k < n; ++k) {
      if (s->mode[k] == M_STALE && chance(s, 5000)) {
        append_stale(s, k);
      }
    }
  } else if (r < 760) {
    registry_change(s, d);
  } else if (r < 762) {
    /* A burst past the network's stream window: pushing it outlasts a
     * trip, so requests and pushed pages cross. */
    append(s, 2000 + (int)below(s, 1000));
  } else if (r < 782) {
    forge(s);
  }
}

static void heal_due(sim *s, int all) {
  int k;

  for (k = 0; k < s->t.ndevs; ++k) {
    if (s->heal_at[k] && (all || s->heal_at[k] <= s->t.now)) {
      sp_mem_net_set_partitioned(s->t.net, &s->t.dev[k].id, 0);
      s->heal_at[k] = 0;
    }
  }
}

static int converged(sim *s) {
  int d, l = leader_of(s);
  sp_outbox_stats os;

  if (s->mode[l] != M_LEADER) {
    return 0;
  }
  for (d = 0; d < s->t.ndevs; ++d) {
    sp_store_state st;
    if (d == l) {
      continue;
    }
    if (s->mode[d] != M_FOLLOWER || s->diverged[d]) {
      return 0;
    }
    st = state_of(s, d);
    if (st.applied != s->oracle_len || !matches_oracle(s, &st)) {
      return 0;
    }
    /* Every submission of a follower committed or refused. */
    if (outbox_items(s, d, &os) != 0 || os.items != 0) {
      return 0;
    }
  }
  return 1;
}

/* Who has not converged, for the message. */
static void lagging(sim *s, char *out, size_t len) {
  int d, n = 0;

  out[0] = '\0';
  for (d = 0; d < s->t.ndevs && n >= 0 && (size_t)n < len; ++d) {
    sp_outbox_stats os;
    memset(&os, 0, sizeof(os));
    (void)outbox_items(s, d, &os);
    n += snprintf(out + n, len - (size_t)n,
                  " dev%d mode %d applied %llu outbox %llu;", d,
                  (int)s->mode[d],
                  (unsigned long long)state_of(s, d).applied,
                  (unsigned long long)os.items);
  }
}

/* The slowest convergence seen, against its seed's bound. */
static struct {
  sp_duration took, bound;
  uint64_t seed;
  double ratio;
} slowest;

/*
 * How long after the faults stop every follower may take to catch up,
 * from this seed's timers (docs/testing.md, "Liveness bound").  Once
 * the network is clean a follower, at worst:
 *   1. notices that its stream died in the partition: its heartbeat
 *      timeout (interval x factor) or its stall timeout, whichever is
 *      longer, counted from the heal, since nothing older was heard;
 *   2. waits out its reconnect backoff (at most reconnect_max), twice:
 *      the first dial may still meet a leader that has not yet timed the
 *      dead stream out, a full sync's restart, or deliveries delayed
 *      before the heal (up to 3 s);
 *   3. fetches the whole log in the worst case, `fetch_window` pages of
 *      at least one entry per round trip (2 x latency, + 1 ms);
 *   4. drains its outbox: the submissions neither in the history nor
 *      refused when the faults stopped go out `propose_window` (or what
 *      propose_max_bytes lets through, at least one) per round trip, and
 *      come back as entries to fetch like the rest.
 * Each device draws its own timers and window: the slowest one's count
 * (until issue 12 the bound read device 0's only, which a follower with a
 * smaller window could outlast).  The summary prints the seed that came
 * closest to its bound.  Anything slower is a liveness bug: a timer
 * that never fires, a retry that stops, a dead connection kept.
 */
static sp_duration liveness_bound(sim *s) {
  const sp_handler_config *c = &s->t.dev[0].cfg[LIB];
  sp_duration detect = 0, backoff = 0, rtt = 2 * s->t.net_cfg.latency + MS;
  sp_duration pending = (sp_duration)writes_pending(s), trips, round, per;
  uint32_t window = UINT32_MAX;
  int d;

  /* Each device drew its own timers and window: the slowest follower
   * sets the bound. */
  for (d = 0; d < s->t.ndevs; ++d) {
    const sp_handler_config *x = &s->t.dev[d].cfg[LIB];
    sp_duration hb = x->heartbeat_interval * x->heartbeat_timeout_factor;
    sp_duration det = hb > x->stall_timeout ? hb : x->stall_timeout;
    detect = det > detect ? det : detect;
    backoff = x->reconnect_max > backoff ? x->reconnect_max : backoff;
    window = x->fetch_window < window ? x->fetch_window : window;
  }
  trips = (sp_duration)((s->oracle_len + pending) / window + 1);
  round = detect + 2 * backoff + 3 * SP_SECONDS;
  per = c->propose_max_bytes / (4 + 300);
  if (per > c->propose_window) {
    per = c->propose_window;
  }
  trips += pending / (per ? per : 1) + 1;
  return round + trips * rtt + snap_liveness(s);
}

/* --crash-at-stop: one device that is up dies after the last step's host
 * reactions looked at it, as a sink call during its full sync kills it
 * (seed 3998 met it by chance): what it sends is dropped, and the crash
 * is left for the end of the faults to carry out. */
static void arm_crash_at_stop(sim *s) {
  int n = s->t.ndevs, k;

  for (k = 0; k < n; ++k) {
    int d = (int)((s->seed + (uint64_t)k) % (uint64_t)n);
    if (s->mode[d] != M_DOWN) {
      s->crash_armed[d] = 1;
      s->crash_now[d] = 1;
      if (s->t.verbose) {
        fprintf(stderr, "sim: dev%d crashes as the faults stop\n", d);
      }
      return;
    }
  }
}

static int run_seed(sim *s, uint64_t seed, int verbose) {
  int ndevs, steps, d;
  sp_tstamp deadline, stopped;

  memset(s->mode, 0, sizeof(s->mode));
  memset(s->stepped, 0, sizeof(s->stepped));
  memset(s->diverged, 0, sizeof(s->diverged));
  memset(s->frozen, 0, sizeof(s->frozen));
  memset(s->last_epoch, 0, sizeof(s->last_epoch));
  memset(s->lead_epoch, 0, sizeof(s->lead_epoch));
  memset(s->crash_armed, 0, sizeof(s->crash_armed));
  memset(s->crash_now, 0, sizeof(s->crash_now));
  memset(s->heal_at, 0, sizeof(s->heal_at));
  memset(s->corrupted, 0, sizeof(s->corrupted));
  memset(s->removed, 0, sizeof(s->removed));
  memset(s->tampered, 0, sizeof(s->tampered));
  memset(s->unaware, 0, sizeof(s->unaware));
  for (d = 0; d < SIM_MAX_EPOCH; ++d) {
    s->epoch_cut[d] = UINT64_MAX;
    s->given[d] = -1;
  }
  s->nforgeries = 0;
  writes_reset(s);
  s->failure[0] = '\0';
  s->seed = seed;
  s->oracle_len = 0;
  s->pruned_hist = 0;
  s->epoch = 1;
  sp_rand_seed(&s->rng, seed);
  ndevs = 2 + (int)below(s, 3);
  if (tc_init(&s->t, ndevs, 1, (sp_duration)below(s, 20) * MS, NULL) != 0) {
    fail(s, "init failed");
    return -1;
  }
  s->t.seed = seed;
  s->t.verbose = verbose;
  s->t.fault = fault_hook;
  s->t.on_event = event_hook;
  s->t.on_msg = msg_hook;
  s->t.store_hook = store_hook;
  configure(s);
  s->faults_on = 1;
  for (d = 0; d < ndevs; ++d) {
    open_dev(s, d);
  }
  steps = 50 + (int)below(s, 250);
  for (s->step = 0; s->step < steps && !s->failure[0]; ++s->step) {
    random_step(s);
    writes_step(s);
    snap_step(s);
    async_run_for(s, (sp_duration)(1 + below(s, 3000)) * MS);
    heal_due(s, 0);
    host_reactions(s);
    check(s);
  }
  if (g_crash_at_stop && !s->failure[0]) {
    arm_crash_at_stop(s);
  }
  /* A crash armed during the last step's host reactions, after they
   * looked at that device (a sink call the process died in during its
   * full sync: seed 3998), is one of the faults: it happens now, and the
   * device boots below with every other one that is down.  Left
   * pending, the next host reactions would carry it out after the
   * faults stopped, and nothing would boot the device again. */
  for (d = 0; d < ndevs && !s->failure[0]; ++d) {
    if (s->crash_now[d] && s->mode[d] != M_DOWN) {
      crash(s, d);
    }
    s->crash_now[d] = 0;
  }
  /* Faults stop: every follower must converge within the bound. */
  s->faults_on = 0;
  heal_due(s, 1);
  registry_restore(s);
  for (d = 0; d < ndevs; ++d) {
    s->crash_armed[d] = 0;
    sp_mem_store_fail_applies(s->t.dev[d].store[LIB], 0);
    sp_mem_store_fail_appends(s->t.dev[d].store[LIB], 0);
    if (s->mode[d] == M_DOWN && !s->failure[0]) {
      boot(s, d);
    }
  }
  stopped = s->t.now;
  deadline = stopped + liveness_bound(s);
  while (!s->failure[0] && !converged(s) && s->t.now < deadline) {
    async_run_for(s, 100 * MS);
    host_reactions(s);
    check(s);
  }
  if (!s->failure[0] && !converged(s)) {
    char why[256];
    lagging(s, why, sizeof(why));
    fail(s, "no convergence %.1f s after the faults stopped (the bound from "
         "this seed's timers):%s", (double)(deadline - stopped) / SP_SECONDS,
         why);
  }
  if (!s->failure[0]) {
    double r = (double)(s->t.now - stopped) / (double)(deadline - stopped);
    if (r > slowest.ratio) {
      slowest.ratio = r;
      slowest.took = s->t.now - stopped;
      slowest.bound = deadline - stopped;
      slowest.seed = seed;
    }
  }
  for (d = 0; d < ndevs && !s->failure[0]; ++d) {
    if (d != leader_of(s) && !tc_is_prefix(&s->t, d, LIB)) {
      fail(s, "dev%d: bytes differ from the leader's", d);
    }
  }
  for (d = 0; d < ndevs && !s->failure[0]; ++d) {
    if (s->mode[d] == M_FOLLOWER && ev_known[d] &&
        ev_at[d] != state_of(s, d).applied) {
      fail(s, "dev%d: ENTRIES_APPLIED reported up to %llu, the store holds "
           "%llu", d, (unsigned long long)ev_at[d],
           (unsigned long long)state_of(s, d).applied);
    }
  }
  if (!s->failure[0]) {
    writes_verdict(s);
  } else {
    writes_unjudged(s);
  }
  async_seed_done(s);
  tc_free(&s->t);
  return s->failure[0] ? -1 : 0;
}

int main(int argc, char **argv) {
  static sim s;
  uint64_t first = 1, count = 10000, i, one = 0;
  int verbose = 0, soak = 0, have_one = 0, keep_going = 0, k;
  long failed = 0;
  clock_t start = clock();
  char unaware_at[48] = "";

  for (k = 1; k < argc; ++k) {
    if (!strcmp(argv[k], "--seeds") && k + 1 < argc) {
      count = strtoull(argv[++k], NULL, 10);
    } else if (!strcmp(argv[k], "--first") && k + 1 < argc) {
      first = strtoull(argv[++k], NULL, 10);
    } else if (!strcmp(argv[k], "--seed") && k + 1 < argc) {
      one = strtoull(argv[++k], NULL, 10);
      have_one = 1;
    } else if (!strcmp(argv[k], "--verbose")) {
      verbose = 1;
    } else if (!strcmp(argv[k], "--soak")) {
      soak = 1;
    } else if (!strcmp(argv[k], "--keep-going")) {
      keep_going = 1;
    } else if (!strcmp(argv[k], "--reliable-streams")) {
      g_reliable = 1;
    } else if (!strcmp(argv[k], "--valid-forgeries")) {
      g_valid_forgeries = 1;
    } else if (!strcmp(argv[k], "--crash-at-stop")) {
      g_crash_at_stop = 1;
    } else {
      fprintf(stderr,
              "usage: %s [--seeds N] [--first S] | --seed S [--verbose] | "
              "--soak | --seeds N --keep-going [--reliable-streams] "
              "[--valid-forgeries] [--crash-at-stop]\n",
              argv[0]);
      return 2;
    }
  }
  if (getenv("SP_SIM_SEEDS") && !have_one) {
    count = strtoull(getenv("SP_SIM_SEEDS"), NULL, 10);
  }
  {
    sp_uuid stranger;
    memset(&stranger, 0xee, sizeof(stranger));
    if (sp_identity_generate(&s.stranger, &stranger, NULL) != 0) {
      return 1;
    }
  }
  s.oracle = calloc(MAX_SEQ, SP_HASH_LEN);
  s.hist_tag = calloc(MAX_SEQ, sizeof(*s.hist_tag));
  s.hist_origin = calloc(MAX_SEQ, sizeof(*s.hist_origin));
  if (!s.oracle || !s.hist_tag || !s.hist_origin ||
      sp_decoder_new(&s.dec, NULL) != 0) {
    return 1;
  }
  g_sim = &s;
  s.argv0 = argv[0];
  if (have_one) {
    first = one;
    count = 1;
  }
  for (i = 0; soak || i < count; ++i) {
    uint64_t seed = first + i;
    if (run_seed(&s, seed, verbose) != 0) {
      fprintf(stderr,
              "sim: seed %" PRIu64 " failed at step %d (t=%.3f s): %s\n"
              "  replay: %s --seed %" PRIu64 " --verbose\n",
              seed, s.step, (double)s.t.now / SP_SECONDS, s.failure, argv[0],
              seed);
      if (keep_going) {
        failed++;
        continue;
      }
      free(s.oracle);
      writes_free(&s);
      sp_identity_del(s.stranger);
      sp_decoder_del(s.dec);
      return 1;
    }
    if (soak && (i + 1) % 10000 == 0) {
      printf("sim: %" PRIu64 " seeds passed\n", i + 1);
      fflush(stdout);
    }
  }
  if (tot.unaware) {
    snprintf(unaware_at, sizeof(unaware_at), " (first: seed %" PRIu64 ")",
             tot.unaware_seed);
  }
  printf("sim: faults: %ld drops, %ld duplicates, %ld reorders, %ld delays, "
         "%ld cuts, %ld corruptions, %ld partitions, %ld crashes "
         "(%ld between apply and ack), %ld leader restarts, %ld failovers "
         "(%ld withheld: no candidate held the pruned history), "
         "%ld stale leaders returned, %ld step-downs, %ld apply failures, "
         "%ld prunes, %ld prunes racing a read; %ld SyncRequired, "
         "%ld full syncs; %ld entries; writes: %ld crashes between submit "
         "and send, %ld leader crashes between append and answer, %ld "
         "leader append failures, %ld refused OUTBOX_FULL, %ld from "
         "leaders, %ld host refusals, %ld replacements, %ld cut from the "
         "history by a failover (then proposed again or put back); %ld "
         "followers diverged by a deposed leader's late page%s\n",
         tot.drops, tot.dups, tot.reorders, tot.delays, tot.cuts,
         tot.corruptions, tot.partitions, tot.crashes, tot.crash_before_ack,
         tot.leader_restarts, tot.failovers, tot.failovers_withheld,
         tot.stale_returns,
         tot.step_downs, tot.apply_failures, tot.prunes, tot.read_prunes,
         tot.sync_required,
         tot.full_syncs, tot.appends, wtot.crash_after_submit,
         wtot.crash_after_append, wtot.append_failures, wtot.outbox_full,
         wtot.leader_side, wtot.host_refusals, wtot.replacements,
         wtot.truncated, tot.unaware, unaware_at);
  printf("sim: registry: %ld followers removed, %ld put back\n",
         tot_removals, tot_readditions);
  printf("sim: snapshots: installed in %ld seeds; %ld SyncRequired with "
         "a sink, %ld recoveries failed (%ld too large), %ld restarts; "
         "faults: %ld sink "
         "failures, %ld crashes in the sink, %ld source failures, %ld "
         "flipped source reads, %ld flipped snapshot frames, %ld host full "
         "syncs mid-recovery, %ld prunes past lagging followers\n",
         stot.seeds, stot.recoveries, stot.failed, stot.too_large,
         stot.restarts,
         stot.sink_failures, stot.sink_crashes, stot.source_failures,
         stot.read_corruptions, stot.wire_corruptions, stot.host_syncs_mid,
         stot.prunes);
  printf("sim: liveness: closest to its bound: seed %" PRIu64
         " converged %.1f s after the faults stopped (bound %.1f s)\n",
         slowest.seed, (double)slowest.took / SP_SECONDS,
         (double)slowest.bound / SP_SECONDS);
  printf("sim: leadership: %ld step-downs for the claim's leader itself, "
         "%ld for a claim relayed by a follower\n", tot.proven - tot.relayed,
         tot.relayed);
  printf("sim: forgeries: %ld forged epochs sent to leaders: %ld without "
         "a claim, %ld by members that may not lead, %ld with a flipped "
         "signature, %ld by a device no registry knows, %ld in another "
         "member's name; %ld of them as Error frames\n",
         tot.forged[0] + tot.forged[1] + tot.forged[2] + tot.forged[3] +
             tot.forged[4],
         tot.forged[0], tot.forged[1], tot.forged[2], tot.forged[3],
         tot.forged[4], tot.forged_errors);
  printf("claims: %ld step-downs proven, %ld forged epochs refused, %ld "
         "deposed by forgery\n", tot.proven, tot.forged_refused,
         tot.deposed);
  printf("writes: %ld submitted, %ld committed exactly once, %ld refused, "
         "%ld lost, %ld duplicated",
         wtot.submitted, wtot.committed_once, wtot.refused, wtot.lost,
         wtot.duplicated);
  if (wtot.unjudged) {
    printf(" (and %ld submissions in seeds that failed before their "
           "verdict)", wtot.unjudged);
  }
  printf("\n");
  printf("snapshots: %ld installed, %ld resumed, %ld half-installed, %ld "
         "loops\n", stot.installed, stot.resumed, stot.half, stot.loops);
  printf("async: %ld followers in %ld seeds, %ld batches queued, %ld durable, "
         "%ld failed (%ld injected failures), %ld batches pending at %ld "
         "crashes, %ld lost\n",
         atot.devices, atot.seeds, atot.queued, atot.flushed, atot.failed,
         atot.injected, atot.pending_at_crash, atot.crashes_pending,
         atot.lost);
  if (failed) {
    printf("sim: %" PRIu64 " seeds (%" PRIu64 "..%" PRIu64
           "), %ld FAILED (listed above), %.1f s CPU\n",
           count, first, first + count - 1, failed,
           (double)(clock() - start) / CLOCKS_PER_SEC);
  } else {
    printf("sim: %" PRIu64 " seeds (%" PRIu64 "..%" PRIu64
           "), 0 invariant violations, %.1f s CPU\n",
           count, first, first + count - 1,
           (double)(clock() - start) / CLOCKS_PER_SEC);
  }
  free(s.oracle);
  writes_free(&s);
  sp_decoder_del(s.dec);
  sp_identity_del(s.stranger);
  return failed ? 1 : 0;
}
