// faultsafe/resmgr/process_thread.hpp: named threads of a logical process.
//
// Defines `process_thread`: a std::thread that belongs to a `process` (bob1, bob2 of process Bob) and
// is named "<process>/<name>" in every faultsafe report (thread registry, wait graph, violations).
// Joins on destruction (like std::jthread), so a scope that owns process threads cannot leak them.
//
// Thread-safety: as std::thread (one owner). Lifetime: the process must outlive its threads.
// Throws: std::system_error if the thread cannot start, std::bad_alloc.
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include "../detail/thread_record.hpp"
#include "process.hpp"

namespace faultsafe {

class process_thread {
 public:
  process_thread() = default;
  /// Effects: starts a thread named "<p.name()>/<name>" running f(args...).
  template <class F, class... Args>
  process_thread(process& p, std::string name, F&& f, Args&&... args)
      : name_(p.name() + "/" + std::move(name)),
        t_([full = name_, fn = std::forward<F>(f)](auto&&... a) mutable {
          set_this_thread_name(full);
          std::invoke(fn, std::forward<decltype(a)>(a)...);
        }, std::forward<Args>(args)...) {}
  process_thread(process_thread&&) noexcept = default;
  /// Requires: *this is not joinable (join it first), as std::thread.
  process_thread& operator=(process_thread&&) noexcept = default;
  ~process_thread() {
    if (t_.joinable()) t_.join();
  }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] bool joinable() const noexcept { return t_.joinable(); }
  void join() { t_.join(); }

 private:
  std::string name_;
  std::thread t_;
};

}  // namespace faultsafe
