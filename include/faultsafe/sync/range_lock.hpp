// faultsafe/sync/range_lock.hpp: per-offset reader/writer range locks over a 64-bit offset space.
//
// Defines `range_lock` (one per file's attr, sharded by offset), `range_guard` (RAII: one locked byte range), the
// deadlock-free multi-range helper `ordered_range_guards<N>`, and their vocabulary: `lock_mode`,
// `self_conflict`, `range_options`, `range_holder`, `range_request`, `to_end`.
//
// A range_guard locks [offset, offset + length) in shared or exclusive mode. Shared ranges overlap
// freely; an exclusive range excludes every overlapping range. Requests are FIFO-fair among
// overlapping requests: a request waits for every earlier overlapping request it conflicts with,
// granted or still waiting; a request that overlaps nothing it conflicts with goes straight through.
// Hence no starvation: a writer behind a stream of readers gets in once the readers that came before
// it leave, and readers that arrive after it queue behind it (only if they overlap it).
//
// State table. "Request" R (mode r) arrives while node N (mode n) is in the lock:
//
//   N vs R        | N granted                          | N waiting (N earlier than R)
//   --------------+------------------------------------+-----------------------------------
//   disjoint      | R unaffected                       | R unaffected
//   overlapping,  | R granted alongside N              | R granted alongside (shared never
//   r=n=shared    |                                    |   waits for shared)
//   overlapping,  | R waits until N is released        | R waits until N is granted and
//   r or n excl.  |  (self-conflict: see below)        |   released, or N gives up (timeout)
//                 |                                    |   (queued-writer rule: see below)
//
// R is granted when no overlapping conflicting node is granted and none earlier is waiting (except
// as the queued-writer rule says).
//
// Self-conflict (the basis of the fault-reentrancy guard: a fault taken while its own thread holds the range). Every node
// records an owner activity (default: current_activity()). When the only GRANTED ranges R conflicts
// with are held by R's own owner (the holder is then typically blocked waiting on R itself), the
// request's `range_options::on_self_conflict` decides:
//   wait:  ordinary behaviour (R waits; this is the naive lock-up if the holder waits on R);
//   grant: report, then R is granted at once, bypassing FIFO (earlier waiters of other owners wait on);
//   fail:  report, then throw std::system_error(EDEADLK) and take nothing.
// With grant/fail the report is a `violation_kind::self_deadlock` through report_violation() naming
// the requesting thread, the owner activity, the wanted range and mode, and every conflicting holder
// (thread, owner, range, mode, acquisition site). If the handler throws, the exception leaves the
// guard's constructor and nothing is taken. A waiting request is re-evaluated whenever a range that
// overlaps it is released, so one whose other conflicts go away while same-owner ones remain is then
// reported and granted or failed (it does not hang).
//
// Queued-writer rule (the page-in guard behind a queued writer; model/README.md, finding 2). When R's
// policy is not `wait`, an earlier waiting request N does not hold R up if N itself waits for a
// GRANTED range of R's owner: N cannot be granted before that range is released, and the owner is
// typically waiting for R (a read holds page 0 shared and faults; another client's write of page 0
// queues behind it; the fault's page-in, shared, same owner, would otherwise queue behind the write:
// a cycle). R then goes ahead of N; N still waits for R like for any granted range, so FIFO is kept
// among all other requests and N is not starved (it passes once the owner's ranges are released). N's
// wait on the owner's range is looked for in the trees R's domain locks (R's shard and the wide tree
// for a narrow R); a wide N blocked only by the owner's range in another shard still holds R up.
//
// Wait-for graph (activity/wait_graph.hpp): a request that has spun and parks records a lock wait
// on ALL of the threads of the conflicting ranges it waits for (granted ones and earlier waiting
// ones that hold it up), named "'<lock>' (rank R) range [a, b) mode"; while parked it wakes every
// wait_graph::recheck_interval() to poll(). When the graph reports a cycle through the request and
// breaks it there, the request leaves the queue and the guard's constructor throws
// std::system_error(EDEADLK), nothing held (a grant that raced with the break wins). Uncontended and
// spinning requests never touch the graph.
//
// Thread-safety: all members of range_lock may be called concurrently from any thread. A range_guard
// is owned by one thread at a time; it may be released on a thread other than the one that took it
// only if lock-order checks are off (the held-lock stack is per thread).
//
// Lifetime: the node of a range lives inside its range_guard (on the caller's stack): locking
// and unlocking allocate nothing (only the diagnostics paths allocate: holders(),
// conflicting_holders() and self-conflict reports, and a parked request's wait-for-graph edge while
// the graph is enabled). A range_lock must outlive its guards; destroying
// it while ranges are held or waited for is undefined (checked builds abort with a message).
//
// Sharding (so that threads working on disjoint parts of one file share no written cache line). The
// offset space is cut into segments of 2^segment_shift bytes (default 64 KiB); segment s belongs to
// shard s % shard_count (16). Each shard has its own leaf lock and interval tree. A NARROW range (one
// that lies inside one segment: every page-aligned read or write of up to 64 KiB by default) is kept
// in its shard's tree and takes only that shard's leaf lock; it also reads the lock's WIDE tree,
// which holds every range spanning segments and is written only under all 16 shard locks (taken in
// index order), so any one shard lock makes it stable to read. Two overlapping ranges always meet
// under a common leaf lock: two narrow ones lie in one segment, hence one shard; a wide one holds
// every shard lock. FIFO order across shards comes from Lamport clocks: each shard counts arrivals,
// and a section that holds every shard lock first raises all counters to their maximum, so a request
// always has a larger arrival number than every earlier request it can overlap. A narrow release
// cannot grant a waiting wide range (that needs every shard lock): it flags it, and the wide waiter
// re-evaluates itself under all shard locks. Cost: a wide range pays 16 leaf-lock round trips per
// acquire and per release (noise beside the copy of a range longer than a segment); disjoint narrow
// ranges in one shard (same segment, or segments 16 apart) still share that shard's lock.
//
// Readers (so that readers of one hot range do not serialise on its shard's leaf lock). A NARROW
// SHARED request whose shard has no "writers" (exclusive requests, granted or waiting, narrow in the
// shard or wide) is granted without the leaf lock: it publishes its node in one of the lock's 16
// reader slots (one cache line each; its thread id's slot or the next), then re-reads the shard's
// writer count; release swings the slot back to 0. Such a request could not conflict with anything
// in the lock (shared never conflicts with shared, and a shared request only ever waits for an
// exclusive one), so this is exactly the grant the tree path would make. The writer count lives in
// the payload of the shard's leaf lock (detail::futex_mutex): an exclusive request adds itself with
// the CAS that takes the lock, then MIGRATES the published readers of its shards (every shard, for a
// wide one) into their trees as granted nodes (arrival number 0), and only then evaluates itself.
// From then on those readers are ordinary granted nodes: the writer waits for them and sees their
// owners and threads (self-conflict, wait-for graph, holders()), and they release through the leaf
// lock. A reader that publishes while a writer arrives either sees the writer's count (and withdraws
// to the tree path, where FIFO puts it behind the writer) or is seen and migrated by it (a Dekker
// handshake, (3)-(6) below). A per-shard flag in the same word (p_readers_slow) lets a writer skip
// the slot scan when the shard's readers are on the tree path: a writer that scans sets it, and the
// shard's readers then take the tree path until 4 of them (fast_path_rearm) came in a row without a
// writer (so a shard whose writers keep coming behaves as without the fast path, and its writers do
// not scan). holders() and conflicting_holders() migrate too. Slot collisions (more than two
// threads' ids on one slot, or a thread holding two fast ranges of one lock) simply take the tree
// path.
//
// Fast holder (so that a narrow request that meets nothing it conflicts with pays one atomic
// read-modify-write to acquire and one to release, as a mutex does, instead of a leaf-lock round trip
// and a tree insertion and erasure, however many other ranges its shard holds). Each shard keeps a
// summary of its trees, its CELLS: a segment is cut into 16 cells (4 KiB with 64 KiB segments; a
// page-aligned page is one cell), and bit c says that some range in the shard's tree or in the wide
// tree covers cell c of one of the shard's segments (bit c + 16: an exclusive one does). Counts per
// cell behind the bits are kept under the leaf lock(s) as ranges enter and leave the trees (a wide
// range counts in the cells of its first and last segment and in every cell of the shards of the
// segments it covers whole). A NARROW request whose shard has no fast holder, whose leaf lock is
// free, whose cells show nothing it could conflict with (any range for an exclusive request, an
// exclusive one for a shared request), and, for an exclusive one, whose shard admits no fast reader
// (its readers on the tree path, or a writer in it) is granted by one CAS of the shard's fast_x from
// 0 to its node's address (the claim), without the lock and without entering the tree; it then
// re-reads the lock's word and the cells. Its release is one CAS of fast_x back to 0. Anything that
// takes the shard's leaf lock (another request of the shard or a wide one, a release, the
// diagnostics, the wait-for graph's questions) first MOVES that holder into the tree as a granted node
// (arrival number 0: nothing it conflicts with entered the shard since it was granted) by swapping
// fast_x back to 0, counted as a writer if exclusive: exactly the node the tree path would have made;
// from then on it is an ordinary granted node (FIFO, self-conflict, wait-for graph, holders()), its
// release CAS fails and it releases through the leaf lock. Only the holder's own claim writes its
// address, so a release CAS succeeds exactly when nobody moved it (no ABA). The claim and a lock
// holder's load of fast_x after taking the lock form a Dekker handshake ((9), (11), (12) below): either
// the re-check sees the lock taken (or what its holder left: then the re-check judges that state), or
// the lock holder sees the claim and moves the holder in before it changes anything. If the re-check
// finds the lock taken or a conflicting range in the cells (one that entered between the first check
// and the claim), the request withdraws its claim (a CAS back to 0) and takes the tree path; if a
// lock holder moved it in meanwhile, it leaves the tree through the leaf lock first (it was never
// granted to its caller, so requests that queued behind it in that window may go first). The cells
// are conservative (a cell is shared by ranges that need not overlap), so a request in a busy cell
// simply takes the tree path, which decides exactly. A shared request takes this path when the
// readers' fast path is closed to it (a writer in its shard, its readers on the tree path, or a slot
// collision). Fast holders do not count towards fast_path_rearm (only tree-path readers do: those
// that met another range in the shard).
//
// Complexity: a lock or unlock is O(log n + k) where n counts the held plus waiting ranges of the
// trees it examines (a narrow range: its shard's and the wide tree; a wide range: all of them, plus
// O(shard_count)) and k the overlapping ones examined (interval trees: Boost.Intrusive red-black tree
// algorithms over nodes augmented with the subtree's maximum end, overall and among exclusive nodes,
// so a shared request visits only exclusive neighbours). A narrow request that overlaps nothing it
// conflicts with is granted on what its insertion's one descent (and one descent of the wide tree)
// finds, without the overlap walk; an erase that needs no rotation climbs only until the
// augmentation stops changing. A release re-examines only waiting nodes that overlap it, and skips
// that entirely when nothing waits. A fast reader's lock and unlock are
// O(1) (one CAS each on its own slot line, and loads of its shard's leaf-lock word); an exclusive
// request adds O(reader_slot_count) when readers used its shard since its last writer. A fast
// holder's lock and unlock are O(1) whatever the number of ranges held (one CAS each on the shard's
// fast_x, loads of the same cache line); a tree insertion or erasure adds O(cells of the range) to
// keep the cells (O(shard_count + cell_count) for a wide range).
//
// Lock order: a range is a lock of rank `rank::attr_range` (30, config.hpp) in the held-lock
// stack (when FAULTSAFE_CHECKS / default_checks is on): it must be taken with no lock of rank >= 30
// held. Several ranges of one rank (of one or several range_locks) may be held together only if taken
// by one ordered_range_guards, which sorts them by (lock address, offset) and enqueues the ranges of
// each lock atomically; a second range taken any other way is reported as rank_inversion. Internally
// each range_lock has one leaf lock per shard (detail::rl::leaf_mutex: the library's futex mutex,
// checked as a lock of rank `rank::leaf` (90) when checks are on; several are taken only in
// shard-index order, as one ordered batch) held for the tree work only; no user code, violation
// handler or blocking wait runs under them (the diagnostics calls copy into a vector under them, which
// may allocate). Hence no range_lock member may be called while a lock of rank >= 90 is held (the
// wait-for graph, rank 80, asks a parked request for its holders: allowed). The readers' fast path
// and the fast holder take no lock.
//
// Blocking: every wait for a range happens in one private function (range_guard::wait_for_grant, the
// place for a wait-for-graph hook): a short spin on the waiter's own futex word, then a park on it
// (detail/futex.hpp: the library's one futex and CPU-pause layer). Releasers grant under the leaf lock
// and wake parked waiters after dropping it. The tree path is one leaf-lock hold per acquire and per
// release plus the tree operations (a fast reader or fast holder: no leaf lock); lock-order checks
// are a
// compile-time switch (default_checks, from FAULTSAFE_CHECKS) and cost nothing when off.
//
// The self-conflict rule also covers try-locks (a grant/fail verdict is not "busy"). It applies to a
// second request of the holder's own thread too, but with checks on that is first reported as a
// rank_inversion (a second range outside ordered_range_guards).
//
// Memory ordering: everything a holder wrote inside its range happens-before what the next
// conflicting holder reads there. Tree path: the release takes a leaf lock the next conflicting
// request also takes (see Sharding; futex_mutex's own (1) acquire / (2) release pairs), (1) the grant
// stores the waiter's word with release under that lock, and (2) the waiter loads it with acquire; an
// immediate grant is made under the leaf lock, after the previous holder's release. Readers' fast
// path: (3) a reader publishes its slot, then re-reads (4) the shard's leaf-lock word (its
// p_readers_slow flag and writer count), both seq_cst; (5) a writer counts itself with its locking
// CAS and sets the flag (seq_cst) and (6) scans the slots, seq_cst, so one of the two sees the other
// (either the reader withdraws or the writer migrates it). The tree-path reader that clears the flag
// again does so in the same word, so a fast reader that finds it clear at (4) sees every writer
// counted before. (7) a fast reader's release CAS (release) pairs with the scan's (6) (acquire), so
// what it read happens-before a writer that finds the slot empty; (8) the leaf lock's unlock, which
// subtracts a departed writer (release), pairs with (4) (acquire), so a writer's data is visible to a
// reader that finds the count at 0. Fast holder: (9) the claim (seq_cst CAS of fast_x) then (11) the
// re-read of the leaf lock's word (seq_cst), against a lock holder's locking CAS (seq_cst,
// futex_mutex's (1)) then (12) its load of fast_x (seq_cst): in the single total order one of the two
// sees the other. (11) also acquires the last unlock ((2), (8)): the ranges released under it are out
// before the holder is granted; (14) the re-read of the cells (acquire) pairs with (13) the lock
// holder's store of the cells (release), so the ranges whose cells read clear have been released.
// An exclusive holder requires the flag or a writer in the word it re-reads, which stay until a lock
// holder (who moves it in first, and counts it) changes them, so (4) never admits a fast reader
// beside it. (10) the releasing CAS (release) pairs with the next claim (9) and with (12): what the
// holder wrote happens-before the next holder of an overlapping range (a later lock holder or fast
// reader sees it through that lock holder's unlock). (12)'s swap (acquire) pairs with (9) (release):
// the node's fields are set before a lock holder moves it into the tree. Explicit relaxed accesses
// are marked (r) with the reason.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <boost/intrusive/rbtree_algorithms.hpp>

