// brian: Brian's lock-up (seed, 2008-11-28), naive and faultsafe.
//
//   1. user thread Bob mmap's an already open fd: ptr = mmap(..., fd)
//   2. user thread Bob calls read() on the same fd, using the same ptr as the output buffer
//   3. the resmgr library locks the structure of the file, as part of normal resmgr handling
//   4. this is the first read, so the memory access to the file faults
//   5. a proc thread runs to handle the fault and issues a read on the same fd
//   6. the proc thread calls read(), in the resmgr library, which also tries to lock the same attribute
//   7. the proc thread hangs forever
//
// brian --naive     the seed's server: the read handler locks the whole file exclusively (one attr
//                   lock), no direct copy, no fault-reentrancy guard. The lock-up happens for real and
//                   must end by itself with the wait-for graph's report: exit 0 when a wait_cycle was
//                   reported within 2 s (the graph breaks the cycle, Bob's read fails), else 1.
// brian --faultsafe the same read three ways, each verified byte for byte (exit 0 when all are right):
//                   A. ramfs defaults: the direct copy path moves the data inside the store, no fault;
//                   B. the seed's exclusive read handler, direct copy off: the page-in conflicts only with
//                      its own activity and the guard serves it under that activity;
//                   C. as B on a single-threaded server: the pool guard hands the page-in to the
//                      server's reserve thread, then the range guard serves it.
// brian --naive --processes, brian --faultsafe --processes: the same across a real OS process boundary,
//                   written as a user would: fs is a forked OS process serving its file on a Unix socket
//                   (remote_server); Bob mounts it (mount_remote) and uses the same `process` calls. His
//                   mmap is served by fs's pager (his userfaultfd handed to fs), so fs's copy into the
//                   mapping (process_vm_writev) faults on fs's own pager, under the range fs's read holds.
//     --naive --processes      kernel-mode faults (/dev/userfaultfd), page-ins wait like any request: fs's
//                              wait-for graph names the cycle (fs's slot thread -> its fault on Bob's page
//                              -> fs's fault thread -> the range the slot thread holds) and breaks it; Bob's
//                              read fails. Exit 0 when fs reported the cycle within 2 s and the read failed.
//     --faultsafe --processes  A. kernel-mode faults: the fault names fs's slot thread (UFFD_FEATURE_THREAD_ID),
//                                 the page-in runs for its activity and the guard serves it;
//                              B. a user-mode-only userfaultfd (what an unprivileged process gets): the kernel
//                                 fails fs's copy with EFAULT; fs pages the range in and retries (gfs2's
//                                 fault-in-and-retry). Exit 0 when Bob verified both reads byte for byte.
// The last line is "RESULT: <short text>".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <faultsafe/activity/wait_graph.hpp>
#include <faultsafe/resmgr/direct_copy.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/process_thread.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>
#include <faultsafe/vm/aspace.hpp>

using namespace faultsafe;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t file_size = 1 << 20;
std::uint8_t pattern(std::size_t i) { return static_cast<std::uint8_t>((i * 2654435761u) >> 11); }

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// Every violation, printed as it arrives and kept (the default handler prints each site once and goes
// on: the guard's reports are information; this example also counts and times them).
struct reports {
  const char* prefix = "  >> ";  // before each printed report
  std::mutex m;
  std::vector<violation> seen;
  std::vector<clock_type::time_point> when;
  std::size_t printed_from = 0;  // print the first report of each kind after this index (per phase)
  void operator()(const violation& v) {
    std::lock_guard<std::mutex> g(m);
    bool first = true;
    for (std::size_t i = printed_from; i < seen.size(); ++i) first = first && seen[i].kind != v.kind;
    seen.push_back(v);
    when.push_back(clock_type::now());
    if (first) {
      std::printf("%s%s\n", prefix, v.report().c_str());
      std::fflush(stdout);
    }
  }
  void new_phase() {
    std::lock_guard<std::mutex> g(m);
    printed_from = seen.size();
  }
  std::size_t count(violation_kind k) {
    std::lock_guard<std::mutex> g(m);
    std::size_t n = 0;
    for (const auto& v : seen) n += v.kind == k;
    return n;
  }
  // Time of the first violation of kind k, if any.
  bool first(violation_kind k, clock_type::time_point& t) {
    std::lock_guard<std::mutex> g(m);
    for (std::size_t i = 0; i < seen.size(); ++i)
      if (seen[i].kind == k) {
        t = when[i];
        return true;
      }
    return false;
  }
};

