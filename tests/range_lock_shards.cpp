// range_lock sharding: narrow ranges (inside one segment) live in their shard, wide ranges (spanning
// segments) in the wide tree; FIFO, exclusion, timeouts and diagnostics must not care which.
// Segments of 4 KiB here (shift 12): segment s lies in shard s % 16.
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {
constexpr std::uint64_t seg = 4096;

bool try_take(range_lock& l, std::uint64_t off, std::uint64_t len, lock_mode m) {
  bool got = false;
  std::thread t([&] { got = range_guard(l, off, len, m, std::try_to_lock).owns_lock(); });
  t.join();
  return got;
}
}  // namespace

TEST_CASE("segment shift: checked, reported, default 64 KiB") {
  CHECK(range_lock().segment_shift() == range_lock::default_segment_shift);
  CHECK(range_lock("x", rank::attr_range, 12).segment_shift() == 12);
  CHECK(range_lock("x", rank::attr_range, 0).segment_shift() == 0);
  CHECK_THROWS_AS(range_lock("x", rank::attr_range, 64), std::system_error);
  try {
    range_lock bad("x", rank::attr_range, 99);
    FAIL("no throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::invalid_argument);
  }
}

TEST_CASE("ranges in aliasing segments of one shard do not conflict; overlapping ones do") {
  range_lock l("alias", rank::attr_range, 12);
  rl_test::watchdog wd("alias", 30s);
  // Segments 1 and 17 share shard 1; segment 2 is shard 2.
  range_guard a(l, 1 * seg + 100, 200, lock_mode::exclusive);
  CHECK(try_take(l, 17 * seg + 100, 200, lock_mode::exclusive));  // same shard, disjoint
  CHECK(try_take(l, 2 * seg, seg, lock_mode::exclusive));          // other shard
  CHECK_FALSE(try_take(l, 1 * seg + 250, 10, lock_mode::shared));  // same shard, overlapping
  CHECK_FALSE(try_take(l, 0, 3 * seg, lock_mode::shared));          // wide, overlapping
  CHECK(try_take(l, 3 * seg, 20 * seg, lock_mode::exclusive));      // wide, disjoint (covers shard 1 again)
  CHECK(l.check_invariants());
  const auto hs = l.conflicting_holders(0, to_end, lock_mode::exclusive);
  REQUIRE(hs.size() == 1);
  CHECK(hs[0].offset == 1 * seg + 100);
}

TEST_CASE("a waiting wide writer holds back later overlapping narrow readers in other shards, not disjoint ones") {
  range_lock l("fifo-wide", rank::attr_range, 12);
  rl_test::watchdog wd("fifo wide", 30s);
  rl_test::event held, release, w_granted, w_release;
  std::thread reader([&] {  // narrow reader in segment 3
    range_guard g(l, 3 * seg, 100, lock_mode::shared);
    held.set();
    release.wait();
  });
  REQUIRE(held.wait());
  std::thread writer([&] {  // wide writer over segments 2..4
    range_guard w(l, 2 * seg, 3 * seg, lock_mode::exclusive);
    w_granted.set();
    w_release.wait();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 2 * seg, lock_mode::exclusive));
  CHECK_FALSE(try_take(l, 4 * seg + 8, 8, lock_mode::shared));  // segment 4 overlaps the writer: queues
  CHECK_FALSE(try_take(l, 2 * seg, 1, lock_mode::shared));
  CHECK(try_take(l, 7 * seg, 8, lock_mode::shared));            // segment 7: untouched
  CHECK(try_take(l, 5 * seg, 2 * seg, lock_mode::exclusive));   // wide but disjoint
  CHECK(try_take(l, 3 * seg, 100, lock_mode::shared) == false);  // behind the writer too (FIFO)
  CHECK_FALSE(w_granted.is_set());
  // A blocked narrow reader in segment 4 (later than the writer) waits for the writer, then gets in.
  std::atomic<bool> late_in{false};
  std::thread late([&] {
    range_guard g(l, 4 * seg, 8, lock_mode::shared);
    late_in = true;
  });
  REQUIRE(rl_test::wait_until_waiting(l, 4 * seg, lock_mode::shared));
  release.set();  // the narrow release must wake the wide waiter (it cannot grant it itself)
  CHECK(w_granted.wait());
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(late_in.load());
  w_release.set();
  late.join();
  CHECK(late_in.load());
  reader.join();
  writer.join();
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("a waiting narrow writer holds back a later overlapping wide reader") {
  range_lock l("fifo-narrow", rank::attr_range, 12);
  rl_test::watchdog wd("fifo narrow", 30s);
  rl_test::event held, release, w_granted;
  std::thread reader([&] {  // wide reader over segments 0..7
    range_guard g(l, 0, 8 * seg, lock_mode::shared);
    held.set();
    release.wait();
  });
  REQUIRE(held.wait());
  std::thread writer([&] {
    range_guard w(l, 5 * seg + 10, 10, lock_mode::exclusive);
    w_granted.set();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 5 * seg + 10, lock_mode::exclusive));
  CHECK_FALSE(try_take(l, 4 * seg, 4 * seg, lock_mode::shared));  // wide, later, overlaps the writer
  CHECK(try_take(l, 0, 5 * seg, lock_mode::shared));               // wide, stops before the writer
  CHECK(try_take(l, 6 * seg, 1, lock_mode::shared));               // narrow, shared with the wide reader
  CHECK_FALSE(w_granted.is_set());
  release.set();
  CHECK(w_granted.wait());
  reader.join();
  writer.join();
  CHECK(l.holders().empty());
}

TEST_CASE("a wide waiter that times out lets the narrow waiters it held back in") {
  range_lock l("timeout-wide", rank::attr_range, 12);
  rl_test::watchdog wd("timeout wide", 30s);
  rl_test::event held, release;
  std::thread holder([&] {  // narrow writer in segment 1
    range_guard g(l, 1 * seg, 10, lock_mode::exclusive);
    held.set();
    release.wait();
  });
  REQUIRE(held.wait());
  std::atomic<bool> narrow_in{false};
  rl_test::event wide_waiting;
  std::thread wide([&] {
    range_guard w(l, 0, 4 * seg, lock_mode::exclusive, 300ms);
    CHECK_FALSE(w.owns_lock());
  });
  REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  std::thread narrow([&] {  // later than the wide waiter, overlaps it, not the holder
    range_guard g(l, 3 * seg, 10, lock_mode::shared);
    narrow_in = true;
  });
  wide.join();    // timed out
  narrow.join();  // then let in (it never needed the holder's range)
  CHECK(narrow_in.load());
  release.set();
  holder.join();
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("ordered helper over narrow ranges of several shards and a wide one, against single ranges") {
  range_lock l("ordered-shards", rank::attr_range, 12);
  rl_test::watchdog wd("ordered shards", 60s);
  std::atomic<long> bad{0};
  std::atomic<int> writers_in[3]{};
  auto work = [&](int t) {
    std::mt19937 rng(static_cast<unsigned>(t) + 7);
    for (int i = 0; i < 3000 / rl_test::slow; ++i) {
      if (t % 2 == 0) {
        const std::array<range_request, 3> rq{range_request{&l, 1 * seg + 8, 8, lock_mode::exclusive},
                                              range_request{&l, 18 * seg, 8, lock_mode::exclusive},
                                              range_request{&l, 30 * seg, 3 * seg, lock_mode::exclusive}};
        ordered_range_guards<3> g(rq);
        for (auto& w : writers_in)
          if (w.fetch_add(1) != 0) ++bad;
        if (rng() % 8 == 0) std::this_thread::yield();
        for (auto& w : writers_in) w.fetch_sub(1);
      } else {
        const std::uint64_t offs[3] = {1 * seg + 12, 18 * seg + 4, 31 * seg + 100};
        const int k = static_cast<int>(rng() % 3);
        range_guard g(l, offs[k], 1, lock_mode::exclusive);
        if (writers_in[k].fetch_add(1) != 0) ++bad;
        writers_in[k].fetch_sub(1);
      }
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) ts.emplace_back(work, t);
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("exclusion stress across 40 segments (16 shards, wrapping) with narrow and wide ranges") {
  constexpr std::uint64_t unit = 256, units = 40 * seg / unit;  // shadow granularity
  range_lock l("shard-stress", rank::attr_range, 12);
  rl_test::watchdog wd("shard stress", 100s);
  std::vector<std::atomic<int>> readers(units), writers(units);
  std::atomic<long> bad{0}, wide{0}, narrow{0};
  auto work = [&](int t) {
    std::mt19937_64 rng(99 + static_cast<unsigned>(t));
    for (int i = 0; i < 6000 / rl_test::slow; ++i) {
      const std::uint64_t u0 = rng() % units;
      std::uint64_t n = 1 + rng() % 4;
      if (rng() % 8 == 0) n = 1 + rng() % 48;
      n = std::min(n, units - u0);
      const lock_mode m = rng() % 3 == 0 ? lock_mode::exclusive : lock_mode::shared;
      const bool timed = rng() % 8 == 0;
      std::optional<range_guard> g;
      if (timed)
        g.emplace(l, u0 * unit, n * unit, m, std::chrono::microseconds(rng() % 300));
      else
        g.emplace(l, u0 * unit, n * unit, m);
      if (!g->owns_lock()) continue;
      (((u0 * unit) >> 12) == ((u0 + n) * unit - 1) >> 12 ? narrow : wide)++;
      for (std::uint64_t u = u0; u < u0 + n; ++u) {
        if (m == lock_mode::exclusive) {
          if (writers[u].fetch_add(1) != 0 || readers[u].load() != 0) ++bad;
        } else {
          readers[u].fetch_add(1);
          if (writers[u].load() != 0) ++bad;
        }
      }
      if (rng() % 16 == 0) std::this_thread::yield();
      for (std::uint64_t u = u0; u < u0 + n; ++u) (m == lock_mode::exclusive ? writers[u] : readers[u]).fetch_sub(1);
      if (t == 0 && i % 500 == 0 && !l.check_invariants()) ++bad;
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) ts.emplace_back(work, t);
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(wide.load() > 0);
  CHECK(narrow.load() > 0);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
  MESSAGE("narrow " << narrow.load() << ", wide " << wide.load());
}
