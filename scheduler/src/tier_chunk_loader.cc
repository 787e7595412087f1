#include "tierkv/scheduler/tier_chunk_loader.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace tierkv::scheduler {

TierChunkLoader::TierChunkLoader(CacheEngine& engine, Clock& clock, SessionId lease_session,
                                 NamespaceId ns, uint64_t chunk_bytes,
                                 std::span<const ChunkKey> keys, std::span<const proto::Tier> tiers,
                                 const TierLoaderOptions& options)
    : engine_(engine),
      clock_(clock),
      lease_session_(lease_session),
      ns_(ns),
      chunk_bytes_(chunk_bytes),
      keys_(keys.begin(), keys.end()),
      tiers_(tiers.begin(), tiers.end()),
      options_(options),
      shared_(std::make_shared<Shared>()) {
  tiers_.resize(keys_.size(), proto::Tier::kNone);
  shared_->loader = this;
  shared_->engine = &engine;
  shared_->lease_session = lease_session;
  request_.ns = ns;
  request_.keys.resize(1);
  // A chunk is submitted at most once per session: nothing below grows after this.
  paced_.reserve(keys_.size());
  done_.reserve(keys_.size());
}

TierChunkLoader::~TierChunkLoader() {
  cancel_all();
  shared_->loader = nullptr;
}

const ReadThrottle* TierChunkLoader::throttle_of(uint32_t chunk) const {
  switch (tiers_[chunk]) {
    case proto::Tier::kHost:
      return options_.host.enabled() ? &options_.host : nullptr;
    case proto::Tier::kNvme:
      return options_.nvme.enabled() ? &options_.nvme : nullptr;
    default:
      return nullptr;
  }
}

void TierChunkLoader::submit(uint32_t chunk) {
  if (chunk >= keys_.size()) {
    complete(Completion{chunk,
                        clock_.now_ns(),
                        Status::InvalidArgument("chunk " + std::to_string(chunk) +
                                                " is out of range: the prefix has " +
                                                std::to_string(keys_.size()) + " chunks"),
                        {}});
    return;
  }
  const ReadThrottle* throttle = throttle_of(chunk);
  if (throttle == nullptr) {
    issue(chunk);
    return;
  }
  // The emulated device: a fixed latency (overlapping other reads), then the transfer at the
  // throttled bandwidth, one at a time; the real read is issued when its transfer would end.
  int64_t& bus_free = tiers_[chunk] == proto::Tier::kHost ? host_bus_free_ns_ : nvme_bus_free_ns_;
  const int64_t now = clock_.now_ns();
  const auto latency = static_cast<int64_t>(std::llround(throttle->latency_us * 1e3));
  const auto transfer =
      static_cast<int64_t>(std::llround(static_cast<double>(chunk_bytes_) / throttle->read_GBps));
  const int64_t at = std::max(now + latency, bus_free) + transfer;
  bus_free = at;
  if (paced_head_ == paced_.size()) {
    paced_.clear();
    paced_head_ = 0;
  }
  // Issue times ascend per tier; two throttled tiers interleave, so keep the queue ordered.
  auto pos =
      std::upper_bound(paced_.begin() + static_cast<std::ptrdiff_t>(paced_head_), paced_.end(), at,
                       [](int64_t t, const Paced& p) { return t < p.issue_ns; });
  const bool first = pos == paced_.begin() + static_cast<std::ptrdiff_t>(paced_head_);
  paced_.insert(pos, Paced{chunk, at});
  if (first && issue_timer_ != 0) {
    clock_.cancel(issue_timer_);
    issue_timer_ = 0;
  }
  arm_issue();
}

void TierChunkLoader::issue(uint32_t chunk) {
  request_.keys[0] = keys_[chunk];
  ++shared_->outstanding;
  // The callback holds the shared token, not the loader: it may run after cancel_all(), or after
  // the loader is gone, and then only gives back what it was handed. It may also run right here.
  engine_.load(lease_session_, request_,
               [shared = shared_, epoch = shared_->epoch, chunk](Status status,
                                                                 const proto::LoadReply& reply) {
                 on_engine_done(shared, epoch, chunk, status, reply);
               });
}

