/*
 * fuzz_session_util.c: the world around one fuzzed node.  See
 * fuzz_session_util.h for what it provides and checks.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_session_util.h"

const sp_uuid fsu_lib = {{0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33,
                          0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x01}};
const sp_uuid fsu_other_lib = {{0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33,
                                0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55,
                                0x55, 0x02}};
const sp_uuid fsu_dev[FSU_NDEV] = {
    {{0xd0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x00}},
    {{0xd0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x01}},
    {{0xd0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x02}},
    {{0xd0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x0e}}};

/* ---- input ---- */

uint8_t fsu_u8(fsu_in *in) {
  uint8_t b;

  if (in->n == 0) {
    return 0;
  }
  b = in->p[0];
  in->p++;
  in->n--;
  return b;
}

const uint8_t *fsu_bytes(fsu_in *in, size_t want, size_t *got) {
  const uint8_t *p = in->p;
  size_t n = want < in->n ? want : in->n;

  in->p += n;
  in->n -= n;
  *got = n;
  return p;
}

void fsu_fail(const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "\n*** sync_protocol session fuzz oracle: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  abort();
}

/* ---- entries ---- */

size_t fsu_payload_size(unsigned cls) {
  static const size_t sizes[16] = {0,   1,   3,    8,    16,   32, 64, 100,
                                   200, 300, 500, 1000, 2000, 5000, 7, 24};
  return sizes[cls & 15];
}

FSU_NO_COVERAGE void fsu_make_entry(sp_entry *e, sp_seq seq, unsigned cls,
                                    uint8_t *buf) {
  static const char *const models[4] = {"tag", "", "file_path",
                                        "location\xc3\xa9"};
  size_t i, n = fsu_payload_size(cls);
  const char *model = models[(seq + cls) % 4];

  memset(e, 0, sizeof(*e));
  e->sequence = seq;
  e->device_id = fsu_dev[FSU_X];
  e->device_id.bytes[14] = (uint8_t)cls;
  e->timestamp_ms = 1700000000000ULL + seq * 1000u + cls;
  e->model_type = model;
  e->model_type_len = strlen(model);
  e->record_id.bytes[0] = (uint8_t)seq;
  e->record_id.bytes[1] = (uint8_t)(seq >> 8);
  e->record_id.bytes[2] = (uint8_t)cls;
  e->change_type = (sp_change_type)((seq + cls) % 4);
  e->version = (int64_t)seq * (cls & 1 ? -70000 : 3) - 5;
  /* The pattern repeats every 256 bytes: fill one period, copy the rest
   * (a byte loop over 5,000-byte payloads was a fifth of the fuzzers'
   * time, every comparison instrumented). */
  for (i = 0; i < n && i < 256; ++i) {
    buf[i] = (uint8_t)(seq * 31u + i * 7u + cls);
  }
  for (; i < n; i += 256) {
    memcpy(buf + i, buf, n - i < 256 ? n - i : 256);
  }
  e->data = n ? buf : NULL;
  e->data_len = n;
}

