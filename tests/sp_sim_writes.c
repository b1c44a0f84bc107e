/*
 * sp_sim_writes.c: the fault simulation's write path (sp_sim.h).
 *
 * Devices submit (sp_handler_submit) while every fault of sp_sim.c runs,
 * the leader's host admits, refuses or replaces, and the faults of the
 * write path strike: a follower crashing between its outbox write and the
 * send, the leader crashing between its append and its answer, the
 * leader's store failing appends, failovers with submissions in flight.
 * Every step checks the invariants below; after convergence every
 * submission is checked against the final history (docs/testing.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp_sim.h"

/*
 * Devices submit (sp_handler_submit) while every fault runs.  Each
 * submission gets an index k, written into its record_id (the tag): a
 * host's REPLACE keeps the record, and an outbox anchor may renumber an
 * origin id before it is first sent, so the tag is what follows a
 * submission through outbox, wire, admission and logs.  The history
 * (hist_tag) says which submission each sequence the current leader
 * serves carries; a failover truncates it with the oracle.
 */

enum { W_ACCEPT, W_REFUSE, W_REPLACE, W_BAD_REPLACE };

typedef struct wsub {
  int dev;
  /* Its origin id now; digest of what was submitted and of the host's
   * replacement; what the leader's host decides about it, and the code
   * the proposer must then see. */
  uint64_t origin;
  uint64_t digest, alt_digest;
  int decision, expect_code;
  /* W_REFUSE: the code and message (0 none, 1 short, 2 over the limit)
   * the host gives. */
  int host_code, msg_kind;
  /* sp_handler_submit returned 0; the device was a leader then. */
  int live, leader_side;
  /* SUBMISSION_REFUSED seen; SUBMISSION_COMMITTED seen on a follower of
   * the current history (final: no failover may lose it). */
  int refused, final;
  /* Times the current history holds it. */
  int hist;
  /* A failover cut it from the history when its device held no copy
   * (neither in its outbox nor in its log): the step, for the message of
   * the loss that follows. */
  int nocopy_step;
} wsub;

wtotals wtot;

#define TAG0 0x5e
#define TAG1 0x17
#define TAG15 0xa5

static void tag_set(sp_uuid *r, size_t k, int dev) {
  memset(r, 0, sizeof(*r));
  r->bytes[0] = TAG0;
  r->bytes[1] = TAG1;
  r->bytes[2] = (uint8_t)k;
  r->bytes[3] = (uint8_t)(k >> 8);
  r->bytes[4] = (uint8_t)(k >> 16);
  r->bytes[5] = (uint8_t)(k >> 24);
  r->bytes[6] = (uint8_t)dev;
  r->bytes[15] = TAG15;
}

