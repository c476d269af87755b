// faultsafe/order/violation.hpp: what a lock-order or lock-up violation is, and who hears of it.
//
// Defines `violation_kind`, `violation` (a kind plus a human-readable report naming every lock,
// thread, channel and fault involved), `violation_handler`, `set_violation_handler()` and
// `report_violation()`, and `violation_context` (RAII lines a thread adds to every violation it reports
// while the context lives: which request it was serving when it found the violation).
//
// Contract
// - The default handler prints `violation::report()` to stderr and calls std::abort().
// - A handler may return: the operation that found the violation then proceeds, except where
//   proceeding would certainly self-deadlock (re-acquiring a held non-recursive lock); that call then
//   throws std::system_error(std::errc::resource_deadlock_would_occur) and takes nothing.
// - A handler may throw: the exception leaves the call that found the violation, which has then
//   acquired nothing.
// - A handler must not acquire faultsafe locks of the caller's lock order (it runs with the caller's
//   locks held); it may print, record, count or throw.
//
// Thread-safety: set_violation_handler() and report_violation() may be called from any thread at any
// time. A handler may run concurrently on several threads; it must be thread-safe itself. Replacing the
// handler while another thread is inside the old one is safe: the old handler object stays alive until
// that call returns (it is held by shared_ptr).
// Lock order: report_violation() takes one internal leaf lock only for the time needed to copy the
// handler pointer; the handler itself runs with no faultsafe-internal lock held.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
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

/// One violation. `summary` is one line; `details` are the lines that follow it (one per lock held,
/// per edge of a cycle, per hop of a wait chain); `involved` names every lock/thread/channel involved,
/// so a test can check them without parsing the text.
struct violation {
  violation_kind kind{};
  std::string summary;
  std::vector<std::string> details;
  std::vector<std::string> involved;

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

namespace detail {
inline void default_violation_handler(const violation& v) {
  const std::string text = v.report();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
  std::abort();
}

struct handler_slot {
  std::mutex m;  // leaf: held only to copy or swap the pointer
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
  if (!h) h = &detail::default_violation_handler;
  auto next = std::make_shared<const violation_handler>(std::move(h));
  auto& slot = detail::the_handler_slot();
  std::shared_ptr<const violation_handler> prev;
  {
    std::lock_guard<std::mutex> g(slot.m);
    prev = std::exchange(slot.h, std::move(next));
  }
  return *prev;
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
  mutable std::mutex m_;
  std::vector<violation> seen_;
};

}  // namespace faultsafe
