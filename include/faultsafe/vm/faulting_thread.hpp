// faultsafe/vm/faulting_thread.hpp: from the OS thread id in a userfaultfd message to the faultsafe
// thread and the activity it works for ("on whose behalf is this fault?").
//
// userfaultfd with UFFD_FEATURE_THREAD_ID names the faulting thread by its kernel tid. A thread that
// may touch pager-served memory calls `announce_faulting_thread()` once (the process API and the
// resource-manager threads do it for you); the pager then resolves each fault's tid to the thread's
// faultsafe id, name and current activity with `lookup_faulting_thread()`. Unannounced threads are
// still served: their fault carries the tid only (thread_id 0, activity 0).
//
// Why reading another thread's activity is sound: the faulting thread is stopped in the kernel at the
// faulting instruction while its fault is pending, so its thread_record::activity cannot change, and
// the kernel's fault delivery orders its earlier writes before the pager's read. ThreadSanitizer cannot
// see that edge, so the one read is compiled without TSan instrumentation. A stale message (the thread
// was already woken by another fill of the same page) can yield the activity the thread has moved on
// to; the page-in it causes is then only a prefetch, which no thread waits for.
//
// Thread-safety: all functions are safe from any thread. Lock order: one leaf mutex (rank 90 in
// spirit), held for a hash-map operation only. Lifetime: a registration ends when its thread exits.
#pragma once

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "../activity/activity.hpp"
#include "../detail/thread_record.hpp"
#include "../order/ranked_mutex.hpp"

namespace faultsafe {

/// What the pager knows about a faulting thread.
struct faulting_thread_info {
  pid_t tid = 0;                ///< kernel thread id (always set)
  std::uint32_t thread_id = 0;  ///< faultsafe thread id; 0 = the thread never announced itself
  activity_id activity = 0;     ///< the activity it worked for when it faulted; 0 = unknown
};

namespace detail {

class faulting_thread_registry {
 public:
  static faulting_thread_registry& instance() {
    static faulting_thread_registry* r = new faulting_thread_registry;  // leaked: threads outlive statics
    return *r;
  }
  void add(pid_t tid, thread_record* rec) {
    exclusive_guard g(m_);
    map_[tid] = rec;
    count_.store(map_.size(), std::memory_order_release);  // (1) release, pairs with (2)
  }
  void remove(pid_t tid) {
    exclusive_guard g(m_);
    map_.erase(tid);
    count_.store(map_.size(), std::memory_order_release);
  }
  [[nodiscard]] faulting_thread_info lookup(pid_t tid) {
    faulting_thread_info out;
    out.tid = tid;
    // Nobody announced: skip the mutex. A thread announcing concurrently with its own fault is not
    // possible (it announces before it touches pager memory), so this misses nothing.
    if (count_.load(std::memory_order_acquire) == 0) return out;  // (2) acquire
    exclusive_guard g(m_);
    auto it = map_.find(tid);
    if (it != map_.end()) {
      out.thread_id = it->second->id;
      out.activity = read_activity(*it->second);
    }
    return out;
  }

 private:
  // See the header comment: the owner is stopped in a fault; TSan cannot see the kernel's ordering.
#if defined(__clang__) || defined(__GNUC__)
  __attribute__((no_sanitize("thread")))
#endif
  static activity_id read_activity(const thread_record& rec) noexcept {
    const activity_id a = rec.activity;
    return a != 0 ? a : (implicit_activity_bit | rec.id);
  }

  ranked_mutex<rank::leaf> m_{"faulting threads"};
  std::unordered_map<pid_t, thread_record*> map_ FAULTSAFE_GUARDED_BY(m_);
  std::atomic<std::size_t> count_{0};
};

struct faulting_thread_announcement {
  faulting_thread_announcement() : tid(static_cast<pid_t>(::syscall(SYS_gettid))) {
    faulting_thread_registry::instance().add(tid, &this_thread_record());
  }
  ~faulting_thread_announcement() { faulting_thread_registry::instance().remove(tid); }
  faulting_thread_announcement(const faulting_thread_announcement&) = delete;
  faulting_thread_announcement& operator=(const faulting_thread_announcement&) = delete;
  const pid_t tid;
};

}  // namespace detail

/// Effects: makes the calling thread's faults resolvable to its faultsafe id and activity until it
/// exits. Idempotent and cheap after the first call. Throws: std::bad_alloc (first call only).
inline void announce_faulting_thread() {
  (void)detail::this_thread_record();  // constructed first, so destroyed after the announcement
  thread_local detail::faulting_thread_announcement a;
  (void)a;
}

/// The calling thread's kernel tid.
[[nodiscard]] inline pid_t this_thread_tid() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }

/// Effects: what is known about kernel thread `tid` (see header). Complexity: one hash lookup under a
/// leaf mutex. Throws: nothing.
[[nodiscard]] inline faulting_thread_info lookup_faulting_thread(pid_t tid) noexcept {
  return detail::faulting_thread_registry::instance().lookup(tid);
}

}  // namespace faultsafe
