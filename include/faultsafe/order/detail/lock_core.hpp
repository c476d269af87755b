// faultsafe/order/detail/lock_core.hpp: the one lock-checking core behind every faultsafe lock
// (internal).
//
// Defines `detail::lock_core<Checks, Edges = no_class_edges>`: the acquire / check / record / release
// steps that ranked_mutex, tracked_mutex, the vm reader/writer locks and range_guard all go through,
// so each of them says only how its own mutex is taken and released.
//
// Steps (checks_on), for one hold described by an `acquire_request` (detail/held_locks.hpp):
// - `check(r, where)`: before an acquisition that may block: recursion and rank order against the
//   calling thread's held locks (a tight inline scan; the report path only when something held can
//   conflict), then `Edges::record(r, where)` (tracked_mutex: the lock-class graph's edges).
// - `check_try(r, where)`: before an acquisition that cannot block: recursion only (a try cannot
//   wait, so it cannot invert; like lockdep's trylock) and no class edge into the lock tried.
// - `record(r, where, undo)`: once the lock is held: pushes the hold; if that throws (held-stack
//   overflow and a throwing handler) calls `undo()` first, so the caller holds nothing.
// - `forget(token, mode, name, where)`: before a release: pops the hold. Returns false after
//   reporting unlock_not_held when the thread does not hold `token` in `mode`; the caller must then
//   leave its mutex alone (releasing a mutex one does not own is undefined behaviour).
// - `lock(r, where, acquire, undo)`, `try_lock(r, where, try_acquire, undo)` and
//   `unlock(token, mode, name, where, release)` compose them for a plain mutex.
// And `detail::checked_mutex<Derived, Mutex, Checks, Edges>`: the Lockable (and SharedLockable when
// Mutex is) members of a checked lock wrapping `Mutex`, written once for ranked_mutex and
// tracked_mutex; Derived says only who the lock is (`request(mode)`).
// `where` is always the caller's source_location: every lock forwards the location it was given, so
// reports name the real call site, never the lock's own header.
//
// checks_off: every step is an empty constexpr function and the composed forms call the mutex
// operation and nothing else (no thread_local is touched, the request is never read), so a lock built
// on the core with checks_off is its bare mutex.
//
// Thread-safety: the steps touch only the calling thread's held-lock stack (and, through Edges, what
// Edges documents). Exceptions: check() and check_try() throw what the violation handler throws (and
// std::system_error(resource_deadlock_would_occur) for a certain self-deadlock), before anything is
// acquired; record() and forget() throw what the handler throws. Memory ordering: none of their own.
#pragma once

#include <concepts>
#include <type_traits>
#include <utility>

#include "../../config.hpp"
#include "../../detail/held_locks.hpp"
#include "../../source_location.hpp"
#include "../../thread_annotations.hpp"

namespace faultsafe {

/// A mutex type with lock_shared / try_lock_shared / unlock_shared (std::shared_mutex, ...).
template <class M>
concept shared_lockable_mutex = requires(M& m) {
  m.lock_shared();
  m.unlock_shared();
  { m.try_lock_shared() } -> std::convertible_to<bool>;
};

}  // namespace faultsafe

