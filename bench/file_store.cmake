# resmgr/file_store.hpp: files per ramfs under RLIMIT_NOFILE 1024 (create + 4 KiB write), 4 KiB pread and
# a mapped scan, each beside the kernel's tmpfs (binary bench_file_store; prints the ratios at the end).
faultsafe_bench(bench_file_store file_store_bench.cpp)
