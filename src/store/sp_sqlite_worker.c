/*
 * sp_sqlite_worker.c: the SQLite store's apply thread (sqlite_store.h,
 * apply_thread; the contract is sys/store.h, `durable`).
 *
 * Queue.  `apply` copies a batch (entries, model types, payloads, hashes)
 * into one block and appends it; the thread commits the head of the queue
 * through sp_sqlite_apply on its own store object (a second connection to
 * the file: WAL lets the caller's connection read while it writes) and
 * only then takes the block off the queue.  Blocks go back to the caller
 * on a free list and are reused: the host's allocator (sp_mem) is only
 * ever called from the caller's thread.  The bound counts the bytes of
 * the blocks queued, the one being committed included; a batch that does
 * not fit waits for room (backpressure), unless the queue is empty.
 *
 * What the caller's side answers (everything here runs on the caller's
 * thread, except worker_main):
 * - `apply` never waits for a commit while the queue has room.  It checks
 *   the batch against `head`, the state as if every queued batch were
 *   applied (kept in memory: the follower applies page after page without
 *   a query between them), and then queues it.
 * - `state` answers `head` too, at once: the follower asks it only when
 *   it (re)starts, and what it needs then is where its queued pages end.
 * - every other call drains the queue first and then answers from the
 *   file, as a store without the thread does: that is the simple way to
 *   answer "as if applied" for reads that may reach queued entries, and
 *   the follower's catch-up makes none of them per page.  Such a call may
 *   write (append, reset, a snapshot install), so `head` is re-read from
 *   the file afterwards (`known` = 0).
 * - `durable` reads the highest committed sequence under the lock.
 * A failed commit drops its batch and every later one, and is reported
 * once, by whichever call comes next (durable included); `head` is then
 * re-read from the file, which holds exactly what was committed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sync_protocol/errors.h"
#include "sp_mem_int.h"
#include "sp_sqlite_int.h"
#include "sp_sqlite_worker.h"

typedef struct batch {
  struct batch *next;
  /* Bytes of the block, and of it counted against the bound. */
  size_t cap;
  size_t bytes;
  size_t n;
  uint64_t epoch;
  sp_entry *entries;
  uint8_t *hashes;
} batch;

