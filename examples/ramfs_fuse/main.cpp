// ramfs_fuse: a ramfs (resmgr/ramfs.hpp) mounted as a Linux filesystem through the FUSE bridge
// (resmgr/fuse_bridge.hpp). Runs in the foreground until `fusermount3 -u MOUNTPOINT`, umount, or
// SIGINT/SIGTERM/SIGHUP, then unmounts and exits 0. Mounted by root it lets every user in (allow_other);
// permissions are checked by the kernel (default_permissions) and by the server with each caller's ids.
//
//   usage: ramfs_fuse [--threads N] [--read-ahead-kb K] [--direct-io | --direct-io-no-shared-mmap] MOUNTPOINT
//     --threads N   the server's pool maximum (default 8); libfuse gets N + 4 workers
//     --read-ahead-kb K   the mount's read-ahead window in KiB (default 1024; 0 keeps the kernel's)
//     --direct-io   FOPEN_DIRECT_IO with shared mmap (FUSE_DIRECT_IO_ALLOW_MMAP; a clear error if this
//                   libfuse cannot negotiate it)
//     --direct-io-no-shared-mmap   FOPEN_DIRECT_IO; MAP_SHARED mappings fail with ENODEV
//     --debug       libfuse's request trace on stderr
// Exit status: 0 after a clean unmount, 2 for bad arguments, 1 when mounting failed (the reason on stderr).
#include <faultsafe/resmgr/fuse_bridge.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  unsigned threads = 8;
  faultsafe::fuse_io_mode io = faultsafe::fuse_io_mode::page_cache;
  std::string mountpoint;
  bool debug = false;
  long read_ahead_kb = faultsafe::fuse_bridge_options{}.read_ahead_kb;
  bool bad = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--read-ahead-kb" && i + 1 < argc) {
      char* end = nullptr;
      read_ahead_kb = std::strtol(argv[++i], &end, 10);
      bad = *argv[i] == '\0' || *end != '\0' || read_ahead_kb < 0 || read_ahead_kb > (1L << 20);
    } else if (a == "--debug") {
      debug = true;
    } else if (a == "--direct-io") {
      io = faultsafe::fuse_io_mode::direct_io;
    } else if (a == "--direct-io-no-shared-mmap") {
      io = faultsafe::fuse_io_mode::direct_io_no_shared_mmap;
    } else if (!a.empty() && a[0] != '-' && mountpoint.empty()) {
      mountpoint = a;
    } else {
      mountpoint.clear();
      break;
    }
  }
  if (mountpoint.empty() || threads == 0 || bad) {
    std::fprintf(stderr,
                 "usage: %s [--threads N] [--read-ahead-kb K (0-1048576)] [--direct-io | --direct-io-no-shared-mmap] [--debug] "
                 "MOUNTPOINT\n",
                 argv[0]);
    return 2;
  }
  faultsafe::set_this_thread_name("ramfs_fuse");
  faultsafe::ramfs_options ro;
  ro.name = "ramfs_fuse";
  ro.prefix = "/fuse";
  ro.pool = {1, threads};
  ro.max_opens_per_client = 0;  // the bridge is one client holding every program's opens
  ro.dir_mode = 01777;          // the root as a fresh tmpfs: everyone may create, sticky
  // Files up to 16 GiB, sparse like tmpfs's (programs and test suites write past 2 GiB); a file that
  // grows past 1 MiB takes a 16 GiB extent of the store's sparse memfd and of the server's address space.
  ro.file.max_size = std::uint64_t{16} << 30;
  faultsafe::ramfs fs(ro);

  faultsafe::fuse_bridge_options bo;
  bo.server_threads = threads;
  bo.io = io;
  bo.allow_other = ::geteuid() == 0;
  bo.fsname = "ramfs_fuse";
  bo.debug = debug;
  bo.read_ahead_kb = static_cast<unsigned>(read_ahead_kb);
  faultsafe::fuse_bridge bridge("/fuse", bo);
  if (auto ec = bridge.mount(mountpoint)) {
    std::fprintf(stderr, "ramfs_fuse: %s (%s)\n", bridge.error_message().c_str(), ec.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "ramfs_fuse: mounted at %s (%u server threads, %u FUSE workers%s)\n", mountpoint.c_str(), threads,
               bridge.workers(), io == faultsafe::fuse_io_mode::page_cache ? "" : ", direct-io");
  if (auto ec = bridge.run()) {
    std::fprintf(stderr, "ramfs_fuse: %s\n", bridge.error_message().c_str());
    return 1;
  }
  std::fprintf(stderr, "ramfs_fuse: unmounted %s\n", mountpoint.c_str());
  return 0;
}
