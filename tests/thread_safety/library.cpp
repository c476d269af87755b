// faultsafe's own headers under clang's -Wthread-safety analysis: the channel, the server, the client
// process, ramfs, the pager and the wait-for graph annotate their internal locks (FAULTSAFE_GUARDED_BY, FAULTSAFE_REQUIRES),
// range_lock's shard lock is a capability (its run-time domain locking is documented as outside the analysis)
// and must compile cleanly with `clang++ -std=c++20 -Wthread-safety -Werror -fsyntax-only`
// (CTest order_thread_safety_library).
#include "faultsafe/activity/wait_graph.hpp"
#include "faultsafe/ipc/channel.hpp"
#include "faultsafe/resmgr/client_registry.hpp"
#include "faultsafe/resmgr/process.hpp"
#include "faultsafe/resmgr/ramfs.hpp"
#include "faultsafe/resmgr/server.hpp"
#include "faultsafe/vm/pager.hpp"
#include "faultsafe/resmgr/process_memory.hpp"
#include "faultsafe/vm/served_memory.hpp"
#include "faultsafe/sync/range_lock.hpp"

// Instantiates the member templates whose bodies take internal locks.
int registry_lookup() {
  return faultsafe::detail::client_registry::instance().with_process(1, [](faultsafe::process* p) { return p ? 1 : 0; });
}
