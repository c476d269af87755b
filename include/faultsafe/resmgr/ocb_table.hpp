// faultsafe/resmgr/ocb_table.hpp: a server's table of open control blocks (OCBs).
//
// Defines `ocb_table`: handle -> OCB for one server, with per-client open accounting.
//
// Handles (resmgr/detail/pinned_table.hpp): a handle names a slot (index + 1 in the low 24 bits) and a
// generation above them, so a closed handle never comes back, even when its slot is reused. A message
// pins its OCB's slot with one atomic increment (find()) while its handler runs and unpins it just
// before the reply: no mutex, no shared_ptr copy. A close (remove()) makes the handle EBADF for every
// find() after it; the OCB itself lives until the last pin is gone (then its last owner, maybe a server
// thread, destroys it). A handle used by another process than the one that opened it is not found.
// At most 2^24 handles are open at once (more installs fail with ENFILE).
// Per-client accounting: reserve() before an open handler runs (EMFILE past max_per_client), given
// back by unreserve() when the open fails, or by remove()/clear().
//
// Thread-safety: all members from any thread. Lock order: one rank::leaf ranked_mutex (install, remove,
// accounting; find() takes none), never held while calling a handler, sending or waiting.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "../order/ranked_mutex.hpp"
#include "../thread_annotations.hpp"
#include "detail/pinned_table.hpp"
#include "messages.hpp"

namespace faultsafe {

class ocb_table {
 public:
  /// One open: the OCB and its full handle.
  struct entry {
    std::shared_ptr<ocb_base> ocb;
    std::uint64_t handle = 0;
  };
  using pin = detail::pinned_table<entry>::pin;

  /// `max_per_client`: most handles (and opens in progress) per client pid; 0 = no limit.
  explicit ocb_table(std::size_t max_per_client) : max_per_client_(max_per_client) {}
  ocb_table(const ocb_table&) = delete;
  ocb_table& operator=(const ocb_table&) = delete;

  /// Effects: reserves one open for client `pid`. Returns false (EMFILE) when it holds max_per_client.
  [[nodiscard]] bool reserve(std::uint64_t pid) {
    exclusive_guard g(mu_);
    std::size_t& n = opens_by_pid_[pid];
    if (max_per_client_ != 0 && n >= max_per_client_) return false;
    ++n;
    return true;
  }
  /// Effects: gives back a reservation of `pid` (an open that failed).
  void unreserve(std::uint64_t pid) {
    exclusive_guard g(mu_);
    unreserve_locked(pid);
  }

  /// Effects: installs `o` (its owner_pid set, a reservation held) and returns its new handle.
  /// Errors (handle 0): ENFILE (2^24 open), ENOMEM (the table could not grow). The reservation stays
  /// either way.
  [[nodiscard]] std::uint64_t install(std::shared_ptr<ocb_base> o, std::error_code& ec) {
    exclusive_guard g(mu_);
    try {
      const std::uint64_t h = install_locked(std::move(o));
      ec = h == 0 ? std::make_error_code(std::errc::too_many_files_open_in_system) : std::error_code{};
      return h;
    } catch (const std::bad_alloc&) {
      ec = std::make_error_code(std::errc::not_enough_memory);
      return 0;
    }
  }

  /// The open OCB `handle` of client `pid`, pinned, or an empty pin (EBADF). No lock.
  [[nodiscard]] pin find(std::uint64_t handle, std::uint64_t pid) const noexcept {
    const std::uint64_t idx1 = handle & index_mask;
    if (idx1 == 0) return {};
    pin p = ocbs_.find(static_cast<std::size_t>(idx1 - 1));
    if (!p || p->handle != handle || p->ocb->owner_pid != pid) return {};
    return p;
  }

  /// Effects: closes `handle` if `pid` owns it and gives back its reservation; returns its OCB
  /// (nullptr: EBADF). The caller's reference may be the last: destroy it outside any lock.
  [[nodiscard]] std::shared_ptr<ocb_base> remove(std::uint64_t handle, std::uint64_t pid) {
    exclusive_guard g(mu_);
    pin p = find(handle, pid);
    if (!p || !p.close()) return nullptr;
    std::shared_ptr<ocb_base> o = p->ocb;  // ours: the slot's reference goes with its last pin
    --open_count_;
    unreserve_locked(pid);
    if (free_slots_.size() < free_slots_.capacity())  // reserved by install: no allocation here
      free_slots_.push_back(static_cast<std::uint32_t>((handle & index_mask) - 1));
    return o;
  }

