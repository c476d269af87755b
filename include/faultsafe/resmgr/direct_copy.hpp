// faultsafe/resmgr/direct_copy.hpp: read(fd) into a mapping of the same file, and write(fd) from one,
// served without a fault (mechanism 1 of the README's "Brian's lock-up").
//
// Defines the handlers `iofunc_read_direct` / `iofunc_write_direct` (drop-in replacements of
// iofunc_read_default / iofunc_write_default), `iofunc_direct_defaults()` (iofunc_defaults() with them),
// the building blocks `try_direct_read` / `try_direct_write`, and `direct_copy_stats()` (which path
// served what, process-wide counters).
//
// The problem. A read handler copies the file's bytes into the client's buffer while it holds the
// file's range lock. When that buffer is a mapping of the same file, the copy faults, the pager sends
// a page-in for the same file to the same server, and the page-in wants a range the reader holds:
// attr range -> fault -> region -> attr range (Brian). The direct path never takes that fault:
//   1. The handler asks the SENDING process's address space (client_info::pid names it; see
//      resmgr/client_registry.hpp) which parts of the destination [buf, buf + n) lie in mappings of
//      this very file (the file's extent of its store's memfd), page by page, BEFORE it takes any range (the aspace map lock is
//      rank 10, below the range lock's 30).
//   2. It takes ONE ordered_range_guards acquisition over the source range [off, off + n) (shared) and
//      the file range behind every same-file destination part (exclusive for MAP_SHARED, whose bytes
//      are the file's; shared and rounded out to whole pages for MAP_PRIVATE, whose page images are
//      read from the file). Requests are sorted by offset and overlapping ones merge, so source and
//      destination may overlap.
//   3. It copies part by part, in destination order:
//      - MAP_SHARED of the file: store to store, memmove(data + dest_off, data + src_off, len). The
//        client then sees the bytes through its mapping (a MINOR fault maps the page-cache page).
//      - MAP_PRIVATE of the file: UFFDIO_COPY of the new page image into the client's page (a page not
//        wholly covered is completed from the file): the private copy that the kernel's copy-on-write
//        would have made; a page that is already present is copied into normally, which cannot take a
//        userfault (a page-cache page mapped read-only is copied on write by the kernel).
//      - anything else (ordinary memory, anonymous or other files' mappings): an ordinary guarded copy.
//   Overlap: memmove semantics (the result is as if the source had been read first). One part: one
//   memmove. Several parts with a MAP_SHARED part overlapping the source: the source is staged in a
//   bounce buffer first.
//   write(fd, buf) whose source lies in a mapping of the same file is the mirror image: the target
//   [off, off + n) is locked exclusively together with the source's file ranges (shared), MAP_SHARED
//   source bytes move store to store, MAP_PRIVATE source pages are first made present exactly as a
//   fault would make them (UFFDIO_CONTINUE of the file's page-cache page; EEXIST = already present)
//   and then read (staged in a bounce buffer when their file range overlaps the target: an unwritten
//   private page is the file's page).
// Holes: a destination (source) part that the client could not write (read): a mapping without
// PROT_WRITE (PROT_READ), a file page wholly at or past the end of the file (the client's access would
// be SIGBUS; the rest of the last page after the end is not a hole: the client's own loads and stores
// reach it, and so does the direct copy, as Linux's read(2)/write(2) do), or memory that is not mapped at all. A read, as iofunc_read_default, transfers the bytes
// before it and returns that short count (EFAULT if there are none). A write, as iofunc_write_default,
// writes the bytes before it and returns that short count (EFAULT if there are none); the file grows only by the
// bytes written, and a write straddling max_size writes up to it.
// Not handled here (the functions return false and the ordinary path runs, where the fault-reentrancy
// guard of iofunc_page_in_default resolves a self-conflict): no same-file part at all (the common
// case), more than 8 same-file parts or 16 parts in all, a client whose pid is not registered, a
// request whose hints say the client has no address space (io_rw_request::hints: rw_hint_no_client_memory,
// set by process::rw: then nothing is looked up at all).
//
// Thread-safety: the handlers are safe for concurrent use (one call per server thread).
// Lock order: aspace map lock (rank 10, shared, per lookup, released) before the range locks (rank
// 30, one ordered acquisition); nothing else is held while copying. The copies into/out of foreign
// memory are guarded (EFAULT instead of a crash) and may fault on memory of OTHER files only.
// Complexity: one aspace lookup per destination page outside the file's mappings, one per mapping
// otherwise; the copy itself is one memmove per MAP_SHARED part and one UFFDIO_COPY per run of absent
// private pages.
// Memory ordering: relaxed counters (direct_copy_stats) and the relaxed OCB offset (as iofunc.hpp's).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <system_error>

