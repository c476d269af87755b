// Isolation between logical processes and servers (issue 7):
//   - a process cannot open a file its credentials forbid, nor use another process's open handle;
//   - a process cannot write through a PROT_READ mapping (SIGSEGV, checked in a forked child), nor
//     make a mapping writable when its open is not (EACCES);
//   - a client cannot make a server write outside the buffers it sent: oversize byte counts are
//     clipped to the reply buffer, a handler that tries to write past it gets EMSGSIZE, short reply
//     headers are respected (canaries around every buffer stay intact);
//   - a client cannot hold a server's range lock for ever: when the client's buffer cannot be paged in
//     (its pager's page-in hangs on a third server), the client's io timeout fails that page-in, the
//     server's copy gets EFAULT, the range is released and other clients go on.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include "resmgr_test_util.hpp"
#include "support/sync.hpp"
#include "vm_support.hpp"

using namespace std::chrono_literals;
using namespace faultsafe;

namespace {

bool is(const std::error_code& ec, int e) { return ec.value() == e && ec.category() == std::generic_category(); }

std::uint8_t pat(std::size_t i) { return static_cast<std::uint8_t>(i * 7 + 3); }

void fill_file(process& p, const char* path, std::size_t size) {
  auto fd = p.open(path, O_CREAT | O_RDWR, 0644);
  REQUIRE(fd.ok());
  std::vector<std::uint8_t> d(size);
  for (std::size_t i = 0; i < size; ++i) d[i] = pat(i);
  REQUIRE(p.pwrite(*fd, d.data(), d.size(), 0).value() == size);
  REQUIRE(p.close(*fd).ok());
}

bool file_is_pattern(process& p, const char* path, std::size_t size) {
  auto fd = p.open(path, O_RDONLY);
  if (!fd) return false;
  std::vector<std::uint8_t> d(size + 1);
  auto n = p.pread(*fd, d.data(), d.size(), 0);
  (void)p.close(*fd);
  if (!n || *n != size) return false;
  for (std::size_t i = 0; i < size; ++i)
    if (d[i] != pat(i)) return false;
  return true;
}

// A buffer of `n` bytes with 64-byte canaries on both sides.
struct fenced {
  explicit fenced(std::size_t n) : n(n), mem(n + 128, 0xA5) {}
  std::uint8_t* data() { return mem.data() + 64; }
  bool canaries_intact() const {
    for (std::size_t i = 0; i < 64; ++i)
      if (mem[i] != 0xA5 || mem[64 + n + i] != 0xA5) return false;
    return true;
  }
  std::size_t n;
  std::vector<std::uint8_t> mem;
};

using test_support::gate;  // handlers wait at it, bounded: tests/support/sync.hpp

}  // namespace

