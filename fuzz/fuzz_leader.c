/*
 * fuzz_leader.c: one node leading library L, driven by arbitrary bytes
 * from its followers and by its host.
 *
 * The node (device X) leads L over an in-memory store pre-filled with a
 * few entries, behind the failing store of fuzz_session_util.c.  Its
 * registry lists X, F1 and F2 as members; N is a device that is not one.
 *
 * Input: an 8-byte header, then operations (fuzz_session_util.h lists the
 * common ones).
 *
 *   hdr[0] flags: 1 push_inline off; 2 small response budget
 *          (64 + 32 * (hdr[3] & 15) bytes); 4 retention cap
 *          1 + (hdr[3] >> 4); 8 small max frame 256 + 64 * (hdr[4] & 15);
 *          16 max_queued_fetches 1 + ((hdr[4] >> 4) & 3); 32 heartbeat
 *          interval 1 s, timeout factor 2; 64 log lines on; 128 new local
 *          streams start connecting
 *   hdr[1] pre-filled entries hdr[1] & 15, payload class hdr[1] >> 4
 *   hdr[2] epoch 1 + (hdr[2] & 7); pruned through (hdr[2] >> 3) & 7
 *          after filling; 64: a gap at sequence 3
 *   hdr[3], hdr[4] parameters of the flags above
 *   hdr[5] failure mask while the handler is created (one shot)
 *   hdr[6] node seed
 *   hdr[7] snapshot chunk size 64 << (2 * (hdr[7] & 3))
 *
 * Role operations (op byte = kind << 4 | p):
 *   0x4p u8   append 1 + (p & 3) entries of class u8 & 15 (p & 4: skip
 *             one sequence first); then notify_new_entries unless p & 8
 *   0x9p ...  host API, p: 0 wait_acks(seq u8, min u8 % 4, deadline
 *             now + time step u8); 1 list_followers(cap u8 % 5);
 *             2 follower_progress(device u8 & 3); 3 retention_floor;
 *             4 notify_new_entries(u8, u8); 5 set_role(leader,
 *             epoch + (u8 & 3)); 6 follower-only calls; 7 stream calls
 *             with a wrong peer or NULL data (u8 picks); 8 handle_expiry
 *             now; 9 get_status
 *   0xap u8   prune the store (p & 1: through the retention floor; else
 *             through latest - u8 % (latest + 1))
 *   0xbp f b v  a synthesized frame from the current stream's peer,
 *             p & 7: 0 FetchEntries(since pick(b), limit by f, since_hash
 *             none/right/wrong/zeros by f >> 6); 1 Acknowledge(pick(b));
 *             2 Heartbeat(pick(b), role f & 1); 3 Error; 4 NewEntries;
 *             5 EntriesResponse; 6 SyncRequired (wrong role, all three);
 *             7 1 + (f & 7) FetchEntries in a row.  v & 3 picks the epoch
 *             (ours, +1, -1, 0), v & 4 another library, v & 8 features
 *             v >> 4 on a FetchEntries (0).
 *   0xbp f b v with p & 8: the snapshot path, f & 3: 0 Heartbeat with
 *             features SNAPSHOT (f & 4: and WRITES); 1 SnapshotRequest
 *             (f & 4: resume the newest offer, have_chunks b, or an id
 *             never offered if none; f & 8: max_frame 256 + 16 b); 2
 *             SnapshotFetch of the newest offer (f & 4: another id; f & 8:
 *             past its end) from chunk b, count 1 + 4 (f >> 4);
 *             3 the verify FetchEntries(since S of the newest offer,
 *             limit 1, since_hash its hash_at; f & 4: one bit off)
 *   0xdp      nothing
 *
 * Oracles (besides the common ones): only leader messages are sent, with
 * the leader's epoch; every EntriesResponse holds exactly the log's
 * entries of (since, through], byte-identical, with the log's chain hash;
 * NewEntries, Heartbeat and SyncRequired never claim more than the log
 * holds; events are leader events; return codes are documented ones.
 * Snapshots (the handler has the in-memory store's source): a manifest's
 * S is in the log, its hash_at the log's link at S, its sizes agree, and
 * one id never names two contents; every SnapshotChunk is of an id the
 * leader offered, at an index its manifest has, with the length and the
 * chunk hash that manifest promised.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_session_util.h"

#define L_MAX_OFFERS 16

/* One SnapshotManifest the leader sent: what it promised. */
typedef struct l_offer {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  sp_seq sequence;
  uint8_t hash_at[SP_HASH_LEN];
  uint64_t total_size;
  uint32_t chunk_size;
  size_t chunk_count;
  uint8_t *hashes; /* chunk_count * SP_HASH_LEN */
} l_offer;

typedef struct leader_ctx {
  fsu_world w; /* first: the hooks cast */
  /* Every entry ever appended: its class (0xff: none) and chain hash. */
  uint8_t cls[FSU_MAX_SEQ + 1];
  uint8_t hash[FSU_MAX_SEQ + 1][SP_HASH_LEN];
  sp_seq latest;
  uint64_t epoch;
  /* Snapshots the leader offered (manifests it sent), newest last. */
  l_offer offers[L_MAX_OFFERS];
  size_t noffers;
  sp_snapshot_source src;
} leader_ctx;

