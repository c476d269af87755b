// Round trips to a server in another OS process (ipc/socket_transport.hpp, resmgr/remote.hpp), each
// beside its baselines of the same run:
// - pread of 4 KiB from a ramfs served by another process, vs the kernel's own pread(2) of a tmpfs
//   file (/dev/shm), vs a bare cross-process shared-memory spin ping-pong, vs a pipe round trip;
// - pread of 1 MiB from the other process vs the kernel's pread(2) of tmpfs (throughput); what a user
//   meets next: 16 KiB and 64 KiB (past the default inline_max: by process_vm_writev), and 1..cores
//   clients at once (one connection each) vs as many threads calling pread(2);
// - the crossover of MsgWrite across processes: the copy costs alone (two memcpy through a slot vs
//   one process_vm_writev into another process, one thread: no scheduling in the figure), and the
//   same preads through a connection that copies every reply through the shared slot (inline) and
//   through one that always uses process_vm_writev;
// - the first cross-process mmap of a file (it moves the file's bytes out of the store into a memfd of
//   its own: resmgr/file_store.hpp) vs an mmap of a file mapped before (no move), of a file of 4 KiB and
//   of 1 MiB: only the mmap call is timed (the file's creation, munmap, close and unlink are paused).
// The server, the ping-pong partner and the pipe echo are children forked at the start of main(),
// before any thread exists. All figures are real (wall-clock) time per iteration.
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_report.hpp"

namespace {

constexpr std::size_t file_size = 2 << 20;
std::string g_inline_addr, g_vm_addr, g_default_addr;
std::atomic<std::uint32_t>* g_ping = nullptr;  // shared page: the spin ping-pong word
int g_pipe_to = -1, g_pipe_from = -1;
const char* const tmpfs_file = "/dev/shm/faultsafe-remote-bench";

constexpr std::uint32_t ping_park = 0xfffffffe, ping_quit = 0xffffffff;

[[noreturn]] void serve(const std::string& base, int ready) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  faultsafe::path_namespace ns;
  faultsafe::ramfs_options o;
  o.name = "benchfs";
  o.prefix = "/b";
  o.ns = &ns;
  o.file.max_size = 64 << 20;
  faultsafe::ramfs fs(o);
  {
    faultsafe::process p("init", {0, 0}, &ns);
    const int fd = *p.open("/b/f", O_RDWR | O_CREAT, 0644);
    std::vector<unsigned char> d(file_size, 0x5a);
    (void)p.pwrite(fd, d.data(), d.size(), 0);
    (void)p.close(fd);
  }
  faultsafe::remote_server def(fs.srv(), {.address = base + "-default"});
  faultsafe::remote_server in(fs.srv(), {.address = base + "-inline", .slots = 2, .inline_max = 1 << 20});
  faultsafe::remote_server vm(fs.srv(), {.address = base + "-vm", .slots = 2, .inline_max = 0});
  (void)!::write(ready, "r", 1);
  for (;;) ::pause();
}

[[noreturn]] void ping_partner() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::atomic<std::uint32_t>& w = *g_ping;
  for (;;) {
    std::uint32_t v = w.load(std::memory_order_acquire);
    if (v == ping_quit) std::_Exit(0);
    if (v == ping_park || v == 0) {
      (void)faultsafe::detail::futex_wait_until(&w, v, faultsafe::detail::futex_clock::time_point::max(),
                                                faultsafe::detail::futex_scope::shared);
      continue;
    }
    if (v & 1) w.store(v + 1, std::memory_order_release);
    else faultsafe::detail::cpu_relax();
  }
}

[[noreturn]] void pipe_echo(int in, int out) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  char c;
  while (::read(in, &c, 1) == 1)
    if (::write(out, &c, 1) != 1) break;
  std::_Exit(0);
}

void BM_KernelPreadTmpfs(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const int fd = ::open(tmpfs_file, O_RDONLY);
  std::vector<unsigned char> buf(n);
  for (auto _ : state) {
    const ssize_t r = ::pread(fd, buf.data(), n, 0);
    benchmark::DoNotOptimize(r);
  }
  ::close(fd);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KernelPreadTmpfs)->Arg(4096)->Arg(16 << 10)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime();