FSU_NO_COVERAGE int fsu_entry_equal(const sp_entry *a, const sp_entry *b) {
  return a->sequence == b->sequence &&
         sp_uuid_equal(&a->device_id, &b->device_id) &&
         a->timestamp_ms == b->timestamp_ms &&
         a->model_type_len == b->model_type_len &&
         (a->model_type_len == 0 ||
          memcmp(a->model_type, b->model_type, a->model_type_len) == 0) &&
         sp_uuid_equal(&a->record_id, &b->record_id) &&
         a->change_type == b->change_type && a->version == b->version &&
         a->data_len == b->data_len &&
         (a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

static int dev_index(const sp_uuid *id) {
  int i;

  for (i = 0; i < FSU_NDEV; ++i) {
    if (sp_uuid_equal(id, &fsu_dev[i])) {
      return i;
    }
  }
  return -1;
}

/* FSU_TRACE=1 in the environment prints what happens (for debugging
 * seeds); read once. */
static int tracing(void) {
  static int t = -1;
  if (t < 0) {
    t = getenv("FSU_TRACE") != NULL;
  }
  return t;
}

static const char *msg_name(int type) {
  static const char *const names[14] = {
      "?",         "NewEntries",   "Fetch",
      "EntriesResponse", "Ack",    "Heartbeat",
      "SyncRequired", "Error",     "Propose",
      "ProposeResult", "SnapshotRequest", "SnapshotManifest",
      "SnapshotFetch", "SnapshotChunk"};
  return type >= 1 && type <= 13 ? names[type] : "?";
}

/* ---- failure mask ---- */

static int failing(fsu_world *w, unsigned bit) {
  if (!(w->fail_mask & bit)) {
    return 0;
  }
  if (w->fail_once) {
    w->fail_mask &= ~bit;
  }
  return 1;
}

/* ---- allocator ---- */

static void *m_malloc(size_t size, void *ud) {
  fsu_world *w = ud;
  void *p;

  if (failing(w, FSU_FAIL_ALLOC)) {
    return NULL;
  }
  p = malloc(size ? size : 1);
  w->live_allocs += p != NULL;
  return p;
}

static void m_free(void *ptr, void *ud) {
  fsu_world *w = ud;

  if (ptr) {
    w->live_allocs--;
    free(ptr);
  }
}

static void *m_calloc(size_t nmemb, size_t size, void *ud) {
  fsu_world *w = ud;
  void *p;

  if (failing(w, FSU_FAIL_ALLOC)) {
    return NULL;
  }
  p = calloc(nmemb ? nmemb : 1, size ? size : 1);
  w->live_allocs += p != NULL;
  return p;
}

static void *m_realloc(void *ptr, size_t size, void *ud) {
  fsu_world *w = ud;
  void *p;

  if (failing(w, FSU_FAIL_ALLOC)) {
    return NULL;
  }
  p = realloc(ptr, size ? size : 1);
  if (p && !ptr) {
    w->live_allocs++;
  }
  return p;
}

/* ---- registry ---- */

static int r_is_member(const sp_uuid *lib, const sp_uuid *device,
                       int *is_member, void *ud) {
  fsu_world *w = ud;
  int d = dev_index(device);

  if (failing(w, FSU_FAIL_REGISTRY)) {
    return SP_ERR_IO;
  }
  *is_member = sp_uuid_equal(lib, &fsu_lib) && d >= 0 && d != FSU_N;
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  fsu_world *w = ud;

  if (failing(w, FSU_FAIL_REGISTRY)) {
    return SP_ERR_IO;
  }
  if (!sp_uuid_equal(lib, &fsu_lib) || w->reg_leader < 0) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = fsu_dev[w->reg_leader];
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  fsu_world *w = ud;
  static const int members[3] = {FSU_X, FSU_F1, FSU_F2};
  size_t i;

  if (failing(w, FSU_FAIL_REGISTRY)) {
    return SP_ERR_IO;
  }
  if (!sp_uuid_equal(lib, &fsu_lib)) {
    *count = 0;
    return 0;
  }
  for (i = 0; i < 3 && i < cap; ++i) {
    out[i] = fsu_dev[members[i]];
  }
  *count = 3;
  return 0;
}

/* ---- store wrapper ---- */

void fsu_store_state(fsu_world *w, sp_store_state *st) {
  if (w->inner.state(st, w->inner.user_data) != 0) {
    fsu_fail("the in-memory store could not report its state");
  }
}

static int s_read(sp_seq after, sp_seq through, size_t max_count,
                  sp_entry_sink sink, void *sink_ctx, void *ud) {
  fsu_world *w = ud;

  if (w->role != SP_ROLE_LEADER) {
    fsu_fail("a follower read its log as a leader would");
  }
  if (after >= through || max_count == 0 || !sink) {
    fsu_fail("store read asked for nothing: (%llu, %llu] max %zu",
             (unsigned long long)after, (unsigned long long)through,
             max_count);
  }
  if (failing(w, FSU_FAIL_READ)) {
    return SP_ERR_STORE;
  }
  return w->inner.read(after, through, max_count, sink, sink_ctx,
                       w->inner.user_data);
}

static int s_bounds(sp_log_bounds *out, void *ud) {
  fsu_world *w = ud;

  if (w->role != SP_ROLE_LEADER) {
    fsu_fail("a follower asked for the leader's log bounds");
  }
  if (failing(w, FSU_FAIL_BOUNDS)) {
    return SP_ERR_STORE;
  }
  return w->inner.bounds(out, w->inner.user_data);
}

static int s_hash_at(sp_seq sequence, uint8_t out[SP_HASH_LEN], void *ud) {
  fsu_world *w = ud;

  if (w->role != SP_ROLE_LEADER) {
    fsu_fail("a follower asked for a leader's chain hash");
  }
  if (failing(w, FSU_FAIL_HASH_AT)) {
    return SP_ERR_STORE;
  }
  return w->inner.hash_at(sequence, out, w->inner.user_data);
}

/*
 * The follower's apply: what the library hands the store must be entries
 * strictly after the applied sequence, in order, whose chain hashes link
 * from the store's head, under an epoch not below the recorded one, and
 * entries come only while bytes from a device the registry named leader
 * are being fed.
 */
static int s_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                   uint64_t epoch, void *ud) {
  fsu_world *w = ud;
  sp_store_state st;
  uint8_t prev[SP_HASH_LEN], calc[SP_HASH_LEN];
  sp_seq seq;
  size_t i;
  int rv;

  if (w->role != SP_ROLE_FOLLOWER) {
    fsu_fail("a leader applied entries to its own log");
  }
  if (!w->in_node) {
    fsu_fail("store apply outside any call into the node");
  }
  fsu_store_state(w, &st);
  if (epoch < st.epoch) {
    fsu_fail("apply under epoch %llu, below the recorded epoch %llu",
             (unsigned long long)epoch, (unsigned long long)st.epoch);
  }
  if (n > 0) {
    const fsu_stream *s;
    if (!entries || !hashes) {
      fsu_fail("apply of %zu entries without arrays", n);
    }
    if (w->feeding < 0) {
      fsu_fail("entries applied while no leader bytes were being fed");
    }
    s = &w->streams[w->feeding];
    if (s->peer_index < 0 || !w->ever_leader[s->peer_index]) {
      fsu_fail("entries applied from device %d, never named leader",
               s->peer_index);
    }
    memcpy(prev, st.head_hash, SP_HASH_LEN);
    seq = st.applied;
    for (i = 0; i < n; ++i) {
      if (entries[i].sequence <= seq) {
        fsu_fail("apply: entry %zu has sequence %llu, not after %llu", i,
                 (unsigned long long)entries[i].sequence,
                 (unsigned long long)seq);
      }
      if (sp_chain_next(prev, &entries[i], calc) != 0) {
        fsu_fail("apply: entry %llu cannot be chained",
                 (unsigned long long)entries[i].sequence);
      }
      if (memcmp(calc, hashes + i * SP_HASH_LEN, SP_HASH_LEN) != 0) {
        fsu_fail("apply: chain hash of entry %llu does not link from the "
                 "store's head",
                 (unsigned long long)entries[i].sequence);
      }
      memcpy(prev, calc, SP_HASH_LEN);
      seq = entries[i].sequence;
    }
  }
  if (failing(w, FSU_FAIL_APPLY)) {
    return SP_ERR_STORE;
  }
  w->applies++;
  rv = w->inner.apply(entries, hashes, n, epoch, w->inner.user_data);
  if (rv != 0) {
    fsu_fail("the in-memory store refused a checked apply: %s",
             sp_err_name(rv));
  }
  return 0;
}

static int s_state(sp_store_state *out, void *ud) {
  fsu_world *w = ud;

  if (w->role != SP_ROLE_FOLLOWER) {
    fsu_fail("a leader asked for a follower's store state");
  }
  if (failing(w, FSU_FAIL_STATE)) {
    return SP_ERR_STORE;
  }
  return w->inner.state(out, w->inner.user_data);
}

/* ---- streams ---- */

fsu_stream *fsu_current(fsu_world *w) {
  return w->nstreams ? &w->streams[w->cur] : NULL;
}

static fsu_stream *find_stream(fsu_world *w, uint64_t id) {
  size_t i;

  for (i = 0; i < w->nstreams; ++i) {
    if (w->streams[i].id == id) {
      return &w->streams[i];
    }
  }
  return NULL;
}

static int stream_open(const fsu_stream *s) {
  return !s->node_closed && !s->tr_closed;
}

static fsu_stream *add_stream(fsu_world *w, uint64_t id, int peer, int local) {
  fsu_stream *s = &w->streams[w->nstreams];

  memset(s, 0, sizeof(*s));
  s->id = id;
  s->peer = fsu_dev[peer];
  s->peer_index = peer;
  s->local = local;
  s->store_gen = w->store_gen;
  /* The node reads an incoming stream's first frame with a lower limit
   * until that frame routes it; in_rd mirrors only that first frame. */
  if (sp_frame_reader_new(&s->out_rd, w->max_frame, NULL) != 0 ||
      sp_frame_reader_new(&s->in_rd,
                          local || w->max_frame < SP_UNROUTED_MAX_FRAME
                              ? w->max_frame
                              : SP_UNROUTED_MAX_FRAME,
                          NULL) != 0) {
    fsu_fail("out of memory in the harness");
  }
  w->nstreams++;
  return s;
}

static int known_error(int code) {
  return code < 0 && strcmp(sp_err_name(code), "SP_ERR_UNKNOWN") != 0;
}

/* One frame body the node sent on `s`. */
static void check_body(fsu_world *w, fsu_stream *s, const uint8_t *body,
                       size_t len) {
  sp_msg msg;
  int rv = sp_decoder_decode(w->dec, body, len, &msg);

  if (rv != 0) {
    fsu_fail("stream %llu: the node sent a frame that does not decode: %s",
             (unsigned long long)s->id, sp_err_name(rv));
  }
  if (s->error_sent) {
    fsu_fail("stream %llu: a frame after the Error frame",
             (unsigned long long)s->id);
  }
  if (!sp_uuid_equal(&msg.library_id, &fsu_lib)) {
    /* Only a refusal of an incoming stream that named another library (or
     * none, when its first frame was bad) may carry another library id. */
    int ok = msg.type == SP_MSG_ERROR && !s->local &&
             ((s->in_state == 1 && sp_uuid_equal(&msg.library_id, &s->in_lib)) ||
              (s->in_state == 2 && sp_uuid_is_nil(&msg.library_id)));
    if (!ok) {
      fsu_fail("stream %llu: message type %d for a library that is not L",
               (unsigned long long)s->id, (int)msg.type);
    }
  }
  if (msg.type == SP_MSG_ERROR) {
    if (!known_error(msg.u.error.code)) {
      fsu_fail("stream %llu: Error frame with code %d, not an sp_error",
               (unsigned long long)s->id, (int)msg.u.error.code);
    }
    s->error_sent = 1;
    s->error_code = msg.u.error.code;
  } else if (s->peer_index == FSU_N) {
    fsu_fail("stream %llu: message type %d sent to a non-member",
             (unsigned long long)s->id, (int)msg.type);
  }
  s->frames_out++;
  if (++w->frames_in_op > FSU_MAX_FRAMES_PER_OP) {
    fsu_fail("livelock: more than %d frames sent in one operation (the "
             "last a %s on stream %llu)",
             FSU_MAX_FRAMES_PER_OP, msg_name(msg.type),
             (unsigned long long)s->id);
  }
  if (tracing()) {
    fprintf(stderr, "  [%llu ms] node -> stream %llu (dev %d): %s [%zu]",
            (unsigned long long)(w->now / SP_MILLISECONDS),
            (unsigned long long)s->id, s->peer_index, msg_name(msg.type),
            len + SP_FRAME_HEADER_LEN);
    switch (msg.type) {
    case SP_MSG_ENTRIES_RESPONSE:
      fprintf(stderr, " (%llu, %llu] n=%zu more=%d latest=%llu",
              (unsigned long long)msg.u.entries_response.since_sequence,
              (unsigned long long)msg.u.entries_response.through_sequence,
              msg.u.entries_response.entry_count,
              msg.u.entries_response.has_more,
              (unsigned long long)msg.u.entries_response.leader_latest);
      break;
    case SP_MSG_FETCH_ENTRIES:
      fprintf(stderr, " since %llu limit %llu hash %zu",
              (unsigned long long)msg.u.fetch_entries.since_sequence,
              (unsigned long long)msg.u.fetch_entries.limit,
              msg.u.fetch_entries.since_hash_len);
      break;
    case SP_MSG_ACKNOWLEDGE:
      fprintf(stderr, " %llu",
              (unsigned long long)msg.u.acknowledge.up_to_sequence);
      break;
    case SP_MSG_NEW_ENTRIES:
      fprintf(stderr, " (%llu..%llu]",
              (unsigned long long)msg.u.new_entries.from_sequence,
              (unsigned long long)msg.u.new_entries.to_sequence);
      break;
    case SP_MSG_SYNC_REQUIRED:
      fprintf(stderr, " reason %d", (int)msg.u.sync_required.reason);
      break;
    case SP_MSG_ERROR:
      fprintf(stderr, " %s", sp_err_name(msg.u.error.code));
      break;
    case SP_MSG_HEARTBEAT:
      fprintf(stderr, " %llu",
              (unsigned long long)msg.u.heartbeat.current_sequence);
      break;
    default:
      break;
    }
    fprintf(stderr, " epoch %llu\n", (unsigned long long)msg.epoch);
  }
  w->ops->check_sent(w, s, &msg);
}

static void check_out(fsu_world *w, fsu_stream *s, const uint8_t *data,
                      size_t len) {
  while (len > 0) {
    const uint8_t *body;
    size_t blen;
    sp_ssize n = sp_frame_reader_read(s->out_rd, data, len, &body, &blen);
    if (n < 0) {
      fsu_fail("stream %llu: the node sent a bad frame prefix: %s",
               (unsigned long long)s->id, sp_err_name((int)n));
    }
    data += n;
    len -= (size_t)n;
    if (body) {
      check_body(w, s, body, blen);
    }
  }
}

/* Mirror what the peer fed until its first frame is known. */
static void mirror_in(fsu_world *w, fsu_stream *s, const uint8_t *data,
                      size_t len) {
  while (len > 0 && (s->in_state == 0 || (tracing() && s->in_state == 1))) {
    const uint8_t *body;
    size_t blen;
    sp_msg msg;
    sp_ssize n = sp_frame_reader_read(s->in_rd, data, len, &body, &blen);
    if (n < 0) {
      s->in_state = 2;
      return;
    }
    data += n;
    len -= (size_t)n;
    if (body) {
      if (sp_decoder_decode(w->dec, body, blen, &msg) != 0) {
        s->in_state = 2;
      } else {
        if (s->in_state == 0) {
          s->in_lib = msg.library_id;
        }
        s->in_state = 1;
        if (tracing()) {
          fprintf(stderr, "  peer -> stream %llu: %s", (unsigned long long)s->id,
                  msg_name(msg.type));
          if (msg.type == SP_MSG_FETCH_ENTRIES) {
            fprintf(stderr, " since %llu limit %llu hash %zu",
                    (unsigned long long)msg.u.fetch_entries.since_sequence,
                    (unsigned long long)msg.u.fetch_entries.limit,
                    msg.u.fetch_entries.since_hash_len);
          } else if (msg.type == SP_MSG_ACKNOWLEDGE) {
            fprintf(stderr, " %llu",
                    (unsigned long long)msg.u.acknowledge.up_to_sequence);
          } else if (msg.type == SP_MSG_ENTRIES_RESPONSE) {
            fprintf(stderr, " (%llu, %llu] n=%zu",
                    (unsigned long long)msg.u.entries_response.since_sequence,
                    (unsigned long long)msg.u.entries_response.through_sequence,
                    msg.u.entries_response.entry_count);
          }
          fprintf(stderr, " epoch %llu\n", (unsigned long long)msg.epoch);
        }
      }
    }
  }
}

/* ---- transport ---- */

static int t_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  fsu_world *w = ud;
  int d = dev_index(peer);
  fsu_stream *s;

  if (w->teardown) {
    fsu_fail("the node opened a stream while being deleted");
  }
  if (!w->in_node) {
    fsu_fail("open_stream outside any call into the node");
  }
  if (!sp_uuid_equal(library, &fsu_lib)) {
    fsu_fail("open_stream for a library that is not L");
  }
  if (w->role == SP_ROLE_LEADER) {
    if (d != FSU_F1 && d != FSU_F2) {
      fsu_fail("the leader dialed device %d, not a registered follower", d);
    }
  } else if (d < 0 || d != w->reg_leader) {
    fsu_fail("the follower dialed device %d, not the registry's leader %d",
             d, w->reg_leader);
  }
  if (w->open_fail || w->nstreams == FSU_MAX_STREAMS) {
    return SP_ERR_UNREACHABLE;
  }
  s = add_stream(w, w->next_id++, d, 1);
  s->connecting = w->connect_mode;
  s->owed = s->connecting;
  *stream_id = s->id;
  if (w->tap && w->tap->opened) {
    w->tap->opened(w->tap->ud, (size_t)(s - w->streams), peer);
  }
  return 0;
}

