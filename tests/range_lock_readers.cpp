// range_lock under a reader-heavy load: reader threads take overlapping shared ranges without pause
// (the readers' fast path: reader slots, no leaf lock) while writer threads take exclusive ranges over
// the same bytes (narrow, wide, blocking, timed and try). Checks that no reader ever overlaps a writer
// (per-64-byte-block reader/writer counters), that every writer gets in within a bound while the
// readers keep coming (no writer starvation), and that diagnostics running concurrently (holders(),
// which moves fast readers into the trees) break nothing.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {
constexpr std::uint64_t block = 64;    // every range is block-aligned: one counter pair per block
constexpr std::uint64_t blocks = 512;  // 32 KiB: one 64 KiB segment by default, 1,024 with 32-byte ones

struct shadow {
  std::atomic<int> readers[blocks]{};
  std::atomic<int> writers[blocks]{};
  unsigned char data[blocks]{};  // written by exclusive holders only: TSan sees any race
};

struct stats {
  std::atomic<long> bad{0}, reads{0}, writes{0}, not_granted{0};
  std::atomic<long long> max_wait_us{0};
  void note_wait(std::chrono::steady_clock::duration d) {
    const long long us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
    long long m = max_wait_us.load();
    while (us > m && !max_wait_us.compare_exchange_weak(m, us)) {
    }
  }
};

void read_loop(range_lock& l, shadow& sh, stats& st, const std::atomic<bool>& stop, unsigned seed) {
  std::mt19937_64 rng(seed);
  while (!stop.load(std::memory_order_relaxed)) {
    // Mostly the hot first eighth (every reader overlaps every other), sometimes anywhere.
    const std::uint64_t span = rng() % 8 == 0 ? blocks : blocks / 8;
    const std::uint64_t b0 = rng() % span, n = 1 + rng() % std::min<std::uint64_t>(16, blocks - b0);
    range_guard g(l, b0 * block, n * block, lock_mode::shared);
    for (std::uint64_t b = b0; b < b0 + n; ++b) {
      sh.readers[b].fetch_add(1);
      if (sh.writers[b].load() != 0) ++st.bad;
      volatile unsigned char x = sh.data[b];
      (void)x;
    }
    for (std::uint64_t b = b0; b < b0 + n; ++b) {
      if (sh.writers[b].load() != 0) ++st.bad;
      sh.readers[b].fetch_sub(1);
    }
    ++st.reads;
  }
}

void write_loop(range_lock& l, shadow& sh, stats& st, int iterations, unsigned seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < iterations; ++i) {
    std::uint64_t b0 = rng() % (blocks / 8), n = 1 + rng() % 8;
    if (rng() % 16 == 0) b0 = 0, n = blocks;  // the whole file: wide with small segments
    const int how = static_cast<int>(rng() % 8);
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<range_guard> g;
    if (how == 0)
      g.emplace(l, b0 * block, n * block, lock_mode::exclusive, std::try_to_lock);
    else if (how == 1)
      g.emplace(l, b0 * block, n * block, lock_mode::exclusive, std::chrono::microseconds(rng() % 500));
    else
      g.emplace(l, b0 * block, n * block, lock_mode::exclusive);
    if (how >= 2) st.note_wait(std::chrono::steady_clock::now() - t0);
    if (!g->owns_lock()) {
      ++st.not_granted;
      continue;
    }
    for (std::uint64_t b = b0; b < b0 + n; ++b) {
      if (sh.writers[b].fetch_add(1) != 0 || sh.readers[b].load() != 0) ++st.bad;
      sh.data[b] = static_cast<unsigned char>(i);
    }
    std::this_thread::yield();  // let readers pile up behind this writer
    for (std::uint64_t b = b0; b < b0 + n; ++b) {
      if (sh.readers[b].load() != 0) ++st.bad;
      sh.writers[b].fetch_sub(1);
    }
    ++st.writes;
  }
}

void run(int readers, int writers, int iterations) {
  range_lock l("readers stress");
  shadow sh;
  stats st;
  std::atomic<bool> stop{false};
  rl_test::watchdog wd("reader-heavy stress", std::chrono::seconds(100));
  std::vector<std::thread> rs, ws;
  for (int r = 0; r < readers; ++r) rs.emplace_back([&, r] { read_loop(l, sh, st, stop, 100 + static_cast<unsigned>(r)); });
  std::thread diag([&] {  // holders() migrates fast readers into the trees while everyone runs
    while (!stop.load()) {
      for (const auto& h : l.holders())
        if (h.length == 0) ++st.bad;
      if (!l.check_invariants()) ++st.bad;
      std::this_thread::sleep_for(1ms);
    }
  });
  for (int w = 0; w < writers; ++w) ws.emplace_back([&, w] { write_loop(l, sh, st, iterations, 200 + static_cast<unsigned>(w)); });
  for (auto& t : ws) t.join();  // the readers never pause: every writer got in despite them
  stop = true;
  for (auto& t : rs) t.join();
  diag.join();
  CHECK(st.bad.load() == 0);
  CHECK(st.reads.load() > 0);
  CHECK(st.writes.load() > 0);
  CHECK(st.writes.load() + st.not_granted.load() == static_cast<long>(writers) * iterations);
  // No starvation: the longest blocking writer wait is bounded (generously: a loaded 2-core machine).
  CHECK(st.max_wait_us.load() < 10'000'000LL * rl_test::slow);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
  MESSAGE("reads " << st.reads.load() << ", writes " << st.writes.load() << ", not granted (try/timed) "
                   << st.not_granted.load() << ", longest blocking writer wait " << st.max_wait_us.load() << " us");
}
}  // namespace

TEST_CASE("reader-heavy: 3 readers without pause, 1 writer; no overlap, the writer never starves") {
  run(3, 1, 3000 / rl_test::slow);
}

TEST_CASE("reader-heavy: 4 readers, 2 writers (narrow, whole-file, timed, try); no overlap, no starvation") {
  run(4, 2, 2000 / rl_test::slow);
}
