/*
 * sp_sqlite_store.c: the reference sync-log store on an SQLite file.
 *
 * Schema (schema version 2, PRAGMA application_id SP_SQLITE_APP_ID; a
 * file of schema 1 is migrated when opened writable):
 *
 *   sync_log(sequence INTEGER PRIMARY KEY, device_id BLOB, timestamp
 *            INTEGER, model_type TEXT, record_id BLOB, change_type INTEGER,
 *            version INTEGER, data BLOB, hash BLOB, origin_seq INTEGER)
 *                 (index sync_log_origin on (device_id, origin_seq) for
 *                 the rows with an origin id)
 *   sync_origin_range(device BLOB, lo INTEGER, hi INTEGER,
 *                     PRIMARY KEY (device, lo))
 *                 (the committed set: origins lo..hi of device were in
 *                 the log once; disjoint, never adjacent, kept through
 *                 pruning)
 *   sync_outbox(origin_seq INTEGER PRIMARY KEY, device_id, timestamp,
 *               model_type, record_id, change_type, version, data)
 *   sync_outbox_meta(id = 1, next_origin, anchored, device, items, bytes)
 *                 (schema 2: see SCHEMA_2_SQL and sp_sqlite_outbox.c)
 *   sync_log_meta(id = 1, schema_version, applied, head_hash, epoch,
 *                 pruned_through, pruned_hash)
 *   sync_follower_ack(device BLOB PRIMARY KEY, key BLOB, acked INTEGER,
 *                     hash BLOB)
 *                 (leader side; created on the first save, so a file
 *                 written before it existed needs no migration)
 *   sync_follower_address(device BLOB PRIMARY KEY, address TEXT)
 *                 (leader side, the same way; apart from the positions
 *                 because it changes on its own schedule: per connection)
 *
 * The metadata row is the authority on the log's position and is written
 * in the same transaction as the rows it describes, so the two can only
 * disagree if something other than this file's code edited the database;
 * open checks for that.  Invariants:
 *
 *   pruned_through <= applied
 *   rows present:  every sequence > pruned_through, MAX(sequence) ==
 *                  applied, head_hash == hash of that row
 *   no rows:       applied == pruned_through, head_hash == pruned_hash
 *
 * Unsigned 64-bit values (timestamp, epoch) are stored as their two's
 * complement int64; sequences are limited to INT64_MAX so that the
 * INTEGER PRIMARY KEY keeps their order.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/sqlite_store.h"
#include "sync_protocol/sys/transport.h"
#include "sp_abi.h"
#include "sp_enc.h"
#include "sp_mem_int.h"
#include "sp_sqlite_int.h"
#include "sp_sqlite_worker.h"

/* 0x53504c47, "SPLG": marks a file as a sync log (PRAGMA application_id).
 * Decimal, because it is also spliced into the schema script. */
#define SP_SQLITE_APP_ID 1397771335
#define SP_SQLITE_SCHEMA_VERSION 2
#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * Added by schema 2 (besides sync_log.origin_seq): the origin index over
 * the retained rows (partial: most rows of a leader-only log have none),
 * the committed set as per-device ranges (survives pruning: find_origin
 * answers "held once" from it in O(log ranges)), the outbox and its
 * one-row metadata (next origin, anchored flag, outbox device, and the
 * item and byte counts so that outbox_stats reads one row).
 */
