#include "tierkv/storage/nvme_store.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <unordered_map>
#include <unordered_set>

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
constexpr char kFusedRefsPrefix = 'f';
constexpr char kRepresentativePrefix = 'r';
constexpr const char* kDataFileName = "tierkv-data.bin";

std::string chunk_db_key(NamespaceId ns, const ChunkKey& key) {
  std::string k(1 + sizeof(ns) + sizeof(key), '\0');
  k[0] = kChunkPrefix;
  // Big-endian namespace so a namespace's chunks are contiguous in key order.
  for (int i = 0; i < 8; ++i) k[1 + i] = static_cast<char>(ns >> (56 - 8 * i));
  std::memcpy(k.data() + 9, &key, sizeof(key));
  return k;
}

// A fused chunk's reference list sits under its chunk key with another prefix, so both ranges
// list chunks in the same order.
std::string fused_db_key(NamespaceId ns, const ChunkKey& key) {
  std::string k = chunk_db_key(ns, key);
  k[0] = kFusedRefsPrefix;
  return k;
}

std::string representative_db_key(RepId id) {
  std::string k(9, '\0');
  k[0] = kRepresentativePrefix;
  for (int i = 0; i < 8; ++i) k[1 + i] = static_cast<char>(id >> (56 - 8 * i));
  return k;
}

