#include "tierkv/chunk_key.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <set>

namespace tierkv {
namespace {

std::vector<TokenId> random_tokens(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<TokenId> t(n);
  for (auto& x : t) x = rng() % 128000;
  return t;
}

TEST(ChunkKeyTest, SamePrefixGivesSameKeys) {
  const auto a = random_tokens(1024, 1);
  auto b = a;
  b.resize(1024 + 300);  // longer prompt, same first 1024 tokens
  std::vector<ChunkKey> ka, kb;
  ASSERT_EQ(chunk_keys(7, a, 256, ka), 4u);
  ASSERT_EQ(chunk_keys(7, b, 256, kb), 5u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(ka[i], kb[i]) << "chunk " << i;
}

TEST(ChunkKeyTest, OneChangedTokenChangesThatChunkAndEveryLaterOne) {
  const auto a = random_tokens(2048, 2);
  std::vector<ChunkKey> ka;
  chunk_keys(7, a, 256, ka);
  for (size_t pos : {0ul, 255ul, 256ul, 1000ul, 2047ul}) {
    auto b = a;
    b[pos] ^= 1;
    std::vector<ChunkKey> kb;
    chunk_keys(7, b, 256, kb);
    const size_t changed = pos / 256;
    for (size_t i = 0; i < ka.size(); ++i) {
      if (i < changed) EXPECT_EQ(ka[i], kb[i]) << "pos " << pos << " chunk " << i;
      else EXPECT_NE(ka[i], kb[i]) << "pos " << pos << " chunk " << i;
    }
  }
}

TEST(ChunkKeyTest, NamespacesIsolate) {
  const auto a = random_tokens(512, 3);
  std::vector<ChunkKey> k1, k2;
  chunk_keys(1, a, 256, k1);
  chunk_keys(2, a, 256, k2);
  for (size_t i = 0; i < k1.size(); ++i) EXPECT_NE(k1[i], k2[i]);
}

TEST(ChunkKeyTest, KeyNamesWholePrefixNotJustChunkContent) {
  // Two prompts whose second chunks hold the same tokens but whose first chunks differ.
  auto a = random_tokens(512, 4);
  auto b = a;
  b[0] += 1;
  std::vector<ChunkKey> ka, kb;
  chunk_keys(9, a, 256, ka);
  chunk_keys(9, b, 256, kb);
  EXPECT_NE(ka[1], kb[1]);
  // And the chain is what chunk_key computes step by step.
  EXPECT_EQ(ka[1], chunk_key(9, ka[0], std::span(a).subspan(256, 256)));
  EXPECT_EQ(ka[0], chunk_key(9, kRootKey, std::span(a).subspan(0, 256)));
}

TEST(ChunkKeyTest, TrailingPartialChunkGetsNoKey) {
  std::vector<ChunkKey> k;
  EXPECT_EQ(chunk_keys(1, random_tokens(255, 5), 256, k), 0u);
  EXPECT_TRUE(k.empty());
  EXPECT_EQ(chunk_keys(1, random_tokens(767, 5), 256, k), 2u);
}

TEST(ChunkKeyTest, NoCollisionsAcrossManyPrompts) {
  std::set<std::pair<uint64_t, uint64_t>> seen;
  std::vector<ChunkKey> k;
  for (uint32_t p = 0; p < 200; ++p) {
    chunk_keys(1, random_tokens(64 * 16, 100 + p), 64, k);
    for (const auto& key : k) EXPECT_TRUE(seen.insert({key.lo, key.hi}).second);
  }
  EXPECT_EQ(seen.size(), 200u * 16);
}

TEST(ChunkKeyTest, HexIs32Digits) {
  ChunkKey k{0x1, 0xabc};
  EXPECT_EQ(k.to_hex(), "0000000000000abc0000000000000001");
}

TEST(ChunkKeyTest, FastPathEqualsBaselineAndSingleChunkChain) {
  // chunk_keys() may run an AVX2 build of XXH3; it must give exactly the baseline's keys, and
  // both must equal chaining chunk_key() by hand.
  std::mt19937 rng(7);
  for (uint32_t chunk_tokens : {1u, 3u, 16u, 256u}) {
    std::vector<TokenId> tokens(chunk_tokens * 37 + chunk_tokens / 2);  // and a partial chunk
    for (auto& t : tokens) t = rng();
    std::vector<ChunkKey> fast, base;
    ASSERT_EQ(chunk_keys(42, tokens, chunk_tokens, fast), 37u);
    ASSERT_EQ(detail::chunk_keys_baseline(42, tokens, chunk_tokens, base), 37u);
    ASSERT_EQ(fast, base);
    ChunkKey parent = kRootKey;
    for (size_t i = 0; i < 37; ++i) {
      parent = chunk_key(42, parent, std::span<const TokenId>(tokens).subspan(i * chunk_tokens,
                                                                               chunk_tokens));
      ASSERT_EQ(fast[i], parent) << "chunk " << i << " of chunk_tokens " << chunk_tokens;
    }
  }
}

}  // namespace
}  // namespace tierkv
