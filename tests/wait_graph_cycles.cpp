// Real threads blocking on instrumented resources: ABBA (broken with EDEADLK; report-only reports
// exactly once), Colin's cycle (io_pkt page wait -> fault -> pager thread -> aspace lock -> pager
// thread -> reply wait -> nfs -> send wait -> io_pkt channel -> io_pkt thread) with the detection
// latency printed, the same shape with a 2-thread io_pkt pool (must not report), a three-server cycle
// and the disabled graph.
#include <doctest/doctest.h>

#include <cerrno>

#include "wait_graph_support.hpp"

using namespace wgtest;

namespace {
constexpr int kEdeadlk = -EDEADLK;

bool dump_has(const std::string& s) { return wait_graph::dump().find(s) != std::string::npos; }

/// ABBA on real threads: "<name>/1" takes A then B, "<name>/2" takes B then A, meeting at a gate once
/// each holds its first lock. r1 / r2: the second lock()'s result (give_up as test_mutex::lock()).
struct abba {
  test_mutex a{"A", 20}, b{"B", 20};
  gate both_hold{2};
  std::error_code r1, r2;
  std::thread t1, t2;

  void start(const std::string& name, std::chrono::milliseconds give_up = std::chrono::milliseconds(0)) {
    auto body = [this, give_up](std::string me, test_mutex& first, test_mutex& second, std::error_code& out) {
      faultsafe::set_this_thread_name(me);
      CHECK_FALSE(first.lock());
      const bool met = both_hold.arrive_and_wait();
      out = second.lock(give_up);
      if (!out) second.unlock();
      first.unlock();
      CHECK(met);
    };
    t1 = std::thread(body, name + "/1", std::ref(a), std::ref(b), std::ref(r1));
    t2 = std::thread(body, name + "/2", std::ref(b), std::ref(a), std::ref(r2));
  }
  void join() {
    t1.join();
    t2.join();
  }
};
}  // namespace

TEST_CASE("ABBA: detected, named, broken with EDEADLK; the other thread completes") {
  graph_fixture fx;
  watchdog wd(std::chrono::seconds(15), "ABBA break");
  abba run;
  run.start("abba");
  run.join();
  const auto& r1 = run.r1;
  const auto& r2 = run.r2;
  const auto dead = std::make_error_code(std::errc::resource_deadlock_would_occur);
  CHECK(((r1 == dead) != (r2 == dead)));  // exactly one victim
  CHECK(((!r1) != (!r2)));                 // the other one got its lock
  REQUIRE(fx.count() == 1);
  const auto v = fx.reports().front();
  MESSAGE(v.report());
  CHECK(v.kind == faultsafe::violation_kind::wait_cycle);
  CHECK(contains(v.involved, "abba/1"));
  CHECK(contains(v.involved, "abba/2"));
  CHECK(contains(v.involved, "'A' (rank 20)"));
  CHECK(contains(v.involved, "'B' (rank 20)"));
  const auto& chain = v.details.at(0);
  const bool shape1 = chain == "abba/1 -lock wait-> 'B' (rank 20) -held by-> abba/2 -lock wait-> 'A' (rank 20) -held by-> abba/1";
  const bool shape2 = chain == "abba/2 -lock wait-> 'A' (rank 20) -held by-> abba/1 -lock wait-> 'B' (rank 20) -held by-> abba/2";
  CHECK((shape1 || shape2));
  CHECK(wait_graph::stats().active_waits == 0);
}

TEST_CASE("ABBA, policy report_only: reported exactly once however often the waiters re-check") {
  graph_fixture fx;
  watchdog wd(std::chrono::seconds(15), "ABBA report_only");
  auto o = wait_graph::options();
  o.policy = faultsafe::wait_cycle_policy::report_only;
  wait_graph::set_options(o);
  abba run;
  run.start("ro");
  CHECK(eventually([&] { return fx.count() >= 1; }));
  const auto scans_before = wait_graph::stats().scans;
  // 120 ms: ~60 polls per waiter and at least two full rescans (every 50 ms)
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  CHECK(fx.count() == 1);
  CHECK(wait_graph::stats().scans > scans_before);
  run.a.cancel();
  run.b.cancel();
  run.join();
  const auto& r1 = run.r1;
  const auto& r2 = run.r2;
  // The first cancelled waiter gives up and releases its lock; the other may get it or be cancelled.
  const auto cancelled = std::make_error_code(std::errc::operation_canceled);
  CHECK(((r1 == cancelled) || (r2 == cancelled)));
  CHECK((!r1 || r1 == cancelled));
  CHECK((!r2 || r2 == cancelled));
  CHECK(fx.count() == 1);
}