/* The entries start after the header, aligned for any field. */
#define BATCH_HDR \
  ((sizeof(batch) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

struct sp_sqlite_worker {
  sp_sqlite_store *store; /* the caller's */
  sp_sqlite_store *db;    /* the thread's own connection */
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t work; /* the thread waits: a batch queued, or stop */
  pthread_cond_t room; /* the caller waits: room, drained, or a failure */
  int efd;
  void (*hook)(void *);
  void *hook_ctx;

  /* -- under lock -- */
  batch *first, *last; /* queued; `first` is being committed */
  batch *free_list;    /* committed or dropped, for the caller to reuse */
  size_t queued;       /* bytes of the queued blocks */
  size_t max_bytes;
  sp_seq durable;      /* highest committed sequence */
  int failed;          /* a failed commit's error, not reported yet */
  char failmsg[256];
  int signaled; /* efd written and not read since */
  int stop;

  /* -- the caller's thread only -- */
  /* `head` is the state as if every queued batch were applied; valid
   * while `known` (cleared when something else may have written). */
  sp_store_state head;
  int known;
  /* The vtable without the thread (wrapped callbacks call these). */
  sp_store inner;
};

static void (*g_hook)(void *);
static void *g_hook_ctx;

void sp_sqlite_worker_set_test_hook(void (*fn)(void *ctx), void *ctx) {
  g_hook = fn;
  g_hook_ctx = ctx;
}

/* Under lock: make the descriptor readable (once until it is read). */
static void signal_news(sp_sqlite_worker *w) {
  if (!w->signaled) {
    uint64_t one = 1;
    w->signaled = 1;
    /* Cannot fail short of a bug: the counter never nears its limit. */
    (void)!write(w->efd, &one, sizeof(one));
  }
}

/* Under lock. */
static void clear_news(sp_sqlite_worker *w) {
  if (w->signaled) {
    uint64_t v;
    w->signaled = 0;
    (void)!read(w->efd, &v, sizeof(v));
  }
}

/* Under lock: move every queued block to the free list. */
static void drop_queue(sp_sqlite_worker *w) {
  while (w->first) {
    batch *b = w->first;
    w->first = b->next;
    b->next = w->free_list;
    w->free_list = b;
  }
  w->last = NULL;
  w->queued = 0;
}

static void *worker_main(void *arg) {
  sp_sqlite_worker *w = arg;

  pthread_mutex_lock(&w->lock);
  for (;;) {
    batch *b;
    int rv;

    while (!w->first && !w->stop) {
      pthread_cond_wait(&w->work, &w->lock);
    }
    b = w->first;
    if (!b) {
      break; /* stopping, and everything is committed */
    }
    pthread_mutex_unlock(&w->lock);
    if (w->hook) {
      w->hook(w->hook_ctx);
    }
    /* The caller never touches `b` while it is queued; it checked the
     * batch before queueing it. */
    rv = sp_sqlite_apply_checked(w->db, b->entries, b->hashes, b->n,
                                 b->epoch);
    pthread_mutex_lock(&w->lock);
    if (rv == 0) {
      w->first = b->next;
      if (!w->first) {
        w->last = NULL;
      }
      w->queued -= b->bytes;
      if (b->n) {
        w->durable = b->entries[b->n - 1].sequence;
      }
      b->next = w->free_list;
      w->free_list = b;
    } else {
      /* The later batches were checked against a state this one never
       * reached: they go too. */
      w->failed = rv;
      snprintf(w->failmsg, sizeof(w->failmsg), "%s",
               sp_sqlite_store_errmsg(w->db));
      drop_queue(w);
    }
    signal_news(w);
    pthread_cond_broadcast(&w->room);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Under lock: report a failed commit (once).  Its text becomes the
 * store's errmsg, which the library asks for right after. */
static int take_failure(sp_sqlite_store *s) {
  sp_sqlite_worker *w = s->worker;
  int rv = w->failed;

  if (rv) {
    w->failed = 0;
    snprintf(s->errmsg, sizeof(s->errmsg), "%s", w->failmsg);
    w->known = 0;
  }
  return rv;
}

/* The caller's thread, queue empty: read `head` (and the durable point)
 * from the file. */
static int refresh(sp_sqlite_store *s) {
  sp_sqlite_worker *w = s->worker;
  int rv = sp_sqlite_state(&w->head, s);

  if (rv == 0) {
    pthread_mutex_lock(&w->lock);
    w->durable = w->head.applied;
    pthread_mutex_unlock(&w->lock);
    w->known = 1;
  }
  return rv;
}

int sp_sqlite_worker_sync(sp_sqlite_store *s) {
  sp_sqlite_worker *w = s->worker;
  int rv;

  if (!w) {
    return 0;
  }
  pthread_mutex_lock(&w->lock);
  while (w->first && !w->failed) {
    pthread_cond_wait(&w->room, &w->lock);
  }
  rv = take_failure(s);
  pthread_mutex_unlock(&w->lock);
  /* The caller may write to the file next. */
  w->known = 0;
  return rv;
}

/* A block of at least `need` bytes: a free one if it is large enough. */
static batch *get_block(sp_sqlite_store *s, size_t need) {
  sp_sqlite_worker *w = s->worker;
  batch *b, *gone = NULL;

  pthread_mutex_lock(&w->lock);
  b = w->free_list;
  if (b) {
    w->free_list = b->next;
  }
  pthread_mutex_unlock(&w->lock);
  if (b && b->cap < need) {
    gone = b;
    b = NULL;
  }
  sp_free(&s->mem, gone);
  if (!b) {
    /* Some room to spare, so that pages of slightly varying size reuse
     * their blocks. */
    size_t cap = need + need / 4;
    b = sp_malloc(&s->mem, cap < need ? need : cap);
    if (!b) {
      return NULL;
    }
    b->cap = cap < need ? need : cap;
  }
  return b;
}

/* Copy the batch into a block; NULL on SP_ERR_NOMEM. */
static batch *copy_batch(sp_sqlite_store *s, const sp_entry *entries,
                         const uint8_t *hashes, size_t n, uint64_t epoch) {
  size_t need = BATCH_HDR + n * (sizeof(sp_entry) + SP_HASH_LEN);
  uint8_t *p;
  batch *b;

  for (size_t i = 0; i < n; ++i) {
    need += entries[i].model_type_len + entries[i].data_len;
  }
  b = get_block(s, need);
  if (!b) {
    return NULL;
  }
  b->next = NULL;
  b->bytes = need;
  b->n = n;
  b->epoch = epoch;
  b->entries = (sp_entry *)((uint8_t *)b + BATCH_HDR);
  b->hashes = (uint8_t *)(b->entries + n);
  if (n) {
    memcpy(b->entries, entries, n * sizeof(sp_entry));
    memcpy(b->hashes, hashes, n * SP_HASH_LEN);
  }
  p = b->hashes + n * SP_HASH_LEN;
  for (size_t i = 0; i < n; ++i) {
    sp_entry *e = &b->entries[i];
    if (e->model_type_len) {
      memcpy(p, e->model_type, e->model_type_len);
    }
    e->model_type = (const char *)p;
    p += e->model_type_len;
    if (e->data_len) {
      memcpy(p, e->data, e->data_len);
    }
    e->data = p;
    p += e->data_len;
  }
  return b;
}

static int w_apply_sync(const sp_entry *entries, const uint8_t *hashes,
                        size_t n, uint64_t epoch, void *user_data);

static int w_apply(const sp_entry *entries, const uint8_t *hashes, size_t n,
                   uint64_t epoch, void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_sqlite_worker *w = s->worker;
  batch *b;
  int rv;

  if (n && (!entries || !hashes)) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (s->reading) {
    return SP_ERR_INVALID_STATE;
  }
  /* What sp_sqlite_apply refuses before touching the file is refused
   * here, at once, with nothing queued. */
  rv = sp_sqlite_check_batch(entries, hashes, n);
  if (rv != 0) {
    return rv;
  }
  if (n == 0) {
    /* An epoch record is never pending (sys/store.h): a fence is acted
     * on once durable.  Once a term, so waiting for the queue costs
     * nothing. */
    return w_apply_sync(entries, hashes, n, epoch, user_data);
  }
  pthread_mutex_lock(&w->lock);
  rv = take_failure(s);
  pthread_mutex_unlock(&w->lock);
  if (rv != 0) {
    return rv;
  }
  /* Not known: something else ran since, which drained the queue. */
  if (!w->known && (rv = refresh(s)) != 0) {
    return rv;
  }
  if (n && entries[0].sequence <= w->head.applied) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  b = copy_batch(s, entries, hashes, n, epoch);
  if (!b) {
    return SP_ERR_NOMEM;
  }
  pthread_mutex_lock(&w->lock);
  while (w->first && !w->failed && w->queued + b->bytes > w->max_bytes) {
    pthread_cond_wait(&w->room, &w->lock);
  }
  rv = take_failure(s);
  if (rv != 0) {
    b->next = w->free_list;
    w->free_list = b;
    pthread_mutex_unlock(&w->lock);
    return rv;
  }
  if (w->last) {
    w->last->next = b;
  } else {
    w->first = b;
  }
  w->last = b;
  w->queued += b->bytes;
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->lock);
  if (n) {
    w->head.applied = entries[n - 1].sequence;
    memcpy(w->head.head_hash, hashes + (n - 1) * SP_HASH_LEN, SP_HASH_LEN);
  }
  if (epoch > w->head.epoch) {
    w->head.epoch = epoch;
  }
  return SP_STORE_PENDING;
}

/* For a caller of a vtable version without `durable`: commit before
 * returning, as ever (on the caller's connection, the queue drained). */
static int w_apply_sync(const sp_entry *entries, const uint8_t *hashes,
                        size_t n, uint64_t epoch, void *user_data) {
  int rv = sp_sqlite_worker_sync(user_data);
  return rv != 0 ? rv : sp_sqlite_apply(entries, hashes, n, epoch, user_data);
}

static int w_state(sp_store_state *out, void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_sqlite_worker *w = s->worker;
  int rv;

  if (!out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  pthread_mutex_lock(&w->lock);
  rv = take_failure(s);
  pthread_mutex_unlock(&w->lock);
  if (rv == 0 && !w->known) {
    rv = refresh(s);
  }
  if (rv == 0) {
    *out = w->head;
  }
  return rv;
}

static int w_durable(sp_seq *through, void *user_data) {
  sp_sqlite_store *s = user_data;
  sp_sqlite_worker *w = s->worker;
  int rv;

  if (!through) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  pthread_mutex_lock(&w->lock);
  clear_news(w);
  rv = take_failure(s);
  *through = w->durable;
  pthread_mutex_unlock(&w->lock);
  if (rv == 0 && !w->known) {
    /* Something else ran (the queue is empty): the file may have moved
     * (a reset, a snapshot install). */
    rv = refresh(s);
    if (rv == 0) {
      *through = w->head.applied;
    }
  }
  return rv;
}

int sp_sqlite_store_wait_fd(const sp_sqlite_store *store) {
  if (!store) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return store->worker ? store->worker->efd : SP_ERR_INVALID_STATE;
}

int sp_sqlite_store_wait_clear(sp_sqlite_store *store) {
  if (!store) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (!store->worker) {
    return SP_ERR_INVALID_STATE;
  }
  pthread_mutex_lock(&store->worker->lock);
  clear_news(store->worker);
  pthread_mutex_unlock(&store->worker->lock);
  return 0;
}

/* -- every other callback: drain, then as without the thread -- */

#define W(s) (((sp_sqlite_store *)(s))->worker->inner)
#define SYNC(ud)                                                            \
  do {                                                                      \
    int rv_ = sp_sqlite_worker_sync(ud);                                    \
    if (rv_ != 0) {                                                         \
      return rv_;                                                           \
    }                                                                       \
  } while (0)

static int w_read(sp_seq after, sp_seq through, size_t max_count,
                  sp_entry_sink sink, void *sink_ctx, void *ud) {
  SYNC(ud);
  return W(ud).read(after, through, max_count, sink, sink_ctx, ud);
}

static int w_bounds(sp_log_bounds *out, void *ud) {
  SYNC(ud);
  return W(ud).bounds(out, ud);
}

static int w_hash_at(sp_seq sequence, uint8_t out[SP_HASH_LEN], void *ud) {
  SYNC(ud);
  return W(ud).hash_at(sequence, out, ud);
}

static int w_save_follower_ack(const sp_uuid *device,
                               const uint8_t key[SP_PUBLIC_KEY_LEN],
                               sp_seq acked, const uint8_t hash[SP_HASH_LEN],
                               void *ud) {
  SYNC(ud);
  return W(ud).save_follower_ack(device, key, acked, hash, ud);
}

static int w_load_follower_acks(sp_follower_ack_sink sink, void *sink_ctx,
                                void *ud) {
  SYNC(ud);
  return W(ud).load_follower_acks(sink, sink_ctx, ud);
}

static int w_save_follower_address(const sp_uuid *device, const char *address,
                                   void *ud) {
  SYNC(ud);
  return W(ud).save_follower_address(device, address, ud);
}

static int w_load_follower_addresses(sp_follower_address_sink sink,
                                     void *sink_ctx, void *ud) {
  SYNC(ud);
  return W(ud).load_follower_addresses(sink, sink_ctx, ud);
}

static int w_append(const sp_entry *entries, size_t n, sp_seq *first,
                    void *ud) {
  SYNC(ud);
  return W(ud).append(entries, n, first, ud);
}

static int w_find_origin(const sp_uuid *device, uint64_t origin_seq,
                         sp_seq *seq, uint64_t *device_high, void *ud) {
  SYNC(ud);
  return W(ud).find_origin(device, origin_seq, seq, device_high, ud);
}

static int w_outbox_put(const sp_entry *entries, size_t n,
                        uint64_t *first_origin, void *ud) {
  SYNC(ud);
  return W(ud).outbox_put(entries, n, first_origin, ud);
}

static int w_outbox_read(uint64_t after, size_t max_count, sp_entry_sink sink,
                         void *sink_ctx, void *ud) {
  SYNC(ud);
  return W(ud).outbox_read(after, max_count, sink, sink_ctx, ud);
}

static int w_outbox_remove(uint64_t origin_seq, void *ud) {
  SYNC(ud);
  return W(ud).outbox_remove(origin_seq, ud);
}

static int w_outbox_stats(sp_outbox_stats *out, void *ud) {
  SYNC(ud);
  return W(ud).outbox_stats(out, ud);
}

static int w_outbox_anchor(const sp_uuid *device, uint64_t device_high,
                           void *ud) {
  SYNC(ud);
  return W(ud).outbox_anchor(device, device_high, ud);
}

void sp_sqlite_worker_vtable(sp_sqlite_store *s, sp_store *out,
                             int version) {
  s->worker->inner = *out;
  out->read = w_read;
  out->bounds = w_bounds;
  out->hash_at = w_hash_at;
  out->state = w_state;
  out->save_follower_ack = w_save_follower_ack;
  out->load_follower_acks = w_load_follower_acks;
  out->save_follower_address = w_save_follower_address;
  out->load_follower_addresses = w_load_follower_addresses;
  out->append = w_append;
  out->find_origin = w_find_origin;
  out->outbox_put = w_outbox_put;
  out->outbox_read = w_outbox_read;
  out->outbox_remove = w_outbox_remove;
  out->outbox_stats = w_outbox_stats;
  out->outbox_anchor = w_outbox_anchor;
  if (version >= 5) {
    out->apply = w_apply;
    out->durable = w_durable;
  } else {
    out->apply = w_apply_sync;
  }
}

/* -- start and stop -- */

static void worker_free(sp_sqlite_worker *w) {
  sp_mem m = w->store->mem;

  while (w->free_list) {
    batch *b = w->free_list;
    w->free_list = b->next;
    sp_free(&m, b);
  }
  if (w->efd >= 0) {
    close(w->efd);
  }
  sp_sqlite_store_close(w->db);
  pthread_cond_destroy(&w->room);
  pthread_cond_destroy(&w->work);
  pthread_mutex_destroy(&w->lock);
  w->store->worker = NULL;
  sp_free(&m, w);
}

int sp_sqlite_worker_start(sp_sqlite_store *s, const char *path,
                           const sp_sqlite_config *cfg) {
  sp_sqlite_config own = *cfg;
  const char *file = sqlite3_db_filename(s->db, "main");
  sp_sqlite_worker *w;
  int rv;

  if (!file || !*file) {
    return SP_ERR_INVALID_ARGUMENT; /* a second connection would not see it */
  }
  if (!sqlite3_threadsafe()) {
    return SP_ERR_NOT_SUPPORTED;
  }
  w = sp_calloc(&s->mem, 1, sizeof(*w));
  if (!w) {
    return SP_ERR_NOMEM;
  }
  w->store = s;
  w->efd = -1;
  w->max_bytes = cfg->apply_queue_bytes ? cfg->apply_queue_bytes
                                        : SP_SQLITE_APPLY_QUEUE_DEFAULT;
  w->hook = g_hook;
  w->hook_ctx = g_hook_ctx;
  if (pthread_mutex_init(&w->lock, NULL) != 0) {
    sp_free(&s->mem, w);
    return SP_ERR_NOMEM;
  }
  if (pthread_cond_init(&w->work, NULL) != 0) {
    pthread_mutex_destroy(&w->lock);
    sp_free(&s->mem, w);
    return SP_ERR_NOMEM;
  }
  if (pthread_cond_init(&w->room, NULL) != 0) {
    pthread_cond_destroy(&w->work);
    pthread_mutex_destroy(&w->lock);
    sp_free(&s->mem, w);
    return SP_ERR_NOMEM;
  }
  s->worker = w;
  own.apply_thread = 0;
  own.create = 0;
  /* The host's allocator, called here on the caller's thread only: the
   * worker's apply path (sp_sqlite_apply_checked) allocates nothing
   * through it.  Keep it so, or give the worker a mem of its own. */
  rv = sp_sqlite_store_open(&w->db, path, &own, &s->mem);
  if (rv != 0) {
    /* Its text, for sp_sqlite_store_errmsg(NULL) after this open. */
    snprintf(s->errmsg, sizeof(s->errmsg), "%s",
             sp_sqlite_store_errmsg(NULL));
    worker_free(w);
    return rv;
  }
  w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  rv = w->efd < 0 ? errno : pthread_create(&w->thread, NULL, worker_main, w);
  if (rv != 0) {
    snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s",
             w->efd < 0 ? "eventfd" : "apply thread", strerror(rv));
    worker_free(w);
    return SP_ERR_IO;
  }
  return 0;
}

void sp_sqlite_worker_stop(sp_sqlite_worker *w) {
  if (!w) {
    return;
  }
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  worker_free(w);
}
