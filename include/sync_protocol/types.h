/*
 * sync_protocol - push-based replication of an append-only sync log.
 *
 * types.h: the plain data types every other header uses.  Nothing here
 * allocates or owns memory.
 */
#ifndef SYNC_PROTOCOL_TYPES_H
#define SYNC_PROTOCOL_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Symbol visibility: the shared library exports only what carries SP_API. */
#if defined(_WIN32)
#  define SP_API
#elif defined(__GNUC__) && defined(SP_BUILDING_LIBRARY)
#  define SP_API __attribute__((visibility("default")))
#else
#  define SP_API
#endif

/* Signed size, as ngtcp2_ssize: a byte count or a negative error code. */
typedef ptrdiff_t sp_ssize;

/*
 * Timestamps and durations are nanoseconds on a monotonic clock chosen by
 * the host.  The core never reads a clock: every entry point takes `now`.
 */
typedef uint64_t sp_tstamp;
typedef uint64_t sp_duration;

#define SP_NANOSECONDS ((sp_duration)1ULL)
#define SP_MICROSECONDS ((sp_duration)1000ULL)
#define SP_MILLISECONDS ((sp_duration)1000000ULL)
#define SP_SECONDS ((sp_duration)1000000000ULL)
/* "No deadline": returned by expiry functions when no timer is armed. */
#define SP_TSTAMP_MAX UINT64_MAX

/* A 16-byte UUID (library id, device id, record id), in network order. */
typedef struct sp_uuid {
  uint8_t bytes[16];
} sp_uuid;

/* Length of a hash-chain link (BLAKE2b-256). */
#define SP_HASH_LEN 32

/* Log sequence numbers are assigned by the leader, from 1; 0 means "none". */
typedef uint64_t sp_seq;

typedef enum sp_role {
  SP_ROLE_LEADER = 0,
  SP_ROLE_FOLLOWER = 1
} sp_role;

typedef enum sp_change_type {
  SP_CHANGE_INSERT = 0,
  SP_CHANGE_UPDATE = 1,
  SP_CHANGE_DELETE = 2,
  SP_CHANGE_BULK_INSERT = 3
} sp_change_type;

/*
 * One SyncLogEntry.  The struct never owns what it points at: `model_type`
 * (not NUL-terminated, `model_type_len` bytes) and `data` point into a buffer
 * owned by whoever produced the entry (a decoded frame, a store row), and
 * stay valid only as long as that producer documents.
 */
typedef struct sp_entry {
  sp_seq sequence;
  sp_uuid device_id;
  uint64_t timestamp_ms;
  const char *model_type;
  size_t model_type_len;
  sp_uuid record_id;
  sp_change_type change_type;
  int64_t version;
  const uint8_t *data;
  size_t data_len;
  /*
   * The submission this entry carries (docs/protocol.md, "Writes from
   * every device"): 0 for an entry appended outside sp_handler_submit.
   * Otherwise (device_id, origin_seq) is the submission's origin id,
   * unique in the log: device_id is the device that submitted it (proven
   * by its connection, never taken from a payload) and origin_seq a number
   * that device never uses twice.  Not covered by the hash chain (a peer
   * that speaks only the seed's messages never sees it).
   */
  uint64_t origin_seq;
} sp_entry;

/* Why a leader says incremental sync cannot continue (SyncRequired). */
typedef enum sp_sync_reason {
  /* The follower's position was pruned from the leader's log. */
  SP_SYNC_BEHIND_RETENTION = 1,
  /* The follower claims entries the leader does not have. */
  SP_SYNC_AHEAD_OF_LEADER = 2,
  /* The hash chains of leader and follower disagree. */
  SP_SYNC_DIVERGENCE = 3,
  /* The follower lagged past the leader's retention cap. */
  SP_SYNC_RETENTION_CAP = 4
} sp_sync_reason;

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_TYPES_H */
