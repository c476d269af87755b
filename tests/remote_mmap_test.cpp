// mmap of a file of a resource manager in ANOTHER OS process, through the client API (process::mmap
// over a mount_remote()d prefix): the client's mappings are served by the server's pager
// (resmgr/remote.hpp, vm/served_memory.hpp). Real processes: the server (ramfs + remote_server) is a
// forked child. Checked in both userfaultfd modes of the client (user-mode-only, and kernel-mode
// faults where available):
//   - every byte of MAP_SHARED and MAP_PRIVATE mappings reads the file's data (first touches are the
//     server's page-ins); a write through the shared mapping is the file's (pread sees it), one through
//     the private mapping is not; munmap and close work, and the open a mapping keeps is released;
//   - read(fd, p) into a fresh MAP_SHARED mapping of the same file (Brian): with kernel-mode faults the
//     server's process_vm_writev faults on its own pager, which serves it (ramfs reads hold their range
//     shared: no conflict); user-mode-only, the copy fails EFAULT and the server faults the range in
//     and retries; the data is right through the mapping either way;
//   - the same read with the seed's exclusive read handler (the whole file's range exclusively while the
//     server copies): the page-in conflicts only with the reader's own activity and the guard grants it
//     (kernel-mode faults: the fault names the server's announced slot thread; user-mode-only: the
//     fault-in helper works for that activity);
//   - MAP_FIXED over part of a served mapping maps the new file range there (served), MAP_FIXED_NOREPLACE
//     over a mapping and MAP_FIXED over memory not the client's own are EEXIST, a MAP_FIXED the
//     server refuses leaves the old mapping;
//   - mprotect and msync through the client API work on served mappings as in-process (SIGSEGV where
//     the protection forbids, ENOMEM past the mapping, EACCES for PROT_WRITE through a read-only open;
//     PROT_WRITE added to a shared mapping of a writable open made without it writes the file);
//   - three client threads at once, two mapping, touching and unmapping, one dropping pages of a kept
//     mapping (MADV_DONTNEED): every touch is served (no SIGBUS from a fill that met the other
//     threads' unread events, nor from a mapping at addresses whose UNMAP event was not read yet);
//   - the server killed with SIGKILL: unserved pages raise SIGBUS, nothing hangs;
//   - isolation (issue 11): the file behind a client's mapping of file A (opened through
//     /proc/self/map_files, as root) is A's own memfd: its size is A's capacity, not the store's arena,
//     and file B's bytes are nowhere in it; it is sealed (no size change, even read-write); the fd the
//     server sends for a mapping that cannot write the file is read-only (no write, punch or truncate,
//     and a non-root uid cannot reopen it for writing), the one for a shared writable mapping is
//     read-write but sealed; a shared writable mapping writes the file, and shrink / growth keep their
//     semantics across processes (SIGBUS past the end, zeros after growth).
// Every wait is bounded (watchdog, bounded child waits).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/process_memory.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>

#include "support/fdpass.hpp"
#include "support/signals.hpp"
#include "vm_differential_support.hpp"
#include "vm_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

namespace {

constexpr std::size_t len = 64 * vm_page_size;

// A forked ramfs server at `address` (prefix /ram), until `stop_r` reads end of file.
pid_t fork_server(const std::string& address, int ready_w, int stop_r, int stop_w, int ready_r) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(stop_w);  // only the test holds it: its close ends the server
    ::close(ready_r);
    int rc = 0;
    try {
      path_namespace ns;
      ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
      remote_server rs(fs.srv(), remote_server_options{.address = address});
      (void)!::write(ready_w, "r", 1);
      char c;
      while (::read(stop_r, &c, 1) < 0 && errno == EINTR) {
      }
    } catch (...) {
      rc = 3;
    }
    ::_exit(rc);
  }
  return pid;
}

bool kernel_faults_available() {
  try {
    served_memory sm(served_memory_options{true});
    return true;
  } catch (const std::system_error&) {
    return false;
  }
}

struct remote_fixture {
  explicit remote_fixture(bool kernel_faults) {
    static int n = 0;
    address = "@faultsafe-remote-mmap-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
    int ready[2], stop[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(stop, O_CLOEXEC) == 0);
    server = fork_server(address, ready[1], stop[0], stop[1], ready[0]);
    REQUIRE(server > 0);
    ::close(ready[1]);
    ::close(stop[0]);
    stop_w = stop[1];
    pollfd p{ready[0], POLLIN, 0};
    REQUIRE(::poll(&p, 1, 20000) == 1);
    ::close(ready[0]);
    REQUIRE(!mount_remote(ns, "/ram", address));
    bob.memory().set_served_options(served_memory_options{kernel_faults});
  }
  ~remote_fixture() {
    if (stop_w >= 0) ::close(stop_w);
    bool timed_out = false;
    (void)test_support::wait_child(server, timed_out, std::chrono::seconds(20));
  }
  int make_file(const char* path) {
    auto fd = bob.open(path, O_RDWR | O_CREAT, 0644);
    REQUIRE(fd.ok());
    std::vector<std::uint8_t> bytes(len);
    for (std::size_t i = 0; i < len; ++i) bytes[i] = pattern(i);
    auto w = bob.pwrite(*fd, bytes.data(), len, 0);
    REQUIRE(w.ok());
    REQUIRE(*w == len);
    return *fd;
  }
  std::string address;
  pid_t server = -1;
  int stop_w = -1;
  path_namespace ns;
  process bob{"bob", {0, 0}, &ns};
};

