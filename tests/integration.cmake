# Integration tests: nodes, handlers and sessions over the in-memory
# transport, driven by the simulated cluster in sp_cluster.c.
add_library(sp_cluster STATIC sp_cluster.c sp_async_store.c)
target_link_libraries(sp_cluster PUBLIC sp_testutil)

set(SP_INTEGRATION_TESTS leader follower node failmalloc session handler waits
    mem_transport serve leader_keys node_bounds fetch_window takeover
    leader_addr admit writer recover events claim_handler abi log)
foreach(t ${SP_INTEGRATION_TESTS})
  sp_add_test(sp_${t}_test SOURCES sp_${t}_test.c LABELS integration
    LIBS sp_cluster)
endforeach()

# The same programs under valgrind (label valgrind, run by ./scripts/test
# on the gcc build; ASan builds skip it: the two do not mix).
find_program(SP_VALGRIND valgrind)
if(SP_VALGRIND AND NOT SP_SANITIZE)
  foreach(t ${SP_INTEGRATION_TESTS})
    add_test(NAME sp_${t}_test_valgrind
      COMMAND ${SP_VALGRIND} --quiet --error-exitcode=1 --leak-check=full
              --errors-for-leak-kinds=definite,indirect
              $<TARGET_FILE:sp_${t}_test>)
    set_tests_properties(sp_${t}_test_valgrind PROPERTIES LABELS valgrind
      TIMEOUT 900 ENVIRONMENT "SP_TEST_DATA=${CMAKE_CURRENT_SOURCE_DIR}/data;SP_VALGRIND=1")
  endforeach()
endif()

# The deterministic fault simulation (label sim).  The sanitizer build runs
# fewer seeds to keep ./scripts/test well inside its time budget.
add_executable(sp_sim sp_sim.c sp_sim_writes.c sp_sim_snap.c sp_sim_async.c)
target_link_libraries(sp_sim PRIVATE sp_cluster)
if(SP_SANITIZE)
  set(SP_SIM_SEEDS 2000)
else()
  set(SP_SIM_SEEDS 10000)
endif()
add_test(NAME sp_sim COMMAND sp_sim --seeds ${SP_SIM_SEEDS})
# The five lines must be there: the claims: line with some step-downs
# proven, some forgeries refused and none deposing, the writes: line with
# nothing lost or duplicated, the snapshots: line with some installed and
# nothing half-installed nor looping, the async: line with some
# asynchronous followers, some batches pending at a crash and nothing
# acknowledged that was not durable, then the final verdict.
set_tests_properties(sp_sim PROPERTIES LABELS sim TIMEOUT 1800
  PASS_REGULAR_EXPRESSION "claims: [1-9][0-9]* step-downs proven, [1-9][0-9]* forged epochs refused, 0 deposed by forgery\nwrites: [0-9]+ submitted, [^\n]*refused, 0 lost, 0 duplicated\nsnapshots: [1-9][0-9]* installed, [0-9]+ resumed, 0 half-installed, 0 loops\nasync: [1-9][0-9]* followers in [^\n]*, [1-9][0-9]* batches pending at [0-9]+ crashes, 0 lost\nsim: [0-9]+ seeds [^\n]*, 0 invariant violations")
# Every seed's faults end with a crash still pending, as a sink call that
# killed a device during its full sync left one (seed 3998): the device
# must crash then and boot with the others, not after the faults stopped.
add_test(NAME sp_sim_crash_at_stop COMMAND sp_sim --seeds 200 --crash-at-stop)
set_tests_properties(sp_sim_crash_at_stop PROPERTIES LABELS sim TIMEOUT 600
  PASS_REGULAR_EXPRESSION "sim: [0-9]+ seeds [^\n]*, 0 invariant violations")
# The scale simulation (issue 15 item 5): a program run by hand or by
# scripts/bench, never by ctest.  --wrap times the leader's entry points.
add_executable(sp_sim_scale sp_sim_scale.c)
target_link_libraries(sp_sim_scale PRIVATE sp_testutil)
target_link_options(sp_sim_scale PRIVATE
  "LINKER:--wrap=sp_node_stream_opened,--wrap=sp_node_stream_data"
  "LINKER:--wrap=sp_node_stream_writable,--wrap=sp_node_stream_closed"
  "LINKER:--wrap=sp_node_get_expiry,--wrap=sp_node_handle_expiry")
# The ABI test also calls the optional modules' versioned getters.
if(SP_WITH_SQLITE)
  target_link_libraries(sp_abi_test PRIVATE PkgConfig::SQLITE)
endif()
if(SP_WITH_QUIC)
  target_link_libraries(sp_abi_test PRIVATE PkgConfig::NGTCP2)
endif()
