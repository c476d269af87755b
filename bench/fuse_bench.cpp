// bench_fuse: the FUSE bridge (resmgr/fuse_bridge.hpp) measured beside its baselines in the same run.
//
// 1. Per-request overhead: the bridge (a ramfs behind it, direct-io) vs a minimal libfuse low-level
//    server of this file answering the same requests from a plain in-memory array (the cost FUSE
//    itself imposes): 4 KiB random preads (direct-io: every one is a READ request), fstat (a GETATTR:
//    attribute timeouts are 0 on both), create+close+unlink (CREATE, FLUSH, RELEASE, UNLINK).
// 2. Data on the mount (page-cache mode) vs the kernel's tmpfs: sequential 1 MiB writes, warm
//    sequential 1 MiB reads (pages cached by the writes, same fd), cold sequential reads (a new open
//    whose pages are dropped with POSIX_FADV_DONTNEED), sequential reads through new opens of the
//    unchanged file (kept pages: the server's data version), 4 KiB random warm reads.
// 3. The server's part of a bridged request, without FUSE: a 4 KiB pread and an fstat through a
//    `process` on the same ramfs, served on the calling thread (as the bridge's workers do,
//    process::set_serve_on_calling_thread) vs handed to a pool thread (an ordinary in-process client).
// Both mounts live in this process (bridge threads serve this thread's system calls). Every figure is
// in real time (the work is done by other threads: CPU time of the calling thread would flatter FUSE). Needs root or
// fusermount3 and /dev/fuse; prints why and exits 0 when it cannot mount. Usage: bench_fuse [flags].
#include <faultsafe/resmgr/fuse_bridge.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_report.hpp"

namespace {

constexpr std::size_t file_size = 64u << 20;

// ---- the minimal low-level server: one directory of names over plain arrays ------------------------
struct minimal_fs {
  static constexpr std::size_t max_files = 1024;
  struct file {
    bool used = false;
    std::string name;
    std::vector<char> data;
  };
  std::mutex mu;  // baseline only: a plain mutex, like any small FUSE server
  file files[max_files];

  static minimal_fs& self(fuse_req_t r) { return *static_cast<minimal_fs*>(fuse_req_userdata(r)); }
  static void fill(fuse_ino_t ino, const file* f, struct ::stat& st) {
    std::memset(&st, 0, sizeof st);
    st.st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
      st.st_mode = S_IFDIR | 0777;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0666;
      st.st_nlink = 1;
      st.st_size = static_cast<off_t>(f->data.size());
    }
  }
  static void lookup(fuse_req_t req, fuse_ino_t, const char* name) {
    auto& s = self(req);
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    {
      std::lock_guard<std::mutex> g(s.mu);
      for (std::size_t i = 0; i < max_files; ++i)
        if (s.files[i].used && s.files[i].name == name) {
          e.ino = i + 2;
          fill(e.ino, &s.files[i], e.attr);
        }
    }
    if (e.ino == 0) return (void)fuse_reply_err(req, ENOENT);
    (void)fuse_reply_entry(req, &e);
  }
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    auto& s = self(req);
    struct ::stat st;
    std::lock_guard<std::mutex> g(s.mu);
    if (ino != FUSE_ROOT_ID && (ino - 2 >= max_files || !s.files[ino - 2].used)) return (void)fuse_reply_err(req, ENOENT);
    fill(ino, ino == FUSE_ROOT_ID ? nullptr : &s.files[ino - 2], st);
    (void)fuse_reply_attr(req, &st, 0);
  }
  static void open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    fi->direct_io = 1;
    (void)fuse_reply_open(req, fi);
  }
  static void create(fuse_req_t req, fuse_ino_t, const char* name, mode_t, fuse_file_info* fi) {
    auto& s = self(req);
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    {
      std::lock_guard<std::mutex> g(s.mu);
      for (std::size_t i = 0; i < max_files && e.ino == 0; ++i)
        if (!s.files[i].used) {
          s.files[i].used = true;
          s.files[i].name = name;
          s.files[i].data.clear();
          e.ino = i + 2;
          fill(e.ino, &s.files[i], e.attr);
        }
    }
    if (e.ino == 0) return (void)fuse_reply_err(req, ENOSPC);
    fi->direct_io = 1;
    (void)fuse_reply_create(req, &e, fi);
  }
  static void unlink(fuse_req_t req, fuse_ino_t, const char* name) {
    auto& s = self(req);
    std::lock_guard<std::mutex> g(s.mu);
    for (auto& f : s.files)
      if (f.used && f.name == name) {
        f.used = false;
        return (void)fuse_reply_err(req, 0);
      }
    (void)fuse_reply_err(req, ENOENT);
  }
  static void read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*) {
    auto& s = self(req);
    const file& f = s.files[ino - 2];  // the data of a file being read does not change in this benchmark
    const std::size_t n = static_cast<std::size_t>(off) >= f.data.size() ? 0 : std::min(size, f.data.size() - static_cast<std::size_t>(off));
    (void)fuse_reply_buf(req, f.data.data() + off, n);
  }
  static void release(fuse_req_t req, fuse_ino_t, fuse_file_info*) { (void)fuse_reply_err(req, 0); }
  static void flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { (void)fuse_reply_err(req, 0); }
  static void forget(fuse_req_t req, fuse_ino_t, std::uint64_t) { fuse_reply_none(req); }
};

