/*
 * pairing.c: parse the pairing file and serve it as an sp_registry.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "pairing.h"

/* Split `s` into at most `max` words (spaces and tabs); returns how many
 * there were, up to max + 1 (more than max). */
static int split_words(char *s, char **w, int max) {
  int n = 0;

  for (;;) {
    s += strspn(s, " \t\r\n");
    if (!*s) {
      return n;
    }
    if (n == max) {
      return n + 1;
    }
    w[n++] = s;
    s += strcspn(s, " \t\r\n");
    if (*s) {
      *s++ = '\0';
    }
  }
}

/* Whether `one` is an item of the comma-separated `list`. */
static int listed(const char *list, const char *one) {
  size_t n = strlen(one);

  while (*list) {
    size_t len = strcspn(list, ",");
    if (len == n && memcmp(list, one, n) == 0) {
      return 1;
    }
    list += len + (list[len] == ',');
  }
  return 0;
}

int pairing_resolve(const char *text, char *out, size_t outlen, char *err,
                    size_t errlen) {
  char host[256], *end;
  const char *port;
  struct addrinfo hints, *res = NULL, *ai;
  unsigned long v;
  size_t len, used = 0;
  int rv;

  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || close[1] != ':') {
      snprintf(err, errlen, "bad address '%s' (host:port, ipv4:port or "
               "[ipv6]:port)", text);
      return -1;
    }
    len = (size_t)(close - text - 1);
    memcpy(host, text + 1, len < sizeof(host) ? len : 0);
    port = close + 2;
  } else {
    const char *colon = strrchr(text, ':');
    if (!colon || strchr(text, ':') != colon) {
      snprintf(err, errlen, "bad address '%s' (host:port, ipv4:port or "
               "[ipv6]:port)", text);
      return -1;
    }
    len = (size_t)(colon - text);
    memcpy(host, text, len < sizeof(host) ? len : 0);
    port = colon + 1;
  }
  v = strtoul(port, &end, 10);
  if (len == 0 || len >= sizeof(host) || !*port || *end || v > 65535 ||
      *port == '-' || *port == '+') {
    snprintf(err, errlen, "bad address '%s' (host:port, ipv4:port or "
             "[ipv6]:port, port 0-65535)", text);
    return -1;
  }
  host[len] = '\0';
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  rv = getaddrinfo(host, port, &hints, &res);
  if (rv != 0) {
    snprintf(err, errlen, "cannot resolve '%s': %s", host,
             rv == EAI_SYSTEM ? strerror(errno) : gai_strerror(rv));
    return -2;
  }
  out[0] = '\0';
  for (ai = res; ai; ai = ai->ai_next) {
    char ip[NI_MAXHOST], one[NI_MAXHOST + 10];
    /* getnameinfo, not inet_ntop: it keeps a link-local scope
     * ("fe80::1%eth0"), without which the address is not dialable. */
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0,
                    NI_NUMERICHOST) != 0) {
      continue;
    }
    snprintf(one, sizeof(one), ai->ai_family == AF_INET6 ? "[%s]:%lu"
             : "%s:%lu", ip, v);
    /* getaddrinfo repeats an address per protocol; keep what fits. */
    if (listed(out, one) || used + strlen(one) + 2 > outlen) {
      continue;
    }
    used += (size_t)snprintf(out + used, outlen - used, "%s%s",
                             used ? "," : "", one);
  }
  freeaddrinfo(res);
  if (!used) {
    snprintf(err, errlen, "cannot resolve '%s': no IPv4 or IPv6 address",
             host);
    return -2;
  }
  return 0;
}

void pairing_bind_address(const char *hints, char *out, size_t outlen) {
  const char *h = hints, *pick = hints;

  while (*h) {
    size_t len = strcspn(h, ",");
    if (*h != '[') {
      pick = h;
      break;
    }
    h += len + (h[len] == ',');
  }
  snprintf(out, outlen, "%.*s", (int)strcspn(pick, ","), pick);
}

static long long mono_seconds(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  /* Never 0: 0 marks a numeric address, resolved once for good. */
  return (long long)ts.tv_sec + 1;
}

/* Whether the host part of `addr` is a numeric address: it resolves to
 * itself, once for good. */
