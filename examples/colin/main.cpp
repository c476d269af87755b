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
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "faultsafe/resmgr/remote.hpp"


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
  /// Runs before the default read; what it returns is held until the read is served (nullptr: nothing).
  using read_hook = std::function<std::shared_ptr<void>(fs::request_context&)>;
  using page_in_hook = std::function<std::error_code(fs::request_context&, const fs::io_page_in_request&)>;

  file_server(std::string name, std::string prefix, fs::thread_pool_options pool, read_hook rh, page_in_hook ph)
      : fs_(fs::ramfs_options{.name = std::move(name),
                              .prefix = std::move(prefix),
                              .pool = pool,
                              .customize = [rh = std::move(rh), ph = std::move(ph)](fs::io_funcs& f) {
                                if (rh)
                                  f.read = [rh, dflt = f.read](fs::request_context& ctx, fs::ocb_base& o,
                                                               const fs::io_rw_request& q) {
                                    const std::shared_ptr<void> held = rh(ctx);
                                    return dflt(ctx, o, q);
                                  };
                                if (ph)
                                  f.page_in = [ph, dflt = f.page_in](fs::request_context& ctx, fs::ocb_base* o,
                                                                    const fs::io_page_in_request& q,
                                                                    fs::io_page_in_reply& rep) -> fs::io_result {
                                    if (auto ec = ph(ctx, q)) return fs::io_result{0, ec};
                                    return dflt(ctx, o, q, rep);
                                  };
                              },
                              .file = {.max_size = std::uint64_t{1} << 20, .name = "colin file"},
                              .direct_copy = false}) {}  // the server thread takes the fault on the client's buffer
  void add(const std::string& name) {
    if (auto ec = fs_.create(name, 0666)) throw std::system_error(ec, "create " + name);
  }
  void stop() { fs_.stop(); }
  fs::server& srv() { return fs_.srv(); }

 private:
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

// ---- --processes: bob, nfs and io_pkt as three OS processes, through the client API ----
//
// nfs and io_pkt are forked servers, each a ramfs served on a Unix socket (remote_server); Bob (this
// process) mounts both (mount_remote) and uses the same `process` calls as in one process. Bob's two
// MAP_SHARED mappings of /nfs/a are served by nfs's pager (his userfaultfd, which takes kernel-mode
// faults, handed to nfs); nfs's page-in reads /io_pkt/c through nfs's own mount of io_pkt. io_pkt serves
// one request at a time (QNX io_pkt is single-threaded: its read handler runs under one lock, "io_pkt's
// thread"), copying into the client's buffer (process_vm_writev: bob2's read is larger than what
// travels through the connection's shared memory). The seed's order, every run (pipes, no sleeps):
//   bob1 touches its first mapping -> nfs's fault thread serves the fault (--naive: holding the lock of
//   Bob's WHOLE address space, remote_server_options::single_lock) and its page-in tells Bob; bob2 reads
//   io_pkt into an unserved page of his second mapping: io_pkt's copy takes a kernel-mode fault that
//   nfs's pager must serve; once io_pkt serves bob2, nfs's page-in reads io_pkt: it waits for io_pkt's
//   thread.
//   --naive --processes      the second fault waits for Bob's address-space lock, held by the first
//                            fault's service, which waits for io_pkt, which waits for the second fault.
//                            The cycle spans two servers' processes and the kernel; no process's wait-for
//                            graph holds it (README, "Colin across processes" says why the kernel's facts
//                            cannot close it). nfs's page-in gives up after 2 s (a bounded wait: ETIMEDOUT)
//                            and names what it knows: the fault it serves, the lock it holds, io_pkt's pid
//                            (SO_PEERCRED), its own wait-for graph, and io_pkt's threads the kernel shows
//                            blocked in a userfaultfd fault (/proc stack and syscall); bob1 gets SIGBUS and
//                            everything unwinds. Exit 0 when bob2's read was held for the whole bounded
//                            wait, then verified, bob1 got SIGBUS, and nfs's report named io_pkt's thread
//                            in process_vm_writev into Bob. A watchdog fails a run that hangs (20 s).
//   --faultsafe --processes  per-region locks (the default): the second fault is served at once; bob1's
//                            and bob2's bytes are verified. Exit 0 then.

