/*
 * cmd_leader.c: spsync leader -- serve a SQLite log over QUIC and,
 * optionally, write entries to it at a given rate.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "follow.h"

static int all_acked;

static int on_acked(sp_handler *h, sp_seq seq, int status, size_t acked,
                    void *ud) {
  (void)h;
  (void)seq;
  (void)acked;
  (void)ud;
  all_acked = status == 0;
  return 0;
}

/* SP_EVENT_STEPPED_DOWN was seen (outside the node's callbacks): say who
 * leads now; exit 5, or follow that device (the follower's statuses). */
static int stepped_down(rt *r, writes *w, int follow, long long until,
                        long long exit_at, int exit_synced,
                        long long timeout, sp_tstamp start) {
  char id[SP_UUID_STRING_LEN + 1];
  const pairing_device *d = pairing_find(&r->pair, &r->step_leader);
  follow_limits fl;

  /* A step-down is always proven by a claim: the event names its
   * device. */
  sp_uuid_format(&r->step_leader, id);
  fprintf(stderr, "spsync: stepped down: device %s%s%s%s leads at epoch "
          "%llu\n", id, d && d->name[0] ? " (" : "", d ? d->name : "",
          d && d->name[0] ? ")" : "", (unsigned long long)r->step_epoch);
  if (!follow || rt_stop) {
    return EXIT_STEPPED_DOWN;
  }
  if (sp_uuid_equal(&r->step_leader, &r->self->id)) {
    /* Its own claim from an earlier term (a log started afresh below it):
     * lead again with a higher --epoch. */
    fprintf(stderr, "spsync: this device's own earlier term: nothing to "
            "follow; start it with --epoch %llu or above\n",
            (unsigned long long)r->step_epoch + 1);
    return EXIT_STEPPED_DOWN;
  }
  if (rt_follow(r, &r->step_leader) != 0) {
    return 1;
  }
  fprintf(stderr, "spsync: following %s at epoch %llu\n", id,
          (unsigned long long)r->step_epoch);
  memset(&fl, 0, sizeof(fl));
  fl.exit_at = exit_at;
  /* As spsync follower --exit-when-committed; --exit-at, if given,
   * decides (it waits for this process's writes too). */
  fl.exit_committed = exit_synced && exit_at < 0;
  fl.until = until;
  fl.timeout = timeout;
  fl.start = start;
  return follow_loop(r, w, &fl);
}

/* The live line, once a second: the log, then each follower's state and
 * lag as the library tracks them (sp_handler_list_followers). */
static void show(rt *r, const sp_handler_status *hs, sp_tstamp now) {
  sp_follower_progress f[8];
  sp_seq floor = 0;
  sp_ssize n, i;

  sp_handler_retention_floor(r->h, &floor);
  printf("leader: latest %llu, %d follower stream(s), all acked up to %llu",
         (unsigned long long)hs->sequence, r->peers,
         (unsigned long long)floor);
  n = sp_handler_list_followers(r->h, f, sizeof(f) / sizeof(f[0]), now);
  for (i = 0; i < n && i < (sp_ssize)(sizeof(f) / sizeof(f[0])); ++i) {
    const pairing_device *d = pairing_find(&r->pair, &f[i].device_id);
    char id[SP_UUID_STRING_LEN + 1];
    printf("; %s %s", d && d->name[0] ? d->name
                                       : sp_uuid_format(&f[i].device_id, id),
           f[i].connected ? "connected" : "disconnected");
    if (!f[i].has_acked) {
      printf(" (no ack yet)");
    } else if (f[i].connected || f[i].since_last_ack == SP_TSTAMP_MAX) {
      printf(" lag %llu", (unsigned long long)f[i].lag);
    } else {
      printf(" lag %llu (last ack %llu s ago)", (unsigned long long)f[i].lag,
             (unsigned long long)(f[i].since_last_ack / SP_SECONDS));
    }
  }
  if (n > (sp_ssize)(sizeof(f) / sizeof(f[0]))) {
    printf("; %lld more", (long long)n - (long long)(sizeof(f) / sizeof(f[0])));
  }
  printf("\n");
  fflush(stdout);
}

