/*
 * entry_json.h: one sync-log entry from one line of spsync's JSON lines
 * input (spsync leader/follower --input; the format is in --help and the
 * README):
 *
 *   {"model_type": "tag", "record_id": "<uuid>", "change_type": "insert",
 *    "version": 1, "timestamp_ms": 1700000000000, "data": "text"}
 *
 * model_type (string, 1..255 bytes), change_type ("insert", "update",
 * "delete", "bulk_insert") and version (integer) are required; record_id
 * (UUID text; random if absent), timestamp_ms (integer >= 0; now if
 * absent) and one of data (a string, stored as its UTF-8 bytes) or
 * data_hex (hex digits) are optional.  Any other key is refused.
 */
#ifndef SPSYNC_ENTRY_JSON_H
#define SPSYNC_ENTRY_JSON_H

#include <stddef.h>

#include <sync_protocol/sync_protocol.h>

/* Largest payload one input line may carry. */
#define ENTRY_JSON_MAX_DATA (1024u * 1024u)

/*
 * Fill `*e` from `line` (`len` bytes, decoded in place: the entry's
 * pointers point into it).  `now_ms` is the default timestamp.  Returns
 * 0, 1 for a blank line (nothing to write), or -1 with a message in `err`.
 */
int entry_from_json(char *line, size_t len, uint64_t now_ms, sp_entry *e,
                    char *err, size_t errlen);

/* A random (version 4) UUID, from libsodium. */
void entry_random_uuid(sp_uuid *out);

#endif
