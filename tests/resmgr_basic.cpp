// Resource-manager tests: ramfs through processes; permissions and credentials; bad inputs; server
// stop with pending senders; io timeouts; single-threaded server with many clients; a server whose
// handler sends to a second server; thread-pool growth up to max; serving on the calling thread.
#include <doctest/doctest.h>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "resmgr_test_util.hpp"
#include "support/sync.hpp"

using namespace std::chrono_literals;
using namespace faultsafe;

namespace {
bool is(const std::error_code& ec, int e) { return ec.value() == e && ec.category() == std::generic_category(); }

using test_support::gate;  // handlers wait at it, bounded: tests/support/sync.hpp

/// Handlers whose open makes a plain OCB and whose read waits at `g`, then returns `bytes`.
io_funcs gated_reads(gate& g, std::size_t bytes) {
  io_funcs f;
  f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
    out = std::make_shared<ocb_base>();
    return io_result::ok();
  };
  f.read = [&g, bytes](request_context&, ocb_base&, const io_rw_request&) {
    g.wait();
    return io_result::ok(bytes);
  };
  return f;
}
}  // namespace

TEST_CASE("ramfs: create, write, read, lseek, fstat, ftruncate, close") {
  faultsafe_test::watchdog wd("basic");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  auto fd = bob.open("/ram/a", O_RDWR | O_CREAT, 0644);
  REQUIRE(fd);
  CHECK(*bob.write(*fd, "hello, world", 12) == 12u);
  CHECK(*bob.lseek(*fd, 0, SEEK_CUR) == 12);
  CHECK(*bob.lseek(*fd, 7, SEEK_SET) == 7);
  char buf[32] = {};
  CHECK(*bob.read(*fd, buf, sizeof buf) == 5u);
  CHECK(std::string(buf, 5) == "world");
  CHECK(*bob.read(*fd, buf, sizeof buf) == 0u);  // at the end
  CHECK(*bob.pread(*fd, buf, 5, 0) == 5u);
  CHECK(std::string(buf, 5) == "hello");
  CHECK(*bob.pread(*fd, buf, 5, 1000) == 0u);     // past the end
  CHECK(*bob.pwrite(*fd, "XY", 2, 20) == 2u);     // a hole
  auto st = bob.fstat(*fd);
  REQUIRE(st);
  CHECK((*st).st_size == 22);
  CHECK((*st).st_uid == 1000u);
  CHECK((*st).st_gid == 100u);
  CHECK(((*st).st_mode & 07777) == 0644u);
  CHECK(S_ISREG((*st).st_mode));
  CHECK(*bob.pread(*fd, buf, 10, 12) == 10u);
  CHECK(std::memcmp(buf, "\0\0\0\0\0\0\0\0XY", 10) == 0);
  CHECK(*bob.lseek(*fd, -2, SEEK_END) == 20);
  CHECK(bob.ftruncate(*fd, 5).ok());
  CHECK((*bob.fstat(*fd)).st_size == 5);
  CHECK(*bob.pread(*fd, buf, 32, 0) == 5u);
  CHECK(bob.ftruncate(*fd, 8).ok());  // grows with zeros
  CHECK(*bob.pread(*fd, buf, 32, 0) == 8u);
  CHECK(std::memcmp(buf, "hello\0\0\0", 8) == 0);
  auto attr = fs.lookup("a");
  REQUIRE(attr);
  CHECK(std::memcmp(attr->data(), "hello", 5) == 0);  // the server-side store pointer sees the bytes
  // The bytes live in the store's memfd at the file's extent; the extent reads zeros past the size.
  char st_buf[16] = {};
  REQUIRE(::pread(attr->memfd(), st_buf, sizeof st_buf, static_cast<off_t>(attr->store_offset())) == 16);
  CHECK(std::memcmp(st_buf, "hello\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
  CHECK(bob.close(*fd).ok());
  CHECK(fs.srv().open_ocbs() == 0u);

  // O_APPEND, O_TRUNC, O_EXCL, reopen
  auto a = bob.open("/ram/a", O_WRONLY | O_APPEND);
  REQUIRE(a);
  CHECK(*bob.write(*a, "!!", 2) == 2u);
  auto r = bob.open("/ram/a", O_RDONLY);
  REQUIRE(r);
  CHECK(*bob.pread(*r, buf, 32, 0) == 10u);
  CHECK(std::memcmp(buf + 8, "!!", 2) == 0);
  CHECK(is(bob.open("/ram/a", O_RDWR | O_CREAT | O_EXCL, 0600).error(), EEXIST));
  auto t = bob.open("/ram/a", O_RDWR | O_TRUNC);
  REQUIRE(t);
  CHECK((*bob.fstat(*r)).st_size == 0);
  CHECK(bob.close(*t).ok());
  CHECK(bob.close(*a).ok());
  CHECK(bob.close(*r).ok());
}

TEST_CASE("permissions and credentials") {
  faultsafe_test::watchdog wd("perms");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/p", .ns = &ns, .dir_mode = 0775, .dir_uid = 0, .dir_gid = 100});
  process owner("owner", {1000, 100}, &ns), group("group", {1001, 100}, &ns), other("other", {2000, 200}, &ns),
      root("root", {0, 0}, &ns);
  auto fd = owner.open("/p/f", O_RDWR | O_CREAT, 0640);
  REQUIRE(fd);
  REQUIRE(*owner.write(*fd, "secret", 6) == 6u);

  auto g = group.open("/p/f", O_RDONLY);
  REQUIRE(g);
  char b[8];
  CHECK(*group.read(*g, b, 8) == 6u);
  CHECK(is(group.open("/p/f", O_WRONLY).error(), EACCES));
  CHECK(is(group.open("/p/f", O_RDWR).error(), EACCES));
  CHECK(is(group.open("/p/f", O_RDONLY | O_TRUNC).error(), EACCES));
  CHECK(is(other.open("/p/f", O_RDONLY).error(), EACCES));
  CHECK(root.open("/p/f", O_RDWR));
  // creating needs write permission on the directory (0775 root:100)
  CHECK(is(other.open("/p/new", O_RDWR | O_CREAT, 0666).error(), EACCES));
  CHECK(group.open("/p/g", O_RDWR | O_CREAT, 0600));
  // a creator may use its own access mode even when the new file's mode denies it
  auto ro = owner.open("/p/ro", O_RDWR | O_CREAT, 0400);
  REQUIRE(ro);
  CHECK(*owner.write(*ro, "x", 1) == 1u);
  CHECK(is(owner.open("/p/ro", O_RDWR).error(), EACCES));
  CHECK((*owner.fstat(*ro)).st_uid == 1000u);
}

TEST_CASE("bad inputs get clear errors") {
  faultsafe_test::watchdog wd("bad inputs");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/b", .ns = &ns});
  process p("p", {1000, 100}, &ns);
  char buf[16] = {};
  // bad fds
  for (int bad : {-1, 0, 7, std::numeric_limits<int>::max()}) {
    CHECK(is(p.read(bad, buf, 1).error(), EBADF));
    CHECK(is(p.write(bad, buf, 1).error(), EBADF));
    CHECK(is(p.pread(bad, buf, 1, 0).error(), EBADF));
    CHECK(is(p.pwrite(bad, buf, 1, 0).error(), EBADF));
    CHECK(is(p.lseek(bad, 0, SEEK_SET).error(), EBADF));
    CHECK(is(p.fstat(bad).error(), EBADF));
    CHECK(is(p.ftruncate(bad, 0).error(), EBADF));
    CHECK(is(p.close(bad).error(), EBADF));
  }
  auto fd = p.open("/b/f", O_RDWR | O_CREAT, 0644);
  REQUIRE(fd);
  CHECK(is(p.read(*fd, nullptr, 1).error(), EFAULT));
  CHECK(is(p.write(*fd, nullptr, 1).error(), EFAULT));
  CHECK(*p.read(*fd, nullptr, 0) == 0u);
  CHECK(is(p.pread(*fd, buf, 1, -1).error(), EINVAL));
  CHECK(is(p.pwrite(*fd, buf, 1, -5).error(), EINVAL));
  CHECK(is(p.pread(*fd, buf, 16, std::numeric_limits<off_t>::max() - 3).error(), EOVERFLOW));
  CHECK(is(p.pwrite(*fd, buf, 16, std::numeric_limits<off_t>::max() - 3).error(), EOVERFLOW));
  CHECK(is(p.pwrite(*fd, buf, 16, off_t{1} << 40).error(), EFBIG));
  CHECK(is(p.lseek(*fd, 0, 42).error(), EINVAL));
  CHECK(is(p.lseek(*fd, -1, SEEK_SET).error(), EINVAL));
  CHECK(*p.lseek(*fd, 100, SEEK_SET) == 100);
  CHECK(is(p.lseek(*fd, std::numeric_limits<off_t>::max(), SEEK_CUR).error(), EOVERFLOW));
  CHECK(*p.read(*fd, buf, 16) == 0u);  // past the end
  CHECK(is(p.ftruncate(*fd, -1).error(), EINVAL));
  CHECK(is(p.ftruncate(*fd, off_t{1} << 40).error(), EFBIG));
  // access mode
  auto ro = p.open("/b/f", O_RDONLY);
  REQUIRE(ro);
  CHECK(is(p.write(*ro, "x", 1).error(), EBADF));
  CHECK(is(p.pwrite(*ro, "x", 1, 0).error(), EBADF));
  CHECK(is(p.ftruncate(*ro, 0).error(), EBADF));
  auto wo = p.open("/b/f", O_WRONLY);
  REQUIRE(wo);
  CHECK(is(p.read(*wo, buf, 1).error(), EBADF));
  CHECK(is(p.open("/b/f", O_ACCMODE).error(), EINVAL));
  // names
  CHECK(is(p.open("/b/missing", O_RDONLY).error(), ENOENT));
  CHECK(is(p.open("/nowhere/x", O_RDONLY).error(), ENOENT));
  CHECK(is(p.open("relative", O_RDONLY).error(), ENOENT));
  CHECK(is(p.open("/b", O_WRONLY).error(), EISDIR));  // a directory opens for reading only (readdir)
  CHECK(is(p.open("/b/d/x", O_RDWR | O_CREAT, 0644).error(), ENOENT));
  CHECK(is(p.open("/b/" + std::string(300, 'n'), O_RDWR | O_CREAT, 0644).error(), ENAMETOOLONG));
  CHECK(is(p.open(std::string(5000, '/'), O_RDONLY).error(), ENAMETOOLONG));
  // forged messages: another process's handle, a malformed header, an unknown type
  {
    std::shared_ptr<channel> ch;
    std::uint64_t handle = 0;
    int flags = 0;
    REQUIRE_FALSE(p.fd_target(*fd, ch, handle, flags));
    process thief("thief", {0, 0}, &ns);
    io_rw_request q{thief.client(), handle, 4, 0, 1};
    char out[4];
    CHECK(is(thief.send(*ch, {static_cast<std::uint32_t>(io_msg::read), &q, sizeof q, nullptr, 0, nullptr, 0, out, 4}).error, EBADF));
    CHECK(is(thief.send(*ch, {static_cast<std::uint32_t>(io_msg::read), &q, sizeof q - 1}).error, EBADMSG));
    CHECK(is(thief.send(*ch, {999, &q, sizeof q}).error, ENOSYS));
    q.client = p.client();  // the owner's own handle works through the raw channel too
    CHECK(thief.send(*ch, {static_cast<std::uint32_t>(io_msg::read), &q, sizeof q, nullptr, 0, nullptr, 0, out, 4}).status == 0);
  }
  // closed fd
  CHECK(p.close(*ro).ok());
  CHECK(is(p.read(*ro, buf, 1).error(), EBADF));
  CHECK(is(p.close(*ro).error(), EBADF));
  // namespace misuse
  CHECK(is(ns.attach("relative", fs.srv().chan()), EINVAL));
  CHECK(is(ns.attach("/b/", fs.srv().chan()), EINVAL));
  CHECK(is(ns.attach("/b", fs.srv().chan()), EEXIST));
  CHECK_THROWS_AS(ramfs({.name = "dup", .prefix = "/b", .ns = &ns}), std::system_error);
  CHECK_THROWS_AS(server({.name = "bad", .pool = {0, 1}}, {}), std::invalid_argument);
  CHECK_THROWS_AS(server({.name = "bad", .pool = {3, 2}}, {}), std::invalid_argument);
}

TEST_CASE("longest prefix wins, on component boundaries") {
  path_namespace ns;
  auto a = std::make_shared<channel>(), b = std::make_shared<channel>(), c = std::make_shared<channel>();
  REQUIRE_FALSE(ns.attach("/", a));
  REQUIRE_FALSE(ns.attach("/dev", b));
  REQUIRE_FALSE(ns.attach("/dev/net", c));
  std::error_code ec;
  CHECK(ns.resolve("/dev/net/x", ec)->ch == c);
  CHECK(ns.resolve("/dev/net/x", ec)->rest == "x");
  CHECK(ns.resolve("/dev/netx", ec)->ch == b);
  CHECK(ns.resolve("/dev/netx", ec)->rest == "netx");
  CHECK(ns.resolve("/dev", ec)->rest.empty());
  CHECK(ns.resolve("/etc/passwd", ec)->ch == a);
  CHECK(ns.resolve("/etc/passwd", ec)->rest == "etc/passwd");
  CHECK(ns.detach("/dev/net", c.get()));
  CHECK_FALSE(ns.detach("/dev/net", c.get()));
  CHECK(ns.resolve("/dev/net/x", ec)->ch == b);
}

TEST_CASE("server stop fails pending senders and future calls; the one being served completes") {
  faultsafe_test::watchdog wd("stop");
  path_namespace ns;
  gate g;
  const io_funcs f = gated_reads(g, 7);
  server s({.name = "slow", .pool = {1, 1}, .ns = &ns}, f);
  REQUIRE_FALSE(s.attach("/slow"));
  s.start();
  process p("p", {}, &ns);
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(*p.open("/slow/x", O_RDONLY));
  std::vector<std::error_code> errs(4);
  std::vector<std::size_t> got(4, 0);
  std::vector<std::thread> ts;
  char bufs[4][8];
  ts.emplace_back([&] {
    auto r = p.read(fds[0], bufs[0], 8);
    errs[0] = r.error();
    got[0] = r.value_or(0);
  });
  REQUIRE(g.wait_for_waiters(1));  // the first read is being served
  for (int i = 1; i < 4; ++i)
    ts.emplace_back([&, i] {
      auto r = p.read(fds[i], bufs[i], 8);
      errs[i] = r.error();
    });
  while (s.chan()->queued() < 3) std::this_thread::sleep_for(1ms);
  std::thread stopper([&] { s.stop(); });
  for (int i = 1; i < 4; ++i) ts[i].join();  // failed by stop, not by the gate
  for (int i = 1; i < 4; ++i) CHECK(is(errs[i], ESHUTDOWN));
  g.release();
  ts[0].join();
  stopper.join();
  CHECK_FALSE(errs[0]);
  CHECK(got[0] == 7u);
  CHECK(is(p.read(fds[0], bufs[0], 8).error(), ESHUTDOWN));
  CHECK(is(p.open("/slow/x", O_RDONLY).error(), ENOENT));  // detached
  CHECK(is(p.close(fds[1]).error(), ESHUTDOWN));
  CHECK(is(p.close(fds[1]).error(), EBADF));  // the fd was freed anyway
}

TEST_CASE("serving on the calling thread: same results, no pool thread, open replies with the attributes, stop waits") {
  faultsafe_test::watchdog wd("serve here");
  path_namespace ns;
  gate g;
  std::atomic<bool> gated{false}, handler_done{false};
  std::mutex mu;
  std::thread::id read_by;
  activity_id read_for = 0;
  io_funcs f;
  f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
    out = std::make_shared<ocb_base>();
    return io_result::ok();
  };
  f.fstat = [](request_context&, ocb_base&, struct ::stat& st) {
    st.st_size = 42;
    st.st_ino = 7;
    return io_result::ok();
  };
  f.read = [&](request_context& ctx, ocb_base&, const io_rw_request&) {
    {
      std::lock_guard<std::mutex> l(mu);
      read_by = std::this_thread::get_id();
      read_for = ctx.activity;
    }
    if (gated.load()) {
      g.wait();
      handler_done.store(true);
    }
    return io_result::ok(3);
  };
  server s({.name = "here", .pool = {1, 1}, .ns = &ns}, f);
  REQUIRE_FALSE(s.attach("/here"));
  process direct("direct", {}, &ns), queued("queued", {}, &ns);
  direct.set_serve_on_calling_thread(true);
  struct ::stat st{};
  CHECK(is(direct.open("/here/x", O_RDONLY, 0, st).error(), ENXIO));  // not started: as a send
  s.start();

  // open with the attributes: one message, served here; the reply carries fstat's answer.
  auto fd = direct.open("/here/x", O_RDONLY, 0, st);
  REQUIRE(fd);
  CHECK(st.st_size == 42);
  CHECK(st.st_ino == 7u);
  CHECK(s.direct_served() == 1u);
  char buf[8];
  CHECK(*direct.read(*fd, buf, sizeof buf) == 3u);
  CHECK(s.direct_served() == 2u);
  {
    std::lock_guard<std::mutex> l(mu);
    CHECK(read_by == std::this_thread::get_id());  // no hand-off: this thread ran the handler
    CHECK(read_for == current_activity());         // on behalf of this thread's activity
  }
  // The same calls through the queue: a pool thread serves them, with the same results.
  struct ::stat st2{};
  auto qfd = queued.open("/here/x", O_RDONLY, 0, st2);
  REQUIRE(qfd);
  CHECK(st2.st_size == 42);
  CHECK(*queued.read(*qfd, buf, sizeof buf) == 3u);
  CHECK(s.direct_served() == 2u);
  {
    std::lock_guard<std::mutex> l(mu);
    CHECK(read_by != std::this_thread::get_id());
  }

  // stop() waits for a direct serve in progress; afterwards the calls fail as sends do.
  gated.store(true);
  std::error_code err;
  std::size_t got = 0;
  std::thread reader([&] {
    auto r = direct.read(*fd, buf, sizeof buf);
    err = r.error();
    got = r.value_or(0);
  });
  REQUIRE(g.wait_for_waiters(1));
  bool done_when_stopped = false;
  std::thread stopper([&] {
    s.stop();
    done_when_stopped = handler_done.load();
  });
  std::this_thread::sleep_for(50ms);  // not a timing assertion: gives a stop() that did not wait time to return
  g.release();
  reader.join();
  stopper.join();
  CHECK_FALSE(err);
  CHECK(got == 3u);
  CHECK(done_when_stopped);
  CHECK(is(direct.read(*fd, buf, sizeof buf).error(), ESHUTDOWN));
  CHECK(is(direct.open("/here/x", O_RDONLY).error(), ENOENT));  // detached
}

TEST_CASE("a process io timeout turns a stuck server into ETIMEDOUT") {
  faultsafe_test::watchdog wd("io timeout");
  path_namespace ns;
  gate g;
  io_funcs f;
  f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
    out = std::make_shared<ocb_base>();
    return io_result::ok();
  };
  std::atomic<int> late{0}, delivered{0};
  f.read = [&](request_context& ctx, ocb_base&, const io_rw_request&) {
    g.wait();
    if (is(ctx.rcv.write_reply_data(0, "late", 4), ECANCELED)) ++late;  // the client is gone
    else ++delivered;
    return io_result::ok(4);
  };
  server s({.name = "stuck", .pool = {1, 1}, .ns = &ns}, f);
  REQUIRE_FALSE(s.attach("/stuck"));
  s.start();
  process p("p", {}, &ns);
  auto fd = p.open("/stuck/x", O_RDONLY);
  REQUIRE(fd);
  p.set_io_timeout(50ms);
  char buf[8] = {};
  CHECK(is(p.read(*fd, buf, 8).error(), ETIMEDOUT));
  g.release();
  s.stop();
  // The handler ran (late reply dropped) or, on a loaded machine, the read timed out still queued.
  CHECK(late.load() <= 1);
  CHECK(delivered.load() == 0);
  CHECK(s.chan()->queued() == 0u);
  CHECK(buf[0] == 0);
}

