// faultsafe/vm/fault_pool.hpp: one pool of fault threads serving the userfaultfds of many address
// spaces (the "proc" role of every logical process at once).
//
// Defines `fault_pool_options`, `fault_pool_stats`, the interface `fault_handler` and `fault_pool`
// with its RAII `fault_pool::registration`.
//
// What it does. A pool owns one epoll set. Each registered userfaultfd is in it (EPOLLIN |
// EPOLLONESHOT); a pool thread woken for one reads ONE message from it (so no fault ever queues behind
// another fault's page-in on the same thread), re-arms it (another idle thread can read that uffd's
// next fault at once), and hands the message to the registration's `fault_handler` (vm/pager.hpp's
// pager serves its aspace; issue 11's server serves a userfaultfd handed over by a client OS process).
// So N address spaces cost N userfaultfds and N epoll entries, not N sets of threads: 10,000 logical
// processes with a mapping each run on the pool's few threads (README: bench_pager "aspaces/*").
//
// Growth: no bounded resource a correct program can exhaust into a hang (model/README.md, finding 1).
// The pool starts `min_threads` threads. A thread that leaves the epoll wait to serve a fault and
// thereby leaves no thread idle starts one more (as a server pool grows, resmgr/thread_pool.hpp), so
// while the pool is below `max_threads` every fault is read at once, however many page-ins block
// (each busy thread serves one blocked faulting thread: the pool never exceeds the number of threads
// blocked in faults, plus the idle ones). At `max_threads` (or when the OS refuses a thread) the
// thread that would leave none idle stays the pool's reader instead: it reads the fault and queues it
// (the backlog), and the next thread to finish a fault serves it. A queued fault is a wait-for-graph
// wait (activity/wait_graph.hpp), recorded on behalf of the faulting thread when the handler names it
// (fault_handler::faulting_thread): "fault ... queued: every thread of fault pool 'X' (N, its maximum)
// is busy", an ANY resource served by the busy threads. If they are all stuck on that thread (finding
// 1's cycle at the cap), the graph reports the cycle and breaks it at a breakable wait of a fault
// thread (its page-in's lock or send wait fails: that fault gets SIGBUS), so the cap becomes a
// reported error, never a silent hang. Threads do not shrink (a pool that needed N once keeps them).
//
// Registering a userfaultfd (the API issue 11 builds on): `add(uffd, handler, reg)`.
//   - uffd: any userfaultfd opened O_NONBLOCK with UFFDIO_API done (UFFD_FEATURE_THREAD_ID is what
//     lets a handler resolve the faulting thread); this process's own (vm/aspace.hpp) or one received
//     from another OS process over a Unix socket (SCM_RIGHTS). The pool neither owns nor closes it.
//     The handler resolves each fault with ioctls on that same uffd: for a client's MAP_SHARED mapping
//     of a server memfd registered MINOR(+MISSING), UFFDIO_CONTINUE after making the page-cache page
//     valid; for MAP_PRIVATE registered MISSING, UFFDIO_COPY from a buffer. The ioctls act on the mm
//     that created the uffd, so the addresses in the messages are the client's.
//   - handler.handle_fault(msg) runs on a pool thread for every message; it must resolve (fill, wake
//     or poison) the faulting thread and return; it may block (a page-in): the pool grows meanwhile.
//     handler.faulting_thread(msg): the faultsafe thread id of the faulting thread, or 0 when it is not
//     one of this process's announced threads (always 0 for another OS process's uffd: its ptid is a
//     tid of that process). A handler records the page wait of the fault it serves itself (pager.hpp).
//   - `reg` (a `registration`) ends the registration when destroyed or reset(): the uffd leaves the
//     epoll set, queued faults of it are dropped (their threads stay blocked in the kernel until the
//     caller unregisters the ranges or closes the uffd, which wakes them), and reset() returns once no
//     pool thread runs the handler for it any more. Then the caller may close the uffd and destroy the
//     handler.
//
// Thread-safety: all members from any thread. A handler runs concurrently on several pool threads
// (one message each). Lock order: the pool mutex is a leaf (rank::leaf), held for bookkeeping only:
// never across a read, a handler, a thread start's join or a wait-for-graph call; the graph calls the
// queued fault's wait_holders() with its own mutex held, which then takes the pool mutex (the graph's
// mutex is ordered before every resource-internal lock).
// Lifetime: registration::reset() must not run on a pool thread inside the handler it ends (it would
// wait for itself: it then reports and does not wait). Every registration ends before its pool is
// destroyed; the destructor stops and joins the threads. `fault_pool::shared()` is never destroyed.
// Memory ordering: every counter is read and written under the pool mutex, except the statistics
// (relaxed snapshots); shared()'s pointer is published with (1) release / (2) acquire.
// fork(): a child gets a fresh shared() pool; a pool made by the parent has no threads in the child
// (do not use it there).
#pragma once