static leader_ctx *ctx_of(fsu_world *w) { return (leader_ctx *)w; }

/* ---- the log ---- */

static void append_entry(leader_ctx *c, sp_seq seq, unsigned cls) {
  static uint8_t buf[FSU_PAYLOAD_MAX];
  sp_entry e;
  sp_seq got = 0;

  fsu_make_entry(&e, seq, cls, buf);
  if (sp_mem_store_append(c->w.store, &e, &got) != 0 || got != seq ||
      sp_mem_store_get(c->w.store, seq, &e, c->hash[seq]) != 0) {
    fsu_fail("the host could not append entry %llu", (unsigned long long)seq);
  }
  c->cls[seq] = (uint8_t)cls;
  c->latest = seq;
}

/* The chain link at `seq` as the log holds it (zeros for 0 or a gap). */
static void link_at(const leader_ctx *c, sp_seq seq, uint8_t out[SP_HASH_LEN]) {
  memset(out, 0, SP_HASH_LEN);
  if (seq > 0 && seq <= c->latest && c->cls[seq] != 0xff) {
    memcpy(out, c->hash[seq], SP_HASH_LEN);
  }
}

static sp_seq pick(const leader_ctx *c, uint8_t b) {
  sp_seq k = b >> 2;

  switch (b & 3) {
  case 0:
    return c->latest;
  case 1:
    return c->latest > k ? c->latest - k : 0;
  case 2:
    return k;
  default:
    return c->latest + 1 + k;
  }
}

static sp_seq store_latest(fsu_world *w) {
  sp_log_bounds b;

  if (w->inner.bounds(&b, w->inner.user_data) != 0) {
    fsu_fail("the in-memory store has no bounds");
  }
  return b.latest;
}

/* ---- checks ---- */

static void check_page(leader_ctx *c, fsu_stream *s,
                       const sp_msg_entries_response *r) {
  static uint8_t buf[FSU_PAYLOAD_MAX];
  sp_seq q;
  size_t expect = 0, i;

  if (r->through_sequence > c->latest || r->leader_latest > c->latest ||
      r->leader_latest < r->through_sequence) {
    fsu_fail("stream %llu: page (%llu, %llu] latest %llu, the log ends at "
             "%llu",
             (unsigned long long)s->id, (unsigned long long)r->since_sequence,
             (unsigned long long)r->through_sequence,
             (unsigned long long)r->leader_latest,
             (unsigned long long)c->latest);
  }
  if (r->has_more && r->through_sequence >= c->latest) {
    fsu_fail("page says has_more at the end of the log");
  }
  for (q = r->since_sequence + 1; q <= r->through_sequence; ++q) {
    expect += c->cls[q] != 0xff;
  }
  if (expect != r->entry_count) {
    fsu_fail("page (%llu, %llu] holds %zu entries, the log %zu",
             (unsigned long long)r->since_sequence,
             (unsigned long long)r->through_sequence, r->entry_count, expect);
  }
  for (i = 0; i < r->entry_count; ++i) {
    const sp_entry *got = &r->entries[i];
    sp_entry want;
    if (got->sequence > c->latest || c->cls[got->sequence] == 0xff) {
      fsu_fail("page holds entry %llu, which the log does not",
               (unsigned long long)got->sequence);
    }
    fsu_make_entry(&want, got->sequence, c->cls[got->sequence], buf);
    if (!fsu_entry_equal(got, &want)) {
      fsu_fail("page entry %llu differs from the log's",
               (unsigned long long)got->sequence);
    }
  }
  if (r->entry_count == 0) {
    if (r->last_hash_len != 0) {
      fsu_fail("empty page with a last_hash");
    }
  } else if (r->last_hash_len != SP_HASH_LEN ||
             memcmp(r->last_hash,
                    c->hash[r->entries[r->entry_count - 1].sequence],
                    SP_HASH_LEN) != 0) {
    fsu_fail("page last_hash is not the log's link at %llu",
             (unsigned long long)r->entries[r->entry_count - 1].sequence);
  }
}

static l_offer *find_offer(leader_ctx *c, const uint8_t *id) {
  size_t i = c->noffers;

  while (i-- > 0) {
    if (memcmp(c->offers[i].id, id, SP_SNAPSHOT_ID_LEN) == 0) {
      return &c->offers[i];
    }
  }
  return NULL;
}

/* A manifest is of the log as it stood: S within what was appended, its
 * hash_at the log's link at S, its sizes consistent.  It is remembered
 * (the same id again replaces it: the bytes must not change). */
