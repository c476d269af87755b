// The sequence-fuzzing harness shared by the libFuzzer target (process_fuzzer.cpp) and the plain
// corpus replayer (process_fuzz_replay.cpp, part of the normal test build).
//
// run_process_sequence(data, size) decodes the bytes into a sequence of calls on the public process
// API (open, close, read, write, pread, pwrite, lseek, ftruncate, fallocate, fstat, mmap, munmap, mprotect, and
// loads/stores through the mappings; and the path calls: stat, lstat, mkdir, rmdir, unlink, rename with
// its flags, link, symlink, readlink, mknod, access, chmod, fchmod, chown, lchown, utimensat, fsync,
// fdatasync, statvfs, fstatvfs, readdir) with fuzzer-chosen fds, offsets, lengths, flags and protections,
// runs them against a fresh ramfs server in a private namespace, and checks every result against a
// model of the files, fds and mappings:
//   - every call's error (EBADF, EACCES, ENOENT, EEXIST, EINVAL, EOVERFLOW, EFBIG, EFAULT, ...) or value
//     (fd number, byte count, offset, size) equals the model's;
//   - every byte read (read/pread, loads through shared, private and anonymous mappings) equals the
//     model's. A private file mapping's page shows the file until the mapping first writes it (the
//     page cache's page, as on Linux); from the first store on it is the mapping's own copy, until
//     a shrink drops the copy past the new end (whole pages), as Linux's truncate does;
//   - every call that fails (an error reply, injected or not) leaves every file exactly as the model
//     has it: existence, size and bytes, read in the server's store (a failed call has no side effects);
//   - at the end every file's bytes equal the model's, read back through a fresh open;
//   - path calls work on a small tree of names (see "path operations" below) with its own model: each
//     call succeeds exactly when the model says so, fails only with an errno that applies, and the
//     whole tree (types, modes, link counts, sizes, hard links' shared inodes, directory listings)
//     matches the model after it; files a, b, c may gain hard links there (their link counts checked).
// A mismatch prints the operation log and aborts (a libFuzzer crash; a failing replay test).
// Accesses through mappings touch only pages that cannot raise SIGBUS/SIGSEGV by the model (inside the
// file's size for file pages, with the right protection).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <faultsafe/detail/guarded_copy.hpp>
#include <faultsafe/resmgr/process.hpp>
#include <faultsafe/resmgr/ramfs.hpp>

namespace fuzzharness {

using namespace faultsafe;

inline constexpr std::size_t page = 4096;
inline constexpr std::uint64_t max_file = 64 * 1024;  // ramfs attr max_size (EFBIG past it)
inline constexpr int file_count = 3;
inline constexpr std::uint32_t uid = 1000, gid = 100;

/// Bytes -> numbers; zeros once the input is exhausted.
class byte_reader {
 public:
  byte_reader(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  [[nodiscard]] bool empty() const { return i_ >= n_; }
  std::uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return u16() | (static_cast<std::uint32_t>(u16()) << 16); }

 private:
  const std::uint8_t* d_;
  std::size_t n_, i_ = 0;
};

struct model_file {
  bool exists = false;
  mode_t mode = 0;
  std::vector<std::uint8_t> data;
  void resize(std::uint64_t n) { data.resize(n, 0); }
};

struct model_fd {
  int file;
  int flags;
  std::int64_t offset = 0;
  [[nodiscard]] bool readable() const { return (flags & O_ACCMODE) != O_WRONLY; }
  [[nodiscard]] bool writable() const { return (flags & O_ACCMODE) != O_RDONLY; }
};

struct model_map {
  std::uint8_t* addr = nullptr;
  std::size_t len = 0;  // rounded to pages
  int prot = 0;
  bool shared = false;
  int file = -1;        // -1: anonymous
  std::uint64_t off = 0;
  bool writable_open = false;
  std::vector<std::optional<std::vector<std::uint8_t>>> known;  // anonymous / private file once written: page contents
  std::vector<bool> poisoned;                                 // tolerant mode: a page-in failed (SIGBUS)
};

/// The server side of a self-contained run (the fuzzer's): a private namespace and one ramfs at /fz.
struct world {
  path_namespace ns;
  ramfs fs{ramfs_options{.name = "fuzzfs", .prefix = "/fz", .pool = {1, 2}, .ns = &ns, .file = {max_file, "fuzz file"}}};
};

/// How operation bytes are read (see harness::op_table).
enum class encoding { stable, dense };

/// Where a harness runs and how strict it is.
struct harness_options {
  path_namespace* ns = nullptr;
  ramfs* fs = nullptr;          ///< its files must have attr max_size == max_file
  std::string tag;              ///< file names: <prefix>/<tag>a, <tag>b, <tag>c
  std::string process_name = "fuzzer";
  model_file* files = nullptr;  ///< file_count models kept across harnesses (nullptr: the harness's own)
  /// Tolerant (soak with injected faults): EIO from a server call means "the request failed and did
  /// nothing" (the injected handler exception fires before the handler), and a load or store through
  /// a mapping may fault (an injected page-in error poisons the page: SIGBUS); such pages are skipped
  /// afterwards. Everything else is checked exactly.
  bool tolerant = false;
  /// Operation codes: stable (the corpus and libFuzzer: unknown codes are skipped) or dense (every
  /// byte is an operation: generated random inputs).
  encoding ops = encoding::stable;
};

/// Counters of one harness (tolerant mode).
struct harness_stats {
  std::uint64_t ops = 0, injected_eio = 0, injected_efault = 0, poisoned_pages = 0, bytes_checked = 0, resyncs = 0;
};

class harness {
 public:
  explicit harness(const harness_options& o)
      : fs_(*o.fs), prefix_(o.fs->prefix() + "/" + o.tag), tag_(o.tag), tolerant_(o.tolerant), dense_(o.ops == encoding::dense),
        files_(o.files ? o.files : own_files_), proc_(o.process_name, {uid, gid}, o.ns) {}
  [[nodiscard]] const harness_stats& stats() const { return stats_; }

  void run(byte_reader& in) {
    int steps = 0;
    while (!in.empty() && steps++ < 64) {
      failed_ = false;
      step(in);
      if (failed_) check_store("a failed call");
      ++stats_.ops;
    }
    final_check();
    clean_tree();
    if (std::getenv("FAULTSAFE_FUZZ_TRACE") != nullptr)
      for (const auto& l : log_) std::fprintf(stderr, "  %s\n", l.c_str());
  }

  ~harness() {
    for (auto& m : maps_) (void)proc_.munmap(m.addr, m.len);
  }

 private:
  [[noreturn]] void fail(const char* fmt, ...) {
    std::fprintf(stderr, "process_fuzzer: MODEL MISMATCH after %zu ops:\n", log_.size());
    for (const auto& l : log_) std::fprintf(stderr, "  %s\n", l.c_str());
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    std::abort();
  }
  void note(const char* fmt, ...) {
    char b[256];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    log_.emplace_back(b);
  }
  static std::error_code err(int e) { return e ? std::error_code(e, std::generic_category()) : std::error_code{}; }
  void expect_ec(const std::error_code& got, int want, const char* what) {
    if (got != err(want))
      fail("%s: got error '%s' (%d), model expects errno %d", what, got.message().c_str(), got.value(), want);
    if (want != 0) failed_ = true;
  }
  // Every file in the server's store is as the model has it (existence, size, bytes).
  void check_store(const char* when) {
    for (int f = 0; f < file_count; ++f) {
      const model_file& mf = files_[f];
      auto a = fs_.lookup(tag_ + static_cast<char>('a' + f));
      if (!a != !mf.exists) fail("after %s: file %d %s in the store, the model says %s", when, f, a ? "exists" : "is missing", mf.exists ? "it exists" : "it does not");
      if (!a) continue;
      if (a->size() != mf.data.size()) fail("after %s: file %d has %llu bytes, the model %zu", when, f, static_cast<unsigned long long>(a->size()), mf.data.size());
      if (!mf.data.empty() && std::memcmp(a->data(), mf.data.data(), mf.data.size()) != 0) fail("after %s: file %d's bytes differ from the model", when, f);
    }
  }
  std::string path(int f) const { return prefix_ + static_cast<char>('a' + f); }
  // Tolerant mode: an EIO reply is an injected failure of a request that did nothing.
  bool injected(const std::error_code& ec) {
    if (!tolerant_ || ec != err(EIO)) return false;
    ++stats_.injected_eio;
    failed_ = true;  // the request did nothing: checked like any failed call
    return true;
  }

