// bench_range_lock: range_lock beside its baselines (std::mutex, std::shared_mutex, no lock), in one
// run; the ratios are printed at the end (bench_report.hpp: medians of the repetitions).
//
// Every benchmark is a template over the lock type (a new lock is one registration line and one
// `holder<L>` specialisation saying how it locks a range):
//   BM_uncontended<L>/<mode>        one thread, lock + unlock of one range (mode 0 shared, 1 exclusive)
//   BM_disjoint<L>/<bytes>/<layout> each thread copies 4 or 16 KiB into its own part of a 1 MiB file
//                                   under a lock (layout 0: the file split in one part per thread; with
//                                   the default 64 KiB segments the parts lie in different shards of
//                                   the range_lock). Layout 1, the limit of sharding: the threads take
//                                   interleaved 4 KiB pages of ONE 64 KiB segment (one shard).
//   BM_overlap_readers<L>           every thread reads (copies out) overlapping 4 KiB windows, shared
//   BM_mix90<L>                     90% reads / 10% writes of random 4 KiB pages of a 1 MiB file
//   BM_held/<n>/<mode>              range_lock only: one acquire + release of a 1-byte range in a gap
//                                   in the middle of n - 1 held ranges (every other one exclusive);
//                                   mode 0 shared (the readers' fast path when its shard has no writer:
//                                   n = 1; else the fast holder), mode 1 exclusive (the fast holder:
//                                   the probe's cell is free whatever n; before the cells, n >= 2 took
//                                   the tree path). n = 2: one other range, in the probe's shard, the
//                                   base of the "/ held 2" ratios (the growth with n on one path)
// Multi-thread benchmarks run on 1, 2, 4, 8, 16 threads capped at the cores present, in real time
// with items processed, so a figure is the combined throughput of all threads.
//
// Run with --benchmark_repetitions=5 (or more) --benchmark_enable_random_interleaving=true on a
// shared machine. The disjoint scaling ratios are also divided by the no-lock ratio of the same run
// (the scaling the machine itself gave at that moment: memory bandwidth, the other load on the cores).
#include <benchmark/benchmark.h>

#include <faultsafe/sync/range_lock.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <shared_mutex>
#include <string>
#include <vector>

#include "bench_report.hpp"

using faultsafe::lock_mode;
using faultsafe::range_guard;
using faultsafe::range_lock;

namespace {

constexpr std::size_t page = 4096;
constexpr std::size_t file_size = 1 << 20;  // 1 MiB "file"

// Every buffer a benchmark copies from or into is page-aligned, so that all locks' copies run at the
// same alignment (the speed of a 4 KiB copy depends on it). With std::vector the 1 MiB file started
// 16 bytes past a page boundary (glibc's mmap'd chunk header) and each benchmark's 4 KiB buffer landed
// wherever the heap put it (16-byte aligned: 0 or 48 mod 64 from one allocation to the next).
struct free_deleter {
  void operator()(unsigned char* p) const noexcept { std::free(p); }
};
using byte_buffer = std::unique_ptr<unsigned char[], free_deleter>;
byte_buffer aligned_buffer(std::size_t n, unsigned char fill) {
  const std::size_t size = (n + page - 1) / page * page;
  byte_buffer b(static_cast<unsigned char*>(std::aligned_alloc(page, size)));
  if (!b) throw std::bad_alloc();
  std::memset(b.get(), fill, size);
  return b;
}

struct file_data {
  byte_buffer bytes = aligned_buffer(file_size, 1);
};
file_data& the_file() {
  static file_data f;
  return f;
}

// ---- the locks: how each one holds [off, off + len) in a mode ----------------------------------
struct no_lock {};

template <class L>
class holder;  // RAII: holds a range of L in a mode
template <>
class holder<no_lock> {
 public:
  holder(no_lock&, std::uint64_t, std::uint64_t, lock_mode) noexcept {}
};
template <>
class holder<std::mutex> {  // the whole file, whatever the mode
 public:
  holder(std::mutex& m, std::uint64_t, std::uint64_t, lock_mode) : g_(m) {}

