// Helpers shared by the NvmeStore tests: the store's options over two directories of a test's
// temporary directory, and opening a store and recovering what its index holds.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tierkv/storage/nvme_store.h"

namespace tierkv::storage::testing {

inline constexpr uint64_t kMiB = 1ull << 20;

// Data files striped over `dir`/a and `dir`/b, 4 MiB slabs, slots from 64 KiB.
inline NvmeOptions nvme_options(const std::string& dir, uint64_t capacity = 64 * kMiB,
                                uint32_t queue_depth = 8) {
  NvmeOptions o;
  o.directories = {dir + "/a", dir + "/b"};
  o.capacity_bytes = capacity;
  o.slab_bytes = 4 * kMiB;
  o.min_slot_bytes = 64 << 10;
  o.queue_depth = queue_depth;
  return o;
}

// A store opened and recovered, with what recovery found.
struct RecoveredStore {
  std::unique_ptr<NvmeStore> store;  // null if the open or the recovery failed (the test fails)
  std::vector<ChunkRecord> records;  // every chunk record recovery handed over
  RecoveryReport report;
};

// Opens a store with `options` and recovers it, with fused chunks' representatives in `reps` (may
// be null: no fused chunk is then recovered).
inline RecoveredStore open_and_recover(const NvmeOptions& options,
                                       RepresentativeStore* reps = nullptr) {
  RecoveredStore r;
  auto store = NvmeStore::open(options);
  EXPECT_TRUE(store.ok()) << store.status().to_string();
  if (!store.ok()) return r;
  r.store = std::move(store).value();
  r.store->set_representatives(reps);
  const Status s = r.store->recover(
      [](const Namespace&) {}, [&](const ChunkRecord& c) { r.records.push_back(c); }, &r.report);
  EXPECT_TRUE(s.ok()) << s.to_string();
  if (!s.ok()) r.store.reset();
  return r;
}

}  // namespace tierkv::storage::testing
