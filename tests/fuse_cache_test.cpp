// The FUSE bridge's page cache across opens (page-cache mode; resmgr/fuse_bridge.hpp, "Caching"): an
// open keeps the kernel's cached pages of a file only while the server's data version says nothing
// changed the file since they were filled; any change by another client of the same server (a write,
// a truncate, a fallocate, stores through a faultsafe mapping) is seen by the next open through the
// mount. The bridge and the other client share one ramfs in this process, as a server that is mounted
// and also serves its own clients does. Residency in the kernel's page cache is read with mincore(2)
// on an untouched mapping of the file on the mount. Needs /dev/fuse and root (or fusermount3):
// otherwise exits 77 and says why.
#include <doctest/doctest.h>
#include <faultsafe/resmgr/fuse_bridge.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support/sync.hpp"

using namespace faultsafe;

namespace {

constexpr std::size_t file_bytes = 64 * 1024;
constexpr std::size_t pages = file_bytes / 4096;

// The mount: a ramfs served through the bridge at a temporary directory, its session on a thread.
struct mounted {
  ramfs fs{[] {
    ramfs_options o;
    o.prefix = "/cache";
    o.dir_mode = 01777;
    return o;
  }()};
  fuse_bridge bridge{"/cache", [] {
    fuse_bridge_options o;
    o.handle_signals = false;
    o.io = fuse_io_mode::page_cache;
    return o;
  }()};
  std::string dir;
  std::thread loop;
  bool up = false;
  mounted() {
    char tmpl[] = "/tmp/faultsafe-fuse-cache-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir = tmpl;
    if (auto ec = bridge.mount(dir)) {
      std::printf("SKIP: cannot mount the bridge: %s\n", bridge.error_message().c_str());
      return;
    }
    loop = std::thread([this] { (void)bridge.run(); });
    up = true;
  }
  ~mounted() {
    bridge.stop();
    if (loop.joinable()) loop.join();
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
};

mounted& mount_or_skip() {
  static mounted m;
  if (!m.up) {
    std::fflush(stdout);
    std::_Exit(77);
  }
  return m;
}

// Pages of the file on the mount that are in the kernel's page cache (mincore of an untouched mapping).
std::size_t cached_pages(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  void* p = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(p != MAP_FAILED);
  unsigned char vec[pages] = {};
  REQUIRE(::mincore(p, file_bytes, vec) == 0);
  ::munmap(p, file_bytes);
  ::close(fd);
  std::size_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

// The file's bytes, read through the mount by a new open.
std::string read_all(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  std::string s(file_bytes, '\0');
  const ssize_t n = ::pread(fd, s.data(), s.size(), 0);
  ::close(fd);
  REQUIRE(n >= 0);
  s.resize(static_cast<std::size_t>(n));
  return s;
}

}  // namespace

TEST_CASE("data_version: moves with every change, not with reads; ENOSYS from a server whose write is its own") {
  ramfs_options o;
  o.prefix = "/dv";
  ramfs fs(o);
  process p("dv client");
  auto fd = p.open("/dv/f", O_CREAT | O_RDWR, 0644);
  REQUIRE(fd.ok());
  auto v = [&] {
    auto r = p.data_version(*fd);
    REQUIRE(r.ok());
    return r.value();
  };
  const std::uint64_t v0 = v();
  CHECK(v0 > 0);
  char buf[16] = {};
  REQUIRE(p.pread(*fd, buf, sizeof buf, 0).ok());
  CHECK(v() == v0);
  REQUIRE(p.pwrite(*fd, "x", 1, 0).ok());
  const std::uint64_t v1 = v();
  CHECK(v1 > v0);
  REQUIRE(p.ftruncate(*fd, 10).ok());
  const std::uint64_t v2 = v();
  CHECK(v2 > v1);
  REQUIRE(p.ftruncate(*fd, 10).ok());  // same size: nothing changed
  CHECK(v() == v2);
  REQUIRE(p.fallocate(*fd, 0, 0, 100).ok());
  CHECK(v() > v2);
  (void)p.close(*fd);
  CHECK(p.data_version(*fd).error() == std::errc::bad_file_descriptor);

  // A server that replaces write is not trusted to count its changes.
  ramfs_options o2;
  o2.prefix = "/dv2";
  o2.customize = [](io_funcs& f) {
    auto w = f.write;
    f.write = [w](request_context& ctx, ocb_base& b, const io_rw_request& q) { return w(ctx, b, q); };
  };
  ramfs fs2(o2);
  auto fd2 = p.open("/dv2/f", O_CREAT | O_RDWR, 0644);
  REQUIRE(fd2.ok());
  CHECK(p.data_version(*fd2).error() == std::errc::function_not_supported);
  (void)p.close(*fd2);
}

TEST_CASE("an open keeps cached pages only while no client changed the file; every change is seen") {
  mounted& m = mount_or_skip();
  test_support::watchdog wd("fuse cache test", std::chrono::seconds(60));
  const std::string path = m.dir + "/f", server_path = "/cache/f";

  // Written through the mount, then read by a new open: the write moved the version, so that open
  // drops the pages and reads the file again; the read fills the cache.
  {
    const std::string a(file_bytes, 'a');
    const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, a.data(), a.size(), 0) == static_cast<ssize_t>(a.size()));
    ::close(fd);
    CHECK(read_all(path) == a);
  }
  // Nothing changed since: every open keeps the pages (mincore opens the file too).
  CHECK(cached_pages(path) == pages);
  CHECK(read_all(path) == std::string(file_bytes, 'a'));
  CHECK(cached_pages(path) == pages);

