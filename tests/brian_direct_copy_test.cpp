// The direct copy path (resmgr/direct_copy.hpp): read/pread/readv into mappings of the same file and
// write from one, served without a fault: MAP_SHARED store to store, MAP_PRIVATE by UFFDIO_COPY,
// memmove semantics for overlap, destinations spanning several mappings or partly unmapped, a
// single-threaded server. Every case checks the bytes against a model of the file and checks the
// direct path's counters (so a silent fall-back to the fault path fails the test).
#include <sys/uio.h>

#include <memory>

#include "brian_support.hpp"

using namespace faultsafe;
using briantest::first_diff;
using briantest::make_file;
using vmtest::pattern;

namespace {

// The set-up every case shares: userfaultfd (or skip), a watchdog over the whole case (set-up and
// teardown included), the ramfs and bob, and one file `path` of `size` bytes whose contents are also in
// `model`. The direct path must report nothing: checked when the case ends.
struct fixture {
  fixture(const char* what, const char* path, std::size_t size, thread_pool_options pool = {1, 4})
      : wd((vmtest::require_userfaultfd(), 20), what),
        fs({.name = "ram", .prefix = "/ram", .pool = pool, .ns = &ns}),
        size(size),
        fd(make_file(bob, path, size, model)) {}
  ~fixture() { CHECK(rec.rec.count() == 0); }
  fixture(const fixture&) = delete;
  fixture& operator=(const fixture&) = delete;

  /// Maps `len` bytes (0: the whole file) of the file from offset `off`, read-write, `flags` (MAP_SHARED
  /// or MAP_PRIVATE).
  std::uint8_t* map(int flags, std::size_t len = 0, std::size_t off = 0) {
    auto m = bob.mmap(nullptr, len != 0 ? len : size, PROT_READ | PROT_WRITE, flags, fd, static_cast<off_t>(off));
    REQUIRE(m.ok());
    return static_cast<std::uint8_t*>(*m);
  }
  /// The file's bytes, read through the server.
  std::vector<std::uint8_t> file() { return briantest::file_bytes(bob, fd); }

