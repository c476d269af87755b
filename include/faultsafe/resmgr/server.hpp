// faultsafe/resmgr/server.hpp: QNX-style resource managers: a path namespace, the I/O message
// protocol, and `server` (a channel, a thread pool and a dispatch table).
//
// Defines
// - `path_namespace`: process-wide (or per test) map of path prefixes to server channels; resolve()
//   finds the longest prefix on a component boundary ("/ram" matches "/ram" and "/ram/a", not "/ramx").
// - the protocol: `io_msg` message types and their trivially copyable request/reply structs. Every
//   request starts with `client_info` (pid, uid, gid of the logical client process).
// - `ocb_base`: what a server keeps per open (derive from it; iofunc_ocb does). Clients name an OCB by
//   an opaque 64-bit handle; a handle used by another process than the one that opened it is EBADF.
// - `io_funcs`: the dispatch table (open, close, read, write, lseek, fstat, ftruncate, mmap, page_in).
//   An empty slot answers ENOSYS. Handlers run on a server thread that has adopted the sender's
//   activity; a read handler writes straight into the client's buffer through
//   ctx.rcv.with_reply_data()/write_reply_data(), a write handler reads through with_payload().
// - `server`: owns a channel (shared with the clients' fd tables, so a client holding an fd to a stopped
//   server gets ESHUTDOWN, never a dangling pointer) and a thread pool.
//
// Thread pool (QNX thread_pool lo/hi water): starts `min_threads` threads; when a thread takes a
// message and thereby leaves no thread idle (all busy serving), it starts one more, up to
// `max_threads`. Threads do not shrink back (a server that needed N threads once keeps them).
// min_threads == max_threads == 1 pins the server to exactly one thread (io_pkt).
// Pool self-deadlock guard (thread_pool_options::on_self_deadlock): when every
// pool thread serves ONE activity A and the pool is at its maximum, a further message on behalf of A
// (the pager's page-in for a fault one of those threads took: A's own chain waits for it) could never
// be received. process::send asks server::route_for before it blocks: detected at once, deterministic
// (no timeout), reported as self_deadlock naming the threads and the message (for a page-in: the fault
// address, file offset and faulting thread), and resolved by policy: grant (default) hands it to the
// server's reserve thread "<name>/reserve", which receives only such messages (so the pool's bound
// holds for everything else, and a single-threaded server stays single-threaded for ordinary work);
// fail replies EDEADLK at once; wait keeps the naive pool (the wait-for graph then names the cycle).
// Why a reserve thread and not EDEADLK by default: the blocked threads are the request's own chain;
// serving its page-in is the only way for that request to complete, and doing it on a thread that
// never serves anything else cannot starve or reorder other clients. Why the sender checks: the
// message must not enter the pool's queue at all (no receive could ever take it), and the sender is
// the one thread that knows the activity and is about to block. "One activity" is one synchronous
// chain (activity/activity.hpp): two threads that adopt the same id on purpose defeat the check's
// premise (it would then report a lock-up that is only contention and serve on the reserve thread).
//
// Not started: the channel requires a server (channel_options::require_server): until start() has
// announced the pool's threads, every send (a client's open, a pager's page-in) fails at once with
// ENXIO instead of waiting for a thread that never comes.
//
// Stop: stop() (also run by the destructor) fails pending and future sends with ESHUTDOWN, detaches the
// path, lets messages being served finish, and joins every pool thread. Requires: not called from one
// of this server's own threads (throws std::system_error(EDEADLK) then) and every handler returns.
//
// OCB table (resmgr/detail/pinned_table.hpp): a handle names a slot and a generation (a closed handle never
// comes back, even when its slot is reused). Serving a message pins the OCB's slot with one atomic
// increment while its handler runs and unpins it just before the reply: no mutex, no shared_ptr copy.
// A close makes the handle EBADF for every message received after it; the OCB itself lives until the
// last handler still using it returned (then its last owner, maybe that server thread, destroys it). Open and close serialise
// on the OCB table mutex (per-client accounting, slot choice). At most 2^24 handles open at once per
// server (more opens fail with ENFILE).
//
// Thread-safety: all members may be called from any thread. Lock order: the namespace mutex, the OCB
// table mutex are rank::leaf ranked_mutexes, the pool mutex rank::pool (it announces threads to the
// channels under it); none is held while calling a handler, sending or waiting; the server registry is rank::registry (route_for reports under it); handlers
// run with no server-internal lock held.
// Memory ordering: numbered pairs (1)/(2) and (3)/(4) publish a pool thread's (and the reserve
// thread's) attached receiver to route_for; every other atomic here is a counter, a statistic or a
// hint and is relaxed, each with its reason at the access.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <cstdio>
#include <cstring>
#include <shared_mutex>

#include "../activity/activity.hpp"
#include "../detail/fault_injection.hpp"
#include "../detail/thread_record.hpp"
#include "../ipc/channel.hpp"
#include "../order/ranked_mutex.hpp"
#include "../order/violation.hpp"
#include "../sync/range_lock.hpp"
#include "../vm/faulting_thread.hpp"
#include "detail/pinned_table.hpp"

namespace faultsafe {

// ---------------------------------------------------------------------------------------------------
// Path namespace

/// Maps path prefixes to server channels. Thread-safety: any thread; one leaf mutex.
class path_namespace {
 public:
  /// The process-wide namespace that servers and processes use by default.
  static path_namespace& global() {
    static path_namespace* ns = new path_namespace;  // leaked on purpose: servers may outlive statics
    return *ns;
  }

