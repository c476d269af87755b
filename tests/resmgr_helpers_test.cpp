// The handler helpers of resmgr/iofunc_helpers.hpp, each through a real server and client process:
// open/read/write verification (access mode, permission, offsets, sizes), replies from a buffer with
// the offset advanced, fstat of a computed file, and the validating write that reads client memory
// once and stores exactly the bytes it validated.
#include <doctest/doctest.h>
#include <faultsafe/resmgr/iofunc_helpers.hpp>
#include <faultsafe/resmgr/process.hpp>

#include <atomic>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "resmgr_test_util.hpp"

using namespace std::chrono_literals;
using namespace faultsafe;

namespace {

bool is(const std::error_code& ec, int e) { return ec.value() == e && ec.category() == std::generic_category(); }

// A server with two files: "computed" (the text below, no attr, read-only for others, mode 0644 owned
// by uid 1) and "data" (an iofunc_attr, max 64 KiB, whose writes must be lower-case letters).
struct helper_server {
  static constexpr std::string_view text = "the computed file's contents\n";

  helper_server() : data(std::make_shared<iofunc_attr>(0666, 1, 1, attr_options{.max_size = 64 << 10})) {
    if (auto ec = srv.attach("/h")) throw std::system_error(ec);
    srv.start();
  }

  io_funcs funcs() {
    io_funcs f = iofunc_defaults();
    f.open = [this](request_context& ctx, const io_open_request& q, std::string_view path, std::shared_ptr<ocb_base>& out) {
      const bool computed = path == "computed";
      if (!computed && path != "data") return io_result::fail(ENOENT);
      int access = 0;
      const std::error_code ec = computed ? iofunc_open_verify(ctx, q, 0644, 1, 1, &access)
                                          : iofunc_open_verify(ctx, q, data->mode(), data->uid(), data->gid(), &access);
      if (ec) return io_result::fail(ec);
      auto o = std::make_shared<iofunc_ocb>();
      iofunc_ocb_init(*o, q, access);
      if (!computed) o->attr = data;
      out = std::move(o);
      return io_result::ok();
    };
    f.read = [](request_context& ctx, ocb_base& b, const io_rw_request& q) {
      auto& o = static_cast<iofunc_ocb&>(b);
      if (o.attr) return iofunc_read_default(ctx, b, q);
      io_span s;
      if (auto ec = iofunc_read_verify(ctx, o, q, s)) return io_result::fail(ec);
      return iofunc_reply_bytes(ctx, o, s, text.data(), text.size());
    };
    f.write = [this](request_context& ctx, ocb_base& b, const io_rw_request& q) {
      auto& o = static_cast<iofunc_ocb&>(b);
      if (!o.attr) {
        io_span s;
        if (auto ec = iofunc_write_verify(ctx, o, q, s, 100)) return io_result::fail(ec);
        return iofunc_rw_done(o, s, s.nbytes);  // takes the verified bytes and drops them (/dev/null)
      }
      return iofunc_write_validated(ctx, o, q, [this](std::string_view bytes) -> std::error_code {
        if (during_validation) during_validation();
        for (char c : bytes)
          if (c < 'a' || c > 'z') return std::make_error_code(std::errc::invalid_argument);
        return {};
      });
    };
    f.fstat = [](request_context&, ocb_base& b, struct ::stat& st) {
      auto& o = static_cast<iofunc_ocb&>(b);
      if (o.attr) {
        o.attr->stat(st);
        return io_result::ok();
      }
      iofunc_stat_fill(st, {.mode = S_IFREG | 0644, .uid = 1, .gid = 1, .size = text.size(), .ino = 42});
      return io_result::ok();
    };
    return f;
  }