static void usage(void) {
  printf(
      "usage: spsync leader --key FILE --pairing FILE --log FILE [options]\n"
      "\nServe the log to the followers named in the pairing file, append "
      "the\nfollowers' submissions, and optionally write entries of its own "
      "(submitted\nthrough the library like a follower's: each carries this "
      "device as its origin).\n\n"
      "  --listen HOST:PORT   address to bind (default: this device's "
      "pairing address)\n"
      "  --input FILE         write the entries of a JSON lines file "
      "(- for standard\n"
      "                       input; the format is below)\n"
      "  --rate N             write N entries per second (generated ones "
      "without --input)\n"
      "  --count N            stop writing after N entries (default: no "
      "limit)\n"
      "  --until SEQ          stop writing once the log reaches SEQ (it "
      "survives restarts)\n"
      "  --payload BYTES      payload size of generated entries (256)\n"
      "  --epoch N            lead with epoch N (kept with the log; default: "
      "the log's)\n"
      "  --exit-at SEQ        with --exit-when-synced: wait for the log to "
      "reach SEQ\n"
      "                       first (the followers' writes included)\n"
      "  --exit-when-synced   once done writing, exit when every follower "
      "holds all\n"
      "                       (positions acknowledged to an earlier leader "
      "process\n"
      "                       are kept with the log: a synced follower need "
      "not connect)\n"
      "  --timeout SECONDS    give up (exit 4) after this long\n"
      "  --sync-full          SQLite synchronous=FULL\n"
      "  --verbose            log connections and refusals\n"
      "  --no-snapshots       serve no snapshots: a follower the log cannot "
      "serve\n"
      "                       incrementally stops at SyncRequired\n"
      "  --snapshot-chunk BYTES  snapshot chunk size (the library's, 256 KiB; "
      "1-2097152;\n"
      "                       raised if a snapshot would need over 65536 "
      "chunks)\n"
      "  --follow-on-step-down  after stepping down, go on as a follower of "
      "the new\n"
      "                       leader (below) instead of exiting 5\n"
      "\nA follower behind what the log keeps (see spsync prune) or "
      "diverged from it is\ntold SyncRequired and, unless either side "
      "runs with --no-snapshots, recovers\nby copying a snapshot of this "
      "log: a consistent copy at its latest sequence,\nprepared in "
      "<log>-snapshots/ and kept there while followers may resume it\n"
      "(across a restart of this command too).\n"
      "\nA leader steps down when it meets a newer one that proves it: a "
      "leadership\nclaim for a higher epoch, signed by a device its pairing "
      "file lists as\nleader or standby (docs/pairing.md, failover).  It "
      "prints\n"
      "  spsync: stepped down: device <uuid> (<name>) leads at epoch <N>\n"
      "and exits 5; with --follow-on-step-down it follows that device "
      "instead, in\nthe same process, printing\n"
      "  spsync: following <uuid> at epoch <N>\n"
      "and syncs as spsync follower does (recovering by snapshot unless\n"
      "--no-snapshots; its writes go on through the outbox; --exit-at SEQ "
      "exits once\nthe log holds SEQ; without it, --exit-when-synced exits "
      "once done writing\nand the outbox is empty; --timeout counts from "
      "the start); the follower's\nexit statuses then apply.  A higher epoch without a valid "
      "claim is refused and\nlogged (--verbose).\n"
      "\nExit status: 0 done (--exit-when-synced, SIGINT or SIGTERM); 1 "
      "error; 2 bad\narguments; 3 (after following) SyncRequired and no "
      "snapshot recovery;\n4 --timeout; 5 stepped down: a newer leader "
      "was proven.\n"
      "%s", WRITES_INPUT_HELP);
}

