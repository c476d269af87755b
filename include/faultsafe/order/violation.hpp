// faultsafe/order/violation.hpp: what a lock-order or lock-up violation is, and who hears of it.
//
// Defines `violation_kind`, `violation_outcome`, `violation` (a kind, an outcome, a site and a
// human-readable report naming every lock, thread, channel and fault involved), `violation_handler`,
// `set_violation_handler()` and `report_violation()`, the default policy (`default_violation_handler`,
// `strict_violation_handler`, `set_violation_sink()`, `violation_report_limits`), and
// `violation_context` (RAII lines a thread adds to every violation it reports while the context lives:
// which request it was serving when it found the violation).
//
// Two families of violation (violation::resolved(), is_programming_error())
// - Programming errors: rank_inversion, order_cycle, recursive_acquire, unlock_not_held,
//   held_stack_overflow. The program's lock discipline is wrong; nothing was resolved
//   (outcome `unresolved`).
// - Lock-ups faultsafe resolved before reporting: self_deadlock (granted under the owning activity or
//   served by a pool's reserve thread: outcome `served`; or failed with EDEADLK: outcome `failed`) and
//   wait_cycle (one wait broken with EDEADLK: `failed`). A wait_cycle that was not broken (policy
//   report_only, or no breakable wait on it) is `unresolved`: the threads on it stay blocked.
//
// Contract
// - The default handler (default_violation_handler) reports a resolved violation through the sink
//   (stderr by default, set_violation_sink()) once per (kind, site), at most
//   violation_report_limits::burst reports per violation_report_limits::interval over all sites, and
//   returns: the program goes on. An unresolved violation (every programming error, an unbroken wait
//   cycle) is reported through the sink and then std::abort()s. strict_violation_handler reports
//   every violation and aborts (the behaviour before this policy); install it, or any handler, with
//   set_violation_handler().
// - A handler may return: the operation that found the violation then proceeds, except where
//   proceeding would certainly self-deadlock (re-acquiring a held non-recursive lock); that call then
//   throws std::system_error(std::errc::resource_deadlock_would_occur) and takes nothing.
// - A handler may throw: the exception leaves the call that found the violation, which has then
//   acquired nothing.
// - A handler must not acquire faultsafe locks of the caller's lock order (it runs with the caller's
//   locks held); it may print, record, count or throw. The same holds for a sink.
//
// Thread-safety: set_violation_handler(), set_violation_sink(), set_violation_report_limits() and
// report_violation() may be called from any thread at any time. A handler (and a sink) may run
// concurrently on several threads; it must be thread-safe itself. Replacing the handler or the sink
// while another thread is inside the old one is safe: the old object stays alive until that call
// returns (it is held by shared_ptr).
// Lock order: report_violation() takes one internal leaf lock only for the time needed to copy the
// handler pointer; the handler itself runs with no faultsafe-internal lock held. The default handler
// takes one more leaf lock to count sites and rate-limit, and releases it before calling the sink.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace faultsafe {

/// The kinds of violation faultsafe reports.
enum class violation_kind {
  rank_inversion,       ///< a lock whose rank is not strictly above every rank held
  order_cycle,          ///< a new lock-class edge closes a cycle in the lock graph (lockdep)
  recursive_acquire,    ///< a thread re-acquires a lock (or read lock) it holds
  unlock_not_held,      ///< a thread releases a lock it does not hold
  self_deadlock,        ///< a request waits only on ranges its own activity holds (Brian)
  wait_cycle,           ///< the wait-for graph has a cycle (Colin)
  held_stack_overflow,  ///< a thread holds more than FAULTSAFE_MAX_HELD_LOCKS locks
};

/// The name of a kind, as used in reports ("rank_inversion", ...).
[[nodiscard]] constexpr std::string_view to_string(violation_kind k) noexcept {
  switch (k) {
    case violation_kind::rank_inversion: return "rank_inversion";
    case violation_kind::order_cycle: return "order_cycle";
    case violation_kind::recursive_acquire: return "recursive_acquire";
    case violation_kind::unlock_not_held: return "unlock_not_held";
    case violation_kind::self_deadlock: return "self_deadlock";
    case violation_kind::wait_cycle: return "wait_cycle";
    case violation_kind::held_stack_overflow: return "held_stack_overflow";
  }
  return "unknown";
}

