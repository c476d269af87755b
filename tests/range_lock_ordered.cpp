// ordered_range_guards: several ranges of one or more range_locks without deadlock. Its AB/BA twin
// (two threads naming the same ranges in opposite orders) runs many times under a watchdog, and so do
// overlapping multi-range requests on one lock, which plain FIFO queuing would deadlock if the ranges
// of one helper were enqueued one by one.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "range_lock_test_util.hpp"

using namespace faultsafe;

TEST_CASE("AB/BA twin over two locks") {
  range_lock a("A"), b("B");
  rl_test::watchdog wd("AB/BA twin", std::chrono::seconds(60));
  std::atomic<long> in_a{0};
  std::atomic<long> bad{0};
  const int iters = 20000 / rl_test::slow;
  auto body = [&](bool reversed) {
    for (int i = 0; i < iters; ++i) {
      std::array<range_request, 2> r{{{&a, 0, 64, lock_mode::exclusive}, {&b, 0, 64, lock_mode::exclusive}}};
      if (reversed) std::swap(r[0], r[1]);
      ordered_range_guards<2> o(r);
      if (o.size() != 2) ++bad;
      if (in_a.fetch_add(1) != 0) ++bad;  // both exclusive: never two threads inside
      in_a.fetch_sub(1);
    }
  };
  std::thread t1(body, false), t2(body, true);
  t1.join();
  t2.join();
  CHECK(bad.load() == 0);
  CHECK(a.holders().empty());
  CHECK(b.holders().empty());
}

TEST_CASE("overlapping multi-range requests on one lock against single ranges and each other") {
  range_lock l("one file");
  rl_test::watchdog wd("ordered one lock", std::chrono::seconds(60));
  std::atomic<long> bad{0};
  std::atomic<int> writers[128]{};
  const int iters = 8000 / rl_test::slow;
  auto claim = [&](std::uint64_t off, std::uint64_t len, bool on) {
    for (std::uint64_t i = off; i < off + len && i < 128; ++i)
      if (on ? writers[i].fetch_add(1) != 0 : writers[i].fetch_sub(1) != 1) ++bad;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&, t] {  // [0,10) + [20,10) through the helper (random order)
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < iters; ++i) {
        std::array<range_request, 2> r{{{&l, 0, 10, lock_mode::exclusive}, {&l, 20, 10, lock_mode::exclusive}}};
        if (rng() % 2) std::swap(r[0], r[1]);
        ordered_range_guards<2> o(r);
        claim(0, 10, true);
        claim(20, 10, true);
        claim(0, 10, false);
        claim(20, 10, false);
      }
    });
  ts.emplace_back([&] {  // a single range spanning the gap: [5, 25)
    for (int i = 0; i < iters; ++i) {
      range_guard g(l, 5, 20, lock_mode::exclusive);
      claim(5, 20, true);
      claim(5, 20, false);
    }
  });
  ts.emplace_back([&] {  // direct-copy style: source shared + overlapping destination exclusive (merged)
    for (int i = 0; i < iters; ++i) {
      std::array<range_request, 2> r{{{&l, 8, 16, lock_mode::shared}, {&l, 16, 32, lock_mode::exclusive}}};
      ordered_range_guards<2> o(r);
      if (o.size() != 1) ++bad;
      claim(8, 40, true);
      claim(8, 40, false);
    }
  });
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("three locks, three threads, every rotation of the request order") {
  range_lock a("A"), b("B"), c("C");
  rl_test::watchdog wd("three locks", std::chrono::seconds(60));
  std::atomic<long> bad{0};
  std::atomic<int> inside{0};
  const int iters = 6000 / rl_test::slow;
  auto body = [&](int rot) {
    for (int i = 0; i < iters; ++i) {
      std::array<range_request, 3> r{{{&a, 0, 10, lock_mode::exclusive}, {&b, 5, 10, lock_mode::shared}, {&c, 0, 100, lock_mode::exclusive}}};
      std::rotate(r.begin(), r.begin() + rot, r.end());
      ordered_range_guards<3> o(r);
      if (inside.fetch_add(1) != 0) ++bad;
      inside.fetch_sub(1);
    }
  };
  std::thread t0(body, 0), t1(body, 1), t2(body, 2);
  t0.join();
  t1.join();
  t2.join();
  CHECK(bad.load() == 0);
}

TEST_CASE("the ranges of one helper on one lock queue together: a spanning request cannot split them") {
  // T1's helper waits for [0,10) behind a holder while its [20,10) is already queued; a request for
  // [5,25) arriving meanwhile queues behind both. Enqueued one by one, T1 would hold [0,10) and then
  // queue [20,10) behind the spanning request, which waits for T1: a deadlock (the watchdog).
  range_lock l("file");
  rl_test::watchdog wd("helper atomic enqueue", std::chrono::seconds(30));
  rl_test::event held, release;
  std::thread holder([&] {
    range_guard g(l, 0, 10, lock_mode::exclusive);
    held.set();
    release.wait();
  });
  REQUIRE(held.wait());
  std::atomic<bool> t1_done{false}, t2_done{false};
  std::thread t1([&] {
    std::array<range_request, 2> r{{{&l, 20, 10, lock_mode::exclusive}, {&l, 0, 10, lock_mode::exclusive}}};
    ordered_range_guards<2> o(r);
    CHECK_FALSE(t2_done.load());
    t1_done = true;
  });
  REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  bool queued_together = false;
  for (const auto& h : l.holders())
    if (h.offset == 20) queued_together = true;
  CHECK(queued_together);
  std::thread t2([&] {
    range_guard g(l, 5, 20, lock_mode::exclusive);
    CHECK(t1_done.load());  // FIFO: T1's ranges came first
    t2_done = true;
  });
  REQUIRE(rl_test::wait_until_waiting(l, 5, lock_mode::exclusive));
  release.set();
  holder.join();
  t1.join();
  t2.join();
  CHECK(t2_done.load());
  CHECK(l.holders().empty());
}