void remote_pread(benchmark::State& state, const std::string& address, bool consume = false) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  faultsafe::path_namespace ns;
  std::error_code ec = faultsafe::mount_remote(ns, "/b", address);
  if (ec) {
    state.SkipWithError(("connect: " + ec.message()).c_str());
    return;
  }
  faultsafe::process p("client", {0, 0}, &ns);
  const int fd = *p.open("/b/f", O_RDONLY);
  std::vector<unsigned char> buf(n);
  for (auto _ : state) {
    auto r = p.pread(fd, buf.data(), n, 0);
    if (!r || *r != n) {
      state.SkipWithError("pread failed");
      break;
    }
    if (consume) {  // the client uses what it read: one load per cache line
      unsigned char x = 0;
      for (std::size_t i = 0; i < n; i += 64) x ^= buf[i];
      benchmark::DoNotOptimize(x);
    }
  }
  (void)p.close(fd);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.SetItemsProcessed(state.iterations());
}
void BM_RemotePread(benchmark::State& state) { remote_pread(state, g_default_addr); }
BENCHMARK(BM_RemotePread)->Arg(4096)->Arg(16 << 10)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime();

// Several clients at once: each thread is a client of its own connection (as another process would
// be), reading 4 KiB; beside as many threads calling the kernel's pread(2) of tmpfs. Throughput of all.
void BM_RemotePreadClients(benchmark::State& state) { remote_pread(state, g_default_addr); }
void BM_KernelPreadTmpfsClients(benchmark::State& state) { BM_KernelPreadTmpfs(state); }
BENCHMARK(BM_RemotePreadClients)->Arg(4096)->Apply(fs_bench::scaling);
BENCHMARK(BM_KernelPreadTmpfsClients)->Arg(4096)->Apply(fs_bench::scaling);

// The same pread from a ramfs in this process (the in-process channel): what the transport adds.
void BM_LocalPread(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  static faultsafe::path_namespace ns;
  static faultsafe::ramfs fs([] {
    faultsafe::ramfs_options o;
    o.name = "localfs";
    o.prefix = "/l";
    o.ns = &ns;
    o.file.max_size = 64 << 20;
    return o;
  }());
  faultsafe::process p("local", {0, 0}, &ns);
  const int fd = *p.open("/l/f", O_RDWR | O_CREAT, 0644);
  std::vector<unsigned char> buf(n, 0x5a);
  (void)p.pwrite(fd, buf.data(), n, 0);
  for (auto _ : state) {
    auto r = p.pread(fd, buf.data(), n, 0);
    benchmark::DoNotOptimize(r);
  }
  (void)p.close(fd);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LocalPread)->Arg(4096)->Arg(1 << 20)->UseRealTime();

// The first cross-process mmap of a file (the move into its own memfd) and a later one (none).
void remote_mmap(benchmark::State& state, bool first) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  faultsafe::path_namespace ns;
  if (auto ec = faultsafe::mount_remote(ns, "/b", g_default_addr)) {
    state.SkipWithError(("connect: " + ec.message()).c_str());
    return;
  }
  faultsafe::process p("client", {0, 0}, &ns);
  {  // the connection's first served mapping hands the userfaultfd over: not part of the figure
    const int fd = *p.open("/b/f", O_RDONLY);
    auto m = p.mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (!m) {
      state.SkipWithError(("mmap: " + m.error().message()).c_str());
      return;
    }
    (void)p.munmap(*m, 4096);
    (void)p.close(fd);
  }
  const std::vector<unsigned char> d(n, 0x6b);
  const std::string kept = "/b/mapped-" + std::to_string(n);
  int fd = -1;
  std::uint64_t i = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::string path = first ? "/b/m" + std::to_string(n) + "-" + std::to_string(i++) : kept;
    if (fd < 0) {
      fd = *p.open(path, O_RDWR | O_CREAT, 0644);
      (void)p.pwrite(fd, d.data(), n, 0);
    }
    state.ResumeTiming();
    auto m = p.mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0);
    state.PauseTiming();
    if (!m) {
      state.SkipWithError(("mmap: " + m.error().message()).c_str());
      break;
    }
    (void)p.munmap(*m, n);
    if (first) {
      (void)p.close(fd);
      (void)p.unlink(path);
      fd = -1;
    }
    state.ResumeTiming();
  }
  if (fd >= 0) (void)p.close(fd);
  state.SetItemsProcessed(state.iterations());
}
void BM_RemoteMmapFirst(benchmark::State& state) { remote_mmap(state, true); }
void BM_RemoteMmapAgain(benchmark::State& state) { remote_mmap(state, false); }
BENCHMARK(BM_RemoteMmapFirst)->Arg(4096)->Arg(1 << 20)->UseRealTime();
BENCHMARK(BM_RemoteMmapAgain)->Arg(4096)->Arg(1 << 20)->UseRealTime();