namespace faultsafe::detail {

/// Edges policy of locks without a lock class: records nothing.
struct no_class_edges {
  static constexpr void record(const acquire_request&, const source_location&) noexcept {}
};

/// The request of a lock that is its own token and object (every mutex-like lock; a range's hold is
/// its guard instead). `name` must outlive the hold.
[[nodiscard]] inline acquire_request self_request(const void* self, const char* name, unsigned rank, hold_mode mode,
                                                  const lock_class* cls = nullptr) noexcept {
  acquire_request r;
  r.token = self;
  r.object = self;
  r.name = name;
  r.rank = rank;
  r.cls = cls;
  r.mode = mode;
  return r;
}

/// Effects: check_acquire(r, where), but first a tight scan that skips it when nothing held can
/// conflict (the common case): no hold of the same object and, for a ranked request, no held rank at
/// or above r.rank. Same results and exceptions as check_acquire.
inline void check_acquire_fast(const acquire_request& r, const source_location& where) {
  const held_stack& s = this_thread_held();
  for (unsigned i = 0; i < s.depth; ++i) {
    const acquire_request& h = s.e[i].req;
    if (h.object == r.object || (r.rank != 0 && h.rank >= r.rank)) {
      check_acquire(r, where);
      return;
    }
  }
}

/// Effects: pop_held(token, name, where), after reporting unlock_not_held if the hold `token` is
/// recorded in the other mode (the hold then stays recorded). Returns: whether the caller may release.
[[gnu::noinline, gnu::cold]] inline bool pop_held_slow(const void* token, hold_mode mode, const char* name,
                                                       const source_location& where) {
  held_stack& s = this_thread_held();
  for (unsigned i = s.depth; i-- > 0;) {
    if (s.e[i].req.token != token) continue;
    if (s.e[i].req.mode == mode) break;
    violation v;
    v.kind = violation_kind::unlock_not_held;
    v.summary = "thread '" + thread_name(this_thread_id()) + "' releases '" + name + "' " +
                (mode == hold_mode::shared ? "shared" : "exclusive") + " at " + describe_site(where) +
                " but holds it " + (mode == hold_mode::shared ? "exclusively" : "shared");
    v.details.push_back("held: " + describe_held(s.e[i]));
    v.involved.emplace_back(name);
    report_violation(v);
    return false;
  }
  return pop_held(token, name, where);
}

/// The checking core; see the header. The primary template is the checked one.
template <class Checks, class Edges = no_class_edges>
struct lock_core {
  static_assert(Checks::enabled, "checks_off is the partial specialization below");

  /// Effects: the rank/recursion checks and Edges::record() for a possibly blocking acquisition.
  /// Complexity: O(locks held).
  static void check(const acquire_request& r, const source_location& where) {
    check_acquire_fast(r, where);
    Edges::record(r, where);
  }

  /// Effects: the recursion check for an acquisition that cannot block.
  static void check_try(acquire_request r, const source_location& where) {
    r.rank = 0;
    check_acquire_fast(r, where);
  }

  /// Effects: records the hold `r` (the lock is held); if that throws, calls undo() and rethrows.
  template <class Undo>
  static void record(const acquire_request& r, const source_location& where, Undo&& undo) {
    held_stack& s = this_thread_held();
    if (s.depth < FAULTSAFE_MAX_HELD_LOCKS) [[likely]] {
      held_lock& h = s.e[s.depth++];
      h.req = r;
      h.where = where;
      h.batch = s.batch;
      return;
    }
    try {
      push_held(r, where);
    } catch (...) {
      std::forward<Undo>(undo)();
      throw;
    }
  }

  /// Effects: forgets the hold `token` held in `mode`. Returns: false (after reporting
  /// unlock_not_held) if the calling thread does not hold it so; the caller must not release then.
  static bool forget(const void* token, hold_mode mode, const char* name, const source_location& where) {
    held_stack& s = this_thread_held();
    if (s.depth != 0 && s.e[s.depth - 1].req.token == token && s.e[s.depth - 1].req.mode == mode) [[likely]] {
      --s.depth;
      return true;
    }
    return pop_held_slow(token, mode, name, where);
  }

  /// Effects: check(), acquire(), record() with undo on failure. Throws: as check() and record().
  template <class Acquire, class Undo>
  static void lock(const acquire_request& r, const source_location& where, Acquire&& acquire, Undo&& undo) {
    check(r, where);
    std::forward<Acquire>(acquire)();
    record(r, where, std::forward<Undo>(undo));
  }

  /// Effects: check_try(), then record() if try_acquire() succeeded. Returns: try_acquire()'s result.
  template <class TryAcquire, class Undo>
  static bool try_lock(const acquire_request& r, const source_location& where, TryAcquire&& try_acquire,
                       Undo&& undo) {
    check_try(r, where);
    if (!std::forward<TryAcquire>(try_acquire)()) return false;
    record(r, where, std::forward<Undo>(undo));
    return true;
  }

