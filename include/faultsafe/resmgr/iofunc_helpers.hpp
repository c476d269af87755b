// faultsafe/resmgr/iofunc_helpers.hpp: helpers for writing your own io_funcs handlers (the QNX
// iofunc_*_verify / reply helpers): verify an open, a read or a write; reply with bytes from a buffer;
// advance the OCB's offset; fill a struct stat; read a write's payload ONCE, validate it, and store
// exactly the validated bytes.
//
// Defines `io_span` (what a verified read or write may transfer), `iofunc_open_verify` (the
// permission-checking overload; the flags-only one is in resmgr/iofunc.hpp),
// `iofunc_ocb_init`, `iofunc_read_verify`, `iofunc_write_verify`, `iofunc_rw_done`,
// `iofunc_reply_bytes`, `iofunc_stat_info` / `iofunc_stat_fill`, `iofunc_read_payload`,
// `iofunc_write_bytes` and `iofunc_write_validated`. The handler contract these implement is
// documented on io_funcs (resmgr/server.hpp).
//
// Contract
// - Offsets: a request with use_offset (pread/pwrite) transfers at q.offset and leaves the OCB's offset
//   alone; one without (read/write) transfers at the OCB's offset and the handler advances it by the
//   bytes transferred (io_span::advance; iofunc_rw_done() does it). O_APPEND without use_offset writes
//   at the file's size as seen under the handler's exclusive lock (io_span::append).
// - Sizes: a read transfers at most min(q.nbytes, ctx.rcv.reply_data_len()) bytes, a write at most
//   min(q.nbytes, ctx.rcv.payload_len()) (io_span::nbytes); the handler's io_result value is the count
//   it transferred, which the client's call returns.
// - Client memory: the payload of a write lives in the client's memory, which the client (another
//   thread of it, or a mapping) may change while the handler runs. A handler that validates what it
//   stores reads the payload once into server memory (iofunc_read_payload) and stores those bytes
//   (iofunc_write_bytes); iofunc_write_validated does both around a validator.
//
// Errors (std::error_code, generic_category): EBADF (read on an open without read access, write or
// truncate without write access), EINVAL (bad O_ACCMODE, negative offset), EACCES (permission),
// EOVERFLOW (offset + nbytes overflows off_t), EFBIG (a write starting at or past the file's maximum
// size; one straddling it is a short count), ENOMEM (no
// server memory for a payload copy), and what the channel copy returns (EFAULT, ECANCELED, EMSGSIZE).
// Thread-safety: the helpers are stateless; concurrent handlers on one OCB share its offset as read()
// and write() on one fd do (see resmgr/process.hpp). Lock order: iofunc_write_bytes takes the attr's
// range lock (rank 30) and then its meta lock (rank 40), like iofunc_write_default; the others take
// no lock.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "iofunc.hpp"
#include "server.hpp"

