#include "tierkv/storage/chunk_index.h"

#include <gtest/gtest.h>

#include <random>
#include <unordered_map>

namespace tierkv::storage {
namespace {

TEST(ChunkIndexTest, InsertFindErase) {
  ChunkIndex index(100);
  EXPECT_EQ(index.find(1, ChunkKey{1, 1}), ChunkIndex::kAbsent);
  EXPECT_TRUE(index.insert(1, ChunkKey{1, 1}, 5));
  EXPECT_FALSE(index.insert(1, ChunkKey{1, 1}, 6));  // present already
  EXPECT_EQ(index.find(1, ChunkKey{1, 1}), 5u);
  EXPECT_EQ(index.find(2, ChunkKey{1, 1}), ChunkIndex::kAbsent);  // other namespace
  EXPECT_TRUE(index.erase(1, ChunkKey{1, 1}));
  EXPECT_FALSE(index.erase(1, ChunkKey{1, 1}));
  EXPECT_EQ(index.size(), 0u);
}

TEST(ChunkIndexTest, FullIndexRefusesInsert) {
  ChunkIndex index(3);
  for (uint32_t i = 0; i < 3; ++i) EXPECT_TRUE(index.insert(1, ChunkKey{i, 0}, i));
  EXPECT_FALSE(index.insert(1, ChunkKey{9, 0}, 9));
}

TEST(ChunkIndexTest, MatchesAReferenceMapUnderChurnWithCollidingBuckets) {
  // Keys whose low bits collide force long probe runs and exercise backward-shift deletion.
  ChunkIndex index(512);
  std::unordered_map<uint64_t, uint32_t> ref;
  std::mt19937_64 rng(3);
  for (int step = 0; step < 50000; ++step) {
    const uint64_t id = rng() % 700;
    const ChunkKey key{(id % 7) << 32, id};  // only 7 distinct low words
    if (rng() % 3 == 0) {
      EXPECT_EQ(index.erase(4, key), ref.erase(id) == 1);
    } else if (!ref.count(id) && ref.size() < 512) {
      ASSERT_TRUE(index.insert(4, key, static_cast<uint32_t>(id)));
      ref[id] = static_cast<uint32_t>(id);
    }
    if (step % 97 == 0) {
      for (uint64_t j = 0; j < 700; ++j) {
        const uint32_t got = index.find(4, ChunkKey{(j % 7) << 32, j});
        ASSERT_EQ(got, ref.count(j) ? ref[j] : ChunkIndex::kAbsent) << "step " << step;
      }
    }
  }
  EXPECT_EQ(index.size(), ref.size());
}

}  // namespace
}  // namespace tierkv::storage
