/*
 * sp_mem_store.c: the in-memory sync-log store.
 *
 * Records sit in one growable array in sequence order, so lookups are a
 * binary search.  Their model_type and payload bytes are copied into large
 * arena blocks filled front to back.  Because entries only ever arrive in
 * sequence order, blocks are in order too: a record remembers the id of the
 * block it was written to, and pruning frees every block older than the
 * block of the first retained record.
 *
 * Origin ids of the retained records sit in a hash table beside them,
 * with the committed set of every origin id ever held as per-device ranges
 * (sp_origin_index.c), the outbox in its own sorted array
 * (sp_mem_outbox.c); a mutation touching them allocates everything first,
 * so index and outbox change with the records or not at all.
 *
 * Every mutation either completes or is rolled back to a mark taken before
 * it started, so a failed allocation or invalid input leaves no trace.
 */
#include <stdint.h>
#include <string.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/sys/transport.h"
#include "sync_protocol/uuid.h"
#include "sp_abi.h"
#include "sp_enc.h"
#include "sp_index.h"
#include "sp_mem_int.h"
#include "sp_mem_outbox.h"
#include "sp_mem_store_int.h"
#include "sp_origin_index.h"

/* Arena block sizes: the first block is small and each new one is twice
 * the last, up to the largest, so a short log (a test's, a fuzz input's)
 * costs a few KiB while a long one fills 1 MiB blocks.  An entry larger
 * than that gets a block of its own size. */
#define BLOCK_MIN ((size_t)4096)
#define BLOCK_MAX ((size_t)1 << 20)

typedef struct block {
  uint64_t id;
  size_t cap;
  size_t used;
  uint8_t bytes[];
} block;

typedef struct rec {
  sp_seq seq;
  sp_uuid device_id;
  uint64_t timestamp_ms;
  sp_uuid record_id;
  int64_t version;
  const char *model_type;
  const uint8_t *data;
  size_t data_len;
  uint64_t origin_seq;
  /* Id of the block holding the bytes; with no bytes, an id no greater
   * than that of any block written later, so block order still holds. */
  uint64_t block_id;
  uint8_t model_type_len;
  uint8_t change_type;
  uint8_t hash[SP_HASH_LEN];
} rec;

/* The whole content of a store; copy_from builds a second one and swaps. */
typedef struct mlog {
  /* Live records are recs[head, head + len). */
  rec *recs;
  size_t head;
  size_t len;
  size_t cap;
  /* Blocks in id order; blocks[0] has the lowest live id. */
  block **blocks;
  size_t nblocks;
  size_t blocks_cap;
  uint64_t next_block_id;
  sp_seq pruned_through;
  uint8_t pruned_hash[SP_HASH_LEN];
  uint64_t epoch;
  /* Origin ids of the retained records, and the committed set. */
  sp_oidx idx;
} mlog;

/* A follower position kept with the log (save_follower_ack). */
typedef struct fack {
  sp_uuid device;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  sp_seq acked;
  uint8_t hash[SP_HASH_LEN];
} fack;

/* Where a follower last connected from (save_follower_address). */
typedef struct faddr {
  sp_uuid device;
  char address[SP_PEER_ADDRESS_MAX];
} faddr;

struct sp_mem_store {
  sp_mem mem;
  mlog log;
  fack *facks;
  size_t nfacks;
  size_t capfacks;
  /* device -> position + 1 in facks: with a thousand followers the
   * leader saves one position every few milliseconds (sp_leader.c
   * keep_ack). */
  sp_index fack_ix;
  faddr *faddrs;
  size_t nfaddrs;
  size_t capfaddrs;
  /* device -> position + 1 in faddrs: a leader saves the address on
   * every stream a follower opens (sp_leader_addr.c). */
  sp_index faddr_ix;
  sp_mobox box;
  unsigned fail_applies;
  unsigned fail_appends;
  /* vt_errmsg: why the last injected failure failed (static text). */
  const char *errmsg;
  /* Depth of `read` calls feeding a sink: records must not move or be
   * freed under it, so mutations are refused meanwhile. */
  unsigned reading;
  /* Snapshot images and the pending snapshot (sp_mem_snap.c): kept with
   * the store, which plays the disk in tests. */
  void *snap;
  void (*snap_free)(void *snap, const sp_mem *mem);
};

/* Where a mutation started, to undo it. */
typedef struct mark {
  size_t len;
  size_t nblocks;
  size_t last_used;
  uint64_t next_block_id;
} mark;

static const uint8_t zero_hash[SP_HASH_LEN];

static void log_free(const sp_mem *mem, mlog *log) {
  size_t i;

  for (i = 0; i < log->nblocks; ++i) {
    sp_free(mem, log->blocks[i]);
  }
  sp_free(mem, log->blocks);
  sp_free(mem, log->recs);
  sp_oidx_free(mem, &log->idx);
  {
    uint64_t seed = log->idx.seed;
    memset(log, 0, sizeof(*log));
    sp_oidx_init(&log->idx, seed);
  }
}

