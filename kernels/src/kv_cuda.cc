#include "tierkv/kernels/kv_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>

#include "kv_cuda_launch.h"
#include "kv_view_checks.h"
#include "tierkv/kernels/cuda_device.h"

namespace tierkv::kernels::cuda {
namespace {

// Largest power of two <= 16 that divides v (16 for v = 0).
uint32_t alignment_of(uint64_t v) {
  uint32_t a = 16;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

}  // namespace

Status device_available() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-less error so later calls start clean
    return Status::Unavailable(std::string("no usable CUDA device: cudaGetDeviceCount: ") +
                               cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
  }
  if (count == 0) return Status::Unavailable("no CUDA device is visible to this process");
  return Status::Ok();
}

DeviceKvCache::DeviceKvCache(DeviceKvCache&& other) noexcept { *this = std::move(other); }

DeviceKvCache& DeviceKvCache::operator=(DeviceKvCache&& other) noexcept {
  if (this == &other) return *this;
  reset();
  paged_ = other.paged_;
  device_ = other.device_;
  sm_count_ = other.sm_count_;
  num_layers_ = other.num_layers_;
  block_size_ = other.block_size_;
  num_blocks_ = other.num_blocks_;
  capacity_tokens_ = other.capacity_tokens_;
  row_bytes_ = other.row_bytes_;
  head_bytes_ = other.head_bytes_;
  token_stride_ = other.token_stride_;
  head_stride_ = other.head_stride_;
  vector_bytes_ = other.vector_bytes_;
  k_layers_dev_ = std::exchange(other.k_layers_dev_, nullptr);
  v_layers_dev_ = std::exchange(other.v_layers_dev_, nullptr);
  bad_rows_dev_ = std::exchange(other.bad_rows_dev_, nullptr);
  return *this;
}

DeviceKvCache::~DeviceKvCache() { reset(); }

void DeviceKvCache::reset() {
  if (k_layers_dev_ == nullptr && v_layers_dev_ == nullptr && bad_rows_dev_ == nullptr) return;
  DeviceScope scope(device_);
  (void)cudaFree(k_layers_dev_);
  (void)cudaFree(v_layers_dev_);
  (void)cudaFree(bad_rows_dev_);
  k_layers_dev_ = nullptr;
  v_layers_dev_ = nullptr;
  bad_rows_dev_ = nullptr;
}

Status DeviceKvCache::init(std::span<std::byte* const> k_layers,
                           std::span<std::byte* const> v_layers, uint32_t alignment_of_rows) {
  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    return cuda_error(e, "cudaGetDeviceCount");
  }
  if (device_ < 0 || device_ >= count) {
    return Status::InvalidArgument("device " + std::to_string(device_) + " is out of range [0, " +
                                   std::to_string(count) + ")");
  }
  DeviceScope scope(device_);
  if (scope.status() != cudaSuccess) {
    return cuda_error(scope.status(), "cudaSetDevice(" + std::to_string(device_) + ")");
  }
  if (cudaError_t e = cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_);
      e != cudaSuccess) {
    return cuda_error(e, "cudaDeviceGetAttribute(multiprocessor count)");
  }
  // Every layer must be device memory of this device: a host pointer here would fault in the
  // kernel, far from the mistake.
  uint32_t align = alignment_of_rows;
  for (uint32_t l = 0; l < num_layers_; ++l) {
    for (std::byte* p : {k_layers[l], v_layers[l]}) {
      cudaPointerAttributes attr{};
      const cudaError_t e = cudaPointerGetAttributes(&attr, p);
      if (e != cudaSuccess) (void)cudaGetLastError();
      if (e != cudaSuccess ||
          (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) ||
          attr.device != device_) {
        return Status::InvalidArgument(
            "layer " + std::to_string(l) + ": " + (p == k_layers[l] ? "K" : "V") +
            " pointer is not device memory of device " + std::to_string(device_));
      }
      align = std::min(align, alignment_of(reinterpret_cast<uintptr_t>(p)));
    }
  }
  vector_bytes_ = align;

  const size_t table_bytes = sizeof(std::byte*) * num_layers_;
  if (cudaError_t e = cudaMalloc(&k_layers_dev_, table_bytes); e != cudaSuccess) {
    return cuda_error(e, "cudaMalloc(layer table)");
  }
  if (cudaError_t e = cudaMalloc(&v_layers_dev_, table_bytes); e != cudaSuccess) {
    return cuda_error(e, "cudaMalloc(layer table)");
  }
  if (cudaError_t e = cudaMalloc(&bad_rows_dev_, sizeof(*bad_rows_dev_)); e != cudaSuccess) {
    return cuda_error(e, "cudaMalloc(bad row counter)");
  }
  // Synchronous copies: this runs once per registered cache, never on the hot path.
  if (cudaError_t e =
          cudaMemcpy(k_layers_dev_, k_layers.data(), table_bytes, cudaMemcpyHostToDevice);
      e != cudaSuccess) {
    return cuda_error(e, "upload K layer table");
  }
  if (cudaError_t e =
          cudaMemcpy(v_layers_dev_, v_layers.data(), table_bytes, cudaMemcpyHostToDevice);
      e != cudaSuccess) {
    return cuda_error(e, "upload V layer table");
  }
  if (cudaError_t e = cudaMemset(bad_rows_dev_, 0, sizeof(*bad_rows_dev_)); e != cudaSuccess) {
    return cuda_error(e, "clear bad row counter");
  }
  return Status::Ok();
}

