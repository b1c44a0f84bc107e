/*
 * sp_store_snap_test.c: the reference stores' snapshot sources and sinks
 * (sys/snapshot.h) through their vtables: round trips between the
 * in-memory and SQLite stores, the full-sync outbox rules, isolation from
 * later appends and prunes, reopen, corruption refused at commit with
 * nothing changed (exactly SP_ERR_SNAPSHOT_CORRUPT, also for bytes the
 * store cannot hold), an epoch never lowered by an install, a reused id
 * on the in-memory source, the SQLite side database deleted once empty,
 * resume after reopening, and real crashes (SIGKILL) while chunks are
 * written and inside the install.
 */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/sqlite_store.h"
#include "store/sp_logsnap.h"
#include "store/sp_sqlite_int.h"
#include "store_test_util.h"

static char tmpdir[64];
static unsigned file_counter;

static void rm_rf(const char *path) {
  DIR *d = opendir(path);
  struct dirent *de;
  char p[512];

  while (d && (de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
      continue;
    }
    snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
    if (de->d_type == DT_DIR) {
      rm_rf(p);
    } else {
      unlink(p);
    }
  }
  if (d) {
    closedir(d);
  }
  rmdir(path);
}

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp_store_snap_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  rm_rf(tmpdir);
  return 0;
}

/* ---- one store of either kind ---- */

typedef struct side {
  int sqlite;
  sp_mem_store *m;
  sp_sqlite_store *q;
  char path[256];
  sp_store vt;
  sp_snapshot_source src;
  sp_snapshot_sink sink;
} side;

static void side_vtables(side *s) {
  if (s->sqlite) {
    sp_sqlite_store_get_vtable(s->q, &s->vt);
    assert_int_equal(sp_sqlite_store_snapshot_source(s->q, &s->src), 0);
    assert_int_equal(sp_sqlite_store_snapshot_sink(s->q, &s->sink), 0);
  } else {
    sp_mem_store_get_vtable(s->m, &s->vt);
    sp_mem_store_snapshot_source(s->m, &s->src);
    sp_mem_store_snapshot_sink(s->m, &s->sink);
  }
}

static void side_open(side *s, int sqlite) {
  memset(s, 0, sizeof(*s));
  s->sqlite = sqlite;
  if (sqlite) {
    snprintf(s->path, sizeof(s->path), "%s/s%u.db", tmpdir, file_counter++);
    assert_int_equal(sp_sqlite_store_open(&s->q, s->path, NULL, NULL), 0);
  } else {
    assert_int_equal(sp_mem_store_new(&s->m, NULL), 0);
  }
  side_vtables(s);
}

/* The SQLite store closed and opened again (a process restart). */
static void side_reopen(side *s) {
  assert_true(s->sqlite);
  sp_sqlite_store_close(s->q);
  s->q = NULL;
  assert_int_equal(sp_sqlite_store_open(&s->q, s->path, NULL, NULL), 0);
  side_vtables(s);
}

static void side_close(side *s) {
  sp_sqlite_store_close(s->q);
  sp_mem_store_del(s->m);
  s->q = NULL;
  s->m = NULL;
}

static sp_uuid dev_a(void) {
  sp_uuid u;
  memset(u.bytes, 0xa1, 16);
  return u;
}

static sp_uuid dev_b(void) {
  sp_uuid u;
  memset(u.bytes, 0xb2, 16);
  return u;
}

static uint8_t payload[4096];

/* Entry k of the leader's history: every third one a write of device A
 * (origins 1, 2, ...), every third one of B, the rest without origin. */
static sp_entry lentry(unsigned k) {
  size_t len = (k * 37u) % 300u;
  sp_entry e;

  st_fill(payload, len, k);
  e = st_entry(0, k, payload, len);
  if (k % 3 == 0) {
    e.device_id = dev_a();
    e.origin_seq = k / 3 + 1;
  } else if (k % 3 == 1) {
    e.device_id = dev_b();
    e.origin_seq = k / 3 + 1;
  }
  return e;
}

static void append_k(side *s, unsigned from, unsigned to) {
  for (unsigned k = from; k < to; ++k) {
    sp_entry e = lentry(k);
    sp_seq first = 0;
    assert_int_equal(s->vt.append(&e, 1, &first, s->vt.user_data), 0);
  }
}

static void prune(side *s, sp_seq through) {
  if (s->sqlite) {
    assert_int_equal(sp_sqlite_store_prune(s->q, through), 0);
  } else {
    assert_int_equal(sp_mem_store_prune(s->m, through), 0);
  }
}

/* The leader: 40 entries, epoch 7, pruned through 15 (A's origins 1..5
 * and B's 1..5 only in the committed set now). */
