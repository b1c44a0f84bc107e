/*
 * cmd_follower.c: spsync follower -- follow the leader over QUIC into a
 * SQLite log, showing progress, and optionally write entries through it.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "progress.h"
#include "rt.h"
#include "writes.h"

static void usage(void) {
  printf(
      "usage: spsync follower --key FILE --pairing FILE --log FILE "
      "[options]\n"
      "\nFollow the leader named in the pairing file; apply into the log.  "
      "Entries\nwritten here go to the log's outbox (durable at once) and "
      "on to the leader,\nwhich appends them; each is committed once it is "
      "back in this log.\n\n"
      "  --listen IP:PORT   address to bind (default: this device's pairing "
      "address,\n"
      "                     or an ephemeral port)\n"
      "  --input FILE       write the entries of a JSON lines file (- for "
      "standard\n"
      "                     input; the format is below)\n"
      "  --rate N           write N entries per second (generated ones "
      "without --input)\n"
      "  --count N          stop writing after N entries (default: no limit)\n"
      "  --payload BYTES    payload size of generated entries (256)\n"
      "  --outbox-max BYTES payload bytes the outbox may hold (64 MiB)\n"
      "  --exit-at SEQ      exit once everything up to SEQ is applied (and "
      "this\n"
      "                     process's writes are committed or refused)\n"
      "  --exit-when-committed\n"
      "                     exit once done writing and nothing is left in "
      "the outbox\n"
      "  --timeout SECONDS  give up (exit 4) after this long\n"
      "  --sync-full        SQLite synchronous=FULL\n"
      "  --verbose          log connections and refusals\n"
      "\nExit status 3: the leader says a full sync is required.\n"
      "With writes, the last lines say how many entries this process "
      "submitted, and\nhow many of its submissions were committed and "
      "refused while it ran.\n%s", WRITES_INPUT_HELP);
}

int cmd_follower(int argc, char **argv) {
  static const struct option opts[] = {
      {"key", 1, 0, 'k'},     {"pairing", 1, 0, 'p'}, {"log", 1, 0, 'l'},
      {"listen", 1, 0, 'L'},  {"exit-at", 1, 0, 'x'}, {"timeout", 1, 0, 't'},
      {"sync-full", 0, 0, 'f'}, {"verbose", 0, 0, 'v'},
      {"input", 1, 0, 'i'},   {"rate", 1, 0, 'r'},    {"count", 1, 0, 'c'},
      {"payload", 1, 0, 'P'}, {"exit-when-committed", 0, 0, 'C'},
      {"outbox-max", 1, 0, 'O'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  long long exit_at = -1, timeout = 0, rate = 0, count = -1, payload = 256;
  int exit_committed = 0;
  const char *input = NULL;
  writes w;
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
    case 'i': input = optarg; break;
    case 'r':
      rate = parse_count(optarg);
      bad |= rate < 0;
      break;
    case 'c':
      count = parse_count(optarg);
      bad |= count < 0;
      break;
    case 'P':
      payload = parse_count(optarg);
      bad |= payload < 0 || payload > 65536;
      break;
    case 'C': exit_committed = 1; break;
    case 'O': {
      long long m = parse_count(optarg);
      bad |= m <= 0;
      o.outbox_max_bytes = m > 0 ? (uint64_t)m : 0;
      break;
    }
    case 'h': usage(); return 0;
    default: return EXIT_USAGE;
    }
  }
  if (bad || !o.key_path || !o.pairing_path || !o.log_path || optind != argc) {
    fprintf(stderr, "spsync follower: --key, --pairing and --log are "
                    "required; numbers must be non-negative, payload <= "
                    "65536 (see --help)\n");
    return EXIT_USAGE;
  }
  memset(&w, 0, sizeof(w));
  w.rate = rate;
  w.count = count;
  w.payload = (size_t)payload;
  w.input = input;
  w.outbox_max_bytes = o.outbox_max_bytes;
  if (rt_open(&r, &o) != 0 || writes_open(&w, sp_quic_now()) != 0) {
    writes_close(&w);
    rt_close(&r);
    return 1;
  }
  w.device = &r.self->id;
  r.watch_fd = writes_poll_fd(&w);
  start = last_show = sp_quic_now();
  sp_handler_get_status(r.h, &hs);
  progress_init(&pg, stdout, hs.sequence, start);
  while (!rt_stop) {
    sp_tstamp now = sp_quic_now();
    sp_duration wait;

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
    if (!writes_done(&w)) {
      if (writes_pump(&w, r.h, UINT64_MAX, now) != 0) {
        status = 1;
        break;
      }
      r.watch_fd = writes_poll_fd(&w);
    }
    if ((exit_at >= 0 && hs.sequence >= (sp_seq)exit_at) || exit_committed) {
      sp_outbox_status os;
      /* Only once this process's writes have an answer. */
      if (writes_done(&w) &&
          (!(writes_enabled(&w) || exit_committed) ||
           (sp_handler_outbox_status(r.h, &os) == 0 && os.pending == 0))) {
        break;
      }
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
    wait = writes_wait(&w, now);
    if (rt_step(&r, wait < 50 * SP_MILLISECONDS ? wait : 50 * SP_MILLISECONDS) !=
        0) {
      status = 1;
      break;
    }
  }
  progress_done(&pg);
  sp_handler_get_status(r.h, &hs);
  if (writes_enabled(&w)) {
    rt_print_writes(&r, "follower", w.submitted);
  }
  writes_close(&w);
  if (status == 0) {
    printf("follower: applied %llu\n", (unsigned long long)hs.sequence);
  }
  rt_close(&r);
  return status;
}
