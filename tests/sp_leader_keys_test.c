/*
 * sp_leader_keys_test.c: a leader's follower records against the keys its
 * followers prove, and the follower positions kept with the log.
 *
 * One leader node is driven directly through the sp_node_stream_* entry
 * points.  The transport written here tells the node which key each
 * stream's peer proved (peer_key), and the registry maps two keys, K1 and
 * K2, to one device id D: two devices with one id (a copied key file, a
 * reinstall) that a registry failed to keep apart.
 *
 *   - while D's stream with K1 is connected, a stream from D with K2 is
 *     refused with SP_ERR_DUPLICATE_DEVICE (an Error frame, the close, and
 *     an event), and its acks are not credited to D's record;
 *   - once K1's stream is gone, K2 is accepted and D's record starts over:
 *     acks of the two keys are never mixed;
 *   - positions kept with the log seed a restarted leader (retention floor,
 *     wait_acks with every follower), but only those on the log's own
 *     history and for the key that acknowledged them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync_protocol/sync_protocol.h"

#define MAX_STREAMS 8
#define MAX_EVENTS 64
#define LOG_LEN 6

typedef struct cap {
  uint64_t id;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int has_key;
  uint8_t buf[4096];
  size_t len;
  int closed;
  int close_code;
} cap;

typedef struct fx {
  sp_uuid self, lib, D;
  uint8_t k1[SP_PUBLIC_KEY_LEN], k2[SP_PUBLIC_KEY_LEN];
  cap st[MAX_STREAMS];
  size_t nst;
  uint64_t next_local;
  int events[MAX_EVENTS];
  int codes[MAX_EVENTS];
  size_t nev;
  sp_mem_store *store;
  sp_node *node;
  sp_handler *h;
  sp_tstamp now;
  int wait_calls;
  /* Registry changes: D left; `extra` more members X1.. listed. */
  int d_removed;
  size_t extra;
  /* Store faults: load_follower_acks fails; hash_at fails. */
  int load_fails;
  int hash_fails;
  sp_store orig;
  /* Allocations of 1 KiB or more fail. */
  int big_allocs_fail;
} fx;

static fx F;

static cap *find(uint64_t id) {
  for (size_t i = 0; i < F.nst; ++i) {
    if (F.st[i].id == id) {
      return &F.st[i];
    }
  }
  assert_true(F.nst < MAX_STREAMS);
  memset(&F.st[F.nst], 0, sizeof(F.st[F.nst]));
  F.st[F.nst].id = id;
  return &F.st[F.nst++];
}

/* ---- transport ---- */

static int t_open(const sp_uuid *peer, const sp_uuid *library,
                  uint64_t *stream_id, void *ud) {
  (void)peer;
  (void)library;
  (void)ud;
  *stream_id = F.next_local++;
  find(*stream_id);
  return 0;
}

static sp_ssize t_send(uint64_t id, const uint8_t *data, size_t len,
                       void *ud) {
  cap *c = find(id);
  (void)ud;
  assert_true(c->len + len <= sizeof(c->buf));
  memcpy(c->buf + c->len, data, len);
  c->len += len;
  return (sp_ssize)len;
}

static int t_close(uint64_t id, int code, void *ud) {
  cap *c = find(id);
  (void)ud;
  c->closed++;
  c->close_code = code;
  return 0;
}

static int t_peer_key(uint64_t id, uint8_t key[SP_PUBLIC_KEY_LEN], void *ud) {
  cap *c = find(id);
  (void)ud;
  if (!c->has_key) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(key, c->key, SP_PUBLIC_KEY_LEN);
  return 0;
}

/* ---- registry: members self and D; both keys map to D ---- */

static sp_uuid extra_id(size_t i) {
  sp_uuid u;
  memset(&u, 0, sizeof(u));
  u.bytes[0] = 0xe0;
  u.bytes[1] = (uint8_t)i;
  return u;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *dev, int *m,
                       void *ud) {
  (void)ud;
  *m = sp_uuid_equal(lib, &F.lib) &&
       ((sp_uuid_equal(dev, &F.D) && !F.d_removed) ||
        sp_uuid_equal(dev, &F.self) ||
        (dev->bytes[0] == 0xe0 && dev->bytes[1] < F.extra));
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  (void)lib;
  (void)ud;
  *leader = F.self;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap_,
                     size_t *count, void *ud) {
  size_t n = 0, i;
  (void)lib;
  (void)ud;
  *count = 1 + (F.d_removed ? 0 : 1) + F.extra;
  if (cap_ >= *count) {
    out[n++] = F.self;
    if (!F.d_removed) {
      out[n++] = F.D;
    }
    for (i = 0; i < F.extra; ++i) {
      out[n++] = extra_id(i);
    }
  }
  return 0;
}

