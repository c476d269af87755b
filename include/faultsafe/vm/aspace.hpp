// faultsafe/vm/aspace.hpp: the address space of one logical process.
//
// Defines `aspace` (its regions in a Boost.Intrusive red-black tree keyed by start address, one
// userfaultfd, a short structural lock and one reader/writer lock per region), `region`,
// `aspace_options`, `file_backing`, `map_request`, `mapping_info`, `tracked_mapping`, `adopt_userfaultfd`
// and `probe_userfaultfd()`.
//
// Memory is real: every region is a real mapping of this OS process, registered with the aspace's
// userfaultfd, so its first touches are real page faults served by a `pager` (vm/pager.hpp):
//   - shared file region: the file's memfd mapped MAP_SHARED at the file offset, registered
//     MISSING|MINOR; the pager asks the page source to make pages valid, then UFFDIO_CONTINUE maps the
//     page-cache pages (zero copy; writes land in the file);
//   - private file region: the file's memfd mapped MAP_PRIVATE at the file offset, registered
//     MISSING|MINOR and served exactly as a shared one (the page source makes the pages valid, then
//     UFFDIO_CONTINUE maps the page-cache pages, read-only in a private mapping); the kernel's
//     copy-on-write makes a page private at its first write. So, as on Linux, a private page that was
//     never written shows later changes of the file (it is the page cache's page), and a written one is
//     the mapping's own;
//   - anonymous region: private anonymous memory registered MISSING; UFFDIO_ZEROPAGE (zero-fill).
//     Shared anonymous memory gets a private memfd of its own and is then a shared file region.
//
// Locks (the README's lock hierarchy)
//   - map lock, rank 10 (rank::aspace_map): guards the tree. Held only to look up, insert or unlink;
//     never across I/O, a send, a fault or another lock wait. Fault service takes it shared for a
//     lookup and leaves it before taking the region lock.
//   - region lock, rank 20 (rank::region): fault service holds it shared while it pages in and maps
//     pages of that region; munmap/mprotect hold it exclusively, so they wait for in-flight fault
//     service on that region only.
//   - aspace_options::single_lock = true keeps the QNX behaviour of the seed instead: one lock for the
//     whole space (the map lock) held exclusively during fault service, munmap and mprotect. It exists
//     for the Colin example and for comparison; it is not the default.
//   - Both locks are wait-for-graph resources (vm/detail/rw_lock.hpp): they know their holders, a
//     contended acquisition records a lock wait, and if the graph breaks a reported cycle at that wait
//     the call fails with EDEADLK (munmap/mprotect/try_map return it; fault service fails the fault).
// Region lifetime: reference counted. The tree holds one reference; fault service holds one while it
// works (taken under the map lock). munmap marks the region dead under its exclusive lock, unmaps it,
// wakes any thread still blocked on a fault in it (the thread then retries and gets SIGSEGV, as on a
// kernel after munmap), unlinks it, and the last reference frees it. Before the kernel munmap, the
// range's records of poisoned pages are dropped (vm/poisoned_pages.hpp), so a growing file never
// zaps an address that was unmapped and reused; the pager's stop drops them too (nothing serves the
// pages any more: they stay SIGBUS).
// What a fault thread may touch, and what keeps it alive: the region object and what it owns (its
// attributes, its copy of the page source's name, its lock) are kept by the thread's reference; the
// mapping's page source, memfd and file identity (not owned) only under the region lock, after
// checking that the region is not dead. munmap takes that lock exclusively and marks the region dead,
// so once munmap (or the mprotect that replaced a region by parts, followed by the munmap of the parts)
// has returned, no fault thread uses the source of the unmapped range any more: the caller may then
// destroy it. The source's name is asked once, when the mapping is made.
// Region splitting: munmap and mprotect take any page range. A region only partly inside the range is
// replaced: under its exclusive lock (in-flight fault service on it finishes first) it is marked dead
// and "pending", the system call is made on the affected part only (the kernel splits the VMA; the
// userfaultfd registration of the remaining parts stays, munmap drops exactly the removed range), and
// new regions are built for the remaining parts (same backing with the file offset moved, protection,
// sharing, page source; each with its own region lock). Then, under the map lock (briefly), the old
// region is unlinked and the parts are linked. A fault that finds the old region dead in between is
// woken and retried (it then finds its part); a concurrent munmap/mprotect that meets a pending region
// waits (yielding) until its parts are linked, then looks the range up again.
// fork(): every region is MADV_DONTFORK, so a child process of fork() (a popen/system, a fork-based
// worker) has none of them: any access to one in the child is SIGSEGV, never wrong data. (Serving the
// child instead, with UFFD_FEATURE_EVENT_FORK, would make every fork() wait until a fault thread reads
// the event, so a fork with a lock a fault thread needs held would hang, and the parent's pager and
// servers would have to serve the child's copy for as long as it lives; without either, the kernel
// drops the registration in the child, where an unfilled page of a file mapping would be read from
// the memfd without the server's page-in and its locks.) Pass memory to a child through a file or an explicitly shared mapping made outside faultsafe.
// MAP_FIXED (map_request::replace): the range's existing regions of this aspace are unmapped first (an
// implicit munmap, as Linux does), then the new mapping is made with MAP_FIXED_NOREPLACE. Memory in the
// range that is not this aspace's (the OS process's own heap, another aspace) is never clobbered: EEXIST.
//
// Another OS process's memory (a client of a server in another process): `aspace(adopt_userfaultfd, ...)`
// builds an aspace over the userfaultfd that the client created and handed over (SCM_RIGHTS). The
// client maps and registers its memory itself (vm/served_memory.hpp) and the server records each
// mapping with try_track(); from then on the client's faults are served by this aspace's pager with
// the same region locks, windows, page sources and failure rules as a local mapping (the fill ioctls
// act on the client's memory: the kernel binds a userfaultfd to the address space that created it).
// Such an aspace never maps, unmaps or protects memory itself (try_map is EINVAL there): munmap() only
// forgets the range (after in-flight fault service on it finishes), and the pager keeps the regions in
// step with the client through the userfaultfd's events: UFFD_EVENT_UNMAP forgets the range
// (munmap), UFFD_EVENT_REMAP moves it (remote_moved), UFFD_EVENT_REMOVE (MADV_DONTNEED) needs
// nothing (the next touch faults and is served again). The kernel refuses a fill into a range that is no
// longer registered with this userfaultfd (ENOENT) and while an unmap event is unread (EAGAIN), so a
// pager never writes into memory the client has unmapped; a fill racing a munmap whose event is being
// handled finishes under the region lock before the range is forgotten. fork() in the client: its
// mappings are MADV_DONTFORK (as local ones; UFFD_FEATURE_EVENT_FORK is not used: it needs
// CAP_SYS_PTRACE and would make the server serve the child). Exit of the client: fills fail with ESRCH
// (the mm is gone) and are dropped; the server destroys the aspace when the connection ends. A fault on
// an address the aspace does not know waits until every UNMAP/REMAP event read before it is applied
// (one moving its region there may be in another fault thread's hands: read_event numbers them,
// event_applied() records their application), then is re-examined for up to 10 ms (a mapping the
// client registered without telling the server), then fails (SIGBUS): never a hang, never a busy loop.
//
// Errors: std::error_code with errno values; bad input (unaligned address, zero length, a memfd of -1)
// is EINVAL, never a crash.
//
// Thread-safety: every public member function may be called concurrently from any thread.
// Lifetime: destroy the pager (vm/pager.hpp) before its aspace; the destructor unmaps every region.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <bitset>
#include <boost/intrusive/set.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "../config.hpp"
#include "../order/ranked_mutex.hpp"
#include "../thread_annotations.hpp"
#include "detail/rw_lock.hpp"
#include "detail/uffd.hpp"
#include "page_source.hpp"
#include "poisoned_pages.hpp"
#include "private_copies.hpp"

