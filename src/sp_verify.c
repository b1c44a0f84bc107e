/*
 * sp_verify.c: walk a stored log and check every row against the chain.
 *
 * Read through the store's vtable a page at a time, so it costs one link
 * of memory whatever the log's size and works on any host store.  The
 * link is recomputed from the row, not taken from the store: a wrong
 * stored hash is caught at its own row, not hidden by the next one.
 */
#include <string.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/store_verify.h"
#include "sp_enc.h"

typedef struct walk {
  uint8_t link[SP_HASH_LEN];
  sp_seq last;
  sp_seq bad;
  size_t fed;
} walk;

static int walk_sink(const sp_entry *e, const uint8_t hash[SP_HASH_LEN],
                     void *arg) {
  walk *w = arg;
  uint8_t next[SP_HASH_LEN];

  w->fed++;
  if (e->sequence <= w->last || sp_enc_check_entry(e) != 0 ||
      sp_chain_link(w->link, e, next) != 0 ||
      memcmp(next, hash, SP_HASH_LEN) != 0) {
    w->bad = e->sequence > w->last ? e->sequence : w->last + 1;
    return SP_SINK_STOP;
  }
  memcpy(w->link, next, SP_HASH_LEN);
  w->last = e->sequence;
  return 0;
}

static int corrupt(sp_seq seq, sp_seq *bad_seq) {
  if (bad_seq) {
    *bad_seq = seq;
  }
  return SP_ERR_STORE_CORRUPT;
}

/* The durable head, where the store keeps one apart from the rows. */
static int check_head(const sp_store *store, const walk *w, sp_seq *bad_seq) {
  sp_store_state st;

  if (!store->state) {
    return 0;
  }
  if (store->state(&st, store->user_data) != 0) {
    return SP_ERR_STORE;
  }
  if (st.applied == w->last &&
      memcmp(st.head_hash, w->link, SP_HASH_LEN) != 0) {
    return corrupt(w->last, bad_seq);
  }
  return 0;
}

int sp_store_verify(const sp_store *store, sp_seq from,
                    sp_verify_progress_cb progress, void *user_data,
                    sp_seq *bad_seq) {
  sp_log_bounds b;
  walk w;
  int rv;

  if (!store || !store->read || !store->bounds || !store->hash_at) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (store->bounds(&b, store->user_data) != 0) {
    return SP_ERR_STORE;
  }
  memset(&w, 0, sizeof(w));
  w.last = from > b.pruned_through ? from : b.pruned_through;
  if (w.last > b.latest) {
    return SP_ERR_NOT_FOUND;
  }
  rv = store->hash_at(w.last, w.link, store->user_data);
  if (rv != 0) {
    return rv == SP_ERR_NOT_FOUND ? rv : SP_ERR_STORE;
  }
  if (w.last == b.latest && progress &&
      progress(w.last, b.latest, user_data) != 0) {
    return SP_ERR_CANCELED; /* nothing to walk: "after the last" is now */
  }
  while (w.last < b.latest) {
    w.fed = 0;
    rv = store->read(w.last, b.latest, SP_VERIFY_PROGRESS_ROWS, walk_sink,
                     &w, store->user_data);
    if (rv == SP_ERR_STORE_CORRUPT) {
      /* The store could not decode the row after the last one it fed. */
      return corrupt(w.last + 1, bad_seq);
    }
    if (rv < 0) {
      return SP_ERR_STORE;
    }
    if (w.bad) {
      return corrupt(w.bad, bad_seq);
    }
    if (w.fed == 0) {
      /* The bounds promise rows up to `latest`: they are gone. */
      return corrupt(w.last + 1, bad_seq);
    }
    if (progress && progress(w.last, b.latest, user_data) != 0) {
      return SP_ERR_CANCELED;
    }
  }
  return check_head(store, &w, bad_seq);
}