  static bool may(mode_t mode, int want) {  // owner bits (every file is owned by `uid`)
    const unsigned bits = (mode >> 6) & 7;
    return (bits & static_cast<unsigned>(want)) == static_cast<unsigned>(want);
  }
  int lowest_free_fd() const {
    int fd = 0;
    while (fds_.count(fd)) ++fd;
    return fd;
  }
  static void fill_pattern(std::uint8_t* p, std::size_t n, std::uint8_t seed) {
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>(seed + i * 31 + (i >> 8));
  }
  int pick_fd(byte_reader& in) {
    const std::uint8_t b = in.u8();
    if (b >= 250) return static_cast<int>(b) - 256;  // negative fds: EBADF
    return b % 8;                                   // 0..7: often open, sometimes not
  }

  // ---- ops ------------------------------------------------------------------------------------------
  // Operation codes: the first byte of an operation indexes op_table; a code without an operation is
  // skipped (only its byte is consumed). Codes are stable: a new operation takes a code no entry has
  // had, so a checked-in corpus input keeps its meaning when operations are added.
  // encoding::dense (generated inputs) maps every byte onto a defined code instead. The table is at
  // the end of this header (after the class whose operations it names).

  void step(byte_reader& in) {
    const std::uint8_t b = in.u8();
    const std::size_t code = dense_ ? b % op_codes : b;
    if (code < op_codes && op_table[code] != nullptr) op_table[code](*this, in);
  }

  void op_open(byte_reader& in) {
    const int f = in.u8() % file_count;
    const std::uint8_t b = in.u8();
    static constexpr int acc[4] = {O_RDONLY, O_WRONLY, O_RDWR, O_ACCMODE};
    int flags = acc[b & 3];
    if (b & 4) flags |= O_CREAT;
    if (b & 8) flags |= O_EXCL;
    if (b & 16) flags |= O_TRUNC;
    if (b & 32) flags |= O_APPEND;
    static constexpr mode_t modes[4] = {0644, 0444, 0200, 0600};
    const mode_t mode = modes[(b >> 6) & 3];
    note("open(%s, 0x%x, 0%o)", path(f).c_str(), flags, mode);
    auto r = proc_.open(path(f), flags, mode);
    if (injected(r.error())) return;
    model_file& mf = files_[f];
    int want = 0;
    bool created = false;
    const int am = flags & O_ACCMODE;
    const int need = am == O_RDONLY ? access_read : am == O_WRONLY ? access_write : access_read | access_write;
    if (mf.exists) {
      if ((flags & O_CREAT) && (flags & O_EXCL)) want = EEXIST;
      else if (am == O_ACCMODE) want = EINVAL;
      else if (!may(mf.mode, (flags & O_TRUNC) ? need | access_write : need)) want = EACCES;  // O_TRUNC needs write permission
    } else if (!(flags & O_CREAT)) {
      want = ENOENT;
    } else if (am == O_ACCMODE) {
      want = EINVAL;  // refused before anything is created
    } else {
      created = true;
    }
    if (created) {
      mf.exists = true;
      mf.mode = mode;
      mf.data.clear();
    }
    expect_ec(r.error(), want, "open");
    if (want) return;
    if (*r != lowest_free_fd()) fail("open: got fd %d, model expects %d", *r, lowest_free_fd());
    if ((flags & O_TRUNC) && !created) resize_file(f, 0);
    fds_[*r] = model_fd{f, flags, 0};
  }

  void op_close(byte_reader& in) {
    const int fd = pick_fd(in);
    note("close(%d)", fd);
    const auto ec = proc_.close(fd).error();
    if (!injected(ec)) expect_ec(ec, fds_.count(fd) ? 0 : EBADF, "close");
    fds_.erase(fd);
  }

  // read/write/pread/pwrite; the buffer is heap memory or one of the anonymous mappings.
  void op_rw(byte_reader& in, bool is_write, bool positional) {
    const int fd = pick_fd(in);
    const std::uint8_t kind = in.u8();
    std::size_t n = in.u16() % 9000;
    std::int64_t off = 0;
    if (positional) {
      const std::uint8_t o = in.u8();
      off = o == 255 ? -1 : o == 254 ? std::numeric_limits<std::int64_t>::max() - 10 : static_cast<std::int64_t>(in.u16()) + (o & 1 ? 65536 - 4096 : 0);
    }
    const std::uint8_t seed = in.u8();
    // Buffer: heap, or an anonymous mapping (its protection decides EFAULT).
    model_map* anon = nullptr;
    if ((kind & 1) && !maps_.empty()) {
      model_map& m = maps_[(kind >> 1) % maps_.size()];
      if (m.file < 0) anon = &m;
    }
    std::vector<std::uint8_t> heap;
    std::uint8_t* buf;
    if (anon) {
      n = std::min(n, anon->len);
      buf = anon->addr;
    } else {
      heap.resize(n + 1);
      buf = heap.data();
    }
    const bool buf_readable = !anon || (anon->prot & (PROT_READ | PROT_WRITE)) != 0;
    const bool buf_writable = !anon || (anon->prot & PROT_WRITE) != 0;
    if (is_write) {  // the source bytes
      if (!anon) fill_pattern(buf, n, seed);
      else if (buf_writable) store(*anon, 0, n, seed);
    }
    note("%s%s(%d, %s%zu, off %lld)", positional ? "p" : "", is_write ? "write" : "read", fd, anon ? "anon " : "", n,
         static_cast<long long>(off));
    result<std::size_t> r = is_write ? (positional ? proc_.pwrite(fd, buf, n, off) : proc_.write(fd, buf, n))
                                     : (positional ? proc_.pread(fd, buf, n, off) : proc_.read(fd, buf, n));
    if (injected(r.error())) return;
    if (tolerant_ && anon && r.error() == err(EFAULT) && fds_.count(fd)) {
      // An injected pager failure on the buffer (a shared anonymous mapping pages in through the
      // pager): the server's copy stopped at a poisoned page. The request was not acknowledged: learn
      // what the buffer and (for a write, which may have stored a prefix) the file now hold.
      ++stats_.injected_efault;
      rescan(*anon, n);
      if (is_write) resync(fds_.at(fd).file);
      return;
    }
    // The model.
    auto it = fds_.find(fd);
    int want = 0;
    if (it == fds_.end()) want = EBADF;
    else if (positional && off < 0) want = EINVAL;
    else if (positional && static_cast<std::uint64_t>(off) + n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      want = EOVERFLOW;
    else if (is_write ? !it->second.writable() : !it->second.readable()) want = EBADF;
    if (want) {
      expect_ec(r.error(), want, is_write ? "write" : "read");
      return;
    }
    model_fd& mfd = it->second;
    model_file& mf = files_[mfd.file];
    if (!is_write) {
      const std::uint64_t start = positional ? static_cast<std::uint64_t>(off) : static_cast<std::uint64_t>(mfd.offset);
      const std::uint64_t got = n == 0 || start >= mf.data.size() ? 0 : std::min<std::uint64_t>(n, mf.data.size() - start);
      if (got > 0 && !buf_writable) {
        expect_ec(r.error(), EFAULT, "read into a read-only buffer");
        return;
      }
      if (tolerant_ && anon && r && *r < got) {
        // A poisoned page part-way through the buffer (an injected pager failure): the bytes before
        // it were read, a short count. Learn what the buffer now holds.
        ++stats_.injected_efault;
        rescan(*anon, n);
        if (!positional) mfd.offset = static_cast<std::int64_t>(start + *r);
        return;
      }
      expect_ec(r.error(), 0, "read");
      if (*r != got) fail("read: got %zu bytes, model expects %llu", *r, static_cast<unsigned long long>(got));
      if (got && std::memcmp(buf, mf.data.data() + start, got) != 0) fail("read: data differs from the model");
      if (anon && got) absorb(*anon, 0, got);
      if (!positional) mfd.offset = static_cast<std::int64_t>(start + got);
      return;
    }
    const bool append = (mfd.flags & O_APPEND) && !positional;
    if (n == 0) {
      expect_ec(r.error(), 0, "write of 0 bytes");
      if (*r != 0) fail("write of 0 bytes returned %zu", *r);
      return;
    }
    const std::uint64_t start = append ? mf.data.size() : positional ? static_cast<std::uint64_t>(off) : static_cast<std::uint64_t>(mfd.offset);
    if (start >= max_file) {
      expect_ec(r.error(), EFBIG, "write at or past max_size");
      return;
    }
    const std::size_t asked = n;
    n = static_cast<std::size_t>(std::min<std::uint64_t>(n, max_file - start));  // straddling: up to the limit
    if (!buf_readable) {  // nothing can be read from the client: EFAULT, and the file is unchanged
      expect_ec(r.error(), EFAULT, "write from an unreadable buffer");
      return;
    }
    if (tolerant_ && anon && r && *r < n) {
      // A poisoned page part-way through the buffer (an injected pager failure): the bytes before it
      // were written, a short count. Learn what the buffer and the file now hold.
      ++stats_.injected_efault;
      rescan(*anon, n);
      resync(mfd.file);
      if (!positional) mfd.offset = static_cast<std::int64_t>(start + *r);
      return;
    }
    expect_ec(r.error(), 0, "write");
    if (n < asked) note("  (straddles max_size: %zu of %zu bytes)", n, asked);
    if (*r != n) fail("write: wrote %zu, model expects %zu", *r, n);
    if (mf.data.size() < start + n) mf.resize(start + n);
    std::memcpy(mf.data.data() + start, buf, n);
    if (!positional) mfd.offset = static_cast<std::int64_t>(start + n);
  }

  void op_lseek(byte_reader& in) {
    const int fd = pick_fd(in);
    const std::uint8_t w = in.u8();
    const int whence = w % 4 == 3 ? 7 : w % 4;  // SEEK_SET, SEEK_CUR, SEEK_END, bad
    const std::int64_t off = static_cast<std::int64_t>(static_cast<std::int16_t>(in.u16()));
    note("lseek(%d, %lld, %d)", fd, static_cast<long long>(off), whence);
    auto r = proc_.lseek(fd, off, whence);
    if (injected(r.error())) return;
    auto it = fds_.find(fd);
    if (it == fds_.end()) return expect_ec(r.error(), EBADF, "lseek");
    if (whence > 2) return expect_ec(r.error(), EINVAL, "lseek");
    const std::int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? it->second.offset : static_cast<std::int64_t>(files_[it->second.file].data.size());
    if (base + off < 0) return expect_ec(r.error(), EINVAL, "lseek");
    expect_ec(r.error(), 0, "lseek");
    if (*r != base + off) fail("lseek: got %lld, model %lld", static_cast<long long>(*r), static_cast<long long>(base + off));
    it->second.offset = base + off;
  }

  void op_ftruncate(byte_reader& in) {
    const int fd = pick_fd(in);
    const std::uint8_t k = in.u8();
    const std::int64_t len = k == 255 ? -1 : k == 254 ? static_cast<std::int64_t>(max_file) + 1 : static_cast<std::int64_t>(in.u16()) % (max_file + 1);
    note("ftruncate(%d, %lld)", fd, static_cast<long long>(len));
    auto ec = proc_.ftruncate(fd, len).error();
    if (injected(ec)) return;
    auto it = fds_.find(fd);
    if (it == fds_.end()) return expect_ec(ec, EBADF, "ftruncate");
    if (len < 0) return expect_ec(ec, EINVAL, "ftruncate");
    if (!it->second.writable()) return expect_ec(ec, EBADF, "ftruncate");
    if (static_cast<std::uint64_t>(len) > max_file) return expect_ec(ec, EFBIG, "ftruncate");
    expect_ec(ec, 0, "ftruncate");
    resize_file(it->second.file, static_cast<std::uint64_t>(len));
    // fstat agrees.
 auto st = proc_.fstat(fd);
    if (injected(st.error())) return;
    if (!st || static_cast<std::uint64_t>(st.value().st_size) != files_[it->second.file].data.size()) fail("fstat after ftruncate");
  }

  // fallocate: mode 0 (extend with zeros), KEEP_SIZE (nothing visible), PUNCH_HOLE | KEEP_SIZE (zeros
  // inside the size), PUNCH_HOLE alone (EOPNOTSUPP); bad offsets and lengths (EINVAL), past max (EFBIG).
  void op_fallocate(byte_reader& in) {
    const int fd = pick_fd(in);
    const std::uint8_t k = in.u8();
    static constexpr int modes[4] = {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
    const int mode = modes[k & 3];
    const std::int64_t off = (k & 4) ? -1 : static_cast<std::int64_t>(in.u16()) + ((k & 8) ? static_cast<std::int64_t>(max_file) - 4096 : 0);
    const std::int64_t len = (k & 16) ? 0 : static_cast<std::int64_t>(in.u16() % 20000) + 1;
    note("fallocate(%d, mode 0x%x, %lld, %lld)", fd, mode, static_cast<long long>(off), static_cast<long long>(len));
    const auto ec = proc_.fallocate(fd, mode, off, len).error();
    if (injected(ec)) return;
    auto it = fds_.find(fd);
    if (it == fds_.end()) return expect_ec(ec, EBADF, "fallocate");
    if (off < 0 || len <= 0) return expect_ec(ec, EINVAL, "fallocate");  // checked by the client first
    if (!it->second.writable()) return expect_ec(ec, EBADF, "fallocate");
    model_file& mf = files_[it->second.file];
    const auto o = static_cast<std::uint64_t>(off), n = static_cast<std::uint64_t>(len);
    if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
      expect_ec(ec, 0, "fallocate punch");
      if (o < mf.data.size()) {
        const std::uint64_t end = std::min<std::uint64_t>(o + n, mf.data.size());
        std::fill(mf.data.begin() + static_cast<std::ptrdiff_t>(o), mf.data.begin() + static_cast<std::ptrdiff_t>(end), 0);
      }
      return;
    }
    if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE) return expect_ec(ec, EOPNOTSUPP, "fallocate mode");
    if (o + n > max_file) return expect_ec(ec, EFBIG, "fallocate past max_size");
    expect_ec(ec, 0, "fallocate");
    if (mode == 0 && o + n > mf.data.size()) mf.resize(o + n);
  }

