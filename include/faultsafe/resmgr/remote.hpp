// faultsafe/resmgr/remote.hpp: a resource manager serving client OS processes, and the client's way
// to reach it.
//
// Defines `remote_server_options`, `remote_server` (serves a `server` on a Unix socket through the
// socket transport, ipc/socket_transport.hpp) and `mount_remote()` (a client process attaches a path
// prefix of its namespace to such a server). A `process` (resmgr/process.hpp) whose namespace
// resolves a path to a remote server sends every call there exactly as to a server in its own
// binary: the same calls, the same result<T> / std::error_code values. One client API, two
// transports (the in-process channel and the socket channel), no second copy of process.hpp.
//
// Identity. The credentials in a request header (client_info) are replaced, for every message,
// with the connection's: the uid and gid the kernel reported at connect (SO_PEERCRED), its
// supplementary groups (SO_PEERGROUPS; the first client_max_groups, as for in-process clients) and
// a logical pid this server gives the connection (distinct from every in-process `process` pid,
// which never reach 2^62). A client that writes another uid or other groups into its messages gets
// exactly what its real ones get. Permission checks are the server's own, as for in-process clients.
//
// Death. When a client's connection dies (the process exits or is killed, even in the middle of a
// request; noticed at once by the socket's hang-up or the pidfd), its requests being served finish
// (copies into the dead process fail with EFAULT) and then every open it still held is closed as if
// it had called close() (the server's close handler runs; its range locks were only ever held for
// the duration of a request). Other clients do not notice. A server that dies or stops makes the
// client's calls fail with ESHUTDOWN (socket_transport.hpp says how soon).
//
// mmap of a server file, served by THIS server's pager (vm/served_memory.hpp, vm/aspace.hpp "Another OS
// process's memory"). The client's process_memory hands its userfaultfd over once per connection
// (io_msg::mmap with mmap_served_hello: the server takes the fd with pidfd_getfd, the same permission
// as process_vm_writev into the client, and runs an aspace + pager for the connection); for each
// mapping it asks for the backing memfd (mmap_served_fetch: the server's mmap handler checks access
// as for any mmap, the memfd goes over the connection's socket with SCM_RIGHTS), maps and registers it
// itself, and has the server track it (mmap_served_track: access checked again). Every first touch in
// the client is then a page-in of this server's (io_msg::page_in, served on the fault thread on behalf
// of the faulting thread's activity, with the connection's credentials): the range locks and the
// fault-reentrancy guard are on the path exactly as in-process, and a server thread's own copy into a
// page of such a mapping (process_vm_writev, with a client userfaultfd that takes kernel-mode faults)
// is recognised as its own activity. A plain io_msg::mmap from a client fails with ENOTSUP (its
// reply would name a memfd of the server's fd table), and so does io_msg::read_visit (its visitor is a
// function pointer of the client's address space: the server never calls it). When the connection goes, its pager stops before
// the client's opens are closed. Anonymous mmap/munmap/mprotect/msync are the client's own.
//
// The fd a client gets (mmap_served_fetch). The file's own memfd (iofunc_attr::make_mappable moves a
// mapped file out of the store's arena into a memfd of its own, resmgr/file_store.hpp "Mappings: a file
// of its own"), never the arena: the client can reach no other file's bytes. Its size is the file's
// final capacity and sealed (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): the client can neither shrink
// it (which would make the server's own accesses SIGBUS) nor grow it nor add seals. Its access is what
// the mapping needs: a MAP_SHARED mapping that can write the file, now or after an mprotect (PROT_WRITE,
// or PROT_READ through an open the mmap handler would also map writable: the kernel's VM_MAYWRITE),
// gets the read-write fd, which can write and punch the file (as the mapping can write it); any other
// mapping (MAP_PRIVATE, or shared through a read-only open) gets a read-only reopen of it (/proc/self/fd/N, O_RDONLY; without
// /proc mounted such a mapping fails with the open's errno, never falls back to the read-write fd), which
// can only read it, and which a client of another uid cannot reopen for writing (the memfd's mode is
// 0400, owned by the server's uid; a client with CAP_DAC_OVERRIDE or CAP_FOWNER could, and so could a
// client of the server's own uid, which owns the memfd and may fchmod it: file_store.hpp says why such a
// client is inside the server's trust boundary anyway).
// Consequence: a shared mapping through a read-only open is mapped by the client MAP_PRIVATE of that fd
// (the kernel registers no userfaultfd range on a shared mapping of a read-only fd; vm/served_memory.hpp):
// it can never write the file (the client API's mprotect refuses PROT_WRITE with EACCES, as Linux; a raw
// mprotect(2) gives private copies). What the fd reaches: the
// file's bytes up to its capacity (past the end: zeros, or what a mapping wrote into the last page).
// Like an open file, the client keeps that access after close(), munmap or a chmod of the file, for the
// file's life (the kernel's mmap keeps its file the same way); when the file dies its memfd is punched
// (the fd then reads zeros and pins no memory) and closed, and no later file ever lives in it.
//
// Thread-safety: all members from any thread. Lock order: the client table mutex is a leaf, never
// held while serving. Lifetime: a remote_server must be destroyed (or stopped) before its server.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../activity/wait_graph.hpp"
#include "../ipc/socket_transport.hpp"
#include "../order/ranked_mutex.hpp"
#include "../vm/aspace.hpp"
#include "../vm/pager.hpp"
#include "process_memory.hpp"
#include "path_namespace.hpp"
#include "protocol.hpp"
#include "server.hpp"

