// faultsafe/resmgr/fuse_bridge.hpp: mounts a faultsafe server's path namespace as a Linux filesystem
// (FUSE, libfuse3 low-level API).
//
// Defines `fuse_io_mode`, `fuse_bridge_options` and `fuse_bridge`. This is the only faultsafe header
// that includes <fuse_lowlevel.h>: a program using it links fuse3 (pkg-config fuse3; the CMake target
// faultsafe::fuse_bridge when fuse3 is found); the rest of the library does not depend on libfuse.
//
// Requests: every FUSE request becomes one faultsafe message (resmgr/messages.hpp) sent through a
// `process` of the bridge's own, on behalf of the caller: the request's uid and gid (fuse_req_ctx) and,
// for callers other than root, their supplementary groups (fuse_req_getgroups) are the message's
// credentials (process::acting_as), so the server's handlers, with their locks, range
// locks and the wait-for graph, serve and check every program on the machine. The process serves on
// the calling thread (process::set_serve_on_calling_thread): a server of this OS process serves the
// message on the libfuse worker itself, through its own dispatch and handlers, on behalf of the
// worker's activity (server::serve_here): no hand-off to a pool thread. A prefix that resolves to a
// server in another OS process (mount_remote) is sent there as before. Opens are OCBs of the
// bridge's process (one client, pid process::pid(), however many programs share a file: the server's
// max_opens_per_client should be 0); the FUSE file handle is the bridge process's fd.
// Inodes: FUSE node ids are the bridge's (a counter, never reused; root 1), one per server inode
// (st_ino), each with the names (parent node, name) it was looked up under and its lookup count; a
// node is dropped when the kernel forgets it. A node's server path is built from the name it was last
// looked up under (the one the caller used) and that name's parents; an unlinked node that is still open is served through one of its open handles.
// readdir/readdirplus positions are the server's (name_tree's positions stay valid across unlinks).
//
// Permissions: mounted with default_permissions: the kernel checks access with the caller's full
// credentials before a request is sent, and the server checks again with the same uid, gid and groups
// (its own rules: sticky directories, setgid inheritance, who may chown, set-id clearing). See the
// README ("Mounting a server: the FUSE bridge") for why.
// Caching (correctness first: the server itself and its in-process clients change files behind the
// kernel's back): attribute and entry timeouts are 0 (every path walk and stat asks the server),
// an open keeps the file's cached pages only when nothing changed the file since they were filled
// (close-to-open consistency, like NFS with its change attribute; no FUSE_CAP_AUTO_INVAL_DATA, which
// would cost a GETATTR per read(2) of cached data and misses changes within one timestamp tick): each
// open of a regular file in page-cache mode asks the server for the file's data version
// (process::data_version, io_funcs::data_version: it changes with every write, truncate or fallocate
// by any client, and is 0 for a file mapped through faultsafe, whose stores count nothing). If it
// equals the version an earlier open of the node read before dropping the cache, nothing changed the
// bytes since every cached page was filled, and the open sets keep_cache; otherwise keep_cache is 0 (the
// kernel drops the pages at this open) and this version becomes the node's reference. The bridge's own
// writes move the version too (the next open drops pages that were in fact exact: one cold re-read
// after a change, never a stale one). A server without data_version (ENOSYS) gets keep_cache 0 at every
// open, as does direct-io mode. Writes go through
// to the server at once (no writeback cache). mmap: through the kernel's page cache by default; with
// fuse_io_mode::direct_io opens are FOPEN_DIRECT_IO and shared mappings need the kernel's
// FUSE_DIRECT_IO_ALLOW_MMAP, negotiated through libfuse's FUSE_CAP_DIRECT_IO_ALLOW_MMAP (libfuse >=
// 3.16): without it mount() fails with ENOTSUP and says so; fuse_io_mode::direct_io_no_shared_mmap
// accepts that MAP_SHARED mappings then fail with ENODEV (the kernel's answer).
// Read-ahead: the kernel proposes its default window (128 KiB) in INIT and a daemon can only lower it
// there (conn->max_readahead); with keep_cache 0 every open of a file reads it from the server again,
// and a cold sequential reader then waits for 128 KiB READs one after another. So the bridge writes
// fuse_bridge_options::read_ahead_kb to /sys/class/bdi/<major>:<minor>/read_ahead_kb of its mount,
// after the INIT reply (a value written before it would be lowered again by the reply): the first
// request after INIT does it, before any READ can arrive (a READ needs an OPEN first). Failure is not
// fatal (the kernel's window stays; read_ahead_error()).
// Threads: fuse_session_loop_mt with max_threads = fuse_bridge_options::max_threads (default: the
// server's pool maximum + 4). Each worker serves its request itself (see Requests), so max_threads,
// not the server's pool, bounds how many of the mount's requests the server serves at once: the
// default gives the mount as many as the server was sized for, plus 4 workers that keep reading
// /dev/fuse while that many are blocked in the server on each other (range locks held by requests that
// wait for another request still unread in /dev/fuse, such as the READ the kernel needs to finish a
// page fault of a writer or the RELEASE that ends a lock holder; with every worker blocked so, nothing
// reads /dev/fuse again and the mount hangs, which libfuse's default of 10 makes likelier on a large
// pool). The server's pool serves only its other clients (in-process processes, remote connections,
// page-ins): its max_threads and its self-deadlock guard do not apply to the workers' own requests,
// which never wait for a pool thread; the guard still checks every message a handler sends on from
// a worker (a page-in of a mapping the handler touches, a request to another server), because the
// worker has then adopted its activity. Locks, range locks and the wait-for graph see the workers as
// they see pool threads. No idle-thread tuning (max_idle_threads stays libfuse's).
// Reads: READ is a read_visit message (process::pread_visit): the server's handler, under the file's
// shared range lock over the bytes (what its read takes: permissions, the open's access mode, the wait
// graph and the fault guard stay on the path), hands the bridge the bytes in place in its store, and the
// bridge replies with them (fuse_reply_buf: libfuse writev()s /dev/fuse straight from them) before the
// lock is released: the kernel's copy into the reader's pages is the only copy. A server whose read
// handler is its own answers ENOSYS (io_funcs::read_visit_mirrors) and is read through a buffer.
// Holding the shared range lock across that write to /dev/fuse cannot deadlock: the write copies into
// pages that are already there and waits for nothing of the daemon's. A page-cache READ reply fills
// page-cache pages that the reading request itself locked before it sent the READ (no other request
// needs them to finish first), a direct-io reply fills the user pages the kernel pinned before sending
// the request (the fault on them, if any, was taken before: the copy does not fault), and nothing in
// the copy waits for a writer, a range lock or another request. The source pages are the server's own
// mapping of the file's bytes (its store's memfd, or a mapped file's own memfd: file_store.hpp), which is
// never registered with userfaultfd (client mappings are). An interrupted request makes
// the write fail (ENOENT), which only ends the visit.
// Brian through the kernel: the daemon-side lock-up of the kernel's Documentation/filesystems/fuse.rst
// ("tricky deadlock": the daemon faults on a mapping of a file of its own mount while serving a request
// of that file) cannot happen: every buffer the bridge hands to the server or to /dev/fuse is the
// bridge's heap memory or the server's store (a READ's bytes, see Reads), the server's bytes live in its
// memfd (not on the mount), and the bridge never names a path under the mountpoint.
// Unmount: run() returns when the session ends (fusermount3 -u, umount, SIGINT/SIGTERM/SIGHUP with
// handle_signals, or stop()), and unmounts. Errors are clear, never a hang: ENODEV when /dev/fuse cannot
// be opened, ENOTDIR/ENOENT for a bad mountpoint, EBUSY when it is already a mount point.
//
// Thread-safety: mount(), run() and the destructor from one thread; stop() from any thread or a signal
// handler's thread. Requests are served concurrently by the libfuse workers. Lock order: the node table
// mutex is rank::leaf, never held across a send to the server.
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cctype>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../order/ranked_mutex.hpp"
#include "../thread_annotations.hpp"
#include "process.hpp"

