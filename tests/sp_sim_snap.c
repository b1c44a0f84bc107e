/*
 * sp_sim_snap.c: the fault simulation's snapshot recoveries (sp_sim.h).
 *
 * Per seed (90% of them), every device gets a source over its mem store
 * (sp_mem_store_snapshot_source), which a handler uses while it leads (in
 * a tenth of those seeds no device has one: followers with a sink then
 * get the plain SyncRequired), and about half the devices, one follower
 * at least, a sink into their mem store (sp_mem_store_snapshot_sink);
 * the others keep the host's own full sync.  Chunks are small (64-4096
 * bytes, log-uniform) and windows narrow (1-8) so that a transfer has
 * many chunks and faults land inside it; a few devices refuse snapshots
 * above a small size (SP_ERR_SNAPSHOT_TOO_LARGE).  On top of every fault
 * of sp_sim.c:
 *   - the sink's pending / begin / write_chunk / commit / abort fail,
 *     before their work or (begin, write_chunk, abort) after it; a failed
 *     commit may be followed by more (a failing disk);
 *   - the follower crashes inside a sink call, before or after its work
 *     (right after a write_chunk, right before or after the commit): from
 *     that point its disk takes nothing more (no sink call, no apply),
 *     what it sends is dropped, and the host then deletes and recreates
 *     its handler on the same store (crash() in sp_sim.c);
 *   - the source's open and reopen fail, reopen says the host no longer
 *     keeps the image, a read fails at a random point, and a read serving
 *     a chunk of an already prepared snapshot returns a flipped byte (bit
 *     rot in the leader's storage);
 *   - a chunk's bytes, or a manifest's hashes, arrive with a flipped byte;
 *     in a few seeds so many chunks do (a storm) that recoveries use up
 *     their restarts and fail;
 *   - the leader's host prunes past lagging followers often (snap_step),
 *     and a host sometimes does its own full sync in the middle of a
 *     recovery.
 * Faults inside a transfer are drawn per transfer (spread over its
 * chunks), so that a snapshot of 5 chunks and one of 5000 see alike few.
 *
 * Invariants (check_snapshots after every step, snap_event on events):
 *   - a follower with a sink is, at every step, either unchanged since
 *     the last step (applied, head, retained rows: the state it had when
 *     its recovery began, as long as it recovers) or on the history (the
 *     oracle's prefix, no hole), or excused as unaware_divergence;
 *     anything else is a half-installed state;
 *   - along the history its log never goes back if its recovery began on
 *     the history (the leader's state at S lies past where the follower
 *     was told it is behind; a diverged log may land below where it was);
 *   - at SNAPSHOT_INSTALLED the log stands exactly at S with the oracle's
 *     hash at S (the epoch check of sp_sim.c covers its epoch);
 *   - SNAPSHOT_* progress: bytes and chunks done never exceed the totals;
 *     restarts never exceed SP_SNAP_MAX_RESTARTS (else: a loop);
 *   - a device starts at most LOOP_STARTS recoveries (SyncRequired with a
 *     sink) without a new cause in between: the leader pruning past it,
 *     its crash, a failover, a step-down, a corrupted page, a registry
 *     change; more is a loop.
 * After a SNAPSHOT_FAILED half the hosts (per device) do their own full
 * sync, the others wait for the library's own retry after its backoff
 * (10 min and more, which the liveness bound includes: snap_liveness); a
 * failure for SP_ERR_SNAPSHOT_TOO_LARGE always gets the host's full sync
 * (the next try would fail alike), as does a plain SyncRequired (a
 * leader without a source, a stream that did not negotiate snapshots).  While a recovery runs the hosts leave
 * it alone (but for the rare full sync above).
 */
#include <stdio.h>
#include <string.h>

#include "sp_sim.h"

/* Recoveries a device may start without a new cause (see above). */
#define LOOP_STARTS 3
/* Source handles whose prepared extent is tracked. */
#define MAX_HANDLES 16

/* An open source handle: how far preparing read it (hw), its reads
 * and serving reads so far, and the read that fails and the serving
 * read that comes back flipped (UINT64_MAX: none), drawn at open. */
typedef struct hw_mark {
  void *handle;
  uint64_t hw;
  uint64_t reads, serves, fail_at, corrupt_at;
} hw_mark;

/* A store's state as far as "unchanged" goes. */
typedef struct sstate {
  sp_store_state st;
  sp_seq pruned;
  size_t count;
  uint8_t first[SP_HASH_LEN];
} sstate;