TEST_CASE("a single-threaded server serves many clients") {
  faultsafe_test::watchdog wd("single thread");
  path_namespace ns;
  ramfs fs({.name = "io_pkt", .prefix = "/io", .pool = {1, 1}, .ns = &ns});
  constexpr int procs = 6, per = 150;
  std::vector<std::thread> ts;
  std::atomic<int> bad{0};
  for (int i = 0; i < procs; ++i)
    ts.emplace_back([&, i] {
      process p("client" + std::to_string(i), {static_cast<std::uint32_t>(1000 + i), 100}, &ns);
      const std::string name = "/io/f" + std::to_string(i);
      auto fd = p.open(name, O_RDWR | O_CREAT, 0600);
      if (!fd) {
        ++bad;
        return;
      }
      for (int k = 0; k < per; ++k) {
        const std::string s = std::to_string(i * 100000 + k);
        if (p.pwrite(*fd, s.data(), s.size(), k * 8).value_or(0) != s.size()) ++bad;
        char b[16] = {};
        if (p.pread(*fd, b, s.size(), k * 8).value_or(0) != s.size() || std::string(b, s.size()) != s) ++bad;
      }
      (void)p.close(*fd);
    });
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(fs.srv().threads() == 1u);
  CHECK(fs.names().size() == static_cast<std::size_t>(procs));
}

