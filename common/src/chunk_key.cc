#include "tierkv/chunk_key.h"

#include <cstdio>

#define TIERKV_KEY_ISA baseline
#include "chunk_key_hash.inc"

namespace tierkv {

namespace detail {
#if TIERKV_HAVE_AVX2_KEYS
void chunk_keys_avx2(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                     size_t n, ChunkKey* out);
#endif

namespace {
// Hashing a long prompt's tokens is most of a lookup's cost on the client, and XXH3 is a third
// faster with AVX2 than with the x86-64 baseline: use it where the CPU has it.
using KeysFn = void (*)(NamespaceId, std::span<const TokenId>, uint32_t, size_t, ChunkKey*);
KeysFn select_keys_fn() {
#if TIERKV_HAVE_AVX2_KEYS
  if (__builtin_cpu_supports("avx2")) return &chunk_keys_avx2;
#endif
  return &baseline::chunk_keys;
}
const KeysFn kKeysFn = select_keys_fn();
}  // namespace

size_t chunk_keys_baseline(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                           std::vector<ChunkKey>& out) {
  out.clear();
  if (chunk_tokens == 0) return 0;
  out.resize(tokens.size() / chunk_tokens);
  baseline::chunk_keys(ns, tokens, chunk_tokens, out.size(), out.data());
  return out.size();
}
}  // namespace detail

std::string ChunkKey::to_hex() const {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

ChunkKey chunk_key(NamespaceId ns, const ChunkKey& parent, std::span<const TokenId> chunk_tokens) {
  return detail::baseline::hash_chunk(ns, parent, chunk_tokens);
}

size_t chunk_keys(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                  std::vector<ChunkKey>& out) {
  out.clear();
  if (chunk_tokens == 0) return 0;
  out.resize(tokens.size() / chunk_tokens);
  detail::kKeysFn(ns, tokens, chunk_tokens, out.size(), out.data());
  return out.size();
}

}  // namespace tierkv
