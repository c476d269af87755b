// Faults racing the calls that take their memory away, through the process API on ramfs files:
//   - munmap (and mmap reusing the addresses) while threads touch random pages of a 1 MiB MAP_SHARED
//     mapping: whatever a fault thread uses (region, page source, the wait-for graph's report of the
//     fault) must stay alive until it lets go, so a use-after-free crashes here (the test is run under
//     ASan, and in the Debug build with glibc's free perturbation, see tests/vm.cmake);
//   - the same with mprotect splits and partial munmaps in between (mremap is not offered by the API);
//   - ftruncate shrinking and regrowing the file under faults at its shrink point: a SIGBUS may only be
//     the kernel's, at the faulting access (the probes fail the test on any other, vm_support.hpp).
// Every probe checks the data it read: the mapped file never changes in the first two cases.
#include <doctest/doctest.h>

#include <faultsafe/activity/wait_graph.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "vm_ramfs_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

namespace {

constexpr std::size_t map_size = 1 << 20;
constexpr auto race_time = std::chrono::milliseconds(1500);

// What the toucher threads saw: reads of a mapping that stayed published throughout (ok: the right
// byte; wrong: anything else, a signal included), reads that raced its unmapping (any outcome but
// SIGBUS is fine: SIGSEGV, or a byte of whatever the kernel mapped at the address next), SIGBUS.
struct touch_counts {
  std::atomic<long> ok{0}, raced{0}, bus{0}, wrong{0};
};

// The mapping the touchers read: `gen` is even while `p` is mapped and published, odd from just
// before the mapper starts changing it (seq_cst throughout).
struct published {
  std::atomic<const std::uint8_t*> p{nullptr};
  std::atomic<unsigned> gen{1};
  void publish(const std::uint8_t* m) {
    p.store(m);
    gen.fetch_add(1);
  }
  void retract() { gen.fetch_add(1); }
};

// Threads that read random pages of the published mapping (or of the last one, unmapped meanwhile)
// and check the byte when the mapping stayed published during the read.
class touchers {
 public:
  touchers(int n, const published& cur, touch_counts& c) {
    for (int t = 0; t < n; ++t)
      threads_.emplace_back([this, t, &cur, &c] {
        announce_faulting_thread();  // the pager records each fault in the wait-for graph, with its file
        activity_scope act(new_activity());
        std::minstd_rand rng(static_cast<unsigned>(t) * 7919u + 1);
        while (!stop_.load(std::memory_order_relaxed)) {
          const unsigned g0 = cur.gen.load();
          const std::uint8_t* p = cur.p.load();
          if (p == nullptr) {
            std::this_thread::yield();
            continue;
          }
          const std::size_t off = rng() % map_size;
          std::uint8_t v = 0;
          const int sig = vmtest::probe_read_racy(p + off, v);
          const bool stable = g0 % 2 == 0 && cur.gen.load() == g0;
          if (sig == SIGBUS) c.bus.fetch_add(1);
          else if (!stable) c.raced.fetch_add(1);
          else (sig == 0 && v == pattern(off) ? c.ok : c.wrong).fetch_add(1);
          if (sig != 0) std::this_thread::yield();  // unmapped: let the mapper map the next one
        }
      });
  }
  ~touchers() { join(); }
  void join() {
    stop_.store(true);
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

void pause_us(std::minstd_rand& rng) { std::this_thread::sleep_for(std::chrono::microseconds(20 + rng() % 31)); }

struct race_setup {
  race_setup() : fs({.name = "ram", .prefix = "/ram", .ns = &ns}), bob("bob", {1000, 100}, &ns) {
    wait_graph::set_enabled(true);  // fault reports name the file: the page source is asked for it
    fd = vmtest::make_ramfs_file(bob, "/ram/race", map_size);
  }

  // Effects: for race_time, maps the file MAP_SHARED, lets 3 toucher threads fault on it for
  // 20-50 us, then calls unmap(p, rng) while they go on, which must leave nothing mapped; then checks
  // what they read.
  template <class Unmap>
  void race(Unmap unmap) {
    published cur;
    touch_counts c;
    long rounds = 0;
    {
      touchers ts(3, cur, c);
      std::minstd_rand rng(42);
      const auto until = std::chrono::steady_clock::now() + race_time;
      while (std::chrono::steady_clock::now() < until) {
        auto m = bob.mmap(nullptr, map_size, PROT_READ, MAP_SHARED, fd, 0);
        REQUIRE(m.ok());
        cur.publish(static_cast<const std::uint8_t*>(*m));
        pause_us(rng);
        cur.retract();
        unmap(static_cast<std::uint8_t*>(*m), rng);
        ++rounds;
      }
      ts.join();
    }
    MESSAGE("rounds " << rounds << ", reads ok " << c.ok.load() << ", raced " << c.raced.load());
    CHECK(c.wrong == 0);
    CHECK(c.bus == 0);  // the file never shrinks: no page-in fails
    CHECK(c.ok > 0);
    CHECK(bob.memory().space().region_count() == 0);
  }

  path_namespace ns;
  ramfs fs;
  process bob;
  int fd = -1;
};

// A page source that records any use after the munmap of its mapping has returned (the caller may
// destroy a source then). Once armed, its first call (the fault's) holds on until the test has
// unmapped, or 20 ms when munmap waits for it: either way a call made or still running after munmap
// returned is counted.
class watched_source final : public page_source {
 public:
  explicit watched_source(int fd) : inner_(fd) {}
  std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    enter(std::chrono::milliseconds(20));
    const auto ec = inner_.page_in(req, out);
    leave();
    return ec;
  }
  std::string describe() const override {
    enter(std::chrono::seconds(2));
    leave();
    return "watched";
  }
  std::atomic<bool> armed{false}, unmapped{false};
  mutable std::atomic<bool> reached{false};
  mutable std::atomic<int> late{0};

 private:
  void enter(std::chrono::nanoseconds hold) const {
    if (!armed.load()) return;
    if (unmapped.load()) late.fetch_add(1);
    if (reached.exchange(true)) return;
    const auto until = std::chrono::steady_clock::now() + hold;
    while (!unmapped.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  }
  void leave() const {
    if (armed.load() && unmapped.load()) late.fetch_add(1);
  }
  memfd_page_source inner_;
};

}  // namespace

TEST_CASE("once munmap has returned, no fault thread uses the mapping's page source") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "source after munmap");
  wait_graph::set_enabled(true);  // fault reports name the file
  vmtest::memfd_file f(16 * vm_page_size);
  for (bool shared : {true, false}) {
    CAPTURE(shared);
    watched_source src(f.fd);
    aspace as;
    pager pg(as);
    auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, shared));
    src.armed = true;
    std::thread t([&] {
      announce_faulting_thread();
      std::uint8_t v = 0;
      // The access may end either way (munmap races its retry): the source's use is what is checked.
      (void)vmtest::probe_read_racy(p + 3 * vm_page_size + 5, v);
    });
    while (!src.reached.load()) std::this_thread::yield();  // the fault is in the source
    CHECK(!as.munmap(const_cast<std::uint8_t*>(p), f.size));
    src.unmapped = true;
    t.join();
    pg.stop();  // the fault threads finish what they have read: every call into src has returned
    CHECK(src.late.load() == 0);
  }
}

