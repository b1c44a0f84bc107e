/*
 * sp_quic_loop_test.c: event-loop integration: what an idle connection
 * costs, the doorbell, stop (from a thread and from a signal handler),
 * and the node's timers driven by the endpoint.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

static int remote_has(void *arg) {
  sp_node *n = arg;
  fn_stream *r = fn_first_remote(n);
  return r && r->received >= 100;
}

static int local_has(void *arg) {
  fn_stream *s = arg;
  return s->received >= 100;
}

static int got_200(void *arg) {
  fn_stream *s = arg;
  return s->received >= 200;
}

/* After setup, an idle connection should cost (almost) nothing on the
 * wire: the core's heartbeats and, every keep_alive (5 s), one PING and
 * its ACK are the only traffic it needs. */
static void test_idle_traffic(void **state) {
  qt_device a, b;
  qt_device *d[2] = {&a, &b};
  sp_quic_stats a0, b0, a1, b1;
  uint8_t buf[100];
  fn_stream *s, *r;
  sp_uuid lib;
  sp_tstamp now, ea, eb;
  int rv;

  (void)state;
  qt_pair_start(&a, &b);
  sp_uuid_generate(&lib);
  memset(buf, 0x5a, sizeof(buf));
  s = fn_open(a.node, sp_identity_device_id(b.id), &lib, &rv);
  assert_non_null(s);
  assert_int_equal(fn_send(a.node, s, buf, 100), 100);
  assert_true(qt_run(d, 2, NULL, remote_has, b.node, 5));
  r = fn_first_remote(b.node);
  assert_int_equal(fn_send(b.node, r, buf, 100), 100);
  assert_true(qt_run(d, 2, NULL, local_has, s, 5));
  /* Let the last ACKs and connection-id updates settle. */
  qt_run_for(d, 2, NULL, 0.5);

  sp_quic_endpoint_get_stats(a.ep, &a0);
  sp_quic_endpoint_get_stats(b.ep, &b0);
  now = sp_quic_now();
  ea = sp_quic_endpoint_get_expiry(a.ep);
  eb = sp_quic_endpoint_get_expiry(b.ep);
  qt_run_for(d, 2, NULL, 3.0);
  sp_quic_endpoint_get_stats(a.ep, &a1);
  sp_quic_endpoint_get_stats(b.ep, &b1);
  printf("idle 3 s after setup: client sent %llu datagrams (%llu bytes), "
         "server sent %llu datagrams (%llu bytes); next timers in %.1f s / "
         "%.1f s (idle timeout %.0f s)\n",
         (unsigned long long)(a1.datagrams_sent - a0.datagrams_sent),
         (unsigned long long)(a1.bytes_sent - a0.bytes_sent),
         (unsigned long long)(b1.datagrams_sent - b0.datagrams_sent),
         (unsigned long long)(b1.bytes_sent - b0.bytes_sent),
         qt_seconds(ea - now), qt_seconds(eb - now),
         qt_seconds(qt_config().idle_timeout));
  /* Nothing at all before the keep-alive is due: no stray ACKs. */
  assert_int_equal(a1.datagrams_sent, a0.datagrams_sent);
  assert_int_equal(b1.datagrams_sent, b0.datagrams_sent);
  /* And no timer busy-looping: the next wake-up is the keep-alive PING
   * (due keep_alive after the last packet, 0.5 s before `now`). */
  assert_true(ea - now > qt_config().keep_alive - SP_SECONDS);
  assert_true(eb - now > qt_config().keep_alive - SP_SECONDS);
  assert_false(s->closed);
  assert_false(r->closed);
  /* The connection still works. */
  assert_int_equal(fn_send(a.node, s, buf, 100), 100);
  assert_true(qt_run(d, 2, NULL, got_200, r, 5));
  qt_device_free(&a);
  qt_device_free(&b);
}

typedef struct wake_ctx {
  atomic_int calls;
  pthread_t loop_thread;
  int in_loop_thread;
  int fail;
} wake_ctx;

static int on_wake(sp_quic_endpoint *ep, void *user_data) {
  wake_ctx *w = user_data;

  (void)ep;
  w->in_loop_thread = pthread_equal(pthread_self(), w->loop_thread);
  atomic_fetch_add(&w->calls, 1);
  return w->fail;
}

typedef struct loop_arg {
  sp_quic_endpoint *ep;
  wake_ctx *w;
  int rv;
} loop_arg;

