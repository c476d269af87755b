// faultsafe/vm/detail/uffd.hpp: an owning userfaultfd and its ioctls with std::error_code results
// (internal to vm/).
//
// Defines `detail::uffd`: opens a userfaultfd with O_CLOEXEC | O_NONBLOCK and UFFD_USER_MODE_ONLY (or
// without it, for kernel-mode faults: try_open's `kernel_faults`) (the system call first,
// /dev/userfaultfd as a fallback), negotiates the API with the wanted features, adopts one received
// from another process (try_adopt), and wraps REGISTER / UNREGISTER / COPY / ZEROPAGE / CONTINUE /
// POISON / WAKE. Every ioctl acts on the address space of the process that CREATED the userfaultfd
// (the kernel's ctx->mm), whichever process calls it: a server holding a client's userfaultfd fills
// the client's pages (the source of a COPY is read from the caller's memory).
//
// Error contract of the fill ioctls (copy, zeropage, continue_range, poison): they return the number of
// bytes filled and an error_code:
//   - {} with done == len: everything filled;
//   - EEXIST: a page at `start + done` was already mapped (another fault thread, or an earlier window,
//     filled it): not an error for a pager, which then wakes the faulting thread;
//   - EAGAIN: the mm was changing (fork/mremap events) and the caller should retry the remainder;
//   - ENOENT / ESRCH: the range is no longer registered (munmap raced) or the mm has gone;
//   - EFAULT (continue_range): the page at `start + done` is not in the page cache;
//   - anything else: as the kernel said.
// Every fill wakes the threads waiting on the filled range unless `dont_wake` is passed.
//
// Thread-safety: all member functions may be called concurrently (the kernel serialises). Lock order:
// none taken. Lifetime: the fd is closed by the destructor, which also releases every registration and
// wakes every thread blocked on it (kernel behaviour).
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>

// Kernel >= 6.6 uapi; older libc headers (Debian 12) lack these.
#ifndef UFFD_FEATURE_POISON
#  define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef _UFFDIO_POISON
#  define _UFFDIO_POISON (0x08)
struct uffdio_poison {
  struct uffdio_range range;
#  define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
  __u64 mode;
  __s64 updated;
};
#  define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFD_USER_MODE_ONLY
#  define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#  define USERFAULTFD_IOC 0xAA
#  define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

namespace faultsafe::detail {

/// Registration modes (UFFDIO_REGISTER_MODE_*), combinable.
enum class uffd_mode : std::uint64_t {
  missing = UFFDIO_REGISTER_MODE_MISSING,
  minor = UFFDIO_REGISTER_MODE_MINOR,
  missing_and_minor = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
};

/// Result of a fill ioctl: bytes filled from the start, and why it stopped (see header).
struct uffd_fill_result {
  std::size_t done = 0;
  std::error_code error;
};

class uffd {
 public:
  /// Features the pager asks for when the kernel offers them.
  static constexpr std::uint64_t wanted_features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM |
                                                   UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON;
  /// Features without which no faultsafe pager can work.
  static constexpr std::uint64_t required_features = UFFD_FEATURE_THREAD_ID;

  uffd() = default;
  uffd(const uffd&) = delete;
  uffd& operator=(const uffd&) = delete;
  uffd(uffd&& o) noexcept : fd_(std::exchange(o.fd_, -1)), features_(o.features_) {}
  uffd& operator=(uffd&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      features_ = o.features_;
    }
    return *this;
  }
  ~uffd() { close(); }