constexpr std::size_t xlen = 16 * page;             // each of Bob's mappings of /nfs/a
constexpr std::size_t bob2_len = 4 * page;          // bob2's read: above the inline limit (4 KiB)
constexpr auto nfs_patience = std::chrono::seconds(2);

void post(int fd) { (void)!::write(fd, "x", 1); }
bool await(int fd, std::chrono::milliseconds limit) {
  pollfd p{fd, POLLIN, 0};
  char c;
  return ::poll(&p, 1, static_cast<int>(limit.count())) == 1 && ::read(fd, &c, 1) == 1;
}

// A thread of another process that the kernel shows blocked in a userfaultfd fault (its kernel stack
// has handle_userfault), with the system call it is in (/proc/<pid>/task/<tid>/{stack,syscall,comm};
// the stack needs root).
struct kernel_blocked {
  pid_t tid = 0;
  std::string comm;
  long syscall = -1;            // its number; the first argument is `arg0`
  unsigned long long arg0 = 0;  // process_vm_writev/readv: the pid whose memory it accesses
};

std::string read_text(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return {};
  std::string out;
  char buf[512];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  std::fclose(f);
  return out;
}

std::vector<kernel_blocked> threads_in_userfault(pid_t pid) {
  std::vector<kernel_blocked> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string t = dir + "/" + e->d_name;
    if (read_text(t + "/stack").find("handle_userfault") == std::string::npos) continue;
    kernel_blocked k;
    k.tid = static_cast<pid_t>(std::atoi(e->d_name));
    k.comm = read_text(t + "/comm");
    if (!k.comm.empty() && k.comm.back() == '\n') k.comm.pop_back();
    (void)std::sscanf(read_text(t + "/syscall").c_str(), "%ld %llx", &k.syscall, &k.arg0);
    out.push_back(k);
  }
  ::closedir(d);
  return out;
}