#include "../detail/guarded_copy.hpp"
#include "../sync/range_lock.hpp"
#include "../vm/detail/pagemap.hpp"
#include "process_memory.hpp"
#include "client_registry.hpp"
#include "iofunc.hpp"
#include "process.hpp"

namespace faultsafe {

/// Process-wide counters of the direct path (relaxed snapshots).
struct direct_copy_counters {
  std::uint64_t reads = 0;          ///< reads served by the direct path
  std::uint64_t writes = 0;         ///< writes served by the direct path
  std::uint64_t store_bytes = 0;    ///< bytes moved store to store (MAP_SHARED parts)
  std::uint64_t uffd_bytes = 0;     ///< bytes placed with UFFDIO_COPY / pages mapped with UFFDIO_CONTINUE (MAP_PRIVATE pages not present)
  std::uint64_t present_bytes = 0;  ///< bytes copied into/out of private pages already present
  std::uint64_t other_bytes = 0;    ///< bytes copied normally (memory that does not map the file)
  std::uint64_t bounced = 0;        ///< calls that staged the source in a bounce buffer (overlap)
  std::uint64_t declined = 0;       ///< calls with same-file parts left to the ordinary path (too many)
};

namespace detail::dc {

inline constexpr std::size_t page = vm_page_size;
inline constexpr std::size_t max_parts = 16;       ///< parts of one buffer
inline constexpr std::size_t max_same_parts = 8;   ///< same-file parts (each adds one locked range)

struct counters_t {
  std::atomic<std::uint64_t> reads{0}, writes{0}, store_bytes{0}, uffd_bytes{0}, present_bytes{0}, other_bytes{0},
      bounced{0}, declined{0};
};
inline counters_t& counters() noexcept {
  static counters_t c;
  return c;
}
inline void add(std::atomic<std::uint64_t>& c, std::uint64_t v) noexcept { c.fetch_add(v, std::memory_order_relaxed); }

enum class part_kind : std::uint8_t {
  other,         ///< not a mapping of this file: ordinary (guarded) copy
  same_shared,   ///< MAP_SHARED of this file: the bytes are the file's
  same_private,  ///< MAP_PRIVATE of this file: private pages whose first image is the file's
  bad,           ///< a mapping of this file the client may not access this way: EFAULT
};

struct part {
  std::uintptr_t addr = 0;
  std::size_t len = 0;
  part_kind kind = part_kind::other;
  std::uint64_t file_off = 0;  ///< same_*: file offset of addr
  /// same_private: file offset of the page containing addr (addr's page start maps it).
  [[nodiscard]] std::uint64_t file_at(std::uintptr_t a) const noexcept { return file_off + (a - addr); }
};

struct plan {
  std::array<part, max_parts> parts{};
  std::size_t n = 0;
  std::size_t same = 0;
  bool overflow = false;
};

/// The address space of client `pid`, if it has one (never makes one).
[[nodiscard]] inline std::shared_ptr<process_memory> client_memory(std::uint64_t pid) {
  return client_registry::instance().with_process(
      pid, [](process* p) { return p != nullptr ? p->memory_if_made() : std::shared_ptr<process_memory>{}; });
}

// Effects: splits the client's [addr, addr + len) into parts (see part_kind). dest: the server writes
// it (a read's buffer) and needs PROT_WRITE; else reads it and needs PROT_READ.
inline void classify(const aspace& as, const iofunc_attr& a, std::uintptr_t addr, std::size_t len, bool dest, plan& pl) {
  auto push = [&](part_kind k, std::uintptr_t s, std::size_t l, std::uint64_t fo) {
    if (pl.n > 0) {
      part& b = pl.parts[pl.n - 1];
      if (b.kind == k && b.addr + b.len == s && (k == part_kind::other || k == part_kind::bad || b.file_off + b.len == fo)) {
        b.len += l;
        return;
      }
    }
    if (pl.n == max_parts) {
      pl.overflow = true;
      return;
    }
    pl.parts[pl.n++] = part{s, l, k, fo};
    if (k == part_kind::same_shared || k == part_kind::same_private) ++pl.same;
  };
  const std::uintptr_t end = addr + len;
  std::uintptr_t p = addr;
  while (p < end && !pl.overflow) {
    const std::optional<mapping_info> info = as.find(reinterpret_cast<const void*>(p));
    if (!info) {  // not a region of this aspace: ordinary memory, up to the next page
      const std::uintptr_t next = std::min(end, (p | (page - 1)) + 1);
      push(part_kind::other, p, next - p, 0);
      p = next;
      continue;
    }
    const auto rs = reinterpret_cast<std::uintptr_t>(info->start);
    std::uintptr_t rend = std::min(end, rs + info->length);
    // This file's bytes are [base, base + capacity) of its store's memfd (resmgr/file_store.hpp); a
    // mapping of the same memfd elsewhere maps other files. A mapped file never moves (make_mappable).
    const std::uint64_t base = a.store_offset(), cap = a.capacity();
    const std::uint64_t mo = info->file.offset + (p - rs);  // memfd offset behind p
    if (info->anonymous || info->file.memfd != a.memfd() || mo < base || mo >= base + cap) {
      if (!info->anonymous && info->file.memfd == a.memfd() && mo < base && rend - p > base - mo)
        rend = static_cast<std::uintptr_t>(p + (base - mo));  // the file's bytes start further on
      push(part_kind::other, p, rend - p, 0);
    } else {
      rend = static_cast<std::uintptr_t>(std::min<std::uint64_t>(rend, p + (base + cap - mo)));
      if (!(info->prot & (dest ? PROT_WRITE : PROT_READ)))
        push(part_kind::bad, p, rend - p, 0);
      else
        push(info->shared ? part_kind::same_shared : part_kind::same_private, p, rend - p, mo - base);
    }
    p = rend;
  }
}

/// The end of the page holding the file's last byte (0 for an empty file): a client mapping reads and
/// writes up to there, and gets SIGBUS from there on.
[[nodiscard]] constexpr std::uint64_t page_end(std::uint64_t size) noexcept { return (size + page - 1) & ~std::uint64_t{page - 1}; }

// The locked file range of a same-file part: exact for MAP_SHARED, whole pages for MAP_PRIVATE.
inline range_request part_range(iofunc_attr& a, const part& pt, lock_mode shared_part_mode) {
  if (pt.kind == part_kind::same_shared) return range_request{&a.data_lock, pt.file_off, pt.len, shared_part_mode};
  const std::uint64_t first = pt.file_at(pt.addr & ~std::uintptr_t{page - 1});
  const std::uint64_t last = pt.file_at(((pt.addr + pt.len - 1) | (page - 1)) + 1);
  return range_request{&a.data_lock, first, last - first, lock_mode::shared};
}

// Effects: writes the file's image of the client page at `pg` (file offset pfo) into buf: the whole
// page of the extent, as a page-in makes it (past the size, the last page holds zeros or what a shared
// mapping stored there: iofunc_page_in_default). Requires: pfo < size; the page's file range locked.
inline void file_page_image(const iofunc_attr& a, std::uint64_t pfo, unsigned char* buf) noexcept {
  std::memcpy(buf, a.data() + pfo, page);
}

// Effects: places len bytes of src at the private part's addresses [pt.addr, pt.addr + len).
// Which pages are present is asked once per chunk of up to 256 pages (detail::mapped_pages, not mincore:
// a private file mapping's page cache is not its pages): runs of present pages
// get one plain copy each, runs of absent pages one UFFDIO_COPY each (an absent page only partly
// covered is completed from the file first). A page whose state changed meanwhile is handled either
// way: UFFDIO_COPY onto a present page says EEXIST (then it is copied normally); a page that vanished
// under a plain copy faults and is paged in like any fault (only shared ranges cover private parts).
// Returns the bytes placed (== len unless a hole: a page past `size`, or the region went away).
inline std::size_t fill_private(const aspace& as, const iofunc_attr& a, const part& pt, const unsigned char* src,
                                std::size_t len, std::uint64_t size) {
  const detail::uffd& u = as.userfault();
  counters_t& c = counters();
  alignas(64) unsigned char img[page];
  constexpr std::size_t chunk_pages = 256;
  unsigned char present[chunk_pages];
  const std::uintptr_t end = pt.addr + len;
  std::uintptr_t p = pt.addr;
  while (p < end) {
    const std::uintptr_t pg0 = p & ~std::uintptr_t{page - 1};
    const std::size_t npages = std::min<std::size_t>(chunk_pages, (end - pg0 + page - 1) / page);
    detail::mapped_pages(pg0, npages, present);
    const std::uintptr_t chunk_end = std::min<std::uintptr_t>(end, pg0 + npages * page);
    while (p < chunk_end) {
      const std::uintptr_t pg = p & ~std::uintptr_t{page - 1};
      const std::uint64_t pfo = pt.file_at(pg);
      if (pfo >= size) return p - pt.addr;  // the client's own access would be SIGBUS
      // The run of pages with the same presence as this one (and still inside the file).
      const bool here = (present[(pg - pg0) / page] & 1) != 0;
      std::uintptr_t run_end = pg + page;
      while (run_end < chunk_end && ((present[(run_end - pg0) / page] & 1) != 0) == here && pt.file_at(run_end) < size)
        run_end += page;
      run_end = std::min(run_end, chunk_end);
      const unsigned char* from = src + (p - pt.addr);
      if (here) {  // present: a plain copy cannot take a uffd fault (unless unmapped meanwhile)
        if (detail::guarded_memcpy(reinterpret_cast<void*>(p), from, run_end - p)) return p - pt.addr;
        add(c.present_bytes, run_end - p);
        p = run_end;
        continue;
      }
      if (p == pg && run_end - p >= page) {  // absent whole pages: one UFFDIO_COPY
        const std::size_t whole = ((run_end - p) / page) * page;
        const detail::uffd_fill_result r = u.copy(p, from, whole);
        add(c.uffd_bytes, r.done);
        p += r.done;
        if (!r.error || r.error == std::errc::resource_unavailable_try_again) continue;
        if (r.error != std::errc::file_exists) return p - pt.addr;  // ENOENT/ESRCH: unmapped meanwhile
        present[(p - pg0) / page] = 1;  // someone filled it meanwhile: copy it normally next round
        continue;
      }
      // An absent page only partly covered: its image is the file's page with our bytes over it.
      const std::size_t part_len = std::min<std::uintptr_t>(end, pg + page) - p;
      file_page_image(a, pfo, img);
      std::memcpy(img + (p - pg), from, part_len);
      const detail::uffd_fill_result r = u.copy(pg, img, page);
      if (r.error == std::errc::resource_unavailable_try_again) continue;
      if (r.error == std::errc::file_exists) {
        present[(pg - pg0) / page] = 1;
        continue;
      }
      if (r.error) return p - pt.addr;
      add(c.uffd_bytes, part_len);
      p += part_len;
    }
  }
  return p - pt.addr;
}

// Effects: makes the private part's pages [pt.addr, pt.addr + len) present as a read fault would: the
// file's page made valid in the memfd's page cache (fallocate allocates a hole as zeros and never
// overwrites) and mapped with UFFDIO_CONTINUE (read-only: the page cache's page, until the client
// writes it; EEXIST: already present, possibly privately modified). Requires: the part's file range
// held. Returns the bytes of the part now readable without a fault (len unless a hole).
inline std::size_t populate_private(const aspace& as, const iofunc_attr& a, const part& pt, std::size_t len, std::uint64_t size) {
  const detail::uffd& u = as.userfault();
  const std::uintptr_t end = pt.addr + len;
  std::uintptr_t p = pt.addr;
  while (p < end) {
    const std::uintptr_t pg = p & ~std::uintptr_t{page - 1};
    const std::uint64_t pfo = pt.file_at(pg);
    if (pfo >= size) break;
    if (::fallocate(a.memfd(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(a.store_offset() + pfo), page) != 0) break;
    const detail::uffd_fill_result r = u.continue_range(pg, page);
    if (r.error == std::errc::resource_unavailable_try_again) continue;
    if (r.error && r.error != std::errc::file_exists) break;
    if (!r.error) add(counters().uffd_bytes, page);
    p = std::min<std::uintptr_t>(end, pg + page);
  }
  return p - pt.addr;
}

/// The locked ranges of one direct copy: rq[0] is the file range the copy reads or writes, then one
/// range per same-file part of the client's buffer.
using same_ranges = std::array<range_request, max_same_parts + 1>;

// Effects: classifies the client buffer [addr, addr + len) (`dest`: the copy writes it) into `pl`; if
// it overlaps the file itself and the plan fits, stores each same-file part's range (a MAP_SHARED
// part in `shared_part_mode`) into rq[1..]. Returns: the number of entries of rq to lock (rq[0]
// included, left for the caller to fill), or 0 when the direct path is not for this copy: nothing of
// the file (not counted) or too many parts (counted as declined).
inline std::size_t plan_same_ranges(const aspace& as, iofunc_attr& a, std::uintptr_t addr, std::size_t len, bool dest,
                                    lock_mode shared_part_mode, plan& pl, same_ranges& rq) {
  classify(as, a, addr, len, dest, pl);
  if (pl.same == 0) return 0;
  if (pl.overflow || pl.same > max_same_parts) {
    add(counters().declined, 1);
    return 0;
  }
  std::size_t k = 1;
  for (std::size_t i = 0; i < pl.n; ++i)
    if (pl.parts[i].kind == part_kind::same_shared || pl.parts[i].kind == part_kind::same_private)
      rq[k++] = part_range(a, pl.parts[i], shared_part_mode);
  return k;
}

// True if a part of kind k has a file range that intersects [off, off + n).
inline bool overlaps(const plan& pl, part_kind k, std::uint64_t off, std::uint64_t n) noexcept {
  for (std::size_t i = 0; i < pl.n; ++i) {
    const part& pt = pl.parts[i];
    if (pt.kind == k && pt.file_off < off + n && off < pt.file_off + pt.len) return true;
  }
  return false;
}

}  // namespace detail::dc

/// Effects: if the destination of read request `q` on open `o` has parts that map the same file (in the
/// sending process's address space), serves the whole read by the direct path (see the header) and
/// returns true with `res` set (bytes read: a short count when the destination turns bad part-way,
/// EFAULT when its first byte is bad); otherwise does
/// nothing and returns false (serve it the ordinary way). Throws: what ordered_range_guards throws
/// (EDEADLK under a violation handler that throws, std::bad_alloc); nothing is held then.
/// Thread-safety: any server thread. Lock order: see the header.
[[nodiscard]] inline bool try_direct_read(request_context& ctx, iofunc_ocb& o, const io_rw_request& q, io_result& res) {
  namespace dc = detail::dc;
  if (!o.readable || (q.hints & rw_hint_no_client_memory)) return false;  // no aspace: no mapping of the file
  const std::shared_ptr<process_memory> mem = dc::client_memory(ctx.client.pid);
  if (!mem) return false;
  const aspace& as = mem->space();
  const std::uint64_t want = std::min<std::uint64_t>(q.nbytes, ctx.rcv.reply_data_len());
  std::uint64_t off = 0;
  if (detail::rw_offset(o, q, want, off)) return false;
  iofunc_attr& a = *o.attr;
  if (want == 0 || off >= a.size()) return false;
  const std::uint64_t n = std::min(want, a.size() - off);
  bool handled = false;
  std::uint64_t done = 0;
  std::error_code err;
  const std::error_code ec = ctx.rcv.with_reply_data([&](void* dst, std::size_t) -> std::error_code {
    dc::plan pl;
    dc::same_ranges rq{};
    const std::size_t k = dc::plan_same_ranges(as, a, reinterpret_cast<std::uintptr_t>(dst), static_cast<std::size_t>(n),
                                               true, lock_mode::exclusive, pl, rq);
    if (k == 0) return {};
    handled = true;
    rq[0] = range_request{&a.data_lock, off, n, lock_mode::shared};
    ordered_range_guards<dc::max_same_parts + 1> held(std::span<const range_request>(rq.data(), k));
    const std::uint64_t size = a.size();  // a truncate may have completed before we got the ranges
    const std::uint64_t total = off >= size ? 0 : std::min(n, size - off);
    const unsigned char* src = a.data() + off;
    std::unique_ptr<unsigned char[]> bounce;
    if (pl.n > 1 && dc::overlaps(pl, dc::part_kind::same_shared, off, total)) {
      bounce.reset(new unsigned char[total]);
      std::memcpy(bounce.get(), src, total);
      src = bounce.get();
      dc::add(dc::counters().bounced, 1);
    }
    dc::counters_t& c = dc::counters();
    for (std::size_t i = 0; i < pl.n && done < total; ++i) {
      const dc::part& pt = pl.parts[i];
      const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(pt.len, total - done));
      std::size_t moved = 0;
      switch (pt.kind) {
        case dc::part_kind::other:
          moved = detail::guarded_copy_prefix(reinterpret_cast<void*>(pt.addr), src + done, len);
          dc::add(c.other_bytes, moved);
          break;
        case dc::part_kind::bad: break;
        case dc::part_kind::same_shared: {
          // The client may write its mapping up to the end of the file's last page (bytes past the
          // size there are the extent's, which the mapping shows); a whole page past it is SIGBUS.
          const std::uint64_t mapped_end = dc::page_end(size);
          moved = pt.file_off >= mapped_end ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(len, mapped_end - pt.file_off));
          std::memmove(a.data() + pt.file_off, src + done, moved);
          dc::add(c.store_bytes, moved);
          break;
        }
        case dc::part_kind::same_private: moved = dc::fill_private(as, a, pt, src + done, len, size); break;
      }
      done += moved;
      if (moved < len) {
        err = std::make_error_code(std::errc::bad_address);
        break;
      }
    }
    return {};
  });
  if (!handled) return false;
  if (ec) err = ec;
  dc::add(dc::counters().reads, 1);
  // A destination that turns bad part-way: the bytes before the bad part are read (a short count,
  // read(2)); EFAULT only if nothing was copied.
  if (err && (done == 0 || err != std::errc::bad_address)) {
    res = io_result::fail(err);
    return true;
  }
  a.touch(true, false);
  if (!q.use_offset) o.offset.store(static_cast<std::int64_t>(off + done), std::memory_order_relaxed);
  res = io_result::ok(static_cast<std::int64_t>(done));
  return true;
}

