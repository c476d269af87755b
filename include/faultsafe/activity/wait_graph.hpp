// faultsafe/activity/wait_graph.hpp: the wait-for graph over threads and the things they block on;
// finds lock-ups (Colin's cycle) while they happen and names every hop.
//
// Defines
// - `waitable`: the interface of anything a thread can block on (a lock, a channel, a reply, a fault,
//   a thread pool). It lists the threads whose progress a waiter depends on.
// - `wait_kind`: lock, send, reply, page, pool (for reports).
// - `wait_scope`: RAII edge "this thread waits on that waitable", made by a blocking site just before
//   it blocks and destroyed when it wakes. `poll()` re-checks while blocked; `deadlocked()` tells the
//   site to fail its wait with EDEADLK (policy `report_and_break`).
// - `wait_graph`: the process-wide graph: switch (`set_enabled`), options (`set_options`), statistics,
//   `note_change()` for resources whose holders change without a blocking edge, `check_now()`.
//
// Semantics (exact)
// - Nodes are threads (faultsafe ids, detail/thread_record.hpp) that currently have a wait recorded,
//   and the waitables they wait on. An edge exists only while a wait_scope lives: uncontended paths
//   never touch the graph.
// - A thread with a recorded wait on resource R is *stuck* in the greatest fixpoint S of:
//     ALL resource (`any_of() == false`, e.g. a lock): the waiter is stuck iff at least one listed
//       holder other than the waiter itself is in S (the waiter needs every holder to release; one
//       holder that never moves is enough to block it forever). An empty list is "free, about to be
//       taken": not stuck. The waiter listed among the holders of the very resource it waits for
//       means the resource was just handed to it: not stuck.
//     ANY resource (`any_of() == true`, e.g. a channel's server threads, a pager pool, a reply): the
//       waiter is stuck iff `can_grow()` is false and EVERY listed holder is in S. An empty list on a
//       resource that cannot grow is stuck (nobody will ever serve it); one that can grow never is.
//       can_grow() is also how an ANY resource says "already satisfied, the waiter is waking".
//   A thread that is not blocked (no recorded wait) is never stuck. A thread with several recorded
//   waits (an on-behalf page wait plus its own) counts with its newest one.
// - A *wait cycle* is a cycle of stuck threads, each waiting on a resource listed as held/served by
//   the next. One is reported per deadlock (per strongly connected component of the stuck threads,
//   identified by its wait instances): exactly once, through report_violation() as
//   violation_kind::wait_cycle, with every hop named in order. Threads that are stuck only behind a
//   cycle are not reported separately; a thread stuck behind a dead end (an ANY resource with no
//   holder that cannot grow) is not a cycle and is not reported (it is visible in `dump()`).
// - Detection: every new edge scans at once, reading only the waits reachable from the new waiter
//   (a new edge can only make its own waiter, and what waits behind it, stuck; every new cycle
//   passes through it), each found through an index of every waiting thread's newest wait: the
//   cost of a new edge is linear in the waits it reaches, not in the waits recorded. Blocked
//   threads call `poll()` every
//   `options().recheck_interval` (default 2 ms) from their timed waits, which rescans when the graph
//   changed (a generation counter: wait added or `note_change()`) and, as a safety net, at least every
//   `full_rescan_interval` (default 50 ms). A cycle closed by a blocking edge or signalled by
//   note_change() is found at once or by the first poll after it (within recheck_interval +
//   confirm_delay). One found without either is found by
//   the full rescan (<= full_rescan_interval + recheck_interval).
// - No false positives. A candidate (scan 1) is confirmed by a second scan `confirm_delay` later in
//   which only waits present with the same wait-instance sequence number in both scans may be stuck.
//   Why that is sound, given the resource contract below: a wait instance present in both snapshots
//   was blocked for the whole interval; a blocked thread neither releases nor acquires anything
//   (except being handed the very resource it waits for, which the ALL rule treats as not stuck), so
//   the holder lists of the confirmed set cannot have changed while it was blocked, and every edge
//   read during scan 2 held at scan 2's end simultaneously: the threads are deadlocked at that instant
//   and nothing inside the set can ever change it. (One scan under the graph mutex is already sound
//   in theory, because waits cannot be added or removed during it; the second scan protects against
//   resources whose holder lists lag behind their real state by a few instructions.)
// - Policy `report_and_break` (default): after reporting, one breakable thread of the cycle (the one
//   whose wait is newest, i.e. the one that closed it; waits made on behalf of another thread, such
//   as a page wait recorded by a pager for the faulting thread, are not breakable) is marked; its
//   `poll()` / `deadlocked()` return true and the blocking site must fail its wait with EDEADLK, so the
//   cycle unwinds. Justification: the handler returned, i.e. the program wants to go on, and
//   proceeding would certainly hang (the rule of order/violation.hpp). `report_only` never breaks.
// - Default: enabled. A wait_scope costs one relaxed load when disabled and, when enabled, two short
//   critical sections plus one rooted scan (O(1) expected to record and remove the edge, plus the
//   waits the scan reaches), on a path that is about to block anyway; lock-ups are what faultsafe
//   exists to catch. bench/wait_graph_bench.cpp measures both, with 1,000 other waits recorded, and
//   the cost of waiting with a timeout at all (an hrtimer per futex wait).
// - Not detected: a thread that exits (or never releases) while holding a resource is not blocked,
//   so nothing waiting on it is stuck: a leak, not a cycle. The graph has one global mutex: blocking
//   events serialize on it. Full scans (poll() after a change, the periodic rescan, check_now(),
//   dump()) read every recorded wait: O(w log w) for w waiting threads.
//
// Resource contract (what a waitable must guarantee)
// - wait_holders() lists the faultsafe thread ids the waiter depends on; for a lock its holders, for a
//   channel all its server threads (busy or idle), for a sent message before it is received the
//   channel's servers and after it the receiving thread, for a fault its pager thread once assigned
//   (else the pool's threads), for a pool its threads.
// - A thread's membership in a holder list changes only by that thread's own actions, or by hand-off
//   of the resource to a thread waiting for it; an ANY resource whose holder list can grow by the
//   action of a thread outside it (a pool that may start a thread) returns can_grow() == true. A
//   resource that changes holders otherwise (a server thread leaving, a pool reaching its maximum, a
//   fault assigned to a pager thread) calls wait_graph::note_change() after the change.
// - The waitable outlives every wait_scope made on it.
//
// Lock order
// - The graph has one mutex. It is a leaf with respect to faultsafe user locks (any faultsafe lock may
//   be held while making, polling or destroying a wait_scope: proc holds the aspace lock while in
//   reply wait), and it is ordered BEFORE every resource-internal lock, because scans call
//   wait_holders() / any_of() / can_grow() / wait_name() with it held, and those may take the
//   resource's own internal leaf lock, and before the thread-name registry lock.
// - Therefore: a resource must never make, poll or destroy a wait_scope, nor call any wait_graph
//   function, while holding its internal lock (or any lock some wait_holders() may take); and
//   wait_holders() and friends must take only such internal leaf locks, never a faultsafe user lock,
//   and must not block. The canonical blocking site:
//       { std::lock_guard g(m_);                       // resource-internal leaf lock
//         if (free()) { take(); return {}; } }         // uncontended: no graph at all
//       faultsafe::wait_scope ws(*this, faultsafe::wait_kind::lock);  // no internal lock held
//       if (ws.deadlocked()) return EDEADLK;           // found while recording the edge
//       std::unique_lock lk(m_);                       // declared AFTER ws: released before ws dies
//       while (!free()) {
//         if (cv_.wait_for(lk, faultsafe::wait_graph::recheck_interval()) == std::cv_status::timeout) {
//           lk.unlock(); const bool dead = ws.poll(); lk.lock();
//           if (dead) return std::make_error_code(std::errc::resource_deadlock_would_occur);
//         }
//       }
//       take(); return {};                            // ws is destroyed after the hand-over
// - The violation handler runs with no graph lock held (it may throw; see wait_scope).
// - Safe to call from any thread, including pager threads (which may record page waits on behalf of
//   faulting threads with the on_behalf constructor).
//
// Memory ordering: `enabled` (a switch, carries no data). The generation counter is
// bumped with release by writers and read with acquire by poll(); a stale read only delays a rescan
// by one recheck interval. Graph contents are protected by the mutex.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/intrusive/list.hpp>