  /// Effects: `prefix` (absolute, normalized: starts with '/', no trailing '/' except "/" itself) now
  /// resolves to `ch`. Returns EINVAL for a malformed prefix or null channel, EEXIST if taken.
  [[nodiscard]] std::error_code attach(std::string prefix, std::shared_ptr<channel> ch) {
    if (!ch || prefix.empty() || prefix[0] != '/' || (prefix.size() > 1 && prefix.back() == '/'))
      return std::make_error_code(std::errc::invalid_argument);
    exclusive_guard g(mu_);
    auto [it, inserted] = map_.emplace(std::move(prefix), std::move(ch));
    (void)it;
    return inserted ? std::error_code{} : std::make_error_code(std::errc::file_exists);
  }

  /// Effects: removes `prefix` if it still maps to `ch`. Returns whether it did.
  bool detach(const std::string& prefix, const channel* ch) {
    exclusive_guard g(mu_);
    auto it = map_.find(prefix);
    if (it == map_.end() || it->second.get() != ch) return false;
    map_.erase(it);
    return true;
  }

  struct resolution {
    std::shared_ptr<channel> ch;
    std::string prefix;
    std::string rest;  ///< the path below the prefix, without a leading '/' ("" = the prefix itself)
  };

  /// Returns the server of the longest attached prefix of `path`, or ENOENT (none, or not absolute).
  [[nodiscard]] std::optional<resolution> resolve(std::string_view path, std::error_code& ec) const {
    ec = {};
    if (path.empty() || path[0] != '/') {
      ec = std::make_error_code(std::errc::no_such_file_or_directory);
      return std::nullopt;
    }
    exclusive_guard g(mu_);
    const std::pair<const std::string, std::shared_ptr<channel>>* best = nullptr;
    for (const auto& e : map_) {  // few prefixes: a linear scan is fine
      const std::string& p = e.first;
      const bool match = p == "/" ? true
                                  : path.size() >= p.size() && path.compare(0, p.size(), p) == 0 &&
                                        (path.size() == p.size() || path[p.size()] == '/');
      if (match && (best == nullptr || p.size() > best->first.size())) best = &e;
    }
    if (best == nullptr) {
      ec = std::make_error_code(std::errc::no_such_file_or_directory);
      return std::nullopt;
    }
    std::string_view rest = path.substr(best->first == "/" ? 0 : best->first.size());
    while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    return resolution{best->second, best->first, std::string(rest)};
  }