namespace faultsafe {

class pager;
class aspace;

/// Options of an address space.
/// Tag of the constructor that adopts another process's userfaultfd.
struct adopt_userfaultfd_t {
  explicit adopt_userfaultfd_t() = default;
};
inline constexpr adopt_userfaultfd_t adopt_userfaultfd{};

struct aspace_options {
  /// true: one lock for the whole address space, held exclusively during fault service (the seed's
  /// QNX behaviour; lets Colin's lock-up happen). false (default): per-region locks.
  bool single_lock = false;
  /// Name used in lock reports ("Bob", "nfs", ...). Must outlive the aspace.
  const char* name = "aspace";
};

/// What a file mapping maps. The memfd and source are not owned: they must stay valid until the
/// munmap that removes the mapping's last page has returned (no fault thread uses them afterwards).
struct file_backing {
  int memfd = -1;                 ///< the file's data
  std::uint64_t offset = 0;       ///< file offset of the mapping's first byte (page aligned)
  const void* file = nullptr;     ///< opaque identity for the server side (e.g. its attr)
  page_source* source = nullptr;  ///< makes pages valid / fills them; required
};

/// A mapping another process made and registered with the userfaultfd it handed over
/// (aspace::try_track). Anonymous (MAP_PRIVATE, zero-filled) when `file` is empty.
struct tracked_mapping {
  void* addr = nullptr;    ///< start in the other process (page aligned)
  std::size_t length = 0;  ///< bytes (rounded up to pages)
  int prot = PROT_READ;
  bool shared = false;     ///< MAP_SHARED of file->memfd or MAP_PRIVATE (of file->memfd; anonymous without a file); registered MISSING|MINOR with a file
  std::optional<file_backing> file;
};

/// One mmap request. Anonymous when `file` is empty.
struct map_request {
  void* addr_hint = nullptr;  ///< where to map (a hint unless `fixed`)
  std::size_t length = 0;     ///< bytes (rounded up to pages)
  int prot = PROT_READ | PROT_WRITE;
  bool shared = false;        ///< MAP_SHARED (true) or MAP_PRIVATE
  bool fixed = false;         ///< map exactly at addr_hint, failing with EEXIST if anything is there
  /// With `fixed`: MAP_FIXED semantics, i.e. this aspace's mappings in the range are unmapped first
  /// (replaced). Without it `fixed` is MAP_FIXED_NOREPLACE (EEXIST). Memory not of this aspace is never
  /// replaced (EEXIST).
  bool replace = false;
  std::optional<file_backing> file;
};

/// A copy of a region's attributes (find()).
struct mapping_info {
  void* start = nullptr;
  std::size_t length = 0;
  int prot = 0;
  bool shared = false;
  bool anonymous = true;
  file_backing file;  ///< meaningful when !anonymous
};

/// Effects: checks that this process may create a userfaultfd with the features the pager needs.
/// Returns: {} if so; else the error, with `why` naming the cause (e.g. vm.unprivileged_userfaultfd).
[[nodiscard]] inline std::error_code probe_userfaultfd(std::string& why) {
  detail::uffd u;
  if (auto ec = detail::uffd::try_open(u, why)) return ec;
  if (!u.has(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM)) {
    why = "userfaultfd lacks MISSING_SHMEM/MINOR_SHMEM (Linux >= 5.13 required for shared file mappings)";
    return std::make_error_code(std::errc::function_not_supported);
  }
  return {};
}

/// One mapping. Attributes are immutable except prot (guarded by the region lock).
class region {
 public:
  [[nodiscard]] std::uintptr_t start() const noexcept { return start_; }
  [[nodiscard]] std::size_t length() const noexcept { return length_; }
  [[nodiscard]] std::uintptr_t end() const noexcept { return start_ + length_; }
  [[nodiscard]] bool shared() const noexcept { return shared_; }
  [[nodiscard]] bool anonymous() const noexcept { return !file_.has_value(); }
  [[nodiscard]] const std::optional<file_backing>& file() const noexcept { return file_; }
  [[nodiscard]] bool contains(std::uintptr_t a) const noexcept { return a >= start_ && a - start_ < length_; }

  region(const region&) = delete;
  region& operator=(const region&) = delete;
  ~region() = default;

 private:
  friend class aspace;
  friend class pager;
  friend struct region_start_key;

  region(std::uintptr_t start, std::size_t length, int prot, bool shared, std::optional<file_backing> file)
      : start_(start), length_(length), prot_(prot), shared_(shared), file_(std::move(file)) {}

  // The memfd and page source of shared anonymous memory, shared by the parts of a split region.
  struct owned_anon {
    int memfd = -1;
    std::unique_ptr<page_source> source;
    owned_anon(int fd, std::unique_ptr<page_source> src) noexcept : memfd(fd), source(std::move(src)) {}
    ~owned_anon() {
      if (memfd >= 0) ::close(memfd);
    }
    owned_anon(const owned_anon&) = delete;
    owned_anon& operator=(const owned_anon&) = delete;
  };

