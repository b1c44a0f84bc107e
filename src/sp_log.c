/*
 * sp_log.c: delivering events and log lines to the host.
 *
 * Every event goes through sp_emit, the one wrapper that checks for a
 * missing callback and turns a failing one into the node's fatal error.
 */
#include <stdio.h>
#include <string.h>

#include "sp_core.h"

void sp_emit(sp_node *node, const sp_event *ev) {
  if (!node->ev.on_event) {
    return;
  }
  if (node->ev.on_event(ev, node->ev.user_data) != 0) {
    sp_node_set_fatal(node, SP_ERR_CALLBACK_FAILURE);
  }
}

void sp_emit_simple(sp_handler *h, sp_event_type type, const sp_uuid *peer,
                    sp_event *ev) {
  ev->type = type;
  ev->library_id = h->cfg.library_id;
  if (peer) {
    ev->peer_id = *peer;
    ev->has_peer = 1;
  }
  sp_emit(h->node, ev);
}

void sp_log(sp_node *node, sp_log_level level, const char *fmt, ...) {
  char line[512];
  va_list ap;

  if (!node->ev.on_log || level > node->ev.log_level) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  node->ev.on_log(level, line, node->ev.user_data);
}
