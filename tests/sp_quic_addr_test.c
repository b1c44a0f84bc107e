/*
 * sp_quic_addr_test.c: the text form of UDP addresses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "sync_protocol/errors.h"
#include "transport/quic/sp_quic_int.h"

static int parse(sp_quic_addr *a, const char *text) {
  return sp_quic_addr_parse(a, text, strlen(text));
}

static void round_trip(const char *text) {
  sp_quic_addr a;
  char buf[64];

  assert_int_equal(parse(&a, text), 0);
  assert_int_equal(sp_quic_addr_format(&a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, text);
}

static void test_parse_good(void **state) {
  sp_quic_addr a;

  (void)state;
  round_trip("127.0.0.1:4433");
  round_trip("0.0.0.0:0");
  round_trip("255.255.255.255:65535");
  round_trip("[::1]:4433");
  round_trip("[fe80::1:2]:1");
  round_trip("[::ffff:10.0.0.1]:9");
  /* A link-local scope is kept (by name: every Linux has lo). */
  round_trip("[fe80::1%lo]:7");
  assert_int_equal(parse(&a, "[fe80::1%1]:7"), 0);
  assert_int_equal(a.u.in6.sin6_scope_id, 1);
  assert_int_equal(parse(&a, "10.1.2.3:80"), 0);
  assert_int_equal(a.u.sa.sa_family, AF_INET);
  assert_int_equal(ntohs(a.u.in.sin_port), 80);
  assert_int_equal(a.len, sizeof(struct sockaddr_in));
  assert_int_equal(parse(&a, "[::2]:81"), 0);
  assert_int_equal(a.u.sa.sa_family, AF_INET6);
  assert_int_equal(ntohs(a.u.in6.sin6_port), 81);
  assert_int_equal(a.len, sizeof(struct sockaddr_in6));
}

static void test_parse_bad(void **state) {
  static const char *bad[] = {
      "", ":", "1.2.3.4", "1.2.3.4:", ":80", "1.2.3.4:65536",
      "1.2.3.4:-1", "1.2.3.4:+80", "1.2.3.4:8 0", "1.2.3.4:80x",
      "1.2.3:80", "1.2.3.4.5:80", "localhost:80", "::1:80", "[::1]",
      "[::1]80", "[::1]:", "[]:80", "[1.2.3.4]:80", "[::g]:80",
      "[::1:80", " 1.2.3.4:80", "1.2.3.4:123456", "[fe80::1%]:80",
      "[fe80::1%no-such-if0]:80", "[fe80::1%0]:80", "1.2.3.4%lo:80",
  };
  sp_quic_addr a, keep;
  size_t i;

  (void)state;
  memset(&keep, 0x33, sizeof(keep));
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
    a = keep;
    if (parse(&a, bad[i]) != SP_ERR_ADDRESS) {
      fail_msg("'%s' accepted", bad[i]);
    }
    assert_memory_equal(&a, &keep, sizeof(a));
  }
  /* Length-bounded: a valid prefix followed by more text is not read. */
  assert_int_equal(sp_quic_addr_parse(&a, "1.2.3.4:80,junk", 10), 0);
  assert_int_equal(ntohs(a.u.in.sin_port), 80);
}

static void test_pick(void **state) {
  sp_quic_addr a;
  char buf[64];

  (void)state;
  assert_int_equal(sp_quic_addr_pick(&a, "10.0.0.1:1", AF_INET), 0);
  assert_int_equal(
      sp_quic_addr_pick(&a, "junk, [::1]:5 ,10.0.0.2:2,10.0.0.3:3", AF_INET),
      0);
  assert_int_equal(sp_quic_addr_format(&a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "10.0.0.2:2");
  /* An IPv6 socket takes IPv6 first-come, and IPv4 as v4-mapped. */
  assert_int_equal(sp_quic_addr_pick(&a, "10.0.0.2:2,[::1]:5", AF_INET6), 0);
  assert_int_equal(sp_quic_addr_format(&a, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "[::ffff:10.0.0.2]:2");
  /* Port 0 cannot be dialled. */
  assert_int_equal(sp_quic_addr_pick(&a, "10.0.0.1:0", AF_INET),
                   SP_ERR_ADDRESS);
  assert_int_equal(sp_quic_addr_pick(&a, "[::1]:5", AF_INET),
                   SP_ERR_UNREACHABLE);
  assert_int_equal(sp_quic_addr_pick(&a, "", AF_INET), SP_ERR_ADDRESS);
  assert_int_equal(sp_quic_addr_pick(&a, ",,", AF_INET), SP_ERR_ADDRESS);
}

static void test_format_short_buffer(void **state) {
  sp_quic_addr a;
  char buf[64];

  (void)state;
  assert_int_equal(parse(&a, "127.0.0.1:4433"), 0);
  assert_int_equal(sp_quic_addr_format(&a, buf, 14), SP_ERR_NOBUF);
  assert_int_equal(sp_quic_addr_format(&a, buf, 15), 0);
  assert_string_equal(buf, "127.0.0.1:4433");
}

static void test_equal(void **state) {
  sp_quic_addr a, b;

  (void)state;
  assert_int_equal(parse(&a, "127.0.0.1:1"), 0);
  assert_int_equal(parse(&b, "127.0.0.1:1"), 0);
  assert_true(sp_quic_addr_equal(&a, &b));
  assert_int_equal(parse(&b, "127.0.0.1:2"), 0);
  assert_false(sp_quic_addr_equal(&a, &b));
  assert_int_equal(parse(&b, "[::ffff:127.0.0.1]:1"), 0);
  assert_false(sp_quic_addr_equal(&a, &b));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_good),
      cmocka_unit_test(test_parse_bad),
      cmocka_unit_test(test_pick),
      cmocka_unit_test(test_format_short_buffer),
      cmocka_unit_test(test_equal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
