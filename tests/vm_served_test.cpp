// Mappings of one OS process served by the pager of ANOTHER (vm/served_memory.hpp on the client side,
// aspace(adopt_userfaultfd) + pager on the server side), with real processes (fork) talking over a
// socketpair with SCM_RIGHTS:
//   - shared and private mappings: every first touch in the client goes through the server's page
//     source; writes through the shared mapping land in the server's file, private ones do not;
//     munmap and mremap in the client are followed (UFFD events); faults racing another client
//     thread's munmap/madvise events are served (EAGAIN retried, reused addresses tracked after the
//     old mapping's event); two unmaps racing on one region forget all of it;
//   - the uffd modes: with kernel-mode faults (no UFFD_USER_MODE_ONLY) a system call's access to an
//     unserved page (the client's read(2), the server's process_vm_writev) waits for the server's
//     pager; user-mode-only, it fails with EFAULT and pager::fault_in + retry completes it;
//   - Brian's lock-up across the process boundary at the vm level: a server thread holding the file's
//     range lock writes into the client's mapping of that file (process_vm_writev) while the page-in
//     needs the same range; with kernel-mode faults naive (range wait) is detected by the wait-for
//     graph and the write fails EFAULT, faultsafe (guard: grant) serves it under the owner; with
//     user-mode-only the server drops the range, faults the pages in and retries (gfs2); 1, 2 and 4
//     server threads, data verified;
//   - a server killed with SIGKILL: served pages keep their data, unserved ones raise SIGBUS, nothing
//     hangs; a client killed in the middle of fault service leaves the server working;
//   - Colin across processes: bob, nfs and io_pkt as three OS processes; the lock-up with one lock
//     for the whole client address space (single_lock), completion with the default region locks.
// Every wait is bounded (watchdog, poll limits, wait_child), so a hang fails the test.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <faultsafe/activity/wait_graph.hpp>
#include <faultsafe/order/violation.hpp>
#include <faultsafe/sync/range_lock.hpp>
#include <faultsafe/vm/served_memory.hpp>

#include "support/served_session.hpp"
#include "vm_support.hpp"

using namespace faultsafe;
using test_support::wire_msg;
using test_support::wire_recv;
using test_support::wire_send;
using vmtest::pattern;

namespace {

using test_support::client_side;
using test_support::server_side;
constexpr std::uint32_t ack = test_support::served_ack, done = test_support::served_done, note = test_support::served_user;

constexpr std::size_t pages = 64;
constexpr std::size_t file_len = pages * vm_page_size;

// The server's page source: the memfd's, counting page-ins and the faulting threads' tids; optionally
// under the file's range lock (shared over the window) owned by the faulting thread's activity, as a
// server's page-in handler takes it (iofunc_page_in_default), with a self-conflict policy.
struct server_source final : page_source {
  explicit server_source(int memfd) : inner(memfd) {}
  std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    page_ins.fetch_add(1);
    last_tid.store(req.thread.tid);
    if (delay_us != 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    if (req.fault_offset == slow_offset) {
      slow_started.store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    if (lock == nullptr) return inner.page_in(req, out);
    try {
      const range_options o{req.thread.activity, policy};
      // The window is read-ahead beyond the faulting page: it is only taken if free at once (another
      // server thread may hold a later part exclusively while it waits on a fault of its own); else
      // the faulting page alone (the pager maps windows from the faulting page: offset == fault_offset).
      range_guard w(*lock, req.offset, req.length, lock_mode::shared, std::try_to_lock, o);
      if (w.owns_lock() || req.offset != req.fault_offset) {
        std::optional<range_guard> g;
        if (!w.owns_lock()) g.emplace(*lock, req.offset, req.length, lock_mode::shared, o);
        return inner.page_in(req, out);
      }
      page_in_request one = req;
      one.length = vm_page_size;
      range_guard g(*lock, one.offset, one.length, lock_mode::shared, o);
      return inner.page_in(one, out);
    } catch (const std::system_error& e) {
      return e.code();
    }
  }
  memfd_page_source inner;
  std::atomic<int> page_ins{0};
  std::atomic<pid_t> last_tid{0};
  range_lock* lock = nullptr;
  self_conflict policy = self_conflict::wait;
  unsigned delay_us = 0;
  std::uint64_t slow_offset = ~std::uint64_t{0};  // the page-in of this offset takes 300 ms
  std::atomic<bool> slow_started{false};
};

bool pattern_at(const std::uint8_t* p, std::size_t from, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != pattern(from + i)) return false;
  return true;
}

// Runs `body` in a forked child, whose return value is its exit code (exceptions: 3).
template <class Body>
pid_t fork_child(Body body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 3;
    try {
      rc = body();
    } catch (...) {
    }
    ::_exit(rc);
  }
  return pid;
}