// A forked server process: `body(ready, stop)` posts `ready` when it listens and returns when `stop`
// reads end of file.
struct server_process {
  pid_t pid = -1;
  int stop_w = -1;
  template <class Body>
  bool start(Body body) {
    int ready[2], stop[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(stop, O_CLOEXEC) != 0) return false;
    pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      ::close(ready[0]);
      ::close(stop[1]);
      int rc = 3;
      try {
        rc = body(ready[1], stop[0]);
      } catch (const std::exception& e) {
        std::printf("  server (pid %d): %s\n", static_cast<int>(::getpid()), e.what());
      }
      ::_exit(rc);
    }
    ::close(ready[1]);
    ::close(stop[0]);
    stop_w = stop[1];
    const bool up = await(ready[0], 10s);
    ::close(ready[0]);
    return up;
  }
  // Effects: tells it to stop and reaps it (SIGKILL after 10 s). Returns: its exit code (-1: killed).
  int stop() {
    if (pid <= 0) return -1;
    ::close(stop_w);
    int st = 0;
    const auto end = clk::now() + 10s;
    while (::waitpid(pid, &st, WNOHANG) == 0 && clk::now() < end) std::this_thread::sleep_for(10ms);
    if (::waitpid(pid, &st, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      (void)::waitpid(pid, &st, 0);
    }
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
};

void until_eof(int fd) {
  char c;
  while (::read(fd, &c, 1) < 0 && errno == EINTR) {
  }
}

// io_pkt: /io_pkt/b and /io_pkt/c; one request at a time. Posts `serving` when it starts its first read.
int io_pkt_main(const std::string& address, int ready, int stop, int serving) {
  // Taken before any lock of the file the read touches: a rank below attr_range (config.hpp's table).
  fs::range_lock one_thread("io_pkt's thread", fs::rank::region);
  std::atomic<bool> first{true};
  file_server io("io_pkt", "/io_pkt", fs::thread_pool_options{1, 1}, [&](fs::request_context&) {
    auto g = std::make_shared<fs::range_guard>(one_thread, 0, fs::to_end, fs::lock_mode::exclusive);
    if (first.exchange(false)) post(serving);
    return g;
  }, nullptr);
  io.add("b");
  io.add("c");
  fs::process init("init");
  if (!fill_file(init, "/io_pkt/b", 'b', bob2_len) || !fill_file(init, "/io_pkt/c", 'c', page)) return 4;
  fs::remote_server rs(io.srv(), fs::remote_server_options{.address = address});
  std::printf("  io_pkt (pid %d): serving /io_pkt at %s, one request at a time\n", static_cast<int>(::getpid()), address.c_str());
  post(ready);
  until_eof(stop);
  rs.stop();
  io.stop();
  return 0;
}

// nfs: /nfs/a; serves Bob's mappings with its pager. Its first page-in posts `in_service`, waits for
// `io_serving`, then reads /io_pkt/c (bounded by nfs_patience in --naive).
int nfs_main(const std::string& address, const std::string& io_address, bool naive, int ready, int stop, int in_service,
             int io_serving) {
  fs::path_namespace mine;  // nfs's own view: /io_pkt
  if (auto ec = fs::mount_remote(mine, "/io_pkt", io_address)) throw std::system_error(ec, "nfs: mount /io_pkt");
  std::error_code ec;
  const auto io = mine.resolve("/io_pkt/c", ec);
  const pid_t io_pid = io ? fs::server_pid(*io->ch) : -1;  // the kernel's word (SO_PEERCRED)
  fs::process me("nfs", {}, &mine);
  auto io_fd = me.open("/io_pkt/c", O_RDONLY);
  if (!io_fd) throw std::system_error(io_fd.error(), "nfs: open /io_pkt/c");
  std::atomic<bool> armed{true};
  std::atomic<bool> timed_out{false}, named_io_fault{false};  // the bounded wait ended; its report named io_pkt's fault
  std::thread reader;
  latch read_done;
  std::error_code read_error;
  std::vector<unsigned char> got(page);
  file_server nfs("nfs", "/nfs", fs::thread_pool_options{1, 4}, nullptr,
                  [&](fs::request_context&, const fs::io_page_in_request& q) -> std::error_code {
    if (!armed.exchange(false)) return {};
    post(in_service);  // this fault thread serves bob1's fault (--naive: holding Bob's whole address space)
    if (!await(io_serving, 10s)) return std::make_error_code(std::errc::timed_out);
    reader = std::thread([&] {  // the send to io_pkt (it cannot be abandoned once io_pkt took it)
      auto r = me.pread(*io_fd, got.data(), page, 0);
      read_error = !r ? r.error() : *r != page || !check(got.data(), 'c', 0, page) ? std::make_error_code(std::errc::io_error) : std::error_code{};
      read_done.set();
    });
    if (read_done.wait(naive ? std::chrono::milliseconds(nfs_patience) : 20000ms)) return read_error;
    // The bounded wait ends: name what this process knows, its own waits and what the kernel shows of
    // io_pkt's threads.
    std::string kernel;
    for (const kernel_blocked& k : threads_in_userfault(io_pid)) {
      const bool copy = k.syscall == SYS_process_vm_writev || k.syscall == SYS_process_vm_readv;
      char line[256];
      std::snprintf(line, sizeof line, "    thread %d '%s': in a userfaultfd fault (handle_userfault) inside %s(pid %llu, ...)\n",
                    static_cast<int>(k.tid), k.comm.c_str(),
                    copy ? (k.syscall == SYS_process_vm_writev ? "process_vm_writev" : "process_vm_readv") : "system call",
                    copy ? k.arg0 : 0ull);
      kernel += line;
      if (copy && static_cast<pid_t>(k.arg0) == ::getppid()) named_io_fault.store(true);  // Bob: nfs's parent here
    }
    if (read_text("/proc/" + std::to_string(io_pid) + "/stack").empty()) {  // kernel stacks are root's
      kernel = "    (the kernel shows this process no kernel stacks: it needs root)\n";
      named_io_fault.store(true);  // nothing to check
    }
    std::printf("---- nfs (pid %d): page-in TIMEOUT after %lld s ----\n"
                "  nfs's fault thread serves bob1's fault at 0x%llx (file /nfs/a offset %llu) in Bob's memory,\n"
                "  holding %s;\n"
                "  it waits for io_pkt, pid %d (SO_PEERCRED of nfs's connection), to answer read(/io_pkt/c, %zu).\n"
                "  nfs's own waits (its wait-for graph):\n%s"
                "  io_pkt's threads the kernel shows blocked in a page fault (/proc/%d/task/*/stack, syscall):\n%s"
                "  A fault in Bob's memory is served by nfs's pager, whose other fault thread waits for the lock this one\n"
                "  holds: nfs -> io_pkt -> nfs, unless io_pkt has a thread free to answer nfs (only io_pkt knows; README,\n"
                "  \"Colin across processes\"). Giving up: the page-in fails with ETIMEDOUT, bob1 gets SIGBUS.\n"
                "-----------------------------------------------\n",
                static_cast<int>(::getpid()), static_cast<long long>(nfs_patience.count()),
                static_cast<unsigned long long>(q.fault_address), static_cast<unsigned long long>(q.fault_offset),
                naive ? "the lock of Bob's WHOLE address space (single_lock)" : "the lock of the faulting region", static_cast<int>(io_pid),
                page, fs::wait_graph::dump().c_str(), static_cast<int>(io_pid), kernel.empty() ? "    (none)\n" : kernel.c_str());
    timed_out.store(true);
    return std::make_error_code(std::errc::timed_out);
  });
  nfs.add("a");
  fs::process init("init");
  if (!fill_file(init, "/nfs/a", 'a', xlen)) return 4;
  fs::remote_server rs(nfs.srv(), fs::remote_server_options{.address = address, .single_lock = naive, .client_space_name = "Bob"});
  std::printf("  nfs (pid %d): serving /nfs at %s; Bob's address space: %s\n", static_cast<int>(::getpid()), address.c_str(),
              naive ? "ONE lock (single_lock)" : "per-region locks");
  post(ready);
  until_eof(stop);
  if (reader.joinable()) reader.join();
  rs.stop();
  nfs.stop();
  (void)me.close(*io_fd);
  // Exit 0: --naive, the bounded wait ended and named io_pkt's thread in a fault on Bob's memory;
  // --faultsafe, it never ended.
  return (naive ? timed_out.load() && named_io_fault.load() : !timed_out.load()) ? 0 : 5;
}

int run_processes(bool naive) {
  std::printf("colin %s --processes: bob, nfs and io_pkt are three OS processes; %s\n", naive ? "--naive" : "--faultsafe",
              naive ? "ONE lock for Bob's whole address space in nfs's pager, io_pkt single-threaded"
                    : "per-region locks (the default), io_pkt single-threaded");
  try {
    fs::served_memory probe(fs::served_memory_options{true});
  } catch (const std::system_error& e) {
    std::printf("RESULT: skipped: io_pkt's access must be a kernel-mode fault: %s\n", e.what());
    return 77;
  }
  const std::string base = "@faultsafe-colin-" + std::to_string(::getpid());
  int serving[2], in_service[2];
  if (::pipe2(serving, O_CLOEXEC) != 0 || ::pipe2(in_service, O_CLOEXEC) != 0) return 1;
  server_process io_pkt, nfs;
  const bool up = io_pkt.start([&](int ready, int stop) { return io_pkt_main(base + "-io_pkt", ready, stop, serving[1]); }) &&
                  nfs.start([&](int ready, int stop) {
                    return nfs_main(base + "-nfs", base + "-io_pkt", naive, ready, stop, in_service[1], serving[0]);
                  });
  ::close(serving[0]);
  ::close(serving[1]);
  ::close(in_service[1]);
  // Watchdog: a lock-up nobody breaks fails the run, never hangs it.
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    const auto end = clk::now() + 20s;
    while (!finished.load() && clk::now() < end) std::this_thread::sleep_for(10ms);
    if (finished.load()) return;
    std::printf("colin: WATCHDOG: still running after 20 s\nRESULT: hung (gaaaame over maaaaan)\n");
    std::fflush(stdout);
    ::kill(nfs.pid, SIGKILL);
    ::kill(io_pkt.pid, SIGKILL);
    std::_Exit(1);
  });
  bool ok = false;
  std::string result = "set-up failed: a server did not start";
  if (up) {
    fs::path_namespace ns;
    fs::process bob("Bob", {}, &ns);
    bob.memory().set_served_options(fs::served_memory_options{true});  // io_pkt's copy must be able to fault
    auto a = !fs::mount_remote(ns, "/nfs", base + "-nfs") && !fs::mount_remote(ns, "/io_pkt", base + "-io_pkt")
                 ? bob.open("/nfs/a", O_RDWR)
                 : fs::result<int>(std::make_error_code(std::errc::not_connected));
    auto b = bob.open("/io_pkt/b", O_RDONLY);
    auto m1 = a ? bob.mmap(nullptr, xlen, PROT_READ, MAP_SHARED, *a, 0) : fs::result<void*>(a.error());
    auto m2 = a ? bob.mmap(nullptr, xlen, PROT_READ | PROT_WRITE, MAP_SHARED, *a, 0) : fs::result<void*>(a.error());
    if (!(a && b && m1 && m2)) {
      const auto why = [](const auto& r) { return r ? std::string("ok") : errstr(r.error()); };
      result = "set-up failed: open /nfs/a " + why(a) + ", open /io_pkt/b " + why(b) + ", mmap " + why(m1) + ", mmap " + why(m2);
    }
    if (a && b && m1 && m2) {
      std::error_code bob1_error, bob2_error;
      bool bob1_ok = false, bob2_ok = false;
      double bob2_ms = 0;
      {
        fs::process_thread bob1(bob, "bob1", [&] {
          fs::announce_faulting_thread();
          std::vector<unsigned char> got(page);
          std::printf("  bob1 touches its first mapping of /nfs/a: nfs's pager serves the fault, its page-in reads io_pkt\n");
          bob1_error = fs::detail::guarded_memcpy(got.data(), static_cast<const unsigned char*>(*m1) + page, page);
          bob1_ok = !bob1_error && check(got.data(), 'a', page, page);
        });
        fs::process_thread bob2(bob, "bob2", [&] {
          fs::announce_faulting_thread();
          if (!await(in_service[0], 10s)) {
            bob2_error = std::make_error_code(std::errc::timed_out);
            return;
          }
          auto* buf = static_cast<unsigned char*>(*m2) + 8 * page;  // file page 8: not the page bob1 reads
          std::printf("  bob2 reads io_pkt into his second mapping: io_pkt's copy faults on nfs's pager\n");
          const auto t0 = clk::now();
          auto r = bob.read(*b, buf, bob2_len);
          bob2_ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
          if (!r) bob2_error = r.error();
          else bob2_ok = *r == bob2_len && check(buf, 'b', 0, bob2_len);
        });
      }
      std::printf("  bob2's read returned after %.1f ms: %s; bob1's access: %s\n", bob2_ms,
                  bob2_ok ? "data verified" : errstr(bob2_error).c_str(),
                  bob1_ok ? "data verified" : bob1_error ? ("failed (" + errstr(bob1_error) + ": SIGBUS)").c_str() : "WRONG data");
      const double patience_ms = std::chrono::duration<double, std::milli>(nfs_patience).count();
      if (naive) {
        ok = bob2_ok && bob1_error && bob2_ms >= patience_ms * 0.9;
        result = ok ? "lock-up across three processes: bob2's read held " + std::to_string(static_cast<int>(bob2_ms + 0.5)) +
                          " ms until nfs's bounded page-in gave up and named its waits (no process's wait graph holds the "
                          "cycle); bob1 got SIGBUS"
                    : "lock-up NOT shown (FAIL)";
      } else {
        ok = bob1_ok && bob2_ok;
        result = ok ? "completed in " + std::to_string(static_cast<int>(bob2_ms + 0.5)) + " ms, bob1 and bob2 verified" : "FAILED";
      }
      (void)bob.munmap(*m1, xlen);
      (void)bob.munmap(*m2, xlen);
    }
    if (a) (void)bob.close(*a);
    if (b) (void)bob.close(*b);
  }
  const int nfs_rc = nfs.stop();
  (void)io_pkt.stop();
  finished.store(true);
  watchdog.join();
  ::close(in_service[0]);
  if (ok && nfs_rc != 0) {
    ok = false;
    result = naive ? "nfs's timeout report did not name io_pkt's thread in a fault on Bob's memory (FAIL)"
                   : "nfs's page-in timed out (FAIL)";
  }
  if (ok) std::printf("  %s\n", naive ? "bob's your uncle: the kernel's secured only by the bounded wait." : "All right, the kernel's secured.");
  std::printf("RESULT: processes %s: %s\n", naive ? "naive" : "faultsafe", result.c_str());
  return ok ? 0 : 1;
}

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
    return run_processes(naive);
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
                     [&](fs::request_context& ctx) -> std::shared_ptr<void> {
                       if (ctx.client.pid == bob.pid()) {
                         trace("io_pkt: serving bob2's read (step 8)");
                         io_pkt_serving_bob2.set();
                       }
                       return nullptr;
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
