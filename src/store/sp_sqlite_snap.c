/*
 * sp_sqlite_snap.c: the SQLite store's snapshot source and sink
 * (sys/snapshot.h), in log snapshot v1 (sp_logsnap.h).
 *
 * Source: a second, read-only connection holds one read transaction (WAL:
 * the store's own connection keeps appending, and nothing it commits
 * afterwards is visible to it), and a streaming writer turns its rows into
 * the file <path>-snapshots/<id hex>.part as far as reads reach.  When the
 * last byte is written the file is synced and renamed .snap and the read
 * transaction ends; reads are then plain preads, and `reopen` after a
 * restart opens the .snap file again.
 *
 * Sink: the pending info and chunks sit in a side database <path>-snapin
 * (WAL, synchronous=FULL, one transaction per call).  Commit streams the
 * chunks through the parser straight into one write transaction on the
 * store's connection; installed snapshot ids are recorded there too
 * (sync_snapshot_installed) so that a crash between the install and the
 * side database's cleanup is recognised by `pending`, never installed
 * twice.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sp_abi.h"
#include "sp_logsnap.h"
#include "sp_mem_int.h"
#include "sp_sqlite_int.h"
#include "sp_sqlite_worker.h"

/* Kept .snap files older than this are deleted when a source is made. */
#define SNAP_KEEP_SECONDS (24 * 60 * 60)
/* Bytes prepared per write to the .part file. */
#define PREP_BUF ((size_t)256 * 1024)
/* The .part file is synced as it grows, so the final fsync before the
 * rename (in the read that prepares the last bytes) never has more than
 * this much to write back: no step blocks on gigabytes of dirty pages. */
#define SYNC_EVERY ((uint64_t)16 << 20)

static void (*test_hook)(uint64_t rows);

void sp_sqlite_snap_set_test_hook(void (*fn)(uint64_t rows)) {
  test_hook = fn;
}

/* The store's file name, or NULL for an in-memory database. */
static const char *db_path(sp_sqlite_store *s) {
  const char *p = sqlite3_db_filename(s->db, "main");
  return p && *p ? p : NULL;
}

/* sp_malloc'd "<path><suffix>". */
static char *path_join(const sp_mem *mem, const char *path,
                       const char *suffix) {
  size_t a = strlen(path), b = strlen(suffix);
  char *p = sp_malloc(mem, a + b + 1);

  if (p) {
    memcpy(p, path, a);
    memcpy(p + a, suffix, b + 1);
  }
  return p;
}

/* sp_malloc'd "<db>-snapshots/<id hex><ext>". */
static char *snap_file(sp_sqlite_store *s, const uint8_t *id,
                       const char *ext) {
  char name[1 + 2 * SP_SNAPSHOT_ID_LEN + 1 + 8];
  char hex[2 * SP_SNAPSHOT_ID_LEN + 1];
  char *dir, *p;

  sodium_bin2hex(hex, sizeof(hex), id, SP_SNAPSHOT_ID_LEN);
  snprintf(name, sizeof(name), "/%s%s", hex, ext);
  dir = path_join(&s->mem, db_path(s), "-snapshots");
  if (!dir) {
    return NULL;
  }
  p = path_join(&s->mem, dir, name);
  sp_free(&s->mem, dir);
  return p;
}

static int sync_dir(const char *file) {
  const char *slash = strrchr(file, '/');
  char dir[4096];
  int fd, rv;

  if (!slash || (size_t)(slash - file) >= sizeof(dir)) {
    return 0;
  }
  memcpy(dir, file, (size_t)(slash - file));
  dir[slash - file] = '\0';
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return SP_ERR_IO;
  }
  rv = fsync(fd) == 0 ? 0 : SP_ERR_IO;
  close(fd);
  return rv;
}

/* -- source -- */

typedef struct ssnap {
  sp_sqlite_store *store;
  char *part;
  char *snap;
  int fd;
  uint64_t prepared;
  uint64_t synced; /* bytes of the .part known durable */
  int complete;
  sp_snapshot_desc desc;
  /* Until complete: the read connection and the writer over it. */
  sqlite3 *rd;
  sqlite3_stmt *q_rows;
  sqlite3_stmt *q_ranges;
  sp_ls_writer *w;
  uint8_t *buf;
} ssnap;

