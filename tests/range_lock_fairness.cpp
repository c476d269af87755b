// range_lock fairness: FIFO among overlapping requests, no starvation of writers behind readers
// (or readers behind writers), and requests that overlap nothing pending are never held up.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "range_lock_test_util.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {
/// Whether holders() lists [off, off + len) as granted to owner a on thread tid in mode m.
bool listed_as(const range_lock& l, std::uint64_t off, std::uint64_t len, activity_id a, std::uint32_t tid, lock_mode m) {
  bool listed = false;
  for (const auto& h : l.holders())
    if (h.offset == off && h.length == len && h.granted) listed = h.owner == a && h.thread_id == tid && h.mode == m;
  return listed;
}

/// Joins the workers while another thread runs check_invariants() and holders() on l (a failed check
/// counts in `bad`), then checks the run: nothing counted in `bad`, something granted, l empty.
void join_under_diagnostics(range_lock& l, std::vector<std::thread>& workers, std::atomic<long>& bad,
                            const std::atomic<long>& granted) {
  std::atomic<bool> stop{false};
  std::thread diag([&] {
    while (!stop.load()) {
      if (!l.check_invariants()) ++bad;
      (void)l.holders();
      std::this_thread::yield();
    }
  });
  for (auto& t : workers) t.join();
  stop = true;
  diag.join();
  CHECK(bad.load() == 0);
  CHECK(granted.load() > 0);
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}
}  // namespace

TEST_CASE("a waiting writer holds back later overlapping readers, but not disjoint ones") {
  range_lock l;
  rl_test::watchdog wd("fifo", std::chrono::seconds(30));
  rl_test::event held, release, w_granted;
  std::thread reader([&] {
    range_guard g(l, 0, 100, lock_mode::shared);
    held.set();
    release.wait();
  });
  REQUIRE(held.wait());
  std::thread writer([&] {
    range_guard w(l, 40, 20, lock_mode::exclusive);
    w_granted.set();
  });
  REQUIRE(rl_test::wait_until_waiting(l, 40, lock_mode::exclusive));
  bool late_overlapping = true, disjoint_shared = false, disjoint_excl = false, before_writer = false;
  std::thread probe([&] {
    late_overlapping = range_guard(l, 50, 1, lock_mode::shared, std::try_to_lock).owns_lock();
    before_writer = range_guard(l, 0, 40, lock_mode::shared, std::try_to_lock).owns_lock();  // no overlap with writer
    disjoint_shared = range_guard(l, 200, 10, lock_mode::shared, std::try_to_lock).owns_lock();
    disjoint_excl = range_guard(l, 60, 40, lock_mode::shared, std::try_to_lock).owns_lock();
  });
  probe.join();
  CHECK_FALSE(late_overlapping);  // queues behind the writer: FIFO
  CHECK(before_writer);
  CHECK(disjoint_shared);
  CHECK(disjoint_excl);
  CHECK_FALSE(w_granted.is_set());
  release.set();
  CHECK(w_granted.wait());
  reader.join();
  writer.join();
  CHECK(l.holders().empty());
}

namespace {
// `streamers` threads loop taking `stream_mode` on [0, 100) until stopped; a single request in
// `probe_mode` on [40, 20) must get in while at most one operation per streamer completes after it
// has been seen queued (those granted before it may finish; none granted after it may).
void no_starvation(lock_mode stream_mode, lock_mode probe_mode, int rounds) {
  range_lock l;
  rl_test::watchdog wd("no starvation", std::chrono::seconds(60));
  constexpr int streamers = 3;
  std::atomic<bool> stop{false};
  std::atomic<long> ops{0}, disjoint_ops{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < streamers; ++i)
    ts.emplace_back([&] {
      while (!stop.load()) {
        {
          range_guard g(l, 0, 100, stream_mode);
          std::this_thread::yield();
        }
        ops.fetch_add(1);
      }
    });
  std::thread disjoint([&] {  // a disjoint range keeps going whatever happens on [0, 100)
    while (!stop.load()) {
      range_guard g(l, 1000, 10, lock_mode::exclusive);
      disjoint_ops.fetch_add(1);
    }
  });
  int seen_rounds = 0;
  for (int r = 0; r < rounds; ++r) {
    std::atomic<long> at_grant{-1};
    rl_test::event go;
    std::thread probe([&] {
      range_guard g(l, 40, 20, probe_mode);
      at_grant = ops.load();
      go.set();
    });
    // Seen queued (or already granted: then the bound below holds trivially).
    const bool seen = rl_test::wait_until_waiting(l, 40, probe_mode, std::chrono::milliseconds(200));
    const long c0 = ops.load();
    REQUIRE(go.wait());
    probe.join();
    if (seen) {
      ++seen_rounds;
      CHECK(at_grant.load() - c0 <= streamers);
    }
  }
  CHECK(seen_rounds > 0);  // the bound was actually exercised
  const long d0 = disjoint_ops.load();
  while (disjoint_ops.load() < d0 + 10) std::this_thread::yield();
  stop = true;
  for (auto& t : ts) t.join();
  disjoint.join();
  CHECK(ops.load() > 0);
}
}  // namespace

