// range_lock self-conflict: requests that conflict only with ranges their own activity holds
// (Brian's lock-up) are granted, failed with EDEADLK, or left waiting, by policy; grant/fail report
// violation_kind::self_deadlock with the whole chain.
#include <doctest/doctest.h>

#include <atomic>
#include <optional>
#include <thread>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {
bool mentions(const violation& v, const std::string& s) {
  if (v.report().find(s) != std::string::npos) return true;
  for (const auto& i : v.involved)
    if (i == s) return true;
  return false;
}

// `holder` (activity a) holds [0, 100) exclusive until `release`.
struct holder_thread {
  range_lock& l;
  activity_id a;
  rl_test::event held, release;
  std::thread t;
  holder_thread(range_lock& lk, activity_id act, lock_mode m = lock_mode::exclusive, std::uint64_t off = 0,
                std::uint64_t len = 100, const char* name = "holder")
      : l(lk), a(act) {
    t = std::thread([this, m, off, len, name] {
      set_this_thread_name(name);
      activity_scope s(a);
      range_guard g(l, off, len, m);
      held.set();
      release.wait();
    });
    REQUIRE(held.wait());
  }
  ~holder_thread() {
    release.set();
    t.join();
  }
};
}  // namespace

TEST_CASE("grant: the same activity's request is granted at once, with a self_deadlock report") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  rl_test::watchdog wd("self grant", std::chrono::seconds(30));
  range_lock l("bob.dat");
  const activity_id a = new_activity();
  holder_thread hold(l, a);
  bool owned = false;
  std::size_t held_while = 0;
  std::thread pager([&] {
    set_this_thread_name("pager");
    activity_scope s(a);
    range_guard g(l, 10, 10, lock_mode::shared, range_options{0, self_conflict::grant});
    owned = g.owns_lock();
    held_while = l.holders().size();  // the holder still holds its range
    CHECK(g.owner() == a);
  });
  pager.join();
  CHECK(owned);
  CHECK(held_while == 2);
  REQUIRE(rec.count(violation_kind::self_deadlock) == 1);
  const violation v = rec.take().at(0);
  CHECK(mentions(v, "pager"));
  CHECK(mentions(v, "holder"));
  CHECK(mentions(v, "bob.dat"));
  CHECK(mentions(v, "activity " + std::to_string(a)));
  CHECK(mentions(v, "[10, 20) shared"));
  CHECK(mentions(v, "[0, 100) exclusive"));
  CHECK(mentions(v, "range_lock_self.cpp"));  // where the holder acquired it
  MESSAGE(v.report());
}

TEST_CASE("fail: EDEADLK, nothing taken, and a report") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  rl_test::watchdog wd("self fail", std::chrono::seconds(30));
  range_lock l;
  const activity_id a = new_activity();
  holder_thread hold(l, a, lock_mode::shared);
  std::error_code ec;
  std::thread pager([&] {
    try {
      range_guard g(l, 50, 100, lock_mode::exclusive, range_options{a, self_conflict::fail});  // owner given explicitly
    } catch (const std::system_error& e) {
      ec = e.code();
    }
  });
  pager.join();
  CHECK(ec == std::errc::resource_deadlock_would_occur);
  CHECK(l.holders().size() == 1);
  CHECK(rec.count(violation_kind::self_deadlock) == 1);
  // try_lock with fail: also EDEADLK (it is a certain deadlock, not contention).
  std::thread pager2([&] {
    activity_scope s(a);
    CHECK_THROWS_AS(range_guard(l, 0, 1, lock_mode::exclusive, std::try_to_lock, range_options{0, self_conflict::fail}),
                    std::system_error);
  });
  pager2.join();
  CHECK(l.holders().size() == 1);
}

