// Test helpers for the channel / resmgr tests: the watchdog of tests/support/sync.hpp, which fails
// (never hangs) a stuck test.
#pragma once

#include "support/sync.hpp"

namespace faultsafe_test {

/// watchdog(what, limit = 20 s): see tests/support/sync.hpp.
using test_support::watchdog;

}  // namespace faultsafe_test
