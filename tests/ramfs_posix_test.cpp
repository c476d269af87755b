// ramfs's POSIX file surface (issue 15 part 1): every path and open-file message against Linux
// semantics.
// - differential: the same random sequence of file operations (mkdir, rmdir, unlink, rename with its
//   flags, link, symlink, readlink, open with O_CREAT/O_EXCL/O_TRUNC/O_DIRECTORY/O_NOFOLLOW, write,
//   stat/lstat, chmod, chown/lchown, access, truncate, utimensat, mknod) as root and as an ordinary
//   user, on a ramfs through faultsafe::process and on a kernel tmpfs directory (/dev/shm) through the
//   syscalls (the user's calls run with setfsuid/setfsgid and no supplementary groups on this thread:
//   the kernel then checks permissions as for that user); every result and errno must agree, and at
//   the end both trees (names, types, modes, owners, link counts, sizes, symlink targets) must be equal;
// - readdir positions stay valid while other threads unlink entries (no entry skipped or repeated);
// - rename's cases, ELOOP, ENAMETOOLONG, sticky and setgid directories, set-id bits cleared by write
//   and chown, times (UTIME_NOW/UTIME_OMIT, nanoseconds), fallocate, statvfs, readdir, fsync;
// - a random multi-threaded stress of every operation reports no lock-order violation.
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <faultsafe/order/violation.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include "resmgr_test_util.hpp"

namespace {

namespace fs = faultsafe;
using fs::process;

constexpr std::uint32_t user_uid = 1000, user_gid = 100;

template <class T>
int err(const fs::result<T>& r) {
  return r.ok() ? 0 : r.error().value();
}

/// The kernel side: syscalls on a directory of /dev/shm, as root or (setfsuid) as the user.
class kernel_side {
 public:
  kernel_side() {
    char tmpl[] = "/dev/shm/faultsafe-ramfs-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    base_ = d;
    REQUIRE(::chmod(base_.c_str(), 0777) == 0);
  }
  ~kernel_side() {
    as(false);
    std::error_code ec;
    std::filesystem::remove_all(base_, ec);
  }
  // Runs the calling thread's file access as the user (true) or root.
  static void as(bool user) {
    ::syscall(SYS_setfsuid, user ? user_uid : 0);
    ::syscall(SYS_setfsgid, user ? user_gid : 0);
  }
  std::string p(const std::string& rel) const { return rel.empty() ? base_ : base_ + "/" + rel; }
  const std::string& base() const { return base_; }

 private:
  std::string base_;
};

int k(int r) { return r < 0 ? errno : 0; }

/// One random operation on both sides; returns a description if the results differ.
class differential {
 public:
  explicit differential(unsigned seed)
      : rng_(seed),
        ram_(fs::ramfs_options{.name = "posixfs" + std::to_string(seed), .prefix = "/px" + std::to_string(seed), .pool = {1, 2}, .ns = &ns_}),
        root_("px-root", {0, 0}, &ns_),
        user_("px-user", {user_uid, user_gid}, &ns_) {
    ::syscall(SYS_setgroups, 0, nullptr);  // this thread only: no supplementary groups for either identity
  }

  std::string run(int ops) {
    for (int i = 0; i < ops; ++i) {
      std::string d = step();
      if (!d.empty()) return "op " + std::to_string(i) + ": " + d;
    }
    kernel_side::as(false);
    return compare_trees("");
  }

 private:
  std::string name() {
    static const char* names[] = {"a", "b", "c", "d"};
    std::string s;
    const int depth = 1 + static_cast<int>(rng_() % 3);
    for (int i = 0; i < depth; ++i) {
      if (i) s += '/';
      const unsigned r = rng_() % 20;
      s += r == 0 ? "." : names[r % 4];
    }
    if (rng_() % 16 == 0) s += '/';
    return s;
  }
  std::string rp(const std::string& rel) const { return ram_.prefix() + "/" + rel; }

