// faultsafe/resmgr/thread_pool.hpp: a server's receive thread pool and its self-deadlock guard.
//
// Defines `thread_pool_options`, `send_route` and `thread_pool`: the threads that receive on a
// server's channel and hand each message to the server's serve function (server::dispatch).
//
// Growth (QNX thread_pool lo/hi water): starts `min_threads` threads; when a thread takes a message and
// thereby leaves no thread idle (all busy serving), it starts one more, up to `max_threads`. Threads
// do not shrink back (a server that needed N threads once keeps them). min_threads == max_threads == 1
// pins the server to exactly one thread (io_pkt).
// Self-deadlock guard (thread_pool_options::on_self_deadlock): when every pool
// thread serves ONE activity A and the pool is at its maximum, a further message on behalf of A (the
// pager's page-in for a fault one of those threads took: A's own chain waits for it) could never be
// received. process::send asks route_for before it blocks: detected at once, deterministic (no
// timeout), reported as self_deadlock naming the threads and the message (the server's describe
// function: for a page-in the fault address, file offset and faulting thread), and resolved by policy:
// grant (default) hands it to the reserve thread "<name>/reserve", which receives only such messages
// (so the pool's bound holds for everything else, and a single-threaded server stays single-threaded
// for ordinary work); fail replies EDEADLK at once; wait keeps the naive pool (the wait-for graph then
// names the cycle). Why a reserve thread and not EDEADLK by default: the blocked threads are the
// request's own chain; serving its page-in is the only way for that request to complete, and doing it
// on a thread that never serves anything else cannot starve or reorder other clients. Why the sender
// checks: the message must not enter the pool's queue at all (no receive could ever take it), and the
// sender is the one thread that knows the activity and is about to block. "One activity" is one
// synchronous chain (activity/activity.hpp): two threads that adopt the same id on purpose defeat the
// check's premise (it would then report a lock-up that is only contention and serve on the reserve
// thread).
// Serving on the calling thread (serve_here, for process::set_serve_on_calling_thread: the FUSE
// bridge's workers, resmgr/fuse_bridge.hpp): a thread outside the pool serves a message of its own
// through the pool's serve function (the server's dispatch, handlers, locks and guard) with a receiver
// of the pool's channel that it attaches for the message, on behalf of its own activity: no hand-off,
// no queue. Such a message never waits for a pool thread, so the pool's bound (max_threads) and its
// self-deadlock guard do not apply to it: the calling threads are its bound (for the bridge, libfuse's
// max_threads), and the guard still checks every message those handlers send on to a pool (a page-in,
// a nested request), since the calling thread has then adopted its activity. stop() waits for the
// direct serves in progress (a counter taken under the registry lock, so a pool being stopped is never
// found again) before it returns. While it serves, the calling thread's receiver is one of the
// channel's attached server threads for the wait-for graph (as a socket transport's slot thread is):
// a queued sender's send wait is not reported stuck while such a thread runs.
//
// Thread-safety: all members from any thread. Lock order: the pool mutex is rank::pool (it announces
// threads to the channels under it, whose queue locks are leaves); the registry is rank::registry
// (held shared while a violation is reported: the handler must not stop servers); neither is held
// while serving, sending or waiting.
// Memory ordering: numbered pairs (1)/(2) and (3)/(4) publish a pool thread's (and the reserve
// thread's) attached receiver to route_for; (5)-(8) are the direct serves' count against stop() (all
// seq_cst: a store-load handshake); every other atomic here is a counter, a statistic or a hint and is
// relaxed, each with its reason at the access.
// Lifetime: stop() (also run by the destructor) stops the channels (pending and future sends fail with
// ESHUTDOWN), lets messages being served finish and joins every thread; it must not run on one of the
// pool's own threads (std::system_error(EDEADLK) then).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../activity/activity.hpp"
#include "../detail/thread_record.hpp"
#include "../ipc/channel.hpp"
#include "../order/ranked_mutex.hpp"
#include "../order/violation.hpp"
#include "../thread_annotations.hpp"
#include "../sync/range_lock.hpp"
#include "../vm/faulting_thread.hpp"

