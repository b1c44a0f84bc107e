/*
 * cmd_follower.c: spsync follower -- follow the leader over QUIC into a
 * SQLite log, showing progress, and optionally write entries through it.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "follow.h"
#include "progress.h"

static void usage(void) {
  printf(
      "usage: spsync follower --key FILE --pairing FILE --log FILE "
      "[options]\n"
      "\nFollow the leader named in the pairing file; apply into the log.  "
      "Entries\nwritten here go to the log's outbox (durable at once) and "
      "on to the leader,\nwhich appends them; each is committed once it is "
      "back in this log.\n\n"
      "  --listen HOST:PORT address to bind (default: this device's pairing "
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
      "  --apply-thread     commit pages to the log on a thread of its own, "
      "while\n"
      "                     the next ones are received and verified\n"
      "  --verbose          log connections and refusals\n"
      "  --no-snapshots     do not recover by snapshot: stop at SyncRequired "
      "(exit 3)\n"
      "  --snapshot-window N  snapshot chunks in flight (8; 1-64)\n"
      "  --snapshot-max BYTES refuse a larger snapshot (default: no limit)\n"
      "  --snapshot-delay MS  pause after each snapshot chunk written (a "
      "knob for\n"
      "                     demos and tests: a transfer slow enough to "
      "watch)\n"
      "\nWhen the leader says incremental sync cannot continue (SyncRequired: "
      "this log\nis behind what the leader keeps, or diverged), the follower "
      "recovers by\nitself: it copies a snapshot of the leader's log, chunk "
      "by chunk, each one\nverified and written durably (a cut transfer "
      "resumes where it stopped, after\na restart of either side too), "
      "installs it in one transaction, prints\n"
      "  snapshot: <bytes> bytes in <chunks> chunks, resumed <n> times\n"
      "and follows incrementally from there.  A recovery that fails is "
      "reported and\ntried again by the library after a backoff (minutes to "
      "hours); the command\nkeeps running meanwhile.\n"
      "\nExit status: 0 done (--exit-at, --exit-when-committed, SIGINT or "
      "SIGTERM);\n1 error; 2 bad arguments; 3 SyncRequired and no snapshot "
      "recovery\n(--no-snapshots, or a leader that serves none): copy the "
      "leader's log by other\nmeans, then start again; 4 --timeout.\n"
      "With writes, the last lines say how many entries this process "
      "submitted, and\nhow many of its submissions were committed and "
      "refused while it ran.\n%s", WRITES_INPUT_HELP);
}

/* After SP_EVENT_SYNC_REQUIRED_RECEIVED: whether a snapshot recovery took
 * it up (it reported, or is under way, or failed and waits for its
 * backoff), or nothing will: no sink, or a leader that serves none. */
static int recovering(const rt *r) {
  sp_snapshot_progress sp;

  if (!r->snapshots) {
    return 0;
  }
  if (r->snap_events) {
    return 1;
  }
  return sp_handler_snapshot_status(r->h, &sp) == 0 &&
         (sp.state == SP_SNAPSHOT_TRANSFERRING ||
          sp.state == SP_SNAPSHOT_FAILED);
}

/* "desk at 10.0.0.1:7000": the leader as the pairing file names it. */
static void leader_text(const rt *r, char *buf, size_t len) {
  const pairing_device *l = pairing_leader(&r->pair);
  char id[SP_UUID_STRING_LEN + 1];

  sp_uuid_format(&l->id, id);
  if (!l->address[0]) {
    snprintf(buf, len, "%s (no address: it dials this device)",
             l->name[0] ? l->name : id);
  } else if (!l->hints[0]) {
    snprintf(buf, len, "%s at %s (%s)", l->name[0] ? l->name : id,
             l->address, l->resolve_err[0] ? l->resolve_err : "unresolved");
  } else if (strcmp(l->address, l->hints) != 0) {
    snprintf(buf, len, "%s at %s (%s)", l->name[0] ? l->name : id,
             l->address, l->hints);
  } else {
    snprintf(buf, len, "%s at %s", l->name[0] ? l->name : id, l->address);
  }
}

/* "; next try in 3 s": when the library dials next (sp_handler_status
 * version 2; 0: nothing scheduled, e.g. a stream is being set up). */
static void next_try(sp_tstamp next, sp_tstamp now, char *buf, size_t len) {
  if (!next) {
    buf[0] = '\0';
  } else if (next <= now) {
    snprintf(buf, len, "; next try now");
  } else {
    /* Rounded up: "in 0 s" would read as "now". */
    snprintf(buf, len, "; next try in %llu s",
             (unsigned long long)((next - now + SP_SECONDS - 1) /
                                  SP_SECONDS));
  }
}

