// Bounded soak (issue 7): many short-lived processes, three ramfs servers and their mappings under
// random load, with faults injected (handler exceptions, page-in errors, allocation failures in the
// pager, stalls while a range is held, during page-in and between page-in and map), for
// FAULTSAFE_SOAK_SECONDS seconds (default 60; CI runs the default in the plain build only: label
// "soak").
//
// Load: `workers` threads; each runs sessions one after another. A session is a new logical process
// that runs a random sequence of process API calls (the fuzzing harness, tests/fuzz/process_harness.hpp,
// in tolerant mode) on that worker's own files on a random server: open/read/write/pread/pwrite/
// lseek/ftruncate/mmap/munmap/mprotect and loads/stores through shared, private and anonymous
// mappings, every result checked against the worker's persistent model of its files. Inputs are
// mutations of the checked-in fuzz corpus or random bytes.
//
// At the end
//   - every file matches its model (checked after every session, and once more strictly after the
//     faults are disarmed);
//   - no violation was reported at all (a recording handler is installed): in particular no
//     wait_cycle, since this workload cannot deadlock (every report would be false);
//   - memory is flat: RSS sampled when the steady phase starts (after 20% of the run) and at its end
//     may grow by at most 96 MiB (generous: allocator caches, thread stacks, page cache of memfds);
//   - progress never stalled for 30 s (a monitor fails the test otherwise).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <faultsafe/activity/wait_graph.hpp>
#include <faultsafe/detail/fault_injection.hpp>
#include <faultsafe/order/violation.hpp>

#include "fuzz/process_harness.hpp"
#include "resmgr_test_util.hpp"

#ifndef FAULTSAFE_SOAK_CORPUS
#  define FAULTSAFE_SOAK_CORPUS ""
#endif

using namespace std::chrono_literals;
using namespace faultsafe;
namespace fi = faultsafe::fault_injection;

