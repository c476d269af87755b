// faultsafe/vm/detail/pagemap.hpp: which pages of this process's own mappings have a page-table entry.
//
// Defines detail::mapped_pages(). Not for users. mincore(2) cannot tell: for a file mapping (a MAP_PRIVATE
// one maps the memfd too, vm/aspace.hpp) it reports the page cache, also where the mapping has no entry
// yet and its touch would fault. /proc/self/pagemap reports the entry itself (bit 63 present, bit 62
// swapped). Thread-safety: any thread (one process-wide read-only fd, opened once).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace faultsafe::detail {

/// Effects: present[i] = 1 for each of the npages pages from the page-aligned address pg0 that has a
/// page-table entry in this process (present or swapped), else 0. Unknown (pagemap unreadable, e.g. a
/// restricted /proc) counts as absent. Complexity: one pread per 256 pages. Throws: nothing.
inline void mapped_pages(std::uintptr_t pg0, std::size_t npages, unsigned char* present) noexcept {
  constexpr std::size_t page = 4096;
  static const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  std::memset(present, 0, npages);
  if (fd < 0) return;
  std::uint64_t e[256];
  for (std::size_t i = 0; i < npages;) {
    const std::size_t k = std::min<std::size_t>(npages - i, 256);
    const ssize_t r = ::pread(fd, e, k * sizeof e[0], static_cast<off_t>((pg0 / page + i) * sizeof e[0]));
    if (r <= 0) return;
    const std::size_t got = static_cast<std::size_t>(r) / sizeof e[0];
    for (std::size_t j = 0; j < got; ++j) present[i + j] = (e[j] >> 62) != 0 ? 1 : 0;
    i += got;
  }
}

}  // namespace faultsafe::detail
