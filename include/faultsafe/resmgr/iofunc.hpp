// faultsafe/resmgr/iofunc.hpp: per-file attributes, per-open OCBs and the default I/O handlers.
//
// Defines `attr_options`, `iofunc_attr` (one file: mode, owner, size, times, its data store, the data
// range lock and the short meta lock), `iofunc_ocb` (one open: attr, offset, flags, access),
// `iofunc_check_access()`, and the default handlers iofunc_open_default / read / read_visit / write / lseek / fstat /
// ftruncate / mmap / page_in (the pager's page-in, resmgr/process_memory.hpp), which a server plugs into its io_funcs (resmgr/ramfs.hpp does),
// and iofunc_read_exclusive, the seed's naive read handler (the whole file exclusively during the copy).
//
// Data store (resmgr/file_store.hpp): a file's bytes live in one contiguous extent of its store's
// arena memfd, at iofunc_attr::store_offset() (attr_options::store; by default one store per OS process,
// ramfs makes one per server), so an unmapped file costs no file descriptor and no mapping of its own.
// `iofunc_attr::data()` is the server-side pointer to byte 0 of the file, stable while the caller holds
// any range of the file: the direct-copy path memmoves store to store, the page-in makes pages of
// memfd() present at store_offset() + offset, and a client mapping is a mapping of memfd() there. A file
// starts in a 4 KiB extent and moves to a larger size class when a write or truncate needs more than
// capacity(); the mover holds the whole file exclusively (write_span() names the range a writer must
// take), and a file that is mapped first moves into a memfd of its own of its final capacity
// (make_mappable(): memfd() is then the file's, store_offset() 0, capacity >= max_size), where it stays,
// so every mapping of it, and the fd another process gets for it (resmgr/remote.hpp), is its own.
// A write reserves the bytes it will fill past the size (reserve(): the file fits them) and publishes
// the new size only after the copy (grow_to()), so a write that fails changes nothing. Bytes of the
// extent at or past the size are zero except inside a range that a writer holds, and except for bytes
// of the last page that a mapping wrote past the end: a shrink punches the extent from the new end (its
// pages leave every mapping; a later touch past the end gets SIGBUS from the page-in; written
// MAP_PRIVATE pages: see "Shrink and MAP_PRIVATE" below) and a truncate that
// grows the file zeroes the rest of the old last page; a write past the end leaves that page's tail as
// it is (the writer holds only its own bytes). Every growth of the size (grow_to, set_size) calls
// file_grown() over the new bytes, after publishing the size, with the growth's range lock held:
// client pages that a page-in refused past the old end (SIGBUS) are served again (vm/poisoned_pages.hpp).
//
// MAP_PRIVATE: a private mapping maps the file's memfd MAP_PRIVATE (vm/aspace.hpp): a page not yet
// written is the page cache's page, mapped read-only, so it shows later writes, stores through shared
// mappings and truncates of the file, as on Linux; its first write is the kernel's copy-on-write, and
// from then on it is the mapping's own. read(2) into a private page (resmgr/direct_copy.hpp) makes it
// the mapping's own the same way.
//
// Shrink and MAP_PRIVATE: the shrink's punch removes the file's pages from every mapping, the unwritten
// private pages with them (their next touch past the end gets SIGBUS from the page-in, as on Linux),
// but not a private page that was written (an anonymous copy). set_size() then drops those copies in
// whole pages from the new end (file_shrunk(), vm/private_copies.hpp), as Linux's truncate_pagecache
// does, so every access there is SIGBUS, and zeros after a growth; the page that holds the new end
// keeps its copy, as on Linux. Only this process's mappings: a client in another OS process keeps
// such a copy (README, "Known differences").
//
// Locking (the README's lock hierarchy): handlers take the range lock (rank 30) only over the bytes they touch,
// then the meta lock (rank 40) for a few instructions (size, times). Never the other
// way round, and the meta lock is never held while touching client memory.
// - read: shared on [off, off + n) clipped to the size; re-clipped after the lock is granted.
//   read_visit: the same, held while the sender's visitor takes the bytes in place.
// - write: exclusive on [off, off + n); O_APPEND: exclusive on [size, end), re-checked after grant.
// - ftruncate: exclusive on [min(old, new), end), re-checked after grant.
// - a write or ftruncate that moves the file (its end passes capacity()): exclusive on the whole file.
// - mmap of a file not yet in its final class: exclusive on the whole file, once.
// The copy to/from the client's buffer runs while the range is held: a fault on that buffer is taken by
// the server thread holding the range (Brian's lock-up when the buffer maps the same file). Two cures:
// resmgr/direct_copy.hpp serves such reads/writes without the fault (ramfs uses it by default), and
// the fault-reentrancy guard of iofunc_page_in_default (attr_options::page_in_self_conflict) serves the
// page-in of a fault that conflicts only with its own activity under that activity (or fails it with
// EDEADLK), reporting a self_deadlock with the fault and the page-in (violation_context).
//
// Errors: EACCES (open without permission), EBADF (read on O_WRONLY, write/ftruncate on O_RDONLY; an
// OCB that is not an iofunc_ocb), EINVAL (negative offset or length, bad whence, bad access mode),
// EOVERFLOW (offset + length or a seek overflows off_t), EFBIG (a write that starts at or past max_size,
// a truncate beyond it), EFAULT (nothing could be copied from/to the client's buffer), ENOMEM/ENOSPC/
// errno from the store. Reads at or past the end return 0.
// Failed calls have no side effects: every handler validates everything before its first change, and a
// call that returns an error leaves the file (existence, size, bytes, times) and the OCB's offset as
// they were. Partial success is a short count, as on Linux: a write straddling max_size writes up to
// it, a write whose client buffer turns bad part-way writes the bytes before the bad page, and a read
// whose client buffer turns bad part-way reads the bytes before it (the offset advances by those).
//
// Own OCB types: a server that keeps these defaults but wants per-open state derives its OCB from
// iofunc_ocb and constructs it with iofunc_open_default<MyOcb>() (a type not derived from iofunc_ocb
// is rejected at compile time); its own handlers get it back with iofunc_ocb_cast<MyOcb>(). The
// defaults refuse an OCB that is not an iofunc_ocb with EBADF (never a crash).
// Thread-safety: an iofunc_attr is shared by every open of the file and safe for concurrent handlers.
// Lifetime: an attr lives as long as a directory entry or an OCB refers to it (shared_ptr).
// Memory ordering: (1)/(2) on the size (a reader that sees a size sees the bytes published with it); the
// atime flag and the OCB offset are relaxed (a hint; the offset is shared without serialisation, as
// documented in resmgr/process.hpp); the inode counter is relaxed; the extent (memfd, offset, capacity,
// data pointer) is relaxed: it changes only under the whole-file range lock, whose grant orders every user
// of data() after the move, and lock-free readers (write_span, direct copy's same-file test) only
// compare it (a stale value means a whole-file lock taken needlessly, or a mapping of another file).
#pragma once

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "../config.hpp"
#include "../detail/fault_injection.hpp"
#include "../detail/guarded_copy.hpp"
#include "../order/ranked_mutex.hpp"
#include "../sync/range_lock.hpp"
#include "../vm/poisoned_pages.hpp"
#include "../vm/private_copies.hpp"
#include "file_store.hpp"
#include "server.hpp"

