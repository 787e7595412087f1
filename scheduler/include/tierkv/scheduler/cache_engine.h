// CacheEngine: the daemon's cache — namespaces, the host and NVMe tiers' chunks, leases, and the
// policy that moves chunks between tiers.
//
// It turns protocol requests into tier operations: which chunks a prompt has cached and where,
// which slots a client may write, which it may read, what to write down to NVMe, what to evict.
// Chunk bytes never pass through it: clients read and write the shared host region in place, and
// NVMe reads and writes go by DMA between that region and the disk (storage::NvmeStore).
//
// Ownership and threads: one thread (the daemon's server thread) owns the engine and calls every
// method, poll_io() included, which runs the NVMe completions; nothing inside locks. The only
// other threads are the NVMe tier's verify workers (storage::ChecksumWorkers): they hash host
// slots the engine keeps in their loading state (never freed or reused meanwhile) and hand the
// results back to poll_io(). Sessions are the engine's view of connected clients: every lease
// belongs to one, and close_session() reclaims them all (read leases dropped, uncommitted chunks
// discarded, loads in progress cancelled), so no crash of a client can leak a slot or expose a
// partial chunk.
//
// Host chunk life cycle in a slot:  free -> pending (leased for writing by one session, invisible
// to lookups) -> ready (indexed, readable) -> free, or ready -> zombie (dropped while leased;
// freed when the last lease goes); and free -> loading (being read up from NVMe, the read checked
// against the chunk's checksum, on a verify worker when there are any) -> ready, or -> zombie
// when the read or the check fails.
// NVMe chunk life cycle in a disk slot:  free -> writing (data write in flight; no index record)
// -> ready (recorded in the index) -> free (record deleted first).
//
// Movement: a committed chunk is written down to NVMe at once (write-through) or once the host
// tier runs short of free space (write-back), in commit order, in batches up to the I/O queue
// depth. A namespace whose NVMe codec (NvmeTierOptions::codec, per tenant codec_by_tenant) is not
// raw has its chunks encoded on the way down and decoded on the way up, off this thread: the
// engine keeps its lease on the host slot while an encode worker writes the encoded chunk into a
// staging buffer, then writes the buffer down (O_DIRECT, 4 KiB rounded) to a disk slot sized by
// the encoded size; a load reads the encoded chunk into a staging buffer and a decode worker
// verifies it (the index's checksum, then the chunk's own) and decodes it into the leased host
// slot. Results come back through the same eventfd as I/O completions (io_fd()) and are applied
// by poll_io() on this thread. Fused chunks refer to representative blocks kept in one
// RepresentativeStore that the NVMe index persists: a fused chunk's references pass to the index
// with its record, and go with it. The host tier always holds raw chunks; raw chunks on NVMe move
// by DMA between the host slot and the disk, without staging. Staging memory is bounded
// (NvmeTierOptions::staging_bytes): when it or the encode queue is full, write-down waits (and
// host eviction falls back as for any unwritten chunk); a staged read waits for a buffer, and
// reads go first. Host eviction takes the least recently used leaf that already has a copy below
// (or that no tier below wants); only when the coldest leaves are all unwritten does it drop one
// (counted as dropped_unwritten). A load of a chunk that lies only on NVMe reads it into a host
// slot (promotion); NVMe evicts by the same leaf-first policy when it needs room.
//
// GPU tier (cache_engine_gpu.cc, GpuTier): a host chunk loaded often enough is copied up into the
// daemon's GPU pool, asynchronously (poll_gpu() runs finished copies); lookups then report it in
// tier GPU, and gpu_load hands clients that opened the pool (gpu_attach) GPU-slot leases for it.
// A GPU copy goes when its host chunk leaves RAM.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/protocol.h"
#include "tierkv/scheduler/gpu_tier.h"
#include "tierkv/scheduler/leaf_first_lru.h"
#include "tierkv/scheduler/tier_counters.h"
#include "tierkv/status.h"
#include "tierkv/storage/checksum_workers.h"
#include "tierkv/storage/chunk_index.h"
#include "tierkv/storage/codec.h"
#include "tierkv/storage/gpu_memory.h"
#include "tierkv/storage/nvme_store.h"
#include "tierkv/storage/shm_region.h"
#include "tierkv/storage/slab_slot_pool.h"

