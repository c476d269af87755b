// Test resources instrumented with the wait-for graph: a mutex, a channel with N server threads, a
// pager whose threads serve faults, and a watchdog that fails (never hangs) a test.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "support/sync.hpp"

namespace wgtest {

using namespace std::chrono_literals;
using faultsafe::wait_graph;
using faultsafe::wait_kind;
using faultsafe::wait_scope;

/// Fails the whole test executable (exit 1) if not disarmed within `limit`, printing the wait-for
/// graph (tests/support/sync.hpp's watchdog).
struct watchdog : test_support::watchdog {
  watchdog(std::chrono::milliseconds limit, std::string what)
      : test_support::watchdog(std::move(what), limit, [] { return "graph:\n" + wait_graph::dump(); }) {}
};

/// A barrier with a timeout (arrive_and_wait() returns false on timeout): tests/support/sync.hpp.
using gate = test_support::barrier;

/// Waits until `pred` holds (polling), at most `limit`. Returns pred().
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return pred();
    std::this_thread::sleep_for(200us);
  }
  return true;
}

inline std::error_code err(std::errc e) { return std::make_error_code(e); }

/// A mutex that records its holder; contended acquisitions record a lock wait and poll the graph.
class test_mutex final : public faultsafe::waitable {
 public:
  test_mutex(std::string name, unsigned rank) : name_(std::move(name)), rank_(rank) {}

  /// EDEADLK: broken by the graph. ETIMEDOUT: gave up after `give_up` (0 = never). ECANCELED: cancel().
  std::error_code lock(std::chrono::milliseconds give_up = 0ms) {
    const auto me = faultsafe::this_thread_id();
    {
      std::lock_guard<std::mutex> g(m_);
      if (holder_ == 0) {
        holder_ = me;
        return {};
      }
    }
    contended_.fetch_add(1, std::memory_order_relaxed);
    const auto deadline = std::chrono::steady_clock::now() + give_up;
    wait_scope ws(*this, wait_kind::lock);
    if (ws.deadlocked()) return err(std::errc::resource_deadlock_would_occur);
    std::unique_lock<std::mutex> lk(m_);  // after ws: released before ws is destroyed
    while (holder_ != 0) {
      if (cancelled_) return err(std::errc::operation_canceled);
      if (cv_.wait_for(lk, wait_graph::recheck_interval()) == std::cv_status::timeout) {
        lk.unlock();
        const bool dead = ws.poll();
        lk.lock();
        if (dead) return err(std::errc::resource_deadlock_would_occur);
        if (give_up.count() != 0 && std::chrono::steady_clock::now() > deadline)
          return err(std::errc::timed_out);
      }
    }
    holder_ = me;
    return {};
  }
  bool try_lock() {
    std::lock_guard<std::mutex> g(m_);
    if (holder_ != 0) return false;
    holder_ = faultsafe::this_thread_id();
    return true;
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> g(m_);
      holder_ = 0;
    }
    cv_.notify_all();
  }
  void cancel() {
    {
      std::lock_guard<std::mutex> g(m_);
      cancelled_ = true;
    }
    cv_.notify_all();
  }
  [[nodiscard]] std::uint64_t contended() const { return contended_.load(std::memory_order_relaxed); }
  [[nodiscard]] const std::string& name() const { return name_; }

  void wait_holders(std::vector<std::uint32_t>& t) const override {
    std::lock_guard<std::mutex> g(m_);
    if (holder_ != 0) t.push_back(holder_);
  }
  std::string wait_name() const override { return "'" + name_ + "' (rank " + std::to_string(rank_) + ")"; }

 private:
  std::string name_;
  unsigned rank_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::uint32_t holder_ = 0;
  bool cancelled_ = false;
  std::atomic<std::uint64_t> contended_{0};
};

/// A synchronous channel (send / receive / reply) served by N server threads. Clients record a send
/// wait on the channel (ANY of its servers) until their message is received, then a reply wait on the
/// message (its receiver).
class test_channel final : public faultsafe::waitable {
 public:
  using handler_t = std::function<int(int arg, int hops)>;

  test_channel(std::string name, handler_t h) : name_(std::move(name)), handler_(std::move(h)) {}
  ~test_channel() { stop(); }

