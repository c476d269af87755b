// libFuzzer target: random sequences of process API calls checked against a model of the files
// (see process_harness.hpp). Built only with -DFAULTSAFE_BUILD_FUZZERS=ON and clang
// (-fsanitize=fuzzer,address,undefined). Run: process_fuzzer -max_total_time=60 CORPUS_DIR
#include <cstddef>
#include <cstdint>

#include "process_harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzzharness::run_process_sequence(data, size);
  return 0;
}