namespace tierkv::scheduler {

class CodecStages;
struct CodecJob;
class StagingPool;

using SessionId = uint64_t;
using storage::SlotId;

struct NvmeTierOptions {
  storage::NvmeOptions store;  // store.directories empty = tier off
  bool write_through = false;  // false: write-back
  // Write-back starts writing down when less than this fraction of the host tier is free.
  double writeback_free_fraction = 0.25;
  // Tenants whose chunks go to NVMe; empty = every tenant.
  std::vector<std::string> tenants;
  // After disk full (ENOSPC), how long the tier waits before it tries to admit again.
  std::chrono::milliseconds retry_after_full{30000};
  // The codec chunks are written down with (a storage::CodecConfig string), and per tenant
  // overrides of it. "raw" stores a chunk's bytes as they are. Fused chunks' representatives
  // are kept in the NVMe index beside them (NvmeStore), so they decode after a restart.
  std::string codec = "raw";
  std::vector<std::pair<std::string, std::string>> codec_by_tenant;
  uint32_t encode_threads = 0;  // 0 = a quarter of the cores, at least 1
  uint32_t decode_threads = 0;  // 0 = a quarter of the cores, at least 1
  uint64_t staging_bytes = 256ull << 20;  // staging memory for encoded chunks' I/O
  // Threads that check the checksums of chunks read from NVMe, so the server thread only submits
  // and reaps; 0 = the server thread checks them itself.
  uint32_t verify_threads = 2;
};

// Parses an NVMe codec setting (`key` names it in messages, e.g. "nvme.codec"): any
// storage::CodecConfig string.
Result<storage::CodecConfig> parse_nvme_codec(std::string_view key, std::string_view spec);

struct CacheOptions {
  uint64_t host_capacity_bytes = 2ull << 30;
  uint64_t slab_bytes = 64ull << 20;
  uint64_t min_slot_bytes = 64ull << 10;
  bool prefault = true;
  uint32_t default_chunk_tokens = 256;
  uint32_t max_namespaces = 4096;
  NvmeTierOptions nvme;
  GpuTierOptions gpu;  // capacity_bytes 0 = tier off
};

class CacheEngine {
 public:
  // Creates the host region and, when configured, opens the NVMe tier and recovers its chunks
  // from the index, and opens the GPU tier: on `gpu_memory` if given (tests), else on the CUDA
  // device options.gpu names. A GPU tier that cannot be opened is off (gpu_status() says why);
  // the engine runs without it.
  static Result<std::unique_ptr<CacheEngine>> create(
      const CacheOptions& options, std::unique_ptr<storage::GpuMemory> gpu_memory = nullptr);
  ~CacheEngine();

  // The host region clients map.
  int host_fd() const { return region_.fd(); }
  uint64_t host_region_bytes() const { return region_.size(); }
  std::byte* host_base() const { return region_.data(); }
  uint32_t default_chunk_tokens() const { return options_.default_chunk_tokens; }
  bool nvme_enabled() const { return nvme_ != nullptr; }
  // Readable when NVMe completions may be waiting; -1 without the tier. Then call poll_io().
  int io_fd() const;
  // Runs finished NVMe reads and writes and finished checksum checks (and the callbacks of loads
  // they complete), then starts queued ones. Never blocks.
  void poll_io();
  // Tests only: while held, the verify workers start no new check, so a test can act while a
  // chunk's read has completed and its check is still outstanding. No-op without workers.
  void hold_verification_for_test(bool hold);
  const storage::RecoveryReport& recovery() const { return recovery_; }

  SessionId open_session();
  struct Reclaimed {
    uint64_t read_leases = 0;
    uint64_t pending_writes = 0;
    uint64_t loads_cancelled = 0;
    uint64_t gpu_leases = 0;
  };
  // Reclaims every lease of the session, discards its uncommitted chunks, cancels its loads
  // (their callbacks are dropped without being called).
  Reclaimed close_session(SessionId session);

