// faultsafe/config.hpp: compile-time switches shared by every faultsafe header.
//
// FAULTSAFE_CHECKS
//   1: lock-order checking (ranks, lock-class graph, held-lock stacks) is compiled into the default
//      policy of every lock. 0: the default policy is `checks_off` and a ranked_mutex<R, M> is the
//      same code as M. Default: on unless NDEBUG is defined. Both policies can always be named
//      explicitly (`faultsafe::checks_on`, `faultsafe::checks_off`), so one binary may mix them,
//      e.g. a benchmark comparing both.
// FAULTSAFE_MAX_HELD_LOCKS
//   Capacity of each thread's held-lock stack (default 48). Exceeding it is a reported violation
//   (`violation_kind::held_stack_overflow`), never memory corruption.
#pragma once

#ifndef FAULTSAFE_CHECKS
#  ifdef NDEBUG
#    define FAULTSAFE_CHECKS 0
#  else
#    define FAULTSAFE_CHECKS 1
#  endif
#endif

#ifndef FAULTSAFE_MAX_HELD_LOCKS
#  define FAULTSAFE_MAX_HELD_LOCKS 48
#endif

namespace faultsafe {

/// Policy tag: lock-order checks compiled in.
struct checks_on { static constexpr bool enabled = true; };
/// Policy tag: lock-order checks compiled out; the lock is exactly its underlying mutex.
struct checks_off { static constexpr bool enabled = false; };

#if FAULTSAFE_CHECKS
using default_checks = checks_on;
#else
using default_checks = checks_off;
#endif

/// The ranks of the lock hierarchy (the README's table). A thread may acquire a lock only if its rank
/// is strictly above every rank it already holds (same-rank sets only through the ordered helpers).
/// Every lock inside faultsafe has one of these ranks, except the checker's own few mutexes (thread
/// names, the violation handler, violation_recorder, the lock-class graph), which cannot check
/// themselves and are documented where they are declared.
namespace rank {
inline constexpr unsigned aspace_map = 10;   ///< aspace structural lock
inline constexpr unsigned region = 20;       ///< one mapping
inline constexpr unsigned ramfs_rename = 24; ///< a name tree's cross-directory rename mutex (resmgr/name_tree.hpp)
inline constexpr unsigned ramfs_dir = 26;    ///< one directory's entries (several at once: lock_in_order)
inline constexpr unsigned attr_range = 30;   ///< a byte range of a file's data
inline constexpr unsigned attr_meta = 40;    ///< a file's size/times
inline constexpr unsigned registry = 70;     ///< process-wide registries (clients, servers): their callbacks take leaf locks
inline constexpr unsigned wait_graph = 80;   ///< the wait-for graph: held while it asks resources for their holders (leaf locks)
inline constexpr unsigned pool = 85;         ///< a server's thread pool: held while it announces threads to its channel (leaf)
inline constexpr unsigned leaf = 90;         ///< internal queues and tables: nothing is acquired under them
}  // namespace rank

}  // namespace faultsafe
