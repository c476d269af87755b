// faultsafe/ipc/socket_transport.hpp: channels between OS processes: a Unix socket to connect and to
// learn who the peer is, and a shared-memory channel per connection for the messages.
//
// Defines `socket_peer`, `socket_listener_options`, `socket_listener_hooks`, `socket_listener` (the
// server side: listens, accepts, serves each connection's messages with receiver::receive_direct())
// and `connect_channel()` (the client side: a `channel` whose sends go to the listener, see
// channel_transport in ipc/channel.hpp). Descriptors beside the messages: the listener sends one to a
// client on the connection's socket (send_fd(); the client takes it with client_receive_fd()) and
// takes one from the client's process (take_fd(): pidfd_getfd, the permission process_vm_writev into
// it needs anyway); server_pid() names the serving process (resmgr/remote.hpp's served mappings).
//
// Addresses: "@name" is `name` in the abstract namespace (no file; gone with the listener); anything
// else is a filesystem path (bound by the listener, unlinked again by it; an existing socket file at
// that path is replaced). At most 107 bytes.
//
// Connection. The client connects a SOCK_SEQPACKET socket; the listener reads the client's identity
// from the kernel (SO_PEERCRED: pid, uid, gid; nothing the client says about itself is believed),
// opens a pidfd of it (pidfd_open), creates a memfd (sealed against shrinking and growing, so the
// client cannot make the server's accesses fault), maps it, and passes it with SCM_RIGHTS. The memfd
// holds `slots` message slots; each has a state word, the request and reply headers, and a data area.
// One server thread per slot serves it (threads started at accept).
//
// A send. The client takes a free slot, writes the type, the header and, for buffers up to
// `inline_max` bytes, the payload into the slot's data area, then switches the state word to
// "request" with one exchange and wakes the slot's thread if it parks. The server thread copies the
// header into its own memory (the client cannot change it after the check), lets the hook rewrite it
// (the credentials: resmgr/remote.hpp), and serves the message with receive_direct(): small buffers
// point into the slot, larger ones are addresses in the client, copied in place with
// process_vm_readv / process_vm_writev (MsgRead/MsgWrite across processes; a bad address is EFAULT
// for that message). It writes the status, error, reply header and how much reply data it wrote, and
// switches the word to "done". The client copies the small reply data out and frees the slot (a
// bad page in the reply buffer gives the short count it gives in-process: a read() probes its buffer
// and goes by address, a pread stops its copy-out there: send_buffers::reply_prefix_counts). Both
// sides wait with the channel's spin-then-park hand-off (ipc/detail/hand_off.hpp) on the state
// word, with SHARED futexes (the word is in the memfd). A long process_vm copy goes in pieces
// (socket_listener_options::progress_chunk) and the server bumps the slot's progress word after
// each; a client whose request is taken keeps spinning while that word moves (connect_options::
// progress_window, bounded by serving_spin_max), so the end of a 1 MiB reply needs no wake-up.
// Same-CPU rule (as the in-process channel's): each side notes its CPU in the slot (client_cpu at
// send, server_cpu at take); a client whose slot thread last ran on its own CPU, and a slot thread
// whose client sent from its own CPU, park at once instead of spinning: the other side needs that core.
//
// Death. A client that dies closes its socket (also when killed with SIGKILL in the middle of a
// request): the listener's monitor thread sees the hang-up (or the pidfd turn readable: the process
// exited although a child inherited the socket) at once, marks the connection dead and wakes its
// threads; a message being served is served to the end (its copies into the dead process fail with
// EFAULT), then the `gone` hook runs once (resmgr/remote.hpp closes every open the client held).
// Other connections are not affected. A server that dies (or stops, or closes the connection) makes
// the client's sends fail with ESHUTDOWN: a parked client re-checks its socket for the hang-up every
// `hangup_check` (default 20 ms), so no client waits for ever on a slot nobody will answer.
// A forked child does not inherit the slots (MADV_DONTFORK): it must connect again.
//
// Errors (client sends, besides channel::send()'s checks): ESHUTDOWN (the server is gone or the
// connection was stopped), ETIMEDOUT / ECANCELED (the deadline or the stop token, only while the
// request is not yet taken by the server: once taken, the send waits for its reply, since the server
// may be copying into the caller's buffers), EMSGSIZE (a reply header above channel::max_header),
// EFAULT (a bad buffer of the caller, or a bad address met by the server). connect_channel():
// the socket's errno (ENOENT, ECONNREFUSED, ...), EPROTO for a peer that is not a listener.
//
// Thread-safety: a client channel's send() from any number of threads (one slot each; more wait for a
// free slot); socket_listener members from any thread. Lock order: the listener's connection table is
// a leaf mutex, never held while serving or waiting. Lifetime: the listener must outlive nothing of
// the clients; its destructor stops it (every connection is closed, its threads joined, its `gone`
// hook run). The target channel must outlive the listener.
// Memory ordering: (1) the client's exchange to "request" is release and pairs with the server's
// acquire loads (11): the header and inline payload are visible. (12) the server's exchange to "done"
// is release and pairs with the client's acquire loads (2): status, reply header and inline reply
// data are visible. Each waiting side's park uses the hand-off's own orderings.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "../activity/activity.hpp"
#include "../detail/guarded_copy.hpp"
#include "../detail/thread_record.hpp"
#include "../order/ranked_mutex.hpp"
#include "channel.hpp"
#include "detail/hand_off.hpp"

