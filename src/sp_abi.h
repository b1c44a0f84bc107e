/*
 * sp_abi.h: writing a caller's output struct of an older version.
 *
 * A getter fills a full struct of the current version, then copies the
 * bytes of the version the caller compiled against (the caller's buffer
 * may be that small).  Each version's size is where its last field ends:
 * fields are only ever added at the end, so that offset never moves.
 */
#ifndef SP_ABI_H
#define SP_ABI_H

#include <stddef.h>
#include <string.h>

#include "sync_protocol/node.h"
#include "sync_protocol/sys/snapshot.h"
#include "sync_protocol/sys/store.h"
#include "sync_protocol/sys/transport.h"

/* Bytes of `type` up to the end of `field`: the size of the version that
 * ended with that field. */
#define SP_ABI_END(type, field) \
  (offsetof(type, field) + sizeof(((type *)0)->field))

/* Copy the first `n` bytes of the full struct `full` to `out`. */
static inline void sp_abi_copy(void *out, const void *full, size_t n) {
  memcpy(out, full, n);
}

/* Vtables the library fills for the caller (a store's get_vtable, a
 * transport's): the bytes of each version, 0 for one this build does not
 * know.  A new version must add its line here. */
_Static_assert(SP_STORE_VERSION == 5, "sp_abi_store_size");
static inline size_t sp_abi_store_size(int version) {
  switch (version) {
  case 1: return SP_ABI_END(sp_store, state);
  case 2: return SP_ABI_END(sp_store, load_follower_addresses);
  case 3: return SP_ABI_END(sp_store, outbox_anchor);
  case 4: return SP_ABI_END(sp_store, errmsg);
  case 5: return SP_ABI_END(sp_store, durable);
  default: return 0;
  }
}

_Static_assert(SP_TRANSPORT_VERSION == 2, "sp_abi_transport_size");
static inline size_t sp_abi_transport_size(int version) {
  switch (version) {
  case 1: return SP_ABI_END(sp_transport, close_stream);
  case 2: return SP_ABI_END(sp_transport, add_address_hint);
  default: return 0;
  }
}

_Static_assert(SP_SNAPSHOT_SOURCE_VERSION == 1 &&
                   SP_SNAPSHOT_SINK_VERSION == 1,
               "sp_abi_snapshot_size");
static inline size_t sp_abi_snapshot_source_size(int version) {
  return version == 1 ? SP_ABI_END(sp_snapshot_source, close) : 0;
}

static inline size_t sp_abi_snapshot_sink_size(int version) {
  return version == 1 ? SP_ABI_END(sp_snapshot_sink, abort) : 0;
}

/* Output structs the caller allocates: the bytes of each version, 0 for
 * one this build does not know. */
_Static_assert(SP_HANDLER_STATUS_VERSION == 2, "sp_abi_handler_status_size");
static inline size_t sp_abi_handler_status_size(int version) {
  switch (version) {
  case 1: return SP_ABI_END(sp_handler_status, stepped_down);
  case 2: return SP_ABI_END(sp_handler_status, next_attempt);
  default: return 0;
  }
}

#endif /* SP_ABI_H */
