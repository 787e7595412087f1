// Tests for the CPU reference paged-KV gather/scatter: every byte checked against an index
// computation written out per element, independently of the kernel's row-run loop.
#include "tierkv/kernels/paged_kv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

namespace tierkv::kernels {
namespace {

using ::testing::HasSubstr;

constexpr std::byte kPoison{0xCD};

struct Shape {
  uint32_t layers;
  uint32_t block_size;
  uint32_t num_blocks;
  uint32_t heads;
  uint32_t head_dim;
  uint32_t elem_bytes;
  uint32_t chunk_tokens;
  uint64_t first_token;
  uint32_t table_blocks;  // entries in the sequence's block table
};

std::string shape_string(const Shape& s) {
  std::ostringstream name;
  name << "L" << s.layers << "_bs" << s.block_size << "_H" << s.heads << "_D" << s.head_dim << "_E"
       << s.elem_bytes << "_ct" << s.chunk_tokens << "_first" << s.first_token;
  return name.str();
}
std::string shape_name(const ::testing::TestParamInfo<Shape>& info) {
  return shape_string(info.param);
}
// Keeps ctest's test names readable (gtest would print the struct's bytes).
void PrintTo(const Shape& s, std::ostream* os) { *os << shape_string(s); }

// A paged cache that owns its memory: per layer, one K and one V tensor of
// num_blocks * block_size * heads * head_dim * elem_bytes bytes.
class PagedCache {
 public:
  PagedCache(const Shape& s, std::byte fill)
      : shape_(s), layer_bytes_(uint64_t{s.num_blocks} * s.block_size * row_bytes()) {
    for (uint32_t l = 0; l < 2 * s.layers; ++l) tensors_.emplace_back(layer_bytes_, fill);
    for (uint32_t l = 0; l < s.layers; ++l) {
      k_.push_back(tensors_[2 * size_t{l}].data());
      v_.push_back(tensors_[(2 * size_t{l}) + 1].data());
    }
  }

  [[nodiscard]] PagedKvView view() const {
    return PagedKvView{.k_layers = k_,
                       .v_layers = v_,
                       .block_size = shape_.block_size,
                       .num_blocks = shape_.num_blocks,
                       .num_kv_heads = shape_.heads,
                       .head_dim = shape_.head_dim,
                       .elem_bytes = shape_.elem_bytes};
  }
  [[nodiscard]] uint64_t row_bytes() const {
    return uint64_t{shape_.heads} * shape_.head_dim * shape_.elem_bytes;
  }
  // kv: 0 = K, 1 = V.
  std::vector<std::byte>& tensor(uint32_t layer, uint32_t kv) { return tensors_[2 * layer + kv]; }
  [[nodiscard]] const std::vector<std::vector<std::byte>>& tensors() const { return tensors_; }

 private:
  Shape shape_;
  uint64_t layer_bytes_;
  std::vector<std::vector<std::byte>> tensors_;
  std::vector<std::byte*> k_;
  std::vector<std::byte*> v_;
};

void fill_random(std::vector<std::byte>& bytes, std::mt19937_64& rng) {
  for (std::byte& b : bytes) b = static_cast<std::byte>(rng() & 0xFF);
}

// A block table of `n` distinct blocks drawn from [0, num_blocks), in shuffled order so that
// consecutive table entries are not consecutive blocks.
std::vector<int32_t> random_block_table(uint32_t n, uint32_t num_blocks, std::mt19937_64& rng) {
  std::vector<int32_t> all(num_blocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(n);
  return all;
}

// Calls f(chunk_offset, layer, kv, cache_offset) for every byte of the chunk, with offsets
// computed element by element from the two layouts' definitions.
template <typename F>
void for_each_byte(const Shape& s, const std::vector<int32_t>& table, F f) {
  for (uint32_t l = 0; l < s.layers; ++l) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t t = 0; t < s.chunk_tokens; ++t) {
        const uint64_t token = s.first_token + t;
        const auto block = static_cast<uint64_t>(table.at(token / s.block_size));
        const uint64_t row = token % s.block_size;
        for (uint32_t h = 0; h < s.heads; ++h) {
          for (uint32_t d = 0; d < s.head_dim; ++d) {
            for (uint32_t b = 0; b < s.elem_bytes; ++b) {
              const uint64_t chunk_off =
                  (((((uint64_t{l} * 2 + kv) * s.chunk_tokens + t) * s.heads + h) * s.head_dim +
                    d) *
                   s.elem_bytes) +
                  b;
              const uint64_t cache_off =
                  ((((block * s.block_size + row) * s.heads + h) * s.head_dim + d) * s.elem_bytes) +
                  b;
              f(chunk_off, l, kv, cache_off);
            }
          }
        }
      }
    }
  }
}