TEST_CASE("a writer behind a continuous stream of overlapping readers gets in") {
  no_starvation(lock_mode::shared, lock_mode::exclusive, 30);
}
TEST_CASE("a reader behind a continuous stream of writers gets in") {
  no_starvation(lock_mode::exclusive, lock_mode::shared, 30);
}

// The exclusive fast path (one CAS on an idle shard's leaf-lock word, the node outside the tree until
// a holder of that lock moves it in). A first exclusive range goes through the tree and switches the
// shard's readers to the tree path; after its release the shard is idle, so the next exclusive
// request in it takes the fast path. Its state transitions: moved into the tree by a later waiter
// (seen with its owner and thread), released through the tree in FIFO order, and the fast path taken
// again once the shard is idle.
TEST_CASE("exclusive fast path: a fast holder, queued waiters behind it, FIFO hand-over, then fast again") {
  range_lock l("fast x");
  rl_test::watchdog wd("exclusive fast path", std::chrono::seconds(30));
  { range_guard warm(l, 0, 10, lock_mode::exclusive); }  // tree path: the shard's readers go slow
  CHECK(l.holders().empty());
  for (int round = 0; round < 4; ++round) {
    // Rounds 0-2: an exclusive fast holder; round 3: a shared one (the shard's readers are on the
    // tree path: a writer came since the last re-arm), which a writer queues behind all the same.
    const lock_mode holder_mode = round < 3 ? lock_mode::exclusive : lock_mode::shared;
    rl_test::event held, release;
    const activity_id a = new_activity();
    std::uint32_t holder_tid = 0;
    std::thread holder([&] {
      activity_scope s(a);
      holder_tid = this_thread_id();
      range_guard g(l, 0, 100, holder_mode);  // the fast path (the shard is idle)
      held.set();
      release.wait();
    });
    REQUIRE(held.wait());
    std::atomic<int> order{0};
    int w_at = -1, r_at = -1;
    std::thread writer([&] {
      range_guard w(l, 40, 20, lock_mode::exclusive);  // moves the holder into the tree, then queues
      w_at = order.fetch_add(1);
      std::this_thread::yield();
    });
    REQUIRE(rl_test::wait_until_waiting(l, 40, lock_mode::exclusive));
    std::thread reader([&] {  // arrives after the writer, overlaps it: queues behind it
      range_guard r(l, 50, 5, lock_mode::shared);
      r_at = order.fetch_add(1);
    });
    REQUIRE(rl_test::wait_until_waiting(l, 50, lock_mode::shared));
    // A try-lock against the holder fails (it sees the holder as a granted node), and the holder is
    // listed with its owner, thread and mode.
    CHECK_FALSE(range_guard(l, 0, 1, lock_mode::exclusive, std::try_to_lock).owns_lock());
    CHECK(range_guard(l, 30, 1, lock_mode::shared, std::try_to_lock).owns_lock() ==
          (holder_mode == lock_mode::shared));  // before the writer's range: only the holder's
    CHECK(listed_as(l, 0, 100, a, holder_tid, holder_mode));
    CHECK(l.check_invariants());
    CHECK(order.load() == 0);
    release.set();
    holder.join();
    writer.join();
    reader.join();
    CHECK(w_at == 0);  // FIFO: the writer that queued first is granted first
    CHECK(r_at == 1);
    CHECK(l.holders().empty());
    CHECK(l.check_invariants());
  }
  // Idle again: fast holders that nobody sees are granted and released without the tree, one after
  // the other, and exclude each other and overlapping readers meanwhile.
  for (int i = 0; i < 100; ++i) {
    range_guard g(l, 0, 100, lock_mode::exclusive);
    bool probe_got = true;
    std::thread probe([&] { probe_got = range_guard(l, 99, 1, lock_mode::shared, std::try_to_lock).owns_lock(); });
    probe.join();
    CHECK_FALSE(probe_got);
  }
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

// Fast exclusive holders released concurrently with the lock holders that move them into the tree
// (try-locks, holders(), other requests of the same shard, wide ones with small segments): no two
// overlapping exclusive holders ever coexist (per-byte counters), and everything ends empty.
TEST_CASE("exclusive fast path under concurrent take-overs: exclusion holds") {
  range_lock l("fast x stress");
  rl_test::watchdog wd("exclusive fast path stress", std::chrono::seconds(100));
  { range_guard warm(l, 0, 10, lock_mode::exclusive); }
  std::atomic<int> cell[100]{};
  std::atomic<long> bad{0}, granted{0};
  const auto hold = [&](const range_guard& g) {
    const auto b = g.offset(), e = b + g.length();
    for (auto x = b; x < e; ++x)
      if (cell[x].fetch_add(1) != 0) ++bad;
    std::this_thread::yield();
    for (auto x = b; x < e; ++x) cell[x].fetch_sub(1);
    ++granted;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 3000 / rl_test::slow; ++i) {
        std::optional<range_guard> g;
        const auto off = static_cast<std::uint64_t>((i * 13 + t * 31) % 90);
        if ((i + t) % 7 == 0)
          g.emplace(l, off, 10, lock_mode::exclusive, std::try_to_lock);
        else if (i % 11 == 0)
          g.emplace(l, 0, 100, lock_mode::exclusive);
        else
          g.emplace(l, off, 10, lock_mode::exclusive);
        if (g->owns_lock()) hold(*g);
      }
    });
  join_under_diagnostics(l, ts, bad, granted);
}

