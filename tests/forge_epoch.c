/*
 * forge_epoch.c: a paired follower that tries to depose its leader with
 * one frame (issue 16 item 1), for tests/quic_forge_epoch_test.sh.
 *
 *   forge_epoch --key FILE --pairing FILE
 *               (--no-claim | --self-claim | --bad-sig --claim-key FILE |
 *                --valid-claim --claim-key FILE) [--timeout SECONDS]
 *
 * It dials the pairing file's leader over QUIC with its own device key
 * and opens a stream as a follower would: a Heartbeat naming the library
 * with the features element, then FetchEntries.  The first frame the
 * leader answers with gives the leader's epoch E; it then sends a
 * Heartbeat with epoch E + 1 and
 *   --no-claim    no leadership claim;
 *   --self-claim  a claim for E + 1 signed with its own key: the
 *                 signature verifies, but a follower may not lead;
 *   --bad-sig     a claim for E + 1 by the device of --claim-key (a
 *                 standby, which may lead), signed with that key, one
 *                 signature byte then flipped;
 *   --valid-claim the same claim unharmed: the control, which relays a
 *                 real proof and must depose the leader.
 * It prints what came back (the Error frame's code and message, the
 * stream's close code) and exits 0 only if the leader answered with an
 * Error frame carrying SP_ERR_UNPROVEN_EPOCH within 1 s of the forged
 * frame (--valid-claim: only if it closed the stream within 1 s without
 * that refusal); 1 otherwise (the stream reset with SP_ERR_STALE_EPOCH is
 * what a deposed leader does), 2 on a usage error.
 *
 * It is a raw client, like G in sp_quic_refusal_node_test.c: an endpoint
 * with no node attached, whose stream it writes through the transport
 * vtable and reads from the stream's receive buffer, so the frames are
 * exactly the ones built here with sp_msg_encode.
 */
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_protocol/identity.h"
#include "sync_protocol/quic.h"
#include "sync_protocol/sync_protocol.h"
#include "pairing.h"
#include "sp_buf.h"
#include "transport/quic/sp_quic_int.h"

#define REPLY_WINDOW SP_SECONDS

enum variant { V_NONE, V_NO_CLAIM, V_SELF_CLAIM, V_BAD_SIG, V_VALID };

typedef struct forge {
  sp_quic_endpoint *ep;
  sp_transport tr;
  uint64_t sid;
  sp_frame_reader *rd;
  sp_decoder *dec;
  /* The leader's epoch, from its first frame on the stream. */
  int have_epoch;
  uint64_t epoch;
  sp_tstamp forged_at;
  /* The first Error frame after the forgery, and when. */
  int got_error;
  int32_t error_code;
  char error_msg[SP_MAX_ERROR_MESSAGE_LEN + 1];
  sp_tstamp error_at;
  /* An Error frame before the forgery went out (we were refused). */
  int refused_early;
  int closed;
  int close_reason;
  sp_tstamp closed_at;
  int failed;
} forge;

static void on_log(sp_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  fprintf(stderr, "forge_epoch: transport: %s\n", msg);
}

static int send_msg(forge *f, const sp_msg *m) {
  uint8_t buf[1024];
  size_t n = 0;
  sp_ssize r;
  int rv = sp_msg_encode(m, buf, sizeof(buf), &n);

  if (rv != 0) {
    fprintf(stderr, "forge_epoch: encoding type %d: %s\n", (int)m->type,
            sp_err_name(rv));
    return -1;
  }
  /* The stream buffers what it cannot send yet (1 MiB): a few small
   * frames are always taken whole. */
  r = f->tr.send(f->sid, buf, n, f->tr.user_data);
  if (r != (sp_ssize)n) {
    fprintf(stderr, "forge_epoch: send took %lld of %zu bytes\n",
            (long long)r, n);
    return -1;
  }
  return 0;
}

/* The claim the variant puts in the forged Heartbeat. */
static int make_claim(sp_leader_claim *c, enum variant v,
                      const sp_identity *self, const sp_identity *other,
                      const sp_uuid *library, uint64_t epoch) {
  const sp_identity *signer = v == V_SELF_CLAIM ? self : other;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  int rv = sp_leader_claim_sign(c, signer, library, epoch);

  if (rv != 0) {
    fprintf(stderr, "forge_epoch: signing: %s\n", sp_err_name(rv));
    return -1;
  }
  /* The claim differs from a valid one only in what the variant says:
   * its own signature verifies (only the registry can refuse it); the
   * standby's does until --bad-sig flips one byte. */
  sp_identity_public_key(signer, key);
  if (sp_leader_claim_verify(c, library, key) != 0) {
    fprintf(stderr, "forge_epoch: a freshly signed claim does not verify\n");
    return -1;
  }
  if (v == V_BAD_SIG) {
    c->signature[SP_CLAIM_SIG_LEN / 2] ^= 0x01;
    if (sp_leader_claim_verify(c, library, key) != SP_ERR_UNPROVEN_EPOCH) {
      fprintf(stderr, "forge_epoch: a corrupted claim still verifies\n");
      return -1;
    }
  }
  return 0;
}

