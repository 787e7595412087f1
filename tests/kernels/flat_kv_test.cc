// Tests for the CPU reference flat-KV gather/scatter: every byte checked against an index
// computation written out per element from the layout's definition, for token-major and
// head-major tensors with and without padding between rows.
#include "tierkv/kernels/flat_kv.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "support/kv_tensors.h"

namespace tierkv::kernels {
namespace {

using testing::CacheByte;
using testing::FlatKvShape;
using testing::kPoison;

struct FlatShape {
  FlatKvShape cache;
  uint32_t chunk_tokens;
  uint64_t first_token;
};

std::string shape_string(const FlatShape& s) {
  return s.cache.name() + "_ct" + std::to_string(s.chunk_tokens) + "_first" +
         std::to_string(s.first_token);
}
void PrintTo(const FlatShape& s, std::ostream* os) { *os << shape_string(s); }

// Per layer, one K and one V tensor of layer_bytes() each.
using FlatCache = testing::HostKvCache<FlatKvShape>;

// Where each byte of the chunk lies in the cache, computed element by element from the flat
// layout's definition.
std::vector<CacheByte> chunk_map(const FlatShape& s) {
  const FlatKvShape& c = s.cache;
  const uint64_t row = uint64_t{c.heads} * c.head_dim * c.elem_bytes;
  const uint64_t ts = c.token_stride != 0 ? c.token_stride : row;
  const uint64_t hs = c.head_stride != 0 ? c.head_stride : uint64_t{c.head_dim} * c.elem_bytes;
  return testing::map_chunk_bytes({c.layers, s.chunk_tokens, c.heads, c.head_dim, c.elem_bytes},
                                  [&](uint32_t t, uint32_t h, uint32_t d, uint32_t b) {
                                    return ((s.first_token + t) * ts) + (h * hs) +
                                           (uint64_t{d} * c.elem_bytes) + b;
                                  });
}

class FlatKvTest : public ::testing::TestWithParam<FlatShape> {
 protected:
  // Draws a random chunk from `seed` and scatters it into the poisoned cache.
  void scatter_random_chunk(uint64_t seed) {
    std::mt19937_64 rng(seed);
    chunk_.resize(cache_.view().chunk_bytes(s_.chunk_tokens));
    testing::fill_random(chunk_, rng);
    ASSERT_TRUE(scatter_chunk_flat(cache_.view(), s_.first_token, s_.chunk_tokens, chunk_).ok());
  }

  const FlatShape s_ = GetParam();
  FlatCache cache_{s_.cache, kPoison};
  std::vector<std::byte> chunk_;
};

TEST_P(FlatKvTest, GatherMatchesIndexComputation) {
  std::mt19937_64 rng(4321);
  cache_.randomize(rng);
  std::vector<std::byte> chunk(cache_.view().chunk_bytes(s_.chunk_tokens), kPoison);
  ASSERT_TRUE(gather_chunk_flat(cache_.view(), s_.first_token, s_.chunk_tokens, chunk).ok());
  testing::expect_chunk_matches_cache(chunk, cache_, chunk_map(s_));
}

TEST_P(FlatKvTest, ScatterWritesExactlyTheChunkRows) {
  ASSERT_NO_FATAL_FAILURE(scatter_random_chunk(8765));
  testing::expect_scattered_exactly(cache_, chunk_, chunk_map(s_), kPoison);
}

TEST_P(FlatKvTest, ScatterThenGatherRoundTrips) {
  ASSERT_NO_FATAL_FAILURE(scatter_random_chunk(1357));
  std::vector<std::byte> back(chunk_.size(), std::byte{0});
  ASSERT_TRUE(gather_chunk_flat(cache_.view(), s_.first_token, s_.chunk_tokens, back).ok());
  EXPECT_TRUE(back == chunk_);
}

// One case a line: {{layers, capacity, heads, head_dim, elem_bytes, token_stride, head_stride},
// chunk_tokens, first_token}.
// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Shapes, FlatKvTest,
    ::testing::Values(
        // Packed token-major [tokens][heads][dim].
        FlatShape{{3, 20, 2, 5, 2, 0, 0}, 7, 6},
        // Token-major with padding after each head and after each token.
        FlatShape{{2, 12, 3, 4, 2, 40, 12}, 5, 7},
        // Head-major [heads][capacity][dim], as transformers' cache for one sequence.
        FlatShape{{2, 16, 4, 8, 2, 16, 256}, 9, 3},
        // Head-major with padding, fp32, chunk reaching the last position.
        FlatShape{{1, 10, 2, 3, 4, 16, 200}, 4, 6},
        // One head, one byte per element.
        FlatShape{{4, 9, 1, 7, 1, 0, 0}, 9, 0}),
    [](const ::testing::TestParamInfo<FlatShape>& info) { return shape_string(info.param); });
// clang-format on

class FlatKvValidationTest : public ::testing::Test {
 protected:
  static constexpr FlatKvShape kShape{.layers = 2,
                                      .capacity = 16,
                                      .heads = 2,
                                      .head_dim = 4,
                                      .elem_bytes = 2,
                                      .token_stride = 0,
                                      .head_stride = 0};
  FlatKvValidationTest()
      : cache_(kShape, kPoison), chunk_(cache_.view().chunk_bytes(8), std::byte{0x11}) {}