// The fast holder beside other ranges: a narrow request whose shard holds other ranges, none of them
// in the cells (1/16 of a segment) of its extent that could conflict, takes the fast holder path
// (the segment size is set here, so the cells are the same in the sharded build). Everyone still
// sees it once a holder of the leaf lock moves it into the tree: a conflicting writer queues behind
// it (FIFO hand-over), try-locks fail against it, holders() lists it; the ranges around it (narrow
// ones in both segments of its shard, a shared wide one) still exclude what they conflict with.
TEST_CASE("fast holder in a gap between held ranges: seen, queued behind, FIFO, exclusion") {
  constexpr std::uint64_t seg = 256, cell = seg / 16;  // segment_shift 8: 16-byte cells
  range_lock l("gap", rank::attr_range, 8);
  rl_test::watchdog wd("fast holder in a gap", std::chrono::seconds(30));
  { range_guard warm(l, 0, 1, lock_mode::exclusive); }  // tree path: the shard's readers go slow
  rl_test::event bg_held, bg_release;
  std::thread bg([&] {  // the ranges around the gaps, held by one thread: one ordered helper
    const range_request rq[] = {{&l, 0, cell, lock_mode::exclusive},                    // shard 0, cell 0
                                {&l, 2 * cell, cell, lock_mode::shared},                // shard 0, cell 2
                                {&l, 16 * seg + 4 * cell, cell, lock_mode::exclusive},  // shard 0 again, cell 4
                                {&l, seg - 8, 16, lock_mode::shared}};  // wide: cell 15 of shard 0, cell 0 of 1
    ordered_range_guards<4> g(rq);
    bg_held.set();
    CHECK(bg_release.wait());
  });
  REQUIRE(bg_held.wait());
  CHECK(l.check_invariants());
  const auto try_get = [&](std::uint64_t off, std::uint64_t len, lock_mode m) {
    return range_guard(l, off, len, m, std::try_to_lock).owns_lock();
  };
  for (int round = 0; round < 3; ++round) {
    const lock_mode holder_mode = round == 1 ? lock_mode::shared : lock_mode::exclusive;
    rl_test::event held, release;
    const activity_id a = new_activity();
    std::uint32_t holder_tid = 0;
    std::thread holder([&] {
      activity_scope s(a);
      holder_tid = this_thread_id();
      range_guard g(l, cell, cell, holder_mode);  // cell 1: a gap
      held.set();
      CHECK(release.wait());
    });
    REQUIRE(held.wait());
    std::atomic<int> order{0};
    int w_at = -1, r_at = -1;
    std::thread writer([&] {
      range_guard w(l, cell + 4, 4, lock_mode::exclusive);  // moves the holder into the tree, then queues
      w_at = order.fetch_add(1);
    });
    REQUIRE(rl_test::wait_until_waiting(l, cell + 4, lock_mode::exclusive));
    std::thread reader([&] {  // after the writer, overlapping it: queues behind it
      range_guard r(l, cell + 6, 1, lock_mode::shared);
      r_at = order.fetch_add(1);
    });
    REQUIRE(rl_test::wait_until_waiting(l, cell + 6, lock_mode::shared));
    CHECK_FALSE(try_get(cell, 1, lock_mode::exclusive));
    CHECK(try_get(cell + 1, 1, lock_mode::shared) == (holder_mode == lock_mode::shared));
    CHECK(try_get(3 * cell, 1, lock_mode::exclusive));  // another gap
    CHECK(try_get(2 * cell + 1, 1, lock_mode::shared));
    CHECK_FALSE(try_get(2 * cell + 1, 1, lock_mode::exclusive));
    CHECK_FALSE(try_get(16 * seg + 4 * cell, 1, lock_mode::shared));
    CHECK(try_get(16 * seg + 5 * cell, 1, lock_mode::exclusive));
    CHECK_FALSE(try_get(seg - 1, 1, lock_mode::exclusive));  // the wide range, in shard 0
    CHECK_FALSE(try_get(seg, 1, lock_mode::exclusive));      // and in shard 1
    CHECK(try_get(seg - 1, 1, lock_mode::shared));
    CHECK(listed_as(l, cell, cell, a, holder_tid, holder_mode));
    CHECK(l.check_invariants());
    CHECK(order.load() == 0);
    release.set();
    for (std::thread* t : {&holder, &writer, &reader}) t->join();
    CHECK((w_at == 0 && r_at == 1));  // FIFO hand-over from the (moved) fast holder
    CHECK(l.holders().size() == 4);   // the ranges around the gaps
    CHECK(l.check_invariants());
  }
  // A fast holder in a gap, then an overlapping try-lock from another thread (which moves it into
  // the tree and fails), then a release through the tree; and the next one is fast again.
  for (int i = 0; i < 100; ++i) {
    const lock_mode m = i % 2 ? lock_mode::shared : lock_mode::exclusive;
    range_guard g(l, 5 * cell + 3, 2, m);
    bool x_got = true, s_got = false, beside_got = false;
    std::thread probe([&] {
      x_got = try_get(5 * cell + 4, 1, lock_mode::exclusive);
      s_got = try_get(5 * cell + 4, 1, lock_mode::shared);
      beside_got = try_get(5 * cell + 5, 1, lock_mode::exclusive);  // same cell, not overlapping
    });
    probe.join();
    CHECK_FALSE(x_got);
    CHECK(s_got == (m == lock_mode::shared));
    CHECK(beside_got);
  }
  CHECK(l.check_invariants());
  bg_release.set();
  bg.join();
  CHECK(l.holders().empty());
  CHECK(l.check_invariants());
}

