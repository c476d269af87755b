// The pager over memfd-backed files and anonymous memory: shared reads from many threads, writes
// through MAP_SHARED landing in the file, MAP_PRIVATE isolation, zero-fill, SIGBUS on a failed page-in,
// fault-around, stale/duplicate faults, shutdown with faults pending.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "vm_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

TEST_CASE("shared file mapping read from several threads through the pager") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(25, "shared read");
  const std::size_t size = 8 << 20;
  vmtest::memfd_file f(size);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as, pager_options{3});
  auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, true));
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      // Each thread walks all pages from a different start: the same pages fault concurrently.
      const std::size_t pages = size / vm_page_size;
      for (std::size_t k = 0; k < pages; ++k) {
        const std::size_t pg_i = (k + static_cast<std::size_t>(t) * pages / 4) % pages;
        const std::size_t off = pg_i * vm_page_size + (pg_i % 4093);
        if (p[off] != pattern(off)) bad.fetch_add(1);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  const auto st = pg.stats();
  CHECK(st.faults > 0);
  CHECK(st.page_in_errors == 0);
  CHECK(st.pages_mapped <= size / vm_page_size);  // every page mapped at most once
  CHECK(as.munmap(const_cast<std::uint8_t*>(p), size) == std::error_code{});
  CHECK(as.region_count() == 0);
}

TEST_CASE("writes through MAP_SHARED land in the file; holes are zero and become file data") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "shared write");
  const std::size_t size = 1 << 20;
  vmtest::memfd_file f(size, /*fill=*/false);  // all holes: MISSING faults, fallocate + CONTINUE
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as);
  map_request rq;
  rq.length = size;
  rq.shared = true;
  rq.file = file_backing{f.fd, 0, &f, &src};
  auto* p = static_cast<std::uint8_t*>(as.map(rq));
  CHECK(p[12345] == 0);
  for (std::size_t i = 0; i < size; i += 777) p[i] = static_cast<std::uint8_t>(i * 7 + 1);
  for (std::size_t i = 0; i < size; i += 777) REQUIRE(f.read_byte(i) == static_cast<std::uint8_t>(i * 7 + 1));
  // And the other way: a pwrite to the file is seen through the mapping.
  const std::uint8_t v = 0xA5;
  REQUIRE(::pwrite(f.fd, &v, 1, 4097) == 1);
  CHECK(p[4097] == 0xA5);
  CHECK(pg.stats().page_in_errors == 0);
}

TEST_CASE("mapping at a file offset") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "offset");
  vmtest::memfd_file f(1 << 20);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as);
  map_request rq;
  rq.length = 64 << 10;
  rq.prot = PROT_READ;
  rq.shared = true;
  rq.file = file_backing{f.fd, 256 << 10, &f, &src};
  auto* p = static_cast<const std::uint8_t*>(as.map(rq));
  for (std::size_t i = 0; i < rq.length; i += 1021) REQUIRE(p[i] == pattern((256 << 10) + i));
  rq.shared = false;
  auto* q = static_cast<const std::uint8_t*>(as.map(rq));
  for (std::size_t i = 0; i < rq.length; i += 1021) REQUIRE(q[i] == pattern((256 << 10) + i));
}

TEST_CASE("MAP_PRIVATE: copy-on-write isolation") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "private");
  const std::size_t size = 512 << 10;
  vmtest::memfd_file f(size);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as);
  map_request rq;
  rq.length = size;
  rq.shared = false;
  rq.file = file_backing{f.fd, 0, &f, &src};
  auto* a = static_cast<std::uint8_t*>(as.map(rq));
  auto* b = static_cast<std::uint8_t*>(as.map(rq));
  rq.shared = true;
  auto* s = static_cast<std::uint8_t*>(as.map(rq));
  for (std::size_t i = 0; i < size; i += 4096) REQUIRE(a[i + 5] == pattern(i + 5));
  for (std::size_t i = 0; i < size; i += 4096) a[i + 5] = static_cast<std::uint8_t>(~pattern(i + 5));
  for (std::size_t i = 0; i < size; i += 4096) {
    REQUIRE(a[i + 5] == static_cast<std::uint8_t>(~pattern(i + 5)));
    REQUIRE(b[i + 5] == pattern(i + 5));  // the other private mapping does not see it
    REQUIRE(s[i + 5] == pattern(i + 5));  // nor does a shared one
    REQUIRE(f.read_byte(i + 5) == pattern(i + 5));  // nor the file
  }
  // A private write as the first touch also faults through the page source first (data kept).
  b[4096 * 3 + 1] = 1;
  CHECK(b[4096 * 3 + 2] == pattern(4096 * 3 + 2));
}

