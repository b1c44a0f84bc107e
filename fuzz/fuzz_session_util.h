/*
 * fuzz_session_util.h: the harness shared by fuzz_leader and fuzz_follower
 * (and by gen_session_corpus, which records seeds through it).
 *
 * A "world" is one real sp_node with one handler for library FSU_LIB, and
 * around it everything a host provides, written to be hostile and to check
 * the node at every boundary:
 *
 *   - a capture transport: open_stream hands out ids, send takes all, a
 *     part or nothing (SP_ERR_WOULD_BLOCK) or fails, as the current mode
 *     says; every byte taken is re-parsed with sp_frame_reader + sp_decoder
 *     and checked (valid frames only, library and epoch, message types
 *     allowed for the role, nothing after a refusal, nothing on a stream
 *     that is closed or was never opened, close codes that exist);
 *   - a failing store: the role's sp_mem_store behind a vtable whose
 *     callbacks fail with SP_ERR_STORE while the input's failure mask says
 *     so, and whose `apply` checks what the library hands it (sequence
 *     order, hash chain from the store's head, epoch never lowered,
 *     entries only while bytes from the leader are being fed);
 *   - a registry (the role's devices), an event sink, an allocator, a
 *     wait callback and a request callback, each able to fail on demand.
 *
 * The input is a fixed header (FSU_HDR_LEN bytes, the role decodes it) and
 * then operations, one op byte each (kind = byte >> 4, param = byte & 15)
 * followed by the operands that kind reads.  Kinds 0-3, 5-8, 12 and 14-15
 * are common (fsu_step_common); 4, 9, 10, 11 and 13 belong to the role.
 * Missing operand bytes read as 0, so every byte string is a valid input.
 *
 * Any violation calls fsu_fail(), which prints the reason and aborts, so
 * libFuzzer reports it.
 */
#ifndef FUZZ_SESSION_UTIL_H
#define FUZZ_SESSION_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/sync_protocol.h"

/* ---- limits ---- */

#define FSU_HDR_LEN 8
#define FSU_MAX_STREAMS 48
#define FSU_MAX_OPS 4096
/* Entries a role's logs may hold (shadow arrays are this big). */
#define FSU_MAX_SEQ 600
/* More frames than this from one op means the node is looping. */
#define FSU_MAX_FRAMES_PER_OP 20000

/* ---- op kinds ---- */

enum {
  FSU_OP_FEED = 0x0,      /* len = 1 + (param << 8 | u8); then len bytes */
  FSU_OP_WRITABLE = 0x1,  /* param & 1: every owed stream, else current */
  FSU_OP_MODE = 0x2,      /* send mode = param & 3, part size param >> 2 */
  FSU_OP_TIME = 0x3,      /* advance by fsu_time_step(param); expiry */
  FSU_OP_ROLE4 = 0x4,     /* leader: append; follower: request_entries */
  FSU_OP_CLOSE = 0x5,     /* transport closes the current stream */
  FSU_OP_OPEN = 0x6,      /* a peer opens a stream (becomes current) */
  FSU_OP_SELECT = 0x7,    /* current = u8 % streams (param 15: newest) */
  FSU_OP_FAIL = 0x8,      /* failure mask = u8; param & 1: one shot */
  FSU_OP_API = 0x9,       /* role API call, param selects; operands */
  FSU_OP_ROLE10 = 0xa,    /* leader: prune; follower: leader log append */
  FSU_OP_SYNTH = 0xb,     /* a synthesized valid frame from the peer */
  FSU_OP_DIAL = 0xc,      /* open_stream fails (p&1); streams connect (p&2) */
  FSU_OP_ROLE13 = 0xd,    /* follower: leader epoch; leader: peer epoch */
  FSU_OP_FEED_SHORT = 0xe /* 0xe/0xf: len = 1 + (byte & 31) */
};

/* Send modes of the capture transport. */
enum {
  FSU_SEND_ALL = 0,
  FSU_SEND_PART = 1,
  FSU_SEND_BLOCK = 2,
  FSU_SEND_FAIL = 3
};

/* Failure mask bits. */
enum {
  FSU_FAIL_READ = 1 << 0,
  FSU_FAIL_BOUNDS = 1 << 1,
  FSU_FAIL_HASH_AT = 1 << 2,
  FSU_FAIL_APPLY = 1 << 3,
  FSU_FAIL_STATE = 1 << 4,
  FSU_FAIL_REGISTRY = 1 << 5,
  FSU_FAIL_EVENT = 1 << 6, /* on_event, wait and request callbacks */
  FSU_FAIL_ALLOC = 1 << 7  /* the node's allocator */
};

