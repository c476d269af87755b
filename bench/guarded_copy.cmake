# Guarded copies (detail/guarded_copy.hpp) beside a plain memcpy.
faultsafe_bench(bench_guarded_copy ${CMAKE_CURRENT_SOURCE_DIR}/guarded_copy_bench.cpp)