static int r_device_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN],
                           sp_uuid *dev, void *ud) {
  (void)ud;
  if (memcmp(key, F.k1, SP_PUBLIC_KEY_LEN) == 0 ||
      memcmp(key, F.k2, SP_PUBLIC_KEY_LEN) == 0) {
    *dev = F.D;
    return 0;
  }
  return SP_ERR_NOT_FOUND;
}

static int on_event(const sp_event *ev, void *ud) {
  (void)ud;
  if (F.nev < MAX_EVENTS) {
    F.events[F.nev] = ev->type;
    F.codes[F.nev] = ev->error_code;
    F.nev++;
  }
  return 0;
}

static int on_wait(sp_handler *h, sp_seq seq, int status, size_t acked,
                   void *ud) {
  (void)h;
  (void)seq;
  (void)status;
  (void)acked;
  (void)ud;
  F.wait_calls++;
  return 0;
}

/* ---- store and allocator faults ---- */

static int s_load(sp_follower_ack_sink sink, void *ctx, void *ud) {
  if (F.load_fails) {
    return SP_ERR_STORE_CORRUPT; /* a malformed row */
  }
  return F.orig.load_follower_acks(sink, ctx, ud);
}

static int s_hash_at(sp_seq seq, uint8_t hash[SP_HASH_LEN], void *ud) {
  if (F.hash_fails) {
    return SP_ERR_IO;
  }
  return F.orig.hash_at(seq, hash, ud);
}

static void *m_malloc(size_t n, void *ud) {
  (void)ud;
  return F.big_allocs_fail && n >= 1024 ? NULL : malloc(n);
}

static void m_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *m_calloc(size_t k, size_t n, void *ud) {
  (void)ud;
  return F.big_allocs_fail && k * n >= 1024 ? NULL : calloc(k, n);
}

static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return F.big_allocs_fail && n >= 1024 ? NULL : realloc(p, n);
}

static const sp_mem test_mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};

/* ---- helpers ---- */

static void fill_log(sp_mem_store *s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint8_t data[8];
    sp_entry e;
    sp_seq seq;
    memset(&e, 0, sizeof(e));
    memset(data, (int)i, sizeof(data));
    e.device_id = F.self;
    e.timestamp_ms = 1000 + i;
    e.model_type = "Tag";
    e.model_type_len = 3;
    e.record_id.bytes[0] = (uint8_t)i;
    e.change_type = SP_CHANGE_INSERT;
    e.version = 1;
    e.data = data;
    e.data_len = sizeof(data);
    assert_int_equal(sp_mem_store_append(s, &e, &seq), 0);
  }
}

static void start_leader(void) {
  sp_node_config nc;
  sp_handler_config hc;
  sp_registry reg = SP_REGISTRY_INIT;
  sp_transport tr = SP_TRANSPORT_INIT;
  sp_events ev = SP_EVENTS_INIT;
  sp_store st;

  reg.is_member = r_is_member;
  reg.leader = r_leader;
  reg.members = r_members;
  reg.device_by_key = r_device_by_key;
  tr.open_stream = t_open;
  tr.send = t_send;
  tr.close_stream = t_close;
  tr.peer_key = t_peer_key;
  ev.on_event = on_event;
  sp_node_config_default(&nc);
  nc.device_id = F.self;
  assert_int_equal(sp_node_new(&F.node, &nc, &reg, &ev, &tr, &test_mem), 0);
  sp_handler_config_default(&hc);
  hc.library_id = F.lib;
  hc.role = SP_ROLE_LEADER;
  hc.epoch = 1;
  sp_mem_store_get_vtable(F.store, &st);
  F.orig = st;
  st.load_follower_acks = s_load;
  st.hash_at = s_hash_at;
  assert_int_equal(sp_handler_new(&F.h, F.node, &hc, &st, F.now), 0);
}

static void stop_leader(void) {
  sp_node_del(F.node);
  F.node = NULL;
  F.h = NULL;
}

