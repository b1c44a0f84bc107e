/*
 * spsync: a command-line host for sync_protocol.
 *
 *   spsync keygen      create a device key file
 *   spsync fingerprint show a key's device id, public key and fingerprint
 *   spsync leader      serve a SQLite log over QUIC, optionally writing
 *   spsync follower    follow a leader over QUIC into a SQLite log
 *   spsync status      describe a log file
 *   spsync prune       delete a log's oldest entries
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sync_protocol/sync_protocol.h>

#include "cmds.h"

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *what;
} cmds[] = {
    {"keygen", cmd_keygen, "create a device key file"},
    {"fingerprint", cmd_fingerprint,
     "show a key's device id, public key and fingerprint"},
    {"leader", cmd_leader, "serve a SQLite log over QUIC"},
    {"follower", cmd_follower, "follow a leader into a SQLite log"},
    {"status", cmd_status, "describe a log file"},
    {"prune", cmd_prune, "delete a log's oldest entries"},
};

long long parse_count(const char *s) {
  char *end;
  long long v;

  if (!s || !*s) {
    return -1;
  }
  v = strtoll(s, &end, 10);
  return *end || v < 0 ? -1 : v;
}

static void usage(FILE *f) {
  size_t i;

  fprintf(f, "usage: spsync <command> [options]   (sync_protocol %s)\n\n",
          sp_version());
  for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); ++i) {
    fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].what);
  }
  fprintf(f, "\nspsync <command> --help shows a command's options.\n");
}

int main(int argc, char **argv) {
  size_t i;

  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? EXIT_USAGE : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("spsync %s\n", sp_version());
    return 0;
  }
  for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); ++i) {
    if (!strcmp(argv[1], cmds[i].name)) {
      return cmds[i].run(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "spsync: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return EXIT_USAGE;
}
