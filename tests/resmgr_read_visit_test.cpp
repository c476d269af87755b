// io_msg::read_visit (process::pread_visit): a pread whose bytes the server hands to the sender's
// visitor in place, under the lock its read handler takes (the FUSE bridge's READ).
// - ramfs: the visitor gets the file's bytes at the offset, clipped to the size, once; nothing at or
//   past the end; while it runs, the file's range lock holds exactly those bytes shared (a writer of
//   them would wait); its errno is the call's error; the checks of read (EBADF on O_WRONLY, EINVAL,
//   EOVERFLOW) and the fd's offset left alone; on the calling thread (set_serve_on_calling_thread) too.
// - A server whose read handler is its own (a wrapped read, iofunc_read_exclusive) answers ENOSYS, so
//   that nothing bypasses it; plain iofunc_defaults() and iofunc_direct_defaults() servers serve it.
// (From another OS process: ENOTSUP, in remote_test.)
#include <doctest/doctest.h>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace faultsafe;

namespace {

bool is(const std::error_code& ec, int e) { return ec.value() == e && ec.category() == std::generic_category(); }

// What a visitor saw: every call's bytes, and the file's range-lock holders during the last call.
struct seen {
  std::vector<std::string> calls;
  std::vector<range_holder> holders;
  const iofunc_attr* attr = nullptr;
  int fail_with = 0;
  static int visit(void* self, const void* bytes, std::size_t n) noexcept {
    auto& s = *static_cast<seen*>(self);
    s.calls.emplace_back(static_cast<const char*>(bytes), n);
    if (s.attr) s.holders = s.attr->data_lock.holders();
    return s.fail_with;
  }
};

ramfs_options options(path_namespace& ns, std::function<void(io_funcs&)> customize = {}, bool direct = true) {
  ramfs_options o;
  o.name = "visit";
  o.prefix = "/v";
  o.ns = &ns;
  o.customize = std::move(customize);
  o.direct_copy = direct;
  return o;
}

void make_file(process& p, const std::string& path, const std::string& bytes) {
  auto fd = p.open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd);
  REQUIRE(p.pwrite(*fd, bytes.data(), bytes.size(), 0).value_or(0) == bytes.size());
  REQUIRE(p.close(*fd).ok());
}

}  // namespace

TEST_CASE("pread_visit on ramfs: the bytes in place, once, under a shared range lock over exactly them") {
  for (const bool here : {false, true}) {
    CAPTURE(here);
    path_namespace ns;
    ramfs fs(options(ns));
    process p("reader", {0, 0}, &ns);
    p.set_serve_on_calling_thread(here);
    const std::string text = "0123456789abcdefghij";
    make_file(p, "/v/f", text);
    auto fd = p.open("/v/f", O_RDONLY);
    REQUIRE(fd);
    seen s;
    s.attr = fs.lookup("f").get();
    REQUIRE(s.attr != nullptr);
    auto r = p.pread_visit(*fd, 8, 5, &seen::visit, &s);
    REQUIRE(r);
    CHECK(*r == 8);
    REQUIRE(s.calls.size() == 1);
    CHECK(s.calls[0] == text.substr(5, 8));
    REQUIRE(s.holders.size() == 1);
    CHECK(s.holders[0].offset == 5);
    CHECK(s.holders[0].length == 8);
    CHECK(s.holders[0].mode == lock_mode::shared);
    CHECK(s.holders[0].granted);
    CHECK(s.attr->data_lock.holders().empty());  // released after the visit
    // Clipped at the end; nothing at or past it (the visitor is not called).
    s = seen{};
    r = p.pread_visit(*fd, 100, 15, &seen::visit, &s);
    REQUIRE(r);
    CHECK(*r == 5);
    REQUIRE(s.calls.size() == 1);
    CHECK(s.calls[0] == "fghij");
    s = seen{};
    for (const off_t at : {off_t{20}, off_t{1000}}) {
      r = p.pread_visit(*fd, 10, at, &seen::visit, &s);
      REQUIRE(r);
      CHECK(*r == 0);
    }
    CHECK(p.pread_visit(*fd, 0, 0, &seen::visit, &s).value_or(1) == 0);
    CHECK(s.calls.empty());
    // The visitor's errno is the call's error.
    s.fail_with = EPIPE;
    r = p.pread_visit(*fd, 4, 0, &seen::visit, &s);
    CHECK(is(r.error(), EPIPE));
    CHECK(s.calls.size() == 1);
    // The fd's offset is neither used nor moved.
    char b[4];
    CHECK(p.read(*fd, b, 4).value_or(0) == 4);
    CHECK(std::string(b, 4) == "0123");
    // The checks of read.
    s = seen{};
    CHECK(is(p.pread_visit(*fd, 4, -1, &seen::visit, &s).error(), EINVAL));
    CHECK(is(p.pread_visit(*fd, 4, 0, nullptr, &s).error(), EINVAL));
    CHECK(is(p.pread_visit(*fd, 8, std::numeric_limits<off_t>::max() - 4, &seen::visit, &s).error(), EOVERFLOW));
    CHECK(is(p.pread_visit(99, 4, 0, &seen::visit, &s).error(), EBADF));
    auto wfd = p.open("/v/f", O_WRONLY);
    REQUIRE(wfd);
    CHECK(is(p.pread_visit(*wfd, 4, 0, &seen::visit, &s).error(), EBADF));
    CHECK(s.calls.empty());
    CHECK(p.close(*wfd).ok());
    CHECK(p.close(*fd).ok());
  }
}

TEST_CASE("pread_visit on a server whose read handler is its own: ENOSYS (nothing bypasses it)") {
  std::atomic<int> reads{0};
  struct setup {
    const char* what;
    std::function<void(io_funcs&)> customize;
    bool direct;
    bool served;
  };
  const std::vector<setup> setups = {
      {"ramfs (direct copy)", {}, true, true},
      {"ramfs (iofunc_defaults)", {}, false, true},
      {"iofunc_read_exclusive", [](io_funcs& f) { f.read = iofunc_read_exclusive; }, true, false},
      {"a wrapped read", [&reads](io_funcs& f) {
         f.read = [&reads, dflt = f.read](request_context& ctx, ocb_base& o, const io_rw_request& q) {
           reads.fetch_add(1, std::memory_order_relaxed);
           return dflt(ctx, o, q);
         };
       }, true, false},
      {"a read_visit slot without its read", [](io_funcs& f) { f.read_visit_mirrors = nullptr; }, true, false},
  };
  for (const auto& su : setups) {
    CAPTURE(su.what);
    path_namespace ns;
    ramfs fs(options(ns, su.customize, su.direct));
    process p("reader", {0, 0}, &ns);
    make_file(p, "/v/f", "hello");
    auto fd = p.open("/v/f", O_RDONLY);
    REQUIRE(fd);
    seen s;
    auto r = p.pread_visit(*fd, 5, 0, &seen::visit, &s);
    if (su.served) {
      CHECK(r.value_or(0) == 5);
      REQUIRE(s.calls.size() == 1);
      CHECK(s.calls[0] == "hello");
    } else {
      CHECK(is(r.error(), ENOSYS));
      CHECK(s.calls.empty());
      char b[5];
      CHECK(p.pread(*fd, b, 5, 0).value_or(0) == 5);  // its own read serves the copy
    }
    CHECK(p.close(*fd).ok());
  }
  CHECK(reads.load() == 1);  // the wrapped read served the copy, and only that
}
