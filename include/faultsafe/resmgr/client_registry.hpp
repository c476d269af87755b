// faultsafe/resmgr/client_registry.hpp: from a request's client pid to the client process (internal).
//
// Defines `detail::client_registry`: every `process` registers itself under its logical pid for its
// lifetime (resmgr/process.hpp does it in its constructor and destructor), so a server handler can ask
// the SENDING process's address space about the client's buffer (resmgr/direct_copy.hpp: does the
// destination of a read lie in a mapping of the file being read?). Messages name their sender by
// client_info::pid; a pid that is not (or no longer) registered simply finds nothing.
//
// Thread-safety: all members from any thread. Lock order: one reader/writer leaf mutex, held only for
// a hash lookup plus the callback of with_process(); the callback may take leaf locks of the process
// (its memory mutex) and nothing else. Lifetime: a process unregisters before any of its members is
// destroyed, so a callback running under the registry mutex sees a complete process.
// Complexity: O(1) average per call.
#pragma once

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "../order/ranked_mutex.hpp"

namespace faultsafe {

class process;

namespace detail {

class client_registry {
 public:
  /// The process-wide registry (leaked on purpose: processes may outlive static destruction).
  static client_registry& instance() {
    static client_registry* r = new client_registry;
    return *r;
  }

  /// Effects: `pid` now names `p`. Throws: std::bad_alloc.
  void add(std::uint64_t pid, process* p) {
    exclusive_guard g(m_);
    map_[pid] = p;
  }
  /// Effects: `pid` names nothing; waits for callbacks on it that are running (they hold the mutex).
  void remove(std::uint64_t pid) noexcept {
    exclusive_guard g(m_);
    map_.erase(pid);
  }
  /// Effects: calls f(process*) (nullptr if `pid` is not registered) with the registry held shared,
  /// so the process cannot be destroyed meanwhile. Returns f's result.
  template <class F>
  decltype(auto) with_process(std::uint64_t pid, F&& f) const {
    shared_guard g(m_);
    auto it = map_.find(pid);
    return f(it == map_.end() ? static_cast<process*>(nullptr) : it->second);
  }

 private:
  mutable ranked_mutex<rank::registry, std::shared_mutex> m_{"client registry"};
  std::unordered_map<std::uint64_t, process*> map_ FAULTSAFE_GUARDED_BY(m_);
};

}  // namespace detail
}  // namespace faultsafe
