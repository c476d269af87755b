// A randomized stress that never deadlocks must produce no wait_cycle report: threads take test locks
// in a global order with contention, other threads take them in reverse order with try_lock and back
// off (holders change without any blocking edge), clients send to a 2-thread channel whose handlers
// lock, and faults are served by a pager thread that locks. Run with default and aggressive options.
#include <doctest/doctest.h>

#include <random>

#include "wait_graph_support.hpp"

using namespace wgtest;

namespace {

void run_stress(int iterations, const faultsafe::wait_graph_options& opts) {
  graph_fixture fx;
  wait_graph::set_options(opts);
  watchdog wd(std::chrono::seconds(80), "stress");
  constexpr int kLocks = 6;
  std::vector<std::unique_ptr<test_mutex>> locks;
  for (int i = 0; i < kLocks; ++i)
    locks.push_back(std::make_unique<test_mutex>("L" + std::to_string(i), 10u * static_cast<unsigned>(i + 1)));
  std::atomic<int> errors{0};
  // Locks [lo, hi) of a random non-empty subset, in index order; hold briefly (sometimes long
  // enough for the waiters' polls to run), then `inside`, then release.
  auto take_range = [&](std::mt19937& rng, int lo, int hi, const std::function<void()>& inside) {
    const unsigned mask = std::uniform_int_distribution<unsigned>(1, (1u << kLocks) - 1)(rng);
    int taken[kLocks];
    int n = 0;
    for (int i = lo; i < hi; ++i)
      if (mask & (1u << i)) {
        if (locks[static_cast<std::size_t>(i)]->lock()) {
          errors.fetch_add(1);
          break;
        }
        taken[n++] = i;
      }
    if (rng() % 4 == 0) std::this_thread::yield();
    if (rng() % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
    if (inside) inside();
    while (n > 0) locks[static_cast<std::size_t>(taken[--n])]->unlock();
  };
  auto take_in_order = [&](std::mt19937& rng) { take_range(rng, 0, kLocks, {}); };
  // A single-threaded second server, reached from the first one's handlers while they hold only
  // L0..L2; its handler takes only L3..L5 (a global order over locks and the channel).
  test_channel chan2("srv2", [&](int arg, int) {
    std::mt19937 rng(static_cast<unsigned>(arg) * 7u);
    take_range(rng, 3, kLocks, {});
    return arg;
  });
  chan2.start(1);
  test_pager pager("pg", 1);
  test_fault fault(0x7f00000ff000, "stress:/f", 8192);
  test_channel chan("srv", [&](int arg, int) {
    std::mt19937 rng(static_cast<unsigned>(arg));
    if (arg % 3 == 0) {
      take_range(rng, 0, 3, [&] {
        std::error_code ec;
        if (chan2.send(arg, 1, ec) != arg || ec) errors.fetch_add(1);
      });
    } else {
      take_in_order(rng);
    }
    return arg;
  });
  chan.start(2);
  const auto before = wait_graph::stats();
  std::vector<std::thread> ts;
  for (int t = 0; t < 5; ++t)  // ordered lockers
    ts.emplace_back([&, t] {
      faultsafe::set_this_thread_name("ordered/" + std::to_string(t));
      std::mt19937 rng(static_cast<unsigned>(1000 + t));
      for (int i = 0; i < iterations; ++i) take_in_order(rng);
    });
  for (int t = 0; t < 2; ++t)  // reverse order with try_lock and back-off: never blocks
    ts.emplace_back([&, t] {
      faultsafe::set_this_thread_name("reverse/" + std::to_string(t));
      for (int i = 0; i < iterations; ++i) {
        int held[kLocks];
        int n = 0;
        for (int l = kLocks - 1; l >= 0; --l) {
          if (!locks[static_cast<std::size_t>(l)]->try_lock()) break;
          held[n++] = l;
        }
        std::this_thread::yield();
        while (n > 0) locks[static_cast<std::size_t>(held[--n])]->unlock();
      }
    });
  for (int t = 0; t < 2; ++t)  // clients of the channel, holding nothing
    ts.emplace_back([&, t] {
      faultsafe::set_this_thread_name("client/" + std::to_string(t));
      for (int i = 0; i < iterations / 4; ++i) {
        std::error_code ec;
        const int arg = t * 100000 + i;
        if (chan.send(arg, 0, ec) != arg || ec) errors.fetch_add(1);
      }
    });
  ts.emplace_back([&] {  // faults served by a pager thread that locks
    faultsafe::set_this_thread_name("faulter");
    std::mt19937 rng(7);
    for (int i = 0; i < iterations / 4; ++i) {
      const auto ec = pager.fault(0, fault, [&] {
        take_in_order(rng);
        return std::error_code{};
      });
      if (ec) errors.fetch_add(1);
    }
  });
  for (auto& t : ts) t.join();
  chan.stop();
  chan2.stop();
  const auto after = wait_graph::stats();
  std::uint64_t contended = 0;
  for (auto& l : locks) contended += l->contended();
  MESSAGE("waits recorded " << (after.waits_recorded - before.waits_recorded) << ", scans "
                            << (after.scans - before.scans) << ", candidates "
                            << (after.candidates - before.candidates) << ", contended locks " << contended);
  for (const auto& v : fx.reports()) MESSAGE(v.report());
  CHECK(fx.count() == 0);
  CHECK(errors.load() == 0);
  CHECK(after.reports == before.reports);
  CHECK(after.waits_recorded - before.waits_recorded > 0);
  CHECK(after.active_waits == 0);
}

}  // namespace

TEST_CASE("stress, default options: no report") { run_stress(300, faultsafe::wait_graph_options{}); }

TEST_CASE("stress, aggressive re-checking (100 us polls, 1 ms full rescans): no report") {
  faultsafe::wait_graph_options o;
  o.recheck_interval = std::chrono::microseconds(100);
  o.confirm_delay = std::chrono::microseconds(10);
  o.full_rescan_interval = std::chrono::milliseconds(1);
  run_stress(200, o);
}
