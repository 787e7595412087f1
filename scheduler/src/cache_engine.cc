#include "tierkv/scheduler/cache_engine.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "codec_stages.h"
#include "staging_pool.h"

namespace tierkv::scheduler {

using proto::PutDisposition;
using storage::kNoSlot;

namespace {
std::string ns_hex(NamespaceId ns) {
  char buf[19];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(ns));
  return buf;
}
}  // namespace

Result<std::unique_ptr<CacheEngine>> CacheEngine::create(
    const CacheOptions& options, std::unique_ptr<storage::GpuMemory> gpu_memory) {
  storage::SlotPoolOptions pool_options;
  pool_options.region_bytes = options.host_capacity_bytes;
  pool_options.page_bytes = options.slab_bytes;
  pool_options.min_slot_bytes = options.min_slot_bytes;
  TIERKV_RETURN_IF_ERROR(pool_options.validate());
  if (options.default_chunk_tokens == 0 || options.default_chunk_tokens > Layout::kMaxChunkTokens) {
    return Status::InvalidArgument("cache.chunk_tokens = " +
                                   std::to_string(options.default_chunk_tokens) +
                                   " is out of range [1, " +
                                   std::to_string(Layout::kMaxChunkTokens) + "]");
  }
  // Only whole slabs are usable; size the region to them.
  const uint64_t usable = options.host_capacity_bytes / options.slab_bytes * options.slab_bytes;
  auto region = storage::ShmRegion::create("tierkv-host", usable, options.prefault);
  if (!region.ok()) return region.status();
  std::unique_ptr<CacheEngine> engine(new CacheEngine(options, std::move(region).value()));
  if (!options.nvme.store.directories.empty()) TIERKV_RETURN_IF_ERROR(engine->open_nvme());
  if (options.gpu.capacity_bytes > 0) TIERKV_RETURN_IF_ERROR(options.gpu.validate());
  engine->open_gpu(std::move(gpu_memory));
  return engine;
}

CacheEngine::CacheEngine(const CacheOptions& options, storage::ShmRegion region)
    : options_(options),
      region_(std::move(region)),
      pool_(storage::SlotPoolOptions{"host", region_.size(), options.slab_bytes,
                                     options.min_slot_bytes}),
      index_(pool_.max_slot_ids()),
      meta_(pool_.max_slot_ids()),
      host_lru_(pool_.max_slot_ids(), pool_.num_classes()) {}

CacheEngine::~CacheEngine() {
  // The codec workers finish their jobs (which read and write the host region and the staging
  // memory) and stop; then in-flight NVMe I/O finishes before the memory it uses is unmapped.
  if (codec_stages_) codec_stages_->stop();
  if (nvme_) {
    while (nvme_->io().in_flight() > 0) {
      (void)nvme_->io().wait(std::chrono::milliseconds(100));
      storage::IoCompletion c[64];
      (void)nvme_->io().reap(c);
    }
  }
}

// --- sessions ------------------------------------------------------------------------------------

SessionId CacheEngine::open_session() {
  const SessionId id = next_session_++;
  sessions_.emplace(id, Session{});
  return id;
}

CacheEngine::Reclaimed CacheEngine::close_session(SessionId session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return {};
  Reclaimed reclaimed{it->second.read_leases.size(), it->second.pending.size(), 0};
  for (SlotId s : it->second.pending) discard_pending(s);
  for (SlotId s : it->second.read_leases) {
    --read_leases_;
    unlease(s);
  }
  sessions_.erase(it);
  if (gpu_) reclaimed.gpu_leases = gpu_->close_session(session);
  // Loads still waiting for NVMe reads: drop their leases and callbacks; the reads finish on
  // their own and leave the chunks cached.
  for (auto op = loads_.begin(); op != loads_.end();) {
    if (op->second.session != session) {
      ++op;
      continue;
    }
    for (SlotId s : op->second.slots) unlease(s);
    ++reclaimed.loads_cancelled;
    const uint64_t id = op->first;
    op = loads_.erase(op);
    for (auto w = load_waiters_.begin(); w != load_waiters_.end();) {
      w = w->second == id ? load_waiters_.erase(w) : std::next(w);
    }
  }
  return reclaimed;
}

