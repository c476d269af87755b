# colin: Colin's lock-up (seed) with real servers, a real address space and real userfaultfd faults.
# `colin --naive` must report the cycle through the wait-for graph and unwind; `colin --faultsafe`
# must complete with verified data.
faultsafe_example(colin ${CMAKE_CURRENT_SOURCE_DIR}/colin/main.cpp)
