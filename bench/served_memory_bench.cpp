// bench_served: a sequential scan of a mapping served by the pager of ANOTHER OS process, beside the
// kernel's own MAP_SHARED mapping of the same memfd, in one run.
//
//   served_scan/kernel       the client process maps the memfd MAP_SHARED itself (page cache populated)
//                            and reads one byte per page of 256 MiB
//   served_scan/pager_<n>t   the client maps it through served_memory (MINOR, registered with its
//                            userfaultfd, which the server process adopted); the server's pager (n fault
//                            threads, 2 MiB fault-around with read-ahead: the defaults) serves every
//                            first touch with UFFDIO_CONTINUE; same scan
//
// The server is this process (Google Benchmark runs here); the client is a forked child that maps,
// scans (timed there, reported back: manual time) and unmaps on each request. The ratio line is the
// kernel's time over the served time (throughput ratio; goal >= 0.70), from the median of the
// repetitions (run with --benchmark_repetitions=5 or more on a shared machine).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "faultsafe/vm/aspace.hpp"
#include "faultsafe/vm/pager.hpp"
#include "faultsafe/vm/served_memory.hpp"

#include "../tests/support/fdpass.hpp"
#include "bench_report.hpp"

namespace {

using namespace faultsafe;
using test_support::wire_msg;
using test_support::wire_recv;
using test_support::wire_send;

constexpr std::size_t kPage = 4096;
constexpr std::size_t kScanBytes = std::size_t{256} << 20;
enum op : std::uint32_t { hello = 1, session, scan_kernel, scan_served, track, ack, result };

// The file: a memfd whose pages are all in the page cache (allocated: zeros), as a server's store.
int make_memfd(std::size_t size) {
  const int fd = ::memfd_create("bench", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0 || ::fallocate(fd, 0, 0, static_cast<off_t>(size)) != 0)
    std::abort();
  return fd;
}

// One byte per page, front to back; the client's own clock.
double touch_seq(const volatile char* p) {
  const auto t0 = std::chrono::steady_clock::now();
  unsigned sum = 0;
  for (std::size_t pg = 0; pg < kScanBytes / kPage; ++pg) sum += static_cast<unsigned char>(p[pg * kPage]);
  benchmark::DoNotOptimize(sum);
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
}

// The client process: answers scan requests until the socket closes. Returns its exit code.
int client_main(int sock, int memfd) {
  std::unique_ptr<served_memory> sm;
  wire_msg m;
  while (wire_recv(sock, m, nullptr, std::chrono::hours(1))) {
    double ns = 0;
    if (m.op == session) {  // a fresh userfaultfd for a fresh server-side aspace and pager
      sm.reset();
      sm = std::make_unique<served_memory>();
      if (sm->watch_server(::getppid()) || !wire_send(sock, wire_msg{hello, sm->features(), 0, 0}, sm->userfaultfd())) return 2;
      continue;
    }
    if (m.op == scan_kernel) {
      void* p = ::mmap(nullptr, kScanBytes, PROT_READ, MAP_SHARED, memfd, 0);
      if (p == MAP_FAILED) return 3;
      ns = touch_seq(static_cast<const volatile char*>(p));
      ::munmap(p, kScanBytes);
    } else if (m.op == scan_served) {
      void* p = nullptr;
      if (!sm || sm->map(served_map_request{kScanBytes, PROT_READ, true, memfd, 0}, p)) return 4;
      if (!wire_send(sock, wire_msg{track, reinterpret_cast<std::uint64_t>(p), kScanBytes, 0}) || !wire_recv(sock, m) || m.a != 0)
        return 5;
      ns = touch_seq(static_cast<const volatile char*>(p));
      if (sm->unmap(p, kScanBytes)) return 6;
    } else {
      return 7;
    }
    if (!wire_send(sock, wire_msg{result, static_cast<std::uint64_t>(ns), 0, 0})) return 8;
  }
  return 0;
}

struct server_state {
  int sock = -1;
  int memfd = -1;
  pid_t child = -1;
  memfd_page_source* src = nullptr;
  aspace* as = nullptr;
};
server_state g;

// One scan in the client: `how` is scan_kernel or scan_served. Returns the client's ns, or -1.
double one_scan(std::uint32_t how) {
  if (!wire_send(g.sock, wire_msg{how, 0, 0, 0})) return -1;
  wire_msg m;
  for (;;) {
    if (!wire_recv(g.sock, m, nullptr, std::chrono::seconds(60))) return -1;
    if (m.op == result) return static_cast<double>(m.a);
    if (m.op != track) return -1;
    tracked_mapping t;
    t.addr = reinterpret_cast<void*>(m.a);
    t.length = m.b;
    t.shared = true;
    t.file = file_backing{g.memfd, 0, nullptr, g.src};
    const auto ec = g.as->try_track(t);
    if (!wire_send(g.sock, wire_msg{ack, static_cast<std::uint64_t>(ec.value()), 0, 0})) return -1;
  }
}

void run(benchmark::State& state, std::uint32_t how, unsigned threads) {
  // Served: a session of its own (the client's fresh userfaultfd, adopted by a fresh aspace).
  std::unique_ptr<aspace> as;
  std::unique_ptr<pager> pg;
  if (how == scan_served) {
    wire_msg m;
    int ufd = -1;
    if (!wire_send(g.sock, wire_msg{session, 0, 0, 0}) || !wire_recv(g.sock, m, &ufd) || m.op != hello) {
      state.SkipWithError("client lost");
      return;
    }
    as = std::make_unique<aspace>(adopt_userfaultfd, ufd, m.a, aspace_options{.name = "client"});
    pg = std::make_unique<pager>(*as, pager_options{.fault_threads = threads});
    g.as = as.get();
  }
  for (auto _ : state) {
    const double ns = one_scan(how);
    if (ns < 0) {
      state.SkipWithError("client lost");
      break;
    }
    state.SetIterationTime(ns / 1e9);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kScanBytes));
}