#include "../activity/activity.hpp"
#include "../activity/wait_graph.hpp"
#include "../config.hpp"
#include "../detail/fault_injection.hpp"
#include "../detail/futex.hpp"
#include "../detail/held_locks.hpp"
#include "../order/detail/lock_core.hpp"
#include "../detail/thread_record.hpp"
#include "../order/violation.hpp"
#include "../source_location.hpp"
#include "../thread_annotations.hpp"

#ifndef FAULTSAFE_RANGE_LOCK_SEGMENT_SHIFT
#  define FAULTSAFE_RANGE_LOCK_SEGMENT_SHIFT 16
#endif

namespace faultsafe {

/// How a range is locked.
enum class lock_mode : std::uint8_t { shared, exclusive };

/// What a request does when it conflicts ONLY with granted ranges held by its own owner activity.
enum class self_conflict : std::uint8_t { wait, grant, fail };

/// Per-request options.
struct range_options {
  activity_id owner = 0;  ///< owner activity; 0 = current_activity()
  self_conflict on_self_conflict = self_conflict::wait;
};

/// A snapshot of one range in a range_lock (granted or waiting), for diagnostics.
struct range_holder {
  std::uint64_t offset, length;  ///< length == to_end if the range reaches the end of the space
  lock_mode mode;
  activity_id owner;
  std::uint32_t thread_id;  ///< faultsafe thread id (thread_name(id) names it)
  bool granted;
};

/// A length meaning "to the end of the 64-bit offset space".
inline constexpr std::uint64_t to_end = ~std::uint64_t{0};

class range_lock;
class range_guard;
template <std::size_t N>
class ordered_range_guards;

namespace detail {
namespace rl {

/// The internal lock of a shard: the library's one futex mutex (detail/futex.hpp; its payload counts
/// the shard's writers), checked as a faultsafe lock of rank::leaf (config.hpp) through the one
/// lock-checking core (order/detail/lock_core.hpp) when checks are on, a bare futex_mutex when off.
/// Contract: held for tree work only; nothing is acquired under it, no user code, violation handler
/// or blocking wait runs under it. One range_lock's shard locks are taken together only in index
/// (address) order inside a detail::ordered_scope (range_lock::lock_domain). lock() and unlock() are
/// noexcept: an inversion on it is a faultsafe bug, reported through report_violation(); should the
/// handler throw, the exception is dropped here (the tree work in progress cannot be abandoned
/// halfway) and the lock is taken or released anyway. Thread-safety: as futex_mutex. Memory ordering:
/// futex_mutex's (1) acquire / (2) release; the checks add none.
class FAULTSAFE_CAPABILITY("mutex") leaf_mutex {
 public:
  /// Effects: checks (rank::leaf, recursion), takes the lock adding `add` to the payload, records it.
  void lock(std::uint32_t add = 0, const source_location& where = source_location::current()) noexcept
      FAULTSAFE_ACQUIRE() {
    if constexpr (default_checks::enabled) {
      try {
        core::check(request(), where);
      } catch (...) {  // reported; see the class comment
      }
    }
    m_.lock(add);
    if constexpr (default_checks::enabled) {
      try {
        core::record(request(), where, [] {});
      } catch (...) {  // held_stack_overflow reported; see the class comment
      }
    }
  }
  /// Effects: forgets the hold, drops the lock subtracting `sub` from and adding `add` to the
  /// payload. Requires: held.
  void unlock(std::uint32_t sub = 0, std::uint32_t add = 0,
              const source_location& where = source_location::current()) noexcept FAULTSAFE_RELEASE() {
    if constexpr (default_checks::enabled) {
      try {
        (void)core::forget(this, detail::hold_mode::exclusive, name, where);
      } catch (...) {  // reported; see the class comment
      }
    }
    m_.unlock(sub, add);
  }
  /// See futex_mutex::add_payload, sub_payload (requires: held), payload and payload_if_free (no lock
  /// needed).
  void add_payload(std::uint32_t add) noexcept { m_.add_payload(add); }
  void sub_payload(std::uint32_t sub) noexcept { m_.sub_payload(sub); }
  [[nodiscard]] std::uint32_t payload(std::memory_order o = std::memory_order_seq_cst) const noexcept {
    return m_.payload(o);
  }
  static constexpr std::uint32_t busy = detail::futex_mutex::busy;
  [[nodiscard]] std::uint32_t payload_if_free(std::memory_order o = std::memory_order_seq_cst) const noexcept {
    return m_.payload_if_free(o);
  }

  static constexpr const char* name = "range_lock shard";

 private:
  using core = detail::lock_core<default_checks>;
  [[nodiscard]] detail::acquire_request request() const noexcept {
    return detail::self_request(this, name, rank::leaf, detail::hold_mode::exclusive);
  }
  detail::futex_mutex m_;
};

// The payload of a shard's leaf lock (range_tree::m): a flag, then the shard's writer count.
inline constexpr std::uint32_t p_readers_slow = 1;  // the shard's readers take the tree path (no fast readers)
inline constexpr std::uint32_t p_writer = 2;        // one writer (the count is payload / p_writer)

// A shard's cells (range_tree::cells): the segment size / cell_count bytes of a segment at one
// position, in every segment of the shard; bit c: some range of the trees covers cell c of one of
// them; bit c + cell_x_shift: an exclusive one does.
inline constexpr unsigned cell_count = 16;
inline constexpr unsigned cell_x_shift = 16;
inline constexpr std::uint32_t cell_all = (std::uint32_t{1} << cell_count) - 1;

// The waiter's word.
inline constexpr std::uint32_t w_waiting = 0;    // queued, thread running (spinning or about to park)
inline constexpr std::uint32_t w_parked = 1;     // queued, thread asleep on the futex
inline constexpr std::uint32_t w_granted = 2;    // granted
inline constexpr std::uint32_t w_attention = 3;  // only same-owner conflicts remain: re-evaluate

struct range_tree;

/// One range, granted or waiting. Lives inside a range_guard. Aligned to 16 bytes so that a reader
/// slot can carry the node's shard in the low 4 bits of its address (see reader_slot).
struct alignas(16) range_node {
  // Red-black tree links (Boost.Intrusive rbtree_algorithms over range_node_traits).
  range_node* parent = nullptr;
  range_node* left = nullptr;
  range_node* right = nullptr;
  int color = 0;
  // The interval [off, last] (inclusive last, so [x, 2^64) is representable) and the augmentation.
  std::uint64_t off = 0, last = 0;
  std::uint64_t max_last = 0;    // max `last` in this subtree
  std::uint64_t max_last_x = 0;  // max `last` among exclusive nodes in this subtree (valid if has_x)
  bool has_x = false;
  // Bookkeeping, written under the leaf lock(s) of the node's domain (range_lock::lock_domain).
  bool granted = false;
  bool reported = false;  // a self-deadlock report was made for this request
  lock_mode mode = lock_mode::shared;
  self_conflict policy = self_conflict::wait;
  std::uint8_t domain = 0;  // its shard (narrow range) or range_lock::shard_count (wide range)
  range_tree* home = nullptr;  // the tree of its domain (a shard's, or the wide tree)
  std::uint32_t thread_id = 0;
  std::uint64_t seq = 0;  // arrival order (Lamport clock of the lock's shards: range_lock::take_seq)
  activity_id owner = 0;
  source_location where{};
  std::atomic<std::uint32_t> word{w_waiting};  // see w_*; futex word of the waiting thread
};

struct range_node_traits {
  using node = range_node;
  using node_ptr = range_node*;
  using const_node_ptr = const range_node*;
  using color = int;
  static node_ptr get_parent(const_node_ptr n) { return n->parent; }
  static void set_parent(node_ptr n, node_ptr p) { n->parent = p; }
  static node_ptr get_left(const_node_ptr n) { return n->left; }
  static void set_left(node_ptr n, node_ptr l) { n->left = l; }
  static node_ptr get_right(const_node_ptr n) { return n->right; }
  static void set_right(node_ptr n, node_ptr r) { n->right = r; }
  static color get_color(const_node_ptr n) { return n->color; }
  static void set_color(node_ptr n, color c) { n->color = c; }
  static color black() { return 0; }
  static color red() { return 1; }
};
using tree_algo = boost::intrusive::rbtree_algorithms<range_node_traits>;

/// Futex words to wake once the leaf lock is released (at most 8 deferred; more are woken at once).
struct wake_list {
  std::atomic<std::uint32_t>* w[8];
  unsigned n = 0;
  void add(std::atomic<std::uint32_t>* a) noexcept {
    if (n < 8)
      w[n++] = a;
    else
      futex_wake(a);
  }
  void run() noexcept {
    for (unsigned i = 0; i < n; ++i) futex_wake(w[i]);
    n = 0;
  }
};

inline bool conflicts(lock_mode a, lock_mode b) noexcept {
  return a == lock_mode::exclusive || b == lock_mode::exclusive;
}

/// Validates (off, len) and returns the inclusive last offset. Throws: std::system_error(EINVAL) for
/// len == 0, std::system_error(EOVERFLOW) if off + len exceeds 2^64 (len == to_end means "to the end").
inline std::uint64_t checked_last(std::uint64_t off, std::uint64_t len) {
  if (len == 0) throw std::system_error(EINVAL, std::generic_category(), "range_lock: length 0");
  if (len == to_end) return to_end;
  if (len - 1 > to_end - off)
    throw std::system_error(EOVERFLOW, std::generic_category(), "range_lock: offset + length overflows 2^64");
  return off + (len - 1);
}

inline std::uint64_t length_of(std::uint64_t off, std::uint64_t last) noexcept {
  return last == to_end ? to_end : last - off + 1;
}

inline std::string describe_range(std::uint64_t off, std::uint64_t last, lock_mode m) {
  // Built with append (GCC 12 reports a false -Wrestrict for "[" + std::string at -O2).
  std::string s;
  s.append(1, '[');
  s.append(std::to_string(off));
  s.append(", ");
  s.append(last == to_end ? std::string("end") : std::to_string(last + 1));
  s.append(") ");
  s.append(m == lock_mode::shared ? "shared" : "exclusive");
  return s;
}

inline std::string describe_activity(activity_id a) {
  if (is_implicit(a)) return "implicit activity of thread " + std::to_string(a & ~implicit_activity_bit);
  return "activity " + std::to_string(a);
}

/// One interval tree: a Boost.Intrusive red-black tree of range_nodes ordered by offset, augmented
/// with the subtree's maximum `last`, overall and among exclusive nodes; with the leaf lock and the
/// arrival counter of a range_lock shard (unused in the wide tree). Everything the uncontended path
/// touches sits in the first cache line: the leaf lock, the counters and the header's links.
struct alignas(64) range_tree {
  // The fast holder of the shard (see "Fast holder" in the file comment): 0, or its node's address.
  // Set from 0 by the holder's claim; set back to 0 by its release, or by the holder of the leaf lock
  // that moves the node into the tree (whichever swaps first). Not the tree's first member: shard 0's
  // lock must not share its address with the range_lock (the lock-order checks tell locks apart by
  // address).
  std::atomic<std::uintptr_t> fast_x{0};
  // A shard's leaf lock (the wide tree is guarded by every shard's). Its payload (p_* above) counts
  // the shard's "writers": the exclusive requests (granted or waiting) whose domain covers the shard
  // (its narrow ones and every wide one), read without the lock by the readers' fast path
  // (range_lock::try_fast_shared); a request adds itself as it takes the lock (one CAS) and its exit
  // is subtracted as the lock is dropped (writer_exits). p_readers_slow: the shard's readers take the
  // tree path; a writer that finds it clear sets it and scans the reader slots, one that finds it set
  // skips the scan; cleared again (under the shard's lock) by the fast_path_rearm-th tree-path reader
  // in a row without a writer: a shard whose writers keep coming stays on the tree path and its
  // writers never scan.
  mutable leaf_mutex m;
  // The shard's cells (cell_* above): which cells of its segments the ranges in its tree and the wide
  // tree cover (all of them, exclusive ones). Written under the shard's leaf lock (cover), read
  // without it by a fast holder's claim.
  std::atomic<std::uint32_t> cells{0};
  std::uint32_t slow_reads = 0;   // tree-path narrow readers since p_readers_slow was set or the last writer
  mutable std::uint32_t writer_exits = 0;  // writers that left under the current hold (see unlock_shard)
  std::uint64_t next_seq = 0;     // a shard's Lamport clock: see range_lock::take_seq
  std::size_t waiting = 0;        // nodes in the tree that are not granted
  range_node header;              // Boost.Intrusive header: only its links and color are used
  // The counts behind `cells`: ranges covering each cell (all, exclusive), and wide ranges covering
  // a whole segment of the shard (they cover every cell). Under the shard's leaf lock.
  std::uint32_t full_any = 0, full_x = 0;
  std::uint32_t any_n[cell_count] = {}, x_n[cell_count] = {};

