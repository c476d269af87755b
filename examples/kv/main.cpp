// kv: a key-value resource manager written with faultsafe, the example of the README's guide
// "Writing your own server". One file per key under /kv; what it shows, in order:
//   1. attach a path and keep the default handlers (read, lseek, fstat, ftruncate, mmap, page_in);
//   2. an open handler of our own (names, O_CREAT, permissions with iofunc_open_verify) making a
//      per-open state (kv_ocb, derived from iofunc_ocb so the defaults can serve it);
//   3. one handler overridden: a validating write that reads the client's bytes ONCE, checks them and
//      stores exactly those bytes (iofunc_write_validated);
//   4. a computed file, /kv/counter ("keys=K writes=W\n"), served from a buffer (iofunc_read_verify,
//      iofunc_reply_bytes, iofunc_stat_fill);
//   5. a second server, /stats, whose read handler reads /kv/counter through a process of its own
//      (a server calling another server);
//   6. a client that maps a key's file and reads it through the mapping (pages come in through the
//      server's page_in handler); writable shared mappings are refused, since they would bypass the
//      validation of 3.
// Exits 0 when every check passed, 1 otherwise, 77 when the kernel refuses userfaultfd (mappings).
#include <faultsafe/resmgr/iofunc_helpers.hpp>
#include <faultsafe/resmgr/process.hpp>

#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace fs = faultsafe;

namespace {

// Per-open state: everything of iofunc_ocb (attr, offset, flags, access) that the default handlers
// use, plus what this server wants per open. `attr` is null for the computed counter.
struct kv_ocb : fs::iofunc_ocb {
  bool counter = false;
  std::atomic<std::uint64_t> writes{0};  // successful writes through this open (handlers may overlap)
};

class kv_server {
 public:
  /// Attaches `prefix` and starts one to four server threads.
  explicit kv_server(std::string prefix) : srv_(fs::server_options{.name = "kv", .pool = {1, 4}}, funcs()) {
    if (auto ec = srv_.attach(prefix)) throw std::system_error(ec, "kv: attach " + prefix);
    srv_.start();  // without it, every open would fail with ENXIO
  }

  std::uint64_t writes() const { return writes_.load(); }
  std::uint64_t writes_of_closed_opens() const { return closed_writes_.load(); }

 private:
  static constexpr std::uint64_t max_value = 4096;

  fs::io_funcs funcs() {
    fs::io_funcs f = fs::iofunc_defaults();  // 1. read, lseek, fstat, ftruncate, mmap, page_in
    f.open = [this](fs::request_context& ctx, const fs::io_open_request& q, std::string_view name,
                    std::shared_ptr<fs::ocb_base>& out) { return open(ctx, q, name, out); };
    f.write = [this](fs::request_context& ctx, fs::ocb_base& b, const fs::io_rw_request& q) { return write(ctx, b, q); };
    f.close = [this](fs::request_context&, fs::ocb_base& b) {
      closed_writes_ += static_cast<kv_ocb&>(b).writes.load();  // per-open state, folded in once
      return fs::io_result::ok();
    };
    // The computed counter has no attr: every default that would read one is answered here.
    auto dflt_read = f.read;
    auto dflt_fstat = f.fstat;
    auto dflt_lseek = f.lseek;
    auto dflt_mmap = f.mmap;
    // Every OCB of this server is a kv_ocb (made by open below), so static_cast is right here; a
    // handler that may see other OCB types uses fs::iofunc_ocb_cast<kv_ocb>(b) (nullptr if not one).
    f.read = [this, dflt_read](fs::request_context& ctx, fs::ocb_base& b, const fs::io_rw_request& q) {
      auto& o = static_cast<kv_ocb&>(b);
      if (!o.counter) return dflt_read(ctx, b, q);
      fs::io_span s;
      if (auto ec = fs::iofunc_read_verify(ctx, o, q, s)) return fs::io_result::fail(ec);
      const std::string text = counter_text();
      return fs::iofunc_reply_bytes(ctx, o, s, text.data(), text.size());  // copies, advances
    };
    f.fstat = [this, dflt_fstat](fs::request_context& ctx, fs::ocb_base& b, struct ::stat& st) {
      if (!static_cast<kv_ocb&>(b).counter) return dflt_fstat(ctx, b, st);
      fs::iofunc_stat_fill(st, {.mode = S_IFREG | 0444, .size = counter_text().size(), .ino = 1});
      return fs::io_result::ok();
    };
    f.lseek = [dflt_lseek](fs::request_context& ctx, fs::ocb_base& b, const fs::io_lseek_request& q) {
      if (static_cast<kv_ocb&>(b).counter && q.whence == SEEK_END) return fs::io_result::fail(EINVAL);
      return dflt_lseek(ctx, b, q);  // SEEK_SET/SEEK_CUR only touch the OCB's offset
    };
    f.mmap = [dflt_mmap](fs::request_context& ctx, fs::ocb_base& b, const fs::io_mmap_request& q, fs::io_mmap_reply& rep) {
      if (static_cast<kv_ocb&>(b).counter) return fs::io_result::fail(ENODEV);
      // 6. a writable shared mapping would store bytes that never went through write()'s validation
      if ((q.prot & PROT_WRITE) && (q.flags & MAP_SHARED)) return fs::io_result::fail(EACCES);
      return dflt_mmap(ctx, b, q, rep);
    };
    return f;
  }

