/*
 * codec_bench.c: the codec against bare msgpack-c on one EntriesResponse
 * of 256 entries with 256-byte payloads.
 *
 * Four measurements, interleaved round by round so that a noisy machine
 * slows them alike, each the median of its rounds:
 *   library encode  sp_msg_encode into a reused buffer (checks included)
 *   library decode  sp_decoder_decode with a reused decoder (all checks)
 *   msgpack-c pack  msgpack_sbuffer + msgpack_packer, same layout
 *   msgpack-c unpack msgpack_unpack_next, every field read out
 * A fifth, in the same rounds: the leader's check of the rows it serves
 * (sp_chain_next over the page, from the link before it), reported as
 *   serve-verify: <ns per entry> ratio <V>
 * with V = (library encode + verify time) / library encode time: what the
 * check adds to building a page, store read aside.
 * The last line is the summary:
 *   codec: encode <entries/s> decode <entries/s> ratio <R>
 * with R = (library encode + decode time) / (msgpack-c pack + unpack
 * time); lower is better.
 *
 *   codec_bench [rounds]     (default 21)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "sync_protocol/codec.h"

#define N_ENTRIES 256
#define PAYLOAD 256
/* Messages per timed batch: long enough for the clock, short enough to
 * take many rounds. */
#define BATCH 200

static sp_entry g_entries[N_ENTRIES];
static uint8_t g_payload[N_ENTRIES][PAYLOAD];
static sp_msg g_msg;
static volatile uint64_t g_sink;

static double now_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void make_message(void) {
  static const char *models[] = {"tag", "location", "object", "label"};
  size_t i, k;

  memset(&g_msg, 0, sizeof(g_msg));
  g_msg.type = SP_MSG_ENTRIES_RESPONSE;
  for (k = 0; k < 16; ++k) {
    g_msg.library_id.bytes[k] = (uint8_t)(0x10 + k);
  }
  g_msg.epoch = 3;
  for (i = 0; i < N_ENTRIES; ++i) {
    sp_entry *e = &g_entries[i];
    for (k = 0; k < PAYLOAD; ++k) {
      g_payload[i][k] = (uint8_t)(i * 31 + k);
    }
    for (k = 0; k < 16; ++k) {
      e->device_id.bytes[k] = (uint8_t)(0xa0 + k);
      e->record_id.bytes[k] = (uint8_t)(i + k);
    }
    e->sequence = 100000 + i;
    e->timestamp_ms = 1700000000000ull + i * 17;
    e->model_type = models[i % 4];
    e->model_type_len = strlen(models[i % 4]);
    e->change_type = (sp_change_type)(i % 4);
    e->version = (int64_t)i * 3 - 100;
    e->data = g_payload[i];
    e->data_len = PAYLOAD;
  }
  g_msg.u.entries_response.since_sequence = 99999;
  g_msg.u.entries_response.entries = g_entries;
  g_msg.u.entries_response.entry_count = N_ENTRIES;
  g_msg.u.entries_response.through_sequence = 100000 + N_ENTRIES - 1;
  g_msg.u.entries_response.has_more = 1;
  g_msg.u.entries_response.leader_latest = 200000;
  memset(g_msg.u.entries_response.last_hash, 0x4e, SP_HASH_LEN);
  g_msg.u.entries_response.last_hash_len = SP_HASH_LEN;
}

/* ---- library ---- */

static double lib_encode(uint8_t *buf, size_t cap, size_t *len) {
  double t0 = now_s();
  int i;

  for (i = 0; i < BATCH; ++i) {
    if (sp_msg_encode(&g_msg, buf, cap, len) != 0) {
      fprintf(stderr, "sp_msg_encode failed\n");
      exit(1);
    }
    g_sink += buf[*len - 1];
  }
  return now_s() - t0;
}

static double lib_decode(sp_decoder *dec, const uint8_t *body, size_t len) {
  double t0 = now_s();
  int i;

  for (i = 0; i < BATCH; ++i) {
    sp_msg m;
    const sp_msg_entries_response *r = &m.u.entries_response;
    uint64_t acc = 0;
    size_t k;

    if (sp_decoder_decode(dec, body, len, &m) != 0 ||
        r->entry_count != N_ENTRIES) {
      fprintf(stderr, "sp_decoder_decode failed\n");
      exit(1);
    }
    /* Touch what the bare decoder reads, so both do the same work. */
    for (k = 0; k < r->entry_count; ++k) {
      const sp_entry *e = &r->entries[k];
      acc += e->sequence + e->timestamp_ms + e->model_type_len +
             (uint64_t)e->version + e->data_len + e->change_type +
             e->device_id.bytes[0] + e->record_id.bytes[15] + e->data[0];
    }
    g_sink += acc + r->through_sequence + r->last_hash[0];
  }
  return now_s() - t0;
}

