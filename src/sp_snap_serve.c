/*
 * sp_snap_serve.c: the leader serves snapshots (docs/protocol.md
 * "Snapshots") from its host's source, through the engine (sp_snapshot.c).
 *
 * A manifest is sent as soon as its snapshot is prepared; chunks go out
 * one per frame the session generates, so the out buffer's flow control
 * paces them like pages, and heartbeats and pages interleave.
 */
#include <string.h>

#include <sodium.h>

#include "sp_core.h"

/* Bytes of snapshot hashed per run of the leader's timers: what keeps
 * preparing a large snapshot from stalling the node's loop. */
#define PREPARE_BUDGET (16u * 1024u * 1024u)

static int store_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ctx) {
  const sp_handler *h = ctx;

  return h->store.hash_at(seq, out, h->store.user_data);
}

int sp_snap_serve_start(sp_handler *h) {
  sp_snap_srv_config cfg;

  if (!h->has_snap_source || h->snap_srv_live) {
    return 0;
  }
  memset(&cfg, 0, sizeof(cfg));
  cfg.chunk_size = h->cfg.snapshot_chunk_size;
  cfg.max_frame = h->node->cfg.max_frame;
  cfg.hash_at = store_hash_at;
  cfg.hash_ctx = h;
  if (sp_snap_srv_init(&h->snap_srv, &h->snap_source, &cfg, &h->node->mem) !=
      0) {
    return SP_ERR_NOMEM; /* the source was checked with the config */
  }
  h->snap_srv_live = 1;
  return 0;
}

void sp_snap_serve_stop(sp_handler *h, int forget) {
  if (h->snap_srv_live) {
    sp_snap_srv_free(&h->snap_srv, forget);
    h->snap_srv_live = 0;
  }
}

/* A fresh id: the node's generator alone repeats after a restart with
 * the same seed, and a reopened snapshot must never share an id with a
 * new one, so the time and the log's head are hashed in. */
static void new_id(sp_handler *h, uint8_t id[SP_SNAPSHOT_ID_LEN]) {
  uint64_t in[5];

  in[0] = sp_rand_next(&h->node->rng);
  in[1] = sp_rand_next(&h->node->rng);
  in[2] = h->node->now;
  in[3] = h->epoch;
  in[4] = h->bounds.latest;
  crypto_generichash(id, SP_SNAPSHOT_ID_LEN, (const uint8_t *)in, sizeof(in),
                     NULL, 0);
}

static void queue_manifest(sp_session *s, const sp_msg_snapshot_manifest *m) {
  sp_msg msg;

  memset(&msg, 0, sizeof(msg));
  msg.type = SP_MSG_SNAPSHOT_MANIFEST;
  msg.u.snapshot_manifest = *m;
  if (sp_session_queue(s, &msg) != 0 && !s->dead) {
    sp_session_close(s, SP_ERR_NOMEM);
  }
}

/* The engine said no: the follower hears "unavailable" (it asks again
 * later); the log says why. */
static void unavailable(sp_session *s, int why, const char *what) {
  if (why == SP_ERR_NOMEM) {
    sp_node_set_fatal(s->node, why);
    sp_session_close(s, why);
    return;
  }
  sp_slog(s, SP_LOG_WARN, "snapshot %s: %s", what, sp_err_name(why));
  sp_session_refuse(s, SP_ERR_SNAPSHOT_UNAVAILABLE, "no snapshot to serve (%s)",
                    sp_err_name(why));
}

void sp_snap_serve_on_request(sp_session *s,
                              const sp_msg_snapshot_request *req) {
  sp_handler *h = s->handler;
  sp_lsess *l = &s->u.l;
  sp_msg_snapshot_manifest m;
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  int rv;

  if (!h->snap_srv_live) {
    unavailable(s, SP_ERR_SNAPSHOT_UNAVAILABLE, "request");
    return;
  }
  /* From now on its fetches check a snapshot, not its log: no credit
   * (D11), and each is answered, whatever this stream told it before
   * (D12). */
  l->snap_active = 1;
  l->sent_through = 0;
  l->done_through = 0;
  l->follower_current = 0;
  l->sync_told = 0;
  l->sync_told_seq = 0;
  l->snap_preparing = 0;
  l->snap_next = l->snap_end = 0;
  new_id(h, id);
  memset(&m, 0, sizeof(m));
  rv = sp_snap_srv_request(&h->snap_srv, req, id, &s->peer, h->node->now, &m);
  if (rv == 0) {
    queue_manifest(s, &m);
  } else if (rv == SP_SNAP_PREPARING) {
    l->snap_preparing = 1;
    memcpy(l->snap_prep_id, m.id, SP_SNAPSHOT_ID_LEN);
  } else {
    unavailable(s, rv, "request");
  }
}