typedef struct snapdev {
  int dev;
  int has_sink, has_source;
  /* Host policy after SNAPSHOT_FAILED: 1 wait for the library's retry. */
  int waits_on_failure;
  /* Crashed inside a sink call: the disk takes nothing more. */
  int dead;
  /* The last recovery failed (too_large: for its size) and nothing
   * recovered the log since. */
  int failed, too_large;
  /* The host's full sync now interrupts a recovery. */
  int mid_sync;
  int starts;
  int ok_valid;
  sstate ok;
  /* `ok` was on the history when recorded; the last recovery began on
   * the history (1 when none did); a recovery ended this step. */
  int ok_hist, start_on_hist, ended;
  sp_snapshot_source src_inner, src_vt;
  sp_snapshot_sink sink_inner, sink_vt;
  hw_mark hws[MAX_HANDLES];
  /* Chunks of the snapshot the sink works on (from its info). */
  uint64_t chunks;
  /* Commits that fail next (a failing disk). */
  unsigned commit_fails;
} snapdev;

static snapdev g_sd[TC_MAX_DEVS];
/* This seed installed a snapshot (stot.seeds counts them). */
static int g_seed_installed;

/*
 * Per-seed knobs.  A transfer makes one sink write and one or two source
 * reads per chunk, from a few to thousands of them: the faults inside a
 * transfer are drawn per transfer (sink: faults per transfer in 1/100,
 * spread over its chunks; source: per open, 1/10000, at a random read),
 * so that small and large snapshots see alike few.  Wire faults are per
 * delivery, per million; host actions per step, 1/10000.
 */
static struct {
  int enabled;
  uint32_t chunk;
  unsigned sink_fail_x100, sink_crash_x100;
  unsigned p_open_fail, p_read_fail, p_read_corrupt;
  unsigned ppm_wire;
  unsigned p_prune, p_host_sync;
} sp;

static int chance_ppm(sim *s, unsigned ppm) {
  return ppm && sp_rand_below(&s->rng, 1000000) < ppm;
}

/* Per sink call, per million, for `x100` faults per transfer: spread over
 * the chunks for writes, a fixed share for the few other calls. */
static unsigned sink_ppm(const snapdev *sd, unsigned x100, int per_chunk) {
  uint64_t ppm;

  if (!per_chunk) {
    return x100 * 300;
  }
  ppm = (uint64_t)x100 * 10000 / (sd->chunks ? sd->chunks : 1);
  return ppm > 200000 ? 200000 : (unsigned)ppm;
}

stotals stot;

/* ---- sink and source with faults ---- */

enum { GO = 0, FAIL_BEFORE, FAIL_AFTER, CRASH_BEFORE, CRASH_AFTER };

static void die(sim *s, snapdev *sd, const char *where) {
  if (sd->dead) {
    return;
  }
  sd->dead = 1;
  s->crash_armed[sd->dev] = 1;
  s->crash_now[sd->dev] = 1;
  stot.sink_crashes++;
  if (s->t.verbose) {
    fprintf(stderr, "sim: dev%d crashes %s\n", sd->dev, where);
  }
}

/* Before a sink call: fail it, crash, or go on (`*post` says what to do
 * after the call).  `after_ok`: the call may fail after its work. */
static int sink_pre(snapdev *sd, int after_ok, int *post, const char *what) {
  sim *s = g_sim;
  int per_chunk = strcmp(what, "write_chunk") == 0;
  char where[64];

  *post = GO;
  if (sd->dead) {
    return -1; /* the process is gone: its disk takes nothing */
  }
  if (!s->faults_on) {
    return 0;
  }
  if (chance_ppm(s, sink_ppm(sd, sp.sink_fail_x100, per_chunk))) {
    if (after_ok && chance(s, 5000)) {
      *post = FAIL_AFTER;
      return 0;
    }
    stot.sink_failures++;
    return -1;
  }
  if (chance_ppm(s, sink_ppm(sd, sp.sink_crash_x100, per_chunk))) {
    if (chance(s, 5000)) {
      *post = CRASH_AFTER;
      return 0;
    }
    snprintf(where, sizeof(where), "right before the sink's %s", what);
    die(s, sd, where);
    return -1;
  }
  return 0;
}

static int sink_post(snapdev *sd, int post, int rv, const char *what) {
  char where[64];

  if (post == FAIL_AFTER && rv == 0) {
    stot.sink_failures++;
    return -1;
  }
  if (post == CRASH_AFTER) {
    snprintf(where, sizeof(where), "right after the sink's %s", what);
    die(g_sim, sd, where);
  }
  return rv;
}

