// The wait-for graph's stuck rules (ALL / ANY / can_grow / hand-off), reporting exactly once, the
// disabled switch and a throwing handler, on fake resources and waits recorded on behalf of made-up
// thread ids (deterministic: no threads, no timing).
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <stdexcept>

#include "wait_graph_support.hpp"

using namespace wgtest;
using faultsafe::on_behalf;

namespace {

struct fake final : faultsafe::waitable {
  fake(std::string n, std::vector<std::uint32_t> h, bool any = false, bool grow = false)
      : name(std::move(n)), holders(std::move(h)), any(any), grow(grow) {}
  std::string name;
  std::vector<std::uint32_t> holders;
  bool any, grow;
  void wait_holders(std::vector<std::uint32_t>& t) const override { t.insert(t.end(), holders.begin(), holders.end()); }
  bool any_of() const override { return any; }
  bool can_grow() const override { return grow; }
  std::string wait_name() const override { return name; }
};

constexpr std::uint32_t T1 = 900001, T2 = 900002, T3 = 900003, T4 = 900004;

}  // namespace

TEST_CASE("ALL 2-cycle is reported once, naming every hop, and again only for new wait instances") {
  graph_fixture fx;
  fake ra("lock A", {T2}), rb("lock B", {T1});
  const auto before = wait_graph::stats();
  {
    wait_scope w1(on_behalf, T1, ra, wait_kind::lock);
    CHECK(fx.count() == 0);
    {
      wait_scope w2(on_behalf, T2, rb, wait_kind::lock, "in test");
      REQUIRE(fx.count() == 1);
      const auto v = fx.reports().front();
      CHECK(v.kind == faultsafe::violation_kind::wait_cycle);
      REQUIRE(!v.details.empty());
      // the finder (T2) first, then every hop in order
      CHECK(v.details[0] ==
            "thread-900002 -lock wait-> lock B [in test] -held by-> thread-900001 -lock wait-> lock A -held by-> thread-900002");
      CHECK(contains(v.involved, "thread-900001"));
      CHECK(contains(v.involved, "thread-900002"));
      CHECK(contains(v.involved, "lock A"));
      CHECK(contains(v.involved, "lock B"));
      // on-behalf waits are not breakable
      CHECK_FALSE(w1.deadlocked());
      CHECK_FALSE(w2.deadlocked());
      CHECK(v.summary.find("not broken") != std::string::npos);
      // rescans do not report it again
      for (int i = 0; i < 3; ++i) CHECK(wait_graph::check_now() == 0);
      CHECK(fx.count() == 1);
    }
    // a new wait instance closes a new cycle: a new report
    wait_scope w2b(on_behalf, T2, rb, wait_kind::lock);
    CHECK(fx.count() == 2);
  }
  const auto after = wait_graph::stats();
  CHECK(after.active_waits == before.active_waits);
  CHECK(after.reports - before.reports == 2);
}

TEST_CASE("ANY: stuck only when every server is stuck") {
  graph_fixture fx;
  fake chan("channel 'c'", {T2, T3}, /*any=*/true);
  fake lock_by_t1("lock L", {T1});
  wait_scope w1(on_behalf, T1, chan, wait_kind::send);
  wait_scope w2(on_behalf, T2, lock_by_t1, wait_kind::lock);
  CHECK(fx.count() == 0);  // T3 is not blocked: it will serve T1
  CHECK(wait_graph::check_now() == 0);
  CHECK(wait_graph::dump().find("STUCK") == std::string::npos);
  {
    wait_scope w3(on_behalf, T3, lock_by_t1, wait_kind::lock);
    REQUIRE(fx.count() == 1);  // now both servers wait on T1
    const auto v = fx.reports().front();
    CHECK(v.details[0].find("-send wait-> channel 'c' -served by->") != std::string::npos);
  }
}

TEST_CASE("ANY that can grow is never stuck; ANY with no server that cannot grow is a dead end, not a cycle") {
  graph_fixture fx;
  fake pool("pool p", {T2}, true, /*grow=*/true);
  fake lock_by_t1("lock L", {T1});
  {
    wait_scope w1(on_behalf, T1, pool, wait_kind::pool);
    wait_scope w2(on_behalf, T2, lock_by_t1, wait_kind::lock);
    CHECK(fx.count() == 0);
  }
  fake empty("channel 'nobody'", {}, true, false);
  fake lock_by_t3("lock M", {T3});
  wait_scope w3(on_behalf, T3, empty, wait_kind::send);
  wait_scope w4(on_behalf, T4, lock_by_t3, wait_kind::lock);
  CHECK(fx.count() == 0);
  const auto d = wait_graph::dump();
  CHECK(d.find("thread-900003 -send wait-> channel 'nobody' (any of:) STUCK") != std::string::npos);
  CHECK(d.find("thread-900004 -lock wait-> lock M (all of: thread-900003) STUCK") != std::string::npos);
}

