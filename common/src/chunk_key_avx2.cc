// The AVX2 build of the chunk-key chain (this file is compiled with -mavx2 on x86-64); chunk_key.cc
// calls it only where the CPU has AVX2.
#include "tierkv/chunk_key.h"

#define TIERKV_KEY_ISA avx2
#include "chunk_key_hash.inc"

namespace tierkv::detail {

void chunk_keys_avx2(NamespaceId ns, std::span<const TokenId> tokens, uint32_t chunk_tokens,
                     size_t n, ChunkKey* out) {
  avx2::chunk_keys(ns, tokens, chunk_tokens, n, out);
}

}  // namespace tierkv::detail
