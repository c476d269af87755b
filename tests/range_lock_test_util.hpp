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

#include "support/sync.hpp"

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

/// The watchdog and event of tests/support/sync.hpp: watchdog(what, limit), event set()/wait()/is_set().
using test_support::watchdog;
using test_support::event;

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
