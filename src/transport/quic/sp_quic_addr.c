/*
 * sp_quic_addr.c: the "ip:port" / "[ip]:port" text form of UDP addresses.
 *
 * Numeric addresses only: resolving names would block the loop and let
 * whoever controls DNS choose where we connect.  (Who answers does not
 * matter for security, the handshake authenticates the peer, but a
 * blocking resolver in an event loop does.)
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/errors.h"
#include "sp_quic_int.h"

static int parse_port(const char *p, size_t len, uint16_t *port) {
  unsigned long v = 0;
  size_t i;

  if (len == 0 || len > 5) {
    return -1;
  }
  for (i = 0; i < len; ++i) {
    if (p[i] < '0' || p[i] > '9') {
      return -1;
    }
    v = v * 10 + (unsigned long)(p[i] - '0');
  }
  if (v > 65535) {
    return -1;
  }
  *port = (uint16_t)v;
  return 0;
}

/* "[fe80::1%eth0]:p": a link-local address is dialable only with its
 * interface (by name or index).  Returns 0 or SP_ERR_ADDRESS. */
static int parse_scope(char *host, uint32_t *scope) {
  char *pct = strchr(host, '%'), *end;
  unsigned long v;

  *scope = 0;
  if (!pct) {
    return 0;
  }
  *pct++ = '\0';
  if (!*pct) {
    return SP_ERR_ADDRESS;
  }
  v = strtoul(pct, &end, 10);
  if (*end) {
    v = if_nametoindex(pct);
  }
  if (v == 0 || v > UINT32_MAX) {
    return SP_ERR_ADDRESS;
  }
  *scope = (uint32_t)v;
  return 0;
}

int sp_quic_addr_parse(sp_quic_addr *out, const char *text, size_t len) {
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
  uint32_t scope;
  const char *colon, *port_text;
  size_t hostlen;
  uint16_t port;
  sp_quic_addr a;

  memset(&a, 0, sizeof(a));
  if (len > 0 && text[0] == '[') {
    const char *close = memchr(text, ']', len);
    if (!close || close + 1 >= text + len || close[1] != ':') {
      return SP_ERR_ADDRESS;
    }
    hostlen = (size_t)(close - text - 1);
    if (hostlen == 0 || hostlen >= sizeof(host)) {
      return SP_ERR_ADDRESS;
    }
    memcpy(host, text + 1, hostlen);
    host[hostlen] = '\0';
    port_text = close + 2;
    if (parse_port(port_text, (size_t)(text + len - port_text), &port) != 0 ||
        parse_scope(host, &scope) != 0 ||
        inet_pton(AF_INET6, host, &a.u.in6.sin6_addr) != 1) {
      return SP_ERR_ADDRESS;
    }
    a.u.in6.sin6_scope_id = scope;
    a.u.in6.sin6_family = AF_INET6;
    a.u.in6.sin6_port = htons(port);
    a.len = sizeof(a.u.in6);
  } else {
    colon = len ? memchr(text, ':', len) : NULL;
    if (!colon) {
      return SP_ERR_ADDRESS;
    }
    hostlen = (size_t)(colon - text);
    if (hostlen == 0 || hostlen >= sizeof(host)) {
      return SP_ERR_ADDRESS;
    }
    memcpy(host, text, hostlen);
    host[hostlen] = '\0';
    port_text = colon + 1;
    if (parse_port(port_text, (size_t)(text + len - port_text), &port) != 0 ||
        inet_pton(AF_INET, host, &a.u.in.sin_addr) != 1) {
      return SP_ERR_ADDRESS;
    }
    a.u.in.sin_family = AF_INET;
    a.u.in.sin_port = htons(port);
    a.len = sizeof(a.u.in);
  }
  *out = a;
  return 0;
}

static void v4_mapped(sp_quic_addr *a) {
  struct sockaddr_in v4 = a->u.in;

  memset(a, 0, sizeof(*a));
  a->u.in6.sin6_family = AF_INET6;
  a->u.in6.sin6_port = v4.sin_port;
  a->u.in6.sin6_addr.s6_addr[10] = 0xff;
  a->u.in6.sin6_addr.s6_addr[11] = 0xff;
  memcpy(&a->u.in6.sin6_addr.s6_addr[12], &v4.sin_addr, 4);
  a->len = sizeof(a->u.in6);
}

static uint16_t port_of(const sp_quic_addr *a) {
  return ntohs(a->u.sa.sa_family == AF_INET ? a->u.in.sin_port
                                            : a->u.in6.sin6_port);
}

int sp_quic_addr_pick(sp_quic_addr *out, const char *list, int family) {
  const char *p = list;
  int rv = SP_ERR_ADDRESS;

  while (*p) {
    const char *end = strchr(p, ',');
    const char *b = p, *e = end ? end : p + strlen(p);
    sp_quic_addr a;

    while (b < e && (*b == ' ' || *b == '\t')) {
      ++b;
    }
    while (e > b && (e[-1] == ' ' || e[-1] == '\t')) {
      --e;
    }
    if (sp_quic_addr_parse(&a, b, (size_t)(e - b)) == 0 && port_of(&a) != 0) {
      if (a.u.sa.sa_family == AF_INET && family == AF_INET6) {
        v4_mapped(&a);
      }
      if (a.u.sa.sa_family == family) {
        *out = a;
        return 0;
      }
      rv = SP_ERR_UNREACHABLE;
    }
    if (!end) {
      break;
    }
    p = end + 1;
  }
  return rv;
}

int sp_quic_addr_format(const sp_quic_addr *a, char *buf, size_t buflen) {
  char host[INET6_ADDRSTRLEN], scope[IF_NAMESIZE + 2] = "";
  int n;

  if (a->u.sa.sa_family == AF_INET) {
    if (!inet_ntop(AF_INET, &a->u.in.sin_addr, host, sizeof(host))) {
      return SP_ERR_ADDRESS;
    }
    n = snprintf(buf, buflen, "%s:%u", host, (unsigned)port_of(a));
  } else if (a->u.sa.sa_family == AF_INET6) {
    if (!inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof(host))) {
      return SP_ERR_ADDRESS;
    }
    if (a->u.in6.sin6_scope_id) {
      char name[IF_NAMESIZE];
      if (if_indextoname(a->u.in6.sin6_scope_id, name)) {
        snprintf(scope, sizeof(scope), "%%%s", name);
      } else {
        snprintf(scope, sizeof(scope), "%%%u",
                 (unsigned)a->u.in6.sin6_scope_id);
      }
    }
    n = snprintf(buf, buflen, "[%s%s]:%u", host, scope, (unsigned)port_of(a));
  } else {
    return SP_ERR_ADDRESS;
  }
  if (n < 0 || (size_t)n >= buflen) {
    return SP_ERR_NOBUF;
  }
  return 0;
}

int sp_quic_addr_equal(const sp_quic_addr *a, const sp_quic_addr *b) {
  if (a->u.sa.sa_family != b->u.sa.sa_family) {
    return 0;
  }
  if (a->u.sa.sa_family == AF_INET) {
    return a->u.in.sin_port == b->u.in.sin_port &&
           a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
  }
  return a->u.in6.sin6_port == b->u.in6.sin6_port &&
         memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16) == 0 &&
         a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id;
}