namespace faultsafe {

struct thread_pool_options {
  unsigned min_threads = 1;  ///< started at once (>= 1)
  unsigned max_threads = 4;  ///< upper bound of growth (>= min_threads)
  /// The pool's fault-reentrancy guard (see the header comment): grant (default) sends a message that
  /// could never be received to the reserve thread "<name>/reserve", which serves only such messages
  /// (one at a time); fail: the send fails with EDEADLK; wait: no check (the naive pool, which only the
  /// wait-for graph can unlock). See thread_pool::route_for.
  self_conflict on_self_deadlock = self_conflict::grant;
};

/// Where process::send should send a message (thread_pool::route_for): `ch` (nullptr: the channel
/// asked for) or `error` (EDEADLK: the pool is self-deadlocked and the policy is fail).
struct send_route {
  std::shared_ptr<channel> ch;
  std::error_code error;
};

class thread_pool;

namespace detail {
/// channel -> pool (one per server), for process::send's self-deadlock check (thread_pool::route_for).
/// `ever_full` counts pools that have ever been at their maximum with no idle thread: while it is
/// zero, a send skips the check with one relaxed load.
struct server_registry {
  ranked_mutex<rank::registry, std::shared_mutex> m{"server registry"};
  std::unordered_map<const channel*, thread_pool*> map FAULTSAFE_GUARDED_BY(m);
  std::atomic<unsigned> ever_full{0};
  static server_registry& instance() {
    static server_registry* r = new server_registry;  // leaked: servers may outlive statics
    return *r;
  }
};
}  // namespace detail

class thread_pool {
 public:
  /// Serves one received message (the receiver holds it); must reply or leave the reply to the caller's
  /// fallback. `ctx` is the pool's owner.
  using serve_fn = void (*)(void* ctx, channel::receiver&);
  /// Appends report lines about message `b` (a self_deadlock report names the message).
  using describe_fn = void (*)(const send_buffers& b, violation& v);

  /// Effects: makes the reserve channel (policy grant; options `ch_opts`, named "<name>/reserve") and
  /// registers the pool for route_for. Threads start with start(). Throws: std::invalid_argument for
  /// min_threads == 0 or max_threads < min_threads; std::bad_alloc.
  thread_pool(std::string name, thread_pool_options opts, std::shared_ptr<channel> ch, channel_options ch_opts,
              serve_fn serve, void* ctx, describe_fn describe)
      : name_(std::move(name)), opts_(opts), ch_(std::move(ch)), serve_(serve), ctx_(ctx), describe_(describe) {
    if (opts_.min_threads == 0 || opts_.max_threads < opts_.min_threads)
      throw std::invalid_argument("faultsafe::server: need 1 <= min_threads <= max_threads");
    serving_ = std::make_unique<pool_slot[]>(opts_.max_threads);
    if (opts_.on_self_deadlock == self_conflict::grant) {
      reserve_name_ = name_ + "/reserve";
      ch_opts.name = reserve_name_.c_str();
      ch_opts.pool_capacity = 1;
      reserve_ch_ = std::make_shared<channel>(ch_opts);
    }
    auto& reg = detail::server_registry::instance();
    exclusive_guard g(reg.m);
    reg.map[ch_.get()] = this;
  }
  ~thread_pool() { stop(); }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// Effects: starts min_threads threads and the reserve thread (once). Throws: std::system_error if a
  /// thread cannot start.
  void start() {
    exclusive_guard g(mu_);
    if (started_ || stopping_) return;
    started_ = true;
    for (unsigned i = 0; i < opts_.min_threads; ++i) spawn_locked();
    if (reserve_ch_) {
      reserve_ch_->add_server();
      try {
        reserve_thread_ = std::thread([this] { reserve_main(); });
      } catch (...) {
        reserve_ch_->remove_server();
        throw;
      }
    }
  }