namespace faultsafe {

/// Most supplementary groups a connection's peer is known by (the first ones the kernel lists).
inline constexpr std::size_t socket_peer_max_groups = 16;

/// Who is on the other end of a connection, as the kernel says (SO_PEERCRED and SO_PEERGROUPS at
/// connect: the peer's credentials when it called connect(); later setuid/setgroups do not change them).
struct socket_peer {
  std::uint64_t id = 0;  ///< this listener's connection number (1, 2, ...)
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  /// Supplementary groups: groups[0, ngroups), the first socket_peer_max_groups the kernel reported
  /// (none when the kernel lacks SO_PEERGROUPS, before Linux 4.13).
  std::uint32_t ngroups = 0;
  gid_t groups[socket_peer_max_groups] = {};
};

struct socket_listener_options {
  /// "@name" (abstract namespace) or a filesystem path.
  std::string address;
  /// Message slots per connection: how many of a client's threads may have a message in flight at
  /// once (one server thread each). 1..64.
  unsigned slots = 4;
  /// Buffers up to this many bytes go through the slot's shared memory (each slot holds 2 x
  /// inline_max: 128 KiB of a connection's memfd with the defaults, resident only once used); larger
  /// ones are copied in place with process_vm_readv/writev. The default comes from bench_remote's
  /// round trips (README, "Across processes"): through the slot 0.15-0.46x the time of
  /// process_vm_writev at 1-64 KiB on a quiet machine and 0.22-0.85x with a build on both cores
  /// (0.20-0.81x when the client then reads what it got), 2026-12-04; 16 KiB bounds the memory a
  /// connection pins.
  std::size_t inline_max = 16 * 1024;
  /// How long an idle slot thread spins for the next request before parking (past 2 us the spin
  /// yields the core every ~1 us: the other side may be waiting for it).
  std::chrono::nanoseconds spin = std::chrono::microseconds(20);
  /// A process_vm_readv/writev moves at most this many bytes at a time, and the slot's progress word
  /// is incremented after each: the client sees a long copy advance and keeps spinning instead of
  /// parking (connect_options::progress_window). 0: one call for the whole buffer, no progress marks.
  /// The default is about 25 us of copying at the ~10 GB/s process_vm_writev moves here, and costs no
  /// measurable throughput against one call for 1 MiB (bench_remote's BM_ProcessVmWritev rows).
  std::size_t progress_chunk = 256 * 1024;
  /// Thread names: "<name>/<connection>.<slot>".
  std::string name = "socket";
};

/// What the listener asks its owner (all optional but `serve`). Called on slot threads, except
/// `gone`, which runs on the last slot thread of a dead connection.
struct socket_listener_hooks {
  /// Before a message is served: may rewrite its header (in server memory); a non-empty result fails
  /// the message with that error without serving it.
  std::function<std::error_code(const socket_peer&, std::uint32_t type, unsigned char* header, std::size_t len)> stamp;
  /// A copy into or out of the peer failed with EFAULT at [addr, addr + len) (send_buffers::
  /// remote_fault_in): make it present and return {} to have the copy retried. Called on the slot
  /// thread serving the message, with the handler's locks held.
  std::function<std::error_code(const socket_peer&, std::uintptr_t addr, std::size_t len)> fault_in;
  /// Serves the message `r` holds (r.receive_direct() done; reply or fail it).
  std::function<void(const socket_peer&, channel::receiver& r)> serve;
  /// After a message was served, with its outcome.
  std::function<void(const socket_peer&, std::uint32_t type, const unsigned char* header, std::size_t len, const send_result&)> served;
  /// The connection is dead and none of its messages is being served any more.
  std::function<void(const socket_peer&)> gone;
};

/// Client-side tuning of connect_channel().
struct connect_options {
  /// How long a sender spins for its reply before parking (politely past 2 us, as the listener's).
  std::chrono::nanoseconds spin = std::chrono::microseconds(20);
  /// Past `spin`, a sender whose request the server has taken keeps spinning (politely: sched_yield()
  /// between rounds) as long as the server's copy into or out of it makes progress (the slot's
  /// progress word moves: socket_listener_options::progress_chunk) at least once every
  /// `progress_window`, up to `serving_spin_max` in all; then it parks. The reply of a long copy
  /// (a 1 MiB read) then finds the sender awake: no futex wake-up, which costs tens of microseconds
  /// from an idle vCPU, on its critical path. A server that blocks, waits for a core or dies shows no
  /// progress: the sender parks at most `progress_window` later. The default window is four pieces of
  /// the default progress_chunk at the measured copy rate. serving_spin_max = 0: no such spin.
  std::chrono::nanoseconds progress_window = std::chrono::microseconds(100);
  std::chrono::nanoseconds serving_spin_max = std::chrono::milliseconds(1);
  /// How often a parked sender checks the socket for the server's hang-up (bounds how late a dead
  /// server is noticed; a live one wakes the sender at once through the futex).
  std::chrono::nanoseconds hangup_check = std::chrono::milliseconds(20);
  /// The longest connect_channel() waits for the listener to accept and send its hello (the
  /// connection's memory): a listener whose backlog is full, or that accepted and never answers, is
  /// ETIMEDOUT after this, not a hang. Generous: a live listener answers at once.
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);
  /// The channel's name (reports, "<server>:<path>" in page sources).
  const char* name = "remote";
};

