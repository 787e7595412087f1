#include "tierkv/chunk_key.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>

namespace tierkv {

std::string ChunkKey::to_hex() const {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

ChunkKey chunk_key(NamespaceId ns, const ChunkKey& parent, std::span<const TokenId> chunk_tokens) {
  // The namespace seeds the hash; the parent key and the tokens are hashed as one message, so the
  // full 128 bits of the parent carry into the child (no folding of the chain into a 64-bit seed).
  XXH3_state_t state;
  XXH3_128bits_reset_withSeed(&state, ns);
  XXH3_128bits_update(&state, &parent, sizeof(parent));
  XXH3_128bits_update(&state, chunk_tokens.data(), chunk_tokens.size_bytes());
  const XXH128_hash_t h = XXH3_128bits_digest(&state);
  return ChunkKey{h.low64, h.high64};
}

size_t chunk_keys(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                  std::vector<ChunkKey>& out) {
  out.clear();
  if (chunk_tokens == 0) return 0;
  const size_t n = tokens.size() / chunk_tokens;
  out.reserve(n);
  ChunkKey parent = kRootKey;
  for (size_t i = 0; i < n; ++i) {
    parent = chunk_key(ns, parent, tokens.subspan(i * chunk_tokens, chunk_tokens));
    out.push_back(parent);
  }
  return n;
}

}  // namespace tierkv