static void check_manifest(leader_ctx *c, const sp_msg_snapshot_manifest *m) {
  uint8_t link[SP_HASH_LEN];
  uint64_t want_count;
  l_offer *o;

  link_at(c, m->sequence, link);
  want_count = m->chunk_size ? (m->total_size + m->chunk_size - 1) /
                                   m->chunk_size
                             : 0;
  if (m->sequence > c->latest || m->chunk_size == 0 ||
      m->chunk_count != want_count ||
      (m->sequence > 0 && c->cls[m->sequence] != 0xff &&
       memcmp(link, m->hash_at, SP_HASH_LEN) != 0) ||
      m->snap_epoch > c->epoch) {
    fsu_fail("SnapshotManifest{S %llu, size %llu, chunk %u x %zu, epoch "
             "%llu} with the log at %llu, epoch %llu (or hash_at is not the "
             "log's link at S)",
             (unsigned long long)m->sequence,
             (unsigned long long)m->total_size, m->chunk_size, m->chunk_count,
             (unsigned long long)m->snap_epoch,
             (unsigned long long)c->latest, (unsigned long long)c->epoch);
  }
  o = find_offer(c, m->id);
  if (o && (o->total_size != m->total_size || o->chunk_size != m->chunk_size ||
            o->chunk_count != m->chunk_count ||
            memcmp(o->hashes, m->chunk_hashes,
                   m->chunk_count * SP_HASH_LEN) != 0)) {
    fsu_fail("snapshot offered twice under one id with different content");
  }
  if (o) {
    return;
  }
  if (c->noffers == L_MAX_OFFERS) {
    free(c->offers[0].hashes);
    memmove(&c->offers[0], &c->offers[1],
            (L_MAX_OFFERS - 1) * sizeof(c->offers[0]));
    c->noffers--;
  }
  o = &c->offers[c->noffers++];
  memcpy(o->id, m->id, SP_SNAPSHOT_ID_LEN);
  o->sequence = m->sequence;
  memcpy(o->hash_at, m->hash_at, SP_HASH_LEN);
  o->total_size = m->total_size;
  o->chunk_size = m->chunk_size;
  o->chunk_count = m->chunk_count;
  o->hashes = malloc(m->chunk_count * SP_HASH_LEN + 1);
  if (!o->hashes) {
    fsu_fail("out of memory in the harness");
  }
  memcpy(o->hashes, m->chunk_hashes, m->chunk_count * SP_HASH_LEN);
}

/* A chunk belongs to a snapshot offered before, at an index it has, with
 * the length and the hash its manifest promised. */
static void check_chunk(leader_ctx *c, fsu_stream *s,
                        const sp_msg_snapshot_chunk *k) {
  const l_offer *o = find_offer(c, k->id);
  uint8_t hash[SP_HASH_LEN];
  uint64_t want_len;

  if (!o || k->index >= o->chunk_count) {
    fsu_fail("stream %llu: SnapshotChunk %llu of a snapshot (or an index) "
             "never offered",
             (unsigned long long)s->id, (unsigned long long)k->index);
  }
  want_len = k->index + 1 < o->chunk_count
                 ? o->chunk_size
                 : o->total_size - k->index * o->chunk_size;
  if (k->data_len != want_len ||
      sp_snapshot_chunk_hash(k->id, k->index, k->data, k->data_len, hash) !=
          0 ||
      memcmp(hash, o->hashes + k->index * SP_HASH_LEN, SP_HASH_LEN) != 0) {
    fsu_fail("SnapshotChunk %llu (%zu bytes) is not the one the manifest "
             "promised",
             (unsigned long long)k->index, k->data_len);
  }
}

static void l_check_sent(fsu_world *w, fsu_stream *s, const sp_msg *msg) {
  leader_ctx *c = ctx_of(w);
  uint64_t epoch = sp_handler_epoch(w->h);

  if (msg->type == SP_MSG_ERROR) {
    if (msg->epoch != 0 && msg->epoch != epoch) {
      fsu_fail("Error frame with epoch %llu (leader at %llu)",
               (unsigned long long)msg->epoch, (unsigned long long)epoch);
    }
    return;
  }
  if (msg->epoch != epoch) {
    fsu_fail("leader message %d with epoch %llu, not its own %llu",
             (int)msg->type, (unsigned long long)msg->epoch,
             (unsigned long long)epoch);
  }
  switch (msg->type) {
  case SP_MSG_NEW_ENTRIES: {
    const sp_msg_new_entries *n = &msg->u.new_entries;
    if (n->from_sequence == 0 || n->from_sequence > n->to_sequence ||
        n->to_sequence > c->latest ||
        n->entry_count != n->to_sequence - n->from_sequence + 1) {
      fsu_fail("NewEntries{%llu, %llu, %llu} with the log at %llu",
               (unsigned long long)n->from_sequence,
               (unsigned long long)n->to_sequence,
               (unsigned long long)n->entry_count,
               (unsigned long long)c->latest);
    }
    break;
  }
  case SP_MSG_ENTRIES_RESPONSE:
    check_page(c, s, &msg->u.entries_response);
    break;
  case SP_MSG_HEARTBEAT:
    if (msg->u.heartbeat.role != SP_ROLE_LEADER ||
        msg->u.heartbeat.current_sequence > c->latest) {
      fsu_fail("leader Heartbeat{%llu, role %d} with the log at %llu",
               (unsigned long long)msg->u.heartbeat.current_sequence,
               (int)msg->u.heartbeat.role, (unsigned long long)c->latest);
    }
    break;
  case SP_MSG_PROPOSE_RESULT: {
    /* Only on a stream whose follower advertised writes, one answer per
     * proposal: appended (a sequence in the log) or refused (a code). */
    const sp_msg_propose_result *r = &msg->u.propose_result;
    size_t i;
    for (i = 0; i < r->result_count; ++i) {
      const sp_propose_result *x = &r->results[i];
      /* Code 0 with sequence 0: appended once, pruned since. */
      if (x->code > 0 || sp_err_is_fatal(x->code) ||
          (x->code != 0 && x->sequence != 0) || x->sequence > c->latest) {
        fsu_fail("ProposeResult{origin %llu, code %d, sequence %llu}",
                 (unsigned long long)x->origin_seq, (int)x->code,
                 (unsigned long long)x->sequence);
      }
    }
    break;
  }
  case SP_MSG_SNAPSHOT_MANIFEST:
    check_manifest(c, &msg->u.snapshot_manifest);
    break;
  case SP_MSG_SNAPSHOT_CHUNK:
    check_chunk(c, s, &msg->u.snapshot_chunk);
    break;
  case SP_MSG_SYNC_REQUIRED:
    if (msg->u.sync_required.leader_latest > c->latest ||
        msg->u.sync_required.leader_oldest == 0) {
      fsu_fail("SyncRequired{latest %llu, oldest %llu} with the log at %llu",
               (unsigned long long)msg->u.sync_required.leader_latest,
               (unsigned long long)msg->u.sync_required.leader_oldest,
               (unsigned long long)c->latest);
    }
    break;
  default:
    fsu_fail("the leader sent a follower's message, type %d", (int)msg->type);
  }
}

