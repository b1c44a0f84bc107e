/*
 * progress.h: the follower's live progress: a redrawn line with a bar on
 * a terminal, plain lines otherwise.
 */
#ifndef SPSYNC_PROGRESS_H
#define SPSYNC_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#include <sync_protocol/events.h>

typedef struct progress {
  FILE *out;
  int tty;
  uint64_t last_applied;
  uint64_t last_ns;
  double rate; /* entries/s, smoothed */
  int drawn;
} progress;

void progress_init(progress *p, FILE *out, uint64_t applied, uint64_t now_ns);
/* Show the state while connected to the leader (`link`: "connected to
 * ..."); call about once a second (tty: more often is fine). */
void progress_show(progress *p, uint64_t applied, uint64_t leader_latest,
                   uint64_t now_ns, const char *link);
/* Show the applied sequence and `state` (not connected: no lag to show),
 * as often as progress_show. */
void progress_state(progress *p, uint64_t applied, uint64_t now_ns,
                    const char *state);
/* End the redrawn line before other output. */
void progress_done(progress *p);
/* Show a snapshot recovery under way (as progress_show: about once a
 * second, more often on a terminal). */
void progress_snapshot(progress *p, const sp_snapshot_progress *s);
/* The one line a finished recovery prints:
 *   snapshot: <bytes> bytes in <chunks> chunks, resumed <n> times */
void progress_snapshot_done(progress *p, const sp_snapshot_progress *s);

#endif
