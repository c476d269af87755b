// The lock-order catalogue, in the spirit of the Linux kernel's locking self-tests: every sequence runs
// in ONE thread with a recording handler, one after another; nothing can hang because each inversion
// is a sequence of non-overlapping critical sections (the deadlock needs a second thread that this
// test never starts). Each case asserts the exact violation kind and that the report names the locks.
#include "order_test_support.hpp"

#include <memory>
#include <system_error>

#include "faultsafe/order/lock_graph.hpp"

using faultsafe::lock_class;
using faultsafe::violation_kind;
using order_test::expect_none;
using order_test::expect_one;

namespace {

using lock_t = faultsafe::tracked_mutex<order_test::spin_mutex, faultsafe::checks_on>;
using rw_lock_t = faultsafe::tracked_mutex<order_test::spin_shared_mutex, faultsafe::checks_on>;

// One set of fresh classes and locks per case, so cases never see each other's edges.
struct fixture {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler handler{rec.handler()};
  lock_class cA{"A"}, cB{"B"}, cC{"C"}, cD{"D"};
  lock_t A{cA}, B{cB}, C{cC}, D{cD};

  fixture() { faultsafe::set_this_thread_name("catalogue"); }
  ~fixture() { CHECK(order_test::held_depth() == 0); }
};

// L(x) then L(y), both released: the lockdep "xy" step.
template <class X, class Y>
void nest(X& x, Y& y) {
  x.lock();
  y.lock();
  y.unlock();
  x.unlock();
}

}  // namespace

TEST_CASE("AA: re-acquiring a held non-recursive lock is recursive_acquire, then resource_deadlock_would_occur") {
  fixture f;
  f.A.lock();
  try {
    f.A.lock();
    FAIL("AA returned");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::resource_deadlock_would_occur);
  }
  expect_one(f.rec, violation_kind::recursive_acquire, {"A"});
  CHECK(order_test::held_depth() == 1);  // the second acquisition took nothing
  f.A.unlock();
  expect_none(f.rec);
}

TEST_CASE("ABBA") {
  fixture f;
  nest(f.A, f.B);
  expect_none(f.rec);
  f.B.lock();
  f.A.lock();  // closes B -> A -> B; the handler returns, so the acquisition proceeds
  const auto v = expect_one(f.rec, violation_kind::order_cycle, {"A", "B"});
  f.A.unlock();
  f.B.unlock();
  // The report shows both edges, each with where it was first seen.
  REQUIRE(v.details.size() == 2);
  CHECK(v.details[0].find("new edge: 'B'") != std::string::npos);
  CHECK(v.details[1].find("known edge: 'A' (write) -> 'B' (write)") != std::string::npos);
  CHECK(v.details[1].find("first seen in thread 'catalogue'") != std::string::npos);
  CHECK(v.details[1].find("order_catalogue_test.cpp:") != std::string::npos);
  // Reported once: repeating the inversion stays quiet.
  f.B.lock();
  f.A.lock();
  f.A.unlock();
  f.B.unlock();
  expect_none(f.rec);
}

TEST_CASE("ABBCCA") {
  fixture f;
  nest(f.A, f.B);
  nest(f.B, f.C);
  expect_none(f.rec);
  nest(f.C, f.A);
  const auto v = expect_one(f.rec, violation_kind::order_cycle, {"A", "B", "C"});
  CHECK(v.details.size() == 3);
}

TEST_CASE("ABCABC") {
  fixture f;
  nest(f.A, f.B);
  nest(f.C, f.A);
  expect_none(f.rec);
  nest(f.B, f.C);
  expect_one(f.rec, violation_kind::order_cycle, {"A", "B", "C"});
}

TEST_CASE("ABBCCDDA") {
  fixture f;
  nest(f.A, f.B);
  nest(f.B, f.C);
  nest(f.C, f.D);
  expect_none(f.rec);
  nest(f.D, f.A);
  const auto v = expect_one(f.rec, violation_kind::order_cycle, {"A", "B", "C", "D"});
  CHECK(v.details.size() == 4);
}

TEST_CASE("ABCDBDDA: the cycle A-B-D, C is not on it") {
  fixture f;
  nest(f.A, f.B);
  nest(f.C, f.D);
  nest(f.B, f.D);
  expect_none(f.rec);
  nest(f.D, f.A);
  const auto v = expect_one(f.rec, violation_kind::order_cycle, {"A", "B", "D"});
  CHECK(v.report().find("'C'") == std::string::npos);
}

TEST_CASE("ABCDBCDA") {
  fixture f;
  nest(f.A, f.B);
  nest(f.C, f.D);
  nest(f.B, f.C);
  expect_none(f.rec);
  nest(f.D, f.A);
  expect_one(f.rec, violation_kind::order_cycle, {"A", "B", "C", "D"});
}

