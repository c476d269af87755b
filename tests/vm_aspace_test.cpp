// Address-space locking: munmap waits only for fault service on its own region, the single_lock
// configuration serialises the whole space (the seed's QNX behaviour), lock ranks hold on fault
// threads, faults name their thread and activity, the wait hook sees page-in waits, mprotect.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "faultsafe/activity/activity.hpp"
#include "faultsafe/order/violation.hpp"
#include "vm_support.hpp"

using namespace faultsafe;
using vmtest::gated_source;
using vmtest::pattern;

TEST_CASE("munmap waits for fault service on its region, and only on its region") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "munmap during fault");
  vmtest::memfd_file f(64 << 10);
  gated_source slow(f.fd);
  memfd_page_source fast(f.fd);
  aspace as;
  pager pg(as, pager_options{2});
  auto* a = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, slow, false));
  auto* b = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, fast, true));
  std::atomic<int> ra{-1};
  std::uint8_t va = 0;
  std::thread reader([&] { ra = vmtest::probe_read(a + 3, va); });
  slow.wait_entered();  // fault service on region a is in flight, holding a's lock shared
  // Another region: served and unmapped while a's page-in is stuck (per-region locks).
  CHECK(b[4096 + 9] == pattern(4096 + 9));
  CHECK(as.munmap(const_cast<std::uint8_t*>(b), f.size) == std::error_code{});
  // a's munmap must wait for the in-flight page-in.
  std::atomic<bool> unmapped{false};
  std::thread unmapper([&] {
    CHECK(as.munmap(const_cast<std::uint8_t*>(a), f.size) == std::error_code{});
    unmapped = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(unmapped.load());
  slow.open = true;
  unmapper.join();
  reader.join();
  // The reader either got its page before the unmap or, woken after it, SIGSEGV: never a hang,
  // never wrong data.
  CHECK((ra.load() == SIGSEGV || (ra.load() == 0 && va == pattern(3))));
  CHECK(as.region_count() == 0);
}

TEST_CASE("single_lock: one lock for the whole space is held during fault service (QNX behaviour)") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "single lock");
  vmtest::memfd_file f(64 << 10);
  gated_source slow(f.fd);
  memfd_page_source fast(f.fd);
  aspace as(aspace_options{true, "Bob"});
  pager pg(as, pager_options{2});
  auto* a = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, slow, true));
  auto* b = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, fast, true));
  std::atomic<int> ra{-1}, rb{-1};
  std::uint8_t va = 0, vb = 0;
  std::thread t1([&] { ra = vmtest::probe_read(a + 3, va); });
  slow.wait_entered();
  // A fault on another region now waits for the aspace lock: a second fault thread is free but blocked.
  std::thread t2([&] { rb = vmtest::probe_read(b + 4096, vb); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(rb.load() == -1);
  CHECK(fast.page_in(page_in_request{}, *std::make_unique<page_in_result>()) ==
        std::errc::no_such_device_or_address);  // (sanity: the fast source itself never blocks)
  slow.open = true;
  t1.join();
  t2.join();
  CHECK(ra.load() == 0);
  CHECK(va == pattern(3));
  CHECK(rb.load() == 0);
  CHECK(vb == pattern(4096));
  CHECK(as.munmap(const_cast<std::uint8_t*>(a), f.size) == std::error_code{});
}

TEST_CASE("fault threads hold the region lock (rank 20) during page-in; rank order is checked") {
  vmtest::require_userfaultfd();
  if (!default_checks::enabled) {
    MESSAGE("lock checks compiled out (NDEBUG); nothing to check");
    return;
  }
  vmtest::watchdog wd(20, "ranks");
  vmtest::memfd_file f(64 << 10);
  aspace as;
  struct checking_source final : page_source {
    memfd_page_source inner;
    aspace* as = nullptr;
    std::atomic<unsigned> depth_seen{99}, rank_seen{0};
    explicit checking_source(int fd) : inner(fd) {}
    std::error_code page_in(const page_in_request& req, page_in_result& out) override {
      auto& s = detail::this_thread_held();
      depth_seen = s.depth;
      if (s.depth > 0) rank_seen = s.e[s.depth - 1].req.rank;
      (void)as->find(reinterpret_cast<void*>(req.fault_address));  // rank 10 under rank 20: inversion
      return inner.page_in(req, out);
    }
  } src(f.fd);
  src.as = &as;
  std::mutex vm;
  std::vector<violation> got;
  auto prev = set_violation_handler([&](const violation& v) {
    std::lock_guard<std::mutex> g(vm);
    got.push_back(v);
  });
  {
    pager pg(as, pager_options{1});
    auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, true));
    CHECK(p[10] == pattern(10));
  }
  set_violation_handler(prev);
  CHECK(src.depth_seen.load() == 1);
  CHECK(src.rank_seen.load() == rank::region);
  std::lock_guard<std::mutex> g(vm);
  REQUIRE(got.size() == 1);
  CHECK(got[0].kind == violation_kind::rank_inversion);
  CHECK(got[0].report().find("region") != std::string::npos);
}

