// The channel's spin-then-park hand-off (ipc/detail/hand_off.hpp) on an injected platform: a manual
// clock and a state word that runs the other side (the waker) at a chosen step. No threads, no sleeps:
// each schedule is replayed exactly, and every position of the waker is tried.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "faultsafe/ipc/detail/hand_off.hpp"

namespace {

constexpr std::uint32_t waiting = 1, done_state = 2, sleeping = 0x10;

struct fake_word;

// One waiter, one waker. Every operation of the waiter on the word is a step; the waker (exchange the
// state to done_state, then wake_if_sleeping) runs before step `waker_at`, or, if the waiter falls
// asleep first, while it sleeps (a real waker would run then: nothing else can end that sleep).
struct schedule {
  fake_word* w = nullptr;
  int step = 0;
  int waker_at = -1;
  bool waker_ran = false;
  bool waker_saw_sleeper = false;
  int relaxes = 0, now_reads = 0, waits = 0, sleeps = 0, wakes = 0, lost_wakeups = 0;
  std::int64_t now_ns = 0;

  void tick();
  void run_waker();
};
schedule* current = nullptr;

struct fake_word {
  std::atomic<std::uint32_t> v{waiting};
  std::uint32_t load(std::memory_order o) {
    current->tick();
    return v.load(o);
  }
  bool compare_exchange_weak(std::uint32_t& expected, std::uint32_t desired, std::memory_order o) {
    current->tick();
    return v.compare_exchange_strong(expected, desired, o);
  }
};

struct fake_platform {
  using time_point = std::chrono::steady_clock::time_point;
  static time_point now() {  // every read advances the manual clock by 1 us
    ++current->now_reads;
    current->now_ns += 1000;
    return time_point(std::chrono::nanoseconds(current->now_ns));
  }
  static void relax() { ++current->relaxes; }
  static void wait(fake_word& w, std::uint32_t expected, time_point) {
    ++current->waits;
    current->tick();                                                  // the waker may come before the kernel compares
    if (w.v.load(std::memory_order_relaxed) != expected) return;      // EAGAIN: no sleep
    ++current->sleeps;
    const int before = current->wakes;
    if (!current->waker_ran) current->run_waker();
    if (current->wakes == before) ++current->lost_wakeups;            // asleep and nobody woke it
  }
  static void wake(fake_word&) { ++current->wakes; }
};

void schedule::tick() {
  if (!waker_ran && step++ == waker_at) run_waker();
}
void schedule::run_waker() {
  waker_ran = true;
  const std::uint32_t old = w->v.exchange(done_state, std::memory_order_acq_rel);
  waker_saw_sleeper = faultsafe::detail::wake_if_sleeping<fake_platform>(*w, old, sleeping);
}

bool is_done(std::uint32_t s) { return s == done_state; }

// What channel::await_phase does with these pieces: spin for `spin`, then park until done.
std::uint32_t await_done(fake_word& w, std::chrono::nanoseconds spin) {
  std::uint32_t s = faultsafe::detail::spin_until<fake_platform>(w, spin, is_done);
  for (int rounds = 0; !is_done(s) && rounds < 16; ++rounds) {
    faultsafe::detail::park_once<fake_platform>(w, s, sleeping, fake_platform::time_point::max());
    s = w.load(std::memory_order_acquire);
  }
  return s;
}

struct run {
  fake_word w;
  schedule sch;
  explicit run(int waker_at) {
    sch.w = &w;
    sch.waker_at = waker_at;
    current = &sch;
  }
  ~run() { current = nullptr; }
};

}  // namespace

TEST_CASE("the spin phase reads the word until the budget passes on the clock, then stops without sleeping") {
  run r(-1);  // no waker
  const std::uint32_t s = faultsafe::detail::spin_until<fake_platform>(r.w, std::chrono::microseconds(10), is_done);
  CHECK(s == waiting);
  // The deadline is read once at the start (t = 1 us, so it is 11 us) and then once every 256 reads
  // (t = 2, 3, ..., 11 us): ten rounds of 256 reads, each followed by a pause.
  CHECK(r.sch.now_reads == 11);
  CHECK(r.sch.relaxes == 10 * 256);
  CHECK(r.sch.waits == 0);
}

TEST_CASE("the spin phase returns at the read that sees the change") {
  run r(100);  // the waker runs before the waiter's 101st operation
  const std::uint32_t s = faultsafe::detail::spin_until<fake_platform>(r.w, std::chrono::microseconds(10), is_done);
  CHECK(s == done_state);
  CHECK(r.sch.relaxes == 100);
  CHECK(r.sch.now_reads == 1);
  CHECK(!r.sch.waker_saw_sleeper);
}

TEST_CASE("every position of the waker: the waiter ends done, sleeps only with the bit set, and is always woken") {
  const auto spin = std::chrono::microseconds(2);  // 512 reads
  int positions = 0, slept = 0, woke_sleeper = 0;
  for (int at = 0;; ++at) {
    run r(at);
    const std::uint32_t s = await_done(r.w, spin);
    CAPTURE(at);
    REQUIRE(r.sch.waker_ran);
    CHECK(s == done_state);
    CHECK(r.sch.lost_wakeups == 0);
    CHECK(r.sch.sleeps <= 1);
    if (at < 512) CHECK(r.sch.waits == 0);  // the change came during the spin: no park at all
    // A waker that finds the bit always wakes; one that does not never needs to (no sleep followed).
    if (!r.sch.waker_saw_sleeper) CHECK(r.sch.sleeps == 0);
    slept += r.sch.sleeps;
    woke_sleeper += r.sch.waker_saw_sleeper ? 1 : 0;
    ++positions;
    if (r.sch.step <= at) break;  // the waker ran only as the sleeper's rescue: every step has been tried
  }
  // The schedules cover the three cases of the protocol: the change seen while spinning, the waker
  // between the waiter's last read and its compare-exchange (no bit, no sleep), the waker between the
  // compare-exchange and the sleep (the bit seen: a wake, and the sleep returns at once), the waker
  // while the waiter sleeps.
  CHECK(positions > 512);
  CHECK(slept == 1);          // only the last schedule (the waker after everything) really sleeps
  CHECK(woke_sleeper >= 2);   // the bit was seen before the sleep and during it
}