static sp_ssize t_send(uint64_t stream_id, const uint8_t *data, size_t len,
                       void *ud) {
  fsu_world *w = ud;
  fsu_stream *s = find_stream(w, stream_id);
  size_t take;

  if (!s) {
    fsu_fail("send on stream %llu, which was never opened",
             (unsigned long long)stream_id);
  }
  if (!stream_open(s)) {
    fsu_fail("send on stream %llu after it was closed (%s)",
             (unsigned long long)stream_id,
             s->node_closed ? "by the node" : "by the transport");
  }
  if (!w->in_node) {
    fsu_fail("send outside any call into the node");
  }
  if (len == 0 || !data) {
    fsu_fail("send of nothing on stream %llu", (unsigned long long)stream_id);
  }
  if (s->connecting || w->send_mode == FSU_SEND_BLOCK) {
    s->owed = 1;
    return SP_ERR_WOULD_BLOCK;
  }
  if (w->send_mode == FSU_SEND_FAIL) {
    return SP_ERR_CONNECTION_LOST;
  }
  take = len;
  if (w->send_mode == FSU_SEND_PART && w->part < len) {
    take = w->part;
    s->owed = 1;
  }
  check_out(w, s, data, take);
  if (w->tap && w->tap->sent) {
    w->tap->sent(w->tap->ud, (size_t)(s - w->streams), data, take);
  }
  return (sp_ssize)take;
}

