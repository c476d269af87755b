// faultsafe/ipc/channel.hpp: synchronous send / receive / reply (QNX MsgSend / MsgReceive / MsgReply).
//
// Defines `channel_options`, `send_buffers`, `send_options`, `send_result`, `channel_transport`,
// `channel` and its server side `channel::receiver`.
//
// Two transports, one interface: a channel is either in-process (the queue below: the sender and the
// server threads share the address space) or the client end of a connection to a server in another
// OS process (a `channel_transport`, ipc/socket_transport.hpp: a Unix socket and a shared-memory
// channel). Clients (resmgr/process.hpp) send on either the same way and get the same results.
// Server side, a transport that receives messages itself hands each one to a receiver with
// receiver::receive_direct(), so the server's handlers serve it like one from the queue; a message
// whose buffers are in another process (send_buffers::remote_pid) is copied with
// process_vm_readv/process_vm_writev (a bad address is EFAULT for that message).
//
// Model
// - A sender calls channel::send() and blocks until a server thread replies (or the send times out, is
//   cancelled, or the channel stops). The message record lives on the sender's stack and is linked into
//   the channel's queue intrusively: no heap allocation per message.
// - A server thread owns a `receiver` (channel::attach()) and calls receive(). It then works directly on
//   the sender's memory, like MsgRead / MsgWrite: read_payload()/with_payload() read the request payload
//   from the sender's buffer, write_reply_data()/with_reply_data() write straight into the sender's reply
//   buffer. Nothing is staged through an intermediate buffer, so the *server* thread takes any page fault
//   on client memory (the point of this library). Only the small typed header (<= max_header bytes) is
//   copied into the receiver at receive time. Finally reply() (MsgReply) or reply_error() (MsgError)
//   completes the send.
// - Every message carries the sender's activity (current_activity() at send) and faultsafe thread id.
//   The receiver exposes both; the server adopts the activity (activity_scope) while serving.
//   receiver::serving_thread()/sender_thread() and channel::snapshot() say which server thread serves
//   which sender's message (the "reply wait -> server thread" edges of a wait-for graph).
//
// Hand-off: a waiting side spins for `*_spin` (default 4 us, see channel_options) on its atomic word,
// then parks on a futex (the protocol: ipc/detail/hand_off.hpp). Waking a parked thread costs far
// more than a spinning hand-off (the README lists the figures behind the defaults), so a short spin
// keeps fast round trips fast while an idle server sleeps. Long handlers:
// - Size-aware sender spin: a send with large buffers (a 1 MiB read) spins on, past sender_spin, for
//   about the time its handler needs (bytes / sender_spin_bytes_per_us, capped by sender_spin_max),
//   but only while the serving thread is running (its CPU clock advances) or, before a server took
//   the message, while the receiver this send woke is on its way. That spin is polite: it calls
//   sched_yield() every ~2 us, so a server thread waiting for this very core gets it.
// - Adaptive receiver spin: a receiver whose recent waits for a next message were short spins up to
//   twice that (at most receiver_spin_max), politely past receiver_spin.
// - Same-CPU rule: a receiver that just replied to a sender which queued from the receiver's own CPU
//   parks at once instead of spinning: the sender is runnable right there and needs the core.
// None of these spins blocks, touches the wait-for graph, or outlives the send's deadline or cancel.
//
// Errors (std::error_code, generic_category errno values)
// - ETIMEDOUT: the send's deadline passed.  ECANCELED: the send's stop_token was triggered.
// - EDEADLK: the wait-for graph reported a cycle through this send and broke it here (see below).
// - ESHUTDOWN: the channel was stopped before a server thread received the message (pending sends) or
//   before the send started (future sends). receive() on a stopped channel also returns ESHUTDOWN.
// - EAGAIN: channel_options::max_queued messages are already queued (not yet received).
// - ENXIO: channel_options::require_server is set and no server thread serves the channel (none was
//   ever announced with add_server(), e.g. a resource manager whose start() was never called, or the
//   last one left with remove_server()): the send fails at once instead of waiting for ever. Like
//   open(2) of a FIFO that no process reads.
// - EMSGSIZE: header_len > channel::max_header.  EFAULT: a null buffer with a non-zero length, or the
//   server faulted (SIGSEGV/SIGBUS) copying sender memory.
// - Whatever the server passes to reply_error().
// Late replies: a sender that gives up (timeout / cancel) returns only when no server copy into or out
// of its buffers is in progress, and no server copy starts after it returned: the server's copies and
// reply() then fail with ECANCELED and the reply is dropped. (A copy already running, e.g. one waiting
// on a page fault, is waited for: a user-space copy cannot be aborted half way.)
// Stop: messages already being served are served to completion (their server threads are running
// handlers); stop() fails queued and future sends and wakes every blocked receive().
//
// Thread-safety: send() from any number of threads; each receiver is used by one thread at a time.
// Lifetime: the channel must outlive every send() and every receiver use. Receivers belong to the
// channel (attach()/detach() recycle them; no receiver memory is freed before the channel dies).
// Lock order: one internal leaf mutex (rank 90 in spirit) guards the queue; it is never held while
// touching sender memory, waiting, or calling user code.
// Memory ordering: see the numbered comments; the message state word is the sender's futex word.
// Blocking happens only in the private functions block_in_send_or_reply(), await_phase() and
// block_in_receive(), the hook points for a wait-for graph (send wait / reply wait / receive wait).
// Wait-for graph (activity/wait_graph.hpp): a sender that has spun and is about to park records a
// "send wait" on the channel (ANY of its attached server threads; can_grow while fewer receivers are
// attached than options().pool_capacity, i.e. while a server pool may still start a thread), which
// becomes a "reply wait" on the serving thread once a server received the message. Parked senders
// wake every wait_graph::recheck_interval() to poll(); when the graph breaks a reported cycle at this
// wait, the send gives up like a timeout and fails with EDEADLK. Idle receivers record nothing (an
// idle server thread waits for nobody). The spin phase and the uncontended paths never touch the graph.
#pragma once

#include <algorithm>
#include <atomic>
#include <boost/intrusive/list.hpp>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <sys/types.h>
#include <sys/uio.h>
#include <optional>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <vector>

#include "../activity/activity.hpp"
#include "../activity/wait_graph.hpp"
#include "../detail/futex.hpp"
#include "detail/hand_off.hpp"
#include "../order/ranked_mutex.hpp"
#include "../detail/guarded_copy.hpp"
#include "../detail/thread_record.hpp"

