/*
 * sp_writer.h: the follower's side of the write path (sp_writer.c):
 * the outbox's cached figures, what is proposed on the current leader
 * stream, and the commit waits.
 *
 * The outbox in the store is the truth; everything here is per process,
 * and everything per stream starts again with each stream to the leader
 * (what was in flight is proposed again: the leader's dedupe answers for
 * what it already appended).
 */
#ifndef SP_WRITER_H
#define SP_WRITER_H

#include <stdint.h>

#include "sync_protocol/node.h"
#include "sync_protocol/sys/store.h"

struct sp_handler;
struct sp_session;

/* One proposed entry not answered yet. */
typedef struct sp_inflight {
  uint64_t origin;
  uint64_t bytes;
} sp_inflight;

typedef struct sp_cwait sp_cwait;

typedef struct sp_writer {
  /* The outbox's figures (stats_valid: read since the last change we
   * could not account for). */
  sp_outbox_stats stats;
  int stats_valid;
  /* Current leader stream: the leader's feature Heartbeat made writes
   * usable (negotiated; the stream's features say so too); a page passed
   * the resume check (ready). */
  int negotiated;
  int ready;
  /* The leader's feature Heartbeat came while a snapshot recovery was
   * under way (no anchor written then): what it said, to negotiate once
   * this stream's leader serves the log (sp_writer_recovery_over). */
  int owed;
  uint64_t owed_features;
  uint64_t owed_origin_high;
  /* The leader's frame maximum from its feature Heartbeat (0: not said):
   * our Propose frames are sized for the smaller of it and ours. */
  uint64_t leader_max_frame;
  /* Highest origin proposed on this stream; nothing past it is left in
   * the outbox as of the last read (drained; a submit clears it). */
  uint64_t sent_through;
  int drained;
  /* Proposed and unanswered, oldest first (a growable queue). */
  sp_inflight *q;
  size_t qhead;
  size_t qlen;
  size_t qcap;
  uint64_t in_flight_bytes;
  /* When the leader last made progress on our proposals: the last
   * answer, or the send that made the queue non-empty.  A stream whose
   * leader answers nothing for cfg.stall_timeout is closed (frames lost
   * on a live stream are never sent again on it). */
  sp_tstamp progress_at;
  /* Origins proposed by this process (on any stream) whose outcome was
   * not reported yet, ascending: a host's full sync can retire them
   * without an apply, and sp_writer_resynced reports those. */
  uint64_t *tracked;
  size_t ntracked;
  size_t tracked_cap;
  sp_cwait *waits;
} sp_writer;

/* Payload bytes of an entry as the outbox counts them. */
uint64_t sp_writer_entry_bytes(const sp_entry *e);

void sp_writer_init(struct sp_handler *h);
/* End the waits (SP_ERR_CANCELED) and free the queue. */
void sp_writer_free(struct sp_handler *h);
/* Forget everything of the current leader stream. */
void sp_writer_reset_stream(struct sp_handler *h);
/* A new leader stream `s`: start over, and advertise if we can write. */
void sp_writer_attach(struct sp_session *s);

/* A Propose, if one may go (after the fetch and ack frames had their
 * turn).  Returns 1 if a frame was queued. */
int sp_writer_propose_frame(struct sp_session *s);

/* The leader's Heartbeat carried features. */
void sp_writer_on_features(struct sp_session *s, const sp_msg *msg);
/* A recovery ended on `s` because its leader serves the log: the
 * negotiation its feature Heartbeat was owed happens now. */
void sp_writer_recovery_over(struct sp_session *s);
/* A ProposeResult arrived. */
void sp_writer_on_result(struct sp_session *s, const sp_msg *msg);
/* The host finished a full sync (sp_handler_resync_done, after the
 * store's state was read again): report the tracked submissions and the
 * waited-on ones that the new store no longer holds in its outbox. */
void sp_writer_resynced(struct sp_handler *h);
/* Submission `origin` is committed at `seq` (0: below the retained
 * log): forget it as tracked, emit SUBMISSION_COMMITTED (peer may be NULL)
 * and end its commit waits with 0.  The leader's drain reports its
 * items with it too. */
void sp_writer_report_committed(struct sp_handler *h, const sp_uuid *peer,
                                uint64_t origin, sp_seq seq);
/* A page passed the resume check on this stream. */
void sp_writer_ready(struct sp_session *s);
/* `n` entries were applied to the store (store.apply returned 0). */
void sp_writer_applied(struct sp_handler *h, const sp_uuid *peer,
                       const sp_entry *entries, size_t n);

/* Commit waits: due timers, the earliest deadline, and ending them all
 * with SP_ERR_CANCELED (handler deleted, role changed; the tracked
 * origins are forgotten with them: a leader reports its own). */
/* When stream `s` stalls if no answer comes (SP_TSTAMP_MAX: nothing in
 * flight on it): sp_follower.c closes it then with SP_ERR_STALLED, and
 * the next stream proposes everything pending again. */
sp_tstamp sp_writer_stall_at(const struct sp_session *s);

void sp_writer_expire(struct sp_handler *h, sp_tstamp now);
sp_tstamp sp_writer_expiry(const struct sp_handler *h);
void sp_writer_cancel_waits(struct sp_handler *h);

/* The public calls, behind sp_handler.c's checks of the handle and the
 * arguments (sp_handler_submit, _submission, _wait_committed,
 * _outbox_status); same returns. */
int sp_writer_submit(struct sp_handler *h, const sp_entry *entries, size_t n,
                     uint64_t *first_origin);
int sp_writer_submission(struct sp_handler *h, uint64_t origin, sp_seq *seq);
int sp_writer_wait(struct sp_handler *h, uint64_t origin, sp_tstamp deadline,
                   sp_commit_wait_cb cb, void *user_data);
int sp_writer_status(struct sp_handler *h, sp_outbox_status *out);

/* sp_follower.c: a local store call failed (the follower's backoff and
 * its STORE_FAILED episode). */
void sp_follower_store_failed(struct sp_handler *h, const sp_uuid *peer,
                              int rv, const char *what);
/* sp_follower.c: a write to the local store succeeded (an outbox write
 * counts: it is the same store): it ends a store failure episode. */
void sp_follower_store_wrote(struct sp_handler *h, const sp_uuid *peer);

#endif /* SP_WRITER_H */