static void make_leader(side *l, int sqlite) {
  side_open(l, sqlite);
  append_k(l, 0, 40);
  assert_int_equal(l->vt.apply(NULL, NULL, 0, 7, l->vt.user_data), 0);
  prune(l, 15);
}

/* The follower's own history, to be discarded: A's origins 3 (in the
 * leader's set), 50 and 51 (not), B's 77; its outbox holds A's origin 1
 * (committed by the leader's history) and 52 (not). */
static void make_follower(side *f, int sqlite) {
  uint8_t prev[SP_HASH_LEN] = {0}, hashes[4 * SP_HASH_LEN];
  static const uint64_t origins[4] = {3, 50, 77, 51};
  sp_entry rows[4], item;
  uint64_t first = 0;

  side_open(f, sqlite);
  item = st_entry(0, 900, NULL, 0);
  item.device_id = dev_a();
  assert_int_equal(f->vt.outbox_put(&item, 1, &first, f->vt.user_data), 0);
  assert_int_equal(first, 1);
  for (unsigned i = 0; i < 4; ++i) {
    rows[i] = st_entry(i + 1, 800 + i, NULL, 0);
    rows[i].device_id = i == 2 ? dev_b() : dev_a();
    rows[i].origin_seq = origins[i];
    assert_int_equal(sp_chain_next(prev, &rows[i], prev), 0);
    memcpy(hashes + i * SP_HASH_LEN, prev, SP_HASH_LEN);
  }
  assert_int_equal(f->vt.apply(rows, hashes, 4, 3, f->vt.user_data), 0);
  item = st_entry(0, 901, NULL, 0);
  item.device_id = dev_a();
  assert_int_equal(f->vt.outbox_put(&item, 1, &first, f->vt.user_data), 0);
  assert_int_equal(first, 52);
}

/* ---- what a store shows ---- */

#define NPROBE 10

typedef struct pic {
  st_snapshot snap;
  int base_rv;
  uint8_t base_hash[SP_HASH_LEN];
  int fo_rv[NPROBE];
  sp_seq fo_seq[NPROBE];
  uint64_t fo_high[NPROBE];
} pic;

static void probe(unsigned i, sp_uuid *d, uint64_t *o) {
  static const uint64_t origins[NPROBE] = {1, 5, 6, 10, 14, 15, 50, 2, 13, 77};
  *d = i < 7 ? dev_a() : dev_b();
  *o = origins[i];
}

static void take_pic(const side *s, pic *p) {
  memset(p, 0, sizeof(*p));
  st_snapshot_take(&s->vt, &p->snap);
  p->base_rv = s->vt.hash_at(p->snap.bounds.pruned_through, p->base_hash,
                             s->vt.user_data);
  for (unsigned i = 0; i < NPROBE; ++i) {
    sp_uuid d;
    uint64_t o;
    probe(i, &d, &o);
    p->fo_rv[i] = s->vt.find_origin(&d, o, &p->fo_seq[i], &p->fo_high[i],
                                    s->vt.user_data);
  }
}

static void assert_pic_equal(const pic *a, const pic *b) {
  assert_true(st_snapshot_equal(&a->snap, &b->snap));
  assert_int_equal(a->base_rv, b->base_rv);
  assert_memory_equal(a->base_hash, b->base_hash, SP_HASH_LEN);
  for (unsigned i = 0; i < NPROBE; ++i) {
    assert_int_equal(a->fo_rv[i], b->fo_rv[i]);
    assert_int_equal(a->fo_seq[i], b->fo_seq[i]);
    assert_int_equal(a->fo_high[i], b->fo_high[i]);
  }
}

typedef struct obox {
  uint64_t origins[16];
  size_t n;
} obox;

static int obox_sink(const sp_entry *e, const uint8_t *hash, void *ctx) {
  obox *b = ctx;
  (void)hash;
  if (b->n == 16) {
    return SP_ERR_NOBUF;
  }
  b->origins[b->n++] = e->origin_seq;
  return 0;
}

static void assert_outbox(const side *f, const uint64_t *want, size_t n,
                          uint64_t next) {
  sp_outbox_stats stats;
  obox b;

  memset(&b, 0, sizeof(b));
  assert_int_equal(f->vt.outbox_read(0, SIZE_MAX, obox_sink, &b,
                                     f->vt.user_data), 0);
  assert_int_equal(b.n, n);
  for (size_t i = 0; i < n; ++i) {
    assert_int_equal(b.origins[i], want[i]);
  }
  assert_int_equal(f->vt.outbox_stats(&stats, f->vt.user_data), 0);
  assert_int_equal(stats.items, n);
  assert_int_equal(stats.next_origin, next);
}

/* ---- moving the bytes ---- */

