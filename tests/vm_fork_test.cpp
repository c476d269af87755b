// fork() of an OS process that has faultsafe mappings: a child must never read wrong data through
// one. The kernel drops the userfaultfd registration in the child, so an untouched page of a file
// mapping would be read from the memfd there without the server's page-in; faultsafe mappings are MADV_DONTFORK instead (see
// vm/aspace.hpp): the child has none of them, and any access to one is SIGSEGV. Checked for shared and
// private file mappings and private and shared anonymous memory, on touched and untouched pages, after
// which the parent still reads every page right.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include "vm_ramfs_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

namespace {

// Forks; the child reads *p, writes the byte to a pipe and exits 0, or dies of the access's signal.
// Returns: the byte read (0..255), or -signal if the child was killed by one. The test's watchdog
// bounds the wait for the child.
int child_read(const volatile std::uint8_t* p) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // only async-signal-safe calls from here
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGBUS, SIG_DFL);
    const std::uint8_t v = *p;
    (void)!::write(fds[1], &v, 1);
    ::_exit(0);
  }
  ::close(fds[1]);
  int status = 0;
  pid_t w;
  while ((w = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  std::uint8_t v = 0;
  const ssize_t n = ::read(fds[0], &v, 1);
  ::close(fds[0]);
  REQUIRE(w == pid);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(n == 1);
  return v;
}

}  // namespace

TEST_CASE("fork: the child never reads wrong data through a faultsafe mapping (it has none)") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "fork");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  constexpr std::size_t len = 16 * vm_page_size;
  const int fd = vmtest::make_ramfs_file(bob, "/ram/f", len);
  struct kind {
    const char* name;
    int flags;
    bool file;
  };
  for (const kind& k : {kind{"shared file", MAP_SHARED, true}, kind{"private file", MAP_PRIVATE, true},
                        kind{"private anonymous", MAP_PRIVATE | MAP_ANONYMOUS, false},
                        kind{"shared anonymous", MAP_SHARED | MAP_ANONYMOUS, false}}) {
    const std::string name = k.name;
    CAPTURE(name);
    auto m = bob.mmap(nullptr, len, PROT_READ | PROT_WRITE, k.flags, k.file ? fd : -1, 0);
    REQUIRE(m.ok());
    auto* p = static_cast<std::uint8_t*>(*m);
    const auto want = [&](std::size_t off) -> std::uint8_t { return k.file ? pattern(off) : 0; };
    CHECK(p[5] == want(5));                               // page 0 touched (read) by the parent
    p[vm_page_size + 5] = static_cast<std::uint8_t>(~want(vm_page_size + 5));  // page 1 written
    for (std::size_t page : {0, 1, 10}) {  // page 10 untouched (and outside any fault-around window)
      CAPTURE(page);
      const std::size_t off = page * vm_page_size + 5;
      const int got = child_read(p + off);
      const int right = page == 1 ? static_cast<std::uint8_t>(~want(off)) : want(off);
      CHECK((got < 0 || got == right));  // never wrong data: the data, or a signal
      CHECK(got == -SIGSEGV);            // documented: faultsafe mappings are not inherited
    }
    // The parent's mapping is untouched by the forks: every page reads right, page 10 paged in now.
    CHECK(p[5] == want(5));
    CHECK(p[vm_page_size + 5] == static_cast<std::uint8_t>(~want(vm_page_size + 5)));
    CHECK(p[10 * vm_page_size + 5] == want(10 * vm_page_size + 5));
    CHECK(p[15 * vm_page_size + 7] == want(15 * vm_page_size + 7));
    CHECK(bob.munmap(p, len).ok());
  }
  CHECK(bob.close(fd).ok());
}