  path_namespace ns;
  std::shared_ptr<iofunc_attr> data;
  std::function<void()> during_validation;
  server srv{server_options{.name = "helpers", .ns = &ns}, funcs()};
};

// A raw read or write message with fields the process API would never send (to reach the helpers'
// own checks).
send_result raw_rw(process& p, int fd, io_msg type, void* buf, std::uint64_t nbytes, std::size_t buflen,
                   std::int64_t offset, bool use_offset) {
  std::shared_ptr<channel> ch;
  std::uint64_t handle = 0;
  int flags = 0;
  REQUIRE(!p.fd_target(fd, ch, handle, flags));
  io_rw_request q{p.client(), handle, nbytes, offset, use_offset ? 1u : 0u, 0};
  send_buffers b{static_cast<std::uint32_t>(type), &q, sizeof q};
  if (type == io_msg::read) {
    b.reply_data = buf;
    b.reply_data_len = buflen;
  } else {
    b.payload = buf;
    b.payload_len = buflen;
  }
  return p.send(*ch, b);
}

}  // namespace

TEST_CASE("iofunc_open_verify: access mode, O_TRUNC without write permission, permission bits, root") {
  faultsafe_test::watchdog wd("open verify", 20s);
  helper_server h;
  process owner("owner", {1, 1}, &h.ns), other("other", {2, 2}, &h.ns), root("root", {0, 0}, &h.ns);
  auto fd = owner.open("/h/computed", O_RDWR);
  REQUIRE(fd.ok());
  CHECK(other.open("/h/computed", O_RDONLY).ok());
  auto denied = other.open("/h/computed", O_WRONLY);
  REQUIRE_FALSE(denied.ok());
  CHECK(is(denied.error(), EACCES));
  // O_TRUNC needs write permission, whatever the access mode (as Linux: the owner may, others not).
  auto trunc = other.open("/h/computed", O_RDONLY | O_TRUNC);
  REQUIRE_FALSE(trunc.ok());
  CHECK(is(trunc.error(), EACCES));
  CHECK(owner.open("/h/computed", O_RDONLY | O_TRUNC).ok());
  auto bad = owner.open("/h/computed", O_ACCMODE);
  REQUIRE_FALSE(bad.ok());
  CHECK(is(bad.error(), EINVAL));
  CHECK(root.open("/h/computed", O_RDWR).ok());
}

TEST_CASE("iofunc_read_verify + iofunc_reply_bytes: offsets, advancing, clipping, end of file, EBADF") {
  faultsafe_test::watchdog wd("read verify", 20s);
  helper_server h;
  process p("p", {1, 1}, &h.ns);
  auto fd = p.open("/h/computed", O_RDONLY);
  REQUIRE(fd.ok());
  const std::string_view text = helper_server::text;
  char buf[64] = {};
  // read() advances the OCB's offset, pread() does not.
  REQUIRE(p.read(*fd, buf, 4).value() == 4);
  CHECK(std::string_view(buf, 4) == text.substr(0, 4));
  REQUIRE(p.pread(*fd, buf, 8, 13).value() == 8);
  CHECK(std::string_view(buf, 8) == text.substr(13, 8));
  REQUIRE(p.read(*fd, buf, 9).value() == 9);
  CHECK(std::string_view(buf, 9) == text.substr(4, 9));
  CHECK(p.lseek(*fd, 0, SEEK_CUR).value() == 13);
  // Short at the end, 0 past it (and the offset stays put there).
  REQUIRE(p.read(*fd, buf, sizeof buf).value() == text.size() - 13);
  CHECK(p.read(*fd, buf, sizeof buf).value() == 0);
  CHECK(p.pread(*fd, buf, 4, 1000).value() == 0);
  // nbytes larger than the client's buffer: clipped to the buffer.
  send_result r = raw_rw(p, *fd, io_msg::read, buf, 1000, 5, 0, true);
  REQUIRE_FALSE(r.error);
  CHECK(r.status == 5);
  // A negative offset and an overflowing one, past the process's own checks.
  r = raw_rw(p, *fd, io_msg::read, buf, 4, 4, -1, true);
  CHECK(is(r.error, EINVAL));
  r = raw_rw(p, *fd, io_msg::read, buf, 4, 4, std::numeric_limits<std::int64_t>::max() - 2, true);
  CHECK(is(r.error, EOVERFLOW));
  // No read access.
  process owner("owner", {1, 1}, &h.ns);
  auto wfd = owner.open("/h/computed", O_WRONLY);
  REQUIRE(wfd.ok());
  auto rr = owner.read(*wfd, buf, 4);
  REQUIRE_FALSE(rr.ok());
  CHECK(is(rr.error(), EBADF));
}

