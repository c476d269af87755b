// Isolation, limits (issue 7): a client cannot exhaust a server with open handles or outstanding
// requests past the documented limits, nor grow its own fd table without bound:
//   - process::set_max_fds (default 1024): open() beyond fails with EMFILE, locally;
//   - server_options::max_opens_per_client (default 1024): the server refuses more opens from one
//     client process with EMFILE (raw opens that bypass the process fd table included); other
//     clients are unaffected; a close gives the slot back;
//   - channel_options::max_queued (default 1024): sends beyond that many queued, unreceived messages
//     fail at once with EAGAIN; the queued ones are all served, and the server goes on.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include "resmgr_test_util.hpp"

using namespace std::chrono_literals;
using namespace faultsafe;

namespace {
bool is(const std::error_code& ec, int e) { return ec.value() == e && ec.category() == std::generic_category(); }
}  // namespace

TEST_CASE("process fd limit: EMFILE past set_max_fds, and a close frees a slot") {
  faultsafe_test::watchdog wd("fd limit");
  path_namespace ns;
  ramfs fs({.name = "ram", .prefix = "/ram", .ns = &ns});
  process p("p", {1000, 100}, &ns);
  p.set_max_fds(8);
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    auto fd = p.open("/ram/f", O_CREAT | O_RDWR, 0644);
    REQUIRE(fd.ok());
    fds.push_back(*fd);
  }
  CHECK(is(p.open("/ram/f", O_RDONLY).error(), EMFILE));
  CHECK(fs.srv().open_ocbs() == 8u);  // the refused open never reached the server
  CHECK(p.close(fds[3]).ok());
  auto again = p.open("/ram/f", O_RDONLY);
  REQUIRE(again.ok());
  CHECK(*again == fds[3]);
}

TEST_CASE("server per-client open limit: EMFILE for that client only; closes give slots back") {
  faultsafe_test::watchdog wd("server open limit");
  path_namespace ns;
  auto attr = std::make_shared<iofunc_attr>(0666, 0, 0);
  io_funcs f = iofunc_defaults();
  f.open = [&](request_context& ctx, const io_open_request& q, std::string_view, std::shared_ptr<ocb_base>& out) {
    return iofunc_open_default(ctx, q, attr, out);
  };
  server_options o;
  o.name = "limited";
  o.ns = &ns;
  o.max_opens_per_client = 16;
  server srv(o, std::move(f));
  REQUIRE(!srv.attach("/lim"));
  srv.start();
  process greedy("greedy", {1000, 100}, &ns);
  process polite("polite", {1001, 100}, &ns);
  std::vector<int> fds;
  for (int i = 0; i < 16; ++i) fds.push_back(greedy.open("/lim/x", O_RDWR).value());
  CHECK(is(greedy.open("/lim/x", O_RDWR).error(), EMFILE));
  // Raw opens that bypass the fd table are refused too.
  std::error_code ec;
  auto res = ns.resolve("/lim/x", ec);
  REQUIRE(res);
  io_open_request q{greedy.client(), O_RDWR, 0};
  CHECK(is(greedy.send(*res->ch, {static_cast<std::uint32_t>(io_msg::open), &q, sizeof q, "x", 1}).error, EMFILE));
  CHECK(srv.open_ocbs() == 16u);
  // Another client is not affected.
  auto other = polite.open("/lim/x", O_RDONLY);
  CHECK(other.ok());
  CHECK(greedy.close(fds[0]).ok());
  CHECK(greedy.open("/lim/x", O_RDWR).ok());
  CHECK(is(greedy.open("/lim/x", O_RDWR).error(), EMFILE));
  // A failed open gives its reservation back.
  CHECK(is(polite.open("/lim/x", O_ACCMODE).error(), EINVAL));
  for (int i = 0; i < 15; ++i) CHECK(polite.open("/lim/x", O_RDONLY).ok());
  CHECK(is(polite.open("/lim/x", O_RDONLY).error(), EMFILE));
}

TEST_CASE("channel queue limit: EAGAIN past max_queued; everything queued is served") {
  faultsafe_test::watchdog wd("queue limit");
  channel_options co;
  co.max_queued = 4;
  channel ch(co);
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  std::atomic<int> served{0};
  std::thread srv([&] {
    channel::receiver& r = ch.attach();
    {
      std::unique_lock<std::mutex> l(m);
      cv.wait_for(l, 20s, [&] { return go; });
    }
    while (!r.receive()) {
      served.fetch_add(1);
      (void)r.reply(7);
    }
    ch.detach(r);
  });
  // Four senders fill the queue (nobody receives yet).
  std::vector<std::thread> senders;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i)
    senders.emplace_back([&] {
      send_result sr = ch.send({1});
      if (!sr.error && sr.status == 7) ok.fetch_add(1);
    });
  const auto end = std::chrono::steady_clock::now() + 20s;
  while (ch.queued() < 4 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
  REQUIRE(ch.queued() == 4u);
  CHECK(is(ch.send({1}).error, EAGAIN));  // fails at once, never blocks
  {
    std::lock_guard<std::mutex> g(m);
    go = true;
  }
  cv.notify_all();
  for (auto& t : senders) t.join();
  CHECK(ok.load() == 4);
  send_result after = ch.send({1});  // room again
  CHECK(!after.error);
  CHECK(served.load() == 5);
  ch.stop();
  srv.join();
}
