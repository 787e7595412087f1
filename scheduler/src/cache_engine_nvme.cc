// CacheEngine, the NVMe side: loads and promotion, write-down, NVMe eviction, recovery, flush and
// verify. Everything here runs on the engine's one thread; I/O completions arrive through
// poll_io().
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "codec_stages.h"
#include "engine_tokens.h"
#include "staging_pool.h"
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::scheduler {

using storage::ChunkIndex;
using storage::IoCompletion;
using storage::kNoSlot;
using storage::NvmeStore;

namespace {

uint64_t ns_since(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count());
}

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Status CacheEngine::open_nvme() {
  TIERKV_RETURN_IF_ERROR(build_codec_table());
  auto store = NvmeStore::open(options_.nvme.store);
  if (!store.ok()) return store.status();
  nvme_ = std::move(store).value();
  auto fixed = nvme_->io().register_memory(region_.data(), region_.size());
  if (!fixed.ok()) return fixed.status();
  if (!*fixed) {
    spdlog::warn("nvme: could not register the host pool as io_uring fixed buffers (raise "
                 "LimitMEMLOCK); reads and writes still go straight to and from it");
  }
  disk_index_ = std::make_unique<ChunkIndex>(nvme_->max_slot_ids());
  disk_.assign(nvme_->max_slot_ids(), DiskMeta{});
  // Fused chunks' representatives: restored by recovery, shared with the codec stages.
  representatives_ = std::make_unique<storage::RepresentativeStore>();
  nvme_->set_representatives(representatives_.get());
  disk_lru_ = std::make_unique<LeafFirstLru>(nvme_->max_slot_ids(), nvme_->num_classes());
  completions_.resize(nvme_->io().queue_depth() * 2);
  if (options_.nvme.verify_threads > 0) {
    // Room for a few queues' worth of checks: past that, reads are checked inline, which also
    // slows the refill of the queue to the pace the checks keep.
    auto workers = storage::ChecksumWorkers::start(
        options_.nvme.verify_threads, nvme_->io().queue_depth() * 4, nvme_->io().completion_fd());
    if (!workers.ok()) return workers.status();
    verifier_ = std::move(workers).value();
    verified_.resize(nvme_->io().queue_depth() * 4);
  }
  recover_nvme();
  return start_codec_stages();
}

void CacheEngine::recover_nvme() {
  std::vector<SlotId> recovered;
  Status s = nvme_->recover(
      [&](const Namespace& ns) {
        if (namespaces_.count(ns.id)) return;
        auto cls = pool_.class_for(ns.layout.chunk_bytes());
        if (!cls.ok()) {
          spdlog::warn("nvme: recovered namespace {:016x} ({}) does not fit the host tier: {}",
                       ns.id, ns.layout.to_string(), cls.status().message());
          return;
        }
        NamespaceEntry entry{ns, *cls, 0, 0, wants_disk(ns.tenant, ns.layout.chunk_bytes())};
        entry.codec = entry.to_disk ? choose_codec(ns) : 0;
        namespaces_.emplace(ns.id, entry);
      },
      [&](const storage::ChunkRecord& r) {
        auto ns = namespaces_.find(r.ns);
        // Raw: exactly the chunk's bytes; encoded: a header at least (the decoder checks the
        // rest when the chunk is read).
        const bool sized = storage::is_encoded(r.codec)
                               ? r.stored_bytes >= storage::kChunkHeaderBytes
                               : r.stored_bytes == r.logical_bytes;
        if (ns == namespaces_.end() || r.logical_bytes != ns->second.ns.chunk_bytes() || !sized) {
          // A chunk of a namespace the index does not know, or of the wrong size: unusable.
          const std::pair<NamespaceId, ChunkKey> gone{r.ns, r.key};
          (void)nvme_->erase(std::span(&gone, 1));
          (void)nvme_->free(r.slot);
          return;
        }
        DiskMeta& d = disk_[r.slot];
        d.key = r.key;
        d.parent_key = r.parent;
        d.ns = r.ns;
        d.checksum = r.checksum;
        d.created_ms = r.created_ms;
        d.stored_bytes = r.stored_bytes;
        d.logical_bytes = r.logical_bytes;
        d.codec = r.codec;
        d.state = DiskState::kReady;
        if (storage::is_encoded(r.codec)) ++disk_encoded_chunks_;
        disk_lru_->set_last_access(r.slot, r.last_access_ms);
        (void)disk_index_->insert(r.ns, r.key, r.slot);
        ++ns->second.disk_chunks;
        ++disk_counters_.chunks;
        disk_logical_bytes_ += r.logical_bytes;
        disk_stored_bytes_ += r.stored_bytes;
        recovered.push_back(r.slot);
      },
      &recovery_);
  if (!s.ok()) {
    spdlog::error("nvme: recovery failed: {}; the tier starts empty", s.to_string());
    return;
  }
  // Link each chunk to its parent, then list the leaves (oldest access first wins ties).
  for (SlotId d : recovered) {
    if (disk_[d].parent_key.is_zero()) continue;
    const uint32_t p = disk_index_->find(disk_[d].ns, disk_[d].parent_key);
    if (p != ChunkIndex::kAbsent) disk_lru_->link_parent(d, p);
  }
  for (SlotId d : recovered) update_disk_evictable(d);
  recovery_.chunks = recovered.size();
  spdlog::info("nvme: recovered {} chunks in {} namespaces from the index in {} ms ({} records "
               "discarded)",
               recovery_.chunks, recovery_.namespaces, recovery_.millis, recovery_.discarded);
}

int CacheEngine::io_fd() const { return nvme_ ? nvme_->io().completion_fd() : -1; }

uint32_t CacheEngine::disk_find(NamespaceId ns, const ChunkKey& key) const {
  if (!nvme_) return ChunkIndex::kAbsent;
  const uint32_t d = disk_index_->find(ns, key);
  if (d == ChunkIndex::kAbsent || disk_[d].state != DiskState::kReady || disk_[d].doomed) {
    return ChunkIndex::kAbsent;
  }
  return d;
}

// --- load, prefetch and promotion ----------------------------------------------------------------

void CacheEngine::load(SessionId session, const proto::KeysRequest& req, LoadDone done) {
  proto::LoadReply reply;
  auto entry = find_namespace(req.ns, "load");
  if (!entry.ok()) return done(entry.status(), reply);
  auto sess = find_session(session);
  if (!sess.ok()) return done(sess.status(), reply);
  const uint64_t bytes = (*entry)->ns.chunk_bytes();
  const int cls = (*entry)->slot_class;

  LoadOp op;
  op.session = session;
  op.bytes = bytes;
  op.asked = req.keys.size();
  for (const ChunkKey& key : req.keys) {
    uint32_t s = index_.find(req.ns, key);
    if (s != ChunkIndex::kAbsent && meta_[s].state != ChunkState::kReady &&
        meta_[s].state != ChunkState::kLoading) {
      break;  // pending: another client is writing it
    }
    if (s == ChunkIndex::kAbsent) {
      const uint32_t d = disk_find(req.ns, key);
      if (d == ChunkIndex::kAbsent) break;
      s = start_promotion(d, cls);
      if (s == kNoSlot) break;
    }
    (void)pool_.lease(s);
    update_evictable(s);
    op.slots.push_back(s);
    if (meta_[s].state == ChunkState::kLoading) ++op.waiting;
  }
  op.done = std::move(done);
  if (op.waiting == 0) return complete_load(std::move(op));
  const uint64_t id = next_op_++;
  for (SlotId s : op.slots) {
    if (meta_[s].state == ChunkState::kLoading) load_waiters_.emplace(s, id);
  }
  loads_.emplace(id, std::move(op));
  (void)nvme_->io().submit();
}

void CacheEngine::complete_load(LoadOp op) {
  proto::LoadReply& reply = load_reply_;
  reply.slots.clear();
  auto sess = find_session(op.session);
  size_t i = 0;
  if (sess.ok()) {
    for (; i < op.slots.size(); ++i) {
      const SlotId s = op.slots[i];
      if (meta_[s].state != ChunkState::kReady) break;  // a failed read ends the prefix
      (*sess)->read_leases.push_back(s);
      ++read_leases_;
      reply.slots.push_back(proto::SlotRef{s, 0, pool_.offset(s), op.bytes});
    }
  }
  for (size_t j = i; j < op.slots.size(); ++j) unlease(op.slots[j]);
  for (size_t k = reply.slots.size(); k-- > 0;) touch(reply.slots[k].slot);
  host_counters_.hits += reply.slots.size();
  host_counters_.misses += op.asked - reply.slots.size();
  host_counters_.bytes_out += reply.slots.size() * op.bytes;
  gpu_count_reads(reply.slots);
  if (op.done) op.done(Status::Ok(), reply);
}

Status CacheEngine::prefetch(const proto::KeysRequest& req, proto::PrefetchReply& reply) {
  auto entry = find_namespace(req.ns, "prefetch");
  if (!entry.ok()) return entry.status();
  reply = proto::PrefetchReply{};
  for (const ChunkKey& key : req.keys) {
    const uint32_t s = index_.find(req.ns, key);
    if (s != ChunkIndex::kAbsent) {
      if (meta_[s].state == ChunkState::kReady) ++reply.in_host;
      else if (meta_[s].state == ChunkState::kLoading) ++reply.fetching;
      else break;
      continue;
    }
    const uint32_t d = disk_find(req.ns, key);
    if (d == ChunkIndex::kAbsent || start_promotion(d, (*entry)->slot_class) == kNoSlot) break;
    ++reply.fetching;
  }
  if (nvme_) (void)nvme_->io().submit();
  return Status::Ok();
}

SlotId CacheEngine::start_promotion(SlotId d, int host_class) {
  DiskMeta& dm = disk_[d];
  // Keep the disk chunk from being evicted while room is made in host RAM.
  ++dm.readers;
  update_disk_evictable(d);
  const SlotId s = allocate(host_class);
  if (s == kNoSlot) {
    release_disk_reader(d);
    return kNoSlot;
  }
  ChunkMeta& m = meta_[s];
  m.key = dm.key;
  m.parent_key = dm.parent_key;
  m.ns = dm.ns;
  m.writer = 0;
  m.state = ChunkState::kLoading;
  m.on_disk = true;
  m.writing_down = false;
  m.loading_from = d;
  touch(s);
  (void)index_.insert(dm.ns, dm.key, s);
  if (!dm.parent_key.is_zero()) {
    const uint32_t p = index_.find(dm.ns, dm.parent_key);
    if (p != ChunkIndex::kAbsent &&
        (meta_[p].state == ChunkState::kReady || meta_[p].state == ChunkState::kPending)) {
      link_host_parent(s, p);
    }
  }
  ++reads_in_flight_;
  ++disk_counters_.hits;
  disk_lru_->touch(d);
  if (storage::is_encoded(dm.codec)) {
    start_staged_read(s);  // into staging, then decoded into the slot
  } else {
    issue(PendingIo{false, d, region_.data() + pool_.offset(s), dm.stored_bytes,
                    token(kHostRead, s)});
  }
  return s;
}

void CacheEngine::issue(const PendingIo& io) {
  if (backlog_.empty()) {
    const bool queued = io.write ? nvme_->queue_write(io.disk, io.buf, io.length, io.token)
                                 : nvme_->queue_read(io.disk, io.buf, io.length, io.token);
    if (queued) return;
  }
  backlog_.push_back(io);
}

void CacheEngine::finish_read(SlotId s, int32_t result) {
  const SlotId d = meta_[s].loading_from;
  const DiskMeta& dm = disk_[d];
  if (result < static_cast<int32_t>(dm.stored_bytes)) {
    ++read_errors_;
    spdlog::warn("nvme: read of chunk {} (slot {}) failed: {}; dropping it", dm.key.to_hex(), d,
                 result < 0 ? std::strerror(-result) : "short read");
    return end_promotion(s, false);
  }
  const std::span<const std::byte> bytes(region_.data() + pool_.offset(s), dm.stored_bytes);
  // On a worker when one has room; the slot stays loading (and leased by its loads) until
  // poll_io() reaps the result.
  if (verifier_ && verifier_->submit({bytes.data(), bytes.size(), s})) return;
  ++verified_inline_;
  end_promotion(s, checksum_ok(s, hash_inline(bytes)));
}

uint64_t CacheEngine::hash_inline(std::span<const std::byte> bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t sum = NvmeStore::checksum(bytes);
  inline_hash_ns_ += ns_since(t0);
  return sum;
}

bool CacheEngine::checksum_ok(SlotId s, uint64_t checksum) {
  const SlotId d = meta_[s].loading_from;
  const DiskMeta& dm = disk_[d];
  ++reads_verified_;
  if (checksum == dm.checksum) return true;
  ++checksum_failures_;
  spdlog::error(
      "nvme: chunk {} (slot {}, file {} offset {}) fails its checksum; dropping it, "
      "never serving it",
      dm.key.to_hex(), d, nvme_->file_of(d), nvme_->file_offset(d));
  return false;
}

void CacheEngine::hold_verification_for_test(bool hold) {
  if (verifier_) verifier_->hold_for_test(hold);
}

void CacheEngine::end_promotion(SlotId s, bool ok) {
  ChunkMeta& m = meta_[s];
  const SlotId d = m.loading_from;
  DiskMeta& dm = disk_[d];
  --reads_in_flight_;
  m.loading_from = kNoSlot;
  if (ok) {
    m.state = ChunkState::kReady;
    ++host_counters_.chunks;
    if (NamespaceEntry* e = ns_entry(m.ns)) ++e->chunks;
    disk_counters_.bytes_out += dm.stored_bytes;
    update_evictable(s);
  } else {
    // The host slot never became readable: out of the index, freed once the loads waiting on
    // it let go. The disk copy is bad: removed.
    (void)index_.erase(m.ns, m.key);
    unlink_host_parent(s);
    if (pool_.leases(s) > 0) m.state = ChunkState::kZombie;
    else free_slot(s);
    dm.doomed = true;
  }
  release_disk_reader(d);
  auto [first, last] = load_waiters_.equal_range(s);
  std::vector<uint64_t> ready_ops;
  for (auto w = first; w != last; ++w) {
    auto op = loads_.find(w->second);
    if (op != loads_.end() && --op->second.waiting == 0) ready_ops.push_back(w->second);
  }
  load_waiters_.erase(first, last);
  for (uint64_t id : ready_ops) {
    auto op = loads_.find(id);
    LoadOp finished = std::move(op->second);
    loads_.erase(op);
    complete_load(std::move(finished));
  }
}

// --- write-down ----------------------------------------------------------------------------------

bool CacheEngine::admitting() {
  if (!disk_full_) return true;
  if (std::chrono::steady_clock::now() - disk_full_since_ < options_.nvme.retry_after_full) {
    return false;
  }
  disk_full_ = false;
  spdlog::info("nvme: trying to admit chunks again after disk full");
  return true;
}

void CacheEngine::pump_writes() {
  if (!nvme_) return;
  const uint64_t free_bytes = pool_.capacity_bytes() - pool_.used_bytes();
  const bool pressure = static_cast<double>(free_bytes) <
                        options_.nvme.writeback_free_fraction *
                            static_cast<double>(pool_.capacity_bytes());
  const uint32_t depth = nvme_->io().queue_depth();
  // Reads wait for nobody: writes use the queue only while there is room left for reads.
  const uint32_t write_budget = depth > 2 ? depth - depth / 4 : depth;
  while (!dirty_fifo_.empty() && writes_in_flight_ < write_budget && backlog_.empty() &&
         (options_.nvme.write_through || flush_requested_ || pressure) && admitting()) {
    const auto [s, gen] = dirty_fifo_.front();
    dirty_fifo_.pop_front();
    if (meta_[s].gen != gen || !is_dirty(meta_[s]) || meta_[s].writing_down) continue;
    const NamespaceEntry* e = ns_entry(meta_[s].ns);
    const bool started = e != nullptr && e->codec != 0 ? start_encode(s) : start_write_down(s);
    if (!started) {
      dirty_fifo_.emplace_front(s, gen);  // no room on disk now: retried later
      break;
    }
  }
  (void)nvme_->io().submit();
  if (flush_requested_ && dirty_chunks_ == 0 && writes_in_flight_ == 0 && encodes_in_flight_ == 0) {
    flush_requested_ = false;
  }
}

bool CacheEngine::start_write_down(SlotId s) {
  ChunkMeta& m = meta_[s];
  const NamespaceEntry* e = ns_entry(m.ns);
  const uint64_t bytes = e->ns.chunk_bytes();
  const std::byte* src = region_.data() + pool_.offset(s);
  const SlotId d = issue_write_down(s, src, static_cast<uint32_t>(bytes),
                                    static_cast<uint32_t>(bytes), storage::Codec::kRaw, 0, Staged{});
  if (d == kNoSlot) return false;
  (void)pool_.lease(s);  // the slot must hold still until the write completes
  update_evictable(s);
  m.writing_down = true;
  // The disk starts on this chunk while its checksum is computed (the leased slot holds still;
  // the checksum is needed only when the write's record is committed, in a later poll_io()).
  (void)nvme_->io().submit();
  disk_[d].checksum = hash_inline({src, bytes});
  return true;
}

SlotId CacheEngine::issue_write_down(SlotId s, const std::byte* src, uint32_t stored_bytes,
                                     uint32_t logical_bytes, storage::Codec codec,
                                     uint64_t checksum, Staged staging) {
  const ChunkMeta& m = meta_[s];
  auto cls = nvme_->class_for(stored_bytes);
  if (!cls.ok()) return kNoSlot;
  const SlotId d = allocate_disk(*cls);
  if (d == kNoSlot) {
    ++unwritable_;
    return kNoSlot;
  }
  DiskMeta& dm = disk_[d];
  dm.key = m.key;
  dm.parent_key = m.parent_key;
  dm.ns = m.ns;
  dm.stored_bytes = stored_bytes;
  dm.logical_bytes = logical_bytes;
  dm.codec = codec;
  dm.checksum = checksum;
  dm.created_ms = now_ms();
  dm.readers = 0;
  dm.doomed = false;
  dm.source = s;
  dm.staging = staging;
  dm.state = DiskState::kWriting;
  ++writes_in_flight_;
  issue(PendingIo{true, d, const_cast<std::byte*>(src), stored_bytes, token(kDiskWrite, d)});
  return d;
}

SlotId CacheEngine::allocate_disk(int disk_class) {
  for (;;) {
    const SlotId d = nvme_->allocate(disk_class);
    if (d != kNoSlot) return d;
    uint32_t victim = disk_lru_->coldest(disk_class);
    if (victim == LeafFirstLru::kNone) victim = disk_lru_->coldest_any();
    if (victim == LeafFirstLru::kNone) return kNoSlot;
    remove_disk(victim);
    ++disk_counters_.evictions;
  }
}

void CacheEngine::release_disk_reader(SlotId d) {
  DiskMeta& dm = disk_[d];
  --dm.readers;
  if (dm.doomed && dm.readers == 0) remove_disk(d);
  else update_disk_evictable(d);
}

void CacheEngine::remove_disk(SlotId d) {
  DiskMeta& dm = disk_[d];
  if (dm.state != DiskState::kReady) return;
  if (dm.readers > 0) {  // finished by the last reader
    dm.doomed = true;
    disk_lru_->set_evictable(d, 0, false);
    return;
  }
  // The record goes first: after a crash, no record may name a slot that was reused.
  const std::pair<NamespaceId, ChunkKey> gone{dm.ns, dm.key};
  if (Status s = nvme_->erase(std::span(&gone, 1)); !s.ok()) {
    spdlog::error("nvme: {}; chunk {} stays on disk", s.to_string(), dm.key.to_hex());
    return;
  }
  (void)disk_index_->erase(dm.ns, dm.key);
  const uint32_t p = disk_lru_->unlink_parent(d);
  if (p != LeafFirstLru::kNone) update_disk_evictable(p);
  disk_lru_->on_free(d);
  --disk_counters_.chunks;
  disk_logical_bytes_ -= dm.logical_bytes;
  disk_stored_bytes_ -= dm.stored_bytes;
  if (storage::is_encoded(dm.codec)) --disk_encoded_chunks_;
  if (NamespaceEntry* e = ns_entry(dm.ns)) --e->disk_chunks;
  // A copy in host RAM is now the only one: it becomes dirty again.
  const uint32_t s = index_.find(dm.ns, dm.key);
  if (s != ChunkIndex::kAbsent && meta_[s].state == ChunkState::kReady && meta_[s].on_disk) {
    meta_[s].on_disk = false;
    if (is_dirty(meta_[s])) {
      ++dirty_chunks_;
      dirty_fifo_.emplace_back(s, meta_[s].gen);
    }
  }
  dm = DiskMeta{};
  (void)nvme_->free(d);
}

void CacheEngine::update_disk_evictable(SlotId d) {
  const DiskMeta& dm = disk_[d];
  const bool evictable = dm.state == DiskState::kReady && !dm.doomed && dm.readers == 0 &&
                         disk_lru_->children(d) == 0;
  disk_lru_->set_evictable(d, nvme_->slot_class(d), evictable);
}

void CacheEngine::abandon_write(SlotId d, bool chunk_alive, bool retry_first) {
  DiskMeta& dm = disk_[d];
  const SlotId s = dm.source;
  free_staging(dm.staging);
  if (auto f = fused_writes_.find(d); f != fused_writes_.end()) {
    release_references(f->second);
    fused_writes_.erase(f);
  }
  dm = DiskMeta{};
  (void)nvme_->free(d);
  requeue_write_down(s, chunk_alive, retry_first);
}

void CacheEngine::requeue_write_down(SlotId s, bool chunk_alive, bool retry_first) {
  ChunkMeta& m = meta_[s];
  m.writing_down = false;
  // Still dirty: tried again later (first, after disk full, once the tier admits again). One
  // that left RAM meanwhile is lost now, and counted so; a deleted one was never owed.
  if (m.state == ChunkState::kReady) {
    if (retry_first)
      dirty_fifo_.emplace_front(s, m.gen);
    else
      dirty_fifo_.emplace_back(s, m.gen);
  } else if (chunk_alive) {
    --dirty_chunks_;
    ++dropped_unwritten_;
  }
  unlease(s);
}

void CacheEngine::finish_writes(std::span<const IoCompletion> done) {
  records_scratch_.clear();
  std::vector<SlotId> written;
  const uint64_t now = now_ms();
  for (const IoCompletion& c : done) {
    const SlotId d = static_cast<SlotId>(token_value(c.user_data));
    DiskMeta& dm = disk_[d];
    const SlotId s = dm.source;
    --writes_in_flight_;
    meta_[s].writing_down = false;
    free_staging(dm.staging);  // written (or failed): the staged bytes are no longer needed
    // Evicted or dropped from RAM meanwhile, the chunk still goes to NVMe; deleted, it does not.
    const bool chunk_alive = meta_[s].state == ChunkState::kReady ||
                             (meta_[s].state == ChunkState::kZombie && !meta_[s].deleted);
    if (c.result < static_cast<int32_t>(dm.stored_bytes) || !chunk_alive) {
      if (c.result == -ENOSPC) {
        if (!disk_full_) {
          spdlog::warn("nvme: disk full (ENOSPC); the tier stops admitting chunks for {} s, host "
                       "RAM and loads go on",
                       std::chrono::duration_cast<std::chrono::seconds>(
                           options_.nvme.retry_after_full)
                           .count());
        }
        disk_full_ = true;
        disk_full_since_ = std::chrono::steady_clock::now();
      } else if (chunk_alive) {
        ++write_errors_;
        spdlog::warn("nvme: write of chunk {} failed: {}; it stays in host RAM only",
                     dm.key.to_hex(), c.result < 0 ? std::strerror(-c.result) : "short write");
      }
      abandon_write(d, chunk_alive, /*retry_first=*/c.result == -ENOSPC);
      continue;
    }
    storage::ChunkRecord r;
    r.ns = dm.ns;
    r.key = dm.key;
    r.parent = dm.parent_key;
    r.slot = d;
    r.file = nvme_->file_of(d);
    r.offset = nvme_->file_offset(d);
    r.stored_bytes = dm.stored_bytes;
    r.logical_bytes = dm.logical_bytes;
    r.codec = dm.codec;
    r.checksum = dm.checksum;
    r.created_ms = dm.created_ms;
    r.last_access_ms = now;
    r.slot_class = static_cast<uint8_t>(nvme_->slot_class(d));
    records_scratch_.push_back(r);
    written.push_back(d);
    if (dm.codec == storage::Codec::kFused) {
      // The references the encoding took pass to the NVMe copy with this batch.
      fused_scratch_.push_back({dm.ns, dm.key, fused_writes_.at(d)});
    }
  }
  if (written.empty()) return;
  // One index batch for every write this poll finished: the chunks (and the representatives
  // fused ones refer to) exist from here on.
  const Status committed = fused_scratch_.empty()
                               ? nvme_->commit(records_scratch_)
                               : nvme_->commit(records_scratch_, fused_scratch_);
  fused_scratch_.clear();
  if (!committed.ok()) spdlog::error("nvme: {}; {} written chunks dropped", committed.to_string(), written.size());
  for (SlotId d : written) {
    DiskMeta& dm = disk_[d];
    const SlotId s = dm.source;
    if (!committed.ok()) {
      ++write_errors_;
      abandon_write(d, /*chunk_alive=*/true, /*retry_first=*/false);
      continue;
    }
    fused_writes_.erase(d);  // the index holds its references now
    dm.state = DiskState::kReady;
    dm.source = kNoSlot;
    (void)disk_index_->insert(dm.ns, dm.key, d);
    if (!dm.parent_key.is_zero()) {
      const uint32_t p = disk_find(dm.ns, dm.parent_key);
      if (p != ChunkIndex::kAbsent) disk_lru_->link_parent(d, p);
    }
    disk_lru_->touch(d);
    update_disk_evictable(d);
    ++disk_counters_.chunks;
    ++written_total_;
    disk_counters_.bytes_in += dm.stored_bytes;
    disk_logical_bytes_ += dm.logical_bytes;
    disk_stored_bytes_ += dm.stored_bytes;
    if (storage::is_encoded(dm.codec)) ++disk_encoded_chunks_;
    if (NamespaceEntry* e = ns_entry(dm.ns)) ++e->disk_chunks;
    if (meta_[s].state == ChunkState::kReady) meta_[s].on_disk = true;
    --dirty_chunks_;  // counted until now, in RAM or not
    unlease(s);
  }
}

// --- completions ---------------------------------------------------------------------------------

void CacheEngine::poll_io() {
  if (!nvme_) return;
  const auto t0 = std::chrono::steady_clock::now();
  ++polls_;
  poll_codecs();
  for (;;) {
    const size_t n = nvme_->io().reap(completions_);
    const size_t v = verifier_ ? verifier_->reap(verified_) : 0;
    if (n == 0 && v == 0) break;
    // Refill the queue before the completions' work (checksums, the index batch): the device
    // keeps reading and writing while this thread verifies what arrived.
    drain_backlog();
    (void)nvme_->io().submit();
    for (size_t i = 0; i < v; ++i) {
      const auto s = static_cast<SlotId>(verified_[i].token);
      end_promotion(s, checksum_ok(s, verified_[i].checksum));
    }
    // Writes are finished together (one index batch); reads and scrubs one by one.
    write_scratch_.clear();
    for (size_t i = 0; i < n; ++i) {
      const IoCompletion c = completions_[i];
      switch (token_kind(c.user_data)) {
        case kHostRead: finish_read(static_cast<SlotId>(token_value(c.user_data)), c.result); break;
        case kStagedRead:
          finish_staged_read(static_cast<SlotId>(token_value(c.user_data)), c.result);
          break;
        case kDiskWrite: write_scratch_.push_back(c); break;
        case kVerifyRead: {
          const uint64_t v = token_value(c.user_data);
          finish_verify_read(v >> 20, static_cast<uint32_t>(v & 0xFFFFF), c.result);
          break;
        }
        default: spdlog::error("nvme: completion with unknown token {:x}", c.user_data);
      }
    }
    if (!write_scratch_.empty()) finish_writes(write_scratch_);
    drain_backlog();
  }
  pump_writes();
  (void)nvme_->io().submit();
  poll_ns_ += ns_since(t0);
}

void CacheEngine::drain_backlog() {
  // Requests that found the queue full go now, in order.
  while (!backlog_.empty()) {
    const PendingIo& io = backlog_.front();
    const bool queued = io.write ? nvme_->queue_write(io.disk, io.buf, io.length, io.token)
                                 : nvme_->queue_read(io.disk, io.buf, io.length, io.token);
    if (!queued) break;
    backlog_.pop_front();
  }
}

// --- flush and verify ----------------------------------------------------------------------------

Status CacheEngine::flush(proto::FlushReply& reply) {
  if (!nvme_) return Status::FailedPrecondition("flush: the NVMe tier is off (nvme.directories is empty)");
  if (dirty_chunks_ > 0) flush_requested_ = true;
  pump_writes();
  reply.dirty_chunks = dirty_chunks_;
  reply.writes_in_flight = writes_in_flight_ + encodes_in_flight_;
  reply.written_total = written_total_;
  reply.unwritable = disk_full_ ? dirty_chunks_ : 0;
  return Status::Ok();
}

void CacheEngine::verify(const proto::VerifyRequest& req, VerifyDone done) {
  proto::VerifyReply reply;
  if (!nvme_) {
    return done(Status::FailedPrecondition("verify: the NVMe tier is off (nvme.directories is empty)"),
                reply);
  }
  reply.cursor_end = disk_.size();
  if (req.cursor > disk_.size()) {
    return done(Status::InvalidArgument("verify: cursor " + std::to_string(req.cursor) +
                                        " is past the end (" + std::to_string(disk_.size()) + ")"),
                reply);
  }
  const uint64_t id = next_op_++ & 0xFFFFFFFF;
  VerifyOp op;
  uint64_t c = req.cursor;
  const uint32_t most = std::min(req.max_chunks, nvme_->io().queue_depth());
  for (; c < disk_.size() && op.reads.size() < most; ++c) {
    DiskMeta& dm = disk_[c];
    if (dm.state != DiskState::kReady || dm.doomed) continue;
    const uint32_t len = NvmeStore::io_length(dm.stored_bytes);
    auto* buf = static_cast<std::byte*>(std::aligned_alloc(NvmeStore::kIoAlign, len));
    if (buf == nullptr) break;
    ++dm.readers;
    update_disk_evictable(static_cast<SlotId>(c));
    op.reads.emplace_back(static_cast<SlotId>(c), buf);
    issue(PendingIo{false, static_cast<SlotId>(c), buf, dm.stored_bytes,
                    token(kVerifyRead, id << 20 | (op.reads.size() - 1))});
  }
  op.reply.cursor_end = disk_.size();
  op.reply.next_cursor = c;
  op.reply.done = c >= disk_.size() ? 1 : 0;
  op.waiting = static_cast<uint32_t>(op.reads.size());
  op.done = std::move(done);
  if (op.waiting == 0) return op.done(Status::Ok(), op.reply);
  verifies_.emplace(id, std::move(op));
  (void)nvme_->io().submit();
}

void CacheEngine::finish_verify_read(uint64_t id, uint32_t index, int32_t result) {
  auto it = verifies_.find(id);
  if (it == verifies_.end()) return;
  VerifyOp& op = it->second;
  const auto [d, buf] = op.reads[index];
  DiskMeta& dm = disk_[d];
  ++op.reply.checked;
  bool bad = false;
  if (result < static_cast<int32_t>(dm.stored_bytes)) {
    ++op.reply.unreadable;
    ++read_errors_;
    bad = true;
    spdlog::warn("verify: chunk {} (slot {}) is unreadable: {}; removed", dm.key.to_hex(), d,
                 result < 0 ? std::strerror(-result) : "short read");
  } else if (hash_inline({buf, dm.stored_bytes}) != dm.checksum) {
    ++op.reply.corrupt;
    ++checksum_failures_;
    bad = true;
    spdlog::error("verify: chunk {} (slot {}, file {} offset {}) fails its checksum; removed",
                  dm.key.to_hex(), d, nvme_->file_of(d), nvme_->file_offset(d));
  }
  std::free(buf);
  if (bad) dm.doomed = true;
  release_disk_reader(d);
  if (--op.waiting > 0) return;
  VerifyOp finished = std::move(op);
  verifies_.erase(it);
  finished.done(Status::Ok(), finished.reply);
}

}  // namespace tierkv::scheduler
