/*
 * sp_sqlite_outbox.c: the SQLite store's write path (sys/store.h,
 * version 3): origin ids of the log, and the outbox.
 *
 * Every call is one transaction, like the rest of the store, and the
 * outbox's counters live in its one metadata row, changed in the same
 * transaction as the items they count, so outbox_stats reads one row.
 * Origins are kept below INT64_MAX (an INTEGER column keeps their order).
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "sp_enc.h"
#include "sp_sqlite_int.h"

typedef struct obox_meta {
  uint64_t next_origin;
  int anchored;
  int has_device;
  sp_uuid device;
  uint64_t items;
  uint64_t bytes;
} obox_meta;

static int obox_get(sp_sqlite_store *s, obox_meta *m) {
  sqlite3_stmt *st = s->st[ST_OBOX_META_GET];
  sqlite3_int64 next, anchored, items, bytes;
  int rc, rv = 0;

  memset(m, 0, sizeof(*m));
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    rv = rc == SQLITE_DONE ? SP_ERR_STORE_CORRUPT : SP_ERR_STORE;
    goto out;
  }
  next = sqlite3_column_int64(st, 0);
  anchored = sqlite3_column_int64(st, 1);
  items = sqlite3_column_int64(st, 3);
  bytes = sqlite3_column_int64(st, 4);
  if (next < 1 || (anchored != 0 && anchored != 1) || items < 0 ||
      bytes < 0) {
    rv = SP_ERR_STORE_CORRUPT;
    goto out;
  }
  if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
    const void *d = sqlite3_column_blob(st, 2);
    if (!d || sqlite3_column_bytes(st, 2) != 16) {
      rv = SP_ERR_STORE_CORRUPT;
      goto out;
    }
    memcpy(m->device.bytes, d, 16);
    m->has_device = 1;
  }
  m->next_origin = (uint64_t)next;
  m->anchored = (int)anchored;
  m->items = (uint64_t)items;
  m->bytes = (uint64_t)bytes;
out:
  sqlite3_reset(st);
  return rv;
}

static int obox_put(sp_sqlite_store *s, const obox_meta *m) {
  sqlite3_stmt *st = s->st[ST_OBOX_META_PUT];
  int rv;

  sqlite3_bind_int64(st, 1, (sqlite3_int64)m->next_origin);
  sqlite3_bind_int(st, 2, m->anchored);
  if (m->has_device) {
    sqlite3_bind_blob(st, 3, m->device.bytes, 16, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 3);
  }
  sqlite3_bind_int64(st, 4, (sqlite3_int64)m->items);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)m->bytes);
  rv = run(st);
  sqlite3_clear_bindings(st);
  if (rv == 0 && sqlite3_changes(s->db) != 1) {
    rv = SP_ERR_STORE_CORRUPT;
  }
  return rv;
}

/*
 * outbox_put, outbox_remove and outbox_anchor are durable against power
 * loss whatever the store's setting.  Under synchronous=NORMAL a WAL
 * commit is not synced: a lost outbox_put whose items were already
 * proposed would give their origins to other writes (an origin is never
 * assigned twice), a lost remove would bring back a refused item, a lost
 * anchor would renumber items already sent.  These transactions run under
 * FULL (the WAL synced at commit).  The setting is applied when the
 * pragma is prepared, so it is executed each time, around the
 * transaction; the log's own transactions keep the configured one.
 */
static void end_durable(sp_sqlite_store *s) {
  if (!s->sync_full) {
    sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
  }
}

static int begin_durable(sp_sqlite_store *s) {
  int rv;

  if (!s->sync_full && sqlite3_exec(s->db, "PRAGMA synchronous = FULL",
                                    NULL, NULL, NULL) != SQLITE_OK) {
    end_durable(s);
    return SP_ERR_STORE;
  }
  rv = begin_write(s);
  if (rv != 0) {
    end_durable(s);
  }
  return rv;
}

/* Commit (or roll back if rv != 0) a begin_durable transaction. */
static int end_durable_txn(sp_sqlite_store *s, int rv) {
  if (rv == 0) {
    rv = commit(s);
  } else {
    rollback(s);
  }
  end_durable(s);
  return rv;
}

