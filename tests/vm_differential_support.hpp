// A differential, model-based random test of the client API's file and mapping calls against the
// Linux kernel: one seeded random sequence of pwrite / pread / ftruncate / mmap (shared and private,
// read-only and read-write, past the end, MAP_FIXED over part of a mapping) / munmap (head, middle,
// tail) / mprotect / msync / close while mapped / loads and stores through the mappings / pread into a
// mapping and pwrite from one (Brian's shape) runs side by side on
//   (a) a file of a faultsafe server through a faultsafe::process ("fs"), and
//   (b) a file of the kernel's tmpfs (/dev/shm) with the real system calls ("kernel").
// Return values, errno values, bytes and fault outcomes (none / SIGBUS / SIGSEGV, probed with
// vm_support.hpp's probes) must be equal, except where faultsafe documents a difference from Linux:
// each such exception is encoded narrowly in differential::model_* below with the place that
// documents it. The addresses differ between the sides; each mapping is kept as a pair.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <faultsafe/resmgr/process.hpp>

#include "vm_support.hpp"

namespace difftest {

constexpr std::size_t pg = faultsafe::vm_page_size;
constexpr std::size_t max_file_pages = 12;  // sizes and offsets range over [0, 12 pages] and a bit past
constexpr std::size_t max_map_pages = 6;
constexpr std::size_t max_entries = 6;

/// The seeds to run: FAULTSAFE_SEED=<n> replays one; else `count` seeds from `first`.
inline std::vector<std::uint64_t> seeds(std::uint64_t first, int count) {
  if (const char* s = std::getenv("FAULTSAFE_SEED"); s != nullptr && *s != '\0') return {std::strtoull(s, nullptr, 0)};
  if (const char* s = std::getenv("FAULTSAFE_DIFF_SEEDS"); s != nullptr && *s != '\0') count = std::atoi(s);  // longer runs
  std::vector<std::uint64_t> out;
  for (int i = 0; i < count; ++i) out.push_back(first + static_cast<std::uint64_t>(i));
  return out;
}

/// The state of one page of a private mapping on faultsafe's side, for the documented differences.
enum class pstate : std::uint8_t {
  unwritten,  // the page cache's page (mapped or not yet): it shows the file as it is, as on Linux
  written,    // written through the mapping, or by read(2) into it (a private copy on both sides)
  kept,       // written, when a shrink removed its file page (see model_private_shrink)
};

struct entry {
  std::uint8_t* a = nullptr;  // faultsafe's address
  std::uint8_t* b = nullptr;  // the kernel's address
  std::size_t pages = 0;
  std::size_t fpage = 0;  // file page of the first page
  bool shared = false;
  bool ro_fd = false;
  std::vector<int> prot;      // per page (mprotect)
  std::vector<pstate> st;     // per page, private mappings only
  std::vector<bool> sigbus;   // per page: faultsafe's access got SIGBUS (see model_sticky_sigbus)