#include "../detail/thread_record.hpp"
#include "../order/violation.hpp"
#include "../order/ranked_mutex.hpp"

namespace faultsafe {

/// Why a thread blocks; used in reports ("-lock wait->").
enum class wait_kind : std::uint8_t { lock, send, reply, page, pool };

[[nodiscard]] constexpr std::string_view to_string(wait_kind k) noexcept {
  switch (k) {
    case wait_kind::lock: return "lock";
    case wait_kind::send: return "send";
    case wait_kind::reply: return "reply";
    case wait_kind::page: return "page";
    case wait_kind::pool: return "pool";
  }
  return "unknown";
}

/// Anything a thread can block on. See the header comment for the exact semantics and contract.
/// Thread-safety: all members may be called from any thread, with the graph mutex held; they may take
/// the resource's own internal leaf lock and nothing else, and must not block.
class waitable {
 public:
  /// Effects: appends to `threads` (cleared by the caller) the faultsafe ids of the threads whose
  /// progress a waiter depends on. Throws: std::bad_alloc only.
  virtual void wait_holders(std::vector<std::uint32_t>& threads) const = 0;
  /// false: ALL semantics (a lock: stuck if any holder is stuck). true: ANY semantics (a channel or a
  /// pool: stuck only if every holder is stuck and the holder set cannot grow).
  [[nodiscard]] virtual bool any_of() const { return false; }
  /// ANY resources only: true if the wait may still end without the progress of any listed holder:
  /// a pool below its maximum (a new thread may appear), or a wait already satisfied (the message
  /// replied, the fault resolved) whose waiter has not woken yet. Such a wait is never stuck.
  /// The graph reads it AFTER wait_holders(), so a resource that empties its list when satisfied
  /// must make this true no later than it empties the list.
  [[nodiscard]] virtual bool can_grow() const { return false; }
  /// The resource's name in reports, e.g. "'aspace Bob' (rank 10)", "channel 'io_pkt'",
  /// "fault 0x7f0000001000 (file nfs:/a offset 4096)".
  [[nodiscard]] virtual std::string wait_name() const = 0;
  /// The relation from the resource to its holders in reports: "held by" or "served by".
  [[nodiscard]] virtual std::string_view holder_relation() const { return any_of() ? "served by" : "held by"; }
  virtual ~waitable() = default;

