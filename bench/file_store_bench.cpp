// bench_file_store: how many small files one ramfs holds, and what the store costs per access, beside
// the kernel's tmpfs in the same run.
//
//   create/ramfs    one ramfs, one client: open(O_CREAT) + pwrite 4 KiB + close per file, under
//                   RLIMIT_NOFILE = 1024 (the default soft limit), until the first failure or --files
//                   files (default 100000). Counters: files made, ns per file, RSS and page-table
//                   growth per file, the errno of the first failure (0: none).
//   create/tmpfs    the baseline: the same calls of the kernel on a tmpfs directory (/dev/shm).
//   pread4k/*       4 KiB pread of one file among --files (ramfs: through the server; tmpfs: pread(2)).
//   scan/*          read one byte per page of a 64 MiB file: a client's MAP_SHARED mapping served by the
//                   pager (ramfs) beside the kernel's own MAP_SHARED mapping of a tmpfs file.
//
// main() prints the ratios at the end. Usage: bench_file_store [--files=N] [benchmark flags].
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/process_memory.hpp>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

using namespace faultsafe;
using clock_type = std::chrono::steady_clock;
constexpr std::size_t kFileBytes = 4096;
constexpr std::size_t kScanBytes = std::size_t{64} << 20;
std::size_t g_files = 100000;
std::map<std::string, double> g_ns;      // name -> ns per unit
std::map<std::string, double> g_counts;  // name -> files made

// kB of a /proc/self/status field (VmRSS, VmPTE, ...).
long status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t fl = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, fl, field) == 0 && line.size() > fl && line[fl] == ':') return std::atol(line.c_str() + fl + 1);
  return -1;
}

