/*
 * sp_sqlite_int.h: what the SQLite store's files share (the store object,
 * its prepared statements and transaction helpers).
 */
#ifndef SP_SQLITE_INT_H
#define SP_SQLITE_INT_H

#include <stdint.h>

#include <sqlite3.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/sqlite_store.h"

#define SEQ_MAX ((sp_seq)INT64_MAX)

enum {
  ST_BEGIN_WRITE,
  ST_BEGIN_READ,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_META_GET,
  ST_META_PUT,
  ST_INSERT,
  ST_READ,
  ST_HASH_AT,
  ST_LAST_AT_OR_BELOW,
  ST_DELETE_THROUGH,
  ST_DELETE_ALL,
  ST_EDGES,
  ST_COUNT_ROWS,
  /* schema 2: origin ids and the outbox (sp_sqlite_outbox.c) */
  ST_ORIGIN_FIND,
  ST_RANGE_BEFORE,
  ST_RANGE_UPTO,
  ST_RANGE_DELETE,
  ST_RANGE_INSERT,
  ST_OBOX_META_GET,
  ST_OBOX_META_PUT,
  ST_OBOX_INSERT,
  ST_OBOX_READ,
  ST_OBOX_SIZE,
  ST_OBOX_DELETE,
  ST_OBOX_PUT_BACK,
  ST_OBOX_TOTALS,
  ST_OBOX_NEGATE_SHIFT,
  ST_OBOX_NEGATE,
  ST_NSTMT
};

/* The apply thread (sp_sqlite_worker.c). */
typedef struct sp_sqlite_worker sp_sqlite_worker;

struct sp_sqlite_store {
  sp_mem mem;
  sqlite3 *db;
  sqlite3_stmt *st[ST_NSTMT];
  /* Follower positions: prepared on first use, once the table exists. */
  sqlite3_stmt *ack_save;
  sqlite3_stmt *ack_load;
  /* Opened with SP_SQLITE_SYNC_FULL (else the outbox switches to FULL
   * around its own transactions: sp_sqlite_outbox.c). */
  int sync_full;
  /* Set while `read` feeds a sink: the row statement cannot be re-entered
   * and the table must not change under it, so only the one-row queries
   * (bounds, hash_at, state) are allowed from inside a sink. */
  int reading;
  /* The snapshot sink's side database (<path>-snapin), opened on first
   * use, closed and deleted once emptied (sp_sqlite_snap.c). */
  sqlite3 *snapin;
  /* sp_sqlite_store_errmsg: why the last failed call failed, kept before
   * a rollback (which succeeds, and so clears SQLite's own). */
  char errmsg[256];
  /* Opened with apply_thread: the thread and its queue; NULL without. */
  sp_sqlite_worker *worker;
};

/* -- transactions -- */

/* Step a statement that returns no row, and make it reusable. */
static inline int run(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : SP_ERR_STORE;
}

/* Keep SQLite's text of the failure the connection just had, if it had
 * one (sp_sqlite_store_errmsg).  With its errno when the OS refused. */
void sp_sqlite_keep_error(sp_sqlite_store *s);

/* Every call starts at most one transaction: a new one starts without
 * the previous call's failure. */
static inline int begin_write(sp_sqlite_store *s) {
  s->errmsg[0] = '\0';
  if (run(s->st[ST_BEGIN_WRITE]) != 0) {
    sp_sqlite_keep_error(s);
    return SP_ERR_STORE;
  }
  return 0;
}

static inline int begin_read(sp_sqlite_store *s) {
  s->errmsg[0] = '\0';
  if (run(s->st[ST_BEGIN_READ]) != 0) {
    sp_sqlite_keep_error(s);
    return SP_ERR_STORE;
  }
  return 0;
}

/* Roll back if a transaction is still open (SQLite may already have rolled
 * it back on its own after an I/O or full-disk error).  Every failure
 * inside a transaction ends here: the failure's text is kept first. */
static inline void rollback(sp_sqlite_store *s) {
  sp_sqlite_keep_error(s);
  if (!sqlite3_get_autocommit(s->db)) {
    run(s->st[ST_ROLLBACK]);
  }
}

static inline int commit(sp_sqlite_store *s) {
  if (run(s->st[ST_COMMIT]) != 0) {
    rollback(s);
    return SP_ERR_STORE;
  }
  return 0;
}