// A one-file resource manager at /brian: its read handler is the seed's or ramfs's (direct copy).
class brian_fs {
 public:
  brian_fs(path_namespace& ns, bool seed_read_handler, bool direct, self_conflict page_in, thread_pool_options pool)
      : attr_(std::make_shared<iofunc_attr>(0666, 0, 0, attr_options{.max_size = 16 << 20, .name = "brian", .page_in_self_conflict = page_in})),
        srv_(server_options{"fs", pool, {}, &ns}, funcs(seed_read_handler, direct)) {
    if (auto ec = srv_.attach("/brian")) throw std::system_error(ec, "attach /brian");
    srv_.start();
  }
  ~brian_fs() { srv_.stop(); }
  server& srv() { return srv_; }

 private:
  io_funcs funcs(bool seed, bool direct) {
    io_funcs f = direct ? iofunc_direct_defaults() : iofunc_defaults();
    if (seed) f.read = iofunc_read_exclusive;  // the seed's read handler: the whole file exclusively
    f.open = [this](request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
      if (path != "file") return io_result::fail(ENOENT);
      return iofunc_open_default(ctx, q, attr_, out);
    };
    return f;
  }
  std::shared_ptr<iofunc_attr> attr_;
  server srv_;
};

// Bob's part: fill the file, mmap it, read(fd, ptr) into the mapping. Returns the read's result.
struct bob_run {
  result<std::size_t> got{std::error_code{}};
  clock_type::time_point read_started{};
  bool verified = false;
  activity_id activity = 0;
};

bob_run run_bob(process& bob, bool verify) {
  bob_run out;
  auto fd = bob.open("/brian/file", O_RDWR);
  if (!fd) {
    out.got = fd.error();
    return out;
  }
  std::vector<std::uint8_t> bytes(file_size);
  for (std::size_t i = 0; i < file_size; ++i) bytes[i] = pattern(i);
  if (bob.pwrite(*fd, bytes.data(), file_size, 0).value_or(0) != file_size) {
    out.got = std::make_error_code(std::errc::io_error);
    return out;
  }
  std::printf("  1. user thread Bob mmap's an already open fd: ptr = mmap(..., fd)\n");
  auto ptr = bob.mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (!ptr) {
    out.got = ptr.error();
    return out;
  }
  std::printf("  2. user thread Bob calls read() on the same fd, using the same ptr as the output buffer\n");
  std::fflush(stdout);
  out.activity = current_activity();
  out.read_started = clock_type::now();
  out.got = bob.pread(*fd, *ptr, file_size, 0);
  if (verify && out.got.ok() && *out.got == file_size)
    out.verified = std::memcmp(*ptr, bytes.data(), file_size) == 0;  // through the mapping: faults, no lock held
  return out;
}

std::string activity_text(activity_id a) { return "activity " + std::to_string(a); }

int run_naive() {
  std::printf("brian --naive: one exclusive attr lock, no direct copy, no guard\n");
  std::printf("  the kernel's secured? the wait-for graph watches every blocking site.\n");
  reports rep;
  scoped_violation_handler h([&rep](const violation& v) { rep(v); });
  wait_graph::set_enabled(true);
  path_namespace ns;
  brian_fs fs(ns, /*seed read*/ true, /*direct*/ false, self_conflict::wait, {1, 4, self_conflict::wait});
  process bob("Bob", {}, &ns);
  std::atomic<bool> finished{false};
  bob_run res;
  const auto t0 = clock_type::now();
  process_thread t(bob, "main", [&] {
    announce_faulting_thread();
    activity_scope act(new_activity());
    res = run_bob(bob, false);
    finished.store(true);
  });
  // The lock-up must end by itself; if it does not within 10 s, it never will: say so and fail.
  while (!finished.load() && ms_since(t0) < 10000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!finished.load()) {
    std::printf("  7. the proc thread hangs forever: nobody detected it. gaaaame over maaaaan\n");
    std::printf("RESULT: naive: lock-up NOT detected within 10 s (FAIL)\n");
    std::fflush(stdout);
    std::_Exit(1);
  }
  t.join();
  clock_type::time_point td;
  const bool detected = rep.first(violation_kind::wait_cycle, td);
  // From the moment Bob called read() to the wait graph's report.
  const double detect_ms = detected ? std::chrono::duration<double, std::milli>(td - res.read_started).count() : -1;
  std::printf("  3-6. the read handler held the whole file exclusively, faulted on ptr, the pager's page-in\n"
              "       waited for the same attribute lock: a wait cycle.\n");
  std::printf("  Bob's read returned: %s\n", res.got.ok() ? "data (?)" : res.got.error().message().c_str());
  const bool ok = detected && detect_ms <= 2000.0 && !res.got.ok();
  if (ok)
    std::printf("  7. the proc thread does NOT hang forever: the wait-for graph named the cycle after %.1f ms and broke it.\n",
                detect_ms);
  std::printf("RESULT: naive: %s\n",
              ok ? ("lock-up detected and reported by the wait graph in " + std::to_string(static_cast<int>(detect_ms + 0.5)) +
                    " ms (wait_cycle), Bob's read failed: " + res.got.error().message())
                       .c_str()
                 : (std::string("lock-up not reported by the wait graph within 2 s (FAIL)")).c_str());
  return ok ? 0 : 1;
}

