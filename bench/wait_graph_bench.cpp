// bench_wait_graph: what the wait-for graph costs, beside its baselines in the same run.
//
//   scope/std_mutex        an uncontended std::mutex lock+unlock (baseline: the cheapest blocking op)
//   scope/disabled         wait_scope construct+destroy, graph disabled (one relaxed load)
//   scope/enabled          wait_scope construct+destroy, graph enabled, no other wait recorded
//   scope/enabled_8        the same with 8 other waits recorded (each scan visits them)
//   scope/enabled_1000     the same with 1,000 blocked threads' waits recorded: the cost of a new
//                          edge in a large graph (issue 12's scale figure)
//   hammer/plain           threads hammering one fair condvar mutex (holder record + cv wait), on 1, 2,
//                          4, 8, 16 threads capped at the cores; on a
//                          loaded box they rarely overlap: this shows the fast paths (blocked_per_op ~ 0)
//   hammer/instrumented    the same with the instrumented mutex: same code until an acquisition fails
//   hammer/std_mutex       the same threads hammering a std::mutex (reference)
//   handoff/plain          strict hand-off: the holder releases only once the other thread is queued,
//                          so every acquisition blocks and is woken (blocked_per_op = 1)
//   handoff/instrumented   the same; the contended path makes a wait_scope, waits with the recheck
//                          interval and polls (graph enabled)
//   handoff/instr_disabled the instrumented mutex with the graph disabled: the same timed-wait loop
//                          without graph work, so instrumented/instr_disabled is the graph's share and
//                          instr_disabled/plain the cost of waiting with a timeout instead of without
// Uncontended paths of instrumented locks never touch the graph (no figure needed: same code as
// plain until the first failed acquisition). After the runs it prints the ratios (bench_report.hpp:
// medians of the repetitions; scope/*: CPU time, hammer/* and handoff/*: real time). handoff/* is a
// two-thread shape by construction (a strict hand-off between two threads), not a scaling run.
#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <atomic>
#include <thread>
#include <type_traits>
#include <mutex>
#include <string>
#include <vector>

#include "faultsafe/activity/wait_graph.hpp"

#include "bench_report.hpp"

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

// A fair (ticket) mutex with a holder record: when two threads hammer it, ownership alternates, so
// nearly every acquisition takes the contended path and blocks (a real hand-off each time).
template <bool Instrumented>
class bench_mutex final : public faultsafe::waitable {
 public:
  void lock() {
    const auto me = faultsafe::this_thread_id();
    std::uint64_t ticket;
    {
      std::lock_guard<std::mutex> g(m_);
      ticket = next_.fetch_add(1, std::memory_order_relaxed);
      if (ticket == serving_.load(std::memory_order_relaxed)) {
        holder_ = me;
        return;
      }
    }
    slow_.fetch_add(1, std::memory_order_relaxed);
    if constexpr (Instrumented) {
      wait_scope ws(*this, wait_kind::lock);
      std::unique_lock<std::mutex> lk(m_);
      while (serving_.load(std::memory_order_relaxed) != ticket)
        if (cv_.wait_for(lk, wait_graph::recheck_interval()) == std::cv_status::timeout) {
          lk.unlock();
          if (ws.poll()) std::abort();  // no deadlock here
          lk.lock();
        }
      holder_ = me;
    } else {
      std::unique_lock<std::mutex> lk(m_);
      cv_.wait(lk, [&] { return serving_.load(std::memory_order_relaxed) == ticket; });
      holder_ = me;
    }
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> g(m_);
      holder_ = 0;
      serving_.fetch_add(1, std::memory_order_relaxed);
    }
    cv_.notify_all();
  }
  void wait_holders(std::vector<std::uint32_t>& t) const override {
    std::lock_guard<std::mutex> g(m_);
    if (holder_ != 0) t.push_back(holder_);
  }
  std::string wait_name() const override { return "bench mutex"; }
  /// Threads queued behind the holder.
  std::uint64_t queued() const {  // lock-free: the spinning holder must not contend for m_
    return next_.load(std::memory_order_relaxed) - serving_.load(std::memory_order_relaxed) - 1;
  }
  std::atomic<long> slow_{0};  // acquisitions that took the contended path

 private:
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::uint32_t holder_ = 0;
  std::atomic<std::uint64_t> next_{0}, serving_{0};  // written under m_
};

bench_mutex<false> plain_m;
bench_mutex<true> instr_m;
std::mutex std_m;
long shared_counter = 0;

