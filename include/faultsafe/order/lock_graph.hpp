// faultsafe/order/lock_graph.hpp: a lockdep-style dependency graph over lock classes.
//
// Defines
// - `lock_class`: a named class of locks ("attr range", "region", ...), usually a static object,
//   but classes made at run time work too. Ids are never reused; destroying a class (or forget())
//   removes every edge that touches it.
// - `tracked_mutex<Mutex = std::mutex, Checks = default_checks>`: a Lockable (SharedLockable when
//   Mutex is) that belongs to a lock_class and optionally has a rank (0 = none).
// - `lock_order_known(before, after)`: whether the graph holds the edge before -> after.
//
// The graph. When a thread acquires B (class Cb) while it holds A (class Ca), the edge Ca -> Cb is
// recorded, for every held lock with a class, with where it was first seen (thread name; where A and
// B were acquired). A new edge that closes a cycle is reported as `order_cycle` even if this run never
// deadlocks: the report lists the whole cycle, each edge with its first-seen location, and
// `violation::involved` names every class on it. Such an edge is not added (the graph stays acyclic)
// and is reported once. Acquiring a second lock of a class one already holds (outside lock_in_order)
// is the one-edge cycle C -> C.
// Reader acquisitions take part like writer ones, and reports show each lock's mode: readers of
// std::shared_mutex are not recursive (a queued writer blocks new readers), so a cycle through read
// acquisitions deadlocks as soon as a writer queues on one of its locks; this is lockdep's rule for
// rwsem. Re-reading a lock one already reads is `recursive_acquire`, AA is `recursive_acquire` (then
// std::system_error(resource_deadlock_would_occur) if the handler returns), unlocking a lock not held
// is `unlock_not_held`; releases may happen in any order. try_lock records no edge into the lock it
// tries (it cannot wait), but once taken the lock is a source of edges like any other.
// A handler that throws leaves lock() with nothing acquired.
//
// Cost. Each class keeps the set of classes it is known to be ordered before (its out-edges), readable
// without a lock (order/detail/successor_set.hpp). After warm-up an acquisition with n held locks
// costs n probes, one into each held class's set: O(1) each, no shared write, independent of the
// number of classes and edges in the graph. Only a new edge takes the one global graph mutex (as
// does a probe that races with the graph changing: the slow path then consults the graph itself).
//
// Thread-safety: every function may be called from any thread. Lock order: the graph mutex is an
// internal leaf; it is never held while a handler runs or while a user lock is acquired (it is
// held while a thread-name lookup takes the thread registry's leaf mutex).
// Memory ordering: the graph is guarded by its mutex; the per-class sets publish their tables with
// release / acquire (successor_set.hpp (1)-(2)). forget() erases from the sets under the mutex: an
// acquisition ordered after forget() returns (happens-after) no longer sees the edges it removed.
// Lifetime: a lock_class must outlive every tracked_mutex of it, and must not be destroyed while one
// of its locks is held. An acquisition racing with forget() of its class may record its edge in the
// old graph (as if it happened before forget()).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../detail/held_locks.hpp"
#include "../detail/thread_record.hpp"
#include "../source_location.hpp"
#include "../thread_annotations.hpp"
#include "detail/successor_set.hpp"
#include "ranked_mutex.hpp"
#include "violation.hpp"

namespace faultsafe {

class lock_class;

namespace detail {

struct lock_class_access;

/// One recorded dependency, with where it was first seen.
struct lock_edge_info {
  std::string thread;
  source_location from_where;  ///< where the held lock was acquired
  source_location to_where;    ///< where the new lock was acquired
  hold_mode from_mode = hold_mode::exclusive;
  hold_mode to_mode = hold_mode::exclusive;
};

struct lock_class_node {
  std::string name;
  std::unordered_map<std::uint32_t, lock_edge_info> out;
  std::unordered_set<std::uint32_t> in;
  successor_set* fast = nullptr;  ///< the class's lock-free copy of out's keys (owned by the lock_class)
};

/// The process-wide graph. Leaked on purpose: threads and static lock_class objects may outlive it.
class lock_graph {
 public:
  static lock_graph& instance() {
    static lock_graph* g = new lock_graph;
    return *g;
  }

  /// Effects: a new class named `name` whose out-edges are mirrored into `fast` (which must outlive
  /// the class's node, i.e. until forget(id, true)). Returns its id.
  std::uint32_t add_class(std::string_view name, successor_set& fast) {
    const std::uint32_t id = next_id_.fetch_add(1, std::memory_order_relaxed);  // ids carry no data
    std::lock_guard<std::mutex> g(m_);
    lock_class_node& n = nodes_[id];
    n.name = std::string(name);
    n.fast = &fast;
    return id;
  }