class PagedKvTest : public ::testing::TestWithParam<Shape> {};

TEST_P(PagedKvTest, GatherMatchesIndexComputation) {
  const Shape s = GetParam();
  std::mt19937_64 rng(1234);
  PagedCache cache(s, std::byte{0});
  for (uint32_t l = 0; l < s.layers; ++l) {
    fill_random(cache.tensor(l, 0), rng);
    fill_random(cache.tensor(l, 1), rng);
  }
  const auto table = random_block_table(s.table_blocks, s.num_blocks, rng);
  std::vector<std::byte> chunk(cache.view().chunk_bytes(s.chunk_tokens), kPoison);

  ASSERT_TRUE(gather_chunk(cache.view(), table, s.first_token, s.chunk_tokens, chunk).ok());

  uint64_t checked = 0;
  uint64_t mismatches = 0;
  for_each_byte(s, table, [&](uint64_t chunk_off, uint32_t l, uint32_t kv, uint64_t cache_off) {
    ++checked;
    if (chunk[chunk_off] != cache.tensor(l, kv)[cache_off] && ++mismatches <= 5) {
      ADD_FAILURE() << "chunk byte " << chunk_off << " (layer " << l << (kv ? " V" : " K")
                    << ") != cache byte " << cache_off;
    }
  });
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(checked, chunk.size());
}

TEST_P(PagedKvTest, ScatterWritesExactlyTheChunkRows) {
  const Shape s = GetParam();
  std::mt19937_64 rng(5678);
  PagedCache cache(s, kPoison);
  const auto table = random_block_table(s.table_blocks, s.num_blocks, rng);
  std::vector<std::byte> chunk(cache.view().chunk_bytes(s.chunk_tokens));
  fill_random(chunk, rng);

  ASSERT_TRUE(scatter_chunk(cache.view(), table, s.first_token, s.chunk_tokens, chunk).ok());

  // Every byte the chunk maps to holds the chunk's value...
  std::vector<std::vector<bool>> written;
  for (const auto& t : cache.tensors()) written.emplace_back(t.size(), false);
  uint64_t mismatches = 0;
  for_each_byte(s, table, [&](uint64_t chunk_off, uint32_t l, uint32_t kv, uint64_t cache_off) {
    written[2 * l + kv][cache_off] = true;
    if (cache.tensor(l, kv)[cache_off] != chunk[chunk_off] && ++mismatches <= 5) {
      ADD_FAILURE() << "cache byte " << cache_off << " (layer " << l << (kv ? " V" : " K")
                    << ") != chunk byte " << chunk_off;
    }
  });
  EXPECT_EQ(mismatches, 0u);
  // ...and every other byte still holds the poison.
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
  // The mapping is one to one: no two chunk bytes landed on the same cache byte.
  EXPECT_EQ(written_count, chunk.size());
}

TEST_P(PagedKvTest, ScatterThenGatherRoundTrips) {
  const Shape s = GetParam();
  std::mt19937_64 rng(91011);
  PagedCache cache(s, kPoison);
  const auto table = random_block_table(s.table_blocks, s.num_blocks, rng);
  std::vector<std::byte> chunk(cache.view().chunk_bytes(s.chunk_tokens));
  fill_random(chunk, rng);

  ASSERT_TRUE(scatter_chunk(cache.view(), table, s.first_token, s.chunk_tokens, chunk).ok());
  std::vector<std::byte> back(chunk.size(), std::byte{0});
  ASSERT_TRUE(gather_chunk(cache.view(), table, s.first_token, s.chunk_tokens, back).ok());
  EXPECT_TRUE(back == chunk);
}

