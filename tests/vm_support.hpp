// Shared helpers of the vm_* tests: skip when userfaultfd is refused, memfd files, a watchdog that
// fails the test instead of hanging, and probe accesses that report SIGBUS/SIGSEGV instead of dying
// and fail the test on a stray signal (one that is not the kernel's fault at the probed access).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/pattern.hpp"
#include "faultsafe/vm/aspace.hpp"
#include "faultsafe/vm/detail/pagemap.hpp"
#include "faultsafe/vm/page_source.hpp"
#include "faultsafe/vm/pager.hpp"
#include "support/signals.hpp"
#include "support/sync.hpp"

namespace vmtest {

/// Exits 77 (CTest: skipped) with the reason when the kernel refuses userfaultfd.
inline void require_userfaultfd() {
  static const bool ok = [] {
    std::string why;
    if (auto ec = faultsafe::probe_userfaultfd(why)) {
      std::fprintf(stderr, "SKIP: %s (%s)\n", why.c_str(), ec.message().c_str());
      std::fflush(stderr);
      std::_Exit(77);
    }
    return true;
  }();
  (void)ok;
}

/// A memfd of `size` bytes whose byte at offset i is pattern(i).
using test_support::pattern;

struct memfd_file {
  explicit memfd_file(std::size_t size, bool fill = true) : size(size) {
    fd = ::memfd_create("vmtest", MFD_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
    if (fill) {
      std::string chunk(1 << 16, '\0');
      for (std::size_t off = 0; off < size; off += chunk.size()) {
        const std::size_t n = std::min(chunk.size(), size - off);
        for (std::size_t i = 0; i < n; ++i) chunk[i] = static_cast<char>(pattern(off + i));
        REQUIRE(::pwrite(fd, chunk.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n));
      }
    }
  }
  ~memfd_file() { ::close(fd); }
  std::uint8_t read_byte(std::uint64_t off) const {
    std::uint8_t b = 0;
    REQUIRE(::pread(fd, &b, 1, static_cast<off_t>(off)) == 1);
    return b;
  }
  int fd = -1;
  std::size_t size;
};

/// Maps all of `f` (protection `prot`) through `as`, paged in by `src`, shared or private. Throws as
/// aspace::map.
// Which of the n pages from p have a page-table entry in this process: vec[i] = 1 or 0 (not mincore:
// vm/detail/pagemap.hpp says why).
inline void mapped_pages(const void* p, std::size_t n, unsigned char* vec) {
  REQUIRE(::access("/proc/self/pagemap", R_OK) == 0);
  faultsafe::detail::mapped_pages(reinterpret_cast<std::uintptr_t>(p), n, vec);
}

inline void* map_file(faultsafe::aspace& as, const memfd_file& f, faultsafe::page_source& src, bool shared,
                      int prot = PROT_READ) {
  faultsafe::map_request rq;
  rq.length = f.size;
  rq.prot = prot;
  rq.shared = shared;
  rq.file = faultsafe::file_backing{f.fd, 0, &f, &src};
  return as.map(rq);
}

/// Fails the test (exit 1) if not disarmed within `seconds`: a hang becomes a failure
/// (tests/support/sync.hpp's watchdog, with the vm tests' argument order).
struct watchdog : test_support::watchdog {
  watchdog(int seconds, const char* what) : test_support::watchdog(what, std::chrono::seconds(seconds)) {}
};

// ---- probe accesses: a signal during the access becomes a return value --------------------------------
// Every signal the probe handler sees is checked: a SIGBUS/SIGSEGV is expected only from the kernel
// (si_code > 0), during a probe, at the probed page. Anything else is a stray signal: a
// tgkill/kill/sigqueue (si_code <= 0, e.g. SI_TKILL or SI_USER from this process) or a fault at
// another address while probing; the test process then fails at once (exit 1, with the signal's
// si_code, si_pid and si_addr printed; the check is support/signals.hpp's, shared by every test that
// installs SIGBUS/SIGSEGV handlers). A kernel fault outside any probe is a real crash: the default
// action runs (core dump, sanitizer report), unless probe_outside says otherwise.
inline thread_local sigjmp_buf* probe_jump = nullptr;
inline thread_local std::uintptr_t probe_page = 0;

using test_support::report_stray_signal;

/// What the probe handler does with a kernel fault outside any probe: nullptr (default) restores
/// SIG_DFL, so the retried access dies as usual; a test whose server threads take faults in guarded
/// copies sets faultsafe's guarded-copy handler here (it chains the rest to the previous action).
inline void (*probe_outside)(int, siginfo_t*, void*) = nullptr;

inline void probe_handler(int sig, siginfo_t* si, void* uc) {
  const std::uintptr_t page = reinterpret_cast<std::uintptr_t>(si->si_addr) & ~std::uintptr_t{4095};
  test_support::fail_on_sent_signal(sig, si, probe_jump != nullptr ? "sent by a process, during a probe" : "sent by a process");
  if (probe_jump != nullptr) {
    if (page != probe_page) {
      report_stray_signal(sig, si, "fault at another address than the probed one");
      ::_exit(1);
    }
    sigjmp_buf* j = probe_jump;
    probe_jump = nullptr;
    siglongjmp(*j, sig);
  }
  if (probe_outside != nullptr) return probe_outside(sig, si, uc);
  signal(sig, SIG_DFL);  // a real fault outside a probe: die as usual when the access is retried
}
// Installed on every probe: doctest replaces SIGSEGV/SIGBUS handlers at the start of each test case.
inline void install_probe_handlers() {
  if (probe_outside != nullptr) faultsafe::detail::install_guarded_copy_handler();  // keeps doctest's to chain to
  struct sigaction sa {};
  sa.sa_sigaction = &probe_handler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

// The access is volatile and fenced: the compiler may neither drop it nor move it (or the stores
// that arm and disarm the handler) across the fences, so the fault happens while probe_jump is set,
// also at -O2.
template <class Access>
inline int probe_access(const volatile void* p, Access access) {
  install_probe_handlers();
  sigjmp_buf jb;
  const int sig = sigsetjmp(jb, 1);
  if (sig != 0) return sig;
  probe_page = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{4095};
  probe_jump = &jb;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  access();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  probe_jump = nullptr;
  return 0;
}

/// Reads *p. Returns 0 (value in out) or the signal that the access raised (SIGBUS/SIGSEGV).
inline int probe_read(const volatile std::uint8_t* p, std::uint8_t& out) {
  return probe_access(p, [&] { out = *p; });
}

// The load of probe_read_racy, outside ThreadSanitizer (never inlined into instrumented code).
__attribute__((no_sanitize("thread"))) inline void racy_load(const volatile std::uint8_t* p, std::uint8_t& out) {
  out = *p;
}

/// probe_read of memory that other threads map and unmap under the reader (stress tests, which check
/// the data themselves): TSan models mmap as a write of the range and would report that by-design race.
inline int probe_read_racy(const volatile std::uint8_t* p, std::uint8_t& out) {
  return probe_access(p, [&] { racy_load(p, out); });
}

/// Writes *p = v. Returns 0 or the signal raised.
inline int probe_write(volatile std::uint8_t* p, std::uint8_t v) {
  return probe_access(p, [&] { *p = v; });
}

/// A page source over a memfd that records every request and holds page-ins until `open`: the first
/// one only, or every one when `gate_all`. The pager threads poll `open` (the test's watchdog bounds
/// the wait). Thread-safety: page_in() from any thread; `seen` under `m`.
struct gated_source final : faultsafe::page_source {
  faultsafe::memfd_page_source inner;
  std::atomic<int> entered{0};
  std::atomic<bool> open{false};
  std::atomic<bool> gate_all{false};
  std::mutex m;
  std::vector<faultsafe::page_in_request> seen;
  explicit gated_source(int fd, bool gate_every_page_in = false) : inner(fd) { gate_all = gate_every_page_in; }
  std::error_code page_in(const faultsafe::page_in_request& req, faultsafe::page_in_result& out) override {
    {
      std::lock_guard<std::mutex> g(m);
      seen.push_back(req);
    }
    if (entered.fetch_add(1) == 0 || gate_all.load())
      while (!open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return inner.page_in(req, out);
  }
  /// Waits until `n` page-ins have entered.
  void wait_entered(int n = 1) {
    while (entered.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
};

}  // namespace vmtest