static const uint8_t snap_id[SP_SNAPSHOT_ID_LEN] = {
    0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0x5b};

/* Read all `desc->total_size` bytes in `chunk`-byte pieces. */
static uint8_t *read_all(const sp_snapshot_source *src, void *h,
                         const sp_snapshot_desc *desc, size_t chunk) {
  uint8_t *buf = malloc(desc->total_size);
  uint64_t off = 0;

  assert_non_null(buf);
  while (off < desc->total_size) {
    size_t n = desc->total_size - off < chunk ? desc->total_size - off
                                              : chunk;
    assert_int_equal(src->read(h, off, buf + off, n, src->user_data), 0);
    off += n;
  }
  return buf;
}

static sp_snapshot_info info_of(const sp_snapshot_desc *d, size_t chunk) {
  sp_snapshot_info info;

  memset(&info, 0, sizeof(info));
  memcpy(info.id, snap_id, SP_SNAPSHOT_ID_LEN);
  info.sequence = d->sequence;
  memcpy(info.hash_at, d->hash_at, SP_HASH_LEN);
  info.epoch = d->epoch;
  info.total_size = d->total_size;
  info.chunk_size = (uint32_t)chunk;
  info.chunk_count = (d->total_size + chunk - 1) / chunk;
  memset(info.digest, 0x77, SP_HASH_LEN);
  return info;
}

/* Begin and write chunks [from, to) of `bytes`. */
static void write_chunks(const side *f, const sp_snapshot_info *info,
                         const uint8_t *bytes, uint64_t from, uint64_t to) {
  for (uint64_t i = from; i < to; ++i) {
    uint64_t off = i * info->chunk_size;
    size_t n = info->total_size - off < info->chunk_size
                   ? (size_t)(info->total_size - off)
                   : info->chunk_size;
    assert_int_equal(f->sink.write_chunk(i, bytes + off, n,
                                         f->sink.user_data), 0);
  }
}

static int feed(const side *f, const sp_snapshot_info *info,
                const uint8_t *bytes) {
  uint64_t have = 99;

  assert_int_equal(f->sink.begin(info, &have, f->sink.user_data), 0);
  assert_int_equal(have, 0);
  write_chunks(f, info, bytes, 0, info->chunk_count);
  return f->sink.commit(f->sink.user_data);
}

/* Open a snapshot of `l`, then append and prune on `l` (which must not
 * show through), read it all in `chunk` pieces. */
static uint8_t *snapshot_bytes(side *l, size_t chunk, sp_snapshot_desc *d) {
  void *h = NULL;
  uint8_t *bytes;

  assert_int_equal(l->src.open(snap_id, d, &h, l->src.user_data), 0);
  append_k(l, 40, 45);
  prune(l, 30);
  bytes = read_all(&l->src, h, d, chunk);
  l->src.close(h, 1, l->src.user_data);
  return bytes;
}

static void round_trip(int lsql, int fsql, size_t chunk) {
  static const uint64_t want_box[3] = {50, 51, 52};
  sp_snapshot_desc d;
  sp_snapshot_info info;
  side l, f;
  pic before, after;
  uint64_t have;
  uint8_t *bytes;

  make_leader(&l, lsql);
  make_follower(&f, fsql);
  take_pic(&l, &before);
  bytes = snapshot_bytes(&l, chunk, &d);
  assert_int_equal(d.sequence, 40);
  assert_int_equal(d.epoch, 7);
  assert_memory_equal(d.hash_at, before.snap.state.head_hash, SP_HASH_LEN);
  assert_int_equal(f.sink.pending(&info, &have, f.sink.user_data),
                   SP_ERR_NOT_FOUND);
  info = info_of(&d, chunk);
  assert_int_equal(feed(&f, &info, bytes), 0);
  assert_int_equal(f.sink.pending(&info, &have, f.sink.user_data),
                   SP_ERR_NOT_FOUND);
  take_pic(&f, &after);
  assert_pic_equal(&before, &after);
  assert_int_equal(after.snap.state.applied, 40);
  assert_int_equal(after.snap.state.epoch, 7);
  assert_int_equal(after.snap.bounds.pruned_through, 15);
  assert_int_equal(after.snap.count, 25);
  /* Retained, pruned and never-held origins answer as on the leader. */
  assert_int_equal(after.fo_rv[0], 0); /* A 1: pruned */
  assert_int_equal(after.fo_seq[0], 0);
  assert_int_equal(after.fo_rv[3], 0); /* A 10: retained */
  assert_int_equal(after.fo_seq[3], 28);
  assert_int_equal(after.fo_rv[5], SP_ERR_NOT_FOUND); /* A 15: never */
  assert_int_equal(after.fo_rv[6], SP_ERR_NOT_FOUND); /* A 50: discarded */
  assert_int_equal(after.fo_high[0], 14);
  /* Outbox: 1 retired (committed in the new history), 50 and 51 put
   * back (the new history lost them), 52 kept, next above all. */
  assert_outbox(&f, want_box, 3, 53);
  if (fsql) {
    uint8_t digest[SP_HASH_LEN];
    side_reopen(&f);
    assert_int_equal(sp_sqlite_store_verify(f.q, digest), 0);
    assert_memory_equal(digest, d.hash_at, SP_HASH_LEN);
    take_pic(&f, &after);
    assert_pic_equal(&before, &after);
    assert_outbox(&f, want_box, 3, 53);
  }
  free(bytes);
  side_close(&l);
  side_close(&f);
}

