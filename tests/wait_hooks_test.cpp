// The wait-for graph hooked into the real blocking sites: range_lock waits, channel send/reply waits
// (resource-manager servers), and the absence of reports when nothing deadlocks or the graph is off.
// Every scenario that could hang runs under a watchdog that fails the executable.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/resmgr/process.hpp"
#include "faultsafe/resmgr/process_thread.hpp"
#include "faultsafe/sync/range_lock.hpp"
#include "faultsafe/vm/aspace.hpp"
#include "wait_hooks_support.hpp"

using namespace whtest;
using faultsafe::lock_mode;
using faultsafe::range_guard;
using faultsafe::range_lock;

namespace {

unsigned char pat(char tag, std::size_t i) { return static_cast<unsigned char>(tag * 13 + i * 5 + (i >> 9)); }

void fill(fs::process& p, const std::string& path, char tag, std::size_t len) {
  auto fd = p.open(path, O_RDWR);
  REQUIRE(fd.ok());
  std::vector<unsigned char> b(len);
  for (std::size_t i = 0; i < len; ++i) b[i] = pat(tag, i);
  REQUIRE(p.pwrite(*fd, b.data(), len, 0).value() == len);
  REQUIRE(p.close(*fd).ok());
}

bool same(const unsigned char* d, char tag, std::size_t off, std::size_t len) {
  for (std::size_t i = 0; i < len; ++i)
    if (d[i] != pat(tag, off + i)) return false;
  return true;
}

}  // namespace

TEST_CASE("range_lock: a two-thread ABBA over two range_locks is reported and broken with EDEADLK") {
  recorder rec;
  watchdog wd(20s, "range_lock ABBA");
  range_lock a("A"), b("B");
  gate both_hold(2);
  std::atomic<int> broken{0}, completed{0}, other{0};
  auto body = [&](const char* name, range_lock& first, range_lock& second) {
    fs::set_this_thread_name(name);
    range_guard g1(first, 0, 100, lock_mode::exclusive);
    REQUIRE(both_hold.arrive_and_wait());
    try {
      range_guard g2(second, 50, 10, lock_mode::exclusive);  // not through ordered_range_guards
      completed.fetch_add(1);
    } catch (const std::system_error& e) {
      if (e.code().value() == EDEADLK) broken.fetch_add(1);
      else other.fetch_add(1);
    }
  };
  std::thread t1(body, "abba/1", std::ref(a), std::ref(b));
  std::thread t2(body, "abba/2", std::ref(b), std::ref(a));
  t1.join();
  t2.join();
  CHECK(broken.load() == 1);
  CHECK(completed.load() == 1);
  CHECK(other.load() == 0);
  const auto cycles = rec.wait_cycles();
  REQUIRE(cycles.size() == 1);
  const std::string chain = cycles[0].details.at(0);
  CHECK(has(chain, "-lock wait-> 'A' (rank 30) range"));
  CHECK(has(chain, "-lock wait-> 'B' (rank 30) range"));
  CHECK(has(chain, "abba/1"));
  CHECK(has(chain, "abba/2"));
  CHECK(a.holders().empty());  // nothing left held or queued
  CHECK(b.holders().empty());
}