template <typename T>
void append_le(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
bool read_le(const rocksdb::Slice& in, size_t& at, T* v) {
  if (at + sizeof(T) > in.size()) return false;
  std::memcpy(v, in.data() + at, sizeof(T));
  at += sizeof(T);
  return true;
}

// Representative record: version, layer, head, kind, format, dtype, tokens, head_dim,
// first_token, byte count, the bytes, then xxh3-64 of everything before it.
std::string representative_value(const Representative& rep) {
  const RepresentativeInfo& i = rep.info;
  std::string v;
  v.reserve(40 + rep.bytes.size());
  v.push_back(static_cast<char>(kRecordVersion));
  append_le<uint32_t>(v, i.layer);
  append_le<uint32_t>(v, i.head);
  append_le<uint8_t>(v, i.kind);
  append_le<uint8_t>(v, static_cast<uint8_t>(i.format));
  append_le<uint8_t>(v, static_cast<uint8_t>(i.dtype));
  append_le<uint32_t>(v, i.tokens);
  append_le<uint32_t>(v, i.head_dim);
  append_le<int64_t>(v, i.first_token);
  append_le<uint32_t>(v, static_cast<uint32_t>(rep.bytes.size()));
  v.append(reinterpret_cast<const char*>(rep.bytes.data()), rep.bytes.size());
  append_le<uint64_t>(v, XXH3_64bits(v.data(), v.size()));
  return v;
}

bool parse_representative(const rocksdb::Slice& v, Representative* rep) {
  if (v.size() < 8 + 1 || v[0] != kRecordVersion) return false;
  uint64_t sum = 0;
  std::memcpy(&sum, v.data() + v.size() - 8, 8);
  if (XXH3_64bits(v.data(), v.size() - 8) != sum) return false;
  const rocksdb::Slice body(v.data(), v.size() - 8);
  RepresentativeInfo& i = rep->info;
  size_t at = 1;
  uint8_t format = 0, dtype = 0;
  uint32_t n = 0;
  if (!read_le(body, at, &i.layer) || !read_le(body, at, &i.head) || !read_le(body, at, &i.kind) ||
      !read_le(body, at, &format) || !read_le(body, at, &dtype) || !read_le(body, at, &i.tokens) ||
      !read_le(body, at, &i.head_dim) || !read_le(body, at, &i.first_token) ||
      !read_le(body, at, &n) || at + n != body.size()) {
    return false;
  }
  i.format = static_cast<BlockFormat>(format);
  i.dtype = static_cast<DType>(dtype);
  const auto* b = reinterpret_cast<const std::byte*>(body.data() + at);
  rep->bytes.assign(b, b + n);
  return true;
}

// Reference list: version, count, then count RepIds.
std::string fused_refs_value(std::span<const RepId> ids) {
  std::string v;
  v.reserve(5 + 8 * ids.size());
  v.push_back(static_cast<char>(kRecordVersion));
  append_le<uint32_t>(v, static_cast<uint32_t>(ids.size()));
  v.append(reinterpret_cast<const char*>(ids.data()), 8 * ids.size());
  return v;
}

bool parse_fused_refs(const rocksdb::Slice& v, std::vector<RepId>* ids) {
  size_t at = 1;
  uint32_t n = 0;
  if (v.size() < 5 || v[0] != kRecordVersion || !read_le(v, at, &n) ||
      v.size() != 5 + 8 * uint64_t{n}) {
    return false;
  }
  ids->resize(n);
  std::memcpy(ids->data(), v.data() + 5, 8 * uint64_t{n});
  return true;
}

bool parse_chunk_id(const rocksdb::Slice& k, NamespaceId* ns, ChunkKey* key) {
  if (k.size() != 1 + 8 + sizeof(ChunkKey)) return false;
  *ns = 0;
  for (int i = 0; i < 8; ++i) *ns = *ns << 8 | static_cast<uint8_t>(k[1 + i]);
  std::memcpy(key, k.data() + 9, sizeof(ChunkKey));
  return true;
}

struct ChunkIdHash {
  size_t operator()(const std::pair<NamespaceId, ChunkKey>& c) const {
    return ChunkKeyHash()(c.second) ^ (c.first * 0x9E3779B97F4A7C15ull);
  }
};

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

Status NvmeStore::commit(std::span<const ChunkRecord> records) { return commit(records, {}); }

Status NvmeStore::commit(std::span<const ChunkRecord> records,
                         std::span<const FusedChunkRefs> fused) {
  rocksdb::WriteBatch batch;
  std::string v(1 + sizeof(ChunkRecord), '\0');
  v[0] = static_cast<char>(kRecordVersion);
  for (const ChunkRecord& r : records) {
    std::memcpy(v.data() + 1, &r, sizeof(r));
    batch.Put(chunk_db_key(r.ns, r.key), v);
  }
  // Reference-list entries this batch adds per representative; a representative the index does
  // not hold yet goes into the batch the first time it is named.
  std::unordered_map<RepId, uint32_t> added;
  for (const FusedChunkRefs& f : fused) {
    if (reps_ == nullptr) {
      return Status::InvalidArgument("index: fused chunk " + f.key.to_hex() +
                                     " committed without a representative store");
    }
    const bool recorded = std::any_of(records.begin(), records.end(), [&](const ChunkRecord& r) {
      return r.ns == f.ns && r.key == f.key;
    });
    if (!recorded) {
      return Status::InvalidArgument("index: fused chunk " + f.key.to_hex() +
                                     " has no record in the same commit");
    }
    batch.Put(fused_db_key(f.ns, f.key), fused_refs_value(f.reps));
    for (RepId id : f.reps) {
      if (added[id]++ != 0 || disk_refs_.contains(id)) continue;
      auto rep = reps_->get(id);
      if (rep == nullptr) {
        return Status::InvalidArgument("index: fused chunk " + f.key.to_hex() +
                                       " refers to representative " + std::to_string(id) +
                                       ", which is not in the representative store");
      }
      batch.Put(representative_db_key(id), representative_value(*rep));
    }
  }
  TIERKV_RETURN_IF_ERROR(
      from_rocks(db_->Write(rocksdb::WriteOptions(), &batch), "index: record chunks"));
  for (const auto& [id, n] : added) disk_refs_[id] += n;
  fused_chunks_ += fused.size();
  return Status::Ok();
}

Status NvmeStore::erase(std::span<const std::pair<NamespaceId, ChunkKey>> chunks) {
  rocksdb::WriteBatch batch;
  // The erased fused chunks' references, and per representative how many entries go.
  std::vector<RepId> released;
  std::unordered_map<RepId, uint32_t> removed;
  uint64_t fused = 0;
  std::string value;
  std::vector<RepId> ids;
  for (const auto& [ns, key] : chunks) {
    batch.Delete(chunk_db_key(ns, key));
    if (fused_chunks_ == 0) continue;
    const std::string fkey = fused_db_key(ns, key);
    const rocksdb::Status got = db_->Get(rocksdb::ReadOptions(), fkey, &value);
    if (got.IsNotFound()) continue;
    TIERKV_RETURN_IF_ERROR(from_rocks(got, "index: read a fused chunk's references"));
    batch.Delete(fkey);
    ++fused;
    if (!parse_fused_refs(value, &ids)) continue;  // unreadable: recovery recounts
    for (RepId id : ids) ++removed[id];
    released.insert(released.end(), ids.begin(), ids.end());
  }
  for (const auto& [id, n] : removed) {
    auto it = disk_refs_.find(id);
    if (it != disk_refs_.end() && it->second <= n) batch.Delete(representative_db_key(id));
  }
  TIERKV_RETURN_IF_ERROR(
      from_rocks(db_->Write(rocksdb::WriteOptions(), &batch), "index: remove chunks"));
  for (const auto& [id, n] : removed) {
    auto it = disk_refs_.find(id);
    if (it == disk_refs_.end()) continue;
    if (it->second <= n) {
      disk_refs_.erase(it);
    } else {
      it->second -= n;
    }
  }
  fused_chunks_ -= std::min(fused_chunks_, fused);
  Status first;
  if (reps_ != nullptr) {
    for (RepId id : released) {
      Status s = reps_->release(id);
      if (!s.ok() && first.ok()) first = s;
    }
  }
  return first;
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
  TIERKV_RETURN_IF_ERROR(recover_fused(records, rep));
  for (const ChunkRecord& r : records) on_chunk(r);
  rep.chunks = records.size();
  rep.millis = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count());
  if (report) *report = rep;
  return Status::Ok();
}

