# kv: the guide's example (README "Writing your own server"): a key-value server with a validating
# write, a computed file, per-open state, a second server calling it, and a client mapping a key.
faultsafe_example(kv kv/main.cpp)
if(FAULTSAFE_BUILD_TESTS)
  add_test(NAME example_kv COMMAND kv)
  set_tests_properties(example_kv PROPERTIES TIMEOUT 60 SKIP_RETURN_CODE 77 LABELS "examples;resmgr")
endif()
