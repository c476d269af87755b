// Test support for every test that installs SIGBUS/SIGSEGV handlers: a signal that arrives outside
// an expected access fails the test. A fault the kernel raised at an access has si_code > 0; a
// signal sent by a process (kill, tgkill, sigqueue: si_code SI_USER, SI_TKILL, SI_QUEUE <= 0, e.g. a
// late tgkill(SIGBUS) from this very process) is never an expected access, so the handlers below
// report it (si_code, si_pid, si_addr) and _exit(1) at once, even during a probe or a guarded copy
// (where it would otherwise pass for the expected fault).
// Everything here is async-signal-safe (no allocation, one write(2)).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include <faultsafe/detail/guarded_copy.hpp>

namespace test_support {

/// Prints "FAIL: stray signal <sig> (<why>): si_code .. si_pid .. (self ..) si_addr 0x.." to stderr.
/// Async-signal-safe: formats into a stack buffer, one write(2).
inline void report_stray_signal(int sig, const siginfo_t* si, const char* why) {
  char buf[256];
  std::size_t n = 0;
  const auto put = [&](const char* s) {
    while (*s != '\0' && n < sizeof buf - 1) buf[n++] = *s++;
  };
  const auto num = [&](unsigned long long v, unsigned base) {
    char d[24];
    int k = 0;
    do {
      d[k++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v != 0 && k < 24);
    while (k > 0 && n < sizeof buf - 1) buf[n++] = d[--k];
  };
  put("FAIL: stray signal ");
  num(static_cast<unsigned>(sig), 10);
  put(" (");
  put(why);
  put("): si_code ");
  if (si->si_code < 0) put("-");
  num(static_cast<unsigned>(si->si_code < 0 ? -si->si_code : si->si_code), 10);
  put(" si_pid ");
  num(static_cast<unsigned>(si->si_pid), 10);
  put(" (self ");
  num(static_cast<unsigned>(::getpid()), 10);
  put(") si_addr 0x");
  num(reinterpret_cast<std::uintptr_t>(si->si_addr), 16);
  put("\n");
  (void)!::write(2, buf, n);
}

/// True if `si` is a fault the kernel raised at an access (not a signal sent by a process).
inline bool signal_from_fault(const siginfo_t* si) noexcept { return si->si_code > 0; }

/// In a handler: a signal sent by a process (not a fault) is reported and fails the test (exit 1).
inline void fail_on_sent_signal(int sig, const siginfo_t* si, const char* why = "sent by a process") {
  if (signal_from_fault(si)) return;
  report_stray_signal(sig, si, why);
  ::_exit(1);
}

/// faultsafe's guarded-copy handler (detail/guarded_copy.hpp) behind the stray check: install it where
/// a test expects guarded copies to fault (server copies of bad client buffers).
inline void screened_guarded_copy_signal(int sig, siginfo_t* si, void* uc) {
  fail_on_sent_signal(sig, si, "sent by a process, not a fault of a guarded copy");
  faultsafe::detail::guarded_copy_signal(sig, si, uc);
}

/// Installs screened_guarded_copy_signal for `sig` (after faultsafe's own installation, which keeps
/// the previous action to chain to); the replaced action goes to `old` if given. doctest replaces the
/// SIGSEGV/SIGBUS handlers at the start of each test case, so call it in the test case.
inline void install_screened_guarded_copy_handler(int sig, struct sigaction* old = nullptr) {
  faultsafe::detail::install_guarded_copy_handler();
  struct sigaction sa {};
  sa.sa_sigaction = &screened_guarded_copy_signal;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, old);
}

}  // namespace test_support
