/*
 * sp_leader_addr.c: where followers were last seen, kept with the log so
 * that a restarted leader reaches at once the followers the registry has
 * no address for (they dialed out to it, and would otherwise only notice
 * the restart when their own liveness checks give up on the old
 * connection).  Best-effort throughout: a lost address only costs the
 * shortcut, so failures are logged, never returned.
 */
#include <string.h>

#include "sp_core.h"

static int can_hint(const sp_handler *h) {
  const sp_transport *tr = &h->node->tr;

  return h->store.save_follower_address && h->store.load_follower_addresses &&
         tr->version >= 2 && tr->peer_address && tr->add_address_hint;
}

void sp_leader_remember_address(sp_session *s) {
  sp_handler *h = s->handler;
  const sp_transport *tr = &s->node->tr;
  char addr[SP_PEER_ADDRESS_MAX];
  int rv;

  /* A stream this leader opened went where it already knew to go. */
  if (s->local || !can_hint(h)) {
    return;
  }
  memset(addr, 0, sizeof(addr));
  if (tr->peer_address(s->stream_id, addr, sizeof(addr), tr->user_data) != 0 ||
      addr[0] == '\0' || addr[sizeof(addr) - 1] != '\0') {
    return;
  }
  rv = h->store.save_follower_address(&s->peer, addr, h->store.user_data);
  if (rv != 0) {
    sp_slog(s, SP_LOG_WARN, "keeping a follower address failed: %s",
            sp_err_name(rv));
  }
}

void sp_leader_forget_address(sp_handler *h, const sp_uuid *device) {
  int rv;

  if (!can_hint(h)) {
    return;
  }
  /* An empty address is none: a device that left is not dialled where it
   * was, should it come back elsewhere. */
  rv = h->store.save_follower_address(device, "", h->store.user_data);
  if (rv != 0) {
    sp_hlog(h, device, SP_LOG_WARN,
            "forgetting a follower address failed: %s", sp_err_name(rv));
  }
}

static int hint_sink(const sp_uuid *device, const char *address, void *arg) {
  sp_handler *h = arg;
  const sp_transport *tr = &h->node->tr;
  sp_frec *r = sp_leader_frec(h, device, 0);
  int rv;

  /* strnlen: the string comes from the store, which may be damaged. */
  if (!r || !r->registered || !address || address[0] == '\0' ||
      strnlen(address, SP_PEER_ADDRESS_MAX) == SP_PEER_ADDRESS_MAX) {
    return 0;
  }
  rv = tr->add_address_hint(device, address, tr->user_data);
  if (rv != 0) {
    sp_hlog(h, NULL, SP_LOG_INFO, "address hint %s not taken: %s", address,
            sp_err_name(rv));
  }
  return 0;
}

void sp_leader_hint_addresses(sp_handler *h) {
  int rv;

  if (!can_hint(h)) {
    return;
  }
  rv = h->store.load_follower_addresses(hint_sink, h, h->store.user_data);
  if (rv != 0) {
    sp_hlog(h, NULL, SP_LOG_WARN, "loading kept follower addresses: %s",
            sp_err_name(rv));
  }
}
