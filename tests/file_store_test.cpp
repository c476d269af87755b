// The file store (resmgr/file_store.hpp): a ramfs holds many files under RLIMIT_NOFILE 1024 (one memfd
// for all of them), files move between size classes as they grow and keep their bytes (also under
// concurrent readers), mappings of a file among neighbours in one memfd see only that file (MAP_SHARED
// and MAP_PRIVATE through MISSING|MINOR + CONTINUE), shrinking drops pages (SIGBUS past the
// end), growing reads zeros, read(fd) into a mapping of the same file (direct copy) and of a neighbour,
// and extents are punched and recycled when their file dies; a mapped file moves into a sealed memfd of
// its own (its bytes, zeros where the arena had them, one move), closed when the file dies.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <faultsafe/resmgr/file_store.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/process_memory.hpp>
#include <string>
#include <thread>
#include <vector>

#include "vm_support.hpp"

using namespace faultsafe;

namespace {

// The byte at offset i of file number f.
std::uint8_t file_byte(std::size_t f, std::size_t i) { return static_cast<std::uint8_t>((f * 131 + i * 7 + (i >> 12)) & 0xff); }

std::vector<char> file_bytes(std::size_t f, std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<char>(file_byte(f, i));
  return v;
}

int open_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

// RLIMIT_NOFILE lowered for the scope.
struct fd_limit {
  rlimit old{};
  explicit fd_limit(rlim_t n) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit lim = old;
    lim.rlim_cur = std::min<rlim_t>(n, old.rlim_max);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lim) == 0);
  }
  ~fd_limit() { ::setrlimit(RLIMIT_NOFILE, &old); }
};

}  // namespace

TEST_CASE("20,000 files of 4 KiB in one ramfs under RLIMIT_NOFILE 1024; the client can still open") {
  vmtest::watchdog wd(240, "20,000 files");
  fd_limit lim(1024);
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int fds_before = open_fds();
  constexpr std::size_t files = 20000, size = 4096;
  for (std::size_t f = 0; f < files; ++f) {
    auto fd = bob.open("/ram/f" + std::to_string(f), O_RDWR | O_CREAT | O_EXCL, 0644);
    if (!fd) FAIL("open of file " << f << ": " << fd.error().message());  // EMFILE at 1,019 with a memfd each
    const auto data = file_bytes(f, size);
    REQUIRE(bob.pwrite(*fd, data.data(), size, 0).value() == size);
    REQUIRE(bob.close(*fd).ok());
  }
  CHECK(open_fds() - fds_before <= 2);  // the store's memfd (and nothing per file)
  auto extra = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // the process still has fds to spare
  CHECK(extra >= 0);
  if (extra >= 0) ::close(extra);
  const file_store_stats st = fs.store().stats();
  CHECK(st.extents == files);
  CHECK(st.chunks <= 2);  // 20,000 x 4 KiB = 80 MiB: one server mapping of 256 MiB
  // Every file reads back its own bytes.
  std::vector<char> buf(size);
  std::size_t wrong = 0;
  for (std::size_t f = 0; f < files; ++f) {
    auto fd = bob.open("/ram/f" + std::to_string(f), O_RDONLY);
    REQUIRE(fd.ok());
    REQUIRE(bob.pread(*fd, buf.data(), size + 1, 0).value() == size);
    if (buf != file_bytes(f, size)) ++wrong;
    REQUIRE(bob.close(*fd).ok());
  }
  CHECK(wrong == 0);
}

