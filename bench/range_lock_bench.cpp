// bench_range_lock: range_lock beside its baselines (std::mutex, std::shared_mutex, no lock), in one
// run; the ratios are printed at the end.
//
//   uncontended/*          one thread, lock + unlock, nothing else
//   disjoint/*/<bytes>     each thread copies 4 or 16 KiB into its own half of a file buffer under a lock:
//                          range_lock on the copied range vs one std::mutex around every copy. With the
//                          default 64 KiB segments the halves of the 1 MiB file fall into different
//                          shards of the range_lock, so the two threads share no written cache line.
//   disjoint/range_lock_same_segment/4096
//                          the limit of sharding: both threads copy into alternate 4 KiB pages of ONE
//                          64 KiB segment (disjoint ranges, same shard: one leaf lock and tree)
//   overlap_readers/*      every thread reads (copies out) the same 4 KiB: range_lock shared vs
//                          std::shared_mutex shared
//   mix90/*                90% reads / 10% writes of random 4 KiB pages of a 1 MiB file, 2 threads:
//                          range_lock vs std::shared_mutex vs std::mutex over the whole file
//   held/<n>               uncontended acquire + release of one range while n - 1 others are held
//
// Run with --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true on a shared machine:
// the ratios use the best repetition (CPU time per operation for one-thread figures; wall-clock
// items/s, i.e. UseRealTime + SetItemsProcessed, for everything run on 1 and 2 threads, so that a
// 2-thread figure is the combined throughput of both threads); the disjoint scaling ratios are also
// printed from the medians of the repetitions, and divided by the no-lock ratio of the same run (the
// scaling the machine itself gave at that moment: memory bandwidth, the other load on the cores).
#include <benchmark/benchmark.h>

#include <faultsafe/sync/range_lock.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <vector>

using namespace faultsafe;