/* The submission an entry carries, -1 for none. */
static long tag_of(const sim *s, const sp_entry *e) {
  const uint8_t *b = e->record_id.bytes;
  size_t k;

  if (b[0] != TAG0 || b[1] != TAG1 || b[15] != TAG15) {
    return -1;
  }
  k = (size_t)b[2] | (size_t)b[3] << 8 | (size_t)b[4] << 16 |
      (size_t)b[5] << 24;
  return k < s->nsubs && s->subs[k].dev == b[6] ? (long)k : -1;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;

  while (n--) {
    h ^= *b++;
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* Everything of an entry but its place: sequence, device and origin are
 * checked apart. */
static uint64_t entry_digest(const sp_entry *e) {
  uint64_t h = 0xcbf29ce484222325ULL, v[4];

  h = fnv(h, e->model_type, e->model_type_len);
  h = fnv(h, e->record_id.bytes, sizeof(e->record_id.bytes));
  v[0] = (uint64_t)e->change_type;
  v[1] = (uint64_t)e->version;
  v[2] = e->timestamp_ms;
  v[3] = e->data_len;
  h = fnv(h, v, sizeof(v));
  return e->data_len ? fnv(h, e->data, e->data_len) : h;
}

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* The host's merge rules: another payload and version for the same
 * record (or, `bad`, another record: the leader must refuse that). */
static void make_replacement(sim *s, size_t k, const sp_entry *orig,
                             sp_entry *out, int bad) {
  uint64_t h = mix(s->seed * 31 + k);
  size_t n = (size_t)(h % sizeof(s->rep_buf)), i;

  *out = *orig;
  for (i = 0; i < n; ++i) {
    s->rep_buf[i] = (uint8_t)(h >> (i % 8 * 8)) ^ (uint8_t)i;
  }
  out->data = s->rep_buf;
  out->data_len = n;
  /* Replacing the replacement gives it again (a put-back entry is the
   * version the old history held). */
  out->version = 5000 + (int64_t)(h % 1000);
  if (bad) {
    out->record_id.bytes[7] ^= 0xff;
  }
}

/* What the leader's host decides about submission k: a function of the
 * seed and the submission only, so every leader, and every retry of the
 * same proposal, gets the same answer (a refusal is final for the
 * proposer: no later leader may append it). */
static void decide(sim *s, size_t k, wsub *w) {
  static const int codes[5] = {0, SP_ERR_REFUSED, SP_ERR_READ_ONLY, 7,
                               SP_ERR_INTERNAL};
  uint64_t h = mix(s->seed ^ (0x5eed0000ULL + k));
  unsigned r = (unsigned)(h % 10000);
  int c = codes[(h >> 20) % 5];

  w->expect_code = 0;
  w->host_code = c;
  w->msg_kind = (int)((h >> 40) % 3);
  if (w->dev == s->ro_dev) {
    w->decision = W_REFUSE;
    w->expect_code = SP_ERR_READ_ONLY;
  } else if (r < s->p_refuse) {
    w->decision = W_REFUSE;
    /* 0, a positive or a fatal-band code travels as SP_ERR_REFUSED. */
    w->expect_code = c >= 0 || sp_err_is_fatal(c) ? SP_ERR_REFUSED : c;
  } else if (r < s->p_refuse + s->p_replace) {
    w->decision = W_REPLACE;
  } else if (r < s->p_refuse + s->p_replace + s->p_bad_replace) {
    w->decision = W_BAD_REPLACE;
    w->expect_code = SP_ERR_REFUSED;
  } else {
    w->decision = W_ACCEPT;
  }
}

static sp_store vtable_of(sim *s, int d) {
  sp_store vt;

  sp_mem_store_get_vtable(s->t.dev[d].store[LIB], &vt);
  return vt;
}

static int handler_dev(sim *s, const sp_handler *h) {
  int i;

  for (i = 0; i < s->t.ndevs; ++i) {
    if (h && s->t.dev[i].h[LIB] == h) {
      return i;
    }
  }
  return -1;
}

static int store_dev(sim *s, const void *user_data) {
  int i;

  for (i = 0; i < s->t.ndevs; ++i) {
    if (s->t.dev[i].store[LIB] == user_data) {
      return i;
    }
  }
  return -1;
}

/* The leader's host: admission (sp_handler_config.admit). */
static int sim_admit(sp_handler *h, const sp_uuid *proposer,
                     const sp_entry *e, sp_admission *out, void *ud) {
  static char long_msg[1600];
  sim *s = ud;
  int ld = handler_dev(s, h), p = dev_of(s, proposer);
  long k = tag_of(s, e);
  wsub *w;

  if (p < 0 || k < 0) {
    fail(s, "dev%d asked to admit an entry of no submission (from dev%d)",
         ld, p);
    return 0;
  }
  w = &s->subs[k];
  if (w->dev != p || !sp_uuid_equal(&e->device_id, proposer) ||
      e->origin_seq != w->origin || e->sequence != 0) {
    fail(s, "dev%d admits submission %ld of dev%d as dev%d's origin %llu "
         "(submitted as origin %llu)", ld, k, w->dev, p,
         (unsigned long long)e->origin_seq, (unsigned long long)w->origin);
    return 0;
  }
  if (entry_digest(e) != w->digest &&
      (w->decision != W_REPLACE || entry_digest(e) != w->alt_digest)) {
    fail(s, "submission %ld of dev%d reached dev%d's admission changed", k,
         p, ld);
    return 0;
  }
  if (ld == leader_of(s) && s->mode[ld] == M_LEADER && w->hist > 0) {
    fail(s, "dev%d asked its host about submission %ld of dev%d, already "
         "in its log", ld, k, p);
    return 0;
  }
  if (p == s->ro_dev) {
    fail(s, "dev%d asked its host about read-only dev%d's submission", ld,
         p);
    return 0;
  }
  if (s->t.verbose) {
    sp_store vt = vtable_of(s, ld);
    sp_seq at = 0;
    uint64_t high = 0;
    vt.find_origin(proposer, 0, &at, &high, vt.user_data);
    fprintf(stderr, "sim: dev%d admits dev%d origin %llu (submission %ld): "
            "decision %d (dev%d's highest origin %llu)\n", ld, p,
            (unsigned long long)e->origin_seq, k, w->decision, p,
            (unsigned long long)high);
  }
  switch (w->decision) {
  case W_REFUSE:
    out->decision = SP_ADMIT_REFUSE;
    out->code = w->host_code;
    if (w->msg_kind == 2) {
      /* Past the 1024-byte limit, with a two-byte character across it. */
      size_t i;
      long_msg[0] = 'x';
      for (i = 1; i + 2 < sizeof(long_msg); i += 2) {
        long_msg[i] = (char)0xc3;
        long_msg[i + 1] = (char)0xa9;
      }
      long_msg[i] = '\0';
      out->message = long_msg;
    } else {
      out->message = w->msg_kind ? "the sim's host says no" : NULL;
    }
    wtot.host_refusals++;
    break;
  case W_REPLACE:
  case W_BAD_REPLACE:
    out->decision = SP_ADMIT_REPLACE;
    make_replacement(s, (size_t)k, e, &out->replacement,
                     w->decision == W_BAD_REPLACE);
    wtot.replacements++;
    break;
  default:
    break;
  }
  return 0;
}

static uint32_t *omap_slot(sim *s, int d, uint64_t origin) {
  size_t cap = s->omap_cap[d];

  if (origin >= (1u << 24)) {
    fail(s, "dev%d: origin id %llu, far past what it submitted", d,
         (unsigned long long)origin);
    return NULL;
  }
  if (origin >= cap) {
    size_t n = cap ? cap : 64;
    uint32_t *p;
    while (n <= origin) {
      n *= 2;
    }
    p = realloc(s->omap[d], n * sizeof(*p));
    if (!p) {
      abort();
    }
    memset(p + cap, 0, (n - cap) * sizeof(*p));
    s->omap[d] = p;
    s->omap_cap[d] = n;
  }
  return &s->omap[d][origin];
}

/* The submission of device d with origin id `origin` now, -1 if none. */
static long omap_get(sim *s, int d, uint64_t origin) {
  uint32_t *slot = omap_slot(s, d, origin);
  long k = slot && *slot ? (long)*slot - 1 : -1;

  return k >= 0 && s->subs[k].origin == origin && s->subs[k].dev == d ? k
                                                                      : -1;
}

/* Submission k of device d has origin id `origin` now. */
static void omap_set(sim *s, int d, uint64_t origin, size_t k) {
  long other = omap_get(s, d, origin);
  uint32_t *slot;

  if (other >= 0 && (size_t)other != k) {
    fail(s, "dev%d gave origin id %llu to submissions %ld and %zu", d,
         (unsigned long long)origin, other, k);
    return;
  }
  slot = omap_slot(s, d, origin);
  if (slot) {
    s->subs[k].origin = origin;
    *slot = (uint32_t)k + 1;
  }
}

typedef struct remap_ctx {
  sim *s;
  int d;
} remap_ctx;

static int remap_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                      void *ctx) {
  remap_ctx *c = ctx;
  long k = tag_of(c->s, e);

  (void)hash;
  if (k < 0 || c->s->subs[k].dev != c->d) {
    fail(c->s, "dev%d's outbox holds origin %llu of no submission of its own",
         c->d, (unsigned long long)e->origin_seq);
    return SP_SINK_STOP;
  }
  /* As submitted, or (put back after a failover) as the old history
   * held it. */
  if (entry_digest(e) != c->s->subs[k].digest &&
      (c->s->subs[k].decision != W_REPLACE ||
       entry_digest(e) != c->s->subs[k].alt_digest)) {
    fail(c->s, "dev%d's outbox holds submission %ld changed", c->d, k);
  }
  omap_set(c->s, c->d, e->origin_seq, (size_t)k);
  return 0;
}

/* Follow what an anchor renumbered, or a full sync put back. */
static void remap_outbox(sim *s, int d) {
  sp_store vt = vtable_of(s, d);
  remap_ctx c = {s, d};
  int rv = vt.outbox_read(0, SIZE_MAX, remap_sink, &c, vt.user_data);

  if (rv != 0) {
    fail(s, "dev%d: outbox_read failed: %s", d, sp_err_name(rv));
  }
}

/* The current leader appended the entry at `seq` (already in the
 * oracle): which submission it carries, and whether it may. */
static void hist_note(sim *s, sp_seq seq, const sp_entry *e, int own) {
  long k = tag_of(s, e);
  wsub *w;
  uint64_t want;

  s->hist_tag[seq] = 0;
  s->hist_origin[seq] = e->origin_seq;
  if (k < 0) {
    if (e->origin_seq) {
      fail(s, "entry %llu carries origin %llu of no submission",
           (unsigned long long)seq, (unsigned long long)e->origin_seq);
    }
    return;
  }
  w = &s->subs[k];
  if (!e->origin_seq ||
      !sp_uuid_equal(&e->device_id, &s->t.dev[w->dev].id) ||
      (w->origin && e->origin_seq != w->origin)) {
    fail(s, "entry %llu: submission %ld of dev%d (origin %llu) appended as "
         "origin %llu", (unsigned long long)seq, k, w->dev,
         (unsigned long long)w->origin, (unsigned long long)e->origin_seq);
  }
  if (w->refused) {
    fail(s, "entry %llu: submission %ld of dev%d appended after its "
         "refusal (%s)", (unsigned long long)seq, k, w->dev,
         sp_err_name(w->expect_code));
  }
  if (w->hist > 0) {
    sp_seq q, was = 0;
    sp_entry old;
    for (q = 1; q < seq && !was; ++q) {
      was = s->hist_tag[q] == (uint32_t)k + 1 ? q : 0;
    }
    if (sp_mem_store_get(s->t.dev[leader_of(s)].store[LIB], was, &old,
                         NULL) != 0) {
      old.origin_seq = UINT64_MAX; /* pruned */
    }
    fail(s, "entry %llu: submission %ld of dev%d (origin %llu) appended "
         "twice (first at %llu, %s)", (unsigned long long)seq, k, w->dev,
         (unsigned long long)e->origin_seq, (unsigned long long)was,
         old.origin_seq == UINT64_MAX
             ? "pruned from the leader's log since"
             : old.origin_seq ? "its origin id still there"
                              : "without its origin id in the leader's log");
  }
  if (!own && (w->decision == W_REFUSE || w->decision == W_BAD_REPLACE)) {
    fail(s, "entry %llu: submission %ld of dev%d appended though the "
         "leader's host refuses it", (unsigned long long)seq, k, w->dev);
  }
  /* A leader appends its own outbox as it stands: a put-back item is the
   * version the old history held, the host's replacement perhaps. */
  want = !own && w->decision == W_REPLACE ? w->alt_digest : w->digest;
  if (entry_digest(e) != want &&
      !(own && w->decision == W_REPLACE && entry_digest(e) == w->alt_digest)) {
    fail(s, "entry %llu: submission %ld of dev%d appended with other "
         "content than %s", (unsigned long long)seq, k, w->dev,
         want == w->digest ? "submitted" : "its host's replacement");
  }
  w->hist++;
  s->hist_tag[seq] = (uint32_t)k + 1;
}

/* A failover: the history ends at `len` now. */
static int in_outbox(sim *s, int d, uint64_t origin);

/* Device d's own log retains its origin id `origin`. */
static int in_log(sim *s, int d, uint64_t origin) {
  sp_store vt = vtable_of(s, d);
  sp_seq at = 0;
  uint64_t high = 0;

  return vt.find_origin(&s->t.dev[d].id, origin, &at, &high,
                        vt.user_data) == 0 &&
         at != 0;
}

static void hist_truncate(sim *s, sp_seq len) {
  sp_seq q;

  for (q = len + 1; q <= s->oracle_len; ++q) {
    if (s->hist_tag[q]) {
      wsub *w = &s->subs[s->hist_tag[q] - 1];
      w->hist--;
      wtot.truncated++;
      /* It comes back from its device: still in the outbox (re-proposed),
       * or in its log (put back at its full sync).  The hosts never prune
       * an entry no other device holds (prune_cap in sp_sim.c), so a
       * copy is always left: without one it is lost (writes_verdict). */
      if (!in_outbox(s, w->dev, w->origin) && !in_log(s, w->dev, w->origin)) {
        w->nocopy_step = s->step + 1;
        if (s->t.verbose) {
          fprintf(stderr, "sim: failover cut submission %u of dev%d at "
                  "%llu, no copy left on dev%d\n", s->hist_tag[q] - 1,
                  w->dev, (unsigned long long)q, w->dev);
        }
      }
      if (w->final) {
        fail(s, "failover lost submission %u of dev%d at %llu, committed "
             "on a follower", s->hist_tag[q] - 1, w->dev,
             (unsigned long long)q);
      }
      s->hist_tag[q] = 0;
    }
  }
}

/* The store hook's append: the current leader's appends extend the
 * history (the host's own go through sp_mem_store_append and append()). */
static int (*g_inner_append)(const sp_entry *, size_t, sp_seq *, void *);
static int (*g_inner_anchor)(const sp_uuid *, uint64_t, void *);

static int hooked_append(const sp_entry *entries, size_t n, sp_seq *first,
                         void *user_data) {
  sim *s = g_sim;
  int l = leader_of(s), rv, own;
  sp_seq f = 0;
  size_t i;

  rv = g_inner_append(entries, n, &f, user_data);
  if (first) {
    *first = f;
  }
  if (rv != 0 || user_data != s->t.dev[l].store[LIB] ||
      s->mode[l] != M_LEADER) {
    return rv;
  }
  if (f != s->oracle_len + 1 || f + n >= MAX_SEQ) {
    fail(s, "dev%d appended at %llu, its history ends at %llu", l,
         (unsigned long long)f, (unsigned long long)s->oracle_len);
    return rv;
  }
  oracle_record(s, f, f + n - 1);
  /* Its own entries (submitted on it, or its outbox appended when it
   * took the lead) did not go through admission: a proposal's are the
   * proposer's, never the leader's. */
  own = n > 0 && sp_uuid_equal(&entries[0].device_id, &s->t.dev[l].id);
  for (i = 0; i < n; ++i) {
    hist_note(s, f + i, &entries[i], own);
  }
  /* The leader dies between its append and its answer: nothing more it
   * sends leaves (no ProposeResult, no push), then it crashes. */
  if (!own && s->faults_on && s->p_crash_append &&
      chance(s, s->p_crash_append)) {
    s->crash_armed[l] = 1;
    s->crash_now[l] = 1;
    wtot.crash_after_append++;
    if (s->t.verbose) {
      fprintf(stderr, "sim: dev%d crashes after appending %llu..%llu\n", l,
              (unsigned long long)f, (unsigned long long)(f + n - 1));
    }
  }
  return rv;
}

static int hooked_anchor(const sp_uuid *device, uint64_t device_high,
                         void *user_data) {
  int rv = g_inner_anchor(device, device_high, user_data);
  int d = store_dev(g_sim, user_data);

  if (rv == 0 && d >= 0) {
    remap_outbox(g_sim, d);
  }
  return rv;
}

int outbox_items(sim *s, int d, sp_outbox_stats *os) {
  sp_store vt = vtable_of(s, d);
  int rv;

  /* An async store's outbox is what its handler sees: without the items
   * its queued applies retired (sp_sim_async.c). */
  if (s->t.dev[d].node && s->t.dev[d].astore[LIB]) {
    sp_async_store_vtable(s->t.dev[d].astore[LIB], &vt);
  }
  rv = vt.outbox_stats(os, vt.user_data);

  if (rv != 0) {
    fail(s, "dev%d: outbox_stats failed: %s", d, sp_err_name(rv));
  }
  return rv;
}

typedef struct find_ctx {
  const sim *s;
  uint64_t origin;
  int found;
} find_ctx;

static int find_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                     void *ctx) {
  find_ctx *c = ctx;

  (void)hash;
  c->found = e->origin_seq == c->origin;
  return SP_SINK_STOP;
}