static void *loop_main(void *arg) {
  loop_arg *l = arg;

  l->w->loop_thread = pthread_self();
  l->rv = sp_quic_endpoint_run(l->ep);
  return NULL;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void test_doorbell_and_stop(void **state) {
  sp_quic_config cfg = qt_config();
  wake_ctx w;
  qt_device d;
  loop_arg l;
  pthread_t t;
  sp_tstamp t0;
  int i;

  (void)state;
  memset(&w, 0, sizeof(w));
  atomic_init(&w.calls, 0);
  cfg.on_wake = on_wake;
  cfg.wake_user_data = &w;
  qt_device_init(&d);
  qt_device_start(&d, &cfg);
  l.ep = d.ep;
  l.w = &w;
  l.rv = -1;

  /* Direct: a ring is answered once by the next process step. */
  assert_int_equal(sp_quic_endpoint_process(d.ep, sp_quic_now()), 0);
  assert_int_equal(atomic_load(&w.calls), 0);
  assert_int_equal(sp_quic_endpoint_wake(d.ep), 0);
  assert_int_equal(sp_quic_endpoint_wake(d.ep), 0);
  assert_int_equal(sp_quic_endpoint_process(d.ep, sp_quic_now()), 0);
  assert_int_equal(atomic_load(&w.calls), 1);
  assert_int_equal(sp_quic_endpoint_process(d.ep, sp_quic_now()), 0);
  assert_int_equal(atomic_load(&w.calls), 1);

  /* The blocking loop in another thread: each ring wakes it. */
  atomic_store(&w.calls, 0);
  assert_int_equal(pthread_create(&t, NULL, loop_main, &l), 0);
  for (i = 1; i <= 3; ++i) {
    sleep_ms(50);
    t0 = sp_quic_now();
    assert_int_equal(sp_quic_endpoint_wake(d.ep), 0);
    while (atomic_load(&w.calls) < i) {
      assert_true(sp_quic_now() - t0 < SP_SECONDS);
      sleep_ms(1);
    }
    if (i == 1) {
      printf("doorbell: on_wake ran %.0f us after the ring\n",
             qt_seconds(sp_quic_now() - t0) * 1e6);
    }
  }
  assert_true(w.in_loop_thread);
  t0 = sp_quic_now();
  sp_quic_endpoint_stop(d.ep);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(l.rv, 0);
  assert_true(sp_quic_now() - t0 < SP_SECONDS);
  /* Stop does not count as a ring. */
  assert_int_equal(atomic_load(&w.calls), 3);

  /* A stop requested before run makes it return at once. */
  sp_quic_endpoint_stop(d.ep);
  assert_int_equal(sp_quic_endpoint_run(d.ep), 0);

  /* A failing on_wake ends run with SP_ERR_CALLBACK_FAILURE. */
  w.fail = 1;
  assert_int_equal(pthread_create(&t, NULL, loop_main, &l), 0);
  sleep_ms(20);
  assert_int_equal(sp_quic_endpoint_wake(d.ep), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(l.rv, SP_ERR_CALLBACK_FAILURE);
  qt_device_free(&d);
}

static sp_quic_endpoint *signal_ep;

static void on_alarm(int sig) {
  (void)sig;
  sp_quic_endpoint_stop(signal_ep);
}

/* Stop from a signal handler while run blocks with no timer armed. */
static void test_stop_from_signal(void **state) {
  struct sigaction sa, old;
  struct itimerval it;
  qt_device d;
  sp_tstamp t0;
  double took;

  (void)state;
  qt_device_init(&d);
  qt_device_start(&d, NULL);
  signal_ep = d.ep;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
  memset(&it, 0, sizeof(it));
  it.it_value.tv_usec = 100000;
  t0 = sp_quic_now();
  assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
  assert_int_equal(sp_quic_endpoint_run(d.ep), 0);
  took = qt_seconds(sp_quic_now() - t0);
  assert_true(took >= 0.09 && took < 2.0);
  sigaction(SIGALRM, &old, NULL);
  qt_device_free(&d);
}

/* The endpoint runs the node's timers: run sleeps until the node's
 * expiry (nanosecond timeouts), calls sp_node_handle_expiry once. */
static void test_node_timer(void **state) {
  qt_device d;
  sp_tstamp t0, due;

  (void)state;
  qt_device_init(&d);
  qt_device_start(&d, NULL);
  t0 = sp_quic_now();
  due = t0 + 150 * SP_MILLISECONDS;
  d.node->expiry = due;
  /* Not due yet: process leaves it alone, and reports it as next. */
  assert_int_equal(sp_quic_endpoint_process(d.ep, t0), 0);
  assert_int_equal(d.node->expiry_calls, 0);
  assert_int_equal(sp_quic_endpoint_get_expiry(d.ep), due);
  d.node->stop_on_expiry = 1;
  assert_int_equal(sp_quic_endpoint_run(d.ep), 0);
  assert_int_equal(d.node->expiry_calls, 1);
  assert_true(d.node->fired_at >= due);
  printf("node timer: fired %.0f us after its expiry\n",
         qt_seconds(d.node->fired_at - due) * 1e6);
  assert_true(d.node->fired_at - due < 200 * SP_MILLISECONDS);
  assert_int_equal(sp_quic_endpoint_get_expiry(d.ep), SP_TSTAMP_MAX);
  qt_device_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_traffic),
      cmocka_unit_test(test_doorbell_and_stop),
      cmocka_unit_test(test_stop_from_signal),
      cmocka_unit_test(test_node_timer),
  };
  return QT_RUN_TESTS(tests);
}
