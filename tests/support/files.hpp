// Test support shared by every test that works on files through the client API: the pattern byte
// function, a pattern file made in any server (ramfs, kv, ...) through a faultsafe::process, and the
// whole file read back with pread. One definition each (the vm_*, brian_* and resmgr_* tests use them).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <faultsafe/resmgr/process.hpp>

#include "pattern.hpp"

namespace test_support {

/// Effects: creates `path` through `p` with `size` pattern() bytes (written 64 KiB at a time) and
/// returns an fd opened with `flags` (the creating O_RDWR one, or a second open when `flags` asks for
/// another access mode). If `model` is given it receives the bytes. Fails the test on any error.
inline int make_pattern_file(faultsafe::process& p, const char* path, std::size_t size, int flags = O_RDWR,
                             std::vector<std::uint8_t>* model = nullptr) {
  auto fd = p.open(path, O_CREAT | O_RDWR, 0644);
  REQUIRE(fd.ok());
  std::vector<std::uint8_t> chunk(std::size_t{1} << 16);
  for (std::size_t off = 0; off < size; off += chunk.size()) {
    const std::size_t n = std::min(chunk.size(), size - off);
    for (std::size_t i = 0; i < n; ++i) chunk[i] = pattern(off + i);
    REQUIRE(p.pwrite(*fd, chunk.data(), n, static_cast<off_t>(off)).value() == n);
  }
  if (model != nullptr) {
    model->resize(size);
    for (std::size_t i = 0; i < size; ++i) (*model)[i] = pattern(i);
  }
  if ((flags & O_ACCMODE) == O_RDWR) return *fd;
  REQUIRE(p.close(*fd).ok());
  auto fd2 = p.open(path, flags);
  REQUIRE(fd2.ok());
  return *fd2;
}

/// The whole file behind `fd`, read with pread into ordinary memory. Fails the test on any error.
inline std::vector<std::uint8_t> file_bytes(faultsafe::process& p, int fd) {
  auto st = p.fstat(fd);
  REQUIRE(st.ok());
  std::vector<std::uint8_t> out(static_cast<std::size_t>(st.value().st_size));
  std::size_t off = 0;
  while (off < out.size()) {
    auto r = p.pread(fd, out.data() + off, out.size() - off, static_cast<off_t>(off));
    REQUIRE(r.ok());
    REQUIRE(*r > 0);
    off += *r;
  }
  return out;
}

}  // namespace test_support
