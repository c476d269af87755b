// faultsafe/resmgr/messages.hpp: one definition per resource-manager message, and the handler table
// derived from them.
//
// Defines `ocb_base` (per-open server state), `request_context` and `io_result` (what a handler gets
// and answers), `addressing`, the message definitions in namespace `msg`, `io_funcs` (the handler
// table: one named std::function slot per message), `io_messages` (the list of every definition) and
// detail::call_handler (the one place that knows the handler shapes).
//
// A message definition is a struct with
//   id       its io_msg number (resmgr/protocol.hpp);
//   name     its name in reports (server::route_for, violation reports);
//   by       its addressing (see `addressing`): how the server finds what it acts on;
//   request  its request header (a protocol struct starting with client_info);
//   reply    its reply header (no_reply: none; the reply status carries the result);
//   handler  its handler's function type (the io_funcs slot is std::function<handler>);
//   slot(f)  its slot in an io_funcs (a function template: io_funcs is defined after the messages);
//   two_paths (path-addressed messages only) whether the payload holds a second path after a NUL.
// The server's dispatch table (resmgr/server.hpp), the client calls (resmgr/process.hpp) and the
// defaults (resmgr/iofunc.hpp) are derived from these: adding a message is its io_msg number and
// request struct (protocol.hpp), its definition and slot here, its default handler (iofunc.hpp) and its
// client call (process.hpp).
//
// Handler shapes (detail::call_handler picks the one the slot's type accepts):
//   path:            io_result(request_context&, const request&, std::string_view path)
//                    io_result(request_context&, const request&, std::string_view path, std::string_view second)
//   handle...:       io_result(request_context&, ocb_base&, const request&[, reply&])
//                    or the older shapes io_result(request_context&, ocb_base&[, reply&])
//   handle_or_none:  the same with ocb_base* (nullptr: the request named no open)
// Handlers may throw std::system_error (its code is replied), std::bad_alloc (ENOMEM); anything else
// is replied as EIO. An empty slot answers ENOSYS.
//
// Thread-safety: definitions are types; an io_funcs is a plain value (the server copies it at
// construction and calls its slots concurrently from its pool threads: handlers must be thread-safe).
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "../activity/activity.hpp"
#include "../detail/thread_record.hpp"
#include "../ipc/channel.hpp"
#include "../order/violation.hpp"
#include "protocol.hpp"

