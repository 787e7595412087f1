// Chunk content that is a function of the chunk key: any test process can check a chunk that
// another one stored, and a chunk served under the wrong key, torn or damaged does not match.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "tierkv/chunk_key.h"

namespace tierkv::testing {

inline void fill_chunk(const ChunkKey& key, std::span<std::byte> out) {
  uint64_t x = key.lo ^ (key.hi * 0x9E3779B97F4A7C15ull) ^ 1;
  for (size_t i = 0; i + 8 <= out.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + i, &x, 8);
  }
}

// True if `got` is exactly what fill_chunk writes for `key`.
inline bool chunk_matches(const ChunkKey& key, std::span<const std::byte> got) {
  uint64_t x = key.lo ^ (key.hi * 0x9E3779B97F4A7C15ull) ^ 1;
  for (size_t i = 0; i + 8 <= got.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (std::memcmp(got.data() + i, &x, 8) != 0) return false;
  }
  return true;
}

}  // namespace tierkv::testing
