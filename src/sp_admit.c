/*
 * sp_admit.c: the leader's side of writes from every device.
 *
 * A Propose from a follower is judged entry by entry -- checked, looked up
 * by origin id in the log (the dedupe state lives in the log, so a new
 * leader after a failover finds it), handed to the host's admission
 * callback -- then what was accepted is appended with ONE store call, the
 * answers go back in one ProposeResult, and the new entries are announced
 * like the leader's own appends (the proposer included).  Nothing of a
 * frame is answered unless its append succeeded: an unanswered proposal
 * is proposed again on the follower's next stream, and the origin id makes
 * that retry harmless.
 */
#include <string.h>

#include "sp_core.h"
#include "sp_enc.h"
#include "sp_mem_int.h"
#include "sp_mpack.h"

/* What an EntriesResponse adds around its one entry: head (array, type,
 * library, epoch, since, entries header) and tail (through, has_more,
 * latest, hash), rounded up.  An entry a page cannot carry alone is one
 * no follower could ever fetch. */
#define PAGE_OVERHEAD 160

/* One ProposeResult's fixed parts: the frame's head, and a result without
 * its message bytes (array, origin, code, sequence, str header). */
#define RESULT_HEAD_MAX 40
#define RESULT_ITEM_MAX 28

int sp_store_has_writes(const sp_store *st) {
  return st->version >= 3 && st->append && st->find_origin &&
         st->outbox_put && st->outbox_read && st->outbox_remove &&
         st->outbox_stats && st->outbox_anchor;
}

size_t sp_entry_max_len(const sp_node *node) {
  size_t mf = node->cfg.max_frame ? node->cfg.max_frame : SP_MAX_FRAME_DEFAULT;

  return mf > PAGE_OVERHEAD ? mf - PAGE_OVERHEAD : 0;
}

/* ---- one Propose ---- */

/* The fate of one proposed entry. */
typedef struct admit_item {
  /* Decided before the callbacks: refused, or already in the log. */
  int decided;
  int32_t code;
  sp_seq seq;
  /* Refusal message in the batch's arena. */
  size_t msg_off;
  size_t msg_len;
  /* Appended by this frame: its index among the appended entries. */
  int append;
  size_t index;
  /* A replacement's strings live in the arena (copied: the host's
   * pointers last only until its next callback). */
  int replaced;
  size_t mt_off;
  size_t data_off;
} admit_item;

typedef struct admit_batch {
  sp_session *s;
  sp_handler *h;
  const sp_entry *in;
  size_t n;
  admit_item *items;
  sp_entry *out; /* what the one append writes */
  size_t nout;
  sp_buf arena;
} admit_batch;

/* Close the stream for a failure that answers nothing: the follower
 * proposes everything unanswered again on its next stream. */
static void batch_failed(admit_batch *b, int code, const char *what) {
  sp_event ev = {0};

  sp_slog(b->s, SP_LOG_WARN, "admission: %s (%s)", what,
          sp_err_name(code));
  ev.error_code = code;
  ev.message = what;
  sp_emit_simple(b->h, SP_EVENT_ERROR, &b->s->peer, &ev);
  if (sp_err_is_fatal(code)) {
    sp_node_set_fatal(b->s->node, code);
  }
  sp_session_close(b->s, code);
}

/* Keep `len` bytes of `text` as item `it`'s message: at most
 * SP_MAX_ERROR_MESSAGE_LEN, cut at a character boundary; a text that is
 * not UTF-8 is dropped (the code still says why). */
static int set_message(admit_batch *b, admit_item *it, const char *text,
                       size_t len) {
  const uint8_t *p = (const uint8_t *)text;

  it->msg_len = 0;
  if (!text) {
    return 0;
  }
  if (len > SP_MAX_ERROR_MESSAGE_LEN) {
    len = SP_MAX_ERROR_MESSAGE_LEN;
    while (len > 0 && (p[len] & 0xC0u) == 0x80u) {
      --len;
    }
  }
  if (len == 0 || !sp_utf8_valid(p, len)) {
    return 0;
  }
  it->msg_off = b->arena.len;
  it->msg_len = len;
  return sp_buf_append(&b->arena, text, len);
}

static int refuse(admit_batch *b, admit_item *it, int code, const char *why) {
  it->decided = 1;
  it->code = code;
  it->seq = 0;
  return set_message(b, it, why, why ? strlen(why) : 0);
}

