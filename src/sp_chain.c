/*
 * sp_chain.c: the log's hash chain, BLAKE2b-256 from libsodium.
 *
 * link(n) = BLAKE2b-256(link(n-1) || canonical encoding of entry n), with
 * link(0) all zeros.  The canonical encoding is what sp_enc_entry writes,
 * so a peer in another language can recompute it from docs/protocol.md.
 * The payload is fed to the hash where it lies; only the small head of the
 * entry is encoded into a stack buffer.
 */
#include <sodium.h>

#include "sync_protocol/codec.h"
#include "sync_protocol/errors.h"
#include "sp_enc.h"

int sp_chain_next(const uint8_t prev[SP_HASH_LEN], const sp_entry *entry,
                  uint8_t out[SP_HASH_LEN]) {
  if (!prev || !out || sp_enc_check_entry(entry) != 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return sp_chain_link(prev, entry, out);
}

int sp_chain_link(const uint8_t prev[SP_HASH_LEN], const sp_entry *entry,
                  uint8_t out[SP_HASH_LEN]) {
  crypto_generichash_state st;
  uint8_t head[SP_ENC_ENTRY_HEAD_MAX];
  msgpack_packer pk;
  sp_wr wr;
  size_t n = sp_enc_entry_head_raw(head, entry);

  if (n == 0) {
    sp_wr_fixed(&wr, &pk, head, sizeof(head));
    if (sp_enc_entry_head(&pk, entry) != 0) {
      return SP_ERR_INTERNAL;
    }
    n = wr.len;
  }
  crypto_generichash_init(&st, NULL, 0, SP_HASH_LEN);
  crypto_generichash_update(&st, prev, SP_HASH_LEN);
  crypto_generichash_update(&st, head, n);
  if (entry->data_len) {
    crypto_generichash_update(&st, entry->data, entry->data_len);
  }
  crypto_generichash_final(&st, out, SP_HASH_LEN);
  return 0;
}
