// bench/bench_report.hpp: what every faultsafe benchmark binary shares: the reporter that keeps each
// benchmark's figures and prints the ratio lines (a figure beside its baseline of the same run), the
// thread counts of multi-thread benchmarks, and the --benchmark_list_tests check.
//
// Figures: every repetition's CPU time per iteration and real time per iteration (ns), and its
// counters (items_per_second, and any the benchmark sets, e.g. p50_ns). A figure is looked up by its
// full benchmark name, or else by the first name that starts with the given prefix. A ratio line uses the MEDIAN of the repetitions by default (the
// machines these run on are shared and noisy: run with --benchmark_repetitions=5 or more); with
// --benchmark_report_aggregates_only the reported "median" aggregate is used instead.
// Thread counts: 1, 2, 4, 8, 16, capped at the cores present (print_header() says how many), so a
// larger machine reports the whole scaling curve without code changes.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace fs_bench {

/// The number of cores present (at least 1).
inline unsigned cores() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

/// 1, 2, 4, 8, 16 threads, keeping those <= cores() (1 always).
inline std::vector<int> thread_counts() {
  std::vector<int> v;
  for (int t : {1, 2, 4, 8, 16})
    if (t == 1 || static_cast<unsigned>(t) <= cores()) v.push_back(t);
  return v;
}

/// For ->Apply(fs_bench::scaling): registers b for every thread count of thread_counts(), measured
/// in real time (a multi-thread figure is then the combined throughput of all threads when the
/// benchmark sets items processed).
inline void scaling(benchmark::internal::Benchmark* b) {
  for (int t : thread_counts()) b->Threads(t);
  b->UseRealTime();
}

/// True if the command line only asks for the list of benchmarks (--benchmark_list_tests[=true]):
/// a main() then lists them and returns without extra rounds or ratio lines. Call it before
/// benchmark::Initialize(), which removes the flags it recognises from argv.
inline bool listing_only(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--benchmark_list_tests") == 0 || std::strcmp(a, "--benchmark_list_tests=true") == 0 ||
        std::strcmp(a, "--benchmark_list_tests=1") == 0)
      return true;
  }
  return false;
}

class reporter;
/// main()'s common part: Initialize, run the registered benchmarks through `rep`, Shutdown.
/// Returns: the code main() returns at once (0 when only listing: --benchmark_list_tests; 1 after an
/// unrecognised argument), or std::nullopt: main() goes on to print its ratio lines.
inline std::optional<int> run_benchmarks(int argc, char** argv, reporter& rep);

/// Which statistic of the repetitions a ratio uses.
enum class stat { median, best };