 protected:
  waitable() = default;
  waitable(const waitable&) = default;
  waitable& operator=(const waitable&) = default;
};

/// What the graph does when it has reported a cycle.
enum class wait_cycle_policy : std::uint8_t {
  report_only,       ///< report; the threads stay blocked
  report_and_break,  ///< report; mark one breakable thread of the cycle: its wait_scope says deadlocked
};

/// Tunables. All durations must be positive; set_options() clamps them to at least 1 microsecond.
struct wait_graph_options {
  /// How often a blocked thread should wake to call poll(). 2 ms: within the 10 ms detection budget
  /// after confirm_delay and a scan, it leaves room for a missed poll or two; each wake is a timed
  /// futex wait and two atomic loads.
  std::chrono::nanoseconds recheck_interval = std::chrono::milliseconds(2);
  /// Gap between the two scans that confirm a cycle. 500 us: long enough for a resource whose holder
  /// record lags by a few instructions to settle, short against the 10 ms budget.
  std::chrono::nanoseconds confirm_delay = std::chrono::microseconds(500);
  /// poll() rescans at least this often even when the generation did not change (safety net for
  /// resources that change holders without calling note_change()).
  std::chrono::nanoseconds full_rescan_interval = std::chrono::milliseconds(50);
  wait_cycle_policy policy = wait_cycle_policy::report_and_break;
};

/// Counters, for tests and tools. Monotone; read under the graph mutex.
struct wait_graph_stats {
  std::uint64_t waits_recorded = 0;  ///< wait_scopes registered
  std::uint64_t scans = 0;           ///< full scans (scan 1 and confirmation scans)
  std::uint64_t candidates = 0;      ///< scan-1 cycles sent to confirmation
  std::uint64_t unconfirmed = 0;     ///< candidates the confirmation scan rejected
  std::uint64_t reports = 0;         ///< wait_cycle violations reported
  std::uint64_t breaks = 0;          ///< waits marked deadlocked
  std::size_t active_waits = 0;      ///< waits recorded now
};

/// Tag for wait_scope's on-behalf constructor.
struct on_behalf_t { explicit on_behalf_t() = default; };
inline constexpr on_behalf_t on_behalf{};

class wait_scope;

namespace detail {

struct wait_record
    : boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>> {
  std::uint32_t waiter = 0;
  const waitable* on = nullptr;
  wait_kind kind = wait_kind::lock;
  bool breakable = true;
  bool covered = false;  ///< part of an already reported deadlock (guarded by the graph mutex)
  std::uint64_t seq = 0;  ///< unique per wait instance, increasing (guarded by the graph mutex)
  std::string detail;
  std::chrono::steady_clock::time_point since{};
  /// Set (under the graph mutex) when this wait is chosen to break a cycle; read by its owner.
  /// (4) release, pairs with (5).
  std::atomic<bool> broken{false};
  // The same waiter's other recorded waits, newest first (guarded by the graph mutex).
  wait_record* newer = nullptr;
  wait_record* older = nullptr;
  // The last scan that read this wait and its node there (guarded by the graph mutex).
  std::uint64_t scan = 0;
  std::size_t node = 0;
};

/// The newest recorded wait of every waiting thread, by faultsafe thread id: what a scan starts from
/// and how it follows a holder to that holder's wait without looking at any other wait.
/// Open addressing with linear probing and backward-shift deletion (no tombstones), load <= 1/2.
/// Thread-safety: guarded by the graph mutex. Complexity: O(1) expected per operation.
class waiter_index {
 public:
  /// The newest recorded wait of thread `tid`, or nullptr.
  [[nodiscard]] wait_record* newest(std::uint32_t tid) const noexcept {
    if (count_ == 0) return nullptr;
    for (std::size_t i = home(tid);; i = (i + 1) & mask()) {
      if (e_[i].tid == tid) return e_[i].rec;
      if (e_[i].tid == 0) return nullptr;
    }
  }
  /// Effects: `r` becomes the newest wait of r.waiter (r.seq is the largest so far).
  /// Throws: std::bad_alloc (nothing changed).
  void add(wait_record& r) {
    if (2 * (count_ + 1) > e_.size()) grow();
    std::size_t i = home(r.waiter);
    while (e_[i].tid != 0 && e_[i].tid != r.waiter) i = (i + 1) & mask();
    if (e_[i].tid == 0) {
      e_[i].tid = r.waiter;
      ++count_;
    } else {
      r.older = e_[i].rec;
      e_[i].rec->newer = &r;
    }
    e_[i].rec = &r;
  }
  /// Effects: forgets `r` (recorded with add()); its waiter's next older wait becomes the newest.
  void remove(wait_record& r) noexcept {
    if (r.older) r.older->newer = r.newer;
    if (r.newer) {
      r.newer->older = r.older;
    } else {
      std::size_t i = home(r.waiter);
      while (e_[i].tid != r.waiter) i = (i + 1) & mask();
      if (r.older) {
        e_[i].rec = r.older;
      } else {
        erase_at(i);
      }
    }
    r.newer = r.older = nullptr;
  }