TEST_CASE("a file moves through the size classes as it grows and keeps its bytes, under concurrent readers") {
  vmtest::watchdog wd(120, "growth");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns, .file = {.max_size = 8 << 20}});
  process bob("bob", {1000, 100}, &ns);
  auto neighbour = bob.open("/ram/n", O_RDWR | O_CREAT, 0644);
  REQUIRE(neighbour.ok());
  const auto nb = file_bytes(99, 3000);
  REQUIRE(bob.pwrite(*neighbour, nb.data(), nb.size(), 0).value() == nb.size());
  auto fd = bob.open("/ram/g", O_RDWR | O_CREAT | O_APPEND, 0644);
  REQUIRE(fd.ok());
  auto attr = fs.lookup("g");
  REQUIRE(attr);
  CHECK(attr->capacity() == 4096);
  const std::size_t total = 3 << 20;  // past the largest small class: ends in the final class
  const auto want = file_bytes(7, total);
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> bad{0}, reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      process r("reader" + std::to_string(t), {1000, 100}, &ns);
      auto rfd = r.open("/ram/g", O_RDONLY);
      if (!rfd) return (void)bad.fetch_add(1);
      std::vector<char> b(8192);
      std::size_t off = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        auto n = r.pread(*rfd, b.data(), b.size(), static_cast<off_t>(off));
        if (!n) return (void)bad.fetch_add(1);
        for (std::size_t i = 0; i < *n; ++i)
          if (b[i] != want[off + i]) {
            bad.fetch_add(1);
            break;
          }
        reads.fetch_add(1, std::memory_order_relaxed);
        off = *n == 0 ? 0 : (off + 4096 * (t + 1)) % total;
      }
    });
  std::vector<std::uint64_t> caps{attr->capacity()};
  for (std::size_t off = 0; off < total;) {
    const std::size_t n = std::min<std::size_t>(total - off, 1000 + off / 3);  // growing appends
    REQUIRE(bob.write(*fd, want.data() + off, n).value() == n);
    off += n;
    if (attr->capacity() != caps.back()) caps.push_back(attr->capacity());
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(bad == 0);
  CHECK(reads > 0);
  // 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, then the final class (max_size).
  CHECK(caps == std::vector<std::uint64_t>{4096, 16384, 65536, 262144, 1048576, 8 << 20});
  CHECK(fs.store().stats().moves >= 5);
  std::vector<char> back(total);
  REQUIRE(bob.pread(*fd, back.data(), total, 0).value() == total);
  CHECK(back == want);
  std::vector<char> nback(4096);
  REQUIRE(bob.pread(*neighbour, nback.data(), nback.size(), 0).value() == nb.size());
  CHECK(std::memcmp(nback.data(), nb.data(), nb.size()) == 0);
  // ftruncate past the capacity moves too; the new bytes read as zeros.
  auto g2 = bob.open("/ram/t", O_RDWR | O_CREAT, 0644);
  REQUIRE(g2.ok());
  REQUIRE(bob.pwrite(*g2, "abc", 3, 0).value() == 3u);
  REQUIRE(bob.ftruncate(*g2, 100000).ok());
  CHECK(fs.lookup("t")->capacity() == 262144);
  std::vector<char> z(100000);
  REQUIRE(bob.pread(*g2, z.data(), z.size(), 0).value() == z.size());
  CHECK(std::memcmp(z.data(), "abc", 3) == 0);
  CHECK(std::count(z.begin() + 3, z.end(), 0) == 100000 - 3);
  CHECK(bob.ftruncate(*g2, (8 << 20) + 1).error().value() == EFBIG);
}