namespace faultsafe {

struct attr_options {
  /// Largest file size. Writes or truncates beyond it fail with EFBIG; a mapped file reserves this
  /// much server address space (its final extent, file_store.hpp).
  std::uint64_t max_size = std::uint64_t{256} << 20;
  const char* name = "ramfs file";  ///< a label for the file (label())
  /// The fault-reentrancy guard (the README's "Brian's lock-up", mechanism 2): what a page-in does when its range conflicts
  /// ONLY with ranges its own activity holds (Brian: the server thread holding the range faulted on a
  /// mapping of this file and waits for this very page-in). grant (default): served at once under the
  /// owning activity; fail: EDEADLK (the faulting access gets SIGBUS, so the holder's copy fails with
  /// EFAULT); wait: the naive behaviour (a lock-up that only the wait-for graph can end). grant and fail
  /// report a self_deadlock violation naming the holders, the fault and the page-in.
  self_conflict page_in_self_conflict = self_conflict::grant;
  /// Where the bytes live; nullptr: file_store::process_default() (one arena per OS process).
  std::shared_ptr<file_store> store = nullptr;
};

/// One file. See the header comment.
class iofunc_attr {
 public:
  /// Effects: takes a 4 KiB extent of the store (an empty file). Throws: std::system_error with the
  /// errno of the store (file_store::allocate; memfd_create for the process's default store).
  iofunc_attr(mode_t mode, std::uint32_t uid, std::uint32_t gid, attr_options opts = {})
      : mode_((mode & S_IFMT) ? (mode & (S_IFMT | 07777)) : (S_IFREG | (mode & 07777))), uid_(uid), gid_(gid), max_size_(opts.max_size), ino_(next_ino()),
        page_in_policy_(opts.page_in_self_conflict), label_(opts.name != nullptr ? opts.name : ""),
        store_(opts.store ? std::move(opts.store) : file_store::process_default()) {
    store_extent e;
    if (auto ec = store_->allocate(file_store::class_for(0, max_size_), e)) throw std::system_error(ec, "file_store::allocate");
    publish(e);
    ::clock_gettime(CLOCK_REALTIME, &atime_);
    mtime_ = ctime_ = atime_;
  }
  /// Effects: returns the extent to the store (punched and recycled).
  ~iofunc_attr() { store_->release(extent()); }
  iofunc_attr(const iofunc_attr&) = delete;
  iofunc_attr& operator=(const iofunc_attr&) = delete;

  /// The data range lock (rank 30): take it over the bytes you touch.
  range_lock data_lock{"attr range", rank::attr_range};

