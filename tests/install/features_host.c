/*
 * features_host.c: an out-of-tree program that uses whatever optional
 * modules the installed sync_protocol has, found the way a host finds
 * them: SP_HAVE_* from sync_protocol/features.h at compile time,
 * sp_build_features() at run time.
 *
 *   features_host EXPECTED DIR
 *
 * EXPECTED is "quic,sqlite" or "none": what the install under test must
 * contain.  DIR is a writable directory (the SQLite store's file goes
 * there).  Exits 0 when headers, library and EXPECTED agree and every
 * module built in links and runs.
 */
#include <stdio.h>
#include <string.h>

#include <sync_protocol/sync_protocol.h>
#ifdef SP_HAVE_QUIC
#include <sync_protocol/quic.h>
#endif
#ifdef SP_HAVE_SQLITE
#include <sync_protocol/sqlite_store.h>
#endif

static int fail(const char *what) {
  fprintf(stderr, "features_host: %s\n", what);
  return 1;
}

int main(int argc, char **argv) {
  unsigned want = 0, have = 0;
  if (argc != 3)
    return fail("usage: features_host quic,sqlite|none DIR");
  if (strstr(argv[1], "quic"))
    want |= SP_BUILD_QUIC;
  if (strstr(argv[1], "sqlite"))
    want |= SP_BUILD_SQLITE;
#ifdef SP_HAVE_QUIC
  have |= SP_BUILD_QUIC;
#endif
#ifdef SP_HAVE_SQLITE
  have |= SP_BUILD_SQLITE;
#endif
  if (have != want)
    return fail("SP_HAVE_* in features.h disagree with the expected modules");
  if (sp_build_features() != want)
    return fail("sp_build_features() disagrees with the expected modules");
  if (strcmp(sp_version(), SP_VERSION) != 0 ||
      sp_version_num() != (unsigned)SP_VERSION_NUM)
    return fail("the library's version is not the headers' version");

#ifdef SP_HAVE_QUIC
  {
    /* Invalid arguments: refused before any socket, yet the call pulls in
     * the endpoint's code and with it ngtcp2 and GnuTLS. */
    sp_quic_config qc;
    sp_quic_endpoint *ep = NULL;
    sp_quic_config_default(&qc);
    if (sp_quic_endpoint_new(&ep, &qc, NULL, NULL, NULL) >= 0)
      return fail("sp_quic_endpoint_new accepted a NULL identity");
  }
#endif
#ifdef SP_HAVE_SQLITE
  {
    char path[4096];
    sp_sqlite_store *st = NULL;
    int rc;
    snprintf(path, sizeof path, "%s/features_host.db", argv[2]);
    rc = sp_sqlite_store_open(&st, path, NULL, NULL);
    if (rc != 0) {
      fprintf(stderr, "features_host: %s: %s\n", path, sp_strerror(rc));
      return 1;
    }
    sp_sqlite_store_close(st);
  }
#endif
  printf("ok: sync_protocol %s, modules: %s\n", sp_version(), argv[1]);
  return 0;
}
