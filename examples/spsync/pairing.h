/*
 * pairing.h: the small text file that stands in for a host's device
 * registry in spsync.
 *
 *   # comment (a whole line, or after a space or tab)
 *   library 9a0c3b1e-...                       (exactly one)
 *   device  <uuid> <public key, 64 hex> leader   <ip:port | -> [name]
 *   device  <uuid> <public key, 64 hex> standby  <ip:port | -> [name]
 *   device  <uuid> <public key, 64 hex> follower <ip:port | -> [name]
 *
 * One device is the leader; every listed device is a member.  The leader
 * and the standbys may lead (the registry's may_lead): a leader steps
 * down only for a leadership claim signed by one of them.  The
 * address is where the device listens ("-": it is never dialed).  A host
 * name is resolved when the file is read; one that does not resolve is
 * kept (pairing_warn_unresolved) and resolved again when the device is
 * dialed, as is every name once its answer is PAIRING_RESOLVE_TTL old
 * (an address that changed needs no restart).  Only this device's own
 * address must resolve at start (rt.c: it is bound).  The
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
#define PAIRING_HINTS_LEN 256

typedef struct pairing_device {
  sp_uuid id;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int leader;
  int may_lead; /* role leader or standby */
  char address[64]; /* as written ("" for "-"): what people see */
  /* `address` resolved (a host name through getaddrinfo when the file is
   * read, and again when dialed once stale): the numeric "ip:port" /
   * "[ip6]:port" list the library dials, every address the name has
   * (the transport picks the one of its socket's family).  "" while the
   * name does not resolve. */
  char hints[PAIRING_HINTS_LEN];
  /* Why the name did not resolve the last time ("" if it did). */
  char resolve_err[160];
  /* When it was resolved last (CLOCK_MONOTONIC seconds; 0: numeric, never
   * again). */
  long long resolved_at;
  char name[32]; /* "" if the line names none */
  int line; /* where the pairing file lists it */
} pairing_device;

typedef struct pairing {
  sp_uuid library;
  int have_library;
  pairing_device dev[PAIRING_MAX_DEVICES];
  int ndev;
  int lines; /* lines read */
  int names_only; /* read by pairing_load_names: nothing resolved */
} pairing;

/* Longest line, without its newline; a longer one is refused. */
#define PAIRING_LINE_MAX 511

/* Seconds a resolved host name is trusted before a dial resolves it
 * again; a name that did not resolve is tried again after
 * PAIRING_RETRY_TTL. */
#define PAIRING_RESOLVE_TTL 60
#define PAIRING_RETRY_TTL 5

/* Read `path` into `p`: a complete file (a library line, exactly one
 * leader).  A host name that does not resolve is no error here (see
 * above).  On error returns -1 with a message in `err`. */
int pairing_load(pairing *p, const char *path, char *err, size_t errlen);

/* As pairing_load, for the names alone (spsync status): addresses are
 * neither resolved nor checked, `hints` stay empty, so a host name this
 * machine cannot resolve is no error. */
int pairing_load_names(pairing *p, const char *path, char *err,
                       size_t errlen);

/* As pairing_load, but a file without a library line or leader is not an
 * error (spsync pair add builds one up). */
int pairing_read(pairing *p, const char *path, char *err, size_t errlen);

/* Parse one line (numbered `line`) into `p`, with the checks the reader
 * makes (a second library line, a device or key listed twice, a second
 * leader is left to pairing_load).  `text` is modified.  Returns 0, or -1
 * with a message in `err`. */
int pairing_parse_line(pairing *p, char *text, int line, char *err,
                       size_t errlen);

/* Resolve an address "host:port", "ipv4:port" or "[ipv6]:port" (port
 * 0-65535) into `out`: the numeric addresses, comma-separated, as the
 * library takes them (a name through getaddrinfo; each address once; an
 * IPv6 link-local scope kept as "[fe80::1%eth0]:p").  Returns 0, -1 with
 * a message in `err` for a malformed address, -2 for a name that does
 * not resolve. */
int pairing_resolve(const char *text, char *out, size_t outlen, char *err,
                    size_t errlen);

/* The address of `hints` (as pairing_resolve writes them) a device binds:
 * the first IPv4 one if there is one, else the first.  A name such as
 * localhost often has both ::1 and 127.0.0.1; a peer without an address
 * of its own binds 127.0.0.1:0 and dials the hint of its socket's
 * family, so binding IPv4 whenever the name has it keeps the two sides
 * on one family.  Writes "" for an empty list. */
void pairing_bind_address(const char *hints, char *out, size_t outlen);

/* Print to stderr, once, each device but `self` whose name did not
 * resolve (kept, resolved again when dialed). */
void pairing_warn_unresolved(const pairing *p, const pairing_device *self,
                             const char *path);

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
