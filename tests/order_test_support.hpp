// Helpers shared by the tests/order_*.cpp tests.
//
// spin_mutex / spin_shared_mutex: minimal locks made of one atomic, for the one-thread catalogue.
// The catalogue deliberately runs inverted sequences to completion (the handler returns), and
// ThreadSanitizer's own lock-order detector would report those on real pthread mutexes; these locks are
// invisible to it. In one thread they never spin: the checks refuse AA before it could.
#pragma once

#define FAULTSAFE_CHECKS 1  // these tests exercise the checks whatever the build type

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "faultsafe/detail/held_locks.hpp"
#include "faultsafe/order/violation.hpp"

namespace order_test {

class spin_mutex {
 public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) {
    }
  }
  bool try_lock() noexcept { return !locked_.exchange(true, std::memory_order_acquire); }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

class spin_shared_mutex {
 public:
  void lock() noexcept {
    int expected = 0;
    while (!state_.compare_exchange_weak(expected, -1, std::memory_order_acquire)) expected = 0;
  }
  bool try_lock() noexcept {
    int expected = 0;
    return state_.compare_exchange_strong(expected, -1, std::memory_order_acquire);
  }
  void unlock() noexcept { state_.store(0, std::memory_order_release); }
  void lock_shared() noexcept {
    while (!try_lock_shared()) {
    }
  }
  bool try_lock_shared() noexcept {
    int s = state_.load(std::memory_order_relaxed);
    return s >= 0 && state_.compare_exchange_strong(s, s + 1, std::memory_order_acquire);
  }
  void unlock_shared() noexcept { state_.fetch_sub(1, std::memory_order_release); }
  int state() const noexcept { return state_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int> state_{0};  // -1 writer, n > 0 readers
};

inline unsigned held_depth() { return faultsafe::detail::this_thread_held().depth; }

/// Asserts that exactly one violation was recorded, of kind `k`, whose `involved` is exactly `names`
/// (in any order) and whose report() mentions each name. Returns it.
inline faultsafe::violation expect_one(faultsafe::violation_recorder& rec, faultsafe::violation_kind k,
                                       std::vector<std::string> names) {
  auto seen = rec.take();
  REQUIRE(seen.size() == 1);
  const faultsafe::violation& v = seen.front();
  CHECK(v.kind == k);
  auto involved = v.involved;
  std::sort(involved.begin(), involved.end());
  std::sort(names.begin(), names.end());
  CHECK(involved == names);
  const std::string text = v.report();
  for (const auto& n : names) CHECK_MESSAGE(text.find("'" + n + "'") != std::string::npos, text);
  return v;
}

inline void expect_none(faultsafe::violation_recorder& rec) {
  auto seen = rec.take();
  for (const auto& v : seen) FAIL_CHECK("unexpected violation: " << v.report());
  CHECK(seen.empty());
}

/// Records every violation for a test's scope; at its end the thread must hold no checked lock.
struct recording {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler handler{rec.handler()};
  ~recording() { CHECK(held_depth() == 0); }
};

/// A violation handler that refuses (throws `refused`).
struct refused {};
inline void refuse(const faultsafe::violation&) { throw refused{}; }

}  // namespace order_test