/* Devices.  Index 0 leads the library in both targets' registries. */
enum { FSU_X = 0, FSU_F1 = 1, FSU_F2 = 2, FSU_N = 3, FSU_NDEV = 4 };

extern const sp_uuid fsu_lib;       /* the library L */
extern const sp_uuid fsu_other_lib; /* a library nobody opened */
extern const sp_uuid fsu_dev[FSU_NDEV];

/* ---- input cursor ---- */

typedef struct fsu_in {
  const uint8_t *p;
  size_t n;
} fsu_in;

uint8_t fsu_u8(fsu_in *in);
/* Up to `want` bytes; stores how many in *got. */
const uint8_t *fsu_bytes(fsu_in *in, size_t want, size_t *got);

/* ---- failure ---- */

void fsu_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

/* ---- deterministic entries ---- */

/* The harness's own hot helpers (building and comparing entries) carry no
 * coverage instrumentation: their loops are not the library's behaviour,
 * and traced comparisons in them took a third of every execution. */
#if defined(__clang__) && __clang_major__ >= 13
#define FSU_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define FSU_NO_COVERAGE
#endif

/* Payload size of class `cls` (0..15). */
size_t fsu_payload_size(unsigned cls);
/* Entry `seq` of content class `cls`; `buf` holds its payload (at least
 * fsu_payload_size(cls) bytes) and must outlive the entry. */
FSU_NO_COVERAGE void fsu_make_entry(sp_entry *e, sp_seq seq, unsigned cls,
                                    uint8_t *buf);
/* Largest payload of any class. */
#define FSU_PAYLOAD_MAX 5000

FSU_NO_COVERAGE int fsu_entry_equal(const sp_entry *a, const sp_entry *b);

/* ---- the world ---- */

typedef struct fsu_world fsu_world;

/* What the generator learns of the node's transport traffic. */
typedef struct fsu_tap {
  void *ud;
  /* The node opened stream `idx` to `peer`. */
  void (*opened)(void *ud, size_t idx, const sp_uuid *peer);
  /* The transport took these bytes of stream `idx`. */
  void (*sent)(void *ud, size_t idx, const uint8_t *data, size_t len);
  /* The node closed stream `idx`. */
  void (*closed)(void *ud, size_t idx, int code);
} fsu_tap;

typedef struct fsu_stream {
  uint64_t id;
  sp_uuid peer;
  int peer_index;   /* into fsu_dev, or -1 */
  int local;        /* the node opened it */
  int node_closed;  /* the node called close_stream */
  int tr_closed;    /* the harness reported it closed */
  int connecting;   /* local, not writable yet: send would block */
  int owed;         /* a writable call was promised */
  int store_gen;    /* w->store_gen when the stream was opened */
  /* node -> peer: what the transport took */
  sp_frame_reader *out_rd;
  int error_sent;   /* an Error frame went out */
  int error_code;
  size_t frames_out;
  /* peer -> node: mirror of what was fed, for the first frame's library */
  sp_frame_reader *in_rd;
  int in_state;     /* 0 nothing yet, 1 first frame named in_lib, 2 bad */
  sp_uuid in_lib;
} fsu_stream;

/* Role hooks. */
typedef struct fsu_role_ops {
  /* Check one message the node sent on `s`. */
  void (*check_sent)(fsu_world *w, fsu_stream *s, const sp_msg *msg);
  /* Check invariants after every op (and after setup). */
  void (*check_state)(fsu_world *w);
  /* Check an event (after the common checks). */
  void (*check_event)(fsu_world *w, const sp_event *ev);
} fsu_role_ops;

struct fsu_world {
  sp_role role;
  int self; /* index into fsu_dev */
  const fsu_role_ops *ops;
  void *role_ctx;
  const fsu_tap *tap;

  sp_node *node;
  sp_handler *h;
  size_t max_frame;
  sp_tstamp now;

  /* Allocator (fails while FSU_FAIL_ALLOC is set). */
  sp_mem mem;
  long live_allocs;

  /* Store: the real one and its failing, checking wrapper. */
  sp_mem_store *store;
  sp_store inner;
  sp_store wrapped;
  unsigned fail_mask;
  int fail_once;
  /* Bumped when the host replaces the store's content (a full sync). */
  int store_gen;

  /* Registry: which device the registry names as leader (-1: none), and
   * every device it ever named (entries may come only from those). */
  int reg_leader;
  int ever_leader[FSU_NDEV];

