# Unit tests: one cmocka program per source file of the codec layer.
foreach(t mpack enc codec frame chain err uuid buf)
  sp_add_test(sp_${t}_test SOURCES sp_${t}_test.c LABELS unit)
endforeach()
# The snapshot transfer engine, through a test source and sink.
sp_add_test(sp_snapshot_test SOURCES sp_snapshot_test.c LABELS unit)
# Leadership claims: the signed bytes, the vectors' signatures, refusals.
sp_add_test(sp_claim_test SOURCES sp_claim_test.c LABELS unit)
# Asynchronous apply (store version 5 `durable`): the follower over the
# deterministic wrapper sp_async_store.c, in the simulated cluster.
sp_add_test(sp_async_apply_test SOURCES sp_async_apply_test.c LABELS unit
  LIBS sp_cluster)
# The hash index behind the leader's follower records and the node's streams.
sp_add_test(sp_index_test SOURCES sp_index_test.c LABELS unit)