/* The forged frame must carry the claim element on the wire: decode our
 * own bytes back (a codec that dropped it would turn every variant into
 * --no-claim). */
static int claim_on_wire(forge *f, const sp_msg *m) {
  uint8_t buf[1024];
  size_t n = 0;
  sp_msg back;

  if (sp_msg_encode(m, buf, sizeof(buf), &n) != 0 ||
      sp_decoder_decode(f->dec, buf + SP_FRAME_HEADER_LEN,
                        n - SP_FRAME_HEADER_LEN, &back) != 0) {
    return 0;
  }
  return back.type == SP_MSG_HEARTBEAT && back.u.heartbeat.has_claim &&
         memcmp(&back.u.heartbeat.claim, &m->u.heartbeat.claim,
                sizeof(back.u.heartbeat.claim)) == 0;
}

static void forge_now(forge *f, enum variant v, const sp_identity *self,
                      const sp_identity *other, const sp_uuid *library,
                      sp_tstamp now) {
  sp_msg m;
  char who[SP_UUID_STRING_LEN + 1];

  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = *library;
  m.epoch = f->epoch + 1;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  if (v != V_NO_CLAIM) {
    if (make_claim(&m.u.heartbeat.claim, v, self, other, library,
                   m.epoch) != 0) {
      f->failed = 1;
      return;
    }
    m.u.heartbeat.has_claim = 1;
    if (!claim_on_wire(f, &m)) {
      fprintf(stderr, "forge_epoch: the codec does not carry the claim "
                      "element\n");
      f->failed = 1;
      return;
    }
    sp_uuid_format(&m.u.heartbeat.claim.leader, who);
    printf("forge_epoch: claim for epoch %llu by %s%s\n",
           (unsigned long long)m.epoch, who,
           v == V_BAD_SIG ? ", signature corrupted"
           : v == V_VALID ? ", valid"
                          : ", signed by itself");
  }
  if (send_msg(f, &m) != 0) {
    f->failed = 1;
    return;
  }
  f->forged_at = now;
  printf("forge_epoch: leader at epoch %llu; sent a Heartbeat with epoch "
         "%llu\n",
         (unsigned long long)f->epoch, (unsigned long long)m.epoch);
}

static void on_frame(forge *f, const sp_msg *m, enum variant v,
                     const sp_identity *self, const sp_identity *other,
                     const sp_uuid *library, sp_tstamp now) {
  if (m->type == SP_MSG_ERROR) {
    if (f->got_error || f->refused_early) {
      return;
    }
    f->error_code = m->u.error.code;
    snprintf(f->error_msg, sizeof(f->error_msg), "%.*s",
             (int)m->u.error.message_len, m->u.error.message);
    f->error_at = now;
    if (f->forged_at) {
      f->got_error = 1;
    } else {
      f->refused_early = 1;
    }
    return;
  }
  if (!f->have_epoch) {
    f->have_epoch = 1;
    f->epoch = m->epoch;
    forge_now(f, v, self, other, library, now);
  }
}

/* Read what arrived on the stream into frames. */
static void read_stream(forge *f, enum variant v, const sp_identity *self,
                        const sp_identity *other, const sp_uuid *library,
                        sp_tstamp now) {
  sp_quic_stream *s = sp_quic_stream_find(f->ep, f->sid);

  if (!s) {
    return;
  }
  while (!f->failed && sp_buf_pending(&s->rbuf) > 0) {
    const uint8_t *body = NULL;
    size_t len = 0;
    sp_ssize n = sp_frame_reader_read(f->rd, s->rbuf.data + s->rbuf.off,
                                      sp_buf_pending(&s->rbuf), &body, &len);
    sp_msg m;

    if (n < 0) {
      fprintf(stderr, "forge_epoch: bad frame: %s\n", sp_err_name((int)n));
      f->failed = 1;
      return;
    }
    if (body) {
      int rv = sp_decoder_decode(f->dec, body, len, &m);
      if (rv != 0) {
        fprintf(stderr, "forge_epoch: undecodable frame: %s\n",
                sp_err_name(rv));
        f->failed = 1;
        return;
      }
      on_frame(f, &m, v, self, other, library, now);
    }
    /* After decoding: the body may point into the buffer. */
    sp_buf_consume(&s->rbuf, (size_t)n);
  }
  if (s->closed_pending && !f->closed) {
    f->closed = 1;
    f->close_reason = s->closed_reason;
    f->closed_at = now;
  }
}