  Result<Namespace> register_namespace(const Layout& layout, std::string_view tenant,
                                       std::string_view salt);

  Status lookup(const proto::KeysRequest& req, proto::LookupReply& reply);
  Status put_begin(SessionId session, const proto::PutBeginRequest& req,
                   proto::PutBeginReply& reply);
  Status put_commit(SessionId session, std::span<const uint32_t> slots, uint64_t* committed);
  Status put_abort(SessionId session, std::span<const uint32_t> slots, uint64_t* aborted);

  // Leases the prompt's leading cached chunks for reading, reading up from NVMe those only there.
  // `done` runs once: at once when every chunk is in host RAM, else from poll_io() when the reads
  // finish. A chunk whose read fails (I/O error, checksum) ends the prefix there. `req` need not
  // outlive the call.
  using LoadDone = std::function<void(Status, const proto::LoadReply&)>;
  void load(SessionId session, const proto::KeysRequest& req, LoadDone done);
  Status prefetch(const proto::KeysRequest& req, proto::PrefetchReply& reply);
  Status release(SessionId session, std::span<const uint32_t> slots, uint64_t* released);
  // Evict removes ready chunks from host RAM only; delete removes them from every tier. Chunks
  // being written are left to their writer.
  Status evict(const proto::DropRequest& req, uint64_t* removed);
  Status remove(const proto::DropRequest& req, uint64_t* removed);

  // Starts writing down every host chunk not yet on NVMe; reports progress.
  Status flush(proto::FlushReply& reply);
  using VerifyDone = std::function<void(Status, const proto::VerifyReply&)>;
  void verify(const proto::VerifyRequest& req, VerifyDone done);

  // Fills tiers, nvme, the codec figures, namespaces, read_leases, pending_writes; the daemon
  // fills the rest.
  void fill_stats(proto::StatsReply& stats) const;
  void list_namespaces(proto::ListNamespacesReply& reply) const;

  // --- for co-scheduled prefill (PrefillService) ---
  // The registered namespace `ns`, or NotFound naming `op`.
  Result<Namespace> find_registered(NamespaceId ns, const char* op) const;
  // Leases the ready chunk `key` of `ns` for reading by `session` (counted as bytes out; the
  // lookup that found it counted the hit), or NotFound when it is not (or no longer) in the host
  // tier. Release it with release().
  Result<proto::SlotRef> lease_chunk(SessionId session, NamespaceId ns, const ChunkKey& key);

  // --- GPU tier (cache_engine_gpu.cc) ---
  [[nodiscard]] bool gpu_enabled() const { return gpu_ != nullptr; }
  // "on: <device>" or "off (<why>)".
  [[nodiscard]] const std::string& gpu_status() const { return gpu_status_; }
  // Readable when promotion copies may have finished; -1 without the tier. Then call poll_gpu().
  [[nodiscard]] int gpu_fd() const;
  // Runs finished promotion copies, then starts queued ones. Never blocks.
  void poll_gpu();
  // Hands the session the GPU pool (IPC handle, device) and lets it gpu_load.
  Status gpu_attach(SessionId session, proto::GpuAttachReply& reply);
  // load(), except that chunks with a copy in the GPU tier come as GPU-slot leases (pool
  // kGpuPool); the rest are host leases as ever. The session must have attached.
  void load_gpu(SessionId session, const proto::KeysRequest& req, LoadDone done);
  Status gpu_release(SessionId session, std::span<const uint32_t> slots, uint64_t* released);

