// NvmeStore: the NVMe tier's mechanism — preallocated O_DIRECT data files, the slab allocator of
// slots inside them, the I/O backend, and the RocksDB index that makes the tier durable.
//
// Data files: one per configured directory (one directory per device), `tierkv-data.bin`, of
// capacity / directories bytes, fallocate'd at start-up. Slabs are striped across them: slab p
// lives in file p % N at offset (p / N) * slab_bytes, so consecutive slabs go to different
// devices. Slots are 4 KiB aligned (every class size is a multiple of 64 KiB).
//
// Index: RocksDB under index_dir. Per chunk, key 'c' + namespace + chunk key, value a
// ChunkRecord; per namespace, key 'n' + namespace id, value the layout, tenant and salt. A chunk
// is recorded only after its data write completed, and its record is deleted before its slot can
// be reused, so after a crash (kill -9) every record names a whole chunk, and a chunk caught
// mid-write has no record: it is absent, never half-present. recover() rebuilds the allocator from
// the records and hands each to the caller, which rebuilds its in-memory index.
//
// Fused chunks (codec.h, CodecId::kFused) refer to representative blocks that live outside the
// chunk, in a RepresentativeStore. The index keeps what such a chunk needs to decode after a
// restart, written with the chunk's record in one atomic batch:
//   'f' + namespace + chunk key -> the chunk's reference list: the RepId of each of its blocks
//        (fused_chunk_references(encoded), repeats included);
//   'r' + RepId (big-endian)     -> the representative: its RepresentativeInfo and bytes, with an
//        xxh3-64 checksum. Written by the batch of the first chunk record that refers to it,
//        deleted by the batch that deletes the last one.
// So a committed chunk record never lacks a representative, and a representative without a
// referring record (an index cut short some other way) is dropped at recovery. recover()
// restores the representatives into the RepresentativeStore under their old ids, holding one
// reference per reference-list entry of the recovered chunks: the NVMe copies' references.
//
// For the caller that writes fused chunks down (the scheduler):
//   1. set_representatives(&store) once, before recover(): the store the codecs share.
//   2. Encode (encode_batch takes the chunk's references in the store), write the bytes to a
//      slot, then commit(records, fused) with each fused chunk's fused_chunk_references(). The
//      references the encoding took now belong to the NVMe copy. If the write fails instead,
//      give them back with the codec's release(encoded).
//   3. erase(chunks) deletes the records and the representatives no remaining chunk refers to,
//      and releases the erased chunks' references in the store (do not release them again).
//   A chunk written with commit(records) alone must not be fused: after a restart its
//   representatives would be missing.
//
// Policy (what goes down, what is evicted) is the caller's; this class has none. Thread safety:
// none; one owner thread (the representative store it is given is thread-safe).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"
#include "tierkv/status.h"
#include "tierkv/storage/io_backend.h"
#include "tierkv/storage/representative_store.h"
#include "tierkv/storage/slab_slot_pool.h"

namespace rocksdb {
class DB;
}

namespace tierkv::storage {

struct NvmeOptions {
  std::vector<std::string> directories;  // one data file in each; empty = tier off
  uint64_t capacity_bytes = 0;           // over all directories
  uint64_t slab_bytes = 256ull << 20;
  uint64_t min_slot_bytes = 64ull << 10;
  uint32_t queue_depth = 32;
  uint64_t async_min_bytes = 4ull << 20;  // IoBackendOptions::async_min_bytes
  std::string index_dir;  // empty = <directories[0]>/index
  FaultPlan faults;       // tests only
};

// Wire-stable and stored: never renumber.
enum class Codec : uint8_t { kRaw = 0 };

// One chunk's index entry. Fixed-size, stored as is (little-endian) after a version byte.
struct ChunkRecord {
  NamespaceId ns = 0;
  ChunkKey key;
  ChunkKey parent;  // kRootKey for chunk 0 (or when unknown)
  SlotId slot = kNoSlot;
  uint32_t file = 0;        // derived from slot; kept for tools reading the index
  uint64_t offset = 0;      // byte offset in that file
  uint32_t stored_bytes = 0;   // bytes on disk that the checksum covers
  uint32_t logical_bytes = 0;  // chunk bytes once decoded
  uint64_t checksum = 0;       // xxh3-64 of the stored bytes
  uint64_t created_ms = 0;     // unix time
  uint64_t last_access_ms = 0;
  uint8_t slot_class = 0;
  Codec codec = Codec::kRaw;
  uint8_t pad[6] = {};
};

// A fused chunk committed with its record: the record's namespace and key, and the
// representatives its encoded bytes refer to (fused_chunk_references()).
struct FusedChunkRefs {
  NamespaceId ns = 0;
  ChunkKey key;
  std::span<const RepId> reps;
};

struct RecoveryReport {
  uint64_t chunks = 0;
  uint64_t namespaces = 0;
  uint64_t discarded = 0;  // records that did not fit the current files (removed)
  uint64_t millis = 0;
  uint64_t fused_chunks = 0;            // recovered chunks with a reference list
  uint64_t representatives = 0;         // restored into the representative store
  uint64_t orphan_representatives = 0;  // records no recovered chunk refers to (removed)
};

class NvmeStore {
 public:
  static Result<std::unique_ptr<NvmeStore>> open(const NvmeOptions& options);
  ~NvmeStore();