  std::string step() {
    const bool user = rng_() % 3 == 0;
    process& pr = user ? user_ : root_;
    kernel_side::as(user);
    const std::string a = name(), b = name();
    const unsigned op = rng_() % 17;
    std::string what = std::string(user ? "[user] " : "[root] ");
    int r1 = 0, r2 = 0;
    switch (op) {
      case 0: {
        static const mode_t modes[] = {0755, 0700, 0777, 01777, 0555};
        const mode_t m = modes[rng_() % 5];
        what += "mkdir " + a;
        r1 = err(pr.mkdir(rp(a), m));
        r2 = k(::mkdir(ks_.p(a).c_str(), m));
        break;
      }
      case 1:
        what += "rmdir " + a;
        r1 = err(pr.rmdir(rp(a)));
        r2 = k(::rmdir(ks_.p(a).c_str()));
        break;
      case 2:
        what += "unlink " + a;
        r1 = err(pr.unlink(rp(a)));
        r2 = k(::unlink(ks_.p(a).c_str()));
        break;
      case 3: {
        static const unsigned flags[] = {0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE};
        const unsigned f = flags[rng_() % 4];
        what += "rename " + a + " " + b + " flags " + std::to_string(f);
        r1 = err(pr.rename(rp(a), rp(b), f));
        r2 = k(static_cast<int>(::syscall(SYS_renameat2, AT_FDCWD, ks_.p(a).c_str(), AT_FDCWD, ks_.p(b).c_str(), f)));
        break;
      }
      case 4:
        what += "link " + a + " " + b;
        r1 = err(pr.link(rp(a), rp(b)));
        r2 = k(::link(ks_.p(a).c_str(), ks_.p(b).c_str()));
        break;
      case 5: {
        static const char* targets[] = {"a", "b/c", "d", "nowhere", "c/d/a"};
        const std::string t = targets[rng_() % 5];
        what += "symlink " + t + " " + a;
        r1 = err(pr.symlink(t, rp(a)));
        r2 = k(::symlink(t.c_str(), ks_.p(a).c_str()));
        break;
      }
      case 6: {
        what += "readlink " + a;
        char b1[64], b2[64];
        auto r = pr.readlink(rp(a), b1, sizeof b1);
        const ssize_t n = ::readlink(ks_.p(a).c_str(), b2, sizeof b2);
        r1 = err(r);
        r2 = n < 0 ? errno : 0;
        if (!r1 && !r2 && (*r != static_cast<std::size_t>(n) || std::memcmp(b1, b2, static_cast<std::size_t>(n)) != 0))
          return what + ": targets differ";
        break;
      }
      case 7:
      case 8: {
        static const int acc[] = {O_RDONLY, O_WRONLY, O_RDWR};
        int f = acc[rng_() % 3];
        const unsigned bits = static_cast<unsigned>(rng_());
        if (bits & 1) f |= O_CREAT;
        if (bits & 2) f |= O_EXCL;
        if ((bits & 12) == 4) f |= O_TRUNC;
        if ((bits & 48) == 16) f |= O_DIRECTORY;
        if ((bits & 192) == 64) f |= O_NOFOLLOW;
        static const mode_t modes[] = {0644, 0600, 0755, 0444, 04755};
        const mode_t m = modes[rng_() % 5];
        struct ::stat kst {};
        if (::stat(ks_.p(a).c_str(), &kst) == 0 && !S_ISREG(kst.st_mode) && !S_ISDIR(kst.st_mode)) return {};  // FIFOs block
        what += "open " + a + " flags 0" + std::to_string(f) + " mode " + std::to_string(m);
        auto fd = pr.open(rp(a), f, m);
        const int kfd = ::open(ks_.p(a).c_str(), f, m);
        r1 = err(fd);
        r2 = kfd < 0 ? errno : 0;
        if (!r1 && !r2 && (f & O_ACCMODE) != O_RDONLY && rng_() % 2) {
          char buf[100];
          std::memset(buf, 'x', sizeof buf);
          const std::size_t n = 1 + rng_() % 100;
          auto w = pr.write(*fd, buf, n);
          const ssize_t kw = ::write(kfd, buf, n);
          if (err(w) != (kw < 0 ? errno : 0)) return what + ": write errors differ";
        }
        if (fd) (void)pr.close(*fd);
        if (kfd >= 0) ::close(kfd);
        break;
      }
      case 9: {
        const bool l = rng_() % 2;
        what += std::string(l ? "lstat " : "stat ") + a;
        auto s1 = l ? pr.lstat(rp(a)) : pr.stat(rp(a));
        struct ::stat s2 {};
        r1 = err(s1);
        r2 = k(l ? ::lstat(ks_.p(a).c_str(), &s2) : ::stat(ks_.p(a).c_str(), &s2));
        if (!r1 && !r2) {
          std::string d = same_stat(*s1, s2);
          if (!d.empty()) return what + ": " + d;
        }
        break;
      }
      case 10: {
        static const mode_t modes[] = {0644, 0600, 0755, 02775, 04755, 01777, 0};
        const mode_t m = modes[rng_() % 7];
        what += "chmod " + a + " " + std::to_string(m);
        r1 = err(pr.chmod(rp(a), m));
        r2 = k(::chmod(ks_.p(a).c_str(), m));
        break;
      }
      case 11: {
        static const std::uint32_t uids[] = {~0u, 0, user_uid, 1001};
        static const std::uint32_t gids[] = {~0u, 0, user_gid, 101};
        const std::uint32_t u = uids[rng_() % 4], g = gids[rng_() % 4];
        const bool l = rng_() % 2;
        what += std::string(l ? "lchown " : "chown ") + a + " " + std::to_string(static_cast<int>(u)) + " " + std::to_string(static_cast<int>(g));
        r1 = err(l ? pr.lchown(rp(a), u, g) : pr.chown(rp(a), u, g));
        r2 = k(l ? ::lchown(ks_.p(a).c_str(), u, g) : ::chown(ks_.p(a).c_str(), u, g));
        break;
      }
      case 12: {
        const int m = static_cast<int>(rng_() % 8);
        what += "access " + a + " " + std::to_string(m);
        r1 = err(pr.access(rp(a), m));
        // access(2) would check with the real uid; faccessat2(AT_EACCESS) checks with this thread's
        // current credentials (the fs ids set above).
        r2 = k(static_cast<int>(::syscall(SYS_faccessat2, AT_FDCWD, ks_.p(a).c_str(), m, AT_EACCESS)));
        break;
      }
      case 13: {
        struct ::stat kst {};
        if (::stat(ks_.p(a).c_str(), &kst) == 0 && !S_ISREG(kst.st_mode) && !S_ISDIR(kst.st_mode)) return {};
        const off_t len = static_cast<off_t>(rng_() % 5000);
        what += "truncate " + a + " " + std::to_string(len);
        r1 = err(pr.truncate(rp(a), len));
        r2 = k(::truncate(ks_.p(a).c_str(), len));
        break;
      }
      case 14: {
        struct ::timespec t[2] = {{1000 + static_cast<time_t>(rng_() % 1000), static_cast<long>(rng_() % 1000000000)},
                                  {2000, 123456789}};
        if (rng_() % 3 == 0) t[0].tv_nsec = UTIME_OMIT;
        if (rng_() % 3 == 0) t[1].tv_nsec = UTIME_NOW;
        const int fl = rng_() % 2 ? AT_SYMLINK_NOFOLLOW : 0;
        what += "utimensat " + a + " flags " + std::to_string(fl);
        r1 = err(pr.utimensat(rp(a), t, fl));
        r2 = k(::utimensat(AT_FDCWD, ks_.p(a).c_str(), t, fl));
        if (!r1 && !r2 && t[1].tv_nsec != UTIME_NOW) {
          auto s1 = fl ? pr.lstat(rp(a)) : pr.stat(rp(a));
          struct ::stat s2 {};
          const int kr = fl ? ::lstat(ks_.p(a).c_str(), &s2) : ::stat(ks_.p(a).c_str(), &s2);
          if (s1 && kr == 0 && (s1.value().st_mtim.tv_sec != s2.st_mtim.tv_sec || s1.value().st_mtim.tv_nsec != s2.st_mtim.tv_nsec))
            return what + ": mtime differs";
        }
        break;
      }
      case 15: {
        static const mode_t types[] = {S_IFIFO, S_IFSOCK, S_IFREG, S_IFCHR};
        const mode_t m = types[rng_() % 4] | 0644;
        what += "mknod " + a + " " + std::to_string(m);
        r1 = err(pr.mknod(rp(a), m, S_ISCHR(m) ? makedev(1, 3) : 0));
        r2 = k(::mknod(ks_.p(a).c_str(), m, S_ISCHR(m) ? makedev(1, 3) : 0));
        break;
      }
      default: {  // a write through an existing regular file, to change sizes and clear set-id bits
        struct ::stat kst {};
        if (::stat(ks_.p(a).c_str(), &kst) != 0 || !S_ISREG(kst.st_mode)) return {};
        what += "append " + a;
        auto fd = pr.open(rp(a), O_WRONLY | O_APPEND);
        const int kfd = ::open(ks_.p(a).c_str(), O_WRONLY | O_APPEND);
        r1 = err(fd);
        r2 = kfd < 0 ? errno : 0;
        if (!r1 && !r2) {
          auto w = pr.write(*fd, "hello", 5);
          if (::write(kfd, "hello", 5) != 5 || !w) return what + ": write failed";
        }
        if (fd) (void)pr.close(*fd);
        if (kfd >= 0) ::close(kfd);
      }
    }
    if (r1 != r2) return what + ": ramfs " + std::to_string(r1) + " (" + std::strerror(r1) + "), tmpfs " + std::to_string(r2) + " (" + std::strerror(r2) + ")";
    return {};
  }

