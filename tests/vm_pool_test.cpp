// The pager's fault threads (model/README.md, finding 1): with the defaults, two faults whose page-ins
// wait for "io_pkt" occupy the first fault threads, and io_pkt's only thread then faults on a client
// buffer. That fault must be served (the pool grows: a fault thread is never the bounded resource a
// correct program exhausts into a hang), and where a pool is capped the queued fault is a wait-for-graph
// wait (a reported, broken cycle), never a silent hang.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <atomic>
#include <dirent.h>
#include <functional>
#include <memory>
#include <string>
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

struct outcome {
  int sig1 = -1, sig3 = -1, sig_io = -1;
};

// finding_pager's shape on pager `pg` of `as`: io_pkt holds its state, bob1 and bob3 fault on pages 0
// and 1 of the nfs mapping (their page-ins wait for io_pkt's state), then io_pkt (which has announced
// itself, as resource-manager threads do) faults on bob2's fresh anonymous buffer.
// `ready`: when io_pkt may fault (default: both page-ins have started, i.e. with the old fixed pool
// of two, every fault thread is taken).
outcome finding_pager_shape(aspace& as, std::function<bool(const locking_source&)> ready = {}) {
  if (!ready) ready = [](const locking_source& s) { return s.calls.load() >= 2; };
  vmtest::memfd_file f(64 << 10);
  constexpr std::size_t buf_len = 64 << 10;
  test_lock io_state("io_pkt state");
  locking_source nfs(f.fd, io_state);
  auto* a = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, nfs, true));
  map_request anon;  // bob2's fresh buffer
  anon.length = buf_len;
  auto* b = static_cast<const std::uint8_t*>(as.map(anon));
  outcome o;
  test_support::event holds;
  std::thread io_pkt([&] {
    set_this_thread_name("io_pkt/0");
    announce_faulting_thread();
    detail::vm_exclusive_hold<test_lock> g(io_state);
    holds.set();
    while (!ready(nfs)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::uint8_t v = 1;
    o.sig_io = vmtest::probe_read(b + 5 * vm_page_size, v);  // the copy into bob2's buffer faults
    if (o.sig_io == 0 && v != 0) o.sig_io = -2;
  });
  REQUIRE(holds.wait());
  auto bob = [&](const char* name, std::size_t page, int& sig) {
    return std::thread([&, name, page] {
      set_this_thread_name(name);
      announce_faulting_thread();
      std::uint8_t v = 0;
      sig = vmtest::probe_read(a + page * vm_page_size + 7, v);
      if (sig == 0 && v != pattern(page * vm_page_size + 7)) sig = -2;
    });
  };
  std::thread bob1 = bob("bob1", 0, o.sig1);
  std::thread bob3 = bob("bob3", 1, o.sig3);
  io_pkt.join();
  bob1.join();
  bob3.join();
  (void)as.munmap(const_cast<std::uint8_t*>(a), f.size);
  (void)as.munmap(const_cast<std::uint8_t*>(b), buf_len);
  return o;
}

}  // namespace

TEST_CASE("finding_pager with the defaults: two page-ins waiting for io_pkt do not starve io_pkt's own fault") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "finding_pager: io_pkt's fault waits for a free fault thread");
  recorder rec;
  aspace as(aspace_options{false, "Bob"});
  pager pg(as);  // the defaults
  const outcome o = finding_pager_shape(as);
  CHECK(o.sig_io == 0);  // io_pkt's fault was served (zero page)
  CHECK(o.sig1 == 0);    // then both page-ins went on, with the right data
  CHECK(o.sig3 == 0);
  CHECK(rec.cycles() == 0);
}