// A mount in a thread of this process, unmounted at exit.
struct mount_thread {
  std::string dir;
  fuse_session* se = nullptr;
  std::thread t;
  std::function<void()> stop;
  ~mount_thread() {
    if (stop) stop();
    if (t.joinable()) t.join();
  }
};

std::string g_bridge_dio, g_minimal, g_bridge_pc, g_tmpfs;
std::vector<char> g_buf(1 << 20);

void fill_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  for (std::size_t off = 0; off < file_size; off += g_buf.size())
    if (::pwrite(fd, g_buf.data(), g_buf.size(), static_cast<off_t>(off)) < 0) std::abort();
  ::close(fd);
}

void read4k(benchmark::State& st, const std::string* dir, bool warm) {
  const int fd = ::open((*dir + "/data").c_str(), O_RDONLY);
  if (fd < 0) return st.SkipWithError("open");
  if (warm)  // every page cached before the timing (this fd stays open: keep_cache 0 drops only at open)
    for (std::size_t off = 0; off < file_size; off += g_buf.size())
      if (::pread(fd, g_buf.data(), g_buf.size(), static_cast<off_t>(off)) < 0) return st.SkipWithError("warm-up");
  std::mt19937_64 rng(1);
  char b[4096];
  for (auto _ : st) {
    const off_t off = static_cast<off_t>(rng() % (file_size / 4096)) * 4096;
    if (::pread(fd, b, sizeof b, off) != static_cast<ssize_t>(sizeof b)) return st.SkipWithError("pread");
  }
  st.SetItemsProcessed(st.iterations());
  ::close(fd);
}
void getattr(benchmark::State& st, const std::string* dir) {
  const int fd = ::open((*dir + "/data").c_str(), O_RDONLY);
  struct ::stat s;
  for (auto _ : st)
    if (::fstat(fd, &s) != 0) return st.SkipWithError("fstat");
  st.SetItemsProcessed(st.iterations());
  ::close(fd);
}
void create_unlink(benchmark::State& st, const std::string* dir) {
  const std::string p = *dir + "/tmpfile";
  for (auto _ : st) {
    const int fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) return st.SkipWithError("create");
    ::close(fd);
    if (::unlink(p.c_str()) != 0) return st.SkipWithError("unlink");
  }
  st.SetItemsProcessed(st.iterations());
}
// The server's part alone (3. above): `p` serves on the calling thread or not; `read` or fstat.
void server_part(benchmark::State& st, faultsafe::process* p, bool read) {
  const std::string path = "/bench-fuse/data";
  auto fd = p->open(path, O_RDONLY);
  if (!fd) return st.SkipWithError("open");
  std::mt19937_64 rng(1);
  char b[4096];
  for (auto _ : st) {
    if (read) {
      const off_t off = static_cast<off_t>(rng() % (file_size / 4096)) * 4096;
      if (p->pread(*fd, b, sizeof b, off).value_or(0) != sizeof b) return st.SkipWithError("pread");
    } else if (!p->fstat(*fd)) {
      return st.SkipWithError("fstat");
    }
  }
  st.SetItemsProcessed(st.iterations());
  (void)p->close(*fd);
}
void seq_write(benchmark::State& st, const std::string* dir) {
  const int fd = ::open((*dir + "/seq").c_str(), O_CREAT | O_RDWR, 0644);
  std::size_t off = 0;
  for (auto _ : st) {
    if (::pwrite(fd, g_buf.data(), g_buf.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(g_buf.size())) return st.SkipWithError("pwrite");
    off = (off + g_buf.size()) % file_size;
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * g_buf.size()));
  st.SetItemsProcessed(st.iterations());
  ::close(fd);
}
// How a sequential reader meets the file: warm (pages cached, one open), cold (every 64 MiB a new open
// whose cached pages are dropped with POSIX_FADV_DONTNEED: tmpfs has none to drop; the drop itself is
// not timed: it is the eviction of the previous pass, which the kernel's reclaim does off the reader's
// thread in real life, and it took about a third of the reader's CPU in a profile), reopen (every 64 MiB
// a new open of the unchanged file: the bridge keeps its pages when the server's data version says
// nothing changed; before the data version every open dropped them).
enum class read_kind { warm, cold, reopen };
void seq_read(benchmark::State& st, const std::string* dir, read_kind kind) {
  const std::string p = *dir + "/data";
  int fd = ::open(p.c_str(), O_RDONLY);
  if (kind != read_kind::cold)
    for (std::size_t o = 0; o < file_size; o += g_buf.size())
      if (::pread(fd, g_buf.data(), g_buf.size(), static_cast<off_t>(o)) < 0) return st.SkipWithError("warm-up");
  std::size_t off = 0;
  for (auto _ : st) {
    if (off == 0 && kind != read_kind::warm) {
      ::close(fd);
      fd = ::open(p.c_str(), O_RDONLY);
      if (kind == read_kind::cold) {
        st.PauseTiming();
        (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        st.ResumeTiming();
      }
    }
    if (::pread(fd, g_buf.data(), g_buf.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(g_buf.size())) return st.SkipWithError("pread");
    off = (off + g_buf.size()) % file_size;
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * g_buf.size()));
  st.SetItemsProcessed(st.iterations());
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  const bool list = fs_bench::listing_only(argc, argv);
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    std::printf("bench_fuse: /dev/fuse cannot be used (%s): nothing measured\n", std::strerror(errno));
    return 0;
  }
  char tmpl[] = "/tmp/faultsafe-bench-fuse-XXXXXX";
  const std::string base = ::mkdtemp(tmpl);
  char shm_tmpl[] = "/dev/shm/faultsafe-bench-tmpfs-XXXXXX";
  g_tmpfs = ::mkdtemp(shm_tmpl);
  g_bridge_dio = base + "/bridge-dio";
  g_bridge_pc = base + "/bridge-pc";
  g_minimal = base + "/minimal";
  for (const auto& d : {g_bridge_dio, g_bridge_pc, g_minimal}) ::mkdir(d.c_str(), 0755);
  std::memset(g_buf.data(), 'x', g_buf.size());

  const unsigned threads = 4;
  faultsafe::ramfs_options ro;
  ro.prefix = "/bench-fuse";
  ro.pool = {1, threads};
  ro.max_opens_per_client = 0;
  ro.dir_mode = 01777;
  faultsafe::ramfs fs(ro);
  faultsafe::fuse_bridge_options dio;
  dio.server_threads = threads;
  dio.handle_signals = false;
  dio.io = faultsafe::fuse_io_mode::direct_io_no_shared_mmap;
  faultsafe::fuse_bridge_options pc = dio;
  pc.io = faultsafe::fuse_io_mode::page_cache;
  faultsafe::fuse_bridge b1("/bench-fuse", dio), b2("/bench-fuse", pc);
  if (b1.mount(g_bridge_dio) || b2.mount(g_bridge_pc)) {
    std::printf("bench_fuse: cannot mount (%s %s): nothing measured\n", b1.error_message().c_str(), b2.error_message().c_str());
    return 0;
  }
  mount_thread m1, m2, m3;
  m1.t = std::thread([&] { (void)b1.run(); });
  m1.stop = [&] { b1.stop(); };
  m2.t = std::thread([&] { (void)b2.run(); });
  m2.stop = [&] { b2.stop(); };

  // The minimal server, mounted with the same options and as many workers.
  static minimal_fs mfs;
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.lookup = minimal_fs::lookup;
  ops.getattr = minimal_fs::getattr;
  ops.open = minimal_fs::open;
  ops.create = minimal_fs::create;
  ops.unlink = minimal_fs::unlink;
  ops.read = minimal_fs::read;
  ops.release = minimal_fs::release;
  ops.flush = minimal_fs::flush;
  ops.forget = minimal_fs::forget;
  std::vector<std::string> av{"minimal", "-o", "fsname=minimal,default_permissions"};
  std::vector<char*> argvv;
  for (auto& s : av) argvv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argvv.size()), argvv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &mfs);
  if (!se || fuse_session_mount(se, g_minimal.c_str()) != 0) {
    std::printf("bench_fuse: the minimal server cannot mount: nothing measured\n");
    return 0;
  }
  m3.t = std::thread([&] {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, b1.workers());
    (void)fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
  });
  m3.stop = [&] {
    fuse_session_exit(se);
    (void)::umount2(g_minimal.c_str(), MNT_DETACH);
  };

  if (!list) {
    fill_file(g_bridge_dio + "/data");  // the bridge mounts share the ramfs: one data file for both
    fill_file(g_tmpfs + "/data");
    int fd = ::open((g_minimal + "/data").c_str(), O_CREAT | O_WRONLY, 0644);  // made, then sized directly
    ::close(fd);
    mfs.files[0].data.assign(file_size, 'x');
  }
  using benchmark::RegisterBenchmark;
  RegisterBenchmark("request/read4k_direct/bridge", read4k, &g_bridge_dio, false)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("request/read4k_direct/minimal", read4k, &g_minimal, false)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("request/getattr/bridge", getattr, &g_bridge_dio)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("request/getattr/minimal", getattr, &g_minimal)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("request/create_unlink/bridge", create_unlink, &g_bridge_dio)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("request/create_unlink/minimal", create_unlink, &g_minimal)->Repetitions(5)->UseRealTime();
  faultsafe::process direct("bench direct"), queued("bench queued");
  direct.set_serve_on_calling_thread(true);
  RegisterBenchmark("server/pread4k/direct", server_part, &direct, true)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("server/pread4k/queued", server_part, &queued, true)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("server/fstat/direct", server_part, &direct, false)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("server/fstat/queued", server_part, &queued, false)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_write_1m/mount", seq_write, &g_bridge_pc)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_write_1m/tmpfs", seq_write, &g_tmpfs)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_read_1m_warm/mount", seq_read, &g_bridge_pc, read_kind::warm)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_read_1m_warm/tmpfs", seq_read, &g_tmpfs, read_kind::warm)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_read_1m_cold/mount", seq_read, &g_bridge_pc, read_kind::cold)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_read_1m_cold/tmpfs", seq_read, &g_tmpfs, read_kind::cold)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_read_1m_reopen/mount", seq_read, &g_bridge_pc, read_kind::reopen)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/seq_read_1m_reopen/tmpfs", seq_read, &g_tmpfs, read_kind::reopen)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/read4k_warm/mount", read4k, &g_bridge_pc, true)->Repetitions(5)->UseRealTime();
  RegisterBenchmark("data/read4k_warm/tmpfs", read4k, &g_tmpfs, true)->Repetitions(5)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  fs_bench::reporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  if (!list) {
    fs_bench::reporter::print_header("bench_fuse (Release; throughputs: higher is better)");
    std::printf("  per request, bridge vs minimal libfuse server (goal: >= 0.83x, i.e. at most 20%% added):\n");
    rep.rate_ratio("4 KiB random pread, direct-io: bridge / minimal", "request/read4k_direct/bridge", "request/read4k_direct/minimal");
    rep.rate_ratio("fstat (GETATTR): bridge / minimal", "request/getattr/bridge", "request/getattr/minimal");
    rep.rate_ratio("create+close+unlink: bridge / minimal", "request/create_unlink/bridge", "request/create_unlink/minimal");
    std::printf("  the server's part of a request, without FUSE: served on the calling thread (the bridge's workers) vs by a pool thread:\n");
    rep.rate_ratio("4 KiB pread: on the calling thread / pool thread", "server/pread4k/direct", "server/pread4k/queued");
    rep.rate_ratio("fstat: on the calling thread / pool thread", "server/fstat/direct", "server/fstat/queued");
    std::printf("  data, mount (page cache) vs kernel tmpfs (goals: warm reads >= 0.80x, cold sequential >= 0.40x):\n");
    rep.rate_ratio("sequential 1 MiB writes: mount / tmpfs", "data/seq_write_1m/mount", "data/seq_write_1m/tmpfs");
    rep.rate_ratio("sequential 1 MiB reads, warm: mount / tmpfs", "data/seq_read_1m_warm/mount", "data/seq_read_1m_warm/tmpfs");
    rep.rate_ratio("sequential 1 MiB reads, cold: mount / tmpfs", "data/seq_read_1m_cold/mount", "data/seq_read_1m_cold/tmpfs");
    rep.rate_ratio("sequential 1 MiB reads, re-opened unchanged file: mount / tmpfs", "data/seq_read_1m_reopen/mount", "data/seq_read_1m_reopen/tmpfs");
    rep.rate_ratio("4 KiB random reads, warm: mount / tmpfs", "data/read4k_warm/mount", "data/read4k_warm/tmpfs");
  }
  ::unlink((g_tmpfs + "/data").c_str());
  ::unlink((g_tmpfs + "/seq").c_str());
  ::rmdir(g_tmpfs.c_str());
  m3.stop();  // unmounted and joined here, so that their directories can go
  m3.stop = nullptr;
  if (m3.t.joinable()) m3.t.join();
  for (mount_thread* m : {&m1, &m2}) {
    m->stop();
    m->stop = nullptr;
    if (m->t.joinable()) m->t.join();
  }
  for (const auto& d : {g_bridge_dio, g_bridge_pc, g_minimal, base}) ::rmdir(d.c_str());
  return 0;
}
