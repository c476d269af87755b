# Issue 3: per-offset reader/writer range lock (include/faultsafe/sync/range_lock.hpp).
faultsafe_test(range_lock_basic SOURCES range_lock_basic.cpp TIMEOUT 60 LABELS range_lock)
faultsafe_test(range_lock_noalloc SOURCES range_lock_noalloc.cpp TIMEOUT 60 LABELS range_lock)
faultsafe_test(range_lock_stress SOURCES range_lock_stress.cpp TIMEOUT 120 LABELS range_lock)
faultsafe_test(range_lock_fairness SOURCES range_lock_fairness.cpp TIMEOUT 90 LABELS range_lock)
faultsafe_test(range_lock_ordered SOURCES range_lock_ordered.cpp TIMEOUT 90 LABELS range_lock)
faultsafe_test(range_lock_self SOURCES range_lock_self.cpp TIMEOUT 60 LABELS range_lock)
