// faultsafe/detail/held_locks.hpp: each thread's stack of held locks and the rank/recursion checks
// shared by ranked_mutex, tracked_mutex and range_lock (internal).
//
// Every checked acquisition calls check_acquire() before it may block and push_held() once it holds the
// lock; every release calls pop_held(). Releases may happen in any order (not only LIFO).
//
// Rank rule: a lock of rank R > 0 may be acquired only if every ranked lock the thread holds has a rank
// strictly below R. Locks of one rank may be held together only when taken inside an ordered helper
// (`ordered_scope`), in strictly ascending (object, sub) key order; anything else is rank_inversion.
//
// Thread-safety: all state is thread_local; no function here touches another thread's stack.
// Lock order: none taken, except the violation handler's leaf lock when reporting.
#pragma once

#include <cstdint>
#include "../source_location.hpp"
#include <string>
#include <system_error>

#include "../config.hpp"
#include "../order/violation.hpp"
#include "thread_record.hpp"

namespace faultsafe {
class lock_class;

namespace detail {

enum class hold_mode : std::uint8_t { exclusive, shared };

/// What an acquisition is, for the checks. Strings must outlive the hold.
struct acquire_request {
  const void* token = nullptr;   ///< identifies this hold (a mutex: its address; a range: its guard)
  const void* object = nullptr;  ///< the lock instance
  std::uint64_t sub = 0;         ///< sub-key within the object (a range's offset), for ordering
  const char* name = "lock";     ///< name for reports
  unsigned rank = 0;             ///< 0 = not ranked
  const lock_class* cls = nullptr;
  hold_mode mode = hold_mode::exclusive;
  bool same_object_ok = false;   ///< range locks: several holds of one object are legal
};

struct held_lock {
  acquire_request req;
  source_location where;
  std::uint64_t batch = 0;  ///< the ordered helper call that took it; 0 = none
};

struct held_stack {
  held_lock e[FAULTSAFE_MAX_HELD_LOCKS];
  unsigned depth = 0;
  unsigned unrecorded = 0;  ///< holds that did not fit (reported as held_stack_overflow)
  std::uint64_t batch = 0;  ///< the current ordered helper call; 0 outside one
  std::uint64_t batches = 0;
};

inline held_stack& this_thread_held() noexcept {
  thread_local held_stack s;
  return s;
}

inline std::string describe_site(const source_location& w) {
  std::string s = w.file_name();
  s += ':';
  s += std::to_string(w.line());
  return s;
}

inline std::string describe_held(const held_lock& h) {
  std::string s = "'";
  s += h.req.name;
  s += "'";
  if (h.req.rank) s += " (rank " + std::to_string(h.req.rank) + ")";
  s += h.req.mode == hold_mode::shared ? " shared" : " exclusive";
  s += ", acquired at " + describe_site(h.where);
  return s;
}

inline bool key_less(const acquire_request& a, const acquire_request& b) noexcept {
  const auto ao = reinterpret_cast<std::uintptr_t>(a.object), bo = reinterpret_cast<std::uintptr_t>(b.object);
  return ao < bo || (ao == bo && a.sub < b.sub);
}

/// Effects: checks `r` against the calling thread's held locks; reports rank_inversion or
/// recursive_acquire through the violation handler. Throws: what the handler throws; and, if the
/// handler returns, std::system_error(resource_deadlock_would_occur) when `r` re-acquires an object
/// held exclusively (or exclusively re-acquires one held shared) and same_object_ok is false: that
/// acquisition would certainly self-deadlock. Complexity: O(depth).
inline void check_acquire(const acquire_request& r, const source_location& where) {
  held_stack& s = this_thread_held();
  for (unsigned i = 0; i < s.depth; ++i) {
    const held_lock& h = s.e[i];
    if (h.req.object == r.object && !r.same_object_ok) {
      const bool certain = h.req.mode == hold_mode::exclusive || r.mode == hold_mode::exclusive;
      violation v;
      v.kind = violation_kind::recursive_acquire;
      v.summary = "thread '" + thread_name(this_thread_id()) + "' acquires '" + r.name + "' (" +
                  (r.mode == hold_mode::shared ? "shared" : "exclusive") + ") at " + describe_site(where) +
                  " but already holds it" +
                  (certain ? ": this would self-deadlock"
                           : ": a read lock taken twice deadlocks as soon as a writer queues between them");
      v.details.push_back("held: " + describe_held(h));
      v.involved.emplace_back(r.name);
      report_violation(v);
      if (certain) throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur), v.summary);
      return;
    }
  }
  if (r.rank == 0) return;
  for (unsigned i = 0; i < s.depth; ++i) {
    const held_lock& h = s.e[i];
    if (h.req.rank == 0 || h.req.rank < r.rank) continue;
    if (h.req.rank == r.rank && s.batch != 0 && h.batch == s.batch && key_less(h.req, r)) continue;
    violation v;
    v.kind = violation_kind::rank_inversion;
    v.summary = "thread '" + thread_name(this_thread_id()) + "' acquires '" + r.name + "' (rank " +
                std::to_string(r.rank) + ") at " + describe_site(where) + " while holding '" + h.req.name +
                "' (rank " + std::to_string(h.req.rank) + ")" +
                (h.req.rank == r.rank ? "; locks of one rank must be taken together through lock_in_order()" : "");
    v.details.push_back("held: " + describe_held(h));
    v.details.push_back("wanted: '" + std::string(r.name) + "' (rank " + std::to_string(r.rank) + ") at " +
                        describe_site(where));
    v.involved.emplace_back(h.req.name);
    v.involved.emplace_back(r.name);
    report_violation(v);
    return;
  }
}