TEST_CASE("each fault names its thread and the activity it works for") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "identity");
  vmtest::memfd_file f(256 << 10);
  gated_source src(f.fd);
  src.open = true;
  aspace as;
  pager pg(as);
  auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, true));
  const activity_id act = new_activity();
  pid_t tid = 0;
  std::uint32_t id = 0;
  std::thread t([&] {
    set_this_thread_name("bob1");
    announce_faulting_thread();
    tid = this_thread_tid();
    id = this_thread_id();
    activity_scope s(act);
    CHECK(p[5] == pattern(5));
  });
  t.join();
  std::thread anon([&] { CHECK(p[100 * 1024] == pattern(100 * 1024)); });  // not announced
  anon.join();
  std::lock_guard<std::mutex> g(src.m);
  REQUIRE(src.seen.size() == 2);
  CHECK(src.seen[0].thread.tid == tid);
  CHECK(src.seen[0].thread.thread_id == id);
  CHECK(src.seen[0].thread.activity == act);
  CHECK(src.seen[0].file == &f);
  CHECK(src.seen[0].fault_offset == 0);
  CHECK(src.seen[1].thread.tid != 0);
  CHECK(src.seen[1].thread.thread_id == 0);
  CHECK(src.seen[1].fault_offset == 100 * 1024);
}

TEST_CASE("the wait hook sees the fault thread wait for its page source") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "wait hook");
  struct recorder final : vm_wait_hook {
    std::atomic<int> begins{0}, ends{0}, page_waits{0};
    void begin(const vm_wait& w) noexcept override {
      begins.fetch_add(1);
      if (w.kind == vm_wait_kind::page_source) page_waits.fetch_add(1);
    }
    void end(const vm_wait&) noexcept override { ends.fetch_add(1); }
  };
  static recorder rec;
  vmtest::memfd_file f(64 << 10);
  memfd_page_source src(f.fd);
  aspace as;
  pager pg(as);
  auto* p = static_cast<const std::uint8_t*>(vmtest::map_file(as, f, src, false));
  auto* prev = set_vm_wait_hook(&rec);
  CHECK(p[4096 * 2] == pattern(4096 * 2));
  set_vm_wait_hook(prev);
  CHECK(rec.page_waits.load() >= 1);
  CHECK(rec.begins.load() == rec.ends.load());
}

TEST_CASE("mprotect waits for fault service and changes what the mapping allows") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "mprotect");
  aspace as;
  pager pg(as);
  map_request rq;
  rq.length = 16 * vm_page_size;
  rq.prot = PROT_READ;
  auto* p = static_cast<std::uint8_t*>(as.map(rq));
  CHECK(vmtest::probe_write(p + 5, 1) == SIGSEGV);
  CHECK(as.mprotect(p, rq.length, PROT_READ | PROT_WRITE) == std::error_code{});
  CHECK(vmtest::probe_write(p + 5, 1) == 0);
  CHECK(p[5] == 1);
  CHECK(as.find(p)->prot == (PROT_READ | PROT_WRITE));
  CHECK(as.mprotect(p, rq.length, PROT_NONE) == std::error_code{});
  std::uint8_t v = 0;
  CHECK(vmtest::probe_read(p + 4096 * 3, v) == SIGSEGV);
  CHECK(as.mprotect(p + 4096, 4096, PROT_READ) == std::error_code{});  // part of a region: it splits
  CHECK(as.find(p + 4096)->prot == PROT_READ);
  CHECK(as.find(p)->prot == PROT_NONE);
  CHECK(as.region_count() == 3);
}
