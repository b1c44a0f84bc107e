/*
 * sp_core.h: the structures shared by the node, its handlers and their
 * sessions (one session per stream).
 *
 * Ownership: the node owns its handlers and every session; a handler lists
 * the sessions routed to it.  Sessions that end are only marked dead and are
 * freed when the public entry point that is running returns (sp_node_reap),
 * so no code deeper in the stack ever touches a freed session.
 */
#ifndef SP_CORE_H
#define SP_CORE_H

#include <stdarg.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/node.h"
#include "sync_protocol/uuid.h"
#include "sp_buf.h"
#include "sp_index.h"
#include "sp_rand.h"
#include "sp_snapshot.h"
#include "sp_writer.h"

typedef struct sp_session sp_session;
typedef struct sp_frec sp_frec;
typedef struct sp_wait sp_wait;

/* A session in the node's timer heap, under a lower bound of its
 * sp_session_expiry: the keys sit in the heap itself, so sifting reads
 * no session (sp_node.c). */
typedef struct sp_timer {
  sp_tstamp key;
  sp_session *s;
} sp_timer;

/* An applied range (from, to] from `peer` not yet durable, or (downs) one
 * own entry: origin_seq in `from`, its sequence in `to`. */
typedef struct sp_dpend {
  sp_seq from;
  sp_seq to;
  sp_uuid peer;
} sp_dpend;

/* ---- sessions ---- */

/* One queued FetchEntries on the leader: serve (cur, end]. */
typedef struct sp_range {
  sp_seq cur;
  sp_seq end;
} sp_range;

/* Leader side of a session: what one follower asked for and was told. */
typedef struct sp_lsess {
  sp_range *queue; /* ring of cfg.max_queued_fetches */
  uint32_t qhead;
  uint32_t qlen;
  /* Highest sequence the follower was told exists. */
  sp_seq announced;
  /* A NewEntries went out and no FetchEntries came since. */
  int notify_outstanding;
  /* `through` of the last page sent, and whether that page said nothing
   * more existed: then the follower stands at sent_through and the next
   * entries can be pushed to it as a page. */
  sp_seq sent_through;
  int follower_current;
  /* Highest ack on this stream (acks may not go back within a stream). */
  sp_seq acked;
  int has_acked;
  /* SyncRequired to send (reason 0: none) and its sequences. */
  sp_msg_sync_required sync;
  /* The key the peer proved, once the transport tells (has_key). */
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int has_key;
  /* Window accounting (docs/protocol.md, "The fetch window"): `through`
   * of the last page that said has_more = false (the follower forgot
   * every request it had out when that page arrived), and what the
   * queue's head is when it is no request of the follower's (sp_leader.c
   * OWN_*; the queue has one slot more than cfg.max_queued_fetches). */
  sp_seq done_through;
  int head_own;
  /* The last SyncRequired queued on this stream (reason 0: none). */
  sp_sync_reason sync_told;
  sp_seq sync_told_seq;
  /* Snapshots (sp_snap_serve.c): the follower asked for one on this
   * stream (its fetches credit no ack from then on); the snapshot whose
   * manifest is still being prepared for it; the chunks it asked for and
   * not yet sent, [snap_next, snap_end) of snap_id. */
  int snap_active;
  int snap_preparing;
  uint8_t snap_prep_id[SP_SNAPSHOT_ID_LEN];
  uint8_t snap_id[SP_SNAPSHOT_ID_LEN];
  uint64_t snap_next;
  uint64_t snap_end;
} sp_lsess;

/* Follower side of a session: the fetch pipeline. */
typedef struct sp_fsess {
  /* Every entry up to here was received and applied (in memory; equal to or
   * past the durable applied sequence when the leader's log has gaps). */
  sp_seq covered;
  /* End of the last range requested. */
  sp_seq requested;
  /* Ranges requested and not complete, oldest first. */
  sp_range *ring;
  uint32_t rhead;
  uint32_t rlen;
  /* The resume check (since_hash) went out with the first fetch. */
  int resume_sent;
  /* Last ack sent. */
  sp_seq acked_sent;
  /* When the pipeline last made progress (stall detection). */
  sp_tstamp last_progress;
  /* CAUGHT_UP reported, and nothing applied or announced since. */
  int caught_up_reported;
  /* When the stream became the follower's leader stream. */
  sp_tstamp attached_at;
  /* Snapshot recovery (sp_recover.c): the leader's SyncRequired on this
   * stream let the recovery run on it; the verify fetch went out. */
  int snap_on;
  int snap_verify_sent;
} sp_fsess;

