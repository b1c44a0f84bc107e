/*
 * sp_quic_tls.c: TLS 1.3 credentials made from the device key, and the
 * checks of the peer's certificate.
 *
 * Each endpoint presents a self-signed X.509 certificate holding its
 * Ed25519 device key.  There are no certificate authorities and no names:
 * a peer is trusted because the registry lists its key, nothing else.
 * What proves the peer holds that key is TLS 1.3's CertificateVerify,
 * which GnuTLS checks against the key in the certificate; the callback
 * below adds what GnuTLS cannot know (the registry) and refuses anything
 * but one well-formed, correctly self-signed Ed25519 certificate.
 *
 * Session resumption is off (GNUTLS_NO_TICKETS): a resumed session would
 * skip the certificate exchange, and with it our checks.
 */
#include <string.h>
#include <time.h>

#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/uuid.h"
#include "sp_identity_int.h"
#include "sp_quic_int.h"

/* TLS 1.3 only; AEADs ngtcp2 supports; Ed25519 the only signature. */
static const char priority_text[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
    "-SIGN-ALL:+SIGN-EDDSA-ED25519:%DISABLE_TLS13_COMPAT_MODE";

static int import_key(gnutls_x509_privkey_t *out, const sp_identity *id) {
  uint8_t seed[SP_SECRET_SEED_LEN], pk[SP_PUBLIC_KEY_LEN];
  gnutls_datum_t x = {pk, sizeof(pk)}, k = {seed, sizeof(seed)};
  int rv;

  if (gnutls_x509_privkey_init(out) != 0) {
    return SP_ERR_NOMEM;
  }
  sp_identity_secret_seed(id, seed);
  sp_identity_public_key(id, pk);
  rv = gnutls_x509_privkey_import_ecc_raw(*out, GNUTLS_ECC_CURVE_ED25519, &x,
                                          NULL, &k);
  sodium_memzero(seed, sizeof(seed));
  if (rv != 0) {
    gnutls_x509_privkey_deinit(*out);
    *out = NULL;
    return SP_ERR_TLS;
  }
  return 0;
}

/* A short self-signed certificate for `id`'s key, signed with `key`. */
static int make_cert(gnutls_x509_crt_t *out, const sp_identity *id,
                     gnutls_x509_privkey_t key) {
  char cn[SP_UUID_STRING_LEN + 1];
  uint8_t serial[16];
  gnutls_x509_crt_t crt;
  time_t now = time(NULL);

  if (gnutls_x509_crt_init(&crt) != 0) {
    return SP_ERR_NOMEM;
  }
  randombytes_buf(serial, sizeof(serial));
  serial[0] &= 0x7f; /* a positive INTEGER */
  serial[0] |= 0x01; /* and no leading zero byte */
  sp_uuid_format(sp_identity_device_id(id), cn);
  /* The validity period is not checked by peers (the registry decides);
   * it only has to be well formed. */
  if (gnutls_x509_crt_set_version(crt, 3) != 0 ||
      gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) != 0 ||
      gnutls_x509_crt_set_activation_time(crt, now - 24 * 3600) != 0 ||
      gnutls_x509_crt_set_expiration_time(
          crt, GNUTLS_X509_NO_WELL_DEFINED_EXPIRATION) != 0 ||
      gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                    SP_UUID_STRING_LEN) != 0 ||
      gnutls_x509_crt_set_key(crt, key) != 0 ||
      gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) != 0 ||
      gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_UNKNOWN, 0) != 0) {
    gnutls_x509_crt_deinit(crt);
    return SP_ERR_TLS;
  }
  *out = crt;
  return 0;
}

static int verify_cb(gnutls_session_t session);

