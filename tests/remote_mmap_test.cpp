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
//   - the server killed with SIGKILL: unserved pages raise SIGBUS, nothing hangs.
// Every wait is bounded (watchdog, bounded child waits).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/process_memory.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>

#include "support/fdpass.hpp"
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
