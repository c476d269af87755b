// Test support: the byte at offset i of every pattern file and pattern memfd (no faultsafe include, so
// the lowest-layer tests can use it too).
#pragma once

#include <cstdint>

namespace test_support {

/// A multiplicative hash of the offset, so a byte copied to the wrong offset is seen.
inline std::uint8_t pattern(std::uint64_t i) { return static_cast<std::uint8_t>((i * 2654435761u) >> 13); }

}  // namespace test_support
