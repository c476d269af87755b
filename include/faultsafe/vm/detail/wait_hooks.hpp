// faultsafe/vm/detail/wait_hooks.hpp: the places where vm/ code blocks, named for a wait-for graph
// (internal to vm/, public hook).
//
// Every blocking point of the address space and the pager (a lock wait on the aspace map or a region,
// a fault thread waiting for its page source, munmap waiting for in-flight fault service) runs inside a
// `vm_wait_scope`, which calls the installed hook's begin() before blocking and end() after. With no
// hook installed the cost is one relaxed atomic load. activity/wait_graph.hpp (or a test) installs a
// hook with set_vm_wait_hook().
//
// Thread-safety: set_vm_wait_hook() may race with waits; a hook object must stay alive for as long as
// it may be called (hooks are expected to be static objects). Memory ordering: (1) release in
// set_vm_wait_hook pairs with (2) acquire in vm_wait_scope, so a hook's state is visible to callers.
#pragma once

#include <atomic>
#include <cstdint>

namespace faultsafe {

/// What a vm/ thread is about to wait for.
enum class vm_wait_kind : std::uint8_t {
  lock_shared,     ///< a shared hold of `object` (a region or the aspace map lock)
  lock_exclusive,  ///< an exclusive hold of `object`
  page_source,     ///< a fault thread waits for page_source::page_in (object = the region)
};

/// One wait: what, on which object (address of the lock or region), with a name for reports.
struct vm_wait {
  vm_wait_kind kind;
  const void* object;
  const char* name;
};

/// The hook: begin() before the calling thread blocks, end() when it stops waiting.
struct vm_wait_hook {
  virtual void begin(const vm_wait&) noexcept = 0;
  virtual void end(const vm_wait&) noexcept = 0;

 protected:
  ~vm_wait_hook() = default;
};

namespace detail {
inline std::atomic<vm_wait_hook*>& vm_wait_hook_slot() noexcept {
  static std::atomic<vm_wait_hook*> slot{nullptr};
  return slot;
}
}  // namespace detail

/// Effects: installs `h` (nullptr: none); returns the previous hook.
inline vm_wait_hook* set_vm_wait_hook(vm_wait_hook* h) noexcept {
  return detail::vm_wait_hook_slot().exchange(h, std::memory_order_acq_rel);  // (1) release
}

namespace detail {
/// RAII: reports a wait to the installed hook for the scope's lifetime.
class vm_wait_scope {
 public:
  vm_wait_scope(vm_wait_kind k, const void* object, const char* name) noexcept
      : w_{k, object, name}, hook_(vm_wait_hook_slot().load(std::memory_order_acquire)) {  // (2) acquire
    if (hook_ != nullptr) hook_->begin(w_);
  }
  ~vm_wait_scope() {
    if (hook_ != nullptr) hook_->end(w_);
  }
  vm_wait_scope(const vm_wait_scope&) = delete;
  vm_wait_scope& operator=(const vm_wait_scope&) = delete;

 private:
  vm_wait w_;
  vm_wait_hook* hook_;
};
}  // namespace detail
}  // namespace faultsafe
