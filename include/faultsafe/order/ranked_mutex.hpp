// faultsafe/order/ranked_mutex.hpp: mutexes with a compile-time rank, and the ordered helpers that
// take several locks at once.
//
// Defines
// - `ranked_mutex<Rank, Mutex = std::mutex, Checks = default_checks>`: a Lockable (and SharedLockable
//   when `Mutex` is) wrapping `Mutex`. With `checks_on`, acquiring it while the calling thread holds a
//   ranked lock whose rank is not strictly below `Rank` reports `rank_inversion`; re-acquiring it
//   reports `recursive_acquire`; releasing it when not held reports `unlock_not_held` (see
//   order/violation.hpp for what the handler may do). With `checks_off` it is exactly `Mutex`: same
//   size (static_assert below), every member an inline forwarder, no thread_local touched (proved by
//   tests/order_ranked_test.cpp, which runs the checks_off code path in a constant expression, where
//   a thread_local access would not compile). With checks on, its members are the one checking core's
//   (detail::checked_mutex, order/detail/lock_core.hpp) and record the caller's source_location.
// - `exclusive_guard<L>` / `shared_guard<L>`: annotated RAII guards (std::lock_guard and
//   std::shared_lock work too, but libstdc++'s are invisible to clang's -Wthread-safety analysis).
// - `lock_in_order(a, b, ...)`, `lock_in_order_at(where, a, b, ...)` and `ordered_lock_guard`: take
//   several locks (one rank or many) in the global order (rank, class, address); locks of one rank
//   may be held together only when taken this way.
//
// Contract
// - Lock order: ranks strictly increase along every thread's nesting (`faultsafe::rank` in config.hpp, the
//   README's lock hierarchy); try_lock
//   never blocks, so it does not check ranks (like lockdep's trylock), but the lock it takes counts
//   for later acquisitions.
// - Lifetime: a ranked_mutex must not be destroyed while held. Its name (constructor argument) must
//   outlive it (a string literal is the usual choice).
// - Thread-safety: as `Mutex`. The checks touch only the calling thread's held-lock stack.
// - Memory ordering: exactly that of `Mutex` (lock acquires, unlock releases); the checks add none.
// - Exceptions: a throwing violation handler leaves lock()/lock_shared() with nothing acquired.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../detail/held_locks.hpp"
#include "detail/lock_core.hpp"
#include "../source_location.hpp"
#include "../thread_annotations.hpp"

namespace faultsafe {

/// Where a lock sits in the global acquisition order used by lock_in_order(): rank first, then the
/// lock class (graph-only locks of rank 0), then the address. Smaller is taken first.
struct lock_order_key {
  unsigned rank = 0;
  std::uint64_t cls = 0;
  std::uintptr_t address = 0;
  friend constexpr bool operator<(const lock_order_key& a, const lock_order_key& b) noexcept {
    if (a.rank != b.rank) return a.rank < b.rank;
    if (a.cls != b.cls) return a.cls < b.cls;
    return a.address < b.address;
  }
};

namespace detail {

/// "ranked_mutex<R>" as a static NUL-terminated string, the default name of a ranked_mutex.
template <unsigned R>
struct default_rank_name {
  static constexpr std::array<char, 32> make() noexcept {
    std::array<char, 32> out{};
    const char prefix[] = "ranked_mutex<";
    std::size_t n = 0;
    for (std::size_t i = 0; prefix[i] != '\0'; ++i) out[n++] = prefix[i];
    char digits[12]{};
    std::size_t d = 0;
    unsigned v = R;
    do {
      digits[d++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (d > 0) out[n++] = digits[--d];
    out[n++] = '>';
    return out;
  }
  static constexpr std::array<char, 32> value = make();
};

}  // namespace detail

/// A mutex with a compile-time rank; see the header comment. The primary template is the checked one.
///
/// Thread-safety: as Mutex. Lock order: Rank, strictly increasing along each thread's nesting.
template <unsigned Rank, class Mutex = std::mutex, class Checks = default_checks>
class FAULTSAFE_CAPABILITY("mutex") ranked_mutex
    : public detail::checked_mutex<ranked_mutex<Rank, Mutex, Checks>, Mutex, Checks> {
  static_assert(Checks::enabled, "checks_off is the partial specialization below");
  friend class detail::checked_mutex<ranked_mutex, Mutex, Checks>;

 public:
  using mutex_type = Mutex;
  using checks_type = Checks;
  static constexpr unsigned rank = Rank;
  static constexpr bool checks_enabled = true;

  ranked_mutex() noexcept(std::is_nothrow_default_constructible_v<Mutex>) = default;
  /// Requires: `name` outlives *this (a string literal). Effects: names this lock in reports.
  explicit ranked_mutex(const char* name) noexcept(std::is_nothrow_default_constructible_v<Mutex>)
      : name_(name) {}

  // lock / try_lock / unlock and the shared variants: detail::checked_mutex (order/detail/lock_core.hpp).

  /// The name used in reports.
  [[nodiscard]] const char* name() const noexcept { return name_; }
  /// This lock's place in the order used by lock_in_order().
  [[nodiscard]] lock_order_key order_key() const noexcept {
    return {Rank, 0, reinterpret_cast<std::uintptr_t>(this)};
  }

 private:
  [[nodiscard]] detail::acquire_request request(detail::hold_mode mode) const noexcept {
    return detail::self_request(this, name_, Rank, mode);
  }

  const char* name_ = detail::default_rank_name<Rank>::value.data();
};

/// checks_off: exactly Mutex. Every member is a constexpr inline forwarder (constexpr so that a test
/// can evaluate the whole code path in a constant expression, which proves it touches no
/// thread_local). Same layout as Mutex (static_assert after the class).
template <unsigned Rank, class Mutex>
class FAULTSAFE_CAPABILITY("mutex") ranked_mutex<Rank, Mutex, checks_off> {
 public:
  using mutex_type = Mutex;
  using checks_type = checks_off;
  static constexpr unsigned rank = Rank;
  static constexpr bool checks_enabled = false;