/* What serve_page adds per entry: the link recomputed from the row. */
static double lib_verify(void) {
  uint8_t link[SP_HASH_LEN] = {0}, next[SP_HASH_LEN];
  double t0 = now_s();
  int i;
  size_t k;

  for (i = 0; i < BATCH; ++i) {
    for (k = 0; k < N_ENTRIES; ++k) {
      if (sp_chain_next(link, &g_entries[k], next) != 0) {
        fprintf(stderr, "sp_chain_next failed\n");
        exit(1);
      }
      memcpy(link, next, SP_HASH_LEN);
    }
    g_sink += link[0];
  }
  return now_s() - t0;
}

/* ---- bare msgpack-c, same layout ---- */

static void bare_pack_one(msgpack_packer *pk) {
  const sp_msg_entries_response *r = &g_msg.u.entries_response;
  size_t i;

  msgpack_pack_array(pk, 9);
  msgpack_pack_uint8(pk, (uint8_t)g_msg.type);
  msgpack_pack_bin_with_body(pk, g_msg.library_id.bytes, 16);
  msgpack_pack_uint64(pk, g_msg.epoch);
  msgpack_pack_uint64(pk, r->since_sequence);
  msgpack_pack_array(pk, r->entry_count);
  for (i = 0; i < r->entry_count; ++i) {
    const sp_entry *e = &r->entries[i];
    msgpack_pack_array(pk, 8);
    msgpack_pack_uint64(pk, e->sequence);
    msgpack_pack_bin_with_body(pk, e->device_id.bytes, 16);
    msgpack_pack_uint64(pk, e->timestamp_ms);
    msgpack_pack_str_with_body(pk, e->model_type, e->model_type_len);
    msgpack_pack_bin_with_body(pk, e->record_id.bytes, 16);
    msgpack_pack_uint8(pk, (uint8_t)e->change_type);
    msgpack_pack_int64(pk, e->version);
    msgpack_pack_bin_with_body(pk, e->data, e->data_len);
  }
  msgpack_pack_uint64(pk, r->through_sequence);
  if (r->has_more) {
    msgpack_pack_true(pk);
  } else {
    msgpack_pack_false(pk);
  }
  msgpack_pack_uint64(pk, r->leader_latest);
  msgpack_pack_bin_with_body(pk, r->last_hash, r->last_hash_len);
}

static double bare_pack(msgpack_sbuffer *sb) {
  msgpack_packer pk;
  double t0 = now_s();
  int i;

  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  for (i = 0; i < BATCH; ++i) {
    msgpack_sbuffer_clear(sb); /* reused, like the library's buffer */
    bare_pack_one(&pk);
    g_sink += (uint8_t)sb->data[sb->size - 1];
  }
  return now_s() - t0;
}

static int bare_read(const msgpack_object *o, uint64_t *acc) {
  const msgpack_object *f, *ents;
  uint32_t i;

  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 9) {
    return -1;
  }
  f = o->via.array.ptr;
  if (f[4].type != MSGPACK_OBJECT_ARRAY) {
    return -1;
  }
  {
    uint64_t type = f[0].via.u64, epoch = f[2].via.u64;
    uint64_t since = f[3].via.u64, through = f[5].via.u64;
    uint64_t latest = f[7].via.u64;
    int more = f[6].via.boolean;
    const char *lib = f[1].via.bin.ptr, *hash = f[8].via.bin.ptr;
    *acc += type + epoch + since + through + latest + (uint64_t)more +
            (uint8_t)lib[0] + (uint8_t)hash[0] + f[8].via.bin.size;
  }
  ents = f[4].via.array.ptr;
  for (i = 0; i < f[4].via.array.size; ++i) {
    const msgpack_object *e = ents[i].via.array.ptr;
    uint64_t seq = e[0].via.u64, ts = e[2].via.u64;
    const char *dev = e[1].via.bin.ptr, *rec = e[4].via.bin.ptr;
    const char *model = e[3].via.str.ptr;
    uint32_t model_len = e[3].via.str.size;
    uint64_t ct = e[5].via.u64;
    int64_t ver = e[6].via.i64;
    const char *data = e[7].via.bin.ptr;
    uint32_t data_len = e[7].via.bin.size;
    *acc += seq + ts + model_len + (uint64_t)ver + data_len + ct +
            (uint8_t)dev[0] + (uint8_t)rec[15] + (uint8_t)data[0] +
            (uint8_t)model[0];
  }
  return 0;
}