namespace faultsafe {

/// Tuning and naming of one channel.
struct channel_options {
  const char* name = "channel";
  /// How long a sender spins waiting for its reply before parking. Default 4 us: long enough for a
  /// small request served by a running server thread, short enough not to keep a core from other
  /// threads (the README gives the figures behind the default).
  std::chrono::nanoseconds sender_spin = std::chrono::microseconds(4);
  /// Size-aware extension of the sender's spin (0 = off). A send whose buffers are large expects a
  /// proportionally longer handler, and parking adds a wake-up to it: the sender keeps spinning up to sender_spin + (payload_len +
  /// reply_data_len) / sender_spin_bytes_per_us (capped at sender_spin_max), but only
  /// - while the message is queued, if this send woke a parked receiver for it (no receiver free: no
  ///   spin), and
  /// - once a server thread holds it, while that thread is seen running on a core: every ~8 us the
  ///   sender reads the server thread's CPU clock and parks as soon as that thread ran less than half
  ///   of the interval (it blocked, parked, or is waiting for a core).
  /// The extension yields the core (sched_yield) every ~2 us. Default 8192 (~8 GB/s: 1 MiB -> 128 us).
  /// Sizes below 8 KiB get no extension: small round trips are unchanged.
  std::size_t sender_spin_bytes_per_us = 8192;
  /// Upper bound of a sender's whole spin (base + size-aware extension).
  std::chrono::nanoseconds sender_spin_max = std::chrono::microseconds(200);
  /// How long an idle receiver spins for a next message before parking (same reasoning).
  std::chrono::nanoseconds receiver_spin = std::chrono::microseconds(4);
  /// Adaptive receiver spin: a receiver whose recent waits for a next message were short (a client
  /// streaming requests with some work in between) spins up to twice its recent wait (a running
  /// average), at most this long, yielding the core (sched_yield) every ~2 us past receiver_spin, so a
  /// runnable thread on its core is never kept off it. A wait longer than this resets it to
  /// receiver_spin. Set it to receiver_spin to disable.
  std::chrono::nanoseconds receiver_spin_max = std::chrono::microseconds(64);
  /// Copy sender memory with detail::guarded_memcpy (a SIGSEGV/SIGBUS on sender memory becomes EFAULT
  /// for the server instead of killing the process). Plain memcpy when false (faster, but a bad client
  /// pointer crashes the server thread).
  bool guard_copies = true;
  /// How many server threads may ever serve this channel (a pool's max_threads; resmgr::server sets
  /// it). 0: exactly the receivers attached now. For the wait-for graph only: a send wait is not
  /// stuck while fewer receivers are attached than this (a pool may still start a thread).
  unsigned pool_capacity = 0;
  /// Most messages that may wait in the queue (sent, not yet received); a send beyond that fails at
  /// once with EAGAIN (0 = no limit). Bounds what clients can pile up on a server that falls behind.
  std::size_t max_queued = 1024;
  /// Fail sends at once with ENXIO while no server thread serves this channel (see add_server()).
  /// resmgr::server sets it: a client of a server that was never started gets an error, not a hang.
  /// false (default for a bare channel): a send waits for a receiver that may attach later.
  bool require_server = false;
};

/// What one send carries. Pointers refer to the sender's memory and must stay valid for the call.
struct send_buffers {
  std::uint32_t type = 0;               ///< message type, for the server's dispatch
  const void* header = nullptr;         ///< small typed request, copied at receive (<= max_header)
  std::size_t header_len = 0;
  const void* payload = nullptr;        ///< bulk request data, read in place by the server (MsgRead)
  std::size_t payload_len = 0;
  void* reply_header = nullptr;         ///< small typed reply, written by reply()
  std::size_t reply_header_len = 0;
  void* reply_data = nullptr;           ///< bulk reply buffer, written in place by the server (MsgWrite)
  std::size_t reply_data_len = 0;
  /// 0: every buffer is in this process. Else payload and reply_data are addresses in OS process
  /// `remote_pid` (header and reply_header are still local): the receiver copies them with
  /// process_vm_readv / process_vm_writev. Set only by a transport's server side for receive_direct().
  pid_t remote_pid = 0;
  /// With remote_pid: called when a copy into or out of that process fails with EFAULT (e.g. a page
  /// of a mapping another process's pager serves behind a user-mode-only userfaultfd, which refuses
  /// kernel-mode faults), to make [addr, addr + len) present there; on success the copy is retried
  /// (at most 8 times per copy). nullptr: EFAULT at once.
  std::error_code (*remote_fault_in)(void* ctx, std::uintptr_t addr, std::size_t len) = nullptr;
  void* remote_fault_in_ctx = nullptr;
  /// With remote_pid: if set, each process_vm_readv/writev moves at most `remote_chunk` bytes (0: no
  /// limit) and `remote_progress` is incremented (relaxed: a hint, it orders nothing) after every
  /// call, so that a sender in the other process can see a long copy advance (the socket transport's
  /// client keeps spinning instead of parking while it does: ipc/socket_transport.hpp).
  std::atomic<std::uint32_t>* remote_progress = nullptr;
  std::size_t remote_chunk = 0;
  /// Set by the sender: payload and reply_data go to a server in another process by address, never
  /// through the shared channel memory (ipc/socket_transport.hpp), so the server's own copy meets each
  /// page where it is and stops at the first it cannot page in (a short count), as in-process; a
  /// sender-side copy would fault on those pages itself (and fail the whole transfer).
  bool by_address = false;
  /// Set by the sender for a request whose reply status counts the reply data bytes and whose serving
  /// changes nothing but the reply (a pread). A transport that copies the reply out of shared memory
  /// on the sender's side (ipc/socket_transport.hpp) then reports a copy-out that stops at a bad page
  /// after k > 0 bytes as success with status min(status, k): pread(2)'s short count. Without it (and
  /// without by_address) such a transport first checks that the reply buffer can be written (one
  /// atomic no-op write per page) and sends the reply by address if not, so the server's own copy
  /// stops at the bad page and, e.g., a read() moves the file offset only by what it copied.
  bool reply_prefix_counts = false;
};

/// Sender-side limits of one send.
struct send_options {
  /// Absolute deadline (time_point::max() = none). Past it the send fails with ETIMEDOUT.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  /// Cancellation: when stop is requested the send fails with ECANCELED.
  std::stop_token stop;
};

/// The outcome of a send: `error` is empty when the server replied with reply(); then `status` is the
/// server's status and `reply_header_len` the bytes it wrote into reply_header.
struct send_result {
  std::int64_t status = 0;
  std::error_code error;
  std::size_t reply_header_len = 0;
  [[nodiscard]] explicit operator bool() const noexcept { return !error; }
};

/// One row of channel::snapshot(): a server thread and the message it is serving.
struct serving_entry {
  std::uint32_t server_thread = 0;  ///< this_thread_id() of the serving thread
  std::uint32_t sender_thread = 0;  ///< this_thread_id() of the blocked sender
  activity_id activity = 0;         ///< the sender's activity
  std::uint32_t type = 0;           ///< message type
};

namespace detail {

// Message phases (low 4 bits of message::state) and flags.
inline constexpr std::uint32_t msg_queued = 0;    // in the channel queue
inline constexpr std::uint32_t msg_received = 1;  // a receiver holds it
inline constexpr std::uint32_t msg_done = 2;      // completed (reply / error / shutdown): sender may return
inline constexpr std::uint32_t msg_dropped = 3;   // the sender's abandonment was acknowledged
inline constexpr std::uint32_t msg_phase_mask = 0xf;
inline constexpr std::uint32_t msg_sleeping = 0x10;   // the sender is (about to be) parked on the futex
inline constexpr std::uint32_t msg_cancelled = 0x20;  // the stop_token fired
inline constexpr std::uint32_t msg_graph_broken = 0x40;  // never stored: await_phase's "the wait-for graph broke this wait"

// Receiver slot states (low 8 bits of receiver::slot_), the rest is the sequence number of the message.
inline constexpr std::uint64_t slot_free = 0;
inline constexpr std::uint64_t slot_active = 1;     // holds a live message
inline constexpr std::uint64_t slot_copying = 2;    // copying sender memory right now
inline constexpr std::uint64_t slot_abandoned = 3;  // the sender gave up; drop everything
inline constexpr std::uint64_t slot_cancel_req = 4; // flag: sender wants out while copying
inline constexpr std::uint64_t slot_state_mask = 0xff;

struct channel_message {
  boost::intrusive::list_member_hook<> hook;
  send_buffers buf;
  activity_id activity = 0;
  std::uint32_t sender_thread = 0;
  std::atomic<std::uint32_t> state{msg_queued};  // the sender's futex word
  // Written by the receiver under the channel mutex, before (2) publishes msg_received.
  void* slot = nullptr;
  std::uint64_t seq = 0;
  /// this_thread_id() of the server thread serving this message (0 while queued): the target of the
  /// sender's "reply wait -> server thread" edge in a wait-for graph. Relaxed: a report hint.
  std::atomic<std::uint32_t> served_by{0};
  /// CPU-time clock of the serving thread (pthread_getcpuclockid), written with slot/seq before (2):
  /// the sender's size-aware spin checks with it that the server is running. 0: unknown (no extension).
  clockid_t server_clock = 0;
  bool server_clock_valid = false;
  /// sched_getcpu() of the sender just before it queued the message (-1: unknown). Written before the
  /// queue push (mutex), read by the server at reply: the receiver's same-CPU rule (block_in_receive).
  int sender_cpu = -1;
  // Written by the completer before (4) publishes msg_done.
  std::int64_t status = 0;
  int error = 0;
  std::size_t reply_header_written = 0;
};

}  // namespace detail

/// The client end of a channel whose server is elsewhere (another OS process): channel::send() and
/// stop() forward to it. Thread-safety: send() from any number of threads, stop() from any thread.
class channel_transport {
 public:
  virtual ~channel_transport() = default;
  /// As channel::send() (same errors), plus the transport's own (see its header).
  [[nodiscard]] virtual send_result send(const send_buffers& b, const send_options& o) noexcept = 0;
  /// Effects: later sends fail with ESHUTDOWN; sends in progress complete or fail. Idempotent.
  virtual void stop() noexcept = 0;
  /// The connection's socket, for descriptors passed beside the messages (ipc/socket_transport.hpp);
  /// -1 if the transport has none.
  [[nodiscard]] virtual int control_socket() const noexcept { return -1; }
};

class channel {
 public:
  /// Largest header a send may carry (copied into the receiver at receive time).
  static constexpr std::size_t max_header = 256;

