// Compiled by clang++ -Wthread-safety -Werror -fsyntax-only (tests/resmgr.cmake, where libfuse3 is
// found): the FUSE bridge's header on its own annotations.
#include <faultsafe/resmgr/fuse_bridge.hpp>

int main() { return 0; }
