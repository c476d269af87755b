# Issue 3: range_lock benchmarks (binary bench_range_lock; Release flags from faultsafe_bench()).
faultsafe_bench(bench_range_lock range_lock_bench.cpp)