 private:
  mutable ranked_mutex<rank::leaf> mu_{"path namespace"};
  std::map<std::string, std::shared_ptr<channel>> map_ FAULTSAFE_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------------------
// Protocol

/// Message types (channel send_buffers::type).
enum class io_msg : std::uint32_t {
  open = 1,
  close,
  read,
  write,
  lseek,
  fstat,
  ftruncate,
  mmap,     ///< filled by the pager work: map a range of the file
  page_in,  ///< generic pager request: bring a range of the file in
};

/// Who sends: every request header starts with this.
struct client_info {
  std::uint64_t pid = 0;  ///< logical process id (faultsafe::process::pid())
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};

/// io_msg::open. Payload: the path below the server's prefix (not NUL-terminated). Reply status: the
/// new OCB handle.
struct io_open_request {
  client_info client;
  std::int32_t flags = 0;  ///< O_RDONLY/O_WRONLY/O_RDWR | O_CREAT | O_EXCL | O_TRUNC | O_APPEND
  std::uint32_t mode = 0;  ///< permission bits for O_CREAT
};
/// io_msg::close and io_msg::fstat (reply header: struct stat).
struct io_handle_request {
  client_info client;
  std::uint64_t handle = 0;
};
/// io_msg::read (reply data: the client's buffer) and io_msg::write (payload: the client's buffer).
/// Reply status: bytes transferred.
struct io_rw_request {
  client_info client;
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
/// io_msg::lseek. Reply status: the new offset.
struct io_lseek_request {
  client_info client;
  std::uint64_t handle = 0;
  std::int64_t offset = 0;
  std::int32_t whence = 0;
};
/// io_msg::ftruncate.
struct io_ftruncate_request {
  client_info client;
  std::uint64_t handle = 0;
  std::int64_t length = 0;
};
/// io_msg::mmap: the client wants [offset, offset+length) of the file mapped with prot/flags.
struct io_mmap_request {
  client_info client;
  std::uint64_t handle = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::int32_t prot = 0;
  std::int32_t flags = 0;
};
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
  client_info client;
  std::uint64_t handle = 0;
  std::uint64_t cookie = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint32_t flags = 0;
  std::uint32_t fault_thread = 0;   ///< faultsafe id of the faulting thread (0: unknown)
  std::uint64_t fault_address = 0;  ///< the faulting address (0: unknown, or read-ahead)
  std::uint64_t fault_offset = 0;   ///< file offset of the faulting page
};
struct io_page_in_reply {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t cookie = 0;
};

// ---------------------------------------------------------------------------------------------------
// Server

class server;

namespace detail {
/// channel -> server, for process::send's pool self-deadlock check (server::route_for).
/// `ever_full` counts servers whose pool has ever been at its maximum with no idle thread: while it is
/// zero, a send skips the check with one relaxed load.
struct server_registry {
  ranked_mutex<rank::registry, std::shared_mutex> m{"server registry"};
  std::unordered_map<const channel*, server*> map FAULTSAFE_GUARDED_BY(m);
  std::atomic<unsigned> ever_full{0};
  static server_registry& instance() {
    static server_registry* r = new server_registry;  // leaked: servers may outlive statics
    return *r;
  }
};
}  // namespace detail

/// Where process::send should send a message (server::route_for): `ch` (nullptr: the channel asked
/// for) or `error` (EDEADLK: the pool is self-deadlocked and the policy is fail).
struct send_route {
  std::shared_ptr<channel> ch;
  std::error_code error;
};

/// Per-open state kept by a server. Derive from it.
struct ocb_base {
  virtual ~ocb_base() = default;
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

/// The dispatch table: one handler per message type (the QNX connect/io funcs). Write your own, or
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
/// - Locks held when called: none of the server's (the namespace, OCB-table and pool locks are leaves,
///   never held across a handler). The OCB is pinned (it lives until the handler returns, even if the
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
  std::function<io_result(request_context&, const io_open_request&, std::string_view path, std::shared_ptr<ocb_base>& out)> open;
  /// close(2): called exactly once per handle, after the handle left the table (new messages on it
  /// get EBADF); handlers already running on the OCB may still be running. The OCB is destroyed when
  /// its last user lets go. The client's fd is freed whatever this returns. Optional.
  std::function<io_result(request_context&, ocb_base&)> close;
  /// read(2)/pread(2). Offset: q.use_offset ? q.offset (pread; leave the OCB's offset alone) : the
  /// OCB's offset (read; advance it by the bytes returned). Size: transfer at most min(q.nbytes,
  /// ctx.rcv.reply_data_len()) bytes into the client's buffer (write_reply_data at offset 0 on) and
  /// return ok(count); 0 at or past the end. EBADF if the open has no read access, EINVAL for a
  /// negative offset, EOVERFLOW if offset + nbytes overflows (iofunc_read_verify does all of it;
  /// iofunc_reply_bytes replies from a buffer and advances). The default (iofunc_read_default) holds
  /// the file's range lock shared over the bytes it copies.
  std::function<io_result(request_context&, ocb_base&, const io_rw_request&)> read;
  /// write(2)/pwrite(2). Offset as for read; with O_APPEND and no use_offset the bytes go at the end
  /// of the file as seen under the handler's exclusive lock. Size: min(q.nbytes,
  /// ctx.rcv.payload_len()) bytes of the client's payload; return ok(count written); EBADF without
  /// write access, EFBIG for a write starting at or past the file's limit, a short count for one
  /// straddling it (iofunc_write_verify). A write that fails must change nothing. The default holds the range
  /// lock exclusive over the bytes it stores and grows the file first.
  std::function<io_result(request_context&, ocb_base&, const io_rw_request&)> write;
  /// lseek(2): q.whence SEEK_SET/SEEK_CUR/SEEK_END (the process already rejected others); set the
  /// OCB's offset and return ok(new offset); EINVAL for a negative result, EOVERFLOW on overflow.
  std::function<io_result(request_context&, ocb_base&, const io_lseek_request&)> lseek;
  /// fstat(2): fill `st` (zeroed by the server; iofunc_stat_fill for a file without an attr) and
  /// return ok(0). Must not block for long: it answers ls-like tools.
  std::function<io_result(request_context&, ocb_base&, struct ::stat&)> fstat;
  /// ftruncate(2): q.length >= 0 (the process checked). EBADF without write access, EFBIG past the
  /// limit. The default holds the range lock exclusive from min(old, new size) to the end.
  std::function<io_result(request_context&, ocb_base&, const io_ftruncate_request&)> ftruncate;
  /// mmap(2), asked by the client's address space (vm/process_memory.hpp): check q.prot/q.flags
  /// against the open's access (EACCES: PROT_READ without read access, PROT_WRITE on MAP_SHARED
  /// without write access), then fill `rep` with what backs [q.offset, q.offset + q.length): a memfd
  /// the server keeps open while the OCB is open, its offset, and a cookie for page_in. Without this
  /// slot files cannot be mapped (ENOSYS).
  std::function<io_result(request_context&, ocb_base&, const io_mmap_request&, io_mmap_reply&)> mmap;
  /// Page-in, sent by the client's pager thread for a fault on a mapping (q.fault_thread faulted at
  /// q.fault_address): make [q.offset, q.offset + q.length) of the memfd present (or, with
  /// page_in_private, copy it into the reply data) and return ok(valid bytes); ENXIO at or past the
  /// end of the file (the access gets SIGBUS). `ocb` is null when the request names only a cookie.
  /// The faulting thread may be one of this server's own threads holding a range of this very file
  /// (Brian's lock-up): take the range with the attr's page_in_self_conflict policy, as
  /// iofunc_page_in_default does, never plainly. Must not touch the client's mappings.
  std::function<io_result(request_context&, ocb_base*, const io_page_in_request&, io_page_in_reply&)> page_in;
};

struct thread_pool_options {
  unsigned min_threads = 1;  ///< started at once (>= 1)
  unsigned max_threads = 4;  ///< upper bound of growth (>= min_threads)
  /// The pool's fault-reentrancy guard. When every pool thread is busy serving
  /// ONE activity A and the pool cannot grow, a message sent on behalf of A (typically the pager's
  /// page-in for a fault one of those threads took) could never be received: A's own chain waits for
  /// it. process::send detects that before it blocks, reports a self_deadlock violation naming the
  /// threads, and: grant (default) sends the message to the server's reserve thread "<name>/reserve",
  /// which serves only such messages (one at a time); fail: the send fails with EDEADLK; wait: no check
  /// (the naive pool, which only the wait-for graph can unlock). See server::route_for.
  self_conflict on_self_deadlock = self_conflict::grant;
};

struct server_options {
  std::string name = "server";
  thread_pool_options pool{};
  channel_options channel{};
  path_namespace* ns = nullptr;  ///< nullptr = path_namespace::global()
  /// Most handles one client process may hold open on this server; more opens fail with EMFILE
  /// (0 = no limit). Keeps one client from exhausting the server's OCB table.
  std::size_t max_opens_per_client = 1024;
};

class server {
 public:
  /// Effects: makes the channel; threads start with start(). Throws: std::invalid_argument for a bad
  /// pool (min 0 or max < min).
  server(server_options opts, io_funcs funcs)
      : opts_(std::move(opts)), funcs_(std::move(funcs)) {
    if (opts_.pool.min_threads == 0 || opts_.pool.max_threads < opts_.pool.min_threads)
      throw std::invalid_argument("faultsafe::server: need 1 <= min_threads <= max_threads");
    opts_.channel.name = opts_.name.c_str();
    opts_.channel.pool_capacity = opts_.pool.max_threads;  // wait-for graph: the pool may still grow
    opts_.channel.require_server = true;                   // ENXIO until start(): never a silent hang
    ch_ = std::make_shared<channel>(opts_.channel);
    serving_ = std::make_unique<pool_slot[]>(opts_.pool.max_threads);
    if (opts_.pool.on_self_deadlock == self_conflict::grant) {
      reserve_name_ = opts_.name + "/reserve";
      channel_options ro = opts_.channel;
      ro.name = reserve_name_.c_str();
      ro.pool_capacity = 1;
      reserve_ch_ = std::make_shared<channel>(ro);
    }
    auto& reg = detail::server_registry::instance();
    exclusive_guard g(reg.m);
    reg.map[ch_.get()] = this;
  }
  ~server() { stop(); }
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  [[nodiscard]] const std::string& name() const noexcept { return opts_.name; }
  [[nodiscard]] const std::shared_ptr<channel>& chan() const noexcept { return ch_; }
  [[nodiscard]] path_namespace& ns() const noexcept { return opts_.ns ? *opts_.ns : path_namespace::global(); }