Result<CacheEngine::Session*> CacheEngine::find_session(SessionId session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return Status::Internal("session " + std::to_string(session) + " is not open");
  return &it->second;
}

// --- namespaces ----------------------------------------------------------------------------------

Result<Namespace> CacheEngine::register_namespace(const Layout& requested, std::string_view tenant,
                                                  std::string_view salt) {
  if (tenant.empty()) return Status::InvalidArgument("tenant must not be empty");
  Layout layout = requested;
  if (layout.chunk_tokens == 0) layout.chunk_tokens = options_.default_chunk_tokens;
  TIERKV_RETURN_IF_ERROR(layout.validate());
  auto cls = pool_.class_for(layout.chunk_bytes());
  if (!cls.ok()) {
    return Status::InvalidArgument("layout " + layout.to_string() + ": " + cls.status().message());
  }
  const NamespaceId id = namespace_id(layout, tenant, salt);
  auto it = namespaces_.find(id);
  if (it != namespaces_.end()) {
    const Namespace& have = it->second.ns;
    if (have.layout != layout || have.tenant != tenant || have.salt != salt) {
      return Status::Internal("namespace id " + ns_hex(id) + " collides with tenant '" +
                              have.tenant + "'");
    }
    return have;
  }
  if (namespaces_.size() >= options_.max_namespaces) {
    return Status::ResourceExhausted("already " + std::to_string(namespaces_.size()) +
                                     " namespaces registered, the limit");
  }
  NamespaceEntry entry{Namespace{id, layout, std::string(tenant), std::string(salt)}, *cls, 0, 0,
                       false};
  entry.to_disk = wants_disk(tenant, layout.chunk_bytes());
  if (entry.to_disk) {
    TIERKV_RETURN_IF_ERROR(nvme_->put_namespace(entry.ns));
    entry.codec = choose_codec(entry.ns);
  }
  namespaces_.emplace(id, entry);
  return entry.ns;
}

bool CacheEngine::wants_disk(std::string_view tenant, uint64_t chunk_bytes) const {
  if (!nvme_) return false;
  const auto& tenants = options_.nvme.tenants;
  return (tenants.empty() || std::find(tenants.begin(), tenants.end(), tenant) != tenants.end()) &&
         nvme_->class_for(chunk_bytes).ok();
}

Result<const CacheEngine::NamespaceEntry*> CacheEngine::find_namespace(NamespaceId ns,
                                                                       const char* op) const {
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) {
    return Status::NotFound(std::string(op) + ": namespace " + ns_hex(ns) +
                            " is not registered (register its layout first)");
  }
  return &it->second;
}

CacheEngine::NamespaceEntry* CacheEngine::ns_entry(NamespaceId ns) {
  auto it = namespaces_.find(ns);
  return it == namespaces_.end() ? nullptr : &it->second;
}

// --- lookup --------------------------------------------------------------------------------------

Status CacheEngine::lookup(const proto::KeysRequest& req, proto::LookupReply& reply) {
  auto entry = find_namespace(req.ns, "lookup");
  if (!entry.ok()) return entry.status();
  reply.tiers.clear();
  found_scratch_.clear();
  for (const ChunkKey& key : req.keys) {
    const uint32_t s = index_.find(req.ns, key);
    if (s != storage::ChunkIndex::kAbsent && meta_[s].state == ChunkState::kReady) {
      reply.tiers.push_back(host_tier(s));
      found_scratch_.push_back(s);
      continue;
    }
    const bool loading = s != storage::ChunkIndex::kAbsent && meta_[s].state == ChunkState::kLoading;
    const uint32_t d = loading ? meta_[s].loading_from : disk_find(req.ns, key);
    if (d == storage::ChunkIndex::kAbsent) break;
    reply.tiers.push_back(proto::Tier::kNvme);
    disk_lru_->touch(d);
    ++disk_counters_.hits;
  }
  if (nvme_) disk_counters_.misses += req.keys.size() - reply.tiers.size();
  // Touch leaf-to-root so that the head of the prefix ends up most recent.
  for (size_t i = found_scratch_.size(); i-- > 0;) touch(found_scratch_[i]);
  host_counters_.hits += found_scratch_.size();
  host_counters_.misses += req.keys.size() - found_scratch_.size();
  return Status::Ok();
}