  class receiver;

  explicit channel(channel_options opts = {}) : opts_(opts) {}
  /// A channel whose sends go through `t` (a connection to a server in another process). Receivers
  /// may still attach (receive_direct()), but nothing is ever queued. Requires: t != nullptr.
  channel(std::unique_ptr<channel_transport> t, channel_options opts) : opts_(opts), transport_(std::move(t)) {}
  /// Effects: stop(). Requires: no send() or receiver use in progress or to come.
  ~channel() { stop(); }
  /// Whether sends go through a channel_transport (the server is in another process).
  [[nodiscard]] bool remote() const noexcept { return transport_ != nullptr; }
  /// The transport's control socket (channel_transport::control_socket), or -1.
  [[nodiscard]] int transport_socket() const noexcept { return transport_ ? transport_->control_socket() : -1; }
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  [[nodiscard]] const char* name() const noexcept { return opts_.name; }
  [[nodiscard]] const channel_options& options() const noexcept { return opts_; }

  /// Effects: sends `b` and blocks until a server replies, the deadline passes, `o.stop` fires, or the
  /// channel stops. Returns: see the header comment for the errors. Never throws.
  /// Complexity: O(1) plus the server's work; no heap allocation.
  /// Thread-safety: any thread. Lock order: takes the internal leaf mutex briefly; the caller may hold
  /// any locks, but holding a lock that the server needs is a deadlock the wait graph will name.
  [[nodiscard]] send_result send(const send_buffers& b, const send_options& o = {}) noexcept {
    send_result r;
    if (b.header_len > max_header) return fail(r, EMSGSIZE);
    if ((b.header == nullptr && b.header_len) || (b.payload == nullptr && b.payload_len) ||
        (b.reply_header == nullptr && b.reply_header_len) || (b.reply_data == nullptr && b.reply_data_len))
      return fail(r, EFAULT);
    if (o.stop.stop_requested()) return fail(r, ECANCELED);
    if (b.remote_pid != 0) return fail(r, EINVAL);  // only a transport's server side names another process
    if (transport_) return transport_->send(b, o);
    detail::channel_message m;
    m.buf = b;
    m.activity = current_activity();
    m.sender_thread = this_thread_id();
    m.sender_cpu = ::sched_getcpu();  // no system call (rseq / vDSO)
    {
      exclusive_guard g(mu_);
      if (stopped_) return fail(r, ESHUTDOWN);
      if (opts_.require_server && server_threads_ == 0) return fail(r, ENXIO);
      if (opts_.max_queued != 0 && queue_.size() >= opts_.max_queued) return fail(r, EAGAIN);
      queue_.push_back(m);
    }
    // (1) seq_cst, pairs with (6): either a parked receiver is counted here or it sees the new seq.
    queue_seq_.fetch_add(1, std::memory_order_seq_cst);
    const bool woke = sleeping_receivers_.load(std::memory_order_seq_cst) > 0;
    if (woke) detail::futex_wake(&queue_seq_, 1);
    if (o.stop.stop_possible()) {
      std::stop_callback<cancel_wake> cb(o.stop, cancel_wake{&m});
      return block_in_send_or_reply(m, o.deadline, woke);
    }
    return block_in_send_or_reply(m, o.deadline, woke);
  }

  /// Effects: the channel refuses new sends (ESHUTDOWN), fails every queued one with ESHUTDOWN, and
  /// wakes every receiver blocked in receive() (they return ESHUTDOWN). Idempotent. Messages being
  /// served complete normally. Thread-safety: any thread.
  void stop() noexcept {
    if (transport_) transport_->stop();
    {
      exclusive_guard g(mu_);
      stopped_ = true;
      while (!queue_.empty()) {
        detail::channel_message& m = queue_.front();
        queue_.pop_front();
        (void)complete(m, 0, ESHUTDOWN, 0);  // m may be gone after this
      }
    }
    queue_seq_.fetch_add(1, std::memory_order_seq_cst);  // (1) as in send(): every receiver rechecks
    detail::futex_wake(&queue_seq_, INT_MAX);
  }

  [[nodiscard]] bool stopped() const noexcept {
    exclusive_guard g(mu_);
    return stopped_;
  }

  /// Effects: announces one more server thread for this channel (call it before starting the thread,
  /// so no send in between sees none). Only counted; matters with channel_options::require_server.
  /// Thread-safety: any thread. Lock order: the internal leaf mutex.
  void add_server() noexcept {
    exclusive_guard g(mu_);
    ++server_threads_;
  }
  /// Requires: a matching add_server(). Effects: one server thread fewer. When the last one leaves
  /// and channel_options::require_server is set, every queued send fails with ENXIO (nobody would
  /// ever receive it), as do later sends until add_server().
  void remove_server() noexcept {
    {
      exclusive_guard g(mu_);
      if (server_threads_ == 0 || --server_threads_ != 0 || !opts_.require_server) return;
      while (!queue_.empty()) {
        detail::channel_message& m = queue_.front();
        queue_.pop_front();
        (void)complete(m, 0, ENXIO, 0);  // m may be gone after this
      }
    }
    wait_graph::note_change();
  }
  /// Server threads announced with add_server() and not yet removed (racy, for tests and reports).
  [[nodiscard]] unsigned servers() const noexcept {
    exclusive_guard g(mu_);
    return server_threads_;
  }

  /// Effects: a receiver for the calling server thread (recycled if one was detached).
  /// Lifetime: valid until the channel dies; give it back with detach(). Throws: std::bad_alloc.
  [[nodiscard]] receiver& attach();
  /// Requires: `r` holds no message (replied or never received). Effects: recycles `r`.
  void detach(receiver& r) noexcept;

  /// Effects: which server threads are serving which senders right now (racy snapshot, for reports
  /// and the wait graph). Throws: std::bad_alloc.
  [[nodiscard]] std::vector<serving_entry> snapshot() const;

  /// Number of messages queued and not yet received (racy, for tests and reports).
  [[nodiscard]] std::size_t queued() const noexcept {
    exclusive_guard g(mu_);
    return queue_.size();
  }

 private:
  using message = detail::channel_message;
  // The spin-then-park hand-off's platform (ipc/detail/hand_off.hpp): tests run the same protocol on a
  // manual clock and a scripted word.
  using platform = detail::real_platform;
  using queue_type = boost::intrusive::list<
      message, boost::intrusive::member_hook<message, boost::intrusive::list_member_hook<>, &message::hook>>;

  struct cancel_wake {
    message* m;
    void operator()() const noexcept {
      // (3) release: the sender re-checks its state word and sees the flag.
      const std::uint32_t old = m->state.fetch_or(detail::msg_cancelled, std::memory_order_acq_rel);
      detail::wake_if_sleeping<platform>(m->state, old, detail::msg_sleeping);
    }
  };

  static send_result& fail(send_result& r, int e) noexcept {
    r.error = std::error_code(e, std::generic_category());
    return r;
  }

