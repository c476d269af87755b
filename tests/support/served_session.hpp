// Test support for tests with a client OS process whose mappings are served by
// the pager of a server process (vm/served_memory.hpp, aspace(adopt_userfaultfd)): the session's
// protocol over a wire_pair (fdpass.hpp): the client sends `served_hello` with its userfaultfd and
// features, the server adopts it (aspace + pager) and answers `served_file` with the file's memfd; the
// client maps and sends `served_track` {addr, length, shared}, the server tracks it and answers
// `served_ack` {errno}; `served_done` ends the session. Callers use op codes from served_user up for
// their own messages.
#pragma once

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include <faultsafe/vm/aspace.hpp>
#include <faultsafe/vm/pager.hpp>
#include <faultsafe/vm/served_memory.hpp>

#include "fdpass.hpp"

namespace test_support {

using namespace faultsafe;

enum served_op : std::uint32_t { served_hello = 1, served_file, served_track, served_ack, served_done, served_user = 16 };

// The server's half of one connection: adopts the client's userfaultfd (hello), sends the file's memfd,
// tracks the mappings the client announces.
struct server_side {
  server_side(int sock, int memfd, page_source& src, pager_options po = {}, aspace_options ao = {.single_lock = false, .name = "Bob"})
      : sock(sock), memfd(memfd), src(src), po(po), ao(ao) {}
  // Handles one message: the session's own (hello, track), or another one, left in `last` for the
  // caller. Returns: false when the peer is gone or sent served_done.
  bool step(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    wire_msg m;
    int fd = -1;
    if (!wire_recv(sock, m, &fd, limit)) return false;
    if (m.op == served_hello) {
      as = std::make_unique<aspace>(adopt_userfaultfd, fd, m.a, ao);
      pg = std::make_unique<pager>(*as, po);
      return wire_send(sock, wire_msg{served_file, 0, 0, 0}, memfd);
    }
    if (m.op == served_track) {
      tracked_mapping t;
      t.addr = reinterpret_cast<void*>(m.a);
      t.length = m.b;
      t.prot = PROT_READ | PROT_WRITE;
      t.shared = m.c != 0;
      t.file = file_backing{memfd, 0, this, &src};
      const auto ec = as->try_track(t);
      return wire_send(sock, wire_msg{served_ack, static_cast<std::uint64_t>(ec.value()), 0, 0});
    }
    last = m;
    return m.op != served_done;
  }
  int sock;
  int memfd;
  page_source& src;
  pager_options po;
  aspace_options ao;  // single_lock: the seed's QNX behaviour, one lock for the whole client address space
  std::unique_ptr<aspace> as;
  std::unique_ptr<pager> pg;
  wire_msg last;
};

// The client's half: its served_memory, handed to the server; maps and has the server track.
struct client_side {
  client_side(int sock, pid_t server, bool kernel_faults) : sock(sock), sm(served_memory_options{kernel_faults}) {
    ok = !sm.watch_server(server) && wire_send(sock, wire_msg{served_hello, sm.features(), 0, 0}, sm.userfaultfd());
    wire_msg m;
    ok = ok && wire_recv(sock, m, &memfd) && m.op == served_file && memfd >= 0;
  }
  std::uint8_t* map(bool shared, std::size_t len) {
    void* p = nullptr;
    if (sm.map(served_map_request{len, PROT_READ | PROT_WRITE, shared, memfd, 0}, p)) return nullptr;
    wire_msg m;
    if (!wire_send(sock, wire_msg{served_track, reinterpret_cast<std::uint64_t>(p), len, shared ? 1u : 0u}) ||
        !wire_recv(sock, m) || m.op != served_ack || m.a != 0)
      return nullptr;
    return static_cast<std::uint8_t*>(p);
  }
  int sock;
  served_memory sm;
  int memfd = -1;
  bool ok = false;
};

}  // namespace test_support
