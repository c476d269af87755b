# Wait-for graph hooked into the real blocking sites (range_lock, channel/servers) and Colin's lock-up.
faultsafe_test(wait_hooks SOURCES wait_hooks_test.cpp TIMEOUT 120 LABELS wait_graph colin)
# The colin example in both modes (exit 0 = the mode's expectation met; 77 = no userfaultfd: skipped).
if(FAULTSAFE_BUILD_EXAMPLES)
  add_test(NAME colin_naive COMMAND $<TARGET_FILE:colin> --naive)
  add_test(NAME colin_faultsafe COMMAND $<TARGET_FILE:colin> --faultsafe)
  set_tests_properties(colin_naive colin_faultsafe PROPERTIES TIMEOUT 60 SKIP_RETURN_CODE 77 LABELS "colin;wait_graph")
  # bob, nfs and io_pkt as three OS processes.
  add_test(NAME colin_naive_processes COMMAND $<TARGET_FILE:colin> --naive --processes)
  add_test(NAME colin_faultsafe_processes COMMAND $<TARGET_FILE:colin> --faultsafe --processes)
  set_tests_properties(colin_naive_processes colin_faultsafe_processes PROPERTIES TIMEOUT 60 SKIP_RETURN_CODE 77 LABELS "colin;vm")
endif()
