// faultsafe/vm/poisoned_pages.hpp: pages poisoned by a failed page-in, served again once the file
// grows over them.
//
// Defines `poisoned_pages` (the process-wide record of the pages that pagers poisoned, keyed by the
// memfd and memfd offset that back them) and `file_grown()`, which a file's owner calls when the file
// grows. A failed page-in (typically a page at or past the end of a file that was truncated) ends in
// UFFDIO_POISON (vm/pager.hpp): the kernel leaves a poison marker in the page table, and every later
// access to that page raises SIGBUS until the marker is removed, where a kernel mapping of the file
// would read the file's bytes (zeros, or data written meanwhile) once the file covers the page again.
// So the pager records each page it poisons here, and file_grown(memfd, from, to) removes the markers
// of the recorded pages that back [from, to) of the memfd with madvise(MADV_DONTNEED) on that page
// alone: the next access faults again and is served by the pager from the file. MADV_DONTNEED on one
// page holding a poison marker drops the marker only (it zaps page-table entries; a marker holds no
// data): for a shared (shmem) mapping the page cache keeps the file's data, and in a private mapping
// only pages known to hold a marker are zapped, never one holding the client's own written data.
// resmgr's iofunc_attr calls file_grown() whenever a file's size grows (a truncate up, a write past
// the end, a fallocate); a user of memfd_page_source who grows its memfd calls it after the growth.
//
// Invariant: a record exists only while its page is still mapped by the region that poisoned it.
// record() is called by a fault thread holding the region lock shared (single_lock: the map lock),
// the region not dead; forget() is called by munmap (and the pager's stop) under the region lock held
// exclusively BEFORE the pages are unmapped. Every zap happens under this registry's mutex while the
// record is present, so it never touches an address that was unmapped and reused.
// Race with a growth (the page-in saw the old size, the growth is published and scanned before the
// record exists): the pager reads generation() for the page before its page-in; record() compares it
// after inserting the record and zaps the page itself if a growth touched the page's generation
// shard meanwhile. Generations are sharded by (memfd, 2 MiB block of offsets), so an unrelated file's
// growth only costs a retried fault when it shares a shard.
//
// Thread-safety: every member may be called from any thread. Lock order: the registry mutex is a leaf
// (rank::leaf); it is held across the madvise calls (which never wait for a userspace lock or a fault).
// Complexity: record O(log P); file_grown O(log P + pages zapped) when records exist, otherwise two
// atomic operations per 2 MiB shard touched (at most 64); forget O(P) when the owner has records, P
// the number of recorded pages in the process.
// Memory ordering: (1) seq_cst generation increments in file_grown, then (2) seq_cst load of the
// record count; (3) seq_cst increment of the count in record(), then (4) seq_cst load of the
// generation: in the single total order either file_grown's count load (2) comes after the
// increment (3) (it then takes the mutex and finds the record, or its increment (1) reaches record()
// through the mutex) or record()'s load (4) comes after the increment (1) and record() zaps the page.
// generation() is a seq_cst load as well (it must not be ordered after the page-in's size check).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <set>
#include <tuple>

#include "../order/ranked_mutex.hpp"
#include "page_source.hpp"

namespace faultsafe {

/// See the header comment.
class poisoned_pages {
 public:
  /// The process's registry. Never destroyed: aspaces and files in static objects may outlive it.
  [[nodiscard]] static poisoned_pages& instance() noexcept {
    static poisoned_pages* const p = new poisoned_pages;
    return *p;
  }

  /// The growth generation of the page at memfd offset `off` (page aligned). Read before the page-in
  /// whose failure may be recorded.
  [[nodiscard]] std::uint64_t generation(int memfd, std::uint64_t off) const noexcept {
    return gens_[shard(memfd, off)].load(std::memory_order_seq_cst);
  }

  /// Effects: records that `owner` (an aspace) poisoned the page at `addr`, backed by `memfd` at offset
  /// `off`; if the page's generation is no longer `gen` (a growth may have covered it since the
  /// page-in), zaps the page at once instead (its next access faults again). If the record cannot be
  /// allocated, the page stays poisoned until unmapped (the limit this registry otherwise removes).
  /// Requires: the page carries a poison marker set by the caller; the caller holds the lock that keeps
  /// the page's region mapped (see header).
  void record(const void* owner, int memfd, std::uint64_t off, std::uintptr_t addr, std::uint64_t gen) noexcept {
    exclusive_guard<mutex_type> g(mu_);
    try {
      set_.insert(entry{memfd, off, owner, addr});
    } catch (...) {
      return;
    }
    count_.fetch_add(1, std::memory_order_seq_cst);                                      // (3)
    if (gens_[shard(memfd, off)].load(std::memory_order_seq_cst) != gen) zap_locked(set_.find(entry{memfd, off, owner, addr}));  // (4)
  }

