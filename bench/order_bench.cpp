// bench_order: uncontended lock+unlock cost of the lock-order core, beside std::mutex in the same run.
//
//   single/<lock>: one lock+unlock pair.   nest3/<lock>: three locks nested (ranks 10, 20, 30 or three
//   classes A -> B -> C), released in reverse.
//   <lock>: std_mutex (baseline), ranked_off (ranked_mutex, checks_off), ranked_on (checks_on),
//   tracked (tracked_mutex after warm-up: every edge already known).
// Scale (issue 12): the same after a graph of 1,000 lock classes and 10,000 edges was learnt
// (100 "outer" classes, each ordered before 100 of the 900 "inner" ones):
//   single_big/<lock>, nest3_big/<lock>   as above, the big graph present
//   pairs/<lock>/<n>                      outer -> inner lock pairs, cycling over n distinct known
//                                         edges (n = 1: one hot edge; n = 10,000: every edge of the
//                                         graph in turn: each pair probes its outer class's
//                                         successor set, 100 sets of 100 ids, out of cache)
//   pairs_threads/<lock>                  pairs over 10,000 on 1, 2, 4, 8, 16 threads (capped at the
//                                         cores), each thread its own outer classes: the warm path
//                                         has no shared write, so tracked scales as std::mutex does
// After the runs it prints each figure's ratio to std::mutex of the same shape (bench_report.hpp:
// medians of the repetitions, CPU time). Goals: ranked_off 1.0x, ranked_on <= 2x, tracked <= 3x
// (also with the big graph, warm).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_report.hpp"

#include "faultsafe/order/lock_graph.hpp"
#include "faultsafe/order/ranked_mutex.hpp"

