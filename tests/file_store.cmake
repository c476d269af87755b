# resmgr/file_store.hpp: one arena memfd per store. 20,000 files under RLIMIT_NOFILE 1024 (the figure for
# 1,000,000 comes from bench_file_store in Release), size-class moves under concurrent readers, mappings
# among neighbours (SIGBUS past the end after a shrink, zeros after growth), extent recycling.
faultsafe_test(file_store_test SOURCES file_store_test.cpp TIMEOUT 300 LABELS resmgr vm)