Status CacheEngine::release(SessionId session, std::span<const uint32_t> slots,
                            uint64_t* released) {
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  TIERKV_RETURN_IF_ERROR(claim((*sess)->read_leases, slots, "leased for reading"));
  compact_claimed((*sess)->read_leases);
  for (uint32_t s : slots) {
    --read_leases_;
    unlease(s);
  }
  *released = slots.size();
  return Status::Ok();
}

void CacheEngine::unlease(SlotId s) {
  auto left = pool_.unlease(s);
  if (!left.ok() || *left != 0) return;
  if (meta_[s].state == ChunkState::kZombie) free_slot(s);
  else update_evictable(s);
}

// --- put -----------------------------------------------------------------------------------------

Status CacheEngine::put_begin(SessionId session, const proto::PutBeginRequest& req,
                              proto::PutBeginReply& reply) {
  auto found = find_namespace(req.ns, "put");
  if (!found.ok()) return found.status();
  const NamespaceEntry& entry = **found;
  if (req.chunk_bytes != entry.ns.chunk_bytes()) {
    return Status::InvalidArgument(
        "chunk_bytes = " + std::to_string(req.chunk_bytes) + " does not match namespace " +
        ns_hex(req.ns) + ", whose layout (" + entry.ns.layout.to_string() + ") makes " +
        std::to_string(entry.ns.chunk_bytes()) + " bytes per chunk");
  }
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();

  // The chunk each key extends: an indexed host chunk (pending, ready or loading) or none.
  SlotId parent = kNoSlot;
  if (!req.parent.is_zero()) {
    const uint32_t p = index_.find(req.ns, req.parent);
    if (p != storage::ChunkIndex::kAbsent) parent = p;
  }
  ChunkKey parent_key = req.parent;
  reply.slots.assign(req.keys.size(), proto::PutSlot{});
  for (size_t i = 0; i < req.keys.size(); ++i) {
    proto::PutSlot& out = reply.slots[i];
    const uint32_t existing = index_.find(req.ns, req.keys[i]);
    if (existing != storage::ChunkIndex::kAbsent) {
      const ChunkState st = meta_[existing].state;
      if (st == ChunkState::kReady || st == ChunkState::kLoading) {
        out.disposition = PutDisposition::kCached;
        touch(existing);
      } else {
        out.disposition = PutDisposition::kInProgress;
      }
      parent = existing;
      parent_key = req.keys[i];
      continue;
    }
    if (const uint32_t d = disk_find(req.ns, req.keys[i]); d != storage::ChunkIndex::kAbsent) {
      out.disposition = PutDisposition::kCached;  // on NVMe: a load promotes it
      disk_lru_->touch(d);
      parent = kNoSlot;
      parent_key = req.keys[i];
      continue;
    }
    // Hold the parent as a non-leaf while we look for room, so eviction cannot take the very
    // chunk this one extends.
    if (parent != kNoSlot) host_lru_.hold(parent);
    const SlotId s = allocate(entry.slot_class);
    if (parent != kNoSlot) {
      host_lru_.release_hold(parent);
      update_evictable(parent);
    }
    if (s == kNoSlot) {
      for (size_t j = i; j < req.keys.size(); ++j) reply.slots[j].disposition = PutDisposition::kNoSpace;
      break;
    }
    ChunkMeta& m = meta_[s];
    m.key = req.keys[i];
    m.parent_key = parent_key;
    m.ns = req.ns;
    m.writer = session;
    m.state = ChunkState::kPending;
    m.on_disk = false;
    m.writing_down = false;
    touch(s);
    link_host_parent(s, parent);
    (void)index_.insert(req.ns, req.keys[i], s);  // absent above; the index holds every slot
    (*sess)->pending.push_back(s);
    ++pending_writes_;
    out.disposition = PutDisposition::kWrite;
    out.slot = s;
    out.offset = pool_.offset(s);
    parent = s;
    parent_key = req.keys[i];
  }
  return Status::Ok();
}