static void raise_next(obox_meta *m, uint64_t origin) {
  if (origin < SEQ_MAX && origin >= m->next_origin) {
    m->next_origin = origin + 1;
  }
}

/* Run a range statement (ST_RANGE_DELETE, ST_RANGE_INSERT) with
 * (device, a, b): 0 or SP_ERR_STORE. */
static int range_run(sp_sqlite_store *s, int which, const sp_uuid *device,
                     uint64_t a, uint64_t b) {
  sqlite3_stmt *st = s->st[which];

  sqlite3_bind_blob(st, 1, device->bytes, 16, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)a);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)b);
  return run(st);
}

/* The range of `device` starting at or below `origin` nearest to it:
 * 1 with *lo, *hi; 0 if none; or SP_ERR_STORE. */
static int range_before(sp_sqlite_store *s, const sp_uuid *device,
                        uint64_t origin, uint64_t *lo, uint64_t *hi) {
  sqlite3_stmt *st = s->st[ST_RANGE_BEFORE];
  int rc;

  sqlite3_bind_blob(st, 1, device->bytes, 16, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)origin);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *lo = (uint64_t)sqlite3_column_int64(st, 0);
    *hi = (uint64_t)sqlite3_column_int64(st, 1);
  }
  sqlite3_reset(st);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : SP_ERR_STORE;
}

int sp_sqlite_origin_taken(sp_sqlite_store *s, const sp_uuid *device,
                           uint64_t origin) {
  uint64_t lo = 0, hi = 0;
  int rv = range_before(s, device, origin, &lo, &hi);
  return rv == 1 ? hi >= origin : rv;
}

/* Add origins a..b (1 <= a <= b <= SEQ_MAX) of `device`: the ranges
 * touching [a - 1, b + 1] merge into one (a few indexed statements,
 * whatever the number of ranges). */
static int range_add(sp_sqlite_store *s, const sp_uuid *device, uint64_t a,
                     uint64_t b) {
  uint64_t plo = 0, phi = 0, lo = a, hi = b, from = a;
  uint64_t b1 = b < SEQ_MAX ? b + 1 : b;
  sqlite3_stmt *st;
  int rv, rc;

  rv = range_before(s, device, a, &plo, &phi);
  if (rv < 0) {
    return rv;
  }
  if (rv == 1 && phi >= b) {
    return 0;
  }
  if (rv == 1 && phi >= a - 1) {
    lo = from = plo;
    hi = phi > b ? phi : b;
  }
  st = s->st[ST_RANGE_UPTO];
  sqlite3_bind_blob(st, 1, device->bytes, 16, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)a);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)b1);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    uint64_t nhi = (uint64_t)sqlite3_column_int64(st, 0);
    hi = nhi > hi ? nhi : hi;
  }
  sqlite3_reset(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return SP_ERR_STORE;
  }
  rv = range_run(s, ST_RANGE_DELETE, device, from, b1);
  if (rv != 0) {
    return rv;
  }
  return range_run(s, ST_RANGE_INSERT, device, lo, hi);
}

int sp_sqlite_origin_commit(sp_sqlite_store *s, const sp_entry *entries,
                            size_t n) {
  size_t i = 0;

  while (i < n) {
    const sp_entry *e = &entries[i];
    size_t j = i + 1;
    int rv;

    if (e->origin_seq == 0) {
      ++i;
      continue;
    }
    /* A run of consecutive origins of one device is one range. */
    while (j < n && entries[j].origin_seq == entries[j - 1].origin_seq + 1 &&
           sp_uuid_equal(&entries[j].device_id, &e->device_id)) {
      ++j;
    }
    rv = range_add(s, &e->device_id, e->origin_seq,
                   entries[j - 1].origin_seq);
    if (rv != 0) {
      return rv;
    }
    i = j;
  }
  return 0;
}

/* 1 with `*size` if the outbox holds `origin` (of `device`, unless NULL),
 * 0 if not, or SP_ERR_STORE. */
