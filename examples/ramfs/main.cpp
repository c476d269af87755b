// ramfs example: an in-memory file server (one memfd per file) attached at /ram, and client processes
// that create, write, read and check files from several threads. Exits 0 only when every check passed.
//
//   usage: ramfs [--threads N] [--files N] [--rounds N]
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {
int arg(int argc, char** argv, const char* name, int def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  return def;
}
char pattern(int file, std::size_t pos, int round) { return static_cast<char>('a' + (file * 7 + pos * 13 + round) % 26); }
}  // namespace

int main(int argc, char** argv) {
  const int nthreads = arg(argc, argv, "--threads", 4);
  const int nfiles = arg(argc, argv, "--files", 3);
  const int rounds = arg(argc, argv, "--rounds", 50);
  faultsafe::set_this_thread_name("main");

  faultsafe::ramfs fs({.name = "ramfs", .prefix = "/ram", .pool = {1, 4}, .dir_mode = 0777});
  std::atomic<int> failures{0};
  auto check = [&](bool ok, const std::string& what) {
    if (!ok && failures.fetch_add(1) < 20) std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
  };

  // Each thread is a process of its own user; it owns its files (0640) and checks them, and reads the
  // other users' files only to see permissions refused.
  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; ++t)
    ts.emplace_back([&, t] {
      faultsafe::set_this_thread_name("client" + std::to_string(t));
      faultsafe::process p("client" + std::to_string(t), {static_cast<std::uint32_t>(1000 + t), static_cast<std::uint32_t>(1000 + t)});
      for (int f = 0; f < nfiles; ++f) {
        const std::string path = "/ram/u" + std::to_string(t) + "_f" + std::to_string(f);
        auto fd = p.open(path, O_RDWR | O_CREAT | O_EXCL, 0640);
        check(fd.ok(), path + ": create: " + fd.error().message());
        if (!fd) continue;
        for (int r = 0; r < rounds; ++r) {
          const std::size_t len = 1000 + static_cast<std::size_t>((r * 37 + f * 101) % 7000);
          std::string data(len, '\0');
          for (std::size_t i = 0; i < len; ++i) data[i] = pattern(f, i, r);
          check(p.ftruncate(*fd, 0).ok(), path + ": truncate");
          check(p.lseek(*fd, 0, SEEK_SET).value_or(-1) == 0, path + ": lseek");
          check(p.write(*fd, data.data(), len).value_or(0) == len, path + ": write");
          std::string back(len + 10, '?');
          check(p.pread(*fd, back.data(), back.size(), 0).value_or(0) == len, path + ": pread length");
          check(back.compare(0, len, data) == 0, path + ": pread data");
          auto st = p.fstat(*fd);
          check(st.ok() && static_cast<std::size_t>(st.value().st_size) == len, path + ": fstat size");
        }
        check(p.close(*fd).ok(), path + ": close");
      }
      // permission checks against a neighbour's file
      const std::string other = "/ram/u" + std::to_string((t + 1) % nthreads) + "_f0";
      auto o = p.open(other, O_RDONLY);
      if (nthreads > 1) check(!o && (o.error() == std::errc::permission_denied || o.error() == std::errc::no_such_file_or_directory), other + ": should be refused");
      char c;
      check(p.read(12345, &c, 1).error() == std::errc::bad_file_descriptor, "bad fd is EBADF");
    });
  for (auto& t : ts) t.join();

  // The store is the truth: check the last round of every file through the server-side pointer too.
  for (int t = 0; t < nthreads; ++t)
    for (int f = 0; f < nfiles; ++f) {
      // Built with append: GCC 12 at -O2 reports a false -Wrestrict for "literal" + std::string.
      std::string name("u");
      name.append(std::to_string(t)).append("_f").append(std::to_string(f));
      auto attr = fs.lookup(name);
      check(attr != nullptr, "file exists");
      if (!attr) continue;
      const int r = rounds - 1;
      const std::size_t len = 1000 + static_cast<std::size_t>((r * 37 + f * 101) % 7000);
      bool same = attr->size() == len;
      for (std::size_t i = 0; same && i < len; ++i) same = attr->data()[i] == static_cast<unsigned char>(pattern(f, i, r));
      check(same, "store contents");
    }
  const unsigned threads = fs.srv().threads();
  fs.stop();
  std::printf("ramfs: %d clients x %d files x %d rounds, %u server threads, %d failures\n", nthreads, nfiles, rounds,
              threads, failures.load());
  std::printf("RESULT: %s\n", failures.load() == 0 ? "all checks passed" : "CHECKS FAILED");
  return failures.load() == 0 ? 0 : 1;
}
