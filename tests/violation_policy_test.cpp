// The default violation policy (order/violation.hpp): a lock-up faultsafe resolved is reported once
// and the program goes on; only an unresolved violation (a programming error) stops it.
//
// The three reproductions of issue 17 run with NO handler installed, each in a forked child whose
// stderr goes to a pipe: the child must exit 0 (not die of SIGABRT) and its stderr must carry the
// report, once. A parent-side watchdog kills a child that hangs and fails the test.
//   1. ramfs pool {1,1}: pwrite(fd_x, mapping_of_y, 8192, 0) (cp with mmap): the page-in for y is
//      served by the reserve thread.
//   2. two single-threaded servers whose handlers read each other, two clients at once (user-code
//      ABBA): the wait-for graph breaks the cycle with EDEADLK; both clients get an answer.
//   3. pwrite from the client's own untouched MAP_SHARED mapping, direct copy off: the page-in is
//      granted under the writer's activity.
// Plus the policy's own rules: once per site, rate limit, sink, strict handler, programming errors
// still abort, set_violation_handler returns the previous handler.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "faultsafe/order/ranked_mutex.hpp"
#include "faultsafe/order/violation.hpp"
#include "faultsafe/resmgr/iofunc.hpp"
#include "faultsafe/resmgr/process.hpp"
#include "faultsafe/resmgr/ramfs.hpp"

using namespace faultsafe;

namespace {

struct child_outcome {
  bool exited = false;  // else killed by a signal (or by the watchdog)
  int code = -1;        // exit code, or the signal number
  bool timed_out = false;
  std::string err;      // the child's stderr
};

// Runs `body` in a forked child (its return value is the exit code; stderr goes to a pipe) and waits
// at most `limit` for it; a child still running then is killed (timed_out).
child_outcome run_child(const std::function<int()>& body, std::chrono::seconds limit = std::chrono::seconds(30)) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::signal(SIGABRT, SIG_DFL);  // not doctest's crash reporter: the parent checks the signal
    ::close(fds[0]);
    ::dup2(fds[1], 2);
    ::close(fds[1]);
    int rc = 1;
    try {
      rc = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: exception: %s\n", e.what());
    }
    std::fflush(nullptr);
    std::_Exit(rc);
  }
  ::close(fds[1]);
  child_outcome out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool open = true;
  int status = 0;
  for (;;) {
    if (open) {
      pollfd p{fds[0], POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) {
        char buf[4096];
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n > 0) out.err.append(buf, static_cast<std::size_t>(n));
        else open = false;
      }
    } else {
      ::usleep(20000);
    }
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      out.timed_out = true;
      break;
    }
  }
  for (char buf[4096];;) {  // the rest of stderr
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.err.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  out.exited = WIFEXITED(status);
  out.code = out.exited ? WEXITSTATUS(status) : WIFSIGNALED(status) ? WTERMSIG(status) : -1;
  return out;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// The child's checks: print what failed and return 1.
#define CHILD_CHECK(cond)                                                     \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "child check failed: %s (line %d)\n", #cond, __LINE__); \
      return 1;                                                               \
    }                                                                         \
  } while (0)

// Exit code 77 (skipped) from the child when userfaultfd is refused.
int skip_without_userfaultfd() {
  std::string why;
  if (auto ec = probe_userfaultfd(why)) {
    std::fprintf(stderr, "SKIP: %s (%s)\n", why.c_str(), ec.message().c_str());
    return 77;
  }
  return 0;
}

void expect_completed(const child_outcome& o) {
  INFO("child stderr:\n" << o.err);
  CHECK_FALSE(o.timed_out);
  CHECK(o.exited);
  if (o.exited && o.code == 77) {
    MESSAGE("skipped: " << o.err);
    return;
  }
  CHECK(o.code == 0);
}

std::string pattern_bytes(std::size_t n, char seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + static_cast<char>(i % 23));
  return s;
}

