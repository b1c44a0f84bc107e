/*
 * sp_leadership.c: leadership claims in the handler (docs/protocol.md
 * section 15).
 *
 * A leader steps down only for a claim: a device the registry lets lead
 * signed that it leads at a higher epoch.  A bare higher epoch, which any
 * paired follower can write into a frame, deposes nobody.  The handler
 * holds the highest-epoch valid claim it knows and passes it on, so a
 * claim reaches an old leader through any follower that met the new one.
 */
#include <string.h>

#include "sync_protocol/identity.h"
#include "sp_leadership.h"

static const sp_leader_claim *claim_of(const sp_msg *msg) {
  if (msg->type == SP_MSG_HEARTBEAT && msg->u.heartbeat.has_claim) {
    return &msg->u.heartbeat.claim;
  }
  if (msg->type == SP_MSG_ERROR && msg->u.error.has_claim) {
    return &msg->u.error.claim;
  }
  return NULL;
}

static int same_claim(const sp_leader_claim *a, const sp_leader_claim *b) {
  return a->epoch == b->epoch && sp_uuid_equal(&a->leader, &b->leader) &&
         memcmp(a->signature, b->signature, SP_CLAIM_SIG_LEN) == 0;
}

static void hold(sp_handler *h, const sp_leader_claim *c) {
  h->claim = *c;
  h->has_claim = 1;
}

static int own_claim(const sp_handler *h) {
  return sp_uuid_equal(&h->claim.leader, &h->node->cfg.device_id);
}

void sp_leadership_term(sp_handler *h) {
  const sp_identity *id = h->node->cfg.identity;
  sp_leader_claim own;

  /* Another device's claim at our term's epoch would be handed out as
   * this term's, naming the wrong leader (set_role refuses it above). */
  if (h->has_claim && (h->claim.epoch < h->epoch ||
                       (h->claim.epoch == h->epoch && !own_claim(h)))) {
    h->has_claim = 0;
  }
  if (!id || (h->has_claim && h->claim.epoch > h->epoch)) {
    return;
  }
  /* Only NULL arguments fail, and none is NULL here. */
  if (sp_leader_claim_sign(&own, id, &h->cfg.library_id, h->epoch) == 0) {
    hold(h, &own);
  }
}

int sp_leadership_valid(sp_handler *h, const sp_leader_claim *c,
                        const char **why) {
  const sp_registry *reg = &h->node->reg;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int yes = 0, rv;

  /* Checked when it was taken: the heartbeats that repeat it cost no
   * signature check. */
  if (h->has_claim && same_claim(&h->claim, c)) {
    return 1;
  }
  /* NOT_FOUND is the registry's "no"; any other failure is not a yes
   * either (fail closed). */
  rv = reg->is_member(&h->cfg.library_id, &c->leader, &yes, reg->user_data);
  if (rv != 0 || !yes) {
    *why = rv != 0 && rv != SP_ERR_NOT_FOUND ? "registry failed"
                                             : "not a member";
    return 0;
  }
  if (reg->may_lead) {
    yes = 0;
    rv = reg->may_lead(&h->cfg.library_id, &c->leader, &yes, reg->user_data);
    if (rv != 0 || !yes) {
      *why = rv != 0 && rv != SP_ERR_NOT_FOUND ? "registry failed"
                                               : "may not lead";
      return 0;
    }
  } else {
    /* No may_lead (or an older registry): only the leader the registry
     * names may lead, so a paired follower cannot sign its way in;
     * failover is the host updating the registry. */
    sp_uuid named;
    rv = reg->leader(&h->cfg.library_id, &named, reg->user_data);
    if (rv != 0 || !sp_uuid_equal(&named, &c->leader)) {
      *why = rv != 0 && rv != SP_ERR_NOT_FOUND
                 ? "registry failed"
                 : "not the registry's leader (no may_lead)";
      return 0;
    }
  }
  rv = reg->device_key ? reg->device_key(&c->leader, key, reg->user_data)
                       : SP_ERR_NOT_FOUND;
  if (rv != 0) {
    *why = rv == SP_ERR_NOT_FOUND ? "key unknown" : "registry failed";
    return 0;
  }
  if (sp_leader_claim_verify(c, &h->cfg.library_id, key) != 0) {
    *why = "signature does not verify";
    return 0;
  }
  return 1;
}