#define SCHEMA_2_SQL                                                         \
  "CREATE INDEX IF NOT EXISTS sync_log_origin ON sync_log(device_id,"        \
  " origin_seq) WHERE origin_seq != 0;"                                      \
  "CREATE TABLE IF NOT EXISTS sync_origin_range("                            \
  " device BLOB NOT NULL,"                                                   \
  " lo INTEGER NOT NULL,"                                                    \
  " hi INTEGER NOT NULL,"                                                    \
  " PRIMARY KEY (device, lo)) WITHOUT ROWID;"                                \
  "CREATE TABLE IF NOT EXISTS sync_outbox("                                  \
  " origin_seq INTEGER PRIMARY KEY,"                                         \
  " device_id BLOB NOT NULL,"                                                \
  " timestamp INTEGER NOT NULL,"                                             \
  " model_type TEXT NOT NULL,"                                               \
  " record_id BLOB NOT NULL,"                                                \
  " change_type INTEGER NOT NULL,"                                           \
  " version INTEGER NOT NULL,"                                               \
  " data BLOB NOT NULL);"                                                    \
  "CREATE TABLE IF NOT EXISTS sync_outbox_meta("                             \
  " id INTEGER PRIMARY KEY CHECK (id = 1),"                                  \
  " next_origin INTEGER NOT NULL,"                                           \
  " anchored INTEGER NOT NULL,"                                              \
  " device BLOB,"                                                            \
  " items INTEGER NOT NULL,"                                                 \
  " bytes INTEGER NOT NULL);"                                                \
  "INSERT OR IGNORE INTO sync_outbox_meta VALUES(1, 1, 0, NULL, 0, 0);"

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS sync_log("
    " sequence INTEGER PRIMARY KEY,"
    " device_id BLOB NOT NULL,"
    " timestamp INTEGER NOT NULL,"
    " model_type TEXT NOT NULL,"
    " record_id BLOB NOT NULL,"
    " change_type INTEGER NOT NULL,"
    " version INTEGER NOT NULL,"
    " data BLOB NOT NULL,"
    " hash BLOB NOT NULL,"
    " origin_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS sync_log_meta("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " schema_version INTEGER NOT NULL,"
    " applied INTEGER NOT NULL,"
    " head_hash BLOB NOT NULL,"
    " epoch INTEGER NOT NULL,"
    " pruned_through INTEGER NOT NULL,"
    " pruned_hash BLOB NOT NULL);"
    "INSERT OR IGNORE INTO sync_log_meta VALUES(1, "
    STR(SP_SQLITE_SCHEMA_VERSION) ", 0, zeroblob(32), 0, 0, zeroblob(32));"
    SCHEMA_2_SQL
    "PRAGMA application_id = " STR(SP_SQLITE_APP_ID) ";"
    "PRAGMA user_version = " STR(SP_SQLITE_SCHEMA_VERSION) ";";

/* Schema 1 -> 2, in one transaction (migrate), after the origin_seq
 * column is added (defaulting to 0: schema 1 rows carry no origin id).
 * The committed set is seeded from the rows' origins, each run of
 * consecutive origins of a device one range (empty for a real schema 1
 * file; a development file that already had the column keeps its
 * origins). */
static const char migrate_1_sql[] =
    SCHEMA_2_SQL
    "INSERT INTO sync_origin_range(device, lo, hi)"
    " SELECT device_id, MIN(origin_seq), MAX(origin_seq) FROM"
    " (SELECT device_id, origin_seq, origin_seq - ROW_NUMBER() OVER"
    " (PARTITION BY device_id ORDER BY origin_seq) AS run FROM"
    " (SELECT DISTINCT device_id, origin_seq FROM sync_log"
    " WHERE origin_seq > 0)) GROUP BY device_id, run;"
    "UPDATE sync_log_meta SET schema_version = 2 WHERE id = 1;"
    "PRAGMA user_version = 2;";

#define ROW_COLUMNS                                                          \
  "sequence, device_id, timestamp, model_type, record_id, change_type,"     \
  " version, data, hash, origin_seq"

#define OBOX_COLUMNS                                                         \
  "origin_seq, device_id, timestamp, model_type, record_id, change_type,"   \
  " version, data"

static const char *const stmt_sql[ST_NSTMT] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT schema_version, applied, head_hash, epoch,"
                    " pruned_through, pruned_hash FROM sync_log_meta"
                    " WHERE id = 1",
    [ST_META_PUT] = "UPDATE sync_log_meta SET applied = ?1, head_hash = ?2,"
                    " epoch = ?3, pruned_through = ?4, pruned_hash = ?5"
                    " WHERE id = 1",
    [ST_INSERT] = "INSERT INTO sync_log(" ROW_COLUMNS
                  ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_READ] = "SELECT " ROW_COLUMNS " FROM sync_log"
                " WHERE sequence > ?1 AND sequence <= ?2"
                " ORDER BY sequence LIMIT ?3",
    /* One statement, so a concurrent prune cannot slip between the row
     * and the kept hash. */
    [ST_HASH_AT] = "SELECT hash FROM sync_log WHERE sequence = ?1"
                   " UNION ALL SELECT pruned_hash FROM sync_log_meta"
                   " WHERE id = 1 AND pruned_through = ?1 LIMIT 1",
    [ST_LAST_AT_OR_BELOW] = "SELECT hash FROM sync_log WHERE sequence <= ?1"
                            " ORDER BY sequence DESC LIMIT 1",
    [ST_DELETE_THROUGH] = "DELETE FROM sync_log WHERE sequence <= ?1",
    [ST_DELETE_ALL] = "DELETE FROM sync_log",
    /* Separate subqueries: SQLite answers a lone MIN or MAX from the
     * b-tree edge, but scans for MIN and MAX together. */
    [ST_EDGES] = "SELECT (SELECT MIN(sequence) FROM sync_log),"
                 " (SELECT MAX(sequence) FROM sync_log),"
                 " (SELECT hash FROM sync_log ORDER BY sequence DESC"
                 " LIMIT 1)",
    [ST_COUNT_ROWS] = "SELECT COUNT(*) FROM sync_log",
    /* The repeated `origin_seq != 0` lets the planner use the partial
     * index whatever is bound. */
    [ST_ORIGIN_FIND] = "SELECT sequence FROM sync_log WHERE device_id = ?1"
                       " AND origin_seq = ?2 AND origin_seq != 0"
                       " ORDER BY sequence LIMIT 1",
    /* The only range of ?1 that can hold ?2; with ?2 = INT64_MAX, the
     * highest. */
    [ST_RANGE_BEFORE] = "SELECT lo, hi FROM sync_origin_range"
                        " WHERE device = ?1 AND lo <= ?2"
                        " ORDER BY lo DESC LIMIT 1",
    [ST_RANGE_UPTO] = "SELECT hi FROM sync_origin_range WHERE device = ?1"
                      " AND lo >= ?2 AND lo <= ?3 ORDER BY lo DESC LIMIT 1",
    [ST_RANGE_DELETE] = "DELETE FROM sync_origin_range WHERE device = ?1"
                        " AND lo >= ?2 AND lo <= ?3",
    [ST_RANGE_INSERT] = "INSERT INTO sync_origin_range(device, lo, hi)"
                        " VALUES(?1, ?2, ?3)",
    [ST_OBOX_META_GET] = "SELECT next_origin, anchored, device, items, bytes"
                         " FROM sync_outbox_meta WHERE id = 1",
    [ST_OBOX_META_PUT] = "UPDATE sync_outbox_meta SET next_origin = ?1,"
                         " anchored = ?2, device = ?3, items = ?4,"
                         " bytes = ?5 WHERE id = 1",
    [ST_OBOX_INSERT] = "INSERT INTO sync_outbox(" OBOX_COLUMNS
                       ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_OBOX_READ] = "SELECT " OBOX_COLUMNS " FROM sync_outbox"
                     " WHERE origin_seq > ?1 ORDER BY origin_seq LIMIT ?2",
    /* ?2 NULL: any device. */
    [ST_OBOX_SIZE] = "SELECT length(CAST(model_type AS BLOB)) + length(data)"
                     " FROM sync_outbox WHERE origin_seq = ?1"
                     " AND (?2 IS NULL OR device_id = ?2)",
    [ST_OBOX_DELETE] = "DELETE FROM sync_outbox WHERE origin_seq = ?1",
    [ST_OBOX_PUT_BACK] = "INSERT OR IGNORE INTO sync_outbox(" OBOX_COLUMNS
                         ") SELECT " OBOX_COLUMNS " FROM sync_log"
                         " WHERE sequence > ?1 AND device_id = ?2"
                         " AND origin_seq != 0",
    [ST_OBOX_TOTALS] = "SELECT COUNT(*), COALESCE(SUM(length(CAST("
                       "model_type AS BLOB)) + length(data)), 0),"
                       " COALESCE(MIN(origin_seq), 0),"
                       " COALESCE(MAX(origin_seq), 0) FROM sync_outbox",
    /* Renumbering in two steps: through negative numbers, so no row ever
     * takes a number another still holds. */
    [ST_OBOX_NEGATE_SHIFT] = "UPDATE sync_outbox"
                             " SET origin_seq = -(origin_seq + ?1)",
    [ST_OBOX_NEGATE] = "UPDATE sync_outbox SET origin_seq = -origin_seq",
};

typedef struct meta {
  sp_seq applied;
  uint8_t head_hash[SP_HASH_LEN];
  uint64_t epoch;
  sp_seq pruned_through;
  uint8_t pruned_hash[SP_HASH_LEN];
} meta;

static const uint8_t zero_hash[SP_HASH_LEN];
/* Bound for empty text and blobs: a NULL pointer would bind SQL NULL. */
static const char empty[1] = "";

