// Failed calls have no side effects, partial writes are short counts (issue 14, items 4 and 5); own OCB
// types work with the default handlers (issue 17, item 4); reports name the handler's line, not the
// standard library's (issue 17, item 7).
#include <doctest/doctest.h>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "brian_support.hpp"
#include "resmgr_test_util.hpp"

using namespace faultsafe;

namespace {

bool is(const std::error_code& ec, int e) { return ec.value() == e && ec.category() == std::generic_category(); }

// The file as the store holds it: exists, size, bytes.
struct snapshot {
  bool exists = false;
  std::string bytes;
  bool operator==(const snapshot&) const = default;
};
snapshot snap(const ramfs& fs, const std::string& name) {
  snapshot s;
  auto a = fs.lookup(name);
  if (!a) return s;
  s.exists = true;
  s.bytes.assign(reinterpret_cast<const char*>(a->data()), static_cast<std::size_t>(a->size()));
  return s;
}

// Two pages: the first readable, the second PROT_NONE (a client buffer that turns bad part-way).
struct half_bad_buffer {
  unsigned char* p = nullptr;
  half_bad_buffer() {
    void* m = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    p = static_cast<unsigned char*>(m);
    for (int i = 0; i < 4096; ++i) p[i] = static_cast<unsigned char>('a' + i % 26);
    REQUIRE(::mprotect(p + 4096, 4096, PROT_NONE) == 0);
  }
  ~half_bad_buffer() { ::munmap(p, 8192); }
  half_bad_buffer(const half_bad_buffer&) = delete;
  half_bad_buffer& operator=(const half_bad_buffer&) = delete;
  [[nodiscard]] const unsigned char* bad() const { return p + 4096; }
};

constexpr std::uint64_t max_file = 64 * 1024;

struct fixture {
  path_namespace ns;
  ramfs fs{{.name = "ram", .prefix = "/r", .pool = {1, 2}, .ns = &ns, .file = {.max_size = max_file}}};
  process p{"p", {1000, 100}, &ns};
  fixture() { reinstall_guarded_copy_handler(); }  // in front of doctest's per-test-case handler
};

}  // namespace

TEST_CASE("a failed open creates nothing and truncates nothing") {
  faultsafe_test::watchdog wd("failed open");
  fixture f;
  // O_CREAT with a bad access mode: EINVAL, and no file (it used to be inserted before the check).
  CHECK(is(f.p.open("/r/x", O_CREAT | O_ACCMODE, 0644).error(), EINVAL));
  CHECK(is(f.p.open("/r/x", O_RDONLY).error(), ENOENT));
  CHECK(f.fs.lookup("x") == nullptr);
  CHECK(f.fs.names().empty());
  // An existing file with content: refused O_TRUNC opens leave it alone.
  auto fd = f.p.open("/r/y", O_CREAT | O_RDWR, 0600);
  REQUIRE(fd);
  REQUIRE(f.p.pwrite(*fd, "content", 7, 0).value_or(0) == 7);
  const snapshot before = snap(f.fs, "y");
  process other("other", {2000, 200}, &f.ns);
  CHECK(is(other.open("/r/y", O_RDONLY | O_TRUNC).error(), EACCES));  // O_TRUNC needs write permission
  CHECK(is(other.open("/r/y", O_WRONLY | O_TRUNC).error(), EACCES));
  CHECK(is(f.p.open("/r/y", O_CREAT | O_EXCL | O_RDWR | O_TRUNC, 0600).error(), EEXIST));
  CHECK(is(f.p.open("/r/y", O_ACCMODE | O_TRUNC).error(), EINVAL));
  CHECK(snap(f.fs, "y") == before);
}