/* What a peer can make a node hold on incoming streams no first frame has
 * routed to a library yet (a registered device needs no membership for
 * that): a first frame of at most SP_UNROUTED_MAX_FRAME bytes (codec.h),
 * and at most SP_MAX_UNROUTED_PER_PEER such streams at once (more are
 * refused with SP_ERR_TOO_MANY_REQUESTS).  Every first frame is a few
 * dozen bytes. */
#define SP_MAX_UNROUTED_PER_PEER 16

struct sp_session {
  sp_node *node;
  sp_handler *handler; /* NULL until the first frame routes the stream */
  sp_session *next;    /* node's list */
  sp_session *hnext;   /* handler's list */
  sp_session *hprev;   /* handler's list: unlinked in O(1) */
  uint64_t stream_id;
  sp_uuid peer;
  /* The library the stream is for, once known (stamps refusals). */
  sp_uuid lib;
  unsigned local : 1;           /* this node opened the stream */
  unsigned blocked : 1;         /* transport would block: wait writable */
  unsigned close_after : 1;     /* close once the out buffer is flushed */
  unsigned refused : 1;         /* input is ignored from now on */
  unsigned dead : 1;            /* closed: freed by sp_node_reap */
  unsigned transport_gone : 1;  /* the transport reported it closed */
  unsigned connected_event : 1; /* PEER_CONNECTED was emitted */
  unsigned heard : 1;           /* a whole frame arrived from the peer */
  unsigned hello_pending : 1;   /* a Heartbeat must open the stream */
  unsigned heartbeat_due : 1;
  /* A Heartbeat carrying features (sp_handler_local_features) must go
   * out before anything else: a follower sets it when a stream to its
   * leader attaches (it has any), a leader when the peer's features
   * negotiated some.  Once one went out (`advertised`), every
   * later Heartbeat of the stream carries features too. */
  unsigned features_pending : 1;
  unsigned advertised : 1;
  /* What the peer said on this stream that decides whether a leader
   * writes its claim to it (sp_leadership.c): it advertised
   * SP_FEATURE_CLAIMS (or sent a claim, or refused UNPROVEN_EPOCH), it
   * sent a Heartbeat with role leader; it advertised features without
   * claims (an older build: its record forgets that it read claims). */
  unsigned peer_claims : 1;
  unsigned peer_leader : 1;
  unsigned peer_no_claims : 1;
  unsigned indexed : 1; /* in node->streams and ->peers (sp_node.c) */
  sp_session *prev;     /* node's list, once indexed */
  sp_session *dnext;    /* node->dead */
  /* Position + 1 in node->timers (0: not in it). */
  size_t tpos;
  int close_code;
  /* Features negotiated on this stream (SP_FEATURE_*): what both sides
   * advertised.  0 until then: nothing new goes out, nothing new is
   * accepted (SP_ERR_NOT_NEGOTIATED). */
  uint64_t features;
  sp_frame_reader *reader;
  sp_buf out;
  sp_tstamp last_recv;
  sp_tstamp last_send;
  /* Leader: the follower's record; NULL on a follower. */
  sp_frec *rec;
  union {
    sp_lsess l;
    sp_fsess f;
  } u;
};

/* ---- leader's view of each follower device ---- */

struct sp_frec {
  sp_uuid device;
  /* Listed by the registry as a member at the last re-read of the member
   * list (start of the term, every cfg.registry_refresh_interval, and
   * sp_handler_registry_changed); records of devices no longer listed are
   * dropped then. */
  int registered;
  sp_session *session;
  sp_seq acked;
  int has_acked;
  sp_tstamp last_ack_at;
  /* Dialing the follower when it is not connected. */
  sp_tstamp dial_at;
  sp_duration dial_backoff;
  /* The key the follower proved (has_key: the transport said), bound by
   * its first stream or by the position kept with the log: acks are only
   * ever credited for one key. */
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int has_key;
  /* Position last handed to the store's save_follower_ack, and when
   * (has_saved: in this term); keep_listed: in the handler's `keeps`. */
  sp_seq saved;
  sp_tstamp saved_at;
  int has_saved;
  int keep_listed;
  /* The device showed on some stream that it reads leadership claims
   * (sp_leadership_remember): our dials to it open with our claim, so a
   * leader we deposed learns it on the first frame (protocol.md 15.7). */
  int reads_claims;
};