TEST_CASE("three servers whose handlers send to the next: the cycle is named and unwound") {
  recorder rec;
  watchdog wd(30s, "three-server cycle");
  fs::process c1("c1"), c2("c2"), c3("c3"), f1("s1-fwd"), f2("s2-fwd"), f3("s3-fwd"), init("init");
  fs::process* clients[3] = {&c1, &c2, &c3};
  fs::process* fwd[3] = {&f1, &f2, &f3};
  int fwd_fd[3] = {-1, -1, -1};
  gate all_serving(3);
  std::atomic<int> forward_errors{0};
  std::vector<std::unique_ptr<hook_server>> srv;
  for (int i = 0; i < 3; ++i) {
    srv.push_back(std::make_unique<hook_server>(
        "s" + std::to_string(i + 1), "/wh3s" + std::to_string(i + 1), fs::thread_pool_options{1, 1},
        [&, i](fs::request_context& ctx, fs::ocb_base& o, const fs::io_rw_request& q) -> fs::io_result {
          if (ctx.client.pid == clients[i]->pid()) {  // a client's read: forward one read to the next server
            (void)all_serving.arrive_and_wait();
            char buf[16];
            auto r = fwd[i]->pread(fwd_fd[i], buf, sizeof buf, 0);
            if (!r) {
              forward_errors.fetch_add(1);
              return fs::io_result{0, r.error()};
            }
          }
          return fs::iofunc_read_default(ctx, o, q);
        }));
    srv.back()->add("f");
  }
  for (int i = 0; i < 3; ++i) fill(init, "/wh3s" + std::to_string(i + 1) + "/f", static_cast<char>('x' + i), 64);
  for (int i = 0; i < 3; ++i) {
    auto fd = fwd[i]->open("/wh3s" + std::to_string((i + 1) % 3 + 1) + "/f", O_RDONLY);
    REQUIRE(fd.ok());
    fwd_fd[i] = *fd;
  }
  std::atomic<int> ok{0}, deadlk{0};
  {
    std::vector<std::thread> ts;
    for (int i = 0; i < 3; ++i)
      ts.emplace_back([&, i] {
        auto fd = clients[i]->open("/wh3s" + std::to_string(i + 1) + "/f", O_RDONLY);
        REQUIRE(fd.ok());
        unsigned char buf[64];
        auto r = clients[i]->pread(*fd, buf, sizeof buf, 0);
        if (r && *r == sizeof buf && same(buf, static_cast<char>('x' + i), 0, sizeof buf)) ok.fetch_add(1);
        else if (!r && r.error().value() == EDEADLK) deadlk.fetch_add(1);
      });
    for (auto& t : ts) t.join();
  }
  CHECK(deadlk.load() == 1);
  CHECK(ok.load() == 2);
  CHECK(forward_errors.load() == 1);
  const auto cycles = rec.wait_cycles();
  REQUIRE(cycles.size() == 1);
  const std::string chain = cycles[0].details.at(0);
  for (const char* hop : {"-send wait-> channel 's1' -served by-> s1/0", "-send wait-> channel 's2' -served by-> s2/0",
                          "-send wait-> channel 's3' -served by-> s3/0"})
    CHECK_MESSAGE(has(chain, hop), chain);
  CHECK(cycles[0].details.size() == 4);  // the chain and three hops
}

TEST_CASE("a single-threaded server sending to itself is reported; a pool that can grow is not") {
  for (const unsigned max_threads : {1u, 2u}) {
    CAPTURE(max_threads);
    recorder rec;
    watchdog wd(20s, "self-send");
    fs::process client("client"), self("solo-self"), init("init");
    int self_fd = -1;
    const std::string prefix = "/whsolo" + std::to_string(max_threads);
    hook_server solo("solo" + std::to_string(max_threads), prefix, fs::thread_pool_options{1, max_threads, fs::self_conflict::wait},  // naive pool: no pool guard
                     [&](fs::request_context& ctx, fs::ocb_base& o, const fs::io_rw_request& q) -> fs::io_result {
                       if (ctx.client.pid == client.pid()) {
                         char buf[8];
                         auto r = self.pread(self_fd, buf, sizeof buf, 0);  // to its own channel
                         if (!r) return fs::io_result{0, r.error()};
                       }
                       return fs::iofunc_read_default(ctx, o, q);
                     });
    solo.add("f");
    fill(init, prefix + "/f", 's', 32);
    auto sfd = self.open(prefix + "/f", O_RDONLY);
    REQUIRE(sfd.ok());
    self_fd = *sfd;
    auto fd = client.open(prefix + "/f", O_RDONLY);
    REQUIRE(fd.ok());
    unsigned char buf[32];
    auto r = client.pread(*fd, buf, sizeof buf, 0);
    const auto cycles = rec.wait_cycles();
    if (max_threads == 1) {
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().value() == EDEADLK);
      REQUIRE(cycles.size() == 1);
      const std::string name = "solo1/0 -send wait-> channel 'solo1' -served by-> solo1/0";
      CHECK_MESSAGE(has(cycles[0].details.at(0), name), cycles[0].details.at(0));
    } else {
      REQUIRE(r.ok());
      CHECK(same(buf, 's', 0, sizeof buf));
      CHECK(cycles.empty());
    }
  }
}