TEST_CASE("a write from an unreadable client buffer changes nothing: no growth, no offset, no times") {
  faultsafe_test::watchdog wd("efault write");
  fixture f;
  half_bad_buffer buf;
  auto fd = f.p.open("/r/w", O_CREAT | O_RDWR, 0644);
  REQUIRE(fd);
  REQUIRE(f.p.pwrite(*fd, "0123456789", 10, 0).value_or(0) == 10);
  auto ap = f.p.open("/r/w", O_WRONLY | O_APPEND);
  REQUIRE(ap);
  const snapshot before = snap(f.fs, "w");
  const auto st0 = f.p.fstat(*fd);
  REQUIRE(st0);
  CHECK(is(f.p.pwrite(*fd, buf.bad(), 4096, 100).error(), EFAULT));  // past the end: would grow
  CHECK(is(f.p.pwrite(*fd, buf.bad(), 5, 2).error(), EFAULT));       // inside
  REQUIRE(f.p.lseek(*fd, 4, SEEK_SET).value_or(-1) == 4);
  CHECK(is(f.p.write(*fd, buf.bad(), 3000).error(), EFAULT));
  CHECK(f.p.lseek(*fd, 0, SEEK_CUR).value_or(-1) == 4);  // the offset did not move
  CHECK(is(f.p.write(*ap, buf.bad(), 64).error(), EFAULT));
  CHECK(snap(f.fs, "w") == before);
  const auto st1 = f.p.fstat(*fd);
  REQUIRE(st1);
  CHECK(st1.value().st_size == 10);
  CHECK(st1.value().st_mtim.tv_nsec == st0.value().st_mtim.tv_nsec);
  CHECK(st1.value().st_mtim.tv_sec == st0.value().st_mtim.tv_sec);
  // The bytes a failed write may have reserved past the end read as zeros once the file grows.
  REQUIRE(f.p.ftruncate(*fd, 8192).ok());
  std::string tail(8192 - 10, 'x');
  REQUIRE(f.p.pread(*fd, tail.data(), tail.size(), 10).value_or(0) == tail.size());
  CHECK(tail == std::string(8192 - 10, '\0'));
}

TEST_CASE("a write whose client buffer turns bad part-way writes the bytes before the bad page (short count)") {
  faultsafe_test::watchdog wd("short write");
  fixture f;
  half_bad_buffer buf;
  auto fd = f.p.open("/r/s", O_CREAT | O_RDWR, 0644);
  REQUIRE(fd);
  auto r = f.p.pwrite(*fd, buf.p + 96, 6000, 50);
  REQUIRE(r);
  CHECK(*r == 4096 - 96);
  std::string got(8000, '?');
  REQUIRE(f.p.pread(*fd, got.data(), got.size(), 0).value_or(0) == 50 + 4096 - 96);
  CHECK(got.substr(0, 50) == std::string(50, '\0'));
  CHECK(std::memcmp(got.data() + 50, buf.p + 96, 4096 - 96) == 0);
  // Through the fd offset: it advances by the count written.
  REQUIRE(f.p.lseek(*fd, 0, SEEK_SET).value_or(-1) == 0);
  r = f.p.write(*fd, buf.p + 4000, 500);
  REQUIRE(r);
  CHECK(*r == 96);
  CHECK(f.p.lseek(*fd, 0, SEEK_CUR).value_or(-1) == 96);
}

TEST_CASE("a write straddling the max file size writes up to it; EFBIG only when nothing can be written") {
  faultsafe_test::watchdog wd("efbig");
  fixture f;
  auto fd = f.p.open("/r/big", O_CREAT | O_RDWR, 0644);
  REQUIRE(fd);
  const std::string data(100, 'z');
  auto r = f.p.pwrite(*fd, data.data(), data.size(), static_cast<off_t>(max_file - 36));
  REQUIRE(r);
  CHECK(*r == 36);
  CHECK(f.p.fstat(*fd).value().st_size == static_cast<off_t>(max_file));
  const snapshot full = snap(f.fs, "big");
  CHECK(is(f.p.pwrite(*fd, data.data(), data.size(), static_cast<off_t>(max_file)).error(), EFBIG));
  CHECK(is(f.p.pwrite(*fd, data.data(), 1, static_cast<off_t>(max_file + 5000)).error(), EFBIG));
  CHECK(*f.p.pwrite(*fd, data.data(), 0, static_cast<off_t>(max_file + 5000)) == 0u);  // nothing to write
  auto ap = f.p.open("/r/big", O_WRONLY | O_APPEND);
  REQUIRE(ap);
  CHECK(is(f.p.write(*ap, data.data(), data.size()).error(), EFBIG));
  CHECK(snap(f.fs, "big") == full);
  // O_APPEND straddling: up to the limit.
  REQUIRE(f.p.ftruncate(*fd, static_cast<off_t>(max_file - 10)).ok());
  r = f.p.write(*ap, data.data(), data.size());
  REQUIRE(r);
  CHECK(*r == 10);
  CHECK(f.p.fstat(*fd).value().st_size == static_cast<off_t>(max_file));
  // Failed truncates change nothing either.
  const snapshot again = snap(f.fs, "big");
  CHECK(is(f.p.ftruncate(*fd, static_cast<off_t>(max_file + 1)).error(), EFBIG));
  CHECK(is(f.p.ftruncate(*fd, -1).error(), EINVAL));
  auto ro = f.p.open("/r/big", O_RDONLY);
  REQUIRE(ro);
  CHECK(is(f.p.ftruncate(*ro, 0).error(), EBADF));
  CHECK(snap(f.fs, "big") == again);
}

