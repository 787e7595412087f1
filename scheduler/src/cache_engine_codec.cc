// CacheEngine, encoded chunks on NVMe: the codec table, the staging pool and the codec stages;
// encoding on the way down and decoding on the way up. Everything here runs on the engine's one
// thread; the workers' results arrive through poll_io() (poll_codecs()).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "codec_stages.h"
#include "engine_tokens.h"
#include "staging_pool.h"
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::scheduler {

using storage::CodecConfig;
using storage::CodecId;
using storage::kNoSlot;
using storage::NvmeStore;

namespace {

bool is_float(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32;
}

uint32_t auto_threads(uint32_t configured) {
  if (configured != 0) return configured;
  return std::max(1u, std::thread::hardware_concurrency() / 4);
}

}  // namespace

Result<CodecConfig> parse_nvme_codec(std::string_view key, std::string_view spec) {
  auto c = CodecConfig::parse(spec);
  if (!c.ok()) {
    return Status::InvalidArgument(std::string(key) + " = \"" + std::string(spec) +
                                   "\": " + c.status().message());
  }
  return c;
}

Status CacheEngine::build_codec_table() {
  codec_table_.assign(1, CodecConfig{});  // [0]: raw, stored as it is
  tenant_codecs_.clear();
  const auto add = [&](const std::string& key, const std::string& spec) -> Result<uint16_t> {
    auto c = parse_nvme_codec(key, spec);
    if (!c.ok()) return c.status();
    if (c->id == CodecId::kRaw) return uint16_t{0};
    for (size_t i = 1; i < codec_table_.size(); ++i) {
      if (codec_table_[i] == *c) return static_cast<uint16_t>(i);
    }
    codec_table_.push_back(*c);
    return static_cast<uint16_t>(codec_table_.size() - 1);
  };
  auto d = add("nvme.codec", options_.nvme.codec);
  if (!d.ok()) return d.status();
  default_codec_ = *d;
  for (const auto& [tenant, spec] : options_.nvme.codec_by_tenant) {
    auto t = add("nvme.codec_by_tenant." + tenant, spec);
    if (!t.ok()) return t.status();
    tenant_codecs_.emplace_back(tenant, *t);
  }
  return Status::Ok();
}

uint16_t CacheEngine::choose_codec(const Namespace& ns) const {
  uint16_t c = default_codec_;
  for (const auto& [tenant, index] : tenant_codecs_) {
    if (tenant == ns.tenant) c = index;
  }
  if (c == 0) return 0;
  const CodecConfig& config = codec_table_[c];
  if (config.id != CodecId::kZstd && !is_float(ns.layout.dtype)) {
    spdlog::warn(
        "nvme: codec {} quantizes 16- and 32-bit floats only; tenant '{}''s {} chunks "
        "go to NVMe as they are",
        config.to_string(), ns.tenant, dtype_name(ns.layout.dtype));
    return 0;
  }
  if (staging_bytes_for_encode(ns.chunk_bytes()) > options_.nvme.staging_bytes / 4) {
    spdlog::warn(
        "nvme: chunks of {} bytes ({}) need more staging memory than a quarter of "
        "nvme.staging_size = {} bytes; tenant '{}''s chunks go to NVMe as they are",
        ns.chunk_bytes(), ns.layout.to_string(), options_.nvme.staging_bytes, ns.tenant);
    return 0;
  }
  return c;
}

Status CacheEngine::start_codec_stages() {
  // Nothing to encode and nothing encoded on disk: no staging memory, no threads.
  if (codec_table_.size() == 1 && disk_encoded_chunks_ == 0) return Status::Ok();
  // Room for the largest encoded chunk on disk, whatever the configured size.
  uint64_t largest = 0;
  for (const DiskMeta& dm : disk_) {
    if (dm.state == DiskState::kReady && storage::is_encoded(dm.codec)) {
      largest = std::max<uint64_t>(largest, NvmeStore::io_length(dm.stored_bytes));
    }
  }
  auto pool = StagingPool::create(std::max(options_.nvme.staging_bytes, 2 * largest));
  if (!pool.ok()) return pool.status();
  staging_ = std::move(pool).value();
  auto fixed = nvme_->io().register_memory(staging_->base(), staging_->capacity_bytes());
  if (!fixed.ok()) return fixed.status();
  CodecStageOptions o;
  o.codecs = codec_table_;
  o.encode_threads = auto_threads(options_.nvme.encode_threads);
  o.decode_threads = auto_threads(options_.nvme.decode_threads);
  // Every decode holds a staging buffer of at least a page: the queue never turns one away.
  o.decode_queue = staging_->capacity_bytes() / StagingPool::kPageBytes;
  o.notify_fd = nvme_->io().completion_fd();
  o.representatives = representatives_.get();
  auto stages = CodecStages::create(o);
  if (!stages.ok()) return stages.status();
  codec_stages_ = std::move(stages).value();
  std::string codecs = codec_table_[default_codec_].to_string();
  for (const auto& [tenant, index] : tenant_codecs_) {
    codecs += ", tenant '" + tenant + "': " + codec_table_[index].to_string();
  }
  spdlog::info("nvme: codec {}; {} encode and {} decode threads, {} MiB of staging memory{}",
               codecs, o.encode_threads, o.decode_threads, staging_->capacity_bytes() >> 20,
               *fixed ? " (io_uring fixed buffers)" : "");
  return Status::Ok();
}

void CacheEngine::release_references(std::span<const storage::RepId> refs) {
  for (storage::RepId id : refs) {
    if (Status s = representatives_->release(id); !s.ok()) {
      spdlog::error("nvme: releasing a fused chunk's representative: {}", s.to_string());
    }
  }
}

void CacheEngine::free_staging(Staged& staged) {
  if (staged.pages == 0) return;
  staging_->free(StagingPool::Buffer{staged.first, staged.pages});
  staged = Staged{};
  // Reads that wait for staging memory go first, in order.
  while (!staged_waiters_.empty()) {
    const SlotId s = staged_waiters_.front();
    const DiskMeta& dm = disk_[meta_[s].loading_from];
    const auto b = staging_->allocate(NvmeStore::io_length(dm.stored_bytes));
    if (!b.valid()) break;
    staged_waiters_.pop_front();
    meta_[s].staging = Staged{b.first, b.pages};
    issue(PendingIo{false, meta_[s].loading_from, staging_->data(b), dm.stored_bytes,
                    token(kStagedRead, s)});
  }
}

// --- write-down ----------------------------------------------------------------------------------

bool CacheEngine::start_encode(SlotId s) {
  // Reads waiting for staging memory go first.
  if (!codec_stages_ || !staged_waiters_.empty()) {
    ++encode_waits_;
    return false;
  }
  ChunkMeta& m = meta_[s];
  const NamespaceEntry* e = ns_entry(m.ns);
  const uint64_t bytes = e->ns.chunk_bytes();
  const uint64_t need = staging_bytes_for_encode(bytes);
  // Write-downs leave a quarter of the staging memory to reads.
  const auto b = staging_->used_bytes() + need > staging_->capacity_bytes() / 4 * 3
                     ? StagingPool::Buffer{}
                     : staging_->allocate(need);
  if (!b.valid()) {
    ++encode_waits_;
    return false;
  }
  CodecJob job;
  job.kind = CodecJob::Kind::kEncode;
  job.codec = e->codec;
  job.layout = e->ns.layout;
  job.src = region_.data() + pool_.offset(s);
  job.src_bytes = bytes;
  job.dst = staging_->data(b);
  job.dst_bytes = b.bytes();
  job.token = uint64_t{m.gen} << 32 | s;
  if (!codec_stages_->submit(std::move(job)).ok()) {  // the encode queue is full: wait
    staging_->free(b);
    ++encode_waits_;
    return false;
  }
  m.staging = Staged{b.first, b.pages};
  (void)pool_.lease(s);  // the slot holds still until its write-down completes
  m.writing_down = true;
  update_evictable(s);
  ++encodes_in_flight_;
  return true;
}

void CacheEngine::finish_encode(CodecJob& job) {
  const auto s = static_cast<SlotId>(job.token & 0xFFFFFFFF);
  ChunkMeta& m = meta_[s];
  --encodes_in_flight_;
  Staged staged = m.staging;
  m.staging = Staged{};
  // Evicted or dropped from RAM meanwhile, the chunk still goes to NVMe; deleted, it does not.
  const bool chunk_alive =
      m.state == ChunkState::kReady || (m.state == ChunkState::kZombie && !m.deleted);
  if (!chunk_alive) {
    free_staging(staged);
    release_references(job.refs);
    m.writing_down = false;
    unlease(s);
    return;
  }
  const NamespaceEntry* e = ns_entry(m.ns);
  const auto logical = static_cast<uint32_t>(e->ns.chunk_bytes());
  const std::byte* host = region_.data() + pool_.offset(s);
  SlotId d = kNoSlot;
  if (!job.status.ok()) {
    ++encode_errors_;
    spdlog::warn("nvme: encoding chunk {} with {} failed: {}; writing it down as it is",
                 m.key.to_hex(), codec_table_[e->codec].to_string(), job.status.message());
    free_staging(staged);
    d = issue_write_down(s, host, logical, logical, storage::Codec::kRaw,
                         hash_inline({host, logical}), Staged{});
  } else if (job.as_is) {
    free_staging(staged);
    d = issue_write_down(s, host, logical, logical, storage::Codec::kRaw, job.checksum, Staged{});
  } else {
    d = issue_write_down(s, staging_->data(StagingPool::Buffer{staged.first, staged.pages}),
                         static_cast<uint32_t>(job.out_bytes), logical,
                         static_cast<storage::Codec>(job.out_codec), job.checksum, staged);
    if (d == kNoSlot) {
      free_staging(staged);
      release_references(job.refs);
    } else if (job.out_codec == CodecId::kFused) {
      fused_writes_[d] = std::move(job.refs);  // committed with the chunk's record
    }
  }
  if (d == kNoSlot) requeue_write_down(s, chunk_alive, /*retry_first=*/true);
}

// --- loads ---------------------------------------------------------------------------------------

void CacheEngine::start_staged_read(SlotId s) {
  ChunkMeta& m = meta_[s];
  const DiskMeta& dm = disk_[m.loading_from];
  if (staged_waiters_.empty()) {
    const auto b = staging_->allocate(NvmeStore::io_length(dm.stored_bytes));
    if (b.valid()) {
      m.staging = Staged{b.first, b.pages};
      issue(PendingIo{false, m.loading_from, staging_->data(b), dm.stored_bytes,
                      token(kStagedRead, s)});
      return;
    }
  }
  staged_waiters_.push_back(s);  // started by free_staging() when a buffer comes free
}

void CacheEngine::finish_staged_read(SlotId s, int32_t result) {
  ChunkMeta& m = meta_[s];
  const SlotId d = m.loading_from;
  const DiskMeta& dm = disk_[d];
  if (result < static_cast<int32_t>(dm.stored_bytes)) {
    ++read_errors_;
    spdlog::warn("nvme: read of chunk {} (slot {}) failed: {}; dropping it", dm.key.to_hex(), d,
                 result < 0 ? std::strerror(-result) : "short read");
    free_staging(m.staging);
    end_promotion(s, false);
    return;
  }
  CodecJob job;
  job.kind = CodecJob::Kind::kDecode;
  job.src = staging_->data(StagingPool::Buffer{m.staging.first, m.staging.pages});
  job.src_bytes = dm.stored_bytes;
  job.dst = region_.data() + pool_.offset(s);
  job.dst_bytes = dm.logical_bytes;
  job.checksum = dm.checksum;
  job.token = s;
  if (Status q = codec_stages_->submit(std::move(job)); !q.ok()) {
    // Cannot happen (the queue holds as many jobs as staging has pages); fail safe if it does.
    spdlog::error("nvme: cannot decode chunk {}: {}; dropping it", dm.key.to_hex(), q.message());
    free_staging(m.staging);
    end_promotion(s, false);
    return;
  }
  ++decodes_in_flight_;
}

void CacheEngine::finish_decode(CodecJob& job) {
  const auto s = static_cast<SlotId>(job.token);
  ChunkMeta& m = meta_[s];
  const SlotId d = m.loading_from;
  const DiskMeta& dm = disk_[d];
  --decodes_in_flight_;
  free_staging(m.staging);
  if (!job.status.ok()) {
    ++checksum_failures_;
    spdlog::error(
        "nvme: chunk {} (slot {}, file {} offset {}, {}) fails its checksum or does not "
        "decode: {}; dropping it, never serving it",
        dm.key.to_hex(), d, nvme_->file_of(d), nvme_->file_offset(d),
        storage::stored_codec_name(dm.codec), job.status.message());
  }
  end_promotion(s, job.status.ok());
}

void CacheEngine::poll_codecs() {
  if (!codec_stages_) return;
  codec_done_.clear();
  if (codec_stages_->take_done(codec_done_) == 0) return;
  for (CodecJob& job : codec_done_) {
    if (job.kind == CodecJob::Kind::kEncode)
      finish_encode(job);
    else
      finish_decode(job);
  }
  codec_done_.clear();
}

}  // namespace tierkv::scheduler