  void op_mmap(byte_reader& in) {
    if (!uffd_ok()) return;
    const std::uint8_t b = in.u8();
    const int fd = pick_fd(in);
    std::size_t len = (in.u8() % 6) * page;  // 0 (EINVAL) .. 5 pages
    if (b & 0x80) len = len ? len - 100 : 0;  // not a page multiple (rounded up)
    const int prot = b & 3;                    // NONE, READ, WRITE, READ|WRITE
    const int type = (b >> 2) & 3;             // 0 bad, 1 shared, 2 private, 3 both (bad)
    int flags = type == 1 ? MAP_SHARED : type == 2 ? MAP_PRIVATE : type == 3 ? (MAP_SHARED | MAP_PRIVATE) : 0;
    const bool anon = (b & 0x10) != 0;
    if (anon) flags |= MAP_ANONYMOUS;
    const std::uint8_t o = in.u8();
    const off_t off = anon ? 0 : static_cast<off_t>((o & 0x7f) % 20) * static_cast<off_t>(page) + ((o & 0x80) ? 100 : 0);
    note("mmap(%zu, prot %d, flags 0x%x, fd %d, off %lld)", len, prot, flags, fd, static_cast<long long>(off));
    if (maps_.size() >= 6) return;
    auto r = proc_.mmap(nullptr, len, prot, flags, fd, off);
    if (injected(r.error())) return;
    int want = 0;
    if (len == 0 || (type != 1 && type != 2) || (off % static_cast<off_t>(page)) != 0) want = EINVAL;
    else if (!anon && !fds_.count(fd)) want = EBADF;
    else if (!anon) {
      const model_fd& mfd = fds_.at(fd);
      if ((prot & PROT_READ) && !mfd.readable()) want = EACCES;
      else if ((prot & PROT_WRITE) && type == 1 && !mfd.writable()) want = EACCES;
    }
    expect_ec(r.error(), want, "mmap");
    if (want) return;
    model_map m;
    m.addr = static_cast<std::uint8_t*>(*r);
    m.len = (len + page - 1) & ~(page - 1);
    m.prot = prot;
    m.shared = type == 1;
    const std::size_t pages = m.len / page;
    m.poisoned.assign(pages, false);
    if (anon) {
      m.known.assign(pages, std::vector<std::uint8_t>(page, 0));
    } else {
      const model_fd& mfd = fds_.at(fd);
      m.file = mfd.file;
      m.off = static_cast<std::uint64_t>(off);
      m.writable_open = mfd.writable();
      if (!m.shared) m.known.assign(pages, std::nullopt);
    }
    maps_.push_back(std::move(m));
  }

  void op_munmap(byte_reader& in) {
    if (!uffd_ok()) return;
    const std::uint8_t b = in.u8();
    if (maps_.empty() || (b & 0xc0) == 0xc0) {  // bad arguments
      std::uint8_t* a = maps_.empty() ? reinterpret_cast<std::uint8_t*>(page * 16) : maps_[b % maps_.size()].addr;
      const bool unaligned = b & 1;
      note("munmap(bad: %s)", unaligned ? "unaligned" : "zero length");
      expect_ec(proc_.munmap(a + (unaligned ? 1 : 0), unaligned ? page : 0).error(), EINVAL, "munmap with bad arguments");
      return;
    }
    const std::size_t i = b % maps_.size();
    const bool partial = (b & 0x20) && maps_[i].len > page;
    note("munmap(map %zu%s)", i, partial ? ", partial" : "");
    if (partial) {  // the mapping splits (vm/aspace.hpp): it loses its first page
      expect_ec(proc_.munmap(maps_[i].addr, page).error(), 0, "partial munmap");
      drop_first_page(maps_[i]);
      return;
    }
    expect_ec(proc_.munmap(maps_[i].addr, maps_[i].len).error(), 0, "munmap");
    maps_.erase(maps_.begin() + static_cast<std::ptrdiff_t>(i));
  }

