// The channel's spin/park policy for long handlers (what makes Brian's 1 MiB direct read fast):
// channel_options::sender_spin_bytes_per_us / sender_spin_max (the size-aware sender spin, which
// spins only while the serving thread runs) and receiver_spin_max (the adaptive receiver spin), and
// the same-CPU rule. Every guarantee of the plain channel must hold while a sender spins: a long
// handler's sender still times out, is cancelled, gets its reply after parking; queued sends still
// fail on stop(); a blocked server is never spun on; a server sharing one core with its spinning
// client still gets the core. Every test runs under a watchdog; no test asserts a duration, only
// CPU time against a generous bound where a broken policy would burn the whole wait.
#include <doctest/doctest.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include "faultsafe/ipc/channel.hpp"
#include "resmgr_test_util.hpp"

using namespace std::chrono_literals;
using faultsafe::channel;
using faultsafe::channel_options;
using faultsafe::send_buffers;
using faultsafe::send_options;
using faultsafe_test::watchdog;

namespace {

constexpr std::size_t kBig = 1 << 20;

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Burns CPU (stays runnable on a core) until `until` or `stop` is set.
void burn_until(std::chrono::steady_clock::time_point until, const std::atomic<bool>* stop = nullptr) {
  volatile unsigned x = 0;
  while (std::chrono::steady_clock::now() < until && !(stop && stop->load())) x = x + 1;
}

send_buffers big_read(std::vector<unsigned char>& buf) {
  send_buffers b;
  b.type = 1;
  b.reply_data = buf.data();
  b.reply_data_len = buf.size();
  return b;
}

// A spin policy that would spin on forever without its running-server check.
channel_options greedy() {
  channel_options o;
  o.name = "spin";
  o.sender_spin_bytes_per_us = 1;  // 1 MiB: a ~1 s budget
  o.sender_spin_max = 10s;
  return o;
}

}  // namespace

TEST_CASE("spin: a long on-CPU handler's sender gets its reply after spinning and parking") {
  watchdog wd("long handler reply", 30s);
  channel_options o;  // defaults: 1 MiB -> 132 us budget; the handler runs ~20 ms
  channel ch(o);
  std::thread srv([&] {
    auto& r = ch.attach();
    for (int i = 0; i < 3; ++i) {
      if (r.receive()) break;
      burn_until(std::chrono::steady_clock::now() + 20ms);
      REQUIRE_FALSE(r.with_reply_data([&](void* p, std::size_t n) -> std::error_code {
        std::memset(p, 0x5a + i, n);
        return {};
      }));
      REQUIRE_FALSE(r.reply(7 + i));
    }
    ch.detach(r);
  });
  std::vector<unsigned char> buf(kBig);
  for (int i = 0; i < 3; ++i) {
    auto res = ch.send(big_read(buf));
    REQUIRE(res);
    CHECK(res.status == 7 + i);
    CHECK(buf.front() == 0x5a + i);
    CHECK(buf.back() == 0x5a + i);
  }
  ch.stop();
  srv.join();
}

TEST_CASE("spin: the deadline of a send with a large buffer still fires while its handler runs") {
  watchdog wd("deadline under spin", 30s);
  channel ch(greedy());
  std::atomic<bool> sender_returned{false}, handler_done{false};
  std::error_code reply_ec;
  std::thread srv([&] {
    auto& r = ch.attach();
    if (!r.receive()) {
      // Runs on a core until the sender gave up (bounded: 20 s, then the test fails below).
      burn_until(std::chrono::steady_clock::now() + 20s, &sender_returned);
      reply_ec = r.reply(1);
      handler_done = true;
    }
    ch.detach(r);
  });
  std::vector<unsigned char> buf(kBig);
  send_options so;
  so.deadline = std::chrono::steady_clock::now() + 50ms;
  auto res = ch.send(big_read(buf), so);
  const bool handler_was_running = !handler_done.load();
  sender_returned = true;
  srv.join();
  CHECK(res.error == std::errc::timed_out);
  CHECK(handler_was_running);
  CHECK(reply_ec == std::errc::operation_canceled);  // the late reply is dropped
}

