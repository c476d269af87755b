// faultsafe/order/detail/successor_set.hpp: the set of lock classes a class is known to be ordered
// before, readable without a lock (internal; the warm path of tracked_mutex).
//
// Defines `detail::successor_set`: a set of class ids (uint32, never 0) kept by one lock_class,
// mirroring its out-edges in the lock graph. One writer at a time (the lock graph, under its mutex)
// inserts and erases; any number of threads test membership concurrently with no lock and no shared
// write, so a warm acquisition costs one hash probe per held lock however large the graph is.
//
// Contract of contains(id) against concurrent changes:
// - No false positive for an id never inserted; an id erased is no longer reported once the erase
//   happens-before the call (a call racing with erase() may still see it: the lock graph documents
//   that an acquisition racing with forget() may use the old graph).
// - A false negative is allowed (a call racing with insert(), or with the in-place compaction that
//   clears tombstones): the caller then takes the slow path, which consults the graph itself.
//
// Layout: open addressing, linear probing, power-of-two capacity, load (live + tombstones) at most
// one half. Growth publishes a new table and keeps the old ones until the set is destroyed (a reader
// may still probe them): they total less than the current table. Compaction (many tombstones, no
// growth needed) rewrites the table in place.
//
// Thread-safety: insert(), erase() and clear() need external mutual exclusion (the graph mutex);
// contains() may run on any thread at any time before the destructor. Lifetime: the destructor must
// not run while contains() runs (the lock graph guarantees it: a class is not destroyed while one of
// its locks is held, and only holders probe it).
// Memory ordering: (1) release publication of a table, pairs with (2), the acquire load of the table
// pointer in contains(): the table's capacity and initial slots are visible to whoever probes it.
// Slots are relaxed: an id in a slot carries no data (the edge's details stay under the graph mutex).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace faultsafe::detail {

class successor_set {
 public:
  successor_set() { publish(std::make_unique<table>(min_capacity)); }
  successor_set(const successor_set&) = delete;
  successor_set& operator=(const successor_set&) = delete;

  /// Whether `id` is in the set (see the header for races). Complexity: O(1) expected; no write.
  [[nodiscard]] bool contains(std::uint32_t id) const noexcept {
    // One block: [0] the mask, then the slots (a probe touches one allocation after the set).
    const std::atomic<std::uint32_t>* t = current_.load(std::memory_order_acquire);  // (2) acquire, pairs with (1)
    const std::size_t mask = t[0].load(std::memory_order_relaxed);
    for (std::size_t i = home(id, mask);; i = (i + 1) & mask) {
      const std::uint32_t v = t[1 + i].load(std::memory_order_relaxed);
      if (v == id) return true;
      if (v == empty) return false;
    }
  }

  /// Requires: the writer's mutex held; id != 0 and id is not the tombstone value.
  /// Effects: adds `id` (nothing if present). Throws: std::bad_alloc (the set is then unchanged).
  void insert(std::uint32_t id) {
    table* t = owned_.back().get();
    if (find_slot(*t, id) != npos) return;
    if (2 * (live_ + tombs_ + 1) > t->mask + 1) {
      if (2 * (live_ + 1) * 2 > t->mask + 1) {
        grow(2 * (t->mask + 1));
      } else {
        compact(*t);
      }
      t = owned_.back().get();
    }
    place(*t, id);
    ++live_;
  }

  /// Requires: the writer's mutex held. Effects: removes `id` if present.
  void erase(std::uint32_t id) noexcept {
    table& t = *owned_.back();
    const std::size_t i = find_slot(t, id);
    if (i == npos) return;
    t.slot[i].store(tomb, std::memory_order_relaxed);
    --live_;
    ++tombs_;
  }

  /// Requires: the writer's mutex held. Effects: removes every id (in place).
  void clear() noexcept {
    table& t = *owned_.back();
    for (std::size_t i = 0; i <= t.mask; ++i) t.slot[i].store(empty, std::memory_order_relaxed);
    live_ = tombs_ = 0;
  }

 private:
  static constexpr std::uint32_t empty = 0;
  static constexpr std::uint32_t tomb = 0xFFFFFFFFu;  // lock-class ids never reach it
  static constexpr std::size_t min_capacity = 8;
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  static std::size_t home(std::uint32_t id, std::size_t mask) noexcept {
    return static_cast<std::size_t>((std::uint64_t{id} * 0x9E3779B97F4A7C15ull) >> 32) & mask;
  }
  struct table {
    explicit table(std::size_t capacity) : mask(capacity - 1), block(new std::atomic<std::uint32_t>[capacity + 1]) {
      block[0].store(static_cast<std::uint32_t>(mask), std::memory_order_relaxed);
      slot = block.get() + 1;
      for (std::size_t i = 0; i < capacity; ++i) slot[i].store(empty, std::memory_order_relaxed);
    }
    [[nodiscard]] std::size_t home(std::uint32_t id) const noexcept { return successor_set::home(id, mask); }
    std::size_t mask;
    std::unique_ptr<std::atomic<std::uint32_t>[]> block;  // [0]: mask, then the slots
    std::atomic<std::uint32_t>* slot;
  };

  static std::size_t find_slot(const table& t, std::uint32_t id) noexcept {
    for (std::size_t i = t.home(id);; i = (i + 1) & t.mask) {
      const std::uint32_t v = t.slot[i].load(std::memory_order_relaxed);
      if (v == id) return i;
      if (v == empty) return npos;
    }
  }
  // Requires: id absent and a free (empty or tombstone) slot exists.
  void place(table& t, std::uint32_t id) noexcept {
    for (std::size_t i = t.home(id);; i = (i + 1) & t.mask) {
      const std::uint32_t v = t.slot[i].load(std::memory_order_relaxed);
      if (v == empty || v == tomb) {
        if (v == tomb) --tombs_;
        t.slot[i].store(id, std::memory_order_relaxed);
        return;
      }
    }
  }
  void live_ids(const table& t, std::vector<std::uint32_t>& out) const {
    for (std::size_t i = 0; i <= t.mask; ++i) {
      const std::uint32_t v = t.slot[i].load(std::memory_order_relaxed);
      if (v != empty && v != tomb) out.push_back(v);
    }
  }
  // A table twice as large with the live ids, published; the old one stays readable.
  void grow(std::size_t capacity) {
    std::vector<std::uint32_t> ids;
    live_ids(*owned_.back(), ids);
    auto t = std::make_unique<table>(capacity);
    for (std::uint32_t id : ids) place(*t, id);  // a fresh table has no tombstone: tombs_ untouched
    publish(std::move(t));
    tombs_ = 0;
  }
  // Rewrites `t` without tombstones. A concurrent contains() may miss a live id meanwhile (allowed).
  void compact(table& t) {
    std::vector<std::uint32_t> ids;
    live_ids(t, ids);
    for (std::size_t i = 0; i <= t.mask; ++i) t.slot[i].store(empty, std::memory_order_relaxed);
    tombs_ = 0;
    for (std::uint32_t id : ids) place(t, id);
  }
  void publish(std::unique_ptr<table> t) {
    owned_.push_back(std::move(t));  // first: if it throws, nothing changed
    current_.store(owned_.back()->block.get(), std::memory_order_release);  // (1) release, pairs with (2)
  }

  std::atomic<const std::atomic<std::uint32_t>*> current_{nullptr};  // owned_.back()->block
  std::vector<std::unique_ptr<table>> owned_;  // every table made; the last one is current_
  std::size_t live_ = 0, tombs_ = 0;
};

}  // namespace faultsafe::detail
