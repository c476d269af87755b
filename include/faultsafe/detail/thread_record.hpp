// faultsafe/detail/thread_record.hpp: what faultsafe knows about each thread (internal).
//
// Every thread that touches a faultsafe lock, channel or pager gets a `thread_record` (lazily, on first
// use): a small sequential id (stable for the thread's life, never reused in a process), a name for
// reports, the activity it currently works for, and its held-lock stack. Records of live threads are
// listed in a registry so that reports can name other threads by id.
//
// Thread-safety: a record is written only by its own thread, except `name` which is published to the
// registry under the registry's leaf mutex. Lock order: the registry mutex is a leaf (rank 90 in
// spirit); nothing is acquired while it is held. Memory ordering: the id counter is relaxed (ids carry
// no data).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "../config.hpp"

namespace faultsafe {

/// An activity: one client request chain, carried by every message, adopted by server threads and
/// inherited by faults and page-ins (see activity/activity.hpp). 0 never names an activity.
using activity_id = std::uint64_t;

namespace detail {

struct held_stack;  // order/detail/held_locks.hpp

class thread_registry {
 public:
  static thread_registry& instance() {
    static thread_registry* r = new thread_registry;  // leaked on purpose: threads outlive statics
    return *r;
  }
  std::uint32_t next_id() noexcept { return next_.fetch_add(1, std::memory_order_relaxed); }
  void set_name(std::uint32_t id, std::string_view name) {
    std::lock_guard<std::mutex> g(m_);
    names_[id] = std::string(name);
  }
  void forget(std::uint32_t id) {
    std::lock_guard<std::mutex> g(m_);
    names_.erase(id);
  }
  /// The name of thread `id`, or "thread-<id>" if it set none or has exited.
  [[nodiscard]] std::string name(std::uint32_t id) const {
    {
      std::lock_guard<std::mutex> g(m_);
      auto it = names_.find(id);
      if (it != names_.end()) return it->second;
    }
    return "thread-" + std::to_string(id);
  }

 private:
  std::atomic<std::uint32_t> next_{1};
  mutable std::mutex m_;  // the checker's own leaf (reports take it): plain std::mutex, unchecked
  std::unordered_map<std::uint32_t, std::string> names_;
};

struct thread_record {
  thread_record() : id(thread_registry::instance().next_id()) {}
  ~thread_record() { thread_registry::instance().forget(id); }
  thread_record(const thread_record&) = delete;
  thread_record& operator=(const thread_record&) = delete;

  const std::uint32_t id;
  /// The activity this thread currently works for; 0 = its own (see activity::current()).
  activity_id activity = 0;
  /// Opaque per-thread slots owned by other subsystems (wait graph, pager), so this header need not
  /// know their types. Each subsystem documents its slot.
  void* wait_slot = nullptr;
};

inline thread_record& this_thread_record() noexcept {
  thread_local thread_record rec;
  return rec;
}

}  // namespace detail

/// Effects: names the calling thread in every faultsafe report (e.g. "bob1", "io_pkt/0").
/// Thread-safety: any thread names only itself. Throws: std::bad_alloc.
inline void set_this_thread_name(std::string_view name) {
  detail::thread_registry::instance().set_name(detail::this_thread_record().id, name);
}
/// The calling thread's faultsafe id (1, 2, ...; never reused).
[[nodiscard]] inline std::uint32_t this_thread_id() noexcept { return detail::this_thread_record().id; }
/// The report name of thread `id`.
[[nodiscard]] inline std::string thread_name(std::uint32_t id) { return detail::thread_registry::instance().name(id); }

}  // namespace faultsafe