namespace faultsafe {

struct remote_server_options {
  /// "@name" (abstract namespace) or a filesystem path.
  std::string address;
  /// Threads of one client that may have a request in flight at once.
  unsigned slots = 4;
  /// Transfers up to this size go through the connection's shared memory, larger ones with
  /// process_vm_readv/writev (socket_listener_options::inline_max).
  std::size_t inline_max = socket_listener_options{}.inline_max;
  /// Bytes per process_vm copy between progress marks the waiting client sees
  /// (socket_listener_options::progress_chunk).
  std::size_t progress_chunk = socket_listener_options{}.progress_chunk;
  /// The address space of each client's served mappings: aspace_options::single_lock (one lock for the
  /// client's whole address space, held for the whole fault service: the seed's QNX proc, with which
  /// Colin's lock-up can occur across processes) and its name in reports ("client" when null; must
  /// outlive the remote_server). Default: per-region locks.
  bool single_lock = false;
  const char* client_space_name = nullptr;
};

class remote_server {
 public:
  /// Effects: listens on o.address; client processes connect with mount_remote()/connect_channel().
  /// Throws: std::system_error (bind/listen), std::bad_alloc.
  remote_server(server& s, remote_server_options o)
      : srv_(s), space_{o.single_lock, o.client_space_name != nullptr ? o.client_space_name : "client"},
        listener_(*s.chan(), listener_options(s, o), hooks()) {}
  ~remote_server() { stop(); }
  remote_server(const remote_server&) = delete;
  remote_server& operator=(const remote_server&) = delete;

  /// Effects: closes every connection (each client's opens are closed) and stops listening. Idempotent.
  void stop() { listener_.stop(); }

  /// Live connections / connections cleaned up after their client went (racy, for tests).
  [[nodiscard]] std::size_t connections() const { return listener_.connections(); }
  [[nodiscard]] std::uint64_t connections_gone() const noexcept { return listener_.connections_gone(); }
  /// Opens held by remote clients right now (racy, for tests).
  [[nodiscard]] std::size_t remote_opens() const {
    exclusive_guard g(mu_);
    std::size_t n = 0;
    for (const auto& [id, c] : clients_) n += c.handles.size();
    return n;
  }

 private:
  // A connection's page-ins: io_msg::page_in served on the calling fault thread as if the client had
  // sent it (its credentials), on behalf of the faulting thread's activity.
  class connection_page_source final : public page_in_message_source {
   public:
    connection_page_source(remote_server& rs, socket_peer peer, std::uint64_t handle, std::uint64_t cookie, std::string name,
                           std::uint64_t base)
        : page_in_message_source(handle, cookie, std::move(name), base), rs_(rs), peer_(peer) {}