  // Completes `m` for its sender. After the exchange the message may be gone: touch nothing after it.
  // Returns: whether the sender was parked (and is now being woken).
  static bool complete(message& m, std::int64_t status, int err, std::size_t hdr) noexcept {
    m.status = status;
    m.error = err;
    m.reply_header_written = hdr;
    // (4) release, pairs with (5): status/error/reply header and all reply-data copies are visible.
    const std::uint32_t old = m.state.exchange(detail::msg_done, std::memory_order_acq_rel);
    return detail::wake_if_sleeping<platform>(m.state, old, detail::msg_sleeping);
  }

  static send_result result_of(const message& m) noexcept {
    send_result r;
    r.status = m.status;
    r.reply_header_len = m.reply_header_written;
    if (m.error) r.error = std::error_code(m.error, std::generic_category());
    return r;
  }

  // Waits until m's phase is one of `want` (bit mask of 1 << phase), or (if `interruptible`)
  // until the deadline passes or the cancel flag is set. Returns the last state seen.
  std::uint32_t await_phase(message& m, unsigned want, bool interruptible,
                            std::chrono::steady_clock::time_point deadline, bool woke = false) noexcept {
    auto done = [&](std::uint32_t s) {
      return ((1u << (s & detail::msg_phase_mask)) & want) != 0 || (interruptible && (s & detail::msg_cancelled));
    };
    // Spin phase.
    std::uint32_t s = m.state.load(std::memory_order_acquire);  // (5) acquire, pairs with (4)
    if (done(s)) return s;
    if (opts_.sender_spin.count() > 0) {
      s = detail::spin_until<platform>(m.state, opts_.sender_spin, done);  // its loads are (5)
      if (done(s)) return s;
    }
    if (interruptible) {
      s = extended_sender_spin(m, woke, deadline);
      if (done(s)) return s;
    }
    // Park phase. Senders (interruptible) record their wait in the wait-for graph while parked.
    std::optional<graph_wait> gw;
    for (;;) {
      s = m.state.load(std::memory_order_acquire);  // (5)
      if (done(s)) return s;
      const auto now = std::chrono::steady_clock::now();
      if (interruptible && now >= deadline) return s;
      auto until = interruptible ? deadline : std::chrono::steady_clock::time_point::max();
      if (interruptible && (gw || wait_graph::enabled())) {
        if (!gw) gw.emplace(*this, m);
        if (gw->update(s)) return s | detail::msg_graph_broken;  // no lock held here
        until = std::min(until, now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                          wait_graph::recheck_interval()));
      }
      detail::park_once<platform>(m.state, s, detail::msg_sleeping, until);  // (5) again on the next round
    }
  }

  // The size-aware extension of a sender's spin (see channel_options::sender_spin_bytes_per_us).
  // A polite spin: between state checks it yields the core (sched_yield) every ~2 us, so a server
  // thread queued behind it on this core runs at once, and this thread, never parked, needs no
  // wake-up afterwards. It goes on while the budget and the deadline have not passed, no cancel, and
  // either the message is still queued and this send woke a parked receiver for it (`woke`: that
  // thread is on its way), or a server thread holds it and ran at least half of each check interval
  // (its CPU clock: a blocked, parked or preempted server ends the spin). Returns the last state seen
  // (done or not). Never touches the wait-for graph; never blocks.
  std::uint32_t extended_sender_spin(message& m, bool woke, std::chrono::steady_clock::time_point deadline) noexcept {
    std::uint32_t s = m.state.load(std::memory_order_acquire);  // (5)
    if (opts_.sender_spin_bytes_per_us == 0 || opts_.sender_spin_max <= opts_.sender_spin) return s;
    const std::size_t bytes = m.buf.payload_len + m.buf.reply_data_len;
    const auto extra = std::chrono::microseconds(bytes / opts_.sender_spin_bytes_per_us);
    if (extra.count() == 0) return s;
    const auto budget = std::min<std::chrono::nanoseconds>(opts_.sender_spin_max - opts_.sender_spin, extra);
    auto last = std::chrono::steady_clock::now();
    const auto spin_end = std::min(deadline, last + budget);
    bool have_clock = false;
    clockid_t clock{};
    std::int64_t last_cpu = 0;
    auto check_every = std::chrono::microseconds(4);  // then every 8 us (a CPU-clock read is a system call)
    unsigned rounds = 0;
    for (;;) {
      if (s & detail::msg_cancelled) return s;
      const std::uint32_t phase = s & detail::msg_phase_mask;
      if (phase == detail::msg_queued) {
        if (!woke) return s;
      } else if (phase == detail::msg_received) {
        if (!have_clock) {  // server_clock was written before (2) published msg_received: seen via (5)
          if (!m.server_clock_valid || !thread_cpu_ns(m.server_clock, last_cpu)) return s;
          clock = m.server_clock;
          have_clock = true;
          last = std::chrono::steady_clock::now();
        }
      } else {
        return s;  // done / dropped
      }
      const std::uint32_t before = s;
      for (int i = 0; i < 32 && s == before; ++i) {
        detail::cpu_relax();
        s = m.state.load(std::memory_order_acquire);  // (5)
      }
      if (s != before) continue;
      if ((++rounds & 1) == 0) ::sched_yield();
      const auto now = std::chrono::steady_clock::now();
      if (now >= spin_end) return s;
      if (have_clock && now - last >= check_every) {
        std::int64_t cpu = 0;
        if (!thread_cpu_ns(clock, cpu)) return s;  // the thread is gone
        const auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last).count();
        if (2 * (cpu - last_cpu) < wall) return s;  // not running: blocked, parked or waiting for a core
        last = now;
        last_cpu = cpu;
        check_every = std::chrono::microseconds(8);
      }
    }
  }
  static bool thread_cpu_ns(clockid_t c, std::int64_t& ns) noexcept {
    timespec ts{};
    if (::clock_gettime(c, &ts) != 0) return false;
    ns = static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    return true;
  }

  // The wait-for graph's view of one message: before it is received, a send wait on the channel's
  // server threads (any of them); after, a reply wait on the thread serving it.
  class reply_waitable final : public waitable {
   public:
    reply_waitable(const channel& c, const message& m) noexcept : ch_(c), m_(m) {}
    void wait_holders(std::vector<std::uint32_t>& t) const override {
      if ((m_.state.load(std::memory_order_acquire) & detail::msg_phase_mask) != detail::msg_received) return;
      const std::uint32_t by = m_.served_by.load(std::memory_order_relaxed);
      if (by != 0) t.push_back(by);
    }
    [[nodiscard]] bool any_of() const override { return true; }
    [[nodiscard]] bool can_grow() const override {  // done/dropped: satisfied, the sender is waking
      const std::uint32_t ph = m_.state.load(std::memory_order_acquire) & detail::msg_phase_mask;
      return ph == detail::msg_done || ph == detail::msg_dropped;
    }
    [[nodiscard]] std::string wait_name() const override { return std::string("reply on channel '") + ch_.name() + "'"; }

   private:
    const channel& ch_;
    const message& m_;
  };

  // The channel as a send-wait resource: ANY of the attached server threads.
  class server_set final : public waitable {
   public:
    explicit server_set(const channel& c) noexcept : ch_(c) {}
    void wait_holders(std::vector<std::uint32_t>& t) const override {
      exclusive_guard g(ch_.mu_);
      for (const receiver& r : ch_.receivers_) {
        const std::uint32_t id = receiver_thread(r);
        if (id != 0) t.push_back(id);
      }
    }
    [[nodiscard]] bool any_of() const override { return true; }
    [[nodiscard]] bool can_grow() const override {
      exclusive_guard g(ch_.mu_);
      if (ch_.stopped_) return true;  // queued sends fail with ESHUTDOWN: not stuck
      unsigned attached = 0;
      for (const receiver& r : ch_.receivers_) attached += receiver_thread(r) != 0 ? 1u : 0u;
      return attached < ch_.opts_.pool_capacity;
    }
    [[nodiscard]] std::string wait_name() const override { return std::string("channel '") + ch_.name() + "'"; }

   private:
    const channel& ch_;
  };
  // Requires: mu_ held. The thread of an attached receiver that has called receive(), else 0.
  static std::uint32_t receiver_thread(const receiver& r) noexcept;

  // A sender's current edge. Not copyable; lives in await_phase's frame while the sender is parked.
  class graph_wait {
   public:
    graph_wait(const channel& c, const message& m) noexcept : reply_(c, m), ch_(c) {}
    // Effects: (re)records the edge for the message's phase `s`, then polls. Returns true if the graph
    // broke this wait (or the violation handler threw: the program wants out of this wait).
    bool update(std::uint32_t s) noexcept {
      const std::uint32_t ph = s & detail::msg_phase_mask;
      try {
        if (ph != phase_ || !scope_) {
          scope_.reset();
          phase_ = ph;
          if (ph == detail::msg_queued) scope_.emplace(ch_.servers_, wait_kind::send);
          else if (ph == detail::msg_received) scope_.emplace(reply_, wait_kind::reply);
          else return false;
          if (scope_->deadlocked()) return true;
        }
        return scope_->poll();
      } catch (...) {
        scope_.reset();
        return true;
      }
    }

   private:
    reply_waitable reply_;
    const channel& ch_;
    std::uint32_t phase_ = detail::msg_phase_mask;
    std::optional<wait_scope> scope_;  // last: destroyed before reply_
  };

  // Send wait (phase queued) and reply wait (phase received). The one place a sender blocks.
  // woke: this send woke a parked receiver (see extended_sender_spin).
  send_result block_in_send_or_reply(message& m, std::chrono::steady_clock::time_point deadline, bool woke) noexcept {
    const std::uint32_t s = await_phase(m, 1u << detail::msg_done, true, deadline, woke);
    if ((s & detail::msg_phase_mask) == detail::msg_done) return result_of(m);
    return abandon(m, (s & detail::msg_graph_broken) ? EDEADLK : (s & detail::msg_cancelled) ? ECANCELED : ETIMEDOUT);
  }

  // The sender gives up. Returns only when the server can no longer touch m or its buffers.
  send_result abandon(message& m, int why) noexcept;

  // Receive wait: the one place a server thread blocks for work. Spins `spin` (0: park at once, the
  // same-CPU rule, see receiver::complete_reply()); past receiver_spin the spin yields the core every ~2 us.
  bool block_in_receive(std::uint32_t seen, std::chrono::steady_clock::time_point deadline,
                        std::chrono::nanoseconds spin) noexcept {
    if (spin.count() > 0) {
      const auto start = std::chrono::steady_clock::now();
      const auto spin_end = start + spin, polite_from = start + opts_.receiver_spin;
      unsigned n = 0;
      for (;;) {
        for (int i = 0; i < 64; ++i) {
          // relaxed: it publishes nothing (the message is taken under mu_).
          if (queue_seq_.load(std::memory_order_relaxed) != seen) return true;
          detail::cpu_relax();
        }
        if ((++n & 3) == 0) {
          const auto now = std::chrono::steady_clock::now();
          if (now >= spin_end) break;
          if (now >= polite_from) ::sched_yield();
        }
      }
    }
    // (6) seq_cst, pairs with (1).
    sleeping_receivers_.fetch_add(1, std::memory_order_seq_cst);
    int rc = 0;
    if (queue_seq_.load(std::memory_order_seq_cst) == seen) rc = detail::futex_wait_until(&queue_seq_, seen, deadline);  // (6)
    sleeping_receivers_.fetch_sub(1, std::memory_order_seq_cst);  // (6) as the increment
    return rc != ETIMEDOUT;
  }

  // The hot cache line: everything a send and a receive both touch (with checks off the lock is a
  // bare std::mutex: 40 + 16 + 4 + 4 bytes with libstdc++), so one hand-off moves one line each way
  // instead of two or three.
  alignas(64) mutable ranked_mutex<rank::leaf> mu_{"channel queue"};  // leaf: queue_, stopped_, receivers_
  queue_type queue_ FAULTSAFE_GUARDED_BY(mu_);
  std::atomic<std::uint32_t> queue_seq_{0};
  std::atomic<std::uint32_t> sleeping_receivers_{0};
  // Read-mostly: stays shared in every cache.
  alignas(64) channel_options opts_;
  std::unique_ptr<channel_transport> transport_;  // null: in-process
  bool stopped_ FAULTSAFE_GUARDED_BY(mu_) = false;
  unsigned server_threads_ FAULTSAFE_GUARDED_BY(mu_) = 0;  // add_server() - remove_server()
  std::list<receiver> receivers_ FAULTSAFE_GUARDED_BY(mu_);  // stable addresses
  server_set servers_{*this};             // the send-wait resource of the wait-for graph
};