static int item_size(sp_sqlite_store *s, uint64_t origin,
                     const sp_uuid *device, uint64_t *size) {
  sqlite3_stmt *st = s->st[ST_OBOX_SIZE];
  int rc;

  sqlite3_bind_int64(st, 1, (sqlite3_int64)origin);
  if (device) {
    sqlite3_bind_blob(st, 2, device->bytes, 16, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 2);
  }
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *size = (uint64_t)sqlite3_column_int64(st, 0);
  }
  sqlite3_reset(st);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : SP_ERR_STORE;
}

/* Delete item `origin` (known to exist) and count it out of `m`. */
static int item_delete(sp_sqlite_store *s, uint64_t origin, uint64_t size,
                       obox_meta *m) {
  sqlite3_stmt *st = s->st[ST_OBOX_DELETE];
  int rv;

  sqlite3_bind_int64(st, 1, (sqlite3_int64)origin);
  rv = run(st);
  if (rv == 0) {
    m->items = m->items ? m->items - 1 : 0;
    m->bytes = m->bytes >= size ? m->bytes - size : 0;
  }
  return rv;
}

int sp_sqlite_outbox_retire(sp_sqlite_store *s, const sp_entry *entries,
                            size_t n) {
  obox_meta m, before;
  size_t i;
  int rv;

  for (i = 0; i < n && entries[i].origin_seq == 0; ++i) {
  }
  if (i == n) {
    return 0; /* the common case on a log without writes from followers */
  }
  rv = sp_sqlite_origin_commit(s, entries + i, n - i);
  if (rv != 0) {
    return rv;
  }
  rv = obox_get(s, &m);
  before = m;
  for (; rv == 0 && i < n; ++i) {
    const sp_entry *e = &entries[i];
    uint64_t size = 0;

    if (e->origin_seq == 0) {
      continue;
    }
    rv = item_size(s, e->origin_seq, &e->device_id, &size);
    if (rv == 1) {
      rv = item_delete(s, e->origin_seq, size, &m);
      raise_next(&m, e->origin_seq);
    }
    if (m.has_device && sp_uuid_equal(&m.device, &e->device_id)) {
      raise_next(&m, e->origin_seq);
    }
  }
  if (rv == 0 && (m.next_origin != before.next_origin ||
                  m.items != before.items || m.bytes != before.bytes)) {
    rv = obox_put(s, &m);
  }
  return rv;
}

/* Take `origin` of `device` out of the committed set, splitting its
 * range: 0 or SP_ERR_STORE. */
static int range_remove(sp_sqlite_store *s, const sp_uuid *device,
                        uint64_t origin) {
  uint64_t lo = 0, hi = 0;
  int rv = range_before(s, device, origin, &lo, &hi);

  if (rv <= 0 || hi < origin) {
    return rv;
  }
  rv = range_run(s, ST_RANGE_DELETE, device, lo, lo);
  if (rv == 0 && lo < origin) {
    rv = range_run(s, ST_RANGE_INSERT, device, lo, origin - 1);
  }
  if (rv == 0 && origin < hi) {
    rv = range_run(s, ST_RANGE_INSERT, device, origin + 1, hi);
  }
  return rv;
}

/* The rows above `applied` carrying `device`'s origins leave the log
 * (reset) and go back to the outbox: pending again, so no longer in the
 * committed set (else a leader draining the outbox would retire them
 * unappended, and a wait would call them committed).  Rare and usually a
 * few rows: one statement, prepared here. */
static int uncommit_above(sp_sqlite_store *s, const sp_uuid *device,
                          sp_seq applied) {
  sqlite3_stmt *q = NULL;
  int rv = 0, rc;

  if (sqlite3_prepare_v2(s->db,
                         "SELECT origin_seq FROM sync_log WHERE sequence > ?1"
                         " AND device_id = ?2 AND origin_seq != 0",
                         -1, &q, NULL) != SQLITE_OK) {
    sqlite3_finalize(q);
    return SP_ERR_STORE;
  }
  sqlite3_bind_int64(q, 1, (sqlite3_int64)applied);
  sqlite3_bind_blob(q, 2, device->bytes, 16, SQLITE_STATIC);
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    rv = range_remove(s, device, (uint64_t)sqlite3_column_int64(q, 0));
    if (rv != 0) {
      break;
    }
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  return rv;
}

