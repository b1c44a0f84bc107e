/*
 * sp_log.c: delivering events and log lines to the host.
 *
 * Every event goes through sp_emit, the one wrapper that checks for a
 * missing callback and turns a failing one into the node's fatal error.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

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

/* The short form git uses for hashes: the first 4 bytes as lowercase hex,
 * the text the full id starts with (sp_uuid_format). */
static void short_id(const sp_uuid *id, char out[9]) {
  (void)sodium_bin2hex(out, 9, id->bytes, 4);
}

static int is_nil(const sp_uuid *id) {
  static const sp_uuid nil;
  return memcmp(id, &nil, sizeof(nil)) == 0;
}

#if defined(__GNUC__)
__attribute__((format(printf, 5, 0)))
#endif
static void vlog(const sp_node *node, const sp_uuid *lib, const sp_uuid *peer,
                 sp_log_level level, const char *fmt, va_list ap) {
  char line[512], a[9], b[9];
  int n = 0;

  if (!node->ev.on_log || level > node->ev.log_level) {
    return;
  }
  /* Both prefixes together are under 40 bytes: n stays inside line. */
  if (lib) {
    short_id(lib, a);
    n += snprintf(line + n, sizeof(line) - (size_t)n, "library %s: ", a);
  }
  if (peer) {
    short_id(peer, b);
    n += snprintf(line + n, sizeof(line) - (size_t)n, "peer %s: ", b);
  }
  vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  node->ev.on_log(level, line, node->ev.user_data);
}

void sp_hlog(const sp_handler *h, const sp_uuid *peer, sp_log_level level,
             const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vlog(h->node, &h->cfg.library_id, peer, level, fmt, ap);
  va_end(ap);
}

void sp_slog(const sp_session *s, sp_log_level level, const char *fmt, ...) {
  /* A stream refused before its first frame named a library has none. */
  const sp_uuid *lib = s->handler ? &s->handler->cfg.library_id
                       : is_nil(&s->lib) ? NULL
                                         : &s->lib;
  va_list ap;

  va_start(ap, fmt);
  vlog(s->node, lib, is_nil(&s->peer) ? NULL : &s->peer, level, fmt, ap);
  va_end(ap);
}