namespace {

constexpr std::size_t page = 4096;
constexpr std::size_t file_size = 1 << 20;  // 1 MiB "file"

struct file_data {
  std::vector<unsigned char> bytes = std::vector<unsigned char>(file_size, 1);
};
file_data& the_file() {
  static file_data f;
  return f;
}

// ---- uncontended -------------------------------------------------------------------------------
void uncontended_std_mutex(benchmark::State& s) {
  std::mutex m;
  for (auto _ : s) {
    m.lock();
    benchmark::ClobberMemory();
    m.unlock();
  }
}
void uncontended_shared_mutex_exclusive(benchmark::State& s) {
  std::shared_mutex m;
  for (auto _ : s) {
    m.lock();
    benchmark::ClobberMemory();
    m.unlock();
  }
}
void uncontended_shared_mutex_shared(benchmark::State& s) {
  std::shared_mutex m;
  for (auto _ : s) {
    m.lock_shared();
    benchmark::ClobberMemory();
    m.unlock_shared();
  }
}
void uncontended_range_exclusive(benchmark::State& s) {
  range_lock l;
  for (auto _ : s) {
    range_guard g(l, 4096, 4096, lock_mode::exclusive);
    benchmark::ClobberMemory();
  }
}
void uncontended_range_shared(benchmark::State& s) {
  range_lock l;
  for (auto _ : s) {
    range_guard g(l, 4096, 4096, lock_mode::shared);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(uncontended_std_mutex);
BENCHMARK(uncontended_shared_mutex_exclusive);
BENCHMARK(uncontended_shared_mutex_shared);
BENCHMARK(uncontended_range_exclusive);
BENCHMARK(uncontended_range_shared);

// ---- disjoint ranges, 1 and 2 threads ------------------------------------------------------------
// Work: copy 4 KiB (or 16 KiB) from a private source into the next slot of the thread's own half
// of the file.
range_lock g_disjoint_lock("disjoint");
std::mutex g_disjoint_mutex;

template <int Kind>  // 0 = no lock, 1 = std::mutex, 2 = range_lock, 3 = range_lock, one shared segment
void disjoint(benchmark::State& s) {
  auto& f = the_file();
  const auto n = static_cast<std::size_t>(s.range(0));  // bytes copied per operation
  std::vector<unsigned char> src(n, static_cast<unsigned char>(s.thread_index()));
  const auto t = static_cast<std::size_t>(s.thread_index());
  const std::size_t base = Kind == 3 ? t * n : t * (file_size / 2);
  const std::size_t stride = Kind == 3 ? 2 * n : n;  // same segment: thread t takes every other page
  const std::size_t slots = Kind == 3 ? (std::size_t{1} << range_lock::default_segment_shift) / stride
                                      : (file_size / 2) / n;
  std::size_t i = 0;
  for (auto _ : s) {
    const std::size_t off = base + (i++ % slots) * stride;
    if constexpr (Kind == 0) {
      std::memcpy(&f.bytes[off], src.data(), n);
    } else if constexpr (Kind == 1) {
      std::lock_guard<std::mutex> g(g_disjoint_mutex);
      std::memcpy(&f.bytes[off], src.data(), n);
    } else {
      range_guard g(g_disjoint_lock, off, n, lock_mode::exclusive);
      std::memcpy(&f.bytes[off], src.data(), n);
    }
    benchmark::ClobberMemory();
  }
  s.SetItemsProcessed(s.iterations());
  s.SetBytesProcessed(s.iterations() * static_cast<std::int64_t>(n));
}
BENCHMARK_TEMPLATE(disjoint, 0)->Name("disjoint/no_lock")->Arg(4096)->Arg(16384)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(disjoint, 1)->Name("disjoint/std_mutex")->Arg(4096)->Arg(16384)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(disjoint, 2)->Name("disjoint/range_lock")->Arg(4096)->Arg(16384)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(disjoint, 3)->Name("disjoint/range_lock_same_segment")->Arg(4096)->Threads(1)->Threads(2)->UseRealTime();

// ---- readers on one overlapping range -----------------------------------------------------------
range_lock g_read_lock("readers");
std::shared_mutex g_read_smutex;

template <int Kind>  // 1 = std::shared_mutex shared, 2 = range_lock shared
void overlap_readers(benchmark::State& s) {
  auto& f = the_file();
  std::vector<unsigned char> dst(page);
  const std::size_t off = static_cast<std::size_t>(s.thread_index()) * 512;  // overlapping 4 KiB windows
  for (auto _ : s) {
    if constexpr (Kind == 1) {
      std::shared_lock<std::shared_mutex> g(g_read_smutex);
      std::memcpy(dst.data(), &f.bytes[off], page);
    } else {
      range_guard g(g_read_lock, off, page, lock_mode::shared);
      std::memcpy(dst.data(), &f.bytes[off], page);
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  s.SetItemsProcessed(s.iterations());
}
BENCHMARK_TEMPLATE(overlap_readers, 1)->Name("overlap_readers/shared_mutex")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(overlap_readers, 2)->Name("overlap_readers/range_lock")->Threads(1)->Threads(2)->UseRealTime();

// ---- 90/10 read/write mix --------------------------------------------------------------------------
range_lock g_mix_lock("mix");
std::shared_mutex g_mix_smutex;
std::mutex g_mix_mutex;

template <int Kind>  // 0 = std::mutex, 1 = std::shared_mutex, 2 = range_lock
void mix90(benchmark::State& s) {
  auto& f = the_file();
  std::vector<unsigned char> buf(page, 7);
  std::mt19937 rng(static_cast<unsigned>(s.thread_index()) + 1);
  for (auto _ : s) {
    const std::size_t off = (rng() % (file_size / page)) * page;
    const bool write = rng() % 10 == 0;
    auto work = [&] {
      if (write)
        std::memcpy(&f.bytes[off], buf.data(), page);
      else
        std::memcpy(buf.data(), &f.bytes[off], page);
    };
    if constexpr (Kind == 0) {
      std::lock_guard<std::mutex> g(g_mix_mutex);
      work();
    } else if constexpr (Kind == 1) {
      if (write) {
        std::unique_lock<std::shared_mutex> g(g_mix_smutex);
        work();
      } else {
        std::shared_lock<std::shared_mutex> g(g_mix_smutex);
        work();
      }
    } else {
      range_guard g(g_mix_lock, off, page, write ? lock_mode::exclusive : lock_mode::shared);
      work();
    }
    benchmark::ClobberMemory();
  }
  s.SetItemsProcessed(s.iterations());
}
BENCHMARK_TEMPLATE(mix90, 0)->Name("mix90/std_mutex")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(mix90, 1)->Name("mix90/shared_mutex")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(mix90, 2)->Name("mix90/range_lock")->Threads(1)->Threads(2)->UseRealTime();

// ---- number of held ranges -------------------------------------------------------------------------
void held(benchmark::State& s) {
  range_lock l("held");
  const auto n = static_cast<std::size_t>(s.range(0));
  std::vector<std::unique_ptr<range_guard>> others;
  for (std::size_t i = 1; i < n; ++i)  // every other one exclusive, all disjoint from the probe
    others.push_back(std::make_unique<range_guard>(l, 2 * i * page, page,
                                                   i % 2 ? lock_mode::exclusive : lock_mode::shared));
  const std::uint64_t probe = (2 * (n / 2) + 1) * page;  // a gap in the middle of the held ranges
  for (auto _ : s) {
    range_guard g(l, probe, 1, lock_mode::shared);
    benchmark::ClobberMemory();
  }
  s.counters["held"] = static_cast<double>(n);
}
BENCHMARK(held)->Arg(1)->Arg(16)->Arg(256);

// ---- ratio report ---------------------------------------------------------------------------------
class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.benchmark_name();
      const double unit = r.time_unit == benchmark::kNanosecond    ? 1.0
                          : r.time_unit == benchmark::kMicrosecond ? 1e3
                          : r.time_unit == benchmark::kMillisecond ? 1e6
                                                                   : 1e9;
      // Best of the repetitions (the machine is shared): least CPU time per operation for the
      // one-thread figures, highest wall-clock throughput for the threaded ones.
      const double cpu = r.GetAdjustedCPUTime() * unit;
      auto t = time_ns.find(name);
      if (t == time_ns.end() || cpu < t->second) time_ns[name] = cpu;
      auto it = r.counters.find("items_per_second");
      if (it != r.counters.end()) {
        if (it->second.value > rate[name]) rate[name] = it->second.value;
        rates[name].push_back(it->second.value);
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> time_ns, rate;
  std::map<std::string, std::vector<double>> rates;  // every repetition's items/s

  [[nodiscard]] double median_rate(const std::string& name) const {
    auto it = rates.find(name);
    if (it == rates.end() || it->second.empty()) return 0.0;
    std::vector<double> v = it->second;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  }
};

double get(const std::map<std::string, double>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? 0.0 : it->second;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ratio_reporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  const auto& t = rep.time_ns;
  const auto& r = rep.rate;
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  std::printf("\n== ratios (checks %s) ==\n", default_checks::enabled ? "on" : "off");
  const double mu = get(t, "uncontended_std_mutex");
  std::printf("uncontended range exclusive / std::mutex        : %.2fx (goal <= 4x)\n",
              ratio(get(t, "uncontended_range_exclusive"), mu));
  std::printf("uncontended range shared / std::mutex           : %.2fx\n", ratio(get(t, "uncontended_range_shared"), mu));
  std::printf("uncontended range exclusive / shared_mutex excl : %.2fx\n",
              ratio(get(t, "uncontended_range_exclusive"), get(t, "uncontended_shared_mutex_exclusive")));
  std::printf("uncontended range shared / shared_mutex shared  : %.2fx\n",
              ratio(get(t, "uncontended_range_shared"), get(t, "uncontended_shared_mutex_shared")));
  const std::string rt = "/real_time/threads:";
  for (const char* sz : {"4096", "16384"}) {
    auto d = [&](const char* kind, const char* thr) {
      return get(r, std::string("disjoint/") + kind + "/" + sz + rt + thr);
    };
    std::printf("disjoint %5s B: range_lock 2 thr / 1 thr       : %.2fx (goal >= 1.7x)\n", sz,
                ratio(d("range_lock", "2"), d("range_lock", "1")));
    std::printf("disjoint %5s B: std::mutex 2 thr / 1 thr       : %.2fx\n", sz, ratio(d("std_mutex", "2"), d("std_mutex", "1")));
    std::printf("disjoint %5s B: no lock 2 thr / 1 thr          : %.2fx (what the machine gives)\n", sz,
                ratio(d("no_lock", "2"), d("no_lock", "1")));
    std::printf("disjoint %5s B: 2 thr range_lock / std::mutex  : %.2fx\n", sz, ratio(d("range_lock", "2"), d("std_mutex", "2")));
    auto m = [&](const char* kind, const char* thr) {
      return rep.median_rate(std::string("disjoint/") + kind + "/" + sz + rt + thr);
    };
    const double range_scale = ratio(m("range_lock", "2"), m("range_lock", "1"));
    const double machine_scale = ratio(m("no_lock", "2"), m("no_lock", "1"));
    std::printf("disjoint %5s B: medians: range_lock 2/1 %.2fx, std::mutex 2/1 %.2fx, no lock 2/1 %.2fx; "
                "range_lock scaling / machine scaling %.2f\n",
                sz, range_scale, ratio(m("std_mutex", "2"), m("std_mutex", "1")), machine_scale,
                ratio(range_scale, machine_scale));
    std::printf("disjoint %5s B: 1 thr range_lock / no lock     : %.2fx\n", sz, ratio(d("range_lock", "1"), d("no_lock", "1")));
  }
  {
    auto m = [&](const char* thr) {
      return rep.median_rate(std::string("disjoint/range_lock_same_segment/4096") + rt + thr);
    };
    std::printf("disjoint  4096 B, one segment (same shard): range_lock medians 2 thr / 1 thr: %.2fx\n",
                ratio(m("2"), m("1")));
  }
  std::printf("overlap readers 2 thr: range_lock / shared_mutex: %.2fx\n",
              ratio(get(r, "overlap_readers/range_lock" + rt + "2"), get(r, "overlap_readers/shared_mutex" + rt + "2")));
  std::printf("overlap readers range_lock 2 thr / 1 thr        : %.2fx\n",
              ratio(get(r, "overlap_readers/range_lock" + rt + "2"), get(r, "overlap_readers/range_lock" + rt + "1")));
  std::printf("mix90 2 thr: range_lock / shared_mutex          : %.2fx\n",
              ratio(get(r, "mix90/range_lock" + rt + "2"), get(r, "mix90/shared_mutex" + rt + "2")));
  std::printf("mix90 2 thr: range_lock / std::mutex            : %.2fx\n",
              ratio(get(r, "mix90/range_lock" + rt + "2"), get(r, "mix90/std_mutex" + rt + "2")));
  std::printf("held 16 / held 1                                : %.2fx\n", ratio(get(t, "held/16"), get(t, "held/1")));
  std::printf("held 256 / held 1                               : %.2fx\n", ratio(get(t, "held/256"), get(t, "held/1")));
  return 0;
}