void sp_sqlite_config_default(sp_sqlite_config *cfg) {
  if (!cfg) {
    return;
  }
  memset(cfg, 0, sizeof(*cfg));
  cfg->version = SP_SQLITE_CONFIG_VERSION;
  cfg->synchronous = SP_SQLITE_SYNC_NORMAL;
  cfg->create = 1;
  cfg->read_only = 0;
  cfg->busy_timeout_ms = 5000;
}

/* -- why a call failed -- */

void sp_sqlite_keep_error(sp_sqlite_store *s) {
  int saved = errno, rc = sqlite3_errcode(s->db), err;

  if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) {
    return;
  }
  err = sqlite3_system_errno(s->db);
  /* SQLite keeps the errno of an open, not always of a failed write
   * (EFBIG, EIO in the WAL): then it is still errno, as this runs in the
   * same call, right after the failed system call, before any rollback.
   * Not for SQLITE_FULL, which max_page_count raises without one. */
  if (!err && (rc & 0xff) == SQLITE_IOERR) {
    err = saved;
  }
  if (err && (rc & 0xff) != SQLITE_CONSTRAINT) {
    snprintf(s->errmsg, sizeof(s->errmsg), "%s (%s)", sqlite3_errmsg(s->db),
             strerror(err));
  } else {
    snprintf(s->errmsg, sizeof(s->errmsg), "%s", sqlite3_errmsg(s->db));
  }
}

/* The text of the calling thread's last failed sp_sqlite_store_open (its
 * store is gone by the time the host asks). */
static _Thread_local char open_errmsg[256];

const char *sp_sqlite_store_errmsg(const sp_sqlite_store *store) {
  if (!store) {
    return open_errmsg;
  }
  if (store->errmsg[0]) {
    return store->errmsg;
  }
  /* A failure outside a transaction (one statement) left no copy, and
   * nothing ran since: SQLite's own text is still the one. */
  switch (sqlite3_errcode(store->db)) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE:
    return "";
  default:
    return sqlite3_errmsg(store->db);
  }
}

static const char *vt_errmsg(void *user_data) {
  return sp_sqlite_store_errmsg(user_data);
}

/* -- small helpers -- */

static int copy_hash(sqlite3_stmt *st, int col, uint8_t out[SP_HASH_LEN]) {
  const void *p = sqlite3_column_blob(st, col);
  if (!p || sqlite3_column_bytes(st, col) != SP_HASH_LEN) {
    return SP_ERR_STORE_CORRUPT;
  }
  memcpy(out, p, SP_HASH_LEN);
  return 0;
}

static int meta_get(sp_sqlite_store *s, meta *m) {
  sqlite3_stmt *st = s->st[ST_META_GET];
  int rc, rv = 0;
  sqlite3_int64 applied, pruned;

  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    /* The meta row is created with the schema: a file without it is not
     * one of ours. */
    rv = rc == SQLITE_DONE ? SP_ERR_STORE_CORRUPT : SP_ERR_STORE;
    goto out;
  }
  applied = sqlite3_column_int64(st, 1);
  pruned = sqlite3_column_int64(st, 4);
  if (sqlite3_column_int64(st, 0) != SP_SQLITE_SCHEMA_VERSION ||
      sqlite3_column_type(st, 1) != SQLITE_INTEGER ||
      sqlite3_column_type(st, 4) != SQLITE_INTEGER || applied < 0 ||
      pruned < 0 || pruned > applied) {
    rv = SP_ERR_STORE_CORRUPT;
    goto out;
  }
  m->applied = (sp_seq)applied;
  m->pruned_through = (sp_seq)pruned;
  m->epoch = (uint64_t)sqlite3_column_int64(st, 3);
  if (copy_hash(st, 2, m->head_hash) != 0 ||
      copy_hash(st, 5, m->pruned_hash) != 0) {
    rv = SP_ERR_STORE_CORRUPT;
  }
out:
  sqlite3_reset(st);
  return rv;
}

static int meta_put(sp_sqlite_store *s, const meta *m) {
  sqlite3_stmt *st = s->st[ST_META_PUT];
  int rv;

  sqlite3_bind_int64(st, 1, (sqlite3_int64)m->applied);
  sqlite3_bind_blob(st, 2, m->head_hash, SP_HASH_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)m->epoch);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)m->pruned_through);
  sqlite3_bind_blob(st, 5, m->pruned_hash, SP_HASH_LEN, SQLITE_STATIC);
  rv = run(st);
  sqlite3_clear_bindings(st);
  if (rv == 0 && sqlite3_changes(s->db) != 1) {
    rv = SP_ERR_STORE_CORRUPT;
  }
  return rv;
}

/* Bind and insert one row; the pointers only need to live for the call. */
static int insert_row(sp_sqlite_store *s, const sp_entry *e,
                      const uint8_t hash[SP_HASH_LEN]) {
  sqlite3_stmt *st = s->st[ST_INSERT];

  sqlite3_bind_int64(st, 1, (sqlite3_int64)e->sequence);
  sp_sqlite_bind_entry(st, e);
  sqlite3_bind_blob(st, 9, hash, SP_HASH_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 10, (sqlite3_int64)e->origin_seq);
  return run(st);
}

void sp_sqlite_bind_entry(sqlite3_stmt *st, const sp_entry *e) {
  sqlite3_bind_blob(st, 2, e->device_id.bytes, 16, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)e->timestamp_ms);
  sqlite3_bind_text(st, 4, e->model_type_len ? e->model_type : empty,
                    (int)e->model_type_len, SQLITE_STATIC);
  sqlite3_bind_blob(st, 5, e->record_id.bytes, 16, SQLITE_STATIC);
  sqlite3_bind_int(st, 6, (int)e->change_type);
  sqlite3_bind_int64(st, 7, (sqlite3_int64)e->version);
  sqlite3_bind_blob64(st, 8, e->data_len ? (const void *)e->data : empty,
                      (sqlite3_uint64)e->data_len, SQLITE_STATIC);
}

int sp_sqlite_column_entry(sqlite3_stmt *st, sp_entry *e) {
  const void *dev, *rec;
  sqlite3_int64 ct;

  dev = sqlite3_column_blob(st, 1);
  if (!dev || sqlite3_column_bytes(st, 1) != 16) {
    return SP_ERR_STORE_CORRUPT;
  }
  memcpy(e->device_id.bytes, dev, 16);
  e->timestamp_ms = (uint64_t)sqlite3_column_int64(st, 2);
  e->model_type = (const char *)sqlite3_column_text(st, 3);
  e->model_type_len = (size_t)sqlite3_column_bytes(st, 3);
  rec = sqlite3_column_blob(st, 4);
  if (!rec || sqlite3_column_bytes(st, 4) != 16) {
    return SP_ERR_STORE_CORRUPT;
  }
  memcpy(e->record_id.bytes, rec, 16);
  ct = sqlite3_column_int64(st, 5);
  if (ct < SP_CHANGE_INSERT || ct > SP_CHANGE_BULK_INSERT ||
      e->model_type_len > SP_MAX_MODEL_TYPE_LEN ||
      (e->model_type_len && !e->model_type)) {
    return SP_ERR_STORE_CORRUPT;
  }
  e->change_type = (sp_change_type)ct;
  e->version = (int64_t)sqlite3_column_int64(st, 6);
  e->data = sqlite3_column_blob(st, 7);
  e->data_len = (size_t)sqlite3_column_bytes(st, 7);
  if (e->data_len == 0) {
    e->data = NULL;
  }
  return 0;
}

