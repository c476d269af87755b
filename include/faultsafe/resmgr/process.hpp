// faultsafe/resmgr/process.hpp: a logical client process: credentials, an fd table, and POSIX-like
// file calls that become messages to the owning server.
//
// Defines `result<T>` (a value or a std::error_code; C++20 has no std::expected), `result<void>` and
// `process`.
//
// Several `process` objects live in one OS process (Bob, nfs, io_pkt); each has its own pid, uid/gid
// and fd table. The servers may be in this OS process or in others: a namespace prefix attached with
// mount_remote() (resmgr/remote.hpp) resolves to a channel whose sends cross a Unix socket and a
// shared-memory channel (ipc/socket_transport.hpp); every call below works the same on either and
// returns the same results (the remote server takes the uid/gid from the kernel, not from creds());
// mmap() of a remote server's file is served by that server's pager (resmgr/remote.hpp).
// A server is a process too: its handlers may use a `process` of their own to open and read another
// server (nfs reads io_pkt).
//
// Every call resolves its fd locally (EBADF for a bad or closed fd), validates its arguments (EFAULT for
// a null buffer with a non-zero length, EINVAL for a negative offset or bad whence, EOVERFLOW for an
// offset + length that overflows off_t), then sends one message to the server and blocks until the
// reply. The server's read handler copies straight into the caller's buffer, its write handler reads
// straight from it: a fault on the buffer is taken by the *server* thread. Errors from the server
// (EACCES, EBADF for writing an O_RDONLY open, ...) and from the channel (ESHUTDOWN when the server
// stopped, ENXIO when it was never started, ETIMEDOUT when io_timeout passed) come back as the
// result's error.
//
// Thread-safety: every member may be called from any thread. Concurrent read()/write() on one fd use
// the fd's shared offset without serialising against each other (as on QNX without O_SYNC locking): the
// transfers are each atomic against the file, but two concurrent read()s may see the same offset; use
// pread()/pwrite() from several threads. Lock order: the fd table mutex is a leaf held only by open()
// and close() to change an entry, never across a send; I/O calls take no lock at all.
// The fd table (resmgr/detail/pinned_table.hpp): an I/O call pins its fd's slot with one atomic increment and
// unpins it after the reply with one decrement (no mutex, no shared_ptr copy, no allocation). The pin
// keeps the entry (the server's channel and handle) alive for the call even if another thread closes
// the fd meanwhile: close() makes the fd EBADF for every call that starts after it (and for open()
// it is free again) at once, and the entry's channel reference goes with the last pin. Deviation from
// POSIX's "lowest free fd": a closed fd that a call started before the close still uses is skipped by
// open() until that call returns (Linux would reuse the number while the old call holds the file).
// Lifetime: the servers may die before the process: their channels are shared, so a send then fails with
// ESHUTDOWN. A process registers itself under its pid for its lifetime (detail::client_registry), so a
// server can ask the sending process's address space about a client buffer (resmgr/direct_copy.hpp).
// With set_serve_on_calling_thread(true), a message to a server of this OS process is served on the
// calling thread instead (server::serve_here), with the same results.
// Sends go through server::route_for (the pool self-deadlock guard, resmgr/server.hpp): one relaxed
// load unless some server's pool has been full.
// Memory ordering: relaxed settings (max fds, I/O timeout, serving on the calling thread: a call sees the old or the new value),
// relaxed pid counter, and the relaxed "memory made" hint (its readers learn of a mapping through
// whatever gave them the pointer into it, which happens after the store); the fd table's own pairs
// are numbered in resmgr/detail/pinned_table.hpp.
#pragma once
#ifndef FAULTSAFE_RESMGR_PROCESS_HPP  // also guarded classically: resmgr/process_memory.hpp and this header
#define FAULTSAFE_RESMGR_PROCESS_HPP  // include each other (see the end of this file)

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "client_registry.hpp"
#include "../order/ranked_mutex.hpp"
#include "detail/pinned_table.hpp"
#include "server.hpp"

namespace faultsafe {

class process_memory;  // resmgr/process_memory.hpp
struct aspace_options;  // vm/aspace.hpp
struct pager_options;   // vm/pager.hpp

/// A value or an error (every call of `process` returns one; result<void> below for calls without a
/// value). `ok()`/`operator bool`: holds a value. value() throws std::system_error when it
/// holds an error. Thread-safety: a plain value type.
template <class T>
class result {
 public:
  result(T v) : value_(std::move(v)) {}  // NOLINT: implicit on purpose (return v;)
  result(std::error_code ec) : error_(ec) {}  // NOLINT
  [[nodiscard]] bool ok() const noexcept { return !error_; }
  [[nodiscard]] explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] const std::error_code& error() const noexcept { return error_; }
  [[nodiscard]] const T& value() const {
    if (error_) throw std::system_error(error_);
    return value_;
  }
  [[nodiscard]] T value_or(T other) const { return error_ ? other : value_; }
  [[nodiscard]] const T& operator*() const { return value(); }

 private:
  T value_{};
  std::error_code error_;
};