  void init() noexcept { tree_algo::init_header(&header); }
  [[nodiscard]] range_node* root() const noexcept { return header.parent; }

  /// Requires: the shard's leaf lock held. Effects: counts a range (add) or uncounts it (!add) in
  /// the cells of `mask`, or in every cell if `full`, as exclusive if x; then stores the cells whose
  /// bits changed ((13) release, pairs with (14): the ranges' removals happen-before a claim that
  /// finds their cells clear). Complexity: O(cell_count).
  void cover(std::uint32_t mask, bool full, bool x, bool add) noexcept {
    const auto step = [add](std::uint32_t& c) { add ? ++c : --c; };
    if (full) {
      step(full_any);
      if (x) step(full_x);
      mask = cell_all;
    } else {
      for (std::uint32_t m = mask; m != 0; m &= m - 1) {
        const auto c = static_cast<unsigned>(std::countr_zero(m));
        step(any_n[c]);
        if (x) step(x_n[c]);
      }
    }
    // (r) relaxed: written only under this shard's leaf lock, which we hold.
    const std::uint32_t old = cells.load(std::memory_order_relaxed);
    std::uint32_t b = old;
    for (std::uint32_t m = mask; m != 0; m &= m - 1) {
      const auto c = static_cast<unsigned>(std::countr_zero(m));
      const std::uint32_t a = std::uint32_t{1} << c, e = a << cell_x_shift;
      b = (full_any != 0 || any_n[c] != 0) ? (b | a) : (b & ~a);
      b = (full_x != 0 || x_n[c] != 0) ? (b | e) : (b & ~e);
    }
    if (b != old) cells.store(b, std::memory_order_release);  // (13)
  }

  static void recompute(range_node* n) noexcept {
    std::uint64_t m = n->last;
    bool hx = n->mode == lock_mode::exclusive;
    std::uint64_t mx = hx ? n->last : 0;
    for (range_node* c : {n->left, n->right}) {
      if (!c) continue;
      m = std::max(m, c->max_last);
      if (c->has_x) {
        mx = hx ? std::max(mx, c->max_last_x) : c->max_last_x;
        hx = true;
      }
    }
    n->max_last = m;
    n->max_last_x = mx;
    n->has_x = hx;
  }
  // After an insertion or erasure whose deepest structural change is at `n`: every node whose
  // children changed (including by rebalancing rotations) is on the path from n to the root or a
  // child of a node on it, and its own children's subtrees are then already correct.
  void fix_path(range_node* n) noexcept {
    for (range_node* below = nullptr; n != &header; below = n, n = n->parent) {
      if (n->left && n->left != below) recompute(n->left);  // `below` was just recomputed
      if (n->right && n->right != below) recompute(n->right);
      recompute(n);
    }
  }

  // insert and erase handle the uncontended case (the only node) inline, the rest out of line.
  /// Effects: links n (seq = its arrival number). Returns: false when no node already in the tree
  /// overlaps n and conflicts with it (shared nodes do not conflict with a shared n); true when one
  /// may (the caller then classifies n). O(log n).
  bool insert(range_node& n, std::uint64_t seq) noexcept {
    n.seq = seq;
    n.left = n.right = nullptr;
    if (!header.parent) {  // the only node: link it as the (black) root directly
      n.parent = &header;
      n.color = range_node_traits::black();
      header.parent = header.left = header.right = &n;
      n.max_last = n.last;
      n.has_x = n.mode == lock_mode::exclusive;
      n.max_last_x = n.has_x ? n.last : 0;
      return false;
    }
    return insert_general(n);
  }
  // Insertion with one descent and no walk back to the root: every node on the search path gets n in
  // its subtree, so its augmentation is raised on the way down, and the new leaf is linked where the
  // descent ended (insert_unique_commit: the position insert_equal_upper_bound would choose).
  // Rebalancing after an insertion rotates only nodes of that path (n, its parent and grandparent
  // where the recolouring climb stops): exactly the path nodes whose parent changed. Only they are
  // recomputed, children first (three passes: they span at most three levels). A path deeper than
  // max_path (impossible for a red-black tree of fewer than 2^64 nodes) falls back to fix_path.
  // The same descent answers whether n overlaps a conflicting node: the nodes before n in offset
  // order are the path nodes where it went right and their left subtrees (their augmentation says
  // whether one of them reaches n.off); the nodes after n that start inside it begin with n's
  // successor, the last path node where it went left (if that one starts inside n, the answer is
  // "may": the caller's full walk decides).
  static constexpr unsigned max_path = 128;
  bool insert_general(range_node& n) noexcept {
    range_node* path[max_path];
    range_node* up[max_path];  // each path node's parent before the insertion
    unsigned depth = 0;
    const bool nx = n.mode == lock_mode::exclusive;
    bool overlap = false;
    range_node* succ = nullptr;
    tree_algo::insert_commit_data at;
    at.node = &header;
    const auto reaches = [&](const range_node* s) {  // a conflicting node of subtree s ends at or after n.off
      return nx ? s->max_last >= n.off : (s->has_x && s->max_last_x >= n.off);
    };
    for (range_node* x = header.parent; x;) {
      if (depth == max_path) {
        tree_algo::insert_equal_upper_bound(&header, &n, [](const range_node* a, const range_node* b) { return a->off < b->off; });
        fix_path(&n);
        return true;
      }
      path[depth] = x;
      up[depth++] = x->parent;
      at.node = x;
      at.link_left = n.off < x->off;
      if (!at.link_left) {  // x and its left subtree lie before n
        if (x->last >= n.off && (nx || x->mode == lock_mode::exclusive)) overlap = true;
        if (x->left && reaches(x->left)) overlap = true;
      } else {
        succ = x;
      }
      x->max_last = std::max(x->max_last, n.last);
      if (nx) {
        x->max_last_x = x->has_x ? std::max(x->max_last_x, n.last) : n.last;
        x->has_x = true;
      }
      x = at.link_left ? x->left : x->right;
    }
    if (succ && succ->off <= n.last) overlap = true;
    n.max_last = n.last;
    n.has_x = nx;
    n.max_last_x = nx ? n.last : 0;
    tree_algo::insert_unique_commit(&header, &n, at);
    range_node* moved[3];
    unsigned k = 0;
    bool more = false;  // more rotated nodes than an insertion can rotate: not expected; stay correct
    const auto note = [&](range_node* x) {
      if (k < 3)
        moved[k++] = x;
      else
        more = true;
    };
    if (depth > 0 && n.parent != path[depth - 1]) note(&n);
    for (unsigned i = depth; i-- > 0;)
      if (path[i]->parent != up[i]) note(path[i]);
    if (more) {
      fix_path(&n);
      return overlap;
    }
    for (int pass = 0; pass < 3; ++pass)
      for (unsigned i = 0; i < k; ++i) recompute(moved[i]);
    return overlap;
  }

  void erase(range_node& z) noexcept {
    if (z.parent == &header && !z.left && !z.right) {  // the only node
      tree_algo::init_header(&header);
      z.parent = nullptr;
      return;
    }
    erase_general(z);
  }
  // y: the node that leaves its place (z itself, or z's successor, which then takes z's place); x: the
  // child of y that takes y's place. Boost's erase rotates only when the colour removed (y's) is
  // black and x is absent or black; otherwise the only nodes whose children change are y's old parent
  // (`deepest`) and, if y moved, y itself and z's parent, all on the path from `deepest` to the root,
  // and augmentations only shrink: fix_up climbs that path and stops at the first node above y whose
  // augmentation is unchanged. After a rotation, fix_path.
  void erase_general(range_node& z) noexcept {
    range_node* y = &z;
    range_node* x;
    range_node* deepest;
    if (!z.left || !z.right) {
      x = z.left ? z.left : z.right;
      deepest = z.parent;
    } else {
      y = z.right;
      while (y->left) y = y->left;
      x = y->right;
      deepest = (y == z.right) ? y : y->parent;
    }
    const bool no_rotation =
        y->color == range_node_traits::red() || (x && x->color == range_node_traits::red());
    tree_algo::erase(&header, &z);
    if (deepest != &header) {
      if (no_rotation)
        fix_up(deepest, y == &z ? nullptr : y);
      else
        fix_path(deepest);
    }
    z.parent = z.left = z.right = nullptr;
  }
  // Recomputes n and its ancestors; once past `moved` (a node whose old augmentation says nothing
  // about its new place; nullptr: none), stops at the first node whose augmentation is unchanged.
  void fix_up(range_node* n, const range_node* moved) noexcept {
    bool past = moved == nullptr;
    for (; n != &header; n = n->parent) {
      const std::uint64_t m = n->max_last, mx = n->max_last_x;
      const bool hx = n->has_x;
      recompute(n);
      if (past && n->max_last == m && n->has_x == hx && (!hx || n->max_last_x == mx)) return;
      if (n == moved) past = true;
    }
  }