namespace faultsafe {

class server;
struct iofunc_ocb;  // resmgr/iofunc.hpp

/// Per-open state kept by a server. Derive from it.
struct ocb_base {
  virtual ~ocb_base() = default;
  /// Returns: this open as the iofunc layer's OCB (resmgr/iofunc.hpp: iofunc_ocb overrides it), or
  /// nullptr. What iofunc_ocb_cast() asks on every request: one virtual call instead of a type-name
  /// comparison and a dynamic_cast walk for OCB types derived from iofunc_ocb.
  /// Thread-safety: any thread (no state). Throws: nothing.
  [[nodiscard]] virtual iofunc_ocb* as_iofunc_ocb() noexcept { return nullptr; }
  std::uint64_t owner_pid = 0;  ///< set by the server: only this process may use the handle
};

/// What a handler gets: the server, the receiver holding the message (for in-place copies), the
/// client's identity and activity (already adopted by the calling thread).
struct request_context {
  server& srv;
  channel::receiver& rcv;
  client_info client;
  activity_id activity = 0;
};

/// A handler's answer: `value` (bytes, offset, handle...) or `error`.
struct io_result {
  std::int64_t value = 0;
  std::error_code error;
  static io_result ok(std::int64_t v = 0) noexcept { return {v, {}}; }
  static io_result fail(int e) noexcept { return {0, std::error_code(e, std::generic_category())}; }
  static io_result fail(std::error_code e) noexcept { return {0, e}; }
};

/// How a message names what it acts on.
enum class addressing {
  open,            ///< a path (payload); the handler makes an OCB, the server installs it (open)
  close,           ///< an open handle; the server takes the OCB out of its table first (close)
  path,            ///< a path (payload, maybe two): namespace changes (QNX connect functions)
  handle,          ///< an open handle (QNX io functions); EBADF if the client does not own it
  handle_or_path,  ///< a handle, or with io_msg_by_path a path opened O_PATH for the message
  handle_or_none,  ///< a handle, or 0 for none (the handler gets nullptr): the pager's page_in
};

/// The reply header of a message that has none (its result is the reply status).
struct no_reply {};

namespace msg {
// Every message: see the header comment for the members. The order is the io_msg order.
// clang-format off
struct open {
  static constexpr io_msg id = io_msg::open;
  static constexpr std::string_view name = "open";
  static constexpr addressing by = addressing::open;
  static constexpr bool two_paths = false;
  using request = io_open_request;
  /// Optional: the new open's attributes, from the fstat handler, for a sender that offers a reply
  /// header of this size (protocol.hpp; process::open with a struct stat).
  using reply = struct ::stat;
  /// Must set `out` on success; the server assigns the handle (the reply status).
  using handler = io_result(request_context&, const io_open_request&, std::string_view path, std::shared_ptr<ocb_base>& out);
  static auto& slot(auto& f) { return f.open; }
};
struct close {
  static constexpr io_msg id = io_msg::close;
  static constexpr std::string_view name = "close";
  static constexpr addressing by = addressing::close;
  using request = io_handle_request;
  using reply = no_reply;
  /// Called once when the handle is closed (the OCB is already out of the table).
  using handler = io_result(request_context&, ocb_base&);
  static auto& slot(auto& f) { return f.close; }
};
struct read {
  static constexpr io_msg id = io_msg::read;
  static constexpr std::string_view name = "read";
  static constexpr addressing by = addressing::handle;
  using request = io_rw_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_rw_request&);
  static auto& slot(auto& f) { return f.read; }
};
struct write {
  static constexpr io_msg id = io_msg::write;
  static constexpr std::string_view name = "write";
  static constexpr addressing by = addressing::handle;
  using request = io_rw_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_rw_request&);
  static auto& slot(auto& f) { return f.write; }
};
struct lseek {
  static constexpr io_msg id = io_msg::lseek;
  static constexpr std::string_view name = "lseek";
  static constexpr addressing by = addressing::handle;
  using request = io_lseek_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_lseek_request&);
  static auto& slot(auto& f) { return f.lseek; }
};
struct fstat {
  static constexpr io_msg id = io_msg::fstat;
  static constexpr std::string_view name = "fstat";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_handle_request;
  using reply = struct ::stat;
  using handler = io_result(request_context&, ocb_base&, struct ::stat&);
  static auto& slot(auto& f) { return f.fstat; }
};
struct ftruncate {
  static constexpr io_msg id = io_msg::ftruncate;
  static constexpr std::string_view name = "ftruncate";
  static constexpr addressing by = addressing::handle;
  using request = io_ftruncate_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_ftruncate_request&);
  static auto& slot(auto& f) { return f.ftruncate; }
};
struct mmap {
  static constexpr io_msg id = io_msg::mmap;
  static constexpr std::string_view name = "mmap";
  static constexpr addressing by = addressing::handle;
  using request = io_mmap_request;
  using reply = io_mmap_reply;
  using handler = io_result(request_context&, ocb_base&, const io_mmap_request&, io_mmap_reply&);
  static auto& slot(auto& f) { return f.mmap; }
};
struct page_in {
  static constexpr io_msg id = io_msg::page_in;
  static constexpr std::string_view name = "page_in";
  static constexpr addressing by = addressing::handle_or_none;
  using request = io_page_in_request;
  using reply = io_page_in_reply;
  /// The handler may write reply data itself (ctx.rcv).
  using handler = io_result(request_context&, ocb_base*, const io_page_in_request&, io_page_in_reply&);
  static auto& slot(auto& f) { return f.page_in; }
  /// Report lines about a page-in request header `h` (a self_deadlock report names the fault).
  static void describe(const void* h, violation& v) {
    io_page_in_request q;
    std::memcpy(&q, h, sizeof q);
    char addr[40];
    std::snprintf(addr, sizeof addr, "0x%llx", static_cast<unsigned long long>(q.fault_address));
    std::string line = "the message is the page-in of file offsets [" + std::to_string(q.offset) + ", " +
                       std::to_string(q.offset + q.length) + ") for process " + std::to_string(q.client.pid);
    if (q.fault_address != 0) line += std::string(", for the fault at ") + addr + " (file offset " + std::to_string(q.fault_offset) + ")";
    if (q.fault_thread != 0) line += " taken by thread '" + thread_name(q.fault_thread) + "'";
    v.details.push_back(std::move(line));
  }
};
struct mkdir {
  static constexpr io_msg id = io_msg::mkdir;
  static constexpr std::string_view name = "mkdir";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = false;
  using request = io_mkdir_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_mkdir_request&, std::string_view path);
  static auto& slot(auto& f) { return f.mkdir; }
};
struct mknod {
  static constexpr io_msg id = io_msg::mknod;
  static constexpr std::string_view name = "mknod";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = false;
  using request = io_mknod_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_mknod_request&, std::string_view path);
  static auto& slot(auto& f) { return f.mknod; }
};
struct unlink {
  static constexpr io_msg id = io_msg::unlink;
  static constexpr std::string_view name = "unlink";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = false;
  using request = io_path_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_path_request&, std::string_view path);
  static auto& slot(auto& f) { return f.unlink; }
};
struct rmdir {
  static constexpr io_msg id = io_msg::rmdir;
  static constexpr std::string_view name = "rmdir";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = false;
  using request = io_path_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_path_request&, std::string_view path);
  static auto& slot(auto& f) { return f.rmdir; }
};
struct rename {
  static constexpr io_msg id = io_msg::rename;
  static constexpr std::string_view name = "rename";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = true;
  using request = io_rename_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_rename_request&, std::string_view from, std::string_view to);
  static auto& slot(auto& f) { return f.rename; }
};
struct link {
  static constexpr io_msg id = io_msg::link;
  static constexpr std::string_view name = "link";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = true;
  using request = io_path_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_path_request&, std::string_view from, std::string_view to);
  static auto& slot(auto& f) { return f.link; }
};
struct symlink {
  static constexpr io_msg id = io_msg::symlink;
  static constexpr std::string_view name = "symlink";
  static constexpr addressing by = addressing::path;
  static constexpr bool two_paths = true;
  using request = io_path_request;
  using reply = no_reply;
  using handler = io_result(request_context&, const io_path_request&, std::string_view linkpath, std::string_view target);
  static auto& slot(auto& f) { return f.symlink; }
};
struct readlink {
  static constexpr io_msg id = io_msg::readlink;
  static constexpr std::string_view name = "readlink";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_handle_request;
  using reply = no_reply;
  /// Reply data: the target; reply status: its length.
  using handler = io_result(request_context&, ocb_base&, const io_handle_request&);
  static auto& slot(auto& f) { return f.readlink; }
};
struct readdir {
  static constexpr io_msg id = io_msg::readdir;
  static constexpr std::string_view name = "readdir";
  static constexpr addressing by = addressing::handle;
  using request = io_readdir_request;
  using reply = no_reply;
  /// Reply data: io_dirent records; reply status: their bytes.
  using handler = io_result(request_context&, ocb_base&, const io_readdir_request&);
  static auto& slot(auto& f) { return f.readdir; }
};
struct chmod {
  static constexpr io_msg id = io_msg::chmod;
  static constexpr std::string_view name = "chmod";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_chmod_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_chmod_request&);
  static auto& slot(auto& f) { return f.chmod; }
};
struct chown {
  static constexpr io_msg id = io_msg::chown;
  static constexpr std::string_view name = "chown";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_chown_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_chown_request&);
  static auto& slot(auto& f) { return f.chown; }
};
struct utimens {
  static constexpr io_msg id = io_msg::utimens;
  static constexpr std::string_view name = "utimens";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_utimens_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_utimens_request&);
  static auto& slot(auto& f) { return f.utimens; }
};
struct fsync {
  static constexpr io_msg id = io_msg::fsync;
  static constexpr std::string_view name = "fsync";
  static constexpr addressing by = addressing::handle;
  using request = io_fsync_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_fsync_request&);
  static auto& slot(auto& f) { return f.fsync; }
};
struct fallocate {
  static constexpr io_msg id = io_msg::fallocate;
  static constexpr std::string_view name = "fallocate";
  static constexpr addressing by = addressing::handle;
  using request = io_fallocate_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_fallocate_request&);
  static auto& slot(auto& f) { return f.fallocate; }
};
struct statfs {
  static constexpr io_msg id = io_msg::statfs;
  static constexpr std::string_view name = "statfs";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_handle_request;
  using reply = struct ::statvfs;
  using handler = io_result(request_context&, ocb_base&, const io_handle_request&, struct ::statvfs&);
  static auto& slot(auto& f) { return f.statfs; }
};
struct access {
  static constexpr io_msg id = io_msg::access;
  static constexpr std::string_view name = "access";
  static constexpr addressing by = addressing::handle_or_path;
  using request = io_access_request;
  using reply = no_reply;
  using handler = io_result(request_context&, ocb_base&, const io_access_request&);
  static auto& slot(auto& f) { return f.access; }
};
struct read_visit {
  static constexpr io_msg id = io_msg::read_visit;
  static constexpr std::string_view name = "read_visit";
  static constexpr addressing by = addressing::handle;
  using request = io_read_visit_request;
  using reply = no_reply;
  /// Hands the bytes to q.visitor in place (no reply data); reply status: the bytes visited.
  using handler = io_result(request_context&, ocb_base&, const io_read_visit_request&);
  static auto& slot(auto& f) { return f.read_visit; }
};
struct data_version {
  static constexpr io_msg id = io_msg::data_version;
  static constexpr std::string_view name = "data_version";
  static constexpr addressing by = addressing::handle;
  using request = io_data_version_request;
  using reply = no_reply;
  /// Reply status: the version (> 0), or 0 when the file's bytes can change without one (see io_funcs).
  using handler = io_result(request_context&, ocb_base&, const io_data_version_request&);
  static auto& slot(auto& f) { return f.data_version; }
};
// clang-format on
}  // namespace msg

