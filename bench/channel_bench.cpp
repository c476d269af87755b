// Channel and resource-manager round trips, each beside its baselines in the same run:
//   BM_DirectCall4K         a direct (non-inlined) function call that copies 4 KiB
//   BM_SpinPingPong         a bare two-thread spin ping-pong (round trip), and with a 4 KiB copy
//   BM_CondvarHandoff       a mutex + condition-variable round trip between two threads
//   BM_ChannelRoundTrip4K   channel send -> receive -> write_reply_data(4 KiB) -> reply
//   BM_RamfsPread4K         process::pread(4 KiB) through a ramfs server (lock-free fd table pin, send,
//                           lock-free OCB pin, direct-copy hint, range lock, copy straight into the
//                           client's buffer, reply)
//   BM_RamfsPread4K_opens/<n> the same pread while the server's OCB table holds n opens (1 or 100,000,
//                           spread over client processes of 1,000 opens each): the scale figure
//   ..._clients             1, 2, 4, 8, 16 client threads (capped at the cores present) on as many
//                           server threads as cores: throughput (items/s)
// Goal: the 4 KiB read round trip within 4x of the bare spin ping-pong; with 100,000 opens within
// 1.2x of 1 open. Ratios: bench_report.hpp, medians of the repetitions (mean and p50).
//
// On a shared 2-core machine the mean (Google Benchmark's figure) is dominated by the few round trips
// in which a thread was preempted (a futex wake-up then costs 10-50 us). Every latency benchmark
// therefore also times each iteration itself and reports p50_ns / p90_ns / p99_ns counters (each
// sample includes one steady_clock::now(), ~60 ns here, in every benchmark alike).
#include <benchmark/benchmark.h>
#include <faultsafe/ipc/channel.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include "bench_report.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace {
constexpr std::size_t kSize = 4096;

// Per-iteration samples -> percentile counters.
class samples {
 public:
  samples() { v_.reserve(1 << 20); }
  void begin() { t0_ = std::chrono::steady_clock::now(); }
  void end() {
    if (v_.size() < v_.capacity()) v_.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0_).count());
  }
  void report(benchmark::State& state) {
    if (v_.empty()) return;
    std::sort(v_.begin(), v_.end());
    auto at = [&](double q) { return v_[std::min(v_.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v_.size())))]; };
    state.counters["p50_ns"] = at(0.5);
    state.counters["p90_ns"] = at(0.9);
    state.counters["p99_ns"] = at(0.99);
  }

 private:
  std::vector<double> v_;
  std::chrono::steady_clock::time_point t0_;
};
alignas(64) unsigned char g_store[kSize];

[[gnu::noinline]] std::size_t read_direct(void* dst, std::size_t n) {
  std::memcpy(dst, g_store, n);
  benchmark::ClobberMemory();
  return n;
}

void BM_DirectCall4K(benchmark::State& state) {
  alignas(64) unsigned char buf[kSize];
  samples smp;
  for (auto _ : state) {
    smp.begin();
    benchmark::DoNotOptimize(read_direct(buf, kSize));
    smp.end();
  }
  smp.report(state);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kSize));
}
BENCHMARK(BM_DirectCall4K);

void BM_SpinPingPong(benchmark::State& state) {
  const bool copy = state.range(0) != 0;
  alignas(64) std::atomic<int> flag{0};
  alignas(64) unsigned char buf[kSize];
  std::thread partner([&] {
    for (;;) {
      int f;
      while ((f = flag.load(std::memory_order_acquire)) == 0) faultsafe::detail::cpu_relax();
      if (f < 0) return;
      if (copy) std::memcpy(buf, g_store, kSize);
      flag.store(0, std::memory_order_release);
    }
  });
  samples smp;
  for (auto _ : state) {
    smp.begin();
    flag.store(1, std::memory_order_release);
    while (flag.load(std::memory_order_acquire) != 0) faultsafe::detail::cpu_relax();
    smp.end();
  }
  flag.store(-1, std::memory_order_release);
  partner.join();
  smp.report(state);
  benchmark::DoNotOptimize(buf);
}
BENCHMARK(BM_SpinPingPong)->Arg(0)->Arg(1)->ArgName("copy4k")->UseRealTime();