static int t_close(uint64_t stream_id, int error_code, void *ud) {
  fsu_world *w = ud;
  fsu_stream *s = find_stream(w, stream_id);

  if (!s) {
    fsu_fail("close of stream %llu, which was never opened",
             (unsigned long long)stream_id);
  }
  if (!stream_open(s)) {
    fsu_fail("close of stream %llu after it was closed (%s)",
             (unsigned long long)stream_id,
             s->node_closed ? "by the node" : "by the transport");
  }
  if (error_code != 0 && !known_error(error_code)) {
    fsu_fail("stream %llu closed with code %d, not an sp_error",
             (unsigned long long)stream_id, error_code);
  }
  if (s->error_sent && error_code != s->error_code) {
    fsu_fail("stream %llu refused with Error %s but closed with %s",
             (unsigned long long)stream_id, sp_err_name(s->error_code),
             sp_err_name(error_code));
  }
  if (error_code == 0 && !w->teardown &&
      sp_frame_reader_pending(s->out_rd) != 0) {
    fsu_fail("stream %llu closed cleanly inside a frame (%zu bytes held)",
             (unsigned long long)stream_id,
             sp_frame_reader_pending(s->out_rd));
  }
  s->node_closed = 1;
  if (w->tap && w->tap->closed) {
    w->tap->closed(w->tap->ud, (size_t)(s - w->streams), error_code);
  }
  return 0;
}

