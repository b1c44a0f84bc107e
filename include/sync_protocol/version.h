/*
 * version.h: the library's version, at compile time and at run time.
 */
#ifndef SYNC_PROTOCOL_VERSION_H
#define SYNC_PROTOCOL_VERSION_H

#include "sync_protocol/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_VERSION "0.1.0"
/* 0xMMmmpp: major, minor, patch. */
#define SP_VERSION_NUM 0x000100

/* The ALPN protocol id the sync protocol runs under. */
#define SP_ALPN "/spacedrive/sync/1.0.0"

/*
 * sp_version returns the version string of the library actually linked
 * (static storage), which may differ from SP_VERSION of the headers.
 */
SP_API const char *sp_version(void);

/* sp_version_num returns SP_VERSION_NUM of the library actually linked. */
SP_API unsigned sp_version_num(void);

#ifdef __cplusplus
}
#endif

#endif /* SYNC_PROTOCOL_VERSION_H */