static const rec *log_last(const mlog *log) {
  return log->len ? &log->recs[log->head + log->len - 1] : NULL;
}

/* Highest sequence held, or the prune point once everything is pruned. */
static sp_seq log_latest(const mlog *log) {
  const rec *r = log_last(log);
  return r ? r->seq : log->pruned_through;
}

static const uint8_t *log_head_hash(const mlog *log) {
  const rec *r = log_last(log);
  return r ? r->hash : log->pruned_hash;
}

/* Index (relative to head) of the first record with seq > after. */
static size_t log_upper(const mlog *log, sp_seq after) {
  const rec *r;
  size_t lo = 0, hi = log->len;

  if (hi == 0) {
    return 0;
  }
  r = log->recs + log->head;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r[mid].seq <= after) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

static const rec *log_find(const mlog *log, sp_seq seq) {
  size_t i;

  if (seq == 0) {
    return NULL;
  }
  i = log_upper(log, seq - 1);
  if (i < log->len && log->recs[log->head + i].seq == seq) {
    return &log->recs[log->head + i];
  }
  return NULL;
}

static void log_mark(const mlog *log, mark *m) {
  m->len = log->len;
  m->nblocks = log->nblocks;
  m->last_used = log->nblocks ? log->blocks[log->nblocks - 1]->used : 0;
  m->next_block_id = log->next_block_id;
}

static void log_rollback(const sp_mem *mem, mlog *log, const mark *m) {
  while (log->nblocks > m->nblocks) {
    sp_free(mem, log->blocks[--log->nblocks]);
  }
  if (log->nblocks) {
    log->blocks[log->nblocks - 1]->used = m->last_used;
  }
  log->next_block_id = m->next_block_id;
  log->len = m->len;
}

/* Room for `n` more records.  Reclaims the pruned prefix before growing. */
static int log_reserve(const sp_mem *mem, mlog *log, size_t n) {
  size_t need, cap;
  rec *recs;

  if (n > SIZE_MAX / sizeof(rec) - log->head - log->len) {
    return SP_ERR_NOMEM;
  }
  need = log->head + log->len + n;
  if (need <= log->cap) {
    return 0;
  }
  if (log->head && log->len + n <= log->cap) {
    memmove(log->recs, log->recs + log->head, log->len * sizeof(rec));
    log->head = 0;
    return 0;
  }
  need = log->len + n;
  cap = log->cap ? log->cap : 64;
  while (cap < need) {
    cap = cap > SIZE_MAX / sizeof(rec) / 2 ? need : cap * 2;
  }
  if (log->head) {
    memmove(log->recs, log->recs + log->head, log->len * sizeof(rec));
    log->head = 0;
  }
  recs = sp_realloc(mem, log->recs, cap * sizeof(rec));
  if (!recs) {
    return SP_ERR_NOMEM;
  }
  log->recs = recs;
  log->cap = cap;
  return 0;
}

/* Copy `n` bytes into the arena; the caller rolls back on failure. */
static int log_place(const sp_mem *mem, mlog *log, size_t n, uint8_t **out,
                     uint64_t *block_id) {
  block *b = log->nblocks ? log->blocks[log->nblocks - 1] : NULL;
  size_t cap;

  if (n == 0) {
    *out = NULL;
    *block_id = b ? b->id : log->next_block_id;
    return 0;
  }
  if (!b || b->cap - b->used < n) {
    if (log->nblocks == log->blocks_cap) {
      size_t bcap = log->blocks_cap ? log->blocks_cap * 2 : 8;
      block **blocks = sp_realloc(mem, log->blocks, bcap * sizeof(*blocks));
      if (!blocks) {
        return SP_ERR_NOMEM;
      }
      log->blocks = blocks;
      log->blocks_cap = bcap;
    }
    cap = b ? (b->cap < BLOCK_MAX / 2 ? 2 * b->cap : BLOCK_MAX) : BLOCK_MIN;
    cap = n > cap ? n : cap;
    b = sp_malloc(mem, sizeof(block) + cap);
    if (!b) {
      return SP_ERR_NOMEM;
    }
    b->id = log->next_block_id++;
    b->cap = cap;
    b->used = 0;
    log->blocks[log->nblocks++] = b;
  }
  *out = b->bytes + b->used;
  *block_id = b->id;
  b->used += n;
  return 0;
}

