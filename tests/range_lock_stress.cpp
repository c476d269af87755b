// range_lock exclusion stress: threads take random ranges in random modes (blocking, timed and
// try), and check a shadow array of per-byte reader/writer counters for any forbidden overlap.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {
constexpr std::uint64_t space = 512;

struct shadow {
  std::atomic<int> readers[space]{};
  std::atomic<int> writers[space]{};
  unsigned char data[space]{};  // written by exclusive holders only: TSan sees any race
};

void run_stress(int threads, int iterations, self_conflict policy) {
  range_lock l("stress");
  shadow sh;
  std::atomic<long> bad{0}, granted{0}, timed_out{0};
  rl_test::watchdog wd("exclusion stress", std::chrono::seconds(100));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(1234 + static_cast<unsigned>(t));
      const range_options opt{0, policy};
      for (int i = 0; i < iterations; ++i) {
        const std::uint64_t off = rng() % space;
        std::uint64_t len = 1 + rng() % 48;
        if (rng() % 64 == 0) len = to_end;  // to the end of the space
        const lock_mode m = rng() % 4 == 0 ? lock_mode::exclusive : lock_mode::shared;
        const std::uint64_t end = len == to_end ? space : std::min<std::uint64_t>(space, off + len);
        const int how = static_cast<int>(rng() % 8);
        std::optional<range_guard> g;
        if (how == 0)
          g.emplace(l, off, len, m, std::try_to_lock, opt);
        else if (how == 1)
          g.emplace(l, off, len, m, std::chrono::microseconds(rng() % 200), opt);
        else
          g.emplace(l, off, len, m, opt);
        if (!g->owns_lock()) {
          ++timed_out;
          continue;
        }
        ++granted;
        for (std::uint64_t b = off; b < end; ++b) {
          if (m == lock_mode::exclusive) {
            if (sh.writers[b].fetch_add(1) != 0 || sh.readers[b].load() != 0) ++bad;
            sh.data[b] = static_cast<unsigned char>(i);
          } else {
            if (sh.writers[b].load() != 0) ++bad;
            sh.readers[b].fetch_add(1);
            volatile unsigned char x = sh.data[b];
            (void)x;
          }
        }
        if (rng() % 16 == 0) std::this_thread::yield();
        for (std::uint64_t b = off; b < end; ++b) {
          if (m == lock_mode::exclusive) {
            if (sh.readers[b].load() != 0) ++bad;
            sh.writers[b].fetch_sub(1);
          } else {
            if (sh.writers[b].load() != 0) ++bad;
            sh.readers[b].fetch_sub(1);
          }
        }
        if (t == 0 && i % 512 == 0 && !l.check_invariants()) ++bad;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(granted.load() > 0);
  CHECK(granted.load() + timed_out.load() == static_cast<long>(threads) * iterations);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
  MESSAGE("granted " << granted.load() << ", not granted (try/timed) " << timed_out.load());
}
}  // namespace

TEST_CASE("exclusion stress: 4 threads, random ranges and modes, self_conflict::wait") {
  run_stress(4, 20000 / rl_test::slow, self_conflict::wait);
}

TEST_CASE("exclusion stress with self_conflict::grant (distinct owners: no bypass may break exclusion)") {
  run_stress(3, 10000 / rl_test::slow, self_conflict::grant);
}