static int numeric_host(const char *addr) {
  char host[NI_MAXHOST];
  const char *end;
  unsigned char buf[sizeof(struct in6_addr)];
  size_t n;

  if (addr[0] == '[') {
    end = strchr(addr, ']');
    addr++;
  } else {
    end = strrchr(addr, ':');
  }
  n = end ? (size_t)(end - addr) : 0;
  if (n == 0 || n >= sizeof(host)) {
    return 0;
  }
  memcpy(host, addr, n);
  host[n] = '\0';
  if (strchr(host, '%')) {
    host[strcspn(host, "%")] = '\0';
  }
  return inet_pton(AF_INET, host, buf) == 1 ||
         inet_pton(AF_INET6, host, buf) == 1;
}

/* (Re)resolve `d`'s address.  Returns 0, -1 (malformed: `err` says why)
 * or -2 (does not resolve: kept, d->resolve_err says why). */
static int resolve_device(pairing_device *d, char *err, size_t errlen) {
  char hints[PAIRING_HINTS_LEN];
  int rv = pairing_resolve(d->address, hints, sizeof(hints), err, errlen);

  d->resolved_at = numeric_host(d->address) ? 0 : mono_seconds();
  if (rv == -2) {
    snprintf(d->resolve_err, sizeof(d->resolve_err), "%s", err);
    /* A stale answer beats none: a name server that is down for a
     * moment does not take a known device away. */
    return -2;
  }
  if (rv == 0) {
    memcpy(d->hints, hints, sizeof(hints));
    d->resolve_err[0] = '\0';
  }
  return rv;
}

static int parse_device(pairing *p, char *rest, char *err, size_t errlen,
                        int line) {
  char *w[5], emsg[200];
  const char *id, *key, *role, *addr, *name;
  pairing_device *d;
  int i, got;

  got = split_words(rest, w, 5);
  if (got != 4 && got != 5) {
    snprintf(err, errlen,
             "line %d: expected: device <uuid> <key> <role> <address|-> "
             "[name]%s",
             line, got > 5 ? " (a comment after them starts with ' #')" : "");
    return -1;
  }
  id = w[0];
  key = w[1];
  role = w[2];
  addr = w[3];
  name = got == 5 ? w[4] : "";
  if (p->ndev == PAIRING_MAX_DEVICES) {
    snprintf(err, errlen, "line %d: more than %d devices", line,
             PAIRING_MAX_DEVICES);
    return -1;
  }
  d = &p->dev[p->ndev];
  memset(d, 0, sizeof(*d));
  if (sp_uuid_parse(&d->id, id) != 0) {
    snprintf(err, errlen, "line %d: bad device id '%.40s'", line, id);
    return -1;
  }
  if (sp_public_key_parse(d->key, key) != 0) {
    snprintf(err, errlen, "line %d: bad public key (64 hex digits)", line);
    return -1;
  }
  for (i = 0; i < p->ndev; ++i) {
    char uuid[SP_UUID_STRING_LEN + 1];
    if (sp_uuid_equal(&p->dev[i].id, &d->id)) {
      snprintf(err, errlen,
               "line %d: device %s is already listed on line %d (a device "
               "has one key: remove the stale line)",
               line, sp_uuid_format(&d->id, uuid), p->dev[i].line);
      return -1;
    }
    if (memcmp(p->dev[i].key, d->key, SP_PUBLIC_KEY_LEN) == 0) {
      snprintf(err, errlen,
               "line %d: this key is already listed on line %d for device %s",
               line, p->dev[i].line, sp_uuid_format(&p->dev[i].id, uuid));
      return -1;
    }
  }
  d->line = line;
  if (strcmp(role, "leader") == 0) {
    d->leader = 1;
    d->may_lead = 1;
  } else if (strcmp(role, "standby") == 0) {
    d->may_lead = 1;
  } else if (strcmp(role, "follower") != 0) {
    snprintf(err, errlen, "line %d: role must be leader, standby or follower",
             line);
    return -1;
  }
  if (strcmp(addr, "-") != 0) {
    if (strlen(addr) >= sizeof(d->address)) {
      snprintf(err, errlen, "line %d: address longer than %d bytes", line,
               (int)sizeof(d->address) - 1);
      return -1;
    }
    snprintf(d->address, sizeof(d->address), "%s", addr);
    /* Malformed is an error; a name that does not resolve is kept. */
    if (!p->names_only && resolve_device(d, emsg, sizeof(emsg)) == -1) {
      snprintf(err, errlen, "line %d: %s", line, emsg);
      return -1;
    }
  }
  if (strlen(name) >= sizeof(d->name)) {
    snprintf(err, errlen, "line %d: name longer than %d bytes", line,
             (int)sizeof(d->name) - 1);
    return -1;
  }
  snprintf(d->name, sizeof(d->name), "%s", name);
  p->ndev++;
  return 0;
}

