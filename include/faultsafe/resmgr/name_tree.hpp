// faultsafe/resmgr/name_tree.hpp: a directory tree of names over iofunc_attr nodes (ramfs's namespace).
//
// Defines `name_tree`: directories, names, link counts, symbolic links, and every path operation of a
// POSIX file system (lookup, create/open, mkdir, mknod, unlink, rmdir, rename, link, symlink, readdir)
// with Linux tmpfs semantics. Each node is an iofunc_attr (its type in its mode: S_IFREG, S_IFDIR,
// S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK); a symlink's target is its data. The file data store is
// the attr's (resmgr/iofunc.hpp); this header only names nodes.
//
// Paths are relative to the tree's root ("" is the root; components separated by '/', empty ones and
// "." skipped, ".." goes to the parent, the root's ".." is the root). Every directory walked through
// needs search (x) permission for the caller (EACCES); a component longer than 255 bytes is
// ENAMETOOLONG; a non-directory in the middle is ENOTDIR, as is a trailing '/' after a non-directory;
// symlinks in the middle are followed (and the last one when the operation follows), at most 40 in one
// resolution (ELOOP). A symlink target starting with '/' is resolved from the tree's root (the server
// cannot see other servers' paths).
//
// Semantics (as Linux tmpfs): creating or removing a name needs write and search permission on its
// directory; in a sticky directory only the owner of the entry, the owner of the directory or uid 0 may
// remove or rename it (EPERM); a new node in a setgid directory takes the directory's group, and a new
// directory also its S_ISGID bit; link counts: a file counts its names, a directory 2 + its
// subdirectories; mtime and ctime of a directory change when its entries do, ctime of a node when its
// link count does or it is renamed. readdir positions: "." is 1, ".." is 2, every entry gets the next
// position of its directory when it is inserted; a read from position p returns the entries after p in
// position order, so an unlink (or a rename) never moves the other entries (no entry is skipped or
// repeated because another one went away). Links per node are capped at `max_links` (EMLINK).
//
// Locking (the README's lock table): every directory has a shared mutex (rank ramfs_dir). A walk takes
// one directory at a time, shared, to look a name up (never two at once). An operation that changes
// entries takes its directory exclusively; one that needs several directories (rmdir: the parent and
// the victim; rename: both parents and a replaced directory; link: one) takes them together with
// lock_in_order (rank, then address), after which it looks its names up again and retries if they
// changed meanwhile. A rename across two directories first takes the tree's rename mutex (rank
// ramfs_rename, below ramfs_dir), so the ancestry check (a directory cannot move into itself) sees a
// stable tree, as the kernel's s_vfs_rename_mutex. Node metadata (attr meta, rank 40) is taken under
// directory locks; no data range (rank 30), no client memory and no node construction (the store's
// allocation) happens while a directory lock is held: a new node is made first and inserted if its
// name is still free.
//
// Thread-safety: all members from any thread. Lifetime: a node lives while a directory entry or an
// open (a shared_ptr) refers to it; a removed directory is marked dead (creating in it is ENOENT,
// reading it returns nothing).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "../config.hpp"
#include "../order/ranked_mutex.hpp"
#include "iofunc.hpp"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

namespace faultsafe {

class name_tree {
 public:
  static constexpr std::size_t name_max = 255;
  static constexpr int max_symlinks = 40;
  static constexpr std::uint32_t max_links = 65000;

  struct node;
  using node_ptr = std::shared_ptr<node>;
  using dir_mutex = ranked_mutex<rank::ramfs_dir, std::shared_mutex>;

  /// A directory's entries (see the header comment for positions).
  struct dir_state {
    struct entry {
      node_ptr n;
      std::uint64_t pos = 0;
    };
    mutable dir_mutex mu{"ramfs dir"};
    std::map<std::string, entry, std::less<>> names;  // guarded by mu
    std::map<std::uint64_t, std::string> order;       // guarded by mu: position -> name
    std::uint64_t next_pos = 3;                        // guarded by mu
    bool dead = false;                                 // guarded by mu: removed (rmdir, or replaced)
    std::weak_ptr<node> parent;                        // guarded by mu; changed only under the rename mutex too
    std::atomic<std::uint64_t> parent_ino{0};          // for ".." (readdir)
  };
  /// A node: its attributes (and data) and, for a directory, its entries.
  struct node {
    std::shared_ptr<iofunc_attr> attr;
    std::unique_ptr<dir_state> dir;  // directories only
    std::weak_ptr<node> self;
  };