static int w_pending(sp_snapshot_info *info, uint64_t *have, void *ud) {
  snapdev *sd = ud;
  int post, rv = sink_pre(sd, 0, &post, "pending");

  if (rv != 0) {
    return rv;
  }
  rv = sd->sink_inner.pending(info, have, sd->sink_inner.user_data);
  if (rv == 0 && info) {
    sd->chunks = info->chunk_count;
  }
  return sink_post(sd, post, rv, "pending");
}

static int w_begin(const sp_snapshot_info *info, uint64_t *have, void *ud) {
  snapdev *sd = ud;
  int post, rv = sink_pre(sd, 1, &post, "begin");

  if (rv != 0) {
    return rv;
  }
  sd->chunks = info->chunk_count;
  rv = sd->sink_inner.begin(info, have, sd->sink_inner.user_data);
  return sink_post(sd, post, rv, "begin");
}

static int w_write_chunk(uint64_t index, const uint8_t *data, size_t len,
                         void *ud) {
  snapdev *sd = ud;
  int post, rv = sink_pre(sd, 1, &post, "write_chunk");

  if (rv != 0) {
    return rv;
  }
  rv = sd->sink_inner.write_chunk(index, data, len, sd->sink_inner.user_data);
  rv = sink_post(sd, post, rv, "write_chunk");
  if (g_sim->t.verbose && rv != 0) {
    fprintf(stderr, "sim: dev%d sink fails to write chunk %llu\n", sd->dev,
            (unsigned long long)index);
  }
  return rv;
}

/* A failed commit changes nothing (the contract): no failure after it.
 * A failing disk often goes on failing: the next commits may fail too,
 * while the follower holds every chunk, checked, and nothing installed. */
static int w_commit(void *ud) {
  snapdev *sd = ud;
  int post, rv;

  if (sd->commit_fails > 0 && !sd->dead && g_sim->faults_on) {
    sd->commit_fails--;
    stot.sink_failures++;
    return -1;
  }
  rv = sink_pre(sd, 0, &post, "commit");
  if (rv != 0) {
    if (!sd->dead) {
      sd->commit_fails = below(g_sim, 4);
    }
    return rv;
  }
  rv = sd->sink_inner.commit(sd->sink_inner.user_data);
  return sink_post(sd, post, rv, "commit");
}

static int w_abort(void *ud) {
  snapdev *sd = ud;
  int post, rv = sink_pre(sd, 1, &post, "abort");

  if (rv != 0) {
    return rv;
  }
  rv = sd->sink_inner.abort(sd->sink_inner.user_data);
  return sink_post(sd, post, rv, "abort");
}

static hw_mark *mark_of(snapdev *sd, void *handle) {
  size_t i;

  for (i = 0; i < MAX_HANDLES; ++i) {
    if (sd->hws[i].handle == handle) {
      return &sd->hws[i];
    }
  }
  return NULL;
}

/* A handle was opened on a snapshot of `total` bytes: track it, and
 * draw the faults of its reads. */
static void track(snapdev *sd, void *handle, uint64_t total) {
  sim *s = g_sim;
  uint64_t chunks = total / sp.chunk + 1;
  hw_mark *m = mark_of(sd, handle);
  size_t i;

  for (i = 0; !m && i < MAX_HANDLES; ++i) {
    m = sd->hws[i].handle ? NULL : &sd->hws[i];
  }
  if (!m) {
    return;
  }
  memset(m, 0, sizeof(*m));
  m->handle = handle;
  m->fail_at = m->corrupt_at = UINT64_MAX;
  if (s->faults_on && sp.p_read_fail && chance(s, sp.p_read_fail)) {
    m->fail_at = below(s, (unsigned)(2 * chunks < 1000000 ? 2 * chunks
                                                          : 1000000));
  }
  if (s->faults_on && sp.p_read_corrupt && chance(s, sp.p_read_corrupt)) {
    m->corrupt_at = below(s, (unsigned)(chunks < 1000000 ? chunks : 1000000));
  }
}

static void src_failed(const char *what) {
  stot.source_failures++;
  if (g_sim->t.verbose) {
    fprintf(stderr, "sim: the source's %s fails\n", what);
  }
}

/* Open and reopen fail now and then (once a transfer or so). */
static int open_fault(const char *what) {
  sim *s = g_sim;

  if (s->faults_on && sp.p_open_fail && chance(s, sp.p_open_fail)) {
    src_failed(what);
    return 1;
  }
  return 0;
}