  process other("other client");
  // Another client of the same server writes one page: the next open drops the cache and sees it.
  {
    auto fd = other.open(server_path, O_RDWR);
    REQUIRE(fd.ok());
    const std::string b(4096, 'b');
    REQUIRE(other.pwrite(*fd, b.data(), b.size(), 8192).ok());
    (void)other.close(*fd);
    CHECK(cached_pages(path) == 0);  // this open dropped them
    std::string want(file_bytes, 'a');
    want.replace(8192, 4096, b);
    CHECK(read_all(path) == want);
    CHECK(cached_pages(path) == pages);
  }
  // A truncate by the other client, then a growth back (zeros): seen.
  {
    auto fd = other.open(server_path, O_RDWR);
    REQUIRE(fd.ok());
    REQUIRE(other.ftruncate(*fd, 100).ok());
    REQUIRE(other.ftruncate(*fd, file_bytes).ok());
    (void)other.close(*fd);
    const std::string got = read_all(path);
    REQUIRE(got.size() == file_bytes);
    CHECK(got.substr(0, 100) == std::string(100, 'a'));
    CHECK(got.substr(100) == std::string(file_bytes - 100, '\0'));
  }
  // fallocate(PUNCH_HOLE) by the other client: seen.
  {
    auto fd = other.open(server_path, O_RDWR);
    REQUIRE(fd.ok());
    REQUIRE(other.fallocate(*fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 50).ok());
    (void)other.close(*fd);
    const std::string got = read_all(path);
    CHECK(got.substr(0, 50) == std::string(50, '\0'));
    CHECK(got.substr(50, 50) == std::string(50, 'a'));
  }
  // Stores through the other client's faultsafe mapping count no version: from then on every open
  // drops the cache, so the stores are seen by the next open, and so are later ones.
  {
    auto fd = other.open(server_path, O_RDWR);
    REQUIRE(fd.ok());
    auto v = other.data_version(*fd);
    REQUIRE(v.ok());
    CHECK(v.value() > 0);
    auto p = other.mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    REQUIRE(p.ok());
    auto v2 = other.data_version(*fd);
    REQUIRE(v2.ok());
    CHECK(v2.value() == 0);  // mapped: no version
    auto* bytes = static_cast<char*>(*p);
    std::memset(bytes, 'c', 4096);
    std::string got = read_all(path);
    CHECK(got.substr(0, 4096) == std::string(4096, 'c'));
    std::memset(bytes + 4096, 'd', 4096);
    got = read_all(path);
    CHECK(got.substr(4096, 4096) == std::string(4096, 'd'));
    REQUIRE(other.munmap(*p, file_bytes).ok());
    (void)other.close(*fd);
  }
}
