// faultsafe/vm/served_memory.hpp: the client half of mappings served by a pager in ANOTHER OS process.
//
// Defines `served_memory`, `served_memory_options` and `served_map_request`. A client process that
// maps a file of a server running in another process creates one served_memory: it owns a userfaultfd
// of the client's own address space, which the client hands to the server once (SCM_RIGHTS; the
// server adopts it: aspace(adopt_userfaultfd, ...), vm/aspace.hpp) together with features(). Each
// map() then maps the server's memfd (MAP_SHARED, or MAP_PRIVATE for a private file mapping, registered
// MISSING | MINOR: the server's pager answers with UFFDIO_CONTINUE once the page is in the memfd, read-only
// in a private mapping, whose first write is the kernel's copy-on-write; MISSING too, so that a touch
// of a hole, such as a page past the end of a shrunk file, also goes to the server's page-in instead
// of the kernel's zeros) or private anonymous memory (no memfd: registered MISSING, zero-filled),
// MADV_DONTFORK, PROT_NONE until registered; a shared mapping of a read-only fd (the server hands one
// to a mapping that may never write the file: through a read-only open) maps the memfd MAP_PRIVATE
// instead (the kernel registers no mapping that can never be written, VM_MAYWRITE: a MAP_SHARED
// mapping of a read-only fd is one). Registered the same way, it reads the memfd's page cache exactly
// as a shared mapping (UFFDIO_CONTINUE maps the file's page; a punch removes it), and can never write
// the file: protect() refuses PROT_WRITE there (ENOTSUP), a raw mprotect(2) that adds PROT_WRITE gives
// copy-on-write pages of its own. A shared mapping of a read-write fd, PROT_WRITE or not, is
// MAP_SHARED: protect() may make it writable, as Linux does; the caller then tells the server the
// mapping (aspace::try_track) and lets no thread touch it before the server has acknowledged. From
// then on every first touch is a fault the server's pager serves with its page-in handler and range
// locks. The userfaultfd reports munmap, mremap and MADV_DONTNEED to the server (UFFD_FEATURE_EVENT_
// UNMAP / REMAP / REMOVE), so plain munmap(2)/mremap(2) in the client are followed.
//
// Kernel-mode faults (served_memory_options::kernel_faults). Without UFFD_USER_MODE_ONLY a fault
// taken by the kernel on behalf of a system call into this memory (read(2) into it, the server's
// process_vm_writev, ...) also waits for the server's pager; that needs /dev/userfaultfd access,
// CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1. With UFFD_USER_MODE_ONLY (the default: any
// unprivileged process may create it) the kernel fails such an access with EFAULT instead, and the
// server must page the range in and retry (see the README's "Brian across processes").
//
// Server death. The client keeps its own reference to the userfaultfd, so the server's death does
// not silently unregister the mappings (the kernel would then serve file pages from the memfd without
// the server, and a page past the end of the file would read zeros). watch_server() (required before the
// first map()) watches the server with a pidfd; when it exits, server_gone() runs: every page not
// yet mapped in every mapping is poisoned (UFFDIO_POISON: SIGBUS on access, BUS_MCEERR_AR) and the
// userfaultfd is closed, which unregisters everything and wakes every thread blocked on a fault or
// on an unread event (the kernel releases a userfaultfd's waiters when its last reference goes). No
// access hangs; served pages keep their data; unserved ones raise SIGBUS. server_gone() may also be
// called by the transport when the connection breaks.
//
// Thread-safety: every member may be called from any thread. Lock order: one leaf mutex (rank 90),
// held for the table of ranges and across the poison ioctls (which wait for no userspace lock).
// Lifetime: the destructor stops the watcher, unmaps what is still mapped and closes the userfaultfd.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../order/ranked_mutex.hpp"
#include "detail/uffd.hpp"
#include "page_source.hpp"

namespace faultsafe {

/// Options of a served_memory.
struct served_memory_options {
  /// true: the userfaultfd takes kernel-mode faults too (no UFFD_USER_MODE_ONLY; see header).
  bool kernel_faults = false;
};

/// One mapping of memory served by the other process's pager.
struct served_map_request {
  std::size_t length = 0;     ///< bytes (rounded up to pages)
  int prot = PROT_READ;       ///< PROT_READ / PROT_WRITE / PROT_EXEC
  bool shared = false;        ///< of memfd (requires memfd; see the header for one without PROT_WRITE) or MAP_PRIVATE
  int memfd = -1;             ///< the server's memfd (a file mapping, shared or private); -1: anonymous (private only)
  std::uint64_t offset = 0;   ///< memfd offset of the first byte (page aligned; with memfd only)
  void* addr = nullptr;       ///< exactly here (page aligned; MAP_FIXED_NOREPLACE: EEXIST if occupied), or nullptr: anywhere
};

class served_memory {
 public:
  /// The events the server needs to follow the client's mappings.
  static constexpr std::uint64_t event_features =
      UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE;

