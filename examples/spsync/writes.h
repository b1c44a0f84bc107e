/*
 * writes.h: what spsync leader and follower write through
 * sp_handler_submit: entries read from a JSON lines file or standard
 * input (entry_json.h), or generated, paced at a rate and bounded by a
 * count.  On a follower they go to the outbox and on to the leader; on the
 * leader they are appended at once.
 */
#ifndef SPSYNC_WRITES_H
#define SPSYNC_WRITES_H

#include <stdint.h>

#include <sync_protocol/sync_protocol.h>

/* The input format, for --help. */
#define WRITES_INPUT_HELP \
  "\nJSON lines input (--input): one JSON object per line, strings and " \
  "integers only:\n" \
  "  {\"model_type\": \"album\", \"change_type\": \"insert\", " \
  "\"version\": 1, \"data\": \"Holidays\"}\n" \
  "  model_type    string, 1-255 bytes (required)\n" \
  "  change_type   \"insert\", \"update\", \"delete\" or " \
  "\"bulk_insert\" (required)\n" \
  "  version       integer (required)\n" \
  "  record_id     UUID text (default: a random one)\n" \
  "  timestamp_ms  integer, ms since 1970 (default: now)\n" \
  "  data          string, stored as its UTF-8 bytes, or\n" \
  "  data_hex      hex digits, stored as those bytes (default: empty)\n" \
  "Blank lines are skipped.  A malformed line (any other key or type, bad " \
  "JSON)\nstops the command with its line number and exit status 1: the " \
  "lines before\nit are submitted first (waiting for room in the outbox, " \
  "within --timeout),\nnothing of it or after it.  An entry larger than " \
  "the whole outbox\n(--outbox-max) stops the command the same way.\n"

/* Entries per sp_handler_submit call, at most. */
#define WRITES_BATCH 512
/* A batch stops growing once its payload bytes reach this share of the
 * outbox's limit: a batch must fit in the outbox, and a smaller one fits
 * sooner in a partly full one. */
#define WRITES_BATCH_SHARE 8

typedef struct writes {
  /* Options, set before writes_open. */
  long long rate;     /* entries per second; 0: no pacing (input only) */
  long long count;    /* most entries this process writes; -1: no limit */
  size_t payload;     /* bytes of a generated entry's data */
  const char *input;  /* JSON lines file, "-" for standard input, or NULL */
  const sp_uuid *device;
  uint64_t outbox_max_bytes; /* the handler's; 0: its default */

  /* State. */
  int fd;
  int eof;
  char *buf;
  size_t buf_len, buf_cap, scan;
  uint64_t line_no;
  uint64_t submitted;
  uint64_t generated;
  sp_tstamp start;
  int full_reported;
  int want_input; /* the last pump stopped waiting for input */
  int failed;     /* a bad line was reported: fail once the batch is in */
  sp_entry batch[WRITES_BATCH];
  void *owned[WRITES_BATCH];
  uint64_t lines[WRITES_BATCH]; /* input line of each (0: generated) */
  size_t nbatch;
  uint64_t batch_bytes;
} writes;

/* Whether any writing was asked for. */
int writes_enabled(const writes *w);

/* Open the input (if any).  Returns 0, or -1 after printing why. */
int writes_open(writes *w, sp_tstamp now);

/* Submit what is due at `now`, at most `room` more entries.  Returns 0,
 * or -1 after printing why (a malformed input line, once the lines before
 * it were submitted, nothing of it; an entry larger than the outbox; or a
 * submit error). */
int writes_pump(writes *w, sp_handler *h, uint64_t room, sp_tstamp now);

/* 1 once everything asked for was submitted. */
int writes_done(const writes *w);

/* How long the loop may sleep before writes_pump has work again. */
sp_duration writes_wait(const writes *w, sp_tstamp now);

/* The input's descriptor worth polling (a pipe or terminal) when the
 * writer waits for input, or -1 (unread input it does not want yet must
 * not wake the loop). */
int writes_poll_fd(const writes *w);

void writes_close(writes *w);

#endif
