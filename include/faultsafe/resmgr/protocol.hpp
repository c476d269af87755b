// faultsafe/resmgr/protocol.hpp: the wire format of resource-manager messages.
//
// Defines `io_msg` (the message types, channel send_buffers::type), the addressing bits of a type word
// (io_msg_by_path, io_msg_nofollow), `client_info`, and the trivially copyable request and reply
// structs. Every request header starts with `client_info` (pid, uid, gid of the logical client process);
// a request naming an open file has `handle` right after it. What a message means, how it is addressed
// and which handler serves it is its definition in resmgr/messages.hpp; this header is only the bytes.
//
// Payloads and reply data (bulk bytes, read and written in place in the client's memory):
// - path-addressed messages (open, mkdir, mknod, unlink, rmdir, rename, link, symlink): the payload is
//   the path below the server's prefix (not NUL-terminated); a second path (rename's and link's new
//   path, symlink's target) follows after one NUL byte.
// - a handle-addressed message sent with io_msg_by_path: the payload is the path of the file it acts on
//   instead of an open handle (`handle` is ignored); see resmgr/messages.hpp, addressing::handle_or_path.
// - read: reply data is the client's buffer; write: the payload is the client's buffer; readlink:
//   reply data receives the target (not NUL-terminated); readdir: reply data receives io_dirent records.
//   read_visit has neither: its bytes go to the sender's visitor (io_read_visit_request).
//
// Thread-safety: plain value types. Layout: every struct is trivially copyable and sent by memcpy
// within one OS process (no byte-order or ABI concerns beyond the build's own).
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace faultsafe {

/// Message types (channel send_buffers::type, low 8 bits). Numbers are stable: new messages take new
/// numbers at the end.
enum class io_msg : std::uint32_t {
  open = 1,
  close,
  read,
  write,
  lseek,
  fstat,      ///< also stat/lstat by path (io_msg_by_path)
  ftruncate,
  mmap,       ///< map a range of the file
  page_in,    ///< generic pager request: bring a range of the file in
  mkdir,
  mknod,
  unlink,
  rmdir,
  rename,
  link,
  symlink,
  readlink,   ///< handle (an O_PATH | O_NOFOLLOW open) or path
  readdir,
  chmod,      ///< fchmod, or chmod by path
  chown,      ///< fchown, or chown/lchown by path
  utimens,    ///< futimens, or utimensat by path
  fsync,
  fallocate,
  statfs,     ///< fstatvfs, or statvfs by path
  access,     ///< access(2) by path (or on an open)
  read_visit, ///< pread whose bytes a visitor of the sender's takes in place (in-process senders only)
  data_version,  ///< the file's data version (what a cache of its bytes compares: the FUSE bridge)
};
/// The largest io_msg number (dispatch tables are indexed by the low 8 bits).
inline constexpr std::uint32_t io_msg_max = static_cast<std::uint32_t>(io_msg::data_version);
/// Type-word bits of a handle-addressed message that may name its file by path (addressing::
/// handle_or_path): the payload is the path; the server opens it O_PATH (| O_NOFOLLOW with
/// io_msg_nofollow), serves the message on that open and closes it (QNX's combine message).
inline constexpr std::uint32_t io_msg_by_path = 1u << 8;
inline constexpr std::uint32_t io_msg_nofollow = 1u << 9;
inline constexpr std::uint32_t io_msg_type_mask = 0xff;
/// PATH_MAX: the longest path a program may name through `process` (ENAMETOOLONG beyond it).
inline constexpr std::size_t io_path_max = 4096;
/// The longest path a server accepts in a message (ENAMETOOLONG beyond it): a client naming files by
/// their full path below a deep working directory may pass PATH_MAX (the FUSE bridge: the kernel applies
/// PATH_MAX to a program's path relative to its cwd, not to the path from the mount's root). It bounds
/// the server's buffer; each component stays within NAME_MAX and symlink targets within PATH_MAX.
inline constexpr std::size_t io_wire_path_max = 16 * io_path_max;

/// Most supplementary groups a request carries (a caller in more is checked with the first ones only).
inline constexpr std::size_t client_max_groups = 16;

/// A caller's supplementary group ids (besides client_info::gid), inline so that a request header stays
/// a plain value.
struct client_groups {
  std::uint32_t count = 0;                   ///< ids[0, count) are valid (<= client_max_groups)
  std::uint32_t ids[client_max_groups] = {};
  [[nodiscard]] constexpr bool contains(std::uint32_t g) const noexcept {
    for (std::uint32_t i = 0; i < count && i < client_max_groups; ++i)
      if (ids[i] == g) return true;
    return false;
  }
};

/// Who sends: every request header starts with this.
struct client_info {
  std::uint64_t pid = 0;  ///< logical process id (faultsafe::process::pid())
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  client_groups groups{};  ///< supplementary groups (permission checks: client_in_group)
};

/// True if the caller's primary group or one of its supplementary groups is `gid` (POSIX's "the
/// process is a member of the file's group").
[[nodiscard]] constexpr bool client_in_group(const client_info& c, std::uint32_t gid) noexcept {
  return c.gid == gid || c.groups.contains(gid);
}

/// io_msg::open. Payload: the path below the server's prefix (not NUL-terminated). Reply status: the
/// new OCB handle. Reply header (optional): the new open's struct stat, when the sender offers a reply
/// header of exactly that size (resmgr/server.hpp fills it with the fstat handler; none if it fails).
struct io_open_request {
  client_info client{};
  std::int32_t flags = 0;  ///< O_RDONLY/O_WRONLY/O_RDWR | O_CREAT | O_EXCL | O_TRUNC | O_APPEND
  std::uint32_t mode = 0;  ///< permission bits for O_CREAT
};
/// close, fstat (reply header: struct stat), readlink (reply data: the target), statfs (reply header:
/// struct statvfs).
struct io_handle_request {
  client_info client{};
  std::uint64_t handle = 0;
};
/// io_msg::read (reply data: the client's buffer) and io_msg::write (payload: the client's buffer).
/// Reply status: bytes transferred.
struct io_rw_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint64_t nbytes = 0;
  std::int64_t offset = 0;      ///< used when use_offset (pread/pwrite); else the OCB's offset
  std::uint32_t use_offset = 0;
  std::uint32_t hints = 0;      ///< rw_hint_* bits (0: no hint); a wrong hint costs speed, never safety
};
/// io_rw_request::hints: the client process has no address space (process::memory() was never made),
/// so its buffer cannot lie in a mapping of the file and the direct-copy path (resmgr/direct_copy.hpp)
/// is skipped without asking for the process. A stale hint (memory made meanwhile) only means the
/// ordinary path runs, where the page-in guard of iofunc_page_in_default still resolves a self-conflict.
inline constexpr std::uint32_t rw_hint_no_client_memory = 1;
/// What io_msg::read_visit hands the bytes to: called on the serving thread with `n` bytes of the file
/// in place (valid only during the call); returns 0, or an errno that becomes the message's error.
using read_visitor = int (*)(void* context, const void* bytes, std::size_t n) noexcept;
/// io_msg::read_visit: a pread of [offset, offset + nbytes) (the OCB's offset is neither used nor moved)
/// whose bytes the server passes to visitor(context, bytes, n) in place instead of copying them into
/// reply data. A function pointer and a context pointer of the sender's: meaningful only within one OS
/// process (a server refuses the message from another one with ENOTSUP: resmgr/remote.hpp). Reply
/// status: the bytes visited (0 at or past the end; the visitor is then not called).
struct io_read_visit_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint64_t nbytes = 0;
  std::int64_t offset = 0;
  read_visitor visitor = nullptr;
  void* context = nullptr;
};
/// io_msg::lseek. Reply status: the new offset.
struct io_lseek_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::int64_t offset = 0;
  std::int32_t whence = 0;
};
/// io_msg::ftruncate.
struct io_ftruncate_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::int64_t length = 0;
};
/// io_msg::mmap: the client wants [offset, offset+length) of the file mapped with prot/flags.
struct io_mmap_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::int32_t prot = 0;
  std::int32_t flags = 0;
  std::uint64_t addr = 0;  ///< mmap_served_track: where the client mapped it
};
/// io_mmap_request::flags bits of a client in another OS process whose mappings the server's pager
/// serves (resmgr/remote.hpp, vm/served_memory.hpp), besides MAP_SHARED / MAP_PRIVATE:
///   mmap_served_hello: adopt the client's userfaultfd (its fd number in `length`, its features in
///     `offset`; taken with pidfd_getfd), once per connection;
///   mmap_served_fetch: as io_msg::mmap (access checks), and the backing memfd is sent on the
///     connection's socket (the reply's memfd field is meaningless in the client);
///   mmap_served_track: the client mapped [addr, addr + length) (file offset `offset`) and registered
///     it: the server's pager serves it from now on.
inline constexpr std::int32_t mmap_served_hello = 1 << 28;
inline constexpr std::int32_t mmap_served_fetch = 1 << 29;
inline constexpr std::int32_t mmap_served_track = 1 << 30;
/// io_msg::mmap reply header: what backs the mapping (e.g. the file's memfd and the offset in it).
/// The fd stays owned by the server; it is valid while the OCB is open.
struct io_mmap_reply {
  std::int32_t memfd = -1;
  std::uint32_t flags = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t cookie = 0;  ///< server-defined (e.g. an attr id for page_in)
};
/// io_msg::page_in: generic pager request for [offset, offset+length) of the file behind `handle` (or
/// `cookie`). Reply header and data are pager-defined (io_page_in_reply, and reply data if any).
struct io_page_in_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint64_t cookie = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint32_t flags = 0;
  std::uint32_t fault_thread = 0;   ///< faultsafe id of the faulting thread (0: unknown)
  std::uint64_t fault_address = 0;  ///< the faulting address (0: unknown, or read-ahead)
  std::uint64_t fault_offset = 0;   ///< file offset of the faulting page
};
/// The valid bytes are [max(offset, q.offset), q.offset + length): `offset` is the file offset of the
/// first valid byte (q.offset, or 0, for the whole window; a later page, never past the faulting page,
/// when the server served the faulting page without the window's start); `length` counts from
/// q.offset. Private page-ins put the data at the same place in the reply data (offset - q.offset on).
struct io_page_in_reply {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t cookie = 0;
};

