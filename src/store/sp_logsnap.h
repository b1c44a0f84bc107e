/*
 * sp_logsnap.h: "log snapshot v1", the bytes both reference stores'
 * snapshot sources produce and sinks install (sys/snapshot.h).
 *
 * Layout (every integer fixed-width big-endian):
 *
 *   header (SP_LS_HEADER_LEN = 120 bytes)
 *     magic "SPLOGSN1" (8), version u32 = 1, flags u32 = 0,
 *     S u64, hash_at[32] (link(S)), epoch u64,
 *     base u64 (the sequence the log was pruned to), base_link[32]
 *     (link(base); zeros for base 0), range_count u64, row_count u64
 *   range_count ranges (SP_LS_RANGE_LEN = 32 bytes each): the committed
 *     set, sorted by (device in memcmp order, lo), disjoint and never
 *     adjacent within a device, 1 <= lo <= hi <= INT64_MAX
 *     device[16], lo u64, hi u64
 *   row_count rows, every retained entry in (base, S], strictly
 *     increasing sequence (gaps allowed), the last one S:
 *     sequence u64, device_id[16], timestamp_ms u64, record_id[16],
 *     change_type u8, version i64 (two's complement), origin_seq u64,
 *     link[32] (the chain hash after the entry), model_type_len u16,
 *     data_len u32, model_type bytes, data bytes
 *     (SP_LS_ROW_FIXED = 103 bytes before the two variable fields)
 *
 *   trailer (SP_LS_TRAILER_LEN = 32 bytes): BLAKE2b-256 (libsodium
 *     crypto_generichash, no key) of every byte before it.  The chain
 *     links cover the rows' entry fields but not origin_seq, nor the
 *     ranges: the trailer makes any changed byte detectable at install.
 *
 * Nothing follows the trailer.  The parser checks every field, that the
 * links chain from base_link (sp_chain_link) up to hash_at at S, and the
 * trailer; anything else is SP_ERR_SNAPSHOT_CORRUPT.
 *
 * The writer produces the bytes at any offset from a source of ranges and
 * rows without holding more than one row; the parser is fed the bytes in
 * order, in pieces of any size.  Internal to the stores.
 */
#ifndef SP_LOGSNAP_H
#define SP_LOGSNAP_H

#include <stddef.h>
#include <stdint.h>

#include "sync_protocol/mem.h"
#include "sync_protocol/sys/store.h"
#include "sync_protocol/types.h"
#include "sp_origin_index.h"

#define SP_LS_MAGIC "SPLOGSN1"
#define SP_LS_VERSION 1u
#define SP_LS_HEADER_LEN 120u
#define SP_LS_RANGE_LEN 32u
#define SP_LS_ROW_FIXED 103u
#define SP_LS_TRAILER_LEN 32u
/* The largest data field a row may carry (its length is a u32). */
#define SP_LS_DATA_MAX ((uint64_t)UINT32_MAX)

typedef struct sp_ls_header {
  sp_seq sequence;
  uint8_t hash_at[SP_HASH_LEN];
  uint64_t epoch;
  sp_seq base;
  uint8_t base_link[SP_HASH_LEN];
  uint64_t range_count;
  uint64_t row_count;
} sp_ls_header;

/* Bytes of a snapshot: the header, its ranges, rows whose model_type
 * and data bytes add up to `var_bytes`, and the trailer.  UINT64_MAX on overflow. */
uint64_t sp_ls_total_size(uint64_t range_count, uint64_t row_count,
                          uint64_t var_bytes);

/* Encode / decode the header (SP_LS_HEADER_LEN bytes).  Decode returns 0
 * or SP_ERR_SNAPSHOT_CORRUPT (bad magic, version, flags or fields). */
void sp_ls_header_encode(const sp_ls_header *h, uint8_t *out);
int sp_ls_header_decode(const uint8_t *in, sp_ls_header *h);

/* -- writer -- */

/* Feeds ranges number `from`, from + 1, ... to `sink` until it returns
 * nonzero (SP_SINK_STOP: stop, no error) or they run out. */
typedef int (*sp_ls_range_sink)(const sp_oidx_range *r, void *sink_ctx);

typedef struct sp_ls_source {
  int (*ranges)(uint64_t from, sp_ls_range_sink sink, void *sink_ctx,
                void *ctx);
  /* Rows with after < sequence <= header.sequence, in order, until the
   * sink returns nonzero (sp_store's read, without a count). */
  int (*rows)(sp_seq after, sp_entry_sink sink, void *sink_ctx, void *ctx);
  void *ctx;
} sp_ls_source;

typedef struct sp_ls_writer sp_ls_writer;

/* A writer of the snapshot `h` whose total size is `total` (from
 * sp_ls_total_size); `step` spaces the seek points (0: 1 MiB).  The
 * source must give the same ranges and rows every time it is asked.
 * 0, SP_ERR_INVALID_ARGUMENT or SP_ERR_NOMEM. */
int sp_ls_writer_new(sp_ls_writer **pw, const sp_ls_header *h, uint64_t total,
                     const sp_ls_source *src, uint64_t step,
                     const sp_mem *mem);
void sp_ls_writer_del(sp_ls_writer *w);

/* Copy bytes [offset, offset + len) into `buf`.  Sequential reads
 * continue where the last ended; others restart at the nearest seek point
 * at or before `offset`.  0, SP_ERR_INVALID_ARGUMENT (past the end),
 * SP_ERR_STORE (the source failed, or gave rows or ranges that do not add
 * up to the size), SP_ERR_NOMEM. */
int sp_ls_writer_read(sp_ls_writer *w, uint64_t offset, uint8_t *buf,
                      size_t len);

/* -- parser -- */

typedef struct sp_ls_sink {
  /* The header, once decoded and checked on its own. */
  int (*header)(const sp_ls_header *h, void *ctx);
  /* Each range, in order. */
  int (*range)(const sp_oidx_range *r, void *ctx);
  /* Each row with its link (checked), in order; the pointers are valid
   * during the call only.  The first row comes after the last range. */
  int (*row)(const sp_entry *e, const uint8_t link[SP_HASH_LEN], void *ctx);
  void *ctx;
} sp_ls_sink;

typedef struct sp_ls_parser sp_ls_parser;

/* A parser of a snapshot of exactly `total` bytes (what the manifest
 * said): a length field reaching past it is corrupt, so a lying length
 * never makes the parser allocate more than the snapshot's size.
 * 0, SP_ERR_INVALID_ARGUMENT or SP_ERR_NOMEM. */
int sp_ls_parser_new(sp_ls_parser **pp, const sp_ls_sink *sink,
                     uint64_t total, const sp_mem *mem);
void sp_ls_parser_del(sp_ls_parser *p);

/* Feed the next `len` bytes.  0, SP_ERR_SNAPSHOT_CORRUPT, SP_ERR_NOMEM, or
 * a sink callback's error (passed through).  After an error the parser
 * refuses everything. */
int sp_ls_parser_feed(sp_ls_parser *p, const uint8_t *data, size_t len);

/* The input is over: 0 if it was one whole snapshot, else
 * SP_ERR_SNAPSHOT_CORRUPT (or the earlier error). */
int sp_ls_parser_finish(sp_ls_parser *p);

#endif /* SP_LOGSNAP_H */