  /// Effects: forget(), then release() if the hold was recorded.
  template <class Release>
  static void unlock(const void* token, hold_mode mode, const char* name, const source_location& where,
                     Release&& release) {
    if (forget(token, mode, name, where)) std::forward<Release>(release)();
  }
};

/// checks_off: no check, no record; the composed forms are the mutex operations alone.
template <class Edges>
struct lock_core<checks_off, Edges> {
  static constexpr void check(const acquire_request&, const source_location&) noexcept {}
  static constexpr void check_try(const acquire_request&, const source_location&) noexcept {}
  template <class Undo>
  static constexpr void record(const acquire_request&, const source_location&, Undo&&) noexcept {}
  static constexpr bool forget(const void*, hold_mode, const char*, const source_location&) noexcept {
    return true;
  }
  template <class Acquire, class Undo>
  static constexpr void lock(const acquire_request&, const source_location&, Acquire&& acquire, Undo&&) {
    std::forward<Acquire>(acquire)();
  }
  template <class TryAcquire, class Undo>
  static constexpr bool try_lock(const acquire_request&, const source_location&, TryAcquire&& try_acquire, Undo&&) {
    return std::forward<TryAcquire>(try_acquire)();
  }
  template <class Release>
  static constexpr void unlock(const void*, hold_mode, const char*, const source_location&, Release&& release) {
    std::forward<Release>(release)();
  }
};

/// The members of a checked Lockable wrapping `Mutex`, on the core. `Derived` (a CRTP class, itself
/// a FAULTSAFE_CAPABILITY) provides `acquire_request request(hold_mode) const noexcept` naming this
/// lock (token and object: the Derived object). Every member takes the caller's source_location.
///
/// Thread-safety: as Mutex. Memory ordering: exactly that of Mutex (lock acquires, unlock releases).
template <class Derived, class Mutex, class Checks, class Edges = no_class_edges>
class FAULTSAFE_CAPABILITY("mutex") checked_mutex {
  using core = lock_core<Checks, Edges>;

 public:
  checked_mutex() noexcept(std::is_nothrow_default_constructible_v<Mutex>) = default;
  checked_mutex(const checked_mutex&) = delete;
  checked_mutex& operator=(const checked_mutex&) = delete;

  /// Effects: checks rank, recursion (and Edges), then blocks until the lock is held.
  /// Throws: what the handler throws; std::system_error(resource_deadlock_would_occur) if the thread
  /// already holds it and the handler returned; in both cases nothing is acquired.
  /// Complexity: O(locks held) beyond Mutex::lock().
  void lock(source_location where = source_location::current()) FAULTSAFE_ACQUIRE()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::lock(req(hold_mode::exclusive), where, [this] { m_.lock(); }, [this] { m_.unlock(); });
  }

  /// Effects: as lock() without blocking, without the rank check and without a class edge.
  /// Returns: true if acquired.
  [[nodiscard]] bool try_lock(source_location where = source_location::current()) FAULTSAFE_TRY_ACQUIRE(true)
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    return core::try_lock(req(hold_mode::exclusive), where, [this] { return m_.try_lock(); },
                          [this] { m_.unlock(); });
  }

  /// Effects: releases the lock (any order relative to other held locks). If the calling thread does
  /// not hold it (or holds it only shared), reports unlock_not_held and, if the handler returns,
  /// leaves Mutex untouched. Throws: what the handler throws.
  void unlock(source_location where = source_location::current()) FAULTSAFE_RELEASE()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::unlock(self(), hold_mode::exclusive, req(hold_mode::exclusive).name, where, [this] { m_.unlock(); });
  }

  /// Shared (reader) variants, when Mutex has them. A second read lock by the same thread is
  /// recursive_acquire (a writer queued between them deadlocks it); it proceeds if the handler returns.
  void lock_shared(source_location where = source_location::current())
    requires shared_lockable_mutex<Mutex> FAULTSAFE_ACQUIRE_SHARED() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::lock(req(hold_mode::shared), where, [this] { m_.lock_shared(); }, [this] { m_.unlock_shared(); });
  }

  [[nodiscard]] bool try_lock_shared(source_location where = source_location::current())
    requires shared_lockable_mutex<Mutex> FAULTSAFE_TRY_ACQUIRE_SHARED(true) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    return core::try_lock(req(hold_mode::shared), where, [this] { return m_.try_lock_shared(); },
                          [this] { m_.unlock_shared(); });
  }

  void unlock_shared(source_location where = source_location::current())
    requires shared_lockable_mutex<Mutex> FAULTSAFE_RELEASE_SHARED() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::unlock(self(), hold_mode::shared, req(hold_mode::shared).name, where, [this] { m_.unlock_shared(); });
  }

  /// The wrapped mutex (for condition variables and the like; bypasses the checks).
  [[nodiscard]] Mutex& underlying() noexcept { return m_; }

 private:
  [[nodiscard]] const Derived* self() const noexcept { return static_cast<const Derived*>(this); }
  [[nodiscard]] acquire_request req(hold_mode mode) const noexcept { return self()->request(mode); }

  Mutex m_;
};

}  // namespace faultsafe::detail
