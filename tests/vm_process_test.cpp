// mmap of ramfs files through the process API: reads through the mapping from several threads (each
// fault pages in through the server), writes through MAP_SHARED seen by process.read(), MAP_PRIVATE
// isolation, EACCES for PROT_WRITE|MAP_SHARED on a read-only open, bad input, a mapping that outlives
// close(), page-in past the end (SIGBUS), a stopped server (SIGBUS, no hang), anonymous memory.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <faultsafe/resmgr/direct_copy.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/vm/private_copies.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "vm_ramfs_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

using vmtest::make_ramfs_file;

TEST_CASE("map a ramfs file and read it through the mapping from several threads") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(40, "ramfs mapped read");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const std::size_t size = 4 << 20;
  const int fd = make_ramfs_file(bob, "/ram/data", size, O_RDONLY);
  auto m = bob.mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(m.ok());
  auto* p = static_cast<const std::uint8_t*>(*m);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      announce_faulting_thread();
      activity_scope act(new_activity());
      const std::size_t pages = size / vm_page_size;
      for (std::size_t k = 0; k < pages; ++k) {
        const std::size_t pg_i = (k * (2 * t + 1) + static_cast<std::size_t>(t) * 97) % pages;  // different orders
        const std::size_t off = pg_i * vm_page_size + (pg_i % 4000);
        if (p[off] != pattern(off)) bad.fetch_add(1);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  const auto st = bob.memory().fault_pager().stats();
  CHECK(st.faults > 0);
  CHECK(st.page_in_errors == 0);
  CHECK(bob.munmap(*m, size).ok());
  CHECK(bob.close(fd).ok());
}

TEST_CASE("write through MAP_SHARED, read it back with process.read(); MAP_PRIVATE stays private") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "ramfs mapped write");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const std::size_t size = 256 << 10;
  const int fd = make_ramfs_file(bob, "/ram/w", size);
  auto shared = bob.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  auto priv = bob.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  REQUIRE(shared.ok());
  REQUIRE(priv.ok());
  auto* s = static_cast<std::uint8_t*>(*shared);
  auto* q = static_cast<std::uint8_t*>(*priv);
  CHECK(q[100] == pattern(100));
  q[100] = static_cast<std::uint8_t>(~pattern(100));  // private write: file unchanged
  for (std::size_t i = 0; i < size; i += 1000) s[i] = static_cast<std::uint8_t>(i / 1000 + 1);
  std::vector<std::uint8_t> buf(size);
  REQUIRE(bob.pread(fd, buf.data(), size, 0).value() == size);
  for (std::size_t i = 0; i < size; ++i) {
    const std::uint8_t want = (i % 1000 == 0) ? static_cast<std::uint8_t>(i / 1000 + 1) : pattern(i);
    if (buf[i] != want) {
      FAIL("byte " << i << " is " << int(buf[i]) << ", want " << int(want));
      break;
    }
  }
  // A write() through the server is seen through the shared mapping (same pages).
  const std::uint8_t v = 0xEE;
  REQUIRE(bob.pwrite(fd, &v, 1, 5001).value() == 1);
  CHECK(s[5001] == 0xEE);
  CHECK(q[100] == static_cast<std::uint8_t>(~pattern(100)));
  CHECK(q[2000] == pattern(2000));
  // read() into a private anonymous mapping of the same process: the server thread takes that fault.
  auto anon = bob.mmap(nullptr, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(anon.ok());
  REQUIRE(bob.pread(fd, *anon, 64 << 10, 0).value() == (64u << 10));
  CHECK(static_cast<std::uint8_t*>(*anon)[1000] == 2);
  CHECK(static_cast<std::uint8_t*>(*anon)[1001] == pattern(1001));
  CHECK(bob.msync(*shared, size, MS_SYNC).ok());
  CHECK(bob.munmap(*shared, size).ok());
  CHECK(bob.munmap(*priv, size).ok());
  CHECK(bob.munmap(*anon, 64 << 10).ok());
}

