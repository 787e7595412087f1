#include "tierkv/storage/slab_slot_pool.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace tierkv::storage {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

SlotPoolOptions small_pool() { return SlotPoolOptions{"host", 16 * kMiB, 4 * kMiB, 64 * kKiB}; }

TEST(SlabSlotPoolTest, OptionsAreValidated) {
  EXPECT_TRUE(small_pool().validate().ok());
  SlotPoolOptions o = small_pool();
  o.min_slot_bytes = 100 * kKiB;
  EXPECT_NE(o.validate().message().find("min_slot_size"), std::string::npos);
  o = small_pool();
  o.region_bytes = 1 * kMiB;
  EXPECT_NE(o.validate().message().find("capacity"), std::string::npos);
}

TEST(SlabSlotPoolTest, ClassesFitSizesWithLittleWaste) {
  SlabSlotPool pool(small_pool());
  EXPECT_EQ(pool.class_bytes(*pool.class_for(64 * kKiB)), 64 * kKiB);
  EXPECT_EQ(pool.class_bytes(*pool.class_for(65 * kKiB)), 96 * kKiB);
  EXPECT_EQ(pool.class_bytes(*pool.class_for(1 * kMiB)), 1 * kMiB);
  EXPECT_EQ(pool.class_bytes(*pool.class_for(3 * kMiB)), 3 * kMiB);
  for (uint64_t b = 1; b <= 4 * kMiB; b = b * 3 / 2 + 1) {
    const uint64_t slot = pool.class_bytes(*pool.class_for(b));
    EXPECT_GE(slot, b);
    if (b >= 64 * kKiB) {
      EXPECT_LE(slot, b * 3 / 2 + 1) << b;  // at most a third of a slot wasted
    }
  }
  auto too_big = pool.class_for(4 * kMiB + 1);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("exceeds the largest host slot"), std::string::npos);
}

TEST(SlabSlotPoolTest, AllocateUntilExhaustedThenFreeAndReuse) {
  SlabSlotPool pool(small_pool());
  const int cls = *pool.class_for(1 * kMiB);
  std::set<uint64_t> offsets;
  std::vector<SlotId> slots;
  for (;;) {
    const SlotId s = pool.allocate(cls);
    if (s == kNoSlot) break;
    EXPECT_TRUE(pool.is_allocated(s));
    EXPECT_EQ(pool.offset(s) % (1 * kMiB), 0u);
    EXPECT_LE(pool.offset(s) + pool.slot_bytes(s), pool.capacity_bytes());
    EXPECT_TRUE(offsets.insert(pool.offset(s)).second) << "two slots share offset";
    slots.push_back(s);
  }
  EXPECT_EQ(slots.size(), 16u);  // 16 MiB / 1 MiB
  EXPECT_EQ(pool.used_bytes(), 16 * kMiB);
  EXPECT_FALSE(pool.can_allocate(cls));
  ASSERT_TRUE(pool.free(slots[5]).ok());
  EXPECT_FALSE(pool.is_allocated(slots[5]));
  EXPECT_EQ(pool.allocate(cls), slots[5]);
  EXPECT_FALSE(pool.free(kNoSlot - 1).ok());
}

