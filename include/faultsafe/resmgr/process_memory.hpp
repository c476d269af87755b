// faultsafe/resmgr/process_memory.hpp: mmap of server files (and anonymous memory) for a logical process.
//
// Layer: resmgr (it sends io_msg::mmap / page_in / close to a resource manager); it is built on vm/
// (aspace, pager, page_source), which knows nothing of resource managers.
//
// Defines `server_page_source` (a page_source that sends io_msg::page_in to the file's server) and
// `process_memory` (one process's aspace + pager and its mappings), and the definitions of
// process::mmap / munmap / mprotect / msync / memory() declared in resmgr/process.hpp (which includes
// this header at its end).
//
// mmap of a server file: the process sends io_msg::mmap on the fd's channel; the server's mmap handler
// checks access and bounds (iofunc_mmap_default: PROT_WRITE on MAP_SHARED needs an open for writing,
// else EACCES; PROT_READ needs a readable open; a page-aligned offset) and replies with the memfd that
// holds the file and the offset of the requested bytes in it (a server may keep many files in one memfd,
// resmgr/file_store.hpp: page-in messages still carry file offsets, see server_page_source).
// The region is then registered with the process's pager. Every fault in it sends io_msg::page_in to the
// same server on behalf of the faulting thread's activity (the fault thread adopts it for the send), so
// the server's range lock (iofunc_page_in_default: shared over the page-in window, or over the faulting
// page alone when part of the window is taken) and its handlers are on the fault path, exactly as in
// the seed's scenarios. Shared mappings: the server makes the pages present
// in the memfd, the pager maps them with UFFDIO_CONTINUE (zero copy; writes land in the file and read()
// sees them). Private mappings: the server copies the data into the pager's buffer (in place, as a
// MsgWrite), the pager UFFDIO_COPYs it.
// A mapping keeps its open alive (like a kernel mapping keeps its file): process::close() of an fd that
// is still mapped defers the server's close until the last mapping of that open goes.
// A page-in that fails (the server replies an error, the file ends before the page, the server stopped:
// ESHUTDOWN, the process's io timeout passed) ends in SIGBUS at the faulting access, never a hang.
// fork(): the mappings are not inherited (MADV_DONTFORK, see vm/aspace.hpp); a child of fork() that
// touches one gets SIGSEGV.
//
// Thread-safety: all members may be called from any thread. Lock order: the mapping table mutex is a
// leaf (never held across a send or an aspace call); aspace locks as in vm/aspace.hpp.
// Lifetime: a process_memory lives inside its process (destroyed first among its members); its pager is
// stopped before its regions are unmapped.
#pragma once
// Also a classic guard: resmgr/process.hpp includes this header at its end, and this header includes
// process.hpp; the guard keeps that cycle finite even where #pragma once does not apply (a header
// compiled as the main file, as the clang thread-safety check does).
#ifndef FAULTSAFE_RESMGR_PROCESS_MEMORY_HPP
#define FAULTSAFE_RESMGR_PROCESS_MEMORY_HPP

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../order/ranked_mutex.hpp"
#include "../vm/aspace.hpp"
#include "../vm/faulting_thread.hpp"
#include "../vm/page_source.hpp"
#include "../vm/pager.hpp"
#include "../ipc/socket_transport.hpp"
#include "../vm/served_memory.hpp"
#include "iofunc.hpp"
#include "process.hpp"

namespace faultsafe {

/// A page source that asks the file's server with io_msg::page_in (for open `handle`, file `cookie`),
/// on behalf of the faulting thread's activity; how the message travels is the derived class's
/// (send_page_in). Thread-safety: page_in may be called concurrently (one send each).
class page_in_message_source : public page_source {
 public:
  /// `base`: the memfd offset of the file's byte 0 (the mmap reply's offset minus the file offset
  /// asked for; non-zero when the server keeps many files in one memfd, resmgr/file_store.hpp). The
  /// pager's requests carry memfd offsets; the page-in messages carry file offsets.
  page_in_message_source(std::uint64_t handle, std::uint64_t cookie, std::string name, std::uint64_t base) noexcept
      : handle_(handle), cookie_(cookie), base_(base), name_(std::move(name)) {}

  /// "<server>:<path>" (e.g. "nfs:/nfs/a"), for wait-for-graph reports.
  [[nodiscard]] std::string describe() const override { return name_; }
  [[nodiscard]] std::uint64_t store_base() const noexcept override { return base_; }