  static void drop_first_page(model_map& m) {
    m.addr += page;
    m.len -= page;
    m.off += page;
    if (!m.known.empty()) m.known.erase(m.known.begin());
    if (!m.poisoned.empty()) m.poisoned.erase(m.poisoned.begin());
  }

  void op_mprotect(byte_reader& in) {
    if (!uffd_ok() || maps_.empty()) return;
    const std::uint8_t b = in.u8();
    model_map& m = maps_[b % maps_.size()];
    const int prot = (b >> 4) & 3;
    note("mprotect(map %u, %d)", static_cast<unsigned>(b % maps_.size()), prot);
    const int want = (prot & PROT_WRITE) && m.file >= 0 && m.shared && !m.writable_open ? EACCES : 0;
    expect_ec(proc_.mprotect(m.addr, m.len, prot).error(), want, "mprotect");
    if (!want) m.prot = prot;
  }

  // Loads (check) or stores (update the model) through a mapping, only where the model says no signal.
  void op_mem(byte_reader& in, bool write) {
    if (maps_.empty()) return;
    const std::uint8_t b = in.u8();
    model_map& m = maps_[b % maps_.size()];
    const std::size_t at = in.u16() % m.len;
    const std::size_t n = std::min<std::size_t>(in.u16() % (2 * page) + 1, m.len - at);
    const std::uint8_t seed = in.u8();
    note("%s(map %u, +%zu, %zu)", write ? "store" : "load", static_cast<unsigned>(b % maps_.size()), at, n);
    if (write ? !(m.prot & PROT_WRITE) : !(m.prot & PROT_READ)) return;
    // Clip to accessible pages.
    std::size_t end = at + n;
    for (std::size_t p = at / page; p * page < end; ++p)
      if (!accessible(m, p)) {
        end = p * page;
        break;
      }
    if (end <= at) return;
    if (write) store(m, at, end - at, seed);
    else check_load(m, at, end - at);
  }

  bool accessible(const model_map& m, std::size_t p) const {
    if (m.poisoned[p]) return false;
    if (m.file < 0) return true;
    if (!m.shared && m.known[p]) return true;
    return m.off + p * page < files_[m.file].data.size();
  }

  // Copies len bytes within page p of mapping m with a guarded copy: a SIGBUS/SIGSEGV becomes a
  // return of false (tolerant mode: the page is marked poisoned) or a model mismatch (strict mode).
  bool guarded(model_map& m, std::size_t p, void* dst, const void* src, std::size_t len) {
    if (!faultsafe::detail::guarded_memcpy(dst, src, len)) return true;
    if (!tolerant_) fail("unexpected SIGBUS/SIGSEGV on page %zu of a mapping (prot %d, shared %d, file %d)", p, m.prot, m.shared, m.file);
    m.poisoned[p] = true;
    ++stats_.poisoned_pages;
    return false;
  }

  // Private file page p, about to be written: until now it was the file's page (checked here); from
  // now on the model keeps its contents (the bytes past the end of the file come from the page read).
  bool settle_private(model_map& m, std::size_t p) {
    if (m.file < 0 || m.shared || m.known[p]) return true;
    std::vector<std::uint8_t> seen(page);
    if (!guarded(m, p, seen.data(), m.addr + p * page, page)) return false;
    const model_file& mf = files_[m.file];
    for (std::size_t i = 0; i < page && m.off + p * page + i < mf.data.size(); ++i)
      if (seen[i] != mf.data[m.off + p * page + i]) fail("unwritten private page %zu differs from the file at +%zu", p, i);
    m.known[p] = std::move(seen);
    return true;
  }
  // True if loads of page p of m read the file (a shared mapping, or a private page never written).
  static bool reads_file(const model_map& m, std::size_t p) { return m.file >= 0 && (m.shared || !m.known[p]); }

  void check_load(model_map& m, std::size_t at, std::size_t n) {
    std::uint8_t tmp[page];
    for (std::size_t a = at; a < at + n;) {
      const std::size_t p = a / page, b = std::min(at + n, (p + 1) * page);
      if (guarded(m, p, tmp, m.addr + a, b - a)) {
        for (std::size_t i = a; i < b; ++i) {
          std::uint8_t want;
          if (reads_file(m, p)) {
            const model_file& mf = files_[m.file];
            if (m.off + i >= mf.data.size()) continue;  // the tail of the last page
            want = mf.data[m.off + i];
          } else {
            want = (*m.known[p])[i % page];
          }
          if (tmp[i - a] != want) fail("load at +%zu: got %u, model %u", i, tmp[i - a], want);
        }
        stats_.bytes_checked += b - a;
      }
      a = b;
    }
  }

  void store(model_map& m, std::size_t at, std::size_t n, std::uint8_t seed) {
    if (n == 0) return;
    std::vector<std::uint8_t> src(n);
    fill_pattern(src.data(), n, seed);
    for (std::size_t a = at; a < at + n;) {
      const std::size_t p = a / page, b = std::min(at + n, (p + 1) * page);
      const std::uint8_t* s = src.data() + (a - at);
      if (!settle_private(m, p)) {
        a = b;
        continue;
      }
      if (m.file >= 0 && m.shared) {
        model_file& mf = files_[m.file];
        const std::size_t lim = std::min<std::size_t>(b - a, mf.data.size() > m.off + a ? mf.data.size() - m.off - a : 0);
        if (lim > 0 && guarded(m, p, m.addr + a, s, lim)) {  // never past the end of the file
          std::memcpy(mf.data.data() + m.off + a, s, lim);
        }
      } else if (guarded(m, p, m.addr + a, s, b - a)) {
        std::memcpy(m.known[p]->data() + a % page, s, b - a);
      }
      a = b;
    }
  }

  // Tolerant mode: re-reads every page of [0, n) of an anonymous mapping into its model, marking the
  // pages that fault as poisoned.
  void rescan(model_map& m, std::size_t n) {
    std::vector<std::uint8_t> tmp(page);
    for (std::size_t p = 0; p * page < n; ++p) {
      if (m.poisoned[p] || !(m.prot & (PROT_READ | PROT_WRITE))) continue;
      if (guarded(m, p, tmp.data(), m.addr + p * page, page)) *m.known[p] = tmp;
    }
  }
  // Tolerant mode: the model of file f takes the server's current contents (after an unacknowledged
  // request that may have changed them).
  void resync(int f) {
    model_file& mf = files_[f];
    auto a = fs_.lookup(tag_ + static_cast<char>('a' + f));
    if (!a) fail("resync: file %d is gone", f);
    const std::size_t size = static_cast<std::size_t>(a->size());
    std::vector<std::uint8_t> now(a->data(), a->data() + size);
    if (size < mf.data.size()) resize_file(f, size);  // a shrink happened: private copies past it are gone
    mf.data = std::move(now);
    ++stats_.resyncs;
  }

  // File f's size becomes n. A shrink drops what private mappings of f wrote in whole pages from the
  // new end, as Linux's truncate (vm/private_copies.hpp): those pages read the file again (SIGBUS
  // past its end, zeros after a growth). The page that holds the new end keeps its copy.
  void resize_file(int f, std::uint64_t n) {
    model_file& mf = files_[f];
    if (n < mf.data.size()) {
      const std::uint64_t first_gone = (n + page - 1) / page * page;
      for (auto& m : maps_)
        if (m.file == f && !m.shared)
          for (std::size_t p = 0; p < m.known.size(); ++p)
            if (m.off + p * page >= first_gone) m.known[p].reset();
    }
    mf.resize(n);
  }

  // Records what is now in [at, at+n) of an anonymous/private mapping as its model contents.
  void absorb(model_map& m, std::size_t at, std::size_t n) {
    for (std::size_t i = at; i < at + n; ++i) (*m.known[i / page])[i % page] = m.addr[i];
  }

  // ---- path operations (codes 15..32) ---------------------------------------------------------------
  // A second model: a small tree of names below the harness's tag (tree_paths: "d", "d/p", "d/q",
  // "d/p/r", "d/p/s", "e"), holding directories, regular files, FIFOs, sockets, dangling symlinks and
  // hard links to the model's files a, b, c (a link shares the model_file: size and mode). Every path
  // call's result is checked against the set of errnos that apply to it in the model (empty: it must
  // succeed; otherwise it must fail with one of them and change nothing), and after every path call the
  // whole tree is compared with the model by lstat (existence, type, permission bits, owner, link count,
  // size, shared inode numbers of hard links) and the files a, b, c by stat (link counts).
  struct tnode {
    mode_t mode = 0;     // type | permission bits (a linked file's bits live in its model_file)
    int file = -1;       // a hard link to files_[file]
    std::string target;  // a symlink's target (never resolvable: dangling)
  };
  using tnode_ptr = std::shared_ptr<tnode>;
  static constexpr const char* tree_paths[] = {"d", "d/p", "d/q", "d/p/r", "d/p/s", "e", "a", "b", "c"};
  static constexpr int tree_names = 6;  // the first six may be created and removed; a, b, c are the files

