/*
 * snapsink.h: the follower's snapshot sink as spsync gives it to the
 * library: the SQLite store's sink (sp_sqlite_store_snapshot_sink),
 * optionally pausing after each chunk it wrote durably.  The pause is a
 * knob for the demo and the tests (--snapshot-delay): it makes a transfer
 * on loopback slow enough to watch, and to cut between chunks.
 */
#ifndef SPSYNC_SNAPSINK_H
#define SPSYNC_SNAPSINK_H

#include <sync_protocol/sys/snapshot.h>

typedef struct snapsink {
  sp_snapshot_sink inner;
  unsigned delay_ms;
} snapsink;

/* Fill `*out` with a sink that forwards to `inner` (copied) and sleeps
 * `delay_ms` after each chunk written.  `w` is its user_data: it must
 * outlive the handler given `*out`. */
void snapsink_wrap(snapsink *w, const sp_snapshot_sink *inner,
                   unsigned delay_ms, sp_snapshot_sink *out);

#endif
