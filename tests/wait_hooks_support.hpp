// Support for the wait-graph integration tests: a resource manager with fixed files whose read handler
// can be replaced (to make servers send to each other), a recording violation handler, a watchdog.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/resmgr/iofunc.hpp"
#include "faultsafe/resmgr/process.hpp"
#include "faultsafe/resmgr/ramfs.hpp"
#include "faultsafe/resmgr/server.hpp"
#include "wait_graph_support.hpp"

namespace whtest {

using namespace std::chrono_literals;
namespace fs = faultsafe;

// The watchdog and the timed barrier are the wait-graph tests' own (tests/wait_graph_support.hpp).
using wgtest::gate;
using wgtest::watchdog;
/// Records every violation (wait cycles separately) for one test; default graph options.
struct recorder {
  mutable std::mutex m;
  std::vector<fs::violation> all, cycles;
  fs::scoped_violation_handler h{[this](const fs::violation& v) {
    std::lock_guard<std::mutex> g(m);
    all.push_back(v);
    if (v.kind == fs::violation_kind::wait_cycle) cycles.push_back(v);
  }};
  recorder() {
    fs::wait_graph::set_enabled(true);
    fs::wait_graph::set_options(fs::wait_graph_options{});
  }
  ~recorder() {
    fs::wait_graph::set_enabled(true);
    fs::wait_graph::set_options(fs::wait_graph_options{});
  }
  std::vector<fs::violation> wait_cycles() const {
    std::lock_guard<std::mutex> g(m);
    return cycles;
  }
};

/// A ramfs (resmgr/ramfs.hpp) at `prefix` whose read handler can be replaced.
class hook_server {
 public:
  using read_fn = std::function<fs::io_result(fs::request_context&, fs::ocb_base&, const fs::io_rw_request&)>;

  hook_server(std::string name, std::string prefix, fs::thread_pool_options pool, read_fn rf = nullptr)
      : fs_(fs::ramfs_options{.name = std::move(name),
                              .prefix = std::move(prefix),
                              .pool = pool,
                              .customize = [rf = std::move(rf)](fs::io_funcs& f) {
                                if (rf) f.read = rf;
                              },
                              .file = {.max_size = std::uint64_t{1} << 20, .name = "wh file"},
                              .direct_copy = false}) {}
  void add(const std::string& name) {
    if (auto ec = fs_.create(name, 0666)) throw std::system_error(ec, "create " + name);
  }
  fs::server& srv() { return fs_.srv(); }

 private:
  fs::ramfs fs_;
};

inline bool has(const std::string& s, std::string_view what) { return s.find(what) != std::string::npos; }

}  // namespace whtest
