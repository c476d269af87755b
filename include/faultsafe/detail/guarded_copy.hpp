// faultsafe/detail/guarded_copy.hpp: copy to or from client memory without dying on a bad page
// (internal), and the process-wide SIGBUS/SIGSEGV handler that makes it work.
//
// A server copies reply data straight into a client's buffer (MsgReply/MsgWrite semantics), so the copy
// can fault: the page may be served by the pager, poisoned after a failed page-in (SIGBUS), or not mapped
// at all (SIGSEGV). guarded_memcpy() turns such a signal into EFAULT for the copy, the way the kernel's
// copy_to_user fixups do, so one bad client cannot kill its server. guarded_copy_prefix() is the
// copy_from_user / copy_to_user flavour: it copies front to back and says how many bytes it copied
// before the fault (a read's or a write's short count).
//
// The handler (installed on first use; SA_SIGINFO | SA_NODEFER | SA_ONSTACK) siglongjmp()s back into
// the copy when the faulting thread is inside a guarded copy. Any other SIGBUS/SIGSEGV is CHAINED to the
// action that was installed before faultsafe's (as libsigsegv and the JVM's signal chaining do), and
// faultsafe's handler stays installed:
//   - an SA_SIGINFO handler is called with (sig, info, ucontext), a plain one with (sig); while it runs
//     its sa_mask is blocked, plus the signal itself unless it has SA_NODEFER (as the kernel would);
//     SA_RESETHAND makes it one-shot: later signals chain to SIG_DFL. When it returns, faultsafe's
//     handler returns (a fault is re-executed); it may also siglongjmp() out, as it would if alone;
//   - SIG_DFL: the default action (terminate with a core dump) is taken at once: the disposition is
//     reset to SIG_DFL, the signal unblocked and re-raised;
//   - SIG_IGN: a signal sent by a process (si_code <= 0: kill, raise, sigqueue) is ignored; a fault
//     raised by the kernel cannot be ignored (the kernel would kill the process), so it is SIG_DFL.
// A program that installs its own SIGBUS/SIGSEGV handler AFTER faultsafe's (faultsafe installs on the
// first guarded copy, e.g. the first server reply) sees every such signal first, guarded-copy faults
// included. It must either chain to the action sigaction() returned as the old one (a well-behaved
// handler does: for a guarded-copy fault that call does not return), or call
// faultsafe::reinstall_guarded_copy_handler() after installing its own, which puts faultsafe's handler
// back in front and chains to the program's. Otherwise a server copy from or into a bad client buffer
// reaches the program's handler instead of becoming EFAULT.
//
// Thread-safety: any thread; the "inside a guarded copy" mark is thread_local. Async-signal-safety: the
// handler touches only thread_local state, lock-free atomics, sigaction, pthread_sigmask and raise.
// reinstall_guarded_copy_handler() must not run concurrently with a chained signal on another thread
// that it replaces the target of (the chained action is double-buffered, not locked). Lock order: none
// taken by copies and the handler; the installers take one leaf mutex. Memory ordering: (1)/(2) publish
// the chained action's slot; its `spent` flag is relaxed (written and read by the signal path of the
// thread that takes the signal, under the slot already published).
#pragma once

#include <pthread.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <system_error>

#include "../order/ranked_mutex.hpp"

namespace faultsafe::detail {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FAULTSAFE_DETAIL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FAULTSAFE_DETAIL_SANITIZED 1
#endif
#endif

/// Effects: copies n bytes from s to d, front to back (the buffers must not overlap). On x86-64 CPUs
/// with ERMS (enhanced REP MOVSB, CPUID.7.0:EBX bit 9), a copy of at least 1 KiB is one `rep movsb`:
/// its whole-line stores take each destination line without reading it first (no read-for-ownership),
/// so a destination that another core read last (a client's buffer, a shared slot the client copies
/// out of) is only invalidated there, not pulled across to be overwritten. glibc's memcpy switches to
/// `rep movsb` only from 8 KiB up on AVX-512 machines. Measured (bench_remote, a 4 KiB pread from
/// another process, the server's copy into the shared slot; 2026-12-04, quiet 2-vCPU AMD EPYC VM,
/// 10 runs alternated with the memcpy binary): median 610 -> 560 ns a round trip. Elsewhere, below 1 KiB and under ASan/TSan (which do not see
/// the instruction's accesses): memcpy. Complexity: O(n). Throws: nothing.
inline void copy_forward(unsigned char* d, const unsigned char* s, std::size_t n) noexcept {
#if defined(__x86_64__) && !defined(FAULTSAFE_DETAIL_SANITIZED)
  static const bool erms = [] {
    unsigned a = 0, b = 0, c = 0, dx = 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &dx) != 0 && (b & (1u << 9)) != 0;
  }();
  if (n >= 1024 && erms) {
    asm volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return;
  }
#endif
  std::memcpy(d, s, n);
}