void BM_CondvarHandoff(benchmark::State& state) {
  std::mutex m;
  std::condition_variable cv;
  int turn = 0;  // 0 idle, 1 request, 2 reply, -1 quit
  std::thread partner([&] {
    std::unique_lock<std::mutex> l(m);
    for (;;) {
      cv.wait(l, [&] { return turn == 1 || turn == -1; });
      if (turn == -1) return;
      turn = 2;
      cv.notify_all();
    }
  });
  samples smp;
  for (auto _ : state) {
    smp.begin();
    std::unique_lock<std::mutex> l(m);
    turn = 1;
    cv.notify_all();
    cv.wait(l, [&] { return turn == 2; });
    l.unlock();
    smp.end();
  }
  smp.report(state);
  {
    std::lock_guard<std::mutex> g(m);
    turn = -1;
  }
  cv.notify_all();
  partner.join();
}
BENCHMARK(BM_CondvarHandoff)->UseRealTime();

void serve_echo(faultsafe::channel& ch) {
  faultsafe::channel::receiver& r = ch.attach();
  while (!r.receive()) {
    (void)r.write_reply_data(0, g_store, std::min(kSize, r.reply_data_len()));
    (void)r.reply(static_cast<std::int64_t>(kSize));
  }
  ch.detach(r);
}

void BM_ChannelRoundTrip4K(benchmark::State& state) {
  faultsafe::channel_options o;
  o.guard_copies = state.range(0) != 0;
  faultsafe::channel ch(o);
  std::thread server([&] { serve_echo(ch); });
  alignas(64) unsigned char buf[kSize];
  samples smp;
  for (auto _ : state) {
    smp.begin();
    auto r = ch.send({1, nullptr, 0, nullptr, 0, nullptr, 0, buf, kSize});
    smp.end();
    benchmark::DoNotOptimize(r);
  }
  ch.stop();
  server.join();
  smp.report(state);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kSize));
}
BENCHMARK(BM_ChannelRoundTrip4K)->Arg(1)->Arg(0)->ArgName("guarded")->UseRealTime();

// The timed loop of the pread benchmarks: 4 KiB reads of fd at offset 0, with percentile samples.
void pread_loop(benchmark::State& state, faultsafe::process& p, int fd) {
  alignas(64) unsigned char buf[kSize];
  samples smp;
  for (auto _ : state) {
    smp.begin();
    auto r = p.pread(fd, buf, kSize, 0);
    smp.end();
    if (!r || *r != kSize) state.SkipWithError("short read");
    benchmark::DoNotOptimize(buf);
  }
  smp.report(state);
}

void BM_RamfsPread4K(benchmark::State& state) {
  faultsafe::path_namespace ns;
  faultsafe::ramfs fs({.name = "bench", .prefix = "/bench", .pool = {1, 1}, .ns = &ns});
  faultsafe::process p("client", {0, 0}, &ns);
  const int fd = *p.open("/bench/f", O_RDWR | O_CREAT, 0644);
  (void)p.pwrite(fd, g_store, kSize, 0);
  pread_loop(state, p, fd);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kSize));
}
BENCHMARK(BM_RamfsPread4K)->UseRealTime();

// ---- scale: the pread with n opens in the server's OCB table -----------------------------------
void BM_RamfsPread4K_opens(benchmark::State& state) {
  constexpr std::size_t per_client = 1000;  // below the server's and the process's default limits
  const auto n = static_cast<std::size_t>(state.range(0));
  faultsafe::path_namespace ns;
  faultsafe::ramfs fs({.name = "bench_opens", .prefix = "/opens", .pool = {1, 1}, .ns = &ns});
  faultsafe::process p("client", {0, 0}, &ns);
  const int fd = *p.open("/opens/f", O_RDWR | O_CREAT, 0644);
  (void)p.pwrite(fd, g_store, kSize, 0);
  std::vector<std::unique_ptr<faultsafe::process>> others;  // the other n - 1 opens
  for (std::size_t done = 1; done < n;) {
    others.push_back(std::make_unique<faultsafe::process>("opener", faultsafe::credentials{0, 0}, &ns));
    for (std::size_t k = 0; k < per_client && done < n; ++k, ++done)
      if (!others.back()->open("/opens/f", O_RDONLY, 0)) {
        state.SkipWithError("open failed");
        return;
      }
  }
  pread_loop(state, p, fd);
  state.counters["opens"] = static_cast<double>(n);
}
BENCHMARK(BM_RamfsPread4K_opens)->Arg(1)->Arg(100000)->UseRealTime();

