/*
 * sp_log_test.c: the core's log lines name the library and the peer they
 * are about ("library <8 hex>: peer <8 hex>: ..."), over the in-memory
 * network, so a host running several libraries can tell them apart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sp_cluster.h"

#define LIB 0
#define LEADER 0
#define F1 1
#define MAX_LINES 512

typedef struct line {
  int dev;
  sp_log_level level;
  char text[512];
} line;

static line g_lines[MAX_LINES];
static size_t g_n;

static void capture(tc *t, int dev, sp_log_level level, const char *text) {
  (void)t;
  if (g_n < MAX_LINES) {
    g_lines[g_n].dev = dev;
    g_lines[g_n].level = level;
    snprintf(g_lines[g_n].text, sizeof(g_lines[g_n].text), "%s", text);
    g_n++;
  }
}

/* "library <first 8 hex of lib>: " (and "peer <first 8 hex>: "). */
static void prefix(char *out, size_t len, const sp_uuid *lib,
                   const sp_uuid *peer) {
  char a[SP_UUID_STRING_LEN + 1], b[SP_UUID_STRING_LEN + 1];

  sp_uuid_format(lib, a);
  if (peer) {
    sp_uuid_format(peer, b);
    snprintf(out, len, "library %.8s: peer %.8s: ", a, b);
  } else {
    snprintf(out, len, "library %.8s: ", a);
  }
}

/* The first line of `dev` containing `text`, or NULL. */
static const char *find(int dev, const char *text) {
  size_t i;

  for (i = 0; i < g_n; ++i) {
    if (g_lines[i].dev == dev && strstr(g_lines[i].text, text)) {
      return g_lines[i].text;
    }
  }
  return NULL;
}

/* A cluster whose nodes log to capture(); the library id gets distinct
 * leading bytes so its short form is not the devices'. */
static void start(tc *t) {
  int i;

  g_n = 0;
  assert_int_equal(tc_init(t, 2, 1, SP_MILLISECONDS, NULL), 0);
  t->lib[LIB].bytes[1] = 0x5e;
  t->lib[LIB].bytes[2] = 0xa7;
  t->lib[LIB].bytes[3] = 0x3c;
  t->on_log = capture;
  for (i = 0; i < t->ndevs; ++i) {
    tc_default_cfg(t, i, LIB, i == LEADER ? SP_ROLE_LEADER : SP_ROLE_FOLLOWER);
    assert_int_equal(tc_restart(t, i), 0);
  }
}

/* A device the leader does not count as a member is refused: the
 * leader's line names the library and the refused device, the refused
 * follower's "peer refused" names the library and the leader. */
static void test_refusal_names_library_and_peer(void **state) {
  char want[64];
  const char *l;
  tc t;

  (void)state;
  start(&t);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  t.dev[F1].member[LIB] = 0;
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  tc_run_for(&t, 2 * SP_SECONDS);

  l = find(F1, "peer refused: ");
  assert_non_null(l);
  prefix(want, sizeof(want), &t.lib[LIB], &t.dev[LEADER].id);
  assert_ptr_equal(strstr(l, want), l);
  /* The rest of the line is what it was. */
  assert_int_equal(strncmp(l + strlen(want), "peer refused: ", 14), 0);

  l = find(LEADER, "refusing stream ");
  assert_non_null(l);
  prefix(want, sizeof(want), &t.lib[LIB], &t.dev[F1].id);
  assert_ptr_equal(strstr(l, want), l);
  assert_int_equal(strncmp(l + strlen(want), "refusing stream ", 16), 0);
  tc_free(&t);
}

/* A line about the library alone (no peer): "no leader to follow" when
 * the registry names this device. */
static void test_library_line_without_peer(void **state) {
  char want[64];
  const char *l;
  tc t;

  (void)state;
  start(&t);
  t.leader[LIB] = F1;
  assert_int_equal(tc_open_as(&t, F1, LIB, SP_ROLE_FOLLOWER, 0), 0);
  tc_run_for(&t, SP_SECONDS);
  l = find(F1, "no leader to follow (");
  assert_non_null(l);
  prefix(want, sizeof(want), &t.lib[LIB], NULL);
  assert_ptr_equal(strstr(l, want), l);
  assert_int_equal(strncmp(l + strlen(want), "no leader to follow (", 21), 0);
  tc_free(&t);
}

/* A normal run: every core line of either device is about the library
 * and starts with its short id. */
static void test_every_line_names_the_library(void **state) {
  char want[64];
  size_t i;
  tc t;

  (void)state;
  start(&t);
  assert_int_equal(tc_open(&t, LEADER, LIB), 0);
  tc_append(&t, LIB, 20, 16);
  assert_int_equal(tc_open(&t, F1, LIB), 0);
  assert_true(tc_converge(&t, LIB, 10 * SP_SECONDS));
  tc_run_for(&t, SP_SECONDS);
  assert_true(g_n > 0);
  prefix(want, sizeof(want), &t.lib[LIB], NULL);
  for (i = 0; i < g_n; ++i) {
    assert_ptr_equal(strstr(g_lines[i].text, want), g_lines[i].text);
  }
  assert_non_null(find(LEADER, "dialing follower: "));
  assert_non_null(find(F1, "holding the leadership claim "));
  tc_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refusal_names_library_and_peer),
      cmocka_unit_test(test_library_line_without_peer),
      cmocka_unit_test(test_every_line_names_the_library),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
