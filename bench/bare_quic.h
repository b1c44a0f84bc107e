/*
 * bare_quic.h: a bare ngtcp2 + GnuTLS transfer, the transport-only
 * reference of throughput_bench (bare_quic.c says what it matches).
 */
#ifndef BARE_QUIC_H
#define BARE_QUIC_H

#include <stdint.h>

typedef struct bare_quic_result {
  /* Stream bytes the receiver got, between its first byte and the FIN. */
  uint64_t stream_bytes;
  double seconds;
  double stream_mb_s;
  /* UDP payload bytes the sender sent in that time, per second, MB. */
  double wire_mb_s;
  uint64_t datagrams;
  uint64_t send_calls;
  int gso;
} bare_quic_result;

/* Move `bytes` stream bytes from a sender process to a receiver process
 * over one bidirectional stream on 127.0.0.1.  Returns 0, or -1 if the
 * transfer failed (the reason is on stderr). */
int bare_quic_run(uint64_t bytes, bare_quic_result *res);

#endif
