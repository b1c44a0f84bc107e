/*
 * rt.c: set up and drive one device for spsync.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "rt.h"

volatile sig_atomic_t rt_stop;

static void on_signal(int sig) {
  (void)sig;
  rt_stop = 1;
}

void rt_error(const char *what, int code) {
  fprintf(stderr, "spsync: %s: %s (%s)\n", what, sp_strerror(code),
          sp_err_name(code));
}

const char *rt_sync_reason(sp_sync_reason reason, char *buf, size_t len) {
  switch (reason) {
  case SP_SYNC_BEHIND_RETENTION:
    return "SP_SYNC_BEHIND_RETENTION: the follower's position was pruned "
           "from the leader's log";
  case SP_SYNC_AHEAD_OF_LEADER:
    return "SP_SYNC_AHEAD_OF_LEADER: the follower holds entries the leader "
           "does not";
  case SP_SYNC_DIVERGENCE:
    return "SP_SYNC_DIVERGENCE: the follower's log diverged from the "
           "leader's";
  case SP_SYNC_RETENTION_CAP:
    return "SP_SYNC_RETENTION_CAP: the follower lagged past the leader's "
           "retention cap";
  }
  snprintf(buf, len, "reason %d", (int)reason);
  return buf;
}

const char *rt_peer_label(const rt *r, const sp_uuid *id, char *buf) {
  const pairing_device *d = pairing_find(&r->pair, id);

  sp_uuid_format(id, buf);
  if (d && d->name[0]) {
    snprintf(buf + SP_UUID_STRING_LEN, RT_PEER_LEN - SP_UUID_STRING_LEN,
             " (%s)", d->name);
  }
  return buf;
}

/* Follower: whether `ev` is about the leader's link (for the display). */
static int about_leader(const rt *r, const sp_event *ev) {
  const pairing_device *l = pairing_leader(&r->pair);

  return ev->has_peer && l && sp_uuid_equal(&ev->peer_id, &l->id);
}

static void link_down(rt *r, int code, const char *why) {
  r->leader_up = 0;
  r->link_down_at = sp_quic_now();
  r->link_code = code;
  snprintf(r->link_why, sizeof(r->link_why), "%s", why ? why : "");
}

