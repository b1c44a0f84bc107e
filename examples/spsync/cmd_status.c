/*
 * cmd_status.c: spsync status -- describe a log file, and verify its
 * hash chain.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>
#include <sync_protocol/sync_protocol.h>
#include <sync_protocol/sqlite_store.h>

#include "cmds.h"
#include "pairing.h"

/* Entries of one origin device: those written through the write path
 * (origin ids in the committed set), retained ones without an origin id,
 * and the retained origin ids (to find one held twice). */
typedef struct origin_count {
  sp_uuid device;
  uint64_t committed;
  uint64_t plain;
  uint64_t *origins;
  size_t norigins, cap;
} origin_count;

typedef struct origin_tally {
  origin_count *dev;
  size_t ndev, cap;
  sp_seq last;
  int nomem;
} origin_tally;

static origin_count *tally_device(origin_tally *t, const sp_uuid *id) {
  size_t i;

  for (i = 0; i < t->ndev; ++i) {
    if (sp_uuid_equal(&t->dev[i].device, id)) {
      return &t->dev[i];
    }
  }
  if (t->ndev == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 8;
    origin_count *d = realloc(t->dev, cap * sizeof(*d));
    if (!d) {
      return NULL;
    }
    t->dev = d;
    t->cap = cap;
  }
  memset(&t->dev[t->ndev], 0, sizeof(t->dev[0]));
  t->dev[t->ndev].device = *id;
  return &t->dev[t->ndev++];
}

static int tally_entry(const sp_entry *e, const uint8_t *hash, void *ctx) {
  origin_tally *t = ctx;
  origin_count *d = tally_device(t, &e->device_id);

  (void)hash;
  t->last = e->sequence;
  if (!d) {
    t->nomem = 1;
    return SP_SINK_STOP;
  }
  if (!e->origin_seq) {
    d->plain++;
  } else {
    if (d->norigins == d->cap) {
      size_t cap = d->cap ? 2 * d->cap : 1024;
      uint64_t *o = realloc(d->origins, cap * sizeof(*o));
      if (!o) {
        t->nomem = 1;
        return SP_SINK_STOP;
      }
      d->origins = o;
      d->cap = cap;
    }
    d->origins[d->norigins++] = e->origin_seq;
  }
  return 0;
}

/* Add the log's committed set (every origin id it ever held, kept
 * through pruning and carried by a snapshot) to the tally, per device:
 * what counts a device's writes in a log whatever was pruned.  Read from
 * the store's table (sp_sqlite_store.c: sync_origin_range). */