#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../activity/wait_graph.hpp"
#include "../detail/thread_record.hpp"
#include "../order/ranked_mutex.hpp"
#include "../order/violation.hpp"
#include "../thread_annotations.hpp"

namespace faultsafe {

/// Options of a fault pool.
struct fault_pool_options {
  /// Threads started at once (>= 1). fault_pool::shared() starts max(min_threads, cores).
  unsigned min_threads = 2;
  /// Growth limit (>= 2, >= min_threads). Reaching it queues faults in a reported backlog (see header).
  unsigned max_threads = 1024;
  /// Thread names "<name>/0", "<name>/1", ... Copied.
  std::string name = "fault";
};

/// Counters (relaxed snapshots).
struct fault_pool_stats {
  std::uint64_t messages = 0;    ///< messages handed to handlers
  std::uint64_t queued = 0;      ///< messages queued in the backlog (the pool was at its maximum)
  unsigned threads = 0;          ///< threads started
  unsigned peak_busy = 0;        ///< most threads inside handlers at once
  std::size_t registrations = 0; ///< userfaultfds registered now
};

/// What serves the messages of one registered userfaultfd (see the header's "Registering").
class fault_handler {
 public:
  /// Effects: serves `msg` (read from the registered uffd) and resolves its faulting thread.
  /// Thread-safety: called concurrently from several pool threads. Must not throw.
  virtual void handle_fault(const uffd_msg& msg) noexcept = 0;
  /// Returns: the faultsafe thread id of the thread that took `msg`, or 0 if unknown. Must not block.
  [[nodiscard]] virtual std::uint32_t faulting_thread(const uffd_msg& msg) noexcept {
    (void)msg;
    return 0;
  }
  /// The address space's name in reports ("Bob").
  [[nodiscard]] virtual std::string fault_space() const { return "?"; }
  /// Effects: reads one message from the registered userfaultfd `fd` (non-blocking) into `msg`; returns
  /// what read(2) returns. A handler may stamp the message here (the pager of another process's memory
  /// numbers its UNMAP and REMAP events in read order: vm/aspace.hpp, read_event). The pool reads each
  /// registration's messages one at a time. Must not block or throw.
  virtual ssize_t read_message(int fd, uffd_msg& msg) noexcept { return ::read(fd, &msg, sizeof msg); }

 protected:
  fault_handler() = default;
  fault_handler(const fault_handler&) = default;
  fault_handler& operator=(const fault_handler&) = default;
  ~fault_handler() = default;
};

class fault_pool {
  struct entry;

 public:
  /// One registered userfaultfd; ends the registration when destroyed (see header).
  class registration {
   public:
    registration() = default;
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;
    registration(registration&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), id_(std::exchange(o.id_, 0)) {}
    registration& operator=(registration&& o) noexcept {
      if (this != &o) {
        reset();
        pool_ = std::exchange(o.pool_, nullptr);
        id_ = std::exchange(o.id_, 0);
      }
      return *this;
    }
    ~registration() { reset(); }
    /// Effects: ends the registration (see header); returns once no pool thread runs its handler.
    /// Idempotent. Requires: not called from inside this registration's handler.
    void reset() noexcept {
      if (pool_ != nullptr) pool_->remove(id_);
      pool_ = nullptr;
      id_ = 0;
    }
    [[nodiscard]] bool active() const noexcept { return pool_ != nullptr; }
    [[nodiscard]] fault_pool* pool() const noexcept { return pool_; }

   private:
    friend class fault_pool;
    fault_pool* pool_ = nullptr;
    std::uint64_t id_ = 0;
  };