/// The server side of one server thread: receive a message, work on the sender's buffers, reply.
/// Thread-safety: one thread at a time (normally always the same one). All functions are noexcept
/// except with_payload()/with_reply_data(), which propagate what the callable throws (the copy is then
/// ended properly first).
class channel::receiver {
 public:
  explicit receiver(channel& ch) : ch_(&ch) {}
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  /// Requires: no message held. Effects: blocks until a message arrives, the deadline passes
  /// (ETIMEDOUT) or the channel stops (ESHUTDOWN). On success this receiver holds the message until
  /// reply()/reply_error(). Complexity: O(1) + header copy.
  [[nodiscard]] std::error_code receive(
      std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max()) noexcept {
    thread_.store(this_thread_id(), std::memory_order_relaxed);
    cpu_clock_valid_ = ::pthread_getcpuclockid(::pthread_self(), &cpu_clock_) == 0;  // pure computation in glibc
    bool waited = false;  // the adaptive spin learns how long this receiver waits for a next message
    std::chrono::steady_clock::time_point wait_start;
    for (;;) {
      const std::uint32_t seen = ch_->queue_seq_.load(std::memory_order_seq_cst);  // (6): read before the queue
      message* m = nullptr;
      {
        exclusive_guard g(ch_->mu_);
        if (ch_->stopped_) return std::error_code(ESHUTDOWN, std::generic_category());
        if (!ch_->queue_.empty()) {
          m = &ch_->queue_.front();
          ch_->queue_.pop_front();
          const std::uint64_t seq = ++seq_;
          slot_.store((seq << 8) | detail::slot_copying, std::memory_order_relaxed);
          m->slot = this;
          m->seq = seq;
          m->served_by.store(thread_.load(std::memory_order_relaxed), std::memory_order_relaxed);
          m->server_clock = cpu_clock_;
          m->server_clock_valid = cpu_clock_valid_;
          msg_ = m;
          buf_ = m->buf;
          reply_high_ = 0;
          // (2) release (under the mutex too): the sender's abandon() sees slot/seq.
          std::uint32_t s = m->state.load(std::memory_order_relaxed);
          while (!m->state.compare_exchange_weak(s, (s & ~detail::msg_phase_mask) | detail::msg_received,
                                                 std::memory_order_acq_rel)) {
          }
        }
      }
      if (m != nullptr) {
        if (waited) note_wait(std::chrono::steady_clock::now() - wait_start);
        sender_.store(m->sender_thread, std::memory_order_relaxed);
        activity_.store(m->activity, std::memory_order_relaxed);
        type_.store(m->buf.type, std::memory_order_relaxed);
        header_len_ = buf_.header_len;
        // The header copy runs in "copying" state entered above, so the sender cannot leave under it.
        const std::error_code ec = copy(header_, buf_.header, header_len_);
        if (end_copy()) {
          if (ec) {  // a bad header pointer: fail this send, look for the next one
            (void)reply_error(ec);
            continue;
          }
          return {};
        }
        release_slot();  // the sender gave up during the header copy
        continue;
      }
      const auto spin = yield_to_sender_ ? std::chrono::nanoseconds(0) : spin_budget();
      yield_to_sender_ = false;
      if (!waited) {
        waited = true;
        wait_start = std::chrono::steady_clock::now();
      }
      if (!ch_->block_in_receive(seen, deadline, spin)) return std::error_code(ETIMEDOUT, std::generic_category());
    }
  }

