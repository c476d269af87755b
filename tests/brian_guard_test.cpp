// The fault-reentrancy guard: with the direct path off, a write(fd) whose source is an unpopulated
// mapping of the same file makes the server thread holding the exclusive range fault, and the page-in
// for that fault conflicts only with its own activity (Brian's self-deadlock). It is detected at once
// and served under the owning activity (default) or failed with EDEADLK (policy); a single-threaded
// server, whose only thread is the one in page wait, is the pool form of the same lock-up. Every case
// checks the self_deadlock report (who holds what on whose behalf, the fault, the page-in). And a
// randomized stress with many activities that never deadlocks reports nothing.
#include <random>
#include <thread>

#include "brian_support.hpp"

using namespace faultsafe;
using briantest::contains;
using briantest::first_diff;
using briantest::make_file;

namespace {

struct guard_fixture {
  explicit guard_fixture(thread_pool_options pool, self_conflict page_in = self_conflict::grant, bool direct = false)
      : fs({.name = "ram", .prefix = "/ram", .pool = pool, .ns = &ns, .file = {.page_in_self_conflict = page_in},
            .direct_copy = direct}) {}
  path_namespace ns;
  briantest::recording rec;
  ramfs fs;
  process bob{"bob", {1000, 100}, &ns};
};

// Bob writes bytes [src, src + n) of his fresh MAP_SHARED mapping of /ram/g to file offset dst.
struct brian_write {
  explicit brian_write(guard_fixture& f, std::size_t size = 64 << 10) : f(f) {
    fd = make_file(f.bob, "/ram/g", size, model);
    auto m = f.bob.mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    INFO(m.error().message());
    REQUIRE(m.ok());
    p = static_cast<const std::uint8_t*>(*m);
  }
  result<std::size_t> run(std::size_t dst, std::size_t src, std::size_t n) {
    announce_faulting_thread();
    activity_scope act(activity = new_activity());
    auto r = f.bob.pwrite(fd, p + src, n, static_cast<off_t>(dst));
    if (r.ok()) std::memmove(model.data() + dst, model.data() + src, n);
    return r;
  }
  guard_fixture& f;
  std::vector<std::uint8_t> model;
  int fd = -1;
  const std::uint8_t* p = nullptr;
  activity_id activity = 0;
};

std::string all_reports(const std::vector<violation>& vs) {
  std::string s;
  for (const auto& v : vs) s += v.report() + "\n";
  return s;
}

}  // namespace

TEST_CASE("guard, grant (default): the page-in that conflicts only with its own activity is served under it") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "guard grant");
  guard_fixture f({1, 4});
  brian_write b(f);
  // The exclusive target [1000, 21000) overlaps the faulting source [5000, 25000). (The ordinary path
  // copies forward: with the target before the source that is what memmove does too.)
  auto r = b.run(1000, 5000, 20000);
  REQUIRE(r.ok());
  CHECK(*r == 20000);
  CHECK(first_diff(briantest::file_bytes(f.bob, b.fd).data(), b.model.data(), b.model.size()) == -1);
  const auto vs = f.rec.rec.take();
  REQUIRE(vs.size() >= 1);
  const std::string text = all_reports(vs);
  INFO(text);
  for (const auto& v : vs) CHECK(v.kind == violation_kind::self_deadlock);
  CHECK(contains(text, "granted under the owner's ownership"));
  CHECK(contains(text, ("activity " + std::to_string(b.activity)).c_str()));  // on whose behalf
  CHECK(contains(text, "held by thread 'ram/"));                               // who holds which range
  CHECK(contains(text, "exclusive"));
  CHECK(contains(text, "while serving the page-in of file offsets ["));        // which page-in
  CHECK(contains(text, "sent by pager thread 'fault/"));                     // the shared fault pool's
  CHECK(contains(text, "fault at 0x"));                                        // which fault
  CHECK(contains(text, "taken by thread 'ram/"));
}

