# Channel and resource-manager tests (issue 4).
faultsafe_test(channel_basic SOURCES channel_basic.cpp TIMEOUT 90 LABELS ipc)
faultsafe_test(resmgr_basic SOURCES resmgr_basic.cpp TIMEOUT 90 LABELS resmgr)
faultsafe_test(resmgr_random SOURCES resmgr_random.cpp TIMEOUT 120 LABELS resmgr)
# The ramfs example checks itself and exits 0 only when every check passed.
if(FAULTSAFE_BUILD_EXAMPLES)
  add_test(NAME example_ramfs COMMAND $<TARGET_FILE:ramfs> --threads 4 --files 3 --rounds 30)
  set_tests_properties(example_ramfs PROPERTIES TIMEOUT 60 LABELS resmgr)
endif()