// One faultsafe phase: returns whether the data was verified; `how` says which path served it.
bool phase(const char* title, bool seed, bool direct, thread_pool_options pool, reports& rep, std::string& how) {
  std::printf("%s\n", title);
  rep.new_phase();
  path_namespace ns;
  brian_fs fs(ns, seed, direct, self_conflict::grant, pool);
  process bob("Bob", {}, &ns);
  const auto before = direct_copy_stats();
  const std::size_t self_before = rep.count(violation_kind::self_deadlock);
  const std::size_t cycles_before = rep.count(violation_kind::wait_cycle);
  bob_run res;
  const auto t0 = clock_type::now();
  {
    process_thread t(bob, "main", [&] {
      announce_faulting_thread();
      activity_scope act(new_activity());
      res = run_bob(bob, true);
    });
  }
  const double ms = ms_since(t0);
  const auto after = direct_copy_stats();
  const std::size_t guard = rep.count(violation_kind::self_deadlock) - self_before;
  const bool ok = res.got.ok() && *res.got == file_size && res.verified && rep.count(violation_kind::wait_cycle) == cycles_before;
  if (after.store_bytes - before.store_bytes >= file_size && guard == 0)
    how = "direct copy (" + std::to_string((after.store_bytes - before.store_bytes) >> 10) + " KiB store to store, no fault)";
  else if (guard > 0)
    how = "guard (" + std::to_string(guard) + " self-conflict(s) served under " + activity_text(res.activity) +
          (fs.srv().reserve_served() > 0 ? ", " + std::to_string(fs.srv().reserve_served()) + " page-in(s) on the reserve thread" : "") + ")";
  else
    how = "ordinary path";
  if (guard > 1) std::printf("  (%zu self_deadlock reports in this phase; the first is shown)\n", guard);
  std::printf("  3. the read %s: %zu bytes, %s, in %.1f ms: served by the %s\n", ok ? "completed" : "FAILED",
              res.got.ok() ? *res.got : 0, res.verified ? "verified byte for byte" : "NOT verified", ms, how.c_str());
  return ok;
}

int run_faultsafe() {
  std::printf("brian --faultsafe: we are go for throttle up\n");
  reports rep;
  scoped_violation_handler h([&rep](const violation& v) { rep(v); });
  wait_graph::set_enabled(true);
  std::string a, b, c;
  const bool ok_a = phase("A. ramfs handlers (shared range lock per read), direct copy on:", false, true, {1, 4}, rep, a);
  const bool ok_b = phase("B. the seed's exclusive whole-file read lock, direct copy off, fault-reentrancy guard on:", true,
                          false, {1, 4}, rep, b);
  const bool ok_c = phase("C. as B, on a single-threaded server (pool 1..1):", true, false, {1, 1}, rep, c);
  const bool ok = ok_a && ok_b && ok_c && a.rfind("direct copy", 0) == 0 && b.rfind("guard", 0) == 0 && c.rfind("guard", 0) == 0;
  if (ok) std::printf("  All right, the kernel's secured.\n");
  std::printf("RESULT: faultsafe: %s; A: %s; B: %s; C: %s\n", ok ? "3/3 reads verified" : "FAILED", a.c_str(), b.c_str(), c.c_str());
  return ok ? 0 : 1;
}


// ---- --processes: fs in an OS process of its own, Bob here, through the client API ----

// What fs tells Bob when it stops (through a pipe): its reports and when the first cycle was named.
struct fs_outcome {
  std::uint64_t cycles = 0;           // wait_cycle reports
  std::uint64_t guards = 0;           // self_deadlock reports (the guard serving a page-in)
  std::int64_t first_cycle_ns = -1;   // steady_clock (CLOCK_MONOTONIC: one clock for all processes)
};

// A running fs process: a one-file server at /brian serving other processes at `address`.
struct fs_process {
  pid_t pid = -1;
  int stop_w = -1;  // its close tells fs to stop
  int out_r = -1;   // fs writes its fs_outcome here when it stops