Status CacheEngine::put_commit(SessionId session, std::span<const uint32_t> slots,
                               uint64_t* committed) {
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  TIERKV_RETURN_IF_ERROR(claim((*sess)->pending, slots, "leased for writing"));
  compact_claimed((*sess)->pending);
  for (uint32_t s : slots) {
    ChunkMeta& m = meta_[s];
    m.state = ChunkState::kReady;
    m.writer = 0;
    --pending_writes_;
    ++host_counters_.chunks;
    if (NamespaceEntry* e = ns_entry(m.ns)) {
      ++e->chunks;
      host_counters_.bytes_in += e->ns.chunk_bytes();
    }
    if (is_dirty(m)) {
      ++dirty_chunks_;
      dirty_fifo_.emplace_back(s, m.gen);
    }
    touch(s);
    update_evictable(s);
  }
  *committed = slots.size();
  if (nvme_) pump_writes();
  return Status::Ok();
}

Status CacheEngine::put_abort(SessionId session, std::span<const uint32_t> slots,
                              uint64_t* aborted) {
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  TIERKV_RETURN_IF_ERROR(claim((*sess)->pending, slots, "leased for writing"));
  compact_claimed((*sess)->pending);
  for (uint32_t s : slots) discard_pending(s);
  *aborted = slots.size();
  return Status::Ok();
}

// --- evict / delete ------------------------------------------------------------------------------

Status CacheEngine::evict(const proto::DropRequest& req, uint64_t* removed) {
  return drop(req, false, removed);
}

Status CacheEngine::remove(const proto::DropRequest& req, uint64_t* removed) {
  return drop(req, true, removed);
}

Status CacheEngine::drop(const proto::DropRequest& req, bool every_tier, uint64_t* removed) {
  const char* op = every_tier ? "delete" : "evict";
  auto entry = find_namespace(req.ns, op);
  if (!entry.ok()) return entry.status();
  uint64_t n = 0;
  const auto drop_disk = [&](uint32_t d) {
    if (d == storage::ChunkIndex::kAbsent) return false;
    remove_disk(d);
    return true;
  };
  if (req.scope == proto::Scope::kKeys) {
    for (const ChunkKey& key : req.keys) {
      bool gone = false;
      const uint32_t s = index_.find(req.ns, key);
      if (s != storage::ChunkIndex::kAbsent && meta_[s].state == ChunkState::kReady) {
        remove_ready(s, every_tier ? Removal::kDeleted : Removal::kDropped);
        gone = true;
      }
      if (every_tier && nvme_) gone = drop_disk(disk_find(req.ns, key)) || gone;
      n += gone ? 1 : 0;
    }
  } else {
    for (SlotId s = 0; s < meta_.size(); ++s) {
      if (meta_[s].state == ChunkState::kReady && meta_[s].ns == req.ns) {
        remove_ready(s, every_tier ? Removal::kDeleted : Removal::kDropped);
        ++n;
      }
    }
    if (every_tier && nvme_) {
      for (SlotId d = 0; d < disk_.size(); ++d) {
        if (disk_[d].state == DiskState::kReady && disk_[d].ns == req.ns && !disk_[d].doomed) {
          remove_disk(d);
          ++n;
        }
      }
    }
  }
  *removed = n;
  return Status::Ok();
}

// --- stats ---------------------------------------------------------------------------------------

