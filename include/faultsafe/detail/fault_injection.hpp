// faultsafe/detail/fault_injection.hpp: compile-time fault-injection hooks for hardening tests.
//
// Defines the macro FAULTSAFE_INJECT(point) and the namespace faultsafe::fault_injection: named
// injection points, a test-controlled schedule per point (fail the Nth hit, every Kth hit, or each hit
// with probability p drawn from a seeded PRNG; optionally stall the hitting thread), and counters.
//
// Switch: FAULTSAFE_FAULT_INJECTION (default 0). With 0, FAULTSAFE_INJECT(point) expands to the
// constant `false`: the point's name is not even evaluated and no code, no load and no branch remain
// (tests/fault_injection_off_test.cpp static_asserts it). It is forced to 0 when NDEBUG is defined
// (release builds) unless FAULTSAFE_FAULT_INJECTION_IN_RELEASE is also defined. The macro must have
// one value across a whole program (the library is header-only: mixing values between translation
// units is an ODR violation). The control API below is always declared, so a test that arms a
// schedule compiles either way; with the switch off nothing ever hits it (hits() stays 0).
//
// Points and what a firing means where they are wired (the library documents each at its call site):
//   page_in_error      the server's page-in fails with EIO (iofunc_page_in_default): the faulting
//                      access gets SIGBUS; a server copy into such a page gets EFAULT.
//   page_in_stall      the server's page-in stalls (schedule::stall) while it holds the range shared:
//                      lets a test munmap a region, time out, or stop a server during a fault.
//   handler_exception  a server handler throws (server::dispatch): the request fails with EIO, the
//                      server thread goes on serving.
//   server_abort       the server stops mid-request (server::dispatch, after receive, before the
//                      handler): the channel is stopped, the held request fails with ESHUTDOWN, every
//                      later or queued send fails with ESHUTDOWN.
//   range_hold_stall   a read/write handler stalls while it holds its range lock, before touching the
//                      client's buffer (iofunc read/write): lets the client's io timeout pass.
//   pager_alloc        the pager cannot allocate what a fault needs (vm/pager.hpp, before page-in):
//                      the fault fails (SIGBUS), the pager goes on.
//   munmap_race        the pager stalls after page-in, before mapping the pages (vm/pager.hpp): a
//                      concurrent munmap then waits for it, and the faulting thread gets SIGSEGV.
//   range_claim_stall  a range_lock request on the fast holder path stalls after its checks, before
//                      its claim (sync/range_lock.hpp): lets a conflicting range enter meanwhile.
//   range_claimed_stall  the same, after its claim, before its re-check: lets a leaf lock holder move
//                      it into the tree meanwhile.
//
// Schedule semantics (per point; hits are counted from arm(), 1-based, across all threads):
//   fail_nth  N > 0: fire on hit N only.   every K > 0: fire on hits K, 2K, ...
//   probability p in (0, 1]: fire on hit n when splitmix64(splitmix64(seed) + n) < p * 2^64 (deterministic for a
//   given seed and hit number, whichever thread makes the hit).   Rules combine with OR.
//   max_fires: stop firing after that many fires.   stall: when the point fires, the hitting thread
//   blocks until release(point) or until `stall` has passed, whichever comes first.
//   only_activity a != 0: only hits made on behalf of activity a count (current_activity() == a; a
//   server thread has adopted its client's activity, a page-in server thread the faulting thread's),
//   so a test can aim a fault at one client while others run through the same code.
//
// Thread-safety: every function may be called from any thread. should_fail() of a point that is not
// armed costs one relaxed atomic load. arm()/disarm() while other threads hit the point are safe; a
// hit racing with arm() sees the old or the new schedule. Memory ordering: (1) release in arm(),
// pairs with (2) acquire in should_fail(): a hit that sees `armed` sees the whole schedule. The
// counters (hits, fires, stalled) are relaxed statistics; release_gen is read and written under the
// stall mutex (relaxed).
// Lock order: one leaf mutex guards stalls only; should_fail() holds nothing when it returns.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "../activity/activity.hpp"
#include "../order/ranked_mutex.hpp"

#ifndef FAULTSAFE_FAULT_INJECTION
#  define FAULTSAFE_FAULT_INJECTION 0
#endif
#if defined(NDEBUG) && !defined(FAULTSAFE_FAULT_INJECTION_IN_RELEASE)
#  undef FAULTSAFE_FAULT_INJECTION
#  define FAULTSAFE_FAULT_INJECTION 0
#endif