static void test_mem_to_mem(void **state) {
  (void)state;
  round_trip(0, 0, 97);
  round_trip(0, 0, 4096);
}

static void test_sqlite_to_sqlite(void **state) {
  (void)state;
  round_trip(1, 1, 97);
  round_trip(1, 1, 1 << 16);
}

static void test_mem_to_sqlite(void **state) {
  (void)state;
  round_trip(0, 1, 500);
}

static void test_sqlite_to_mem(void **state) {
  (void)state;
  round_trip(1, 0, 333);
}

/* An empty log, and one pruned to its end (no rows, ranges only). */
static void test_empty_and_pruned_out(void **state) {
  sp_snapshot_desc d;
  sp_snapshot_info info;
  side l, f;
  pic before, after;
  void *h;
  uint8_t *bytes;

  (void)state;
  for (int k = 0; k < 4; ++k) {
    side_open(&l, k & 1);
    side_open(&f, (k >> 1) & 1);
    if (k >= 2) {
      append_k(&l, 0, 9);
      prune(&l, 9);
    }
    take_pic(&l, &before);
    assert_int_equal(l.src.open(snap_id, &d, &h, l.src.user_data), 0);
    bytes = read_all(&l.src, h, &d, 64);
    l.src.close(h, 1, l.src.user_data);
    info = info_of(&d, 64);
    assert_int_equal(feed(&f, &info, bytes), 0);
    take_pic(&f, &after);
    assert_pic_equal(&before, &after);
    free(bytes);
    side_close(&l);
    side_close(&f);
  }
}

/* Closed with forget 0 and reopened (also by a new source object on the
 * same store, as a restarted leader): the same bytes. */
static void test_reopen_same_bytes(void **state) {
  (void)state;
  for (int sql = 0; sql < 2; ++sql) {
    sp_snapshot_desc d, d2;
    side l;
    void *h;
    uint8_t *a, *b;

    make_leader(&l, sql);
    assert_int_equal(l.src.reopen(snap_id, &d, &h, l.src.user_data),
                     SP_ERR_NOT_FOUND);
    assert_int_equal(l.src.open(snap_id, &d, &h, l.src.user_data), 0);
    a = read_all(&l.src, h, &d, 1000);
    l.src.close(h, 0, l.src.user_data);
    append_k(&l, 40, 42);
    side_vtables(&l);
    assert_int_equal(l.src.reopen(snap_id, &d2, &h, l.src.user_data), 0);
    assert_memory_equal(&d, &d2, sizeof(d));
    b = read_all(&l.src, h, &d2, 777);
    assert_memory_equal(a, b, d.total_size);
    free(b);
    /* Out of order reads give the same bytes too. */
    b = malloc(d.total_size);
    for (uint64_t off = d.total_size; off > 0;) {
      size_t n = off < 50 ? (size_t)off : 50;
      off -= n;
      assert_int_equal(l.src.read(h, off, b + off, n, l.src.user_data), 0);
    }
    assert_memory_equal(a, b, d.total_size);
    l.src.close(h, 1, l.src.user_data);
    assert_int_equal(l.src.reopen(snap_id, &d2, &h, l.src.user_data),
                     SP_ERR_NOT_FOUND);
    free(a);
    free(b);
    side_close(&l);
  }
}

/* A changed byte anywhere is refused at commit; nothing changes and the
 * chunks stay pending. */