namespace detail::sock {

inline constexpr std::uint32_t magic = 0x66734332;  // "fsC2"
inline constexpr std::uint32_t st_idle = 0, st_request = 1, st_serving = 2, st_done = 3;
inline constexpr std::uint32_t st_phase = 0xf;
inline constexpr std::uint32_t st_sleeping = 0x10;  // a side parks on the word (hand_off.hpp)
inline constexpr std::uint32_t st_dead = 0x20;      // the connection is dead (set by the listener)
inline constexpr std::uint32_t fl_inline = 1;       // payload and reply data are in the slot's data area

/// The first page of the memfd.
struct conn_header {
  std::uint32_t magic;
  std::uint32_t slots;
  std::uint64_t slot_stride;  // bytes from one slot to the next
  std::uint64_t data_bytes;   // data area per slot
  std::uint64_t inline_max;
};

/// One slot: control block, then `data_bytes` of data area.
struct alignas(64) slot {
  std::atomic<std::uint32_t> state{st_idle};  // the futex word of both sides
  std::uint32_t type;
  std::uint32_t flags;
  std::uint32_t header_len;
  std::uint64_t payload_addr, payload_len;        // client addresses (not inline) or lengths
  std::uint64_t reply_data_addr, reply_data_len;
  std::uint64_t reply_header_len;
  std::int64_t status;
  std::int32_t error;
  /// Incremented by the server after each piece of a process_vm copy (send_buffers::remote_progress):
  /// while it moves, the waiting client keeps spinning (connect_options::progress_window).
  std::atomic<std::uint32_t> progress{0};
  std::uint64_t reply_header_written;
  std::uint64_t reply_data_written;
  /// sched_getcpu() of the client when it sent the request / of the slot thread when it took it
  /// (-1: unknown). Relaxed hints for the same-CPU rule: a side that would wait for the other on its
  /// own CPU parks at once instead of spinning, so the other gets the core.
  std::atomic<std::int32_t> client_cpu{-1};
  std::atomic<std::int32_t> server_cpu{-1};
  alignas(64) unsigned char header[channel::max_header];
  unsigned char reply_header[channel::max_header];
  alignas(64) unsigned char data[1];  // data_bytes long
};

inline constexpr std::size_t page = 4096;
inline std::size_t round_page(std::size_t n) noexcept { return (n + page - 1) & ~(page - 1); }
inline std::size_t slot_stride(std::size_t data_bytes) noexcept { return round_page(offsetof(slot, data) + data_bytes); }
inline slot* slot_at(void* base, std::size_t stride, unsigned i) noexcept {
  return reinterpret_cast<slot*>(static_cast<char*>(base) + page + stride * i);
}

// The spin phase of a wait on a slot word (acquire loads): hand_off.hpp's spin_until for the first
// 2 us, then polite: sched_yield() between rounds, so the other side, if it waits for this very core
// (2 cores, a loaded machine), gets it. Returns the last value read.
template <class Done>
std::uint32_t polite_spin(std::atomic<std::uint32_t>& w, std::chrono::nanoseconds budget, Done done) noexcept {
  const auto first = std::min<std::chrono::nanoseconds>(budget, std::chrono::microseconds(2));
  std::uint32_t v = first.count() > 0 ? spin_until<shared_platform>(w, first, done) : w.load(std::memory_order_acquire);
  if (done(v) || budget <= first) return v;
  const auto end = std::chrono::steady_clock::now() + (budget - first);
  for (;;) {
    ::sched_yield();
    for (int i = 0; i < 32; ++i) {
      v = w.load(std::memory_order_acquire);
      if (done(v)) return v;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= end) return v;
  }
}

inline std::error_code last_error() noexcept { return std::error_code(errno, std::generic_category()); }

// sockaddr_un for "@abstract" or a path; false if too long or empty.
inline bool make_address(std::string_view a, sockaddr_un& sa, socklen_t& len) noexcept {
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (a.empty() || a.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, a.data(), a.size());
  if (a[0] == '@') {
    sa.sun_path[0] = '\0';  // abstract: the name's bytes after the NUL, length counted exactly
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.size());
  } else {
    len = static_cast<socklen_t>(sizeof sa);
  }
  return true;
}