TEST_CASE("at the pool's cap a queued fault is a reported, broken wait cycle, not a silent hang") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "finding_pager at the cap");
  recorder rec;
  fault_pool_options po;
  po.min_threads = 1;
  po.max_threads = 2;  // one thread serves, the other stays the reader
  po.name = "capped";
  fault_pool pool(po);
  aspace as(aspace_options{false, "Bob"});
  pager_options opts;
  opts.pool = &pool;
  pager pg(as, opts);
  // io_pkt faults once bob1's page-in waits for its state and bob3's fault is queued.
  const outcome o = finding_pager_shape(as, [&](const locking_source& s) { return s.calls.load() >= 1 && pool.stats().queued >= 1; });
  const std::string r = rec.text();
  INFO(r);
  CHECK(o.sig_io == 0);  // served once the cycles were broken
  // Each page-in that waited for io_pkt's state while io_pkt's fault was queued behind it was broken
  // (EDEADLK at its lock wait): bob1's first, then bob3's (served next from the backlog, same cycle).
  CHECK(o.sig1 == SIGBUS);
  CHECK(o.sig3 == SIGBUS);
  CHECK(rec.cycles() == 2);
  CHECK(r.find("queued: every thread of fault pool 'capped'") != std::string::npos);
  CHECK(r.find("io_pkt state") != std::string::npos);
  CHECK(pool.stats().threads == 2);
  // bob3's fault was queued (io_pkt waited for that). io_pkt's fault was a queued wait (the report above
  // says so), but it need not reach the backlog: the reader records the wait before it takes the pool's
  // mutex, so when capped/0 breaks both cycles and goes idle in between, the reader serves io_pkt's fault
  // itself and the statistic (faults pushed into the backlog) stays at 1. CI saw that once.
  CHECK(pool.stats().queued >= 1);
}

namespace {
std::size_t os_threads() {
  std::size_t n = 0;
  DIR* d = ::opendir("/proc/self/task");
  REQUIRE(d != nullptr);
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// `n` address spaces with a pager each (the defaults: the shared pool) and a one-page mapping of `f`
// each, every page touched once: returns the OS threads of the process afterwards.
std::size_t many_spaces(std::size_t n, vmtest::memfd_file& f, memfd_page_source& src) {
  struct space {
    aspace as;
    pager pg{as};
  };
  std::vector<std::unique_ptr<space>> v;
  v.reserve(n);
  map_request rq;
  rq.length = vm_page_size;
  rq.prot = PROT_READ;
  rq.shared = true;
  rq.file = file_backing{f.fd, 0, &f, &src};
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    v.push_back(std::make_unique<space>());
    auto* p = static_cast<const volatile std::uint8_t*>(v.back()->as.map(rq));
    sum += p[11];
  }
  CHECK(sum == n * pattern(11));
  std::uint64_t faults = 0;
  for (auto& s : v) faults += s->pg.stats().faults;
  CHECK(faults == n);
  return os_threads();
}
}  // namespace

TEST_CASE("1,000 and 10,000 address spaces are served by the same few threads") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(100, "many address spaces");
  rlimit rl{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_cur < 10500 && rl.rlim_max >= 10500) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 20000);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &rl) == 0);
  }
  vmtest::memfd_file f(vm_page_size);
  memfd_page_source src(f.fd);
  {
    aspace warm;
    pager pg(warm);  // starts the shared pool
  }
  const std::size_t before = os_threads();
  const unsigned pool_before = fault_pool::shared().stats().threads;
  const std::size_t at_1k = many_spaces(1000, f, src);
  MESSAGE("OS threads: " << before << " before, " << at_1k << " with 1,000 address spaces");
  CHECK(at_1k <= before + (fault_pool::shared().stats().threads - pool_before));
  if (rl.rlim_cur < 10500) {
    MESSAGE("RLIMIT_NOFILE " << rl.rlim_cur << " < 10,500: the 10,000 address spaces part is skipped");
    return;
  }
  const std::size_t at_10k = many_spaces(10000, f, src);
  MESSAGE("OS threads: " << at_10k << " with 10,000 address spaces; shared pool: " << fault_pool::shared().stats().threads);
  CHECK(at_10k <= before + (fault_pool::shared().stats().threads - pool_before));
  // One faulting thread at a time never needs more than the pool's first threads plus one.
  CHECK(fault_pool::shared().stats().threads <= pool_before + 1);
  CHECK(fault_pool::shared().stats().registrations == 0);  // every pager has ended its registration
}