/// mkdir: payload the path. Reply status 0.
struct io_mkdir_request {
  client_info client{};
  std::uint32_t mode = 0;  ///< permission bits (07777; masked by the server as mkdir(2) does)
};
/// mknod: payload the path. S_IFREG/S_IFIFO/S_IFSOCK for anyone, S_IFCHR/S_IFBLK for uid 0 only.
struct io_mknod_request {
  client_info client{};
  std::uint32_t mode = 0;  ///< file type | permission bits
  std::uint64_t dev = 0;
};
/// unlink, rmdir, link (payload: old path, NUL, new path) and symlink (payload: the link's path, NUL,
/// the target): nothing but the client. Reply status 0.
struct io_path_request {
  client_info client{};
};
/// rename: payload old path, NUL, new path. flags: RENAME_NOREPLACE, RENAME_EXCHANGE (linux/fs.h).
struct io_rename_request {
  client_info client{};
  std::uint32_t flags = 0;
};
/// readdir: reply data receives whole io_dirent records starting at directory position `offset` (0: the
/// start; else a record's `next`). Reply status: the bytes written (0: the end). A record that does not
/// fit is left for the next call (EINVAL if not even one fits).
struct io_readdir_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint64_t offset = 0;
};
/// One directory entry in readdir's reply data: the header, then `namelen` name bytes and a NUL, padded
/// to a multiple of 8 (`reclen` bytes in all).
struct io_dirent {
  std::uint64_t ino = 0;
  std::uint64_t next = 0;     ///< the position after this entry (pass it as the next readdir offset)
  std::uint16_t reclen = 0;
  std::uint8_t type = 0;      ///< DT_* value
  std::uint8_t pad = 0;
  std::uint32_t namelen = 0;
};
/// chmod (fchmod, chmod by path).
struct io_chmod_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint32_t mode = 0;  ///< 07777 bits
};
/// chown (fchown, chown/lchown by path). uint32 max (-1) leaves that id unchanged.
struct io_chown_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint32_t uid = ~0u;
  std::uint32_t gid = ~0u;
};
/// utimens (futimens, utimensat by path): times[0] atime, times[1] mtime; tv_nsec UTIME_NOW/UTIME_OMIT.
struct io_utimens_request {
  client_info client{};
  std::uint64_t handle = 0;
  struct ::timespec times[2]{};
};
/// fsync/fdatasync.
struct io_fsync_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::uint32_t datasync = 0;
};
/// fallocate: mode 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
struct io_fallocate_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::int32_t mode = 0;
  std::int64_t offset = 0;
  std::int64_t length = 0;
};
/// data_version: no argument besides the open.
struct io_data_version_request {
  client_info client{};
  std::uint64_t handle = 0;
};
/// access: mode F_OK or R_OK | W_OK | X_OK.
struct io_access_request {
  client_info client{};
  std::uint64_t handle = 0;
  std::int32_t mode = 0;
};

}  // namespace faultsafe