static void l_check_state(fsu_world *w) {
  leader_ctx *c = ctx_of(w);
  sp_handler_status st;

  fsu_status(w, &st);
  if (st.role != SP_ROLE_LEADER || st.epoch != c->epoch ||
      st.sequence > c->latest || st.sync_required) {
    fsu_fail("leader status: role %d epoch %llu (want %llu) sequence %llu "
             "(log %llu)",
             (int)st.role, (unsigned long long)st.epoch,
             (unsigned long long)c->epoch, (unsigned long long)st.sequence,
             (unsigned long long)c->latest);
  }
}

static void l_check_event(fsu_world *w, const sp_event *ev) {
  leader_ctx *c = ctx_of(w);

  switch (ev->type) {
  case SP_EVENT_ENTRIES_APPLIED:
  case SP_EVENT_CAUGHT_UP:
  case SP_EVENT_SYNC_REQUIRED_RECEIVED:
  case SP_EVENT_STORE_FAILED:
  case SP_EVENT_STORE_RECOVERED:
  case SP_EVENT_SUBMISSION_REFUSED:
  case SP_EVENT_SNAPSHOT_PROGRESS:
  case SP_EVENT_SNAPSHOT_INSTALLED:
  case SP_EVENT_SNAPSHOT_FAILED:
    fsu_fail("the leader reported follower event %d", (int)ev->type);
  case SP_EVENT_ENTRIES_APPENDED:
    if (ev->from_sequence >= ev->to_sequence ||
        ev->from_sequence < c->latest) {
      fsu_fail("appended (%llu, %llu] over the host's latest %llu",
               (unsigned long long)ev->from_sequence,
               (unsigned long long)ev->to_sequence,
               (unsigned long long)c->latest);
    }
    break;
  case SP_EVENT_SUBMISSION_COMMITTED:
    /* to_sequence 0: committed below the retained log. */
    if (ev->origin_seq == 0 || ev->to_sequence > c->latest) {
      fsu_fail("committed event for origin %llu at %llu",
               (unsigned long long)ev->origin_seq,
               (unsigned long long)ev->to_sequence);
    }
    break;
  case SP_EVENT_STEPPED_DOWN:
    if (ev->epoch <= c->epoch) {
      fsu_fail("stepped down for epoch %llu, not above %llu",
               (unsigned long long)ev->epoch, (unsigned long long)c->epoch);
    }
    break;
  case SP_EVENT_ROLE_CONFLICT:
    if (ev->epoch != c->epoch) {
      fsu_fail("role conflict at epoch %llu, ours is %llu",
               (unsigned long long)ev->epoch, (unsigned long long)c->epoch);
    }
    break;
  case SP_EVENT_ACK_RECEIVED:
    if (!ev->has_peer || !ev->progress ||
        ev->progress->acked_sequence > c->latest ||
        !sp_uuid_equal(&ev->progress->device_id, &ev->peer_id)) {
      fsu_fail("ack event for %llu, the log ends at %llu",
               ev->progress ? (unsigned long long)ev->progress->acked_sequence
                            : 0ull,
               (unsigned long long)c->latest);
    }
    break;
  case SP_EVENT_SYNC_REQUIRED_SENT:
    if (ev->sync_reason < SP_SYNC_BEHIND_RETENTION ||
        ev->sync_reason > SP_SYNC_RETENTION_CAP ||
        ev->leader_latest > c->latest) {
      fsu_fail("SyncRequired event reason %d latest %llu",
               (int)ev->sync_reason, (unsigned long long)ev->leader_latest);
    }
    break;
  default:
    break;
  }
}