int sp_sqlite_read_rows(sp_sqlite_store *s, sqlite3_stmt *st,
                        sp_sqlite_row_fn row, sp_entry_sink sink,
                        void *sink_ctx) {
  int rv = 0, rc;

  s->reading = 1;
  /* Rows go to the sink straight from SQLite's buffers. */
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const uint8_t *hash = NULL;
    sp_entry e;

    rv = row(st, &e, &hash);
    if (rv == 0) {
      rv = sink(&e, hash, sink_ctx);
    }
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  s->reading = 0;
  sqlite3_reset(st);
  return rv > 0 ? 0 : rv;
}

/* Decode the current row of a ROW_COLUMNS statement.  The pointers stay
 * valid until the statement is stepped or reset. */
static int row_entry(sqlite3_stmt *st, sp_entry *e, const uint8_t **hash) {
  int rv;

  e->sequence = (sp_seq)sqlite3_column_int64(st, 0);
  rv = sp_sqlite_column_entry(st, e);
  if (rv != 0) {
    return rv;
  }
  *hash = sqlite3_column_blob(st, 8);
  if (!*hash || sqlite3_column_bytes(st, 8) != SP_HASH_LEN) {
    return SP_ERR_STORE_CORRUPT;
  }
  e->origin_seq = (uint64_t)sqlite3_column_int64(st, 9);
  return 0;
}

/* Check the metadata against the rows (inside a transaction). */
static int check_consistent(sp_sqlite_store *s) {
  sqlite3_stmt *st = s->st[ST_EDGES];
  uint8_t last_hash[SP_HASH_LEN];
  sqlite3_int64 lo, hi;
  int has_rows, rv;
  meta m;

  rv = meta_get(s, &m);
  if (rv != 0) {
    return rv;
  }
  if (sqlite3_step(st) != SQLITE_ROW) {
    sqlite3_reset(st);
    return SP_ERR_STORE;
  }
  has_rows = sqlite3_column_type(st, 0) != SQLITE_NULL;
  lo = sqlite3_column_int64(st, 0);
  hi = sqlite3_column_int64(st, 1);
  rv = has_rows ? copy_hash(st, 2, last_hash) : 0;
  sqlite3_reset(st);
  if (rv != 0) {
    return rv;
  }
  if (has_rows) {
    if (lo <= 0 || (sp_seq)lo <= m.pruned_through ||
        (sp_seq)hi != m.applied ||
        memcmp(last_hash, m.head_hash, SP_HASH_LEN) != 0) {
      return SP_ERR_STORE_CORRUPT;
    }
  } else if (m.applied != m.pruned_through ||
             memcmp(m.head_hash, m.pruned_hash, SP_HASH_LEN) != 0) {
    return SP_ERR_STORE_CORRUPT;
  }
  return 0;
}

/* -- open / close -- */

/* Run a one-off query returning one integer. */
static int query_int(sqlite3 *db, const char *sql, sqlite3_int64 *out) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

/* Map an SQLite failure during open to our codes. */
static int open_error(int rc) {
  switch (rc & 0xff) {
  case SQLITE_NOMEM:
    return SP_ERR_NOMEM;
  case SQLITE_NOTADB:
  case SQLITE_CORRUPT:
    return SP_ERR_STORE_CORRUPT;
  case SQLITE_CANTOPEN:
  case SQLITE_PERM:
  case SQLITE_IOERR:
    return SP_ERR_IO;
  default:
    return SP_ERR_STORE;
  }
}

static int exec_pragma(sqlite3 *db, const char *sql) {
  int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : open_error(rc);
}

/*
 * Recognise the file without writing to it: 0 if it is a sync log, 1 if
 * it is an empty database (a new file), or an error.  Nothing is changed
 * before this says yes, so a foreign database is left exactly as it was.
 */
static int recognise(sqlite3 *db) {
  sqlite3_int64 app_id = 0, version = 0, objects = 0;
  int rc;

  rc = query_int(db, "PRAGMA application_id", &app_id);
  if (rc == SQLITE_OK) {
    rc = query_int(db, "PRAGMA user_version", &version);
  }
  if (rc == SQLITE_OK) {
    rc = query_int(db, "SELECT COUNT(*) FROM sqlite_master", &objects);
  }
  if (rc != SQLITE_OK) {
    return open_error(rc);
  }
  if (app_id == SP_SQLITE_APP_ID) {
    if (version > SP_SQLITE_SCHEMA_VERSION) {
      return SP_ERR_VERSION;
    }
    if (version == 1) {
      return 2;
    }
    return version == SP_SQLITE_SCHEMA_VERSION ? 0 : SP_ERR_STORE_CORRUPT;
  }
  return app_id == 0 && objects == 0 ? 1 : SP_ERR_STORE_CORRUPT;
}

/* Bring a schema 1 file to schema 2, all or nothing.  The version is
 * read again under the write lock: another opener may have migrated it
 * meanwhile. */
static int migrate(sqlite3 *db) {
  sqlite3_int64 version = 0;
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

  if (rc == SQLITE_OK) {
    rc = query_int(db, "PRAGMA user_version", &version);
  }
  if (rc == SQLITE_OK && version == 1) {
    sqlite3_int64 has_origin = 0;
    rc = query_int(db,
                   "SELECT COUNT(*) FROM pragma_table_info('sync_log')"
                   " WHERE name = 'origin_seq'",
                   &has_origin);
    if (rc == SQLITE_OK && !has_origin) {
      rc = sqlite3_exec(db,
                        "ALTER TABLE sync_log ADD COLUMN origin_seq"
                        " INTEGER NOT NULL DEFAULT 0",
                        NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
      rc = sqlite3_exec(db, migrate_1_sql, NULL, NULL, NULL);
    }
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  }
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(db)) {
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  }
  return rc == SQLITE_OK ? 0 : open_error(rc);
}

/* Create the schema in an empty database.  Another opener may be doing
 * the same: IF NOT EXISTS and OR IGNORE make the race harmless. */