  void expect_rejected(const FlatKvView& view, uint64_t first_token, uint32_t chunk_tokens,
                       size_t chunk_size, const std::string& expect) {
    testing::expect_rejected_both_ways(
        cache_, chunk_size, expect,
        [&](std::span<std::byte> out) {
          return gather_chunk_flat(view, first_token, chunk_tokens, out);
        },
        [&](std::span<const std::byte> in) {
          return scatter_chunk_flat(view, first_token, chunk_tokens, in);
        });
  }

  FlatCache cache_;
  std::vector<std::byte> chunk_;
};

TEST_F(FlatKvValidationTest, ValidCallSucceeds) {
  EXPECT_TRUE(gather_chunk_flat(cache_.view(), 4, 8, chunk_).ok());
  EXPECT_TRUE(scatter_chunk_flat(cache_.view(), 4, 8, chunk_).ok());
}

TEST_F(FlatKvValidationTest, TokensBeyondCapacity) {
  expect_rejected(cache_.view(), 9, 8, chunk_.size(), "tokens [9, 17) exceed");
  expect_rejected(cache_.view(), UINT64_MAX - 2, 8, chunk_.size(), "capacity_tokens 16");
}

TEST_F(FlatKvValidationTest, ChunkSizeMismatch) {
  expect_rejected(cache_.view(), 4, 8, chunk_.size() - 1, "needs " + std::to_string(chunk_.size()));
  expect_rejected(cache_.view(), 4, 0, 0, "chunk_tokens 0");
}

TEST_F(FlatKvValidationTest, OverlappingStrides) {
  FlatKvView view = cache_.view();
  view.head_stride = 4;  // less than one head's 8 bytes
  expect_rejected(view, 4, 8, chunk_.size(), "head_stride 4");
  view = cache_.view();
  view.token_stride = 8;  // head-major would need head_stride >= 16 x 8
  view.head_stride = 8;
  expect_rejected(view, 4, 8, chunk_.size(), "overlap");
  view = cache_.view();
  view.token_stride = UINT64_MAX / 2;
  view.head_stride = 8;
  expect_rejected(view, 4, 8, chunk_.size(), "overflows 64 bits");
}

TEST_F(FlatKvValidationTest, BadShape) {
  FlatKvView view = cache_.view();
  view.capacity_tokens = 0;
  expect_rejected(view, 0, 8, chunk_.size(), "capacity_tokens 0");
  view = cache_.view();
  view.elem_bytes = 3;
  expect_rejected(view, 4, 8, chunk_.size(), "elem_bytes 3");
  view = cache_.view();
  view.num_kv_heads = 0;
  expect_rejected(view, 4, 8, chunk_.size(), "num_kv_heads 0");
  std::vector<std::byte*> v = {nullptr, nullptr};
  view = cache_.view();
  view.v_layers = v;
  expect_rejected(view, 4, 8, chunk_.size(), "layer 0: V pointer is null");
}

}  // namespace
}  // namespace tierkv::kernels