  // Effects: forks fs; returns when it listens (false: it did not within 10 s).
  bool start(const std::string& address, bool naive) {
    int ready[2], stop[2], out[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(stop, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return false;
    pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      // Only its own ends: another fs's pipe ends held here would keep that fs from seeing its stop.
      for (int fd = 3; fd < 1024; ++fd)
        if (fd != ready[1] && fd != stop[0] && fd != out[1]) ::close(fd);
      ::_exit(serve(address, naive, ready[1], stop[0], out[1]));
    }
    ::close(ready[1]);
    ::close(stop[0]);
    ::close(out[1]);
    stop_w = stop[1];
    out_r = out[0];
    pollfd p{ready[0], POLLIN, 0};
    char c = 0;
    const bool up = ::poll(&p, 1, 10000) == 1 && ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
    return up;
  }

  // Effects: stops fs and waits for it (10 s, then SIGKILL). Returns: what it reported.
  fs_outcome stop() {
    fs_outcome o;
    if (pid <= 0) return o;
    ::close(stop_w);
    pollfd p{out_r, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1 || ::read(out_r, &o, sizeof o) != static_cast<ssize_t>(sizeof o)) o = fs_outcome{};
    ::close(out_r);
    int st = 0;
    for (int i = 0; i < 1000 && ::waitpid(pid, &st, WNOHANG) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (::waitpid(pid, &st, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      (void)::waitpid(pid, &st, 0);
    }
    pid = -1;
    return o;
  }

 private:
  // The fs process: the seed's read handler (whole file exclusively), no direct copy; naive: page-ins
  // wait for a range like any request; faultsafe: the guard grants a page-in its own activity's range.
  static int serve(const std::string& address, bool naive, int ready, int stop, int out) {
    reports rep;
    rep.prefix = "  fs >> ";
    scoped_violation_handler h([&rep](const violation& v) { rep(v); });
    wait_graph::set_enabled(true);
    const self_conflict policy = naive ? self_conflict::wait : self_conflict::grant;
    try {
      path_namespace ns;
      brian_fs fs(ns, /*seed read*/ true, /*direct*/ false, policy, {1, 4, policy});
      remote_server rs(fs.srv(), remote_server_options{.address = address});
      std::printf("  fs (pid %d): serving /brian at %s\n", static_cast<int>(::getpid()), address.c_str());
      (void)!::write(ready, "r", 1);
      char c;
      while (::read(stop, &c, 1) < 0 && errno == EINTR) {
      }
      rs.stop();
    } catch (const std::exception& e) {
      std::printf("  fs: %s\n", e.what());
      return 3;
    }
    fs_outcome o;
    o.cycles = rep.count(violation_kind::wait_cycle);
    o.guards = rep.count(violation_kind::self_deadlock);
    clock_type::time_point t;
    if (rep.first(violation_kind::wait_cycle, t)) o.first_cycle_ns = std::chrono::nanoseconds(t.time_since_epoch()).count();
    return ::write(out, &o, sizeof o) == static_cast<ssize_t>(sizeof o) ? 0 : 1;
  }
};

struct pair_run {
  bob_run bob;
  fs_outcome fs;
  double ms = 0;
  bool connected = false;
};

std::string fs_address(int round) { return "@faultsafe-brian-" + std::to_string(::getpid()) + "-" + std::to_string(round); }

// Bob (this process) against the fs at fs_address(round), started (`up`) before this process started
// any thread (a child of a multi-threaded process should not start threads; ThreadSanitizer refuses
// it): the same run_bob() as in one process, over mount_remote(). Stops fs.
pair_run run_pair(fs_process& fs, bool up, int round, bool naive, bool kernel_faults) {
  pair_run out;
  const std::string address = fs_address(round);
  if (!up) {
    (void)fs.stop();
    return out;
  }
  {
    path_namespace ns;
    if (auto ec = mount_remote(ns, "/brian", address)) {
      std::printf("  Bob: mount_remote(/brian, %s): %s\n", address.c_str(), ec.message().c_str());
      (void)fs.stop();
      return out;
    }
    out.connected = true;
    process bob("Bob", {}, &ns);
    // Bob's served mappings: a userfaultfd that takes kernel-mode faults (A), or a user-mode-only one (B).
    bob.memory().set_served_options(served_memory_options{kernel_faults});
    std::atomic<bool> finished{false};
    const auto t0 = clock_type::now();
    std::thread watchdog([&] {  // a lock-up nobody breaks must fail the run, never hang it
      while (!finished.load() && ms_since(t0) < 10000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (finished.load()) return;
      std::printf("  the proc thread hangs forever: nobody detected it. gaaaame over maaaaan\n");
      std::printf("RESULT: processes %s: lock-up NOT broken within 10 s (FAIL)\n", naive ? "naive" : "faultsafe");
      ::kill(fs.pid, SIGKILL);
      std::_Exit(1);
    });
    {
      process_thread t(bob, "main", [&] {
        announce_faulting_thread();
        activity_scope act(new_activity());
        out.bob = run_bob(bob, !naive);
      });
    }
    out.ms = ms_since(t0);
    finished.store(true);
    watchdog.join();
  }
  out.fs = fs.stop();
  return out;
}

int run_processes(bool naive) {
  std::string why;
  try {
    served_memory probe(served_memory_options{true});
  } catch (const std::system_error& e) {
    why = e.what();
  }
  if (naive) {
    std::printf("brian --naive --processes: fs and Bob are two OS processes; the seed's exclusive read lock; no guard\n");
    if (!why.empty()) {
      std::printf("RESULT: skipped: kernel-mode faults unavailable: %s\n", why.c_str());
      return 77;
    }
    fs_process fs;
    const bool up = fs.start(fs_address(1), true);
    const pair_run r = run_pair(fs, up, 1, true, true);
    const double detect_ms =
        r.fs.first_cycle_ns < 0 ? -1
                                : (static_cast<double>(r.fs.first_cycle_ns) -
                                   static_cast<double>(std::chrono::nanoseconds(r.bob.read_started.time_since_epoch()).count())) / 1e6;
    const bool ok = r.connected && !r.bob.got.ok() && r.fs.cycles > 0 && detect_ms >= 0 && detect_ms <= 2000.0;
    std::printf("  Bob's read returned after %.1f ms: %s\n", r.ms, r.bob.got.ok() ? "data (?)" : r.bob.got.error().message().c_str());
    std::printf("RESULT: processes naive: %s\n",
                ok ? ("lock-up across the process boundary detected by fs's wait graph in " + std::to_string(static_cast<int>(detect_ms + 0.5)) +
                      " ms (wait_cycle), broken; Bob's read failed: " + r.bob.got.error().message())
                         .c_str()
                   : "lock-up NOT detected and broken within 2 s (FAIL)");
    return ok ? 0 : 1;
  }
  std::printf("brian --faultsafe --processes: fs and Bob are two OS processes; the seed's exclusive read lock\n");
  fs_process fs_a, fs_b;  // both forked now, before any thread of this process
  const bool up_a = why.empty() && fs_a.start(fs_address(1), false);
  const bool up_b = fs_b.start(fs_address(2), false);
  bool ok_a = true;
  std::string a = "skipped (kernel-mode faults unavailable: " + why + ")";
  if (why.empty()) {
    std::printf("A. kernel-mode faults (/dev/userfaultfd): fs's copy faults on its own pager; the guard serves it:\n");
    const pair_run r = run_pair(fs_a, up_a, 1, false, true);
    ok_a = r.connected && r.bob.got.ok() && *r.bob.got == file_size && r.bob.verified && r.fs.guards > 0 && r.fs.cycles == 0;
    a = ok_a ? "guard served " + std::to_string(r.fs.guards) + " self-conflict(s), verified" : "FAILED";
    std::printf("  A. %s (%.1f ms)\n", a.c_str(), r.ms);
  }
  std::printf("B. user-mode-only userfaultfd: fs's copy fails EFAULT, fs faults the range in and retries:\n");
  const pair_run r = run_pair(fs_b, up_b, 2, false, false);
  const bool ok_b = r.connected && r.bob.got.ok() && *r.bob.got == file_size && r.bob.verified && r.fs.cycles == 0;
  const std::string b = ok_b ? "fault-in and retry, verified" : "FAILED";
  std::printf("  B. %s (%.1f ms)\n", b.c_str(), r.ms);
  const bool ok = ok_a && ok_b;
  if (ok) std::printf("  All right, the kernel's secured.\n");
  std::printf("RESULT: processes faultsafe: %s; A: %s; B: %s\n", ok ? "reads verified across processes" : "FAILED", a.c_str(), b.c_str());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  const bool processes = argc > 2 && std::string_view(argv[2]) == "--processes";
  if ((mode != "--naive" && mode != "--faultsafe") || argc > 3 || (argc == 3 && !processes)) {
    std::fprintf(stderr, "usage: %s --naive | --faultsafe [--processes]\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string why;
  if (auto ec = probe_userfaultfd(why)) {
    std::printf("RESULT: skipped: %s\n", why.c_str());
    return 77;
  }
  if (processes) return run_processes(mode == "--naive");
  return mode == "--naive" ? run_naive() : run_faultsafe();
}
