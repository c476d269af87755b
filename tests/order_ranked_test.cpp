// ranked_mutex: rank checks, the ordered helpers, the standard guards, the held-lock stack's limit,
// throwing handlers, and the checks_off policy (same size, no thread_local on the code path).
// Cases that run a deliberate inversion to completion use order_test::spin_mutex (invisible to
// ThreadSanitizer's own lock-order detector); the standard-guard case uses std::mutex/shared_mutex.
#include "order_test_support.hpp"

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <vector>

#include "faultsafe/order/ranked_mutex.hpp"

using faultsafe::checks_off;
using faultsafe::checks_on;
using faultsafe::ranked_mutex;
using faultsafe::violation_kind;
using order_test::expect_none;
using order_test::expect_one;
using order_test::held_depth;
using order_test::recording;
using order_test::refuse;
using order_test::refused;

namespace {

// ---- checks_off: the proof that the code path touches no thread_local ----------------------------
// A literal mutex type whose operations are constexpr. The whole checks_off code path of ranked_mutex
// (lock, try_lock, unlock and the shared variants, including an inverted rank order) is evaluated
// below inside static_assert, i.e. in a constant expression. A constant expression may not touch a
// thread_local variable (nor call anything non-constexpr, such as the held-lock stack or the violation
// handler), so if checks_off ever reached the checking code this file would stop compiling.
struct constexpr_mutex {
  int state = 0;  // -1 writer, n > 0 readers
  constexpr void lock() { state = -1; }
  constexpr bool try_lock() {
    if (state != 0) return false;
    state = -1;
    return true;
  }
  constexpr void unlock() { state = 0; }
  constexpr void lock_shared() { ++state; }
  constexpr bool try_lock_shared() { return state >= 0 && ++state > 0; }
  constexpr void unlock_shared() { --state; }
};

constexpr bool checks_off_path_is_constant() {
  ranked_mutex<20, constexpr_mutex, checks_off> high;
  ranked_mutex<10, constexpr_mutex, checks_off> low("low");
  high.lock();
  low.lock();  // rank inversion: with checks off nothing looks
  const bool relock = low.try_lock();
  low.unlock();
  high.unlock();
  high.lock_shared();
  high.lock_shared();  // read-read: nothing looks either
  const bool shared_ok = high.try_lock_shared();
  high.unlock_shared();
  high.unlock_shared();
  high.unlock_shared();
  return !relock && shared_ok && high.underlying().state == 0 && low.underlying().state == 0;
}
static_assert(checks_off_path_is_constant(), "checks_off must be plain forwarding, no thread_local");

static_assert(sizeof(ranked_mutex<10, std::mutex, checks_off>) == sizeof(std::mutex));
static_assert(sizeof(ranked_mutex<10, std::shared_mutex, checks_off>) == sizeof(std::shared_mutex));
static_assert(sizeof(ranked_mutex<10, std::recursive_mutex, checks_off>) == sizeof(std::recursive_mutex));
static_assert(sizeof(ranked_mutex<10, constexpr_mutex, checks_off>) == sizeof(constexpr_mutex));
static_assert(std::is_standard_layout_v<ranked_mutex<10, std::mutex, checks_off>>);

}  // namespace

TEST_CASE("default names say the rank") {
  ranked_mutex<20, order_test::spin_mutex, checks_on> m;
  CHECK(std::string(m.name()) == "ranked_mutex<20>");
  ranked_mutex<7, order_test::spin_mutex, checks_on> n("seven");
  CHECK(std::string(n.name()) == "seven");
}

