// A bounded bounce stress in the spirit of the kernel's uffd-stress: reader threads touch random pages
// of several regions while a bouncer thread unmaps and remaps them (file private, file shared,
// anonymous). Every read must return the right data, or SIGSEGV when (and only when) its region was
// being unmapped during the read; never SIGBUS, never a hang (watchdog).
#include <doctest/doctest.h>

#include <random>
#include <thread>
#include <vector>

#include "vm_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

namespace {

struct slot {
  std::atomic<std::uint64_t> gen{0};  // odd while being remapped
  std::atomic<std::uint8_t*> base{nullptr};
  std::atomic<int> kind{0};  // 0 anonymous, 1 file private, 2 file shared
};

void run_bounce(bool single_lock, int readers, int reads_each, int bounces) {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(50, "bounce stress");
  constexpr std::size_t pages = 64;
  constexpr std::size_t slots_n = 6;
  vmtest::memfd_file f(pages * vm_page_size);
  memfd_page_source src(f.fd);
  aspace as(aspace_options{single_lock, "bounce"});
  pager pg(as, pager_options{2});
  slot slots[slots_n];
  auto make = [&](int kind, void* hint) {
    map_request rq;
    rq.addr_hint = hint;
    rq.length = pages * vm_page_size;
    rq.prot = PROT_READ;
    if (kind != 0) {
      rq.shared = kind == 2;
      rq.file = file_backing{f.fd, 0, &f, &src};
    }
    return static_cast<std::uint8_t*>(as.map(rq));
  };
  for (std::size_t i = 0; i < slots_n; ++i) {
    const int kind = static_cast<int>(i % 3);
    slots[i].kind = kind;
    slots[i].base = make(kind, nullptr);
  }
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, segv{0}, bad{0}, bus{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < readers; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1);
      for (int n = 0; n < reads_each && !stop.load(std::memory_order_relaxed); ++n) {
        slot& s = slots[rng() % slots_n];
        const std::uint64_t g1 = s.gen.load(std::memory_order_acquire);
        std::uint8_t* b = s.base.load(std::memory_order_acquire);
        const int kind = s.kind.load(std::memory_order_acquire);
        if (b == nullptr || (g1 & 1) != 0) continue;
        const std::size_t off = (rng() % pages) * vm_page_size + rng() % vm_page_size;
        std::uint8_t v = 0;
        const int sig = vmtest::probe_read(b + off, v);
        const bool moved = s.gen.load(std::memory_order_acquire) != g1;
        const bool wrong = sig == 0 && v != (kind == 0 ? 0 : pattern(off));
        if (sig == SIGBUS) bus.fetch_add(1);
        else if ((sig == SIGSEGV || wrong) && moved) segv.fetch_add(1);
        else if (sig == SIGSEGV || wrong) {
          if (bad.fetch_add(1) < 5)
            std::fprintf(stderr, "bad read: kind %d off %zu sig %d value %d want %d gen %llu\n", kind, off, sig, v,
                         kind == 0 ? 0 : pattern(off), static_cast<unsigned long long>(g1));
        } else ok.fetch_add(1);
      }
    });
  std::thread bouncer([&] {
    std::mt19937 rng(12345);
    for (int n = 0; n < bounces; ++n) {
      slot& s = slots[rng() % slots_n];
      std::uint8_t* old = s.base.load();
      s.gen.fetch_add(1, std::memory_order_acq_rel);  // odd: being remapped
      s.base.store(nullptr, std::memory_order_release);
      REQUIRE(as.munmap(old, pages * vm_page_size) == std::error_code{});
      const int kind = static_cast<int>(rng() % 3);
      s.kind.store(kind, std::memory_order_release);
      s.base.store(make(kind, (n & 1) ? old : nullptr), std::memory_order_release);  // often the same address
      s.gen.fetch_add(1, std::memory_order_acq_rel);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  bouncer.join();
  stop = true;
  for (auto& t : ts) t.join();
  INFO("ok=" << ok.load() << " segv(while remapped)=" << segv.load() << " bad=" << bad.load() << " bus=" << bus.load());
  CHECK(bad.load() == 0);
  CHECK(bus.load() == 0);
  CHECK(ok.load() > 0);
  CHECK(pg.stats().page_in_errors == 0);
  for (auto& s : slots) CHECK(as.munmap(s.base.load(), pages * vm_page_size) == std::error_code{});
  CHECK(as.region_count() == 0);
}

}  // namespace

TEST_CASE("bounce: random touches while regions are unmapped and remapped (per-region locks)") {
  run_bounce(false, 4, 400000, 1000);
}

TEST_CASE("bounce: the same under single_lock") { run_bounce(true, 3, 200000, 400); }