inline int pidfd_open(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// Sends `len` bytes of `data` with a duplicate of `fd` (SCM_RIGHTS) on a connection's socket.
inline std::error_code send_with_fd(int sock, const void* data, std::size_t len, int fd) noexcept {
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{const_cast<void*>(data), len};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  cmsghdr* cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  ssize_t n;
  while ((n = ::sendmsg(sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(len)) return std::error_code(n < 0 ? errno : EPROTO, std::generic_category());
  return {};
}

// Receives up to `len` bytes into `data` and the descriptor passed with them (O_CLOEXEC; -1 if none).
// Returns: recvmsg's result (bytes, 0 at end of file, -1 with errno).
inline ssize_t recv_with_fd(int sock, void* data, std::size_t len, int flags, int& fd) noexcept {
  fd = -1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{data, len};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  ssize_t n;
  while ((n = ::recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  for (cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&m) : nullptr; c != nullptr; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return n;
}

// Whether the socket says the other end is gone (hang-up, error, or end of file).
inline bool hung_up(int fd) noexcept {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
  }
  return false;
}

// The client's side of the connection's first message: the listener's header and the memfd (with
// SCM_RIGHTS) on the connected socket `fd`. EPROTO for anything else (a received fd is closed then).
inline std::error_code receive_hello(int fd, conn_header& h, int& memfd) noexcept {
  const ssize_t n = recv_with_fd(fd, &h, sizeof h, 0, memfd);
  if (n < 0) return last_error();
  if (n != static_cast<ssize_t>(sizeof h) || memfd < 0 || h.magic != magic || h.slots == 0 || h.slots > 64 ||
      h.slot_stride < slot_stride(0) || offsetof(slot, data) + h.data_bytes > h.slot_stride) {
    if (memfd >= 0) ::close(memfd);
    memfd = -1;
    return std::make_error_code(std::errc::protocol_error);
  }
  return {};
}

// The client end: a channel_transport over one connection.
class client_transport final : public channel_transport {
 public:
  client_transport(int fd, void* base, std::size_t size, const conn_header& h, const connect_options& co) noexcept
      : fd_(fd), base_(base), size_(size), slots_(h.slots), stride_(h.slot_stride), data_bytes_(h.data_bytes),
        inline_max_(h.inline_max), spin_(co.spin), hangup_check_(co.hangup_check), progress_window_(co.progress_window),
        serving_spin_max_(co.serving_spin_max) {}
  ~client_transport() override {
    ::munmap(base_, size_);
    ::close(fd_);
  }

  send_result send(const send_buffers& b, const send_options& o) noexcept override {
    send_result r;
    if (b.reply_header_len > channel::max_header) return fail(r, EMSGSIZE);
    if (dead_.load(std::memory_order_acquire)) return fail(r, ESHUTDOWN);
    const int i = take_slot(o);
    if (i < 0) return fail(r, -i);
    slot& s = *slot_at(base_, stride_, static_cast<unsigned>(i));
    r = exchange(s, b, o);
    give_slot(i);
    return r;
  }

  [[nodiscard]] int control_socket() const noexcept override { return fd_; }

  void stop() noexcept override {
    if (!dead_.exchange(true, std::memory_order_acq_rel)) ::shutdown(fd_, SHUT_RDWR);
    detail::futex_wake(&free_word_, INT_MAX);
  }

 private:
  using platform = detail::shared_platform;
  static send_result& fail(send_result& r, int e) noexcept {
    r.error = std::error_code(e, std::generic_category());
    return r;
  }

  // A free slot's index, or -errno. Waits (parks on a private word) while every slot is busy.
  int take_slot(const send_options& o) noexcept {
    for (;;) {
      std::uint64_t m = busy_.load(std::memory_order_relaxed);
      const std::uint64_t all = slots_ >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << slots_) - 1;
      if ((m & all) != all) {
        const int i = __builtin_ctzll(~m & all);
        // acquire: the slot's previous user finished with it (its release in give_slot()).
        if (busy_.compare_exchange_weak(m, m | (std::uint64_t{1} << i), std::memory_order_acquire)) return i;
        continue;
      }
      if (dead_.load(std::memory_order_acquire)) return -ESHUTDOWN;
      if (o.stop.stop_requested()) return -ECANCELED;
      if (std::chrono::steady_clock::now() >= o.deadline) return -ETIMEDOUT;
      const std::uint32_t seen = free_word_.load(std::memory_order_seq_cst);
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      if (busy_.load(std::memory_order_seq_cst) == m)
        (void)detail::futex_wait_until(&free_word_, seen, std::min(o.deadline, std::chrono::steady_clock::now() + hangup_check_));
      waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  void give_slot(int i) noexcept {
    busy_.fetch_and(~(std::uint64_t{1} << i), std::memory_order_seq_cst);  // release: see take_slot()
    if (waiters_.load(std::memory_order_seq_cst) > 0) {
      free_word_.fetch_add(1, std::memory_order_seq_cst);
      detail::futex_wake(&free_word_, 1);
    }
  }

  // One request and its reply on slot `s`.
  send_result exchange(slot& s, const send_buffers& b, const send_options& o) noexcept {
    send_result r;
    bool inl = !b.by_address && b.payload_len <= inline_max_ && b.reply_data_len <= inline_max_ &&
               b.payload_len + b.reply_data_len <= data_bytes_;
    if (b.header_len && detail::guarded_memcpy(s.header, b.header, b.header_len)) return fail(r, EFAULT);
    // A payload that cannot be read here goes by address: the server meets the fault (EFAULT) at the
    // point where it would have met it in-process, after its own checks (EBADF, ...).
    if (inl && b.payload_len && detail::guarded_memcpy(s.data, b.payload, b.payload_len)) inl = false;
    // Likewise a reply buffer with a page that cannot be written, unless a short copy-out is a short
    // count (send_buffers::reply_prefix_counts): the server's own copy then stops there (read(2)'s
    // short count, the file offset moved only by what was copied); a copy out of the slot here would
    // fail the whole reply after the server had acted on all of it.
    if (inl && b.reply_data_len && !b.reply_prefix_counts && !detail::probe_writable(b.reply_data, b.reply_data_len))
      inl = false;
    s.type = b.type;
    s.header_len = static_cast<std::uint32_t>(b.header_len);
    s.flags = inl ? fl_inline : 0;
    s.payload_len = b.payload_len;
    s.reply_data_len = b.reply_data_len;
    s.reply_header_len = b.reply_header_len;
    s.payload_addr = reinterpret_cast<std::uintptr_t>(b.payload);
    s.reply_data_addr = reinterpret_cast<std::uintptr_t>(b.reply_data);
    const int cpu = ::sched_getcpu();  // no system call (rseq / vDSO)
    s.client_cpu.store(cpu, std::memory_order_relaxed);
    // (1) release, pairs with the server's (11): the request is visible.
    const std::uint32_t old = s.state.exchange(st_request, std::memory_order_acq_rel);
    detail::wake_if_sleeping<platform>(s.state, old, st_sleeping);
    // Same-CPU rule: the slot thread last ran on this CPU, so it waits for this core: park at once.
    const std::uint32_t st = await_done(s, o, cpu >= 0 && s.server_cpu.load(std::memory_order_relaxed) == cpu);
    if ((st & st_phase) != st_done) {
      if (st & st_dead) return fail(r, ESHUTDOWN);
      return fail(r, (o.stop.stop_requested()) ? ECANCELED : ETIMEDOUT);  // withdrawn before the server took it
    }
    r.status = s.status;
    if (s.error != 0) return fail(r, s.error > 0 ? s.error : EPROTO);
    const std::size_t hdr = std::min<std::size_t>(s.reply_header_written, b.reply_header_len);
    r.reply_header_len = hdr;
    if (hdr && detail::guarded_memcpy(b.reply_header, s.reply_header, hdr)) return fail(r, EFAULT);
    const std::size_t data = std::min<std::size_t>(s.reply_data_written, b.reply_data_len);
    if (inl && data) {
      std::error_code ec;
      const std::size_t k = detail::guarded_copy_prefix(b.reply_data, s.data + b.payload_len, data, &ec);
      if (ec) {
        if (!b.reply_prefix_counts || k == 0) return fail(r, EFAULT);
        r.status = std::min<std::int64_t>(r.status, static_cast<std::int64_t>(k));
      }
    }
    return r;
  }

  // Waits for "done" (returns it), for the connection's death (st_dead set in the result), or, while
  // the request is not yet taken, for the deadline or the stop token (the request is withdrawn: the
  // result's phase is then idle).
  std::uint32_t await_done(slot& s, const send_options& o, bool park_now) noexcept {
    auto done = [](std::uint32_t v) { return (v & st_phase) == st_done || (v & st_dead); };
    std::uint32_t v = s.state.load(std::memory_order_acquire);  // (2) acquire, pairs with (12)
    if (done(v)) return v;
    if (!park_now) {
      v = polite_spin(s.state, spin_, done);  // its loads are (2)
      if (!done(v) && (v & st_phase) == st_serving) v = serving_spin(s, v, done);
    }
    for (;;) {
      if (done(v)) return v;
      const auto now = std::chrono::steady_clock::now();
      if ((v & st_phase) == st_request && (now >= o.deadline || o.stop.stop_requested())) {
        std::uint32_t want = v;  // withdraw: only while the server has not taken it
        if (s.state.compare_exchange_strong(want, st_idle, std::memory_order_acq_rel)) return st_idle;
        v = want;
        continue;
      }
      if (dead_.load(std::memory_order_acquire) || hung_up(fd_)) {
        dead_.store(true, std::memory_order_release);
        return v | st_dead;
      }
      auto until = now + hangup_check_;
      if ((v & st_phase) == st_request) until = std::min(until, o.deadline);
      detail::park_once<platform>(s.state, v, st_sleeping, until);
      v = s.state.load(std::memory_order_acquire);  // (2)
    }
  }

  // The spin while the server serves this slot's request (connect_options::progress_window): polite
  // rounds as polite_spin()'s, for as long as the progress word moved within progress_window_ and at
  // most serving_spin_max_. Returns the last state read (its loads are (2)).
  template <class Done>
  std::uint32_t serving_spin(slot& s, std::uint32_t v, Done done) noexcept {
    if (serving_spin_max_.count() <= 0 || progress_window_.count() <= 0) return v;
    auto moved = std::chrono::steady_clock::now();  // taken by the server: that counts as progress
    const auto end = moved + serving_spin_max_;
    std::uint32_t seen = s.progress.load(std::memory_order_relaxed);  // a hint: orders nothing
    for (;;) {
      ::sched_yield();
      for (int i = 0; i < 32; ++i) {
        v = s.state.load(std::memory_order_acquire);  // (2)
        if (done(v) || (v & st_phase) != st_serving) return v;
        cpu_relax();
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= end) return v;
      const std::uint32_t p = s.progress.load(std::memory_order_relaxed);
      if (p != seen) {
        seen = p;
        moved = now;
      } else if (now - moved >= progress_window_) {
        return v;
      }
    }
  }

  int fd_;
  void* base_;
  std::size_t size_;
  unsigned slots_;
  std::size_t stride_, data_bytes_, inline_max_;
  std::chrono::nanoseconds spin_, hangup_check_, progress_window_, serving_spin_max_;
  std::atomic<bool> dead_{false};
  std::atomic<std::uint64_t> busy_{0};       // one bit per slot in use
  std::atomic<std::uint32_t> free_word_{0};  // private futex: a slot was given back
  std::atomic<std::uint32_t> waiters_{0};
};

}  // namespace detail::sock

/// Effects: connects to the socket_listener at `address` ("@name" or a path) and returns a channel
/// whose sends go to it (a client's fd table, path namespace and calls work on it unchanged).
/// Returns nullptr and sets `ec` on failure (the socket's errno; EPROTO: not a faultsafe listener; ETIMEDOUT: no
/// hello within co.connect_timeout).
/// Thread-safety: any thread.
[[nodiscard]] inline std::shared_ptr<channel> connect_channel(std::string_view address, std::error_code& ec,
                                                              const connect_options& co = {}) {
  using namespace detail::sock;
  ec.clear();
  sockaddr_un sa{};
  socklen_t len = 0;
  if (!make_address(address, sa, len)) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return nullptr;
  }
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ec = last_error();
    return nullptr;
  }
  auto fail = [&](std::error_code e) -> std::shared_ptr<channel> {
    ec = e;
    ::close(fd);
    return nullptr;
  };
  // The handshake is bounded (connect_options::connect_timeout): AF_UNIX connect() waits for room in
  // the backlog under SO_SNDTIMEO, the hello's recvmsg() under SO_RCVTIMEO; both are cleared after.
  auto set_timeouts = [fd](std::chrono::milliseconds t) {
    const timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>((t.count() % 1000) * 1000)};
    return ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0 &&
           ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0;
  };
  auto timed_out = [](std::error_code e) {
    return e.value() == EAGAIN || e.value() == EWOULDBLOCK || e.value() == EINPROGRESS
               ? std::make_error_code(std::errc::timed_out)
               : e;
  };
  if (co.connect_timeout.count() > 0 && !set_timeouts(co.connect_timeout)) return fail(last_error());
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), len) != 0) return fail(timed_out(last_error()));
  conn_header h{};
  int memfd = -1;
  if (auto e = receive_hello(fd, h, memfd)) return fail(timed_out(e));
  if (co.connect_timeout.count() > 0 && !set_timeouts(std::chrono::milliseconds(0))) {
    const std::error_code e = last_error();
    ::close(memfd);
    return fail(e);
  }
  const std::size_t size = page + h.slot_stride * h.slots;
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  const std::error_code map_ec = base == MAP_FAILED ? last_error() : std::error_code{};
  ::close(memfd);
  if (map_ec) return fail(map_ec);
  (void)::madvise(base, size, MADV_DONTFORK);  // a forked child must connect again
  channel_options o;
  o.name = co.name;
  try {
    auto t = std::make_unique<client_transport>(fd, base, size, h, co);
    return std::make_shared<channel>(std::move(t), o);
  } catch (...) {
    ::munmap(base, size);
    return fail(std::make_error_code(std::errc::not_enough_memory));
  }
}