static int w_open(const uint8_t id[SP_SNAPSHOT_ID_LEN], sp_snapshot_desc *out,
                  void **handle, void *ud) {
  snapdev *sd = ud;
  int rv;

  if (open_fault("open")) {
    return -1;
  }
  rv = sd->src_inner.open(id, out, handle, sd->src_inner.user_data);
  if (rv == 0) {
    track(sd, *handle, out->total_size);
  }
  return rv;
}

static int w_reopen(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                    sp_snapshot_desc *out, void **handle, void *ud) {
  snapdev *sd = ud;
  int rv;

  if (open_fault("reopen")) {
    /* Either the call fails, or the host dropped the image. */
    return chance(g_sim, 5000) ? -1 : SP_ERR_NOT_FOUND;
  }
  rv = sd->src_inner.reopen(id, out, handle, sd->src_inner.user_data);
  if (rv == 0) {
    track(sd, *handle, out->total_size);
  }
  return rv;
}

/*
 * Reads of bytes the library already read once through this handle are
 * serving chunks (preparing hashes every byte once, in order, before any
 * chunk is served): only those may come back flipped, so the manifest's
 * hashes are always of the true bytes and the follower must refuse the
 * flipped chunk and fetch it again.
 */
static int w_read(void *handle, uint64_t offset, uint8_t *buf, size_t len,
                  void *ud) {
  snapdev *sd = ud;
  sim *s = g_sim;
  hw_mark *m = mark_of(sd, handle);
  int rv;

  if (m && m->reads++ == m->fail_at && s->faults_on) {
    src_failed("read");
    return -1;
  }
  rv = sd->src_inner.read(handle, offset, buf, len, sd->src_inner.user_data);
  if (rv != 0 || !m) {
    return rv;
  }
  if (offset + len > m->hw) {
    if (offset <= m->hw) {
      m->hw = offset + len;
    }
  } else if (m->serves++ == m->corrupt_at && len > 0 && s->faults_on) {
    buf[below(s, (unsigned)len)] ^= (uint8_t)(1 + below(s, 255));
    stot.read_corruptions++;
    if (s->t.verbose) {
      fprintf(stderr, "sim: the source's read at %llu comes back flipped\n",
              (unsigned long long)offset);
    }
  }
  return 0;
}

static void w_close(void *handle, int forget, void *ud) {
  snapdev *sd = ud;
  hw_mark *m = mark_of(sd, handle);

  if (m) {
    m->handle = NULL;
  }
  sd->src_inner.close(handle, forget, sd->src_inner.user_data);
}

/* A crashed process's store takes no apply either (the epoch a handler
 * writes after an install). */
static int (*g_inner_apply)(const sp_entry *, const uint8_t *, size_t,
                            uint64_t, void *);

static int frozen_apply(const sp_entry *entries, const uint8_t *hashes,
                        size_t n, uint64_t epoch, void *user_data) {
  sim *s = g_sim;
  int d;

  for (d = 0; d < s->t.ndevs; ++d) {
    if (g_sd[d].dead && s->t.dev[d].store[LIB] == user_data) {
      return -1;
    }
  }
  return g_inner_apply(entries, hashes, n, epoch, user_data);
}

void snap_store_hook(sp_store *st) {
  g_inner_apply = st->apply;
  st->apply = frozen_apply;
}

/* ---- configuration ---- */