/* Append a copy of `e` (already validated, capacity reserved). */
static int log_push(const sp_mem *mem, mlog *log, const sp_entry *e,
                    const uint8_t hash[SP_HASH_LEN]) {
  rec *r = &log->recs[log->head + log->len];
  uint8_t *p;
  int rv;

  rv = log_place(mem, log, e->model_type_len + e->data_len, &p,
                 &r->block_id);
  if (rv != 0) {
    return rv;
  }
  r->seq = e->sequence;
  r->device_id = e->device_id;
  r->timestamp_ms = e->timestamp_ms;
  r->record_id = e->record_id;
  r->version = e->version;
  r->model_type_len = (uint8_t)e->model_type_len;
  r->change_type = (uint8_t)e->change_type;
  r->model_type = "";
  r->data = NULL;
  r->data_len = e->data_len;
  r->origin_seq = e->origin_seq;
  if (p) {
    if (e->model_type_len) {
      memcpy(p, e->model_type, e->model_type_len);
      r->model_type = (const char *)p;
    }
    if (e->data_len) {
      memcpy(p + e->model_type_len, e->data, e->data_len);
      r->data = p + e->model_type_len;
    }
  }
  memcpy(r->hash, hash, SP_HASH_LEN);
  ++log->len;
  return 0;
}

static void rec_to_entry(const rec *r, sp_entry *e) {
  e->sequence = r->seq;
  e->device_id = r->device_id;
  e->timestamp_ms = r->timestamp_ms;
  e->model_type = r->model_type;
  e->model_type_len = r->model_type_len;
  e->record_id = r->record_id;
  e->change_type = (sp_change_type)r->change_type;
  e->version = r->version;
  e->data = r->data;
  e->data_len = r->data_len;
  e->origin_seq = r->origin_seq;
}

/* Free the blocks that no retained record uses any more. */
static void log_release_blocks(const sp_mem *mem, mlog *log) {
  size_t drop = 0;

  if (log->len == 0) {
    drop = log->nblocks;
  } else {
    uint64_t keep = log->recs[log->head].block_id;
    while (drop < log->nblocks && log->blocks[drop]->id < keep) {
      ++drop;
    }
  }
  if (drop == 0) {
    return;
  }
  for (size_t i = 0; i < drop; ++i) {
    sp_free(mem, log->blocks[i]);
  }
  memmove(log->blocks, log->blocks + drop,
          (log->nblocks - drop) * sizeof(*log->blocks));
  log->nblocks -= drop;
}

int sp_mem_store_new(sp_mem_store **pstore, const sp_mem *mem) {
  sp_mem m;
  sp_mem_store *s;

  if (!pstore) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  *pstore = NULL;
  sp_mem_resolve(&m, mem);
  s = sp_calloc(&m, 1, sizeof(*s));
  if (!s) {
    return SP_ERR_NOMEM;
  }
  s->mem = m;
  /* The address varies per store and per run: a device cannot aim its
   * origin numbers at one hash layout. */
  sp_oidx_init(&s->log.idx, (uint64_t)(uintptr_t)s * 0x9e3779b97f4a7c15ull);
  sp_mobox_init(&s->box);
  *pstore = s;
  return 0;
}

void sp_mem_store_del(sp_mem_store *store) {
  sp_mem m;

  if (!store) {
    return;
  }
  m = store->mem;
  if (store->snap_free) {
    store->snap_free(store->snap, &m);
  }
  log_free(&m, &store->log);
  sp_mobox_free(&m, &store->box);
  sp_free(&m, store->facks);
  sp_index_free(&store->fack_ix, &m);
  sp_free(&m, store->faddrs);
  sp_index_free(&store->faddr_ix, &m);
  sp_free(&m, store);
}

/* Undo the index entries of entries[0, n) appended from `first`. */
static void unindex(mlog *log, const sp_entry *entries, size_t n,
                    sp_seq first) {
  for (size_t i = 0; i < n; ++i) {
    if (entries[i].origin_seq) {
      sp_oidx_remove(&log->idx, &entries[i].device_id,
                     entries[i].origin_seq, first + i);
    }
  }
}

/*
 * Append entries[0, n) as first, first + 1, ... (first > latest), chained
 * after the head.  Origin ids already in the log, or twice in the batch,
 * refuse the whole batch.  Every allocation comes before the first
 * change that cannot be rolled back.
 */