// RLIMIT_NOFILE lowered to 1024 for the scope (the default soft limit on Linux distributions).
struct fd_limit {
  rlimit old{};
  explicit fd_limit(rlim_t n) {
    ::getrlimit(RLIMIT_NOFILE, &old);
    rlimit lim = old;
    lim.rlim_cur = std::min<rlim_t>(n, old.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  ~fd_limit() { ::setrlimit(RLIMIT_NOFILE, &old); }
};

std::string name_of(std::size_t i) { return "f" + std::to_string(i); }

void create_ramfs(benchmark::State& st) {
  const std::vector<char> data(kFileBytes, 'x');
  for (auto _ : st) {
    fd_limit lim(1024);
    path_namespace names;
    auto fs = std::make_unique<ramfs>(ramfs_options{.name = "ramfs", .prefix = "/r", .ns = &names});
    process bob("bob", {}, &names);
    const long rss0 = status_kb("VmRSS"), pte0 = status_kb("VmPTE");
    std::size_t made = 0;
    int err = 0;
    const auto t0 = clock_type::now();
    for (; made < g_files; ++made) {
      auto fd = bob.open("/r/" + name_of(made), O_RDWR | O_CREAT, 0644);
      if (!fd) {
        err = fd.error().value();
        break;
      }
      auto n = bob.pwrite(*fd, data.data(), data.size(), 0);
      (void)bob.close(*fd);
      if (!n || *n != data.size()) {
        err = n ? EIO : n.error().value();
        break;
      }
    }
    const double ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
    st.SetIterationTime(ns / 1e9);
    const long rss1 = status_kb("VmRSS"), pte1 = status_kb("VmPTE");
    st.counters["files"] = static_cast<double>(made);
    st.counters["errno"] = err;
    st.counters["ns_per_file"] = made ? ns / static_cast<double>(made) : 0;
    st.counters["rss_B_per_file"] = made ? 1024.0 * static_cast<double>(rss1 - rss0) / static_cast<double>(made) : 0;
    st.counters["pte_B_per_file"] = made ? 1024.0 * static_cast<double>(pte1 - pte0) / static_cast<double>(made) : 0;
    g_ns["create/ramfs"] = made ? ns / static_cast<double>(made) : 0;
    g_counts["create/ramfs"] = static_cast<double>(made);
    if (err != 0)
      std::fprintf(stderr, "create/ramfs: file %zu failed: %s\n", made, std::strerror(err));
    fs->stop();
  }
}

std::string tmpfs_dir() {
  char tmpl[] = "/dev/shm/fs-bench-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  return d ? d : "";
}
void remove_dir(const std::string& dir, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) ::unlink((dir + "/" + name_of(i)).c_str());
  ::rmdir(dir.c_str());
}

void create_tmpfs(benchmark::State& st) {
  const std::vector<char> data(kFileBytes, 'x');
  for (auto _ : st) {
    const std::string dir = tmpfs_dir();
    if (dir.empty()) return st.SkipWithError("mkdtemp in /dev/shm failed");
    std::size_t made = 0;
    const auto t0 = clock_type::now();
    for (; made < g_files; ++made) {
      const int fd = ::open((dir + "/" + name_of(made)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) break;
      const ssize_t n = ::pwrite(fd, data.data(), data.size(), 0);
      ::close(fd);
      if (n != static_cast<ssize_t>(data.size())) break;
    }
    const double ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
    st.SetIterationTime(ns / 1e9);
    st.counters["files"] = static_cast<double>(made);
    st.counters["ns_per_file"] = made ? ns / static_cast<double>(made) : 0;
    g_ns["create/tmpfs"] = made ? ns / static_cast<double>(made) : 0;
    g_counts["create/tmpfs"] = static_cast<double>(made);
    remove_dir(dir, made);
  }
}

// 4 KiB preads spread over min(files, 1000) files (one open each), through the server.
constexpr std::size_t kReadFiles = 1000;
void pread4k_ramfs(benchmark::State& st) {
  path_namespace ns;
  ramfs fs(ramfs_options{.name = "ramfs", .prefix = "/r", .ns = &ns});
  process bob("bob", {}, &ns);
  std::vector<char> buf(kFileBytes, 'y');
  std::vector<int> fds;
  for (std::size_t i = 0; i < kReadFiles; ++i) {
    auto fd = bob.open("/r/" + name_of(i), O_RDWR | O_CREAT, 0644);
    if (!fd || bob.pwrite(*fd, buf.data(), buf.size(), 0).value_or(0) != buf.size()) return st.SkipWithError("setup");
    fds.push_back(*fd);
  }
  std::size_t i = 0;
  for (auto _ : st) {
    if (bob.pread(fds[i++ % kReadFiles], buf.data(), kFileBytes, 0).value_or(0) != kFileBytes) st.SkipWithError("pread");
  }
}
void pread4k_tmpfs(benchmark::State& st) {
  const std::string dir = tmpfs_dir();
  std::vector<char> buf(kFileBytes, 'y');
  std::vector<int> fds;
  for (std::size_t i = 0; i < kReadFiles; ++i) {
    const int fd = ::open((dir + "/" + name_of(i)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::pwrite(fd, buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) return st.SkipWithError("setup");
    fds.push_back(fd);
  }
  std::size_t i = 0;
  for (auto _ : st) {
    if (::pread(fds[i++ % kReadFiles], buf.data(), kFileBytes, 0) != static_cast<ssize_t>(kFileBytes)) st.SkipWithError("pread");
  }
  for (int fd : fds) ::close(fd);
  remove_dir(dir, kReadFiles);
}

// One byte per page of a fresh MAP_SHARED mapping of a 64 MiB file (populated in the page cache).
double scan(const volatile unsigned char* p) {
  const auto t0 = clock_type::now();
  unsigned sum = 0;
  for (std::size_t off = 0; off < kScanBytes; off += 4096) sum += p[off];
  benchmark::DoNotOptimize(sum);
  return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
}
void scan_ramfs(benchmark::State& st) {
  path_namespace ns;
  ramfs fs(ramfs_options{.name = "ramfs", .prefix = "/r", .ns = &ns});
  for (std::size_t i = 0; i < 64; ++i) {  // neighbours: the scanned file is one of many
    process tmp("tmp", {}, &ns);
    auto fd = tmp.open("/r/" + name_of(i), O_RDWR | O_CREAT, 0644);
    if (fd) (void)tmp.close(*fd);
  }
  process bob("bob", {}, &ns);
  announce_faulting_thread();
  auto fd = bob.open("/r/big", O_RDWR | O_CREAT, 0644);
  if (!fd) return st.SkipWithError("open");
  std::vector<char> chunk(1 << 20, 'z');
  for (std::size_t off = 0; off < kScanBytes; off += chunk.size())
    if (bob.pwrite(*fd, chunk.data(), chunk.size(), static_cast<off_t>(off)).value_or(0) != chunk.size()) return st.SkipWithError("write");
  double best = 1e300;
  for (auto _ : st) {
    auto m = bob.mmap(nullptr, kScanBytes, PROT_READ, MAP_SHARED, *fd, 0);
    if (!m) return st.SkipWithError("mmap");
    const double ns = scan(static_cast<const unsigned char*>(*m));
    (void)bob.munmap(*m, kScanBytes);
    st.SetIterationTime(ns / 1e9);
    best = std::min(best, ns);
  }
  g_ns["scan/ramfs"] = best / static_cast<double>(kScanBytes / 4096);
}
void scan_tmpfs(benchmark::State& st) {
  const std::string dir = tmpfs_dir();
  const std::string path = dir + "/big";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  std::vector<char> chunk(1 << 20, 'z');
  for (std::size_t off = 0; off < kScanBytes; off += chunk.size())
    if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(chunk.size())) return st.SkipWithError("write");
  double best = 1e300;
  for (auto _ : st) {
    void* m = ::mmap(nullptr, kScanBytes, PROT_READ, MAP_SHARED, fd, 0);
    const double ns = scan(static_cast<const unsigned char*>(m));
    ::munmap(m, kScanBytes);
    st.SetIterationTime(ns / 1e9);
    best = std::min(best, ns);
  }
  ::close(fd);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
  g_ns["scan/tmpfs"] = best / static_cast<double>(kScanBytes / 4096);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--files=", 8) == 0) g_files = std::strtoull(argv[i] + 8, nullptr, 10);
    else rest.push_back(argv[i]);
  }
  int rc = static_cast<int>(rest.size());
  std::string why;
  const bool have_uffd = !probe_userfaultfd(why);
  benchmark::RegisterBenchmark("create/ramfs", create_ramfs)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
  benchmark::RegisterBenchmark("create/tmpfs", create_tmpfs)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
  benchmark::RegisterBenchmark("pread4k/ramfs", pread4k_ramfs)->Unit(benchmark::kNanosecond)->Repetitions(3);
  benchmark::RegisterBenchmark("pread4k/tmpfs", pread4k_tmpfs)->Unit(benchmark::kNanosecond)->Repetitions(3);
  if (have_uffd) {
    benchmark::RegisterBenchmark("scan/ramfs", scan_ramfs)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
    benchmark::RegisterBenchmark("scan/tmpfs", scan_tmpfs)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
  } else {
    std::fprintf(stderr, "scan/*: skipped (%s)\n", why.c_str());
  }
  fs_bench::reporter rep;
  if (const auto code = fs_bench::run_benchmarks(rc, rest.data(), rep)) return *code;
  for (const char* name : {"pread4k/ramfs", "pread4k/tmpfs"})  // the fastest repetition, real time
    if (const double ns = rep.real_ns(name, fs_bench::stat::best); ns > 0) g_ns[name] = ns;
  auto show = [](const char* what, const char* ours, const char* base, const char* unit) {
    if (!g_ns.count(ours) || !g_ns.count(base) || g_ns[ours] == 0) return;
    std::printf("%-34s %10.1f %s vs %10.1f %s: ratio %.2fx\n", what, g_ns[ours], unit, g_ns[base], unit, g_ns[ours] / g_ns[base]);
  };
  std::printf("\n== bench_file_store (--files=%zu, RLIMIT_NOFILE 1024 for ramfs) ==\n", g_files);
  if (g_counts.count("create/ramfs"))
    std::printf("files made: ramfs %.0f, tmpfs %.0f\n", g_counts["create/ramfs"], g_counts.count("create/tmpfs") ? g_counts["create/tmpfs"] : 0.0);
  show("create 4 KiB file: ramfs vs tmpfs", "create/ramfs", "create/tmpfs", "ns");
  show("pread 4 KiB: ramfs vs tmpfs", "pread4k/ramfs", "pread4k/tmpfs", "ns");
  show("mmap scan per page: ramfs vs tmpfs", "scan/ramfs", "scan/tmpfs", "ns");
  return 0;
}