bool all_pattern(const std::uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != pattern(i)) return false;
  return true;
}

}  // namespace

TEST_CASE("mmap of a remote server's file is served by the server's pager, in both userfaultfd modes") {
  vmtest::require_userfaultfd();
  for (const bool kernel_faults : {false, true}) {
    if (kernel_faults && !kernel_faults_available()) {
      MESSAGE("kernel-mode faults unavailable: that mode is skipped");
      continue;
    }
    CAPTURE(kernel_faults);
    vmtest::watchdog wd(60, "remote mmap");
    remote_fixture f(kernel_faults);
    const int fd = f.make_file("/ram/f");
    auto sh = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    INFO(sh.error().message());
    REQUIRE(sh.ok());
    auto* s = static_cast<std::uint8_t*>(*sh);
    CHECK(all_pattern(s, len));
    s[5 * vm_page_size] = 0xAB;  // the file's byte
    std::uint8_t b = 0;
    CHECK(f.bob.pread(fd, &b, 1, 5 * vm_page_size).value_or(0) == 1);
    CHECK(b == 0xAB);
    s[5 * vm_page_size] = pattern(5 * vm_page_size);
    auto pr = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    REQUIRE(pr.ok());
    auto* q = static_cast<std::uint8_t*>(*pr);
    CHECK(all_pattern(q, len));
    q[0] = 0x11;  // stays private
    CHECK(f.bob.pread(fd, &b, 1, 0).value_or(0) == 1);
    CHECK(b == pattern(0));
    // As Linux: an unwritten private page is the page cache's page (it shows the file's later changes);
    // a written one is the mapping's own.
    const std::uint8_t x = 0xE7;
    CHECK(f.bob.pwrite(fd, &x, 1, 2 * vm_page_size + 9).value_or(0) == 1);
    CHECK(f.bob.pwrite(fd, &x, 1, 1).value_or(0) == 1);
    CHECK(q[2 * vm_page_size + 9] == 0xE7);
    CHECK(q[1] == pattern(1));  // page 0 was written: its own copy
    CHECK(q[0] == 0x11);
    s[3 * vm_page_size + 9] = 0xE8;  // a store through a shared mapping
    CHECK(q[3 * vm_page_size + 9] == 0xE8);
    s[3 * vm_page_size + 9] = pattern(3 * vm_page_size + 9);
    const std::uint8_t back[2] = {pattern(2 * vm_page_size + 9), pattern(1)};
    CHECK(f.bob.pwrite(fd, &back[0], 1, 2 * vm_page_size + 9).value_or(0) == 1);
    CHECK(f.bob.pwrite(fd, &back[1], 1, 1).value_or(0) == 1);
    {
      // Brian: read(fd, p) into a fresh (unserved) shared mapping of the same file. Kernel-mode faults:
      // the server's copy faults on its own pager; user-mode-only: it fails EFAULT, the server pages
      // the range in on a helper thread and retries.
      auto p2 = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      REQUIRE(p2.ok());
      auto got = f.bob.read(fd, *p2, len);
      INFO(got.error().message());
      CHECK(got.value_or(0) == len);
      CHECK(all_pattern(static_cast<const std::uint8_t*>(*p2), len));
      CHECK(f.bob.munmap(*p2, len).ok());
    }
    CHECK(f.bob.munmap(*sh, len).ok());
    CHECK(f.bob.munmap(*pr, len).ok());
    CHECK(f.bob.close(fd).ok());
  }
}