static int in_outbox(sim *s, int d, uint64_t origin) {
  sp_store vt = vtable_of(s, d);
  find_ctx c = {s, origin, 0};

  if (origin == 0 ||
      vt.outbox_read(origin - 1, 1, find_sink, &c, vt.user_data) != 0) {
    return 0;
  }
  return c.found;
}

static int valid_utf8(const char *p) {
  const unsigned char *u = (const unsigned char *)p;

  while (*u) {
    int n = *u < 0x80 ? 0 : (*u & 0xe0) == 0xc0 ? 1 : (*u & 0xf0) == 0xe0 ? 2
            : (*u & 0xf8) == 0xf0 ? 3 : -1;
    if (n < 0) {
      return 0;
    }
    for (++u; n > 0; --n, ++u) {
      if ((*u & 0xc0) != 0x80) {
        return 0;
      }
    }
  }
  return 1;
}

static void on_committed(sim *s, int d, const sp_event *ev) {
  sp_store vt = vtable_of(s, d);
  sp_entry e;
  sp_seq at = 0;
  uint64_t high = 0;
  sp_store_state st = state_of(s, d);
  long k;
  wsub *w;

  wtot.committed_events++;
  if (ev->to_sequence == 0) {
    /* Committed below what this log retains (learnt at a full sync):
     * the log must cover it, and the history must hold it. */
    k = omap_get(s, d, ev->origin_seq);
    if (vt.find_origin(&s->t.dev[d].id, ev->origin_seq, &at, &high,
                       vt.user_data) != 0 ||
        at != 0 || high < ev->origin_seq || k < 0) {
      fail(s, "dev%d: COMMITTED origin %llu below its log, which holds it "
           "at %llu (highest origin %llu)", d,
           (unsigned long long)ev->origin_seq, (unsigned long long)at,
           (unsigned long long)high);
      return;
    }
  } else if (sp_mem_store_get(s->t.dev[d].store[LIB], ev->to_sequence, &e,
                              NULL) != 0 ||
      e.origin_seq != ev->origin_seq ||
      !sp_uuid_equal(&e.device_id, &s->t.dev[d].id) ||
      vt.find_origin(&s->t.dev[d].id, ev->origin_seq, &at, &high,
                     vt.user_data) != 0 ||
      at != ev->to_sequence) {
    fail(s, "dev%d: COMMITTED origin %llu at %llu, which its log does not "
         "hold there (find_origin says %llu)", d,
         (unsigned long long)ev->origin_seq,
         (unsigned long long)ev->to_sequence, (unsigned long long)at);
    return;
  } else {
    k = tag_of(s, &e);
  }
  if (k < 0) {
    fail(s, "dev%d: COMMITTED origin %llu of no submission", d,
         (unsigned long long)ev->origin_seq);
    return;
  }
  w = &s->subs[k];
  if (w->refused) {
    fail(s, "dev%d: submission %ld COMMITTED after its refusal", d, k);
  }
  if (s->mode[d] == M_FOLLOWER && !s->diverged[d] &&
      !unaware_divergence(s, d, &st)) {
    if (w->hist != 1) {
      fail(s, "dev%d: submission %ld COMMITTED, in the history %d times", d,
           k, w->hist);
    }
    w->final = 1;
  }
  if (s->t.verbose) {
    fprintf(stderr, "sim: dev%d submission %ld (origin %llu) committed at "
            "%llu\n", d, k, (unsigned long long)ev->origin_seq,
            (unsigned long long)ev->to_sequence);
  }
}