  std::string tfull(const std::string& rel) const { return prefix_ + rel; }
  static std::string parent_of(const std::string& rel) {
    const auto s = rel.rfind('/');
    return s == std::string::npos ? std::string() : rel.substr(0, s);
  }
  // The node at a tree path or one of the files a, b, c (nullptr: no such name).
  tnode_ptr tget(const std::string& rel) {
    if (rel.size() == 1 && rel[0] >= 'a' && rel[0] <= 'c') {
      const int f = rel[0] - 'a';
      if (!files_[f].exists) return nullptr;
      if (!file_node_[f]) file_node_[f] = std::make_shared<tnode>(tnode{S_IFREG, f, {}});
      return file_node_[f];
    }
    auto it = tree_.find(rel);
    return it == tree_.end() ? nullptr : it->second;
  }
  mode_t tmode(const tnode& n) const { return n.file >= 0 ? (S_IFREG | (files_[n.file].mode & 07777)) : n.mode; }
  bool towner(const std::string& dir, int want) {  // may the caller (owner of every tree node) `want` in dir?
    if (dir.empty()) return true;                   // the root: 0777
    return may(tmode(*tget(dir)), want);
  }
  bool has_children(const std::string& rel) const {
    for (const auto& [k, v] : tree_)
      if (k.size() > rel.size() && k.compare(0, rel.size(), rel) == 0 && k[rel.size()] == '/') return true;
    return false;
  }
  static bool inside(const std::string& a, const std::string& b) {  // a is strictly below b
    return a.size() > b.size() && a.compare(0, b.size(), b) == 0 && a[b.size()] == '/';
  }
  // The errno of walking to rel's parent (0: reachable): each directory on the way must exist, be a
  // directory (a symlink is dangling: ENOENT) and be searchable.
  int twalk(const std::string& rel) {
    for (std::size_t s = rel.find('/'); s != std::string::npos; s = rel.find('/', s + 1)) {
      const tnode_ptr n = tget(rel.substr(0, s));
      if (!n || S_ISLNK(tmode(*n))) return ENOENT;
      if (!S_ISDIR(tmode(*n))) return ENOTDIR;
      if (!may(tmode(*n), access_exec)) return EACCES;
    }
    return 0;
  }
  std::uint32_t tnlink(const tnode_ptr& n, const std::string& rel) const {
    std::uint32_t c = S_ISDIR(n->mode) ? 2 : n->file >= 0 ? 1 : 0;
    for (const auto& [k, v] : tree_)
      if (S_ISDIR(n->mode) ? S_ISDIR(v->mode) && parent_of(k) == rel : v == n) ++c;
    return c;
  }
  std::string pick_tpath(byte_reader& in, bool files_too) { return tree_paths[in.u8() % (files_too ? 9 : tree_names)]; }
  // Expects `got` to be success when `errs` is empty, else one of `errs`; returns true on success.
  bool expect_one_of(const std::error_code& got, const std::vector<int>& errs, const char* what) {
    if (errs.empty()) {
      expect_ec(got, 0, what);
      return true;
    }
    for (int e : errs)
      if (got == err(e)) {
        failed_ = true;
        return false;
      }
    std::string want;
    for (int e : errs) want += std::to_string(e) + " ";
    fail("%s: got error '%s' (%d), model expects one of errno { %s}", what, got.message().c_str(), got.value(), want.c_str());
  }
  template <class F>
  auto retried(F call) {  // tolerant mode: an injected EIO did nothing; ask again
    auto r = call();
    for (int i = 0; i < 50 && injected(r.error()); ++i) r = call();
    return r;
  }

  // The whole tree and the files' link counts, by lstat/stat.
  void check_tree(const char* after) {
    std::map<const tnode*, ino_t> inos;
    for (int i = 0; i < 9; ++i) {
      const std::string rel = tree_paths[i];
      auto st = retried([&] { return proc_.lstat(tfull(rel)); });
      const int walk = twalk(rel);
      const tnode_ptr n = walk ? nullptr : tget(rel);
      if (walk || !n) {
        if (st) fail("after %s: lstat(%s) succeeds, the model has no such name (walk errno %d)", after, rel.c_str(), walk);
        if (st.error() != err(walk ? walk : ENOENT)) fail("after %s: lstat(%s): '%s', model errno %d", after, rel.c_str(), st.error().message().c_str(), walk ? walk : ENOENT);
        continue;
      }
      if (!st) fail("after %s: lstat(%s) fails with '%s', the model has it", after, rel.c_str(), st.error().message().c_str());
      const struct ::stat& s = *st;
      const mode_t m = tmode(*n);
      if (s.st_mode != m) fail("after %s: %s has mode 0%o, the model 0%o", after, rel.c_str(), s.st_mode, m);
      if (s.st_uid != uid) fail("after %s: %s is owned by %u", after, rel.c_str(), s.st_uid);
      if (s.st_nlink != tnlink(n, rel)) fail("after %s: %s has %lu links, the model %u", after, rel.c_str(), static_cast<unsigned long>(s.st_nlink), tnlink(n, rel));
      if (n->file >= 0 && static_cast<std::uint64_t>(s.st_size) != files_[n->file].data.size()) fail("after %s: %s (a link to file %d) has size %lld, the model %zu", after, rel.c_str(), n->file, static_cast<long long>(s.st_size), files_[n->file].data.size());
      if (S_ISLNK(m) && static_cast<std::size_t>(s.st_size) != n->target.size()) fail("after %s: symlink %s has size %lld", after, rel.c_str(), static_cast<long long>(s.st_size));
      auto [it, fresh] = inos.emplace(n.get(), s.st_ino);
      if (!fresh && it->second != s.st_ino) fail("after %s: two names of one node have inodes %lu and %lu", after, static_cast<unsigned long>(it->second), static_cast<unsigned long>(s.st_ino));
    }
    if (inos.size() > 1) {  // distinct nodes, distinct inodes
      std::map<ino_t, int> seen;
      for (const auto& [n, ino] : inos)
        if (++seen[ino] > 1) fail("after %s: two different nodes share inode %lu", after, static_cast<unsigned long>(ino));
    }
  }
  // After a path call: a failed call changed nothing, a successful one exactly what the model did.
  void tree_done(const char* what) { check_tree(what); }

  void op_stat(byte_reader& in) {
    const std::uint8_t b = in.u8();
    const std::string rel = tree_paths[(b & 15) % 9];
    const bool nofollow = b & 0x80;
    note("%s(%s)", nofollow ? "lstat" : "stat", rel.c_str());
    auto st = nofollow ? proc_.lstat(tfull(rel)) : proc_.stat(tfull(rel));
    if (injected(st.error())) return;
    int want = twalk(rel);
    tnode_ptr n = want ? nullptr : tget(rel);
    if (!want && (!n || (!nofollow && S_ISLNK(tmode(*n))))) want = ENOENT;  // symlinks dangle
    expect_ec(st.error(), want, nofollow ? "lstat" : "stat");
    if (want) return;
    if (st.value().st_mode != tmode(*n) || st.value().st_nlink != tnlink(n, rel)) fail("stat(%s): mode 0%o nlink %lu, model 0%o %u", rel.c_str(), st.value().st_mode, static_cast<unsigned long>(st.value().st_nlink), tmode(*n), tnlink(n, rel));
  }

  void op_mkdir(byte_reader& in) {
    const std::string rel = pick_tpath(in, false);
    static constexpr mode_t modes[4] = {0755, 0700, 0555, 0644};
    const mode_t mode = modes[in.u8() & 3];
    note("mkdir(%s, 0%o)", rel.c_str(), mode);
    const auto ec = proc_.mkdir(tfull(rel), mode).error();
    if (injected(ec)) return;
    std::vector<int> errs;
    if (int w = twalk(rel)) errs = {w};
    else if (tget(rel)) errs = {EEXIST};
    else if (!towner(parent_of(rel), access_write)) errs = {EACCES};
    if (expect_one_of(ec, errs, "mkdir")) tree_[rel] = std::make_shared<tnode>(tnode{S_IFDIR | mode, -1, {}});
    tree_done("mkdir");
    if (errs.empty()) {
      auto st = retried([&] { return proc_.stat(tfull(rel)); });
      if (!st || !S_ISDIR(st.value().st_mode)) fail("stat after mkdir(%s) does not say directory", rel.c_str());
    }
  }

