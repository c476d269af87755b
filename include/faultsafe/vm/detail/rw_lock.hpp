// faultsafe/vm/detail/rw_lock.hpp: the reader/writer lock with a compile-time rank used by vm/
// (internal).
//
// `vm_rw_lock<Rank>` is a std::shared_timed_mutex whose acquisitions are checked against the calling
// thread's held-lock stack when FAULTSAFE_CHECKS is on, through the same checking core as
// ranked_mutex<Rank, std::shared_mutex> (order/detail/lock_core.hpp): rank order and recursion, with
// the caller's source_location (the holds below forward theirs). It is also a `waitable` of the
// wait-for graph (activity/wait_graph.hpp): it keeps the faultsafe ids of its holders (exclusive holder
// or readers), and a contended acquisition records a lock wait, polls the graph every
// wait_graph::recheck_interval(), and gives up with std::system_error(EDEADLK) when the graph breaks a
// reported cycle at this wait (Colin's lock-up under aspace_options::single_lock). Every blocking
// acquisition is also reported to the vm_wait_hook (vm/detail/wait_hooks.hpp).
//
// Thread-safety: as std::shared_mutex. Lock order: Rank; the holder list has an internal leaf mutex
// (taken by the graph's scans, never while blocking). Lifetime: must not be destroyed while held;
// `name` must outlive it. Memory ordering: that of the mutex; the holder list is guarded by its leaf.
// Uncontended cost over the mutex: the rank check (checks on) and one leaf lock/unlock for the holder
// list.
#pragma once

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <vector>

#include "../../activity/wait_graph.hpp"
#include "../../config.hpp"
#include "../../detail/held_locks.hpp"
#include "../../order/detail/lock_core.hpp"
#include "../../order/ranked_mutex.hpp"
#include "../../detail/thread_record.hpp"
#include "../../source_location.hpp"
#include "../../thread_annotations.hpp"
#include "wait_hooks.hpp"

namespace faultsafe::detail {

template <unsigned Rank>
class FAULTSAFE_CAPABILITY("mutex") vm_rw_lock final : public waitable {
 public:
  static constexpr unsigned rank = Rank;
  explicit vm_rw_lock(const char* name) noexcept : name_(name) {}
  vm_rw_lock(const vm_rw_lock&) = delete;
  vm_rw_lock& operator=(const vm_rw_lock&) = delete;

