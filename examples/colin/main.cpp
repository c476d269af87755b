// colin: Colin's lock-up (seed, 2008-11-28), built from real servers, a real address space and real
// userfaultfd faults, run in two modes.
//
//   colin --naive      Bob's address space has ONE lock (aspace_options::single_lock), held by the pager
//                      thread for the whole fault service, and io_pkt has ONE thread. The seed's steps
//                      happen in the dangerous order every run (latches, no sleeps):
//                        bob1 mmaps /nfs/a and touches page 1 -> proc:Bob/0 locks Bob's aspace and sends
//                        page_in to nfs; nfs's page-in handler waits until bob2's read is being served by
//                        io_pkt/0, which faults on bob2's buffer -> proc:Bob/1 needs Bob's aspace lock;
//                        then nfs reads /io_pkt/c -> send-blocked on io_pkt's single thread. Cycle.
//                      The wait-for graph (activity/wait_graph.hpp) must report the cycle, naming every hop,
//                      and break it (the newest breakable wait fails with EDEADLK), so the run unwinds by
//                      itself. Exit 0 when the lock-up was reported within 2 s and every thread joined.
//   colin --faultsafe  Per-region locks (the default): the same steps complete; bob1 reads its mapped
//                      nfs page, bob2 reads io_pkt, nfs reads io_pkt; every byte is verified. Exit 0 then.
//
//   colin --naive --processes, colin --faultsafe --processes: bob, nfs and io_pkt as three OS processes
//                      (processes.hpp says what each mode shows and checks).
//
// Last line: "RESULT: <short text>" (parsed by the demo script). Exit 77: userfaultfd unavailable.
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/detail/guarded_copy.hpp"
#include "faultsafe/resmgr/iofunc.hpp"
#include "faultsafe/resmgr/process.hpp"
#include "faultsafe/resmgr/process_thread.hpp"
#include "faultsafe/resmgr/ramfs.hpp"
#include "faultsafe/resmgr/server.hpp"
#include "faultsafe/vm/aspace.hpp"
#include "faultsafe/vm/pager.hpp"
#include "faultsafe/resmgr/process_memory.hpp"

#include "processes.hpp"