  constexpr ranked_mutex() noexcept(std::is_nothrow_default_constructible_v<Mutex>) = default;
  constexpr explicit ranked_mutex(const char*) noexcept(std::is_nothrow_default_constructible_v<Mutex>) {}
  ranked_mutex(const ranked_mutex&) = delete;
  ranked_mutex& operator=(const ranked_mutex&) = delete;

  constexpr void lock() FAULTSAFE_ACQUIRE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS { m_.lock(); }
  [[nodiscard]] constexpr bool try_lock() FAULTSAFE_TRY_ACQUIRE(true) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    return m_.try_lock();
  }
  constexpr void unlock() FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS { m_.unlock(); }

  constexpr void lock_shared()
    requires shared_lockable_mutex<Mutex> FAULTSAFE_ACQUIRE_SHARED() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    m_.lock_shared();
  }
  [[nodiscard]] constexpr bool try_lock_shared()
    requires shared_lockable_mutex<Mutex> FAULTSAFE_TRY_ACQUIRE_SHARED(true) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    return m_.try_lock_shared();
  }
  constexpr void unlock_shared()
    requires shared_lockable_mutex<Mutex> FAULTSAFE_RELEASE_SHARED() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    m_.unlock_shared();
  }

  [[nodiscard]] constexpr const char* name() const noexcept { return detail::default_rank_name<Rank>::value.data(); }
  [[nodiscard]] lock_order_key order_key() const noexcept {
    return {Rank, 0, reinterpret_cast<std::uintptr_t>(this)};
  }
  [[nodiscard]] constexpr Mutex& underlying() noexcept { return m_; }

 private:
  Mutex m_;
};

static_assert(sizeof(ranked_mutex<10, std::mutex, checks_off>) == sizeof(std::mutex));
static_assert(alignof(ranked_mutex<10, std::mutex, checks_off>) == alignof(std::mutex));

// ---- guards -------------------------------------------------------------------------------------

/// RAII exclusive guard visible to clang's thread-safety analysis. Records the caller's location.
template <class Lockable>
class FAULTSAFE_SCOPED_CAPABILITY exclusive_guard {
 public:
  /// Effects: l.lock() (with the caller's source location when l takes one). Throws: what lock() throws.
  explicit exclusive_guard(Lockable& l, source_location where = source_location::current()) FAULTSAFE_ACQUIRE(l)
      : l_(l) {
    if constexpr (requires { l.lock(where); })
      l.lock(where);
    else
      l.lock();
  }
  ~exclusive_guard() FAULTSAFE_RELEASE() { l_.unlock(); }
  exclusive_guard(const exclusive_guard&) = delete;
  exclusive_guard& operator=(const exclusive_guard&) = delete;

 private:
  Lockable& l_;
};

/// RAII shared (reader) guard visible to clang's thread-safety analysis.
template <class Lockable>
class FAULTSAFE_SCOPED_CAPABILITY shared_guard {
 public:
  explicit shared_guard(Lockable& l, source_location where = source_location::current()) FAULTSAFE_ACQUIRE_SHARED(l)
      : l_(l) {
    if constexpr (requires { l.lock_shared(where); })
      l.lock_shared(where);
    else
      l.lock_shared();
  }
  ~shared_guard() FAULTSAFE_RELEASE() { l_.unlock_shared(); }
  shared_guard(const shared_guard&) = delete;
  shared_guard& operator=(const shared_guard&) = delete;

 private:
  Lockable& l_;
};

// ---- ordered acquisition of several locks ---------------------------------------------------------

namespace detail {

template <class L>
[[nodiscard]] lock_order_key order_key_of(const L& l) noexcept {
  if constexpr (requires { { l.order_key() } -> std::convertible_to<lock_order_key>; })
    return l.order_key();
  else
    return {0, 0, reinterpret_cast<std::uintptr_t>(&l)};
}

template <class L>
inline constexpr bool is_checked_lock = requires { requires L::checks_enabled; };

struct ordered_entry {
  lock_order_key key;
  void* lock_object;
  void (*lock)(void*, const source_location&);
  void (*unlock)(void*);
};

template <class L>
struct ordered_ops {
  static void lock(void* p, const source_location& where) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    L& x = *static_cast<L*>(p);
    if constexpr (requires { x.lock(where); })
      x.lock(where);
    else
      x.lock();
  }
  static void unlock(void* p) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS { static_cast<L*>(p)->unlock(); }
};