  vmtest::watchdog wd;
  path_namespace ns;
  briantest::recording rec;
  ramfs fs;
  process bob{"bob", {1000, 100}, &ns};
  std::vector<std::uint8_t> model;
  std::size_t size;
  int fd;
};

// Reserves `pages` pages of address space (PROT_NONE, never touched), for MAP_FIXED mappings side by
// side. Pages handed out with release() are no longer the reservation's (the destructor leaves them).
struct reservation {
  explicit reservation(std::size_t pages) : pages(pages), released(pages, false) {
    void* p = ::mmap(nullptr, pages * vm_page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base = static_cast<std::uint8_t*>(p);
  }
  // Frees [page, page + n) of the reservation so that a MAP_FIXED mapping can take it.
  std::uint8_t* release(std::size_t page, std::size_t n) {
    REQUIRE(::munmap(base + page * vm_page_size, n * vm_page_size) == 0);
    for (std::size_t i = page; i < page + n; ++i) released[i] = true;
    return base + page * vm_page_size;
  }
  ~reservation() {
    for (std::size_t i = 0; i < pages; ++i)
      if (!released[i]) ::munmap(base + i * vm_page_size, vm_page_size);
  }
  std::size_t pages;
  std::vector<bool> released;
  std::uint8_t* base;
};

}  // namespace

TEST_CASE("Brian: read(fd) into a MAP_SHARED mapping of the same file, same offset, served store to store") {
  fixture f("brian shared read", "/ram/a", 256 << 10);
  auto* p = f.map(MAP_SHARED);
  const auto before = direct_copy_stats();
  REQUIRE(f.bob.lseek(f.fd, 0, SEEK_SET).ok());
  auto r = f.bob.read(f.fd, p, f.size);  // the seed's read(fd, ..., ptr): every destination page is absent
  REQUIRE(r.ok());
  CHECK(*r == f.size);
  const auto after = direct_copy_stats();
  CHECK(after.reads == before.reads + 1);
  CHECK(after.store_bytes - before.store_bytes == f.size);
  CHECK(first_diff(p, f.model.data(), f.size) == -1);  // through the mapping (MINOR faults now, no lock held)
  CHECK(f.bob.lseek(f.fd, 0, SEEK_CUR).value() == static_cast<off_t>(f.size));
}

TEST_CASE("pread at unaligned offsets into an overlapping MAP_SHARED destination has memmove semantics") {
  fixture f("overlap", "/ram/o", 64 << 10);
  auto* p = f.map(MAP_SHARED);
  struct step {
    std::size_t dst, src, n;
  };
  // Destination after the source (a forward memcpy would smear), before it, unaligned, across pages.
  for (const step s : {step{5000, 100, 9000}, step{123, 777, 10000}, step{4095, 4097, 20001}, step{1, 0, 40000}}) {
    CAPTURE(s.dst);
    CAPTURE(s.src);
    auto r = f.bob.pread(f.fd, p + s.dst, s.n, static_cast<off_t>(s.src));
    REQUIRE(r.ok());
    CHECK(*r == s.n);
    std::memmove(f.model.data() + s.dst, f.model.data() + s.src, s.n);
    CHECK(first_diff(f.file().data(), f.model.data(), f.size) == -1);
    CHECK(first_diff(p, f.model.data(), f.size) == -1);
  }
}

TEST_CASE("a destination mapping at a different offset of the same file, and a read past the end of the file") {
  fixture f("offset mapping", "/ram/b", 256 << 10);
  const std::size_t moff = 128 << 10, mlen = 64 << 10;
  auto* p = f.map(MAP_SHARED, mlen, moff);
  const auto before = direct_copy_stats();
  auto r = f.bob.pread(f.fd, p + 10, 50000, 3);
  REQUIRE(r.ok());
  CHECK(*r == 50000);
  std::memmove(f.model.data() + moff + 10, f.model.data() + 3, 50000);
  CHECK(direct_copy_stats().store_bytes - before.store_bytes == 50000);
  CHECK(first_diff(f.file().data(), f.model.data(), f.size) == -1);
  CHECK(first_diff(p, f.model.data() + moff, mlen) == -1);
  // Reading near the end returns only what the file has.
  r = f.bob.pread(f.fd, p, 4096, static_cast<off_t>(f.size - 100));
  REQUIRE(r.ok());
  CHECK(*r == 100);
  std::memmove(f.model.data() + moff, f.model.data() + f.size - 100, 100);
  CHECK(first_diff(p, f.model.data() + moff, mlen) == -1);
}

TEST_CASE("MAP_PRIVATE destination: UFFDIO_COPY for absent pages, a plain copy into present ones, the file untouched") {
  fixture f("private", "/ram/c", 64 << 10);
  auto* p = f.map(MAP_PRIVATE);
  std::vector<std::uint8_t> mem = f.model;  // the private memory's model
  p[3 * vm_page_size + 5] = 0xAB;          // page 3 present (faulted in, privately modified)
  mem[3 * vm_page_size + 5] = 0xAB;
  const auto before = direct_copy_stats();
  const std::size_t dst = 100, src = 9000, n = 4 * vm_page_size + 50;  // pages 0..4, partial at both ends
  auto r = f.bob.pread(f.fd, p + dst, n, src);
  REQUIRE(r.ok());
  CHECK(*r == n);
  std::memcpy(mem.data() + dst, f.model.data() + src, n);
  const auto after = direct_copy_stats();
  CHECK(after.reads == before.reads + 1);
  CHECK(after.uffd_bytes > before.uffd_bytes);
  CHECK(after.present_bytes - before.present_bytes == vm_page_size);
  CHECK(first_diff(p, mem.data(), f.size) == -1);
  CHECK(first_diff(f.file().data(), f.model.data(), f.size) == -1);  // private: file unchanged
}

TEST_CASE("readv across two mappings of the same file (one MAP_SHARED, one MAP_PRIVATE)") {
  fixture f("readv", "/ram/v", 256 << 10);
  auto* pa = f.map(MAP_SHARED, 64 << 10);
  auto* pb = f.map(MAP_PRIVATE, 64 << 10, 192 << 10);
  std::vector<std::uint8_t> bmem(f.model.begin() + (192 << 10), f.model.begin() + (256 << 10));
  REQUIRE(f.bob.lseek(f.fd, 50000, SEEK_SET).ok());
  iovec iov[2] = {{pa + 100, 5000}, {pb + 7, 6000}};
  const auto before = direct_copy_stats();
  auto r = f.bob.readv(f.fd, iov, 2);
  REQUIRE(r.ok());
  CHECK(*r == 11000);
  std::memmove(f.model.data() + 100, f.model.data() + 50000, 5000);
  std::memcpy(bmem.data() + 7, f.model.data() + 55000, 6000);
  CHECK(direct_copy_stats().reads == before.reads + 2);
  CHECK(first_diff(pa, f.model.data(), 64 << 10) == -1);
  CHECK(first_diff(pb, bmem.data(), bmem.size()) == -1);
  CHECK(first_diff(f.file().data(), f.model.data(), f.size) == -1);
  CHECK(f.bob.lseek(f.fd, 0, SEEK_CUR).value() == 61000);
}

TEST_CASE("one read spanning two adjacent mappings and then unmapped memory: EFAULT after the bytes before it") {
  briantest::restore_guarded_copy_handler();
  fixture f("spanning", "/ram/s", 64 << 10);
  // [0,2): MAP_SHARED of file pages 4..5; [2,4): MAP_PRIVATE of file pages 0..1; [4,6): PROT_NONE hole.
  // Another thread (a server's allocation) may take a released hole before our MAP_FIXED: retry.
  std::unique_ptr<reservation> resv;
  result<void*> a{std::error_code{}}, b{std::error_code{}};
  for (int attempt = 0; attempt < 50; ++attempt) {
    resv = std::make_unique<reservation>(6);
    a = f.bob.mmap(resv->release(0, 2), 2 * vm_page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, f.fd, 4 * vm_page_size);
    if (!a) continue;
    b = f.bob.mmap(resv->release(2, 2), 2 * vm_page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, f.fd, 0);
    if (b) break;
    REQUIRE(f.bob.munmap(*a, 2 * vm_page_size).ok());
  }
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  reservation& res = *resv;
  REQUIRE(*a == res.base);
  REQUIRE(*b == res.base + 2 * vm_page_size);
  std::vector<std::uint8_t> bmem(f.model.begin(), f.model.begin() + 2 * vm_page_size);
  const auto before = direct_copy_stats();
  // Fits in both mappings: one call, two parts (shared then private), source [30000, 30000 + n).
  const std::size_t n = 3 * vm_page_size;
  auto r = f.bob.pread(f.fd, res.base + 1000, n, 30000);
  REQUIRE(r.ok());
  CHECK(*r == n);
  std::vector<std::uint8_t> src(f.model.begin() + 30000, f.model.begin() + 30000 + n);
  std::memcpy(f.model.data() + 4 * vm_page_size + 1000, src.data(), 2 * vm_page_size - 1000);
  std::memcpy(bmem.data(), src.data() + (2 * vm_page_size - 1000), n - (2 * vm_page_size - 1000));
  CHECK(direct_copy_stats().reads == before.reads + 1);
  CHECK(first_diff(res.base, f.model.data() + 4 * vm_page_size, 2 * vm_page_size) == -1);
  CHECK(first_diff(res.base + 2 * vm_page_size, bmem.data(), bmem.size()) == -1);
  CHECK(first_diff(f.file().data(), f.model.data(), f.size) == -1);
  // Into the private mapping and on into the PROT_NONE hole: the private bytes land, and the read
  // returns their count (a short count, read(2)).
  r = f.bob.pread(f.fd, res.base + 3 * vm_page_size + 96, 2 * vm_page_size, 100);
  REQUIRE(r.ok());
  CHECK(*r == vm_page_size - 96);
  // Starting in the hole: nothing copied, EFAULT.
  r = f.bob.pread(f.fd, res.base + 4 * vm_page_size, 100, 100);
  REQUIRE(!r.ok());
  CHECK(r.error() == std::errc::bad_address);
  std::memcpy(bmem.data() + vm_page_size + 96, f.model.data() + 100, vm_page_size - 96);
  CHECK(first_diff(res.base + 2 * vm_page_size, bmem.data(), bmem.size()) == -1);
  CHECK(f.bob.munmap(*a, 2 * vm_page_size).ok());
  CHECK(f.bob.munmap(*b, 2 * vm_page_size).ok());
}

TEST_CASE("write(fd) from a mapping of the same fd: MAP_SHARED overlapping (memmove), MAP_PRIVATE modified, growing") {
  fixture f("write from mapping", "/ram/w", 64 << 10);
  auto* ps = f.map(MAP_SHARED);
  auto* pp = f.map(MAP_PRIVATE);
  const auto before = direct_copy_stats();
  auto w = f.bob.pwrite(f.fd, ps + 1000, 20000, 5000);  // target after source, overlapping
  REQUIRE(w.ok());
  CHECK(*w == 20000);
  std::memmove(f.model.data() + 5000, f.model.data() + 1000, 20000);
  CHECK(first_diff(f.file().data(), f.model.data(), f.size) == -1);
  // Private: page 0 modified privately (present), pages 1..2 absent (their image is the file's now).
  for (int i = 0; i < 10; ++i) pp[i] = static_cast<std::uint8_t>(0xC0 + i);
  std::vector<std::uint8_t> src(f.model.begin(), f.model.begin() + 2 * vm_page_size + 100);
  for (int i = 0; i < 10; ++i) src[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(0xC0 + i);
  REQUIRE(f.bob.lseek(f.fd, 0, SEEK_END).ok());  // write(2) at the end: grows the file
  w = f.bob.write(f.fd, pp, src.size());
  REQUIRE(w.ok());
  CHECK(*w == src.size());
  f.model.insert(f.model.end(), src.begin(), src.end());
  const auto after = direct_copy_stats();
  CHECK(after.writes == before.writes + 2);
  CHECK(after.store_bytes - before.store_bytes == 20000);
  CHECK(first_diff(f.file().data(), f.model.data(), f.model.size()) == -1);
  CHECK(f.file().size() == f.model.size());
}

TEST_CASE("a single-threaded server serves Brian's read by the direct path (no second thread needed)") {
  fixture f("single-threaded", "/ram/one", 128 << 10, {1, 1});
  auto* p = f.map(MAP_SHARED);
  auto* pq = f.map(MAP_PRIVATE);
  auto r = f.bob.pread(f.fd, p + 8192, f.size - 8192, 0);
  REQUIRE(r.ok());
  CHECK(*r == f.size - 8192);
  std::memmove(f.model.data() + 8192, f.model.data(), f.size - 8192);
  r = f.bob.pread(f.fd, pq, f.size, 0);
  REQUIRE(r.ok());
  CHECK(*r == f.size);
  CHECK(first_diff(p, f.model.data(), f.size) == -1);
  CHECK(first_diff(pq, f.model.data(), f.size) == -1);
  CHECK(f.fs.srv().threads() == 1);
}