/// A console reporter that also keeps every run's figures by benchmark name.
class reporter : public benchmark::ConsoleReporter {
 public:
  reporter() = default;
  explicit reporter(OutputOptions o) : ConsoleReporter(o) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      const double to_ns = 1e9 / benchmark::GetTimeUnitMultiplier(r.time_unit);
      const auto items = r.counters.find("items_per_second");
      if (r.run_type == Run::RT_Iteration) {
        auto& f = figs_[r.benchmark_name()];
        f.cpu.push_back(r.GetAdjustedCPUTime() * to_ns);
        f.real.push_back(r.GetAdjustedRealTime() * to_ns);
        if (items != r.counters.end()) f.rate.push_back(items->second.value);
        for (const auto& [k, c] : r.counters) f.counters[k].push_back(c.value);
      } else if (r.aggregate_name == "median") {  // aggregates only: keep the median as one figure
        std::string name = r.benchmark_name();
        const std::string suffix = "_median";
        if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
          name.resize(name.size() - suffix.size());
        auto& f = agg_[name];
        f.cpu = {r.GetAdjustedCPUTime() * to_ns};
        f.real = {r.GetAdjustedRealTime() * to_ns};
        if (items != r.counters.end()) f.rate = {items->second.value};
        for (const auto& [k, c] : r.counters) f.counters[k] = {c.value};
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  /// CPU ns per iteration of `name` (0 if it did not run).
  [[nodiscard]] double cpu_ns(const std::string& name, stat s = stat::median) const { return pick(name, &figs::cpu, s, false); }
  /// Real (wall-clock) ns per iteration.
  [[nodiscard]] double real_ns(const std::string& name, stat s = stat::median) const { return pick(name, &figs::real, s, false); }
  /// items_per_second (0 if not set).
  [[nodiscard]] double rate(const std::string& name, stat s = stat::median) const { return pick(name, &figs::rate, s, true); }
  /// The benchmark's counter `counter` (0 if not set); `best` takes the lowest.
  [[nodiscard]] double counter(const std::string& name, const std::string& counter, stat s = stat::median) const {
    const figs* f = find(name);
    if (!f) return 0.0;
    auto it = f->counters.find(counter);
    return it == f->counters.end() ? 0.0 : statistic(it->second, s, false);
  }
  /// Repetitions seen for `name`.
  [[nodiscard]] std::size_t repetitions(const std::string& name) const {
    const figs* f = find(name);
    return f ? f->cpu.size() : 0;
  }

  /// Prints "== title: N cores; ratios use the median of the repetitions ==".
  static void print_header(const char* title) {
    std::printf("\n== %s: %u cores; ratios use the median of the repetitions (shared machine: run with "
                "--benchmark_repetitions >= 5) ==\n",
                title, cores());
  }
  /// Prints "label: a / b = r x (note)"; `unit` names what a and b are (e.g. "ns", "op/s").
  static void ratio_line(const std::string& label, double a, double b, const char* unit, const char* note = "") {
    if (a <= 0 || b <= 0) {
      std::printf("  %-58s : (not run)\n", label.c_str());
      return;
    }
    std::printf("  %-58s : %10.1f / %10.1f %-4s = %6.2fx%s%s%s\n", label.c_str(), a, b, unit, a / b, *note ? "  (" : "",
                note, *note ? ")" : "");
  }
  /// Ratio of CPU ns per iteration: a / b.
  void cpu_ratio(const std::string& label, const std::string& a, const std::string& b, const char* note = "") const {
    ratio_line(label, cpu_ns(a), cpu_ns(b), "ns", note);
  }
  /// Ratio of throughputs (items/s): a / b.
  void rate_ratio(const std::string& label, const std::string& a, const std::string& b, const char* note = "") const {
    ratio_line(label, rate(a), rate(b), "op/s", note);
  }

 private:
  struct figs {
    std::vector<double> cpu, real, rate;
    std::map<std::string, std::vector<double>> counters;
  };
  // The figures of `name`: exact name, else the first name starting with it; repetitions first,
  // then the median aggregates.
  const figs* find(const std::string& name) const {
    for (const auto* m : {&figs_, &agg_}) {
      auto it = m->find(name);
      if (it == m->end()) {
        it = m->lower_bound(name);
        if (it != m->end() && it->first.compare(0, name.size(), name) != 0) it = m->end();
      }
      if (it != m->end() && !it->second.cpu.empty()) return &it->second;
    }
    return nullptr;
  }
  static double statistic(std::vector<double> x, stat s, bool higher_is_better) {
    if (x.empty()) return 0.0;
    std::sort(x.begin(), x.end());
    if (s == stat::best) return higher_is_better ? x.back() : x.front();
    return x.size() % 2 ? x[x.size() / 2] : (x[x.size() / 2 - 1] + x[x.size() / 2]) / 2;
  }
  double pick(const std::string& name, std::vector<double> figs::*v, stat s, bool higher_is_better) const {
    const figs* f = find(name);
    return f ? statistic(f->*v, s, higher_is_better) : 0.0;
  }
  std::map<std::string, figs> figs_, agg_;
};

inline std::optional<int> run_benchmarks(int argc, char** argv, reporter& rep) {
  const bool listing = listing_only(argc, argv);  // before Initialize() consumes the flag
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  if (listing) return 0;
  return std::nullopt;
}

}  // namespace fs_bench