static void on_refused(sim *s, int d, const sp_event *ev) {
  long k = omap_get(s, d, ev->origin_seq);
  wsub *w;

  if (k < 0) {
    fail(s, "dev%d: REFUSED origin %llu of no submission", d,
         (unsigned long long)ev->origin_seq);
    return;
  }
  w = &s->subs[k];
  if (s->t.verbose) {
    sp_store vt = vtable_of(s, leader_of(s));
    sp_seq at = 0;
    uint64_t high = 0;
    vt.find_origin(&s->t.dev[d].id, ev->origin_seq, &at, &high,
                   vt.user_data);
    fprintf(stderr, "sim: dev%d submission %ld (origin %llu) refused: %s "
            "(the leader's log: at %llu, dev%d's highest origin %llu)\n",
            d, k, (unsigned long long)ev->origin_seq,
            sp_err_name(ev->error_code), (unsigned long long)at, d,
            (unsigned long long)high);
  }
  if (w->refused) {
    fail(s, "dev%d: submission %ld REFUSED twice", d, k);
  }
  if (w->hist || w->final) {
    fail(s, "dev%d: submission %ld REFUSED (%s) but the history holds it", d,
         k, sp_err_name(ev->error_code));
  }
  if (w->decision == W_ACCEPT || w->decision == W_REPLACE) {
    fail(s, "dev%d: submission %ld REFUSED (%s) though the host accepts it",
         d, k, sp_err_name(ev->error_code));
  } else if (ev->error_code != w->expect_code) {
    fail(s, "dev%d: submission %ld REFUSED with %s, the host said %s", d, k,
         sp_err_name(ev->error_code), sp_err_name(w->expect_code));
  }
  if (ev->message && (strlen(ev->message) > SP_MAX_ERROR_MESSAGE_LEN ||
                      !valid_utf8(ev->message))) {
    fail(s, "dev%d: refusal message of %zu bytes, or not UTF-8", d,
         strlen(ev->message));
  }
  if (in_outbox(s, d, ev->origin_seq)) {
    fail(s, "dev%d: submission %ld REFUSED but still in the outbox", d, k);
  }
  w->refused = 1;
}

