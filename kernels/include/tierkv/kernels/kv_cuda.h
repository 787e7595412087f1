// CUDA gather/scatter between an engine's KV cache in GPU memory and tierkv's chunk layout.
//
// The GPU counterparts of gather_chunk/scatter_chunk (paged_kv.h, vLLM's layout) and
// gather_chunk_flat/scatter_chunk_flat (flat_kv.h): same layouts, byte-identical results. One
// launch moves any number of consecutive chunks and any range of layers, so a caller can move a
// whole chunk at once, or one layer of many chunks (the layer-by-layer load path). Copies use
// 16-byte vector loads and stores wherever the addresses and row sizes allow (else 8, 4, 2 or 1).
//
// This header needs no CUDA headers: a stream is passed as CUstream_st*, the very type
// cudaStream_t names, so a cudaStream_t (or torch.cuda.Stream.cuda_stream cast to one) converts
// without a cast. Only built when the CUDA toolkit is found (target tierkv::kernels_cuda).
//
// Thread safety: a DeviceKvCache is immutable after create() and may be shared between threads;
// launches on different streams that write the same bytes race, as any two kernels would.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tierkv/kernels/cuda_stream.h"
#include "tierkv/kernels/flat_kv.h"
#include "tierkv/kernels/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv::kernels::cuda {

// OK if this process sees at least one CUDA device; else Unavailable saying why (no device, no
// driver, driver too old). Tests skip with this message.
Status device_available();

// Which tokens and layers one launch moves. Chunk c (0 <= c < num_chunks) holds tokens
// [first_token + c * chunk_tokens, first_token + (c + 1) * chunk_tokens).
struct CopyRange {
  uint64_t first_token = 0;
  uint32_t chunk_tokens = 0;
  uint32_t num_chunks = 1;
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;  // 0 = the cache's last layer + 1
};

// The chunk side of a launch, in device memory (or host memory the device can address, such as
// pinned memory under unified addressing). Chunk c starts at data + c * chunk_stride and holds the
// chunk layout's rows of layers [layer_begin, layer_end) only: for each of those layers, K rows
// then V rows, packed. For whole chunks, chunk_stride = the chunk's size; 0 means packed.
// Chunks scattered over a pool (the daemon's GPU tier) are named by `chunk_offsets` instead: a
// device array of num_chunks byte offsets from `data`, chunk c at data + chunk_offsets[c]
// (chunk_stride is then ignored), each a multiple of 16; an entry of kSkipChunk moves nothing for
// that chunk (its tokens are left to another launch).
inline constexpr uint64_t kSkipChunk = UINT64_MAX;
struct ChunkBuffer {
  std::byte* data = nullptr;
  uint64_t chunk_stride = 0;
  const uint64_t* chunk_offsets = nullptr;
};

// The sequence's block table in device memory (paged caches only): `entries` int32 block ids.
// Only the entries the range covers are read, so a table may carry padding past the sequence.
struct DeviceBlockTable {
  const int32_t* data = nullptr;
  uint64_t entries = 0;
};

// An engine's KV cache (paged or flat) registered for GPU copies: validates the view, checks that
// every layer pointer is device memory of `device`, and uploads the per-layer pointer tables to
// the device once, so that a launch passes nothing per layer. The engine keeps owning the cache;
// it must outlive this object and not move. Move-only; the destructor frees the device tables.
class DeviceKvCache {
 public:
  static Result<DeviceKvCache> create_paged(const PagedKvView& view, int device);
  static Result<DeviceKvCache> create_flat(const FlatKvView& view, int device);

  DeviceKvCache(DeviceKvCache&& other) noexcept;
  DeviceKvCache& operator=(DeviceKvCache&& other) noexcept;
  DeviceKvCache(const DeviceKvCache&) = delete;
  DeviceKvCache& operator=(const DeviceKvCache&) = delete;
  ~DeviceKvCache();

  [[nodiscard]] bool paged() const { return paged_; }
  [[nodiscard]] int device() const { return device_; }
  [[nodiscard]] uint32_t num_layers() const { return num_layers_; }
  [[nodiscard]] uint32_t block_size() const { return block_size_; }
  [[nodiscard]] uint32_t num_blocks() const { return num_blocks_; }
  [[nodiscard]] uint64_t capacity_tokens() const { return capacity_tokens_; }
  // Bytes of one token's K (or V) in one layer, in the chunk layout.
  [[nodiscard]] uint64_t row_bytes() const { return row_bytes_; }
  // Chunk-side bytes of one chunk's rows for `layers` layers: 2 * layers * chunk_tokens * row.
  [[nodiscard]] uint64_t chunk_rows_bytes(uint32_t chunk_tokens, uint32_t layers) const {
    return 2 * uint64_t{layers} * chunk_tokens * row_bytes_;
  }
  // Widest access (16, 8, 4, 2 or 1 bytes) the cache side allows; a launch may use less if its
  // chunk buffer is less aligned.
  [[nodiscard]] uint32_t vector_bytes() const { return vector_bytes_; }

  // Rows a kernel skipped since the last call because a block table entry named a block outside
  // [0, num_blocks) (so a bad table can never write outside the cache); 0 when all was well.
  // Resets the count. Synchronizes `stream` (the one the kernels ran on).
  Result<uint64_t> take_bad_rows(Stream stream) const;

 private:
  friend Status launch_copy(const DeviceKvCache&, DeviceBlockTable, const CopyRange&, ChunkBuffer,
                            bool, Stream);
  DeviceKvCache() = default;
  Status init(std::span<std::byte* const> k_layers, std::span<std::byte* const> v_layers,
              uint32_t alignment_of_rows);
  void reset();

  bool paged_ = false;
  int device_ = 0;
  int sm_count_ = 0;
  uint32_t num_layers_ = 0;
  uint32_t block_size_ = 0;  // paged
  uint32_t num_blocks_ = 0;  // paged
  uint64_t capacity_tokens_ = 0;
  uint64_t row_bytes_ = 0;
  uint64_t head_bytes_ = 0;    // contiguous run on the cache side (a whole row where heads pack)
  uint64_t token_stride_ = 0;  // cache side, bytes between tokens (paged: row_bytes)
  uint64_t head_stride_ = 0;   // cache side, bytes between runs within a token
  uint32_t vector_bytes_ = 1;
  std::byte** k_layers_dev_ = nullptr;  // device arrays, num_layers_ entries each
  std::byte** v_layers_dev_ = nullptr;
  unsigned long long* bad_rows_dev_ = nullptr;  // NOLINT(google-runtime-int): atomicAdd's type
};

// Copies the range's chunks from `chunks` into the cache (scatter) or from the cache into
// `chunks` (gather), asynchronously on `stream`: one kernel launch. Arguments are validated on the
// host (range inside the table or capacity, layer range, alignment); block ids are checked on the
// device (see take_bad_rows). For a flat cache `table` is ignored. Scatter requires that no block
// id appears twice among the entries the range covers (as scatter_chunk checks on the CPU).
Status scatter(const DeviceKvCache& cache, DeviceBlockTable table, const CopyRange& range,
               ChunkBuffer chunks, Stream stream);
Status gather(const DeviceKvCache& cache, DeviceBlockTable table, const CopyRange& range,
              ChunkBuffer chunks, Stream stream);

}  // namespace tierkv::kernels::cuda
