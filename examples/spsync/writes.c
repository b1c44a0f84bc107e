/*
 * writes.c: spsync's writer: JSON lines or generated entries, submitted
 * in batches at a rate.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "entry_json.h"
#include "rt.h"
#include "writes.h"

/* Longest input line: a 1 MiB payload as hex, and the rest of the object. */
#define LINE_MAX_BYTES (2u * ENTRY_JSON_MAX_DATA + 65536u)
/* Without --rate, batches submitted per pump: the network gets its turn
 * between pumps. */
#define UNPACED_BATCHES 4

static uint64_t wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int writes_enabled(const writes *w) { return w->input || w->rate > 0; }

int writes_open(writes *w, sp_tstamp now) {
  w->fd = -1;
  w->start = now;
  if (!w->input) {
    return 0;
  }
  if (strcmp(w->input, "-") == 0) {
    w->fd = STDIN_FILENO;
  } else {
    int fl;
    /* A FIFO's open would wait for a writer before the loop runs; the
     * loop polls it instead (poll reports nothing until a writer comes). */
    w->fd = open(w->input, O_RDONLY | O_NONBLOCK);
    if (w->fd < 0) {
      fprintf(stderr, "spsync: cannot open %s: %s\n", w->input,
              strerror(errno));
      return -1;
    }
    fl = fcntl(w->fd, F_GETFL);
    if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
      fprintf(stderr, "spsync: %s: %s\n", w->input, strerror(errno));
      return -1;
    }
  }
  return 0;
}

void writes_close(writes *w) {
  size_t i;

  for (i = 0; i < w->nbatch; ++i) {
    free(w->owned[i]);
  }
  w->nbatch = 0;
  if (w->fd > STDIN_FILENO) {
    close(w->fd);
  }
  w->fd = -1;
  free(w->buf);
  w->buf = NULL;
}

/* The input's descriptor if reading it could block (a pipe, a FIFO, a
 * terminal), else -1. */
static int pollable(const writes *w) {
  struct stat st;

  if (w->fd < 0 || w->eof || fstat(w->fd, &st) != 0 || S_ISREG(st.st_mode)) {
    return -1;
  }
  return w->fd;
}

int writes_poll_fd(const writes *w) {
  return w->want_input ? pollable(w) : -1;
}

/* Read more input without blocking the loop.  Returns 1 if bytes came, 0
 * if none are ready, -1 on error (printed). */
static int fill(writes *w) {
  ssize_t got;

  if (pollable(w) >= 0) {
    struct pollfd p = {w->fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) {
      return 0;
    }
  }
  if (w->scan > 0) {
    /* Drop consumed lines before growing. */
    memmove(w->buf, w->buf + w->scan, w->buf_len - w->scan);
    w->buf_len -= w->scan;
    w->scan = 0;
  }
  if (w->buf_cap - w->buf_len < 65536) {
    size_t cap = w->buf_cap ? w->buf_cap * 2 : 131072;
    char *b;
    if (cap > LINE_MAX_BYTES + 65536) {
      cap = LINE_MAX_BYTES + 65536;
    }
    if (cap <= w->buf_cap) {
      fprintf(stderr, "spsync: %s: line %llu: longer than %u bytes\n",
              w->input, (unsigned long long)w->line_no + 1, LINE_MAX_BYTES);
      return -1;
    }
    b = realloc(w->buf, cap);
    if (!b) {
      fprintf(stderr, "spsync: out of memory\n");
      return -1;
    }
    w->buf = b;
    w->buf_cap = cap;
  }
  got = read(w->fd, w->buf + w->buf_len, w->buf_cap - w->buf_len);
  if (got < 0) {
    if (errno == EINTR || errno == EAGAIN) {
      return 0;
    }
    fprintf(stderr, "spsync: reading %s: %s\n", w->input, strerror(errno));
    return -1;
  }
  if (got == 0) {
    w->eof = 1;
    return 0;
  }
  w->buf_len += (size_t)got;
  return 1;
}

/* The next input line (without its newline) in *line and *len.  Returns 1, 0
 * if none is complete yet, 2 at the end of the input, -1 on error. */
