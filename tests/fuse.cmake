# The FUSE bridge (resmgr/fuse_bridge.hpp) through the kernel: real programs on a ramfs mounted with
# examples/ramfs_fuse in a temporary directory. Each test exits 77 only when /dev/fuse cannot be used
# (it says why); every program runs under a watchdog and the mount is detached (fusermount3 -uz) on
# the way out, so a hung mount fails the test instead of hanging it.
if(FAULTSAFE_HAVE_FUSE AND FAULTSAFE_BUILD_EXAMPLES)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    function(faultsafe_fuse_test name script timeout)
      add_test(NAME ${name} COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/fuse/${script} $<TARGET_FILE:ramfs_fuse> ${ARGN})
      set_tests_properties(${name} PROPERTIES TIMEOUT ${timeout} SKIP_RETURN_CODE ${FAULTSAFE_SKIP_CODE} LABELS fuse)
    endfunction()
    faultsafe_fuse_test(fuse_coreutils coreutils_test.py 300)
    faultsafe_fuse_test(fuse_posix posix_test.py 180)
    faultsafe_fuse_test(fuse_differential differential_test.py 400 --ops 1500 --seed 1)
    faultsafe_fuse_test(fuse_multiuser multiuser_test.py 400)
    faultsafe_fuse_test(fuse_brian_page_cache brian_test.py 300 page-cache)
    faultsafe_fuse_test(fuse_brian_direct_io brian_test.py 300 direct-io)
    faultsafe_fuse_test(fuse_brian_direct_io_private brian_test.py 300 direct-io-no-shared-mmap)
  else()
    message(STATUS "faultsafe: no python3: the FUSE tests are skipped")
  endif()
endif()
# The bridge's page cache across opens against the server's data version (changes by another client of
# the same server are seen by the next open; unchanged files keep their pages). Mounts in-process.
if(FAULTSAFE_HAVE_FUSE)
  faultsafe_test(fuse_cache SOURCES fuse_cache_test.cpp TIMEOUT 120 LABELS "fuse;resmgr")
  target_link_libraries(fuse_cache PRIVATE faultsafe_fuse_bridge)
endif()