void configure_snapshots(sim *s) {
  int d, sources, forced;
  unsigned e;

  memset(g_sd, 0, sizeof(g_sd));
  memset(&sp, 0, sizeof(sp));
  g_seed_installed = 0;
  sp.enabled = chance(s, 9000);
  if (!sp.enabled) {
    return; /* today's hosts only */
  }
  e = below(s, 7);
  sp.chunk = (64u << e) + below(s, 64u << e);
  sp.chunk = sp.chunk > 4096 ? 4096 : sp.chunk;
  /* Sometimes no leader has a source: followers with a sink get the
   * plain SyncRequired. */
  sources = chance(s, 9000);
  /* One follower at least has a sink (device 0 leads first). */
  forced = 1 + (int)below(s, (unsigned)s->t.ndevs - 1);
  for (d = 0; d < s->t.ndevs; ++d) {
    snapdev *sd = &g_sd[d];
    sp_handler_config *c = &s->t.dev[d].cfg[LIB];
    sp_mem_store *ms = s->t.dev[d].store[LIB];
    sd->dev = d;
    sd->start_on_hist = 1;
    sd->has_source = sources;
    sd->has_sink = d == forced || chance(s, 5000);
    sd->waits_on_failure = chance(s, 5000);
    sp_mem_store_snapshot_source(ms, &sd->src_inner);
    sp_mem_store_snapshot_sink(ms, &sd->sink_inner);
    sd->src_vt = sd->src_inner;
    sd->src_vt.user_data = sd;
    sd->src_vt.open = w_open;
    sd->src_vt.reopen = w_reopen;
    sd->src_vt.read = w_read;
    sd->src_vt.close = w_close;
    sd->sink_vt = sd->sink_inner;
    sd->sink_vt.user_data = sd;
    sd->sink_vt.pending = w_pending;
    sd->sink_vt.begin = w_begin;
    sd->sink_vt.write_chunk = w_write_chunk;
    sd->sink_vt.commit = w_commit;
    sd->sink_vt.abort = w_abort;
    c->snapshot_source = sd->has_source ? &sd->src_vt : NULL;
    c->snapshot_sink = sd->has_sink ? &sd->sink_vt : NULL;
    c->snapshot_window = 1 + below(s, 8);
    c->snapshot_chunk_size = sp.chunk;
    c->snapshot_max_bytes = chance(s, 300) ? 1000 + below(s, 20000) : 0;
  }
  sp.sink_fail_x100 = chance(s, 5000) ? below(s, 200) : 0;
  sp.sink_crash_x100 = chance(s, 5000) ? below(s, 150) : 0;
  sp.p_open_fail = chance(s, 3000) ? below(s, 1500) : 0;
  sp.p_read_fail = chance(s, 3000) ? below(s, 3000) : 0;
  sp.p_read_corrupt = chance(s, 3000) ? below(s, 5000) : 0;
  sp.ppm_wire = chance(s, 5000) ? below(s, 2000) : 0;
  if (chance(s, 300)) {
    /* A storm: chunks fail verification often enough that recoveries
     * use up their restarts and fail (the library's backoff, or the
     * host's full sync, then recovers). */
    sp.ppm_wire = 50000 + below(s, 250000);
  }
  sp.p_prune = 500 + below(s, 1500);
  sp.p_host_sync = chance(s, 3000) ? below(s, 300) : 0;
}

/* ---- host actions ---- */

/*
 * The leader's host prunes past lagging followers: to what prune_cap
 * allows, but never past an open snapshot's S (the retention floor the
 * library reports holds it; a host that pruned S's link would break the
 * recoveries under way, which the ordinary prunes of sp_sim.c still do
 * now and then).  With one follower, prune_cap never lets a host prune
 * past it; if that follower has a sink and the leader a source, the host
 * here prunes up to its latest entry: nothing is lost, since the
 * leader's state (what a snapshot carries: the rows, the base it was
 * pruned to, the committed origin ids) holds what it pruned, and with
 * two devices no failover can promote a device that lacks it.
 */
void snap_step(sim *s) {
  int l = leader_of(s);
  sp_handler *h = s->t.dev[l].h[LIB];
  sp_mem_store *ms = s->t.dev[l].store[LIB];
  sp_seq to, pin;
  sp_store vt;
  sp_log_bounds b;

  if (!sp.enabled || !chance(s, sp.p_prune) || s->mode[l] != M_LEADER ||
      !h || sp_handler_role(h) != SP_ROLE_LEADER) {
    return;
  }
  to = prune_cap(s);
  if (s->t.ndevs == 2 && g_sd[1 - l].has_sink && g_sd[l].has_source) {
    to = s->oracle_len - below(s, (unsigned)(s->oracle_len / 4 + 1));
  }
  pin = sp_snap_serve_floor(h);
  to = to < pin ? to : pin;
  sp_mem_store_get_vtable(ms, &vt);
  if (vt.bounds(&b, vt.user_data) != 0 || to <= b.pruned_through) {
    return;
  }
  if (sp_mem_store_prune(ms, to) == 0) {
    note_prune(s, to);
    stot.prunes++;
    if (s->t.verbose) {
      fprintf(stderr, "sim: snapshot host prunes through %llu\n",
              (unsigned long long)to);
    }
  }
}

/* Whether device d's host leaves SyncRequired to the library now. */
int snap_host_waits(sim *s, int d) {
  snapdev *sd = &g_sd[d];
  const sp_handler *h = s->t.dev[d].h[LIB];

  sd->mid_sync = 0;
  if (!sp.enabled || !sd->has_sink || !h) {
    return 0;
  }
  if (h->fstate == SP_F_RECOVERING) {
    if (sp.p_host_sync && chance(s, sp.p_host_sync)) {
      sd->mid_sync = 1; /* recovers by its own means, mid-transfer */
      return 0;
    }
    return 1;
  }
  /* After a failure the library tries again at snap_wake_at; otherwise
   * (a leader that cannot serve a snapshot, a stream that did not
   * negotiate it) only the host can.  The sim peeks at the handler: a
   * failure reported earlier may since have been followed by a recovery
   * that stopped for another reason, and the public status (which says
   * TRANSFERRING then) cannot tell the two apart. */
  if (sd->failed && !sd->too_large && h->snap_wake_at > s->t.now) {
    return sd->waits_on_failure;
  }
  return 0;
}