static int open_stream(forge *f, const pairing *p) {
  const pairing_device *leader = pairing_leader(p);
  sp_msg m;
  int rv;

  rv = f->tr.open_stream(&leader->id, &p->library, &f->sid, f->tr.user_data);
  if (rv != 0) {
    fprintf(stderr, "forge_epoch: cannot open a stream to the leader: %s\n",
            sp_err_name(rv));
    return -1;
  }
  /* A follower's first frames: its features Heartbeat (it has seen no
   * epoch yet), then a fetch from the start. */
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_HEARTBEAT;
  m.library_id = p->library;
  m.u.heartbeat.role = SP_ROLE_FOLLOWER;
  m.u.heartbeat.has_features = 1;
  m.u.heartbeat.features = SP_FEATURES_SUPPORTED;
  if (send_msg(f, &m) != 0) {
    return -1;
  }
  memset(&m, 0, sizeof(m));
  m.type = SP_MSG_FETCH_ENTRIES;
  m.library_id = p->library;
  m.u.fetch_entries.limit = 1;
  m.u.fetch_entries.has_features = 1;
  m.u.fetch_entries.features = SP_FEATURES_SUPPORTED;
  return send_msg(f, &m);
}

static void usage(void) {
  fprintf(stderr,
          "usage: forge_epoch --key FILE --pairing FILE (--no-claim | "
          "--self-claim |\n"
          "                   --bad-sig --claim-key FILE | --valid-claim "
          "--claim-key FILE)\n"
          "                   [--timeout SECONDS]\n");
}

static int run(forge *f, enum variant v, const pairing *p,
               const sp_identity *self, const sp_identity *other,
               long timeout) {
  sp_tstamp start = sp_quic_now();

  if (open_stream(f, p) != 0) {
    return -1;
  }
  for (;;) {
    sp_tstamp now = sp_quic_now(), exp, until;
    struct pollfd pfd;
    int rv, wait_ms;

    if (f->failed || f->refused_early || f->closed) {
      return 0;
    }
    if (f->forged_at) {
      /* An Error frame settles it; the close that follows is reported
       * when it comes within the window. */
      until = f->forged_at + REPLY_WINDOW;
    } else {
      until = start + (sp_duration)timeout * SP_SECONDS;
    }
    if (now >= until) {
      return 0;
    }
    exp = sp_quic_endpoint_get_expiry(f->ep);
    if (exp > until) {
      exp = until;
    }
    pfd.fd = sp_quic_endpoint_fd(f->ep);
    pfd.events = POLLIN;
    /* Round up: waking a little late is fine, spinning is not. */
    wait_ms = exp <= now ? 0
                         : (int)((exp - now + SP_MILLISECONDS - 1) /
                                 SP_MILLISECONDS);
    poll(&pfd, 1, wait_ms);
    now = sp_quic_now();
    rv = sp_quic_endpoint_process(f->ep, now);
    if (rv != 0) {
      fprintf(stderr, "forge_epoch: endpoint: %s\n", sp_err_name(rv));
      return -1;
    }
    read_stream(f, v, self, other, &p->library, now);
  }
}

static double ms(sp_tstamp from, sp_tstamp to) {
  return (double)(to - from) / (double)SP_MILLISECONDS;
}