// ---- own OCB types with the default handlers (issue 17, item 4) --------------------------------------

namespace {

// Per-open state added the natural way: a type derived from iofunc_ocb.
struct counting_ocb : iofunc_ocb {
  explicit counting_ocb(std::string tag) : tag(std::move(tag)) {}
  std::string tag;
  std::atomic<int> reads{0};
};
// An OCB that is not an iofunc_ocb at all (a server's own bookkeeping): the defaults must refuse it.
struct foreign_ocb : ocb_base {
  char junk[64] = {};
  int* closed = nullptr;
};

struct own_ocb_server {
  path_namespace ns;
  std::shared_ptr<iofunc_attr> attr = std::make_shared<iofunc_attr>(0666, 0, 0);
  std::atomic<int> closes{0}, tagged_closes{0};
  server srv;
  explicit own_ocb_server(bool foreign)
      : srv(server_options{.name = "own", .pool = {1, 2}, .ns = &ns}, funcs(foreign)) {
    REQUIRE_FALSE(srv.attach("/own"));
    srv.start();
  }
  ~own_ocb_server() { srv.stop(); }
  io_funcs funcs(bool foreign) {
    io_funcs f = iofunc_defaults();
    f.open = [this, foreign](request_context& ctx, const io_open_request& q, std::string_view, std::shared_ptr<ocb_base>& out) {
      if (foreign) {
        out = std::make_shared<foreign_ocb>();
        return io_result::ok();
      }
      return iofunc_open_default<counting_ocb>(ctx, q, attr, out, std::string("tag-") + std::to_string(q.flags & O_ACCMODE));
    };
    f.read = [](request_context& ctx, ocb_base& b, const io_rw_request& q) {
      if (counting_ocb* o = iofunc_ocb_cast<counting_ocb>(b)) ++o->reads;
      return iofunc_read_default(ctx, b, q);
    };
    f.close = [this](request_context&, ocb_base& b) {
      ++closes;
      if (counting_ocb* o = iofunc_ocb_cast<counting_ocb>(b); o != nullptr && o->tag == "tag-2" && o->reads == 2)
        ++tagged_closes;
      return io_result::ok();
    };
    return f;
  }
};

}  // namespace

TEST_CASE("a server keeping the default handlers with its own OCB type derived from iofunc_ocb") {
  faultsafe_test::watchdog wd("derived ocb");
  own_ocb_server s(false);
  process p("p", {1000, 100}, &s.ns);
  auto fd = p.open("/own/f", O_RDWR);
  REQUIRE(fd);
  CHECK(p.pwrite(*fd, "derived", 7, 0).value_or(0) == 7);
  char buf[16] = {};
  CHECK(p.pread(*fd, buf, sizeof buf, 0).value_or(0) == 7);
  CHECK(std::string(buf, 7) == "derived");
  CHECK(p.lseek(*fd, 3, SEEK_SET).value_or(-1) == 3);
  CHECK(p.read(*fd, buf, sizeof buf).value_or(0) == 4);
  CHECK(p.fstat(*fd).value().st_size == 7);
  CHECK(p.ftruncate(*fd, 5).ok());
  CHECK(p.close(*fd).ok());
  CHECK(s.closes == 1);
  CHECK(s.tagged_closes == 1);  // the close handler saw the per-open state of this very open
}