  [[nodiscard]] std::error_code page_in(const page_in_request& req, page_in_result& out) override {
    io_page_in_request q{client_info{}, handle_, cookie_, req.offset - base_, req.length, 0};
    if (req.minor) q.flags |= page_in_minor;
    if (req.readahead) q.flags |= page_in_readahead;
    if (req.write) q.flags |= page_in_write;
    q.fault_thread = req.thread.thread_id;  // for reports: which fault this page-in serves
    if (!req.readahead) {
      q.fault_address = req.fault_address;
      q.fault_offset = req.fault_offset - base_;
    }
    io_page_in_reply rep{};
    send_buffers b{static_cast<std::uint32_t>(io_msg::page_in), &q, sizeof q, nullptr, 0, &rep, sizeof rep, nullptr, 0};
    // On behalf of the faulting thread: the server adopts this activity while it pages in.
    const send_result sr = send_page_in(q, b, req.thread.activity);
    if (sr.error) return sr.error;
    if (sr.reply_header_len != sizeof rep || rep.length > req.length) return std::make_error_code(std::errc::bad_message);
    const std::size_t valid = static_cast<std::size_t>(rep.length);
    // rep.offset past the window start: only the bytes from there on are valid (io_page_in_reply).
    const std::uint64_t first = rep.offset > q.offset ? rep.offset - q.offset : 0;
    if (first != 0 && ((first % vm_page_size) != 0 || first >= valid || (!req.readahead && rep.offset > q.fault_offset)))
      return std::make_error_code(std::errc::bad_message);
    out.first = static_cast<std::size_t>(first);
    out.length = valid;
    return {};
  }

 protected:
  /// Effects: sends `b` (its header is `q`, whose client_info the implementation fills) on behalf of
  /// activity `a`. Returns: the send's result.
  virtual send_result send_page_in(io_page_in_request& q, const send_buffers& b, activity_id a) = 0;

 private:
  std::uint64_t handle_;
  std::uint64_t cookie_;
  std::uint64_t base_;
  std::string name_;
};

/// The page source of a logical process's mapping: io_msg::page_in on the file's channel `ch`.
class server_page_source final : public page_in_message_source {
 public:
  server_page_source(process& p, std::shared_ptr<channel> ch, std::uint64_t handle, std::uint64_t cookie,
                     std::string name = {}, std::uint64_t base = 0) noexcept
      : page_in_message_source(handle, cookie, std::move(name), base), p_(p), ch_(std::move(ch)) {}

 private:
  send_result send_page_in(io_page_in_request& q, const send_buffers& b, activity_id a) override {
    q.client = p_.client();
    activity_scope behalf(a);
    return p_.send(*ch_, b);
  }
  process& p_;
  std::shared_ptr<channel> ch_;
};

/// One logical process's address space: aspace + pager + the table of its file mappings.
class process_memory {
 public:
  /// Throws: std::system_error when userfaultfd is refused (the message names vm.unprivileged_userfaultfd).
  /// `ao.name` and `po.name` default to the process's name and "proc:<name>" (thread names
  /// "proc:<name>/0", ...).
  explicit process_memory(process& p, aspace_options ao = {}, pager_options po = {})
      : p_(p), pager_name_("proc:" + p.name()), as_(with_name(ao, p)), pg_(as_, with_name(po, pager_name_)) {}
  process_memory(const process_memory&) = delete;
  process_memory& operator=(const process_memory&) = delete;

  /// Effects: stops the pager (no fault hangs afterwards, see pager.hpp), sends the closes that
  /// mappings deferred, then (members) unmaps every region.
  ~process_memory() {
    pg_.stop();
    std::vector<std::pair<std::shared_ptr<channel>, std::uint64_t>> closes;
    {
      exclusive_guard g(mu_);
      for (auto& [key, ref] : opens_)
        if (ref.close_pending) closes.emplace_back(ref.ch, key.second);
      opens_.clear();
    }
    for (auto& [ch, h] : closes) send_close(*ch, h);
  }

  [[nodiscard]] aspace& space() noexcept { return as_; }
  /// Effects: the options of the served_memory made for the next server in another process that this
  /// process maps a file of (e.g. kernel_faults). Thread-safety: any thread.
  void set_served_options(served_memory_options o) {
    exclusive_guard<served_mutex> g(served_mu_);
    served_opts_ = o;
  }
  [[nodiscard]] pager& fault_pager() noexcept { return pg_; }

