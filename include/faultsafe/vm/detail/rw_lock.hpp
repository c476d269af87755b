// faultsafe/vm/detail/rw_lock.hpp: the reader/writer lock with a compile-time rank used by vm/
// (internal).
//
// `vm_rw_lock<Rank>` is a std::shared_mutex whose acquisitions are checked against the calling
// thread's held-lock stack (detail/held_locks.hpp) when FAULTSAFE_CHECKS is on: rank order and
// recursion, exactly like ranked_mutex<Rank, std::shared_mutex>; with checks off it is a
// std::shared_mutex plus a name pointer. Every blocking acquisition goes through
// vm_wait_hooks (vm/detail/wait_hooks.hpp) so a wait-for graph can see "thread T waits for lock L".
//
// Thread-safety: as std::shared_mutex. Lock order: Rank. Lifetime: must not be destroyed while held;
// `name` must outlive it. Memory ordering: that of std::shared_mutex.
#pragma once

#include <shared_mutex>

#include "../../config.hpp"
#include "../../detail/held_locks.hpp"
#include "../../source_location.hpp"
#include "../../thread_annotations.hpp"
#include "wait_hooks.hpp"

namespace faultsafe::detail {

template <unsigned Rank>
class FAULTSAFE_CAPABILITY("mutex") vm_rw_lock {
 public:
  static constexpr unsigned rank = Rank;
  explicit vm_rw_lock(const char* name) noexcept : name_(name) {}
  vm_rw_lock(const vm_rw_lock&) = delete;
  vm_rw_lock& operator=(const vm_rw_lock&) = delete;

  void lock(source_location where = source_location::current()) FAULTSAFE_ACQUIRE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) check_acquire(request(hold_mode::exclusive), where);
    if (!m_.try_lock()) {
      vm_wait_scope w(vm_wait_kind::lock_exclusive, this, name_);
      m_.lock();
    }
    if constexpr (default_checks::enabled) push_held(request(hold_mode::exclusive), where);
  }
  void unlock(source_location where = source_location::current()) FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) {
      if (!pop_held(this, name_, where)) return;
    }
    m_.unlock();
  }
  void lock_shared(source_location where = source_location::current()) FAULTSAFE_ACQUIRE_SHARED()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) check_acquire(request(hold_mode::shared), where);
    if (!m_.try_lock_shared()) {
      vm_wait_scope w(vm_wait_kind::lock_shared, this, name_);
      m_.lock_shared();
    }
    if constexpr (default_checks::enabled) push_held(request(hold_mode::shared), where);
  }
  void unlock_shared(source_location where = source_location::current()) FAULTSAFE_RELEASE_SHARED()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) {
      if (!pop_held(this, name_, where)) return;
    }
    m_.unlock_shared();
  }
  [[nodiscard]] const char* name() const noexcept { return name_; }

 private:
  acquire_request request(hold_mode mode) const noexcept {
    acquire_request r;
    r.token = this;
    r.object = this;
    r.name = name_;
    r.rank = Rank;
    r.mode = mode;
    return r;
  }
  std::shared_mutex m_;
  const char* name_;
};

/// RAII shared hold of a vm_rw_lock.
template <class L>
class FAULTSAFE_SCOPED_CAPABILITY vm_shared_hold {
 public:
  explicit vm_shared_hold(L& l) FAULTSAFE_ACQUIRE_SHARED(l) : l_(l) { l_.lock_shared(); }
  ~vm_shared_hold() FAULTSAFE_RELEASE() { l_.unlock_shared(); }
  vm_shared_hold(const vm_shared_hold&) = delete;
  vm_shared_hold& operator=(const vm_shared_hold&) = delete;

 private:
  L& l_;
};

/// RAII exclusive hold of a vm_rw_lock.
template <class L>
class FAULTSAFE_SCOPED_CAPABILITY vm_exclusive_hold {
 public:
  explicit vm_exclusive_hold(L& l) FAULTSAFE_ACQUIRE(l) : l_(l) { l_.lock(); }
  ~vm_exclusive_hold() FAULTSAFE_RELEASE() { l_.unlock(); }
  vm_exclusive_hold(const vm_exclusive_hold&) = delete;
  vm_exclusive_hold& operator=(const vm_exclusive_hold&) = delete;

 private:
  L& l_;
};

}  // namespace faultsafe::detail