  /// Effects: makes this receiver hold the message `b` (activity `a`, sender thread `sender`) that a
  /// transport received itself (not through the queue): the caller then serves it exactly like one
  /// from receive() (header_as, read_payload, write_reply_data, reply, ...) and reads the outcome
  /// with direct_result(). Nobody waits on it here, so the message cannot be abandoned. Returns
  /// EMSGSIZE (holding nothing) if b.header_len > max_header. Requires: !holding(). No allocation.
  [[nodiscard]] std::error_code receive_direct(const send_buffers& b, activity_id a, std::uint32_t sender) noexcept {
    if (b.header_len > max_header) return std::error_code(EMSGSIZE, std::generic_category());
    thread_.store(this_thread_id(), std::memory_order_relaxed);
    direct_.state.store(detail::msg_received, std::memory_order_relaxed);
    direct_.buf = b;
    direct_.activity = a;
    direct_.sender_thread = sender;
    direct_.status = 0;
    direct_.error = 0;
    direct_.reply_header_written = 0;
    seq_ = seq_ + 1;
    direct_.slot = this;
    direct_.seq = seq_;
    msg_ = &direct_;
    buf_ = b;
    reply_high_ = 0;
    slot_.store((seq_ << 8) | detail::slot_active, std::memory_order_release);
    sender_.store(sender, std::memory_order_relaxed);
    activity_.store(a, std::memory_order_relaxed);
    type_.store(b.type, std::memory_order_relaxed);
    header_len_ = b.header_len;
    if (header_len_ > 0) std::memcpy(header_, b.header, header_len_);  // a transport's own local copy
    return {};
  }
  /// The outcome of the message taken with receive_direct(): what its sender would have got. If it
  /// is still held (the handler neither replied nor failed it), fails it with EIO first.
  [[nodiscard]] send_result direct_result() noexcept {
    if (msg_ == &direct_) (void)reply_error(std::error_code(EIO, std::generic_category()));
    return channel::result_of(direct_);
  }

  /// Effects: serves the message `b` of activity `a` on the calling thread: receive_direct(b, a, 0),
  /// then `serve(*this)` (the server's dispatch: it replies or fails the message), then
  /// direct_result(). The one definition of a direct serve, for every transport and for
  /// thread_pool::serve_here. Returns: what the sender would have got: receive_direct()'s EMSGSIZE,
  /// the reply, or the failure; EIO if `serve` neither replied nor failed the message, or threw while
  /// holding it (an exception after the reply leaves the reply standing: it may already have written
  /// the sender's buffers). Requires: !holding(). Throws: nothing (`serve`'s exceptions are caught).
  /// Thread-safety: this receiver's owner only. Lock order: what `serve` takes.
  template <class Serve>
  [[nodiscard]] send_result serve_direct(const send_buffers& b, activity_id a, Serve&& serve) noexcept {
    if (auto ec = receive_direct(b, a, 0)) {
      send_result res;
      res.error = ec;
      return res;
    }
    try {
      std::forward<Serve>(serve)(*this);
    } catch (...) {  // fails this message only (direct_result: EIO while still held)
    }
    return direct_result();
  }

  /// The end of the highest reply-data byte the server may have written for the held (or last)
  /// message: a transport that stages reply data copies back only this much.
  [[nodiscard]] std::size_t reply_data_high() const noexcept { return reply_high_; }

  /// True while a message is held (received and not yet replied).
  [[nodiscard]] bool holding() const noexcept { return msg_ != nullptr; }
  /// The held message's type / sender activity / sender thread. Requires: holding().
  [[nodiscard]] std::uint32_t type() const noexcept { return type_.load(std::memory_order_relaxed); }
  [[nodiscard]] activity_id activity() const noexcept { return activity_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint32_t sender_thread() const noexcept { return sender_.load(std::memory_order_relaxed); }
  /// The faultsafe thread id of the server thread that last called receive() here.
  [[nodiscard]] std::uint32_t serving_thread() const noexcept { return thread_.load(std::memory_order_relaxed); }
  /// The copied request header. Requires: holding().
  [[nodiscard]] const void* header() const noexcept { return header_; }
  [[nodiscard]] std::size_t header_len() const noexcept { return header_len_; }
  /// Sizes of the sender's buffers. Requires: holding().
  [[nodiscard]] std::size_t payload_len() const noexcept { return buf_.payload_len; }
  [[nodiscard]] std::size_t reply_data_len() const noexcept { return buf_.reply_data_len; }
  [[nodiscard]] std::size_t reply_header_len() const noexcept { return buf_.reply_header_len; }

  /// Effects: copies the header into *out if it is exactly sizeof(T) (else EBADMSG). Requires: holding().
  template <class T>
  [[nodiscard]] std::error_code header_as(T& out) const noexcept {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= max_header);
    if (header_len_ != sizeof(T)) return std::error_code(EBADMSG, std::generic_category());
    std::memcpy(&out, header_, sizeof(T));
    return {};
  }

  /// MsgRead: copies up to `len` payload bytes from offset `off` of the sender's buffer into `dst`.
  /// Returns: ECANCELED if the sender gave up, EFAULT if its memory faulted; *copied = bytes copied
  /// (after EFAULT: 0 in-process; from another process, the bytes before the first unreadable one,
  /// copied front to back).
  [[nodiscard]] std::error_code read_payload(std::size_t off, void* dst, std::size_t len, std::size_t* copied = nullptr) noexcept {
    if (buf_.remote_pid != 0) return remote_read_payload(off, dst, len, copied);
    std::size_t n = 0;
    auto ec = with_payload([&](const void* p, std::size_t avail) {
      n = off >= avail ? 0 : std::min(len, avail - off);
      return copy(dst, static_cast<const unsigned char*>(p) + off, n);
    });
    if (copied) *copied = ec ? 0 : n;
    return ec;
  }

  /// MsgWrite: copies `len` bytes from `src` into the sender's reply buffer at offset `off`. Fails with
  /// EMSGSIZE (copying nothing) if that does not fit, ECANCELED if the sender gave up, EFAULT if the
  /// sender's buffer faulted. With `copied`: the copy runs front to back and *copied is the count of
  /// bytes written before a fault (len on success, 0 for EMSGSIZE/ECANCELED), so a read handler can
  /// reply with the short count (read(2) semantics: EFAULT only if nothing was copied); without it,
  /// which bytes a failed copy wrote is unspecified.
  [[nodiscard]] std::error_code write_reply_data(std::size_t off, const void* src, std::size_t len,
                                                 std::size_t* copied = nullptr) noexcept {
    std::size_t high = reply_high_;
    if (off <= buf_.reply_data_len && len <= buf_.reply_data_len - off) high = std::max(high, off + len);
    std::error_code ec;
    std::size_t done = 0;
    if (buf_.remote_pid != 0) {
      ec = remote_write_reply_data(off, src, len, &done);
    } else {
      ec = with_reply_data([&](void* p, std::size_t cap) -> std::error_code {
        if (off > cap || len > cap - off) return std::error_code(EMSGSIZE, std::generic_category());
        if (copied == nullptr || !ch_->opts_.guard_copies) {
          const std::error_code e = copy(static_cast<unsigned char*>(p) + off, src, len);
          done = e ? 0 : len;
          return e;
        }
        std::error_code e;
        done = detail::guarded_copy_prefix(static_cast<unsigned char*>(p) + off, src, len, &e);
        return e;
      });
      if (ec && ec == std::errc::operation_canceled) done = 0;  // `ec &&`: no category calls on success
    }
    if (copied != nullptr) *copied = done;
    reply_high_ = high;  // with_reply_data() assumed all of it
    return ec;
  }