/* ---- events and callbacks ---- */

static int e_event(const sp_event *ev, void *ud) {
  fsu_world *w = ud;

  if (!w->in_node) {
    fsu_fail("event %d outside any call into the node", (int)ev->type);
  }
  if (ev->type < SP_EVENT_PEER_CONNECTED ||
      ev->type > SP_EVENT_SNAPSHOT_FAILED) {
    fsu_fail("event type %d unknown", (int)ev->type);
  }
  if (ev->type != SP_EVENT_ERROR && !sp_uuid_equal(&ev->library_id, &fsu_lib)) {
    fsu_fail("event %d for a library that is not L", (int)ev->type);
  }
  if (ev->has_peer && dev_index(&ev->peer_id) < 0) {
    fsu_fail("event %d about an unknown peer", (int)ev->type);
  }
  if ((ev->type == SP_EVENT_ERROR || ev->type == SP_EVENT_STORE_FAILED) &&
      !ev->message) {
    fsu_fail("error event without a message");
  }
  if (ev->message) {
    (void)strlen(ev->message); /* must be NUL-terminated */
  }
  if (tracing()) {
    fprintf(stderr, "  [%llu ms] event %d code %s (%llu..%llu) reason %d%s%s\n",
            (unsigned long long)(w->now / SP_MILLISECONDS), (int)ev->type,
            sp_err_name(ev->error_code),
            (unsigned long long)ev->from_sequence,
            (unsigned long long)ev->to_sequence, (int)ev->sync_reason,
            ev->message ? " " : "", ev->message ? ev->message : "");
  }
  w->ops->check_event(w, ev);
  return failing(w, FSU_FAIL_EVENT) ? -1 : 0;
}

static void e_log(sp_log_level level, const char *msg, void *ud) {
  fsu_world *w = ud;

  if (level > SP_LOG_DEBUG || !msg) {
    fsu_fail("log line with level %d", (int)level);
  }
  (void)w;
  (void)strlen(msg);
}

int fsu_wait_cb(sp_handler *h, sp_seq seq, int status, size_t acked,
                void *ud) {
  fsu_world *w = ud;

  (void)seq;
  (void)acked;
  if (h != w->h) {
    fsu_fail("wait callback for another handler");
  }
  if (status != 0 && status != SP_ERR_DEADLINE && status != SP_ERR_CANCELED) {
    fsu_fail("wait ended with %s", sp_err_name(status));
  }
  if (w->waits_pending <= 0) {
    fsu_fail("a wait was called back twice, or never registered");
  }
  w->waits_pending--;
  return failing(w, FSU_FAIL_EVENT) ? -1 : 0;
}

int fsu_request_cb(sp_handler *h, int status, sp_seq applied, void *ud) {
  fsu_world *w = ud;
  sp_store_state st;

  if (h != w->h) {
    fsu_fail("request callback for another handler");
  }
  if (status != 0 && !known_error(status)) {
    fsu_fail("request ended with %d", status);
  }
  fsu_store_state(w, &st);
  if (applied > st.applied) {
    fsu_fail("request reports %llu applied, the store holds %llu",
             (unsigned long long)applied, (unsigned long long)st.applied);
  }
  if (w->requests_pending <= 0) {
    fsu_fail("a request was called back twice, or never made");
  }
  w->requests_pending--;
  return failing(w, FSU_FAIL_EVENT) ? -1 : 0;
}

/* ---- return codes ---- */

int fsu_rc(fsu_world *w, const char *what, int rv, int fatal_ok, ...) {
  va_list ap;
  int code, ok = 0;

  va_start(ap, fatal_ok);
  while ((code = va_arg(ap, int)) != FSU_END) {
    if (rv == code) {
      ok = 1;
    }
  }
  va_end(ap);
  if (!ok && fatal_ok && sp_err_is_fatal(rv)) {
    ok = 1;
  }
  if (!ok) {
    fsu_fail("%s returned %d (%s), which its documentation does not list",
             what, rv, sp_err_name(rv));
  }
  if (sp_err_is_fatal(rv)) {
    w->fatal = rv;
  }
  return rv;
}

/* ---- world ---- */