  // Effects: a new region for [s, e) of this one (s, e inside it, page aligned): same backing with the
  // file offset moved, sharing, anonymous owner; protection `prot`. Throws: std::bad_alloc.
  [[nodiscard]] region* part(std::uintptr_t s, std::uintptr_t e, int prot) const {
    std::optional<file_backing> f = file_;
    if (f) f->offset += s - start_;
    auto* r = new region(s, e - s, prot, shared_, f);
    r->source_name_ = source_name_;
    r->source_base_ = source_base_;
    r->owned_memfd_ = owned_memfd_;
    r->owned_ = owned_;
    r->born_ = born_;
    return r;
  }

  boost::intrusive::set_member_hook<> hook_;
  const std::uintptr_t start_;
  const std::size_t length_;
  int prot_;
  const bool shared_;
  std::optional<file_backing> file_;
  std::string source_name_;                       // file_->source->describe() when mapped (reports)
  std::uint64_t source_base_ = 0;                 // file_->source->store_base(): file offset = memfd offset - it
  int owned_memfd_ = -1;                          // shared anonymous memory: owned_->memfd
  std::shared_ptr<owned_anon> owned_;             // its memfd and source (shared with split parts)
  std::uint32_t born_ = 0;                        // remote: events read before it was tracked (aspace::read_event)
  detail::vm_rw_lock<rank::region> lock_{"region"};
  std::atomic<std::uint32_t> refs_{1};            // the tree's reference
  bool dead_ = false;                             // guarded by lock_ (single_lock: by the map lock)
  // Split: dead, and its remaining parts are not linked yet. (5) release store (parts linked), pairs
  // with (6). Set under lock_ before the lock is released; cleared under the map lock.
  std::atomic<bool> pending_{false};
  // Fault-around state (a heuristic: relaxed, races only cost a window size).
  std::atomic<std::uintptr_t> next_expected_{0};
  std::atomic<std::uintptr_t> stream_start_{0};
  std::atomic<std::uintptr_t> stream_end_{0};
  std::atomic<std::size_t> window_{0};
};

struct region_start_key {
  using type = std::uintptr_t;
  type operator()(const region& r) const noexcept { return r.start_; }
};

class aspace {
 public:
  /// Effects: opens the userfaultfd. Throws: std::system_error whose what() names the cause when the
  /// kernel refuses userfaultfd (mentioning vm.unprivileged_userfaultfd); std::bad_alloc.
  explicit aspace(aspace_options opts = {}) : opts_(opts), map_lock_(opts.name) {
    uffd_ = detail::uffd::open();
  }

  /// Effects: an aspace over another OS process's memory (see header): takes ownership of `uffd_fd`, a
  /// userfaultfd that process created (with `features` negotiated) and sent over. Throws:
  /// std::system_error (EBADF, EINVAL: not a userfaultfd; the fd is closed then); std::bad_alloc.
  aspace(adopt_userfaultfd_t, int uffd_fd, std::uint64_t features, aspace_options opts = {})
      : opts_(opts), map_lock_(opts.name), remote_(true) {
    if (auto ec = detail::uffd::try_adopt(uffd_, uffd_fd, features))
      throw std::system_error(ec, "faultsafe::aspace: adopt userfaultfd");
  }
  aspace(const aspace&) = delete;
  aspace& operator=(const aspace&) = delete;

  /// Effects: unmaps every region. Requires: no pager attached any more, no concurrent calls.
  ~aspace() {
    std::vector<region*> all;
    {
      detail::vm_exclusive_hold<map_lock_type> g(map_lock_);
      while (!tree_.empty()) {
        region& r = *tree_.begin();
        tree_.erase(tree_.iterator_to(r));
        all.push_back(&r);
      }
    }
    for (region* r : all) {
      poisoned_pages::instance().forget(this, r->start_, r->end());
      private_copies::instance().forget(this, r->start_, r->end());
      if (!remote_) ::munmap(reinterpret_cast<void*>(r->start_), r->length_);
      (void)uffd_.wake(r->start_, r->length_);
      release(r);
    }
  }

  [[nodiscard]] const aspace_options& options() const noexcept { return opts_; }
  [[nodiscard]] const char* name() const noexcept { return opts_.name; }
  /// Whether this aspace serves another process's memory (the adopting constructor).
  [[nodiscard]] bool remote() const noexcept { return remote_; }