TEST_CASE("guard, EDEADLK policy: the page-in fails at once, the fault is SIGBUS and the write EFAULT") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "guard fail");
  briantest::restore_guarded_copy_handler();
  guard_fixture f({1, 4}, self_conflict::fail);
  brian_write b(f);
  auto r = b.run(0, 0, 8192);
  REQUIRE(!r.ok());
  CHECK(r.error() == std::errc::bad_address);
  const auto vs = f.rec.rec.take();
  REQUIRE(vs.size() >= 1);
  const std::string text = all_reports(vs);
  INFO(text);
  CHECK(vs[0].kind == violation_kind::self_deadlock);
  CHECK(contains(text, "failed with EDEADLK"));
  CHECK(contains(text, "fault at 0x"));
  // The server is healthy afterwards: an ordinary read works.
  std::vector<std::uint8_t> buf(100);
  auto rr = f.bob.pread(b.fd, buf.data(), buf.size(), 0);
  REQUIRE(rr.ok());
  CHECK(*rr == 100);
}

TEST_CASE("guard, single-threaded server: the pool self-deadlock is detected at once and served by the reserve thread") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "pool grant");
  guard_fixture f({1, 1});
  brian_write b(f);
  auto r = b.run(0, 4096, 3 * 4096);
  INFO(r.error().message());
  INFO(all_reports(f.rec.rec.take()));
  REQUIRE(r.ok());
  CHECK(*r == 3 * 4096);
  CHECK(first_diff(briantest::file_bytes(f.bob, b.fd).data(), b.model.data(), b.model.size()) == -1);
  CHECK(f.fs.srv().threads() == 1);
  CHECK(f.fs.srv().reserve_served() >= 1);
  const auto vs = f.rec.rec.take();
  const std::string text = all_reports(vs);
  INFO(text);
  CHECK(contains(text, "whose every thread (1, the pool's maximum) is busy serving that same activity"));
  CHECK(contains(text, "served by the reserve thread 'ram/reserve'"));
  CHECK(contains(text, "server thread 'ram/0' serves activity"));
  CHECK(contains(text, "the message is the page-in of file offsets"));
  CHECK(contains(text, "granted under the owner's ownership"));  // then the range guard on the reserve thread
  for (const auto& v : vs) CHECK(v.kind == violation_kind::self_deadlock);
}

TEST_CASE("guard, single-threaded server with the EDEADLK pool policy: the send fails at once") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(20, "pool fail");
  briantest::restore_guarded_copy_handler();
  guard_fixture f({1, 1, self_conflict::fail});
  brian_write b(f);
  auto r = b.run(0, 0, 4096);
  REQUIRE(!r.ok());
  CHECK(r.error() == std::errc::bad_address);
  CHECK(f.fs.srv().reserve_served() == 0);
  const auto vs = f.rec.rec.take();
  REQUIRE(vs.size() == 1);
  INFO(vs[0].report());
  CHECK(vs[0].kind == violation_kind::self_deadlock);
  CHECK(contains(vs[0].report(), "failed with EDEADLK"));
}