  static std::string same_stat(const struct ::stat& a, const struct ::stat& b) {
    char buf[256];
    if (a.st_mode != b.st_mode || a.st_nlink != b.st_nlink || a.st_uid != b.st_uid || a.st_gid != b.st_gid ||
        (!S_ISDIR(a.st_mode) && a.st_size != b.st_size) || (S_ISCHR(a.st_mode) && a.st_rdev != b.st_rdev)) {
      std::snprintf(buf, sizeof buf, "stat differs: mode 0%o/0%o nlink %lu/%lu uid %u/%u gid %u/%u size %lld/%lld", a.st_mode,
                    b.st_mode, static_cast<unsigned long>(a.st_nlink), static_cast<unsigned long>(b.st_nlink), a.st_uid, b.st_uid,
                    a.st_gid, b.st_gid, static_cast<long long>(a.st_size), static_cast<long long>(b.st_size));
      return buf;
    }
    return {};
  }

  // Both trees below `rel` (as root): the same names, and the same lstat for each.
  std::string compare_trees(const std::string& rel) {
    std::set<std::string> kn, rn;
    if (DIR* d = ::opendir(ks_.p(rel).c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) kn.insert(e->d_name);
      ::closedir(d);
    }
    auto fd = root_.open(rp(rel), O_RDONLY | O_DIRECTORY);
    if (!fd) return "final: cannot open " + rel;
    std::vector<unsigned char> buf(4096);
    for (std::uint64_t pos = 0;;) {
      auto n = root_.readdir(*fd, pos, buf.data(), buf.size());
      if (!n || *n == 0) break;
      for (std::size_t off = 0; off < *n;) {
        fs::io_dirent h;
        std::memcpy(&h, buf.data() + off, sizeof h);
        std::string nm(reinterpret_cast<const char*>(buf.data() + off + sizeof h), h.namelen);
        if (nm != "." && nm != "..") rn.insert(nm);
        pos = h.next;
        off += h.reclen;
      }
    }
    (void)root_.close(*fd);
    if (kn != rn) return "final: the entries of '" + rel + "' differ";
    for (const auto& n : kn) {
      const std::string c = rel.empty() ? n : rel + "/" + n;
      auto s1 = root_.lstat(rp(c));
      struct ::stat s2 {};
      if (!s1 || ::lstat(ks_.p(c).c_str(), &s2) != 0) return "final: lstat " + c;
      std::string d = same_stat(*s1, s2);
      if (!d.empty()) return "final " + c + ": " + d;
      if (S_ISDIR(s2.st_mode)) {
        d = compare_trees(c);
        if (!d.empty()) return d;
      }
    }
    return {};
  }

