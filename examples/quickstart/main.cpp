// quickstart: a ramfs server, a client process, and Brian's pattern done safely:
// read(fd, p) where p is a MAP_SHARED mapping of the same fd. Exits 0 when the data is right.
#include <faultsafe/faultsafe.hpp>

#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <string>

int main() {
  faultsafe::set_this_thread_name("bob");
  faultsafe::ramfs fs({.name = "ramfs", .prefix = "/ram"});  // a server: memfd-backed files, 1..4 threads
  faultsafe::process bob("bob", {.uid = 1000, .gid = 1000});  // a client process with its own fd table

  auto fd = bob.open("/ram/notes", O_RDWR | O_CREAT, 0644);
  if (!fd) return std::fprintf(stderr, "open: %s\n", fd.error().message().c_str()), 1;
  const std::string text(8192, 'x');
  if (bob.pwrite(*fd, text.data(), text.size(), 0).value_or(0) != text.size()) return 1;

  // Map the file; its pages are served by faultsafe's userfaultfd pager through the server.
  auto map = bob.mmap(nullptr, text.size(), PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (!map) return std::fprintf(stderr, "mmap: %s\n", map.error().message().c_str()), 1;
  char* p = static_cast<char*>(*map);

  // Brian's lock-up: read the file into a mapping of the same file. The server sees that the
  // destination maps the file it is reading and moves the bytes inside the store: no fault, no re-entry.
  std::memcpy(p + 4096, "hello, mapped world", 19);  // a write through the mapping lands in the file
  auto n = bob.pread(*fd, p, 19, 4096);               // file bytes [4096, 4115) -> p[0..19)
  if (!n || *n != 19) return std::fprintf(stderr, "pread: %s\n", n.error().message().c_str()), 1;

  const bool ok = std::memcmp(p, "hello, mapped world", 19) == 0;
  std::printf("quickstart: %.19s (%s)\n", p, ok ? "ok" : "WRONG");
  (void)bob.munmap(p, text.size());
  (void)bob.close(*fd);
  return ok ? 0 : 1;
}
