// faultsafe/resmgr/ramfs.hpp: an in-memory file server (one flat directory, one arena memfd for all
// its files).
//
// Defines `ramfs_options` and `ramfs`: a `server` attached at a path prefix whose files are
// iofunc_attr objects, served by the iofunc default handlers. Their bytes live in one file_store
// (resmgr/file_store.hpp: one sparse memfd, a contiguous extent per file), so a ramfs costs the process
// one file descriptor however many files it holds (1,000,000 files of 4 KiB fit under `ulimit -n
// 1024`). Reusable by tests and examples, and by the pager work (lookup() gives the attr, and so the
// memfd and the extent, behind a name).
//
// Names: the path below the prefix is one file name; "" (the directory itself) is EISDIR, a name with
// '/' is ENOENT (no subdirectories), a name longer than 255 bytes is ENAMETOOLONG.
// open: O_CREAT creates a missing file owned by the caller (uid/gid) with `mode & 07777`, if the caller
// may write the directory (dir_mode/dir_uid/dir_gid; EACCES otherwise) and the flags are valid (EINVAL
// for a bad access mode); O_EXCL with an existing file is EEXIST; a missing file without O_CREAT is
// ENOENT; then iofunc_open_default checks the file's permissions (EACCES) and applies O_TRUNC. An open
// that fails creates and changes nothing (the name is inserted last).
//
// Thread-safety: all members from any thread. Lock order: the directory mutex is a leaf, held only to
// look up or insert a name (never during I/O or while holding a range lock).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "direct_copy.hpp"
#include "file_store.hpp"
#include "iofunc.hpp"
#include "server.hpp"
#include "../order/ranked_mutex.hpp"

namespace faultsafe {

struct ramfs_options {
  std::string name = "ramfs";
  std::string prefix = "/ram";      ///< attached at construction
  thread_pool_options pool{1, 4};
  channel_options channel{};
  path_namespace* ns = nullptr;     ///< nullptr = path_namespace::global()
  mode_t dir_mode = 0777;           ///< who may create files
  std::uint32_t dir_uid = 0, dir_gid = 0;
  attr_options file{};              ///< file.store == nullptr: the ramfs makes its own store (one memfd)
  /// Serve read(fd)/write(fd) into/from mappings of the same file without a fault (resmgr/direct_copy.hpp).
  bool direct_copy = true;
  /// Adjusts the handler table before the server starts: wrap a default (capture the slot's handler and
  /// call it from the new one) or replace it. Examples and tests hook reads and page-ins this way, so
  /// every message ramfs serves is served by them too.
  std::function<void(io_funcs&)> customize{};
};

class ramfs {
 public:
  /// Effects: builds the server, attaches `prefix` and starts the pool. Throws: std::system_error
  /// (EEXIST/EINVAL for the prefix, thread start failures), std::invalid_argument for a bad pool.
  explicit ramfs(ramfs_options opts = {})
      : opts_(with_store(std::move(opts))),
        srv_(server_options{opts_.name, opts_.pool, opts_.channel, opts_.ns}, make_funcs()) {
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
  /// Effects: stops the server (see server::stop()).
  void stop() { srv_.stop(); }

  /// The file called `name`, or nullptr.
  [[nodiscard]] std::shared_ptr<iofunc_attr> lookup(const std::string& name) const {
    exclusive_guard g(dir_mu_);
    auto it = files_.find(name);
    return it == files_.end() ? nullptr : it->second;
  }
  /// Effects: creates the regular file `name` with `mode & 07777` owned by uid/gid, as an O_CREAT open
  /// by that owner would, without the directory permission check (setup by the server's owner).
  /// Returns EEXIST if it exists, ENAMETOOLONG / ENOENT / EISDIR for a name open would refuse.
  /// Throws: what iofunc_attr's constructor throws.
  std::error_code create(std::string_view name, mode_t mode, std::uint32_t uid = 0, std::uint32_t gid = 0) {
    if (auto e = check_name(name)) return std::error_code(e, std::generic_category());
    exclusive_guard g(dir_mu_);
    if (files_.count(std::string(name))) return std::make_error_code(std::errc::file_exists);
    files_.emplace(std::string(name), std::make_shared<iofunc_attr>(mode, uid, gid, opts_.file));
    return {};
  }
  [[nodiscard]] std::vector<std::string> names() const {
    exclusive_guard g(dir_mu_);
    std::vector<std::string> out;
    for (const auto& e : files_) out.push_back(e.first);
    return out;
  }

 private:
  static ramfs_options with_store(ramfs_options o) {
    if (!o.file.store) o.file.store = std::make_shared<file_store>(file_store_options{"ramfs store"});
    return o;
  }
  io_funcs make_funcs() {
    io_funcs f = opts_.direct_copy ? iofunc_direct_defaults() : iofunc_defaults();
    f.open = [this](request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
      return open_file(ctx, q, path, out);
    };
    if (opts_.customize) opts_.customize(f);
    return f;
  }

  // The errno for a file name this flat directory refuses, or 0.
  static int check_name(std::string_view path) noexcept {
    if (path.empty()) return EISDIR;
    if (path.find('/') != std::string_view::npos) return ENOENT;
    if (path.size() > 255) return ENAMETOOLONG;
    return 0;
  }

  io_result open_file(request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
    if (int e = check_name(path)) return io_result::fail(e);
    std::shared_ptr<iofunc_attr> attr;
    {
      exclusive_guard g(dir_mu_);
      auto it = files_.find(std::string(path));
      if (it != files_.end()) {
        if ((q.flags & O_CREAT) && (q.flags & O_EXCL)) return io_result::fail(EEXIST);
        attr = it->second;
      } else {
        if (!(q.flags & O_CREAT)) return io_result::fail(ENOENT);
        // Everything that can fail comes before the name is inserted: a failed open creates nothing
        // (POSIX: "If -1 is returned, no files shall be created or modified").
        io_open_request creator = q;
        creator.flags &= ~O_TRUNC;  // a new file is empty
        if (auto ec = iofunc_open_verify(creator.flags, nullptr)) return io_result::fail(ec);
        if (!iofunc_check_access(opts_.dir_mode, opts_.dir_uid, opts_.dir_gid, ctx.client, access_write))
          return io_result::fail(EACCES);
        attr = std::make_shared<iofunc_attr>(static_cast<mode_t>(q.mode), ctx.client.uid, ctx.client.gid, opts_.file);
        // A file created by this open may be opened with its own access mode even if `mode` denies it
        // (POSIX: the permission check applies to later opens).
        request_context c = ctx;
        c.client.uid = 0;
        io_result r = iofunc_open_default(c, creator, attr, out);
        if (r.error) return r;
        try {
          files_.emplace(std::string(path), std::move(attr));
        } catch (...) {
          out.reset();
          throw;
        }
        return r;
      }
    }
    return iofunc_open_default(ctx, q, std::move(attr), out);
  }

  ramfs_options opts_;
  // rank::directory (25): held while a new file is created and first opened (its attr meta, rank 40),
  // so that a failed open leaves no name behind; never across I/O or a send.
  mutable ranked_mutex<rank::directory> dir_mu_{"ramfs directory"};
  std::map<std::string, std::shared_ptr<iofunc_attr>> files_ FAULTSAFE_GUARDED_BY(dir_mu_);
  server srv_;  // last: stopped (joined) before files_ dies
};

}  // namespace faultsafe