  /// Throws std::system_error(EDEADLK) if the calling thread is one of the pool's.
  void check_not_own_thread() const {
    exclusive_guard g(mu_);
    for (const std::thread& t : threads_)
      if (t.get_id() == std::this_thread::get_id())
        throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                                "faultsafe::server::stop() called from the server's own thread");
  }

  /// Effects: see the header comment (Lifetime). Idempotent. Throws: as check_not_own_thread().
  void stop() {
    auto& reg = detail::server_registry::instance();
    {
      exclusive_guard g(reg.m);  // waits for route_for and serve_here calls on this pool
      reg.map.erase(ch_.get());
    }
    check_not_own_thread();
    std::vector<std::thread> threads;
    {
      exclusive_guard g(mu_);
      stopping_ = true;
      threads.swap(threads_);
      if (reserve_thread_.joinable()) threads.push_back(std::move(reserve_thread_));
    }
    ch_->stop();
    if (reserve_ch_) reserve_ch_->stop();
    for (auto& t : threads) t.join();
    // The direct serves in progress (serve_here): none can start now (the pool is out of the
    // registry); wait for those that did. (5) seq_cst, with (8): a serve that finishes after this store
    // sees it and wakes us; one that finished before has its decrement seen by (6).
    direct_closing_.store(true, std::memory_order_seq_cst);
    for (unsigned n; (n = direct_.load(std::memory_order_seq_cst)) != 0;)  // (6) seq_cst, see (5)
      direct_.wait(n, std::memory_order_seq_cst);
    exclusive_guard g(reg.m);  // the last serve_here has left its shared section (and its notify)
  }