  // 2. Names are keys ([a-z0-9_-], 1..64 bytes) or "counter"; O_CREAT makes a key owned by the caller.
  fs::io_result open(fs::request_context& ctx, const fs::io_open_request& q, std::string_view name,
                     std::shared_ptr<fs::ocb_base>& out) {
    auto o = std::make_shared<kv_ocb>();
    int access = 0;
    if (name == "counter") {
      if (auto ec = fs::iofunc_open_verify(ctx, q, 0444, 0, 0, &access)) return fs::io_result::fail(ec);
      o->counter = true;
    } else {
      if (name.empty() || name.size() > 64 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string_view::npos)
        return fs::io_result::fail(ENOENT);
      std::shared_ptr<fs::iofunc_attr> attr;
      bool created = false;
      {
        std::lock_guard<std::mutex> g(dir_mu_);  // a leaf: never held across I/O or a send
        auto it = keys_.find(std::string(name));
        if (it != keys_.end()) {
          if ((q.flags & O_CREAT) && (q.flags & O_EXCL)) return fs::io_result::fail(EEXIST);
          attr = it->second;
        } else {
          if (!(q.flags & O_CREAT)) return fs::io_result::fail(ENOENT);
          attr = std::make_shared<fs::iofunc_attr>(static_cast<mode_t>(q.mode), ctx.client.uid, ctx.client.gid,
                                                   fs::attr_options{.max_size = max_value, .name = "kv value"});
          keys_.emplace(std::string(name), attr);
          created = true;
        }
      }
      // The creator may open with its access mode even if the new mode denies it (POSIX).
      const std::uint32_t uid = created ? ctx.client.uid : attr->uid();
      fs::request_context check = ctx;
      if (created) check.client.uid = 0;
      if (auto ec = fs::iofunc_open_verify(check, q, attr->mode(), uid, attr->gid(), &access)) return fs::io_result::fail(ec);
      if (q.flags & O_TRUNC) {
        fs::range_guard g(attr->data_lock, 0, fs::to_end, fs::lock_mode::exclusive);
        if (auto ec = attr->set_size(0)) return fs::io_result::fail(ec);
      }
      o->attr = std::move(attr);
    }
    fs::iofunc_ocb_init(*o, q, access);
    out = std::move(o);
    return fs::io_result::ok();
  }

  // 3. Values are text: printable ASCII, tabs and newlines. The bytes are read from the client once;
  // what was checked is what is stored, whatever the client does to its buffer meanwhile.
  fs::io_result write(fs::request_context& ctx, fs::ocb_base& b, const fs::io_rw_request& q) {
    auto& o = static_cast<kv_ocb&>(b);
    if (o.counter) return fs::io_result::fail(EBADF);  // not reached: opened read-only
    fs::io_result r = fs::iofunc_write_validated(ctx, o, q, [](std::string_view bytes) -> std::error_code {
      for (unsigned char c : bytes)
        if ((c < 0x20 || c > 0x7e) && c != '\n' && c != '\t') return std::make_error_code(std::errc::invalid_argument);
      return {};
    });
    if (!r.error) {
      ++o.writes;
      ++writes_;
    }
    return r;
  }

  std::string counter_text() const {
    std::size_t keys = 0;
    {
      std::lock_guard<std::mutex> g(dir_mu_);
      keys = keys_.size();
    }
    return "keys=" + std::to_string(keys) + " writes=" + std::to_string(writes_.load()) + "\n";
  }

  mutable std::mutex dir_mu_;  // leaf: keys_
  std::map<std::string, std::shared_ptr<fs::iofunc_attr>> keys_;
  std::atomic<std::uint64_t> writes_{0}, closed_writes_{0};
  fs::server srv_;  // last: stopped (its threads joined) before the keys die
};

// 5. A server that calls another one: reading /stats/kv reads /kv/counter through the stats server's
// own process. The send carries the client's activity, so the wait-for graph and the pool guard see
// the whole chain client -> stats -> kv.
class stats_server {
 public:
  explicit stats_server(std::string prefix) : srv_(fs::server_options{.name = "stats", .pool = {1, 2}}, funcs()) {
    if (auto ec = srv_.attach(prefix)) throw std::system_error(ec, "stats: attach " + prefix);
    srv_.start();
  }

