/*
 * sp_claim_handler_test.c: leadership that must be proven (issue 16,
 * docs/protocol.md section 15), at the handler: a leader steps down only
 * for a valid leadership claim of a higher epoch; a bare higher epoch, or
 * one "proven" by a claim the registry does not back, is refused with
 * SP_ERR_UNPROVEN_EPOCH; claims travel in Heartbeats and Errors, relayed
 * by followers, and never to a peer that did not ask for them.
 *
 * The cluster (sp_cluster.c) gives every device an identity and a registry
 * with device_key and may_lead; a forging follower writes its frames with
 * tc_inject into its own node's stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define MS SP_MILLISECONDS
#define LIB 0

/* ---- what the wire carried (the tap's frames) ---- */

typedef struct seen {
  /* The latest stream from device `from` to device `to` (+1; 0: none). */
  uint64_t stream[TC_MAX_DEVS][TC_MAX_DEVS];
  /* Error frames from -> to, with their last code and claim. */
  long errors[TC_MAX_DEVS][TC_MAX_DEVS];
  int32_t error_code[TC_MAX_DEVS][TC_MAX_DEVS];
  long errors_with_claim[TC_MAX_DEVS][TC_MAX_DEVS];
  long unproven[TC_MAX_DEVS][TC_MAX_DEVS];
  /* Heartbeats from -> to, and those carrying a claim (the last one). */
  long heartbeats[TC_MAX_DEVS][TC_MAX_DEVS];
  long heartbeats_with_claim[TC_MAX_DEVS][TC_MAX_DEVS];
  sp_leader_claim last_claim[TC_MAX_DEVS][TC_MAX_DEVS];
  /* Any frame at all from -> to that the fault hook let through. */
  long frames[TC_MAX_DEVS][TC_MAX_DEVS];
  /* Devices whose deliveries both ways are dropped (-1: none), and how
   * many frames were. */
  int block_a, block_b;
  long dropped;
} seen;

static seen W;

static int blocked(const seen *w, int from, int to) {
  return (from == w->block_a && to == w->block_b) ||
         (from == w->block_b && to == w->block_a);
}

static void on_msg(tc *t, int from, int to, uint64_t stream,
                   const sp_msg *m) {
  (void)t;
  if (to < 0 || from < 0) {
    return;
  }
  if (blocked(&W, from, to)) {
    W.dropped++;
    return;
  }
  W.stream[from][to] = stream + 1;
  W.frames[from][to]++;
  if (m->type == SP_MSG_ERROR) {
    W.errors[from][to]++;
    W.error_code[from][to] = m->u.error.code;
    W.unproven[from][to] += m->u.error.code == SP_ERR_UNPROVEN_EPOCH;
    if (m->u.error.has_claim) {
      W.errors_with_claim[from][to]++;
      W.last_claim[from][to] = m->u.error.claim;
    }
  } else if (m->type == SP_MSG_HEARTBEAT) {
    W.heartbeats[from][to]++;
    if (m->u.heartbeat.has_claim) {
      W.heartbeats_with_claim[from][to]++;
      W.last_claim[from][to] = m->u.heartbeat.claim;
    }
  }
}

static int fault(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  int from = -1, to = -1, i;

  for (i = 0; i < t->ndevs; ++i) {
    if (sp_uuid_equal(&d->from, &t->dev[i].id)) {
      from = i;
    }
    if (sp_uuid_equal(&d->to, &t->dev[i].id)) {
      to = i;
    }
  }
  if (blocked(&W, from, to)) {
    v->action = SP_MEM_DROP;
  }
  return 0;
}

static void start(tc *t, int ndevs) {
  int i;

  memset(&W, 0, sizeof(W));
  W.block_a = W.block_b = -1;
  assert_int_equal(tc_init(t, ndevs, 1, 1 * MS, NULL), 0);
  t->on_msg = on_msg;
  t->fault = fault;
  for (i = 0; i < ndevs; ++i) {
    tc_default_cfg(t, i, LIB, SP_ROLE_FOLLOWER);
  }
}

static int same_claim(const sp_leader_claim *a, const sp_leader_claim *b) {
  return a->epoch == b->epoch && sp_uuid_equal(&a->leader, &b->leader) &&
         memcmp(a->signature, b->signature, SP_CLAIM_SIG_LEN) == 0;
}

/* `dev` leads and has not stepped down, at `epoch`. */
static void still_leads(tc *t, int dev, uint64_t epoch) {
  sp_handler_status hs;

  assert_int_equal(sp_handler_get_status(t->dev[dev].h[LIB], &hs), 0);
  assert_int_equal(hs.role, SP_ROLE_LEADER);
  assert_int_equal(hs.epoch, epoch);
  assert_false(hs.stepped_down);
  assert_int_equal(t->dev[dev].counts.ev[SP_EVENT_STEPPED_DOWN], 0);
}