template <class M>
using handler_slot = std::function<typename M::handler>;
/// A read handler as a plain function (io_funcs::read_visit_mirrors).
using read_handler_fn = io_result (*)(request_context&, ocb_base&, const io_rw_request&);
/// The handlers that change a file's bytes or size, as plain functions (io_funcs::data_version_writers).
struct data_writer_fns {
  io_result (*write)(request_context&, ocb_base&, const io_rw_request&) = nullptr;
  io_result (*ftruncate)(request_context&, ocb_base&, const io_ftruncate_request&) = nullptr;
  io_result (*fallocate)(request_context&, ocb_base&, const io_fallocate_request&) = nullptr;
  io_result (*mmap)(request_context&, ocb_base&, const io_mmap_request&, io_mmap_reply&) = nullptr;
};

/// The handler table: one slot per message definition (the QNX connect/io funcs; the slot's type is
/// std::function<msg::X::handler>). Write your own, or
/// take iofunc_defaults() (resmgr/iofunc.hpp) and override a slot; resmgr/iofunc_helpers.hpp has the
/// verify and reply helpers the contract below refers to.
///
/// Common contract (every slot)
/// - Empty slot: the client gets ENOSYS. Answer: return io_result::ok(value) or io_result::fail(errno);
///   the server replies it (a handler that replied itself through ctx.rcv.reply()/reply_error() has
///   its return value ignored). Throwing std::system_error replies its code, std::bad_alloc ENOMEM,
///   anything else EIO; the handler must then have released what it took (RAII).
/// - Thread: a pool thread of this server that has adopted the client's activity (ctx.activity); the
///   client's thread is blocked in its call until the reply, so never wait for the client to do
///   something else. Several handlers (of one client or many, of one OCB or many) run concurrently:
///   shared state needs its own locking; an OCB's offset is shared like a POSIX fd offset.
/// - Locks held when called: none of the server's (the namespace, OCB-table and pool locks are never
///   held across a handler). The OCB is pinned (it lives until the handler returns, even if the
///   client closes it meanwhile).
/// - What a handler may block on: faultsafe locks in rank order (an iofunc_attr's range lock, rank 30,
///   then its meta lock, rank 40, for a few instructions); the client's memory (copying faults are
///   taken by this thread and served by the pager, never a lock-up: see resmgr/direct_copy.hpp and the
///   page-in guard); sends to OTHER servers through a `process` the server owns (the send carries the
///   client's activity, so the wait-for graph and the pool guard see the whole chain). It must not
///   hold the meta lock (or any non-faultsafe lock) while touching client memory or sending, call
///   server::stop() on its own server (EDEADLK), or block on anything the client must do.
/// - Client memory: read the payload with ctx.rcv.read_payload()/with_payload() and write the reply
///   data with write_reply_data()/with_reply_data() (MsgRead/MsgWrite: in place, no staging). The
///   client may change its payload while the handler runs: read it once into server memory before
///   validating it (iofunc_read_payload / iofunc_write_validated).
struct io_funcs {
  /// open(2). `path` is the part below the attached prefix ("" = the prefix itself); q.flags are the
  /// open flags (O_ACCMODE, O_CREAT, O_EXCL, O_TRUNC, O_APPEND), q.mode the permission bits for
  /// O_CREAT, q.client the caller's pid/uid/gid. Check permissions (iofunc_open_verify), then set `out`
  /// to a new OCB (ocb_base or a type derived from it, e.g. iofunc_ocb) and return ok(0); the server
  /// assigns the handle and records the owner pid (a handle used by another process is EBADF). The
  /// per-client limit (server_options::max_opens_per_client, EMFILE) was checked before the call.
  /// Returning ok without setting `out` is replied as EIO.
  handler_slot<msg::open> open;
  /// close(2): called exactly once per handle, after the handle left the table (new messages on it
  /// get EBADF); handlers already running on the OCB may still be running. The OCB is destroyed when
  /// its last user lets go. The client's fd is freed whatever this returns. Optional.
  handler_slot<msg::close> close;
  /// read(2)/pread(2). Offset: q.use_offset ? q.offset (pread; leave the OCB's offset alone) : the
  /// OCB's offset (read; advance it by the bytes returned). Size: transfer at most min(q.nbytes,
  /// ctx.rcv.reply_data_len()) bytes into the client's buffer (write_reply_data at offset 0 on) and
  /// return ok(count); 0 at or past the end. EBADF if the open has no read access, EINVAL for a
  /// negative offset, EOVERFLOW if offset + nbytes overflows (iofunc_read_verify does all of it;
  /// iofunc_reply_bytes replies from a buffer and advances). The default (iofunc_read_default) holds
  /// the file's range lock shared over the bytes it copies.
  handler_slot<msg::read> read;
  /// pread by reference, for a sender in this OS process (the FUSE bridge, which hands the bytes to
  /// /dev/fuse without copying them): call q.visitor(q.context, p, n) once with the n = min(q.nbytes,
  /// size - q.offset) bytes at q.offset in place, while holding exactly what `read`'s handler holds
  /// while it copies them, and return ok(n) (0 at or past the end, without calling it), or the
  /// visitor's nonzero return as the error. Checks as read (EBADF without read access, EINVAL for a
  /// negative offset, EOVERFLOW); the OCB's offset is neither used nor moved. The visitor may block
  /// (a write to /dev/fuse), never on this server. The default: iofunc_read_visit_default.
  /// Served only while `read` holds exactly the function `read_visit_mirrors` names: the server checks
  /// that at construction and otherwise empties this slot (ENOSYS: the sender copies through read), so a
  /// server that replaces or wraps `read` never has its reads bypassed.
  handler_slot<msg::read_visit> read_visit;
  /// The read handler read_visit serves the same bytes as, under the same locks (see read_visit).
  read_handler_fn read_visit_mirrors = nullptr;
  /// write(2)/pwrite(2). Offset as for read; with O_APPEND and no use_offset the bytes go at the end
  /// of the file as seen under the handler's exclusive lock. Size: min(q.nbytes,
  /// ctx.rcv.payload_len()) bytes of the client's payload; return ok(count written); EBADF without
  /// write access, EFBIG for a write starting at or past the file's limit, a short count for one
  /// straddling it (iofunc_write_verify). A write that fails must change nothing. The default holds the range
  /// lock exclusive over the bytes it stores and grows the file first.
  handler_slot<msg::write> write;
  /// lseek(2): q.whence SEEK_SET/SEEK_CUR/SEEK_END (the process already rejected others); set the
  /// OCB's offset and return ok(new offset); EINVAL for a negative result, EOVERFLOW on overflow.
  handler_slot<msg::lseek> lseek;
  /// fstat(2): fill `st` (zeroed by the server; iofunc_stat_fill for a file without an attr) and
  /// return ok(0). Must not block for long: it answers ls-like tools.
  handler_slot<msg::fstat> fstat;
  /// ftruncate(2): q.length >= 0 (the process checked). EBADF without write access, EFBIG past the
  /// limit. The default holds the range lock exclusive from min(old, new size) to the end.
  handler_slot<msg::ftruncate> ftruncate;
  /// mmap(2), asked by the client's address space (resmgr/process_memory.hpp): check q.prot/q.flags
  /// against the open's access (EACCES: PROT_READ without read access, PROT_WRITE on MAP_SHARED
  /// without write access), then fill `rep` with what backs [q.offset, q.offset + q.length): a memfd
  /// the server keeps open while the OCB is open, its offset, and a cookie for page_in. Without this
  /// slot files cannot be mapped (ENOSYS).
  handler_slot<msg::mmap> mmap;
  /// Page-in, sent by the client's pager thread for a fault on a mapping (q.fault_thread faulted at
  /// q.fault_address): make [q.offset, q.offset + q.length) of the memfd present (shared and private
  /// mappings alike: both map the memfd) and return ok(valid bytes); ENXIO at or past the
  /// end of the file (the access gets SIGBUS). `ocb` is null when the request names only a cookie.
  /// The faulting thread may be one of this server's own threads holding a range of this very file
  /// (Brian's lock-up): take the range with the attr's page_in_self_conflict policy, as
  /// iofunc_page_in_default does, never plainly. Must not touch the client's mappings.
  handler_slot<msg::page_in> page_in;
  /// Path messages (QNX connect functions): `path` (and `from`/`to`, `linkpath`/`target`) are below the
  /// attached prefix, as for open; q.client is the caller whose permissions apply. Reply status 0.
  /// mkdir(2) (q.mode), mknod(2) (q.mode with the file type, q.dev), unlink(2), rmdir(2),
  /// renameat2(2) (q.flags: RENAME_NOREPLACE, RENAME_EXCHANGE), link(2), symlink(2) (target: the link's
  /// contents, not resolved). ramfs serves them from its name tree (resmgr/name_tree.hpp).
  handler_slot<msg::mkdir> mkdir;
  handler_slot<msg::mknod> mknod;
  handler_slot<msg::unlink> unlink;
  handler_slot<msg::rmdir> rmdir;
  handler_slot<msg::rename> rename;
  handler_slot<msg::link> link;
  handler_slot<msg::symlink> symlink;
  /// readlink(2) on an O_PATH | O_NOFOLLOW open (or by path): write the target into the reply data
  /// (truncated to ctx.rcv.reply_data_len()) and return ok(bytes); EINVAL for a non-symlink.
  handler_slot<msg::readlink> readlink;
  /// readdir: whole io_dirent records from position q.offset into the reply data; ok(bytes), 0 at the
  /// end; EINVAL if not even one record fits; ENOTDIR for a non-directory.
  handler_slot<msg::readdir> readdir;
  /// fchmod/chmod, fchown/chown/lchown, futimens/utimensat, on any open (O_PATH included) or by path:
  /// permission rules as Linux (iofunc_chmod_default, iofunc_chown_default, iofunc_utimens_default).
  handler_slot<msg::chmod> chmod;
  handler_slot<msg::chown> chown;
  handler_slot<msg::utimens> utimens;
  /// fsync/fdatasync (q.datasync): ok(0) once the file's completed writes are durable.
  handler_slot<msg::fsync> fsync;
  /// fallocate(2): q.mode 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
  handler_slot<msg::fallocate> fallocate;
  /// fstatvfs/statvfs: fill the reply header.
  handler_slot<msg::statfs> statfs;
  /// access(2) (q.mode F_OK or R_OK | W_OK | X_OK), checked for q.client.
  handler_slot<msg::access> access;
  /// The open file's data version: ok(v), v > 0, where v changes whenever the file's bytes or size
  /// change through a message (a write, a truncate, an O_TRUNC open, a fallocate), and stays the same
  /// while they do not; ok(0) when they can change without a new version (the file is mapped: stores
  /// through a mapping count nothing). A cache of the file's bytes (the FUSE bridge's page cache) that
  /// was filled after it read v is still exact while the version is v. The default:
  /// iofunc_data_version_default (iofunc_attr::data_version()).
  /// Served only while write, ftruncate, fallocate and mmap hold exactly the functions named in
  /// `data_version_writers` (the server checks at construction and otherwise empties this slot:
  /// ENOSYS), so a server that replaces or wraps one of them is never trusted to count its changes.
  /// An open handler that truncates (O_TRUNC) must do it with iofunc_attr::set_size, which counts.
  handler_slot<msg::data_version> data_version;
  /// The data-changing handlers data_version's answer accounts for (see data_version).
  data_writer_fns data_version_writers{};
};