TEST_CASE("MAP_FIXED and MAP_FIXED_NOREPLACE with a file of a server in another process, as in-process") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "remote MAP_FIXED");
  remote_fixture f(false);
  const int fd = f.make_file("/ram/fixed");
  const auto ro = f.bob.open("/ram/fixed", O_RDONLY);
  REQUIRE(ro.ok());
  auto m = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(m.ok());
  auto* s = static_cast<std::uint8_t*>(*m);
  CHECK(all_pattern(s, len));
  // Pages [4, 8) replaced by file pages [20, 24), private: served from the server at the same addresses.
  auto r = f.bob.mmap(s + 4 * vm_page_size, 4 * vm_page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 20 * vm_page_size);
  REQUIRE(r.ok());
  CHECK(*r == s + 4 * vm_page_size);
  bool ok = true;
  for (std::size_t i = 0; i < 4 * vm_page_size; ++i) ok = ok && s[4 * vm_page_size + i] == pattern(20 * vm_page_size + i);
  CHECK(ok);
  s[5 * vm_page_size] = 0xEE;  // private now: the file keeps its byte
  std::uint8_t b = 0;
  CHECK(f.bob.pread(fd, &b, 1, 5 * vm_page_size).value_or(0) == 1);
  CHECK(b == pattern(5 * vm_page_size));
  CHECK(f.bob.pread(fd, &b, 1, 21 * vm_page_size).value_or(0) == 1);
  CHECK(b == pattern(21 * vm_page_size));
  s[9 * vm_page_size] = 0xDD;  // the rest is still the shared mapping
  CHECK(f.bob.pread(fd, &b, 1, 9 * vm_page_size).value_or(0) == 1);
  CHECK(b == 0xDD);
  // NOREPLACE over a mapping: EEXIST, and the mapping is untouched.
  CHECK(f.bob.mmap(s, vm_page_size, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0).error() == std::errc::file_exists);
  CHECK(s[5 * vm_page_size] == 0xEE);
  // Refused by the server (a shared writable mapping through a read-only open): EACCES, the old
  // mapping stays.
  CHECK(f.bob.mmap(s, vm_page_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, *ro, 0).error() == std::errc::permission_denied);
  CHECK(s[0] == pattern(0));
  s[0] = 0xCC;
  CHECK(f.bob.pread(fd, &b, 1, 0).value_or(0) == 1);
  CHECK(b == 0xCC);
  // Memory that is not this process's mapping is never replaced.
  void* own = ::mmap(nullptr, vm_page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(own != MAP_FAILED);
  CHECK(f.bob.mmap(own, vm_page_size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0).error() == std::errc::file_exists);
  ::munmap(own, vm_page_size);
  // Unaligned: EINVAL.
  CHECK(f.bob.mmap(s + 1, vm_page_size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0).error() == std::errc::invalid_argument);
  CHECK(f.bob.munmap(s, len).ok());
  CHECK(f.bob.close(*ro).ok());
  CHECK(f.bob.close(fd).ok());
}