TEST_CASE("a server whose handler sends to a second server (nfs reads io_pkt)") {
  faultsafe_test::watchdog wd("nested");
  path_namespace ns;
  ramfs io_pkt({.name = "io_pkt", .prefix = "/io_pkt", .pool = {1, 1}, .ns = &ns});
  {
    process setup("setup", {}, &ns);
    auto fd = setup.open("/io_pkt/blob", O_RDWR | O_CREAT, 0644);
    REQUIRE(fd);
    std::string data(10000, '\0');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
    REQUIRE(*setup.write(*fd, data.data(), data.size()) == data.size());
  }
  process nfs_proc("nfs", {0, 0}, &ns);  // the server is a process too
  auto backing = nfs_proc.open("/io_pkt/blob", O_RDONLY);
  REQUIRE(backing);
  std::atomic<activity_id> seen_activity{0};
  io_funcs f;
  f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
    out = std::make_shared<ocb_base>();
    return io_result::ok();
  };
  f.read = [&](request_context& ctx, ocb_base&, const io_rw_request& q) {
    seen_activity = current_activity();
    // read io_pkt straight into our own client's buffer: one server's handler is another's client
    return ctx.rcv.with_reply_data([&](void* dst, std::size_t cap) -> std::error_code {
             auto r = nfs_proc.pread(*backing, dst, std::min<std::size_t>(cap, q.nbytes), q.offset);
             if (!r) return r.error();
             return {};
           })
               ? io_result::fail(EIO)
               : io_result::ok(static_cast<std::int64_t>(std::min<std::uint64_t>(q.nbytes, 10000 - std::min<std::int64_t>(q.offset, 10000))));
  };
  server nfs({.name = "nfs", .pool = {1, 2}, .ns = &ns}, f);
  REQUIRE_FALSE(nfs.attach("/nfs"));
  nfs.start();
  process bob("bob", {1000, 100}, &ns);
  auto fd = bob.open("/nfs/blob", O_RDONLY);
  REQUIRE(fd);
  const activity_id act = new_activity();
  activity_scope as(act);
  std::vector<std::thread> ts;
  std::atomic<int> bad{0};
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      for (int k = 0; k < 50; ++k) {
        char buf[100];
        const off_t off = (t * 977 + k * 131) % 9900;
        if (bob.pread(*fd, buf, 100, off).value_or(0) != 100u) ++bad;
        for (int i = 0; i < 100; ++i)
          if (buf[i] != static_cast<char>('a' + (off + i) % 26)) ++bad;
      }
    });
  for (auto& t : ts) t.join();
  char one[4];
  REQUIRE(*bob.pread(*fd, one, 4, 0) == 4u);
  CHECK(seen_activity.load() == act);  // the nfs thread adopted bob's activity
  CHECK(bad.load() == 0);
  nfs.stop();
}