// Forks a client process: its client_side (connected to this process as its server) is passed to
// `body(c)`, whose return value is the exit code (10: the connection failed; 0: `done` is sent).
template <class Body>
pid_t fork_client(test_support::wire_pair& w, bool kernel_faults, Body body) {
  return fork_child([&] {
    client_side c(w.keep(1), ::getppid(), kernel_faults);
    if (!c.ok) return 10;
    const int rc = body(c);
    if (rc == 0) (void)wire_send(c.sock, wire_msg{done, 0, 0, 0});  // the server's loop ends
    return rc;
  });
}

int exit_code(pid_t pid) {
  bool timed_out = false;
  const int st = test_support::wait_child(pid, timed_out);
  if (timed_out) return -1000;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

bool kernel_faults_available(std::string& why) {
  try {
    served_memory sm(served_memory_options{true});
    return true;
  } catch (const std::system_error& e) {
    why = e.what();
    return false;
  }
}

}  // namespace

TEST_CASE("served mappings: a client process's first touches are the server's page-ins; munmap and mremap are followed") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "served mappings");
  vmtest::memfd_file f(file_len);
  test_support::wire_pair w;
  const pid_t pid = fork_client(w, false, [&](client_side& c) {
    const int sock = c.sock;
    std::uint8_t* sh = c.map(true, file_len);
    std::uint8_t* pr = c.map(false, file_len);
    if (sh == nullptr || pr == nullptr) return 11;
    if (!pattern_at(sh, 0, file_len)) return 12;  // every page through the server's pager
    if (!pattern_at(pr, 0, file_len)) return 13;
    sh[3 * vm_page_size] = 0xAB;  // lands in the file
    pr[5 * vm_page_size] = 0xCD;  // stays private
    wire_msg m;
    if (!wire_send(sock, wire_msg{note, 1, 0, 0}) || !wire_recv(sock, m)) return 14;
    sh[3 * vm_page_size] = pattern(3 * vm_page_size);  // the file is the pattern again
    if (c.sm.unmap(sh, file_len)) return 15;  // the server forgets it (UFFD_EVENT_UNMAP)
    if (!wire_send(sock, wire_msg{note, 2, 0, 0}) || !wire_recv(sock, m)) return 16;
    // mremap: a private mapping with one page served moves; its other pages are served at the new place.
    std::uint8_t* pr2 = c.map(false, file_len);
    if (pr2 == nullptr || pr2[0] != pattern(0)) return 17;
    void* to = ::mmap(nullptr, file_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* moved = ::mremap(pr2, file_len, file_len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (moved != to) return 18;
    const auto* q = static_cast<const std::uint8_t*>(moved);
    for (std::size_t pg = 0; pg < pages; ++pg)
      if (!pattern_at(q + pg * vm_page_size, pg * vm_page_size, vm_page_size)) return 100 + static_cast<int>(pg);
    return 0;
  });
  REQUIRE(pid > 0);
  const int sock = w.keep(0);
  server_source src(f.fd);
  server_side s(sock, f.fd, src);
  while (s.step()) {
    if (s.last.op == note && s.last.a == 1) {  // the client wrote through both mappings
      CHECK(f.read_byte(3 * vm_page_size) == 0xAB);
      CHECK(f.read_byte(5 * vm_page_size) == pattern(5 * vm_page_size));
      CHECK(s.as->region_count() == 2);
      REQUIRE(wire_send(sock, wire_msg{ack, 0, 0, 0}));
    } else if (s.last.op == note && s.last.a == 2) {  // the client unmapped the shared mapping
      for (int i = 0; i < 2000 && s.as->region_count() != 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      CHECK(s.as->region_count() == 1);
      REQUIRE(wire_send(sock, wire_msg{ack, 0, 0, 0}));
    }
    s.last = {};
  }
  CHECK(exit_code(pid) == 0);
  REQUIRE(s.pg);
  const auto st = s.pg->stats();
  CHECK(src.page_ins.load() > 0);
  CHECK(st.faults > 0);
  CHECK(st.events >= 2);  // the unmap and the remap (the MAP_FIXED target's unmap too)
  CHECK(st.page_in_errors == 0);
}

// The client's mremap returns once the server has READ its REMAP event; a fault thread applies it
// later. When a fault at the new address is read first (here: the event waits for a slow page-in in
// flight on the moved region), it must wait for the event, not give up after a few milliseconds
// (CI saw SIGBUS on a loaded machine).
TEST_CASE("served mappings: a fault at an mremap target waits for the REMAP a slow fault service delays") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "mremap vs slow page-in");
  vmtest::memfd_file f(file_len);
  test_support::wire_pair w;
  constexpr std::size_t slow_page = 40, moved_pages = 16;
  const pid_t pid = fork_client(w, false, [&](client_side& c) {
    const int sock = c.sock;
    std::uint8_t* p = c.map(false, file_len);
    if (p == nullptr) return 11;
    std::atomic<int> slow_ok{-1};
    std::thread t([&] { slow_ok = pattern_at(p + slow_page * vm_page_size, slow_page * vm_page_size, vm_page_size) ? 1 : 0; });
    wire_msg m;  // the server acks once the slow page-in has started
    if (!wire_send(sock, wire_msg{note, 3, 0, 0}) || !wire_recv(sock, m)) {
      t.join();
      return 14;
    }
    void* to = ::mmap(nullptr, moved_pages * vm_page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* moved = ::mremap(p, moved_pages * vm_page_size, moved_pages * vm_page_size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    int rc = 0;
    if (moved != to) rc = 18;
    else if (!pattern_at(static_cast<const std::uint8_t*>(moved) + vm_page_size, vm_page_size, vm_page_size)) rc = 19;
    t.join();
    if (rc == 0 && slow_ok != 1) rc = 20;
    return rc;
  });
  REQUIRE(pid > 0);
  const int sock = w.keep(0);
  server_source src(f.fd);
  src.slow_offset = slow_page * vm_page_size;
  pager_options po;
  po.fault_threads = 4;
  server_side s(sock, f.fd, src, po);
  while (s.step()) {
    if (s.last.op == note && s.last.a == 3) {
      for (int i = 0; i < 5000 && !src.slow_started.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      CHECK(src.slow_started.load());
      REQUIRE(wire_send(sock, wire_msg{ack, 0, 0, 0}));
    }
    s.last = {};
  }
  CHECK(exit_code(pid) == 0);
  REQUIRE(s.pg);
  CHECK(s.pg->stats().page_in_errors == 0);
}

TEST_CASE("served mappings, uffd modes: kernel-mode faults wait for the server's pager; user-mode-only ones fail EFAULT until faulted in") {
  vmtest::require_userfaultfd();
  std::string why;
  const bool kernel_ok = kernel_faults_available(why);
  if (!kernel_ok) MESSAGE("kernel-mode faults not available, that half is skipped: " << why);
  for (const bool kernel_faults : {false, true}) {
    if (kernel_faults && !kernel_ok) continue;
    CAPTURE(kernel_faults);
    vmtest::watchdog wd(60, "uffd modes");
    vmtest::memfd_file f(file_len);
    test_support::wire_pair w;
    const pid_t pid = fork_client(w, kernel_faults, [&](client_side& c) {
      const int sock = c.sock;
      std::uint8_t* sh = c.map(true, file_len);
      if (sh == nullptr) return 11;
      // The client's own read(2) into an unserved page: the kernel's copy_to_user faults.
      int pfd[2];
      if (::pipe(pfd) != 0 || ::write(pfd[1], "kernel", 6) != 6) return 12;
      const ssize_t n = ::read(pfd[0], sh + 7 * vm_page_size, 6);
      if (kernel_faults ? n != 6 : !(n < 0 && errno == EFAULT)) return 13;
      if (kernel_faults && std::memcmp(sh + 7 * vm_page_size, "kernel", 6) != 0) return 14;
      wire_msg m;
      if (!wire_send(sock, wire_msg{note, reinterpret_cast<std::uint64_t>(sh), 0, 0}) || !wire_recv(sock, m)) return 15;
      // The server wrote "server" at page 9 (by process_vm_writev, after a fault-in if it had to).
      if (std::memcmp(sh + 9 * vm_page_size, "server", 6) != 0) return 16;
      if (!pattern_at(sh + 9 * vm_page_size + 6, 9 * vm_page_size + 6, vm_page_size - 6)) return 17;
      return 0;
    });
    REQUIRE(pid > 0);
    const int sock = w.keep(0);
    server_source src(f.fd);
    server_side s(sock, f.fd, src);
    announce_faulting_thread();
    while (s.step()) {
      if (s.last.op != note) continue;
      auto* remote = reinterpret_cast<std::uint8_t*>(s.last.a) + 9 * vm_page_size;
      char msg[] = "server";
      iovec l{msg, 6}, r{remote, 6};
      const int before = src.page_ins.load();
      ssize_t n = ::process_vm_writev(pid, &l, 1, &r, 1, 0);
      if (kernel_faults) {
        CHECK(n == 6);  // the fault waited for our own pager, which served it
        CHECK(src.page_ins.load() > before);
        CHECK(src.last_tid.load() == this_thread_tid());  // UFFD_FEATURE_THREAD_ID names this server thread
      } else {
        CHECK(n < 0);
        CHECK(errno == EFAULT);  // user-mode-only: the kernel refuses the kernel-mode fault
        CHECK(!s.pg->fault_in(remote, 6));
        n = ::process_vm_writev(pid, &l, 1, &r, 1, 0);
        CHECK(n == 6);
      }
      REQUIRE(wire_send(sock, wire_msg{ack, 0, 0, 0}));
      s.last = {};
    }
    CHECK(exit_code(pid) == 0);
  }
}

namespace {

// Brian at the vm level: `threads` server threads each hold their slice of the file's range lock
// exclusively (as a read handler does) and write a fresh pattern into the client's unserved MAP_SHARED
// mapping of that file with process_vm_writev; the page-in of the fault takes the range shared on behalf
// of the faulting (server) thread's activity. Returns per thread the write's result (bytes or -errno).
std::vector<long> brian_writes(pid_t client, std::uint8_t* remote, server_side& s, range_lock& lock, unsigned threads,
                               bool user_mode_only) {
  std::vector<long> out(threads, 0);
  std::vector<std::thread> ts;
  const std::size_t slice = file_len / threads;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      announce_faulting_thread();
      activity_scope act(new_activity());
      std::vector<std::uint8_t> data(slice);
      for (std::size_t i = 0; i < slice; ++i) data[i] = static_cast<std::uint8_t>(~pattern(t * slice + i));
      std::size_t done = 0;
      for (int tries = 0; tries < 64 && done < slice; ++tries) {
        ssize_t n;
        {
          range_guard g(lock, t * slice, slice, lock_mode::exclusive);
          iovec l{data.data() + done, slice - done}, r{remote + t * slice + done, slice - done};
          n = ::process_vm_writev(client, &l, 1, &r, 1, 0);
        }
        if (n > 0) {
          done += static_cast<std::size_t>(n);
          continue;
        }
        if (!user_mode_only || errno != EFAULT) {
          out[t] = -errno;
          return;
        }
        // gfs2: the range is dropped (above); page the rest in on this thread, then retry.
        if (auto ec = s.pg->fault_in(remote + t * slice + done, slice - done)) {
          out[t] = -ec.value();
          return;
        }
      }
      out[t] = static_cast<long>(done);
    });
  for (auto& th : ts) th.join();
  return out;
}

}  // namespace

TEST_CASE("Brian across processes (vm level): a server thread's copy into the client's mapping of the file it holds locked") {
  vmtest::require_userfaultfd();
  std::string why;
  const bool kernel_ok = kernel_faults_available(why);
  if (!kernel_ok) MESSAGE("kernel-mode faults not available, those cases are skipped: " << why);
  struct mode {
    std::string name;
    bool kernel_faults;
    self_conflict policy;
  };
  const mode modes[] = {{"kernel faults, naive (range wait)", true, self_conflict::wait},
                        {"kernel faults, faultsafe (guard grants)", true, self_conflict::grant},
                        {"user-mode-only, fault-in and retry", false, self_conflict::wait}};
  for (const mode& md : modes) {
    if (md.kernel_faults && !kernel_ok) continue;
    for (unsigned threads : {1u, 2u, 4u}) {
      CAPTURE(md.name);
      CAPTURE(threads);
      vmtest::watchdog wd(60, "brian across processes");
      violation_recorder rec;
      scoped_violation_handler h{rec.handler()};
      wait_graph::set_enabled(true);
      vmtest::memfd_file f(file_len);
      test_support::wire_pair w;
      const bool naive = md.kernel_faults && md.policy == self_conflict::wait;
      const pid_t pid = fork_client(w, md.kernel_faults, [&](client_side& c) {
        const int sock = c.sock;
        std::uint8_t* sh = c.map(true, file_len);
        if (sh == nullptr) return 11;
        wire_msg m;
        if (!wire_send(sock, wire_msg{note, reinterpret_cast<std::uint64_t>(sh), 0, 0}) || !wire_recv(sock, m)) return 12;
        if (!naive) {  // the server's bytes, seen through the mapping
          for (std::size_t i = 0; i < file_len; ++i)
            if (sh[i] != static_cast<std::uint8_t>(~pattern(i))) return 13;
        }
        return 0;
      });
      REQUIRE(pid > 0);
      const int sock = w.keep(0);
      server_source src(f.fd);
      range_lock lock("brian file");
      src.lock = &lock;
      src.policy = md.policy;
      server_side s(sock, f.fd, src);
      std::vector<long> got;
      while (s.step()) {
        if (s.last.op != note) continue;
        got = brian_writes(pid, reinterpret_cast<std::uint8_t*>(s.last.a), s, lock, threads, !md.kernel_faults);
        REQUIRE(wire_send(sock, wire_msg{ack, 0, 0, 0}));
        s.last = {};
      }
      CHECK(exit_code(pid) == 0);
      REQUIRE(got.size() == threads);
      if (naive) {
        for (long g : got) CHECK(g == -EFAULT);  // detected, broken, unwound: the write fails
        CHECK(rec.count(violation_kind::wait_cycle) >= 1);
      } else {
        for (long g : got) CHECK(g == static_cast<long>(file_len / threads));
        for (std::size_t i = 0; i < file_len; i += 997) CHECK(f.read_byte(i) == static_cast<std::uint8_t>(~pattern(i)));
        if (md.kernel_faults) CHECK(rec.count(violation_kind::self_deadlock) >= 1);  // the guard reported, then served
        else CHECK(rec.count() == 0);  // no fault of a server thread ever happened
      }
    }
  }
}

TEST_CASE("served mappings: a server killed with SIGKILL leaves served pages readable and unserved ones SIGBUS, no hang") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "server killed");
  vmtest::memfd_file f(file_len);
  test_support::wire_pair w;
  const pid_t server = fork_child([&] {
    const int sock = w.keep(1);
    server_source src(f.fd);
    server_side s(sock, f.fd, src);
    while (s.step(std::chrono::seconds(50))) {
    }
    return 0;
  });
  REQUIRE(server > 0);
  const int sock = w.keep(0);
  {
    client_side c(sock, server, false);
    REQUIRE(c.ok);
    std::uint8_t* sh = c.map(true, file_len);
    std::uint8_t* pr = c.map(false, file_len);
    REQUIRE(sh != nullptr);
    REQUIRE(pr != nullptr);
    CHECK(sh[0] == pattern(0));  // served
    CHECK(pr[0] == pattern(0));
    ::kill(server, SIGKILL);
    CHECK(exit_code(server) == -SIGKILL);
    std::uint8_t v = 0;
    // Unserved pages: SIGBUS (the watcher poisons them and closes the userfaultfd; a touch before that
    // waits for it). A page beyond the window of the first fault is unserved for sure.
    CHECK(vmtest::probe_read(sh + (pages - 1) * vm_page_size, v) == SIGBUS);
    CHECK(vmtest::probe_read(pr + (pages - 1) * vm_page_size, v) == SIGBUS);
    CHECK(vmtest::probe_read(sh, v) == 0);
    CHECK(v == pattern(0));
    CHECK(vmtest::probe_read(pr, v) == 0);
    CHECK(v == pattern(0));
    void* p = nullptr;
    CHECK(c.sm.map(served_map_request{file_len, PROT_READ, true, c.memfd, 0}, p) == std::error_code(ESHUTDOWN, std::generic_category()));
    CHECK(!c.sm.unmap(sh, file_len));  // no unread-event hang
  }
}

