/*
 * sp_leader_addr_test.c: followers' last addresses kept with the log
 * (issue 17, item 2): a restarted leader hands them to the transport
 * before its first dial, so it reaches followers the registry has no
 * address for at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define MS SP_MILLISECONDS
#define LIB 0
#define LEADER 0
#define F1 1
#define F2 2

/* The leader's transport, as QUIC would be for followers the registry
 * has no address for: it can dial a follower only once told where it was
 * seen (add_address_hint).  Calls are numbered, to tell their order. */
static struct {
  sp_transport real;
  int calls;
  int hint_at[4]; /* call number of the last hint for device index i */
  int open_at[4]; /* call number of the first dial that reached device i */
  char address[4][SP_PEER_ADDRESS_MAX];
  tc *t;
} rec;

static int dev_index(const sp_uuid *id) {
  int i;

  for (i = 0; i < rec.t->ndevs; ++i) {
    if (sp_uuid_equal(&rec.t->dev[i].id, id)) {
      return i;
    }
  }
  return 3;
}

static int rec_hint(const sp_uuid *device, const char *address, void *ud) {
  int i = dev_index(device);

  rec.hint_at[i] = ++rec.calls;
  strcpy(rec.address[i], address);
  return rec.real.add_address_hint(device, address, ud);
}

static int rec_open(const sp_uuid *peer, const sp_uuid *library,
                    uint64_t *stream_id, void *ud) {
  int i = dev_index(peer);

  if (!rec.hint_at[i]) {
    return SP_ERR_UNREACHABLE;
  }
  if (!rec.open_at[i]) {
    rec.open_at[i] = ++rec.calls;
  }
  return rec.real.open_stream(peer, library, stream_id, ud);
}

/* A leader process with a new transport (hints are per process). */
static void boot_leader(tc *t) {
  sp_transport real = rec.real;

  memset(&rec, 0, sizeof(rec));
  rec.real = real;
  rec.t = t;
  assert_int_equal(tc_boot(t, LEADER), 0);
  assert_int_equal(tc_open(t, LEADER, LIB), 0);
}

/* A kill -9 the followers do not hear of: their streams stay open. */
static void vanish_leader(tc *t) {
  tc_dev *d = &t->dev[LEADER];

  assert_int_equal(sp_mem_net_vanish(t->net, &d->id), 0);
  sp_node_del(d->node);
  d->node = NULL;
  d->h[LIB] = NULL;
}

/* Leader and two followers, the followers connected by dialing out. */
static void start(tc *t) {
  assert_int_equal(tc_init(t, 3, 1, 1 * MS, NULL), 0);
  tc_crash(t, LEADER);
  rec.real = t->dev[LEADER].tr;
  t->dev[LEADER].tr.add_address_hint = rec_hint;
  t->dev[LEADER].tr.open_stream = rec_open;
  boot_leader(t);
  assert_int_equal(tc_open(t, F1, LIB), 0);
  assert_int_equal(tc_open(t, F2, LIB), 0);
  tc_append(t, LIB, 20, 20);
  assert_true(tc_converge(t, LIB, 2 * SP_SECONDS));
  assert_int_equal(rec.open_at[F1], 0); /* nothing to dial yet */
  tc_run_for(t, 5 * SP_SECONDS);
}

static void expected_address(tc *t, int dev, char *out) {
  char id[SP_UUID_STRING_LEN + 1];

  strcpy(out, "mem:");
  strcat(out, sp_uuid_format(&t->dev[dev].id, id));
}

/* The restarted leader hints where each follower was seen before its
 * first dial, dials them at once, and they stream from it again, though
 * neither noticed the crash. */
static void test_restarted_leader_dials_seen_address(void **state) {
  tc t;
  char want[SP_PEER_ADDRESS_MAX];
  sp_tstamp t0;

  (void)state;
  start(&t);
  vanish_leader(&t);
  boot_leader(&t);
  t0 = t.now;
  expected_address(&t, F1, want);
  assert_string_equal(rec.address[F1], want);
  expected_address(&t, F2, want);
  assert_string_equal(rec.address[F2], want);
  assert_int_equal(rec.hint_at[LEADER], 0);
  tc_run_for(&t, 1 * MS); /* the first expiry */
  assert_true(rec.open_at[F1] > rec.hint_at[F1]);
  assert_true(rec.open_at[F2] > rec.hint_at[F2]);
  tc_append(&t, LIB, 5, 20);
  assert_true(tc_converge(&t, LIB, 2 * SP_SECONDS));
  print_message("followers streaming again %llu ms after the restart\n",
                (unsigned long long)((t.now - t0) / MS));
  assert_true(t.now - t0 < 2 * SP_SECONDS);
  assert_true(tc_is_prefix(&t, F1, LIB));
  assert_int_equal(t.fatal, 0);
  tc_free(&t);
}

/* Only members are hinted: a device dropped from the library is not
 * dialed at its old address. */
static void test_no_hint_for_non_members(void **state) {
  tc t;

  (void)state;
  start(&t);
  t.dev[F2].member[LIB] = 0;
  vanish_leader(&t);
  boot_leader(&t);
  tc_run_for(&t, 1 * MS);
  assert_int_not_equal(rec.hint_at[F1], 0);
  assert_int_equal(rec.hint_at[F2], 0);
  assert_int_equal(rec.open_at[F2], 0);
  tc_free(&t);
}

/* A device removed from the library loses its kept address too: put back
 * later, it is not dialed where it used to be. */
static void test_removed_device_address_forgotten(void **state) {
  tc t;

  (void)state;
  start(&t);
  t.dev[F2].member[LIB] = 0;
  assert_int_equal(
      sp_handler_registry_changed(t.dev[LEADER].h[LIB], t.now), 0);
  tc_run_for(&t, 1 * MS);
  vanish_leader(&t);
  t.dev[F2].member[LIB] = 1;
  boot_leader(&t);
  tc_run_for(&t, 1 * MS);
  assert_int_not_equal(rec.hint_at[F1], 0);
  assert_int_equal(rec.hint_at[F2], 0);
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_restarted_leader_dials_seen_address),
      cmocka_unit_test(test_no_hint_for_non_members),
      cmocka_unit_test(test_removed_device_address_forgotten),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