/* End a read-only transaction; nothing to keep, so roll back. */
static inline void end_read(sp_sqlite_store *s) { rollback(s); }

/* -- rows (sp_sqlite_store.c), shared by the log and the outbox -- */

/* A LIMIT parameter: SQLite takes -1 for none. */
static inline sqlite3_int64 sp_sqlite_limit(size_t max_count) {
  return max_count > (size_t)INT64_MAX ? -1 : (sqlite3_int64)max_count;
}

/* Bind an entry's fields to parameters ?2..?8, in the column order the
 * log and the outbox share (device_id .. data); the pointers must live
 * until the statement is stepped. */
void sp_sqlite_bind_entry(sqlite3_stmt *st, const sp_entry *e);

/* Decode columns 1..7 of the current row (the same order) into `e`;
 * pointers valid until the next step.  0 or SP_ERR_STORE_CORRUPT. */
int sp_sqlite_column_entry(sqlite3_stmt *st, sp_entry *e);

/* Decode the current row into `e` (and `*hash`, left NULL where the rows
 * have none): 0 or an error. */
typedef int (*sp_sqlite_row_fn)(sqlite3_stmt *st, sp_entry *e,
                                const uint8_t **hash);

/* Step the bound statement `st`, feeding every row to `sink` with
 * s->reading set, then reset it: 0 (also when the sink stops with a
 * positive value), the first error of `row` or `sink`, or SP_ERR_STORE. */
int sp_sqlite_read_rows(sp_sqlite_store *s, sqlite3_stmt *st,
                        sp_sqlite_row_fn row, sp_entry_sink sink,
                        void *sink_ctx);

/* The vtable's apply and state as a store without the apply thread runs
 * them (user_data is the store): the apply thread commits through the
 * same apply on its own connection. */
int sp_sqlite_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                    uint64_t epoch, void *user_data);
int sp_sqlite_state(sp_store_state *out, void *user_data);
/* sp_sqlite_apply in two: what it refuses without the file (0 or
 * SP_ERR_INVALID_ARGUMENT), and the transaction, for a batch that passed
 * the check already (the apply thread's, checked when it was queued). */
int sp_sqlite_check_batch(const sp_entry *entries, const uint8_t *hashes,
                          size_t n);
int sp_sqlite_apply_checked(sp_sqlite_store *s, const sp_entry *entries,
                            const uint8_t *hashes, size_t n, uint64_t epoch);

/* -- origin ids and the outbox (sp_sqlite_outbox.c) -- */

/* 1 if (device, origin) is in the log's committed set (every origin id
 * the log ever held: sync_origin_range), 0 if not, or SP_ERR_STORE. */
int sp_sqlite_origin_taken(sp_sqlite_store *s, const sp_uuid *device,
                           uint64_t origin);

/* Inside a write transaction: add the origins of entries[0, n) (those
 * not 0) to the committed set. */
int sp_sqlite_origin_commit(sp_sqlite_store *s, const sp_entry *entries,
                            size_t n);

/* Inside apply's transaction, after its rows: record the entries' origins
 * in the committed set, retire the outbox items they commit, raise the
 * next origin. */
int sp_sqlite_outbox_retire(sp_sqlite_store *s, const sp_entry *entries,
                            size_t n);

/* Inside reset's transaction, before the rows go: put back into the
 * outbox the outbox device's rows above `applied`. */
int sp_sqlite_outbox_put_back(sp_sqlite_store *s, sp_seq applied);

/* Inside a snapshot install's transaction, with the new committed set
 * already in sync_origin_range and the discarded rows still in sync_log:
 * the full-sync outbox rules (sys/store.h): put back this device's
 * discarded writes the new set lacks, retire the items it holds, raise
 * next_origin above the device's highest in it. */
int sp_sqlite_outbox_full_sync(sp_sqlite_store *s);

/* Tests only: called after each row a snapshot install inserts (with the
 * count so far), inside the install's transaction; NULL: none. */
void sp_sqlite_snap_set_test_hook(void (*fn)(uint64_t rows));

/* Fill the version 3 callbacks of `out`. */
void sp_sqlite_outbox_vtable(sp_store *out);

#endif /* SP_SQLITE_INT_H */