 private:
  fs::io_funcs funcs() {
    fs::io_funcs f;
    f.open = [](fs::request_context& ctx, const fs::io_open_request& q, std::string_view name, std::shared_ptr<fs::ocb_base>& out) {
      if (name != "kv") return fs::io_result::fail(ENOENT);
      int access = 0;
      if (auto ec = fs::iofunc_open_verify(ctx, q, 0444, 0, 0, &access)) return fs::io_result::fail(ec);
      auto o = std::make_shared<fs::iofunc_ocb>();
      fs::iofunc_ocb_init(*o, q, access);
      out = std::move(o);
      return fs::io_result::ok();
    };
    f.read = [this](fs::request_context& ctx, fs::ocb_base& b, const fs::io_rw_request& q) {
      auto& o = static_cast<fs::iofunc_ocb&>(b);
      fs::io_span s;
      if (auto ec = fs::iofunc_read_verify(ctx, o, q, s)) return fs::io_result::fail(ec);
      // No lock of ours is held across these sends.
      auto fd = self_.open("/kv/counter", O_RDONLY);
      if (!fd) return fs::io_result::fail(fd.error());
      char buf[128];
      auto n = self_.pread(*fd, buf, sizeof buf, 0);
      (void)self_.close(*fd);
      if (!n) return fs::io_result::fail(n.error());
      const std::string text = "kv says: " + std::string(buf, *n);
      return fs::iofunc_reply_bytes(ctx, o, s, text.data(), text.size());
    };
    return f;
  }

  fs::process self_{"stats"};  // the server's own client identity (uid 0)
  fs::server srv_;
};

int failures = 0;
void check(bool ok, const char* what) {
  std::printf("  %-58s %s\n", what, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

std::string read_all(fs::process& p, const char* path) {
  auto fd = p.open(path, O_RDONLY);
  if (!fd) return "open: " + fd.error().message();
  std::string out(256, '\0');
  auto n = p.pread(*fd, out.data(), out.size(), 0);
  (void)p.close(*fd);
  if (!n) return "read: " + n.error().message();
  out.resize(*n);
  return out;
}

}  // namespace

int main() {
  fs::set_this_thread_name("main");
  kv_server kv("/kv");
  stats_server stats("/stats");
  fs::process alice("alice", {.uid = 1000, .gid = 1000});
  fs::process bob("bob", {.uid = 1001, .gid = 1001});
  std::printf("kv: a key-value server at /kv, a stats server at /stats\n");

  // 2 + 3: create a key, write valid text; invalid bytes are refused and nothing of them is stored.
  auto fd = alice.open("/kv/greeting", O_RDWR | O_CREAT, 0644);
  check(fd.ok(), "alice creates /kv/greeting");
  if (!fd) return 1;
  const std::string hello = "hello, world\n";
  check(alice.write(*fd, hello.data(), hello.size()).value_or(0) == hello.size(), "alice writes valid text");
  const char bad[] = {'o', 'k', '\0', '!'};
  auto w = alice.pwrite(*fd, bad, sizeof bad, 0);
  check(!w && w.error() == std::errc::invalid_argument, "a value with a NUL byte is refused (EINVAL)");
  check(read_all(bob, "/kv/greeting") == hello, "bob reads the value, unchanged by the refused write");
  auto bw = bob.open("/kv/greeting", O_WRONLY);
  check(!bw && bw.error() == std::errc::permission_denied, "bob may not write alice's 0644 key (EACCES)");

  // 4: the computed counter.
  check(read_all(bob, "/kv/counter") == "keys=1 writes=1\n", "/kv/counter says keys=1 writes=1");
  auto cw = bob.open("/kv/counter", O_WRONLY);
  check(!cw && cw.error() == std::errc::permission_denied, "/kv/counter is read-only (EACCES)");

  // 5: a server calling another server.
  check(read_all(bob, "/stats/kv") == "kv says: keys=1 writes=1\n", "/stats/kv reads /kv/counter through the stats server");

  // Per-open state: the close handler folds this open's writes into the server's total.
  check(kv.writes_of_closed_opens() == 0, "no open closed yet");
  check(alice.close(*fd).ok(), "alice closes");
  check(kv.writes_of_closed_opens() == 1, "the close handler saw this open's one write");

  // 6: a client maps a key's file and reads it through the mapping.
  std::string why;
  if (auto ec = fs::probe_userfaultfd(why)) {
    std::printf("kv: skipping the mapping (userfaultfd refused: %s)\n", why.c_str());
    return failures == 0 ? 77 : 1;
  }
  auto rfd = bob.open("/kv/greeting", O_RDONLY);
  check(rfd.ok(), "bob opens /kv/greeting read-only");
  if (!rfd) return 1;
  auto map = bob.mmap(nullptr, 4096, PROT_READ, MAP_SHARED, *rfd, 0);
  check(map.ok(), "bob maps it (MAP_SHARED, PROT_READ)");
  if (map) {
    check(std::memcmp(*map, hello.data(), hello.size()) == 0, "the mapping shows the value (paged in by the server)");
    check(bob.munmap(*map, 4096).ok(), "bob unmaps it");
  }
  (void)bob.close(*rfd);
  auto afd = alice.open("/kv/greeting", O_RDWR);
  check(afd.ok(), "alice opens /kv/greeting read-write");
  if (!afd) return 1;
  auto wmap = alice.mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, *afd, 0);
  check(!wmap && wmap.error() == std::errc::permission_denied,
        "even for her a writable shared mapping is refused (EACCES)");
  (void)alice.close(*afd);

  std::printf("kv: %s\n", failures == 0 ? "all checks passed" : "SOME CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}
