#include "tierkv/storage/host_slot_pool.h"

#include <algorithm>
#include <bit>

namespace tierkv::storage {

Status SlotPoolOptions::validate() const {
  if (!std::has_single_bit(min_slot_bytes) || min_slot_bytes < (8u << 10)) {
    return Status::InvalidArgument("host.min_slot_size = " + std::to_string(min_slot_bytes) +
                                   " must be a power of two of at least 8 KiB");
  }
  if (!std::has_single_bit(page_bytes) || page_bytes < min_slot_bytes) {
    return Status::InvalidArgument("host.slab_size = " + std::to_string(page_bytes) +
                                   " must be a power of two and at least host.min_slot_size");
  }
  if (page_bytes / min_slot_bytes > (1u << 20)) {
    return Status::InvalidArgument("host.slab_size / host.min_slot_size exceeds 2^20 slots per slab");
  }
  if (region_bytes < page_bytes) {
    return Status::InvalidArgument("host.capacity = " + std::to_string(region_bytes) +
                                   " is smaller than one slab (host.slab_size = " +
                                   std::to_string(page_bytes) + ")");
  }
  if (region_bytes / min_slot_bytes > UINT32_MAX - 1) {
    return Status::InvalidArgument("host.capacity / host.min_slot_size exceeds 2^32 slots");
  }
  return Status::Ok();
}

HostSlotPool::HostSlotPool(const SlotPoolOptions& o)
    : page_bytes_(o.page_bytes),
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

Result<int> HostSlotPool::class_for(uint64_t bytes) const {
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

void HostSlotPool::assign_page(uint32_t page, int cls) {
  page_class_[page] = cls;
  page_used_[page] = 0;
  const uint32_t n = slots_in_page(cls);
  // Pushed in reverse so that the lowest offsets are handed out first.
  for (uint32_t i = n; i-- > 0;) class_free_[cls].push_back(page * max_slots_per_page_ + i);
}

bool HostSlotPool::reclaim_empty_page(int except_cls) {
  for (uint32_t p = 0; p < num_pages_; ++p) {
    const int c = page_class_[p];
    if (c < 0 || c == except_cls || page_used_[p] != 0) continue;
    // Rare path (layouts of different sizes competing for pages): drop the page's slots from its
    // old class's free stack, then give the page back.
    auto& stack = class_free_[c];
    std::erase_if(stack, [&](SlotId s) { return s / max_slots_per_page_ == p; });
    page_class_[p] = -1;
    free_pages_.push_back(p);
    return true;
  }
  return false;
}

bool HostSlotPool::can_allocate(int cls) const {
  if (!class_free_[cls].empty() || !free_pages_.empty()) return true;
  for (uint32_t p = 0; p < num_pages_; ++p) {
    if (page_class_[p] >= 0 && page_used_[p] == 0) return true;
  }
  return false;
}

SlotId HostSlotPool::allocate(int cls) {
  auto& stack = class_free_[cls];
  if (stack.empty()) {
    if (free_pages_.empty() && !reclaim_empty_page(cls)) return kNoSlot;
    const uint32_t page = free_pages_.back();
    free_pages_.pop_back();
    assign_page(page, cls);
  }
  const SlotId s = stack.back();
  stack.pop_back();
  slots_[s] = SlotState{true, 0};
  ++page_used_[s / max_slots_per_page_];
  used_bytes_ += class_bytes_[cls];
  return s;
}

Status HostSlotPool::free(SlotId slot) {
  if (!is_allocated(slot)) return Status::FailedPrecondition("slot " + std::to_string(slot) + " is not allocated");
  if (slots_[slot].leases != 0) {
    return Status::FailedPrecondition("slot " + std::to_string(slot) + " still has " +
                                      std::to_string(slots_[slot].leases) + " leases");
  }
  const int cls = slot_class(slot);
  slots_[slot].allocated = false;
  --page_used_[slot / max_slots_per_page_];
  used_bytes_ -= class_bytes_[cls];
  class_free_[cls].push_back(slot);
  return Status::Ok();
}

Status HostSlotPool::lease(SlotId slot) {
  if (!is_allocated(slot)) return Status::FailedPrecondition("slot " + std::to_string(slot) + " is not allocated");
  ++slots_[slot].leases;
  return Status::Ok();
}

Result<uint32_t> HostSlotPool::unlease(SlotId slot) {
  if (!is_allocated(slot) || slots_[slot].leases == 0) {
    return Status::FailedPrecondition("slot " + std::to_string(slot) + " is not leased");
  }
  return --slots_[slot].leases;
}

uint64_t HostSlotPool::offset(SlotId slot) const {
  const uint32_t page = slot / max_slots_per_page_;
  const uint32_t index = slot % max_slots_per_page_;
  return page * page_bytes_ + index * class_bytes_[page_class_[page]];
}

}  // namespace tierkv::storage
