# Package test: install into a temporary prefix and build a consumer with find_package(faultsafe CONFIG).
add_test(NAME install_consumer
         COMMAND ${CMAKE_COMMAND} -DSRC=${PROJECT_SOURCE_DIR} -DBIN=${PROJECT_BINARY_DIR}
                 -DWORK=${CMAKE_CURRENT_BINARY_DIR}/install_check -DCXX=${CMAKE_CXX_COMPILER}
                 -P ${PROJECT_SOURCE_DIR}/cmake/install_check.cmake)
set_tests_properties(install_consumer PROPERTIES TIMEOUT 240 LABELS "package")
