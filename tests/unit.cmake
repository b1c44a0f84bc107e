# Unit tests: one cmocka program per source file of the codec layer.
foreach(t mpack enc codec frame chain err uuid buf)
  sp_add_test(sp_${t}_test SOURCES sp_${t}_test.c LABELS unit)
endforeach()