int sp_sqlite_outbox_put_back(sp_sqlite_store *s, sp_seq applied) {
  sqlite3_stmt *st;
  obox_meta m;
  int rv, changed;

  rv = obox_get(s, &m);
  if (rv != 0 || !m.has_device) {
    return rv;
  }
  st = s->st[ST_OBOX_PUT_BACK];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)applied);
  sqlite3_bind_blob(st, 2, m.device.bytes, 16, SQLITE_STATIC);
  rv = run(st);
  changed = rv == 0 && sqlite3_changes(s->db) != 0;
  if (rv == 0) {
    rv = uncommit_above(s, &m.device, applied);
  }
  if (rv != 0 || !changed) {
    return rv;
  }
  /* Rare (a full sync that lost writes): recount rather than track. */
  st = s->st[ST_OBOX_TOTALS];
  if (sqlite3_step(st) == SQLITE_ROW) {
    m.items = (uint64_t)sqlite3_column_int64(st, 0);
    m.bytes = (uint64_t)sqlite3_column_int64(st, 1);
    raise_next(&m, (uint64_t)sqlite3_column_int64(st, 3));
  } else {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(st);
  return rv == 0 ? obox_put(s, &m) : rv;
}

/* Run `sql` (bound: ?1 = `device` if not NULL) once, prepared here: the
 * full-sync statements are rare. */
static int run_once(sp_sqlite_store *s, const char *sql,
                    const sp_uuid *device, sqlite3_int64 *value) {
  sqlite3_stmt *q = NULL;
  int rc;

  if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) {
    sqlite3_finalize(q);
    return SP_ERR_STORE;
  }
  if (device) {
    sqlite3_bind_blob(q, 1, device->bytes, 16, SQLITE_STATIC);
  }
  rc = sqlite3_step(q);
  if (rc == SQLITE_ROW && value) {
    *value = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : SP_ERR_STORE;
}

int sp_sqlite_outbox_full_sync(sp_sqlite_store *s) {
  sqlite3_stmt *st;
  sqlite3_int64 high = 0;
  obox_meta m;
  int rv;

  rv = obox_get(s, &m);
  if (rv == 0 && m.has_device) {
    /* The discarded log's writes of this device the new history never
     * held must be proposed again. */
    rv = run_once(s,
                  "INSERT OR IGNORE INTO sync_outbox(" "origin_seq, device_id,"
                  " timestamp, model_type, record_id, change_type, version,"
                  " data) SELECT origin_seq, device_id, timestamp,"
                  " model_type, record_id, change_type, version, data"
                  " FROM sync_log l WHERE l.device_id = ?1"
                  " AND l.origin_seq != 0 AND NOT EXISTS (SELECT 1 FROM"
                  " sync_origin_range r WHERE r.device = l.device_id"
                  " AND r.lo <= l.origin_seq AND r.hi >= l.origin_seq)",
                  &m.device, NULL);
  }
  if (rv == 0) {
    /* Items the new history holds are committed: nothing to propose. */
    rv = run_once(s,
                  "DELETE FROM sync_outbox WHERE EXISTS (SELECT 1 FROM"
                  " sync_origin_range r WHERE r.device ="
                  " sync_outbox.device_id AND r.lo <= sync_outbox.origin_seq"
                  " AND r.hi >= sync_outbox.origin_seq)",
                  NULL, NULL);
  }
  if (rv == 0 && m.has_device) {
    rv = run_once(s,
                  "SELECT COALESCE(MAX(hi), 0) FROM sync_origin_range"
                  " WHERE device = ?1",
                  &m.device, &high);
  }
  if (rv != 0) {
    return rv;
  }
  st = s->st[ST_OBOX_TOTALS];
  if (sqlite3_step(st) == SQLITE_ROW) {
    m.items = (uint64_t)sqlite3_column_int64(st, 0);
    m.bytes = (uint64_t)sqlite3_column_int64(st, 1);
    raise_next(&m, (uint64_t)sqlite3_column_int64(st, 3));
  } else {
    rv = SP_ERR_STORE;
  }
  sqlite3_reset(st);
  if (high > 0) {
    raise_next(&m, (uint64_t)high);
  }
  return rv == 0 ? obox_put(s, &m) : rv;
}

