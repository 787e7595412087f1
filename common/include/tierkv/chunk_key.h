// ChunkKey: the 128-bit name of a prompt prefix, chunk by chunk.
//
//   key_0 = H(0, tokens[0 .. c), ns),  key_i = H(key_{i-1}, tokens[i*c .. (i+1)*c), ns)
//
// with H = xxh3-128 over (namespace id, parent key, token ids), c = chunk_tokens. A key therefore
// names a whole prefix: equal keys mean equal prefixes in the same namespace. A trailing partial
// chunk gets no key and is never stored. Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "tierkv/layout.h"

namespace tierkv {

// Token ids as the engine's tokenizer produced them.
using TokenId = uint32_t;

struct ChunkKey {
  uint64_t lo = 0;
  uint64_t hi = 0;

  bool is_zero() const { return lo == 0 && hi == 0; }
  std::string to_hex() const;  // 32 hex digits, hi then lo
  friend bool operator==(const ChunkKey&, const ChunkKey&) = default;
};
static_assert(sizeof(ChunkKey) == 16);

// The parent of chunk 0.
inline constexpr ChunkKey kRootKey{};

ChunkKey chunk_key(NamespaceId ns, const ChunkKey& parent, std::span<const TokenId> chunk_tokens);

// Keys of every full chunk of `tokens`, appended to `out` (cleared first). Returns the count.
size_t chunk_keys(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                  std::vector<ChunkKey>& out);

namespace detail {
// The same chain computed with the x86-64 baseline instruction set only; chunk_keys() may use a
// faster one (AVX2) and must give identical keys. For tests.
size_t chunk_keys_baseline(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                           std::vector<ChunkKey>& out);
}  // namespace detail

struct ChunkKeyHash {
  size_t operator()(const ChunkKey& k) const { return static_cast<size_t>(k.lo ^ (k.hi * 0x9E3779B97F4A7C15ull)); }
};

}  // namespace tierkv