void fsu_world_init(fsu_world *w, sp_role role, int self,
                    const fsu_role_ops *ops, void *role_ctx,
                    const fsu_tap *tap, size_t max_frame, uint64_t seed,
                    int log) {
  sp_node_config cfg;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  int rv;

  memset(w, 0, sizeof(*w));
  w->role = role;
  w->self = self;
  w->ops = ops;
  w->role_ctx = role_ctx;
  w->tap = tap;
  w->max_frame = max_frame;
  w->now = 1000 * SP_SECONDS;
  w->next_id = 4;
  w->feeding = -1;
  w->reg_leader = FSU_X;
  w->ever_leader[FSU_X] = 1;
  w->part = 1;
  w->mem.user_data = w;
  w->mem.malloc = m_malloc;
  w->mem.free = m_free;
  w->mem.calloc = m_calloc;
  w->mem.realloc = m_realloc;
  if (sp_decoder_new(&w->dec, NULL) != 0 ||
      sp_mem_store_new(&w->store, NULL) != 0) {
    fsu_fail("out of memory in the harness");
  }
  sp_mem_store_get_vtable(w->store, &w->inner);
  w->wrapped.version = SP_STORE_VERSION;
  w->wrapped.user_data = w;
  w->wrapped.read = s_read;
  w->wrapped.bounds = s_bounds;
  w->wrapped.hash_at = s_hash_at;
  w->wrapped.apply = s_apply;
  w->wrapped.state = s_state;

  sp_node_config_default(&cfg);
  cfg.device_id = fsu_dev[self];
  cfg.seed = seed;
  cfg.max_frame = max_frame;
  reg.user_data = w;
  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  ev.user_data = w;
  ev.on_event = e_event;
  if (log) {
    ev.on_log = e_log;
    ev.log_level = SP_LOG_DEBUG;
  }
  tr.user_data = w;
  tr.open_stream = t_open;
  tr.send = t_send;
  tr.close_stream = t_close;
  rv = sp_node_new(&w->node, &cfg, &reg, &ev, &tr, &w->mem);
  if (rv != 0) {
    fsu_fail("sp_node_new failed: %s", sp_err_name(rv));
  }
}

int fsu_world_open(fsu_world *w, const sp_handler_config *cfg,
                   unsigned fail_mask) {
  int rv;

  w->fail_mask = fail_mask;
  w->fail_once = 1;
  w->in_node = 1;
  rv = sp_handler_new(&w->h, w->node, cfg, &w->wrapped, w->now);
  w->in_node = 0;
  fsu_rc(w, "sp_handler_new", rv, 0, 0, SP_ERR_STORE, SP_ERR_NOMEM,
         SP_ERR_CALLBACK_FAILURE, SP_ERR_REGISTRY, FSU_END);
  w->fail_mask = 0;
  if (rv != 0) {
    w->h = NULL;
    return rv;
  }
  w->ops->check_state(w);
  return 0;
}

void fsu_world_free(fsu_world *w) {
  size_t i;

  w->teardown = 1;
  w->frames_in_op = 0;
  w->in_node = 1;
  sp_node_del(w->node);
  w->in_node = 0;
  w->node = NULL;
  w->h = NULL;
  if (w->waits_pending != 0) {
    fsu_fail("%ld ack waits never called back", w->waits_pending);
  }
  if (w->requests_pending != 0) {
    fsu_fail("%ld entry requests never called back", w->requests_pending);
  }
  if (w->live_allocs != 0) {
    fsu_fail("%ld allocations of the node not freed", w->live_allocs);
  }
  for (i = 0; i < w->nstreams; ++i) {
    fsu_stream *s = &w->streams[i];
    if (stream_open(s)) {
      fsu_fail("stream %llu still open after sp_node_del",
               (unsigned long long)s->id);
    }
    sp_frame_reader_del(s->out_rd);
    sp_frame_reader_del(s->in_rd);
  }
  sp_decoder_del(w->dec);
  sp_mem_store_del(w->store);
  memset(w, 0, sizeof(*w));
}

void fsu_status(fsu_world *w, sp_handler_status *st) {
  if (!w->h || sp_handler_get_status(w->h, st) != 0) {
    fsu_fail("sp_handler_get_status failed");
  }
}

/* ---- common ops ---- */

sp_duration fsu_time_step(unsigned param) {
  static const sp_duration steps[16] = {
      0,
      1 * SP_MILLISECONDS,
      10 * SP_MILLISECONDS,
      100 * SP_MILLISECONDS,
      500 * SP_MILLISECONDS,
      1 * SP_SECONDS,
      2 * SP_SECONDS,
      5 * SP_SECONDS,
      10 * SP_SECONDS,
      30 * SP_SECONDS,
      31 * SP_SECONDS,
      60 * SP_SECONDS,
      61 * SP_SECONDS,
      90 * SP_SECONDS,
      600 * SP_SECONDS,
      0 /* to the node's next expiry */};
  return steps[param & 15];
}

static void run_expiry(fsu_world *w) {
  int round, rv;

  for (round = 0; round < 4; ++round) {
    w->in_node = 1;
    rv = sp_node_handle_expiry(w->node, w->now);
    w->in_node = 0;
    if (fsu_rc(w, "sp_node_handle_expiry", rv, 1, 0, FSU_END) != 0) {
      return;
    }
    if (sp_node_get_expiry(w->node) > w->now) {
      return;
    }
  }
  fsu_fail("timer livelock: after handling expiry at %llu the node still "
           "asks for %llu",
           (unsigned long long)w->now,
           (unsigned long long)sp_node_get_expiry(w->node));
}

void fsu_advance(fsu_world *w, sp_duration d) {
  w->now = w->now + d < w->now ? SP_TSTAMP_MAX - 1 : w->now + d;
  run_expiry(w);
}