TEST_CASE("served mappings: a client killed in the middle of fault service leaves the server working") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "client killed");
  vmtest::memfd_file f(file_len);
  server_source src(f.fd);
  src.delay_us = 2000;
  for (int round = 0; round < 3; ++round) {
    test_support::wire_pair w;
    const pid_t pid = fork_client(w, false, [&](client_side& c) {
      std::uint8_t* pr = c.map(false, file_len);
      if (pr == nullptr) return 11;
      (void)wire_send(c.sock, wire_msg{note, 0, 0, 0});
      std::uint64_t sum = 0;
      for (std::size_t i = 0; i < file_len; i += vm_page_size / 2) sum += pr[(i * 7919) % file_len];
      return static_cast<int>(sum & 1);
    });
    REQUIRE(pid > 0);
    const int sock = w.keep(0);
    server_side s(sock, f.fd, src, pager_options{.fault_threads = 2, .min_window = vm_page_size, .max_window = vm_page_size});
    while (s.step()) {
      if (s.last.op == note) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5 + 5 * round));
        ::kill(pid, SIGKILL);
        break;
      }
    }
    CHECK(exit_code(pid) == -SIGKILL);
    REQUIRE(s.pg);
    s.pg->stop();  // returns: nothing waits on the dead client
    CHECK(s.pg->stats().faults > 0);
  }
  CHECK(f.read_byte(0) == pattern(0));
}

