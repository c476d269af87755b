# Lock-order core: ranked_mutex, lock_in_order, tracked_mutex / lock_class graph (issue 2).
faultsafe_test(order_catalogue SOURCES order_catalogue_test.cpp TIMEOUT 60 LABELS order)
faultsafe_test(order_ranked SOURCES order_ranked_test.cpp TIMEOUT 60 LABELS order)
faultsafe_test(order_core SOURCES order_core_test.cpp TIMEOUT 60 LABELS order)
faultsafe_test(order_threads SOURCES order_threads_test.cpp TIMEOUT 120 LABELS order)

# Death tests for the default handler (prints the report, aborts): one CTest test per kind. The
# program forks and checks the child's SIGABRT and report itself; see order_death.cpp for why this is
# not WILL_FAIL (CTest does not invert a death by signal).
foreach(_death order_cycle rank_inversion recursive_acquire unlock_not_held)
  faultsafe_test(order_death_${_death} SOURCES order_death.cpp NO_MAIN TIMEOUT 30 LABELS order ARGS ${_death})
endforeach()

# Clang's -Wthread-safety analysis over the annotations (only where clang++ exists).
find_program(FAULTSAFE_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14)
if(FAULTSAFE_CLANGXX)
  set(_ts_cmd ${FAULTSAFE_CLANGXX} -std=c++20 -Wthread-safety -Werror -fsyntax-only
              -I${PROJECT_SOURCE_DIR}/include)
  add_test(NAME order_thread_safety_good
           COMMAND ${_ts_cmd} ${CMAKE_CURRENT_SOURCE_DIR}/thread_safety/good.cpp)
  # bad.cpp reads guarded data without its lock, writes it under a read lock, returns holding a lock
  # and releases one twice: the analysis must reject it. Not a bare WILL_FAIL (which would also pass on a missing file or
  # header): expect_rejected.cmake requires the compile to fail WITH -Wthread-safety errors, 4 of them.
  string(REPLACE ";" "|" _ts_flags "-std=c++20;-Wthread-safety;-Werror;-fsyntax-only;-I${PROJECT_SOURCE_DIR}/include")
  add_test(NAME order_thread_safety_bad
           COMMAND ${CMAKE_COMMAND} -DCOMPILER=${FAULTSAFE_CLANGXX} "-DFLAGS=${_ts_flags}"
                   -DFILE=${CMAKE_CURRENT_SOURCE_DIR}/thread_safety/bad.cpp -DEXPECTED_ERRORS=4
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/thread_safety/expect_rejected.cmake)
  # faultsafe's own internal locks: channel, server, process, ramfs and the pager are annotated.
  add_test(NAME order_thread_safety_library
           COMMAND ${_ts_cmd} ${CMAKE_CURRENT_SOURCE_DIR}/thread_safety/library.cpp)
  set_tests_properties(order_thread_safety_good order_thread_safety_bad order_thread_safety_library
                       PROPERTIES TIMEOUT 120 LABELS order)
endif()

# faultsafe's own locks are ranked and checked (an internal inversion is reported).
faultsafe_test(internal_locks SOURCES internal_locks_test.cpp TIMEOUT 60 LABELS order)