/* The leader's host learns of every append the library makes (followers'
 * proposals, this device's drained outbox, its own submissions) as it
 * learns of a follower's pages: to mirror the rows into its own state. */
static void report_appended(sp_handler *h, sp_seq first, size_t n) {
  sp_event ev = {0};

  ev.from_sequence = first - 1;
  ev.to_sequence = first + n - 1;
  sp_emit_simple(h, SP_EVENT_ENTRIES_APPENDED, NULL, &ev);
}

/* Step 3a: what names the submission -- who, and which of its origin
 * ids.  Only a well-named proposal can be looked up in the log. */
static int check_shape(admit_batch *b, size_t i) {
  const sp_entry *e = &b->in[i];
  admit_item *it = &b->items[i];

  if (e->sequence != 0) {
    return refuse(b, it, SP_ERR_BAD_PROPOSAL, "sequence must be 0");
  }
  if (e->origin_seq == 0 || e->origin_seq > SP_MAX_ORIGIN_SEQ) {
    return refuse(b, it, SP_ERR_BAD_PROPOSAL,
                  "origin_seq must be in 1 .. 2^63-1");
  }
  if (i > 0 && e->origin_seq <= b->in[i - 1].origin_seq) {
    return refuse(b, it, SP_ERR_BAD_PROPOSAL,
                  "origin_seq not increasing in the frame");
  }
  if (!sp_uuid_equal(&e->device_id, &b->s->peer)) {
    return refuse(b, it, SP_ERR_IMPERSONATION,
                  "device_id is not the proposing device");
  }
  return 0;
}

/* Step 3b: whether the leader could append and serve the entry; asked
 * only of a proposal the log never held (one it holds is answered as
 * appended, whatever the leader's limits are now). */
static int check_size(admit_batch *b, size_t i) {
  const sp_entry *e = &b->in[i];

  if (sp_enc_check_entry(e) != 0 ||
      sp_enc_entry_len(e, 1) > sp_entry_max_len(b->s->node)) {
    return refuse(b, &b->items[i], SP_ERR_BAD_PROPOSAL,
                  "entry larger than the leader can serve");
  }
  return 0;
}

static int same_record(const sp_entry *a, const sp_entry *b) {
  return a->model_type_len == b->model_type_len &&
         (a->model_type_len == 0 ||
          memcmp(a->model_type, b->model_type, a->model_type_len) == 0) &&
         sp_uuid_equal(&a->record_id, &b->record_id);
}

typedef struct row_ctx {
  sp_seq seq;
  int found;
  int same;
  const sp_entry *want;
} row_ctx;

static int row_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                    void *arg) {
  row_ctx *c = arg;

  (void)hash;
  if (e->sequence == c->seq) {
    c->found = 1;
    c->same = same_record(e, c->want);
  }
  return SP_SINK_STOP;
}

/* The log's word on the origin id, from its committed set (every origin
 * id it ever held, retained or pruned): retained -> that entry, if it is
 * the same record; pruned -> committed below what is retained; never
 * held -> left to the host.  Exact both ways, so neither a retry nor a
 * re-proposal after a lost refusal appends twice or is refused blindly.
 * Returns 0 (item decided or left to the callback) or a failure. */
static int check_origin(admit_batch *b, size_t i) {
  sp_handler *h = b->h;
  const sp_entry *e = &b->in[i];
  admit_item *it = &b->items[i];
  sp_seq seq = 0;
  uint64_t high = 0;
  row_ctx c;
  int rv;

  rv = h->store.find_origin(&b->s->peer, e->origin_seq, &seq, &high,
                            h->store.user_data);
  if (rv == SP_ERR_NOT_FOUND) {
    return 0;
  }
  if (rv != 0) {
    return SP_ERR_STORE;
  }
  if (seq > 0) {
    memset(&c, 0, sizeof(c));
    c.seq = seq;
    c.want = e;
    rv = h->store.read(seq - 1, seq, 1, row_sink, &c, h->store.user_data);
    if (rv < 0 || !c.found) {
      /* Pruned between the two calls, or unreadable: it is appended, so
       * no refusal may go back; the follower asks again. */
      return SP_ERR_STORE;
    }
    if (!c.same) {
      return refuse(b, it, SP_ERR_ORIGIN_CONFLICT,
                    "origin id already in the log with another record");
    }
  }
  /* Sequence 0: in the log, below what it retains (the follower finds
   * it there, or got it with the snapshot it synced from). */
  it->decided = 1;
  it->code = 0;
  it->seq = seq;
  return 0;
}