  /// Effects: attaches `prefix` to this server's channel. Returns EINVAL/EEXIST as path_namespace.
  [[nodiscard]] std::error_code attach(std::string prefix) {
    std::error_code ec = ns().attach(prefix, ch_);
    if (!ec) {
      exclusive_guard g(pool_mu_);
      prefixes_.push_back(std::move(prefix));
    }
    return ec;
  }

  /// Effects: starts min_threads pool threads (once). Throws: std::system_error if a thread cannot start.
  void start() {
    exclusive_guard g(pool_mu_);
    if (started_ || stopping_) return;
    started_ = true;
    for (unsigned i = 0; i < opts_.pool.min_threads; ++i) spawn_locked();
    if (reserve_ch_) {
      reserve_ch_->add_server();
      try {
        reserve_thread_ = std::thread([this] { reserve_main(); });
      } catch (...) {
        reserve_ch_->remove_server();
        throw;
      }
    }
  }

  /// Effects: see the header comment. Idempotent.
  void stop() {
    {
      auto& reg = detail::server_registry::instance();
      exclusive_guard g(reg.m);  // waits for route_for calls on this server
      reg.map.erase(ch_.get());
    }
    std::vector<std::thread> threads;
    std::vector<std::string> prefixes;
    {
      exclusive_guard g(pool_mu_);
      for (const std::thread& t : threads_)
        if (t.get_id() == std::this_thread::get_id())
          throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                                  "faultsafe::server::stop() called from the server's own thread");
      stopping_ = true;
      threads.swap(threads_);
      prefixes.swap(prefixes_);
      if (reserve_thread_.joinable()) threads.push_back(std::move(reserve_thread_));
    }
    for (const auto& p : prefixes) ns().detach(p, ch_.get());
    ch_->stop();
    if (reserve_ch_) reserve_ch_->stop();
    for (auto& t : threads) t.join();
    std::vector<std::shared_ptr<ocb_base>> dead;  // destroyed after the lock
    exclusive_guard g(ocb_mu_);
    for (std::uint32_t i = 0; i < next_index_; ++i) {
      ocb_pin p = ocbs_.find(i);
      if (p && p.close()) {
        free_slots_.push_back(i);  // capacity reserved by install
        try {
          dead.push_back(p->ocb);
        } catch (const std::bad_alloc&) {  // then destroyed right here (at the pin's reset)
        }
      }
    }
    open_count_ = 0;
    opens_by_pid_.clear();
  }

  /// Pool statistics (racy snapshots): threads started, threads idle (waiting for work), the most
  /// threads ever busy at once.
  // Statistics (racy snapshots): relaxed.
  [[nodiscard]] unsigned threads() const noexcept { return started_threads_.load(std::memory_order_relaxed); }
  [[nodiscard]] unsigned idle_threads() const noexcept { return idle_.load(std::memory_order_relaxed); }
  [[nodiscard]] unsigned peak_busy() const noexcept { return peak_busy_.load(std::memory_order_relaxed); }
  /// Messages served by the reserve thread (pool self-deadlocks resolved by grant).
  [[nodiscard]] std::uint64_t reserve_served() const noexcept { return reserve_served_.load(std::memory_order_relaxed); }

