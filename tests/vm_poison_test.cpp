// A page that failed its page-in because it lay past the end of the file (SIGBUS at the access) is
// served again once the file covers it: a growing ftruncate, a write past the end or a fallocate makes
// it read the file's bytes (zeros, or the data written), as through a kernel mapping, in MAP_SHARED
// and MAP_PRIVATE mappings alike; the private mapping's own written pages are kept. A plain memfd
// mapped through memfd_page_source gets the same once its owner calls file_grown().
#include <doctest/doctest.h>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/vm/poisoned_pages.hpp>

#include "vm_ramfs_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

namespace {
constexpr std::size_t pg = vm_page_size;

// Probes byte `off` of both mappings: SIGBUS in both, or the value `want` in both.
void expect_sigbus(const std::uint8_t* s, const std::uint8_t* q, std::size_t off) {
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(s + off, v) == SIGBUS);
  CHECK(vmtest::probe_read(q + off, v) == SIGBUS);
}
void expect_value(const std::uint8_t* s, const std::uint8_t* q, std::size_t off, std::uint8_t want) {
  std::uint8_t v = 0xAA;
  CHECK(vmtest::probe_read(s + off, v) == 0);
  CHECK(int(v) == int(want));
  v = 0xAA;
  CHECK(vmtest::probe_read(q + off, v) == 0);
  CHECK(int(v) == int(want));
}
}  // namespace

TEST_CASE("a page poisoned past the end of a ramfs file is served again once the file grows over it") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(40, "poison after growth");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int fd = vmtest::make_ramfs_file(bob, "/ram/p", 8 * pg);
  auto shared = bob.mmap(nullptr, 8 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  auto priv = bob.mmap(nullptr, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  REQUIRE(shared.ok());
  REQUIRE(priv.ok());
  auto* s = static_cast<std::uint8_t*>(*shared);
  auto* q = static_cast<std::uint8_t*>(*priv);
  REQUIRE(vmtest::probe_write(q + 10, 0x77) == 0);  // the private mapping's own data: must stay
  REQUIRE(vmtest::probe_write(q + 3 * pg + 10, 0x78) == 0);  // past the later end: the shrink drops it (Linux)

  SUBCASE("ftruncate up") {
    REQUIRE(bob.ftruncate(fd, 2 * pg).ok());
    expect_sigbus(s, q, 5 * pg + 1);
    REQUIRE(bob.ftruncate(fd, 8 * pg).ok());
    expect_value(s, q, 5 * pg + 1, 0);
  }
  SUBCASE("a write past the end") {
    REQUIRE(bob.ftruncate(fd, 2 * pg).ok());
    expect_sigbus(s, q, 6 * pg + 5);
    const std::uint8_t b = 0x5A;
    REQUIRE(bob.pwrite(fd, &b, 1, static_cast<off_t>(6 * pg + 5)).value() == 1);
    expect_value(s, q, 6 * pg + 5, 0x5A);
    expect_value(s, q, 6 * pg + 4, 0);
    expect_sigbus(s, q, 7 * pg);  // still past the end
  }
  SUBCASE("fallocate") {
    REQUIRE(bob.ftruncate(fd, 2 * pg).ok());
    expect_sigbus(s, q, 7 * pg + 100);
    REQUIRE(bob.fallocate(fd, 0, 0, static_cast<off_t>(8 * pg)).ok());
    expect_value(s, q, 7 * pg + 100, 0);
  }
  SUBCASE("the page is poisoned again by a second shrink") {
    REQUIRE(bob.ftruncate(fd, 2 * pg).ok());
    expect_sigbus(s, q, 5 * pg);
    REQUIRE(bob.ftruncate(fd, 8 * pg).ok());
    expect_value(s, q, 5 * pg, 0);
    REQUIRE(bob.ftruncate(fd, 2 * pg).ok());
    std::uint8_t v = 0;
    CHECK(vmtest::probe_read(q + 4 * pg, v) == SIGBUS);  // private: an unfilled page past the end
    REQUIRE(bob.ftruncate(fd, 8 * pg).ok());
    CHECK(vmtest::probe_read(q + 4 * pg, v) == 0);
    CHECK(v == 0);
  }
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(q + 10, v) == 0);  // the private mapping's written page inside the file is kept
  CHECK(int(v) == 0x77);
  // Its written page past the shrink's end was dropped, as Linux's truncate drops private copies
  // (vm/private_copies.hpp): after the growth it reads the file again (zeros; the write past the end
  // is on another page).
  CHECK(vmtest::probe_read(q + 3 * pg + 10, v) == 0);
  CHECK(int(v) == 0);
  CHECK(bob.munmap(*shared, 8 * pg).ok());
  CHECK(bob.munmap(*priv, 8 * pg).ok());
  CHECK(bob.close(fd).ok());
}

TEST_CASE("memfd_page_source: a page past the end of the memfd is SIGBUS, and readable once the memfd grows") {
  // The mapping maps the memfd itself (private too: vm/aspace.hpp), so the kernel refuses a page past
  // the memfd's size before any userfault (no poison marker is left: the growth alone makes it
  // readable, as on Linux); file_grown() finds nothing to do. Pages a page-in refused are the first
  // test case's (a store memfd larger than the file).
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "memfd poison after growth");
  vmtest::memfd_file f(2 * pg);  // mapped over 8 pages: pages 2..7 lie past the end
  memfd_page_source src(f.fd);
  aspace as;
  pager pgr(as);
  map_request rq;
  rq.length = 8 * pg;
  rq.prot = PROT_READ | PROT_WRITE;
  rq.file = file_backing{f.fd, 0, &f, &src};
  void* m = as.map(rq);
  auto* q = static_cast<std::uint8_t*>(m);
  REQUIRE(vmtest::probe_write(q + 1, 0x66) == 0);
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(q + 5 * pg, v) == SIGBUS);
  CHECK(vmtest::probe_read(q + 5 * pg, v) == SIGBUS);
  CHECK(poisoned_pages::instance().size() == 0);
  REQUIRE(::ftruncate(f.fd, static_cast<off_t>(8 * pg)) == 0);
  CHECK(vmtest::probe_read(q + 5 * pg, v) == 0);  // served, also before the growth is announced
  file_grown(f.fd, 2 * pg, 8 * pg);
  CHECK(vmtest::probe_read(q + 5 * pg, v) == 0);
  CHECK(v == 0);
  CHECK(vmtest::probe_read(q + 1, v) == 0);  // the private page written before is kept
  CHECK(int(v) == 0x66);
  CHECK(poisoned_pages::instance().size() == 0);
  CHECK(!as.munmap(m, 8 * pg));
}
