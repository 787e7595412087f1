#include "codec_stages.h"

#include <unistd.h>

#include <cstring>

#include "tierkv/storage/nvme_store.h"

namespace tierkv::scheduler {

uint64_t staging_bytes_for_encode(uint64_t logical_bytes) {
  // zstd's bound is logical + logical/256 + 64 (and the bit-plane content is at most 32 bytes
  // longer than the chunk); the header is 80 bytes. A page more than that covers every codec but
  // a pathological int4 group size.
  const uint64_t need = storage::kChunkHeaderBytes + logical_bytes + logical_bytes / 128 + 4096;
  return (need + 4095) / 4096 * 4096;
}

// What one worker batch needs: an encoder per codec of the table (made on first use) and a
// decoder, with their scratch, reused batch after batch.
struct CodecStages::WorkerContext {
  std::vector<std::unique_ptr<storage::ChunkCodec>> encoders;
  storage::ChunkDecoder decoder;
  std::vector<storage::ChunkInput> inputs;
  std::vector<storage::EncodeBuffer> outs;
  explicit WorkerContext(storage::RepresentativeStore* reps) : decoder(reps) {}
};

Result<std::unique_ptr<CodecStages>> CodecStages::create(const CodecStageOptions& options) {
  if (options.codecs.empty() || options.codecs.size() > UINT16_MAX) {
    return Status::InvalidArgument("codec stages need 1 to 65535 codecs");
  }
  for (const auto& c : options.codecs) {
    auto codec = storage::make_codec(c, options.representatives);
    if (!codec.ok()) return codec.status();
  }
  if (options.encode_threads == 0 || options.decode_threads == 0) {
    return Status::InvalidArgument("codec stages need at least one encode and one decode thread");
  }
  std::unique_ptr<CodecStages> stages(new CodecStages(options));
  CodecStages* self = stages.get();
  const auto make =
      [&](const char* name, uint32_t workers, uint64_t capacity, const BatchPolicy& batch,
          void (CodecStages::*handler)(
              std::vector<CodecJob>&)) -> Result<std::unique_ptr<StagePipeline<CodecJob>>> {
    StagePipeline<CodecJob>::Stage stage;
    stage.options.name = name;
    stage.options.queue_capacity = capacity;
    stage.options.workers = workers;
    stage.options.batch = batch;
    stage.handler = [self, handler](std::vector<CodecJob>& b) { (self->*handler)(b); };
    std::vector<StagePipeline<CodecJob>::Stage> list;
    list.push_back(std::move(stage));
    return StagePipeline<CodecJob>::create(std::move(list),
                                           [self](std::vector<CodecJob>& b) { self->finished(b); });
  };
  auto enc = make("encode", options.encode_threads, options.encode_queue, options.encode_batch,
                  &CodecStages::encode_batch);
  if (!enc.ok()) return enc.status();
  auto dec = make("decode", options.decode_threads, options.decode_queue, options.decode_batch,
                  &CodecStages::decode_batch);
  if (!dec.ok()) return dec.status();
  stages->encode_ = std::move(enc).value();
  stages->decode_ = std::move(dec).value();
  stages->encode_->start();
  stages->decode_->start();
  return stages;
}

CodecStages::CodecStages(const CodecStageOptions& options) : options_(options) {}

CodecStages::~CodecStages() { stop(); }

void CodecStages::stop() {
  if (encode_) encode_->stop();
  if (decode_) decode_->stop();
}

Status CodecStages::submit(CodecJob job) {
  return job.kind == CodecJob::Kind::kEncode ? encode_->try_push(std::move(job))
                                             : decode_->try_push(std::move(job));
}

size_t CodecStages::take_done(std::vector<CodecJob>& out) {
  std::lock_guard lock(done_mu_);
  const size_t n = done_.size();
  for (CodecJob& j : done_) out.push_back(std::move(j));
  done_.clear();
  return n;
}

std::vector<CodecStageStats> CodecStages::stats() const {
  std::vector<CodecStageStats> out;
  for (const auto* p : {encode_.get(), decode_.get()}) {
    const bool enc = p == encode_.get();
    CodecStageStats s;
    s.stage = p->stats().front();
    s.workers = enc ? options_.encode_threads : options_.decode_threads;
    s.queue_capacity = enc ? options_.encode_queue : options_.decode_queue;
    s.rejected = p->rejected();
    out.push_back(std::move(s));
  }
  return out;
}

std::unique_ptr<CodecStages::WorkerContext> CodecStages::take_context() {
  {
    std::lock_guard lock(contexts_mu_);
    if (!contexts_.empty()) {
      auto c = std::move(contexts_.back());
      contexts_.pop_back();
      return c;
    }
  }
  auto c = std::make_unique<WorkerContext>(options_.representatives);
  c->encoders.resize(options_.codecs.size());
  return c;
}

void CodecStages::return_context(std::unique_ptr<WorkerContext> context) {
  std::lock_guard lock(contexts_mu_);
  contexts_.push_back(std::move(context));
}

void CodecStages::encode_batch(std::vector<CodecJob>& batch) {
  auto ctx = take_context();
  for (size_t begin = 0; begin < batch.size();) {
    size_t end = begin + 1;
    while (end < batch.size() && batch[end].codec == batch[begin].codec &&
           batch[end].layout == batch[begin].layout) {
      ++end;
    }
    encode_run(*ctx, std::span(batch).subspan(begin, end - begin));
    begin = end;
  }
  return_context(std::move(ctx));
}

void CodecStages::encode_run(WorkerContext& ctx, std::span<CodecJob> jobs) {
  const uint16_t codec = jobs.front().codec;
  Status failed;
  storage::ChunkCodec* encoder = nullptr;
  if (codec >= ctx.encoders.size()) {
    failed = Status::Internal("encode job names codec " + std::to_string(codec) + " of " +
                              std::to_string(ctx.encoders.size()));
  } else {
    if (!ctx.encoders[codec]) {
      auto made = storage::make_codec(options_.codecs[codec], options_.representatives);
      if (made.ok())
        ctx.encoders[codec] = std::move(made).value();
      else
        failed = made.status();
    }
    encoder = ctx.encoders[codec].get();
  }
  if (failed.ok()) {
    // Straight into the staging buffers; an output that outgrows its buffer comes back in the
    // EncodeBuffer's own memory (spilled).
    if (ctx.outs.size() < jobs.size()) ctx.outs.resize(jobs.size());
    ctx.inputs.clear();
    for (size_t i = 0; i < jobs.size(); ++i) {
      ctx.inputs.push_back({{jobs[i].src, jobs[i].src_bytes}, jobs[i].first_token});
      ctx.outs[i].use_memory({jobs[i].dst, jobs[i].dst_bytes});
    }
    failed = encoder->encode_batch(jobs.front().layout, ctx.inputs,
                                   std::span(ctx.outs).first(jobs.size()));
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (failed.ok())
      finish_encoded(*encoder, ctx.outs[i], jobs[i]);
    else
      jobs[i].status = failed;  // no output, no reference held
    if (i < ctx.outs.size()) ctx.outs[i].use_own_memory();
  }
}

void CodecStages::finish_encoded(storage::ChunkCodec& encoder, const storage::EncodeBuffer& out,
                                 CodecJob& job) {
  const auto bytes = out.bytes();
  if (bytes.size() >= job.src_bytes || bytes.size() > job.dst_bytes) {
    // Not kept: the references a fused encoding took go back.
    (void)encoder.release(bytes);
    if (bytes.size() >= job.src_bytes) {
      // Incompressible (zstd on noise): the chunk as it is takes less room and no decoding.
      job.as_is = true;
      job.out_bytes = job.src_bytes;
      job.checksum = storage::NvmeStore::checksum({job.src, job.src_bytes});
    } else {
      job.status = Status::ResourceExhausted("encoded chunk of " + std::to_string(bytes.size()) +
                                             " bytes exceeds its staging buffer of " +
                                             std::to_string(job.dst_bytes));
    }
    return;
  }
  if (out.spilled()) std::memcpy(job.dst, bytes.data(), bytes.size());
  job.out_bytes = bytes.size();
  job.out_codec = encoder.config().id;
  // The write covers whole 4 KiB pages: its tail is zeros, never an earlier chunk's bytes.
  const uint64_t padded = storage::NvmeStore::io_length(job.out_bytes);
  std::memset(job.dst + job.out_bytes, 0, std::min(padded, job.dst_bytes) - job.out_bytes);
  job.checksum = storage::NvmeStore::checksum({job.dst, job.out_bytes});
  if (job.out_codec == storage::CodecId::kFused) {
    auto refs = storage::fused_chunk_references({job.dst, job.out_bytes});
    if (refs.ok()) {
      job.refs = std::move(refs).value();
    } else {
      (void)encoder.release({job.dst, job.out_bytes});
      job.status = refs.status();
    }
  }
}

void CodecStages::decode_batch(std::vector<CodecJob>& batch) {
  auto ctx = take_context();
  for (CodecJob& job : batch) {
    const std::span<const std::byte> stored(job.src, job.src_bytes);
    if (storage::NvmeStore::checksum(stored) != job.checksum) {
      job.status = Status::InvalidArgument("stored bytes do not match the index's checksum");
      continue;
    }
    job.status = ctx->decoder.decode(stored, {job.dst, job.dst_bytes});
  }
  return_context(std::move(ctx));
}

void CodecStages::finished(std::vector<CodecJob>& batch) {
  bool was_empty = false;
  {
    std::lock_guard lock(done_mu_);
    was_empty = done_.empty();
    for (CodecJob& j : batch) done_.push_back(std::move(j));
  }
  // One wake-up per burst: while the list is non-empty, the consumer has one coming.
  if (was_empty && options_.notify_fd >= 0) {
    const uint64_t one = 1;
    (void)!::write(options_.notify_fd, &one, sizeof(one));
  }
}

}  // namespace tierkv::scheduler