TEST_CASE("iofunc_write_verify: EBADF without write access, EFBIG at the limit, clipping to the limit and the payload") {
  faultsafe_test::watchdog wd("write verify", 20s);
  helper_server h;
  process owner("owner", {1, 1}, &h.ns);
  auto ro = owner.open("/h/computed", O_RDONLY);
  auto rw = owner.open("/h/computed", O_RDWR);
  REQUIRE(ro.ok());
  REQUIRE(rw.ok());
  char b[8] = "abcdefg";
  auto w = owner.pwrite(*ro, b, 4, 0);
  REQUIRE_FALSE(w.ok());
  CHECK(is(w.error(), EBADF));
  w = owner.pwrite(*rw, b, 4, 100);  // starts at the limit (100)
  REQUIRE_FALSE(w.ok());
  CHECK(is(w.error(), EFBIG));
  CHECK(owner.pwrite(*rw, b, 4, 98).value() == 2);  // straddles it: a short count
  CHECK(owner.pwrite(*rw, b, 4, 10).value() == 4);
  CHECK(owner.lseek(*rw, 0, SEEK_CUR).value() == 0);  // pwrite leaves the offset alone
  CHECK(owner.write(*rw, b, 3).value() == 3);
  CHECK(owner.lseek(*rw, 0, SEEK_CUR).value() == 3);  // write advances it
  // nbytes larger than the payload: clipped to the payload.
  send_result r = raw_rw(owner, *rw, io_msg::write, b, 1000, 2, 0, true);
  REQUIRE_FALSE(r.error);
  CHECK(r.status == 2);
  r = raw_rw(owner, *rw, io_msg::write, b, 2, 2, -5, true);
  CHECK(is(r.error, EINVAL));
}

TEST_CASE("iofunc_stat_fill: fstat of a computed file") {
  faultsafe_test::watchdog wd("stat fill", 20s);
  helper_server h;
  process p("p", {1, 1}, &h.ns);
  auto fd = p.open("/h/computed", O_RDONLY);
  REQUIRE(fd.ok());
  auto st = p.fstat(*fd);
  REQUIRE(st.ok());
  CHECK(st.value().st_size == static_cast<off_t>(helper_server::text.size()));
  CHECK(st.value().st_mode == (S_IFREG | 0644));
  CHECK(st.value().st_ino == 42);
  CHECK(st.value().st_uid == 1);
  CHECK(st.value().st_blocks == 1);
  CHECK(st.value().st_mtim.tv_sec > 0);
}

