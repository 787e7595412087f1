// CodecStages: the NVMe tier's encode and decode stages — worker threads that encode chunks on
// their way down to NVMe and decode them on their way up, off the engine's thread.
//
// Two StagePipelines (tierkv/scheduler/stage_pipeline.h), "encode" and "decode", each with its own
// workers, bounded queue and adaptive batch size; decodes never wait behind a backlog of encodes.
// A job names its source and destination bytes by pointer: an encode reads a host slot (which
// the engine keeps leased) and writes a staging buffer; a decode reads a staging buffer and writes
// a host slot (the engine keeps it in the loading state). The workers touch nothing else: no
// engine state, no I/O. A finished job goes to a completion list and the notify fd (the engine's
// I/O eventfd, which the daemon's event loop already watches) is written, so the engine picks the
// results up on its own thread (take_done()).
//
// Codecs: jobs name a codec by its index in the table given at creation (immutable after). Each
// worker batch runs with a WorkerContext of its own — an encoder per codec and a ChunkDecoder,
// made once and reused — taken from a small free list, so nothing is allocated per chunk once
// warm (but for a fused chunk's reference list). The jobs of a batch that share a codec and a
// layout are encoded together (ChunkCodec::encode_batch): the fused codec matches blocks across
// them (batched fusion), the other codecs encode them one by one. A decode first checks the stored bytes against the index record's checksum (xxh3-64), then
// ChunkDecoder checks the chunk's own header and payload checksums while decoding it: a corrupt
// or foreign chunk fails the job, never writes garbage as a success.
//
// Thread safety: submit(), take_done() and stats() are safe from any thread (the engine calls
// them from its one thread). The destructor (or stop()) drains and joins the workers; the memory
// the queued jobs name must stay valid until then.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/scheduler/stage_pipeline.h"
#include "tierkv/status.h"
#include "tierkv/storage/codec.h"
#include "tierkv/storage/representative_store.h"

namespace tierkv::scheduler {

struct CodecJob {
  enum class Kind : uint8_t { kEncode = 0, kDecode = 1 };
  Kind kind = Kind::kEncode;
  uint16_t codec = 0;  // encode: index into the codec table
  Layout layout;       // encode: the chunk's layout
  // encode: the absolute position of the chunk's first token, if known (0 otherwise); the fused
  // codec compares RoPE-rotated keys with it (a wrong one costs compression, never correctness).
  uint64_t first_token = 0;
  const std::byte* src = nullptr;
  uint64_t src_bytes = 0;  // encode: the chunk's bytes; decode: the stored (encoded) bytes
  std::byte* dst = nullptr;
  uint64_t dst_bytes = 0;  // encode: the staging buffer's size; decode: the chunk's bytes
  uint64_t token = 0;      // the caller's, handed back
  // decode: the stored bytes' expected xxh3-64 (the index record's). encode, on return: the
  // encoded bytes' xxh3-64, for the record.
  uint64_t checksum = 0;
  // On return.
  Status status;
  uint64_t out_bytes = 0;  // encode: the encoded size (the rest of dst up to 4 KiB is zeroed)
  storage::CodecId out_codec = storage::CodecId::kRaw;
  // encode: the encoding did not make the chunk smaller, so it is best stored as it is: dst holds
  // nothing, checksum is of src, out_bytes = src_bytes.
  bool as_is = false;
  // encode, fused: the representatives the encoded chunk refers to (fused_chunk_references), one
  // reference on each held in the representative store for this chunk. Whoever ends up with the
  // job either hands them to the NVMe index (NvmeStore::commit) or releases them.
  std::vector<storage::RepId> refs;
};

struct CodecStageOptions {
  std::vector<storage::CodecConfig> codecs;  // the table encode jobs name by index
  uint32_t encode_threads = 1;
  uint32_t decode_threads = 1;
  uint64_t encode_queue = 1024;  // jobs waiting for a worker, at most
  uint64_t decode_queue = 1024;
  // Encodes are background work: a batch may take 100 ms (a 32 MiB chunk takes tens of ms to
  // zstd). Decodes are on a load's path: small batches, so one worker never holds several
  // chunks another could decode meanwhile.
  BatchPolicy encode_batch{1, 32, 1, std::chrono::milliseconds(100)};
  BatchPolicy decode_batch{1, 4, 1, std::chrono::milliseconds(5)};
  int notify_fd = -1;  // an eventfd written (8 bytes, value 1) when finished jobs are waiting
  storage::RepresentativeStore* representatives = nullptr;  // for fused chunks; may be null
};

// The figures of both stages, for stats.
struct CodecStageStats {
  StageStats stage;
  uint32_t workers = 0;
  uint64_t queue_capacity = 0;
  uint64_t rejected = 0;  // submits refused because the queue was full
};

class CodecStages {
 public:
  // Checks every codec of the table (each must make a codec) and starts the workers.
  static Result<std::unique_ptr<CodecStages>> create(const CodecStageOptions& options);
  ~CodecStages();
  CodecStages(const CodecStages&) = delete;
  CodecStages& operator=(const CodecStages&) = delete;

  // Queues a job at its stage; ResourceExhausted when that stage's queue is full (the caller
  // keeps the job's memory and tries later), Unavailable after stop().
  Status submit(CodecJob job);
  // Moves every finished job into `out` (appended); returns how many.
  size_t take_done(std::vector<CodecJob>& out);
  // Encode stage first, then decode.
  [[nodiscard]] std::vector<CodecStageStats> stats() const;
  [[nodiscard]] const std::vector<storage::CodecConfig>& codecs() const { return options_.codecs; }
  // Finishes every queued job and joins the workers; later submits fail.
  void stop();

 private:
  struct WorkerContext;
  explicit CodecStages(const CodecStageOptions& options);
  void encode_batch(std::vector<CodecJob>& batch);
  // Encodes jobs that share a codec and a layout, then finishes each (finish_encoded).
  void encode_run(WorkerContext& ctx, std::span<CodecJob> jobs);
  // Takes an encoded chunk into its job: as it is when encoding did not shrink it, else into the
  // staging buffer, padded, checksummed, its references listed.
  static void finish_encoded(storage::ChunkCodec& encoder, const storage::EncodeBuffer& out,
                             CodecJob& job);
  void decode_batch(std::vector<CodecJob>& batch);
  void finished(std::vector<CodecJob>& batch);
  std::unique_ptr<WorkerContext> take_context();
  void return_context(std::unique_ptr<WorkerContext> context);

  CodecStageOptions options_;
  std::unique_ptr<StagePipeline<CodecJob>> encode_;
  std::unique_ptr<StagePipeline<CodecJob>> decode_;
  std::mutex contexts_mu_;
  std::vector<std::unique_ptr<WorkerContext>> contexts_;  // idle ones; guarded by contexts_mu_
  std::mutex done_mu_;
  std::vector<CodecJob> done_;  // guarded by done_mu_
};

// The staging bytes an encode of a `logical_bytes` chunk is given: room for the header and for
// zstd's worst case on incompressible input, rounded up to 4 KiB. (An encoder that needs more
// still works, through a copy: EncodeBuffer::use_memory.)
uint64_t staging_bytes_for_encode(uint64_t logical_bytes);

}  // namespace tierkv::scheduler
