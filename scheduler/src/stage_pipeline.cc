#include "tierkv/scheduler/stage_pipeline.h"

namespace tierkv::scheduler {

Status BatchPolicy::validate() const {
  if (min_batch == 0 || min_batch > max_batch || initial_batch < min_batch ||
      initial_batch > max_batch) {
    return Status::InvalidArgument("batch sizes must satisfy 1 <= min_batch (" +
                                   std::to_string(min_batch) + ") <= initial_batch (" +
                                   std::to_string(initial_batch) + ") <= max_batch (" +
                                   std::to_string(max_batch) + ")");
  }
  if (target_latency.count() <= 0) {
    return Status::InvalidArgument("target_latency must be positive");
  }
  return Status::Ok();
}

BatchSizer::BatchSizer(const BatchPolicy& policy)
    : policy_(policy),
      size_(std::clamp(policy.initial_batch, policy.min_batch, policy.max_batch)) {}

void BatchSizer::observe(uint32_t taken, uint64_t queued, std::chrono::nanoseconds latency) {
  if (latency > policy_.target_latency) {
    // The stage is slowing down: smaller batches bound the time an item waits inside one.
    size_ = std::max(policy_.min_batch, size_ / 2);
  } else if (taken >= size_ && queued >= size_) {
    // A full batch went and at least another full one waits: work is building up.
    size_ = std::min<uint64_t>(policy_.max_batch, uint64_t{size_} * 2);
  }
}

}  // namespace tierkv::scheduler