TEST_CASE("mappings of a file among neighbours in one memfd: its own bytes, shrink is SIGBUS, growth is zeros") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "mapped arena file");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns, .file = {.max_size = 1 << 20}});
  process bob("bob", {1000, 100}, &ns);
  announce_faulting_thread();
  constexpr std::size_t size = 8192;
  int fds[3];
  for (std::size_t f = 0; f < 3; ++f) {
    auto fd = bob.open("/ram/m" + std::to_string(f), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd.ok());
    fds[f] = *fd;
    const auto d = file_bytes(f, size);
    REQUIRE(bob.pwrite(*fd, d.data(), size, 0).value() == size);
  }
  auto b = fs.lookup("m1");
  CHECK(b->capacity() == 16384);
  CHECK(b->memfd() == fs.lookup("m0")->memfd());  // one memfd for all
  // MAP_SHARED of the middle file, reaching past its end: the file moves to its final extent first.
  constexpr std::size_t span = 16 * 4096;
  auto m = bob.mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  REQUIRE(m.ok());
  CHECK(b->mappable());
  auto* p = static_cast<std::uint8_t*>(*m);
  std::uint8_t v = 0;
  for (std::size_t i = 0; i < size; i += 997) {
    REQUIRE(vmtest::probe_read(p + i, v) == 0);
    CHECK(v == file_byte(1, i));
  }
  CHECK(vmtest::probe_read(p + size, v) == SIGBUS);  // past the end of the file, not a neighbour's bytes
  CHECK(vmtest::probe_read(p + span - 1, v) == SIGBUS);
  // A write through the mapping lands in this file only.
  REQUIRE(vmtest::probe_write(p + 10, 0xAB) == 0);
  char c = 0;
  REQUIRE(bob.pread(fds[1], &c, 1, 10).value() == 1u);
  CHECK(static_cast<std::uint8_t>(c) == 0xAB);
  for (int f : {0, 2}) {
    std::vector<char> back(size);
    REQUIRE(bob.pread(fds[f], back.data(), size, 0).value() == size);
    CHECK(back == file_bytes(static_cast<std::size_t>(f), size));
  }
  // MAP_PRIVATE of a neighbour (CONTINUE, then the kernel's copy-on-write): its bytes; private writes stay private.
  auto mp = bob.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fds[2], 0);
  REQUIRE(mp.ok());
  auto* q = static_cast<std::uint8_t*>(*mp);
  REQUIRE(vmtest::probe_read(q + 4097, v) == 0);
  CHECK(v == file_byte(2, 4097));
  REQUIRE(vmtest::probe_write(q + 5, 0x11) == 0);
  REQUIRE(bob.pread(fds[2], &c, 1, 5).value() == 1u);
  CHECK(static_cast<std::uint8_t>(c) == file_byte(2, 5));
  // read(fd) into a mapping of the same file (direct copy: store to store) and of a neighbour.
  REQUIRE(bob.pread(fds[1], p + 4096, 64, 0).value() == 64u);
  CHECK(std::memcmp(p + 4096, p, 64) == 0);
  REQUIRE(bob.pread(fds[0], p + 6000, 100, 0).value() == 100u);
  std::vector<char> got(100);
  REQUIRE(bob.pread(fds[1], got.data(), 100, 6000).value() == 100u);
  CHECK(got == file_bytes(0, 100));
  REQUIRE(bob.pread(fds[1], q + 100, 50, 0).value() == 50u);  // into the neighbour's private mapping
  CHECK(std::memcmp(q + 100, p, 50) == 0);
  // Shrink: the second page leaves the mapping (SIGBUS), the rest of the first page reads zeros.
  REQUIRE(bob.ftruncate(fds[1], 100).ok());
  CHECK(vmtest::probe_read(p + 4096, v) == SIGBUS);
  REQUIRE(vmtest::probe_read(p + 99, v) == 0);
  CHECK(v == file_byte(1, 99));
  REQUIRE(vmtest::probe_read(p + 100, v) == 0);
  CHECK(v == 0);
  REQUIRE(vmtest::probe_write(p + 200, 0x55) == 0);  // past the end, inside the last page (allowed)
  // Growth: everything past the old end reads zeros, also what the mapping wrote past the end.
  REQUIRE(bob.ftruncate(fds[1], size).ok());
  std::vector<char> back(size);
  REQUIRE(bob.pread(fds[1], back.data(), size, 0).value() == size);
  CHECK(std::count(back.begin() + 100, back.end(), 0) == static_cast<long>(size - 100));
  REQUIRE(vmtest::probe_read(p + 200, v) == 0);
  CHECK(v == 0);
  // (The second page of `p` stays SIGBUS: the pager poisoned it when the page-in refused it, and a
  // poisoned page is poisoned for the mapping's life. A new mapping sees the grown file.)
  auto m2 = bob.mmap(nullptr, size, PROT_READ, MAP_SHARED, fds[1], 0);
  REQUIRE(m2.ok());
  REQUIRE(vmtest::probe_read(static_cast<std::uint8_t*>(*m2) + 5000, v) == 0);
  CHECK(v == 0);
  REQUIRE(bob.munmap(*m2, size).ok());
  // A mapping may reach past max_size (as with the kernel): past the end of the file the page-in
  // refuses the touch, past the file's own memfd (its final capacity) the kernel does (SIGBUS).
  constexpr std::size_t far = (1 << 20) + 8 * 4096;
  auto wide = bob.mmap(nullptr, far, PROT_READ, MAP_SHARED, fds[0], 0);
  REQUIRE(wide.ok());
  auto* w = static_cast<std::uint8_t*>(*wide);
  REQUIRE(vmtest::probe_read(w + 5, v) == 0);
  CHECK(v == file_byte(0, 5));
  CHECK(vmtest::probe_read(w + (1 << 20), v) == SIGBUS);
  CHECK(vmtest::probe_read(w + far - 1, v) == SIGBUS);
  REQUIRE(bob.munmap(w, far).ok());
  REQUIRE(bob.munmap(p, span).ok());
  REQUIRE(bob.munmap(q, size).ok());
}

