/*
 * sp_mem_snap.c: the in-memory store's snapshot source and sink
 * (sys/snapshot.h), in log snapshot v1 (sp_logsnap.h).
 *
 * Source: an image of the log (a second sp_mem_store, copied at open) is
 * kept in the store under the id and serialized on demand by a streaming
 * writer, so reads of any offset, reopen and a leader "restart" (a new
 * handler on the same store) all see the same bytes.
 *
 * Sink: the info and chunks are kept in the store object (it is the
 * "disk" of tests and the simulation).  Commit parses them into a fresh
 * store and installs it with sp_mem_store_copy_from, which applies the
 * full-sync outbox rules; a parse failure leaves the store untouched.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/mem_store.h"
#include "sp_abi.h"
#include "sp_logsnap.h"
#include "sp_mem_int.h"
#include "sp_mem_store_int.h"

/* Images kept after close(forget 0). */
#define KEEP_MAX 8

typedef struct msnap {
  uint8_t id[SP_SNAPSHOT_ID_LEN];
  sp_mem_store *image;
  sp_ls_writer *w;
  sp_snapshot_desc desc;
  unsigned opens;
  int forgotten;
  uint64_t used;
} msnap;

typedef struct chunk {
  uint8_t *p;
  size_t len;
} chunk;

typedef struct mstate {
  msnap **snaps;
  size_t nsnaps;
  size_t capsnaps;
  uint64_t clock;
  int pending;
  sp_snapshot_info info;
  chunk *chunks;
  size_t nchunks;
  size_t capchunks;
} mstate;

static void msnap_free(const sp_mem *mem, msnap *m) {
  sp_ls_writer_del(m->w);
  sp_mem_store_del(m->image);
  sp_free(mem, m);
}

static void chunks_clear(const sp_mem *mem, mstate *st) {
  for (size_t i = 0; i < st->nchunks; ++i) {
    sp_free(mem, st->chunks[i].p);
  }
  st->nchunks = 0;
}

static void state_free(void *snap, const sp_mem *mem) {
  mstate *st = snap;

  if (!st) {
    return;
  }
  for (size_t i = 0; i < st->nsnaps; ++i) {
    msnap_free(mem, st->snaps[i]);
  }
  sp_free(mem, st->snaps);
  chunks_clear(mem, st);
  sp_free(mem, st->chunks);
  sp_free(mem, st);
}

static mstate *state_get(sp_mem_store *store) {
  void **slot = sp_mem_store_snap_(store, state_free);

  if (!*slot) {
    *slot = sp_calloc(sp_mem_store_mem_(store), 1, sizeof(mstate));
  }
  return *slot;
}

/* -- source -- */

static int img_ranges(uint64_t from, sp_ls_range_sink sink, void *sink_ctx,
                      void *ctx) {
  msnap *m = ctx;
  const sp_oidx_range *r;
  uint8_t link[SP_HASH_LEN];
  uint64_t var;
  size_t n;
  sp_seq base;

  sp_mem_store_base_(m->image, &base, link, &var, &r, &n);
  for (uint64_t i = from; i < n; ++i) {
    int rv = sink(&r[i], sink_ctx);
    if (rv != 0) {
      return rv < 0 ? rv : 0;
    }
  }
  return 0;
}

static int img_rows(sp_seq after, sp_entry_sink sink, void *sink_ctx,
                    void *ctx) {
  msnap *m = ctx;
  sp_store vt;

  sp_mem_store_get_vtable(m->image, &vt);
  return vt.read(after, m->desc.sequence, SIZE_MAX, sink, sink_ctx,
                 vt.user_data);
}

static msnap *find_snap(mstate *st, const uint8_t *id) {
  for (size_t i = 0; i < st->nsnaps; ++i) {
    if (memcmp(st->snaps[i]->id, id, SP_SNAPSHOT_ID_LEN) == 0) {
      return st->snaps[i];
    }
  }
  return NULL;
}

static void unlink_snap(mstate *st, msnap *m) {
  for (size_t i = 0; i < st->nsnaps; ++i) {
    if (st->snaps[i] == m) {
      st->snaps[i] = st->snaps[--st->nsnaps];
      break;
    }
  }
}

static void drop_snap(const sp_mem *mem, mstate *st, msnap *m) {
  unlink_snap(st, m);
  msnap_free(mem, m);
}