namespace faultsafe {

/// What a verified read or write may transfer (iofunc_read_verify / iofunc_write_verify).
struct io_span {
  std::uint64_t offset = 0;  ///< first file byte (meaningless when append)
  std::uint64_t nbytes = 0;  ///< at most this many bytes: q.nbytes clipped to the client's buffer
  bool advance = false;      ///< read()/write(): the OCB's offset moves by the bytes transferred
  bool append = false;       ///< O_APPEND write(): the bytes go at the file's size, under the lock
};

/// Verifies an open against a file's (mode, uid, gid): iofunc_open_verify(q.flags) (EINVAL for a bad
/// O_ACCMODE), then the permission bits for the caller (EACCES; O_TRUNC needs write permission whatever
/// the access mode, as on Linux: iofunc_open_permission; uid 0 may do anything). On success stores the
/// open's access_read/access_write bits in *access (if given). Complexity: O(1). Throws: nothing.
[[nodiscard]] inline std::error_code iofunc_open_verify(const request_context& ctx, const io_open_request& q, mode_t mode,
                                                        std::uint32_t uid, std::uint32_t gid, int* access = nullptr) noexcept {
  int want = 0;
  if (auto ec = iofunc_open_verify(q.flags, &want)) return ec;
  if (!iofunc_check_access(mode, uid, gid, ctx.client, iofunc_open_permission(q.flags, want)))
    return std::make_error_code(std::errc::permission_denied);
  if (access) *access = want;
  return {};
}

/// Effects: fills the open's flags and access bits of `o` (as iofunc_open_default does) from a
/// verified open. `o.attr` is left to the caller (a computed file may have none).
inline void iofunc_ocb_init(iofunc_ocb& o, const io_open_request& q, int access) noexcept {
  o.flags = q.flags;
  o.readable = (access & access_read) != 0;
  o.writable = (access & access_write) != 0;
}

namespace detail {
// The start offset of a transfer of n bytes: EINVAL if negative, EOVERFLOW if off + n overflows off_t.
inline std::error_code span_offset(const iofunc_ocb& o, const io_rw_request& q, io_span& s) noexcept {
  s.advance = q.use_offset == 0;
  const std::int64_t start = q.use_offset ? q.offset : o.offset.load(std::memory_order_relaxed);
  if (start < 0) return std::make_error_code(std::errc::invalid_argument);
  s.offset = static_cast<std::uint64_t>(start);
  if (s.nbytes > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - s.offset)
    return std::make_error_code(std::errc::value_too_large);
  return {};
}
}  // namespace detail

/// Verifies a read (QNX iofunc_read_verify): EBADF unless `o` was opened for reading; the offset is
/// q.offset with use_offset, else the OCB's (EINVAL if negative); nbytes = min(q.nbytes, the client's
/// reply buffer); EOVERFLOW if offset + nbytes overflows off_t. Fills `s`. Throws: nothing.
[[nodiscard]] inline std::error_code iofunc_read_verify(const request_context& ctx, const iofunc_ocb& o,
                                                        const io_rw_request& q, io_span& s) noexcept {
  if (!o.readable) return std::make_error_code(std::errc::bad_file_descriptor);
  s = io_span{};
  s.nbytes = std::min<std::uint64_t>(q.nbytes, ctx.rcv.reply_data_len());
  return detail::span_offset(o, q, s);
}

/// Verifies a write (QNX iofunc_write_verify): EBADF unless `o` was opened for writing; O_APPEND
/// without use_offset sets s.append (the handler writes at the size it sees under its lock, and clips
/// there); else the offset as for a read; nbytes = min(q.nbytes, the client's payload); EOVERFLOW if
/// offset + nbytes overflows off_t; EFBIG if a non-empty write starts at or past `max_size`, and a
/// write straddling it is clipped to end there (a short count, as on Linux). Fills `s`. Throws: nothing.
[[nodiscard]] inline std::error_code iofunc_write_verify(
    const request_context& ctx, const iofunc_ocb& o, const io_rw_request& q, io_span& s,
    std::uint64_t max_size = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) noexcept {
  if (!o.writable) return std::make_error_code(std::errc::bad_file_descriptor);
  s = io_span{};
  s.nbytes = std::min<std::uint64_t>(q.nbytes, ctx.rcv.payload_len());
  if ((o.flags & O_APPEND) && !q.use_offset) {
    s.append = true;
    s.advance = true;
    return {};
  }
  if (auto ec = detail::span_offset(o, q, s)) return ec;
  if (s.nbytes == 0) return {};
  if (s.offset >= max_size) return std::make_error_code(std::errc::file_too_large);
  s.nbytes = std::min(s.nbytes, max_size - s.offset);
  return {};
}

/// Effects: the transfer of `n` bytes of `s` is done: moves the OCB's offset to s.offset + n when
/// s.advance (`s.offset` is where the bytes went: for an append, the size it wrote at). Returns
/// io_result::ok(n), the handler's answer. Throws: nothing.
inline io_result iofunc_rw_done(iofunc_ocb& o, const io_span& s, std::uint64_t n) noexcept {
  if (s.advance) o.offset.store(static_cast<std::int64_t>(s.offset + n), std::memory_order_relaxed);
  return io_result::ok(static_cast<std::int64_t>(n));
}

/// A read of a file whose contents are `data[0, size)` (a computed file, a snapshot): copies the bytes
/// of [s.offset, s.offset + s.nbytes) that lie below `size` into the client's reply buffer, advances
/// the offset (iofunc_rw_done) and returns the count (0 at or past the end; a short count when the
/// client's buffer turns bad part-way). Errors: what write_reply_data returns (EFAULT when nothing
/// could be copied, ECANCELED). Throws: nothing.
inline io_result iofunc_reply_bytes(request_context& ctx, iofunc_ocb& o, const io_span& s, const void* data,
                                    std::size_t size) noexcept {
  if (s.offset >= size) return iofunc_rw_done(o, s, 0);
  std::uint64_t n = std::min<std::uint64_t>(s.nbytes, size - s.offset);
  if (n > 0) {
    std::size_t copied = 0;
    if (auto ec = ctx.rcv.write_reply_data(0, static_cast<const unsigned char*>(data) + s.offset, n, &copied)) {
      if (copied == 0 || ec != std::errc::bad_address) return io_result::fail(ec);
      n = copied;
    }
  }
  return iofunc_rw_done(o, s, n);
}

/// What iofunc_stat_fill puts into a struct stat for a file without an iofunc_attr (a computed file).
struct iofunc_stat_info {
  mode_t mode = S_IFREG | 0444;  ///< type and permission bits
  std::uint32_t uid = 0, gid = 0;
  std::uint64_t size = 0;
  std::uint64_t ino = 0;
  timespec mtime{};  ///< 0: now
};

/// Effects: fills `st` (fstat's reply) from `i`: size, blocks of 512 bytes, block size 4096, one
/// link, times = mtime (or now). Throws: nothing.
inline void iofunc_stat_fill(struct ::stat& st, const iofunc_stat_info& i) noexcept {
  st = {};
  st.st_mode = i.mode;
  st.st_uid = i.uid;
  st.st_gid = i.gid;
  st.st_nlink = 1;
  st.st_ino = static_cast<ino_t>(i.ino);
  st.st_size = static_cast<off_t>(i.size);
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((i.size + 511) / 512);
  timespec t = i.mtime;
  if (t.tv_sec == 0 && t.tv_nsec == 0) ::clock_gettime(CLOCK_REALTIME, &t);
  st.st_atim = st.st_mtim = st.st_ctim = t;
}

/// Effects: copies the write's payload bytes [0, s.nbytes) from the client's memory into `out`
/// (resized to s.nbytes), ONCE: what the handler validates afterwards is what it stores, whatever the
/// client does to its buffer meanwhile. Errors: ENOMEM, and what read_payload returns (EFAULT,
/// ECANCELED); a short copy is EFAULT. Throws: nothing.
[[nodiscard]] inline std::error_code iofunc_read_payload(request_context& ctx, const io_span& s, std::string& out) noexcept {
  try {
    out.resize(static_cast<std::size_t>(s.nbytes));
  } catch (...) {
    return std::make_error_code(std::errc::not_enough_memory);
  }
  if (s.nbytes == 0) return {};
  std::size_t got = 0;
  if (auto ec = ctx.rcv.read_payload(0, out.data(), out.size(), &got)) return ec;
  if (got != out.size()) return std::make_error_code(std::errc::bad_address);
  return {};
}

/// A write of `n` bytes of server memory `bytes` (e.g. a validated copy of the payload) into the
/// attr's file at `s` (verified by iofunc_write_verify with the attr's max_size): under an exclusive
/// range lock over exactly those bytes (append: from the size to the end, re-checked after the grant;
/// the whole file when the file must move to a larger extent, iofunc_attr::write_span),
/// clipped at max_size (a short count), the store reserved first and the size published after the
/// copy, as iofunc_write_default does; then the times and the offset (iofunc_rw_done). Returns the
/// count. Requires: o.attr. Errors: EBADF without an attr, EFBIG (starts at or past max_size), the
/// memfd's errno (nothing changed then). Throws: what range_guard throws (std::system_error EDEADLK
/// under a self-conflict policy fail), std::bad_alloc.
inline io_result iofunc_write_bytes(iofunc_ocb& o, io_span s, const void* bytes, std::size_t n) {
  if (!o.attr) return io_result::fail(EBADF);
  iofunc_attr& a = *o.attr;
  std::uint64_t len = std::min<std::uint64_t>(n, s.nbytes);
  if (len == 0) return iofunc_rw_done(o, s, 0);
  std::optional<range_guard> g;
  if (auto ec = detail::lock_write_range(a, g, s.append, s.offset, len)) return io_result::fail(ec);
  if (auto ec = a.reserve(s.offset + len)) return io_result::fail(ec);
  std::memcpy(a.data() + s.offset, bytes, static_cast<std::size_t>(len));  // server memory: cannot fault
  detail::finish_write(a, g, s.offset, len, len);
  return iofunc_rw_done(o, s, len);
}

/// A validating write: verifies it (iofunc_write_verify against the attr's max_size), reads the
/// payload once (iofunc_read_payload), calls `validate(std::string_view bytes) -> std::error_code` on
/// that copy, and stores exactly those bytes (iofunc_write_bytes) if it returned no error (else replies
/// its error and stores nothing). Requires: o.attr. Throws: what validate or iofunc_write_bytes throw.
template <class Validate>
io_result iofunc_write_validated(request_context& ctx, iofunc_ocb& o, const io_rw_request& q, Validate&& validate) {
  if (!o.attr) return io_result::fail(EBADF);
  io_span s;
  if (auto ec = iofunc_write_verify(ctx, o, q, s, o.attr->max_size())) return io_result::fail(ec);
  std::string bytes;
  if (auto ec = iofunc_read_payload(ctx, s, bytes)) return io_result::fail(ec);
  if (std::error_code ec = validate(std::string_view(bytes))) return io_result::fail(ec);
  return iofunc_write_bytes(o, s, bytes.data(), bytes.size());
}

}  // namespace faultsafe