  // The representative store fused chunks' representatives live in (shared with the codecs;
  // must outlive this). Set it before recover() and before committing fused chunks.
  void set_representatives(RepresentativeStore* reps) { reps_ = reps; }

  // Reads the whole index: calls on_namespace for each registered namespace, then on_chunk for
  // each chunk, and restores the allocator. Call once, before any allocate(). Fused chunks'
  // representatives are restored into the representative store first; a chunk whose reference
  // list names a representative the index lacks (or holds corrupt), or any fused chunk when no
  // store was set, is removed (counted as discarded), since it could not be decoded.
  Status recover(const std::function<void(const Namespace&)>& on_namespace,
                 const std::function<void(const ChunkRecord&)>& on_chunk, RecoveryReport* report);

  // --- slots ---
  Result<int> class_for(uint64_t bytes) const { return pool_.class_for(bytes); }
  SlotId allocate(int cls) { return pool_.allocate(cls); }
  Status free(SlotId slot) { return pool_.free(slot); }
  uint64_t slot_bytes(SlotId slot) const { return pool_.slot_bytes(slot); }
  int slot_class(SlotId slot) const { return pool_.slot_class(slot); }
  int num_classes() const { return pool_.num_classes(); }
  uint32_t max_slot_ids() const { return pool_.max_slot_ids(); }
  uint64_t capacity_bytes() const { return pool_.capacity_bytes(); }
  uint64_t used_bytes() const { return pool_.used_bytes(); }
  // Where a slot's bytes lie.
  uint32_t file_of(SlotId slot) const;
  uint64_t file_offset(SlotId slot) const;

  // --- I/O: lengths are rounded up to 4 KiB; `buf` 4 KiB aligned, at least that long ---
  bool queue_write(SlotId slot, const std::byte* buf, uint32_t length, uint64_t token);
  bool queue_read(SlotId slot, std::byte* buf, uint32_t length, uint64_t token);
  IoBackend& io() { return *io_; }

  // --- index ---
  Status put_namespace(const Namespace& ns);
  // Records chunks whose data writes completed, in one atomic batch.
  Status commit(std::span<const ChunkRecord> records);
  // The same, and for the fused ones among them (each `fused` entry names one of `records`) their
  // reference lists and every representative the index does not hold yet, taken from the
  // representative store, in the same batch. InvalidArgument, with nothing written, if there is
  // no store, an entry names no record, or a representative is not live in the store. A chunk
  // key is committed only while it has no record (erase() it first): a fused record written
  // over would keep its old list's representatives on disk until the next recovery.
  Status commit(std::span<const ChunkRecord> records, std::span<const FusedChunkRefs> fused);
  // Deletes chunks' records (before their slots are reused); for fused chunks also their
  // reference lists and the representatives no remaining record refers to, in the same batch,
  // and then releases their references in the representative store (an error there, a reference
  // the store did not hold, is returned after the index has changed).
  Status erase(std::span<const std::pair<NamespaceId, ChunkKey>> chunks);
  Status erase_namespace(NamespaceId ns);

  // Every chunk record of an index no daemon has open (tools and tests): read-only.
  static Result<std::vector<ChunkRecord>> read_index(const std::string& index_dir);

  static uint64_t checksum(std::span<const std::byte> stored);
  static uint32_t io_length(uint64_t bytes) {
    return static_cast<uint32_t>((bytes + kIoAlign - 1) / kIoAlign * kIoAlign);
  }
  static constexpr uint64_t kIoAlign = 4096;

  const NvmeOptions& options() const { return options_; }
  // Representatives the index holds (those its fused chunk records refer to).
  uint64_t persisted_representatives() const { return disk_refs_.size(); }

 private:
  NvmeStore(const NvmeOptions& options, SlabSlotPool pool);

  NvmeOptions options_;
  SlabSlotPool pool_;
  std::vector<int> fds_;
  std::unique_ptr<IoBackend> io_;
  std::unique_ptr<rocksdb::DB> db_;

  // recover()'s part for fused chunks: restores their representatives, removes from `records`
  // (and the index and the allocator) the chunks that cannot be decoded, and the index's orphans.
  Status recover_fused(std::vector<ChunkRecord>& records, RecoveryReport& rep);

  RepresentativeStore* reps_ = nullptr;
  // Per representative in the index: how many reference-list entries of recorded chunks name it.
  std::unordered_map<RepId, uint32_t> disk_refs_;
  uint64_t fused_chunks_ = 0;  // recorded chunks with a reference list
};

}  // namespace tierkv::storage
