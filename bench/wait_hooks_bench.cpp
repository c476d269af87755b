// bench_wait_hooks: the uncontended lock and send paths of the hooked blocking sites with the
// wait-for graph on vs off, beside std::mutex in the same run.
//
//   base/std_mutex          uncontended std::mutex lock+unlock (baseline)
//   range_guard/{on,off}    range_guard acquire+release of [0, 4 KiB) exclusive, uncontended
//   aspace_lock/{on,off}    the aspace map lock (detail::vm_rw_lock<rank::aspace_map>), exclusive
//                           lock+unlock, uncontended (the single_lock of Colin's naive mode)
//   aspace_shared/{on,off}  the same lock, shared (fault service's map lookup)
//   channel_4k/{on,off}     a 4 KiB channel round trip to one server thread (send -> receive ->
//                           write_reply_data 4 KiB -> reply); the sender parks (and then records a
//                           wait) only when the server is slower than the 4 us spin
// After the runs it prints on/off ratios (bench_report.hpp: medians of the repetitions; single-thread
// figures: CPU time, channel: real time). The graph switch is the only difference between on and off.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/config.hpp"
#include "faultsafe/ipc/channel.hpp"
#include "faultsafe/sync/range_lock.hpp"
#include "faultsafe/vm/detail/rw_lock.hpp"

#include "bench_report.hpp"

namespace {

constexpr std::size_t kSize = 4096;
alignas(64) unsigned char g_store[kSize];

void base_std_mutex(benchmark::State& state) {
  std::mutex m;
  for (auto _ : state) {
    m.lock();
    benchmark::ClobberMemory();
    m.unlock();
  }
}

void range_guard_cost(benchmark::State& state, bool on) {
  faultsafe::wait_graph::set_enabled(on);
  faultsafe::range_lock l("bench range");
  for (auto _ : state) {
    faultsafe::range_guard g(l, 0, kSize, faultsafe::lock_mode::exclusive);
    benchmark::ClobberMemory();
  }
  faultsafe::wait_graph::set_enabled(true);
}

void aspace_lock_cost(benchmark::State& state, bool on, bool shared) {
  faultsafe::wait_graph::set_enabled(on);
  faultsafe::detail::vm_rw_lock<faultsafe::rank::aspace_map> l("bench aspace");
  for (auto _ : state) {
    if (shared) {
      l.lock_shared();
      benchmark::ClobberMemory();
      l.unlock_shared();
    } else {
      l.lock();
      benchmark::ClobberMemory();
      l.unlock();
    }
  }
  faultsafe::wait_graph::set_enabled(true);
}

void channel_cost(benchmark::State& state, bool on) {
  faultsafe::wait_graph::set_enabled(on);
  faultsafe::channel ch;
  std::thread server([&] {
    faultsafe::channel::receiver& r = ch.attach();
    while (!r.receive()) {
      (void)r.write_reply_data(0, g_store, std::min(kSize, r.reply_data_len()));
      (void)r.reply(static_cast<std::int64_t>(kSize));
    }
    ch.detach(r);
  });
  alignas(64) unsigned char buf[kSize];
  for (auto _ : state) {
    auto r = ch.send({1, nullptr, 0, nullptr, 0, nullptr, 0, buf, kSize});
    benchmark::DoNotOptimize(r);
  }
  ch.stop();
  server.join();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kSize));
  faultsafe::wait_graph::set_enabled(true);
}

}  // namespace

int main(int argc, char** argv) {
  std::memset(g_store, 0x5a, sizeof g_store);
  benchmark::RegisterBenchmark("base/std_mutex", base_std_mutex)->Repetitions(9);
  // on/off interleaved so that machine noise hits both alike
  for (bool on : {false, true}) {
    const std::string s = on ? "on" : "off";
    benchmark::RegisterBenchmark(("range_guard/" + s).c_str(), range_guard_cost, on)->Repetitions(9);
    benchmark::RegisterBenchmark(("aspace_lock/" + s).c_str(), aspace_lock_cost, on, false)->Repetitions(9);
    benchmark::RegisterBenchmark(("aspace_shared/" + s).c_str(), aspace_lock_cost, on, true)->Repetitions(9);
    benchmark::RegisterBenchmark(("channel_4k/" + s).c_str(), channel_cost, on)->UseRealTime()->Repetitions(9);
  }
  fs_bench::reporter rep;
  if (const auto rc = fs_bench::run_benchmarks(argc, argv, rep)) return *rc;
  fs_bench::reporter::print_header("bench_wait_hooks: wait graph on / off");
  for (const char* n : {"range_guard", "aspace_lock", "aspace_shared", "channel_4k"}) {
    const bool real = std::string(n) == "channel_4k";
    const std::string on = std::string(n) + "/on", off = std::string(n) + "/off";
    fs_bench::reporter::ratio_line(std::string(n) + ": on / off", real ? rep.real_ns(on) : rep.cpu_ns(on),
                                   real ? rep.real_ns(off) : rep.cpu_ns(off), "ns", "goal: no slower");
    if (!real) rep.cpu_ratio(std::string(n) + ": on / std::mutex", on, "base/std_mutex");
  }
  return 0;
}
