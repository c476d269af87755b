// faultsafe/detail/futex.hpp: thin wrappers over Linux futex(2) on a std::atomic<std::uint32_t>
// (internal).
//
// futex_wait_until() sleeps while *word == expected, until woken, until the absolute CLOCK_MONOTONIC
// deadline (std::chrono::steady_clock on Linux) passes, or spuriously. futex_wake() wakes up to n
// sleepers. Private futexes (FUTEX_PRIVATE_FLAG): the word must not be shared between OS processes.
//
// Contract: every caller re-checks its condition in a loop; a return says nothing about the word.
// Waking an address whose owner has gone (the classic "wake after the waiter returned" race) is
// harmless: at worst another waiter on a reused address sees a spurious wake-up, which it tolerates.
//
// Memory ordering: the kernel compares the word with a full barrier; the callers' own atomics carry the
// data (acquire/release); these functions add none.
// Thread-safety: any thread. Lock order: none taken. Throws: nothing.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace faultsafe::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "futex word must be 32 bits");

using futex_clock = std::chrono::steady_clock;

/// Effects: sleeps while *word == expected, at most until `deadline` (time_point::max() = forever).
/// Returns: 0 when woken (or spuriously), ETIMEDOUT when the deadline passed, EAGAIN when *word !=
/// expected on entry, EINTR on a signal. Complexity: one system call.
inline int futex_wait_until(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                            futex_clock::time_point deadline) noexcept {
  timespec ts{};
  const timespec* tsp = nullptr;
  if (deadline != futex_clock::time_point::max()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    if (ns <= 0) return ETIMEDOUT;
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    tsp = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout (FUTEX_WAIT takes a relative one).
  const long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
                           expected, tsp, nullptr, FUTEX_BITSET_MATCH_ANY);
  return r == 0 ? 0 : errno;
}

/// Effects: sleeps while *word == expected (no deadline). Returns as futex_wait_until().
inline int futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected) noexcept {
  return futex_wait_until(word, expected, futex_clock::time_point::max());
}

/// Effects: wakes up to n threads sleeping on `word`. Returns the number woken.
inline int futex_wake(std::atomic<std::uint32_t>* word, int n = 1) noexcept {
  return static_cast<int>(
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, nullptr, nullptr, 0));
}

/// A CPU hint for spin loops (PAUSE on x86, YIELD on arm64).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace faultsafe::detail