static void op_time(fsu_world *w, unsigned p) {
  if (p == 15) {
    sp_tstamp x = sp_node_get_expiry(w->node);
    if (x != SP_TSTAMP_MAX && x > w->now) {
      w->now = x;
    }
    run_expiry(w);
    return;
  }
  fsu_advance(w, fsu_time_step(p));
}

void fsu_feed(fsu_world *w, const uint8_t *data, size_t len) {
  fsu_stream *s = fsu_current(w);
  int open, rv;

  if (!s || len == 0) {
    return;
  }
  open = stream_open(s);
  if (open && (!s->local || tracing())) {
    mirror_in(w, s, data, len);
  }
  w->feeding = (long)w->cur;
  w->in_node = 1;
  rv = sp_node_stream_data(w->node, s->id, &s->peer, data, len, w->now);
  w->in_node = 0;
  w->feeding = -1;
  if (open) {
    fsu_rc(w, "sp_node_stream_data", rv, 1, 0, FSU_END);
  } else {
    fsu_rc(w, "sp_node_stream_data (closed stream)", rv, 0,
           SP_ERR_NOT_FOUND, FSU_END);
  }
}

void fsu_feed_msg(fsu_world *w, const sp_msg *msg) {
  uint8_t stackbuf[4096];
  uint8_t *buf = stackbuf;
  size_t need = sp_msg_encoded_len(msg), n;

  if (need == 0) {
    fsu_fail("the harness built a message the encoder refuses");
  }
  if (need > sizeof(stackbuf)) {
    buf = malloc(need);
    if (!buf) {
      fsu_fail("out of memory in the harness");
    }
  }
  if (sp_msg_encode(msg, buf, need, &n) != 0 || n != need) {
    fsu_fail("sp_msg_encode failed on a message sp_msg_encoded_len sized");
  }
  fsu_feed(w, buf, n);
  if (buf != stackbuf) {
    free(buf);
  }
}

static void op_writable(fsu_world *w, unsigned p) {
  size_t i;
  int rv;

  if (p & 1) {
    for (i = 0; i < w->nstreams && !w->fatal; ++i) {
      fsu_stream *s = &w->streams[i];
      if (s->owed && stream_open(s)) {
        s->owed = 0;
        s->connecting = 0;
        w->in_node = 1;
        rv = sp_node_stream_writable(w->node, s->id, &s->peer, w->now);
        w->in_node = 0;
        fsu_rc(w, "sp_node_stream_writable", rv, 1, 0, FSU_END);
      }
    }
    return;
  }
  if (!fsu_current(w)) {
    return;
  }
  {
    fsu_stream *s = fsu_current(w);
    int open = stream_open(s);
    s->owed = 0;
    s->connecting = 0;
    w->in_node = 1;
    rv = sp_node_stream_writable(w->node, s->id, &s->peer, w->now);
    w->in_node = 0;
    if (open) {
      fsu_rc(w, "sp_node_stream_writable", rv, 1, 0, FSU_END);
    } else {
      fsu_rc(w, "sp_node_stream_writable (closed stream)", rv, 0,
             SP_ERR_NOT_FOUND, FSU_END);
    }
  }
}

static void op_close(fsu_world *w, unsigned p) {
  static const int reasons[4] = {0, SP_ERR_CONNECTION_LOST, SP_ERR_IO,
                                 SP_ERR_QUIC};
  fsu_stream *s = fsu_current(w);
  int rv, open;

  if (p & 4) {
    w->in_node = 1;
    rv = sp_node_stream_closed(w->node, w->next_id + 1000, &fsu_dev[FSU_F1],
                               reasons[p & 3], w->now);
    w->in_node = 0;
    fsu_rc(w, "sp_node_stream_closed (unknown id)", rv, 0, SP_ERR_NOT_FOUND,
           FSU_END);
    return;
  }
  if (!s) {
    return;
  }
  open = stream_open(s);
  if (p & 8) {
    const sp_uuid *other = &fsu_dev[(s->peer_index + 1) % FSU_NDEV];
    w->in_node = 1;
    rv = sp_node_stream_closed(w->node, s->id, other, reasons[p & 3], w->now);
    w->in_node = 0;
    if (open) {
      fsu_rc(w, "sp_node_stream_closed (wrong peer)", rv, 0,
             SP_ERR_INVALID_ARGUMENT, FSU_END);
    } else {
      fsu_rc(w, "sp_node_stream_closed (wrong peer, closed)", rv, 0,
             SP_ERR_NOT_FOUND, FSU_END);
    }
    return;
  }
  if (open) {
    s->tr_closed = 1; /* from now on the node must not touch it */
  }
  w->in_node = 1;
  rv = sp_node_stream_closed(w->node, s->id, &s->peer, reasons[p & 3], w->now);
  w->in_node = 0;
  if (open) {
    fsu_rc(w, "sp_node_stream_closed", rv, 1, 0, FSU_END);
  } else {
    fsu_rc(w, "sp_node_stream_closed (closed stream)", rv, 0,
           SP_ERR_NOT_FOUND, FSU_END);
  }
}

static void op_open(fsu_world *w, unsigned p) {
  int peer = (int)(p & 3), rv;
  fsu_stream *s = fsu_current(w);

  if ((p & 4) && s && stream_open(s)) {
    /* The transport reports an id that is in use. */
    w->in_node = 1;
    rv = sp_node_stream_opened(w->node, s->id, &fsu_dev[peer], w->now);
    w->in_node = 0;
    fsu_rc(w, "sp_node_stream_opened (id in use)", rv, 0, SP_ERR_EXISTS,
           FSU_END);
    return;
  }
  if (w->nstreams == FSU_MAX_STREAMS) {
    return;
  }
  w->in_node = 1;
  rv = sp_node_stream_opened(w->node, w->next_id, &fsu_dev[peer], w->now);
  w->in_node = 0;
  /* SP_ERR_TOO_MANY_REQUESTS: the peer has too many streams waiting for
   * a first frame; the transport resets the stream. */
  if (fsu_rc(w, "sp_node_stream_opened", rv, 1, 0, SP_ERR_NOMEM,
             SP_ERR_TOO_MANY_REQUESTS, FSU_END) != 0) {
    return;
  }
  add_stream(w, w->next_id++, peer, 0);
  w->cur = w->nstreams - 1;
}