  /// Effects: closes every handle and drops every reservation (server stop). The OCBs die with their
  /// last pin (messages still being served keep theirs), after the table's lock is released.
  void clear() {
    std::vector<std::shared_ptr<ocb_base>> dead;  // destroyed after the lock
    exclusive_guard g(mu_);
    for (std::uint32_t i = 0; i < next_index_; ++i) {
      pin p = ocbs_.find(i);
      if (p && p.close()) {
        free_slots_.push_back(i);  // capacity reserved by install
        try {
          dead.push_back(p->ocb);
        } catch (const std::bad_alloc&) {  // then destroyed right here (at the pin's reset)
        }
      }
    }
    open_count_ = 0;
    opens_by_pid_.clear();
  }

  /// Handles open now.
  [[nodiscard]] std::size_t open_count() const {
    exclusive_guard g(mu_);
    return open_count_;
  }

 private:
  static constexpr unsigned index_bits = 24;
  static constexpr std::uint64_t index_mask = (std::uint64_t{1} << index_bits) - 1;

  void unreserve_locked(std::uint64_t pid) FAULTSAFE_REQUIRES(mu_) {
    auto it = opens_by_pid_.find(pid);
    if (it != opens_by_pid_.end() && --it->second == 0) opens_by_pid_.erase(it);
  }

  // Effects: puts `o` into a free slot and returns its new handle, or 0 (ENFILE: 2^24 open).
  // Requires: mu_. Throws: std::bad_alloc (the table or the free list could not grow).
  std::uint64_t install_locked(std::shared_ptr<ocb_base> o) FAULTSAFE_REQUIRES(mu_) {
    entry e{std::move(o), 0};
    // Closed slots first (newest first); one still pinned by a message being served is skipped.
    for (std::size_t t = free_slots_.size(), tries = 0; t-- > 0 && tries < 8; ++tries) {
      const std::uint32_t idx = free_slots_[t];
      if (!ocbs_.looks_free(idx)) continue;
      e.handle = (next_gen_ << index_bits) | (std::uint64_t{idx} + 1);
      const std::uint64_t h = e.handle;
      if (!ocbs_.install(idx, std::move(e))) continue;  // moves e only on success
      free_slots_[t] = free_slots_.back();
      free_slots_.pop_back();
      ++next_gen_;
      ++open_count_;
      return h;
    }
    if (next_index_ >= index_mask) return 0;
    // Every slot ever used may sit in free_slots_ at once: reserve now, so close never allocates.
    if (free_slots_.capacity() < std::size_t{next_index_} + 1)
      free_slots_.reserve(std::max<std::size_t>(64, 2 * free_slots_.capacity()));
    ocbs_.ensure_capacity(std::size_t{next_index_} + 1);
    const std::uint32_t idx = next_index_;
    e.handle = (next_gen_ << index_bits) | (std::uint64_t{idx} + 1);
    const std::uint64_t h = e.handle;
    if (!ocbs_.install(idx, std::move(e))) return 0;  // cannot happen: a never-used slot has no pin
    ++next_index_;
    ++next_gen_;
    ++open_count_;
    return h;
  }

  const std::size_t max_per_client_;
  mutable ranked_mutex<rank::leaf> mu_{"server ocbs"};  // installing/closing in ocbs_ (lookups take no lock)
  detail::pinned_table<entry> ocbs_;
  std::unordered_map<std::uint64_t, std::size_t> opens_by_pid_ FAULTSAFE_GUARDED_BY(mu_);  // open handles (and opens in progress) per pid
  std::vector<std::uint32_t> free_slots_ FAULTSAFE_GUARDED_BY(mu_);  // closed slot indices (maybe still pinned); capacity >= next_index_
  std::uint32_t next_index_ FAULTSAFE_GUARDED_BY(mu_) = 0;  // slots [0, next_index_) have been used
  std::uint64_t next_gen_ FAULTSAFE_GUARDED_BY(mu_) = 1;    // generation of the next handle (never 0)
  std::size_t open_count_ FAULTSAFE_GUARDED_BY(mu_) = 0;
};

}  // namespace faultsafe