int sp_quic_tls_init(sp_quic_tls *tls, const sp_identity *cert_id,
                     const sp_identity *key_id, const char *alpn) {
  gnutls_x509_privkey_t cert_key = NULL, tls_key = NULL;
  gnutls_x509_crt_t crt = NULL;
  int rv;

  memset(tls, 0, sizeof(*tls));
  tls->alpn.data = (unsigned char *)alpn;
  tls->alpn.size = (unsigned)strlen(alpn);
  if (gnutls_certificate_allocate_credentials(&tls->cred) != 0) {
    return SP_ERR_NOMEM;
  }
  rv = import_key(&cert_key, cert_id);
  if (rv == 0) {
    rv = make_cert(&crt, cert_id, cert_key);
  }
  if (rv == 0 && key_id != cert_id) {
    rv = import_key(&tls_key, key_id);
    /* Only a forging test gets here; GnuTLS would refuse the pair. */
    gnutls_certificate_set_flags(tls->cred,
                                 GNUTLS_CERTIFICATE_SKIP_KEY_CERT_MATCH);
  }
  if (rv == 0 &&
      gnutls_certificate_set_x509_key(tls->cred, &crt, 1,
                                      tls_key ? tls_key : cert_key) < 0) {
    rv = SP_ERR_TLS;
  }
  if (rv == 0 && gnutls_priority_init(&tls->prio, priority_text, NULL) != 0) {
    rv = SP_ERR_TLS;
  }
  if (crt) {
    gnutls_x509_crt_deinit(crt);
  }
  if (cert_key) {
    gnutls_x509_privkey_deinit(cert_key);
  }
  if (tls_key) {
    gnutls_x509_privkey_deinit(tls_key);
  }
  if (rv != 0) {
    sp_quic_tls_free(tls);
    return rv;
  }
  gnutls_certificate_set_verify_function(tls->cred, verify_cb);
  return 0;
}

void sp_quic_tls_free(sp_quic_tls *tls) {
  if (tls->prio) {
    gnutls_priority_deinit(tls->prio);
  }
  if (tls->cred) {
    gnutls_certificate_free_credentials(tls->cred);
  }
  memset(tls, 0, sizeof(*tls));
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  sp_quic_conn *c = ref->user_data;
  return c->qc;
}

int sp_quic_tls_session_new(sp_quic_conn *c) {
  sp_quic_tls *tls = &c->ep->tls;
  gnutls_session_t s;
  unsigned flags = GNUTLS_NO_TICKETS | GNUTLS_NO_END_OF_EARLY_DATA;
  int rv;

  if (gnutls_init(&s, flags | (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT)) !=
      0) {
    return SP_ERR_TLS;
  }
  rv = c->server ? ngtcp2_crypto_gnutls_configure_server_session(s)
                 : ngtcp2_crypto_gnutls_configure_client_session(s);
  if (rv != 0 || gnutls_priority_set(s, tls->prio) != 0 ||
      gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, tls->cred) != 0 ||
      gnutls_alpn_set_protocols(s, &tls->alpn, 1, GNUTLS_ALPN_MANDATORY) !=
          0) {
    gnutls_deinit(s);
    return SP_ERR_TLS;
  }
  /* Without REQUIRE a server never asks for the client's certificate and
   * GnuTLS would not even run the verify callback. */
  if (c->server) {
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
  }
  c->conn_ref.get_conn = get_conn;
  c->conn_ref.user_data = c;
  gnutls_session_set_ptr(s, &c->conn_ref);
  ngtcp2_conn_set_tls_native_handle(c->qc, s);
  c->session = s;
  return 0;
}

/* DER: header of the element at `p` (tag, then definite length). */
static int der_element(const uint8_t *p, size_t len, uint8_t tag,
                       size_t *total) {
  size_t hdr, body, n, i;

  if (len < 2 || p[0] != tag) {
    return -1;
  }
  if (p[1] < 0x80) {
    hdr = 2;
    body = p[1];
  } else {
    n = p[1] & 0x7f;
    if (n == 0 || n > 3 || len < 2 + n) {
      return -1;
    }
    body = 0;
    for (i = 0; i < n; ++i) {
      body = body << 8 | p[2 + i];
    }
    hdr = 2 + n;
  }
  if (body > len - hdr) {
    return -1;
  }
  *total = hdr + body;
  return 0;
}

/*
 * Check that `der` is a single Ed25519 certificate correctly signed by its
 * own key, and copy that key out.  The self-signature proves little on
 * its own (anyone can make one); it keeps malformed or foreign
 * certificates out before their key reaches the registry.
 */
