// Randomized multi-client test: several logical processes, each with several threads, do random
// operations on a few ramfs files; every read is checked against a model of the file contents.
// - striped files: each thread owns a stripe and checks its reads exactly (concurrent disjoint-range
//   I/O in the server, under per-range locks), plus whole-file reads checked for the stripes' shape;
// - a shared file: every operation (pwrite, pread, ftruncate, lseek+read/write, O_APPEND write, fstat,
//   and calls that must fail: writes from an unreadable buffer, at or past the size limit, bad
//   truncates, an O_CREAT open with a bad access mode) is serialised by a test mutex and checked
//   against one model string; after every failed call the store itself must equal the model (size and
//   bytes: a failed call has no side effects), and a write straddling the limit is a short count.
#include <doctest/doctest.h>
#include <faultsafe/detail/guarded_copy.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "resmgr_test_util.hpp"

using namespace faultsafe;

namespace {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int ops_per_thread = 1000;
#else
constexpr int ops_per_thread = 4000;
#endif
constexpr int nprocs = 3, threads_per_proc = 2, nthreads = nprocs * threads_per_proc;
constexpr std::size_t stripe = 2048;
constexpr std::size_t striped_size = stripe * nthreads;
constexpr std::size_t max_size = 1 << 20;
}  // namespace

