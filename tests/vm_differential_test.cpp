// The client API's file and mapping calls against the Linux kernel, differentially: the same seeded
// random sequence on a ramfs file through an in-process faultsafe::process and on a tmpfs file through
// the system calls (tests/vm_differential_support.hpp has the operations and the model of faultsafe's
// documented differences). A failure names the seed and the step; FAULTSAFE_SEED=<n> replays one seed.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include "support/signals.hpp"
#include "vm_differential_support.hpp"

using namespace faultsafe;

namespace {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int seed_count = 6, steps = 250;
#else
constexpr int seed_count = 40, steps = 600;
#endif
}  // namespace

TEST_CASE("in-process client: random file and mapping calls behave as the kernel's on tmpfs") {
  vmtest::require_userfaultfd();
  vmtest::watchdog wd(100, "vm differential, in-process");
  // A server thread that faults while copying into a bad client buffer takes faultsafe's guarded-copy
  // handler (behind the stray-signal check); the probes handle the test thread's own faults.
  vmtest::probe_outside = &test_support::screened_guarded_copy_signal;
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::uint64_t seed : difftest::seeds(1, seed_count)) {
    path_namespace ns;
    ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
    process bob("bob", {0, 0}, &ns);
    difftest::differential d(bob, "/ram/f", seed, {.map_fixed = true, .steps = steps});
    d.run();
  }
  vmtest::probe_outside = nullptr;
  std::printf("vm differential (in-process): %llu steps in %.1f s\n", static_cast<unsigned long long>(difftest::differential::ops()),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}
