// faultsafe/resmgr/ramfs.hpp: an in-memory file server with real directories.
//
// Defines `ramfs_options` and `ramfs`: a `server` attached at a path prefix that serves every message
// of resmgr/messages.hpp: its namespace is a name_tree (resmgr/name_tree.hpp: directories, names,
// symlinks, link counts, rename, Linux tmpfs semantics), its files are iofunc_attr objects served by
// the iofunc default handlers (resmgr/iofunc.hpp; the direct-copy read/write of resmgr/direct_copy.hpp
// by default). Their bytes live in one file_store (resmgr/file_store.hpp: one sparse memfd, a contiguous
// extent per file), so a ramfs costs the process one file descriptor however many files it holds.
// Reusable by tests and examples (customize() wraps or replaces handlers), and by the pager work
// (lookup() gives the attr behind a path).
//
// open: the name tree finds or (O_CREAT) creates the node, after iofunc_open_verify() has checked the
// flags (an invalid open creates nothing); a file created by this open may be opened with its own
// access mode even if its mode denies it (POSIX); then iofunc_open_default checks the permissions
// (EACCES), writing a directory (EISDIR) and applies O_TRUNC. The OCB is a ramfs_ocb (it names the
// node, for readdir). The root directory has dir_mode / dir_uid / dir_gid.
// readdir: whole io_dirent records from a position (name_tree positions: stable across unlinks);
// EINVAL if the client's buffer cannot hold the next record; ENOTDIR for a non-directory.
//
// Thread-safety: all members from any thread. Locks: the name tree's (rank ramfs_rename, ramfs_dir;
// see name_tree.hpp), then the attrs' (range 30, meta 40); no directory lock is held during I/O.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "direct_copy.hpp"
#include "file_store.hpp"
#include "iofunc.hpp"
#include "name_tree.hpp"
#include "server.hpp"

namespace faultsafe {

struct ramfs_options {
  std::string name = "ramfs";
  std::string prefix = "/ram";      ///< attached at construction
  thread_pool_options pool{1, 4};
  channel_options channel{};
  path_namespace* ns = nullptr;     ///< nullptr = path_namespace::global()
  /// server_options::max_opens_per_client (0 = no limit: a gateway such as the FUSE bridge is one
  /// client holding every open of the machine's programs).
  std::size_t max_opens_per_client = 1024;
  mode_t dir_mode = 0777;           ///< the root directory's permission bits and owner (who may create)
  std::uint32_t dir_uid = 0, dir_gid = 0;
  /// Adjusts the handler table before the server starts: wrap a default (capture the slot's handler and
  /// call it from the new one) or replace it. Examples and tests hook reads and page-ins this way, so
  /// every message ramfs serves is served by them too.
  /// Declared before `file` on purpose: its initialisation may throw (std::function may allocate), and
  /// nothing after it may own a shared_ptr. Otherwise GCC 12 at -O2 reports the cleanup of a designated-
  /// initializer temporary's file.store on that throw path as maybe-uninitialized (a false positive
  /// that breaks -Werror Release builds of callers that set both).
  std::function<void(io_funcs&)> customize{};
  attr_options file{};              ///< file.store == nullptr: the ramfs makes its own store (one memfd)
  /// Serve read(fd)/write(fd) into/from mappings of the same file without a fault (resmgr/direct_copy.hpp).
  bool direct_copy = true;
};

/// A ramfs open: the iofunc OCB and the node it opened.
struct ramfs_ocb : iofunc_ocb {
  explicit ramfs_ocb(name_tree::node_ptr n) : node(std::move(n)) {}
  name_tree::node_ptr node;
};

class ramfs {
 public:
  /// Effects: builds the server, attaches `prefix` and starts the pool. Throws: std::system_error
  /// (EEXIST/EINVAL for the prefix, thread start failures), std::invalid_argument for a bad pool.
  explicit ramfs(ramfs_options opts = {})
      : opts_(with_store(std::move(opts))),
        tree_(opts_.file, opts_.dir_mode, opts_.dir_uid, opts_.dir_gid),
        srv_(server_options{opts_.name, opts_.pool, opts_.channel, opts_.ns, opts_.max_opens_per_client}, make_funcs()) {
    if (auto ec = srv_.attach(opts_.prefix)) throw std::system_error(ec, "ramfs: attach " + opts_.prefix);
    srv_.start();
  }
  ~ramfs() { srv_.stop(); }
  ramfs(const ramfs&) = delete;
  ramfs& operator=(const ramfs&) = delete;

  [[nodiscard]] server& srv() noexcept { return srv_; }
  /// Where the files' bytes live (shared by all of them).
  [[nodiscard]] file_store& store() const noexcept { return *opts_.file.store; }
  [[nodiscard]] const std::string& prefix() const noexcept { return opts_.prefix; }
  [[nodiscard]] name_tree& tree() noexcept { return tree_; }
  /// Effects: stops the server (see server::stop()).
  void stop() { srv_.stop(); }

  /// The node at `path` (below the prefix; symlinks followed, no permission checks), or nullptr.
  [[nodiscard]] std::shared_ptr<iofunc_attr> lookup(const std::string& path) const {
    name_tree::node_ptr n;
    if (tree_.resolve(client_info{}, path, true, n) != 0) return nullptr;
    return n->attr;
  }
  /// Effects: creates the regular file `path` with `mode & 07777` owned by uid/gid, as an O_CREAT open
  /// by that owner would, without permission checks (setup by the server's owner). Returns EEXIST if
  /// it exists, or the errno of the walk (ENOENT, ENOTDIR, ENAMETOOLONG).
  /// Throws: what iofunc_attr's constructor throws.
  std::error_code create(std::string_view path, mode_t mode, std::uint32_t uid = 0, std::uint32_t gid = 0) {
    const int e = tree_.create_file(path, mode, uid, gid);
    return e ? std::error_code(e, std::generic_category()) : std::error_code{};
  }
  /// The names in the root directory.
  [[nodiscard]] std::vector<std::string> names() const { return tree_.root_names(); }