// Reproduction 1: cp with mmap on a single-threaded ramfs.
int cp_with_mmap_single_thread() {
  if (int s = skip_without_userfaultfd()) return s;
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .pool = {1, 1}, .ns = &ns});
  process bob("bob", {1000, 1000}, &ns);
  auto x = bob.open("/ram/x", O_RDWR | O_CREAT, 0644);
  auto y = bob.open("/ram/y", O_RDWR | O_CREAT, 0644);
  CHILD_CHECK(x.ok() && y.ok());
  const std::string data = pattern_bytes(8192, 'a');
  CHILD_CHECK(bob.pwrite(*y, data.data(), data.size(), 0).value_or(0) == data.size());
  auto m = bob.mmap(nullptr, 8192, PROT_READ, MAP_SHARED, *y, 0);
  CHILD_CHECK(m.ok());
  auto n = bob.pwrite(*x, *m, 8192, 0);  // the server thread faults on y's pages: a page-in to itself
  CHILD_CHECK(n.ok() && *n == 8192);
  std::string back(8192, '\0');
  CHILD_CHECK(bob.pread(*x, back.data(), back.size(), 0).value_or(0) == 8192);
  CHILD_CHECK(back == data);
  CHILD_CHECK(fs.srv().reserve_served() >= 1);
  std::fprintf(stderr, "child: done\n");
  return 0;
}

// Reproduction 3: pwrite from the client's own untouched MAP_SHARED mapping, direct copy off.
int pwrite_from_own_mapping_no_direct_copy() {
  if (int s = skip_without_userfaultfd()) return s;
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns, .direct_copy = false});
  process bob("bob", {1000, 1000}, &ns);
  auto fd = bob.open("/ram/f", O_RDWR | O_CREAT, 0644);
  CHILD_CHECK(fd.ok());
  const std::string data = pattern_bytes(16384, 'A');
  CHILD_CHECK(bob.pwrite(*fd, data.data(), data.size(), 0).value_or(0) == data.size());
  auto m = bob.mmap(nullptr, data.size(), PROT_READ, MAP_SHARED, *fd, 0);
  CHILD_CHECK(m.ok());
  const char* p = static_cast<const char*>(*m);
  // The write holds [0, 8192) exclusively and reads its source [4096, 12288) through the untouched
  // mapping: the page-in for that fault conflicts only with the writer's own range.
  auto n = bob.pwrite(*fd, p + 4096, 8192, 0);
  CHILD_CHECK(n.ok() && *n == 8192);
  std::string expect = data;
  std::memmove(expect.data(), data.data() + 4096, 8192);
  std::string back(data.size(), '\0');
  CHILD_CHECK(bob.pread(*fd, back.data(), back.size(), 0).value_or(0) == back.size());
  CHILD_CHECK(back == expect);
  std::fprintf(stderr, "child: done\n");
  return 0;
}

// A server whose read handler reads a file of another server through its own process, after a
// rendezvous with the other server's handler (both handlers then hold their only thread: ABBA).
struct peer_server {
  peer_server(const char* name, const char* prefix, path_namespace& ns)
      : self(std::string(name) + "-client", {0, 0}, &ns),
        srv(server_options{.name = name, .pool = {1, 1}, .ns = &ns}, funcs()) {
    if (auto ec = srv.attach(prefix)) throw std::system_error(ec);
  }
  io_funcs funcs() {
    io_funcs f;
    f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
      out = std::make_shared<ocb_base>();
      return io_result::ok();
    };
    f.read = [this](request_context& ctx, ocb_base&, const io_rw_request& q) -> io_result {
      if (q.offset == 1) {  // the peer's forwarded read: answer without reading anyone
        const char c = 'p';
        if (auto ec = ctx.rcv.write_reply_data(0, &c, 1)) return io_result::fail(ec);
        return io_result::ok(1);
      }
      arrive();  // both servers' handlers are now running: each holds its only thread
      auto fd = self.open(peer_path, O_RDONLY);
      if (!fd) return io_result::fail(fd.error());
      char c = 0;
      auto n = self.pread(*fd, &c, 1, 1);
      (void)self.close(*fd);
      if (!n) return io_result::fail(n.error());
      if (auto ec = ctx.rcv.write_reply_data(0, &c, 1)) return io_result::fail(ec);
      return io_result::ok(1);
    };
    return f;
  }
  std::function<void()> arrive;
  std::string peer_path;
  process self;
  server srv;
};