/* ---- handler ---- */

typedef enum sp_fstate {
  /* No stream: reconnect at `reconnect_at`. */
  SP_F_DISCONNECTED = 0,
  /* A stream to the leader exists (connecting or connected). */
  SP_F_CONNECTED,
  /* Stopped by SyncRequired until sp_handler_resync_done. */
  SP_F_SYNC_REQUIRED,
  /* Stopped by SyncRequired, recovering by snapshot on the leader
   * stream (sp_recover.c): for the log as SP_F_SYNC_REQUIRED. */
  SP_F_RECOVERING
} sp_fstate;

struct sp_handler {
  sp_node *node;
  sp_handler *next; /* node's list */
  sp_handler_config cfg;
  sp_store store;
  sp_role role;
  uint64_t epoch;
  /* Stepped down: a leader that met a higher epoch serves nothing until
   * the host calls sp_handler_set_role. */
  int stepped_down;
  /* The highest-epoch valid leadership claim known (sp_leadership.c): a
   * leader's own, the one that deposed it, a follower's to relay. */
  int has_claim;
  sp_leader_claim claim;
  sp_session *sessions;

  /* leader */
  sp_frec *frecs;
  size_t nfrecs;
  size_t capfrecs;
  /* device id -> position in frecs (sp_leader_frec). */
  sp_index frec_ix;
  /* Followers whose acked position is held back from the store until
   * keep_at (sp_leader.c keep_ack). */
  sp_uuid *keeps;
  size_t nkeeps, capkeeps;
  sp_tstamp keep_at;
  /* No record is due to be dialled before this (a lower bound: records
   * are walked only once it passes, sp_leader.c dial_due). */
  sp_tstamp dial_min;
  sp_wait *waits;
  /* Cached log bounds, refreshed on notify and on every page. */
  sp_log_bounds bounds;
  /* Next scheduled re-read of the registry's member list. */
  sp_tstamp members_at;
  /* Last corrupt row reported to the host (SP_EVENT_LOG_CORRUPT), so that
   * followers meeting it again and again do not repeat the event. */
  sp_seq corrupt_reported;
  /* This device's own outbox could not be drained into the log
   * (sp_admit.c): an episode is open (reported once), the drain is
   * retried at drain_at with drain_backoff, until one succeeds or the
   * term ends. */
  int drain_failing;
  sp_tstamp drain_at;
  sp_duration drain_backoff;

  /* follower */
  sp_fstate fstate;
  sp_store_state st;
  sp_seq leader_latest;
  sp_session *leader;
  sp_tstamp reconnect_at;
  sp_duration backoff;
  sp_sync_reason sync_reason;
  /* Scratch for the chain hashes of a batch (n * SP_HASH_LEN). */
  sp_buf hashes;
  /* sp_handler_request_entries in progress. */
  sp_request_cb request_cb;
  void *request_ud;
  /* A store failure episode is open (SP_EVENT_STORE_FAILED reported, not
   * yet recovered), and which call opened it (sp_follower.c): the backoff
   * grows until that kind of call succeeds again. */
  int store_failing;
  /* The write path: outbox, proposals on the leader stream, commit
   * waits (sp_writer.c). */
  sp_writer w;
  /* Asynchronous apply (sp_durable.c; a store with `durable` whose
   * apply returned SP_STORE_PENDING): h->st is what the store answers
   * (as if applied); durable_seq what it made durable.  dpend: the
   * applied ranges not yet reported (ENTRIES_APPLIED waits for them to
   * be durable), oldest first; downs: this device's own entries among
   * them (SUBMISSION_COMMITTED waits too); a CAUGHT_UP (and the request
   * it ends) owed once durable_seq reaches caught_owed. */
  sp_seq durable_seq;
  sp_dpend *dpend;
  size_t ndpend, capdpend;
  sp_dpend *downs;
  size_t ndowns, capdowns;
  int has_caught_owed;
  sp_seq caught_owed;
  sp_uuid caught_peer;
  /* A state read failed after a failure that may have lost pending
   * applies: h->st may be ahead of the store; nothing is applied or
   * fetched until a read succeeds (sp_durable.c). */
  int st_unknown;
  /* h->epoch when a follower term ended with dpend kept (sp_durable.c). */
  uint64_t dpend_epoch;

