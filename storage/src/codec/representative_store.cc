#include "tierkv/storage/representative_store.h"

#include <string>

namespace tierkv::storage {

namespace {
RepId make_id(uint32_t generation, uint32_t slot) { return (uint64_t{generation} << 32) | slot; }
std::string id_string(RepId id) {
  return std::to_string(id >> 32) + ":" + std::to_string(static_cast<uint32_t>(id));
}
}  // namespace

const RepresentativeStore::Slot* RepresentativeStore::find(RepId id) const {
  const auto slot = static_cast<uint32_t>(id);
  const auto generation = static_cast<uint32_t>(id >> 32);
  if (slot >= slots_.size()) return nullptr;
  const Slot& s = slots_[slot];
  if (s.generation != generation || s.refs == 0) return nullptr;
  return &s;
}

RepresentativeStore::Slot* RepresentativeStore::find(RepId id) {
  return const_cast<Slot*>(std::as_const(*this).find(id));
}

RepId RepresentativeStore::add(const RepresentativeInfo& info, std::span<const std::byte> bytes) {
  auto rep = std::make_shared<Representative>();
  rep->info = info;
  rep->bytes.assign(bytes.begin(), bytes.end());
  std::lock_guard lock(mu_);
  uint32_t index;
  while (!free_.empty() && slots_[free_.back()].refs != 0) free_.pop_back();  // restored since
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Slot& s = slots_[index];
  ++s.generation;
  if (s.generation == 0) s.generation = 1;  // 0 is never a live generation (kNoRep)
  s.refs = 1;
  s.rep = std::move(rep);
  ++stats_.count;
  stats_.bytes += bytes.size();
  ++stats_.references;
  return make_id(s.generation, index);
}

Status RepresentativeStore::restore(RepId id, const RepresentativeInfo& info,
                                    std::span<const std::byte> bytes, uint32_t refs) {
  const auto index = static_cast<uint32_t>(id);
  const auto generation = static_cast<uint32_t>(id >> 32);
  if (generation == 0 || refs == 0) {
    return Status::InvalidArgument("representative " + id_string(id) + " with " +
                                   std::to_string(refs) +
                                   " references cannot be restored (generation and references "
                                   "must be non-zero)");
  }
  if (index == UINT32_MAX) {
    return Status::InvalidArgument("representative " + id_string(id) + " has an invalid slot");
  }
  auto rep = std::make_shared<Representative>();
  rep->info = info;
  rep->bytes.assign(bytes.begin(), bytes.end());
  std::lock_guard lock(mu_);
  if (index >= slots_.size()) {
    // The slots skipped over are free.
    for (auto i = static_cast<uint32_t>(slots_.size()); i < index; ++i) free_.push_back(i);
    slots_.resize(uint64_t{index} + 1);
  } else if (slots_[index].refs != 0) {
    return Status::InvalidArgument("representative " + id_string(id) + ": its slot holds " +
                                   id_string(make_id(slots_[index].generation, index)));
  }
  Slot& s = slots_[index];
  s.generation = generation;
  s.refs = refs;
  s.rep = std::move(rep);
  ++stats_.count;
  stats_.bytes += bytes.size();
  stats_.references += refs;
  return Status::Ok();
}

Status RepresentativeStore::acquire(RepId id) {
  std::lock_guard lock(mu_);
  Slot* s = find(id);
  if (s == nullptr) return Status::NotFound("representative " + id_string(id) + " is not live");
  ++s->refs;
  ++stats_.references;
  return Status::Ok();
}

Status RepresentativeStore::release(RepId id) {
  std::shared_ptr<const Representative> dropped;  // destroyed outside the lock
  std::lock_guard lock(mu_);
  Slot* s = find(id);
  if (s == nullptr) return Status::NotFound("representative " + id_string(id) + " is not live");
  --stats_.references;
  if (--s->refs == 0) {
    --stats_.count;
    stats_.bytes -= s->rep->bytes.size();
    dropped = std::move(s->rep);
    free_.push_back(static_cast<uint32_t>(id));
  }
  return Status::Ok();
}

std::shared_ptr<const Representative> RepresentativeStore::get(RepId id) const {
  std::lock_guard lock(mu_);
  const Slot* s = find(id);
  return s == nullptr ? nullptr : s->rep;
}

void RepresentativeStore::get_many(std::span<const RepId> ids,
                                   std::span<std::shared_ptr<const Representative>> out) const {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < ids.size() && i < out.size(); ++i) {
    const Slot* s = find(ids[i]);
    out[i] = s == nullptr ? nullptr : s->rep;
  }
}

uint32_t RepresentativeStore::references(RepId id) const {
  std::lock_guard lock(mu_);
  const Slot* s = find(id);
  return s == nullptr ? 0 : s->refs;
}

RepresentativeStats RepresentativeStore::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace tierkv::storage
