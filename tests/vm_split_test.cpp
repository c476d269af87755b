// Region splitting: munmap / mprotect of any page range (parts of regions, several regions, holes),
// MAP_FIXED replacing this aspace's mappings, MAP_FIXED_NOREPLACE, the process API over ramfs files
// (partial unmap of a MAP_SHARED mapping keeps paging in at the right file offsets), a partial munmap
// waiting for in-flight fault service, and a bounded stress: readers touch pages while a bouncer
// unmaps / remaps / reprotects random sub-ranges.
#include <doctest/doctest.h>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <random>
#include <thread>
#include <vector>

#include "vm_support.hpp"

using namespace faultsafe;
using vmtest::gated_source;
using vmtest::pattern;

namespace {

constexpr std::size_t pg = vm_page_size;

// kind 0: anonymous, 1: file private, 2: file shared (the file at offset = distance from `base`).
map_request make_request(vmtest::memfd_file& f, page_source& src, int kind, std::uint8_t* base, std::uint8_t* at,
                         std::size_t len, int prot = PROT_READ) {
  map_request rq;
  rq.addr_hint = at;
  rq.length = len;
  rq.prot = prot;
  rq.fixed = at != nullptr;
  if (kind != 0) {
    rq.shared = kind == 2;
    rq.file = file_backing{f.fd, static_cast<std::uint64_t>(at - base), &f, &src};
  }
  return rq;
}

// Expects page `i` of base to read `want` (0: anonymous) or to fault with SIGSEGV (want < 0).
void expect_page(const std::uint8_t* base, std::size_t i, int want_kind) {
  std::uint8_t v = 0;
  const std::size_t off = i * pg + (i * 37) % pg;
  // A hole may have been reused meanwhile by another thread's mapping (a pool thread's fill buffer),
  // whose bytes that thread wrote: read it outside ThreadSanitizer, which cannot know the reuse.
  const int sig = want_kind < 0 ? vmtest::probe_read_racy(base + off, v) : vmtest::probe_read(base + off, v);
  INFO("page " << i << " kind " << want_kind);
  if (want_kind < 0) {
    // Unmapped, or (sanitizer runtimes, allocators) already reused by another mapping of this OS process.
    std::uint8_t* page = const_cast<std::uint8_t*>(base) + i * pg;
    const bool reused = ::msync(page, pg, MS_ASYNC) == 0;
    if (!reused) CHECK(sig == SIGSEGV);
  } else {
    REQUIRE(sig == 0);
    CHECK(v == (want_kind == 0 ? 0 : pattern(off)));
  }
}

}  // namespace

TEST_CASE("munmap of the middle of a mapping: both ends keep their data, the middle is SIGSEGV") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "unmap middle");
  vmtest::memfd_file f(16 * pg);
  memfd_page_source src(f.fd);
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    aspace as;
    pager pg_(as, pager_options{2, vm_page_size, vm_page_size});  // one page per fault: later faults go to the parts
    auto* p = static_cast<std::uint8_t*>(as.map(make_request(f, src, kind, nullptr, nullptr, 16 * pg)));
    // Touch pages 1 and 14 before, 2 and 13 after the split (the latter are served by the parts).
    expect_page(p, 1, kind == 0 ? 0 : 1);
    expect_page(p, 14, kind == 0 ? 0 : 1);
    CHECK(as.munmap(p + 4 * pg, 6 * pg) == std::error_code{});  // pages 4..9
    CHECK(as.region_count() == 2);
    for (std::size_t i = 0; i < 16; ++i) expect_page(p, i, i >= 4 && i < 10 ? -1 : (kind == 0 ? 0 : 1));
    const auto right = as.find(p + 10 * pg);
    REQUIRE(right.has_value());
    CHECK(right->start == p + 10 * pg);
    CHECK(right->length == 6 * pg);
    if (kind != 0) CHECK(right->file.offset == 10 * pg);
    CHECK(as.find(p + 5 * pg) == std::nullopt);
    CHECK(as.find(p)->length == 4 * pg);
    // A length that is not a page multiple is rounded up: pages 10 and 11 go.
    CHECK(as.munmap(p + 10 * pg, pg + 1) == std::error_code{});
    expect_page(p, 11, -1);
    expect_page(p, 12, kind == 0 ? 0 : 1);
    CHECK(pg_.stats().page_in_errors == 0);
    CHECK(as.munmap(p, 16 * pg) == std::error_code{});
    CHECK(as.region_count() == 0);
  }
}