  /// Effects: opens and initialises a userfaultfd asking for `wanted_features | extra` (those the
  /// kernel has; `extra` must all be there, e.g. the UFFD_FEATURE_EVENT_* a cross-process mapping
  /// needs). `kernel_faults`: created WITHOUT UFFD_USER_MODE_ONLY, so faults taken by the kernel on
  /// behalf of a system call (copy_to_user, process_vm_writev, GUP) wait for the pager too (needs
  /// /dev/userfaultfd access, CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1); otherwise such a fault
  /// fails the system call with EFAULT.
  /// Returns: the error and, in `why`, a sentence naming the cause (EPERM: vm.unprivileged_userfaultfd).
  /// Throws: std::bad_alloc only.
  [[nodiscard]] static std::error_code try_open(uffd& out, std::string& why, std::uint64_t extra = 0,
                                                bool kernel_faults = false) {
    const int flags = O_CLOEXEC | O_NONBLOCK | (kernel_faults ? 0 : UFFD_USER_MODE_ONLY);
    int err = 0;
    int fd = open_raw(flags, err);
    if (fd < 0) {
      if (err == EPERM)
        why = kernel_faults ? "userfaultfd without UFFD_USER_MODE_ONLY refused with EPERM: kernel-mode faults "
                              "need access to /dev/userfaultfd, CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1"
                            : "userfaultfd(UFFD_USER_MODE_ONLY) refused with EPERM: the kernel forbids unprivileged "
                              "userfaultfd (sysctl vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE, or a seccomp "
                              "filter) and /dev/userfaultfd is not accessible";
      else if (err == ENOSYS)
        why = "userfaultfd: the kernel was built without CONFIG_USERFAULTFD (ENOSYS)";
      else
        why = std::string("userfaultfd() failed: ") + std::generic_category().message(err) +
              " (see sysctl vm.unprivileged_userfaultfd)";
      return {err, std::generic_category()};
    }
    // Probe the features: UFFDIO_API with features=0 reports everything the kernel supports.
    uffdio_api probe{};
    probe.api = UFFD_API;
    if (::ioctl(fd, UFFDIO_API, &probe) != 0) {
      err = errno;
      ::close(fd);
      why = std::string("UFFDIO_API failed: ") + std::generic_category().message(err);
      return {err, std::generic_category()};
    }
    ::close(fd);  // UFFDIO_API may be done once per fd: reopen and ask for the subset we want.
    fd = open_raw(flags, err);
    if (fd < 0) {
      why = "userfaultfd reopen failed";
      return {err, std::generic_category()};
    }
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = probe.features & (wanted_features | extra);
    if ((api.features & (required_features | extra)) != (required_features | extra)) {
      ::close(fd);
      why = (api.features & required_features) != required_features
                ? "userfaultfd lacks UFFD_FEATURE_THREAD_ID (Linux >= 4.14 required)"
                : "userfaultfd lacks a feature this mapping needs (UFFD_FEATURE_EVENT_*)";
      return std::make_error_code(std::errc::function_not_supported);
    }
    if (::ioctl(fd, UFFDIO_API, &api) != 0) {
      err = errno;
      ::close(fd);
      why = std::string("UFFDIO_API with features failed: ") + std::generic_category().message(err);
      return {err, std::generic_category()};
    }
    out = uffd();
    out.fd_ = fd;
    out.features_ = api.features;
    return {};
  }

  /// Effects: takes ownership of `fd`, a userfaultfd initialised elsewhere (received from another
  /// process with SCM_RIGHTS) with `features`. The fd is checked to be a userfaultfd (its
  /// /proc/self/fd link is "anon_inode:[userfaultfd]"); `features` is the sender's word: a wrong value
  /// only makes later ioctls fail (EINVAL), it grants nothing.
  /// Returns: EBADF (not an open fd), EINVAL (not a userfaultfd, or no UFFD_FEATURE_THREAD_ID); `fd` is
  /// closed on failure too. Throws: nothing.
  [[nodiscard]] static std::error_code try_adopt(uffd& out, int fd, std::uint64_t features) noexcept {
    if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
    char link[64];
    char path[48];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(path, link, sizeof link - 1);
    if (n < 0) {
      const int e = errno == ENOENT ? EBADF : errno;
      ::close(fd);
      return {e, std::generic_category()};
    }
    link[n] = '\0';
    if (std::strcmp(link, "anon_inode:[userfaultfd]") != 0 || (features & required_features) != required_features) {
      ::close(fd);
      return std::make_error_code(std::errc::invalid_argument);
    }
    out = uffd();
    out.fd_ = fd;
    out.features_ = features;
    return {};
  }

  /// Effects: as try_open. Throws: std::system_error whose what() names the cause.
  static uffd open() {
    uffd u;
    std::string why;
    if (auto ec = try_open(u, why)) throw std::system_error(ec, why);
    return u;
  }

  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  [[nodiscard]] std::uint64_t features() const noexcept { return features_; }
  [[nodiscard]] bool has(std::uint64_t feature) const noexcept { return (features_ & feature) == feature; }

  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  /// Effects: registers [start, start+len) (page aligned) in `mode`. Returns the kernel's error
  /// (EINVAL: unaligned or mode not supported for this mapping; EBUSY: registered with another uffd).
  [[nodiscard]] std::error_code register_range(void* start, std::size_t len, uffd_mode mode) const noexcept {
    uffdio_register r{};
    r.range.start = reinterpret_cast<std::uintptr_t>(start);
    r.range.len = len;
    r.mode = static_cast<std::uint64_t>(mode);
    if (::ioctl(fd_, UFFDIO_REGISTER, &r) != 0) return {errno, std::generic_category()};
    return {};
  }