namespace {

// Colin's nfs: its page-in of Bob's file reads io_pkt (one request on its socket, bounded wait); the
// first page-in tells Bob (on `sig`) that bob1's fault is in service.
struct nfs_source final : page_source {
  nfs_source(int memfd, int io, int sig) : inner(memfd), io(io), sig(sig) {}
  std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    if (first.exchange(false)) {
      (void)wire_send(sig, wire_msg{note, 0, 0, 0});
      wire_msg m;
      if (!wire_send(io, wire_msg{note, req.offset, req.length, 0}) || !wire_recv(io, m, nullptr, std::chrono::seconds(8)))
        return std::make_error_code(std::errc::timed_out);  // io_pkt never answered: the fault fails
    }
    return inner.page_in(req, out);
  }
  memfd_page_source inner;
  int io, sig;
  std::atomic<bool> first{true};
};

}  // namespace

TEST_CASE("Colin across processes (vm level): bob, nfs and io_pkt as three OS processes") {
  // bob1 faults on Bob's mapping of an nfs file; nfs's pager serves it and its page-in reads io_pkt;
  // io_pkt (one thread) is meanwhile writing bob2's read reply into Bob's memory with
  // process_vm_writev, and that buffer is an unserved page of another nfs mapping: a kernel-mode
  // fault that nfs's pager must serve. With one lock for Bob's whole address space held during fault
  // service (single_lock, the seed's QNX proc) the second fault waits for the first, which waits for
  // io_pkt, which waits for the second: Colin's lock-up (shown here by Bob's bounded wait; the pieces
  // are in three processes, so no one process's wait-for graph sees the whole cycle). With the
  // default per-region locks the second fault is served at once and everything completes.
  vmtest::require_userfaultfd();
  std::string why;
  if (!kernel_faults_available(why)) {
    MESSAGE("skipped: io_pkt's access must be a kernel-mode fault: " << why);
    return;
  }
  for (const bool single_lock : {false, true}) {
    CAPTURE(single_lock);
    vmtest::watchdog wd(60, "colin across processes");
    vmtest::memfd_file f(file_len);
    test_support::wire_pair bob_nfs, bob_io, nfs_io, sig;
    const pid_t nfs = fork_child([&] {
      nfs_source src(f.fd, nfs_io.keep(0), sig.keep(0));
      server_side s(bob_nfs.keep(0), f.fd, src, pager_options{}, aspace_options{.single_lock = single_lock, .name = "Bob"});
      while (s.step(std::chrono::seconds(30))) {
      }
      return 0;
    });
    const pid_t io_pkt = fork_child([&] {
      const int from_bob = bob_io.keep(0), from_nfs = nfs_io.keep(1);
      wire_msg m;
      if (!wire_recv(from_bob, m, nullptr, std::chrono::seconds(30))) return 1;  // bob2's read first
      std::vector<char> data(m.b, 'i');
      iovec l{data.data(), data.size()}, r{reinterpret_cast<void*>(m.a), data.size()};
      const ssize_t n = ::process_vm_writev(static_cast<pid_t>(m.c), &l, 1, &r, 1, 0);
      (void)wire_send(from_bob, wire_msg{ack, static_cast<std::uint64_t>(n), 0, 0});
      if (!wire_recv(from_nfs, m, nullptr, std::chrono::seconds(30))) return 2;  // then nfs's read
      (void)wire_send(from_nfs, wire_msg{ack, 0, 0, 0});
      return 0;
    });
    const pid_t bob = fork_child([&] {
      client_side c(bob_nfs.keep(1), nfs, true);
      const int io = bob_io.keep(1), s = sig.keep(1);
      std::uint8_t* r1 = c.ok ? c.map(true, file_len) : nullptr;
      std::uint8_t* r2 = c.ok ? c.map(true, file_len) : nullptr;
      if (r1 == nullptr || r2 == nullptr) return 10;
      std::atomic<int> v{-1};
      std::thread bob1([&] { v.store(*static_cast<volatile std::uint8_t*>(r1)); });  // faults: nfs serves
      wire_msg m;
      if (!wire_recv(s, m, nullptr, std::chrono::seconds(10))) return 11;  // bob1's fault is in service
      // bob2: read from io_pkt into an unserved page of the other nfs mapping.
      std::uint8_t* buf = r2 + 8 * vm_page_size;  // file page 8: not the page bob1 reads
      if (!wire_send(io, wire_msg{note, reinterpret_cast<std::uint64_t>(buf), vm_page_size, static_cast<std::uint64_t>(::getpid())}))
        return 12;
      if (!wire_recv(io, m, nullptr, std::chrono::seconds(3))) ::_exit(20);  // the lock-up (bob1 is stuck)
      if (m.a != vm_page_size || buf[0] != 'i' || buf[vm_page_size - 1] != 'i') return 13;
      bob1.join();
      return v.load() == pattern(0) ? 0 : 14;
    });
    REQUIRE(nfs > 0);
    REQUIRE(io_pkt > 0);
    REQUIRE(bob > 0);
    const int rc = exit_code(bob);
    if (single_lock) {
      CHECK(rc == 20);  // Colin's lock-up: bob2's read never came back
      ::kill(nfs, SIGKILL);
      ::kill(io_pkt, SIGKILL);
      (void)exit_code(nfs);
      (void)exit_code(io_pkt);
    } else {
      CHECK(rc == 0);  // default: every fault served, both reads complete
      CHECK(exit_code(io_pkt) == 0);
      ::kill(nfs, SIGKILL);
      (void)exit_code(nfs);
    }
  }
}

