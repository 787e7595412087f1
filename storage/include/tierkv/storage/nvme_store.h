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
// Policy (what goes down, what is evicted) is the caller's; this class has none. Thread safety:
// none; one owner thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"
#include "tierkv/status.h"
#include "tierkv/storage/io_backend.h"
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

struct RecoveryReport {
  uint64_t chunks = 0;
  uint64_t namespaces = 0;
  uint64_t discarded = 0;  // records that did not fit the current files (removed)
  uint64_t millis = 0;
};

class NvmeStore {
 public:
  static Result<std::unique_ptr<NvmeStore>> open(const NvmeOptions& options);
  ~NvmeStore();

  // Reads the whole index: calls on_namespace for each registered namespace, then on_chunk for
  // each chunk, and restores the allocator. Call once, before any allocate().
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
  // Deletes chunks' records (before their slots are reused).
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

 private:
  NvmeStore(const NvmeOptions& options, SlabSlotPool pool);

  NvmeOptions options_;
  SlabSlotPool pool_;
  std::vector<int> fds_;
  std::unique_ptr<IoBackend> io_;
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace tierkv::storage