TEST_CASE("the thread pool grows while every thread is busy, up to max_threads") {
  faultsafe_test::watchdog wd("pool growth");
  path_namespace ns;
  gate g;
  const io_funcs f = gated_reads(g, 0);
  server s({.name = "pool", .pool = {1, 3}, .ns = &ns}, f);
  REQUIRE_FALSE(s.attach("/pool"));
  s.start();
  CHECK(s.threads() == 1u);
  process p("p", {}, &ns);
  auto fd = p.open("/pool/x", O_RDONLY);
  REQUIRE(fd);
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 5; ++i)
    ts.emplace_back([&] {
      char b[1];
      if (p.pread(*fd, b, 1, 0)) ++ok;
    });
  REQUIRE(g.wait_for_waiters(3));  // three threads serve at once: the pool grew from 1 to 3
  for (int i = 0; i < 20000 && s.chan()->queued() < 2; ++i) std::this_thread::sleep_for(1ms);
  CHECK(s.threads() == 3u);  // and no further
  CHECK(s.peak_busy() == 3u);
  CHECK(s.chan()->queued() == 2u);
  CHECK(s.chan()->snapshot().size() == 3u);
  g.release();
  for (auto& t : ts) t.join();
  CHECK(ok.load() == 5);
  CHECK(s.threads() == 3u);
}