TEST_CASE("disabled graph: a server lock-up records nothing and reports nothing (the send times out)") {
  recorder rec;
  watchdog wd(20s, "disabled graph");
  fs::wait_graph::set_enabled(false);
  const auto before = fs::wait_graph::stats().waits_recorded;
  fs::process client("client"), self("off-self"), init("init");
  self.set_io_timeout(300ms);
  int self_fd = -1;
  hook_server solo("off", "/whoff", fs::thread_pool_options{1, 1, fs::self_conflict::wait},  // naive pool: no pool guard
                   [&](fs::request_context& ctx, fs::ocb_base& o, const fs::io_rw_request& q) -> fs::io_result {
                     if (ctx.client.pid == client.pid()) {
                       char b[8];
                       auto r = self.pread(self_fd, b, sizeof b, 0);
                       if (!r) return fs::io_result{0, r.error()};
                     }
                     return fs::iofunc_read_default(ctx, o, q);
                   });
  solo.add("f");
  fill(init, "/whoff/f", 'o', 16);
  auto sfd = self.open("/whoff/f", O_RDONLY);
  REQUIRE(sfd.ok());
  self_fd = *sfd;
  auto fd = client.open("/whoff/f", O_RDONLY);
  REQUIRE(fd.ok());
  char buf[16];
  auto r = client.pread(*fd, buf, sizeof buf, 0);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().value() == ETIMEDOUT);
  // range_lock ABBA with the graph off and timed guards: no report either.
  range_lock a("offA"), b("offB");
  gate both(2), both_timed_out(2);
  auto body = [&](range_lock& x, range_lock& y) {
    range_guard g1(x, 0, 10, lock_mode::exclusive);
    REQUIRE(both.arrive_and_wait());
    range_guard g2(y, 0, 10, lock_mode::exclusive, std::chrono::milliseconds(200));
    CHECK_FALSE(g2.owns_lock());
    REQUIRE(both_timed_out.arrive_and_wait());  // keep holding until both timed out
  };
  std::thread t1(body, std::ref(a), std::ref(b)), t2(body, std::ref(b), std::ref(a));
  t1.join();
  t2.join();
  CHECK(fs::wait_graph::stats().waits_recorded == before);
  CHECK(rec.wait_cycles().empty());
  fs::wait_graph::set_enabled(true);
}