  /// Returns: whether some node of the subtree at x overlaps [off, last] (only exclusive ones if
  /// excl_only). One descent: the nodes starting at or before `last` are the path nodes where it
  /// goes right and their left subtrees. O(log n).
  static bool any_overlap(const range_node* x, std::uint64_t off, std::uint64_t last, bool excl_only) noexcept {
    while (x) {
      if (x->off > last) {
        x = x->left;
        continue;
      }
      if (x->last >= off && (!excl_only || x->mode == lock_mode::exclusive)) return true;
      if (const range_node* l = x->left)
        if (excl_only ? (l->has_x && l->max_last_x >= off) : l->max_last >= off) return true;
      x = x->right;
    }
    return false;
  }

  /// Calls f(node*) for every node overlapping [off, last] (only exclusive ones if excl_only), in
  /// offset order, until f returns false. Returns false if stopped. O(log n + visited).
  template <class F>
  static bool for_each_overlap(range_node* n, std::uint64_t off, std::uint64_t last, bool excl_only, F&& f) {
    while (n) {
      if (excl_only ? (!n->has_x || n->max_last_x < off) : n->max_last < off) return true;
      if (!for_each_overlap(n->left, off, last, excl_only, f)) return false;
      if (n->off > last) return true;
      if (n->last >= off && (!excl_only || n->mode == lock_mode::exclusive))
        if (!f(n)) return false;
      n = n->right;  // tail position
    }
    return true;
  }

  template <class F>
  static void in_order(const range_node* n, F&& f) {
    for (; n; n = n->right) {
      in_order(n->left, f);
      f(n);
    }
  }

  static void check_subtree(const range_node* n, bool& ok, std::size_t& waiting) {
    if (!n) return;
    waiting += !n->granted;
    std::uint64_t m = n->last, mx = n->mode == lock_mode::exclusive ? n->last : 0;
    bool hx = n->mode == lock_mode::exclusive;
    for (const range_node* c : {n->left, n->right}) {
      if (!c) continue;
      if (c->parent != n) ok = false;
      check_subtree(c, ok, waiting);
      m = std::max(m, c->max_last);
      if (c->has_x) {
        mx = hx ? std::max(mx, c->max_last_x) : c->max_last_x;
        hx = true;
      }
    }
    if (n->left && n->left->off > n->off) ok = false;
    if (n->right && n->right->off < n->off) ok = false;
    if (n->max_last != m || n->has_x != hx || (hx && n->max_last_x != mx)) ok = false;
  }
};

struct deferred_t {};

/// One slot of a range_lock's fast readers: 0, or the address of a granted shared range_node that is
/// NOT in any tree, with its shard in the low 4 bits. The slot's thread writes it (publish, release);
/// a writer of that shard moves the node into the shard's tree by swinging the slot to 0 (migration).
/// One cache line per slot, so readers on different slots share no written line.
struct alignas(64) reader_slot {
  std::atomic<std::uintptr_t> v{0};
};
inline constexpr std::uintptr_t slot_shard_mask = 15;  // shard_count - 1; range_node is 16-aligned

}  // namespace rl
}  // namespace detail

/// A reader/writer lock over byte ranges of a 64-bit offset space (one per file attr).
/// Non-copyable, non-movable. Size: about 6.4 KiB (shard_count + 1 cache-line-aligned trees with
/// their cells' counts, and reader_slot_count one-line reader slots).
class alignas(64) range_lock {
 public:
  /// The number of independently locked shards (see "Sharding" in the file comment).
  static constexpr unsigned shard_count = 16;
  /// Slots for shared ranges taken on the readers' fast path (see "Readers" in the file comment).
  static constexpr unsigned reader_slot_count = 16;
  static_assert(shard_count - 1 == detail::rl::slot_shard_mask, "a reader slot tags its node with the shard");
  /// Default segment size 2^16 = 64 KiB: 16 segments (1 MiB of a file) map to 16 distinct shards,
  /// and page-sized and page-aligned ranges up to 64 KiB are always narrow. The macro
  /// FAULTSAFE_RANGE_LOCK_SEGMENT_SHIFT overrides it (the same value in every translation unit; the
  /// test suite builds the range_lock tests a second time with 32-byte segments so that their small
  /// offsets exercise every shard, the wide tree and their interplay).
  static constexpr unsigned default_segment_shift = FAULTSAFE_RANGE_LOCK_SEGMENT_SHIFT;
  static constexpr unsigned max_segment_shift = 63;
  static_assert(default_segment_shift <= max_segment_shift, "FAULTSAFE_RANGE_LOCK_SEGMENT_SHIFT must be <= 63");

  /// Effects: an empty lock named `name` (for reports) at lock-order rank `rank`, with 64 KiB segments.
  /// Requires: `name` outlives the lock. Complexity: O(shard_count). Throws: nothing.
  explicit range_lock(const char* name = "attr range", unsigned rank = rank::attr_range) noexcept
      : name_(name), rank_(rank), shift_(default_segment_shift) {
    for (auto& s : shards_) s.init();
    wide_.init();
  }
  /// Effects: as above with segments of 2^segment_shift bytes.
  /// Any shift is correct; it only decides which ranges are narrow (inside one segment: one shard
  /// lock) and which are wide (every shard lock). Throws: std::system_error(EINVAL) if segment_shift
  /// > max_segment_shift.
  range_lock(const char* name, unsigned rank, unsigned segment_shift) : range_lock(name, rank) {
    if (segment_shift > max_segment_shift)
      throw std::system_error(EINVAL, std::generic_category(), "range_lock: segment_shift > 63");
    shift_ = segment_shift;
  }
  /// Requires: no range held or waited for.
  ~range_lock() {
    if constexpr (default_checks::enabled) {
      bool busy = wide_.root() != nullptr;
      for (const auto& s : shards_)
        busy = busy || s.root() != nullptr || s.fast_x.load(std::memory_order_relaxed) != 0;  // (r) owner's view
      for (const auto& r : readers_) busy = busy || r.v.load(std::memory_order_relaxed) != 0;  // (r) owner's view
      if (busy) {
        std::fprintf(stderr, "faultsafe: range_lock '%s' destroyed while ranges are held or waited for\n", name_);
        std::abort();
      }
    }
  }
  range_lock(const range_lock&) = delete;
  range_lock& operator=(const range_lock&) = delete;

  /// Effects: a snapshot of the ranges (granted or waiting) that overlap [off, off + len) and conflict
  /// with `m`, in offset order. Never blocks on ranges (only on leaf locks, briefly).
  /// Throws: std::system_error(EINVAL/EOVERFLOW) for a bad range; std::bad_alloc.
  /// Complexity: O(log n + k) (plus O(shard_count) for a range spanning segments).
  /// Thread-safety: any thread. Diagnostics only: allocates.
  [[nodiscard]] std::vector<range_holder> conflicting_holders(std::uint64_t off, std::uint64_t len, lock_mode m) const {
    const std::uint64_t last = detail::rl::checked_last(off, len);
    const unsigned d = domain_of(off, last);
    std::vector<range_holder> out;
    lock_domain(d);
    if (m == lock_mode::exclusive) mutable_self().migrate_readers_locked(d);  // fast readers conflict too
    try {
      for_each_overlap_in(d, off, last, m == lock_mode::shared, [&](const node* o) {
        out.push_back(holder_of(*o));
        return true;
      });
    } catch (...) {
      unlock_domain(d);
      throw;
    }
    unlock_domain(d);
    sort_by_offset(out);
    return out;
  }

  /// Effects: a snapshot of every range in the lock (granted and waiting), in offset order.
  /// Throws: std::bad_alloc. Complexity: O(n). Thread-safety: any thread. Diagnostics only.
  [[nodiscard]] std::vector<range_holder> holders() const {
    std::vector<range_holder> out;
    lock_domain(all);
    mutable_self().migrate_readers_locked(all);  // list the fast readers too
    try {
      for (const auto& s : shards_) tree::in_order(s.root(), [&](const node* n) { out.push_back(holder_of(*n)); });
      tree::in_order(wide_.root(), [&](const node* n) { out.push_back(holder_of(*n)); });
    } catch (...) {
      unlock_domain(all);
      throw;
    }
    unlock_domain(all);
    sort_by_offset(out);
    return out;
  }

  [[nodiscard]] const char* name() const noexcept { return name_; }
  [[nodiscard]] unsigned rank() const noexcept { return rank_; }
  /// log2 of the segment size.
  [[nodiscard]] unsigned segment_shift() const noexcept { return shift_; }

  /// Testing aid: verifies every tree's order and augmentation, the waiting counts, that each range
  /// sits in the tree its extent selects, and every shard's cells and their counts. Complexity:
  /// O(n * shard_count).
  [[nodiscard]] bool check_invariants() const {
    lock_domain(all);
    bool ok = true;
    for (unsigned i = 0; i < shard_count; ++i) {
      std::size_t waiting = 0;
      tree::check_subtree(shards_[i].root(), ok, waiting);
      ok = ok && waiting == shards_[i].waiting;
      tree::in_order(shards_[i].root(), [&](const node* n) { ok = ok && n->domain == i && domain_of(n->off, n->last) == i; });
    }
    std::size_t waiting = 0;
    tree::check_subtree(wide_.root(), ok, waiting);
    ok = ok && waiting == wide_.waiting;
    tree::in_order(wide_.root(), [&](const node* n) { ok = ok && n->domain == all && domain_of(n->off, n->last) == all; });
    // The cells: counted again from the trees.
    struct counts {
      std::uint32_t full_any = 0, full_x = 0, any_n[detail::rl::cell_count] = {}, x_n[detail::rl::cell_count] = {};
    };
    counts want[shard_count];
    const auto count = [&](const node* n) {
      const bool x = n->mode == lock_mode::exclusive;
      coverage(*n, [&](unsigned i, std::uint32_t mask, bool full) {
        counts& c = want[i];
        if (full) {
          ++c.full_any;
          c.full_x += x;
        }
        for (unsigned k = 0; k < detail::rl::cell_count; ++k)
          if (mask & (std::uint32_t{1} << k)) {
            ++c.any_n[k];
            c.x_n[k] += x;
          }
      });
    };
    for (const auto& s : shards_) tree::in_order(s.root(), count);
    tree::in_order(wide_.root(), count);
    for (unsigned i = 0; i < shard_count; ++i) {
      const tree& s = shards_[i];
      const counts& c = want[i];
      ok = ok && s.full_any == c.full_any && s.full_x == c.full_x;
      std::uint32_t bits = 0;
      for (unsigned k = 0; k < detail::rl::cell_count; ++k) {
        ok = ok && s.any_n[k] == c.any_n[k] && s.x_n[k] == c.x_n[k];
        if (c.full_any != 0 || c.any_n[k] != 0) bits |= std::uint32_t{1} << k;
        if (c.full_x != 0 || c.x_n[k] != 0) bits |= std::uint32_t{1} << (k + detail::rl::cell_x_shift);
      }
      // (r) relaxed: written only under the shard's lock, which we hold.
      ok = ok && s.cells.load(std::memory_order_relaxed) == bits;
    }
    unlock_domain(all);
    return ok;
  }

 private:
  friend class range_guard;
  template <std::size_t>
  friend class ordered_range_guards;
  using node = detail::rl::range_node;
  using tree = detail::rl::range_tree;
  enum class verdict { grantable, self_only, blocked };

  /// The domain of a wide range: every shard's leaf lock (taken in index order).
  static constexpr unsigned all = shard_count;
  using reader_slot = detail::rl::reader_slot;

  /// The diagnostics are logically const but move fast readers into the trees (they list tree nodes).
  range_lock& mutable_self() const noexcept { return const_cast<range_lock&>(*this); }

  // ---- readers' fast path (see "Readers" in the file comment) ------------------------------------
  enum class fast_result { none, published, migrated };
  /// Tree-path readers in a row, without a writer, after which a shard's readers may use the fast
  /// path again (after a writer found fast readers' flag set and scanned). Bounds the scans a
  /// write-heavy shard pays: at most one per fast_path_rearm reads. Small, because a shard that
  /// sees a writer every few reads (random 10% writes spread over 16 shards: about 9 reads between two
  /// writers of a shard) would otherwise keep its readers on the tree path almost always.
  static constexpr std::uint32_t fast_path_rearm = 4;
  static std::uintptr_t slot_tag(const node& n) noexcept { return reinterpret_cast<std::uintptr_t>(&n) | n.domain; }