static int create_schema(sqlite3 *db) {
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
      rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(db)) {
      sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
  }
  return rc == SQLITE_OK ? 0 : open_error(rc);
}

static int prepare_all(sp_sqlite_store *s) {
  for (int i = 0; i < ST_NSTMT; ++i) {
    int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
    if (rc != SQLITE_OK) {
      /* A plain SQL error here means a table or column is missing: the
       * file says it is a sync log but does not have the schema. */
      return (rc & 0xff) == SQLITE_ERROR ? SP_ERR_STORE_CORRUPT
                                         : open_error(rc);
    }
  }
  return 0;
}

static void store_free(sp_sqlite_store *s) {
  sp_mem m = s->mem;

  /* First: the thread commits what is queued, through its own
   * connection. */
  sp_sqlite_worker_stop(s->worker);

  for (int i = 0; i < ST_NSTMT; ++i) {
    sqlite3_finalize(s->st[i]);
  }
  sqlite3_finalize(s->ack_save);
  sqlite3_finalize(s->ack_load);
  sqlite3_close(s->snapin);
  sqlite3_close(s->db);
  sp_free(&m, s);
}

int sp_sqlite_store_open(sp_sqlite_store **pstore, const char *path,
                         const sp_sqlite_config *cfg, const sp_mem *mem) {
  sp_sqlite_config defaults, full;
  sp_sqlite_store *s;
  sp_mem m;
  int flags, rc, rv;

  if (pstore) {
    *pstore = NULL;
  }
  snprintf(open_errmsg, sizeof(open_errmsg), "%s",
           sp_strerror(SP_ERR_INVALID_ARGUMENT));
  if (!pstore || !path) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!cfg) {
    sp_sqlite_config_default(&defaults);
    cfg = &defaults;
  }
  if (cfg->version == 0 || cfg->version > SP_SQLITE_CONFIG_VERSION) {
    snprintf(open_errmsg, sizeof(open_errmsg), "%s",
             sp_strerror(SP_ERR_VERSION));
    return SP_ERR_VERSION;
  }
  if (cfg->version == 1) {
    /* An older caller's struct ends before the version 2 fields. */
    sp_sqlite_config_default(&full);
    memcpy(&full, cfg, offsetof(sp_sqlite_config, apply_thread));
    full.version = SP_SQLITE_CONFIG_VERSION;
    cfg = &full;
  }
  if ((cfg->synchronous != SP_SQLITE_SYNC_NORMAL &&
       cfg->synchronous != SP_SQLITE_SYNC_FULL) ||
      cfg->busy_timeout_ms < 0 ||
      (cfg->apply_thread != 0 && cfg->apply_thread != 1) ||
      (cfg->apply_thread && cfg->read_only)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  sp_mem_resolve(&m, mem);
  s = sp_calloc(&m, 1, sizeof(*s));
  if (!s) {
    snprintf(open_errmsg, sizeof(open_errmsg), "%s",
             sp_strerror(SP_ERR_NOMEM));
    return SP_ERR_NOMEM;
  }
  s->mem = m;

  flags = SQLITE_OPEN_NOMUTEX;
  if (cfg->read_only) {
    flags |= SQLITE_OPEN_READONLY;
  } else {
    flags |= SQLITE_OPEN_READWRITE | (cfg->create ? SQLITE_OPEN_CREATE : 0);
  }
  rc = sqlite3_open_v2(path, &s->db, flags, NULL);
  if (rc != SQLITE_OK) {
    rv = s->db ? open_error(rc) : SP_ERR_NOMEM;
    goto fail;
  }
  sqlite3_busy_timeout(s->db, cfg->busy_timeout_ms);

  rv = recognise(s->db);
  if (rv == 1 && (!cfg->create || cfg->read_only)) {
    /* An empty file is a new log only where creating is allowed. */
    rv = SP_ERR_STORE_CORRUPT;
  }
  if (rv == 2 && cfg->read_only) {
    /* An older schema is migrated by the first writable open. */
    rv = SP_ERR_VERSION;
  }
  if (rv < 0) {
    goto fail;
  }
  /* WAL is a property of the file and cannot change inside the
   * transaction that creates the schema, so it comes first. */
  if (!cfg->read_only) {
    int rv2 = exec_pragma(s->db, "PRAGMA journal_mode = WAL");
    if (rv2 != 0) {
      rv = rv2;
      goto fail;
    }
  }
  if (rv == 1 || rv == 2) {
    rv = rv == 1 ? create_schema(s->db) : migrate(s->db);
    if (rv != 0) {
      goto fail;
    }
  }
  s->sync_full = cfg->synchronous == SP_SQLITE_SYNC_FULL;
  rv = exec_pragma(s->db, s->sync_full ? "PRAGMA synchronous = FULL"
                                       : "PRAGMA synchronous = NORMAL");
  if (rv != 0) {
    goto fail;
  }
  rv = prepare_all(s);
  if (rv != 0) {
    goto fail;
  }
  rv = begin_read(s);
  if (rv == 0) {
    rv = check_consistent(s);
    end_read(s);
  }
  if (rv != 0) {
    goto fail;
  }
  if (cfg->apply_thread) {
    rv = sp_sqlite_worker_start(s, path, cfg);
    if (rv != 0) {
      goto fail;
    }
  }
  *pstore = s;
  open_errmsg[0] = '\0';
  return 0;

fail:
  {
    int err = errno;
    if (s->db) {
      sp_sqlite_keep_error(s);
    }
    snprintf(open_errmsg, sizeof(open_errmsg), "%s",
             s->errmsg[0] ? s->errmsg : sp_strerror(rv));
    if (s->db && sqlite3_system_errno(s->db)) {
      err = sqlite3_system_errno(s->db);
    }
    store_free(s);
    errno = err;
  }
  return rv;
}

void sp_sqlite_store_close(sp_sqlite_store *store) {
  if (store) {
    store_free(store);
  }
}

/* -- leader -- */