/* The link to the leader while it is not up: what the events said, and
 * when the library tries again. */
static void link_text(const rt *r, const sp_handler_status *hs,
                      sp_tstamp now, char *buf, size_t len) {
  char who[512], next[48];
  unsigned long long ago;

  leader_text(r, who, sizeof(who));
  next_try(hs->next_attempt, now, next, sizeof(next));
  if (!r->link_down_at) {
    snprintf(buf, len, "connecting to %s%s", who, next);
    return;
  }
  ago = (unsigned long long)((now - r->link_down_at) / SP_SECONDS);
  if (!r->link_failures) {
    snprintf(buf, len, "connection to %s lost (%s) %llu s ago; "
             "reconnecting%s", who,
             r->link_code ? sp_err_name(r->link_code) : "closed", ago, next);
    return;
  }
  snprintf(buf, len, "connecting to %s: %s (%s); %u attempt%s failed, the "
           "last %llu s ago%s", who,
           r->link_why[0] ? r->link_why : sp_strerror(r->link_code),
           sp_err_name(r->link_code), r->link_failures,
           r->link_failures == 1 ? "" : "s", ago,
           *next ? next : "; retrying");
}

/* The display once a second (a terminal: five times): the state of the
 * link and of a recovery, or the progress while connected. */
static void show(rt *r, progress *pg, const sp_handler_status *hs,
                 sp_tstamp now) {
  sp_snapshot_progress sp;
  char text[1024], who[512];
  int snap = hs->sync_required && r->snapshots &&
             sp_handler_snapshot_status(r->h, &sp) == 0;

  if (!r->leader_up) {
    link_text(r, hs, now, text, sizeof(text));
    progress_state(pg, hs->sequence, now, text);
  } else if (snap && sp.state == SP_SNAPSHOT_TRANSFERRING) {
    progress_snapshot(pg, &sp);
  } else if (hs->sync_required) {
    leader_text(r, who, sizeof(who));
    snprintf(text, sizeof(text), "connected to %s; %s", who,
             snap && sp.state == SP_SNAPSHOT_FAILED
                 ? "recovering: the snapshot failed, the library tries again "
                   "after its backoff"
                 : snap ? "recovering by snapshot"
                        : "sync required: stopped");
    progress_state(pg, hs->sequence, now, text);
  } else {
    leader_text(r, who, sizeof(who));
    snprintf(text, sizeof(text), "connected to %s", who);
    progress_show(pg, hs->sequence, hs->leader_latest, now, text);
  }
}

int follow_loop(rt *r, writes *w, const follow_limits *fl) {
  sp_tstamp last_show;
  sp_handler_status hs;
  progress pg;
  int status = 0;

  last_show = sp_quic_now();
  sp_handler_get_status(r->h, &hs);
  progress_init(&pg, stdout, hs.sequence, last_show);
  while (!rt_stop) {
    sp_tstamp now = sp_quic_now();
    sp_duration wait;

    sp_handler_get_status(r->h, &hs);
    if (r->sync_required) {
      r->sync_required = 0;
      if (!recovering(r)) {
        progress_done(&pg);
        char why[32];
        fprintf(stderr,
                "spsync follower: the leader requires a full sync (%s)%s; "
                "copy its log, then start again\n",
                rt_sync_reason(r->sync_reason, why, sizeof(why)),
                r->snapshots ? " and serves no snapshot" : "");
        status = EXIT_SYNC_REQUIRED;
        break;
      }
      if (!r->snap_installed) {
        progress_done(&pg);
        char why[32];
        fprintf(stderr, "spsync follower: the leader requires a full sync "
                "(%s): recovering by snapshot\n",
                rt_sync_reason(r->sync_reason, why, sizeof(why)));
      }
    }
    if (r->snap_installed) {
      /* One line per install; then the log stands at S and grows again. */
      r->snap_installed = 0;
      progress_snapshot_done(&pg, &r->snap);
      progress_init(&pg, stdout, hs.sequence, now);
    }
    if (!writes_done(w) &&
        (fl->until < 0 || hs.sequence < (sp_seq)fl->until)) {
      uint64_t room =
          fl->until < 0 ? UINT64_MAX : (sp_seq)fl->until - hs.sequence;
      if (writes_pump(w, r->h, room, now) != 0) {
        status = 1;
        break;
      }
      r->watch_fd = writes_poll_fd(w);
    }
    if ((fl->exit_at >= 0 && hs.sequence >= (sp_seq)fl->exit_at) ||
        fl->exit_committed) {
      sp_outbox_status os;
      /* Only once this process's writes have an answer. */
      if (writes_done(w) &&
          (!(writes_enabled(w) || fl->exit_committed) ||
           (sp_handler_outbox_status(r->h, &os) == 0 && os.pending == 0))) {
        break;
      }
    }
    if (fl->timeout &&
        now - fl->start > (sp_duration)fl->timeout * SP_SECONDS) {
      sp_snapshot_progress sp;
      progress_done(&pg);
      if (hs.sync_required && r->snapshots &&
          sp_handler_snapshot_status(r->h, &sp) == 0 &&
          sp.state != SP_SNAPSHOT_INSTALLED) {
        fprintf(stderr, "spsync follower: timed out at %llu, recovering by "
                "snapshot (%llu of %llu chunks)\n",
                (unsigned long long)hs.sequence,
                (unsigned long long)sp.chunks_done,
                (unsigned long long)sp.chunk_count);
      } else {
        fprintf(stderr, "spsync follower: timed out at %llu\n",
                (unsigned long long)hs.sequence);
      }
      status = EXIT_TIMEOUT;
      break;
    }
    if (now - last_show >= (pg.tty ? SP_SECONDS / 5 : SP_SECONDS)) {
      show(r, &pg, &hs, now);
      last_show = now;
    }
    wait = writes_wait(w, now);
    if (rt_step(r, wait < 50 * SP_MILLISECONDS ? wait : 50 * SP_MILLISECONDS) !=
        0) {
      status = 1;
      break;
    }
  }
  progress_done(&pg);
  return status;
}