  /// Effects: creates the userfaultfd. Throws: std::system_error whose what() names the cause (EPERM:
  /// kernel-mode faults not permitted, or userfaultfd refused; ENOTSUP: features missing).
  explicit served_memory(served_memory_options opts = {}) : opts_(opts) {
    std::string why;
    if (auto ec = detail::uffd::try_open(uffd_, why, event_features | UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM,
                                         opts.kernel_faults))
      throw std::system_error(ec, "faultsafe::served_memory: " + why);
    features_ = uffd_.features();
  }
  served_memory(const served_memory&) = delete;
  served_memory& operator=(const served_memory&) = delete;

  ~served_memory() {
    stop_watch();
    exclusive_guard g(m_);
    // Our reference first: if the server is gone it was the last, and a munmap would otherwise wait
    // for ever for the server to read its UNMAP event.
    uffd_.close();
    for (const auto& r : ranges_) ::munmap(reinterpret_cast<void*>(r.first), r.second - r.first);
    ranges_.clear();
  }

  /// The userfaultfd to hand to the server (the caller sends it; this object keeps its own), and the
  /// features it was created with (the server needs them: aspace(adopt_userfaultfd, fd, features)).
  /// -1 once the server is gone.
  [[nodiscard]] int userfaultfd() const {
    exclusive_guard g(m_);
    return uffd_.fd();
  }
  [[nodiscard]] std::uint64_t features() const noexcept { return features_; }
  [[nodiscard]] bool kernel_faults() const noexcept { return opts_.kernel_faults; }

  /// Effects: watches process `server` (a pidfd): when it exits, server_gone() runs. Call once, before
  /// the first map(). Returns: EBUSY (already watching), the errno of pidfd_open (ESRCH: no such
  /// process) or of the thread's creation. Throws: nothing.
  [[nodiscard]] std::error_code watch_server(pid_t server) noexcept {
    exclusive_guard g(m_);
    if (watcher_.joinable()) return std::make_error_code(std::errc::device_or_resource_busy);
    const int pfd = static_cast<int>(::syscall(SYS_pidfd_open, server, 0));
    if (pfd < 0) return {errno, std::generic_category()};
    const int stop = ::eventfd(0, EFD_CLOEXEC);
    if (stop < 0) {
      const int e = errno;
      ::close(pfd);
      return {e, std::generic_category()};
    }
    try {
      watcher_ = std::thread([this, pfd, stop] {
        pollfd fds[2] = {{pfd, POLLIN, 0}, {stop, POLLIN, 0}};
        while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
        }
        if ((fds[1].revents & POLLIN) == 0) server_gone();
        ::close(pfd);
      });
    } catch (const std::system_error& e) {
      ::close(pfd);
      ::close(stop);
      return e.code();
    }
    stop_fd_ = stop;
    return {};
  }