/// The outcome of a call that returns no value (close, ftruncate, munmap, mprotect, msync, mkdir,
/// unlink, rename, chmod, fsync, fallocate, access, truncate, ...): ok() is true on success, error()
/// says why not; value() throws std::system_error on an error. A default or an empty error_code is
/// success. No operator bool, on purpose: these calls returned std::error_code (true on FAILURE) before, and `if (auto ec = p.close(fd))` must not compile with the opposite
/// meaning; say ok() or error(). Thread-safety: a plain value type.
template <>
class result<void> {
 public:
  result() noexcept = default;
  result(std::error_code ec) noexcept : error_(ec) {}  // NOLINT: implicit on purpose (return ec;)
  [[nodiscard]] bool ok() const noexcept { return !error_; }
  explicit operator bool() const = delete;  // see above: ok() or error()
  [[nodiscard]] const std::error_code& error() const noexcept { return error_; }
  void value() const {
    if (error_) throw std::system_error(error_);
  }

 private:
  std::error_code error_;
};

struct credentials {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  client_groups groups{};  ///< supplementary groups
};

class process {
 public:
  /// Effects: a new logical process with a fresh pid. `ns` (nullptr = global) resolves its paths.
  explicit process(std::string name, credentials creds = {}, path_namespace* ns = nullptr)
      : name_(std::move(name)), creds_(creds), ns_(ns ? ns : &path_namespace::global()), pid_(next_pid()) {
    detail::client_registry::instance().add(pid_, this);  // servers may ask about its memory (direct copy)
  }
  /// Effects: closes every open fd (best effort; errors ignored).
  ~process() {
    detail::client_registry::instance().remove(pid_);
    const std::size_t n = std::min<std::size_t>(fds_.capacity(), std::numeric_limits<int>::max());
    for (std::size_t i = 0; i < n; ++i)
      if (pin_fd(static_cast<int>(i))) (void)close(static_cast<int>(i));
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint64_t pid() const noexcept { return pid_; }
  [[nodiscard]] credentials creds() const noexcept { return creds_; }
  /// The identity this thread's calls on this process carry: the process's credentials, or those of an
  /// acting_as scope of this thread on this process.
  [[nodiscard]] client_info client() const noexcept {
    const acting_state& a = acting();
    const credentials& c = a.proc == this ? a.creds : creds_;
    return {pid_, c.uid, c.gid, c.groups};
  }

  /// While it lives, every call this thread makes through `p` carries `c` instead of p's credentials
  /// (the pid, fd table and timeouts stay p's). For a gateway forwarding many users' requests through
  /// one process (the FUSE bridge, resmgr/fuse_bridge.hpp): the server checks each request with the
  /// user's identity. Requires: scopes of one thread nest (the innermost wins; its end restores the
  /// outer). Thread-safety: thread-local; other threads' calls on `p` are not affected.
  class acting_as {
   public:
    acting_as(const process& p, credentials c) noexcept : saved_(acting()) { acting() = {&p, c}; }
    ~acting_as() { acting() = saved_; }
    acting_as(const acting_as&) = delete;
    acting_as& operator=(const acting_as&) = delete;

   private:
    struct saved_state {
      const process* proc;
      credentials creds;
    } saved_;
    friend class process;
  };

  /// At most `n` fds open at once (default 1024, like RLIMIT_NOFILE); open() beyond fails with EMFILE.
  void set_max_fds(std::size_t n) noexcept { max_fds_.store(n, std::memory_order_relaxed); }

  /// Paths longer than `n` bytes fail with ENAMETOOLONG (default io_path_max, PATH_MAX; at most
  /// io_wire_path_max, what a server accepts). A client that names files by their full path below a
  /// deep working directory of its own callers (the FUSE bridge) raises it.
  void set_max_path(std::size_t n) noexcept { max_path_.store(std::min(n, io_wire_path_max), std::memory_order_relaxed); }

  /// Every send from this process gives up after `t` (0 = wait for ever, the default). Not for
  /// messages served on the calling thread (set_serve_on_calling_thread): the caller is the server.
  void set_io_timeout(std::chrono::nanoseconds t) noexcept { timeout_ns_.store(t.count(), std::memory_order_relaxed); }

  /// true: a message to a server of this OS process is served on the calling thread (server::serve_here:
  /// the server's own dispatch, handlers, locks and guard, on behalf of the caller's activity), not
  /// handed to a pool thread; messages to other channels (a server in another process) are sent as
  /// before. The results are the same; the cost is a thread hand-off less. For a gateway whose threads
  /// only forward requests (the FUSE bridge's workers): its threads then bound how many of its
  /// messages are served at once, not the server's pool (resmgr/thread_pool.hpp). Requires, while on:
  /// the calling threads hold no faultsafe lock (the handlers take theirs on that thread). Default false.
  void set_serve_on_calling_thread(bool on) noexcept { serve_here_.store(on, std::memory_order_relaxed); }

  // ---- files ----------------------------------------------------------------------------------------

  /// open(2): resolves `path` in the namespace (ENOENT if no server owns it) and asks the server.
  /// Returns the lowest free fd. Errors: ENOENT, EACCES, EEXIST, EINVAL, ENAMETOOLONG (past set_max_path()), EMFILE
  /// (set_max_fds() fds open), and what the server replies (EMFILE: its per-client limit).
  [[nodiscard]] result<int> open(std::string_view path, int flags, mode_t mode = 0) { return open_impl(path, flags, mode, nullptr); }

  /// open(2), then fstat(2) of the new fd into `st`: one message when the server's open replies with
  /// the attributes (msg::open's optional reply header; resmgr/server.hpp sends them), else an fstat
  /// message follows. Errors: as open(); if the fstat fails, the fd is closed and its error returned.
  [[nodiscard]] result<int> open(std::string_view path, int flags, mode_t mode, struct ::stat& st) {
    bool have = false;
    result<int> fd = open_impl(path, flags, mode, &st, &have);
    if (!fd || have) return fd;
    result<struct ::stat> s = fstat(*fd);
    if (!s) {
      (void)close(*fd);
      return s.error();
    }
    st = *s;
    return fd;
  }

  /// close(2): the fd is free afterwards even if the server failed (ESHUTDOWN...). EBADF if not open.
  [[nodiscard]] result<void> close(int fd) {
    fd_entry e;
    {
      exclusive_guard g(mu_);  // keeps paths_ in step with the table
      fd_pin p = pin_fd(fd);
      if (!p || !p.close()) return std::make_error_code(std::errc::bad_file_descriptor);
      e = *p;  // our own reference: the slot's goes with its last pin (maybe p's, right here)
    }
    if (defer_close_if_mapped(e.ch, e.handle)) return {};  // a mapping keeps the open (resmgr/process_memory.hpp)
    io_handle_request q{client(), e.handle};
    return send(*e.ch, {msg_type<msg::close>(), &q, sizeof q}).error;
  }

  /// read(2) at the fd's offset (advancing it). 0 at or past the end. A buffer that turns bad part-way
  /// (an unmapped or PROT_NONE page): the bytes before it, a short count, with the default handlers
  /// (resmgr/iofunc.hpp); EFAULT only if nothing was copied. Likewise pread/readv/preadv.
  [[nodiscard]] result<std::size_t> read(int fd, void* buf, std::size_t n) { return rw(io_msg::read, fd, buf, n, 0, false); }
  /// write(2) at the fd's offset (or the end with O_APPEND), advancing it.
  [[nodiscard]] result<std::size_t> write(int fd, const void* buf, std::size_t n) {
    return rw(io_msg::write, fd, const_cast<void*>(buf), n, 0, false);
  }
  /// pread(2): EINVAL for a negative offset, EOVERFLOW if offset + n overflows.
  [[nodiscard]] result<std::size_t> pread(int fd, void* buf, std::size_t n, off_t off) { return rw(io_msg::read, fd, buf, n, off, true); }
  [[nodiscard]] result<std::size_t> pwrite(int fd, const void* buf, std::size_t n, off_t off) {
    return rw(io_msg::write, fd, const_cast<void*>(buf), n, off, true);
  }

  /// pread(2) by reference, for a caller in this OS process (the FUSE bridge): the server calls
  /// visitor(context, bytes, k) once with the k <= n bytes of the file at `off`, in place (in its store)
  /// and under the lock its read handler holds while copying (io_msg::read_visit), instead of copying
  /// them into a buffer; `bytes` is valid only during the call. Returns k (0 at or past the end: the
  /// visitor is not called). ENOSYS: the server does not serve reads by reference (its read handler is
  /// its own): use pread(). ENOTSUP: a server in another OS process. Otherwise the errors of pread(),
  /// and the visitor's nonzero return. The fd's offset is neither used nor moved.
  [[nodiscard]] result<std::size_t> pread_visit(int fd, std::size_t n, off_t off, read_visitor visitor, void* context) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    if (visitor == nullptr) return std::make_error_code(std::errc::invalid_argument);
    if (off < 0) return std::make_error_code(std::errc::invalid_argument);
    if (static_cast<std::uint64_t>(off) + n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return std::make_error_code(std::errc::value_too_large);
    send_result sr = send_on<msg::read_visit>(e, {.nbytes = n, .offset = off, .visitor = visitor, .context = context});
    if (sr.error) return sr.error;
    return static_cast<std::size_t>(sr.status);
  }

  /// readv(2) / preadv(2): fills the buffers in order, one read message per buffer (each served like
  /// read(), so a buffer that maps the file is served by the direct path), stopping at a short read.
  /// Returns the total; an error only if nothing was read (else the bytes before it, as readv(2) on a
  /// partial transfer). EINVAL for a negative count or more than IOV_MAX buffers. Not atomic against
  /// concurrent readers of the same fd offset (use preadv for that).
  [[nodiscard]] result<std::size_t> readv(int fd, const struct ::iovec* iov, int iovcnt) { return rwv(fd, iov, iovcnt, 0, false); }
  [[nodiscard]] result<std::size_t> preadv(int fd, const struct ::iovec* iov, int iovcnt, off_t off) {
    return rwv(fd, iov, iovcnt, off, true);
  }

  /// lseek(2): SEEK_SET/SEEK_CUR/SEEK_END. EINVAL for another whence or a negative result.
  [[nodiscard]] result<off_t> lseek(int fd, off_t off, int whence) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) return std::make_error_code(std::errc::invalid_argument);
    send_result sr = send_on<msg::lseek>(e, {.offset = static_cast<std::int64_t>(off), .whence = whence});
    if (sr.error) return sr.error;
    return static_cast<off_t>(sr.status);
  }

  /// fstat(2).
  [[nodiscard]] result<struct ::stat> fstat(int fd) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    return reply_of<msg::fstat>(e, {});
  }

  /// ftruncate(2): EINVAL for a negative length; EBADF/EINVAL if not open for writing (server).
  [[nodiscard]] result<void> ftruncate(int fd, off_t length) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    if (length < 0) return std::make_error_code(std::errc::invalid_argument);
    return send_on<msg::ftruncate>(e, {.length = static_cast<std::int64_t>(length)}).error;
  }

  // ---- the rest of the POSIX file surface ----------------------------------------------------------
  // Each call is one message (resmgr/messages.hpp). Path calls resolve `path` in the namespace (ENOENT
  // if no server owns it, ENAMETOOLONG past set_max_path(), 4096 bytes by default); calls naming two paths need both on one server
  // (EXDEV otherwise). What the server answers (ENOENT, EACCES, ENOTDIR, ...) comes back as the error.

  /// stat(2) / lstat(2) by path (fstat's message, addressed by path).
  [[nodiscard]] result<struct ::stat> stat(std::string_view path) { return path_reply<msg::fstat>(path, {}, 0); }
  [[nodiscard]] result<struct ::stat> lstat(std::string_view path) { return path_reply<msg::fstat>(path, {}, io_msg_nofollow); }
  /// mkdir(2).
  [[nodiscard]] result<void> mkdir(std::string_view path, mode_t mode) {
    return send_path<msg::mkdir>(path, {.mode = static_cast<std::uint32_t>(mode)}).error;
  }
  /// mknod(2): S_IFREG, S_IFIFO, S_IFSOCK; S_IFCHR/S_IFBLK need uid 0 (EPERM).
  [[nodiscard]] result<void> mknod(std::string_view path, mode_t mode, dev_t dev) {
    return send_path<msg::mknod>(path, {.mode = static_cast<std::uint32_t>(mode), .dev = static_cast<std::uint64_t>(dev)}).error;
  }
  /// unlink(2), rmdir(2).
  [[nodiscard]] result<void> unlink(std::string_view path) { return send_path<msg::unlink>(path, {}).error; }
  [[nodiscard]] result<void> rmdir(std::string_view path) { return send_path<msg::rmdir>(path, {}).error; }
  /// renameat2(2) (flags: 0, RENAME_NOREPLACE, RENAME_EXCHANGE).
  [[nodiscard]] result<void> rename(std::string_view from, std::string_view to, unsigned flags = 0) {
    return send_path<msg::rename>(from, {.flags = flags}, 0, second_path::resolved, to).error;
  }
  /// link(2): `to` becomes another name of `from`.
  [[nodiscard]] result<void> link(std::string_view from, std::string_view to) {
    return send_path<msg::link>(from, {}, 0, second_path::resolved, to).error;
  }
  /// symlink(2): `linkpath` becomes a symbolic link holding `target` (not resolved).
  [[nodiscard]] result<void> symlink(std::string_view target, std::string_view linkpath) {
    if (target.empty()) return std::make_error_code(std::errc::no_such_file_or_directory);
    return send_path<msg::symlink>(linkpath, {}, 0, second_path::raw, target).error;
  }
  /// readlink(2): the target (truncated to `n` bytes, not NUL-terminated); EINVAL if not a symlink.
  [[nodiscard]] result<std::size_t> readlink(std::string_view path, char* buf, std::size_t n) {
    if (buf == nullptr && n != 0) return std::make_error_code(std::errc::bad_address);
    send_result sr = send_path<msg::readlink>(path, {}, io_msg_nofollow, second_path::none, {}, {.reply_data = buf, .reply_data_len = n});
    if (sr.error) return sr.error;
    return static_cast<std::size_t>(sr.status);
  }
  /// chmod(2) / fchmod(2).
  [[nodiscard]] result<void> chmod(std::string_view path, mode_t mode) {
    return send_path<msg::chmod>(path, {.mode = static_cast<std::uint32_t>(mode)}).error;
  }
  [[nodiscard]] result<void> fchmod(int fd, mode_t mode) { return fd_call<msg::chmod>(fd, {.mode = static_cast<std::uint32_t>(mode)}).error; }
  /// chown(2) / lchown(2) / fchown(2); (uid_t)-1 / (gid_t)-1 leave that id.
  [[nodiscard]] result<void> chown(std::string_view path, uid_t uid, gid_t gid) { return send_path<msg::chown>(path, {.uid = uid, .gid = gid}).error; }
  [[nodiscard]] result<void> lchown(std::string_view path, uid_t uid, gid_t gid) {
    return send_path<msg::chown>(path, {.uid = uid, .gid = gid}, io_msg_nofollow).error;
  }
  [[nodiscard]] result<void> fchown(int fd, uid_t uid, gid_t gid) { return fd_call<msg::chown>(fd, {.uid = uid, .gid = gid}).error; }
  /// utimensat(2) (flags: 0 or AT_SYMLINK_NOFOLLOW; times nullptr: both now) / futimens(2).
  [[nodiscard]] result<void> utimensat(std::string_view path, const struct ::timespec times[2], int flags = 0) {
    return send_path<msg::utimens>(path, utimens_request(times), (flags & AT_SYMLINK_NOFOLLOW) ? io_msg_nofollow : 0).error;
  }
  [[nodiscard]] result<void> futimens(int fd, const struct ::timespec times[2]) { return fd_call<msg::utimens>(fd, utimens_request(times)).error; }
  /// fsync(2) / fdatasync(2).
  [[nodiscard]] result<void> fsync(int fd) { return fd_call<msg::fsync>(fd, {.datasync = 0}).error; }
  [[nodiscard]] result<void> fdatasync(int fd) { return fd_call<msg::fsync>(fd, {.datasync = 1}).error; }
  /// The open file's data version (io_funcs::data_version): > 0 while it names the file's bytes and
  /// size exactly (equal answers: nothing changed in between), 0 when the file can change without a
  /// new one (mapped). ENOSYS from a server that does not count its changes, EBADF if fd is not open.
  [[nodiscard]] result<std::uint64_t> data_version(int fd) {
    const send_result sr = fd_call<msg::data_version>(fd, {});
    if (sr.error) return sr.error;
    return static_cast<std::uint64_t>(sr.status);
  }
  /// fallocate(2): mode 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE. EINVAL for
  /// a negative offset or a length <= 0.
  [[nodiscard]] result<void> fallocate(int fd, int mode, off_t offset, off_t len) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    if (offset < 0 || len <= 0) return std::make_error_code(std::errc::invalid_argument);
    return send_on<msg::fallocate>(e, {.mode = mode, .offset = offset, .length = len}).error;
  }
  /// statvfs(3) / fstatvfs(3).
  [[nodiscard]] result<struct ::statvfs> statvfs(std::string_view path) { return path_reply<msg::statfs>(path, {}, 0); }
  [[nodiscard]] result<struct ::statvfs> fstatvfs(int fd) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    return reply_of<msg::statfs>(e, {});
  }
  /// access(2): F_OK, or R_OK | W_OK | X_OK checked with the process's uid/gid.
  [[nodiscard]] result<void> access(std::string_view path, int mode) {
    if (mode & ~(R_OK | W_OK | X_OK)) return std::make_error_code(std::errc::invalid_argument);
    return send_path<msg::access>(path, {.mode = mode}).error;
  }
  /// truncate(2): open for writing, ftruncate, close.
  [[nodiscard]] result<void> truncate(std::string_view path, off_t length) {
    if (length < 0) return std::make_error_code(std::errc::invalid_argument);
    auto fd = open(path, O_WRONLY);
    if (!fd) return fd.error();
    const std::error_code ec = ftruncate(*fd, length).error();
    (void)close(*fd);
    return ec;
  }
  /// Reads whole io_dirent records (resmgr/protocol.hpp) of directory `fd` (opened O_RDONLY |
  /// O_DIRECTORY) from position `pos` (0: the start; else a record's `next`) into buf. Returns the
  /// bytes written (0: the end); EINVAL if buf cannot hold the next record; ENOTDIR for a file.
  [[nodiscard]] result<std::size_t> readdir(int fd, std::uint64_t pos, void* buf, std::size_t n) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    if (buf == nullptr && n != 0) return std::make_error_code(std::errc::bad_address);
    send_result sr = send_on<msg::readdir>(e, {.offset = pos}, {.reply_data = buf, .reply_data_len = n});
    if (sr.error) return sr.error;
    return static_cast<std::size_t>(sr.status);
  }

  // ---- memory (defined in resmgr/process_memory.hpp, included at the end of this header) -------------------
  // The process's address space (an aspace + pager, made on first use): mmap(2)-like calls for server
  // files (the server's mmap handler checks access and bounds; faults page in through the server) and
  // anonymous memory. See resmgr/process_memory.hpp for the contract.

  /// mmap(2): MAP_SHARED or MAP_PRIVATE, optionally MAP_ANONYMOUS (fd ignored), MAP_FIXED (replaces this
  /// process's mappings in the range; EEXIST if other memory is there) or MAP_FIXED_NOREPLACE (EEXIST if
  /// anything is there). Errors: EINVAL, EBADF, EACCES (server), ENOTSUP/EPERM (userfaultfd refused),
  /// and the errno of the mapping. Past the end of the file: SIGBUS at the first touch, and after an
  /// ftruncate that shrinks the file, at every touch of a page past the new end, except a MAP_PRIVATE
  /// page written before the shrink, which keeps its bytes (unlike Linux; resmgr/iofunc.hpp, "Shrink
  /// and MAP_PRIVATE"). A MAP_PRIVATE page shows the file until its first write, as on Linux.
  [[nodiscard]] result<void*> mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off);
  /// munmap(2) of any page range (parts of mappings, several mappings, holes).
  [[nodiscard]] result<void> munmap(void* addr, std::size_t len);
  /// mprotect(2) of any mapped page range (ENOMEM over a hole); PROT_WRITE on a MAP_SHARED file mapping
  /// needs a writable open (EACCES). Mappings of a server in another OS process: the same, within the
  /// mappings of one server (ENOMEM for a range that also covers other memory).
  [[nodiscard]] result<void> mprotect(void* addr, std::size_t len, int prot);
  /// msync(2): shared mappings are the file's own pages; validates the range.
  [[nodiscard]] result<void> msync(void* addr, std::size_t len, int flags);
  /// The address space behind mmap (made on first use). Throws std::system_error if userfaultfd is refused.
  process_memory& memory();
  /// Whether a page of [p, p + n) lies in a mapping served by a server in another process (false
  /// without an address space). Thread-safety: any thread. Throws: nothing.
  [[nodiscard]] bool in_served_mapping(const void* p, std::size_t n) noexcept;
  /// The address space if one was made, else nullptr (never makes one; for servers asking about a
  /// client's buffer, resmgr/direct_copy.hpp). Thread-safety: any thread.
  [[nodiscard]] std::shared_ptr<process_memory> memory_if_made() {
    exclusive_guard g(mem_mu_);
    return mem_;
  }
  /// Whether memory() has made the address space (lock-free; a snapshot: it may be made right after).
  [[nodiscard]] bool memory_made() const noexcept { return mem_.made(); }
  /// As memory(), but made with these options if it does not exist yet (e.g. aspace_options::single_lock
  /// for the Colin example); if it exists already, the options are ignored. Throws: as memory().
  process_memory& memory(const aspace_options& ao, const pager_options& po);

  /// Sends io_msg::mmap for `fd` and returns what backs the range (the building block for mmap()).
  /// `addr`: mmap_served_track only (protocol.hpp).
  [[nodiscard]] result<io_mmap_reply> mmap_request(int fd, std::uint64_t offset, std::uint64_t length, int prot, int flags,
                                                   std::uint64_t addr = 0) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    return reply_of<msg::mmap>(e, {.offset = offset, .length = length, .prot = prot, .flags = flags, .addr = addr});
  }

  // ---- plumbing for extensions ----------------------------------------------------------------------

  /// The channel and server handle behind `fd` (EBADF if not open): for extensions (mmap, pager).
  /// The path `fd` was opened with (for reports), or "" for a bad fd.
  [[nodiscard]] std::string fd_path(int fd) const {
    exclusive_guard g(mu_);
    if (!pin_fd(fd)) return {};
    return static_cast<std::size_t>(fd) < paths_.size() ? paths_[static_cast<std::size_t>(fd)] : std::string();
  }

  [[nodiscard]] std::error_code fd_target(int fd, std::shared_ptr<channel>& ch, std::uint64_t& handle, int& flags) const {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    ch = e->ch;
    handle = e->handle;
    flags = e->flags;
    return {};
  }

  /// Sends `b` on `ch` with this process's io timeout.
  [[nodiscard]] send_result send(channel& ch, const send_buffers& b) {
    // relaxed: a setting (set_serve_on_calling_thread).
    if (serve_here_.load(std::memory_order_relaxed) && !ch.remote())
      if (std::optional<send_result> r = server::serve_here(ch, b, current_activity())) return *r;
    send_options o;
    const auto t = timeout_ns_.load(std::memory_order_relaxed);
    if (t > 0) o.deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(t);
    // Pool self-deadlock guard: a server whose every thread serves this very activity cannot receive
    // the message (see thread_pool_options::on_self_deadlock). Only a thread that has ADOPTED an
    // activity (a server thread serving a message, a pager thread serving a fault) can find a pool
    // busy with its own chain: a thread working for its own implicit activity is blocked while any
    // message of its is served, so pool threads still busy with that activity serve messages it
    // abandoned (timeout, cancel), which it does not wait for. Such a send skips the check (one
    // thread-local load); otherwise the check costs one relaxed load unless some pool was full.
    if (detail::this_thread_record().activity == 0) return ch.send(b, o);
    send_route route = server::route_for(ch, current_activity(), b);
    if (route.error) return send_result{0, route.error, 0};
    return (route.ch ? *route.ch : ch).send(b, o);
  }

 private:
  struct fd_entry {
    std::shared_ptr<channel> ch;
    std::uint64_t handle = 0;
    int flags = 0;
  };
  using fd_pin = detail::pinned_table<fd_entry>::pin;

  // mem_ with a lock-free "made" flag (memory_made()): resmgr/process_memory.hpp assigns it under mem_mu_
  // (if (!mem_) mem_ = make_shared<...>; return *mem_; m = mem_;), which this type keeps working.
  class memory_ref {
   public:
    memory_ref& operator=(std::shared_ptr<process_memory> p) noexcept {
      p_ = std::move(p);
      // relaxed: a hint for rw() (see io_rw_request::hints); p_ itself is read under mem_mu_ only.
      made_.store(p_ != nullptr, std::memory_order_relaxed);
      return *this;
    }
    [[nodiscard]] explicit operator bool() const noexcept { return p_ != nullptr; }
    [[nodiscard]] process_memory& operator*() const noexcept { return *p_; }
    operator std::shared_ptr<process_memory>() const noexcept { return p_; }  // NOLINT: m = mem_;
    [[nodiscard]] bool made() const noexcept { return made_.load(std::memory_order_relaxed); }

   private:
    std::shared_ptr<process_memory> p_;
    std::atomic<bool> made_{false};
  };

  // The innermost acting_as scope of this thread (proc == nullptr: none).
  using acting_state = acting_as::saved_state;
  static acting_state& acting() noexcept {
    thread_local acting_state s{nullptr, {}};
    return s;
  }

  static std::uint64_t next_pid() noexcept {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  // ---- message plumbing (one helper per addressing; every call above is built from these) ----------

  // open(): with `st`, offers msg::open's reply header (the attributes); *have says whether it came.
  result<int> open_impl(std::string_view path, int flags, mode_t mode, struct ::stat* st, bool* have = nullptr) {
    if (path.size() > max_path()) return std::make_error_code(std::errc::filename_too_long);
    if (lowest_free_fd() >= fd_limit()) return std::make_error_code(std::errc::too_many_files_open);
    std::error_code ec;
    auto res = ns_->resolve(path, ec);
    if (!res) return ec;
    io_open_request q{client(), flags, static_cast<std::uint32_t>(mode)};
    send_buffers b{msg_type<msg::open>(), &q, sizeof q, res->rest.data(), res->rest.size()};
    if (st) {
      b.reply_header = st;
      b.reply_header_len = sizeof *st;
    }
    send_result sr = send(*res->ch, b);
    if (sr.error) return sr.error;
    if (have) *have = st && sr.reply_header_len == sizeof *st;
    std::error_code err = std::make_error_code(std::errc::too_many_files_open);
    try {
      exclusive_guard g(mu_);
      fd_entry e{res->ch, static_cast<std::uint64_t>(sr.status), flags};
      const std::size_t max = fd_limit();
      for (std::size_t fd = 0; fd < max; ++fd) {
        if (fd >= fds_.capacity()) fds_.ensure_capacity(fd + 1);
        if (!fds_.looks_free(fd)) continue;
        if (paths_.size() <= fd) paths_.resize(fd + 1);
        paths_[fd].assign(path.data(), path.size());
        if (fds_.install(fd, std::move(e))) return static_cast<int>(fd);  // moves e only on success
      }
    } catch (const std::bad_alloc&) {
      err = std::make_error_code(std::errc::not_enough_memory);
    }
    // Other threads took the last fds meanwhile (or no memory for the table): give the open back.
    io_handle_request cq{client(), static_cast<std::uint64_t>(sr.status)};
    (void)send(*res->ch, {msg_type<msg::close>(), &cq, sizeof cq});
    return err;
  }

  template <class M>
  static constexpr std::uint32_t msg_type() noexcept {
    return static_cast<std::uint32_t>(M::id);
  }

  // Sends handle-addressed message M on the open `e` (q.client and q.handle filled in); `b` supplies
  // the payload and reply data buffers.
  template <class M>
  send_result send_on(const fd_pin& e, typename M::request q, send_buffers b = {}) {
    q.client = client();
    q.handle = e->handle;
    b.type = msg_type<M>();
    b.header = &q;
    b.header_len = sizeof q;
    return send(*e->ch, b);
  }
  // send_on for `fd` (EBADF if not open).
  template <class M>
  send_result fd_call(int fd, typename M::request q) {
    const fd_pin e = pin_fd(fd);
    if (!e) return send_result{0, std::make_error_code(std::errc::bad_file_descriptor), 0};
    return send_on<M>(e, q);
  }
  // send_on for a message with a reply header: the reply, or the error (EBADMSG: a short reply).
  template <class M>
  result<typename M::reply> reply_of(const fd_pin& e, typename M::request q) {
    typename M::reply rep{};
    send_result sr = send_on<M>(e, q, {.reply_header = &rep, .reply_header_len = sizeof rep});
    if (sr.error) return sr.error;
    if (sr.reply_header_len != sizeof rep) return std::make_error_code(std::errc::bad_message);
    return rep;
  }

  // The second path of a two-path message: none, a path resolved on the same server (EXDEV if on
  // another), or raw bytes (a symlink's target).
  enum class second_path { none, resolved, raw };

  // Sends message M naming `path` (path-addressed, or with `bits` = io_msg_by_path [| io_msg_nofollow]
  // a handle-addressed message by path; io_msg_by_path is added for handle_or_path messages).
  template <class M>
  send_result send_path(std::string_view path, typename M::request q, std::uint32_t bits = 0,
                        second_path kind = second_path::none, std::string_view second = {}, send_buffers b = {}) {
    const auto fail = [](std::errc e) { return send_result{0, std::make_error_code(e), 0}; };
    if (path.size() > max_path() || second.size() > max_path()) return fail(std::errc::filename_too_long);
    std::error_code ec;
    auto res = ns_->resolve(path, ec);
    if (!res) return send_result{0, ec, 0};
    std::string payload = std::move(res->rest);
    if (kind != second_path::none) {
      std::string tail(second);
      if (kind == second_path::resolved) {
        auto res2 = ns_->resolve(second, ec);
        if (!res2) return send_result{0, ec, 0};
        if (res2->ch != res->ch) return fail(std::errc::cross_device_link);
        tail = std::move(res2->rest);
      }
      payload.push_back('\0');
      payload += tail;
    }
    q.client = client();
    if constexpr (M::by == addressing::handle_or_path) bits |= io_msg_by_path;
    b.type = msg_type<M>() | bits;
    b.header = &q;
    b.header_len = sizeof q;
    b.payload = payload.data();
    b.payload_len = payload.size();
    return send(*res->ch, b);
  }
  // send_path for a message with a reply header.
  template <class M>
  result<typename M::reply> path_reply(std::string_view path, typename M::request q, std::uint32_t bits) {
    typename M::reply rep{};
    send_result sr = send_path<M>(path, q, bits, second_path::none, {}, {.reply_header = &rep, .reply_header_len = sizeof rep});
    if (sr.error) return sr.error;
    if (sr.reply_header_len != sizeof rep) return std::make_error_code(std::errc::bad_message);
    return rep;
  }

  static io_utimens_request utimens_request(const struct ::timespec times[2]) noexcept {
    io_utimens_request q;
    for (int i = 0; i < 2; ++i) q.times[i] = times ? times[i] : ::timespec{0, UTIME_NOW};
    return q;
  }

  std::size_t max_path() const noexcept { return max_path_.load(std::memory_order_relaxed); }
  std::size_t fd_limit() const noexcept {
    return std::min<std::size_t>({max_fds_.load(std::memory_order_relaxed), decltype(fds_)::max_slots,
                                  static_cast<std::size_t>(std::numeric_limits<int>::max())});
  }

  // The lowest fd that open() could use now (racy; open() decides under mu_).
  std::size_t lowest_free_fd() const {
    exclusive_guard g(mu_);
    const std::size_t cap = fds_.capacity();
    std::size_t fd = 0;
    while (fd < cap && !fds_.looks_free(fd)) ++fd;
    return fd;
  }

  // The open fd, pinned (see the header comment), or an empty pin: EBADF.
  fd_pin pin_fd(int fd) const noexcept { return fd < 0 ? fd_pin{} : fds_.find(static_cast<std::size_t>(fd)); }

  result<std::size_t> rw(io_msg type, int fd, void* buf, std::size_t n, off_t off, bool use_offset) {
    const fd_pin e = pin_fd(fd);
    if (!e) return std::make_error_code(std::errc::bad_file_descriptor);
    if (buf == nullptr && n != 0) return std::make_error_code(std::errc::bad_address);
    if (n > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())) return std::make_error_code(std::errc::invalid_argument);
    if (use_offset) {
      if (off < 0) return std::make_error_code(std::errc::invalid_argument);
      if (static_cast<std::uint64_t>(off) + n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return std::make_error_code(std::errc::value_too_large);
    }
    io_rw_request q{client(), e->handle, n, static_cast<std::int64_t>(off), use_offset ? 1u : 0u,
                    memory_made() ? 0u : rw_hint_no_client_memory};
    send_buffers b{static_cast<std::uint32_t>(type), &q, sizeof q};
    if (type == io_msg::read) {
      b.reply_data = buf;
      b.reply_data_len = n;
      b.reply_prefix_counts = use_offset;  // a pread's status is its byte count and it moves no offset
    } else {
      b.payload = buf;
      b.payload_len = n;
    }
    // A buffer in a mapping served by a server in another process goes by address (send_buffers::
    // by_address): the server pages it in and stops at a page past the end of the file (a short
    // count, as read(2)/write(2)); this thread's own copy would fault there and poison the page.
    if (n != 0 && e->ch->remote() && memory_made()) b.by_address = in_served_mapping(buf, n);
    send_result sr = send(*e->ch, b);
    if (sr.error) return sr.error;
    return static_cast<std::size_t>(sr.status);
  }

  result<std::size_t> rwv(int fd, const struct ::iovec* iov, int iovcnt, off_t off, bool use_offset) {
    if (iovcnt < 0 || iovcnt > 1024 || (iov == nullptr && iovcnt > 0)) return std::make_error_code(std::errc::invalid_argument);
    std::size_t total = 0;
    for (int i = 0; i < iovcnt; ++i) {
      if (iov[i].iov_len == 0) continue;
      auto r = use_offset ? pread(fd, iov[i].iov_base, iov[i].iov_len, off + static_cast<off_t>(total))
                          : read(fd, iov[i].iov_base, iov[i].iov_len);
      if (!r) {
        if (total > 0) return total;
        return r.error();
      }
      total += *r;
      if (*r < iov[i].iov_len) break;
    }
    return total;
  }

  bool defer_close_if_mapped(const std::shared_ptr<channel>& ch, std::uint64_t handle);  // resmgr/process_memory.hpp

  std::string name_;
  credentials creds_;
  path_namespace* ns_;
  std::uint64_t pid_;
  std::atomic<std::int64_t> timeout_ns_{0};
  std::atomic<std::size_t> max_fds_{1024};
  std::atomic<std::size_t> max_path_{io_path_max};
  std::atomic<bool> serve_here_{false};
  mutable ranked_mutex<rank::leaf> mu_{"process fds"};  // leaf: open()/close() changing fds_ (lookups take no lock), paths_
  detail::pinned_table<fd_entry> fds_;
  std::vector<std::string> paths_ FAULTSAFE_GUARDED_BY(mu_);  // the path of each fd (reports only; not copied on I/O)
  // Last member: destroyed first, while the rest of the process is alive (it sends deferred closes).
  ranked_mutex<rank::leaf> mem_mu_{"process memory"};  // leaf: mem_ (its made() flag reads without it)
  memory_ref mem_;
};

}  // namespace faultsafe

#include "process_memory.hpp"  // defines process_memory and process::mmap/munmap/mprotect/msync

#endif  // FAULTSAFE_RESMGR_PROCESS_HPP
