/*
 * pairing.c: parse the pairing file and serve it as an sp_registry.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pairing.h"

static int parse_device(pairing *p, char *rest, char *err, size_t errlen,
                        int line) {
  char id[64], key[80], role[16], addr[64], name[32] = "", extra[2];
  pairing_device *d;
  int i, got;

  got = sscanf(rest, "%63s %79s %15s %63s %31s %1s", id, key, role, addr,
               name, extra);
  if (got != 4 && got != 5) {
    snprintf(err, errlen,
             "line %d: expected: device <uuid> <key> <role> <address|-> "
             "[name]",
             line);
    return -1;
  }
  if (p->ndev == PAIRING_MAX_DEVICES) {
    snprintf(err, errlen, "line %d: more than %d devices", line,
             PAIRING_MAX_DEVICES);
    return -1;
  }
  d = &p->dev[p->ndev];
  memset(d, 0, sizeof(*d));
  if (sp_uuid_parse(&d->id, id) != 0) {
    snprintf(err, errlen, "line %d: bad device id '%s'", line, id);
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
    snprintf(d->address, sizeof(d->address), "%s", addr);
  }
  snprintf(d->name, sizeof(d->name), "%s", name);
  p->ndev++;
  return 0;
}

int pairing_load(pairing *p, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  char buf[512];
  int line = 0, have_lib = 0, leaders = 0, i;

  memset(p, 0, sizeof(*p));
  if (!f) {
    snprintf(err, errlen, "cannot open pairing file %s: %s", path,
             strerror(errno));
    return -1;
  }
  while (fgets(buf, sizeof(buf), f)) {
    char word[16], *s = buf;
    ++line;
    while (*s == ' ' || *s == '\t') {
      ++s;
    }
    if (*s == '#' || *s == '\n' || *s == '\0') {
      continue;
    }
    if (sscanf(s, "%15s", word) != 1) {
      continue;
    }
    s += strlen(word);
    if (strcmp(word, "library") == 0) {
      char id[64];
      if (have_lib || sscanf(s, "%63s", id) != 1 ||
          sp_uuid_parse(&p->library, id) != 0) {
        snprintf(err, errlen, "line %d: expected one 'library <uuid>'", line);
        fclose(f);
        return -1;
      }
      have_lib = 1;
    } else if (strcmp(word, "device") == 0) {
      if (parse_device(p, s, err, errlen, line) != 0) {
        fclose(f);
        return -1;
      }
    } else {
      snprintf(err, errlen, "line %d: unknown keyword '%s'", line, word);
      fclose(f);
      return -1;
    }
  }
  fclose(f);
  for (i = 0; i < p->ndev; ++i) {
    leaders += p->dev[i].leader;
  }
  if (!have_lib || leaders != 1) {
    snprintf(err, errlen, "%s: needs a library line and exactly one leader",
             path);
    return -1;
  }
  return 0;
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

static int r_address_hints(const sp_uuid *device, char *buf, size_t buflen,
                           void *ud) {
  const pairing_device *d = pairing_find(ud, device);

  if (!d || !d->address[0]) {
    return SP_ERR_NOT_FOUND;
  }
  if (strlen(d->address) + 1 > buflen) {
    return SP_ERR_NOBUF;
  }
  memcpy(buf, d->address, strlen(d->address) + 1);
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