  /// Effects: unregisters the range; the kernel wakes every thread blocked on a fault in it.
  [[nodiscard]] std::error_code unregister_range(void* start, std::size_t len) const noexcept {
    uffdio_range r{reinterpret_cast<std::uintptr_t>(start), len};
    if (::ioctl(fd_, UFFDIO_UNREGISTER, &r) != 0) return {errno, std::generic_category()};
    return {};
  }

  /// Effects: wakes the threads blocked on faults in the range (no VMA needs to exist there).
  [[nodiscard]] std::error_code wake(std::uintptr_t start, std::size_t len) const noexcept {
    uffdio_range r{start, len};
    if (::ioctl(fd_, UFFDIO_WAKE, &r) != 0) return {errno, std::generic_category()};
    return {};
  }

  /// Effects: UFFDIO_COPY `len` bytes from `src` to `dst` (MISSING mode, anonymous or shmem).
  [[nodiscard]] uffd_fill_result copy(std::uintptr_t dst, const void* src, std::size_t len,
                                      bool dont_wake = false) const noexcept {
    uffdio_copy c{};
    c.dst = dst;
    c.src = reinterpret_cast<std::uintptr_t>(src);
    c.len = len;
    c.mode = dont_wake ? UFFDIO_COPY_MODE_DONTWAKE : 0;
    const int r = ::ioctl(fd_, UFFDIO_COPY, &c);
    return result_of_ioctl(r, c.copy, len);
  }

  /// Effects: UFFDIO_ZEROPAGE over the range (MISSING mode, anonymous).
  [[nodiscard]] uffd_fill_result zeropage(std::uintptr_t dst, std::size_t len, bool dont_wake = false) const noexcept {
    uffdio_zeropage z{};
    z.range.start = dst;
    z.range.len = len;
    z.mode = dont_wake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0;
    const int r = ::ioctl(fd_, UFFDIO_ZEROPAGE, &z);
    return result_of_ioctl(r, z.zeropage, len);
  }

  /// Effects: UFFDIO_CONTINUE: maps the page-cache pages behind the range (MINOR mode, shmem).
  [[nodiscard]] uffd_fill_result continue_range(std::uintptr_t dst, std::size_t len,
                                                bool dont_wake = false) const noexcept {
    uffdio_continue c{};
    c.range.start = dst;
    c.range.len = len;
    c.mode = dont_wake ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0;
    const int r = ::ioctl(fd_, UFFDIO_CONTINUE, &c);
    return result_of_ioctl(r, c.mapped, len);
  }

  /// Effects: UFFDIO_POISON: later accesses to the range raise SIGBUS. Requires has(UFFD_FEATURE_POISON).
  [[nodiscard]] uffd_fill_result poison(std::uintptr_t dst, std::size_t len, bool dont_wake = false) const noexcept {
    uffdio_poison p{};
    p.range.start = dst;
    p.range.len = len;
    p.mode = dont_wake ? UFFDIO_POISON_MODE_DONTWAKE : 0;
    const int r = ::ioctl(fd_, UFFDIO_POISON, &p);
    return result_of_ioctl(r, p.updated, len);
  }

 private:
  // The system call first; /dev/userfaultfd (Linux >= 6.1, governed by its file mode, not the sysctl)
  // as a fallback. Returns the fd or -1 with the system call's errno in `err`.
  static int open_raw(int flags, int& err) noexcept {
    int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
    err = fd < 0 ? errno : 0;
    if (fd < 0) {
      const int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
      if (dev >= 0) {
        fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, flags);
        ::close(dev);
      }
    }
    return fd;
  }

  static uffd_fill_result result_of_ioctl(int r, std::int64_t reported, std::size_t len) noexcept {
    uffd_fill_result out;
    if (r == 0) {
      out.done = len;
      return out;
    }
    const int err = errno;
    // On partial success the kernel stores the bytes done (> 0) and fails with EAGAIN (or the error
    // that stopped it); otherwise it stores -errno.
    out.done = reported > 0 ? static_cast<std::size_t>(reported) : 0;
    out.error = std::error_code(reported < 0 ? static_cast<int>(-reported) : err, std::generic_category());
    if (reported > 0 && out.done < len) out.error = std::error_code(err, std::generic_category());
    return out;
  }

  int fd_ = -1;
  std::uint64_t features_ = 0;
};

}  // namespace faultsafe::detail