  /// Effects: maps `req` registered with the userfaultfd (see header); `out` receives the address.
  /// The caller must then have the server track it before any thread touches it.
  /// Returns: ENOTCONN (watch_server() not called), ESHUTDOWN (the server is gone), EINVAL (zero
  /// length, bad prot, shared without memfd, unaligned offset or addr), EEXIST (`addr` given and
  /// something is mapped in the range: nothing is replaced), ENOTSUP (the kernel cannot register
  /// this mapping), or the errno of mmap/madvise/UFFDIO_REGISTER/mprotect. Nothing stays mapped on
  /// failure. Throws: nothing.
  [[nodiscard]] std::error_code map(const served_map_request& req, void*& out) noexcept {
    out = nullptr;
    if (req.length == 0 || (req.prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) != 0 || (req.shared && req.memfd < 0) ||
        req.offset % vm_page_size != 0 || req.length > SIZE_MAX - vm_page_size ||
        reinterpret_cast<std::uintptr_t>(req.addr) % vm_page_size != 0)
      return std::make_error_code(std::errc::invalid_argument);
    const std::size_t len = (req.length + vm_page_size - 1) & ~(vm_page_size - 1);
    if (req.addr != nullptr && reinterpret_cast<std::uintptr_t>(req.addr) > UINTPTR_MAX - len)
      return std::make_error_code(std::errc::invalid_argument);
    exclusive_guard g(m_);
    if (!watcher_.joinable()) return std::make_error_code(std::errc::not_connected);
    if (!uffd_.valid()) return std::error_code(ESHUTDOWN, std::generic_category());
    // A file (memfd) mapping: MAP_SHARED when shared and the fd is read-write (the server sends one
    // for a mapping that may write the file, now or after an mprotect); a shared mapping of a
    // read-only fd maps it MAP_PRIVATE (see the header).
    const bool file = req.memfd >= 0;
    const int fl = file ? ::fcntl(req.memfd, F_GETFL) : 0;
    if (fl < 0) return {errno, std::generic_category()};
    const bool rw_fd = file && (fl & O_ACCMODE) == O_RDWR;
    if (req.shared && (req.prot & PROT_WRITE) && !rw_fd) return std::make_error_code(std::errc::permission_denied);
    const int file_type = req.shared && rw_fd ? MAP_SHARED : MAP_PRIVATE | MAP_NORESERVE;
    const int fixed = req.addr != nullptr ? MAP_FIXED_NOREPLACE : 0;
    void* p = file ? ::mmap(req.addr, len, PROT_NONE, file_type | fixed, req.memfd, static_cast<off_t>(req.offset))
                   : ::mmap(req.addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | fixed, -1, 0);
    if (p == MAP_FAILED) return {errno, std::generic_category()};
    if (req.addr != nullptr && p != req.addr) {  // a kernel before 4.17 takes MAP_FIXED_NOREPLACE as a hint
      ::munmap(p, len);
      return std::make_error_code(std::errc::file_exists);
    }
    std::error_code ec;
    if (::madvise(p, len, MADV_DONTFORK) != 0) ec = {errno, std::generic_category()};
    if (!ec) {
      ec = uffd_.register_range(p, len, file ? detail::uffd_mode::missing_and_minor : detail::uffd_mode::missing);
      if (ec == std::errc::invalid_argument) ec = std::make_error_code(std::errc::not_supported);
    }
    if (!ec && req.prot != PROT_NONE && ::mprotect(p, len, req.prot) != 0) ec = {errno, std::generic_category()};
    if (!ec) {
      try {
        ranges_.push_back(range{reinterpret_cast<std::uintptr_t>(p), reinterpret_cast<std::uintptr_t>(p) + len, !req.shared || rw_fd});
      } catch (const std::bad_alloc&) {
        ec = std::make_error_code(std::errc::not_enough_memory);
      }
    }
    if (ec) {
      ::munmap(p, len);
      return ec;
    }
    out = p;
    return {};
  }