  /// Requires: n shared, narrow (domain < all), initialised, not linked. Effects: grants n without the
  /// leaf lock if no exclusive request covers its shard: publishes it in a free reader slot of its
  /// thread (its id's slot or the next) and re-checks. Returns: published (granted, in *slot);
  /// migrated (granted, and a writer that arrived meanwhile has already moved it into its tree);
  /// none (nothing taken: use the tree). Complexity: O(1); no system call.
  fast_result try_fast_shared(node& n, reader_slot*& slot) noexcept {
    using namespace detail::rl;
    tree& t = *n.home;
    const auto fast_ok = [](std::uint32_t p) { return (p & p_readers_slow) == 0 && p < p_writer; };
    // (r) relaxed: a hint only; (4) decides.
    if (!fast_ok(t.m.payload(std::memory_order_relaxed))) return fast_result::none;
    const std::uintptr_t tag = slot_tag(n);
    const unsigned h = n.thread_id % reader_slot_count;
    for (unsigned i = 0; i < 2; ++i) {
      reader_slot& sl = readers_[(h + i) % reader_slot_count];
      // (r) relaxed: a hint only (the CAS below decides), skips a CAS on a slot in use.
      std::uintptr_t e = sl.v.load(std::memory_order_relaxed);
      if (e != 0) continue;
      // (3) seq_cst, with (4): the reader's half of the Dekker handshake with a writer's (5) and (6):
      // in the single total order either (4) sees the writer's (5), or the writer's (6) sees this
      // publication and migrates the node. Also releases the node's fields to the migrating writer (6).
      if (!sl.v.compare_exchange_strong(e, tag, std::memory_order_seq_cst, std::memory_order_relaxed)) continue;
      // (4) seq_cst, see (3) and (9); acquire, pairs with (8) and (10): the range of the last writer of
      // this shard is released before the data under the reader's range is read.
      if (fast_ok(t.m.payload(std::memory_order_seq_cst))) {
        slot = &sl;
        return fast_result::published;
      }
      // A writer arrived (or switched the shard to the tree path): withdraw, unless a writer has
      // already migrated the node (then it is granted in the tree, before the writer).
      // (r) relaxed: nothing was read under the withdrawn publication.
      e = tag;
      if (sl.v.compare_exchange_strong(e, 0, std::memory_order_relaxed, std::memory_order_relaxed))
        return fast_result::none;
      return fast_result::migrated;
    }
    return fast_result::none;
  }

  /// Releases a published fast reader. Returns false if a writer migrated it (it is then a granted
  /// node of its tree, released through the leaf lock).
  static bool release_fast(reader_slot& sl, const node& n) noexcept {
    std::uintptr_t e = slot_tag(n);
    // (7) release, pairs with (6): what the reader read happens-before the grant of a writer that
    // finds the slot empty.
    return sl.v.compare_exchange_strong(e, 0, std::memory_order_release, std::memory_order_relaxed);
  }

  /// Requires: domain d locked. Effects: moves every fast reader of d's shards into its tree as a
  /// granted node (arrival number 0: before every queued request). Complexity: O(reader_slot_count).
  void migrate_readers_locked(unsigned d) noexcept {
    for (auto& sl : readers_) {
      // (6) seq_cst, see (3); acquire, pairs with (3) (the node's fields) and (7) (the reader is out).
      std::uintptr_t v = sl.v.load(std::memory_order_seq_cst);
      if (v == 0 || (d != all && (v & detail::rl::slot_shard_mask) != d)) continue;
      // (6) acq_rel on success: takes the node over from its reader (who then releases it through the
      // leaf lock). A failure means the reader released or withdrew it (a node published later sees
      // our (5) at its (4)).
      if (!sl.v.compare_exchange_strong(v, 0, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
      node& n = *reinterpret_cast<node*>(v & ~detail::rl::slot_shard_mask);
      tree_insert_locked(shards_[v & detail::rl::slot_shard_mask], n, 0);
      n.granted = true;
      // (r) relaxed: the reader never reads its word while it holds the range.
      n.word.store(detail::rl::w_granted, std::memory_order_relaxed);
    }
  }

  /// Requires: domain d locked; an exclusive request of domain d enters the lock, already counted in
  /// the writers of d's shards if `counted` (by the locking CAS), else counted here. Effects: then no
  /// new fast reader enters those shards; migrates the existing ones (if a shard's p_readers_slow flag
  /// is clear, there may be some: the flag is then set, and the shard's readers use the tree path until
  /// fast_path_rearm of them came in a row without a writer). Complexity: O(1) for a narrow request
  /// when its shard's readers are on the tree path, else O(reader_slot_count); O(shard_count +
  /// reader_slot_count) for a wide one.
  void add_writer_locked(unsigned d, bool counted) noexcept {
    bool scan = false;
    const unsigned first = d == all ? 0 : d, end = d == all ? shard_count : d + 1;
    for (unsigned i = first; i < end; ++i) {
      tree& t = shards_[i];
      // (5) seq_cst, see (3): the count, made by the locking CAS (futex_mutex's (1)) or here.
      if (!counted) t.m.add_payload(detail::rl::p_writer);
      t.slow_reads = 0;
      // (r) relaxed: the flag changes only under the shard's lock, which we hold.
      if ((t.m.payload(std::memory_order_relaxed) & detail::rl::p_readers_slow) == 0) {
        t.m.add_payload(detail::rl::p_readers_slow);  // (5) seq_cst: before the scan (6)
        scan = true;
      }
    }
    if (scan) migrate_readers_locked(d);
  }
  // ---- fast holder (see "Fast holder" in the file comment) ----------------------------------------
  enum class holder_result { none, granted, moved };
  /// The cells of its segment that a narrow range [off, last] covers (cell_count bits).
  [[nodiscard]] std::uint32_t cells_of(std::uint64_t off, std::uint64_t last) const noexcept {
    return cell_span(cell_of(off), cell_of(last));
  }
  [[nodiscard]] unsigned cell_of(std::uint64_t x) const noexcept {
    const unsigned cs = shift_ > 4 ? shift_ - 4 : 0;  // log2(segment size / cell_count), at least 0
    return static_cast<unsigned>((x & ((std::uint64_t{1} << shift_) - 1)) >> cs);
  }
  static std::uint32_t cell_span(unsigned first, unsigned last) noexcept {
    return ((std::uint32_t{2} << last) - 1) & ~((std::uint32_t{1} << first) - 1);
  }
  /// Calls f(shard, cells, full) for every shard whose cells n covers: a narrow n its shard's cells
  /// of its extent; a wide n, in each shard, the cells of its first and last segments that belong
  /// to the shard, or every cell (full) if it covers a whole segment of the shard. Complexity:
  /// O(shard_count).
  template <class F>
  void coverage(const node& n, F&& f) const noexcept {
    if (n.domain != all) {
      f(unsigned{n.domain}, cells_of(n.off, n.last), false);
      return;
    }
    const std::uint64_t a = n.off >> shift_, b = n.last >> shift_;  // a < b
    std::uint32_t part[shard_count] = {};
    bool full[shard_count] = {};
    if (b - a - 1 >= shard_count) {
      for (bool& x : full) x = true;
    } else {
      for (std::uint64_t k = a + 1; k < b; ++k) full[k % shard_count] = true;
    }
    part[a % shard_count] |= cell_span(cell_of(n.off), detail::rl::cell_count - 1);
    part[b % shard_count] |= cell_span(0, cell_of(n.last));
    for (unsigned i = 0; i < shard_count; ++i)
      if (full[i] || part[i] != 0) f(i, full[i] ? 0 : part[i], full[i]);
  }
  /// Requires: the domain of n locked. Effects: links n into t (its tree) / unlinks it, and counts it
  /// in / out of the cells of the shards it covers. Returns: as range_tree::insert.
  bool tree_insert_locked(tree& t, node& n, std::uint64_t seq) noexcept {
    const bool x = n.mode == lock_mode::exclusive;
    coverage(n, [&](unsigned i, std::uint32_t mask, bool full) { shards_[i].cover(mask, full, x, true); });
    return t.insert(n, seq);
  }
  void tree_erase_locked(tree& t, node& n) noexcept {
    t.erase(n);
    const bool x = n.mode == lock_mode::exclusive;
    coverage(n, [&](unsigned i, std::uint32_t mask, bool full) { shards_[i].cover(mask, full, x, false); });
  }

  /// Requires: n narrow (domain < all), initialised, not linked. Effects: grants n without the leaf
  /// lock and without entering the tree, if its shard has no fast holder, its leaf lock is free,
  /// nothing in its tree or the wide tree covers a cell of n's extent and conflicts with n (by the
  /// shard's cells), and, for an exclusive n, no fast reader can be granted in the shard (its readers
  /// are on the tree path or it has a writer): claims the shard's fast_x with n's address, then
  /// re-checks the lock and the cells. Returns: granted; none (nothing taken: use the tree); moved (the
  /// re-check failed, and a holder of the leaf lock had already moved n into the tree as a granted
  /// node: the caller takes it out through the leaf lock, then queues it there). Complexity: O(1).
  holder_result try_fast_holder(node& n) noexcept {
    using namespace detail::rl;
    tree& t = *n.home;
    const bool x = n.mode == lock_mode::exclusive;
    // The word admits n: the lock is free and, for an exclusive n, no fast reader can be granted
    // (p_readers_slow or a writer: a payload other than 0).
    const auto word_ok = [x](std::uint32_t p) { return p != leaf_mutex::busy && (p != 0 || !x); };
    // The bits of the cells n may conflict in: any range's for an exclusive n, exclusive ones' for a
    // shared n (computed when some cell is set).
    std::uint32_t mine = 0;
    const auto cells_ok = [&](std::uint32_t c) {
      if (c == 0) return true;
      if (mine == 0) mine = cells_of(n.off, n.last) << (x ? 0 : cell_x_shift);
      return (c & mine) == 0;
    };
    // (r) relaxed: hints only (skip a claim bound to fail); the claim and the re-check decide.
    const std::uint32_t p = t.m.payload_if_free(std::memory_order_relaxed), c = t.cells.load(std::memory_order_relaxed);
    // A shared n beside other ranges in a shard without a writer takes the tree path: as a
    // tree-path reader it counts towards fast_path_rearm, so the shard's readers return to the
    // reader slots (which write no shared line) instead of taking turns on fast_x.
    if (!word_ok(p) || !cells_ok(c) || (!x && c != 0 && p < p_writer)) return holder_result::none;
    (void)FAULTSAFE_INJECT(range_claim_stall);  // tests: a stall here (compiled out by default)
    n.granted = true;
    n.seq = 0;
    std::uintptr_t e = 0;
    // (9) seq_cst: with (11), the holder's half of a Dekker handshake with a leaf lock holder's lock
    // (futex_mutex's (1)) and (12): either (11) sees the lock taken (or what its holder left), or
    // (12) sees the claim and moves n into the tree. Acquire, pairs with (10): the previous fast
    // holder released before n is granted. Release, pairs with (12): n's fields are set before a
    // lock holder moves n into the tree.
    if (!t.fast_x.compare_exchange_strong(e, reinterpret_cast<std::uintptr_t>(&n), std::memory_order_seq_cst,
                                          std::memory_order_relaxed)) {
      n.granted = false;
      return holder_result::none;
    }
    (void)FAULTSAFE_INJECT(range_claimed_stall);  // tests: a stall here (compiled out by default)
    // (11) seq_cst, see (9); acquire, pairs with the leaf lock's (2) and (8): the ranges released
    // under the last hold are out, then (14) acquire, pairs with (13): so are the ranges whose cells
    // read clear. Ranges that enter after the claim meet n in the tree (moved there first).
    if (word_ok(t.m.payload_if_free(std::memory_order_seq_cst)) && cells_ok(t.cells.load(std::memory_order_acquire)))
      return holder_result::granted;
    return withdraw_claim(n);
  }
  /// Requires: n claimed by try_fast_holder, whose re-check failed. Effects: withdraws the claim
  /// (one swap back to 0). Returns none, or moved if a holder of the leaf lock moved n into the tree
  /// first (n is then a granted node of its tree).
  [[gnu::noinline]] static holder_result withdraw_claim(node& n) noexcept {
    auto e = reinterpret_cast<std::uintptr_t>(&n);
    // (r) relaxed: n was never granted to its caller; the swap only withdraws the claim.
    if (!n.home->fast_x.compare_exchange_strong(e, 0, std::memory_order_relaxed, std::memory_order_relaxed))
      return holder_result::moved;
    n.granted = false;
    return holder_result::none;
  }
  /// Requires: n granted by try_fast_holder. Effects: releases n if it is still the fast holder (one
  /// swap back to 0). Returns false if a holder of the leaf lock has moved it into the tree: it is
  /// then a granted node of its tree, released through the leaf lock. No ABA: only n's own claim
  /// writes n's address.
  static bool release_fast_holder(const node& n) noexcept {
    auto e = reinterpret_cast<std::uintptr_t>(&n);
    // (10) release, pairs with (9) and (12): what the holder wrote happens-before the next holder of
    // an overlapping range (a fast holder's claim, or a leaf lock holder that finds fast_x at 0).
    return n.home->fast_x.compare_exchange_strong(e, 0, std::memory_order_release, std::memory_order_relaxed);
  }
  /// Requires: the leaf lock of shard s held (just taken). Effects: if the shard has a fast holder,
  /// moves its node into the tree as a granted node (arrival number 0: before every queued request;
  /// nothing that overlaps it entered the shard since it was granted) and clears fast_x; an exclusive
  /// one is counted as a writer from then on. Complexity: O(log n), O(1) when there is none.
  void take_fast_x_locked(unsigned s) const noexcept {
    using namespace detail::rl;
    range_lock& self = mutable_self();  // the lock functions are const; the shard is not
    tree& t = self.shards_[s];
    // (12) seq_cst, see (9). The swap: acquire, pairs with (9) and (10).
    std::uintptr_t v = t.fast_x.load(std::memory_order_seq_cst);
    while (v != 0 && !t.fast_x.compare_exchange_weak(v, 0, std::memory_order_acquire, std::memory_order_acquire)) {
    }
    if (v == 0) return;  // none, or it released first
    node& n = *reinterpret_cast<node*>(v);
    self.tree_insert_locked(t, n, 0);
    // (r) relaxed: the holder never reads its word while it holds the range.
    n.word.store(w_granted, std::memory_order_relaxed);
    if (n.mode == lock_mode::exclusive) self.add_writer_locked(s, false);
  }

  /// Requires: domain d locked; an exclusive request of domain d has left the lock. Effects: its count
  /// is subtracted when each shard's lock is dropped ((8) release, pairs with (4)).
  void remove_writer_locked(unsigned d) noexcept {
    const unsigned first = d == all ? 0 : d, end = d == all ? shard_count : d + 1;
    for (unsigned i = first; i < end; ++i) ++shards_[i].writer_exits;
  }

  /// The shard of a range inside one segment, or `all` for a range spanning segments.
  [[nodiscard]] unsigned domain_of(std::uint64_t off, std::uint64_t last) const noexcept {
    const std::uint64_t a = off >> shift_, b = last >> shift_;
    return a == b ? static_cast<unsigned>(a & (shard_count - 1)) : all;
  }
  tree& tree_of(const node& n) noexcept { return *n.home; }
  tree* home_of(unsigned d) noexcept { return d == all ? &wide_ : &shards_[d]; }
  /// The leaf lock(s) of n's domain; `add_writer`: n is exclusive and about to be enqueued (counted in
  /// the writers of the domain's shards by the locking CAS itself).
  void lock_node(const node& n, bool add_writer = false) const noexcept FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if (n.domain != all) {
      n.home->m.lock(add_writer ? detail::rl::p_writer : 0);
      take_fast_x_locked(n.domain);
    } else {
      lock_domain(all, add_writer);
    }
  }
  void unlock_node(const node& n) const noexcept FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if (n.domain != all)
      unlock_shard(*n.home);
    else
      unlock_domain(all);
  }