namespace {

using faultsafe::checks_off;
using faultsafe::checks_on;

faultsafe::lock_class class_a("bench A"), class_b("bench B"), class_c("bench C");

/// A lock of type M: in lock class `c` when M takes one (tracked_mutex), else default-constructed.
/// So a new lock type is one RegisterBenchmark line per shape.
template <class M>
M make_lock(faultsafe::lock_class& c) {
  if constexpr (std::is_constructible_v<M, faultsafe::lock_class&>)
    return M(c);
  else
    return M();
}

template <class M>
struct one_lock {
  M m = make_lock<M>(class_a);
};

template <class M>
void single(benchmark::State& state) {
  one_lock<M> l;
  for (int i = 0; i < 16; ++i) {  // warm-up (caches, first-touch of thread_local state)
    l.m.lock();
    l.m.unlock();
  }
  for (auto _ : state) {
    l.m.lock();
    l.m.unlock();
    benchmark::ClobberMemory();
  }
}

template <class A, class B, class C>
struct three_locks {
  A a = make_lock<A>(class_a);
  B b = make_lock<B>(class_b);
  C c = make_lock<C>(class_c);
};
using tracked = faultsafe::tracked_mutex<std::mutex, checks_on>;

template <class L>
void lock_nested(L& l) {
  l.a.lock();
  l.b.lock();
  l.c.lock();
  l.c.unlock();
  l.b.unlock();
  l.a.unlock();
}

template <class A, class B, class C>
void nest3(benchmark::State& state) {
  three_locks<A, B, C> l;
  for (int i = 0; i < 16; ++i) lock_nested(l);  // warm-up: the tracked edges A->B, A->C, B->C are learnt
  for (auto _ : state) {
    lock_nested(l);
    benchmark::ClobberMemory();
  }
}

template <unsigned R, class P>
using ranked = faultsafe::ranked_mutex<R, std::mutex, P>;

// ---- scale: 1,000 classes, 10,000 edges -------------------------------------------------------
constexpr std::size_t outer_classes = 100, inner_classes = 900, edges_per_outer = 100;

/// The big graph's locks (tracked) and, for the baseline, as many std::mutexes in the same pattern.
struct big_graph {
  std::vector<std::unique_ptr<faultsafe::lock_class>> classes;
  std::vector<std::unique_ptr<tracked>> locks;
  std::vector<std::mutex> plain = std::vector<std::mutex>(outer_classes + inner_classes);
  std::vector<std::pair<std::size_t, std::size_t>> edges;  // (outer, inner) indices, 10,000
  big_graph() {
    for (std::size_t i = 0; i < outer_classes + inner_classes; ++i) {
      classes.push_back(std::make_unique<faultsafe::lock_class>((i < outer_classes ? "outer " : "inner ") + std::to_string(i)));
      locks.push_back(std::make_unique<tracked>(*classes.back()));
    }
    for (std::size_t o = 0; o < outer_classes; ++o)
      for (std::size_t k = 0; k < edges_per_outer; ++k)  // 9k < 900: 100 distinct inner classes per outer
        edges.emplace_back(o, outer_classes + (o * 37 + k * 9) % inner_classes);
    for (auto [a, b] : edges) {  // learn every edge (inner classes have no out-edges: no long searches)
      locks[a]->lock();
      locks[b]->lock();
      locks[b]->unlock();
      locks[a]->unlock();
    }
  }
  static big_graph& get() {
    static big_graph* g = new big_graph;  // leaked: lives for the run
    return *g;
  }
};

template <class M>
M& big_lock(std::size_t i);
template <>
tracked& big_lock<tracked>(std::size_t i) {
  return *big_graph::get().locks[i];
}
template <>
std::mutex& big_lock<std::mutex>(std::size_t i) {
  return big_graph::get().plain[i];
}

template <class M>
void lock_pair(M& x, M& y) {
  x.lock();
  y.lock();
  y.unlock();
  x.unlock();
}

template <class M>
void pairs(benchmark::State& state) {
  big_graph& g = big_graph::get();
  const auto n = std::min<std::size_t>(static_cast<std::size_t>(state.range(0)), g.edges.size());
  std::size_t i = 0;
  for (auto _ : state) {
    const auto [a, b] = g.edges[(i++ * 7919) % n];  // a stride through the edges, not their stored order
    lock_pair(big_lock<M>(a), big_lock<M>(b));
    benchmark::ClobberMemory();
  }
}

/// pairs/<lock>/10000 on 1, 2, 4, 8, 16 threads (capped at the cores): thread t takes the edges of
/// the outer classes o with o % threads == t (its own outer locks; inner locks may be shared).
template <class M>
void pairs_threads(benchmark::State& state) {
  big_graph& g = big_graph::get();
  const auto t = static_cast<std::size_t>(state.thread_index()), n = static_cast<std::size_t>(state.threads());
  std::vector<std::pair<std::size_t, std::size_t>> mine;
  for (std::size_t e = 0; e < g.edges.size(); ++e) {
    const auto& edge = g.edges[(e * 7919) % g.edges.size()];  // the same stride as pairs/*
    if (edge.first % n == t) mine.push_back(edge);
  }
  std::size_t i = 0;
  for (auto _ : state) {
    const auto [a, b] = mine[i++ % mine.size()];
    lock_pair(big_lock<M>(a), big_lock<M>(b));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <class Bench>
void with_big_graph(benchmark::State& state, Bench b) {
  (void)big_graph::get();
  b(state);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("single/std_mutex", single<std::mutex>);
  benchmark::RegisterBenchmark("single/ranked_off", single<ranked<20, checks_off>>);
  benchmark::RegisterBenchmark("single/ranked_on", single<ranked<20, checks_on>>);
  benchmark::RegisterBenchmark("single/tracked", single<tracked>);
  benchmark::RegisterBenchmark("nest3/std_mutex", nest3<std::mutex, std::mutex, std::mutex>);
  benchmark::RegisterBenchmark("nest3/ranked_off",
                               nest3<ranked<10, checks_off>, ranked<20, checks_off>, ranked<30, checks_off>>);
  benchmark::RegisterBenchmark("nest3/ranked_on",
                               nest3<ranked<10, checks_on>, ranked<20, checks_on>, ranked<30, checks_on>>);
  benchmark::RegisterBenchmark("nest3/tracked", nest3<tracked, tracked, tracked>);
  benchmark::RegisterBenchmark("single_big/std_mutex", with_big_graph<decltype(&single<std::mutex>)>, &single<std::mutex>);
  benchmark::RegisterBenchmark("single_big/tracked", with_big_graph<decltype(&single<tracked>)>, &single<tracked>);
  benchmark::RegisterBenchmark("nest3_big/std_mutex", with_big_graph<decltype(&nest3<std::mutex, std::mutex, std::mutex>)>,
                               &nest3<std::mutex, std::mutex, std::mutex>);
  benchmark::RegisterBenchmark("nest3_big/tracked", with_big_graph<decltype(&nest3<tracked, tracked, tracked>)>,
                               &nest3<tracked, tracked, tracked>);
  benchmark::RegisterBenchmark("pairs/std_mutex", pairs<std::mutex>)->Arg(1)->Arg(10000);
  benchmark::RegisterBenchmark("pairs/tracked", pairs<tracked>)->Arg(1)->Arg(10000);
  (void)big_graph::get();  // learnt before any thread of pairs_threads starts
  benchmark::RegisterBenchmark("pairs_threads/std_mutex", pairs_threads<std::mutex>)->Apply(fs_bench::scaling);
  benchmark::RegisterBenchmark("pairs_threads/tracked", pairs_threads<tracked>)->Apply(fs_bench::scaling);

  fs_bench::reporter rep;
  if (const auto rc = fs_bench::run_benchmarks(argc, argv, rep)) return *rc;

  fs_bench::reporter::print_header("bench_order: ratios to std::mutex of the same shape, CPU time");
  for (const char* shape : {"single", "nest3", "single_big", "nest3_big"})
    for (const char* lock : {"ranked_off", "ranked_on", "tracked"}) {
      const char* goal = std::string(lock) == "ranked_off" ? "goal 1.0x" : std::string(lock) == "ranked_on" ? "goal <= 2x" : "goal <= 3x";
      if (std::string(shape).find("big") != std::string::npos && std::string(lock) != "tracked") continue;
      rep.cpu_ratio(std::string(shape) + ": " + lock + " / std::mutex", std::string(shape) + "/" + lock,
                    std::string(shape) + "/std_mutex", goal);
    }
  for (const char* n : {"1", "10000"})
    rep.cpu_ratio(std::string("pairs over ") + n + " known edge(s) of 10,000: tracked / std::mutex",
                  std::string("pairs/tracked/") + n, std::string("pairs/std_mutex/") + n, "goal <= 3x");
  for (int t : fs_bench::thread_counts()) {
    const std::string suffix = "/real_time/threads:" + std::to_string(t);
    rep.rate_ratio("pairs over 10,000 edges, " + std::to_string(t) + " thread(s): tracked / std::mutex throughput",
                   "pairs_threads/tracked" + suffix, "pairs_threads/std_mutex" + suffix, "goal >= 0.33 (<= 3x)");
    if (t > 1)
      for (const char* lock : {"std_mutex", "tracked"})
        rep.rate_ratio(std::string("pairs over 10,000 edges, ") + lock + ": " + std::to_string(t) + " threads / 1",
                       std::string("pairs_threads/") + lock + suffix,
                       std::string("pairs_threads/") + lock + "/real_time/threads:1");
  }
  return 0;
}