TEST_CASE("mprotect and msync of mappings served by a server in another process, as in-process") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "remote mprotect");
  remote_fixture f(false);
  const int fd = f.make_file("/ram/p");
  auto sh = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(sh.ok());
  auto* s = static_cast<std::uint8_t*>(*sh);
  CHECK(all_pattern(s, len));
  // Read-only: a store is SIGSEGV (the file keeps its byte); writable again: the store is the file's.
  INFO(f.bob.mprotect(s, len, PROT_READ).error().message());
  REQUIRE(f.bob.mprotect(s, len, PROT_READ).ok());
  CHECK(vmtest::probe_write(s + 3 * vm_page_size, 0x5A) == SIGSEGV);
  std::uint8_t b = 0;
  CHECK(f.bob.pread(fd, &b, 1, 3 * vm_page_size).value_or(0) == 1);
  CHECK(b == pattern(3 * vm_page_size));
  REQUIRE(f.bob.mprotect(s + 2 * vm_page_size, 2 * vm_page_size, PROT_READ | PROT_WRITE).ok());
  CHECK(vmtest::probe_write(s + 3 * vm_page_size, 0x5A) == 0);
  CHECK(vmtest::probe_write(s + 4 * vm_page_size, 0x5A) == SIGSEGV);  // outside the part made writable
  CHECK(f.bob.pread(fd, &b, 1, 3 * vm_page_size).value_or(0) == 1);
  CHECK(b == 0x5A);
  CHECK(f.bob.msync(s, len, MS_SYNC).ok());
  CHECK(f.bob.msync(s, len, MS_ASYNC | MS_SYNC).error() == std::errc::invalid_argument);
  // PROT_NONE: even a load faults.
  REQUIRE(f.bob.mprotect(s, vm_page_size, PROT_NONE).ok());
  std::uint8_t out = 0;
  CHECK(vmtest::probe_read(s, out) == SIGSEGV);
  REQUIRE(f.bob.mprotect(s, len, PROT_READ | PROT_WRITE).ok());
  CHECK(vmtest::probe_read(s, out) == 0);
  CHECK(out == pattern(0));
  // A range that runs past the mapping: ENOMEM, as mprotect(2) and msync(2).
  CHECK(f.bob.mprotect(s, len + 64 * vm_page_size, PROT_READ).error() == std::errc::not_enough_memory);
  CHECK(f.bob.msync(s, len + 64 * vm_page_size, MS_SYNC).error() == std::errc::not_enough_memory);
  CHECK(f.bob.munmap(s, len).ok());
  // mprotect of part of a mapping splits the client's VMA, which the server's pager does not see: a
  // fault-around window across the split fails as a whole (ENOENT); the faulting page is then filled
  // alone (before: the thread was woken to fault again, forever). A sequential reader grows the
  // window first; the split goes right after the first page it has not reached (the mapping's own
  // page-table entries: vmtest::mapped_pages).
  {
    auto fresh = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    REQUIRE(fresh.ok());
    auto* fr = static_cast<std::uint8_t*>(*fresh);
    std::uint8_t got = 0;
    for (std::size_t pg = 0; pg < 8; ++pg) REQUIRE(vmtest::probe_read(fr + pg * vm_page_size, got) == 0);
    unsigned char vec[len / vm_page_size] = {};
    vmtest::mapped_pages(fr, len / vm_page_size, vec);
    std::size_t first_absent = 0;
    while (first_absent < len / vm_page_size && (vec[first_absent] & 1)) ++first_absent;
    INFO("first page not yet filled: " << first_absent);
    if (first_absent + 2 < len / vm_page_size) {
      REQUIRE(f.bob.mprotect(fr + (first_absent + 1) * vm_page_size, len - (first_absent + 1) * vm_page_size, PROT_READ).ok());
      CHECK(vmtest::probe_write(fr + first_absent * vm_page_size + 7, 0x3C) == 0);
      CHECK(vmtest::probe_read(fr + (first_absent + 1) * vm_page_size, got) == 0);
      CHECK(got == pattern((first_absent + 1) * vm_page_size));
    } else {
      MESSAGE("the fault-around window filled the whole mapping: the split case is not reached");
    }
    CHECK(f.bob.munmap(fr, len).ok());
  }
  // A shared mapping made without PROT_WRITE through a writable open may become writable, as on Linux
  // (the server sent the read-write fd: resmgr/remote.hpp): its stores are the file's, and a page
  // served read-only before takes the store.
  auto rs = f.bob.mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(rs.ok());
  auto* rsp = static_cast<std::uint8_t*>(*rs);
  CHECK(rsp[5 * vm_page_size] == pattern(5 * vm_page_size));  // served while read-only
  CHECK(vmtest::probe_write(rsp + 5 * vm_page_size, 0x61) == SIGSEGV);
  REQUIRE(f.bob.mprotect(*rs, len, PROT_READ | PROT_WRITE).ok());
  CHECK(vmtest::probe_write(rsp + 5 * vm_page_size, 0x61) == 0);
  CHECK(vmtest::probe_write(rsp + 6 * vm_page_size, 0x62) == 0);  // first touch is a store
  CHECK(f.bob.pread(fd, &b, 1, 5 * vm_page_size).value_or(0) == 1);
  CHECK(b == 0x61);
  CHECK(f.bob.pread(fd, &b, 1, 6 * vm_page_size).value_or(0) == 1);
  CHECK(b == 0x62);
  CHECK(f.bob.mprotect(*rs, len, PROT_NONE).ok());
  CHECK(f.bob.munmap(*rs, len).ok());
  auto pv = f.bob.mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
  REQUIRE(pv.ok());
  REQUIRE(f.bob.mprotect(*pv, len, PROT_READ | PROT_WRITE).ok());
  CHECK(vmtest::probe_write(static_cast<std::uint8_t*>(*pv), 0x77) == 0);
  CHECK(f.bob.pread(fd, &b, 1, 0).value_or(0) == 1);
  CHECK(b == pattern(0));  // private
  CHECK(f.bob.munmap(*pv, len).ok());
  // A read-only open: PROT_WRITE on its shared mapping is EACCES (mmap would refuse it too).
  auto ro = f.bob.open("/ram/p", O_RDONLY);
  REQUIRE(ro.ok());
  auto rm = f.bob.mmap(nullptr, len, PROT_READ, MAP_SHARED, *ro, 0);
  REQUIRE(rm.ok());
  CHECK(f.bob.mprotect(*rm, len, PROT_READ | PROT_WRITE).error() == std::errc::permission_denied);
  CHECK(all_pattern(static_cast<const std::uint8_t*>(*rm), 3 * vm_page_size));
  CHECK(f.bob.munmap(*rm, len).ok());
  CHECK(f.bob.close(*ro).ok());
  CHECK(f.bob.close(fd).ok());
}