static const fsu_role_ops leader_ops = {l_check_sent, l_check_state,
                                        l_check_event};

/* ---- operations ---- */

static void op_append(leader_ctx *c, unsigned p, fsu_in *in) {
  fsu_world *w = &c->w;
  unsigned n = 1 + (p & 3), cls = fsu_u8(in) & 15, i;
  sp_seq from = c->latest;
  int rv;

  for (i = 0; i < n; ++i) {
    sp_seq seq = c->latest + 1 + ((p & 4) && i == 0 ? 1 : 0);
    if (seq > FSU_MAX_SEQ) {
      break;
    }
    append_entry(c, seq, cls);
  }
  if (p & 8) {
    return;
  }
  FSU_CALL(w, rv,
           sp_handler_notify_new_entries(w->h, from, c->latest, w->now));
  fsu_rc(w, "sp_handler_notify_new_entries", rv, 1, 0, SP_ERR_INVALID_STATE,
         SP_ERR_STORE, FSU_END);
}

static void check_progress(leader_ctx *c, const sp_follower_progress *p,
                           sp_seq cached_latest) {
  int d;

  for (d = 0; d < FSU_NDEV; ++d) {
    if (sp_uuid_equal(&p->device_id, &fsu_dev[d])) {
      break;
    }
  }
  if (d == FSU_NDEV || d == FSU_N) {
    fsu_fail("progress of device %d, not a member", d);
  }
  if (p->acked_sequence > c->latest ||
      p->lag != (cached_latest > p->acked_sequence
                     ? cached_latest - p->acked_sequence
                     : 0) ||
      (!p->has_acked && p->since_last_ack != SP_TSTAMP_MAX)) {
    fsu_fail("progress: acked %llu lag %llu (latest %llu)",
             (unsigned long long)p->acked_sequence,
             (unsigned long long)p->lag, (unsigned long long)cached_latest);
  }
}

static void op_api(leader_ctx *c, unsigned p, fsu_in *in) {
  fsu_world *w = &c->w;
  sp_handler_status st;
  int rv;

  switch (p) {
  case 0: {
    sp_seq seq = pick(c, fsu_u8(in));
    size_t min = fsu_u8(in) % 4;
    sp_tstamp deadline = w->now + fsu_time_step(fsu_u8(in));
    FSU_CALL(w, rv,
             sp_handler_wait_acks(w->h, seq, min, deadline, fsu_wait_cb, w,
                                  w->now));
    fsu_rc(w, "sp_handler_wait_acks", rv, 0, 1, 0, SP_ERR_INVALID_STATE,
           SP_ERR_REGISTRY, SP_ERR_NOMEM, FSU_END);
    if (rv == 0) {
      w->waits_pending++;
    }
    break;
  }
  case 1: {
    sp_follower_progress out[4];
    size_t cap = fsu_u8(in) % 5, i;
    sp_ssize n;
    FSU_CALL(w, n, sp_handler_list_followers(w->h, out, cap, w->now));
    if (n < 0 || n > 3) {
      fsu_fail("list_followers returned %lld", (long long)n);
    }
    fsu_status(w, &st);
    for (i = 0; i < (size_t)n && i < cap; ++i) {
      size_t k;
      check_progress(c, &out[i], st.sequence);
      for (k = 0; k < i; ++k) {
        if (sp_uuid_equal(&out[k].device_id, &out[i].device_id)) {
          fsu_fail("list_followers lists a device twice");
        }
      }
    }
    break;
  }
  case 2: {
    sp_follower_progress out;
    int d = fsu_u8(in) & 3;
    FSU_CALL(w, rv,
             sp_handler_follower_progress(w->h, &fsu_dev[d], w->now, &out));
    fsu_rc(w, "sp_handler_follower_progress", rv, 0, 0, SP_ERR_NOT_FOUND,
           FSU_END);
    if (rv == 0) {
      fsu_status(w, &st);
      check_progress(c, &out, st.sequence);
      if (!sp_uuid_equal(&out.device_id, &fsu_dev[d])) {
        fsu_fail("progress of another device");
      }
    }
    break;
  }
  case 3: {
    sp_seq floor = 0;
    FSU_CALL(w, rv, sp_handler_retention_floor(w->h, &floor));
    fsu_rc(w, "sp_handler_retention_floor", rv, 0, 0, SP_ERR_REGISTRY,
           SP_ERR_STORE, SP_ERR_NOMEM, FSU_END);
    if (rv == 0 && floor > store_latest(w)) {
      fsu_fail("retention floor %llu past the log's end %llu",
               (unsigned long long)floor,
               (unsigned long long)store_latest(w));
    }
    break;
  }
  case 4: {
    sp_seq from = fsu_u8(in), to = fsu_u8(in);
    FSU_CALL(w, rv, sp_handler_notify_new_entries(w->h, from, to, w->now));
    if (from > to) {
      fsu_rc(w, "sp_handler_notify_new_entries(from > to)", rv, 0,
             SP_ERR_INVALID_ARGUMENT, FSU_END);
    } else {
      fsu_rc(w, "sp_handler_notify_new_entries", rv, 1, 0,
             SP_ERR_INVALID_STATE, SP_ERR_STORE, FSU_END);
    }
    break;
  }
  case 5: {
    uint64_t epoch = c->epoch + (fsu_u8(in) & 3);
    FSU_CALL(w, rv, sp_handler_set_role(w->h, SP_ROLE_LEADER, epoch, w->now));
    if (epoch <= c->epoch) {
      fsu_rc(w, "sp_handler_set_role(lower epoch)", rv, 0,
             SP_ERR_INVALID_ARGUMENT, FSU_END);
    } else {
      /* SP_ERR_REGISTRY: the new leader lists the members; node.h does
       * not list this code for sp_handler_set_role (reported). */
      fsu_rc(w, "sp_handler_set_role", rv, 1, 0, SP_ERR_STORE,
             SP_ERR_REGISTRY, FSU_END);
      c->epoch = epoch;
    }
    break;
  }
  case 6:
    w->requests_pending++;
    FSU_CALL(w, rv,
             sp_handler_request_entries(w->h, 0, fsu_request_cb, w, w->now));
    w->requests_pending--;
    fsu_rc(w, "sp_handler_request_entries on a leader", rv, 0,
           SP_ERR_INVALID_STATE, FSU_END);
    FSU_CALL(w, rv, sp_handler_resync_done(w->h, w->now));
    fsu_rc(w, "sp_handler_resync_done on a leader", rv, 0,
           SP_ERR_INVALID_STATE, FSU_END);
    break;
  case 7:
    fsu_wrong_peer_calls(w, fsu_u8(in));
    break;
  case 8:
    fsu_advance(w, 0);
    break;
  case 9:
    fsu_status(w, &st);
    break;
  default:
    break;
  }
}