/* Keep at most KEEP_MAX closed images: drop the least recently used. */
static void trim_kept(const sp_mem *mem, mstate *st) {
  for (;;) {
    msnap *oldest = NULL;
    size_t kept = 0;
    for (size_t i = 0; i < st->nsnaps; ++i) {
      msnap *m = st->snaps[i];
      if (m->opens == 0) {
        ++kept;
        if (!oldest || m->used < oldest->used) {
          oldest = m;
        }
      }
    }
    if (kept <= KEEP_MAX) {
      return;
    }
    drop_snap(mem, st, oldest);
  }
}

/* Build the image of `store`'s log and its writer. */
static int make_snap(sp_mem_store *store, const uint8_t *id, msnap **out) {
  const sp_mem *mem = sp_mem_store_mem_(store);
  const sp_oidx_range *r;
  sp_store_state state;
  sp_ls_header h;
  sp_ls_source src;
  sp_store vt;
  uint64_t var, total;
  size_t n;
  msnap *m;
  int rv;

  m = sp_calloc(mem, 1, sizeof(*m));
  if (!m) {
    return SP_ERR_NOMEM;
  }
  memcpy(m->id, id, SP_SNAPSHOT_ID_LEN);
  rv = sp_mem_store_new(&m->image, mem);
  if (rv == 0) {
    rv = sp_mem_store_copy_from(m->image, store);
  }
  if (rv != 0) {
    msnap_free(mem, m);
    return rv;
  }
  sp_mem_store_get_vtable(m->image, &vt);
  vt.state(&state, vt.user_data);
  memset(&h, 0, sizeof(h));
  sp_mem_store_base_(m->image, &h.base, h.base_link, &var, &r, &n);
  h.sequence = state.applied;
  memcpy(h.hash_at, state.head_hash, SP_HASH_LEN);
  h.epoch = state.epoch;
  h.range_count = n;
  h.row_count = sp_mem_store_count(m->image);
  total = sp_ls_total_size(h.range_count, h.row_count, var);
  src.ranges = img_ranges;
  src.rows = img_rows;
  src.ctx = m;
  m->desc.sequence = h.sequence;
  memcpy(m->desc.hash_at, h.hash_at, SP_HASH_LEN);
  m->desc.epoch = h.epoch;
  m->desc.total_size = total;
  rv = total == UINT64_MAX ? SP_ERR_STORE
                           : sp_ls_writer_new(&m->w, &h, total, &src, 0, mem);
  if (rv != 0) {
    msnap_free(mem, m);
    return rv;
  }
  *out = m;
  return 0;
}

static int src_open_(sp_mem_store *store, const uint8_t *id,
                     sp_snapshot_desc *out, void **handle, int create) {
  const sp_mem *mem;
  mstate *st;
  msnap *m;
  int rv;

  if (!id || !out || !handle) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  st = state_get(store);
  if (!st) {
    return SP_ERR_NOMEM;
  }
  mem = sp_mem_store_mem_(store);
  m = find_snap(st, id);
  if (!m && !create) {
    return SP_ERR_NOT_FOUND;
  }
  if (m && create) {
    /* A reused id: a new snapshot.  An image still open elsewhere stays
     * alive, forgotten, until its last close frees it. */
    if (m->opens) {
      unlink_snap(st, m);
      m->forgotten = 1;
    } else {
      drop_snap(mem, st, m);
    }
    m = NULL;
  }
  if (!m) {
    if (st->nsnaps == st->capsnaps) {
      size_t cap = st->capsnaps ? st->capsnaps * 2 : 8;
      msnap **p = sp_realloc(mem, st->snaps, cap * sizeof(*p));
      if (!p) {
        return SP_ERR_NOMEM;
      }
      st->snaps = p;
      st->capsnaps = cap;
    }
    rv = make_snap(store, id, &m);
    if (rv != 0) {
      return rv;
    }
    st->snaps[st->nsnaps++] = m;
  }
  ++m->opens;
  m->used = ++st->clock;
  *out = m->desc;
  *handle = m;
  return 0;
}

static int src_open(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                    sp_snapshot_desc *out, void **handle, void *user_data) {
  return src_open_(user_data, id, out, handle, 1);
}

static int src_reopen(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      sp_snapshot_desc *out, void **handle,
                      void *user_data) {
  return src_open_(user_data, id, out, handle, 0);
}