#include <faultsafe/resmgr/process_thread.hpp>

TEST_CASE("process threads are named after their process") {
  faultsafe_test::watchdog wd("process_thread");
  process bob("Bob");
  std::uint32_t id1 = 0, id2 = 0;
  {
    process_thread bob1(bob, "bob1", [&] { id1 = this_thread_id(); });
    process_thread bob2(bob, "bob2", [&](int k) { id2 = this_thread_id() + static_cast<std::uint32_t>(k) * 0; }, 5);
    CHECK(bob1.name() == "Bob/bob1");
    bob1.join();
    CHECK(thread_name(id1) != "Bob/bob1");  // the thread has exited: its name is forgotten
  }
  CHECK(id1 != 0u);
  CHECK(id2 != 0u);
  std::atomic<bool> checked{false};
  process_thread t(bob, "probe", [&] { checked = thread_name(this_thread_id()) == "Bob/probe"; });
  t.join();
  CHECK(checked.load());
}

TEST_CASE("times: writes set mtime, the next read sets atime (relatime)") {
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/t", .ns = &ns});
  process p("p", {}, &ns);
  auto fd = p.open("/t/f", O_RDWR | O_CREAT, 0644);
  REQUIRE(fd);
  auto ts = [](const timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; };
  std::this_thread::sleep_for(2ms);
  REQUIRE(*p.write(*fd, "abc", 3) == 3u);
  auto st1 = *p.fstat(*fd);
  CHECK(ts(st1.st_mtim) > ts(st1.st_atim));  // modified after the last access
  std::this_thread::sleep_for(2ms);
  char b[3];
  REQUIRE(*p.pread(*fd, b, 3, 0) == 3u);
  auto st2 = *p.fstat(*fd);
  CHECK(ts(st2.st_atim) >= ts(st2.st_mtim));  // the read after a change set atime
  CHECK(ts(st2.st_mtim) == ts(st1.st_mtim));  // and left mtime alone
  REQUIRE(p.ftruncate(*fd, 1).ok());
  auto st3 = *p.fstat(*fd);
  CHECK(ts(st3.st_mtim) >= ts(st2.st_mtim));
  CHECK(ts(st3.st_ctim) == ts(st3.st_mtim));
}
