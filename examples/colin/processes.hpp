// colin --processes: Colin's lock-up with bob, nfs and io_pkt as three OS processes (included by main.cpp).
//
// nfs's pager serves Bob's two MAP_SHARED mappings of an nfs file (served_memory: a userfaultfd of Bob's
// that takes kernel-mode faults, handed to nfs); its page-in reads io_pkt. The seed's order, every run:
//   bob1 touches its first mapping -> nfs's pager thread serves the fault (in single_lock mode: holding
//   the lock of Bob's WHOLE address space) and its page-in asks io_pkt; meanwhile bob2 has asked io_pkt to
//   read into an unserved page of Bob's second nfs mapping, and io_pkt's single thread is copying it there
//   with process_vm_writev: a kernel-mode fault that nfs's pager must serve. io_pkt answers nfs only after
//   bob2's read is done.
//   --naive --processes      single_lock (the seed's QNX proc; a pager with one thread for the whole space
//                            is the same shape): the second fault waits for Bob's address-space lock, held
//                            by the first fault's service, which waits for io_pkt, which waits for the
//                            second fault. The cycle spans three processes, so no one process's wait-for
//                            graph sees it; nfs's page-in gives up after 2 s (a bounded wait: ETIMEDOUT), the
//                            fault fails (bob1 gets SIGBUS) and everything unwinds. Exit 0 when the lock-up
//                            held bob2's read for the whole bounded wait and bob1 got SIGBUS.
//   --faultsafe --processes  per-region locks (the default): the second fault is served at once; both reads
//                            complete; bob1's and bob2's bytes verified. Exit 0 then.
#pragma once

#include <setjmp.h>
#include <signal.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "faultsafe/vm/served_memory.hpp"

#include "../../tests/support/served_session.hpp"

namespace colin_processes {

using namespace faultsafe;
using test_support::wire_msg;
using test_support::wire_recv;
using test_support::wire_send;

enum op : std::uint32_t { in_service = test_support::served_user, read_req, ack };
constexpr std::size_t len = 16 * vm_page_size;
constexpr auto nfs_patience = std::chrono::seconds(2);

// nfs's page-in of Bob's file: the first one (bob1's fault) tells Bob it is in service, then reads io_pkt.
struct nfs_source final : page_source {
  nfs_source(int memfd, int io, int bob) : inner(memfd), io(io), bob(bob) {}
  std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    if (first.exchange(false)) {
      (void)wire_send(bob, wire_msg{in_service, 0, 0, 0});
      wire_msg m;
      if (!wire_send(io, wire_msg{read_req, req.offset, req.length, 0}) || !wire_recv(io, m, nullptr, nfs_patience)) {
        std::printf("  nfs: the page-in for bob1's fault waited %lld s for io_pkt: giving up (ETIMEDOUT), the fault fails\n",
                    static_cast<long long>(nfs_patience.count()));
        return std::make_error_code(std::errc::timed_out);
      }
    }
    return inner.page_in(req, out);
  }
  [[nodiscard]] std::string describe() const override { return "nfs:/nfs/a"; }
  memfd_page_source inner;
  int io, bob;
  std::atomic<bool> first{true};
};

int nfs_main(int bob, int sig, int io, int memfd, bool single_lock) {
  nfs_source src(memfd, io, sig);
  test_support::server_side s(bob, memfd, src, pager_options{.name = "nfs-pager"},
                             aspace_options{.single_lock = single_lock, .name = "Bob"});
  while (s.step()) {
  }
  return 0;
}

// io_pkt: ONE thread; bob2's read first (into Bob's memory, process_vm_writev), then nfs's.
int io_pkt_main(int bob, int nfs) {
  wire_msg m;
  if (!wire_recv(bob, m, nullptr, std::chrono::seconds(20))) return 1;
  std::vector<char> data(m.b, 'i');
  iovec l{data.data(), data.size()}, r{reinterpret_cast<void*>(m.a), data.size()};
  const ssize_t n = ::process_vm_writev(static_cast<pid_t>(m.c), &l, 1, &r, 1, 0);
  (void)wire_send(bob, wire_msg{ack, static_cast<std::uint64_t>(n), 0, 0});
  if (wire_recv(nfs, m, nullptr, std::chrono::seconds(20))) (void)wire_send(nfs, wire_msg{ack, 0, 0, 0});
  return 0;
}

thread_local sigjmp_buf* bus_jump = nullptr;
inline void on_sigbus(int sig) {
  if (bus_jump != nullptr) siglongjmp(*bus_jump, sig);
  ::signal(sig, SIG_DFL);
}