  /// One readdir entry.
  struct dirent_out {
    std::uint64_t ino = 0;
    std::uint64_t pos = 0;
    unsigned char type = DT_UNKNOWN;
    std::string name;
  };

  /// Effects: an empty tree whose root has `root_mode` (permission bits) and owner uid/gid; files get
  /// `file_opts`. Throws: what iofunc_attr's constructor throws.
  name_tree(attr_options file_opts, mode_t root_mode, std::uint32_t uid, std::uint32_t gid) : file_opts_(std::move(file_opts)) {
    root_ = make_node(S_IFDIR | (root_mode & 07777), uid, gid);
    root_->attr->add_links(1);  // "." and the root's own name (its ".." is itself)
    root_->attr->add_dir_bytes(2 * iofunc_attr::dir_entry_bytes);
    root_->dir->parent = root_;
    root_->dir->parent_ino.store(root_->attr->ino(), std::memory_order_relaxed);
  }

  [[nodiscard]] const node_ptr& root() const noexcept { return root_; }

  /// Resolves `path` (following a final symlink when `follow`). Returns 0 or an errno.
  int resolve(const client_info& c, std::string_view path, bool follow, node_ptr& out) const {
    walk_state w;
    return resolve_at(c, root_, path, follow, out, w);
  }

  /// open(2)'s namespace part: finds (O_CREAT: creates, mode & 07777, owned by the caller) the node of
  /// `path`. O_EXCL with an existing name (even a dangling symlink) is EEXIST; O_CREAT through a
  /// dangling symlink creates its target; O_NOFOLLOW on a final symlink is ELOOP (O_PATH: the link
  /// itself); O_DIRECTORY on a non-directory is ENOTDIR; O_CREAT on a directory is EISDIR; a socket is
  /// ENXIO. `created` says whether this call made the node. `refuse_create` (an errno the caller found
  /// in the flags, e.g. EINVAL for a bad access mode) is returned instead of creating a missing name,
  /// after the checks that come first (ENOENT of the walk, EEXIST, EISDIR). Returns 0 or an errno.
  int open(const client_info& c, std::string_view path, int flags, mode_t mode, node_ptr& out, bool& created,
           int refuse_create = 0) {
    created = false;
    walk_state w;
    node_ptr base = root_;
    std::string cur(path);
    for (;;) {
      node_ptr parent;
      std::string name;
      bool slash = false;
      if (int e = resolve_parent(c, base, cur, parent, name, slash, w)) return e;
      if (name.empty()) {  // the root, or a path ending in "." / ".."
        if (flags & O_CREAT) return (flags & O_EXCL) ? EEXIST : EISDIR;
        out = parent;
        return check_open(out, flags, slash);
      }
      if (!(flags & O_CREAT)) {
        node_ptr n;
        if (int e = lookup(c, *parent, name, n)) return e;
        if (S_ISLNK(n->attr->mode()) && (!(flags & O_NOFOLLOW) || slash)) {
          if (int e = follow_link(*n, w, cur, slash)) return e;
          base = parent;
          continue;
        }
        if (S_ISLNK(n->attr->mode()) && !(flags & O_PATH)) return (flags & O_DIRECTORY) ? ENOTDIR : ELOOP;
        out = std::move(n);
        return check_open(out, flags, slash);
      }
      // O_CREAT: look the name up; if it is missing, make the node without the directory lock (no
      // allocation or store call under it) and insert it unless another open won the race.
      if (slash) return EISDIR;  // O_CREAT and a trailing '/': EISDIR before anything (as Linux)
      node_ptr n;
      {
        shared_guard<dir_mutex> g(parent->dir->mu);
        if (parent->dir->dead) return ENOENT;
        n = lookup_locked(*parent, name);
      }
      if (!n) {
        if (refuse_create) return refuse_create;
        if (int e = may_create(c, *parent)) return e;
        node_ptr fresh = make_child(c, *parent, S_IFREG | (mode & 07777), 0);
        exclusive_guard<dir_mutex> g(parent->dir->mu);
        if (parent->dir->dead) return ENOENT;
        n = lookup_locked(*parent, name);
        if (!n) {
          insert_locked(*parent, name, fresh);
          created = true;
          out = std::move(fresh);
          return 0;
        }
      }
      if (flags & O_EXCL) return EEXIST;
      if (S_ISLNK(n->attr->mode())) {
        if (flags & O_NOFOLLOW) return ELOOP;
        if (int e = follow_link(*n, w, cur, false)) return e;
        base = parent;
        continue;  // O_CREAT through the link: its target is created if missing
      }
      if (S_ISDIR(n->attr->mode())) return EISDIR;
      out = std::move(n);
      return check_open(out, flags, slash);
    }
  }