void writes_event(sim *s, int d, const sp_event *ev) {
  if (ev->type == SP_EVENT_SUBMISSION_COMMITTED) {
    on_committed(s, d, ev);
  } else if (ev->type == SP_EVENT_SUBMISSION_REFUSED) {
    on_refused(s, d, ev);
  }
}

/* A host writes a small batch on device d, whatever its role. */
static void submit(sim *s, int d) {
  sp_handler *h = s->t.dev[d].h[LIB];
  sp_handler_config *c = &s->t.dev[d].cfg[LIB];
  sp_entry e[4];
  uint8_t buf[4][300];
  size_t n = 1 + below(s, 4), i, k0 = s->nsubs;
  uint64_t first = 0, bytes = 0;
  sp_outbox_stats before;
  int follower, rv;

  if (!h || s->mode[d] == M_DOWN || k0 + n >= (1u << 31)) {
    return;
  }
  if (k0 + n > s->capsubs) {
    size_t cap = s->capsubs ? 2 * s->capsubs : 256;
    wsub *p = realloc(s->subs, cap * sizeof(*p));
    if (!p) {
      abort();
    }
    s->subs = p;
    s->capsubs = cap;
  }
  for (i = 0; i < n; ++i) {
    size_t len = chance(s, 1000) ? 0 : below(s, sizeof(buf[i]) + 1), j;
    wsub *w = &s->subs[k0 + i];
    sp_entry alt;
    memset(&e[i], 0, sizeof(e[i]));
    /* Ignored by submit: the library assigns them. */
    e[i].sequence = below(s, 3);
    e[i].origin_seq = below(s, 3);
    if (chance(s, 5000)) {
      e[i].device_id = s->t.dev[d].id;
    }
    e[i].timestamp_ms = s->t.now / MS;
    e[i].model_type = "note";
    e[i].model_type_len = 4;
    tag_set(&e[i].record_id, k0 + i, d);
    e[i].change_type = (sp_change_type)below(s, 4);
    e[i].version = (int64_t)below(s, 1000);
    for (j = 0; j < len; ++j) {
      buf[i][j] = (uint8_t)sp_rand_next(&s->rng);
    }
    e[i].data = buf[i];
    e[i].data_len = len;
    bytes += e[i].model_type_len + len;
    memset(w, 0, sizeof(*w));
    w->dev = d;
    w->digest = entry_digest(&e[i]);
    decide(s, k0 + i, w);
    make_replacement(s, k0 + i, &e[i], &alt, 0);
    w->alt_digest = entry_digest(&alt);
  }
  s->nsubs = k0 + n;
  follower = sp_handler_role(h) == SP_ROLE_FOLLOWER;
  if (follower && outbox_items(s, d, &before) != 0) {
    return;
  }
  rv = sp_handler_submit(h, e, n, &first, s->t.now);
  if (s->t.verbose) {
    fprintf(stderr, "sim: dev%d submits %zu (submissions %zu..%zu): %s, "
            "first origin %llu\n", d, n, k0, k0 + n - 1, sp_err_name(rv),
            (unsigned long long)first);
  }
  if (follower) {
    int full = before.items + n > c->outbox_max_items ||
               before.bytes + bytes > c->outbox_max_bytes;
    if (rv == SP_ERR_OUTBOX_FULL && !full) {
      fail(s, "dev%d: OUTBOX_FULL with %llu items of %llu", d,
           (unsigned long long)before.items,
           (unsigned long long)c->outbox_max_items);
    } else if (rv == 0 && full) {
      fail(s, "dev%d: submit took the outbox past its limit (%llu + %zu "
           "items of %llu)", d, (unsigned long long)before.items, n,
           (unsigned long long)c->outbox_max_items);
    }
    wtot.outbox_full += rv == SP_ERR_OUTBOX_FULL;
  }
  if (rv != 0) {
    sp_handler_status hs;
    int ok = rv == SP_ERR_OUTBOX_FULL && follower;
    ok = ok || (!follower && rv == SP_ERR_STORE); /* append failures */
    /* An async store's write meets a failure of its queued applies. */
    ok = ok || (follower && rv == SP_ERR_STORE && s->t.dev[d].astore[LIB]);
    ok = ok || (!follower && rv == SP_ERR_INVALID_STATE &&
                sp_handler_get_status(h, &hs) == 0 && hs.stepped_down);
    if (!ok) {
      fail(s, "dev%d: submit failed: %s", d, sp_err_name(rv));
    }
    return; /* the records stay, not live: nothing may carry them */
  }
  for (i = 0; i < n; ++i) {
    wsub *w = &s->subs[k0 + i];
    w->live = 1;
    w->leader_side = !follower;
    omap_set(s, d, first + i, k0 + i);
    if (follower && !in_outbox(s, d, first + i)) {
      fail(s, "dev%d: submission %zu (origin %llu) not in its outbox", d,
           k0 + i, (unsigned long long)(first + i));
    }
    if (!follower && s->mode[d] == M_LEADER && w->hist != 1) {
      fail(s, "dev%d: leader's submission %zu not in its log", d, k0 + i);
    }
  }
  /* wtot.submitted is counted by writes_verdict, with the outcomes. */
  wtot.leader_side += follower ? 0 : (long)n;
  if (follower && s->faults_on && chance(s, 300)) {
    /* Crash between the outbox write and the send: at once, or with what
     * it sends dropped until the host sees it dead. */
    wtot.crash_after_submit++;
    if (chance(s, 5000)) {
      crash(s, d);
    } else {
      s->crash_armed[d] = 1;
      s->crash_now[d] = 1;
    }
  }
}

