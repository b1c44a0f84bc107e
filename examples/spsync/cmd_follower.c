/*
 * cmd_follower.c: spsync follower -- follow the leader over QUIC into a
 * SQLite log, showing progress.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "progress.h"
#include "rt.h"

static void usage(void) {
  printf(
      "usage: spsync follower --key FILE --pairing FILE --log FILE "
      "[options]\n"
      "\nFollow the leader named in the pairing file; apply into the log.\n\n"
      "  --listen IP:PORT   address to bind (default: this device's pairing "
      "address,\n"
      "                     or an ephemeral port)\n"
      "  --exit-at SEQ      exit once everything up to SEQ is applied\n"
      "  --timeout SECONDS  give up (exit 4) after this long\n"
      "  --sync-full        SQLite synchronous=FULL\n"
      "  --verbose          log connections and refusals\n"
      "\nExit status 3: the leader says a full sync is required.\n");
}

int cmd_follower(int argc, char **argv) {
  static const struct option opts[] = {
      {"key", 1, 0, 'k'},     {"pairing", 1, 0, 'p'}, {"log", 1, 0, 'l'},
      {"listen", 1, 0, 'L'},  {"exit-at", 1, 0, 'x'}, {"timeout", 1, 0, 't'},
      {"sync-full", 0, 0, 'f'}, {"verbose", 0, 0, 'v'},
      {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
  long long exit_at = -1, timeout = 0;
  sp_tstamp start, last_show;
  sp_handler_status hs;
  rt_options o;
  progress pg;
  rt r;
  int c, status = 0, bad = 0;

  memset(&o, 0, sizeof(o));
  o.role = SP_ROLE_FOLLOWER;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'k': o.key_path = optarg; break;
    case 'p': o.pairing_path = optarg; break;
    case 'l': o.log_path = optarg; break;
    case 'L': o.listen = optarg; break;
    case 'x':
      exit_at = parse_count(optarg);
      bad |= exit_at < 0;
      break;
    case 't':
      timeout = parse_count(optarg);
      bad |= timeout < 0;
      break;
    case 'f': o.sync_full = 1; break;
    case 'v': o.verbose = 1; break;
    case 'h': usage(); return 0;
    default: return EXIT_USAGE;
    }
  }
  if (bad || !o.key_path || !o.pairing_path || !o.log_path || optind != argc) {
    fprintf(stderr, "spsync follower: --key, --pairing and --log are "
                    "required; numbers must be non-negative (see --help)\n");
    return EXIT_USAGE;
  }
  if (rt_open(&r, &o) != 0) {
    rt_close(&r);
    return 1;
  }
  start = last_show = sp_quic_now();
  sp_handler_get_status(r.h, &hs);
  progress_init(&pg, stdout, hs.sequence, start);
  while (!rt_stop) {
    sp_tstamp now = sp_quic_now();

    sp_handler_get_status(r.h, &hs);
    if (r.sync_required) {
      progress_done(&pg);
      fprintf(stderr,
              "spsync follower: the leader requires a full sync (reason %d); "
              "copy its log, then start again\n",
              (int)r.sync_reason);
      status = EXIT_SYNC_REQUIRED;
      break;
    }
    if (exit_at >= 0 && hs.sequence >= (sp_seq)exit_at) {
      break;
    }
    if (timeout && now - start > (sp_duration)timeout * SP_SECONDS) {
      progress_done(&pg);
      fprintf(stderr, "spsync follower: timed out at %llu\n",
              (unsigned long long)hs.sequence);
      status = EXIT_TIMEOUT;
      break;
    }
    if (now - last_show >= (pg.tty ? SP_SECONDS / 5 : SP_SECONDS)) {
      progress_show(&pg, hs.sequence, hs.leader_latest, now);
      last_show = now;
    }
    if (rt_step(&r, 50 * SP_MILLISECONDS) != 0) {
      status = 1;
      break;
    }
  }
  progress_done(&pg);
  sp_handler_get_status(r.h, &hs);
  if (status == 0) {
    printf("follower: applied %llu\n", (unsigned long long)hs.sequence);
  }
  rt_close(&r);
  return status;
}
