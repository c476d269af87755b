// faultsafe/source_location.hpp: `faultsafe::source_location`, std::source_location where the standard
// library has it, and an equivalent built on __builtin_FILE/__builtin_LINE where it does not (clang 14
// with libstdc++ 12, used for -Wthread-safety and libFuzzer builds). Same members: current(),
// file_name(), line(), function_name().
#pragma once

#include <cstdint>
#include <version>
#if defined(__cpp_lib_source_location)
#  include <source_location>
#endif

namespace faultsafe {
#if defined(__cpp_lib_source_location)
using source_location = std::source_location;
#else
struct source_location {
  static constexpr source_location current(const char* file = __builtin_FILE(), const char* fn = __builtin_FUNCTION(),
                                           std::uint_least32_t line = __builtin_LINE()) noexcept {
    source_location s;
    s.file_ = file;
    s.fn_ = fn;
    s.line_ = line;
    return s;
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return fn_; }
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  constexpr std::uint_least32_t column() const noexcept { return 0; }

 private:
  const char* file_ = "unknown";
  const char* fn_ = "unknown";
  std::uint_least32_t line_ = 0;
};
#endif
}  // namespace faultsafe
