// ChunkIndex: (namespace, chunk key) -> slot, an open-addressing hash table of fixed capacity.
//
// Sized once for the most chunks the tier can hold, so insert and erase never allocate (the hot
// path of every put and load goes through it). Linear probing with backward-shift deletion: no
// tombstones, so probe lengths do not degrade over a long-running daemon's churn.
// Chunk keys are already xxh3 hashes seeded with the namespace, so their low bits are the bucket.
// Thread safety: none; one owner thread.
#pragma once

#include <cstdint>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"

namespace tierkv::storage {

class ChunkIndex {
 public:
  static constexpr uint32_t kAbsent = UINT32_MAX;

  // Holds up to `max_entries`; the table is the next power of two >= 2 * max_entries.
  explicit ChunkIndex(uint32_t max_entries);

  uint32_t find(NamespaceId ns, const ChunkKey& key) const;
  // False if the key is present already or the index is full.
  bool insert(NamespaceId ns, const ChunkKey& key, uint32_t value);
  bool erase(NamespaceId ns, const ChunkKey& key);
  uint32_t size() const { return size_; }

 private:
  struct Entry {
    ChunkKey key;
    NamespaceId ns = 0;
    uint32_t value = kAbsent;  // kAbsent = empty bucket
  };
  size_t bucket(NamespaceId ns, const ChunkKey& key) const {
    return static_cast<size_t>(key.lo ^ (ns * 0x9E3779B97F4A7C15ull)) & mask_;
  }

  std::vector<Entry> table_;
  size_t mask_;
  uint32_t size_ = 0;
  uint32_t max_entries_;
};

}  // namespace tierkv::storage