TEST_CASE("munmap and mmap again at the same address, over and over: every touch of the new mapping is served") {
  // The client's munmap returns once the server has read its UNMAP event, maybe before a fault thread
  // has handled it; the new mapping at the reused addresses is tracked meanwhile, and the late event
  // must not forget it (vm/aspace.hpp, read_event): a touch of it would then be SIGBUS.
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(120, "remote remap loop");
  remote_fixture f(false);
  const int fd = f.make_file("/ram/loop");
  int served = 0;
  for (int i = 0; i < 1500; ++i) {
    const bool shared = i % 2 == 0;
    auto m = f.bob.mmap(nullptr, 2 * vm_page_size, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
    REQUIRE(m.ok());
    auto* q = static_cast<std::uint8_t*>(*m);
    std::uint8_t b = 0;
    const int sig = vmtest::probe_read(q + vm_page_size, b);
    if (sig != 0 || b != pattern(vm_page_size)) {
      FAIL_CHECK("round " << i << ": signal " << sig << ", byte " << int(b));
      break;
    }
    ++served;
    REQUIRE(f.bob.munmap(q, 2 * vm_page_size).ok());
  }
  CHECK(served == 1500);
  CHECK(f.bob.close(fd).ok());
}

TEST_CASE("munmap, mmap and madvise from three threads at once: every touch is served, none is SIGBUS") {
  // Another thread can map addresses whose UNMAP event is not read yet (the kernel frees them first),
  // and a fault's fill finds the memory map changing (EAGAIN) while another thread's event is unread:
  // both once ended in SIGBUS (vm/aspace.hpp try_track, vm/pager.hpp settle_fault).
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(120, "remote remap loop, three threads");
  remote_fixture f(false);
  const int fd = f.make_file("/ram/loop3");
  constexpr int rounds = 400;
  auto keep = f.bob.mmap(nullptr, 64 * vm_page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(keep.ok());
  std::atomic<int> served{0}, failed{0};
  auto remap = [&](int id) {
    for (int i = 0; i < rounds && failed.load() == 0; ++i) {
      const bool shared = (i + id) % 2 == 0;
      auto m = f.bob.mmap(nullptr, 2 * vm_page_size, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
      if (!m.ok()) {
        failed.store(1000 + m.error().value());
        return;
      }
      auto* q = static_cast<std::uint8_t*>(*m);
      std::uint8_t b = 0;
      const int sig = vmtest::probe_read(q + vm_page_size, b);
      if (sig != 0 || b != pattern(vm_page_size)) {
        failed.store(sig != 0 ? sig : 999);
        return;
      }
      served.fetch_add(1);
      if (!f.bob.munmap(q, 2 * vm_page_size).ok()) failed.store(998);
    }
  };
  auto drop = [&] {
    auto* k = static_cast<std::uint8_t*>(*keep);
    for (int i = 0; i < rounds && failed.load() == 0; ++i) {
      for (std::size_t pg = 0; pg < 64; ++pg) {
        std::uint8_t b = 0;
        const int sig = vmtest::probe_read(k + pg * vm_page_size + 3, b);
        if (sig != 0 || b != pattern(pg * vm_page_size + 3)) {
          failed.store(sig != 0 ? 2000 + sig : 997);
          return;
        }
      }
      if (::madvise(k, 64 * vm_page_size, MADV_DONTNEED) != 0) failed.store(996);  // a REMOVE event
    }
  };
  std::thread t1(remap, 1), t2(remap, 2), t3(drop);
  t1.join();
  t2.join();
  t3.join();
  INFO("failed: " << failed.load() << " (a signal number, 2000 + one for the kept mapping, or 996-999, 1000 + errno)");
  CHECK(failed.load() == 0);
  CHECK(served.load() == 2 * rounds);
  CHECK(f.bob.munmap(*keep, 64 * vm_page_size).ok());
  CHECK(f.bob.close(fd).ok());
}

TEST_CASE("Brian across processes through the real read path: the seed's exclusive read handler, both userfaultfd modes") {
  vmtest::require_userfaultfd();
  for (const bool kernel_faults : {false, true}) {
    if (kernel_faults && !kernel_faults_available()) continue;
    CAPTURE(kernel_faults);
    vmtest::watchdog wd(60, "remote brian");
    const std::string address = "@faultsafe-remote-brian-" + std::to_string(::getpid()) + (kernel_faults ? "-k" : "-u");
    int ready[2], stop[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(stop, O_CLOEXEC) == 0);
    const pid_t fs_pid = ::fork();
    REQUIRE(fs_pid >= 0);
    if (fs_pid == 0) {
      ::close(stop[1]);
      ::close(ready[0]);
      int rc = 0;
      try {
        path_namespace ns;
        io_funcs f = iofunc_defaults();
        f.read = iofunc_read_exclusive;  // the seed's naive read handler
        auto attr = std::make_shared<iofunc_attr>(0666, 0, 0, attr_options{.max_size = 16 << 20, .name = "brian"});
        f.open = [&](request_context& ctx, const io_open_request& q, std::string_view, std::shared_ptr<ocb_base>& out) {
          return iofunc_open_default(ctx, q, attr, out);
        };
        server_options so;
        so.name = "fs";
        so.ns = &ns;
        server srv(so, f);
        if (srv.attach("/brian")) ::_exit(4);
        srv.start();
        remote_server rs(srv, remote_server_options{.address = address});
        (void)!::write(ready[1], "r", 1);
        char c;
        while (::read(stop[0], &c, 1) < 0 && errno == EINTR) {
        }
        rs.stop();
        srv.stop();
      } catch (...) {
        rc = 3;
      }
      ::_exit(rc);
    }
    ::close(ready[1]);
    ::close(stop[0]);
    pollfd pr{ready[0], POLLIN, 0};
    REQUIRE(::poll(&pr, 1, 20000) == 1);
    ::close(ready[0]);
    {
      path_namespace ns;
      REQUIRE(!mount_remote(ns, "/brian", address));
      process bob{"bob", {0, 0}, &ns};
      bob.memory().set_served_options(served_memory_options{kernel_faults});
      auto fd = bob.open("/brian/file", O_RDWR);
      REQUIRE(fd.ok());
      std::vector<std::uint8_t> bytes(len);
      for (std::size_t i = 0; i < len; ++i) bytes[i] = pattern(i);
      REQUIRE(bob.pwrite(*fd, bytes.data(), len, 0).value_or(0) == len);
      auto p = bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
      REQUIRE(p.ok());
      announce_faulting_thread();
      activity_scope act(new_activity());
      auto got = bob.read(*fd, *p, len);  // into the server's own file, through its own pager
      INFO(got.error().message());
      CHECK(got.value_or(0) == len);
      CHECK(all_pattern(static_cast<const std::uint8_t*>(*p), len));
      CHECK(bob.munmap(*p, len).ok());
      CHECK(bob.close(*fd).ok());
    }
    ::close(stop[1]);
    bool timed_out = false;
    const int st = test_support::wait_child(fs_pid, timed_out, std::chrono::seconds(20));
    CHECK(!timed_out);
    CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
  }
}

TEST_CASE("mmap of a remote server's file: the server killed, unserved pages raise SIGBUS, no hang") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "remote mmap server killed");
  remote_fixture f(false);
  const int fd = f.make_file("/ram/g");
  auto sh = f.bob.mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  INFO(sh.error().message());
  REQUIRE(sh.ok());
  const auto* s = static_cast<const std::uint8_t*>(*sh);
  CHECK(s[0] == pattern(0));
  ::kill(f.server, SIGKILL);
  bool timed_out = false;
  (void)test_support::wait_child(f.server, timed_out, std::chrono::seconds(20));
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(s + (len - vm_page_size), v) == SIGBUS);
  CHECK(vmtest::probe_read(s, v) == 0);
  CHECK(v == pattern(0));
  CHECK(f.bob.munmap(*sh, len).ok());
}