TEST_CASE("mprotect of a middle part: writes there are SIGSEGV, the rest stays writable") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "mprotect middle");
  vmtest::memfd_file f(16 * pg);
  memfd_page_source src(f.fd);
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    aspace as;
    pager pg_(as);
    auto* p = static_cast<std::uint8_t*>(as.map(make_request(f, src, kind, nullptr, nullptr, 16 * pg, PROT_READ | PROT_WRITE)));
    CHECK(vmtest::probe_write(p + 5 * pg + 1, 0x11) == 0);  // before: writable
    CHECK(as.mprotect(p + 4 * pg, 4 * pg, PROT_READ) == std::error_code{});
    CHECK(as.region_count() == 3);
    CHECK(as.find(p + 4 * pg)->prot == PROT_READ);
    CHECK(as.find(p + 3 * pg)->prot == (PROT_READ | PROT_WRITE));
    CHECK(as.find(p + 8 * pg)->prot == (PROT_READ | PROT_WRITE));
    for (std::size_t i = 0; i < 16; ++i) {
      CAPTURE(i);
      const bool ro = i >= 4 && i < 8;
      CHECK(vmtest::probe_write(p + i * pg + 3, static_cast<std::uint8_t>(i + 1)) == (ro ? SIGSEGV : 0));
      std::uint8_t v = 0;
      REQUIRE(vmtest::probe_read(p + i * pg + 3, v) == 0);  // readable everywhere
      if (!ro) CHECK(v == i + 1);
      else CHECK(v == (kind == 0 ? 0 : pattern(i * pg + 3)));
    }
    CHECK(p[5 * pg + 1] == 0x11);  // the page written before the split kept its data
    if (kind == 2) CHECK(f.read_byte(9 * pg + 3) == 10);  // shared: the write landed in the file
    if (kind == 1) CHECK(f.read_byte(9 * pg + 3) == pattern(9 * pg + 3));  // private: it did not
    // mprotect over the whole range again (three regions) and with an unchanged protection.
    CHECK(as.mprotect(p, 16 * pg, PROT_READ | PROT_WRITE) == std::error_code{});
    CHECK(vmtest::probe_write(p + 6 * pg, 1) == 0);
    CHECK(as.mprotect(p + pg, pg, PROT_READ | PROT_WRITE) == std::error_code{});
    CHECK(as.region_count() == 3);  // nothing changed: no split
    CHECK(as.munmap(p, 16 * pg) == std::error_code{});
    if (kind == 2) {  // restore the file for the next kinds
      for (std::size_t i = 0; i < 16; ++i) {
        const std::uint8_t b = pattern(i * pg + 3);
        REQUIRE(::pwrite(f.fd, &b, 1, static_cast<off_t>(i * pg + 3)) == 1);
      }
      const std::uint8_t b = pattern(6 * pg);
      REQUIRE(::pwrite(f.fd, &b, 1, static_cast<off_t>(6 * pg)) == 1);
      const std::uint8_t c = pattern(5 * pg + 1);
      REQUIRE(::pwrite(f.fd, &c, 1, static_cast<off_t>(5 * pg + 1)) == 1);
    }
  }
}