int cmd_follower(int argc, char **argv) {
  static const struct option opts[] = {
      {"key", 1, 0, 'k'},     {"pairing", 1, 0, 'p'}, {"log", 1, 0, 'l'},
      {"listen", 1, 0, 'L'},  {"exit-at", 1, 0, 'x'}, {"timeout", 1, 0, 't'},
      {"sync-full", 0, 0, 'f'}, {"verbose", 0, 0, 'v'},
      {"apply-thread", 0, 0, 'T'},
      {"input", 1, 0, 'i'},   {"rate", 1, 0, 'r'},    {"count", 1, 0, 'c'},
      {"payload", 1, 0, 'P'}, {"exit-when-committed", 0, 0, 'C'},
      {"outbox-max", 1, 0, 'O'}, {"no-snapshots", 0, 0, 'N'},
      {"snapshot-window", 1, 0, 'W'}, {"snapshot-max", 1, 0, 'M'},
      {"snapshot-delay", 1, 0, 'D'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  long long exit_at = -1, timeout = 0, rate = 0, count = -1, payload = 256;
  int exit_committed = 0;
  const char *input = NULL;
  writes w;
  follow_limits fl;
  sp_handler_status hs;
  rt_options o;
  rt r;
  int c, status = 0, bad = 0;

  memset(&o, 0, sizeof(o));
  o.role = SP_ROLE_FOLLOWER;
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
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
    case 'T': o.apply_thread = 1; break;
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
    case 'N': o.no_snapshots = 1; break;
    case 'W': {
      long long n = parse_count(optarg);
      bad |= n < 1 || n > SP_MAX_SNAPSHOT_WINDOW;
      o.snapshot_window = n > 0 ? (uint32_t)n : 0;
      break;
    }
    case 'M': {
      long long m = parse_count(optarg);
      bad |= m <= 0;
      o.snapshot_max = m > 0 ? (uint64_t)m : 0;
      break;
    }
    case 'D': {
      long long d = parse_count(optarg);
      bad |= d < 0 || d > 10000;
      o.snapshot_delay_ms = d > 0 ? (unsigned)d : 0;
      break;
    }
    case 'h': usage(); return 0;
    default: return opt_error("follower", c, argv);
    }
  }
  if (bad || !o.key_path || !o.pairing_path || !o.log_path || optind != argc) {
    return usage_error("follower", "--key, --pairing and --log are "
                       "required; numbers must be non-negative, payload <= "
                       "65536, snapshot window 1-64, delay <= 10000");
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
  memset(&fl, 0, sizeof(fl));
  fl.exit_at = exit_at;
  fl.exit_committed = exit_committed;
  fl.until = -1;
  fl.timeout = timeout;
  fl.start = sp_quic_now();
  status = follow_loop(&r, &w, &fl);
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
