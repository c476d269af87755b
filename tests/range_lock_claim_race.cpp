// range_lock fast holder races, made deterministic by fault injection (the whole executable is
// built with FAULTSAFE_FAULT_INJECTION=1): a narrow request on the fast holder path is stalled
// (range_claim_stall) after its checks and before its claim while a conflicting range enters, or
// (range_claimed_stall) after its claim and before its re-check while a holder of the leaf lock moves
// it into the tree. Its re-check must catch the conflict: it is never granted beside a conflicting
// range, and a request it was moved in front of (never having been granted to its caller) goes first.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include <faultsafe/detail/fault_injection.hpp>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;
namespace fi = faultsafe::fault_injection;

namespace {
constexpr std::uint64_t seg = 256, cell = seg / 16;  // segment_shift 8: 16-byte cells

/// A lock with 256-byte segments whose first shard's readers are on the tree path, a watchdog, and
/// `point` armed to stall the first hit of activity `ca` (the claimer's) for up to 30 s.
struct claim_setup {
  range_lock l;
  rl_test::watchdog wd;
  activity_id ca = new_activity();
  fi::scoped_schedule s;
  claim_setup(const char* name, fi::point point)
      : l(name, rank::attr_range, 8), wd(name, std::chrono::seconds(60)), s(point, {.fail_nth = 1, .stall = 30s, .only_activity = ca}) {
    range_guard warm(l, 0, 1, lock_mode::exclusive);  // tree path: the shard's readers go slow
  }
};
}  // namespace

static_assert(fi::enabled, "built with FAULTSAFE_FAULT_INJECTION=1");

TEST_CASE("a conflicting range that enters between the fast holder's checks and its claim: it queues") {
  claim_setup cs("claim race", fi::point::range_claim_stall);
  range_lock& l = cs.l;
  std::atomic<bool> c_granted{false};
  std::thread c([&] {
    activity_scope as(cs.ca);
    range_guard g(l, cell, cell, lock_mode::exclusive);  // shard 0 empty: checks pass, then the stall
    c_granted = true;
  });
  REQUIRE(fi::wait_stalled(fi::point::range_claim_stall, 1, 20s));
  rl_test::event m_held, m_release;
  std::thread m([&] {  // a wide range (never on the fast path) over c's cell: in the tree, in the cells
    range_guard g(l, cell + 4, seg, lock_mode::exclusive);
    m_held.set();
    CHECK(m_release.wait());
  });
  REQUIRE(m_held.wait());
  fi::release(fi::point::range_claim_stall);
  REQUIRE(rl_test::wait_until_waiting(l, cell, lock_mode::exclusive));  // c claimed, saw m, queued
  CHECK_FALSE(c_granted.load());
  CHECK(l.check_invariants());
  m_release.set();
  m.join();
  c.join();
  CHECK(c_granted.load());
  CHECK(fi::fires(fi::point::range_claim_stall) == 1);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("a claimed fast holder moved into the tree before its re-check by a conflicting request: it goes behind it") {
  claim_setup cs("claimed race", fi::point::range_claimed_stall);
  range_lock& l = cs.l;
  std::atomic<int> order{0};
  int c_at = -1, w_at = -1;
  std::thread c([&] {
    activity_scope as(cs.ca);
    range_guard g(l, cell, cell, lock_mode::exclusive);  // claims, then the stall
    c_at = order.fetch_add(1);
  });
  REQUIRE(fi::wait_stalled(fi::point::range_claimed_stall, 1, 20s));
  std::thread w([&] {  // moves c into the tree (granted, as far as w can tell), then waits for it
    range_guard g(l, cell + 4, 1, lock_mode::exclusive);
    w_at = order.fetch_add(1);
  });
  REQUIRE(rl_test::wait_until_waiting(l, cell + 4, lock_mode::exclusive));
  fi::release(fi::point::range_claimed_stall);  // c re-checks: w's range is in its cell; c leaves, queues
  w.join();
  c.join();
  CHECK(w_at == 0);  // c was never granted to its caller: w, which queued while c was in the tree, first
  CHECK(c_at == 1);
  CHECK(fi::fires(fi::point::range_claimed_stall) == 1);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

TEST_CASE("a claimed fast holder moved into the tree before its re-check by a disjoint request: both held") {
  claim_setup cs("claimed, disjoint", fi::point::range_claimed_stall);
  range_lock& l = cs.l;
  rl_test::event c_held, c_release;
  std::thread c([&] {
    activity_scope as(cs.ca);
    range_guard g(l, cell, cell, lock_mode::exclusive);  // claims, then the stall
    c_held.set();
    CHECK(c_release.wait());
  });
  REQUIRE(fi::wait_stalled(fi::point::range_claimed_stall, 1, 20s));
  rl_test::event o_held, o_release;
  std::thread o([&] {  // same shard, another cell: moves c into the tree and is granted beside it
    range_guard g(l, 3 * cell, 1, lock_mode::exclusive);
    o_held.set();
    CHECK(o_release.wait());
  });
  REQUIRE(o_held.wait());
  fi::release(fi::point::range_claimed_stall);  // c re-checks: nothing in its cells: granted (in the tree)
  REQUIRE(c_held.wait());
  CHECK_FALSE(range_guard(l, cell + 1, 1, lock_mode::shared, std::try_to_lock).owns_lock());
  CHECK(l.holders().size() == 2);
  CHECK(l.check_invariants());
  c_release.set();  // released through the tree
  c.join();
  CHECK(range_guard(l, cell + 1, 1, lock_mode::exclusive, std::try_to_lock).owns_lock());
  o_release.set();
  o.join();
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}