TEST_CASE("wait: ordinary behaviour, no report; another activity is never granted by the rule") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  rl_test::watchdog wd("self wait", std::chrono::seconds(30));
  range_lock l;
  const activity_id a = new_activity();
  std::optional<holder_thread> hold;
  hold.emplace(l, a);
  bool timed_owned = true, other_owned = true, later_owned = false;
  std::thread t([&] {
    activity_scope s(a);
    timed_owned = range_guard(l, 0, 1, lock_mode::shared, 100ms).owns_lock();
  });
  t.join();
  std::thread other([&] {  // a different activity with grant policy: ordinary contention, not self
    activity_scope s(new_activity());
    other_owned = range_guard(l, 0, 1, lock_mode::shared, 100ms, range_options{0, self_conflict::grant}).owns_lock();
  });
  other.join();
  CHECK_FALSE(timed_owned);
  CHECK_FALSE(other_owned);
  std::thread later([&] {
    activity_scope s(a);
    range_guard g(l, 0, 1, lock_mode::shared);  // waits until the holder leaves
    later_owned = g.owns_lock();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::shared));
  hold.reset();
  later.join();
  CHECK(later_owned);
  CHECK(rec.count() == 0);
}

TEST_CASE("grant bypasses FIFO: earlier waiters of other activities keep waiting") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  rl_test::watchdog wd("bypass", std::chrono::seconds(30));
  range_lock l;
  const activity_id a = new_activity();
  std::optional<holder_thread> hold;
  hold.emplace(l, a);
  std::atomic<bool> other_granted{false};
  std::thread other([&] {
    range_guard g(l, 0, 10, lock_mode::exclusive);
    other_granted = true;
  });
  REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  bool owned = false;
  std::thread pager([&] {
    activity_scope s(a);
    range_guard g(l, 5, 10, lock_mode::exclusive, range_options{0, self_conflict::grant});
    owned = g.owns_lock();
    CHECK_FALSE(other_granted.load());
  });
  pager.join();
  CHECK(owned);
  CHECK_FALSE(other_granted.load());
  hold.reset();
  other.join();
  CHECK(other_granted.load());
  CHECK(rec.count(violation_kind::self_deadlock) == 1);
}