  [[nodiscard]] entry slice(std::size_t i, std::size_t j) const {
    entry e = *this;
    e.a = a + i * pg;
    e.b = b + i * pg;
    e.pages = j - i;
    e.fpage = fpage + i;
    e.prot.assign(prot.begin() + static_cast<std::ptrdiff_t>(i), prot.begin() + static_cast<std::ptrdiff_t>(j));
    e.st.assign(st.begin() + static_cast<std::ptrdiff_t>(i), st.begin() + static_cast<std::ptrdiff_t>(j));
    e.sigbus.assign(sigbus.begin() + static_cast<std::ptrdiff_t>(i), sigbus.begin() + static_cast<std::ptrdiff_t>(j));
    return e;
  }
};

/// errno-style outcome of a call: the value (>= 0) or -errno.
template <class T>
long long outcome(const faultsafe::result<T>& r) {
  if (!r.ok()) return -static_cast<long long>(r.error().value());
  if constexpr (std::is_integral_v<T>) return static_cast<long long>(r.value());
  else return 0;
}
inline long long outcome(const faultsafe::result<void>& r) { return r.ok() ? 0 : -static_cast<long long>(r.error().value()); }
inline long long sys_outcome(long long rc) { return rc < 0 ? -static_cast<long long>(errno) : rc; }

struct options {
  /// MAP_FIXED through the client API (a client of a server in another OS process gets ENOTSUP:
  /// resmgr/process_memory.hpp, mmap of a remote server's file).
  bool map_fixed = true;
  /// model_sticky_sigbus, for a server in another OS process: vm/pager.hpp ("Another process's memory":
  /// poisoned pages are not recorded, "such a page stays SIGBUS until the other process unmaps it"),
  /// where a kernel mapping (and an in-process one, vm/poisoned_pages.hpp) reads the page again once
  /// the file covers it. A page whose access got SIGBUS must stay SIGBUS; the kernel's is not compared.
  bool sticky_sigbus = false;
  /// model_private_shrink, for a server in another OS process: a shrink leaves the private copies of
  /// pages past the new end in the client (README, "Known differences"; the server cannot drop a page
  /// of another process), where Linux and an in-process mapping drop them (vm/private_copies.hpp).
  bool private_shrink_kept = false;
  int steps = 400;
};

/// One run of one seed. `p` is the faultsafe client, `path` the faultsafe path of a fresh file name.
class differential {
 public:
  differential(faultsafe::process& p, std::string path, std::uint64_t seed, options o)
      : p_(p), apath_(std::move(path)), seed_(seed), o_(o), rng_(seed) {
    char name[96];
    std::snprintf(name, sizeof name, "/dev/shm/faultsafe-diff-%d-%llu", static_cast<int>(::getpid()),
                  static_cast<unsigned long long>(seed));
    bpath_ = name;
  }
  ~differential() {
    for (auto& e : maps_) {
      (void)p_.munmap(e.a, e.pages * pg);
      ::munmap(e.b, e.pages * pg);
    }
    if (afd_ >= 0) (void)p_.close(afd_);
    if (afd_ro_ >= 0) (void)p_.close(afd_ro_);
    if (bfd_ >= 0) ::close(bfd_);
    if (bfd_ro_ >= 0) ::close(bfd_ro_);
    ::unlink(bpath_.c_str());
  }
  differential(const differential&) = delete;
  differential& operator=(const differential&) = delete;