TEST_CASE("munmap racing faults: no fault thread uses a freed region, page source or report") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "munmap vs fault");
  race_setup s;
  s.race([&](std::uint8_t* p, std::minstd_rand&) { REQUIRE(s.bob.munmap(p, map_size).ok()); });
  CHECK(s.bob.memory().fault_pager().stats().page_in_errors == 0);
}

TEST_CASE("mprotect splits and partial munmaps racing faults") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "mprotect vs fault");
  race_setup s;
  s.race([&](std::uint8_t* p, std::minstd_rand& rng) {
    REQUIRE(s.bob.mprotect(p + map_size / 4, map_size / 2, PROT_NONE).ok());  // three parts
    pause_us(rng);
    REQUIRE(s.bob.mprotect(p + map_size / 4, map_size / 4, PROT_READ).ok());
    REQUIRE(s.bob.munmap(p + map_size / 2, map_size / 8).ok());  // a hole in the PROT_NONE part
    pause_us(rng);
    REQUIRE(s.bob.munmap(p, map_size).ok());
  });
}

namespace {

// 3 threads touch pages 14..17 of the 64-page shared mapping p, spinning between touches, while
// resize(n) alternates the file between 16 and 64 pages (race_time). Pages below 16 must read their
// data; pages above may read it, zeros (truncation left them behind) or get SIGBUS at the access; any
// other signal fails the test in vm_support.hpp's probe handler. Returns the SIGBUS count.
template <class Resize>
long truncate_race(const std::uint8_t* p, Resize resize) {
  constexpr std::size_t pages = 64, short_pages = 16;
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, bus{0}, wrong{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      announce_faulting_thread();
      for (unsigned k = static_cast<unsigned>(t); !stop.load(std::memory_order_relaxed); ++k) {
        const std::size_t page = short_pages - 2 + k % 4;  // pages 14..17 around the shrink point
        const std::size_t off = page * vm_page_size + (k * 97) % vm_page_size;
        std::uint8_t v = 0;
        const int sig = vmtest::probe_read_racy(p + off, v);  // a stray signal fails the test there
        if (sig == 0) (v == pattern(off) || (page >= short_pages && v == 0) ? ok : wrong).fetch_add(1);
        else if (sig == SIGBUS && page >= short_pages) bus.fetch_add(1);
        else wrong.fetch_add(1);
        for (int spin = 0; spin < 2000; ++spin) std::atomic_signal_fence(std::memory_order_seq_cst);  // a stray tgkill lands here
      }
    });
  const auto until = std::chrono::steady_clock::now() + race_time;
  long rounds = 0;
  while (std::chrono::steady_clock::now() < until) {
    resize(static_cast<off_t>(short_pages * vm_page_size));
    resize(static_cast<off_t>(pages * vm_page_size));
    ++rounds;
  }
  stop.store(true);
  for (auto& t : ts) t.join();
  // The file is whole again (the last resize grew it): every page reads; none stays poisoned by a
  // page-in that failed while the file was short (vm/poisoned_pages.hpp).
  for (std::size_t page = short_pages - 2; page < short_pages + 2; ++page) {
    std::uint8_t v = 0;
    CHECK(vmtest::probe_read(p + page * vm_page_size, v) == 0);
  }
  MESSAGE("rounds " << rounds << ", reads ok " << ok.load() << ", SIGBUS " << bus.load());
  CHECK(wrong == 0);
  CHECK(ok > 0);
  return bus.load();
}

}  // namespace