namespace faultsafe {

/// How file data reaches programs on the mount (see the header comment).
enum class fuse_io_mode {
  page_cache,                ///< the kernel's page cache; mmap of every kind
  direct_io,                 ///< FOPEN_DIRECT_IO with FUSE_DIRECT_IO_ALLOW_MMAP (ENOTSUP if libfuse lacks it)
  direct_io_no_shared_mmap,  ///< FOPEN_DIRECT_IO; MAP_SHARED mappings fail with ENODEV
};

struct fuse_bridge_options {
  /// The server's pool maximum (thread_pool_options::max_threads): sizes the FUSE workers, which serve
  /// the mount's requests themselves (see the header comment, Threads).
  unsigned server_threads = 4;
  /// libfuse's max_threads (0: server_threads + 4; see the header comment).
  unsigned max_threads = 0;
  fuse_io_mode io = fuse_io_mode::page_cache;
  /// Let every user in (-o allow_other; needs root or user_allow_other in /etc/fuse.conf).
  bool allow_other = false;
  /// run() installs libfuse's SIGINT/SIGTERM/SIGHUP handlers (they end the session; run() unmounts).
  bool handle_signals = true;
  std::string fsname = "faultsafe";
  /// libfuse's -d: every request and reply on stderr.
  bool debug = false;
  /// The mount's read-ahead window in KiB (its bdi's read_ahead_kb), set once the INIT handshake is
  /// done (see the header comment, Read-ahead); 0 leaves the kernel's (128 KiB). The default, 1024, is
  /// the largest READ libfuse takes (max_pages 256, its default buffer): a sequential reader keeps one
  /// full-size READ in flight ahead of it instead of 32-page ones. Needs write access to /sys (root);
  /// when refused the mount works with the kernel's window (read_ahead_error() says why).
  unsigned read_ahead_kb = 1024;
};

class fuse_bridge {
 public:
  /// Effects: a bridge for the server owning `prefix` in `ns` (nullptr: the global namespace); nothing
  /// is mounted yet. Throws: std::bad_alloc.
  explicit fuse_bridge(std::string prefix, fuse_bridge_options opts = {}, path_namespace* ns = nullptr)
      : opts_(std::move(opts)), prefix_(std::move(prefix)), proc_("fuse bridge", {}, ns) {
    while (prefix_.size() > 1 && prefix_.back() == '/') prefix_.pop_back();
    proc_.set_max_fds(std::numeric_limits<std::size_t>::max());  // capped by the fd table's size
    proc_.set_serve_on_calling_thread(true);  // the worker serves its request (see the header comment)
    // The kernel applies PATH_MAX to a program's path relative to its cwd; the bridge names the file by
    // its whole path from the server's root, which may be longer.
    proc_.set_max_path(io_wire_path_max);
    node root;
    root.id = FUSE_ROOT_ID;
    root.nlookup = 1;
    nodes_.emplace(FUSE_ROOT_ID, std::move(root));
  }
  ~fuse_bridge() { unmount(); }
  fuse_bridge(const fuse_bridge&) = delete;
  fuse_bridge& operator=(const fuse_bridge&) = delete;

