/*
 * cmd_keys.c: spsync keygen and spsync fingerprint.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <sync_protocol/sync_protocol.h>
#include <sync_protocol/identity.h>

#include "cmds.h"

static void print_identity(const sp_identity *id, const char *role,
                           const char *address, const char *name) {
  char uuid[SP_UUID_STRING_LEN + 1], key[2 * SP_PUBLIC_KEY_LEN + 1];
  char fp[SP_FINGERPRINT_LEN + 1];
  uint8_t pk[SP_PUBLIC_KEY_LEN];

  sp_uuid_format(sp_identity_device_id(id), uuid);
  sp_identity_public_key(id, pk);
  sp_public_key_format(pk, key);
  sp_identity_fingerprint(pk, fp, sizeof(fp));
  if (role) {
    /* Ready to paste into a pairing file. */
    printf("device %s %s %s %s%s%s\n", uuid, key, role,
           address ? address : "-", name ? " " : "", name ? name : "");
    return;
  }
  printf("device      %s\npublic key  %s\nfingerprint %s\n", uuid, key, fp);
}

int cmd_keygen(int argc, char **argv) {
  static const struct option opts[] = {{"out", 1, 0, 'o'},
                                       {"device", 1, 0, 'd'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *out = NULL, *device = NULL;
  sp_identity *id;
  sp_uuid uuid;
  int c, rv;

  while ((c = getopt_long(argc, argv, ":o:d:h", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out = optarg; break;
    case 'd': device = optarg; break;
    case 'h':
      printf("usage: spsync keygen --out FILE [--device UUID]\n\n"
             "Create an Ed25519 device key in FILE (mode 0600, never "
             "overwritten)\nfor a random device id, or UUID.\n");
      return 0;
    default: return opt_error("keygen", c, argv);
    }
  }
  if (!out || optind != argc) {
    return usage_error("keygen", "--out FILE is required");
  }
  if (device && sp_uuid_parse(&uuid, device) != 0) {
    return usage_error("keygen", "'%s' is not a UUID", device);
  }
  rv = sp_identity_generate(&id, device ? &uuid : NULL, NULL);
  if (rv == 0) {
    rv = sp_identity_save(id, out);
    if (rv != 0) {
      int err = errno; /* SP_ERR_IO's cause, past the cleanup */
      sp_identity_del(id);
      errno = err;
    }
  }
  if (rv != 0) {
    fprintf(stderr, "spsync keygen: cannot write %s: %s\n", out,
            rv == SP_ERR_EXISTS ? "the file exists"
            : rv == SP_ERR_IO   ? strerror(errno)
                                : sp_strerror(rv));
    return 1;
  }
  print_identity(id, NULL, NULL, NULL);
  sp_identity_del(id);
  return 0;
}

int cmd_fingerprint(int argc, char **argv) {
  static const struct option opts[] = {{"key", 1, 0, 'k'},
                                       {"pairing-line", 1, 0, 'p'},
                                       {"address", 1, 0, 'a'},
                                       {"name", 1, 0, 'n'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *key = NULL, *role = NULL, *address = NULL, *name = NULL;
  sp_identity *id;
  int c, rv;

  while ((c = getopt_long(argc, argv, ":k:p:a:n:h", opts, NULL)) != -1) {
    switch (c) {
    case 'k': key = optarg; break;
    case 'p': role = optarg; break;
    case 'a': address = optarg; break;
    case 'n': name = optarg; break;
    case 'h':
      printf("usage: spsync fingerprint --key FILE "
             "[--pairing-line leader|standby|follower\n"
             "                   [--address HOST:PORT] [--name NAME]]\n\n"
             "Show the device id, public key and fingerprint of a key "
             "file,\nor print its line for a pairing file (NAME: up to 31 "
             "characters, no spaces,\nshown by spsync status "
             "--by-origin; standby: a follower that may lead,\n"
             "docs/pairing.md).\n");
      return 0;
    default: return opt_error("fingerprint", c, argv);
    }
  }
  if (!key || optind != argc ||
      (role && strcmp(role, "leader") && strcmp(role, "standby") &&
       strcmp(role, "follower")) ||
      (name && (!*name || strlen(name) > 31 || strpbrk(name, " \t\n#")))) {
    return usage_error("fingerprint", "--key FILE is required, role is "
                       "leader, standby or follower, a name has 1-31 "
                       "characters and no spaces");
  }
  rv = sp_identity_load(&id, key, NULL);
  if (rv != 0) {
    fprintf(stderr, "spsync fingerprint: cannot load %s: %s\n", key,
            rv == SP_ERR_IO ? strerror(errno) : sp_strerror(rv));
    return 1;
  }
  print_identity(id, role, address, name);
  sp_identity_del(id);
  return 0;
}
