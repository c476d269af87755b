# Runs COMPILER on FILE (with FLAGS, a |-separated list) and succeeds only if the compile FAILS with a
# -Wthread-safety diagnostic. Used for bad.cpp: a plain WILL_FAIL would also "pass" on a missing file,
# a missing header or a wrong flag; this checks that the analysis itself rejected the code.
string(REPLACE "|" ";" _flags "${FLAGS}")
execute_process(COMMAND ${COMPILER} ${_flags} ${FILE} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "${FILE} compiled: the thread-safety analysis did not reject it")
endif()
if(NOT err MATCHES "-Wthread-safety")
  message(FATAL_ERROR "${FILE} failed to compile, but not because of -Wthread-safety")
endif()
string(REGEX MATCHALL "error: [^\n]*-Wthread-safety[^\n]*" _errors "${err}")
list(LENGTH _errors n)
if(DEFINED EXPECTED_ERRORS AND NOT n EQUAL EXPECTED_ERRORS)
  message(FATAL_ERROR "expected ${EXPECTED_ERRORS} thread-safety errors, got ${n}")
endif()
message("rejected with ${n} thread-safety errors, as expected")