  /// Lock order inside a range_lock: shard leaf locks in index order; all of them for `all` (one
  /// ordered batch of rank::leaf locks for the lock-order checks). Each shard's fast holder
  /// is moved into its tree as its lock is taken, so that every lock holder sees only trees.
  /// The domain functions hold a run-time set of shard locks (one, or all of them) across calls, which
  /// Clang's thread-safety analysis cannot name: they are outside it (the run-time checks still check
  /// every shard lock taken: rank::leaf, recursion, the ordered batch).
  void lock_domain(unsigned d, bool add_writer = false) const noexcept FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    const std::uint32_t add = add_writer ? detail::rl::p_writer : 0;
    if (d != all) {
      shards_[d].m.lock(add);
      take_fast_x_locked(d);
      return;
    }
    [[maybe_unused]] detail::ordered_scope batch;  // the shards' locks, in ascending address order
    for (unsigned i = 0; i < shard_count; ++i) {
      shards_[i].m.lock(add);
      take_fast_x_locked(i);
    }
  }
  void unlock_domain(unsigned d) const noexcept FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    if (d != all) {
      unlock_shard(shards_[d]);
      return;
    }
    for (unsigned i = shard_count; i-- > 0;) unlock_shard(shards_[i]);
  }
  /// Drops a shard's lock, subtracting the writers that left under this hold.
  void unlock_shard(const tree& t) const noexcept FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
    const std::uint32_t exits = t.writer_exits;
    t.writer_exits = 0;
    // (8) release: see try_fast_shared (4) and try_fast_holder (11).
    t.m.unlock(exits * detail::rl::p_writer);
  }

  /// Requires: domain d locked. Returns the arrival number of a request enqueued now. The shards'
  /// counters are Lamport clocks: a narrow request counts in its shard; a section holding every shard
  /// lock first raises every shard's counter to the maximum. Hence a request enqueued after another
  /// that it can overlap (so the two were serialized by a common leaf lock) has the larger number.
  std::uint64_t take_seq(unsigned d) noexcept {
    if (d != all) return ++shards_[d].next_seq;
    std::uint64_t g = 0;
    for (const auto& s : shards_) g = std::max(g, s.next_seq);
    ++g;
    for (auto& s : shards_) s.next_seq = g;
    return g;
  }

  static range_holder holder_of(const node& n) noexcept {
    return range_holder{n.off, detail::rl::length_of(n.off, n.last), n.mode, n.owner, n.thread_id, n.granted};
  }
  static void sort_by_offset(std::vector<range_holder>& v) {
    std::stable_sort(v.begin(), v.end(), [](const range_holder& a, const range_holder& b) { return a.offset < b.offset; });
  }

  /// Requires: domain d locked. Calls f(node*) for every node that may conflict with a request of
  /// domain d overlapping [off, last] (only exclusive ones if excl_only): narrow: its shard's tree and
  /// the wide tree; all: every tree. Stops when f returns false; returns false if stopped.
  template <class F>
  bool for_each_overlap_in(unsigned d, std::uint64_t off, std::uint64_t last, bool excl_only, F&& f) const {
    if (d != all) {
      if (!tree::for_each_overlap(shards_[d].root(), off, last, excl_only, f)) return false;
    } else {
      for (const auto& s : shards_)
        if (!tree::for_each_overlap(s.root(), off, last, excl_only, f)) return false;
    }
    return tree::for_each_overlap(wide_.root(), off, last, excl_only, f);
  }

  /// Requires: r's domain locked; r in its tree, not granted. See the state table.
  verdict classify_locked(node& r) const noexcept {
    const bool self_matters = r.policy != self_conflict::wait;
    bool other_granted = false, earlier_waiting = false;
    unsigned self = 0;
    for_each_overlap_in(r.domain, r.off, r.last, r.mode == lock_mode::shared, [&](node* o) {
      if (o == &r) return true;
      if (o->granted) {
        if (self_matters && o->owner == r.owner) {
          ++self;
          return true;
        }
        other_granted = true;
        return false;
      }
      if (o->seq < r.seq && !passes_locked(r, *o)) {
        earlier_waiting = true;
        return self_matters;  // keep looking for granted conflicts only if self-conflict matters
      }
      return true;
    });
    if (other_granted) return verdict::blocked;
    if (self > 0) return verdict::self_only;
    return earlier_waiting ? verdict::blocked : verdict::grantable;
  }

  /// Requires: r's domain locked; o a waiting node, earlier than r, that overlaps and conflicts with
  /// r. Returns true when o does not hold r up (the "queued writer" rule, see "Self-conflict" in the
  /// file comment): r's policy is not `wait` and o itself waits for a granted range of r's owner,
  /// found among the trees r's domain makes stable (a conflict elsewhere is not looked for: o then
  /// holds r up, as under plain FIFO). Complexity: O(log n + k) over o's extent.
  bool passes_locked(const node& r, const node& o) const noexcept {
    if (r.policy == self_conflict::wait) return false;
    return !for_each_overlap_in(r.domain, o.off, o.last, o.mode == lock_mode::shared, [&](const node* g) {
      return !(g != &o && g->granted && g->owner == r.owner && detail::rl::conflicts(g->mode, o.mode));
    });
  }

  static void set_word(node& n, std::uint32_t v, detail::rl::wake_list& wl) noexcept {
    // (1) release, pairs with (2) in range_guard::wait_for_grant.
    if (n.word.exchange(v, std::memory_order_release) == detail::rl::w_parked) wl.add(&n.word);
  }

  void grant_locked(node& n, detail::rl::wake_list& wl) noexcept {
    n.granted = true;
    --tree_of(n).waiting;
    set_word(n, detail::rl::w_granted, wl);
  }

  /// Requires: n's domain locked (or `all`); seq from take_seq under that hold; `counted`: an exclusive
  /// n is already counted in its shards' writers (lock_node(n, true)). Effects: inserts n;
  /// grants it if nothing blocks it. If it is blocked and !may_wait and no self-conflict handling
  /// applies, removes it again and returns false. Returns: whether n is now in its tree.
  bool enqueue_locked(node& n, bool may_wait, std::uint64_t seq, bool counted) noexcept {
    tree& t = tree_of(n);
    if (n.mode == lock_mode::exclusive) {
      add_writer_locked(n.domain, counted);
    } else if (n.domain != all &&
               // (r) relaxed: the flag changes only under the shard's lock, which we hold.
               (t.m.payload(std::memory_order_relaxed) & detail::rl::p_readers_slow) != 0 &&
               ++t.slow_reads >= fast_path_rearm) {
      // seq_cst (as (5)); the writer count sits in the same word, so a fast reader that finds the
      // flag clear at (4) also sees every writer counted so far.
      t.m.sub_payload(detail::rl::p_readers_slow);
    }
    const bool may_conflict = tree_insert_locked(t, n, seq);
    if (n.domain != all && !may_conflict &&
        (!wide_.root() || !tree::any_overlap(wide_.root(), n.off, n.last, n.mode == lock_mode::shared))) {
      // Nothing in the lock overlaps n and conflicts with it: granted (what classify_locked says).
      n.granted = true;
      // (r) relaxed: the requesting thread itself reads it after the leaf lock.
      n.word.store(detail::rl::w_granted, std::memory_order_relaxed);
      return true;
    }
    ++t.waiting;
    switch (classify_locked(n)) {
      case verdict::grantable:
        n.granted = true;
        --t.waiting;
        // (r) relaxed: the requesting thread itself reads it after the leaf lock (nobody is parked).
        n.word.store(detail::rl::w_granted, std::memory_order_relaxed);
        return true;
      case verdict::self_only:
        // (r) relaxed: the requesting thread itself reads it after the leaf lock.
        n.word.store(detail::rl::w_attention, std::memory_order_relaxed);
        return true;
      case verdict::blocked:
        if (may_wait) return true;
        --t.waiting;
        tree_erase_locked(t, n);
        if (n.mode == lock_mode::exclusive) remove_writer_locked(n.domain);
        return false;
    }
    return true;
  }

  /// Requires: n's domain locked, n in its tree. Effects: removes n (granted or waiting) and grants,
  /// or flags for self-conflict handling, every waiting node it was holding up. A narrow n cannot
  /// grant a waiting wide node (that needs every shard lock): it flags it (w_attention) and the
  /// waiter re-evaluates itself under all shard locks.
  void remove_locked(node& n, detail::rl::wake_list& wl) noexcept {
    tree& t = tree_of(n);
    if (!n.granted) --t.waiting;
    tree_erase_locked(t, n);
    n.granted = false;
    if (n.mode == lock_mode::exclusive) remove_writer_locked(n.domain);
    if (n.domain != all) {
      if (t.waiting == 0 && wide_.waiting == 0) return;
    } else {
      std::size_t w = wide_.waiting;
      for (const auto& s : shards_) w += s.waiting;
      if (w == 0) return;
    }
    for_each_overlap_in(n.domain, n.off, n.last, n.mode == lock_mode::shared, [&](node* w) {
      if (w->granted) return true;
      if (w->domain == all && n.domain != all) {
        set_word(*w, detail::rl::w_attention, wl);
        return true;
      }
      switch (classify_locked(*w)) {
        case verdict::grantable: grant_locked(*w, wl); break;
        case verdict::self_only: set_word(*w, detail::rl::w_attention, wl); break;
        case verdict::blocked: break;
      }
      return true;
    });
  }

  void collect_conflicts_locked(node& r, std::vector<range_holder>& out,
                                std::vector<source_location>& where) const {
    for_each_overlap_in(r.domain, r.off, r.last, r.mode == lock_mode::shared, [&](node* o) {
      if (o != &r && o->granted) {
        out.push_back(holder_of(*o));
        where.push_back(o->where);
      }
      return true;
    });
  }

  tree shards_[shard_count];
  tree wide_;  // ranges spanning segments: written under every shard lock, read under any one
  reader_slot readers_[reader_slot_count];  // the readers' fast path
  const char* name_;
  unsigned rank_;
  unsigned shift_;
};

