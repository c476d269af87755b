# Cross-process mmap: a scan served by the pager of another process vs the kernel MAP_SHARED (bench_served).
faultsafe_bench(bench_served served_memory_bench.cpp)
