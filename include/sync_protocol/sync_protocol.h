/*
 * sync_protocol.h: the umbrella header of the core library.
 *
 * sync_protocol replicates a per-library, append-only sync log from a
 * leader device to its followers by pushing notifications instead of
 * polling.  The core is sans-I/O: the host hands in the store, the device
 * registry, the clock and the transport.
 *
 * What a host calls:        node.h, codec.h, uuid.h, mem_transport.h,
 *                           mem_store.h
 * What a host implements:   sys/store.h, sys/registry.h, sys/transport.h,
 *                           events.h
 * Optional modules, included on their own: identity.h, quic.h,
 * sqlite_store.h.
 */
#ifndef SYNC_PROTOCOL_H
#define SYNC_PROTOCOL_H

#include "sync_protocol/types.h"
#include "sync_protocol/errors.h"
#include "sync_protocol/mem.h"
#include "sync_protocol/uuid.h"
#include "sync_protocol/version.h"
#include "sync_protocol/codec.h"
#include "sync_protocol/events.h"
#include "sync_protocol/sys/store.h"
#include "sync_protocol/sys/snapshot.h"
#include "sync_protocol/sys/registry.h"
#include "sync_protocol/sys/transport.h"
#include "sync_protocol/node.h"
#include "sync_protocol/mem_transport.h"
#include "sync_protocol/mem_store.h"
#include "sync_protocol/store_verify.h"

#endif /* SYNC_PROTOCOL_H */