void snap_full_sync(sim *s, int d) {
  snapdev *sd = &g_sd[d];

  (void)s;
  if (sd->mid_sync) {
    stot.host_syncs_mid++;
  }
  sd->mid_sync = 0;
  sd->failed = 0;
  sd->too_large = 0;
  sd->ended = 1;
}

/* ---- invariants ---- */

static void read_sstate(sim *s, int d, sstate *out) {
  sp_mem_store *ms = s->t.dev[d].store[LIB];
  sp_store vt;
  sp_log_bounds b;
  sp_entry e;

  memset(out, 0, sizeof(*out));
  out->st = state_of(s, d);
  sp_mem_store_get_vtable(ms, &vt);
  if (vt.bounds(&b, vt.user_data) == 0) {
    out->pruned = b.pruned_through;
  }
  out->count = sp_mem_store_count(ms);
  if (out->count) {
    (void)sp_mem_store_get(ms, out->pruned + 1, &e, out->first);
  }
}

static int same_sstate(const sstate *a, const sstate *b) {
  return a->st.applied == b->st.applied &&
         memcmp(a->st.head_hash, b->st.head_hash, SP_HASH_LEN) == 0 &&
         a->pruned == b->pruned && a->count == b->count &&
         memcmp(a->first, b->first, SP_HASH_LEN) == 0;
}

static int on_history(sim *s, const sstate *x) {
  return matches_oracle(s, &x->st) && x->count == x->st.applied - x->pruned;
}

void check_snapshots(sim *s) {
  int d, l = leader_of(s);

  if (!sp.enabled) {
    return;
  }
  for (d = 0; d < s->t.ndevs && !s->failure[0]; ++d) {
    snapdev *sd = &g_sd[d];
    sstate now;
    read_sstate(s, d, &now);
    if (sd->has_sink && d != l && s->mode[d] != M_STALE &&
        s->mode[d] != M_LEADER && sd->ok_valid &&
        !same_sstate(&now, &sd->ok) && !on_history(s, &now) &&
        !unaware_divergence(s, d, &now.st)) {
      stot.half++;
      fail(s, "dev%d: half-installed: its log went from %llu (pruned %llu, "
           "%zu rows) to %llu (pruned %llu, %zu rows), not on the history "
           "(len %llu)", d, (unsigned long long)sd->ok.st.applied,
           (unsigned long long)sd->ok.pruned, sd->ok.count,
           (unsigned long long)now.st.applied,
           (unsigned long long)now.pruned, now.count,
           (unsigned long long)s->oracle_len);
    }
    /* Along the history a log only moves forward: a recovery that began
     * on the history installs the leader's state at S, past where the
     * follower was told it is behind, never an older one.  (One that
     * began off it, a diverged log, may land below where the log was:
     * even when the history later grew the very entries that log held,
     * as a new leader appending what the old one had.) */
    if (sd->has_sink && d != l && s->mode[d] == M_FOLLOWER && sd->ok_valid &&
        sd->ok_hist && sd->start_on_hist &&
        now.st.applied < sd->ok.st.applied && on_history(s, &now) &&
        on_history(s, &sd->ok)) {
      fail(s, "dev%d: its log went back along the history from %llu to "
           "%llu", d, (unsigned long long)sd->ok.st.applied,
           (unsigned long long)now.st.applied);
    }
    if (sd->ended) {
      sd->ended = 0;
      sd->start_on_hist = 1;
    }
    if (s->t.verbose && sd->has_sink && sd->ok_valid &&
        !same_sstate(&now, &sd->ok)) {
      fprintf(stderr, "sim: dev%d (sink) log %llu (pruned %llu, %zu rows) "
              "-> %llu (pruned %llu, %zu rows), epoch %llu%s\n", d,
              (unsigned long long)sd->ok.st.applied,
              (unsigned long long)sd->ok.pruned, sd->ok.count,
              (unsigned long long)now.st.applied,
              (unsigned long long)now.pruned, now.count,
              (unsigned long long)now.st.epoch,
              on_history(s, &now) ? "" : ", off the history");
    }
    sd->ok = now;
    sd->ok_valid = 1;
    sd->ok_hist = on_history(s, &now);
  }
}

