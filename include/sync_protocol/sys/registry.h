/*
 * sys/registry.h: the device registry a host implements.
 *
 * The core asks it which devices belong to a library and which one leads;
 * a transport asks it for a device's public key and addresses and which
 * device a proven public key belongs to.  Callback contract: return 0, or
 * SP_ERR_NOT_FOUND when the thing asked for does not exist, or another
 * negative value on failure (reported as SP_ERR_REGISTRY).
 */
#ifndef SYNC_PROTOCOL_SYS_REGISTRY_H
#define SYNC_PROTOCOL_SYS_REGISTRY_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2 added can_write; 3 may_lead. */
#define SP_REGISTRY_VERSION 3
#define SP_REGISTRY_INIT \
  {SP_REGISTRY_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL}

/* Length of a raw Ed25519 public key. */
#define SP_PUBLIC_KEY_LEN 32

typedef struct sp_registry {
  /* SP_REGISTRY_VERSION. */
  unsigned int version;
  /* Passed to every callback; must outlive every user of the registry. */
  void *user_data;

  /* Set `*is_member` to 1 if `device` belongs to `library`, else 0. */
  int (*is_member)(const sp_uuid *library, const sp_uuid *device,
                   int *is_member, void *user_data);

  /* Copy the library's current leader device into `*leader`;
   * SP_ERR_NOT_FOUND if it has none. */
  int (*leader)(const sp_uuid *library, sp_uuid *leader, void *user_data);

  /*
   * List the devices of `library` (the leader included) into `out`, at
   * most `cap` of them, and store the total number in `*count` (which may
   * exceed `cap`: the library then calls again with a larger array).
   */
  int (*members)(const sp_uuid *library, sp_uuid *out, size_t cap,
                 size_t *count, void *user_data);

  /*
   * Copy the device's Ed25519 public key; SP_ERR_NOT_FOUND if unknown.  A
   * device has exactly one key: a device re-keyed (a reinstall) replaces
   * its key here, and a second device presenting the same id (a copied
   * key file, a clone) must not be added under it.  The QUIC transport
   * refuses a peer whose proven key is not the key this returns for the
   * device `device_by_key` names (SP_ERR_DUPLICATE_DEVICE on the refusing
   * side).
   */
  int (*device_key)(const sp_uuid *device,
                    uint8_t public_key[SP_PUBLIC_KEY_LEN], void *user_data);

  /*
   * Find the device that owns `public_key`; SP_ERR_NOT_FOUND if none.
   * Consistent with `device_key`: it names device D only for D's one key.
   */
  int (*device_by_key)(const uint8_t public_key[SP_PUBLIC_KEY_LEN],
                       sp_uuid *device, void *user_data);

  /*
   * Write the device's address hints into `buf` (`buflen` bytes) as a
   * NUL-terminated, comma-separated list of "ipv4:port" or "[ipv6]:port"
   * (a link-local one with its interface: "[fe80::1%eth0]:port").  The
   * QUIC transport dials the first of its socket's family, so give every
   * address a name has.  Called when the device is dialed: a host may
   * resolve names here.  SP_ERR_NOT_FOUND if none are known,
   * SP_ERR_NOBUF if `buf` is short.
   */
  int (*address_hints)(const sp_uuid *device, char *buf, size_t buflen,
                       void *user_data);

  /* -- version 2 -- */

  /*
   * Optional (NULL, or a version-1 registry: every member may write).
   * Set `*can_write` to 1 if member `device` may submit entries to
   * `library`, 0 if it is a read-only member.  A leader asks it for every
   * proposal it admits; a refused one is answered SP_ERR_READ_ONLY.
   */
  int (*can_write)(const sp_uuid *library, const sp_uuid *device,
                   int *can_write, void *user_data);

  /* -- version 3 -- */

  /*
   * Optional (NULL, or an older registry: only the device `leader` names
   * may lead, so failover is the host updating the registry).  Set
   * `*may_lead` to 1 if member `device` may lead `library`, else 0.  A
   * handler asks it for every leadership claim it checks (docs/protocol.md
   * section 15): a leader steps down only for a valid claim by a member
   * allowed here, and a claim by any other device is refused
   * (SP_ERR_UNPROVEN_EPOCH) and logged.
   */
  int (*may_lead)(const sp_uuid *library, const sp_uuid *device,
                  int *may_lead, void *user_data);
} sp_registry;

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_SYS_REGISTRY_H */
