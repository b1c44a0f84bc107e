/*
 * sp_leadership.h: leadership claims in the handler (docs/protocol.md
 * section 15): which claim a handler holds, the registry's part of a
 * claim's validity, the leader's judgement of every frame, and which
 * frames carry the held claim.  The signed bytes are sp_claim.c's.
 */
#ifndef SP_LEADERSHIP_H
#define SP_LEADERSHIP_H

#include "sp_core.h"

/* A term starts on `h` (created as leader, or sp_handler_set_role to
 * leader at h->epoch): with the node's identity it holds its own claim,
 * else it keeps only a held claim above h->epoch (another device's claim
 * at h->epoch or below is dropped). */
void sp_leadership_term(sp_handler *h);

/* 1 if `c` is a valid claim for h's library (member, may lead, key known,
 * signature verifies; a copy of the held claim needs no check), else 0
 * with `*why` saying why (for the log). */
int sp_leadership_valid(sp_handler *h, const sp_leader_claim *c,
                        const char **why);

/* Record on `s` what `msg` says about the peer (it reads claims, it is a
 * leader), and on its follower record (sp_leadership_remember).  Every
 * frame, before it is routed. */
void sp_leadership_note(sp_session *s, const sp_msg *msg);

/* A leader's session `s` (once it has its follower record): the record
 * keeps whether the device reads claims, for later dials. */
void sp_leadership_remember(sp_session *s);

/* A leader dials `s` (attached): to a device that showed it reads claims,
 * the opening Heartbeat carries features and the claim we hold. */
void sp_leadership_open(sp_session *s);

/* The registry changed: a held claim of another device is checked again
 * (no cache) and dropped if it no longer holds. */
void sp_leadership_recheck(sp_handler *h);

/* A leader's judgement of a frame from a peer on `s`, before any other
 * handling (an incoming stream's first frame before `s` is attached to
 * `h`): a valid claim above its epoch deposes it; an epoch above its own
 * that no such claim proves is refused (SP_ERR_UNPROVEN_EPOCH; an Error
 * frame closes the stream) and logged.  Returns 1 if the frame is done
 * with (stepped down, refused or closed), 0 to go on.  0 on a follower. */
int sp_leadership_judge(sp_handler *h, sp_session *s, const sp_msg *msg);

/* A follower (or a stepped-down leader) `h` keeps the claim of `msg` (a Heartbeat or an Error from
 * peer `peer`) if it is valid and newer than the one it holds; an invalid
 * one is logged and ignored. */
void sp_leadership_take(sp_handler *h, const sp_uuid *peer,
                        const sp_msg *msg);

/* Fill the claim element of an outgoing Heartbeat or Error of `s`, by
 * `h` (the session's handler, or the one refusing its first frame), when
 * it is due (a follower: always; a leader: to a peer that advertised
 * claims, or in an Error to another leader). */
void sp_leadership_stamp(const sp_session *s, const sp_handler *h,
                         sp_msg *msg);

#endif /* SP_LEADERSHIP_H */
