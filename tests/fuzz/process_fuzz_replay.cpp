// Plain driver for the process fuzzing harness (always built, no libFuzzer needed): replays every file
// of the checked-in corpus (tests/fuzz/corpus, the first argument), then `extra` inputs generated from
// a fixed seed (dense operation codes: every byte is an operation), through the same harness and model
// as the libFuzzer target. Any model mismatch or lock-order violation (strict_violation_handler) aborts (the test fails); a watchdog turns a hang into a
// failure.
//
// Usage: process_fuzz_replay <corpus dir> [extra random inputs = 200] [seed = 1]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <faultsafe/order/violation.hpp>

#include "../resmgr_test_util.hpp"
#include "process_harness.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <corpus dir> [extra inputs] [seed]\n", argv[0]);
    return 2;
  }
  const int extra = argc > 2 ? std::atoi(argv[2]) : 200;
  const unsigned seed = argc > 3 ? static_cast<unsigned>(std::atoi(argv[3])) : 1u;
  (void)faultsafe::set_violation_handler(faultsafe::strict_violation_handler);
  faultsafe_test::watchdog wd("process_fuzz_replay", std::chrono::seconds(120));
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(argv[1]))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "FAIL: no corpus files in %s\n", argv[1]);
    return 1;
  }
  std::size_t bytes = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bytes += data.size();
    fuzzharness::run_process_sequence(data.data(), data.size());
  }
  std::mt19937 rng(seed);
  for (int i = 0; i < extra; ++i) {
    std::vector<std::uint8_t> data(64 + rng() % 512);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    fuzzharness::run_process_sequence(data.data(), data.size(), fuzzharness::encoding::dense);
  }
  std::printf("process_fuzz_replay: %zu corpus inputs (%zu bytes) and %d generated inputs matched the model\n",
              files.size(), bytes, extra);
  return 0;
}