static int copy_replacement(admit_batch *b, admit_item *it,
                            const sp_entry *r) {
  it->replaced = 1;
  it->mt_off = b->arena.len;
  if (r->model_type_len > 0 &&
      sp_buf_append(&b->arena, r->model_type, r->model_type_len) != 0) {
    return SP_ERR_NOMEM;
  }
  it->data_off = b->arena.len;
  if (r->data_len > 0 &&
      sp_buf_append(&b->arena, r->data, r->data_len) != 0) {
    return SP_ERR_NOMEM;
  }
  return 0;
}

/* Step 6: the host's word.  Returns 0 or a code that ends the batch. */
static int ask_host(admit_batch *b, size_t i) {
  sp_handler *h = b->h;
  const sp_entry *e = &b->in[i];
  admit_item *it = &b->items[i];
  sp_admission a;
  sp_entry r;
  char id[SP_UUID_STRING_LEN + 1];

  memset(&a, 0, sizeof(a));
  if (h->cfg.admit &&
      h->cfg.admit(h, &b->s->peer, e, &a, h->cfg.admit_user_data) != 0) {
    return SP_ERR_CALLBACK_FAILURE;
  }
  b->out[b->nout] = *e;
  switch (h->cfg.admit ? a.decision : SP_ADMIT_ACCEPT) {
  case SP_ADMIT_ACCEPT:
    break;
  case SP_ADMIT_REFUSE: {
    int code = a.code;
    if (code >= 0 || sp_err_is_fatal(code)) {
      code = SP_ERR_REFUSED;
    }
    it->decided = 1;
    it->code = code;
    return set_message(b, it, a.message, a.message ? strlen(a.message) : 0);
  }
  case SP_ADMIT_REPLACE:
    r = a.replacement;
    r.sequence = 0;
    r.device_id = b->s->peer;
    r.origin_seq = e->origin_seq;
    if (!same_record(&r, e) || sp_enc_check_entry(&r) != 0 ||
        sp_enc_entry_len(&r, 1) > sp_entry_max_len(b->s->node)) {
      sp_hlog(h, &b->s->peer, SP_LOG_WARN,
              "admission: replacement for %s/%llu changed the record",
              sp_uuid_format(&b->s->peer, id),
              (unsigned long long)e->origin_seq);
      return refuse(b, it, SP_ERR_REFUSED, "replacement changed the record");
    }
    if (copy_replacement(b, it, &r) != 0) {
      return SP_ERR_NOMEM;
    }
    b->out[b->nout] = r;
    break;
  default:
    sp_hlog(h, &b->s->peer, SP_LOG_WARN,
            "admission: unknown decision %d", (int)a.decision);
    return refuse(b, it, SP_ERR_REFUSED, "unknown admission decision");
  }
  it->append = 1;
  it->index = b->nout++;
  return 0;
}

