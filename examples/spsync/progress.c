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
                   uint64_t now) {
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
    fprintf(p->out, "follower: applied %llu, lag %llu, %.0f entries/s\n",
            (unsigned long long)applied, (unsigned long long)lag, p->rate);
    fflush(p->out);
    p->drawn = 1;
    return;
  }
  fprintf(p->out, "\r\033[K applied %llu  lag %llu  %.0f entries/s",
          (unsigned long long)applied, (unsigned long long)lag, p->rate);
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

void progress_done(progress *p) {
  if (p->tty && p->drawn) {
    fputc('\n', p->out);
    fflush(p->out);
  }
  p->drawn = 0;
}