namespace {

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
namespace fs = faultsafe;

constexpr std::size_t page = fs::vm_page_size;

/// A one-shot event with a timed wait.
class latch {
 public:
  void set() {
    {
      std::lock_guard<std::mutex> g(m_);
      set_ = true;
    }
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lk(m_);
    return cv_.wait_for(lk, limit, [&] { return set_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool set_ = false;
};

/// A ramfs (resmgr/ramfs.hpp) with hooks before read and page-in (its default handlers wrapped).
class file_server {
 public:
  using read_hook = std::function<void(fs::request_context&)>;
  using page_in_hook = std::function<std::error_code(fs::request_context&, const fs::io_page_in_request&)>;

  file_server(std::string name, std::string prefix, fs::thread_pool_options pool, read_hook rh, page_in_hook ph)
      : fs_(options(std::move(name), std::move(prefix), pool, std::move(rh), std::move(ph))) {}
  void add(const std::string& name) {
    if (auto ec = fs_.create(name, 0666)) throw std::system_error(ec, "create " + name);
  }
  void stop() { fs_.stop(); }
  fs::server& srv() { return fs_.srv(); }

 private:
  // The options, member by member (GCC 12 -O2 misreports a designated-initializer temporary's
  // shared_ptr member as maybe-uninitialized under -Werror).
  static fs::ramfs_options options(std::string name, std::string prefix, fs::thread_pool_options pool,
                                   read_hook rh, page_in_hook ph) {
    fs::ramfs_options o;
    o.name = std::move(name);
    o.prefix = std::move(prefix);
    o.pool = pool;
    o.file.max_size = std::uint64_t{1} << 20;
    o.file.name = "colin file";
    o.direct_copy = false;  // the server thread takes the fault on the client's buffer
    o.customize = [rh = std::move(rh), ph = std::move(ph)](fs::io_funcs& f) {
      if (rh)
        f.read = [rh, dflt = f.read](fs::request_context& ctx, fs::ocb_base& ocb, const fs::io_rw_request& q) {
          rh(ctx);
          return dflt(ctx, ocb, q);
        };
      if (ph)
        f.page_in = [ph, dflt = f.page_in](fs::request_context& ctx, fs::ocb_base* ocb, const fs::io_page_in_request& q,
                                          fs::io_page_in_reply& rep) -> fs::io_result {
          if (auto ec = ph(ctx, q)) return fs::io_result{0, ec};
          return dflt(ctx, ocb, q, rep);
        };
    };
    return o;
  }

  fs::ramfs fs_;
};

unsigned char pattern(char file, std::size_t i) { return static_cast<unsigned char>(file * 31 + i * 7 + (i >> 12)); }

bool fill_file(fs::process& p, const std::string& path, char tag, std::size_t len) {
  auto fd = p.open(path, O_RDWR);
  if (!fd) return false;
  std::vector<unsigned char> b(len);
  for (std::size_t i = 0; i < len; ++i) b[i] = pattern(tag, i);
  auto w = p.pwrite(*fd, b.data(), len, 0);
  (void)p.close(*fd);
  return w && *w == len;
}

bool check(const unsigned char* d, char tag, std::size_t off, std::size_t len) {
  for (std::size_t i = 0; i < len; ++i)
    if (d[i] != pattern(tag, off + i)) return false;
  return true;
}

/// COLIN_TRACE=1 in the environment: print each step with its time (stderr).
void trace(const char* what) {
  static const bool on = std::getenv("COLIN_TRACE") != nullptr;
  static const auto t0 = clk::now();
  if (on) std::fprintf(stderr, "[%8.3f ms] %s\n", std::chrono::duration<double, std::milli>(clk::now() - t0).count(), what);
}

std::string errstr(const std::error_code& ec) { return ec ? ec.message() + " (" + std::to_string(ec.value()) + ")" : "ok"; }

int usage() {
  std::fprintf(stderr, "usage: colin --naive | --faultsafe [--processes]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 3 && std::string_view(argv[2]) == "--processes")) return usage();
  const std::string_view mode = argv[1];
  if (mode != "--naive" && mode != "--faultsafe") return usage();
  const bool naive = mode == "--naive";
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc == 3) {
    std::string why;
    if (auto ec = fs::probe_userfaultfd(why)) {
      std::printf("RESULT: skipped (no userfaultfd: %s)\n", why.c_str());
      return 77;
    }
    return colin_processes::run(naive);
  }

  std::string why;
  if (auto ec = fs::probe_userfaultfd(why)) {
    std::printf("colin: userfaultfd unavailable: %s (%s)\nRESULT: skipped (no userfaultfd)\n", why.c_str(),
                ec.message().c_str());
    return 77;
  }
  fs::wait_graph::set_enabled(true);

  // Watchdog: a hang is a failure, never a hung demo.
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    const auto end = clk::now() + 20s;
    while (!finished.load() && clk::now() < end) std::this_thread::sleep_for(10ms);
    if (!finished.load()) {
      std::printf("colin: WATCHDOG: still running after 20 s; wait graph:\n%s\nRESULT: hung (gaaaame over maaaaan)\n",
                  fs::wait_graph::dump().c_str());
      std::fflush(stdout);
      std::_Exit(1);
    }
  });

  // Reports: every violation is printed; the first wait cycle is kept with its time.
  std::mutex rep_mu;
  std::vector<fs::violation> cycles;
  clk::time_point first_report{};
  fs::scoped_violation_handler handler([&](const fs::violation& v) {
    const auto now = clk::now();
    std::lock_guard<std::mutex> g(rep_mu);
    std::printf("---- faultsafe report ----\n%s\n--------------------------\n", v.report().c_str());
    if (v.kind == fs::violation_kind::wait_cycle) {
      if (cycles.empty()) {
        first_report = now;
        // Every recorded wait at that moment, including those behind the cycle (bob1's fault, bob2).
        std::printf("---- wait graph at the report ----\n%s----------------------------------\n",
                    fs::wait_graph::dump().c_str());
      }
      cycles.push_back(v);
    }
  });

  fs::process bob("Bob"), nfs_client("nfs"), init("init");
  latch page_in_started, io_pkt_serving_bob2, nfs_read_done;
  std::atomic<bool> armed{true};
  std::atomic<clk::rep> cycle_closed_at{0};
  std::error_code nfs_read_error;
  std::vector<unsigned char> nfs_got(page);
  int nfs_io_fd = -1;

  // io_pkt: ONE thread (QNX io_pkt is single threaded). Its read handler copies straight into the
  // client's buffer, so it takes the client's page fault itself.
  file_server io_pkt("io_pkt", "/io_pkt", fs::thread_pool_options{1, 1},
                     [&](fs::request_context& ctx) {
                       if (ctx.client.pid == bob.pid()) {
                         trace("io_pkt: serving bob2's read (step 8)");
                         io_pkt_serving_bob2.set();
                       }
                     },
                     nullptr);
  // nfs: its page-in handler reads io_pkt first (step 11), once, for bob1's fault.
  file_server nfs("nfs", "/nfs", fs::thread_pool_options{1, 4}, nullptr,
                  [&](fs::request_context& ctx, const fs::io_page_in_request&) -> std::error_code {
                    trace("nfs: page-in request");
                    if (ctx.client.pid != bob.pid() || !armed.exchange(false)) return {};
                    trace("nfs: page-in for bob1's fault (step 10)");
                    page_in_started.set();  // proc holds Bob's aspace (single_lock) or bob1's region lock
                    if (!io_pkt_serving_bob2.wait(5000ms)) {
                      trace("nfs: io_pkt never served bob2");
                      return std::make_error_code(std::errc::timed_out);
                    }
                    if (naive) {
                      // Let io_pkt/0's fault reach proc:Bob/1's lock wait first (the seed's order): the
                      // waits of bob1, proc:Bob/0, bob2, io_pkt/0 and proc:Bob/1 are then recorded.
                      const auto until = clk::now() + 1000ms;
                      while (fs::wait_graph::stats().active_waits < 5 && clk::now() < until)
                        std::this_thread::sleep_for(100us);
                    }
                    trace("nfs: sends to io_pkt (step 11)");
                    cycle_closed_at.store(clk::now().time_since_epoch().count());
                    auto r = nfs_client.pread(nfs_io_fd, nfs_got.data(), page, 0);  // send to io_pkt
                    trace("nfs: send to io_pkt returned");
                    if (!r) nfs_read_error = r.error();
                    else if (*r != page) nfs_read_error = std::make_error_code(std::errc::io_error);
                    nfs_read_done.set();  // orders nfs's results before main's checks (the uffd wake is
                                          // an edge ThreadSanitizer cannot see)
                    return nfs_read_error;  // an error fails the page-in: bob1's access gets SIGBUS
                  });
  io_pkt.add("b");
  io_pkt.add("c");
  nfs.add("a");
  if (!fill_file(init, "/nfs/a", 'a', 2 * page) || !fill_file(init, "/io_pkt/b", 'b', page) ||
      !fill_file(init, "/io_pkt/c", 'c', page)) {
    std::printf("RESULT: setup failed\n");
    finished = true;
    watchdog.join();
    return 1;
  }
  {
    auto fd = nfs_client.open("/io_pkt/c", O_RDONLY);
    if (!fd) {
      std::printf("RESULT: setup failed (nfs open io_pkt: %s)\n", errstr(fd.error()).c_str());
      finished = true;
      watchdog.join();
      return 1;
    }
    nfs_io_fd = *fd;
  }

  fs::aspace_options ao;
  ao.single_lock = naive;
  ao.name = "Bob";
  fs::pager_options po;
  po.fault_threads = 2;  // proc:Bob/0 and proc:Bob/1
  po.readahead = false;
  try {
    (void)bob.memory(ao, po);
  } catch (const std::system_error& e) {
    std::printf("colin: %s\nRESULT: skipped (no userfaultfd)\n", e.what());
    finished = true;
    watchdog.join();
    return 77;
  }

  std::printf("colin %s: Bob's aspace: %s; io_pkt: 1 thread; nfs: up to 4 threads\n", naive ? "--naive" : "--faultsafe",
              naive ? "ONE lock for the whole address space (held during fault service)" : "one lock per region");
  std::printf("we are go for throttle up\n");

  std::error_code bob1_error, bob2_error;
  bool bob1_data_ok = false, bob2_data_ok = false;
  const auto t0 = clk::now();
  {
    latch mapped, bob2_ready;
    fs::process_thread bob1(bob, "bob1", [&] {
      fs::announce_faulting_thread();
      auto fd = bob.open("/nfs/a", O_RDONLY);  // step 1
      if (!fd) {
        bob1_error = fd.error();
        mapped.set();
        return;
      }
      auto p = bob.mmap(nullptr, 2 * page, PROT_READ, MAP_SHARED, *fd, 0);  // step 3
      mapped.set();
      if (!p) {
        bob1_error = p.error();
        return;
      }
      const auto* mp = static_cast<const unsigned char*>(*p);
      // bob2 has opened io_pkt and mapped its buffer: from now on proc may hold Bob's aspace.
      if (!bob2_ready.wait(5000ms)) {
        bob1_error = std::make_error_code(std::errc::timed_out);
        return;
      }
      std::vector<unsigned char> got(page);
      trace("bob1: touches its nfs mapping (step 5)");
      bob1_error = fs::detail::guarded_memcpy(got.data(), mp + page, page);  // step 5: faults (file offset 4096)
      trace("bob1: fault resolved");
      if (!bob1_error) bob1_data_ok = check(got.data(), 'a', page, page);
    });
    fs::process_thread bob2(bob, "bob2", [&] {
      fs::announce_faulting_thread();
      auto fd = bob.open("/io_pkt/b", O_RDONLY);  // step 2
      auto buf = bob.mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      bob2_ready.set();
      if (!fd || !buf) {
        bob2_error = !fd ? fd.error() : buf.error();
        return;
      }
      if (!mapped.wait(5000ms) || !page_in_started.wait(5000ms)) {  // step 4/6: proc is serving bob1's fault
        bob2_error = std::make_error_code(std::errc::timed_out);
        return;
      }
      trace("bob2: reads io_pkt (step 7)");
      auto r = bob.read(*fd, *buf, page);  // step 7/8: io_pkt/0 faults on this buffer
      trace("bob2: read returned");
      if (!r) bob2_error = r.error();
      else bob2_data_ok = *r == page && check(static_cast<const unsigned char*>(*buf), 'b', 0, page);
    });
  }  // joins bob1 and bob2
  const auto t_done = clk::now();
  if (!nfs_read_done.wait(5000ms)) nfs_read_error = std::make_error_code(std::errc::timed_out);
  const bool nfs_ok = !nfs_read_error && check(nfs_got.data(), 'c', 0, page);
  const auto st = bob.memory().fault_pager().stats();

  std::printf("bob1 (read of its nfs mapping, file offset %zu): %s%s\n", page, errstr(bob1_error).c_str(),
              bob1_data_ok ? ", data verified" : "");
  std::printf("bob2 (read of io_pkt into its fresh buffer): %s%s\n", errstr(bob2_error).c_str(),
              bob2_data_ok ? ", data verified" : "");
  std::printf("nfs (page-in handler's read of io_pkt): %s%s\n", errstr(nfs_read_error).c_str(), nfs_ok ? ", data verified" : "");
  std::printf("Bob's pager: %llu faults served, %llu page-in errors\n", static_cast<unsigned long long>(st.faults),
              static_cast<unsigned long long>(st.page_in_errors));

  std::vector<fs::violation> seen;
  clk::time_point reported{};
  {
    std::lock_guard<std::mutex> g(rep_mu);
    seen = cycles;
    reported = first_report;
  }
  int rc = 1;
  std::string result;
  if (naive) {
    const auto closed = clk::time_point(clk::duration(cycle_closed_at.load()));
    const double ms = std::chrono::duration<double, std::milli>(reported - closed).count();
    std::string chain = seen.empty() ? std::string() : (seen.front().details.empty() ? seen.front().summary : seen.front().details.front());
    const char* hops[] = {"io_pkt/0 -page wait-> fault", "-served by-> proc:Bob/", "-lock wait-> 'Bob' (rank 10)",
                          "-held by-> proc:Bob/", "-reply wait->", "nfs/", "-send wait-> channel 'io_pkt'",
                          "-served by-> io_pkt/0"};
    std::string missing;
    for (const char* h : hops)
      if (chain.find(h) == std::string::npos) missing += std::string(" [") + h + "]";
    if (seen.empty()) {
      result = "naive: NO lock-up reported (expected Colin's cycle)";
    } else if (!missing.empty()) {
      std::printf("colin: the report lacks the hops%s\n", missing.c_str());
      result = "naive: cycle reported but hops missing";
    } else if (ms > 2000.0 || ms < 0) {
      result = "naive: cycle reported too late (" + std::to_string(ms) + " ms)";
    } else {
      std::printf("All right, the kernel's secured: the cycle was reported %.2f ms after it closed and broken; every "
                  "thread joined %.1f ms after the start.\n",
                  ms, std::chrono::duration<double, std::milli>(t_done - t0).count());
      char buf[160];
      std::snprintf(buf, sizeof buf, "naive: Colin's lock-up detected in %.2f ms, %zu hops named, broken and unwound (bob's your uncle)",
                    ms, seen.front().details.size() - 1);
      result = buf;
      rc = 0;
    }
  } else {
    if (!seen.empty()) result = "faultsafe: unexpected wait-cycle report";
    else if (!bob1_data_ok || !bob2_data_ok || !nfs_ok) result = "faultsafe: data NOT verified";
    else {
      result = "faultsafe: completed, data verified; served by per-region locks (bob1's nfs fault held only its region, "
               "bob2's buffer fault was served meanwhile)";
      rc = 0;
    }
  }
  (void)nfs_client.close(nfs_io_fd);
  finished = true;
  watchdog.join();
  std::printf("RESULT: %s\n", result.c_str());
  return rc;
}
