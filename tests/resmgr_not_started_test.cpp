// A send to a server that was never started (or whose threads are gone) fails at once with ENXIO
// instead of blocking for ever (issue 17): the server's channel requires a server thread
// (channel_options::require_server). Every case runs under a watchdog that fails the test if a call
// blocks.
#include <doctest/doctest.h>
#include <faultsafe/resmgr/iofunc.hpp>
#include <faultsafe/resmgr/process.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "resmgr_test_util.hpp"

using namespace std::chrono_literals;
using namespace faultsafe;

namespace {
io_funcs plain_funcs() {
  io_funcs f;
  f.open = [](request_context&, const io_open_request&, std::string_view, std::shared_ptr<ocb_base>& out) {
    out = std::make_shared<ocb_base>();
    return io_result::ok();
  };
  return f;
}
}  // namespace

TEST_CASE("a server that was never started: open fails at once with ENXIO; after start() it works") {
  faultsafe_test::watchdog wd("open on a server never started", 20s);
  path_namespace ns;
  server srv({.name = "idle", .ns = &ns}, plain_funcs());
  REQUIRE(!srv.attach("/idle"));
  process bob("bob", {}, &ns);
  auto fd = bob.open("/idle/x", O_RDONLY);
  REQUIRE_FALSE(fd.ok());
  CHECK(fd.error() == std::errc::no_such_device_or_address);
  CHECK(srv.chan()->queued() == 0);  // nothing left behind in the queue
  srv.start();
  auto fd2 = bob.open("/idle/x", O_RDONLY);
  REQUIRE(fd2.ok());
  (void)bob.close(*fd2);
}

TEST_CASE("a stopped server still answers ESHUTDOWN (not ENXIO)") {
  faultsafe_test::watchdog wd("open on a stopped server", 20s);
  path_namespace ns;
  server srv({.name = "gone", .ns = &ns}, plain_funcs());
  REQUIRE(!srv.attach("/gone"));
  srv.start();
  process bob("bob", {}, &ns);
  auto fd = bob.open("/gone/x", O_RDONLY);
  REQUIRE(fd.ok());
  srv.stop();
  char c;
  auto r = bob.read(*fd, &c, 1);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().value() == ESHUTDOWN);
}

TEST_CASE("channel with require_server: sends fail at once while none serves; a queued send fails when the last leaves") {
  faultsafe_test::watchdog wd("require_server channel", 20s);
  channel_options o;
  o.name = "needs-server";
  o.require_server = true;
  channel ch(o);
  send_result r = ch.send({1});
  CHECK(r.error == std::errc::no_such_device_or_address);
  CHECK(ch.servers() == 0);

  // A server announced but not receiving yet: the send queues and waits; when the server leaves
  // without receiving it, the send fails with ENXIO.
  ch.add_server();
  CHECK(ch.servers() == 1);
  std::thread sender([&] { r = ch.send({2}); });
  while (ch.queued() == 0) std::this_thread::sleep_for(1ms);
  ch.remove_server();
  sender.join();
  CHECK(r.error == std::errc::no_such_device_or_address);
  CHECK(ch.queued() == 0);

  // A bare channel (default options) still lets a send wait for a receiver that attaches later.
  channel bare;
  std::thread late([&] {
    std::this_thread::sleep_for(20ms);
    auto& rcv = bare.attach();
    REQUIRE(!rcv.receive());
    (void)rcv.reply(7);
    bare.detach(rcv);
  });
  send_result br = bare.send({3});
  late.join();
  CHECK_FALSE(br.error);
  CHECK(br.status == 7);
}