  /// See process::mmap.
  [[nodiscard]] result<void*> mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) {
    const int type = flags & (MAP_SHARED | MAP_PRIVATE);
    if (len == 0 || (type != MAP_SHARED && type != MAP_PRIVATE) || off < 0 || (static_cast<std::uint64_t>(off) % vm_page_size) != 0)
      return std::make_error_code(std::errc::invalid_argument);
    if ((flags & ~(MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_NORESERVE | MAP_POPULATE)) != 0)
      return std::make_error_code(std::errc::invalid_argument);
    announce_faulting_thread();  // the mapping thread is the likeliest to touch it
    map_request rq;
    rq.addr_hint = addr;
    rq.length = len;
    rq.prot = prot;
    rq.shared = type == MAP_SHARED;
    rq.fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0;
    // MAP_FIXED replaces this process's mappings in the range (after an implicit munmap, here: the
    // mapping table follows); MAP_FIXED_NOREPLACE (alone or with MAP_FIXED) fails with EEXIST.
    const bool replace = (flags & MAP_FIXED) != 0 && (flags & MAP_FIXED_NOREPLACE) == 0;
    if (rq.fixed && (reinterpret_cast<std::uintptr_t>(addr) % vm_page_size) != 0)
      return std::make_error_code(std::errc::invalid_argument);
    if (flags & MAP_ANONYMOUS) {
      if (replace)
        if (auto ec = munmap(addr, len)) return ec;
      void* out = nullptr;
      if (auto ec = try_map_fixed(rq, replace, out)) return ec;
      return out;
    }
    std::shared_ptr<channel> ch;
    std::uint64_t handle = 0;
    int fdflags = 0;
    if (auto ec = p_.fd_target(fd, ch, handle, fdflags)) return ec;
    if (ch->remote()) {  // a server in another process: its pager serves the mapping
      return mmap_served(ch, handle, fdflags, len, prot, type, fd, static_cast<std::uint64_t>(off), rq.fixed ? addr : nullptr, replace);
    }
    auto answer = p_.mmap_request(fd, static_cast<std::uint64_t>(off), len, prot, type);  // the server checks access
    if (!answer) return answer.error();
    const io_mmap_reply* rep = &answer.value();
    if (rep->memfd < 0) return std::make_error_code(std::errc::no_such_device);
    auto src = std::make_shared<server_page_source>(p_, ch, handle, rep->cookie, std::string(ch->name()) + ":" + p_.fd_path(fd),
                                                    rep->offset - static_cast<std::uint64_t>(off));
    rq.file = file_backing{rep->memfd, rep->offset, reinterpret_cast<const void*>(static_cast<std::uintptr_t>(rep->cookie)), src.get()};
    {
      exclusive_guard g(mu_);  // count the open before the region exists: close() defers
      auto& ref = opens_[{ch.get(), handle}];
      if (!ref.ch) ref.ch = ch;
      ++ref.mappings;
    }
    void* out = nullptr;
    std::error_code ec;
    if (replace) ec = munmap(addr, len);  // after the server's checks: a refused mmap leaves the old one
    if (!ec) ec = try_map_fixed(rq, replace, out);
    if (ec) {
      drop_open(ch.get(), handle);
      return ec;
    }
    exclusive_guard g(mu_);
    maps_.emplace(reinterpret_cast<std::uintptr_t>(out),
                  mapping{std::move(src), ch.get(), handle, (len + vm_page_size - 1) & ~(vm_page_size - 1),
                          type == MAP_SHARED, (fdflags & O_ACCMODE) != O_RDONLY});
    return out;
  }

