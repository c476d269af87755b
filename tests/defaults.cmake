# Defaults that never kill a correct program, and a server that was never started (issue 17).
# violation_policy: resolved lock-ups are reported once and the program goes on; programming errors
# abort. The issue's reproductions run in forked children without a handler.
faultsafe_test(violation_policy SOURCES violation_policy_test.cpp TIMEOUT 120 LABELS order resmgr)
# A send to a server never started (or without threads) fails at once with ENXIO.
faultsafe_test(resmgr_not_started SOURCES resmgr_not_started_test.cpp TIMEOUT 60 LABELS resmgr)
# The handler helpers (resmgr/iofunc_helpers.hpp): verify, reply, stat, validate-then-store.
faultsafe_test(resmgr_helpers SOURCES resmgr_helpers_test.cpp TIMEOUT 60 LABELS resmgr)