namespace faultsafe::fault_injection {

/// The named injection points (see the header comment for where each is wired).
enum class point : unsigned {
  page_in_error,
  page_in_stall,
  handler_exception,
  server_abort,
  range_hold_stall,
  pager_alloc,
  munmap_race,
  range_claim_stall,
  range_claimed_stall,
  count_  ///< not a point
};
inline constexpr std::size_t point_count = static_cast<std::size_t>(point::count_);

/// Name of a point (for reports): "page_in_error", ...
[[nodiscard]] constexpr const char* name(point p) noexcept {
  switch (p) {
    case point::page_in_error: return "page_in_error";
    case point::page_in_stall: return "page_in_stall";
    case point::handler_exception: return "handler_exception";
    case point::server_abort: return "server_abort";
    case point::range_hold_stall: return "range_hold_stall";
    case point::pager_alloc: return "pager_alloc";
    case point::munmap_race: return "munmap_race";
    case point::range_claim_stall: return "range_claim_stall";
    case point::range_claimed_stall: return "range_claimed_stall";
    case point::count_: break;
  }
  return "?";
}

/// When a point fires. All zero = never.
struct schedule {
  std::uint64_t fail_nth = 0;      ///< fire on this hit only (1-based); 0 = rule off
  std::uint64_t every = 0;         ///< fire on every k-th hit; 0 = rule off
  double probability = 0.0;        ///< fire each hit with this probability (seeded, deterministic)
  std::uint64_t seed = 1;          ///< PRNG seed for `probability`
  std::uint64_t max_fires = ~std::uint64_t{0};  ///< stop firing after this many fires
  std::chrono::nanoseconds stall{0};  ///< on fire: block up to this long (release() ends it early)
  activity_id only_activity = 0;      ///< != 0: only hits on behalf of this activity count
};

namespace detail {

struct point_state {
  std::atomic<bool> armed{false};
  std::atomic<std::uint64_t> hits{0}, fires{0};
  std::atomic<std::uint64_t> nth{0}, every{0}, threshold{0}, seed{0}, max_fires{0};
  std::atomic<std::int64_t> stall_ns{0};
  std::atomic<activity_id> only_activity{0};
  std::atomic<std::uint64_t> release_gen{0};  // bumped by release(): ends the stalls in progress
  std::atomic<std::uint32_t> stalled{0};      // threads stalled right now
  std::atomic<std::uint64_t> total_fires{0};  // fires since the program started (never reset)
};

struct registry {
  std::array<point_state, point_count> points;
  ranked_mutex<rank::leaf> stall_mu{"fault injection stalls"};  // leaf: stall waits only
  std::condition_variable_any stall_cv;  // waits on stall_mu itself, so the waits stay checked
};

inline registry& reg() noexcept {
  static registry r;
  return r;
}
inline point_state& state(point p) noexcept { return reg().points[static_cast<std::size_t>(p)]; }

constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline void stall(point_state& s, std::chrono::nanoseconds d) {
  registry& r = reg();
  std::unique_lock l(r.stall_mu);
  const std::uint64_t gen = s.release_gen.load(std::memory_order_relaxed);
  s.stalled.fetch_add(1, std::memory_order_relaxed);
  r.stall_cv.notify_all();  // waiters in wait_stalled()
  r.stall_cv.wait_for(l, d, [&] { return s.release_gen.load(std::memory_order_relaxed) != gen; });
  s.stalled.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace detail

/// Effects: counts a hit of `p` and says whether it fires under the armed schedule (stalling first
/// when the schedule says so). Use through FAULTSAFE_INJECT. Complexity: O(1). Throws: nothing
/// (a stall that cannot lock its mutex terminates, as std::mutex failures do).
[[nodiscard]] inline bool should_fail(point p) noexcept {
  detail::point_state& s = detail::state(p);
  if (!s.armed.load(std::memory_order_acquire)) return false;  // (2) acquire, pairs with (1)
  const activity_id only = s.only_activity.load(std::memory_order_relaxed);
  if (only != 0 && current_activity() != only) return false;
  const std::uint64_t n = s.hits.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::uint64_t nth = s.nth.load(std::memory_order_relaxed);
  const std::uint64_t every = s.every.load(std::memory_order_relaxed);
  const std::uint64_t thr = s.threshold.load(std::memory_order_relaxed);
  bool fire = (nth != 0 && n == nth) || (every != 0 && n % every == 0) ||
              (thr != 0 && detail::splitmix64(detail::splitmix64(s.seed.load(std::memory_order_relaxed)) + n) <= thr);
  if (!fire) return false;
  if (s.fires.fetch_add(1, std::memory_order_relaxed) >= s.max_fires.load(std::memory_order_relaxed)) {
    s.fires.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  s.total_fires.fetch_add(1, std::memory_order_relaxed);
  const std::int64_t st = s.stall_ns.load(std::memory_order_relaxed);
  if (st > 0) detail::stall(s, std::chrono::nanoseconds(st));
  return true;
}

/// Effects: resets the point's counters and arms `sch`. Thread-safety: any thread.
inline void arm(point p, const schedule& sch) noexcept {
  detail::point_state& s = detail::state(p);
  s.armed.store(false, std::memory_order_relaxed);
  s.hits.store(0, std::memory_order_relaxed);
  s.fires.store(0, std::memory_order_relaxed);
  s.nth.store(sch.fail_nth, std::memory_order_relaxed);
  s.every.store(sch.every, std::memory_order_relaxed);
  std::uint64_t thr = 0;
  if (sch.probability >= 1.0) thr = ~std::uint64_t{0};
  else if (sch.probability > 0.0) thr = static_cast<std::uint64_t>(sch.probability * 18446744073709551616.0);
  s.threshold.store(thr, std::memory_order_relaxed);
  s.seed.store(sch.seed, std::memory_order_relaxed);
  s.max_fires.store(sch.max_fires, std::memory_order_relaxed);
  s.stall_ns.store(sch.stall.count(), std::memory_order_relaxed);
  s.only_activity.store(sch.only_activity, std::memory_order_relaxed);
  s.armed.store(true, std::memory_order_release);  // (1) release, pairs with (2)
}

/// Effects: the point never fires again until armed; stalls in progress are released.
inline void disarm(point p) noexcept;

/// Effects: ends every stall of `p` in progress (later fires stall again).
inline void release(point p) noexcept {
  detail::registry& r = detail::reg();
  {
    exclusive_guard g(r.stall_mu);
    detail::state(p).release_gen.fetch_add(1, std::memory_order_relaxed);
  }
  r.stall_cv.notify_all();
}

inline void disarm(point p) noexcept {
  detail::state(p).armed.store(false, std::memory_order_relaxed);  // relaxed: clearing publishes nothing
  release(p);
}

/// Effects: disarms every point.
inline void disarm_all() noexcept {
  for (std::size_t i = 0; i < point_count; ++i) disarm(static_cast<point>(i));
}

/// Hits and fires of `p` since it was last armed; fires of `p` since the program started.
[[nodiscard]] inline std::uint64_t hits(point p) noexcept { return detail::state(p).hits.load(std::memory_order_relaxed); }
[[nodiscard]] inline std::uint64_t fires(point p) noexcept { return detail::state(p).fires.load(std::memory_order_relaxed); }
[[nodiscard]] inline std::uint64_t total_fires(point p) noexcept {
  return detail::state(p).total_fires.load(std::memory_order_relaxed);
}
/// Threads stalled at `p` right now.
[[nodiscard]] inline std::uint32_t stalled(point p) noexcept { return detail::state(p).stalled.load(std::memory_order_relaxed); }

/// Effects: waits until at least `n` threads are stalled at `p`, or `timeout` passes. Returns whether
/// they are.
[[nodiscard]] inline bool wait_stalled(point p, std::uint32_t n, std::chrono::nanoseconds timeout) {
  detail::registry& r = detail::reg();
  std::unique_lock l(r.stall_mu);
  return r.stall_cv.wait_for(l, timeout, [&] { return stalled(p) >= n; });
}

/// Whether FAULTSAFE_INJECT is compiled in (in this translation unit).
inline constexpr bool enabled = FAULTSAFE_FAULT_INJECTION != 0;

/// RAII: arms a point for a scope, disarms it at the end.
class scoped_schedule {
 public:
  scoped_schedule(point p, const schedule& s) noexcept : p_(p) { arm(p, s); }
  ~scoped_schedule() { disarm(p_); }
  scoped_schedule(const scoped_schedule&) = delete;
  scoped_schedule& operator=(const scoped_schedule&) = delete;

 private:
  point p_;
};

}  // namespace faultsafe::fault_injection

#if FAULTSAFE_FAULT_INJECTION
/// True when the named point fires (see faultsafe::fault_injection). Example:
///   if (FAULTSAFE_INJECT(page_in_error)) return io_result::fail(EIO);
#  define FAULTSAFE_INJECT(point_name) \
    (::faultsafe::fault_injection::should_fail(::faultsafe::fault_injection::point::point_name))
#else
#  define FAULTSAFE_INJECT(point_name) (false)
#endif