static void op_prune(leader_ctx *c, unsigned p, fsu_in *in) {
  fsu_world *w = &c->w;
  sp_seq latest = store_latest(w), through;
  int rv;

  if (p & 1) {
    sp_seq floor = 0;
    FSU_CALL(w, rv, sp_handler_retention_floor(w->h, &floor));
    fsu_rc(w, "sp_handler_retention_floor", rv, 0, 0, SP_ERR_REGISTRY,
           SP_ERR_STORE, SP_ERR_NOMEM, FSU_END);
    if (rv != 0) {
      return;
    }
    through = floor;
  } else {
    through = latest - fsu_u8(in) % (latest + 1);
  }
  if (through > latest) {
    fsu_fail("retention floor %llu past the log's end %llu",
             (unsigned long long)through, (unsigned long long)latest);
  }
  if (sp_mem_store_prune(w->store, through) != 0) {
    fsu_fail("the host could not prune through %llu",
             (unsigned long long)through);
  }
}

/* The snapshot path's frames from a follower (op 0xb8-0xbf), about the
 * newest snapshot offered. */
static void synth_snapshot(leader_ctx *c, sp_msg *m, uint8_t f, uint8_t b) {
  const l_offer *o = c->noffers ? &c->offers[c->noffers - 1] : NULL;

  switch (f & 3) {
  case 0:
    m->type = SP_MSG_HEARTBEAT;
    m->u.heartbeat.current_sequence = pick(c, b);
    m->u.heartbeat.role = SP_ROLE_FOLLOWER;
    m->u.heartbeat.has_features = 1;
    m->u.heartbeat.features =
        SP_FEATURE_SNAPSHOT | (f & 4 ? SP_FEATURE_WRITES : 0);
    break;
  case 1:
    m->type = SP_MSG_SNAPSHOT_REQUEST;
    if ((f & 4) && o) {
      memcpy(m->u.snapshot_request.id, o->id, SP_SNAPSHOT_ID_LEN);
      m->u.snapshot_request.id_len = SP_SNAPSHOT_ID_LEN;
      m->u.snapshot_request.have_chunks = b;
    } else if (f & 4) {
      memset(m->u.snapshot_request.id, b, SP_SNAPSHOT_ID_LEN);
      m->u.snapshot_request.id_len = SP_SNAPSHOT_ID_LEN;
    }
    m->u.snapshot_request.max_frame = f & 8 ? 256 + 16 * (uint64_t)b : 0;
    break;
  case 2:
    m->type = SP_MSG_SNAPSHOT_FETCH;
    if (o && !(f & 4)) {
      memcpy(m->u.snapshot_fetch.id, o->id, SP_SNAPSHOT_ID_LEN);
    } else {
      memset(m->u.snapshot_fetch.id, b, SP_SNAPSHOT_ID_LEN);
    }
    m->u.snapshot_fetch.first_chunk =
        f & 8 && o ? o->chunk_count + (b & 3) : b;
    m->u.snapshot_fetch.count = 1 + 4 * (uint32_t)(f >> 4);
    break;
  default:
    /* The follower's verify fetch: since S, limit 1, since_hash the
     * manifest's hash_at (f & 4: one bit off). */
    m->type = SP_MSG_FETCH_ENTRIES;
    m->u.fetch_entries.since_sequence = o ? o->sequence : pick(c, b);
    m->u.fetch_entries.limit = 1;
    m->u.fetch_entries.since_hash_len = SP_HASH_LEN;
    if (o) {
      memcpy(m->u.fetch_entries.since_hash, o->hash_at, SP_HASH_LEN);
    }
    if (f & 4) {
      m->u.fetch_entries.since_hash[b & 31] ^= 0x10;
    }
    m->u.fetch_entries.has_features = 1;
    m->u.fetch_entries.features = SP_FEATURE_SNAPSHOT;
    break;
  }
  fsu_feed_msg(&c->w, m);
}

