// faultsafe/vm/pager.hpp: the userfaultfd pager of one address space (the "proc" role).
//
// Defines `pager`, `pager_options` and `pager_stats`. A pager registers the aspace's userfaultfd with a
// fault pool (vm/fault_pool.hpp): by default the process-wide fault_pool::shared(), so 10,000 logical
// processes share a few threads; `fault_threads` >= 1 gives the pager a pool of its own (threads named
// "<name>/0", "<name>/1", ...). Either pool grows when every thread is busy: a fault never waits for a
// fault thread that page-ins hold (model/README.md, finding 1: two faults whose page-ins wait for
// io_pkt, whose only thread then faults on a client buffer, were a hang with the old fixed two
// threads); at the pool's limit a queued fault is a wait-for-graph wait (reported and broken, never a
// silent hang). An aspace that adopted another OS process's userfaultfd (issue 11) is served by the
// same pool. A pool thread reads one message at a time and serves it:
//   1. look the faulting address up (map lock shared, briefly) and take a reference to its region;
//   2. hold the region lock shared (single_lock mode: the map lock exclusively) while serving;
//   3. choose the fault-around window: per region, a fault just past the previous window is sequential
//      and doubles the window (up to max_window); any other fault resets it to min_window (one page by
//      default: random access maps one page); windows never leave the region. At max_window, with
//      `readahead`, the next window is mapped too, all but its first page (a marker whose fault
//      triggers the next read-ahead), so a sequential reader overlaps with the pager;
//   4. anonymous: UFFDIO_ZEROPAGE. File: page_source::page_in on behalf of the faulting thread (its tid
//      from UFFD_FEATURE_THREAD_ID, resolved to its faultsafe id and activity when it announced itself;
//      vm/faulting_thread.hpp), then UFFDIO_CONTINUE maps the page-cache pages (zero copy; in a
//      private mapping read-only, so its first write is the kernel's copy-on-write);
//   5. errors: a failed page-in poisons the faulting page (UFFDIO_POISON), so the faulting access gets
//      SIGBUS instead of hanging; no signal is ever sent to a thread (it may have moved on). Where the
//      kernel refuses POISON (a shared page past the end of a file truncated meanwhile), the thread is
//      woken and its retried access takes the kernel's own SIGBUS (or faults again if the file grew
//      back). Without the POISON feature (Linux < 6.6): tgkill(SIGBUS) to the faulting thread, which
//      can arrive late if another wake of the page let the thread go on (a limit of those kernels).
//      EEXIST (another fault thread, or an earlier window, mapped the page) and a region unmapped
//      meanwhile (ENOENT) just wake the thread, which retries. A poisoned page of a file region is
//      recorded in poisoned_pages (vm/poisoned_pages.hpp) before the thread is woken (POISON with
//      DONTWAKE, then the record, then the wake); later accesses get SIGBUS too until the file grows
//      over the page (file_grown(): the marker is zapped with MADV_DONTNEED on that page, and the next
//      access faults and is paged in again, as a kernel mapping reads the new zeros or data) or the
//      range is unmapped. A failure of an anonymous page, or one raised before the region lock was
//      taken, is not recorded (it stays poisoned until unmapped). The generation of the page is read
//      before its page-in, so a growth racing the failure is never missed (poisoned_pages).
//
// Another process's memory (an aspace built with adopt_userfaultfd, vm/aspace.hpp): the same service,
// with the fills acting on that process's pages; the fault threads also read its unmap/remap/remove
// events and keep the aspace in step (remote_event); a fault on an address no region covers fails
// (SIGBUS) after a short re-examination instead of being woken into a refault loop; poisoned pages are
// not recorded (poisoned_pages zaps addresses of this process only: such a page stays SIGBUS until the
// other process unmaps it). A fault the kernel took on behalf of a system call of THIS process (its
// process_vm_writev into the client, with a userfaultfd that takes kernel-mode faults) names this
// process's thread (UFFD_FEATURE_THREAD_ID), so its page-in runs on behalf of that thread's activity
// and the range locks' fault-reentrancy guard and the wait-for graph see it as in-process.
// fault_in() serves a range without a fault, on the calling thread: the fault-in step of a server whose
// copy into a user-mode-only client failed with EFAULT (gfs2's fault-in-and-retry).
//
// Shutdown (stop() or the destructor): the registration ends (the pool's threads finish the faults of
// this aspace they have read, so page_in must return; a server-backed source fails when its server
// stops; faults queued at the pool's limit are dropped); then the aspace is told
// (aspace::pager_stopped): every region is unregistered, which wakes every thread still blocked on a
// fault. Afterwards no fault hangs: file regions read the memfd directly through the kernel, anonymous
// regions zero-fill, poisoned pages
// raise SIGBUS, and aspace::try_map fails with ESHUTDOWN.
//
// Blocking points (each reported to the vm_wait_hook, vm/detail/wait_hooks.hpp): the region or map
// lock wait (detail::vm_rw_lock) and the page-in call (vm_wait_kind::page_source).
// Wait-for graph (activity/wait_graph.hpp): from the moment a fault thread reads the fault of an
// announced thread until it is resolved, that thread is recorded as
// waiting ("page" wait, on its behalf) on the fault, served by the fault thread; the report names the
// fault's address and, once the region is known, its file and file offset (or anonymous memory).
// The fault thread's own lock waits are recorded by the vm locks (which know their holders) and its
// page-in send by the channel. A fault waits unread in the kernel's queue only for as long as an idle
// pool thread takes to read it (below the pool's limit one is always idle); at the limit the pool's
// reader queues it and records the wait (fault_pool.hpp), so every cycle through a fault is seen. When the graph breaks a cycle at one of the fault
// thread's lock waits (EDEADLK), the fault fails: the faulting access gets SIGBUS (a server copying
// into client memory turns that into EFAULT), which ends the lock-up.
//
// Thread-safety: stats(), stop() and fault_in() may be called from any thread (not from a fault thread).
// Lifetime: the aspace, and pager_options::pool when given, must outlive the pager. Lock order: see
// aspace.hpp; a fault thread holds at most one vm lock (rank 20, or rank 10 in single_lock mode)
// while it calls page_in; the constructor and stop() take the pool's leaf mutex (no faultsafe lock of
// rank >= leaf may be held around them).
// Memory ordering: every atomic here is relaxed: statistics, and a region's fault-around hints (a
// stale hint only changes the size of the next window); the pages themselves are ordered by the
// userfaultfd ioctls and the region locks.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <exception>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "../activity/wait_graph.hpp"
#include "../detail/fault_injection.hpp"
#include "../detail/thread_record.hpp"
#include "../order/ranked_mutex.hpp"
#include "aspace.hpp"
#include "fault_pool.hpp"
#include "faulting_thread.hpp"
#include "page_source.hpp"
#include "poisoned_pages.hpp"