// One shape per line pair reads better than one field per line.
// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedKvTest,
    ::testing::Values(
        // Chunk starts mid-block and ends mid-block.
        Shape{.layers = 3, .block_size = 4, .num_blocks = 16, .heads = 2, .head_dim = 5,
              .elem_bytes = 2, .chunk_tokens = 9, .first_token = 6, .table_blocks = 5},
        // Block-aligned chunk, several blocks, fp32.
        Shape{.layers = 2, .block_size = 16, .num_blocks = 12, .heads = 4, .head_dim = 8,
              .elem_bytes = 4, .chunk_tokens = 32, .first_token = 64, .table_blocks = 8},
        // One token per block: every row is its own run.
        Shape{.layers = 2, .block_size = 1, .num_blocks = 40, .heads = 1, .head_dim = 3,
              .elem_bytes = 1, .chunk_tokens = 7, .first_token = 3, .table_blocks = 12},
        // Blocks larger than the chunk: the whole chunk is one run inside one block.
        Shape{.layers = 1, .block_size = 64, .num_blocks = 3, .heads = 2, .head_dim = 4,
              .elem_bytes = 2, .chunk_tokens = 10, .first_token = 70, .table_blocks = 2},
        // Chunk covering exactly the whole block table.
        Shape{.layers = 4, .block_size = 8, .num_blocks = 6, .heads = 3, .head_dim = 2,
              .elem_bytes = 2, .chunk_tokens = 48, .first_token = 0, .table_blocks = 6}),
    shape_name);
// clang-format on

// Validation: every rejected call names the bad value and writes nothing.
class PagedKvValidationTest : public ::testing::Test {
 protected:
  static constexpr Shape kShape{.layers = 2,
                                .block_size = 4,
                                .num_blocks = 8,
                                .heads = 2,
                                .head_dim = 4,
                                .elem_bytes = 2,
                                .chunk_tokens = 8,
                                .first_token = 4,
                                .table_blocks = 4};

  PagedKvValidationTest()
      : cache_(kShape, kPoison),
        table_{3, 1, 6, 0},
        chunk_(cache_.view().chunk_bytes(kShape.chunk_tokens), std::byte{0x11}) {}

  // Both directions must reject the call with InvalidArgument naming `expect`, and leave the
  // cache and the output buffer as they were.
  void expect_rejected(const PagedKvView& view, std::span<const int32_t> table,
                       uint64_t first_token, uint32_t chunk_tokens, size_t chunk_size,
                       const std::string& expect) {
    std::vector<std::byte> out(chunk_size, kPoison);
    const Status g = gather_chunk(view, table, first_token, chunk_tokens, out);
    EXPECT_EQ(g.code(), StatusCode::kInvalidArgument) << g.to_string();
    EXPECT_THAT(g.message(), HasSubstr(expect));
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::byte b) { return b == kPoison; }));

    std::vector<std::byte> in(chunk_size, std::byte{0x11});
    const Status s = scatter_chunk(view, table, first_token, chunk_tokens, in);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_THAT(s.message(), HasSubstr(expect));
    for (const auto& t : cache_.tensors()) {
      EXPECT_TRUE(std::all_of(t.begin(), t.end(), [](std::byte b) { return b == kPoison; }));
    }
  }

  PagedCache cache_;
  std::vector<int32_t> table_;
  std::vector<std::byte> chunk_;
};

TEST_F(PagedKvValidationTest, ValidCallSucceeds) {
  // The baseline every rejection below differs from in one argument.
  EXPECT_TRUE(gather_chunk(cache_.view(), table_, 4, 8, chunk_).ok());
  EXPECT_TRUE(scatter_chunk(cache_.view(), table_, 4, 8, chunk_).ok());
}