TEST_CASE("the server's mmap handler checks access: EACCES, and bad input is EINVAL/EBADF") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "eacces");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int ro = make_ramfs_file(bob, "/ram/ro", 64 << 10, O_RDONLY);
  CHECK(bob.mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0).error() == std::errc::permission_denied);
  auto privw = bob.mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, ro, 0);  // private: fine
  REQUIRE(privw.ok());
  static_cast<std::uint8_t*>(*privw)[0] = 1;
  auto sh = bob.mmap(nullptr, 4096, PROT_READ, MAP_SHARED, ro, 0);
  REQUIRE(sh.ok());
  CHECK(bob.mprotect(*sh, 4096, PROT_READ | PROT_WRITE).error() == std::errc::permission_denied);
  auto wo = bob.open("/ram/ro", O_WRONLY);
  REQUIRE(wo.ok());
  CHECK(bob.mmap(nullptr, 4096, PROT_READ, MAP_SHARED, *wo, 0).error() == std::errc::permission_denied);
  CHECK(bob.mmap(nullptr, 4096, PROT_READ, MAP_SHARED, 99, 0).error() == std::errc::bad_file_descriptor);
  CHECK(bob.mmap(nullptr, 4096, PROT_READ, MAP_SHARED, ro, 100).error() == std::errc::invalid_argument);
  CHECK(bob.mmap(nullptr, 0, PROT_READ, MAP_SHARED, ro, 0).error() == std::errc::invalid_argument);
  CHECK(bob.mmap(nullptr, 4096, PROT_READ, MAP_SHARED | MAP_PRIVATE, ro, 0).error() == std::errc::invalid_argument);
  // Another user may not map a file it may not open: open fails first.
  process eve("eve", {2000, 200}, &ns);
  auto f = bob.open("/ram/secret", O_CREAT | O_RDWR, 0600);
  REQUIRE(f.ok());
  CHECK(eve.open("/ram/secret", O_RDONLY).error() == std::errc::permission_denied);
}

TEST_CASE("a mapping outlives close(); past the end is SIGBUS; a stopped server is SIGBUS, not a hang") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "close/eof/stop");
  path_namespace ns;
  auto fs = std::make_unique<ramfs>(ramfs_options{.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int fd = make_ramfs_file(bob, "/ram/c", 3 * vm_page_size + 10, O_RDONLY);
  auto m = bob.mmap(nullptr, 8 * vm_page_size, PROT_READ, MAP_PRIVATE, fd, 0);
  REQUIRE(m.ok());
  auto* p = static_cast<const std::uint8_t*>(*m);
  CHECK(bob.close(fd).ok());  // the server's close is deferred: the mapping still pages in
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(p + vm_page_size + 7, v) == 0);
  CHECK(v == pattern(vm_page_size + 7));
  CHECK(vmtest::probe_read(p + 3 * vm_page_size + 9, v) == 0);
  CHECK(v == pattern(3 * vm_page_size + 9));
  CHECK(vmtest::probe_read(p + 3 * vm_page_size + 11, v) == 0);  // rest of the last page: zeros
  CHECK(v == 0);
  CHECK(vmtest::probe_read(p + 5 * vm_page_size, v) == SIGBUS);  // past the end of the file
  fs->stop();  // the server stops: the next page-in fails with ESHUTDOWN
  CHECK(vmtest::probe_read(p + 2 * vm_page_size, v) == SIGBUS);
  CHECK(vmtest::probe_read(p + vm_page_size + 8, v) == 0);  // pages already in stay
  CHECK(bob.munmap(*m, 8 * vm_page_size).ok());
  CHECK(bob.memory().fault_pager().stats().page_in_errors == 2);
}