void CacheEngine::fill_stats(proto::StatsReply& stats) const {
  stats.namespaces = static_cast<uint32_t>(namespaces_.size());
  stats.read_leases = read_leases_;
  stats.pending_writes = pending_writes_;
  stats.tiers.clear();
  for (proto::Tier t : {proto::Tier::kGpu, proto::Tier::kHost, proto::Tier::kNvme,
                        proto::Tier::kRemote}) {
    proto::TierStats ts;
    ts.tier = t;
    if (t == proto::Tier::kHost) {
      host_counters_.fill(t, pool_.capacity_bytes(), pool_.used_bytes(), ts);
    } else if (t == proto::Tier::kNvme && nvme_) {
      disk_counters_.fill(t, nvme_->capacity_bytes(), nvme_->used_bytes(), ts);
    }
    stats.tiers.push_back(ts);
  }
  fill_gpu_stats(stats);
  proto::NvmeStats& n = stats.nvme;
  n = proto::NvmeStats{};
  stats.nvme_io = proto::NvmeIoStats{};
  if (!nvme_) return;
  proto::NvmeIoStats& io = stats.nvme_io;
  const storage::IoCounters c = nvme_->io().counters();
  io.submits = c.submits;
  io.submit_ns = c.submit_ns;
  io.busy_ns = c.busy_ns;
  io.depth_ns = c.depth_ns;
  io.polls = polls_;
  io.poll_ns = poll_ns_;
  io.reads_verified = reads_verified_;
  io.verified_inline = verified_inline_;
  io.inline_hash_ns = inline_hash_ns_;
  io.worker_hash_ns = verifier_ ? verifier_->busy_ns() : 0;
  io.verify_threads = verifier_ ? verifier_->threads() : 0;
  io.verifies_in_flight = verifier_ ? verifier_->outstanding() : 0;
  n.admitting = disk_full_ ? 0 : 1;
  n.write_through = options_.nvme.write_through ? 1 : 0;
  n.dirty_chunks = dirty_chunks_;
  n.writes_in_flight = writes_in_flight_;
  n.reads_in_flight = reads_in_flight_;
  n.read_errors = read_errors_;
  n.write_errors = write_errors_;
  n.checksum_failures = checksum_failures_;
  n.dropped_unwritten = dropped_unwritten_;
  n.recovered_chunks = recovery_.chunks;
  n.recovery_ms = recovery_.millis;
  n.logical_bytes = disk_logical_bytes_;
  n.stored_bytes = disk_stored_bytes_;
  fill_codec_stats(stats);
}

void CacheEngine::fill_codec_stats(proto::StatsReply& stats) const {
  stats.tier_codecs.clear();
  stats.codec_stages.clear();
  stats.codec = proto::CodecCounters{};
  stats.nvme_codec.clear();
  // The host tier holds chunks as they are.
  proto::TierCodecStats host;
  host.tier = proto::Tier::kHost;
  for (const auto& [id, e] : namespaces_) host.logical_bytes += e.chunks * e.ns.chunk_bytes();
  host.stored_bytes = host.logical_bytes;
  stats.tier_codecs.push_back(host);
  if (!nvme_) return;
  proto::TierCodecStats disk;
  disk.tier = proto::Tier::kNvme;
  disk.logical_bytes = disk_logical_bytes_;
  disk.stored_bytes = disk_stored_bytes_;
  disk.encoded_chunks = disk_encoded_chunks_;
  stats.tier_codecs.push_back(disk);
  stats.nvme_codec = codec_table_.empty() ? "raw" : codec_table_[default_codec_].to_string();
  for (const auto& [tenant, index] : tenant_codecs_) {
    stats.nvme_codec += ", " + tenant + "=" + codec_table_[index].to_string();
  }
  proto::CodecCounters& c = stats.codec;
  c.encodes_in_flight = encodes_in_flight_;
  c.decodes_in_flight = decodes_in_flight_;
  c.encode_errors = encode_errors_;
  c.staged_reads_waiting = staged_waiters_.size();
  c.encode_waits = encode_waits_;
  if (staging_) {
    c.staging_capacity_bytes = staging_->capacity_bytes();
    c.staging_used_bytes = staging_->used_bytes();
  }
  if (representatives_) {
    const storage::RepresentativeStats reps = representatives_->stats();
    c.fused_representatives = reps.count;
    c.fused_representative_bytes = reps.bytes;
  }
  if (!codec_stages_) return;
  for (const CodecStageStats& st : codec_stages_->stats()) {
    proto::CodecStageStats w;
    std::strncpy(w.name, st.stage.name.c_str(), sizeof(w.name) - 1);
    w.queue_depth = st.stage.queue_depth;
    w.max_queue_depth = st.stage.max_queue_depth;
    w.queue_capacity = st.queue_capacity;
    w.batch_size = st.stage.batch_size;
    w.workers = st.workers;
    w.batches = st.stage.batches;
    w.items = st.stage.items;
    w.rejected = st.rejected;
    w.last_batch_items = st.stage.last_batch_items;
    w.last_latency_us = st.stage.last_latency_us;
    w.mean_latency_us = st.stage.mean_latency_us;
    stats.codec_stages.push_back(w);
  }
}

