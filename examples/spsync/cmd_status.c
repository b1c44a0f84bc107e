/*
 * cmd_status.c: spsync status -- describe a log file, and verify its
 * hash chain.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <sync_protocol/sync_protocol.h>
#include <sync_protocol/sqlite_store.h>

#include "cmds.h"

static void hex(const uint8_t *b, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  size_t i;

  for (i = 0; i < n; ++i) {
    out[2 * i] = d[b[i] >> 4];
    out[2 * i + 1] = d[b[i] & 15];
  }
  out[2 * n] = '\0';
}

int cmd_status(int argc, char **argv) {
  static const struct option opts[] = {{"log", 1, 0, 'l'},
                                       {"digest", 0, 0, 'd'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *log = NULL;
  int digest_only = 0, c, rv;
  sp_sqlite_config cfg;
  sp_sqlite_store *st;
  sp_sqlite_status s;
  uint8_t digest[SP_HASH_LEN];
  char h[2 * SP_HASH_LEN + 1];

  while ((c = getopt_long(argc, argv, "l:dh", opts, NULL)) != -1) {
    switch (c) {
    case 'l': log = optarg; break;
    case 'd': digest_only = 1; break;
    case 'h':
      printf("usage: spsync status --log FILE [--digest]\n\n"
             "Describe a log: entries, sequences, epoch, and its digest (the "
             "hash-chain\nhead, recomputed over every row).  --digest prints "
             "one line.\n");
      return 0;
    default: return EXIT_USAGE;
    }
  }
  if (!log || optind != argc) {
    fprintf(stderr, "spsync status: --log FILE is required (see --help)\n");
    return EXIT_USAGE;
  }
  sp_sqlite_config_default(&cfg);
  cfg.create = 0;
  cfg.read_only = 1;
  rv = sp_sqlite_store_open(&st, log, &cfg, NULL);
  if (rv != 0) {
    fprintf(stderr, "spsync status: cannot open %s: %s\n", log,
            sp_strerror(rv));
    return 1;
  }
  rv = sp_sqlite_store_status(st, &s);
  if (rv == 0) {
    rv = sp_sqlite_store_verify(st, digest);
  }
  sp_sqlite_store_close(st);
  if (rv != 0) {
    fprintf(stderr, "spsync status: %s: %s\n", log,
            rv == SP_ERR_CHAIN_MISMATCH ? "rows do not match their hashes"
                                        : sp_strerror(rv));
    return 1;
  }
  hex(digest, SP_HASH_LEN, h);
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
  return 0;
}
