#include "tierkv/storage/nvme_store.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

// On x86-64 the library's dispatching entry point picks the widest vector unit the CPU has
// (AVX2, AVX-512) at run time; the inline header alone would be built for the baseline (SSE2).
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#define TIERKV_XXH3_64 XXH3_64bits_dispatch
#else
#include <xxhash.h>
#define TIERKV_XXH3_64 XXH3_64bits
#endif

namespace tierkv::storage {

namespace {

constexpr uint8_t kRecordVersion = 1;
constexpr char kChunkPrefix = 'c';
constexpr char kNamespacePrefix = 'n';
constexpr const char* kDataFileName = "tierkv-data.bin";

std::string chunk_db_key(NamespaceId ns, const ChunkKey& key) {
  std::string k(1 + sizeof(ns) + sizeof(key), '\0');
  k[0] = kChunkPrefix;
  // Big-endian namespace so a namespace's chunks are contiguous in key order.
  for (int i = 0; i < 8; ++i) k[1 + i] = static_cast<char>(ns >> (56 - 8 * i));
  std::memcpy(k.data() + 9, &key, sizeof(key));
  return k;
}

std::string namespace_db_key(NamespaceId ns) {
  std::string k(9, '\0');
  k[0] = kNamespacePrefix;
  for (int i = 0; i < 8; ++i) k[1 + i] = static_cast<char>(ns >> (56 - 8 * i));
  return k;
}

Status from_rocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  return Status::IoError(what + ": " + s.ToString());
}

}  // namespace

NvmeStore::NvmeStore(const NvmeOptions& options, SlabSlotPool pool)
    : options_(options), pool_(std::move(pool)) {}

NvmeStore::~NvmeStore() {
  io_.reset();  // no I/O in flight past the files' lifetime
  db_.reset();
  for (int fd : fds_) ::close(fd);
}

Result<std::unique_ptr<NvmeStore>> NvmeStore::open(const NvmeOptions& o) {
  if (o.directories.empty()) return Status::InvalidArgument("nvme.directories is empty");
  SlotPoolOptions pool_options{"nvme", 0, o.slab_bytes, o.min_slot_bytes};
  // Chunks written down together (a prompt's, in commit order) land in offset order and are read
  // back as one sequential stream, whatever slots earlier chunks freed.
  pool_options.lowest_first = true;
  // Whole slabs per file, the same number in every file.
  const uint64_t n = o.directories.size();
  const uint64_t slabs_per_file = o.capacity_bytes / n / o.slab_bytes;
  pool_options.region_bytes = slabs_per_file * n * o.slab_bytes;
  if (slabs_per_file == 0) {
    return Status::InvalidArgument("nvme.capacity = " + std::to_string(o.capacity_bytes) +
                                   " gives less than one slab (nvme.slab_size = " +
                                   std::to_string(o.slab_bytes) + ") per directory");
  }
  TIERKV_RETURN_IF_ERROR(pool_options.validate());
  if (o.slab_bytes > (1ull << 30)) {
    return Status::InvalidArgument("nvme.slab_size = " + std::to_string(o.slab_bytes) +
                                   " exceeds 1 GiB");
  }
  std::unique_ptr<NvmeStore> store(new NvmeStore(o, SlabSlotPool(pool_options)));
  const uint64_t file_bytes = slabs_per_file * o.slab_bytes;

  namespace fs = std::filesystem;
  for (const std::string& dir : o.directories) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Status::IoError("nvme.directories: cannot create " + dir + ": " + ec.message());
    const std::string path = (fs::path(dir) / kDataFileName).string();
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return Status::FromErrno("open " + path + " with O_DIRECT (the file system must support it)",
                               errno);
    }
    store->fds_.push_back(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return Status::FromErrno("stat " + path, errno);
    if (static_cast<uint64_t>(st.st_size) < file_bytes) {
      // Reserve every block now: the tier fails at start-up, not with ENOSPC under load.
      const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(file_bytes));
      if (rc != 0) {
        return Status::FromErrno("fallocate " + std::to_string(file_bytes) + " bytes for " + path,
                                 rc);
      }
    }
  }

  IoBackendOptions io_options;
  io_options.queue_depth = o.queue_depth;
  io_options.async_min_bytes = o.async_min_bytes;
  auto io = make_uring_backend(io_options);
  if (!io.ok()) return io.status();
  store->io_ = std::move(io).value();
  if (o.faults.any()) store->io_ = make_fault_injecting_backend(std::move(store->io_), o.faults);
  TIERKV_RETURN_IF_ERROR(store->io_->register_files(store->fds_));

  const std::string index_dir =
      o.index_dir.empty() ? (fs::path(o.directories.front()) / "index").string() : o.index_dir;
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.max_open_files = 256;
  db_options.keep_log_file_num = 4;
  // Small values, point lookups are never needed (the index lives in memory): a modest memtable.
  db_options.write_buffer_size = 16 << 20;
  rocksdb::DB* db = nullptr;
  TIERKV_RETURN_IF_ERROR(
      from_rocks(rocksdb::DB::Open(db_options, index_dir, &db), "open the index at " + index_dir));
  store->db_.reset(db);
  return store;
}