  std::mt19937 rng_;
  fs::path_namespace ns_;
  fs::ramfs ram_;
  process root_, user_;
  kernel_side ks_;
};

struct violations {
  std::mutex m;
  std::vector<std::string> seen;
  fs::scoped_violation_handler h{[this](const fs::violation& v) {
    std::lock_guard<std::mutex> g(m);
    seen.push_back(v.report());
  }};
};

}  // namespace

TEST_CASE("differential: random file operations on ramfs and on a kernel tmpfs agree") {
  if (::geteuid() != 0) {
    MESSAGE("not root: the user side needs setfsuid");
    return;
  }
  faultsafe_test::watchdog wd("ramfs differential", std::chrono::seconds(100));
  ::umask(0);
  violations v;
  for (unsigned seed = 1; seed <= 12; ++seed) {
    differential d(seed);
    const std::string diff = d.run(400);
    INFO("seed " << seed);
    CHECK_MESSAGE(diff.empty(), diff);
  }
  CHECK(v.seen.empty());
}

TEST_CASE("readdir positions stay valid while entries are unlinked concurrently") {
  faultsafe_test::watchdog wd("readdir vs unlink", std::chrono::seconds(60));
  fs::path_namespace ns;
  fs::ramfs ram(fs::ramfs_options{.name = "rd", .prefix = "/rd", .pool = {2, 4}, .ns = &ns});
  process p("rd", {}, &ns);
  REQUIRE(p.mkdir("/rd/d", 0755).ok());
  constexpr int n = 300;
  for (int i = 0; i < n; ++i) {
    auto fd = p.open("/rd/d/f" + std::to_string(i), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd);
    (void)p.close(*fd);
  }
  // Even entries are unlinked while a reader walks the directory in small steps; every odd entry must
  // come back exactly once, every entry at most once.
  std::atomic<bool> go{false};
  std::thread killer([&] {
    process k("rd-killer", {}, &ns);
    while (!go.load()) std::this_thread::yield();
    for (int i = 0; i < n; i += 2) (void)k.unlink("/rd/d/f" + std::to_string(i));
  });
  auto fd = p.open("/rd/d", O_RDONLY | O_DIRECTORY);
  REQUIRE(fd);
  std::map<std::string, int> seen;
  std::vector<unsigned char> buf(200);  // a few records per call
  go = true;
  for (std::uint64_t pos = 0;;) {
    auto got = p.readdir(*fd, pos, buf.data(), buf.size());
    REQUIRE(got);
    if (*got == 0) break;
    for (std::size_t off = 0; off < *got;) {
      fs::io_dirent h;
      std::memcpy(&h, buf.data() + off, sizeof h);
      ++seen[std::string(reinterpret_cast<const char*>(buf.data() + off + sizeof h), h.namelen)];
      pos = h.next;
      off += h.reclen;
    }
  }
  killer.join();
  for (const auto& [name, count] : seen) CHECK_MESSAGE(count == 1, name);
  for (int i = 1; i < n; i += 2) CHECK(seen.count(std::string("f").append(std::to_string(i))) == 1);
  CHECK(seen.count(".") == 1);
  CHECK(seen.count("..") == 1);
  (void)p.close(*fd);
  CHECK(p.readdir(*fd, 0, buf.data(), buf.size()).error().value() == EBADF);
  char tiny[8];
  auto dfd = p.open("/rd/d", O_RDONLY | O_DIRECTORY);
  CHECK(p.readdir(*dfd, 0, tiny, sizeof tiny).error().value() == EINVAL);
  auto ffd = p.open("/rd/d/f1", O_RDONLY);
  CHECK(p.readdir(*ffd, 0, buf.data(), buf.size()).error().value() == ENOTDIR);
}