TEST_CASE("credentials: forbidden opens fail with EACCES and change nothing; handles are per process") {
  faultsafe_test::watchdog wd("credentials");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns, .dir_mode = 0775, .dir_uid = 0, .dir_gid = 100});
  process owner("owner", {1000, 100}, &ns);
  process groupmate("groupmate", {1001, 100}, &ns);
  process stranger("stranger", {2000, 200}, &ns);
  fill_file(owner, "/ram/private", 5000);
  {
    auto fd = owner.open("/ram/shared", O_CREAT | O_RDWR, 0640);
    REQUIRE(fd.ok());
    REQUIRE(owner.pwrite(*fd, "group data", 10, 0).value() == 10u);
    REQUIRE(owner.close(*fd).ok());
  }
  // 0644 default from fill_file: make it owner-only through a new file instead (no chmod).
  {
    auto fd = owner.open("/ram/secret", O_CREAT | O_EXCL | O_RDWR, 0600);
    REQUIRE(fd.ok());
    REQUIRE(owner.pwrite(*fd, "top secret", 10, 0).value() == 10u);
    REQUIRE(owner.close(*fd).ok());
  }
  for (int acc : {O_RDONLY, O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_TRUNC, O_RDWR | O_APPEND}) {
    CAPTURE(acc);
    CHECK(is(stranger.open("/ram/secret", acc).error(), EACCES));
    CHECK(is(groupmate.open("/ram/secret", acc).error(), EACCES));
  }
  // Group may read /ram/shared, not write or truncate it; others get nothing.
  auto g = groupmate.open("/ram/shared", O_RDONLY);
  CHECK(g.ok());
  CHECK(is(groupmate.open("/ram/shared", O_WRONLY).error(), EACCES));
  CHECK(is(groupmate.open("/ram/shared", O_RDONLY | O_TRUNC).error(), EACCES));
  CHECK(is(stranger.open("/ram/shared", O_RDONLY).error(), EACCES));
  // The directory (0775, gid 100): the stranger cannot create files in it.
  CHECK(is(stranger.open("/ram/new", O_CREAT | O_RDWR, 0666).error(), EACCES));
  CHECK(fs.lookup("new") == nullptr);
  // A read-only open cannot write, truncate or map for shared writing.
  REQUIRE(g.ok());
  CHECK(is(groupmate.pwrite(*g, "x", 1, 0).error(), EBADF));
  CHECK(is(groupmate.ftruncate(*g, 0).error(), EBADF));

  // Another process's handle: the server refuses it (EBADF) whatever the message.
  auto ofd = owner.open("/ram/secret", O_RDWR);
  REQUIRE(ofd.ok());
  std::shared_ptr<channel> ch;
  std::uint64_t handle = 0;
  int flags = 0;
  REQUIRE(!owner.fd_target(*ofd, ch, handle, flags));
  char buf[64] = {};
  io_rw_request rq{stranger.client(), handle, sizeof buf, 0, 1};
  send_result sr = stranger.send(*ch, {static_cast<std::uint32_t>(io_msg::read), &rq, sizeof rq, nullptr, 0, nullptr, 0, buf, sizeof buf});
  CHECK(is(sr.error, EBADF));
  CHECK(std::string(buf) == "");
  sr = stranger.send(*ch, {static_cast<std::uint32_t>(io_msg::write), &rq, sizeof rq, "pwned", 5});
  CHECK(is(sr.error, EBADF));
  io_ftruncate_request tq{stranger.client(), handle, 0};
  CHECK(is(stranger.send(*ch, {static_cast<std::uint32_t>(io_msg::ftruncate), &tq, sizeof tq}).error, EBADF));
  io_mmap_request mq{stranger.client(), handle, 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED};
  io_mmap_reply mrep{};
  CHECK(is(stranger.send(*ch, {static_cast<std::uint32_t>(io_msg::mmap), &mq, sizeof mq, nullptr, 0, &mrep, sizeof mrep}).error, EBADF));
  CHECK(mrep.memfd == -1);
  io_page_in_request pq{stranger.client(), handle, 0, 0, 4096, 0};
  io_page_in_reply prep{};
  CHECK(is(stranger.send(*ch, {static_cast<std::uint32_t>(io_msg::page_in), &pq, sizeof pq, nullptr, 0, &prep, sizeof prep, buf, sizeof buf}).error, EBADF));
  io_handle_request cq{stranger.client(), handle};
  CHECK(is(stranger.send(*ch, {static_cast<std::uint32_t>(io_msg::close), &cq, sizeof cq}).error, EBADF));
  // The owner's open still works and the data is untouched.
  char back[16] = {};
  CHECK(owner.pread(*ofd, back, 10, 0).value() == 10u);
  CHECK(std::string(back, 10) == "top secret");
  CHECK(owner.close(*ofd).ok());
  CHECK(file_is_pattern(owner, "/ram/private", 5000));
}

TEST_CASE("a PROT_READ mapping cannot be written (SIGSEGV in a child); no writable shared mapping of a read-only open") {
  vmtest::require_userfaultfd();
  faultsafe_test::watchdog wd("prot_read");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  fill_file(bob, "/ram/f", 3 * 4096);
  auto rw = bob.open("/ram/f", O_RDWR);
  auto ro = bob.open("/ram/f", O_RDONLY);
  REQUIRE(rw.ok());
  REQUIRE(ro.ok());
  // Read-only open: no PROT_WRITE shared mapping, directly or by mprotect; private is fine.
  CHECK(is(bob.mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, *ro, 0).error(), EACCES));
  auto m_ro = bob.mmap(nullptr, 3 * 4096, PROT_READ, MAP_SHARED, *ro, 0);
  REQUIRE(m_ro.ok());
  CHECK(is(bob.mprotect(*m_ro, 3 * 4096, PROT_READ | PROT_WRITE).error(), EACCES));
  // Even over a writable open, a PROT_READ mapping refuses stores.
  auto m_rw = bob.mmap(nullptr, 3 * 4096, PROT_READ, MAP_SHARED, *rw, 0);
  REQUIRE(m_rw.ok());
  auto m_priv = bob.mmap(nullptr, 3 * 4096, PROT_READ, MAP_PRIVATE, *ro, 0);
  REQUIRE(m_priv.ok());
  for (void* m : {*m_ro, *m_rw, *m_priv}) {
    auto* p = static_cast<volatile std::uint8_t*>(m);
    CHECK(p[4096 + 5] == pat(4096 + 5));  // paged in by the parent's pager
    std::fflush(nullptr);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::signal(SIGSEGV, SIG_DFL);
      ::signal(SIGBUS, SIG_DFL);
      p[4096 + 5] = 0xEE;  // must die here
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGSEGV);
    CHECK(p[4096 + 5] == pat(4096 + 5));
  }
  CHECK(bob.munmap(*m_ro, 3 * 4096).ok());
  CHECK(bob.munmap(*m_rw, 3 * 4096).ok());
  CHECK(bob.munmap(*m_priv, 3 * 4096).ok());
  CHECK(bob.close(*rw).ok());
  CHECK(bob.close(*ro).ok());
  CHECK(file_is_pattern(bob, "/ram/f", 3 * 4096));
}