static int on_event(const sp_event *ev, void *ud) {
  rt *r = ud;
  char peer[SP_UUID_STRING_LEN + 1] = "-";

  if (ev->has_peer) {
    sp_uuid_format(&ev->peer_id, peer);
  }
  switch (ev->type) {
  case SP_EVENT_PEER_CONNECTED:
    r->peers++;
    if (about_leader(r, ev)) {
      r->leader_up = 1;
      r->link_failures = 0;
    }
    if (r->verbose) fprintf(stderr, "spsync: peer %s connected\n", peer);
    break;
  case SP_EVENT_PEER_LOST:
    r->peers--;
    if (about_leader(r, ev)) {
      link_down(r, ev->error_code, "connection lost");
    }
    if (r->verbose)
      fprintf(stderr, "spsync: peer %s lost (%s)\n", peer,
              ev->error_code ? sp_err_name(ev->error_code) : "closed");
    break;
  case SP_EVENT_ENTRIES_APPLIED:
    r->applied_batches++;
    break;
  case SP_EVENT_SYNC_REQUIRED_RECEIVED:
    r->sync_required = 1;
    r->sync_reason = ev->sync_reason;
    r->snap_events = 0;
    break;
  case SP_EVENT_SNAPSHOT_PROGRESS:
    r->snap = *ev->snapshot;
    r->snap_events++;
    break;
  case SP_EVENT_SNAPSHOT_INSTALLED:
    r->snap = *ev->snapshot;
    r->snap_events++;
    r->snap_installed++;
    break;
  case SP_EVENT_SNAPSHOT_FAILED:
    /* The library stays stopped and tries again after its backoff. */
    r->snap = *ev->snapshot;
    r->snap_events++;
    fprintf(stderr, "spsync: %s (%s); the library tries again later\n",
            ev->message && *ev->message ? ev->message
                                        : sp_strerror(ev->error_code),
            sp_err_name(ev->error_code));
    break;
  case SP_EVENT_SYNC_REQUIRED_SENT:
    {
      char who[RT_PEER_LEN], why[32];
      fprintf(stderr, "spsync: told %s a full sync is required (%s)%s\n",
              ev->has_peer ? rt_peer_label(r, &ev->peer_id, who) : peer,
              rt_sync_reason(ev->sync_reason, why, sizeof(why)),
              r->snapshots ? "; it may recover by snapshot" : "");
    }
    break;
  case SP_EVENT_ERROR:
    /* A dial that never got through ("could not reach the peer"...). */
    if (about_leader(r, ev) && !r->leader_up) {
      link_down(r, ev->error_code, ev->message);
      r->link_failures++;
    }
    if (r->verbose)
      fprintf(stderr, "spsync: %s: %s\n", peer,
              ev->message ? ev->message : sp_err_name(ev->error_code));
    break;
  case SP_EVENT_STEPPED_DOWN:
    /* The command says so and decides what follows, outside the node's
     * callbacks. */
    r->stepped_down = 1;
    r->step_epoch = ev->epoch;
    r->step_leader = ev->leader;
    break;
  case SP_EVENT_STORE_FAILED: {
    /* Once per episode: the library retries with backoff meanwhile.  The
     * call and its cause come apart (the cause in the SQLite store's
     * words), so this line does not depend on the message's wording. */
    const char *m = ev->message ? ev->message : "";
    if (ev->store_call && ev->store_cause) {
      fprintf(stderr, "spsync: cannot %s: %s (%s); retrying with "
              "backoff\n", ev->store_call, ev->store_cause,
              sp_err_name(ev->error_code));
    } else {
      fprintf(stderr, "spsync: the log cannot be written (%s: %s); "
              "retrying with backoff\n", sp_err_name(ev->error_code),
              *m ? m : sp_strerror(ev->error_code));
    }
    break;
  }
  case SP_EVENT_SUBMISSION_COMMITTED:
    r->committed++;
    break;
  case SP_EVENT_SUBMISSION_REFUSED:
    r->refused++;
    fprintf(stderr, "spsync: submission %llu refused: %s (%s)\n",
            (unsigned long long)ev->origin_seq,
            ev->message && *ev->message ? ev->message
                                        : sp_strerror(ev->error_code),
            sp_err_name(ev->error_code));
    break;
  case SP_EVENT_STORE_RECOVERED:
    fprintf(stderr, "spsync: the log is writable again (at %llu)\n",
            (unsigned long long)ev->to_sequence);
    break;
  default:
    break;
  }
  return 0;
}

static void on_log(sp_log_level level, const char *msg, void *ud) {
  const rt *r = ud;

  /* The transport's WARN lines (refused handshakes) always; its INFO
   * (connections lost) with --verbose, like the node's. */
  if (level <= SP_LOG_WARN || r->verbose) {
    fprintf(stderr, "spsync: %s\n", msg);
  }
}

static int open_log(rt *r, const rt_options *o) {
  sp_sqlite_config sc;
  int rv;

  sp_sqlite_config_default(&sc);
  sc.synchronous = o->sync_full ? SP_SQLITE_SYNC_FULL : SP_SQLITE_SYNC_NORMAL;
  sc.apply_thread = o->apply_thread;
  rv = sp_sqlite_store_open(&r->store, o->log_path, &sc, NULL);
  if (rv != 0) {
    fprintf(stderr, "spsync: cannot open log %s: %s\n", o->log_path,
            *sp_sqlite_store_errmsg(NULL) ? sp_sqlite_store_errmsg(NULL)
                                          : sp_strerror(rv));
    return -1;
  }
  return 0;
}

static uint64_t leader_epoch(rt *r, uint64_t wanted) {
  sp_sqlite_status st;

  if (sp_sqlite_store_status(r->store, &st) != 0) {
    return 0;
  }
  if (wanted == 0) {
    return st.epoch ? st.epoch : 1;
  }
  /* A new epoch is kept with the log before it is used. */
  return sp_sqlite_store_set_epoch(r->store, wanted) == 0 ? wanted : 0;
}

/* The leader serves snapshots of its log; the follower installs them into
 * its own (hc points into `r`, which outlives the handler). */
