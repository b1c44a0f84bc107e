# Unit tests: one cmocka program per source file of the codec layer.
foreach(t mpack enc codec frame chain err uuid buf)
  sp_add_test(sp_${t}_test SOURCES sp_${t}_test.c LABELS unit)
endforeach()
# The snapshot transfer engine, through a test source and sink.
sp_add_test(sp_snapshot_test SOURCES sp_snapshot_test.c LABELS unit)
# Leadership claims: the signed bytes, the vectors' signatures, refusals.
sp_add_test(sp_claim_test SOURCES sp_claim_test.c LABELS unit)