void served_kernel(benchmark::State& s) { run(s, scan_kernel, 0); }
void served_pager_1t(benchmark::State& s) { run(s, scan_served, 1); }
void served_pager_2t(benchmark::State& s) { run(s, scan_served, 2); }

}  // namespace

BENCHMARK(served_kernel)->Name("served_scan/kernel")->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(served_pager_1t)->Name("served_scan/pager_1t")->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(served_pager_2t)->Name("served_scan/pager_2t")->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);

int main(int argc, char** argv) {
  const bool listing = fs_bench::listing_only(argc, argv);  // before Initialize() consumes the flag
  std::string why;
  if (!listing && probe_userfaultfd(why)) {
    std::fprintf(stderr, "bench_served: skipped: %s\n", why.c_str());
    return 77;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (listing) {
    benchmark::RunSpecifiedBenchmarks();
    return 0;
  }
  g.memfd = make_memfd(kScanBytes);
  test_support::wire_pair w;
  g.child = ::fork();
  if (g.child < 0) return 1;
  if (g.child == 0) ::_exit(client_main(w.keep(1), g.memfd));
  g.sock = w.keep(0);
  memfd_page_source src(g.memfd);
  g.src = &src;
  fs_bench::reporter rep;
  fs_bench::reporter::print_header("bench_served: cross-process mmap sequential scan (256 MiB, 2 MiB fault-around)");
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  ::close(g.sock);
  bool timed_out = false;
  (void)test_support::wait_child(g.child, timed_out);
  std::printf("\n");
  const double k = rep.real_ns("served_scan/kernel");
  for (const char* n : {"served_scan/kernel", "served_scan/pager_1t", "served_scan/pager_2t"})
    std::printf("  %-24s %8.1f ns per page (median of %zu repetitions)\n", n, rep.real_ns(n) / (kScanBytes / kPage), rep.repetitions(n));
  fs_bench::reporter::ratio_line("served scan: kernel time / served (1 fault thread) time", k, rep.real_ns("served_scan/pager_1t"), "ns",
                                 "throughput ratio; goal >= 0.70");
  fs_bench::reporter::ratio_line("served scan: kernel time / served (2 fault threads) time", k, rep.real_ns("served_scan/pager_2t"), "ns",
                                 "throughput ratio; goal >= 0.70");
  return 0;
}
