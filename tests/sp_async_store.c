/*
 * sp_async_store.c: see sp_async_store.h.
 */
#include "sp_async_store.h"

#include <stdlib.h>
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"

typedef struct batch {
  sp_entry *entries; /* deep copies: model_type and data point into buf */
  uint8_t *hashes;
  uint8_t *buf;
  size_t n;
  uint64_t epoch;
} batch;

struct sp_async_store {
  sp_store in;
  batch *q;
  size_t qhead, qlen, qcap;
  int err; /* latched failure */
  int once; /* sp_async_store_report_once */
  sp_async_stats stats;
};

static void batch_free(batch *b) {
  free(b->entries);
  free(b->hashes);
  free(b->buf);
  memset(b, 0, sizeof(*b));
}

static batch *at(sp_async_store *a, size_t i) {
  return &a->q[(a->qhead + i) % a->qcap];
}

/* Forget the queued batches from index `from` on. */
static size_t drop_from(sp_async_store *a, size_t from) {
  size_t i, n = a->qlen - from;

  for (i = from; i < a->qlen; ++i) {
    batch_free(at(a, i));
  }
  a->qlen = from;
  if (a->qlen == 0) {
    a->qhead = 0;
  }
  return n;
}

void sp_async_store_report_once(sp_async_store *a, int on) {
  a->once = on;
}

/* What a call other than `durable` and `state` answers for a latched
 * failure: it, and consumed in the report-once mode (reads: only then). */
static int call_err(sp_async_store *a, int is_read) {
  int rv = a->err;

  if (a->once) {
    a->err = 0;
  }
  return is_read && !a->once ? 0 : rv;
}

static int take_err(sp_async_store *a) {
  int rv = a->err;

  a->err = 0;
  return rv;
}

int sp_async_store_flush(sp_async_store *a, size_t n) {
  while (n-- > 0 && a->qlen > 0) {
    batch *b = at(a, 0);
    int rv = a->in.apply(b->entries, b->hashes, b->n, b->epoch,
                         a->in.user_data);
    if (rv != 0) {
      a->stats.failed += (long)drop_from(a, 0);
      a->err = rv < 0 ? rv : SP_ERR_STORE;
      return a->err;
    }
    batch_free(b);
    a->qhead = (a->qhead + 1) % a->qcap;
    a->qlen--;
    a->stats.flushed++;
  }
  return 0;
}

size_t sp_async_store_fail(sp_async_store *a, int code) {
  size_t n;

  if (a->qlen == 0) {
    return 0;
  }
  n = drop_from(a, 0);
  a->stats.failed += (long)n;
  a->err = code;
  return n;
}

size_t sp_async_store_crash(sp_async_store *a) {
  size_t n = drop_from(a, 0);

  a->stats.lost += (long)n;
  a->err = 0;
  return n;
}

size_t sp_async_store_pending(const sp_async_store *a) { return a->qlen; }

const sp_async_stats *sp_async_store_stats(const sp_async_store *a) {
  return &a->stats;
}

/* Everything queued becomes durable before a write; a failure then (or
 * one latched before) is that call's answer too, and stays latched until
 * `durable` reports it (sys/store.h). */
static int sync_first(sp_async_store *a) {
  if (a->err == 0 && a->qlen > 0) {
    (void)sp_async_store_flush(a, SIZE_MAX);
  }
  return call_err(a, 0);
}

/* ---- the vtable ---- */