  /* Snapshots: the configured vtables (copies; has_*: configured). */
  sp_snapshot_source snap_source;
  sp_snapshot_sink snap_sink;
  int has_snap_source;
  int has_snap_sink;
  /* Follower (sp_recover.c): the engine (with a sink); a recovery ran
   * since the handler was created; the request owed is held back until
   * snap_retry_at (snap_retry_armed); after a failure no recovery starts
   * before snap_fail_until, and snap_wake_at reconnects then (once);
   * the highest leader epoch seen while the log was not ours to write. */
  sp_snap_fol snap;
  int snap_used;
  int snap_retry_armed;
  sp_tstamp snap_retry_at;
  sp_tstamp snap_fail_until;
  sp_tstamp snap_wake_at;
  sp_duration snap_fail_backoff;
  uint64_t snap_epoch_seen;
  /* Leader (sp_snap_serve.c): the open snapshots, during a term. */
  sp_snap_srv snap_srv;
  int snap_srv_live;
};

/* ---- node ---- */

struct sp_node {
  sp_mem mem;
  sp_node_config cfg;
  sp_registry reg;
  sp_events ev;
  sp_transport tr;
  sp_rand rng;
  sp_handler *handlers;
  sp_session *sessions;
  sp_decoder *dec;
  /* Scratch for registry member lists. */
  sp_uuid *members;
  size_t capmembers;
  /* The `now` of the entry point running. */
  sp_tstamp now;
  /* First fatal error seen inside an entry point (returned by it). */
  int fatal;
  /* Records, sessions and index slots looked at by lookups and list
   * walks: a deterministic measure of their cost (tests/sp_sim_scale.c). */
  uint64_t visits;
  /* stream id -> session, for the sessions older than the head of
   * `sessions` that sp_node_reap last indexed (sp_node.c). */
  sp_index streams;
  /* Sessions closed since the last sp_node_reap, linked by dnext
   * (sp_session_close), and peer device -> its indexed sessions. */
  sp_session *dead;
  sp_index peers;
  /* Min-heap of the indexed sessions not of a follower handler, by
   * key (sp_node.c). */
  sp_timer *timers;
  size_t ntimers;
  size_t captimers;
};

/* ---- node (sp_node.c) ---- */

/* Free dead sessions; returns node->fatal and clears it. */
int sp_node_reap(sp_node *node);
/* Record a fatal code to be returned by the running entry point. */
void sp_node_set_fatal(sp_node *node, int code);
/* Registry member list of `lib` into node->members; count in *n. */
int sp_node_members(sp_node *node, const sp_uuid *lib, size_t *n);

/* ---- events and log (sp_log.c) ---- */

/* Deliver `ev` (library/peer filled by caller).  A failing callback makes
 * the node fatal with SP_ERR_CALLBACK_FAILURE. */
void sp_emit(sp_node *node, const sp_event *ev);
/* Convenience: an event about `h` and optionally a peer. */
void sp_emit_simple(sp_handler *h, sp_event_type type, const sp_uuid *peer,
                    sp_event *ev);
/* A line about library `h` and, when `peer` is not NULL, about that device:
 * prefixed "library <8 hex>: " and "peer <8 hex>: " (the ids' first 4 bytes,
 * as git shortens hashes) so a host with several libraries and peers can
 * tell whom it is about. */
