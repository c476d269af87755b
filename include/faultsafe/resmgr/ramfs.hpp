// faultsafe/resmgr/ramfs.hpp: an in-memory file server (one flat directory, one memfd per file).
//
// Defines `ramfs_options` and `ramfs`: a `server` attached at a path prefix whose files are
// iofunc_attr objects (data in a memfd each, see resmgr/iofunc.hpp), served by the iofunc default
// handlers. Reusable by tests and examples, and by the pager work (lookup() gives the attr, and so the
// memfd, behind a name).
//
// Names: the path below the prefix is one file name; "" (the directory itself) is EISDIR, a name with
// '/' is ENOENT (no subdirectories), a name longer than 255 bytes is ENAMETOOLONG.
// open: O_CREAT creates a missing file owned by the caller (uid/gid) with `mode & 07777`, if the caller
// may write the directory (dir_mode/dir_uid/dir_gid; EACCES otherwise); O_EXCL with an existing file is
// EEXIST; a missing file without O_CREAT is ENOENT; then iofunc_open_default checks the file's
// permissions (EACCES) and applies O_TRUNC.
//
// Thread-safety: all members from any thread. Lock order: the directory mutex is a leaf, held only to
// look up or insert a name (never during I/O or while holding a range lock).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "direct_copy.hpp"
#include "iofunc.hpp"
#include "server.hpp"

namespace faultsafe {

struct ramfs_options {
  std::string name = "ramfs";
  std::string prefix = "/ram";      ///< attached at construction
  thread_pool_options pool{1, 4};
  channel_options channel{};
  path_namespace* ns = nullptr;     ///< nullptr = path_namespace::global()
  mode_t dir_mode = 0777;           ///< who may create files
  std::uint32_t dir_uid = 0, dir_gid = 0;
  attr_options file{};
  /// Serve read(fd)/write(fd) into/from mappings of the same file without a fault (resmgr/direct_copy.hpp).
  bool direct_copy = true;
};

class ramfs {
 public:
  /// Effects: builds the server, attaches `prefix` and starts the pool. Throws: std::system_error
  /// (EEXIST/EINVAL for the prefix, thread start failures), std::invalid_argument for a bad pool.
  explicit ramfs(ramfs_options opts = {})
      : opts_(std::move(opts)),
        srv_(server_options{opts_.name, opts_.pool, opts_.channel, opts_.ns}, make_funcs()) {
    if (auto ec = srv_.attach(opts_.prefix)) throw std::system_error(ec, "ramfs: attach " + opts_.prefix);
    srv_.start();
  }
  ~ramfs() { srv_.stop(); }
  ramfs(const ramfs&) = delete;
  ramfs& operator=(const ramfs&) = delete;

  [[nodiscard]] server& srv() noexcept { return srv_; }
  [[nodiscard]] const std::string& prefix() const noexcept { return opts_.prefix; }
  /// Effects: stops the server (see server::stop()).
  void stop() { srv_.stop(); }

  /// The file called `name`, or nullptr.
  [[nodiscard]] std::shared_ptr<iofunc_attr> lookup(const std::string& name) const {
    std::lock_guard<std::mutex> g(dir_mu_);
    auto it = files_.find(name);
    return it == files_.end() ? nullptr : it->second;
  }
  [[nodiscard]] std::vector<std::string> names() const {
    std::lock_guard<std::mutex> g(dir_mu_);
    std::vector<std::string> out;
    for (const auto& e : files_) out.push_back(e.first);
    return out;
  }

 private:
  io_funcs make_funcs() {
    io_funcs f = opts_.direct_copy ? iofunc_direct_defaults() : iofunc_defaults();
    f.open = [this](request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
      return open_file(ctx, q, path, out);
    };
    return f;
  }

  io_result open_file(request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
    if (path.empty()) return io_result::fail(EISDIR);
    if (path.find('/') != std::string_view::npos) return io_result::fail(ENOENT);
    if (path.size() > 255) return io_result::fail(ENAMETOOLONG);
    std::shared_ptr<iofunc_attr> attr;
    {
      std::lock_guard<std::mutex> g(dir_mu_);
      auto it = files_.find(std::string(path));
      if (it != files_.end()) {
        if ((q.flags & O_CREAT) && (q.flags & O_EXCL)) return io_result::fail(EEXIST);
        attr = it->second;
      } else {
        if (!(q.flags & O_CREAT)) return io_result::fail(ENOENT);
        if (!iofunc_check_access(opts_.dir_mode, opts_.dir_uid, opts_.dir_gid, ctx.client, access_write))
          return io_result::fail(EACCES);
        attr = std::make_shared<iofunc_attr>(static_cast<mode_t>(q.mode), ctx.client.uid, ctx.client.gid, opts_.file);
        files_.emplace(std::string(path), attr);
        // A file created by this open may be opened with its own access mode even if `mode` denies it
        // (POSIX: the permission check applies to later opens).
        io_open_request creator = q;
        creator.flags &= ~O_TRUNC;
        request_context c = ctx;
        c.client.uid = 0;
        return iofunc_open_default(c, creator, std::move(attr), out);
      }
    }
    return iofunc_open_default(ctx, q, std::move(attr), out);
  }

  ramfs_options opts_;
  mutable std::mutex dir_mu_;  // leaf: files_
  std::map<std::string, std::shared_ptr<iofunc_attr>> files_;
  server srv_;  // last: stopped (joined) before files_ dies
};

}  // namespace faultsafe