void CacheEngine::list_namespaces(proto::ListNamespacesReply& reply) const {
  // Distinct chunks, whatever tier: those on NVMe plus those only in host RAM. An admin call:
  // the scan over host slots is fine here.
  std::unordered_map<NamespaceId, uint64_t> host_only;
  for (const ChunkMeta& m : meta_) {
    if (m.state == ChunkState::kReady && !m.on_disk) ++host_only[m.ns];
  }
  reply.namespaces.clear();
  for (const auto& [id, e] : namespaces_) {
    const uint64_t n = e.disk_chunks + host_only[id];
    reply.namespaces.push_back(proto::NamespaceInfo{e.ns, n, n * e.ns.chunk_bytes()});
  }
}

// --- slots, leases and eviction ------------------------------------------------------------------

Status CacheEngine::check_slot_id(uint32_t slot, size_t index) const {
  if (slot >= pool_.max_slot_ids()) {
    return Status::InvalidArgument("slots[" + std::to_string(index) + "] = " +
                                   std::to_string(slot) + " is out of range (the host pool has " +
                                   std::to_string(pool_.max_slot_ids()) + " slot ids)");
  }
  return Status::Ok();
}

Status CacheEngine::claim(std::vector<SlotId>& held, std::span<const uint32_t> slots,
                          const char* what) {
  // Each slot is looked for from where the previous one was found: clients release and commit
  // in the order they leased, so this is O(1) per slot in practice.
  claimed_scratch_.clear();
  size_t hint = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    Status bad = check_slot_id(slots[i], i);
    size_t found = SIZE_MAX;
    if (bad.ok()) {
      for (size_t k = 0; k < held.size(); ++k) {
        const size_t j = (hint + k) % held.size();
        if (held[j] == slots[i]) {
          found = j;
          break;
        }
      }
      if (found == SIZE_MAX) {
        bad = Status::FailedPrecondition("slots[" + std::to_string(i) + "] = " +
                                         std::to_string(slots[i]) + " is not " + what +
                                         " by this client (or is named twice)");
      }
    }
    if (!bad.ok()) {
      for (size_t j = 0; j < claimed_scratch_.size(); ++j) held[claimed_scratch_[j]] = slots[j];
      return bad;
    }
    held[found] = kNoSlot;
    claimed_scratch_.push_back(found);
    hint = found + 1;
  }
  return Status::Ok();
}

void CacheEngine::compact_claimed(std::vector<SlotId>& held) {
  std::erase(held, kNoSlot);
}

SlotId CacheEngine::allocate(int slot_class) {
  for (;;) {
    const SlotId s = pool_.allocate(slot_class);
    if (s != kNoSlot) return s;
    if (!evict_one(slot_class)) return kNoSlot;
  }
}

bool CacheEngine::is_dirty(const ChunkMeta& m) const {
  if (!nvme_ || m.on_disk || m.state != ChunkState::kReady) return false;
  auto it = namespaces_.find(m.ns);
  return it != namespaces_.end() && it->second.to_disk;
}

SlotId CacheEngine::pick_victim(uint32_t coldest) const {
  // Among the coldest few leaves, the coldest that loses nothing when dropped (a copy lies below,
  // or no tier below wants it); failing that, the coldest.
  constexpr int kWindow = 64;
  uint32_t s = coldest;
  for (int i = 0; i < kWindow && s != LeafFirstLru::kNone; ++i, s = host_lru_.warmer(s)) {
    if (!is_dirty(meta_[s])) return s;
  }
  return coldest;
}

