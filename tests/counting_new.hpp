// A counting replacement of the global operator new/delete, for the no-allocation tests. Include it
// in exactly ONE translation unit of a test executable (it defines the replacements); read the count
// with counting_new::allocations(). Every C++ allocation of every thread is counted.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace counting_new {
inline std::atomic<long> count{0};
inline long allocations() noexcept { return count.load(std::memory_order_relaxed); }
}  // namespace counting_new

// The replacements pair malloc with free, which is correct; GCC 12 at -O2 sees free() reached from
// inlined `new` expressions elsewhere and reports -Wmismatched-new-delete anyway (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  counting_new::count.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic pop
#endif