TEST_CASE("ALL: a resource already handed to its waiter is not stuck; an empty holder list is free") {
  graph_fixture fx;
  fake handed("lock H", {T1, T2});  // T1 waits on H but is listed: handed over, waking
  fake lock_by_t1("lock L", {T1});
  fake free_lock("lock F", {});
  wait_scope w1(on_behalf, T1, handed, wait_kind::lock);
  wait_scope w2(on_behalf, T2, lock_by_t1, wait_kind::lock);
  wait_scope w3(on_behalf, T3, free_lock, wait_kind::lock);
  CHECK(fx.count() == 0);
  CHECK(wait_graph::dump().find("STUCK") == std::string::npos);
}

TEST_CASE("ANY self-loop: a single-threaded server sending to its own channel") {
  graph_fixture fx;
  fake own("channel 'self'", {T1}, true);
  wait_scope w1(on_behalf, T1, own, wait_kind::send);
  REQUIRE(fx.count() == 1);
  CHECK(fx.reports().front().details[0] ==
        "thread-900001 -send wait-> channel 'self' -served by-> thread-900001");
}

TEST_CASE("a cycle closed without a new edge is found by poll(): at once after note_change(), else by the full rescan") {
  graph_fixture fx;
  auto o = wait_graph::options();
  o.full_rescan_interval = std::chrono::milliseconds(20);
  wait_graph::set_options(o);
  fake pool("pool p", {T2}, /*any=*/true, /*grow=*/true);
  fake lock_by_t1("lock L", {T1});
  wait_scope w1(on_behalf, T1, pool, wait_kind::pool);
  wait_scope w2(on_behalf, T2, lock_by_t1, wait_kind::lock);
  fake behind("lock Z", {T1});
  wait_scope me(behind, wait_kind::lock);  // this thread waits behind T1 and polls
  CHECK(fx.count() == 0);
  CHECK_FALSE(me.poll());
  pool.grow = false;  // the pool reached its maximum: a deadlock with no new edge and no signal
  CHECK(eventually([&] { return me.poll() || fx.count() == 1; }, std::chrono::milliseconds(3000)));
  REQUIRE(fx.count() == 1);
  CHECK(fx.reports().front().details[0] ==
        "thread-900001 -pool wait-> pool p -served by-> thread-900002 -lock wait-> lock L -held by-> thread-900001");
  CHECK_FALSE(me.deadlocked());  // not on the cycle; the cycle's waits are not breakable
  // the same again, signalled: found by the very next poll
  fake pool2("pool q", {T4}, true, true);
  fake lock_by_t3("lock M", {T3});
  wait_scope w3(on_behalf, T3, pool2, wait_kind::pool);
  wait_scope w4(on_behalf, T4, lock_by_t3, wait_kind::lock);
  CHECK_FALSE(me.poll());
  CHECK(fx.count() == 1);
  pool2.grow = false;
  wait_graph::note_change();
  CHECK_FALSE(me.poll());
  CHECK(fx.count() == 2);
  // a standing reported deadlock does not make every poll rescan (safety net pushed out of the way)
  o.full_rescan_interval = std::chrono::seconds(60);
  wait_graph::set_options(o);
  const auto scans = wait_graph::stats().scans;
  for (int i = 0; i < 5; ++i) CHECK_FALSE(me.poll());
  CHECK(wait_graph::stats().scans == scans);
  CHECK(fx.count() == 2);
}

TEST_CASE("disabled: nothing is recorded, nothing reported") {
  graph_fixture fx;
  wait_graph::set_enabled(false);
  CHECK_FALSE(wait_graph::enabled());
  const auto before = wait_graph::stats();
  fake ra("lock A", {T2}), rb("lock B", {T1});
  {
    wait_scope w1(on_behalf, T1, ra, wait_kind::lock);
    wait_scope w2(on_behalf, T2, rb, wait_kind::lock);
    CHECK_FALSE(w1.recorded());
    CHECK_FALSE(w2.poll());
    CHECK(w1.sequence() == 0);
  }
  CHECK(fx.count() == 0);
  CHECK(wait_graph::stats().waits_recorded == before.waits_recorded);
}

TEST_CASE("a throwing handler: the exception leaves the constructor and the wait is not recorded") {
  faultsafe::scoped_violation_handler h([](const faultsafe::violation&) { throw std::runtime_error("cycle"); });
  wait_graph::set_enabled(true);
  fake ra("lock A", {T2}), rb("lock B", {T1});
  const auto before = wait_graph::stats().active_waits;
  wait_scope w1(on_behalf, T1, ra, wait_kind::lock);
  CHECK_THROWS_AS(wait_scope(on_behalf, T2, rb, wait_kind::lock), std::runtime_error);
  CHECK(wait_graph::stats().active_waits == before + 1);
}