// ---- throughput: 1, 2, 4, ... clients on as many server threads as cores ----
faultsafe::channel& shared_channel() {
  static faultsafe::channel* ch = [] {
    auto* c = new faultsafe::channel();
    for (unsigned i = 0; i < fs_bench::cores(); ++i) std::thread([c] { serve_echo(*c); }).detach();  // lives for the run
    return c;
  }();
  return *ch;
}

void BM_ChannelRoundTrip4K_clients(benchmark::State& state) {
  faultsafe::channel& ch = shared_channel();
  alignas(64) unsigned char buf[kSize];
  for (auto _ : state) {
    auto r = ch.send({1, nullptr, 0, nullptr, 0, nullptr, 0, buf, kSize});
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ChannelRoundTrip4K_clients)->Apply(fs_bench::scaling);

faultsafe::ramfs& shared_ramfs(faultsafe::path_namespace& ns) {
  static faultsafe::ramfs* fs = new faultsafe::ramfs(
      {.name = "bench2", .prefix = "/bench2", .pool = {fs_bench::cores(), fs_bench::cores()}, .ns = &ns});
  return *fs;
}

void BM_RamfsPread4K_clients(benchmark::State& state) {
  static faultsafe::path_namespace* ns = new faultsafe::path_namespace;
  (void)shared_ramfs(*ns);
  faultsafe::process p("client", {0, 0}, ns);
  const int fd = *p.open("/bench2/f", O_RDWR | O_CREAT, 0644);
  (void)p.pwrite(fd, g_store, kSize, 0);
  alignas(64) unsigned char buf[kSize];
  for (auto _ : state) {
    auto r = p.pread(fd, buf, kSize, 0);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RamfsPread4K_clients)->Apply(fs_bench::scaling);

}  // namespace

int main(int argc, char** argv) {
  const bool listing = fs_bench::listing_only(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fs_bench::reporter rep(benchmark::ConsoleReporter::OO_Tabular);
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  if (listing) return 0;
  fs_bench::reporter::print_header("bench_channel: mean (real time) and p50 of the per-iteration samples");
  const std::string spin = "BM_SpinPingPong/copy4k:0", spin_copy = "BM_SpinPingPong/copy4k:1";
  const auto line = [&](const std::string& what, const std::string& a, const std::string& b, const char* goal = "") {
    fs_bench::reporter::ratio_line(what + ", mean", rep.real_ns(a), rep.real_ns(b), "ns", goal);
    fs_bench::reporter::ratio_line(what + ", p50", rep.counter(a, "p50_ns"), rep.counter(b, "p50_ns"), "ns", goal);
  };
  line("channel 4K round trip / spin ping-pong", "BM_ChannelRoundTrip4K/guarded:1", spin);
  line("ramfs pread 4K / spin ping-pong", "BM_RamfsPread4K/", spin, "goal <= 4x");
  line("ramfs pread 4K / spin ping-pong + 4K copy", "BM_RamfsPread4K/", spin_copy);
  line("ramfs pread 4K / condvar hand-off", "BM_RamfsPread4K/", "BM_CondvarHandoff");
  line("ramfs pread 4K / direct call 4K", "BM_RamfsPread4K/", "BM_DirectCall4K");
  line("channel guarded / unguarded copies", "BM_ChannelRoundTrip4K/guarded:1", "BM_ChannelRoundTrip4K/guarded:0");
  line("ramfs pread 4K, 100,000 opens / 1 open", "BM_RamfsPread4K_opens/100000", "BM_RamfsPread4K_opens/1",
       "goal <= 1.2x");
  for (int t : fs_bench::thread_counts()) {
    if (t == 1) continue;
    const std::string thr = "/real_time/threads:";
    for (const char* b : {"BM_ChannelRoundTrip4K_clients", "BM_RamfsPread4K_clients"})
      rep.rate_ratio(std::string(b) + " throughput " + std::to_string(t) + " / 1 clients",
                     b + thr + std::to_string(t), b + thr + "1");
  }
  return 0;
}