TEST_CASE("randomized stress with servers, mappings and range locks that never deadlocks reports nothing") {
  recorder rec;
  watchdog wd(60s, "no-deadlock stress");
  std::string why;
  const bool have_uffd = !fs::probe_userfaultfd(why);
  constexpr int nservers = 3;
  fs::process init("init");
  std::vector<std::unique_ptr<fs::process>> fwd;
  std::vector<int> fwd_fd(nservers, -1);
  for (int i = 0; i < nservers; ++i) fwd.push_back(std::make_unique<fs::process>("fwd" + std::to_string(i)));
  std::vector<std::unique_ptr<hook_server>> srv;
  for (int i = 0; i < nservers; ++i) {
    // Server i forwards to server i+1 (acyclic), so handlers send while others wait: many recorded
    // send/reply waits, never a cycle.
    srv.push_back(std::make_unique<hook_server>(
        "st" + std::to_string(i), "/whst" + std::to_string(i), fs::thread_pool_options{1, 3},
        [&, i](fs::request_context& ctx, fs::ocb_base& o, const fs::io_rw_request& q) -> fs::io_result {
          if (i + 1 < nservers && ctx.client.pid != fwd[static_cast<std::size_t>(i)]->pid()) {
            char b[64];
            auto r = fwd[static_cast<std::size_t>(i)]->pread(fwd_fd[static_cast<std::size_t>(i)], b, sizeof b, 0);
            if (!r) return fs::io_result{0, r.error()};
          }
          return fs::iofunc_read_default(ctx, o, q);
        }));
    srv.back()->add("ro");
    srv.back()->add("rw");
    fill(init, "/whst" + std::to_string(i) + "/ro", static_cast<char>('a' + i), 4 * 4096);
    fill(init, "/whst" + std::to_string(i) + "/rw", 'w', 4 * 4096);
  }
  for (int i = 0; i + 1 < nservers; ++i) {
    auto fd = fwd[static_cast<std::size_t>(i)]->open("/whst" + std::to_string(i + 1) + "/ro", O_RDONLY);
    REQUIRE(fd.ok());
    fwd_fd[static_cast<std::size_t>(i)] = *fd;
  }
  range_lock shared_ranges("stress ranges");
  std::atomic<int> bad{0}, errors{0};
  constexpr int nthreads = 4, iters = 120;
  std::vector<std::unique_ptr<fs::process>> procs;
  for (int t = 0; t < nthreads; ++t) procs.push_back(std::make_unique<fs::process>("P" + std::to_string(t)));
  {
    std::vector<fs::process_thread> ts;
    for (int t = 0; t < nthreads; ++t)
      ts.emplace_back(*procs[static_cast<std::size_t>(t)], "t", [&, t] {
        fs::announce_faulting_thread();
        fs::process& p = *procs[static_cast<std::size_t>(t)];
        std::mt19937 rng(static_cast<unsigned>(t * 7919 + 1));
        std::vector<int> ro(nservers), rw(nservers);
        std::vector<const unsigned char*> maps(nservers, nullptr);
        for (int i = 0; i < nservers; ++i) {
          ro[static_cast<std::size_t>(i)] = p.open("/whst" + std::to_string(i) + "/ro", O_RDONLY).value();
          rw[static_cast<std::size_t>(i)] = p.open("/whst" + std::to_string(i) + "/rw", O_RDWR).value();
          if (have_uffd) {
            auto m = p.mmap(nullptr, 4 * 4096, PROT_READ, MAP_SHARED, ro[static_cast<std::size_t>(i)], 0);
            if (m) maps[static_cast<std::size_t>(i)] = static_cast<const unsigned char*>(*m);
          }
        }
        unsigned char* buf = nullptr;
        std::vector<unsigned char> local(4096);
        for (int k = 0; k < iters; ++k) {
          const int s = static_cast<int>(rng() % nservers);
          const std::size_t off = (rng() % 4) * 1024;
          switch (rng() % 4) {
            case 0: {  // read into a fresh anonymous mapping: the server thread takes the fault
              if (have_uffd && (buf == nullptr || k % 16 == 0)) {
                auto m = p.mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m) buf = static_cast<unsigned char*>(*m);
              }
              unsigned char* dst = buf != nullptr ? buf : local.data();
              auto r = p.pread(ro[static_cast<std::size_t>(s)], dst, 1024, static_cast<off_t>(off));
              if (!r) errors.fetch_add(1);
              else if (*r != 1024 || !same(dst, static_cast<char>('a' + s), off, 1024)) bad.fetch_add(1);
              break;
            }
            case 1: {  // overlapping writes: range-lock contention inside the servers
              std::vector<unsigned char> w(1024);
              for (std::size_t i = 0; i < w.size(); ++i) w[i] = pat('w', off + i);
              auto r = p.pwrite(rw[static_cast<std::size_t>(s)], w.data(), w.size(), static_cast<off_t>(off));
              if (!r) errors.fetch_add(1);
              break;
            }
            case 2: {  // through a shared mapping: page-in through the server
              const unsigned char* m = maps[static_cast<std::size_t>(s)];
              if (m == nullptr) break;
              if (!same(m + off, static_cast<char>('a' + s), off, 1024)) bad.fetch_add(1);
              break;
            }
            default: {  // direct range locks, one at a time: contended, never cyclic
              const std::uint64_t a0 = rng() % 64;
              range_guard g1(shared_ranges, a0, 32, (rng() & 1) ? lock_mode::shared : lock_mode::exclusive);
              std::this_thread::yield();
              break;
            }
          }
        }
        for (int i = 0; i < nservers; ++i) {
          (void)p.close(ro[static_cast<std::size_t>(i)]);
          (void)p.close(rw[static_cast<std::size_t>(i)]);
        }
      });
  }
  CHECK(bad.load() == 0);
  CHECK(errors.load() == 0);
  CHECK(rec.wait_cycles().empty());
}