TEST_CASE("double unlock is unlock_not_held and leaves the mutex alone") {
  fixture f;
  f.A.lock();
  f.A.unlock();
  f.A.unlock();
  expect_one(f.rec, violation_kind::unlock_not_held, {"A"});
  CHECK(f.A.underlying().try_lock());  // still unlocked, not corrupted
  f.A.underlying().unlock();
}

TEST_CASE("unlocking a lock never taken is unlock_not_held") {
  fixture f;
  f.B.unlock();
  expect_one(f.rec, violation_kind::unlock_not_held, {"B"});
}

enum class mode { read, write };

void lock_in(rw_lock_t& l, mode m) { m == mode::read ? l.lock_shared() : l.lock(); }
void unlock_in(rw_lock_t& l, mode m) { m == mode::read ? l.unlock_shared() : l.unlock(); }

// The AB-BA step with a reader/writer lock A ("rwA"): A (in `first` mode) then B, released; then B
// then A (in `second` mode). Expects exactly one order_cycle naming both; returns it.
faultsafe::violation ab_then_ba(mode first, mode second) {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class cA{"rwA"}, cB{"B"};
  rw_lock_t A{cA};
  lock_t B{cB};
  lock_in(A, first);
  B.lock();
  B.unlock();
  unlock_in(A, first);
  B.lock();
  lock_in(A, second);
  auto v = expect_one(rec, violation_kind::order_cycle, {"rwA", "B"});
  unlock_in(A, second);
  B.unlock();
  return v;
}

TEST_CASE("read-write inversion: read A then B; B then write A") {
  const auto v = ab_then_ba(mode::read, mode::write);
  CHECK(v.report().find("'rwA' (read) -> 'B' (write)") != std::string::npos);
}

TEST_CASE("write-read inversion: write A then B; B then read A") {
  const auto v = ab_then_ba(mode::write, mode::read);
  CHECK(v.report().find("'B' (write) -> 'rwA' (read)") != std::string::npos);
}

TEST_CASE("read-read inversion through a non-recursive reader lock is reported (a queued writer deadlocks it)") {
  (void)ab_then_ba(mode::read, mode::read);
}

TEST_CASE("read-read on a non-recursive shared mutex is recursive_acquire, and proceeds") {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class cA{"rwA"};
  rw_lock_t A{cA};
  A.lock_shared();
  A.lock_shared();
  const auto v = expect_one(rec, violation_kind::recursive_acquire, {"rwA"});
  CHECK(v.summary.find("writer") != std::string::npos);
  CHECK(A.underlying().state() == 2);
  A.unlock_shared();
  A.unlock_shared();
  expect_none(rec);
  CHECK(A.underlying().state() == 0);
}

TEST_CASE("read then write on one shared mutex is recursive_acquire and throws") {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class cA{"rwA"};
  rw_lock_t A{cA};
  A.lock_shared();
  CHECK_THROWS_AS(A.lock(), std::system_error);
  expect_one(rec, violation_kind::recursive_acquire, {"rwA"});
  A.unlock_shared();
  CHECK(A.underlying().state() == 0);
}

TEST_CASE("negative: AB then AB") {
  fixture f;
  nest(f.A, f.B);
  nest(f.A, f.B);
  expect_none(f.rec);
  CHECK(faultsafe::lock_order_known(f.cA, f.cB));
  CHECK_FALSE(faultsafe::lock_order_known(f.cB, f.cA));
}

TEST_CASE("negative: ABC then AC") {
  fixture f;
  f.A.lock();
  f.B.lock();
  f.C.lock();
  f.C.unlock();
  f.B.unlock();
  f.A.unlock();
  nest(f.A, f.C);
  expect_none(f.rec);
  CHECK(faultsafe::lock_order_known(f.cA, f.cC));  // recorded for every held class
  CHECK(faultsafe::lock_order_known(f.cB, f.cC));
}

TEST_CASE("negative: out-of-order unlock") {
  fixture f;
  f.A.lock();
  f.B.lock();
  f.A.unlock();
  f.B.unlock();
  f.A.lock();
  f.B.lock();
  f.C.lock();
  f.B.unlock();
  f.A.unlock();
  f.C.unlock();
  expect_none(f.rec);
}

TEST_CASE("negative: try_lock records no edge into the lock it tries") {
  fixture f;
  nest(f.A, f.B);
  f.B.lock();
  REQUIRE(f.A.try_lock());
  f.A.unlock();
  f.B.unlock();
  expect_none(f.rec);
  CHECK_FALSE(faultsafe::lock_order_known(f.cB, f.cA));
}

TEST_CASE("two locks of one class nested are a one-class cycle; lock_in_order makes them legal") {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class inode{"inode"};
  lock_t x{inode}, y{inode};
  nest(x, y);
  const auto v = expect_one(rec, violation_kind::order_cycle, {"inode"});
  CHECK(v.summary.find("lock_in_order") != std::string::npos);
  faultsafe::lock_class other{"other"};
  lock_t z{other};
  {
    faultsafe::ordered_lock_guard g(y, x, z);
    CHECK(order_test::held_depth() == 3);
  }
  expect_none(rec);
  CHECK(order_test::held_depth() == 0);
}