void sp_snap_serve_on_fetch(sp_session *s, const sp_msg_snapshot_fetch *f) {
  sp_handler *h = s->handler;
  sp_lsess *l = &s->u.l;
  int rv;

  if (!h->snap_srv_live) {
    unavailable(s, SP_ERR_SNAPSHOT_UNAVAILABLE, "fetch");
    return;
  }
  rv = sp_snap_srv_check_fetch(&h->snap_srv, f, h->node->now);
  if (rv == SP_ERR_UNEXPECTED) {
    sp_session_refuse(s, SP_ERR_UNEXPECTED, "chunks %llu..%llu do not exist",
                      (unsigned long long)f->first_chunk,
                      (unsigned long long)(f->first_chunk + f->count - 1));
    return;
  }
  if (rv != 0) {
    unavailable(s, rv, "fetch");
    return;
  }
  l->snap_active = 1;
  if (l->snap_next < l->snap_end && f->first_chunk == l->snap_end &&
      memcmp(l->snap_id, f->id, SP_SNAPSHOT_ID_LEN) == 0) {
    l->snap_end += f->count;
    return;
  }
  /* Anything else restarts the range (a re-fetch after a bad chunk: the
   * follower drops what it asked for after it). */
  memcpy(l->snap_id, f->id, SP_SNAPSHOT_ID_LEN);
  l->snap_next = f->first_chunk;
  l->snap_end = f->first_chunk + f->count;
}

int sp_snap_serve_next_frame(sp_session *s) {
  sp_handler *h = s->handler;
  sp_lsess *l = &s->u.l;
  sp_msg msg;
  int rv;

  if (l->snap_next >= l->snap_end || !h->snap_srv_live) {
    return 0;
  }
  memset(&msg, 0, sizeof(msg));
  msg.type = SP_MSG_SNAPSHOT_CHUNK;
  rv = sp_snap_srv_chunk(&h->snap_srv, l->snap_id, l->snap_next, h->node->now,
                         &msg.u.snapshot_chunk);
  if (rv != 0) {
    l->snap_next = l->snap_end = 0;
    unavailable(s, rv, "chunk");
    return 0;
  }
  l->snap_next++;
  return sp_session_queue(s, &msg) == 0;
}

static int any_preparing(const sp_handler *h) {
  return h->snap_srv_live && sp_snap_srv_preparing(&h->snap_srv);
}

sp_tstamp sp_snap_serve_expiry(const sp_handler *h) {
  if (!h->snap_srv_live) {
    return SP_TSTAMP_MAX;
  }
  /* Preparing goes on at once, a slice per run. */
  if (any_preparing(h)) {
    return h->node->now;
  }
  return sp_snap_srv_next_expiry(&h->snap_srv);
}

void sp_snap_serve_expire(sp_handler *h, sp_tstamp now) {
  sp_session *s, *next;

  if (!h->snap_srv_live) {
    return;
  }
  sp_snap_srv_expire(&h->snap_srv, now);
  if (any_preparing(h)) {
    (void)sp_snap_srv_step(&h->snap_srv, PREPARE_BUDGET, now);
  }
  for (s = h->sessions; s; s = next) {
    sp_msg_snapshot_manifest m;
    int rv;
    next = s->hnext;
    if (s->dead || !s->u.l.snap_preparing) {
      continue;
    }
    memset(&m, 0, sizeof(m));
    rv = sp_snap_srv_manifest(&h->snap_srv, s->u.l.snap_prep_id, now, &m);
    if (rv == SP_SNAP_PREPARING) {
      continue;
    }
    s->u.l.snap_preparing = 0;
    if (rv == 0) {
      queue_manifest(s, &m);
      sp_session_pump(s);
    } else {
      unavailable(s, rv, "prepare");
    }
  }
}

sp_seq sp_snap_serve_floor(const sp_handler *h) {
  return h->snap_srv_live ? sp_snap_srv_min_sequence(&h->snap_srv)
                          : UINT64_MAX;
}

int sp_snap_serve_pins(const sp_handler *h, sp_seq since) {
  size_t i;

  if (!h->snap_srv_live) {
    return 0;
  }
  for (i = 0; i < h->snap_srv.n_open; ++i) {
    if (h->snap_srv.open[i].desc.sequence == since) {
      return 1;
    }
  }
  return 0;
}
