// Helpers for the tests of the KV gather/scatter kernels (tests/kernels): the shapes of a paged and
// a flat KV cache as test cases name them, a cache's memory held as host byte tensors, where each
// byte of a chunk lies in the cache, and the byte-exact checks every layout's test makes.
// Header only; needs tierkv::kernels, GoogleTest and gmock. Thread safety: none; each object
// belongs to one test.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "tierkv/kernels/flat_kv.h"
#include "tierkv/kernels/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv::testing {

// What a test fills memory with to see which bytes a call wrote.
inline constexpr std::byte kPoison{0xCD};

// Fills `bytes` from `rng`, eight bytes a draw.
inline void fill_random(std::span<std::byte> bytes, std::mt19937_64& rng) {
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    const uint64_t r = rng();
    std::memcpy(bytes.data() + i, &r, 8);
  }
  for (; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(rng() & 0xFF);
}

inline bool all_bytes_are(std::span<const std::byte> bytes, std::byte value) {
  return std::all_of(bytes.begin(), bytes.end(), [value](std::byte b) { return b == value; });
}

// A paged KV cache's shape (tierkv/kernels/paged_kv.h).
struct PagedKvShape {
  uint32_t layers;
  uint32_t block_size;
  uint32_t num_blocks;
  uint32_t heads;
  uint32_t head_dim;
  uint32_t elem_bytes;

  [[nodiscard]] uint64_t row_bytes() const { return uint64_t{heads} * head_dim * elem_bytes; }
  // Bytes of one layer's K (or V) tensor.
  [[nodiscard]] uint64_t tensor_bytes() const {
    return uint64_t{num_blocks} * block_size * row_bytes();
  }
  [[nodiscard]] kernels::PagedKvView view(std::span<std::byte* const> k,
                                          std::span<std::byte* const> v) const {
    return kernels::PagedKvView{.k_layers = k,
                                .v_layers = v,
                                .block_size = block_size,
                                .num_blocks = num_blocks,
                                .num_kv_heads = heads,
                                .head_dim = head_dim,
                                .elem_bytes = elem_bytes};
  }
  // "L3_bs4_H2_D5_E2": how a test case's name starts (num_blocks left out).
  [[nodiscard]] std::string name() const {
    return "L" + std::to_string(layers) + "_bs" + std::to_string(block_size) + "_H" +
           std::to_string(heads) + "_D" + std::to_string(head_dim) + "_E" +
           std::to_string(elem_bytes);
  }
};

// A flat KV cache's shape (tierkv/kernels/flat_kv.h); strides of 0 mean packed token-major.
struct FlatKvShape {
  uint32_t layers;
  uint64_t capacity;
  uint32_t heads;
  uint32_t head_dim;
  uint32_t elem_bytes;
  uint64_t token_stride;
  uint64_t head_stride;

  // Bytes of one layer's K (or V) tensor.
  [[nodiscard]] uint64_t tensor_bytes() const { return view({}, {}).layer_bytes(); }
  [[nodiscard]] kernels::FlatKvView view(std::span<std::byte* const> k,
                                         std::span<std::byte* const> v) const {
    return kernels::FlatKvView{.k_layers = k,
                               .v_layers = v,
                               .capacity_tokens = capacity,
                               .num_kv_heads = heads,
                               .head_dim = head_dim,
                               .elem_bytes = elem_bytes,
                               .token_stride = token_stride,
                               .head_stride = head_stride};
  }
  // "L3_cap20_H2_D5_E2_ts0_hs0": how a test case's name starts.
  [[nodiscard]] std::string name() const {
    return "L" + std::to_string(layers) + "_cap" + std::to_string(capacity) + "_H" +
           std::to_string(heads) + "_D" + std::to_string(head_dim) + "_E" +
           std::to_string(elem_bytes) + "_ts" + std::to_string(token_stride) + "_hs" +
           std::to_string(head_stride);
  }
};