/// Effects: if the source of write request `q` on open `o` has parts that map the same file, serves the
/// write by the direct path (see the header) and returns true with `res` set; otherwise returns false.
/// Results as iofunc_write_default: a short count at a hole (the bytes before it are written, the file
/// grows by those only), EFAULT if the hole is at the start, EFBIG, ENOSPC... (nothing changed then).
/// Throws: as try_direct_read.
[[nodiscard]] inline bool try_direct_write(request_context& ctx, iofunc_ocb& o, const io_rw_request& q, io_result& res) {
  namespace dc = detail::dc;
  if (!o.writable || (q.hints & rw_hint_no_client_memory)) return false;  // no aspace: no mapping of the file
  const std::shared_ptr<process_memory> mem = dc::client_memory(ctx.client.pid);
  if (!mem) return false;
  const aspace& as = mem->space();
  std::uint64_t n = std::min<std::uint64_t>(q.nbytes, ctx.rcv.payload_len());
  if (n == 0) return false;
  iofunc_attr& a = *o.attr;
  const bool append = (o.flags & O_APPEND) && !q.use_offset;
  std::uint64_t off = 0;
  // Errors the ordinary path reports (before any change) are left to it.
  if (!append && (detail::rw_offset(o, q, n, off) || detail::clip_to_max(a, off, &n))) return false;
  bool handled = false;
  std::uint64_t done = 0;
  std::error_code err;
  const std::error_code ec = ctx.rcv.with_payload([&](const void* srcp, std::size_t) -> std::error_code {
    dc::plan pl;
    dc::same_ranges rq{};
    const std::size_t k = dc::plan_same_ranges(as, a, reinterpret_cast<std::uintptr_t>(srcp), static_cast<std::size_t>(n),
                                               false, lock_mode::shared, pl, rq);
    if (k == 0) return {};
    handled = true;
    std::optional<ordered_range_guards<dc::max_same_parts + 1>> held;
    for (;;) {
      if (append) {
        off = a.size();
        if (auto e = detail::clip_to_max(a, off, &n)) {
          err = e;
          return {};
        }
      }
      const auto [first, len] = a.write_span(off, n);  // the whole file if it must move
      rq[0] = range_request{&a.data_lock, first, append ? to_end : len, lock_mode::exclusive};
      // source_location: this line (a default argument would name std::optional's internals)
      held.emplace(std::span<const range_request>(rq.data(), k), range_options{}, source_location::current());
      if (!append || a.size() == off) break;  // nobody appended or truncated in between
      held.reset();
    }
    const std::uint64_t old_size = a.size();
    if (auto e = a.reserve(off + n)) {  // the size is published after the copy, for the bytes copied
      err = e;
      return {};
    }
    // How much of the source is readable, part by part; private pages are made present first (before
    // any byte of the file changes: they are images of the file as it is now).
    std::uint64_t readable = 0;
    for (std::size_t i = 0; i < pl.n; ++i) {
      const dc::part& pt = pl.parts[i];
      std::size_t ok = 0;
      switch (pt.kind) {
        case dc::part_kind::other: ok = pt.len; break;  // known only when copied
        case dc::part_kind::bad: ok = 0; break;
        case dc::part_kind::same_shared: {  // readable up to the end of the last page, as the client's own loads
          const std::uint64_t mapped_end = dc::page_end(old_size);
          ok = pt.file_off >= mapped_end ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(pt.len, mapped_end - pt.file_off));
          break;
        }
        case dc::part_kind::same_private: ok = dc::populate_private(as, a, pt, pt.len, old_size); break;
      }
      readable += ok;
      if (ok < pt.len) break;
    }
    readable = std::min(readable, n);  // an append may have been clipped to max_size after the plan
    dc::counters_t& c = dc::counters();
    unsigned char* target = a.data() + off;
    std::unique_ptr<unsigned char[]> bounce;
    unsigned char* to = target;
    // A private source page not yet written is the page cache's page, i.e. the file's bytes: one that
    // overlaps the target is staged too (memmove semantics; the copy loop reads front to back).
    if ((pl.n > 1 && dc::overlaps(pl, dc::part_kind::same_shared, off, n)) || dc::overlaps(pl, dc::part_kind::same_private, off, n)) {
      bounce.reset(new unsigned char[readable]);
      to = bounce.get();
      dc::add(c.bounced, 1);
    }
    for (std::size_t i = 0; i < pl.n && done < readable; ++i) {
      const dc::part& pt = pl.parts[i];
      const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(pt.len, readable - done));
      std::size_t moved = 0;
      if (pt.kind == dc::part_kind::same_shared) {
        std::memmove(to + done, a.data() + pt.file_off, len);
        moved = len;
        dc::add(c.store_bytes, len);
      } else {  // other memory, or private pages made present above: front to back, up to a bad page
        moved = detail::guarded_copy_prefix(to + done, reinterpret_cast<const void*>(pt.addr), len);
        dc::add(pt.kind == dc::part_kind::other ? c.other_bytes : c.present_bytes, moved);
      }
      done += moved;
      if (moved < len) break;
    }
    if (bounce) std::memcpy(target, bounce.get(), done);
    if (done == 0) err = std::make_error_code(std::errc::bad_address);
    std::optional<range_guard> none;  // the ranges are released with `held`
    detail::finish_write(a, none, off, n, done, ctx.client.uid == 0, !client_in_group(ctx.client, a.gid()));
    return {};
  });
  if (!handled) return false;
  dc::add(dc::counters().writes, 1);
  if (done > 0 && !q.use_offset) o.offset.store(static_cast<std::int64_t>(off + done), std::memory_order_relaxed);
  if (ec) err = ec;
  if (err) {
    res = io_result::fail(err);
    return true;
  }
  res = io_result::ok(static_cast<std::int64_t>(done));
  return true;
}