/* The stream `from` -> `to` the tap saw last. */
static uint64_t stream_of(int from, int to) {
  assert_true(W.stream[from][to] != 0);
  return W.stream[from][to] - 1;
}

/* A Heartbeat as a follower at `epoch` writes it, with a claim if `c`. */
static sp_msg forged_hb(tc *t, uint64_t epoch, const sp_leader_claim *c) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = t->lib[LIB];
  m.epoch = epoch;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_CLAIMS;
  if (c) {
    m.u.heartbeat.has_claim = 1;
    m.u.heartbeat.claim = *c;
  }
  return m;
}

/* Device `dev` writes `m` into its stream to the leader `L`: the last
 * one its node sent on (after a refusal closed one, its node reconnects
 * and resumes on a new one first). */
static void forge(tc *t, int dev, int L, const sp_msg *m) {
  tc_run_for(t, 2 * SP_SECONDS);
  assert_int_equal(tc_inject(t, dev, stream_of(dev, L), m), 0);
  tc_run_for(t, 100 * MS);
}

/* ---- (1) a bare higher epoch ---- */

enum { A = 0, F = 1, M = 2, N = 3 };

/* A paired follower writes epoch + 1 with no claim: the leader refuses it
 * (UNPROVEN_EPOCH, the Error with the leader's own claim, since the
 * follower advertised claims), does not step down, and the honest
 * follower keeps syncing.  An Error frame with epoch + 1 only closes its
 * stream. */
static void test_bare_epoch_refused(void **state) {
  tc t;
  sp_msg m;
  sp_leader_claim own;
  long lost;

  (void)state;
  start(&t, 3);
  assert_int_equal(tc_open(&t, A, LIB), 0);
  assert_int_equal(tc_open(&t, F, LIB), 0);
  assert_int_equal(tc_open(&t, M, LIB), 0);
  tc_append(&t, LIB, 20, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  assert_int_equal(sp_handler_leader_claim(t.dev[A].h[LIB], &own), 0);
  assert_int_equal(own.epoch, 1);
  assert_true(sp_uuid_equal(&own.leader, &t.dev[A].id));

  m = forged_hb(&t, 2, NULL);
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.unproven[A][M], 1);
  assert_int_equal(W.error_code[A][M], SP_ERR_UNPROVEN_EPOCH);
  assert_int_equal(t.dev[M].counts.last_error, SP_ERR_UNPROVEN_EPOCH);
  assert_int_equal(W.errors_with_claim[A][M], 1);
  assert_true(same_claim(&W.last_claim[A][M], &own));

  /* An Error frame: no Error answers it, the stream just closes. */
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ERROR;
  m.library_id = t.lib[LIB];
  m.epoch = 7;
  m.u.error.code = SP_ERR_STALE_EPOCH;
  m.u.error.message = "fenced";
  m.u.error.message_len = 6;
  lost = t.dev[M].counts.ev[SP_EVENT_PEER_LOST];
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.errors[A][M], 1);
  assert_true(t.dev[M].counts.ev[SP_EVENT_PEER_LOST] > lost);
  assert_int_equal(t.dev[M].counts.last_lost, SP_ERR_PEER_ERROR);

  /* The honest follower (and the forger's own node) keep syncing. */
  tc_append(&t, LIB, 20, 16);
  assert_true(tc_converge(&t, LIB, 5 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, F, LIB), 40);
  assert_true(tc_is_prefix(&t, F, LIB));
  still_leads(&t, A, 1);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- (2) claims the registry does not back ---- */

/* Claims signed by a member that may not lead, by a non-member, with a
 * signature that does not verify, or for no higher epoch: each refused
 * UNPROVEN_EPOCH, no step-down.  Then a claim that is valid (a member
 * that may lead signed it) deposes the leader: the refusals were not for
 * the frame's shape. */