  /// mkdir(2): mode & 01777 (plus S_ISGID inherited from a setgid parent). Returns 0 or an errno.
  int mkdir(const client_info& c, std::string_view path, mode_t mode) {
    return create(c, path, S_IFDIR | (mode & 01777), 0, {});
  }
  /// mknod(2): S_IFREG (or no type), S_IFIFO, S_IFSOCK; S_IFCHR/S_IFBLK need uid 0 (EPERM); S_IFDIR
  /// is EPERM and any other type EINVAL (as Linux).
  int mknod(const client_info& c, std::string_view path, mode_t mode, std::uint64_t dev) {
    mode_t type = mode & S_IFMT;
    if (type == 0) type = S_IFREG;
    if (type == S_IFDIR) return EPERM;
    if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK) return EINVAL;
    return create(c, path, type | (mode & 07777), dev, {});
  }
  /// symlink(2): `path` becomes a link to `target` (1..4095 bytes). Returns 0 or an errno.
  int symlink(const client_info& c, std::string_view path, std::string_view target) {
    if (target.empty()) return ENOENT;
    if (target.size() >= 4096) return ENAMETOOLONG;
    return create(c, path, S_IFLNK | 0777, 0, target);
  }

  /// unlink(2) (EISDIR for a directory) and rmdir(2) (ENOTDIR for a non-directory, ENOTEMPTY, EBUSY
  /// for the root, EINVAL for a final "."). Returns 0 or an errno.
  int unlink(const client_info& c, std::string_view path) { return remove(c, path, false); }
  int rmdir(const client_info& c, std::string_view path) { return remove(c, path, true); }

  /// link(2): `to` becomes another name of the node of `from` (not followed). EPERM for a directory,
  /// EEXIST if `to` exists, EMLINK at max_links. Non-root callers must own the node or may read and
  /// write it (Linux's protected_hardlinks). Returns 0 or an errno.
  int link(const client_info& c, std::string_view from, std::string_view to) {
    walk_state w;
    node_ptr src;
    if (int e = resolve_at(c, root_, from, false, src, w)) return e;
    node_ptr parent;
    std::string name;
    bool slash = false;
    walk_state w2;
    if (int e = resolve_parent(c, root_, to, parent, name, slash, w2)) return e;
    if (name.empty()) return EEXIST;
    {
      shared_guard<dir_mutex> g(parent->dir->mu);
      if (parent->dir->names.count(name)) return EEXIST;
    }
    if (S_ISDIR(src->attr->mode())) return EPERM;
    if (slash) return ENOENT;
    if (c.uid != 0 && c.uid != src->attr->uid()) {  // protected_hardlinks: a file the caller could use anyway
      const mode_t m = src->attr->mode();
      if (!S_ISREG(m) || (m & S_ISUID) || (m & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) ||
          !iofunc_check_access(m, src->attr->uid(), src->attr->gid(), c, access_read | access_write))
        return EPERM;
    }
    exclusive_guard<dir_mutex> g(parent->dir->mu);
    if (parent->dir->dead) return ENOENT;
    if (parent->dir->names.count(name)) return EEXIST;
    if (int e = may_create(c, *parent)) return e;
    if (src->attr->nlink() == 0) return ENOENT;  // unlinked meanwhile (Linux: ENOENT for an orphan)
    if (src->attr->nlink() >= max_links) return EMLINK;
    src->attr->add_links(1);
    insert_locked(*parent, name, src);
    return 0;
  }