  void op_remove(byte_reader& in, bool dir) { remove_path(pick_tpath(in, false), dir); }
  void remove_path(const std::string& rel, bool dir) {
    note("%s(%s)", dir ? "rmdir" : "unlink", rel.c_str());
    const auto ec = (dir ? proc_.rmdir(tfull(rel)) : proc_.unlink(tfull(rel))).error();
    if (injected(ec)) return;
    std::vector<int> errs;
    const int w = twalk(rel);
    const tnode_ptr n = w ? nullptr : tget(rel);
    if (w) errs = {w};
    else if (!n) errs = {ENOENT};
    else {
      if (!towner(parent_of(rel), access_write)) errs.push_back(EACCES);
      const bool is_dir = S_ISDIR(tmode(*n));
      if (dir && !is_dir) errs.push_back(ENOTDIR);
      if (!dir && is_dir) errs.push_back(EISDIR);
      if (dir && is_dir && has_children(rel)) errs.push_back(ENOTEMPTY);
    }
    if (expect_one_of(ec, errs, dir ? "rmdir" : "unlink")) tree_.erase(rel);
    tree_done(dir ? "rmdir" : "unlink");
  }

  void op_rename(byte_reader& in) {
    const std::string from = pick_tpath(in, false), to = pick_tpath(in, false);
    const std::uint8_t k = in.u8() & 3;
    const unsigned flags = k == 1 ? RENAME_NOREPLACE : k == 2 ? RENAME_EXCHANGE : k == 3 ? (RENAME_NOREPLACE | RENAME_EXCHANGE) : 0;
    note("rename(%s, %s, 0x%x)", from.c_str(), to.c_str(), flags);
    const auto ec = proc_.rename(tfull(from), tfull(to), flags).error();
    if (injected(ec)) return;
    const bool exch = flags == RENAME_EXCHANGE;
    std::vector<int> errs;
    tnode_ptr s, d;
    if (k == 3) errs = {EINVAL};
    else if (int w = twalk(from)) errs = {w};
    else if (!(s = tget(from))) {
      errs = {ENOENT};
      if (int w2 = twalk(to)) errs.push_back(w2);
    } else if (int w2 = twalk(to)) errs = {w2};
    else {
      d = tget(to);
      const bool sdir = S_ISDIR(tmode(*s)), ddir = d && S_ISDIR(tmode(*d));
      if ((flags & RENAME_NOREPLACE) && d) errs.push_back(EEXIST);
      if (exch && !d) errs.push_back(ENOENT);
      if (inside(to, from)) errs.push_back(EINVAL);
      if (inside(from, to)) errs.insert(errs.end(), {exch ? EINVAL : ENOTEMPTY, EEXIST});
      if (s != d) {
        if (!towner(parent_of(from), access_write) || !towner(parent_of(to), access_write)) errs.push_back(EACCES);
        if (parent_of(from) != parent_of(to)) {  // a moved directory's ".." changes: it must be writable
          if (sdir && !may(tmode(*s), access_write)) errs.push_back(EACCES);
          if (exch && ddir && !may(tmode(*d), access_write)) errs.push_back(EACCES);
        }
        if (!exch && d) {
          if (sdir && !ddir) errs.push_back(ENOTDIR);
          if (!sdir && ddir) errs.push_back(EISDIR);
          if (ddir && has_children(to)) errs.insert(errs.end(), {ENOTEMPTY, EEXIST});
        }
      }
    }
    if (expect_one_of(ec, errs, "rename") && s != d) {
      // Move the subtrees: from -> to (and to -> from for an exchange).
      std::map<std::string, tnode_ptr> next;
      for (auto& [key, v] : tree_) {
        const bool in_from = key == from || inside(key, from), in_to = key == to || inside(key, to);
        if (in_from) next[to + key.substr(from.size())] = v;
        else if (in_to && exch) next[from + key.substr(to.size())] = v;
        else if (!in_to) next[key] = v;
      }
      tree_ = std::move(next);
    }
    tree_done("rename");
  }

  void op_link(byte_reader& in) {
    const std::string from = pick_tpath(in, true), to = pick_tpath(in, false);
    note("link(%s, %s)", from.c_str(), to.c_str());
    const auto ec = proc_.link(tfull(from), tfull(to)).error();
    if (injected(ec)) return;
    std::vector<int> errs;
    tnode_ptr s;
    if (int w = twalk(from)) errs = {w};
    else if (!(s = tget(from))) errs = {ENOENT};
    else if (int w2 = twalk(to)) errs = {w2};
    else if (tget(to)) errs = {EEXIST};
    else {
      if (!towner(parent_of(to), access_write)) errs.push_back(EACCES);
      if (S_ISDIR(tmode(*s))) errs.push_back(EPERM);
    }
    if (expect_one_of(ec, errs, "link")) tree_[to] = s;
    tree_done("link");
  }

  void op_symlink(byte_reader& in) {
    static constexpr const char* targets[4] = {"zz0", "zz1/x", "../zz2", "a-very-long-dangling-target-zz3"};
    const std::string target = targets[in.u8() & 3];
    const std::string rel = pick_tpath(in, false);
    note("symlink(%s, %s)", target.c_str(), rel.c_str());
    const auto ec = proc_.symlink(target, tfull(rel)).error();
    if (injected(ec)) return;
    std::vector<int> errs;
    if (int w = twalk(rel)) errs = {w};
    else if (tget(rel)) errs = {EEXIST};
    else if (!towner(parent_of(rel), access_write)) errs = {EACCES};
    if (expect_one_of(ec, errs, "symlink")) tree_[rel] = std::make_shared<tnode>(tnode{S_IFLNK | 0777, -1, target});
    tree_done("symlink");
  }

  void op_readlink(byte_reader& in) {
    const std::string rel = pick_tpath(in, true);
    const std::size_t n = 1 + in.u8() % 40;
    char buf[64];
    std::memset(buf, 0x5a, sizeof buf);
    note("readlink(%s, %zu)", rel.c_str(), n);
    auto r = proc_.readlink(tfull(rel), buf, n);
    if (injected(r.error())) return;
    int want = twalk(rel);
    const tnode_ptr t = want ? nullptr : tget(rel);
    if (!want && !t) want = ENOENT;
    if (!want && !S_ISLNK(tmode(*t))) want = EINVAL;
    expect_ec(r.error(), want, "readlink");
    if (want) return;
    const std::size_t len = std::min(n, t->target.size());
    if (*r != len || std::memcmp(buf, t->target.data(), len) != 0) fail("readlink(%s): %zu bytes, model '%s'", rel.c_str(), *r, t->target.c_str());
    if (len < sizeof buf && static_cast<unsigned char>(buf[len]) != 0x5a) fail("readlink(%s) wrote past the bytes it returned", rel.c_str());
  }

  void op_mknod(byte_reader& in) {
    static constexpr mode_t types[6] = {S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFDIR, 0};
    const std::uint8_t b = in.u8();
    const mode_t type = types[b % 6];
    const mode_t mode = type | ((b & 0x80) ? 0600 : 0644);
    const std::string rel = pick_tpath(in, false);
    note("mknod(%s, 0%o)", rel.c_str(), mode);
    const auto ec = proc_.mknod(tfull(rel), mode, 0).error();
    if (injected(ec)) return;
    std::vector<int> errs;
    if (type == S_IFDIR) errs = {EPERM};
    else if (int w = twalk(rel)) errs = {w};
    else if (tget(rel)) errs = {EEXIST};
    else if (!towner(parent_of(rel), access_write)) errs = {EACCES};
    else if (type == S_IFCHR) errs = {EPERM};  // not uid 0
    if (expect_one_of(ec, errs, "mknod")) tree_[rel] = std::make_shared<tnode>(tnode{(type ? type : S_IFREG) | (mode & 07777), -1, {}});
    tree_done("mknod");
  }

  void op_access(byte_reader& in) {
    static constexpr int modes[8] = {F_OK, R_OK, W_OK, X_OK, R_OK | W_OK, R_OK | W_OK | X_OK, 8, W_OK | X_OK};
    const std::uint8_t b = in.u8();
    const std::string rel = tree_paths[(b & 15) % 9];
    const int mode = modes[(b >> 4) & 7];
    note("access(%s, %d)", rel.c_str(), mode);
    const auto ec = proc_.access(tfull(rel), mode).error();
    if (injected(ec)) return;
    int want = mode == 8 ? EINVAL : twalk(rel);
    const tnode_ptr n = want ? nullptr : tget(rel);
    if (!want && (!n || S_ISLNK(tmode(*n)))) want = ENOENT;
    if (!want && mode != F_OK) {
      const int need = ((mode & R_OK) ? access_read : 0) | ((mode & W_OK) ? access_write : 0) | ((mode & X_OK) ? access_exec : 0);
      if (!may(tmode(*n), need)) want = EACCES;
    }
    expect_ec(ec, want, "access");
  }

