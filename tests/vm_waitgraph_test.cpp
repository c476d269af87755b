// The pager and the wait-for graph: a fault whose page-in waits for a lock the faulting thread holds
// (Brian's shape) and, under single_lock, two faults serialised behind the aspace lock while one page-in
// waits for the other faulting thread (Colin's shape) are reported as wait cycles naming the page wait
// and the locks, and broken: the broken fault ends in SIGBUS, nobody hangs. With per-region locks the
// Colin shape is no cycle at all.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/order/violation.hpp"
#include "vm_cycle_support.hpp"

using namespace faultsafe;
using vmtest::pattern;

namespace {

using vmtest::locking_source;
using vmtest::test_lock;
using recorder = vmtest::cycle_recorder;

}  // namespace

TEST_CASE("a page-in that waits for a lock its faulting thread holds is a reported, broken cycle") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "self cycle");
  recorder rec;
  vmtest::memfd_file f(64 << 10);
  test_lock attr("attr range");
  locking_source src(f.fd, attr);
  aspace as(aspace_options{false, "Bob"});
  pager pg(as, pager_options{1});
  auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, true));
  int sig = -1;
  std::thread bob([&] {
    set_this_thread_name("bob");
    announce_faulting_thread();
    detail::vm_exclusive_hold<test_lock> g(attr);  // like a read handler holding the file's range
    std::uint8_t v = 0;
    sig = vmtest::probe_read(p + 5, v);            // the fault's page-in needs that range
  });
  bob.join();
  CHECK(sig == SIGBUS);
  CHECK(rec.cycles() == 1);
  const std::string r = rec.text();
  INFO(r);
  CHECK(r.find("page") != std::string::npos);
  CHECK(r.find("attr range") != std::string::npos);
  CHECK(r.find("bob") != std::string::npos);
  // Afterwards the same page is served normally (a failed page stays poisoned; the next one works).
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(p + 2 * vm_page_size, v) == 0);
  CHECK(v == pattern(2 * vm_page_size));
}

namespace {
// Colin's shape: t1 faults on region A, whose page-in waits for `held` (taken by t2 first); t2 then
// faults on region B. Returns what each read got.
void colin_shape(bool single_lock, int& sig1, int& sig2, std::size_t& cycles, std::string& report) {
  recorder rec;
  vmtest::memfd_file f(64 << 10);
  test_lock held("io_pkt state");
  locking_source slow(f.fd, held);
  memfd_page_source fast(f.fd);
  aspace as(aspace_options{single_lock, "Bob"});
  pager pg(as, pager_options{2});
  auto* a = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, slow, true));
  auto* b = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, fast, true));
  std::atomic<bool> t2_holds{false};
  std::thread t2([&] {
    set_this_thread_name("bob2");
    announce_faulting_thread();
    detail::vm_exclusive_hold<test_lock> g(held);
    t2_holds = true;
    while (slow.calls.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // t1's page-in is now waiting for `held`
    std::uint8_t v = 0;
    sig2 = vmtest::probe_read(b + 3 * vm_page_size, v);
    if (sig2 == 0 && v != pattern(3 * vm_page_size)) sig2 = -2;
  });
  std::thread t1([&] {
    set_this_thread_name("bob1");
    announce_faulting_thread();
    while (!t2_holds.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::uint8_t v = 0;
    sig1 = vmtest::probe_read(a + 7, v);
    if (sig1 == 0 && v != pattern(7)) sig1 = -2;
  });
  t1.join();
  t2.join();
  cycles = rec.cycles();
  report = rec.text();
}
}  // namespace

TEST_CASE("Colin's shape: per-region locks make it no cycle; single_lock makes it a reported, broken one") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "colin shape");
  int s1 = -1, s2 = -1;
  std::size_t cycles = 0;
  std::string report;
  colin_shape(false, s1, s2, cycles, report);
  CHECK(s1 == 0);  // both served: t2's fault on B does not wait for A's page-in
  CHECK(s2 == 0);
  CHECK(cycles == 0);

  colin_shape(true, s1, s2, cycles, report);
  MESSAGE(report);
  CHECK(cycles == 1);
  CHECK(report.find("Bob") != std::string::npos);  // the aspace lock
  CHECK(report.find("page") != std::string::npos);
  // Exactly one of the two faults was broken (SIGBUS); the other completed with the right data.
  CHECK(((s1 == SIGBUS && s2 == 0) || (s1 == 0 && s2 == SIGBUS)));
}