namespace {
// Whether `needle` occurs in the data (not the holes) of the file open at `fd`. Reads every data
// segment (SEEK_DATA / SEEK_HOLE), with an overlap so that a match across two reads is found.
bool file_contains(int fd, const std::string& needle, off_t size) {
  std::vector<char> buf(1 << 20);
  off_t at = 0;
  while (at < size) {
    const off_t data = ::lseek(fd, at, SEEK_DATA);
    if (data < 0) break;  // ENXIO: no data past `at`
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    for (off_t o = data; o < hole;) {
      const ssize_t n = ::pread(fd, buf.data(), buf.size(), o);
      if (n <= 0) return false;
      if (::memmem(buf.data(), static_cast<std::size_t>(n), needle.data(), needle.size()) != nullptr) return true;
      if (o + n >= hole) break;
      o += n - static_cast<off_t>(needle.size());
    }
    at = hole;
  }
  return false;
}

// The fd the server sends for a served mapping of `fd` (mmap_served_fetch, as process_memory asks for
// it), or -1. Requires: a served mapping of the same server made before (the userfaultfd handed over).
int fetch_memfd(process& p, int fd, int prot, int flags, std::error_code& ec) {
  std::shared_ptr<channel> ch;
  std::uint64_t handle = 0;
  int fdflags = 0;
  if ((ec = p.fd_target(fd, ch, handle, fdflags))) return -1;
  auto answer = p.mmap_request(fd, 0, len, prot, flags | mmap_served_fetch);
  if (!answer) {
    ec = answer.error();
    return -1;
  }
  std::uint64_t tag = 0;
  const int m = client_receive_fd(*ch, tag, std::chrono::seconds(10), ec);
  if (m >= 0 && tag != handle) {
    ::close(m);
    ec = std::make_error_code(std::errc::protocol_error);
    return -1;
  }
  return m;
}

// Opens /proc/<pid>/fd/<fd> for `flags` in a child that runs as uid/gid 65534 (nobody), not root.
// Returns: 0 if the open succeeded, else its errno (or 255 if the child could not become nobody).
int open_as_nobody(int fd, int flags) {
  const pid_t c = ::fork();
  if (c == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(255);
    ::prctl(PR_SET_DUMPABLE, 1);  // keep /proc/self/fd ours after the uid change
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const int r = ::open(path, flags | O_CLOEXEC);
    ::_exit(r >= 0 ? 0 : errno);
  }
  bool timed_out = false;
  const int st = test_support::wait_child(c, timed_out, std::chrono::seconds(20));
  return !timed_out && WIFEXITED(st) ? WEXITSTATUS(st) : 254;
}
}  // namespace

