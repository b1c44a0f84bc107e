/*
 * sp_quic_errdetail_test.c: why a QUIC endpoint failed, and where its
 * lines go (issue 14 items 4 and 5).  sp_quic_errmsg gives the errno text
 * of a failed bind (also for the endpoint that was never made); the
 * module's lines, ngtcp2's debug output included, reach the host's on_log
 * only, at their levels, naming the port and the peer; nothing is written
 * to stderr.  Real UDP on 127.0.0.1, fake nodes (the transport alone).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"

#define MAX_LINES 4096

typedef struct logbook {
  char (*lines)[256];
  sp_log_level *levels;
  size_t n;
  size_t by_level[SP_LOG_DEBUG + 1];
} logbook;

static void book_init(logbook *b) {
  memset(b, 0, sizeof(*b));
  b->lines = calloc(MAX_LINES, sizeof(*b->lines));
  b->levels = calloc(MAX_LINES, sizeof(*b->levels));
  assert_non_null(b->lines);
  assert_non_null(b->levels);
}

static void book_free(logbook *b) {
  free(b->lines);
  free(b->levels);
}

static void log_cb(sp_log_level level, const char *msg, void *user_data) {
  logbook *b = user_data;

  assert_true(level <= SP_LOG_DEBUG);
  ++b->by_level[level];
  if (b->n < MAX_LINES) {
    b->levels[b->n] = level;
    snprintf(b->lines[b->n++], sizeof(b->lines[0]), "%s", msg);
  }
}

/* A line of `level` holding both parts (`b` may be NULL). */
static int has_line(const logbook *lb, sp_log_level level, const char *a,
                    const char *b) {
  size_t i;

  for (i = 0; i < lb->n; ++i) {
    if (lb->levels[i] == level && strstr(lb->lines[i], a) &&
        (!b || strstr(lb->lines[i], b))) {
      return 1;
    }
  }
  return 0;
}

/* Every line starts with the module's prefix. */
static void assert_prefixed(const logbook *lb, const sp_quic_endpoint *ep) {
  char prefix[32];
  size_t i;

  snprintf(prefix, sizeof(prefix), "quic[%u]: ",
           (unsigned)sp_quic_endpoint_port(ep));
  for (i = 0; i < lb->n; ++i) {
    if (strncmp(lb->lines[i], prefix, strlen(prefix)) != 0) {
      fail_msg("line without \"%s\": %s", prefix, lb->lines[i]);
    }
  }
}

static int closed(void *arg) { return ((fn_stream *)arg)->closed; }

/* A bind on a port in use: SP_ERR_IO, no endpoint, errno and
 * sp_quic_errmsg(NULL) say why; the next success clears the text. */
static void test_bind_in_use(void **state) {
  qt_device a;
  sp_quic_endpoint *ep = (sp_quic_endpoint *)&a; /* must become NULL */
  sp_quic_config cfg = qt_config();
  int rv;

  (void)state;
  qt_device_init(&a);
  qt_device_start(&a, NULL);
  cfg.bind_address = a.addr;
  errno = 0;
  rv = sp_quic_endpoint_new(&ep, &cfg, a.id, &a.reg.reg, NULL);
  assert_int_equal(rv, SP_ERR_IO);
  assert_int_equal(errno, EADDRINUSE);
  assert_null(ep);
  assert_string_equal(sp_quic_errmsg(NULL), strerror(EADDRINUSE));
  /* The endpoint that did bind has failed at nothing. */
  assert_string_equal(sp_quic_errmsg(a.ep), "");

  cfg.bind_address = "127.0.0.1:0";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, a.id, &a.reg.reg, NULL),
                   0);
  assert_string_equal(sp_quic_errmsg(NULL), "");
  assert_string_equal(sp_quic_errmsg(ep), "");
  sp_quic_endpoint_del(ep);
  qt_device_free(&a);
}

/* An address that does not parse is named in the text. */
static void test_bad_address(void **state) {
  qt_device a;
  sp_quic_endpoint *ep = NULL;
  sp_quic_config cfg = qt_config();

  (void)state;
  qt_device_init(&a);
  cfg.bind_address = "localhost:what";
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, a.id, &a.reg.reg, NULL),
                   SP_ERR_ADDRESS);
  assert_null(ep);
  assert_non_null(strstr(sp_quic_errmsg(NULL), "localhost:what"));
  qt_device_free(&a);
}

/* sp_quic_errmsg(NULL) is the calling thread's: a failure in one thread
 * neither shows nor clears in another. */
typedef struct other_thread {
  qt_device *dev;
  char before[256];
  char after[256];
  int rv;
} other_thread;

static void *fail_elsewhere(void *arg) {
  other_thread *o = arg;
  sp_quic_endpoint *ep = NULL;
  sp_quic_config cfg = qt_config();

  snprintf(o->before, sizeof(o->before), "%s", sp_quic_errmsg(NULL));
  cfg.bind_address = "localhost:what";
  o->rv = sp_quic_endpoint_new(&ep, &cfg, o->dev->id, &o->dev->reg.reg, NULL);
  snprintf(o->after, sizeof(o->after), "%s", sp_quic_errmsg(NULL));
  return NULL;
}