/// The server side: listens on an address and serves every connection's messages.
class socket_listener {
 public:
  /// Effects: binds and listens on o.address and starts the monitor thread. Messages are served by
  /// receivers attached to `target` (which must outlive the listener) through `hooks.serve`.
  /// Throws: std::system_error (the socket's errno; EINVAL for a bad address or option), std::bad_alloc.
  socket_listener(channel& target, socket_listener_options o, socket_listener_hooks hooks)
      : target_(target), opts_(std::move(o)), hooks_(std::move(hooks)) {
    using namespace detail::sock;
    if (opts_.slots == 0 || opts_.slots > 64 || !hooks_.serve) throw std::system_error(EINVAL, std::generic_category(), "socket_listener options");
    sockaddr_un sa{};
    socklen_t len = 0;
    if (!make_address(opts_.address, sa, len)) throw std::system_error(EINVAL, std::generic_category(), "socket address");
    fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::system_error(last_error(), "socket");
    if (opts_.address[0] != '@') ::unlink(opts_.address.c_str());
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&sa), len) != 0 || ::listen(fd_, 64) != 0) {
      const auto ec = last_error();
      ::close(fd_);
      throw std::system_error(ec, "bind/listen " + opts_.address);
    }
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    ev_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ep_ < 0 || ev_ < 0) {
      const auto ec = last_error();
      close_fds();
      throw std::system_error(ec, "epoll/eventfd");
    }
    add_watch(fd_, nullptr);
    add_watch(ev_, &ev_);
    monitor_ = std::thread([this] { monitor(); });
  }
  ~socket_listener() { stop(); }
  socket_listener(const socket_listener&) = delete;
  socket_listener& operator=(const socket_listener&) = delete;

  /// Effects: stops accepting, closes every connection (their clients' sends fail with ESHUTDOWN),
  /// waits for the messages being served, runs `gone` for each, joins every thread. Idempotent.
  /// Requires: not called from a slot thread.
  void stop() {
    if (stopping_.exchange(true)) {
      if (monitor_.joinable()) monitor_.join();
      return;
    }
    wake_monitor();
    if (monitor_.joinable()) monitor_.join();
    std::vector<std::shared_ptr<conn>> all;
    {
      exclusive_guard g(mu_);
      all.swap(conns_);
    }
    for (auto& c : all) kill(*c);
    for (auto& c : all) join(*c);
    if (!opts_.address.empty() && opts_.address[0] != '@') ::unlink(opts_.address.c_str());
    close_fds();
  }

  /// Effects: sends `fd` (a duplicate, with SCM_RIGHTS) to connection `peer_id` on its socket, with
  /// the 8-byte `tag`; the client takes it with client_receive_fd(). Returns: ENOTCONN (no such live
  /// connection) or sendmsg's errno. Thread-safety: any thread.
  [[nodiscard]] std::error_code send_fd(std::uint64_t peer_id, std::uint64_t tag, int fd) {
    std::shared_ptr<conn> c = find(peer_id);
    if (!c) return std::make_error_code(std::errc::not_connected);
    return detail::sock::send_with_fd(c->fd, &tag, sizeof tag, fd);
  }
  /// Effects: a duplicate of the descriptor `remote_fd` of connection `peer_id`'s process
  /// (pidfd_getfd: the same permission as process_vm_writev into it). Returns: the new fd or -1 with
  /// `ec` set (ENOTCONN, or pidfd_getfd's errno: EBADF, EPERM, ENOSYS).
  [[nodiscard]] int take_fd(std::uint64_t peer_id, int remote_fd, std::error_code& ec) {
    std::shared_ptr<conn> c = find(peer_id);
    if (!c || c->pidfd < 0) {
      ec = std::make_error_code(std::errc::not_connected);
      return -1;
    }
#ifdef SYS_pidfd_getfd
    const int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, c->pidfd, remote_fd, 0));