  /// Effects: calls f(const void* payload, size_t payload_len) -> std::error_code while the sender is
  /// pinned (cannot return). f may read the sender's memory directly (and fault). Returns f's result,
  /// or ECANCELED without calling f if the sender gave up. Requires: holding().
  /// A payload in another process (send_buffers::remote_pid) is first read into a buffer of this
  /// receiver (ENOMEM if none can be had; EFAULT if not even its first byte can be read) and f gets
  /// that; when only a prefix can be read (a bad page part-way), f gets the prefix (payload_len
  /// shorter), as an f reading a local sender's memory would fault at the first bad byte: f must not
  /// read past the length it is given.
  template <class F>
  [[nodiscard]] std::error_code with_payload(F&& f) {
    if (buf_.remote_pid != 0) {
      if (auto ec = stage(buf_.payload_len)) return ec;
      std::size_t got = 0;
      const std::error_code ec = read_payload(0, stage_.data(), buf_.payload_len, &got);
      if (ec && (ec.value() != EFAULT || got == 0)) return ec;
      return f(static_cast<const void*>(stage_.data()), ec ? got : buf_.payload_len);
    }
    if (!begin_copy()) return std::error_code(ECANCELED, std::generic_category());
    std::error_code ec;
    try {
      ec = f(static_cast<const void*>(buf_.payload), buf_.payload_len);
    } catch (...) {
      (void)end_copy();
      throw;
    }
    if (!end_copy()) return std::error_code(ECANCELED, std::generic_category());
    return ec;
  }

  /// As with_payload(), for f(void* reply_data, size_t reply_data_len): the direct write path (a read
  /// handler memcpy()s from its store straight into the client's buffer).
  /// A reply buffer in another process is staged: read into a buffer of this receiver, given to f,
  /// and written back whole if f succeeded (bytes f did not change are written back unchanged).
  template <class F>
  [[nodiscard]] std::error_code with_reply_data(F&& f) {
    reply_high_ = buf_.reply_data_len;  // f may write anywhere
    if (buf_.remote_pid != 0) {
      const std::size_t n = buf_.reply_data_len;
      if (auto ec = stage(n)) return ec;
      if (auto ec = remote_copy(false, 0, stage_.data(), n)) return ec;
      if (auto ec = f(static_cast<void*>(stage_.data()), n)) return ec;
      return remote_write_reply_data(0, stage_.data(), n);
    }
    if (!begin_copy()) return std::error_code(ECANCELED, std::generic_category());
    std::error_code ec;
    try {
      ec = f(buf_.reply_data, buf_.reply_data_len);
    } catch (...) {
      (void)end_copy();
      throw;
    }
    if (!end_copy()) return std::error_code(ECANCELED, std::generic_category());
    return ec;
  }

  /// MsgReply: copies min(len, reply_header_len) bytes of `hdr` into the sender's reply header and
  /// completes the send with `status`. Returns ECANCELED (reply dropped) if the sender gave up,
  /// EFAULT if the reply header copy faulted (the send then fails with EFAULT). Requires: holding().
  /// Afterwards holding() is false.
  std::error_code reply(std::int64_t status, const void* hdr = nullptr, std::size_t len = 0) noexcept {
    std::size_t n = 0;
    if (len > 0 && buf_.reply_header_len > 0) {
      if (!begin_copy()) return drop();
      n = std::min(len, buf_.reply_header_len);
      const std::error_code ec = copy(buf_.reply_header, hdr, n);
      if (!end_copy()) return drop();
      if (ec) return complete_reply(0, ec.value(), 0);
    }
    return complete_reply(status, 0, n);
  }

  /// MsgError: completes the send with error `ec` (must be non-zero). Same returns as reply().
  std::error_code reply_error(std::error_code ec) noexcept { return complete_reply(0, ec ? ec.value() : EIO, 0); }

 private:
  friend class channel;
  using message = detail::channel_message;

  // The adaptive receiver spin (channel_options::receiver_spin_max): a running average of recent
  // waits for a next message; the spin is twice that, within [receiver_spin, receiver_spin_max].
  void note_wait(std::chrono::steady_clock::duration d) noexcept {
    const std::int64_t w = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    recent_wait_ns_ = recent_wait_ns_ < 0 ? w : (recent_wait_ns_ + w) / 2;
  }
  [[nodiscard]] std::chrono::nanoseconds spin_budget() const noexcept {
    const channel_options& o = ch_->opts_;
    if (o.receiver_spin_max <= o.receiver_spin || recent_wait_ns_ < 0 ||
        recent_wait_ns_ > o.receiver_spin_max.count())
      return o.receiver_spin;
    return std::clamp(std::chrono::nanoseconds(2 * recent_wait_ns_), o.receiver_spin, o.receiver_spin_max);
  }

  // ---- buffers in another OS process (send_buffers::remote_pid) --------------------------------------
  std::error_code stage(std::size_t n) noexcept {
    try {
      if (stage_.size() < n) stage_.resize(n);
    } catch (const std::bad_alloc&) {
      return std::error_code(ENOMEM, std::generic_category());
    }
    return {};
  }
  // process_vm_readv (payload, or with to_payload false the reply buffer) / process_vm_writev of `n`
  // bytes at offset `off` of the remote buffer. Any failure (a bad address, the process gone: ESRCH,
  // not allowed: EPERM) or a short transfer is EFAULT for this message.
  // *copied (if given): the bytes transferred front to back before a failure.
  std::error_code remote_copy(bool write, std::size_t off, void* local, std::size_t n, bool to_payload = false,
                              std::size_t* copied = nullptr) noexcept {
    if (copied != nullptr) *copied = 0;
    if (n == 0) return {};
    const auto base = reinterpret_cast<std::uintptr_t>(to_payload ? buf_.payload : static_cast<const void*>(buf_.reply_data));
    struct ::iovec l{local, n};
    struct ::iovec r{reinterpret_cast<void*>(base + off), n};
    std::size_t done = 0;
    int fault_ins = 0;
    const std::size_t chunk = buf_.remote_chunk != 0 ? buf_.remote_chunk : n;
    while (done < n) {  // the kernel may transfer less than asked (a partly bad range: the rest faults)
      const std::size_t step = std::min(n - done, chunk);
      l = {static_cast<char*>(local) + done, step};
      r = {reinterpret_cast<void*>(base + off + done), step};
      const ssize_t k = write ? ::process_vm_writev(buf_.remote_pid, &l, 1, &r, 1, 0)
                              : ::process_vm_readv(buf_.remote_pid, &l, 1, &r, 1, 0);
      if (buf_.remote_progress != nullptr) buf_.remote_progress->fetch_add(1, std::memory_order_relaxed);
      if (k <= 0 && errno == EFAULT && buf_.remote_fault_in != nullptr && fault_ins++ < 8 &&
          !buf_.remote_fault_in(buf_.remote_fault_in_ctx, base + off + done, n - done))
        continue;  // made present by the process's pager: retry
      if (k <= 0) return std::error_code(EFAULT, std::generic_category());
      done += static_cast<std::size_t>(k);
      if (copied != nullptr) *copied = done;
    }
    return {};
  }
  std::error_code remote_read_payload(std::size_t off, void* dst, std::size_t len, std::size_t* copied) noexcept {
    const std::size_t n = off >= buf_.payload_len ? 0 : std::min(len, buf_.payload_len - off);
    if (!begin_copy()) return std::error_code(ECANCELED, std::generic_category());
    std::size_t done = 0;
    const std::error_code ec = remote_copy(false, off, dst, n, true, &done);
    if (!end_copy()) return std::error_code(ECANCELED, std::generic_category());
    if (copied) *copied = ec ? done : n;  // EFAULT: the bytes before the first unreadable one
    return ec;
  }
  std::error_code remote_write_reply_data(std::size_t off, const void* src, std::size_t len,
                                         std::size_t* copied = nullptr) noexcept {
    if (copied != nullptr) *copied = 0;
    const std::size_t cap = buf_.reply_data_len;
    if (off > cap || len > cap - off) return std::error_code(EMSGSIZE, std::generic_category());
    if (!begin_copy()) return std::error_code(ECANCELED, std::generic_category());
    const std::error_code ec = remote_copy(true, off, const_cast<void*>(src), len, false, copied);
    if (!end_copy()) {
      if (copied != nullptr) *copied = 0;
      return std::error_code(ECANCELED, std::generic_category());
    }
    return ec;
  }