TEST_CASE("spin: cancelling a send with a large buffer still works while its handler runs") {
  watchdog wd("cancel under spin", 30s);
  channel ch(greedy());
  std::atomic<bool> received{false}, sender_returned{false};
  std::thread srv([&] {
    auto& r = ch.attach();
    if (!r.receive()) {
      received = true;
      burn_until(std::chrono::steady_clock::now() + 20s, &sender_returned);
      (void)r.reply(1);
    }
    ch.detach(r);
  });
  std::stop_source ss;
  std::thread canceller([&] {
    while (!received.load()) std::this_thread::yield();
    std::this_thread::sleep_for(5ms);
    ss.request_stop();
  });
  std::vector<unsigned char> buf(kBig);
  send_options so;
  so.stop = ss.get_token();
  auto res = ch.send(big_read(buf), so);
  sender_returned = true;
  canceller.join();
  srv.join();
  CHECK(res.error == std::errc::operation_canceled);
}

TEST_CASE("spin: stop() fails queued sends with large buffers while the only server thread is busy") {
  watchdog wd("stop under spin", 30s);
  channel ch(greedy());
  std::atomic<bool> received{false}, release{false};
  std::thread srv([&] {
    auto& r = ch.attach();
    if (!r.receive()) {
      received = true;
      burn_until(std::chrono::steady_clock::now() + 20s, &release);
      (void)r.reply(5);
    }
    ch.detach(r);
  });
  std::vector<unsigned char> b0(kBig), b1(kBig), b2(kBig);
  faultsafe::send_result first;
  std::thread s0([&] { first = ch.send(big_read(b0)); });
  while (!received.load()) std::this_thread::yield();
  std::vector<faultsafe::send_result> queued(2);
  std::thread s1([&] { queued[0] = ch.send(big_read(b1)); });
  std::thread s2([&] { queued[1] = ch.send(big_read(b2)); });
  while (ch.queued() < 2) std::this_thread::yield();
  ch.stop();
  s1.join();
  s2.join();
  CHECK(queued[0].error.value() == ESHUTDOWN);
  CHECK(queued[1].error.value() == ESHUTDOWN);
  release = true;  // the message being served completes normally
  s0.join();
  srv.join();
  REQUIRE(first);
  CHECK(first.status == 5);
}

TEST_CASE("spin: a sender never spins on a server thread that is blocked") {
  // The budget is ~1 s and the cap 10 s: only the running-server check can stop the spin while the
  // handler sleeps 800 ms. A sender that spun would burn up to 800 ms of CPU (less on a loaded
  // machine: the spin yields); a parked one burns only its wait-graph rechecks (every 2 ms: ~10 ms).
  watchdog wd("blocked server", 30s);
  channel ch(greedy());
  std::thread srv([&] {
    auto& r = ch.attach();
    if (!r.receive()) {
      std::this_thread::sleep_for(800ms);
      (void)r.reply(3);
    }
    ch.detach(r);
  });
  std::vector<unsigned char> buf(kBig);
  std::this_thread::sleep_for(50ms);  // let the receiver park: this send then wakes it and spins on
  const double cpu0 = thread_cpu_ms();
  auto res = ch.send(big_read(buf));
  const double cpu = thread_cpu_ms() - cpu0;
  ch.stop();
  srv.join();
  REQUIRE(res);
  CHECK(res.status == 3);
  MESSAGE("sender CPU during an 800 ms blocked handler: " << cpu << " ms");
  CHECK(cpu < 100.0);
}

TEST_CASE("spin: a message still queued (no server thread on it) is never spun on") {
  // The only server thread is busy serving another sender (it was not woken for this message).
  watchdog wd("queued not spun", 30s);
  channel ch(greedy());
  std::atomic<bool> received{false}, release{false};
  std::thread srv([&] {
    auto& r = ch.attach();
    for (int i = 0; i < 2; ++i) {
      if (r.receive()) break;
      if (i == 0) {
        received = true;
        while (!release.load()) std::this_thread::sleep_for(1ms);
      }
      (void)r.reply(i);
    }
    ch.detach(r);
  });
  std::vector<unsigned char> b0(kBig), b1(kBig);
  faultsafe::send_result first;
  std::thread s0([&] { first = ch.send(big_read(b0)); });
  while (!received.load()) std::this_thread::yield();
  std::thread releaser([&] {
    std::this_thread::sleep_for(300ms);
    release = true;
  });
  const double cpu0 = thread_cpu_ms();
  auto second = ch.send(big_read(b1));
  const double cpu = thread_cpu_ms() - cpu0;
  releaser.join();
  s0.join();
  ch.stop();
  srv.join();
  REQUIRE(first);
  REQUIRE(second);
  CHECK(second.status == 1);
  CHECK(cpu < 150.0);
}

