/*
 * snapsink.c: the follower's snapshot sink, forwarding to the store's.
 */
#include <errno.h>
#include <time.h>

#include "snapsink.h"

static int w_pending(sp_snapshot_info *info, uint64_t *have, void *ud) {
  snapsink *w = ud;
  return w->inner.pending(info, have, w->inner.user_data);
}

static int w_begin(const sp_snapshot_info *info, uint64_t *have, void *ud) {
  snapsink *w = ud;
  return w->inner.begin(info, have, w->inner.user_data);
}

static int w_write_chunk(uint64_t index, const uint8_t *data, size_t len,
                         void *ud) {
  snapsink *w = ud;
  int rv = w->inner.write_chunk(index, data, len, w->inner.user_data);

  /* After the write: what a cut during the pause loses is nothing. */
  if (rv == 0 && w->delay_ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(w->delay_ms / 1000u);
    ts.tv_nsec = (long)(w->delay_ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  return rv;
}

static int w_commit(void *ud) {
  snapsink *w = ud;
  return w->inner.commit(w->inner.user_data);
}

static int w_abort(void *ud) {
  snapsink *w = ud;
  return w->inner.abort(w->inner.user_data);
}

void snapsink_wrap(snapsink *w, const sp_snapshot_sink *inner,
                   unsigned delay_ms, sp_snapshot_sink *out) {
  sp_snapshot_sink s = SP_SNAPSHOT_SINK_INIT;

  w->inner = *inner;
  w->delay_ms = delay_ms;
  s.user_data = w;
  s.pending = w_pending;
  s.begin = w_begin;
  s.write_chunk = w_write_chunk;
  s.commit = w_commit;
  s.abort = w_abort;
  *out = s;
}