uint32_t NvmeStore::file_of(SlotId slot) const {
  const uint64_t slab = pool_.offset(slot) / options_.slab_bytes;
  return static_cast<uint32_t>(slab % fds_.size());
}

uint64_t NvmeStore::file_offset(SlotId slot) const {
  const uint64_t off = pool_.offset(slot);
  const uint64_t slab = off / options_.slab_bytes;
  return slab / fds_.size() * options_.slab_bytes + off % options_.slab_bytes;
}

bool NvmeStore::queue_write(SlotId slot, const std::byte* buf, uint32_t length, uint64_t token) {
  IoRequest r;
  r.op = IoOp::kWrite;
  r.file = file_of(slot);
  r.offset = file_offset(slot);
  r.buf = const_cast<std::byte*>(buf);  // written from, never to
  r.length = io_length(length);
  r.user_data = token;
  return io_->queue(r);
}

bool NvmeStore::queue_read(SlotId slot, std::byte* buf, uint32_t length, uint64_t token) {
  IoRequest r;
  r.op = IoOp::kRead;
  r.file = file_of(slot);
  r.offset = file_offset(slot);
  r.buf = buf;
  r.length = io_length(length);
  r.user_data = token;
  return io_->queue(r);
}

uint64_t NvmeStore::checksum(std::span<const std::byte> stored) {
  return TIERKV_XXH3_64(stored.data(), stored.size());
}

Status NvmeStore::put_namespace(const Namespace& ns) {
  std::string v;
  v.push_back(static_cast<char>(kRecordVersion));
  const Layout& l = ns.layout;
  for (uint32_t x : {l.num_layers, l.num_kv_heads, l.head_dim, l.chunk_tokens}) {
    v.append(reinterpret_cast<const char*>(&x), sizeof(x));
  }
  v.push_back(static_cast<char>(l.dtype));
  for (const std::string* s : {&ns.tenant, &ns.salt}) {
    const auto len = static_cast<uint32_t>(s->size());
    v.append(reinterpret_cast<const char*>(&len), sizeof(len));
    v.append(*s);
  }
  return from_rocks(db_->Put(rocksdb::WriteOptions(), namespace_db_key(ns.id), v),
                    "index: record namespace");
}

Status NvmeStore::commit(std::span<const ChunkRecord> records) {
  rocksdb::WriteBatch batch;
  std::string v(1 + sizeof(ChunkRecord), '\0');
  v[0] = static_cast<char>(kRecordVersion);
  for (const ChunkRecord& r : records) {
    std::memcpy(v.data() + 1, &r, sizeof(r));
    batch.Put(chunk_db_key(r.ns, r.key), v);
  }
  return from_rocks(db_->Write(rocksdb::WriteOptions(), &batch), "index: record chunks");
}

Status NvmeStore::erase(std::span<const std::pair<NamespaceId, ChunkKey>> chunks) {
  rocksdb::WriteBatch batch;
  for (const auto& [ns, key] : chunks) batch.Delete(chunk_db_key(ns, key));
  return from_rocks(db_->Write(rocksdb::WriteOptions(), &batch), "index: remove chunks");
}

Status NvmeStore::erase_namespace(NamespaceId ns) {
  rocksdb::WriteBatch batch;
  batch.Delete(namespace_db_key(ns));
  return from_rocks(db_->Write(rocksdb::WriteOptions(), &batch), "index: remove namespace");
}

Result<std::vector<ChunkRecord>> NvmeStore::read_index(const std::string& index_dir) {
  rocksdb::DB* raw = nullptr;
  TIERKV_RETURN_IF_ERROR(from_rocks(rocksdb::DB::OpenForReadOnly(rocksdb::Options(), index_dir, &raw),
                                    "open the index at " + index_dir + " read-only"));
  std::unique_ptr<rocksdb::DB> db(raw);
  std::vector<ChunkRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(std::string(1, kChunkPrefix)); it->Valid() && it->key()[0] == kChunkPrefix;
       it->Next()) {
    const rocksdb::Slice v = it->value();
    if (v.size() != 1 + sizeof(ChunkRecord) || v[0] != kRecordVersion) continue;
    ChunkRecord r;
    std::memcpy(&r, v.data() + 1, sizeof(r));
    out.push_back(r);
  }
  TIERKV_RETURN_IF_ERROR(from_rocks(it->status(), "index: read"));
  return out;
}