  std::error_code copy(void* dst, const void* src, std::size_t n) noexcept {
    if (n == 0) return {};
    if (ch_->opts_.guard_copies) return detail::guarded_memcpy(dst, src, n);
    std::memcpy(dst, src, n);
    return {};
  }

  // (7) acq_rel: slot active -> copying. Fails if the sender abandoned the message.
  // Copies nest (with_payload inside with_reply_data): only the outermost one changes the slot.
  bool begin_copy() noexcept {
    if (copy_depth_ > 0) {
      ++copy_depth_;
      return true;
    }
    std::uint64_t s = (seq_ << 8) | detail::slot_active;
    if (!slot_.compare_exchange_strong(s, (seq_ << 8) | detail::slot_copying, std::memory_order_acq_rel)) return false;
    copy_depth_ = 1;
    return true;
  }
  // (8) acq_rel: copying -> active, or -> abandoned if the sender asked meanwhile (then its wait ends).
  bool end_copy() noexcept {
    if (copy_depth_ > 1) {
      --copy_depth_;
      return true;
    }
    copy_depth_ = 0;
    std::uint64_t s = slot_.load(std::memory_order_acquire);
    for (;;) {
      const bool cancel = (s & detail::slot_cancel_req) != 0;
      const std::uint64_t next = (seq_ << 8) | (cancel ? detail::slot_abandoned : detail::slot_active);
      if (slot_.compare_exchange_weak(s, next, std::memory_order_acq_rel)) {
        if (!cancel) return true;
        // The sender waits in abandon() for this acknowledgement; m is alive until the exchange.
        const std::uint32_t old = msg_->state.exchange(detail::msg_dropped, std::memory_order_acq_rel);
        detail::wake_if_sleeping<platform>(msg_->state, old, detail::msg_sleeping);
        return false;
      }
    }
  }
  void release_slot() noexcept {
    msg_ = nullptr;
    slot_.store((seq_ << 8) | detail::slot_free, std::memory_order_release);
    sender_.store(0, std::memory_order_relaxed);
    activity_.store(0, std::memory_order_relaxed);
  }
  std::error_code drop() noexcept {
    release_slot();
    return std::error_code(ECANCELED, std::generic_category());
  }
  std::error_code complete_reply(std::int64_t status, int err, std::size_t n) noexcept {
    std::uint64_t s = (seq_ << 8) | detail::slot_active;
    // (9) acq_rel: active -> free; from now on the sender waits for msg_done instead of abandoning.
    if (!slot_.compare_exchange_strong(s, (seq_ << 8) | detail::slot_free, std::memory_order_acq_rel)) return drop();
    message* m = msg_;
    msg_ = nullptr;
    sender_.store(0, std::memory_order_relaxed);
    activity_.store(0, std::memory_order_relaxed);
    // Same-CPU rule: the sender queued from the CPU this thread runs on, so it is (or, woken, will
    // most likely be) runnable right here: waiting on this core for our next message would only keep
    // it off the core. Park at once instead.
    const bool same_cpu = m->sender_cpu >= 0 && m->sender_cpu == ::sched_getcpu();
    (void)channel::complete(*m, status, err, n);  // m may be gone after this
    yield_to_sender_ = same_cpu;
    return {};
  }

  channel* ch_;
  message* msg_ = nullptr;
  std::uint64_t seq_ = 0;
  std::atomic<std::uint64_t> slot_{detail::slot_free};
  std::atomic<std::uint32_t> thread_{0};
  std::atomic<std::uint32_t> sender_{0};
  std::atomic<activity_id> activity_{0};
  std::atomic<std::uint32_t> type_{0};
  clockid_t cpu_clock_ = 0;        // this receiver's current thread's CPU clock (set by receive())
  bool cpu_clock_valid_ = false;
  bool yield_to_sender_ = false;   // the next receive() parks without spinning (same-CPU rule, complete_reply())
  std::int64_t recent_wait_ns_ = -1;  // running average of waits for a next message (-1: none yet)
  bool in_use_ = false;  // guarded by channel::mu_
  unsigned copy_depth_ = 0;
  std::size_t header_len_ = 0;
  send_buffers buf_;  // copy of the held message's buffers (the message itself may die on abandon)
  message direct_;    // the message receive_direct() holds (no sender waits on it)
  std::size_t reply_high_ = 0;  // see reply_data_high()
  std::vector<unsigned char> stage_;  // with_payload/with_reply_data of buffers in another process
  alignas(std::max_align_t) unsigned char header_[max_header];
};

inline std::uint32_t channel::receiver_thread(const receiver& r) noexcept {
  return r.in_use_ ? r.thread_.load(std::memory_order_relaxed) : 0;
}

inline channel::receiver& channel::attach() {
  exclusive_guard g(mu_);
  for (receiver& r : receivers_) {
    if (!r.in_use_) {
      r.in_use_ = true;
      return r;
    }
  }
  receiver& r = receivers_.emplace_back(*this);
  r.in_use_ = true;
  return r;
}

inline void channel::detach(receiver& r) noexcept {
  if (r.holding()) (void)r.reply_error(std::error_code(EIO, std::generic_category()));
  {
    exclusive_guard g(mu_);
    r.in_use_ = false;
    r.thread_.store(0, std::memory_order_relaxed);
  }
  wait_graph::note_change();  // a server thread left: senders waiting on the channel may now be stuck
}

inline std::vector<serving_entry> channel::snapshot() const {
  std::vector<serving_entry> out;
  exclusive_guard g(mu_);
  for (const receiver& r : receivers_) {
    const std::uint32_t sender = r.sender_.load(std::memory_order_relaxed);
    if (sender != 0)
      out.push_back({r.thread_.load(std::memory_order_relaxed), sender, r.activity_.load(std::memory_order_relaxed),
                     r.type_.load(std::memory_order_relaxed)});
  }
  return out;
}

inline send_result channel::abandon(message& m, int why) noexcept {
  send_result gave_up;
  gave_up.error = std::error_code(why, std::generic_category());
  {
    exclusive_guard g(mu_);
    if ((m.state.load(std::memory_order_acquire) & detail::msg_phase_mask) == detail::msg_queued) {
      queue_.erase(queue_.iterator_to(m));
      return gave_up;
    }
  }
  // Received (slot/seq visible: written under mu_ before (2)) or already done.
  auto* r = static_cast<receiver*>(m.slot);
  for (;;) {
    const std::uint32_t s = m.state.load(std::memory_order_acquire);  // (5)
    const std::uint32_t phase = s & detail::msg_phase_mask;
    if (phase == detail::msg_done) return result_of(m);  // the reply won the race
    if (phase == detail::msg_dropped) return gave_up;
    std::uint64_t ss = r->slot_.load(std::memory_order_acquire);
    if ((ss >> 8) != m.seq || (ss & detail::slot_state_mask) == detail::slot_free) {
      // The server is completing the send right now: msg_done follows at once.
      await_phase(m, 1u << detail::msg_done, false, std::chrono::steady_clock::time_point::max());
      return result_of(m);
    }
    const std::uint64_t st = ss & detail::slot_state_mask;
    if (st == detail::slot_active) {
      // (7') acq_rel: the server's next begin_copy()/complete_reply() fails; it never touches m again.
      if (r->slot_.compare_exchange_strong(ss, (m.seq << 8) | detail::slot_abandoned, std::memory_order_acq_rel))
        return gave_up;
      continue;
    }
    if (st == detail::slot_copying && !(ss & detail::slot_cancel_req)) {
      if (!r->slot_.compare_exchange_strong(ss, ss | detail::slot_cancel_req, std::memory_order_acq_rel)) continue;
    }
    // A copy is running on our buffers: wait for end_copy() to acknowledge (msg_dropped).
    await_phase(m, (1u << detail::msg_dropped) | (1u << detail::msg_done), false,
                std::chrono::steady_clock::time_point::max());
  }
}

}  // namespace faultsafe