  /// renameat2(2) with flags 0, RENAME_NOREPLACE or RENAME_EXCHANGE (see the header comment for the
  /// locks). Returns 0 or an errno.
  int rename(const client_info& c, std::string_view from, std::string_view to, unsigned flags) {
    if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;
    if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return EINVAL;
    node_ptr op, np;
    std::string on, nn;
    bool oslash = false, nslash = false;
    walk_state w1, w2;
    if (int e = resolve_parent(c, root_, from, op, on, oslash, w1)) return e;
    if (int e = resolve_parent(c, root_, to, np, nn, nslash, w2)) return e;
    if (on.empty()) return EBUSY;
    if (nn.empty()) return (flags & RENAME_NOREPLACE) ? EEXIST : EBUSY;
    std::unique_lock<rename_mutex> rl(rename_mu_, std::defer_lock);
    if (op != np) rl.lock();
    for (;;) {
      // Look the names up, then lock the parents (and a directory the rename would replace) together.
      node_ptr src, dst;
      {
        shared_guard<dir_mutex> g(op->dir->mu);
        auto it = op->dir->names.find(on);
        if (it != op->dir->names.end()) src = it->second.n;
      }
      {
        shared_guard<dir_mutex> g(np->dir->mu);
        auto it = np->dir->names.find(nn);
        if (it != np->dir->names.end()) dst = it->second.n;
      }
      // Also locked: a directory that is replaced (marked dead) or changes parents (its parent pointer).
      dir_state* sd = src && src->dir && op != np ? src->dir.get() : nullptr;
      dir_state* dd = dst && dst->dir && (!(flags & RENAME_EXCHANGE) || op != np) ? dst->dir.get() : nullptr;
      dir_set locks{op->dir.get(), np->dir.get(), sd, dd};
      locks.lock();
      const bool same = lookup_locked(*op, on) == src && lookup_locked(*np, nn) == dst;
      if (!same) {
        locks.unlock();
        continue;
      }
      const int e = rename_locked(c, op, on, oslash, src, np, nn, nslash, dst, flags);
      locks.unlock();
      return e;
    }
  }

  /// readdir: entries of directory node `d` after position `pos` ("." and ".." first), at most `max`.
  /// ENOTDIR for a non-directory; a removed directory has no entries. Returns 0 or an errno.
  int readdir(const node& d, std::uint64_t pos, std::size_t max, std::vector<dirent_out>& out) const {
    if (!d.dir) return ENOTDIR;
    shared_guard<dir_mutex> g(d.dir->mu);
    if (d.dir->dead) return 0;
    if (pos < 1 && out.size() < max) out.push_back({d.attr->ino(), 1, DT_DIR, "."});
    if (pos < 2 && out.size() < max) out.push_back({d.dir->parent_ino.load(std::memory_order_relaxed), 2, DT_DIR, ".."});
    for (auto it = d.dir->order.upper_bound(std::max<std::uint64_t>(pos, 2)); it != d.dir->order.end() && out.size() < max; ++it) {
      const node_ptr& n = d.dir->names.find(it->second)->second.n;
      out.push_back({n->attr->ino(), it->first, dt_type(n->attr->mode()), it->second});
    }
    return 0;
  }

  /// The names in the root directory (tests and examples).
  [[nodiscard]] std::vector<std::string> root_names() const {
    shared_guard<dir_mutex> g(root_->dir->mu);
    std::vector<std::string> out;
    for (const auto& e : root_->dir->names) out.push_back(e.first);
    return out;
  }

  /// Effects: creates a regular file `path` (mode & 07777) owned by uid/gid without permission checks.
  /// Returns 0, EEXIST, or the errno of the walk.
  int create_file(std::string_view path, mode_t mode, std::uint32_t uid, std::uint32_t gid) {
    return create(client_info{0, uid, gid}, path, S_IFREG | (mode & 07777), 0, {}, true);
  }

  static unsigned char dt_type(mode_t m) noexcept {
    switch (m & S_IFMT) {
      case S_IFREG: return DT_REG;
      case S_IFDIR: return DT_DIR;
      case S_IFLNK: return DT_LNK;
      case S_IFIFO: return DT_FIFO;
      case S_IFSOCK: return DT_SOCK;
      case S_IFCHR: return DT_CHR;
      case S_IFBLK: return DT_BLK;
      default: return DT_UNKNOWN;
    }
  }

 private:
  using rename_mutex = ranked_mutex<rank::ramfs_rename>;

  struct walk_state {
    int links = 0;  // symlinks followed in this resolution
  };

