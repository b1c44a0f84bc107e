/*
 * spsync: a command-line host for sync_protocol.
 *
 *   spsync keygen      create a device key file
 *   spsync fingerprint show a key's device id, public key and fingerprint
 *   spsync leader      serve a SQLite log over QUIC, optionally writing
 *   spsync follower    follow a leader over QUIC into a SQLite log
 *   spsync status      describe a log file
 *   spsync prune       delete a log's oldest entries
 *   spsync pair        write the pairing file
 */
#include <getopt.h>
#include <stdarg.h>
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
    {"pair", cmd_pair, "write the pairing file (init, add)"},
};

int usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "spsync: %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see spsync %s --help)\n", cmd);
  return EXIT_USAGE;
}

int opt_error(const char *cmd, int c, char **argv) {
  /* A long option: getopt_long has moved past its word (optopt is 0 for
   * an unknown one).  A short one may sit inside a cluster ("-vx"), where
   * optind has not moved: optopt names it. */
  const char *word = optind > 0 ? argv[optind - 1] : "?";
  int is_long = c == ':' ? strncmp(word, "--", 2) == 0 : optopt == 0;
  char opt[64];

  if (is_long) {
    snprintf(opt, sizeof(opt), "%.*s", (int)strcspn(word, "="), word);
  } else {
    snprintf(opt, sizeof(opt), "-%c", optopt);
  }
  if (c == ':') {
    return usage_error(cmd, "option '%s' needs a value", opt);
  }
  return usage_error(cmd, "unknown option '%s'", opt);
}

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
  /* The commands say what is wrong, and where to look (opt_error). */
  opterr = 0;
  for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); ++i) {
    if (!strcmp(argv[1], cmds[i].name)) {
      return cmds[i].run(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "spsync: unknown command '%s' (see spsync --help)\n\n",
          argv[1]);
  usage(stderr);
  return EXIT_USAGE;
}