 private:
  struct entry {
    std::uint32_t tid = 0;  // 0: free (faultsafe ids start at 1)
    wait_record* rec = nullptr;
  };
  [[nodiscard]] std::size_t mask() const noexcept { return e_.size() - 1; }
  [[nodiscard]] std::size_t home(std::uint32_t tid) const noexcept {
    return static_cast<std::size_t>((std::uint64_t{tid} * 0x9E3779B97F4A7C15ull) >> 32) & mask();
  }
  void grow() {
    std::vector<entry> old(std::max<std::size_t>(16, 2 * e_.size()));
    old.swap(e_);
    for (const entry& x : old)
      if (x.tid != 0) {
        std::size_t i = home(x.tid);
        while (e_[i].tid != 0) i = (i + 1) & mask();
        e_[i] = x;
      }
  }
  void erase_at(std::size_t i) noexcept {  // backward-shift: keeps every probe chain unbroken
    for (std::size_t j = i;;) {
      e_[i] = entry{};
      for (;;) {
        j = (j + 1) & mask();
        if (e_[j].tid == 0) {
          --count_;
          return;
        }
        const std::size_t k = home(e_[j].tid);
        // e_[j] may move to i only if its home is not cyclically in (i, j]
        const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) break;
      }
      e_[i] = e_[j];
      i = j;
    }
  }
  std::vector<entry> e_;
  std::size_t count_ = 0;
};

}  // namespace detail

/// The process-wide wait-for graph. All members are static and thread-safe.
class wait_graph {
 public:
  /// Effects: switches recording of new waits on or off (default on). Waits already recorded stay
  /// until their scope ends and may still be scanned. Thread-safety: any thread. Complexity: O(1).
  static void set_enabled(bool on) noexcept { state().enabled.store(on, std::memory_order_relaxed); }
  [[nodiscard]] static bool enabled() noexcept { return state().enabled.load(std::memory_order_relaxed); }

  /// Effects: replaces the options (durations clamped to >= 1 us). Thread-safety: any thread; waits in
  /// progress see the new values at their next poll.
  static void set_options(const wait_graph_options& o) {
    auto& s = state();
    exclusive_guard g(s.m);
    s.opts = o;
    auto clamp = [](std::chrono::nanoseconds& d) { d = std::max(d, std::chrono::nanoseconds(1000)); };
    clamp(s.opts.recheck_interval);
    clamp(s.opts.confirm_delay);
    clamp(s.opts.full_rescan_interval);
    s.recheck_ns.store(s.opts.recheck_interval.count(), std::memory_order_relaxed);
    s.full_rescan_ns.store(s.opts.full_rescan_interval.count(), std::memory_order_relaxed);
  }
  [[nodiscard]] static wait_graph_options options() {
    auto& s = state();
    exclusive_guard g(s.m);
    return s.opts;
  }
  /// The interval a blocking site should use for its timed waits between poll() calls. Lock-free.
  [[nodiscard]] static std::chrono::nanoseconds recheck_interval() noexcept {
    return std::chrono::nanoseconds(state().recheck_ns.load(std::memory_order_relaxed));
  }

  /// Effects: tells the graph that some resource's holders changed without a blocking edge (a server
  /// thread left, a pool reached its maximum, a fault was assigned to a pager thread), so blocked
  /// threads rescan at their next poll. May be called with any lock held: it takes none. Complexity: one atomic increment. Thread-safety: any thread.
  static void note_change() noexcept { state().generation.fetch_add(1, std::memory_order_release); }  // (1) release, pairs with (2)

  /// Effects: scans now (and confirms and reports, as a poll would). Returns the number of cycles
  /// reported by this call. Requires: no resource-internal lock held. Throws: what the handler throws.
  static std::size_t check_now() { return detect(nullptr, /*force=*/true); }

  [[nodiscard]] static wait_graph_stats stats() {
    auto& s = state();
    exclusive_guard g(s.m);
    wait_graph_stats r = s.stats;
    r.active_waits = s.waits.size();
    return r;
  }

  /// A human-readable dump of the current edges and which threads are stuck (for debugging).
  /// Requires: no resource-internal lock held.
  [[nodiscard]] static std::string dump() {
    auto& s = state();
    exclusive_guard g(s.m);
    snapshot snap;
    take_snapshot(s, snap, nullptr);
    compute_stuck(snap);
    std::string out;
    for (const auto& n : snap.nodes) {
      out += thread_name(n.waiter);
      out += " -";
      out += to_string(n.rec->kind);
      out += " wait-> ";
      out += n.rec->on->wait_name();
      out += n.any ? " (any of:" : " (all of:";
      for (auto h : n.holders) {
        out += ' ';
        out += thread_name(h);
      }
      out += n.stuck ? ") STUCK\n" : ")\n";
    }
    return out;
  }

 private:
  friend class wait_scope;
  using wait_list =
      boost::intrusive::list<detail::wait_record, boost::intrusive::constant_time_size<true>>;