  /* Transport. */
  fsu_stream streams[FSU_MAX_STREAMS];
  size_t nstreams;
  size_t cur;
  uint64_t next_id;
  int send_mode;
  size_t part;
  int open_fail;
  int connect_mode;
  sp_decoder *dec;
  /* Inside sp_node_stream_data for this stream (-1: not feeding). */
  long feeding;
  int in_node;
  int teardown;

  /* Callbacks owed. */
  long waits_pending;
  long requests_pending;

  /* Frames sent during the current op (a livelock bound). */
  long frames_in_op;
  /* A public call returned a fatal code: the input ends. */
  int fatal;
  long ops_done;
  /* Calls of the store's apply that reached the real store. */
  long applies;
};

/* Create the world's node (registry, transport, events, allocator) and
 * stores; the role then fills the store and calls fsu_world_open. */
void fsu_world_init(fsu_world *w, sp_role role, int self,
                    const fsu_role_ops *ops, void *role_ctx,
                    const fsu_tap *tap, size_t max_frame, uint64_t seed,
                    int log);
/* sp_handler_new with `cfg` over the wrapped store; 0 or the input ends. */
int fsu_world_open(fsu_world *w, const sp_handler_config *cfg,
                   unsigned fail_mask);
/* Delete node, handler and store; check nothing is owed. */
void fsu_world_free(fsu_world *w);

/* Run one common op (kind in the op byte); returns 1 if handled. */
int fsu_step_common(fsu_world *w, uint8_t op, fsu_in *in);
/* Check a public call's return code: `rv` must be one of the codes listed
 * (the list ends with FSU_END), or a fatal code when `fatal_ok`.  A fatal
 * code ends the input (w->fatal).  Returns rv. */
#define FSU_END 1000
int fsu_rc(fsu_world *w, const char *what, int rv, int fatal_ok, ...);

/* Run a public call with w->in_node set (callbacks check it). */
#define FSU_CALL(w, rv, call) \
  do {                        \
    (w)->in_node = 1;         \
    (rv) = (call);            \
    (w)->in_node = 0;         \
  } while (0)

/* Calls naming the current stream with the wrong peer (or NULL data):
 * they must be refused and change nothing. */
void fsu_wrong_peer_calls(fsu_world *w, unsigned which);

/* Feed bytes on the current stream as its peer. */
void fsu_feed(fsu_world *w, const uint8_t *data, size_t len);
/* Encode `msg` and feed it on the current stream. */
void fsu_feed_msg(fsu_world *w, const sp_msg *msg);
/* Advance time by `d` (monotonic) and run the node's timers. */
void fsu_advance(fsu_world *w, sp_duration d);
sp_duration fsu_time_step(unsigned param);

fsu_stream *fsu_current(fsu_world *w);
/* The handler's status (aborts if the call fails). */
void fsu_status(fsu_world *w, sp_handler_status *st);

/* Store state read without the failure mask. */
void fsu_store_state(fsu_world *w, sp_store_state *st);

/* Callbacks for waits and requests (count what is owed). */
int fsu_wait_cb(sp_handler *h, sp_seq seq, int status, size_t acked,
                void *ud);
int fsu_request_cb(sp_handler *h, int status, sp_seq applied, void *ud);

/* Role entry points (fuzz_leader.c, fuzz_follower.c). */
fsu_world *fsu_leader_new(const uint8_t hdr[FSU_HDR_LEN], const fsu_tap *tap);
int fsu_leader_step(fsu_world *w, fsu_in *in);
void fsu_leader_del(fsu_world *w);
fsu_world *fsu_follower_new(const uint8_t hdr[FSU_HDR_LEN],
                            const fsu_tap *tap);
int fsu_follower_step(fsu_world *w, fsu_in *in);
void fsu_follower_del(fsu_world *w);
/* The follower world's leader log (for the generator). */
sp_mem_store *fsu_follower_leader_log(fsu_world *w);

/* A role's entry points, and running a whole input with them (the
 * LLVMFuzzerTestOneInput of each target). */
typedef struct fsu_role_entry {
  fsu_world *(*create)(const uint8_t hdr[FSU_HDR_LEN], const fsu_tap *tap);
  int (*step)(fsu_world *w, fsu_in *in);
  void (*destroy)(fsu_world *w);
} fsu_role_entry;

int fsu_run_input(const fsu_role_entry *role, const uint8_t *data,
                  size_t size);

#endif /* FUZZ_SESSION_UTIL_H */