TEST_CASE("a range spanning two regions and a hole: mprotect is ENOMEM, munmap takes the parts") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "span");
  vmtest::memfd_file f(12 * pg);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg_(as, pager_options{2, vm_page_size, vm_page_size});
  // A 12-page area: A = pages 0..3 (file private), hole 4..7, B = pages 8..11 (file shared).
  auto* base = static_cast<std::uint8_t*>(as.map(make_request(f, src, 1, nullptr, nullptr, 12 * pg)));
  REQUIRE(as.munmap(base + 4 * pg, 8 * pg) == std::error_code{});
  void* b = nullptr;
  const auto ec = as.try_map(make_request(f, src, 2, base, base + 8 * pg, 4 * pg), b);
  if (ec == std::errc::file_exists) {  // something else of this OS process took the freed pages
    MESSAGE("skipped: pages of the test area were reused by another mapping");
    return;
  }
  REQUIRE(ec == std::error_code{});
  CHECK(b == base + 8 * pg);
  expect_page(base, 1, 1);
  expect_page(base, 9, 2);
  CHECK(as.mprotect(base + 2 * pg, 8 * pg, PROT_READ | PROT_WRITE) == std::errc::not_enough_memory);
  CHECK(as.find(base)->prot == PROT_READ);  // nothing changed
  CHECK(as.find(base + 9 * pg)->prot == PROT_READ);
  CHECK(as.region_count() == 2);
  CHECK(as.munmap(base + 2 * pg, 8 * pg) == std::error_code{});  // A's pages 2..3, the hole, B's 8..9
  CHECK(as.region_count() == 2);
  for (std::size_t i = 0; i < 12; ++i) expect_page(base, i, i < 2 ? 1 : i >= 10 ? 2 : -1);
  CHECK(as.find(base + 10 * pg)->file.offset == 10 * pg);
  CHECK(as.mprotect(base, 2 * pg, PROT_READ | PROT_WRITE) == std::error_code{});
  CHECK(vmtest::probe_write(base + 7, 1) == 0);
  CHECK(as.munmap(base, 12 * pg) == std::error_code{});
  CHECK(as.region_count() == 0);
  CHECK(pg_.stats().page_in_errors == 0);
}

TEST_CASE("MAP_FIXED replaces this aspace's mappings; NOREPLACE and foreign memory are EEXIST") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "map fixed");
  vmtest::memfd_file f(8 * pg);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg_(as);
  auto* p = static_cast<std::uint8_t*>(as.map(make_request(f, src, 1, nullptr, nullptr, 8 * pg)));
  expect_page(p, 3, 1);
  map_request rq = make_request(f, src, 0, p, p + 2 * pg, 4 * pg, PROT_READ | PROT_WRITE);  // anonymous over 2..5
  void* out = nullptr;
  CHECK(as.try_map(rq, out) == std::errc::file_exists);  // fixed without replace: MAP_FIXED_NOREPLACE
  CHECK(out == nullptr);
  expect_page(p, 3, 1);
  rq.replace = true;
  REQUIRE(as.try_map(rq, out) == std::error_code{});
  CHECK(out == p + 2 * pg);
  CHECK(as.region_count() == 3);
  for (std::size_t i = 0; i < 8; ++i) expect_page(p, i, i >= 2 && i < 6 ? 0 : 1);
  CHECK(vmtest::probe_write(p + 3 * pg, 9) == 0);
  CHECK(vmtest::probe_write(p + 7 * pg, 9) == SIGSEGV);  // the old region's part keeps PROT_READ
  // Memory that is not this aspace's is never replaced.
  void* foreign = ::mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(foreign != MAP_FAILED);
  static_cast<std::uint8_t*>(foreign)[5] = 42;
  map_request rf;
  rf.addr_hint = foreign;
  rf.length = 2 * pg;
  rf.fixed = true;
  rf.replace = true;
  CHECK(as.try_map(rf, out) == std::errc::file_exists);
  CHECK(static_cast<std::uint8_t*>(foreign)[5] == 42);
  ::munmap(foreign, 2 * pg);
  CHECK(as.munmap(p, 8 * pg) == std::error_code{});
  CHECK(as.region_count() == 0);
}

