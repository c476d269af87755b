// Test support shared by every test: a watchdog that turns a hang into a failure, and the bounded
// waits tests coordinate threads with (event, gate, barrier). Every wait here has a limit, so a bug
// fails the test instead of hanging it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace test_support {

using namespace std::chrono_literals;

/// While alive, a thread waits `limit`; if the scope has not ended by then it prints `what` (and what
/// `describe` returns, e.g. the wait-for graph) and _Exit(1)s the whole test executable: a lock-up
/// becomes a failure, never a CTest timeout.
class watchdog {
 public:
  explicit watchdog(std::string what, std::chrono::milliseconds limit = 20s,
                    std::function<std::string()> describe = {})
      : what_(std::move(what)), describe_(std::move(describe)) {
    t_ = std::thread([this, limit] {
      std::unique_lock<std::mutex> l(m_);
      started_ = true;
      cv_.notify_all();
      if (cv_.wait_for(l, limit, [this] { return done_; })) return;
      std::fprintf(stderr, "WATCHDOG: '%s' did not finish within %lld ms: lock-up\n", what_.c_str(),
                   static_cast<long long>(limit.count()));
      if (describe_) std::fprintf(stderr, "%s\n", describe_().c_str());
      std::fflush(stderr);
      std::_Exit(1);
    });
    // Returns only once the thread runs its function (its start-up, which allocates, is over): a test
    // may fork() right after, and a child forked while another thread held an allocator lock (the
    // sanitizers' allocators have no fork handlers) would block on it for ever.
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [this] { return started_; });
  }
  ~watchdog() {
    {
      std::lock_guard<std::mutex> g(m_);
      done_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

 private:
  std::string what_;
  std::function<std::string()> describe_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  bool started_ = false;
  std::thread t_;
};

/// A one-shot flag one thread sets and others wait for.
class event {
 public:
  void set() {
    {
      std::lock_guard<std::mutex> g(m_);
      set_ = true;
    }
    cv_.notify_all();
  }
  /// Returns: whether it was set within `limit`.
  bool wait(std::chrono::milliseconds limit = 20s) {
    std::unique_lock<std::mutex> l(m_);
    return cv_.wait_for(l, limit, [this] { return set_; });
  }
  bool is_set() {
    std::lock_guard<std::mutex> g(m_);
    return set_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool set_ = false;
};

/// A gate that threads (typically handlers) wait at until the test releases it; the test can wait
/// until n threads are waiting.
class gate {
 public:
  /// Returns: whether the gate opened within `limit`.
  bool wait(std::chrono::milliseconds limit = 20s) {
    std::unique_lock<std::mutex> l(m_);
    ++waiting_;
    cv_.notify_all();
    return cv_.wait_for(l, limit, [this] { return open_; });
  }
  void release() {
    std::lock_guard<std::mutex> g(m_);
    open_ = true;
    cv_.notify_all();
  }
  /// Returns: whether at least n threads reached wait() within `limit`.
  bool wait_for_waiters(int n, std::chrono::milliseconds limit = 20s) {
    std::unique_lock<std::mutex> l(m_);
    return cv_.wait_for(l, limit, [&] { return waiting_ >= n; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
};

/// A one-use barrier for n threads. arrive_and_wait() returns false if the others did not arrive
/// within `limit`.
class barrier {
 public:
  explicit barrier(int n) : n_(n) {}
  bool arrive_and_wait(std::chrono::milliseconds limit = 5s) {
    std::unique_lock<std::mutex> l(m_);
    if (++arrived_ >= n_) {
      cv_.notify_all();
      return true;
    }
    return cv_.wait_for(l, limit, [this] { return arrived_ >= n_; });
  }

 private:
  int n_;
  int arrived_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
};

}  // namespace test_support
