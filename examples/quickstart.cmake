# The README's runnable example (the README quotes examples/quickstart/main.cpp verbatim).
faultsafe_example(quickstart quickstart/main.cpp)
if(FAULTSAFE_BUILD_TESTS)
  add_test(NAME example_quickstart COMMAND quickstart)
  set_tests_properties(example_quickstart PROPERTIES TIMEOUT 30 SKIP_RETURN_CODE 77 LABELS "examples")
endif()