TEST_CASE("partial munmap waits for fault service in flight on its region") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "partial munmap during fault");
  vmtest::memfd_file f(16 * pg);
  gated_source slow(f.fd);
  aspace as;
  pager pg_(as, pager_options{2, vm_page_size, vm_page_size});
  auto* p = static_cast<std::uint8_t*>(as.map(make_request(f, slow, 1, nullptr, nullptr, 16 * pg)));
  std::atomic<int> sig{-1};
  std::uint8_t v = 0;
  std::thread reader([&] { sig = vmtest::probe_read(p + 10 * pg + 5, v); });
  slow.wait_entered();
  std::atomic<bool> done{false};
  std::thread unmapper([&] {
    CHECK(as.munmap(p, 4 * pg) == std::error_code{});
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(done.load());  // the region's page-in is in flight: the split waits for it
  slow.open = true;
  unmapper.join();
  reader.join();
  CHECK(sig.load() == 0);  // page 10 stays mapped: the read got its data
  CHECK(v == pattern(10 * pg + 5));
  expect_page(p, 2, -1);
  expect_page(p, 12, 1);
  CHECK(as.munmap(p, 16 * pg) == std::error_code{});
}

namespace {

int make_file(process& p, const char* path, std::size_t size) {
  auto fd = p.open(path, O_CREAT | O_RDWR, 0644);
  REQUIRE(fd.ok());
  std::string chunk(size, '\0');
  for (std::size_t i = 0; i < size; ++i) chunk[i] = static_cast<char>(pattern(i));
  REQUIRE(p.pwrite(*fd, chunk.data(), size, 0).value() == size);
  return *fd;
}

}  // namespace

TEST_CASE("process API: partial munmap of a MAP_SHARED file mapping, MAP_FIXED, MAP_FIXED_NOREPLACE") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "process partial munmap");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const std::size_t size = 32 * pg;
  const int fd = make_file(bob, "/ram/split", size);
  auto m = bob.mmap(nullptr, 16 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(8 * pg));
  REQUIRE(m.ok());
  auto* p = static_cast<std::uint8_t*>(*m);  // file offsets 8p .. 24p
  CHECK(p[pg + 1] == pattern(9 * pg + 1));  // touched before the split
  CHECK(bob.close(fd).ok());                    // the server's close waits for the last part
  CHECK(bob.munmap(p + 4 * pg, 4 * pg).ok());   // file offsets 12p..16p go
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(p + 5 * pg, v) == SIGSEGV);
  // Faults on the remaining parts page in through the server at the right file offsets.
  for (std::size_t i : {0, 2, 3, 8, 11, 15}) {
    CAPTURE(i);
    REQUIRE(vmtest::probe_read(p + i * pg + 7, v) == 0);
    CHECK(v == pattern((8 + i) * pg + 7));
  }
  p[12 * pg + 9] = 0x5A;  // a write through the right part lands at file offset 20p + 9
  // MAP_FIXED_NOREPLACE over the left part: EEXIST; MAP_FIXED anonymous over pages 1..2: replaced.
  CHECK(bob.mmap(p + pg, 2 * pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0).error() ==
        std::errc::file_exists);
  auto a = bob.mmap(p + pg, 2 * pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  REQUIRE(a.ok());
  CHECK(*a == p + pg);
  CHECK(p[pg + 1] == 0);
  CHECK(p[3 * pg + 1] == pattern(11 * pg + 1));
  CHECK(bob.mprotect(p + 8 * pg, 2 * pg, PROT_READ).ok());  // a part of the right part
  CHECK(vmtest::probe_write(p + 9 * pg, 1) == SIGSEGV);
  CHECK(vmtest::probe_write(p + 10 * pg, static_cast<std::uint8_t>(pattern(18 * pg))) == 0);
  CHECK(bob.memory().fault_pager().stats().page_in_errors == 0);
  CHECK(bob.munmap(p, 16 * pg).ok());  // every part; the deferred close is sent now
  auto fd2 = bob.open("/ram/split", O_RDONLY);
  REQUIRE(fd2.ok());
  std::uint8_t b = 0;
  REQUIRE(bob.pread(*fd2, &b, 1, static_cast<off_t>(20 * pg + 9)).value() == 1);
  CHECK(b == 0x5A);
  CHECK(bob.close(*fd2).ok());
  CHECK(bob.memory().space().region_count() == 0);
}

