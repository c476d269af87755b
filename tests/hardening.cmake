# Hardening (issue 7): fault injection, the process-API sequence fuzzer, isolation, a bounded soak.
#
# Tests that need FAULTSAFE_INJECT compiled in define FAULTSAFE_FAULT_INJECTION=1 for their whole
# executable (the macro must have one value per program), in any build type.
function(faultsafe_hardening_injection target)
  target_compile_definitions(${target} PRIVATE FAULTSAFE_FAULT_INJECTION=1 FAULTSAFE_FAULT_INJECTION_IN_RELEASE=1)
endfunction()

# The hook compiles to nothing when the switch is off (static_asserts), and an armed schedule is
# never hit by the library then.
faultsafe_test(fault_injection_off_test SOURCES fault_injection_off_test.cpp TIMEOUT 60 LABELS hardening)

# The fuzzing harness, always built: replays the checked-in corpus plus 200 seeded random inputs.
faultsafe_test(process_fuzz_replay SOURCES fuzz/process_fuzz_replay.cpp NO_MAIN TIMEOUT 180 LABELS hardening
               ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus 200 1)

# libFuzzer target (clang only): cmake -DCMAKE_CXX_COMPILER=clang++-14 -DFAULTSAFE_BUILD_FUZZERS=ON ...
# ctest -L fuzz runs it for FAULTSAFE_FUZZ_SECONDS (default 60) over a build-dir copy of the corpus.
option(FAULTSAFE_BUILD_FUZZERS "Build the libFuzzer targets (clang only)" OFF)
set(FAULTSAFE_FUZZ_SECONDS 60 CACHE STRING "How long the CTest fuzz run lasts (seconds)")
if(FAULTSAFE_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "FAULTSAFE_BUILD_FUZZERS needs clang (e.g. -DCMAKE_CXX_COMPILER=clang++-14)")
  endif()
  add_executable(process_fuzzer fuzz/process_fuzzer.cpp)
  target_link_libraries(process_fuzzer PRIVATE faultsafe::faultsafe)
  target_include_directories(process_fuzzer PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_options(process_fuzzer PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer
                         -fno-sanitize-recover=all -Wall -Wextra -Werror)
  target_link_options(process_fuzzer PRIVATE -fsanitize=fuzzer,address,undefined)
  set(_fz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_corpus_work)
  file(MAKE_DIRECTORY ${_fz_work})
  add_test(NAME process_fuzzer_run
           COMMAND process_fuzzer -max_total_time=${FAULTSAFE_FUZZ_SECONDS} -timeout=30 -rss_limit_mb=4096
                   -print_final_stats=1 ${_fz_work} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus)
  math(EXPR _fz_timeout "${FAULTSAFE_FUZZ_SECONDS} + 120")
  # lsan.supp: thread_local storage of live pool threads, which clang-14's LeakSanitizer cannot see.
  set_tests_properties(process_fuzzer_run PROPERTIES TIMEOUT ${_fz_timeout} LABELS fuzz
                       ENVIRONMENT "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/lsan.supp")
endif()

# Isolation: credentials, handles, PROT_READ (forked child), buffer bounds, range locks held on
# behalf of a stuck client.
faultsafe_test(isolation_test SOURCES isolation_test.cpp TIMEOUT 90 LABELS hardening)

# Limits: fds per process (EMFILE), opens per client on a server (EMFILE), queued sends (EAGAIN).
faultsafe_test(isolation_limits_test SOURCES isolation_limits_test.cpp TIMEOUT 60 LABELS hardening)

# One test per injected fault (FAULTSAFE_FAULT_INJECTION=1 for the whole executable).
faultsafe_test(fault_injection_test SOURCES fault_injection_test.cpp TIMEOUT 120 LABELS hardening)
faultsafe_hardening_injection(fault_injection_test)

# Bounded soak with injected faults: FAULTSAFE_SOAK_SECONDS (default 60) of random load, run alone
# (RUN_SERIAL: it keeps both cores busy). Labels "soak" and "nosan": plain build only (the sanitizer
# presets exclude "nosan"; ctest -L soak runs it alone; FAULTSAFE_SOAK_SECONDS=600 for a longer run).
faultsafe_test(soak_test SOURCES soak_test.cpp TIMEOUT 300 LABELS soak nosan)
faultsafe_hardening_injection(soak_test)
target_compile_definitions(soak_test PRIVATE FAULTSAFE_SOAK_CORPUS="${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus")
set_tests_properties(soak_test PROPERTIES RUN_SERIAL TRUE)