/// True for the kinds that are programming errors (the lock discipline is wrong): rank_inversion,
/// order_cycle, recursive_acquire, unlock_not_held, held_stack_overflow. Their violations are always
/// `unresolved`.
[[nodiscard]] constexpr bool is_programming_error(violation_kind k) noexcept {
  return k != violation_kind::self_deadlock && k != violation_kind::wait_cycle;
}

/// What faultsafe did about a violation before reporting it.
enum class violation_outcome {
  unresolved,  ///< nothing: a programming error, or a wait cycle left blocked (report_only)
  served,      ///< resolved, the operation goes on: a self-deadlock granted under its own activity,
               ///< or a message served by a pool's reserve thread
  failed,      ///< resolved, the operation fails with EDEADLK: a self-deadlock under policy fail, or
               ///< the wait the wait-for graph broke to unwind a cycle
};

/// The name of an outcome, as used in reports ("unresolved", "served", "failed").
[[nodiscard]] constexpr std::string_view to_string(violation_outcome o) noexcept {
  switch (o) {
    case violation_outcome::unresolved: return "unresolved";
    case violation_outcome::served: return "served";
    case violation_outcome::failed: return "failed";
  }
  return "unknown";
}

/// One violation. `summary` is one line; `details` are the lines that follow it (one per lock held,
/// per edge of a cycle, per hop of a wait chain); `involved` names every lock/thread/channel involved,
/// so a test can check them without parsing the text. `outcome` says whether faultsafe resolved it;
/// `site` names where it happened in the program (a request's call site, a server and message type,
/// the resources of a cycle) and is what the default handler reports once.
struct violation {
  violation_kind kind{};
  std::string summary;
  std::vector<std::string> details;
  std::vector<std::string> involved;
  violation_outcome outcome = violation_outcome::unresolved;
  std::string site;

  /// True if faultsafe resolved it (outcome served or failed): the program may go on.
  [[nodiscard]] bool resolved() const noexcept { return outcome != violation_outcome::unresolved; }

  /// Effects: the whole report: "faultsafe: <kind>: <summary>" and each detail line indented.
  /// Complexity: linear in the report size. Throws: std::bad_alloc.
  [[nodiscard]] std::string report() const {
    std::string out = "faultsafe: ";
    out += to_string(kind);
    out += ": ";
    out += summary;
    for (const auto& d : details) {
      out += "\n    ";
      out += d;
    }
    return out;
  }
};

/// A violation handler. May return, throw, or not return (abort).
using violation_handler = std::function<void(const violation&)>;

/// Where the default handlers write their reports: one call per report, the whole text (several
/// lines, no trailing newline). Default: stderr.
using violation_sink = std::function<void(std::string_view report)>;

/// Rate limit of the default handler's reports of resolved violations (over all sites): at most
/// `burst` reports per `interval`; the others are counted, and the next report says how many were
/// suppressed. `max_sites`: how many distinct sites it remembers for "once per site" (beyond that,
/// only the rate limit applies).
struct violation_report_limits {
  unsigned burst = 10;
  std::chrono::milliseconds interval{1000};
  std::size_t max_sites = 4096;
};

/// Counters of the default handlers (racy snapshot).
struct violation_report_stats {
  std::uint64_t resolved = 0;          ///< resolved violations seen
  std::uint64_t reported = 0;          ///< reports written to the sink (resolved and unresolved)
  std::uint64_t repeated_site = 0;     ///< resolved ones not reported: their site was reported already
  std::uint64_t rate_limited = 0;      ///< resolved ones not reported: over the rate limit
};

