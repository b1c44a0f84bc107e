/*
 * sp_version.c: version of the linked library.
 */
#include "sync_protocol/version.h"

const char *sp_version(void) { return SP_VERSION; }

unsigned sp_version_num(void) { return SP_VERSION_NUM; }