int cmd_leader(int argc, char **argv) {
  static const struct option opts[] = {
      {"key", 1, 0, 'k'},       {"pairing", 1, 0, 'p'},
      {"log", 1, 0, 'l'},       {"listen", 1, 0, 'L'},
      {"rate", 1, 0, 'r'},      {"count", 1, 0, 'c'},
      {"payload", 1, 0, 'P'},   {"epoch", 1, 0, 'e'},
      {"until", 1, 0, 'u'},     {"input", 1, 0, 'i'},
      {"exit-at", 1, 0, 'X'},
      {"exit-when-synced", 0, 0, 'x'}, {"timeout", 1, 0, 't'},
      {"sync-full", 0, 0, 'f'}, {"verbose", 0, 0, 'v'},
      {"no-snapshots", 0, 0, 'N'}, {"snapshot-chunk", 1, 0, 'C'},
      {"follow-on-step-down", 0, 0, 'F'},
      {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
  rt_options o;
  rt r;
  long long rate = 0, count = -1, until = -1, payload = 256, epoch = 0,
            timeout = 0, exit_at = -1;
  int exit_synced = 0, c, status = 0, waiting = 0, bad = 0, follow;
  const char *input = NULL;
  sp_tstamp start, last_print;
  writes w;

  memset(&o, 0, sizeof(o));
  o.role = SP_ROLE_LEADER;
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'k': o.key_path = optarg; break;
    case 'p': o.pairing_path = optarg; break;
    case 'l': o.log_path = optarg; break;
    case 'L': o.listen = optarg; break;
    case 'r': rate = parse_count(optarg); break;
    case 'c':
      count = parse_count(optarg);
      bad |= count < 0;
      break;
    case 'u':
      until = parse_count(optarg);
      bad |= until < 0;
      break;
    case 'P': payload = parse_count(optarg); break;
    case 'i': input = optarg; break;
    case 'X':
      exit_at = parse_count(optarg);
      bad |= exit_at < 0;
      break;
    case 'e': epoch = parse_count(optarg); break;
    case 'x': exit_synced = 1; break;
    case 't': timeout = parse_count(optarg); break;
    case 'f': o.sync_full = 1; break;
    case 'v': o.verbose = 1; break;
    case 'N': o.no_snapshots = 1; break;
    case 'F': o.follow_on_step_down = 1; break;
    case 'C': {
      long long n = parse_count(optarg);
      bad |= n < 1 || n > SP_SNAPSHOT_CHUNK_MAX;
      o.snapshot_chunk = n > 0 ? (uint32_t)n : 0;
      break;
    }
    case 'h': usage(); return 0;
    default: return opt_error("leader", c, argv);
    }
  }
  if (bad || !o.key_path || !o.pairing_path || !o.log_path || optind != argc ||
      rate < 0 || payload < 0 || payload > 65536 || epoch < 0 ||
      timeout < 0) {
    return usage_error("leader", "--key, --pairing and --log are "
                       "required; numbers must be non-negative, payload <= "
                       "65536, snapshot chunk 1-2097152");
  }
  o.epoch = (uint64_t)epoch;
  follow = o.follow_on_step_down;
  memset(&w, 0, sizeof(w));
  w.rate = rate;
  w.count = count;
  w.payload = (size_t)payload;
  w.input = input;
  if (rt_open(&r, &o) != 0 || writes_open(&w, sp_quic_now()) != 0) {
    writes_close(&w);
    rt_close(&r);
    return 1;
  }
  w.device = &r.self->id;
  r.watch_fd = writes_poll_fd(&w);
  start = last_print = sp_quic_now();
  while (!rt_stop && !r.stepped_down) {
    sp_tstamp now = sp_quic_now();
    sp_duration wait = 100 * SP_MILLISECONDS;
    sp_handler_status hs;
    int done_writing;

    sp_handler_get_status(r.h, &hs);
    done_writing = writes_done(&w) ||
                   (until >= 0 && hs.sequence >= (sp_seq)until);

    if (!done_writing) {
      uint64_t room = until < 0 ? UINT64_MAX : (sp_seq)until - hs.sequence;
      sp_duration ww;
      if (writes_pump(&w, r.h, room, now) != 0) {
        status = 1;
      }
      r.watch_fd = writes_poll_fd(&w);
      ww = writes_wait(&w, now);
      wait = ww < wait ? ww : wait;
    } else if (exit_synced && !waiting &&
               (exit_at < 0 || hs.sequence >= (sp_seq)exit_at)) {
      waiting = 1;
      if (sp_handler_wait_acks(r.h, hs.sequence, 0, SP_TSTAMP_MAX, on_acked,
                               NULL, now) == 1) {
        all_acked = 1;
      }
    }
    if (status != 0 || (exit_synced && all_acked)) {
      break;
    }
    if (timeout && now - start > (sp_duration)timeout * SP_SECONDS) {
      fprintf(stderr, "spsync leader: timed out\n");
      status = EXIT_TIMEOUT;
      break;
    }
    if (now - last_print >= SP_SECONDS) {
      show(&r, &hs, now);
      last_print = now;
    }
    if (rt_step(&r, wait) != 0 && !r.stepped_down) {
      status = 1;
      break;
    }
  }
  if (r.stepped_down) {
    status = stepped_down(&r, &w, follow, until, exit_at, exit_synced,
                          timeout, start);
  }
  if (writes_enabled(&w)) {
    rt_print_writes(&r,
                    sp_handler_role(r.h) == SP_ROLE_FOLLOWER ? "follower"
                                                             : "leader",
                    w.submitted);
  }
  writes_close(&w);
  if (status == 0) {
    sp_handler_status hs;
    sp_handler_get_status(r.h, &hs);
    if (r.stepped_down) {
      printf("follower: applied %llu\n", (unsigned long long)hs.sequence);
    } else {
      printf("leader: done, latest %llu%s\n",
             (unsigned long long)hs.sequence,
             all_acked ? ", every follower acknowledged it" : "");
    }
  }
  rt_close(&r);
  return status;
}