  // Up to four distinct directories, locked exclusively together in the global order (lock_in_order:
  // every set of same-rank directory locks is taken in one order, so two renames cannot deadlock).
  // lock()/unlock() are outside Clang's thread-safety analysis: it cannot follow a lock set whose size
  // is known only at run time; the faultsafe checker still records and checks every acquisition.
  class dir_set {
   public:
    dir_set(dir_state* a, dir_state* b, dir_state* c, dir_state* d = nullptr) {
      for (dir_state* x : {a, b, c, d})
        if (x != nullptr && std::find(d_, d_ + n_, x) == d_ + n_) d_[n_++] = x;
    }
    void lock() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
      if (n_ == 1) d_[0]->mu.lock();
      else if (n_ == 2) lock_in_order(d_[0]->mu, d_[1]->mu);
      else if (n_ == 3) lock_in_order(d_[0]->mu, d_[1]->mu, d_[2]->mu);
      else lock_in_order(d_[0]->mu, d_[1]->mu, d_[2]->mu, d_[3]->mu);
    }
    void unlock() FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS {
      for (std::size_t i = n_; i-- > 0;) d_[i]->mu.unlock();
    }

   private:
    dir_state* d_[4]{};
    std::size_t n_ = 0;
  };

  node_ptr make_node(mode_t mode, std::uint32_t uid, std::uint32_t gid) const {
    auto n = std::make_shared<node>();
    attr_options o = file_opts_;
    if (!S_ISREG(mode)) {  // directories, symlinks (their target), special nodes: small, and kept out
      o.max_size = 4096;   // of the files' store (its statistics count files); the process's default
      o.store = nullptr;   // store holds them
    }
    n->attr = std::make_shared<iofunc_attr>(mode, uid, gid, o);
    if (S_ISDIR(mode)) n->dir = std::make_unique<dir_state>();
    n->self = n;
    return n;
  }

  // A new child of `parent` (whose lock the caller holds): the caller's uid, the directory's group and
  // S_ISGID for a directory if the parent is setgid (else the caller's gid).
  node_ptr make_child(const client_info& c, node& parent, mode_t mode, std::uint64_t dev) const {
    const mode_t pm = parent.attr->mode();
    std::uint32_t gid = c.gid;
    if (pm & S_ISGID) {
      gid = parent.attr->gid();
      if (S_ISDIR(mode)) mode |= S_ISGID;
    }
    node_ptr n = make_node(mode, c.uid, gid);
    if (dev != 0) n->attr->set_rdev(dev);
    if (n->dir) {
      n->attr->add_dir_bytes(2 * iofunc_attr::dir_entry_bytes);  // "." and ".."
      n->attr->add_links(1);  // "."
      n->dir->parent = parent.self;
      n->dir->parent_ino.store(parent.attr->ino(), std::memory_order_relaxed);
    }
    return n;
  }

  // Requires: parent's lock held exclusively. Inserts name -> n at the next position.
  static void insert_locked(node& parent, const std::string& name, const node_ptr& n) {
    dir_state& d = *parent.dir;
    const std::uint64_t pos = d.next_pos++;
    d.names.emplace(name, dir_state::entry{n, pos});
    d.order.emplace(pos, name);
    parent.attr->add_dir_bytes(iofunc_attr::dir_entry_bytes);
    if (n->dir) parent.attr->add_links(1);  // the child's ".."
    parent.attr->touch(false, true);
  }
  // Requires: parent's lock held exclusively. Removes `name` (and, for a directory, its "..").
  static void erase_locked(node& parent, const std::string& name) {
    dir_state& d = *parent.dir;
    auto it = d.names.find(name);
    if (it->second.n->dir) parent.attr->add_links(-1);
    d.order.erase(it->second.pos);
    d.names.erase(it);
    parent.attr->add_dir_bytes(-iofunc_attr::dir_entry_bytes);
    parent.attr->touch(false, true);
  }
  static node_ptr lookup_locked(const node& parent, std::string_view name) {
    auto it = parent.dir->names.find(name);
    return it == parent.dir->names.end() ? nullptr : it->second.n;
  }

  // Creating a name in `parent` needs write and search permission (EACCES).
  static int may_create(const client_info& c, node& parent) {
    iofunc_attr& a = *parent.attr;
    return iofunc_check_access(a.mode(), a.uid(), a.gid(), c, access_write | access_exec) ? 0 : EACCES;
  }
  // Removing (or renaming away) `victim` from `parent`: write and search permission, and in a sticky
  // directory the owner of the victim or of the directory (EPERM).
  static int may_delete(const client_info& c, node& parent, node& victim) {
    if (int e = may_create(c, parent)) return e;
    if ((parent.attr->mode() & S_ISVTX) && c.uid != 0 && c.uid != parent.attr->uid() && c.uid != victim.attr->uid())
      return EPERM;
    return 0;
  }

  static int check_open(const node_ptr& n, int flags, bool slash) {
    const mode_t m = n->attr->mode();
    if ((flags & O_DIRECTORY) && !S_ISDIR(m)) return ENOTDIR;
    if (slash && !S_ISDIR(m)) return ENOTDIR;
    if (S_ISSOCK(m) && !(flags & O_PATH)) return ENXIO;
    if ((S_ISCHR(m) || S_ISBLK(m)) && !(flags & O_PATH)) return ENXIO;  // no drivers behind device nodes
    return 0;
  }

  // Looks `name` up in directory `parent` (search permission checked by the walk). ENOENT if missing.
  static int lookup(const client_info&, node& parent, std::string_view name, node_ptr& out) {
    shared_guard<dir_mutex> g(parent.dir->mu);
    auto it = parent.dir->names.find(name);
    if (it == parent.dir->names.end()) return ENOENT;
    out = it->second.n;
    return 0;
  }

  // A symlink's target replaces `rest`'s already-walked part: the new path to walk from the link's
  // directory. ELOOP past max_symlinks.
  // `slash`: the link was named with a trailing '/', which then applies to its target.
  static int follow_link(node& link, walk_state& w, std::string& path, bool slash) {
    if (++w.links > max_symlinks) return ELOOP;
    iofunc_attr& a = *link.attr;
    range_guard g(a.data_lock, 0, to_end, lock_mode::shared);
    path.assign(reinterpret_cast<const char*>(a.data()), static_cast<std::size_t>(a.size()));
    if (slash) path += '/';
    return 0;
  }

  // Walks every component of `path` but the last from `base` (an absolute path: from the root).
  // Sets `parent` (a directory), `name` (the last component: "" for the root or a final "."/"..",
  // which then stand for `parent` itself) and `slash` (the path ends in '/').
  int resolve_parent(const client_info& c, node_ptr base, std::string_view path, node_ptr& parent, std::string& name,
                     bool& slash, walk_state& w) const {
    if (!path.empty() && path.front() == '/') base = root_;
    std::string held;  // a symlink target being walked (keeps its bytes alive)
    std::vector<std::string> pending;  // the rest of the path after each symlink, innermost last
    node_ptr dir = std::move(base);
    std::string_view rest = path;
    slash = false;
    for (;;) {
      while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
      if (rest.empty()) {
        if (!pending.empty()) {
          held = std::move(pending.back());
          pending.pop_back();
          rest = held;
          continue;
        }
        parent = std::move(dir);
        name.clear();
        return 0;
      }
      const std::size_t cut = rest.find('/');
      std::string_view comp = rest.substr(0, cut);
      rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut);
      if (comp.size() > name_max) return ENAMETOOLONG;
      if (!S_ISDIR(dir->attr->mode())) return ENOTDIR;
      iofunc_attr& da = *dir->attr;
      if (!iofunc_check_access(da.mode(), da.uid(), da.gid(), c, access_exec)) return EACCES;
      std::string_view after = rest;
      while (!after.empty() && after.front() == '/') after.remove_prefix(1);
      const bool last = after.empty() && pending.empty();
      if (last) {
        slash = !rest.empty();
        parent = std::move(dir);
        if (comp == "." || comp == "..") {
          if (comp == "..") parent = parent_of(*parent);
          name.clear();
        } else {
          name.assign(comp);
        }
        return 0;
      }
      if (comp == ".") continue;
      if (comp == "..") {
        dir = parent_of(*dir);
        continue;
      }
      node_ptr n;
      if (int e = lookup(c, *dir, comp, n)) return e;
      if (S_ISLNK(n->attr->mode())) {
        std::string target;
        if (int e = follow_link(*n, w, target, false)) return e;
        pending.emplace_back(rest);  // walk the target, then the rest
        if (!target.empty() && target.front() == '/') dir = root_;
        held = std::move(target);
        rest = held;
        // `rest` views `held`; the copy in `pending` keeps the remainder
        continue;
      }
      if (!S_ISDIR(n->attr->mode())) return ENOTDIR;
      dir = std::move(n);
    }
  }

  // The node of `path` from `base`, following a final symlink when `follow`.
  int resolve_at(const client_info& c, node_ptr base, std::string_view path, bool follow, node_ptr& out, walk_state& w) const {
    std::string cur(path), name;
    bool slash = false;
    for (node_ptr dir;; base = std::move(dir)) {  // each turn: one symlink followed from `dir`
      if (int e = resolve_parent(c, base, cur, dir, name, slash, w)) return e;
      if (name.empty()) {
        out = std::move(dir);
        return 0;
      }
      node_ptr n;
      if (int e = lookup(c, *dir, name, n)) return e;
      if (!S_ISLNK(n->attr->mode()) || !(follow || slash)) {
        if (slash && !S_ISDIR(n->attr->mode())) return ENOTDIR;
        out = std::move(n);
        return 0;
      }
      if (int e = follow_link(*n, w, cur, slash)) return e;
    }
  }

  // The parent directory of directory `d` (the root's is the root). Only a live directory is asked.
  node_ptr parent_of(node& d) const {
    if (&d == root_.get()) return root_;
    // d's lock guards its parent pointer (a rename moving d holds it).
    shared_guard<dir_mutex> g(d.dir->mu);
    node_ptr p = d.dir->parent.lock();
    return p ? p : root_;
  }

  // mkdir, mknod, symlink, create_file: a new node named by the last component of `path`.
  int create(const client_info& c, std::string_view path, mode_t mode, std::uint64_t dev, std::string_view target,
             bool unchecked = false) {
    node_ptr parent;
    std::string name;
    bool slash = false;
    walk_state w;
    if (int e = resolve_parent(unchecked ? client_info{0, 0, 0} : c, root_, path, parent, name, slash, w)) return e;
    if (name.empty()) return EEXIST;
    node_ptr n;
    {
      exclusive_guard<dir_mutex> g(parent->dir->mu);
      if (parent->dir->dead) return ENOENT;
      if (parent->dir->names.count(name)) return EEXIST;
      if (slash && !S_ISDIR(mode)) return ENOENT;
      if (!unchecked)
        if (int e = may_create(c, *parent)) return e;
      if ((S_ISCHR(mode) || S_ISBLK(mode)) && c.uid != 0) return EPERM;  // after EEXIST and EACCES, as Linux
    }
    // The node is made (and a symlink's target written) without the directory lock: no data range
    // under a directory lock. Then inserted if the name is still free.
    n = make_child(c, *parent, mode, dev);
    if (!target.empty()) {
      iofunc_attr& a = *n->attr;
      range_guard g(a.data_lock, 0, to_end, lock_mode::exclusive);
      if (auto ec = a.grow_to(target.size())) return ec.value();
      std::memcpy(a.data(), target.data(), target.size());
    }
    exclusive_guard<dir_mutex> g(parent->dir->mu);
    if (parent->dir->dead) return ENOENT;
    if (parent->dir->names.count(name)) return EEXIST;
    insert_locked(*parent, name, n);
    return 0;
  }

  int remove(const client_info& c, std::string_view path, bool dir) {
    node_ptr parent;
    std::string name;
    bool slash = false;
    walk_state w;
    if (int e = resolve_parent(c, root_, path, parent, name, slash, w)) return e;
    if (name.empty()) {
      if (!dir) return EISDIR;
      // rmdir of the root, ".": EBUSY for the root, EINVAL for a final ".", ENOTEMPTY for ".."
      const std::string_view p = path;
      const std::size_t end = p.find_last_not_of('/');
      const std::string_view last = end == std::string_view::npos ? std::string_view() : p.substr(0, end + 1);
      const std::string_view comp = last.substr(last.find_last_of('/') == std::string_view::npos ? 0 : last.find_last_of('/') + 1);
      if (comp == ".") return EINVAL;
      if (comp == "..") return ENOTEMPTY;
      return EBUSY;
    }
    for (;;) {
      node_ptr victim;
      if (int e = lookup(c, *parent, name, victim)) return e;
      const bool is_dir = S_ISDIR(victim->attr->mode());
      if (!dir && slash) return is_dir ? EISDIR : ENOTDIR;
      dir_set locks{parent->dir.get(), is_dir ? victim->dir.get() : nullptr, nullptr};
      locks.lock();
      if (lookup_locked(*parent, name) != victim) {
        locks.unlock();
        continue;
      }
      // As the kernel's may_delete: permissions and the sticky bit, then the type.
      int e = may_delete(c, *parent, *victim);
      if (!e && dir && !is_dir) e = ENOTDIR;
      if (!e && !dir && is_dir) e = EISDIR;
      if (!e && is_dir && !victim->dir->names.empty()) e = ENOTEMPTY;
      if (!e) {
        erase_locked(*parent, name);
        if (is_dir) {
          victim->dir->dead = true;
          victim->attr->add_links(-2);  // "." and its name
        } else {
          victim->attr->add_links(-1);
        }
      }
      locks.unlock();
      return e;
    }
  }

  // Requires: the directories op, np (and a replaced directory dst) held exclusively; the rename mutex
  // if op != np; src/dst are the current entries (nullptr: none).
  int rename_locked(const client_info& c, const node_ptr& op, const std::string& on, bool oslash, const node_ptr& src,
                    const node_ptr& np, const std::string& nn, bool nslash, const node_ptr& dst, unsigned flags) {
    // Checks in the kernel's order (do_renameat2, then vfs_rename).
    if (!src || op->dir->dead || np->dir->dead) return ENOENT;
    if ((flags & RENAME_NOREPLACE) && dst) return EEXIST;
    const bool sdir = S_ISDIR(src->attr->mode());
    const bool ddir = dst && S_ISDIR(dst->attr->mode());
    if (flags & RENAME_EXCHANGE) {
      if (!dst) return ENOENT;
      if (!ddir && nslash) return ENOTDIR;
    }
    if (!sdir && (oslash || (!(flags & RENAME_EXCHANGE) && nslash))) return ENOTDIR;
    if (op != np) {  // a directory cannot move below itself
      if (is_ancestor(*src, *np)) return EINVAL;
      if (dst && is_ancestor(*dst, *op)) return (flags & RENAME_EXCHANGE) ? EINVAL : ENOTEMPTY;
    }
    if (src == dst) return 0;  // two names of one node: nothing to do (POSIX)
    if (int e = may_delete(c, *op, *src)) return e;
    if (!dst) {
      if (int e = may_create(c, *np)) return e;
    } else {
      if (int e = may_delete(c, *np, *dst)) return e;
      if (!(flags & RENAME_EXCHANGE)) {
        if (sdir && !ddir) return ENOTDIR;
        if (!sdir && ddir) return EISDIR;
      }
    }
    // A directory moving to another parent must be writable (non-root): its ".." changes.
    if (op != np) {
      if (sdir && !iofunc_check_access(src->attr->mode(), src->attr->uid(), src->attr->gid(), c, access_write)) return EACCES;
      if ((flags & RENAME_EXCHANGE) && ddir &&
          !iofunc_check_access(dst->attr->mode(), dst->attr->uid(), dst->attr->gid(), c, access_write))
        return EACCES;
    }
    if (!(flags & RENAME_EXCHANGE) && ddir && !dst->dir->names.empty()) return ENOTEMPTY;
    if (flags & RENAME_EXCHANGE) {
      auto& oe = op->dir->names.find(on)->second;
      auto& ne = np->dir->names.find(nn)->second;
      std::swap(oe.n, ne.n);
      if (op != np && sdir != ddir) {  // a directory changes parents: the ".." counts move
        op->attr->add_links(sdir ? -1 : 1);
        np->attr->add_links(sdir ? 1 : -1);
      }
      if (op != np) {
        reparent(*src, *np);
        reparent(*dst, *op);
      }
      op->attr->touch(false, true);
      np->attr->touch(false, true);
      src->attr->changed();
      dst->attr->changed();
      return 0;
    }
    if (dst) {
      erase_locked(*np, nn);
      if (ddir) {
        dst->dir->dead = true;
        dst->attr->add_links(-2);
      } else {
        dst->attr->add_links(-1);
      }
    }
    erase_locked(*op, on);
    insert_locked(*np, nn, src);
    if (op != np) reparent(*src, *np);
    src->attr->changed();
    return 0;
  }

  // Requires: the rename mutex (the parent chain is stable). Whether `a` is `d` or one of its ancestors.
  bool is_ancestor(const node& a, const node& d) const {
    node_ptr hold;  // keeps the current step alive
    for (const node* p = &d;;) {
      if (p == &a) return true;
      if (p == root_.get()) return false;
      hold = p->dir->parent.lock();
      if (!hold) return false;
      p = hold.get();
    }
  }
  // Requires: the rename mutex and n's directory lock (exclusive).
  static void reparent(node& n, node& parent) {
    if (!n.dir) return;
    n.dir->parent = parent.self;
    n.dir->parent_ino.store(parent.attr->ino(), std::memory_order_relaxed);
  }

  attr_options file_opts_;
  rename_mutex rename_mu_{"ramfs rename"};
  node_ptr root_;
};

}  // namespace faultsafe
