// faultsafe/resmgr/detail/pinned_table.hpp: an index -> entry table whose lookups take no lock (internal).
//
// Defines `detail::pinned_table<Entry>`: the storage behind a process's fd table (resmgr/process.hpp)
// and a server's OCB table (resmgr/server.hpp). A lookup pins one slot with one atomic increment and
// unpins it with one atomic decrement; no mutex, no shared_ptr copy, no allocation.
//
// Model. Slots live in chunks that are never freed or moved before the table dies (chunk k holds
// 64 << k slots; the directory has 24 chunks, ~10^9 slots), so a slot's address is stable and a reader
// may touch its state word at any time. Each slot has one atomic word: flag bits and a pin count.
//   free       (0, plus transient pins)  nothing to read
//   installing (busy)                    one writer fills the entry; readers see "not open"
//   open       (open)                    readers that pinned it may read the entry until they unpin
//   closing    (closing)                 closed: no new reader gets it; the entry (and whatever it
//                                        owns, e.g. a shared_ptr) lives until the last pin goes
//   cleaning   (busy)                    the last unpinner resets the entry, then the slot is free
// A reader: pin (fetch_add, (1) acquire, pairs with (3)); if the old word has `open`, it may read the
// entry, which stays unchanged and alive while the pin is held, even if the slot is closed meanwhile;
// else it unpins at once. Unpin: fetch_sub, (2) acq_rel. Close: CAS open -> closing (4), by a thread
// that holds a pin itself, so exactly one close wins and the entry is cleaned at the last unpin (maybe
// the closer's). Cleaning: the thread whose unpin leaves `closing` with no pin CASes closing -> busy
// (5) (only one can: a transient pin makes the CAS fail and its own unpin retries), resets the entry,
// then clears busy (6) release. Install: CAS free (no pin at all) -> busy (7) acquire, pairs with (6),
// write the entry, then busy -> open (3) release.
//
// Guarantees. A closed index is never handed to a reader that pins after the close (its CAS (4)
// precedes the reader's increment in the word's modification order, so the reader sees `closing`).
// An entry is destroyed only after every reader that could see it unpinned. A slot that is still
// pinned after a close (a reader still works with the entry) is not free: install skips it.
//
// Thread-safety: pin()/close_pinned() from any thread, without locks. install()/reserve capacity: the
// owner serialises installers with its own mutex (several installers at once are still safe, but
// may pick the same index: only one CAS wins, the other reports "not free"). Cleaning runs the
// entry's destructor-like reset on the thread of the last unpin (a reader's thread).
// Lock order: none taken. Complexity: pin/unpin O(1); install O(1) per tried index.
// Memory: chunks are allocated on demand (std::bad_alloc from ensure_capacity) and freed by ~pinned_table.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace faultsafe::detail {

template <class Entry>
class pinned_table {
 public:
  static constexpr std::uint32_t flag_open = 1u << 31;
  static constexpr std::uint32_t flag_closing = 1u << 30;
  static constexpr std::uint32_t flag_busy = 1u << 29;
  static constexpr std::uint32_t pin_mask = flag_busy - 1;
  static constexpr std::size_t first_chunk = 64;
  static constexpr unsigned max_chunks = 24;
  /// Most slots a table can have.
  static constexpr std::size_t max_slots = first_chunk * ((std::size_t{1} << max_chunks) - 1);

  struct alignas(64) slot {  // one cache line each: threads using different indices do not collide
    std::atomic<std::uint32_t> word{0};
    Entry entry{};
  };

  /// A pinned open slot (or empty). Move-only; unpins on destruction.
  class pin {
   public:
    pin() noexcept = default;
    pin(pin&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    pin& operator=(pin&& o) noexcept {
      if (this != &o) {
        reset();
        s_ = std::exchange(o.s_, nullptr);
      }
      return *this;
    }
    pin(const pin&) = delete;
    pin& operator=(const pin&) = delete;
    ~pin() { reset(); }
    [[nodiscard]] explicit operator bool() const noexcept { return s_ != nullptr; }
    /// The entry. Requires: *this is not empty. Stable and alive until the pin goes.
    [[nodiscard]] const Entry& operator*() const noexcept { return s_->entry; }
    [[nodiscard]] const Entry* operator->() const noexcept { return &s_->entry; }
    /// Effects: closes the slot (open -> closing). Returns false if another thread closed it first.
    /// The entry stays readable through this pin. Requires: not empty.
    bool close() noexcept {
      std::uint32_t w = s_->word.load(std::memory_order_relaxed);
      while (w & flag_open) {
        // (4) acq_rel: a reader pinning after this sees `closing`, never `open`.
        if (s_->word.compare_exchange_weak(w, (w & ~flag_open) | flag_closing, std::memory_order_acq_rel)) return true;
      }
      return false;
    }
    /// Effects: unpins now (cleaning the slot if this was its last pin after a close).
    void reset() noexcept {
      if (s_ != nullptr) unpin(*std::exchange(s_, nullptr));
    }

   private:
    friend class pinned_table;
    explicit pin(slot* s) noexcept : s_(s) {}
    slot* s_ = nullptr;
  };