struct guarded_copy_state {
  sigjmp_buf* jump = nullptr;
};
inline guarded_copy_state& this_thread_guard() noexcept {
  thread_local guarded_copy_state s;
  return s;
}

// The action a signal chains to. Double-buffered: the installer writes the slot not in use and then
// publishes it with (1) release, pairing with the handler's (2) acquire. `spent`: an SA_RESETHAND
// action ran once, later signals take SIG_DFL.
struct chained_action {
  struct chain_slot {
    struct sigaction act {};
    std::atomic<bool> spent{false};
  };
  chain_slot slot[2];
  std::atomic<int> current{0};
  [[nodiscard]] chain_slot& get() noexcept { return slot[current.load(std::memory_order_acquire)]; }  // (2)
  void set(const struct sigaction& a) noexcept {
    const int next = 1 - current.load(std::memory_order_relaxed);
    slot[next].act = a;
    slot[next].spent.store(false, std::memory_order_relaxed);
    current.store(next, std::memory_order_release);  // (1) release, pairs with (2)
  }
};
struct chained_fault_actions {
  chained_action bus, segv;
  ranked_mutex<rank::leaf> installer{"guarded-copy installer"};  // leaf: serialises the installers
  [[nodiscard]] chained_action& of(int sig) noexcept { return sig == SIGBUS ? bus : segv; }
};
inline chained_fault_actions& fault_actions() noexcept {
  static chained_fault_actions p;
  return p;
}

inline void guarded_copy_signal(int sig, siginfo_t* info, void* uc);

// The default action, now: reset to SIG_DFL, unblock and re-raise (terminates with a core dump). If
// the process survives (it cannot for SIGBUS/SIGSEGV), faultsafe's handler is put back.
inline void take_default_action(int sig) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  struct sigaction ours {};
  sigaction(sig, &dfl, &ours);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, sig);
  pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
  raise(sig);
  if (ours.sa_sigaction == &guarded_copy_signal) sigaction(sig, &ours, nullptr);
}

// Effects: delivers (sig, info, uc) to the chained action (see the header comment).
inline void chain_fault_signal(int sig, siginfo_t* info, void* uc) noexcept {
  chained_action::chain_slot& c = fault_actions().of(sig).get();
  const struct sigaction& a = c.act;
  const bool siginfo = (a.sa_flags & SA_SIGINFO) != 0;
  const bool ours = siginfo && a.sa_sigaction == &guarded_copy_signal;
  if (ours || c.spent.load(std::memory_order_relaxed) || (!siginfo && a.sa_handler == SIG_DFL)) {
    take_default_action(sig);
    return;
  }
  if (!siginfo && a.sa_handler == SIG_IGN) {
    if (info != nullptr && info->si_code <= 0) return;  // sent by a process: ignored
    take_default_action(sig);                           // a fault cannot be ignored
    return;
  }
  if (a.sa_flags & SA_RESETHAND) c.spent.store(true, std::memory_order_relaxed);
  // The mask the kernel would give it: the mask when the signal arrived (which had `sig` unblocked: a
  // blocked fault kills, a blocked sent signal is not delivered; a sanitizer's wrapper around our
  // handler may have blocked it since), plus its sa_mask, plus `sig` unless SA_NODEFER.
  sigset_t mask, old;
  pthread_sigmask(SIG_BLOCK, nullptr, &old);
  mask = old;
  sigdelset(&mask, sig);
  for (int s = 1; s < NSIG; ++s)
    if (sigismember(&a.sa_mask, s) == 1) sigaddset(&mask, s);
  if (!(a.sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
  pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  if (siginfo)
    a.sa_sigaction(sig, info, uc);
  else
    a.sa_handler(sig);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

inline void guarded_copy_signal(int sig, siginfo_t* info, void* uc) {
  guarded_copy_state& s = this_thread_guard();
  if (s.jump != nullptr) {
    sigjmp_buf* j = s.jump;
    s.jump = nullptr;
    siglongjmp(*j, sig);
  }
  chain_fault_signal(sig, info, uc);
}

// Effects: for SIGBUS and SIGSEGV, unless faultsafe's handler is already the installed one, installs it
// and chains to the action it replaces. Requires: the installer mutex held.
inline void install_guarded_copy_handler_locked() noexcept {
  struct sigaction sa {};
  sa.sa_sigaction = &guarded_copy_signal;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGBUS, SIGSEGV}) {
    struct sigaction cur {};
    sigaction(sig, nullptr, &cur);
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == &guarded_copy_signal) continue;
    fault_actions().of(sig).set(cur);
    sigaction(sig, &sa, nullptr);
  }
}