template <class L>
ordered_entry make_ordered_entry(L& l) noexcept {
  return {order_key_of(l), static_cast<void*>(std::addressof(l)), &ordered_ops<L>::lock, &ordered_ops<L>::unlock};
}

/// Sorts `e` by key and locks each in that order inside one ordered scope (when any is checked);
/// on an exception releases what it took (in reverse) and rethrows.
template <bool AnyChecked, std::size_t N>
void lock_entries(std::array<ordered_entry, N>& e, const source_location& where) {
  for (std::size_t i = 1; i < N; ++i)  // insertion sort: n is tiny
    for (std::size_t j = i; j > 0 && e[j].key < e[j - 1].key; --j) std::swap(e[j], e[j - 1]);
  std::optional<ordered_scope> scope;
  if constexpr (AnyChecked) scope.emplace();
  std::size_t taken = 0;
  try {
    for (; taken < N; ++taken) e[taken].lock(e[taken].lock_object, where);
  } catch (...) {
    while (taken > 0) {
      --taken;
      e[taken].unlock(e[taken].lock_object);
    }
    throw;
  }
}

}  // namespace detail

/// Effects: acquires every lock in `locks`, in ascending lock_order_key (rank, then lock class, then
/// address), inside one ordered scope, so locks of one rank (or one lock class) may be held together
/// without a violation. Locks already held from before still count: taking a rank below or equal to
/// one of them is still rank_inversion. Release the locks individually, in any order.
/// Throws: what any lock() throws; the locks taken by this call are then released (in reverse) first.
/// Complexity: O(n^2) comparisons for n locks (n is small), plus n acquisitions.
/// Thread-safety: as the locks. Clang's analysis cannot see variadic acquisitions: see ordered_lock_guard.
template <class... Locks>
void lock_in_order_at(const source_location& where, Locks&... locks) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
  static_assert(sizeof...(Locks) > 0, "lock_in_order needs at least one lock");
  std::array<detail::ordered_entry, sizeof...(Locks)> e{detail::make_ordered_entry(locks)...};
  detail::lock_entries<(detail::is_checked_lock<Locks> || ...)>(e, where);
}

/// As lock_in_order_at(), with this header as the reported location (use lock_in_order_at() or
/// ordered_lock_guard to record the caller's).
template <class... Locks>
void lock_in_order(Locks&... locks) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
  lock_in_order_at(source_location::current(), locks...);
}

/// RAII: lock_in_order() on construction (recording the caller's location), unlock of each on
/// destruction. Clang's analysis: the 1-, 2- and 3-lock forms are annotated; longer ones are not
/// (clang cannot expand a pack inside an attribute).
template <class... Locks>
class ordered_lock_guard {
 public:
  explicit ordered_lock_guard(Locks&... locks, source_location where = source_location::current())
      : e_{detail::make_ordered_entry(locks)...} {
    detail::lock_entries<(detail::is_checked_lock<Locks> || ...)>(e_, where);
  }
  ~ordered_lock_guard() {
    for (std::size_t i = e_.size(); i-- > 0;) e_[i].unlock(e_[i].lock_object);
  }
  ordered_lock_guard(const ordered_lock_guard&) = delete;
  ordered_lock_guard& operator=(const ordered_lock_guard&) = delete;

 private:
  std::array<detail::ordered_entry, sizeof...(Locks)> e_;
};

template <class A, class B>
class FAULTSAFE_SCOPED_CAPABILITY ordered_lock_guard<A, B> {
 public:
  ordered_lock_guard(A& a, B& b, source_location where = source_location::current()) FAULTSAFE_ACQUIRE(a, b)
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS : a_(a), b_(b) {
    lock_in_order_at(where, a, b);
  }
  ~ordered_lock_guard() FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    b_.unlock();
    a_.unlock();
  }
  ordered_lock_guard(const ordered_lock_guard&) = delete;
  ordered_lock_guard& operator=(const ordered_lock_guard&) = delete;

 private:
  A& a_;
  B& b_;
};

template <class A, class B, class C>
class FAULTSAFE_SCOPED_CAPABILITY ordered_lock_guard<A, B, C> {
 public:
  ordered_lock_guard(A& a, B& b, C& c, source_location where = source_location::current())
      FAULTSAFE_ACQUIRE(a, b, c) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS
      : a_(a), b_(b), c_(c) {
    lock_in_order_at(where, a, b, c);
  }
  ~ordered_lock_guard() FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    c_.unlock();
    b_.unlock();
    a_.unlock();
  }
  ordered_lock_guard(const ordered_lock_guard&) = delete;
  ordered_lock_guard& operator=(const ordered_lock_guard&) = delete;

 private:
  A& a_;
  B& b_;
  C& c_;
};

template <class... Locks>
ordered_lock_guard(Locks&...) -> ordered_lock_guard<Locks...>;

}  // namespace faultsafe