int sp_sqlite_store_append(sp_sqlite_store *store, const sp_entry *entries,
                           size_t n, sp_seq *first) {
  uint8_t prev[SP_HASH_LEN];
  sp_seq base;
  meta m;
  int rv;

  if (!store || !entries || n == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(store);
  if (rv != 0) {
    return rv;
  }
  for (size_t i = 0; i < n; ++i) {
    if (sp_enc_check_entry(&entries[i]) != 0 ||
        entries[i].origin_seq > SEQ_MAX) {
      return SP_ERR_INVALID_ARGUMENT;
    }
  }
  rv = begin_write(store);
  if (rv != 0) {
    return rv;
  }
  /* Read under the write lock: another connection may have appended. */
  rv = meta_get(store, &m);
  if (rv == 0 && (m.applied >= SEQ_MAX || n > SEQ_MAX - m.applied)) {
    rv = SP_ERR_STORE;
  }
  if (rv != 0) {
    goto fail;
  }
  base = m.applied;
  memcpy(prev, m.head_hash, SP_HASH_LEN);
  for (size_t i = 0; i < n; ++i) {
    sp_entry e = entries[i];
    e.sequence = base + 1 + i;
    if (e.origin_seq) {
      /* Committed one by one, so a repeat within the batch is caught;
       * held once and pruned counts too. */
      rv = sp_sqlite_origin_taken(store, &e.device_id, e.origin_seq);
      if (rv == 1) {
        rv = SP_ERR_EXISTS;
        goto fail;
      }
      if (rv == 0) {
        rv = sp_sqlite_origin_commit(store, &e, 1);
      }
      if (rv != 0) {
        goto fail;
      }
    }
    rv = sp_chain_next(prev, &e, prev);
    if (rv == 0) {
      rv = insert_row(store, &e, prev);
    }
    if (rv != 0) {
      goto fail;
    }
  }
  m.applied = base + n;
  memcpy(m.head_hash, prev, SP_HASH_LEN);
  rv = meta_put(store, &m);
  if (rv != 0) {
    goto fail;
  }
  sqlite3_clear_bindings(store->st[ST_INSERT]);
  rv = commit(store);
  if (rv == 0 && first) {
    *first = base + 1;
  }
  return rv == 0 ? 0 : SP_ERR_STORE;

fail:
  sqlite3_clear_bindings(store->st[ST_INSERT]);
  rollback(store);
  return rv == SP_ERR_EXISTS ? rv : SP_ERR_STORE;
}

int sp_sqlite_store_prune(sp_sqlite_store *store, sp_seq through) {
  sqlite3_stmt *st;
  meta m;
  int rv, rc;

  if (!store) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(store);
  if (rv != 0) {
    return rv;
  }
  rv = begin_write(store);
  if (rv != 0) {
    return rv;
  }
  rv = meta_get(store, &m);
  if (rv != 0) {
    goto fail;
  }
  if (through > m.applied) {
    rollback(store);
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (through <= m.pruned_through) {
    rollback(store);
    return 0;
  }
  /* The kept link is the one after the last entry at or below `through`;
   * with none there (a gap after the old prune point) it is unchanged. */
  st = store->st[ST_LAST_AT_OR_BELOW];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)through);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    rv = copy_hash(st, 0, m.pruned_hash);
  } else if (rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(st);
  if (rv != 0) {
    goto fail;
  }
  st = store->st[ST_DELETE_THROUGH];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)through);
  rv = run(st);
  if (rv != 0) {
    goto fail;
  }
  m.pruned_through = through;
  rv = meta_put(store, &m);
  if (rv != 0) {
    goto fail;
  }
  return commit(store);

fail:
  rollback(store);
  return SP_ERR_STORE;
}

int sp_sqlite_store_set_epoch(sp_sqlite_store *store, uint64_t epoch) {
  meta m;
  int rv;

  if (!store) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(store);
  if (rv != 0) {
    return rv;
  }
  rv = begin_write(store);
  if (rv != 0) {
    return rv;
  }
  rv = meta_get(store, &m);
  if (rv != 0) {
    rollback(store);
    return SP_ERR_STORE;
  }
  if (epoch <= m.epoch) {
    rollback(store);
    return epoch == m.epoch ? 0 : SP_ERR_INVALID_ARGUMENT;
  }
  m.epoch = epoch;
  rv = meta_put(store, &m);
  if (rv != 0) {
    rollback(store);
    return SP_ERR_STORE;
  }
  return commit(store);
}