#else
    errno = ENOSYS;
    const int fd = -1;
#endif
    if (fd < 0) ec = std::error_code(errno, std::generic_category());
    return fd;
  }

  /// Live connections (racy, for tests and reports).
  [[nodiscard]] std::size_t connections() const {
    exclusive_guard g(mu_);
    std::size_t n = 0;
    for (const auto& c : conns_) n += c->dead.load(std::memory_order_relaxed) ? 0 : 1;
    return n;
  }
  /// Connections whose `gone` hook has run since the start (racy, for tests).
  [[nodiscard]] std::uint64_t connections_gone() const noexcept { return gone_count_.load(std::memory_order_acquire); }

  /// Effects: serves the local message `b` as if `peer` had sent it (stamp, serve, served hooks), on
  /// the calling thread with a receiver of the target channel, on behalf of activity `act` (0: a new
  /// one): for cleanup in the `gone` hook, and for the page-ins of the peer's served mappings (on
  /// behalf of the faulting thread's activity, resmgr/remote.hpp).
  send_result serve_local(const socket_peer& peer, const send_buffers& b, activity_id act = 0) {
    unsigned char hdr[channel::max_header];
    if (b.header_len > sizeof hdr) return send_result{0, std::make_error_code(std::errc::message_size), 0};
    std::memcpy(hdr, b.header, b.header_len);
    send_buffers local = b;
    local.header = hdr;  // the stamped copy is what is served
    channel::receiver& r = target_.attach();
    const send_result res = serve_one(peer, r, local, hdr, act != 0 ? act : new_activity());
    target_.detach(r);
    return res;
  }

 private:
  struct conn;
  std::shared_ptr<conn> find(std::uint64_t peer_id) {
    exclusive_guard g(mu_);
    for (const auto& c : conns_)
      if (c->peer.id == peer_id && !c->dead.load(std::memory_order_relaxed)) return c;
    return nullptr;
  }
  struct conn {
    socket_peer peer;
    int fd = -1;
    int pidfd = -1;
    void* base = nullptr;
    std::size_t size = 0;
    std::size_t stride = 0;
    std::size_t data_bytes = 0;
    std::atomic<bool> dead{false};
    std::atomic<unsigned> running{0};
    std::atomic<bool> finished{false};  // `gone` has run
    std::vector<std::thread> threads;
  };

  void add_watch(int fd, void* tag) {
    epoll_event e{};
    e.events = EPOLLIN | EPOLLRDHUP | EPOLLHUP;
    e.data.ptr = tag;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &e) != 0) throw std::system_error(detail::sock::last_error(), "epoll_ctl");
  }
  void wake_monitor() noexcept {
    const std::uint64_t one = 1;
    (void)!::write(ev_, &one, sizeof one);
  }
  void close_fds() noexcept {
    for (int* f : {&fd_, &ep_, &ev_})
      if (*f >= 0) {
        ::close(*f);
        *f = -1;
      }
  }

  // The monitor thread: accepts, watches every connection's socket and pidfd, reaps the finished.
  void monitor() {
    set_this_thread_name(opts_.name + "/monitor");
    epoll_event evs[16];
    while (!stopping_.load(std::memory_order_acquire)) {
      const int n = ::epoll_wait(ep_, evs, 16, -1);
      for (int i = 0; i < n; ++i) {
        void* tag = evs[i].data.ptr;
        if (tag == nullptr) {
          accept_one();
        } else if (tag == &ev_) {
          std::uint64_t v;
          (void)!::read(ev_, &v, sizeof v);
        } else {
          conn* c = static_cast<conn*>(tag);
          (void)::epoll_ctl(ep_, EPOLL_CTL_DEL, c->fd, nullptr);
          if (c->pidfd >= 0) (void)::epoll_ctl(ep_, EPOLL_CTL_DEL, c->pidfd, nullptr);
          kill(*c);
        }
      }
      reap();
    }
  }

  // The peer's supplementary groups as the kernel recorded them at connect (SO_PEERGROUPS): the
  // first socket_peer_max_groups of them. Leaves none if the kernel cannot say.
  static void peer_groups(int cfd, socket_peer& p) {
    std::vector<gid_t> g(64);
    for (int tries = 0; tries < 2; ++tries) {
      socklen_t len = static_cast<socklen_t>(g.size() * sizeof(gid_t));
      if (::getsockopt(cfd, SOL_SOCKET, SO_PEERGROUPS, g.data(), &len) == 0) {
        p.ngroups = static_cast<std::uint32_t>(std::min<std::size_t>(len / sizeof(gid_t), socket_peer_max_groups));
        std::copy_n(g.begin(), p.ngroups, p.groups);
        return;
      }
      if (errno != ERANGE) return;  // ENOPROTOOPT: a kernel before 4.13
      g.resize(len / sizeof(gid_t) + 1);  // `len` now says how much the list needs
    }
  }

  void accept_one() {
    using namespace detail::sock;
    const int cfd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (cfd < 0) return;
    auto c = std::make_shared<conn>();
    c->fd = cfd;
    ucred cr{};
    socklen_t crl = sizeof cr;
    if (::getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) != 0) {
      ::close(cfd);
      return;
    }
    c->peer = {++next_id_, cr.pid, cr.uid, cr.gid};
    peer_groups(cfd, c->peer);
    c->pidfd = pidfd_open(cr.pid);  // -1 on old kernels: the socket's hang-up alone then
    c->data_bytes = std::max<std::size_t>(opts_.inline_max * 2, 4096);
    c->stride = slot_stride(c->data_bytes);
    c->size = page + c->stride * opts_.slots;
    const int memfd = ::memfd_create("faultsafe-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    bool ok = memfd >= 0 && ::ftruncate(memfd, static_cast<off_t>(c->size)) == 0 &&
              ::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0;
    if (ok) {
      c->base = ::mmap(nullptr, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
      ok = c->base != MAP_FAILED;
      if (!ok) c->base = nullptr;
    }
    if (ok) {
      auto* h = static_cast<conn_header*>(c->base);
      *h = conn_header{magic, opts_.slots, c->stride, c->data_bytes, opts_.inline_max};
      for (unsigned i = 0; i < opts_.slots; ++i) new (slot_at(c->base, c->stride, i)) slot{};
    }
    if (!ok) {
      if (memfd >= 0) ::close(memfd);
      return release(*c);
    }
    // The connection is watched, served and findable (find(): send_fd, take_fd) before the client
    // gets its channel: its first request may be an mmap hello whose handler looks it up.
    try {
      add_watch(cfd, c.get());
      if (c->pidfd >= 0) add_watch(c->pidfd, c.get());
      c->running.store(opts_.slots, std::memory_order_relaxed);
      for (unsigned i = 0; i < opts_.slots; ++i) c->threads.emplace_back([this, c, i] { run_slot(*c, i); });
      exclusive_guard g(mu_);
      conns_.push_back(c);
    } catch (...) {
      ::close(memfd);
      kill(*c);
      c->running.store(static_cast<unsigned>(c->threads.size()), std::memory_order_relaxed);
      return join(*c);
    }
    const auto* h = static_cast<const conn_header*>(c->base);
    if (send_with_fd(cfd, h, sizeof *h, memfd)) kill(*c);  // its slot threads leave; reap() joins them
    ::close(memfd);
  }

  // Marks the connection dead and wakes its slot threads (they finish what they serve, then leave).
  static void kill(conn& c) noexcept {
    using namespace detail::sock;
    if (c.dead.exchange(true, std::memory_order_acq_rel)) return;
    if (c.fd >= 0) ::shutdown(c.fd, SHUT_RDWR);  // a live client's parked sends see the hang-up
    if (c.base == nullptr) return;
    const auto* h = static_cast<const conn_header*>(c.base);
    for (unsigned i = 0; i < h->slots; ++i) {
      slot* s = slot_at(c.base, c.stride, i);
      s->state.fetch_or(st_dead, std::memory_order_acq_rel);
      detail::futex_wake(&s->state, INT_MAX, detail::futex_scope::shared);  // always: the client may have cleared bits
    }
  }
  void join(conn& c) {
    for (auto& t : c.threads)
      if (t.joinable()) t.join();
    c.threads.clear();
    release(c);
  }
  static void release(conn& c) noexcept {
    if (c.base) ::munmap(c.base, c.size);
    c.base = nullptr;
    if (c.fd >= 0) ::close(c.fd);
    if (c.pidfd >= 0) ::close(c.pidfd);
    c.fd = c.pidfd = -1;
  }
  // Joins and forgets the connections whose `gone` hook has run.
  void reap() {
    std::vector<std::shared_ptr<conn>> done;
    {
      exclusive_guard g(mu_);
      for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->finished.load(std::memory_order_acquire)) {
          done.push_back(std::move(*it));
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& c : done) join(*c);
  }

  // One slot's server thread.
  void run_slot(conn& c, unsigned i) {
    using namespace detail::sock;
    set_this_thread_name(opts_.name + "/" + std::to_string(c.peer.id) + "." + std::to_string(i));
    slot& s = *slot_at(c.base, c.stride, i);
    channel::receiver& r = target_.attach();
    const activity_id act = new_activity();  // one client thread at a time uses a slot
    fault_in_context fctx{this, &c.peer};
    alignas(std::max_align_t) unsigned char hdr[channel::max_header];
    unsigned char rhdr[channel::max_header];
    auto wanted = [](std::uint32_t v) { return (v & st_phase) == st_request || (v & st_dead); };
    bool park_now = false;  // the same-CPU rule (slot::client_cpu)
    for (;;) {
      std::uint32_t v = s.state.load(std::memory_order_acquire);  // (11) acquire, pairs with the client's (1)
      if (!wanted(v) && !park_now) v = polite_spin(s.state, opts_.spin, wanted);  // its loads are (11)
      while (!wanted(v) && !c.dead.load(std::memory_order_acquire)) {
        // A time limit only as insurance against a client that clears the dead bit: kill() wakes us.
        detail::park_once<detail::shared_platform>(s.state, v, st_sleeping, std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
        v = s.state.load(std::memory_order_acquire);  // (11)
      }
      if ((v & st_dead) || c.dead.load(std::memory_order_acquire)) break;
      // Take it (the client may withdraw it at the same moment: then it is idle again).
      if (!s.state.compare_exchange_strong(v, st_serving | (v & st_sleeping), std::memory_order_acq_rel)) continue;
      const int cpu = ::sched_getcpu();
      s.server_cpu.store(cpu, std::memory_order_relaxed);
      // The client sent from this CPU: once replied to, it needs this core, so do not spin for its next request.
      park_now = cpu >= 0 && s.client_cpu.load(std::memory_order_relaxed) == cpu;
      // Everything the client wrote is read once, into server memory, and checked.
      const std::uint32_t type = s.type;
      const std::size_t hlen = s.header_len, plen = s.payload_len, rlen = s.reply_data_len, rhlen = s.reply_header_len;
      const bool inl = (s.flags & fl_inline) != 0;
      send_result res;
      if (hlen > channel::max_header || rhlen > channel::max_header ||
          (inl && (plen > c.data_bytes || rlen > c.data_bytes - plen))) {
        res.error = std::make_error_code(std::errc::invalid_argument);
      } else {
        std::memcpy(hdr, s.header, hlen);
        send_buffers b;
        b.type = type;
        b.header = hdr;
        b.header_len = hlen;
        b.reply_header = rhdr;
        b.reply_header_len = rhlen;
        b.payload_len = plen;
        b.reply_data_len = rlen;
        if (inl) {
          b.payload = s.data;
          b.reply_data = s.data + plen;
        } else {
          b.payload = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(s.payload_addr));
          b.reply_data = reinterpret_cast<void*>(static_cast<std::uintptr_t>(s.reply_data_addr));
          b.remote_pid = c.peer.pid;
          if (opts_.progress_chunk != 0) {
            b.remote_progress = &s.progress;
            b.remote_chunk = opts_.progress_chunk;
          }
          if (hooks_.fault_in) {
            b.remote_fault_in = &fault_in_thunk;
            b.remote_fault_in_ctx = &fctx;
          }
        }
        res = serve_one(c.peer, r, b, hdr, act);
        if (!res.error) std::memcpy(s.reply_header, rhdr, std::min(res.reply_header_len, rhlen));
      }
      s.status = res.status;
      s.error = res.error ? res.error.value() : 0;
      s.reply_header_written = res.reply_header_len;
      s.reply_data_written = inl ? r.reply_data_high() : 0;
      // (12) release, pairs with the client's (2): the reply is visible.
      const std::uint32_t old = s.state.exchange(st_done, std::memory_order_acq_rel);
      detail::wake_if_sleeping<detail::shared_platform>(s.state, old, st_sleeping);
      if (c.dead.load(std::memory_order_acquire)) s.state.fetch_or(st_dead, std::memory_order_acq_rel);  // kill() raced
    }
    target_.detach(r);
    if (c.running.fetch_sub(1, std::memory_order_acq_rel) == 1) {  // the last slot thread of a dead connection
      if (hooks_.gone) {
        try {
          hooks_.gone(c.peer);
        } catch (...) {
        }
      }
      gone_count_.fetch_add(1, std::memory_order_release);
      c.finished.store(true, std::memory_order_release);
      wake_monitor();
    }
  }

  struct fault_in_context {
    socket_listener* self;
    const socket_peer* peer;
  };
  static std::error_code fault_in_thunk(void* ctx, std::uintptr_t addr, std::size_t len) {
    auto* f = static_cast<fault_in_context*>(ctx);
    try {
      return f->self->hooks_.fault_in(*f->peer, addr, len);
    } catch (...) {
      return std::make_error_code(std::errc::bad_address);
    }
  }

  send_result serve_one(const socket_peer& peer, channel::receiver& r, const send_buffers& b, unsigned char* hdr, activity_id act) {
    send_result res;
    try {
      if (hooks_.stamp) {
        if (auto ec = hooks_.stamp(peer, b.type, hdr, b.header_len)) {
          res.error = ec;
          return res;
        }
      }
    } catch (...) {
      res.error = std::make_error_code(std::errc::io_error);
      return res;
    }
    res = r.serve_direct(b, act, [&](channel::receiver& rr) { hooks_.serve(peer, rr); });
    try {
      if (hooks_.served) hooks_.served(peer, b.type, hdr, b.header_len, res);
    } catch (...) {  // bookkeeping only: the reply stands
    }
    return res;
  }

  channel& target_;
  socket_listener_options opts_;
  socket_listener_hooks hooks_;
  int fd_ = -1, ep_ = -1, ev_ = -1;
  std::uint64_t next_id_ = 0;  // monitor thread only
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> gone_count_{0};
  mutable ranked_mutex<rank::leaf> mu_{"socket connections"};  // leaf: conns_
  std::vector<std::shared_ptr<conn>> conns_ FAULTSAFE_GUARDED_BY(mu_);
  std::thread monitor_;
};

