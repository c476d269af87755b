// Test support for tests with real OS processes: a socketpair carrying fixed-size messages and file
// descriptors (SCM_RIGHTS), and a bounded wait for a child process. Every receive has a limit (poll), so
// a lost peer fails the test instead of hanging it.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include <faultsafe/ipc/socket_transport.hpp>

namespace test_support {

/// One message between the processes of a test: an op code and three words, maybe with an fd.
struct wire_msg {
  std::uint32_t op = 0;
  std::uint64_t a = 0, b = 0, c = 0;
};

/// A connected AF_UNIX SOCK_SEQPACKET pair; after fork() each side closes the other's end.
struct wire_pair {
  wire_pair() {
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) fds[0] = fds[1] = -1;
  }
  ~wire_pair() {
    for (int f : fds)
      if (f >= 0) ::close(f);
  }
  /// Keeps end `side` (0 or 1) and closes the other.
  int keep(int side) {
    ::close(fds[1 - side]);
    fds[1 - side] = -1;
    return fds[side];
  }
  int fds[2] = {-1, -1};
};

/// Sends `m` and, if fd >= 0, a duplicate of fd. Returns: whether it was sent.
inline bool wire_send(int sock, const wire_msg& m, int fd = -1) {
  if (fd >= 0) return !faultsafe::detail::sock::send_with_fd(sock, &m, sizeof m, fd);
  ssize_t n;
  while ((n = ::send(sock, &m, sizeof m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return n == static_cast<ssize_t>(sizeof m);
}

/// Receives one message within `limit` (fd: the one it carried, else -1). Returns: whether one came
/// (false on timeout, peer gone or error).
inline bool wire_recv(int sock, wire_msg& m, int* fd = nullptr, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  if (fd != nullptr) *fd = -1;
  pollfd p{sock, POLLIN, 0};
  int r;
  while ((r = ::poll(&p, 1, static_cast<int>(limit.count()))) < 0 && errno == EINTR) {
  }
  if (r <= 0) return false;
  msghdr h{};
  iovec iov{&m, sizeof m};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  h.msg_control = ctl;
  h.msg_controllen = sizeof ctl;
  ssize_t n;
  while ((n = ::recvmsg(sock, &h, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof m)) return false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int got = -1;
      std::memcpy(&got, CMSG_DATA(c), sizeof got);
      if (fd != nullptr) *fd = got;
      else ::close(got);
    }
  return true;
}

/// Waits up to `limit` for child `pid`; kills it (SIGKILL) and reaps it if it has not exited by then.
/// Returns: its wait status, and in `timed_out` whether it had to be killed.
inline int wait_child(pid_t pid, bool& timed_out, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) return status;
    if (w < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  timed_out = true;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace test_support