  /// See process::munmap. Any page range: mappings only partly inside keep their other parts (each
  /// part keeps the open and the page source alive).
  std::error_code munmap(void* addr, std::size_t len) {
    if (auto ec = as_.munmap(addr, len)) return ec;
    {
      exclusive_guard<served_mutex> g(served_mu_);  // mappings served by servers in other processes
      for (auto& [ch, sm] : served_)
        if (auto ec = sm->unmap(addr, len)) return ec;
    }
    // The range is gone and no fault thread uses its page source any more (munmap waited for those
    // under the region lock; the others only hold the region). The table follows: every
    // entry overlapping [a, e) loses that part; the parts left each hold a mapping count of the open.
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    const std::uintptr_t e = a + ((len + vm_page_size - 1) & ~(vm_page_size - 1));
    std::vector<std::pair<channel*, std::uint64_t>> dropped;
    std::vector<std::shared_ptr<server_page_source>> dead;  // destroyed after the table mutex
    {
      exclusive_guard g(mu_);
      for (auto it = first_overlapping(a); it != maps_.end() && it->first < e;) {
        const std::uintptr_t s = it->first, t = s + it->second.length;
        mapping m = std::move(it->second);
        it = maps_.erase(it);
        int kept = 0;
        if (s < a) {
          mapping left = m;
          left.length = a - s;
          maps_.emplace(s, std::move(left));
          ++kept;
        }
        if (t > e) {
          mapping right = m;
          right.length = t - e;
          it = maps_.emplace(e, std::move(right)).first;
          ++it;
          ++kept;
        }
        if (kept == 0) dropped.emplace_back(m.ch, m.handle);
        else if (kept == 2) ++opens_[{m.ch, m.handle}].mappings;  // one mapping became two
        dead.push_back(std::move(m.src));
      }
    }
    for (auto& [ch, h] : dropped) drop_open(ch, h);
    return {};
  }

  /// See process::mprotect.
  std::error_code mprotect(void* addr, std::size_t len, int prot) {
    if (prot & PROT_WRITE) {  // a shared file mapping may become writable only through a writable open
      const auto a = reinterpret_cast<std::uintptr_t>(addr);
      const std::uintptr_t e = a + len;
      exclusive_guard g(mu_);
      for (auto it = first_overlapping(a); it != maps_.end() && it->first < e; ++it)
        if (it->second.shared && !it->second.writable_open) return std::make_error_code(std::errc::permission_denied);
    }
    if (served_memory* sm = served_holding(addr, len)) return sm->protect(addr, len, prot);
    return as_.mprotect(addr, len, prot);
  }

  /// See process::msync.
  std::error_code msync(void* addr, std::size_t len, int flags) {
    if (served_memory* sm = served_holding(addr, len)) return sm->sync(addr, len, flags);
    return as_.msync(addr, len, flags);
  }

  /// Effects: if open (ch, handle) is still mapped, remembers to close it with its last mapping and
  /// returns true; else false (the caller closes now).
  bool defer_close(const std::shared_ptr<channel>& ch, std::uint64_t handle) {
    exclusive_guard g(mu_);
    auto it = opens_.find({ch.get(), handle});
    if (it == opens_.end() || it->second.mappings == 0) return false;
    it->second.close_pending = true;
    return true;
  }

 private:
  struct mapping {
    std::shared_ptr<server_page_source> src;  // shared by the parts of a partly unmapped mapping
    channel* ch;
    std::uint64_t handle;
    std::size_t length;
    bool shared;
    bool writable_open;
  };
  struct open_ref {
    std::shared_ptr<channel> ch;
    std::size_t mappings = 0;
    bool close_pending = false;
  };

