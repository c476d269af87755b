// Helpers shared by the range_lock tests: a watchdog that fails the test instead of hanging, and a
// one-shot latch with timed waits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <faultsafe/sync/range_lock.hpp>

namespace rl_test {

#if defined(__SANITIZE_THREAD__)
inline constexpr int slow = 2;
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
inline constexpr int slow = 2;
#  else
inline constexpr int slow = 1;
#  endif
#else
inline constexpr int slow = 1;
#endif

/// Fails the whole test executable (exit 1) if not disarmed within `limit`.
class watchdog {
 public:
  watchdog(const char* what, std::chrono::seconds limit) : what_(what) {
    t_ = std::thread([this, limit] {
      std::unique_lock<std::mutex> g(m_);
      if (!cv_.wait_for(g, limit, [this] { return done_; })) {
        std::fprintf(stderr, "WATCHDOG: '%s' did not finish within %lld s: lock-up\n", what_,
                     static_cast<long long>(limit.count()));
        std::fflush(stderr);
        std::_Exit(1);
      }
    });
  }
  ~watchdog() {
    {
      std::lock_guard<std::mutex> g(m_);
      done_ = true;
    }
    cv_.notify_all();
    t_.join();
  }

 private:
  const char* what_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread t_;
};

/// A flag one thread sets and others wait for (with a bound).
class event {
 public:
  void set() {
    {
      std::lock_guard<std::mutex> g(m_);
      set_ = true;
    }
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = std::chrono::milliseconds(20000)) {
    std::unique_lock<std::mutex> g(m_);
    return cv_.wait_for(g, limit, [this] { return set_; });
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

/// Polls until `lock` has a waiting (not granted) range matching (offset, mode); false after `limit`.
inline bool wait_until_waiting(const faultsafe::range_lock& lock, std::uint64_t off, faultsafe::lock_mode m,
                               std::chrono::milliseconds limit = std::chrono::milliseconds(20000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    for (const auto& h : lock.holders())
      if (!h.granted && h.offset == off && h.mode == m) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

}  // namespace rl_test