Status NvmeStore::recover_fused(std::vector<ChunkRecord>& records, RecoveryReport& rep) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  // Every representative the index holds (corrupt ones count as missing).
  std::unordered_map<RepId, Representative> held;
  std::vector<std::string> drop;  // index keys to delete
  for (it->Seek(std::string(1, kRepresentativePrefix));
       it->Valid() && it->key()[0] == kRepresentativePrefix; it->Next()) {
    const rocksdb::Slice k = it->key();
    RepId id = 0;
    for (size_t i = 1; i < k.size() && i <= 8; ++i) id = id << 8 | static_cast<uint8_t>(k[i]);
    Representative r;
    if (k.size() != 9 || !parse_representative(it->value(), &r)) {
      drop.push_back(k.ToString());
      continue;
    }
    held.emplace(id, std::move(r));
  }
  TIERKV_RETURN_IF_ERROR(from_rocks(it->status(), "index: read representatives"));

  // Reference lists: of a recovered chunk whose representatives are all held, counted; of a
  // chunk not recovered, an orphan; naming a missing one, the chunk cannot be decoded and goes.
  std::unordered_map<std::pair<NamespaceId, ChunkKey>, size_t, ChunkIdHash> where;
  for (size_t i = 0; i < records.size(); ++i)
    where.emplace(std::pair{records[i].ns, records[i].key}, i);
  std::unordered_map<RepId, uint32_t> counts;
  std::unordered_set<size_t> undecodable;
  std::vector<RepId> ids;
  uint64_t fused = 0;
  for (it->Seek(std::string(1, kFusedRefsPrefix)); it->Valid() && it->key()[0] == kFusedRefsPrefix;
       it->Next()) {
    NamespaceId ns = 0;
    ChunkKey key;
    const bool named = parse_chunk_id(it->key(), &ns, &key);
    const auto found = named ? where.find({ns, key}) : where.end();
    if (found == where.end()) {
      drop.push_back(it->key().ToString());
      continue;
    }
    const bool ok =
        reps_ != nullptr && parse_fused_refs(it->value(), &ids) &&
        std::all_of(ids.begin(), ids.end(), [&](RepId id) { return held.contains(id); });
    if (!ok) {
      undecodable.insert(found->second);
      drop.push_back(it->key().ToString());
      drop.push_back(chunk_db_key(ns, key));
      continue;
    }
    for (RepId id : ids) ++counts[id];
    ++fused;
  }
  TIERKV_RETURN_IF_ERROR(from_rocks(it->status(), "index: read fused chunks' references"));

  if (!undecodable.empty()) {
    std::vector<ChunkRecord> kept;
    kept.reserve(records.size() - undecodable.size());
    for (size_t i = 0; i < records.size(); ++i) {
      if (undecodable.contains(i)) {
        TIERKV_RETURN_IF_ERROR(pool_.free(records[i].slot));
      } else {
        kept.push_back(records[i]);
      }
    }
    records = std::move(kept);
    rep.discarded += undecodable.size();
  }
  // Representatives: restored with their counts, or orphans.
  for (auto& [id, r] : held) {
    const auto c = counts.find(id);
    if (c == counts.end()) {
      drop.push_back(representative_db_key(id));
      ++rep.orphan_representatives;
      continue;
    }
    TIERKV_RETURN_IF_ERROR(reps_->restore(id, r.info, r.bytes, c->second));
    std::vector<std::byte>().swap(r.bytes);  // the store has its copy: keep the peak at one
    ++rep.representatives;
  }
  rocksdb::WriteBatch batch;
  for (const std::string& k : drop) batch.Delete(k);
  TIERKV_RETURN_IF_ERROR(
      from_rocks(db_->Write(rocksdb::WriteOptions(), &batch), "index: remove what cannot be used"));
  disk_refs_ = std::move(counts);
  fused_chunks_ = fused;
  rep.fused_chunks = fused;
  return Status::Ok();
}

}  // namespace tierkv::storage