static int src_read(void *handle, uint64_t offset, uint8_t *buf, size_t len,
                    void *user_data) {
  msnap *m = handle;
  mstate *st = state_get(user_data);

  if (!m || !st) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  m->used = ++st->clock;
  return sp_ls_writer_read(m->w, offset, buf, len);
}

static void src_close(void *handle, int forget, void *user_data) {
  const sp_mem *mem = sp_mem_store_mem_(user_data);
  mstate *st = state_get(user_data);
  msnap *m = handle;

  if (!m || !st) {
    return;
  }
  if (m->opens) {
    --m->opens;
  }
  if (forget || m->forgotten) {
    /* Another handle on the same id keeps it until its own close. */
    m->forgotten = 1;
    if (m->opens == 0) {
      drop_snap(mem, st, m);
    }
  } else {
    trim_kept(mem, st);
  }
}

int sp_mem_store_snapshot_source_versioned(sp_mem_store *store, int version,
                                           sp_snapshot_source *dst) {
  sp_snapshot_source full, *out = &full;
  size_t n = sp_abi_snapshot_source_size(version);

  if (!dst) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (n == 0) {
    return SP_ERR_VERSION;
  }
  memset(out, 0, sizeof(*out));
  out->version = (unsigned int)version;
  out->user_data = store;
  out->open = src_open;
  out->reopen = src_reopen;
  out->read = src_read;
  out->close = src_close;
  sp_abi_copy(dst, &full, n);
  return 0;
}

/* -- sink -- */

static int sink_pending(sp_snapshot_info *info, uint64_t *have,
                        void *user_data) {
  mstate *st = state_get(user_data);

  if (!st) {
    return SP_ERR_NOMEM;
  }
  if (!st->pending) {
    return SP_ERR_NOT_FOUND;
  }
  if (info) {
    *info = st->info;
  }
  if (have) {
    *have = st->nchunks;
  }
  return 0;
}

static int info_equal(const sp_snapshot_info *a, const sp_snapshot_info *b) {
  return memcmp(a->id, b->id, SP_SNAPSHOT_ID_LEN) == 0 &&
         a->sequence == b->sequence &&
         memcmp(a->hash_at, b->hash_at, SP_HASH_LEN) == 0 &&
         a->epoch == b->epoch && a->total_size == b->total_size &&
         a->chunk_size == b->chunk_size && a->chunk_count == b->chunk_count &&
         memcmp(a->digest, b->digest, SP_HASH_LEN) == 0;
}

static int sink_begin(const sp_snapshot_info *info, uint64_t *have,
                      void *user_data) {
  mstate *st = state_get(user_data);

  if (!info || !have) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!st) {
    return SP_ERR_NOMEM;
  }
  if (!st->pending || !info_equal(&st->info, info)) {
    chunks_clear(sp_mem_store_mem_(user_data), st);
    st->info = *info;
    st->pending = 1;
  }
  *have = st->nchunks;
  return 0;
}

