# brian: Brian's lock-up (read(fd) into a mapping of the same file), --naive (detected and broken by the
# wait-for graph) or --faultsafe (direct copy path, fault-reentrancy guard, pool guard).
faultsafe_example(brian ${CMAKE_CURRENT_SOURCE_DIR}/brian/main.cpp)
