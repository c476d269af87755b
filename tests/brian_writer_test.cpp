// A queued writer must not defeat the page-in guard (model/README.md, finding 2, `finding_writer`).
//
// Bob's read(fd, p) into his own MAP_SHARED mapping of the same page, served through the page-in
// guard (direct copy off): the server thread holds page 0 shared and is stalled there (fault
// injection: range_hold_stall, on Bob's activity only) until Alice's write of page 0 has queued
// (exclusive) behind it. Then the read's copy faults on p, and the page-in (shared, Bob's activity)
// arrives behind the queued writer. Under strict FIFO the three wait on each other (the read waits
// for its page-in, the page-in for the writer, the writer for the read's range) and the wait-for
// graph breaks the cycle: a spurious EFAULT (read) or EDEADLK (write). With the grant rule of
// range_lock (a waiting request that itself waits for a granted range of the requester's owner does
// not block a guarded request) both calls succeed, in order: the read sees the old bytes, the file
// ends with Alice's. A watchdog fails the test instead of hanging. Built with FAULTSAFE_FAULT_INJECTION=1.
#include <chrono>
#include <thread>

#include <faultsafe/detail/fault_injection.hpp>

#include "brian_support.hpp"

using namespace std::chrono_literals;
using namespace faultsafe;
namespace fi = faultsafe::fault_injection;
using briantest::make_file;

TEST_CASE("a writer queued between a guarded read and its page-in: both succeed, no spurious EFAULT/EDEADLK") {
  REQUIRE(fi::enabled);
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "queued writer vs page-in guard");
  briantest::restore_guarded_copy_handler();
  path_namespace ns;
  briantest::recording rec;
  ramfs fs({.name = "ram", .prefix = "/ram", .pool = {1, 4}, .ns = &ns, .direct_copy = false});
  process bob("bob", {1000, 100}, &ns);
  process alice("alice", {1000, 100}, &ns);
  constexpr std::size_t size = 16 << 10, page = 4096;
  std::vector<std::uint8_t> model;
  const int fd = make_file(bob, "/ram/g", size, model);
  auto m = bob.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  INFO(m.error().message());
  REQUIRE(m.ok());
  auto* p = static_cast<std::uint8_t*>(*m);  // not touched yet: the read's copy into it faults
  auto afd = alice.open("/ram/g", O_RDWR);
  REQUIRE(afd.ok());
  range_lock& lock = fs.lookup("g")->data_lock;

  const activity_id bobs = new_activity();
  fi::scoped_schedule s(fi::point::range_hold_stall, {.fail_nth = 1, .stall = 30s, .only_activity = bobs});
  result<std::size_t> rr = std::make_error_code(std::errc::interrupted);
  std::thread reader([&] {
    announce_faulting_thread();
    activity_scope as_bob(bobs);
    rr = bob.pread(fd, p, page, 0);  // file page 0 into the mapping of file page 0
  });
  REQUIRE(fi::wait_stalled(fi::point::range_hold_stall, 1, 20s));  // page 0 held shared for Bob

  const std::vector<std::uint8_t> mine(page, 0xA5);
  result<std::size_t> wr = std::make_error_code(std::errc::interrupted);
  std::thread writer([&] { wr = alice.pwrite(*afd, mine.data(), mine.size(), 0); });
  // Wait until Alice's write is queued (exclusive, not granted) behind Bob's read.
  bool queued = false;
  for (const auto end = std::chrono::steady_clock::now() + 20s; !queued && std::chrono::steady_clock::now() < end;) {
    for (const auto& h : lock.conflicting_holders(0, page, lock_mode::exclusive))
      queued = queued || (h.mode == lock_mode::exclusive && !h.granted);
    if (!queued) std::this_thread::sleep_for(1ms);
  }
  REQUIRE(queued);
  fi::release(fi::point::range_hold_stall);  // the read copies now: fault, page-in behind the writer
  reader.join();
  writer.join();

  INFO("read: ", rr.ok() ? std::string("ok") : rr.error().message());
  INFO("write: ", wr.ok() ? std::string("ok") : wr.error().message());
  CHECK(rr.ok());
  CHECK(wr.ok());
  REQUIRE(rr.ok());
  CHECK(*rr == page);
  REQUIRE(wr.ok());
  CHECK(*wr == page);
  // The read was served first (it held the range): p shows Alice's bytes now (the mapping is the file),
  // and the file holds them too.
  CHECK(briantest::first_diff(briantest::file_bytes(bob, fd).data(), mine.data(), page) == -1);
  CHECK(briantest::first_diff(briantest::file_bytes(bob, fd).data() + page, model.data() + page, size - page) == -1);
  CHECK(lock.holders().empty());
  // No self-deadlock is reported (the page-in conflicts with nothing of its own activity) and the
  // wait-for graph breaks nothing.
  const auto vs = rec.rec.take();
  std::string text;
  for (const auto& v : vs) text += v.report() + "\n";
  INFO(text);
  CHECK(vs.empty());
  REQUIRE(bob.munmap(p, size).ok());
}
