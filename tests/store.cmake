# Store tests: the in-memory store (unit) and the SQLite reference store.
# sync_protocol_static is listed again after sp_testutil (added by
# sp_add_test) because sp_test_mem.c calls into the library and static
# libraries are resolved left to right.
sp_add_test(sp_mem_store_test SOURCES sp_mem_store_test.c LABELS unit
  LIBS sync_protocol_static)
sp_add_test(sp_origin_index_test SOURCES sp_origin_index_test.c LABELS unit
  LIBS sync_protocol_static)

if(SP_WITH_SQLITE)
  sp_add_test(sp_sqlite_store_test SOURCES sp_sqlite_store_test.c
    LABELS store LIBS sync_protocol_static PkgConfig::SQLITE TIMEOUT 120)
endif()
# sp_store_verify over both reference stores (the SQLite part when built).
if(SP_WITH_SQLITE)
  sp_add_test(sp_verify_test SOURCES sp_verify_test.c LABELS store
    LIBS sync_protocol_static PkgConfig::SQLITE)
  target_compile_definitions(sp_verify_test PRIVATE SP_TEST_SQLITE=1)
else()
  sp_add_test(sp_verify_test SOURCES sp_verify_test.c LABELS unit
    LIBS sync_protocol_static)
endif()
# Log snapshot v1 (src/store/sp_logsnap.c) and the stores' snapshot
# sources and sinks (the SQLite part when built).
sp_add_test(sp_logsnap_test SOURCES sp_logsnap_test.c LABELS unit
  LIBS sync_protocol_static)
if(SP_WITH_SQLITE)
  sp_add_test(sp_store_snap_test SOURCES sp_store_snap_test.c LABELS store
    LIBS sync_protocol_static PkgConfig::SQLITE TIMEOUT 120)
endif()
# Why a store call or an open failed, in the store's words, through the
# event's message; key files' errno (issue 14 item 4).
if(SP_WITH_SQLITE)
  find_package(Threads REQUIRED)
  sp_add_test(sp_errdetail_test SOURCES sp_errdetail_test.c LABELS store
    LIBS sp_cluster sync_protocol_static PkgConfig::SQLITE Threads::Threads
    TIMEOUT 60)
endif()
# The SQLite store's apply thread (sp_sqlite_worker.c; issue 15 item 3).
if(SP_WITH_SQLITE)
  find_package(Threads REQUIRED)
  sp_add_test(sp_sqlite_async_test SOURCES sp_sqlite_async_test.c
    LABELS store LIBS sync_protocol_static PkgConfig::SQLITE Threads::Threads
    TIMEOUT 120)
endif()