bool CacheEngine::evict_one(int slot_class) {
  // The coldest leaf of the class that needs room; failing that, the coldest leaf of any class,
  // which in time empties a whole slab that can change class.
  uint32_t coldest = host_lru_.coldest(slot_class);
  if (coldest == LeafFirstLru::kNone) coldest = host_lru_.coldest_any();
  if (coldest == LeafFirstLru::kNone) return false;
  remove_ready(pick_victim(coldest), Removal::kEvicted);
  ++host_counters_.evictions;
  return true;
}

void CacheEngine::link_host_parent(SlotId child, SlotId parent) {
  host_lru_.link_parent(child, parent);
}

void CacheEngine::unlink_host_parent(SlotId child) {
  const uint32_t p = host_lru_.unlink_parent(child);
  if (p == LeafFirstLru::kNone) return;
  if (meta_[p].state == ChunkState::kPending || meta_[p].state == ChunkState::kReady) {
    update_evictable(p);
  }
}

void CacheEngine::remove_ready(SlotId s, Removal why) {
  ChunkMeta& m = meta_[s];
  // A chunk whose write-down is in flight still reaches NVMe unless it was deleted: it stays
  // counted as dirty until then.
  if (is_dirty(m) && !(m.writing_down && why != Removal::kDeleted)) {
    --dirty_chunks_;
    if (why == Removal::kEvicted) ++dropped_unwritten_;
  }
  m.deleted = why == Removal::kDeleted;
  if (gpu_) gpu_->drop_host(s);
  (void)index_.erase(m.ns, m.key);
  unlink_host_parent(s);
  host_lru_.set_evictable(s, 0, false);
  --host_counters_.chunks;
  if (NamespaceEntry* e = ns_entry(m.ns)) --e->chunks;
  if (pool_.leases(s) > 0) {
    m.state = ChunkState::kZombie;  // its readers (or its write-down) keep it until they let go
  } else {
    free_slot(s);
  }
}

void CacheEngine::discard_pending(SlotId s) {
  ChunkMeta& m = meta_[s];
  (void)index_.erase(m.ns, m.key);
  unlink_host_parent(s);
  --pending_writes_;
  free_slot(s);
}

void CacheEngine::free_slot(SlotId s) {
  ChunkMeta& m = meta_[s];
  m.state = ChunkState::kFree;
  m.on_disk = false;
  m.writing_down = false;
  m.deleted = false;
  m.loading_from = kNoSlot;
  ++m.gen;
  host_lru_.on_free(s);
  (void)pool_.free(s);
}

void CacheEngine::update_evictable(SlotId s) {
  const ChunkMeta& m = meta_[s];
  const bool evictable = m.state == ChunkState::kReady && host_lru_.children(s) == 0 &&
                         pool_.leases(s) == 0;
  host_lru_.set_evictable(s, pool_.slot_class(s), evictable);
}

// --- co-scheduled prefill ------------------------------------------------------------------------

Result<Namespace> CacheEngine::find_registered(NamespaceId ns, const char* op) const {
  auto entry = find_namespace(ns, op);
  if (!entry.ok()) return entry.status();
  return (*entry)->ns;
}

Result<proto::SlotRef> CacheEngine::lease_chunk(SessionId session, NamespaceId ns,
                                                const ChunkKey& key) {
  auto entry = find_namespace(ns, "lease chunk");
  if (!entry.ok()) return entry.status();
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  const uint32_t s = index_.find(ns, key);
  if (s == storage::ChunkIndex::kAbsent || meta_[s].state != ChunkState::kReady) {
    return Status::NotFound("chunk " + key.to_hex() + " of namespace " + ns_hex(ns) +
                            " is not in the host tier");
  }
  (void)pool_.lease(s);  // s is allocated: it is ready
  ++read_leases_;
  update_evictable(s);
  (*sess)->read_leases.push_back(s);
  touch(s);
  const uint64_t bytes = (*entry)->ns.chunk_bytes();
  host_counters_.bytes_out += bytes;
  gpu_count_read(s);
  return proto::SlotRef{s, 0, pool_.offset(s), bytes};
}

}  // namespace tierkv::scheduler