  /// Effects: drops `owner`'s records of pages in [from, to) (their markers stay). Requires: called
  /// before those pages are unmapped, by the thread that unmaps them holding their region exclusively.
  void forget(const void* owner, std::uintptr_t from, std::uintptr_t to) noexcept {
    if (count_.load(std::memory_order_relaxed) == 0) return;  // records of owner are made under its locks
    exclusive_guard<mutex_type> g(mu_);
    for (auto it = set_.begin(); it != set_.end();) {
      if (it->owner == owner && it->addr >= from && it->addr < to) {
        it = set_.erase(it);
        count_.fetch_sub(1, std::memory_order_relaxed);
      } else {
        ++it;
      }
    }
  }

  /// Effects: the bytes [from, to) of `memfd` became part of its file: every recorded page backed by
  /// them loses its poison marker (see header). Call after the new size is visible to page-ins.
  void grown(int memfd, std::uint64_t from, std::uint64_t to) noexcept {
    if (from >= to) return;
    const std::uint64_t first = from >> shard_shift, last = (to - 1) >> shard_shift;
    if (last - first >= shards) {
      for (auto& gen : gens_) gen.fetch_add(1, std::memory_order_seq_cst);  // (1)
    } else {
      for (std::uint64_t b = first; b <= last; ++b) gens_[shard(memfd, b << shard_shift)].fetch_add(1, std::memory_order_seq_cst);  // (1)
    }
    if (count_.load(std::memory_order_seq_cst) == 0) return;  // (2)
    const std::uint64_t lo = from & ~std::uint64_t{vm_page_size - 1};
    exclusive_guard<mutex_type> g(mu_);
    for (auto it = set_.lower_bound(entry{memfd, lo, nullptr, 0}); it != set_.end() && it->memfd == memfd && it->off < to;)
      it = zap_locked(it);
  }

  /// The number of recorded pages (for tests).
  [[nodiscard]] std::size_t size() const noexcept { return count_.load(std::memory_order_relaxed); }

 private:
  using mutex_type = ranked_mutex<rank::leaf>;
  struct entry {
    int memfd;
    std::uint64_t off;
    const void* owner;
    std::uintptr_t addr;
    bool operator<(const entry& o) const noexcept {
      return std::tie(memfd, off, owner, addr) < std::tie(o.memfd, o.off, o.owner, o.addr);
    }
  };
  static constexpr unsigned shard_shift = 21;  // 2 MiB of offsets per generation shard
  static constexpr std::size_t shards = 64;

  poisoned_pages() = default;

  static std::size_t shard(int memfd, std::uint64_t off) noexcept {
    const std::uint64_t h = ((off >> shard_shift) ^ (static_cast<std::uint64_t>(static_cast<unsigned>(memfd)) << 32)) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(h >> 58);  // 64 shards
  }

  // Requires: mu_. Effects: removes the marker of the record's page and the record.
  std::set<entry>::iterator zap_locked(std::set<entry>::iterator it) noexcept FAULTSAFE_REQUIRES(mu_) {
    if (it == set_.end()) return it;
    (void)::madvise(reinterpret_cast<void*>(it->addr), vm_page_size, MADV_DONTNEED);
    count_.fetch_sub(1, std::memory_order_relaxed);
    return set_.erase(it);
  }

  mutable mutex_type mu_{"poisoned pages"};
  std::set<entry> set_ FAULTSAFE_GUARDED_BY(mu_);
  std::atomic<std::size_t> count_{0};
  std::atomic<std::uint64_t> gens_[shards] = {};
};

/// Effects: bytes [from, to) of `memfd` became part of its file (the file grew): pages of faultsafe
/// mappings of them that a failed page-in poisoned are served again from their next access (see
/// poisoned_pages). resmgr's files call it on every growth; a memfd_page_source user calls it after
/// growing its memfd. Lock order: takes a leaf mutex when pages are recorded. Thread-safety: any thread.
inline void file_grown(int memfd, std::uint64_t from, std::uint64_t to) noexcept {
  poisoned_pages::instance().grown(memfd, from, to);
}

}  // namespace faultsafe