  /// Effects: checks /dev/fuse and `mountpoint`, creates the FUSE session and mounts it.
  /// Returns: ENODEV (/dev/fuse cannot be opened), ENOENT/ENOTDIR/EACCES (mountpoint), EBUSY (already a
  /// mount point), ENOTSUP (io mode not supported by this libfuse), EINVAL (mounted already), EIO
  /// (libfuse refused: its message is on stderr). error_message() says what failed.
  [[nodiscard]] std::error_code mount(const std::string& mountpoint) {
    if (se_) return fail(EINVAL, "already mounted");
#ifndef FUSE_CAP_DIRECT_IO_ALLOW_MMAP
    if (opts_.io == fuse_io_mode::direct_io)
      return fail(ENOTSUP, "direct-io with shared mmap needs FUSE_CAP_DIRECT_IO_ALLOW_MMAP (libfuse >= 3.16, Linux >= 6.6); this libfuse is " +
                               std::to_string(FUSE_MAJOR_VERSION) + "." + std::to_string(FUSE_MINOR_VERSION) +
                               " (fuse_io_mode::direct_io_no_shared_mmap: MAP_SHARED then fails with ENODEV)");
#endif
    const int dev = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (dev < 0) return fail(ENODEV, std::string("/dev/fuse cannot be opened: ") + std::strerror(errno));
    ::close(dev);
    struct ::stat st;
    if (::stat(mountpoint.c_str(), &st) != 0) return fail(errno, "mountpoint " + mountpoint + ": " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, "mountpoint " + mountpoint + " is not a directory");
    if (is_mount_point(mountpoint)) return fail(EBUSY, "mountpoint " + mountpoint + " is already a mount point (busy)");
    auto root = proc_.stat(prefix_);
    if (!root) return fail(root.error().value(), "the server path " + prefix_ + ": " + root.error().message());
    {
      exclusive_guard g(mu_);
      by_ino_[root.value().st_ino] = FUSE_ROOT_ID;
      nodes_.at(FUSE_ROOT_ID).ino = root.value().st_ino;
    }

    std::string o = "fsname=" + opts_.fsname + ",subtype=faultsafe,default_permissions";
    if (opts_.allow_other) o += ",allow_other";
    std::vector<std::string> argv_s{"faultsafe", "-o", o};
    if (opts_.debug) argv_s.emplace_back("-d");
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(s.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    static const fuse_lowlevel_ops ops = make_ops();
    fuse_session* const se = fuse_session_new(&args, &ops, sizeof ops, this);
    // libfuse may copy and extend the argument vector (args.allocated): it owns that copy until freed.
    fuse_opt_free_args(&args);
    if (!se) return fail(EIO, "fuse_session_new failed (libfuse's message is on stderr)");
    if (fuse_session_mount(se, mountpoint.c_str()) != 0) {
      fuse_session_destroy(se);
      return fail(EIO, "mounting " + mountpoint + " failed (libfuse's message is on stderr)");
    }
    {
      exclusive_guard g(session_mu_);
      se_ = se;
      mountpoint_ = mountpoint;
    }
    // An O_PATH handle of the root, for its GETATTRs (stat_of): with default_permissions and attribute
    // timeouts of 0 the kernel asks the root's attributes before every path walk on the mount; by
    // handle that is one fstat instead of a path resolution with a temporary open. None (-1) if the
    // server refuses it: by path then. Closed by unmount().
    root_fd_ = proc_.open(prefix_, O_PATH | O_DIRECTORY).value_or(-1);
    if (root_fd_ >= 0) {
      exclusive_guard g(mu_);
      nodes_.at(FUSE_ROOT_ID).fds.push_back(root_fd_);
    }
    bdi_ = device_of(mountpoint);
    ra_pending_.store(opts_.read_ahead_kb != 0, std::memory_order_relaxed);  // (1) relaxed: run() starts the workers after this
    return {};
  }

  /// Effects: serves requests on the libfuse workers until the session ends (see the header comment),
  /// then unmounts. Returns: EINVAL if not mounted, EIO if the loop failed.
  std::error_code run() {
    if (!se_) return fail(EINVAL, "not mounted");
    const bool sig = opts_.handle_signals && fuse_set_signal_handlers(se_) == 0;
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, workers());
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    const int rc = fuse_session_loop_mt(se_, cfg);
    fuse_loop_cfg_destroy(cfg);
    if (sig) fuse_remove_signal_handlers(se_);
    unmount();
    return rc < 0 ? fail(EIO, "the FUSE loop failed") : std::error_code{};
  }

  /// Effects: ends the session: run() returns and unmounts. The mount is detached lazily at once
  /// (umount2 MNT_DETACH as root, else fusermount3 -uz), which wakes the workers. Any thread.
  void stop() {
    exclusive_guard g(session_mu_);  // run() may be ending the session on its thread (unmount())
    if (!se_) return;
    fuse_session_exit(se_);
    if (mountpoint_.empty()) return;
    if (::geteuid() == 0) {
      (void)::umount2(mountpoint_.c_str(), MNT_DETACH);
    } else {
      const std::string cmd = "fusermount3 -uz '" + mountpoint_ + "' 2>/dev/null";
      (void)std::system(cmd.c_str());
    }
  }

  /// libfuse worker threads run() uses.
  [[nodiscard]] unsigned workers() const noexcept { return opts_.max_threads ? opts_.max_threads : opts_.server_threads + 4; }
  [[nodiscard]] const std::string& error_message() const noexcept { return err_; }
  [[nodiscard]] const std::string& mountpoint() const noexcept { return mountpoint_; }
  /// Why fuse_bridge_options::read_ahead_kb could not be applied (0: applied, not yet tried, or not
  /// asked for). Any thread.
  [[nodiscard]] int read_ahead_error() const noexcept { return ra_errno_.load(std::memory_order_relaxed); }
  /// The mount's "major:minor" (its bdi's name under /sys/class/bdi; "" before mount()).
  [[nodiscard]] const std::string& device() const noexcept { return bdi_; }
  /// Nodes the kernel holds (root included): for tests of forget.
  [[nodiscard]] std::size_t node_count() const {
    exclusive_guard g(mu_);
    return nodes_.size();
  }

 private:
  struct node {
    fuse_ino_t id = 0;
    std::uint64_t ino = 0;      // the server's st_ino
    std::uint64_t nlookup = 0;  // the kernel's references (lookup replies minus forgets)
    std::vector<std::pair<fuse_ino_t, std::string>> names;  // (parent, name) it is known under
    std::vector<int> fds;       // open handles (for an unlinked node)
    // The server's data version the kernel's cached pages of this node are known to match (0: none):
    // set by an open that dropped the cache (see Caching in the header comment).
    std::uint64_t cached_version = 0;
  };

  std::error_code fail(int e, std::string what) {
    err_ = std::move(what);
    return std::error_code(e, std::generic_category());
  }

  void unmount() {
    {
      exclusive_guard g(session_mu_);  // a stop() on another thread never sees a destroyed session
      if (!se_) return;
      fuse_session_unmount(se_);
      fuse_session_destroy(se_);
      se_ = nullptr;
    }
    if (root_fd_ >= 0) closed(FUSE_ROOT_ID, root_fd_);
    root_fd_ = -1;
  }