  // chmod by path (tree names and the files) or fchmod of an open fd.
  void op_chmod(byte_reader& in, bool by_fd) {
    static constexpr mode_t modes[8] = {0755, 0700, 0555, 0644, 0600, 0444, 0000, 0200};
    const std::uint8_t b = in.u8();
    const mode_t mode = modes[(b >> 4) & 7];
    std::error_code ec;
    tnode_ptr n;
    int want = 0;
    if (by_fd) {
      const int fd = pick_fd(in);
      note("fchmod(%d, 0%o)", fd, mode);
      ec = proc_.fchmod(fd, mode).error();
      if (injected(ec)) return;
      if (!fds_.count(fd)) want = EBADF;
      else n = tget(std::string(1, static_cast<char>('a' + fds_.at(fd).file)));
      if (!want && !n) {  // an fd's file always has its name a, b or c (nothing removes them)
        fail("fchmod: the model has no file for fd %d", fd);
      }
    } else {
      const std::string rel = tree_paths[(b & 15) % 9];
      note("chmod(%s, 0%o)", rel.c_str(), mode);
      ec = proc_.chmod(tfull(rel), mode).error();
      if (injected(ec)) return;
      want = twalk(rel);
      n = want ? nullptr : tget(rel);
      if (!want && (!n || S_ISLNK(tmode(*n)))) want = ENOENT;
    }
    expect_ec(ec, want, by_fd ? "fchmod" : "chmod");
    if (!want) {
      if (n->file >= 0) files_[n->file].mode = mode;
      else n->mode = (n->mode & S_IFMT) | mode;
    }
    tree_done(by_fd ? "fchmod" : "chmod");
  }

  void op_chown(byte_reader& in) {
    const std::uint8_t b = in.u8();
    const std::string rel = tree_paths[(b & 15) % 9];
    static constexpr std::uint32_t none = static_cast<std::uint32_t>(-1);
    static constexpr std::uint32_t ids[5][2] = {{none, none}, {uid, gid}, {uid, none}, {0, none}, {none, 0}};
    const auto* id = ids[((b >> 4) & 7) % 5];
    const bool nofollow = b & 0x80;
    note("%schown(%s, %d, %d)", nofollow ? "l" : "", rel.c_str(), static_cast<int>(id[0]), static_cast<int>(id[1]));
    const auto ec = (nofollow ? proc_.lchown(tfull(rel), id[0], id[1]) : proc_.chown(tfull(rel), id[0], id[1])).error();
    if (injected(ec)) return;
    int want = twalk(rel);
    const tnode_ptr n = want ? nullptr : tget(rel);
    if (!want && (!n || (!nofollow && S_ISLNK(tmode(*n))))) want = ENOENT;
    if (!want && ((id[0] != none && id[0] != uid) || (id[1] != none && id[1] != gid))) want = EPERM;
    expect_ec(ec, want, "chown");
    tree_done("chown");
  }

  // utimensat with explicit times, UTIME_NOW or UTIME_OMIT; explicit times read back exactly.
  void op_utimens(byte_reader& in) {
    const std::uint8_t b = in.u8();
    const std::string rel = tree_paths[(b & 15) % 9];
    const bool nofollow = b & 0x80;
    struct ::timespec ts[2];
    for (auto& t : ts) {
      const std::uint32_t v = in.u32();
      t.tv_sec = static_cast<time_t>(v >> 2);
      t.tv_nsec = (v & 3) == 1 ? UTIME_NOW : (v & 3) == 2 ? UTIME_OMIT : static_cast<long>(v % 1000000000u);
    }
    note("utimensat(%s, %lld.%ld, %lld.%ld, %s)", rel.c_str(), static_cast<long long>(ts[0].tv_sec), ts[0].tv_nsec, static_cast<long long>(ts[1].tv_sec), ts[1].tv_nsec, nofollow ? "nofollow" : "follow");
    struct ::stat before {};
    const auto pre = proc_.lstat(tfull(rel));
    const bool had = pre.ok();
    if (had) before = *pre;
    const auto ec = proc_.utimensat(tfull(rel), ts, nofollow ? AT_SYMLINK_NOFOLLOW : 0).error();
    if (injected(ec)) return;
    int want = twalk(rel);
    const tnode_ptr n = want ? nullptr : tget(rel);
    if (!want && (!n || (!nofollow && S_ISLNK(tmode(*n))))) want = ENOENT;
    expect_ec(ec, want, "utimensat");
    if (want) return;
    auto st = retried([&] { return proc_.lstat(tfull(rel)); });
    if (!st) fail("lstat after utimensat(%s): %s", rel.c_str(), st.error().message().c_str());
    const struct ::timespec got[2] = {st.value().st_atim, st.value().st_mtim};
    for (int i = 0; i < 2; ++i) {
      if (ts[i].tv_nsec == UTIME_NOW) continue;
      const struct ::timespec w = ts[i].tv_nsec == UTIME_OMIT ? (i ? before.st_mtim : before.st_atim) : ts[i];
      if (ts[i].tv_nsec == UTIME_OMIT && !had) continue;
      if (got[i].tv_sec != w.tv_sec || got[i].tv_nsec != w.tv_nsec)
        fail("utimensat(%s): %s time reads back %lld.%09ld, set %lld.%09ld", rel.c_str(), i ? "modification" : "access", static_cast<long long>(got[i].tv_sec), got[i].tv_nsec, static_cast<long long>(w.tv_sec), w.tv_nsec);
    }
  }

  void op_fsync(byte_reader& in) {
    const std::uint8_t b = in.u8();
    const int fd = pick_fd(in);
    note("%s(%d)", (b & 1) ? "fdatasync" : "fsync", fd);
    const auto ec = ((b & 1) ? proc_.fdatasync(fd) : proc_.fsync(fd)).error();
    if (!injected(ec)) expect_ec(ec, fds_.count(fd) ? 0 : EBADF, "fsync");
  }

  void op_statvfs(byte_reader& in) {
    const std::uint8_t b = in.u8();
    const int fd = pick_fd(in);
    note((b & 1) ? "fstatvfs(%d)" : "statvfs(prefix)", fd);
    auto r = (b & 1) ? proc_.fstatvfs(fd) : proc_.statvfs(fs_.prefix());
    if (injected(r.error())) return;
    expect_ec(r.error(), (b & 1) && !fds_.count(fd) ? EBADF : 0, "statvfs");
    if (r && (r.value().f_bsize == 0 || r.value().f_namemax != 255)) fail("statvfs: f_bsize %lu, f_namemax %lu", static_cast<unsigned long>(r.value().f_bsize), static_cast<unsigned long>(r.value().f_namemax));
  }

  // open(O_DIRECTORY) + readdir to the end + close: the names are the model's children.
  // With `unlink_during`: one record per call, and after `after` records (".", ".." included) the tree
  // name `victim` is removed (unlink, or rmdir for a directory in the model): positions stay valid, so
  // every remaining name is still listed exactly once, and the removed one at most once.
  void op_readdir(byte_reader& in, bool unlink_during) {
    const std::uint8_t b = in.u8();
    static constexpr const char* dirs[5] = {"d", "d/p", "d/q", "e", "a"};
    const std::string rel = dirs[(b & 15) % 5];
    const std::size_t bufsz = (b & 0x80) || unlink_during ? 40 : 4096;  // 40: one record per call
    const std::string victim = unlink_during ? pick_tpath(in, false) : std::string();
    const int after = unlink_during ? in.u8() % 5 : -1;
    note("readdir(%s, buffer %zu%s%s)", rel.c_str(), bufsz, unlink_during ? ", then removes " : "", victim.c_str());
    auto fd = proc_.open(tfull(rel), O_RDONLY | O_DIRECTORY);
    if (injected(fd.error())) return;
    int want = twalk(rel);
    const tnode_ptr n = want ? nullptr : tget(rel);
    if (!want && (!n || S_ISLNK(tmode(*n)))) want = ENOENT;
    if (!want && !S_ISDIR(tmode(*n))) want = ENOTDIR;
    if (!want && !may(tmode(*n), access_read)) want = EACCES;
    expect_ec(fd.error(), want, "open(O_DIRECTORY)");
    if (want) return;
    if (*fd != lowest_free_fd()) fail("open(O_DIRECTORY): fd %d, model %d", *fd, lowest_free_fd());
    std::vector<std::string> got;
    std::uint64_t pos = 0;
    alignas(8) std::uint8_t buf[4096];
    bool removed = false;
    for (int calls = 0; calls < 64; ++calls) {
      if (calls == after) {
        const tnode_ptr v = twalk(victim) ? nullptr : tget(victim);
        const std::size_t before = tree_.size();
        remove_path(victim, v && S_ISDIR(tmode(*v)));
        removed = tree_.size() < before;
      }
      auto r = retried([&] { return proc_.readdir(*fd, pos, buf, bufsz); });
      if (!r) fail("readdir(%s): %s", rel.c_str(), r.error().message().c_str());
      if (*r == 0) break;
      for (std::size_t at = 0; at < *r;) {
        io_dirent e;
        std::memcpy(&e, buf + at, sizeof e);
        if (e.reclen == 0 || at + e.reclen > *r) fail("readdir(%s): bad record length %u", rel.c_str(), e.reclen);
        const std::string name(reinterpret_cast<const char*>(buf + at + sizeof e), e.namelen);
        if (name != "." && name != "..") got.push_back(name);
        pos = e.next;
        at += e.reclen;
      }
    }
    (void)proc_.close(*fd);
    std::vector<std::string> model;
    for (const auto& [k, v] : tree_)
      if (parent_of(k) == rel) model.push_back(k.substr(rel.size() + 1));
    std::sort(got.begin(), got.end());
    if (removed && parent_of(victim) == rel) {  // the removed name: listed once if read before its removal
      const std::string gone = victim.substr(rel.size() + 1);
      if (std::count(got.begin(), got.end(), gone) == 1) model.insert(std::lower_bound(model.begin(), model.end(), gone), gone);
    }
    if (got != model) {
      std::string g, m;
      for (const auto& s : got) g += s + " ";
      for (const auto& s : model) m += s + " ";
      fail("readdir(%s): names { %s}, model { %s}", rel.c_str(), g.c_str(), m.c_str());
    }
  }