TEST_CASE("the first mmap of a growing file moves it to its final extent while writers append and readers read") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(120, "mmap racing growth");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns, .file = {.max_size = 4 << 20}});
  constexpr std::size_t total = 1 << 20;
  const auto want = file_bytes(5, total);
  std::atomic<std::size_t> written{0}, bad{0}, maps{0};
  std::atomic<bool> stop{false};
  process writer("writer", {1000, 100}, &ns);
  auto wfd = writer.open("/ram/r", O_RDWR | O_CREAT | O_APPEND, 0644);
  REQUIRE(wfd.ok());
  REQUIRE(writer.write(*wfd, want.data(), 100).value() == 100u);
  written = 100;
  std::thread mapper([&] {
    process m("mapper", {1000, 100}, &ns);
    announce_faulting_thread();
    auto fd = m.open("/ram/r", O_RDONLY);
    if (!fd) return (void)bad.fetch_add(1);
    while (!stop.load(std::memory_order_relaxed)) {
      const std::size_t seen = written.load(std::memory_order_acquire);  // bytes known to be in the file
      auto mp = m.mmap(nullptr, total, PROT_READ, MAP_SHARED, *fd, 0);
      if (!mp) return (void)bad.fetch_add(1);
      const auto* p = static_cast<const std::uint8_t*>(*mp);
      std::uint8_t v = 0;
      for (std::size_t off = 0; off < seen; off += 4093)
        if (vmtest::probe_read(p + off, v) != 0 || v != static_cast<std::uint8_t>(want[off])) {
          bad.fetch_add(1);
          break;
        }
      if (!m.munmap(*mp, total).ok()) bad.fetch_add(1);
      maps.fetch_add(1, std::memory_order_relaxed);
    }
  });
  std::thread reader([&] {
    process r("reader", {1000, 100}, &ns);
    auto fd = r.open("/ram/r", O_RDONLY);
    if (!fd) return (void)bad.fetch_add(1);
    std::vector<char> b(3000);
    while (!stop.load(std::memory_order_relaxed)) {
      const std::size_t seen = written.load(std::memory_order_acquire);
      const std::size_t off = seen > b.size() ? seen - b.size() : 0;
      auto n = r.pread(*fd, b.data(), b.size(), static_cast<off_t>(off));
      if (!n || *n < std::min(b.size(), seen - off) || std::memcmp(b.data(), want.data() + off, *n) != 0) bad.fetch_add(1);
    }
  });
  for (std::size_t off = 100; off < total;) {
    const std::size_t n = std::min<std::size_t>(total - off, 777 + off / 8);
    REQUIRE(writer.write(*wfd, want.data() + off, n).value() == n);
    off += n;
    written.store(off, std::memory_order_release);
  }
  while (maps.load() < 3) std::this_thread::yield();
  stop = true;
  mapper.join();
  reader.join();
  CHECK(bad == 0);
  CHECK(fs.lookup("r")->mappable());
  std::vector<char> back(total);
  REQUIRE(writer.pread(*wfd, back.data(), total, 0).value() == total);
  CHECK(back == want);
}