namespace faultsafe {

/// Options of a pager.
struct pager_options {
  /// 0 (default): the faults are served by `pool`, or by the process-wide fault_pool::shared() when
  /// `pool` is null. n >= 1: by a pool of this pager's own that starts n threads named "<name>/0",
  /// "<name>/1", ... and grows like any fault pool (vm/fault_pool.hpp), up to max_fault_threads.
  unsigned fault_threads = 0;
  std::size_t min_window = vm_page_size;         ///< window of a random fault (page multiple, power of 2)
  std::size_t max_window = std::size_t{2} << 20; ///< largest sequential window (>= min_window, power of 2)
  const char* name = "proc";                     ///< its own pool's thread name prefix; must outlive the pager
  /// Sequential read-ahead: once the window reaches max_window, each sequential fault also maps the
  /// next window except its first page, so the reader works while the pager maps ahead.
  bool readahead = true;
  /// The pool that serves this pager when fault_threads is 0 (null: fault_pool::shared()). It must
  /// outlive the pager.
  fault_pool* pool = nullptr;
  /// fault_threads >= 1 only: its own pool's growth limit (0: fault_pool_options' default; else >= 2).
  unsigned max_fault_threads = 0;
};

/// Counters (relaxed snapshots).
struct pager_stats {
  std::uint64_t faults = 0;          ///< fault messages served
  std::uint64_t pages_mapped = 0;    ///< pages mapped by fills (windows included)
  std::uint64_t already_mapped = 0;  ///< faults whose page another fill had mapped (EEXIST)
  std::uint64_t gone = 0;            ///< faults on a region unmapped meanwhile
  std::uint64_t page_in_errors = 0;  ///< page-ins that failed (the thread got SIGBUS)
  std::uint64_t events = 0;          ///< remote aspace: unmap/remap/remove events of the other process
  std::uint64_t retried = 0;         ///< faults woken to fault again: the memory map was changing (EAGAIN)
};

class pager final : private fault_handler {
 public:
  /// Effects: registers the aspace's userfaultfd with its fault pool (see pager_options), starting
  /// that pool first if it is the pager's own. Throws: std::system_error (EINVAL for bad options, or
  /// the pool's epoll/eventfd/thread creation errors, or the registration's); then nothing was started.
  explicit pager(aspace& as, pager_options opts = {}) : as_(as), opts_(opts) {
    const auto pow2 = [](std::size_t v) { return v != 0 && (v & (v - 1)) == 0; };
    if (opts_.min_window < vm_page_size || !pow2(opts_.min_window) || !pow2(opts_.max_window) ||
        opts_.max_window < opts_.min_window || (opts_.fault_threads != 0 && opts_.max_fault_threads == 1))
      throw std::system_error(std::make_error_code(std::errc::invalid_argument), "faultsafe::pager: bad options");
    if (opts_.fault_threads != 0) {
      fault_pool_options po;
      po.min_threads = opts_.fault_threads;
      if (opts_.max_fault_threads != 0) po.max_threads = opts_.max_fault_threads;
      po.max_threads = std::max(po.max_threads, po.min_threads);
      po.name = opts_.name;
      own_pool_ = std::make_unique<fault_pool>(std::move(po));
      pool_ = own_pool_.get();
    } else {
      pool_ = opts_.pool != nullptr ? opts_.pool : &fault_pool::shared();
    }
    if (auto ec = pool_->add(as_.userfault().fd(), *this, reg_))
      throw std::system_error(ec, "faultsafe::pager: registering the userfaultfd");
  }
  pager(const pager&) = delete;
  pager& operator=(const pager&) = delete;
  ~pager() { stop(); }