void sp_hlog(const sp_handler *h, const sp_uuid *peer, sp_log_level level,
             const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* sp_hlog for a line about stream `s`: its library (once known) and its
 * peer. */
void sp_slog(const sp_session *s, sp_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- sessions (sp_session.c) ---- */

/* Create a session for `stream_id` (linked into the node). */
int sp_session_new(sp_session **ps, sp_node *node, uint64_t stream_id,
                   const sp_uuid *peer, int local);
/* A stream this node just opened through the transport, for `h`: the
 * session is created and bound at once.  On failure the stream is closed
 * and the code returned (SP_ERR_NOMEM). */
int sp_session_new_local(sp_session **ps, sp_handler *h, uint64_t stream_id,
                         const sp_uuid *peer);
/* Bind a session to a handler (role state allocated). */
int sp_session_attach(sp_session *s, sp_handler *h);
/* Feed stream bytes; frames are decoded and dispatched. */
void sp_session_input(sp_session *s, const uint8_t *data, size_t len);
/* Send what can be sent: flush, then generate frames while room. */
void sp_session_pump(sp_session *s);
/* Refuse the peer: send an Error frame with `code`, then close. */
void sp_session_refuse(sp_session *s, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Close now (code 0: clean) and mark dead; tells the handler. */
void sp_session_close(sp_session *s, int code);
/* Append a frame for `msg` to the out buffer (library id and epoch are
 * filled in from the handler). */
int sp_session_queue(sp_session *s, sp_msg *msg);
/* Earliest timer of the session. */
sp_tstamp sp_session_expiry(const sp_session *s);
/* Run the session's due timers. */
void sp_session_expire(sp_session *s, sp_tstamp now);
/* Free (only via sp_node_reap / node deletion). */
void sp_session_free(sp_session *s);

/* ---- role logic (sp_leader.c, sp_follower.c) ---- */

int sp_leader_attach(sp_session *s);
/* An incoming stream from a device whose live stream proved another key:
 * refuse it (SP_ERR_DUPLICATE_DEVICE) and return 1; else 0. */
int sp_leader_key_refused(sp_handler *h, sp_session *s);
void sp_leader_detach(sp_session *s);
void sp_leader_on_msg(sp_session *s, const sp_msg *msg);
/* Generate one frame into s->out; returns 1 if one was queued. */
int sp_leader_next_frame(sp_session *s);
void sp_leader_expire(sp_handler *h, sp_tstamp now);
sp_tstamp sp_leader_expiry(const sp_handler *h);
int sp_leader_start(sp_handler *h);
void sp_leader_stop(sp_handler *h);
/* Find (or add with `add`) the record of a follower device. */
sp_frec *sp_leader_frec(sp_handler *h, const sp_uuid *device, int add);
/* Followers' last addresses (sp_leader_addr.c): keep the one an incoming
 * stream came from; at the start of a term, hand those kept for members
 * to the transport before the first dial. */
void sp_leader_remember_address(sp_session *s);
void sp_leader_hint_addresses(sp_handler *h);
/* `device` left the library: forget where it was seen. */
void sp_leader_forget_address(sp_handler *h, const sp_uuid *device);

int sp_follower_attach(sp_session *s);
void sp_follower_detach(sp_session *s);
void sp_follower_on_msg(sp_session *s, const sp_msg *msg);
int sp_follower_next_frame(sp_session *s);
void sp_follower_after_input(sp_session *s);
void sp_follower_expire(sp_handler *h, sp_tstamp now);
sp_tstamp sp_follower_expiry(const sp_handler *h);
sp_tstamp sp_follower_session_expiry(const sp_session *s);
void sp_follower_session_expire(sp_session *s, sp_tstamp now);
int sp_follower_start(sp_handler *h);
void sp_follower_stop(sp_handler *h);
/* While backing off after a store failure, refuse an incoming leader
 * stream (SP_ERR_BACKING_OFF) and return 1; else 0. */
int sp_follower_refuse_while_backing_off(sp_handler *h, sp_session *s);
/* A new stream from the leader while h->leader exists: close the old one
 * (a restarted leader's new stream wins) and return 1, or return 0 when
 * the old one is too young to tell from a crossed dial. */
int sp_follower_yield_leader(sp_handler *h);

/* ---- admission: the leader's write path (sp_admit.c) ---- */

/* 1 if the store has the whole version-3 group (append .. outbox_anchor):
 * only then does a handler negotiate SP_FEATURE_WRITES. */
int sp_store_has_writes(const sp_store *st);
/* Largest encoded entry (with its origin element) the write path takes:
 * one a leader's page can carry alone under the node's max_frame.
 * sp_handler_submit refuses a larger one, the leader BAD_PROPOSAL. */
size_t sp_entry_max_len(const sp_node *node);
/* A Propose on a negotiated leader stream. */
void sp_admit_on_propose(sp_session *s, const sp_msg_propose *m);
/* sp_handler_submit on a leader (validated here): append with this
 * device's next origin ids, emit SUBMISSION_COMMITTED, notify.  Returns
 * as sp_handler_submit. */
int sp_admit_submit_local(sp_handler *h, const sp_entry *entries, size_t n,
                          uint64_t *first_origin);
/* Leader: append what this device's outbox still holds from a follower
 * term (with its origins; COMMITTED events).  Returns 0, SP_ERR_STORE,
 * SP_ERR_NOMEM. */
int sp_admit_drain_outbox(sp_handler *h);
/* The same at the start of a leader term: a failure is logged and
 * reported (SP_EVENT_ERROR, once per failure episode), never fatal to the
 * term, and retried on the leader's timers with the handler's backoff
 * until a drain succeeds. */
void sp_admit_drain_at_start(sp_handler *h);
/* The retry timer of a failed drain (SP_TSTAMP_MAX: none), and running
 * it when due.  Only for a leader that has not stepped down. */
sp_tstamp sp_admit_drain_expiry(const sp_handler *h);
void sp_admit_drain_expire(sp_handler *h, sp_tstamp now);
/* The term ended: no retry timer runs outside a leader term. */
void sp_admit_drain_stop(sp_handler *h);
/* The leader's log grew: refresh bounds, push to every follower, re-check
 * waits (what sp_handler_notify_new_entries does; no reap). */
int sp_leader_announce(sp_handler *h);

/* ---- handler (sp_handler.c) ---- */

/* Double `*backoff` (from reconnect_min, capped at reconnect_max) and
 * return when the next attempt is due: after a delay drawn in [b/2, b],
 * so peers cut off together do not all come back together. */
sp_tstamp sp_handler_backoff(sp_handler *h, sp_duration *backoff);
/* A leadership claim by `leader` proved a higher epoch to a leader (on a
 * frame from `peer`): step down and tell the host. */
void sp_handler_step_down(sp_handler *h, uint64_t epoch, const sp_uuid *peer,
                          const sp_uuid *leader);
/* Route a new incoming stream's first message; returns 0 if accepted. */
int sp_handler_accept(sp_handler *h, sp_session *s, const sp_msg *first);
/* The handler's timers, whatever its role (the node's expiry). */
sp_tstamp sp_handler_expiry(const sp_handler *h);
void sp_handler_expire(sp_handler *h, sp_tstamp now);

/* What this handler advertises (SP_FEATURE_*): writes if its store has
 * the write path, snapshots if its role's vtable is configured. */
uint64_t sp_handler_local_features(const sp_handler *h);

/* ---- snapshot recovery: the follower's side (sp_recover.c) ---- */

/* A sink is configured: prepare the engine.  Never fails. */
void sp_recover_init(sp_handler *h);
void sp_recover_free(sp_handler *h);
/* The leader's SyncRequired on `s` may start (or continue) a recovery:
 * 1 if it does, leaving the stream to it; 0 to stop as without a sink.
 * `starts` is set to 1 if a new one starts (the caller reports the
 * SyncRequired then). */
int sp_recover_wanted(sp_session *s, int *starts);
void sp_recover_begin(sp_session *s);
/* A snapshot message, or an EntriesResponse / SyncRequired while
 * recovering (the verify fetch's answer). */
void sp_recover_on_msg(sp_session *s, const sp_msg *msg);
int sp_recover_next_frame(sp_session *s);
sp_tstamp sp_recover_session_expiry(const sp_session *s);
void sp_recover_session_expire(sp_session *s, sp_tstamp now);
/* The stream is closing: a recovery it carried waits for the next. */
void sp_recover_detach(sp_session *s);
/* Drop a recovery for good (the host's full sync, a role change, a
 * leader serving the log again): the sink's pending snapshot is aborted. */
void sp_recover_abandon(sp_handler *h);
/* The handler stops (deleted): the sink's pending snapshot stays, to
 * resume after the restart. */
void sp_recover_stop(sp_handler *h);
/* A recovery is under way (on a stream or between two): the log is not
 * ours, so no epoch or outbox anchor is written. */
int sp_recover_active(const sp_handler *h);
sp_tstamp sp_recover_expiry(const sp_handler *h);
void sp_recover_expire(sp_handler *h, sp_tstamp now);
/* sp_follower.c: start over on a fresh stream from what the store holds
 * (sp_handler_resync_done, an installed snapshot).  Returns 0 or why no
 * stream could be opened (a reconnect is scheduled then). */
int sp_follower_resync(sp_handler *h);

/* ---- asynchronous apply (sp_durable.c) ---- */

/* store.apply with SP_STORE_PENDING understood: 0 also for a pending
 * apply of a store with `durable` (*pending set to 1 then), else the
 * store's result as ever. */
int sp_durable_apply(sp_handler *h, const sp_entry *entries,
                     const uint8_t *hashes, size_t n, uint64_t epoch,
                     int *pending);
/* The highest sequence the follower may call applied (acks, events,
 * status): h->st.applied unless applies are pending. */
sp_seq sp_durable_through(const sp_handler *h);
/* 1 if `seq` was applied and is not durable yet. */
int sp_durable_pending_at(const sp_handler *h, sp_seq seq);
/* A pending apply of `n` entries (from, entries[n-1].sequence] from
 * `peer`: remember what to report once durable.  Returns 0 or
 * SP_ERR_NOMEM. */
int sp_durable_track(sp_handler *h, const sp_uuid *peer, sp_seq from,
                     const sp_entry *entries, size_t n);
/* Ask the store (only with applies pending) and report what became
 * durable; a failure goes down the store-failure path.  Cheap otherwise:
 * the node calls it on every entry point (sp_node_reap). */
void sp_durable_poll(sp_handler *h);
/* sp_durable_poll for every handler of the node, and the acks it lets
 * go (sp_node_reap: at the end of every entry point). */
void sp_durable_poll_node(sp_node *node);
/* h->st was read again: what the store no longer answers was lost. */
void sp_durable_state_read(sp_handler *h);
/* Some store call failed with applies pending: the failure may have been
 * theirs (sys/store.h: "or the next call"), so read the state again and
 * start over from it if it lost some. */
void sp_durable_recheck(sp_handler *h);
/* Report what is durable now (`report`: the role ends) and forget the
 * rest (or forget all: the host replaced the log): see sp_durable.c. */
void sp_durable_settle(sp_handler *h, int report);
void sp_durable_free(sp_handler *h);
/* Reserve room to track a pending apply of `entries` (before the store
 * takes them).  Returns 0 or SP_ERR_NOMEM. */
int sp_durable_reserve(sp_handler *h, const sp_entry *entries, size_t n);
/* Read `state` as the truth to start from (a term, a stream, a full sync):
 * applies still pending that this handler did not track are tracked.
 * Returns 0 or the read's failure (h->st_unknown set). */
int sp_durable_load(sp_handler *h);
/* h->st_unknown: read `state` again.  Returns 0 if known now. */
int sp_durable_known(sp_handler *h);
/* sp_follower.c: end sp_handler_request_entries (with the durable
 * sequence) and emit CAUGHT_UP, for sp_durable.c. */
void sp_follower_request_done(sp_handler *h, int status);

/* ---- snapshot serving: the leader's side (sp_snap_serve.c) ---- */

/* A term starts / ends (`forget` 0 only when the handler is deleted). */
int sp_snap_serve_start(sp_handler *h);
void sp_snap_serve_stop(sp_handler *h, int forget);
void sp_snap_serve_on_request(sp_session *s,
                              const sp_msg_snapshot_request *req);
void sp_snap_serve_on_fetch(sp_session *s, const sp_msg_snapshot_fetch *f);
/* One SnapshotChunk, if the stream has chunks owed: 1 if queued. */
int sp_snap_serve_next_frame(sp_session *s);
sp_tstamp sp_snap_serve_expiry(const sp_handler *h);
void sp_snap_serve_expire(sp_handler *h, sp_tstamp now);
/* The lowest S of the open snapshots (UINT64_MAX: none), and whether
 * `since` is the S of one (its fetches are never refused for the cap). */
sp_seq sp_snap_serve_floor(const sp_handler *h);
int sp_snap_serve_pins(const sp_handler *h, sp_seq since);

/* ---- waits (sp_waits.c) ---- */

/* Re-check waits after an ack or a registry change. */
void sp_waits_check(sp_handler *h);
void sp_waits_expire(sp_handler *h, sp_tstamp now);
sp_tstamp sp_waits_expiry(const sp_handler *h);
/* Cancel every wait with SP_ERR_CANCELED. */
void sp_waits_cancel_all(sp_handler *h);

#endif /* SP_CORE_H */