// A fill finds the client's memory map changing (EAGAIN: an UNMAP, REMAP or REMOVE event of another
// thread of the client is not read yet) and the retry of the page alone finds it too. The fault must be
// woken to fault again, not failed: a correct client whose one thread drops pages (MADV_DONTNEED)
// while another touches a mapping got SIGBUS when the poison that fail() sends came after the event.
TEST_CASE("served mappings: a fault racing another thread's munmap or madvise events is served, never SIGBUS") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(90, "faults racing events");
  vmtest::memfd_file f(file_len);
  test_support::wire_pair w;
  constexpr int rounds = 150;
  const pid_t pid = fork_client(w, false, [&](client_side& c) {
    std::uint8_t* sh = c.map(true, file_len);
    std::uint8_t* pr = c.map(false, file_len);
    if (sh == nullptr || pr == nullptr) return 11;
    std::atomic<int> bad{0};
    std::mutex wire;  // one request on the socket at a time
    auto churn = [&](std::uint8_t* m, int id) {
      for (int r = 0; r < rounds; ++r) {
        for (std::size_t pg = 0; pg < pages; ++pg)
          if (m[pg * vm_page_size + 7] != pattern(pg * vm_page_size + 7)) bad.store(id);
        if (::madvise(m, file_len, MADV_DONTNEED) != 0) bad.store(id + 10);  // a REMOVE event each round
        // and an UNMAP event: a fresh one-page mapping of the file, unmapped again
        std::uint8_t* one = nullptr;
        {
          std::lock_guard<std::mutex> g(wire);
          one = c.map(r % 2 == 0, vm_page_size);
        }
        if (one == nullptr || one[7] != pattern(7)) bad.store(id + 20);
        if (one != nullptr && c.sm.unmap(one, vm_page_size)) bad.store(id + 30);
      }
    };
    std::thread t1(churn, sh, 1), t2(churn, pr, 2);
    t1.join();
    t2.join();
    return bad.load() == 0 ? 0 : 40 + bad.load();
  });
  REQUIRE(pid > 0);
  const int sock = w.keep(0);
  server_source src(f.fd);
  server_side s(sock, f.fd, src);
  while (s.step()) s.last = {};
  const int rc = exit_code(pid);
  CHECK(rc == 0);  // -7: SIGBUS
  REQUIRE(s.pg);
  const auto st = s.pg->stats();
  MESSAGE("client exit " << rc << "; faults " << st.faults << ", pages mapped " << st.pages_mapped << ", events " << st.events
                          << ", woken to fault again " << st.retried << ", page-in errors " << st.page_in_errors);
  CHECK(st.pages_mapped >= 2u * rounds * pages);  // every page of both mappings, every round
  CHECK(st.page_in_errors == 0);
}

