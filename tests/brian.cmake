# Brian's lock-up (issue 6): the direct copy path, the fault-reentrancy guard (range self-conflicts
# and pool self-deadlocks), and the brian example in both modes. userfaultfd tests exit 77 (skipped,
# reason printed) when the kernel refuses userfaultfd.
faultsafe_test(brian_direct_copy_test SOURCES brian_direct_copy_test.cpp TIMEOUT 60 LABELS brian vm)
faultsafe_test(brian_guard_test SOURCES brian_guard_test.cpp TIMEOUT 90 LABELS brian vm)
# A writer queued between a guarded read and its page-in (model finding 2): fault injection stalls the
# read holding its range (the whole executable is built with FAULTSAFE_FAULT_INJECTION=1).
faultsafe_test(brian_writer_test SOURCES brian_writer_test.cpp TIMEOUT 90 LABELS brian vm)
target_compile_definitions(brian_writer_test PRIVATE FAULTSAFE_FAULT_INJECTION=1 FAULTSAFE_FAULT_INJECTION_IN_RELEASE=1)
# The example checks itself: exit 0 only when the mode's expectation holds (77: userfaultfd refused).
if(FAULTSAFE_BUILD_EXAMPLES)
  add_test(NAME example_brian_naive COMMAND $<TARGET_FILE:brian> --naive)
  add_test(NAME example_brian_faultsafe COMMAND $<TARGET_FILE:brian> --faultsafe)
  set_tests_properties(example_brian_naive example_brian_faultsafe PROPERTIES TIMEOUT 60 LABELS "brian;vm" SKIP_RETURN_CODE 77)
  # Across a real process boundary (fs and Bob are two OS processes): both uffd modes.
  add_test(NAME example_brian_naive_processes COMMAND $<TARGET_FILE:brian> --naive --processes)
  add_test(NAME example_brian_faultsafe_processes COMMAND $<TARGET_FILE:brian> --faultsafe --processes)
  set_tests_properties(example_brian_naive_processes example_brian_faultsafe_processes PROPERTIES TIMEOUT 60 LABELS "brian;vm" SKIP_RETURN_CODE 77)
endif()
# The channel's spin/park policy for long handlers (size-aware sender spin, adaptive receiver spin,
# same-CPU rule): deadlines, cancel, stop, blocked servers, one shared core, a stress; all watchdogged.
faultsafe_test(brian_spin_test SOURCES brian_spin_test.cpp TIMEOUT 120 LABELS brian channel)
