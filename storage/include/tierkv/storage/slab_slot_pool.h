// SlabSlotPool: a slab allocator of fixed-size slots over a tier's byte space — the host tier's
// shared-memory region, or the NVMe tier's data files.
//
// The region is cut into pages of `page_bytes` (default 64 MiB). A page is given to one size class
// when that class first needs room and is carved into slots of the class's size; a page whose
// slots are all free can move to another class. Classes run 1x, 1.5x, 2x, 3x, 4x, 6x ... of
// `min_slot_bytes` up to `page_bytes`, so a chunk wastes at most a third of its slot (and none
// when its size is a power of two or 1.5 times one, as KV chunks usually are).
// Allocate and free are O(1) (a free stack per class: the slot freed last is reused first, warm
// in the caches), or, with `lowest_first`, O(log n) (a heap per class: the free slot at the lowest
// offset is handed out first, so chunks allocated together lie in offset order — what a disk
// reads fastest when they are read back together). Nothing is allocated after construction.
//
// Each slot carries a lease count: a leased slot cannot be freed (free() reports the misuse), so a
// chunk being read or written is never reused. Which chunk lives in a slot is the caller's
// business (the cache engine's); the pool only knows sizes, offsets and leases.
//
// Slot ids are dense — page * max_slots_per_page + index — so callers can keep per-slot side
// arrays of max_slot_ids() entries. Thread safety: none; one owner thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::storage {

using SlotId = uint32_t;
inline constexpr SlotId kNoSlot = UINT32_MAX;

struct SlotPoolOptions {
  std::string tier = "host";  // names the config section in messages ("host.slab_size = ...")
  uint64_t region_bytes = 0;
  uint64_t page_bytes = 64ull << 20;     // power of two; also the largest slot
  uint64_t min_slot_bytes = 64ull << 10;  // power of two, >= 8 KiB
  bool lowest_first = false;              // see above; the NVMe tier's files set it
  Status validate() const;
};

class SlabSlotPool {
 public:
  explicit SlabSlotPool(const SlotPoolOptions& options);  // options must validate()

  // The smallest class that holds `bytes`, or an error naming the size and the largest slot.
  Result<int> class_for(uint64_t bytes) const;
  int num_classes() const { return static_cast<int>(class_bytes_.size()); }
  uint64_t class_bytes(int cls) const { return class_bytes_[cls]; }

  // A free slot of class `cls`, or kNoSlot when that class has none and no page is free.
  SlotId allocate(int cls);
  // Returns a slot to its class. The slot must be allocated and not leased.
  Status free(SlotId slot);

  // Recovery: marks exactly `slots` allocated, each in the class given, on a pool that has
  // allocated nothing yet; every other slot of a page so claimed becomes free in that class.
  // Rejects (and leaves the pool empty on) a slot out of range, named twice, or whose page
  // another slot already put in a different class.
  struct RestoredSlot {
    SlotId slot = kNoSlot;
    int cls = 0;
  };
  Status restore(std::span<const RestoredSlot> slots);

  Status lease(SlotId slot);
  // Drops one lease; returns the leases left.
  Result<uint32_t> unlease(SlotId slot);
  uint32_t leases(SlotId slot) const { return slots_[slot].leases; }

  // True if `slot` names an allocated slot. Cheap: the check every client-supplied id goes through.
  bool is_allocated(SlotId slot) const {
    return slot < slots_.size() && slots_[slot].allocated;
  }
  uint64_t offset(SlotId slot) const;
  uint64_t slot_bytes(SlotId slot) const { return class_bytes_[slot_class(slot)]; }
  int slot_class(SlotId slot) const { return page_class_[slot / max_slots_per_page_]; }

  uint32_t max_slot_ids() const { return static_cast<uint32_t>(slots_.size()); }
  uint64_t capacity_bytes() const { return num_pages_ * page_bytes_; }
  uint64_t used_bytes() const { return used_bytes_; }
  uint64_t free_pages() const { return free_pages_.size(); }
  uint64_t page_bytes() const { return page_bytes_; }
  // True when an allocate(cls) would succeed without freeing anything.
  bool can_allocate(int cls) const;

 private:
  struct SlotState {
    bool allocated = false;
    uint32_t leases = 0;
  };
  void assign_page(uint32_t page, int cls);
  void push_free(int cls, SlotId slot);
  SlotId pop_free(int cls);
  bool reclaim_empty_page(int except_cls);
  uint32_t slots_in_page(int cls) const {
    return static_cast<uint32_t>(page_bytes_ / class_bytes_[cls]);
  }

  bool lowest_first_;
  uint64_t page_bytes_;
  uint64_t num_pages_;
  uint32_t max_slots_per_page_;
  std::vector<uint64_t> class_bytes_;
  std::vector<std::vector<SlotId>> class_free_;  // per class: free slots, a stack or a min-heap
  std::vector<int> page_class_;                  // -1 = page free
  std::vector<uint32_t> page_used_;              // allocated slots per page
  std::vector<uint32_t> free_pages_;             // stack
  std::vector<SlotState> slots_;
  uint64_t used_bytes_ = 0;
};

}  // namespace tierkv::storage