/* A '#' at the start of the line or after a space or tab starts a
 * comment; one inside a word does not (it is part of the word). */
static void cut_comment(char *s) {
  char *c;

  for (c = s; (c = strchr(c, '#')) != NULL; ++c) {
    if (c == s || c[-1] == ' ' || c[-1] == '\t') {
      *c = '\0';
      return;
    }
  }
}

int pairing_parse_line(pairing *p, char *s, int line, char *err,
                       size_t errlen) {
  char *w[1];
  int got;

  cut_comment(s);
  got = split_words(s, w, 1);
  if (got == 0) {
    return 0;
  }
  s = w[0] + strlen(w[0]) + (got > 1 ? 1 : 0);
  if (strcmp(w[0], "library") == 0) {
    char *id[2];
    if (p->have_library) {
      snprintf(err, errlen, "line %d: a second library line (a pairing "
               "file describes one library)", line);
      return -1;
    }
    if (split_words(s, id, 1) != 1 || sp_uuid_parse(&p->library, id[0]) != 0) {
      snprintf(err, errlen, "line %d: expected: library <uuid>", line);
      return -1;
    }
    p->have_library = 1;
    return 0;
  }
  if (strcmp(w[0], "device") == 0) {
    return parse_device(p, s, err, errlen, line);
  }
  snprintf(err, errlen, "line %d: unknown keyword '%.40s'", line, w[0]);
  return -1;
}

static int read_file(pairing *p, const char *path, char *err, size_t errlen,
                     int names_only) {
  FILE *f = fopen(path, "r");
  char buf[PAIRING_LINE_MAX + 2];
  int line = 0, rv = 0;

  memset(p, 0, sizeof(*p));
  p->names_only = names_only;
  if (!f) {
    snprintf(err, errlen, "cannot open pairing file %s: %s", path,
             strerror(errno));
    return -1;
  }
  while (rv == 0 && fgets(buf, sizeof(buf), f)) {
    size_t n = strlen(buf);
    ++line;
    if (n > 0 && buf[n - 1] == '\n') {
      buf[--n] = '\0';
    } else if (n > PAIRING_LINE_MAX) {
      /* Refused, not cut: its rest is no line of its own. */
      snprintf(err, errlen, "line %d: longer than %d bytes", line,
               PAIRING_LINE_MAX);
      rv = -1;
      break;
    }
    rv = pairing_parse_line(p, buf, line, err, errlen);
  }
  if (rv != 0) {
    char what[256];
    snprintf(what, sizeof(what), "%s", err);
    snprintf(err, errlen, "%s: %s", path, what);
  }
  if (rv == 0 && ferror(f)) {
    snprintf(err, errlen, "cannot read pairing file %s: %s", path,
             strerror(errno));
    rv = -1;
  }
  fclose(f);
  p->lines = line;
  return rv;
}

int pairing_read(pairing *p, const char *path, char *err, size_t errlen) {
  return read_file(p, path, err, errlen, 0);
}

static int complete(pairing *p, const char *path, char *err, size_t errlen) {
  int leaders = 0, i;

  for (i = 0; i < p->ndev; ++i) {
    leaders += p->dev[i].leader;
  }
  if (!p->have_library || leaders != 1) {
    snprintf(err, errlen, "%s: needs a library line and exactly one leader",
             path);
    return -1;
  }
  return 0;
}

int pairing_load(pairing *p, const char *path, char *err, size_t errlen) {
  return read_file(p, path, err, errlen, 0) != 0
             ? -1
             : complete(p, path, err, errlen);
}

int pairing_load_names(pairing *p, const char *path, char *err,
                       size_t errlen) {
  return read_file(p, path, err, errlen, 1) != 0
             ? -1
             : complete(p, path, err, errlen);
}

const pairing_device *pairing_find(const pairing *p, const sp_uuid *id) {
  int i;

  for (i = 0; i < p->ndev; ++i) {
    if (sp_uuid_equal(&p->dev[i].id, id)) {
      return &p->dev[i];
    }
  }
  return NULL;
}