template <class M>
void handoff(benchmark::State& state, M* m, bool enabled) {
  long slow0 = 0;
  if constexpr (!std::is_same_v<M, std::mutex>) slow0 = m->slow_.load();
  if (state.thread_index() == 0) wait_graph::set_enabled(enabled);
  for (auto _ : state) {
    m->lock();
    for (int i = 0; i < 20; ++i) benchmark::DoNotOptimize(++shared_counter);
    m->unlock();
  }
  if (state.thread_index() == 0) wait_graph::set_enabled(true);
  if constexpr (!std::is_same_v<M, std::mutex>)
    state.counters["blocked_per_op"] = benchmark::Counter(
        static_cast<double>(m->slow_.load() - slow0) / state.threads() / static_cast<double>(state.iterations()),
        benchmark::Counter::kAvgThreads);
}

// Strict hand-off: the holder releases only once the other thread is queued behind it, so every
// acquisition but the first blocks and is woken by the release (a futex wake each time).
// (The loop's end is itself a barrier of both threads, so a thread waits for its peer only while the
// peer has iterations left.)
std::atomic<long> pingpong_left[2];
template <class M>
void pingpong(benchmark::State& state, M* m, bool enabled) {
  const long slow0 = m->slow_.load();
  const int me = state.thread_index(), peer = 1 - me;
  pingpong_left[me].store(static_cast<long>(state.max_iterations));
  if (me == 0) wait_graph::set_enabled(enabled);
  for (auto _ : state) {  // the loop starts behind a barrier of both threads
    m->lock();
    while (m->queued() == 0 && pingpong_left[peer].load(std::memory_order_relaxed) > 0) std::this_thread::yield();
    m->unlock();
    pingpong_left[me].fetch_sub(1, std::memory_order_relaxed);
  }
  if (me == 0) wait_graph::set_enabled(true);
  state.counters["blocked_per_op"] = benchmark::Counter(
      static_cast<double>(m->slow_.load() - slow0) / 2.0 / static_cast<double>(state.iterations()),
      benchmark::Counter::kAvgThreads);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("scope/std_mutex", scope_std_mutex);
  benchmark::RegisterBenchmark("scope/disabled", scope_cost, false, 0);
  benchmark::RegisterBenchmark("scope/enabled", scope_cost, true, 0);
  benchmark::RegisterBenchmark("scope/enabled_8", scope_cost, true, 8);
  benchmark::RegisterBenchmark("scope/enabled_1000", scope_cost, true, 1000);
  benchmark::RegisterBenchmark("hammer/std_mutex", handoff<std::mutex>, &std_m, true)->Apply(fs_bench::scaling);
  benchmark::RegisterBenchmark("hammer/plain", handoff<bench_mutex<false>>, &plain_m, true)->Apply(fs_bench::scaling);
  benchmark::RegisterBenchmark("hammer/instrumented", handoff<bench_mutex<true>>, &instr_m, true)
      ->Apply(fs_bench::scaling);
  benchmark::RegisterBenchmark("handoff/plain", pingpong<bench_mutex<false>>, &plain_m, true)->Threads(2)->UseRealTime();
  benchmark::RegisterBenchmark("handoff/instrumented", pingpong<bench_mutex<true>>, &instr_m, true)
      ->Threads(2)
      ->UseRealTime();
  benchmark::RegisterBenchmark("handoff/instr_disabled", pingpong<bench_mutex<true>>, &instr_m, false)
      ->Threads(2)
      ->UseRealTime();

  fs_bench::reporter rep;
  if (const auto rc = fs_bench::run_benchmarks(argc, argv, rep)) return *rc;
  const auto on = [](const std::string& n, int threads) { return n + "/real_time/threads:" + std::to_string(threads); };
  const auto t2 = [&](const std::string& n) { return on(n, 2); };
  fs_bench::reporter::print_header("bench_wait_graph");
  for (const char* n : {"scope/disabled", "scope/enabled", "scope/enabled_8", "scope/enabled_1000"})
    rep.cpu_ratio(std::string(n) + " / std::mutex lock+unlock", n, "scope/std_mutex");
  rep.cpu_ratio("new edge with 1,000 blocked threads' waits / with none", "scope/enabled_1000", "scope/enabled",
                "issue 12 scale");
  for (int t : fs_bench::thread_counts())
    for (const char* lock : {"std_mutex", "instrumented"})
      fs_bench::reporter::ratio_line(
          "hammer/" + std::string(lock) + " / hammer/plain, " + std::to_string(t) + " thread(s), real ns per op",
          rep.real_ns(on(std::string("hammer/") + lock, t)), rep.real_ns(on("hammer/plain", t)), "ns");
  for (const char* lock : {"instrumented", "instr_disabled"})
    fs_bench::reporter::ratio_line(std::string("handoff/") + lock + " / handoff/plain, real ns per op",
                                   rep.real_ns(t2(std::string("handoff/") + lock)), rep.real_ns(t2("handoff/plain")), "ns");
  fs_bench::reporter::ratio_line("handoff/instrumented / handoff/instr_disabled (the graph's own share)",
                                 rep.real_ns(t2("handoff/instrumented")), rep.real_ns(t2("handoff/instr_disabled")), "ns");
  return 0;
}
