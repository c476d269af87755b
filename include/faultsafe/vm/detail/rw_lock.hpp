// faultsafe/vm/detail/rw_lock.hpp: the reader/writer lock with a compile-time rank used by vm/
// (internal).
//
// `vm_rw_lock<Rank>` is a std::shared_timed_mutex whose acquisitions are checked against the calling
// thread's held-lock stack (detail/held_locks.hpp) when FAULTSAFE_CHECKS is on: rank order and
// recursion, exactly like ranked_mutex<Rank, std::shared_mutex>. It is also a `waitable` of the
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

  /// Throws: std::system_error(EDEADLK) if the wait-for graph breaks a cycle at this wait (nothing
  /// is then held); what the violation handler throws.
  void lock(source_location where = source_location::current()) FAULTSAFE_ACQUIRE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) check_acquire(request(hold_mode::exclusive), where);
    if (!m_.try_lock()) {
      vm_wait_scope w(vm_wait_kind::lock_exclusive, this, name_);
      wait_scope ws(*this, wait_kind::lock, name_);
      if (ws.deadlocked()) throw_deadlock();
      while (!m_.try_lock_for(wait_graph::recheck_interval()))
        if (ws.poll()) throw_deadlock();
      add_holder();
    } else {
      add_holder();
    }
    if constexpr (default_checks::enabled) push_held(request(hold_mode::exclusive), where);
  }
  void unlock(source_location where = source_location::current()) FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) {
      if (!pop_held(this, name_, where)) return;
    }
    remove_holder();
    m_.unlock();
  }
  void lock_shared(source_location where = source_location::current()) FAULTSAFE_ACQUIRE_SHARED()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) check_acquire(request(hold_mode::shared), where);
    if (!m_.try_lock_shared()) {
      vm_wait_scope w(vm_wait_kind::lock_shared, this, name_);
      wait_scope ws(*this, wait_kind::lock, name_);
      if (ws.deadlocked()) throw_deadlock();
      while (!m_.try_lock_shared_for(wait_graph::recheck_interval()))
        if (ws.poll()) throw_deadlock();
    }
    add_holder();
    if constexpr (default_checks::enabled) push_held(request(hold_mode::shared), where);
  }
  void unlock_shared(source_location where = source_location::current()) FAULTSAFE_RELEASE_SHARED()
      FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (default_checks::enabled) {
      if (!pop_held(this, name_, where)) return;
    }
    remove_holder();
    m_.unlock_shared();
  }
  [[nodiscard]] const char* name() const noexcept { return name_; }

  // ---- waitable ----
  void wait_holders(std::vector<std::uint32_t>& threads) const override {
    std::lock_guard<std::mutex> g(holders_mu_);
    threads.insert(threads.end(), holders_.begin(), holders_.end());
  }
  [[nodiscard]] std::string wait_name() const override {
    return std::string("'") + name_ + "' (rank " + std::to_string(Rank) + ")";
  }

 private:
  [[noreturn]] void throw_deadlock() const {
    throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                            std::string("faultsafe: wait for '") + name_ + "' broken by the wait-for graph");
  }
  void add_holder() {
    const std::uint32_t me = this_thread_id();
    std::lock_guard<std::mutex> g(holders_mu_);
    holders_.push_back(me);
  }
  void remove_holder() noexcept {
    const std::uint32_t me = this_thread_id();
    std::lock_guard<std::mutex> g(holders_mu_);
    auto it = std::find(holders_.begin(), holders_.end(), me);
    if (it != holders_.end()) {
      *it = holders_.back();
      holders_.pop_back();
    }
  }
  acquire_request request(hold_mode mode) const noexcept {
    acquire_request r;
    r.token = this;
    r.object = this;
    r.name = name_;
    r.rank = Rank;
    r.mode = mode;
    return r;
  }
  std::shared_timed_mutex m_;
  const char* name_;
  mutable std::mutex holders_mu_;       // leaf: holders_
  std::vector<std::uint32_t> holders_;  // faultsafe ids of the threads holding m_ (any mode)
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