static int w_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                   uint64_t epoch, void *ud) {
  sp_async_store *a = ud;
  size_t bytes = 0, i, off = 0;
  batch b;

  /* Nothing goes on top of what a failure forgot, until `durable` said
   * so. */
  if (a->err != 0) {
    return call_err(a, 0);
  }
  if (n == 0) {
    /* An epoch record is never pending (sys/store.h): durable before
     * this returns, after everything queued. */
    int rv = sync_first(a);
    return rv ? rv : a->in.apply(entries, hashes, n, epoch, a->in.user_data);
  }
  memset(&b, 0, sizeof(b));
  for (i = 0; i < n; ++i) {
    bytes += entries[i].model_type_len + entries[i].data_len;
  }
  b.n = n;
  b.epoch = epoch;
  b.entries = n ? malloc(n * sizeof(*b.entries)) : NULL;
  b.hashes = n ? malloc(n * SP_HASH_LEN) : NULL;
  b.buf = bytes ? malloc(bytes) : NULL;
  if ((n && (!b.entries || !b.hashes)) || (bytes && !b.buf)) {
    batch_free(&b);
    return SP_ERR_NOMEM;
  }
  for (i = 0; i < n; ++i) {
    sp_entry *e = &b.entries[i];
    *e = entries[i];
    if (e->model_type_len) {
      memcpy(b.buf + off, entries[i].model_type, e->model_type_len);
      e->model_type = (const char *)(b.buf + off);
      off += e->model_type_len;
    }
    if (e->data_len) {
      memcpy(b.buf + off, entries[i].data, e->data_len);
      e->data = b.buf + off;
      off += e->data_len;
    }
  }
  if (n) {
    memcpy(b.hashes, hashes, n * SP_HASH_LEN);
  }
  if (a->qlen == a->qcap) {
    size_t cap = a->qcap ? a->qcap * 2 : 8, k;
    batch *q = malloc(cap * sizeof(*q));
    if (!q) {
      batch_free(&b);
      return SP_ERR_NOMEM;
    }
    for (k = 0; k < a->qlen; ++k) {
      q[k] = *at(a, k);
    }
    free(a->q);
    a->q = q;
    a->qcap = cap;
    a->qhead = 0;
  }
  *at(a, a->qlen) = b;
  a->qlen++;
  a->stats.queued++;
  return SP_STORE_PENDING;
}

/* Reads answer what the store holds (a failure forgot the failed
 * batches already); the latched failure is left for `durable`, `apply`
 * or a write, which a follower makes next. */
static int w_state(sp_store_state *out, void *ud) {
  sp_async_store *a = ud;
  size_t i;
  int rv = a->in.state(out, a->in.user_data);

  if (rv != 0) {
    return rv;
  }
  for (i = 0; i < a->qlen; ++i) {
    const batch *b = at(a, i);
    if (b->n) {
      out->applied = b->entries[b->n - 1].sequence;
      memcpy(out->head_hash, b->hashes + (b->n - 1) * SP_HASH_LEN,
             SP_HASH_LEN);
    }
    if (b->epoch > out->epoch) {
      out->epoch = b->epoch;
    }
  }
  return 0;
}

static int w_durable(sp_seq *through, void *ud) {
  sp_async_store *a = ud;
  sp_store_state st;
  int rv = take_err(a);

  if (rv == 0) {
    rv = a->in.state(&st, a->in.user_data);
  }
  if (rv != 0) {
    return rv;
  }
  *through = st.applied;
  return 0;
}

static int w_hash_at(sp_seq seq, uint8_t out[SP_HASH_LEN], void *ud) {
  sp_async_store *a = ud;
  size_t i, k;
  int rv = call_err(a, 1);

  if (rv != 0) {
    return rv;
  }
  for (i = a->qlen; i-- > 0;) {
    const batch *b = at(a, i);
    for (k = 0; k < b->n; ++k) {
      if (b->entries[k].sequence == seq) {
        memcpy(out, b->hashes + k * SP_HASH_LEN, SP_HASH_LEN);
        return 0;
      }
    }
  }
  return a->in.hash_at(seq, out, a->in.user_data);
}

static int w_read(sp_seq after, sp_seq through, size_t max_count,
                  sp_entry_sink sink, void *ctx, void *ud) {
  sp_async_store *a = ud;
  int rv = sync_first(a);

  return rv ? rv
            : a->in.read(after, through, max_count, sink, ctx,
                         a->in.user_data);
}

static int w_bounds(sp_log_bounds *out, void *ud) {
  sp_async_store *a = ud;
  int rv = sync_first(a);

  return rv ? rv : a->in.bounds(out, a->in.user_data);
}

/* The queued entry with origin id (device, origin), if any; and the
 * highest queued origin_seq of `device` into *high. */