  /// Effects: records `m`, a mapping the other process made and registered (MINOR for shared file
  /// mappings, MISSING otherwise) with the adopted userfaultfd, for fault service. Requires: remote().
  /// Returns: EINVAL (not remote, zero length, unaligned address or file offset, a file backing without
  /// memfd or source, a shared mapping without a file), EEXIST (a concurrent try_track of an overlapping
  /// range won), ESHUTDOWN (the pager has stopped). What was tracked in the range
  /// before is forgotten first (the process reused addresses it unmapped), as munmap() does, once the
  /// userfaultfd events of its unmapping are applied (waits for the fault threads, at most 2 s: see
  /// the body). Lock order: as munmap(); must not be called on a fault thread of this aspace's pager
  /// except by its own event handling. Complexity: O(log regions) plus munmap()'s.
  [[nodiscard]] std::error_code try_track(const tracked_mapping& m) {
    const auto a = reinterpret_cast<std::uintptr_t>(m.addr);
    if (!remote_ || m.length == 0 || a % vm_page_size != 0 || m.length > SIZE_MAX - a - vm_page_size ||
        (m.shared && !m.file) ||
        (m.file && (m.file->memfd < 0 || m.file->source == nullptr || m.file->offset % vm_page_size != 0)))
      return std::make_error_code(std::errc::invalid_argument);
    // The other process reused addresses it unmapped (or moved away with mremap). The kernel frees the
    // addresses before it queues the UNMAP/REMAP event, so ANOTHER thread of the process can map and
    // track them again before the event is even read: stamped now, the new region would look older
    // than that event, which would then forget (or move) it, and the new mapping's faults got SIGBUS
    // (test "a fault racing another thread's munmap or madvise events"). So first wait, bounded, for
    // the old mappings' events to be applied: the fault threads read them (the unmapping thread waits
    // in the kernel for that), and their handling forgets or moves what is tracked there. A process
    // that made no event (none is possible for a registered mapping with UNMAP and REMAP events on)
    // costs itself this wait, then what is still tracked there is forgotten now, as before.
    for (const auto until = std::chrono::steady_clock::now() + remote_event_wait;
         overlaps_any(m.addr, m.length) && std::chrono::steady_clock::now() < until;) {
      if (stopped_.load(std::memory_order_acquire)) return std::error_code(ESHUTDOWN, std::generic_category());  // (4) pairs with (3)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    if (auto ec = munmap(m.addr, m.length)) return ec;
    std::unique_ptr<region> r;
    try {
      std::string source_name;
      if (m.file) source_name = m.file->source->describe();
      r.reset(new region(a, round_up(m.length), m.prot, m.shared, m.file));
      r->source_name_ = std::move(source_name);
      r->source_base_ = m.file ? m.file->source->store_base() : 0;
    } catch (const std::bad_alloc&) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    {
      exclusive_guard<event_mutex> ge(event_mu_);  // (see read_event) an event read after this names an older mapping only if born_ < its ticket
      r->born_ = events_read_;
    }
    try {
      detail::vm_exclusive_hold<map_lock_type> g(map_lock_);
      if (stopped_.load(std::memory_order_relaxed)) return std::error_code(ESHUTDOWN, std::generic_category());
      auto it = tree_.lower_bound(r->end());
      if (it != tree_.begin() && std::prev(it)->end() > a) return std::make_error_code(std::errc::file_exists);  // a concurrent track won
      tree_.insert_unique(*r.release());
    } catch (const std::system_error& e) {
      return e.code();
    }
    return {};
  }

  /// Effects: creates a mapping as described by `req` and registers it for fault service; `out`
  /// receives its address. With `fixed` and `replace`, this aspace's mappings in the range are unmapped
  /// first (MAP_FIXED; threads blocked on faults there get SIGSEGV), waiting for fault service on them.
  /// Returns: EINVAL (zero length, unaligned hint with `fixed`, bad prot, a file
  /// backing without memfd or source, an unaligned file offset), EEXIST (`fixed` and occupied: without
  /// `replace` by anything, with it by memory that is not this aspace's),
  /// ENOTSUP (the kernel lacks the userfaultfd mode needed), ESHUTDOWN (the pager has stopped),
  /// or the errno of mmap/UFFDIO_REGISTER. Nothing is left mapped on failure.
  /// Lock order: takes the map lock briefly; must not be called holding a region lock of this aspace.
  /// Complexity: O(log regions) plus the system calls.
  [[nodiscard]] std::error_code try_map(const map_request& req, void*& out) {
    out = nullptr;
    if (req.length == 0 || remote_) return std::make_error_code(std::errc::invalid_argument);
    if ((req.prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) != 0) return std::make_error_code(std::errc::invalid_argument);
    if (req.fixed && (reinterpret_cast<std::uintptr_t>(req.addr_hint) % vm_page_size) != 0)
      return std::make_error_code(std::errc::invalid_argument);
    if (stopped_.load(std::memory_order_acquire)) return std::error_code(ESHUTDOWN, std::generic_category());  // (4) pairs with (3)
    const std::size_t len = round_up(req.length);
    std::optional<file_backing> file = req.file;
    if (file) {
      if (file->memfd < 0 || file->source == nullptr || (file->offset % vm_page_size) != 0)
        return std::make_error_code(std::errc::invalid_argument);
    }
    const int fixed_flag = req.fixed ? MAP_FIXED_NOREPLACE : 0;
    int owned_memfd = -1;
    std::unique_ptr<page_source> owned_source;
    if (req.shared && !file) {  // shared anonymous: a memfd of its own
      owned_memfd = ::memfd_create("faultsafe-anon", MFD_CLOEXEC);
      if (owned_memfd < 0) return {errno, std::generic_category()};
      if (::ftruncate(owned_memfd, static_cast<off_t>(len)) != 0) {
        const int e = errno;
        ::close(owned_memfd);
        return {e, std::generic_category()};
      }
      owned_source = std::make_unique<memfd_page_source>(owned_memfd);
      file = file_backing{owned_memfd, 0, nullptr, owned_source.get()};
    }
    // The source's name, for fault reports, asked once here: a fault thread reads this copy (the region
    // keeps it), never the source outside the region lock (see "Region lifetime").
    std::string source_name;
    const std::uint64_t source_base = file && owned_memfd < 0 ? file->source->store_base() : 0;
    if (file && owned_memfd < 0) {
      try {
        source_name = file->source->describe();
      } catch (const std::bad_alloc&) {
        return std::make_error_code(std::errc::not_enough_memory);
      }
    }
    const bool minor = file.has_value();  // a file region, shared or private, maps the memfd
    if (minor && !uffd_.has(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM)) {
      if (owned_memfd >= 0) ::close(owned_memfd);
      return std::make_error_code(std::errc::not_supported);
    }
    // Mapped PROT_NONE until registered: a stale pointer of another thread touching the new range in
    // between gets SIGSEGV instead of a page the kernel fills on its own (zeros in place of file data).
    void* p = nullptr;
    for (int attempt = 0;; ++attempt) {
      if (req.fixed && req.replace) {  // MAP_FIXED: the implicit munmap of this aspace's mappings
        if (auto ec = munmap(req.addr_hint, len)) {
          if (owned_memfd >= 0) ::close(owned_memfd);
          return ec;
        }
      }
      p = minor ? ::mmap(req.addr_hint, len, PROT_NONE, (req.shared ? MAP_SHARED : MAP_PRIVATE | MAP_NORESERVE) | fixed_flag, file->memfd,
                         static_cast<off_t>(file->offset))
                : ::mmap(req.addr_hint, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | fixed_flag, -1, 0);
      int e = 0;
      if (p == MAP_FAILED) {
        e = errno;
      } else if (req.fixed && p != req.addr_hint) {  // kernels before 4.17 ignore MAP_FIXED_NOREPLACE
        ::munmap(p, len);
        e = EEXIST;
      } else {
        break;
      }
      // Another thread mapped into the range between our munmap and mmap: unmap again (bounded).
      if (e == EEXIST && req.fixed && req.replace && attempt < 8 && overlaps_any(req.addr_hint, len)) continue;
      if (owned_memfd >= 0) ::close(owned_memfd);
      return {e, std::generic_category()};
    }
    // Not inherited by fork() children (see header): the child has no pager, and the kernel drops the
    // registration in its copy, so an unfilled page would read zeros there instead of the file's data.
    if (::madvise(p, len, MADV_DONTFORK) != 0) {
      const int e = errno;
      ::munmap(p, len);
      if (owned_memfd >= 0) ::close(owned_memfd);
      return {e, std::generic_category()};
    }
    if (auto ec = uffd_.register_range(p, len, minor ? detail::uffd_mode::missing_and_minor : detail::uffd_mode::missing)) {
      ::munmap(p, len);
      if (owned_memfd >= 0) ::close(owned_memfd);
      return ec == std::errc::invalid_argument ? std::make_error_code(std::errc::not_supported) : ec;
    }
    if (req.prot != PROT_NONE && ::mprotect(p, len, req.prot) != 0) {
      const int e = errno;
      ::munmap(p, len);
      if (owned_memfd >= 0) ::close(owned_memfd);
      return {e, std::generic_category()};
    }
    // A private file mapping: a shrink of the file drops its copies past the new end (vm/private_copies.hpp).
    // Recorded before the region is linked: no unmap can reach it before.
    const bool recorded = file && !req.shared &&
                          private_copies::instance().record(this, reinterpret_cast<std::uintptr_t>(p), reinterpret_cast<std::uintptr_t>(p) + len,
                                                            file->memfd, file->offset);
    auto* r = new region(reinterpret_cast<std::uintptr_t>(p), len, req.prot, req.shared, file);
    r->source_name_ = std::move(source_name);
    r->source_base_ = source_base;
    r->owned_memfd_ = owned_memfd;
    if (owned_memfd >= 0) r->owned_ = std::make_shared<region::owned_anon>(owned_memfd, std::move(owned_source));
    try {
      detail::vm_exclusive_hold<map_lock_type> g(map_lock_);
      if (stopped_.load(std::memory_order_relaxed)) {  // the pager stopped meanwhile: nobody would serve it
        if (recorded) private_copies::instance().forget(this, r->start_, r->end());
        (void)uffd_.unregister_range(p, len);
        ::munmap(p, len);
        delete r;
        return std::error_code(ESHUTDOWN, std::generic_category());
      }
      // A region being unmapped may still be linked over this range: the kernel gave us its
      // addresses, so it is dead; unlink it here (its munmap then finds it unlinked).
      unlink_overlapping_dead_locked(r->start_, r->end());
      tree_.insert_unique(*r);
    } catch (const std::system_error& e) {  // EDEADLK from the wait-for graph: undo
      if (recorded) private_copies::instance().forget(this, r->start_, r->end());
      (void)uffd_.unregister_range(p, len);
      ::munmap(p, len);
      delete r;
      return e.code();
    }
    out = p;
    return {};
  }

  /// Effects: as try_map. Throws: std::system_error on failure.
  [[nodiscard]] void* map(const map_request& req) {
    void* p = nullptr;
    if (auto ec = try_map(req, p)) throw std::system_error(ec, "faultsafe::aspace::map");
    return p;
  }

  /// Effects: unmaps [addr, addr+len) (len rounded up to pages), which may cover parts of regions,
  /// several regions and holes. Each affected region is changed under its exclusive lock, after any
  /// fault service in progress on it finishes; a region only partly inside is split (see header).
  /// Threads blocked on faults in the removed range are woken (and then get SIGSEGV, as after a kernel
  /// munmap). Returns: EINVAL if addr is unaligned, len is 0 or the range wraps; {} if nothing is mapped
  /// there (as munmap(2)); EDEADLK if the wait-for graph broke a cycle at one of its lock waits (the
  /// regions done before stay done).
  /// Lock order: map lock (short), then each region lock exclusively, never both at once (single_lock:
  /// the map lock for the whole call). Must not be called by a thread holding a region lock.
  /// Complexity: O(regions in the range * log regions) plus the system calls.
  [[nodiscard]] std::error_code munmap(void* addr, std::size_t len) { return change_range(addr, len, true, 0); }

  /// Effects: sets the protection of [addr, addr+len) (len rounded up to pages), which may cover parts
  /// of regions and several regions; splits regions only partly inside (see header), after fault
  /// service in progress on each finishes. Returns: EINVAL (bad prot, unaligned addr, len 0), ENOMEM if
  /// part of the range is not mapped by this aspace (then nothing is changed; as mprotect(2), a hole
  /// appearing concurrently may leave the part before it changed), EDEADLK as munmap, or the errno of
  /// mprotect(2). Lock order: as munmap.
  [[nodiscard]] std::error_code mprotect(void* addr, std::size_t len, int prot) {
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) != 0) return std::make_error_code(std::errc::invalid_argument);
    return change_range(addr, len, false, prot);
  }