TEST_CASE("a server writes only inside the buffers the client sent") {
  faultsafe_test::watchdog wd("buffer bounds");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  fill_file(bob, "/ram/f", 64 * 1024);
  auto fd = bob.open("/ram/f", O_RDWR);
  REQUIRE(fd.ok());
  std::shared_ptr<channel> ch;
  std::uint64_t handle = 0;
  int flags = 0;
  REQUIRE(!bob.fd_target(*fd, ch, handle, flags));

  SUBCASE("read: a byte count far beyond the reply buffer is clipped to it") {
    for (std::size_t cap : {0u, 1u, 100u, 4095u, 4097u}) {
      CAPTURE(cap);
      fenced b(cap);
      io_rw_request q{bob.client(), handle, std::uint64_t{1} << 40, 10, 1};
      send_result sr = bob.send(*ch, {static_cast<std::uint32_t>(io_msg::read), &q, sizeof q, nullptr, 0, nullptr, 0,
                                      cap ? b.data() : nullptr, cap});
      CHECK(!sr.error);
      CHECK(sr.status == static_cast<std::int64_t>(cap));
      CHECK(b.canaries_intact());
      for (std::size_t i = 0; i < cap; ++i)
        if (b.data()[i] != pat(10 + i)) FAIL("read data at " << i);
    }
  }
  SUBCASE("write: only the payload the client sent is read, whatever nbytes says") {
    std::vector<std::uint8_t> src(64 + 16 + 64, 0x5A);  // the payload is the middle 16 bytes
    io_rw_request q{bob.client(), handle, std::uint64_t{1} << 30, 64 * 1024, 1};
    send_result sr = bob.send(*ch, {static_cast<std::uint32_t>(io_msg::write), &q, sizeof q, src.data() + 64, 16});
    CHECK(!sr.error);
    CHECK(sr.status == 16);
    CHECK(bob.fstat(*fd).value().st_size == 64 * 1024 + 16);
  }
  SUBCASE("fstat and page-in: short reply headers and reply buffers are respected") {
    fenced h(8);
    io_handle_request q{bob.client(), handle};
    send_result sr = bob.send(*ch, {static_cast<std::uint32_t>(io_msg::fstat), &q, sizeof q, nullptr, 0, h.data(), 8});
    CHECK(!sr.error);
    CHECK(sr.reply_header_len == 8u);
    CHECK(h.canaries_intact());
    fenced rh(sizeof(io_page_in_reply) - 8);
    io_page_in_request pq{bob.client(), handle, 0, 0, 64 * 1024, 0};
    sr = bob.send(*ch, {static_cast<std::uint32_t>(io_msg::page_in), &pq, sizeof pq, nullptr, 0, rh.data(), rh.n, nullptr, 0});
    CHECK(!sr.error);
    CHECK(sr.status > 0);
    CHECK(sr.reply_header_len == rh.n);
    CHECK(rh.canaries_intact());
  }
  SUBCASE("a handler that tries to write past the client's buffer gets EMSGSIZE and writes nothing") {
    io_funcs f = iofunc_defaults();
    std::atomic<int> emsgsize{0};
    f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
      out = std::make_shared<ocb_base>();
      return io_result::ok();
    };
    f.read = [&](request_context& ctx, ocb_base&, const io_rw_request& q) {
      std::vector<std::uint8_t> junk(q.nbytes + 4096, 0xEE);
      for (std::size_t off : {std::size_t{0}, ctx.rcv.reply_data_len() - 1, ctx.rcv.reply_data_len()}) {
        if (is(ctx.rcv.write_reply_data(off, junk.data(), q.nbytes), EMSGSIZE)) emsgsize.fetch_add(1);
      }
      if (is(ctx.rcv.write_reply_data(~std::size_t{0} - 2, junk.data(), 8), EMSGSIZE)) emsgsize.fetch_add(1);
      return io_result::ok(0);
    };
    server evil({.name = "evil", .ns = &ns}, std::move(f));
    REQUIRE(!evil.attach("/evil"));
    evil.start();
    auto efd = bob.open("/evil/x", O_RDWR);
    REQUIRE(efd.ok());
    fenced b(50);
    CHECK(bob.read(*efd, b.data(), 50).value() == 0u);  // the handler asked for nbytes = 50 at offsets 0, 49, 50
    CHECK(emsgsize.load() == 3);                         // 49+50 and 50+50 overflow, and the huge offset; 0+50 fits
    CHECK(b.canaries_intact());
    CHECK(bob.close(*efd).ok());
  }
  CHECK(bob.close(*fd).ok());
}