TEST_CASE("iofunc_write_validated: invalid bytes are refused and nothing is stored; valid ones are stored, appends go at the end") {
  faultsafe_test::watchdog wd("validated write", 20s);
  helper_server h;
  process p("p", {1, 1}, &h.ns);
  auto fd = p.open("/h/data", O_RDWR);
  REQUIRE(fd.ok());
  std::string good = "hello";
  REQUIRE(p.write(*fd, good.data(), good.size()).value() == 5);
  CHECK(p.lseek(*fd, 0, SEEK_CUR).value() == 5);  // advanced
  std::string bad = "he11o";
  auto w = p.pwrite(*fd, bad.data(), bad.size(), 0);
  REQUIRE_FALSE(w.ok());
  CHECK(is(w.error(), EINVAL));
  char back[16] = {};
  REQUIRE(p.pread(*fd, back, sizeof back, 0).value() == 5);
  CHECK(std::string_view(back, 5) == "hello");
  // O_APPEND: at the end whatever the offset.
  auto afd = p.open("/h/data", O_WRONLY | O_APPEND);
  REQUIRE(afd.ok());
  std::string more = "world";
  REQUIRE(p.write(*afd, more.data(), more.size()).value() == 5);
  REQUIRE(p.pread(*fd, back, sizeof back, 0).value() == 10);
  CHECK(std::string_view(back, 10) == "helloworld");
  CHECK(p.lseek(*afd, 0, SEEK_CUR).value() == 10);
  // At the attr's limit (64 KiB): a straddling write is clipped, one starting there is EFBIG.
  const std::string tail = "abcdefgh";
  CHECK(p.pwrite(*fd, tail.data(), tail.size(), (64 << 10) - 3).value() == 3);
  auto big = p.pwrite(*fd, tail.data(), tail.size(), 64 << 10);
  REQUIRE_FALSE(big.ok());
  CHECK(is(big.error(), EFBIG));
  CHECK(p.fstat(*fd).value().st_size == (64 << 10));
}

TEST_CASE("iofunc_write_validated stores exactly the bytes it validated, even if the client changes its buffer meanwhile") {
  faultsafe_test::watchdog wd("read once", 20s);
  helper_server h;
  process p("p", {1, 1}, &h.ns);
  auto fd = p.open("/h/data", O_RDWR);
  REQUIRE(fd.ok());
  std::string payload = "abcdef";
  std::atomic<int> validations{0};
  // The validator runs after the payload was copied: the "client" now changes its buffer to bytes the
  // validator would refuse. A handler that reads client memory a second time to store it would store
  // "XXXXXX"; the helper stores what it validated.
  h.during_validation = [&] {
    ++validations;
    std::memset(payload.data(), 'X', payload.size());
  };
  REQUIRE(p.pwrite(*fd, payload.data(), payload.size(), 0).value() == 6);
  CHECK(validations.load() == 1);
  char back[8] = {};
  REQUIRE(p.pread(*fd, back, sizeof back, 0).value() == 6);
  CHECK(std::string_view(back, 6) == "abcdef");
}

// One result convention for every client call (issue 17 item 6): close/ftruncate/munmap/mprotect/msync
// return result<void>, whose ok() is true on success; it has no operator bool, so code written for
// the old std::error_code return (true on failure) does not compile with the opposite meaning.
static_assert(!std::is_constructible_v<bool, result<void>>, "result<void> must not convert to bool");
static_assert(std::is_constructible_v<bool, result<int>>, "result<T> converts to bool (true on success)");
static_assert(std::is_same_v<decltype(std::declval<process&>().close(0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().ftruncate(0, 0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().munmap(nullptr, 0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().mprotect(nullptr, 0, 0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().msync(nullptr, 0, 0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().unlink("")), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().mkdir("", 0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().fsync(0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().fallocate(0, 0, 0, 0)), result<void>>);
static_assert(std::is_same_v<decltype(std::declval<process&>().truncate("", 0)), result<void>>);

TEST_CASE("result<void>: ok() on success, error() and a throwing value() on failure") {
  faultsafe_test::watchdog wd("result<void>", 20s);
  helper_server h;
  process p("p", {1, 1}, &h.ns);
  auto fd = p.open("/h/data", O_RDWR);
  REQUIRE(fd.ok());
  const result<void> t = p.ftruncate(*fd, 3);
  CHECK(t.ok());
  CHECK_FALSE(t.error());
  CHECK_NOTHROW(t.value());
  const result<void> c = p.close(*fd);
  CHECK(c.ok());
  const result<void> again = p.close(*fd);
  CHECK_FALSE(again.ok());
  CHECK(is(again.error(), EBADF));
  CHECK_THROWS_AS(again.value(), std::system_error);
  CHECK(result<void>{}.ok());
  CHECK(result<void>{std::error_code{}}.ok());
}
