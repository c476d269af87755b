// Compiled by clang++ -Wthread-safety -Werror -fsyntax-only (tests/resmgr.cmake): every channel and
// resource-manager header on its own annotations.
#include <faultsafe/detail/futex.hpp>
#include <faultsafe/ipc/channel.hpp>
#include <faultsafe/ipc/socket_transport.hpp>
#include <faultsafe/resmgr/iofunc.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/process_thread.hpp>
#include <faultsafe/resmgr/ramfs.hpp>
#include <faultsafe/resmgr/remote.hpp>
#include <faultsafe/resmgr/server.hpp>

int main() { return 0; }