static int next_line(writes *w, char **line, size_t *len) {
  for (;;) {
    size_t avail = w->buf_len - w->scan;
    char *start = avail ? w->buf + w->scan : NULL;
    char *nl = avail ? memchr(start, '\n', avail) : NULL;
    int rv;

    if (nl || (w->eof && avail)) {
      *line = start;
      *len = nl ? (size_t)(nl - start) : avail;
      w->scan += *len + (nl ? 1 : 0);
      w->line_no++;
      if (*len > LINE_MAX_BYTES) {
        fprintf(stderr, "spsync: %s: line %llu: longer than %u bytes\n",
                w->input, (unsigned long long)w->line_no, LINE_MAX_BYTES);
        return -1;
      }
      return 1;
    }
    if (w->eof) {
      return 2;
    }
    rv = fill(w);
    if (rv <= 0) {
      return rv;
    }
  }
}

/* Copy what `e` points to into one block the batch owns. */
static int keep(writes *w, const sp_entry *e) {
  sp_entry *d = &w->batch[w->nbatch];
  char *b = malloc(e->model_type_len + e->data_len + 1);

  if (!b) {
    fprintf(stderr, "spsync: out of memory\n");
    return -1;
  }
  *d = *e;
  memcpy(b, e->model_type, e->model_type_len);
  if (e->data_len) {
    memcpy(b + e->model_type_len, e->data, e->data_len);
  }
  d->model_type = b;
  d->data = (const uint8_t *)b + e->model_type_len;
  d->device_id = *w->device;
  w->lines[w->nbatch] = w->input ? w->line_no : 0;
  w->batch_bytes += e->model_type_len + e->data_len;
  w->owned[w->nbatch++] = b;
  return 0;
}

static uint64_t outbox_max(const writes *w) {
  return w->outbox_max_bytes ? w->outbox_max_bytes
                             : SP_OUTBOX_MAX_BYTES_DEFAULT;
}

/* Forget the first `n` entries of the batch (submitted). */
static void drop(writes *w, size_t n) {
  size_t i;

  for (i = 0; i < n; ++i) {
    free(w->owned[i]);
    w->batch_bytes -= w->batch[i].model_type_len + w->batch[i].data_len;
  }
  w->nbatch -= n;
  memmove(w->batch, w->batch + n, w->nbatch * sizeof(w->batch[0]));
  memmove(w->owned, w->owned + n, w->nbatch * sizeof(w->owned[0]));
  memmove(w->lines, w->lines + n, w->nbatch * sizeof(w->lines[0]));
}

static int add_generated(writes *w) {
  uint8_t *data = malloc(w->payload + 1);
  uint64_t k = ++w->generated;
  sp_entry e;
  size_t b;
  int rv;

  if (!data) {
    fprintf(stderr, "spsync: out of memory\n");
    return -1;
  }
  for (b = 0; b < w->payload; ++b) {
    data[b] = (uint8_t)(k * 131 + b);
  }
  memset(&e, 0, sizeof(e));
  e.timestamp_ms = wall_ms();
  e.model_type = "demo_item";
  e.model_type_len = 9;
  entry_random_uuid(&e.record_id);
  e.change_type = (sp_change_type)(k % 4);
  e.version = (int64_t)k;
  e.data = data;
  e.data_len = w->payload;
  rv = keep(w, &e);
  free(data);
  return rv;
}

/* Returns 1 if an entry was added, 0 if input is not ready or over, -1. */
static int add_input(writes *w) {
  for (;;) {
    char err[256], *line;
    size_t len;
    sp_entry e;
    int rv = next_line(w, &line, &len);

    if (rv != 1) {
      w->want_input = rv == 0;
      return rv < 0 ? -1 : 0;
    }
    rv = entry_from_json(line, len, wall_ms(), &e, err, sizeof(err));
    if (rv == 1) {
      continue;
    }
    if (rv != 0) {
      fprintf(stderr, "spsync: %s: line %llu: %s (nothing of it was "
              "submitted)\n", strcmp(w->input, "-") ? w->input : "stdin",
              (unsigned long long)w->line_no, err);
      return -1;
    }
    return keep(w, &e) == 0 ? 1 : -1;
  }
}

/* Submit the batch, or the longest prefix of it the outbox takes.
 * Returns 0 (submitted, or the outbox is full: the rest kept for a later
 * try), -1 on another error or an entry larger than the whole outbox
 * (printed). */