static void op_synth(leader_ctx *c, unsigned p, fsu_in *in) {
  static const uint64_t limits[8] = {1, 2, 3, 16, 1024, 0, 65536, 65537};
  static const int32_t codes[8] = {SP_ERR_NOT_MEMBER, SP_ERR_CHAIN_MISMATCH,
                                   SP_ERR_STALE_EPOCH, SP_ERR_GAP,
                                   SP_ERR_INTERNAL, 0, 12345,
                                   SP_ERR_WRONG_ROLE};
  fsu_world *w = &c->w;
  uint8_t f = fsu_u8(in), b = fsu_u8(in), v = fsu_u8(in);
  sp_msg m;
  unsigned i;

  memset(&m, 0, sizeof(m));
  m.library_id = v & 4 ? fsu_other_lib : fsu_lib;
  switch (v & 3) {
  case 0:
    m.epoch = c->epoch;
    break;
  case 1:
    m.epoch = c->epoch + 1;
    break;
  case 2:
    m.epoch = c->epoch - 1;
    break;
  default:
    m.epoch = 0;
    break;
  }
  if (p & 8) {
    synth_snapshot(c, &m, f, b);
    return;
  }
  switch (p & 7) {
  case 0:
    m.type = SP_MSG_FETCH_ENTRIES;
    m.u.fetch_entries.since_sequence = pick(c, b);
    m.u.fetch_entries.limit = limits[(f >> 3) & 7];
    if (f >> 6) {
      m.u.fetch_entries.since_hash_len = SP_HASH_LEN;
      if ((f >> 6) != 3) {
        link_at(c, m.u.fetch_entries.since_sequence,
                m.u.fetch_entries.since_hash);
      }
      if ((f >> 6) == 2) {
        m.u.fetch_entries.since_hash[f & 31] ^= 0x20;
      }
    }
    /* A follower advertising on its fetch (writes or unknown bits). */
    m.u.fetch_entries.has_features = (v >> 3) & 1;
    m.u.fetch_entries.features = v >> 4;
    break;
  case 1:
    m.type = SP_MSG_ACKNOWLEDGE;
    m.u.acknowledge.up_to_sequence = pick(c, b);
    break;
  case 2:
    m.type = SP_MSG_HEARTBEAT;
    m.u.heartbeat.current_sequence = pick(c, b);
    m.u.heartbeat.role = f & 1 ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER;
    /* A follower advertising features (writes or unknown bits). */
    m.u.heartbeat.has_features = (f >> 1) & 1;
    m.u.heartbeat.features = f >> 2;
    break;
  case 3:
    m.type = SP_MSG_ERROR;
    m.u.error.code = codes[f & 7];
    m.u.error.message = "synthetic refusal";
    m.u.error.message_len = (size_t)(f >> 3) % 18;
    break;
  case 4:
    if (f & 0x80) {
      /* A Propose (never negotiated here: refused, never appended), or
       * a ProposeResult a follower may not send. */
      static const uint8_t data[3] = {1, 2, 3};
      sp_entry e[3];
      sp_propose_result r;
      memset(e, 0, sizeof(e));
      for (i = 0; i < 3; ++i) {
        e[i].device_id = fsu_dev[(b >> (2 * i)) % FSU_NDEV];
        e[i].sequence = (f & 0x40) ? b : 0;
        e[i].origin_seq = (uint64_t)(f & 7) + i;
        e[i].model_type = "tag";
        e[i].model_type_len = 3;
        e[i].record_id.bytes[0] = (uint8_t)i;
        e[i].data = data;
        e[i].data_len = sizeof(data);
      }
      if (f & 0x20) {
        memset(&r, 0, sizeof(r));
        r.origin_seq = b;
        r.message = "";
        m.type = SP_MSG_PROPOSE_RESULT;
        m.u.propose_result.results = &r;
        m.u.propose_result.result_count = 1;
      } else {
        m.type = SP_MSG_PROPOSE;
        m.u.propose.entries = e;
        m.u.propose.entry_count = 1 + (f & 1) + ((f >> 1) & 1);
      }
      fsu_feed_msg(w, &m);
      return;
    }
    m.type = SP_MSG_NEW_ENTRIES;
    m.u.new_entries.from_sequence = b;
    m.u.new_entries.to_sequence = (sp_seq)b + f;
    m.u.new_entries.entry_count = (uint64_t)f + 1;
    break;
  case 5:
    m.type = SP_MSG_ENTRIES_RESPONSE;
    m.u.entries_response.since_sequence = b;
    m.u.entries_response.through_sequence = (sp_seq)b + f;
    m.u.entries_response.leader_latest = (sp_seq)b + f;
    break;
  case 6:
    m.type = SP_MSG_SYNC_REQUIRED;
    m.u.sync_required.reason = (sp_sync_reason)(1 + (f & 3));
    m.u.sync_required.leader_latest = b;
    m.u.sync_required.leader_oldest = 1;
    break;
  default:
    m.type = SP_MSG_FETCH_ENTRIES;
    m.u.fetch_entries.since_sequence = pick(c, b);
    m.u.fetch_entries.limit = 1 + ((f >> 3) & 7);
    for (i = 0; i <= (f & 7u) && !w->fatal; ++i) {
      fsu_feed_msg(w, &m);
      m.u.fetch_entries.since_sequence += m.u.fetch_entries.limit;
    }
    return;
  }
  fsu_feed_msg(w, &m);
}