  /// Removes every edge touching `id` (and the class itself when `remove_node`).
  void forget(std::uint32_t id, bool remove_node) {
    std::lock_guard<std::mutex> g(m_);
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return;
    for (const auto& [to, info] : it->second.out) {
      (void)info;
      if (auto t = nodes_.find(to); t != nodes_.end()) t->second.in.erase(id);
    }
    for (std::uint32_t from : it->second.in)
      if (auto f = nodes_.find(from); f != nodes_.end()) {
        f->second.out.erase(id);
        f->second.fast->erase(id);
      }
    it->second.out.clear();
    it->second.fast->clear();
    it->second.in.clear();
    for (auto r = reported_.begin(); r != reported_.end();) {
      if (static_cast<std::uint32_t>(*r >> 32) == id || static_cast<std::uint32_t>(*r) == id)
        r = reported_.erase(r);
      else
        ++r;
    }
    if (remove_node) nodes_.erase(it);
  }

  [[nodiscard]] bool has_edge(std::uint32_t from, std::uint32_t to) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = nodes_.find(from);
    return it != nodes_.end() && it->second.out.count(to) != 0;
  }

  /// Effects: records from -> to unless known (and makes sure from's successor set has it); if it would
  /// close a cycle, fills `v` instead and sets `report` (the edge is not added; a given bad edge is
  /// reported once). Throws: std::bad_alloc.
  void add_edge(std::uint32_t from, std::uint32_t to, const held_lock& held, const acquire_request& r,
                const source_location& where, violation& v, bool& report) {
    report = false;
    std::lock_guard<std::mutex> g(m_);
    auto fit = nodes_.find(from);
    auto tit = nodes_.find(to);
    if (fit == nodes_.end() || tit == nodes_.end()) return;  // class destroyed: nothing to learn
    if (fit->second.out.count(to) != 0) {  // known; the lock-free probe raced with a change
      fit->second.fast->insert(to);
      return;
    }
    std::vector<std::uint32_t> path;  // to -> ... -> from, if any
    if (from == to || find_path(to, from, path)) {
      const std::uint64_t key = (std::uint64_t{from} << 32) | to;
      if (!reported_.insert(key).second) return;
      report = true;
      describe_cycle(from, to, path, held, r, where, v);
      return;
    }
    lock_edge_info info{thread_name(this_thread_id()), held.where, where, held.req.mode, r.mode};
    fit->second.out.emplace(to, std::move(info));
    tit->second.in.insert(from);
    fit->second.fast->insert(to);
  }

 private:
  lock_graph() = default;

  // BFS from `start` to `goal`; on success `path` is start, ..., goal.
  bool find_path(std::uint32_t start, std::uint32_t goal, std::vector<std::uint32_t>& path) const {
    std::unordered_map<std::uint32_t, std::uint32_t> parent{{start, start}};
    std::vector<std::uint32_t> queue{start};
    for (std::size_t i = 0; i < queue.size(); ++i) {
      const std::uint32_t at = queue[i];
      if (at == goal) {
        for (std::uint32_t x = goal;; x = parent[x]) {
          path.push_back(x);
          if (x == start) break;
        }
        std::reverse(path.begin(), path.end());
        return true;
      }
      auto it = nodes_.find(at);
      if (it == nodes_.end()) continue;
      for (const auto& [next, info] : it->second.out) {
        (void)info;
        if (parent.emplace(next, at).second) queue.push_back(next);
      }
    }
    return false;
  }

  static const char* mode_name(hold_mode m) noexcept { return m == hold_mode::shared ? "read" : "write"; }

