// faultsafe/resmgr/file_store.hpp: where the bytes of a server's files live.
//
// Defines `file_store_options`, `store_extent`, `file_store_stats` and `file_store`: ONE sparse memfd
// (the arena) per store, in which every file owns one contiguous extent until it is mapped (then it
// moves to a memfd of its own: "Mappings" below). A store costs the process one file descriptor however
// many unmapped files it holds (a memfd per file would cost one each, so 1,019 files
// under `ulimit -n 1024` left a client no fd to open with, and one server mapping per file would hit
// vm.max_map_count at 65,530 files).
//
// Layout. Extents come in size classes: 4 KiB, 16 KiB, 64 KiB, 256 KiB and 1 MiB ("small"), and the
// final class of a file, round_up(max_size, 4 KiB) (class_for()). A file starts in the smallest class
// and moves to a larger one when it grows past its capacity (iofunc_attr does it under a whole-file
// range lock: at most five moves of at most 1 MiB each, then it sits in its final class for good).
// Each class owns zones of the memfd's offset space (1 TiB each, or one extent if larger), handed out
// from a bump pointer; the memfd's length covers every zone made so far, and it is sparse: reserving an
// extent costs neither memory nor a system call. The server reaches the bytes through mappings of the
// memfd made per chunk of a zone (about map_chunk bytes, a whole number of extents), on first use, so
// 1,000,000 files of 4 KiB take 16 mappings, not a million, and one page-table page per 512 files.
// Freed extents are punched (FALLOC_FL_PUNCH_HOLE: their pages return to the system and read as zeros)
// and recycled, newest first, within their class. Bytes of an extent at or past its file's size are
// always zeros (iofunc_attr keeps that invariant), so a freshly allocated extent needs no clearing.
//
// Mappings: a file of its own. A file is moved out of the arena at its first mmap (iofunc_attr::
// make_mappable(), under the whole-file exclusive range lock, once; move() with own_memfd): into a memfd
// of its own (allocate_own()), sized to the file's final capacity (final_capacity(max_size)), sealed
// F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL and made mode 0400, mapped once in the server; its bytes
// live there, at offset 0, until the file dies (release() punches it, unmaps it and closes the fd; a
// file dies only when no open of it is left, and every mapping keeps its open). A mapped file never moves again: its memfd holds
// exactly its final capacity, which no write or truncate exceeds. Every mapping of the file, in this
// process (the in-process pager) or another (resmgr/remote.hpp), is a mapping of that memfd,
// registered with userfaultfd MISSING|MINOR: page-cache presence is per page of the memfd, every first
// touch still goes to the server's page-in, which refuses pages at or past the end of the file
// (SIGBUS), and a touch past the memfd's size is SIGBUS from the kernel. Shrinking a file punches it
// from the new end: the pages leave every mapping at once, and a later touch faults to the server
// again (past the end: SIGBUS).
// Why in-process mappings move too: a file mapped in the arena could not move later (its mappings name
// the arena offset), and the server does not learn when an in-process mapping goes, so a file first
// mapped in-process and then by another process would have to hand that process the arena. So a
// mapped file costs one fd and one server mapping of its own (an unmapped one costs neither): a server
// that maps more files than its RLIMIT_NOFILE allows gets EMFILE from that mmap (a clear error).
// What another OS process holds (resmgr/remote.hpp sends it the fd over SCM_RIGHTS): one file's memfd,
// never the arena, so it can reach no other file's bytes. The seals stop it changing the size (the
// server's accesses through its own mapping can never SIGBUS); mode 0400, owned by the server's uid,
// stops a client of another uid (without CAP_DAC_OVERRIDE or CAP_FOWNER) from reopening a read-only fd
// for writing through /proc/<pid>/fd. A client of the server's OWN uid owns the memfd: it may fchmod it
// and then reopen it for writing (checked: uid 65534 on a memfd of its own, fchmod through the O_RDONLY
// fd, then an O_RDWR reopen succeeds); such a client is inside the server's trust boundary anyway (with
// the default ptrace rules it may process_vm_writev the server itself), so run the server under a uid
// of its own when clients must not write files they may only read. With a read-only fd (a mapping that cannot write the file) it may
// read the file's bytes, also past the end within the capacity (zeros, or what a mapping wrote into the
// last page); with a read-write fd (MAP_SHARED + PROT_WRITE of a writable open) also write and punch
// them (bytes it writes past the end show if the file grows over them, as a mapping's writes into the
// last page). Like an open file it keeps that access after close(), munmap or a chmod (the kernel's
// mmap keeps its file the same way), for the file's life; after the file dies the fd reads zeros (the
// release punches it), so it pins no memory of a dead file.
//
// Thread-safety: every member may be called from any thread. Lock order: the store mutex is a leaf
// (rank::leaf), held for a free-list or zone update and the mmap of a new chunk, never while copying.
// Memory ordering: no atomics; every field is read and written under the store mutex.
// Lifetime: extents must be released before the store dies (an iofunc_attr holds a shared_ptr to its
// store); the destructor unmaps every chunk and closes the memfd. An own memfd lives from its move to
// the release() of its extent.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <system_error>
#include <vector>