// Freed slots come back last-freed-first by default; with lowest_first (the NVMe tier's files),
// lowest offset first, so chunks written down together lie in offset order whatever was freed.
TEST(SlabSlotPoolTest, LowestFirstHandsOutFreedSlotsInOffsetOrder) {
  for (const bool lowest_first : {false, true}) {
    SlotPoolOptions o = small_pool();
    o.lowest_first = lowest_first;
    SlabSlotPool pool(o);
    const int cls = *pool.class_for(1 * kMiB);
    std::vector<SlotId> slots;
    for (int i = 0; i < 12; ++i) slots.push_back(pool.allocate(cls));  // 3 of 4 slabs
    for (size_t i = 1; i < slots.size(); ++i) {
      EXPECT_GT(pool.offset(slots[i]), pool.offset(slots[i - 1])) << "a fresh pool, in order";
    }
    // Free every other slot in ascending order, and one slot of the last slab's worth.
    std::vector<uint64_t> freed;
    for (size_t i = 0; i < slots.size(); i += 2) {
      ASSERT_TRUE(pool.free(slots[i]).ok());
      freed.push_back(pool.offset(slots[i]));
    }
    std::vector<uint64_t> again;
    for (size_t i = 0; i < freed.size(); ++i) again.push_back(pool.offset(pool.allocate(cls)));
    if (lowest_first) {
      EXPECT_EQ(again, freed);
    } else {
      EXPECT_EQ(again, std::vector<uint64_t>(freed.rbegin(), freed.rend()));
    }
    // Lowest first also across slabs: the next ones come from the fourth slab, in order.
    const uint64_t next = pool.offset(pool.allocate(cls));
    EXPECT_EQ(next, 12 * kMiB);
    // And after an empty slab moves to another class and back, still in order.
    for (SlotId s = 0; s < pool.max_slot_ids(); ++s) {
      if (pool.is_allocated(s)) ASSERT_TRUE(pool.free(s).ok());
    }
    const int small = *pool.class_for(64 * kKiB);
    for (int i = 0; i < 64 * 4; ++i) ASSERT_NE(pool.allocate(small), kNoSlot);  // every slab
    for (SlotId s = 0; s < pool.max_slot_ids(); ++s) {
      if (pool.is_allocated(s)) ASSERT_TRUE(pool.free(s).ok());
    }
    std::vector<uint64_t> big;
    for (int i = 0; i < 16; ++i) big.push_back(pool.offset(pool.allocate(cls)));
    EXPECT_EQ(pool.allocate(cls), kNoSlot);
    if (lowest_first) {
      for (size_t i = 0; i < big.size(); ++i) EXPECT_EQ(big[i], i * kMiB);
    }
  }
}

TEST(SlabSlotPoolTest, LeasedSlotCannotBeFreed) {
  SlabSlotPool pool(small_pool());
  const SlotId s = pool.allocate(0);
  ASSERT_TRUE(pool.lease(s).ok());
  ASSERT_TRUE(pool.lease(s).ok());
  Status st = pool.free(s);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("2 leases"), std::string::npos);
  EXPECT_EQ(*pool.unlease(s), 1u);
  EXPECT_FALSE(pool.free(s).ok());
  EXPECT_EQ(*pool.unlease(s), 0u);
  EXPECT_FALSE(pool.unlease(s).ok());
  EXPECT_TRUE(pool.free(s).ok());
}

TEST(SlabSlotPoolTest, EmptySlabMovesToAnotherClass) {
  SlabSlotPool pool(small_pool());  // 4 slabs of 4 MiB
  const int big = *pool.class_for(4 * kMiB);
  const int small = *pool.class_for(64 * kKiB);
  // Fill every slab with small slots, then free one slab's worth.
  std::vector<SlotId> slots;
  for (SlotId s; (s = pool.allocate(small)) != kNoSlot;) slots.push_back(s);
  EXPECT_EQ(pool.allocate(big), kNoSlot);
  for (size_t i = 0; i < 64; ++i) ASSERT_TRUE(pool.free(slots[i]).ok());  // slab 0 empties
  const SlotId b = pool.allocate(big);
  ASSERT_NE(b, kNoSlot);
  EXPECT_EQ(pool.slot_bytes(b), 4 * kMiB);
  // The small class no longer hands out slots from the slab that moved.
  for (SlotId s; (s = pool.allocate(small)) != kNoSlot;) {
    EXPECT_TRUE(pool.offset(s) + pool.slot_bytes(s) <= pool.offset(b) ||
                pool.offset(s) >= pool.offset(b) + 4 * kMiB);
  }
}

TEST(SlabSlotPoolTest, RandomChurnKeepsAccountsExact) {
  SlabSlotPool pool(small_pool());
  std::mt19937 rng(11);
  std::vector<SlotId> live;
  uint64_t expect_used = 0;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 2 == 0) {
      const int cls = static_cast<int>(rng() % pool.num_classes());
      const SlotId s = pool.allocate(cls);
      if (s != kNoSlot) {
        live.push_back(s);
        expect_used += pool.class_bytes(cls);
      }
    } else {
      const size_t i = rng() % live.size();
      expect_used -= pool.slot_bytes(live[i]);
      ASSERT_TRUE(pool.free(live[i]).ok());
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(pool.used_bytes(), expect_used);
  }
  // No two live slots overlap.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (SlotId s : live) spans.emplace_back(pool.offset(s), pool.offset(s) + pool.slot_bytes(s));
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) ASSERT_LE(spans[i - 1].second, spans[i].first);
}

}  // namespace
}  // namespace tierkv::storage
