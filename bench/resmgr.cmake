# Channel / resource-manager round trips beside a direct call, a spin ping-pong and a condvar hand-off.
faultsafe_bench(bench_channel ${CMAKE_CURRENT_SOURCE_DIR}/channel_bench.cpp)