  /// Effects: for a message about to be sent on `ch` by the calling thread on behalf of `a`: if `ch` is
  /// a server's channel whose every pool thread is busy serving `a` and whose pool cannot grow (the
  /// message could never be received: see thread_pool_options::on_self_deadlock), reports a
  /// self_deadlock violation and returns the reserve channel (grant) or EDEADLK (fail, or the reserve
  /// thread is itself serving `a`). Otherwise returns an empty route (send on `ch`).
  /// Cost: one relaxed load unless some server's pool has been full. Throws: what the violation
  /// handler throws; std::bad_alloc. Thread-safety: any thread. Lock order: the registry's leaf lock
  /// (shared), then nothing; the report runs under it (the handler must not stop servers).
  [[nodiscard]] static send_route route_for(const channel& ch, activity_id a, const send_buffers& b) {
    auto& reg = detail::server_registry::instance();
    // relaxed: a hint; a server thread increments it before it serves the message whose fault leads
    // to the page-in sent here, and the fault's delivery to the pager (system calls on both sides)
    // orders the two.
    if (reg.ever_full.load(std::memory_order_relaxed) == 0) return {};
    shared_guard g(reg.m);
    auto it = reg.map.find(&ch);
    if (it == reg.map.end()) return {};
    return it->second->route_locked(a, b);
  }

  [[nodiscard]] std::size_t open_ocbs() const {
    exclusive_guard g(ocb_mu_);
    return open_count_;
  }

 private:
  // Requires: pool_mu_ held. The counters are relaxed: pool_mu_ orders the writers, and thread
  // creation publishes idx to the new thread.
  void spawn_locked() FAULTSAFE_REQUIRES(pool_mu_) {
    const unsigned idx = started_threads_.fetch_add(1, std::memory_order_relaxed);
    idle_.fetch_add(1, std::memory_order_relaxed);
    ch_->add_server();  // before the thread exists: a send meanwhile waits for it instead of ENXIO
    try {
      threads_.emplace_back([this, idx] { thread_main(idx); });
    } catch (...) {
      ch_->remove_server();
      started_threads_.fetch_sub(1, std::memory_order_relaxed);
      idle_.fetch_sub(1, std::memory_order_relaxed);
      throw;
    }
  }

  void maybe_grow() noexcept {
    exclusive_guard g(pool_mu_);
    if (stopping_ || started_threads_.load(std::memory_order_relaxed) >= opts_.pool.max_threads) return;
    try {
      spawn_locked();
    } catch (...) {  // could not start a thread: keep serving with what we have
    }
  }

  // One pool thread's state for route_for: its faultsafe id and its receiver, whose activity() names
  // the activity of the message it holds, from receive until the moment it replies (cleared before the
  // sender wakes, so a sender never sees its own finished message as still being served).
  struct pool_slot {
    std::atomic<std::uint32_t> thread{0};
    std::atomic<channel::receiver*> rcv{nullptr};
  };

  // Requires: the registry held shared. See route_for.
  send_route route_locked(activity_id a, const send_buffers& b) {
    if (opts_.pool.on_self_deadlock == self_conflict::wait) return {};
    // relaxed: serving_ exists before any thread starts; a thread counted here but not yet published
    // in serving_ reads as nullptr below (not serving `a`), the conservative answer.
    const unsigned started = started_threads_.load(std::memory_order_relaxed);
    if (started < opts_.pool.max_threads) return {};
    for (unsigned i = 0; i < started; ++i) {
      // (2) acquire, pairs with (1): the receiver is attached (and its thread id stored) before use.
      channel::receiver* r = serving_[i].rcv.load(std::memory_order_acquire);
      if (r == nullptr || r->activity() != a) return {};
    }
    // Every thread serves `a` and none can be added: `a`'s chain is blocked on its own message.
    // The reserve thread is itself busy for `a` (a second-level re-entry): its receiver names the
    // activity of the message it holds until the moment it replies (cleared before the sender wakes).
    // (4) acquire, pairs with (3).
    channel::receiver* rr = reserve_rcv_.load(std::memory_order_acquire);
    const bool reserve_busy_with_a = rr != nullptr && rr->activity() == a;
    const bool grant = opts_.pool.on_self_deadlock == self_conflict::grant && reserve_ch_ && !reserve_busy_with_a;
    violation v;
    v.kind = violation_kind::self_deadlock;
    v.outcome = grant ? violation_outcome::served : violation_outcome::failed;
    v.site = "server '" + opts_.name + "', message type " + std::to_string(b.type);
    const std::string me = thread_name(this_thread_id());
    v.summary = "thread '" + me + "' (" + detail::rl::describe_activity(a) + ") sends a message of type " +
                std::to_string(b.type) + " to server '" + opts_.name + "', whose every thread (" +
                std::to_string(started) + ", the pool's maximum) is busy serving that same activity: waiting would self-deadlock; " +
                (grant ? "served by the reserve thread '" + reserve_name_ + "'"
                       : std::string(reserve_busy_with_a ? "the reserve thread serves it too: " : "") + "failed with EDEADLK");
    v.involved.push_back(opts_.name);
    v.involved.push_back(me);
    for (unsigned i = 0; i < started; ++i) {
      // relaxed: stored before (1), and this thread read every rcv through (2).
      const std::string tn = thread_name(serving_[i].thread.load(std::memory_order_relaxed));
      v.details.push_back("server thread '" + tn + "' serves " + detail::rl::describe_activity(a) +
                          " (blocked: in page wait or waiting on this very chain)");
      v.involved.push_back(tn);
    }
    if (b.type == static_cast<std::uint32_t>(io_msg::page_in) && b.header_len == sizeof(io_page_in_request) && b.header) {
      io_page_in_request q;
      std::memcpy(&q, b.header, sizeof q);
      char addr[40];
      std::snprintf(addr, sizeof addr, "0x%llx", static_cast<unsigned long long>(q.fault_address));
      std::string line = "the message is the page-in of file offsets [" + std::to_string(q.offset) + ", " +
                         std::to_string(q.offset + q.length) + ") for process " + std::to_string(q.client.pid);
      if (q.fault_address != 0) line += std::string(", for the fault at ") + addr + " (file offset " + std::to_string(q.fault_offset) + ")";
      if (q.fault_thread != 0) line += " taken by thread '" + thread_name(q.fault_thread) + "'";
      v.details.push_back(std::move(line));
    }
    report_violation(v);
    if (!grant) return send_route{nullptr, std::make_error_code(std::errc::resource_deadlock_would_occur)};
    return send_route{reserve_ch_, {}};
  }

