#include "tierkv/storage/slab_slot_pool.h"

#include <algorithm>
#include <bit>
#include <functional>

namespace tierkv::storage {

Status SlotPoolOptions::validate() const {
  if (!std::has_single_bit(min_slot_bytes) || min_slot_bytes < (8u << 10)) {
    return Status::InvalidArgument(tier + ".min_slot_size = " + std::to_string(min_slot_bytes) +
                                   " must be a power of two of at least 8 KiB");
  }
  if (!std::has_single_bit(page_bytes) || page_bytes < min_slot_bytes) {
    return Status::InvalidArgument(tier + ".slab_size = " + std::to_string(page_bytes) +
                                   " must be a power of two and at least " + tier +
                                   ".min_slot_size");
  }
  if (page_bytes / min_slot_bytes > (1u << 20)) {
    return Status::InvalidArgument(tier + ".slab_size / " + tier +
                                   ".min_slot_size exceeds 2^20 slots per slab");
  }
  if (region_bytes < page_bytes) {
    return Status::InvalidArgument(tier + ".capacity = " + std::to_string(region_bytes) +
                                   " is smaller than one slab (" + tier + ".slab_size = " +
                                   std::to_string(page_bytes) + ")");
  }
  if (region_bytes / min_slot_bytes > UINT32_MAX - 1) {
    return Status::InvalidArgument(tier + ".capacity / " + tier +
                                   ".min_slot_size exceeds 2^32 slots");
  }
  return Status::Ok();
}

SlabSlotPool::SlabSlotPool(const SlotPoolOptions& o)
    : lowest_first_(o.lowest_first),
      page_bytes_(o.page_bytes),
      num_pages_(o.region_bytes / o.page_bytes),
      max_slots_per_page_(static_cast<uint32_t>(o.page_bytes / o.min_slot_bytes)) {
  for (uint64_t s = o.min_slot_bytes; s <= page_bytes_; s *= 2) {
    class_bytes_.push_back(s);
    if (s + s / 2 <= page_bytes_) class_bytes_.push_back(s + s / 2);
  }
  std::sort(class_bytes_.begin(), class_bytes_.end());
  class_free_.resize(class_bytes_.size());
  for (size_t c = 0; c < class_bytes_.size(); ++c) {
    // Room for every slot the class could ever hold, so allocate/free never allocate memory.
    class_free_[c].reserve(num_pages_ * slots_in_page(static_cast<int>(c)));
  }
  page_class_.assign(num_pages_, -1);
  page_used_.assign(num_pages_, 0);
  free_pages_.reserve(num_pages_);
  for (uint64_t p = num_pages_; p-- > 0;) free_pages_.push_back(static_cast<uint32_t>(p));
  slots_.resize(num_pages_ * max_slots_per_page_);
}

Result<int> SlabSlotPool::class_for(uint64_t bytes) const {
  if (bytes == 0) return Status::InvalidArgument("chunk size 0 bytes: nothing to store");
  auto it = std::lower_bound(class_bytes_.begin(), class_bytes_.end(), bytes);
  if (it == class_bytes_.end()) {
    return Status::InvalidArgument("chunk size " + std::to_string(bytes) +
                                   " bytes exceeds the largest host slot (" +
                                   std::to_string(page_bytes_) +
                                   " bytes = host.slab_size): use fewer chunk_tokens or a larger "
                                   "slab");
  }
  return static_cast<int>(it - class_bytes_.begin());
}

void SlabSlotPool::push_free(int cls, SlotId slot) {
  auto& free = class_free_[cls];
  free.push_back(slot);
  if (lowest_first_) std::push_heap(free.begin(), free.end(), std::greater<>());
}

SlotId SlabSlotPool::pop_free(int cls) {
  auto& free = class_free_[cls];
  if (lowest_first_) std::pop_heap(free.begin(), free.end(), std::greater<>());
  const SlotId s = free.back();
  free.pop_back();
  return s;
}

void SlabSlotPool::assign_page(uint32_t page, int cls) {
  page_class_[page] = cls;
  page_used_[page] = 0;
  const uint32_t n = slots_in_page(cls);
  // Pushed in reverse so that the lowest offsets are handed out first.
  for (uint32_t i = n; i-- > 0;) push_free(cls, page * max_slots_per_page_ + i);
}

bool SlabSlotPool::reclaim_empty_page(int except_cls) {
  for (uint32_t p = 0; p < num_pages_; ++p) {
    const int c = page_class_[p];
    if (c < 0 || c == except_cls || page_used_[p] != 0) continue;
    // Rare path (layouts of different sizes competing for pages): drop the page's slots from its
    // old class's free stack, then give the page back.
    auto& stack = class_free_[c];
    std::erase_if(stack, [&](SlotId s) { return s / max_slots_per_page_ == p; });
    if (lowest_first_) std::make_heap(stack.begin(), stack.end(), std::greater<>());
    page_class_[p] = -1;
    free_pages_.push_back(p);
    return true;
  }
  return false;
}

bool SlabSlotPool::can_allocate(int cls) const {
  if (!class_free_[cls].empty() || !free_pages_.empty()) return true;
  for (uint32_t p = 0; p < num_pages_; ++p) {
    if (page_class_[p] >= 0 && page_used_[p] == 0) return true;
  }
  return false;
}

SlotId SlabSlotPool::allocate(int cls) {
  auto& stack = class_free_[cls];
  if (stack.empty()) {
    if (free_pages_.empty() && !reclaim_empty_page(cls)) return kNoSlot;
    const uint32_t page = free_pages_.back();
    free_pages_.pop_back();
    assign_page(page, cls);
  }
  const SlotId s = pop_free(cls);
  slots_[s] = SlotState{true, 0};
  ++page_used_[s / max_slots_per_page_];
  used_bytes_ += class_bytes_[cls];
  return s;
}

Status SlabSlotPool::free(SlotId slot) {
  if (!is_allocated(slot)) return Status::FailedPrecondition("slot " + std::to_string(slot) + " is not allocated");
  if (slots_[slot].leases != 0) {
    return Status::FailedPrecondition("slot " + std::to_string(slot) + " still has " +
                                      std::to_string(slots_[slot].leases) + " leases");
  }
  const int cls = slot_class(slot);
  slots_[slot].allocated = false;
  --page_used_[slot / max_slots_per_page_];
  used_bytes_ -= class_bytes_[cls];
  push_free(cls, slot);
  return Status::Ok();
}

Status SlabSlotPool::restore(std::span<const RestoredSlot> slots) {
  if (used_bytes_ != 0) return Status::FailedPrecondition("restore into a pool already in use");
  const auto reset = [this] {
    for (auto& stack : class_free_) stack.clear();
    for (SlotId s = 0; s < slots_.size(); ++s) slots_[s] = SlotState{};
    page_class_.assign(num_pages_, -1);
    page_used_.assign(num_pages_, 0);
    used_bytes_ = 0;
  };
  reset();
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto [s, cls] = slots[i];
    const uint32_t page = s / max_slots_per_page_;
    Status bad;
    if (s >= slots_.size() || cls < 0 || cls >= num_classes()) {
      bad = Status::InvalidArgument("restored slot " + std::to_string(s) + " (class " +
                                    std::to_string(cls) + ") is out of range");
    } else if (page_class_[page] >= 0 && page_class_[page] != cls) {
      bad = Status::InvalidArgument("restored slot " + std::to_string(s) + " is of class " +
                                    std::to_string(cls) + " but its slab holds class " +
                                    std::to_string(page_class_[page]));
    } else if (s % max_slots_per_page_ >= slots_in_page(cls)) {
      bad = Status::InvalidArgument("restored slot " + std::to_string(s) +
                                    " lies past the end of its slab for class " +
                                    std::to_string(cls));
    } else if (slots_[s].allocated) {
      bad = Status::InvalidArgument("restored slot " + std::to_string(s) + " is named twice");
    }
    if (!bad.ok()) {
      reset();
      free_pages_.clear();
      for (uint64_t p = num_pages_; p-- > 0;) free_pages_.push_back(static_cast<uint32_t>(p));
      return bad;
    }
    page_class_[page] = cls;
    slots_[s].allocated = true;
    ++page_used_[page];
    used_bytes_ += class_bytes_[cls];
  }
  // Free stacks and free pages anew from what is now allocated, lowest offsets handed out first.
  free_pages_.clear();
  for (uint64_t p = num_pages_; p-- > 0;) {
    const int cls = page_class_[p];
    if (cls < 0) {
      free_pages_.push_back(static_cast<uint32_t>(p));
      continue;
    }
    for (uint32_t i = slots_in_page(cls); i-- > 0;) {
      const SlotId s = static_cast<SlotId>(p) * max_slots_per_page_ + i;
      if (!slots_[s].allocated) push_free(cls, s);
    }
  }
  return Status::Ok();
}

Status SlabSlotPool::lease(SlotId slot) {
  if (!is_allocated(slot)) return Status::FailedPrecondition("slot " + std::to_string(slot) + " is not allocated");
  ++slots_[slot].leases;
  return Status::Ok();
}

Result<uint32_t> SlabSlotPool::unlease(SlotId slot) {
  if (!is_allocated(slot) || slots_[slot].leases == 0) {
    return Status::FailedPrecondition("slot " + std::to_string(slot) + " is not leased");
  }
  return --slots_[slot].leases;
}

uint64_t SlabSlotPool::offset(SlotId slot) const {
  const uint32_t page = slot / max_slots_per_page_;
  const uint32_t index = slot % max_slots_per_page_;
  return page * page_bytes_ + index * class_bytes_[page_class_[page]];
}

}  // namespace tierkv::storage