  /// Effects: starts min_threads threads. Throws: std::system_error (EINVAL for bad options, or the
  /// epoll/eventfd/thread creation error); then nothing runs.
  explicit fault_pool(fault_pool_options opts = {}) : opts_(std::move(opts)) {
    if (opts_.min_threads == 0 || opts_.max_threads < 2 || opts_.max_threads < opts_.min_threads)
      throw std::system_error(std::make_error_code(std::errc::invalid_argument), "faultsafe::fault_pool: bad options");
    cap_ = opts_.max_threads;
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) throw std::system_error(errno, std::generic_category(), "faultsafe::fault_pool: epoll_create1");
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) {
      const int e = errno;
      ::close(ep_);
      throw std::system_error(e, std::generic_category(), "faultsafe::fault_pool: eventfd");
    }
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered and never read: wakes every thread when stopping
    ev.data.u64 = 0;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, stop_fd_, &ev) != 0) {
      const int e = errno;
      ::close(stop_fd_);
      ::close(ep_);
      throw std::system_error(e, std::generic_category(), "faultsafe::fault_pool: epoll_ctl");
    }
    slots_.reset(new slot[opts_.max_threads]);
    try {
      exclusive_guard g(mu_);
      for (unsigned i = 0; i < opts_.min_threads; ++i) spawn_locked();
    } catch (...) {
      stop();
      throw;
    }
  }
  fault_pool(const fault_pool&) = delete;
  fault_pool& operator=(const fault_pool&) = delete;
  /// Requires: every registration has ended. Effects: stops and joins the threads.
  ~fault_pool() { stop(); }

  /// The process-wide pool every pager uses by default: max(2, cores) threads at first, named
  /// "fault/0", ... Created on first use, never destroyed (its threads may outlive static destructors).
  /// A child of fork() gets a pool of its own on its first use (the parent's threads do not exist in
  /// it; the parent's pool object is left untouched: its mutex may have been held at the fork).
  /// Throws: as the constructor (first call in a process only).
  static fault_pool& shared() {
    static std::atomic<fault_pool*> slot{nullptr};
    const pid_t me = ::getpid();
    for (;;) {
      fault_pool* p = slot.load(std::memory_order_acquire);  // (2) acquire, pairs with (1)
      if (p != nullptr && p->pid_ == me) return *p;
      fault_pool_options o;
      const unsigned cores = std::thread::hardware_concurrency();
      o.min_threads = std::max(o.min_threads, cores);
      o.max_threads = std::max(o.max_threads, o.min_threads);
      auto made = std::make_unique<fault_pool>(std::move(o));
      // (1) release, pairs with (2): the pool is built before another thread uses it. A pool of the
      // parent process (p, in a child of fork()) is replaced and leaked, never touched.
      if (slot.compare_exchange_strong(p, made.get(), std::memory_order_release, std::memory_order_acquire))
        return *made.release();
      // another thread of this process installed one first: ours is stopped and freed, use theirs
    }
  }

  /// Effects: registers userfaultfd `uffd` (not owned) so that the pool's threads read its messages and
  /// hand each to `h` (see header). `reg` receives the registration (an active one is ended first).
  /// Returns: EINVAL (uffd < 0), ESHUTDOWN (the pool is stopping), or the errno of epoll_ctl (EEXIST:
  /// this uffd is registered already). Throws: std::bad_alloc.
  /// Complexity: O(1) amortised plus one epoll_ctl. Lock order: the pool mutex, briefly.
  [[nodiscard]] std::error_code add(int uffd, fault_handler& h, registration& reg) {
    reg.reset();
    if (uffd < 0) return std::make_error_code(std::errc::invalid_argument);
    auto e = std::make_unique<entry>();
    e->fd = uffd;
    e->handler = &h;
    exclusive_guard g(mu_);
    if (stopping_) return {ESHUTDOWN, std::generic_category()};
    const std::uint64_t id = next_id_++;
    e->id = id;
    entry* raw = e.get();
    entries_.emplace(id, std::move(e));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.u64 = id;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, uffd, &ev) != 0) {
      const int err = errno;
      entries_.erase(id);
      return {err, std::generic_category()};
    }
    (void)raw;
    reg.pool_ = this;
    reg.id_ = id;
    return {};
  }

  [[nodiscard]] fault_pool_stats stats() const {
    fault_pool_stats s;
    s.messages = messages_.load(std::memory_order_relaxed);
    s.queued = queued_.load(std::memory_order_relaxed);
    exclusive_guard g(mu_);
    s.threads = started_;
    s.peak_busy = peak_busy_;
    s.registrations = entries_.size();
    return s;
  }
  [[nodiscard]] const fault_pool_options& options() const noexcept { return opts_; }

 private:
  struct entry {
    std::uint64_t id = 0;
    int fd = -1;
    fault_handler* handler = nullptr;
    unsigned busy = 0;      // messages read and not finished (being handled or queued); under mu_
    bool removed = false;   // under mu_
  };
  struct slot {
    std::uint32_t thread = 0;  // faultsafe id (0 until the thread runs); under mu_
    bool busy = false;         // inside a handler; under mu_
  };

  // A fault queued at the cap: the faulting thread waits on it, served by the pool's busy threads.
  class queued final : public waitable {
   public:
    queued(fault_pool& p, entry* e, const uffd_msg& m) : pool_(p), e_(e), msg_(m) {}
    void wait_holders(std::vector<std::uint32_t>& threads) const override {
      exclusive_guard g(pool_.mu_);
      for (unsigned i = 0; i < pool_.started_; ++i)
        if (pool_.slots_[i].busy && pool_.slots_[i].thread != 0) threads.push_back(pool_.slots_[i].thread);
    }
    [[nodiscard]] bool any_of() const override { return true; }
    // A thread may still appear (below the cap), or the fault was taken: not stuck.
    [[nodiscard]] bool can_grow() const override {
      exclusive_guard g(pool_.mu_);
      return taken_ || pool_.started_ < pool_.cap_;
    }
    [[nodiscard]] std::string wait_name() const override {
      char buf[64];
      std::snprintf(buf, sizeof buf, "fault 0x%llx", static_cast<unsigned long long>(msg_.arg.pagefault.address));
      std::string space;
      try {
        space = e_->handler->fault_space();
      } catch (...) {
      }
      exclusive_guard g(pool_.mu_);
      return std::string(buf) + " in aspace '" + space + "', queued: every thread of fault pool '" + pool_.opts_.name +
             "' (" + std::to_string(pool_.started_) + ", its maximum) is busy";
    }
    [[nodiscard]] std::string_view holder_relation() const override { return "served by one of"; }

    fault_pool& pool_;
    entry* const e_;
    const uffd_msg msg_;
    bool taken_ = false;  // under pool_.mu_
    std::optional<wait_scope> scope;  // the faulting thread's wait; made and destroyed without mu_
  };

  // Requires: mu_. Effects: starts one more thread (counted idle at once). On failure the pool's cap
  // becomes its current size (the backlog takes over) and the error is swallowed, except while the
  // constructor starts min_threads (then it throws).
  void spawn_locked() FAULTSAFE_REQUIRES(mu_) {
    const unsigned idx = started_;
    try {
      threads_.emplace_back([this, idx] { thread_main(idx); });
    } catch (...) {
      if (idx < opts_.min_threads) throw;
      cap_ = started_;
      return;
    }
    ++started_;
    ++idle_;
  }

  void stop() noexcept {
    {
      exclusive_guard g(mu_);
      stopping_ = true;
    }
    if (stop_fd_ >= 0) {
      const std::uint64_t one = 1;
      (void)!::write(stop_fd_, &one, sizeof one);
    }
    // No thread starts once stopping_ is set, so the vector no longer changes.
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    if (stop_fd_ >= 0) ::close(stop_fd_);
    if (ep_ >= 0) ::close(ep_);
    stop_fd_ = ep_ = -1;
  }

  // Effects: see registration::reset.
  void remove(std::uint64_t id) noexcept {
    std::vector<std::unique_ptr<queued>> dropped;  // destroyed after the mutex (their wait scopes)
    std::unique_ptr<entry> gone;
    {
      exclusive_guard g(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end()) return;
      entry* e = it->second.get();
      e->removed = true;
      (void)::epoll_ctl(ep_, EPOLL_CTL_DEL, e->fd, nullptr);
      for (auto q = backlog_.begin(); q != backlog_.end();) {
        if ((*q)->e_ == e) {
          --e->busy;
          dropped.push_back(std::move(*q));
          q = backlog_.erase(q);
        } else {
          ++q;
        }
      }
      if (tl_serving() == e) {  // inside its own handler: cannot wait for itself
        it->second.release();   // leaked deliberately: the running handler still refers to it
        entries_.erase(it);
      } else {
        done_cv_.wait(mu_, [e] { return e->busy == 0; });  // on mu_ itself: the wait stays checked
        gone = std::move(it->second);
        entries_.erase(it);
      }
    }
  }

  static entry*& tl_serving() noexcept {
    thread_local entry* e = nullptr;
    return e;
  }

  void thread_main(unsigned idx) {
    const std::string nm = opts_.name + "/" + std::to_string(idx);
    try {
      set_this_thread_name(nm);
    } catch (...) {
    }
    ::pthread_setname_np(::pthread_self(), nm.substr(0, 15).c_str());
    {
      exclusive_guard g(mu_);
      slots_[idx].thread = this_thread_id();
    }
    for (;;) {
      epoll_event ev{};
      const int n = ::epoll_wait(ep_, &ev, 1, -1);
      if (n < 0 && errno != EINTR) break;
      if (n <= 0) continue;
      if (ev.data.u64 == 0) break;  // the stop eventfd
      take(idx, ev.data.u64);
    }
  }

  // One readiness event of registration `id`, on thread idx (idle until now).
  void take(unsigned idx, std::uint64_t id) {
    entry* e = nullptr;
    bool reader = false;
    {
      exclusive_guard g(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end()) return;  // removed meanwhile
      e = it->second.get();
      ++e->busy;
      --idle_;
      // (growth) a thread that leaves none idle starts one more; at the cap it stays the reader.
      if (idle_ == 0 && started_ < cap_ && !stopping_) spawn_locked();
      reader = idle_ == 0;
      if (!reader) mark_busy_locked(idx);
    }
    uffd_msg msg{};
    const ssize_t r = e->handler->read_message(e->fd, msg);
    {
      epoll_event ev{};  // re-arm while busy: the registration cannot end (nor its fd be reused) meanwhile
      ev.events = EPOLLIN | EPOLLONESHOT;
      ev.data.u64 = id;
      (void)::epoll_ctl(ep_, EPOLL_CTL_MOD, e->fd, &ev);
    }
    if (r != static_cast<ssize_t>(sizeof msg)) {  // EAGAIN: another thread read it; or an error
      finish(idx, e, !reader);
      return;
    }
    if (reader) {
      auto q = std::make_unique<queued>(*this, e, msg);
      const std::uint32_t waiter = e->handler->faulting_thread(msg);
      if (waiter != 0 && wait_graph::enabled()) {
        try {
          q->scope.emplace(on_behalf, waiter, *q, wait_kind::page);
        } catch (...) {  // the violation handler threw: queue it anyway, unrecorded
        }
      }
      {
        exclusive_guard g(mu_);
        if (idle_ == 0) {  // still none idle: queue it for the next thread that finishes
          backlog_.push_back(std::move(q));
          ++idle_;
          queued_.fetch_add(1, std::memory_order_relaxed);  // a statistic
          return;
        }
        mark_busy_locked(idx);  // a thread went idle meanwhile: it is the reader now; serve this one
      }
      q.reset();  // ends the queued wait (no pool mutex held)
    }
    serve_loop(idx, e, msg);
  }

  // Requires: mu_. Thread idx is inside a handler from now on.
  void mark_busy_locked(unsigned idx) FAULTSAFE_REQUIRES(mu_) {
    slots_[idx].busy = true;
    const unsigned busy = started_ - idle_;
    if (busy > peak_busy_) peak_busy_ = busy;
  }

  // Serves msg of e, then every queued fault while there are any.
  void serve_loop(unsigned idx, entry* e, uffd_msg msg) {
    for (;;) {
      tl_serving() = e;
      messages_.fetch_add(1, std::memory_order_relaxed);  // a statistic
      e->handler->handle_fault(msg);
      tl_serving() = nullptr;
      std::unique_ptr<queued> next;
      {
        exclusive_guard g(mu_);
        if (--e->busy == 0 && e->removed) done_cv_.notify_all();
        if (backlog_.empty()) {
          slots_[idx].busy = false;
          ++idle_;
          return;
        }
        next = std::move(backlog_.front());
        backlog_.erase(backlog_.begin());
        next->taken_ = true;
      }
      e = next->e_;
      msg = next->msg_;
      next.reset();  // the faulting thread's queued wait ends; handle_fault records its own
    }
  }

  // A read that returned no message: back to idle.
  void finish(unsigned idx, entry* e, bool was_busy) {
    exclusive_guard g(mu_);
    if (--e->busy == 0 && e->removed) done_cv_.notify_all();
    if (was_busy) slots_[idx].busy = false;
    ++idle_;
  }

  const fault_pool_options opts_;
  const pid_t pid_ = ::getpid();  // the process whose threads these are (shared() after fork())
  int ep_ = -1;
  int stop_fd_ = -1;
  mutable ranked_mutex<rank::leaf> mu_{"fault pool"};
  std::condition_variable_any done_cv_;  // a registration's busy count reached 0
  std::unordered_map<std::uint64_t, std::unique_ptr<entry>> entries_ FAULTSAFE_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<queued>> backlog_ FAULTSAFE_GUARDED_BY(mu_);  // FIFO
  std::unique_ptr<slot[]> slots_;            // max_threads slots; contents under mu_
  std::vector<std::thread> threads_;         // grows under mu_; joined by stop()
  std::uint64_t next_id_ FAULTSAFE_GUARDED_BY(mu_) = 1;  // 0 is the stop eventfd
  unsigned started_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  unsigned idle_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  unsigned cap_ FAULTSAFE_GUARDED_BY(mu_) = 0;  // max_threads, or fewer once the OS refused a thread
  unsigned peak_busy_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  bool stopping_ FAULTSAFE_GUARDED_BY(mu_) = false;
  std::atomic<std::uint64_t> messages_{0}, queued_{0};
};

}  // namespace faultsafe
