/*
 * sp_version.c: version and contents of the linked library.
 */
#include "sync_protocol/version.h"

const char *sp_version(void) { return SP_VERSION; }

unsigned sp_version_num(void) { return SP_VERSION_NUM; }

unsigned sp_build_features(void) {
  unsigned f = 0;
#ifdef SP_HAVE_QUIC
  f |= SP_BUILD_QUIC;
#endif
#ifdef SP_HAVE_SQLITE
  f |= SP_BUILD_SQLITE;
#endif
  return f;
}
