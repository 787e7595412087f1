// RepresentativeStore: the blocks the fused codec's chunks refer to.
//
// The fused codec cuts chunks into blocks (one layer, one KV head, K or V, a run of tokens). A
// block that matches no earlier block becomes a *representative* and is kept here; every fused
// chunk's payload is a list of references to representatives (with a scale and an optional
// quantized residual). A representative is reference-counted: add() gives it one reference (the
// chunk that created it), acquire() adds one per further reference, release() drops one, and it
// is freed when the last reference goes — never while a chunk refers to it.
//
// Ids are never reused while a stale copy could still name them: an id is (generation, slot),
// and a freed slot's next occupant gets a new generation, so a stale or forged id is NotFound,
// not someone else's block.
//
// Thread safety: every member function is safe to call from any thread. Readers get a
// shared_ptr to an immutable block, so a representative released while a decoder still reads it
// stays valid for that reader.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/status.h"
#include "tierkv/storage/codec.h"

namespace tierkv::storage {

using RepId = uint64_t;
inline constexpr RepId kNoRep = 0;  // never a valid id (generations start at 1)

// What a representative block is and how its bytes are encoded.
struct RepresentativeInfo {
  uint32_t layer = 0;
  uint32_t head = 0;
  uint8_t kind = 0;  // 0 = K, 1 = V
  BlockFormat format = BlockFormat::kRaw;
  DType dtype = DType::kBFloat16;  // the layout's dtype (kRaw blocks are stored in it)
  uint32_t tokens = 0;             // rows of the block
  uint32_t head_dim = 0;
  int64_t first_token = 0;  // absolute position of its first token (for RoPE-aware references)
};

struct Representative {
  RepresentativeInfo info;
  std::vector<std::byte> bytes;
};

struct RepresentativeStats {
  uint64_t count = 0;       // live representatives
  uint64_t bytes = 0;       // their encoded bytes
  uint64_t references = 0;  // references held on them
};

class RepresentativeStore {
 public:
  // Stores a representative with one reference; returns its id.
  RepId add(const RepresentativeInfo& info, std::span<const std::byte> bytes);
  // One more reference; NotFound if `id` names no live representative.
  Status acquire(RepId id);
  // One reference fewer; frees the representative when none is left.
  Status release(RepId id);
  // The representative, or null if `id` names no live one.
  [[nodiscard]] std::shared_ptr<const Representative> get(RepId id) const;
  // get() for many ids under one lock acquisition; out.size() == ids.size().
  void get_many(std::span<const RepId> ids,
                std::span<std::shared_ptr<const Representative>> out) const;
  [[nodiscard]] uint32_t references(RepId id) const;  // 0 if not live
  [[nodiscard]] RepresentativeStats stats() const;

 private:
  struct Slot {
    uint32_t generation = 0;
    uint32_t refs = 0;
    std::shared_ptr<const Representative> rep;
  };
  const Slot* find(RepId id) const;  // mu_ held
  Slot* find(RepId id);              // mu_ held

  mutable std::mutex mu_;
  std::vector<Slot> slots_;     // guarded by mu_
  std::vector<uint32_t> free_;  // guarded by mu_: free slot indices
  RepresentativeStats stats_;   // guarded by mu_
};

}  // namespace tierkv::storage
