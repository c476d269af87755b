// The one lock-checking core (order/detail/lock_core.hpp) as the vm reader/writer locks use it: their
// holds forward the caller's source_location, so reports name the call site (never rw_lock.hpp), and
// a hold that cannot be recorded is released before the exception leaves.
#include "order_test_support.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "faultsafe/order/ranked_mutex.hpp"
#include "faultsafe/vm/detail/rw_lock.hpp"

using faultsafe::violation_kind;
using namespace order_test;  // recording, refuse, expect_one, ...

namespace {

std::size_t holders(const faultsafe::waitable& l) {
  std::vector<std::uint32_t> t;
  l.wait_holders(t);
  return t.size();
}

}  // namespace

TEST_CASE("vm holds report the caller's location, not rw_lock.hpp") {
  recording r;
  faultsafe::detail::vm_rw_lock<faultsafe::rank::region> region("region");
  faultsafe::detail::vm_rw_lock<faultsafe::rank::aspace_map> map("aspace map");
  {
    faultsafe::detail::vm_exclusive_hold held(region);
    const unsigned held_line = __LINE__ - 1;
    faultsafe::detail::vm_shared_hold wanted(map);  // rank 10 under rank 20: inversion (proceeds: one thread)
    const unsigned wanted_line = __LINE__ - 1;
    const auto v = expect_one(r.rec, violation_kind::rank_inversion, {"region", "aspace map"});
    const std::string text = v.report();
    CHECK_MESSAGE(text.find("order_core_test.cpp:" + std::to_string(held_line)) != std::string::npos, text);
    CHECK_MESSAGE(text.find("order_core_test.cpp:" + std::to_string(wanted_line)) != std::string::npos, text);
    CHECK_MESSAGE(text.find("rw_lock.hpp") == std::string::npos, text);
  }
  expect_none(r.rec);
  CHECK(holders(region) == 0);
  CHECK(holders(map) == 0);
}

TEST_CASE("vm lock: a hold that does not fit the stack is released when the handler throws") {
  recording r;
  constexpr unsigned cap = FAULTSAFE_MAX_HELD_LOCKS;
  std::vector<std::unique_ptr<faultsafe::ranked_mutex<0, spin_mutex, faultsafe::checks_on>>> fill;
  for (unsigned i = 0; i < cap; ++i)
    fill.push_back(std::make_unique<faultsafe::ranked_mutex<0, spin_mutex, faultsafe::checks_on>>("fill"));
  faultsafe::detail::vm_rw_lock<faultsafe::rank::region> region("region");
  for (const bool shared : {false, true}) {
    CAPTURE(shared);
    for (auto& l : fill) l->lock();  // the held-lock stack is full
    {
      faultsafe::scoped_violation_handler thrower{&refuse};
      if (shared)
        CHECK_THROWS_AS(region.lock_shared(), refused);
      else
        CHECK_THROWS_AS(region.lock(), refused);
    }
    for (auto& l : fill) l->unlock();
    // Not listed as a holder, so not left taken (a leaked hold would make the lock() below wait forever).
    REQUIRE(holders(region) == 0);
  }
  region.lock();  // and the lock is free
  CHECK(holders(region) == 1);
  region.unlock();
  expect_none(r.rec);
}