TEST_CASE("a client whose buffer cannot be paged in does not hold the server's range lock for ever") {
  // Chain: client C reads /ram/f into a mapping of /slow/x. The ramfs thread takes the range of /ram/f
  // shared and copies into C's buffer; the copy faults; C's pager asks the slow server, which hangs.
  // C's io timeout (300 ms) fails that page-in, the copy gets EFAULT, the range goes. A writer that
  // needs the range exclusively then goes on; nobody is left blocked.
  vmtest::require_userfaultfd();
  faultsafe_test::watchdog wd("range lock held on behalf of a stuck client", 40s);
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  gate hang;
  auto slow_attr = std::make_shared<iofunc_attr>(0666, 0, 0);
  io_funcs f = iofunc_defaults();
  f.open = [&](request_context& ctx, const io_open_request& q, std::string_view, std::shared_ptr<ocb_base>& out) {
    return iofunc_open_default(ctx, q, slow_attr, out);
  };
  std::atomic<int> page_ins{0};
  f.page_in = [&](request_context& ctx, ocb_base* o, const io_page_in_request& q, io_page_in_reply& rep) {
    page_ins.fetch_add(1);
    if (!hang.wait(20s)) return io_result::fail(EIO);  // bounded: a bug fails the test, never hangs it
    return iofunc_page_in_default(ctx, o, q, rep);
  };
  server slow({.name = "slow", .pool = {1, 4}, .ns = &ns}, std::move(f));
  REQUIRE(!slow.attach("/slow"));
  slow.start();

  process admin("admin", {0, 0}, &ns);
  constexpr std::size_t size = 64 * 1024;
  fill_file(admin, "/ram/f", size);
  process client("client", {0, 0}, &ns);
  auto sfd = client.open("/slow/x", O_RDWR);
  REQUIRE(sfd.ok());
  REQUIRE(client.ftruncate(*sfd, size).ok());
  auto map = client.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, *sfd, 0);
  REQUIRE(map.ok());
  auto ffd = client.open("/ram/f", O_RDONLY);
  REQUIRE(ffd.ok());
  client.set_io_timeout(300ms);

  std::error_code read_error;
  std::thread reader([&] {
    announce_faulting_thread();
    auto r = client.pread(*ffd, *map, size, 0);
    read_error = r.error();
  });
  REQUIRE(hang.wait_for_waiters(1, 20s));  // the ramfs thread holds the range and waits on C's page-in
  // Another client needs that range exclusively: it must get it once C's page-in times out.
  std::vector<std::uint8_t> news(4096, 0x77);
  auto wfd = admin.open("/ram/f", O_RDWR);
  REQUIRE(wfd.ok());
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(admin.pwrite(*wfd, news.data(), news.size(), 0).value() == news.size());
  const auto waited = std::chrono::steady_clock::now() - t0;
  reader.join();
  CHECK((is(read_error, EFAULT) || is(read_error, ETIMEDOUT)));
  MESSAGE("the writer waited " << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                               << " ms for the range held on behalf of the stuck client; client read: " << read_error.message());
  auto attr = fs.lookup("f");
  REQUIRE(attr);
  CHECK(attr->data_lock.holders().empty());
  hang.release();
  // Data: the acknowledged write is there, the rest of the file is intact.
  std::vector<std::uint8_t> back(size);
  CHECK(admin.pread(*wfd, back.data(), size, 0).value() == size);
  CHECK(std::memcmp(back.data(), news.data(), news.size()) == 0);
  bool rest_ok = true;
  for (std::size_t i = news.size(); i < size; ++i) rest_ok = rest_ok && back[i] == pat(i);
  CHECK(rest_ok);
  CHECK(page_ins.load() >= 1);
  CHECK(client.memory().fault_pager().stats().page_in_errors >= 1);
  CHECK(client.munmap(*map, size).ok());
  CHECK(admin.close(*wfd).ok());
}