  /// Statistics (racy snapshots): threads started, threads idle (waiting for work), the most threads
  /// ever busy at once, messages served by the reserve thread. Relaxed loads.
  [[nodiscard]] unsigned threads() const noexcept { return started_threads_.load(std::memory_order_relaxed); }
  [[nodiscard]] unsigned idle_threads() const noexcept { return idle_.load(std::memory_order_relaxed); }
  [[nodiscard]] unsigned peak_busy() const noexcept { return peak_busy_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t reserve_served() const noexcept { return reserve_served_.load(std::memory_order_relaxed); }
  /// Messages served on their sender's own thread (serve_here). Relaxed: a statistic.
  [[nodiscard]] std::uint64_t direct_served() const noexcept { return direct_served_.load(std::memory_order_relaxed); }
  /// Whether the reserve thread has started and set itself up (its name, its faulting-thread
  /// announcement, its receiver), or the pool has none (on_self_deadlock != grant). The set-up
  /// allocates on that thread whenever the scheduler runs it; a caller that measures allocations
  /// (tests) waits for this first. (4) acquire, pairs with (3).
  [[nodiscard]] bool reserve_ready() const noexcept { return !reserve_ch_ || reserve_rcv_.load(std::memory_order_acquire) != nullptr; }

  /// Effects: for a message about to be sent on `ch` by the calling thread on behalf of `a`: if `ch` is
  /// a pool's channel whose every thread is busy serving `a` and which cannot grow (the message could
  /// never be received), reports a self_deadlock violation and returns the reserve channel (grant) or
  /// EDEADLK (fail, or the reserve thread is itself serving `a`). Otherwise returns an empty route.
  /// Cost: one relaxed load unless some pool has been full. Throws: what the violation handler throws;
  /// std::bad_alloc. Lock order: the registry's leaf lock (shared), then nothing; the report runs under it.
  [[nodiscard]] static send_route route_for(const channel& ch, activity_id a, const send_buffers& b) {
    auto& reg = detail::server_registry::instance();
    // relaxed: a hint; a server thread increments it before it serves the message whose fault leads
    // to the page-in sent here, and the fault's delivery to the pager (system calls on both sides)
    // orders the two.
    if (reg.ever_full.load(std::memory_order_relaxed) == 0) return {};
    shared_guard g(reg.m);
    auto it = reg.map.find(&ch);
    if (it == reg.map.end()) return {};
    return it->second->route_locked(a, b);
  }

  /// Effects: if `ch` is a pool's channel, serves the message `b` on the calling thread, on behalf of
  /// activity `a`, exactly as a pool thread serves one from the channel (see the header comment) and
  /// returns what its sender would have got: the reply, or ENXIO (the pool was never started),
  /// ESHUTDOWN (the channel is stopped), ENOMEM, EMSGSIZE, or the handler's error. std::nullopt when
  /// no pool serves `ch` (another process's server, a bare channel, a stopped server): send it instead.
  /// Requires: the calling thread holds no lock the handlers rank at or below (it takes their locks
  /// itself); the buffers are this OS process's memory. No deadline or cancellation: the caller is the
  /// server. Cost: the registry's shared lock twice, the channel's leaf lock three times (stopped(),
  /// attach(), detach()), a wait-for graph generation bump (detach). Lock order: the registry
  /// (shared), released before serving; then what the handlers take. Throws: only what a violation
  /// handler throws (the serve itself catches everything: a handler's exception fails the message).
  [[nodiscard]] static std::optional<send_result> serve_here(const channel& ch, const send_buffers& b, activity_id a) {
    auto& reg = detail::server_registry::instance();
    thread_pool* p = nullptr;
    {
      shared_guard g(reg.m);
      auto it = reg.map.find(&ch);
      if (it == reg.map.end()) return std::nullopt;
      p = it->second;
      // (7) seq_cst: counted while the registry holds the pool, so stop() (which first takes the pool
      // out under the exclusive lock) waits for this serve.
      p->direct_.fetch_add(1, std::memory_order_seq_cst);
    }
    send_result res = p->serve_direct(b, a);
    shared_guard g(reg.m);  // stop() waits for this section after it saw the count reach 0
    // (8) seq_cst, pairs with (5)/(6): if stop() is waiting (or about to), it sees 0 or is woken.
    if (p->direct_.fetch_sub(1, std::memory_order_seq_cst) == 1 && p->direct_closing_.load(std::memory_order_seq_cst))
      p->direct_.notify_all();
    return res;
  }

 private:
  // serve_here's work, on the calling thread. Requires: counted in direct_.
  send_result serve_direct(const send_buffers& b, activity_id a) noexcept {
    send_result res;
    // relaxed: a hint, like the channel's require_server check (a serve racing with start() may get
    // either answer, as a send racing with add_server() does).
    if (started_threads_.load(std::memory_order_relaxed) == 0) {
      res.error = std::make_error_code(std::errc::no_such_device_or_address);
      return res;
    }
    if (ch_->stopped()) {
      res.error = std::error_code(ESHUTDOWN, std::generic_category());
      return res;
    }
    channel::receiver* r = nullptr;
    try {
      announce_faulting_thread();  // its faults on client memory name this thread and its activity (vm/); cheap after the first
      r = &ch_->attach();
    } catch (...) {
      res.error = std::make_error_code(std::errc::not_enough_memory);
      return res;
    }
    res = r->serve_direct(b, a, [this](channel::receiver& rr) { serve_(ctx_, rr); });
    ch_->detach(*r);
    direct_served_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    return res;
  }

  // One pool thread's state for route_for: its faultsafe id and its receiver, whose activity() names
  // the activity of the message it holds, from receive until the moment it replies (cleared before the
  // sender wakes, so a sender never sees its own finished message as still being served).
  struct pool_slot {
    std::atomic<std::uint32_t> thread{0};
    std::atomic<channel::receiver*> rcv{nullptr};
  };

  // Requires: mu_ held. The counters are relaxed: mu_ orders the writers, and thread creation
  // publishes idx to the new thread.
  void spawn_locked() FAULTSAFE_REQUIRES(mu_) {
    const unsigned idx = started_threads_.fetch_add(1, std::memory_order_relaxed);
    idle_.fetch_add(1, std::memory_order_relaxed);
    ch_->add_server();  // before the thread exists: a send meanwhile waits for it instead of ENXIO
    try {
      threads_.emplace_back([this, idx] { thread_main(idx); });
    } catch (...) {
      ch_->remove_server();
      started_threads_.fetch_sub(1, std::memory_order_relaxed);
      idle_.fetch_sub(1, std::memory_order_relaxed);
      throw;
    }
  }

  void maybe_grow() noexcept {
    exclusive_guard g(mu_);
    if (stopping_ || started_threads_.load(std::memory_order_relaxed) >= opts_.max_threads) return;
    try {
      spawn_locked();
    } catch (...) {  // could not start a thread: keep serving with what we have
    }
  }

  // Requires: the registry held shared. See route_for.
  send_route route_locked(activity_id a, const send_buffers& b) {
    if (opts_.on_self_deadlock == self_conflict::wait) return {};
    // relaxed: serving_ exists before any thread starts; a thread counted here but not yet published
    // in serving_ reads as nullptr below (not serving `a`), the conservative answer.
    const unsigned started = started_threads_.load(std::memory_order_relaxed);
    if (started < opts_.max_threads) return {};
    for (unsigned i = 0; i < started; ++i) {
      // (2) acquire, pairs with (1): the receiver is attached (and its thread id stored) before use.
      channel::receiver* r = serving_[i].rcv.load(std::memory_order_acquire);
      if (r == nullptr || r->activity() != a) return {};
    }
    // Every thread serves `a` and none can be added: `a`'s chain is blocked on its own message.
    // The reserve thread is itself busy for `a` (a second-level re-entry): its receiver names the
    // activity of the message it holds until the moment it replies (cleared before the sender wakes).
    // (4) acquire, pairs with (3).
    channel::receiver* rr = reserve_rcv_.load(std::memory_order_acquire);
    const bool reserve_busy_with_a = rr != nullptr && rr->activity() == a;
    const bool grant = opts_.on_self_deadlock == self_conflict::grant && reserve_ch_ && !reserve_busy_with_a;
    violation v;
    v.kind = violation_kind::self_deadlock;
    v.outcome = grant ? violation_outcome::served : violation_outcome::failed;
    v.site = "server '" + name_ + "', message type " + std::to_string(b.type);
    const std::string me = thread_name(this_thread_id());
    v.summary = "thread '" + me + "' (" + detail::rl::describe_activity(a) + ") sends a message of type " +
                std::to_string(b.type) + " to server '" + name_ + "', whose every thread (" +
                std::to_string(started) + ", the pool's maximum) is busy serving that same activity: waiting would self-deadlock; " +
                (grant ? "served by the reserve thread '" + reserve_name_ + "'"
                       : std::string(reserve_busy_with_a ? "the reserve thread serves it too: " : "") + "failed with EDEADLK");
    v.involved.push_back(name_);
    v.involved.push_back(me);
    for (unsigned i = 0; i < started; ++i) {
      // relaxed: stored before (1), and this thread read every rcv through (2).
      const std::string tn = thread_name(serving_[i].thread.load(std::memory_order_relaxed));
      v.details.push_back("server thread '" + tn + "' serves " + detail::rl::describe_activity(a) +
                          " (blocked: in page wait or waiting on this very chain)");
      v.involved.push_back(tn);
    }
    if (describe_) describe_(b, v);
    report_violation(v);
    if (!grant) return send_route{nullptr, std::make_error_code(std::errc::resource_deadlock_would_occur)};
    return send_route{reserve_ch_, {}};
  }

  // The reserve thread: serves only messages that route_for sent to the reserve channel.
  void reserve_main() {
    set_this_thread_name(reserve_name_);
    announce_faulting_thread();
    channel::receiver& r = reserve_ch_->attach();
    reserve_rcv_.store(&r, std::memory_order_release);  // (3) release, pairs with (4): r is attached
    while (!r.receive()) {
      serve_(ctx_, r);
      reserve_served_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    }
    // relaxed: clearing publishes nothing (receivers live as long as their channel).
    reserve_rcv_.store(nullptr, std::memory_order_relaxed);
    reserve_ch_->detach(r);
    reserve_ch_->remove_server();
  }

  void thread_main(unsigned idx) {
    set_this_thread_name(name_ + "/" + std::to_string(idx));
    announce_faulting_thread();  // its faults on client memory name this thread and its adopted activity (vm/)
    serving_[idx].thread.store(this_thread_id(), std::memory_order_relaxed);  // published by (1)
    channel::receiver& r = ch_->attach();
    serving_[idx].rcv.store(&r, std::memory_order_release);  // (1) release, pairs with (2): r is attached
    while (!r.receive()) {
      // idle_ and peak_busy_ are counters and publish nothing: relaxed. The read-modify-writes of
      // idle_ are totally ordered, so exactly the thread that takes it to zero sees zero and grows
      // the pool.
      const unsigned idle_now = idle_.fetch_sub(1, std::memory_order_relaxed) - 1;
      const unsigned busy_now = started_threads_.load(std::memory_order_relaxed) - idle_now;
      unsigned peak = peak_busy_.load(std::memory_order_relaxed);
      while (busy_now > peak && !peak_busy_.compare_exchange_weak(peak, busy_now, std::memory_order_relaxed)) {
      }
      if (idle_now == 0) {  // every thread is busy: add one
        maybe_grow();
        // relaxed: a once-only flag (the exchange's total order picks one thread); see route_for.
        if (started_threads_.load(std::memory_order_relaxed) >= opts_.max_threads &&
            !ever_full_.exchange(true, std::memory_order_relaxed))
          detail::server_registry::instance().ever_full.fetch_add(1, std::memory_order_relaxed);
      }
      serve_(ctx_, r);
      idle_.fetch_add(1, std::memory_order_relaxed);
    }
    serving_[idx].rcv.store(nullptr, std::memory_order_relaxed);  // clearing publishes nothing
    ch_->detach(r);
    ch_->remove_server();
  }

  const std::string name_;
  const thread_pool_options opts_;
  const std::shared_ptr<channel> ch_;
  const serve_fn serve_;
  void* const ctx_;
  const describe_fn describe_;

  // rank::pool: threads_, started_, stopping_, reserve_thread_; held while announcing threads to the
  // channels (their queue locks are leaves), never while sending or waiting.
  mutable ranked_mutex<rank::pool> mu_{"server pool"};
  std::vector<std::thread> threads_ FAULTSAFE_GUARDED_BY(mu_);
  bool started_ FAULTSAFE_GUARDED_BY(mu_) = false;
  bool stopping_ FAULTSAFE_GUARDED_BY(mu_) = false;
  std::atomic<unsigned> started_threads_{0};
  std::atomic<unsigned> idle_{0};
  std::atomic<unsigned> peak_busy_{0};
  std::unique_ptr<pool_slot[]> serving_;
  std::atomic<bool> ever_full_{false};
  std::string reserve_name_;
  std::shared_ptr<channel> reserve_ch_;
  std::thread reserve_thread_ FAULTSAFE_GUARDED_BY(mu_);
  std::atomic<channel::receiver*> reserve_rcv_{nullptr};
  std::atomic<std::uint64_t> reserve_served_{0};
  std::atomic<unsigned> direct_{0};            // serve_here calls in progress: (5)-(8)
  std::atomic<bool> direct_closing_{false};    // stop() waits for direct_ to reach 0: (5), (8)
  std::atomic<std::uint64_t> direct_served_{0};
};

}  // namespace faultsafe
