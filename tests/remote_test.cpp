// Servers and clients in separate OS processes (issue 11): the socket transport
// (ipc/socket_transport.hpp) and remote resource managers (resmgr/remote.hpp).
// - The same random call sequence runs in-process and from another OS process (fork+exec of this
//   binary); every result (error, value, the bytes of every read buffer, untouched tails included)
//   must be the same.
// - kill -9 of a client at random points of random requests, 1,000 rounds, while another client
//   process keeps verifying its own I/O: every open of the dead client is closed, no range lock stays
//   held (a whole-file write completes), every acknowledged write is in the file.
// - kill -9 of a server (stopped while a client waits for a reply): the client's calls fail with
//   ESHUTDOWN, none hangs.
// - A client running as another uid that writes uid 0 into its messages gets what its real uid gets.
// - A client's supplementary groups are the kernel's (SO_PEERGROUPS): setgroups() before connecting
//   gives it a group's access to a file; groups it only claims in its messages do not.
// The children are this executable run with --role (main() below).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>

#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/sync.hpp"

using namespace faultsafe;
using namespace std::chrono_literals;

namespace {

std::string unique_address(const char* what) { return "@faultsafe-remote-test-" + std::to_string(::getpid()) + "-" + what; }

std::uint64_t fnv(const unsigned char* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// A child: this executable with --role and `args`; its stdout is `out_fd` if >= 0.
// The argument vector is built before fork(): the child of a multi-threaded parent only calls
// async-signal-safe functions before execv.
pid_t spawn(const std::vector<std::string>& args, int out_fd = -1, int keep_fd = -1) {
  std::vector<char*> argv;
  static char self[] = "/proc/self/exe";
  static char role[] = "--role";
  argv.push_back(self);
  argv.push_back(role);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (out_fd >= 0) ::dup2(out_fd, 1);
    if (keep_fd >= 0) {
      const int f = ::fcntl(keep_fd, F_GETFD);
      ::fcntl(keep_fd, F_SETFD, f & ~FD_CLOEXEC);
    }
    ::execv("/proc/self/exe", argv.data());
    std::_Exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// ---- the random call sequence, run over either transport ----------------------------------------

// Runs `n` random calls of `p` on /r/f0../r/f2 (created empty by the caller's server) and records
// every result in `trace`. `bad` is an unreadable, unwritable page range (EFAULT buffers).
void run_sequence(process& p, unsigned seed, int n, void* bad, std::vector<std::string>& trace) {
  std::mt19937 rng(seed);
  auto pick = [&](std::size_t k) { return static_cast<std::size_t>(rng() % k); };
  static const std::size_t sizes[] = {0, 1, 100, 4096, 16384, 16385, 40000, 70000, 300000};
  static const int open_flags[] = {O_RDWR | O_CREAT, O_RDONLY, O_WRONLY | O_APPEND | O_CREAT, O_RDWR | O_TRUNC, O_WRONLY};
  std::vector<int> fds;
  std::vector<unsigned char> data(300000 + 16), buf(300000 + 16);
  for (int i = 0; i < n; ++i) {
    std::ostringstream t;
    t << i << " ";
    const int fd = fds.empty() || pick(10) == 0 ? static_cast<int>(pick(8)) + 40 : fds[pick(fds.size())];  // sometimes a bad fd
    const std::size_t len = sizes[pick(std::size(sizes))];
    const off_t off = static_cast<off_t>(pick(400000));
    auto rd = [&](const result<std::size_t>& r, std::size_t cap) {
      std::size_t last = cap;  // the end of what the call wrote (the rest must be untouched)
      while (last > 0 && buf[last - 1] == 0xAA) --last;
      t << "e=" << r.error().value() << " v=" << r.value_or(0) << " end=" << last << " h=" << fnv(buf.data(), cap);
    };
    for (std::size_t k = 0; k < len; ++k) data[k] = static_cast<unsigned char>(rng());
    std::memset(buf.data(), 0xAA, buf.size());
    switch (pick(15)) {
      case 0: {
        const std::string path = "/r/f" + std::to_string(pick(3));
        auto r = p.open(path, open_flags[pick(std::size(open_flags))], 0644);
        if (r) fds.push_back(*r);
        t << "open " << path << " e=" << r.error().value() << " v=" << r.value_or(-1);
        break;
      }
      case 1: {
        t << "close " << fd << " e=" << p.close(fd).error().value();
        fds.erase(std::remove(fds.begin(), fds.end(), fd), fds.end());
        break;
      }
      case 2: t << "read " << fd << " " << len << " "; rd(p.read(fd, buf.data(), len), len); break;
      case 3: t << "write " << fd << " " << len << " " << p.write(fd, data.data(), len).error().value(); break;
      case 4: t << "pread " << fd << " " << len << "@" << off << " "; rd(p.pread(fd, buf.data(), len, off), len); break;
      case 5: {
        auto r = p.pwrite(fd, data.data(), len, off);
        t << "pwrite " << fd << " " << len << "@" << off << " e=" << r.error().value() << " v=" << r.value_or(0);
        break;
      }
      case 6:
      case 7: {
        const std::size_t a = len / 3, b = len / 2;
        struct iovec iov[3] = {{buf.data(), a}, {buf.data() + a, b}, {buf.data() + a + b, len - a - b}};
        const bool positional = pick(2) == 0;
        t << (positional ? "preadv " : "readv ") << fd << " " << len << " ";
        rd(positional ? p.preadv(fd, iov, 3, off) : p.readv(fd, iov, 3), len);
        break;
      }
      case 8: {
        static const int whences[] = {SEEK_SET, SEEK_CUR, SEEK_END, 77};
        const int w = whences[pick(4)];
        auto r = p.lseek(fd, pick(4) == 0 ? -off : off, w);
        t << "lseek " << fd << " " << w << " e=" << r.error().value() << " v=" << r.value_or(-1);
        break;
      }
      case 9: {
        auto r = p.fstat(fd);
        t << "fstat " << fd << " e=" << r.error().value();
        if (r) t << " size=" << r.value().st_size << " mode=" << r.value().st_mode << " nlink=" << r.value().st_nlink;
        break;
      }
      case 10: t << "ftruncate " << fd << " " << off << " e=" << p.ftruncate(fd, pick(5) == 0 ? -1 : off).error().value(); break;
      case 11: {  // a write from an unreadable buffer
        auto r = p.pwrite(fd, bad, len, off);
        t << "pwrite-bad " << fd << " " << len << " e=" << r.error().value() << " v=" << r.value_or(0);
        break;
      }
      case 12: {  // a read into an unwritable buffer
        auto r = p.pread(fd, bad, len, off);
        t << "pread-bad " << fd << " " << len << " e=" << r.error().value() << " v=" << r.value_or(0);
        break;
      }
      case 13: {  // the memory calls on anonymous memory
        const std::size_t pages = 1 + pick(4);
        auto m = p.mmap(nullptr, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        t << "mmap-anon " << pages << " e=" << m.error().value();
        if (m) {
          auto* q = static_cast<unsigned char*>(*m);
          q[0] = 1;  // a real fault, served by the process's pager
          t << " touch=" << int(q[0]) << " mprotect=" << p.mprotect(q, 4096, PROT_READ).error().value()
            << " msync=" << p.msync(q, pages * 4096, MS_SYNC).error().value()
            << " bad-msync=" << p.msync(q + 1, 4096, MS_SYNC).error().value()
            << " munmap=" << p.munmap(q, pages * 4096).error().value();
        }
        break;
      }
      case 14: {  // a file mapping: loads inside the file, a store, mprotect, msync, munmap
        const bool shared = pick(2) == 0;
        const int prot = pick(3) == 0 ? PROT_READ : PROT_READ | PROT_WRITE;
        const std::size_t pages = 1 + pick(4);
        auto m = p.mmap(nullptr, pages * 4096, prot, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
        t << "mmap-file " << fd << " shared=" << shared << " prot=" << prot << " " << pages << " e=" << m.error().value();
        if (m) {
          auto st = p.fstat(fd);  // touch only what the file covers (past it: SIGBUS on both transports)
          const std::size_t n = std::min<std::size_t>(st ? static_cast<std::size_t>(st.value().st_size) : 0, pages * 4096);
          auto* q = static_cast<unsigned char*>(*m);
          t << " h=" << fnv(q, n);
          if (n > 0 && (prot & PROT_WRITE)) q[n - 1] ^= 0x5a;  // shared: the file's byte; private: its own
          t << " mprotect=" << p.mprotect(q, pages * 4096, PROT_READ).error().value()
            << " mprotect-past=" << p.mprotect(q, (pages + 64) * 4096, PROT_READ).error().value()
            << " msync=" << p.msync(q, pages * 4096, MS_SYNC).error().value()
            << " bad-msync=" << p.msync(q, pages * 4096, MS_SYNC | MS_ASYNC).error().value() << " h2=" << fnv(q, n)
            << " munmap=" << p.munmap(q, pages * 4096).error().value();
        }
        break;
      }
    }
    trace.push_back(t.str());
  }
  for (int fd : fds) (void)p.close(fd);
}

void* bad_range() {
  void* p = ::mmap(nullptr, 512 * 1024, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

#if defined(__SANITIZE_THREAD__)
constexpr int sequence_length = 900;  // TSan slows the calls ~20x; the three seeds still cover every call kind
#else
constexpr int sequence_length = 3000;
#endif

ramfs_options files_options(path_namespace* ns) {
  ramfs_options o;
  o.name = "rfs";
  o.prefix = "/r";
  o.pool = {1, 4};
  o.ns = ns;
  o.dir_mode = 0777;
  o.file.max_size = 1 << 20;
  return o;
}

// A ramfs (at /r of its own namespace) served to other processes at a fresh abstract address.
// progress_chunk: remote_server_options::progress_chunk (bytes per process_vm copy).
struct served_ramfs {
  explicit served_ramfs(const char* what, mode_t dir_mode = 0777,
                        std::size_t progress_chunk = remote_server_options{}.progress_chunk)
      : fs(options(ns, dir_mode)), address(unique_address(what)),
        rs(fs.srv(), {.address = address, .progress_chunk = progress_chunk}) {}
  static ramfs_options options(path_namespace& n, mode_t dir_mode) {
    ramfs_options o = files_options(&n);
    o.dir_mode = dir_mode;
    return o;
  }
  path_namespace ns;
  ramfs fs;
  std::string address;
  remote_server rs;
};

// ---- child roles ------------------------------------------------------------------------------------

// eager: the client skips its first spin (connect_options::spin = 0) and goes straight to the spin
// that watches the server's progress, for every request the server has already taken.
int role_sequence(const std::string& address, unsigned seed, const std::string& out, bool eager) {
  path_namespace ns;
  connect_options co;
  if (eager) co.spin = std::chrono::nanoseconds(0);
  if (auto ec = mount_remote(ns, "/r", address, co)) {
    std::fprintf(stderr, "connect %s: %s\n", address.c_str(), ec.message().c_str());
    return 2;
  }
  std::vector<std::string> trace;
  {
    process p("seq", {0, 0}, &ns);
    run_sequence(p, seed, sequence_length, bad_range(), trace);
  }
  std::ofstream f(out);
  for (const auto& l : trace) f << l << "\n";
  return f.good() ? 0 : 3;
}

// Writes records (8 bytes: the value k) at base + 8k forever, acknowledging each on `ack`, with other
// requests in between (opens, closes, a large read, fstat), until killed.
int role_writer(const std::string& address, std::uint64_t base, int ack, unsigned seed) {
  path_namespace ns;
  if (mount_remote(ns, "/r", address)) return 2;
  process p("writer", {0, 0}, &ns);
  auto fd = p.open("/r/log", O_RDWR);
  if (!fd) return 3;
  std::mt19937 rng(seed);
  std::vector<unsigned char> big(70000);
  for (std::uint64_t k = 0; k < 4096; ++k) {
    switch (rng() % 6) {
      case 0: {
        auto g = p.open("/r/other", O_RDWR | O_CREAT, 0644);  // an open it may hold when killed
        if (g && rng() % 2) (void)p.close(*g);
        break;
      }
      case 1: (void)p.pread(*fd, big.data(), big.size(), 0); break;
      case 2: (void)p.fstat(*fd); break;
      default: break;
    }
    const std::uint64_t v = k + 1;
    auto r = p.pwrite(*fd, &v, sizeof v, static_cast<off_t>(base + 8 * k));
    if (!r || *r != sizeof v) return 4;
    if (::write(ack, &v, sizeof v) != sizeof v) return 5;
  }
  return 0;
}

// Verifies its own I/O until stdin closes (the parent's end of the pipe).
int role_steady(const std::string& address) {
  path_namespace ns;
  if (mount_remote(ns, "/r", address)) return 2;
  process p("steady", {0, 0}, &ns);
  auto fd = p.open("/r/steady", O_RDWR | O_CREAT, 0644);
  if (!fd) return 3;
  std::vector<unsigned char> w(20000), r(20000);
  for (std::uint32_t n = 0;; ++n) {
    pollfd pf{0, POLLIN, 0};
    if (::poll(&pf, 1, 0) > 0) return 0;  // EOF or data: the parent is done
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<unsigned char>(n * 7 + i);
    const std::size_t len = n % 2 ? w.size() : 512;
    auto a = p.pwrite(*fd, w.data(), len, 0);
    auto b = p.pread(*fd, r.data(), len, 0);
    if (!a || !b || *a != len || *b != len || std::memcmp(w.data(), r.data(), len) != 0) return 4;
  }
}

// Reads and writes with buffers whose tail is unwritable / unreadable (the page after the first is
// PROT_NONE), through `p`: one result line each, compared between the transports by the caller.
std::string partial_buffers(process& p) {
  std::ostringstream t;
  auto* page = static_cast<unsigned char*>(::mmap(nullptr, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (page == MAP_FAILED || ::mprotect(page + 4096, 4096, PROT_NONE) != 0) return "mmap failed";
  for (int i = 0; i < 4096; ++i) page[i] = static_cast<unsigned char>(i * 13);
  auto fd = p.open("/r/partial", O_RDWR);
  if (!fd) return "open failed";
  auto show = [&](const char* what, const result<std::size_t>& r) { t << what << " e=" << r.error().value() << " v=" << r.value_or(0) << "\n"; };
  for (std::size_t at : {std::size_t{2048}, std::size_t{4095}, std::size_t{3000}}) {
    for (std::size_t len : {std::size_t{1100}, std::size_t{4096}, std::size_t{12000}}) {
      std::memset(page, 0xAA, 4096);
      show("pread", p.pread(*fd, page + at, len, 1000));
      t << " h=" << fnv(page, 4096) << "\n";
      show("lseek0", p.lseek(*fd, 0, SEEK_SET).ok() ? result<std::size_t>(0) : result<std::size_t>(std::make_error_code(std::errc::io_error)));
      show("read", p.read(*fd, page + at, len));
      unsigned char next[16];
      show("read-next", p.read(*fd, next, sizeof next));
      t << " next=" << fnv(next, sizeof next) << " h=" << fnv(page, 4096) << "\n";
      show("pwrite", p.pwrite(*fd, page + at, len, 20000 + static_cast<off_t>(at)));
    }
  }
  std::vector<unsigned char> all(40000);
  show("pread-all", p.pread(*fd, all.data(), all.size(), 0));
  t << " h=" << fnv(all.data(), all.size()) << "\n";
  (void)p.close(*fd);
  ::munmap(page, 2 * 4096);
  return t.str();
}

int role_partial(const std::string& address, const std::string& out) {
  path_namespace ns;
  if (mount_remote(ns, "/r", address)) return 2;
  process p("partial", {0, 0}, &ns);
  std::ofstream(out) << partial_buffers(p);
  return 0;
}

// /r/partial: 40,000 bytes of a pattern.
void make_partial_file(path_namespace& ns) {
  process p("init", {0, 0}, &ns);
  const int fd = *p.open("/r/partial", O_RDWR | O_CREAT, 0644);
  std::vector<unsigned char> d(40000);
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<unsigned char>(i * 7 + 3);
  (void)p.pwrite(fd, d.data(), d.size(), 0);
  (void)p.close(fd);
}

int role_server(const std::string& address) {
  path_namespace ns;
  ramfs fs(files_options(&ns));
  remote_server rs(fs.srv(), {.address = address});
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}

// Runs as `uid`, claims uid 0 in its credentials, and prints the outcome of each attempt.
int role_forger(const std::string& address, uid_t uid) {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) return 2;
  path_namespace ns;
  if (mount_remote(ns, "/r", address)) return 3;
  process p("forger", {0, 0}, &ns);  // forged: the server must use the kernel's uid
  std::printf("%d %d %d %d %d\n", p.open("/r/secret", O_RDONLY).error().value(), p.open("/r/mine", O_RDWR).error().value(),
              p.open("/r/rootdir/x", O_RDWR | O_CREAT, 0644).error().value(), p.chmod("/r/secret", 0666).error().value(),
              p.unlink("/r/secret").error().value());
  return 0;
}

// Runs as `uid` (primary group `uid`) with the supplementary groups `groups` ("-": none) and claims
// `claimed` as its groups in its credentials; prints what open O_RDONLY and O_RDWR of /r/club give.
int role_member(const std::string& address, uid_t uid, const std::string& groups, gid_t claimed) {
  std::vector<gid_t> gs;
  for (std::stringstream in(groups == "-" ? "" : groups); in.good();) {
    std::string g;
    if (std::getline(in, g, ',') && !g.empty()) gs.push_back(static_cast<gid_t>(std::stoul(g)));
  }
  if (::setgroups(gs.size(), gs.data()) != 0 || ::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) return 2;
  path_namespace ns;
  if (mount_remote(ns, "/r", address)) return 3;
  credentials forged{uid, uid};
  forged.groups.count = 1;
  forged.groups.ids[0] = claimed;  // the server must use the kernel's list
  process p("member", forged, &ns);
  std::printf("%d %d\n", p.open("/r/club", O_RDONLY).error().value(), p.open("/r/club", O_RDWR).error().value());
  return 0;
}

// A child role's standard output (the role must exit 0 and print something).
std::string role_output(const std::vector<std::string>& args) {
  int out[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  const pid_t c = spawn(args, out[1]);
  ::close(out[1]);
  char got[64] = {};
  const ssize_t n = ::read(out[0], got, sizeof got - 1);
  ::close(out[0]);
  REQUIRE(wait_exit(c) == 0);
  REQUIRE(n > 0);
  return got;
}

// True when running as root; else says the test is skipped because it needs `what`.
bool root_for(const char* what) {
  if (::geteuid() == 0) return true;
  const std::string why = std::string("skipped: needs root to run ") + what;
  MESSAGE(why);
  return false;
}

}  // namespace

// ---- the tests ----------------------------------------------------------------------------------------

TEST_CASE("the same random call sequence gives the same results in-process and from another process") {
  test_support::watchdog wd("sequence", 100s);
  for (unsigned seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    std::vector<std::string> local;
    {
      path_namespace ns;
      ramfs fs(files_options(&ns));
      process p("seq", {0, 0}, &ns);
      void* bad = bad_range();
      REQUIRE(bad);
      run_sequence(p, seed, sequence_length, bad, local);
    }
    // Seed 2: the server's process_vm copies go in odd 4097-byte pieces (each one a progress mark;
    // a bad buffer then fails part-way through a piece sequence), and the client watches them.
    const bool pieces = seed == 2;
    served_ramfs srv("seq", 0777, pieces ? 4097 : remote_server_options{}.progress_chunk);
    auto& [ns, fs, address, rs] = srv;
    const std::string out = "/tmp/faultsafe-remote-seq-" + std::to_string(::getpid());
    const pid_t child = spawn({"sequence", address, std::to_string(seed), out, pieces ? "eager" : "plain"});
    REQUIRE(wait_exit(child) == 0);
    std::ifstream f(out);
    std::vector<std::string> remote;
    for (std::string l; std::getline(f, l);) remote.push_back(l);
    ::unlink(out.c_str());
    REQUIRE(remote.size() == local.size());
    int diffs = 0;
    for (std::size_t i = 0; i < local.size() && diffs < 5; ++i)
      if (local[i] != remote[i]) {
        ++diffs;
        MESSAGE("in-process: " << local[i] << "\n  remote:     " << remote[i]);
      }
    CHECK(diffs == 0);
    // The sequence exercised both paths and the errors.
    std::size_t efault = 0, big = 0;
    for (const auto& l : local) {
      efault += l.find("e=14") != std::string::npos;
      big += (l.find(" 300000 e=0") != std::string::npos || l.find(" 70000 e=0") != std::string::npos);
    }
    CHECK(efault > 10);
    CHECK(big > 10);
    std::size_t mapped = 0;
    for (const auto& l : local) mapped += l.find("mmap-anon") != std::string::npos && l.find(" e=0 touch=1 mprotect=0 msync=0 bad-msync=22 munmap=0") != std::string::npos;
    if (mapped == 0) MESSAGE("no anonymous mapping succeeded (userfaultfd refused?): the memory calls were compared as failures only");
    else CHECK(mapped > 10);
    // The child exited: its connection is cleaned up, nothing of it stays open.
    for (int i = 0; i < 20000 && rs.connections_gone() < 1; ++i) std::this_thread::sleep_for(1ms);
    CHECK(rs.connections_gone() == 1);
    CHECK(fs.srv().open_ocbs() == 0);
  }
}

TEST_CASE("a buffer whose tail is bad: the short count of read(2)/write(2) from another process, as in-process") {
  test_support::watchdog wd("partial", 60s);
  reinstall_guarded_copy_handler();  // in front of doctest's per-test-case SIGSEGV handler
  std::string local;
  {
    path_namespace ns;
    ramfs fs(files_options(&ns));
    make_partial_file(ns);
    process p("partial", {0, 0}, &ns);
    local = partial_buffers(p);
  }
  served_ramfs srv("partial");
  make_partial_file(srv.ns);
  const std::string out = "/tmp/faultsafe-remote-partial-" + std::to_string(::getpid());
  REQUIRE(wait_exit(spawn({"partial", srv.address, out})) == 0);
  std::ifstream f(out);
  std::stringstream remote;
  remote << f.rdbuf();
  ::unlink(out.c_str());
  CHECK(local.find("e=0 v=1096") != std::string::npos);  // a read stops at the bad page (4096 - 3000)
  CHECK(remote.str() == local);
}

TEST_CASE("kill -9 of clients in the middle of requests: their opens go, their writes stay, others go on") {
  test_support::watchdog wd("client kills", 280s);
  served_ramfs srv("kill");
  auto& [ns, fs, address, rs] = srv;
  process local("local", {0, 0}, &ns);
  local.set_io_timeout(10s);  // a leaked range lock fails the whole-file write below instead of hanging it
  {
    auto fd = local.open("/r/log", O_RDWR | O_CREAT, 0644);
    REQUIRE(fd);
    REQUIRE(local.close(*fd).ok());
  }
  int steady_in[2];
  REQUIRE(::pipe2(steady_in, O_CLOEXEC) == 0);
  const int saved_stdin = ::dup(0);  // the steady client reads the pipe as its stdin
  ::dup2(steady_in[0], 0);
  const pid_t steady = spawn({"steady", address});
  ::dup2(saved_stdin, 0);
  ::close(saved_stdin);
  ::close(steady_in[0]);
  std::mt19937 rng(42);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int rounds = 200;  // every round execs a sanitized child (~10x slower to start)
#else
  constexpr int rounds = 1000;
#endif
  constexpr std::uint64_t region = 8 * 4096;
  int acked_rounds = 0, mid_request = 0;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    const std::uint64_t base = (static_cast<std::uint64_t>(round) % 16) * region;
    int ack[2];
    REQUIRE(::pipe2(ack, O_CLOEXEC) == 0);
    const pid_t w = spawn({"writer", address, std::to_string(base), std::to_string(ack[1]), std::to_string(round)}, -1, ack[1]);
    ::close(ack[1]);
    // Three rounds in four kill the client after it acknowledged 1..64 writes (then at a random point
    // of its next requests); the fourth at a random time, maybe before it connected.
    std::vector<std::uint64_t> acks;
    std::uint64_t v;
    const int wait_acks = round % 4 == 0 ? 0 : 1 + static_cast<int>(rng() % 64);
    for (int k = 0; k < wait_acks && ::read(ack[0], &v, sizeof v) == sizeof v; ++k) acks.push_back(v);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % (wait_acks ? 500 : 6000)));
    ::kill(w, SIGKILL);
    const int st = wait_exit(w);
    REQUIRE((st == 128 + SIGKILL || st == 0));
    while (::read(ack[0], &v, sizeof v) == sizeof v) acks.push_back(v);
    ::close(ack[0]);
    acked_rounds += !acks.empty();
    // Everything of the dead client is released: only the steady client's open is left.
    bool clean = false;
    for (int i = 0; i < 20000 && !clean; ++i) {
      clean = rs.remote_opens() == 1 && fs.srv().open_ocbs() == 1 && rs.connections() == 1;
      if (!clean) std::this_thread::sleep_for(1ms);
    }
    REQUIRE(clean);
    // No acknowledged write is lost.
    auto fd = local.open("/r/log", O_RDWR);
    REQUIRE(fd);
    std::vector<std::uint64_t> got(acks.size());
    if (!acks.empty()) {
      auto r = local.pread(*fd, got.data(), 8 * got.size(), static_cast<off_t>(base));
      REQUIRE(r);
      REQUIRE(*r == 8 * got.size());
      mid_request += acks.size() < 4096;
      for (std::size_t k = 0; k < acks.size(); ++k) REQUIRE(got[k] == acks[k]);
    }
    // No range lock of the dead client is left: a write over the whole region completes.
    if (round % 50 == 0) {
      std::vector<unsigned char> zero(16 * region);
      auto r = local.pwrite(*fd, zero.data(), zero.size(), 0);
      REQUIRE(r);
    } else {
      std::vector<unsigned char> zero(region);
      REQUIRE(local.pwrite(*fd, zero.data(), zero.size(), static_cast<off_t>(base)));
    }
    REQUIRE(local.close(*fd).ok());
  }
  MESSAGE(acked_rounds << " of " << rounds << " killed clients had acknowledged writes; " << mid_request << " were killed while writing");
  CHECK(acked_rounds >= rounds * 3 / 4);  // every round that waited for acknowledgements
  ::close(steady_in[1]);  // the steady client stops at EOF and exits 0 iff every check passed
  CHECK(wait_exit(steady) == 0);
}

TEST_CASE("kill -9 of a server: a client waiting for a reply and later calls get ESHUTDOWN, none hangs") {
  test_support::watchdog wd("server kill", 60s);
  const std::string address = unique_address("srv");
  int out[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  const pid_t srv = spawn({"server", address}, out[1]);
  ::close(out[1]);
  char line[16] = {};
  REQUIRE(::read(out[0], line, sizeof line) > 0);
  ::close(out[0]);
  path_namespace ns;
  REQUIRE(!mount_remote(ns, "/r", address));
  process p("client", {0, 0}, &ns);
  auto fd = p.open("/r/f", O_RDWR | O_CREAT, 0644);
  REQUIRE(fd);
  REQUIRE(p.pwrite(*fd, "abc", 3, 0));
  ::kill(srv, SIGSTOP);
  int st = 0;
  REQUIRE(::waitpid(srv, &st, WUNTRACED) == srv);  // stopped for certain: no thread of it runs any more
  REQUIRE(WIFSTOPPED(st));
  std::atomic<int> in_flight{-1};
  std::thread t([&] {
    char b[3];
    in_flight = p.pread(*fd, b, 3, 0).error().value();
  });
  std::this_thread::sleep_for(100ms);  // the pread is parked waiting for its reply
  CHECK(in_flight.load() == -1);
  ::kill(srv, SIGKILL);
  t.join();
  CHECK(wait_exit(srv) == 128 + SIGKILL);
  CHECK(in_flight.load() == ESHUTDOWN);
  char b[3];
  CHECK(p.pread(*fd, b, 3, 0).error().value() == ESHUTDOWN);
  CHECK(p.open("/r/g", O_RDWR | O_CREAT, 0644).error().value() == ESHUTDOWN);
}

TEST_CASE("a client that forges uid 0 in its messages gets what its real uid gets") {
  if (!root_for("a child with another uid")) return;
  test_support::watchdog wd("forger", 60s);
  constexpr uid_t uid = 4242;
  // The reference: the same calls in-process with the real credentials.
  auto expected = [&](path_namespace& ns) {
    process p("honest", {uid, uid}, &ns);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%d %d %d %d %d\n", p.open("/r/secret", O_RDONLY).error().value(),
                  p.open("/r/mine", O_RDWR).error().value(), p.open("/r/rootdir/x", O_RDWR | O_CREAT, 0644).error().value(),
                  p.chmod("/r/secret", 0666).error().value(), p.unlink("/r/secret").error().value());
    return std::string(buf);
  };
  auto setup = [&](path_namespace& ns) {
    process root("root", {0, 0}, &ns);
    REQUIRE(root.open("/r/secret", O_RDWR | O_CREAT, 0600));
    REQUIRE(root.mkdir("/r/rootdir", 0755).ok());
    REQUIRE(root.open("/r/mine", O_RDWR | O_CREAT, 0600));
    REQUIRE(root.chown("/r/mine", uid, uid).ok());
  };
  std::string want;
  {
    path_namespace ns;
    auto o = files_options(&ns);
    o.dir_mode = 01777;
    ramfs fs(o);
    setup(ns);
    want = expected(ns);
  }
  served_ramfs srv("forge", 01777);
  auto& [ns, fs, address, rs] = srv;
  setup(ns);
  CHECK(role_output({"forger", address, std::to_string(uid)}) == want);
  CHECK(want.find("13 0 13 1 ") == 0);  // EACCES, ok, EACCES, EPERM: the real uid's rights
  process root("root", {0, 0}, &ns);
  CHECK(root.stat("/r/secret").ok());  // the forged unlink did nothing
}

TEST_CASE("a client's supplementary groups are the kernel's (SO_PEERGROUPS): setgroups() gives group access, claims do not") {
  if (!root_for("a child with another uid and other groups")) return;
  test_support::watchdog wd("groups", 60s);
  constexpr uid_t uid = 4243;
  constexpr gid_t club = 5151;
  served_ramfs srv("groups");
  auto& [ns, fs, address, rs] = srv;
  {
    process root("root", {0, 0}, &ns);
    auto fd = root.open("/r/club", O_RDWR | O_CREAT, 0640);  // group club may read, nobody else
    REQUIRE(fd.ok());
    REQUIRE(root.chown("/r/club", 0, club).ok());
    REQUIRE(root.close(*fd).ok());
  }
  // What the child printed: "<open O_RDONLY errno> <open O_RDWR errno>".
  auto run = [&](const std::string& groups, gid_t claimed) {
    return role_output({"member", address, std::to_string(uid), groups, std::to_string(claimed)});
  };
  // A member of club (among other groups, not first): reads; the group has no write permission.
  CHECK(run("100,200," + std::to_string(club) + ",300", 0) == "0 13\n");
  // The 16th group still counts (client_max_groups).
  std::string sixteen;
  for (int i = 1; i <= 15; ++i) sixteen += std::to_string(1000 + i) + ",";
  CHECK(run(sixteen + std::to_string(club), 0) == "0 13\n");
  // Not a member: EACCES, also when it claims club in its own credentials.
  CHECK(run("-", club) == "13 13\n");
  CHECK(run("100,200", club) == "13 13\n");
  CHECK(rs.remote_opens() == 0);  // the children's opens were closed when they exited
}

TEST_CASE("addresses: a filesystem path and the abstract namespace; connect errors") {
  test_support::watchdog wd("addresses", 30s);
  path_namespace ns;
  ramfs fs(files_options(&ns));
  const std::string path = "/tmp/faultsafe-remote-test-" + std::to_string(::getpid()) + ".sock";
  {
    remote_server rs(fs.srv(), {.address = path});
    struct ::stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    path_namespace cns;
    REQUIRE(!mount_remote(cns, "/p", path));
    process p("client", {0, 0}, &cns);
    auto fd = p.open("/p/x", O_RDWR | O_CREAT, 0644);
    REQUIRE(fd);
    CHECK(p.pwrite(*fd, "hello", 5, 0).value_or(0) == 5);
    CHECK(p.close(*fd).ok());
    process local("local", {0, 0}, &ns);
    auto lst = local.stat("/r/x");
    REQUIRE(lst);
    CHECK(lst.value().st_size == 5);
  }
  struct ::stat st{};
  CHECK(::stat(path.c_str(), &st) != 0);  // the listener removed its socket file
  std::error_code ec;
  CHECK(connect_channel(path, ec) == nullptr);
  CHECK((ec.value() == ENOENT || ec.value() == ECONNREFUSED));
  CHECK(connect_channel("@faultsafe-remote-test-nobody-listens", ec) == nullptr);
  CHECK(ec.value() == ECONNREFUSED);
  CHECK(connect_channel("", ec) == nullptr);
  CHECK(ec.value() == EINVAL);
  // A socket that is not a faultsafe listener: EPROTO, not a hang (it sends one wrong datagram).
  const std::string other = unique_address("other");
  const int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  socklen_t len = 0;
  REQUIRE(detail::sock::make_address(other, sa, len));
  REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&sa), len) == 0);
  REQUIRE(::listen(l, 1) == 0);
  std::thread t([&] {
    const int c = ::accept(l, nullptr, nullptr);
    (void)!::send(c, "nope", 4, 0);
    ::close(c);
  });
  CHECK(connect_channel(other, ec) == nullptr);
  CHECK(ec.value() == EPROTO);
  t.join();
  // A listener that never accepts (its backlog holds the connection): ETIMEDOUT after
  // connect_timeout, not a hang; and with the backlog full, connect() itself is bounded too.
  CHECK(connect_channel(other, ec, connect_options{.connect_timeout = 200ms}) == nullptr);
  CHECK(ec.value() == ETIMEDOUT);
  CHECK(connect_channel(other, ec, connect_options{.connect_timeout = 200ms}) == nullptr);
  CHECK(ec.value() == ETIMEDOUT);
  CHECK(connect_channel(other, ec, connect_options{.connect_timeout = 200ms}) == nullptr);
  CHECK(ec.value() == ETIMEDOUT);
  ::close(l);
}

TEST_CASE("read_visit from a client over the socket: ENOTSUP, its visitor is never called; in-process it is served") {
  test_support::watchdog wd("read_visit", 30s);
  served_ramfs srv("visit");
  auto& [ns, fs, address, rs] = srv;
  struct seen {
    int calls = 0;
    static int visit(void* self, const void*, std::size_t) noexcept {
      ++static_cast<seen*>(self)->calls;
      return 0;
    }
  } s;
  process local("local", {0, 0}, &ns);
  auto lfd = local.open("/r/v", O_RDWR | O_CREAT, 0644);
  REQUIRE(lfd);
  REQUIRE(local.pwrite(*lfd, "hello", 5, 0).value_or(0) == 5);
  CHECK(local.pread_visit(*lfd, 5, 0, &seen::visit, &s).value_or(0) == 5);  // the same server, in-process
  CHECK(s.calls == 1);
  path_namespace cns;
  REQUIRE(!mount_remote(cns, "/p", address));
  process p("client", {0, 0}, &cns);
  auto fd = p.open("/p/v", O_RDONLY);
  REQUIRE(fd);
  auto r = p.pread_visit(*fd, 5, 0, &seen::visit, &s);
  CHECK(r.error().value() == ENOTSUP);
  CHECK(s.calls == 1);
  char b[5];
  CHECK(p.pread(*fd, b, 5, 0).value_or(0) == 5);  // the connection goes on
  CHECK(std::string(b, 5) == "hello");
  CHECK(p.close(*fd).ok());
  CHECK(local.close(*lfd).ok());
}

TEST_CASE("a client that writes garbage into its slot gets an error, the server goes on") {
  test_support::watchdog wd("garbage", 30s);
  served_ramfs srv("garbage");
  auto& [ns, fs, address, rs] = srv;
  // A hand-made connection: the raw slot, as a hostile client sees it.
  sockaddr_un sa{};
  socklen_t len = 0;
  REQUIRE(detail::sock::make_address(address, sa, len));
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), len) == 0);
  detail::sock::conn_header h{};
  int memfd = -1;
  REQUIRE(!detail::sock::receive_hello(fd, h, memfd));
  const std::size_t size = detail::sock::page + h.slot_stride * h.slots;
  CHECK(::ftruncate(memfd, 4096) != 0);  // sealed: the client cannot shrink what the server maps
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  REQUIRE(base != MAP_FAILED);
  detail::sock::slot& s = *detail::sock::slot_at(base, h.slot_stride, 0);
  auto ask = [&](auto fill) {
    fill(s);
    s.state.store(detail::sock::st_request, std::memory_order_release);
    (void)detail::futex_wake(&s.state, 1, detail::futex_scope::shared);
    while ((s.state.load(std::memory_order_acquire) & detail::sock::st_phase) != detail::sock::st_done) std::this_thread::sleep_for(100us);
    return s.error;
  };
  io_open_request q{client_info{0, 0, 0}, O_RDWR | O_CREAT, 0644};
  const std::string name = "g";
  auto base_fill = [&](detail::sock::slot& x) {
    x.type = static_cast<std::uint32_t>(io_msg::open);
    x.flags = detail::sock::fl_inline;
    x.header_len = sizeof q;
    std::memcpy(x.header, &q, sizeof q);
    x.payload_len = name.size();
    std::memcpy(x.data, name.data(), name.size());
    x.reply_data_len = 0;
    x.reply_header_len = 0;
  };
  CHECK(ask([&](auto& x) { base_fill(x); x.header_len = 100000; }) == EINVAL);
  CHECK(ask([&](auto& x) { base_fill(x); x.payload_len = std::uint64_t{1} << 40; }) == EINVAL);
  CHECK(ask([&](auto& x) { base_fill(x); x.reply_header_len = 1 << 20; }) == EINVAL);
  CHECK(ask([&](auto& x) { base_fill(x); x.flags = 0; x.payload_addr = 16; }) == EFAULT);  // by address: a bad one
  CHECK(ask([&](auto& x) { base_fill(x); x.header_len = 3; }) == EBADMSG);
  CHECK(ask([&](auto& x) { base_fill(x); x.type = 250; }) == ENOSYS);
  CHECK(ask(base_fill) == 0);  // a well-formed open still works on the same connection
  ::munmap(base, size);
  ::close(memfd);
  ::close(fd);  // the open it held is closed for it
  for (int i = 0; i < 20000 && rs.connections_gone() < 1; ++i) std::this_thread::sleep_for(1ms);
  CHECK(rs.connections_gone() == 1);
  CHECK(fs.srv().open_ocbs() == 0);
}

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--role") {
    const std::string role = argv[2];
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    if (role == "sequence" && argc == 7)
      return role_sequence(argv[3], static_cast<unsigned>(std::stoul(argv[4])), argv[5], std::string(argv[6]) == "eager");
    if (role == "writer" && argc == 7)
      return role_writer(argv[3], std::stoull(argv[4]), std::stoi(argv[5]), static_cast<unsigned>(std::stoul(argv[6])));
    if (role == "steady" && argc == 4) return role_steady(argv[3]);
    if (role == "server" && argc == 4) return role_server(argv[3]);
    if (role == "partial" && argc == 5) return role_partial(argv[3], argv[4]);
    if (role == "forger" && argc == 5) return role_forger(argv[3], static_cast<uid_t>(std::stoul(argv[4])));
    if (role == "member" && argc == 7)
      return role_member(argv[3], static_cast<uid_t>(std::stoul(argv[4])), argv[5], static_cast<gid_t>(std::stoul(argv[6])));
    return 100;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