 private:
  enum class ChunkState : uint8_t { kFree, kPending, kReady, kZombie, kLoading };
  // A staging buffer (StagingPool::Buffer): a run of 4 KiB pages; pages == 0 is none.
  struct Staged {
    uint32_t first = 0;
    uint32_t pages = 0;
  };
  struct ChunkMeta {  // per host slot
    ChunkKey key;
    ChunkKey parent_key;
    NamespaceId ns = 0;
    SessionId writer = 0;       // pending: the session that may commit it
    uint32_t gen = 0;           // bumped when the slot is freed
    SlotId loading_from = storage::kNoSlot;  // loading: the disk slot being read
    Staged staging;             // being encoded (ready) or read and decoded (loading)
    ChunkState state = ChunkState::kFree;
    bool on_disk = false;       // ready: an NVMe copy exists
    bool writing_down = false;  // ready: being written to NVMe (the engine holds a lease)
    bool deleted = false;       // zombie: removed from every tier, so its write-down is void
  };
  enum class DiskState : uint8_t { kFree, kWriting, kReady };
  struct DiskMeta {  // per NVMe slot
    ChunkKey key;
    ChunkKey parent_key;
    NamespaceId ns = 0;
    uint64_t checksum = 0;
    uint64_t created_ms = 0;
    uint32_t stored_bytes = 0;
    uint32_t logical_bytes = 0;
    uint32_t readers = 0;                // reads in flight
    SlotId source = storage::kNoSlot;    // writing: the host slot written from
    Staged staging;                      // writing an encoded chunk: the buffer written from
    DiskState state = DiskState::kFree;
    storage::Codec codec = storage::Codec::kRaw;
    bool doomed = false;                 // ready: remove once the last reader is done
  };
  struct NamespaceEntry {
    Namespace ns;
    int slot_class = 0;
    uint64_t chunks = 0;  // in host RAM
    uint64_t disk_chunks = 0;
    bool to_disk = false;
    uint16_t codec = 0;  // NVMe codec: index into the codec stages' table; 0 = raw
  };
  struct Session {
    std::vector<SlotId> pending;      // leased for writing
    std::vector<SlotId> read_leases;  // leased for reading (a slot may appear more than once)
  };
  struct LoadOp {
    SessionId session = 0;
    uint64_t bytes = 0;
    uint64_t asked = 0;             // keys in the request
    std::vector<SlotId> slots;      // leased by the engine for this op, in key order
    uint32_t waiting = 0;           // slots still loading
    LoadDone done;
  };
  struct VerifyOp {
    proto::VerifyReply reply;
    uint32_t waiting = 0;
    std::vector<std::pair<SlotId, std::byte*>> reads;  // disk slot, scratch buffer
    VerifyDone done;
  };
  struct PendingIo {
    bool write = false;
    SlotId disk = storage::kNoSlot;
    std::byte* buf = nullptr;
    uint32_t length = 0;
    uint64_t token = 0;
  };

  CacheEngine(const CacheOptions& options, storage::ShmRegion region);
  Status open_nvme();

  Result<const NamespaceEntry*> find_namespace(NamespaceId ns, const char* op) const;
  Result<Session*> find_session(SessionId session);
  Status check_slot_id(uint32_t slot, size_t index) const;
  Status claim(std::vector<SlotId>& held, std::span<const uint32_t> slots, const char* what);
  static void compact_claimed(std::vector<SlotId>& held);

  // --- host tier ---
  SlotId allocate(int slot_class);
  bool evict_one(int slot_class);
  SlotId pick_victim(uint32_t coldest) const;
  void link_host_parent(SlotId child, SlotId parent);
  void unlink_host_parent(SlotId child);
  enum class Removal : uint8_t { kEvicted, kDropped, kDeleted };
  // kEvicted: to make room; kDropped: from RAM on request (a write-down in flight still lands);
  // kDeleted: from every tier.
  void remove_ready(SlotId slot, Removal why);
  bool wants_disk(std::string_view tenant, uint64_t chunk_bytes) const;
  void discard_pending(SlotId slot);
  void free_slot(SlotId slot);
  void unlease(SlotId slot);
  void touch(SlotId slot) { host_lru_.touch(slot); }
  void update_evictable(SlotId slot);
  bool is_dirty(const ChunkMeta& m) const;
  NamespaceEntry* ns_entry(NamespaceId ns);
  Status drop(const proto::DropRequest& req, bool every_tier, uint64_t* removed);
  void fill_codec_stats(proto::StatsReply& stats) const;