static void corrupt_case(int fsql, const uint8_t *bytes,
                         const sp_snapshot_desc *d, size_t step,
                         size_t chunk) {
  sp_snapshot_info info = info_of(d, chunk), got;
  uint8_t *bad = malloc(d->total_size);
  static const uint64_t box[2] = {1, 52};
  side f;
  pic before, after;
  uint64_t have;

  make_follower(&f, fsql);
  take_pic(&f, &before);
  for (uint64_t pos = 0; pos < d->total_size; pos += step) {
    memcpy(bad, bytes, d->total_size);
    bad[pos] ^= (uint8_t)(1u << (pos % 8));
    assert_int_equal(f.sink.abort(f.sink.user_data), 0);
    assert_int_equal(feed(&f, &info, bad), SP_ERR_SNAPSHOT_CORRUPT);
    assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data), 0);
    assert_int_equal(have, info.chunk_count);
    take_pic(&f, &after);
    assert_pic_equal(&before, &after);
    assert_outbox(&f, box, 2, 53);
  }
  /* One byte too many or too few. */
  info.total_size = d->total_size - 1;
  info.chunk_count = (info.total_size + chunk - 1) / chunk;
  assert_int_equal(f.sink.abort(f.sink.user_data), 0);
  assert_int_equal(feed(&f, &info, bytes), SP_ERR_SNAPSHOT_CORRUPT);
  take_pic(&f, &after);
  assert_pic_equal(&before, &after);
  /* Good bytes under a manifest that names another epoch. */
  info = info_of(d, chunk);
  info.epoch = d->epoch + 1;
  assert_int_equal(f.sink.abort(f.sink.user_data), 0);
  assert_int_equal(feed(&f, &info, bytes), SP_ERR_SNAPSHOT_CORRUPT);
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data), 0);
  assert_int_equal(have, info.chunk_count);
  take_pic(&f, &after);
  assert_pic_equal(&before, &after);
  free(bad);
  side_close(&f);
}

static void test_corrupt_refused(void **state) {
  sp_snapshot_desc d;
  side l;
  uint8_t *bytes;

  (void)state;
  make_leader(&l, 0);
  bytes = snapshot_bytes(&l, 4096, &d);
  corrupt_case(0, bytes, &d, 1, 128);    /* every byte */
  corrupt_case(1, bytes, &d, 181, 1024); /* a spread, on SQLite */
  free(bytes);
  side_close(&l);
}

static int no_ranges(uint64_t from, sp_ls_range_sink sink, void *sink_ctx,
                     void *ctx) {
  (void)from;
  (void)sink;
  (void)sink_ctx;
  (void)ctx;
  return 0;
}

static int no_rows(sp_seq after, sp_entry_sink sink, void *sink_ctx,
                   void *ctx) {
  (void)after;
  (void)sink;
  (void)sink_ctx;
  (void)ctx;
  return 0;
}

/* Well-formed bytes of a log pruned to its end at `seq`: no ranges, no
 * rows. */
static uint8_t *empty_at(sp_seq seq, sp_snapshot_desc *d) {
  sp_ls_source src = {no_ranges, no_rows, NULL};
  sp_ls_writer *w = NULL;
  sp_ls_header h;
  uint8_t *bytes;

  memset(&h, 0, sizeof(h));
  h.sequence = seq;
  h.base = seq;
  memset(h.hash_at, 0x42, SP_HASH_LEN);
  memset(h.base_link, 0x42, SP_HASH_LEN);
  h.epoch = 5;
  memset(d, 0, sizeof(*d));
  d->sequence = seq;
  memcpy(d->hash_at, h.hash_at, SP_HASH_LEN);
  d->epoch = h.epoch;
  d->total_size = sp_ls_total_size(0, 0, 0);
  assert_int_equal(sp_ls_writer_new(&w, &h, d->total_size, &src, 0, NULL),
                   0);
  bytes = malloc(d->total_size);
  assert_non_null(bytes);
  assert_int_equal(sp_ls_writer_read(w, 0, bytes, d->total_size), 0);
  sp_ls_writer_del(w);
  return bytes;
}

/* Bytes the format allows but the SQLite file cannot hold (S above
 * INT64_MAX) can never install: SP_ERR_SNAPSHOT_CORRUPT, nothing changed,
 * the chunks kept; the same bytes at a smaller S install. */
static void test_unholdable_refused(void **state) {
  static const uint64_t box[2] = {1, 52};
  sp_snapshot_desc d;
  sp_snapshot_info info;
  uint64_t have = 0;
  pic before, after;
  side f;
  uint8_t *bytes;

  (void)state;
  make_follower(&f, 1);
  take_pic(&f, &before);
  bytes = empty_at((sp_seq)INT64_MAX + 1, &d);
  info = info_of(&d, 64);
  assert_int_equal(feed(&f, &info, bytes), SP_ERR_SNAPSHOT_CORRUPT);
  assert_int_equal(f.sink.pending(&info, &have, f.sink.user_data), 0);
  assert_int_equal(have, info.chunk_count);
  take_pic(&f, &after);
  assert_pic_equal(&before, &after);
  assert_outbox(&f, box, 2, 53);
  free(bytes);
  bytes = empty_at(1000, &d);
  info = info_of(&d, 64);
  assert_int_equal(f.sink.abort(f.sink.user_data), 0);
  assert_int_equal(feed(&f, &info, bytes), 0);
  take_pic(&f, &after);
  assert_int_equal(after.snap.state.applied, 1000);
  free(bytes);
  side_close(&f);
}