// Reproduction 2: two single-threaded servers whose handlers read each other.
int abba_between_two_servers() {
  path_namespace ns;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  auto arrive = [&] {
    std::unique_lock<std::mutex> l(m);
    ++arrived;
    cv.notify_all();
    cv.wait_for(l, std::chrono::seconds(5), [&] { return arrived >= 2; });
  };
  peer_server a("A", "/a", ns), b("B", "/b", ns);
  a.arrive = arrive;
  b.arrive = arrive;
  a.peer_path = "/b/file";
  b.peer_path = "/a/file";
  a.srv.start();
  b.srv.start();
  process c1("c1", {0, 0}, &ns), c2("c2", {0, 0}, &ns);
  auto f1 = c1.open("/a/file", O_RDONLY);
  auto f2 = c2.open("/b/file", O_RDONLY);
  CHILD_CHECK(f1.ok() && f2.ok());
  result<std::size_t> r1 = std::make_error_code(std::errc::io_error), r2 = r1;
  std::thread t1([&] {
    char c;
    r1 = c1.pread(*f1, &c, 1, 0);
  });
  std::thread t2([&] {
    char c;
    r2 = c2.pread(*f2, &c, 1, 0);
  });
  t1.join();
  t2.join();
  // One handler's send was broken (EDEADLK, passed on to its client), the other then completed.
  const int failed = (r1.ok() ? 0 : 1) + (r2.ok() ? 0 : 1);
  std::fprintf(stderr, "child: r1 %s, r2 %s\n", r1.ok() ? "ok" : r1.error().message().c_str(),
               r2.ok() ? "ok" : r2.error().message().c_str());
  CHILD_CHECK(failed == 1);
  CHILD_CHECK((r1.ok() ? r2 : r1).error() == std::errc::resource_deadlock_would_occur);
  std::fprintf(stderr, "child: done\n");
  return 0;
}

}  // namespace

TEST_CASE("default policy, reproduction 1: cp with mmap on a single-threaded ramfs completes and is reported once") {
  const child_outcome o = run_child(cp_with_mmap_single_thread);
  expect_completed(o);
  if (o.code == 77) return;
  CHECK(count(o.err, "faultsafe: self_deadlock:") == 1);
  CHECK(count(o.err, "served by the reserve thread 'ram/reserve'") == 1);
  CHECK(count(o.err, "the program goes on") == 1);
  CHECK(count(o.err, "child: done") == 1);
}

TEST_CASE("default policy, reproduction 2: two single-threaded servers reading each other: the cycle is broken, the program goes on") {
  const child_outcome o = run_child(abba_between_two_servers);
  expect_completed(o);
  CHECK(count(o.err, "faultsafe: wait_cycle:") == 1);
  CHECK(count(o.err, "(EDEADLK)") == 1);
  CHECK(count(o.err, "failed by faultsafe: the program goes on") == 1);
  CHECK(count(o.err, "child: done") == 1);
}

TEST_CASE("default policy, reproduction 3: pwrite from the client's own untouched mapping, direct copy off, completes") {
  const child_outcome o = run_child(pwrite_from_own_mapping_no_direct_copy);
  expect_completed(o);
  if (o.code == 77) return;
  CHECK(count(o.err, "faultsafe: self_deadlock:") >= 1);
  CHECK(count(o.err, "granted under the owner's ownership") >= 1);
  CHECK(count(o.err, "served by faultsafe: the program goes on") >= 1);
  CHECK(count(o.err, "child: done") == 1);
}

TEST_CASE("default policy: programming errors still stop the program (unresolved)") {
  const child_outcome o = run_child([] {
    ranked_mutex<20, std::mutex, checks_on> high("policy high");
    ranked_mutex<10, std::mutex, checks_on> low("policy low");
    std::lock_guard<decltype(high)> g1(high);
    std::lock_guard<decltype(low)> g2(low);  // rank_inversion: aborts
    return 0;
  });
  INFO(o.err);
  CHECK_FALSE(o.timed_out);
  CHECK_FALSE(o.exited);
  CHECK(o.code == SIGABRT);
  CHECK(count(o.err, "faultsafe: rank_inversion:") == 1);
  CHECK(is_programming_error(violation_kind::rank_inversion));
  CHECK(is_programming_error(violation_kind::order_cycle));
  CHECK(is_programming_error(violation_kind::recursive_acquire));
  CHECK(is_programming_error(violation_kind::unlock_not_held));
  CHECK(is_programming_error(violation_kind::held_stack_overflow));
  CHECK_FALSE(is_programming_error(violation_kind::self_deadlock));
  CHECK_FALSE(is_programming_error(violation_kind::wait_cycle));
}