static void test_bad_claims_refused(void **state) {
  tc t;
  sp_msg m;
  sp_leader_claim c, held;

  (void)state;
  start(&t, 4);
  t.dev[M].may_lead[LIB] = 0;
  t.dev[N].member[LIB] = 0;
  assert_int_equal(tc_open(&t, A, LIB), 0);
  assert_int_equal(tc_open(&t, F, LIB), 0);
  assert_int_equal(tc_open(&t, M, LIB), 0);
  tc_append(&t, LIB, 10, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));

  /* Signed by the forger itself, which may not lead. */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[M].identity, &t.lib[LIB], 2), 0);
  m = forged_hb(&t, 2, &c);
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.unproven[A][M], 1);

  /* By a member that may lead, the signature altered. */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[F].identity, &t.lib[LIB], 2), 0);
  c.signature[SP_CLAIM_SIG_LEN - 1] ^= 0x20;
  m = forged_hb(&t, 2, &c);
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.unproven[A][M], 2);

  /* By a device with a key the registry knows, but no member. */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[N].identity, &t.lib[LIB], 2), 0);
  m = forged_hb(&t, 2, &c);
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.unproven[A][M], 3);

  /* F's own signature, but claiming leadership under another device's
   * name (the key of `leader` does not verify it). */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[F].identity, &t.lib[LIB], 2), 0);
  c.leader = t.dev[A].id;
  m = forged_hb(&t, 2, &c);
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.unproven[A][M], 4);

  /* A valid claim, but of the leader's own epoch, under a higher one. */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[F].identity, &t.lib[LIB], 1), 0);
  m = forged_hb(&t, 2, &c);
  forge(&t, M, A, &m);
  still_leads(&t, A, 1);
  assert_int_equal(W.unproven[A][M], 5);

  /* Syncing went on through all of it. */
  tc_append(&t, LIB, 10, 16);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  assert_true(tc_is_prefix(&t, F, LIB));

  /* The control: F signed that it leads at 2 (whoever carries it). */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[F].identity, &t.lib[LIB], 2), 0);
  m = forged_hb(&t, 2, &c);
  forge(&t, M, A, &m);
  assert_int_equal(t.dev[A].counts.ev[SP_EVENT_STEPPED_DOWN], 1);
  assert_int_equal(t.dev[A].counts.last_epoch, 2);
  assert_true(sp_uuid_equal(&t.dev[A].counts.last_leader, &t.dev[F].id));
  assert_int_equal(sp_handler_leader_claim(t.dev[A].h[LIB], &held), 0);
  assert_true(same_claim(&held, &c));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- the follower's side ---- */

/* A Heartbeat as the leader at `epoch` writes it, with claim `c`. */
static sp_msg leader_hb(tc *t, uint64_t epoch, const sp_leader_claim *c) {
  sp_msg m = forged_hb(t, epoch, c);

  m.u.heartbeat.role = SP_ROLE_LEADER;
  m.u.heartbeat.current_sequence = tc_latest(t, LIB);
  return m;
}

/* A follower keeps the newest valid claim it is shown; an invalid one
 * (by a member that may not lead) is ignored, and it does not stop
 * syncing from its leader for it; an older one changes nothing. */
