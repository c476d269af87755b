// range_lock: arguments, try_lock / try_lock_for, holders, merging, rank checks, tree invariants.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {
std::errc code_of(const std::system_error& e) { return static_cast<std::errc>(e.code().value()); }

template <class F>
std::errc thrown_errc(F&& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    return code_of(e);
  }
  return std::errc{};
}
}  // namespace

TEST_CASE("bad arguments are clear errors, never UB") {
  range_lock l;
  CHECK(thrown_errc([&] { range_guard g(l, 0, 0, lock_mode::shared); }) == std::errc::invalid_argument);
  CHECK(thrown_errc([&] { range_guard g(l, 10, to_end - 5, lock_mode::exclusive); }) == std::errc::value_too_large);
  CHECK(thrown_errc([&] { range_guard g(l, to_end, 2, lock_mode::exclusive); }) == std::errc::value_too_large);
  CHECK(thrown_errc([&] { range_guard g(l, to_end - 9, 11, lock_mode::shared, std::try_to_lock); }) ==
        std::errc::value_too_large);
  CHECK(thrown_errc([&] { range_guard g(l, 5, 0, lock_mode::shared, 10ms); }) == std::errc::invalid_argument);
  CHECK(thrown_errc([&] { (void)l.conflicting_holders(0, 0, lock_mode::shared); }) == std::errc::invalid_argument);
  CHECK(thrown_errc([&] { (void)l.conflicting_holders(3, to_end - 1, lock_mode::shared); }) ==
        std::errc::value_too_large);
  std::array<range_request, 3> three{{{&l, 0, 1, lock_mode::shared}, {&l, 4, 1, lock_mode::shared}, {&l, 8, 1, lock_mode::shared}}};
  CHECK(thrown_errc([&] { ordered_range_guards<2> o(three); }) == std::errc::invalid_argument);
  std::array<range_request, 1> null_lock{{{nullptr, 0, 1, lock_mode::shared}}};
  CHECK(thrown_errc([&] { ordered_range_guards<2> o(null_lock); }) == std::errc::invalid_argument);
  std::array<range_request, 2> bad_len{{{&l, 0, 1, lock_mode::shared}, {&l, 9, 0, lock_mode::shared}}};
  CHECK(thrown_errc([&] { ordered_range_guards<2> o(bad_len); }) == std::errc::invalid_argument);
  CHECK(l.holders().empty());  // nothing was taken by any failed call

  // The edges that are legal.
  { range_guard g(l, to_end, 1, lock_mode::exclusive); CHECK(g.owns_lock()); CHECK(g.length() == to_end); }  // reaches the end
  { range_guard g(l, to_end - 9, 10, lock_mode::exclusive); CHECK(g.length() == to_end); }
  { range_guard g(l, 0, to_end, lock_mode::exclusive); CHECK(g.offset() == 0); CHECK(g.length() == to_end); }
  { range_guard g(l, 12345, to_end, lock_mode::shared); CHECK(g.length() == to_end); }
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("try_lock: conflicting fails, disjoint and shared succeed; to_end ranges") {
  violation_recorder rec;  // one thread holds several ranges here: rank reports are expected
  scoped_violation_handler h(rec.handler());
  range_lock l("file");
  range_guard a(l, 100, to_end, lock_mode::exclusive);
  {
    range_guard b(l, std::uint64_t{1} << 63, 1, lock_mode::shared, std::try_to_lock);
    CHECK_FALSE(b.owns_lock());
    CHECK_FALSE(static_cast<bool>(b));
    CHECK(thrown_errc([&] { b.unlock(); }) == std::errc::operation_not_permitted);
  }
  {
    range_guard c(l, 0, 100, lock_mode::exclusive, std::try_to_lock);  // touches, does not overlap
    CHECK(c.owns_lock());
    range_guard d(l, 99, 2, lock_mode::shared, std::try_to_lock);
    CHECK_FALSE(d.owns_lock());
  }
  a.unlock();
  CHECK_FALSE(a.owns_lock());
  CHECK(thrown_errc([&] { a.unlock(); }) == std::errc::operation_not_permitted);
  {
    range_guard s1(l, 0, 50, lock_mode::shared, std::try_to_lock);
    range_guard s2(l, 25, 50, lock_mode::shared, std::try_to_lock);
    CHECK(s1.owns_lock());
    CHECK(s2.owns_lock());
    range_guard x(l, 60, 1, lock_mode::exclusive, std::try_to_lock);
    CHECK_FALSE(x.owns_lock());
    auto hs = l.conflicting_holders(40, 20, lock_mode::exclusive);
    REQUIRE(hs.size() == 2);
    CHECK(hs[0].offset == 0);
    CHECK(hs[0].length == 50);
    CHECK(hs[1].offset == 25);
    CHECK(hs[0].granted);
    CHECK(hs[0].mode == lock_mode::shared);
    CHECK(hs[0].owner == current_activity());
    CHECK(hs[0].thread_id == this_thread_id());
    CHECK(l.conflicting_holders(40, 20, lock_mode::shared).empty());
  }
  CHECK(l.holders().empty());
#if FAULTSAFE_CHECKS
  CHECK(rec.count(violation_kind::rank_inversion) > 0);
#else
  CHECK(rec.count() == 0);  // checks compiled out: no lock-order bookkeeping at all
#endif
}

TEST_CASE("try_lock_for expires and leaves the queue; a waiter behind it is then granted") {
  range_lock l;
  rl_test::watchdog wd("try_lock_for", std::chrono::seconds(30));
  rl_test::event held, release, r_done;
  std::atomic<bool> w_owned{true}, r_owned{false};
  std::thread holder([&] {
    range_guard g(l, 0, 10, lock_mode::shared);
    held.set();
    release.wait();
  });
  REQUIRE(held.wait());
  std::thread writer([&] {
    range_guard w(l, 0, 10, lock_mode::exclusive, 300ms);  // expires: the holder keeps its range
    w_owned = w.owns_lock();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  std::thread reader([&] {
    range_guard r(l, 5, 10, lock_mode::shared);  // queues behind the writer (FIFO)
    r_owned = r.owns_lock();
    r_done.set();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 5, lock_mode::shared));
  writer.join();
  CHECK_FALSE(w_owned.load());
  CHECK(r_done.wait());  // the writer left the queue, so the reader is granted beside the holder
  CHECK(r_owned.load());
  release.set();
  holder.join();
  reader.join();
  CHECK(l.holders().empty());

  // A timed request that is granted in time.
  {
    rl_test::event h2, rel2;
    std::thread t([&] {
      range_guard g(l, 0, 10, lock_mode::exclusive);
      h2.set();
      rel2.wait();
      std::this_thread::sleep_for(20ms);
    });
    REQUIRE(h2.wait());
    rel2.set();
    range_guard g(l, 0, 10, lock_mode::exclusive, std::chrono::seconds(20));
    CHECK(g.owns_lock());
    t.join();
  }
  // Zero and negative timeouts behave as try_lock; a huge one as a blocking lock.
  {
    range_guard a(l, 0, 10, lock_mode::exclusive, std::chrono::hours::max());
    CHECK(a.owns_lock());
  }
  {
    range_guard a(l, 0, 10, lock_mode::exclusive, -5s);
    CHECK(a.owns_lock());
  }
}

TEST_CASE("ordered helper merges overlapping and touching requests on one lock") {
  range_lock a("a"), b("b");
  {
    std::array<range_request, 2> r{{{&a, 0, 10, lock_mode::shared}, {&a, 5, 10, lock_mode::exclusive}}};
    ordered_range_guards<4> o(r);
    CHECK(o.size() == 1);
    auto hs = a.holders();
    REQUIRE(hs.size() == 1);
    CHECK(hs[0].offset == 0);
    CHECK(hs[0].length == 15);
    CHECK(hs[0].mode == lock_mode::exclusive);
  }
  {
    std::array<range_request, 3> r{{{&a, 10, 5, lock_mode::shared}, {&a, 0, 10, lock_mode::shared}, {&a, 20, 5, lock_mode::shared}}};
    ordered_range_guards<3> o(r);
    CHECK(o.size() == 2);  // [0,10)+[10,15) touch; [20,25) apart
    CHECK(o[0].offset() == 0);
    CHECK(o[0].length() == 15);
    CHECK(o[0].mode() == lock_mode::shared);
    CHECK(o[1].offset() == 20);
  }
  {
    std::array<range_request, 4> r{{{&b, 0, 10, lock_mode::exclusive},
                                    {&a, 0, 10, lock_mode::exclusive},
                                    {&b, 5, to_end, lock_mode::shared},
                                    {&a, 100, 1, lock_mode::shared}}};
    ordered_range_guards<4> o(r);
    CHECK(o.size() == 3);
    auto hb = b.holders();
    REQUIRE(hb.size() == 1);
    CHECK(hb[0].length == to_end);
    CHECK(hb[0].mode == lock_mode::exclusive);
    CHECK(a.holders().size() == 2);
    // Another thread cannot take any of them meanwhile.
    bool got = true;
    std::thread([&] { got = range_guard(b, 1000, 1, lock_mode::shared, std::try_to_lock).owns_lock(); }).join();
    CHECK_FALSE(got);
  }
  CHECK(a.holders().empty());
  CHECK(b.holders().empty());
}

TEST_CASE("a second range outside the ordered helper is a rank inversion; through it, none") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  range_lock a("attr a"), b("attr b");
  {
    range_guard g1(a, 0, 10, lock_mode::shared);
    CHECK(rec.count() == 0);
    range_guard g2(b, 0, 10, lock_mode::shared);
#if FAULTSAFE_CHECKS
    CHECK(rec.count(violation_kind::rank_inversion) == 1);
    auto v = rec.take();
    REQUIRE(v.size() == 1);
    CHECK(v[0].report().find("attr a") != std::string::npos);
    CHECK(v[0].report().find("attr b") != std::string::npos);
#endif
  }
  {
    std::array<range_request, 3> r{{{&b, 0, 10, lock_mode::shared}, {&a, 0, 10, lock_mode::exclusive}, {&a, 50, 10, lock_mode::shared}}};
    ordered_range_guards<3> o(r);
    CHECK(o.size() == 3);
    CHECK(rec.count() == 0);
  }
  {
    range_guard g1(a, 0, 10, lock_mode::shared);
    std::array<range_request, 1> r{{{&b, 0, 10, lock_mode::shared}}};
    ordered_range_guards<1> o(r);  // held from before the helper: still an inversion
#if FAULTSAFE_CHECKS
    CHECK(rec.count(violation_kind::rank_inversion) == 1);
#endif
  }
  {  // a handler that throws: nothing taken
    scoped_violation_handler thrower([](const violation&) { throw std::runtime_error("refused"); });
    range_guard g1(a, 0, 10, lock_mode::shared);
#if FAULTSAFE_CHECKS
    CHECK_THROWS_AS(range_guard(b, 0, 10, lock_mode::shared), std::runtime_error);
    CHECK(b.holders().empty());
#endif
  }
}

TEST_CASE("random try_lock sequences: grants match a brute-force model; tree stays consistent") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  range_lock l("model", 0);  // unranked: many ranges in one thread
  constexpr int slots = 40;
  std::array<std::optional<range_guard>, slots> g;
  struct model_range {
    std::uint64_t off, last;
    lock_mode m;
  };
  std::array<std::optional<model_range>, slots> model;
  std::mt19937_64 rng(42);
  for (int op = 0; op < 6000; ++op) {
    const int s = static_cast<int>(rng() % slots);
    if (g[s]) {
      g[s].reset();
      model[s].reset();
    } else {
      const std::uint64_t off = rng() % 1000;
      std::uint64_t len = 1 + rng() % 100;
      if (rng() % 50 == 0) len = to_end;
      const lock_mode m = rng() % 3 == 0 ? lock_mode::exclusive : lock_mode::shared;
      const std::uint64_t last = len == to_end ? to_end : off + len - 1;
      bool expect = true;
      for (const auto& r : model)
        if (r && r->off <= last && off <= r->last && (r->m == lock_mode::exclusive || m == lock_mode::exclusive))
          expect = false;
      g[s].emplace(l, off, len, m, std::try_to_lock);
      REQUIRE(g[s]->owns_lock() == expect);
      if (expect)
        model[s] = model_range{off, last, m};
      else
        g[s].reset();
      const auto ch = l.conflicting_holders(off, len, m);
      std::size_t n = 0;
      for (const auto& r : model)
        if (r && r->off <= last && off <= r->last && (r->m == lock_mode::exclusive || m == lock_mode::exclusive)) ++n;
      CHECK(ch.size() == n);
    }
    REQUIRE(l.check_invariants());
  }
  for (auto& x : g) x.reset();
  CHECK(l.holders().empty());
}

TEST_CASE("interval tree: the augmentation (subtree max end, overall and exclusive) holds after every insert and erase") {
  // The insertion raises the augmentation on the way down and recomputes only the nodes rebalancing
  // rotated; erase recomputes the path. check_subtree recomputes everything from scratch.
  using detail::rl::range_node;
  using detail::rl::range_tree;
  std::mt19937_64 rng(42);
  for (int round = 0; round < 40; ++round) {
    range_tree t;
    t.init();
    std::vector<std::unique_ptr<range_node>> live;
    const auto cap = static_cast<std::size_t>(1 + rng() % 600);
    bool ok = true;
    for (std::size_t step = 0; step < 4 * cap && ok; ++step) {
      if (live.size() < cap && (live.empty() || rng() % 3 != 0)) {
        auto n = std::make_unique<range_node>();
        n->off = rng() % 1000;
        n->last = n->off + rng() % 50;
        n->mode = rng() % 2 ? lock_mode::exclusive : lock_mode::shared;
        n->granted = true;
        t.insert(*n, step);
        live.push_back(std::move(n));
      } else {
        const auto i = static_cast<std::size_t>(rng() % live.size());
        t.erase(*live[i]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      }
      std::size_t waiting = 0;
      range_tree::check_subtree(t.root(), ok, waiting);
    }
    REQUIRE(ok);
  }
}