/* A snapshot whose epoch is below the follower's never lowers it (an
 * epoch never goes back, protocol §14.8); a higher one raises it. */
static void test_epoch_not_lowered(void **state) {
  (void)state;
  for (int k = 0; k < 4; ++k) {
    sp_snapshot_desc d;
    sp_snapshot_info info;
    sp_store_state st;
    side l, f;
    uint8_t *bytes;

    make_leader(&l, k & 1);
    make_follower(&f, (k >> 1) & 1);
    assert_int_equal(f.vt.apply(NULL, NULL, 0, 9, f.vt.user_data), 0);
    bytes = snapshot_bytes(&l, 1000, &d);
    assert_int_equal(d.epoch, 7);
    info = info_of(&d, 1000);
    assert_int_equal(feed(&f, &info, bytes), 0);
    assert_int_equal(f.vt.state(&st, f.vt.user_data), 0);
    assert_int_equal(st.applied, 40);
    assert_int_equal(st.epoch, 9);
    if (f.sqlite) {
      side_reopen(&f);
      assert_int_equal(f.vt.state(&st, f.vt.user_data), 0);
      assert_int_equal(st.epoch, 9);
    }
    free(bytes);
    side_close(&l);
    side_close(&f);
  }
}

/* Opening an id the in-memory source keeps while that image is still
 * open makes a new snapshot without freeing the one in use: the old
 * handle reads its own bytes until its close. */
static void test_mem_reused_id_open(void **state) {
  sp_snapshot_desc d1, d2;
  void *h1 = NULL, *h2 = NULL;
  uint8_t *a, *b;
  side l;

  (void)state;
  make_leader(&l, 0);
  assert_int_equal(l.src.open(snap_id, &d1, &h1, l.src.user_data), 0);
  a = read_all(&l.src, h1, &d1, 100);
  append_k(&l, 40, 44);
  assert_int_equal(l.src.open(snap_id, &d2, &h2, l.src.user_data), 0);
  assert_int_equal(d2.sequence, 44);
  b = read_all(&l.src, h1, &d1, 77);
  assert_memory_equal(a, b, d1.total_size);
  l.src.close(h1, 0, l.src.user_data);
  free(b);
  b = read_all(&l.src, h2, &d2, 100);
  l.src.close(h2, 0, l.src.user_data);
  /* The id now names the new image. */
  assert_int_equal(l.src.reopen(snap_id, &d1, &h1, l.src.user_data), 0);
  assert_memory_equal(&d1, &d2, sizeof(d1));
  l.src.close(h1, 1, l.src.user_data);
  free(a);
  free(b);
  side_close(&l);
}

/* The SQLite sink resumes after the store is closed and reopened. */
static void test_sqlite_resume(void **state) {
  sp_snapshot_desc d;
  sp_snapshot_info info, got;
  side l, f;
  pic before, after;
  uint64_t have = 0;
  uint8_t *bytes;

  (void)state;
  make_leader(&l, 1);
  take_pic(&l, &before);
  bytes = snapshot_bytes(&l, 256, &d);
  info = info_of(&d, 256);
  make_follower(&f, 1);
  assert_int_equal(f.sink.begin(&info, &have, f.sink.user_data), 0);
  write_chunks(&f, &info, bytes, 0, 5);
  side_reopen(&f);
  memset(&got, 0, sizeof(got));
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data), 0);
  assert_memory_equal(&got, &info, sizeof(info));
  assert_int_equal(have, 5);
  assert_int_equal(f.sink.begin(&info, &have, f.sink.user_data), 0);
  assert_int_equal(have, 5);
  /* Only the next chunk is accepted. */
  assert_int_not_equal(f.sink.write_chunk(7, bytes, 256, f.sink.user_data),
                       0);
  write_chunks(&f, &info, bytes, 5, info.chunk_count);
  assert_int_equal(f.sink.commit(f.sink.user_data), 0);
  take_pic(&f, &after);
  assert_pic_equal(&before, &after);
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data),
                   SP_ERR_NOT_FOUND);
  free(bytes);
  side_close(&l);
  side_close(&f);
}

/* ---- real crashes ---- */

static void kill_self(uint64_t rows) {
  if (rows == 12) {
    raise(SIGKILL);
  }
}

/* In a child: open the follower's file, write chunks [0, n) (all: then
 * commit with the hook armed), and die by SIGKILL. */