  // Requires: mu_. The first table entry that may overlap [a, ...).
  std::map<std::uintptr_t, mapping>::iterator first_overlapping(std::uintptr_t a) FAULTSAFE_REQUIRES(mu_) {
    auto it = maps_.upper_bound(a);
    if (it != maps_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second.length > a) return prev;
    }
    return it;
  }

  // MAP_FIXED after the caller's munmap: another thread may map into the hole meanwhile (the aspace
  // then unmaps it again, see aspace::try_map); the table entries of what it unmapped stay until a
  // munmap over them (a harmless, bounded leak of that race).
  std::error_code try_map_fixed(map_request rq, bool replace, void*& out) {
    rq.replace = replace;
    return as_.try_map(rq, out);
  }

  void drop_open(channel* ch, std::uint64_t handle) {
    std::shared_ptr<channel> to_close;
    {
      exclusive_guard g(mu_);
      auto it = opens_.find({ch, handle});
      if (it == opens_.end()) return;
      if (--it->second.mappings == 0) {
        if (it->second.close_pending) to_close = it->second.ch;
        opens_.erase(it);
      }
    }
    if (to_close) send_close(*to_close, handle);
  }

  void send_close(channel& ch, std::uint64_t handle) {
    io_handle_request q{p_.client(), handle};
    (void)p_.send(ch, {static_cast<std::uint32_t>(io_msg::close), &q, sizeof q});
  }

  // mmap of a file of a server in another OS process (resmgr/remote.hpp): the first one hands this
  // process's userfaultfd for that server over; then fetch the memfd (the server checks the access),
  // map and register it, have the server track it. The mapping keeps the open (as a local one).
  // `at`: MAP_FIXED (`replace`: what this process mapped there is unmapped first, once the server has
  // accepted; memory that is not this process's mapping is never replaced: EEXIST) or
  // MAP_FIXED_NOREPLACE; nullptr: anywhere.
  result<void*> mmap_served(const std::shared_ptr<channel>& ch, std::uint64_t handle, int fdflags, std::size_t len, int prot,
                            int type, int fd, std::uint64_t off, void* at = nullptr, bool replace = false) {
    const bool shared = type == MAP_SHARED;
    void* out = nullptr;
    io_mmap_reply rep{};
    int memfd = -1;
    {
      exclusive_guard<served_mutex> g(served_mu_);
      auto& sm = served_[ch.get()];
      if (!sm) {
        const pid_t server = server_pid(*ch);
        if (server <= 0) return std::make_error_code(std::errc::not_connected);
        try {
          sm = std::make_unique<served_memory>(served_opts_);
        } catch (const std::system_error& e) {
          served_.erase(ch.get());
          return e.code();
        }
        std::error_code ec = sm->watch_server(server);
        if (!ec) {
          auto hello = p_.mmap_request(fd, sm->features(), static_cast<std::uint64_t>(sm->userfaultfd()), 0, mmap_served_hello);
          if (!hello) ec = hello.error();
        }
        if (ec) {
          served_.erase(ch.get());
          return ec;
        }
      }
      // the file's memfd, shared or private (a private mapping maps it MAP_PRIVATE: vm/served_memory.hpp)
      auto answer = p_.mmap_request(fd, off, len, prot, type | mmap_served_fetch);
      if (!answer) return answer.error();
      rep = *answer;
      std::uint64_t tag = 0;
      std::error_code ec;
      memfd = client_receive_fd(*ch, tag, std::chrono::seconds(10), ec);
      if (memfd < 0) return ec;
      if (tag != handle) {
        ::close(memfd);
        return std::make_error_code(std::errc::protocol_error);
      }
    }
    struct fd_closer {
      int fd;
      ~fd_closer() { ::close(fd); }  // the mapping keeps the file
    } closer{memfd};
    // MAP_FIXED: the old mappings go only now that the server has accepted (a refused mmap leaves
    // them, as Linux does). munmap() takes the served mutex itself.
    if (at != nullptr && replace)
      if (auto ec = munmap(at, len)) return ec;
    {
      exclusive_guard<served_mutex> g(served_mu_);
      auto it = served_.find(ch.get());
      if (it == served_.end() || !it->second) return std::error_code(ESHUTDOWN, std::generic_category());
      served_memory* sm = it->second.get();
      any_served_.store(true, std::memory_order_release);  // (7) release, pairs with (8): before the first served mapping exists
      if (auto ec = sm->map(served_map_request{len, prot, shared, memfd, rep.offset, at}, out)) return ec;
      auto tracked = p_.mmap_request(fd, off, len, prot, type | mmap_served_track, reinterpret_cast<std::uint64_t>(out));
      if (!tracked) {
        (void)sm->unmap(out, len);
        return tracked.error();
      }
    }
    exclusive_guard g(mu_);
    auto& ref = opens_[{ch.get(), handle}];
    if (!ref.ch) ref.ch = ch;
    ++ref.mappings;
    maps_.emplace(reinterpret_cast<std::uintptr_t>(out),
                  mapping{nullptr, ch.get(), handle, (len + vm_page_size - 1) & ~(vm_page_size - 1), shared, (fdflags & O_ACCMODE) != O_RDONLY});
    return out;
  }


 public:
  /// See process::in_served_mapping.
  [[nodiscard]] bool in_served_mapping(const void* addr, std::size_t len) noexcept { return served_holding(addr, len) != nullptr; }

 private:
  // The served_memory (a server in another process) with a mapping in [addr, addr + len), or nullptr
  // (the range is this process's aspace's, or nothing's). A range across both is answered by the
  // served_memory: ENOMEM for the pages that are not its own. The served_memory lives until this object
  // dies (entries are erased only when a set-up fails, before anything was mapped).
  // Lock-free while this process has never mapped a file of a server in another process: process::rw
  // asks on every remote read and write.
  served_memory* served_holding(const void* addr, std::size_t len) {
    if (!any_served_.load(std::memory_order_acquire)) return nullptr;  // (8) acquire, pairs with (7)
    exclusive_guard<served_mutex> g(served_mu_);
    for (auto& [ch, sm] : served_)
      if (sm && sm->overlaps(addr, len)) return sm.get();
    return nullptr;
  }

  static aspace_options with_name(aspace_options o, const process& p) {
    if (std::string_view(o.name) == "aspace") o.name = p.name().c_str();
    return o;
  }
  static pager_options with_name(pager_options o, const std::string& n) {
    if (std::string_view(o.name) == "proc") o.name = n.c_str();
    return o;
  }

  process& p_;
  std::string pager_name_;
  ranked_mutex<rank::leaf> mu_{"process maps"};  // leaf: maps_, opens_
  std::map<std::uintptr_t, mapping> maps_ FAULTSAFE_GUARDED_BY(mu_);                          // by start address
  std::map<std::pair<channel*, std::uint64_t>, open_ref> opens_ FAULTSAFE_GUARDED_BY(mu_);    // opens kept by mappings
  // Mappings served by servers in other processes: one served_memory per server connection. Held
  // across the set-up's sends (rank 70: above the vm and range locks, below the leaves).
  using served_mutex = ranked_mutex<rank::registry>;
  served_mutex served_mu_{"served mappings"};
  std::map<channel*, std::unique_ptr<served_memory>> served_ FAULTSAFE_GUARDED_BY(served_mu_);
  std::atomic<bool> any_served_{false};  // a served mapping was ever made (served_holding's fast exit)
  served_memory_options served_opts_ FAULTSAFE_GUARDED_BY(served_mu_);
  aspace as_;   // after the tables: destroyed before them (its regions use the sources)
  pager pg_;    // destroyed first (stops the fault threads)
};