static const sp_entry *queued_origin(const sp_async_store *a,
                                     const sp_uuid *device, uint64_t origin,
                                     uint64_t *high) {
  const sp_entry *hit = NULL;
  size_t i, k;

  for (i = 0; i < a->qlen; ++i) {
    const batch *b = &a->q[(a->qhead + i) % a->qcap];
    for (k = 0; k < b->n; ++k) {
      const sp_entry *e = &b->entries[k];
      if (e->origin_seq == 0 || !sp_uuid_equal(&e->device_id, device)) {
        continue;
      }
      if (high && e->origin_seq > *high) {
        *high = e->origin_seq;
      }
      if (e->origin_seq == origin) {
        hit = e;
      }
    }
  }
  return hit;
}

/* Reads answer as if applied, without making anything durable: the
 * follower asks them while its pages are queued (proposals, commit
 * checks), and a wrapper that flushed for them would rarely hold any. */
static int w_find_origin(const sp_uuid *device, uint64_t origin_seq,
                         sp_seq *seq, uint64_t *device_high, void *ud) {
  sp_async_store *a = ud;
  const sp_entry *e;
  uint64_t high = 0;
  int rv;

  *seq = 0;
  *device_high = 0;
  rv = call_err(a, 1);
  if (rv != 0) {
    return rv;
  }
  rv = a->in.find_origin(device, origin_seq, seq, &high, a->in.user_data);
  if (rv != 0 && rv != SP_ERR_NOT_FOUND) {
    return rv;
  }
  e = queued_origin(a, device, origin_seq, &high);
  *device_high = high;
  if (e && origin_seq != 0) {
    *seq = e->sequence;
    return 0;
  }
  return rv;
}

static int w_append(const sp_entry *entries, size_t n, sp_seq *first,
                    void *ud) {
  sp_async_store *a = ud;
  int rv = sync_first(a);

  return rv ? rv : a->in.append(entries, n, first, a->in.user_data);
}

static int w_outbox_put(const sp_entry *entries, size_t n, uint64_t *first,
                        void *ud) {
  sp_async_store *a = ud;
  int rv = sync_first(a);

  return rv ? rv : a->in.outbox_put(entries, n, first, a->in.user_data);
}

/* The outbox as if the queued batches had retired their items. */
typedef struct ob_ctx {
  const sp_async_store *a;
  sp_entry_sink sink;
  void *ctx;
  size_t left;
  uint64_t items, bytes;
} ob_ctx;

static int ob_sink(const sp_entry *e, const uint8_t *hash, void *arg) {
  ob_ctx *c = arg;

  if (queued_origin(c->a, &e->device_id, e->origin_seq, NULL)) {
    return 0;
  }
  if (!c->sink) {
    c->items++;
    c->bytes += (uint64_t)e->model_type_len + (uint64_t)e->data_len;
    return 0;
  }
  if (c->left == 0) {
    return SP_SINK_STOP;
  }
  c->left--;
  return c->sink(e, hash, c->ctx);
}

static int w_outbox_read(uint64_t after, size_t max_count,
                         sp_entry_sink sink, void *ctx, void *ud) {
  sp_async_store *a = ud;
  ob_ctx c;
  int rv = call_err(a, 1);

  if (rv != 0) {
    return rv;
  }
  if (a->qlen == 0) {
    return a->in.outbox_read(after, max_count, sink, ctx, a->in.user_data);
  }
  memset(&c, 0, sizeof(c));
  c.a = a;
  c.sink = sink;
  c.ctx = ctx;
  c.left = max_count;
  return a->in.outbox_read(after, SIZE_MAX, ob_sink, &c, a->in.user_data);
}

static int w_outbox_remove(uint64_t origin_seq, void *ud) {
  sp_async_store *a = ud;
  int rv = sync_first(a);

  /* Writes wait for the queue: every other write of the store is in
   * order after the queued applies. */

  return rv ? rv : a->in.outbox_remove(origin_seq, a->in.user_data);
}