  struct state_t {
    std::atomic<bool> enabled{true};
    std::atomic<std::uint64_t> generation{1};
    std::atomic<std::uint64_t> scanned_generation{0};
    std::atomic<std::int64_t> last_full_scan_ns{0};
    std::atomic<std::int64_t> recheck_ns{std::chrono::nanoseconds(std::chrono::milliseconds(2)).count()};
    std::atomic<std::int64_t> full_rescan_ns{std::chrono::nanoseconds(std::chrono::milliseconds(50)).count()};
    ranked_mutex<rank::wait_graph> m{"wait-for graph"};  // the graph mutex; see "Lock order"
    wait_list waits FAULTSAFE_GUARDED_BY(m);
    detail::waiter_index index FAULTSAFE_GUARDED_BY(m);  // the newest wait of each waiting thread
    std::uint64_t scans_made FAULTSAFE_GUARDED_BY(m) = 0;
    std::uint64_t next_seq FAULTSAFE_GUARDED_BY(m) = 1;
    wait_graph_options opts FAULTSAFE_GUARDED_BY(m);
    wait_graph_stats stats FAULTSAFE_GUARDED_BY(m);
  };
  static state_t& state() noexcept {
    static state_t* s = new state_t;  // leaked on purpose: threads may outlive static destruction
    return *s;
  }
  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  struct node {
    std::uint32_t waiter = 0;
    std::uint64_t seq = 0;
    detail::wait_record* rec = nullptr;
    std::vector<std::uint32_t> holders;
    std::vector<std::size_t> stuck_next;  // indices of stuck holders (after compute_stuck)
    bool any = false;
    bool can_grow = false;
    bool stuck = true;
  };
  struct snapshot {
    std::vector<node> nodes;                 // the waits this scan read (full scans: sorted by waiter)
    std::vector<detail::wait_record*> recs;  // scratch
    std::vector<std::size_t> todo;           // scratch
    std::vector<std::vector<std::uint32_t>> spare_holders;  // the vectors of earlier scans' nodes
    std::vector<std::vector<std::size_t>> spare_next;
    const detail::waiter_index* index = nullptr;
    std::uint64_t scan = 0;  // this scan's number: a wait it read has rec->scan == scan
    /// The node of thread `tid`'s newest wait, or npos if this scan did not read it (not waiting, or
    /// not reachable from a rooted scan's root). Requires: the graph mutex held since the scan.
    [[nodiscard]] std::size_t find(std::uint32_t tid) const {
      const detail::wait_record* r = index->newest(tid);
      return (r != nullptr && r->scan == scan) ? r->node : static_cast<std::size_t>(-1);
    }
    /// Effects: no nodes; their vectors are kept for push() to reuse (no allocation in the steady state).
    void reset() {
      for (auto& n : nodes) {
        spare_holders.push_back(std::move(n.holders));
        spare_next.push_back(std::move(n.stuck_next));
      }
      nodes.clear();
    }
    node& push() {
      node& n = nodes.emplace_back();
      if (!spare_holders.empty()) {
        n.holders = std::move(spare_holders.back());
        spare_holders.pop_back();
        n.holders.clear();
      }
      if (!spare_next.empty()) {
        n.stuck_next = std::move(spare_next.back());
        spare_next.pop_back();
        n.stuck_next.clear();
      }
      return n;
    }
  };
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  /// Requires: s.m held. One node per waiting thread (its newest wait). If `stable` is given, only
  /// waits whose (waiter, seq) appear in it may start as stuck (confirmation scan). If `root` is given,
  /// only the waits reachable from it through holder lists are read, each found through the waiter
  /// index (the others cannot change whether the root, or anything it reaches, is stuck): the cost is
  /// linear in the waits reached, not in the waits recorded. Otherwise every waiting thread is read.
  static void take_snapshot(state_t& s, snapshot& snap, const std::vector<std::pair<std::uint32_t, std::uint64_t>>* stable,
                            const detail::wait_record* root = nullptr) FAULTSAFE_REQUIRES(s.m) {
    // Storage is reused between scans (thread_local scratch): no allocation in the steady state.
    snap.index = &s.index;
    snap.scan = ++s.scans_made;
    auto add = [&](detail::wait_record* r) {
      r->scan = snap.scan;
      r->node = snap.nodes.size();
      node& n = snap.push();
      n.rec = r;
      n.waiter = r->waiter;
      n.seq = r->seq;
      r->on->wait_holders(n.holders);
      n.any = r->on->any_of();
      n.can_grow = n.any && r->on->can_grow();
      n.stuck = stable == nullptr || std::binary_search(stable->begin(), stable->end(), std::make_pair(n.waiter, n.seq));
    };
    snap.reset();
    if (root == nullptr) {
      auto& recs = snap.recs;
      recs.clear();
      for (auto& r : s.waits)
        if (r.newer == nullptr) recs.push_back(&r);  // the newest wait of its thread
      std::sort(recs.begin(), recs.end(),
                [](const detail::wait_record* a, const detail::wait_record* b) { return a->waiter < b->waiter; });
      for (auto* r : recs) add(r);
    } else if (s.index.newest(root->waiter) == root) {
      auto& todo = snap.todo;
      todo.clear();
      add(const_cast<detail::wait_record*>(root));
      todo.push_back(0);
      while (!todo.empty()) {
        const auto i = todo.back();
        todo.pop_back();
        for (std::size_t k = 0; k < snap.nodes[i].holders.size(); ++k) {  // add() may move nodes
          detail::wait_record* w = s.index.newest(snap.nodes[i].holders[k]);
          if (w != nullptr && w->scan != snap.scan) {
            add(w);
            todo.push_back(snap.nodes.size() - 1);
          }
        }
      }
    }
    ++s.stats.scans;
  }
  static snapshot& scratch() {
    thread_local snapshot snap;
    return snap;
  }