void TierChunkLoader::on_engine_done(const std::shared_ptr<Shared>& shared, uint64_t epoch,
                                     uint32_t chunk, const Status& status,
                                     const proto::LoadReply& reply) {
  --shared->outstanding;
  TierChunkLoader* loader = shared->loader;
  if (loader == nullptr || epoch != shared->epoch) {
    // Cancelled meanwhile: nobody wants the chunk. Its lease goes back now.
    for (const proto::SlotRef& s : reply.slots) {
      uint32_t slot = s.slot;
      uint64_t released = 0;
      (void)shared->engine->release(shared->lease_session, std::span(&slot, 1), &released);
    }
    return;
  }
  Completion c;
  c.chunk = chunk;
  c.at_ns = loader->clock_.now_ns();  // the reap time: when the engine ran this completion
  if (!status.ok()) {
    c.status = status;
  } else if (reply.slots.empty()) {
    c.status = Status::Unavailable(
        "chunk " + std::to_string(chunk) +
        " could not be brought into host RAM (its NVMe read failed or did not match its checksum, "
        "no host slot was free, or it left the cache)");
  } else {
    c.slot = reply.slots[0];
    // One key asked, so at most one slot; anything more is not ours to hold.
    for (size_t i = 1; i < reply.slots.size(); ++i) loader->release(chunk, reply.slots[i]);
  }
  loader->complete(std::move(c));
}

void TierChunkLoader::complete(Completion c) {
  if (done_head_ == done_.size()) {
    done_.clear();
    done_head_ = 0;
  }
  done_.push_back(std::move(c));
  arm_delivery();
}

Result<proto::SlotRef> TierChunkLoader::hand_over(uint32_t chunk) {
  if (chunk >= keys_.size()) {
    return Status::InvalidArgument("chunk " + std::to_string(chunk) + " is out of range");
  }
  return engine_.lease_chunk(lease_session_, ns_, keys_[chunk]);
}

void TierChunkLoader::release(uint32_t, const proto::SlotRef& slot) {
  slot_scratch_[0] = slot.slot;
  uint64_t released = 0;
  (void)engine_.release(lease_session_, slot_scratch_, &released);
}

void TierChunkLoader::cancel_all() {
  if (issue_timer_ != 0) {
    clock_.cancel(issue_timer_);
    issue_timer_ = 0;
  }
  if (delivery_timer_ != 0) {
    clock_.cancel(delivery_timer_);
    delivery_timer_ = 0;
  }
  // Paced reads not yet issued hold nothing.
  paced_.clear();
  paced_head_ = 0;
  for (size_t i = done_head_; i < done_.size(); ++i) {
    if (done_[i].status.ok()) release(done_[i].chunk, done_[i].slot);
  }
  done_.clear();
  done_head_ = 0;
  // Reads the engine still runs complete into nothing.
  ++shared_->epoch;
}

void TierChunkLoader::arm_issue() {
  if (issue_timer_ != 0 || paced_head_ == paced_.size()) return;
  issue_timer_ = clock_.call_at(paced_[paced_head_].issue_ns, [this] { on_issue_timer(); });
}

void TierChunkLoader::on_issue_timer() {
  issue_timer_ = 0;
  const int64_t now = clock_.now_ns();
  const uint64_t epoch = shared_->epoch;
  while (paced_head_ < paced_.size() && paced_[paced_head_].issue_ns <= now) {
    const uint32_t chunk = paced_[paced_head_].chunk;
    ++paced_head_;
    issue(chunk);
    if (shared_->epoch != epoch) return;  // cancelled from inside
  }
  arm_issue();
}

void TierChunkLoader::arm_delivery() {
  // While delivering, what completes meanwhile is delivered by the same turn.
  if (delivering_ || delivery_timer_ != 0 || done_head_ == done_.size()) return;
  delivery_timer_ = clock_.call_at(clock_.now_ns(), [this] { on_delivery_timer(); });
}

void TierChunkLoader::on_delivery_timer() {
  delivery_timer_ = 0;
  const uint64_t epoch = shared_->epoch;
  delivering_ = true;
  // A delivery may submit more reads, and a read may complete at once into done_: deliver one at
  // a time from the front, re-reading the queue after each.
  while (done_head_ < done_.size()) {
    Completion c = std::move(done_[done_head_]);
    ++done_head_;
    if (c.status.ok())
      sink_->on_loaded(c.chunk, c.slot, c.at_ns);
    else
      sink_->on_loaded(c.chunk, c.status, c.at_ns);
    if (shared_->epoch != epoch) break;  // the session ended from inside: nothing left
  }
  delivering_ = false;
}

}  // namespace tierkv::scheduler