  // --- NVMe tier ---
  uint32_t disk_find(NamespaceId ns, const ChunkKey& key) const;  // ready disk slot or kAbsent
  // Starts reading disk chunk `d` into a new host slot; kNoSlot when no host slot can be had.
  SlotId start_promotion(SlotId d, int host_class);
  void issue(const PendingIo& io);
  void drain_backlog();
  void pump_writes();
  bool start_write_down(SlotId host);
  // Allocates a disk slot for `stored_bytes` and queues the write of `src` (the host slot, or a
  // staging buffer) to it for host chunk `host`, whose lease the caller holds. Returns the disk
  // slot, or kNoSlot when none can be had.
  SlotId issue_write_down(SlotId host, const std::byte* src, uint32_t stored_bytes,
                          uint32_t logical_bytes, storage::Codec codec, uint64_t checksum,
                          Staged staging);
  // --- encoded chunks (cache_engine_codec.cc) ---
  // Parses the configured codecs into codec_table_ (before recovery, which assigns namespaces
  // their codec); then, after recovery, starts the staging pool and the codec stages if any
  // codec is encoded or encoded chunks were recovered.
  Status build_codec_table();
  Status start_codec_stages();
  uint16_t choose_codec(const Namespace& ns) const;
  bool start_encode(SlotId host);
  void finish_encode(CodecJob& job);
  void start_staged_read(SlotId host);
  void finish_staged_read(SlotId host, int32_t result);
  void finish_decode(CodecJob& job);
  void poll_codecs();
  void free_staging(Staged& staging);
  // Drops a reference on each of `refs` in the representative store.
  void release_references(std::span<const storage::RepId> refs);
  // Lets go of a host chunk whose write-down will not happen now: back in line while it is in RAM
  // (first if `retry_first`), lost (counted) if it left RAM meanwhile.
  void requeue_write_down(SlotId host, bool chunk_alive, bool retry_first);
  SlotId allocate_disk(int disk_class);
  void remove_disk(SlotId d);
  void update_disk_evictable(SlotId d);
  void finish_writes(std::span<const storage::IoCompletion> done);
  // A write-down that will not land: frees its disk slot and lets go of its host chunk, which
  // goes back in line if it is still in RAM.
  void abandon_write(SlotId d, bool chunk_alive, bool retry_first);
  // A promotion's read finished: checks it (inline or on a verify worker), then end_promotion().
  void finish_read(SlotId host, int32_t result);
  // Whether the checksum of the chunk loading into `host` is right; counts and logs a mismatch.
  bool checksum_ok(SlotId host, uint64_t checksum);
  // The promotion into `host` is over: ready, or dropped when !ok; completes the loads it held up.
  void end_promotion(SlotId host, bool ok);
  // NvmeStore::checksum on this thread, timed for stats.
  uint64_t hash_inline(std::span<const std::byte> bytes);
  void finish_verify_read(uint64_t op, uint32_t index, int32_t result);
  void complete_load(LoadOp op);
  void release_disk_reader(SlotId d);
  bool admitting();
  void recover_nvme();

  // --- GPU tier ---
  void open_gpu(std::unique_ptr<storage::GpuMemory> memory);
  // Host chunks read by a load or hand-over: counted towards promotion.
  void gpu_count_reads(std::span<const proto::SlotRef> slots);
  void gpu_count_read(SlotId slot);
  // Tier of ready host chunk `slot` for a lookup: GPU where it has a copy there.
  proto::Tier host_tier(SlotId slot);
  void pump_promotions();
  void fill_gpu_stats(proto::StatsReply& stats) const;

  CacheOptions options_;
  storage::ShmRegion region_;
  storage::SlabSlotPool pool_;
  storage::ChunkIndex index_;
  std::vector<ChunkMeta> meta_;  // per host slot
  LeafFirstLru host_lru_;
  std::unordered_map<NamespaceId, NamespaceEntry> namespaces_;
  std::unordered_map<SessionId, Session> sessions_;
  std::vector<size_t> claimed_scratch_;
  std::vector<SlotId> found_scratch_;
  proto::LoadReply load_reply_;
  SessionId next_session_ = 1;