static double bare_unpack(msgpack_unpacked *u, const uint8_t *body,
                          size_t len) {
  double t0 = now_s();
  int i;

  for (i = 0; i < BATCH; ++i) {
    size_t off = 0;
    uint64_t acc = 0;
    if (msgpack_unpack_next(u, (const char *)body, len, &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        bare_read(&u->data, &acc) != 0) {
      fprintf(stderr, "msgpack_unpack_next failed\n");
      exit(1);
    }
    g_sink += acc;
  }
  return now_s() - t0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 21, r;
  size_t cap, len = 0;
  uint8_t *buf;
  sp_decoder *dec;
  msgpack_sbuffer sb;
  msgpack_unpacked u;
  double *t[5], med[5], per[5];
  static const char *names[4] = {"library encode", "library decode",
                                 "msgpack-c pack", "msgpack-c unpack"};
  int k;

  if (rounds < 1 || rounds > 10000) {
    fprintf(stderr, "usage: codec_bench [rounds]\n");
    return 2;
  }
  make_message();
  cap = sp_msg_encoded_len(&g_msg);
  buf = malloc(cap);
  if (!buf || sp_decoder_new(&dec, NULL) != 0) {
    return 1;
  }
  msgpack_sbuffer_init(&sb);
  msgpack_unpacked_init(&u);
  for (k = 0; k < 5; ++k) {
    t[k] = calloc((size_t)rounds, sizeof(double));
    if (!t[k]) {
      return 1;
    }
  }
  /* Warm up caches and allocators, and check the two encodings agree on
   * everything but the entries array header (array 32 vs smallest). */
  lib_encode(buf, cap, &len);
  bare_pack(&sb);
  if (len - SP_FRAME_HEADER_LEN != sb.size + 2) {
    fprintf(stderr, "layouts differ: %zu vs %zu\n", len - 4, sb.size);
    return 1;
  }
  lib_decode(dec, buf + SP_FRAME_HEADER_LEN, len - SP_FRAME_HEADER_LEN);
  bare_unpack(&u, (const uint8_t *)sb.data, sb.size);
  lib_verify();

  for (r = 0; r < rounds; ++r) {
    t[4][r] = lib_verify();
    /* Alternate the order too, so neither side always runs first. */
    if (r % 2) {
      t[2][r] = bare_pack(&sb);
      t[0][r] = lib_encode(buf, cap, &len);
      t[3][r] = bare_unpack(&u, (const uint8_t *)sb.data, sb.size);
      t[1][r] = lib_decode(dec, buf + SP_FRAME_HEADER_LEN,
                           len - SP_FRAME_HEADER_LEN);
    } else {
      t[0][r] = lib_encode(buf, cap, &len);
      t[2][r] = bare_pack(&sb);
      t[1][r] = lib_decode(dec, buf + SP_FRAME_HEADER_LEN,
                           len - SP_FRAME_HEADER_LEN);
      t[3][r] = bare_unpack(&u, (const uint8_t *)sb.data, sb.size);
    }
  }
  for (k = 0; k < 4; ++k) {
    med[k] = median(t[k], rounds);
    per[k] = (double)BATCH * N_ENTRIES / med[k];
    printf("%-17s %12.0f entries/s  (%.1f us per message, median of %d)\n",
           names[k], per[k], med[k] / BATCH * 1e6, rounds);
  }
  med[4] = median(t[4], rounds);
  printf("serve-verify: %.0f ns per entry ratio %.2f\n",
         med[4] / BATCH / N_ENTRIES * 1e9, (med[0] + med[4]) / med[0]);
  printf("codec: encode %.0f decode %.0f ratio %.2f\n", per[0], per[1],
         (med[0] + med[1]) / (med[2] + med[3]));
  for (k = 0; k < 5; ++k) {
    free(t[k]);
  }
  msgpack_unpacked_destroy(&u);
  msgpack_sbuffer_destroy(&sb);
  sp_decoder_del(dec);
  free(buf);
  return g_sink == 42 ? 3 : 0; /* never: keeps g_sink observable */
}
