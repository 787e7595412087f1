// Tests for the CPU reference flat-KV gather/scatter: every byte checked against an index
// computation written out per element from the layout's definition, for token-major and
// head-major tensors with and without padding between rows.
#include "tierkv/kernels/flat_kv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace tierkv::kernels {
namespace {

using ::testing::HasSubstr;

constexpr std::byte kPoison{0xCD};

struct FlatShape {
  uint32_t layers;
  uint64_t capacity;
  uint32_t heads;
  uint32_t head_dim;
  uint32_t elem_bytes;
  uint64_t token_stride;  // 0 = packed token-major
  uint64_t head_stride;
  uint32_t chunk_tokens;
  uint64_t first_token;
};

std::string shape_string(const FlatShape& s) {
  std::ostringstream name;
  name << "L" << s.layers << "_cap" << s.capacity << "_H" << s.heads << "_D" << s.head_dim << "_E"
       << s.elem_bytes << "_ts" << s.token_stride << "_hs" << s.head_stride << "_ct"
       << s.chunk_tokens << "_first" << s.first_token;
  return name.str();
}
void PrintTo(const FlatShape& s, std::ostream* os) { *os << shape_string(s); }

// Per layer, one K and one V tensor of layer_bytes() each.
class FlatCache {
 public:
  FlatCache(const FlatShape& s, std::byte fill) : shape_(s) {
    const uint64_t bytes = view_of({}, {}).layer_bytes();
    for (uint32_t l = 0; l < 2 * s.layers; ++l) tensors_.emplace_back(bytes, fill);
    for (uint32_t l = 0; l < s.layers; ++l) {
      k_.push_back(tensors_[2 * size_t{l}].data());
      v_.push_back(tensors_[(2 * size_t{l}) + 1].data());
    }
  }
  [[nodiscard]] FlatKvView view() const { return view_of(k_, v_); }
  std::vector<std::byte>& tensor(uint32_t layer, uint32_t kv) { return tensors_[2 * layer + kv]; }
  [[nodiscard]] const std::vector<std::vector<std::byte>>& tensors() const { return tensors_; }

 private:
  [[nodiscard]] FlatKvView view_of(std::span<std::byte* const> k,
                                   std::span<std::byte* const> v) const {
    return FlatKvView{.k_layers = k,
                      .v_layers = v,
                      .capacity_tokens = shape_.capacity,
                      .num_kv_heads = shape_.heads,
                      .head_dim = shape_.head_dim,
                      .elem_bytes = shape_.elem_bytes,
                      .token_stride = shape_.token_stride,
                      .head_stride = shape_.head_stride};
  }
  FlatShape shape_;
  std::vector<std::vector<std::byte>> tensors_;
  std::vector<std::byte*> k_;
  std::vector<std::byte*> v_;
};

void fill_random(std::vector<std::byte>& bytes, std::mt19937_64& rng) {
  for (std::byte& b : bytes) b = static_cast<std::byte>(rng() & 0xFF);
}

// f(chunk_offset, layer, kv, cache_offset) for every byte of the chunk.
template <typename F>
void for_each_byte(const FlatShape& s, F f) {
  const uint64_t row = uint64_t{s.heads} * s.head_dim * s.elem_bytes;
  const uint64_t ts = s.token_stride != 0 ? s.token_stride : row;
  const uint64_t hs = s.head_stride != 0 ? s.head_stride : uint64_t{s.head_dim} * s.elem_bytes;
  for (uint32_t l = 0; l < s.layers; ++l) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t t = 0; t < s.chunk_tokens; ++t) {
        for (uint32_t h = 0; h < s.heads; ++h) {
          for (uint32_t d = 0; d < s.head_dim; ++d) {
            for (uint32_t b = 0; b < s.elem_bytes; ++b) {
              const uint64_t chunk_off =
                  (((((uint64_t{l} * 2 + kv) * s.chunk_tokens + t) * s.heads + h) * s.head_dim +
                    d) *
                   s.elem_bytes) +
                  b;
              const uint64_t cache_off =
                  ((s.first_token + t) * ts) + (h * hs) + (uint64_t{d} * s.elem_bytes) + b;
              f(chunk_off, l, kv, cache_off);
            }
          }
        }
      }
    }
  }
}

class FlatKvTest : public ::testing::TestWithParam<FlatShape> {};

TEST_P(FlatKvTest, GatherMatchesIndexComputation) {
  const FlatShape s = GetParam();
  std::mt19937_64 rng(4321);
  FlatCache cache(s, std::byte{0});
  for (uint32_t l = 0; l < s.layers; ++l) {
    fill_random(cache.tensor(l, 0), rng);
    fill_random(cache.tensor(l, 1), rng);
  }
  std::vector<std::byte> chunk(cache.view().chunk_bytes(s.chunk_tokens), kPoison);
  ASSERT_TRUE(gather_chunk_flat(cache.view(), s.first_token, s.chunk_tokens, chunk).ok());
  uint64_t checked = 0;
  uint64_t mismatches = 0;
  for_each_byte(s, [&](uint64_t chunk_off, uint32_t l, uint32_t kv, uint64_t cache_off) {
    ++checked;
    if (chunk[chunk_off] != cache.tensor(l, kv)[cache_off] && ++mismatches <= 5) {
      ADD_FAILURE() << "chunk byte " << chunk_off << " != cache byte " << cache_off;
    }
  });
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(checked, chunk.size());
}

