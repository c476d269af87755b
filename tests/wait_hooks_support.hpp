// Support for the wait-graph integration tests: a resource manager with fixed files whose read handler
// can be replaced (to make servers send to each other), a recording violation handler, a watchdog.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/resmgr/iofunc.hpp"
#include "faultsafe/resmgr/process.hpp"
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

/// A resource manager at `prefix` with fixed files and a replaceable read handler.
class hook_server {
 public:
  using read_fn = std::function<fs::io_result(fs::request_context&, fs::ocb_base&, const fs::io_rw_request&)>;

  hook_server(std::string name, std::string prefix, fs::thread_pool_options pool, read_fn rf = nullptr)
      : read_(std::move(rf)), srv_(fs::server_options{std::move(name), pool, {}, nullptr}, funcs()) {
    if (auto ec = srv_.attach(prefix)) throw std::system_error(ec, "attach " + prefix);
  }
  ~hook_server() { srv_.stop(); }
  void add(const std::string& name) {
    std::lock_guard<std::mutex> g(mu_);
    files_[name] = std::make_shared<fs::iofunc_attr>(0666, 0, 0, fs::attr_options{std::uint64_t{1} << 20, "wh file"});
  }
  void start() { srv_.start(); }
  fs::server& srv() { return srv_; }

 private:
  fs::io_funcs funcs() {
    fs::io_funcs f = fs::iofunc_defaults();
    f.open = [this](fs::request_context& ctx, const fs::io_open_request& q, std::string_view path,
                    std::shared_ptr<fs::ocb_base>& out) -> fs::io_result {
      std::shared_ptr<fs::iofunc_attr> a;
      {
        std::lock_guard<std::mutex> g(mu_);
        auto it = files_.find(std::string(path));
        if (it == files_.end()) return fs::io_result::fail(ENOENT);
        a = it->second;
      }
      return fs::iofunc_open_default(ctx, q, std::move(a), out);
    };
    f.read = [this](fs::request_context& ctx, fs::ocb_base& o, const fs::io_rw_request& q) {
      return read_ ? read_(ctx, o, q) : fs::iofunc_read_default(ctx, o, q);
    };
    return f;
  }

  read_fn read_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<fs::iofunc_attr>> files_;
  fs::server srv_;
};

inline bool has(const std::string& s, std::string_view what) { return s.find(what) != std::string::npos; }

}  // namespace whtest