namespace detail {
inline void write_to_stderr(std::string_view text) {
  std::fprintf(stderr, "%.*s\n", static_cast<int>(text.size()), text.data());
  std::fflush(stderr);
}

// The default policy's state: the sink, the limits, the sites seen, the rate window.
struct report_policy_state {
  std::mutex m;  // leaf: never held while calling the sink
  std::shared_ptr<const violation_sink> sink = std::make_shared<const violation_sink>(&write_to_stderr);
  violation_report_limits limits{};
  std::unordered_map<std::string, std::uint64_t> sites;  // (kind, site) -> times seen
  std::chrono::steady_clock::time_point window_start{};
  unsigned in_window = 0;
  std::uint64_t suppressed_since_report = 0;
  violation_report_stats stats{};
};
inline report_policy_state& the_report_policy() {
  static report_policy_state* st = new report_policy_state;  // leaked: reports may come during exit
  return *st;
}

// Effects: under `m`, replaces `*slot` by `f` (by `dflt` if `f` is empty); returns the previous
// function. The previous object lives on while a caller that copied the pointer still runs it.
template <class F, class D>
F replace_shared(std::mutex& m, std::shared_ptr<const F>& slot, F f, D dflt) {
  if (!f) f = dflt;
  auto next = std::make_shared<const F>(std::move(f));
  std::shared_ptr<const F> prev;
  {
    std::lock_guard<std::mutex> g(m);
    prev = std::exchange(slot, std::move(next));
  }
  return *prev;
}

inline std::shared_ptr<const violation_sink> current_sink() {
  auto& st = the_report_policy();
  std::lock_guard<std::mutex> g(st.m);
  return st.sink;
}

// Effects: decides whether the resolved violation `v` is reported now; if so returns the text (with a
// trailer), else an empty string.
inline std::string admit_resolved(const violation& v) {
  auto& st = the_report_policy();
  std::string key(to_string(v.kind));
  key += '|';
  key += v.site.empty() ? v.summary : v.site;
  std::lock_guard<std::mutex> g(st.m);
  ++st.stats.resolved;
  auto it = st.sites.find(key);
  if (it != st.sites.end()) {
    ++it->second;
    ++st.stats.repeated_site;
    return {};
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - st.window_start >= st.limits.interval) {
    st.window_start = now;
    st.in_window = 0;
  }
  if (st.in_window >= st.limits.burst) {
    ++st.stats.rate_limited;
    ++st.suppressed_since_report;
    return {};  // not remembered as seen: it may be reported once the window has passed
  }
  ++st.in_window;
  if (st.sites.size() < st.limits.max_sites) st.sites.emplace(std::move(key), 1);
  std::string text = v.report();
  text += "\n    (";
  text += to_string(v.outcome);
  text += " by faultsafe: the program goes on; further reports from this site are not printed";
  if (st.suppressed_since_report != 0) {
    text += "; " + std::to_string(st.suppressed_since_report) + " earlier report(s) suppressed by the rate limit";
    st.suppressed_since_report = 0;
  }
  text += ')';
  ++st.stats.reported;
  return text;
}

inline void count_reported() {
  auto& st = the_report_policy();
  std::lock_guard<std::mutex> g(st.m);
  ++st.stats.reported;
}
}  // namespace detail

/// The default handler. A resolved violation (violation::resolved()) goes to the sink once per
/// (kind, site) within the rate limit, and the call returns. An unresolved one (a programming error, an
/// unbroken wait cycle) goes to the sink and then std::abort().
/// Throws: std::bad_alloc (building the report); what the sink throws.
inline void default_violation_handler(const violation& v) {
  if (v.resolved()) {
    std::string text = detail::admit_resolved(v);
    if (!text.empty()) (*detail::current_sink())(text);
    return;
  }
  detail::count_reported();
  (*detail::current_sink())(v.report());
  std::abort();
}

/// A handler for programs that want every violation to stop them: reports it through the sink and
/// calls std::abort(), resolved or not.
inline void strict_violation_handler(const violation& v) {
  detail::count_reported();
  (*detail::current_sink())(v.report());
  std::abort();
}

/// Effects: the default handlers write their reports to `s` (an empty function restores stderr);
/// returns the previous sink. Thread-safety: any thread. Throws: std::bad_alloc.
inline violation_sink set_violation_sink(violation_sink s) {
  auto& st = detail::the_report_policy();
  return detail::replace_shared(st.m, st.sink, std::move(s), &detail::write_to_stderr);
}

/// Effects: replaces the default handler's rate limit; returns the previous one. Thread-safety: any
/// thread.
inline violation_report_limits set_violation_report_limits(violation_report_limits l) {
  auto& st = detail::the_report_policy();
  std::lock_guard<std::mutex> g(st.m);
  return std::exchange(st.limits, l);
}

/// The default handlers' counters. Thread-safety: any thread.
[[nodiscard]] inline violation_report_stats violation_report_counters() {
  auto& st = detail::the_report_policy();
  std::lock_guard<std::mutex> g(st.m);
  return st.stats;
}

/// Effects: forgets the sites already reported (each is reported again once) and resets the rate
/// window. Thread-safety: any thread.
inline void reset_violation_report_sites() {
  auto& st = detail::the_report_policy();
  std::lock_guard<std::mutex> g(st.m);
  st.sites.clear();
  st.in_window = 0;
  st.window_start = {};
}