static void crash_child(const char *path, const sp_snapshot_info *info,
                        const uint8_t *bytes, uint64_t n, int in_commit) {
  pid_t pid = fork();
  int status = 0;

  assert_true(pid >= 0);
  if (pid == 0) {
    sp_sqlite_store *q = NULL;
    sp_snapshot_sink sink;
    uint64_t have = 0;
    if (sp_sqlite_store_open(&q, path, NULL, NULL) != 0 ||
        sp_sqlite_store_snapshot_sink(q, &sink) != 0 ||
        sink.begin(info, &have, sink.user_data) != 0) {
      _exit(3);
    }
    for (uint64_t i = have; i < n; ++i) {
      uint64_t off = i * info->chunk_size;
      size_t len = info->total_size - off < info->chunk_size
                       ? (size_t)(info->total_size - off)
                       : info->chunk_size;
      if (sink.write_chunk(i, bytes + off, len, sink.user_data) != 0) {
        _exit(4);
      }
    }
    if (in_commit) {
      sp_sqlite_snap_set_test_hook(kill_self);
      sink.commit(sink.user_data);
      _exit(5); /* the hook did not fire */
    }
    raise(SIGKILL);
    _exit(6);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void test_crash(void **state) {
  static const uint64_t box[2] = {1, 52};
  sp_snapshot_desc d;
  sp_snapshot_info info, got;
  side l, f;
  pic lpic, fpic, now;
  uint64_t have = 0;
  uint8_t *bytes;

  (void)state;
  make_leader(&l, 1);
  take_pic(&l, &lpic);
  bytes = snapshot_bytes(&l, 200, &d);
  info = info_of(&d, 200);
  make_follower(&f, 1);
  take_pic(&f, &fpic);
  side_close(&f);

  /* Killed after 4 chunks: old state, 4 chunks pending. */
  crash_child(f.path, &info, bytes, 4, 0);
  assert_int_equal(sp_sqlite_store_open(&f.q, f.path, NULL, NULL), 0);
  side_vtables(&f);
  take_pic(&f, &now);
  assert_pic_equal(&fpic, &now);
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data), 0);
  assert_memory_equal(&got, &info, sizeof(info));
  assert_int_equal(have, 4);
  sp_sqlite_store_close(f.q);
  f.q = NULL;

  /* Killed inside the install (after 12 rows were inserted): old state,
   * every chunk still pending. */
  crash_child(f.path, &info, bytes, info.chunk_count, 1);
  assert_int_equal(sp_sqlite_store_open(&f.q, f.path, NULL, NULL), 0);
  side_vtables(&f);
  take_pic(&f, &now);
  assert_pic_equal(&fpic, &now);
  assert_outbox(&f, box, 2, 53);
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data), 0);
  assert_int_equal(have, info.chunk_count);

  /* The survivor commits: exactly the snapshot's state. */
  assert_int_equal(f.sink.begin(&info, &have, f.sink.user_data), 0);
  assert_int_equal(have, info.chunk_count);
  assert_int_equal(f.sink.commit(f.sink.user_data), 0);
  take_pic(&f, &now);
  assert_pic_equal(&lpic, &now);
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data),
                   SP_ERR_NOT_FOUND);
  free(bytes);
  side_close(&l);
  side_close(&f);
}

/* A crash after the install but before the side database was cleared:
 * `pending` recognises the installed id and reports nothing (never
 * installs an old snapshot over a log that moved on). */
static void test_installed_not_pending(void **state) {
  sp_snapshot_desc d;
  sp_snapshot_info info, got;
  side l, f;
  uint64_t have = 0;
  uint8_t *bytes;

  (void)state;
  make_leader(&l, 0);
  bytes = snapshot_bytes(&l, 512, &d);
  info = info_of(&d, 512);
  make_follower(&f, 1);
  assert_int_equal(feed(&f, &info, bytes), 0);
  /* Put the side rows back as if the cleanup had not run. */
  assert_int_equal(f.sink.begin(&info, &have, f.sink.user_data), 0);
  write_chunks(&f, &info, bytes, 0, 2);
  side_reopen(&f);
  assert_int_equal(f.sink.pending(&got, &have, f.sink.user_data),
                   SP_ERR_NOT_FOUND);
  free(bytes);
  side_close(&l);
  side_close(&f);
}

/* Leftovers: .part files go when a source is made; .snap files stay
 * until they are a day old. */
static void test_sqlite_sweep(void **state) {
  char dir[300], p1[400], p2[400];
  sp_snapshot_source src;
  struct stat st;
  FILE *fp;
  side l;

  (void)state;
  make_leader(&l, 1);
  snprintf(dir, sizeof(dir), "%s-snapshots", l.path);
  mkdir(dir, 0700);
  snprintf(p1, sizeof(p1), "%s/00.part", dir);
  snprintf(p2, sizeof(p2), "%s/01.snap", dir);
  fp = fopen(p1, "w");
  fclose(fp);
  fp = fopen(p2, "w");
  fclose(fp);
  assert_int_equal(sp_sqlite_store_snapshot_source(l.q, &src), 0);
  assert_int_not_equal(stat(p1, &st), 0);
  assert_int_equal(stat(p2, &st), 0);
  side_close(&l);
}