TEST_CASE("randomized multi-client I/O against a model") {
  faultsafe_test::watchdog wd("random", std::chrono::seconds(100));
  path_namespace ns;
  reinstall_guarded_copy_handler();  // in front of doctest's per-test-case SIGSEGV handler
  ramfs fs({.name = "ramfs", .prefix = "/r", .pool = {1, 3}, .ns = &ns, .dir_mode = 0777, .file = {.max_size = max_size}});
  void* const bad = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  // unreadable buffer
  REQUIRE(bad != MAP_FAILED);
  {
    process root("root", {0, 0}, &ns);
    for (const char* n : {"/r/s0", "/r/s1"}) {
      auto fd = root.open(n, O_RDWR | O_CREAT, 0666);
      REQUIRE(fd);
      REQUIRE(root.ftruncate(*fd, static_cast<off_t>(striped_size)).ok());
    }
    REQUIRE(root.open("/r/shared", O_RDWR | O_CREAT, 0666));
  }
  std::mutex shared_mu;  // serialises shared-file operations with the model update
  std::string shared_model;
  // The store equals the model (call with shared_mu held).
  auto store_is_model = [&] {
    auto a = fs.lookup("shared");
    return a && a->size() == shared_model.size() &&
           std::memcmp(a->data(), shared_model.data(), shared_model.size()) == 0;
  };
  std::atomic<int> failures{0};
  std::atomic<long> checked_reads{0};
  auto fail = [&](const char* what, int t, int i) {
    if (failures.fetch_add(1) < 10) MESSAGE("thread " << t << " op " << i << ": " << std::string(what));
  };

  std::vector<std::unique_ptr<process>> procs;
  for (int p = 0; p < nprocs; ++p)
    procs.push_back(std::make_unique<process>("client" + std::to_string(p), credentials{static_cast<std::uint32_t>(1000 + p), 100}, &ns));

  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; ++t)
    ts.emplace_back([&, t] {
      process& pr = *procs[t / threads_per_proc];
      std::mt19937 rng(7919 * (t + 1));
      auto rnd = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
      int sfd[2] = {*pr.open("/r/s0", O_RDWR), *pr.open("/r/s1", O_RDWR)};
      const int shfd = *pr.open("/r/shared", O_RDWR);
      const int apfd = *pr.open("/r/shared", O_WRONLY | O_APPEND);
      std::string mine[2] = {std::string(stripe, '\0'), std::string(stripe, '\0')};
      const std::size_t base = static_cast<std::size_t>(t) * stripe;
      std::string buf, out;
      for (int i = 0; i < ops_per_thread; ++i) {
        const unsigned op = rng() % 10;
        const int f = static_cast<int>(rng() % 2);
        if (op < 3) {  // write into my stripe
          const std::size_t off = rnd(stripe), len = 1 + rnd(std::min<std::size_t>(512, stripe - off));
          buf.resize(len);
          for (auto& c : buf) c = static_cast<char>(rng());
          if (pr.pwrite(sfd[f], buf.data(), len, static_cast<off_t>(base + off)).value_or(0) != len) fail("stripe pwrite", t, i);
          mine[f].replace(off, len, buf);
        } else if (op < 5) {  // read from my stripe: exact
          const std::size_t off = rnd(stripe), len = 1 + rnd(stripe - off);
          out.assign(len, '?');
          if (pr.pread(sfd[f], out.data(), len, static_cast<off_t>(base + off)).value_or(0) != len) fail("stripe pread len", t, i);
          else if (out != mine[f].substr(off, len)) fail("stripe pread data", t, i);
          else ++checked_reads;
        } else if (op == 5) {  // read the whole striped file: size is fixed, my stripe is exact
          out.assign(striped_size + 100, '?');
          if (pr.pread(sfd[f], out.data(), out.size(), 0).value_or(0) != striped_size) fail("whole pread len", t, i);
          else if (out.compare(base, stripe, mine[f]) != 0) fail("whole pread data", t, i);
          else ++checked_reads;
        } else {  // the shared file, serialised
          std::lock_guard<std::mutex> g(shared_mu);
          const unsigned sop = rng() % 7;
          if (sop == 0) {
            const std::size_t off = rnd(8192), len = 1 + rnd(700);
            buf.resize(len);
            for (auto& c : buf) c = static_cast<char>('A' + rng() % 26);
            if (pr.pwrite(shfd, buf.data(), len, static_cast<off_t>(off)).value_or(0) != len) fail("shared pwrite", t, i);
            if (shared_model.size() < off + len) shared_model.resize(off + len, '\0');
            shared_model.replace(off, len, buf);
          } else if (sop == 1) {
            const std::size_t off = rnd(9000), len = 1 + rnd(2000);
            out.assign(len, '?');
            const std::size_t expect = off >= shared_model.size() ? 0 : std::min(len, shared_model.size() - off);
            auto r = pr.pread(shfd, out.data(), len, static_cast<off_t>(off));
            if (!r || *r != expect) fail("shared pread len", t, i);
            else if (expect > 0 && out.compare(0, expect, shared_model, off, expect) != 0) fail("shared pread data", t, i);
            else ++checked_reads;
          } else if (sop == 2) {
            const std::size_t len = rnd(8192);
            if (!pr.ftruncate(shfd, static_cast<off_t>(len)).ok()) fail("ftruncate", t, i);
            shared_model.resize(len, '\0');
          } else if (sop == 3) {  // lseek + read through the fd offset
            const std::size_t off = rnd(9000);
            if (pr.lseek(shfd, static_cast<off_t>(off), SEEK_SET).value_or(-1) != static_cast<off_t>(off)) fail("lseek", t, i);
            out.assign(300, '?');
            const std::size_t expect = off >= shared_model.size() ? 0 : std::min<std::size_t>(300, shared_model.size() - off);
            auto r = pr.read(shfd, out.data(), 300);
            if (!r || *r != expect || (expect > 0 && out.compare(0, expect, shared_model, off, expect) != 0)) fail("lseek+read", t, i);
            else if (pr.lseek(shfd, 0, SEEK_CUR).value_or(-1) != static_cast<off_t>(off + expect)) fail("offset advance", t, i);
            else ++checked_reads;
          } else if (sop == 4) {  // O_APPEND: up to the size limit (EFBIG at it)
            const std::size_t len = 1 + rnd(100);
            buf.assign(len, static_cast<char>('a' + t));
            auto r = pr.write(apfd, buf.data(), len);
            if (shared_model.size() >= max_size) {
              if (r.error() != std::errc::file_too_large) fail("append at the limit", t, i);
              if (!store_is_model()) fail("a failed append changed the store", t, i);
            } else {
              const std::size_t n = std::min(len, max_size - shared_model.size());
              if (r.value_or(0) != n) fail("append", t, i);
              shared_model.append(buf, 0, n);
            }
          } else if (sop == 5) {
            auto st = pr.fstat(shfd);
            if (!st || static_cast<std::size_t>((*st).st_size) != shared_model.size()) fail("fstat size", t, i);
          } else {  // calls that must fail, and leave the store exactly as the model
            const unsigned k = rng() % 6;
            const std::size_t off = rnd(9000), len = 1 + rnd(5000);
            bool failed_right = false;
            if (k == 0) failed_right = pr.pwrite(shfd, bad, len, static_cast<off_t>(off)).error() == std::errc::bad_address;
            else if (k == 1)  // at the limit EFBIG comes first (nothing is read before the checks)
              failed_right = pr.write(apfd, bad, len).error() ==
                             (shared_model.size() >= max_size ? std::errc::file_too_large : std::errc::bad_address);
            else if (k == 2) failed_right = pr.pwrite(shfd, "x", 1, static_cast<off_t>(max_size + off)).error() == std::errc::file_too_large;
            else if (k == 3) failed_right = !pr.ftruncate(shfd, rng() % 2 ? -1 : static_cast<off_t>(max_size + 1 + off)).ok();
            else if (k == 4) {
              const std::string name = "/r/never" + std::to_string(t);
              failed_right = pr.open(name, O_CREAT | O_ACCMODE, 0644).error() == std::errc::invalid_argument &&
                             fs.lookup(name.substr(3)) == nullptr;
            } else {  // straddling the limit: a short count up to it (a success), then the model grows
              buf.assign(len, static_cast<char>('A' + t));
              const std::size_t at = max_size - std::min(len, 1 + off);
              auto r = pr.pwrite(shfd, buf.data(), len, static_cast<off_t>(at));
              failed_right = r && *r == max_size - at;
              if (shared_model.size() < max_size) shared_model.resize(max_size, '\0');
              shared_model.replace(at, max_size - at, buf, 0, max_size - at);
            }
            if (!failed_right) fail(k == 0 ? "EFAULT pwrite" : k == 1 ? "EFAULT append" : k == 2 ? "EFBIG pwrite" : k == 3 ? "bad ftruncate" : k == 4 ? "bad open" : "straddling pwrite", t, i);
            if (!store_is_model()) fail("a failed call changed the store", t, i);
          }
        }
      }
      for (int k = 0; k < 2; ++k) (void)pr.close(sfd[k]);
      (void)pr.close(shfd);
      (void)pr.close(apfd);
    });
  for (auto& t : ts) t.join();
  MESSAGE("checked reads: " << checked_reads.load() << ", server threads: " << fs.srv().threads());
  CHECK(failures.load() == 0);
  CHECK(checked_reads.load() > nthreads * ops_per_thread / 10);
  // The store is the truth: the server-side bytes equal the model.
  auto attr = fs.lookup("shared");
  REQUIRE(attr);
  REQUIRE(attr->size() == shared_model.size());
  CHECK(std::string(reinterpret_cast<const char*>(attr->data()), shared_model.size()) == shared_model);
  CHECK(fs.srv().open_ocbs() == 0u);
  ::munmap(bad, 4096);
}
