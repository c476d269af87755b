# Lock-order core: uncontended cost of ranked_mutex / tracked_mutex beside std::mutex (binary bench_order).
faultsafe_bench(bench_order order_bench.cpp)
