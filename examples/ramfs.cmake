# ramfs: an in-memory file server (memfd per file) and a multi-threaded checking client.
faultsafe_example(ramfs ${CMAKE_CURRENT_SOURCE_DIR}/ramfs/main.cpp)
