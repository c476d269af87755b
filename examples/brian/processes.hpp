// brian --processes: Brian's lock-up across a real OS process boundary (included by main.cpp).
//
// Two OS processes (fork): the file server "fs" and Bob. Bob maps the file MAP_SHARED through
// served_memory (vm/served_memory.hpp): a userfaultfd of Bob's address space, handed to fs, whose pager
// serves every first touch in Bob's mapping. Bob asks fs to read the whole file into that mapping; fs's
// read handler is the seed's (the file's range lock, exclusively, over the whole file) and copies into
// Bob's memory with process_vm_writev, which takes the fault in the kernel on Bob's unserved page: fs's
// own pager must page it in, under the range the same fs thread holds.
//   --processes --naive      kernel-mode faults, the page-in waits for the range like any other request:
//                            fs's wait-for graph names the cycle (fs thread -> fault it is blocked on ->
//                            pager thread -> range held by the fs thread) and breaks it: the page is
//                            poisoned, the copy fails with EFAULT, Bob's read fails. Exit 0 when the cycle
//                            was reported within 2 s of the read and the read failed.
//   --processes --faultsafe  A. kernel-mode faults: the fault names the fs thread (UFFD_FEATURE_THREAD_ID),
//                               the page-in runs on behalf of its activity and the guard serves it;
//                            B. a user-mode-only userfaultfd (any unprivileged process can create one): the
//                               kernel fails fs's copy with EFAULT at once; fs drops the range, faults the
//                               rest in with pager::fault_in() and retries (gfs2's fault-in-and-retry).
//                            Exit 0 when Bob verified both reads byte for byte.
#pragma once

#include <signal.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <faultsafe/vm/pager.hpp>
#include <faultsafe/vm/served_memory.hpp>

#include "../../tests/support/served_session.hpp"

namespace brian_processes {

using namespace faultsafe;
using test_support::wire_msg;
using test_support::wire_recv;
using test_support::wire_send;

enum op : std::uint32_t { read_req = test_support::served_user, reply };

// fs's page-in: the file's range (shared over the window), on behalf of the faulting thread's activity,
// with the mode's self-conflict policy (wait: the naive handler; grant: the guard).
struct fs_source final : page_source {
  fs_source(int memfd, range_lock& lock, self_conflict policy) : inner(memfd), lock(lock), policy(policy) {}
  std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    try {
      range_guard g(lock, req.offset, req.length, lock_mode::shared, range_options{req.thread.activity, policy});
      return inner.page_in(req, out);
    } catch (const std::system_error& e) {
      return e.code();  // EDEADLK: the wait-for graph broke the cycle at this wait
    }
  }
  [[nodiscard]] std::string describe() const override { return "fs:/brian/file"; }
  memfd_page_source inner;
  range_lock& lock;
  self_conflict policy;
};

// The fs process: serves Bob's mapping and one read. Returns its exit code.
int fs_main(int sock, int memfd, bool naive, bool user_mode_only) {
  std::atomic<int> cycles{0}, guards{0};
  scoped_violation_handler h([&](const violation& v) {
    if (v.kind == violation_kind::wait_cycle && cycles.fetch_add(1) == 0) std::printf("  fs >> %s\n", v.report().c_str());
    if (v.kind == violation_kind::self_deadlock && guards.fetch_add(1) == 0) std::printf("  fs >> %s\n", v.report().c_str());
  });
  wait_graph::set_enabled(true);
  range_lock lock("brian file");
  fs_source src(memfd, lock, naive ? self_conflict::wait : self_conflict::grant);
  test_support::server_side s(sock, memfd, src, pager_options{.name = "fs-pager"});
  while (s.step()) {
    const wire_msg m = std::exchange(s.last, wire_msg{});
    pager* pg = s.pg.get();
    if (m.op == read_req && pg != nullptr) {
      // The seed's read handler, on a thread of its own that announced itself (its faults are resolved
      // to it) and works for the request's activity.
      long result = 0;
      std::thread t([&] {
        set_this_thread_name("fs/0");
        announce_faulting_thread();
        activity_scope act(new_activity());
        std::vector<std::uint8_t> data(m.b);
        if (::pread(memfd, data.data(), data.size(), 0) != static_cast<ssize_t>(data.size())) return;
        std::size_t done = 0;
        for (int tries = 0; tries < 64 && done < data.size(); ++tries) {
          ssize_t n;
          {
            range_guard whole_file(lock, 0, to_end, lock_mode::exclusive);
            iovec l{data.data() + done, data.size() - done}, r{reinterpret_cast<char*>(m.a) + done, data.size() - done};
            n = ::process_vm_writev(static_cast<pid_t>(m.c), &l, 1, &r, 1, 0);
          }
          if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
          }
          if (!user_mode_only || errno != EFAULT) {
            result = -errno;
            return;
          }
          std::printf("  fs: the copy into Bob failed with EFAULT at byte %zu (user-mode-only userfaultfd): range dropped, "
                      "faulting the rest in, retrying\n", done);
          if (auto ec = pg->fault_in(reinterpret_cast<char*>(m.a) + done, data.size() - done)) {
            result = -ec.value();
            return;
          }
        }
        result = static_cast<long>(done);
      });
      t.join();
      if (!wire_send(sock, wire_msg{reply, static_cast<std::uint64_t>(result), static_cast<std::uint64_t>(cycles.load()),
                                    static_cast<std::uint64_t>(guards.load())}))
        return 2;
    }
  }
  return 0;
}