   private:
    send_result send_page_in(io_page_in_request&, const send_buffers& b, activity_id a) override {
      return rs_.listener_.serve_local(peer_, b, a != 0 ? a : new_activity());  // stamp() sets the client_info
    }
    remote_server& rs_;
    socket_peer peer_;
  };
  // The connection's served mappings: its userfaultfd's aspace, the pager, the page sources.
  struct served_state {
    std::unique_ptr<aspace> as;
    std::unique_ptr<pager> pg;
    std::vector<std::unique_ptr<connection_page_source>> sources;
  };
  struct client_state {
    std::set<std::uint64_t> handles;    // its opens (closed when it goes)
    std::shared_ptr<served_state> mem;  // its served mappings, once it handed its userfaultfd over
  };

  static socket_listener_options listener_options(const server& s, const remote_server_options& o) {
    socket_listener_options lo;
    lo.address = o.address;
    lo.slots = o.slots;
    lo.inline_max = o.inline_max;
    lo.progress_chunk = o.progress_chunk;
    lo.name = s.name() + "@sock";
    return lo;
  }

  socket_listener_hooks hooks() {
    socket_listener_hooks h;
    h.stamp = [this](const socket_peer& p, std::uint32_t type, unsigned char* hdr, std::size_t len) {
      return stamp(p, type, hdr, len);
    };
    h.serve = [this](const socket_peer& p, channel::receiver& r) {
      // Its kernel-mode faults on the client's served mappings (its process_vm_writev into them) name
      // this thread and the activity it serves (vm/faulting_thread.hpp): the guard and the wait-for
      // graph then see them as in-process. Cheap after the first call.
      announce_faulting_thread();
      io_mmap_request q;
      if ((r.type() & io_msg_type_mask) == static_cast<std::uint32_t>(io_msg::mmap) && !r.header_as(q) &&
          (q.flags & (mmap_served_hello | mmap_served_fetch | mmap_served_track)) != 0)
        return serve_memory(p, r, q);
      srv_.serve(r);
    };
    h.served = [this](const socket_peer& p, std::uint32_t type, const unsigned char* hdr, std::size_t len, const send_result& res) {
      served(p, type, hdr, len, res);
    };
    h.gone = [this](const socket_peer& p) { gone(p); };
    h.fault_in = [this](const socket_peer& p, std::uintptr_t addr, std::size_t len) { return fault_in(p, addr, len); };
    return h;
  }

  // The kernel's credentials and the connection's logical pid replace the header's client_info.
  std::error_code stamp(const socket_peer& p, std::uint32_t type, unsigned char* hdr, std::size_t len) {
    if ((type & io_msg_type_mask) == static_cast<std::uint32_t>(io_msg::read_visit))
      return std::make_error_code(std::errc::not_supported);  // see the header comment
    if ((type & io_msg_type_mask) == static_cast<std::uint32_t>(io_msg::mmap) && !local_mmap_) {
      io_mmap_request q;
      if (len != sizeof q) return std::make_error_code(std::errc::bad_message);
      std::memcpy(&q, hdr, sizeof q);
      if ((q.flags & (mmap_served_hello | mmap_served_fetch | mmap_served_track)) == 0)
        return std::make_error_code(std::errc::not_supported);  // see the header comment
    }
    if (len < sizeof(client_info)) return std::make_error_code(std::errc::bad_message);
    const client_info ci = identity(p, client_pid(p));
    std::memcpy(hdr, &ci, sizeof ci);  // every request header starts with client_info (protocol.hpp)
    return {};
  }

