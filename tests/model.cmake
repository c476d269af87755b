# The Promela model of the protocol (model/, issue 13): SPIN checks every configuration of
# model/verify.py (the seed's naive designs and the findings must deadlock, with the wait chain
# printed; faultsafe's configurations must be free of invalid end states and non-progress cycles,
# and every request must return under weak fairness), and model/check_params.py checks the model's
# ranks, policies and pool rules against the headers. Exit 77 (skipped, reason printed) only when
# spin or a C compiler is missing. All of them together take well under 5 minutes on 2 cores.
# Label "nosan": the verifiers SPIN generates are not faultsafe code and do not change under our
# sanitizer flags, so the asan and tsan presets skip them (they cost ~15 minutes of CPU under TSan).
find_program(FAULTSAFE_PYTHON3 python3)
if(NOT FAULTSAFE_PYTHON3)
  message(STATUS "faultsafe: python3 not found, the model tests are not registered")
  return()
endif()
set(_model_dir ${PROJECT_SOURCE_DIR}/model)
add_test(NAME model_params COMMAND ${FAULTSAFE_PYTHON3} ${_model_dir}/check_params.py ${PROJECT_SOURCE_DIR})
set_tests_properties(model_params PROPERTIES TIMEOUT 30 LABELS "model;nosan")
foreach(_cfg brian_naive colin_naive faultsafe faultsafe_guard faultsafe_pool1 faultsafe_fail cross pool_wait guard_wait single_lock
             finding_pager pager_fixed finding_writer finding_writer_fifo)
  add_test(NAME model_${_cfg}
           COMMAND ${FAULTSAFE_PYTHON3} ${_model_dir}/verify.py ${_cfg} --workdir ${CMAKE_CURRENT_BINARY_DIR}/model-work)
  set_tests_properties(model_${_cfg} PROPERTIES TIMEOUT 900 LABELS "model;nosan" SKIP_RETURN_CODE 77)
endforeach()
