/*
 * follow.h: the follower's loop, shared by spsync follower and by spsync
 * leader --follow-on-step-down once it stepped down (cmd_follower.c).
 */
#ifndef SPSYNC_FOLLOW_H
#define SPSYNC_FOLLOW_H

#include "rt.h"
#include "writes.h"

typedef struct follow_limits {
  long long exit_at;  /* exit 0 once the log holds SEQ; -1: never */
  int exit_committed; /* exit 0 once done writing and the outbox is empty */
  long long until;    /* stop writing once the log holds SEQ; -1: never */
  long long timeout;  /* seconds after `start` (exit 4); 0: none */
  sp_tstamp start;
} follow_limits;

/* Follow with `r` (a follower handler), pumping `w`, until a limit, a
 * signal or an error.  Prints progress to standard output.  Returns the
 * follower's exit status: 0, 1, EXIT_SYNC_REQUIRED or EXIT_TIMEOUT. */
int follow_loop(rt *r, writes *w, const follow_limits *fl);

#endif