static int snapshots(rt *r, const rt_options *o, sp_handler_config *hc) {
  sp_snapshot_sink inner;
  int rv = 0;

  if (o->role == SP_ROLE_LEADER) {
    rv = sp_sqlite_store_snapshot_source(r->store, &r->source);
    hc->snapshot_source = &r->source;
    if (o->snapshot_chunk) {
      hc->snapshot_chunk_size = o->snapshot_chunk;
    }
  }
  /* A leader that may follow after stepping down recovers like any
   * follower: its log may hold entries the new leader never had. */
  if (rv == 0 && (o->role == SP_ROLE_FOLLOWER || o->follow_on_step_down)) {
    rv = sp_sqlite_store_snapshot_sink(r->store, &inner);
    if (rv == 0) {
      snapsink_wrap(&r->sink, &inner, o->snapshot_delay_ms, &r->sink_vt);
      hc->snapshot_sink = &r->sink_vt;
    }
    if (o->snapshot_window) {
      hc->snapshot_window = o->snapshot_window;
    }
    hc->snapshot_max_bytes = o->snapshot_max;
  }
  if (rv != 0) {
    rt_error("snapshots", rv);
    return -1;
  }
  r->snapshots = 1;
  return 0;
}

int rt_open(rt *r, const rt_options *o) {
  char err[256], addr[128];
  sp_quic_config qc;
  sp_node_config nc;
  sp_handler_config hc;
  sp_registry reg;
  sp_events ev = SP_EVENTS_INIT;
  sp_transport tr;
  sp_store vt;
  int rv;

  memset(r, 0, sizeof(*r));
  r->watch_fd = -1;
  r->verbose = o->verbose;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  if (pairing_load(&r->pair, o->pairing_path, err, sizeof(err)) != 0) {
    fprintf(stderr, "spsync: %s\n", err);
    return -1;
  }
  rv = sp_identity_load(&r->id, o->key_path, NULL);
  if (rv != 0) {
    fprintf(stderr, "spsync: cannot load key %s: %s%s\n", o->key_path,
            rv == SP_ERR_IO ? strerror(errno) : sp_strerror(rv),
            rv == SP_ERR_KEYFILE_PERMISSIONS ? " (chmod 600 it)" : "");
    return -1;
  }
  r->self = pairing_find(&r->pair, sp_identity_device_id(r->id));
  if (!r->self) {
    fprintf(stderr, "spsync: this device is not in %s\n", o->pairing_path);
    return -1;
  }
  if ((o->role == SP_ROLE_LEADER) != r->self->leader) {
    fprintf(stderr, "spsync: %s names this device %s\n", o->pairing_path,
            r->self->leader    ? "the leader"
            : r->self->may_lead ? "a standby (it follows until its copy "
                                  "names it the leader: docs/pairing.md)"
                                : "a follower");
    return -1;
  }
  /* Another device's name that does not resolve (a laptop away) is no
   * reason not to start; this device's own address is what it binds. */
  if (!o->listen && r->self->resolve_err[0]) {
    fprintf(stderr, "spsync: %s: line %d: this device's address: %s\n",
            o->pairing_path, r->self->line, r->self->resolve_err);
    return -1;
  }
  pairing_warn_unresolved(&r->pair, r->self, o->pairing_path);
  if (open_log(r, o) != 0) {
    return -1;
  }
  if (o->listen) {
    char hints[PAIRING_HINTS_LEN];
    if (pairing_resolve(o->listen, hints, sizeof(hints), err,
                        sizeof(err)) != 0) {
      fprintf(stderr, "spsync: --listen: %s\n", err);
      return -1;
    }
    pairing_bind_address(hints, addr, sizeof(addr));
  } else if (r->self->hints[0]) {
    /* A name with both families binds IPv4 (pairing_bind_address). */
    pairing_bind_address(r->self->hints, addr, sizeof(addr));
  } else {
    snprintf(addr, sizeof(addr), "127.0.0.1:0");
  }
  pairing_registry(&r->pair, &reg);
  sp_quic_config_default(&qc);
  qc.bind_address = addr;
  /* Refused handshakes (a key we do not know, a server presenting the
   * wrong key) are logged at WARN by the transport: always shown. */
  qc.on_log = on_log;
  qc.log_user_data = r;
  rv = sp_quic_endpoint_new(&r->ep, &qc, r->id, &reg, NULL);
  if (rv != 0) {
    fprintf(stderr, "spsync: cannot listen on %s: %s\n", addr,
            *sp_quic_errmsg(NULL) ? sp_quic_errmsg(NULL) : sp_strerror(rv));
    return -1;
  }
  ev.user_data = r;
  ev.on_event = on_event;
  if (o->verbose) {
    ev.on_log = on_log;
    ev.log_level = SP_LOG_INFO;
  }
  sp_node_config_default(&nc);
  nc.device_id = *sp_identity_device_id(r->id);
  nc.seed = (uint64_t)sp_quic_now();
  /* Its leaderships are signed, so an older leader it meets steps down. */
  nc.identity = r->id;
  sp_quic_endpoint_get_transport(r->ep, &tr);
  rv = sp_node_new(&r->node, &nc, &reg, &ev, &tr, NULL);
  if (rv == 0) {
    rv = sp_quic_endpoint_attach(r->ep, r->node);
  }
  if (rv != 0) {
    rt_error("node", rv);
    return -1;
  }
  sp_handler_config_default(&hc);
  hc.library_id = r->pair.library;
  hc.role = o->role;
  if (o->outbox_max_bytes) {
    hc.outbox_max_bytes = o->outbox_max_bytes;
  }
  if (o->role == SP_ROLE_LEADER) {
    hc.epoch = leader_epoch(r, o->epoch);
    if (hc.epoch == 0) {
      fprintf(stderr, "spsync: epoch %llu is below the one in the log\n",
              (unsigned long long)o->epoch);
      return -1;
    }
  }
  if (!o->no_snapshots && snapshots(r, o, &hc) != 0) {
    return -1;
  }
  sp_sqlite_store_get_vtable(r->store, &vt);
  rv = sp_handler_new(&r->h, r->node, &hc, &vt, sp_quic_now());
  if (rv != 0) {
    rt_error("open library", rv);
    return -1;
  }
  return 0;
}

