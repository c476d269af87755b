// faultsafe/resmgr/server.hpp: QNX-style resource managers: `server` (a channel, a thread pool, an OCB
// table and a dispatch derived from the message definitions).
//
// Defines `server_options` and `server`. Includes the pieces a server is made of, one concept each:
//   resmgr/path_namespace.hpp  path prefixes -> server channels
//   resmgr/protocol.hpp        the wire format: io_msg, client_info, request and reply structs
//   resmgr/messages.hpp        one definition per message; ocb_base, request_context, io_result, io_funcs
//   resmgr/ocb_table.hpp       handle -> OCB, pinned lock-free lookups, per-client accounting
//   resmgr/thread_pool.hpp     the receive threads, their growth and the self-deadlock guard
//
// Dispatch: a table indexed by message type, built at compile time from io_messages (messages.hpp):
// each entry is serve<M>, one generic step per addressing kind: decode the request header (EBADMSG
// if its size is wrong), find the target (an OCB pinned by handle: EBADF if the client does not own
// it; a path read from the payload; with io_msg_by_path a temporary O_PATH open of the path), call the
// handler through the exception guard, unpin, then reply (status and the message's reply header).
// Handlers run on a server thread that has adopted the sender's activity; a read handler writes
// straight into the client's buffer through ctx.rcv.with_reply_data()/write_reply_data(), a write
// handler reads through with_payload(). An empty slot, an unknown type, or io_msg_by_path on a message
// that cannot be addressed by path answers ENOSYS (EINVAL for the latter). read_visit is served only
// while the read slot holds the handler it mirrors (io_funcs::read_visit_mirrors; else ENOSYS), and
// data_version only while the write, ftruncate, fallocate and mmap slots hold the handlers it accounts
// for (io_funcs::data_version_writers; else ENOSYS).
// The server's channel is shared with the clients' fd tables, so a client holding an fd to a stopped
// server gets ESHUTDOWN, never a dangling pointer.
//
// Not started: the channel requires a server (channel_options::require_server): until start() has
// announced the pool's threads, every send (a client's open, a pager's page-in) fails at once with
// ENXIO instead of waiting for a thread that never comes.
//
// Stop: stop() (also run by the destructor) fails pending and future sends with ESHUTDOWN, detaches the
// path, lets messages being served finish, joins every pool thread and closes every OCB. Requires: not
// called from one of this server's own threads (throws std::system_error(EDEADLK) then) and every
// handler returns.
// Open and close serialise on the OCB table mutex (per-client accounting, slot choice). A close makes
// the handle EBADF for every message received after it; the OCB lives until the last handler still
// using it returned.
//
// Thread-safety: all members may be called from any thread. Lock order: the namespace, OCB-table and
// prefix mutexes are rank::leaf ranked_mutexes, the pool mutex rank::pool, the server registry
// rank::registry (see resmgr/thread_pool.hpp); none is held while calling a handler, sending or
// waiting; handlers run with no server-internal lock held.
// Memory ordering: the server's own state is set before start() and read by its threads after thread
// creation; the pool's orderings are numbered in resmgr/thread_pool.hpp.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "../activity/activity.hpp"
#include "../detail/fault_injection.hpp"
#include "../ipc/channel.hpp"
#include "../order/ranked_mutex.hpp"
#include "../order/violation.hpp"
#include "../thread_annotations.hpp"
#include "messages.hpp"
#include "ocb_table.hpp"
#include "path_namespace.hpp"
#include "protocol.hpp"
#include "thread_pool.hpp"