/// Effects: installs the guarded-copy handler once per process (chaining to the actions found).
/// Thread-safety: any thread. Complexity: O(1) after the first call.
inline void install_guarded_copy_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    exclusive_guard g(fault_actions().installer);
    install_guarded_copy_handler_locked();
  });
}

// The fault path of a guarded copy (sigsetjmp without a saved mask, see guarded_memcpy): SIGBUS and
// SIGSEGV unblocked again.
inline void unblock_fault_signals() noexcept {
  sigset_t faults;
  sigemptyset(&faults);
  sigaddset(&faults, SIGBUS);
  sigaddset(&faults, SIGSEGV);
  pthread_sigmask(SIG_UNBLOCK, &faults, nullptr);
}

/// Effects: copies n bytes from src to dst (memmove semantics). If an access raises SIGBUS or SIGSEGV,
/// the copy stops and EFAULT is returned; which bytes were copied then is unspecified (memmove copies
/// in no particular order). Complexity: O(n). Throws: nothing.
[[nodiscard]] inline std::error_code guarded_memcpy(void* dst, const void* src, std::size_t n) noexcept {
  if (n == 0) return {};
  install_guarded_copy_handler();
  sigjmp_buf jb;
  guarded_copy_state& s = this_thread_guard();
  // savemask 0: saving the mask costs an rt_sigprocmask system call on every copy (several times a
  // 4 KiB memcpy). Instead the rare fault path unblocks SIGBUS/SIGSEGV itself: our
  // handler runs with SA_NODEFER, but a wrapper around it (a sanitizer's) may have blocked the signal,
  // and a later fault with the signal blocked would kill the process. A faulting access can only have
  // reached us with both unblocked, so unblocking restores the mask of this call.
  if (sigsetjmp(jb, 0) != 0) {
    s.jump = nullptr;
    unblock_fault_signals();
    return std::make_error_code(std::errc::bad_address);
  }
  s.jump = &jb;
  std::memmove(dst, src, n);
  s.jump = nullptr;
  return {};
}

// The copy loop of guarded_copy_prefix. A separate function that takes everything it needs as
// arguments and uses none of them on the siglongjmp path (GCC's -Wclobbered: a register-held argument
// used after sigsetjmp returns a second time may be stale), so the fault path reads only `done`
// (volatile) and writes `faulted` through its reference.
[[gnu::noinline]] inline std::size_t guarded_copy_pieces(unsigned char* d, const unsigned char* from,
                                                         std::size_t n, bool& faulted) noexcept {
  constexpr std::uintptr_t page = 4096;
  sigjmp_buf jb;
  guarded_copy_state& s = this_thread_guard();
  volatile std::size_t done = 0;  // read after siglongjmp: volatile
  if (sigsetjmp(jb, 0) != 0) {     // savemask 0: see guarded_memcpy
    s.jump = nullptr;
    unblock_fault_signals();
    faulted = true;
    return done;
  }
  s.jump = &jb;
  std::size_t at = 0;
  while (at < n) {
    const auto sa = reinterpret_cast<std::uintptr_t>(from + at);
    const auto da = reinterpret_cast<std::uintptr_t>(d + at);
    // To the end of a source page or of a destination page, whichever comes first.
    std::size_t piece = static_cast<std::size_t>(std::min(page - (sa & (page - 1)), page - (da & (page - 1))));
    if (piece > n - at) piece = n - at;
    copy_forward(d + at, from + at, piece);
    at += piece;
    done = at;
  }
  s.jump = nullptr;
  return n;
}

