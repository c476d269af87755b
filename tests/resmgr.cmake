# Channel and resource-manager tests (issue 4).
faultsafe_test(channel_basic SOURCES channel_basic.cpp TIMEOUT 90 LABELS ipc)
faultsafe_test(resmgr_basic SOURCES resmgr_basic.cpp TIMEOUT 90 LABELS resmgr)
faultsafe_test(resmgr_random SOURCES resmgr_random.cpp TIMEOUT 120 LABELS resmgr)
# The ramfs example checks itself and exits 0 only when every check passed.
if(FAULTSAFE_BUILD_EXAMPLES)
  add_test(NAME example_ramfs COMMAND $<TARGET_FILE:ramfs> --threads 4 --files 3 --rounds 30)
  set_tests_properties(example_ramfs PROPERTIES TIMEOUT 60 LABELS resmgr)
endif()
# The channel/resmgr headers under clang's -Wthread-safety (where clang++ exists).
find_program(FAULTSAFE_RESMGR_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14)
if(FAULTSAFE_RESMGR_CLANGXX)
  add_test(NAME resmgr_clang_thread_safety
           COMMAND ${FAULTSAFE_RESMGR_CLANGXX} -std=c++20 -Wall -Wextra -Wthread-safety -Werror -fsyntax-only
                   -I${PROJECT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/resmgr_headers.cpp)
  set_tests_properties(resmgr_clang_thread_safety PROPERTIES TIMEOUT 120 LABELS resmgr)
  if(FAULTSAFE_HAVE_FUSE)
    set(_fuse_includes "")
    foreach(_d IN LISTS FUSE3_INCLUDE_DIRS)
      list(APPEND _fuse_includes "-I${_d}")
    endforeach()
    add_test(NAME fuse_bridge_clang_thread_safety
             COMMAND ${FAULTSAFE_RESMGR_CLANGXX} -std=c++20 -Wall -Wextra -Wthread-safety -Werror -fsyntax-only
                     -I${PROJECT_SOURCE_DIR}/include ${_fuse_includes} ${CMAKE_CURRENT_SOURCE_DIR}/fuse_bridge_headers.cpp)
    set_tests_properties(fuse_bridge_clang_thread_safety PROPERTIES TIMEOUT 120 LABELS "resmgr;fuse")
  endif()
endif()
# The lock-free fd and OCB tables (pinned slots), stale handles, close racing with I/O; and the
# allocation-free pread round trip (a counting operator new: its own executable).
faultsafe_test(resmgr_tables SOURCES resmgr_tables.cpp TIMEOUT 120 LABELS resmgr)
faultsafe_test(resmgr_noalloc SOURCES resmgr_noalloc.cpp TIMEOUT 60 LABELS resmgr)
# Chaining of the guarded-copy SIGBUS/SIGSEGV handler to program handlers (forked scenarios).
faultsafe_test(resmgr_signal_chain SOURCES resmgr_signal_chain.cpp TIMEOUT 120 LABELS resmgr)
# Failed calls change nothing, partial writes are short counts, own OCB types with the defaults,
# reports name the handler's line (issues 14 and 17).
faultsafe_test(resmgr_failed_calls SOURCES resmgr_failed_calls.cpp TIMEOUT 60 LABELS resmgr)
# ramfs's POSIX file surface (issue 15 part 1): a differential test against a kernel tmpfs directory
# (/dev/shm; the ordinary user's calls through setfsuid: needs root, else that case only reports), readdir
# positions under concurrent unlinks, rename's cases, limits and permissions, and a lock-order stress.
faultsafe_test(ramfs_posix SOURCES ramfs_posix_test.cpp TIMEOUT 180 LABELS resmgr)
# Servers and clients in separate OS processes (issue 11): the same random sequence over both
# transports, kill -9 of clients (1,000 rounds) and of a server, forged credentials. Own main: the
# children are this executable with --role.
faultsafe_test(remote SOURCES remote_test.cpp TIMEOUT 300 LABELS resmgr NO_MAIN)
# io_msg::read_visit (process::pread_visit, the FUSE bridge's READ): the bytes in place under the read's
# range lock; ENOSYS from a server whose read handler is its own.
faultsafe_test(resmgr_read_visit SOURCES resmgr_read_visit_test.cpp TIMEOUT 60 LABELS resmgr)