/* ---- entry points ---- */

fsu_world *fsu_leader_new(const uint8_t hdr[FSU_HDR_LEN], const fsu_tap *tap) {
  leader_ctx *c = calloc(1, sizeof(*c));
  sp_handler_config cfg;
  size_t max_frame = SP_MAX_FRAME_DEFAULT;
  unsigned n = hdr[1] & 15, cls = hdr[1] >> 4, prune = (hdr[2] >> 3) & 7;
  sp_seq seq;

  if (!c) {
    fsu_fail("out of memory in the harness");
  }
  if (hdr[0] & 8) {
    max_frame = 256 + 64 * (size_t)(hdr[4] & 15);
  }
  fsu_world_init(&c->w, SP_ROLE_LEADER, FSU_X, &leader_ops, c, tap, max_frame,
                 hdr[6], (hdr[0] & 64) != 0);
  c->w.connect_mode = (hdr[0] & 128) != 0;
  memset(c->cls, 0xff, sizeof(c->cls));
  for (seq = 1; seq <= n; ++seq) {
    if (!((hdr[2] & 64) && seq == 3)) {
      append_entry(c, seq, cls);
    }
  }
  if (prune > store_latest(&c->w)) {
    prune = (unsigned)store_latest(&c->w);
  }
  if (prune && sp_mem_store_prune(c->w.store, prune) != 0) {
    fsu_fail("the host could not prune");
  }

  sp_handler_config_default(&cfg);
  cfg.library_id = fsu_lib;
  cfg.role = SP_ROLE_LEADER;
  cfg.epoch = 1 + (hdr[2] & 7);
  c->epoch = cfg.epoch;
  cfg.push_inline = !(hdr[0] & 1);
  if (hdr[0] & 2) {
    cfg.response_max_bytes = 64 + 32 * (size_t)(hdr[3] & 15);
  }
  if (hdr[0] & 4) {
    cfg.retention_cap = 1 + (hdr[3] >> 4);
  }
  if (hdr[0] & 16) {
    cfg.max_queued_fetches = 1 + ((hdr[4] >> 4) & 3);
  }
  if (hdr[0] & 32) {
    cfg.heartbeat_interval = 1 * SP_SECONDS;
    cfg.heartbeat_timeout_factor = 2;
  }
  cfg.reconnect_min = 50 * SP_MILLISECONDS;
  cfg.reconnect_max = 2 * SP_SECONDS;
  /* Snapshots of the real store (the source reads it directly, past the
   * failing wrapper); small chunks, so that a few entries make several. */
  sp_mem_store_snapshot_source(c->w.store, &c->src);
  cfg.snapshot_source = &c->src;
  cfg.snapshot_chunk_size = 64u << (2 * (hdr[7] & 3));
  if (fsu_world_open(&c->w, &cfg, hdr[5]) != 0) {
    fsu_leader_del(&c->w);
    return NULL;
  }
  return &c->w;
}

int fsu_leader_step(fsu_world *w, fsu_in *in) {
  leader_ctx *c = ctx_of(w);
  uint8_t op;

  if (w->fatal) {
    return 1;
  }
  op = fsu_u8(in);
  if (!fsu_step_common(w, op, in)) {
    unsigned p = op & 15;
    switch (op >> 4) {
    case FSU_OP_ROLE4:
      op_append(c, p, in);
      break;
    case FSU_OP_API:
      op_api(c, p, in);
      break;
    case FSU_OP_ROLE10:
      op_prune(c, p, in);
      break;
    case FSU_OP_SYNTH:
      op_synth(c, p, in);
      break;
    default:
      break;
    }
  }
  w->ops_done++;
  if (w->fatal) {
    return 1;
  }
  l_check_state(w);
  return 0;
}

void fsu_leader_del(fsu_world *w) {
  leader_ctx *c = ctx_of(w);
  size_t i;

  fsu_world_free(w);
  for (i = 0; i < c->noffers; ++i) {
    free(c->offers[i].hashes);
  }
  free(c);
}

#ifndef FSU_NO_FUZZ_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const fsu_role_entry role = {fsu_leader_new, fsu_leader_step,
                                      fsu_leader_del};
  return fsu_run_input(&role, data, size);
}
#endif