  // The reserve thread: serves only messages that route_for sent to the reserve channel.
  void reserve_main() {
    set_this_thread_name(reserve_name_);
    announce_faulting_thread();
    channel::receiver& r = reserve_ch_->attach();
    reserve_rcv_.store(&r, std::memory_order_release);  // (3) release, pairs with (4): r is attached
    while (!r.receive()) {
      dispatch(r);
      reserve_served_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    }
    // relaxed: clearing publishes nothing (receivers live as long as their channel).
    reserve_rcv_.store(nullptr, std::memory_order_relaxed);
    reserve_ch_->detach(r);
    reserve_ch_->remove_server();
  }

  void thread_main(unsigned idx) {
    set_this_thread_name(opts_.name + "/" + std::to_string(idx));
    announce_faulting_thread();  // its faults on client memory name this thread and its adopted activity (vm/)
    serving_[idx].thread.store(this_thread_id(), std::memory_order_relaxed);  // published by (1)
    channel::receiver& r = ch_->attach();
    serving_[idx].rcv.store(&r, std::memory_order_release);  // (1) release, pairs with (2): r is attached
    while (!r.receive()) {
      // idle_ and peak_busy_ are counters and publish nothing: relaxed. The read-modify-writes of
      // idle_ are totally ordered, so exactly the thread that takes it to zero sees zero and grows
      // the pool.
      const unsigned idle_now = idle_.fetch_sub(1, std::memory_order_relaxed) - 1;
      const unsigned busy_now = started_threads_.load(std::memory_order_relaxed) - idle_now;
      unsigned peak = peak_busy_.load(std::memory_order_relaxed);
      while (busy_now > peak && !peak_busy_.compare_exchange_weak(peak, busy_now, std::memory_order_relaxed)) {
      }
      if (idle_now == 0) {  // every thread is busy: add one
        maybe_grow();
        // relaxed: a once-only flag (the exchange's total order picks one thread); see route_for.
        if (started_threads_.load(std::memory_order_relaxed) >= opts_.pool.max_threads &&
            !ever_full_.exchange(true, std::memory_order_relaxed))
          detail::server_registry::instance().ever_full.fetch_add(1, std::memory_order_relaxed);
      }
      dispatch(r);
      idle_.fetch_add(1, std::memory_order_relaxed);
    }
    serving_[idx].rcv.store(nullptr, std::memory_order_relaxed);  // clearing publishes nothing
    ch_->detach(r);
    ch_->remove_server();
  }

  // Per-client open accounting (server_options::max_opens_per_client): a slot is reserved before the
  // open handler runs and given back when the open fails or the handle is closed.
  bool reserve_open(std::uint64_t pid) {
    exclusive_guard g(ocb_mu_);
    std::size_t& n = opens_by_pid_[pid];
    if (opts_.max_opens_per_client != 0 && n >= opts_.max_opens_per_client) return false;
    ++n;
    return true;
  }
  void unreserve_open_locked(std::uint64_t pid) FAULTSAFE_REQUIRES(ocb_mu_) {
    auto it = opens_by_pid_.find(pid);
    if (it != opens_by_pid_.end() && --it->second == 0) opens_by_pid_.erase(it);
  }

  // One open: the OCB and the full handle (slot index + 1 in the low 24 bits, generation above).
  struct ocb_entry {
    std::shared_ptr<ocb_base> ocb;
    std::uint64_t handle = 0;
  };
  using ocb_pin = detail::pinned_table<ocb_entry>::pin;
  static constexpr unsigned handle_index_bits = 24;
  static constexpr std::uint64_t handle_index_mask = (std::uint64_t{1} << handle_index_bits) - 1;

  // The open OCB `handle` of client `pid`, pinned, or an empty pin (EBADF). No lock.
  ocb_pin find_ocb(std::uint64_t handle, std::uint64_t pid) const noexcept {
    const std::uint64_t idx1 = handle & handle_index_mask;
    if (idx1 == 0) return {};
    ocb_pin p = ocbs_.find(static_cast<std::size_t>(idx1 - 1));
    if (!p || p->handle != handle || p->ocb->owner_pid != pid) return {};
    return p;
  }

  // Effects: puts `o` into a free slot and returns its new handle, or 0 (ENFILE: 2^24 open).
  // Requires: ocb_mu_. Throws: std::bad_alloc (the table or the free list could not grow).
  std::uint64_t install_ocb_locked(std::shared_ptr<ocb_base> o) FAULTSAFE_REQUIRES(ocb_mu_) {
    ocb_entry e{std::move(o), 0};
    // Closed slots first (newest first); one still pinned by a message being served is skipped.
    for (std::size_t t = free_slots_.size(), tries = 0; t-- > 0 && tries < 8; ++tries) {
      const std::uint32_t idx = free_slots_[t];
      if (!ocbs_.looks_free(idx)) continue;
      e.handle = (next_gen_ << handle_index_bits) | (std::uint64_t{idx} + 1);
      const std::uint64_t h = e.handle;
      if (!ocbs_.install(idx, std::move(e))) continue;  // moves e only on success
      free_slots_[t] = free_slots_.back();
      free_slots_.pop_back();
      ++next_gen_;
      ++open_count_;
      return h;
    }
    if (next_index_ >= handle_index_mask) return 0;
    // Every slot ever used may sit in free_slots_ at once: reserve now, so close never allocates.
    if (free_slots_.capacity() < std::size_t{next_index_} + 1)
      free_slots_.reserve(std::max<std::size_t>(64, 2 * free_slots_.capacity()));
    ocbs_.ensure_capacity(std::size_t{next_index_} + 1);
    const std::uint32_t idx = next_index_;
    e.handle = (next_gen_ << handle_index_bits) | (std::uint64_t{idx} + 1);
    const std::uint64_t h = e.handle;
    if (!ocbs_.install(idx, std::move(e))) return 0;  // cannot happen: a never-used slot has no pin
    ++next_index_;
    ++next_gen_;
    ++open_count_;
    return h;
  }