  void start(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { serve(i); });
    std::unique_lock<std::mutex> lk(m_);
    cv_cli_.wait(lk, [&] { return static_cast<int>(servers_.size()) == n; });
  }
  void stop() {
    {
      std::lock_guard<std::mutex> g(m_);
      stopping_ = true;
    }
    cv_srv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  /// Waits (lk held on m_) until done(), polling the graph every recheck interval. Returns false if
  /// the graph broke the wait before done() became true.
  template <class Done>
  bool wait_polling(wait_scope& ws, std::unique_lock<std::mutex>& lk, Done done) {
    while (!done()) {
      if (cv_cli_.wait_for(lk, wait_graph::recheck_interval()) == std::cv_status::timeout || ws.deadlocked()) {
        lk.unlock();
        const bool dead = ws.poll();
        lk.lock();
        if (dead && !done()) return false;
      }
    }
    return true;
  }

  /// Returns the handler's result, or sets `ec` (EDEADLK when the graph broke this wait).
  int send(int arg, int hops, std::error_code& ec) {
    ec = {};
    auto msg = std::make_shared<message>(*this, arg, hops);
    {
      std::lock_guard<std::mutex> g(m_);
      queue_.push_back(msg);
    }
    cv_srv_.notify_one();
    {
      wait_scope ws(*this, wait_kind::send, "arg " + std::to_string(arg));
      std::unique_lock<std::mutex> lk(m_);
      if (!wait_polling(ws, lk, [&] { return msg->received; })) {
        if (auto it = std::find(queue_.begin(), queue_.end(), msg); it != queue_.end()) queue_.erase(it);
        ec = err(std::errc::resource_deadlock_would_occur);
        return -1;
      }
    }
    {
      wait_scope ws(*msg, wait_kind::reply);
      std::unique_lock<std::mutex> lk(m_);
      if (!wait_polling(ws, lk, [&] { return msg->replied; })) {
        ec = err(std::errc::resource_deadlock_would_occur);
        return -1;
      }
    }
    return msg->result;
  }

  void wait_holders(std::vector<std::uint32_t>& t) const override {
    std::lock_guard<std::mutex> g(m_);
    t.insert(t.end(), servers_.begin(), servers_.end());
  }
  bool any_of() const override { return true; }
  std::string wait_name() const override { return "channel '" + name_ + "'"; }

 private:
  struct message final : faultsafe::waitable {
    message(test_channel& c, int a, int h) : ch(c), arg(a), hops(h) {}
    test_channel& ch;
    int arg, hops;
    std::uint32_t receiver = 0;  // guarded by ch.m_
    bool received = false, replied = false;
    int result = 0;
    void wait_holders(std::vector<std::uint32_t>& t) const override {
      std::lock_guard<std::mutex> g(ch.m_);
      if (received && !replied) t.push_back(receiver);
      if (!received) t.insert(t.end(), ch.servers_.begin(), ch.servers_.end());
    }
    bool any_of() const override { return true; }
    bool can_grow() const override {  // replied: satisfied, the client is waking
      std::lock_guard<std::mutex> g(ch.m_);
      return replied;
    }
    std::string wait_name() const override { return "message on channel '" + ch.name_ + "'"; }
  };

  void serve(int i) {
    faultsafe::set_this_thread_name(name_ + "/" + std::to_string(i));
    {
      std::lock_guard<std::mutex> g(m_);
      servers_.push_back(faultsafe::this_thread_id());
    }
    cv_cli_.notify_all();
    for (;;) {
      std::shared_ptr<message> msg;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_srv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });  // idle: not a wait edge
        if (queue_.empty()) return;
        msg = queue_.front();
        queue_.pop_front();
        msg->received = true;
        msg->receiver = faultsafe::this_thread_id();
      }
      cv_cli_.notify_all();
      const int r = handler_(msg->arg, msg->hops);
      {
        std::lock_guard<std::mutex> g(m_);
        msg->result = r;
        msg->replied = true;
      }
      cv_cli_.notify_all();
    }
  }

  std::string name_;
  handler_t handler_;
  mutable std::mutex m_;
  std::condition_variable cv_srv_, cv_cli_;
  std::deque<std::shared_ptr<message>> queue_;
  std::vector<std::uint32_t> servers_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// A fault on a file mapping; once queued it is served by one pager thread.