static int setup(void **state) {
  (void)state;
  memset(&F, 0, sizeof(F));
  F.self.bytes[0] = 0x1e;
  F.lib.bytes[0] = 0x11;
  F.D.bytes[0] = 0xdd;
  memset(F.k1, 0xa1, sizeof(F.k1));
  memset(F.k2, 0xb2, sizeof(F.k2));
  F.next_local = 1000;
  F.now = 1;
  assert_int_equal(sp_mem_store_new(&F.store, NULL), 0);
  fill_log(F.store, LOG_LEN);
  start_leader();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  stop_leader();
  sp_mem_store_del(F.store);
  return 0;
}

/* A peer (device D, proving `key`) opens stream `id`. */
static void peer_opens(uint64_t id, const uint8_t key[SP_PUBLIC_KEY_LEN]) {
  cap *c = find(id);
  memcpy(c->key, key, SP_PUBLIC_KEY_LEN);
  c->has_key = 1;
  assert_int_equal(sp_node_stream_opened(F.node, id, &F.D, F.now), 0);
}

static void peer_sends(uint64_t id, const sp_msg *m) {
  uint8_t frame[128];
  size_t n;

  assert_int_equal(sp_msg_encode(m, frame, sizeof(frame), &n), 0);
  F.now += SP_MILLISECONDS;
  assert_int_equal(sp_node_stream_data(F.node, id, &F.D, frame, n, F.now), 0);
}

static void peer_acks(uint64_t id, sp_seq up_to) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_ACKNOWLEDGE;
  m.library_id = F.lib;
  m.epoch = 1;
  m.u.acknowledge.up_to_sequence = up_to;
  peer_sends(id, &m);
}

/* A follower's Heartbeat: routes a new stream without acknowledging. */
static void peer_hello(uint64_t id) {
  sp_msg m;

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = F.lib;
  m.epoch = 1;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  peer_sends(id, &m);
}

/* The code of the Error frame among what the node sent on `id`, or 0. */
static int error_sent(uint64_t id) {
  cap *c = find(id);
  sp_frame_reader *rd;
  sp_decoder *dec;
  size_t off = 0;
  int code = 0;

  assert_int_equal(sp_frame_reader_new(&rd, 0, NULL), 0);
  assert_int_equal(sp_decoder_new(&dec, NULL), 0);
  while (off < c->len) {
    const uint8_t *body;
    size_t blen;
    sp_msg m;
    sp_ssize k = sp_frame_reader_read(rd, c->buf + off, c->len - off, &body,
                                      &blen);
    assert_true(k > 0);
    off += (size_t)k;
    if (body && sp_decoder_decode(dec, body, blen, &m) == 0 &&
        m.type == SP_MSG_ERROR) {
      code = m.u.error.code;
    }
  }
  sp_decoder_del(dec);
  sp_frame_reader_del(rd);
  return code;
}

static int error_events(int code) {
  int n = 0;
  for (size_t i = 0; i < F.nev; ++i) {
    n += F.events[i] == SP_EVENT_ERROR && F.codes[i] == code;
  }
  return n;
}

static sp_follower_progress progress(void) {
  sp_follower_progress p;
  assert_int_equal(sp_handler_follower_progress(F.h, &F.D, F.now, &p), 0);
  return p;
}

/* ---- tests ---- */

/* A second key for a connected device id is refused and never credited. */
static void test_second_key_refused(void **state) {
  (void)state;
  peer_opens(1, F.k1);
  peer_acks(1, 3);
  assert_int_equal(progress().acked_sequence, 3);

  peer_opens(2, F.k2);
  peer_acks(2, 5);
  /* The newcomer hears why, the host is told, the first stays. */
  assert_int_equal(error_sent(2), SP_ERR_DUPLICATE_DEVICE);
  assert_int_equal(find(2)->closed, 1);
  assert_int_equal(find(2)->close_code, SP_ERR_DUPLICATE_DEVICE);
  assert_int_equal(error_events(SP_ERR_DUPLICATE_DEVICE), 1);
  assert_int_equal(find(1)->closed, 0);
  assert_true(progress().connected);
  assert_int_equal(progress().acked_sequence, 3);
  assert_int_equal(sp_handler_wait_acks(F.h, 5, 0, SP_TSTAMP_MAX, on_wait,
                                        NULL, F.now),
                   0);
  /* K1 goes on being credited on its own stream. */
  peer_acks(1, 4);
  assert_int_equal(progress().acked_sequence, 4);
  assert_int_equal(F.wait_calls, 0);
  assert_string_equal(sp_err_name(SP_ERR_DUPLICATE_DEVICE),
                      "SP_ERR_DUPLICATE_DEVICE");
}

