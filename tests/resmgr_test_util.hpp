// Test helpers for the channel / resmgr tests: a watchdog that fails (never hangs) a stuck test.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace faultsafe_test {

/// While alive, a thread waits `limit`; if the scope has not ended by then it prints `what` and
/// _Exit(1)s the whole test: a deadlock becomes a failure, not a CTest timeout.
class watchdog {
 public:
  explicit watchdog(const char* what, std::chrono::seconds limit = std::chrono::seconds(20))
      : t_([this, what, limit] {
          std::unique_lock<std::mutex> l(m_);
          if (!cv_.wait_for(l, limit, [this] { return done_; })) {
            std::fprintf(stderr, "WATCHDOG: '%s' did not finish within %llds: deadlock?\n", what,
                         static_cast<long long>(limit.count()));
            std::fflush(stderr);
            std::_Exit(1);
          }
        }) {}
  ~watchdog() {
    {
      std::lock_guard<std::mutex> g(m_);
      done_ = true;
    }
    cv_.notify_all();
    t_.join();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread t_;
};

}  // namespace faultsafe_test
