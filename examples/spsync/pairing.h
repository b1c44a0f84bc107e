/*
 * pairing.h: the small text file that stands in for a host's device
 * registry in spsync.
 *
 *   # comment
 *   library 9a0c3b1e-...                       (exactly one)
 *   device  <uuid> <public key, 64 hex> leader   <ip:port | -> [name]
 *   device  <uuid> <public key, 64 hex> standby  <ip:port | -> [name]
 *   device  <uuid> <public key, 64 hex> follower <ip:port | -> [name]
 *
 * One device is the leader; every listed device is a member.  The leader
 * and the standbys may lead (the registry's may_lead): a leader steps
 * down only for a leadership claim signed by one of them.  The
 * address is where the device listens ("-": it is never dialed).  The
 * optional name (no spaces) is what spsync status --by-origin shows.  A
 * device id is listed once and a key once: a device has exactly one key
 * (a copied key file or a reinstall under the same id is refused here,
 * before two devices could be taken for one).
 */
#ifndef SPSYNC_PAIRING_H
#define SPSYNC_PAIRING_H

#include <sync_protocol/sync_protocol.h>
#include <sync_protocol/identity.h>

#define PAIRING_MAX_DEVICES 128

typedef struct pairing_device {
  sp_uuid id;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int leader;
  int may_lead; /* role leader or standby */
  char address[64];
  char name[32]; /* "" if the line names none */
  int line; /* where the pairing file lists it */
} pairing_device;

typedef struct pairing {
  sp_uuid library;
  pairing_device dev[PAIRING_MAX_DEVICES];
  int ndev;
} pairing;

/* Read `path` into `p`.  On error returns -1 with a message in `err`. */
int pairing_load(pairing *p, const char *path, char *err, size_t errlen);

/* The registry vtable over `p` (which must outlive its users). */
void pairing_registry(pairing *p, sp_registry *out);

/* The leader's entry, or NULL. */
const pairing_device *pairing_leader(const pairing *p);
const pairing_device *pairing_find(const pairing *p, const sp_uuid *id);

/* Make the listed device `id` the leader the registry names (a leader
 * that stepped down follows the device that proved a newer epoch).
 * Returns 0, or -1 if `id` is not listed. */
int pairing_set_leader(pairing *p, const sp_uuid *id);

#endif