namespace {

// The bounce idea on sub-ranges: readers touch random pages of one area while a bouncer replaces
// (MAP_FIXED), unmaps and remaps, or reprotects (read-write <-> read-only: reads stay valid) random
// sub-ranges. Per-page sequence numbers tell a read that raced with a change of its page (any result
// allowed) from one that must be right (data, never SIGSEGV/SIGBUS).
void run_split_bounce(bool single_lock, int readers, int reads_each, int bounces) {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(50, "split bounce");
  constexpr std::size_t pages = 64;
  vmtest::memfd_file f(pages * pg);
  memfd_page_source src(f.fd);
  aspace as(aspace_options{single_lock, "split-bounce"});
  pager pgr(as, pager_options{2});
  auto* base = static_cast<std::uint8_t*>(as.map(make_request(f, src, 1, nullptr, nullptr, pages * pg)));
  std::atomic<std::uint64_t> gen[pages];
  std::atomic<int> kind[pages];  // -1: not this aspace's any more (something else took the pages)
  for (std::size_t i = 0; i < pages; ++i) {
    gen[i] = 0;
    kind[i] = 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, raced{0}, bad{0}, bus{0}, stolen{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < readers; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 3);
      for (int n = 0; n < reads_each && !stop.load(std::memory_order_relaxed); ++n) {
        const std::size_t i = rng() % pages;
        const std::uint64_t g1 = gen[i].load(std::memory_order_acquire);
        const int k = kind[i].load(std::memory_order_acquire);
        if ((g1 & 1) != 0 || k < 0) continue;
        const std::size_t off = i * pg + rng() % pg;
        std::uint8_t v = 0;
        const int sig = vmtest::probe_read_racy(base + off, v);
        // A read-modify-write: its release half keeps the read above before it (a seqlock re-check).
        const bool moved = gen[i].fetch_add(0, std::memory_order_acq_rel) != g1;
        const bool wrong = sig == 0 && v != (k == 0 ? 0 : pattern(off));
        if (sig == SIGBUS) bus.fetch_add(1);
        else if ((sig != 0 || wrong) && moved) raced.fetch_add(1);
        else if (sig != 0 || wrong) {
          if (bad.fetch_add(1) < 5)
            std::fprintf(stderr, "bad read: page %zu kind %d off %zu sig %d value %d want %d\n", i, k, off, sig, v,
                         k == 0 ? 0 : pattern(off));
        } else ok.fetch_add(1);
      }
    });
  std::thread bouncer([&] {
    std::mt19937 rng(777);
    for (int n = 0; n < bounces; ++n) {
      const std::size_t i = rng() % pages;
      const std::size_t len = 1 + rng() % std::min<std::size_t>(16, pages - i);
      const int op = static_cast<int>(rng() % 3);
      const int k = static_cast<int>(rng() % 3);
      for (std::size_t j = i; j < i + len; ++j) gen[j].fetch_add(1, std::memory_order_acq_rel);  // odd
      bool mapped = true;
      if (op == 2) {  // reprotect: reads stay valid, the regions split
        const int prot = (rng() & 1) ? PROT_READ : PROT_READ | PROT_WRITE;
        CHECK(as.mprotect(base + i * pg, len * pg, prot) == std::error_code{});
      } else {
        if (op == 1) CHECK(as.munmap(base + i * pg, len * pg) == std::error_code{});
        map_request rq = make_request(f, src, k, base, base + i * pg, len * pg);
        rq.replace = true;  // op 0: MAP_FIXED over the old mappings; op 1: into the hole just made
        void* out = nullptr;
        const auto ec = as.try_map(rq, out);
        if (ec == std::errc::file_exists) {  // another mapping of this OS process took the hole
          stolen.fetch_add(1);
          mapped = false;
        } else {
          CHECK(ec == std::error_code{});
        }
      }
      for (std::size_t j = i; j < i + len; ++j) {
        if (op != 2) kind[j].store(mapped ? k : -1, std::memory_order_release);
        gen[j].fetch_add(1, std::memory_order_acq_rel);
      }
      if (!mapped) break;  // leave the rest of the area alone
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  bouncer.join();
  stop = true;
  for (auto& t : ts) t.join();
  INFO("ok=" << ok.load() << " raced=" << raced.load() << " bad=" << bad.load() << " bus=" << bus.load()
             << " regions=" << as.region_count() << " stolen=" << stolen.load());
  CHECK(bad.load() == 0);
  CHECK(bus.load() == 0);
  CHECK(ok.load() > 0);
  CHECK(pgr.stats().page_in_errors == 0);
  // Every page that is still ours reads right after the storm.
  for (std::size_t i = 0; i < pages; ++i)
    if (kind[i].load() >= 0) expect_page(base, i, kind[i].load());
  CHECK(as.munmap(base, pages * pg) == std::error_code{});
  CHECK(as.region_count() == 0);
}

}  // namespace

TEST_CASE("split bounce: random sub-range unmap/remap/mprotect under readers (per-region locks)") {
  run_split_bounce(false, 3, 200000, 600);
}

TEST_CASE("split bounce: the same under single_lock") { run_split_bounce(true, 2, 100000, 300); }