#include "../config.hpp"
#include "../order/ranked_mutex.hpp"

namespace faultsafe {

struct file_store_options {
  const char* name = "faultsafe store";                ///< the memfd's name (visible in /proc/self/fd)
  std::uint64_t map_chunk = std::uint64_t{256} << 20;  ///< server address space mapped at a time per class
};

/// One file's extent: bytes [offset, offset + capacity) of memfd `fd` (the store's arena, or the file's
/// own memfd: offset 0), at `data` in the server.
struct store_extent {
  std::uint64_t offset = 0;
  std::uint64_t capacity = 0;
  unsigned char* data = nullptr;
  int fd = -1;
};

/// A snapshot of a store's bookkeeping.
struct file_store_stats {
  std::uint64_t extents = 0;       ///< extents in use in the arena
  std::uint64_t free_extents = 0;  ///< punched extents waiting for reuse
  std::uint64_t chunks = 0;        ///< server-side mappings of the memfd
  std::uint64_t mapped_bytes = 0;  ///< server address space they reserve
  std::uint64_t moves = 0;         ///< extents moved to a larger class or to their own memfd
  std::uint64_t length = 0;        ///< the memfd's length (sparse)
  std::uint64_t own = 0;           ///< files in a memfd of their own (mapped files: one fd each)
};

/// The arena. See the header comment.
class file_store {
 public:
  static constexpr std::uint64_t page = 4096;
  /// The small classes, ascending.
  static constexpr std::array<std::uint64_t, 5> small_classes{std::uint64_t{4} << 10, std::uint64_t{16} << 10,
                                                              std::uint64_t{64} << 10, std::uint64_t{256} << 10,
                                                              std::uint64_t{1} << 20};

  /// Effects: creates the memfd (MFD_CLOEXEC). Throws: std::system_error with memfd_create's errno.
  explicit file_store(file_store_options opts = {}) : opts_(opts) {
    if (opts_.map_chunk < page) opts_.map_chunk = page;
    fd_ = ::memfd_create(opts_.name, MFD_CLOEXEC);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "memfd_create(file_store)");
  }
  /// Requires: every extent released. Effects: unmaps the chunks, closes the memfd.
  ~file_store() {
    for (auto& [cap, c] : classes_)
      for (auto& z : c.zones)
        for (unsigned char* m : z.chunks)
          if (m != nullptr) ::munmap(m, c.chunk);
    ::close(fd_);
  }
  file_store(const file_store&) = delete;
  file_store& operator=(const file_store&) = delete;

  /// The store files use when given none (iofunc_attr built without attr_options::store): one per OS
  /// process, made at first use. Throws: as the constructor.
  [[nodiscard]] static std::shared_ptr<file_store> process_default() {
    static const std::shared_ptr<file_store> s = std::make_shared<file_store>(file_store_options{"faultsafe files", std::uint64_t{256} << 20});
    return s;
  }

  /// The arena memfd (owned by the store; valid for its life).
  [[nodiscard]] int fd() const noexcept { return fd_; }

  /// The capacity of the final class of a file of at most `max_size` bytes.
  [[nodiscard]] static constexpr std::uint64_t final_capacity(std::uint64_t max_size) noexcept {
    return max_size <= page ? page : ((max_size - 1) | (page - 1)) + 1;
  }
  /// The capacity of the smallest class that holds `bytes` for a file of at most `max_size` bytes (the
  /// final class when no small class below it does). Requires: bytes <= max_size.
  [[nodiscard]] static constexpr std::uint64_t class_for(std::uint64_t bytes, std::uint64_t max_size) noexcept {
    const std::uint64_t fin = final_capacity(max_size);
    for (std::uint64_t c : small_classes)
      if (c >= fin) break;
      else if (bytes <= c) return c;
    return fin;
  }

