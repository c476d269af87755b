// faultsafe/ipc/detail/hand_off.hpp: the channel's spin-then-park hand-off on a 32-bit state word,
// over an injectable platform (internal).
//
// Defines
// - `real_platform`: std::chrono::steady_clock, futex(2) on std::atomic<std::uint32_t>, the CPU pause.
// - `shared_platform`: the same with shared futexes, for a word in memory shared between OS processes
//   (the socket transport's per-connection channel, ipc/socket_transport.hpp).
// - `spin_until<P>(word, budget, done)`: the spin phase of a wait.
// - `park_once<P>(word, s, sleeping, until)`: one step of the park phase.
// - `wake_if_sleeping<P>(word, old, sleeping)`: the waker's side, after its read-modify-write.
//
// The protocol. A waiter that has spun long enough sets the `sleeping` bit with a compare-exchange on
// the word and then sleeps while the word still equals what it wrote. A waker changes the word with
// one read-modify-write (exchange or fetch_or) and wakes the word only if the value it replaced had
// the bit. Both sides are read-modify-writes of one word, so one of them comes first in the word's
// modification order: either the waker's comes first (the waiter's compare-exchange fails, it reloads
// and sees the change: no sleep, no wake) or the waiter's does (the waker sees the bit and wakes; the
// sleep itself returns at once if the word changed before it began). No wake-up is lost.
//
// Why a platform parameter (as folly's Baton takes its atomics): a test substitutes a platform whose
// clock is manual and whose word runs the other side at a chosen step, so each interleaving above is
// checked deterministically (tests/channel_hand_off_test.cpp). The channel uses real_platform; every
// function is an inline template, so the default costs nothing.
//
// Platform requirements: `time_point`, `static time_point now()`, `static void relax()`,
// `static void wait(Word&, std::uint32_t expected, time_point until)` (may return spuriously) and
// `static void wake(Word&)` (wakes every sleeper). Word: load, compare_exchange_weak and the waker's
// read-modify-writes with std::atomic's signatures.
//
// Memory ordering: (1) the waiter's loads are acquire and pair with the waker's release
// read-modify-write (the channel's numbered (4) and (3)): what the waker wrote before it is visible
// once the waiter sees the change. (2) the compare-exchange that sets the bit is acq_rel; it publishes
// nothing but the bit, which the waker reads through the word's modification order.
// Thread-safety: any thread; the word is the only shared state. Throws: nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

#include "../../detail/futex.hpp"

namespace faultsafe::detail {

/// The platform the channel runs on.
struct real_platform {
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;
  using word = std::atomic<std::uint32_t>;
  static time_point now() noexcept { return clock::now(); }
  static void relax() noexcept { cpu_relax(); }
  static void wait(word& w, std::uint32_t expected, time_point until) noexcept {
    (void)futex_wait_until(&w, expected, until);
  }
  static void wake(word& w) noexcept { (void)futex_wake(&w, INT_MAX); }
};

/// real_platform across OS processes: the word lives in a MAP_SHARED mapping (no FUTEX_PRIVATE_FLAG).
struct shared_platform : real_platform {
  static void wait(word& w, std::uint32_t expected, time_point until) noexcept {
    (void)futex_wait_until(&w, expected, until, futex_scope::shared);
  }
  static void wake(word& w) noexcept { (void)futex_wake(&w, INT_MAX, futex_scope::shared); }
};

/// Effects: re-reads `w` until done(state) or until `budget` has passed, with P::relax() between
/// reads and P::now() read once every 256 reads. Returns: the last state read (done or not).
/// Requires: budget > 0. Complexity: O(budget).
template <class P, class Word, class Done>
std::uint32_t spin_until(Word& w, std::chrono::nanoseconds budget, Done done) noexcept {
  const auto spin_end = P::now() + budget;
  std::uint32_t s = 0;
  for (unsigned n = 0;;) {
    for (int i = 0; i < 64; ++i) {
      s = w.load(std::memory_order_acquire);  // (1) acquire, pairs with the waker's release
      if (done(s)) return s;
      P::relax();
    }
    if ((++n & 3) == 0 && P::now() >= spin_end) return s;
  }
}

/// Effects: one park step for a waiter that read state `s` (not done): sets `sleeping` in the word
/// if it is not set yet (if the word changed meanwhile, returns without sleeping) and then sleeps
/// while the word equals s | sleeping, at most until `until`. The caller reloads the word and loops.
template <class P, class Word>
void park_once(Word& w, std::uint32_t s, std::uint32_t sleeping, typename P::time_point until) noexcept {
  if (!(s & sleeping)) {
    // (2) acq_rel: the bit reaches the waker through the word's modification order.
    if (!w.compare_exchange_weak(s, s | sleeping, std::memory_order_acq_rel)) return;
    s |= sleeping;
  }
  P::wait(w, s, until);
}

/// Effects: the waker's side, after it replaced `old` in `w` with one read-modify-write: wakes the
/// waiters if `old` had the `sleeping` bit. Returns: whether it woke.
template <class P, class Word>
bool wake_if_sleeping(Word& w, std::uint32_t old, std::uint32_t sleeping) noexcept {
  if (!(old & sleeping)) return false;
  P::wake(w);
  return true;
}

}  // namespace faultsafe::detail