// A KV cache's memory on the host: per layer one K and one V tensor of `tensor_bytes` each, all
// owned here. Not copyable (the layer pointer lists point into the tensors).
class HostKvTensors {
 public:
  HostKvTensors(uint32_t layers, uint64_t tensor_bytes, std::byte fill) {
    for (uint32_t i = 0; i < 2 * layers; ++i) tensors_.emplace_back(tensor_bytes, fill);
    for (uint32_t l = 0; l < layers; ++l) {
      k_.push_back(tensors_[2 * size_t{l}].data());
      v_.push_back(tensors_[(2 * size_t{l}) + 1].data());
    }
  }
  HostKvTensors(const HostKvTensors&) = delete;
  HostKvTensors& operator=(const HostKvTensors&) = delete;

  [[nodiscard]] std::span<std::byte* const> k_layers() const { return k_; }
  [[nodiscard]] std::span<std::byte* const> v_layers() const { return v_; }
  // kv: 0 = K, 1 = V.
  std::vector<std::byte>& tensor(uint32_t layer, uint32_t kv) {
    return tensors_[(2 * size_t{layer}) + kv];
  }
  [[nodiscard]] const std::vector<std::byte>& tensor(uint32_t layer, uint32_t kv) const {
    return tensors_[(2 * size_t{layer}) + kv];
  }
  // Layer l's K is tensors()[2l], its V tensors()[2l + 1].
  [[nodiscard]] const std::vector<std::vector<std::byte>>& tensors() const { return tensors_; }
  void randomize(std::mt19937_64& rng) {
    for (auto& t : tensors_) fill_random(t, rng);
  }
  void fill(std::byte value) {
    for (auto& t : tensors_) std::fill(t.begin(), t.end(), value);
  }

 private:
  std::vector<std::vector<std::byte>> tensors_;
  std::vector<std::byte*> k_;
  std::vector<std::byte*> v_;
};

// Host tensors of one shape (PagedKvShape or FlatKvShape) and the view of them.
template <typename Shape>
class HostKvCache : public HostKvTensors {
 public:
  HostKvCache(const Shape& shape, std::byte fill)
      : HostKvTensors(shape.layers, shape.tensor_bytes(), fill), shape_(shape) {}
  [[nodiscard]] auto view() const { return shape_.view(k_layers(), v_layers()); }

 private:
  Shape shape_;
};

// Where one byte of a chunk lies in a cache: byte `offset` of layer `layer`'s K (kv 0) or V (1).
struct CacheByte {
  uint32_t layer;
  uint32_t kv;
  uint64_t offset;
};

// What a chunk of `chunk_tokens` tokens holds: tierkv's chunk layout (tierkv/layout.h),
// [layer][K, V][token][head][dim][byte].
struct ChunkDims {
  uint32_t layers;
  uint32_t chunk_tokens;
  uint32_t heads;
  uint32_t head_dim;
  uint32_t elem_bytes;
};

// Entry i names the cache byte that chunk byte i comes from (gather) or goes to (scatter), with
// the chunk offset written out per element from the chunk layout's definition and the cache offset
// from the cache layout's: cache_offset(token, head, dim, byte) -> offset in the layer tensor.
template <typename CacheOffset>
std::vector<CacheByte> map_chunk_bytes(const ChunkDims& c, CacheOffset cache_offset) {
  std::vector<CacheByte> map(2 * uint64_t{c.layers} * c.chunk_tokens * c.heads * c.head_dim *
                             c.elem_bytes);
  for (uint32_t l = 0; l < c.layers; ++l) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t t = 0; t < c.chunk_tokens; ++t) {
        for (uint32_t h = 0; h < c.heads; ++h) {
          for (uint32_t d = 0; d < c.head_dim; ++d) {
            for (uint32_t b = 0; b < c.elem_bytes; ++b) {
              const uint64_t chunk_off =
                  (((((uint64_t{l} * 2 + kv) * c.chunk_tokens + t) * c.heads + h) * c.head_dim +
                    d) *
                   c.elem_bytes) +
                  b;
              map.at(chunk_off) = CacheByte{l, kv, cache_offset(t, h, d, b)};
            }
          }
        }
      }
    }
  }
  return map;
}