  /// Effects: hands out an extent of `capacity` bytes (a value of class_for), all zeros, mapped at
  /// out.data. Returns: EINVAL (capacity 0 or not a page multiple), ENOMEM/errno of mmap (no server
  /// address space for a new chunk), EFBIG/errno of ftruncate (the memfd cannot grow).
  /// Complexity: O(1) amortized; one mmap per new chunk. Throws: std::bad_alloc.
  [[nodiscard]] std::error_code allocate(std::uint64_t capacity, store_extent& out) {
    if (capacity == 0 || capacity % page != 0) return std::make_error_code(std::errc::invalid_argument);
    exclusive_guard<mutex_type> g(mu_);
    klass& c = class_of(capacity);
    if (!c.free.empty()) {
      out = c.free.back();
      c.free.pop_back();
      ++in_use_;
      return {};
    }
    if (c.zones.empty() || c.zones.back().next == c.slots) {
      if (auto ec = add_zone(c)) return ec;
    }
    zone& z = c.zones.back();
    const std::uint64_t at = z.next * capacity;  // offset in the zone
    const std::size_t k = static_cast<std::size_t>(at / c.chunk);
    if (z.chunks[k] == nullptr) {
      void* m = ::mmap(nullptr, c.chunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_,
                       static_cast<off_t>(z.base + k * c.chunk));
      if (m == MAP_FAILED) return {errno, std::generic_category()};
      z.chunks[k] = static_cast<unsigned char*>(m);
      ++chunks_;
      mapped_ += c.chunk;
    }
    ++z.next;
    ++in_use_;
    out = store_extent{z.base + at, capacity, z.chunks[k] + (at - k * c.chunk), fd_};
    return {};
  }