static int log_append(sp_mem_store *store, const sp_entry *entries, size_t n,
                      sp_seq first) {
  mlog *log = &store->log;
  uint8_t prev[SP_HASH_LEN];
  size_t i, norigin = 0;
  mark m;
  int rv;

  for (i = 0; i < n; ++i) {
    if (sp_enc_check_entry(&entries[i]) != 0 ||
        entries[i].origin_seq > SP_MAX_ORIGIN_SEQ) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    norigin += entries[i].origin_seq != 0;
  }
  if (first == 0 || first <= log_latest(log) || n - 1 > UINT64_MAX - first) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = log_reserve(&store->mem, log, n);
  if (rv == 0 && norigin) {
    rv = sp_oidx_reserve(&store->mem, &log->idx, norigin,
                         sp_oidx_new_ranges(&log->idx, entries, n));
  }
  if (rv != 0) {
    return rv;
  }
  for (i = 0; i < n; ++i) {
    const sp_entry *e = &entries[i];
    if (e->origin_seq == 0) {
      continue;
    }
    /* Held once and pruned counts too: a log holds an origin once. */
    if (sp_oidx_find(&log->idx, &e->device_id, e->origin_seq) != 0 ||
        sp_oidx_committed(&log->idx, &e->device_id, e->origin_seq)) {
      unindex(log, entries, i, first);
      return SP_ERR_EXISTS;
    }
    sp_oidx_insert(&log->idx, &e->device_id, e->origin_seq, first + i);
  }
  memcpy(prev, log_head_hash(log), SP_HASH_LEN);
  log_mark(log, &m);
  for (i = 0; i < n; ++i) {
    sp_entry e = entries[i];
    e.sequence = first + i;
    rv = sp_chain_next(prev, &e, prev);
    if (rv == 0) {
      rv = log_push(&store->mem, log, &e, prev);
    }
    if (rv != 0) {
      log_rollback(&store->mem, log, &m);
      unindex(log, entries, n, first);
      return rv;
    }
  }
  for (i = 0; i < n; ++i) {
    if (entries[i].origin_seq) {
      sp_oidx_commit(&log->idx, &entries[i].device_id, entries[i].origin_seq);
    }
  }
  return 0;
}