// The crossover: every size through the slot (inline) and by process_vm_writev (vm).
void BM_RemotePreadInline(benchmark::State& state) { remote_pread(state, g_inline_addr); }
void BM_RemotePreadVm(benchmark::State& state) { remote_pread(state, g_vm_addr); }
void crossover_sizes(benchmark::internal::Benchmark* b) {
  for (int s = 1024; s <= (512 << 10); s *= 2) b->Arg(s);
  b->UseRealTime();
}
BENCHMARK(BM_RemotePreadInline)->Apply(crossover_sizes);
BENCHMARK(BM_RemotePreadVm)->Apply(crossover_sizes);
// The same, when the client then reads what it got (one load per line): by process_vm_writev the
// bytes sit in the server core's cache and the client's first use pulls them across; through the slot
// the client's own copy already did.
void BM_RemotePreadInlineUsed(benchmark::State& state) { remote_pread(state, g_inline_addr, true); }
void BM_RemotePreadVmUsed(benchmark::State& state) { remote_pread(state, g_vm_addr, true); }
BENCHMARK(BM_RemotePreadInlineUsed)->Apply(crossover_sizes);
BENCHMARK(BM_RemotePreadVmUsed)->Apply(crossover_sizes);

// The copy costs behind the crossover, without the round trip (one thread, no scheduling in the
// figure): a reply through the slot is two copies (the server into the shared slot, the client out
// of it); by address it is one process_vm_writev into the client (here: a passive child process,
// its buffer at the address this process had before fork()).
unsigned char* g_remote_buf = nullptr;  // 1 MiB, at the same address in the passive child
pid_t g_passive = 0;
void BM_CopyThroughSlot(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<unsigned char> src(n, 0x5a), slot(n), dst(n);
  for (auto _ : state) {
    std::memcpy(slot.data(), src.data(), n);
    benchmark::ClobberMemory();
    std::memcpy(dst.data(), slot.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
void BM_ProcessVmWritev(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<unsigned char> src(n, 0x5a);
  for (auto _ : state) {
    struct iovec l{src.data(), n}, r{g_remote_buf, n};
    if (::process_vm_writev(g_passive, &l, 1, &r, 1, 0) != static_cast<ssize_t>(n)) {
      state.SkipWithError("process_vm_writev");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
void copy_sizes(benchmark::internal::Benchmark* b) {
  for (int s = 256; s <= (1 << 20); s *= 2) b->Arg(s);
}
BENCHMARK(BM_CopyThroughSlot)->Apply(copy_sizes);
BENCHMARK(BM_ProcessVmWritev)->Apply(copy_sizes);

void BM_SharedMemorySpinPingPong(benchmark::State& state) {
  std::atomic<std::uint32_t>& w = *g_ping;
  std::uint32_t v = 1;
  w.store(v, std::memory_order_release);
  (void)faultsafe::detail::futex_wake(&w, 1, faultsafe::detail::futex_scope::shared);
  while (w.load(std::memory_order_acquire) != v + 1) faultsafe::detail::cpu_relax();
  for (auto _ : state) {
    v += 2;
    w.store(v, std::memory_order_release);
    while (w.load(std::memory_order_acquire) != v + 1) faultsafe::detail::cpu_relax();
  }
  w.store(ping_park, std::memory_order_release);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SharedMemorySpinPingPong)->UseRealTime();

void BM_PipeRoundTrip(benchmark::State& state) {
  char c = 'x';
  for (auto _ : state) {
    if (::write(g_pipe_to, &c, 1) != 1 || ::read(g_pipe_from, &c, 1) != 1) {
      state.SkipWithError("pipe");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PipeRoundTrip)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  const bool listing = fs_bench::listing_only(argc, argv);
  std::vector<pid_t> children;
  if (!listing) {
    const std::string base = "@faultsafe-remote-bench-" + std::to_string(::getpid());
    g_default_addr = base + "-default";
    g_inline_addr = base + "-inline";
    g_vm_addr = base + "-vm";
    {  // the tmpfs baseline file
      const int fd = ::open(tmpfs_file, O_RDWR | O_CREAT | O_TRUNC, 0644);
      std::vector<unsigned char> d(file_size, 0x5a);
      if (fd < 0 || ::write(fd, d.data(), d.size()) != static_cast<ssize_t>(d.size())) return 1;
      ::close(fd);
    }
    int ready[2];
    if (::pipe(ready) != 0) return 1;
    pid_t pid = ::fork();
    if (pid == 0) serve(base, ready[1]);
    children.push_back(pid);
    char c;
    if (::read(ready[0], &c, 1) != 1) return 1;
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 1;
    g_ping = new (page) std::atomic<std::uint32_t>(0);
    pid = ::fork();
    if (pid == 0) ping_partner();
    children.push_back(pid);
    g_remote_buf = static_cast<unsigned char*>(::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (g_remote_buf == MAP_FAILED) return 1;
    pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (;;) ::pause();
    }
    g_passive = pid;
    children.push_back(pid);
    int to[2], from[2];
    if (::pipe(to) != 0 || ::pipe(from) != 0) return 1;
    pid = ::fork();
    if (pid == 0) pipe_echo(to[0], from[1]);
    children.push_back(pid);
    g_pipe_to = to[1];
    g_pipe_from = from[0];
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fs_bench::reporter rep(benchmark::ConsoleReporter::OO_Tabular);
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  for (pid_t c : children) ::kill(c, SIGKILL);
  for (pid_t c : children) ::waitpid(c, nullptr, 0);
  ::unlink(tmpfs_file);
  if (listing) return 0;
  fs_bench::reporter::print_header("bench_remote: real time per iteration, client and server in separate processes");
  const auto real = [&](const std::string& label, const std::string& a, const std::string& b, const char* note = "") {
    fs_bench::reporter::ratio_line(label, rep.real_ns(a), rep.real_ns(b), "ns", note);
  };
  real("remote pread 4K / kernel pread(2) 4K of tmpfs", "BM_RemotePread/4096/", "BM_KernelPreadTmpfs/4096/", "goal <= 1.5x");
  for (int k : {16, 64}) {
    const std::string n = std::to_string(k << 10);
    real("remote pread " + std::to_string(k) + "K / kernel pread(2) " + std::to_string(k) + "K of tmpfs", "BM_RemotePread/" + n + "/",
         "BM_KernelPreadTmpfs/" + n + "/");
  }
  for (int t : fs_bench::thread_counts()) {
    const std::string thr = "/4096/real_time/threads:" + std::to_string(t);
    rep.rate_ratio("remote pread 4K throughput, " + std::to_string(t) + " clients at once / kernel pread(2) from as many threads",
                   "BM_RemotePreadClients" + thr, "BM_KernelPreadTmpfsClients" + thr);
  }
  real("remote pread 4K / in-process ramfs pread 4K", "BM_RemotePread/4096/", "BM_LocalPread/4096/");
  real("remote pread 4K / shared-memory spin ping-pong", "BM_RemotePread/4096/", "BM_SharedMemorySpinPingPong");
  real("remote pread 4K / pipe round trip", "BM_RemotePread/4096/", "BM_PipeRoundTrip");
  real("kernel pread 4K of tmpfs / shared-memory spin ping-pong", "BM_KernelPreadTmpfs/4096/", "BM_SharedMemorySpinPingPong");
  fs_bench::reporter::ratio_line("remote pread 1M throughput / kernel pread(2) 1M of tmpfs",
                                 rep.rate("BM_RemotePread/1048576/"), rep.rate("BM_KernelPreadTmpfs/1048576/"), "op/s",
                                 "goal >= 0.5x");
  fs_bench::reporter::ratio_line("remote pread 1M throughput / in-process ramfs pread 1M", rep.rate("BM_RemotePread/1048576/"),
                                 rep.rate("BM_LocalPread/1048576/"), "op/s");
  real("first cross-process mmap of a 4 KiB file (moves it into its own memfd) / a later mmap", "BM_RemoteMmapFirst/4096/",
       "BM_RemoteMmapAgain/4096/");
  real("first cross-process mmap of a 1 MiB file (moves it into its own memfd) / a later mmap", "BM_RemoteMmapFirst/1048576/",
       "BM_RemoteMmapAgain/1048576/");
  std::printf("  copy cost of a reply (CPU time, one thread): two memcpy through the slot / one process_vm_writev:\n");
  for (int s = 256; s <= (1 << 20); s *= 2) {
    const std::string a = "BM_CopyThroughSlot/" + std::to_string(s), b = "BM_ProcessVmWritev/" + std::to_string(s);
    fs_bench::reporter::ratio_line("  " + std::to_string(s) + " bytes: slot / process_vm_writev", rep.cpu_ns(a), rep.cpu_ns(b), "ns");
  }
  std::printf("  crossover, whole round trips (time through the slot / time by process_vm_writev; < 1: the slot is faster):\n");
  for (int s = 1024; s <= (512 << 10); s *= 2) {
    const std::string a = "BM_RemotePreadInline/" + std::to_string(s) + "/", b = "BM_RemotePreadVm/" + std::to_string(s) + "/";
    fs_bench::reporter::ratio_line("  pread " + std::to_string(s / 1024) + " KiB: inline / process_vm", rep.real_ns(a),
                                   rep.real_ns(b), "ns");
  }
  std::printf("  the same, the client reading every line of what it got after each pread:\n");
  for (int s = 1024; s <= (512 << 10); s *= 2) {
    const std::string a = "BM_RemotePreadInlineUsed/" + std::to_string(s) + "/", b = "BM_RemotePreadVmUsed/" + std::to_string(s) + "/";
    fs_bench::reporter::ratio_line("  pread " + std::to_string(s / 1024) + " KiB, used: inline / process_vm", rep.real_ns(a),
                                   rep.real_ns(b), "ns");
  }
  return 0;
}