// Two unmaps of the two halves of one region, both waiting for its lock (a page-in in flight holds
// it): the first splits the region and links the other half as a new part; the second then finds the
// region dead and must look again for that part. It used not to (unless the part was still being
// linked): the part stayed tracked, a stale region that failed a later track of its addresses EEXIST.
TEST_CASE("served mappings: an unmap that finds its region split by another unmap meanwhile forgets the new part too") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(60, "unmaps racing on one region");
  vmtest::memfd_file f(file_len);
  test_support::wire_pair w;
  constexpr std::size_t n = 10;
  const pid_t pid = fork_client(w, false, [&](client_side& c) {
    std::uint8_t* m = c.map(true, n * vm_page_size);
    if (m == nullptr) return 11;
    if (!wire_send(c.sock, wire_msg{note, reinterpret_cast<std::uint64_t>(m), 0, 0})) return 12;
    return m[7] == pattern(7) ? 0 : 13;  // the page-in the server holds at its gate
  });
  REQUIRE(pid > 0);
  const int sock = w.keep(0);
  vmtest::gated_source src(f.fd);
  server_side s(sock, f.fd, src);
  int rounds = 0;
  while (s.step()) {
    if (s.last.op == note) {
      auto* m = reinterpret_cast<std::uint8_t*>(s.last.a);
      src.wait_entered();  // the fault's page-in holds the region's lock (shared) at the gate
      std::error_code e1, e2;
      std::thread a([&] { e1 = s.as->munmap(m, 3 * vm_page_size); });
      std::thread b([&] { e2 = s.as->munmap(m + 3 * vm_page_size, (n - 3) * vm_page_size); });
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // both have collected the region and wait for it
      src.open.store(true);
      a.join();
      b.join();
      CHECK(!e1);
      CHECK(!e2);
      CHECK(s.as->region_count() == 0);
      ++rounds;
    }
    s.last = {};
  }
  CHECK(rounds == 1);
  CHECK(exit_code(pid) == 0);  // its fault was served before either unmap got the region
}