void fsu_wrong_peer_calls(fsu_world *w, unsigned which) {
  fsu_stream *s = fsu_current(w);
  const sp_uuid *other;
  static const uint8_t junk[1] = {0};
  int rv, open;

  if (!s) {
    return;
  }
  open = stream_open(s);
  other = &fsu_dev[(s->peer_index + 1 + (int)(which >> 2)) % FSU_NDEV];
  if (sp_uuid_equal(other, &s->peer)) {
    return;
  }
  w->in_node = 1;
  switch (which & 3) {
  case 0:
    rv = sp_node_stream_data(w->node, s->id, other, junk, 1, w->now);
    break;
  case 1:
    rv = sp_node_stream_writable(w->node, s->id, other, w->now);
    break;
  case 2:
    rv = sp_node_stream_data(w->node, s->id, &s->peer, NULL, 1, w->now);
    if (open && rv != SP_ERR_INVALID_ARGUMENT) {
      fsu_fail("sp_node_stream_data(NULL, 1) returned %s", sp_err_name(rv));
    }
    break;
  default:
    rv = sp_node_stream_data(w->node, s->id, &s->peer, NULL, 0, w->now);
    w->in_node = 0;
    if (open) {
      fsu_rc(w, "sp_node_stream_data(NULL, 0)", rv, 1, 0, FSU_END);
    } else {
      fsu_rc(w, "sp_node_stream_data(NULL, 0, closed)", rv, 0,
             SP_ERR_NOT_FOUND, FSU_END);
    }
    return;
  }
  w->in_node = 0;
  if (open) {
    fsu_rc(w, "stream call with the wrong peer", rv, 0,
           SP_ERR_INVALID_ARGUMENT, FSU_END);
  } else {
    fsu_rc(w, "stream call with the wrong peer (closed)", rv, 0,
           SP_ERR_NOT_FOUND, FSU_END);
  }
}

int fsu_step_common(fsu_world *w, uint8_t op, fsu_in *in) {
  unsigned kind = op >> 4, p = op & 15;

  w->frames_in_op = 0;
  if (tracing()) {
    sp_handler_status hs;
    sp_store_state st;
    fsu_status(w, &hs);
    fsu_store_state(w, &st);
    fprintf(stderr,
            "[%llu ms] op %02x (current stream %zu of %zu; handler epoch "
            "%llu seq %llu%s; store epoch %llu applied %llu)\n",
            (unsigned long long)(w->now / SP_MILLISECONDS), op, w->cur,
            w->nstreams, (unsigned long long)hs.epoch,
            (unsigned long long)hs.sequence,
            hs.sync_required ? " sync-required" : "",
            (unsigned long long)st.epoch, (unsigned long long)st.applied);
  }
  switch (kind) {
  case FSU_OP_FEED: {
    size_t want = 1 + (((size_t)p << 8) | fsu_u8(in)), got;
    const uint8_t *d = fsu_bytes(in, want, &got);
    fsu_feed(w, d, got);
    return 1;
  }
  case FSU_OP_WRITABLE:
    op_writable(w, p);
    return 1;
  case FSU_OP_MODE: {
    static const size_t parts[4] = {1, 5, 64, 1000};
    w->send_mode = (int)(p & 3);
    w->part = parts[p >> 2];
    return 1;
  }
  case FSU_OP_TIME:
    op_time(w, p);
    return 1;
  case FSU_OP_CLOSE:
    op_close(w, p);
    return 1;
  case FSU_OP_OPEN:
    op_open(w, p);
    return 1;
  case FSU_OP_SELECT: {
    uint8_t b = fsu_u8(in);
    if (w->nstreams) {
      w->cur = p == 15 ? w->nstreams - 1 : b % w->nstreams;
    }
    return 1;
  }
  case FSU_OP_FAIL:
    w->fail_mask = fsu_u8(in);
    w->fail_once = (int)(p & 1);
    return 1;
  case FSU_OP_DIAL:
    w->open_fail = (int)(p & 1);
    w->connect_mode = (int)((p >> 1) & 1);
    return 1;
  case 0xe:
  case 0xf: {
    size_t got;
    const uint8_t *d = fsu_bytes(in, 1 + (size_t)(op & 31), &got);
    fsu_feed(w, d, got);
    return 1;
  }
  default:
    return 0;
  }
}

/* ---- whole inputs ---- */

int fsu_run_input(const fsu_role_entry *role, const uint8_t *data,
                  size_t size) {
  uint8_t hdr[FSU_HDR_LEN] = {0};
  size_t n = size < FSU_HDR_LEN ? size : FSU_HDR_LEN;
  fsu_in in;
  fsu_world *w;
  long ops = 0;
  static const uint8_t none[1] = {0};

  if (n) {
    memcpy(hdr, data, n);
  }
  in.p = size > n ? data + n : none;
  in.n = size - n;
  w = role->create(hdr, NULL);
  if (!w) {
    return 0;
  }
  while (in.n > 0 && ops++ < FSU_MAX_OPS) {
    if (role->step(w, &in)) {
      break;
    }
  }
  role->destroy(w);
  return 0;
}