TEST_CASE("options are clamped and readable") {
  graph_fixture fx;
  faultsafe::wait_graph_options o;
  o.recheck_interval = std::chrono::nanoseconds(0);
  o.policy = faultsafe::wait_cycle_policy::report_only;
  wait_graph::set_options(o);
  CHECK(wait_graph::recheck_interval() == std::chrono::microseconds(1));
  CHECK(wait_graph::options().policy == faultsafe::wait_cycle_policy::report_only);
}

TEST_CASE("a new edge in a graph of 1,000 other waits: the cycle it closes is found, the others untouched") {
  // The new edge's scan reads only what it reaches through the per-thread index; the 1,000 waits
  // (made and removed out of order, so the index grows and shifts entries back) are not read.
  graph_fixture fx;
  auto opts = wait_graph::options();
  opts.confirm_delay = std::chrono::microseconds(1);
  wait_graph::set_options(opts);
  constexpr std::uint32_t base = 800000, n = 1000;
  fake held_by_t1("lock held by T1", {T1});
  std::vector<std::unique_ptr<wait_scope>> others;
  for (std::uint32_t i = 0; i < n; ++i)
    others.push_back(std::make_unique<wait_scope>(on_behalf, base + i, held_by_t1, wait_kind::lock));
  for (std::size_t i = 0; i < others.size(); i += 3) others[i].reset();  // out of order
  CHECK(fx.count() == 0);  // T1 runs: nobody is stuck
  const auto scans0 = wait_graph::stats().scans;
  fake ra("lock A", {T2}), rb("lock B", {T1});
  {
    wait_scope w1(on_behalf, T1, ra, wait_kind::lock);
    CHECK(fx.count() == 0);
    wait_scope w2(on_behalf, T2, rb, wait_kind::lock);
    REQUIRE(fx.count() == 1);
    CHECK(fx.reports().front().details[0] ==
          "thread-900002 -lock wait-> lock B -held by-> thread-900001 -lock wait-> lock A -held by-> thread-900002");
    CHECK(wait_graph::stats().scans - scans0 == 3);  // w1's scan, w2's scan and its confirmation
  }
  // Every remaining wait is still found through the index: T1 waiting on a lock held by thread
  // base + i closes a 2-cycle with base + i's wait exactly when that wait is recorded.
  std::size_t expected = 1;
  for (std::uint32_t i = 0; i < n; ++i) {
    fake held_by_other("lock held by " + std::to_string(base + i), {base + i});
    wait_scope w(on_behalf, T1, held_by_other, wait_kind::lock);
    if (others[i]) ++expected;
    REQUIRE(fx.count() == expected);
  }
}

TEST_CASE("a thread with several waits counts with its newest; removing it out of order restores the older") {
  graph_fixture fx;
  fake ra("lock A", {T2}), rb("lock B", {T1}), free_lock("free lock", {});
  wait_scope w1(on_behalf, T1, ra, wait_kind::lock);
  auto newer = std::make_unique<wait_scope>(on_behalf, T1, free_lock, wait_kind::page);
  auto newest = std::make_unique<wait_scope>(on_behalf, T1, free_lock, wait_kind::page);
  newer.reset();  // the middle one first
  {
    wait_scope w2(on_behalf, T2, rb, wait_kind::lock);
    CHECK(fx.count() == 0);  // T1 counts with its newest wait, on a free lock: not stuck
  }
  newest.reset();  // now T1's newest is w1 again
  wait_scope w2(on_behalf, T2, rb, wait_kind::lock);
  CHECK(fx.count() == 1);
}

TEST_CASE("the waiter index: random ids, several waits per thread, removals in any order") {
  // detail::waiter_index against a plain model (random ids collide: long probe chains whose removal
  // must shift entries back).
  std::mt19937 rng(12);
  faultsafe::detail::waiter_index index;
  std::deque<faultsafe::detail::wait_record> recs;  // stable addresses
  std::map<std::uint32_t, std::vector<faultsafe::detail::wait_record*>> model;  // oldest first
  std::vector<faultsafe::detail::wait_record*> live;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      auto& r = recs.emplace_back();
      r.waiter = model.empty() || rng() % 4 != 0 ? 1 + rng() % 0xFFFFFFF0u : model.begin()->first;
      index.add(r);
      model[r.waiter].push_back(&r);
      live.push_back(&r);
    } else {
      const std::size_t k = rng() % live.size();
      auto* r = live[k];
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
      index.remove(*r);
      auto& v = model[r->waiter];
      v.erase(std::find(v.begin(), v.end(), r));
      if (v.empty()) model.erase(r->waiter);
    }
    if (step % 1000 == 999)
      for (const auto& [tid, v] : model) REQUIRE(index.newest(tid) == v.back());
  }
  for (const auto& [tid, v] : model) CHECK(index.newest(tid) == v.back());
  for (auto* r : live) index.remove(*r);
  for (const auto& [tid, v] : model) CHECK(index.newest(tid) == nullptr);
}