  /// Effects: msync(2) over the range. Shared file regions are the memfd's page cache, so their data
  /// is already in the file; this validates the range and returns.
  /// Returns: EINVAL (bad flags, unaligned addr, len 0), ENOMEM if part of the range is not mapped.
  [[nodiscard]] std::error_code msync(void* addr, std::size_t len, int flags) {
    if ((flags & ~(MS_ASYNC | MS_SYNC | MS_INVALIDATE)) != 0 || ((flags & MS_ASYNC) && (flags & MS_SYNC)))
      return std::make_error_code(std::errc::invalid_argument);
    std::uintptr_t a = 0, e = 0;
    if (auto ec = check_range(addr, len, a, e)) return ec;
    std::vector<region*> victims;
    const bool covered = collect(a, e, victims);
    for (region* r : victims) release(r);
    if (!covered) return std::make_error_code(std::errc::not_enough_memory);
    return {};
  }

  /// Effects: the attributes of the region containing `addr`, if any. Lock order: map lock, shared,
  /// briefly (rank 10: call it before taking ranges of rank >= 10, e.g. before a file's range lock).
  [[nodiscard]] std::optional<mapping_info> find(const void* addr) const {
    std::optional<mapping_info> out;
    detail::vm_shared_hold<map_lock_type> g(map_lock_);
    const region* r = find_locked(reinterpret_cast<std::uintptr_t>(addr));
    if (r == nullptr) return out;
    mapping_info m;
    m.start = reinterpret_cast<void*>(r->start_);
    m.length = r->length_;
    m.prot = r->prot_;  // a racing mprotect may be half-applied: an attribute snapshot, not a promise
    m.shared = r->shared_;
    m.anonymous = !r->file_.has_value() || r->owned_memfd_ >= 0;
    if (r->file_) m.file = *r->file_;
    out = m;
    return out;
  }

  /// The number of live regions.
  [[nodiscard]] std::size_t region_count() const {
    detail::vm_shared_hold<map_lock_type> g(map_lock_);
    return tree_.size();
  }