/// Effects: takes the next descriptor a socket_listener sent on channel `ch`'s connection with
/// send_fd(), waiting at most `limit`; `tag` receives its tag. Returns: the fd (O_CLOEXEC) or -1 with
/// `ec`: EINVAL (not a socket channel), ETIMEDOUT, ESHUTDOWN (the server is gone), EPROTO (a message
/// without a descriptor). Thread-safety: one caller per connection at a time (the caller serialises).
[[nodiscard]] inline int client_receive_fd(const channel& ch, std::uint64_t& tag, std::chrono::milliseconds limit,
                                           std::error_code& ec) noexcept {
  const int sock = ch.transport_socket();
  if (sock < 0) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return -1;
  }
  pollfd p{sock, POLLIN, 0};
  int r;
  while ((r = ::poll(&p, 1, static_cast<int>(limit.count()))) < 0 && errno == EINTR) {
  }
  if (r == 0) {
    ec = std::make_error_code(std::errc::timed_out);
    return -1;
  }
  int fd = -1;
  const ssize_t n = detail::sock::recv_with_fd(sock, &tag, sizeof tag, MSG_DONTWAIT, fd);
  if (n <= 0) {
    ec = std::error_code(ESHUTDOWN, std::generic_category());
    return -1;
  }
  if (fd < 0) ec = std::make_error_code(std::errc::protocol_error);
  return fd;
}

/// The pid of the process serving channel `ch` (SO_PEERCRED of its connection), or -1.
[[nodiscard]] inline pid_t server_pid(const channel& ch) noexcept {
  const int sock = ch.transport_socket();
  ucred cr{};
  socklen_t len = sizeof cr;
  if (sock < 0 || ::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) return -1;
  return cr.pid;
}

}  // namespace faultsafe