  // The "major:minor" of the mount at `mp` ("" if not found), from /proc/self/mountinfo: the bridge
  // never names a path under its own mountpoint (a stat of it would be a request to itself).
  static std::string device_of(const std::string& mp) {
    char buf[PATH_MAX];
    if (!::realpath(mp.c_str(), buf)) return {};
    const std::string want(buf);
    std::ifstream in("/proc/self/mountinfo");
    std::string line, dev;
    while (std::getline(in, line)) {  // id parent major:minor root mountpoint ...: the last match is the top mount
      std::size_t f[5] = {};
      std::size_t p = 0;
      for (int i = 0; i < 5 && p != std::string::npos; ++i) f[i] = p = line.find(' ', p + 1);
      if (p == std::string::npos) continue;
      // The kernel writes a space, tab, newline or backslash in a mount point as \ooo (octal).
      std::string m;
      for (std::size_t i = f[3] + 1; i < f[4]; ++i) {
        if (line[i] == '\\' && i + 3 < f[4] && std::isdigit(static_cast<unsigned char>(line[i + 1]))) {
          m += static_cast<char>(std::stoi(line.substr(i + 1, 3), nullptr, 8));
          i += 3;
        } else {
          m += line[i];
        }
      }
      if (m == want) dev = line.substr(f[1] + 1, f[2] - f[1] - 1);
    }
    return dev;
  }
  // Writes opts_.read_ahead_kb to the mount's bdi, once (see the header comment, Read-ahead).
  // Throws: std::bad_alloc (the flag is then cleared: not retried).
  void apply_read_ahead() {
    if (!ra_pending_.exchange(false, std::memory_order_relaxed)) return;  // (2) relaxed: only the flag itself matters
    int e = 0;
    if (bdi_.empty()) {
      e = ENOENT;
    } else {
      const std::string path = "/sys/class/bdi/" + bdi_ + "/read_ahead_kb";
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      const std::string v = std::to_string(opts_.read_ahead_kb);
      if (fd < 0) e = errno;
      else if (::write(fd, v.data(), v.size()) != static_cast<ssize_t>(v.size())) e = errno ? errno : EIO;
      if (fd >= 0) ::close(fd);
    }
    ra_errno_.store(e, std::memory_order_relaxed);
  }

  static bool is_mount_point(const std::string& mp) {
    char buf[PATH_MAX];
    if (!::realpath(mp.c_str(), buf)) return false;
    const std::string want(buf);
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
      // id parent major:minor root mountpoint ...
      std::size_t p = 0;
      for (int i = 0; i < 4 && p != std::string::npos; ++i) p = line.find(' ', p + 1);
      if (p == std::string::npos) continue;
      const std::size_t e = line.find(' ', p + 1);
      if (line.compare(p + 1, e - p - 1, want) == 0) return true;
    }
    return false;
  }

  static fuse_bridge& self(fuse_req_t req) { return *static_cast<fuse_bridge*>(fuse_req_userdata(req)); }

  static int to_errno(const std::error_code& ec) noexcept {
    if (!ec) return 0;
    if (ec.category() == std::generic_category() || ec.category() == std::system_category()) return ec.value() > 0 ? ec.value() : EIO;
    return EIO;
  }

  // The caller's credentials for the messages of this request: uid, gid and (for a caller other than
  // root, whose checks do not depend on groups) the supplementary groups the kernel reports
  // (fuse_req_getgroups reads /proc/<pid>/task/<tid>/status; the first client_max_groups are kept).
  static credentials caller(fuse_req_t req) noexcept {
    const fuse_ctx* c = fuse_req_ctx(req);
    credentials cr{static_cast<std::uint32_t>(c->uid), static_cast<std::uint32_t>(c->gid)};
    if (cr.uid != 0) {
      gid_t list[client_max_groups];
      const int n = fuse_req_getgroups(req, static_cast<int>(client_max_groups), list);
      if (n > 0) {
        cr.groups.count = static_cast<std::uint32_t>(std::min<int>(n, static_cast<int>(client_max_groups)));
        for (std::uint32_t i = 0; i < cr.groups.count; ++i) cr.groups.ids[i] = static_cast<std::uint32_t>(list[i]);
      }
    }
    return cr;
  }

  // The server path of node `id` ("" if it has no name left). Requires: mu_ held.
  bool path_locked(fuse_ino_t id, std::string& out) const FAULTSAFE_REQUIRES(mu_) {
    std::vector<const std::string*> parts;
    for (int depth = 0; id != FUSE_ROOT_ID; ++depth) {
      auto it = nodes_.find(id);
      if (it == nodes_.end() || it->second.names.empty() || depth > 4096) return false;
      parts.push_back(&it->second.names.front().second);
      id = it->second.names.front().first;
    }
    out = prefix_;
    for (auto p = parts.rbegin(); p != parts.rend(); ++p) {
      out += '/';
      out += **p;
    }
    return true;
  }
  bool path_of(fuse_ino_t id, std::string& out) const {
    exclusive_guard g(mu_);
    return path_locked(id, out);
  }
  bool child_path(fuse_ino_t parent, const char* name, std::string& out) const {
    if (!path_of(parent, out)) return false;
    out += '/';
    out += name;
    return true;
  }
  // An open handle of node `id` (-1: none); *ino (if given): the node's server inode.
  int any_fd(fuse_ino_t id, std::uint64_t* ino = nullptr) const {
    exclusive_guard g(mu_);
    auto it = nodes_.find(id);
    if (it == nodes_.end() || it->second.fds.empty()) return -1;
    if (ino) *ino = it->second.ino;
    return it->second.fds.front();
  }

