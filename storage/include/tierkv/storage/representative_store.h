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
// Persistence: the store itself lives in memory. The NVMe tier keeps the representatives its
// fused chunks refer to in its index (NvmeStore::commit), and after a restart puts them back
// under the same ids with restore(), so the recovered chunks decode as they were written.
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

  // Recovery: installs a representative under the id it had when it was persisted, holding
  // `refs` (>= 1) references. InvalidArgument if `id` is kNoRep, `refs` is 0, or the id's slot
  // holds a live representative. Later add()s never reuse a restored id while it is live, and
  // give a freed one's slot a new generation as usual. Meant for a store that has not handed out
  // ids yet (a restarted daemon's, before its tiers take new chunks).
  Status restore(RepId id, const RepresentativeInfo& info, std::span<const std::byte> bytes,
                 uint32_t refs);

 private:
  struct Slot {
    uint32_t generation = 0;
    uint32_t refs = 0;
    std::shared_ptr<const Representative> rep;
  };
  const Slot* find(RepId id) const;  // mu_ held
  Slot* find(RepId id);              // mu_ held

  mutable std::mutex mu_;
  std::vector<Slot> slots_;  // guarded by mu_
  // guarded by mu_: free slot indices; may also hold slots restore() made live since (add()
  // skips those).
  std::vector<uint32_t> free_;
  RepresentativeStats stats_;  // guarded by mu_
};

// The representatives a fused chunk refers to: one id per block, in entry order, repeats
// included (what NvmeStore::commit persists beside the chunk's record). Checks the chunk as
// decoding does (header, checksums, entries); an encoded chunk of another codec refers to none
// (empty). Reads only `encoded`, not the store.
Result<std::vector<RepId>> fused_chunk_references(std::span<const std::byte> encoded);

}  // namespace tierkv::storage