static int w_outbox_stats(sp_outbox_stats *out, void *ud) {
  sp_async_store *a = ud;
  ob_ctx c;
  int rv = call_err(a, 1);

  if (rv != 0) {
    return rv;
  }
  rv = a->in.outbox_stats(out, a->in.user_data);

  if (rv != 0 || a->qlen == 0) {
    return rv;
  }
  memset(&c, 0, sizeof(c));
  c.a = a;
  rv = a->in.outbox_read(0, SIZE_MAX, ob_sink, &c, a->in.user_data);
  if (rv < 0) {
    return rv;
  }
  out->items = c.items;
  out->bytes = c.bytes;
  return 0;
}


static int w_outbox_anchor(const sp_uuid *device, uint64_t high, void *ud) {
  sp_async_store *a = ud;
  sp_outbox_stats os;
  int rv;

  /* Once anchored, an anchor only raises next_origin, as a queued apply
   * does: the two commute, so it need not wait (each new stream to the
   * leader anchors again). */
  if (a->err == 0 && a->in.outbox_stats(&os, a->in.user_data) == 0 &&
      os.anchored) {
    return a->in.outbox_anchor(device, high, a->in.user_data);
  }
  rv = sync_first(a);

  return rv ? rv : a->in.outbox_anchor(device, high, a->in.user_data);
}

static const char *w_errmsg(void *ud) {
  sp_async_store *a = ud;

  return a->in.errmsg ? a->in.errmsg(a->in.user_data) : NULL;
}

static int w_save_ack(const sp_uuid *device,
                      const uint8_t key[SP_PUBLIC_KEY_LEN], sp_seq acked,
                      const uint8_t hash[SP_HASH_LEN], void *ud) {
  sp_async_store *a = ud;

  return a->in.save_follower_ack(device, key, acked, hash, a->in.user_data);
}

static int w_load_acks(sp_follower_ack_sink sink, void *ctx, void *ud) {
  sp_async_store *a = ud;

  return a->in.load_follower_acks(sink, ctx, a->in.user_data);
}

static int w_save_addr(const sp_uuid *device, const char *address,
                       void *ud) {
  sp_async_store *a = ud;

  return a->in.save_follower_address(device, address, a->in.user_data);
}

static int w_load_addrs(sp_follower_address_sink sink, void *ctx, void *ud) {
  sp_async_store *a = ud;

  return a->in.load_follower_addresses(sink, ctx, a->in.user_data);
}

int sp_async_store_new(sp_async_store **out, const sp_store *inner) {
  sp_async_store *a = calloc(1, sizeof(*a));

  *out = NULL;
  if (!a) {
    return SP_ERR_NOMEM;
  }
  a->in = *inner;
  *out = a;
  return 0;
}

void sp_async_store_del(sp_async_store *a) {
  if (!a) {
    return;
  }
  drop_from(a, 0);
  free(a->q);
  free(a);
}

void sp_async_store_vtable(sp_async_store *a, sp_store *out) {
  const sp_store *in = &a->in;
  sp_store v = SP_STORE_INIT;

  v.user_data = a;
  v.read = w_read;
  v.bounds = w_bounds;
  v.hash_at = w_hash_at;
  v.apply = w_apply;
  v.state = w_state;
  v.durable = w_durable;
  /* Optional members stay absent where the inner store lacks them. */
  v.save_follower_ack = in->save_follower_ack ? w_save_ack : NULL;
  v.load_follower_acks = in->load_follower_acks ? w_load_acks : NULL;
  v.save_follower_address =
      in->save_follower_address ? w_save_addr : NULL;
  v.load_follower_addresses =
      in->load_follower_addresses ? w_load_addrs : NULL;
  v.append = in->append ? w_append : NULL;
  v.find_origin = in->find_origin ? w_find_origin : NULL;
  v.outbox_put = in->outbox_put ? w_outbox_put : NULL;
  v.outbox_read = in->outbox_read ? w_outbox_read : NULL;
  v.outbox_remove = in->outbox_remove ? w_outbox_remove : NULL;
  v.outbox_stats = in->outbox_stats ? w_outbox_stats : NULL;
  v.outbox_anchor = in->outbox_anchor ? w_outbox_anchor : NULL;
  v.errmsg = w_errmsg;
  *out = v;
}