/* A follower of this build writes its features in every Heartbeat and
 * every FetchEntries, so one without them is a seed-only peer (say a
 * device rolled back to an older build): it gets the seed's bytes again
 * from the next stream on. */
static void shows(sp_session *s, int has_features, uint64_t features) {
  s->peer_claims = has_features && (features & SP_FEATURE_CLAIMS) != 0;
  s->peer_no_claims = !s->peer_claims;
}

void sp_leadership_note(sp_session *s, const sp_msg *msg) {
  if (msg->type == SP_MSG_HEARTBEAT) {
    const sp_msg_heartbeat *hb = &msg->u.heartbeat;
    if (hb->role == SP_ROLE_FOLLOWER) {
      shows(s, hb->has_features, hb->features);
    }
    if (hb->role == SP_ROLE_LEADER) {
      s->peer_leader = 1;
    }
  } else if (msg->type == SP_MSG_FETCH_ENTRIES) {
    shows(s, msg->u.fetch_entries.has_features,
          msg->u.fetch_entries.features);
  }
  /* Only a build that reads claims writes one, or refuses for the lack
   * of one (an old leader refusing a new one's seed-shaped Heartbeat). */
  if (claim_of(msg) || (msg->type == SP_MSG_ERROR &&
                        msg->u.error.code == SP_ERR_UNPROVEN_EPOCH)) {
    s->peer_claims = 1;
    s->peer_no_claims = 0;
  }
  sp_leadership_remember(s);
}

void sp_leadership_remember(sp_session *s) {
  if (!s->rec) {
    return;
  }
  if (s->peer_claims) {
    s->rec->reads_claims = 1;
  } else if (s->peer_no_claims) {
    s->rec->reads_claims = 0;
  }
}

void sp_leadership_open(sp_session *s) {
  const sp_handler *h = s->handler;

  /* The seed's 5-element Heartbeat to a device that never showed it
   * reads claims (or when we hold none). */
  if (!s->rec || !s->rec->reads_claims || !h->has_claim) {
    return;
  }
  s->peer_claims = 1;
  s->features_pending = 1;
}

static void refuse(sp_session *s, const sp_msg *msg, uint64_t epoch) {
  if (msg->type == SP_MSG_ERROR) {
    /* No Error answers an Error. */
    sp_session_close(s, SP_ERR_PEER_ERROR);
  } else {
    sp_session_refuse(s, SP_ERR_UNPROVEN_EPOCH,
                      "epoch %llu is not proven by a leadership claim",
                      (unsigned long long)epoch);
  }
}

int sp_leadership_judge(sp_handler *h, sp_session *s, const sp_msg *msg) {
  const sp_leader_claim *c = claim_of(msg);
  const char *why = NULL;
  char peer[SP_UUID_STRING_LEN + 1], who[SP_UUID_STRING_LEN + 1];

  if (h->role != SP_ROLE_LEADER || h->stepped_down) {
    return 0;
  }
  sp_uuid_format(&s->peer, peer);
  if (c && c->epoch > h->epoch) {
    if (sp_leadership_valid(h, c, &why)) {
      /* Held first: the host may ask for it inside STEPPED_DOWN. */
      hold(h, c);
      sp_handler_step_down(h, h->claim.epoch, &s->peer, &h->claim.leader);
      return 1;
    }
    /* Refused whatever the frame's own epoch: a stream that may go on
     * would buy a signature check and a log line per frame. */
    sp_slog(s, SP_LOG_WARN,
            "refused a leadership claim for epoch %llu by %s from %s: %s",
            (unsigned long long)c->epoch, sp_uuid_format(&c->leader, who),
            peer, why);
    refuse(s, msg, c->epoch);
    return 1;
  }
  if (msg->epoch <= h->epoch) {
    return 0;
  }
  if (!c && msg->type == SP_MSG_HEARTBEAT &&
      msg->u.heartbeat.role == SP_ROLE_LEADER) {
    /* Not a forgery as such: a new leader's opening Heartbeat to a
     * device it does not know reads claims has none (protocol.md 15.7). */
    sp_slog(s, SP_LOG_WARN,
            "%s is a leader at epoch %llu that proves nothing (ours is "
            "%llu): if it is the new leader, this one must be demoted by "
            "its host",
            peer, (unsigned long long)msg->epoch, (unsigned long long)h->epoch);
  } else {
    sp_slog(s, SP_LOG_WARN,
            "%s asserted epoch %llu above ours (%llu) without a valid "
            "leadership claim: %s",
            peer, (unsigned long long)msg->epoch, (unsigned long long)h->epoch,
            c ? "its claim is not above ours" : "no claim");
  }
  refuse(s, msg, msg->epoch);
  return 1;
}

