// CacheEngine, the GPU side: opening the tier, counting host reads towards promotion, starting
// promotion copies and running their completions, GPU-slot leases for clients that opened the
// pool. Everything here runs on the engine's one thread; copy completions arrive through
// poll_gpu(). The bookkeeping itself is GpuTier's.
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::scheduler {

using storage::ChunkIndex;
using storage::kNoSlot;

void CacheEngine::open_gpu(std::unique_ptr<storage::GpuMemory> memory) {
  const GpuTierOptions& o = options_.gpu;
  if (o.capacity_bytes == 0) {
    gpu_status_ = "off (gpu.capacity = 0)";
    return;
  }
  if (o.device < 0) {
    gpu_status_ = "off (gpu.device = off)";
    return;
  }
  // Only whole slabs are usable (validate() made sure there is one).
  const uint64_t usable = o.capacity_bytes / o.slab_bytes * o.slab_bytes;
  if (memory == nullptr) {
    const storage::GpuMemoryOptions mo{o.device, usable, o.copies_in_flight};
    auto opened = storage::open_cuda_gpu_memory(mo, {region_.data(), region_.size()});
    if (!opened.ok()) {
      gpu_status_ = "off (" + opened.status().message() + ")";
      return;
    }
    memory = std::move(opened).value();
  }
  gpu_ = std::make_unique<GpuTier>(o, std::move(memory), pool_.max_slot_ids());
  gpu_status_ = "on: " + gpu_->memory().description();
}

int CacheEngine::gpu_fd() const { return gpu_ ? gpu_->completion_fd() : -1; }

void CacheEngine::poll_gpu() {
  if (!gpu_) return;
  gpu_ended_.clear();
  gpu_->poll(gpu_ended_);
  for (SlotId s : gpu_ended_) unlease(s);  // the copy no longer reads the host slot
  pump_promotions();
}

void CacheEngine::gpu_count_reads(std::span<const proto::SlotRef> slots) {
  if (!gpu_) return;
  for (const proto::SlotRef& ref : slots) gpu_->count_read(ref.slot);
  pump_promotions();
}

void CacheEngine::gpu_count_read(SlotId slot) {
  if (!gpu_) return;
  gpu_->count_read(slot);
  pump_promotions();
}

proto::Tier CacheEngine::host_tier(SlotId slot) {
  if (!gpu_) return proto::Tier::kHost;
  const bool on_gpu = gpu_->resident(slot) != kNoSlot;
  gpu_->count_lookup(on_gpu);
  return on_gpu ? proto::Tier::kGpu : proto::Tier::kHost;
}

void CacheEngine::pump_promotions() {
  while (gpu_->can_start()) {
    const SlotId s = gpu_->next_queued();
    if (s == kNoSlot) return;
    const ChunkMeta& m = meta_[s];
    const NamespaceEntry* e = ns_entry(m.ns);
    // Queued chunks are ready (a chunk leaving host RAM leaves the queue); checked all the same.
    if (m.state != ChunkState::kReady || e == nullptr) continue;
    SlotId parent = kNoSlot;
    if (!m.parent_key.is_zero()) {
      const uint32_t p = index_.find(m.ns, m.parent_key);
      if (p != ChunkIndex::kAbsent && meta_[p].state == ChunkState::kReady) parent = p;
    }
    // The copy reads the host slot until it lands: lease it, so it is neither evicted nor reused.
    (void)pool_.lease(s);
    update_evictable(s);
    if (!gpu_->start_copy(s, parent, region_.data() + pool_.offset(s), e->ns.chunk_bytes())) {
      unlease(s);
    }
  }
}

Status CacheEngine::gpu_attach(SessionId session, proto::GpuAttachReply& reply) {
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  if (!gpu_) return Status::FailedPrecondition("gpu_attach: the GPU tier is " + gpu_status_);
  const storage::GpuMemory& memory = gpu_->memory();
  reply.device = memory.device();
  // Slot sizes are multiples of min_slot_bytes / 2 (>= 4 KiB), slabs of slab_bytes.
  reply.slot_align = 4096;
  reply.pool_bytes = gpu_->pool().capacity_bytes();
  reply.device_uuid = memory.device_uuid();
  reply.ipc_handle = memory.ipc_handle();
  gpu_->attach(session);
  return Status::Ok();
}

void CacheEngine::load_gpu(SessionId session, const proto::KeysRequest& req, LoadDone done) {
  if (!gpu_) {
    return done(Status::FailedPrecondition("gpu_load: the GPU tier is " + gpu_status_), {});
  }
  if (!gpu_->attached(session)) {
    return done(Status::FailedPrecondition(
                    "gpu_load: this client has not opened the daemon's GPU pool (gpu_attach)"),
                {});
  }
  // The ordinary load leases the host slots (reading up from NVMe what is only there); then the
  // chunks with a GPU copy trade their host lease for a GPU one.
  load(session, req,
       [this, session, done = std::move(done)](Status st, const proto::LoadReply& rep) {
         if (!st.ok() || !gpu_) return done(st, rep);
         proto::LoadReply& out = gpu_reply_;
         out.slots.assign(rep.slots.begin(), rep.slots.end());
         gpu_host_release_.clear();
         for (proto::SlotRef& ref : out.slots) {
           const SlotId g = gpu_->resident(ref.slot);
           gpu_->count_lookup(g != kNoSlot);
           if (g == kNoSlot) continue;
           gpu_host_release_.push_back(ref.slot);
           host_counters_.bytes_out -= ref.bytes;  // served from the GPU tier, not out of host RAM
           ref = gpu_->lease(session, g, ref.bytes);
         }
         uint64_t released = 0;
         if (!gpu_host_release_.empty()) (void)release(session, gpu_host_release_, &released);
         done(Status::Ok(), out);
       });
}

Status CacheEngine::gpu_release(SessionId session, std::span<const uint32_t> slots,
                                uint64_t* released) {
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  if (!gpu_) return Status::FailedPrecondition("gpu_release: the GPU tier is " + gpu_status_);
  return gpu_->release(session, slots, released);
}

void CacheEngine::fill_gpu_stats(proto::StatsReply& stats) const {
  stats.gpu = proto::GpuStats{};
  stats.gpu_status = gpu_status_;
  if (!gpu_) return;
  for (proto::TierStats& t : stats.tiers) {
    if (t.tier == proto::Tier::kGpu) gpu_->fill_stats(t, stats.gpu);
  }
}

}  // namespace tierkv::scheduler