Status NvmeStore::recover(const std::function<void(const Namespace&)>& on_namespace,
                          const std::function<void(const ChunkRecord&)>& on_chunk,
                          RecoveryReport* report) {
  const auto t0 = std::chrono::steady_clock::now();
  RecoveryReport rep;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  // Namespaces first, so chunks can be checked against their layout.
  for (it->Seek(std::string(1, kNamespacePrefix));
       it->Valid() && it->key()[0] == kNamespacePrefix; it->Next()) {
    const rocksdb::Slice k = it->key(), v = it->value();
    Namespace ns;
    bool ok = k.size() == 9 && v.size() >= 1 + 16 + 1 + 8 && v[0] == kRecordVersion;
    size_t at = 1;
    if (ok) {
      for (uint32_t* x : {&ns.layout.num_layers, &ns.layout.num_kv_heads, &ns.layout.head_dim,
                          &ns.layout.chunk_tokens}) {
        std::memcpy(x, v.data() + at, 4);
        at += 4;
      }
      ns.layout.dtype = static_cast<DType>(v[at++]);
      for (std::string* s : {&ns.tenant, &ns.salt}) {
        uint32_t len = 0;
        if (at + 4 > v.size()) { ok = false; break; }
        std::memcpy(&len, v.data() + at, 4);
        at += 4;
        if (at + len > v.size()) { ok = false; break; }
        s->assign(v.data() + at, len);
        at += len;
      }
    }
    for (int i = 0; ok && i < 8; ++i) ns.id = ns.id << 8 | static_cast<uint8_t>(k[1 + i]);
    ok = ok && ns.layout.validate().ok() &&
         namespace_id(ns.layout, ns.tenant, ns.salt) == ns.id;
    if (!ok) {
      ++rep.discarded;
      (void)db_->Delete(rocksdb::WriteOptions(), k);
      continue;
    }
    ++rep.namespaces;
    on_namespace(ns);
  }

  std::vector<SlabSlotPool::RestoredSlot> slots;
  std::vector<ChunkRecord> records;
  std::vector<std::string> bad_keys;
  for (it->Seek(std::string(1, kChunkPrefix)); it->Valid() && it->key()[0] == kChunkPrefix;
       it->Next()) {
    const rocksdb::Slice v = it->value();
    ChunkRecord r;
    bool ok = v.size() == 1 + sizeof(ChunkRecord) && v[0] == kRecordVersion;
    if (ok) std::memcpy(&r, v.data() + 1, sizeof(r));
    ok = ok && r.slot < pool_.max_slot_ids() && r.slot_class < pool_.num_classes() &&
         r.stored_bytes <= pool_.class_bytes(r.slot_class) && r.codec == Codec::kRaw;
    if (!ok) {
      bad_keys.push_back(it->key().ToString());
      continue;
    }
    slots.push_back({r.slot, r.slot_class});
    records.push_back(r);
  }
  TIERKV_RETURN_IF_ERROR(from_rocks(it->status(), "index: read"));
  Status restored = pool_.restore(slots);
  if (!restored.ok()) {
    // Two records claim one slot or a slab in two classes: the index contradicts itself. Keep
    // the records that agree (first come), drop the rest.
    std::vector<SlabSlotPool::RestoredSlot> kept;
    std::vector<ChunkRecord> kept_records;
    for (size_t i = 0; i < slots.size(); ++i) {
      kept.push_back(slots[i]);
      if (pool_.restore(kept).ok()) {
        kept_records.push_back(records[i]);
      } else {
        kept.pop_back();
        bad_keys.push_back(chunk_db_key(records[i].ns, records[i].key));
      }
    }
    TIERKV_RETURN_IF_ERROR(pool_.restore(kept));
    records = std::move(kept_records);
  }
  for (const std::string& k : bad_keys) (void)db_->Delete(rocksdb::WriteOptions(), k);
  rep.discarded += bad_keys.size();
  for (const ChunkRecord& r : records) on_chunk(r);
  rep.chunks = records.size();
  rep.millis = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count());
  if (report) *report = rep;
  return Status::Ok();
}

}  // namespace tierkv::storage
