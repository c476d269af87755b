# Issue 3: per-offset reader/writer range lock (include/faultsafe/sync/range_lock.hpp).
faultsafe_test(range_lock_basic SOURCES range_lock_basic.cpp TIMEOUT 60 LABELS range_lock)
faultsafe_test(range_lock_noalloc SOURCES range_lock_noalloc.cpp TIMEOUT 60 LABELS range_lock)
faultsafe_test(range_lock_stress SOURCES range_lock_stress.cpp TIMEOUT 120 LABELS range_lock)
faultsafe_test(range_lock_fairness SOURCES range_lock_fairness.cpp TIMEOUT 90 LABELS range_lock)
faultsafe_test(range_lock_ordered SOURCES range_lock_ordered.cpp TIMEOUT 90 LABELS range_lock)
faultsafe_test(range_lock_self SOURCES range_lock_self.cpp TIMEOUT 60 LABELS range_lock)
faultsafe_test(range_lock_shards SOURCES range_lock_shards.cpp TIMEOUT 120 LABELS range_lock)
# Issue 12: overlapping readers on the fast path (reader slots) against writers: exclusion, no starvation.
faultsafe_test(range_lock_readers SOURCES range_lock_readers.cpp TIMEOUT 120 LABELS range_lock)
# Issue 12: the fast holder's claim races (a conflicting range entering before its claim, a leaf lock
# holder moving it into the tree before its re-check), made deterministic by fault injection.
faultsafe_test(range_lock_claim_race SOURCES range_lock_claim_race.cpp TIMEOUT 90 LABELS range_lock)
target_compile_definitions(range_lock_claim_race PRIVATE FAULTSAFE_FAULT_INJECTION=1 FAULTSAFE_FAULT_INJECTION_IN_RELEASE=1)

# The same tests again with 32-byte segments: their offsets (mostly below 1 KiB) then fall into every
# one of the 16 shards, wrap around them, and cross segments (wide ranges), so sharding, the wide tree
# and the Lamport-ordered FIFO between them are exercised by every scenario above.
foreach(t basic noalloc stress fairness ordered self readers)
  set(_timeout 60)
  if(t STREQUAL "stress" OR t STREQUAL "readers")
    set(_timeout 120)
  elseif(t STREQUAL "fairness" OR t STREQUAL "ordered")
    set(_timeout 90)
  endif()
  faultsafe_test(range_lock_${t}_sharded SOURCES range_lock_${t}.cpp TIMEOUT ${_timeout} LABELS range_lock)
  target_compile_definitions(range_lock_${t}_sharded PRIVATE FAULTSAFE_RANGE_LOCK_SEGMENT_SHIFT=5)
endforeach()