  // Records a lookup of (parent, name) answered with `st`; fills `e`. The kernel now holds one more
  // reference to the node.
  void remember(fuse_ino_t parent, std::string_view name, const struct ::stat st, fuse_entry_param& e) {
    std::memset(&e, 0, sizeof e);  // `st` is a copy: it may be e.attr
    e.attr = st;
    e.attr_timeout = 0;
    e.entry_timeout = 0;
    exclusive_guard g(mu_);
    fuse_ino_t id;
    if (auto it = by_ino_.find(st.st_ino); it != by_ino_.end()) {
      id = it->second;
    } else {
      id = next_id_++;
      node n;
      n.id = id;
      n.ino = st.st_ino;
      nodes_.emplace(id, std::move(n));
      by_ino_.emplace(st.st_ino, id);
    }
    node& n = nodes_.at(id);
    ++n.nlookup;
    const std::pair<fuse_ino_t, std::string> key{parent, std::string(name)};
    if (auto d = dentries_.find(key); d != dentries_.end() && d->second != id) drop_name_locked(key);
    // The name looked up last goes first: path_of() names the node by it. The kernel looks a name up
    // (entry timeout 0) right before each operation on it, so a node with several names (hard links) is
    // reached through the name the caller used, whose directories the kernel has just let it search,
    // not through another name whose directories the caller may not search (EACCES).
    if (!dentries_.count(key)) {
      dentries_.emplace(key, id);
      n.names.insert(n.names.begin(), key);
    } else if (auto it = std::find(n.names.begin(), n.names.end(), key); it != n.names.end()) {
      std::rotate(n.names.begin(), it, it + 1);
    }
    e.ino = id;
  }
  // After a rename of `from` to `to` (an exchange if `exchange`): the node known under `from` is known
  // under `to` (its current name first), and under an exchange the node of `to` under `from`; a node
  // that `to` replaced loses that name. Requires: mu_ held.
  void rename_names_locked(const std::pair<fuse_ino_t, std::string>& from, const std::pair<fuse_ino_t, std::string>& to,
                           bool exchange) FAULTSAFE_REQUIRES(mu_) {
    const fuse_ino_t src = take_name_locked(from);
    const fuse_ino_t dst = take_name_locked(to);
    put_name_locked(src, to);
    if (exchange) put_name_locked(dst, from);
  }
  // Forgets the name `key` and returns the node it named (0: none). Requires: mu_ held.
  fuse_ino_t take_name_locked(const std::pair<fuse_ino_t, std::string>& key) FAULTSAFE_REQUIRES(mu_) {
    auto d = dentries_.find(key);
    if (d == dentries_.end()) return 0;
    const fuse_ino_t id = d->second;
    drop_name_locked(key);
    return id;
  }
  // Node `id` (0: none) is known under `key`, its current name. Requires: mu_ held; `key` unused.
  void put_name_locked(fuse_ino_t id, const std::pair<fuse_ino_t, std::string>& key) FAULTSAFE_REQUIRES(mu_) {
    if (id == 0) return;
    dentries_.emplace(key, id);
    auto& names = nodes_.at(id).names;
    names.insert(names.begin(), key);
  }
  // Forgets the name `key` (unlinked, or replaced by a rename). Requires: mu_ held.
  void drop_name_locked(const std::pair<fuse_ino_t, std::string>& key) FAULTSAFE_REQUIRES(mu_) {
    auto d = dentries_.find(key);
    if (d == dentries_.end()) return;
    if (auto it = nodes_.find(d->second); it != nodes_.end()) std::erase(it->second.names, key);
    dentries_.erase(d);
  }
  void forget_one(fuse_ino_t id, std::uint64_t n) {
    exclusive_guard g(mu_);
    auto it = nodes_.find(id);
    if (it == nodes_.end() || id == FUSE_ROOT_ID) return;
    it->second.nlookup = it->second.nlookup > n ? it->second.nlookup - n : 0;
    if (it->second.nlookup != 0) return;
    for (const auto& k : it->second.names) dentries_.erase(k);
    by_ino_.erase(it->second.ino);
    nodes_.erase(it);
  }

  // Looks `name` up in `parent` and replies the entry (or the error).
  void reply_entry(fuse_req_t req, fuse_ino_t parent, const char* name) {
    std::string p;
    if (!child_path(parent, name, p)) return (void)fuse_reply_err(req, ENOENT);
    auto st = proc_.lstat(p);
    if (!st) return (void)fuse_reply_err(req, to_errno(st.error()));
    fuse_entry_param e;
    remember(parent, name, *st, e);
    if (fuse_reply_entry(req, &e) != 0) forget_one(e.ino, 1);  // the kernel never got it (interrupted)
  }

  // The stat of node `id`: by handle `fi`, else through any open handle of the node, else by path.
  // GETATTR asks about the inode, which a handle names without a path walk (and which a program that
  // opened the file may stat after losing search permission on its directory, as on tmpfs); the
  // answer must be the node's inode (a handle closed meanwhile may already name another open).
  result<struct ::stat> stat_of(fuse_ino_t id, fuse_file_info* fi) {
    if (fi) return proc_.fstat(static_cast<int>(fi->fh));
    std::uint64_t ino = 0;
    if (const int fd = any_fd(id, &ino); fd >= 0)
      if (auto st = proc_.fstat(fd); st.ok() && st.value().st_ino == ino) return st;
    std::string p;
    if (path_of(id, p)) return proc_.lstat(p);
    return std::make_error_code(std::errc::no_such_file_or_directory);
  }
  void reply_attr(fuse_req_t req, fuse_ino_t id, fuse_file_info* fi) {
    auto st = stat_of(id, fi);
    if (!st) return (void)fuse_reply_err(req, to_errno(st.error()));
    (void)fuse_reply_attr(req, &*st, 0);
  }

  template <class F>
  static void guarded(fuse_req_t req, F&& f) noexcept {
    try {
      if (self(req).ra_pending_.load(std::memory_order_relaxed)) [[unlikely]]  // (3) relaxed: see (2)
        self(req).apply_read_ahead();
      process::acting_as as(self(req).proc_, caller(req));
      f(self(req));
    } catch (const std::bad_alloc&) {
      (void)fuse_reply_err(req, ENOMEM);
    } catch (const std::system_error& e) {
      (void)fuse_reply_err(req, to_errno(e.code()));
    } catch (...) {
      (void)fuse_reply_err(req, EIO);
    }
  }
  static void reply_status(fuse_req_t req, const result<void>& r) { (void)fuse_reply_err(req, to_errno(r.error())); }

  // ---- the operations -----------------------------------------------------------------------------