/// A list of message definitions.
template <class... M>
struct message_list {
  static constexpr std::size_t size = sizeof...(M);
};
/// Every message a server dispatches.
using io_messages = message_list<msg::open, msg::close, msg::read, msg::write, msg::lseek, msg::fstat, msg::ftruncate,
                                 msg::mmap, msg::page_in, msg::mkdir, msg::mknod, msg::unlink, msg::rmdir, msg::rename,
                                 msg::link, msg::symlink, msg::readlink, msg::readdir, msg::chmod, msg::chown,
                                 msg::utimens, msg::fsync, msg::fallocate, msg::statfs, msg::access, msg::read_visit,
                                 msg::data_version>;

namespace detail {
/// Calls handler slot `fn` of message M with the arguments its shape takes (see the header comment).
/// `target` is ocb_base& or ocb_base*.
template <class M, class Fn, class Target>
io_result call_handler(Fn& fn, request_context& ctx, Target&& target, const typename M::request& q, typename M::reply& rep) {
  if constexpr (std::is_invocable_r_v<io_result, Fn&, request_context&, Target, const typename M::request&, typename M::reply&>)
    return fn(ctx, target, q, rep);
  else if constexpr (std::is_invocable_r_v<io_result, Fn&, request_context&, Target, const typename M::request&>)
    return fn(ctx, target, q);
  else if constexpr (std::is_invocable_r_v<io_result, Fn&, request_context&, Target, typename M::reply&>)
    return fn(ctx, target, rep);
  else
    return fn(ctx, target);
}
}  // namespace detail

}  // namespace faultsafe