  /// Effects: hands out an extent of `capacity` bytes in a memfd of its own (see "Mappings: a file of
  /// its own"): memfd_create (MFD_CLOEXEC | MFD_ALLOW_SEALING), ftruncate to `capacity`, sealed
  /// F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, mode 0400, mapped at out.data; all zeros, out.offset 0.
  /// Returns: EINVAL (capacity 0 or not a page multiple), the errno of memfd_create (EMFILE), ftruncate,
  /// fcntl, fchmod or mmap (nothing is left behind). Complexity: O(1), five system calls.
  [[nodiscard]] std::error_code allocate_own(std::uint64_t capacity, store_extent& out) {
    if (capacity == 0 || capacity % page != 0 || capacity > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()))
      return std::make_error_code(std::errc::invalid_argument);
    const int fd = ::memfd_create(opts_.name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return {errno, std::generic_category()};
    void* m = MAP_FAILED;
    if (::ftruncate(fd, static_cast<off_t>(capacity)) != 0 ||
        ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0 || ::fchmod(fd, S_IRUSR) != 0 ||
        (m = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0)) == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return {e, std::generic_category()};
    }
    out = store_extent{0, capacity, static_cast<unsigned char*>(m), fd};
    exclusive_guard<mutex_type> g(mu_);
    ++own_;
    return {};
  }

  /// Effects: punches the whole extent (its pages are freed and read as zeros, and leave every mapping)
  /// and recycles it (if the punch fails it is never reused: free extents are all zeros). Requires: `e` came from allocate() of this store and is no longer used: no server
  /// access in flight, no mapping that could still fault on it.
  /// An extent of a memfd of its own (allocate_own()) is punched, unmapped and its fd closed instead:
  /// a process that still holds that memfd (another process it was sent to) reads zeros and pins no
  /// memory of the dead file.
  void release(const store_extent& e) noexcept {
    if (e.capacity == 0) return;
    if (e.fd != fd_) {
      (void)punch(e, 0, e.capacity);
      ::munmap(e.data, e.capacity);
      ::close(e.fd);
      exclusive_guard<mutex_type> g(mu_);
      --own_;
      return;
    }
    const bool clean = !punch(e, 0, e.capacity);
    exclusive_guard<mutex_type> g(mu_);
    --in_use_;
    if (!clean) return;  // could not be cleared: never reused (free extents are all zeros)
    try {
      class_of(e.capacity).free.push_back(e);
    } catch (...) {  // no memory for the free list: the extent is leaked (zeros, no pages), never reused
    }
  }

  /// Effects: bytes [from, to) of the extent read as zeros from now on: whole pages inside are freed
  /// (and leave every mapping), a partial page is zeroed in place. Returns: errno of fallocate.
  /// Requires: from <= to <= e.capacity.
  [[nodiscard]] std::error_code punch(const store_extent& e, std::uint64_t from, std::uint64_t to) const noexcept {
    if (from >= to) return {};
    if (::fallocate(e.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(e.offset + from),
                    static_cast<off_t>(to - from)) != 0)
      return {errno, std::generic_category()};
    return {};
  }

  /// Effects: moves the first `used` bytes of `e` into a new extent of `capacity` bytes (in the arena,
  /// or with `own_memfd` in a memfd of its own: allocate_own()) and releases the old one; `e` then names
  /// the new extent. On error `e` is unchanged. Requires: nobody else touches `e` meanwhile (its file's
  /// range lock held exclusively over the whole file), no mapping of `e`, used <= e.capacity <=
  /// capacity. Returns: as allocate() / allocate_own().
  [[nodiscard]] std::error_code move(store_extent& e, std::uint64_t capacity, std::uint64_t used, bool own_memfd = false) {
    store_extent n;
    if (auto ec = own_memfd ? allocate_own(capacity, n) : allocate(capacity, n)) return ec;
    if (used > 0) std::memcpy(n.data, e.data, static_cast<std::size_t>(used));
    release(e);
    e = n;
    exclusive_guard<mutex_type> g(mu_);
    ++moves_;
    return {};
  }

  [[nodiscard]] file_store_stats stats() const {
    exclusive_guard<mutex_type> g(mu_);
    file_store_stats s;
    s.extents = in_use_;
    for (const auto& [cap, c] : classes_) s.free_extents += c.free.size();
    s.chunks = chunks_;
    s.mapped_bytes = mapped_;
    s.moves = moves_;
    s.length = next_base_;
    s.own = own_;
    return s;
  }

 private:
  using mutex_type = ranked_mutex<rank::leaf>;
  static constexpr std::uint64_t zone_target = std::uint64_t{1} << 40;

  struct zone {
    std::uint64_t base = 0;             // memfd offset of the zone
    std::uint64_t next = 0;             // extents handed out (bump)
    std::vector<unsigned char*> chunks;  // server mappings, made on first use
  };
  struct klass {
    std::uint64_t capacity = 0;  // bytes per extent
    std::uint64_t chunk = 0;  // bytes per server mapping: a whole number of extents
    std::uint64_t slots = 0;  // extents per zone
    std::vector<zone> zones;
    std::vector<store_extent> free;
  };

  klass& class_of(std::uint64_t capacity) FAULTSAFE_REQUIRES(mu_) {
    klass& c = classes_[capacity];
    if (c.chunk == 0) {
      c.capacity = capacity;
      c.chunk = std::max<std::uint64_t>(1, opts_.map_chunk / capacity) * capacity;
      const std::uint64_t zone_bytes = std::max(c.chunk, (zone_target / c.chunk) * c.chunk);
      c.slots = zone_bytes / capacity;
    }
    return c;
  }

  std::error_code add_zone(klass& c) FAULTSAFE_REQUIRES(mu_) {
    const std::uint64_t len = c.slots * c.capacity;
    if (next_base_ > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) - len) return std::make_error_code(std::errc::file_too_large);
    if (::ftruncate(fd_, static_cast<off_t>(next_base_ + len)) != 0) return {errno, std::generic_category()};
    zone z;
    z.base = next_base_;
    z.chunks.assign(static_cast<std::size_t>(len / c.chunk), nullptr);
    c.zones.push_back(std::move(z));
    next_base_ += len;
    return {};
  }

  file_store_options opts_;
  int fd_ = -1;
  mutable mutex_type mu_{"file store"};
  std::map<std::uint64_t, klass> classes_ FAULTSAFE_GUARDED_BY(mu_);  // by capacity
  std::uint64_t next_base_ FAULTSAFE_GUARDED_BY(mu_) = 0;           // the memfd's length
  std::uint64_t in_use_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  std::uint64_t chunks_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  std::uint64_t mapped_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  std::uint64_t moves_ FAULTSAFE_GUARDED_BY(mu_) = 0;
  std::uint64_t own_ FAULTSAFE_GUARDED_BY(mu_) = 0;  // memfds of their own (allocate_own, not yet released)
};

}  // namespace faultsafe
