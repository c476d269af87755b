// faultsafe/faultsafe.hpp: the umbrella header; includes every public faultsafe header.
//
// Layout: order/ who may lock what after what; sync/ the locks; activity/ on
// whose behalf a thread works and the wait-for graph; vm/ address spaces and the userfaultfd pager;
// ipc/ channels; resmgr/ the resource-manager skeleton, client processes and the direct copy path.
// Headers under detail/ are internal.
#pragma once

#include <faultsafe/activity/activity.hpp>
#include <faultsafe/activity/wait_graph.hpp>
#include <faultsafe/config.hpp>
#include <faultsafe/ipc/channel.hpp>
#include <faultsafe/ipc/socket_transport.hpp>
#include <faultsafe/order/lock_graph.hpp>
#include <faultsafe/order/ranked_mutex.hpp>
#include <faultsafe/order/violation.hpp>
#include <faultsafe/resmgr/client_registry.hpp>
#include <faultsafe/resmgr/direct_copy.hpp>
#include <faultsafe/resmgr/file_store.hpp>
#include <faultsafe/resmgr/iofunc.hpp>
#include <faultsafe/resmgr/iofunc_helpers.hpp>
#include <faultsafe/resmgr/messages.hpp>
#include <faultsafe/resmgr/name_tree.hpp>
#include <faultsafe/resmgr/ocb_table.hpp>
#include <faultsafe/resmgr/path_namespace.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/process_thread.hpp>
#include <faultsafe/resmgr/protocol.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>
#include <faultsafe/resmgr/server.hpp>
#include <faultsafe/resmgr/thread_pool.hpp>
#include <faultsafe/source_location.hpp>
#include <faultsafe/sync/range_lock.hpp>
#include <faultsafe/thread_annotations.hpp>
#include <faultsafe/vm/aspace.hpp>
#include <faultsafe/vm/fault_pool.hpp>
#include <faultsafe/vm/faulting_thread.hpp>
#include <faultsafe/vm/page_source.hpp>
#include <faultsafe/vm/pager.hpp>
#include <faultsafe/vm/poisoned_pages.hpp>
#include <faultsafe/vm/private_copies.hpp>
#include <faultsafe/resmgr/process_memory.hpp>
#include <faultsafe/vm/served_memory.hpp>
