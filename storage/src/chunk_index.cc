#include "tierkv/storage/chunk_index.h"

#include <algorithm>
#include <bit>

namespace tierkv::storage {

ChunkIndex::ChunkIndex(uint32_t max_entries) : max_entries_(max_entries) {
  const size_t buckets = std::bit_ceil(std::max<size_t>(16, size_t{max_entries} * 2));
  table_.resize(buckets);
  mask_ = buckets - 1;
}

uint32_t ChunkIndex::find(NamespaceId ns, const ChunkKey& key) const {
  for (size_t i = bucket(ns, key);; i = (i + 1) & mask_) {
    const Entry& e = table_[i];
    if (e.value == kAbsent) return kAbsent;
    if (e.key == key && e.ns == ns) return e.value;
  }
}

bool ChunkIndex::insert(NamespaceId ns, const ChunkKey& key, uint32_t value) {
  if (size_ >= max_entries_) return false;
  for (size_t i = bucket(ns, key);; i = (i + 1) & mask_) {
    Entry& e = table_[i];
    if (e.value == kAbsent) {
      e = Entry{key, ns, value};
      ++size_;
      return true;
    }
    if (e.key == key && e.ns == ns) return false;
  }
}

bool ChunkIndex::erase(NamespaceId ns, const ChunkKey& key) {
  size_t i = bucket(ns, key);
  for (;; i = (i + 1) & mask_) {
    const Entry& e = table_[i];
    if (e.value == kAbsent) return false;
    if (e.key == key && e.ns == ns) break;
  }
  // Backward-shift: pull later entries of the probe run into the hole while that keeps each of
  // them reachable from its home bucket.
  size_t hole = i;
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    Entry& e = table_[j];
    if (e.value == kAbsent) break;
    const size_t home = bucket(e.ns, e.key);
    // e may move to `hole` iff home is not cyclically in (hole, j].
    const bool home_in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!home_in_range) {
      table_[hole] = e;
      hole = j;
    }
  }
  table_[hole] = Entry{};
  --size_;
  return true;
}

}  // namespace tierkv::storage