  // NVMe tier; all empty when it is off.
  // Fused chunks' representatives (null without the NVMe tier). Declared before everything that
  // refers to it (the store, the codec stages), so it goes last.
  std::unique_ptr<storage::RepresentativeStore> representatives_;
  std::unique_ptr<storage::NvmeStore> nvme_;
  // Declared after nvme_ (destroyed first): its workers signal nvme_'s completion fd.
  std::unique_ptr<storage::ChecksumWorkers> verifier_;
  std::vector<storage::ChecksumDone> verified_;
  std::unique_ptr<storage::ChunkIndex> disk_index_;
  std::vector<DiskMeta> disk_;
  std::unique_ptr<LeafFirstLru> disk_lru_;
  std::deque<std::pair<SlotId, uint32_t>> dirty_fifo_;  // host slot, generation, commit order
  std::deque<PendingIo> backlog_;                       // waiting for room in the I/O queue
  std::unordered_map<uint64_t, LoadOp> loads_;
  std::unordered_multimap<SlotId, uint64_t> load_waiters_;  // loading host slot -> load op
  std::unordered_map<uint64_t, VerifyOp> verifies_;
  uint64_t next_op_ = 1;
  std::vector<storage::IoCompletion> completions_;
  std::vector<storage::IoCompletion> write_scratch_;
  std::vector<storage::ChunkRecord> records_scratch_;
  bool flush_requested_ = false;
  bool disk_full_ = false;
  // Encoded chunks; null when no namespace's codec is encoded and none was recovered.
  std::unique_ptr<StagingPool> staging_;
  std::unique_ptr<CodecStages> codec_stages_;
  std::vector<storage::CodecConfig> codec_table_;  // [0] = raw
  std::vector<std::pair<std::string, uint16_t>> tenant_codecs_;  // tenant -> index
  uint16_t default_codec_ = 0;
  std::deque<SlotId> staged_waiters_;  // loading host slots waiting for a staging buffer
  std::vector<CodecJob> codec_done_;
  // Per disk slot being written with a fused chunk: the references the chunk holds until the
  // index takes them.
  std::unordered_map<SlotId, std::vector<storage::RepId>> fused_writes_;
  std::vector<storage::FusedChunkRefs> fused_scratch_;
  std::chrono::steady_clock::time_point disk_full_since_{};
  storage::RecoveryReport recovery_;

  // Counters (see proto::TierStats, proto::NvmeStats).
  TierCounters host_counters_;  // chunks: ready host slots
  TierCounters disk_counters_;  // chunks: ready disk slots; bytes in and out as stored (encoded)
  uint64_t pending_writes_ = 0;
  uint64_t read_leases_ = 0;
  uint64_t disk_logical_bytes_ = 0, disk_stored_bytes_ = 0;
  uint64_t dirty_chunks_ = 0, writes_in_flight_ = 0, reads_in_flight_ = 0;
  uint64_t read_errors_ = 0, write_errors_ = 0, checksum_failures_ = 0, dropped_unwritten_ = 0;
  uint64_t written_total_ = 0, unwritable_ = 0;
  uint64_t encodes_in_flight_ = 0, decodes_in_flight_ = 0, encode_errors_ = 0, encode_waits_ = 0;
  uint64_t disk_encoded_chunks_ = 0;
  uint64_t polls_ = 0, poll_ns_ = 0, reads_verified_ = 0, verified_inline_ = 0;
  uint64_t inline_hash_ns_ = 0;

  // GPU tier; null when off. Declared last: destroyed first, so copies from the host region end
  // (and it is unregistered) before the region is unmapped.
  std::unique_ptr<GpuTier> gpu_;
  std::string gpu_status_;
  std::vector<SlotId> gpu_ended_;
  std::vector<uint32_t> gpu_host_release_;
  proto::LoadReply gpu_reply_;
};

}  // namespace tierkv::scheduler