  void run() {
    auto fd = p_.open(apath_, O_CREAT | O_TRUNC | O_RDWR, 0644);
    REQUIRE(fd.ok());
    afd_ = *fd;
    bfd_ = ::open(bpath_.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
    REQUIRE(bfd_ >= 0);
    reopen_ro();
    for (step_ = 0; step_ < o_.steps; ++step_) {
      what_.clear();
      one_step();
      if (std::getenv("FAULTSAFE_DIFF_TRACE") != nullptr) trace();
      if (!failed_.empty()) break;
      check_size();
      if (!failed_.empty()) break;
    }
    if (failed_.empty()) final_check();
    if (!failed_.empty()) {
      FAIL_CHECK("seed " << seed_ << " (replay: FAULTSAFE_SEED=" << seed_ << ") step " << step_ << ": " << what_ << ": " << failed_);
    }
    ops_ += static_cast<std::uint64_t>(step_);
  }

  [[nodiscard]] static std::uint64_t ops() { return ops_; }

  /// FAULTSAFE_DIFF_TRACE=1: each step and the mappings after it (file page, kind, per-page state).
  void trace() {
    std::string m;
    for (const auto& e : maps_) {
      m += str(" [", reinterpret_cast<std::uintptr_t>(e.a) % 0x1000000 / pg, "@f", e.fpage, e.shared ? "s:" : "p:");
      for (std::size_t i = 0; i < e.pages; ++i) m += e.sigbus[i] ? '!' : e.shared ? '.' : "uCWSK"[static_cast<int>(e.st[i])];
      m += "]";
    }
    std::fprintf(stderr, "step %d (size %llu): %s |%s\n", step_, static_cast<unsigned long long>(size_), what_.c_str(), m.c_str());
  }

 private:
  // ---- randomness ------------------------------------------------------------------------------
  std::size_t uni(std::size_t lo, std::size_t hi) { return std::uniform_int_distribution<std::size_t>(lo, hi)(rng_); }
  bool coin(int pct) { return uni(0, 99) < static_cast<std::size_t>(pct); }
  std::uint8_t byte() { return static_cast<std::uint8_t>(uni(1, 255)); }

  void fail(const std::string& why) {
    if (failed_.empty()) failed_ = why;
  }
  template <class... A>
  std::string str(const A&... a) {
    std::ostringstream s;
    (s << ... << a);
    return s.str();
  }

  // ---- fds ---------------------------------------------------------------------------------------
  void reopen_ro() {
    auto r = p_.open(apath_, O_RDONLY);
    REQUIRE(r.ok());
    afd_ro_ = *r;
    bfd_ro_ = ::open(bpath_.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(bfd_ro_ >= 0);
  }

  // ---- the model's bookkeeping of faultsafe's private pages ----------------------------------------
  // A page of a private mapping at or past the new end (in whole pages) that was written before the
  // shrink: Linux drops the copy (SIGBUS; after a growth the file's bytes), and so does an in-process
  // faultsafe mapping (resmgr/iofunc.hpp "Shrink and MAP_PRIVATE"): the page is the file's again.
  // model_private_shrink (options::private_shrink_kept, a server in another OS process): the copy keeps
  // its bytes and stays readable and writable. Such a page is `kept`: faultsafe must not fault there
  // (when the protection allows the access); the kernel's side is not compared.
  void file_shrunk(std::uint64_t new_size) {
    const std::uint64_t first_gone = (new_size + pg - 1) / pg;
    for (auto& e : maps_) {
      if (e.shared) continue;
      for (std::size_t i = 0; i < e.pages; ++i)
        if (e.fpage + i >= first_gone && e.st[i] == pstate::written) e.st[i] = o_.private_shrink_kept ? pstate::kept : pstate::unwritten;
    }
  }

  // ---- helpers -----------------------------------------------------------------------------------
  std::uint64_t size_a() {
    auto st = p_.fstat(afd_);
    REQUIRE(st.ok());
    return static_cast<std::uint64_t>(st.value().st_size);
  }
  void check_size() {
    struct stat sb {};
    REQUIRE(::fstat(bfd_, &sb) == 0);
    const std::uint64_t a = size_a();
    if (a != static_cast<std::uint64_t>(sb.st_size)) fail(str("size: faultsafe ", a, ", kernel ", sb.st_size));
    size_ = a;
  }
  [[nodiscard]] bool readable(int prot) const { return (prot & PROT_READ) != 0; }

  // Compares one access's outcome (and value) at page i of e. `write`: a store of v.
  void access(entry& e, std::size_t i, std::size_t x, bool write, std::uint8_t v) {
    std::uint8_t va = 0, vb = 0;
    int sa = 0, sb = 0;
    sa = write ? vmtest::probe_write(e.a + i * pg + x, v) : vmtest::probe_read(e.a + i * pg + x, va);
    const bool allowed = write ? (e.prot[i] & PROT_WRITE) != 0 : readable(e.prot[i]);
    // model_sticky_sigbus: the kernel's access is not made either (a store would change its file).
    if (o_.sticky_sigbus && e.sigbus[i] && allowed && sa == SIGBUS) return;
    sb = write ? vmtest::probe_write(e.b + i * pg + x, v) : vmtest::probe_read(e.b + i * pg + x, vb);
    if (sa == SIGBUS) e.sigbus[i] = true;
    if (!e.shared && e.st[i] == pstate::kept) {  // model_private_shrink
      if (allowed && sa != 0) fail(str("kept private page ", i, ": faultsafe signal ", sa, " (documented: keeps its bytes)"));
      if (!allowed && sa != SIGSEGV) fail(str("kept private page ", i, ": faultsafe signal ", sa, " without permission"));
      if (write && sa == 0) e.st[i] = pstate::kept;
      return;
    }
    if (sa != sb) {
      fail(str(write ? "store" : "load", " page ", i, " +", x, ": faultsafe signal ", sa, ", kernel ", sb));
      return;
    }
    if (sa != 0) return;
    if (write) {
      if (!e.shared) e.st[i] = pstate::written;
      return;
    }
    if (va != vb) fail(str("load page ", i, " +", x, ": faultsafe ", int(va), ", kernel ", int(vb)));
  }

  // Every page of e: outcome of a load of its first byte, then (if both read) the whole page.
  void scan(entry& e) {
    for (std::size_t i = 0; i < e.pages && failed_.empty(); ++i) {
      access(e, i, 0, false, 0);
      if (!failed_.empty() || !readable(e.prot[i])) continue;
      if (!e.shared && e.st[i] == pstate::kept) continue;
      if (o_.sticky_sigbus && e.sigbus[i]) continue;
      std::uint8_t z = 0;
      if (vmtest::probe_read(e.a + i * pg, z) != 0) continue;
      if (std::memcmp(e.a + i * pg, e.b + i * pg, pg) != 0) {
        std::size_t k = 0;
        while (e.a[i * pg + k] == e.b[i * pg + k]) ++k;
        std::uint8_t fa = 0, fb = 0;
        const off_t fo = static_cast<off_t>((e.fpage + i) * pg + k);
        (void)p_.pread(afd_, &fa, 1, fo);
        (void)!::pread(bfd_, &fb, 1, fo);
        fail(str("page ", i, " (file page ", e.fpage + i, ", ", e.shared ? "shared" : "private", ", state ",
                 e.shared ? 0 : static_cast<int>(e.st[i]), ") byte ", k, ": faultsafe ", int(e.a[i * pg + k]), ", kernel ",
                 int(e.b[i * pg + k]), " (the files there: faultsafe ", int(fa), ", kernel ", int(fb), ")"));
      }
    }
  }

  // Replaces pages [i, j) of entry k by `repl` (nullptr: nothing, a munmap).
  void split(std::size_t k, std::size_t i, std::size_t j, const entry* repl) {
    const entry e = maps_[k];
    maps_.erase(maps_.begin() + static_cast<std::ptrdiff_t>(k));
    if (i > 0) maps_.push_back(e.slice(0, i));
    if (j < e.pages) maps_.push_back(e.slice(j, e.pages));
    if (repl != nullptr) maps_.push_back(*repl);
  }

  entry new_entry(std::uint8_t* a, std::uint8_t* b, std::size_t pages, std::size_t fpage, bool shared, bool ro_fd, int prot) {
    entry e;
    e.a = a;
    e.b = b;
    e.pages = pages;
    e.fpage = fpage;
    e.shared = shared;
    e.ro_fd = ro_fd;
    e.prot.assign(pages, prot);
    e.st.assign(pages, pstate::unwritten);
    e.sigbus.assign(pages, false);
    return e;
  }

  // A sub-range [i, j) of an entry of `pages` pages: head, middle, tail or all.
  void pick_sub(std::size_t pages, std::size_t& i, std::size_t& j) {
    switch (uni(0, 3)) {
      case 0: i = 0; j = uni(1, pages); break;
      case 1: i = uni(0, pages - 1); j = pages; break;
      case 2: i = uni(0, pages - 1); j = uni(i + 1, pages); break;
      default: i = 0; j = pages; break;
    }
  }
  int pick_prot() {
    switch (uni(0, 4)) {
      case 0: return PROT_READ;
      case 1: return PROT_NONE;
      default: return PROT_READ | PROT_WRITE;
    }
  }

  // Whether file range [lo, hi) and the file pages of destination/source bytes [d0, d1) of entry e
  // overlap (when e is shared: the same memory; such overlapping copies are left out, their result
  // depends on the copy's direction and granularity, which neither side documents).
  static bool overlaps_shared(const entry& e, std::size_t d0, std::size_t d1, std::uint64_t lo, std::uint64_t hi) {
    if (!e.shared) return false;
    const std::uint64_t f0 = e.fpage * pg + d0, f1 = e.fpage * pg + d1;
    return f0 < hi && lo < f1;
  }
  // model_sticky_sigbus: a server's copy into (out of) a client buffer with kernel-mode faults takes
  // the fault of a page past the end itself, and its failed page-in leaves that page SIGBUS as a
  // client's own access would (vm/pager.hpp): such pages of [d0, d1) may stay SIGBUS.
  void may_poison(entry& e, std::size_t d0, std::size_t d1) {
    const std::uint64_t first_out = (size_ + pg - 1) / pg;
    for (std::size_t i = d0 / pg; o_.sticky_sigbus && i < (d1 + pg - 1) / pg; ++i)
      if (e.fpage + i >= first_out) e.sigbus[i] = true;
  }
  bool sticky(const entry& e, std::size_t d0, std::size_t d1) const {
    for (std::size_t i = d0 / pg; o_.sticky_sigbus && i < (d1 + pg - 1) / pg; ++i)
      if (e.sigbus[i]) return true;
    return false;
  }
  bool touches(const entry& e, std::size_t d0, std::size_t d1, pstate s) const {
    if (e.shared) return false;
    for (std::size_t i = d0 / pg; i < (d1 + pg - 1) / pg; ++i)
      if (e.st[i] == s) return true;
    return false;
  }

  // ---- one random step ---------------------------------------------------------------------------
  void one_step() {
    const std::size_t op = uni(0, 99);
    if (maps_.empty() || op < 10) return op_mmap();
    if (op < 18) return op_pwrite();
    if (op < 24) return op_pread();
    if (op < 31) return op_ftruncate();
    if (op < 37) return op_mmap();
    if (op < 42) return o_.map_fixed ? op_mmap_fixed() : op_mmap();
    if (op < 47) return op_munmap();
    if (op < 52) return op_mprotect();
    if (op < 55) return op_msync();
    if (op < 57) return op_close_reopen();
    if (op < 70) return op_access(false);
    if (op < 80) return op_access(true);
    if (op < 86) return op_scan();
    if (op < 93) return op_pread_into_map();
    return op_pwrite_from_map();
  }

  void op_pwrite() {
    const std::uint64_t off = uni(0, max_file_pages * pg + pg / 2);
    const std::size_t len = uni(0, 2 * pg + 100);
    std::vector<std::uint8_t> buf(len);
    for (auto& c : buf) c = byte();
    what_ = str("pwrite(off ", off, ", len ", len, ")");
    const long long ra = outcome(p_.pwrite(afd_, buf.data(), len, static_cast<off_t>(off)));
    const long long rb = sys_outcome(::pwrite(bfd_, buf.data(), len, static_cast<off_t>(off)));
    if (ra != rb) return fail(str("faultsafe ", ra, ", kernel ", rb));
  }

  void op_pread() {
    const std::uint64_t off = uni(0, max_file_pages * pg + pg);
    const std::size_t len = uni(0, 3 * pg);
    std::vector<std::uint8_t> a(len, 0xAA), b(len, 0xAA);
    what_ = str("pread(off ", off, ", len ", len, ")");
    const long long ra = outcome(p_.pread(coin(20) ? afd_ro_ : afd_, a.data(), len, static_cast<off_t>(off)));
    const long long rb = sys_outcome(::pread(bfd_, b.data(), len, static_cast<off_t>(off)));
    if (ra != rb) return fail(str("faultsafe ", ra, ", kernel ", rb));
    if (a != b) fail("bytes differ");
  }

  void op_ftruncate() {
    std::uint64_t sz = uni(0, max_file_pages * pg);
    if (coin(40)) sz &= ~std::uint64_t{pg - 1};
    const std::uint64_t old = size_;
    what_ = str("ftruncate(", sz, ") from ", old);
    const long long ra = outcome(p_.ftruncate(afd_, static_cast<off_t>(sz)));
    const long long rb = sys_outcome(::ftruncate(bfd_, static_cast<off_t>(sz)));
    if (ra != rb) return fail(str("faultsafe ", ra, ", kernel ", rb));
    if (ra != 0) return;
    if (sz < old) {
      file_shrunk(sz);
    } else if (sz > old) {
      // model_grow_zeroes_tail: faultsafe's growing truncate zeroes the rest of the old last page,
      // bytes a shared mapping stored past the old end included (resmgr/iofunc.hpp header: "a truncate
      // that grows the file zeroes the rest of the old last page"; README "Known limits", the file
      // store); Linux's tmpfs keeps those bytes. The kernel's side is zeroed the same way here.
      const std::uint64_t end = std::min<std::uint64_t>(sz, (old + pg - 1) & ~std::uint64_t{pg - 1});
      if (end > old) {
        std::vector<std::uint8_t> z(end - old, 0);
        REQUIRE(::pwrite(bfd_, z.data(), z.size(), static_cast<off_t>(old)) == static_cast<ssize_t>(z.size()));
      }
    }
    size_ = sz;
  }

  void op_mmap() {
    if (maps_.size() >= max_entries) return op_munmap();
    const std::size_t pages = uni(1, max_map_pages);
    const std::size_t fpage = uni(0, max_file_pages);
    const bool shared = coin(50), ro = coin(20);
    const int prot = coin(30) ? PROT_READ : PROT_READ | PROT_WRITE;
    what_ = str("mmap(", pages, " pages, file page ", fpage, shared ? ", shared" : ", private", ro ? ", ro fd" : "",
                prot & PROT_WRITE ? ", rw" : ", r", ")");
    auto ra = p_.mmap(nullptr, pages * pg, prot, shared ? MAP_SHARED : MAP_PRIVATE, ro ? afd_ro_ : afd_, static_cast<off_t>(fpage * pg));
    void* rb = ::mmap(nullptr, pages * pg, prot, shared ? MAP_SHARED : MAP_PRIVATE, ro ? bfd_ro_ : bfd_, static_cast<off_t>(fpage * pg));
    const long long oa = outcome(ra), ob = rb == MAP_FAILED ? -static_cast<long long>(errno) : 0;
    if (oa != ob) {
      if (ra.ok()) (void)p_.munmap(*ra, pages * pg);
      if (rb != MAP_FAILED) ::munmap(rb, pages * pg);
      return fail(str("faultsafe ", oa, ", kernel ", ob));
    }
    if (oa != 0) return;
    maps_.push_back(new_entry(static_cast<std::uint8_t*>(*ra), static_cast<std::uint8_t*>(rb), pages, fpage, shared, ro, prot));
  }

  void op_mmap_fixed() {
    const std::size_t k = uni(0, maps_.size() - 1);
    std::size_t i = 0, j = 0;
    pick_sub(maps_[k].pages, i, j);
    const std::size_t fpage = coin(50) ? maps_[k].fpage + i : uni(0, max_file_pages);
    const bool shared = coin(50), ro = coin(20);
    const int prot = coin(30) ? PROT_READ : PROT_READ | PROT_WRITE;
    std::uint8_t* at_a = maps_[k].a + i * pg;
    std::uint8_t* at_b = maps_[k].b + i * pg;
    const std::size_t len = (j - i) * pg;
    what_ = str("mmap(MAP_FIXED over pages [", i, ", ", j, ") of a ", maps_[k].shared ? "shared" : "private", " mapping of ",
                maps_[k].pages, " pages at file page ", maps_[k].fpage, ": file page ", fpage, shared ? ", shared" : ", private",
                ro ? ", ro fd" : "", prot & PROT_WRITE ? ", rw" : ", r", ")");
    auto ra = p_.mmap(at_a, len, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, ro ? afd_ro_ : afd_, static_cast<off_t>(fpage * pg));
    void* rb = ::mmap(at_b, len, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, ro ? bfd_ro_ : bfd_, static_cast<off_t>(fpage * pg));
    const long long oa = outcome(ra), ob = rb == MAP_FAILED ? -static_cast<long long>(errno) : 0;
    if (oa != ob) return fail(str("faultsafe ", oa, ", kernel ", ob));
    if (oa != 0) return;
    if (*ra != at_a || rb != at_b) return fail("MAP_FIXED mapped elsewhere");
    const entry repl = new_entry(at_a, at_b, j - i, fpage, shared, ro, prot);
    split(k, i, j, &repl);
  }

  void op_munmap() {
    const std::size_t k = uni(0, maps_.size() - 1);
    std::size_t i = 0, j = 0;
    pick_sub(maps_[k].pages, i, j);
    what_ = str("munmap(pages [", i, ", ", j, ") of ", maps_[k].pages, ")");
    const long long ra = outcome(p_.munmap(maps_[k].a + i * pg, (j - i) * pg));
    const long long rb = sys_outcome(::munmap(maps_[k].b + i * pg, (j - i) * pg));
    if (ra != rb) return fail(str("faultsafe ", ra, ", kernel ", rb));
    if (ra == 0) split(k, i, j, nullptr);
  }

  void op_mprotect() {
    entry& e = maps_[uni(0, maps_.size() - 1)];
    std::size_t i = 0, j = 0;
    pick_sub(e.pages, i, j);
    const int prot = pick_prot();
    what_ = str("mprotect(pages [", i, ", ", j, ") of a ", e.shared ? "shared" : "private", e.ro_fd ? " ro-fd" : "", " mapping, ", prot, ")");
    const long long ra = outcome(p_.mprotect(e.a + i * pg, (j - i) * pg, prot));
    const long long rb = sys_outcome(::mprotect(e.b + i * pg, (j - i) * pg, prot));
    if (ra != rb) return fail(str("faultsafe ", ra, ", kernel ", rb));
    if (ra == 0)
      for (std::size_t q = i; q < j; ++q) e.prot[q] = prot;
  }

  void op_msync() {
    entry& e = maps_[uni(0, maps_.size() - 1)];
    std::size_t i = 0, j = 0;
    pick_sub(e.pages, i, j);
    const int flags = coin(50) ? MS_SYNC : coin(50) ? MS_ASYNC : MS_SYNC | MS_INVALIDATE;
    what_ = str("msync(pages [", i, ", ", j, "), ", flags, ")");
    const long long ra = outcome(p_.msync(e.a + i * pg, (j - i) * pg, flags));
    const long long rb = sys_outcome(::msync(e.b + i * pg, (j - i) * pg, flags));
    if (ra != rb) fail(str("faultsafe ", ra, ", kernel ", rb));
  }

  void op_close_reopen() {
    what_ = "close both fds while mapped, open again";
    REQUIRE(p_.close(afd_).ok());
    REQUIRE(p_.close(afd_ro_).ok());
    REQUIRE(::close(bfd_) == 0);
    REQUIRE(::close(bfd_ro_) == 0);
    auto r = p_.open(apath_, O_RDWR);
    REQUIRE(r.ok());
    afd_ = *r;
    bfd_ = ::open(bpath_.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(bfd_ >= 0);
    reopen_ro();
  }

  void op_access(bool write) {
    entry& e = maps_[uni(0, maps_.size() - 1)];
    const std::size_t i = uni(0, e.pages - 1), x = coin(30) ? uni(0, 15) : uni(0, pg - 1);
    const std::uint8_t v = byte();
    what_ = str(write ? "store " : "load ", "page ", i, " +", x, " of a ", e.shared ? "shared" : "private", " mapping at file page ",
                e.fpage, " (prot ", e.prot[i], ")");
    access(e, i, x, write, v);
  }

  void op_scan() {
    entry& e = maps_[uni(0, maps_.size() - 1)];
    what_ = str("scan a ", e.shared ? "shared" : "private", " mapping of ", e.pages, " pages at file page ", e.fpage);
    scan(e);
  }

  // A client buffer of 1 byte to 2 pages inside a random mapping, and a file offset.
  struct buffer_pick {
    entry* e;
    std::size_t start, len;
    std::uint64_t off;
  };
  buffer_pick pick_buffer() {
    entry& e = maps_[uni(0, maps_.size() - 1)];
    const std::size_t start = uni(0, e.pages * pg - 1);
    const std::size_t len = uni(1, std::min<std::size_t>(2 * pg, e.pages * pg - start));
    return {&e, start, len, uni(0, max_file_pages * pg)};
  }

  // pread into (write: pwrite from) bytes [at, at + len) of e at file offset off on both sides.
  // Returns: the common outcome, or -1 after recording a difference.
  long long io_with_map(bool write, entry& e, std::size_t at, std::size_t len, std::uint64_t off) {
    what_ = str(write ? "pwrite(off " : "pread(off ", off, ", len ", len, write ? ") from a " : ") into a ",
                e.shared ? "shared" : "private", " mapping at file page ", e.fpage, " +", at);
    const long long ra = write ? outcome(p_.pwrite(afd_, e.a + at, len, static_cast<off_t>(off)))
                               : outcome(p_.pread(afd_, e.a + at, len, static_cast<off_t>(off)));
    const long long rb = write ? sys_outcome(::pwrite(bfd_, e.b + at, len, static_cast<off_t>(off)))
                               : sys_outcome(::pread(bfd_, e.b + at, len, static_cast<off_t>(off)));
    if (ra == rb) return ra;
    fail(str("faultsafe ", ra, ", kernel ", rb));
    return -1;
  }

  // Brian's shape: pread(fd, p) with p in a mapping (of the same file or not overlapping its range).
  void op_pread_into_map() {
    const buffer_pick b = pick_buffer();
    entry& e = *b.e;
    const std::size_t d0 = b.start, len = b.len;
    const std::uint64_t off = b.off;
    if (overlaps_shared(e, d0, d0 + len, off, off + len) || touches(e, d0, d0 + len, pstate::kept) || sticky(e, d0, d0 + len)) return;
    const long long ra = io_with_map(false, e, d0, len, off);
    may_poison(e, d0, d0 + len);
    if (ra <= 0) return;
    const std::size_t d1 = d0 + static_cast<std::size_t>(ra);
    if (!e.shared)
      for (std::size_t q = d0 / pg; q < (d1 + pg - 1) / pg; ++q) e.st[q] = pstate::written;
  }

  // pwrite(fd, p) with p in a mapping.
  void op_pwrite_from_map() {
    const buffer_pick b = pick_buffer();
    entry& e = *b.e;
    const std::size_t s0 = b.start, len = b.len;
    const std::uint64_t off = b.off;
    // A private page that was never written is the file's page on Linux (not a copy): a source there
    // that overlaps the target is an overlapping copy too.
    bool aliases = false;
    for (std::size_t q = s0 / pg; !e.shared && q < (s0 + len + pg - 1) / pg; ++q) {
      const std::uint64_t b0 = e.fpage * pg + std::max(s0, q * pg), b1 = e.fpage * pg + std::min(s0 + len, (q + 1) * pg);
      aliases = aliases || (e.st[q] != pstate::written && b0 < off + len && off < b1);
    }
    if (aliases || overlaps_shared(e, s0, s0 + len, off, off + len) || touches(e, s0, s0 + len, pstate::kept) || sticky(e, s0, s0 + len))
      return;
    // model_failed_write_grows: a write at `off` past the end whose first copy from the source faults
    // (a source page past the end of the file) leaves Linux's tmpfs with size `off` (shmem_write_end
    // publishes pos + 0 bytes), and the kernel then faults the source in again, now inside the file,
    // and completes; faultsafe's failed write changes nothing (README: "A call that fails changes
    // nothing (... a write that fails does not grow the file ...)"; resmgr/iofunc.hpp, "Failed calls
    // have no side effects"). Such a write is left out; one at or before the end is compared.
    // The same for a source without PROT_READ (EFAULT on both sides, and Linux's size is then `off`).
    const std::uint64_t src_end_page = (e.fpage * pg + s0 + len + pg - 1) / pg;
    bool may_fault = src_end_page * pg > ((size_ + pg - 1) & ~std::uint64_t{pg - 1});
    for (std::size_t q = s0 / pg; q < (s0 + len + pg - 1) / pg; ++q) may_fault = may_fault || !readable(e.prot[q]);
    if (off > size_ && may_fault) return;
    const long long ra = io_with_map(true, e, s0, len, off);
    may_poison(e, s0, s0 + len);
    if (ra <= 0) return;
  }

  void final_check() {
    what_ = "final comparison";
    check_size();
    if (!failed_.empty()) return;
    std::vector<std::uint8_t> a(size_), b(size_);
    if (size_ > 0) {
      const long long ra = outcome(p_.pread(afd_, a.data(), size_, 0));
      const long long rb = sys_outcome(::pread(bfd_, b.data(), size_, 0));
      if (ra != rb) return fail(str("final pread: faultsafe ", ra, ", kernel ", rb));
      if (a != b) return fail("final file bytes differ");
    }
    for (auto& e : maps_) scan(e);
  }

  faultsafe::process& p_;
  std::string apath_, bpath_;
  std::uint64_t seed_;
  options o_;
  std::mt19937_64 rng_;
  int afd_ = -1, afd_ro_ = -1, bfd_ = -1, bfd_ro_ = -1;
  std::vector<entry> maps_;
  std::uint64_t size_ = 0;
  int step_ = 0;
  std::string what_, failed_;
  static inline std::uint64_t ops_ = 0;
};

}  // namespace difftest