namespace faultsafe {

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
      : opts_(std::move(opts)),
        funcs_(paired(std::move(funcs))),
        ch_(make_channel(opts_)),
        ocbs_(opts_.max_opens_per_client),
        pool_(opts_.name, opts_.pool, ch_, opts_.channel, &server::serve_message, this, &server::describe) {}
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
      exclusive_guard g(prefix_mu_);
      prefixes_.push_back(std::move(prefix));
    }
    return ec;
  }

  /// Effects: starts min_threads pool threads (once). Throws: std::system_error if a thread cannot start.
  void start() { pool_.start(); }

  /// Effects: see the header comment. Idempotent.
  void stop() {
    pool_.check_not_own_thread();
    std::vector<std::string> prefixes;
    {
      exclusive_guard g(prefix_mu_);
      prefixes.swap(prefixes_);
    }
    for (const auto& p : prefixes) ns().detach(p, ch_.get());
    pool_.stop();
    ocbs_.clear();
  }

  /// Effects: serves the message `r` holds exactly as a pool thread serves one from the channel
  /// (dispatch, handler, reply). For transports that receive messages themselves
  /// (channel::receiver::receive_direct(): resmgr/remote.hpp serves clients in other OS processes).
  /// Requires: r.holding(), r attached to chan(). Thread-safety: any thread (a transport's own).
  void serve(channel::receiver& r) { dispatch(r); }

  /// Pool statistics (racy snapshots): threads started, threads idle (waiting for work), the most
  /// threads ever busy at once, messages served by the reserve thread (self-deadlocks resolved by grant).
  [[nodiscard]] unsigned threads() const noexcept { return pool_.threads(); }
  [[nodiscard]] unsigned idle_threads() const noexcept { return pool_.idle_threads(); }
  [[nodiscard]] unsigned peak_busy() const noexcept { return pool_.peak_busy(); }
  [[nodiscard]] std::uint64_t reserve_served() const noexcept { return pool_.reserve_served(); }
  /// Messages served on their sender's own thread (thread_pool::serve_here; the FUSE bridge's).
  [[nodiscard]] std::uint64_t direct_served() const noexcept { return pool_.direct_served(); }
  /// thread_pool::reserve_ready(): the reserve thread is set up (or there is none).
  [[nodiscard]] bool reserve_ready() const noexcept { return pool_.reserve_ready(); }

  /// The pool self-deadlock check for a message about to be sent on `ch` (see thread_pool::route_for).
  [[nodiscard]] static send_route route_for(const channel& ch, activity_id a, const send_buffers& b) {
    return thread_pool::route_for(ch, a, b);
  }
  /// Serves message `b` for channel `ch` on the calling thread if a server in this OS process owns
  /// `ch` (see thread_pool::serve_here), else std::nullopt (send it).
  [[nodiscard]] static std::optional<send_result> serve_here(const channel& ch, const send_buffers& b, activity_id a) {
    return thread_pool::serve_here(ch, b, a);
  }

  [[nodiscard]] std::size_t open_ocbs() const { return ocbs_.open_count(); }

  /// The name of message type `type` for reports ("?" if unknown).
  [[nodiscard]] static std::string_view message_name(std::uint32_t type) noexcept;

 private:
  using serve_step = void (server::*)(channel::receiver&);

  static std::shared_ptr<channel> make_channel(server_options& o) {
    o.channel.name = o.name.c_str();
    o.channel.pool_capacity = o.pool.max_threads;  // wait-for graph: the pool may still grow
    o.channel.require_server = true;                // ENXIO until start(): never a silent hang
    return std::make_shared<channel>(o.channel);
  }

  // The dispatch table and the names, from the message definitions (messages.hpp).
  template <class... M>
  static constexpr std::array<serve_step, io_msg_max + 1> make_table(message_list<M...>) {
    std::array<serve_step, io_msg_max + 1> t{};
    ((t[static_cast<std::uint32_t>(M::id)] = &server::serve<M>), ...);
    return t;
  }
  template <class... M>
  static constexpr std::array<std::string_view, io_msg_max + 1> make_names(message_list<M...>) {
    std::array<std::string_view, io_msg_max + 1> t{};
    ((t[static_cast<std::uint32_t>(M::id)] = M::name), ...);
    return t;
  }
  static void serve_message(void* self, channel::receiver& r) { static_cast<server*>(self)->dispatch(r); }

  // io_funcs::read_visit is served only while `read` holds exactly read_visit_mirrors, and
  // data_version only while the data-changing slots hold exactly data_version_writers (messages.hpp).
  template <class Fn, class Slot>
  static bool holds(const Slot& slot, Fn fn) noexcept {
    const Fn* t = slot.template target<Fn>();
    return fn != nullptr && t != nullptr && *t == fn;
  }
  static io_funcs paired(io_funcs f) {
    if (!holds(f.read, f.read_visit_mirrors)) f.read_visit = nullptr;
    const data_writer_fns& w = f.data_version_writers;
    if (!holds(f.write, w.write) || !holds(f.ftruncate, w.ftruncate) || !holds(f.fallocate, w.fallocate) || !holds(f.mmap, w.mmap))
      f.data_version = nullptr;
    return f;
  }

  void dispatch(channel::receiver& r) {
    static constexpr std::array<serve_step, io_msg_max + 1> table = make_table(io_messages{});
    activity_scope adopt(r.activity());
    if (FAULTSAFE_INJECT(server_abort)) {  // injected: the server stops in the middle of this request
      ch_->stop();
      (void)r.reply_error(std::error_code(ESHUTDOWN, std::generic_category()));
      return;
    }
    const std::uint32_t t = r.type() & ~(io_msg_by_path | io_msg_nofollow);
    if (t > io_msg_max || table[t] == nullptr) return reply(r, io_result::fail(ENOSYS));
    (this->*table[t])(r);
  }

  // One message of definition M: decode its header, then the step of its addressing.
  template <class M>
  void serve(channel::receiver& r) {
    typename M::request q;
    if (r.header_as(q)) {
      (void)r.reply_error(std::make_error_code(std::errc::bad_message));
      return;
    }
    if ((r.type() & io_msg_by_path) && M::by != addressing::handle_or_path) return reply(r, io_result::fail(EINVAL));
    request_context ctx{*this, r, q.client, r.activity()};
    if constexpr (M::by == addressing::open)
      serve_open(ctx, q);
    else if constexpr (M::by == addressing::close)
      serve_close(ctx, q);
    else if constexpr (M::by == addressing::path)
      serve_path<M>(ctx, q);
    else
      serve_handle<M>(ctx, q);
  }

  // Handle-addressed: pin the OCB (or, io_msg_by_path, open the path for the message), call, unpin,
  // reply with the reply header.
  template <class M>
  void serve_handle(request_context& ctx, const typename M::request& q) {
    auto& fn = M::slot(funcs_);
    typename M::reply rep{};
    io_result res;
    if (M::by == addressing::handle_or_path && (ctx.rcv.type() & io_msg_by_path)) {
      if constexpr (M::by == addressing::handle_or_path)
        res = with_path_ocb(ctx, (ctx.rcv.type() & io_msg_nofollow) != 0,
                            [&](ocb_base& o) { return fn ? detail::call_handler<M>(fn, ctx, o, q, rep) : enosys(); });
    } else {
      constexpr bool may_be_none = M::by == addressing::handle_or_none;
      ocb_table::pin o = may_be_none && q.handle == 0 ? ocb_table::pin{} : ocbs_.find(q.handle, q.client.pid);
      if (!o && !(may_be_none && q.handle == 0)) return reply(ctx.rcv, io_result::fail(EBADF));
      if (!fn) {
        res = enosys();
      } else if constexpr (may_be_none) {
        res = guarded([&] { return detail::call_handler<M>(fn, ctx, o ? o->ocb.get() : nullptr, q, rep); });
      } else {
        res = guarded([&] { return detail::call_handler<M>(fn, ctx, *o->ocb, q, rep); });
      }
      // Unpinned before the reply: when the client sends its next message (a close, then an open) the
      // slot is no longer pinned by this one and can be reused at once.
      o.reset();  // a close that raced with this message may destroy the OCB right here
    }
    if constexpr (std::is_same_v<typename M::reply, no_reply>)
      reply(ctx.rcv, res);
    else
      reply(ctx.rcv, res, &rep, sizeof rep);
  }

  // Path-addressed (connect functions): the path(s) from the payload, then the handler.
  template <class M>
  void serve_path(request_context& ctx, const typename M::request& q) {
    auto& fn = M::slot(funcs_);
    std::string buf;
    std::string_view path, second;
    io_result res = read_paths(ctx.rcv, M::two_paths, buf, path, second);
    if (!res.error) res = fn ? guarded([&] { return call_path_handler(fn, ctx, q, path, second); }) : enosys();
    reply(ctx.rcv, res);
  }

  // close: out of the table first (EBADF for every later message), then the handler.
  void serve_close(request_context& ctx, const io_handle_request& q) {
    std::shared_ptr<ocb_base> o = ocbs_.remove(q.handle, q.client.pid);
    if (!o) return reply(ctx.rcv, io_result::fail(EBADF));
    reply(ctx.rcv, funcs_.close ? guarded([&] { return funcs_.close(ctx, *o); }) : io_result::ok());
  }

  // open: reserve a client slot, call the handler, install the OCB, reply its handle.
  void serve_open(request_context& ctx, const io_open_request& q) {
    channel::receiver& r = ctx.rcv;
    if (!funcs_.open) return reply(r, enosys());
    std::string buf;
    std::string_view path, second;
    if (io_result res = read_paths(r, false, buf, path, second); res.error) return reply(r, res);
    if (!ocbs_.reserve(q.client.pid)) return reply(r, io_result::fail(EMFILE));
    std::shared_ptr<ocb_base> o;
    io_result res = guarded([&] { return funcs_.open(ctx, q, path, o); });
    if (!res.error && !o) res = io_result::fail(EIO);
    if (!res.error) {
      o->owner_pid = q.client.pid;
      std::error_code ec;
      const std::uint64_t h = ocbs_.install(o, ec);  // on failure the OCB dies with `o` (no handle: no close)
      if (ec) res = io_result::fail(ec);
      else res.value = static_cast<std::int64_t>(h);
    }
    // The new open's attributes, if the sender asked (msg::open's optional reply header): the fstat
    // handler on the OCB, before its handle is known to anyone else. None if that fails.
    msg::open::reply st{};
    std::size_t st_len = 0;
    if (!res.error && funcs_.fstat && r.holding() && r.reply_header_len() == sizeof st) {
      const io_handle_request fq{q.client, static_cast<std::uint64_t>(res.value)};
      if (!guarded([&] { return detail::call_handler<msg::fstat>(funcs_.fstat, ctx, *o, fq, st); }).error) st_len = sizeof st;
    }
    if (res.error) {
      ocbs_.unreserve(q.client.pid);
    } else if (r.holding() && r.reply(res.value, &st, st_len)) {
      // The client gave up (timeout): nobody will ever close this handle.
      std::shared_ptr<ocb_base> dead = ocbs_.remove(static_cast<std::uint64_t>(res.value), q.client.pid);
    }
    reply(r, res);
  }

  // A handle-addressed message sent with io_msg_by_path: open the path O_PATH (| O_NOFOLLOW) with the
  // open handler, run f(ocb) on that temporary open, close it (QNX's combine message).
  template <class F>
  io_result with_path_ocb(request_context& ctx, bool nofollow, F&& f) {
    if (!funcs_.open) return enosys();
    std::string buf;
    std::string_view path, second;
    if (io_result res = read_paths(ctx.rcv, false, buf, path, second); res.error) return res;
    const io_open_request oq{ctx.client, O_PATH | (nofollow ? O_NOFOLLOW : 0), 0};
    std::shared_ptr<ocb_base> o;
    io_result res = guarded([&] { return funcs_.open(ctx, oq, path, o); });
    if (res.error) return res;
    if (!o) return io_result::fail(EIO);
    o->owner_pid = ctx.client.pid;
    res = guarded([&] { return f(*o); });
    if (funcs_.close) (void)guarded([&] { return funcs_.close(ctx, *o); });
    return res;
  }

  // The payload's path (and, for two_paths, the second path after a NUL). EINVAL for a NUL in a path
  // (or a missing second path), ENAMETOOLONG past io_wire_path_max per path.
  static io_result read_paths(channel::receiver& r, bool two_paths, std::string& buf, std::string_view& path,
                              std::string_view& second) {
    constexpr std::size_t path_max = io_wire_path_max;
    const std::size_t n = r.payload_len();
    if (n > (two_paths ? 2 * path_max + 1 : path_max)) return io_result::fail(ENAMETOOLONG);
    try {
      buf.assign(n, '\0');
    } catch (const std::bad_alloc&) {
      return io_result::fail(ENOMEM);
    }
    if (auto ec = r.read_payload(0, buf.data(), n)) return io_result::fail(ec);
    path = buf;
    const std::size_t nul = path.find('\0');
    if (two_paths != (nul != std::string_view::npos)) return io_result::fail(EINVAL);
    if (two_paths) {
      second = path.substr(nul + 1);
      path = path.substr(0, nul);
      if (second.find('\0') != std::string_view::npos) return io_result::fail(EINVAL);
      if (path.size() >= path_max || second.size() >= path_max) return io_result::fail(ENAMETOOLONG);
    }
    return io_result::ok();
  }

  template <class Fn, class Req>
  static io_result call_path_handler(Fn& fn, request_context& ctx, const Req& q, std::string_view path, std::string_view second) {
    if constexpr (std::is_invocable_r_v<io_result, Fn&, request_context&, const Req&, std::string_view, std::string_view>)
      return fn(ctx, q, path, second);
    else
      return fn(ctx, q, path);
  }

  static io_result enosys() noexcept { return io_result::fail(ENOSYS); }

  static void reply(channel::receiver& r, const io_result& res, const void* hdr = nullptr, std::size_t len = 0) {
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

  // The message part of a self_deadlock report (thread_pool::route_for): its name, and what its
  // definition says about it (page_in: the fault).
  static void describe(const send_buffers& b, violation& v) {
    v.details.push_back("the message is '" + std::string(message_name(b.type)) + "' (type " + std::to_string(b.type) + ")");
    if ((b.type & io_msg_type_mask) == static_cast<std::uint32_t>(io_msg::page_in) &&
        b.header_len == sizeof(io_page_in_request) && b.header)
      msg::page_in::describe(b.header, v);
  }

  server_options opts_;
  io_funcs funcs_;
  std::shared_ptr<channel> ch_;
  ocb_table ocbs_;
  ranked_mutex<rank::leaf> prefix_mu_{"server prefixes"};
  std::vector<std::string> prefixes_ FAULTSAFE_GUARDED_BY(prefix_mu_);
  thread_pool pool_;  // last: its threads serve with everything above alive; stopped first
};

inline std::string_view server::message_name(std::uint32_t type) noexcept {
  static constexpr std::array<std::string_view, io_msg_max + 1> names = make_names(io_messages{});
  const std::uint32_t t = type & io_msg_type_mask;
  return t <= io_msg_max && !names[t].empty() ? names[t] : std::string_view("?");
}

}  // namespace faultsafe