  // The connection's identity, all from the kernel: uid, gid, supplementary groups (the first
  // client_max_groups), and its logical pid.
  static client_info identity(const socket_peer& p, std::uint64_t pid) noexcept {
    client_info ci{pid, static_cast<std::uint32_t>(p.uid), static_cast<std::uint32_t>(p.gid)};
    ci.groups.count = static_cast<std::uint32_t>(std::min<std::size_t>(p.ngroups, client_max_groups));
    for (std::uint32_t i = 0; i < ci.groups.count; ++i) ci.groups.ids[i] = static_cast<std::uint32_t>(p.groups[i]);
    return ci;
  }

  // The connection's logical pid: 2^62 | this server's serial << 40 | the connection's number. A pure
  // function of the two (no lock, no table on the path of every request); distinct for every
  // connection of this server (numbers below 2^40) and from the other servers' in this process
  // (serials below 2^22), and from every in-process `process` pid (below 2^62).
  [[nodiscard]] std::uint64_t client_pid(const socket_peer& p) const noexcept {
    return (std::uint64_t{1} << 62) | (serial_ << 40) | (p.id & ((std::uint64_t{1} << 40) - 1));
  }
  static std::uint64_t next_serial() noexcept {
    static std::atomic<std::uint64_t> next{0};
    return next.fetch_add(1, std::memory_order_relaxed) & ((std::uint64_t{1} << 22) - 1);
  }

  // The server's own mmap handler for the client's request `q` (its access checks), without the
  // served bits. Returns: the reply or the error.
  std::error_code local_mmap(const socket_peer& p, io_mmap_request q, io_mmap_reply& rep) {
    q.flags &= ~(mmap_served_hello | mmap_served_fetch | mmap_served_track);
    q.addr = 0;
    send_buffers b{static_cast<std::uint32_t>(io_msg::mmap), &q, sizeof q, nullptr, 0, &rep, sizeof rep, nullptr, 0};
    local_mmap_ = true;  // this thread's own request: stamp() lets it through
    const send_result res = listener_.serve_local(p, b, current_activity());
    local_mmap_ = false;
    if (res.error) return res.error;
    if (res.reply_header_len != sizeof rep || rep.memfd < 0) return std::make_error_code(std::errc::no_such_device);
    return {};
  }