TEST_CASE("page-ins are sent on behalf of the faulting thread's activity") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "activity");
  path_namespace ns;
  std::mutex mu;
  std::vector<activity_id> seen;
  io_funcs funcs = iofunc_defaults();
  auto attr = std::make_shared<iofunc_attr>(0644, 0, 0);
  funcs.open = [&](request_context& ctx, const io_open_request& q, std::string_view, std::shared_ptr<ocb_base>& out) {
    return iofunc_open_default(ctx, q, attr, out);
  };
  funcs.page_in = [&](request_context& ctx, ocb_base* o, const io_page_in_request& q, io_page_in_reply& rep) {
    {
      std::lock_guard<std::mutex> g(mu);
      seen.push_back(current_activity());
    }
    return iofunc_page_in_default(ctx, o, q, rep);
  };
  server srv(server_options{"spy", {1, 2}, {}, &ns}, funcs);
  REQUIRE(!srv.attach("/spy"));
  srv.start();
  process bob("bob", {}, &ns);
  auto fd = bob.open("/spy", O_RDWR);
  REQUIRE(fd.ok());
  REQUIRE(bob.ftruncate(*fd, 64 << 10).ok());
  auto m = bob.mmap(nullptr, 64 << 10, PROT_READ, MAP_SHARED, *fd, 0);
  REQUIRE(m.ok());
  const activity_id a = new_activity();
  std::thread t([&] {
    announce_faulting_thread();
    activity_scope s(a);
    CHECK(static_cast<const std::uint8_t*>(*m)[10] == 0);
  });
  t.join();
  {
    std::lock_guard<std::mutex> g(mu);
    REQUIRE(seen.size() >= 1);
    CHECK(seen[0] == a);
    seen.clear();
  }
  // A server thread copying read() data into a mapped buffer takes the fault itself; the page-in it
  // causes is sent on behalf of the activity that server thread adopted (the reader's): the chain
  // client -> server thread -> fault -> pager -> page-in keeps one activity.
  auto buf = bob.mmap(nullptr, 16 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE, *fd, 32 << 10);
  REQUIRE(buf.ok());
  const activity_id b = new_activity();
  std::thread r([&] {
    activity_scope s(b);
    CHECK(bob.pread(*fd, *buf, 4096, 0).value() == 4096u);
  });
  r.join();
  {
    std::lock_guard<std::mutex> g(mu);
    REQUIRE(seen.size() >= 1);
    CHECK(seen[0] == b);
  }
  CHECK(bob.munmap(*buf, 16 << 10).ok());
  CHECK(bob.munmap(*m, 64 << 10).ok());
  CHECK(bob.close(*fd).ok());
  srv.stop();
}