TEST_CASE("extents are punched and recycled when their file dies") {
  auto store = std::make_shared<file_store>();
  attr_options o{.max_size = 1 << 20, .name = "t", .store = store};
  std::uint64_t off = 0;
  {
    iofunc_attr a(0644, 0, 0, o);
    off = a.store_offset();
    {
      range_guard g(a.data_lock, 0, to_end, lock_mode::exclusive);
      REQUIRE(!a.grow_to(3000));
      std::memset(a.data(), 0x5A, 3000);
    }
    char c = 0;
    REQUIRE(::pread(store->fd(), &c, 1, static_cast<off_t>(off + 2999)) == 1);
    CHECK(c == 0x5A);
    CHECK(store->stats().extents == 1);
  }
  CHECK(store->stats().extents == 0);
  CHECK(store->stats().free_extents == 1);
  iofunc_attr b(0644, 0, 0, o);
  CHECK(b.store_offset() == off);  // recycled
  std::vector<char> z(4096, 1);
  REQUIRE(::pread(store->fd(), z.data(), z.size(), static_cast<off_t>(off)) == 4096);
  CHECK(std::count(z.begin(), z.end(), 0) == 4096);  // punched: zeros
  CHECK(file_store::class_for(0, 1 << 20) == 4096);
  CHECK(file_store::class_for(4097, 1 << 20) == 16384);
  CHECK(file_store::class_for(300000, 1 << 20) == 1 << 20);
  CHECK(file_store::class_for(300000, 300001) == 303104);  // final class: max_size rounded to pages
  CHECK(file_store::class_for(5000, std::uint64_t{256} << 20) == 16384);
  store_extent e;
  CHECK(store->allocate(1000, e).value() == EINVAL);
}

TEST_CASE("make_mappable moves a file into a sealed memfd of its own, once; it is punched and closed when the file dies") {
  auto store = std::make_shared<file_store>();
  attr_options o{.max_size = 1 << 20, .name = "t", .store = store};
  int own = -1, kept = -1;
  {
    iofunc_attr a(0644, 0, 0, o);
    {
      range_guard g(a.data_lock, 0, to_end, lock_mode::exclusive);
      REQUIRE(!a.grow_to(5000));
      std::memset(a.data(), 0x3C, 5000);
    }
    const std::uint64_t arena_off = a.store_offset();
    CHECK(a.memfd() == store->fd());
    CHECK(!a.mappable());
    REQUIRE(!a.make_mappable());
    CHECK(a.mappable());
    own = a.memfd();
    CHECK(own != store->fd());
    CHECK(a.store_offset() == 0);
    CHECK(a.capacity() == (1u << 20));
    CHECK(store->stats().own == 1);
    CHECK(store->stats().extents == 0);       // the arena extent went back
    CHECK(store->stats().free_extents == 2);  // its 4 KiB and 16 KiB extents, punched, for reuse
    struct ::stat st{};
    REQUIRE(::fstat(own, &st) == 0);
    CHECK(st.st_size == (1 << 20));
    CHECK((st.st_mode & 07777) == 0400);
    CHECK(::fcntl(own, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    char c = 0;
    REQUIRE(::pread(own, &c, 1, 4999) == 1);
    CHECK(c == 0x3C);
    REQUIRE(::pread(store->fd(), &c, 1, static_cast<off_t>(arena_off + 4999)) == 1);
    CHECK(c == 0);  // nothing of it left in the arena
    REQUIRE(!a.make_mappable());
    CHECK(a.memfd() == own);  // once
    CHECK(store->stats().own == 1);
    {
      range_guard g(a.data_lock, 0, to_end, lock_mode::exclusive);
      REQUIRE(!a.set_size(100));  // shrink: punched in its own memfd
    }
    REQUIRE(::pread(own, &c, 1, 4999) == 1);
    CHECK(c == 0);
    kept = ::dup(own);  // as another process holding the fd it was sent
    REQUIRE(kept >= 0);
    REQUIRE(::pread(kept, &c, 1, 99) == 1);
    CHECK(c == 0x3C);
  }
  char c = 1;
  REQUIRE(::pread(kept, &c, 1, 99) == 1);
  CHECK(c == 0);  // punched when the file died: nothing of it is left to read or to pin
  ::close(kept);
  CHECK(store->stats().own == 0);
  CHECK(::fcntl(own, F_GETFD) == -1);  // closed with the file
  CHECK(errno == EBADF);
}