TEST_CASE("ftruncate of a ramfs file racing faults at the shrink point: SIGBUS only at the access") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "ftruncate vs fault");
  race_setup s;
  const std::size_t len = 64 * vm_page_size;
  auto m = s.bob.mmap(nullptr, len, PROT_READ, MAP_SHARED, s.fd, 0);
  REQUIRE(m.ok());
  const long bus = truncate_race(static_cast<const std::uint8_t*>(*m), [&](off_t n) { REQUIRE(s.bob.ftruncate(s.fd, n).ok()); });
  CHECK(bus > 0);  // the race was run: accesses past the end got SIGBUS
  CHECK(s.bob.munmap(*m, len).ok());
}

// The file's memfd itself shrinks here, so the kernel refuses UFFDIO_POISON past its end (EFAULT) and
// the retried access must take the kernel's own SIGBUS (no signal sent by the pager).
TEST_CASE("ftruncate of a memfd racing faults at the shrink point: SIGBUS only at the access") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "memfd ftruncate vs fault");
  vmtest::memfd_file f(64 * vm_page_size);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as);
  auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, true));
  const long bus = truncate_race(p, [&](off_t n) {
    REQUIRE(::ftruncate(f.fd, n) == 0);
    file_grown(f.fd, 0, static_cast<std::uint64_t>(n));  // the memfd's owner announces its size (a growth)
  });
  CHECK(bus > 0);
  MESSAGE("page-in errors " << pg.stats().page_in_errors);
  CHECK(!as.munmap(const_cast<std::uint8_t*>(p), f.size));
}