int sp_mem_store_append(sp_mem_store *store, const sp_entry *entry,
                        sp_seq *seq) {
  sp_seq latest, first;
  int rv;

  if (!store || !entry) {
    return SP_ERR_INVALID_ARGUMENT; /* log_append checks the rest */
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  latest = log_latest(&store->log);
  if (entry->sequence == 0 && latest == UINT64_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  first = entry->sequence ? entry->sequence : latest + 1;
  rv = log_append(store, entry, 1, first);
  if (rv == 0 && seq) {
    *seq = first;
  }
  return rv;
}

int sp_mem_store_prune(sp_mem_store *store, sp_seq through) {
  mlog *log;
  size_t n;

  if (!store || through > log_latest(&store->log)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  log = &store->log;
  if (through <= log->pruned_through) {
    return 0;
  }
  n = log_upper(log, through);
  for (size_t i = 0; i < n; ++i) {
    const rec *r = &log->recs[log->head + i];
    if (r->origin_seq) {
      sp_oidx_remove(&log->idx, &r->device_id, r->origin_seq, r->seq);
    }
  }
  /* The kept hash is the link after the last entry at or below `through`
   * (a prune point inside a gap inherits the entry before the gap). */
  if (n > 0) {
    memcpy(log->pruned_hash, log->recs[log->head + n - 1].hash, SP_HASH_LEN);
  }
  log->pruned_through = through;
  log->head += n;
  log->len -= n;
  if (log->len == 0) {
    log->head = 0;
  }
  log_release_blocks(&store->mem, log);
  return 0;
}

int sp_mem_store_get(const sp_mem_store *store, sp_seq sequence,
                     sp_entry *out, uint8_t hash[SP_HASH_LEN]) {
  const rec *r;

  if (!store || !out) {
    return SP_ERR_NOT_FOUND;
  }
  r = log_find(&store->log, sequence);
  if (!r) {
    return SP_ERR_NOT_FOUND;
  }
  rec_to_entry(r, out);
  if (hash) {
    memcpy(hash, r->hash, SP_HASH_LEN);
  }
  return 0;
}

size_t sp_mem_store_count(const sp_mem_store *store) {
  return store ? store->log.len : 0;
}

/* 1 if record `r` of the discarded log is one of this device's writes that
 * the new log `from` never held (retained or pruned): it goes back into
 * the outbox. */
static int put_back(const sp_mobox *box, const mlog *from, const rec *r) {
  return box->has_device && r->origin_seq != 0 &&
         sp_uuid_equal(&r->device_id, &box->device) &&
         !sp_oidx_committed(&from->idx, &r->device_id, r->origin_seq) &&
         sp_mobox_find(box, r->origin_seq) == SIZE_MAX;
}

/* Remove the outbox items the new log `from` has committed: they are in
 * its history, so nothing is left to propose.  Cannot fail. */
static void retire_committed(sp_mem_store *store, const mlog *from) {
  sp_mobox *box = &store->box;

  for (size_t i = box->len; i-- > 0;) {
    const sp_entry *e = &box->items[box->head + i].e;
    if (sp_oidx_committed(&from->idx, &e->device_id, e->origin_seq)) {
      sp_mobox_remove(&store->mem, box, e->origin_seq);
    }
  }
}

int sp_mem_store_copy_from(sp_mem_store *store, const sp_mem_store *src) {
  sp_mobox_item *back = NULL;
  size_t i, nback = 0, norigin = 0, made = 0;
  mlog fresh;
  const mlog *from, *old;
  int rv;

  if (!store || !src) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store == src) {
    return 0;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  from = &src->log;
  old = &store->log;
  memset(&fresh, 0, sizeof(fresh));
  sp_oidx_init(&fresh.idx, old->idx.seed);
  for (i = 0; i < from->len; ++i) {
    norigin += from->recs[from->head + i].origin_seq != 0;
  }
  for (i = 0; i < old->len; ++i) {
    nback += put_back(&store->box, from, &old->recs[old->head + i]);
  }
  /* Built aside and swapped in, so a failed allocation leaves `store` as
   * it was. */
  rv = from->len ? log_reserve(&store->mem, &fresh, from->len) : 0;
  if (rv == 0 && norigin) {
    rv = sp_oidx_reserve(&store->mem, &fresh.idx, norigin, 0);
  }
  if (rv == 0) {
    rv = sp_oidx_copy_set(&store->mem, &fresh.idx, &from->idx);
  }
  for (i = 0; rv == 0 && i < from->len; ++i) {
    const rec *r = &from->recs[from->head + i];
    sp_entry e;
    rec_to_entry(r, &e);
    rv = log_push(&store->mem, &fresh, &e, r->hash);
    if (rv == 0 && r->origin_seq) {
      sp_oidx_insert(&fresh.idx, &r->device_id, r->origin_seq, r->seq);
    }
  }
  if (rv == 0 && nback) {
    back = sp_malloc(&store->mem, nback * sizeof(*back));
    rv = back ? sp_mobox_reserve(&store->mem, &store->box, nback)
              : SP_ERR_NOMEM;
  }
  for (i = 0; rv == 0 && i < old->len && made < nback; ++i) {
    const rec *r = &old->recs[old->head + i];
    sp_entry e;
    if (put_back(&store->box, from, r)) {
      rec_to_entry(r, &e);
      rv = sp_mobox_make(&store->mem, &e, r->origin_seq, &back[made]);
      made += rv == 0;
    }
  }
  if (rv != 0) {
    for (i = 0; i < made; ++i) {
      sp_mobox_item_free(&store->mem, &back[i]);
    }
    sp_free(&store->mem, back);
    log_free(&store->mem, &fresh);
    return rv;
  }
  fresh.pruned_through = from->pruned_through;
  memcpy(fresh.pruned_hash, from->pruned_hash, SP_HASH_LEN);
  fresh.epoch = from->epoch;
  retire_committed(store, from);
  for (i = 0; i < made; ++i) {
    sp_mobox_raise(&store->box, back[i].e.origin_seq);
    if (sp_mobox_link(&store->box, &back[i]) != 0) {
      sp_mobox_item_free(&store->mem, &back[i]); /* the same origin twice */
    }
  }
  sp_free(&store->mem, back);
  if (store->box.has_device) {
    sp_mobox_raise(&store->box, sp_oidx_high(&from->idx, &store->box.device));
  }
  log_free(&store->mem, &store->log);
  store->log = fresh;
  return 0;
}

void sp_mem_store_fail_appends(sp_mem_store *store, unsigned count) {
  if (store) {
    store->fail_appends = count;
  }
}

void sp_mem_store_fail_applies(sp_mem_store *store, unsigned count) {
  if (store) {
    store->fail_applies = count;
  }
}

/* -- vtable -- */

static int vt_read(sp_seq after, sp_seq through, size_t max_count,
                   sp_entry_sink sink, void *sink_ctx, void *user_data) {
  sp_mem_store *store = user_data;
  const mlog *log = &store->log;
  size_t i, fed = 0;
  int rv = 0;

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  ++store->reading;
  for (i = log_upper(log, after); i < log->len && fed < max_count; ++i) {
    const rec *r = &log->recs[log->head + i];
    sp_entry e;

    if (r->seq > through) {
      break;
    }
    rec_to_entry(r, &e);
    rv = sink(&e, r->hash, sink_ctx);
    if (rv != 0) {
      break;
    }
    ++fed;
  }
  --store->reading;
  return rv < 0 ? rv : 0;
}

static int vt_bounds(sp_log_bounds *out, void *user_data) {
  const mlog *log = &((sp_mem_store *)user_data)->log;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  out->pruned_through = log->pruned_through;
  out->latest = log_latest(log);
  return 0;
}

static int vt_hash_at(sp_seq sequence, uint8_t out[SP_HASH_LEN],
                      void *user_data) {
  const mlog *log = &((sp_mem_store *)user_data)->log;
  const rec *r;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (sequence == 0) {
    memcpy(out, zero_hash, SP_HASH_LEN);
    return 0;
  }
  if (sequence == log->pruned_through) {
    memcpy(out, log->pruned_hash, SP_HASH_LEN);
    return 0;
  }
  r = log_find(log, sequence);
  if (!r) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(out, r->hash, SP_HASH_LEN);
  return 0;
}

/* Record an applied entry's origin id, and retire the outbox item it
 * commits (room in the index reserved). */
static void retire(sp_mem_store *store, const sp_entry *e) {
  sp_mobox *box = &store->box;
  size_t i;

  sp_oidx_insert(&store->log.idx, &e->device_id, e->origin_seq, e->sequence);
  sp_oidx_commit(&store->log.idx, &e->device_id, e->origin_seq);
  i = sp_mobox_find(box, e->origin_seq);
  if (i != SIZE_MAX &&
      sp_uuid_equal(&box->items[box->head + i].e.device_id, &e->device_id)) {
    sp_mobox_remove(&store->mem, box, e->origin_seq);
    sp_mobox_raise(box, e->origin_seq);
  }
  if (box->has_device && sp_uuid_equal(&box->device, &e->device_id)) {
    sp_mobox_raise(box, e->origin_seq);
  }
}

static int vt_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                    uint64_t epoch, void *user_data) {
  sp_mem_store *store = user_data;
  mlog *log = &store->log;
  sp_seq prev;
  mark m;
  size_t i, norigin = 0;
  int rv;

  store->errmsg = NULL;
  if (store->fail_applies) {
    --store->fail_applies;
    store->errmsg = "injected failure (sp_mem_store_fail_applies)";
    return SP_ERR_STORE;
  }
  if (n && (!entries || !hashes)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  prev = log_latest(log);
  for (i = 0; i < n; ++i) {
    if (entries[i].sequence <= prev ||
        entries[i].origin_seq > SP_MAX_ORIGIN_SEQ ||
        sp_enc_check_entry(&entries[i]) != 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    prev = entries[i].sequence;
    norigin += entries[i].origin_seq != 0;
  }
  rv = n ? log_reserve(&store->mem, log, n) : 0;
  if (rv == 0 && norigin) {
    rv = sp_oidx_reserve(&store->mem, &log->idx, norigin,
                         sp_oidx_new_ranges(&log->idx, entries, n));
  }
  if (rv != 0) {
    return rv;
  }
  log_mark(log, &m);
  for (i = 0; i < n; ++i) {
    rv = log_push(&store->mem, log, &entries[i], hashes + i * SP_HASH_LEN);
    if (rv != 0) {
      log_rollback(&store->mem, log, &m);
      return rv;
    }
  }
  /* Nothing can fail from here: index, committed set and outbox change
   * with the entries or not at all. */
  for (i = 0; i < n; ++i) {
    if (entries[i].origin_seq) {
      retire(store, &entries[i]);
    }
  }
  if (epoch > log->epoch) {
    log->epoch = epoch;
  }
  return 0;
}

static int vt_state(sp_store_state *out, void *user_data) {
  const mlog *log = &((sp_mem_store *)user_data)->log;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  out->applied = log_latest(log);
  memcpy(out->head_hash, log_head_hash(log), SP_HASH_LEN);
  out->epoch = log->epoch;
  return 0;
}

static int vt_save_follower_ack(const sp_uuid *device,
                                const uint8_t key[SP_PUBLIC_KEY_LEN],
                                sp_seq acked, const uint8_t hash[SP_HASH_LEN],
                                void *user_data) {
  sp_mem_store *s = user_data;
  fack *a = NULL;
  uint64_t dhash;
  size_t pos = 0;
  uintptr_t v;

  if (!device || !key || !hash) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  dhash = sp_index_hash_uuid(device);
  while (!a && (v = sp_index_next(&s->fack_ix, dhash, &pos, NULL)) != 0) {
    if (sp_uuid_equal(&s->facks[v - 1].device, device)) {
      a = &s->facks[v - 1];
    }
  }
  if (!a) {
    if (sp_index_reserve(&s->fack_ix, &s->mem, 1) != 0) {
      return SP_ERR_NOMEM;
    }
    if (s->nfacks == s->capfacks) {
      size_t cap = s->capfacks ? s->capfacks * 2 : 4;
      fack *p = sp_realloc(&s->mem, s->facks, cap * sizeof(*p));
      if (!p) {
        return SP_ERR_NOMEM;
      }
      s->facks = p;
      s->capfacks = cap;
    }
    a = &s->facks[s->nfacks++];
    a->device = *device;
    (void)sp_index_put(&s->fack_ix, &s->mem, dhash, s->nfacks);
  }
  memcpy(a->key, key, SP_PUBLIC_KEY_LEN);
  a->acked = acked;
  memcpy(a->hash, hash, SP_HASH_LEN);
  return 0;
}

static int vt_load_follower_acks(sp_follower_ack_sink sink, void *sink_ctx,
                                 void *user_data) {
  const sp_mem_store *s = user_data;
  size_t i;

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < s->nfacks; ++i) {
    int rv = sink(&s->facks[i].device, s->facks[i].key, s->facks[i].acked,
                  s->facks[i].hash, sink_ctx);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

static int vt_save_follower_address(const sp_uuid *device,
                                    const char *address, void *user_data) {
  sp_mem_store *s = user_data;
  faddr *a = NULL;
  size_t len, pos = 0;
  uint64_t dhash;
  uintptr_t v;

  if (!device || !address) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  len = strlen(address);
  if (len >= SP_PEER_ADDRESS_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  dhash = sp_index_hash_uuid(device);
  while (!a && (v = sp_index_next(&s->faddr_ix, dhash, &pos, NULL)) != 0) {
    if (sp_uuid_equal(&s->faddrs[v - 1].device, device)) {
      a = &s->faddrs[v - 1];
    }
  }
  if (!a) {
    if (sp_index_reserve(&s->faddr_ix, &s->mem, 1) != 0) {
      return SP_ERR_NOMEM;
    }
    if (s->nfaddrs == s->capfaddrs) {
      size_t cap = s->capfaddrs ? s->capfaddrs * 2 : 4;
      faddr *p = sp_realloc(&s->mem, s->faddrs, cap * sizeof(*p));
      if (!p) {
        return SP_ERR_NOMEM;
      }
      s->faddrs = p;
      s->capfaddrs = cap;
    }
    a = &s->faddrs[s->nfaddrs++];
    a->device = *device;
    (void)sp_index_put(&s->faddr_ix, &s->mem, dhash, s->nfaddrs);
  }
  memcpy(a->address, address, len + 1);
  return 0;
}

static int vt_load_follower_addresses(sp_follower_address_sink sink,
                                      void *sink_ctx, void *user_data) {
  const sp_mem_store *s = user_data;
  size_t i;

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < s->nfaddrs; ++i) {
    int rv;
    if (s->faddrs[i].address[0] == '\0') {
      continue; /* forgotten */
    }
    rv = sink(&s->faddrs[i].device, s->faddrs[i].address, sink_ctx);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

/* -- writes from every device (vtable version 3) -- */

static int vt_append(const sp_entry *entries, size_t n, sp_seq *first,
                     void *user_data) {
  sp_mem_store *store = user_data;
  sp_seq latest;
  int rv;

  store->errmsg = NULL;
  if (store->fail_appends) {
    --store->fail_appends;
    store->errmsg = "injected failure (sp_mem_store_fail_appends)";
    return SP_ERR_STORE;
  }
  if (!entries || n == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  latest = log_latest(&store->log);
  if (latest == UINT64_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = log_append(store, entries, n, latest + 1);
  if (rv == 0 && first) {
    *first = latest + 1;
  }
  return rv;
}

static int vt_find_origin(const sp_uuid *device, uint64_t origin_seq,
                          sp_seq *seq, uint64_t *device_high,
                          void *user_data) {
  const mlog *log = &((sp_mem_store *)user_data)->log;
  sp_seq found = 0;
  int rv = 0;

  if (!device) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (origin_seq) {
    found = sp_oidx_find(&log->idx, device, origin_seq);
    if (found == 0 && !sp_oidx_committed(&log->idx, device, origin_seq)) {
      rv = SP_ERR_NOT_FOUND;
    }
  }
  if (seq) {
    *seq = found;
  }
  if (device_high) {
    *device_high = sp_oidx_high(&log->idx, device);
  }
  return rv;
}

static int vt_outbox_put(const sp_entry *entries, size_t n,
                         uint64_t *first_origin, void *user_data) {
  sp_mem_store *store = user_data;
  sp_mobox *box = &store->box;
  uint64_t first = box->next_origin;
  size_t i, linked = 0;
  int rv;

  if (!entries || n == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  for (i = 0; i < n; ++i) {
    if (sp_enc_check_entry(&entries[i]) != 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
  }
  /* The counter never passes SP_MAX_ORIGIN_SEQ (as in the SQLite store). */
  if (first > SP_MAX_ORIGIN_SEQ || n > SP_MAX_ORIGIN_SEQ - first) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = sp_mobox_reserve(&store->mem, box, n);
  for (i = 0; rv == 0 && i < n; ++i) {
    sp_mobox_item it;
    rv = sp_mobox_make(&store->mem, &entries[i], first + i, &it);
    if (rv == 0) {
      /* Above every item (next_origin is): lands at the end. */
      sp_mobox_link(box, &it);
      ++linked;
    }
  }
  if (rv != 0) {
    while (linked > 0) {
      sp_mobox_remove(&store->mem, box, first + --linked);
    }
    return rv;
  }
  box->next_origin = first + n;
  if (!box->has_device) {
    box->device = entries[0].device_id;
    box->has_device = 1;
  }
  if (first_origin) {
    *first_origin = first;
  }
  return 0;
}

static int vt_outbox_read(uint64_t after, size_t max_count,
                          sp_entry_sink sink, void *sink_ctx,
                          void *user_data) {
  sp_mem_store *store = user_data;
  int rv;

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  ++store->reading;
  rv = sp_mobox_read(&store->box, after, max_count, sink, sink_ctx);
  --store->reading;
  return rv;
}

static int vt_outbox_remove(uint64_t origin_seq, void *user_data) {
  sp_mem_store *store = user_data;

  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  return sp_mobox_remove(&store->mem, &store->box, origin_seq);
}

static int vt_outbox_stats(sp_outbox_stats *out, void *user_data) {
  const sp_mobox *box = &((sp_mem_store *)user_data)->box;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  out->items = box->len;
  out->bytes = box->bytes;
  out->next_origin = box->next_origin;
  out->anchored = box->anchored;
  return 0;
}

static int vt_outbox_anchor(const sp_uuid *device, uint64_t device_high,
                            void *user_data) {
  sp_mem_store *store = user_data;

  if (!device) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  return sp_mobox_anchor(&store->box, device, device_high);
}

/* Only the injected failures have a cause worth more than their code
 * (the others are SP_ERR_NOMEM or a caller's mistake). */
static const char *vt_errmsg(void *user_data) {
  const sp_mem_store *store = user_data;
  return store->errmsg;
}

int sp_mem_store_get_vtable_versioned(sp_mem_store *store, int version,
                                      sp_store *dst) {
  sp_store full, *out = &full;
  size_t n = sp_abi_store_size(version);

  if (!dst) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (n == 0) {
    return SP_ERR_VERSION;
  }
  memset(out, 0, sizeof(*out));
  out->version = (unsigned int)version;
  out->user_data = store;
  out->read = vt_read;
  out->bounds = vt_bounds;
  out->hash_at = vt_hash_at;
  out->apply = vt_apply;
  out->state = vt_state;
  out->save_follower_ack = vt_save_follower_ack;
  out->load_follower_acks = vt_load_follower_acks;
  out->save_follower_address = vt_save_follower_address;
  out->load_follower_addresses = vt_load_follower_addresses;
  out->append = vt_append;
  out->find_origin = vt_find_origin;
  out->outbox_put = vt_outbox_put;
  out->outbox_read = vt_outbox_read;
  out->outbox_remove = vt_outbox_remove;
  out->outbox_stats = vt_outbox_stats;
  out->outbox_anchor = vt_outbox_anchor;
  out->errmsg = vt_errmsg;
  /* Every row is chained from the bytes the arena holds (appended here,
   * or applied and snapshot-installed only after the caller verified the
   * chain over them), and the arena is never written again. */
  out->flags = SP_STORE_ROWS_VOUCHED;
  sp_abi_copy(dst, &full, n);
  return 0;
}

/* -- for the snapshot source and sink (sp_mem_store_int.h) -- */

const sp_mem *sp_mem_store_mem_(const sp_mem_store *store) {
  return &store->mem;
}

void **sp_mem_store_snap_(sp_mem_store *store,
                          void (*free_fn)(void *snap, const sp_mem *mem)) {
  store->snap_free = free_fn;
  return &store->snap;
}

void sp_mem_store_base_(const sp_mem_store *store, sp_seq *base,
                        uint8_t base_link[SP_HASH_LEN], uint64_t *var_bytes,
                        const sp_oidx_range **ranges, size_t *nranges) {
  const mlog *log = &store->log;
  uint64_t var = 0;

  *base = log->pruned_through;
  memcpy(base_link, log->pruned_hash, SP_HASH_LEN);
  for (size_t i = 0; i < log->len; ++i) {
    var += log->recs[log->head + i].model_type_len +
           (uint64_t)log->recs[log->head + i].data_len;
  }
  *var_bytes = var;
  *ranges = log->idx.ranges;
  *nranges = log->idx.nranges;
}

int sp_mem_store_load_base_(sp_mem_store *store, sp_seq base,
                            const uint8_t base_link[SP_HASH_LEN],
                            uint64_t epoch, const sp_oidx_range *ranges,
                            size_t nranges) {
  mlog *log = &store->log;
  sp_oidx set;
  int rv;

  if (log->len || log->pruned_through || store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  /* A read-only view of the ranges, for sp_oidx_copy_set. */
  sp_oidx_init(&set, 0);
  set.ranges = (sp_oidx_range *)(uintptr_t)ranges;
  set.nranges = nranges;
  rv = sp_oidx_copy_set(&store->mem, &log->idx, &set);
  if (rv != 0) {
    return rv;
  }
  log->pruned_through = base;
  memcpy(log->pruned_hash, base_link, SP_HASH_LEN);
  log->epoch = epoch;
  return 0;
}