TEST_F(PagedKvValidationTest, BlockIdOutOfRange) {
  table_[2] = 8;
  expect_rejected(cache_.view(), table_, 4, 8, chunk_.size(), "block_table[2] = 8");
  table_[2] = -1;
  expect_rejected(cache_.view(), table_, 4, 8, chunk_.size(), "block_table[2] = -1");
}

TEST_F(PagedKvValidationTest, EntriesOutsideTheChunkAreNotChecked) {
  // Padding past the tokens the chunk covers (tokens 4..11 use entries 1 and 2).
  table_[0] = -1;
  table_[3] = 1000;
  EXPECT_TRUE(gather_chunk(cache_.view(), table_, 4, 8, chunk_).ok());
  EXPECT_TRUE(scatter_chunk(cache_.view(), table_, 4, 8, chunk_).ok());
}

TEST_F(PagedKvValidationTest, ChunkSizeMismatch) {
  const size_t size = chunk_.size();
  expect_rejected(cache_.view(), table_, 4, 8, size - 1, std::to_string(size - 1) + " bytes");
  expect_rejected(cache_.view(), table_, 4, 8, size + 2, std::to_string(size + 2) + " bytes");
  expect_rejected(cache_.view(), table_, 4, 8, 0, "needs " + std::to_string(size));
}

TEST_F(PagedKvValidationTest, TokensNotCoveredByBlockTable) {
  // 4 entries x 4 tokens = 16 tokens covered.
  expect_rejected(cache_.view(), table_, 9, 8, chunk_.size(), "tokens [9, 17)");
  expect_rejected(cache_.view(), table_, 100, 8, chunk_.size(), "tokens [100, 108)");
  expect_rejected(cache_.view(), std::span<const int32_t>(), 0, 8, chunk_.size(),
                  "block table of 0 blocks");
  // first_token near 2^64 must not wrap around into the covered range.
  expect_rejected(cache_.view(), table_, UINT64_MAX - 2, 8, chunk_.size(), "not covered");
}

TEST_F(PagedKvValidationTest, ChunkTokensOutOfRange) {
  expect_rejected(cache_.view(), table_, 4, 0, 0, "chunk_tokens 0");
}

TEST_F(PagedKvValidationTest, BadCacheShape) {
  PagedKvView view = cache_.view();
  view.block_size = 0;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "block_size 0");
  view = cache_.view();
  view.num_blocks = 0;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "num_blocks 0");
  view = cache_.view();
  view.num_kv_heads = 0;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "num_kv_heads 0");
  view = cache_.view();
  view.head_dim = 20000;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "head_dim 20000");
  view = cache_.view();
  view.elem_bytes = 3;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "elem_bytes 3");
  view = cache_.view();
  view.num_blocks = UINT32_MAX;
  view.block_size = UINT32_MAX;
  view.num_kv_heads = 1024;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "overflows 64 bits");
}

TEST_F(PagedKvValidationTest, BadLayerPointers) {
  std::vector<std::byte*> v = {cache_.tensor(0, 1).data()};
  PagedKvView view = cache_.view();
  view.v_layers = v;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "2 K layers but 1 V layers");
  v.push_back(nullptr);
  view.v_layers = v;
  expect_rejected(view, table_, 4, 8, chunk_.size(), "layer 1: V pointer is null");
  view.k_layers = {};
  view.v_layers = {};
  expect_rejected(view, table_, 4, 8, chunk_.size(), "no layers");
}

TEST_F(PagedKvValidationTest, ScatterRejectsRepeatedBlock) {
  table_[2] = table_[1];
  std::vector<std::byte> in(chunk_.size(), std::byte{0x11});
  const Status s = scatter_chunk(cache_.view(), table_, 4, 8, in);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("block_table[1] and block_table[2] both name block 1"));
  for (const auto& t : cache_.tensors()) {
    EXPECT_TRUE(std::all_of(t.begin(), t.end(), [](std::byte b) { return b == kPoison; }));
  }
}

}  // namespace
}  // namespace tierkv::kernels