  /// Greatest fixpoint of the stuck rules (header comment), then the stuck-successor lists.
  static void compute_stuck(snapshot& snap) {
    auto& ns = snap.nodes;
    for (bool changed = true; changed;) {
      changed = false;
      for (auto& n : ns) {
        if (!n.stuck) continue;
        bool stuck;
        if (n.any) {
          stuck = !n.can_grow;
          for (auto h : n.holders) {
            const auto j = snap.find(h);
            if (j == npos || !ns[j].stuck) { stuck = false; break; }
          }
        } else {
          stuck = false;
          for (auto h : n.holders) {
            if (h == n.waiter) { stuck = false; break; }  // handed to the waiter: granted
            const auto j = snap.find(h);
            if (j != npos && ns[j].stuck) stuck = true;
          }
        }
        if (!stuck) { n.stuck = false; changed = true; }
      }
    }
    for (auto& n : ns) {
      n.stuck_next.clear();
      if (!n.stuck) continue;
      for (auto h : n.holders) {
        const auto j = snap.find(h);
        if (j != npos && ns[j].stuck &&
            std::find(n.stuck_next.begin(), n.stuck_next.end(), j) == n.stuck_next.end())
          n.stuck_next.push_back(j);
      }
    }
  }

  /// A cycle reachable from stuck node `start` (following the first stuck holder), as node indices in
  /// wait order; empty if the walk ends at a dead end.
  static std::vector<std::size_t> find_cycle(const snapshot& snap, std::size_t start) {
    std::vector<std::size_t> path;
    std::vector<std::size_t> pos(snap.nodes.size(), npos);
    std::size_t i = start;
    while (i != npos && pos[i] == npos) {
      pos[i] = path.size();
      path.push_back(i);
      // prefer a successor that closes a cycle back through the start, for a report "through" it
      const auto& nx = snap.nodes[i].stuck_next;
      std::size_t next = npos;
      for (auto j : nx)
        if (pos[j] != npos) { next = j; break; }
      if (next == npos && !nx.empty()) next = nx.front();
      i = next;
    }
    if (i == npos) return {};
    return std::vector<std::size_t>(path.begin() + static_cast<std::ptrdiff_t>(pos[i]), path.end());
  }

  /// The strongly connected component of stuck node `c` (mutually reachable stuck nodes).
  static std::vector<std::size_t> component(const snapshot& snap, std::size_t c) {
    const auto n = snap.nodes.size();
    std::vector<char> fwd(n, 0), bwd(n, 0);
    std::vector<std::size_t> stack{c};
    fwd[c] = 1;
    while (!stack.empty()) {
      auto i = stack.back();
      stack.pop_back();
      for (auto j : snap.nodes[i].stuck_next)
        if (!fwd[j]) { fwd[j] = 1; stack.push_back(j); }
    }
    bwd[c] = 1;
    stack.push_back(c);
    while (!stack.empty()) {
      auto i = stack.back();
      stack.pop_back();
      for (std::size_t k = 0; k < n; ++k)
        if (!bwd[k] && std::find(snap.nodes[k].stuck_next.begin(), snap.nodes[k].stuck_next.end(), i) !=
                           snap.nodes[k].stuck_next.end()) {
          bwd[k] = 1;
          stack.push_back(k);
        }
    }
    std::vector<std::size_t> out;
    for (std::size_t k = 0; k < n; ++k)
      if (fwd[k] && bwd[k]) out.push_back(k);
    return out;
  }