static void loop_found(sim *s, int d, const char *why) {
  stot.loops++;
  fail(s, "dev%d: snapshot loop: %s", d, why);
}

static void check_progress(sim *s, int d, const sp_event *ev) {
  const sp_snapshot_progress *p = ev->snapshot;

  if (p->bytes_done > p->bytes_total || p->chunks_done > p->chunk_count) {
    fail(s, "dev%d: snapshot progress %llu of %llu bytes, %llu of %llu "
         "chunks", d, (unsigned long long)p->bytes_done,
         (unsigned long long)p->bytes_total,
         (unsigned long long)p->chunks_done,
         (unsigned long long)p->chunk_count);
  }
  if (p->restarts > SP_SNAP_MAX_RESTARTS) {
    char why[96];
    snprintf(why, sizeof(why), "%u restarts in one recovery (at most %u)",
             p->restarts, SP_SNAP_MAX_RESTARTS);
    loop_found(s, d, why);
  }
}

static void on_installed(sim *s, int d, const sp_event *ev) {
  snapdev *sd = &g_sd[d];
  sp_store_state st = state_of(s, d);
  sp_seq at = ev->to_sequence;

  stot.installed++;
  stot.seeds += !g_seed_installed;
  g_seed_installed = 1;
  stot.resumed += ev->snapshot->resumes;
  stot.restarts += ev->snapshot->restarts;
  if ((st.applied != at || at > s->oracle_len ||
       memcmp(st.head_hash, s->oracle[at], SP_HASH_LEN) != 0) &&
      !unaware_divergence(s, d, &st)) {
    stot.half++;
    fail(s, "dev%d: snapshot installed at %llu, but its log stands at %llu "
         "%s the history's hash (len %llu)", d, (unsigned long long)at,
         (unsigned long long)st.applied,
         matches_oracle(s, &st) ? "with" : "without",
         (unsigned long long)s->oracle_len);
  }
  if (s->t.verbose) {
    fprintf(stderr, "sim: dev%d installed a snapshot at %llu (%llu bytes, "
            "%u resumes, %u restarts)\n", d, (unsigned long long)at,
            (unsigned long long)ev->snapshot->bytes_total,
            ev->snapshot->resumes, ev->snapshot->restarts);
  }
  sd->failed = 0;
  sd->too_large = 0;
  sd->ended = 1;
  /* As after the host's full sync: the log was replaced. */
  s->diverged[d] = 0;
  s->unaware[d] = 0;
  s->corrupted[d] = 0;
  writes_full_sync(s, d);
}

void snap_event(sim *s, int d, const sp_event *ev) {
  snapdev *sd = &g_sd[d];

  if (!sp.enabled) {
    return;
  }
  switch (ev->type) {
  case SP_EVENT_SYNC_REQUIRED_RECEIVED:
    if (!sd->has_sink) {
      break;
    }
    stot.recoveries++;
    {
      sstate x;
      read_sstate(s, d, &x);
      sd->start_on_hist = on_history(s, &x);
    }
    if (++sd->starts > LOOP_STARTS) {
      char why[96];
      snprintf(why, sizeof(why), "%d recoveries started without the leader "
               "pruning past it", sd->starts);
      loop_found(s, d, why);
    }
    break;
  case SP_EVENT_SNAPSHOT_PROGRESS:
    check_progress(s, d, ev);
    break;
  case SP_EVENT_SNAPSHOT_INSTALLED:
    check_progress(s, d, ev);
    on_installed(s, d, ev);
    break;
  case SP_EVENT_SNAPSHOT_FAILED:
    check_progress(s, d, ev);
    stot.failed++;
    stot.resumed += ev->snapshot->resumes;
    stot.restarts += ev->snapshot->restarts;
    sd->failed = 1;
    sd->too_large = ev->error_code == SP_ERR_SNAPSHOT_TOO_LARGE;
    stot.too_large += sd->too_large;
    if (s->t.verbose) {
      fprintf(stderr, "sim: dev%d snapshot recovery failed: %s (%s)\n", d,
              sp_err_name(ev->error_code),
              ev->message ? ev->message : "");
    }
    break;
  default:
    break;
  }
}

/* A new cause for a SyncRequired on device d (-1: every device). */
void snap_cause(sim *s, int d) {
  int k;

  for (k = 0; k < s->t.ndevs; ++k) {
    if (d < 0 || k == d) {
      g_sd[k].starts = 0;
    }
  }
}

void snap_crashed(sim *s, int d) {
  g_sd[d].dead = 0;
  g_sd[d].commit_fails = 0;
  g_sd[d].mid_sync = 0;
  snap_cause(s, d);
}

