/*
 * cmd_prune.c: spsync prune -- delete a log's oldest entries, as a host
 * does to bound its log, even past what followers acknowledged: a
 * follower that still needs them is told SyncRequired and recovers by
 * snapshot.  It works on the file of a running leader (SQLite locking;
 * the leader reads its bounds from the file).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <sync_protocol/sync_protocol.h>
#include <sync_protocol/sqlite_store.h>

#include "cmds.h"

static void usage(void) {
  printf(
      "usage: spsync prune --log FILE (--through SEQ | --keep N)\n"
      "\nDelete the log's entries up to SEQ (--through), or all but the "
      "latest N\n(--keep), whatever the followers acknowledged.  The chain "
      "hash at the new\nstart and the committed set of origin ids are kept: "
      "the digest, spsync status\n--by-origin and the dedupe of writes "
      "stay as they were.  A follower that\nneeds a deleted entry is told "
      "SyncRequired and recovers by snapshot (one whose\nsnapshot is older "
      "than the new start begins a new one).  Safe while a leader\nruns on "
      "the file.  Prints \"pruned through SEQ, N entries kept\".\n"
      "\nExit status: 0 done (also when nothing was left to delete); 1 "
      "error; 2 bad\narguments (SEQ past the latest entry included).\n");
}

int cmd_prune(int argc, char **argv) {
  static const struct option opts[] = {{"log", 1, 0, 'l'},
                                       {"through", 1, 0, 't'},
                                       {"keep", 1, 0, 'k'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *log = NULL;
  long long through = -1, keep = -1;
  sp_sqlite_config cfg;
  sp_sqlite_store *st;
  sp_sqlite_status s;
  int c, rv, bad = 0;

  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'l': log = optarg; break;
    case 't':
      through = parse_count(optarg);
      bad |= through < 0;
      break;
    case 'k':
      keep = parse_count(optarg);
      bad |= keep < 0;
      break;
    case 'h': usage(); return 0;
    default: return opt_error("prune", c, argv);
    }
  }
  if (bad || !log || optind != argc || (through < 0) == (keep < 0)) {
    return usage_error("prune", "--log FILE and one of --through SEQ or "
                       "--keep N are required");
  }
  sp_sqlite_config_default(&cfg);
  cfg.create = 0;
  rv = sp_sqlite_store_open(&st, log, &cfg, NULL);
  if (rv != 0) {
    fprintf(stderr, "spsync prune: cannot open %s: %s\n", log,
            *sp_sqlite_store_errmsg(NULL) ? sp_sqlite_store_errmsg(NULL)
                                          : sp_strerror(rv));
    return 1;
  }
  rv = sp_sqlite_store_status(st, &s);
  if (rv == 0 && keep >= 0) {
    through = s.latest > (sp_seq)keep ? (long long)(s.latest - (sp_seq)keep)
                                       : 0;
  }
  if (rv == 0 && (sp_seq)through > s.latest) {
    sp_sqlite_store_close(st);
    return usage_error("prune", "%s: %lld is past the latest entry (%llu)",
                       log, through, (unsigned long long)s.latest);
  }
  if (rv == 0) {
    rv = sp_sqlite_store_prune(st, (sp_seq)through);
  }
  if (rv == 0) {
    rv = sp_sqlite_store_status(st, &s);
  }
  if (rv != 0) {
    /* The store's words (before close frees them): "database is locked". */
    fprintf(stderr, "spsync prune: %s: %s\n", log,
            *sp_sqlite_store_errmsg(st) ? sp_sqlite_store_errmsg(st)
                                        : sp_strerror(rv));
  }
  sp_sqlite_store_close(st);
  if (rv != 0) {
    return 1;
  }
  printf("pruned through %llu, %llu entries kept\n",
         (unsigned long long)s.pruned_through,
         (unsigned long long)s.entry_count);
  return 0;
}
