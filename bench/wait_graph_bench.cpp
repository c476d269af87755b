// bench_wait_graph: what the wait-for graph costs, beside its baselines in the same run.
//
//   scope/std_mutex        an uncontended std::mutex lock+unlock (baseline: the cheapest blocking op)
//   scope/disabled         wait_scope construct+destroy, graph disabled (one relaxed load)
//   scope/enabled          wait_scope construct+destroy, graph enabled, no other wait recorded
//   scope/enabled_8        the same with 8 other waits recorded (each scan visits them)
//   handoff/plain          2 threads hammering one condvar mutex (holder record + cv wait)
//   handoff/instrumented   the same mutex whose contended path makes a wait_scope, waits with the
//                          recheck interval and polls (graph enabled)
//   handoff/instr_disabled the instrumented mutex with the graph disabled
//   handoff/std_mutex      2 threads hammering a std::mutex (reference)
// Uncontended paths of instrumented locks never touch the graph (no figure needed: same code as
// plain until the first failed acquisition). After the runs it prints the ratios.
#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"

namespace {

using faultsafe::wait_graph;
using faultsafe::wait_kind;
using faultsafe::wait_scope;

struct fake final : faultsafe::waitable {
  std::vector<std::uint32_t> holders;
  void wait_holders(std::vector<std::uint32_t>& t) const override { t.insert(t.end(), holders.begin(), holders.end()); }
  std::string wait_name() const override { return "bench resource"; }
};

void scope_std_mutex(benchmark::State& state) {
  std::mutex m;
  for (auto _ : state) {
    m.lock();
    m.unlock();
  }
}

void scope_cost(benchmark::State& state, bool enabled, int others) {
  wait_graph::set_enabled(true);
  fake r;
  r.holders = {faultsafe::this_thread_id() + 1000000};  // a running (not blocked) holder
  std::vector<std::unique_ptr<fake>> other_res;
  std::vector<std::unique_ptr<wait_scope>> other;
  for (int i = 0; i < others; ++i) {
    other_res.push_back(std::make_unique<fake>());
    other_res.back()->holders = {2000000u + static_cast<std::uint32_t>(i) + 1};
    other.push_back(std::make_unique<wait_scope>(faultsafe::on_behalf, 2000000u + static_cast<std::uint32_t>(i),
                                                 *other_res.back(), wait_kind::lock));
  }
  wait_graph::set_enabled(enabled);
  for (auto _ : state) {
    wait_scope ws(r, wait_kind::lock);
    benchmark::DoNotOptimize(&ws);
  }
  wait_graph::set_enabled(true);
}

template <bool Instrumented>
class bench_mutex final : public faultsafe::waitable {
 public:
  void lock() {
    const auto me = faultsafe::this_thread_id();
    {
      std::lock_guard<std::mutex> g(m_);
      if (holder_ == 0) {
        holder_ = me;
        return;
      }
    }
    if constexpr (Instrumented) {
      wait_scope ws(*this, wait_kind::lock);
      std::unique_lock<std::mutex> lk(m_);
      while (holder_ != 0)
        if (cv_.wait_for(lk, wait_graph::recheck_interval()) == std::cv_status::timeout) {
          lk.unlock();
          if (ws.poll()) std::abort();  // no deadlock here
          lk.lock();
        }
      holder_ = me;
    } else {
      std::unique_lock<std::mutex> lk(m_);
      cv_.wait(lk, [&] { return holder_ == 0; });
      holder_ = me;
    }
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> g(m_);
      holder_ = 0;
    }
    cv_.notify_one();
  }
  void wait_holders(std::vector<std::uint32_t>& t) const override {
    std::lock_guard<std::mutex> g(m_);
    if (holder_ != 0) t.push_back(holder_);
  }
  std::string wait_name() const override { return "bench mutex"; }

 private:
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::uint32_t holder_ = 0;
};

bench_mutex<false> plain_m;
bench_mutex<true> instr_m;
std::mutex std_m;
long shared_counter = 0;

template <class M>
void handoff(benchmark::State& state, M* m, bool enabled) {
  if (state.thread_index() == 0) wait_graph::set_enabled(enabled);
  for (auto _ : state) {
    m->lock();
    for (int i = 0; i < 20; ++i) benchmark::DoNotOptimize(++shared_counter);
    m->unlock();
  }
  if (state.thread_index() == 0) wait_graph::set_enabled(true);
}

class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const double ns = r.GetAdjustedRealTime();
      auto [it, fresh] = best.emplace(r.benchmark_name(), ns);
      if (!fresh && ns < it->second) it->second = ns;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> best;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("scope/std_mutex", scope_std_mutex);
  benchmark::RegisterBenchmark("scope/disabled", scope_cost, false, 0);
  benchmark::RegisterBenchmark("scope/enabled", scope_cost, true, 0);
  benchmark::RegisterBenchmark("scope/enabled_8", scope_cost, true, 8);
  benchmark::RegisterBenchmark("handoff/std_mutex", handoff<std::mutex>, &std_m, true)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("handoff/plain", handoff<bench_mutex<false>>, &plain_m, true)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("handoff/instrumented", handoff<bench_mutex<true>>, &instr_m, true)
      ->Threads(2)
      ->UseRealTime();
  benchmark::RegisterBenchmark("handoff/instr_disabled", handoff<bench_mutex<true>>, &instr_m, false)
      ->Threads(2)
      ->UseRealTime();

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  auto get = [&](const std::string& n) {
    auto it = reporter.best.find(n);
    if (it == reporter.best.end()) it = reporter.best.find(n + "/real_time/threads:2");
    return it == reporter.best.end() ? -1.0 : it->second;
  };
  std::printf("\nratios (real time of the fastest repetition)\n");
  const double mu = get("scope/std_mutex");
  for (const char* n : {"scope/disabled", "scope/enabled", "scope/enabled_8"}) {
    const double v = get(n);
    if (v > 0 && mu > 0) std::printf("  %-16s %8.2f ns = %6.2fx an uncontended std::mutex lock+unlock\n", n, v, v / mu);
  }
  const double plain = get("handoff/plain");
  for (const char* n : {"handoff/std_mutex", "handoff/instrumented", "handoff/instr_disabled"}) {
    const double v = get(n);
    if (v > 0 && plain > 0) std::printf("  %-22s %8.2f ns/op = %5.2fx handoff/plain (%.2f ns/op)\n", n, v, v / plain, plain);
  }
  benchmark::Shutdown();
  return 0;
}
