/*
 * sp_err.c: names and descriptions of the error codes.
 */
#include "sync_protocol/errors.h"

typedef struct err_info {
  int code;
  const char *name;
  const char *text;
} err_info;

/* Kept in the order of errors.h; tests check that every code is here. */
static const err_info errs[] = {
    {SP_OK, "SP_OK", "success"},
    {SP_ERR_TRUNCATED, "SP_ERR_TRUNCATED", "input ends inside a value"},
    {SP_ERR_WRONG_TYPE, "SP_ERR_WRONG_TYPE", "field has the wrong type"},
    {SP_ERR_UUID_LENGTH, "SP_ERR_UUID_LENGTH", "UUID is not 16 bytes"},
    {SP_ERR_ENUM_RANGE, "SP_ERR_ENUM_RANGE", "enumeration value out of range"},
    {SP_ERR_OVERSIZE, "SP_ERR_OVERSIZE", "string or payload too long"},
    {SP_ERR_FRAME_TOO_LARGE, "SP_ERR_FRAME_TOO_LARGE",
     "frame larger than the maximum frame size"},
    {SP_ERR_TRAILING_BYTES, "SP_ERR_TRAILING_BYTES",
     "trailing bytes after the message"},
    {SP_ERR_UNKNOWN_MESSAGE, "SP_ERR_UNKNOWN_MESSAGE", "unknown message type"},
    {SP_ERR_MSGPACK, "SP_ERR_MSGPACK", "invalid msgpack"},
    {SP_ERR_MISSING_FIELD, "SP_ERR_MISSING_FIELD",
     "message has fewer fields than required"},
    {SP_ERR_INT_RANGE, "SP_ERR_INT_RANGE", "integer out of range"},
    {SP_ERR_EMPTY_FRAME, "SP_ERR_EMPTY_FRAME", "frame of length zero"},
    {SP_ERR_ENTRY_ORDER, "SP_ERR_ENTRY_ORDER",
     "entries out of order or outside the response range"},
    {SP_ERR_HASH_LENGTH, "SP_ERR_HASH_LENGTH", "hash is not 0 or 32 bytes"},
    {SP_ERR_UTF8, "SP_ERR_UTF8", "string is not valid UTF-8"},
    {SP_ERR_NESTING, "SP_ERR_NESTING", "msgpack nested too deeply"},
    {SP_ERR_INVALID_ARGUMENT, "SP_ERR_INVALID_ARGUMENT", "invalid argument"},
    {SP_ERR_INVALID_STATE, "SP_ERR_INVALID_STATE",
     "operation not allowed in this state"},
    {SP_ERR_WOULD_BLOCK, "SP_ERR_WOULD_BLOCK", "operation would block"},
    {SP_ERR_NOT_FOUND, "SP_ERR_NOT_FOUND", "not found"},
    {SP_ERR_VERSION, "SP_ERR_VERSION", "unsupported struct version"},
    {SP_ERR_NOBUF, "SP_ERR_NOBUF", "buffer too small"},
    {SP_ERR_EXISTS, "SP_ERR_EXISTS", "already exists"},
    {SP_ERR_CLOSED, "SP_ERR_CLOSED", "already closed"},
    {SP_ERR_OUTBOX_FULL, "SP_ERR_OUTBOX_FULL",
     "outbox full: nothing was submitted"},
    {SP_ERR_NOT_SUPPORTED, "SP_ERR_NOT_SUPPORTED",
     "not supported by the store or peer"},
    {SP_ERR_UNKNOWN_LIBRARY, "SP_ERR_UNKNOWN_LIBRARY", "unknown library"},
    {SP_ERR_NOT_MEMBER, "SP_ERR_NOT_MEMBER",
     "device is not a member of the library"},
    {SP_ERR_WRONG_ROLE, "SP_ERR_WRONG_ROLE",
     "message not allowed for this role"},
    {SP_ERR_SEQ_REGRESSION, "SP_ERR_SEQ_REGRESSION", "sequence went backwards"},
    {SP_ERR_GAP, "SP_ERR_GAP", "entries do not follow the applied sequence"},
    {SP_ERR_ACK_BEYOND, "SP_ERR_ACK_BEYOND",
     "acknowledgement beyond the leader's latest sequence"},
    {SP_ERR_TWO_LEADERS, "SP_ERR_TWO_LEADERS", "two leaders for one library"},
    {SP_ERR_STALE_EPOCH, "SP_ERR_STALE_EPOCH", "message from a stale epoch"},
    {SP_ERR_CHAIN_MISMATCH, "SP_ERR_CHAIN_MISMATCH",
     "hash chain mismatch (divergence)"},
    {SP_ERR_FETCH_LIMIT, "SP_ERR_FETCH_LIMIT", "fetch limit out of range"},
    {SP_ERR_PEER_TIMEOUT, "SP_ERR_PEER_TIMEOUT", "peer timed out"},
    {SP_ERR_SYNC_REQUIRED, "SP_ERR_SYNC_REQUIRED", "full sync required"},
    {SP_ERR_PEER_ERROR, "SP_ERR_PEER_ERROR", "peer reported an error"},
    {SP_ERR_UNEXPECTED, "SP_ERR_UNEXPECTED", "unexpected message"},
    {SP_ERR_DEADLINE, "SP_ERR_DEADLINE", "deadline passed"},
    {SP_ERR_TOO_MANY_REQUESTS, "SP_ERR_TOO_MANY_REQUESTS",
     "too many outstanding requests"},
    {SP_ERR_LIBRARY_MISMATCH, "SP_ERR_LIBRARY_MISMATCH",
     "frame for another library on this stream"},
    {SP_ERR_STALLED, "SP_ERR_STALLED",
     "requested entries or proposal answers did not arrive"},
    {SP_ERR_CANCELED, "SP_ERR_CANCELED", "canceled"},
    {SP_ERR_NOT_LEADER, "SP_ERR_NOT_LEADER",
     "peer is not the library's leader"},
    {SP_ERR_BACKING_OFF, "SP_ERR_BACKING_OFF",
     "follower backing off after a store failure"},
    {SP_ERR_REFUSED, "SP_ERR_REFUSED", "submission refused by the leader"},
    {SP_ERR_READ_ONLY, "SP_ERR_READ_ONLY",
     "device may not write to the library"},
    {SP_ERR_ORIGIN_CONFLICT, "SP_ERR_ORIGIN_CONFLICT",
     "origin id already in the log with other content"},
    {SP_ERR_NOT_NEGOTIATED, "SP_ERR_NOT_NEGOTIATED",
     "feature not negotiated with the peer"},
    {SP_ERR_IMPERSONATION, "SP_ERR_IMPERSONATION",
     "proposal names another device as its origin"},
    {SP_ERR_BAD_PROPOSAL, "SP_ERR_BAD_PROPOSAL", "malformed proposed entry"},
    {SP_ERR_SNAPSHOT_UNAVAILABLE, "SP_ERR_SNAPSHOT_UNAVAILABLE",
     "snapshot not available from the leader"},
    {SP_ERR_SNAPSHOT_CORRUPT, "SP_ERR_SNAPSHOT_CORRUPT",
     "snapshot manifest or chunk does not verify"},
    {SP_ERR_SNAPSHOT_FAILED, "SP_ERR_SNAPSHOT_FAILED",
     "snapshot recovery gave up after its restarts"},
    {SP_ERR_SNAPSHOT_TOO_LARGE, "SP_ERR_SNAPSHOT_TOO_LARGE",
     "snapshot larger than the follower accepts"},
    {SP_ERR_UNPROVEN_EPOCH, "SP_ERR_UNPROVEN_EPOCH",
     "epoch not proven by a leadership claim"},
    {SP_ERR_IO, "SP_ERR_IO", "I/O error"},
    {SP_ERR_TLS, "SP_ERR_TLS", "TLS error"},
    {SP_ERR_HANDSHAKE, "SP_ERR_HANDSHAKE", "handshake failed"},
    {SP_ERR_UNKNOWN_KEY, "SP_ERR_UNKNOWN_KEY", "unknown device key"},
    {SP_ERR_ALPN, "SP_ERR_ALPN", "ALPN mismatch"},
    {SP_ERR_KEYFILE_PERMISSIONS, "SP_ERR_KEYFILE_PERMISSIONS",
     "key file is accessible by group or others"},
    {SP_ERR_KEYFILE_FORMAT, "SP_ERR_KEYFILE_FORMAT", "malformed key file"},
    {SP_ERR_ADDRESS, "SP_ERR_ADDRESS", "invalid address"},
    {SP_ERR_CONNECTION_LOST, "SP_ERR_CONNECTION_LOST", "connection lost"},
    {SP_ERR_QUIC, "SP_ERR_QUIC", "QUIC error"},
    {SP_ERR_UNREACHABLE, "SP_ERR_UNREACHABLE", "device unreachable"},
    {SP_ERR_DUPLICATE_DEVICE, "SP_ERR_DUPLICATE_DEVICE",
     "another key already holds this device id"},
    {SP_ERR_STORE, "SP_ERR_STORE", "store callback failed"},
    {SP_ERR_REGISTRY, "SP_ERR_REGISTRY", "registry callback failed"},
    {SP_ERR_STORE_CORRUPT, "SP_ERR_STORE_CORRUPT", "store is inconsistent"},
    {SP_ERR_NOMEM, "SP_ERR_NOMEM", "out of memory"},
    {SP_ERR_CALLBACK_FAILURE, "SP_ERR_CALLBACK_FAILURE",
     "host callback failed"},
    {SP_ERR_INTERNAL, "SP_ERR_INTERNAL", "internal error"},
};

static const err_info *find(int code) {
  size_t i;

  for (i = 0; i < sizeof(errs) / sizeof(errs[0]); ++i) {
    if (errs[i].code == code) {
      return &errs[i];
    }
  }
  return NULL;
}

const char *sp_strerror(int code) {
  const err_info *e = find(code);
  return e ? e->text : "unknown error";
}

const char *sp_err_name(int code) {
  const err_info *e = find(code);
  return e ? e->name : "SP_ERR_UNKNOWN";
}

int sp_err_is_fatal(int code) { return code < SP_ERR_FATAL; }
