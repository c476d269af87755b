// The pread/pwrite round trip through a ramfs server allocates nothing once warm: fd table lookup,
// send, OCB lookup, the read handler (direct-copy hint, range lock), the reply (a counting global
// operator new sees every C++ allocation of every thread).
#include <doctest/doctest.h>

#include "counting_new.hpp"

#include <faultsafe/activity/wait_graph.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "resmgr_test_util.hpp"


namespace fs = faultsafe;

TEST_CASE("pread/pwrite/lseek/fstat through a ramfs server: no allocation per call once warm") {
  // Two things allocated at times only the scheduler decided (the test flaked under load):
  // - the pool's reserve thread sets itself up (its name, its faulting-thread announcement: 3
  //   allocations) whenever it first runs, which on a loaded machine can be inside the measured loop:
  //   the test waits for server::reserve_ready() before it warms up;
  // - a send that outlasts its spin (the server thread not scheduled within a few microseconds)
  //   parks, and a parked send records a wait-for-graph edge whose timer-driven scans use growing
  //   buffers. The promise is for the round trip itself, so it is measured with the graph off (as
  //   range_lock_noalloc's contended case); a park then costs nothing, whatever the load.
  fs::wait_graph::set_enabled(false);
  struct graph_back_on {
    ~graph_back_on() { fs::wait_graph::set_enabled(true); }
  } back_on;
  faultsafe_test::watchdog wd("noalloc");
  fs::path_namespace ns;
  fs::ramfs fsrv({.name = "noalloc", .prefix = "/na", .pool = {1, 1}, .ns = &ns});
  fs::process p("client", {0, 0}, &ns);
  while (!fsrv.srv().reserve_ready()) std::this_thread::yield();  // bounded by the watchdog
  const int fd = *p.open("/na/f", O_RDWR | O_CREAT, 0644);
  std::vector<unsigned char> data(4096, 0x11), buf(4096);
  for (int i = 0; i < 50; ++i) {  // warm up: thread records, lazily built tables, the signal handler
    REQUIRE(p.pwrite(fd, data.data(), data.size(), 0).value() == data.size());
    REQUIRE(p.pread(fd, buf.data(), buf.size(), 0).value() == buf.size());
    REQUIRE(p.lseek(fd, 0, SEEK_SET));
    REQUIRE(p.fstat(fd));
  }
  const long before = counting_new::allocations();
  for (int i = 0; i < 500; ++i) {
    REQUIRE(p.pread(fd, buf.data(), buf.size(), 0).value() == buf.size());
    REQUIRE(p.pwrite(fd, data.data(), data.size(), 0).value() == data.size());
  }
  CHECK(counting_new::allocations() - before == 0);
  const long before2 = counting_new::allocations();
  for (int i = 0; i < 200; ++i) {
    REQUIRE(p.lseek(fd, 4, SEEK_SET).value() == 4);
    REQUIRE(p.fstat(fd).value().st_size == 4096);
    REQUIRE(p.read(fd, buf.data(), 8).value() == 8);
  }
  CHECK(counting_new::allocations() - before2 == 0);
  CHECK(buf[0] == 0x11);
  CHECK(counting_new::allocations() > 0);  // the counter does see allocations (open, the server's threads...)
}