typedef struct scan_ctx {
  sim *s;
  int d;
  int compare;
} scan_ctx;

static int seen_test_set(sim *s, int d, int od, uint64_t origin) {
  size_t cap = s->seen_cap[d][od];
  uint8_t *p;

  if (origin >= cap) {
    size_t n = cap ? cap : 256;
    while (n <= origin) {
      n *= 2;
    }
    p = realloc(s->seen[d][od], n);
    if (!p) {
      abort();
    }
    memset(p + cap, 0, n - cap);
    s->seen[d][od] = p;
    s->seen_cap[d][od] = n;
  }
  p = &s->seen[d][od][origin];
  if (*p) {
    return 1;
  }
  *p = 1;
  return 0;
}

/* Every log, every step: no origin id twice, and where the log is the
 * history's prefix, the same origin ids as the history (the hash chain
 * does not cover them). */
static void scan_log(sim *s, int d) {
  sp_store vt = vtable_of(s, d);
  sp_log_bounds b;
  sp_store_state st = state_of(s, d);
  int compare = matches_oracle(s, &st);
  sp_seq q;

  if (vt.bounds(&b, vt.user_data) != 0) {
    fail(s, "dev%d: bounds failed", d);
    return;
  }
  for (q = (s->scanned[d] > b.pruned_through ? s->scanned[d]
                                             : b.pruned_through) + 1;
       q <= b.latest; ++q) {
    sp_entry e;
    int od;
    if (sp_mem_store_get(s->t.dev[d].store[LIB], q, &e, NULL) != 0) {
      continue;
    }
    if (compare && q <= s->oracle_len && e.origin_seq != s->hist_origin[q]) {
      fail(s, "dev%d: entry %llu has origin %llu, the history's %llu", d,
           (unsigned long long)q, (unsigned long long)e.origin_seq,
           (unsigned long long)s->hist_origin[q]);
    }
    if (!e.origin_seq) {
      continue;
    }
    od = dev_of(s, &e.device_id);
    if (od < 0 || e.origin_seq >= (1u << 24)) {
      fail(s, "dev%d: entry %llu has origin %llu of an unknown device", d,
           (unsigned long long)q, (unsigned long long)e.origin_seq);
    } else if (seen_test_set(s, d, od, e.origin_seq)) {
      fail(s, "dev%d's log holds origin id (dev%d, %llu) twice (again at "
           "%llu)", d, od, (unsigned long long)e.origin_seq,
           (unsigned long long)q);
    }
  }
  s->scanned[d] = b.latest;
}

