// CacheEngine: the daemon's cache — namespaces, the host tier's chunks, leases, eviction policy.
//
// It turns protocol requests into tier operations: which chunks a prompt has cached, which slots a
// client may write, which it may read, and what to evict when the host pool is full. Data never
// passes through it; clients read and write the shared region directly.
//
// Ownership and threads: one thread (the daemon's server thread) owns the engine and calls every
// method; nothing inside locks. Sessions are the engine's view of connected clients: every lease
// belongs to one, and close_session() reclaims them all (a dead client's read leases are dropped,
// its uncommitted chunks discarded), so no crash of a client can leak a slot or expose a partial
// chunk.
//
// Chunk life cycle in a slot:  free -> pending (leased for writing by one session, invisible to
// lookups) -> ready (indexed, readable) -> free, or ready -> zombie (dropped while leased for
// reading; freed when the last reader releases it).
//
// Eviction is leaf-first LRU: a chunk that another cached chunk extends (its child in some prompt)
// is not a candidate; among leaves that are neither leased nor pending, the least recently used
// goes first. Dropping a leaf can make its parent a leaf, so a cold prefix is eaten from its end,
// and the shared head of many prompts stays cached as long as any of them does.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/protocol.h"
#include "tierkv/status.h"
#include "tierkv/storage/chunk_index.h"
#include "tierkv/storage/host_slot_pool.h"
#include "tierkv/storage/shm_region.h"

namespace tierkv::scheduler {

using SessionId = uint64_t;
using storage::SlotId;

struct CacheOptions {
  uint64_t host_capacity_bytes = 2ull << 30;
  uint64_t slab_bytes = 64ull << 20;
  uint64_t min_slot_bytes = 64ull << 10;
  bool prefault = true;
  uint32_t default_chunk_tokens = 256;
  uint32_t max_namespaces = 4096;
};

class CacheEngine {
 public:
  static Result<std::unique_ptr<CacheEngine>> create(const CacheOptions& options);

  // The host region clients map.
  int host_fd() const { return region_.fd(); }
  uint64_t host_region_bytes() const { return region_.size(); }
  std::byte* host_base() const { return region_.data(); }
  uint32_t default_chunk_tokens() const { return options_.default_chunk_tokens; }

  SessionId open_session();
  struct Reclaimed {
    uint64_t read_leases = 0;
    uint64_t pending_writes = 0;
  };
  // Reclaims every lease of the session and discards its uncommitted chunks.
  Reclaimed close_session(SessionId session);

  Result<Namespace> register_namespace(const Layout& layout, std::string_view tenant,
                                       std::string_view salt);

  Status lookup(const proto::KeysRequest& req, proto::LookupReply& reply);
  Status put_begin(SessionId session, const proto::PutBeginRequest& req,
                   proto::PutBeginReply& reply);
  Status put_commit(SessionId session, std::span<const uint32_t> slots, uint64_t* committed);
  Status put_abort(SessionId session, std::span<const uint32_t> slots, uint64_t* aborted);
  Status load(SessionId session, const proto::KeysRequest& req, proto::LoadReply& reply);
  Status release(SessionId session, std::span<const uint32_t> slots, uint64_t* released);
  // Removes ready chunks; chunks being written are left to their writer.
  Status drop(const proto::DropRequest& req, uint64_t* removed);

  // Fills tiers, namespaces, read_leases, pending_writes; the daemon fills the rest.
  void fill_stats(proto::StatsReply& stats) const;
  void list_namespaces(proto::ListNamespacesReply& reply) const;

  // --- for co-scheduled prefill (PrefillService) ---
  // The registered namespace `ns`, or NotFound naming `op`.
  Result<Namespace> find_registered(NamespaceId ns, const char* op) const;
  // Leases the ready chunk `key` of `ns` for reading by `session` (counted as bytes out; the
  // lookup that found it counted the hit), or NotFound when it is not (or no longer) in the host
  // tier. Release it with release().
  Result<proto::SlotRef> lease_chunk(SessionId session, NamespaceId ns, const ChunkKey& key);

 private:
  enum class ChunkState : uint8_t { kFree, kPending, kReady, kZombie };
  struct ChunkMeta {
    ChunkKey key;
    NamespaceId ns = 0;
    SessionId writer = 0;       // pending: the session that may commit it
    uint64_t last_access = 0;   // logical clock
    uint32_t gen = 0;           // bumped when the slot is freed
    uint32_t parent = storage::kNoSlot;
    uint32_t parent_gen = 0;
    uint32_t children = 0;      // pending or ready chunks that name this one as parent
    uint32_t lru_prev = storage::kNoSlot;
    uint32_t lru_next = storage::kNoSlot;
    bool in_lru = false;
    ChunkState state = ChunkState::kFree;
  };
  struct NamespaceEntry {
    Namespace ns;
    int slot_class = 0;
    uint64_t chunks = 0;
  };
  struct Session {
    std::vector<SlotId> pending;      // leased for writing
    std::vector<SlotId> read_leases;  // leased for reading (a slot may appear more than once)
  };
  struct Lru {  // per size class; head = most recent
    uint32_t head = storage::kNoSlot;
    uint32_t tail = storage::kNoSlot;
  };

  CacheEngine(const CacheOptions& options, storage::ShmRegion region);

  Result<const NamespaceEntry*> find_namespace(NamespaceId ns, const char* op) const;
  Result<Session*> find_session(SessionId session);
  Status check_slot_id(uint32_t slot, size_t index) const;
  // Claims each of `slots` from `held` (marking it taken), or claims none and names the first
  // slot not held. Claimed entries are removed by compact_claimed().
  Status claim(std::vector<SlotId>& held, std::span<const uint32_t> slots, const char* what);
  static void compact_claimed(std::vector<SlotId>& held);

  SlotId allocate(int slot_class);
  bool evict_one(int slot_class);
  void link_parent(SlotId child, SlotId parent);
  void unlink_parent(SlotId child);
  // Removes a ready chunk from the index; frees its slot unless leased (then it turns zombie).
  void remove_ready(SlotId slot);
  void discard_pending(SlotId slot);
  void free_slot(SlotId slot);
  void touch(SlotId slot);
  // Puts the chunk into or out of its class's LRU according to its state.
  void update_evictable(SlotId slot);
  void lru_insert(SlotId slot);
  void lru_remove(SlotId slot);
  NamespaceEntry* ns_entry(NamespaceId ns);

  CacheOptions options_;
  storage::ShmRegion region_;
  storage::HostSlotPool pool_;
  storage::ChunkIndex index_;
  std::vector<ChunkMeta> meta_;  // per slot id
  std::vector<Lru> lru_;         // per size class
  std::unordered_map<NamespaceId, NamespaceEntry> namespaces_;
  std::unordered_map<SessionId, Session> sessions_;
  std::vector<size_t> claimed_scratch_;
  std::vector<SlotId> found_scratch_;
  SessionId next_session_ = 1;
  uint64_t clock_ = 0;

  // Host tier counters (see proto::TierStats).
  uint64_t ready_chunks_ = 0;
  uint64_t pending_writes_ = 0;
  uint64_t read_leases_ = 0;
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0, bytes_in_ = 0, bytes_out_ = 0;
};

}  // namespace tierkv::scheduler