inline std::string describe(const CacheByte& at) {
  return "cache byte " + std::to_string(at.offset) + " (layer " + std::to_string(at.layer) +
         (at.kv != 0 ? " V)" : " K)");
}

// A gathered `chunk` holds, at every byte, the cache byte `map` names for it (and is as long as
// the map says a chunk is).
inline void expect_chunk_matches_cache(std::span<const std::byte> chunk, const HostKvTensors& cache,
                                       const std::vector<CacheByte>& map) {
  ASSERT_EQ(chunk.size(), map.size());
  uint64_t mismatches = 0;
  for (size_t i = 0; i < map.size(); ++i) {
    const CacheByte& at = map[i];
    if (chunk[i] != cache.tensor(at.layer, at.kv)[at.offset] && ++mismatches <= 5) {
      ADD_FAILURE() << "chunk byte " << i << " != " << describe(at);
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

// After `chunk` was scattered into a cache filled with `poison`: every byte `map` names holds the
// chunk's byte, every other byte still holds the poison, and the mapping is one to one (no two
// chunk bytes landed on the same cache byte).
inline void expect_scattered_exactly(const HostKvTensors& cache, std::span<const std::byte> chunk,
                                     const std::vector<CacheByte>& map, std::byte poison) {
  ASSERT_EQ(chunk.size(), map.size());
  std::vector<std::vector<bool>> written;
  for (const auto& t : cache.tensors()) written.emplace_back(t.size(), false);
  uint64_t mismatches = 0;
  for (size_t i = 0; i < map.size(); ++i) {
    const CacheByte& at = map[i];
    written[(2 * size_t{at.layer}) + at.kv][at.offset] = true;
    if (cache.tensor(at.layer, at.kv)[at.offset] != chunk[i] && ++mismatches <= 5) {
      ADD_FAILURE() << describe(at) << " != chunk byte " << i;
    }
  }
  EXPECT_EQ(mismatches, 0u);
  uint64_t touched = 0;
  uint64_t written_count = 0;
  for (size_t i = 0; i < written.size(); ++i) {
    for (size_t j = 0; j < written[i].size(); ++j) {
      if (written[i][j]) {
        ++written_count;
      } else if (cache.tensors()[i][j] != poison && ++touched <= 5) {
        ADD_FAILURE() << "tensor " << i << " byte " << j << " was overwritten";
      }
    }
  }
  EXPECT_EQ(touched, 0u);
  EXPECT_EQ(written_count, chunk.size());
}

// Every byte of every tensor of `cache` is `value`.
inline void expect_all_bytes(const HostKvTensors& cache, std::byte value) {
  for (size_t i = 0; i < cache.tensors().size(); ++i) {
    EXPECT_TRUE(all_bytes_are(cache.tensors()[i], value)) << "tensor " << i << " was written";
  }
}

// A call both directions must reject: gather(out) and scatter(in), with buffers of `chunk_size`
// bytes, each return InvalidArgument with a message naming `expect`, and leave the output buffer
// and `cache` (filled with kPoison) as they were.
template <typename Gather, typename Scatter>
void expect_rejected_both_ways(const HostKvTensors& cache, size_t chunk_size,
                               const std::string& expect, Gather gather, Scatter scatter) {
  std::vector<std::byte> out(chunk_size, kPoison);
  const Status g = gather(std::span<std::byte>(out));
  EXPECT_EQ(g.code(), StatusCode::kInvalidArgument) << g.to_string();
  EXPECT_THAT(g.message(), ::testing::HasSubstr(expect));
  EXPECT_TRUE(all_bytes_are(out, kPoison));

  const std::vector<std::byte> in(chunk_size, std::byte{0x11});
  const Status s = scatter(std::span<const std::byte>(in));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_THAT(s.message(), ::testing::HasSubstr(expect));
  expect_all_bytes(cache, kPoison);
}

}  // namespace tierkv::testing
