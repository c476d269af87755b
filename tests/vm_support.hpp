// Shared helpers of the vm_* tests: skip when userfaultfd is refused, memfd files, a watchdog that
// fails the test instead of hanging, and probe reads that report SIGBUS/SIGSEGV instead of dying.
#pragma once

#include <doctest/doctest.h>
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

#include "faultsafe/vm/aspace.hpp"
#include "faultsafe/vm/pager.hpp"

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
inline std::uint8_t pattern(std::uint64_t i) { return static_cast<std::uint8_t>((i * 2654435761u) >> 13); }

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

/// Fails the test (exit 1) if not disarmed within `seconds`: a hang becomes a failure.
class watchdog {
 public:
  explicit watchdog(int seconds, const char* what) : what_(what) {
    t_ = std::thread([this, seconds] {
      std::unique_lock<std::mutex> l(m_);
      if (!cv_.wait_for(l, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "FAIL: watchdog: '%s' did not finish within %d s (lock-up)\n", what_, seconds);
        std::fflush(stderr);
        std::_Exit(1);
      }
    });
  }
  ~watchdog() {
    {
      std::lock_guard<std::mutex> l(m_);
      done_ = true;
    }
    cv_.notify_all();
    t_.join();
  }

 private:
  const char* what_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread t_;
};

// ---- probe reads: a signal during the access becomes a return value --------------------------------
inline thread_local sigjmp_buf* probe_jump = nullptr;
inline void probe_handler(int sig, siginfo_t*, void*) {
  if (probe_jump != nullptr) {
    sigjmp_buf* j = probe_jump;
    probe_jump = nullptr;
    siglongjmp(*j, sig);
  }
  signal(sig, SIG_DFL);  // not a probe: die as usual
}
// Installed on every probe: doctest replaces SIGSEGV/SIGBUS handlers at the start of each test case.
inline void install_probe_handlers() {
  struct sigaction sa {};
  sa.sa_sigaction = &probe_handler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

/// Reads *p. Returns 0 (value in out) or the signal that the access raised (SIGBUS/SIGSEGV).
inline int probe_read(const volatile std::uint8_t* p, std::uint8_t& out) {
  install_probe_handlers();
  sigjmp_buf jb;
  const int sig = sigsetjmp(jb, 1);
  if (sig != 0) return sig;
  probe_jump = &jb;
  out = *p;
  probe_jump = nullptr;
  return 0;
}

/// Writes *p = v. Returns 0 or the signal raised.
inline int probe_write(volatile std::uint8_t* p, std::uint8_t v) {
  install_probe_handlers();
  sigjmp_buf jb;
  const int sig = sigsetjmp(jb, 1);
  if (sig != 0) return sig;
  probe_jump = &jb;
  *p = v;
  probe_jump = nullptr;
  return 0;
}

}  // namespace vmtest