TEST_CASE("served mappings: bad input is a clear error") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(30, "bad input");
  vmtest::memfd_file f(file_len);
  // Adopting something that is not a userfaultfd.
  CHECK_THROWS_AS(aspace(adopt_userfaultfd, -1, UFFD_FEATURE_THREAD_ID), std::system_error);
  try {
    aspace as(adopt_userfaultfd, ::dup(f.fd), UFFD_FEATURE_THREAD_ID);
    FAIL("a memfd was adopted as a userfaultfd");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::invalid_argument);
  }
  // try_track: only on an adopted aspace, and only for a sane mapping.
  memfd_page_source src(f.fd);
  aspace local;
  tracked_mapping t;
  t.addr = reinterpret_cast<void*>(std::uintptr_t{1} << 40);
  t.length = file_len;
  t.shared = true;
  t.file = file_backing{f.fd, 0, nullptr, &src};
  CHECK(local.try_track(t) == std::errc::invalid_argument);
  served_memory sm;
  aspace remote(adopt_userfaultfd, ::dup(sm.userfaultfd()), sm.features());
  CHECK(remote.remote());
  tracked_mapping bad = t;
  bad.addr = reinterpret_cast<void*>((std::uintptr_t{1} << 40) + 1);
  CHECK(remote.try_track(bad) == std::errc::invalid_argument);
  bad = t;
  bad.length = 0;
  CHECK(remote.try_track(bad) == std::errc::invalid_argument);
  bad = t;
  bad.file.reset();
  CHECK(remote.try_track(bad) == std::errc::invalid_argument);  // shared without a file
  bad = t;
  bad.file->source = nullptr;
  CHECK(remote.try_track(bad) == std::errc::invalid_argument);
  CHECK(!remote.try_track(t));
  CHECK(remote.region_count() == 1);
  void* out = nullptr;
  map_request anon;
  anon.length = file_len;
  CHECK(remote.try_map(anon, out) == std::errc::invalid_argument);  // it maps nothing itself
  // served_memory: map() needs the watch first; bad requests; one watch only; no such server.
  void* p = nullptr;
  CHECK(sm.map(served_map_request{file_len, PROT_READ, true, f.fd, 0}, p) == std::errc::not_connected);
  CHECK(!sm.watch_server(::getpid()));
  CHECK(sm.watch_server(::getpid()) == std::errc::device_or_resource_busy);
  CHECK(sm.map(served_map_request{0, PROT_READ, true, f.fd, 0}, p) == std::errc::invalid_argument);
  CHECK(sm.map(served_map_request{file_len, PROT_READ, true, -1, 0}, p) == std::errc::invalid_argument);
  CHECK(sm.map(served_map_request{file_len, PROT_READ, true, f.fd, 1}, p) == std::errc::invalid_argument);
  CHECK(sm.map(served_map_request{file_len, 0x100, false, -1, 0}, p) == std::errc::invalid_argument);
  CHECK(sm.unmap(reinterpret_cast<void*>(1), vm_page_size) == std::errc::invalid_argument);
  served_memory other;
  CHECK(other.watch_server(-5) != std::error_code{});
  // pager::fault_in: a range no region covers is EFAULT, nothing is poisoned; a mapped one is made present.
  pager pg(local);
  void* m = vmtest::map_file(local, f, src, true);
  CHECK(pg.fault_in(reinterpret_cast<void*>(std::uintptr_t{1} << 41), vm_page_size) == std::errc::bad_address);
  CHECK(!pg.fault_in(static_cast<char*>(m) + 5 * vm_page_size, 2 * vm_page_size));
  const auto before = pg.stats().faults;
  CHECK(static_cast<const volatile std::uint8_t*>(m)[5 * vm_page_size] == pattern(5 * vm_page_size));
  CHECK(pg.stats().faults == before);  // present: no fault was taken
  CHECK(pg.stats().page_in_errors == 0);
}