/// Effects: tells whether every page of [p, p + n) can be written now: one atomic no-op write (lock or
/// of 0 into a byte: the value cannot change, even under a concurrent writer) per page, guarded like a
/// copy, so a page that is unmapped, read-only or beyond a file's end (SIGSEGV, SIGBUS) answers false
/// instead of killing the process. A page that needs a fault to become writable (not yet touched, a
/// MAP_PRIVATE page to copy) takes that fault now, as a copy into it would. The answer may be stale by
/// the time the caller uses the pages (another thread may unmap them). Requires: n > 0. Complexity: one
/// locked instruction per page, one sigsetjmp. Throws: nothing.
[[gnu::noinline]] inline bool probe_writable(void* p, std::size_t n) noexcept {
  install_guarded_copy_handler();
  constexpr std::uintptr_t page = 4096;
  sigjmp_buf jb;
  guarded_copy_state& s = this_thread_guard();
  if (sigsetjmp(jb, 0) != 0) {  // savemask 0: see guarded_memcpy
    s.jump = nullptr;
    unblock_fault_signals();
    return false;
  }
  s.jump = &jb;
  const auto end = reinterpret_cast<std::uintptr_t>(p) + n;
  for (auto a = reinterpret_cast<std::uintptr_t>(p); a < end; a = (a | (page - 1)) + 1)
    (void)__atomic_fetch_or(reinterpret_cast<unsigned char*>(a), static_cast<unsigned char>(0), __ATOMIC_RELAXED);
  s.jump = nullptr;
  return true;
}

/// Effects: copies n bytes from src to dst front to back, in pieces that never cross a page of src or
/// of dst, and stops at the first piece whose read or write raises SIGBUS or SIGSEGV (copy_from_user /
/// copy_to_user: the kernel's write(2) and read(2) semantics, a short count at a bad page of either
/// side). Afterwards [dst, dst + returned) holds the source bytes; nothing at or past dst + returned was
/// written unless the fault was on dst (a page is readable and writable as a whole; only a page
/// unmapped during the copy can leave part of its piece written). Returns: the bytes copied (n unless
/// a fault; *ec = EFAULT then, else cleared). Requires: the buffers do not overlap. Complexity: O(n),
/// at most two memcpy per page, one sigsetjmp. Throws: nothing.
[[nodiscard]] inline std::size_t guarded_copy_prefix(void* dst, const void* src, std::size_t n,
                                                     std::error_code* ec = nullptr) noexcept {
  if (ec != nullptr) ec->clear();
  if (n == 0) return 0;
  install_guarded_copy_handler();
  bool faulted = false;
  const std::size_t done = guarded_copy_pieces(static_cast<unsigned char*>(dst),
                                               static_cast<const unsigned char*>(src), n, faulted);
  if (faulted && ec != nullptr) *ec = std::make_error_code(std::errc::bad_address);
  return done;
}

}  // namespace faultsafe::detail

namespace faultsafe {

/// Effects: puts faultsafe's SIGBUS/SIGSEGV handler back in front of whatever handler the program
/// installed after it, chaining to that handler (see the chaining rules in the header comment); does
/// nothing if faultsafe's handler is the installed one. Call it after installing your own SIGBUS or
/// SIGSEGV handler if that handler does not chain to the previous action.
/// Thread-safety: any thread; not concurrently with a fault it re-targets (see the header comment).
/// Complexity: four sigaction calls. Throws: nothing.
inline void reinstall_guarded_copy_handler() noexcept {
  detail::install_guarded_copy_handler();
  exclusive_guard g(detail::fault_actions().installer);
  detail::install_guarded_copy_handler_locked();
}

}  // namespace faultsafe
