// faultsafe/activity/activity.hpp: on whose behalf a thread works.
//
// An activity is one client request chain. A client thread's requests carry its current activity; the
// server thread that serves a request adopts it (activity_scope) for exactly as long as it serves; a
// fault that thread takes is on behalf of that activity, and so is the pager's page-in request for the
// fault. Range locks record the activity that owns each range, so the fault-reentrancy guard can tell
// "waits only on itself" (Brian's lock-up) from ordinary contention.
//
// A thread that adopted nothing works for its own implicit activity, distinct from every other
// thread's and from every id new_activity() returns (implicit ids have the top bit set).
//
// Thread-safety: all functions act on the calling thread only; new_activity() is safe from any thread.
// Lock order: none taken. Memory ordering: relaxed counter; ids carry no data.
#pragma once

#include <atomic>
#include <cstdint>

#include "../detail/thread_record.hpp"

namespace faultsafe {

inline constexpr activity_id implicit_activity_bit = activity_id{1} << 63;

/// Effects: a fresh activity id, never returned before in this process. Complexity: O(1).
[[nodiscard]] inline activity_id new_activity() noexcept {
  static std::atomic<activity_id> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

/// The activity the calling thread works for: the one it adopted, else its own implicit one.
[[nodiscard]] inline activity_id current_activity() noexcept {
  const auto& rec = detail::this_thread_record();
  return rec.activity != 0 ? rec.activity : (implicit_activity_bit | rec.id);
}

/// True if `a` is a thread's implicit activity rather than one made by new_activity().
[[nodiscard]] constexpr bool is_implicit(activity_id a) noexcept { return (a & implicit_activity_bit) != 0; }

/// RAII: the calling thread works for `a` until the scope ends, then for what it worked for before.
/// Scopes nest. Requires: destroyed on the thread that made it.
class activity_scope {
 public:
  explicit activity_scope(activity_id a) noexcept : prev_(detail::this_thread_record().activity) {
    detail::this_thread_record().activity = a;
  }
  ~activity_scope() { detail::this_thread_record().activity = prev_; }
  activity_scope(const activity_scope&) = delete;
  activity_scope& operator=(const activity_scope&) = delete;

 private:
  activity_id prev_;
};

}  // namespace faultsafe