TEST_CASE("anonymous memory is zero-filled, private and shared") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "anon");
  aspace as;
  pager pg(as);
  map_request rq;
  rq.length = 1 << 20;
  auto* a = static_cast<std::uint8_t*>(as.map(rq));
  for (std::size_t i = 0; i < rq.length; i += 999) REQUIRE(a[i] == 0);
  for (std::size_t i = 0; i < rq.length; i += 999) a[i] = 7;
  for (std::size_t i = 0; i < rq.length; i += 999) REQUIRE(a[i] == 7);
  rq.shared = true;
  auto* s = static_cast<std::uint8_t*>(as.map(rq));
  CHECK(s[5000] == 0);
  s[5000] = 9;
  CHECK(s[5000] == 9);
  const auto info = as.find(s + 100);
  REQUIRE(info.has_value());
  CHECK(info->shared);
  CHECK(info->anonymous);
  CHECK(pg.stats().faults > 0);
}

struct failing_source final : page_source {
  memfd_page_source inner;
  std::uint64_t bad_offset;
  std::atomic<int> calls{0};
  failing_source(int fd, std::uint64_t bad) : inner(fd), bad_offset(bad) {}
  std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    calls.fetch_add(1);
    if (req.fault_offset == bad_offset) return std::make_error_code(std::errc::io_error);
    // Never hand out the bad page as part of a window.
    page_in_request r = req;
    if (r.offset <= bad_offset && bad_offset < r.offset + r.length) r.length = bad_offset - r.offset;
    return inner.page_in(r, out);
  }
};

TEST_CASE("a failing page-in ends in SIGBUS at the faulting access, never a hang") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "sigbus");
  vmtest::memfd_file f(256 << 10);
  failing_source src(f.fd, 8 * vm_page_size);
  aspace as;
  pager pg(as);
  for (bool shared : {true, false}) {
    auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, shared));
    std::uint8_t v = 0;
    CHECK(vmtest::probe_read(p + 7 * vm_page_size + 3, v) == 0);
    CHECK(v == pattern(7 * vm_page_size + 3));
    CHECK(vmtest::probe_read(p + 8 * vm_page_size + 3, v) == SIGBUS);
    CHECK(vmtest::probe_read(p + 8 * vm_page_size + 100, v) == SIGBUS);  // stays poisoned
    CHECK(vmtest::probe_read(p + 9 * vm_page_size, v) == 0);
    CHECK(v == pattern(9 * vm_page_size));
  }
  CHECK(pg.stats().page_in_errors == 2);
}

TEST_CASE("a fault past end of file is SIGBUS, like the kernel's mmap") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "eof");
  vmtest::memfd_file f(10000);  // 2 pages + a bit
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as);
  map_request rq;
  rq.length = 8 * vm_page_size;
  rq.prot = PROT_READ;
  rq.shared = false;
  rq.file = file_backing{f.fd, 0, &f, &src};
  auto* p = static_cast<const std::uint8_t*>(as.map(rq));
  std::uint8_t v = 1;
  CHECK(vmtest::probe_read(p + 9999, v) == 0);
  CHECK(v == pattern(9999));
  CHECK(vmtest::probe_read(p + 10001, v) == 0);  // rest of the last page: zeros
  CHECK(v == 0);
  CHECK(vmtest::probe_read(p + 3 * vm_page_size, v) == SIGBUS);
}

TEST_CASE("bad input gets a clear error") {
  vmtest::require_userfaultfd();
  aspace as;
  pager pg(as);
  void* out = nullptr;
  map_request rq;
  CHECK(as.try_map(rq, out) == std::errc::invalid_argument);  // zero length
  rq.length = 4096;
  rq.file = file_backing{-1, 0, nullptr, nullptr};
  CHECK(as.try_map(rq, out) == std::errc::invalid_argument);
  rq.file.reset();
  rq.prot = 0x100;
  CHECK(as.try_map(rq, out) == std::errc::invalid_argument);
  rq.prot = PROT_READ;
  rq.length = 3 * vm_page_size;
  void* p = as.map(rq);
  CHECK(as.munmap(static_cast<char*>(p) + 1, 4096) == std::errc::invalid_argument);
  CHECK(as.munmap(p, 0) == std::errc::invalid_argument);
  rq.fixed = true;
  rq.addr_hint = p;
  CHECK(as.try_map(rq, out) == std::errc::file_exists);
  CHECK(as.mprotect(p, 3 * vm_page_size, PROT_READ | PROT_WRITE) == std::error_code{});
  static_cast<char*>(p)[5] = 1;
  CHECK(as.msync(p, 4096, MS_SYNC | MS_ASYNC) == std::errc::invalid_argument);
  CHECK(as.munmap(static_cast<char*>(p) + 4096, 4096) == std::error_code{});  // the middle: the region splits
  CHECK(as.region_count() == 2);
  CHECK(as.mprotect(p, 3 * vm_page_size, PROT_READ) == std::errc::not_enough_memory);  // over the hole
  CHECK(as.msync(p, 3 * vm_page_size, MS_SYNC) == std::errc::not_enough_memory);
  CHECK(as.munmap(p, 3 * vm_page_size) == std::error_code{});
  CHECK(as.munmap(p, 3 * vm_page_size) == std::error_code{});  // nothing there: fine, like munmap(2)
  CHECK_THROWS_AS(pager(as, pager_options{1, 3 * vm_page_size}), std::system_error);  // not a power of 2
  CHECK_THROWS_AS(pager(as, pager_options{2, vm_page_size, vm_page_size, "p", true, nullptr, 1}), std::system_error);
}