  // Effects: closes `handle` if `pid` owns it; returns its OCB (nullptr: EBADF). Requires: ocb_mu_.
  std::shared_ptr<ocb_base> remove_ocb_locked(std::uint64_t handle, std::uint64_t pid) noexcept FAULTSAFE_REQUIRES(ocb_mu_) {
    ocb_pin p = find_ocb(handle, pid);
    if (!p || !p.close()) return nullptr;
    std::shared_ptr<ocb_base> o = p->ocb;  // ours: the slot's reference goes with its last pin
    --open_count_;
    unreserve_open_locked(pid);
    if (free_slots_.size() < free_slots_.capacity())  // reserved by install: no allocation here
      free_slots_.push_back(static_cast<std::uint32_t>((handle & handle_index_mask) - 1));
    return o;
  }

  template <class Req>
  static bool decode(channel::receiver& r, Req& q) {
    if (r.header_as(q)) {
      (void)r.reply_error(std::make_error_code(std::errc::bad_message));
      return false;
    }
    return true;
  }

  static void reply_with(channel::receiver& r, const io_result& res, const void* hdr = nullptr, std::size_t len = 0) {
    if (!r.holding()) return;  // the handler replied itself
    if (res.error)
      (void)r.reply_error(res.error);
    else
      (void)r.reply(res.value, hdr, len);
  }

  // Runs a handler-calling function, turning exceptions into error replies.
  template <class F>
  static io_result guarded(F&& f) noexcept {
    try {
      // Fault injection (detail/fault_injection.hpp): the handler throws before doing anything.
      if (FAULTSAFE_INJECT(handler_exception)) throw std::runtime_error("faultsafe: injected handler exception");
      return f();
    } catch (const std::system_error& e) {
      return io_result::fail(e.code());
    } catch (const std::bad_alloc&) {
      return io_result::fail(ENOMEM);
    } catch (...) {
      return io_result::fail(EIO);
    }
  }

  // Decodes a Req naming an OCB, runs f(ctx, q, ocb, reply_header) -> io_result with the OCB pinned,
  // unpins, then replies (with the Rep reply header unless Rep is std::nullptr_t). The pin goes before
  // the reply, so when the client sends its next message (a close, then an open) the slot is no
  // longer pinned by this one and can be reused at once.
  template <class Req, class Rep = std::nullptr_t, class F>
  void with_ocb(channel::receiver& r, F&& f) {
    Req q;
    if (!decode(r, q)) return;
    ocb_pin o = find_ocb(q.handle, q.client.pid);
    if (!o) {
      (void)r.reply_error(std::make_error_code(std::errc::bad_file_descriptor));
      return;
    }
    request_context ctx{*this, r, q.client, r.activity()};
    Rep rep{};
    const io_result res = f(ctx, q, *o->ocb, rep);
    o.reset();  // a close that raced with this message may destroy the OCB right here
    if constexpr (std::is_same_v<Rep, std::nullptr_t>)
      reply_with(r, res);
    else
      reply_with(r, res, &rep, sizeof rep);
  }