namespace detail {
struct handler_slot {
  // The checker's own lock (not a ranked_mutex: reporting through it would recurse into the handler):
  // a leaf held only to copy or swap the pointer, never while the handler runs.
  std::mutex m;
  std::shared_ptr<const violation_handler> h =
      std::make_shared<const violation_handler>(&default_violation_handler);
};
inline handler_slot& the_handler_slot() {
  static handler_slot slot;  // function-local: usable during static initialisation
  return slot;
}
}  // namespace detail

/// Effects: installs `h` (an empty function restores the default handler); returns the previous one.
/// Thread-safety: any thread. Complexity: O(1). Throws: std::bad_alloc.
inline violation_handler set_violation_handler(violation_handler h) {
  auto& slot = detail::the_handler_slot();
  return detail::replace_shared(slot.m, slot.h, std::move(h), &default_violation_handler);
}

class violation_context;
namespace detail {
inline const violation_context*& this_thread_violation_context() noexcept {
  thread_local const violation_context* top = nullptr;
  return top;
}
}  // namespace detail

/// RAII: while it lives, every violation reported on the calling thread gets the lines `describe`
/// appends to its details (and names to `involved`), innermost context first; e.g. a page-in handler
/// adds "while serving the page-in of [x, y) for the fault at 0x... of thread T". Contexts nest.
/// Costs two thread-local stores; `describe` runs (and allocates) only when a violation is reported.
/// Requires: destroyed on the thread that made it, in LIFO order; `arg` outlives it.
class violation_context {
 public:
  using describe_fn = void (*)(const void* arg, violation& v);
  violation_context(describe_fn describe, const void* arg) noexcept
      : describe_(describe), arg_(arg), prev_(detail::this_thread_violation_context()) {
    detail::this_thread_violation_context() = this;
  }
  ~violation_context() { detail::this_thread_violation_context() = prev_; }
  violation_context(const violation_context&) = delete;
  violation_context& operator=(const violation_context&) = delete;

  /// Effects: appends this context's lines, then the enclosing contexts' lines, to v.
  void describe(violation& v) const {
    for (const violation_context* c = this; c != nullptr; c = c->prev_) c->describe_(c->arg_, v);
  }

 private:
  describe_fn describe_;
  const void* arg_;
  const violation_context* prev_;
};

/// Effects: calls the installed handler with `v`, extended by the calling thread's violation_context
/// lines if any. Returns if the handler returns; propagates what it throws. Thread-safety: any thread.
inline void report_violation(const violation& v) {
  auto& slot = detail::the_handler_slot();
  std::shared_ptr<const violation_handler> h;
  {
    std::lock_guard<std::mutex> g(slot.m);
    h = slot.h;
  }
  if (const violation_context* c = detail::this_thread_violation_context()) {
    violation extended = v;
    c->describe(extended);
    (*h)(extended);
    return;
  }
  (*h)(v);
}

/// RAII: installs a handler for a scope and restores the previous one (handy in tests).
class scoped_violation_handler {
 public:
  explicit scoped_violation_handler(violation_handler h) : prev_(set_violation_handler(std::move(h))) {}
  ~scoped_violation_handler() { set_violation_handler(std::move(prev_)); }
  scoped_violation_handler(const scoped_violation_handler&) = delete;
  scoped_violation_handler& operator=(const scoped_violation_handler&) = delete;

 private:
  violation_handler prev_;
};

/// A thread-safe recording handler for tests and tools: keeps every violation it hears of.
class violation_recorder {
 public:
  /// The handler to install; it records and returns. The recorder must outlive its installation.
  [[nodiscard]] violation_handler handler() {
    return [this](const violation& v) {
      std::lock_guard<std::mutex> g(m_);
      seen_.push_back(v);
    };
  }
  [[nodiscard]] std::vector<violation> take() {
    std::lock_guard<std::mutex> g(m_);
    return std::exchange(seen_, {});
  }
  [[nodiscard]] std::size_t count() const {
    std::lock_guard<std::mutex> g(m_);
    return seen_.size();
  }
  [[nodiscard]] std::size_t count(violation_kind k) const {
    std::lock_guard<std::mutex> g(m_);
    std::size_t n = 0;
    for (const auto& v : seen_) n += (v.kind == k);
    return n;
  }

 private:
  mutable std::mutex m_;  // a checker-side leaf (the handler runs inside lock checks): plain std::mutex
  std::vector<violation> seen_;
};

}  // namespace faultsafe