Result<DeviceKvCache> DeviceKvCache::create_paged(const PagedKvView& view, int device) {
  TIERKV_RETURN_IF_ERROR(view.validate());
  DeviceKvCache c;
  c.paged_ = true;
  c.device_ = device;
  c.num_layers_ = view.num_layers();
  c.block_size_ = view.block_size;
  c.num_blocks_ = view.num_blocks;
  c.row_bytes_ = view.row_bytes();
  c.head_bytes_ = c.row_bytes_;  // a paged row is contiguous: one run per token
  c.token_stride_ = c.row_bytes_;
  c.head_stride_ = c.row_bytes_;
  c.capacity_tokens_ = uint64_t{view.block_size} * view.num_blocks;
  TIERKV_RETURN_IF_ERROR(c.init(view.k_layers, view.v_layers, alignment_of(c.row_bytes_)));
  return c;
}

Result<DeviceKvCache> DeviceKvCache::create_flat(const FlatKvView& view, int device) {
  TIERKV_RETURN_IF_ERROR(view.validate());
  DeviceKvCache c;
  c.paged_ = false;
  c.device_ = device;
  c.num_layers_ = view.num_layers();
  c.capacity_tokens_ = view.capacity_tokens;
  c.row_bytes_ = view.row_bytes();
  c.token_stride_ = view.token_stride_bytes();
  if (view.head_stride_bytes() == view.head_bytes()) {
    // Heads packed within a token: the whole row is one contiguous run.
    c.head_bytes_ = c.row_bytes_;
    c.head_stride_ = c.row_bytes_;
  } else {
    c.head_bytes_ = view.head_bytes();
    c.head_stride_ = view.head_stride_bytes();
  }
  const uint32_t align = std::min(
      {alignment_of(c.head_bytes_), alignment_of(c.token_stride_), alignment_of(c.head_stride_)});
  TIERKV_RETURN_IF_ERROR(c.init(view.k_layers, view.v_layers, align));
  return c;
}

Result<uint64_t> DeviceKvCache::take_bad_rows(Stream stream) const {
  DeviceScope scope(device_);
  unsigned long long count = 0;  // NOLINT(google-runtime-int)
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (cudaError_t e =
          cudaMemcpyAsync(&count, bad_rows_dev_, sizeof(count), cudaMemcpyDeviceToHost, s);
      e != cudaSuccess) {
    return cuda_error(e, "read bad row counter");
  }
  if (cudaError_t e = cudaMemsetAsync(bad_rows_dev_, 0, sizeof(count), s); e != cudaSuccess) {
    return cuda_error(e, "clear bad row counter");
  }
  if (cudaError_t e = cudaStreamSynchronize(s); e != cudaSuccess) {
    return cuda_error(e, "cudaStreamSynchronize");
  }
  return uint64_t{count};
}

