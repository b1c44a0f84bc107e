/*
 * progress.c: follower progress display.
 */
#include <unistd.h>

#include "progress.h"

#define BAR 30

void progress_init(progress *p, FILE *out, uint64_t applied, uint64_t now) {
  p->out = out;
  p->tty = isatty(fileno(out));
  p->last_applied = applied;
  p->last_ns = now;
  p->rate = 0;
  p->drawn = 0;
}

void progress_show(progress *p, uint64_t applied, uint64_t latest,
                   uint64_t now, const char *link) {
  uint64_t lag = latest > applied ? latest - applied : 0;
  double dt = (double)(now - p->last_ns) / 1e9;

  if (dt > 0) {
    double inst = (double)(applied - p->last_applied) / dt;
    /* Smooth over a few seconds so the number is readable. */
    p->rate = p->drawn ? 0.7 * p->rate + 0.3 * inst : inst;
  }
  p->last_applied = applied;
  p->last_ns = now;
  if (!p->tty) {
    fprintf(p->out, "follower: applied %llu, lag %llu, %.0f entries/s, %s\n",
            (unsigned long long)applied, (unsigned long long)lag, p->rate,
            link);
    fflush(p->out);
    p->drawn = 1;
    return;
  }
  fprintf(p->out, "\r\033[K %s  applied %llu  lag %llu  %.0f entries/s",
          link, (unsigned long long)applied, (unsigned long long)lag,
          p->rate);
  if (lag > 0 && latest > 0) {
    int full = (int)((double)applied / (double)latest * BAR), i;
    fputs("  [", p->out);
    for (i = 0; i < BAR; ++i) {
      fputc(i < full ? '#' : '.', p->out);
    }
    fprintf(p->out, "] %3d%%", (int)(100.0 * (double)applied / (double)latest));
  }
  fflush(p->out);
  p->drawn = 1;
}

void progress_state(progress *p, uint64_t applied, uint64_t now,
                    const char *state) {
  /* Nothing moves while down: the rate starts afresh when it does. */
  p->last_applied = applied;
  p->last_ns = now;
  p->rate = 0;
  if (!p->tty) {
    fprintf(p->out, "follower: applied %llu, %s\n",
            (unsigned long long)applied, state);
  } else {
    fprintf(p->out, "\r\033[K applied %llu  %s", (unsigned long long)applied,
            state);
  }
  fflush(p->out);
  p->drawn = 1;
}

void progress_done(progress *p) {
  if (p->tty && p->drawn) {
    fputc('\n', p->out);
    fflush(p->out);
  }
  p->drawn = 0;
}

static void bar(FILE *out, uint64_t done, uint64_t total) {
  int full = total ? (int)((double)done / (double)total * BAR) : BAR, i;

  fputs("  [", out);
  for (i = 0; i < BAR; ++i) {
    fputc(i < full ? '#' : '.', out);
  }
  fprintf(out, "] %3d%%",
          total ? (int)(100.0 * (double)done / (double)total) : 100);
}

void progress_snapshot(progress *p, const sp_snapshot_progress *s) {
  if (!p->tty) {
    fprintf(p->out, "follower: snapshot at %llu: %llu of %llu bytes, %llu of "
            "%llu chunks, resumed %u, restarted %u\n",
            (unsigned long long)s->sequence,
            (unsigned long long)s->bytes_done,
            (unsigned long long)s->bytes_total,
            (unsigned long long)s->chunks_done,
            (unsigned long long)s->chunk_count, s->resumes, s->restarts);
    fflush(p->out);
    p->drawn = 1;
    return;
  }
  fprintf(p->out, "\r\033[K snapshot %.1f/%.1f MB  %llu/%llu chunks  "
          "resumed %u", (double)s->bytes_done / 1e6,
          (double)s->bytes_total / 1e6, (unsigned long long)s->chunks_done,
          (unsigned long long)s->chunk_count, s->resumes);
  if (s->bytes_total) {
    bar(p->out, s->bytes_done, s->bytes_total);
  }
  fflush(p->out);
  p->drawn = 1;
}

void progress_snapshot_done(progress *p, const sp_snapshot_progress *s) {
  progress_done(p);
  fprintf(p->out, "snapshot: %llu bytes in %llu chunks, resumed %u times\n",
          (unsigned long long)s->bytes_total,
          (unsigned long long)s->chunk_count, s->resumes);
  fflush(p->out);
}
