// FAULTSAFE_FAULT_INJECTION off (the default, and always in release builds): FAULTSAFE_INJECT(point)
// is the constant false, so the hooks wired into the library compile to nothing; arming a schedule
// through the always-present control API changes nothing, and no library path ever hits a point.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include <faultsafe/detail/fault_injection.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#if FAULTSAFE_FAULT_INJECTION
#  error "this test checks the default: injection off"
#endif

namespace fi = faultsafe::fault_injection;

// The hook is a constant expression: no load, no call, no branch survives.
static_assert(!FAULTSAFE_INJECT(page_in_error));
static_assert(!FAULTSAFE_INJECT(handler_exception));
static_assert(!FAULTSAFE_INJECT(no_such_point_is_even_looked_up));
static_assert(!fi::enabled);

using namespace faultsafe;

TEST_CASE("armed schedules are never hit when injection is compiled out") {
  for (std::size_t i = 0; i < fi::point_count; ++i) fi::arm(static_cast<fi::point>(i), {.fail_nth = 1, .every = 1, .probability = 1.0});
  path_namespace ns;
  ramfs fs({.name = "fi-off", .prefix = "/off", .ns = &ns});
  process p("p", {1000, 100}, &ns);
  auto fd = p.open("/off/f", O_CREAT | O_RDWR, 0644);
  REQUIRE(fd.ok());
  char buf[64] = "hello";
  CHECK(p.pwrite(*fd, buf, 5, 0).value() == 5);
  char back[8] = {};
  CHECK(p.pread(*fd, back, 5, 0).value() == 5);
  CHECK(std::string(back, 5) == "hello");
  CHECK(p.close(*fd).ok());
  for (std::size_t i = 0; i < fi::point_count; ++i) {
    CHECK(fi::hits(static_cast<fi::point>(i)) == 0);
    CHECK(fi::fires(static_cast<fi::point>(i)) == 0);
  }
  fi::disarm_all();
}

TEST_CASE("the control API itself: nth, every, probability with a seed, max_fires, stall and release") {
  using fi::point;
  fi::arm(point::page_in_error, {.fail_nth = 3});
  int fired_at = 0;
  for (int i = 1; i <= 10; ++i)
    if (fi::should_fail(point::page_in_error)) fired_at = fired_at ? -1 : i;
  CHECK(fired_at == 3);
  CHECK(fi::hits(point::page_in_error) == 10);
  fi::arm(point::page_in_error, {.every = 4, .max_fires = 2});
  int fires = 0;
  for (int i = 0; i < 40; ++i) fires += fi::should_fail(point::page_in_error);
  CHECK(fires == 2);
  // Probability: deterministic per seed, close to p over many hits.
  auto count = [](std::uint64_t seed) {
    fi::arm(point::handler_exception, {.probability = 0.25, .seed = seed});
    std::vector<bool> v;
    for (int i = 0; i < 4000; ++i) v.push_back(fi::should_fail(point::handler_exception));
    return v;
  };
  const auto a = count(7), b = count(7), c = count(8);
  CHECK(a == b);
  CHECK(a != c);
  const auto n = std::count(a.begin(), a.end(), true);
  CHECK(n > 800);
  CHECK(n < 1200);
  // Stall: the firing thread blocks until release().
  fi::arm(point::range_hold_stall, {.every = 1, .stall = std::chrono::seconds(30)});
  std::atomic<bool> back{false};
  std::thread t([&] {
    CHECK(fi::should_fail(point::range_hold_stall));
    back = true;
  });
  REQUIRE(fi::wait_stalled(point::range_hold_stall, 1, std::chrono::seconds(20)));
  CHECK(!back.load());
  fi::release(point::range_hold_stall);
  t.join();
  CHECK(back.load());
  fi::disarm_all();
  CHECK(!fi::should_fail(point::page_in_error));
}