/* -- vtable -- */

static int vt_append(const sp_entry *entries, size_t n, sp_seq *first,
                     void *user_data) {
  return sp_sqlite_store_append(user_data, entries, n, first);
}

static int vt_find_origin(const sp_uuid *device, uint64_t origin_seq,
                          sp_seq *seq, uint64_t *device_high,
                          void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st;
  sp_seq found = 0;
  uint64_t lo = 0, hi = 0;
  int rc, rv = 0, own_txn;

  if (!device) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (seq) {
    *seq = 0;
  }
  if (device_high) {
    *device_high = 0;
  }
  /* The row and the ranges read in one snapshot, so a concurrent append
   * or prune cannot make them disagree. */
  own_txn = sqlite3_get_autocommit(s->db);
  if (own_txn && begin_read(s) != 0) {
    return SP_ERR_STORE;
  }
  if (origin_seq != 0 && origin_seq <= SEQ_MAX) {
    st = s->st[ST_ORIGIN_FIND];
    sqlite3_bind_blob(st, 1, device->bytes, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)origin_seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      found = (sp_seq)sqlite3_column_int64(st, 0);
    } else if (rc != SQLITE_DONE) {
      rv = SP_ERR_STORE;
    }
    sqlite3_reset(st);
    if (rv == 0 && found == 0) {
      rv = sp_sqlite_origin_taken(s, device, origin_seq);
      rv = rv == 1 ? 0 : rv == 0 ? SP_ERR_NOT_FOUND : rv;
    }
  } else if (origin_seq != 0) {
    rv = SP_ERR_NOT_FOUND; /* no origin that high is ever stored */
  }
  if (rv == 0 || rv == SP_ERR_NOT_FOUND) {
    int r = range_before(s, device, SEQ_MAX, &lo, &hi);
    if (r < 0) {
      rv = r;
    } else if (device_high && r == 1) {
      *device_high = hi;
    }
  }
  if (own_txn) {
    end_read(s);
  }
  if (rv == 0 && seq) {
    *seq = found;
  }
  return rv;
}

static int insert_item(sp_sqlite_store *s, const sp_entry *e,
                       uint64_t origin) {
  sqlite3_stmt *st = s->st[ST_OBOX_INSERT];
  int rv;

  sqlite3_bind_int64(st, 1, (sqlite3_int64)origin);
  sp_sqlite_bind_entry(st, e);
  rv = run(st);
  sqlite3_clear_bindings(st);
  return rv;
}

