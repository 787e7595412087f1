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
#include <string>
#include <vector>

#include "support/kv_tensors.h"

namespace tierkv::kernels {
namespace {

using testing::CacheByte;
using ::testing::HasSubstr;
using testing::kPoison;
using testing::PagedKvShape;

struct Shape {
  PagedKvShape cache;
  uint32_t chunk_tokens;
  uint64_t first_token;
  uint32_t table_blocks;  // entries in the sequence's block table
};

std::string shape_string(const Shape& s) {
  return s.cache.name() + "_ct" + std::to_string(s.chunk_tokens) + "_first" +
         std::to_string(s.first_token);
}
std::string shape_name(const ::testing::TestParamInfo<Shape>& info) {
  return shape_string(info.param);
}
// Keeps ctest's test names readable (gtest would print the struct's bytes).
void PrintTo(const Shape& s, std::ostream* os) { *os << shape_string(s); }

// A paged cache that owns its memory: per layer, one K and one V tensor of
// num_blocks * block_size * heads * head_dim * elem_bytes bytes.
using PagedCache = testing::HostKvCache<PagedKvShape>;

// A block table of `n` distinct blocks drawn from [0, num_blocks), in shuffled order so that
// consecutive table entries are not consecutive blocks.
std::vector<int32_t> random_block_table(uint32_t n, uint32_t num_blocks, std::mt19937_64& rng) {
  std::vector<int32_t> all(num_blocks);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(n);
  return all;
}

// Where each byte of the chunk lies in the cache, computed element by element from the paged
// layout's definition, independently of the kernel's row-run loop.
std::vector<CacheByte> chunk_map(const Shape& s, const std::vector<int32_t>& table) {
  const PagedKvShape& c = s.cache;
  return testing::map_chunk_bytes(
      {c.layers, s.chunk_tokens, c.heads, c.head_dim, c.elem_bytes},
      [&](uint32_t t, uint32_t h, uint32_t d, uint32_t b) {
        const uint64_t token = s.first_token + t;
        const auto block = static_cast<uint64_t>(table.at(token / c.block_size));
        const uint64_t row = token % c.block_size;
        return ((((block * c.block_size + row) * c.heads + h) * c.head_dim + d) * c.elem_bytes) + b;
      });
}

class PagedKvTest : public ::testing::TestWithParam<Shape> {
 protected:
  // Draws a block table and a random chunk from `seed` and scatters the chunk into the poisoned
  // cache through the table.
  void scatter_random_chunk(uint64_t seed) {
    std::mt19937_64 rng(seed);
    table_ = random_block_table(s_.table_blocks, s_.cache.num_blocks, rng);
    chunk_.resize(cache_.view().chunk_bytes(s_.chunk_tokens));
    testing::fill_random(chunk_, rng);
    ASSERT_TRUE(scatter_chunk(cache_.view(), table_, s_.first_token, s_.chunk_tokens, chunk_).ok());
  }

  const Shape s_ = GetParam();
  PagedCache cache_{s_.cache, kPoison};
  std::vector<int32_t> table_;
  std::vector<std::byte> chunk_;
};

TEST_P(PagedKvTest, GatherMatchesIndexComputation) {
  std::mt19937_64 rng(1234);
  cache_.randomize(rng);
  const auto table = random_block_table(s_.table_blocks, s_.cache.num_blocks, rng);
  std::vector<std::byte> chunk(cache_.view().chunk_bytes(s_.chunk_tokens), kPoison);

  ASSERT_TRUE(gather_chunk(cache_.view(), table, s_.first_token, s_.chunk_tokens, chunk).ok());

  testing::expect_chunk_matches_cache(chunk, cache_, chunk_map(s_, table));
}

TEST_P(PagedKvTest, ScatterWritesExactlyTheChunkRows) {
  ASSERT_NO_FATAL_FAILURE(scatter_random_chunk(5678));
  // Every byte the chunk maps to holds the chunk's value, every other byte still holds the
  // poison, and no two chunk bytes landed on the same cache byte.
  testing::expect_scattered_exactly(cache_, chunk_, chunk_map(s_, table_), kPoison);
}

TEST_P(PagedKvTest, ScatterThenGatherRoundTrips) {
  ASSERT_NO_FATAL_FAILURE(scatter_random_chunk(91011));
  std::vector<std::byte> back(chunk_.size(), std::byte{0});
  ASSERT_TRUE(gather_chunk(cache_.view(), table_, s_.first_token, s_.chunk_tokens, back).ok());
  EXPECT_TRUE(back == chunk_);
}

// One case a line: {{layers, block_size, num_blocks, heads, head_dim, elem_bytes}, chunk_tokens,
// first_token, table_blocks}.
// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedKvTest,
    ::testing::Values(
        // Chunk starts mid-block and ends mid-block.
        Shape{{3, 4, 16, 2, 5, 2}, 9, 6, 5},
        // Block-aligned chunk, several blocks, fp32.
        Shape{{2, 16, 12, 4, 8, 4}, 32, 64, 8},
        // One token per block: every row is its own run.
        Shape{{2, 1, 40, 1, 3, 1}, 7, 3, 12},
        // Blocks larger than the chunk: the whole chunk is one run inside one block.
        Shape{{1, 64, 3, 2, 4, 2}, 10, 70, 2},
        // Chunk covering exactly the whole block table.
        Shape{{4, 8, 6, 3, 2, 2}, 48, 0, 6}),
    shape_name);
// clang-format on

// Validation: every rejected call names the bad value and writes nothing.
class PagedKvValidationTest : public ::testing::Test {
 protected:
  static constexpr PagedKvShape kShape{
      .layers = 2, .block_size = 4, .num_blocks = 8, .heads = 2, .head_dim = 4, .elem_bytes = 2};
  static constexpr uint32_t kChunkTokens = 8;

  PagedKvValidationTest()
      : cache_(kShape, kPoison),
        table_{3, 1, 6, 0},
        chunk_(cache_.view().chunk_bytes(kChunkTokens), std::byte{0x11}) {}

  // Both directions must reject the call with InvalidArgument naming `expect`, and leave the
  // cache and the output buffer as they were.
  void expect_rejected(const PagedKvView& view, std::span<const int32_t> table,
                       uint64_t first_token, uint32_t chunk_tokens, size_t chunk_size,
                       const std::string& expect) {
    testing::expect_rejected_both_ways(
        cache_, chunk_size, expect,
        [&](std::span<std::byte> out) {
          return gather_chunk(view, table, first_token, chunk_tokens, out);
        },
        [&](std::span<const std::byte> in) {
          return scatter_chunk(view, table, first_token, chunk_tokens, in);
        });
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
  testing::expect_all_bytes(cache_, kPoison);
}

}  // namespace
}  // namespace tierkv::kernels