TEST_CASE("sequential access grows the fault-around window; random access stays at one page") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "fault-around");
  const std::size_t size = 16 << 20;
  vmtest::memfd_file f(size);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as, pager_options{1});
  map_request rq;
  rq.length = size;
  rq.prot = PROT_READ;
  rq.shared = true;
  rq.file = file_backing{f.fd, 0, &f, &src};
  auto* p = static_cast<const std::uint8_t*>(as.map(rq));
  for (std::size_t i = 0; i < size; i += vm_page_size) REQUIRE(p[i] == pattern(i));
  const auto seq = pg.stats().faults;
  CHECK(seq < 64);  // 4096 pages: 1+2+4+...+512 then 2 MiB windows (read-ahead: fewer)
  // The same through a private mapping (UFFDIO_COPY windows and read-ahead), then random access.
  rq.shared = false;
  auto* pr = static_cast<const std::uint8_t*>(as.map(rq));
  for (std::size_t i = 0; i < size; i += vm_page_size) REQUIRE(pr[i + 17] == pattern(i + 17));
  CHECK(pg.stats().faults - seq < 64);
  CHECK(as.munmap(const_cast<std::uint8_t*>(pr), size) == std::error_code{});
  rq.shared = true;
  const auto seq2 = pg.stats().faults;
  auto* q = static_cast<const std::uint8_t*>(as.map(rq));
  std::size_t touched = 0;
  for (std::size_t k = 0; k < 256; ++k) {
    const std::size_t pgi = (k * 7919) % (size / vm_page_size);
    if (k > 0 && pgi == 0) break;
    REQUIRE(q[pgi * vm_page_size] == pattern(pgi * vm_page_size));
    ++touched;
  }
  CHECK(pg.stats().faults - seq2 == touched);  // one fault per random page
}

TEST_CASE("stopping the pager with faults pending: blocked threads are released, nobody hangs") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "shutdown");
  vmtest::memfd_file f(64 << 10);
  vmtest::gated_source src(f.fd, /*gate_every_page_in=*/true);
  aspace as;
  auto pg = std::make_unique<pager>(as, pager_options{1});
  map_request rq;
  rq.length = f.size;
  rq.prot = PROT_READ;
  rq.shared = false;
  rq.file = file_backing{f.fd, 0, &f, &src};
  auto* priv = static_cast<const std::uint8_t*>(as.map(rq));
  rq.shared = true;
  auto* shr = static_cast<const std::uint8_t*>(as.map(rq));
  rq.file.reset();
  rq.shared = false;
  auto* anon = static_cast<const std::uint8_t*>(as.map(rq));
  std::atomic<int> r1{-1}, r2{-1}, r3{-1};
  std::uint8_t v1 = 0, v2 = 0, v3 = 1;
  std::thread t1([&] { r1 = vmtest::probe_read(priv + 100, v1); });  // in flight: the page-in is gated
  while (src.entered.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread t2([&] { r2 = vmtest::probe_read(shr + 5 * vm_page_size, v2); });  // queued behind it
  std::thread t3([&] { r3 = vmtest::probe_read(anon + 7, v3); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::thread stopper([&] { pg->stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  src.open = true;  // the in-flight page-in returns; the pager finishes it and stops
  stopper.join();
  t1.join();
  t2.join();
  t3.join();
  CHECK(r1.load() == 0);  // served before the stop
  CHECK(v1 == pattern(100));
  // t2/t3 were either served by the pager before it stopped or by the kernel after: correct data.
  CHECK(r2.load() == 0);
  CHECK(v2 == pattern(5 * vm_page_size));
  CHECK(r3.load() == 0);
  CHECK(v3 == 0);
  // After the stop: file pages not yet filled, private and shared, are the memfd's (the file's own
  // bytes, never zeros in their place); mapping fails.
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(priv + 9 * vm_page_size, v) == 0);
  CHECK(v == pattern(9 * vm_page_size));
  CHECK(vmtest::probe_read(shr + 9 * vm_page_size, v) == 0);
  CHECK(v == pattern(9 * vm_page_size));
  void* out = nullptr;
  CHECK(as.try_map(rq, out) == std::error_code(ESHUTDOWN, std::generic_category()));
  pg.reset();
}