  // io_msg::mmap with a served bit (see the header comment). Replies on `r`.
  void serve_memory(const socket_peer& p, channel::receiver& r, const io_mmap_request& q) {
    const io_mmap_reply none{};  // the reply header every io_msg::mmap reply carries
    std::shared_ptr<served_state> st;
    {
      exclusive_guard g(mu_);
      st = clients_[p.id].mem;
    }
    if (q.flags & mmap_served_hello) {
      if (st) return (void)r.reply_error(std::make_error_code(std::errc::device_or_resource_busy));
      std::error_code ec;
      const int fd = listener_.take_fd(p.id, static_cast<int>(q.length), ec);
      if (fd < 0) return (void)r.reply_error(ec);
      try {
        auto ns = std::make_shared<served_state>();
        ns->as = std::make_unique<aspace>(adopt_userfaultfd, fd, q.offset, space_);
        ns->pg = std::make_unique<pager>(*ns->as, pager_options{.name = "served"});
        exclusive_guard g(mu_);
        clients_[p.id].mem = std::move(ns);
      } catch (const std::system_error& e) {
        return (void)r.reply_error(e.code());
      } catch (const std::bad_alloc&) {
        return (void)r.reply_error(std::make_error_code(std::errc::not_enough_memory));
      }
      (void)r.reply(0, &none, sizeof none);
      return;
    }
    if (!st) return (void)r.reply_error(std::make_error_code(std::errc::not_connected));
    io_mmap_reply rep;
    if (auto ec = local_mmap(p, q, rep)) return (void)r.reply_error(ec);
    if (q.flags & mmap_served_fetch) {
      // The access the mapping needs (see the header): read-write only for a shared mapping that can
      // write the file, now (PROT_WRITE: the handler accepted it) or after an mprotect (the handler
      // would accept PROT_WRITE through this open: asked without side effects beyond the reply).
      bool writable = (q.flags & MAP_SHARED) && (q.prot & PROT_WRITE);
      if ((q.flags & MAP_SHARED) && !writable) {
        io_mmap_request w = q;
        w.prot |= PROT_WRITE;
        io_mmap_reply wrep;
        writable = !local_mmap(p, w, wrep);
      }
      int ro = -1;
      if (!writable) {
        char path[40];
        std::snprintf(path, sizeof path, "/proc/self/fd/%d", rep.memfd);
        if ((ro = ::open(path, O_RDONLY | O_CLOEXEC)) < 0) return (void)r.reply_error(std::error_code(errno, std::generic_category()));
      }
      const std::error_code ec = listener_.send_fd(p.id, q.handle, ro >= 0 ? ro : rep.memfd);
      if (ro >= 0) ::close(ro);  // the client has its own reference now
      if (ec) return (void)r.reply_error(ec);
      rep.memfd = -1;  // a number of our fd table: meaningless over there
      (void)r.reply(0, &rep, sizeof rep);
      return;
    }
    // mmap_served_track
    try {
      auto src = std::make_unique<connection_page_source>(*this, p, q.handle, rep.cookie, srv_.name() + ":handle " + std::to_string(q.handle),
                                                          rep.offset - q.offset);
      tracked_mapping t;
      t.addr = reinterpret_cast<void*>(static_cast<std::uintptr_t>(q.addr));
      t.length = q.length;
      t.prot = q.prot;
      t.shared = (q.flags & MAP_SHARED) != 0;
      t.file = file_backing{rep.memfd, rep.offset, reinterpret_cast<const void*>(static_cast<std::uintptr_t>(rep.cookie)), src.get()};
      if (auto ec = st->as->try_track(t)) return (void)r.reply_error(ec);
      exclusive_guard g(mu_);
      st->sources.push_back(std::move(src));
    } catch (const std::bad_alloc&) {
      return (void)r.reply_error(std::make_error_code(std::errc::not_enough_memory));
    }
    (void)r.reply(0, &none, sizeof none);
  }

  // The slot thread's wait for its fault-in helper (fault_in()), in the wait-for graph: a page-in the
  // handler's own locks block for good (a handler whose page-ins wait, self_conflict::wait) then closes
  // a cycle the graph reports and breaks (the helper's wait fails EDEADLK, the copy EFAULT) instead of
  // a join nobody sees. No holder until the helper has started: "about to run", never stuck.
  class helper_waitable final : public waitable {
   public:
    explicit helper_waitable(std::uintptr_t addr) noexcept : addr_(addr) {}
    void wait_holders(std::vector<std::uint32_t>& threads) const override {
      if (const std::uint32_t id = helper.load(std::memory_order_acquire)) threads.push_back(id);  // (2) acquire, pairs with (1)
    }
    [[nodiscard]] std::string wait_name() const override {
      char buf[80];
      std::snprintf(buf, sizeof buf, "fault-in of 0x%llx (a client's served mapping)", static_cast<unsigned long long>(addr_));
      return buf;
    }
    [[nodiscard]] std::string_view holder_relation() const override { return "done by"; }
    std::atomic<std::uint32_t> helper{0};  // the helper's faultsafe thread id; set once by the helper

   private:
    std::uintptr_t addr_;
  };