static int flush(writes *w, sp_handler *h, sp_tstamp now) {
  size_t n = w->nbatch;
  int rv;

  if (n == 0) {
    return 0;
  }
  /* Refused from the outbox's counters, before any store write: cheap. */
  while ((rv = sp_handler_submit(h, w->batch, n, NULL, now)) ==
             SP_ERR_OUTBOX_FULL &&
         n > 1) {
    n /= 2;
  }
  if (rv == SP_ERR_OUTBOX_FULL &&
      w->batch[0].model_type_len + w->batch[0].data_len > outbox_max(w)) {
    const char *in = !w->input ? "a generated entry"
                     : strcmp(w->input, "-") ? w->input : "stdin";
    fprintf(stderr, "spsync: %s: line %llu: the entry's %llu bytes are "
            "more than the outbox holds (%llu; nothing of it was "
            "submitted)\n", in, (unsigned long long)w->lines[0],
            (unsigned long long)(w->batch[0].model_type_len +
                                 w->batch[0].data_len),
            (unsigned long long)outbox_max(w));
    return -1;
  }
  if (rv == SP_ERR_OUTBOX_FULL) {
    if (!w->full_reported) {
      fprintf(stderr, "spsync: the outbox is full; waiting for the leader "
              "to take some\n");
      w->full_reported = 1;
    }
    return 0;
  }
  if (rv != 0) {
    rt_error("submit", rv);
    return -1;
  }
  w->full_reported = 0;
  w->submitted += n;
  drop(w, n);
  return 0;
}

static uint64_t due(const writes *w, uint64_t room, sp_tstamp now) {
  uint64_t d;

  if (w->rate > 0) {
    d = (uint64_t)((double)w->rate * (double)(now - w->start) /
                   (double)SP_SECONDS);
  } else {
    d = w->submitted + (uint64_t)UNPACED_BATCHES * WRITES_BATCH;
  }
  if (w->count >= 0 && d > (uint64_t)w->count) {
    d = (uint64_t)w->count;
  }
  if (d > w->submitted && d - w->submitted > room) {
    d = w->submitted + room;
  }
  return d;
}

int writes_done(const writes *w) {
  if (w->nbatch || w->failed) {
    return 0;
  }
  if (w->count >= 0 && w->submitted >= (uint64_t)w->count) {
    return 1;
  }
  return w->input ? w->eof && w->scan == w->buf_len : w->rate <= 0;
}

int writes_pump(writes *w, sp_handler *h, uint64_t room, sp_tstamp now) {
  uint64_t target, cap = outbox_max(w) / WRITES_BATCH_SHARE;
  int rounds;

  w->want_input = 0;
  if (w->nbatch) {
    /* What the full outbox did not take yet. */
    if (flush(w, h, now) != 0) {
      return -1;
    }
    if (w->nbatch) {
      return 0;
    }
  }
  if (w->failed) {
    return -1; /* every line before the bad one is in */
  }
  target = due(w, room, now);
  for (rounds = 0; rounds < UNPACED_BATCHES && w->submitted < target;
       ++rounds) {
    int rv = 1;
    while (rv == 1 && w->nbatch < WRITES_BATCH && w->batch_bytes < cap &&
           w->submitted + w->nbatch < target) {
      if (w->input) {
        rv = add_input(w);
      } else {
        rv = add_generated(w) == 0 ? 1 : -1;
      }
    }
    if (rv < 0) {
      /* The lines before the bad one still go, once the outbox has room
       * for them (the command's --timeout bounds the wait). */
      w->failed = 1;
      w->want_input = 0;
      if (flush(w, h, now) != 0) {
        return -1;
      }
      return w->nbatch ? 0 : -1;
    }
    if (flush(w, h, now) != 0) {
      return -1;
    }
    if (w->nbatch || rv == 0) {
      break;
    }
  }
  if (w->nbatch) {
    w->want_input = 0; /* the outbox first */
  }
  return 0;
}

sp_duration writes_wait(const writes *w, sp_tstamp now) {
  (void)now;
  if (writes_done(w)) {
    return SP_TSTAMP_MAX;
  }
  if (w->nbatch) {
    return 20 * SP_MILLISECONDS;
  }
  if (w->rate > 0) {
    return SP_SECONDS / (sp_duration)w->rate + 1;
  }
  /* Unpaced input: a file goes on at once, a pipe wakes the poll. */
  return writes_poll_fd(w) >= 0 ? 100 * SP_MILLISECONDS : 0;
}