namespace {

long rss_kib() {
  std::ifstream st("/proc/self/status");
  std::string line;
  while (std::getline(st, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

std::vector<std::vector<std::uint8_t>> load_corpus() {
  std::vector<std::vector<std::uint8_t>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(FAULTSAFE_SOAK_CORPUS, ec)) {
    std::ifstream in(e.path(), std::ios::binary);
    out.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return out;
}

}  // namespace

TEST_CASE("soak: processes, servers and mappings under random load with injected faults") {
  REQUIRE(fi::enabled);
  int seconds = 60;
  if (const char* s = std::getenv("FAULTSAFE_SOAK_SECONDS")) seconds = std::max(5, std::atoi(s));
  constexpr int servers = 3, workers = 4;
  MESSAGE("soak: " << seconds << " s, " << workers << " workers, " << servers << " servers");

  violation_recorder recorder;
  scoped_violation_handler record(recorder.handler());
  const wait_graph_stats wg0 = wait_graph::stats();

  path_namespace ns;
  std::vector<std::unique_ptr<ramfs>> fs;
  for (int s = 0; s < servers; ++s)
    fs.push_back(std::make_unique<ramfs>(ramfs_options{.name = "soak" + std::to_string(s),
                                                       .prefix = "/soak" + std::to_string(s),
                                                       .pool = {1, 3},
                                                       .ns = &ns,
                                                       .file = {fuzzharness::max_file, "soak file"}}));
  // models[w][s]: worker w's files on server s.
  std::vector<std::vector<std::array<fuzzharness::model_file, fuzzharness::file_count>>> models(
      workers, std::vector<std::array<fuzzharness::model_file, fuzzharness::file_count>>(servers));
  const auto corpus = load_corpus();

  // Faults: rare enough that sessions get work done, frequent enough to fire thousands of times.
  fi::arm(fi::point::handler_exception, {.probability = 0.003, .seed = 11});
  fi::arm(fi::point::page_in_error, {.probability = 0.02, .seed = 12});
  fi::arm(fi::point::pager_alloc, {.probability = 0.01, .seed = 13});
  fi::arm(fi::point::range_hold_stall, {.probability = 0.005, .seed = 14, .stall = 2ms});
  fi::arm(fi::point::page_in_stall, {.probability = 0.01, .seed = 15, .stall = 2ms});
  fi::arm(fi::point::munmap_race, {.probability = 0.01, .seed = 16, .stall = 1ms});

  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  const auto steady = start + std::chrono::seconds(seconds) / 5;
  std::atomic<std::uint64_t> sessions{0}, ops{0}, eio{0}, efault{0}, resyncs{0}, poisoned{0}, checked{0};
  std::atomic<long> rss_steady{-1};
  std::atomic<bool> done{false};

  // Progress monitor: a stall of 30 s is a lock-up, and fails the test.
  std::thread monitor([&] {
    std::uint64_t last = 0;
    auto last_change = std::chrono::steady_clock::now();
    while (!done.load()) {
      std::this_thread::sleep_for(100ms);
      const auto now = std::chrono::steady_clock::now();
      if (rss_steady.load() < 0 && now >= steady) rss_steady = rss_kib();
      const std::uint64_t s = sessions.load();
      if (s != last) {
        last = s;
        last_change = now;
      } else if (now - last_change > 30s) {
        std::fprintf(stderr, "FAIL: soak: no session finished for 30 s (lock-up)\n");
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
  });

  std::vector<std::thread> ts;
  for (int w = 0; w < workers; ++w)
    ts.emplace_back([&, w] {
      std::mt19937_64 rng(1000 + static_cast<unsigned>(w));
      int n = 0;
      while (std::chrono::steady_clock::now() < end) {
        const int s = static_cast<int>(rng() % servers);
        std::vector<std::uint8_t> input;
        fuzzharness::encoding enc = fuzzharness::encoding::stable;
        if (!corpus.empty() && rng() % 2) {
          input = corpus[rng() % corpus.size()];
          for (int k = 0; k < 4 && !input.empty(); ++k) input[rng() % input.size()] = static_cast<std::uint8_t>(rng());
        } else {
          input.resize(100 + rng() % 300);
          for (auto& b : input) b = static_cast<std::uint8_t>(rng());
          enc = fuzzharness::encoding::dense;  // random bytes: every byte an operation
        }
        fuzzharness::harness_options o;
        o.ns = &ns;
        o.fs = fs[static_cast<std::size_t>(s)].get();
        o.tag = "w" + std::to_string(w) + "_";
        o.process_name = "soak-w" + std::to_string(w) + "-" + std::to_string(n++);
        o.files = models[static_cast<std::size_t>(w)][static_cast<std::size_t>(s)].data();
        o.tolerant = true;
        o.ops = enc;
        fuzzharness::byte_reader in(input.data(), input.size());
        {
          fuzzharness::harness h(o);
          h.run(in);
          ops += h.stats().ops;
          eio += h.stats().injected_eio;
          efault += h.stats().injected_efault;
          resyncs += h.stats().resyncs;
          poisoned += h.stats().poisoned_pages;
          checked += h.stats().bytes_checked;
        }
        sessions.fetch_add(1);
      }
    });
  for (auto& t : ts) t.join();
  const long rss_end = rss_kib();
  done = true;
  monitor.join();

  std::uint64_t fires[fi::point_count];
  for (std::size_t i = 0; i < fi::point_count; ++i) fires[i] = fi::fires(static_cast<fi::point>(i));
  fi::disarm_all();

  // Strict final pass, faults off: every file of every worker on every server matches its model.
  std::uint64_t files_checked = 0;
  for (int w = 0; w < workers; ++w)
    for (int s = 0; s < servers; ++s) {
      fuzzharness::harness_options o;
      o.ns = &ns;
      o.fs = fs[static_cast<std::size_t>(s)].get();
      o.tag = "w" + std::to_string(w) + "_";
      o.process_name = "soak-final";
      o.files = models[static_cast<std::size_t>(w)][static_cast<std::size_t>(s)].data();
      fuzzharness::byte_reader none(nullptr, 0);
      fuzzharness::harness h(o);
      h.run(none);  // no ops: the final check alone (aborts on a mismatch)
      for (const auto& mf : models[static_cast<std::size_t>(w)][static_cast<std::size_t>(s)]) files_checked += mf.exists;
    }

  const wait_graph_stats wg1 = wait_graph::stats();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("soak: %.0f s, %llu sessions (one logical process each), %llu ops (%.0f ops/s), %llu bytes loaded "
              "through mappings and checked, %llu files matched their models at the end\n",
              secs, static_cast<unsigned long long>(sessions.load()), static_cast<unsigned long long>(ops.load()),
              static_cast<double>(ops.load()) / secs, static_cast<unsigned long long>(checked.load()),
              static_cast<unsigned long long>(files_checked));
  std::printf("soak: faults injected:");
  for (std::size_t i = 0; i < fi::point_count; ++i)
    std::printf(" %s=%llu", fi::name(static_cast<fi::point>(i)), static_cast<unsigned long long>(fires[i]));
  std::printf("\nsoak: requests failed by injection: EIO %llu, EFAULT on a buffer whose page-in failed %llu (file "
              "re-read after %llu unacknowledged writes); mapping pages poisoned by failed page-ins %llu\n",
              static_cast<unsigned long long>(eio.load()), static_cast<unsigned long long>(efault.load()),
              static_cast<unsigned long long>(resyncs.load()), static_cast<unsigned long long>(poisoned.load()));
  std::printf("soak: wait graph: %llu waits recorded, %llu scans, %llu candidates, %llu reports; violations recorded: %zu\n",
              static_cast<unsigned long long>(wg1.waits_recorded - wg0.waits_recorded),
              static_cast<unsigned long long>(wg1.scans - wg0.scans),
              static_cast<unsigned long long>(wg1.candidates - wg0.candidates),
              static_cast<unsigned long long>(wg1.reports - wg0.reports), recorder.count());
  std::printf("soak: RSS %ld KiB at the start of the steady phase, %ld KiB at its end (%+ld KiB)\n", rss_steady.load(),
              rss_end, rss_end - rss_steady.load());
  std::fflush(stdout);

  CHECK(sessions.load() > 0);
  CHECK(files_checked > 0);
  CHECK(recorder.count(violation_kind::wait_cycle) == 0);
  CHECK(recorder.count() == 0);
  CHECK(wg1.reports == wg0.reports);
  for (const auto& v : recorder.take()) MESSAGE(v.report());
  // Every wired point fired (the schedules are probabilistic but the run makes thousands of hits).
  CHECK(fires[static_cast<std::size_t>(fi::point::handler_exception)] > 0);
  CHECK(fires[static_cast<std::size_t>(fi::point::page_in_error)] > 0);
  CHECK(fires[static_cast<std::size_t>(fi::point::pager_alloc)] > 0);
  CHECK(fires[static_cast<std::size_t>(fi::point::range_hold_stall)] > 0);
  CHECK(fires[static_cast<std::size_t>(fi::point::page_in_stall)] > 0);
  REQUIRE(rss_steady.load() > 0);
  CHECK(rss_end - rss_steady.load() < 96 * 1024);
}