TEST_CASE("isolation: a client's mapping of one file reaches that file only, with the access the mapping needs") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "remote mmap isolation");
  remote_fixture f(false);
  ::close(f.make_file("/ram/a"));  // A: the pattern
  const std::string secret = "file B's bytes, never A's: " + std::to_string(::getpid());
  auto b = f.bob.open("/ram/b", O_RDWR | O_CREAT, 0600);
  REQUIRE(b.ok());
  std::string bbytes;
  while (bbytes.size() < 3 * vm_page_size) bbytes += secret;
  REQUIRE(f.bob.pwrite(*b, bbytes.data(), bbytes.size(), 0).value_or(0) == bbytes.size());
  auto a = f.bob.open("/ram/a", O_RDONLY);  // A readable only
  REQUIRE(a.ok());

  auto m = f.bob.mmap(nullptr, len, PROT_READ, MAP_SHARED, *a, 0);
  INFO(m.error().message());
  REQUIRE(m.ok());
  const auto* pa = static_cast<const std::uint8_t*>(*m);
  CHECK(all_pattern(pa, len));  // the page-in path as before
  CHECK(f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, *a, 0).error() == std::errc::permission_denied);

  // The file behind the mapping, as the client's kernel sees it.
  char path[96];
  const auto start = reinterpret_cast<std::uintptr_t>(pa);
  std::snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", static_cast<unsigned long>(start), static_cast<unsigned long>(start + len));
  const int backing = ::open(path, O_RDONLY | O_CLOEXEC);
  INFO(path << ": " << std::strerror(errno));
  REQUIRE(backing >= 0);
  struct ::stat st{};
  REQUIRE(::fstat(backing, &st) == 0);
  CHECK(static_cast<std::uint64_t>(st.st_size) == file_store::final_capacity(attr_options{}.max_size));  // A's, not the arena
  CHECK((st.st_mode & 07777) == 0400);
  CHECK(file_contains(backing, std::string(reinterpret_cast<const char*>(pa), 64), st.st_size));  // the scan finds A
  CHECK(!file_contains(backing, secret, st.st_size));                                             // and never B
  CHECK(::fcntl(backing, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  CHECK(::pwrite(backing, "x", 1, 0) < 0);
  CHECK(errno == EBADF);
  {
    // Even read-write (root may reopen it so: CAP_DAC_OVERRIDE), its size cannot change.
    const int rw = ::open(path, O_RDWR | O_CLOEXEC);
    REQUIRE(rw >= 0);
    CHECK(::ftruncate(rw, 0) < 0);
    CHECK(errno == EPERM);
    CHECK(::ftruncate(rw, st.st_size + 4096) < 0);
    CHECK(errno == EPERM);
    CHECK(::fcntl(rw, F_ADD_SEALS, F_SEAL_WRITE) < 0);  // no seal that would stop the server's writes
    CHECK(errno == EPERM);
    ::close(rw);
  }
  ::close(backing);

  // The fd itself: read-only for a mapping that cannot write the file.
  for (const int flags : {MAP_SHARED, MAP_PRIVATE}) {
    CAPTURE(flags);
    std::error_code ec;
    const int ro = fetch_memfd(f.bob, *a, PROT_READ, flags, ec);
    INFO(ec.message());
    REQUIRE(ro >= 0);
    CHECK((::fcntl(ro, F_GETFL) & O_ACCMODE) == O_RDONLY);
    char c = 0;
    CHECK(::pread(ro, &c, 1, 1) == 1);
    CHECK(static_cast<std::uint8_t>(c) == pattern(1));
    CHECK(::pwrite(ro, "x", 1, 0) < 0);
    CHECK(errno == EBADF);
    CHECK(::fallocate(ro, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) < 0);
    CHECK(errno == EBADF);
    CHECK(::ftruncate(ro, 0) < 0);
    CHECK(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED);
    CHECK(errno == EACCES);
    CHECK(open_as_nobody(ro, O_RDWR) == EACCES);  // not upgradable through /proc/<pid>/fd
    CHECK(::pread(ro, &c, 1, 1) == 1);            // still A's pattern: nothing above changed it
    CHECK(static_cast<std::uint8_t>(c) == pattern(1));
    ::close(ro);
  }

  // A shared writable mapping of B: it writes the file; B's fd is read-write but sealed, and B's own.
  auto mb = f.bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, *b, 0);
  REQUIRE(mb.ok());
  auto* pb = static_cast<std::uint8_t*>(*mb);
  CHECK(std::memcmp(pb, bbytes.data(), bbytes.size()) == 0);
  {
    std::error_code ec;
    const int rw = fetch_memfd(f.bob, *b, PROT_READ | PROT_WRITE, MAP_SHARED, ec);
    INFO(ec.message());
    REQUIRE(rw >= 0);
    CHECK((::fcntl(rw, F_GETFL) & O_ACCMODE) == O_RDWR);
    CHECK(::ftruncate(rw, 4096) < 0);
    CHECK(errno == EPERM);
    REQUIRE(::fstat(rw, &st) == 0);
    CHECK(!file_contains(rw, std::string(reinterpret_cast<const char*>(pa), 64), st.st_size));  // not A's
    ::close(rw);
  }
  pb[7] = 0xC3;
  std::uint8_t v = 0;
  CHECK(f.bob.pread(*b, &v, 1, 7).value_or(0) == 1);  // the server's pread sees the client's store
  CHECK(v == 0xC3);
  // Shrink: pages past the new end leave the mapping (SIGBUS); growth reads zeros.
  REQUIRE(f.bob.ftruncate(*b, 2 * vm_page_size).ok());
  CHECK(vmtest::probe_read(pb + 2 * vm_page_size, v) == SIGBUS);
  REQUIRE(vmtest::probe_read(pb + vm_page_size + 5, v) == 0);
  CHECK(v == static_cast<std::uint8_t>(bbytes[vm_page_size + 5]));
  REQUIRE(f.bob.ftruncate(*b, len).ok());
  REQUIRE(vmtest::probe_read(pb + 10 * vm_page_size, v) == 0);  // never touched since the shrink
  CHECK(v == 0);
  CHECK(f.bob.pread(*b, &v, 1, 10 * vm_page_size).value_or(0) == 1);
  CHECK(v == 0);
  CHECK(f.bob.munmap(pb, len).ok());
  CHECK(f.bob.munmap(*m, len).ok());
  CHECK(f.bob.close(*a).ok());
  CHECK(f.bob.close(*b).ok());
}