  /// A stuck node (preferring `prefer`, then the newest wait) on a cycle whose component has a wait
  /// not yet covered by a report; fills `cycle`. Returns false if none.
  static bool pick_candidate(const snapshot& snap, const detail::wait_record* prefer, std::vector<std::size_t>& cycle) {
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < snap.nodes.size(); ++i)
      if (snap.nodes[i].stuck) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      const bool pa = snap.nodes[a].rec == prefer, pb = snap.nodes[b].rec == prefer;
      if (pa != pb) return pa;
      return snap.nodes[a].seq > snap.nodes[b].seq;
    });
    for (auto i : order) {
      auto c = find_cycle(snap, i);
      if (c.empty()) continue;
      for (auto k : component(snap, c.front()))
        if (!snap.nodes[k].rec->covered) {
          cycle = std::move(c);
          return true;
        }
    }
    return false;
  }

  /// Builds the report and applies the policy. Requires: s.m held; `cycle` from `snap`.
  static violation make_report(state_t& s, const snapshot& snap, const std::vector<std::size_t>& cycle,
                               const detail::wait_record* finder, std::uint32_t finder_tid) FAULTSAFE_REQUIRES(s.m) {
    violation v;
    v.kind = violation_kind::wait_cycle;
    // rotate so the cycle starts at its oldest wait? keep the finder first when it is on the cycle
    std::vector<std::size_t> c = cycle;
    for (std::size_t k = 0; k < c.size(); ++k)
      if (snap.nodes[c[k]].rec == finder) {
        std::rotate(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(k), c.end());
        break;
      }
    // choose the victim: the breakable wait with the newest seq
    detail::wait_record* victim = nullptr;
    if (s.opts.policy == wait_cycle_policy::report_and_break)
      for (auto k : c) {
        auto* r = snap.nodes[k].rec;
        if (r->breakable && (victim == nullptr || r->seq > victim->seq)) victim = r;
      }
    std::string chain = thread_name(snap.nodes[c.front()].waiter);
    const auto newest = std::max_element(c.begin(), c.end(), [&](std::size_t a, std::size_t b) {
      return snap.nodes[a].rec->since < snap.nodes[b].rec->since;
    });
    for (std::size_t k = 0; k < c.size(); ++k) {
      const auto& n = snap.nodes[c[k]];
      const auto& next = snap.nodes[c[(k + 1) % c.size()]];
      const std::string who = thread_name(n.waiter);
      const std::string res = n.rec->on->wait_name();
      const std::string nxt = thread_name(next.waiter);
      std::string hop = " -";
      hop += to_string(n.rec->kind);
      hop += " wait-> ";
      hop += res;
      if (!n.rec->detail.empty()) {
        hop += " [";
        hop += n.rec->detail;
        hop += ']';
      }
      hop += " -";
      hop += n.rec->on->holder_relation();
      hop += "-> ";
      hop += nxt;
      chain += hop;
      v.details.push_back(who + hop);
      v.involved.push_back(who);
      v.involved.push_back(res);
    }
    const auto age = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - snap.nodes[*newest].rec->since);
    v.summary = "wait-for cycle through " + std::to_string(c.size()) + " thread" + (c.size() == 1 ? "" : "s") +
                ", found by " + thread_name(finder_tid) + " " + std::to_string(age.count()) +
                " us after its last edge; " +
                (victim ? "breaking the wait of " + thread_name(victim->waiter) + " (EDEADLK)"
                        : std::string("not broken (policy report_only or no breakable wait)"));
    v.details.insert(v.details.begin(), chain);
    v.outcome = victim ? violation_outcome::failed : violation_outcome::unresolved;
    // The site of a cycle: the resources on it, in a canonical order (one report per kind of lock-up).
    std::vector<std::string> res;
    for (auto k : c) res.push_back(snap.nodes[k].rec->on->wait_name());
    std::sort(res.begin(), res.end());
    for (const auto& r : res) v.site += (v.site.empty() ? "" : " | ") + r;
    for (auto k : component(snap, c.front())) snap.nodes[k].rec->covered = true;
    ++s.stats.reports;
    if (victim) {
      victim->broken.store(true, std::memory_order_release);  // (4) release, pairs with (5)
      ++s.stats.breaks;
      s.generation.fetch_add(1, std::memory_order_release);  // (1) the victim's poll must look
    }
    return v;
  }

  /// The detection routine shared by wait_scope's constructor, poll() and check_now().
  /// Requires: no resource-internal lock held, graph mutex not held. Returns reports made.
  /// `rooted`: a new edge from `finder`: only waits reachable from it are read (a new edge can only
  /// make its own waiter, and what waits behind it, stuck). Otherwise a full scan.
  static std::size_t detect(const detail::wait_record* finder, bool force, bool rooted = false) {
    auto& s = state();
    const std::uint32_t me = this_thread_id();
    std::vector<std::pair<std::uint32_t, std::uint64_t>> stable;
    std::chrono::nanoseconds delay{};
    {
      exclusive_guard g(s.m);
      const std::uint64_t gen = s.generation.load(std::memory_order_acquire);  // (2) acquire
      if (!force && gen == s.scanned_generation.load(std::memory_order_relaxed) &&
          now_ns() - s.last_full_scan_ns.load(std::memory_order_relaxed) < s.opts.full_rescan_interval.count())
        return 0;  // someone scanned this state already
      snapshot& snap = scratch();
      take_snapshot(s, snap, nullptr, rooted ? finder : nullptr);
      compute_stuck(snap);
      std::vector<std::size_t> cycle;
      if (!rooted) s.last_full_scan_ns.store(now_ns(), std::memory_order_relaxed);
      if (!pick_candidate(snap, finder, cycle)) {
        // A rooted scan covers the only new way to be stuck since the previous scanned generation
        // when nothing else changed meanwhile.
        if (!rooted || s.scanned_generation.load(std::memory_order_relaxed) + 1 == gen)
          s.scanned_generation.store(gen, std::memory_order_relaxed);
        return 0;
      }
      ++s.stats.candidates;
      // every stuck wait of this scan may take part in the confirmation
      for (const auto& n : snap.nodes)
        if (n.stuck) stable.emplace_back(n.waiter, n.seq);
      std::sort(stable.begin(), stable.end());
      delay = s.opts.confirm_delay;
    }
    std::this_thread::sleep_for(delay);
    violation v;
    {
      exclusive_guard g(s.m);
      const std::uint64_t gen2 = s.generation.load(std::memory_order_acquire);  // (2)
      snapshot& snap = scratch();
      take_snapshot(s, snap, &stable, rooted ? finder : nullptr);
      compute_stuck(snap);
      std::vector<std::size_t> cycle;
      if (!pick_candidate(snap, finder, cycle)) {
        // Rejected (or another thread reported it meanwhile): leave scanned_generation behind so
        // the next poll rescans if the candidate was merely in flux.
        ++s.stats.unconfirmed;
        return 0;
      }
      v = make_report(s, snap, cycle, finder, me);
      // A standing, reported deadlock must not make every blocked thread rescan at every poll:
      // mark this state scanned unless another unreported cycle is visible in the same snapshot.
      std::vector<std::size_t> more;
      if (!rooted && !pick_candidate(snap, nullptr, more))
        s.scanned_generation.store(gen2, std::memory_order_relaxed);
    }
    report_violation(v);  // no graph lock held: the handler may do anything
    return 1;
  }
};