// ---- process members declared in resmgr/process.hpp ----------------------------------------------------

// The process_memory is built outside mem_mu_ (a leaf): its pager registers with a fault pool, whose
// mutex is a leaf too. Two first calls racing build two; the loser's is destroyed, unused.
inline bool process::in_served_mapping(const void* p, std::size_t n) noexcept {
  std::shared_ptr<process_memory> m = memory_if_made();
  return m && m->in_served_mapping(p, n);
}

inline process_memory& process::memory() {
  {
    exclusive_guard g(mem_mu_);
    if (mem_) return *mem_;
  }
  auto made = std::make_shared<process_memory>(*this);
  exclusive_guard g(mem_mu_);
  if (!mem_) mem_ = std::move(made);
  return *mem_;
}

inline process_memory& process::memory(const aspace_options& ao, const pager_options& po) {
  {
    exclusive_guard g(mem_mu_);
    if (mem_) return *mem_;
  }
  auto made = std::make_shared<process_memory>(*this, ao, po);
  exclusive_guard g(mem_mu_);
  if (!mem_) mem_ = std::move(made);
  return *mem_;
}

inline result<void*> process::mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) {
  process_memory* m = nullptr;
  try {
    m = &memory();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return m->mmap(addr, len, prot, flags, fd, off);
}

inline result<void> process::munmap(void* addr, std::size_t len) {
  std::shared_ptr<process_memory> m;
  {
    exclusive_guard g(mem_mu_);
    m = mem_;
  }
  if (!m) return (reinterpret_cast<std::uintptr_t>(addr) % vm_page_size) != 0 || len == 0
                     ? std::make_error_code(std::errc::invalid_argument)
                     : std::error_code{};
  return m->munmap(addr, len);
}

inline result<void> process::mprotect(void* addr, std::size_t len, int prot) {
  std::shared_ptr<process_memory> m;
  {
    exclusive_guard g(mem_mu_);
    m = mem_;
  }
  if (!m) return std::make_error_code(std::errc::not_enough_memory);
  return m->mprotect(addr, len, prot);
}

inline result<void> process::msync(void* addr, std::size_t len, int flags) {
  std::shared_ptr<process_memory> m;
  {
    exclusive_guard g(mem_mu_);
    m = mem_;
  }
  if (!m) return std::make_error_code(std::errc::not_enough_memory);
  return m->msync(addr, len, flags);
}

inline bool process::defer_close_if_mapped(const std::shared_ptr<channel>& ch, std::uint64_t handle) {
  std::shared_ptr<process_memory> m;
  {
    exclusive_guard g(mem_mu_);
    m = mem_;
  }
  return m && m->defer_close(ch, handle);
}

}  // namespace faultsafe

#endif  // FAULTSAFE_RESMGR_PROCESS_MEMORY_HPP