TEST_CASE("the default handlers refuse an OCB that is not an iofunc_ocb (EBADF), never crash") {
  faultsafe_test::watchdog wd("foreign ocb");
  own_ocb_server s(true);
  process p("p", {1000, 100}, &s.ns);
  auto fd = p.open("/own/f", O_RDWR);
  REQUIRE(fd);
  char buf[16] = {};
  CHECK(is(p.pread(*fd, buf, sizeof buf, 0).error(), EBADF));
  CHECK(is(p.pwrite(*fd, "x", 1, 0).error(), EBADF));
  CHECK(is(p.lseek(*fd, 0, SEEK_END).error(), EBADF));
  CHECK(is(p.fstat(*fd).error(), EBADF));
  CHECK(is(p.ftruncate(*fd, 0).error(), EBADF));
  CHECK(s.attr->size() == 0);
  CHECK(p.close(*fd).ok());
}

// ---- reports name the handler's line (issue 17, item 7) -----------------------------------------------

TEST_CASE("a self-deadlock report names iofunc.hpp as where the write's range was acquired, not the standard library") {
  vmtest::require_userfaultfd();
  faultsafe_test::watchdog wd("report site");
  path_namespace ns;
  briantest::recording rec;
  ramfs fs({.name = "ram", .prefix = "/ram", .pool = {1, 4}, .ns = &ns, .direct_copy = false});
  process bob("bob", {1000, 100}, &ns);
  std::vector<std::uint8_t> model;
  const std::size_t size = (64 << 10) - 100;  // the last page holds the end of the file
  const int fd = briantest::make_file(bob, "/ram/g", size, model);
  auto ap = bob.open("/ram/g", O_WRONLY | O_APPEND);
  REQUIRE(ap);
  auto m = bob.mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(m);
  const auto* src = static_cast<const std::uint8_t*>(*m);
  announce_faulting_thread();
  // pwrite (positional) and write on O_APPEND: both take their range through std::optional::emplace.
  // The source is an untouched page of a mapping of the same file that overlaps the written range: the
  // copy faults under the range and the page-in conflicts with it (Brian's self-deadlock, reported).
  for (const bool append : {false, true}) {
    CAPTURE(append);
    activity_scope act(new_activity());
    auto r = append ? bob.write(*ap, src + (60 << 10), 50) : bob.pwrite(fd, src, 4096, 0);
    REQUIRE(r);
    const auto vs = rec.rec.take();
    REQUIRE(!vs.empty());
    std::string text;
    for (const auto& v : vs) text += v.report() + "\n";
    INFO(text);
    CHECK(briantest::contains(text, "acquired at "));
    CHECK(briantest::contains(text, "iofunc.hpp:"));
    CHECK_FALSE(briantest::contains(text, "stl_construct"));
    CHECK_FALSE(briantest::contains(text, "/optional:"));
  }
  CHECK(bob.munmap(*m, size).ok());
}

TEST_CASE("the direct path (write from a mapping of the same file) grows the file only by the bytes written") {
  vmtest::require_userfaultfd();
  faultsafe_test::watchdog wd("direct short write");
  fixture f;  // ramfs serves write(fd, mapping of fd) by the direct path
  std::vector<std::uint8_t> model;
  const int fd = briantest::make_file(f.p, "/r/d", 8192, model);
  // Three pages over a two-page file: the third is past the end (the client's own access is SIGBUS).
  auto m = f.p.mmap(nullptr, 3 * 4096, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(m);
  const auto* map = static_cast<const std::uint8_t*>(*m);
  const auto before = direct_copy_stats().writes;
  // Entirely past the end: EFAULT, nothing changes.
  const snapshot s0 = snap(f.fs, "d");
  CHECK(is(f.p.pwrite(fd, map + 8192, 100, 0).error(), EFAULT));
  CHECK(is(f.p.pwrite(fd, map + 8192, 100, 50000).error(), EFAULT));
  CHECK(snap(f.fs, "d") == s0);
  // Half readable: the readable page is written, the file grows by it only.
  auto r = f.p.pwrite(fd, map + 4096, 8192, 20000);
  REQUIRE(r);
  CHECK(*r == 4096);
  CHECK(f.p.fstat(fd).value().st_size == 20000 + 4096);
  std::vector<std::uint8_t> got(4096);
  REQUIRE(f.p.pread(fd, got.data(), got.size(), 20000).value_or(0) == 4096);
  CHECK(std::memcmp(got.data(), model.data() + 4096, 4096) == 0);
  CHECK(direct_copy_stats().writes == before + 3);  // all three were served by the direct path
  CHECK(f.p.munmap(*m, 3 * 4096).ok());
}
