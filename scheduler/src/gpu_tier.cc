#include "tierkv/scheduler/gpu_tier.h"

#include <algorithm>

namespace tierkv::scheduler {

Status GpuTierOptions::validate() const {
  TIERKV_RETURN_IF_ERROR(pool_options().validate());
  if (promote_after_loads == 0) {
    return Status::InvalidArgument("gpu.promote_after_loads must be at least 1");
  }
  if (copies_in_flight == 0 || copies_in_flight > 1024) {
    return Status::InvalidArgument("gpu.copies_in_flight = " + std::to_string(copies_in_flight) +
                                   " is out of range [1, 1024]");
  }
  return Status::Ok();
}

namespace {
storage::SlotPoolOptions sized(const GpuTierOptions& o, uint64_t memory_bytes) {
  storage::SlotPoolOptions p = o.pool_options();
  p.region_bytes = std::min(p.region_bytes, memory_bytes) / p.page_bytes * p.page_bytes;
  return p;
}
}  // namespace

GpuTier::GpuTier(const GpuTierOptions& options, std::unique_ptr<storage::GpuMemory> memory,
                 uint32_t host_slots)
    : options_(options),
      memory_(std::move(memory)),
      pool_(sized(options, memory_->bytes())),
      lru_(pool_.max_slot_ids(), pool_.num_classes()),
      slots_(pool_.max_slot_ids()),
      host_(host_slots),
      done_scratch_(std::max<uint32_t>(1, memory_->max_copies())) {}

GpuTier::~GpuTier() = default;

// --- host side -----------------------------------------------------------------------------------

void GpuTier::count_read(SlotId host) {
  HostEntry& h = host_[host];
  if (h.reads < UINT32_MAX) ++h.reads;
  if (h.gpu == kNoSlot) {
    if (h.reads >= options_.promote_after_loads && !h.queued && queued_ < options_.max_queued) {
      h.queued = true;
      ++queued_;
      queue_.push_back(host);
    }
    return;
  }
  if (slots_[h.gpu].state == State::kReady) lru_.touch(h.gpu);
}

void GpuTier::drop_host(SlotId host) {
  HostEntry& h = host_[host];
  h.reads = 0;
  if (h.queued) {
    h.queued = false;
    --queued_;  // its queue entry is stale now; next_queued() skips it
  }
  const SlotId g = std::exchange(h.gpu, kNoSlot);
  if (g == kNoSlot) return;
  GpuSlot& s = slots_[g];
  s.host = kNoSlot;
  ++dropped_with_host_;
  if (s.state == State::kCopying) return;  // discarded when it lands
  --counters_.chunks;
  if (pool_.leases(g) > 0) {
    s.state = State::kZombie;
    lru_.set_evictable(g, 0, false);
  } else {
    free_gpu(g);
  }
}

GpuTier::SlotId GpuTier::resident(SlotId host) const {
  const SlotId g = host_[host].gpu;
  return g != kNoSlot && slots_[g].state == State::kReady ? g : kNoSlot;
}

// --- promotion -----------------------------------------------------------------------------------

bool GpuTier::can_start() const {
  return memory_->copies_in_flight() < std::min(options_.copies_in_flight, memory_->max_copies());
}

GpuTier::SlotId GpuTier::next_queued() {
  while (!queue_.empty()) {
    const SlotId host = queue_.front();
    queue_.pop_front();
    HostEntry& h = host_[host];
    if (!h.queued) continue;  // dropped (and maybe queued again later: that entry is further on)
    h.queued = false;
    --queued_;
    if (h.gpu == kNoSlot) return host;
  }
  return kNoSlot;
}

bool GpuTier::start_copy(SlotId host, SlotId parent_host, const std::byte* src, uint64_t bytes) {
  HostEntry& h = host_[host];
  if (h.gpu != kNoSlot) return false;  // already there, or on its way
  auto cls = pool_.class_for(bytes);
  if (!cls.ok()) {
    ++failures_;
    h.reads = 0;  // larger than a GPU slab: never try again for this chunk
    return false;
  }
  // The parent's GPU copy, if any, is held as a non-leaf while room is made, so that eviction
  // does not take the very chunk this one extends.
  SlotId parent = parent_host == kNoSlot ? kNoSlot : host_[parent_host].gpu;
  if (parent != kNoSlot && slots_[parent].state != State::kReady &&
      slots_[parent].state != State::kCopying) {
    parent = kNoSlot;
  }
  if (parent != kNoSlot) lru_.hold(parent);
  const SlotId g = allocate(*cls);
  if (parent != kNoSlot) {
    lru_.release_hold(parent);
    update_evictable(parent);
  }
  if (g == kNoSlot) {
    ++failures_;
    h.reads = 0;  // the tier is full of leased or copying chunks: start counting again
    return false;
  }
  if (Status s = memory_->copy_in(pool_.offset(g), src, bytes, g); !s.ok()) {
    (void)pool_.free(g);
    ++failures_;
    h.reads = 0;
    return false;
  }
  GpuSlot& s = slots_[g];
  s.host = host;
  s.source = host;
  s.bytes = bytes;
  s.state = State::kCopying;
  h.gpu = g;
  lru_.touch(g);
  lru_.link_parent(g, parent);
  return true;
}

void GpuTier::poll(std::vector<SlotId>& ended) {
  for (;;) {
    const size_t n = memory_->reap(done_scratch_);
    for (size_t i = 0; i < n; ++i) {
      const auto g = static_cast<SlotId>(done_scratch_[i].token);
      GpuSlot& s = slots_[g];
      ended.push_back(std::exchange(s.source, kNoSlot));
      if (s.host == kNoSlot || !done_scratch_[i].ok) {
        if (!done_scratch_[i].ok) {
          ++failures_;
          if (s.host != kNoSlot) {
            host_[s.host].gpu = kNoSlot;
            host_[s.host].reads = 0;
          }
        }
        free_gpu(g);
        continue;
      }
      s.state = State::kReady;
      ++counters_.chunks;
      ++promotions_;
      counters_.bytes_in += s.bytes;
      update_evictable(g);
    }
    if (n < done_scratch_.size()) return;
  }
}

// --- slots and eviction --------------------------------------------------------------------------

GpuTier::SlotId GpuTier::allocate(int cls) {
  for (;;) {
    const SlotId g = pool_.allocate(cls);
    if (g != kNoSlot) return g;
    if (!evict_one(cls)) return kNoSlot;
  }
}

bool GpuTier::evict_one(int cls) {
  uint32_t victim = lru_.coldest(cls);
  if (victim == LeafFirstLru::kNone) victim = lru_.coldest_any();
  if (victim == LeafFirstLru::kNone) return false;
  GpuSlot& s = slots_[victim];
  // Evicted copies are made again only after promote_after_loads more reads: a tier too small
  // for the hot set does not churn on every load.
  host_[s.host].gpu = kNoSlot;
  host_[s.host].reads = 0;
  s.host = kNoSlot;
  --counters_.chunks;
  ++counters_.evictions;
  free_gpu(victim);
  return true;
}

void GpuTier::free_gpu(SlotId g) {
  const uint32_t p = lru_.unlink_parent(g);
  if (p != LeafFirstLru::kNone) update_evictable(p);
  lru_.on_free(g);
  slots_[g] = GpuSlot{};
  (void)pool_.free(g);
}

void GpuTier::update_evictable(SlotId g) {
  const bool evictable =
      slots_[g].state == State::kReady && lru_.children(g) == 0 && pool_.leases(g) == 0;
  lru_.set_evictable(g, pool_.slot_class(g), evictable);
}

// --- leases --------------------------------------------------------------------------------------

proto::SlotRef GpuTier::lease(SessionId session, SlotId g, uint64_t bytes) {
  (void)pool_.lease(g);  // g is ready, so allocated
  ++leases_;
  sessions_[session].leases.push_back(g);
  lru_.touch(g);
  update_evictable(g);
  counters_.bytes_out += bytes;
  return proto::SlotRef{g, proto::kGpuPool, pool_.offset(g), bytes};
}

Status GpuTier::release(SessionId session, std::span<const uint32_t> slots, uint64_t* released) {
  auto it = sessions_.find(session);
  std::vector<SlotId>* held = it == sessions_.end() ? nullptr : &it->second.leases;
  // All or nothing: find every slot first (from where the previous was found: clients release in
  // the order they leased), marking found entries, and undo the marks if one is missing.
  std::vector<size_t> found;
  found.reserve(slots.size());
  size_t hint = 0;
  Status bad;
  for (size_t i = 0; i < slots.size() && bad.ok(); ++i) {
    size_t at = SIZE_MAX;
    if (held != nullptr && slots[i] != kNoSlot) {
      for (size_t k = 0; k < held->size(); ++k) {
        const size_t j = (hint + k) % held->size();
        if ((*held)[j] == slots[i]) {
          at = j;
          break;
        }
      }
    }
    if (at == SIZE_MAX) {
      bad = Status::FailedPrecondition("slots[" + std::to_string(i) +
                                       "] = " + std::to_string(slots[i]) +
                                       " is not a GPU slot leased by this client (or is named "
                                       "twice)");
      break;
    }
    (*held)[at] = kNoSlot;
    found.push_back(at);
    hint = at + 1;
  }
  if (!bad.ok()) {
    for (size_t j = 0; j < found.size(); ++j) (*held)[found[j]] = slots[j];
    return bad;
  }
  if (held != nullptr) std::erase(*held, kNoSlot);
  for (uint32_t g : slots) unlease(g);
  *released = slots.size();
  return Status::Ok();
}

uint64_t GpuTier::close_session(SessionId session) {
  attached_.erase(session);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return 0;
  const std::vector<SlotId> held = std::move(it->second.leases);
  sessions_.erase(it);
  for (SlotId g : held) unlease(g);
  return held.size();
}

void GpuTier::unlease(SlotId g) {
  --leases_;
  auto left = pool_.unlease(g);
  if (!left.ok() || *left != 0) return;
  if (slots_[g].state == State::kZombie) {
    free_gpu(g);
  } else {
    update_evictable(g);
  }
}

// --- stats ---------------------------------------------------------------------------------------

void GpuTier::fill_stats(proto::TierStats& t, proto::GpuStats& s) const {
  counters_.fill(proto::Tier::kGpu, pool_.capacity_bytes(), pool_.used_bytes(), t);
  s.device = memory_->device();
  s.promotions = promotions_;
  s.promotions_in_flight = memory_->copies_in_flight();
  s.promotions_queued = queued_;
  s.promotion_failures = failures_;
  s.leases = leases_;
  s.attached_clients = attached_.size();
  s.dropped_with_host = dropped_with_host_;
}

}  // namespace tierkv::scheduler