const pairing_device *pairing_leader(const pairing *p) {
  int i;

  for (i = 0; i < p->ndev; ++i) {
    if (p->dev[i].leader) {
      return &p->dev[i];
    }
  }
  return NULL;
}

int pairing_set_leader(pairing *p, const sp_uuid *id) {
  int i;

  if (!pairing_find(p, id)) {
    return -1;
  }
  for (i = 0; i < p->ndev; ++i) {
    p->dev[i].leader = sp_uuid_equal(&p->dev[i].id, id);
  }
  return 0;
}

static int r_is_member(const sp_uuid *lib, const sp_uuid *device, int *member,
                       void *ud) {
  pairing *p = ud;

  *member = sp_uuid_equal(lib, &p->library) && pairing_find(p, device);
  return 0;
}

static int r_leader(const sp_uuid *lib, sp_uuid *leader, void *ud) {
  pairing *p = ud;

  if (!sp_uuid_equal(lib, &p->library)) {
    return SP_ERR_NOT_FOUND;
  }
  *leader = pairing_leader(p)->id;
  return 0;
}

static int r_may_lead(const sp_uuid *lib, const sp_uuid *device,
                      int *may_lead, void *ud) {
  pairing *p = ud;
  const pairing_device *d = pairing_find(p, device);

  *may_lead = sp_uuid_equal(lib, &p->library) && d && d->may_lead;
  return 0;
}

static int r_members(const sp_uuid *lib, sp_uuid *out, size_t cap,
                     size_t *count, void *ud) {
  pairing *p = ud;
  int i;

  *count = 0;
  if (!sp_uuid_equal(lib, &p->library)) {
    return 0;
  }
  for (i = 0; i < p->ndev; ++i) {
    if ((size_t)i < cap) {
      out[i] = p->dev[i].id;
    }
  }
  *count = (size_t)p->ndev;
  return 0;
}

static int r_device_key(const sp_uuid *device, uint8_t key[SP_PUBLIC_KEY_LEN],
                        void *ud) {
  const pairing_device *d = pairing_find(ud, device);

  if (!d) {
    return SP_ERR_NOT_FOUND;
  }
  memcpy(key, d->key, SP_PUBLIC_KEY_LEN);
  return 0;
}

static int r_device_by_key(const uint8_t key[SP_PUBLIC_KEY_LEN],
                           sp_uuid *device, void *ud) {
  pairing *p = ud;
  int i;

  for (i = 0; i < p->ndev; ++i) {
    if (memcmp(p->dev[i].key, key, SP_PUBLIC_KEY_LEN) == 0) {
      *device = p->dev[i].id;
      return 0;
    }
  }
  return SP_ERR_NOT_FOUND;
}

void pairing_warn_unresolved(const pairing *p, const pairing_device *self,
                             const char *path) {
  int i;

  for (i = 0; i < p->ndev; ++i) {
    const pairing_device *d = &p->dev[i];
    if (d != self && d->resolve_err[0]) {
      fprintf(stderr, "spsync: warning: %s: line %d: %s (kept: resolved "
              "again when it is dialed)\n", path, d->line, d->resolve_err);
    }
  }
}

static int r_address_hints(const sp_uuid *device, char *buf, size_t buflen,
                           void *ud) {
  pairing_device *d = (pairing_device *)pairing_find(ud, device);
  char err[200];

  /* Resolved again when stale, so a device whose address changed, or
   * whose name came up after the start, is found without a restart.
   * getaddrinfo blocks the loop for that long: once a TTL, per device. */
  if (d && d->address[0] && d->resolved_at &&
      mono_seconds() - d->resolved_at >=
          (d->resolve_err[0] ? PAIRING_RETRY_TTL : PAIRING_RESOLVE_TTL)) {
    (void)resolve_device(d, err, sizeof(err));
  }
  if (!d || !d->hints[0]) {
    return SP_ERR_NOT_FOUND;
  }
  if (strlen(d->hints) + 1 > buflen) {
    return SP_ERR_NOBUF;
  }
  memcpy(buf, d->hints, strlen(d->hints) + 1);
  return 0;
}

void pairing_registry(pairing *p, sp_registry *out) {
  sp_registry r = SP_REGISTRY_INIT;

  r.user_data = p;
  r.is_member = r_is_member;
  r.leader = r_leader;
  r.members = r_members;
  r.device_key = r_device_key;
  r.device_by_key = r_device_by_key;
  r.address_hints = r_address_hints;
  r.may_lead = r_may_lead;
  *out = r;
}