namespace {

constexpr int kRead = 1, kFault = 2, kBusy = 3;

struct colin_world {
  test_mutex aspace{"aspace Bob", 10};
  test_pager proc{"proc", 2};
  test_fault f1{0x7f0000001000, "nfs:/a", 0};          // bob1 faults on its nfs mapping: proc/0
  test_fault f2{0x7f0000042000, "nfs:/a", 4096};       // io_pkt faults on bob2's buffer: proc/1
  std::mutex gm;
  std::condition_variable gcv;
  bool go = false, release_busy = false;
  std::atomic<bool> busy_started{false};
  std::chrono::steady_clock::time_point closed_at{};
  test_channel io_pkt{"io_pkt", [this](int arg, int) {
                        if (arg == kFault) {
                          const auto ec = proc.fault(1, f2, [this] {
                            {
                              std::unique_lock<std::mutex> lk(gm);
                              if (!gcv.wait_for(lk, std::chrono::seconds(10), [&] { return go; }))
                                return std::make_error_code(std::errc::timed_out);
                              closed_at = std::chrono::steady_clock::now();
                            }
                            const auto e = aspace.lock();  // the last edge
                            if (!e) aspace.unlock();
                            return e;
                          });
                          return ec ? -ec.value() : 0;
                        }
                        if (arg == kBusy) {  // running, not blocked in the graph
                          busy_started = true;
                          std::unique_lock<std::mutex> lk(gm);
                          gcv.wait_for(lk, std::chrono::seconds(10), [&] { return release_busy; });
                          return 5;
                        }
                        return 7;
                      }};
  test_channel nfs{"nfs", [this](int, int) {
                     std::error_code ec;
                     const int r = io_pkt.send(kRead, 1, ec);
                     return ec ? -ec.value() : r + 1;
                   }};
  void open(bool& flag) {
    {
      std::lock_guard<std::mutex> g(gm);
      flag = true;
    }
    gcv.notify_all();
  }
  ~colin_world() {
    open(go);
    open(release_busy);
    nfs.stop();
    io_pkt.stop();
  }
};

}  // namespace

TEST_CASE("Colin: the 5-hop cycle is detected, every hop named, broken, and everything completes") {
  graph_fixture fx;
  watchdog wd(std::chrono::seconds(20), "Colin single-threaded io_pkt");
  colin_world w;
  w.io_pkt.start(1);
  w.nfs.start(1);
  int bob2_result = 0;
  std::error_code bob1_ec;
  int bob1_nfs = 0;
  std::thread bob2([&] {
    faultsafe::set_this_thread_name("bob2");
    std::error_code ec;
    bob2_result = w.io_pkt.send(kFault, 0, ec);  // io_pkt/0 takes a fault on bob2's buffer
    CHECK_FALSE(ec);
  });
  REQUIRE(eventually([] { return dump_has("io_pkt/0 -page wait-> fault 0x7f0000042000"); }));
  std::thread bob1([&] {
    faultsafe::set_this_thread_name("bob1");
    bob1_ec = w.proc.fault(0, w.f1, [&] {  // proc/0 serves bob1's fault on the nfs file
      CHECK_FALSE(w.aspace.lock());         // one lock for the whole aspace (the naive config)
      std::error_code ec;
      bob1_nfs = w.nfs.send(kRead, 0, ec);  // nfs reads io_pkt, io_pkt is single-threaded
      w.aspace.unlock();
      return ec;
    });
  });
  REQUIRE(eventually([] { return dump_has("proc/0 -reply wait-> message on channel 'nfs'") &&
                                 dump_has("nfs/0 -send wait-> channel 'io_pkt'"); }));
  CHECK(fx.count() == 0);  // not yet a cycle: proc/1 is running
  w.open(w.go);            // proc/1 tries the aspace lock: bob's your uncle
  bob1.join();
  bob2.join();
  REQUIRE(fx.count() == 1);
  const auto v = fx.reports().front();
  const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(fx.when.front() - w.closed_at);
  MESSAGE(v.report());
  MESSAGE("Colin cycle detection latency (last edge -> report): " << latency.count() << " us");
  const auto& chain = v.details.at(0);
  CHECK(chain.find("proc/1 -lock wait-> 'aspace Bob' (rank 10) -held by-> proc/0") != std::string::npos);
  CHECK(chain.find("proc/0 -reply wait-> message on channel 'nfs' -served by-> nfs/0") != std::string::npos);
  CHECK(chain.find("nfs/0 -send wait-> channel 'io_pkt' [arg 1] -served by-> io_pkt/0") != std::string::npos);
  CHECK(chain.find("io_pkt/0 -page wait-> fault 0x7f0000042000 (file nfs:/a offset 4096) -served by-> proc/1") !=
        std::string::npos);
  for (const char* who : {"io_pkt/0", "proc/0", "proc/1", "nfs/0", "'aspace Bob' (rank 10)", "channel 'io_pkt'",
                          "message on channel 'nfs'", "fault 0x7f0000042000 (file nfs:/a offset 4096)"})
    CHECK_MESSAGE(contains(v.involved, who), who);
  CHECK(v.details.size() == 5);  // the chain + one line per hop
  // proc/1 (the newest breakable wait) was broken: the fault failed, the cycle unwound
  CHECK(bob2_result == kEdeadlk);
  CHECK_FALSE(bob1_ec);
  CHECK(bob1_nfs == 8);
}

