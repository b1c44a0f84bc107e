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
#include "rt.h"

#define BATCH_MAX 512

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

/* Append `n` generated entries in one transaction and announce them. */
static int generate(rt *r, int n, size_t payload, uint64_t *counter) {
  sp_entry e[BATCH_MAX];
  uint8_t *data = malloc((size_t)n * payload + 1);
  sp_seq first = 0;
  int i, rv;

  if (!data) {
    fprintf(stderr, "spsync leader: out of memory\n");
    return -1;
  }
  for (i = 0; i < n; ++i) {
    uint64_t k = ++*counter;
    uint8_t *d = data + (size_t)i * payload;
    size_t b;
    for (b = 0; b < payload; ++b) {
      d[b] = (uint8_t)(k * 131 + b);
    }
    memset(&e[i], 0, sizeof(e[i]));
    e[i].device_id = r->self->id;
    e[i].timestamp_ms = (uint64_t)time(NULL) * 1000;
    e[i].model_type = "demo_item";
    e[i].model_type_len = 9;
    memcpy(e[i].record_id.bytes, &k, sizeof(k));
    e[i].change_type = (sp_change_type)(k % 4);
    e[i].version = (int64_t)k;
    e[i].data = d;
    e[i].data_len = payload;
  }
  rv = sp_sqlite_store_append(r->store, e, (size_t)n, &first);
  free(data);
  if (rv != 0) {
    rt_error("append", rv);
    return -1;
  }
  rv = sp_handler_notify_new_entries(r->h, first, first + (sp_seq)n - 1,
                                     sp_quic_now());
  if (rv != 0) {
    rt_error("notify", rv);
    return -1;
  }
  return 0;
}

static void usage(void) {
  printf(
      "usage: spsync leader --key FILE --pairing FILE --log FILE [options]\n"
      "\nServe the log to the followers named in the pairing file.\n\n"
      "  --listen IP:PORT     address to bind (default: this device's "
      "pairing address)\n"
      "  --rate N             write N generated entries per second\n"
      "  --count N            stop writing after N entries (default: no "
      "limit with --rate)\n"
      "  --until SEQ          stop writing once the log reaches SEQ (it "
      "survives restarts)\n"
      "  --payload BYTES      payload size of generated entries (256)\n"
      "  --epoch N            lead with epoch N (kept with the log; default: "
      "the log's)\n"
      "  --exit-when-synced   once done writing, exit when every follower "
      "holds all\n"
      "                       (positions acknowledged to an earlier leader "
      "process\n"
      "                       are kept with the log: a synced follower need "
      "not connect)\n"
      "  --timeout SECONDS    give up (exit 4) after this long\n"
      "  --sync-full          SQLite synchronous=FULL\n"
      "  --verbose            log connections and refusals\n");
}

int cmd_leader(int argc, char **argv) {
  static const struct option opts[] = {
      {"key", 1, 0, 'k'},       {"pairing", 1, 0, 'p'},
      {"log", 1, 0, 'l'},       {"listen", 1, 0, 'L'},
      {"rate", 1, 0, 'r'},      {"count", 1, 0, 'c'},
      {"payload", 1, 0, 'P'},   {"epoch", 1, 0, 'e'},
      {"until", 1, 0, 'u'},
      {"exit-when-synced", 0, 0, 'x'}, {"timeout", 1, 0, 't'},
      {"sync-full", 0, 0, 'f'}, {"verbose", 0, 0, 'v'},
      {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
  rt_options o;
  rt r;
  long long rate = 0, count = -1, until = -1, payload = 256, epoch = 0,
            timeout = 0;
  int exit_synced = 0, c, status = 0, waiting = 0, bad = 0;
  uint64_t written = 0;
  sp_tstamp start, last_print;

  memset(&o, 0, sizeof(o));
  o.role = SP_ROLE_LEADER;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
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
    case 'e': epoch = parse_count(optarg); break;
    case 'x': exit_synced = 1; break;
    case 't': timeout = parse_count(optarg); break;
    case 'f': o.sync_full = 1; break;
    case 'v': o.verbose = 1; break;
    case 'h': usage(); return 0;
    default: return EXIT_USAGE;
    }
  }
  if (bad || !o.key_path || !o.pairing_path || !o.log_path || optind != argc ||
      rate < 0 || payload < 0 || payload > 65536 || epoch < 0 ||
      timeout < 0) {
    fprintf(stderr, "spsync leader: --key, --pairing and --log are "
                    "required; numbers must be non-negative, payload <= "
                    "65536 (see --help)\n");
    return EXIT_USAGE;
  }
  o.epoch = (uint64_t)epoch;
  if (rt_open(&r, &o) != 0) {
    rt_close(&r);
    return 1;
  }
  start = last_print = sp_quic_now();
  while (!rt_stop) {
    sp_tstamp now = sp_quic_now();
    sp_duration wait = 100 * SP_MILLISECONDS;
    sp_handler_status hs;
    int done_writing;

    sp_handler_get_status(r.h, &hs);
    done_writing = rate == 0 || (count >= 0 && written >= (uint64_t)count) ||
                   (until >= 0 && hs.sequence >= (sp_seq)until);

    if (!done_writing) {
      uint64_t due = (uint64_t)((double)rate * (double)(now - start) /
                                (double)SP_SECONDS);
      if (count >= 0 && due > (uint64_t)count) {
        due = (uint64_t)count;
      }
      if (until >= 0 && due > written + ((sp_seq)until - hs.sequence)) {
        due = written + ((sp_seq)until - hs.sequence);
      }
      while (written < due && status == 0) {
        uint64_t n = due - written;
        status = generate(&r, n > BATCH_MAX ? BATCH_MAX : (int)n,
                          (size_t)payload, &written);
      }
      wait = SP_SECONDS / (sp_duration)rate + 1;
    } else if (exit_synced && !waiting) {
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
      sp_seq floor = 0;
      sp_handler_retention_floor(r.h, &floor);
      printf("leader: latest %llu, %d follower stream(s), all acked up to "
             "%llu\n",
             (unsigned long long)hs.sequence, r.peers,
             (unsigned long long)floor);
      fflush(stdout);
      last_print = now;
    }
    if (rt_step(&r, wait) != 0) {
      status = 1;
      break;
    }
  }
  if (status == 0) {
    sp_handler_status hs;
    sp_handler_get_status(r.h, &hs);
    printf("leader: done, latest %llu%s\n", (unsigned long long)hs.sequence,
           all_acked ? ", every follower acknowledged it" : "");
  }
  rt_close(&r);
  return status;
}
