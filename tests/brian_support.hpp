// Shared helpers of the brian_* tests (Brian's lock-up: read(fd) into a mapping of the same file):
// pattern files in a ramfs, a byte model of the file, a recording violation handler, a watchdog.
#pragma once

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "faultsafe/resmgr/direct_copy.hpp"
#include "faultsafe/resmgr/process.hpp"
#include "faultsafe/resmgr/ramfs.hpp"
#include "support/files.hpp"
#include "support/signals.hpp"
#include "vm_support.hpp"

namespace briantest {

using vmtest::pattern;

/// Creates `path` with `size` pattern bytes through `p` and returns an O_RDWR fd; `model` gets the bytes.
inline int make_file(faultsafe::process& p, const char* path, std::size_t size, std::vector<std::uint8_t>& model) {
  return test_support::make_pattern_file(p, path, size, O_RDWR, &model);
}

using test_support::file_bytes;

/// Index of the first difference, or -1.
inline long first_diff(const std::uint8_t* a, const std::uint8_t* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return static_cast<long>(i);
  return -1;
}

/// doctest installs its own SIGSEGV/SIGBUS handlers at the start of each test case: put the guarded
/// copy's handler back (a server copy into a bad client page must become EFAULT, not a test crash).
/// A signal sent by a process (not a fault) fails the test (support/signals.hpp).
inline void restore_guarded_copy_handler() {
  test_support::install_screened_guarded_copy_handler(SIGSEGV);
  test_support::install_screened_guarded_copy_handler(SIGBUS);
}

/// Records every violation (the default handler aborts): installed for a test's scope.
struct recording {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
};

inline bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

}  // namespace briantest