/* A full sync replaced device d's log. */
static void scan_reset(sim *s, int d) {
  int od;

  for (od = 0; od < TC_MAX_DEVS; ++od) {
    if (s->seen[d][od]) {
      memset(s->seen[d][od], 0, s->seen_cap[d][od]);
    }
  }
  s->scanned[d] = 0;
}

void check_writes(sim *s) {
  int d;

  for (d = 0; d < s->t.ndevs && !s->failure[0]; ++d) {
    sp_handler *h = s->t.dev[d].h[LIB];
    sp_outbox_status os;
    scan_log(s, d);
    if (h && sp_handler_role(h) == SP_ROLE_FOLLOWER &&
        sp_handler_outbox_status(h, &os) == 0 &&
        os.in_flight > s->t.dev[d].cfg[LIB].propose_window) {
      fail(s, "dev%d: %llu proposals in flight (window %u, %llu pending)",
           d, (unsigned long long)os.in_flight,
           s->t.dev[d].cfg[LIB].propose_window,
           (unsigned long long)os.pending);
    }
  }
}

void writes_store_hook(sp_store *st) {
  g_inner_append = st->append;
  st->append = hooked_append;
  g_inner_anchor = st->outbox_anchor;
  st->outbox_anchor = hooked_anchor;
}

void writes_failover(sim *s, sp_seq len, int promoted) {
  size_t k;

  hist_truncate(s, len);
  /* What the promoted device committed as a follower may now be lost by
   * a later failover (its log becomes the only copy); the put-back rule
   * must bring it back. */
  for (k = 0; k < s->nsubs; ++k) {
    if (s->subs[k].dev == promoted) {
      s->subs[k].final = 0;
    }
  }
}

void writes_full_sync(sim *s, int d) {
  /* The new log is scanned afresh; own writes it lacks are back in the
   * outbox. */
  scan_reset(s, d);
  remap_outbox(s, d);
  if (s->t.verbose) {
    sp_outbox_stats os;
    memset(&os, 0, sizeof(os));
    (void)outbox_items(s, d, &os);
    fprintf(stderr, "sim: dev%d full sync: outbox %llu items, next origin "
            "%llu\n", d, (unsigned long long)os.items,
            (unsigned long long)os.next_origin);
  }
}

/* Submissions not yet in the history nor refused (for the bound). */
long writes_pending(sim *s) {
  size_t k;
  long n = 0;

  for (k = 0; k < s->nsubs; ++k) {
    n += s->subs[k].live && !s->subs[k].hist && !s->subs[k].refused;
  }
  return n;
}