  /// Effects: ends the registration (the pool's threads finish the faults of this aspace they have
  /// read; queued ones are dropped), then makes every remaining and future fault of the aspace fail
  /// fast or be served by the kernel (see header); stops its own pool, if any. Idempotent.
  /// Requires: not called from a fault thread or a page source.
  void stop() {
    if (stopped_.exchange(true)) return;
    reg_.reset();
    as_.pager_stopped();
    own_pool_.reset();
  }

  [[nodiscard]] pager_stats stats() const noexcept {
    pager_stats s;
    s.faults = faults_.load(std::memory_order_relaxed);
    s.pages_mapped = pages_.load(std::memory_order_relaxed);
    s.already_mapped = eexist_.load(std::memory_order_relaxed);
    s.gone = gone_.load(std::memory_order_relaxed);
    s.page_in_errors = errors_.load(std::memory_order_relaxed);
    s.events = events_.load(std::memory_order_relaxed);
    s.retried = retried_.load(std::memory_order_relaxed);
    return s;
  }
  [[nodiscard]] const pager_options& options() const noexcept { return opts_; }
  /// The pool that serves this pager's faults.
  [[nodiscard]] fault_pool& pool() const noexcept { return *pool_; }

  /// Effects: makes every page of [addr, addr + len) present as a first touch there would (page-in
  /// through the page source on behalf of the CALLING thread and its activity, then the fill), without
  /// a fault; pages already present are kept. This is the fault-in step of gfs2's fault-in-and-retry:
  /// a server whose copy into another process's memory failed with EFAULT (a user-mode-only
  /// userfaultfd refuses kernel-mode faults) drops its locks, calls fault_in, and retries the copy.
  /// Returns: {} or the first error: EFAULT (a page no region covers), the page-in's error (ENXIO past
  /// the end of the file, ...), EDEADLK, EAGAIN (the memory map kept changing for 2 s: a page retried
  /// that long); nothing is poisoned and no thread is signalled. `served` (if
  /// given): the bytes from addr, up to len, that are present before the first page that failed (all
  /// of them on success), so a copy can go on up to there (a short count, as the kernel's own copy
  /// stops at the first page it cannot fault in).
  /// Requires: the calling thread holds no lock the page source needs (the page-in runs on it), and
  /// is not a fault thread. Complexity: one page-in per window. Throws: std::bad_alloc.
  [[nodiscard]] std::error_code fault_in(const void* addr, std::size_t len, std::size_t* served = nullptr) {
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    const auto a = start & ~std::uintptr_t{vm_page_size - 1};
    const auto e = start + len;
    if (served != nullptr) *served = 0;
    if (len == 0) return {};
    if (e < a) return std::make_error_code(std::errc::invalid_argument);
    const pid_t tid = this_thread_tid();
    std::error_code ec;
    std::uintptr_t p = a;
    for (; p < e; p += vm_page_size) {
      // EAGAIN: the fill found the process's memory map changing (a userfaultfd event not yet read:
      // the kernel's mmap_changing); it is transient, so the page is served again, as a fault would be
      // taken again: yielding at first, then every 50 us, for up to 2 s (the event reader may be a
      // slow thread: seen under ASan with 4 server threads faulting in at once).
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      for (int tries = 0;; ++tries) {
        ec.clear();
        fault f{p, true, false, tid, lookup_faulting_thread(tid), &ec};
        serve(f, nullptr);
        if (ec != std::errc::resource_unavailable_try_again || std::chrono::steady_clock::now() >= give_up) break;
        if (tries < 64) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      if (ec) break;
    }
    if (served != nullptr) *served = p > start ? static_cast<std::size_t>(std::min(p, e) - start) : 0;
    return ec;
  }

 private:
  struct fault {
    std::uintptr_t page;
    bool write;
    bool minor;
    pid_t tid;
    faulting_thread_info who{};
    std::error_code* quiet = nullptr;  // fault_in(): a failure is stored here; nothing is poisoned
    std::uint32_t events_seen = 0;     // remote: the number of the last event read before it (aspace::read_event)
  };

  // The wait-for graph's view of a fault being served: the faulting thread waits for this pager thread.
  class fault_waitable final : public waitable {
   public:
    fault_waitable(std::uint32_t server, std::uintptr_t page, const char* space) noexcept
        : server_(server), page_(page), space_(space) {}
    void wait_holders(std::vector<std::uint32_t>& threads) const override { threads.push_back(server_); }
    [[nodiscard]] std::string wait_name() const override {
      char buf[96];
      std::snprintf(buf, sizeof buf, "fault 0x%llx in aspace '%s'", static_cast<unsigned long long>(page_), space_);
      exclusive_guard g(mu_);
      return buf + where_;
    }
    [[nodiscard]] std::string_view holder_relation() const override { return "served by"; }
    // Effects: what the fault is on, once the region is known: " (file nfs:/nfs/a offset 4096)" or
    // " (anonymous memory)". Requires: a reference to r. Reads only what r owns (its copy of the source's
    // name, not the source: r may be unmapped meanwhile, see aspace.hpp "Region lifetime"). Takes only
    // this object's leaf mutex. Throws: std::bad_alloc.
    void describe(const region& r, std::uintptr_t page) {
      std::string w;
      if (!r.file_ || r.owned_memfd_ >= 0) {
        w = " (anonymous memory)";
      } else {
        w = " (file " + (r.source_name_.empty() ? std::string("?") : r.source_name_) + " offset " +
            std::to_string(r.file_->offset + (page - r.start_) - r.source_base_) + ")";
      }
      exclusive_guard g(mu_);
      where_ = std::move(w);
    }

   private:
    std::uint32_t server_;
    std::uintptr_t page_;
    const char* space_;
    mutable ranked_mutex<rank::leaf> mu_{"pager threads"};  // leaf: where_
    std::string where_ FAULTSAFE_GUARDED_BY(mu_);
  };

  // The file page behind a fault and its poisoned_pages generation before the page-in (fail()).
  struct poison_note {
    int memfd;
    std::uint64_t offset;
    std::uint64_t generation;
  };

  // fault_handler: one message of the aspace's userfaultfd, on a pool thread. From the moment the
  // thread has read a fault until it is resolved, the faulting thread's page wait is recorded (served
  // by this thread).
  ssize_t read_message(int fd, uffd_msg& msg) noexcept override {
    if (as_.remote()) return as_.read_event(fd, msg);
    return ::read(fd, &msg, sizeof msg);
  }
  void handle_fault(const uffd_msg& msg) noexcept override {
    if (msg.event != UFFD_EVENT_PAGEFAULT) {
      remote_event(msg);
      return;
    }
    const auto& pf = msg.arg.pagefault;
    fault f{static_cast<std::uintptr_t>(pf.address) & ~std::uintptr_t{vm_page_size - 1},
            (pf.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0, (pf.flags & UFFD_PAGEFAULT_FLAG_MINOR) != 0,
            static_cast<pid_t>(pf.feat.ptid), {}};
    f.events_seen = msg.reserved3;
    f.who = lookup_faulting_thread(f.tid);
    std::optional<fault_waitable> fw;
    std::optional<wait_scope> ws;  // destroyed before fw
    if (f.who.thread_id != 0 && wait_graph::enabled()) {
      fw.emplace(this_thread_id(), f.page, as_.name());
      try {
        ws.emplace(on_behalf, f.who.thread_id, *fw, wait_kind::page);
      } catch (...) {  // the violation handler threw: serve the fault anyway, unrecorded
      }
    }
    serve(f, fw ? &*fw : nullptr);
  }
  [[nodiscard]] std::uint32_t faulting_thread(const uffd_msg& msg) noexcept override {
    if (msg.event != UFFD_EVENT_PAGEFAULT) return 0;
    return lookup_faulting_thread(static_cast<pid_t>(msg.arg.pagefault.feat.ptid)).thread_id;
  }
  [[nodiscard]] std::string fault_space() const override { return as_.name(); }

  // A remote aspace's userfaultfd also reports what the other process did to its mappings (aspace.hpp,
  // "Another OS process's memory"). Read by a fault thread holding no lock; the kernel has already let
  // the other process go on (an event completes when it is read). Other events are not requested.
  void remote_event(const uffd_msg& m) noexcept {
    if (!as_.remote()) return;
    events_.fetch_add(1, std::memory_order_relaxed);
    switch (m.event) {
      case UFFD_EVENT_UNMAP:  // munmap, or mremap shrinking: forget the range (what was tracked before the event was read)
        (void)as_.remote_unmapped(static_cast<std::uintptr_t>(m.arg.remove.start), static_cast<std::uintptr_t>(m.arg.remove.end),
                                  m.reserved3);
        break;
      case UFFD_EVENT_REMAP:  // mremap moved the pages and their registration
        as_.remote_moved(static_cast<std::uintptr_t>(m.arg.remap.from), static_cast<std::uintptr_t>(m.arg.remap.to),
                         static_cast<std::size_t>(m.arg.remap.len), m.reserved3);
        break;
      default:  // UFFD_EVENT_REMOVE (MADV_DONTNEED/REMOVE): the next touch faults and is served again
        break;
    }
    as_.event_applied(m.reserved3);
  }

  // Remote: a fault on an address no region covers. The REMAP that moves its region here may have been
  // read before the fault and be in the hands of another fault thread right now (mremap returns once
  // its event is read): wait until every event read before the fault is applied, however long that
  // takes on a loaded machine (an event's application waits only for in-flight fault service on the
  // regions it changes), bounded by 10 s; then look again briefly (a track racing the
  // first touch of a program that touches a mapping before its mmap returned).
  region* await_region(const fault& f) {
    const auto start = std::chrono::steady_clock::now();
    while (!as_.events_applied_through(f.events_seen)) {
      if (region* r = as_.acquire_region(f.page)) return r;
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(10)) return nullptr;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (region* r = as_.acquire_region(f.page)) return r;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      if (region* r = as_.acquire_region(f.page)) return r;
    }
    return nullptr;
  }

  // Wait-for graph: while this thread serves the fault (from the moment it read it), the faulting
  // thread (if it announced itself) waits on it: a "page" wait recorded on its behalf by handle_fault(), `fw`.
  void serve(const fault& f, fault_waitable* fw) noexcept {
    faults_.fetch_add(1, std::memory_order_relaxed);
    try {
      serve_locked(f, fw);
    } catch (const std::system_error& e) {
      fail(f, nullptr, e.code());  // e.g. EDEADLK: the wait-for graph broke a cycle at one of our lock waits
    } catch (...) {
      fail(f);
    }
  }

  void serve_locked(const fault& f, fault_waitable* fw) {
    if (as_.opts_.single_lock) {
      detail::vm_exclusive_hold<aspace::map_lock_type> g(as_.map_lock_);  // the whole space, during I/O
      region* r = as_.find_locked(f.page);
      if (r == nullptr || r->dead_) return gone(f);
      if (fw != nullptr) fw->describe(*r, f.page);
      serve_region(*r, f);
      return;
    }
    region* r = as_.acquire_region(f.page);
    if (r == nullptr && as_.remote()) {
      r = await_region(f);
      if (r == nullptr) return fail(f, nullptr, std::make_error_code(std::errc::bad_address));  // SIGBUS, not a refault loop
    }
    if (r == nullptr) return gone(f);
    struct ref_guard {
      region* r;
      ~ref_guard() { aspace::release(r); }
    } ref{r};
    // Before the region lock wait, so that reports name the file; only what the reference keeps alive.
    if (fw != nullptr) fw->describe(*r, f.page);
    detail::vm_shared_hold<aspace::region_lock_type> g(r->lock_);
    if (r->dead_) gone(f);
    else serve_region(*r, f);
  }

  void gone(const fault& f) {
    if (f.quiet != nullptr) *f.quiet = std::make_error_code(std::errc::bad_address);
    gone_.fetch_add(1, std::memory_order_relaxed);
    (void)as_.uffd_.wake(f.page, vm_page_size);
  }

  // Requires: r held shared (single_lock: the map lock exclusively) and not dead.
  void serve_region(region& r, const fault& f) {
    // (3) fault-around window. The region's stream state: the last window started at stream_start_,
    // the next sequential fault is expected at next_expected_, and everything up to stream_end_ is
    // mapped or being mapped (read-ahead included).
    const std::size_t minw = opts_.min_window, maxw = opts_.max_window;
    const std::uintptr_t expected = r.next_expected_.load(std::memory_order_relaxed);
    const std::uintptr_t sstart = r.stream_start_.load(std::memory_order_relaxed);
    const std::uintptr_t send = r.stream_end_.load(std::memory_order_relaxed);
    const std::size_t cur = r.window_.load(std::memory_order_relaxed);
    const bool sequential = f.page == expected;
    const bool inside = !sequential && f.page >= sstart && f.page < send;  // being mapped, or a stale message
    std::size_t win = sequential ? std::min(std::max(cur * 2, minw), maxw) : inside ? std::max(cur, minw) : minw;
    std::uintptr_t w0 = win > minw || inside ? f.page : (f.page & ~std::uintptr_t{minw - 1});
    if (w0 < r.start_) w0 = r.start_;
    std::size_t wl = std::min<std::size_t>(win, r.end() - w0);
    if (f.page >= w0 + wl) {  // the aligned window ends before the page (region edge): start at the page
      w0 = f.page;
      wl = std::min<std::size_t>(win, r.end() - w0);
    }
    // Read-ahead at full speed: also map the next window except its first page (the marker), so the
    // reader's next fault comes when it reaches the marker, while the rest is already mapped. The
    // marker fault maps one page (the window fill stops at the first mapped page) and reads ahead again.
    std::uintptr_t ra0 = 0;
    std::size_t ral = 0;
    if (opts_.readahead && sequential && win == maxw && w0 + wl + vm_page_size < r.end()) {
      ra0 = w0 + wl + vm_page_size;
      ral = std::min<std::size_t>(wl - vm_page_size, r.end() - ra0);
    }
    if (!inside) {
      r.window_.store(win, std::memory_order_relaxed);
      r.stream_start_.store(w0, std::memory_order_relaxed);
      r.next_expected_.store(w0 + wl, std::memory_order_relaxed);
      r.stream_end_.store(ral != 0 ? ra0 + ral : w0 + wl, std::memory_order_relaxed);
    }
    fill(r, f, w0, wl, true);
    if (ral != 0) fill(r, f, ra0, ral, false);
  }

  // Effects: makes [w0, w0+wl) of r valid and mapped. demand: the fill serves fault f (the thread is
  // woken, or gets SIGBUS); else it is read-ahead (best effort, errors ignored).
  void fill(region& r, const fault& f, std::uintptr_t w0, std::size_t wl, bool demand) {
    const detail::uffd& u = as_.uffd_;
    if (!r.file_) {  // anonymous: zero-fill
      const auto res = u.zeropage(w0, wl);
      if (demand) settle_fault(f, w0, res, [&](std::uintptr_t p) { return u.zeropage(p, vm_page_size); }, false);
      else pages_.fetch_add(res.done / vm_page_size, std::memory_order_relaxed);
      return;
    }
    const file_backing& fb = *r.file_;
    page_in_request req;
    req.file = fb.file;
    req.memfd = fb.memfd;
    req.offset = fb.offset + (w0 - r.start_);
    req.length = wl;
    req.fault_offset = demand ? fb.offset + (f.page - r.start_) : req.offset;
    req.fault_address = f.page;
    req.write = f.write;
    req.minor = demand && f.minor;
    req.readahead = !demand;
    req.thread = f.who;
    page_in_result out;
    std::error_code ec;
    // Read before the page-in: a growth of the file after it makes record() unpoison (poisoned_pages).
    const poison_note note{fb.memfd, fb.offset + (f.page - r.start_),
                           demand ? poisoned_pages::instance().generation(fb.memfd, fb.offset + (f.page - r.start_)) : 0};
    {
      detail::vm_wait_scope w(vm_wait_kind::page_source, &r, "page-in");
      try {
        // Fault injection (detail/fault_injection.hpp): the pager cannot allocate for this fault.
        if (FAULTSAFE_INJECT(pager_alloc)) throw std::bad_alloc();
        ec = fb.source->page_in(req, out);
      } catch (const std::system_error& e) {
        ec = e.code();
      } catch (const std::bad_alloc&) {
        ec = std::make_error_code(std::errc::not_enough_memory);
      } catch (...) {
        ec = std::make_error_code(std::errc::io_error);
      }
    }
    if (demand) (void)FAULTSAFE_INJECT(munmap_race);  // fault injection: stall between page-in and map
    // The valid bytes: [w0 + out.first, w0 + out.length) (page_source.hpp: a source may leave out a
    // prefix of the window).
    const bool bad_first = out.first >= out.length || (out.first % vm_page_size) != 0;
    if (!demand) {
      if (ec || out.length == 0 || out.length > wl || bad_first) return;
      const std::size_t len = ((out.length + vm_page_size - 1) & ~(vm_page_size - 1)) - out.first;
      const std::uintptr_t s = w0 + out.first;
      const auto res = u.continue_range(s, len);
      pages_.fetch_add(res.done / vm_page_size, std::memory_order_relaxed);
      return;
    }
    const std::size_t need = f.page + vm_page_size - w0;
    if (!ec && (out.length < need || out.length > wl || bad_first || out.first > f.page - w0))
      ec = std::make_error_code(std::errc::io_error);
    if (ec) return fail(f, &note, ec);
    const std::size_t len = ((out.length + vm_page_size - 1) & ~(vm_page_size - 1)) - out.first;
    const std::uintptr_t s = w0 + out.first;
    settle_fault(f, s, u.continue_range(s, len), [&](std::uintptr_t p) { return u.continue_range(p, vm_page_size); }, true, &note);
  }

  // Effects: settles the faulting thread after a window fill `res` that started at w0: done if the
  // fill covered its page (the ioctl woke it); otherwise fills the page alone with `one` (see below), and wakes
  // (EEXIST, EAGAIN, ENOENT; EFAULT of a CONTINUE: a page left the page cache after the page-in, e.g. the
  // file was truncated, and the retried access faults again or takes the kernel's SIGBUS past the
  // end) or fails (anything else) it.
  template <class FillOne>
  void settle_fault(const fault& f, std::uintptr_t w0, detail::uffd_fill_result res, FillOne one, bool shared,
                    const poison_note* note = nullptr) {
    pages_.fetch_add(res.done / vm_page_size, std::memory_order_relaxed);
    if (f.page >= w0 && f.page < w0 + res.done) return;
    // The window stopped before the faulting page (EAGAIN, EEXIST), or failed as a whole with ENOENT,
    // which a window also gets when it spans two of the process's VMAs (an mprotect(2) of part of a
    // mapping of another process splits its VMA and tells the server nothing): the page alone lies in
    // one VMA, so only its own ENOENT means unmapped (without this, such a fault was woken to fault
    // again forever).
    if (res.error == std::errc::resource_unavailable_try_again || (res.error == std::errc::file_exists && w0 + res.done < f.page) ||
        (res.error == std::errc::no_such_file_or_directory && w0 + res.done <= f.page)) {
      res = one(f.page);
      pages_.fetch_add(res.done / vm_page_size, std::memory_order_relaxed);
      if (res.done != 0) return;
    }
    if (res.error == std::errc::file_exists) {
      eexist_.fetch_add(1, std::memory_order_relaxed);
      (void)as_.uffd_.wake(f.page, vm_page_size);
      return;
    }
    // EAGAIN again: the memory map is still changing (an UNMAP, REMAP or REMOVE event of another of
    // the process's threads is not read yet; that thread waits in the kernel until it is). The
    // fault is woken and taken again, by then usually after the event: the kernel's own answer to
    // a fault during an mm change. Failing it instead gave a correct program SIGBUS (test
    // "a fault racing another thread's munmap or madvise events"). fault_in() reports EAGAIN and
    // retries itself.
    if (res.error == std::errc::resource_unavailable_try_again && f.quiet == nullptr) {
      retried_.fetch_add(1, std::memory_order_relaxed);
      (void)as_.uffd_.wake(f.page, vm_page_size);
      return;
    }
    if (res.error == std::errc::no_such_file_or_directory || res.error == std::errc::no_such_process ||
        (shared && res.error == std::errc::bad_address)) {
      gone_.fetch_add(1, std::memory_order_relaxed);
      (void)as_.uffd_.wake(f.page, vm_page_size);
      return;
    }
    fail(f, note, res.error ? res.error : std::make_error_code(std::errc::io_error));
  }

  // Effects: the faulting access gets SIGBUS, at the access: UFFDIO_POISON marks the page and wakes
  // the thread, whose retried access takes the kernel's SIGBUS (BUS_MCEERR_AR). No signal is ever sent
  // to the thread (it may have been woken by another fill or wake of the page and moved on; a late
  // signal would land anywhere). Where the kernel refuses POISON, the thread is woken and retries:
  //   EFAULT: a shared (shmem) page past the end of the file (truncated since the fault): the retried
  //     access takes the kernel's own SIGBUS (BUS_ADRERR), or faults again if the file has grown back;
  //   EEXIST: another fill mapped the page: the data is there;
  //   ENOENT, ESRCH: unmapped meanwhile: SIGSEGV, as after munmap;
  //   EAGAIN: the mm was changing: POISON is retried;
  //   anything else: the access faults again and is served again.
  // Without UFFD_FEATURE_POISON (Linux < 6.6) the only way is tgkill(SIGBUS) to the faulting thread,
  // which arrives late when the thread was woken meanwhile (a known limit of such kernels).
  // `note` (a file page, its region held as serve_region requires): the poisoned page is recorded in
  // poisoned_pages, so that a growth of the file over it removes the marker again. Without a note
  // (anonymous memory, or a failure before the region lock) the page stays poisoned until unmapped.
  void fail(const fault& f, const poison_note* note = nullptr, std::error_code why = std::make_error_code(std::errc::io_error)) {
    if (f.quiet != nullptr) {  // fault_in(): report, touch nothing
      *f.quiet = why;
      return;
    }
    errors_.fetch_add(1, std::memory_order_relaxed);
    if (as_.remote()) note = nullptr;  // poisoned_pages zaps addresses of this process only
    const detail::uffd& u = as_.uffd_;
    if (u.has(UFFD_FEATURE_POISON)) {
      detail::uffd_fill_result res;
      // With a note the thread is woken only once the page is recorded: its next step (a file_grown()
      // after the SIGBUS, say) must find the record.
      for (int tries = 0; tries < 100; ++tries) {
        res = u.poison(f.page, vm_page_size, /*dont_wake=*/note != nullptr);
        if (res.error != std::errc::resource_unavailable_try_again) break;
      }
      if (!res.error && note != nullptr) poisoned_pages::instance().record(&as_, note->memfd, note->offset, f.page, note->generation);
      if (res.error || note != nullptr) (void)u.wake(f.page, vm_page_size);
      return;
    }
    ::syscall(SYS_tgkill, ::getpid(), f.tid, SIGBUS);
    (void)u.wake(f.page, vm_page_size);
  }

  aspace& as_;
  const pager_options opts_;
  std::unique_ptr<fault_pool> own_pool_;  // fault_threads >= 1
  fault_pool* pool_ = nullptr;
  fault_pool::registration reg_;          // ended before own_pool_ is destroyed (stop())
  std::atomic<bool> stopped_{false};
  std::atomic<std::uint64_t> faults_{0}, pages_{0}, eexist_{0}, gone_{0}, errors_{0}, events_{0}, retried_{0};
};

}  // namespace faultsafe