  static void op_init(void* userdata, fuse_conn_info* conn) {
    auto* b = static_cast<fuse_bridge*>(userdata);
    if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV) conn->want |= FUSE_CAP_HANDLE_KILLPRIV;  // the server clears set-ids
    // No AUTO_INVAL_DATA (libfuse asks for it by default): with attribute timeouts of 0 it costs a
    // GETATTR round trip on every read(2) of cached data; an open drops the cache instead (keep_cache 0).
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_AUTO_INVAL_DATA);
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_WRITEBACK_CACHE);
#ifdef FUSE_CAP_DIRECT_IO_ALLOW_MMAP
    if (b->opts_.io == fuse_io_mode::direct_io) conn->want |= FUSE_CAP_DIRECT_IO_ALLOW_MMAP;
#else
    (void)b;
#endif
  }

  static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, [&](fuse_bridge& b) { b.reply_entry(req, parent, name); });
  }
  static void op_forget(fuse_req_t req, fuse_ino_t ino, std::uint64_t n) {
    self(req).forget_one(ino, n);
    fuse_reply_none(req);
  }
  static void op_forget_multi(fuse_req_t req, std::size_t count, fuse_forget_data* f) {
    for (std::size_t i = 0; i < count; ++i) self(req).forget_one(f[i].ino, f[i].nlookup);
    fuse_reply_none(req);
  }
  static void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) { b.reply_attr(req, ino, fi); });
  }
  static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct ::stat* attr, int to_set, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      const bool named = b.path_of(ino, p);
      const int fd = fi ? static_cast<int>(fi->fh) : (named ? -1 : b.any_fd(ino));
      if (!named && fd < 0) return (void)fuse_reply_err(req, ENOENT);
      process& pr = b.proc_;
      constexpr int handled = FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME |
                              FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;
      if ((to_set & handled) == 0) {
        // A change of ctime alone: chown(path, -1, -1) (the kernel sends no owner): the server's
        // chown(-1, -1) marks ctime, as Linux does.
        auto r = fd >= 0 ? pr.fchown(fd, static_cast<uid_t>(-1), static_cast<gid_t>(-1))
                         : pr.lchown(p, static_cast<uid_t>(-1), static_cast<gid_t>(-1));
        if (!r.ok()) return reply_status(req, r);
      }
      if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        const uid_t u = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
        const gid_t g = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
        auto r = fd >= 0 ? pr.fchown(fd, u, g) : pr.lchown(p, u, g);
        if (!r.ok()) return reply_status(req, r);
      }
      if (to_set & FUSE_SET_ATTR_MODE) {
        const mode_t m = attr->st_mode & 07777;
        // The kernel clears set-id bits itself before a write or truncate by any caller (its
        // file_remove_privs sends this SETATTR, ATTR_FORCE): a change that only drops S_ISUID/S_ISGID
        // is made with the server's root identity, as the kernel's own; any other needs the caller's.
        std::optional<process::acting_as> kill_priv;
        if (const auto cur = b.stat_of(ino, fi); cur.ok()) {
          const mode_t c = cur.value().st_mode & 07777;
          if (m != c && (m & ~c) == 0 && ((c ^ m) & ~static_cast<mode_t>(S_ISUID | S_ISGID)) == 0) kill_priv.emplace(pr, credentials{});
        }
        auto r = fd >= 0 ? pr.fchmod(fd, m) : pr.chmod(p, m);
        if (!r.ok()) return reply_status(req, r);
      }
      if (to_set & FUSE_SET_ATTR_SIZE) {
        auto r = fd >= 0 ? pr.ftruncate(fd, attr->st_size) : pr.truncate(p, attr->st_size);
        if (!r.ok()) return reply_status(req, r);
      }
      // truncate(2) by path arrives as SIZE with MTIME_NOW: the server's truncate already marks mtime and
      // ctime when the size changes, and a truncate to the same size changes no time (as tmpfs).
      if ((to_set & FUSE_SET_ATTR_SIZE) && (to_set & FUSE_SET_ATTR_MTIME_NOW) && !(to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)))
        to_set &= ~(FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW);
      if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
        struct ::timespec t[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
        if (to_set & FUSE_SET_ATTR_ATIME_NOW) t[0] = {0, UTIME_NOW};
        else if (to_set & FUSE_SET_ATTR_ATIME) t[0] = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW) t[1] = {0, UTIME_NOW};
        else if (to_set & FUSE_SET_ATTR_MTIME) t[1] = attr->st_mtim;
        auto r = fd >= 0 ? pr.futimens(fd, t) : pr.utimensat(p, t, AT_SYMLINK_NOFOLLOW);
        if (!r.ok()) return reply_status(req, r);
      }
      b.reply_attr(req, ino, fi);
    });
  }
  static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      if (!b.path_of(ino, p)) return (void)fuse_reply_err(req, ENOENT);
      char buf[PATH_MAX + 1];
      auto r = b.proc_.readlink(p, buf, PATH_MAX);
      if (!r) return (void)fuse_reply_err(req, to_errno(r.error()));
      buf[*r] = '\0';
      (void)fuse_reply_readlink(req, buf);
    });
  }
  // mkdir, mknod, symlink: make the name, then answer its entry.
  template <class Make>
  static void make_node(fuse_req_t req, fuse_ino_t parent, const char* name, Make&& make) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      if (!b.child_path(parent, name, p)) return (void)fuse_reply_err(req, ENOENT);
      if (auto r = make(b.proc_, p); !r.ok()) return reply_status(req, r);
      b.reply_entry(req, parent, name);
    });
  }
  static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    make_node(req, parent, name, [&](process& pr, const std::string& p) { return pr.mknod(p, mode, rdev); });
  }
  static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    make_node(req, parent, name, [&](process& pr, const std::string& p) { return pr.mkdir(p, mode); });
  }
  static void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    make_node(req, parent, name, [&](process& pr, const std::string& p) { return pr.symlink(target, p); });
  }
  // unlink, rmdir: remove the name, then forget it.
  template <class Remove>
  static void remove_name(fuse_req_t req, fuse_ino_t parent, const char* name, Remove&& rm) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      if (!b.child_path(parent, name, p)) return (void)fuse_reply_err(req, ENOENT);
      const result<void> r = rm(b.proc_, p);
      if (r.ok()) {
        exclusive_guard g(b.mu_);
        b.drop_name_locked({parent, name});
      }
      reply_status(req, r);
    });
  }
  static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_name(req, parent, name, [](process& pr, const std::string& p) { return pr.unlink(p); });
  }
  static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_name(req, parent, name, [](process& pr, const std::string& p) { return pr.rmdir(p); });
  }
  static void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname, unsigned flags) {
    guarded(req, [&](fuse_bridge& b) {
      std::string from, to;
      if (!b.child_path(parent, name, from) || !b.child_path(newparent, newname, to)) return (void)fuse_reply_err(req, ENOENT);
      const result<void> r = b.proc_.rename(from, to, flags);
      if (r.ok()) {
        exclusive_guard g(b.mu_);
        b.rename_names_locked({parent, name}, {newparent, newname}, (flags & RENAME_EXCHANGE) != 0);
      }
      reply_status(req, r);
    });
  }
  static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
    guarded(req, [&](fuse_bridge& b) {
      std::string from, to;
      if (!b.path_of(ino, from) || !b.child_path(newparent, newname, to)) return (void)fuse_reply_err(req, ENOENT);
      if (auto r = b.proc_.link(from, to); !r.ok()) return reply_status(req, r);
      b.reply_entry(req, newparent, newname);
    });
  }

  int open_flags(int flags) const noexcept {
    // The kernel computes append offsets itself (writes arrive with their offset); creation flags were
    // handled by lookup/create. Linux's access mode 3 (O_ACCMODE: "ioctl only") needs permission to
    // read and write and gives a descriptor that can do neither (the kernel refuses its reads and
    // writes itself): the server is asked for O_RDWR, which checks exactly that permission.
    if ((flags & O_ACCMODE) == O_ACCMODE) flags = (flags & ~O_ACCMODE) | O_RDWR;
    return flags & (O_ACCMODE | O_TRUNC | O_DIRECTORY | O_NOFOLLOW);
  }
  void opened(fuse_ino_t ino, int fd, fuse_file_info* fi, bool dir) {
    fi->fh = static_cast<std::uint64_t>(fd);
    // Read before mu_ (a message; never sent under the bridge's lock). 0: no version (direct-io, a
    // directory, a mapped file, a server that does not count its changes).
    std::uint64_t v = 0;
    if (!dir) {
      fi->direct_io = opts_.io != fuse_io_mode::page_cache;
      fi->keep_cache = 0;
      if (opts_.io == fuse_io_mode::page_cache)
        if (auto r = proc_.data_version(fd); r.ok()) v = r.value();
    }
    exclusive_guard g(mu_);
    if (auto it = nodes_.find(ino); it != nodes_.end()) {
      it->second.fds.push_back(fd);
      if (!dir) {
        // Keep the pages only if nothing changed the file since an open that dropped them read the
        // same version; otherwise this open drops them and its version becomes the reference.
        fi->keep_cache = v != 0 && it->second.cached_version == v;
        it->second.cached_version = v;
      }
    }
  }
  void closed(fuse_ino_t ino, int fd) {
    {
      exclusive_guard g(mu_);
      if (auto it = nodes_.find(ino); it != nodes_.end()) std::erase(it->second.fds, fd);
    }
    (void)proc_.close(fd);
  }
  static void open_common(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int extra) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      if (!b.path_of(ino, p)) return (void)fuse_reply_err(req, ENOENT);
      auto fd = b.proc_.open(p, b.open_flags(fi->flags) | extra);
      if (!fd) return (void)fuse_reply_err(req, to_errno(fd.error()));
      b.opened(ino, *fd, fi, extra != 0);
      if (fuse_reply_open(req, fi) != 0) b.closed(ino, *fd);
    });
  }
  static void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { open_common(req, ino, fi, 0); }
  static void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    fi->flags = O_RDONLY;
    open_common(req, ino, fi, O_DIRECTORY);
  }
  static void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      if (!b.child_path(parent, name, p)) return (void)fuse_reply_err(req, ENOENT);
      struct ::stat st;  // the open's reply carries the new file's attributes: one message
      auto fd = b.proc_.open(p, b.open_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL), mode, st);
      if (!fd) return (void)fuse_reply_err(req, to_errno(fd.error()));
      fuse_entry_param e;
      b.remember(parent, name, st, e);
      b.opened(e.ino, *fd, fi, false);
      if (fuse_reply_create(req, &e, fi) != 0) {
        b.closed(e.ino, *fd);
        b.forget_one(e.ino, 1);
      }
    });
  }
  static void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    self(req).closed(ino, static_cast<int>(fi->fh));
    (void)fuse_reply_err(req, 0);
  }
  static void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { (void)fuse_reply_err(req, 0); }

  // READ: the server hands the file's bytes in place to read_reply::visit, which replies with them
  // (see the header comment, Reads); a server that does not serve reads by reference (ENOSYS) is read
  // through a buffer.
  struct read_reply {
    fuse_req_t req;
    bool replied = false;
    static int visit(void* self, const void* bytes, std::size_t n) noexcept {
      auto& r = *static_cast<read_reply*>(self);
      r.replied = true;
      (void)fuse_reply_buf(r.req, static_cast<const char*>(bytes), n);  // writev straight from `bytes`
      return 0;
    }
  };
  static void op_read(fuse_req_t req, fuse_ino_t, std::size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) {
      const int fd = static_cast<int>(fi->fh);
      read_reply rr{req};
      auto v = b.proc_.pread_visit(fd, size, off, &read_reply::visit, &rr);
      if (rr.replied) return;
      if (v.ok()) return (void)fuse_reply_buf(req, nullptr, 0);  // at or past the end
      if (v.error() != std::errc::function_not_supported) return (void)fuse_reply_err(req, to_errno(v.error()));
      thread_local std::vector<char> buf;
      if (buf.size() < size) buf.resize(size);
      auto r = b.proc_.pread(fd, buf.data(), size, off);
      if (!r) return (void)fuse_reply_err(req, to_errno(r.error()));
      (void)fuse_reply_buf(req, buf.data(), *r);
    });
  }
  static void op_write(fuse_req_t req, fuse_ino_t, const char* data, std::size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) {
      auto r = b.proc_.pwrite(static_cast<int>(fi->fh), data, size, off);
      if (!r) return (void)fuse_reply_err(req, to_errno(r.error()));
      (void)fuse_reply_write(req, *r);
    });
  }
  static void op_fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) {
      const int fd = static_cast<int>(fi->fh);
      reply_status(req, datasync ? b.proc_.fdatasync(fd) : b.proc_.fsync(fd));
    });
  }
  static void op_fsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { (void)fuse_reply_err(req, 0); }
  static void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
    guarded(req, [&](fuse_bridge& b) { reply_status(req, b.proc_.fallocate(static_cast<int>(fi->fh), mode, off, len)); });
  }
  static void op_statfs(fuse_req_t req, fuse_ino_t) {
    guarded(req, [&](fuse_bridge& b) {
      auto r = b.proc_.statvfs(b.prefix_);
      if (!r) return (void)fuse_reply_err(req, to_errno(r.error()));
      (void)fuse_reply_statfs(req, &*r);
    });
  }
  static void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
    guarded(req, [&](fuse_bridge& b) {
      std::string p;
      if (!b.path_of(ino, p)) return (void)fuse_reply_err(req, ENOENT);
      reply_status(req, b.proc_.access(p, mask));
    });
  }
  static void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { op_release(req, ino, fi); }

  // readdir and readdirplus: server records from position `off`, packed while they fit in `size`.
  static void readdir_common(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi, bool plus) {
    guarded(req, [&](fuse_bridge& b) {
      std::vector<char> in(std::max<std::size_t>(size, 4096));
      auto r = b.proc_.readdir(static_cast<int>(fi->fh), static_cast<std::uint64_t>(off), in.data(), in.size());
      if (!r) return (void)fuse_reply_err(req, to_errno(r.error()));
      std::string dir;
      if (plus && !b.path_of(ino, dir)) plus = false;
      std::vector<char> out(size);
      std::size_t used = 0;
      for (std::size_t at = 0; at + sizeof(io_dirent) <= *r;) {
        io_dirent d;
        std::memcpy(&d, in.data() + at, sizeof d);
        if (d.reclen == 0) break;
        const std::string name(in.data() + at + sizeof d, d.namelen);
        at += d.reclen;
        std::size_t need;
        if (plus) {
          fuse_entry_param e;
          std::memset(&e, 0, sizeof e);
          const bool dots = name == "." || name == "..";
          if (!dots) {
            auto st = b.proc_.lstat(dir + "/" + name);
            if (!st) continue;  // gone meanwhile
            e.attr = *st;
          } else {
            e.attr.st_ino = d.ino;
            e.attr.st_mode = static_cast<mode_t>(d.type) << 12;
          }
          // Measure first: the kernel takes a reference only for an entry that is sent.
          need = fuse_add_direntry_plus(req, nullptr, 0, name.c_str(), &e, 0);
          if (used + need > size) break;
          if (!dots) b.remember(ino, name, e.attr, e);  // e.ino 0 for the dots: the kernel links neither
          need = fuse_add_direntry_plus(req, out.data() + used, size - used, name.c_str(), &e, static_cast<off_t>(d.next));
        } else {
          struct ::stat st;
          std::memset(&st, 0, sizeof st);
          st.st_ino = d.ino;
          st.st_mode = static_cast<mode_t>(d.type) << 12;
          need = fuse_add_direntry(req, out.data() + used, size - used, name.c_str(), &st, static_cast<off_t>(d.next));
          if (used + need > size) break;
        }
        used += need;
      }
      (void)fuse_reply_buf(req, out.data(), used);
    });
  }
  static void op_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi) {
    readdir_common(req, ino, size, off, fi, false);
  }
  static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi) {
    readdir_common(req, ino, size, off, fi, true);
  }

  static fuse_lowlevel_ops make_ops() {
    fuse_lowlevel_ops o;
    std::memset(&o, 0, sizeof o);
    o.init = op_init;
    o.lookup = op_lookup;
    o.forget = op_forget;
    o.forget_multi = op_forget_multi;
    o.getattr = op_getattr;
    o.setattr = op_setattr;
    o.readlink = op_readlink;
    o.mknod = op_mknod;
    o.mkdir = op_mkdir;
    o.unlink = op_unlink;
    o.rmdir = op_rmdir;
    o.symlink = op_symlink;
    o.rename = op_rename;
    o.link = op_link;
    o.open = op_open;
    o.read = op_read;
    o.write = op_write;
    o.flush = op_flush;
    o.release = op_release;
    o.fsync = op_fsync;
    o.opendir = op_opendir;
    o.readdir = op_readdir;
    o.readdirplus = op_readdirplus;
    o.releasedir = op_releasedir;
    o.fsyncdir = op_fsyncdir;
    o.statfs = op_statfs;
    o.access = op_access;
    o.create = op_create;
    o.fallocate = op_fallocate;
    return o;
  }

  fuse_bridge_options opts_;
  std::string prefix_;
  process proc_;
  // The session's lifetime against stop() from other threads: se_ and mountpoint_ are written only on
  // the owner's thread (mount(), unmount()) under session_mu_, which stop() holds while it uses them;
  // the owner's own reads need no lock. A leaf: never held across a send to the server.
  mutable ranked_mutex<rank::leaf> session_mu_{"fuse bridge session"};
  fuse_session* se_ = nullptr;
  std::string mountpoint_;
  std::string err_;
  int root_fd_ = -1;                         // the root's O_PATH handle (mount() to unmount()), or -1
  std::string bdi_;                          // the mount's major:minor
  std::atomic<bool> ra_pending_{false};      // read_ahead_kb still to be written (see apply_read_ahead)
  std::atomic<int> ra_errno_{0};
  mutable ranked_mutex<rank::leaf> mu_{"fuse bridge nodes"};  // leaf: the node table; never held across a send
  std::map<fuse_ino_t, node> nodes_ FAULTSAFE_GUARDED_BY(mu_);
  std::unordered_map<std::uint64_t, fuse_ino_t> by_ino_ FAULTSAFE_GUARDED_BY(mu_);
  std::map<std::pair<fuse_ino_t, std::string>, fuse_ino_t> dentries_ FAULTSAFE_GUARDED_BY(mu_);
  fuse_ino_t next_id_ FAULTSAFE_GUARDED_BY(mu_) = FUSE_ROOT_ID + 1;
};

}  // namespace faultsafe
