// range_lock: locking and unlocking allocate nothing (the node lives in the guard). Counts every
// global operator new in the process during windows that do only range-lock work.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "range_lock_test_util.hpp"

namespace {
std::atomic<long> g_news{0};
}

// The replacements pair malloc with free, which is correct; GCC 12 at -O2 sees free() reached from
// inlined `new` expressions elsewhere and reports -Wmismatched-new-delete anyway (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic pop
#endif

using namespace faultsafe;
using namespace std::chrono_literals;

TEST_CASE("the counter sees allocations (self-test)") {
  const long before = g_news.load();
  static std::array<char, 100>* volatile sink;  // volatile: the new/delete pair cannot be elided
  sink = new std::array<char, 100>;
  delete sink;
  CHECK(g_news.load() == before + 1);
}

TEST_CASE("uncontended, shared-overlapping, try-fail, timed and ordered paths do not allocate") {
  range_lock l, m, u("unranked", 0);  // u: two ranges in one thread without rank reports
  { range_guard warm(l, 0, 1, lock_mode::shared); }  // thread record, held stack: first-use setup
  bool b_owned = true;
  const long before = g_news.load();
  for (int i = 0; i < 1000; ++i) {
    range_guard g(l, static_cast<std::uint64_t>(i) * 64, 64, i % 2 ? lock_mode::shared : lock_mode::exclusive);
  }
  {
    std::array<range_request, 3> r{{{&m, 0, 10, lock_mode::shared}, {&l, 0, 4096, lock_mode::shared}, {&l, 2048, 4096, lock_mode::exclusive}}};
    for (int i = 0; i < 100; ++i) {
      ordered_range_guards<3> o(r);
    }
  }
  {
    range_guard a(u, 0, 100, lock_mode::exclusive, 1s);
    range_guard b(u, 50, to_end, lock_mode::exclusive, std::try_to_lock);  // fails: no allocation either
    b_owned = b.owns_lock();
    a.unlock();
  }
  const long after = g_news.load();
  CHECK(after == before);
  CHECK_FALSE(b_owned);
}

TEST_CASE("contended lock (wait, park, wake, grant) does not allocate") {
  // A parked request records a wait-for-graph edge, whose scans use (thread-local, growing) buffers:
  // the allocation-free promise is for the lock itself, so measure it with the graph off.
  faultsafe::wait_graph::set_enabled(false);
  struct graph_back_on {
    ~graph_back_on() { faultsafe::wait_graph::set_enabled(true); }
  } back_on;
  range_lock l;
  rl_test::watchdog wd("noalloc contended", std::chrono::seconds(30));
  std::atomic<int> go{0}, done{0};
  std::thread t([&] {
    { range_guard warm(l, 1000, 1, lock_mode::shared); }
    go.store(1);
    while (go.load() != 2) std::this_thread::yield();
    for (int i = 0; i < 50; ++i) {
      range_guard g(l, 0, 100, lock_mode::exclusive);
    }
    done.store(1);
  });
  while (go.load() != 1) std::this_thread::yield();
  { range_guard warm(l, 2000, 1, lock_mode::shared); }
  const long before = g_news.load();
  {
    range_guard g(l, 50, 10, lock_mode::shared);
    go.store(2);
    std::this_thread::sleep_for(50ms);  // the other thread queues and parks behind us
  }
  for (int i = 0; i < 50; ++i) {
    range_guard g(l, 10, 10, lock_mode::shared);
  }
  while (done.load() != 1) std::this_thread::yield();
  const long after = g_news.load();
  t.join();
  CHECK(after == before);
}