static void test_follower_keeps_valid_claims(void **state) {
  tc t;
  sp_msg m;
  sp_leader_claim c, held, own;

  (void)state;
  start(&t, 3);
  t.dev[M].may_lead[LIB] = 0;
  assert_int_equal(tc_open(&t, A, LIB), 0);
  assert_int_equal(tc_open(&t, F, LIB), 0);
  tc_append(&t, LIB, 10, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  assert_int_equal(sp_handler_leader_claim(t.dev[A].h[LIB], &own), 0);
  assert_int_equal(sp_handler_leader_claim(t.dev[F].h[LIB], &held), 0);
  assert_true(same_claim(&held, &own));

  /* Its leader's stream shows a claim by M, which may not lead. */
  assert_int_equal(
      sp_leader_claim_sign(&c, t.dev[M].identity, &t.lib[LIB], 5), 0);
  m = leader_hb(&t, 1, &c);
  assert_int_equal(tc_inject(&t, A, stream_of(A, F), &m), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(sp_handler_leader_claim(t.dev[F].h[LIB], &held), 0);
  assert_true(same_claim(&held, &own));

  /* A valid one of a higher epoch (M may lead now): kept. */
  t.dev[M].may_lead[LIB] = 1;
  assert_int_equal(tc_inject(&t, A, stream_of(A, F), &m), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(sp_handler_leader_claim(t.dev[F].h[LIB], &held), 0);
  assert_true(same_claim(&held, &c));

  /* Its leader's own, older, claim again: the newer one stays. */
  m = leader_hb(&t, 1, &own);
  assert_int_equal(tc_inject(&t, A, stream_of(A, F), &m), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(sp_handler_leader_claim(t.dev[F].h[LIB], &held), 0);
  assert_true(same_claim(&held, &c));

  /* Syncing never stopped. */
  tc_append(&t, LIB, 10, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, F, LIB), 20);
  assert_int_equal(t.dev[F].counts.ev[SP_EVENT_PEER_LOST], 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- (3) a new leader's refusal deposes the old one ---- */

enum { OLD = 0, NEW = 1, FOL = 2 };

/* B becomes leader at epoch 2 (sp_handler_set_role) while A still leads
 * at 1.  A's dial to B is refused STALE_EPOCH with B's claim: A steps
 * down naming B, and holds B's claim.  The follower follows B. */
static void test_new_leader_deposes_old(void **state) {
  tc t;
  sp_leader_claim a_held, b_own, f_held;
  sp_handler_status hs;

  (void)state;
  start(&t, 3);
  assert_int_equal(tc_open(&t, OLD, LIB), 0);
  assert_int_equal(tc_open(&t, NEW, LIB), 0);
  assert_int_equal(tc_open(&t, FOL, LIB), 0);
  tc_append(&t, LIB, 10, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  /* The follower holds A's claim, from A's answer to its features. */
  assert_int_equal(sp_handler_leader_claim(t.dev[FOL].h[LIB], &f_held), 0);
  assert_int_equal(f_held.epoch, 1);

  t.leader[LIB] = NEW;
  assert_int_equal(
      sp_handler_set_role(t.dev[NEW].h[LIB], SP_ROLE_LEADER, 2, t.now), 0);
  assert_int_equal(sp_handler_leader_claim(t.dev[NEW].h[LIB], &b_own), 0);
  assert_int_equal(b_own.epoch, 2);
  assert_true(sp_uuid_equal(&b_own.leader, &t.dev[NEW].id));
  tc_run_for(&t, 5 * SP_SECONDS);

  assert_int_equal(t.dev[OLD].counts.ev[SP_EVENT_STEPPED_DOWN], 1);
  assert_int_equal(t.dev[OLD].counts.last_epoch, 2);
  assert_true(sp_uuid_equal(&t.dev[OLD].counts.last_leader, &t.dev[NEW].id));
  assert_int_equal(sp_handler_get_status(t.dev[OLD].h[LIB], &hs), 0);
  assert_true(hs.stepped_down);
  assert_int_equal(sp_handler_leader_claim(t.dev[OLD].h[LIB], &a_held), 0);
  assert_true(same_claim(&a_held, &b_own));
  /* The proof came in B's refusal of A's dial. */
  assert_true(W.errors_with_claim[NEW][OLD] >= 1);
  assert_true(same_claim(&W.last_claim[NEW][OLD], &b_own));
  still_leads(&t, NEW, 2);

  /* The host makes A a follower: it keeps B's claim (to relay) and
   * follows B; the follower syncs from B and relays B's claim in its
   * heartbeats. */
  assert_int_equal(
      sp_handler_set_role(t.dev[OLD].h[LIB], SP_ROLE_FOLLOWER, 0, t.now), 0);
  assert_int_equal(sp_handler_leader_claim(t.dev[OLD].h[LIB], &a_held), 0);
  assert_true(same_claim(&a_held, &b_own));
  tc_append(&t, LIB, 10, 16);
  assert_true(tc_converge(&t, LIB, 5 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, FOL, LIB), 20);
  assert_int_equal(tc_applied(&t, OLD, LIB), 20);
  assert_true(tc_is_prefix(&t, OLD, LIB));
  assert_int_equal(sp_handler_leader_claim(t.dev[FOL].h[LIB], &f_held), 0);
  assert_true(same_claim(&f_held, &b_own));
  tc_run_for(&t, 31 * SP_SECONDS); /* a heartbeat of the follower's */
  assert_true(W.heartbeats_with_claim[FOL][NEW] >= 1);
  assert_true(same_claim(&W.last_claim[FOL][NEW], &b_own));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- (7) a new leader whose only path to the old one is its own dial ---- */

/* Streams between OLD and NEW that OLD opened (the first frame on them is
 * OLD's) are dropped: OLD cannot reach NEW (NEW's address unknown to it),
 * and no follower carries a claim between them. */
static uint64_t one_way_ok[64], one_way_bad[64];
static size_t n_ok, n_bad;

static int seen_in(const uint64_t *ids, size_t n, uint64_t id) {
  size_t i;

  for (i = 0; i < n; ++i) {
    if (ids[i] == id) {
      return 1;
    }
  }
  return 0;
}

static int one_way_fault(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  int old_new = sp_uuid_equal(&d->from, &t->dev[OLD].id) &&
                sp_uuid_equal(&d->to, &t->dev[NEW].id);
  int new_old = sp_uuid_equal(&d->from, &t->dev[NEW].id) &&
                sp_uuid_equal(&d->to, &t->dev[OLD].id);

  if ((!old_new && !new_old) || seen_in(one_way_ok, n_ok, d->stream_id)) {
    return 0;
  }
  if (new_old && !seen_in(one_way_bad, n_bad, d->stream_id)) {
    assert_true(n_ok < 64);
    one_way_ok[n_ok++] = d->stream_id;
    return 0;
  }
  if (!seen_in(one_way_bad, n_bad, d->stream_id)) {
    assert_true(n_bad < 64);
    one_way_bad[n_bad++] = d->stream_id;
  }
  v->action = SP_MEM_DROP;
  return 0;
}

/* NEW leads at 2 and can reach OLD (leading at 1) only by dialing it.
 * Its first dial opens with the seed's Heartbeat (NEW does not know yet
 * that OLD reads claims): OLD refuses it UNPROVEN_EPOCH, with its own
 * claim.  That refusal shows NEW that OLD reads claims, so NEW's next
 * dial opens with features and NEW's claim, and OLD steps down on that
 * first frame: one refusal, not one per redial. */
static void test_new_leader_dials_old(void **state) {
  tc t;
  sp_leader_claim b_own, a_held;
  seen before;
  int i;

  (void)state;
  start(&t, 2);
  n_ok = n_bad = 0;
  assert_int_equal(tc_open(&t, OLD, LIB), 0);
  assert_int_equal(tc_open(&t, NEW, LIB), 0);
  tc_append(&t, LIB, 5, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));

  t.fault = one_way_fault;
  t.leader[LIB] = NEW;
  assert_int_equal(
      sp_handler_set_role(t.dev[NEW].h[LIB], SP_ROLE_LEADER, 2, t.now), 0);
  assert_int_equal(sp_handler_leader_claim(t.dev[NEW].h[LIB], &b_own), 0);
  /* What NEW sent as OLD's follower (relaying OLD's claim) is not
   * counted: from here on, up to the step-down. */
  before = W;
  for (i = 0; i < 200 && !t.dev[OLD].counts.ev[SP_EVENT_STEPPED_DOWN];
       ++i) {
    tc_run_for(&t, 100 * MS);
  }

  assert_int_equal(t.dev[OLD].counts.ev[SP_EVENT_STEPPED_DOWN], 1);
  assert_int_equal(t.dev[OLD].counts.last_epoch, 2);
  assert_true(sp_uuid_equal(&t.dev[OLD].counts.last_leader, &t.dev[NEW].id));
  assert_int_equal(sp_handler_leader_claim(t.dev[OLD].h[LIB], &a_held), 0);
  assert_true(same_claim(&a_held, &b_own));
  /* The bound: exactly one refusal (of the first, seed-shaped, dial),
   * which carried OLD's claim; then one opening Heartbeat with NEW's. */
  assert_int_equal(W.unproven[OLD][NEW] - before.unproven[OLD][NEW], 1);
  assert_int_equal(
      W.errors_with_claim[OLD][NEW] - before.errors_with_claim[OLD][NEW], 1);
  assert_int_equal(W.heartbeats_with_claim[NEW][OLD] -
                       before.heartbeats_with_claim[NEW][OLD],
                   1);
  assert_true(same_claim(&W.last_claim[NEW][OLD], &b_own));
  assert_int_equal(W.heartbeats[NEW][OLD] - before.heartbeats[NEW][OLD], 2);
  /* OLD never got a frame of its own through to NEW. */
  assert_true(n_bad >= 1);
  still_leads(&t, NEW, 2);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- (4) relay ---- */

/* A and B never exchange a frame.  B leads at 2; the follower meets B and
 * holds its claim; A dials the follower, which refuses it (NOT_LEADER)
 * with B's claim: A steps down, naming B. */
static void test_follower_relays_claim(void **state) {
  tc t;
  sp_leader_claim a_held, b_own;

  (void)state;
  start(&t, 3);
  W.block_a = OLD;
  W.block_b = NEW;
  assert_int_equal(tc_open(&t, OLD, LIB), 0);
  assert_int_equal(tc_open(&t, FOL, LIB), 0);
  tc_run_for(&t, 2 * SP_SECONDS);
  assert_int_equal(t.dev[FOL].counts.ev[SP_EVENT_PEER_CONNECTED], 1);

  t.leader[LIB] = NEW;
  assert_int_equal(tc_open_as(&t, NEW, LIB, SP_ROLE_LEADER, 2), 0);
  assert_int_equal(sp_handler_leader_claim(t.dev[NEW].h[LIB], &b_own), 0);
  tc_run_for(&t, 10 * SP_SECONDS);

  assert_int_equal(t.dev[OLD].counts.ev[SP_EVENT_STEPPED_DOWN], 1);
  assert_int_equal(t.dev[OLD].counts.last_epoch, 2);
  assert_true(sp_uuid_equal(&t.dev[OLD].counts.last_leader, &t.dev[NEW].id));
  assert_int_equal(sp_handler_leader_claim(t.dev[OLD].h[LIB], &a_held), 0);
  assert_true(same_claim(&a_held, &b_own));
  /* Never a word between them (both dialed, nothing got through); the
   * follower carried the proof. */
  assert_true(W.dropped >= 2);
  assert_int_equal(W.frames[NEW][OLD] + W.frames[OLD][NEW], 0);
  assert_true(W.errors_with_claim[FOL][OLD] >= 1);
  assert_true(same_claim(&W.last_claim[FOL][OLD], &b_own));
  still_leads(&t, NEW, 2);
  tc_append(&t, LIB, 5, 16);
  tc_run_for(&t, SP_SECONDS);
  assert_int_equal(tc_applied(&t, FOL, LIB), 5);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- (5) a leader without an identity ---- */

static int one_member(const sp_uuid *lib, const sp_uuid *dev, int *yes,
                      void *ud) {
  (void)lib;
  (void)dev;
  (void)ud;
  *yes = 1;
  return 0;
}

static int no_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)lib;
  (void)leader;
  (void)ud;
  return SP_ERR_NOT_FOUND;
}

static int no_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                      size_t *count, void *ud) {
  (void)lib;
  (void)out;
  (void)cap;
  (void)ud;
  *count = 0;
  return 0;
}

/* Node configs: version 1 has no identity (whatever the later bytes
 * say); version 2's must be the node's own device. */
static void check_node_identity_config(tc *t) {
  sp_node_config cfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr;
  sp_uuid id = {{0xee, 1}};
  sp_node *node = NULL;
  sp_handler *h = NULL;
  sp_handler_config hc;
  sp_mem_store *ms;
  sp_store st;
  sp_leader_claim c;

  assert_int_equal(sp_mem_net_add_device(t->net, &id, &tr), 0);
  reg.is_member = one_member;
  reg.leader = no_leader;
  reg.members = no_members;
  sp_node_config_default(&cfg);
  assert_int_equal(cfg.version, 2);
  assert_null(cfg.identity);
  cfg.device_id = id;
  /* Another device's key: refused. */
  cfg.identity = t->dev[0].identity;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &tr, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  /* The same bytes as a version-1 config: no identity is read. */
  cfg.version = 1;
  assert_int_equal(sp_node_new(&node, &cfg, &reg, NULL, &tr, NULL), 0);
  assert_int_equal(sp_mem_store_new(&ms, NULL), 0);
  sp_mem_store_get_vtable(ms, &st);
  sp_handler_config_default(&hc);
  hc.library_id = t->lib[LIB];
  assert_int_equal(sp_handler_new(&h, node, &hc, &st, t->now), 0);
  assert_int_equal(sp_handler_role(h), SP_ROLE_LEADER);
  assert_int_equal(sp_handler_leader_claim(h, &c), SP_ERR_NOT_FOUND);
  assert_int_equal(sp_handler_leader_claim(h, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_handler_leader_claim(NULL, &c),
                   SP_ERR_INVALID_ARGUMENT);
  sp_node_del(node);
  sp_mem_store_del(ms);
}

/* A leader without an identity leads, and is followed (its followers know
 * it from the registry); it holds no claim and writes none. */
static void test_leader_without_identity(void **state) {
  tc t;
  sp_leader_claim c;

  (void)state;
  start(&t, 2);
  check_node_identity_config(&t);
  tc_crash(&t, A);
  sp_identity_del(t.dev[A].identity);
  t.dev[A].identity = NULL; /* the registry knows no key for it either */
  assert_int_equal(tc_boot(&t, A), 0);
  assert_int_equal(tc_open(&t, A, LIB), 0);
  assert_int_equal(tc_open(&t, F, LIB), 0);
  tc_append(&t, LIB, 30, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  tc_run_for(&t, 65 * SP_SECONDS); /* heartbeats both ways */
  tc_append(&t, LIB, 5, 16);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  assert_int_equal(tc_applied(&t, F, LIB), 35);
  still_leads(&t, A, 1);
  assert_int_equal(sp_handler_leader_claim(t.dev[A].h[LIB], &c),
                   SP_ERR_NOT_FOUND);
  assert_int_equal(sp_handler_leader_claim(t.dev[F].h[LIB], &c),
                   SP_ERR_NOT_FOUND);
  assert_true(W.heartbeats[A][F] >= 2);
  assert_int_equal(W.heartbeats_with_claim[A][F], 0);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* ---- (6) a seed-only follower ---- */

enum { S = 1 };

typedef struct capture {
  uint64_t stream;
  /* Capture every stream from A to S (the leader's own dials). */
  int any;
  uint8_t buf[64 * 1024];
  size_t len;
} capture;

static capture CAP;

static int capture_fault(tc *t, const sp_mem_delivery *d, sp_mem_verdict *v) {
  (void)v;
  if (sp_uuid_equal(&d->from, &t->dev[A].id) &&
      sp_uuid_equal(&d->to, &t->dev[S].id) &&
      (CAP.any || d->stream_id == CAP.stream) &&
      CAP.len + d->len <= sizeof(CAP.buf)) {
    memcpy(CAP.buf + CAP.len, d->data, d->len);
    CAP.len += d->len;
  }
  return 0;
}

static sp_msg seed_msg(tc *t, sp_msg_type type, uint64_t epoch) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = type;
  m.library_id = t->lib[LIB];
  m.epoch = epoch;
  return m;
}

typedef struct decoded {
  int hbs, hbs_with_features, errs, pages;
} decoded;

/* Decode what the leader sent on the captured stream: no frame carries a
 * claim; Heartbeats have `hb_elems` elements, Errors the seed's 5. */
static void check_capture(int hb_elems, decoded *out) {
  sp_frame_reader *rd;
  sp_decoder *dec;
  sp_msg m;
  size_t off = 0;

  memset(out, 0, sizeof(*out));
  assert_int_equal(sp_frame_reader_new(&rd, SP_MAX_FRAME_LIMIT, NULL), 0);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  while (off < CAP.len) {
    const uint8_t *body;
    size_t blen;
    sp_ssize n = sp_frame_reader_read(rd, CAP.buf + off, CAP.len - off,
                                      &body, &blen);
    assert_true(n > 0);
    off += (size_t)n;
    if (!body) {
      continue;
    }
    assert_int_equal(sp_decoder_decode(dec, body, blen, &m), 0);
    if (m.type == SP_MSG_HEARTBEAT) {
      /* A msgpack fixarray: 0x90 + its element count. */
      assert_int_equal(body[0], 0x90 + hb_elems);
      assert_false(m.u.heartbeat.has_claim);
      out->hbs++;
      out->hbs_with_features += m.u.heartbeat.has_features;
    } else if (m.type == SP_MSG_ERROR) {
      assert_int_equal(body[0], 0x95);
      assert_false(m.u.error.has_claim);
      assert_int_equal(m.u.error.code, SP_ERR_UNPROVEN_EPOCH);
      out->errs++;
    } else if (m.type == SP_MSG_ENTRIES_RESPONSE) {
      out->pages++;
    }
  }
  sp_decoder_del(dec);
  sp_frame_reader_del(rd);
}

/* A peer that speaks only the seed's messages (no features, so it never
 * asked for claims) gets the seed's bytes from a leader that holds a
 * claim: 5-element Heartbeats and Errors, no claim element, even when it
 * is refused for an epoch no claim proves.  A peer of a build before
 * claims (it advertises writes only) gets the 8-element Heartbeats of
 * that build, no claim. */
static void test_seed_only_follower_gets_no_claim(void **state) {
  tc t;
  sp_transport *tr;
  sp_leader_claim own;
  sp_msg m;
  decoded dc;

  (void)state;
  start(&t, 2);
  memset(&CAP, 0, sizeof(CAP));
  t.fault = capture_fault;
  assert_int_equal(tc_open(&t, A, LIB), 0);
  assert_int_equal(sp_handler_leader_claim(t.dev[A].h[LIB], &own), 0);
  tc_append(&t, LIB, 8, 16);
  /* S's node has no handler: its stream is written by hand. */
  tr = &t.dev[S].tr;
  assert_int_equal(tr->open_stream(&t.dev[A].id, &t.lib[LIB], &CAP.stream,
                                   tr->user_data),
                   0);
  tc_run_for(&t, 10 * MS);
  m = seed_msg(&t, SP_MSG_FETCH_ENTRIES, 1);
  m.u.fetch_entries.limit = 100;
  assert_int_equal(tc_inject(&t, S, CAP.stream, &m), 0);
  tc_run_for(&t, 100 * MS);
  m = seed_msg(&t, SP_MSG_HEARTBEAT, 1);
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.current_sequence = 8;
  assert_int_equal(tc_inject(&t, S, CAP.stream, &m), 0);
  tc_run_for(&t, 35 * SP_SECONDS); /* the leader's heartbeat is due */
  m = seed_msg(&t, SP_MSG_ACKNOWLEDGE, 2); /* a bare higher epoch */
  m.u.acknowledge.up_to_sequence = 8;
  assert_int_equal(tc_inject(&t, S, CAP.stream, &m), 0);
  tc_run_for(&t, 100 * MS);
  still_leads(&t, A, 1);
  check_capture(5, &dc);
  assert_true(dc.pages >= 1);
  assert_true(dc.hbs >= 1);
  assert_int_equal(dc.hbs_with_features, 0);
  assert_int_equal(dc.errs, 1);

  /* A peer of the build before claims: features without the bit. */
  CAP.len = 0;
  assert_int_equal(tr->open_stream(&t.dev[A].id, &t.lib[LIB], &CAP.stream,
                                   tr->user_data),
                   0);
  tc_run_for(&t, 10 * MS);
  m = seed_msg(&t, SP_MSG_HEARTBEAT, 1);
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.current_sequence = 8;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_WRITES;
  assert_int_equal(tc_inject(&t, S, CAP.stream, &m), 0);
  tc_run_for(&t, 35 * SP_SECONDS);
  still_leads(&t, A, 1);
  check_capture(8, &dc);
  assert_true(dc.hbs >= 2); /* the answer to its features, then one due */
  assert_int_equal(dc.hbs_with_features, dc.hbs);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* The first frame the leader sent on its captured dials: the element
 * count of its opening Heartbeat (0 if none was captured). */
static int opening_hb_elems(void) {
  sp_frame_reader *rd;
  sp_decoder *dec;
  sp_msg m;
  const uint8_t *body = NULL;
  size_t blen = 0;
  int elems = 0;

  assert_int_equal(sp_frame_reader_new(&rd, SP_MAX_FRAME_LIMIT, NULL), 0);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  if (CAP.len > 0) {
    sp_ssize n = sp_frame_reader_read(rd, CAP.buf, CAP.len, &body, &blen);
    assert_true(n > 0);
    assert_non_null(body);
    assert_int_equal(sp_decoder_decode(dec, body, blen, &m), 0);
    assert_int_equal(m.type, SP_MSG_HEARTBEAT);
    assert_int_equal(m.u.heartbeat.role, SP_ROLE_LEADER);
    elems = body[0] - 0x90;
    assert_int_equal(m.u.heartbeat.has_claim, elems == 9);
  }
  sp_decoder_del(dec);
  sp_frame_reader_del(rd);
  return elems;
}

/* A device that once showed it reads claims gets the leader's claim in
 * the opening Heartbeat of the leader's dials; rolled back to a seed-only
 * build (a FetchEntries without features), it gets the seed's 5 elements
 * again from the next dial on. */
static void test_rolled_back_device_gets_seed_bytes(void **state) {
  tc t;
  sp_transport *tr;
  uint64_t st;
  sp_msg m;

  (void)state;
  start(&t, 2);
  memset(&CAP, 0, sizeof(CAP));
  t.fault = capture_fault;
  assert_int_equal(tc_open(&t, A, LIB), 0);
  tr = &t.dev[S].tr;

  /* A stream of this build: features with the claims bit. */
  assert_int_equal(tr->open_stream(&t.dev[A].id, &t.lib[LIB], &st,
                                   tr->user_data), 0);
  m = seed_msg(&t, SP_MSG_HEARTBEAT, 1);
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURE_CLAIMS;
  assert_int_equal(tc_inject(&t, S, st, &m), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(tr->close_stream(st, 0, tr->user_data), 0);
  CAP.any = 1;
  CAP.len = 0;
  tc_run_for(&t, 120 * SP_SECONDS); /* the leader dials S again */
  assert_int_equal(opening_hb_elems(), 9);

  /* The same device, rolled back: a seed FetchEntries, no features. */
  CAP.any = 0;
  assert_int_equal(tr->open_stream(&t.dev[A].id, &t.lib[LIB], &st,
                                   tr->user_data), 0);
  m = seed_msg(&t, SP_MSG_FETCH_ENTRIES, 1);
  m.u.fetch_entries.limit = 100;
  assert_int_equal(tc_inject(&t, S, st, &m), 0);
  tc_run_for(&t, 100 * MS);
  assert_int_equal(tr->close_stream(st, 0, tr->user_data), 0);
  CAP.any = 1;
  CAP.len = 0;
  tc_run_for(&t, 300 * SP_SECONDS);
  assert_int_equal(opening_hb_elems(), 5);
  still_leads(&t, A, 1);
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bare_epoch_refused),
      cmocka_unit_test(test_bad_claims_refused),
      cmocka_unit_test(test_follower_keeps_valid_claims),
      cmocka_unit_test(test_new_leader_deposes_old),
      cmocka_unit_test(test_new_leader_dials_old),
      cmocka_unit_test(test_follower_relays_claim),
      cmocka_unit_test(test_leader_without_identity),
      cmocka_unit_test(test_seed_only_follower_gets_no_claim),
      cmocka_unit_test(test_rolled_back_device_gets_seed_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
