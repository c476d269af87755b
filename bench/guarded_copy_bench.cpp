// The guarded copies of detail/guarded_copy.hpp beside a plain memcpy, in the same run:
//   BM_Memcpy            std::memcpy (the baseline)
//   BM_GuardedMemcpy     guarded_memcpy: one sigsetjmp + one memmove (reads and replies)
//   BM_GuardedCopyPrefix guarded_copy_prefix: one sigsetjmp + one memcpy per piece that crosses no page
//                        boundary of the source (writes into the store: exact short counts)
// Arguments: bytes copied; the source is offset by 100 bytes from a page boundary (a client buffer is
// rarely page-aligned), so guarded_copy_prefix copies n/4096 + 1 pieces.
#include <benchmark/benchmark.h>
#include <faultsafe/detail/guarded_copy.hpp>

#include <cstring>
#include <vector>

namespace {

struct buffers {
  explicit buffers(std::size_t n) : src(n + 8192, 1), dst(n + 8192, 0) {}
  std::vector<unsigned char> src, dst;
  // dst page-aligned (the store), src 100 bytes past a page boundary
  unsigned char* to() { return align(dst.data()); }
  const unsigned char* from() { return align(src.data()) + 100; }
  static unsigned char* align(unsigned char* p) {
    return reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(p) + 4095) & ~std::uintptr_t{4095});
  }
};

template <class Copy>
void run_copy(benchmark::State& state, Copy copy) {
  const auto n = static_cast<std::size_t>(state.range(0));
  buffers b(n);
  for (auto _ : state) {
    copy(b.to(), b.from(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_Memcpy(benchmark::State& state) {
  run_copy(state, [](void* d, const void* s, std::size_t n) { std::memcpy(d, s, n); });
}
void BM_GuardedMemcpy(benchmark::State& state) {
  run_copy(state, [](void* d, const void* s, std::size_t n) {
    benchmark::DoNotOptimize(faultsafe::detail::guarded_memcpy(d, s, n));
  });
}
void BM_GuardedCopyPrefix(benchmark::State& state) {
  run_copy(state, [](void* d, const void* s, std::size_t n) {
    benchmark::DoNotOptimize(faultsafe::detail::guarded_copy_prefix(d, s, n));
  });
}

}  // namespace

BENCHMARK(BM_Memcpy)->Arg(4096)->Arg(65536)->Arg(1 << 20);
BENCHMARK(BM_GuardedMemcpy)->Arg(4096)->Arg(65536)->Arg(1 << 20);
BENCHMARK(BM_GuardedCopyPrefix)->Arg(4096)->Arg(65536)->Arg(1 << 20);
BENCHMARK_MAIN();