class test_fault final : public faultsafe::waitable {
 public:
  test_fault(std::uintptr_t addr, std::string file, std::uint64_t offset)
      : addr_(addr), file_(std::move(file)), offset_(offset) {}
  void wait_holders(std::vector<std::uint32_t>& t) const override {
    std::lock_guard<std::mutex> g(m_);
    if (server_ != 0 && !done_) t.push_back(server_);
  }
  bool any_of() const override { return true; }
  bool can_grow() const override {  // resolved: the faulting thread is waking
    std::lock_guard<std::mutex> g(m_);
    return done_;
  }
  std::string wait_name() const override {
    char buf[64];
    std::snprintf(buf, sizeof buf, "fault 0x%llx", static_cast<unsigned long long>(addr_));
    return std::string(buf) + " (file " + file_ + " offset " + std::to_string(offset_) + ")";
  }

 private:
  friend class test_pager;
  std::uintptr_t addr_;
  std::string file_;
  std::uint64_t offset_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::uint32_t server_ = 0;
  bool done_ = false;
  std::error_code result_;
};

/// N pager threads ("proc/0", ...), each with its own queue of faults to serve.
class test_pager {
 public:
  using job_t = std::function<std::error_code()>;
  explicit test_pager(std::string name, int n) : name_(std::move(name)) {
    for (int i = 0; i < n; ++i) ids_.push_back(0);
    queues_.resize(ids_.size());
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { run(i); });
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [&] { return started_ == static_cast<int>(ids_.size()); });
  }
  ~test_pager() {
    {
      std::lock_guard<std::mutex> g(m_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  /// The calling thread takes fault `f`, served by pager thread `i` running `job`. The faulting
  /// thread is "in the kernel": its page wait is recorded on its behalf (not breakable) and it does
  /// not poll. Returns the job's result (EDEADLK if the pager thread's wait was broken).
  std::error_code fault(int i, test_fault& f, job_t job) {
    {
      std::lock_guard<std::mutex> g(f.m_);
      f.server_ = ids_[static_cast<std::size_t>(i)];
      f.done_ = false;
    }
    wait_scope ws(faultsafe::on_behalf, faultsafe::this_thread_id(), f, wait_kind::page);
    {
      std::lock_guard<std::mutex> g(m_);
      queues_[static_cast<std::size_t>(i)].push_back({&f, std::move(job)});
    }
    cv_.notify_all();
    std::unique_lock<std::mutex> lk(f.m_);
    f.cv_.wait(lk, [&] { return f.done_; });
    return f.result_;
  }

 private:
  struct item {
    test_fault* f;
    job_t job;
  };
  void run(int i) {
    faultsafe::set_this_thread_name(name_ + "/" + std::to_string(i));
    {
      std::lock_guard<std::mutex> g(m_);
      ids_[static_cast<std::size_t>(i)] = faultsafe::this_thread_id();
      ++started_;
    }
    cv_.notify_all();
    for (;;) {
      item it;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stopping_ || !queues_[static_cast<std::size_t>(i)].empty(); });
        auto& q = queues_[static_cast<std::size_t>(i)];
        if (q.empty()) return;
        it = std::move(q.front());
        q.pop_front();
      }
      const auto r = it.job();
      {
        std::lock_guard<std::mutex> g(it.f->m_);  // notify under the lock: the fault may die once the
        it.f->result_ = r;                        // faulting thread sees done_
        it.f->done_ = true;
        it.f->cv_.notify_all();
      }
    }
  }

  std::string name_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::uint32_t> ids_;
  std::vector<std::deque<item>> queues_;
  int started_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// Installs a recording handler (with the time of each report) and default options for one test.
struct graph_fixture {
  mutable std::mutex m;
  std::vector<faultsafe::violation> seen;
  std::vector<std::chrono::steady_clock::time_point> when;
  faultsafe::scoped_violation_handler h{[this](const faultsafe::violation& v) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> g(m);
    seen.push_back(v);
    when.push_back(now);
  }};
  graph_fixture() {
    wait_graph::set_enabled(true);
    wait_graph::set_options(faultsafe::wait_graph_options{});
  }
  ~graph_fixture() {
    wait_graph::set_enabled(true);
    wait_graph::set_options(faultsafe::wait_graph_options{});
  }
  std::size_t count() const {
    std::lock_guard<std::mutex> g(m);
    return seen.size();
  }
  std::vector<faultsafe::violation> reports() const {
    std::lock_guard<std::mutex> g(m);
    return seen;
  }
};

inline bool contains(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& x : v)
    if (x == s) return true;
  return false;
}

}  // namespace wgtest