struct bob_result {
  long got = 0;             // bytes read, or -errno
  std::uint64_t cycles = 0;  // wait_cycle reports in fs
  std::uint64_t guards = 0;  // self_deadlock reports (guard) in fs
  double ms = 0;
  bool verified = false;
  bool ok = false;           // the protocol worked
};

// Bob (this process) and a forked fs: one read of the whole file into Bob's fresh mapping.
bob_result run_pair(int memfd, std::size_t size, bool naive, bool user_mode_only) {
  bob_result out;
  test_support::wire_pair w;
  const pid_t fs = ::fork();
  if (fs < 0) return out;
  if (fs == 0) ::_exit(fs_main(w.keep(1), memfd, naive, user_mode_only));
  const int sock = w.keep(0);
  {
    test_support::client_side c(sock, fs, !user_mode_only);
    std::uint8_t* p = c.ok ? c.map(true, size) : nullptr;
    wire_msg m;
    if (p != nullptr) {
      std::printf("  Bob (pid %d): mapped the file at %p, served by fs (pid %d); read(fd, ptr) of %zu bytes\n",
                  static_cast<int>(::getpid()), static_cast<void*>(p), static_cast<int>(fs), size);
      const auto t0 = std::chrono::steady_clock::now();
      if (wire_send(sock, wire_msg{read_req, reinterpret_cast<std::uint64_t>(p), size, static_cast<std::uint64_t>(::getpid())}) &&
          wire_recv(sock, m, nullptr, std::chrono::seconds(15))) {
        out.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        out.got = static_cast<long>(m.a);
        out.cycles = m.b;
        out.guards = m.c;
        out.ok = true;
        if (out.got == static_cast<long>(size)) {  // through the mapping: Bob's own faults, served by fs
          std::vector<std::uint8_t> want(size);
          out.verified = ::pread(memfd, want.data(), size, 0) == static_cast<ssize_t>(size) && std::memcmp(p, want.data(), size) == 0;
        }
      }
    }
    (void)wire_send(sock, wire_msg{test_support::served_done, 0, 0, 0});  // fs's loop ends
    bool timed_out = false;
    (void)test_support::wait_child(fs, timed_out, std::chrono::seconds(10));
  }
  return out;
}

int run(bool naive, std::size_t size) {
  std::string why;
  {
    try {
      served_memory probe(served_memory_options{true});
    } catch (const std::system_error& e) {
      why = e.what();
    }
  }
  const int memfd = ::memfd_create("brian", MFD_CLOEXEC);
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 11);
  if (memfd < 0 || ::pwrite(memfd, bytes.data(), size, 0) != static_cast<ssize_t>(size)) return 1;
  if (naive) {
    std::printf("brian --processes --naive: fs and Bob are two OS processes; the seed's exclusive read lock; no guard\n");
    if (!why.empty()) {
      std::printf("RESULT: skipped: kernel-mode faults unavailable: %s\n", why.c_str());
      return 77;
    }
    const bob_result r = run_pair(memfd, size, true, false);
    const bool ok = r.ok && r.got < 0 && r.cycles > 0 && r.ms <= 2000.0;
    std::printf("  Bob's read returned after %.1f ms: %s\n", r.ms, r.got < 0 ? std::strerror(static_cast<int>(-r.got)) : "data (?)");
    std::printf("RESULT: processes naive: %s\n",
                ok ? ("lock-up across the process boundary detected by fs's wait graph (wait_cycle), broken; Bob's read failed: " +
                      std::string(std::strerror(static_cast<int>(-r.got))) + " after " + std::to_string(static_cast<int>(r.ms + 0.5)) + " ms")
                         .c_str()
                   : "lock-up NOT detected and broken (FAIL)");
    return ok ? 0 : 1;
  }
  std::printf("brian --processes --faultsafe: fs and Bob are two OS processes; the seed's exclusive read lock\n");
  bool ok_a = true;
  std::string a = "skipped (kernel-mode faults unavailable: " + why + ")";
  if (why.empty()) {
    std::printf("A. kernel-mode faults (/dev/userfaultfd): fs's copy faults on its own pager; the guard serves it:\n");
    const bob_result r = run_pair(memfd, size, false, false);
    ok_a = r.ok && r.got == static_cast<long>(size) && r.verified && r.guards > 0 && r.cycles == 0;
    a = ok_a ? "guard served " + std::to_string(r.guards) + " self-conflict(s), verified" : "FAILED";
    std::printf("  A. %s (%.1f ms)\n", a.c_str(), r.ms);
  }
  std::printf("B. user-mode-only userfaultfd: fs's copy fails EFAULT, fs faults the range in and retries:\n");
  const bob_result r = run_pair(memfd, size, false, true);
  const bool ok_b = r.ok && r.got == static_cast<long>(size) && r.verified && r.cycles == 0;
  const std::string b = ok_b ? "fault-in and retry, verified" : "FAILED";
  std::printf("  B. %s (%.1f ms)\n", b.c_str(), r.ms);
  const bool ok = ok_a && ok_b;
  if (ok) std::printf("  All right, the kernel's secured.\n");
  std::printf("RESULT: processes faultsafe: %s; A: %s; B: %s\n", ok ? "reads verified across processes" : "FAILED", a.c_str(), b.c_str());
  return ok ? 0 : 1;
}

}  // namespace brian_processes