  void dispatch(channel::receiver& r) {
    activity_scope adopt(r.activity());
    if (FAULTSAFE_INJECT(server_abort)) {  // injected: the server stops in the middle of this request
      ch_->stop();
      (void)r.reply_error(std::error_code(ESHUTDOWN, std::generic_category()));
      return;
    }
    const auto enosys = io_result::fail(ENOSYS);
    switch (static_cast<io_msg>(r.type())) {
      case io_msg::open: {
        io_open_request q;
        if (!decode(r, q)) return;
        if (!funcs_.open) return reply_with(r, enosys);
        std::string path(r.payload_len(), '\0');
        if (auto ec = r.read_payload(0, path.data(), path.size())) return reply_with(r, io_result::fail(ec));
        if (!reserve_open(q.client.pid)) return reply_with(r, io_result::fail(EMFILE));
        request_context ctx{*this, r, q.client, r.activity()};
        std::shared_ptr<ocb_base> o;
        io_result res = guarded([&] { return funcs_.open(ctx, q, path, o); });
        if (!res.error && !o) res = io_result::fail(EIO);
        if (!res.error) {
          o->owner_pid = q.client.pid;
          std::uint64_t h = 0;
          {
            exclusive_guard g(ocb_mu_);
            try {
              h = install_ocb_locked(o);
              if (h == 0) res = io_result::fail(ENFILE);
            } catch (const std::bad_alloc&) {
              res = io_result::fail(ENOMEM);
            }
          }
          if (h != 0) res.value = static_cast<std::int64_t>(h);  // else the OCB dies with `o` (no handle: no close)
        }
        if (res.error) {
          exclusive_guard g(ocb_mu_);
          unreserve_open_locked(q.client.pid);
        }
        if (!res.error && r.holding() && r.reply(res.value)) {
          // The client gave up (timeout): nobody will ever close this handle.
          std::shared_ptr<ocb_base> dead;
          {
            exclusive_guard g(ocb_mu_);
            dead = remove_ocb_locked(static_cast<std::uint64_t>(res.value), q.client.pid);
          }
        }
        return reply_with(r, res);
      }
      case io_msg::close: {
        io_handle_request q;
        if (!decode(r, q)) return;
        std::shared_ptr<ocb_base> o;
        {
          exclusive_guard g(ocb_mu_);
          o = remove_ocb_locked(q.handle, q.client.pid);
        }
        if (!o) return reply_with(r, io_result::fail(EBADF));
        request_context ctx{*this, r, q.client, r.activity()};
        return reply_with(r, funcs_.close ? guarded([&] { return funcs_.close(ctx, *o); }) : io_result::ok());
      }
      case io_msg::read:
        return with_ocb<io_rw_request>(r, [&](request_context& ctx, const io_rw_request& q, ocb_base& o, std::nullptr_t) {
          return funcs_.read ? guarded([&] { return funcs_.read(ctx, o, q); }) : enosys;
        });
      case io_msg::write:
        return with_ocb<io_rw_request>(r, [&](request_context& ctx, const io_rw_request& q, ocb_base& o, std::nullptr_t) {
          return funcs_.write ? guarded([&] { return funcs_.write(ctx, o, q); }) : enosys;
        });
      case io_msg::lseek:
        return with_ocb<io_lseek_request>(r, [&](request_context& ctx, const io_lseek_request& q, ocb_base& o, std::nullptr_t) {
          return funcs_.lseek ? guarded([&] { return funcs_.lseek(ctx, o, q); }) : enosys;
        });
      case io_msg::fstat:
        return with_ocb<io_handle_request, struct ::stat>(
            r, [&](request_context& ctx, const io_handle_request&, ocb_base& o, struct ::stat& st) {
              return funcs_.fstat ? guarded([&] { return funcs_.fstat(ctx, o, st); }) : enosys;
            });
      case io_msg::ftruncate:
        return with_ocb<io_ftruncate_request>(r, [&](request_context& ctx, const io_ftruncate_request& q, ocb_base& o, std::nullptr_t) {
          return funcs_.ftruncate ? guarded([&] { return funcs_.ftruncate(ctx, o, q); }) : enosys;
        });
      case io_msg::mmap:
        return with_ocb<io_mmap_request, io_mmap_reply>(
            r, [&](request_context& ctx, const io_mmap_request& q, ocb_base& o, io_mmap_reply& rep) {
              return funcs_.mmap ? guarded([&] { return funcs_.mmap(ctx, o, q, rep); }) : enosys;
            });
      case io_msg::page_in: {
        io_page_in_request q;
        if (!decode(r, q)) return;
        ocb_pin o = q.handle ? find_ocb(q.handle, q.client.pid) : ocb_pin{};
        if (q.handle && !o) return reply_with(r, io_result::fail(EBADF));
        request_context ctx{*this, r, q.client, r.activity()};
        io_page_in_reply rep{};
        ocb_base* ob = o ? o->ocb.get() : nullptr;
        io_result res = funcs_.page_in ? guarded([&] { return funcs_.page_in(ctx, ob, q, rep); }) : enosys;
        o.reset();  // before the reply, as in with_ocb
        return reply_with(r, res, &rep, sizeof rep);
      }
    }
    reply_with(r, enosys);
  }

  server_options opts_;
  io_funcs funcs_;
  std::shared_ptr<channel> ch_;

  mutable ranked_mutex<rank::leaf> ocb_mu_{"server ocbs"};  // leaf: installing/closing in ocbs_ (lookups take no lock), the fields below
  detail::pinned_table<ocb_entry> ocbs_;
  std::unordered_map<std::uint64_t, std::size_t> opens_by_pid_ FAULTSAFE_GUARDED_BY(ocb_mu_);  // open handles (and opens in progress) per client pid
  std::vector<std::uint32_t> free_slots_ FAULTSAFE_GUARDED_BY(ocb_mu_);  // closed slot indices (maybe still pinned); capacity >= next_index_
  std::uint32_t next_index_ FAULTSAFE_GUARDED_BY(ocb_mu_) = 0;  // slots [0, next_index_) have been used
  std::uint64_t next_gen_ FAULTSAFE_GUARDED_BY(ocb_mu_) = 1;  // generation of the next handle (never 0)
  std::size_t open_count_ FAULTSAFE_GUARDED_BY(ocb_mu_) = 0;

  // rank::pool (85): threads_, prefixes_, started_, stopping_; held while announcing threads to the
  // channels (their queue locks are leaves), never while sending or waiting.
  ranked_mutex<rank::pool> pool_mu_{"server pool"};
  std::vector<std::thread> threads_ FAULTSAFE_GUARDED_BY(pool_mu_);
  std::vector<std::string> prefixes_ FAULTSAFE_GUARDED_BY(pool_mu_);
  bool started_ FAULTSAFE_GUARDED_BY(pool_mu_) = false;
  bool stopping_ FAULTSAFE_GUARDED_BY(pool_mu_) = false;
  std::atomic<unsigned> started_threads_{0};
  std::atomic<unsigned> idle_{0};
  std::atomic<unsigned> peak_busy_{0};
  // Pool self-deadlock guard (route_for).
  std::unique_ptr<pool_slot[]> serving_;
  std::atomic<bool> ever_full_{false};
  std::string reserve_name_;
  std::shared_ptr<channel> reserve_ch_;
  std::thread reserve_thread_;
  std::atomic<channel::receiver*> reserve_rcv_{nullptr};
  std::atomic<std::uint64_t> reserve_served_{0};
};

}  // namespace faultsafe