namespace {
void stress(thread_pool_options pool) {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(50, "stress");
  path_namespace ns;
  briantest::recording rec;
  ramfs fs({.name = "ram", .prefix = "/ram", .pool = pool, .ns = &ns});
  process bob("bob", {1000, 100}, &ns);
  constexpr int threads = 4, files = 2;
  constexpr std::size_t slice = 16 << 10, size = slice * threads;
  int fds[files];
  const std::uint8_t* shared_maps[files];
  for (int i = 0; i < files; ++i) {
    std::vector<std::uint8_t> ignore;
    fds[i] = make_file(bob, ("/ram/st" + std::to_string(i)).c_str(), size, ignore);
    auto m = bob.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
    REQUIRE(m.ok());
    shared_maps[i] = static_cast<const std::uint8_t*>(*m);
  }
  std::atomic<int> bad{0}, failed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      set_this_thread_name("bob/" + std::to_string(t));
      announce_faulting_thread();
      std::mt19937 rng(1234u + static_cast<unsigned>(t));
      auto pick = [&](std::size_t lo, std::size_t hi) { return std::uniform_int_distribution<std::size_t>(lo, hi)(rng); };
      // Each thread owns [t * slice, (t + 1) * slice) of every file (its model) and a private mapping.
      std::vector<std::vector<std::uint8_t>> model(files, std::vector<std::uint8_t>(slice));
      const std::size_t base = static_cast<std::size_t>(t) * slice;
      std::vector<std::uint8_t*> priv(files);
      for (int i = 0; i < files; ++i) {
        for (std::size_t k = 0; k < slice; ++k) model[i][k] = vmtest::pattern(base + k);
        auto m = bob.mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fds[i], 0);
        if (!m) {
          failed.fetch_add(1);
          return;
        }
        priv[i] = static_cast<std::uint8_t*>(*m);
      }
      std::vector<std::uint8_t> buf(slice);
      for (int it = 0; it < 150; ++it) {
        activity_scope act(new_activity());
        const int i = static_cast<int>(pick(0, files - 1));
        auto* shared = const_cast<std::uint8_t*>(shared_maps[i]);
        const std::size_t a = pick(0, slice - 1), b = pick(0, slice - 1);
        const std::size_t n = pick(1, slice - std::max(a, b));
        switch (pick(0, 4)) {
          case 0: {  // plain write, then plain read back
            for (std::size_t k = 0; k < n; ++k) buf[k] = static_cast<std::uint8_t>(rng());
            if (bob.pwrite(fds[i], buf.data(), n, static_cast<off_t>(base + a)).value_or(0) != n) failed.fetch_add(1);
            std::memcpy(model[i].data() + a, buf.data(), n);
            if (bob.pread(fds[i], buf.data(), n, static_cast<off_t>(base + a)).value_or(0) != n ||
                first_diff(buf.data(), model[i].data() + a, n) != -1)
              bad.fetch_add(1);
            break;
          }
          case 1:  // read own bytes into own bytes of the shared mapping (direct, overlapping)
            if (bob.pread(fds[i], shared + base + b, n, static_cast<off_t>(base + a)).value_or(0) != n) failed.fetch_add(1);
            std::memmove(model[i].data() + b, model[i].data() + a, n);
            break;
          case 2:  // write own bytes from the shared mapping (direct)
            if (bob.pwrite(fds[i], shared + base + a, n, static_cast<off_t>(base + b)).value_or(0) != n) failed.fetch_add(1);
            std::memmove(model[i].data() + b, model[i].data() + a, n);
            break;
          case 3:  // read own bytes into the private mapping (UFFDIO_COPY or present pages)
            if (bob.pread(fds[i], priv[i] + base + b, n, static_cast<off_t>(base + a)).value_or(0) != n ||
                first_diff(priv[i] + base + b, model[i].data() + a, n) != -1)
              bad.fetch_add(1);
            break;
          default:  // look through the shared mapping (page faults, page-ins)
            if (first_diff(shared + base + a, model[i].data() + a, n) != -1) bad.fetch_add(1);
            break;
        }
      }
      for (int i = 0; i < files; ++i)
        if (first_diff(shared_maps[i] + base, model[i].data(), slice) != -1) bad.fetch_add(1);
    });
  for (auto& th : ts) th.join();
  CHECK(failed.load() == 0);
  CHECK(bad.load() == 0);
  const auto vs = rec.rec.take();
  CHECK(all_reports(vs) == "");
  CHECK(direct_copy_stats().reads > 0);
}
}  // namespace

TEST_CASE("randomized stress: many activities, reads and writes through the direct path and mappings, no report") {
  stress({2, 6});
}

TEST_CASE("randomized stress on a single-threaded server: other activities wait their turn, no report") {
  stress({1, 1});
}