  /// The memfd that holds the file's bytes at [store_offset(), store_offset() + capacity()): the store's
  /// arena (the other bytes belong to other files), or once the file is mappable() its own memfd
  /// (offset 0; file_store.hpp "Mappings: a file of its own"). Owned by the store; changes only when the
  /// file moves; the own memfd is closed when the attr dies.
  [[nodiscard]] int memfd() const noexcept { return ext_fd_.load(std::memory_order_relaxed); }
  /// Offset of the file's byte 0 in memfd(). Changes only when the file moves (see grow_to).
  [[nodiscard]] std::uint64_t store_offset() const noexcept { return ext_offset_.load(std::memory_order_relaxed); }
  /// Bytes the file can hold without moving.
  [[nodiscard]] std::uint64_t capacity() const noexcept { return ext_capacity_.load(std::memory_order_relaxed); }
  /// Server-side pointer to byte 0 of the file. Requires: the caller holds a range of the file (a move
  /// changes the pointer under the whole-file range) and touches only bytes below size() under it.
  [[nodiscard]] unsigned char* data() const noexcept { return data_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t max_size() const noexcept { return max_size_; }
  [[nodiscard]] std::uint64_t ino() const noexcept { return ino_; }
  [[nodiscard]] const std::string& label() const noexcept { return label_; }
  [[nodiscard]] const std::shared_ptr<file_store>& store() const noexcept { return store_; }
  /// True once the file sits in a memfd of its own, of its final capacity (capacity() >= max_size()):
  /// it never moves again.
  [[nodiscard]] bool mappable() const noexcept { return memfd() != store_->fd(); }
  /// The range [first, first + length) a writer of [off, off + n) (or a truncate to off + n) must hold
  /// exclusively: {off, n}, or the whole file {0, to_end} when the file must move first. Capacity never
  /// shrinks, so a span computed before locking stays sufficient after.
  [[nodiscard]] std::pair<std::uint64_t, std::uint64_t> write_span(std::uint64_t off, std::uint64_t n) const noexcept {
    if (off + n > capacity()) return {0, to_end};
    return {off, n};
  }
  /// The page-in self-conflict policy (attr_options::page_in_self_conflict).
  [[nodiscard]] self_conflict page_in_self_conflict() const noexcept { return page_in_policy_; }

  /// The data version: > 0, and incremented whenever a change of the file's bytes or size is stamped
  /// (written(), set_size() and O_TRUNC opens through it, a fallocate: every change that moves mtime),
  /// after the change. Stores through mappings count nothing (iofunc_data_version_default answers 0 for
  /// a mappable() file). Lock-free: (3) release increment under the meta lock, read with (4) acquire, pairs
  /// with (3): a reader that sees a version sees every byte changed before it was counted.
  [[nodiscard]] std::uint64_t data_version() const noexcept { return version_.load(std::memory_order_acquire); }  // (4)
  /// Current size. Lock-free: written under the meta lock, read with (1) acquire, pairs with (2); a
  /// reader that sees a size also sees the bytes zeroed for it.
  [[nodiscard]] std::uint64_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  [[nodiscard]] mode_t mode() {
    exclusive_guard<meta_mutex> g(meta_);
    return mode_;
  }
  [[nodiscard]] std::uint32_t uid() {
    exclusive_guard<meta_mutex> g(meta_);
    return uid_;
  }
  [[nodiscard]] std::uint32_t gid() {
    exclusive_guard<meta_mutex> g(meta_);
    return gid_;
  }

  /// Effects: makes the file's extent hold bytes up to `end` (the size is unchanged), moving the file to
  /// a larger class if end > capacity() (data() and store_offset() change), so that data()[0, end) may
  /// be written. Requires: the caller holds the range lock exclusively over the bytes it will write past
  /// the size, and over the whole file when end > capacity(): write_span(off, end - off) is that range.
  /// Returns: EFBIG past max_size, the store's errno (the file is then unchanged).
  [[nodiscard]] std::error_code reserve(std::uint64_t end) {
    if (end > max_size_) return std::make_error_code(std::errc::file_too_large);
    return fit(end);
  }
  /// Effects: size = max(size, end), reserving first. Requires: as reserve(). Returns: as reserve().
  [[nodiscard]] std::error_code grow_to(std::uint64_t end) {
    if (auto ec = reserve(end)) return ec;
    std::uint64_t old = 0;
    {
      exclusive_guard<meta_mutex> g(meta_);
      old = size_.load(std::memory_order_relaxed);
      if (end > old) size_.store(end, std::memory_order_release);  // (2) release, pairs with (1)
    }
    grown(old, end);
    return {};
  }
  /// Effects: zeroes the bytes of [from, to) at or past the size (a failed write's reserved bytes, so
  /// that a later growth shows zeros there). Requires: the range lock held exclusively over [from, to),
  /// to <= capacity().
  void discard_unpublished(std::uint64_t from, std::uint64_t to) noexcept {
    from = std::max(from, size());
    if (from < to) std::memset(data() + from, 0, static_cast<std::size_t>(to - from));
  }
  /// Effects: size = len (mtime and ctime = now if it changes). Shrinking punches the extent from len (the pages leave every mapping; a
  /// later touch at or past the end gets SIGBUS); growing moves the file first if len > capacity() and
  /// reads as zeros (the rest of the old last page too). Requires: the caller holds the range lock
  /// exclusively over [min(size, len), to_end), and over the whole file when len > capacity().
  /// Returns: EFBIG past max_size, the store's errno (the file is then unchanged).
  [[nodiscard]] std::error_code set_size(std::uint64_t len) {
    if (len > max_size_) return std::make_error_code(std::errc::file_too_large);
    if (auto ec = fit(len)) return ec;
    const std::uint64_t old = size();
    if (len < old) {
      // Only this caller may touch [len, end): zero it before the size says so. The pages leave the
      // store and every mapping; if the punch fails, the bytes are zeroed in place.
      const store_extent e = extent();
      if (store_->punch(e, len, e.capacity)) std::memset(e.data + len, 0, static_cast<std::size_t>(old - len));
    }
    {
      exclusive_guard<meta_mutex> g(meta_);
      zero_tail_locked(size_.load(std::memory_order_relaxed), len);
      size_.store(len, std::memory_order_release);  // (2)
      if (len != old) stamp_locked(false, true);  // POSIX: mtime and ctime change if the size does
    }
    grown(old, len);
    shrunk(old, len);
    return {};
  }
  /// Effects: moves the file into a memfd of its own of its final capacity (mappable(); file_store::
  /// allocate_own) unless it is there; memfd() is then this file's alone for the attr's life, so it may
  /// be mapped, and handed to another process, without exposing another file. Returns: the store's errno
  /// (EMFILE: no fd left; the file is then unchanged). Lock order: takes the range lock (rank 30)
  /// exclusively over the whole file when it moves; the caller must hold no range of this file.
  [[nodiscard]] std::error_code make_mappable() {
    if (mappable()) return {};
    range_guard g(data_lock, 0, to_end, lock_mode::exclusive);
    if (mappable()) return {};  // moved by another mapper while we waited
    return fit(max_size_, true);
  }
  /// The file type and permission bits given at construction keep their type (S_IFDIR, S_IFLNK,
  /// S_IFIFO, ...); a mode without type bits makes a regular file. rdev: the device of a device node
  /// (set before the node is published).
  [[nodiscard]] std::uint64_t rdev() const noexcept { return rdev_; }
  void set_rdev(std::uint64_t d) noexcept { rdev_ = d; }
  /// Link count (directory entries naming the node; a directory also counts its "." and every
  /// subdirectory's ".."). Lock-free read.
  [[nodiscard]] std::uint32_t nlink() const noexcept { return nlink_.load(std::memory_order_relaxed); }
  /// Effects: nlink += delta; ctime = now. Requires: the caller holds the lock of the directory whose
  /// entries change (the namespace serialises link count changes of one node).
  void add_links(int delta) {
    exclusive_guard<meta_mutex> g(meta_);
    nlink_.store(static_cast<std::uint32_t>(static_cast<int>(nlink_.load(std::memory_order_relaxed)) + delta), std::memory_order_relaxed);
    stamp_locked(false, false, true);
  }
  /// Effects: a directory's st_size += delta (tmpfs's convention: dir_entry_bytes per entry, "." and
  /// ".." included). Requires: the directory's lock held exclusively (it serialises its entries).
  void add_dir_bytes(std::int64_t delta) {
    exclusive_guard<meta_mutex> g(meta_);
    size_.store(static_cast<std::uint64_t>(static_cast<std::int64_t>(size_.load(std::memory_order_relaxed)) + delta), std::memory_order_relaxed);
  }
  /// The size a directory reports per entry (as tmpfs: BOGO_DIRENT_SIZE).
  static constexpr std::int64_t dir_entry_bytes = 20;
  /// Effects: ctime = now (a rename makes the node's change visible this way).
  void changed() {
    exclusive_guard<meta_mutex> g(meta_);
    stamp_locked(false, false, true);
  }
  /// Effects: the permission bits become `m & 07777` (the type stays); ctime = now. S_ISGID is dropped
  /// when `drop_sgid` (a caller outside the file's group, as chmod(2) does).
  void set_mode(mode_t m, bool drop_sgid) {
    exclusive_guard<meta_mutex> g(meta_);
    if (drop_sgid) m &= ~static_cast<mode_t>(S_ISGID);
    mode_ = (mode_ & S_IFMT) | (m & 07777);
    stamp_locked(false, false, true);
  }
  /// Effects: owner/group become uid/gid (~0u: unchanged); ctime = now; for a non-directory S_ISUID is
  /// cleared, and S_ISGID if group-executable (chown(2) on Linux).
  void set_owner(std::uint32_t uid, std::uint32_t gid) {
    exclusive_guard<meta_mutex> g(meta_);
    if (uid != ~0u) uid_ = uid;
    if (gid != ~0u) gid_ = gid;
    if (!S_ISDIR(mode_)) kill_suid_locked();
    stamp_locked(false, false, true);
  }
  /// Effects: atime = t[0], mtime = t[1] (tv_nsec UTIME_NOW: now, UTIME_OMIT: unchanged); ctime = now
  /// unless both are UTIME_OMIT.
  void set_times(const struct ::timespec t[2]) {
    if (t[0].tv_nsec == UTIME_OMIT && t[1].tv_nsec == UTIME_OMIT) return;
    exclusive_guard<meta_mutex> g(meta_);
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    if (t[0].tv_nsec != UTIME_OMIT) atime_ = t[0].tv_nsec == UTIME_NOW ? now : t[0];
    if (t[1].tv_nsec != UTIME_OMIT) mtime_ = t[1].tv_nsec == UTIME_NOW ? now : t[1];
    ctime_ = now;
    atime_stale_.store(false, std::memory_order_relaxed);
  }
  /// Effects: what a truncate does to the mode: unless the caller is privileged (uid 0), S_ISUID is
  /// cleared, and S_ISGID if group-executable or the caller is `outside_group` (not in the file's group:
  /// Linux, whether or not the size changes); ctime = now if the mode changed.
  void truncated(bool privileged, bool outside_group = false) {
    if (privileged) return;
    exclusive_guard<meta_mutex> g(meta_);
    const mode_t before = mode_;
    kill_suid_locked(outside_group);
    if (mode_ != before) stamp_locked(false, false, true);
  }
  /// Effects: what a successful write does besides the bytes: mtime = ctime = now, and unless the
  /// writer is privileged (uid 0) S_ISUID is cleared, and S_ISGID if group-executable or the writer is
  /// `outside_group` (not in the file's group; Linux).
  void written(bool privileged, bool outside_group = false) {
    exclusive_guard<meta_mutex> g(meta_);
    if (!privileged) kill_suid_locked(outside_group);
    stamp_locked(false, true);
  }
  /// Effects: updates the access time (read) or the modification+change times (write). Access times
  /// follow "relatime": a read updates atime only if the file was modified since atime was last set
  /// (so a stream of reads takes no lock and no clock reading).
  void touch(bool accessed, bool modified) {
    if (accessed && !modified && !atime_stale_.load(std::memory_order_relaxed)) return;
    exclusive_guard<meta_mutex> g(meta_);
    stamp_locked(accessed, modified);
  }
  /// Effects: fills `st` from the attr.
  void stat(struct ::stat& st) {
    exclusive_guard<meta_mutex> g(meta_);
    st = {};
    st.st_ino = static_cast<ino_t>(ino_);
    st.st_mode = mode_;
    st.st_nlink = nlink_.load(std::memory_order_relaxed);
    st.st_rdev = static_cast<dev_t>(rdev_);
    st.st_uid = uid_;
    st.st_gid = gid_;
    const std::uint64_t size = size_.load(std::memory_order_relaxed);
    st.st_size = static_cast<off_t>(size);
    st.st_blksize = 4096;
    // Blocks of 512 bytes in whole pages, as tmpfs counts them; a short symlink target is kept inline.
    const bool inline_link = S_ISLNK(mode_) && size < 128;
    st.st_blocks = inline_link ? 0 : static_cast<blkcnt_t>((size + 4095) / 4096 * 8);
    st.st_atim = atime_;
    st.st_mtim = mtime_;
    st.st_ctim = ctime_;
  }

 private:
  using meta_mutex = ranked_mutex<rank::attr_meta>;

  [[nodiscard]] store_extent extent() const noexcept { return store_extent{store_offset(), capacity(), data(), memfd()}; }
  void publish(const store_extent& e) noexcept {
    ext_fd_.store(e.fd, std::memory_order_relaxed);
    ext_offset_.store(e.offset, std::memory_order_relaxed);
    ext_capacity_.store(e.capacity, std::memory_order_relaxed);
    data_.store(e.data, std::memory_order_relaxed);
  }
  // Effects: moves the file to the class that holds `end` if it does not fit; with `own_memfd`, into a
  // memfd of its own of its final capacity (then `end` is max_size). Requires: end <= max_size and, if
  // the file moves, the whole file held exclusively: nobody else uses data() meanwhile (range holders
  // read the extent after their grant, which orders them after this move).
  std::error_code fit(std::uint64_t end, bool own_memfd = false) {
    if (end <= capacity() && !own_memfd) return {};
    store_extent e = extent();
    if (auto ec = store_->move(e, file_store::class_for(end, max_size_), size(), own_memfd)) return ec;
    publish(e);
    return {};
  }
  // Effects: after the size grew from `old` to `end` (published): pages of client mappings that a
  // page-in refused past the old end (poisoned, vm/poisoned_pages.hpp) are served again. Requires: the
  // range lock held as for the growth (the extent does not move meanwhile); no meta lock.
  void grown(std::uint64_t old, std::uint64_t end) const noexcept {
    if (end > old) file_grown(memfd(), store_offset() + old, store_offset() + end);
  }
  // Effects: after the size shrank from `old` to `end` (punched, published): the private copies that
  // this process's MAP_PRIVATE mappings hold of whole pages past the new end are dropped, as Linux's
  // truncate does (vm/private_copies.hpp); their next access is SIGBUS. Requires: the range lock held
  // exclusively from `end` (no page-in of those pages meanwhile); no meta lock.
  void shrunk(std::uint64_t old, std::uint64_t end) const noexcept {
    const std::uint64_t from = (end + file_store::page - 1) & ~std::uint64_t{file_store::page - 1};
    const std::uint64_t to = (old + file_store::page - 1) & ~std::uint64_t{file_store::page - 1};
    if (to > from) file_shrunk(memfd(), store_offset() + from, store_offset() + to);
  }
  // Effects: zeroes [old, min(end, end of old's page)): the part of the old last page that becomes file
  // bytes. Requires: meta lock; old <= end <= capacity().
  void zero_tail_locked(std::uint64_t old, std::uint64_t end) noexcept {
    if (end <= old || old % file_store::page == 0) return;
    const std::uint64_t stop = std::min(end, (old | (file_store::page - 1)) + 1);
    std::memset(data() + old, 0, static_cast<std::size_t>(stop - old));
  }

  static std::uint64_t next_ino() noexcept {
    static std::atomic<std::uint64_t> n{1};
    return n.fetch_add(1, std::memory_order_relaxed);
  }
  void kill_suid_locked(bool outside_group = false) noexcept {
    mode_ &= ~static_cast<mode_t>(S_ISUID);
    if ((mode_ & S_ISGID) && ((mode_ & S_IXGRP) || outside_group)) mode_ &= ~static_cast<mode_t>(S_ISGID);
  }
  void stamp_locked(bool accessed, bool modified, bool changed = false) noexcept {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    if (changed) ctime_ = now;
    if (accessed) {
      atime_ = now;
      atime_stale_.store(false, std::memory_order_relaxed);
    }
    if (modified) {
      mtime_ = ctime_ = now;
      atime_stale_.store(true, std::memory_order_relaxed);
      version_.fetch_add(1, std::memory_order_release);  // (3) release, pairs with (4)
    }
  }

  meta_mutex meta_{"attr meta"};
  mode_t mode_;
  std::uint32_t uid_, gid_;
  std::atomic<std::uint64_t> size_{0};     // written under meta_
  std::atomic<bool> atime_stale_{false};   // written under meta_: modified since atime was set
  std::atomic<std::uint64_t> version_{1};  // written under meta_ (see data_version())
  std::atomic<std::uint32_t> nlink_{1};    // written under meta_
  std::uint64_t rdev_ = 0;
  timespec atime_{}, mtime_{}, ctime_{};
  std::uint64_t max_size_;
  std::uint64_t ino_;
  self_conflict page_in_policy_;
  std::string label_;
  std::shared_ptr<file_store> store_;
  // The extent (file_store.hpp). Written only by a move, which holds the whole file exclusively; read
  // under a range (ordered by the range lock) or lock-free where a stale value is harmless.
  std::atomic<std::uint64_t> ext_offset_{0}, ext_capacity_{0};
  std::atomic<unsigned char*> data_{nullptr};
  std::atomic<int> ext_fd_{-1};
};

/// One open of a file. Derive from it to keep per-open state and the default handlers (see the header).
struct iofunc_ocb : ocb_base {
  [[nodiscard]] iofunc_ocb* as_iofunc_ocb() noexcept final { return this; }
  std::shared_ptr<iofunc_attr> attr;
  std::atomic<std::int64_t> offset{0};  ///< the fd offset (read/write/lseek without explicit offset)
  int flags = 0;                        ///< open flags
  bool readable = false, writable = false;
};

/// Returns: `base` as an Ocb (an iofunc_ocb or a type derived from it), or nullptr if it is not one.
/// Complexity: O(1): for iofunc_ocb (what every default handler asks, on every request) one virtual
/// call (ocb_base::as_iofunc_ocb), whatever type derived from it the server uses; for a type derived
/// from iofunc_ocb also a type comparison, and a dynamic_cast for types derived from Ocb. Throws: nothing.
template <class Ocb = iofunc_ocb>
[[nodiscard]] inline Ocb* iofunc_ocb_cast(ocb_base& base) noexcept {
  static_assert(std::is_base_of_v<iofunc_ocb, Ocb>, "iofunc_ocb_cast: Ocb must derive from iofunc_ocb");
  iofunc_ocb* const o = base.as_iofunc_ocb();
  if constexpr (std::is_same_v<Ocb, iofunc_ocb>) {
    return o;
  } else {
    if (o == nullptr) return nullptr;
    if (typeid(base) == typeid(Ocb)) return static_cast<Ocb*>(o);
    return dynamic_cast<Ocb*>(o);
  }
}

/// Access bits for iofunc_check_access.
inline constexpr int access_read = 4, access_write = 2, access_exec = 1;

/// True if `c` may access a file of (mode, uid, gid) for `want` (access_read | access_write).
/// uid 0 may do anything. Owner bits, else group bits (the caller's group or one of its supplementary
/// groups, client_in_group), else other bits (POSIX order).
[[nodiscard]] inline bool iofunc_check_access(mode_t mode, std::uint32_t uid, std::uint32_t gid, const client_info& c,
                                              int want) noexcept {
  // uid 0 may read and write anything, and execute (search) what has any x bit or is a directory.
  if (c.uid == 0) return !(want & access_exec) || S_ISDIR(mode) || (mode & 0111) != 0;
  unsigned bits;
  if (c.uid == uid)
    bits = (mode >> 6) & 7;
  else if (client_in_group(c, gid))
    bits = (mode >> 3) & 7;
  else
    bits = mode & 7;
  return (bits & static_cast<unsigned>(want)) == static_cast<unsigned>(want);
}

namespace detail {
inline io_result errc_result(std::errc e) noexcept { return io_result::fail(std::make_error_code(e)); }
// The answer of a default handler to an OCB that is not an iofunc_ocb.
inline io_result not_iofunc_ocb() noexcept { return errc_result(std::errc::bad_file_descriptor); }
}  // namespace detail

/// Effects: checks open flags that need no file: the access mode (EINVAL for O_ACCMODE). On success
/// *want = access_read and/or access_write (what the open may do). Call it before creating anything (an
/// open that fails must create nothing). Complexity: O(1). Throws: nothing.
[[nodiscard]] inline std::error_code iofunc_open_verify(int flags, int* want) noexcept {
  int w = 0;
  switch (flags & O_ACCMODE) {
    case O_RDONLY: w = access_read; break;
    case O_WRONLY: w = access_write; break;
    case O_RDWR: w = access_read | access_write; break;
    default: return std::make_error_code(std::errc::invalid_argument);
  }
  if (want != nullptr) *want = w;
  return {};
}

/// The permission an open with `flags` and access `want` (iofunc_open_verify) needs on an existing file:
/// `want`, plus write permission for O_TRUNC whatever the access mode (Linux: open(O_RDONLY | O_TRUNC)
/// by a caller who may write the file truncates it; one who may not gets EACCES; on a directory it is
/// EISDIR). Complexity: O(1). Throws: nothing.
[[nodiscard]] inline int iofunc_open_permission(int flags, int want) noexcept {
  return (flags & O_TRUNC) ? (want | access_write) : want;
}

/// Default open: iofunc_open_verify(), writing (or O_TRUNC of) a directory (EISDIR), the attr's
/// permissions (EACCES; O_TRUNC needs write permission, iofunc_open_permission),
/// then makes the OCB (an Ocb, constructed from `args`) and last applies O_TRUNC (regular files), so
/// that a failed open changes nothing. O_PATH: no access check, an OCB that can neither read nor write
/// (fstat, fchmod, fchown, futimens, readlink, fstatvfs, and every message addressed by path).
/// Requires: Ocb derives from iofunc_ocb (checked at compile time). Throws: std::bad_alloc, what Ocb's
/// constructor throws, what range_guard throws (nothing changed then).
template <class Ocb = iofunc_ocb, class... Args>
inline io_result iofunc_open_default(request_context& ctx, const io_open_request& q, std::shared_ptr<iofunc_attr> attr,
                                     std::shared_ptr<ocb_base>& out, Args&&... args) {
  static_assert(std::is_base_of_v<iofunc_ocb, Ocb>,
                "iofunc_open_default<Ocb>: the default handlers need an OCB derived from iofunc_ocb");
  int want = 0;
  if (q.flags & O_PATH) {  // no access check; the OCB can neither read nor write
    auto o = std::make_shared<Ocb>(std::forward<Args>(args)...);
    o->attr = std::move(attr);
    o->flags = q.flags;
    out = std::move(o);
    return io_result::ok();
  }
  if (auto ec = iofunc_open_verify(q.flags, &want)) return io_result::fail(ec);
  const mode_t mode = attr->mode();
  const int need = iofunc_open_permission(q.flags, want);
  if (S_ISDIR(mode) && (need & access_write)) return detail::errc_result(std::errc::is_a_directory);
  if (!iofunc_check_access(mode, attr->uid(), attr->gid(), ctx.client, need))
    return detail::errc_result(std::errc::permission_denied);
  auto o = std::make_shared<Ocb>(std::forward<Args>(args)...);
  if ((q.flags & O_TRUNC) && S_ISREG(mode)) {
    range_guard g(attr->data_lock, 0, to_end, lock_mode::exclusive);
    if (auto ec = attr->set_size(0)) return io_result::fail(ec);
    // open(O_TRUNC) of an existing file marks mtime and ctime even if it was empty, and clears set-id
    // bits of a caller other than root (Linux)
    attr->written(ctx.client.uid == 0, !client_in_group(ctx.client, attr->gid()));
  }
  o->attr = std::move(attr);
  o->flags = q.flags;
  o->readable = want & access_read;
  o->writable = want & access_write;
  out = std::move(o);
  return io_result::ok();
}

namespace detail {
// The offset a transfer of n bytes starting at `s` starts at: EINVAL if negative, EOVERFLOW if s + n
// overflows off_t.
inline std::error_code rw_offset_at(std::int64_t s, std::uint64_t n, std::uint64_t& off) noexcept {
  if (s < 0) return std::make_error_code(std::errc::invalid_argument);
  off = static_cast<std::uint64_t>(s);
  if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - off)
    return std::make_error_code(std::errc::value_too_large);
  return {};
}
// The offset a read/write starts at (rw_offset_at of the request's offset or the OCB's).
inline std::error_code rw_offset(const iofunc_ocb& o, const io_rw_request& q, std::uint64_t n, std::uint64_t& off) noexcept {
  return rw_offset_at(q.use_offset ? q.offset : o.offset.load(std::memory_order_relaxed), n, off);
}
}  // namespace detail

namespace detail {
// The locked part of every read handler: the n = min(want, size - off) bytes at `off` under the range
// lock in `mode` (over them, or with `whole_file` over the whole file), re-clipped after the grant,
// are handed in place to take(p, n), which returns how many it took (or an error); then the access
// time. ok(0) without locking at or past the end.
template <class Take>
io_result read_locked(iofunc_attr& a, std::uint64_t off, std::uint64_t want, bool whole_file, lock_mode mode, Take&& take) {
  std::uint64_t size = a.size();
  if (want == 0 || off >= size) return io_result::ok(0);
  std::uint64_t n = std::min(want, size - off);
  range_guard g(a.data_lock, whole_file ? 0 : off, whole_file ? to_end : n, mode);
  size = a.size();  // a truncate may have completed before we got the range
  n = off >= size ? 0 : std::min(n, size - off);
  (void)FAULTSAFE_INJECT(range_hold_stall);  // fault injection: stall holding the range (detail/fault_injection.hpp)
  if (n > 0) {
    const io_result r = take(static_cast<const unsigned char*>(a.data() + off), n);
    if (r.error) return r;
    n = static_cast<std::uint64_t>(r.value);
  }
  g.unlock();
  a.touch(true, false);
  return io_result::ok(static_cast<std::int64_t>(n));
}

// The read handlers: iofunc_read_default (whole_file false) and iofunc_read_exclusive (true).
inline io_result read_impl(request_context& ctx, ocb_base& base, const io_rw_request& q, bool whole_file) {
  iofunc_ocb* const op = iofunc_ocb_cast(base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  iofunc_ocb& o = *op;
  if (!o.readable) return detail::errc_result(std::errc::bad_file_descriptor);
  const std::uint64_t want = std::min<std::uint64_t>(q.nbytes, ctx.rcv.reply_data_len());
  std::uint64_t off = 0;
  if (auto ec = detail::rw_offset(o, q, want, off)) return io_result::fail(ec);
  const lock_mode mode = whole_file ? lock_mode::exclusive : lock_mode::shared;
  const io_result r = read_locked(*o.attr, off, want, whole_file, mode, [&](const unsigned char* p, std::uint64_t n) {
    // A client buffer that turns bad part-way: the bytes before the bad page are read (a short count,
    // read(2)); EFAULT only if nothing was copied.
    std::size_t copied = 0;
    if (auto ec = ctx.rcv.write_reply_data(0, p, n, &copied)) {
      if (copied == 0 || ec != std::errc::bad_address) return io_result::fail(ec);
      n = copied;
    }
    return io_result::ok(static_cast<std::int64_t>(n));
  });
  if (!r.error && r.value > 0 && !q.use_offset) o.offset.store(static_cast<std::int64_t>(off) + r.value, std::memory_order_relaxed);
  return r;
}
}  // namespace detail

/// Default read: copies min(n, size - off) bytes from the store straight into the client's buffer
/// under a shared range lock over exactly those bytes. Returns the byte count (0 at/after the end).
inline io_result iofunc_read_default(request_context& ctx, ocb_base& base, const io_rw_request& q) {
  return detail::read_impl(ctx, base, q, false);
}

/// The seed's naive read handler ("the resmgr library locks the structure of the file"): as
/// iofunc_read_default, but it holds the WHOLE file's range exclusively while it copies into the
/// client's buffer. A client buffer that maps this same file makes the copy fault on a page whose
/// page-in needs that range: Brian's lock-up, which only the fault-reentrancy guard
/// (attr_options::page_in_self_conflict) or the wait-for graph ends; direct copy
/// (resmgr/direct_copy.hpp) is not used by it. For demonstrations and tests of those cures
/// (examples/brian, tests/remote_mmap_test, bench/direct_copy_bench); a server uses iofunc_read_default
/// (or iofunc_direct_defaults()). Errors and offsets: as iofunc_read_default. Lock order: the attr's
/// range lock (rank 30) over [0, to_end) exclusively, for the copy; then the meta lock (atime).
inline io_result iofunc_read_exclusive(request_context& ctx, ocb_base& base, const io_rw_request& q) {
  return detail::read_impl(ctx, base, q, true);
}

/// Default read_visit (io_funcs::read_visit; it mirrors iofunc_read_default and iofunc_read_direct,
/// which copy the same bytes under the same lock): hands the min(q.nbytes, size - q.offset) bytes at
/// q.offset to q.visitor in place, in the store's server-side mapping (data()), under a shared range
/// lock over exactly those bytes, held until the visitor returns. Returns the byte count (0 at/after
/// the end: the visitor is not called), or the visitor's nonzero return as the error. EBADF without
/// read access, EINVAL for a negative offset or no visitor, EOVERFLOW if offset + nbytes overflows.
/// Lock order: the attr's range lock (rank 30) shared, across the visitor; then the meta lock (atime).
inline io_result iofunc_read_visit_default(request_context&, ocb_base& base, const io_read_visit_request& q) {
  iofunc_ocb* const o = iofunc_ocb_cast(base);
  if (o == nullptr) return detail::not_iofunc_ocb();
  if (!o->readable) return detail::errc_result(std::errc::bad_file_descriptor);
  if (q.visitor == nullptr) return detail::errc_result(std::errc::invalid_argument);
  std::uint64_t off = 0;
  if (auto ec = detail::rw_offset_at(q.offset, q.nbytes, off)) return io_result::fail(ec);
  return detail::read_locked(*o->attr, off, q.nbytes, false, lock_mode::shared, [&](const unsigned char* p, std::uint64_t n) {
    if (const int e = q.visitor(q.context, p, static_cast<std::size_t>(n))) return io_result::fail(e);
    return io_result::ok(static_cast<std::int64_t>(n));
  });
}

namespace detail {
// A write's length clipped to the file size limit (Linux: a write straddling it writes up to it):
// EFBIG if nothing can be written (off at or past max), else *n = min(*n, max - off). Requires: *n > 0.
inline std::error_code clip_to_max(const iofunc_attr& a, std::uint64_t off, std::uint64_t* n) noexcept {
  if (off >= a.max_size()) return std::make_error_code(std::errc::file_too_large);
  *n = std::min(*n, a.max_size() - off);
  return {};
}
// Takes the exclusive range a write of *n bytes at `off` needs, clipping *n to max_size (clip_to_max):
// [off, off + n), or for an append [size, to_end) with off = the size, re-checked after the grant; the
// whole file instead when the file must move first (iofunc_attr::write_span). Returns EFBIG (nothing
// can be written; nothing held). `where` names the handler's line in reports. Requires: n > 0.
inline std::error_code lock_write_range(iofunc_attr& a, std::optional<range_guard>& g, bool append, std::uint64_t& off,
                                        std::uint64_t& n, source_location where = source_location::current()) {
  for (;;) {
    if (append) off = a.size();
    if (auto ec = clip_to_max(a, off, &n)) return ec;
    const auto [first, len] = a.write_span(off, n);
    g.emplace(a.data_lock, first, append ? to_end : len, lock_mode::exclusive, range_options{}, where);
    if (!append || a.size() == off) return {};  // nobody appended or truncated in between
    g.reset();
  }
}
// The end of a write of [off, off + n) of which `got` bytes were copied, the range held exclusively
// and [off, off + n) reserved: publishes the size for the bytes copied, zeroes any bytes of the rest
// written past the size (a page unmapped during the copy), releases the range and stamps the times
// (iofunc_attr::written: set-id bits cleared unless `privileged`, i.e. the writer is uid 0; S_ISGID
// also when the writer is `outside_group`).
inline void finish_write(iofunc_attr& a, std::optional<range_guard>& g, std::uint64_t off, std::uint64_t n,
                         std::uint64_t got, bool privileged = false, bool outside_group = false) {
  if (got > 0) (void)a.grow_to(off + got);  // reserved: cannot fail
  if (got < n) a.discard_unpublished(off + got, std::min(off + n, off + got + 4096));
  g.reset();
  if (got > 0) a.written(privileged, outside_group);  // mtime, ctime; setuid/setgid cleared unless privileged
}
}  // namespace detail

/// Default write: copies the client's bytes straight into the store under an exclusive range lock over
/// exactly those bytes (O_APPEND: from the size to the end). The store is reserved first and the size
/// published after the copy: a write that copies nothing leaves the file as it was. Returns the bytes
/// written: fewer than asked when the write straddles max_size or the client's buffer turns bad
/// part-way (the bytes before the bad page are written); EFBIG when it starts at or past max_size,
/// EFAULT when not one byte could be read from the client.
inline io_result iofunc_write_default(request_context& ctx, ocb_base& base, const io_rw_request& q) {
  iofunc_ocb* const op = iofunc_ocb_cast(base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  iofunc_ocb& o = *op;
  if (!o.writable) return detail::errc_result(std::errc::bad_file_descriptor);
  std::uint64_t n = std::min<std::uint64_t>(q.nbytes, ctx.rcv.payload_len());
  iofunc_attr& a = *o.attr;
  std::uint64_t off = 0;
  std::optional<range_guard> g;
  const bool append = (o.flags & O_APPEND) && !q.use_offset;
  if (!append)
    if (auto ec = detail::rw_offset(o, q, n, off)) return io_result::fail(ec);
  if (n == 0) return io_result::ok(0);
  if (auto ec = detail::lock_write_range(a, g, append, off, n)) return io_result::fail(ec);
  (void)FAULTSAFE_INJECT(range_hold_stall);  // fault injection: stall holding the range
  if (auto ec = a.reserve(off + n)) return io_result::fail(ec);
  std::size_t got = 0;
  std::error_code copy_ec;
  const std::error_code ec = ctx.rcv.with_payload([&](const void* p, std::size_t avail) -> std::error_code {
    // avail < n: a sender in another process whose buffer turns bad part-way (channel.hpp
    // with_payload): its readable prefix, as the guarded copy of a local sender's stops at the bad page.
    got = detail::guarded_copy_prefix(a.data() + off, p, static_cast<std::size_t>(std::min<std::uint64_t>(n, avail)), &copy_ec);
    return {};
  });
  // The bytes copied stay written even if the sender gave up meanwhile (ECANCELED: nobody gets the
  // reply); a write that copied nothing changed nothing.
  detail::finish_write(a, g, off, n, got, ctx.client.uid == 0, !client_in_group(ctx.client, a.gid()));
  if (got > 0 && !q.use_offset) o.offset.store(static_cast<std::int64_t>(off + got), std::memory_order_relaxed);
  if (ec) return io_result::fail(ec);
  if (got == 0) return io_result::fail(copy_ec);
  return io_result::ok(static_cast<std::int64_t>(got));
}

/// Default ftruncate: EBADF unless open for writing, EINVAL for a negative length, EFBIG past max_size.
/// A caller other than root clears the set-id bits (iofunc_attr::truncated).
inline io_result iofunc_ftruncate_default(request_context& ctx, ocb_base& base, const io_ftruncate_request& q) {
  iofunc_ocb* const op = iofunc_ocb_cast(base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  iofunc_ocb& o = *op;
  if (!o.writable) return detail::errc_result(std::errc::bad_file_descriptor);
  if (q.length < 0) return detail::errc_result(std::errc::invalid_argument);
  iofunc_attr& a = *o.attr;
  const auto len = static_cast<std::uint64_t>(q.length);
  if (len > a.max_size()) return detail::errc_result(std::errc::file_too_large);
  std::optional<range_guard> g;
  for (;;) {
    const std::uint64_t lo = len > a.capacity() ? 0 : std::min(a.size(), len);  // a move: the whole file
    g.emplace(a.data_lock, lo, to_end, lock_mode::exclusive, range_options{}, source_location::current());
    if (std::min(a.size(), len) >= lo) break;  // everything from the new end on is ours
    g.reset();
  }
  if (auto ec = a.set_size(len)) return io_result::fail(ec);
  a.truncated(ctx.client.uid == 0, !client_in_group(ctx.client, a.gid()));
  return io_result::ok(0);
}

/// Default lseek: SEEK_SET / SEEK_CUR / SEEK_END; EINVAL for another whence or a negative result,
/// EOVERFLOW if the sum overflows off_t.
inline io_result iofunc_lseek_default(request_context&, ocb_base& base, const io_lseek_request& q) {
  iofunc_ocb* const op = iofunc_ocb_cast(base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  iofunc_ocb& o = *op;
  std::int64_t basepos = 0;
  switch (q.whence) {
    case SEEK_SET: break;
    case SEEK_CUR: basepos = o.offset.load(std::memory_order_relaxed); break;
    case SEEK_END: basepos = static_cast<std::int64_t>(o.attr->size()); break;
    default: return detail::errc_result(std::errc::invalid_argument);
  }
  std::int64_t pos = 0;
  if (__builtin_add_overflow(basepos, q.offset, &pos)) return detail::errc_result(std::errc::value_too_large);
  if (pos < 0) return detail::errc_result(std::errc::invalid_argument);
  o.offset.store(pos, std::memory_order_relaxed);
  return io_result::ok(pos);
}

/// Default fstat.
inline io_result iofunc_fstat_default(request_context&, ocb_base& base, struct ::stat& st) {
  iofunc_ocb* const op = iofunc_ocb_cast(base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  op->attr->stat(st);
  return io_result::ok(0);
}

/// Default mmap hook: answers with the file's memfd and the offset of the requested file bytes in it
/// (the pager maps it there); a file not yet in a memfd of its own first moves there
/// (iofunc_attr::make_mappable: the whole file locked exclusively, once), so the memfd holds this file
/// only and may be handed to another process (resmgr/remote.hpp). A mapping may reach past the end of
/// the file and past max_size, as with the kernel: every first touch of a page goes to this file's
/// page-in, which refuses pages at or past the end, and past the memfd's size (the final capacity) the
/// kernel refuses them (SIGBUS either way). EACCES if prot asks for reading on a write-only
/// open, or for writing a MAP_SHARED mapping of an open without write access; EINVAL for a zero length
/// or an offset that is not page aligned; the store's errno.
inline io_result iofunc_mmap_default(request_context&, ocb_base& base, const io_mmap_request& q, io_mmap_reply& rep) {
  iofunc_ocb* const op = iofunc_ocb_cast(base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  iofunc_ocb& o = *op;
  if (q.length == 0 || (q.offset % 4096) != 0) return detail::errc_result(std::errc::invalid_argument);
  if ((q.prot & PROT_READ) && !o.readable) return detail::errc_result(std::errc::permission_denied);
  if ((q.prot & PROT_WRITE) && (q.flags & MAP_SHARED) && !o.writable) return detail::errc_result(std::errc::permission_denied);
  iofunc_attr& a = *o.attr;
  if (auto ec = a.make_mappable()) return io_result::fail(ec);
  rep.memfd = a.memfd();
  rep.offset = a.store_offset() + q.offset;
  rep.length = q.length;
  rep.cookie = a.ino();
  return io_result::ok(0);
}

// ---- page-in for the pager (resmgr/process_memory.hpp) ----------------------------------------------------

/// io_page_in_request::flags bits, set by vm's server_page_source.
// Bit 1 is unused (a private mapping maps the memfd like a shared one: vm/aspace.hpp).
inline constexpr std::uint32_t page_in_minor = 2;      ///< the faulting page is already in the page cache
inline constexpr std::uint32_t page_in_readahead = 4;  ///< best effort; nobody waits
inline constexpr std::uint32_t page_in_write = 8;      ///< the faulting access was a write

namespace detail {
struct page_in_context {
  const io_page_in_request* q;
  const request_context* ctx;
  std::uint64_t ino;
  std::uint32_t sender;
};
// The page-in half of a self_deadlock (or any) report made while serving a page-in: which fault of
// which thread, which page-in, on whose behalf.
inline void describe_page_in(const void* arg, violation& v) {
  const auto& c = *static_cast<const page_in_context*>(arg);
  const io_page_in_request& q = *c.q;
  char buf[96];
  std::string line = "while serving the page-in of file offsets [" + std::to_string(q.offset) + ", " +
                     std::to_string(q.offset + q.length) + ") of file ino " + std::to_string(c.ino) + " for process " +
                     std::to_string(q.client.pid) + " on behalf of " + detail::rl::describe_activity(c.ctx->activity);
  if (c.sender != 0) line += ", sent by pager thread '" + thread_name(c.sender) + "'";
  v.details.push_back(std::move(line));
  if (q.fault_address != 0) {
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(q.fault_address));
    std::string f = std::string("for the ") + ((q.flags & 8u) ? "write" : "read") + " fault at " + buf + " (file offset " +
                    std::to_string(q.fault_offset) + ")";
    if (q.fault_thread != 0) {
      f += " taken by thread '" + thread_name(q.fault_thread) + "'";
      v.involved.push_back(thread_name(q.fault_thread));
    }
    v.details.push_back(std::move(f));
  }
  if (c.sender != 0) v.involved.push_back(thread_name(c.sender));
}
}  // namespace detail

/// Default page-in: under a shared range lock over [offset, offset + length) (clipped to the file, in
/// whole pages), makes the pages present in the store memfd's page cache
/// at store_offset() + offset (fallocate allocates holes as zeros and never overwrites data; the file's
/// offsets are translated here, the request carries file offsets), so the pager can map them
/// with UFFDIO_CONTINUE. The window is try-locked; when part of it is locked by someone else (or
/// waited for), only the faulting page is locked, blocking, and served alone: rep.offset is then that
/// page (io_page_in_reply), so two activities that each hold a range inside the other's fault-around
/// window do not wait on each other (a read-ahead page-in then fails with EAGAIN instead). Reply
/// status and rep.length: the end of the valid bytes counted from offset (whole pages). ENXIO when offset is at or past the end of the file (the faulting
/// access then gets SIGBUS, as with the kernel's mmap); EBADF without an open.
inline io_result iofunc_page_in_default(request_context& ctx, ocb_base* base, const io_page_in_request& q,
                                        io_page_in_reply& rep) {
  iofunc_ocb* const op = base == nullptr ? nullptr : iofunc_ocb_cast(*base);
  if (op == nullptr) return detail::not_iofunc_ocb();
  iofunc_ocb& o = *op;
  iofunc_attr& a = *o.attr;
  constexpr std::uint64_t page = 4096;
  if ((q.offset % page) != 0 || q.length == 0) return detail::errc_result(std::errc::invalid_argument);
  std::uint64_t size = a.size();
  if (q.offset >= size) return detail::errc_result(std::errc::no_such_device_or_address);
  const std::uint64_t len = std::min(q.length, ((size + page - 1) & ~(page - 1)) - q.offset);
  // The fault-reentrancy guard: a range held only by this page-in's own activity (the faulting server
  // thread's) is Brian's self-deadlock; the attr's policy resolves it at once, and the report names the
  // fault and this page-in (violation_context).
  const detail::page_in_context pctx{&q, &ctx, a.ino(), ctx.rcv.sender_thread()};
  const violation_context vc(&detail::describe_page_in, &pctx);
  const range_options ro{0, a.page_in_self_conflict()};
  // Serves [lo, q.offset + hi) (hi counts from q.offset) with that range held.
  auto serve = [&](std::uint64_t lo, std::uint64_t hi) -> io_result {
    size = a.size();  // a truncate may have completed before we got the range
    if (lo >= size) return detail::errc_result(std::errc::no_such_device_or_address);
    // Fault injection (detail/fault_injection.hpp): a stall holding the range, a failed page-in (SIGBUS).
    (void)FAULTSAFE_INJECT(page_in_stall);
    if (FAULTSAFE_INJECT(page_in_error)) return detail::errc_result(std::errc::io_error);
    const std::uint64_t first = lo - q.offset;
    const std::uint64_t valid = std::min(hi, ((size + page - 1) & ~(page - 1)) - q.offset);
    if (!(q.flags & (page_in_minor | page_in_readahead))) {
      if (::fallocate(a.memfd(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(a.store_offset() + lo), static_cast<off_t>(valid - first)) != 0)
        return io_result::fail(std::error_code(errno, std::generic_category()));
    }
    rep.offset = lo;
    rep.length = valid;
    rep.cookie = a.ino();
    return io_result::ok(static_cast<std::int64_t>(valid));
  };
  // The window if it is free at once; else only the faulting page (blocking): waiting for the whole
  // window would wait for ranges the fault does not need, held by activities that may be waiting for
  // a range this page-in's activity holds (a cycle of two page-ins the wait-for graph would break).
  {
    const range_guard window(a.data_lock, q.offset, len, lock_mode::shared, std::try_to_lock, ro);
    if (window.owns_lock()) return serve(q.offset, len);
  }
  if (q.flags & page_in_readahead) return detail::errc_result(std::errc::resource_unavailable_try_again);
  const std::uint64_t fp = q.fault_offset & ~(page - 1);
  if (q.fault_address != 0 && fp >= q.offset && fp - q.offset < len) {
    const range_guard faulting_page(a.data_lock, fp, page, lock_mode::shared, ro);
    return serve(fp, fp - q.offset + page);
  }
  const range_guard window(a.data_lock, q.offset, len, lock_mode::shared, ro);  // the faulting page is unknown
  return serve(q.offset, len);
}

// ---- attributes, sync, space: the rest of the io functions ------------------------------------------
// Each answers EBADF for an OCB that is not an iofunc_ocb.

namespace detail {
// The attr behind `base`, or nullptr (not an iofunc_ocb).
inline iofunc_attr* attr_of(ocb_base& base) noexcept {
  iofunc_ocb* o = iofunc_ocb_cast(base);
  return o != nullptr ? o->attr.get() : nullptr;
}
}  // namespace detail

/// Default chmod (fchmod, chmod by path): the owner or uid 0 (else EPERM); S_ISGID is dropped when a
/// non-root caller is not in the file's group (chmod(2)). ctime = now.
inline io_result iofunc_chmod_default(request_context& ctx, ocb_base& base, const io_chmod_request& q) {
  iofunc_attr* a = detail::attr_of(base);
  if (a == nullptr) return detail::not_iofunc_ocb();
  if (ctx.client.uid != 0 && ctx.client.uid != a->uid()) return detail::errc_result(std::errc::operation_not_permitted);
  a->set_mode(static_cast<mode_t>(q.mode), ctx.client.uid != 0 && !client_in_group(ctx.client, a->gid()));
  return io_result::ok();
}

/// Default chown: uid 0 may set any owner and group; the owner may set the group to one it is a member
/// of (client_in_group) or keep it, and the owner to itself; anything else is EPERM. Clears S_ISUID (and a group-executable
/// S_ISGID) of a non-directory; ctime = now.
inline io_result iofunc_chown_default(request_context& ctx, ocb_base& base, const io_chown_request& q) {
  iofunc_attr* a = detail::attr_of(base);
  if (a == nullptr) return detail::not_iofunc_ocb();
  if (ctx.client.uid != 0) {
    const std::uint32_t owner = a->uid();
    const bool uid_ok = q.uid == ~0u || (q.uid == owner && ctx.client.uid == owner);
    const bool gid_ok = q.gid == ~0u || (ctx.client.uid == owner && (q.gid == a->gid() || client_in_group(ctx.client, q.gid)));
    if (!uid_ok || !gid_ok) return detail::errc_result(std::errc::operation_not_permitted);
  }
  a->set_owner(q.uid, q.gid);
  return io_result::ok();
}

/// Default utimens: both UTIME_NOW needs the owner, uid 0 or write permission (EACCES); any other
/// change (an explicit time, or one UTIME_NOW beside UTIME_OMIT) needs the owner or uid 0 (EPERM), as
/// Linux; both UTIME_OMIT changes nothing. EINVAL for a tv_nsec out of range.
inline io_result iofunc_utimens_default(request_context& ctx, ocb_base& base, const io_utimens_request& q) {
  iofunc_attr* a = detail::attr_of(base);
  if (a == nullptr) return detail::not_iofunc_ocb();
  for (const auto& t : q.times)
    if (t.tv_nsec != UTIME_NOW && t.tv_nsec != UTIME_OMIT && (t.tv_nsec < 0 || t.tv_nsec >= 1000000000))
      return detail::errc_result(std::errc::invalid_argument);
  const bool explicit_time = !(q.times[0].tv_nsec == UTIME_NOW && q.times[1].tv_nsec == UTIME_NOW);
  if (q.times[0].tv_nsec == UTIME_OMIT && q.times[1].tv_nsec == UTIME_OMIT) return io_result::ok();
  const bool owner = ctx.client.uid == 0 || ctx.client.uid == a->uid();
  if (explicit_time && !owner) return detail::errc_result(std::errc::operation_not_permitted);
  if (!owner && !iofunc_check_access(a->mode(), a->uid(), a->gid(), ctx.client, access_write))
    return detail::errc_result(std::errc::permission_denied);
  a->set_times(q.times);
  return io_result::ok();
}

/// Default fsync/fdatasync: the store is memory, so every completed write is already as durable as it
/// gets; EBADF for an O_PATH open.
inline io_result iofunc_fsync_default(request_context&, ocb_base& base, const io_fsync_request&) {
  iofunc_ocb* o = iofunc_ocb_cast(base);
  if (o == nullptr || (o->flags & O_PATH)) return detail::not_iofunc_ocb();
  return io_result::ok();
}

/// Default fallocate: mode 0 extends the size to offset + length (zeros), FALLOC_FL_KEEP_SIZE changes
/// nothing visible, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE zeroes [offset, offset + length) within
/// the size. EBADF unless open for writing, ENODEV for a non-regular file, EINVAL for a negative offset
/// or a length <= 0, EOPNOTSUPP for other modes, EFBIG past max_size. Locks: the range it changes.
inline io_result iofunc_fallocate_default(request_context& ctx, ocb_base& base, const io_fallocate_request& q) {
  iofunc_ocb* o = iofunc_ocb_cast(base);
  if (o == nullptr || !o->writable) return detail::not_iofunc_ocb();
  iofunc_attr& a = *o->attr;
  if (!S_ISREG(a.mode())) return detail::errc_result(std::errc::no_such_device);
  if (q.offset < 0 || q.length <= 0) return detail::errc_result(std::errc::invalid_argument);
  const auto off = static_cast<std::uint64_t>(q.offset), len = static_cast<std::uint64_t>(q.length);
  if (len > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - off)
    return detail::errc_result(std::errc::file_too_large);
  if (q.mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
    range_guard g(a.data_lock, off, len, lock_mode::exclusive);
    const std::uint64_t size = a.size();
    if (off < size) std::memset(a.data() + off, 0, static_cast<std::size_t>(std::min(len, size - off)));
    g.unlock();
    a.written(ctx.client.uid == 0, !client_in_group(ctx.client, a.gid()));
    return io_result::ok();
  }
  if (q.mode != 0 && q.mode != FALLOC_FL_KEEP_SIZE) return detail::errc_result(std::errc::operation_not_supported);
  if (off + len > a.max_size()) return detail::errc_result(std::errc::file_too_large);
  if (q.mode == FALLOC_FL_KEEP_SIZE) return io_result::ok();
  const std::uint64_t target = off + len;
  std::optional<range_guard> g;
  for (;;) {  // as ftruncate: exclusive from the current end on, or the whole file if it moves
    const std::uint64_t lo = target > a.capacity() ? 0 : std::min(a.size(), target);
    g.emplace(a.data_lock, lo, to_end, lock_mode::exclusive, range_options{}, source_location::current());
    if (std::min(a.size(), target) >= lo) break;
    g.reset();
  }
  if (target > a.size())
    if (auto ec = a.set_size(target)) return io_result::fail(ec);
  return io_result::ok();
}

/// Default readlink: the target of a symbolic link (its data bytes) into the reply data, truncated to
/// the client's buffer; reply status: the bytes. EINVAL for a node that is not a symlink.
inline io_result iofunc_readlink_default(request_context& ctx, ocb_base& base, const io_handle_request&) {
  iofunc_attr* a = detail::attr_of(base);
  if (a == nullptr) return detail::not_iofunc_ocb();
  if (!S_ISLNK(a->mode())) return detail::errc_result(std::errc::invalid_argument);
  range_guard g(a->data_lock, 0, to_end, lock_mode::shared);
  const std::uint64_t n = std::min<std::uint64_t>(a->size(), ctx.rcv.reply_data_len());
  if (n > 0)
    if (auto ec = ctx.rcv.write_reply_data(0, a->data(), n)) return io_result::fail(ec);
  return io_result::ok(static_cast<std::int64_t>(n));
}

/// Default statvfs: a memory file system's figures (4 KiB blocks, names up to 255 bytes); a server with
/// real limits overrides it.
inline io_result iofunc_statfs_default(request_context&, ocb_base&, const io_handle_request&, struct ::statvfs& st) {
  st = {};
  st.f_bsize = st.f_frsize = 4096;
  st.f_blocks = st.f_bfree = st.f_bavail = std::uint64_t{1} << 20;
  st.f_files = st.f_ffree = st.f_favail = std::uint64_t{1} << 20;
  st.f_namemax = 255;
  return io_result::ok();
}

/// Default access: F_OK succeeds (the node exists); R_OK/W_OK/X_OK are checked with the caller's
/// uid/gid (EACCES).
inline io_result iofunc_access_default(request_context& ctx, ocb_base& base, const io_access_request& q) {
  iofunc_attr* a = detail::attr_of(base);
  if (a == nullptr) return detail::not_iofunc_ocb();
  const int want = ((q.mode & R_OK) ? access_read : 0) | ((q.mode & W_OK) ? access_write : 0) | ((q.mode & X_OK) ? access_exec : 0);
  if (want == 0) return io_result::ok();
  if (!iofunc_check_access(a->mode(), a->uid(), a->gid(), ctx.client, want)) return detail::errc_result(std::errc::permission_denied);
  return io_result::ok();
}

/// Default data_version (io_funcs::data_version): ok(attr's data_version()), or ok(0) once the file is
/// mappable() (a mapping's stores change its bytes without a new version). Any open, O_PATH included
/// (the answer says only whether the bytes changed, as fstat's mtime does). Locks: none.
inline io_result iofunc_data_version_default(request_context&, ocb_base& base, const io_data_version_request&) {
  iofunc_attr* a = detail::attr_of(base);
  if (a == nullptr) return detail::not_iofunc_ocb();
  if (a->mappable()) return io_result::ok(0);
  return io_result::ok(static_cast<std::int64_t>(a->data_version() & (~std::uint64_t{0} >> 1)));
}

/// The default handlers in an io_funcs. Left empty: open, the path messages (mkdir, mknod, unlink,
/// rmdir, rename, link, symlink) and readdir: they need the server's namespace (see ramfs).
[[nodiscard]] inline io_funcs iofunc_defaults() {
  io_funcs f;
  f.read = iofunc_read_default;
  f.read_visit = iofunc_read_visit_default;
  f.read_visit_mirrors = iofunc_read_default;
  f.write = iofunc_write_default;
  f.lseek = iofunc_lseek_default;
  f.fstat = iofunc_fstat_default;
  f.ftruncate = iofunc_ftruncate_default;
  f.mmap = iofunc_mmap_default;
  f.page_in = iofunc_page_in_default;
  f.readlink = iofunc_readlink_default;
  f.chmod = iofunc_chmod_default;
  f.chown = iofunc_chown_default;
  f.utimens = iofunc_utimens_default;
  f.fsync = iofunc_fsync_default;
  f.fallocate = iofunc_fallocate_default;
  f.statfs = iofunc_statfs_default;
  f.access = iofunc_access_default;
  f.data_version = iofunc_data_version_default;
  f.data_version_writers = {iofunc_write_default, iofunc_ftruncate_default, iofunc_fallocate_default, iofunc_mmap_default};
  return f;
}

}  // namespace faultsafe