TEST_CASE("rank inversion is reported with both locks and where they were taken") {
  recording r;
  ranked_mutex<faultsafe::rank::attr_range, order_test::spin_mutex, checks_on> range("attr range");
  ranked_mutex<faultsafe::rank::region, order_test::spin_mutex, checks_on> region("region");
  range.lock();
  region.lock();
  const auto v = expect_one(r.rec, violation_kind::rank_inversion, {"attr range", "region"});
  CHECK(v.report().find("order_ranked_test.cpp:") != std::string::npos);
  CHECK(v.report().find("rank 30") != std::string::npos);
  region.unlock();
  range.unlock();
  // the right order is quiet
  region.lock();
  range.lock();
  range.unlock();
  region.unlock();
  expect_none(r.rec);
}

TEST_CASE("equal ranks without the helper are an inversion") {
  recording r;
  ranked_mutex<20, order_test::spin_mutex, checks_on> a("a"), b("b");
  a.lock();
  b.lock();
  const auto v = expect_one(r.rec, violation_kind::rank_inversion, {"a", "b"});
  CHECK(v.summary.find("lock_in_order") != std::string::npos);
  b.unlock();
  a.unlock();
}

TEST_CASE("lock_in_order takes one-rank and mixed-rank sets in a global order") {
  recording r;
  ranked_mutex<20, order_test::spin_mutex, checks_on> a("a"), b("b"), c("c");
  ranked_mutex<10, order_test::spin_mutex, checks_on> low("low");
  faultsafe::lock_in_order(c, a, low, b);
  CHECK(held_depth() == 4);
  expect_none(r.rec);
  a.unlock();  // any release order
  low.unlock();
  c.unlock();
  b.unlock();
  {
    faultsafe::ordered_lock_guard g(b, a);
    CHECK(held_depth() == 2);
  }
  {
    faultsafe::ordered_lock_guard g(b, a, low, c);  // unannotated variadic form
    CHECK(held_depth() == 4);
  }
  expect_none(r.rec);
  // ... but a lock of that rank held from before still forbids it
  ranked_mutex<20, order_test::spin_mutex, checks_on> before("before");
  before.lock();
  faultsafe::lock_in_order_at(faultsafe::source_location::current(), a, b);
  auto seen = r.rec.take();
  CHECK(seen.size() == 2);
  for (const auto& v : seen) CHECK(v.kind == violation_kind::rank_inversion);
  a.unlock();
  b.unlock();
  before.unlock();
}

TEST_CASE("lock_in_order releases what it took when a lock throws") {
  recording r;
  ranked_mutex<20, order_test::spin_mutex, checks_on> a("a"), b("b");
  ranked_mutex<30, order_test::spin_mutex, checks_on> held("held");
  held.lock();
  faultsafe::scoped_violation_handler thrower{&refuse};
  CHECK_THROWS_AS(faultsafe::lock_in_order(a, b), refused);
  CHECK(held_depth() == 1);
  CHECK(a.underlying().try_lock());
  CHECK(b.underlying().try_lock());
  a.underlying().unlock();
  b.underlying().unlock();
  held.unlock();
}

TEST_CASE("std::lock_guard, unique_lock, scoped_lock and shared_lock work") {
  recording r;
  ranked_mutex<10, std::mutex, checks_on> a("a");
  ranked_mutex<20, std::shared_mutex, checks_on> s("s");
  ranked_mutex<20, std::mutex, checks_on> t("t");
  {
    std::lock_guard<decltype(a)> g(a);
    CHECK(held_depth() == 1);
    std::shared_lock<decltype(s)> sl(s);
    CHECK(sl.owns_lock());
    CHECK(held_depth() == 2);
  }
  CHECK(held_depth() == 0);
  {
    std::unique_lock<decltype(s)> u(s, std::try_to_lock);
    CHECK(u.owns_lock());
    u.unlock();
    CHECK(held_depth() == 0);
    u.lock();
    CHECK(held_depth() == 1);
  }
  {
    std::scoped_lock g(t, a, s);  // std::lock's back-off algorithm; its try_locks do not check ranks
    CHECK(held_depth() == 3);
  }
  {
    std::shared_lock<decltype(s)> sl(s, std::try_to_lock);
    CHECK(sl.owns_lock());
  }
  expect_none(r.rec);
}

