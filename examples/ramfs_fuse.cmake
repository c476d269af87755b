# ramfs_fuse: a ramfs mounted as a Linux filesystem through the FUSE bridge (needs fuse3).
if(FAULTSAFE_HAVE_FUSE)
  faultsafe_example(ramfs_fuse ${CMAKE_CURRENT_SOURCE_DIR}/ramfs_fuse/main.cpp)
  target_link_libraries(ramfs_fuse PRIVATE faultsafe::fuse_bridge)
endif()