  /// Effects: the core's checks (order/detail/lock_core.hpp) with the caller's `where`, then blocks
  /// until held exclusively. Throws: std::system_error(EDEADLK) if the wait-for graph breaks a cycle at
  /// this wait (nothing is then held); what the violation handler throws (nothing is then held).
  void lock(source_location where = source_location::current()) FAULTSAFE_ACQUIRE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::lock(request(hold_mode::exclusive), where, [this] { acquire(false); }, [this] { release(false); });
  }
  /// Effects: releases the exclusive hold. Not held so: reports unlock_not_held and leaves the lock alone.
  void unlock(source_location where = source_location::current()) FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::unlock(this, hold_mode::exclusive, name_, where, [this] { release(false); });
  }
  /// Effects, Throws: as lock(), for a shared hold.
  void lock_shared(source_location where = source_location::current()) FAULTSAFE_ACQUIRE_SHARED()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::lock(request(hold_mode::shared), where, [this] { acquire(true); }, [this] { release(true); });
  }
  /// Effects: as unlock(), for a shared hold.
  void unlock_shared(source_location where = source_location::current()) FAULTSAFE_RELEASE_SHARED()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    core::unlock(this, hold_mode::shared, name_, where, [this] { release(true); });
  }
  [[nodiscard]] const char* name() const noexcept { return name_; }

  // ---- waitable ----
  void wait_holders(std::vector<std::uint32_t>& threads) const override {
    exclusive_guard g(holders_mu_);
    threads.insert(threads.end(), holders_.begin(), holders_.end());
  }
  [[nodiscard]] std::string wait_name() const override {
    return std::string("'") + name_ + "' (rank " + std::to_string(Rank) + ")";
  }

 private:
  using core = lock_core<default_checks>;

  // Blocks until held (shared or exclusive), as a recorded lock wait when contended; then lists the
  // calling thread as a holder. Throws: as lock(); nothing is then held.
  void acquire(bool shared) {
    const bool got = shared ? m_.try_lock_shared() : m_.try_lock();
    if (!got) {
      vm_wait_scope w(shared ? vm_wait_kind::lock_shared : vm_wait_kind::lock_exclusive, this, name_);
      wait_scope ws(*this, wait_kind::lock, name_);
      if (ws.deadlocked()) throw_deadlock();
      while (!(shared ? m_.try_lock_shared_for(wait_graph::recheck_interval())
                      : m_.try_lock_for(wait_graph::recheck_interval())))
        if (ws.poll()) throw_deadlock();
    }
    try {
      add_holder();  // its leaf lock is checked too: a throwing handler (or bad_alloc) lands here
    } catch (...) {
      if (shared)
        m_.unlock_shared();
      else
        m_.unlock();
      throw;
    }
  }
  void release(bool shared) noexcept {
    remove_holder();
    if (shared)
      m_.unlock_shared();
    else
      m_.unlock();
  }
  [[noreturn]] void throw_deadlock() const {
    throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                            std::string("faultsafe: wait for '") + name_ + "' broken by the wait-for graph");
  }
  void add_holder() {
    const std::uint32_t me = this_thread_id();
    exclusive_guard g(holders_mu_);
    holders_.push_back(me);
  }
  void remove_holder() noexcept {
    const std::uint32_t me = this_thread_id();
    exclusive_guard g(holders_mu_);
    auto it = std::find(holders_.begin(), holders_.end(), me);
    if (it != holders_.end()) {
      *it = holders_.back();
      holders_.pop_back();
    }
  }
  acquire_request request(hold_mode mode) const noexcept { return self_request(this, name_, Rank, mode); }
  std::shared_timed_mutex m_;
  const char* name_;
  mutable ranked_mutex<rank::leaf> holders_mu_{"vm lock holders"};  // leaf: holders_
  std::vector<std::uint32_t> holders_ FAULTSAFE_GUARDED_BY(holders_mu_);  // faultsafe ids of the threads holding m_ (any mode)
};

/// RAII shared hold of a vm_rw_lock. Records the caller's source_location (reports name the call
/// site that took the hold, not this header).
template <class L>
class FAULTSAFE_SCOPED_CAPABILITY vm_shared_hold {
 public:
  explicit vm_shared_hold(L& l, source_location where = source_location::current()) FAULTSAFE_ACQUIRE_SHARED(l)
      : l_(l), where_(where) {
    l_.lock_shared(where);
  }
  ~vm_shared_hold() FAULTSAFE_RELEASE() { l_.unlock_shared(where_); }
  vm_shared_hold(const vm_shared_hold&) = delete;
  vm_shared_hold& operator=(const vm_shared_hold&) = delete;

 private:
  L& l_;
  source_location where_;
};

/// RAII exclusive hold of a vm_rw_lock. Records the caller's source_location.
template <class L>
class FAULTSAFE_SCOPED_CAPABILITY vm_exclusive_hold {
 public:
  explicit vm_exclusive_hold(L& l, source_location where = source_location::current()) FAULTSAFE_ACQUIRE(l)
      : l_(l), where_(where) {
    l_.lock(where);
  }
  ~vm_exclusive_hold() FAULTSAFE_RELEASE() { l_.unlock(where_); }
  vm_exclusive_hold(const vm_exclusive_hold&) = delete;
  vm_exclusive_hold& operator=(const vm_exclusive_hold&) = delete;

 private:
  L& l_;
  source_location where_;
};

}  // namespace faultsafe::detail