  pinned_table() = default;
  ~pinned_table() {
    for (auto& c : dir_) delete[] c.load(std::memory_order_relaxed);
  }
  pinned_table(const pinned_table&) = delete;
  pinned_table& operator=(const pinned_table&) = delete;

  /// The open slot `i`, pinned, or an empty pin (out of range, free, installing or closed).
  /// Thread-safety: any thread, no lock. Cost: two atomic loads and one RMW (plus one to unpin).
  [[nodiscard]] pin find(std::size_t i) const noexcept {
    slot* s = at(i);
    if (s == nullptr) return {};
    const std::uint32_t old = s->word.fetch_add(1, std::memory_order_acquire);  // (1) pairs with (3)
    if (old & flag_open) return pin(s);
    unpin(*s);
    return {};
  }

  /// Slots that exist now (a racy bound for scans by the owner).
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_.load(std::memory_order_acquire); }

  /// Effects: makes slots [0, n) exist (n <= max_slots). Throws: std::bad_alloc. Requires: the
  /// owner's writer mutex (one grower at a time).
  void ensure_capacity(std::size_t n) {
    std::size_t have = capacity_.load(std::memory_order_relaxed);
    for (unsigned k = 0; have < n && k < max_chunks; ++k) {
      if (dir_[k].load(std::memory_order_relaxed) != nullptr) continue;
      dir_[k].store(new slot[first_chunk << k], std::memory_order_release);  // pairs with at()'s acquire
      have += first_chunk << k;
    }
    capacity_.store(have, std::memory_order_release);
  }

  /// Effects: if slot `i` exists and is free (no pin at all), installs `e` there and opens it; returns
  /// true. Otherwise returns false and leaves `e` alone. Requires: the owner's writer mutex.
  bool install(std::size_t i, Entry&& e) noexcept(std::is_nothrow_move_assignable_v<Entry>) {
    slot* s = at(i);
    if (s == nullptr) return false;
    std::uint32_t expect = 0;
    if (!s->word.compare_exchange_strong(expect, flag_busy, std::memory_order_acquire)) return false;  // (7) pairs with (6)
    s->entry = std::move(e);
    s->word.fetch_add(flag_open - flag_busy, std::memory_order_release);  // (3) release, pairs with (1)
    return true;
  }

  /// True if slot `i` could be installed now (free, no pin). A hint: a transient pin may come and go.
  [[nodiscard]] bool looks_free(std::size_t i) const noexcept {
    slot* s = at(i);
    return s != nullptr && s->word.load(std::memory_order_relaxed) == 0;
  }

 private:
  slot* at(std::size_t i) const noexcept {
    const std::size_t j = i + first_chunk;  // chunk k covers j in [64 << k, 128 << k)
    if (j < i) return nullptr;
    const unsigned k = static_cast<unsigned>(63 - __builtin_clzll(static_cast<unsigned long long>(j))) - 6;
    if (k >= max_chunks) return nullptr;
    slot* c = dir_[k].load(std::memory_order_acquire);
    return c == nullptr ? nullptr : c + (j - (first_chunk << k));
  }

  static void unpin(slot& s) noexcept {
    const std::uint32_t old = s.word.fetch_sub(1, std::memory_order_acq_rel);  // (2)
    if (old != (flag_closing | 1)) return;
    // Last pin of a closed slot: clean it, unless a transient pin came in (its unpin retries).
    std::uint32_t expect = flag_closing;
    if (!s.word.compare_exchange_strong(expect, flag_busy, std::memory_order_acq_rel)) return;  // (5)
    s.entry = Entry{};
    s.word.fetch_sub(flag_busy, std::memory_order_release);  // (6) release, pairs with (7)
  }

  mutable std::atomic<slot*> dir_[max_chunks] = {};
  std::atomic<std::size_t> capacity_{0};
};

}  // namespace faultsafe::detail