/* Step 7: one append of everything accepted. */
static int append_accepted(admit_batch *b) {
  sp_handler *h = b->h;
  sp_seq first = 0;
  size_t i;

  if (b->nout == 0) {
    return 0;
  }
  for (i = 0; i < b->n; ++i) {
    admit_item *it = &b->items[i];
    if (it->append && it->replaced) {
      sp_entry *o = &b->out[it->index];
      o->model_type = o->model_type_len
                          ? (const char *)b->arena.data + it->mt_off
                          : NULL;
      o->data = o->data_len ? b->arena.data + it->data_off : NULL;
    }
  }
  if (h->store.append(b->out, b->nout, &first, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  report_appended(h, first, b->nout);
  for (i = 0; i < b->n; ++i) {
    admit_item *it = &b->items[i];
    if (it->append) {
      it->code = 0;
      it->seq = first + it->index;
    }
  }
  return 0;
}

/* The answers, in proposal order, in one frame: messages take what room
 * max_frame leaves, in order (the codes always go). */
static int answer(admit_batch *b) {
  sp_msg msg;
  sp_propose_result *res;
  size_t i, mf = b->s->node->cfg.max_frame, room;
  int rv;

  res = sp_calloc(&b->s->node->mem, b->n, sizeof(*res));
  if (!res) {
    return SP_ERR_NOMEM;
  }
  room = RESULT_HEAD_MAX + b->n * RESULT_ITEM_MAX;
  room = mf > room ? mf - room : 0;
  for (i = 0; i < b->n; ++i) {
    admit_item *it = &b->items[i];
    size_t len = it->msg_len;
    const uint8_t *p = len ? b->arena.data + it->msg_off : NULL;
    if (len > room) {
      len = room;
      while (len > 0 && (p[len] & 0xC0u) == 0x80u) {
        --len;
      }
    }
    room -= len;
    res[i].origin_seq = b->in[i].origin_seq;
    res[i].code = it->code;
    res[i].sequence = it->code == 0 ? it->seq : 0;
    res[i].message = len ? (const char *)p : "";
    res[i].message_len = len;
  }
  memset(&msg, 0, sizeof(msg));
  msg.type = SP_MSG_PROPOSE_RESULT;
  msg.u.propose_result.results = res;
  msg.u.propose_result.result_count = b->n;
  rv = sp_session_queue(b->s, &msg);
  sp_free(&b->s->node->mem, res);
  return rv;
}

/* Step 2: may the proposer write at all?  1 yes, 0 no, <0 failure. */
static int may_write(admit_batch *b) {
  const sp_registry *reg = &b->s->node->reg;
  int ok = 1;

  if (reg->version < 2 || !reg->can_write) {
    return 1;
  }
  if (reg->can_write(&b->h->cfg.library_id, &b->s->peer, &ok,
                     reg->user_data) != 0) {
    return SP_ERR_REGISTRY;
  }
  return ok != 0;
}

static void run_batch(admit_batch *b) {
  size_t i, left = 0;
  int can = 1, rv;

  /* The dedupe first: a submission the log holds was admitted once and
   * is answered as appended even if its device has become read-only or
   * the leader's limits have shrunk since (its first answer was lost; a
   * refusal now would contradict the log the follower will apply). */
  for (i = 0; i < b->n; ++i) {
    admit_item *it = &b->items[i];
    rv = check_shape(b, i);
    if (rv == 0 && !it->decided) {
      rv = check_origin(b, i);
    }
    if (rv != 0) {
      batch_failed(b, rv, rv == SP_ERR_NOMEM ? "out of memory"
                                             : "store find_origin failed");
      return;
    }
    left += !it->decided;
  }
  /* Step 2, for what the log never held: may the proposer write at all? */
  if (left > 0) {
    can = may_write(b);
    if (can < 0) {
      batch_failed(b, can, "registry can_write failed");
      return;
    }
  }
  for (i = 0; i < b->n; ++i) {
    admit_item *it = &b->items[i];
    if (it->decided) {
      continue;
    }
    rv = can ? check_size(b, i)
             : refuse(b, it, SP_ERR_READ_ONLY, "device may not write here");
    if (rv != 0) {
      batch_failed(b, rv, "out of memory");
      return;
    }
  }
  /* The host is asked only about what nothing else decided, and only once
   * no store failure can still throw the frame away before it. */
  for (i = 0; i < b->n; ++i) {
    if (!b->items[i].decided) {
      rv = ask_host(b, i);
      if (rv != 0) {
        batch_failed(b, rv, rv == SP_ERR_CALLBACK_FAILURE
                                ? "admission callback failed"
                                : "out of memory");
        return;
      }
    }
  }
  rv = append_accepted(b);
  if (rv != 0) {
    batch_failed(b, rv, "store append failed");
    return;
  }
  rv = answer(b);
  /* Whatever became of the answer, the entries are in the log: every
   * other follower (and the proposer's next stream) must hear of them. */
  if (b->nout > 0 && sp_leader_announce(b->h) != 0) {
    /* The entries are in; followers learn of them on the next notify. */
    sp_slog(b->s, SP_LOG_WARN, "admission: store bounds failed");
  }
  if (rv != 0) {
    batch_failed(b, rv, "answering a proposal failed");
  }
}

/* Answers a follower may leave unread: every proposal of its window
 * (SP_MAX_PROPOSE_ENTRIES at most) refused with a whole message, beside
 * a page and a results frame.  One that proposes more without reading
 * would make the leader hold its answers without bound. */
static size_t out_max(const sp_node *node) {
  return 2 * (size_t)node->cfg.max_frame +
         SP_MAX_PROPOSE_ENTRIES * (RESULT_ITEM_MAX + SP_MAX_ERROR_MESSAGE_LEN);
}

void sp_admit_on_propose(sp_session *s, const sp_msg_propose *m) {
  sp_handler *h = s->handler;
  sp_node *node = s->node;
  admit_batch b;

  if (h->role != SP_ROLE_LEADER || h->stepped_down ||
      !(s->features & SP_FEATURE_WRITES)) {
    return;
  }
  if (sp_buf_pending(&s->out) > out_max(node)) {
    sp_session_refuse(s, SP_ERR_TOO_MANY_REQUESTS,
                      "proposing while not reading the answers");
    return;
  }
  memset(&b, 0, sizeof(b));
  b.s = s;
  b.h = h;
  b.in = m->entries;
  b.n = m->entry_count;
  if (b.n == 0) {
    return;
  }
  sp_buf_init(&b.arena, &node->mem);
  b.items = sp_calloc(&node->mem, b.n, sizeof(*b.items));
  b.out = sp_calloc(&node->mem, b.n, sizeof(*b.out));
  if (!b.items || !b.out) {
    batch_failed(&b, SP_ERR_NOMEM, "out of memory");
  } else {
    run_batch(&b);
  }
  sp_free(&node->mem, b.items);
  sp_free(&node->mem, b.out);
  sp_buf_free(&b.arena);
}

/* ---- the leader's own submissions ---- */

/* The highest origin_seq this device ever used: in the log, and in its
 * outbox (items from a follower term, not committed yet, hold numbers the
 * log does not know of: they must not be given out again). */
static int next_own_origin(sp_handler *h, uint64_t *high) {
  sp_outbox_stats st;
  sp_seq seq = 0;

  if (h->store.find_origin(&h->node->cfg.device_id, 0, &seq, high,
                           h->store.user_data) != 0 ||
      h->store.outbox_stats(&st, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  if (st.next_origin > 0 && st.next_origin - 1 > *high) {
    *high = st.next_origin - 1;
  }
  return 0;
}

/* Items of a follower term still in this device's outbox, read in
 * origin order, a bounded batch at a time. */
#define DRAIN_BATCH_BYTES (1024u * 1024u)
#define DRAIN_BATCH_MAX 256u

typedef struct drain_ctx {
  sp_entry e[DRAIN_BATCH_MAX];
  size_t mt_off[DRAIN_BATCH_MAX];
  size_t data_off[DRAIN_BATCH_MAX];
  size_t n;
  sp_buf arena;
  int nomem;
} drain_ctx;

static int drain_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                      void *arg) {
  drain_ctx *c = arg;

  (void)hash;
  if (c->n > 0 && c->arena.len + e->model_type_len + e->data_len >
                      DRAIN_BATCH_BYTES) {
    return SP_SINK_STOP;
  }
  c->e[c->n] = *e;
  c->mt_off[c->n] = c->arena.len;
  if (e->model_type_len &&
      sp_buf_append(&c->arena, e->model_type, e->model_type_len) != 0) {
    c->nomem = 1;
    return SP_SINK_STOP;
  }
  c->data_off[c->n] = c->arena.len;
  if (e->data_len && sp_buf_append(&c->arena, e->data, e->data_len) != 0) {
    c->nomem = 1;
    return SP_SINK_STOP;
  }
  return ++c->n == DRAIN_BATCH_MAX ? SP_SINK_STOP : 0;
}

/* One batch, the items after `*after`: what the log's committed set
 * holds already (a crash came between the append and the removal, or a
 * full sync brought it) is only removed from the outbox, the rest
 * appended with its origin in one call, then removed.  Returns the items
 * handled (`*after` moves past them), or < 0. */
static int drain_batch(sp_handler *h, drain_ctx *c, uint64_t *after,
                       size_t *appended) {
  const sp_uuid *self = &h->node->cfg.device_id;
  sp_seq seqs[DRAIN_BATCH_MAX], first = 0;
  uint64_t origins[DRAIN_BATCH_MAX], high;
  unsigned char held[DRAIN_BATCH_MAX];
  size_t i, k = 0;
  int rv;

  c->n = 0;
  c->nomem = 0;
  sp_buf_reset(&c->arena);
  if (h->store.outbox_read(*after, DRAIN_BATCH_MAX, drain_sink, c,
                           h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  if (c->nomem) {
    return SP_ERR_NOMEM;
  }
  for (i = 0; i < c->n; ++i) {
    sp_entry *e = &c->e[i];
    e->model_type = e->model_type_len
                        ? (const char *)c->arena.data + c->mt_off[i]
                        : NULL;
    e->data = e->data_len ? c->arena.data + c->data_off[i] : NULL;
    e->device_id = *self;
    e->sequence = 0;
    origins[i] = e->origin_seq;
    seqs[i] = 0;
    rv = h->store.find_origin(self, e->origin_seq, &seqs[i], &high,
                              h->store.user_data);
    if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
      return SP_ERR_STORE;
    }
    held[i] = rv == 0;
    if (!held[i]) {
      c->e[k++] = *e; /* k <= i: compacts in place */
    }
  }
  if (k > 0 && h->store.append(c->e, k, &first, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  if (k > 0) {
    report_appended(h, first, k);
  }
  *appended += k;
  for (i = 0, k = 0; i < c->n; ++i) {
    if (!held[i]) {
      seqs[i] = first + k++; /* appended in order */
    }
    rv = h->store.outbox_remove(origins[i], h->store.user_data);
    if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
      return SP_ERR_STORE; /* in the log: the next drain removes it */
    }
    *after = origins[i];
    /* As a follower's apply would: the event, and the commit waits the
     * host registered on this leader end (seq 0: below the retained
     * log). */
    sp_writer_report_committed(h, NULL, origins[i], seqs[i]);
  }
  return (int)c->n;
}

/* Items an outbox got before it was ever anchored were never proposed:
 * number them above what the log holds of this device (a former install
 * of it may have used the same numbers), as a follower does when its
 * first leader answers. */
static int anchor_own(sp_handler *h) {
  const sp_uuid *self = &h->node->cfg.device_id;
  sp_seq seq = 0;
  uint64_t high = 0;

  if (h->store.find_origin(self, 0, &seq, &high, h->store.user_data) != 0 ||
      h->store.outbox_anchor(self, high, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  return 0;
}

/* Pending items of this device's outbox go into the log before anything
 * the leader's host submits now: as a follower they would have, and left
 * there they would never be committed (a leader proposes nothing).  The
 * committed set says which are in the log already, so a drain cut short
 * anywhere is finished by the next one without appending twice. */
int sp_admit_drain_outbox(sp_handler *h) {
  sp_outbox_stats st;
  drain_ctx *c;
  uint64_t after = 0;
  size_t appended = 0;
  int rv = 0;

  if (!sp_store_has_writes(&h->store)) {
    return 0;
  }
  if (h->store.outbox_stats(&st, h->store.user_data) != 0) {
    return SP_ERR_STORE;
  }
  if (st.items == 0) {
    return 0;
  }
  if (!st.anchored && anchor_own(h) != 0) {
    return SP_ERR_STORE;
  }
  c = sp_calloc(&h->node->mem, 1, sizeof(*c));
  if (!c) {
    return SP_ERR_NOMEM;
  }
  sp_buf_init(&c->arena, &h->node->mem);
  do {
    rv = drain_batch(h, c, &after, &appended);
  } while (rv > 0);
  sp_buf_free(&c->arena);
  sp_free(&h->node->mem, c);
  if (appended > 0 && sp_leader_announce(h) != 0 && rv == 0) {
    rv = SP_ERR_STORE;
  }
  return rv;
}

/* A drain succeeded: the episode, if one was open, is over and the next
 * one backs off from reconnect_min again. */
static void drain_ok(sp_handler *h) {
  if (h->drain_failing) {
    sp_hlog(h, NULL, SP_LOG_INFO, "outbox drained after a store failure");
  }
  sp_admit_drain_stop(h);
}

/* A drain failed: its items stay in the outbox, and a host that never
 * submits again would leave them there for the whole term, so the drain
 * is retried on a timer.  The host hears of an episode once, when it
 * opens (`report`: not when the failure is returned to it), not of every
 * retry. */
static void drain_failed(sp_handler *h, int rv, int report) {
  sp_event ev = {0};

  if (!h->drain_failing) {
    h->drain_failing = 1;
    sp_hlog(h, NULL, SP_LOG_WARN, "draining the outbox: %s", sp_err_name(rv));
    if (report) {
      ev.error_code = rv;
      ev.message = "draining the outbox failed";
      sp_emit_simple(h, SP_EVENT_ERROR, NULL, &ev);
    }
  }
  h->drain_at = sp_handler_backoff(h, &h->drain_backoff);
}

static int drain_now(sp_handler *h, int report) {
  int rv = sp_admit_drain_outbox(h);

  if (rv == 0) {
    drain_ok(h);
  } else {
    drain_failed(h, rv, report);
  }
  return rv;
}

/* A new term: what this device submitted as a follower and its old leader
 * never committed is appended now.  A failure does not hold the term up:
 * it is told to the host and retried on the leader's timers (and at the
 * next submit). */
void sp_admit_drain_at_start(sp_handler *h) {
  sp_admit_drain_stop(h);
  (void)drain_now(h, 1);
}

void sp_admit_drain_stop(sp_handler *h) {
  h->drain_failing = 0;
  h->drain_at = SP_TSTAMP_MAX;
  h->drain_backoff = 0;
}

sp_tstamp sp_admit_drain_expiry(const sp_handler *h) {
  return h->drain_failing && h->role == SP_ROLE_LEADER && !h->stepped_down
             ? h->drain_at
             : SP_TSTAMP_MAX;
}

void sp_admit_drain_expire(sp_handler *h, sp_tstamp now) {
  if (h->drain_failing && sp_admit_drain_expiry(h) <= now) {
    (void)drain_now(h, 0);
  }
}

int sp_admit_submit_local(sp_handler *h, const sp_entry *entries, size_t n,
                          uint64_t *first_origin) {
  sp_node *node;
  const sp_uuid *self;
  sp_entry *out;
  sp_seq first = 0;
  uint64_t high = 0;
  size_t i;
  int rv;

  if (!h || !entries || n == 0 || n > SP_MAX_PROPOSE_ENTRIES) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  node = h->node;
  self = &node->cfg.device_id;
  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return SP_ERR_INVALID_STATE;
  }
  if (!sp_store_has_writes(&h->store)) {
    return SP_ERR_NOT_SUPPORTED;
  }
  /* The outbox's items go first; a failure is returned to the host, who
   * learns of the episode that way, and the timer keeps retrying. */
  rv = drain_now(h, 0);
  if (rv != 0) {
    return rv;
  }
  out = sp_calloc(&node->mem, n, sizeof(*out));
  if (!out) {
    return SP_ERR_NOMEM;
  }
  for (i = 0; i < n; ++i) {
    static const sp_uuid zero;
    out[i] = entries[i];
    if (!sp_uuid_equal(&out[i].device_id, &zero) &&
        !sp_uuid_equal(&out[i].device_id, self)) {
      rv = SP_ERR_INVALID_ARGUMENT;
      goto done;
    }
    out[i].device_id = *self;
    out[i].sequence = 0;
    out[i].origin_seq = 1; /* sized as the smallest; checked again below */
    if (sp_enc_check_entry(&out[i]) != 0) {
      rv = SP_ERR_INVALID_ARGUMENT;
      goto done;
    }
  }
  rv = next_own_origin(h, &high);
  if (rv != 0) {
    goto done;
  }
  for (i = 0; i < n; ++i) {
    out[i].origin_seq = high + 1 + i;
    if (sp_enc_entry_len(&out[i], 1) > sp_entry_max_len(node)) {
      rv = SP_ERR_INVALID_ARGUMENT;
      goto done;
    }
  }
  if (high > SP_MAX_ORIGIN_SEQ - n) {
    rv = SP_ERR_INVALID_STATE; /* origin ids exhausted */
    goto done;
  }
  /* The outbox numbers on from past these before they exist: were the
   * counter raised after the append, a crash in between would let an
   * offline submit as a follower reuse an origin id the log holds. */
  if (h->store.outbox_anchor(self, high + n, h->store.user_data) != 0) {
    rv = SP_ERR_STORE;
    goto done;
  }
  if (h->store.append(out, n, &first, h->store.user_data) != 0) {
    rv = SP_ERR_STORE;
    goto done;
  }
  report_appended(h, first, n);
  if (first_origin) {
    *first_origin = high + 1;
  }
  for (i = 0; i < n; ++i) {
    sp_writer_report_committed(h, NULL, high + 1 + i, first + i);
  }
  rv = sp_leader_announce(h);
done:
  sp_free(&node->mem, out);
  return rv;
}
