// faultsafe/detail/futex.hpp: thin wrappers over Linux futex(2) on a std::atomic<std::uint32_t>
// (internal).
//
// futex_wait_until() sleeps while *word == expected, until woken, until the absolute CLOCK_MONOTONIC
// deadline (std::chrono::steady_clock on Linux) passes, or spuriously. futex_wake() wakes up to n
// sleepers. Private futexes (FUTEX_PRIVATE_FLAG) by default: the word must not be shared between OS
// processes. With `futex_scope::shared` the word may live in memory shared between processes (a
// MAP_SHARED memfd: the socket transport's channel, ipc/socket_transport.hpp); waiter and waker must
// use the same scope.
// cpu_relax() is the spin-loop hint; `futex_mutex` is the internal leaf mutex built on them (one
// CAS to lock and one exchange to unlock when uncontended; a short spin, then a park).
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

/// Private: the word is in this process only (cheaper: no mm lookup). Shared: across OS processes.
enum class futex_scope { private_, shared };

constexpr int futex_flags(futex_scope s) noexcept { return s == futex_scope::private_ ? FUTEX_PRIVATE_FLAG : 0; }

/// Effects: sleeps while *word == expected, at most until `deadline` (time_point::max() = forever).
/// Returns: 0 when woken (or spuriously), ETIMEDOUT when the deadline passed, EAGAIN when *word !=
/// expected on entry, EINTR on a signal. Complexity: one system call.
inline int futex_wait_until(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                            futex_clock::time_point deadline, futex_scope scope = futex_scope::private_) noexcept {
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
  const long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_BITSET | futex_flags(scope),
                           expected, tsp, nullptr, FUTEX_BITSET_MATCH_ANY);
  return r == 0 ? 0 : errno;
}

/// Effects: sleeps while *word == expected (no deadline). Returns as futex_wait_until().
inline int futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected) noexcept {
  return futex_wait_until(word, expected, futex_clock::time_point::max());
}

/// Effects: wakes up to n threads sleeping on `word`. Returns the number woken.
inline int futex_wake(std::atomic<std::uint32_t>* word, int n = 1, futex_scope scope = futex_scope::private_) noexcept {
  return static_cast<int>(
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE | futex_flags(scope), n, nullptr, nullptr, 0));
}

/// A CPU hint for spin loops (PAUSE on x86, YIELD on arm64).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// An internal leaf mutex on one futex word: bits 0-1 hold the state (0 free, 1 locked, 2 locked with
/// possible sleepers), bits 2-31 a counter, the "payload", that a holder changes, atomically with
/// taking the lock (lock(add)), while holding it (add_payload, sub_payload) or with dropping it
/// (unlock(sub, add)), and that any thread may read without the lock (payload(), payload_if_free()).
/// Not recursive, not ranked: its users document it as a leaf (nothing is acquired while it is held).
/// lock(): one CAS when free; else spins `spin_limit` rounds of cpu_relax(), then parks.
/// unlock(): one CAS, plus a futex_wake when a sleeper may exist.
/// Memory ordering: (1) the acquiring CAS (seq_cst, so that taking the lock, and a payload change made
/// with it, takes part in the single total order: a lock-free reader's seq_cst load either sees it or
/// precedes it) pairs with (2) the releasing CAS, so everything written under one hold happens-before
/// the next hold and a payload() / payload_if_free() load with acquire that sees an unlock's payload.
/// Throws: nothing. Size: 4 bytes.
class futex_mutex {
 public:
  static constexpr int spin_limit = 64;
  static constexpr std::uint32_t max_payload = (~std::uint32_t{0}) >> 2;

  /// Effects: takes the lock and adds `add` to the payload in the same atomic step.
  /// Requires: payload() + add <= max_payload.
  void lock(std::uint32_t add = 0) noexcept {
    // (r) relaxed: the expected value only; the CAS decides.
    std::uint32_t c = s_.load(std::memory_order_relaxed) & ~state_mask;
    // (1) seq_cst (acquire), pairs with (2).
    if (s_.compare_exchange_strong(c, c + add * unit + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) return;
    lock_slow(add);
  }
  /// Effects: drops the lock, subtracting `sub` from and adding `add` to the payload in the same
  /// atomic step. Requires: held by the caller; sub <= payload() + add <= max_payload.
  void unlock(std::uint32_t sub = 0, std::uint32_t add = 0) noexcept {
    // (r) relaxed: the expected value only; the CAS decides.
    std::uint32_t c = s_.load(std::memory_order_relaxed);
    // (2) release, pairs with (1) and with a payload() or payload_if_free() load with acquire.
    while (!s_.compare_exchange_weak(c, (c & ~state_mask) + add * unit - sub * unit, std::memory_order_release,
                                     std::memory_order_relaxed)) {
    }
    if ((c & state_mask) == 2) futex_wake(&s_, 1);
  }
  /// Effects: adds `add` to the payload. Requires: held by the caller. (1) seq_cst, as lock(add).
  void add_payload(std::uint32_t add) noexcept { s_.fetch_add(add * unit, std::memory_order_seq_cst); }
  /// Effects: subtracts `sub` from the payload. Requires: held by the caller; sub <= payload().
  /// (1) seq_cst, as lock(add).
  void sub_payload(std::uint32_t sub) noexcept { s_.fetch_sub(sub * unit, std::memory_order_seq_cst); }
  /// The payload (no lock needed).
  [[nodiscard]] std::uint32_t payload(std::memory_order o = std::memory_order_seq_cst) const noexcept {
    return s_.load(o) >> 2;
  }
  /// Returned by payload_if_free() when the lock is held.
  static constexpr std::uint32_t busy = ~std::uint32_t{0};
  /// The payload if the lock is free, else `busy`, from one load of the word (no lock needed).
  [[nodiscard]] std::uint32_t payload_if_free(std::memory_order o = std::memory_order_seq_cst) const noexcept {
    const std::uint32_t c = s_.load(o);
    return (c & state_mask) == 0 ? c >> 2 : busy;
  }

 private:
  static constexpr std::uint32_t state_mask = 3, unit = 4;
  void lock_slow(std::uint32_t add) noexcept {
    for (int i = 0; i < spin_limit; ++i) {
      cpu_relax();
      // (r) relaxed: the expected value only; the CAS decides.
      std::uint32_t c = s_.load(std::memory_order_relaxed);
      // (1) seq_cst (acquire), pairs with (2).
      if ((c & state_mask) == 0 &&
          s_.compare_exchange_weak(c, c + add * unit + 1, std::memory_order_seq_cst, std::memory_order_relaxed))
        return;
    }
    for (;;) {
      // (r) relaxed: the expected value only; the CASes decide.
      std::uint32_t c = s_.load(std::memory_order_relaxed);
      if ((c & state_mask) == 0) {
        // Taken in state 2: other sleepers may remain, so the next unlock wakes one.
        // (1) seq_cst (acquire), pairs with (2).
        if (s_.compare_exchange_weak(c, c + add * unit + 2, std::memory_order_seq_cst, std::memory_order_relaxed))
          return;
        continue;
      }
      // (r) relaxed: announces a sleeper only; the unlock's CAS reads it.
      if ((c & state_mask) == 1 &&
          !s_.compare_exchange_weak(c, (c & ~state_mask) | 2, std::memory_order_relaxed, std::memory_order_relaxed))
        continue;
      futex_wait(&s_, (c & ~state_mask) | 2);
    }
  }
  std::atomic<std::uint32_t> s_{0};
};

}  // namespace faultsafe::detail