static int tally_committed(origin_tally *t, const char *log) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  int rc = SQLITE_DONE, rv = 0;

  if (sqlite3_open_v2(log, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "SELECT device, SUM(hi - lo + 1) FROM "
                         "sync_origin_range GROUP BY device",
                         -1, &q, NULL) != SQLITE_OK) {
    rv = SP_ERR_STORE;
  }
  while (rv == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    origin_count *d;
    sp_uuid id;
    if (sqlite3_column_bytes(q, 0) != (int)sizeof(id.bytes)) {
      rv = SP_ERR_STORE_CORRUPT;
      break;
    }
    memcpy(id.bytes, sqlite3_column_blob(q, 0), sizeof(id.bytes));
    d = tally_device(t, &id);
    if (!d) {
      rv = SP_ERR_NOMEM;
      break;
    }
    d->committed = (uint64_t)sqlite3_column_int64(q, 1);
  }
  if (rv == 0 && rc != SQLITE_DONE) {
    rv = SP_ERR_STORE;
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return rv;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Print "entries by origin: <name or id> N, ..." -- the pairing file's
 * devices in its order, then any other origin -- and, if an origin id is
 * held twice, a line saying how many.  Returns 0, 1 (duplicates) or an
 * sp_error. */
static int by_origin(sp_sqlite_store *st, const char *log,
                     const sp_sqlite_status *s, const pairing *pair) {
  origin_tally t;
  sp_store vt;
  uint64_t dups = 0;
  size_t i, k;
  int rv = 0, first = 1;

  memset(&t, 0, sizeof(t));
  t.last = s->pruned_through;
  sp_sqlite_store_get_vtable(st, &vt);
  while (rv == 0 && t.last < s->latest && !t.nomem) {
    sp_seq before = t.last;
    rv = vt.read(t.last, s->latest, 4096, tally_entry, &t, vt.user_data);
    if (rv == 0 && t.last == before) {
      break;
    }
  }
  for (i = 0; pair && i < (size_t)pair->ndev; ++i) {
    tally_device(&t, &pair->dev[i].id);
  }
  if (rv == 0 && t.nomem) {
    rv = SP_ERR_NOMEM;
  }
  if (rv == 0) {
    rv = tally_committed(&t, log);
  }
  if (rv == 0) {
    printf("entries by origin:");
    /* Pairing order first, then the rest as met in the log. */
    for (k = 0; pair && k < (size_t)pair->ndev; ++k) {
      origin_count *d = tally_device(&t, &pair->dev[k].id);
      char id[SP_UUID_STRING_LEN + 1];
      printf("%s %s %llu", first ? "" : ",",
             pair->dev[k].name[0] ? pair->dev[k].name
                                  : sp_uuid_format(&pair->dev[k].id, id),
             (unsigned long long)(d->committed + d->plain));
      first = 0;
    }
    for (i = 0; i < t.ndev; ++i) {
      char id[SP_UUID_STRING_LEN + 1];
      if (pair && pairing_find(pair, &t.dev[i].device)) {
        continue;
      }
      printf("%s %s %llu", first ? "" : ",",
             sp_uuid_format(&t.dev[i].device, id),
             (unsigned long long)(t.dev[i].committed + t.dev[i].plain));
      first = 0;
    }
    printf("\n");
    for (i = 0; i < t.ndev; ++i) {
      origin_count *d = &t.dev[i];
      if (d->norigins > 1) {
        qsort(d->origins, d->norigins, sizeof(uint64_t), cmp_u64);
      }
      for (k = 1; k < d->norigins; ++k) {
        dups += d->origins[k] == d->origins[k - 1];
      }
    }
    if (dups) {
      printf("duplicate origin ids: %llu\n", (unsigned long long)dups);
      rv = 1;
    }
  }
  for (i = 0; i < t.ndev; ++i) {
    free(t.dev[i].origins);
  }
  free(t.dev);
  return rv;
}

/* A read-only open refused the file's schema: say whether it is older
 * (schema 1, before the outbox: upgraded by the first writable open) or
 * newer than this build, from the file's user_version. */
static void schema_refused(const char *log) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  sqlite3_int64 v = -1;

  if (sqlite3_open_v2(log, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) ==
          SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW) {
    v = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  if (v == 1) {
    fprintf(stderr, "spsync status: %s: older schema; open it once "
            "writable (spsync leader/follower) to upgrade\n", log);
  } else {
    fprintf(stderr, "spsync status: %s: written by a newer version (schema "
            "%lld)\n", log, (long long)v);
  }
}

int cmd_status(int argc, char **argv) {
  static const struct option opts[] = {{"log", 1, 0, 'l'},
                                       {"digest", 0, 0, 'd'},
                                       {"by-origin", 0, 0, 'o'},
                                       {"pairing", 1, 0, 'p'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *log = NULL, *pairing_path = NULL;
  int digest_only = 0, origins = 0, has_outbox = 0, c, rv;
  sp_outbox_stats ob;
  pairing *pair = NULL;
  sp_sqlite_config cfg;
  sp_sqlite_store *st;
  sp_sqlite_status s;
  uint8_t digest[SP_HASH_LEN];
  char h[2 * SP_HASH_LEN + 1];

  while ((c = getopt_long(argc, argv, ":l:dh", opts, NULL)) != -1) {
    switch (c) {
    case 'l': log = optarg; break;
    case 'd': digest_only = 1; break;
    case 'o': origins = 1; break;
    case 'p': pairing_path = optarg; break;
    case 'h':
      printf("usage: spsync status --log FILE [--digest | --by-origin "
             "[--pairing FILE]]\n\n"
             "Describe a log: entries, sequences, epoch, its digest (the "
             "hash-chain\nhead, recomputed over every row) and its outbox "
             "(this device's submissions\nnot yet committed or refused).  "
             "--digest prints one line.\n"
             "--by-origin prints one line, the log's entries counted by "
             "the device that\nwrote them:\n"
             "  entries by origin: <name or device id> N, ...\n"
             "(names and order from the pairing file; --pairing implies "
             "--by-origin).\nN counts the whole history, pruned entries "
             "included: the writes of a device\n(spsync's all are) from "
             "the log's committed set of origin ids, which pruning\nkeeps "
             "and a snapshot carries, plus retained entries without an "
             "origin id.\nSo a pruned log, or one installed from a "
             "snapshot, counts as the log it\ncopies.  Exits 1 after a line "
             "\"duplicate origin ids: N\" if the retained entries\nhold a "
             "submission more than once.\n");
      return 0;
    default: return opt_error("status", c, argv);
    }
  }
  /* The pairing file only names the origins. */
  origins |= pairing_path != NULL;
  if (!log || optind != argc || (digest_only && origins)) {
    return usage_error("status", "--log FILE is required, with --digest "
                       "or --by-origin");
  }
  if (pairing_path) {
    char err[256];
    pair = malloc(sizeof(*pair));
    if (!pair || pairing_load_names(pair, pairing_path, err, sizeof(err)) != 0) {
      fprintf(stderr, "spsync status: %s\n",
              pair ? err : "out of memory");
      free(pair);
      return 1;
    }
  }
  sp_sqlite_config_default(&cfg);
  cfg.create = 0;
  cfg.read_only = 1;
  rv = sp_sqlite_store_open(&st, log, &cfg, NULL);
  if (rv == SP_ERR_VERSION) {
    schema_refused(log);
    free(pair);
    return 1;
  }
  if (rv != 0) {
    free(pair);
    fprintf(stderr, "spsync status: cannot open %s: %s\n", log,
            sp_strerror(rv));
    return 1;
  }
  rv = sp_sqlite_store_status(st, &s);
  if (rv == 0) {
    rv = sp_sqlite_store_verify(st, digest);
  }
  if (rv == 0 && origins) {
    rv = by_origin(st, log, &s, pair);
    sp_sqlite_store_close(st);
    free(pair);
    if (rv < 0) {
      fprintf(stderr, "spsync status: %s: %s\n", log, sp_strerror(rv));
    }
    return rv == 0 ? 0 : 1;
  }
  free(pair);
  if (rv == 0) {
    sp_store vt;
    sp_sqlite_store_get_vtable(st, &vt);
    has_outbox = vt.version >= 3 && vt.outbox_stats &&
                 vt.outbox_stats(&ob, vt.user_data) == 0;
  }
  sp_sqlite_store_close(st);
  if (rv != 0) {
    fprintf(stderr, "spsync status: %s: %s\n", log,
            rv == SP_ERR_CHAIN_MISMATCH ? "rows do not match their hashes"
                                        : sp_strerror(rv));
    return 1;
  }
  sodium_bin2hex(h, sizeof(h), digest, SP_HASH_LEN);
  if (digest_only) {
    printf("%s  %llu entries  latest %llu\n", h,
           (unsigned long long)s.entry_count, (unsigned long long)s.latest);
    return 0;
  }
  printf("log          %s\nentries      %llu\nfirst        %llu\n"
         "latest       %llu\npruned to    %llu\nepoch        %llu\n"
         "digest       %s (chain verified)\n",
         log, (unsigned long long)s.entry_count, (unsigned long long)s.first,
         (unsigned long long)s.latest, (unsigned long long)s.pruned_through,
         (unsigned long long)s.epoch, h);
  if (has_outbox) {
    printf("outbox       %llu pending (%llu bytes), next origin %llu\n",
           (unsigned long long)ob.items, (unsigned long long)ob.bytes,
           (unsigned long long)ob.next_origin);
  }
  return 0;
}
