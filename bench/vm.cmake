# vm/: the userfaultfd pager beside a raw userfaultfd loop doing the same work and beside the kernel's
# own MAP_SHARED memfd mapping (binary bench_pager; prints a ratio table at the end).
faultsafe_bench(bench_pager pager_bench.cpp)