  // Leaves the store as the harness found it (the soak runs harnesses one after another on one tag):
  // every tree name is removed, deepest first, after making its directory writable again.
  void clean_tree() {
    for (const auto& entry : tree_)
      if (S_ISDIR(entry.second->mode) && entry.second->file < 0) (void)retried([&] { return proc_.chmod(tfull(entry.first), 0700); });
    for (auto it = tree_.rbegin(); it != tree_.rend(); ++it) {
      const bool dir = S_ISDIR(it->second->mode) && it->second->file < 0;
      auto r = retried([&] { return dir ? proc_.rmdir(tfull(it->first)) : proc_.unlink(tfull(it->first)); });
      if (r.error()) fail("cleaning up %s: %s", it->first.c_str(), r.error().message().c_str());
    }
    tree_.clear();
  }

  void final_check() {
    for (int f = 0; f < file_count; ++f) {
      const model_file& mf = files_[f];
      auto fd = proc_.open(path(f), O_RDONLY);
      for (int retry = 0; retry < 50 && injected(fd.error()); ++retry) fd = proc_.open(path(f), O_RDONLY);
      if (!mf.exists) {
        expect_ec(fd.error(), ENOENT, "final open of a missing file");
        continue;
      }
      if (!may(mf.mode, access_read)) {
        expect_ec(fd.error(), EACCES, "final open of an unreadable file");
        auto a = fs_.lookup(tag_ + static_cast<char>('a' + f));
        if (!a || a->size() != mf.data.size() || (mf.data.size() && std::memcmp(a->data(), mf.data.data(), mf.data.size()) != 0))
          fail("final: file %d (unreadable) differs from the model in the store", f);
        continue;
      }
      expect_ec(fd.error(), 0, "final open");
      std::vector<std::uint8_t> got(mf.data.size() + 10);
      auto r = proc_.pread(*fd, got.data(), got.size(), 0);
      for (int retry = 0; retry < 50 && injected(r.error()); ++retry) r = proc_.pread(*fd, got.data(), got.size(), 0);
      if (!r || *r != mf.data.size() || (!mf.data.empty() && std::memcmp(got.data(), mf.data.data(), mf.data.size()) != 0))
        fail("final: file %d differs from the model (size %zu vs %zu)", f, r ? *r : 0, mf.data.size());
      (void)proc_.close(*fd);
    }
  }

  static bool uffd_ok() {
    static const bool ok = [] {
      std::string why;
      if (auto ec = probe_userfaultfd(why)) {
        std::fprintf(stderr, "process_fuzzer: userfaultfd refused (%s): mmap operations skipped\n", why.c_str());
        return false;
      }
      return true;
    }();
    return ok;
  }

  using op_fn = void (*)(harness&, byte_reader&);
  static constexpr std::size_t op_codes = 33;  // one past the highest code in op_table
  // Defined after the class (Clang rejects member access into the class inside its own definition).
  static const op_fn op_table[op_codes];

  ramfs& fs_;
  std::string prefix_, tag_;
  bool tolerant_;
  bool dense_;
  bool failed_ = false;  // the current step made a call that failed (checked against the store)
  model_file own_files_[file_count];
  model_file* files_;
  harness_stats stats_;
  process proc_;  // after the models; destroyed before them
  std::map<int, model_fd> fds_;
  std::vector<model_map> maps_;
  std::map<std::string, tnode_ptr> tree_;  // tree path -> node (the path operations' model)
  tnode_ptr file_node_[file_count];        // files a, b, c as nodes (made when first named by a path call)
  std::vector<std::string> log_;
};

// The operation table (see harness::step): an entry's index is its stable code; nullptr = no operation.
inline const harness::op_fn harness::op_table[harness::op_codes] = {
    /*  0 */ [](harness& h, byte_reader& in) { h.op_open(in); },
    /*  1 */ [](harness& h, byte_reader& in) { h.op_open(in); },
    /*  2 */ [](harness& h, byte_reader& in) { h.op_close(in); },
    /*  3 */ [](harness& h, byte_reader& in) { h.op_rw(in, false, false); },
    /*  4 */ [](harness& h, byte_reader& in) { h.op_rw(in, true, false); },
    /*  5 */ [](harness& h, byte_reader& in) { h.op_rw(in, false, true); },
    /*  6 */ [](harness& h, byte_reader& in) { h.op_rw(in, true, true); },
    /*  7 */ [](harness& h, byte_reader& in) { h.op_lseek(in); },
    /*  8 */ [](harness& h, byte_reader& in) { h.op_ftruncate(in); },
    /*  9 */ [](harness& h, byte_reader& in) { h.op_mmap(in); },
    /* 10 */ [](harness& h, byte_reader& in) { h.op_munmap(in); },
    /* 11 */ [](harness& h, byte_reader& in) { h.op_mprotect(in); },
    /* 12 */ [](harness& h, byte_reader& in) { h.op_mem(in, false); },
    /* 13 */ [](harness& h, byte_reader& in) { h.op_mem(in, true); },
    /* 14 */ [](harness& h, byte_reader& in) { h.op_fallocate(in); },
    /* 15 */ [](harness& h, byte_reader& in) { h.op_stat(in); },
    /* 16 */ [](harness& h, byte_reader& in) { h.op_mkdir(in); },
    /* 17 */ [](harness& h, byte_reader& in) { h.op_remove(in, true); },
    /* 18 */ [](harness& h, byte_reader& in) { h.op_remove(in, false); },
    /* 19 */ [](harness& h, byte_reader& in) { h.op_rename(in); },
    /* 20 */ [](harness& h, byte_reader& in) { h.op_link(in); },
    /* 21 */ [](harness& h, byte_reader& in) { h.op_symlink(in); },
    /* 22 */ [](harness& h, byte_reader& in) { h.op_readlink(in); },
    /* 23 */ [](harness& h, byte_reader& in) { h.op_mknod(in); },
    /* 24 */ [](harness& h, byte_reader& in) { h.op_access(in); },
    /* 25 */ [](harness& h, byte_reader& in) { h.op_chmod(in, false); },
    /* 26 */ [](harness& h, byte_reader& in) { h.op_chown(in); },
    /* 27 */ [](harness& h, byte_reader& in) { h.op_utimens(in); },
    /* 28 */ [](harness& h, byte_reader& in) { h.op_fsync(in); },
    /* 29 */ [](harness& h, byte_reader& in) { h.op_statvfs(in); },
    /* 30 */ [](harness& h, byte_reader& in) { h.op_readdir(in, false); },
    /* 31 */ [](harness& h, byte_reader& in) { h.op_chmod(in, true); },
    /* 32 */ [](harness& h, byte_reader& in) { h.op_readdir(in, true); },
};

/// Runs one input. Aborts (after printing the operation log) on any mismatch with the model.
inline void run_process_sequence(const std::uint8_t* data, std::size_t size, encoding ops = encoding::stable) {
  byte_reader in(data, size);
  world w;
  harness_options o;
  o.ns = &w.ns;
  o.fs = &w.fs;
  o.ops = ops;
  harness h(o);
  h.run(in);
}

}  // namespace fuzzharness
