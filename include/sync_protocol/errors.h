/*
 * errors.h: every error code the library returns.
 *
 * Codes are negative ints.  They fall into bands so a caller can act on the
 * band without knowing every code:
 *
 *   -100 .. -199  decode: the peer sent bytes that are not a valid frame.
 *   -200 .. -299  usage: the caller passed something wrong or asked at the
 *                 wrong time.  Nothing changed.
 *   -300 .. -399  protocol: a peer sent a valid frame that breaks the
 *                 protocol, or the protocol refused to continue.
 *   -400 .. -499  transport, identity and key files.
 *   -500 .. -599  host store or registry callbacks.
 *   -900 and below  fatal: the object that returned it must be deleted
 *                 (sp_err_is_fatal() says so).
 *
 * Codes are stable: a code is never renumbered or reused.
 */
#ifndef SYNC_PROTOCOL_ERRORS_H
#define SYNC_PROTOCOL_ERRORS_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sp_error {
  SP_OK = 0,

  /* decode band */
  SP_ERR_TRUNCATED = -101,       /* input ends inside a value or frame */
  SP_ERR_WRONG_TYPE = -102,      /* a field has the wrong msgpack type */
  SP_ERR_UUID_LENGTH = -103,     /* a UUID field is not 16 bytes */
  SP_ERR_ENUM_RANGE = -104,      /* role, change type or reason unknown */
  SP_ERR_OVERSIZE = -105,        /* a string or payload exceeds its limit */
  SP_ERR_FRAME_TOO_LARGE = -106, /* frame length over the configured max */
  SP_ERR_TRAILING_BYTES = -107,  /* bytes left after the message body */
  SP_ERR_UNKNOWN_MESSAGE = -108, /* message type number not known */
  SP_ERR_MSGPACK = -109,         /* not msgpack (reserved byte 0xc1...) */
  SP_ERR_MISSING_FIELD = -110,   /* message array shorter than required */
  SP_ERR_INT_RANGE = -111,       /* integer out of the field's range */
  SP_ERR_EMPTY_FRAME = -112,     /* frame length prefix of zero */
  SP_ERR_ENTRY_ORDER = -113,     /* entries not strictly inside the page */
  SP_ERR_HASH_LENGTH = -114,     /* a hash field is neither 0 nor 32 bytes */
  SP_ERR_UTF8 = -115,            /* a string is not valid UTF-8 */
  SP_ERR_NESTING = -116,         /* msgpack nested deeper than allowed */

  /* usage band */
  SP_ERR_INVALID_ARGUMENT = -201, /* NULL or out-of-range argument */
  SP_ERR_INVALID_STATE = -202,    /* call not allowed in this state */
  SP_ERR_WOULD_BLOCK = -203,      /* transport cannot take bytes now */
  SP_ERR_NOT_FOUND = -204,        /* no such stream, follower or entry */
  SP_ERR_VERSION = -205,          /* struct version not supported */
  SP_ERR_NOBUF = -206,            /* destination buffer too small */
  SP_ERR_EXISTS = -207,           /* already registered / already exists */
  SP_ERR_CLOSED = -208,           /* object or stream already closed */
  SP_ERR_OUTBOX_FULL = -209,      /* the outbox holds its configured most:
                                     nothing was submitted */
  SP_ERR_NOT_SUPPORTED = -210,    /* the store (or peer) lacks what the
                                     call needs (an outbox, an append) */

  /* protocol band */
  SP_ERR_UNKNOWN_LIBRARY = -301,  /* no handler for that library here */
  SP_ERR_NOT_MEMBER = -302,       /* device is not a member of the library */
  SP_ERR_WRONG_ROLE = -303,       /* message not allowed for the role */
  SP_ERR_SEQ_REGRESSION = -304,   /* an acknowledged sequence went back */
  SP_ERR_GAP = -305,              /* entries do not follow what is applied */
  SP_ERR_ACK_BEYOND = -306,       /* ack past the leader's latest sequence */
  SP_ERR_TWO_LEADERS = -307,      /* two leaders met for one library */
  SP_ERR_STALE_EPOCH = -308,      /* message from a fenced (older) leader */
  SP_ERR_CHAIN_MISMATCH = -309,   /* hash chain does not verify */
  SP_ERR_FETCH_LIMIT = -310,      /* fetch limit 0 or above the maximum */
  SP_ERR_PEER_TIMEOUT = -311,     /* peer silent past the heartbeat timeout */
  SP_ERR_SYNC_REQUIRED = -312,    /* incremental sync stopped: full sync */
  SP_ERR_PEER_ERROR = -313,       /* the peer sent an Error frame */
  SP_ERR_UNEXPECTED = -314,       /* message not valid in this state */
  SP_ERR_DEADLINE = -315,         /* a wait's deadline passed */
  SP_ERR_TOO_MANY_REQUESTS = -316,/* too many fetches queued by a peer */
  SP_ERR_LIBRARY_MISMATCH = -317, /* frame for another library on a stream */
  SP_ERR_STALLED = -318,          /* entries or answers did not arrive */
  SP_ERR_CANCELED = -319,         /* wait or request canceled by close */
  SP_ERR_NOT_LEADER = -320,       /* peer is not the library's leader */
  SP_ERR_BACKING_OFF = -321,      /* follower backing off after a store
                                     failure: dial again later */
  SP_ERR_REFUSED = -322,          /* the leader's host refused a submission
                                     (its message says why) */
  SP_ERR_READ_ONLY = -323,        /* the device may not write to the
                                     library */
  SP_ERR_ORIGIN_CONFLICT = -324,  /* origin id already in the log with
                                     other content */
  /* -325 is unused (a draft's code; never sent). */
  SP_ERR_NOT_NEGOTIATED = -326,   /* message or element of a feature the
                                     receiver did not advertise */
  SP_ERR_IMPERSONATION = -327,    /* a proposal names another device as
                                     its origin */
  SP_ERR_BAD_PROPOSAL = -328,     /* a proposed entry is malformed
                                     (sequence set, origin 0, too large,
                                     out of order) */
  SP_ERR_SNAPSHOT_UNAVAILABLE = -329, /* the leader cannot serve that
                                     snapshot (no source, id gone, too
                                     many open) */
  SP_ERR_SNAPSHOT_CORRUPT = -330, /* a snapshot manifest or chunk does not
                                     verify */
  SP_ERR_SNAPSHOT_FAILED = -331,  /* a snapshot recovery gave up after its
                                     bounded restarts */
  SP_ERR_SNAPSHOT_TOO_LARGE = -332, /* the leader's snapshot is larger than
                                     the follower's snapshot_max_bytes */
  SP_ERR_UNPROVEN_EPOCH = -333,   /* an epoch above the receiver's without a
                                     valid leadership claim by a device
                                     allowed to lead */

  /* transport, identity and key-file band */
  SP_ERR_IO = -401,               /* socket or file system call failed */
  SP_ERR_TLS = -402,              /* TLS library failure */
  SP_ERR_HANDSHAKE = -403,        /* QUIC/TLS handshake failed */
  SP_ERR_UNKNOWN_KEY = -404,      /* peer key not in the device registry */
  SP_ERR_ALPN = -405,             /* peer did not offer the sync ALPN */
  SP_ERR_KEYFILE_PERMISSIONS = -406, /* key file readable by group/others */
  SP_ERR_KEYFILE_FORMAT = -407,   /* key file malformed */
  SP_ERR_ADDRESS = -408,          /* address text could not be parsed */
  SP_ERR_CONNECTION_LOST = -409,  /* connection closed under a stream */
  SP_ERR_QUIC = -410,             /* ngtcp2 reported an error */
  SP_ERR_UNREACHABLE = -411,      /* no address known for the device */
  SP_ERR_DUPLICATE_DEVICE = -412, /* another key holds this device id */

  /* host callback band */
  SP_ERR_STORE = -501,            /* a store callback failed */
  SP_ERR_REGISTRY = -502,         /* a registry callback failed */
  SP_ERR_STORE_CORRUPT = -503,    /* store content contradicts itself */

  /* fatal band: delete the object that returned one of these */
  SP_ERR_FATAL = -900,            /* threshold, not returned */
  SP_ERR_NOMEM = -901,            /* an allocation failed */
  SP_ERR_CALLBACK_FAILURE = -902, /* a host event callback returned non-zero */
  SP_ERR_INTERNAL = -903          /* a library invariant broke (a bug) */
} sp_error;

/*
 * sp_strerror returns a static, NUL-terminated English description of
 * `code`.  Unknown codes give "unknown error".  The string is owned by the
 * library and never freed.
 */
SP_API const char *sp_strerror(int code);

/*
 * sp_err_name returns the symbolic name of `code` ("SP_ERR_GAP"), or
 * "SP_ERR_UNKNOWN".  Static storage, owned by the library.
 */
SP_API const char *sp_err_name(int code);

/*
 * sp_err_is_fatal returns non-zero if `code` is in the fatal band: the
 * object that returned it is unusable and must be deleted.
 */
SP_API int sp_err_is_fatal(int code);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_ERRORS_H */
