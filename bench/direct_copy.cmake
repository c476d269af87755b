# Brian's read: 1 MiB read(fd) into a mapping of the same file through the direct copy path, beside
# memcpy, the fault path through the guard and the seed's "map the whole file on open" (binary
# bench_direct_copy; prints a ratio table at the end).
faultsafe_bench(bench_direct_copy direct_copy_bench.cpp)
