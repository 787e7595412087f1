#include "tierkv/scheduler/host_chunk_loader.h"

#include <algorithm>
#include <cmath>

namespace tierkv::scheduler {

HostChunkLoader::HostChunkLoader(CacheEngine& engine, Clock& clock, SessionId lease_session,
                                 NamespaceId ns, uint64_t chunk_bytes,
                                 std::span<const ChunkKey> keys, HostReadThrottle throttle)
    : engine_(engine),
      clock_(clock),
      lease_session_(lease_session),
      ns_(ns),
      chunk_bytes_(chunk_bytes),
      keys_(keys.begin(), keys.end()),
      throttle_(throttle) {
  queue_.reserve(keys_.size());
}

HostChunkLoader::~HostChunkLoader() { cancel_all(); }

void HostChunkLoader::submit(uint32_t chunk) {
  Pending p;
  p.chunk = chunk;
  // Lease at submission: the chunk cannot be evicted while its read is "in flight".
  if (chunk >= keys_.size()) {
    p.status = Status::InvalidArgument("chunk " + std::to_string(chunk) + " is out of range");
  } else {
    Result<proto::SlotRef> slot = engine_.lease_chunk(lease_session_, ns_, keys_[chunk]);
    if (slot.ok())
      p.slot = *slot;
    else
      p.status = slot.status();
  }
  const int64_t now = clock_.now_ns();
  p.done_ns = now;
  if (throttle_.enabled()) {
    const auto latency = static_cast<int64_t>(std::llround(throttle_.latency_us * 1e3));
    const auto transfer =
        static_cast<int64_t>(std::llround(static_cast<double>(chunk_bytes_) / throttle_.read_GBps));
    p.done_ns = std::max(now + latency, bus_free_ns_) + transfer;
    bus_free_ns_ = p.done_ns;
  }
  if (head_ == queue_.size()) {
    queue_.clear();
    head_ = 0;
  }
  queue_.push_back(std::move(p));
  arm();
}

Result<proto::SlotRef> HostChunkLoader::hand_over(uint32_t chunk) {
  if (chunk >= keys_.size()) {
    return Status::InvalidArgument("chunk " + std::to_string(chunk) + " is out of range");
  }
  return engine_.lease_chunk(lease_session_, ns_, keys_[chunk]);
}

void HostChunkLoader::release(uint32_t, const proto::SlotRef& slot) {
  slot_scratch_[0] = slot.slot;
  uint64_t released = 0;
  (void)engine_.release(lease_session_, slot_scratch_, &released);
}

void HostChunkLoader::cancel_all() {
  if (timer_ != 0) {
    clock_.cancel(timer_);
    timer_ = 0;
  }
  for (size_t i = head_; i < queue_.size(); ++i) {
    if (queue_[i].status.ok()) release(queue_[i].chunk, queue_[i].slot);
  }
  queue_.clear();
  head_ = 0;
}

void HostChunkLoader::arm() {
  if (timer_ != 0 || head_ == queue_.size()) return;
  timer_ = clock_.call_at(queue_[head_].done_ns, [this] { on_timer(); });
}

void HostChunkLoader::on_timer() {
  timer_ = 0;
  const int64_t now = clock_.now_ns();
  // Completions may submit more reads (the session refills its queue): deliver one at a time
  // from the front, re-reading the queue after each.
  while (head_ < queue_.size() && queue_[head_].done_ns <= now) {
    Pending p = std::move(queue_[head_]);
    ++head_;
    // The emulated tier knows when each read finished, however late its timer ran.
    if (p.status.ok())
      sink_->on_loaded(p.chunk, p.slot, p.done_ns);
    else
      sink_->on_loaded(p.chunk, p.status, p.done_ns);
  }
  arm();
}

}  // namespace tierkv::scheduler
