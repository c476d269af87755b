# Wait-for graph hooks: uncontended range_guard, aspace lock and 4 KiB channel round trip with the
# graph on vs off, beside std::mutex (binary bench_wait_hooks).
faultsafe_bench(bench_wait_hooks wait_hooks_bench.cpp)