/// RAII holder of one range of a range_lock. Holds its tree node inside itself. Non-copyable,
/// non-movable. A guard is used by one thread at a time.
class range_guard {
 public:
  /// Effects: blocks until [off, off + len) is locked in mode m (see the state table and the
  /// self-conflict rules in the file comment). Throws: std::system_error(EINVAL) if len == 0,
  /// (EOVERFLOW) if off + len exceeds 2^64 (len == to_end is fine), (EDEADLK) for a self-conflict with
  /// self_conflict::fail or when the wait-for graph breaks a reported cycle at this wait; what the
  /// violation handler throws. On a throw nothing is held.
  /// Complexity: O(log n + k) plus waiting. Lock order: rank lock.rank(); see the file comment.
  range_guard(range_lock& lock, std::uint64_t off, std::uint64_t len, lock_mode m, range_options opt = {},
              source_location where = source_location::current())
      : lock_(&lock) {
    init(off, detail::rl::checked_last(off, len), m, opt, where);
    acquire(false, std::chrono::steady_clock::time_point::max());
  }
  /// As above, but never waits: owns_lock() tells whether the range was granted at once (a
  /// self-conflict with self_conflict::grant is granted, after its report).
  range_guard(range_lock& lock, std::uint64_t off, std::uint64_t len, lock_mode m, std::try_to_lock_t,
              range_options opt = {}, source_location where = source_location::current())
      : lock_(&lock) {
    init(off, detail::rl::checked_last(off, len), m, opt, where);
    acquire(true, std::chrono::steady_clock::time_point::min());
  }
  /// As above, but waits at most `timeout`; owns_lock() tells. On expiry the request leaves the queue
  /// (waiters it held up are re-evaluated).
  template <class Rep, class Period>
  range_guard(range_lock& lock, std::uint64_t off, std::uint64_t len, lock_mode m,
              std::chrono::duration<Rep, Period> timeout, range_options opt = {},
              source_location where = source_location::current())
      : lock_(&lock) {
    init(off, detail::rl::checked_last(off, len), m, opt, where);
    using clock = std::chrono::steady_clock;
    const double secs = std::chrono::duration<double>(timeout).count();
    const auto now = clock::now();
    if (!(secs < 1e9)) {  // ~31 years (or NaN): no deadline
      acquire(true, clock::time_point::max());
    } else {
      const auto t = secs <= 0 ? clock::duration::zero() : std::chrono::duration_cast<clock::duration>(timeout);
      acquire(true, now + t);
    }
  }

  /// Effects: releases the range if owned. Throws: nothing (a throwing violation handler during the
  /// lock-order bookkeeping is ignored here).
  ~range_guard() {
    if (linked_) release_noexcept();
  }
  range_guard(const range_guard&) = delete;
  range_guard& operator=(const range_guard&) = delete;

  [[nodiscard]] bool owns_lock() const noexcept { return owned_; }
  explicit operator bool() const noexcept { return owned_; }

  /// Effects: releases the range early. Throws: std::system_error(EPERM) if the guard does not own
  /// its range (never locked, timed out, or already unlocked); what the violation handler throws
  /// from the lock-order bookkeeping (the range is released anyway).
  void unlock() {
    if (!owned_) throw std::system_error(EPERM, std::generic_category(), "range_guard::unlock: range not held");
    release();
  }

  [[nodiscard]] std::uint64_t offset() const noexcept { return node_.off; }
  /// The length asked for; to_end if the range reaches the end of the offset space.
  [[nodiscard]] std::uint64_t length() const noexcept { return detail::rl::length_of(node_.off, node_.last); }
  [[nodiscard]] lock_mode mode() const noexcept { return node_.mode; }
  [[nodiscard]] activity_id owner() const noexcept { return node_.owner; }

 private:
  template <std::size_t>
  friend class ordered_range_guards;
  using node = detail::rl::range_node;
  using core = detail::lock_core<default_checks>;  // order/detail/lock_core.hpp

  // For ordered_range_guards: a validated range, not yet enqueued.
  range_guard(detail::rl::deferred_t, range_lock& lock, std::uint64_t off, std::uint64_t last, lock_mode m,
              const range_options& opt, const source_location& where)
      : lock_(&lock) {
    init(off, last, m, opt, where);
  }

  void init(std::uint64_t off, std::uint64_t last, lock_mode m, const range_options& opt,
            const source_location& where) noexcept {
    node_.off = off;
    node_.last = last;
    node_.mode = m;
    node_.policy = opt.on_self_conflict;
    node_.owner = opt.owner != 0 ? opt.owner : current_activity();
    node_.thread_id = this_thread_id();
    node_.where = where;
    const unsigned d = lock_->domain_of(off, last);
    node_.domain = static_cast<std::uint8_t>(d);
    node_.home = lock_->home_of(d);
  }

  detail::acquire_request request() const noexcept {
    detail::acquire_request r;
    r.token = &node_;
    r.object = lock_;
    r.sub = node_.off;
    r.name = lock_->name_;
    r.rank = lock_->rank_;
    r.mode = node_.mode == lock_mode::shared ? detail::hold_mode::shared : detail::hold_mode::exclusive;
    r.same_object_ok = true;
    return r;
  }

  void acquire(bool may_fail, std::chrono::steady_clock::time_point deadline) {
    core::check(request(), node_.where);  // may throw: nothing taken
    if (node_.mode == lock_mode::shared && node_.domain != range_lock::all) {
      const auto r = lock_->try_fast_shared(node_, fast_);
      if (r != range_lock::fast_result::none) {
        linked_ = true;
        if (r == range_lock::fast_result::migrated) fast_ = nullptr;  // in the tree now
        finish_acquire();
        return;
      }
    }
    if (node_.domain != range_lock::all) {  // a reader here did not get a reader slot
      switch (lock_->try_fast_holder(node_)) {
        case range_lock::holder_result::granted:
          fast_x_ = true;
          linked_ = true;
          finish_acquire();
          return;
        case range_lock::holder_result::moved:  // a granted node of its tree, never used: take it out
          unlink_tree();
          break;
        case range_lock::holder_result::none:
          break;
      }
    }
    acquire_tree(may_fail, deadline);
  }
  // The tree path of acquire (out of line, so that the fast paths stay small enough to inline).
  [[gnu::noinline]] void acquire_tree(bool may_fail, std::chrono::steady_clock::time_point deadline) {
    const bool writer = node_.mode == lock_mode::exclusive;
    lock_->lock_node(node_, writer);
    const std::uint64_t seq = node_.domain != range_lock::all ? ++node_.home->next_seq : lock_->take_seq(range_lock::all);
    const bool in = lock_->enqueue_locked(node_,
                                          !may_fail || deadline != std::chrono::steady_clock::time_point::min() ||
                                              node_.policy != self_conflict::wait,
                                          seq, writer);
    lock_->unlock_node(node_);
    if (!in) return;
    linked_ = true;
    // (2) acquire, pairs with (1).
    if (node_.word.load(std::memory_order_acquire) != detail::rl::w_granted && !wait_for_grant(deadline)) return;
    finish_acquire();
  }

  // Granted and linked: record the hold. If the bookkeeping throws, release and rethrow.
  void finish_acquire() {
    core::record(request(), node_.where, [this] { unlink(); });
    owned_ = true;
  }

  // Requires: the leaf lock held, node_ linked. Removes node_ (granted or waiting).
  void unlink_locked(detail::rl::wake_list& wl) noexcept {
    lock_->remove_locked(node_, wl);
    linked_ = false;
    owned_ = false;
    // (r) relaxed: the node has left the lock; only this thread reads the word again.
    node_.word.store(detail::rl::w_waiting, std::memory_order_relaxed);
  }
  // Removes node_ from the lock: from its reader slot if still published there, else from its tree.
  void unlink() noexcept {
    if (fast_) {
      detail::rl::reader_slot* sl = fast_;
      fast_ = nullptr;
      if (range_lock::release_fast(*sl, node_)) {
        linked_ = false;
        owned_ = false;
        return;
      }  // else migrated by a writer: a granted node of its tree
    }
    if (fast_x_) {
      fast_x_ = false;
      if (range_lock::release_fast_holder(node_)) {
        node_.granted = false;
        linked_ = false;
        owned_ = false;
        return;
      }  // else moved into its tree by a holder of the leaf lock: a granted node of its tree
    }
    unlink_tree();
  }
  // The tree path of unlink (out of line, so that the fast paths stay small enough to inline).
  [[gnu::noinline]] void unlink_tree() noexcept {
    detail::rl::wake_list wl;
    lock_->lock_node(node_);
    unlink_locked(wl);
    lock_->unlock_node(node_);
    wl.run();
  }

  void release() {
    const bool was_owned = owned_;
    unlink();
    if (was_owned) (void)core::forget(&node_, request().mode, lock_->name_, node_.where);
  }
  void release_noexcept() noexcept {
    try {
      release();
    } catch (...) {
    }
  }

  // The ONE place a range request blocks (a wait-for-graph hook belongs here). Spins briefly, then
  // parks on the node's futex word until granted, flagged for self-conflict handling, or `deadline`.
  // Returns: true when granted; false when the deadline passed (the node has left the tree).
  // Throws: EDEADLK (self_conflict::fail) or the violation handler's exception; the node has then
  // left the tree.
  bool wait_for_grant(std::chrono::steady_clock::time_point deadline) {
    using clock = std::chrono::steady_clock;
    const bool forever = deadline == clock::time_point::max();
    bool spun = false;
    // Wait-for graph edge, made only once the request parks (never on the spin or uncontended path).
    std::optional<request_waitable> rw;
    std::optional<wait_scope> ws;  // after rw: destroyed first
    for (;;) {
      // (2) acquire, pairs with (1).
      const std::uint32_t w = node_.word.load(std::memory_order_acquire);
      if (w == detail::rl::w_granted) return true;
      if (w == detail::rl::w_attention) {
        handle_self_conflict();
        continue;
      }
      const auto now = forever ? clock::time_point{} : clock::now();
      if (!forever && now >= deadline) {
        lock_->lock_node(node_);
        if (node_.granted) {
          lock_->unlock_node(node_);
          continue;  // the word says granted
        }
        // (r) relaxed: under the leaf lock, which orders every write of the word.
        if (node_.word.load(std::memory_order_relaxed) == detail::rl::w_attention) {
          lock_->unlock_node(node_);
          continue;
        }
        detail::rl::wake_list wl;
        unlink_locked(wl);
        lock_->unlock_node(node_);
        wl.run();
        return false;
      }
      if (!spun) {
        spun = true;
        // (r) relaxed: a hint; the loop's (2) decides.
        for (int i = 0; i < 200 && node_.word.load(std::memory_order_relaxed) == detail::rl::w_waiting; ++i)
          detail::cpu_relax();
        continue;
      }
      std::uint32_t expected = detail::rl::w_waiting;
      // (r) relaxed: announces the park only; a grant's (1) exchange sees w_parked and wakes us, and
      // the loop's (2) then reads the grant.
      if (w == detail::rl::w_waiting &&
          !node_.word.compare_exchange_strong(expected, detail::rl::w_parked, std::memory_order_relaxed))
        continue;
      if (!ws && wait_graph::enabled()) {  // no leaf lock held: the graph may scan our holders
        rw.emplace(*this);
        try {
          ws.emplace(*rw, wait_kind::lock);
        } catch (...) {  // the violation handler threw: leave with nothing held
          unlink();
          throw;
        }
        if (ws->deadlocked() && broken_by_graph()) throw_broken();
      }
      if (forever && !ws) {
        detail::futex_wait(&node_.word, detail::rl::w_parked);
      } else {
        auto until = deadline;  // the caller's deadline, or the graph's next recheck if sooner
        if (ws) {
          const auto recheck = clock::now() + std::chrono::duration_cast<clock::duration>(wait_graph::recheck_interval());
          if (forever || recheck < until) until = recheck;
        }
        detail::futex_wait_until(&node_.word, detail::rl::w_parked, until);
      }
      if (ws) {
        bool dead;
        try {
          dead = ws->poll();
        } catch (...) {
          unlink();
          throw;
        }
        if (dead && broken_by_graph()) throw_broken();
      }
    }
  }

