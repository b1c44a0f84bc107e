/*
 * spsync_pairing_test.c: spsync's pairing addresses.  The address a
 * device binds prefers IPv4 when its name has both families (the peers
 * that dial it from 127.0.0.1:0 pick the IPv4 hint); resolving keeps every
 * address and a link-local scope, and tells a malformed address (an
 * error) from a name that does not resolve (kept, tried again later); a
 * device whose name does not resolve is kept by the reader.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pairing.h"

static void bind_of(const char *hints, const char *want) {
  char out[PAIRING_HINTS_LEN];

  pairing_bind_address(hints, out, sizeof(out));
  assert_string_equal(out, want);
}

static void test_bind_prefers_ipv4(void **state) {
  (void)state;
  /* As getaddrinfo orders "localhost" on a stock Debian: ::1 first. */
  bind_of("[::1]:7000,127.0.0.1:7000", "127.0.0.1:7000");
  bind_of("[::1]:7000,[fe80::1]:7000,10.0.0.2:7000,127.0.0.1:7000",
          "10.0.0.2:7000");
  bind_of("127.0.0.1:7000,[::1]:7000", "127.0.0.1:7000");
  bind_of("[::1]:7000", "[::1]:7000");
  bind_of("[::1]:7000,[::2]:7000", "[::1]:7000");
  bind_of("10.0.0.1:1", "10.0.0.1:1");
  bind_of("", "");
}

static void test_resolve(void **state) {
  char out[PAIRING_HINTS_LEN], err[200];

  (void)state;
  assert_int_equal(pairing_resolve("127.0.0.1:7", out, sizeof(out), err,
                                   sizeof(err)),
                   0);
  assert_string_equal(out, "127.0.0.1:7");
  assert_int_equal(pairing_resolve("[::1]:7", out, sizeof(out), err,
                                   sizeof(err)),
                   0);
  assert_string_equal(out, "[::1]:7");
  /* The scope stays: without it a link-local address is not dialable. */
  assert_int_equal(pairing_resolve("[fe80::1%lo]:7", out, sizeof(out), err,
                                   sizeof(err)),
                   0);
  assert_string_equal(out, "[fe80::1%lo]:7");
  /* Malformed: -1; well formed but not resolving: -2. */
  assert_int_equal(pairing_resolve("localhost", out, sizeof(out), err,
                                   sizeof(err)),
                   -1);
  assert_int_equal(pairing_resolve("1.2.3.4:70000", out, sizeof(out), err,
                                   sizeof(err)),
                   -1);
  assert_int_equal(pairing_resolve("no-such-host.invalid:7", out, sizeof(out),
                                   err, sizeof(err)),
                   -2);
  assert_non_null(strstr(err, "cannot resolve 'no-such-host.invalid'"));
}

/* A pairing file whose follower's name does not resolve loads; the
 * device keeps its address, has no hints yet and says why. */
static void test_unresolved_device_kept(void **state) {
  static const char *text =
      "library 9a0c3b1e-0000-4000-8000-000000000001\n"
      "device 9a0c3b1e-0000-4000-8000-000000000002 "
      "1111111111111111111111111111111111111111111111111111111111111111 "
      "leader 127.0.0.1:7000 L\n"
      "device 9a0c3b1e-0000-4000-8000-000000000003 "
      "2222222222222222222222222222222222222222222222222222222222222222 "
      "follower no-such-host.invalid:7000 F\n"
      "device 9a0c3b1e-0000-4000-8000-000000000004 "
      "3333333333333333333333333333333333333333333333333333333333333333 "
      "follower no-port.invalid G\n";
  char path[] = "/tmp/spsync_pairing_test.XXXXXX", err[512];
  static pairing p;
  FILE *f;
  int fd;

  (void)state;
  fd = mkstemp(path);
  assert_true(fd >= 0);
  f = fdopen(fd, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  /* The malformed address is still an error, named by its line. */
  assert_int_equal(pairing_load(&p, path, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "line 4: bad address 'no-port.invalid'"));
  f = fopen(path, "w");
  assert_non_null(f);
  /* Without the malformed line: it loads. */
  fwrite(text, 1,
         (size_t)(strstr(text, "device 9a0c3b1e-0000-4000-8000-000000000004") -
                  text),
         f);
  fclose(f);
  assert_int_equal(pairing_load(&p, path, err, sizeof(err)), 0);
  assert_int_equal(p.ndev, 2);
  assert_string_equal(p.dev[0].hints, "127.0.0.1:7000");
  assert_string_equal(p.dev[0].resolve_err, "");
  assert_string_equal(p.dev[1].address, "no-such-host.invalid:7000");
  assert_string_equal(p.dev[1].hints, "");
  assert_non_null(strstr(p.dev[1].resolve_err, "cannot resolve"));
  remove(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bind_prefers_ipv4),
      cmocka_unit_test(test_resolve),
      cmocka_unit_test(test_unresolved_device_kept),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