void sp_leadership_take(sp_handler *h, const sp_uuid *peer,
                        const sp_msg *msg) {
  const sp_leader_claim *c = claim_of(msg);
  const char *why = NULL;
  char from[SP_UUID_STRING_LEN + 1], who[SP_UUID_STRING_LEN + 1];

  /* A stepped-down leader too: it relays the newest proof, not the
   * first one that deposed it. */
  if ((h->role != SP_ROLE_FOLLOWER && !h->stepped_down) || !c ||
      (h->has_claim && c->epoch <= h->claim.epoch)) {
    return;
  }
  /* Not a reason to stop syncing: the transport proved who the leader
   * is, the registry named it; a bad claim is only not passed on. */
  if (!sp_leadership_valid(h, c, &why)) {
    sp_hlog(h, peer, SP_LOG_WARN,
            "ignored a leadership claim for epoch %llu by %s from %s: %s",
            (unsigned long long)c->epoch, sp_uuid_format(&c->leader, who),
            sp_uuid_format(peer, from), why);
    return;
  }
  hold(h, c);
  sp_hlog(h, NULL, SP_LOG_INFO, "holding the leadership claim for epoch %llu "
          "by %s", (unsigned long long)c->epoch,
          sp_uuid_format(&c->leader, who));
}

void sp_leadership_stamp(const sp_session *s, const sp_handler *h,
                         sp_msg *msg) {
  int due;

  if (!h || !h->has_claim) {
    return;
  }
  /* A leader writes it only to a peer that reads it: a seed-only
   * follower gets the seed's bytes.  Another leader reads it in an Error
   * whatever it advertised: a newer leader's refusal is what deposes an
   * older one that dials it. */
  if (msg->type == SP_MSG_HEARTBEAT) {
    due = msg->u.heartbeat.has_features &&
          (h->role == SP_ROLE_FOLLOWER || s->peer_claims);
    if (due) {
      msg->u.heartbeat.has_claim = 1;
      msg->u.heartbeat.claim = h->claim;
    }
  } else if (msg->type == SP_MSG_ERROR) {
    due = h->role == SP_ROLE_FOLLOWER || s->peer_claims || s->peer_leader;
    if (due) {
      msg->u.error.has_claim = 1;
      msg->u.error.claim = h->claim;
    }
  }
}

void sp_leadership_recheck(sp_handler *h) {
  const char *why = NULL;
  char who[SP_UUID_STRING_LEN + 1];

  if (!h->has_claim || own_claim(h)) {
    return;
  }
  /* Without the cache: the registry may have taken back the membership or
   * the right to lead that the claim was checked against. */
  h->has_claim = 0;
  if (sp_leadership_valid(h, &h->claim, &why)) {
    h->has_claim = 1;
    return;
  }
  sp_hlog(h, NULL, SP_LOG_WARN,
          "dropped the held leadership claim for epoch %llu by %s: %s",
          (unsigned long long)h->claim.epoch,
          sp_uuid_format(&h->claim.leader, who), why);
}