static int sink_write_chunk(uint64_t index, const uint8_t *data, size_t len,
                            void *user_data) {
  const sp_mem *mem = sp_mem_store_mem_(user_data);
  mstate *st = state_get(user_data);
  uint8_t *p;

  if (!st || !st->pending || index != st->nchunks || (len && !data)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (st->nchunks == st->capchunks) {
    size_t cap = st->capchunks ? st->capchunks * 2 : 16;
    chunk *c = sp_realloc(mem, st->chunks, cap * sizeof(*c));
    if (!c) {
      return SP_ERR_NOMEM;
    }
    st->chunks = c;
    st->capchunks = cap;
  }
  p = sp_malloc(mem, len ? len : 1);
  if (!p) {
    return SP_ERR_NOMEM;
  }
  if (len) {
    memcpy(p, data, len);
  }
  st->chunks[st->nchunks].p = p;
  st->chunks[st->nchunks].len = len;
  ++st->nchunks;
  return 0;
}

/* Parsing into a fresh store. */
typedef struct install {
  const sp_mem *mem;
  const sp_snapshot_info *info;
  sp_mem_store *fresh;
  sp_store vt;
  sp_ls_header h;
  sp_oidx_range *ranges;
  size_t nranges;
  int based;
  /* Recorded with the new log: an epoch never goes back (§14.8). */
  uint64_t epoch;
} install;

static int inst_header(const sp_ls_header *h, void *ctx) {
  install *in = ctx;

  if (h->sequence != in->info->sequence ||
      memcmp(h->hash_at, in->info->hash_at, SP_HASH_LEN) != 0 ||
      h->epoch != in->info->epoch || h->range_count > SIZE_MAX / 32) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  in->h = *h;
  if (in->h.epoch > in->epoch) {
    in->epoch = in->h.epoch;
  }
  if (h->range_count) {
    in->ranges = sp_malloc(in->mem, (size_t)h->range_count *
                                        sizeof(*in->ranges));
    if (!in->ranges) {
      return SP_ERR_NOMEM;
    }
  }
  return 0;
}

static int inst_base(install *in) {
  in->based = 1;
  return sp_mem_store_load_base_(in->fresh, in->h.base, in->h.base_link,
                                 in->epoch, in->ranges, in->nranges);
}

static int inst_range(const sp_oidx_range *r, void *ctx) {
  install *in = ctx;

  in->ranges[in->nranges++] = *r;
  return 0;
}

static int inst_row(const sp_entry *e, const uint8_t link[SP_HASH_LEN],
                    void *ctx) {
  install *in = ctx;
  int rv = in->based ? 0 : inst_base(in);

  if (rv == 0) {
    rv = in->vt.apply(e, link, 1, in->epoch, in->vt.user_data);
  }
  return rv;
}

static int sink_commit(void *user_data) {
  sp_mem_store *store = user_data;
  const sp_mem *mem = sp_mem_store_mem_(store);
  mstate *st = state_get(store);
  sp_ls_parser *p = NULL;
  sp_ls_sink sink;
  sp_store cur;
  sp_store_state now;
  install in;
  uint64_t bytes = 0;
  int rv;

  if (!st || !st->pending || st->nchunks != st->info.chunk_count) {
    return SP_ERR_INVALID_STATE;
  }
  memset(&in, 0, sizeof(in));
  in.mem = mem;
  in.info = &st->info;
  sp_mem_store_get_vtable(store, &cur);
  rv = cur.state(&now, cur.user_data);
  if (rv != 0) {
    return rv;
  }
  in.epoch = now.epoch;
  rv = sp_mem_store_new(&in.fresh, mem);
  if (rv != 0) {
    return rv;
  }
  sp_mem_store_get_vtable(in.fresh, &in.vt);
  sink.header = inst_header;
  sink.range = inst_range;
  sink.row = inst_row;
  sink.ctx = &in;
  rv = sp_ls_parser_new(&p, &sink, st->info.total_size, mem);
  for (size_t i = 0; rv == 0 && i < st->nchunks; ++i) {
    bytes += st->chunks[i].len;
    rv = sp_ls_parser_feed(p, st->chunks[i].p, st->chunks[i].len);
  }
  if (rv == 0) {
    rv = bytes == st->info.total_size ? sp_ls_parser_finish(p)
                                      : SP_ERR_SNAPSHOT_CORRUPT;
  }
  if (rv == 0 && !in.based) {
    rv = inst_base(&in);
  }
  /* Bytes that do not parse, or rows the store refuses, can never
   * install: the engine restarts the snapshot on this code. */
  if (rv != 0 && rv != SP_ERR_NOMEM) {
    rv = SP_ERR_SNAPSHOT_CORRUPT;
  }
  if (rv == 0) {
    rv = sp_mem_store_copy_from(store, in.fresh);
  }
  sp_ls_parser_del(p);
  sp_free(mem, in.ranges);
  sp_mem_store_del(in.fresh);
  if (rv != 0) {
    return rv;
  }
  chunks_clear(mem, st);
  st->pending = 0;
  return 0;
}

static int sink_abort(void *user_data) {
  mstate *st = state_get(user_data);

  if (!st) {
    return SP_ERR_NOMEM;
  }
  chunks_clear(sp_mem_store_mem_(user_data), st);
  st->pending = 0;
  return 0;
}

int sp_mem_store_snapshot_sink_versioned(sp_mem_store *store, int version,
                                         sp_snapshot_sink *dst) {
  sp_snapshot_sink full, *out = &full;
  size_t n = sp_abi_snapshot_sink_size(version);

  if (!dst) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (n == 0) {
    return SP_ERR_VERSION;
  }
  memset(out, 0, sizeof(*out));
  out->version = (unsigned int)version;
  out->user_data = store;
  out->pending = sink_pending;
  out->begin = sink_begin;
  out->write_chunk = sink_write_chunk;
  out->commit = sink_commit;
  out->abort = sink_abort;
  sp_abi_copy(dst, &full, n);
  return 0;
}