static int vt_outbox_put(const sp_entry *entries, size_t n,
                         uint64_t *first_origin, void *user_data) {
  sp_sqlite_store *s = user_data;
  obox_meta m;
  uint64_t first;
  int rv;

  if (!entries || n == 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  for (size_t i = 0; i < n; ++i) {
    if (sp_enc_check_entry(&entries[i]) != 0) {
      return SP_ERR_INVALID_ARGUMENT;
    }
  }
  rv = begin_durable(s);
  if (rv != 0) {
    return rv;
  }
  rv = obox_get(s, &m);
  if (rv == 0 && n > SEQ_MAX - m.next_origin) {
    rv = SP_ERR_INVALID_ARGUMENT;
  }
  first = m.next_origin;
  for (size_t i = 0; rv == 0 && i < n; ++i) {
    rv = insert_item(s, &entries[i], first + i);
    m.bytes += entries[i].model_type_len + entries[i].data_len;
  }
  if (rv == 0) {
    m.items += n;
    m.next_origin = first + n;
    if (!m.has_device) {
      m.device = entries[0].device_id;
      m.has_device = 1;
    }
    rv = obox_put(s, &m);
  }
  rv = end_durable_txn(s, rv);
  if (rv == 0 && first_origin) {
    *first_origin = first;
  }
  return rv;
}

/* Decode the current outbox row (no hash); pointers valid until the
 * next step. */
static int obox_row_entry(sqlite3_stmt *st, sp_entry *e,
                          const uint8_t **hash) {
  memset(e, 0, sizeof(*e));
  *hash = NULL;
  e->origin_seq = (uint64_t)sqlite3_column_int64(st, 0);
  return sp_sqlite_column_entry(st, e);
}

static int vt_outbox_read(uint64_t after, size_t max_count,
                          sp_entry_sink sink, void *sink_ctx,
                          void *user_data) {
  sp_sqlite_store *s = user_data;
  sqlite3_stmt *st = s->st[ST_OBOX_READ];

  if (!sink) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  if (max_count == 0 || after >= SEQ_MAX) {
    return 0;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
  sqlite3_bind_int64(st, 2, sp_sqlite_limit(max_count));
  return sp_sqlite_read_rows(s, st, obox_row_entry, sink, sink_ctx);
}

static int vt_outbox_remove(uint64_t origin_seq, void *user_data) {
  sp_sqlite_store *s = user_data;
  uint64_t size = 0;
  obox_meta m;
  int rv;

  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  if (origin_seq == 0 || origin_seq > SEQ_MAX) {
    return SP_ERR_NOT_FOUND;
  }
  rv = begin_durable(s);
  if (rv != 0) {
    return rv;
  }
  rv = obox_get(s, &m);
  if (rv == 0) {
    rv = item_size(s, origin_seq, NULL, &size);
    if (rv == 0) {
      rv = SP_ERR_NOT_FOUND;
    } else if (rv == 1) {
      rv = item_delete(s, origin_seq, size, &m);
    }
  }
  if (rv == 0) {
    rv = obox_put(s, &m);
  }
  return end_durable_txn(s, rv);
}

static int vt_outbox_stats(sp_outbox_stats *out, void *user_data) {
  obox_meta m;
  int rv;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  rv = obox_get(user_data, &m);
  if (rv == 0) {
    out->items = m.items;
    out->bytes = m.bytes;
    out->next_origin = m.next_origin;
    out->anchored = m.anchored;
  }
  return rv;
}

/* First anchor: shift every item so the smallest is above `high`. */
static int renumber(sp_sqlite_store *s, uint64_t high, obox_meta *m) {
  sqlite3_stmt *st = s->st[ST_OBOX_TOTALS];
  sqlite3_int64 count = 0, lo = 0, hi = 0;
  uint64_t delta;
  int rv;

  if (sqlite3_step(st) != SQLITE_ROW) {
    sqlite3_reset(st);
    return SP_ERR_STORE;
  }
  count = sqlite3_column_int64(st, 0);
  lo = sqlite3_column_int64(st, 2);
  hi = sqlite3_column_int64(st, 3);
  sqlite3_reset(st);
  if (count == 0 || lo < 1 || (uint64_t)lo > high) {
    return 0;
  }
  delta = high + 1 - (uint64_t)lo;
  if (delta > SEQ_MAX - (uint64_t)hi ||
      delta > SEQ_MAX - m->next_origin) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  st = s->st[ST_OBOX_NEGATE_SHIFT];
  sqlite3_bind_int64(st, 1, (sqlite3_int64)delta);
  rv = run(st);
  if (rv == 0) {
    rv = run(s->st[ST_OBOX_NEGATE]);
  }
  m->next_origin += delta;
  return rv;
}

static int vt_outbox_anchor(const sp_uuid *device, uint64_t device_high,
                            void *user_data) {
  sp_sqlite_store *s = user_data;
  obox_meta m;
  int rv;

  if (!device || device_high >= SEQ_MAX) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  rv = begin_durable(s);
  if (rv != 0) {
    return rv;
  }
  rv = obox_get(s, &m);
  if (rv == 0 && !m.anchored) {
    rv = renumber(s, device_high, &m);
  }
  if (rv == 0) {
    raise_next(&m, device_high);
    m.device = *device;
    m.has_device = 1;
    m.anchored = 1;
    rv = obox_put(s, &m);
  }
  return end_durable_txn(s, rv);
}

void sp_sqlite_outbox_vtable(sp_store *out) {
  out->append = vt_append;
  out->find_origin = vt_find_origin;
  out->outbox_put = vt_outbox_put;
  out->outbox_read = vt_outbox_read;
  out->outbox_remove = vt_outbox_remove;
  out->outbox_stats = vt_outbox_stats;
  out->outbox_anchor = vt_outbox_anchor;
}