  // The wait-for graph's view of this waiting request: ALL of the threads of the conflicting ranges
  // it waits for (granted ones, and earlier waiting ones: FIFO).
  class request_waitable final : public waitable {
   public:
    explicit request_waitable(const range_guard& g) noexcept : g_(g) {}
    void wait_holders(std::vector<std::uint32_t>& t) const override { g_.conflicting_threads(t); }
    [[nodiscard]] std::string wait_name() const override {
      return std::string("'") + g_.lock_->name_ + "' (rank " + std::to_string(g_.lock_->rank_) + ") range " +
             detail::rl::describe_range(g_.node_.off, g_.node_.last, g_.node_.mode);
    }

   private:
    const range_guard& g_;
  };

  // Effects: appends the threads of the ranges this waiting request waits for. Takes the leaf lock.
  void conflicting_threads(std::vector<std::uint32_t>& t) const {
    range_lock& l = *lock_;
    l.lock_node(node_);
    try {
      if (!node_.granted) {
        l.for_each_overlap_in(node_.domain, node_.off, node_.last, node_.mode == lock_mode::shared, [&](node* o) {
          if (o != &node_ && (o->mode == lock_mode::exclusive || node_.mode == lock_mode::exclusive) &&
              (o->granted || (o->seq < node_.seq && !l.passes_locked(node_, *o))))
            t.push_back(o->thread_id);
          return true;
        });
      }
    } catch (...) {  // std::bad_alloc from push_back: never leave a leaf lock held
      l.unlock_node(node_);
      throw;
    }
    l.unlock_node(node_);
  }

  // The graph broke this wait: leave the queue unless granted meanwhile. Returns true if left.
  bool broken_by_graph() noexcept {
    detail::rl::wake_list wl;
    lock_->lock_node(node_);
    if (node_.granted) {
      lock_->unlock_node(node_);
      return false;  // the grant won: take it
    }
    unlink_locked(wl);
    lock_->unlock_node(node_);
    wl.run();
    return true;
  }
  [[noreturn]] void throw_broken() const {
    throw std::system_error(EDEADLK, std::generic_category(),
                            std::string("range_lock '") + lock_->name_ + "': wait for " +
                                detail::rl::describe_range(node_.off, node_.last, node_.mode) +
                                " broken by the wait-for graph (reported wait cycle)");
  }

  // The word said "attention": only same-owner granted conflicts remained when last evaluated.
  void handle_self_conflict() {
    range_lock& l = *lock_;
    detail::rl::wake_list wl;
    l.lock_node(node_);
    for (;;) {
      if (node_.granted) break;
      // (r) relaxed: under the leaf lock, which orders every write of the word.
      node_.word.store(detail::rl::w_waiting, std::memory_order_relaxed);
      const auto v = l.classify_locked(node_);
      if (v == range_lock::verdict::grantable) {
        l.grant_locked(node_, wl);
        break;
      }
      if (v == range_lock::verdict::blocked) break;
      // self_only
      if (node_.reported) {
        if (node_.policy == self_conflict::grant) {
          l.grant_locked(node_, wl);
          break;
        }
        unlink_locked(wl);
        l.unlock_node(node_);
        wl.run();
        throw std::system_error(EDEADLK, std::generic_category(),
                                std::string("range_lock '") + l.name_ + "': request " +
                                    detail::rl::describe_range(node_.off, node_.last, node_.mode) +
                                    " conflicts only with ranges held by its own activity (self-deadlock)");
      }
      node_.reported = true;
      std::vector<range_holder> hs;
      std::vector<source_location> ws;
      try {
        l.collect_conflicts_locked(node_, hs, ws);
      } catch (...) {
        unlink_locked(wl);
        l.unlock_node(node_);
        wl.run();
        throw;
      }
      l.unlock_node(node_);
      try {
        report_self_deadlock(hs, ws);
      } catch (...) {
        unlink();
        throw;
      }
      l.lock_node(node_);
    }
    l.unlock_node(node_);
    wl.run();
  }

  void report_self_deadlock(const std::vector<range_holder>& hs, const std::vector<source_location>& ws) const {
    violation v;
    v.kind = violation_kind::self_deadlock;
    v.outcome = node_.policy == self_conflict::grant ? violation_outcome::served : violation_outcome::failed;
    v.site = std::string("range_lock '") + lock_->name_ + "' at " + detail::describe_site(node_.where);
    const std::string me = thread_name(node_.thread_id);
    v.summary = "thread '" + me + "' (" + detail::rl::describe_activity(node_.owner) + ") requests " +
                detail::rl::describe_range(node_.off, node_.last, node_.mode) + " of '" + lock_->name_ + "' at " +
                detail::describe_site(node_.where) +
                ", which conflicts only with ranges its own activity holds: waiting would self-deadlock; " +
                (node_.policy == self_conflict::grant ? "granted under the owner's ownership" : "failed with EDEADLK");
    v.involved.emplace_back(lock_->name_);
    v.involved.push_back(me);
    for (std::size_t i = 0; i < hs.size(); ++i) {
      const auto& h = hs[i];
      const std::uint64_t last = h.length == to_end ? to_end : h.offset + h.length - 1;
      const std::string tn = thread_name(h.thread_id);
      v.details.push_back("held by thread '" + tn + "' (" + detail::rl::describe_activity(h.owner) +
                          "): " + detail::rl::describe_range(h.offset, last, h.mode) + ", acquired at " +
                          detail::describe_site(ws[i]));
      v.involved.push_back(tn);
    }
    report_violation(v);
  }

  range_lock* lock_;
  node node_;
  detail::rl::reader_slot* fast_ = nullptr;  // the reader slot node_ was published in (fast path)
  bool fast_x_ = false;  // granted by try_fast_holder (its shard's fast holder, unless moved into the tree)
  bool linked_ = false;  // node_ is in the lock (a tree, granted or waiting, or a reader slot)
  bool owned_ = false;   // granted and recorded
};

/// A range to take with ordered_range_guards.
struct range_request {
  range_lock* lock;
  std::uint64_t offset, length;
  lock_mode mode;
};

/// Takes several ranges of one or more range_locks without deadlock and holds up to N of them
/// inline (no allocation). The requests are sorted by (lock address, offset); requests on the same
/// lock that overlap or touch are merged into one range with the stronger mode (so a direct copy may
/// lock a source and an overlapping destination at once). The ranges of each lock are enqueued under
/// one leaf-lock hold, so two helpers never interleave on one lock (FIFO cannot make them wait on
/// each other in a cycle), and locks are visited in address order. Non-copyable, non-movable.
template <std::size_t N>
class ordered_range_guards {
  static_assert(N > 0, "ordered_range_guards<N>: N must be at least 1");

 public:
  /// Effects: blocks until every (merged) range is held. Throws: std::system_error(EINVAL) if
  /// reqs.size() > N, a lock is null or a length is 0; (EOVERFLOW) for a range past 2^64; (EDEADLK) /
  /// the violation handler's exception as for range_guard. On a throw nothing is held.
  /// Complexity: O(N log N + sum of the ranges' lock costs). Lock order: one batch of rank-equal
  /// locks (detail::ordered_scope); nothing of rank >= the locks' ranks may be held.
  explicit ordered_range_guards(std::span<const range_request> reqs, range_options opt = {},
                                source_location where = source_location::current()) {
    if (reqs.size() > N)
      throw std::system_error(EINVAL, std::generic_category(), "ordered_range_guards: more requests than N");
    struct item {
      range_lock* lock;
      std::uint64_t off, last;
      lock_mode mode;
    };
    std::array<item, N> it{};
    std::size_t k = 0;
    for (const auto& r : reqs) {
      if (!r.lock) throw std::system_error(EINVAL, std::generic_category(), "ordered_range_guards: null lock");
      it[k++] = item{r.lock, r.offset, detail::rl::checked_last(r.offset, r.length), r.mode};
    }
    // Insertion sort: N is small, and GCC 12 at -O2 reports a false -Warray-bounds inside std::sort's
    // heap fallback for a runtime k <= N.
    const auto before = [](const item& a, const item& b) {
      const auto al = reinterpret_cast<std::uintptr_t>(a.lock), bl = reinterpret_cast<std::uintptr_t>(b.lock);
      return al < bl || (al == bl && a.off < b.off);
    };
    for (std::size_t i = 1; i < k; ++i) {
      const item x = it[i];
      std::size_t j = i;
      for (; j > 0 && before(x, it[j - 1]); --j) it[j] = it[j - 1];
      it[j] = x;
    }
    std::size_t m = 0;  // merge
    for (std::size_t i = 0; i < k; ++i) {
      if (m > 0 && it[m - 1].lock == it[i].lock &&
          (it[m - 1].last == to_end || it[i].off <= it[m - 1].last + 1)) {
        it[m - 1].last = std::max(it[m - 1].last, it[i].last);
        if (it[i].mode == lock_mode::exclusive) it[m - 1].mode = lock_mode::exclusive;
      } else {
        it[m++] = it[i];
      }
    }
    [[maybe_unused]] detail::ordered_scope scope;
    try {
      for (std::size_t i = 0; i < m;) {
        std::size_t j = i;
        while (j < m && it[j].lock == it[i].lock) ++j;
        range_lock& l = *it[i].lock;
        for (std::size_t x = i; x < j; ++x) {
          new (&slots_[x]) range_guard(detail::rl::deferred_t{}, l, it[x].off, it[x].last, it[x].mode, opt, where);
          n_ = x + 1;
          range_guard::core::check(at(x).request(), where);
        }
        // One leaf-lock section for the whole group: its shard if every range is narrow in one
        // shard, else every shard lock.
        unsigned d = at(i).node_.domain;
        for (std::size_t x = i + 1; x < j; ++x)
          if (at(x).node_.domain != d) d = range_lock::all;
        l.lock_domain(d);
        for (std::size_t x = i; x < j; ++x) {
          l.enqueue_locked(at(x).node_, true, l.take_seq(d), false);
          at(x).linked_ = true;
        }
        l.unlock_domain(d);
        for (std::size_t x = i; x < j; ++x) {
          range_guard& g = at(x);
          // (2) acquire, pairs with (1).
          if (g.node_.word.load(std::memory_order_acquire) != detail::rl::w_granted) g.wait_for_grant(max_time());
          g.finish_acquire();
        }
        i = j;
      }
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~ordered_range_guards() { destroy(); }
  ordered_range_guards(const ordered_range_guards&) = delete;
  ordered_range_guards& operator=(const ordered_range_guards&) = delete;

  /// The number of ranges held after merging.
  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  /// The i-th held range (in lock-then-offset order). Requires: i < size().
  [[nodiscard]] const range_guard& operator[](std::size_t i) const noexcept {
    return *std::launder(reinterpret_cast<const range_guard*>(&slots_[i]));
  }

 private:
  static std::chrono::steady_clock::time_point max_time() noexcept { return std::chrono::steady_clock::time_point::max(); }
  range_guard& at(std::size_t i) noexcept { return *std::launder(reinterpret_cast<range_guard*>(&slots_[i])); }
  void destroy() noexcept {
    while (n_ > 0) at(--n_).~range_guard();
  }
  struct alignas(range_guard) slot {
    unsigned char bytes[sizeof(range_guard)];
  };
  slot slots_[N];
  std::size_t n_ = 0;
};

}  // namespace faultsafe