TEST_CASE("rename: replace, across directories, directory onto empty directory, NOREPLACE, EXCHANGE") {
  fs::path_namespace ns;
  fs::ramfs ram(fs::ramfs_options{.name = "rn", .prefix = "/rn", .pool = {1, 2}, .ns = &ns});
  process p("rn", {}, &ns);
  auto mk = [&](const std::string& f, const char* data) {
    auto fd = p.open("/rn/" + f, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    REQUIRE(fd);
    REQUIRE(p.write(*fd, data, std::strlen(data)));
    (void)p.close(*fd);
  };
  auto size = [&](const std::string& f) { return p.stat("/rn/" + f).value().st_size; };
  REQUIRE(p.mkdir("/rn/x", 0755).ok());
  REQUIRE(p.mkdir("/rn/y", 0755).ok());
  mk("x/a", "1");
  mk("x/b", "22");
  CHECK(p.rename("/rn/x/a", "/rn/x/b").ok());  // replace
  CHECK(size("x/b") == 1);
  CHECK(err(p.stat("/rn/x/a")) == ENOENT);
  CHECK(p.rename("/rn/x/b", "/rn/y/b").ok());  // across directories
  CHECK(size("y/b") == 1);
  REQUIRE(p.mkdir("/rn/x/sub", 0755).ok());
  REQUIRE(p.mkdir("/rn/y/empty", 0755).ok());
  CHECK(p.stat("/rn/x").value().st_nlink == 3);
  CHECK(p.rename("/rn/x/sub", "/rn/y/empty").ok());  // a directory onto an empty directory
  CHECK(p.stat("/rn/x").value().st_nlink == 2);
  CHECK(p.stat("/rn/y").value().st_nlink == 3);
  REQUIRE(p.mkdir("/rn/y/empty/in", 0755).ok());
  REQUIRE(p.mkdir("/rn/x/d2", 0755).ok());
  CHECK(err(p.rename("/rn/x/d2", "/rn/y/empty")) == ENOTEMPTY);
  CHECK(err(p.rename("/rn/y", "/rn/y/empty/in/z")) == EINVAL);  // into itself
  mk("x/c", "333");
  CHECK(err(p.rename("/rn/x/c", "/rn/y/b", RENAME_NOREPLACE)) == EEXIST);
  CHECK(p.rename("/rn/x/c", "/rn/y/b", RENAME_EXCHANGE).ok());
  CHECK(size("x/c") == 1);
  CHECK(size("y/b") == 3);
  CHECK(err(p.rename("/rn/x/c", "/rn/y/nothing", RENAME_EXCHANGE)) == ENOENT);
  CHECK(err(p.rename("/rn/x/c", "/rn/y/empty")) == EISDIR);
  CHECK(err(p.rename("/rn/y/empty", "/rn/x/c")) == ENOTDIR);
  CHECK(err(p.rename("/rn/x/c", "/rn/x/c", RENAME_NOREPLACE | RENAME_EXCHANGE)) == EINVAL);
}

TEST_CASE("path limits, symlinks, permissions, set-id bits, times, space") {
  fs::path_namespace ns;
  fs::ramfs ram(fs::ramfs_options{.name = "pl", .prefix = "/pl", .pool = {1, 2}, .ns = &ns});
  process root("pl-root", {}, &ns), user("pl-user", {user_uid, user_gid}, &ns), other("pl-other", {1001, 101}, &ns);
  // ELOOP after 40 links, ENAMETOOLONG per component and per path.
  CHECK(root.symlink("l0", "/pl/l40").ok());
  for (int i = 0; i < 40; ++i) CHECK(root.symlink("l" + std::to_string(i + 1), "/pl/l" + std::to_string(i)).ok());
  CHECK(err(root.stat("/pl/l0")) == ELOOP);
  CHECK(err(root.lstat("/pl/l0")) == 0);
  CHECK(err(root.open("/pl/l0", O_RDONLY | O_NOFOLLOW)) == ELOOP);
  CHECK(err(root.stat("/pl/" + std::string(256, 'n'))) == ENAMETOOLONG);
  CHECK(err(root.stat("/pl/" + std::string(4100, 'n'))) == ENAMETOOLONG);
  // O_CREAT through a dangling symlink creates its target; O_EXCL refuses the link.
  CHECK(root.symlink("target", "/pl/dangling").ok());
  CHECK(err(root.open("/pl/dangling", O_CREAT | O_EXCL | O_WRONLY, 0644)) == EEXIST);
  auto fd = root.open("/pl/dangling", O_CREAT | O_WRONLY, 0644);
  CHECK(fd);
  CHECK(S_ISREG(root.stat("/pl/target").value().st_mode));
  CHECK(err(root.open("/pl/target", O_RDONLY | O_DIRECTORY)) == ENOTDIR);
  CHECK(err(root.open("/pl/target/", O_RDONLY)) == ENOTDIR);
  // Search permission on every component.
  REQUIRE(root.mkdir("/pl/locked", 0700).ok());
  REQUIRE(root.mkdir("/pl/locked/in", 0777).ok());
  CHECK(err(user.stat("/pl/locked/in")) == EACCES);
  CHECK(err(user.mkdir("/pl/locked/in/x", 0777)) == EACCES);
  // Sticky directory: only the owner of the entry (or of the directory, or root) removes it.
  REQUIRE(root.mkdir("/pl/tmp", 01777).ok());
  auto ufd = user.open("/pl/tmp/mine", O_CREAT | O_WRONLY, 0666);
  REQUIRE(ufd);
  CHECK(err(other.unlink("/pl/tmp/mine")) == EPERM);
  CHECK(err(other.rename("/pl/tmp/mine", "/pl/tmp/theirs")) == EPERM);
  CHECK(user.unlink("/pl/tmp/mine").ok());
  // Setgid directory: new entries take its group; new directories inherit the bit.
  REQUIRE(root.mkdir("/pl/shared", 0777).ok());
  REQUIRE(root.chown("/pl/shared", 0, 555).ok());
  REQUIRE(root.chmod("/pl/shared", 02777).ok());
  REQUIRE(user.mkdir("/pl/shared/sub", 0755).ok());
  auto st = user.stat("/pl/shared/sub").value();
  CHECK(st.st_gid == 555u);
  CHECK((st.st_mode & S_ISGID) != 0);
  auto sfd = user.open("/pl/shared/f", O_CREAT | O_WRONLY, 0644);
  CHECK(user.fstat(*sfd).value().st_gid == 555u);
  // Set-id bits: cleared by a write of a non-root writer and by chown.
  REQUIRE(user.fchmod(*sfd, 06775).ok());
  CHECK((user.fstat(*sfd).value().st_mode & 07777) == 04775);  // not in group 555: S_ISGID dropped
  REQUIRE(root.chmod("/pl/shared/f", 06775).ok());
  CHECK(user.write(*sfd, "x", 1));
  CHECK((root.stat("/pl/shared/f").value().st_mode & 07777) == 0775);
  REQUIRE(root.chmod("/pl/shared/f", 04755).ok());
  REQUIRE(root.chown("/pl/shared/f", user_uid, user_gid).ok());
  CHECK((root.stat("/pl/shared/f").value().st_mode & 07777) == 0755);
  CHECK(err(user.chown("/pl/shared/f", 0, ~0u)) == EPERM);
  CHECK(err(other.chmod("/pl/shared/f", 0777)) == EPERM);
  // Times: nanoseconds, UTIME_OMIT, UTIME_NOW; explicit times need the owner.
  struct ::timespec t[2] = {{100, 5}, {200, 999999999}};
  REQUIRE(user.futimens(*sfd, t).ok());
  st = user.fstat(*sfd).value();
  CHECK(st.st_atim.tv_sec == 100);
  CHECK(st.st_atim.tv_nsec == 5);
  CHECK(st.st_mtim.tv_nsec == 999999999);
  struct ::timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  REQUIRE(user.futimens(*sfd, omit_now).ok());
  st = user.fstat(*sfd).value();
  CHECK(st.st_atim.tv_sec == 100);
  CHECK(st.st_mtim.tv_sec > 200);
  CHECK(err(other.utimensat("/pl/shared/f", t)) == EPERM);
  // fallocate: extend, keep size, punch a hole; fsync; statvfs.
  CHECK(user.fallocate(*sfd, 0, 0, 10000).ok());
  CHECK(user.fstat(*sfd).value().st_size == 10000);
  CHECK(user.fallocate(*sfd, FALLOC_FL_KEEP_SIZE, 0, 20000).ok());
  CHECK(user.fstat(*sfd).value().st_size == 10000);
  REQUIRE(user.pwrite(*sfd, "abcdef", 6, 100));
  CHECK(user.fallocate(*sfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 101, 3).ok());
  auto rfd = user.open("/pl/shared/f", O_RDONLY);
  char got[6];
  REQUIRE(user.pread(*rfd, got, 6, 100));
  CHECK(std::memcmp(got, "a\0\0\0ef", 6) == 0);
  CHECK(err(user.fallocate(*rfd, 0, 0, 10)) == EBADF);
  CHECK(err(user.fallocate(*sfd, FALLOC_FL_PUNCH_HOLE, 0, 10)) == EOPNOTSUPP);
  CHECK(user.fsync(*sfd).ok());
  CHECK(user.fdatasync(*sfd).ok());
  CHECK(user.statvfs("/pl/shared").value().f_namemax == 255);
  CHECK(user.fstatvfs(*sfd).value().f_bsize == 4096);
  // Device nodes for root only; FIFOs and sockets for anyone.
  CHECK(err(user.mknod("/pl/tmp/dev", S_IFCHR | 0600, makedev(1, 3))) == EPERM);
  CHECK(root.mknod("/pl/tmp/dev", S_IFCHR | 0600, makedev(1, 3)).ok());
  CHECK(root.stat("/pl/tmp/dev").value().st_rdev == makedev(1, 3));
  CHECK(user.mknod("/pl/tmp/fifo", S_IFIFO | 0600, 0).ok());
  CHECK(S_ISFIFO(user.lstat("/pl/tmp/fifo").value().st_mode));
  // Link counts and EISDIR/ENOTDIR/ENOTEMPTY.
  CHECK(user.link("/pl/shared/f", "/pl/shared/f2").ok());
  CHECK(user.stat("/pl/shared/f").value().st_nlink == 2);
  CHECK(err(root.link("/pl/shared", "/pl/dirlink")) == EPERM);
  CHECK(err(root.unlink("/pl/shared")) == EISDIR);
  CHECK(err(root.rmdir("/pl/shared/f")) == ENOTDIR);
  CHECK(err(root.rmdir("/pl/shared")) == ENOTEMPTY);
  CHECK(err(root.open("/pl/shared", O_WRONLY)) == EISDIR);
  CHECK(err(root.rmdir("/pl")) == EBUSY);
  CHECK(err(user.access("/pl/locked", R_OK)) == EACCES);
  CHECK(user.access("/pl/shared/f", R_OK | W_OK).ok());
}

TEST_CASE("stress: every operation from several threads, no lock-order violation") {
  faultsafe_test::watchdog wd("ramfs stress", std::chrono::seconds(100));
  violations v;
  fs::path_namespace ns;
  fs::ramfs ram(fs::ramfs_options{.name = "st", .prefix = "/st", .pool = {2, 4}, .ns = &ns});
  constexpr int threads = 4, ops = 1500;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      process p("st" + std::to_string(t), {}, &ns);
      std::mt19937 rng(static_cast<unsigned>(t) * 7 + 1);
      auto nm = [&] {
        static const char* n[] = {"a", "b", "c"};
        std::string s = "/st";
        for (unsigned i = 0, d = 1 + rng() % 3; i < d; ++i) s += std::string("/") + n[rng() % 3];
        return s;
      };
      for (int i = 0; i < ops; ++i) {
        const std::string a = nm(), b = nm();
        switch (rng() % 12) {
          case 0: (void)p.mkdir(a, 0755); break;
          case 1: (void)p.rmdir(a); break;
          case 2: (void)p.unlink(a); break;
          case 3: (void)p.rename(a, b, rng() % 3 == 0 ? RENAME_EXCHANGE : 0); break;
          case 4: (void)p.link(a, b); break;
          case 5: (void)p.symlink("a", a); break;
          case 6: {
            auto fd = p.open(a, O_CREAT | O_RDWR, 0644);
            if (fd) {
              (void)p.write(*fd, "data", 4);
              std::vector<unsigned char> buf(512);
              (void)p.readdir(*fd, 0, buf.data(), buf.size());
              (void)p.fallocate(*fd, 0, 0, 100);
              (void)p.close(*fd);
            }
            break;
          }
          case 7: {
            auto fd = p.open(a, O_RDONLY | O_DIRECTORY);
            if (fd) {
              std::vector<unsigned char> buf(512);
              (void)p.readdir(*fd, 0, buf.data(), buf.size());
              (void)p.close(*fd);
            }
            break;
          }
          case 8: (void)p.stat(a); break;
          case 9: (void)p.chmod(a, 0755); break;
          case 10: (void)p.truncate(a, 10); break;
          default: {
            char buf[32];
            (void)p.readlink(a, buf, sizeof buf);
            (void)p.lstat(b);
          }
        }
      }
    });
  for (auto& t : ts) t.join();
  for (const auto& s : v.seen) MESSAGE(s);
  CHECK(v.seen.empty());
}