int sp_sqlite_store_reset(sp_sqlite_store *store, sp_seq applied,
                          const uint8_t head_hash[SP_HASH_LEN]) {
  meta m;
  int rv;

  /* Position 0 has the all-zero link by definition (sys/store.h). */
  if (!store || !head_hash || applied > SEQ_MAX ||
      (applied == 0 && memcmp(head_hash, zero_hash, SP_HASH_LEN) != 0)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(store);
  if (rv != 0) {
    return rv;
  }
  rv = begin_write(store);
  if (rv != 0) {
    return rv;
  }
  rv = meta_get(store, &m);
  if (rv == 0) {
    rv = sp_sqlite_outbox_put_back(store, applied);
  }
  if (rv == 0) {
    rv = run(store->st[ST_DELETE_ALL]);
  }
  if (rv == 0) {
    /* Nothing at or below `applied` can be served any more. */
    m.applied = applied;
    m.pruned_through = applied;
    memcpy(m.head_hash, head_hash, SP_HASH_LEN);
    memcpy(m.pruned_hash, head_hash, SP_HASH_LEN);
    rv = meta_put(store, &m);
  }
  if (rv != 0) {
    rollback(store);
    return SP_ERR_STORE;
  }
  return commit(store);
}

static int status_full(sp_sqlite_store *store, sp_sqlite_status *out) {
  sqlite3_stmt *st;
  meta m;
  int rv;

  if (!store || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(store);
  if (rv != 0) {
    return rv;
  }
  rv = begin_read(store);
  if (rv != 0) {
    return rv;
  }
  rv = meta_get(store, &m);
  if (rv != 0) {
    goto out;
  }
  memset(out, 0, sizeof(*out));
  st = store->st[ST_COUNT_ROWS];
  if (sqlite3_step(st) == SQLITE_ROW) {
    out->entry_count = (uint64_t)sqlite3_column_int64(st, 0);
  } else {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(st);
  st = store->st[ST_EDGES];
  if (rv == 0 && sqlite3_step(st) == SQLITE_ROW) {
    out->first = (sp_seq)sqlite3_column_int64(st, 0);
    out->latest = (sp_seq)sqlite3_column_int64(st, 1);
  } else {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(st);
  out->pruned_through = m.pruned_through;
  memcpy(out->head_hash, m.head_hash, SP_HASH_LEN);
  out->epoch = m.epoch;
out:
  end_read(store);
  return rv == 0 ? 0 : SP_ERR_STORE;
}

/* Version 2 of the struct must add its size here. */
_Static_assert(SP_SQLITE_STATUS_VERSION == 1, "sp_sqlite_status sizes");

int sp_sqlite_store_status_versioned(sp_sqlite_store *store, int version,
                                     sp_sqlite_status *out) {
  sp_sqlite_status full;
  int rv;

  if (!store || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (version != 1) {
    return SP_ERR_VERSION;
  }
  rv = status_full(store, &full);
  if (rv == 0) {
    sp_abi_copy(out, &full, SP_ABI_END(sp_sqlite_status, epoch));
  }
  return rv;
}

int sp_sqlite_store_verify(sp_sqlite_store *store,
                           uint8_t digest[SP_HASH_LEN]) {
  sqlite3_stmt *st;
  uint8_t prev[SP_HASH_LEN], link[SP_HASH_LEN];
  sp_seq last;
  meta m;
  int rv, rc;

  if (!store) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = sp_sqlite_worker_sync(store);
  if (rv != 0) {
    return rv;
  }
  /* One read transaction: rows and metadata from the same snapshot. */
  rv = begin_read(store);
  if (rv != 0) {
    return rv;
  }
  rv = meta_get(store, &m);
  if (rv != 0) {
    end_read(store);
    return rv == SP_ERR_STORE_CORRUPT ? SP_ERR_CHAIN_MISMATCH : rv;
  }
  memcpy(prev, m.pruned_hash, SP_HASH_LEN);
  last = m.pruned_through;
  st = store->st[ST_READ];
  sqlite3_bind_int64(st, 1, INT64_MIN);
  sqlite3_bind_int64(st, 2, INT64_MAX);
  sqlite3_bind_int64(st, 3, -1);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const uint8_t *hash;
    sp_entry e;

    if (row_entry(st, &e, &hash) != 0 || e.sequence <= last ||
        sp_chain_next(prev, &e, link) != 0 ||
        memcmp(link, hash, SP_HASH_LEN) != 0) {
      rv = SP_ERR_CHAIN_MISMATCH;
      break;
    }
    memcpy(prev, link, SP_HASH_LEN);
    last = e.sequence;
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(st);
  end_read(store);
  if (rv == 0 && (last != m.applied ||
                  memcmp(prev, m.head_hash, SP_HASH_LEN) != 0)) {
    rv = SP_ERR_CHAIN_MISMATCH;
  }
  if (rv == 0 && digest) {
    memcpy(digest, prev, SP_HASH_LEN);
  }
  return rv;
}

/* -- vtable -- */

static int vt_read(sp_seq after, sp_seq through, size_t max_count,
                   sp_entry_sink sink, void *sink_ctx, void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st = s->st[ST_READ];

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  if (max_count == 0 || after >= through || after >= SEQ_MAX) {
    return 0;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)(through > SEQ_MAX ? SEQ_MAX
                                                              : through));
  sqlite3_bind_int64(st, 3, sp_sqlite_limit(max_count));
  return sp_sqlite_read_rows(s, st, row_entry, sink, sink_ctx);
}

static int vt_bounds(sp_log_bounds *out, void *user_data) {
  meta m;
  int rv;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = meta_get(user_data, &m);
  if (rv == 0) {
    out->pruned_through = m.pruned_through;
    out->latest = m.applied;
  }
  return rv;
}

static int vt_hash_at(sp_seq sequence, uint8_t out[SP_HASH_LEN],
                      void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st = s->st[ST_HASH_AT];
  int rv, rc;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (sequence == 0) {
    memcpy(out, zero_hash, SP_HASH_LEN);
    return 0;
  }
  if (sequence > SEQ_MAX) {
    return SP_ERR_NOT_FOUND;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)sequence);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    rv = copy_hash(st, 0, out);
  } else {
    rv = rc == SQLITE_DONE ? SP_ERR_NOT_FOUND : SP_ERR_STORE;
  }
  sqlite3_reset(st);
  return rv;
}

int sp_sqlite_check_batch(const sp_entry *entries, const uint8_t *hashes,
                          size_t n) {
  sp_seq prev = 0;

  if (n && (!entries || !hashes)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  for (size_t i = 0; i < n; ++i) {
    if (entries[i].sequence <= prev || entries[i].sequence > SEQ_MAX ||
        entries[i].origin_seq > SEQ_MAX ||
        sp_enc_check_entry(&entries[i]) != 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
    prev = entries[i].sequence;
  }
  return 0;
}

int sp_sqlite_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                    uint64_t epoch, void *user_data) {
  sp_sqlite_store *s = user_data;
  int rv;

  if (n && (!entries || !hashes)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  /* Everything that can be checked without the file, before touching it. */
  rv = sp_sqlite_check_batch(entries, hashes, n);
  return rv != 0 ? rv : sp_sqlite_apply_checked(s, entries, hashes, n, epoch);
}

int sp_sqlite_apply_checked(sp_sqlite_store *s, const sp_entry *entries,
                            const uint8_t *hashes, size_t n, uint64_t epoch) {
  meta m;
  int rv;

  rv = begin_write(s);
  if (rv != 0) {
    return rv;
  }
  rv = meta_get(s, &m);
  if (rv != 0) {
    goto fail;
  }
  if (n && entries[0].sequence <= m.applied) {
    rv = SP_ERR_INVALID_ARGUMENT;
    goto fail;
  }
  if (n == 0 && epoch <= m.epoch) {
    rollback(s);
    return 0;
  }
  for (size_t i = 0; i < n; ++i) {
    rv = insert_row(s, &entries[i], hashes + i * SP_HASH_LEN);
    if (rv != 0) {
      goto fail;
    }
  }
  rv = n ? sp_sqlite_outbox_retire(s, entries, n) : 0;
  if (rv != 0) {
    goto fail;
  }
  if (n) {
    m.applied = entries[n - 1].sequence;
    memcpy(m.head_hash, hashes + (n - 1) * SP_HASH_LEN, SP_HASH_LEN);
  }
  if (epoch > m.epoch) {
    m.epoch = epoch;
  }
  rv = meta_put(s, &m);
  if (rv != 0) {
    goto fail;
  }
  sqlite3_clear_bindings(s->st[ST_INSERT]);
  return commit(s);

fail:
  sqlite3_clear_bindings(s->st[ST_INSERT]);
  rollback(s);
  return rv;
}

int sp_sqlite_state(sp_store_state *out, void *user_data) {
  meta m;
  int rv;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = meta_get(user_data, &m);
  if (rv == 0) {
    out->applied = m.applied;
    memcpy(out->head_hash, m.head_hash, SP_HASH_LEN);
    out->epoch = m.epoch;
  }
  return rv;
}

/* -- follower positions (vtable version 2) -- */

static const char ack_table_sql[] =
    "CREATE TABLE IF NOT EXISTS sync_follower_ack("
    " device BLOB PRIMARY KEY,"
    " key BLOB NOT NULL,"
    " acked INTEGER NOT NULL,"
    " hash BLOB NOT NULL) WITHOUT ROWID";

/* 1 if the table exists, 0 if not, or an error. */
static int ack_table_exists(sp_sqlite_store *s) {
  sqlite3_int64 n = 0;
  int rc = query_int(s->db,
                     "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
                     " AND name = 'sync_follower_ack'",
                     &n);
  return rc == SQLITE_OK ? n > 0 : SP_ERR_STORE;
}

static int ack_prepare(sp_sqlite_store *s, sqlite3_stmt **st,
                       const char *sql) {
  if (*st) {
    return 0;
  }
  return sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
                            NULL) == SQLITE_OK
             ? 0
             : SP_ERR_STORE;
}

/*
 * One row, one statement, so one implicit transaction: key and position
 * change together.  Under synchronous=NORMAL a WAL commit is not synced,
 * so a save costs a WAL append; under FULL it costs a sync, which is why
 * the leader saves at most about once a second per follower (and when it
 * reaches the latest entry) rather than on every acknowledgement.
 */
static int vt_save_follower_ack(const sp_uuid *device,
                                const uint8_t key[SP_PUBLIC_KEY_LEN],
                                sp_seq acked, const uint8_t hash[SP_HASH_LEN],
                                void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st;
  int rv;

  if (!device || !key || !hash || acked > SEQ_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  if (!s->ack_save) {
    if (sqlite3_exec(s->db, ack_table_sql, NULL, NULL, NULL) != SQLITE_OK) {
      return SP_ERR_STORE;
    }
    rv = ack_prepare(s, &s->ack_save,
                     "INSERT OR REPLACE INTO sync_follower_ack(device, key,"
                     " acked, hash) VALUES(?1, ?2, ?3, ?4)");
    if (rv != 0) {
      return rv;
    }
  }
  st = s->ack_save;
  sqlite3_bind_blob(st, 1, device->bytes, (int)sizeof(device->bytes),
                    SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, key, SP_PUBLIC_KEY_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)acked);
  sqlite3_bind_blob(st, 4, hash, SP_HASH_LEN, SQLITE_STATIC);
  rv = run(st);
  sqlite3_clear_bindings(st);
  return rv;
}

static int vt_load_follower_acks(sp_follower_ack_sink sink, void *sink_ctx,
                                 void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st;
  int rv = 0, rc, bad = 0;

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!s->ack_load) {
    rv = ack_table_exists(s);
    if (rv <= 0) {
      return rv; /* never saved: nothing kept */
    }
    rv = ack_prepare(s, &s->ack_load,
                     "SELECT device, key, acked, hash"
                     " FROM sync_follower_ack");
    if (rv != 0) {
      return rv;
    }
  }
  st = s->ack_load;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    sp_uuid device;
    const void *d = sqlite3_column_blob(st, 0);
    const void *k = sqlite3_column_blob(st, 1);
    sqlite3_int64 acked = sqlite3_column_int64(st, 2);
    const void *hash = sqlite3_column_blob(st, 3);

    if (!d || sqlite3_column_bytes(st, 0) != (int)sizeof(device.bytes) ||
        !k || sqlite3_column_bytes(st, 1) != SP_PUBLIC_KEY_LEN ||
        acked < 0 || !hash || sqlite3_column_bytes(st, 3) != SP_HASH_LEN) {
      bad = 1; /* one bad row hides no other position: said at the end */
      continue;
    }
    memcpy(device.bytes, d, sizeof(device.bytes));
    rv = sink(&device, k, (sp_seq)acked, hash, sink_ctx);
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  if (rv == 0 && bad) {
    rv = SP_ERR_STORE_CORRUPT;
  }
  sqlite3_reset(st);
  return rv;
}

/* -- follower addresses (vtable version 2) -- */

/* Saved once per incoming connection and loaded once per leader term:
 * the statements are prepared per call rather than kept. */
static int vt_save_follower_address(const sp_uuid *device,
                                    const char *address, void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st = NULL;
  size_t len;
  int rv;

  if (!device || !address) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  len = strlen(address);
  if (len >= SP_PEER_ADDRESS_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  if (sqlite3_exec(s->db,
                   "CREATE TABLE IF NOT EXISTS sync_follower_address("
                   " device BLOB PRIMARY KEY,"
                   " address TEXT NOT NULL) WITHOUT ROWID",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(s->db,
                         len ? "INSERT OR REPLACE INTO sync_follower_address"
                               "(device, address) VALUES(?1, ?2)"
                             : "DELETE FROM sync_follower_address"
                               " WHERE device = ?1",
                         -1, &st, NULL) != SQLITE_OK) {
    sqlite3_finalize(st);
    return SP_ERR_STORE;
  }
  sqlite3_bind_blob(st, 1, device->bytes, (int)sizeof(device->bytes),
                    SQLITE_STATIC);
  if (len) {
    sqlite3_bind_text(st, 2, address, (int)len, SQLITE_STATIC);
  }
  rv = run(st);
  sqlite3_finalize(st);
  return rv;
}

static int vt_load_follower_addresses(sp_follower_address_sink sink,
                                      void *sink_ctx, void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st = NULL;
  sqlite3_int64 n = 0;
  int rv = 0, rc;

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (query_int(s->db,
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
                " AND name = 'sync_follower_address'",
                &n) != SQLITE_OK) {
    return SP_ERR_STORE;
  }
  if (n == 0) {
    return 0; /* never saved: nothing kept */
  }
  if (sqlite3_prepare_v2(s->db,
                         "SELECT device, address FROM sync_follower_address",
                         -1, &st, NULL) != SQLITE_OK) {
    sqlite3_finalize(st);
    return SP_ERR_STORE;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    sp_uuid device;
    const void *d = sqlite3_column_blob(st, 0);
    const unsigned char *a = sqlite3_column_text(st, 1);

    if (!d || sqlite3_column_bytes(st, 0) != (int)sizeof(device.bytes) ||
        !a || sqlite3_column_bytes(st, 1) >= SP_PEER_ADDRESS_MAX) {
      rv = SP_ERR_STORE_CORRUPT;
      break;
    }
    memcpy(device.bytes, d, sizeof(device.bytes));
    rv = sink(&device, (const char *)a, sink_ctx);
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_finalize(st);
  return rv;
}

int sp_sqlite_store_get_vtable_versioned(sp_sqlite_store *store, int version,
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
  out->apply = sp_sqlite_apply;
  out->state = sp_sqlite_state;
  out->save_follower_ack = vt_save_follower_ack;
  out->load_follower_acks = vt_load_follower_acks;
  out->save_follower_address = vt_save_follower_address;
  out->load_follower_addresses = vt_load_follower_addresses;
  sp_sqlite_outbox_vtable(out);
  out->errmsg = vt_errmsg;
  if (store && store->worker) {
    sp_sqlite_worker_vtable(store, out, version);
  }
  sp_abi_copy(dst, &full, n);
  return 0;
}