/// Effects: records that the calling thread now holds `r`. If the stack is full, reports
/// held_stack_overflow (the hold is then not recorded; later checks cannot see it). Throws: what the
/// handler throws (the caller must then release the lock it took).
inline void push_held(const acquire_request& r, const source_location& where) {
  held_stack& s = this_thread_held();
  if (s.depth < FAULTSAFE_MAX_HELD_LOCKS) {
    s.e[s.depth++] = held_lock{r, where, s.batch};
    return;
  }
  ++s.unrecorded;
  violation v;
  v.kind = violation_kind::held_stack_overflow;
  v.summary = "thread '" + thread_name(this_thread_id()) + "' holds more than " +
              std::to_string(FAULTSAFE_MAX_HELD_LOCKS) + " locks; '" + r.name + "' acquired at " +
              describe_site(where) + " is not tracked";
  v.involved.emplace_back(r.name);
  report_violation(v);
}

/// Effects: forgets the hold `token`. Returns false, after reporting unlock_not_held, if the calling
/// thread does not hold it. Throws: what the handler throws.
inline bool pop_held(const void* token, const char* name, const source_location& where) {
  held_stack& s = this_thread_held();
  for (unsigned i = s.depth; i-- > 0;) {
    if (s.e[i].req.token == token) {
      for (unsigned j = i + 1; j < s.depth; ++j) s.e[j - 1] = s.e[j];
      --s.depth;
      return true;
    }
  }
  if (s.unrecorded > 0) {  // may be one of the holds that did not fit
    --s.unrecorded;
    return true;
  }
  violation v;
  v.kind = violation_kind::unlock_not_held;
  v.summary = "thread '" + thread_name(this_thread_id()) + "' releases '" + name + "' at " + describe_site(where) +
              " but does not hold it";
  v.involved.emplace_back(name);
  report_violation(v);
  return false;
}

/// RAII: while alive, locks of one rank taken inside this scope may be held together if they are
/// taken in strictly ascending key order (used by lock_in_order() and range_lock's ordered
/// acquisition). Locks of that rank held from before the scope still forbid it. Scopes do not nest:
/// an inner scope starts a new batch and restores the outer one when it ends.
class ordered_scope {
 public:
  ordered_scope() noexcept : prev_(this_thread_held().batch) {
    held_stack& s = this_thread_held();
    s.batch = ++s.batches;
  }
  ~ordered_scope() { this_thread_held().batch = prev_; }
  ordered_scope(const ordered_scope&) = delete;
  ordered_scope& operator=(const ordered_scope&) = delete;

 private:
  std::uint64_t prev_;
};

}  // namespace detail
}  // namespace faultsafe