static void end_reading(ssnap *h) {
  sqlite3_finalize(h->q_rows);
  sqlite3_finalize(h->q_ranges);
  h->q_rows = h->q_ranges = NULL;
  if (h->rd) {
    sqlite3_exec(h->rd, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(h->rd);
    h->rd = NULL;
  }
  sp_ls_writer_del(h->w);
  h->w = NULL;
  sp_free(&h->store->mem, h->buf);
  h->buf = NULL;
}

static void ssnap_free(ssnap *h) {
  sp_mem m = h->store->mem;

  end_reading(h);
  if (h->fd >= 0) {
    close(h->fd);
  }
  sp_free(&m, h->part);
  sp_free(&m, h->snap);
  sp_free(&m, h);
}

static int rd_ranges(uint64_t from, sp_ls_range_sink sink, void *sink_ctx,
                     void *ctx) {
  ssnap *h = ctx;
  sqlite3_stmt *q = h->q_ranges;
  int rc, rv = 0;

  sqlite3_bind_int64(q, 1, (sqlite3_int64)from);
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    sp_oidx_range r;
    const void *d = sqlite3_column_blob(q, 0);
    if (!d || sqlite3_column_bytes(q, 0) != 16) {
      rv = SP_ERR_STORE_CORRUPT;
      break;
    }
    memcpy(r.device.bytes, d, 16);
    r.lo = (uint64_t)sqlite3_column_int64(q, 1);
    r.hi = (uint64_t)sqlite3_column_int64(q, 2);
    rv = sink(&r, sink_ctx);
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(q);
  return rv < 0 ? rv : 0;
}

static int rd_rows(sp_seq after, sp_entry_sink sink, void *sink_ctx,
                   void *ctx) {
  ssnap *h = ctx;
  sqlite3_stmt *q = h->q_rows;
  int rc, rv = 0;

  sqlite3_bind_int64(q, 1, (sqlite3_int64)after);
  sqlite3_bind_int64(q, 2, (sqlite3_int64)h->desc.sequence);
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const void *hash;
    sp_entry e;

    memset(&e, 0, sizeof(e));
    e.sequence = (sp_seq)sqlite3_column_int64(q, 0);
    rv = sp_sqlite_column_entry(q, &e);
    hash = sqlite3_column_blob(q, 8);
    if (rv == 0 && (!hash || sqlite3_column_bytes(q, 8) != SP_HASH_LEN)) {
      rv = SP_ERR_STORE_CORRUPT;
    }
    if (rv != 0) {
      break;
    }
    e.origin_seq = (uint64_t)sqlite3_column_int64(q, 9);
    rv = sink(&e, hash, sink_ctx);
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(q);
  return rv < 0 ? rv : 0;
}

static int query_row(sqlite3 *db, const char *sql, sqlite3_stmt **out) {
  if (sqlite3_prepare_v2(db, sql, -1, out, NULL) != SQLITE_OK ||
      sqlite3_step(*out) != SQLITE_ROW) {
    sqlite3_finalize(*out);
    *out = NULL;
    return SP_ERR_STORE;
  }
  return 0;
}

/* Read the header of the log at its latest sequence inside h->rd's read
 * transaction (begun here), and the total size. */
static int read_view(ssnap *h, sp_ls_header *hd) {
  sqlite3_stmt *q = NULL;
  uint64_t var;
  int rv;

  if (sqlite3_exec(h->rd, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
    return SP_ERR_STORE;
  }
  memset(hd, 0, sizeof(*hd));
  /* The first read fixes the transaction's view. */
  rv = query_row(h->rd,
                 "SELECT applied, head_hash, epoch, pruned_through,"
                 " pruned_hash FROM sync_log_meta WHERE id = 1",
                 &q);
  if (rv != 0) {
    return rv;
  }
  hd->sequence = (sp_seq)sqlite3_column_int64(q, 0);
  hd->epoch = (uint64_t)sqlite3_column_int64(q, 2);
  hd->base = (sp_seq)sqlite3_column_int64(q, 3);
  if (sqlite3_column_bytes(q, 1) != SP_HASH_LEN ||
      sqlite3_column_bytes(q, 4) != SP_HASH_LEN) {
    sqlite3_finalize(q);
    return SP_ERR_STORE_CORRUPT;
  }
  memcpy(hd->hash_at, sqlite3_column_blob(q, 1), SP_HASH_LEN);
  memcpy(hd->base_link, sqlite3_column_blob(q, 4), SP_HASH_LEN);
  sqlite3_finalize(q);
  rv = query_row(h->rd,
                 "SELECT COUNT(*), COALESCE(SUM(length(CAST(model_type AS"
                 " BLOB)) + length(data)), 0) FROM sync_log",
                 &q);
  if (rv != 0) {
    return rv;
  }
  hd->row_count = (uint64_t)sqlite3_column_int64(q, 0);
  var = (uint64_t)sqlite3_column_int64(q, 1);
  sqlite3_finalize(q);
  rv = query_row(h->rd, "SELECT COUNT(*) FROM sync_origin_range", &q);
  if (rv != 0) {
    return rv;
  }
  hd->range_count = (uint64_t)sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  h->desc.sequence = hd->sequence;
  memcpy(h->desc.hash_at, hd->hash_at, SP_HASH_LEN);
  h->desc.epoch = hd->epoch;
  h->desc.total_size = sp_ls_total_size(hd->range_count, hd->row_count, var);
  return h->desc.total_size == UINT64_MAX ? SP_ERR_STORE : 0;
}

static int src_open(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                    sp_snapshot_desc *out, void **handle, void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_ls_header hd;
  sp_ls_source src;
  char *dir;
  ssnap *h;
  int rv;

  if (!id || !out || !handle || !db_path(s)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  /* Batches the apply thread still holds go into the file first. */
  rv = sp_sqlite_worker_sync(s);
  if (rv != 0) {
    return rv;
  }
  h = sp_calloc(&s->mem, 1, sizeof(*h));
  if (!h) {
    return SP_ERR_NOMEM;
  }
  h->store = s;
  h->fd = -1;
  h->part = snap_file(s, id, ".part");
  h->snap = snap_file(s, id, ".snap");
  dir = path_join(&s->mem, db_path(s), "-snapshots");
  h->buf = sp_malloc(&s->mem, PREP_BUF);
  if (!h->part || !h->snap || !dir || !h->buf) {
    sp_free(&s->mem, dir);
    ssnap_free(h);
    return SP_ERR_NOMEM;
  }
  rv = mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : SP_ERR_IO;
  sp_free(&s->mem, dir);
  if (rv == 0 && sqlite3_open_v2(db_path(s), &h->rd,
                                 SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                                 NULL) != SQLITE_OK) {
    rv = SP_ERR_STORE;
  }
  if (rv == 0) {
    sqlite3_busy_timeout(h->rd, 5000);
    rv = read_view(h, &hd);
  }
  if (rv == 0 &&
      (sqlite3_prepare_v2(h->rd,
                          "SELECT sequence, device_id, timestamp, model_type,"
                          " record_id, change_type, version, data, hash,"
                          " origin_seq FROM sync_log WHERE sequence > ?1"
                          " AND sequence <= ?2 ORDER BY sequence",
                          -1, &h->q_rows, NULL) != SQLITE_OK ||
       sqlite3_prepare_v2(h->rd,
                          "SELECT device, lo, hi FROM sync_origin_range"
                          " ORDER BY device, lo LIMIT -1 OFFSET ?1",
                          -1, &h->q_ranges, NULL) != SQLITE_OK)) {
    rv = SP_ERR_STORE;
  }
  if (rv == 0) {
    src.ranges = rd_ranges;
    src.rows = rd_rows;
    src.ctx = h;
    rv = sp_ls_writer_new(&h->w, &hd, h->desc.total_size, &src, 0,
                          &s->mem);
  }
  if (rv == 0) {
    h->fd = open(h->part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    rv = h->fd >= 0 ? 0 : SP_ERR_IO;
  }
  if (rv != 0) {
    if (h->fd >= 0) {
      unlink(h->part);
    }
    ssnap_free(h);
    return rv;
  }
  *out = h->desc;
  *handle = h;
  return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t k = pwrite(fd, p, n, (off_t)off);
    if (k < 0 && errno == EINTR) {
      continue;
    }
    if (k <= 0) {
      return SP_ERR_IO;
    }
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

/* Prepare the file through `target` bytes; at the end, make it the
 * durable .snap file and end the read transaction. */
static int extend(ssnap *h, uint64_t target) {
  while (h->prepared < target) {
    uint64_t left = h->desc.total_size - h->prepared;
    size_t n = left < PREP_BUF ? (size_t)left : PREP_BUF;
    int rv = sp_ls_writer_read(h->w, h->prepared, h->buf, n);
    if (rv == 0) {
      rv = write_all(h->fd, h->buf, n, h->prepared);
    }
    if (rv != 0) {
      return rv;
    }
    h->prepared += n;
    if (h->prepared - h->synced >= SYNC_EVERY) {
      if (fsync(h->fd) != 0) {
        return SP_ERR_IO;
      }
      h->synced = h->prepared;
    }
  }
  if (h->prepared == h->desc.total_size) {
    if (fsync(h->fd) != 0 || rename(h->part, h->snap) != 0) {
      return SP_ERR_IO;
    }
    sync_dir(h->snap);
    h->complete = 1;
    end_reading(h);
  }
  return 0;
}

static int src_read(void *handle, uint64_t offset, uint8_t *buf, size_t len,
                    void *user_data) {
  ssnap *h = handle;
  int rv;

  (void)user_data;
  if (!h || (len && !buf) || offset > h->desc.total_size ||
      len > h->desc.total_size - offset) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!h->complete && offset + len > h->prepared) {
    rv = extend(h, offset + len);
    if (rv != 0) {
      return rv;
    }
  }
  while (len > 0) {
    ssize_t k = pread(h->fd, buf, len, (off_t)offset);
    if (k < 0 && errno == EINTR) {
      continue;
    }
    if (k <= 0) {
      return SP_ERR_IO;
    }
    buf += k;
    len -= (size_t)k;
    offset += (uint64_t)k;
  }
  return 0;
}

static int src_reopen(const uint8_t id[SP_SNAPSHOT_ID_LEN],
                      sp_snapshot_desc *out, void **handle,
                      void *user_data) {
  sp_sqlite_store *s = user_data;
  uint8_t head[SP_LS_HEADER_LEN];
  sp_ls_header hd;
  struct stat stt;
  ssnap *h;
  int rv = 0;

  if (!id || !out || !handle || !db_path(s)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  h = sp_calloc(&s->mem, 1, sizeof(*h));
  if (!h) {
    return SP_ERR_NOMEM;
  }
  h->store = s;
  h->snap = snap_file(s, id, ".snap");
  if (!h->snap) {
    ssnap_free(h);
    return SP_ERR_NOMEM;
  }
  h->fd = open(h->snap, O_RDONLY | O_CLOEXEC);
  if (h->fd < 0) {
    rv = errno == ENOENT ? SP_ERR_NOT_FOUND : SP_ERR_IO;
  } else if (fstat(h->fd, &stt) != 0 ||
             pread(h->fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
             sp_ls_header_decode(head, &hd) != 0) {
    rv = SP_ERR_NOT_FOUND; /* not one we can serve again */
  }
  if (rv != 0) {
    ssnap_free(h);
    return rv;
  }
  h->complete = 1;
  h->desc.sequence = hd.sequence;
  memcpy(h->desc.hash_at, hd.hash_at, SP_HASH_LEN);
  h->desc.epoch = hd.epoch;
  h->desc.total_size = (uint64_t)stt.st_size;
  h->prepared = h->desc.total_size;
  *out = h->desc;
  *handle = h;
  return 0;
}

static void src_close(void *handle, int forget, void *user_data) {
  ssnap *h = handle;

  (void)user_data;
  if (!h) {
    return;
  }
  if (!h->complete && h->part) {
    unlink(h->part); /* cannot be reopened: only complete files are */
  } else if (forget) {
    unlink(h->snap);
  }
  ssnap_free(h);
}

/* Delete leftovers: .part files (a process died preparing them) and
 * .snap files past their keeping time. */
static void sweep(sp_sqlite_store *s) {
  char *dirpath = path_join(&s->mem, db_path(s), "-snapshots");
  time_t now = time(NULL);
  struct dirent *de;
  DIR *d;

  if (!dirpath) {
    return;
  }
  d = opendir(dirpath);
  while (d && (de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    struct stat stt;
    int part = n > 5 && strcmp(de->d_name + n - 5, ".part") == 0;
    int snap = n > 5 && strcmp(de->d_name + n - 5, ".snap") == 0;
    if ((part || snap) &&
        fstatat(dirfd(d), de->d_name, &stt, AT_SYMLINK_NOFOLLOW) == 0 &&
        (part || now - stt.st_mtime > SNAP_KEEP_SECONDS)) {
      unlinkat(dirfd(d), de->d_name, 0);
    }
  }
  if (d) {
    closedir(d);
  }
  sp_free(&s->mem, dirpath);
}

int sp_sqlite_store_snapshot_source_versioned(sp_sqlite_store *store,
                                              int version,
                                              sp_snapshot_source *dst) {
  sp_snapshot_source full, *out = &full;
  size_t n = sp_abi_snapshot_source_size(version);

  if (!store || !dst || !db_path(store)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (n == 0) {
    return SP_ERR_VERSION;
  }
  sweep(store);
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

/* -- sink: the side database -- */

static const char snapin_schema[] =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = FULL;"
    "CREATE TABLE IF NOT EXISTS snap_info("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " snap_id BLOB NOT NULL, sequence INTEGER NOT NULL,"
    " hash_at BLOB NOT NULL, epoch INTEGER NOT NULL,"
    " total_size INTEGER NOT NULL, chunk_size INTEGER NOT NULL,"
    " chunk_count INTEGER NOT NULL, digest BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS snap_chunk("
    " idx INTEGER PRIMARY KEY, data BLOB NOT NULL);";

static int side(sp_sqlite_store *s, sqlite3 **out) {
  char *path;
  int rc;

  if (!s->snapin) {
    path = path_join(&s->mem, db_path(s), "-snapin");
    if (!path) {
      return SP_ERR_NOMEM;
    }
    rc = sqlite3_open_v2(path, &s->snapin,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX,
                         NULL);
    sp_free(&s->mem, path);
    if (rc == SQLITE_OK) {
      sqlite3_busy_timeout(s->snapin, 5000);
      rc = sqlite3_exec(s->snapin, snapin_schema, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
      sqlite3_close(s->snapin);
      s->snapin = NULL;
      return SP_ERR_STORE;
    }
  }
  *out = s->snapin;
  return 0;
}

static int exec(sqlite3 *db, const char *sql) {
  return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0
                                                              : SP_ERR_STORE;
}

static void side_rollback(sqlite3 *db) {
  if (!sqlite3_get_autocommit(db)) {
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  }
}

/* 1 with `*info` and `*have` if a snapshot is pending, 0 if not, or an
 * error (inside a transaction of the caller's). */
static int side_info(sqlite3 *db, sp_snapshot_info *info, uint64_t *have) {
  sqlite3_stmt *q = NULL;
  int rc, rv = 0;

  if (sqlite3_prepare_v2(db,
                         "SELECT snap_id, sequence, hash_at, epoch,"
                         " total_size, chunk_size, chunk_count, digest,"
                         " (SELECT COUNT(*) FROM snap_chunk) FROM snap_info"
                         " WHERE id = 1",
                         -1, &q, NULL) != SQLITE_OK) {
    sqlite3_finalize(q);
    return SP_ERR_STORE;
  }
  rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_bytes(q, 0) != SP_SNAPSHOT_ID_LEN ||
        sqlite3_column_bytes(q, 2) != SP_HASH_LEN ||
        sqlite3_column_bytes(q, 7) != SP_HASH_LEN) {
      rv = SP_ERR_STORE_CORRUPT;
    } else {
      memset(info, 0, sizeof(*info));
      memcpy(info->id, sqlite3_column_blob(q, 0), SP_SNAPSHOT_ID_LEN);
      info->sequence = (sp_seq)sqlite3_column_int64(q, 1);
      memcpy(info->hash_at, sqlite3_column_blob(q, 2), SP_HASH_LEN);
      info->epoch = (uint64_t)sqlite3_column_int64(q, 3);
      info->total_size = (uint64_t)sqlite3_column_int64(q, 4);
      info->chunk_size = (uint32_t)sqlite3_column_int64(q, 5);
      info->chunk_count = (uint64_t)sqlite3_column_int64(q, 6);
      memcpy(info->digest, sqlite3_column_blob(q, 7), SP_HASH_LEN);
      *have = (uint64_t)sqlite3_column_int64(q, 8);
      rv = 1;
    }
  } else if (rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  return rv;
}

static int info_equal(const sp_snapshot_info *a, const sp_snapshot_info *b) {
  return memcmp(a->id, b->id, SP_SNAPSHOT_ID_LEN) == 0 &&
         a->sequence == b->sequence &&
         memcmp(a->hash_at, b->hash_at, SP_HASH_LEN) == 0 &&
         a->epoch == b->epoch && a->total_size == b->total_size &&
         a->chunk_size == b->chunk_size && a->chunk_count == b->chunk_count &&
         memcmp(a->digest, b->digest, SP_HASH_LEN) == 0;
}

/* 1 if the main database records snapshot `id` as installed. */
static int installed(sp_sqlite_store *s, const uint8_t *id) {
  sqlite3_stmt *q = NULL;
  int rv = 0;

  if (sqlite3_prepare_v2(s->db,
                         "SELECT 1 FROM sync_snapshot_installed"
                         " WHERE id = 1 AND snap_id = ?1",
                         -1, &q, NULL) != SQLITE_OK) {
    sqlite3_finalize(q);
    return 0; /* no table: nothing was ever installed */
  }
  sqlite3_bind_blob(q, 1, id, SP_SNAPSHOT_ID_LEN, SQLITE_STATIC);
  rv = sqlite3_step(q) == SQLITE_ROW;
  sqlite3_finalize(q);
  return rv;
}

/* Delete the side database once it holds nothing: its pages would
 * otherwise keep the largest snapshot's size on disk for ever (a missing
 * side database means "nothing pending"; `side` creates it again). */
static void side_drop(sp_sqlite_store *s) {
  static const char *const tails[] = {"-snapin", "-snapin-wal",
                                      "-snapin-shm"};

  if (sqlite3_close(s->snapin) != SQLITE_OK) {
    return; /* still busy: keep the handle, nothing is lost */
  }
  s->snapin = NULL;
  for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); ++i) {
    char *path = path_join(&s->mem, db_path(s), tails[i]);
    if (path) {
      unlink(path);
      sp_free(&s->mem, path);
    }
  }
}

static int side_clear(sp_sqlite_store *s, sqlite3 *db) {
  int rv = exec(db, "BEGIN IMMEDIATE");
  if (rv == 0) {
    rv = exec(db, "DELETE FROM snap_chunk; DELETE FROM snap_info");
  }
  if (rv == 0) {
    rv = exec(db, "COMMIT");
  }
  if (rv != 0) {
    side_rollback(db);
  } else {
    side_drop(s);
  }
  return rv;
}

/* After an install: the log records the installed id (durably, in the
 * install's transaction), so the chunks need not be deleted row by row
 * (which reads every overflow page of every chunk to free it: as long as
 * the install itself for a large snapshot).  The file goes as a whole once
 * its WAL is checkpointed and empty, so that no half-removed pair can
 * come back as a database missing pages; whatever survives a crash here
 * is recognised by `pending` (installed id) and cleared then. */
static void side_discard(sp_sqlite_store *s, sqlite3 *db) {
  if (sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                                NULL) == SQLITE_OK) {
    side_drop(s);
  } else {
    side_clear(s, db);
  }
}

static int sink_pending(sp_snapshot_info *info, uint64_t *have,
                        void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_snapshot_info i;
  uint64_t n = 0;
  sqlite3 *db;
  int rv = sp_sqlite_worker_sync(s);

  if (rv == 0) {
    rv = side(s, &db);
  }
  if (rv != 0) {
    return rv;
  }
  rv = exec(db, "BEGIN");
  if (rv == 0) {
    rv = side_info(db, &i, &n);
    side_rollback(db);
  }
  if (rv == 1 && installed(s, i.id)) {
    /* Installed, then the process died before the cleanup. */
    rv = side_clear(s, db);
    return rv == 0 ? SP_ERR_NOT_FOUND : rv;
  }
  if (rv < 0) {
    return SP_ERR_STORE;
  }
  if (rv == 0) {
    return SP_ERR_NOT_FOUND;
  }
  if (info) {
    *info = i;
  }
  if (have) {
    *have = n;
  }
  return 0;
}

static int sink_begin(const sp_snapshot_info *info, uint64_t *have,
                      void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_snapshot_info cur;
  sqlite3_stmt *q = NULL;
  uint64_t n = 0;
  sqlite3 *db;
  int rv;

  if (!info || !have) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = sp_sqlite_worker_sync(s);
  if (rv != 0) {
    return rv;
  }
  rv = side(s, &db);
  if (rv == 0) {
    rv = exec(db, "BEGIN IMMEDIATE");
  }
  if (rv != 0) {
    return rv;
  }
  rv = side_info(db, &cur, &n);
  if (rv == 1 && info_equal(&cur, info)) {
    side_rollback(db);
    *have = n;
    return 0;
  }
  if (rv >= 0) {
    rv = exec(db, "DELETE FROM snap_chunk; DELETE FROM snap_info");
  }
  if (rv == 0 &&
      sqlite3_prepare_v2(db,
                         "INSERT INTO snap_info VALUES(1, ?1, ?2, ?3, ?4, ?5,"
                         " ?6, ?7, ?8)",
                         -1, &q, NULL) != SQLITE_OK) {
    rv = SP_ERR_STORE;
  }
  if (rv == 0) {
    sqlite3_bind_blob(q, 1, info->id, SP_SNAPSHOT_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)info->sequence);
    sqlite3_bind_blob(q, 3, info->hash_at, SP_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)info->epoch);
    sqlite3_bind_int64(q, 5, (sqlite3_int64)info->total_size);
    sqlite3_bind_int64(q, 6, (sqlite3_int64)info->chunk_size);
    sqlite3_bind_int64(q, 7, (sqlite3_int64)info->chunk_count);
    sqlite3_bind_blob(q, 8, info->digest, SP_HASH_LEN, SQLITE_STATIC);
    rv = sqlite3_step(q) == SQLITE_DONE ? 0 : SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  if (rv == 0) {
    rv = exec(db, "COMMIT");
  }
  if (rv != 0) {
    side_rollback(db);
    return SP_ERR_STORE;
  }
  *have = 0;
  return 0;
}

static int sink_write_chunk(uint64_t index, const uint8_t *data, size_t len,
                            void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_snapshot_info cur;
  sqlite3_stmt *q = NULL;
  uint64_t n = 0;
  sqlite3 *db;
  int rv;

  if (len && !data) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = side(s, &db);
  if (rv == 0) {
    rv = exec(db, "BEGIN IMMEDIATE");
  }
  if (rv != 0) {
    return rv;
  }
  rv = side_info(db, &cur, &n);
  if (rv != 1 || n != index) {
    side_rollback(db);
    return rv < 0 ? rv : SP_ERR_INVALID_ARGUMENT;
  }
  rv = sqlite3_prepare_v2(db, "INSERT INTO snap_chunk VALUES(?1, ?2)", -1,
                          &q, NULL) == SQLITE_OK
           ? 0
           : SP_ERR_STORE;
  if (rv == 0) {
    sqlite3_bind_int64(q, 1, (sqlite3_int64)index);
    sqlite3_bind_blob64(q, 2, len ? (const void *)data : "", len,
                        SQLITE_STATIC);
    rv = sqlite3_step(q) == SQLITE_DONE ? 0 : SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  if (rv == 0) {
    rv = exec(db, "COMMIT");
  }
  if (rv != 0) {
    side_rollback(db);
  }
  return rv;
}

static int sink_abort(void *user_data) {
  sqlite3 *db;
  int rv = side(user_data, &db);

  return rv == 0 ? side_clear(user_data, db) : rv;
}

/* -- sink: install -- */

typedef struct install {
  sp_sqlite_store *s;
  const sp_snapshot_info *info;
  sp_ls_header h;
  int cleared; /* the old rows went (after the outbox rules) */
  uint64_t rows;
  int store_err; /* a failure of the store, not of the bytes */
} install;

/* A failed statement of the install: rows the file cannot hold (a
 * constraint, a value out of range) are the snapshot's fault and can never
 * install; anything else (busy, I/O, disk full) is the store's and is
 * worth a retry. */
static int inst_fail(install *in, int rv) {
  int rc = sqlite3_errcode(in->s->db) & 0xff;

  if (rv != 0 && rc != SQLITE_CONSTRAINT && rc != SQLITE_TOOBIG &&
      rc != SQLITE_MISMATCH && rc != SQLITE_RANGE) {
    in->store_err = 1;
  }
  return rv;
}

static int inst_header(const sp_ls_header *h, void *ctx) {
  install *in = ctx;

  if (h->sequence != in->info->sequence ||
      memcmp(h->hash_at, in->info->hash_at, SP_HASH_LEN) != 0 ||
      h->epoch != in->info->epoch) {
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  if (h->sequence > SEQ_MAX || h->base > SEQ_MAX) {
    /* Well formed, but beyond what the file keeps: never installs. */
    return SP_ERR_SNAPSHOT_CORRUPT;
  }
  in->h = *h;
  return inst_fail(in, exec(in->s->db, "DELETE FROM sync_origin_range"));
}

static int inst_range(const sp_oidx_range *r, void *ctx) {
  install *in = ctx;
  sqlite3_stmt *st = in->s->st[ST_RANGE_INSERT];

  sqlite3_bind_blob(st, 1, r->device.bytes, 16, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)r->lo);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)r->hi);
  return inst_fail(in, run(st));
}

/* The new committed set is in place: outbox rules against the old rows,
 * then the old rows go. */
static int inst_clear(install *in) {
  int rv = sp_sqlite_outbox_full_sync(in->s);

  in->cleared = 1;
  if (rv == 0) {
    rv = run(in->s->st[ST_DELETE_ALL]);
  }
  in->store_err |= rv != 0;
  return rv;
}

static int inst_row(const sp_entry *e, const uint8_t link[SP_HASH_LEN],
                    void *ctx) {
  install *in = ctx;
  sqlite3_stmt *st = in->s->st[ST_INSERT];
  int rv = in->cleared ? 0 : inst_clear(in);

  if (rv != 0) {
    return rv;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)e->sequence);
  sp_sqlite_bind_entry(st, e);
  sqlite3_bind_blob(st, 9, link, SP_HASH_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 10, (sqlite3_int64)e->origin_seq);
  rv = inst_fail(in, run(st));
  if (rv == 0 && test_hook) {
    test_hook(++in->rows);
  }
  return rv;
}

static int inst_finish(install *in) {
  sqlite3_stmt *q = NULL;
  int rv = in->cleared ? 0 : inst_clear(in);

  if (rv == 0 &&
      sqlite3_prepare_v2(in->s->db,
                         "UPDATE sync_log_meta SET applied = ?1,"
                         " head_hash = ?2, epoch = MAX(epoch, ?3),"
                         " pruned_through = ?4,"
                         " pruned_hash = ?5 WHERE id = 1",
                         -1, &q, NULL) != SQLITE_OK) {
    rv = SP_ERR_STORE;
  }
  if (rv == 0) {
    sqlite3_bind_int64(q, 1, (sqlite3_int64)in->h.sequence);
    sqlite3_bind_blob(q, 2, in->h.hash_at, SP_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)in->h.epoch);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)in->h.base);
    sqlite3_bind_blob(q, 5, in->h.base_link, SP_HASH_LEN, SQLITE_STATIC);
    rv = sqlite3_step(q) == SQLITE_DONE && sqlite3_changes(in->s->db) == 1
             ? 0
             : SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  q = NULL;
  if (rv == 0) {
    rv = exec(in->s->db,
              "CREATE TABLE IF NOT EXISTS sync_snapshot_installed("
              " id INTEGER PRIMARY KEY CHECK (id = 1), snap_id BLOB)");
  }
  if (rv == 0 &&
      sqlite3_prepare_v2(in->s->db,
                         "INSERT OR REPLACE INTO sync_snapshot_installed"
                         " VALUES(1, ?1)",
                         -1, &q, NULL) != SQLITE_OK) {
    rv = SP_ERR_STORE;
  }
  if (rv == 0) {
    sqlite3_bind_blob(q, 1, in->info->id, SP_SNAPSHOT_ID_LEN, SQLITE_STATIC);
    rv = sqlite3_step(q) == SQLITE_DONE ? 0 : SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  return rv;
}

/* Feed the pending chunks, in order, to a parser installing into the open
 * transaction. */
static int feed_chunks(sqlite3 *db, const sp_snapshot_info *info,
                       install *in) {
  sp_ls_parser *p = NULL;
  sqlite3_stmt *q = NULL;
  sp_ls_sink sink;
  uint64_t bytes = 0, n = 0;
  int rv, rc;

  sink.header = inst_header;
  sink.range = inst_range;
  sink.row = inst_row;
  sink.ctx = in;
  rv = sp_ls_parser_new(&p, &sink, info->total_size, &in->s->mem);
  if (rv == 0 && sqlite3_prepare_v2(db,
                                    "SELECT idx, data FROM snap_chunk"
                                    " ORDER BY idx",
                                    -1, &q, NULL) != SQLITE_OK) {
    rv = SP_ERR_STORE;
    in->store_err = 1;
  }
  while (rv == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    size_t len = (size_t)sqlite3_column_bytes(q, 1);
    const uint8_t *d = sqlite3_column_blob(q, 1);
    if ((uint64_t)sqlite3_column_int64(q, 0) != n++) {
      rv = SP_ERR_STORE_CORRUPT;
      in->store_err = 1;
      break;
    }
    bytes += len;
    rv = sp_ls_parser_feed(p, d, len);
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
    in->store_err = 1;
  }
  if (rv == 0 && (n != info->chunk_count || bytes != info->total_size)) {
    rv = SP_ERR_SNAPSHOT_CORRUPT;
  }
  if (rv == 0) {
    rv = sp_ls_parser_finish(p);
  }
  sqlite3_finalize(q);
  sp_ls_parser_del(p);
  return rv;
}

static int sink_commit(void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_snapshot_info info;
  install in;
  uint64_t n = 0;
  sqlite3 *db;
  int rv;

  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(s);
  if (rv == 0) {
    rv = side(s, &db);
  }
  if (rv == 0) {
    rv = exec(db, "BEGIN");
  }
  if (rv != 0) {
    return rv;
  }
  rv = side_info(db, &info, &n);
  if (rv != 1 || n != info.chunk_count) {
    side_rollback(db);
    return rv < 0 ? rv : SP_ERR_INVALID_STATE;
  }
  /* The install is durable at COMMIT whatever the store's setting. */
  if (!s->sync_full) {
    exec(s->db, "PRAGMA synchronous = FULL");
  }
  memset(&in, 0, sizeof(in));
  in.s = s;
  in.info = &info;
  rv = begin_write(s);
  if (rv == 0) {
    rv = feed_chunks(db, &info, &in);
    /* Bytes that do not parse, or rows the file cannot hold, never
     * install: the engine restarts the snapshot on this code. */
    if (rv != 0 && rv != SP_ERR_NOMEM && !in.store_err) {
      rv = SP_ERR_SNAPSHOT_CORRUPT;
    }
  }
  if (rv == 0) {
    rv = inst_finish(&in);
  }
  sqlite3_clear_bindings(s->st[ST_INSERT]);
  if (rv == 0) {
    rv = commit(s);
  } else {
    rollback(s);
  }
  if (!s->sync_full) {
    exec(s->db, "PRAGMA synchronous = NORMAL");
  }
  side_rollback(db);
  if (rv != 0) {
    return rv;
  }
  /* A failure here leaves the chunks pending; `pending` recognises the
   * installed id and clears them. */
  side_discard(s, db);
  return 0;
}

int sp_sqlite_store_snapshot_sink_versioned(sp_sqlite_store *store,
                                            int version,
                                            sp_snapshot_sink *dst) {
  sp_snapshot_sink full, *out = &full;
  size_t n = sp_abi_snapshot_sink_size(version);

  if (!store || !dst || !db_path(store)) {
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
