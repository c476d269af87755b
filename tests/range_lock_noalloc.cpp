// range_lock: locking and unlocking allocate nothing (the node lives in the guard). Counts every
// global operator new in the process during windows that do only range-lock work.
#include <doctest/doctest.h>

#include "counting_new.hpp"

#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "range_lock_test_util.hpp"


using namespace faultsafe;
using namespace std::chrono_literals;

TEST_CASE("the counter sees allocations (self-test)") {
  const long before = counting_new::allocations();
  static std::array<char, 100>* volatile sink;  // volatile: the new/delete pair cannot be elided
  sink = new std::array<char, 100>;
  delete sink;
  CHECK(counting_new::allocations() == before + 1);
}

TEST_CASE("uncontended, shared-overlapping, try-fail, timed and ordered paths do not allocate") {
  range_lock l, m, u("unranked", 0);  // u: two ranges in one thread without rank reports
  { range_guard warm(l, 0, 1, lock_mode::shared); }  // thread record, held stack: first-use setup
  bool b_owned = true;
  const long before = counting_new::allocations();
  for (int i = 0; i < 1000; ++i) {
    range_guard g(l, static_cast<std::uint64_t>(i) * 64, 64, i % 2 ? lock_mode::shared : lock_mode::exclusive);
  }
  {
    std::array<range_request, 3> r{{{&m, 0, 10, lock_mode::shared}, {&l, 0, 4096, lock_mode::shared}, {&l, 2048, 4096, lock_mode::exclusive}}};
    for (int i = 0; i < 100; ++i) {
      ordered_range_guards<3> o(r);
    }
  }
  {
    range_guard a(u, 0, 100, lock_mode::exclusive, 1s);
    range_guard b(u, 50, to_end, lock_mode::exclusive, std::try_to_lock);  // fails: no allocation either
    b_owned = b.owns_lock();
    a.unlock();
  }
  const long after = counting_new::allocations();
  CHECK(after == before);
  CHECK_FALSE(b_owned);
}

TEST_CASE("contended lock (wait, park, wake, grant) does not allocate") {
  // A parked request records a wait-for-graph edge, whose scans use (thread-local, growing) buffers:
  // the allocation-free promise is for the lock itself, so measure it with the graph off.
  faultsafe::wait_graph::set_enabled(false);
  struct graph_back_on {
    ~graph_back_on() { faultsafe::wait_graph::set_enabled(true); }
  } back_on;
  range_lock l;
  rl_test::watchdog wd("noalloc contended", std::chrono::seconds(30));
  std::atomic<int> go{0}, done{0};
  std::thread t([&] {
    { range_guard warm(l, 1000, 1, lock_mode::shared); }
    go.store(1);
    while (go.load() != 2) std::this_thread::yield();
    for (int i = 0; i < 50; ++i) {
      range_guard g(l, 0, 100, lock_mode::exclusive);
    }
    done.store(1);
  });
  while (go.load() != 1) std::this_thread::yield();
  { range_guard warm(l, 2000, 1, lock_mode::shared); }
  const long before = counting_new::allocations();
  {
    range_guard g(l, 50, 10, lock_mode::shared);
    go.store(2);
    std::this_thread::sleep_for(50ms);  // the other thread queues and parks behind us
  }
  for (int i = 0; i < 50; ++i) {
    range_guard g(l, 10, 10, lock_mode::shared);
  }
  while (done.load() != 1) std::this_thread::yield();
  const long after = counting_new::allocations();
  t.join();
  CHECK(after == before);
}