TEST_CASE("two activities that each hold a range inside the other's fault-around window both fault: no wait, no EFAULT") {
  // The page-in try-locks its fault-around window and, when part of it is held by another activity,
  // serves the faulting page alone (iofunc_page_in_default). Waiting for the whole window instead
  // makes each page-in wait for the other activity's range while that activity waits for its own
  // page-in: a cycle (the wait-for graph breaks it with a SIGBUS/EFAULT; without the graph, a hang).
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "fault-around windows");
  constexpr std::size_t pg = vm_page_size, win = 4 * pg;
  for (const int kind : {MAP_SHARED, MAP_PRIVATE}) {
    CAPTURE(kind);
    path_namespace ns;
    auto attr = std::make_shared<iofunc_attr>(0644, 0, 0);
    io_funcs funcs = iofunc_defaults();
    funcs.open = [&](request_context& ctx, const io_open_request& q, std::string_view, std::shared_ptr<ocb_base>& out) {
      return iofunc_open_default(ctx, q, attr, out);
    };
    server srv(server_options{"win", {2, 4}, {}, &ns}, funcs);
    REQUIRE(!srv.attach("/win"));
    srv.start();
    process bob("bob", {}, &ns);
    // Every fault's window is the aligned 4 pages around it (min_window), never just the page.
    (void)bob.memory(aspace_options{}, pager_options{.min_window = win, .max_window = win, .readahead = false});
    auto fd = bob.open("/win", O_RDWR);
    REQUIRE(fd.ok());
    std::vector<std::uint8_t> data(win);
    for (std::size_t i = 0; i < win; ++i) data[i] = pattern(i);
    REQUIRE(bob.pwrite(*fd, data.data(), win, 0).value() == win);
    // One mapping per activity: each has its own fault-around state, so both windows are [0, 4 pages).
    auto ma = bob.mmap(nullptr, win, PROT_READ, kind, *fd, 0);
    auto mb = bob.mmap(nullptr, win, PROT_READ, kind, *fd, 0);
    REQUIRE(ma.ok());
    REQUIRE(mb.ok());
    test_support::barrier both_hold(2);
    int sig[2] = {-1, -1};
    std::uint8_t got[2] = {0, 0};
    // Activity 0 holds page 1 and faults on page 0; activity 1 holds page 3 and faults on page 2.
    auto run = [&](int i, const void* m, std::size_t held, std::size_t touch) {
      announce_faulting_thread();
      activity_scope act(new_activity());
      range_guard g(attr->data_lock, held, pg, lock_mode::exclusive);
      if (!both_hold.arrive_and_wait(std::chrono::seconds(10))) return;
      sig[i] = vmtest::probe_read(static_cast<const std::uint8_t*>(m) + touch + 5, got[i]);
    };
    std::thread ta(run, 0, *ma, 1 * pg, 0 * pg);
    std::thread tb(run, 1, *mb, 3 * pg, 2 * pg);
    ta.join();
    tb.join();
    CHECK(sig[0] == 0);
    CHECK(sig[1] == 0);
    CHECK(got[0] == pattern(0 * pg + 5));
    CHECK(got[1] == pattern(2 * pg + 5));
    // The pages left out of those page-ins are served by later faults, with the right data.
    std::uint8_t v = 0;
    for (std::size_t off = 0; off < win; off += pg) {
      REQUIRE(vmtest::probe_read(static_cast<const std::uint8_t*>(*ma) + off + 9, v) == 0);
      CHECK(v == pattern(off + 9));
      REQUIRE(vmtest::probe_read(static_cast<const std::uint8_t*>(*mb) + off + 9, v) == 0);
      CHECK(v == pattern(off + 9));
    }
    CHECK(bob.memory().fault_pager().stats().page_in_errors == 0);
    CHECK(bob.munmap(*ma, win).ok());
    CHECK(bob.munmap(*mb, win).ok());
    CHECK(bob.close(*fd).ok());
    srv.stop();
  }
}

TEST_CASE("a read into a buffer that turns bad part-way returns the bytes before the bad page; EFAULT only if none") {
  // read(2) semantics: a short count of the bytes copied. The ordinary path (the destination is not a
  // mapping of the file) and the direct-copy path (it is: resmgr/direct_copy.hpp), read/pread/readv.
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "short read");
  reinstall_guarded_copy_handler();  // in front of doctest's per-test-case SIGSEGV handler
  constexpr std::size_t pg = vm_page_size;
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int fd = make_ramfs_file(bob, "/ram/short", 8 * pg);
  auto is_pattern = [](const std::uint8_t* p, std::size_t n, std::size_t from) {
    for (std::size_t i = 0; i < n; ++i)
      if (p[i] != pattern(from + i)) return false;
    return true;
  };
  SUBCASE("ordinary path: anonymous memory whose second page is PROT_NONE") {
    void* raw = ::mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(raw != MAP_FAILED);
    auto* base = static_cast<std::uint8_t*>(raw);
    REQUIRE(::mprotect(base + pg, pg, PROT_NONE) == 0);
    std::uint8_t* dst = base + pg - 100;  // 100 good bytes, then the bad page
    CHECK(bob.pread(fd, dst, 300, 10).value_or(0) == 100u);
    CHECK(is_pattern(dst, 100, 10));
    REQUIRE(bob.lseek(fd, 5, SEEK_SET).value_or(-1) == 5);
    CHECK(bob.read(fd, dst, 300).value_or(0) == 100u);
    CHECK(is_pattern(dst, 100, 5));
    CHECK(bob.lseek(fd, 0, SEEK_CUR).value_or(-1) == 105);  // the offset moved by the bytes read
    auto none = bob.pread(fd, base + pg, 10, 0);
    REQUIRE(!none.ok());
    CHECK(none.error() == std::errc::bad_address);
    std::vector<std::uint8_t> first(50);
    const struct ::iovec iov[2] = {{first.data(), first.size()}, {dst, 300}};
    CHECK(bob.preadv(fd, iov, 2, 0).value_or(0) == 150u);
    CHECK(is_pattern(first.data(), 50, 0));
    CHECK(is_pattern(dst, 100, 50));
    CHECK(::munmap(raw, 2 * pg) == 0);
  }
  SUBCASE("direct-copy path: a MAP_SHARED mapping of the same file whose second page is PROT_NONE") {
    auto m = bob.mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(m.ok());
    auto* base = static_cast<std::uint8_t*>(*m);
    REQUIRE(bob.mprotect(base + pg, pg, PROT_NONE).ok());
    const std::uint64_t reads_before = direct_copy_stats().reads;
    CHECK(bob.pread(fd, base, 2 * pg, 4 * pg).value_or(0) == pg);  // file page 4 into file page 0
    CHECK(is_pattern(base, pg, 4 * pg));
    CHECK(bob.pread(fd, base + pg - 100, 300, 5 * pg).value_or(0) == 100u);
    CHECK(is_pattern(base + pg - 100, 100, 5 * pg));
    auto none = bob.pread(fd, base + pg, 10, 0);
    REQUIRE(!none.ok());
    CHECK(none.error() == std::errc::bad_address);
    CHECK(direct_copy_stats().reads >= reads_before + 2);  // the first two: the direct path
    CHECK(bob.munmap(*m, 2 * pg).ok());
  }
  CHECK(bob.close(fd).ok());
}