// The fixes it led to have their own deterministic cases (the mapping buffer past the end of the file
// below; a fault-around window across a VMA split by mprotect in "mprotect and msync ..."; the late
// UNMAP event in "munmap and mmap again ..."). FAULTSAFE_DIFF_SEEDS / FAULTSAFE_SEED choose the seeds.
TEST_CASE("a client of a server in another OS process: random file and mapping calls behave as the kernel's on tmpfs") {
  // vm_differential_test's sequence (tests/vm_differential_support.hpp) through a mount_remote()d
  // prefix: the server (ramfs + remote_server) is a forked child, the client's mappings are served by
  // its pager. MAP_FIXED over part of a mapping included.
  vmtest::require_userfaultfd();
  vmtest::probe_outside = &test_support::screened_guarded_copy_signal;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int seed_count = 4, steps = 200;
#else
  constexpr int seed_count = 12, steps = 400;
#endif
  for (const bool kernel_faults : {false, true}) {
    if (kernel_faults && !kernel_faults_available()) {
      MESSAGE("kernel-mode faults unavailable: that mode is skipped");
      continue;
    }
    CAPTURE(kernel_faults);
    vmtest::watchdog wd(100, "remote differential");
    remote_fixture f(kernel_faults);
    for (const std::uint64_t seed : difftest::seeds(1, seed_count)) {
      difftest::differential d(f.bob, "/ram/d" + std::to_string(seed), seed, {.map_fixed = true, .sticky_sigbus = true, .private_shrink_kept = true, .steps = steps});
      d.run();
    }
  }
  vmtest::probe_outside = nullptr;
}

TEST_CASE("a client of a server in another OS process: read(fd)/write(fd) with a mapping buffer that runs past the end of the file give the bytes up to there, as Linux") {
  // Found by the differential case above (seeds 4, 5 and 11 before the fix): the server's copy into
  // (out of) a client buffer whose pages past the end of the file cannot be paged in failed as a
  // whole (EFAULT); the kernel's read(2)/write(2) transfer up to the first such page (a short count).
  vmtest::require_userfaultfd();
  for (const bool kernel_faults : {false, true}) {
    if (kernel_faults && !kernel_faults_available()) continue;
    CAPTURE(kernel_faults);
    vmtest::watchdog wd(60, "remote short copies");
    remote_fixture f(kernel_faults);
    constexpr std::size_t pg = vm_page_size;
    const int fd = f.make_file("/ram/short");  // 64 pages of the pattern
    const std::size_t size = 6 * pg + 3636;  // page 6 is the last, partly
    REQUIRE(f.bob.ftruncate(fd, static_cast<off_t>(size)).ok());
    vmtest::memfd_file kf(size);
    auto sh = f.bob.mmap(nullptr, 5 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(4 * pg));
    REQUIRE(sh.ok());
    void* kraw = ::mmap(nullptr, 5 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, kf.fd, static_cast<off_t>(4 * pg));
    REQUIRE(kraw != MAP_FAILED);
    auto* s = static_cast<std::uint8_t*>(*sh);
    auto* k = static_cast<std::uint8_t*>(kraw);
    // read(fd) into file pages 6 (inside, up to its end) and 7 (past the end: SIGBUS for the client).
    const std::size_t at = 2 * pg + 2165, n = 2957;
    const ssize_t kr = ::pread(kf.fd, k + at, n, 10938);
    CHECK(kr == static_cast<ssize_t>(3 * pg - at));
    CHECK(f.bob.pread(fd, s + at, n, 10938).value_or(0) == static_cast<std::size_t>(kr));
    CHECK(std::memcmp(s + at, k + at, static_cast<std::size_t>(kr)) == 0);
    // write(fd) from the same bytes: up to the end of the last page.
    const ssize_t kw = ::pwrite(kf.fd, k + at, n, 100);
    CHECK(kw == static_cast<ssize_t>(3 * pg - at));
    CHECK(f.bob.pwrite(fd, s + at, n, 100).value_or(0) == static_cast<std::size_t>(kw));
    std::vector<std::uint8_t> a(size), b(size);
    REQUIRE(f.bob.pread(fd, a.data(), size, 0).value_or(0) == size);
    REQUIRE(::pread(kf.fd, b.data(), size, 0) == static_cast<ssize_t>(size));
    CHECK(a == b);
    CHECK(::munmap(kraw, 5 * pg) == 0);
    CHECK(f.bob.munmap(*sh, 5 * pg).ok());
    CHECK(f.bob.close(fd).ok());
  }
}
