// libFuzzer target: random sequences of process API calls checked against a model of the files
// (see process_harness.hpp); any lock-order violation aborts. Built only with -DFAULTSAFE_BUILD_FUZZERS=ON and clang
// (-fsanitize=fuzzer,address,undefined). Run: process_fuzzer -max_total_time=60 CORPUS_DIR
#include <cstddef>
#include <cstdint>

#include <faultsafe/order/violation.hpp>

#include "process_harness.hpp"

// Any lock-order or lock-up violation the checker finds (even one it resolved) aborts: a crash.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)faultsafe::set_violation_handler(faultsafe::strict_violation_handler);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzzharness::run_process_sequence(data, size);
  return 0;
}
