# resmgr/fuse_bridge.hpp: per-request overhead vs a minimal libfuse server, and data vs the kernel's tmpfs
# (binary bench_fuse; prints the ratios at the end). Needs fuse3.
if(FAULTSAFE_HAVE_FUSE)
  faultsafe_bench(bench_fuse fuse_bench.cpp)
  target_link_libraries(bench_fuse PRIVATE faultsafe::fuse_bridge)
endif()