TEST_P(FlatKvTest, ScatterWritesExactlyTheChunkRows) {
  const FlatShape s = GetParam();
  std::mt19937_64 rng(8765);
  FlatCache cache(s, kPoison);
  std::vector<std::byte> chunk(cache.view().chunk_bytes(s.chunk_tokens));
  fill_random(chunk, rng);
  ASSERT_TRUE(scatter_chunk_flat(cache.view(), s.first_token, s.chunk_tokens, chunk).ok());

  std::vector<std::vector<bool>> written;
  for (const auto& t : cache.tensors()) written.emplace_back(t.size(), false);
  uint64_t mismatches = 0;
  for_each_byte(s, [&](uint64_t chunk_off, uint32_t l, uint32_t kv, uint64_t cache_off) {
    written[2 * l + kv][cache_off] = true;
    if (cache.tensor(l, kv)[cache_off] != chunk[chunk_off] && ++mismatches <= 5) {
      ADD_FAILURE() << "cache byte " << cache_off << " != chunk byte " << chunk_off;
    }
  });
  EXPECT_EQ(mismatches, 0u);
  uint64_t touched = 0;
  uint64_t written_count = 0;
  for (size_t i = 0; i < written.size(); ++i) {
    for (size_t j = 0; j < written[i].size(); ++j) {
      if (written[i][j]) {
        ++written_count;
      } else if (cache.tensors()[i][j] != kPoison && ++touched <= 5) {
        ADD_FAILURE() << "tensor " << i << " byte " << j << " was overwritten";
      }
    }
  }
  EXPECT_EQ(touched, 0u);
  EXPECT_EQ(written_count, chunk.size());
}

TEST_P(FlatKvTest, ScatterThenGatherRoundTrips) {
  const FlatShape s = GetParam();
  std::mt19937_64 rng(1357);
  FlatCache cache(s, kPoison);
  std::vector<std::byte> chunk(cache.view().chunk_bytes(s.chunk_tokens));
  fill_random(chunk, rng);
  ASSERT_TRUE(scatter_chunk_flat(cache.view(), s.first_token, s.chunk_tokens, chunk).ok());
  std::vector<std::byte> back(chunk.size(), std::byte{0});
  ASSERT_TRUE(gather_chunk_flat(cache.view(), s.first_token, s.chunk_tokens, back).ok());
  EXPECT_TRUE(back == chunk);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Shapes, FlatKvTest,
    ::testing::Values(
        // Packed token-major [tokens][heads][dim].
        FlatShape{.layers = 3, .capacity = 20, .heads = 2, .head_dim = 5, .elem_bytes = 2,
                  .token_stride = 0, .head_stride = 0, .chunk_tokens = 7, .first_token = 6},
        // Token-major with padding after each head and after each token.
        FlatShape{.layers = 2, .capacity = 12, .heads = 3, .head_dim = 4, .elem_bytes = 2,
                  .token_stride = 40, .head_stride = 12, .chunk_tokens = 5, .first_token = 7},
        // Head-major [heads][capacity][dim], as transformers' cache for one sequence.
        FlatShape{.layers = 2, .capacity = 16, .heads = 4, .head_dim = 8, .elem_bytes = 2,
                  .token_stride = 16, .head_stride = 256, .chunk_tokens = 9, .first_token = 3},
        // Head-major with padding, fp32, chunk reaching the last position.
        FlatShape{.layers = 1, .capacity = 10, .heads = 2, .head_dim = 3, .elem_bytes = 4,
                  .token_stride = 16, .head_stride = 200, .chunk_tokens = 4, .first_token = 6},
        // One head, one byte per element.
        FlatShape{.layers = 4, .capacity = 9, .heads = 1, .head_dim = 7, .elem_bytes = 1,
                  .token_stride = 0, .head_stride = 0, .chunk_tokens = 9, .first_token = 0}),
    [](const ::testing::TestParamInfo<FlatShape>& info) { return shape_string(info.param); });
// clang-format on

class FlatKvValidationTest : public ::testing::Test {
 protected:
  static constexpr FlatShape kShape{.layers = 2,
                                    .capacity = 16,
                                    .heads = 2,
                                    .head_dim = 4,
                                    .elem_bytes = 2,
                                    .token_stride = 0,
                                    .head_stride = 0,
                                    .chunk_tokens = 8,
                                    .first_token = 4};
  FlatKvValidationTest()
      : cache_(kShape, kPoison), chunk_(cache_.view().chunk_bytes(8), std::byte{0x11}) {}

  void expect_rejected(const FlatKvView& view, uint64_t first_token, uint32_t chunk_tokens,
                       size_t chunk_size, const std::string& expect) {
    std::vector<std::byte> out(chunk_size, kPoison);
    const Status g = gather_chunk_flat(view, first_token, chunk_tokens, out);
    EXPECT_EQ(g.code(), StatusCode::kInvalidArgument) << g.to_string();
    EXPECT_THAT(g.message(), HasSubstr(expect));
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::byte b) { return b == kPoison; }));
    std::vector<std::byte> in(chunk_size, std::byte{0x11});
    const Status s = scatter_chunk_flat(view, first_token, chunk_tokens, in);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr(expect));
    for (const auto& t : cache_.tensors()) {
      EXPECT_TRUE(std::all_of(t.begin(), t.end(), [](std::byte b) { return b == kPoison; }));
    }
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
