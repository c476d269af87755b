# vm/aspace.hpp: fault service's region lookup with 1 vs 10,000 regions (binary bench_aspace).
faultsafe_bench(bench_aspace aspace_bench.cpp)