void snap_pruned(sim *s, sp_seq to) {
  int d;

  for (d = 0; d < s->t.ndevs; ++d) {
    if (state_of(s, d).applied < to) {
      g_sd[d].starts = 0;
    }
  }
}

/* A flipped byte in a chunk's data (or, rarer, in a manifest's hashes)
 * on the wire: the follower must refuse it and fetch again (or, for the
 * manifest, restart). */
int snap_wire_fault(sim *s, const sp_mem_delivery *d, sp_mem_verdict *v) {
  size_t body;
  sp_msg msg;

  if (!sp.enabled || !chance_ppm(s, sp.ppm_wire) ||
      d->len < SP_FRAME_HEADER_LEN) {
    return 0;
  }
  body = (size_t)d->data[0] << 24 | (size_t)d->data[1] << 16 |
         (size_t)d->data[2] << 8 | d->data[3];
  if (body + SP_FRAME_HEADER_LEN != d->len ||
      sp_decoder_decode(s->dec, d->data + SP_FRAME_HEADER_LEN, body, &msg) !=
          0) {
    return 0;
  }
  if (msg.type == SP_MSG_SNAPSHOT_CHUNK &&
      msg.u.snapshot_chunk.data_len > 0) {
    v->action = SP_MEM_CORRUPT;
    v->keep = (size_t)(msg.u.snapshot_chunk.data - d->data) +
              below(s, (unsigned)msg.u.snapshot_chunk.data_len);
  } else if (msg.type == SP_MSG_SNAPSHOT_MANIFEST &&
             msg.u.snapshot_manifest.chunk_count > 0 && chance(s, 3000)) {
    const sp_msg_snapshot_manifest *m = &msg.u.snapshot_manifest;
    v->action = SP_MEM_CORRUPT;
    v->keep = (size_t)(m->chunk_hashes - d->data) +
              below(s, (unsigned)(m->chunk_count * SP_HASH_LEN));
  } else {
    return 0;
  }
  stot.wire_corruptions++;
  return 1;
}

/* ---- liveness ---- */

/*
 * What recoveries add to the liveness bound once the faults stop: the
 * longest wait still ahead (a failure's backoff, which the waiting hosts
 * sit out; a restart's), then the restarts' backoffs a recovery may still
 * make (1 + 2 + 4 + 8 + 16 s), and two transfers of the leader's whole
 * log as a snapshot (one may be cut short by a restart): one round trip
 * per window of chunks, plus the request, manifest, verify and first
 * fetch, each possibly after a stall timeout.
 */
sp_duration snap_liveness(sim *s) {
  int l = leader_of(s), d, any = 0;
  sp_mem_store *ms = s->t.dev[l].store[LIB];
  sp_duration wait = 0, rtt = 2 * s->t.net_cfg.latency + MS, stall = 0;
  uint32_t window = SP_MAX_SNAPSHOT_WINDOW;
  uint64_t bytes = 4096, chunks;
  sp_store vt;
  sp_log_bounds b;
  sp_seq q;

  if (!sp.enabled) {
    return 0;
  }
  for (d = 0; d < s->t.ndevs; ++d) {
    const sp_handler *h = s->t.dev[d].h[LIB];
    const sp_handler_config *c = &s->t.dev[d].cfg[LIB];
    if (!g_sd[d].has_sink) {
      continue;
    }
    any = 1;
    window = c->snapshot_window < window ? c->snapshot_window : window;
    stall = c->stall_timeout > stall ? c->stall_timeout : stall;
    if (h && h->snap_fail_until > s->t.now &&
        h->snap_fail_until - s->t.now > wait) {
      wait = h->snap_fail_until - s->t.now;
    }
    if (h && h->snap_retry_armed && h->snap_retry_at > s->t.now &&
        h->snap_retry_at - s->t.now > wait) {
      wait = h->snap_retry_at - s->t.now;
    }
  }
  if (!any) {
    return 0;
  }
  sp_mem_store_get_vtable(ms, &vt);
  if (vt.bounds(&b, vt.user_data) == 0) {
    for (q = b.pruned_through + 1; q <= b.latest; ++q) {
      sp_entry e;
      if (sp_mem_store_get(ms, q, &e, NULL) == 0) {
        bytes += 103 + e.model_type_len + e.data_len;
      }
    }
  }
  bytes += (uint64_t)writes_pending(s) * 420 + 32u * 1024u;
  chunks = bytes / sp.chunk + 1;
  return wait + 31 * SP_SECONDS +
         2 * ((sp_duration)(chunks / window + 8) * rtt + 4 * stall);
}