  void describe_cycle(std::uint32_t from, std::uint32_t to, const std::vector<std::uint32_t>& path,
                      const held_lock& held, const acquire_request& r, const source_location& where,
                      violation& v) const {
    const std::string& from_name = nodes_.at(from).name;
    const std::string& to_name = nodes_.at(to).name;
    v.kind = violation_kind::order_cycle;
    v.summary = "thread '" + thread_name(this_thread_id()) + "' acquires '" + to_name + "' (" + mode_name(r.mode) +
                ") at " + describe_site(where) + " while holding '" + from_name + "' (" +
                mode_name(held.req.mode) + ", acquired at " + describe_site(held.where) + "); the order '" +
                from_name + "' -> '" + to_name + "' closes a cycle";
    if (from == to)
      v.summary += " (two locks of one class nested; take them together with lock_in_order())";
    v.details.push_back("new edge: '" + from_name + "' (" + mode_name(held.req.mode) + ") -> '" + to_name + "' (" +
                        mode_name(r.mode) + "): here, '" + from_name + "' acquired at " + describe_site(held.where) +
                        ", '" + to_name + "' at " + describe_site(where));
    v.involved.push_back(from_name);
    if (from != to) v.involved.push_back(to_name);
    for (std::size_t i = 0; i + 1 < path.size(); ++i) {
      const lock_class_node& a = nodes_.at(path[i]);
      const lock_class_node& b = nodes_.at(path[i + 1]);
      const lock_edge_info& e = a.out.at(path[i + 1]);
      v.details.push_back("known edge: '" + a.name + "' (" + mode_name(e.from_mode) + ") -> '" + b.name + "' (" +
                          mode_name(e.to_mode) + "): first seen in thread '" + e.thread + "', '" + a.name +
                          "' acquired at " + describe_site(e.from_where) + ", '" + b.name + "' at " +
                          describe_site(e.to_where));
      if (i + 1 < path.size() - 1) v.involved.push_back(b.name);
    }
  }

  // The checker's own lock, so not a ranked_mutex (it is taken inside the checks): a leaf, never held
  // while the handler runs or a user lock is taken; the thread registry's leaf nests inside it.
  mutable std::mutex m_;
  std::atomic<std::uint32_t> next_id_{1};
  std::unordered_map<std::uint32_t, lock_class_node> nodes_;
  std::unordered_set<std::uint64_t> reported_;
};

/// Read access to a class's successor set for the warm path (lock_class keeps it private).
struct lock_class_access {
  static const successor_set& successors(const lock_class& c) noexcept;
};

}  // namespace detail

/// A named class of locks: the node of the lock graph.
///
/// Thread-safety: any member from any thread. Lifetime: see header. Not copyable or movable (locks
/// refer to it by address).
class lock_class {
 public:
  /// Effects: registers a new class (a fresh id, never reused). Throws: std::bad_alloc.
  explicit lock_class(std::string_view name) : name_(name) {
    id_ = detail::lock_graph::instance().add_class(name, successors_);
  }
  /// Effects: removes the class and its edges from the graph.
  ~lock_class() { detail::lock_graph::instance().forget(id_, true); }
  lock_class(const lock_class&) = delete;
  lock_class& operator=(const lock_class&) = delete;

  /// Effects: removes every edge into or out of this class (for example when the module that defined
  /// the order goes away); the class stays usable and learns anew. Complexity: O(edges + reported).
  void forget() { detail::lock_graph::instance().forget(id_, false); }

  // Private: the warm path reads successors_ through detail::lock_class_access.

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint32_t id() const noexcept { return id_; }

 private:
  friend struct detail::lock_class_access;
  // What an acquisition reads (the name's characters for a short name, the id, the successor set's
  // table pointer) lies within the first 48 bytes: one or two cache lines.
  std::string name_;
  std::uint32_t id_ = 0;
  detail::successor_set successors_;  // constructed before the body gives add_class() its address
};

/// Whether the graph holds the edge before -> after (a thread acquired `after` while holding `before`).
[[nodiscard]] inline bool lock_order_known(const lock_class& before, const lock_class& after) {
  return detail::lock_graph::instance().has_edge(before.id(), after.id());
}

namespace detail {

inline const successor_set& lock_class_access::successors(const lock_class& c) noexcept { return c.successors_; }

/// Slow path of record_class_edges(): learn (or report) the edge from held lock `h` to `r` under the
/// graph mutex. Kept out of line so the fast path stays small.
[[gnu::noinline, gnu::cold]] inline void learn_class_edge(const held_lock& h, const acquire_request& r,
                                                          const source_location& where) {
  violation v;
  bool report = false;
  lock_graph::instance().add_edge(h.req.cls->id(), r.cls->id(), h, r, where, v, report);
  if (report) report_violation(v);
}

/// Effects: records an edge from every lock class the thread holds to r.cls; reports order_cycle
/// for a new edge that closes a cycle. Throws: what the handler throws; std::bad_alloc.
/// Complexity: one successor-set probe per held lock once the edges are known (no lock, no shared
/// write, independent of the graph's size).
inline void record_class_edges(const acquire_request& r, const source_location& where) {
  const held_stack& s = this_thread_held();
  const unsigned depth = s.depth;
  if (depth == 0) return;
  const std::uint32_t to = r.cls->id();
  for (unsigned i = 0; i < depth; ++i) {
    const held_lock& h = s.e[i];
    if (h.req.cls == nullptr || h.req.object == r.object) continue;  // same object: check_acquire's case
    if (s.batch != 0 && h.batch == s.batch && (h.req.cls == r.cls || (r.rank != 0 && h.req.rank == r.rank)))
      continue;  // taken together by lock_in_order(): ordered by construction
    if (lock_class_access::successors(*h.req.cls).contains(to)) [[likely]]
      continue;  // fast path: known edge
    learn_class_edge(h, r, where);
  }
}

/// The Edges policy of tracked_mutex (order/detail/lock_core.hpp): the lock-class graph's edges.
struct class_edges {
  static void record(const acquire_request& r, const source_location& where) { record_class_edges(r, where); }
};

}  // namespace detail