/* What came back, and whether it is the refusal the fix promises. */
static int report(const forge *f, enum variant v) {
  int ok, refused;

  if (f->refused_early) {
    printf("forge_epoch: refused before the forgery: Error %d (%s): %s\n",
           (int)f->error_code, sp_err_name(f->error_code), f->error_msg);
    return 1;
  }
  if (!f->forged_at) {
    printf("forge_epoch: no forgery sent (%s)\n",
           f->closed ? "the stream closed first"
                     : f->failed ? "failed" : "the leader never answered");
    if (f->closed) {
      printf("forge_epoch: stream closed: %d (%s)\n", f->close_reason,
             sp_err_name(f->close_reason));
    }
    return 1;
  }
  if (f->got_error) {
    printf("forge_epoch: Error frame after %.1f ms: %d (%s): %s\n",
           ms(f->forged_at, f->error_at), (int)f->error_code,
           sp_err_name(f->error_code), f->error_msg);
  } else if (!f->closed) {
    printf("forge_epoch: no Error frame and no close within %.0f ms\n",
           ms(0, REPLY_WINDOW));
  } else {
    printf("forge_epoch: no Error frame\n");
  }
  if (f->closed) {
    printf("forge_epoch: stream closed after %.1f ms: %d (%s)\n",
           ms(f->forged_at, f->closed_at), f->close_reason,
           sp_err_name(f->close_reason));
  }
  refused = f->got_error && f->error_code == SP_ERR_UNPROVEN_EPOCH &&
            f->error_at - f->forged_at <= REPLY_WINDOW;
  if (v == V_VALID) {
    ok = !refused && f->closed && f->closed_at - f->forged_at <= REPLY_WINDOW;
    printf("forge_epoch: %s\n", ok ? "the proof was taken: the leader "
                                     "closed the stream"
                                   : "the valid claim was NOT taken");
    return ok ? 0 : 1;
  }
  printf("forge_epoch: %s\n",
         refused ? "refused as unproven: the leader stood"
                 : "NOT refused as unproven");
  return refused ? 0 : 1;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"key", 1, 0, 'k'},        {"pairing", 1, 0, 'p'},
      {"claim-key", 1, 0, 'c'},  {"timeout", 1, 0, 't'},
      {"no-claim", 0, 0, 'n'},   {"self-claim", 0, 0, 's'},
      {"bad-sig", 0, 0, 'b'},    {"valid-claim", 0, 0, 'V'},
      {0, 0, 0, 0}};
  const char *key = NULL, *pairing_path = NULL, *claim_key = NULL;
  enum variant v = V_NONE;
  long timeout = 10;
  int c, nv = 0, status = 1, rv;
  char err[256];
  static pairing p;
  const pairing_device *me;
  sp_identity *self = NULL, *other = NULL;
  sp_registry reg;
  sp_quic_config qc;
  forge f;

  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'k': key = optarg; break;
    case 'p': pairing_path = optarg; break;
    case 'c': claim_key = optarg; break;
    case 't': timeout = strtol(optarg, NULL, 10); break;
    case 'n': v = V_NO_CLAIM; ++nv; break;
    case 's': v = V_SELF_CLAIM; ++nv; break;
    case 'b': v = V_BAD_SIG; ++nv; break;
    case 'V': v = V_VALID; ++nv; break;
    default: usage(); return 2;
    }
  }
  if (!key || !pairing_path || nv != 1 || optind != argc || timeout <= 0 ||
      (v == V_BAD_SIG || v == V_VALID) != (claim_key != NULL)) {
    usage();
    return 2;
  }
  if (pairing_load(&p, pairing_path, err, sizeof(err)) != 0) {
    fprintf(stderr, "forge_epoch: %s\n", err);
    return 1;
  }
  rv = sp_identity_load(&self, key, NULL);
  if (rv == 0 && claim_key) {
    rv = sp_identity_load(&other, claim_key, NULL);
  }
  if (rv != 0) {
    fprintf(stderr, "forge_epoch: cannot load a key: %s\n", sp_err_name(rv));
    sp_identity_del(self);
    return 1;
  }
  me = pairing_find(&p, sp_identity_device_id(self));
  if (!me || me->leader) {
    fprintf(stderr, "forge_epoch: %s must list this device as a follower\n",
            pairing_path);
    sp_identity_del(other);
    sp_identity_del(self);
    return 1;
  }
  memset(&f, 0, sizeof(f));
  pairing_registry(&p, &reg);
  sp_quic_config_default(&qc);
  qc.bind_address = "127.0.0.1:0";
  qc.on_log = on_log;
  rv = sp_quic_endpoint_new(&f.ep, &qc, self, &reg, NULL);
  if (rv == 0) {
    rv = sp_frame_reader_new(&f.rd, 0, NULL);
  }
  if (rv == 0) {
    rv = sp_decoder_new(&f.dec, NULL);
  }
  if (rv != 0) {
    fprintf(stderr, "forge_epoch: setup: %s\n", sp_err_name(rv));
  } else {
    sp_quic_endpoint_get_transport(f.ep, &f.tr);
    if (run(&f, v, &p, self, other, timeout) == 0) {
      status = report(&f, v);
    }
  }
  sp_decoder_del(f.dec);
  sp_frame_reader_del(f.rd);
  /* Closes the connection: the leader sees this follower leave. */
  sp_quic_endpoint_del(f.ep);
  sp_identity_del(other);
  sp_identity_del(self);
  return status;
}
