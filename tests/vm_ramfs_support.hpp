// Helpers of the vm_* tests that map ramfs files through the process API (resmgr/ramfs.hpp).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include <faultsafe/resmgr/process.hpp>

#include "support/files.hpp"
#include "vm_support.hpp"

namespace vmtest {

/// A pattern file through the process API (tests/support/files.hpp).
inline int make_ramfs_file(faultsafe::process& p, const char* path, std::size_t size, int flags = O_RDWR) {
  return test_support::make_pattern_file(p, path, size, flags);
}

}  // namespace vmtest