/// RAII: one edge of the wait-for graph, "this thread waits on `on`", for as long as it blocks.
///
/// Requires: made just before the thread blocks, destroyed when it has stopped waiting (on the thread
/// that made it); `on` outlives the scope; no resource-internal lock held (see "Lock order").
/// Effects: when the graph is enabled, records the wait (a new wait-instance sequence number) and
/// scans for a cycle at once; when disabled, one relaxed load and nothing else.
/// Throws: whatever the violation handler throws (the wait is then not recorded); std::bad_alloc.
/// Thread-safety: a scope is used by one thread; the graph is shared safely.
class wait_scope {
 public:
  /// The calling thread waits on `on`. Breakable.
  wait_scope(const waitable& on, wait_kind kind, std::string_view detail = {}) { init(0, on, kind, detail, true); }

  /// Thread `waiter` (a faultsafe id) waits on `on`, recorded by another thread (a pager records the
  /// page wait of the thread whose fault it serves). Not breakable: the waiter cannot poll. The
  /// recording thread may poll() (it scans), but deadlocked() stays false.
  wait_scope(on_behalf_t, std::uint32_t waiter, const waitable& on, wait_kind kind, std::string_view detail = {}) {
    init(waiter, on, kind, detail, false);
  }

  ~wait_scope() { unregister(); }
  wait_scope(const wait_scope&) = delete;
  wait_scope& operator=(const wait_scope&) = delete;

  /// True if the graph chose this wait to break a reported cycle: fail the wait with EDEADLK.
  /// Complexity: one acquire load.
  [[nodiscard]] bool deadlocked() const noexcept {
    return registered_ && rec_->broken.load(std::memory_order_acquire);  // (5) acquire, pairs with (4)
  }

  /// Effects: re-checks for a cycle if the graph changed since the last scan anyone made (or the
  /// full-rescan interval passed); otherwise two atomic loads and a clock read. Call every
  /// wait_graph::recheck_interval() while blocked, with no resource-internal lock held.
  /// Returns: deadlocked(). Throws: what the violation handler throws.
  [[nodiscard]] bool poll() {
    if (!registered_) return false;
    if (rec_->broken.load(std::memory_order_acquire)) return true;  // (5)
    auto& s = wait_graph::state();
    const auto gen = s.generation.load(std::memory_order_acquire);  // (2) acquire, pairs with (1)
    if (gen != s.scanned_generation.load(std::memory_order_relaxed) ||
        wait_graph::now_ns() - s.last_full_scan_ns.load(std::memory_order_relaxed) >=
            s.full_rescan_ns.load(std::memory_order_relaxed))
      wait_graph::detect(&*rec_, false);
    return rec_->broken.load(std::memory_order_acquire);  // (5)
  }

  /// True if the wait was recorded (the graph was enabled when the scope was made).
  [[nodiscard]] bool recorded() const noexcept { return registered_; }
  /// The wait instance's sequence number (0 if not recorded).
  [[nodiscard]] std::uint64_t sequence() const noexcept { return registered_ ? rec_->seq : 0; }

 private:
  void init(std::uint32_t waiter, const waitable& on, wait_kind kind, std::string_view detail, bool breakable) {
    auto& s = wait_graph::state();
    if (!s.enabled.load(std::memory_order_relaxed)) return;  // the whole cost when disabled
    auto& r = rec_.emplace();
    r.waiter = waiter != 0 ? waiter : this_thread_id();
    r.on = &on;
    r.kind = kind;
    r.breakable = breakable;
    r.detail.assign(detail.data(), detail.size());
    r.since = std::chrono::steady_clock::now();
    {
      exclusive_guard g(s.m);
      s.index.add(r);  // first: it may throw (growth)
      r.seq = s.next_seq++;
      s.waits.push_back(r);
      ++s.stats.waits_recorded;
      s.generation.fetch_add(1, std::memory_order_release);  // (1) release, pairs with (2)
    }
    registered_ = true;
    try {
      wait_graph::detect(&r, false, /*rooted=*/true);
    } catch (...) {
      unregister();
      throw;
    }
  }

  void unregister() noexcept {
    if (!registered_) return;
    auto& s = wait_graph::state();
    exclusive_guard g(s.m);
    s.waits.erase(s.waits.iterator_to(*rec_));
    s.index.remove(*rec_);
    registered_ = false;
    // Removing an edge cannot create a deadlock: the generation is not bumped.
  }

  std::optional<detail::wait_record> rec_;  // engaged only when recorded: nothing to build when disabled
  bool registered_ = false;
};

}  // namespace faultsafe
