// Helpers of the vm_* tests that map ramfs files through the process API (resmgr/ramfs.hpp).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include <faultsafe/resmgr/process.hpp>

#include "vm_support.hpp"

namespace vmtest {

/// Creates `path` with `size` pattern() bytes through the process API; returns an fd opened with
/// `flags` (the creating O_RDWR one, or a second open when flags asks for another access mode).
inline int make_ramfs_file(faultsafe::process& p, const char* path, std::size_t size, int flags = O_RDWR) {
  auto fd = p.open(path, O_CREAT | O_RDWR, 0644);
  REQUIRE(fd.ok());
  std::string chunk(1 << 16, '\0');
  for (std::size_t off = 0; off < size; off += chunk.size()) {
    const std::size_t n = std::min(chunk.size(), size - off);
    for (std::size_t i = 0; i < n; ++i) chunk[i] = static_cast<char>(pattern(off + i));
    REQUIRE(p.pwrite(*fd, chunk.data(), n, static_cast<off_t>(off)).value() == n);
  }
  if ((flags & O_ACCMODE) == O_RDWR) return *fd;
  REQUIRE(p.close(*fd).ok());
  auto fd2 = p.open(path, flags);
  REQUIRE(fd2.ok());
  return *fd2;
}

}  // namespace vmtest
