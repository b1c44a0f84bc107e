/*
 * quic_test_util.h: devices, registries, a driving loop and a lossy UDP
 * relay for the QUIC transport tests.
 */
#ifndef QUIC_TEST_UTIL_H
#define QUIC_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/quic.h"
#include "quic_fake_node.h"

#define QT_MAX_DEVICES 4

/* One device as a registry knows it (the key may be a wrong one). */
typedef struct qt_entry {
  sp_uuid id;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  char hints[128];
  int present;
} qt_entry;

typedef struct qt_registry {
  qt_entry dev[QT_MAX_DEVICES];
  size_t n;
  sp_registry reg;
} qt_registry;

void qt_registry_init(qt_registry *r);
void qt_registry_add(qt_registry *r, const sp_identity *id,
                     const char *hints);
qt_entry *qt_registry_find(qt_registry *r, const sp_uuid *id);

/* A device: identity, registry view, endpoint and fake node. */
typedef struct qt_device {
  sp_identity *id;
  qt_registry reg;
  sp_quic_endpoint *ep;
  sp_node *node;
  char addr[64];
} qt_device;

/* Make the identity (once) and the endpoint (with `cfg`, NULL: defaults
 * on 127.0.0.1:0).  The node is attached.  Registries are filled by the
 * test (qt_know). */
void qt_device_init(qt_device *d);
void qt_device_start(qt_device *d, const sp_quic_config *cfg);
void qt_device_stop(qt_device *d);
void qt_device_free(qt_device *d);
/* `d` learns `other` (its key and current address). */
void qt_know(qt_device *d, const qt_device *other);
/* Received bytes `d` holds: in its endpoint's stream buffers, and in its
 * node's unfinished frames of `frame` bytes. */
uint64_t qt_held(const qt_device *d, size_t frame);
/* Two devices started with the default config that know each other. */
void qt_pair_start(qt_device *a, qt_device *b);

sp_quic_config qt_config(void);

/* A UDP relay standing for the network between a client and a server:
 * the client is told the relay's address instead of the server's. */
typedef struct qt_relay {
  int fd;
  char addr[64];
  struct sockaddr_storage server, client;
  unsigned server_len, client_len;
  int have_client;
  /* Drop everything (a cut cable), or every `drop_every`-th datagram. */
  int cut;
  unsigned drop_every;
  uint64_t seen, dropped;
} qt_relay;

void qt_relay_open(qt_relay *r, const char *server_addr);
void qt_relay_close(qt_relay *r);
void qt_relay_pump(qt_relay *r);

/* Drive `devs` (and the relay if any) until `done(arg)` or `seconds`
 * pass.  Returns 1 when done, 0 on timeout. */
int qt_run(qt_device **devs, size_t n, qt_relay *relay,
           int (*done)(void *arg), void *arg, double seconds);
/* Drive for exactly `seconds`. */
void qt_run_for(qt_device **devs, size_t n, qt_relay *relay, double seconds);

double qt_seconds(sp_tstamp t);

/* A test's main: runs the group `tests` (no group setup or teardown);
 * SP_TEST_FILTER=test_name runs only that test (a debugging aid). */
#define QT_RUN_TESTS(tests)                                                   \
  (qt_apply_test_filter(), cmocka_run_group_tests(tests, NULL, NULL))
void qt_apply_test_filter(void);

/* The k-th remote stream of the fake node `n`, or NULL. */
fn_stream *qt_nth_remote(sp_node *n, size_t k);
/* qt_run's `done` for a qt_nth_has: the k-th remote stream of `node`
 * exists and has received `bytes`. */
typedef struct qt_nth_has {
  sp_node *node;
  size_t k;
  uint64_t bytes;
} qt_nth_has;
int qt_remote_has(void *arg);

/* qt_run's `done` for a qt_wait_bytes: the first remote stream of `node`
 * exists and has received `bytes`. */
typedef struct qt_wait_bytes {
  sp_node *node;
  uint64_t bytes;
} qt_wait_bytes;
int qt_remote_got(void *arg);
/* qt_run's `done` for an fn_stream: the node was told it is writable. */
int qt_stream_writable(void *arg);

#endif /* QUIC_TEST_UTIL_H */