  // A copy into or out of the client failed with EFAULT (its userfaultfd is user-mode-only: the kernel
  // refuses the kernel-mode fault): if the range is in a mapping this connection's pager serves, page
  // it in and let the copy retry. The slot thread holds the handler's locks (a range lock, rank 30)
  // and must not take the region lock (rank 20): a helper thread that holds nothing does it, on behalf
  // of the request's activity, so a range the handler holds is granted to it by the guard (exclusive)
  // or is compatible (shared), while the slot thread waits for it.
  std::error_code fault_in(const socket_peer& p, std::uintptr_t addr, std::size_t len) {
    std::shared_ptr<served_state> st;
    {
      exclusive_guard g(mu_);
      auto it = clients_.find(p.id);
      if (it != clients_.end()) st = it->second.mem;
    }
    if (!st) return std::make_error_code(std::errc::bad_address);
    const activity_id a = current_activity();
    std::error_code ec = std::make_error_code(std::errc::bad_address);
    helper_waitable hw(addr);
    wait_scope join_wait(hw, wait_kind::page, "the fault-in of a served page it failed to copy");
    std::thread helper([&] {
      announce_faulting_thread();
      hw.helper.store(this_thread_id(), std::memory_order_release);  // (1) release, pairs with (2)
      activity_scope behalf(a);
      if (st->as->find(reinterpret_cast<const void*>(addr))) {  // a served mapping (map lock: not on the slot thread)
        std::size_t served = 0;
        ec = st->pg->fault_in(reinterpret_cast<const void*>(addr), len, &served);
        // Pages before the first that failed (e.g. past the end of the file) are present: the retried
        // copy transfers up to there and stops (a short count, as read(2)/write(2) of the kernel).
        if (ec && served > 0) ec = {};
      }
    });
    helper.join();
    return ec;
  }

  // Remembers the opens the client holds (for gone()).
  void served(const socket_peer& p, std::uint32_t type, const unsigned char* hdr, std::size_t len, const send_result& res) {
    const std::uint32_t t = type & io_msg_type_mask;
    if (type & io_msg_by_path) return;
    if (t == static_cast<std::uint32_t>(io_msg::open) && !res.error) {
      exclusive_guard g(mu_);
      clients_[p.id].handles.insert(static_cast<std::uint64_t>(res.status));
    } else if (t == static_cast<std::uint32_t>(io_msg::close) && len == sizeof(io_handle_request)) {
      io_handle_request q;
      std::memcpy(&q, hdr, sizeof q);
      exclusive_guard g(mu_);
      clients_[p.id].handles.erase(q.handle);
    }
  }

  // The client's connection is dead and nothing of it is being served: close what it held.
  void gone(const socket_peer& p) {
    client_state c;
    {
      exclusive_guard g(mu_);
      auto it = clients_.find(p.id);
      if (it == clients_.end()) return;
      c = std::move(it->second);
    }
    if (c.mem) {  // its pager first: its page sources use the opens closed below
      c.mem->pg.reset();
      c.mem->as.reset();
    }
    for (std::uint64_t h : c.handles) {
      io_handle_request q{identity(p, client_pid(p)), h};
      send_buffers b;
      b.type = static_cast<std::uint32_t>(io_msg::close);
      b.header = &q;
      b.header_len = sizeof q;
      (void)listener_.serve_local(p, b);
    }
    exclusive_guard g(mu_);
    clients_.erase(p.id);
  }

  server& srv_;
  const std::uint64_t serial_ = next_serial();  // client_pid()
  const aspace_options space_;  // each connection's served address space
  mutable ranked_mutex<rank::leaf> mu_{"remote clients"};  // leaf: clients_
  std::map<std::uint64_t, client_state> clients_ FAULTSAFE_GUARDED_BY(mu_);  // by connection id
  static inline thread_local bool local_mmap_ = false;  // local_mmap() in progress on this thread
  socket_listener listener_;  // last: its threads use everything above; stopped first
};

/// Effects: connects to the remote_server at `address` and attaches `prefix` of `ns` to it: paths
/// under `prefix` then go to that server from every process using `ns`. Returns: connect_channel()'s
/// errors, or path_namespace::attach()'s (EINVAL, EEXIST). Thread-safety: any thread.
[[nodiscard]] inline std::error_code mount_remote(path_namespace& ns, std::string_view prefix, std::string_view address,
                                                  const connect_options& co = {}) {
  std::error_code ec;
  std::shared_ptr<channel> ch = connect_channel(address, ec, co);
  if (!ch) return ec;
  // GCC 12 -O2 reports a false maybe-uninitialized on the string parameter attach() gets when both are
  // inlined here (as it does on other designated temporaries); the value is plainly initialised.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  return ns.attach(std::string(prefix), std::move(ch));
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

}  // namespace faultsafe