  /// The userfaultfd (for the pager).
  [[nodiscard]] const detail::uffd& userfault() const noexcept { return uffd_; }

 private:
  friend class pager;
  using map_lock_type = detail::vm_rw_lock<rank::aspace_map>;
  using region_lock_type = detail::vm_rw_lock<rank::region>;
  using tree_type = boost::intrusive::set<region, boost::intrusive::member_hook<region, boost::intrusive::set_member_hook<>, &region::hook_>,
                                          boost::intrusive::key_of_value<region_start_key>>;

  static std::size_t round_up(std::size_t n) noexcept { return (n + vm_page_size - 1) & ~(vm_page_size - 1); }

  // Requires: map lock held (either mode). The live or dead region containing a, or nullptr.
  region* find_locked(std::uintptr_t a) const FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    auto it = tree_.upper_bound(a);
    if (it == tree_.begin()) return nullptr;
    --it;
    region& r = const_cast<region&>(*it);
    return r.contains(a) ? &r : nullptr;
  }

  // Effects: takes a reference to the region containing `a` (nullptr if none). Map lock shared, briefly.
  region* acquire_region(std::uintptr_t a) {
    detail::vm_shared_hold<map_lock_type> g(map_lock_);
    region* r = find_locked(a);
    if (r != nullptr) r->refs_.fetch_add(1, std::memory_order_relaxed);  // (1) relaxed: the map lock orders it
    return r;
  }

  static void release(region* r) noexcept {
    if (r->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete r;  // (2) acq_rel: last user frees
  }

  static std::error_code check_range(void* addr, std::size_t len, std::uintptr_t& a, std::uintptr_t& e) noexcept {
    a = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || (a % vm_page_size) != 0 || len > SIZE_MAX - vm_page_size) return std::make_error_code(std::errc::invalid_argument);
    e = a + round_up(len);
    if (e < a) return std::make_error_code(std::errc::invalid_argument);
    return {};
  }

  // Effects: references to the linked regions overlapping [a, e) (dead ones included), in address
  // order. Returns: whether they cover [a, e) without a hole. Map lock shared, briefly.
  bool collect(std::uintptr_t a, std::uintptr_t e, std::vector<region*>& out) {
    detail::vm_shared_hold<map_lock_type> g(map_lock_);
    auto it = tree_.upper_bound(a);
    if (it != tree_.begin()) {
      auto prev = std::prev(it);
      if (prev->end() > a) it = prev;
    }
    std::uintptr_t covered_to = a;
    bool covered = true;
    for (; it != tree_.end() && it->start_ < e; ++it) {
      region& r = const_cast<region&>(*it);
      if (r.start_ > covered_to) covered = false;
      covered_to = std::max(covered_to, r.end());
      r.refs_.fetch_add(1, std::memory_order_relaxed);  // (1) relaxed: the map lock orders it
      out.push_back(&r);
    }
    return covered && covered_to >= e;
  }

  [[nodiscard]] bool overlaps_any(void* addr, std::size_t len) {
    std::uintptr_t a = 0, e = 0;
    if (check_range(addr, len, a, e)) return false;
    std::vector<region*> v;
    (void)collect(a, e, v);
    const bool any = !v.empty();
    for (region* r : v) release(r);
    return any;
  }

  // munmap (unmap) or mprotect (prot) of [addr, addr+len): see their contracts.
  // ticket (remote unmap events only, see remote_unmapped): 0 = every region; else only regions
  // tracked before that event was read.
  std::error_code change_range(void* addr, std::size_t len, bool unmap, int prot, std::uint32_t ticket = 0) {
    std::uintptr_t a = 0, e = 0;
    if (auto ec = check_range(addr, len, a, e)) return ec;
    for (int round = 0;; ++round) {
      const bool first = round == 0;
      std::vector<region*> victims;
      const bool covered = collect(a, e, victims);
      if (ticket != 0)
        std::erase_if(victims, [&](region* r) {
          if (older(r->born_, ticket)) return false;
          release(r);
          return true;
        });
      if (!unmap && !covered && first) {
        for (region* r : victims) release(r);
        return std::make_error_code(std::errc::not_enough_memory);
      }
      std::error_code result;
      std::vector<region*> pending;  // split by another call, parts not linked yet: look again after
      // A victim another call replaced between collect() and its lock (dead, parts maybe linked
      // already): its parts were not collected, so look again (without this, a part in [a, e) was
      // left tracked: a stale region, and EEXIST for a later track of those addresses).
      bool replaced_meanwhile = false;
      try {
        if (opts_.single_lock) {
          detail::vm_exclusive_hold<map_lock_type> g(map_lock_);  // the whole space: fault service too
          for (region* r : victims) {
            if (r->dead_) {
              replaced_meanwhile = true;
              continue;
            }
            std::vector<region*> parts;
            bool replaced = false;
            if (auto ec = apply_locked(*r, a, e, unmap, prot, parts, replaced)) {
              if (!result) result = ec;
              continue;
            }
            if (replaced) link_parts_locked(*r, parts);
          }
        } else {
          for (region* r : victims) {
            std::vector<region*> parts;
            bool replaced = false;
            {
              detail::vm_exclusive_hold<region_lock_type> g(r->lock_);  // waits for in-flight fault service
              if (r->dead_) {
                if (r->pending_.load(std::memory_order_acquire)) pending.push_back(r);  // (6) pairs with (5)
                replaced_meanwhile = true;
                continue;
              }
              if (auto ec = apply_locked(*r, a, e, unmap, prot, parts, replaced)) {
                if (!result) result = ec;
                continue;
              }
              if (replaced) r->pending_.store(true, std::memory_order_relaxed);  // under lock_: seen with dead_
            }
            if (replaced) link_parts(*r, parts);
          }
        }
      } catch (const std::system_error& ex) {  // EDEADLK: the wait-for graph broke a cycle at our wait
        result = ex.code();                    // regions done so far stay done
      } catch (const std::bad_alloc&) {        // building the parts (before the region's system call)
        result = std::make_error_code(std::errc::not_enough_memory);
      }
      // Wait for the other call to link the parts (it holds no lock meanwhile: a short, bounded wait).
      for (region* r : pending)
        while (r->pending_.load(std::memory_order_acquire)) std::this_thread::yield();  // (6) pairs with (5)
      for (region* r : victims) release(r);
      // (A dead region stays linked only where link_parts gave up: bounded, so that is no endless loop.)
      if (result || (pending.empty() && (!replaced_meanwhile || round >= 64))) return result;
    }
  }

  // Requires: r exclusively held (single_lock: the map lock), not dead. Effects: munmap or mprotect of
  // [a, e) ∩ r. `replaced` = r is now dead and `parts` (maybe empty) replace it in the tree.
  // Throws: std::bad_alloc (before any system call).
  std::error_code apply_locked(region& r, std::uintptr_t a, std::uintptr_t e, bool unmap, int prot,
                               std::vector<region*>& parts, bool& replaced) {
    const std::uintptr_t s = std::max(a, r.start_), t = std::min(e, r.end());
    replaced = false;
    if (s >= t) return {};
    struct parts_guard {  // frees the parts if a later step fails
      std::vector<region*>& v;
      bool keep = false;
      ~parts_guard() {
        if (!keep)
          for (region* p : v) delete p;
        if (!keep) v.clear();
      }
    } guard{parts};
    if (unmap) {
      if (s > r.start_) parts.push_back(r.part(r.start_, s, r.prot_));
      if (t < r.end()) parts.push_back(r.part(t, r.end(), r.prot_));
      r.dead_ = true;
      replaced = true;
      poisoned_pages::instance().forget(this, s, t);  // before the addresses can be reused
      private_copies::instance().forget(this, s, t);
      // The kernel unmaps [s, t) only (and its userfaultfd registration with it); the parts stay
      // mapped and registered. Threads blocked on faults in [s, t) wake and get SIGSEGV. Remote: the
      // other process unmaps (or has unmapped) its memory itself.
      if (!remote_) ::munmap(reinterpret_cast<void*>(s), t - s);
      (void)uffd_.wake(s, t - s);
      guard.keep = true;
      return {};
    }
    if (prot == r.prot_) return {};
    if (s == r.start_ && t == r.end()) {  // the whole region: no split
      if (!remote_ && ::mprotect(reinterpret_cast<void*>(s), t - s, prot) != 0) return {errno, std::generic_category()};
      r.prot_ = prot;
      return {};
    }
    if (s > r.start_) parts.push_back(r.part(r.start_, s, r.prot_));
    parts.push_back(r.part(s, t, prot));
    if (t < r.end()) parts.push_back(r.part(t, r.end(), r.prot_));
    if (!remote_ && ::mprotect(reinterpret_cast<void*>(s), t - s, prot) != 0) return {errno, std::generic_category()};
    r.dead_ = true;  // faults that find it dead are woken and retried: they then find their part
    replaced = true;
    guard.keep = true;
    return {};
  }

  // Requires: map lock exclusive. Effects: r (dead) leaves the tree, its parts enter it; if the pager
  // has stopped, the parts are stopped as the others were.
  void link_parts_locked(region& r, std::vector<region*>& parts) noexcept FAULTSAFE_REQUIRES(map_lock_) {
    if (r.hook_.is_linked()) unlink_locked(r);  // try_map may have unlinked it (its range was reused)
    for (region* p : parts) {
      tree_.insert_unique(*p);
      if (stopped_.load(std::memory_order_relaxed)) stop_region(*p);
    }
    parts.clear();
    r.pending_.store(false, std::memory_order_release);  // (5) release, pairs with (6)
  }

  // Effects: link_parts_locked under the map lock. The map lock is never held across a wait, so its
  // acquisition only fails if a violation handler throws; after many tries the parts are given up
  // (unregistered: the kernel then serves them as plain memory) rather than leaving `r` pending.
  void link_parts(region& r, std::vector<region*>& parts) noexcept {
    for (int tries = 0; tries < 1000; ++tries) {
      try {
        detail::vm_exclusive_hold<map_lock_type> g(map_lock_);
        link_parts_locked(r, parts);
        return;
      } catch (...) {
        std::this_thread::yield();
      }
    }
    for (region* p : parts) {
      (void)uffd_.unregister_range(reinterpret_cast<void*>(p->start_), p->length_);
      delete p;
    }
    parts.clear();
    r.pending_.store(false, std::memory_order_release);  // (5) release, pairs with (6)
  }

  // Requires: map lock exclusive. Effects: unlinks `r` and drops the tree's reference.
  void unlink_locked(region& r) noexcept FAULTSAFE_REQUIRES(map_lock_) {
    tree_.erase(tree_.iterator_to(r));
    release(&r);
  }

  void unlink_overlapping_dead_locked(std::uintptr_t a, std::uintptr_t e) noexcept FAULTSAFE_REQUIRES(map_lock_) {
    auto it = tree_.upper_bound(a);
    if (it != tree_.begin()) {
      auto prev = std::prev(it);
      if (prev->end() > a) it = prev;
    }
    while (it != tree_.end() && it->start_ < e) {
      region& r = const_cast<region&>(*it);
      ++it;
      unlink_locked(r);  // the kernel reused its addresses, so its munmap has happened
    }
  }

  // Remote: UFFD_EVENT_REMAP moved [from, from + len) to `to` (the kernel moved the registration with
  // the pages). The tracked parts of the old range are forgotten and tracked again at the new
  // addresses (same backing, file offsets kept); a part's in-flight fault service finishes first.
  // Throws: nothing (an allocation failure forgets the range: its faults then fail with SIGBUS).
  // Only regions tracked before the event was read move (`ticket`: read_event; a region the process
  // mapped at `from` again after the mremap, tracked before this event was handled, stays).
  void remote_moved(std::uintptr_t from, std::uintptr_t to, std::size_t len, std::uint32_t ticket) noexcept {
    std::vector<tracked_mapping> moved;
    try {
      std::vector<region*> victims;
      (void)collect(from, from + len, victims);
      for (region* r : victims) {
        const std::uintptr_t s = std::max(from, r->start_), t = std::min(from + len, r->end());
        if (s < t && older(r->born_, ticket)) {
          std::optional<file_backing> f = r->file_;
          if (f) f->offset += s - r->start_;
          moved.push_back(tracked_mapping{reinterpret_cast<void*>(to + (s - from)), t - s, r->prot_, r->shared_, f});
        }
        release(r);
      }
    } catch (...) {
      moved.clear();
    }
    (void)remote_unmapped(from, from + len, ticket);
    for (const auto& m : moved) (void)try_track(m);
  }

  // Remote: UFFD_EVENT_UNMAP of [from, to) read with `ticket` (read_event): forgets the tracked parts
  // of regions tracked before the event was read, after in-flight fault service on them finishes.
  // A region tracked after the read is a new mapping of the reused addresses (the process's munmap
  // returns only once its event is read, so it can map and track the range again before a fault
  // thread handles the event): it stays. (Another thread can reuse the addresses before the event is
  // read: try_track waits for the event first.) Returns: as munmap().
  std::error_code remote_unmapped(std::uintptr_t from, std::uintptr_t to, std::uint32_t ticket) {
    if (to <= from) return {};
    return change_range(reinterpret_cast<void*>(from), to - from, true, 0, ticket);
  }

  // Remote: reads one message of the adopted userfaultfd (the pager's fault_handler::read_message) and
  // numbers UNMAP and REMAP events in read order in its reserved header field (the ticket). The read
  // and the numbering happen under event_mu_, which try_track also takes to stamp a region with the
  // number of events read so far (born_): so "tracked before the event was read" (born_ < ticket) is
  // exact. Non-blocking (the pool reads after readiness). Throws: nothing.
  // A page fault read here carries, in the same field, the number of the last event read before it:
  // if it finds no region, events_applied_through() tells whether an event read before it (a REMAP
  // that moves its region to the faulting address) may still be in another fault thread's hands.
  ssize_t read_event(int fd, uffd_msg& msg) noexcept {
    exclusive_guard<event_mutex> g(event_mu_);
    const ssize_t r = ::read(fd, &msg, sizeof msg);
    if (r != static_cast<ssize_t>(sizeof msg)) return r;
    if (msg.event == UFFD_EVENT_UNMAP || msg.event == UFFD_EVENT_REMAP) {
      msg.reserved3 = ++events_read_ == 0 ? ++events_read_ : events_read_;  // 0 means "no ticket"
    } else if (msg.event == UFFD_EVENT_PAGEFAULT) {
      msg.reserved3 = events_read_;
    }
    return r;
  }

  // Remote: the event numbered `ticket` (read_event) has been applied (remote_unmapped/remote_moved
  // returned). Complexity: amortised O(1). Throws: nothing.
  void event_applied(std::uint32_t ticket) noexcept {
    if (ticket == 0) return;
    exclusive_guard<event_mutex> g(event_mu_);
    events_done_.set(ticket % events_done_.size());
    for (;;) {  // advance the watermark over every applied event
      std::uint32_t next = applied_through_ + 1;
      if (next == 0) next = 1;
      if (!events_done_.test(next % events_done_.size()) || older(events_read_, next)) break;
      events_done_.reset(next % events_done_.size());
      applied_through_ = next;
    }
  }

  // Remote: true once every event read before a fault read with `seen` (its reserved3) is applied.
  // Thread-safety: any thread. Throws: nothing.
  [[nodiscard]] bool events_applied_through(std::uint32_t seen) noexcept {
    exclusive_guard<event_mutex> g(event_mu_);
    return seen == 0 || !older(applied_through_, seen);
  }

  // Called by the pager when it stops: no fault will be served any more, and none may hang.
  // Every region is unregistered, which wakes every thread blocked on a fault: file regions (shared
  // and private) are then served by the kernel from the memfd (the file's own pages: same data, but
  // without the server's page-in), anonymous regions are zero-filled, poisoned pages raise SIGBUS.
  // Later try_map calls fail with ESHUTDOWN.
  void pager_stopped() noexcept {
    try {
      pager_stopped_impl();
    } catch (...) {  // a lock wait broken by the wait-for graph: leave the rest registered
    }
  }
  void pager_stopped_impl() {
    std::vector<region*> live;
    {
      detail::vm_exclusive_hold<map_lock_type> g(map_lock_);
      stopped_.store(true, std::memory_order_release);  // (3) release, pairs with (4)
      for (auto& r : tree_) {
        const_cast<region&>(r).refs_.fetch_add(1, std::memory_order_relaxed);
        live.push_back(&const_cast<region&>(r));
      }
    }
    for (region* r : live) {
      {
        // single_lock: dead_ is guarded by the map lock; else by the region lock.
        std::optional<detail::vm_exclusive_hold<map_lock_type>> gm;
        std::optional<detail::vm_exclusive_hold<region_lock_type>> gr;
        if (opts_.single_lock) gm.emplace(map_lock_);
        else gr.emplace(r->lock_);
        if (!r->dead_) stop_region(*r);
      }
      release(r);
    }
  }

  // Requires: r held exclusively, or not yet visible to fault service. Effects: see pager_stopped.
  void stop_region(region& r) noexcept {
    // Nothing serves the region any more: its poisoned pages stay poisoned (a zapped marker would let
    // the kernel serve a page past the end of the file from the memfd).
    poisoned_pages::instance().forget(this, r.start_, r.end());
    private_copies::instance().forget(this, r.start_, r.end());
    (void)uffd_.unregister_range(reinterpret_cast<void*>(r.start_), r.length_);
  }

  aspace_options opts_;
  detail::uffd uffd_;
  mutable map_lock_type map_lock_;
  // Remote: the numbering of the adopted userfaultfd's UNMAP/REMAP events against tracks (read_event).
  // A leaf: held across one non-blocking read(2) only.
  using event_mutex = ranked_mutex<rank::leaf>;
  event_mutex event_mu_{"aspace events"};
  // try_track: the longest wait for the UNMAP/REMAP events of mappings whose addresses the process
  // reused (normally microseconds: a fault thread reads and applies them).
  static constexpr std::chrono::seconds remote_event_wait{2};
  std::uint32_t events_read_ FAULTSAFE_GUARDED_BY(event_mu_) = 0;
  // Every event numbered up to applied_through_ is applied; events_done_ marks the applied ones
  // above it (by number modulo its size: events in flight are at most one per fault thread).
  std::uint32_t applied_through_ FAULTSAFE_GUARDED_BY(event_mu_) = 0;
  std::bitset<1024> events_done_ FAULTSAFE_GUARDED_BY(event_mu_);
  // True if a region stamped `born` was tracked before the event numbered `ticket` was read
  // (wrap-around safe: numbers are compared within 2^31 of each other).
  static bool older(std::uint32_t born, std::uint32_t ticket) noexcept { return static_cast<std::int32_t>(born - ticket) < 0; }
  tree_type tree_ FAULTSAFE_GUARDED_BY(map_lock_);
  std::atomic<bool> stopped_{false};
  const bool remote_ = false;
};

}  // namespace faultsafe