  /// Effects: munmap(2) of the parts of [addr, addr + len) that are mappings of this object (the server
  /// learns it from the UNMAP event), which are forgotten; other memory in the range is left alone.
  /// Returns: EINVAL (unaligned, zero length) or munmap's errno. Throws: nothing.
  [[nodiscard]] std::error_code unmap(void* addr, std::size_t len) noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || a % vm_page_size != 0 || len > SIZE_MAX - a - vm_page_size)
      return std::make_error_code(std::errc::invalid_argument);
    const std::uintptr_t e = a + ((len + vm_page_size - 1) & ~(vm_page_size - 1));
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> gone;
    {
      exclusive_guard g(m_);
      std::vector<range> keep;
      for (const auto& r : ranges_) {  // never grows by more than one (a range split in two)
        if (r.second <= a || r.first >= e) {
          keep.push_back(r);
          continue;
        }
        gone.emplace_back(std::max(r.first, a), std::min(r.second, e));
        if (r.first < a) keep.push_back(range{r.first, a, r.may_write});
        if (r.second > e) keep.push_back(range{e, r.second, r.may_write});
      }
      ranges_.swap(keep);
    }
    // Without the mutex: munmap waits until the server has read the UNMAP event, and server_gone()
    // (the server died meanwhile) needs the mutex to let that wait end.
    for (const auto& [s, t] : gone)
      if (::munmap(reinterpret_cast<void*>(s), t - s) != 0) return {errno, std::generic_category()};
    return {};
  }

  /// True if a page of [addr, addr + len) lies in a mapping of this object. Throws: nothing.
  [[nodiscard]] bool overlaps(const void* addr, std::size_t len) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    const std::uintptr_t e = len > SIZE_MAX - a ? SIZE_MAX : a + len;
    exclusive_guard g(m_);
    for (const auto& r : ranges_)
      if (r.first < e && a < r.second) return true;
    return false;
  }

  /// Effects: mprotect(2) of [addr, addr + len) (len rounded up to pages), every page of which must lie
  /// in mappings of this object. The protection only changes what the client's own accesses may do:
  /// faults are served as before. Returns: EINVAL (unaligned, zero length, unknown prot bits), ENOMEM (a
  /// page not in a mapping of this object), ENOTSUP (PROT_WRITE on a shared mapping of a read-only fd:
  /// see the header), or mprotect's errno.
  /// Thread-safety: as mprotect(2) against a concurrent unmap() of the same range. Throws: nothing.
  [[nodiscard]] std::error_code protect(void* addr, std::size_t len, int prot) noexcept {
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) != 0) return std::make_error_code(std::errc::invalid_argument);
    std::uintptr_t a = 0, e = 0;
    if (auto ec = covered(addr, len, a, e, (prot & PROT_WRITE) != 0)) return ec;
    if (::mprotect(addr, e - a, prot) != 0) return {errno, std::generic_category()};
    return {};
  }

  /// Effects: msync(2) of [addr, addr + len): a shared mapping is the server file's memfd (its page
  /// cache: stores are already the file's) and a private one never writes the file, so this checks the
  /// arguments and the range. Returns: EINVAL (bad flags, unaligned, zero length), ENOMEM (a page not in
  /// a mapping of this object). Throws: nothing.
  [[nodiscard]] std::error_code sync(void* addr, std::size_t len, int flags) const noexcept {
    if ((flags & ~(MS_ASYNC | MS_SYNC | MS_INVALIDATE)) != 0 || ((flags & MS_ASYNC) && (flags & MS_SYNC)))
      return std::make_error_code(std::errc::invalid_argument);
    std::uintptr_t a = 0, e = 0;
    return covered(addr, len, a, e, false);
  }

  /// Effects: the server is gone (see header): poisons every unmapped page of every mapping and closes
  /// the userfaultfd. Idempotent. Later map() calls fail with ESHUTDOWN. Throws: nothing.
  void server_gone() noexcept {
    exclusive_guard g(m_);
    if (!uffd_.valid()) return;
    if (uffd_.has(UFFD_FEATURE_POISON)) {
      for (const auto& r : ranges_) {
        std::uintptr_t a = r.first;
        for (int tries = 0; a < r.second && tries < 1000;) {
          const auto res = uffd_.poison(a, r.second - a, /*dont_wake=*/true);
          a += res.done;
          if (!res.error) break;
          if (res.error == std::errc::file_exists) a += vm_page_size;  // a served page: keep it
          else if (res.error == std::errc::resource_unavailable_try_again) ++tries;  // an event is unread
          else break;  // ENOENT: unmapped meanwhile
        }
      }
    }
    uffd_.close();  // our reference was the last: unregisters everything, wakes every waiter
  }

 private:
  // [a, e): [addr, addr + len) in whole pages. Returns: EINVAL (unaligned, zero length), ENOMEM unless
  // mappings of this object cover every page, ENOTSUP if `write` and one of them may not be written.
  std::error_code covered(void* addr, std::size_t len, std::uintptr_t& a, std::uintptr_t& e, bool write) const noexcept {
    a = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || a % vm_page_size != 0 || len > SIZE_MAX - a - vm_page_size) return std::make_error_code(std::errc::invalid_argument);
    e = a + ((len + vm_page_size - 1) & ~(vm_page_size - 1));
    exclusive_guard g(m_);
    // Ranges never overlap: walk from a, each step to the end of the range that holds the position.
    for (std::uintptr_t at = a; at < e;) {
      const range* hit = nullptr;
      for (const auto& r : ranges_)
        if (r.first <= at && at < r.second) hit = &r;
      if (hit == nullptr) return std::make_error_code(std::errc::not_enough_memory);
      if (write && !hit->may_write) return std::make_error_code(std::errc::not_supported);
      at = hit->second;
    }
    return {};
  }

  void stop_watch() noexcept {
    std::thread t;
    {
      exclusive_guard g(m_);
      t = std::move(watcher_);
    }
    if (!t.joinable()) return;
    const std::uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    t.join();
    ::close(stop_fd_);
    stop_fd_ = -1;
  }

  served_memory_options opts_;
  detail::uffd uffd_;
  std::uint64_t features_ = 0;  // uffd_.features(), kept after the server is gone
  mutable ranked_mutex<rank::leaf> m_{"served memory"};
  // One mapping (or what munmap left of it): [first, second), and whether mprotect may add PROT_WRITE
  // (false for a shared mapping made without it: a MAP_PRIVATE of a read-only fd, see the header).
  struct range {
    std::uintptr_t first, second;
    bool may_write;
  };
  std::vector<range> ranges_ FAULTSAFE_GUARDED_BY(m_);
  std::thread watcher_;
  int stop_fd_ = -1;
};

}  // namespace faultsafe