TEST_CASE("Colin's shape with a 2-thread io_pkt pool (ANY) does not report, and completes") {
  graph_fixture fx;
  watchdog wd(std::chrono::seconds(20), "Colin 2-thread io_pkt");
  colin_world w;
  w.io_pkt.start(2);
  w.nfs.start(1);
  const auto before = wait_graph::stats();
  int bob2_result = -1, bob3_result = -1, bob1_nfs = -1;
  std::error_code bob1_ec;
  std::thread bob2([&] {
    faultsafe::set_this_thread_name("bob2");
    std::error_code ec;
    bob2_result = w.io_pkt.send(kFault, 0, ec);
  });
  REQUIRE(eventually([] { return dump_has("-page wait-> fault 0x7f0000042000"); }));
  std::thread bob3([&] {
    faultsafe::set_this_thread_name("bob3");
    std::error_code ec;
    bob3_result = w.io_pkt.send(kBusy, 0, ec);  // the other io_pkt thread is busy, not blocked
  });
  REQUIRE(eventually([&] { return w.busy_started.load(); }));
  std::thread bob1([&] {
    faultsafe::set_this_thread_name("bob1");
    bob1_ec = w.proc.fault(0, w.f1, [&] {
      CHECK_FALSE(w.aspace.lock());
      std::error_code ec;
      bob1_nfs = w.nfs.send(kRead, 0, ec);
      w.aspace.unlock();
      return ec;
    });
  });
  REQUIRE(eventually([] { return dump_has("nfs/0 -send wait-> channel 'io_pkt'"); }));
  w.open(w.go);
  REQUIRE(eventually([] { return dump_has("proc/1 -lock wait-> 'aspace Bob'"); }));
  // Every edge of the would-be cycle is in the graph; nfs/0 is not stuck because io_pkt/1 runs.
  std::this_thread::sleep_for(std::chrono::milliseconds(60));  // many polls and a full rescan
  CHECK(fx.count() == 0);
  CHECK(wait_graph::dump().find("STUCK") == std::string::npos);
  w.open(w.release_busy);
  bob1.join();
  bob2.join();
  bob3.join();
  CHECK(fx.count() == 0);
  CHECK(bob2_result == 0);
  CHECK(bob3_result == 5);
  CHECK_FALSE(bob1_ec);
  CHECK(bob1_nfs == 8);
  const auto after = wait_graph::stats();
  CHECK(after.waits_recorded - before.waits_recorded >= 6);
  CHECK(after.reports == before.reports);
}

TEST_CASE("three single-threaded servers each sending to the next: one report naming all three") {
  graph_fixture fx;
  watchdog wd(std::chrono::seconds(20), "three-server cycle");
  gate all_received(3);
  test_channel* next[3] = {};
  auto make_handler = [&](int i) {
    return [&, i](int, int hops) {
      if (hops > 0) return 1;  // a forwarded request: answer at once
      all_received.arrive_and_wait();
      std::error_code ec;
      const int r = next[i]->send(0, hops + 1, ec);
      return ec ? -ec.value() : r + 1;
    };
  };
  test_channel a("A", make_handler(0)), b("B", make_handler(1)), c("C", make_handler(2));
  next[0] = &b;
  next[1] = &c;
  next[2] = &a;
  a.start(1);
  b.start(1);
  c.start(1);
  int results[3] = {0, 0, 0};
  std::vector<std::thread> clients;
  test_channel* chans[3] = {&a, &b, &c};
  for (int i = 0; i < 3; ++i)
    clients.emplace_back([&, i] {
      faultsafe::set_this_thread_name("client/" + std::to_string(i));
      std::error_code ec;
      results[i] = chans[i]->send(0, 0, ec);
      CHECK_FALSE(ec);
    });
  for (auto& t : clients) t.join();
  a.stop();
  b.stop();
  c.stop();
  REQUIRE(fx.count() == 1);
  const auto v = fx.reports().front();
  MESSAGE(v.report());
  for (const char* who : {"A/0", "B/0", "C/0", "channel 'A'", "channel 'B'", "channel 'C'"})
    CHECK_MESSAGE(contains(v.involved, who), who);
  int broken = 0, ok = 0;
  for (int r : results) {
    broken += (r == kEdeadlk);
    ok += (r == 2);
  }
  CHECK(broken == 1);
  CHECK(ok == 2);
}

TEST_CASE("disabled graph: a real ABBA deadlock records and reports nothing (the locks time out)") {
  graph_fixture fx;
  watchdog wd(std::chrono::seconds(15), "ABBA disabled");
  wait_graph::set_enabled(false);
  const auto before = wait_graph::stats();
  abba run;
  run.start("off", std::chrono::milliseconds(200));
  run.join();
  const auto timed_out = std::make_error_code(std::errc::timed_out);
  CHECK(((run.r1 == timed_out) || (run.r2 == timed_out)));
  CHECK(run.a.contended() + run.b.contended() >= 2);
  CHECK(fx.count() == 0);
  const auto after = wait_graph::stats();
  CHECK(after.waits_recorded == before.waits_recorded);
  CHECK(after.reports == before.reports);
}