static int cert_key(const gnutls_datum_t *der,
                    uint8_t key[SP_PUBLIC_KEY_LEN]) {
  gnutls_x509_crt_t crt;
  gnutls_datum_t x = {NULL, 0}, y = {NULL, 0};
  gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
  uint8_t sig[64];
  size_t siglen = sizeof(sig), outer, tbs;
  int rv = -1;

  if (der_element(der->data, der->size, 0x30, &outer) != 0 ||
      outer != der->size) {
    return -1;
  }
  /* The outer header is 2-5 bytes; the TBS element follows it. */
  {
    size_t hdr = der->data[1] < 0x80 ? 2 : 2 + (der->data[1] & 0x7f);
    if (der_element(der->data + hdr, der->size - hdr, 0x30, &tbs) != 0) {
      return -1;
    }
    if (gnutls_x509_crt_init(&crt) != 0) {
      return -1;
    }
    if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) != 0 ||
        gnutls_x509_crt_get_pk_algorithm(crt, NULL) !=
            GNUTLS_PK_EDDSA_ED25519 ||
        gnutls_x509_crt_get_signature_algorithm(crt) !=
            GNUTLS_SIGN_EDDSA_ED25519 ||
        gnutls_x509_crt_get_pk_ecc_raw(crt, &curve, &x, &y) != 0 ||
        curve != GNUTLS_ECC_CURVE_ED25519 || x.size != SP_PUBLIC_KEY_LEN ||
        gnutls_x509_crt_get_signature(crt, (char *)sig, &siglen) != 0 ||
        siglen != sizeof(sig)) {
      goto out;
    }
    /* RFC 8410: PureEdDSA over the DER of tbsCertificate. */
    if (crypto_sign_verify_detached(sig, der->data + hdr, tbs, x.data) != 0) {
      goto out;
    }
  }
  memcpy(key, x.data, SP_PUBLIC_KEY_LEN);
  rv = 0;
out:
  gnutls_free(x.data);
  gnutls_free(y.data);
  gnutls_x509_crt_deinit(crt);
  return rv;
}

/* A refusal before there is a key to name (those of a key are logged by
 * sp_quic_conn_verify_peer). */
static void log_refused(const sp_quic_conn *c, const char *why) {
  char addr[64] = "?";

  (void)sp_quic_addr_format(&c->remote, addr, sizeof(addr));
  sp_quic_log(c->ep, SP_LOG_WARN, "refused handshake %s %s: %s (%s)",
              c->server ? "from" : "with server", addr, why,
              sp_err_name(c->verify_error));
}

/*
 * Runs inside the handshake, on both sides, once the peer's Certificate
 * (and, in TLS 1.3, its CertificateVerify) has been read.  A refusal
 * aborts the handshake with an alert; the connection code turns the
 * stored verify_error into the reason streams see.
 */
static int verify_cb(gnutls_session_t session) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
  sp_quic_conn *c = ref->user_data;
  const gnutls_datum_t *alpn = &c->ep->tls.alpn;
  const gnutls_datum_t *certs;
  gnutls_datum_t sel;
  uint8_t key[SP_PUBLIC_KEY_LEN];
  unsigned n = 0;

  /* GnuTLS enforces the ALPN already; check again, the check is cheap and
   * a peer that skipped the extension must not get through. */
  if (gnutls_alpn_get_selected_protocol(session, &sel) != 0 ||
      sel.size != alpn->size || memcmp(sel.data, alpn->data, sel.size) != 0) {
    c->verify_error = SP_ERR_ALPN;
    log_refused(c, "no sync ALPN");
    return GNUTLS_E_NO_APPLICATION_PROTOCOL;
  }
  certs = gnutls_certificate_get_peers(session, &n);
  if (gnutls_certificate_type_get2(session, GNUTLS_CTYPE_PEERS) !=
          GNUTLS_CRT_X509 ||
      !certs || n != 1 || cert_key(&certs[0], key) != 0) {
    c->verify_error = SP_ERR_HANDSHAKE;
    log_refused(c, "not one self-signed Ed25519 certificate");
    return -1;
  }
  if (sp_quic_conn_verify_peer(c, key) == 0) {
    return 0;
  }
  return sp_quic_conn_refuse_later(c, key) ? 0 : -1;
}