// Fast holders in gaps (narrow requests in shards that hold other ranges) claimed and released
// concurrently with the leaf lock holders that move them into the tree or change the cells (other
// requests of their shards, wide ones, long-held ranges coming and going, the diagnostics): no
// shared/exclusive overlap ever (per-byte counters), the cells always match the trees, and
// everything ends empty.
TEST_CASE("fast holders in gaps under concurrent take-overs and wide ranges: exclusion holds") {
  constexpr std::uint64_t seg = 64, space = 8 * seg;  // segment_shift 6: 4-byte cells, 8 shards used
  range_lock l("gap stress", rank::attr_range, 6);
  rl_test::watchdog wd("fast holders in gaps stress", std::chrono::seconds(100));
  { range_guard warm(l, 0, 1, lock_mode::exclusive); }
  std::atomic<int> readers[space]{}, writers[space]{};
  std::atomic<long> bad{0}, granted{0};
  const auto hold = [&](const range_guard& g, bool linger) {
    const auto b = g.offset(), e = std::min<std::uint64_t>(space, b + g.length());
    const bool x = g.mode() == lock_mode::exclusive;
    for (auto i = b; i < e; ++i) {
      if (x) {
        if (writers[i].fetch_add(1) != 0 || readers[i].load() != 0) ++bad;
      } else {
        readers[i].fetch_add(1);
        if (writers[i].load() != 0) ++bad;
      }
    }
    if (linger)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    else
      std::this_thread::yield();
    for (auto i = b; i < e; ++i) {
      if (x ? readers[i].load() != 0 : writers[i].load() != 0) ++bad;
      (x ? writers[i] : readers[i]).fetch_sub(1);
    }
    ++granted;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(99 + static_cast<unsigned>(t));
      for (int i = 0; i < 4000 / rl_test::slow; ++i) {
        std::uint64_t off, len;
        if (t == 0 || rng() % 16 == 0) {  // thread 0: long-held ranges (the walls around the gaps)
          off = rng() % space;
          len = 1 + rng() % (t == 0 ? 8 : 80);  // some cross segments: wide
        } else {  // the others: small ranges, mostly inside one cell
          off = rng() % space;
          len = 1 + rng() % 3;
        }
        const lock_mode m = rng() % 3 == 0 ? lock_mode::shared : lock_mode::exclusive;
        std::optional<range_guard> g;
        const auto how = rng() % 8;
        if (how == 0)
          g.emplace(l, off, len, m, std::try_to_lock);
        else if (how == 1)
          g.emplace(l, off, len, m, std::chrono::microseconds(rng() % 100));
        else
          g.emplace(l, off, len, m);
        if (g->owns_lock()) hold(*g, t == 0);
      }
    });
  join_under_diagnostics(l, ts, bad, granted);
}