/* Once the first key's stream is gone, the other key starts over. */
static void test_other_key_starts_over(void **state) {
  sp_seq floor = 99;
  (void)state;
  peer_opens(1, F.k1);
  peer_acks(1, 5);
  assert_int_equal(sp_node_stream_closed(F.node, 1, &F.D, 0, F.now), 0);
  assert_int_equal(progress().acked_sequence, 5);

  peer_opens(2, F.k2);
  peer_hello(2);
  assert_int_equal(find(2)->closed, 0);
  assert_false(progress().has_acked);
  assert_int_equal(sp_handler_retention_floor(F.h, &floor), 0);
  assert_int_equal(floor, 0);
  peer_acks(2, 2);
  assert_int_equal(find(2)->closed, 0);
  assert_int_equal(progress().acked_sequence, 2);
}

/* A position kept with the log seeds a restarted leader. */
static void test_kept_position_seeds_restart(void **state) {
  sp_seq floor = 0;
  (void)state;
  peer_opens(1, F.k1);
  peer_acks(1, LOG_LEN); /* the latest: kept at once */
  stop_leader();
  memset(F.st, 0, sizeof(F.st));
  F.nst = 0;

  start_leader();
  assert_true(progress().has_acked);
  assert_int_equal(progress().acked_sequence, LOG_LEN);
  assert_false(progress().connected);
  assert_int_equal(sp_handler_retention_floor(F.h, &floor), 0);
  assert_int_equal(floor, LOG_LEN);
  /* Every registered follower holds the latest: nothing to wait for. */
  assert_int_equal(sp_handler_wait_acks(F.h, LOG_LEN, 0, SP_TSTAMP_MAX,
                                        on_wait, NULL, F.now),
                   1);

  /* The kept key binds too: the other key starts over. */
  peer_opens(7, F.k2);
  peer_hello(7);
  assert_false(progress().has_acked);
  stop_leader();
  start_leader();
  assert_false(progress().has_acked); /* the reset was kept as well */
}

/* A kept position not on this log's history says nothing. */
static void test_kept_position_checked(void **state) {
  sp_store vt;
  uint8_t other[SP_HASH_LEN];
  (void)state;
  stop_leader();
  sp_mem_store_get_vtable(F.store, &vt);
  memset(other, 0x77, sizeof(other));
  assert_int_equal(vt.save_follower_ack(&F.D, F.k1, 4, other, vt.user_data),
                   0);
  start_leader();
  assert_false(progress().has_acked);
  stop_leader();
  /* Beyond the latest (a log that was replaced): ignored too. */
  assert_int_equal(vt.save_follower_ack(&F.D, F.k1, LOG_LEN + 3, other,
                                        vt.user_data),
                   0);
  start_leader();
  assert_false(progress().has_acked);
}


/* Keep D's position `seq` with the log under `key`, as a leader would. */
static void keep_position(const uint8_t key[SP_PUBLIC_KEY_LEN], sp_seq seq) {
  sp_store vt;
  uint8_t hash[SP_HASH_LEN];

  sp_mem_store_get_vtable(F.store, &vt);
  assert_int_equal(vt.hash_at(seq, hash, vt.user_data), 0);
  assert_int_equal(vt.save_follower_ack(&F.D, key, seq, hash, vt.user_data),
                   0);
}

static int kept_sink(const sp_uuid *device,
                     const uint8_t key[SP_PUBLIC_KEY_LEN], sp_seq acked,
                     const uint8_t hash[SP_HASH_LEN], void *ctx) {
  (void)key;
  (void)hash;
  if (sp_uuid_equal(device, &F.D)) {
    *(sp_seq *)ctx = acked;
  }
  return 0;
}

/* D's position as kept with the log now (0: none). */
static sp_seq kept_seq(void) {
  sp_seq seq = 0;

  assert_int_equal(F.orig.load_follower_acks(kept_sink, &seq,
                                             F.orig.user_data),
                   0);
  return seq;
}

/* A follower's position is kept at once the first time, then at most
 * every 30 s while its stream lives (the node's timer keeps what was held
 * back), and when the stream ends: a store write per ack per follower
 * would cost more than serving it, with a thousand followers. */
