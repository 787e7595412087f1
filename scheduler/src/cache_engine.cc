#include "tierkv/scheduler/cache_engine.h"

#include <cstdio>
#include <string>

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

Result<std::unique_ptr<CacheEngine>> CacheEngine::create(const CacheOptions& options) {
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
  return std::unique_ptr<CacheEngine>(new CacheEngine(options, std::move(region).value()));
}

CacheEngine::CacheEngine(const CacheOptions& options, storage::ShmRegion region)
    : options_(options),
      region_(std::move(region)),
      pool_(storage::SlotPoolOptions{region_.size(), options.slab_bytes, options.min_slot_bytes}),
      index_(pool_.max_slot_ids()),
      meta_(pool_.max_slot_ids()),
      lru_(pool_.num_classes()) {}

// --- sessions ------------------------------------------------------------------------------------

SessionId CacheEngine::open_session() {
  const SessionId id = next_session_++;
  sessions_.emplace(id, Session{});
  return id;
}

CacheEngine::Reclaimed CacheEngine::close_session(SessionId session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return {};
  const Reclaimed reclaimed{it->second.read_leases.size(), it->second.pending.size()};
  for (SlotId s : it->second.pending) discard_pending(s);
  for (SlotId s : it->second.read_leases) {
    auto left = pool_.unlease(s);
    --read_leases_;
    if (left.ok() && *left == 0) {
      if (meta_[s].state == ChunkState::kZombie) free_slot(s);
      else update_evictable(s);
    }
  }
  sessions_.erase(it);
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
  NamespaceEntry entry{Namespace{id, layout, std::string(tenant), std::string(salt)}, *cls, 0};
  namespaces_.emplace(id, entry);
  return entry.ns;
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

// --- lookup and load -----------------------------------------------------------------------------

Status CacheEngine::lookup(const proto::KeysRequest& req, proto::LookupReply& reply) {
  auto entry = find_namespace(req.ns, "lookup");
  if (!entry.ok()) return entry.status();
  reply.tiers.clear();
  found_scratch_.clear();
  for (const ChunkKey& key : req.keys) {
    const uint32_t s = index_.find(req.ns, key);
    if (s == storage::ChunkIndex::kAbsent || meta_[s].state != ChunkState::kReady) break;
    reply.tiers.push_back(proto::Tier::kHost);
    found_scratch_.push_back(s);
  }
  // Touch leaf-to-root so that the head of the prefix ends up most recent.
  for (size_t i = found_scratch_.size(); i-- > 0;) touch(found_scratch_[i]);
  hits_ += reply.tiers.size();
  misses_ += req.keys.size() - reply.tiers.size();
  return Status::Ok();
}

Status CacheEngine::load(SessionId session, const proto::KeysRequest& req, proto::LoadReply& reply) {
  auto entry = find_namespace(req.ns, "load");
  if (!entry.ok()) return entry.status();
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  const uint64_t bytes = (*entry)->ns.chunk_bytes();
  reply.slots.clear();
  for (const ChunkKey& key : req.keys) {
    const uint32_t s = index_.find(req.ns, key);
    if (s == storage::ChunkIndex::kAbsent || meta_[s].state != ChunkState::kReady) break;
    (void)pool_.lease(s);  // s is allocated: it is ready
    ++read_leases_;
    lru_remove(s);
    (*sess)->read_leases.push_back(s);
    reply.slots.push_back(proto::SlotRef{s, 0, pool_.offset(s), bytes});
  }
  for (size_t i = reply.slots.size(); i-- > 0;) touch(reply.slots[i].slot);
  hits_ += reply.slots.size();
  misses_ += req.keys.size() - reply.slots.size();
  bytes_out_ += reply.slots.size() * bytes;
  return Status::Ok();
}

Status CacheEngine::release(SessionId session, std::span<const uint32_t> slots,
                            uint64_t* released) {
  auto sess = find_session(session);
  if (!sess.ok()) return sess.status();
  TIERKV_RETURN_IF_ERROR(claim((*sess)->read_leases, slots, "leased for reading"));
  compact_claimed((*sess)->read_leases);
  for (uint32_t s : slots) {
    auto left = pool_.unlease(s);
    --read_leases_;
    if (left.ok() && *left == 0) {
      if (meta_[s].state == ChunkState::kZombie) free_slot(s);
      else update_evictable(s);
    }
  }
  *released = slots.size();
  return Status::Ok();
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

  // The chunk each key extends: an indexed chunk (pending or ready) or none.
  SlotId parent = kNoSlot;
  if (!req.parent.is_zero()) {
    const uint32_t p = index_.find(req.ns, req.parent);
    if (p != storage::ChunkIndex::kAbsent) parent = p;
  }
  reply.slots.assign(req.keys.size(), proto::PutSlot{});
  for (size_t i = 0; i < req.keys.size(); ++i) {
    proto::PutSlot& out = reply.slots[i];
    const uint32_t existing = index_.find(req.ns, req.keys[i]);
    if (existing != storage::ChunkIndex::kAbsent) {
      if (meta_[existing].state == ChunkState::kReady) {
        out.disposition = PutDisposition::kCached;
        touch(existing);
      } else {
        out.disposition = PutDisposition::kInProgress;
      }
      parent = existing;
      continue;
    }
    // Hold the parent as a non-leaf while we look for room, so eviction cannot take the very
    // chunk this one extends.
    if (parent != kNoSlot) {
      ++meta_[parent].children;
      lru_remove(parent);
    }
    const SlotId s = allocate(entry.slot_class);
    if (parent != kNoSlot) {
      --meta_[parent].children;
      update_evictable(parent);
    }
    if (s == kNoSlot) {
      for (size_t j = i; j < req.keys.size(); ++j) reply.slots[j].disposition = PutDisposition::kNoSpace;
      break;
    }
    ChunkMeta& m = meta_[s];
    m.key = req.keys[i];
    m.ns = req.ns;
    m.writer = session;
    m.state = ChunkState::kPending;
    m.children = 0;
    m.last_access = ++clock_;
    link_parent(s, parent);
    (void)index_.insert(req.ns, req.keys[i], s);  // absent above; the index holds every slot
    (*sess)->pending.push_back(s);
    ++pending_writes_;
    out.disposition = PutDisposition::kWrite;
    out.slot = s;
    out.offset = pool_.offset(s);
    parent = s;
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
    ++ready_chunks_;
    if (NamespaceEntry* e = ns_entry(m.ns)) {
      ++e->chunks;
      bytes_in_ += e->ns.chunk_bytes();
    }
    touch(s);
    update_evictable(s);
  }
  *committed = slots.size();
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

// --- drop ----------------------------------------------------------------------------------------

Status CacheEngine::drop(const proto::DropRequest& req, uint64_t* removed) {
  auto entry = find_namespace(req.ns, req.scope == proto::Scope::kKeys ? "drop" : "drop namespace");
  if (!entry.ok()) return entry.status();
  uint64_t n = 0;
  if (req.scope == proto::Scope::kKeys) {
    for (const ChunkKey& key : req.keys) {
      const uint32_t s = index_.find(req.ns, key);
      if (s == storage::ChunkIndex::kAbsent || meta_[s].state != ChunkState::kReady) continue;
      remove_ready(s);
      ++n;
    }
  } else {
    for (SlotId s = 0; s < meta_.size(); ++s) {
      if (meta_[s].state == ChunkState::kReady && meta_[s].ns == req.ns) {
        remove_ready(s);
        ++n;
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
      ts.enabled = 1;
      ts.capacity_bytes = pool_.capacity_bytes();
      ts.used_bytes = pool_.used_bytes();
      ts.chunks = ready_chunks_;
      ts.hits = hits_;
      ts.misses = misses_;
      ts.evictions = evictions_;
      ts.bytes_in = bytes_in_;
      ts.bytes_out = bytes_out_;
    }
    stats.tiers.push_back(ts);
  }
}

void CacheEngine::list_namespaces(proto::ListNamespacesReply& reply) const {
  reply.namespaces.clear();
  for (const auto& [id, e] : namespaces_) {
    reply.namespaces.push_back(proto::NamespaceInfo{e.ns, e.chunks, e.chunks * e.ns.chunk_bytes()});
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

bool CacheEngine::evict_one(int slot_class) {
  // The coldest leaf of the class that needs room; failing that, the coldest leaf of any class,
  // which in time empties a whole slab that can change class.
  SlotId victim = lru_[slot_class].tail;
  if (victim == kNoSlot) {
    uint64_t coldest = UINT64_MAX;
    for (const Lru& l : lru_) {
      if (l.tail != kNoSlot && meta_[l.tail].last_access < coldest) {
        coldest = meta_[l.tail].last_access;
        victim = l.tail;
      }
    }
  }
  if (victim == kNoSlot) return false;
  remove_ready(victim);
  ++evictions_;
  return true;
}

void CacheEngine::link_parent(SlotId child, SlotId parent) {
  ChunkMeta& c = meta_[child];
  c.parent = parent;
  if (parent == kNoSlot) return;
  c.parent_gen = meta_[parent].gen;
  ++meta_[parent].children;
  lru_remove(parent);
}

void CacheEngine::unlink_parent(SlotId child) {
  ChunkMeta& c = meta_[child];
  const SlotId p = c.parent;
  c.parent = kNoSlot;
  // The parent may have been dropped and its slot reused since: the generation tells.
  if (p == kNoSlot || meta_[p].gen != c.parent_gen || meta_[p].children == 0) return;
  if (meta_[p].state != ChunkState::kPending && meta_[p].state != ChunkState::kReady) return;
  --meta_[p].children;
  update_evictable(p);
}

void CacheEngine::remove_ready(SlotId s) {
  ChunkMeta& m = meta_[s];
  lru_remove(s);
  (void)index_.erase(m.ns, m.key);
  unlink_parent(s);
  --ready_chunks_;
  if (NamespaceEntry* e = ns_entry(m.ns)) --e->chunks;
  if (pool_.leases(s) > 0) {
    m.state = ChunkState::kZombie;  // its readers keep it until they release
  } else {
    free_slot(s);
  }
}

void CacheEngine::discard_pending(SlotId s) {
  ChunkMeta& m = meta_[s];
  (void)index_.erase(m.ns, m.key);
  unlink_parent(s);
  --pending_writes_;
  free_slot(s);
}

void CacheEngine::free_slot(SlotId s) {
  ChunkMeta& m = meta_[s];
  m.state = ChunkState::kFree;
  m.children = 0;
  m.parent = kNoSlot;
  ++m.gen;
  (void)pool_.free(s);
}

void CacheEngine::touch(SlotId s) {
  meta_[s].last_access = ++clock_;
  if (meta_[s].in_lru) {
    lru_remove(s);
    lru_insert(s);
  }
}

void CacheEngine::update_evictable(SlotId s) {
  const ChunkMeta& m = meta_[s];
  const bool evictable =
      m.state == ChunkState::kReady && m.children == 0 && pool_.leases(s) == 0;
  if (evictable && !m.in_lru) lru_insert(s);
  if (!evictable && m.in_lru) lru_remove(s);
}

void CacheEngine::lru_insert(SlotId s) {
  ChunkMeta& m = meta_[s];
  Lru& l = lru_[pool_.slot_class(s)];
  // Keep the list ordered by last access. Usually s is the most recent (a touch or a commit);
  // a parent that just became a leaf is older and lands near the cold end, where its evicted
  // child was.
  SlotId after = kNoSlot;  // insert on the cold side of this node; kNoSlot = at the head
  if (l.head != kNoSlot && meta_[l.head].last_access > m.last_access) {
    after = l.tail;
    while (meta_[after].last_access < m.last_access) after = meta_[after].lru_prev;
  }
  m.lru_prev = after;
  m.lru_next = after == kNoSlot ? l.head : meta_[after].lru_next;
  if (m.lru_next != kNoSlot) meta_[m.lru_next].lru_prev = s;
  else l.tail = s;
  if (after != kNoSlot) meta_[after].lru_next = s;
  else l.head = s;
  m.in_lru = true;
}

void CacheEngine::lru_remove(SlotId s) {
  ChunkMeta& m = meta_[s];
  if (!m.in_lru) return;
  Lru& l = lru_[pool_.slot_class(s)];
  if (m.lru_prev != kNoSlot) meta_[m.lru_prev].lru_next = m.lru_next;
  else l.head = m.lru_next;
  if (m.lru_next != kNoSlot) meta_[m.lru_next].lru_prev = m.lru_prev;
  else l.tail = m.lru_prev;
  m.lru_prev = m.lru_next = kNoSlot;
  m.in_lru = false;
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
  lru_remove(s);
  (*sess)->read_leases.push_back(s);
  touch(s);
  const uint64_t bytes = (*entry)->ns.chunk_bytes();
  bytes_out_ += bytes;
  return proto::SlotRef{s, 0, pool_.offset(s), bytes};
}

}  // namespace tierkv::scheduler