int run(bool naive) {
  std::printf("colin --processes %s: bob, nfs and io_pkt are three OS processes; %s\n", naive ? "--naive" : "--faultsafe",
              naive ? "ONE lock for Bob's whole address space in nfs's pager (single_lock), io_pkt single-threaded"
                    : "per-region locks (the default), io_pkt single-threaded");
  try {
    served_memory probe(served_memory_options{true});
  } catch (const std::system_error& e) {
    std::printf("RESULT: skipped: io_pkt's access must be a kernel-mode fault: %s\n", e.what());
    return 77;
  }
  const int memfd = ::memfd_create("nfs-a", MFD_CLOEXEC);
  std::vector<char> bytes(len, 'n');
  if (memfd < 0 || ::pwrite(memfd, bytes.data(), len, 0) != static_cast<ssize_t>(len)) return 1;
  test_support::wire_pair bob_nfs, bob_io, nfs_io, sig;
  const pid_t nfs = ::fork();
  if (nfs == 0) ::_exit(nfs_main(bob_nfs.keep(0), sig.keep(0), nfs_io.keep(0), memfd, naive));
  const pid_t io_pkt = ::fork();
  if (io_pkt == 0) ::_exit(io_pkt_main(bob_io.keep(0), nfs_io.keep(1)));
  // Bob: this process.
  const int to_nfs = bob_nfs.keep(1), to_io = bob_io.keep(1), from_nfs = sig.keep(1);
  bool ok = false;
  std::string result;
  {
    test_support::client_side c(to_nfs, nfs, true);
    wire_msg m;
    std::uint8_t* r[2] = {c.ok ? c.map(true, len) : nullptr, c.ok ? c.map(true, len) : nullptr};
    const bool mapped = r[0] != nullptr && r[1] != nullptr;
    if (mapped) {
      std::atomic<int> bob1_got{-1};  // the byte, or -SIGBUS
      ::signal(SIGBUS, on_sigbus);
      std::thread bob1([&] {
        sigjmp_buf jb;
        if (sigsetjmp(jb, 1) != 0) {  // the fault failed: SIGBUS at the access
          bob1_got.store(-SIGBUS);
          return;
        }
        bus_jump = &jb;
        const int v = *static_cast<volatile std::uint8_t*>(r[0]);
        bus_jump = nullptr;
        bob1_got.store(v);
      });
      std::printf("  bob1 touched its nfs mapping: nfs's pager serves the fault, its page-in reads io_pkt\n");
      const auto t0 = std::chrono::steady_clock::now();
      std::uint8_t* buf = r[1] + 8 * vm_page_size;  // file page 8: not the page bob1 reads
      const bool asked = wire_recv(from_nfs, m, nullptr, std::chrono::seconds(10)) &&
                         wire_send(to_io, wire_msg{read_req, reinterpret_cast<std::uint64_t>(buf), vm_page_size,
                                                   static_cast<std::uint64_t>(::getpid())});
      std::printf("  bob2 asked io_pkt to read into its other nfs mapping: io_pkt's copy faults there\n");
      const bool replied = asked && wire_recv(to_io, m, nullptr, std::chrono::seconds(10));
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      bob1.join();
      const bool bob2_ok = replied && m.a == vm_page_size && buf[0] == 'i' && buf[vm_page_size - 1] == 'i';
      std::printf("  bob2's read returned after %.1f ms (%s); bob1's access: %s\n", ms, bob2_ok ? "data verified" : "FAILED",
                  bob1_got.load() == -SIGBUS ? "SIGBUS" : bob1_got.load() == 'n' ? "data verified" : "WRONG");
      const double patience_ms = std::chrono::duration<double, std::milli>(nfs_patience).count();
      if (naive) {
        ok = bob2_ok && bob1_got.load() == -SIGBUS && ms >= patience_ms * 0.9;
        result = ok ? "lock-up across three processes: bob2's read held " + std::to_string(static_cast<int>(ms + 0.5)) +
                          " ms until nfs's bounded page-in gave up (no one process's wait graph sees the cycle); bob1 got SIGBUS"
                    : "lock-up NOT shown (FAIL)";
      } else {
        ok = bob2_ok && bob1_got.load() == 'n';
        result = ok ? "completed in " + std::to_string(static_cast<int>(ms + 0.5)) + " ms, bob1 and bob2 verified" : "FAILED";
      }
    } else {
      result = "set-up failed";
    }
    (void)wire_send(to_nfs, wire_msg{test_support::served_done, 0, 0, 0});
    ::close(to_io);
    ::close(from_nfs);
    bool timed_out = false;
    ::kill(nfs, SIGTERM);
    (void)test_support::wait_child(io_pkt, timed_out, std::chrono::seconds(5));
    (void)test_support::wait_child(nfs, timed_out, std::chrono::seconds(5));
  }
  if (ok) std::printf("  %s\n", naive ? "bob's your uncle: the kernel's secured only by the bounded wait." : "All right, the kernel's secured.");
  std::printf("RESULT: processes %s: %s\n", naive ? "naive" : "faultsafe", result.c_str());
  return ok ? 0 : 1;
}

}  // namespace colin_processes
