// faultsafe/vm/private_copies.hpp: a file's shrink drops the private copies that MAP_PRIVATE mappings
// of this process hold past its new end, as Linux does.
//
// Defines `private_copies` (the process-wide record of the MAP_PRIVATE file mappings of this process's
// aspaces: address range, memfd and memfd offset) and `file_shrunk()`, which a file's owner calls when
// the file shrinks. A private mapping maps the file's memfd MAP_PRIVATE (vm/aspace.hpp): a page not
// yet written is the page cache's page, and the shrink's punch removes it from every mapping; a page
// that was written is a private (anonymous) copy, which a punch leaves alone. Linux's truncate removes
// those copies as well from the first whole page past the new end (truncate_pagecache unmaps "even
// COWed private pages"), so that every access there is SIGBUS until the file grows again. file_shrunk
// does the same for faultsafe's mappings: madvise(MADV_DONTNEED) of the recorded private mappings'
// pages backed by the dropped bytes; their next access faults, the page-in refuses a page past the
// end (SIGBUS, poisoned: vm/poisoned_pages.hpp), and a growth serves it again (zeros, or what the file
// holds then).
//
// Only the aspaces of this process are recorded (aspace::try_map): the pager of a server cannot zap a
// page of another process (README, "Across processes": there such a copy keeps its bytes).
//
// Invariant (as poisoned_pages): a record exists only while its addresses are mapped by the aspace
// that recorded them. record() runs before the region is linked (nobody can unmap it yet); forget()
// runs under the region lock held exclusively BEFORE the pages are unmapped (munmap, the aspace's
// destruction). Every zap happens under this registry's mutex with the record present, so it never
// touches an address that was unmapped and reused. Records are keyed by the memfd's inode as well as
// its number, so a number reused by another file's memfd never names an old mapping.
// Ordering against faults: the caller shrinks under the file's range lock held exclusively from the
// new end (resmgr/iofunc.hpp): a page-in of a dropped page waits for it and then sees the new size,
// so no private copy past the end can be made between the punch and the zap (a write to a punched
// page faults first).
//
// Thread-safety: every member may be called from any thread. Lock order: a leaf mutex (rank::leaf),
// held across the madvise calls (which never wait for a userspace lock or a fault).
// Complexity: record / forget O(R) where R is the number of recorded mappings (forget only when some
// are recorded); shrunk O(R) plus the pages zapped, nothing when no private mapping exists.
#pragma once

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../order/ranked_mutex.hpp"
#include "page_source.hpp"

namespace faultsafe {

/// See the header comment.
class private_copies {
 public:
  /// The process's registry. Never destroyed: aspaces in static objects may outlive it.
  [[nodiscard]] static private_copies& instance() noexcept {
    static private_copies* const p = new private_copies;
    return *p;
  }

  /// Effects: records that `owner` (an aspace) maps [start, end) MAP_PRIVATE from `memfd` at offset
  /// `off`. Returns: false if the record could not be made (no memory or fstat failed); the mapping
  /// then keeps copies past the end after a shrink. Requires: the range is not yet reachable by an
  /// unmap of `owner` (see header).
  [[nodiscard]] bool record(const void* owner, std::uintptr_t start, std::uintptr_t end, int memfd, std::uint64_t off) noexcept {
    struct ::stat st {};
    if (::fstat(memfd, &st) != 0) return false;
    exclusive_guard<mutex_type> g(mu_);
    try {
      v_.push_back(entry{owner, start, end, memfd, static_cast<std::uint64_t>(st.st_ino), off});
    } catch (...) {
      return false;
    }
    count_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  /// Effects: drops `owner`'s records of [from, to) (a record partly inside keeps its other parts).
  /// Requires: called before those pages are unmapped, by the thread that unmaps them holding their
  /// region exclusively. Throws: nothing (a part that cannot be kept for lack of memory is dropped).
  void forget(const void* owner, std::uintptr_t from, std::uintptr_t to) noexcept {
    if (count_.load(std::memory_order_relaxed) == 0) return;  // records of owner are made under its locks
    exclusive_guard<mutex_type> g(mu_);
    std::vector<entry> tails;
    for (auto it = v_.begin(); it != v_.end();) {
      entry& e = *it;
      if (e.owner != owner || e.end <= from || e.start >= to) {
        ++it;
        continue;
      }
      if (e.end > to) {  // the part after [from, to)
        try {
          tails.push_back(entry{e.owner, to, e.end, e.memfd, e.ino, e.off + (to - e.start)});
        } catch (...) {
        }
      }
      if (e.start < from) {  // the part before stays in place
        e.end = from;
        ++it;
      } else {
        it = v_.erase(it);
      }
    }
    for (const entry& t : tails) {
      try {
        v_.push_back(t);
      } catch (...) {
      }
    }
    count_.store(v_.size(), std::memory_order_relaxed);
  }

  /// Effects: the bytes [from, to) of `memfd` (page aligned: `from` is the first whole page past the
  /// new end) are no longer part of its file: every recorded private mapping loses its pages backed by
  /// them (see header). Call after the punch, under the shrink's range lock.
  void shrunk(int memfd, std::uint64_t from, std::uint64_t to) noexcept {
    if (from >= to || count_.load(std::memory_order_relaxed) == 0) return;
    struct ::stat st {};
    if (::fstat(memfd, &st) != 0) return;
    const auto ino = static_cast<std::uint64_t>(st.st_ino);
    exclusive_guard<mutex_type> g(mu_);
    for (const entry& e : v_) {
      if (e.memfd != memfd || e.ino != ino) continue;
      const std::uint64_t len = e.end - e.start;
      const std::uint64_t lo = std::max(from, e.off), hi = std::min(to, e.off + len);
      if (lo >= hi) continue;
      (void)::madvise(reinterpret_cast<void*>(e.start + (lo - e.off)), hi - lo, MADV_DONTNEED);
    }
  }

  /// The number of recorded mappings (for tests).
  [[nodiscard]] std::size_t size() const noexcept { return count_.load(std::memory_order_relaxed); }

 private:
  using mutex_type = ranked_mutex<rank::leaf>;
  struct entry {
    const void* owner;
    std::uintptr_t start, end;
    int memfd;
    std::uint64_t ino;
    std::uint64_t off;  // memfd offset of start
  };

  private_copies() = default;

  mutable mutex_type mu_{"private copies"};
  std::vector<entry> v_ FAULTSAFE_GUARDED_BY(mu_);
  std::atomic<std::size_t> count_{0};
};

/// Effects: bytes [from, to) of `memfd` are no longer part of its file (it shrank; `from` is the first
/// whole page past the new end): the private copies that MAP_PRIVATE faultsafe mappings of this
/// process hold of them are dropped, as Linux's truncate does (see private_copies). resmgr's files
/// call it on every shrink. Lock order: takes a leaf mutex. Thread-safety: any thread.
inline void file_shrunk(int memfd, std::uint64_t from, std::uint64_t to) noexcept {
  private_copies::instance().shrunk(memfd, from, to);
}

}  // namespace faultsafe
