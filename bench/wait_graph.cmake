# Wait-for graph (activity/wait_graph.hpp): wait_scope cost on/off, instrumented contended hand-off
# beside a plain one (binary bench_wait_graph).
faultsafe_bench(bench_wait_graph wait_graph_bench.cpp)
