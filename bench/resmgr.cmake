# Channel / resource-manager round trips beside a direct call, a spin ping-pong and a condvar hand-off.
faultsafe_bench(bench_channel ${CMAKE_CURRENT_SOURCE_DIR}/channel_bench.cpp)
# Round trips to a server in another OS process (issue 11): 4 KiB and 1 MiB pread vs the kernel's
# pread(2) of tmpfs, a shared-memory spin ping-pong, a pipe round trip, and the inline/process_vm crossover.
faultsafe_bench(bench_remote ${CMAKE_CURRENT_SOURCE_DIR}/remote_bench.cpp)