/// A mutex in a lock class (see header). Thread-safety: as Mutex. Lock order: the lock graph's
/// (plus rank order if it has a rank).
template <class Mutex = std::mutex, class Checks = default_checks>
class FAULTSAFE_CAPABILITY("mutex") tracked_mutex
    : public detail::checked_mutex<tracked_mutex<Mutex, Checks>, Mutex, Checks, detail::class_edges> {
  static_assert(Checks::enabled, "checks_off is the partial specialization below");
  friend class detail::checked_mutex<tracked_mutex, Mutex, Checks, detail::class_edges>;

 public:
  using mutex_type = Mutex;
  using checks_type = Checks;
  static constexpr bool checks_enabled = true;

  /// Requires: `cls` outlives *this. Effects: a lock of class `cls`, of rank `rank` (0 = unranked).
  explicit tracked_mutex(lock_class& cls, unsigned rank = 0) noexcept(std::is_nothrow_default_constructible_v<Mutex>)
      : cls_(&cls), rank_(rank) {}

  // lock / try_lock / unlock and the shared variants: detail::checked_mutex (order/detail/lock_core.hpp),
  // with detail::class_edges: lock() and lock_shared() also record the class edges (reporting
  // order_cycle) before blocking; try_lock() records no edge into the lock it tries.
  // Complexity: O(held) cache probes after warm-up.

  [[nodiscard]] lock_class& cls() const noexcept { return *cls_; }
  [[nodiscard]] unsigned rank() const noexcept { return rank_; }
  /// Order for lock_in_order(): rank; for unranked locks the class id, so that any two calls order
  /// two classes the same way; then the address.
  [[nodiscard]] lock_order_key order_key() const noexcept {
    return {rank_, rank_ == 0 ? cls_->id() : 0u, reinterpret_cast<std::uintptr_t>(this)};
  }

 private:
  [[nodiscard]] detail::acquire_request request(detail::hold_mode mode) const noexcept {
    return detail::self_request(this, cls_->name().c_str(), rank_, mode, cls_);
  }

  lock_class* cls_;
  unsigned rank_;
};

/// checks_off: exactly Mutex (the class and rank are accepted and ignored).
template <class Mutex>
class FAULTSAFE_CAPABILITY("mutex") tracked_mutex<Mutex, checks_off> {
 public:
  using mutex_type = Mutex;
  using checks_type = checks_off;
  static constexpr bool checks_enabled = false;

  explicit tracked_mutex(lock_class&, unsigned = 0) noexcept(std::is_nothrow_default_constructible_v<Mutex>) {}
  tracked_mutex(const tracked_mutex&) = delete;
  tracked_mutex& operator=(const tracked_mutex&) = delete;

  void lock() FAULTSAFE_ACQUIRE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS { m_.lock(); }
  [[nodiscard]] bool try_lock() FAULTSAFE_TRY_ACQUIRE(true) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    return m_.try_lock();
  }
  void unlock() FAULTSAFE_RELEASE() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS { m_.unlock(); }
  void lock_shared()
    requires shared_lockable_mutex<Mutex> FAULTSAFE_ACQUIRE_SHARED() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    m_.lock_shared();
  }
  [[nodiscard]] bool try_lock_shared()
    requires shared_lockable_mutex<Mutex> FAULTSAFE_TRY_ACQUIRE_SHARED(true) FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    return m_.try_lock_shared();
  }
  void unlock_shared()
    requires shared_lockable_mutex<Mutex> FAULTSAFE_RELEASE_SHARED() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    m_.unlock_shared();
  }
  [[nodiscard]] Mutex& underlying() noexcept { return m_; }

 private:
  Mutex m_;
};

static_assert(sizeof(tracked_mutex<std::mutex, checks_off>) == sizeof(std::mutex));

}  // namespace faultsafe
