// Helpers of the vm tests that make wait cycles through the pager (vm_waitgraph_test, vm_pool_test):
// a page source whose page-ins need a wait-for-graph-visible lock, and a violation recorder.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/order/violation.hpp"
#include "vm_support.hpp"

namespace vmtest {

using test_lock = faultsafe::detail::vm_rw_lock<faultsafe::rank::attr_range>;

/// A page source that takes `lock` (shared) around each page-in: the page-in needs what the lock's
/// holder has (a file's range, io_pkt's state). The lock throws EDEADLK when the graph breaks a cycle
/// at that wait; the pager then fails the fault (SIGBUS).
struct locking_source final : faultsafe::page_source {
  faultsafe::memfd_page_source inner;
  test_lock& lock;
  std::atomic<int> calls{0};
  locking_source(int fd, test_lock& l) : inner(fd), lock(l) {}
  std::error_code page_in(const faultsafe::page_in_request& req, faultsafe::page_in_result& out) override {
    calls.fetch_add(1);
    faultsafe::detail::vm_shared_hold<test_lock> g(lock);
    return inner.page_in(req, out);
  }
};

/// Records every violation while alive (installed as the handler).
struct cycle_recorder {
  std::mutex m;
  std::vector<faultsafe::violation> got;
  faultsafe::violation_handler prev;
  cycle_recorder() {
    prev = faultsafe::set_violation_handler([this](const faultsafe::violation& v) {
      std::lock_guard<std::mutex> g(m);
      got.push_back(v);
    });
  }
  ~cycle_recorder() { faultsafe::set_violation_handler(prev); }
  cycle_recorder(const cycle_recorder&) = delete;
  cycle_recorder& operator=(const cycle_recorder&) = delete;
  /// The wait cycles reported so far.
  std::size_t cycles() {
    std::lock_guard<std::mutex> g(m);
    std::size_t n = 0;
    for (auto& v : got) n += v.kind == faultsafe::violation_kind::wait_cycle;
    return n;
  }
  /// Every report, one after the other.
  std::string text() {
    std::lock_guard<std::mutex> g(m);
    std::string s;
    for (auto& v : got) s += v.report() + "\n";
    return s;
  }
};

}  // namespace vmtest
