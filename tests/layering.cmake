# The header layering rule (order < activity < sync < vm < ipc < resmgr): no header includes one of a
# higher layer, directly or through a layerless header (issue 11).
faultsafe_test(layering SOURCES layering_test.cpp TIMEOUT 60 LABELS layering)
target_compile_definitions(layering PRIVATE FAULTSAFE_INCLUDE_DIR="${PROJECT_SOURCE_DIR}/include")