 private:
  static io_result res(int e) noexcept { return e ? io_result::fail(e) : io_result::ok(); }
  static ramfs_options with_store(ramfs_options o) {
    if (!o.file.store) o.file.store = std::make_shared<file_store>(file_store_options{"ramfs store"});
    return o;
  }

  io_funcs make_funcs() {
    io_funcs f = opts_.direct_copy ? iofunc_direct_defaults() : iofunc_defaults();
    f.open = [this](request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
      return open_file(ctx, q, path, out);
    };
    f.mkdir = [this](request_context& ctx, const io_mkdir_request& q, std::string_view p) {
      return res(tree_.mkdir(ctx.client, p, static_cast<mode_t>(q.mode)));
    };
    f.mknod = [this](request_context& ctx, const io_mknod_request& q, std::string_view p) {
      return res(tree_.mknod(ctx.client, p, static_cast<mode_t>(q.mode), q.dev));
    };
    f.unlink = [this](request_context& ctx, const io_path_request&, std::string_view p) { return res(tree_.unlink(ctx.client, p)); };
    f.rmdir = [this](request_context& ctx, const io_path_request&, std::string_view p) { return res(tree_.rmdir(ctx.client, p)); };
    f.rename = [this](request_context& ctx, const io_rename_request& q, std::string_view from, std::string_view to) {
      return res(tree_.rename(ctx.client, from, to, q.flags));
    };
    f.link = [this](request_context& ctx, const io_path_request&, std::string_view from, std::string_view to) {
      return res(tree_.link(ctx.client, from, to));
    };
    f.symlink = [this](request_context& ctx, const io_path_request&, std::string_view linkpath, std::string_view target) {
      return res(tree_.symlink(ctx.client, linkpath, target));
    };
    f.readdir = [this](request_context& ctx, ocb_base& o, const io_readdir_request& q) { return readdir(ctx, o, q); };
    if (opts_.customize) opts_.customize(f);
    return f;
  }

  io_result open_file(request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
    // Everything that can fail without the file comes first: a failed open creates nothing.
    if ((q.flags & O_CREAT) && (q.flags & O_DIRECTORY)) return io_result::fail(EINVAL);  // as Linux 6.4+
    // Flags that forbid creating (a bad access mode) are found before the name is inserted; the tree
    // returns them only where it would create (a missing name is ENOENT, an existing one EEXIST first).
    int refuse = 0;
    if ((q.flags & O_CREAT) && !(q.flags & O_PATH))
      if (auto ec = iofunc_open_verify(q.flags & ~O_TRUNC, nullptr)) refuse = ec.value();
    name_tree::node_ptr n;
    bool created = false;
    if (int e = tree_.open(ctx.client, path, q.flags, static_cast<mode_t>(q.mode), n, created, refuse)) return io_result::fail(e);
    if (!created) return iofunc_open_default<ramfs_ocb>(ctx, q, n->attr, out, n);
    // A file created by this open may be opened with its own access mode even if `mode` denies it
    // (POSIX: the permission check applies to later opens); it is empty (no O_TRUNC).
    io_open_request creator = q;
    creator.flags &= ~O_TRUNC;
    request_context c = ctx;
    c.client.uid = 0;
    return iofunc_open_default<ramfs_ocb>(c, creator, n->attr, out, n);
  }

  io_result readdir(request_context& ctx, ocb_base& base, const io_readdir_request& q) {
    ramfs_ocb* o = iofunc_ocb_cast<ramfs_ocb>(base);
    if (o == nullptr || (o->flags & O_PATH)) return io_result::fail(EBADF);
    const std::size_t cap = ctx.rcv.reply_data_len();
    constexpr std::size_t min_rec = sizeof(io_dirent) + 8;
    std::vector<name_tree::dirent_out> ents;
    if (int e = tree_.readdir(*o->node, q.offset, cap / min_rec + 1, ents)) return io_result::fail(e);
    std::vector<unsigned char> buf;  // packed outside the directory lock, copied to the client after it
    for (const auto& d : ents) {
      const std::size_t rec = (sizeof(io_dirent) + d.name.size() + 1 + 7) & ~std::size_t{7};
      if (buf.size() + rec > cap) break;
      io_dirent h;
      h.ino = d.ino;
      h.next = d.pos;
      h.reclen = static_cast<std::uint16_t>(rec);
      h.type = d.type;
      h.namelen = static_cast<std::uint32_t>(d.name.size());
      const std::size_t at = buf.size();
      buf.resize(at + rec, 0);
      std::memcpy(buf.data() + at, &h, sizeof h);
      std::memcpy(buf.data() + at + sizeof h, d.name.data(), d.name.size());
    }
    if (buf.empty() && !ents.empty()) return io_result::fail(EINVAL);
    if (!buf.empty())
      if (auto ec = ctx.rcv.write_reply_data(0, buf.data(), buf.size())) return io_result::fail(ec);
    o->attr->touch(true, false);
    return io_result::ok(static_cast<std::int64_t>(buf.size()));
  }

  ramfs_options opts_;
  name_tree tree_;
  server srv_;  // last: stopped (joined) before the tree dies
};

}  // namespace faultsafe