 private:
  std::lock_guard<std::mutex> g_;
};
template <>
class holder<std::shared_mutex> {  // the whole file, in the mode
 public:
  holder(std::shared_mutex& m, std::uint64_t, std::uint64_t, lock_mode md) : m_(m), x_(md == lock_mode::exclusive) {
    x_ ? m_.lock() : m_.lock_shared();
  }
  ~holder() { x_ ? m_.unlock() : m_.unlock_shared(); }
  holder(const holder&) = delete;
  holder& operator=(const holder&) = delete;

 private:
  std::shared_mutex& m_;
  bool x_;
};
template <>
class holder<range_lock> {
 public:
  holder(range_lock& l, std::uint64_t off, std::uint64_t len, lock_mode m) : g_(l, off, len, m) {}

 private:
  range_guard g_;
};

/// The lock instance of each multi-thread benchmark, per lock type, shared by its threads.
template <class L>
L disjoint_lock{};
template <class L>
L readers_lock{};
template <class L>
L mix_lock{};

// ---- uncontended -------------------------------------------------------------------------------
template <class L>
void BM_uncontended(benchmark::State& s) {
  L l;
  const lock_mode m = s.range(0) ? lock_mode::exclusive : lock_mode::shared;
  for (auto _ : s) {
    holder<L> g(l, page, page, m);
    benchmark::ClobberMemory();
  }
}
BENCHMARK_TEMPLATE(BM_uncontended, std::mutex)->Arg(1);
BENCHMARK_TEMPLATE(BM_uncontended, std::shared_mutex)->Arg(0)->Arg(1);
BENCHMARK_TEMPLATE(BM_uncontended, range_lock)->Arg(0)->Arg(1);

// ---- disjoint ranges ---------------------------------------------------------------------------
// Work: copy 4 KiB (or 16 KiB) from a private source into the next slot of the thread's own part.
template <class L>
void BM_disjoint(benchmark::State& s) {
  L* const lock = &disjoint_lock<L>;
  auto& f = the_file();
  const auto n = static_cast<std::size_t>(s.range(0));  // bytes copied per operation
  const bool one_segment = s.range(1) != 0;
  const auto t = static_cast<std::size_t>(s.thread_index()), nt = static_cast<std::size_t>(s.threads());
  const byte_buffer src = aligned_buffer(n, static_cast<unsigned char>(t));
  const std::size_t segment = std::size_t{1} << range_lock::default_segment_shift;
  const std::size_t base = one_segment ? t * n : t * (file_size / nt);
  const std::size_t stride = one_segment ? nt * n : n;  // one segment: thread t takes every nt-th page
  const std::size_t slots = std::max<std::size_t>(1, one_segment ? segment / stride : (file_size / nt) / n);
  std::size_t i = 0;
  for (auto _ : s) {
    const std::size_t off = base + (i++ % slots) * stride;
    holder<L> g(*lock, off, n, lock_mode::exclusive);
    std::memcpy(&f.bytes[off], src.get(), n);
    benchmark::ClobberMemory();
  }
  s.SetItemsProcessed(s.iterations());
  s.SetBytesProcessed(s.iterations() * static_cast<std::int64_t>(n));
}
void disjoint_args(benchmark::internal::Benchmark* b) { b->Args({4096, 0})->Args({16384, 0}); }
BENCHMARK_TEMPLATE(BM_disjoint, no_lock)->Apply(disjoint_args)->Apply(fs_bench::scaling);
BENCHMARK_TEMPLATE(BM_disjoint, std::mutex)->Apply(disjoint_args)->Apply(fs_bench::scaling);
BENCHMARK_TEMPLATE(BM_disjoint, range_lock)->Apply(disjoint_args)->Args({4096, 1})->Apply(fs_bench::scaling);

// ---- readers of one overlapping range ----------------------------------------------------------
template <class L>
void BM_overlap_readers(benchmark::State& s) {
  L* const lock = &readers_lock<L>;
  auto& f = the_file();
  const byte_buffer dst = aligned_buffer(page, 0);
  const std::size_t off = static_cast<std::size_t>(s.thread_index() % 8) * 512;  // overlapping 4 KiB windows
  for (auto _ : s) {
    holder<L> g(*lock, off, page, lock_mode::shared);
    std::memcpy(dst.get(), &f.bytes[off], page);
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  s.SetItemsProcessed(s.iterations());
}
BENCHMARK_TEMPLATE(BM_overlap_readers, std::shared_mutex)->Apply(fs_bench::scaling);
BENCHMARK_TEMPLATE(BM_overlap_readers, range_lock)->Apply(fs_bench::scaling);

// ---- 90/10 read/write mix ----------------------------------------------------------------------
template <class L>
void BM_mix90(benchmark::State& s) {
  L* const lock = &mix_lock<L>;
  auto& f = the_file();
  const byte_buffer buf = aligned_buffer(page, 7);
  std::mt19937 rng(static_cast<unsigned>(s.thread_index()) + 1);
  for (auto _ : s) {
    const std::size_t off = (rng() % (file_size / page)) * page;
    const bool write = rng() % 10 == 0;
    holder<L> g(*lock, off, page, write ? lock_mode::exclusive : lock_mode::shared);
    if (write)
      std::memcpy(&f.bytes[off], buf.get(), page);
    else
      std::memcpy(buf.get(), &f.bytes[off], page);
    benchmark::ClobberMemory();
  }
  s.SetItemsProcessed(s.iterations());
}
BENCHMARK_TEMPLATE(BM_mix90, std::mutex)->Apply(fs_bench::scaling);
BENCHMARK_TEMPLATE(BM_mix90, std::shared_mutex)->Apply(fs_bench::scaling);
BENCHMARK_TEMPLATE(BM_mix90, range_lock)->Apply(fs_bench::scaling);

// ---- number of held ranges ---------------------------------------------------------------------
void BM_held(benchmark::State& s) {
  range_lock l("held");
  const auto n = static_cast<std::size_t>(s.range(0));
  const lock_mode probe_mode = s.range(1) ? lock_mode::exclusive : lock_mode::shared;
  std::vector<std::unique_ptr<range_guard>> others;
  for (std::size_t i = 1; i < n; ++i)  // every other one exclusive, all disjoint from the probe
    others.push_back(std::make_unique<range_guard>(l, 2 * i * page, page, i % 2 ? lock_mode::exclusive : lock_mode::shared));
  const std::uint64_t probe = (2 * (n / 2) + 1) * page;  // a gap in the middle of the held ranges
  for (auto _ : s) {
    range_guard g(l, probe, 1, probe_mode);
    benchmark::ClobberMemory();
  }
  s.counters["held"] = static_cast<double>(n);
}
BENCHMARK(BM_held)->ArgsProduct({{1, 2, 16, 256, 4096}, {0, 1}});

}  // namespace

int main(int argc, char** argv) {
  const bool listing = fs_bench::listing_only(argc, argv);  // before Initialize() consumes the flags
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fs_bench::reporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  if (listing) return 0;
  fs_bench::reporter::print_header(faultsafe::default_checks::enabled ? "bench_range_lock (checks on)"
                                                                      : "bench_range_lock (checks off)");
  const std::string mu = "BM_uncontended<std::mutex>/1";
  rep.cpu_ratio("uncontended range exclusive / std::mutex", "BM_uncontended<range_lock>/1", mu, "goal <= 4x");
  rep.cpu_ratio("uncontended range shared / std::mutex", "BM_uncontended<range_lock>/0", mu);
  rep.cpu_ratio("uncontended range exclusive / shared_mutex exclusive", "BM_uncontended<range_lock>/1",
                "BM_uncontended<std::shared_mutex>/1");
  rep.cpu_ratio("uncontended range shared / shared_mutex shared", "BM_uncontended<range_lock>/0",
                "BM_uncontended<std::shared_mutex>/0");
  const auto thr = [](int t) { return "/real_time/threads:" + std::to_string(t); };
  for (const char* sz : {"4096", "16384"}) {
    const auto d = [&](const char* lock, int t) { return std::string("BM_disjoint<") + lock + ">/" + sz + "/0" + thr(t); };
    for (int t : fs_bench::thread_counts()) {
      if (t == 1) continue;
      const std::string lbl = std::string("disjoint ") + sz + " B, " + std::to_string(t) + " thr / 1 thr: ";
      rep.rate_ratio(lbl + "range_lock", d("range_lock", t), d("range_lock", 1), t == 2 ? "goal >= 1.7x" : "");
      rep.rate_ratio(lbl + "std::mutex", d("std::mutex", t), d("std::mutex", 1));
      rep.rate_ratio(lbl + "no lock (what the machine gives)", d("no_lock", t), d("no_lock", 1));
      const double range_scale = rep.rate(d("range_lock", t)) / std::max(1.0, rep.rate(d("range_lock", 1)));
      const double machine_scale = rep.rate(d("no_lock", t)) / std::max(1.0, rep.rate(d("no_lock", 1)));
      if (machine_scale > 0) std::printf("  %-58s : %6.2f\n", (lbl + "range_lock scaling / machine scaling").c_str(), range_scale / machine_scale);
      rep.rate_ratio(std::string("disjoint ") + sz + " B, " + std::to_string(t) + " thr: range_lock / std::mutex",
                     d("range_lock", t), d("std::mutex", t));
    }
    rep.rate_ratio(std::string("disjoint ") + sz + " B, 1 thr: range_lock / no lock", d("range_lock", 1), d("no_lock", 1));
  }
  for (int t : fs_bench::thread_counts()) {
    if (t == 1) continue;
    rep.rate_ratio("disjoint 4096 B, ONE segment (one shard), " + std::to_string(t) + " thr / 1 thr",
                   "BM_disjoint<range_lock>/4096/1" + thr(t), "BM_disjoint<range_lock>/4096/1" + thr(1));
  }
  for (int t : fs_bench::thread_counts()) {
    const std::string ts = std::to_string(t) + " thr";
    rep.rate_ratio("overlap readers " + ts + ": range_lock / shared_mutex", "BM_overlap_readers<range_lock>" + thr(t),
                   "BM_overlap_readers<std::shared_mutex>" + thr(t), t == 2 ? "goal >= 1x" : "");
    if (t > 1)
      rep.rate_ratio("overlap readers range_lock " + ts + " / 1 thr", "BM_overlap_readers<range_lock>" + thr(t),
                     "BM_overlap_readers<range_lock>" + thr(1));
    rep.rate_ratio("mix90 " + ts + ": range_lock / shared_mutex", "BM_mix90<range_lock>" + thr(t),
                   "BM_mix90<std::shared_mutex>" + thr(t), t == 2 ? "goal >= 1x" : "");
    rep.rate_ratio("mix90 " + ts + ": range_lock / std::mutex", "BM_mix90<range_lock>" + thr(t), "BM_mix90<std::mutex>" + thr(t));
  }
  for (const char* m : {"0", "1"}) {
    const std::string mode = *m == '0' ? "shared probe" : "exclusive probe";
    for (const char* n : {"16", "256", "4096"})
      rep.cpu_ratio("held " + std::string(n) + " / held 1, " + mode, std::string("BM_held/") + n + "/" + m,
                    std::string("BM_held/1/") + m, std::string(n) == "256" ? "goal <= 2x" : "");
    for (const char* n : {"256", "4096"})  // the same path in both: the growth with n alone
      rep.cpu_ratio("held " + std::string(n) + " / held 2, " + mode, std::string("BM_held/") + n + "/" + m,
                    std::string("BM_held/2/") + m);
  }
  return 0;
}
