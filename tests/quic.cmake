# Identity (unit) and QUIC transport tests.  The QUIC tests run over real
# UDP on 127.0.0.1 and link a fake node (quic_fake_node.c) in place of the
# core: static linking takes the seven sp_node_* functions from it.
# sync_protocol_static is listed again after sp_testutil because
# sp_test_mem.c calls into the library.
# Knobs (environment): SP_QUIC_DEBUG=1 prints ngtcp2's and the endpoint's
# debug lines; SP_TEST_FILTER=<test> runs one test; SP_QUIC_BULK_MB sets
# the size of the throughput runs (200 MB each, gso=1 then gso=0).
sp_add_test(sp_identity_test SOURCES sp_identity_test.c LABELS unit
  LIBS sync_protocol_static)

if(SP_WITH_QUIC)
  find_package(Threads REQUIRED)
  set(SP_QUIC_TEST_HELPERS quic_fake_node.c quic_test_util.c)
  sp_add_test(sp_quic_addr_test SOURCES sp_quic_addr_test.c LABELS quic
    LIBS sync_protocol_static PkgConfig::NGTCP2)
  foreach(t handshake stream loop retry lifetime window liveness
      credit fairness peer_conns refusal window_edge)
    sp_add_test(sp_quic_${t}_test
      SOURCES sp_quic_${t}_test.c ${SP_QUIC_TEST_HELPERS}
      LABELS quic TIMEOUT 60
      LIBS sync_protocol_static PkgConfig::NGTCP2 Threads::Threads)
  endforeach()
endif()

# Why an endpoint failed (sp_quic_errmsg) and its lines through on_log
# only, ngtcp2's too, never stderr (issue 14).
if(SP_WITH_QUIC)
  sp_add_test(sp_quic_errdetail_test
    SOURCES sp_quic_errdetail_test.c ${SP_QUIC_TEST_HELPERS}
    LABELS quic TIMEOUT 60
    LIBS sync_protocol_static PkgConfig::NGTCP2 Threads::Threads)
endif()

# Real nodes over QUIC, leader and follower in one process.
if(SP_WITH_QUIC)
  sp_add_test(sp_quic_node_test
    SOURCES sp_quic_node_test.c quic_node_util.c LABELS quic TIMEOUT 300)
  # A real node under a peer trying to exceed the memory bounds.
  sp_add_test(sp_quic_bounds_test SOURCES sp_quic_bounds_test.c LABELS quic
    TIMEOUT 60)
  # The keys the transport proves, as the leader's records see them.
  sp_add_test(sp_quic_peer_key_test
    SOURCES sp_quic_peer_key_test.c quic_node_util.c LABELS quic
    TIMEOUT 60 LIBS PkgConfig::NGTCP2)
  # What a refused follower node hears: the Error frame, a refused key.
  sp_add_test(sp_quic_refusal_node_test
    SOURCES sp_quic_refusal_node_test.c quic_node_util.c LABELS quic
    TIMEOUT 60)
  # A leader killed and restarted reaches its follower at once.
  sp_add_test(sp_quic_restart_test
    SOURCES sp_quic_restart_test.c quic_node_util.c LABELS quic
    TIMEOUT 60 LIBS PkgConfig::NGTCP2)
endif()

# A paired follower (tests/forge_epoch.c, a raw QUIC client) sends its
# spsync leader one Heartbeat with the leader's epoch + 1: no claim, a
# claim signed by itself, a standby's claim with a corrupted signature.
# Each is refused with SP_ERR_UNPROVEN_EPOCH; the leader stays up at its
# epoch and its honest follower keeps syncing (issue 16 item 1).  The
# standby's claim unharmed, the control, deposes it (exit 5).
if(SP_WITH_QUIC AND SP_WITH_SQLITE AND SP_BUILD_EXAMPLES)
  add_executable(forge_epoch forge_epoch.c
    ${PROJECT_SOURCE_DIR}/examples/spsync/pairing.c)
  target_include_directories(forge_epoch PRIVATE
    ${PROJECT_SOURCE_DIR}/examples/spsync ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(forge_epoch PRIVATE sync_protocol_static
    PkgConfig::MSGPACK PkgConfig::SODIUM PkgConfig::NGTCP2)
  add_test(NAME quic_forge_epoch
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/quic_forge_epoch_test.sh
            $<TARGET_FILE:spsync> $<TARGET_FILE:forge_epoch>)
  set_tests_properties(quic_forge_epoch PROPERTIES LABELS quic TIMEOUT 120)
endif()