static void test_errmsg_per_thread(void **state) {
  qt_device a;
  sp_quic_endpoint *ep = NULL;
  sp_quic_config cfg = qt_config();
  other_thread o;
  pthread_t th;

  (void)state;
  qt_device_init(&a);
  qt_device_start(&a, NULL);
  cfg.bind_address = a.addr;
  assert_int_equal(sp_quic_endpoint_new(&ep, &cfg, a.id, &a.reg.reg, NULL),
                   SP_ERR_IO);
  memset(&o, 0, sizeof(o));
  o.dev = &a;
  assert_int_equal(pthread_create(&th, NULL, fail_elsewhere, &o), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_string_equal(o.before, "");
  assert_int_equal(o.rv, SP_ERR_ADDRESS);
  assert_non_null(strstr(o.after, "localhost:what"));
  assert_string_equal(sp_quic_errmsg(NULL), strerror(EADDRINUSE));
  qt_device_free(&a);
}

typedef struct refusal {
  logbook la, lb;
  size_t stderr_bytes;
  char b_uuid[SP_UUID_STRING_LEN + 1];
  char a_port[16];
  unsigned a_port_num, b_port_num;
} refusal;

/* A client whose key the server does not know, with `debug` on both
 * sides, stderr pointed at a file for the whole run. */
static void run_refusal(refusal *r, int debug) {
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  sp_quic_config ca = qt_config(), cb = qt_config();
  char path[] = "/tmp/sp_quic_errdetail_XXXXXX";
  fn_stream *cs;
  sp_uuid lib;
  int fd, saved, rv;

  memset(r, 0, sizeof(*r));
  book_init(&r->la);
  book_init(&r->lb);
  fflush(stderr);
  fd = mkstemp(path);
  assert_true(fd >= 0);
  saved = dup(2);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fd, 2), 2);

  ca.debug = cb.debug = debug;
  ca.on_log = cb.on_log = log_cb;
  ca.log_user_data = &r->la;
  cb.log_user_data = &r->lb;
  qt_device_init(&a);
  qt_device_init(&b);
  qt_device_start(&a, &ca);
  qt_device_start(&b, &cb);
  qt_know(&a, &b); /* b does not know a */
  sp_uuid_generate(&lib);
  sp_uuid_format(sp_identity_device_id(b.id), r->b_uuid);
  r->a_port_num = sp_quic_endpoint_port(a.ep);
  r->b_port_num = sp_quic_endpoint_port(b.ep);
  snprintf(r->a_port, sizeof(r->a_port), ":%u", r->a_port_num);
  cs = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(cs);
  (void)fn_send(a.node, cs, "hello", 5);
  assert_true(qt_run(d, 2, NULL, closed, cs, 5));
  assert_int_equal(cs->closed_reason, SP_ERR_UNKNOWN_KEY);
  assert_prefixed(&r->la, a.ep);
  assert_prefixed(&r->lb, b.ep);
  qt_device_free(&a);
  qt_device_free(&b);

  fflush(stderr);
  assert_int_equal(dup2(saved, 2), 2);
  close(saved);
  r->stderr_bytes = (size_t)lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path);
}

/* The refusal reaches on_log on both sides at WARN, naming the address;
 * with debug, the module's and ngtcp2's lines come at DEBUG and name the
 * peer; nothing at all goes to stderr. */
static void test_refusal_logged_not_printed(void **state) {
  refusal r;

  (void)state;
  run_refusal(&r, 1);
  assert_int_equal(r.stderr_bytes, 0);
  assert_true(has_line(&r.lb, SP_LOG_WARN, "refused handshake from 127.0.0.1",
                       r.a_port));
  assert_true(has_line(&r.la, SP_LOG_WARN, "closed the connection with code 404",
                       "SP_ERR_UNKNOWN_KEY"));
  /* The client knows whom it dialled: its lines name the device. */
  assert_true(has_line(&r.la, SP_LOG_WARN, r.b_uuid, NULL));
  assert_true(has_line(&r.la, SP_LOG_DEBUG, "ngtcp2: ", r.b_uuid));
  assert_true(has_line(&r.lb, SP_LOG_DEBUG, "ngtcp2: ", "peer at 127.0.0.1"));
  assert_true(r.la.by_level[SP_LOG_DEBUG] > 10);
  book_free(&r.la);
  book_free(&r.lb);
}

/* Without debug: the same WARN lines, no DEBUG line, still no stderr. */
static void test_no_debug_lines_unasked(void **state) {
  refusal r;

  (void)state;
  run_refusal(&r, 0);
  assert_int_equal(r.stderr_bytes, 0);
  assert_true(has_line(&r.lb, SP_LOG_WARN, "refused handshake from 127.0.0.1",
                       r.a_port));
  assert_int_equal(r.la.by_level[SP_LOG_DEBUG], 0);
  assert_int_equal(r.lb.by_level[SP_LOG_DEBUG], 0);
  book_free(&r.la);
  book_free(&r.lb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bind_in_use),
      cmocka_unit_test(test_bad_address),
      cmocka_unit_test(test_errmsg_per_thread),
      cmocka_unit_test(test_refusal_logged_not_printed),
      cmocka_unit_test(test_no_debug_lines_unasked),
  };
  return QT_RUN_TESTS(tests);
}