TEST_CASE("ftruncate shrinks a mapped file: pages past the new end SIGBUS, MAP_PRIVATE ones written before too, as Linux") {
  // The contract of resmgr/iofunc.hpp, "Shrink and MAP_PRIVATE": an unwritten private page is the page
  // cache's page and leaves with it; a written one is the mapping's own copy, which the shrink drops
  // as Linux's truncate does (vm/private_copies.hpp; it was kept before 2026-12-04). The page that
  // holds the new end keeps its copy, as on Linux; a growth serves the dropped pages again (zeros).
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "shrink");
  constexpr std::size_t pg = vm_page_size;
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int fd = make_ramfs_file(bob, "/ram/shrink", 4 * pg);
  auto sh = bob.mmap(nullptr, 4 * pg, PROT_READ, MAP_SHARED, fd, 0);
  auto pr = bob.mmap(nullptr, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  REQUIRE(sh.ok());
  REQUIRE(pr.ok());
  const auto* s = static_cast<const std::uint8_t*>(*sh);
  auto* p = static_cast<std::uint8_t*>(*pr);
  std::uint8_t v = 0;
  REQUIRE(vmtest::probe_read(s + 2 * pg + 3, v) == 0);  // touched before the shrink
  REQUIRE(vmtest::probe_read(p + 2 * pg + 3, v) == 0);  // read: the page cache's page
  REQUIRE(vmtest::probe_write(p + 3 * pg + 3, 0x5A) == 0);  // written: a private copy
  REQUIRE(vmtest::probe_write(p + 0 * pg + 4000, 0x6B) == 0);  // written: the page of the new end
  REQUIRE(bob.ftruncate(fd, static_cast<off_t>(pg - 10)).ok());
  CHECK(vmtest::probe_read(s + 2 * pg + 3, v) == SIGBUS);  // shared: as Linux
  CHECK(vmtest::probe_read(p + 2 * pg + 3, v) == SIGBUS);  // private, read only: as Linux
  CHECK(vmtest::probe_read(p + 1 * pg + 3, v) == SIGBUS);  // private, never touched: as Linux
  CHECK(vmtest::probe_read(p + 3 * pg + 3, v) == SIGBUS);  // private, written: dropped, as Linux
  CHECK(vmtest::probe_read(p + 4000, v) == 0);             // the page of the new end keeps its copy
  CHECK(v == 0x6B);
  CHECK(vmtest::probe_read(p + 5, v) == 0);                // inside the file: the file's bytes
  CHECK(v == pattern(5));
  REQUIRE(bob.ftruncate(fd, static_cast<off_t>(4 * pg)).ok());  // grown again: zeros, as Linux
  CHECK(vmtest::probe_read(p + 3 * pg + 3, v) == 0);
  CHECK(v == 0);
  CHECK(bob.munmap(*sh, 4 * pg).ok());
  // The record goes with the mapping: memory mapped later at its addresses is never dropped by a shrink.
  const std::size_t records = private_copies::instance().size();
  CHECK(bob.munmap(p + 2 * pg, 2 * pg).ok());  // the tail: the record keeps the head
  CHECK(private_copies::instance().size() == records);
  void* again = ::mmap(p + 2 * pg, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  REQUIRE(again == p + 2 * pg);
  std::memset(again, 0x7E, 2 * pg);
  REQUIRE(bob.ftruncate(fd, 0).ok());
  CHECK(static_cast<std::uint8_t*>(again)[pg + 9] == 0x7E);  // not ours any more: untouched
  CHECK(vmtest::probe_read(p + 3, v) == SIGBUS);               // the head: past the end now
  ::munmap(again, 2 * pg);
  CHECK(bob.munmap(p, 2 * pg).ok());
  CHECK(private_copies::instance().size() == records - 1);
  CHECK(bob.close(fd).ok());
}

TEST_CASE("MAP_PRIVATE: an unwritten page shows later changes of the file, as Linux; a written page is the mapping's own") {
  // A private file mapping maps the memfd MAP_PRIVATE (vm/aspace.hpp): UFFDIO_CONTINUE maps the page
  // cache's page read-only, the kernel copies it at the first write. Before, a private page was a copy
  // from its first touch and missed later writes of the file.
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "private follows the file");
  constexpr std::size_t pg = vm_page_size;
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const int fd = make_ramfs_file(bob, "/ram/private", 4 * pg);
  auto pr = bob.mmap(nullptr, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  auto sh = bob.mmap(nullptr, 4 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(pr.ok());
  REQUIRE(sh.ok());
  auto* p = static_cast<std::uint8_t*>(*pr);
  auto* s = static_cast<std::uint8_t*>(*sh);
  std::uint8_t v = 0;
  REQUIRE(vmtest::probe_read(p + 10, v) == 0);  // page 0 present, unwritten
  CHECK(v == pattern(10));
  REQUIRE(vmtest::probe_write(p + pg + 10, 0x11) == 0);  // page 1 written
  const std::uint8_t x = 0xE7;
  REQUIRE(bob.pwrite(fd, &x, 1, 10).ok());
  REQUIRE(bob.pwrite(fd, &x, 1, pg + 10).ok());
  s[2 * pg + 10] = 0x22;  // a store through a shared mapping
  CHECK(vmtest::probe_read(p + 10, v) == 0);
  CHECK(v == 0xE7);  // follows the file's write
  CHECK(vmtest::probe_read(p + pg + 10, v) == 0);
  CHECK(v == 0x11);  // its own copy
  CHECK(vmtest::probe_read(p + 2 * pg + 10, v) == 0);
  CHECK(v == 0x22);  // never touched: the file as it is
  REQUIRE(vmtest::probe_write(p + 2 * pg + 10, 0x33) == 0);  // now its own
  CHECK(s[2 * pg + 10] == 0x22);  // the file is unchanged
  std::uint8_t back = 0;
  REQUIRE(bob.pread(fd, &back, 1, 2 * pg + 10).ok());
  CHECK(back == 0x22);
  // read(fd) into a private page makes it the mapping's own, as the kernel's copy-on-write does.
  REQUIRE(bob.pread(fd, p + 3 * pg, 16, 0).ok());  // the file's bytes 0..15 into private page 3
  CHECK(p[3 * pg] == pattern(0));
  CHECK(p[3 * pg + 10] == 0xE7);
  std::uint8_t buf[16];
  std::memset(buf, 0x44, sizeof buf);
  REQUIRE(bob.pwrite(fd, buf, sizeof buf, 3 * pg).ok());  // the file changes under it
  CHECK(p[3 * pg] == pattern(0));
  CHECK(p[3 * pg + 20] == pattern(3 * pg + 20));  // the rest of the page: the file's bytes when it was copied
  CHECK(bob.munmap(*pr, 4 * pg).ok());
  CHECK(bob.munmap(*sh, 4 * pg).ok());
  CHECK(bob.close(fd).ok());
}

TEST_CASE("the last page past the end of the file: a private page-in and read(fd)/write(fd) through a shared mapping see what the mapping stored there, as Linux") {
  // Found by vm_differential_test (seeds 3, 7, 10 and 354 before the fix): a shared mapping may store
  // into the rest of the file's last page (no SIGBUS there); Linux's private mappings of that page
  // show those bytes, and read(2)/write(2) into/from that part of a shared mapping copy them. faultsafe
  // zero-filled a private page-in after the size and made a direct copy stop at the size (EFAULT, or a
  // short count). Each shape runs on the ramfs file and on a tmpfs memfd; both must agree.
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "last page tail");
  constexpr std::size_t pg = vm_page_size;
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  const std::size_t size = pg + 100;
  const int fd = make_ramfs_file(bob, "/ram/tail", size);
  vmtest::memfd_file kf(size);
  auto sh = bob.mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(sh.ok());
  void* ksh_raw = ::mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, kf.fd, 0);
  REQUIRE(ksh_raw != MAP_FAILED);
  auto* s = static_cast<std::uint8_t*>(*sh);
  auto* ks = static_cast<std::uint8_t*>(ksh_raw);
  for (std::size_t i = 150; i < 1500; ++i) s[pg + i] = ks[pg + i] = static_cast<std::uint8_t>(i * 7 + 1);  // past the end
  // A private mapping made afterwards pages the last page in whole.
  auto pr = bob.mmap(nullptr, 2 * pg, PROT_READ, MAP_PRIVATE, fd, 0);
  REQUIRE(pr.ok());
  void* kpr = ::mmap(nullptr, 2 * pg, PROT_READ, MAP_PRIVATE, kf.fd, 0);
  REQUIRE(kpr != MAP_FAILED);
  const auto* p = static_cast<const std::uint8_t*>(*pr);
  const auto* kp = static_cast<const std::uint8_t*>(kpr);
  CHECK(kp[pg + 200] == static_cast<std::uint8_t>(200 * 7 + 1));  // Linux: the page cache's bytes
  CHECK(p[pg + 200] == kp[pg + 200]);
  CHECK(std::memcmp(p + pg, kp + pg, pg) == 0);
  // write(fd) from the tail of the shared mapping: every byte, none past the end is a hole.
  CHECK(::pwrite(kf.fd, ks + pg + 150, 300, 0) == 300);
  CHECK(bob.pwrite(fd, s + pg + 150, 300, 0).value_or(0) == 300u);
  // read(fd) into the tail of the shared mapping: the same.
  CHECK(::pread(kf.fd, ks + pg + 1000, 50, 0) == 50);
  CHECK(bob.pread(fd, s + pg + 1000, 50, 0).value_or(0) == 50u);
  // A source that starts inside the file and runs into the tail (a write inside the file).
  CHECK(::pwrite(kf.fd, ks + pg + 50, 1000, 2000) == 1000);
  CHECK(bob.pwrite(fd, s + pg + 50, 1000, 2000).value_or(0) == 1000u);
  CHECK(std::memcmp(s, ks, 2 * pg) == 0);
  CHECK(test_support::file_bytes(bob, fd) == [&] {
    std::vector<std::uint8_t> k(size);
    REQUIRE(::pread(kf.fd, k.data(), size, 0) == static_cast<ssize_t>(size));
    return k;
  }());
  CHECK(::pwrite(kf.fd, ks + 2 * pg - 1, 1, 0) == 1);  // the last byte of the last page: no hole either
  CHECK(bob.pwrite(fd, s + 2 * pg - 1, 1, 0).value_or(0) == 1u);
  CHECK(::munmap(kpr, 2 * pg) == 0);
  CHECK(::munmap(ksh_raw, 2 * pg) == 0);
  CHECK(bob.munmap(*pr, 2 * pg).ok());
  CHECK(bob.munmap(*sh, 2 * pg).ok());
  CHECK(bob.close(fd).ok());
}