Status launch_copy(const DeviceKvCache& cache, DeviceBlockTable table, const CopyRange& range,
                   ChunkBuffer chunks, bool scatter, Stream stream) {
  if (cache.k_layers_dev_ == nullptr) {
    return Status::FailedPrecondition("DeviceKvCache was moved from");
  }
  const uint32_t layer_end = range.layer_end == 0 ? cache.num_layers_ : range.layer_end;
  if (range.layer_begin >= layer_end || layer_end > cache.num_layers_) {
    return Status::InvalidArgument(
        "layers [" + std::to_string(range.layer_begin) + ", " + std::to_string(layer_end) +
        ") are not a non-empty range of [0, " + std::to_string(cache.num_layers_) + ")");
  }
  TIERKV_RETURN_IF_ERROR(kernels::detail::check_chunk_tokens(range.chunk_tokens));
  // Grid z is the chunk; rows within a launch are counted in 32 bits.
  if (range.num_chunks == 0 || range.num_chunks > 65535) {
    return Status::InvalidArgument("num_chunks " + std::to_string(range.num_chunks) +
                                   " is out of range [1, 65535]");
  }
  if (chunks.data == nullptr) return Status::InvalidArgument("chunk buffer is null");
  const uint32_t layers = layer_end - range.layer_begin;
  const uint64_t segment_bytes = uint64_t{range.chunk_tokens} * cache.row_bytes_;
  const uint64_t chunk_bytes = 2 * uint64_t{layers} * segment_bytes;
  const uint64_t chunk_stride = chunks.chunk_stride == 0 || chunks.chunk_offsets != nullptr
                                    ? chunk_bytes
                                    : chunks.chunk_stride;
  if (chunk_stride < chunk_bytes) {
    return Status::InvalidArgument("chunk_stride " + std::to_string(chunk_stride) +
                                   " is less than the " + std::to_string(chunk_bytes) +
                                   " bytes of one chunk's rows");
  }
  const uint64_t tokens = uint64_t{range.num_chunks} * range.chunk_tokens;

  detail::KvCopyParams p;
  p.k_layers = cache.k_layers_dev_;
  p.v_layers = cache.v_layers_dev_;
  p.token_stride = cache.token_stride_;
  p.head_stride = cache.head_stride_;
  p.chunk_tokens = range.chunk_tokens;
  p.layer_begin = range.layer_begin;
  p.chunks = chunks.data;
  p.chunk_stride = chunk_stride;
  p.chunk_offsets = chunks.chunk_offsets;
  p.segment_bytes = segment_bytes;
  p.bad_rows = cache.bad_rows_dev_;
  if (cache.paged_) {
    if (table.data == nullptr) return Status::InvalidArgument("block table is null");
    uint64_t covered = 0;
    if (__builtin_mul_overflow(table.entries, uint64_t{cache.block_size_}, &covered)) {
      covered = UINT64_MAX;
    }
    if (range.first_token > covered || tokens > covered - range.first_token) {
      return Status::InvalidArgument("tokens [" + std::to_string(range.first_token) + ", " +
                                     std::to_string(range.first_token + tokens) +
                                     ") are not covered by a block table of " +
                                     std::to_string(table.entries) + " blocks of " +
                                     std::to_string(cache.block_size_) + " tokens");
    }
    p.block_table = table.data;
    p.block_size = cache.block_size_;
    p.num_blocks = cache.num_blocks_;
    p.first_entry = range.first_token / cache.block_size_;
    p.first_row = static_cast<uint32_t>(range.first_token % cache.block_size_);
    p.block_size_div = FastDivmod(cache.block_size_);
    if (p.first_row + tokens >= (uint64_t{1} << 31)) {
      return Status::InvalidArgument("a launch of " + std::to_string(tokens) +
                                     " tokens is too large; split it (at most 2^31 rows)");
    }
  } else {
    if (range.first_token > cache.capacity_tokens_ ||
        tokens > cache.capacity_tokens_ - range.first_token) {
      return Status::InvalidArgument("tokens [" + std::to_string(range.first_token) + ", " +
                                     std::to_string(range.first_token + tokens) +
                                     ") exceed the cache's capacity_tokens " +
                                     std::to_string(cache.capacity_tokens_));
    }
    p.first_entry = range.first_token;
    p.first_row = 0;
  }

  // The widest access every address allows: cache side (fixed at create), chunk side here
  // (chunk_offsets are multiples of 16 by contract).
  const uint32_t vec =
      std::min({cache.vector_bytes_, alignment_of(segment_bytes), alignment_of(chunk_stride),
                alignment_of(reinterpret_cast<uintptr_t>(chunks.data))});
  const uint64_t segment_vecs = segment_bytes / vec;
  if (segment_vecs >= (uint64_t{1} << 31)) {
    return Status::InvalidArgument("one layer's rows of a chunk (" + std::to_string(segment_bytes) +
                                   " bytes) are too large for one launch at " +
                                   std::to_string(vec) + "-byte accesses");
  }
  p.segment_vecs = static_cast<uint32_t>(segment_vecs);
  p.row_vecs = FastDivmod(static_cast<uint32_t>(cache.row_bytes_ / vec));
  p.run_vecs = FastDivmod(static_cast<uint32_t>(cache.head_bytes_ / vec));

  // Enough blocks to fill every SM several times over, none with nothing to do.
  const uint64_t per_block = uint64_t{detail::kThreads} * detail::kUnroll;
  const uint64_t needed = (segment_vecs + per_block - 1) / per_block;
  const uint64_t slices = uint64_t{2} * layers * range.num_chunks;
  const uint64_t wanted =
      std::max<uint64_t>(1, (uint64_t{8} * cache.sm_count_ + slices - 1) / slices);
  const dim3 grid(static_cast<unsigned>(std::min(needed, std::max<uint64_t>(wanted, 1))),
                  2 * layers, range.num_chunks);

  DeviceScope scope(cache.device_);
  if (scope.status() != cudaSuccess) {
    return cuda_error(scope.status(), "cudaSetDevice(" + std::to_string(cache.device_) + ")");
  }
  const cudaError_t e =
      detail::launch_kv_copy(p, scatter ? detail::Direction::kScatter : detail::Direction::kGather,
                             cache.paged_, vec, grid, reinterpret_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) return cuda_error(e, scatter ? "scatter launch" : "gather launch");
  return Status::Ok();
}

Status scatter(const DeviceKvCache& cache, DeviceBlockTable table, const CopyRange& range,
               ChunkBuffer chunks, Stream stream) {
  return launch_copy(cache, table, range, chunks, true, stream);
}

Status gather(const DeviceKvCache& cache, DeviceBlockTable table, const CopyRange& range,
              ChunkBuffer chunks, Stream stream) {
  return launch_copy(cache, table, range, chunks, false, stream);
}

}  // namespace tierkv::kernels::cuda