/* Bytes on disk of the SQLite follower's side database (0: none). */
static int64_t snapin_size(const side *f) {
  static const char *const tails[] = {"-snapin", "-snapin-wal"};
  int64_t total = 0;

  for (size_t i = 0; i < 2; ++i) {
    char p[300];
    struct stat st;
    snprintf(p, sizeof(p), "%s%s", f->path, tails[i]);
    if (stat(p, &st) == 0) {
      total += (int64_t)st.st_size;
    }
  }
  return total;
}

/* Megabytes, so the SQLite source prepares its file in many steps and
 * the in-memory writer seeks between its seek points: SQLite to SQLite in
 * 1 MiB chunks, and the in-memory source read backwards after a reopen. */
static void test_large(void **state) {
  static uint8_t big[60000];
  for (int sql = 0; sql < 2; ++sql) {
    sp_snapshot_desc d, d2;
    sp_snapshot_info info;
    uint64_t have0 = 0;
    side l, f;
    pic before, after;
    void *h;
    uint8_t *a, *b;

    (void)state;
    side_open(&l, sql);
    for (unsigned k = 0; k < 120; ++k) {
      size_t len = sizeof(big) - k * 7;
      sp_entry e;
      sp_seq first;
      st_fill(big, len, k);
      e = st_entry(0, k, big, len);
      e.device_id = dev_b();
      e.origin_seq = k + 1;
      assert_int_equal(l.vt.append(&e, 1, &first, l.vt.user_data), 0);
    }
    prune(&l, 7);
    take_pic(&l, &before);
    assert_int_equal(l.src.open(snap_id, &d, &h, l.src.user_data), 0);
    assert_true(d.total_size > (uint64_t)6 << 20);
    a = read_all(&l.src, h, &d, 1 << 20);
    l.src.close(h, 0, l.src.user_data);
    assert_int_equal(l.src.reopen(snap_id, &d2, &h, l.src.user_data), 0);
    b = malloc(d.total_size);
    for (uint64_t off = d.total_size; off > 0;) {
      size_t n = off < 300000 ? (size_t)off : 300000;
      off -= n;
      assert_int_equal(l.src.read(h, off, b + off, n, l.src.user_data), 0);
    }
    assert_memory_equal(a, b, d.total_size);
    l.src.close(h, 1, l.src.user_data);
    side_open(&f, 1);
    info = info_of(&d, 1 << 20);
    if (!sql) {
      /* An abort gives the side database's space back too. */
      uint64_t have = 0;
      assert_int_equal(f.sink.begin(&info, &have, f.sink.user_data), 0);
      write_chunks(&f, &info, a, 0, info.chunk_count);
      assert_true(snapin_size(&f) > (int64_t)6 << 20);
      assert_int_equal(f.sink.abort(f.sink.user_data), 0);
      assert_true(snapin_size(&f) < (int64_t)1 << 20);
    }
    assert_int_equal(f.sink.begin(&info, &have0, f.sink.user_data), 0);
    write_chunks(&f, &info, a, 0, info.chunk_count);
    assert_true(snapin_size(&f) > (int64_t)6 << 20);
    assert_int_equal(f.sink.commit(f.sink.user_data), 0);
    /* The side database does not keep the snapshot's size (R8). */
    assert_true(snapin_size(&f) < (int64_t)1 << 20);
    assert_int_equal(f.sink.pending(&info, &have0, f.sink.user_data),
                     SP_ERR_NOT_FOUND);
    take_pic(&f, &after);
    assert_pic_equal(&before, &after);
    free(a);
    free(b);
    side_close(&l);
    side_close(&f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mem_to_mem),
      cmocka_unit_test(test_sqlite_to_sqlite),
      cmocka_unit_test(test_mem_to_sqlite),
      cmocka_unit_test(test_sqlite_to_mem),
      cmocka_unit_test(test_empty_and_pruned_out),
      cmocka_unit_test(test_reopen_same_bytes),
      cmocka_unit_test(test_corrupt_refused),
      cmocka_unit_test(test_sqlite_resume),
      cmocka_unit_test(test_crash),
      cmocka_unit_test(test_installed_not_pending),
      cmocka_unit_test(test_sqlite_sweep),
      cmocka_unit_test(test_large),
      cmocka_unit_test(test_unholdable_refused),
      cmocka_unit_test(test_epoch_not_lowered),
      cmocka_unit_test(test_mem_reused_id_open),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