void writes_reset(sim *s) {
  int d;

  s->nsubs = 0;
  for (d = 0; d < TC_MAX_DEVS; ++d) {
    if (s->omap[d]) {
      memset(s->omap[d], 0, s->omap_cap[d] * sizeof(*s->omap[d]));
    }
    scan_reset(s, d);
  }
}

void writes_free(sim *s) {
  int d, od;

  free(s->subs);
  free(s->hist_tag);
  free(s->hist_origin);
  for (d = 0; d < TC_MAX_DEVS; ++d) {
    free(s->omap[d]);
    for (od = 0; od < TC_MAX_DEVS; ++od) {
      free(s->seen[d][od]);
    }
  }
}

/* Where a lost submission is, for the message. */
static void where_is(sim *s, size_t k, char *out, size_t len) {
  int d, n = 0;

  out[0] = '\0';
  for (d = 0; d < s->t.ndevs; ++d) {
    if (in_outbox(s, d, s->subs[k].origin) && s->subs[k].dev == d) {
      n += snprintf(out + n, len - (size_t)n, " in dev%d's outbox%s", d,
                    d == leader_of(s) ? " (the leader's)" : "");
    }
  }
  if (!out[0]) {
    snprintf(out, len, " nowhere");
  }
}

void writes_unjudged(sim *s) {
  size_t k;

  for (k = 0; k < s->nsubs; ++k) {
    wtot.unjudged += s->subs[k].live;
  }
}

/* Faults stopped and everything converged: every submission is in the
 * history exactly once, or was refused -- never both, never neither.
 * Each live submission is counted once, under exactly one outcome, so
 * the writes: line adds up: submitted = committed exactly once + refused
 * + lost + duplicated.  Lost includes a submission a failover cut from
 * the history when its device held no copy: the hosts keep the contract
 * that prevents it (prune_cap and failover() in sp_sim.c). */
void writes_verdict(sim *s) {
  size_t k;

  for (k = 0; k < s->nsubs; ++k) {
    wsub *w = &s->subs[k];
    char where[128];
    if (!w->live) {
      if (w->hist) {
        fail(s, "a failed submit of dev%d left submission %zu in the log",
             w->dev, k);
      }
      continue;
    }
    wtot.submitted++;
    if (w->hist > 1) {
      wtot.duplicated++;
      fail(s, "submission %zu of dev%d (origin %llu) in the log %d times", k,
           w->dev, (unsigned long long)w->origin, w->hist);
    } else if (w->hist == 1 && w->refused) {
      wtot.duplicated++;
      fail(s, "submission %zu of dev%d (origin %llu) refused and in the log",
           k, w->dev, (unsigned long long)w->origin);
    } else if (w->hist == 1) {
      wtot.committed_once++;
    } else if (w->refused) {
      wtot.refused++;
    } else {
      wtot.lost++;
      where_is(s, k, where, sizeof(where));
      fail(s, "submission %zu of dev%d (origin %llu%s) lost:%s%s", k, w->dev,
           (unsigned long long)w->origin,
           w->leader_side ? ", a leader's" : "", where,
           w->nocopy_step ? " (a failover cut it from the history when its "
                            "device held no copy)" : "");
    }
  }
}


/* The write path's knobs and rates, drawn like the rest. */
void configure_writes(sim *s) {
  uint64_t items = chance(s, 1000) ? 2 + below(s, 30) : 100000;
  uint64_t bytes = chance(s, 1000) ? 300 + below(s, 3000) : 64u << 20;
  uint32_t window = chance(s, 5000) ? 1 + below(s, 8) : 1024;
  size_t pbytes = chance(s, 3000) ? 1 + below(s, 2000) : 1u << 20;
  int d;

  for (d = 0; d < s->t.ndevs; ++d) {
    sp_handler_config *c = &s->t.dev[d].cfg[LIB];
    c->outbox_max_items = items;
    c->outbox_max_bytes = bytes;
    c->propose_window = window;
    c->propose_max_bytes = pbytes;
    c->admit = sim_admit;
    c->admit_user_data = s;
  }
  s->p_submit = 1000 + below(s, 5000);
  s->p_refuse = chance(s, 5000) ? below(s, 1500) : 0;
  s->p_replace = chance(s, 5000) ? below(s, 1500) : 0;
  s->p_bad_replace = chance(s, 2000) ? below(s, 300) : 0;
  s->p_crash_append = chance(s, 3000) ? 1 + below(s, 500) : 0;
  /* Sometimes one follower is listed read-only (never device 0, the
   * first leader; a failover may still promote it). */
  s->ro_dev = chance(s, 1000) ? 1 + (int)below(s, (unsigned)s->t.ndevs - 1)
                              : -1;
  for (d = 0; d < s->t.ndevs; ++d) {
    s->t.dev[d].read_only[LIB] = d == s->ro_dev;
  }
}

/* Hosts write on any live device; the leader's store sometimes fails its
 * appends. */
void writes_step(sim *s) {
  int k;

  for (k = 0; k < 3; ++k) {
    int d = (int)below(s, (unsigned)s->t.ndevs);
    if (chance(s, s->p_submit)) {
      submit(s, d);
    }
  }
  if (chance(s, 100)) {
    sp_mem_store_fail_appends(s->t.dev[leader_of(s)].store[LIB],
                              1 + below(s, 3));
    wtot.append_failures++;
  }
}