/// Read handler: the direct path when the destination maps the same file, else iofunc_read_default.
inline io_result iofunc_read_direct(request_context& ctx, ocb_base& base, const io_rw_request& q) {
  io_result r;
  iofunc_ocb* const o = iofunc_ocb_cast(base);
  if (o != nullptr && try_direct_read(ctx, *o, q, r)) return r;
  return iofunc_read_default(ctx, base, q);
}

/// Write handler: the direct path when the source maps the same file, else iofunc_write_default.
inline io_result iofunc_write_direct(request_context& ctx, ocb_base& base, const io_rw_request& q) {
  io_result r;
  iofunc_ocb* const o = iofunc_ocb_cast(base);
  if (o != nullptr && try_direct_write(ctx, *o, q, r)) return r;
  return iofunc_write_default(ctx, base, q);
}

/// iofunc_defaults() with the direct read and write handlers.
[[nodiscard]] inline io_funcs iofunc_direct_defaults() {
  io_funcs f = iofunc_defaults();
  f.read = iofunc_read_direct;
  f.read_visit_mirrors = iofunc_read_direct;  // the visit has no client buffer: the same bytes, the same lock
  f.write = iofunc_write_direct;
  f.data_version_writers.write = iofunc_write_direct;  // stamps every change as iofunc_write_default does
  return f;
}

/// A snapshot of the direct path's process-wide counters.
[[nodiscard]] inline direct_copy_counters direct_copy_stats() noexcept {
  const detail::dc::counters_t& c = detail::dc::counters();
  auto ld = [](const std::atomic<std::uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  return direct_copy_counters{ld(c.reads),      ld(c.writes),      ld(c.store_bytes), ld(c.uffd_bytes),
                              ld(c.present_bytes), ld(c.other_bytes), ld(c.bounced),     ld(c.declined)};
}

}  // namespace faultsafe