TEST_CASE("a waiter whose other-owner conflicts go away is re-evaluated and granted") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  rl_test::watchdog wd("re-evaluate", std::chrono::seconds(30));
  range_lock l;
  const activity_id a = new_activity();
  holder_thread hold(l, a, lock_mode::exclusive, 0, 10, "holder");
  std::optional<holder_thread> stranger;
  stranger.emplace(l, new_activity(), lock_mode::shared, 50, 10, "stranger");
  std::atomic<bool> owned{false};
  std::thread pager([&] {
    set_this_thread_name("pager");
    activity_scope s(a);
    range_guard g(l, 0, 100, lock_mode::exclusive, range_options{0, self_conflict::grant});
    owned = g.owns_lock();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  CHECK_FALSE(owned.load());
  CHECK(rec.count() == 0);
  stranger.reset();  // only the holder (same activity) remains
  pager.join();      // would hang without re-evaluation (the watchdog fails the test)
  CHECK(owned.load());
  CHECK(rec.count(violation_kind::self_deadlock) == 1);
}

TEST_CASE("a throwing handler leaves nothing taken") {
  scoped_violation_handler h([](const violation& v) {
    if (v.kind == violation_kind::self_deadlock) throw std::runtime_error("refused");
  });
  rl_test::watchdog wd("throwing handler", std::chrono::seconds(30));
  range_lock l;
  const activity_id a = new_activity();
  holder_thread hold(l, a);
  bool threw = false;
  std::thread pager([&] {
    activity_scope s(a);
    try {
      range_guard g(l, 0, 10, lock_mode::exclusive, range_options{0, self_conflict::grant});
    } catch (const std::runtime_error&) {
      threw = true;
    }
  });
  pager.join();
  CHECK(threw);
  CHECK(l.holders().size() == 1);
}

TEST_CASE("fail while waiting: EDEADLK once only same-activity conflicts remain") {
  violation_recorder rec;
  scoped_violation_handler h(rec.handler());
  rl_test::watchdog wd("re-evaluate fail", std::chrono::seconds(30));
  range_lock l;
  const activity_id a = new_activity();
  holder_thread hold(l, a, lock_mode::shared, 0, 10, "holder");
  std::optional<holder_thread> stranger;
  stranger.emplace(l, new_activity(), lock_mode::exclusive, 50, 10, "stranger");
  std::error_code ec;
  std::thread pager([&] {
    activity_scope s(a);
    try {
      range_guard g(l, 5, 50, lock_mode::exclusive, range_options{0, self_conflict::fail});
    } catch (const std::system_error& e) {
      ec = e.code();
    }
  });
  REQUIRE(rl_test::wait_until_waiting(l, 5, lock_mode::exclusive));
  CHECK(rec.count() == 0);
  stranger.reset();
  pager.join();
  CHECK(ec == std::errc::resource_deadlock_would_occur);
  CHECK(rec.count(violation_kind::self_deadlock) == 1);
  CHECK(l.holders().size() == 1);  // the holder's range only: the failed request left the queue
}

namespace {
// The queued-writer set-up: activity a holds [0, len) shared (a read that faulted); another
// activity's write of [0, wlen) is queued behind it (exclusive, waiting). Every report is recorded.
struct queued_writer {
  violation_recorder rec;
  scoped_violation_handler h{rec.handler()};
  range_lock l;
  activity_id a = new_activity();
  std::optional<holder_thread> read;
  std::atomic<bool> write_granted{false};
  std::thread write;
  queued_writer(std::uint64_t len, std::uint64_t wlen) {
    read.emplace(l, a, lock_mode::shared, 0, len, "read");
    write = std::thread([this, wlen] {
      set_this_thread_name("write");
      activity_scope s(new_activity());
      range_guard g(l, 0, wlen, lock_mode::exclusive);
      write_granted = true;
    });
    REQUIRE(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  }
  ~queued_writer() {
    read.reset();
    if (write.joinable()) write.join();
  }
};
}  // namespace

TEST_CASE("queued-writer rule: a guarded request of the owner passes a waiter that waits for the owner's range") {
  // a's page-in of [0, 10) shared, policy grant, must not queue behind the write (the write cannot be
  // granted before a's read is released, which waits for the page-in).
  rl_test::watchdog wd("queued writer", std::chrono::seconds(30));
  queued_writer q(100, 10);
  range_lock& l = q.l;
  {
    activity_scope s(q.a);
    // Policy wait: plain FIFO, the page-in stays behind the write.
    range_guard plain(l, 0, 10, lock_mode::shared, std::try_to_lock, range_options{0, self_conflict::wait});
    CHECK_FALSE(plain.owns_lock());
  }
  {
    // Another activity's guarded request: the write does not wait for ITS ranges, FIFO holds.
    activity_scope s(new_activity());
    range_guard other(l, 0, 10, lock_mode::shared, std::try_to_lock, range_options{0, self_conflict::grant});
    CHECK_FALSE(other.owns_lock());
  }
  {
    activity_scope s(q.a);
    range_guard page_in(l, 0, 10, lock_mode::shared, std::try_to_lock, range_options{0, self_conflict::grant});
    CHECK(page_in.owns_lock());  // granted at once, ahead of the write
    CHECK_FALSE(q.write_granted.load());
    CHECK(l.check_invariants());
    CHECK(q.rec.count() == 0);  // it conflicts with nothing of its own activity: no self-deadlock report
    q.read.reset();  // the read's range goes; the write now waits for the page-in (granted, conflicting)
    CHECK_FALSE(q.write_granted.load());
    CHECK(rl_test::wait_until_waiting(l, 0, lock_mode::exclusive));
  }
  q.write.join();  // the page-in released: the write gets in
  CHECK(q.write_granted.load());
  CHECK(q.rec.count() == 0);
  CHECK(l.holders().empty());
}

TEST_CASE("queued-writer rule, blocking: a waiting guarded request is granted past the writer when it arrives") {
  rl_test::watchdog wd("queued writer, blocking", std::chrono::seconds(30));
  queued_writer q(4096, 4096);
  std::atomic<bool> paged{false};
  std::thread page_in([&] {  // under strict FIFO: waits behind the write until the read goes (never, here)
    activity_scope s(q.a);
    range_guard g(q.l, 0, 4096, lock_mode::shared, range_options{0, self_conflict::fail});
    paged = g.owns_lock();
  });
  page_in.join();
  CHECK(paged.load());
  CHECK_FALSE(q.write_granted.load());
  q.read.reset();
  q.write.join();
  CHECK(q.write_granted.load());
  CHECK(q.rec.count() == 0);
}
