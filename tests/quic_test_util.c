/*
 * quic_test_util.c: see quic_test_util.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "quic_test_util.h"
#include "transport/quic/sp_quic_int.h"

/* ---- registry ---- */

static qt_entry *by_id(qt_registry *r, const sp_uuid *id) {
  size_t i;

  for (i = 0; i < r->n; ++i) {
    if (r->dev[i].present && sp_uuid_equal(&r->dev[i].id, id)) {
      return &r->dev[i];
    }
  }
  return NULL;
}

static int reg_device_key(const sp_uuid *device,
                          uint8_t public_key[SP_PUBLIC_KEY_LEN], void *ud) {
  qt_entry *e = by_id(ud, device);

  if (!e) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(public_key, e->key, SP_PUBLIC_KEY_LEN);
  return 0;
}

static int reg_device_by_key(const uint8_t public_key[SP_PUBLIC_KEY_LEN],
                             sp_uuid *device, void *ud) {
  qt_registry *r = ud;
  size_t i;

  for (i = 0; i < r->n; ++i) {
    if (r->dev[i].present &&
        memcmp(r->dev[i].key, public_key, SP_PUBLIC_KEY_LEN) == 0) {
      *device = r->dev[i].id;
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

static int reg_hints(const sp_uuid *device, char *buf, size_t buflen,
                     void *ud) {
  qt_entry *e = by_id(ud, device);

  if (!e || !e->hints[0]) {
    return SP_ERR_NOT_FOUND;
  }
  if (strlen(e->hints) >= buflen) {
    return SP_ERR_NOBUF;
  }
  strcpy(buf, e->hints);
  return 0;
}

static int reg_is_member(const sp_uuid *library, const sp_uuid *device,
                         int *is_member, void *ud) {
  (void)library;
  *is_member = by_id(ud, device) != NULL;
  return 0;
}

void qt_registry_init(qt_registry *r) {
  sp_registry init = SP_REGISTRY_INIT;

  memset(r, 0, sizeof(*r));
  r->reg = init;
  r->reg.user_data = r;
  r->reg.is_member = reg_is_member;
  r->reg.device_key = reg_device_key;
  r->reg.device_by_key = reg_device_by_key;
  r->reg.address_hints = reg_hints;
}

void qt_registry_add(qt_registry *r, const sp_identity *id,
                     const char *hints) {
  qt_entry *e = by_id(r, sp_identity_device_id(id));

  if (!e) {
    assert_true(r->n < QT_MAX_DEVICES);
    e = &r->dev[r->n++];
  }
  e->present = 1;
  e->id = *sp_identity_device_id(id);
  sp_identity_public_key(id, e->key);
  snprintf(e->hints, sizeof(e->hints), "%s", hints ? hints : "");
}

qt_entry *qt_registry_find(qt_registry *r, const sp_uuid *id) {
  return by_id(r, id);
}

/* ---- devices ---- */

/* SP_QUIC_DEBUG: the endpoint's lines, which go to on_log only. */
static void print_log(sp_log_level level, const char *msg, void *user_data) {
  (void)user_data;
  fprintf(stderr, "[%d] %s\n", (int)level, msg);
}

sp_quic_config qt_config(void) {
  sp_quic_config cfg;

  sp_quic_config_default(&cfg);
  cfg.bind_address = "127.0.0.1:0";
  cfg.idle_timeout = 10 * SP_SECONDS;
  cfg.debug = getenv("SP_QUIC_DEBUG") != NULL;
  if (cfg.debug) {
    cfg.on_log = print_log;
  }
  return cfg;
}

void qt_device_init(qt_device *d) {
  memset(d, 0, sizeof(*d));
  assert_int_equal(sp_identity_generate(&d->id, NULL, NULL), 0);
  qt_registry_init(&d->reg);
}

void qt_device_start(qt_device *d, const sp_quic_config *cfg) {
  sp_quic_config c = cfg ? *cfg : qt_config();
  size_t size = (sizeof(sp_node) + 63) / 64 * 64;

  assert_int_equal(sp_quic_endpoint_new(&d->ep, &c, d->id, &d->reg.reg, NULL),
                   0);
  assert_int_equal(
      sp_quic_endpoint_local_address(d->ep, d->addr, sizeof(d->addr)), 0);
  /* 64-byte alignment for the BLAKE2b states inside. */
  d->node = aligned_alloc(64, size);
  assert_non_null(d->node);
  fn_init(d->node, d->ep);
  assert_int_equal(sp_quic_endpoint_attach(d->ep, d->node), 0);
}

void qt_device_stop(qt_device *d) {
  /* As the lead will: the node goes first, then the endpoint. */
  if (d->node) {
    sp_quic_endpoint_attach(d->ep, NULL);
    fn_free(d->node);
    free(d->node);
    d->node = NULL;
  }
  sp_quic_endpoint_del(d->ep);
  d->ep = NULL;
}

void qt_device_free(qt_device *d) {
  if (d->ep) {
    qt_device_stop(d);
  }
  sp_identity_del(d->id);
  d->id = NULL;
}

void qt_know(qt_device *d, const qt_device *other) {
  qt_registry_add(&d->reg, other->id, other->addr);
}

/* ---- relay ---- */

static void parse_v4(struct sockaddr_storage *ss, unsigned *len,
                     const char *text) {
  struct sockaddr_in *in = (struct sockaddr_in *)ss;
  char host[64];
  const char *colon = strrchr(text, ':');

  assert_non_null(colon);
  memset(ss, 0, sizeof(*ss));
  memcpy(host, text, (size_t)(colon - text));
  host[colon - text] = '\0';
  in->sin_family = AF_INET;
  in->sin_port = htons((uint16_t)atoi(colon + 1));
  assert_int_equal(inet_pton(AF_INET, host, &in->sin_addr), 1);
  *len = sizeof(*in);
}

void qt_relay_open(qt_relay *r, const char *server_addr) {
  struct sockaddr_in a;
  socklen_t alen = sizeof(a);

  memset(r, 0, sizeof(*r));
  parse_v4(&r->server, &r->server_len, server_addr);
  r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  assert_true(r->fd >= 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(r->fd, (struct sockaddr *)&a, &alen), 0);
  snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%u",
           (unsigned)ntohs(a.sin_port));
}

void qt_relay_close(qt_relay *r) { close(r->fd); }

void qt_relay_pump(qt_relay *r) {
  uint8_t buf[65536];

  for (;;) {
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(r->fd, buf, sizeof(buf), 0, (struct sockaddr *)&from,
                         &flen);
    int from_server;

    if (n < 0) {
      return;
    }
    from_server = flen == r->server_len &&
                  memcmp(&from, &r->server, r->server_len) == 0;
    if (!from_server) {
      memcpy(&r->client, &from, flen);
      r->client_len = flen;
      r->have_client = 1;
    }
    ++r->seen;
    if (r->cut || (r->drop_every && r->seen % r->drop_every == 0)) {
      ++r->dropped;
      continue;
    }
    if (from_server) {
      if (r->have_client) {
        (void)sendto(r->fd, buf, (size_t)n, 0, (struct sockaddr *)&r->client,
                     r->client_len);
      }
    } else {
      (void)sendto(r->fd, buf, (size_t)n, 0, (struct sockaddr *)&r->server,
                   r->server_len);
    }
  }
}

/* ---- driving ---- */

double qt_seconds(sp_tstamp t) { return (double)t / 1e9; }

int qt_run(qt_device **devs, size_t n, qt_relay *relay,
           int (*done)(void *arg), void *arg, double seconds) {
  sp_tstamp deadline = sp_quic_now() + (sp_tstamp)(seconds * 1e9);
  struct pollfd fds[QT_MAX_DEVICES + 1];

  for (;;) {
    sp_tstamp now, t = deadline;
    struct timespec ts;
    size_t i, k = 0;

    for (i = 0; i < n; ++i) {
      if (devs[i]->ep) {
        assert_int_equal(sp_quic_endpoint_process(devs[i]->ep, sp_quic_now()),
                         0);
      }
    }
    if (relay) {
      qt_relay_pump(relay);
    }
    if (done && done(arg)) {
      return 1;
    }
    now = sp_quic_now();
    if (now >= deadline) {
      return 0;
    }
    for (i = 0; i < n; ++i) {
      if (devs[i]->ep) {
        sp_tstamp x = sp_quic_endpoint_get_expiry(devs[i]->ep);
        if (x < t) {
          t = x;
        }
        fds[k].fd = sp_quic_endpoint_fd(devs[i]->ep);
        fds[k].events = POLLIN;
        ++k;
      }
    }
    if (relay) {
      fds[k].fd = relay->fd;
      fds[k].events = POLLIN;
      ++k;
    }
    t = t > now ? t - now : 0;
    ts.tv_sec = (time_t)(t / 1000000000u);
    ts.tv_nsec = (long)(t % 1000000000u);
    (void)ppoll(fds, k, &ts, NULL);
  }
}

void qt_run_for(qt_device **devs, size_t n, qt_relay *relay, double seconds) {
  (void)qt_run(devs, n, relay, NULL, NULL, seconds);
}

/* ---- fake-node streams ---- */

fn_stream *qt_nth_remote(sp_node *n, size_t k) {
  size_t i;

  for (i = 0; i < n->nstreams; ++i) {
    if (n->streams[i].remote && k-- == 0) {
      return &n->streams[i];
    }
  }
  return NULL;
}

int qt_remote_has(void *arg) {
  qt_nth_has *w = arg;
  fn_stream *r = qt_nth_remote(w->node, w->k);
  return r && r->received >= w->bytes;
}

int qt_remote_got(void *arg) {
  qt_wait_bytes *w = arg;
  fn_stream *s = fn_first_remote(w->node);
  return s && s->received >= w->bytes;
}

int qt_stream_writable(void *arg) {
  fn_stream *s = arg;
  return s->writable_calls > 0;
}

void qt_pair_start(qt_device *a, qt_device *b) {
  qt_device_init(a);
  qt_device_init(b);
  qt_device_start(a, NULL);
  qt_device_start(b, NULL);
  qt_know(a, b);
  qt_know(b, a);
}

void qt_apply_test_filter(void) {
  if (getenv("SP_TEST_FILTER")) {
    cmocka_set_test_filter(getenv("SP_TEST_FILTER"));
  }
}

uint64_t qt_held(const qt_device *d, size_t frame) {
  const sp_node *n = d->node;
  const sp_quic_endpoint *ep = d->ep;
  uint64_t held = 0;
  size_t i;

  for (i = 0; i < ep->nstreams; ++i) {
    held += sp_buf_pending(&ep->streams[i]->rbuf);
  }
  for (i = 0; i < n->nstreams; ++i) {
    const fn_stream *s = &n->streams[i];
    if (s->remote && !s->closed && !s->close_sent) {
      held += s->received % frame;
    }
  }
  return held;
}