int rt_follow(rt *r, const sp_uuid *leader) {
  char id[SP_UUID_STRING_LEN + 1];
  int rv;

  if (pairing_set_leader(&r->pair, leader) != 0) {
    fprintf(stderr, "spsync: cannot follow %s: not in the pairing file\n",
            sp_uuid_format(leader, id));
    return -1;
  }
  r->leader_up = 0;
  r->link_down_at = 0;
  r->link_failures = 0;
  rv = sp_handler_set_role(r->h, SP_ROLE_FOLLOWER, r->step_epoch,
                           sp_quic_now());
  if (rv != 0) {
    rt_error("follow", rv);
    return -1;
  }
  return 0;
}

void rt_print_writes(const rt *r, const char *who, uint64_t submitted) {
  printf("%s: submitted %llu, committed %llu, refused %llu\n", who,
         (unsigned long long)submitted, (unsigned long long)r->committed,
         (unsigned long long)r->refused);
}

void rt_close(rt *r) {
  /* The order matters: streams close through the endpoint, which must
   * still exist, and the store must outlive the handler. */
  sp_handler_del(r->h);
  sp_node_del(r->node);
  sp_quic_endpoint_del(r->ep);
  sp_sqlite_store_close(r->store);
  sp_identity_del(r->id);
  memset(r, 0, sizeof(*r));
}

int rt_step(rt *r, sp_duration max_wait) {
  sp_tstamp now = sp_quic_now(), exp = sp_quic_endpoint_get_expiry(r->ep);
  sp_duration wait = exp <= now ? 0 : exp - now;
  struct pollfd pfd[3];
  int rv;

  if (wait > max_wait) {
    wait = max_wait;
  }
  pfd[0].fd = sp_quic_endpoint_fd(r->ep);
  pfd[0].events = POLLIN;
  pfd[1].fd = r->watch_fd;
  pfd[1].events = POLLIN;
  /* With --apply-thread: readable when the log made more durable (or a
   * commit failed); negative without, which poll skips. */
  pfd[2].fd = sp_sqlite_store_wait_fd(r->store);
  pfd[2].events = POLLIN;
  pfd[2].revents = 0;
  /* Round up: waking a little late is fine, spinning is not. */
  if (poll(pfd, 3, (int)((wait + SP_MILLISECONDS - 1) / SP_MILLISECONDS)) <
          0 &&
      errno != EINTR) {
    perror("spsync: poll");
    return -1;
  }
  if (pfd[2].fd >= 0 && (pfd[2].revents & POLLIN)) {
    /* The follower acknowledges what is durable now; the endpoint below
     * sends it. */
    sp_sqlite_store_wait_clear(r->store);
    rv = sp_node_handle_expiry(r->node, sp_quic_now());
    if (rv != 0) {
      rt_error("node", rv);
      return -1;
    }
  }
  rv = sp_quic_endpoint_process(r->ep, sp_quic_now());
  if (rv != 0) {
    rt_error("network", rv);
    return -1;
  }
  return 0;
}