static void test_kept_at_most_every_interval(void **state) {
  sp_tstamp held_at;
  (void)state;
  peer_opens(1, F.k1);
  peer_acks(1, 2);
  assert_int_equal(kept_seq(), 2);
  peer_acks(1, 4);
  held_at = F.now;
  peer_acks(1, LOG_LEN); /* the latest: held back too */
  assert_int_equal(kept_seq(), 2);
  assert_int_equal(progress().acked_sequence, LOG_LEN);
  assert_true(sp_node_get_expiry(F.node) <= held_at + 30 * SP_SECONDS);
  F.now = held_at + 30 * SP_SECONDS;
  assert_int_equal(sp_node_handle_expiry(F.node, F.now), 0);
  assert_int_equal(kept_seq(), LOG_LEN);

  /* Held back after that save, kept when the stream ends. */
  fill_log(F.store, 2);
  assert_int_equal(sp_handler_notify_new_entries(F.h, LOG_LEN + 1,
                                                 LOG_LEN + 2, F.now),
                   0);
  peer_acks(1, LOG_LEN + 2);
  assert_int_equal(kept_seq(), LOG_LEN);
  assert_int_equal(sp_node_stream_closed(F.node, 1, &F.D, 0, F.now), 0);
  assert_int_equal(kept_seq(), LOG_LEN + 2);
}

static void restart_leader(void) {
  stop_leader();
  memset(F.st, 0, sizeof(F.st));
  F.nst = 0;
  start_leader();
}

/* Kept positions are best-effort: a store that cannot load them (a
 * malformed row, a failing hash_at) does not stop the leader starting. */
static void test_kept_load_errors_ignored(void **state) {
  (void)state;
  keep_position(F.k1, 4);
  stop_leader();
  F.load_fails = 1;
  start_leader();
  assert_false(progress().has_acked);
  assert_true(sp_node_get_expiry(F.node) < SP_TSTAMP_MAX);
  stop_leader();
  F.load_fails = 0;
  F.hash_fails = 1;
  start_leader();
  assert_false(progress().has_acked);
  F.hash_fails = 0;
  /* Nothing was lost: the next start loads it. */
  restart_leader();
  assert_int_equal(progress().acked_sequence, 4);
}

/* A position kept without a key (a transport that did not say) stays
 * kept when D first proves a key: the next leader still counts it. */
static void test_first_key_keeps_position(void **state) {
  static const uint8_t zeros[SP_PUBLIC_KEY_LEN];
  (void)state;
  keep_position(zeros, LOG_LEN);
  restart_leader();
  assert_int_equal(progress().acked_sequence, LOG_LEN);
  peer_opens(1, F.k1);
  peer_hello(1);
  peer_acks(1, LOG_LEN);
  assert_int_equal(find(1)->closed, 0);
  assert_int_equal(sp_node_stream_closed(F.node, 1, &F.D, 0, F.now), 0);
  restart_leader();
  assert_true(progress().has_acked);
  assert_int_equal(progress().acked_sequence, LOG_LEN);
}

/* A device removed from the library loses its kept position too; a
 * device added while the leader runs gets its kept position at once. */
static void test_registry_changes_kept_positions(void **state) {
  sp_follower_progress p;
  (void)state;
  peer_opens(1, F.k1);
  peer_acks(1, LOG_LEN); /* the latest: kept at once */
  F.d_removed = 1;
  assert_int_equal(sp_handler_registry_changed(F.h, F.now), 0);
  assert_int_equal(sp_handler_follower_progress(F.h, &F.D, F.now, &p),
                   SP_ERR_NOT_FOUND);
  F.d_removed = 0;
  restart_leader();
  assert_false(progress().has_acked);

  /* Kept while D was no member; D joins while the leader runs. */
  F.d_removed = 1;
  restart_leader();
  keep_position(F.k1, 3);
  F.d_removed = 0;
  assert_int_equal(sp_handler_registry_changed(F.h, F.now), 0);
  assert_true(progress().has_acked);
  assert_int_equal(progress().acked_sequence, 3);
}

/* Out of memory partway through a re-read: the last list read stays. */
static void test_refresh_nomem_keeps_list(void **state) {
  sp_follower_progress out[16];
  (void)state;
  assert_int_equal(sp_handler_list_followers(F.h, out, 16, F.now), 1);
  F.extra = 12;
  F.big_allocs_fail = 1;
  assert_int_not_equal(sp_handler_registry_changed(F.h, F.now), 0);
  F.big_allocs_fail = 0;
  assert_int_equal(sp_handler_list_followers(F.h, out, 16, F.now), 1);
  assert_true(sp_uuid_equal(&out[0].device_id, &F.D));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_kept_at_most_every_interval, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_kept_load_errors_ignored, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_first_key_keeps_position, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_registry_changes_kept_positions,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_refresh_nomem_keeps_list, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_second_key_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_other_key_starts_over, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_kept_position_seeds_restart, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_kept_position_checked, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