TEST_CASE("spin: an idle receiver parks after a burst of short waits (adaptive receiver spin is bounded)") {
  watchdog wd("idle receiver", 30s);
  channel_options o;
  o.receiver_spin_max = 10s;  // only the learned recent wait may bound the spin
  channel ch(o);
  std::atomic<double> idle_cpu{-1};
  std::atomic<bool> burst_done{false};
  std::thread srv([&] {
    auto& r = ch.attach();
    for (;;) {
      const double c0 = thread_cpu_ms();
      if (r.receive()) break;
      const double c1 = thread_cpu_ms();
      if (r.type() == 2) idle_cpu = c1 - c0;  // CPU spent waiting for the message after the pause
      (void)r.reply(0);
    }
    ch.detach(r);
  });
  unsigned char small[64];
  send_buffers b;
  b.type = 1;
  b.reply_data = small;
  b.reply_data_len = sizeof small;
  for (int i = 0; i < 200; ++i) REQUIRE(ch.send(b));  // short waits: the receiver learns to spin a bit
  burst_done = true;
  std::this_thread::sleep_for(300ms);  // idle: a receiver that spun on would burn all of it
  b.type = 2;
  REQUIRE(ch.send(b));
  ch.stop();
  srv.join();
  REQUIRE(idle_cpu.load() >= 0);
  CHECK(idle_cpu.load() < 150.0);
}

TEST_CASE("spin: client and server pinned to one CPU still make progress with large buffers") {
  // The 2-core worry at its worst: a spinning sender and the server that must run on its core.
  watchdog wd("one core", 40s);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(static_cast<int>(::sched_getcpu()), &one);
  channel ch(greedy());
  std::atomic<bool> pinned_ok{true};
  std::thread srv([&] {
    if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0) pinned_ok = false;
    auto& r = ch.attach();
    while (!r.receive()) {
      burn_until(std::chrono::steady_clock::now() + 200us);
      (void)r.with_reply_data([&](void* p, std::size_t n) -> std::error_code {
        std::memset(p, static_cast<int>(r.type()), n);
        return {};
      });
      (void)r.reply(static_cast<std::int64_t>(r.type()));
    }
    ch.detach(r);
  });
  cpu_set_t old;
  REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof old, &old) == 0);
  if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0) pinned_ok = false;
  std::vector<unsigned char> buf(kBig);
  for (unsigned i = 1; i <= 100; ++i) {
    auto b = big_read(buf);
    b.type = i & 0x7f;
    auto res = ch.send(b);
    REQUIRE(res);
    CHECK(res.status == static_cast<std::int64_t>(b.type));
    CHECK(buf[kBig / 2] == static_cast<unsigned char>(b.type));
  }
  (void)pthread_setaffinity_np(pthread_self(), sizeof old, &old);
  ch.stop();
  srv.join();
  CHECK(pinned_ok.load());
}

TEST_CASE("spin: many senders with large buffers, two servers, random deadlines: no hang, data intact") {
  watchdog wd("stress", 50s);
  channel_options o;
  channel ch(o);
  std::vector<std::thread> servers;
  for (int s = 0; s < 2; ++s)
    servers.emplace_back([&] {
      auto& r = ch.attach();
      while (!r.receive()) {
        const std::uint32_t t = r.type();
        (void)r.with_reply_data([&](void* p, std::size_t n) -> std::error_code {
          std::memset(p, static_cast<int>(t & 0xff), n);
          return {};
        });
        if (t % 5 == 0) std::this_thread::sleep_for(200us);  // sometimes the handler blocks
        (void)r.reply(static_cast<std::int64_t>(t));
      }
      ch.detach(r);
    });
  std::atomic<int> ok{0}, timed_out{0}, bad{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c)
    clients.emplace_back([&, c] {
      std::mt19937 rng(static_cast<unsigned>(c) * 7919u + 1u);
      std::vector<unsigned char> buf(256 << 10);
      for (int i = 0; i < 150; ++i) {
        send_buffers b = big_read(buf);
        b.type = static_cast<std::uint32_t>(rng() % 250 + 1);
        send_options so;
        if (rng() % 4 == 0) so.deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 300);
        auto res = ch.send(b, so);
        if (res) {
          if (res.status != static_cast<std::int64_t>(b.type) || buf[buf.size() - 1] != (b.type & 0xff)) ++bad;
          else ++ok;
        } else if (res.error == std::errc::timed_out) {
          ++timed_out;
        } else {
          ++bad;
        }
      }
    });
  for (auto& t : clients) t.join();
  ch.stop();
  for (auto& t : servers) t.join();
  CHECK(bad.load() == 0);
  CHECK(ok.load() + timed_out.load() == 450);
  CHECK(ok.load() > 0);
}
