// faultsafe/vm/page_source.hpp: where the pager gets pages from.
//
// Defines `page_in_request`, `page_in_result`, the abstract `page_source`, and `memfd_page_source`,
// the in-process source for a file whose data lives in a memfd (the ramfs store; also the benchmark's
// source). Phase 2 adds a source that sends the request to the file's server (resmgr/), so the
// server's range lock and handlers are on the page-in path.
//
// Contract of page_in (for every source)
// - Make every page of the file range [req.offset, req.offset + out.length) present in the memfd's
//   page cache with the file's data (a hole reads as zeros), where out.length >= req.fault_offset +
//   page_size - req.offset (the faulting page is always covered) and out.length <= req.length. The
//   pager then maps them with UFFDIO_CONTINUE: no copy. In a MAP_SHARED mapping writes through the
//   mapping land in the file; a MAP_PRIVATE mapping gets the page read-only and the kernel copies it
//   at its first write (as for any private file mapping). When req.minor is true the kernel has just
//   seen the faulting page in the page cache.
// - A source may leave out a prefix of the window (out.first, a page multiple, default 0): then only
//   [req.offset + out.first, req.offset + out.length) is present and mapped. A demand page-in must still cover the faulting
//   page (out.first <= req.fault_offset - req.offset); the resmgr's page-in uses it when part of the
//   window is locked by someone else and it serves the faulting page alone (resmgr/iofunc.hpp).
// - Read-ahead requests (req.readahead: the pager maps ahead of a sequential reader; fault_offset is
//   then the window start and no thread waits) are best effort: any out.length <= req.length, and an
//   error only cancels the read-ahead.
// - An error (any non-zero error_code) fails the fault: the faulting thread gets SIGBUS at the
//   faulting access (UFFDIO_POISON), never a hang. A fault past end-of-file must fail (kernel mmap
//   semantics: SIGBUS); ENXIO is the conventional code.
// - page_in must return in bounded time, also when the file's server stops (then with an error):
//   a fault thread and any munmap of the region wait for it.
// - Called concurrently from several fault threads, for overlapping ranges too.
// Lock order: called with the region lock (rank 20) held shared, or in single_lock mode with the
// aspace map lock (rank 10) held exclusively; a source may take ranks above 20 on the calling thread
// (a server's range lock is taken on the server's thread, so no rank constraint applies there).
// Memory ordering: memfd_page_source caches the file size relaxed (a stale size only costs an fstat).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>

#include "faulting_thread.hpp"

namespace faultsafe {

/// The system page size (4096 on the supported targets).
inline constexpr std::size_t vm_page_size = 4096;

/// One page-in. File offsets are page aligned; `length` is a multiple of the page size.
struct page_in_request {
  const void* file = nullptr;        ///< opaque identity of the file (the server's attr), from the mapping
  int memfd = -1;                    ///< the file's memfd, -1 if none
  std::uint64_t offset = 0;          ///< file offset of the window
  std::size_t length = 0;            ///< window length (fault-around)
  std::uint64_t fault_offset = 0;    ///< file offset of the faulting page, inside the window
  std::uintptr_t fault_address = 0;  ///< the faulting address (exact, page aligned by the kernel)
  bool write = false;                ///< the access was a write
  bool minor = false;                ///< the faulting page is already in the page cache
  bool readahead = false;            ///< no thread waits: best effort, any out.length <= length is fine
  faulting_thread_info thread;       ///< the faulting thread (tid always; id/activity when announced)
};

/// What page_in achieved: bytes valid from req.offset + first up to
/// req.offset + length.
struct page_in_result {
  std::size_t length = 0;  ///< end of the valid bytes, counted from req.offset
  std::size_t first = 0;   ///< start of the valid bytes, counted from req.offset (a page multiple, < length)
};

/// Abstract page source; see the header for the contract.
class page_source {
 public:
  virtual ~page_source() = default;
  /// Effects: see header. Returns: {} on success (with out.length set), else the reason the fault fails.
  [[nodiscard]] virtual std::error_code page_in(const page_in_request& req, page_in_result& out) = 0;
  /// The file's name for reports (wait-for graph: "fault 0x... (file nfs:/nfs/a offset 4096)"); empty
  /// if unknown. Called once per mapping, by the thread that maps (aspace::try_map keeps a copy for
  /// the mapping's faults); must not block. Throws: std::bad_alloc.
  [[nodiscard]] virtual std::string describe() const { return {}; }
  /// The memfd offset of the file's byte 0 (non-zero when a server keeps many files in one memfd,
  /// resmgr/file_store.hpp): reports subtract it to name file offsets. Must not block.
  [[nodiscard]] virtual std::uint64_t store_base() const noexcept { return 0; }
};

/// A file kept in a memfd, read directly (no server). Size changes: the cached size is refreshed with
/// fstat whenever a request reaches past it, so growth is seen; a file must not shrink below a live
/// mapping's faulted range (as with the kernel, the consequence would be SIGBUS on later faults).
/// Whoever grows the memfd calls file_grown() (vm/poisoned_pages.hpp) after the growth, so that pages
/// refused past the old end (SIGBUS) are served again.
/// Thread-safety: page_in may be called concurrently. Lifetime: does not own the fd.
class memfd_page_source final : public page_source {
 public:
  explicit memfd_page_source(int memfd) noexcept : fd_(memfd) {}

  [[nodiscard]] std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    std::uint64_t size = size_.load(std::memory_order_relaxed);
    if (req.offset + req.length > size) {
      struct stat st {};
      if (::fstat(fd_, &st) != 0) return {errno, std::generic_category()};
      size = static_cast<std::uint64_t>(st.st_size);
      size_.store(size, std::memory_order_relaxed);
    }
    if (req.fault_offset >= size) return std::make_error_code(std::errc::no_such_device_or_address);
    const std::uint64_t end_in_file = (size + vm_page_size - 1) & ~std::uint64_t{vm_page_size - 1};
    const std::size_t len = static_cast<std::size_t>(
        req.offset + req.length <= end_in_file ? req.length : end_in_file - req.offset);
    // The kernel saw the faulting page cached (MINOR): map what is there; UFFDIO_CONTINUE stops at
    // the first hole, which faults again later as MISSING. Otherwise allocate the holes (zeros),
    // keeping existing data: fallocate never overwrites.
    if (!req.minor && !req.readahead && ::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(req.offset), static_cast<off_t>(len)) != 0)
      return {errno, std::generic_category()};
    out.length = len;
    return {};
  }

 private:
  int fd_;
  std::atomic<std::uint64_t> size_{0};
};

}  // namespace faultsafe