TEST_CASE("a handler that throws leaves lock() with nothing taken") {
  fixture f;
  struct refused {};
  nest(f.A, f.B);
  faultsafe::scoped_violation_handler thrower{[](const faultsafe::violation&) { throw refused{}; }};
  f.B.lock();
  CHECK_THROWS_AS(f.A.lock(), refused);
  CHECK(order_test::held_depth() == 1);
  CHECK(f.A.underlying().try_lock());  // A was not taken
  f.A.underlying().unlock();
  f.B.unlock();
}

TEST_CASE("forget() removes a class's edges; the class learns anew") {
  fixture f;
  nest(f.A, f.B);
  REQUIRE(faultsafe::lock_order_known(f.cA, f.cB));
  f.cA.forget();
  CHECK_FALSE(faultsafe::lock_order_known(f.cA, f.cB));
  nest(f.B, f.A);  // would close a cycle had A -> B survived
  expect_none(f.rec);
  CHECK(faultsafe::lock_order_known(f.cB, f.cA));
  nest(f.A, f.B);
  expect_one(f.rec, violation_kind::order_cycle, {"A", "B"});
}

TEST_CASE("forget() of the later class removes the edge into it from the earlier class's warm set") {
  fixture f;
  nest(f.A, f.B);  // A -> B learnt: A's successor set now answers "B" without the graph mutex
  nest(f.A, f.B);
  f.cB.forget();
  CHECK_FALSE(faultsafe::lock_order_known(f.cA, f.cB));
  nest(f.B, f.A);  // legal now: B -> A
  expect_none(f.rec);
  nest(f.A, f.B);  // a stale warm entry A -> B would let this inversion through
  expect_one(f.rec, violation_kind::order_cycle, {"A", "B"});
}

TEST_CASE("a class ordered before hundreds of others: every edge warm, every inversion still reported") {
  // Grows the earlier class's successor set through several tables, and forgets some of its
  // successors (tombstones, compaction) on the way.
  fixture f;
  std::vector<std::unique_ptr<lock_class>> classes;
  std::vector<std::unique_ptr<lock_t>> locks;
  constexpr int n = 300;
  for (int i = 0; i < n; ++i) {
    classes.push_back(std::make_unique<lock_class>("later " + std::to_string(i)));
    locks.push_back(std::make_unique<lock_t>(*classes.back()));
  }
  for (int round = 0; round < 2; ++round)  // learn, then the warm path
    for (auto& l : locks) nest(f.A, *l);
  for (int i = 0; i < n; i += 3) classes[static_cast<std::size_t>(i)]->forget();
  for (int i = 0; i < n; ++i) {
    CHECK(faultsafe::lock_order_known(f.cA, *classes[static_cast<std::size_t>(i)]) == (i % 3 != 0));
    nest(f.A, *locks[static_cast<std::size_t>(i)]);  // relearnt where forgotten
  }
  expect_none(f.rec);
  for (int i = 0; i < n; i += 7) {
    nest(*locks[static_cast<std::size_t>(i)], f.A);
    expect_one(f.rec, violation_kind::order_cycle, {"A", "later " + std::to_string(i)});
  }
}

TEST_CASE("a class made at run time and destroyed takes its edges with it; ids are never reused") {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class keep{"keep"};
  lock_t k{keep};
  std::uint32_t old_id = 0;
  {
    lock_class temp{"temp"};
    old_id = temp.id();
    lock_t t{temp};
    nest(k, t);
    CHECK(faultsafe::lock_order_known(keep, temp));
  }
  lock_class again{"temp"};
  CHECK(again.id() > old_id);
  lock_t t2{again};
  nest(t2, k);  // the destroyed class's edge keep -> temp must not make this a cycle
  expect_none(rec);
}

TEST_CASE("ranked tracked locks: the rank rule and the graph both apply") {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class region{"region"}, range{"attr range"};
  lock_t r{region, faultsafe::rank::region}, a{range, faultsafe::rank::attr_range};
  nest(r, a);
  expect_none(rec);
  a.lock();
  r.lock();
  auto seen = rec.take();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].kind == violation_kind::rank_inversion);
  CHECK(seen[1].kind == violation_kind::order_cycle);
  r.unlock();
  a.unlock();
}

TEST_CASE("releasing in the wrong mode is unlock_not_held and leaves the mutex alone") {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h{rec.handler()};
  lock_class cA{"rwA"};
  rw_lock_t A{cA};
  A.lock();
  A.unlock_shared();
  expect_one(rec, violation_kind::unlock_not_held, {"rwA"});
  CHECK(A.underlying().state() == -1);  // still write-locked
  CHECK(order_test::held_depth() == 1);
  A.unlock();
  A.lock_shared();
  A.unlock();
  expect_one(rec, violation_kind::unlock_not_held, {"rwA"});
  CHECK(A.underlying().state() == 1);
  A.unlock_shared();
  expect_none(rec);
  CHECK(order_test::held_depth() == 0);
}