TEST_CASE("default policy: an unresolved lock-up (a wait cycle left blocked) stops the program") {
  const child_outcome o = run_child([] {
    violation v;
    v.kind = violation_kind::wait_cycle;
    v.summary = "a cycle nobody broke";
    report_violation(v);  // outcome unresolved: aborts
    return 0;
  });
  CHECK_FALSE(o.exited);
  CHECK(o.code == SIGABRT);
  CHECK(count(o.err, "faultsafe: wait_cycle: a cycle nobody broke") == 1);
}

TEST_CASE("default policy: a resolved violation is reported once per site, rate-limited, through the sink") {
  std::mutex m;
  std::vector<std::string> got;
  const violation_sink prev_sink = set_violation_sink([&](std::string_view text) {
    std::lock_guard<std::mutex> g(m);
    got.emplace_back(text);
  });
  reset_violation_report_sites();
  const auto before = violation_report_counters();
  auto make = [](const std::string& site, violation_outcome o) {
    violation v;
    v.kind = violation_kind::self_deadlock;
    v.summary = "test at " + site;
    v.site = site;
    v.outcome = o;
    return v;
  };
  // The installed handler is the default one: set_violation_handler returns it.
  const violation_handler prev = set_violation_handler({});
  CHECK(prev.target<void (*)(const violation&)>() != nullptr);
  CHECK((*prev.target<void (*)(const violation&)>() == &default_violation_handler));

  for (int i = 0; i < 5; ++i) report_violation(make("site-1", violation_outcome::served));
  report_violation(make("site-2", violation_outcome::failed));
  {
    std::lock_guard<std::mutex> g(m);
    REQUIRE(got.size() == 2);
    CHECK(got[0].find("faultsafe: self_deadlock: test at site-1") == 0);
    CHECK(got[0].find("served by faultsafe: the program goes on") != std::string::npos);
    CHECK(got[1].find("failed by faultsafe: the program goes on") != std::string::npos);
  }
  auto after = violation_report_counters();
  CHECK(after.resolved - before.resolved == 6);
  CHECK(after.repeated_site - before.repeated_site == 4);

  // Rate limit: 3 per (long) interval over all sites; the next report after the window says how many
  // were suppressed.
  const auto prev_limits = set_violation_report_limits({.burst = 3, .interval = std::chrono::milliseconds(200)});
  reset_violation_report_sites();
  {
    std::lock_guard<std::mutex> g(m);
    got.clear();
  }
  for (int i = 0; i < 10; ++i) report_violation(make("burst-" + std::to_string(i), violation_outcome::served));
  {
    std::lock_guard<std::mutex> g(m);
    CHECK(got.size() == 3);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  report_violation(make("burst-9", violation_outcome::served));  // suppressed before: not yet seen
  {
    std::lock_guard<std::mutex> g(m);
    REQUIRE(got.size() == 4);
    CHECK(got[3].find("7 earlier report(s) suppressed by the rate limit") != std::string::npos);
  }
  after = violation_report_counters();
  CHECK(after.rate_limited - before.rate_limited == 7);

  set_violation_report_limits(prev_limits);
  reset_violation_report_sites();
  set_violation_sink(prev_sink);
}

TEST_CASE("strict_violation_handler: every violation stops the program, resolved or not") {
  const child_outcome o = run_child([] {
    set_violation_handler(&strict_violation_handler);
    violation v;
    v.kind = violation_kind::self_deadlock;
    v.outcome = violation_outcome::served;
    v.summary = "resolved, but strict";
    report_violation(v);
    return 0;
  });
  CHECK_FALSE(o.exited);
  CHECK(o.code == SIGABRT);
  CHECK(count(o.err, "faultsafe: self_deadlock: resolved, but strict") == 1);
}