TEST_CASE("try_lock of a held lock is recursive_acquire") {
  recording r;
  ranked_mutex<10, order_test::spin_mutex, checks_on> a("a");
  a.lock();
  CHECK_THROWS_AS((void)a.try_lock(), std::system_error);
  expect_one(r.rec, violation_kind::recursive_acquire, {"a"});
  a.unlock();
}

TEST_CASE("a throwing handler: the inverted lock is not taken") {
  ranked_mutex<20, order_test::spin_mutex, checks_on> high("high");
  ranked_mutex<10, order_test::spin_mutex, checks_on> low("low");
  faultsafe::scoped_violation_handler thrower{&refuse};
  high.lock();
  CHECK_THROWS_AS(low.lock(), refused);
  CHECK(held_depth() == 1);
  CHECK(low.underlying().try_lock());
  low.underlying().unlock();
  high.unlock();
  CHECK(held_depth() == 0);
}

TEST_CASE("the held-lock stack's limit is reported, never overrun") {
  recording r;
  constexpr unsigned cap = FAULTSAFE_MAX_HELD_LOCKS;
  std::vector<std::unique_ptr<ranked_mutex<0, order_test::spin_mutex, checks_on>>> locks;
  for (unsigned i = 0; i < cap + 3; ++i) locks.push_back(std::make_unique<ranked_mutex<0, order_test::spin_mutex, checks_on>>("many"));
  for (auto& l : locks) l->lock();
  CHECK(held_depth() == cap);
  CHECK(r.rec.count(violation_kind::held_stack_overflow) == 3);
  CHECK(r.rec.count() == 3);
  for (auto& l : locks) l->unlock();  // the three untracked holds are released without a report
  CHECK(held_depth() == 0);
  CHECK(r.rec.count() == 3);
  for (auto& l : locks) {  // every mutex was really released
    CHECK(l->underlying().try_lock());
    l->underlying().unlock();
  }
  (void)r.rec.take();

  // With a throwing handler the lock that did not fit is released before the exception leaves.
  for (unsigned i = 0; i < cap; ++i) locks[i]->lock();
  {
    faultsafe::scoped_violation_handler thrower{&refuse};
    CHECK_THROWS_AS(locks[cap]->lock(), refused);
  }
  CHECK(held_depth() == cap);
  CHECK(locks[cap]->underlying().try_lock());
  locks[cap]->underlying().unlock();
  for (unsigned i = 0; i < cap; ++i) locks[i]->unlock();
  CHECK(held_depth() == 0);
  expect_none(r.rec);
}

TEST_CASE("checks_off at run time: inversions go unseen and nothing is recorded") {
  recording r;
  ranked_mutex<20, order_test::spin_mutex, checks_off> high;
  ranked_mutex<10, order_test::spin_mutex, checks_off> low;
  high.lock();
  low.lock();
  CHECK(held_depth() == 0);
  low.unlock();
  high.unlock();
  faultsafe::lock_in_order(low, high);
  high.unlock();
  low.unlock();
  expect_none(r.rec);
}

TEST_CASE("exclusive_guard and shared_guard record the caller's location") {
  recording r;
  ranked_mutex<20, order_test::spin_shared_mutex, checks_on> s("s");
  ranked_mutex<10, order_test::spin_mutex, checks_on> low("low");
  {
    faultsafe::shared_guard g(s);
    CHECK(faultsafe::detail::this_thread_held().e[0].req.mode == faultsafe::detail::hold_mode::shared);
    faultsafe::exclusive_guard g2(low);  // inversion
  }
  const auto v = expect_one(r.rec, violation_kind::rank_inversion, {"s", "low"});
  CHECK(v.report().find("order_ranked_test.cpp:") != std::string::npos);
  CHECK(v.report().find("ranked_mutex.hpp") == std::string::npos);
}
