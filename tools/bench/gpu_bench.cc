// tierkv-bench gpu: the engine-side GPU path against the GPU box's physical limits, measured in
// the same run. Built only with CUDA; without a visible GPU it says why and exits non-zero.
//
// Figures: pinned host-to-device and device-to-host copy bandwidth (one large cudaMemcpyAsync
// from cudaHostAlloc'd memory: the PCIe limit), the same from the daemon's registered shm pool;
// device-to-device copy bandwidth (cudaMemcpyAsync, bytes read + written); the scatter and gather
// kernels moving 1 GiB of chunks in one launch between a chunk buffer and an 8B-class paged (and
// flat) cache with a shuffled block table, counted the same way (bytes read + written); tierkv's
// store and load of a 32k-token prefix (32 layers x 8 kv heads x 128 dim bf16 = 128 KiB per
// token, 256-token chunks) between a paged cache and the host tier of a tierkvd started by the
// bench, each as a fraction of the raw copy bandwidth, verified byte for byte once; and the load
// of the same prefix from the daemon's GPU tier (a second tierkvd, with [gpu] capacity set and
// promotion after one load: the prefix is stored, loaded once, and waited for until every chunk
// is in tier GPU), device to device from the daemon's pool into the paged cache, as a fraction of
// the device-to-device copy bandwidth (bytes read + written) and against the host-tier load.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench_command.h"
#include "bench/bench_daemon.h"
#include "bench/measure.h"
#include "common/connect.h"
#include "tierkv/client.h"
#include "tierkv/cuda_transfer.h"
#include "tierkv/gpu_pool.h"
#include "tierkv/kernels/cuda_device.h"
#include "tierkv/kernels/half.h"
#include "tierkv/kernels/kv_cuda.h"
#include "tierkv/kernels/quantize.h"
#include "tierkv/kernels/quantize_cuda.h"

namespace tierkv::bench {

namespace {

// Targets from the issue.
constexpr double kLoadVsH2dTarget = 0.9;
constexpr double kKernelVsD2dTarget = 0.8;

// The 8B-class layout.
constexpr uint32_t kLayers = 32;
constexpr uint32_t kHeads = 8;
constexpr uint32_t kHeadDim = 128;
constexpr uint32_t kElemBytes = 2;
constexpr uint32_t kChunkTokens = 256;
constexpr uint32_t kBlockSize = 16;
constexpr uint64_t kRowBytes = uint64_t{kHeads} * kHeadDim * kElemBytes;  // 2 KiB

struct Settings {
  uint64_t copy_bytes;  // raw copies
  uint32_t copy_runs;
  uint32_t kernel_chunks;  // chunks per kernel launch (32 MiB each)
  uint32_t kernel_runs;
  uint32_t load_runs;
};
constexpr Settings kFull{kGiB, 9, 32, 15, 7};
constexpr Settings kQuick{256 * kMiB, 3, 8, 3, 2};

using kernels::cuda::cuda_error;
#define BENCH_CUDA(expr, what)                                                        \
  do {                                                                                \
    const cudaError_t bench_cuda_error_ = (expr);                                     \
    if (bench_cuda_error_ != cudaSuccess) return cuda_error(bench_cuda_error_, what); \
  } while (0)

// Device memory (cudaMalloc) or pinned host memory (cudaHostAlloc), freed on scope exit.
template <bool kPinnedHost>
class CudaMemory {
 public:
  CudaMemory() = default;
  CudaMemory(const CudaMemory&) = delete;
  CudaMemory& operator=(const CudaMemory&) = delete;
  ~CudaMemory() { (void)(kPinnedHost ? cudaFreeHost(p_) : cudaFree(p_)); }
  Status allocate(uint64_t bytes) {
    if constexpr (kPinnedHost) {
      BENCH_CUDA(cudaHostAlloc(&p_, bytes, cudaHostAllocDefault),
                 "cudaHostAlloc of " + std::to_string(bytes) + " bytes");
    } else {
      BENCH_CUDA(cudaMalloc(&p_, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
    }
    bytes_ = bytes;
    return Status::Ok();
  }
  [[nodiscard]] std::byte* data() const { return static_cast<std::byte*>(p_); }
  [[nodiscard]] uint64_t size() const { return bytes_; }
  [[nodiscard]] std::span<std::byte> span() const { return {data(), bytes_}; }

 private:
  void* p_ = nullptr;
  uint64_t bytes_ = 0;
};
using DeviceMemory = CudaMemory<false>;
using PinnedMemory = CudaMemory<true>;

// Times `enqueue` (work on `stream`) with events: one warm-up, then `runs` timed runs; returns
// the median seconds.
template <typename Enqueue>
Result<double> time_on_stream(cudaStream_t stream, uint32_t runs, Enqueue enqueue) {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  BENCH_CUDA(cudaEventCreate(&start), "cudaEventCreate");
  BENCH_CUDA(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> seconds;
  Status failed;
  for (uint32_t r = 0; r <= runs && failed.ok(); ++r) {
    failed = [&]() -> Status {
      BENCH_CUDA(cudaEventRecord(start, stream), "cudaEventRecord");
      TIERKV_RETURN_IF_ERROR(enqueue());
      BENCH_CUDA(cudaEventRecord(stop, stream), "cudaEventRecord");
      BENCH_CUDA(cudaEventSynchronize(stop), "timed work");
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      if (r > 0) seconds.push_back(ms / 1e3);
      return Status::Ok();
    }();
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  TIERKV_RETURN_IF_ERROR(failed);
  return median(seconds);
}

// time_on_stream() of one cudaMemcpyAsync of `bytes` from `src` to `dst`.
Result<double> time_copy(cudaStream_t stream, uint32_t runs, void* dst, const void* src,
                         uint64_t bytes, cudaMemcpyKind kind, const char* what) {
  return time_on_stream(stream, runs, [&]() -> Status {
    BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, stream), what);
    return Status::Ok();
  });
}

// An 8B-class paged cache on the device: per layer K and V tensors of num_blocks blocks.
struct PagedCache {
  std::vector<DeviceMemory> tensors;
  std::vector<std::byte*> k;
  std::vector<std::byte*> v;
  uint32_t num_blocks = 0;

  Status allocate(uint32_t blocks) {
    num_blocks = blocks;
    tensors = std::vector<DeviceMemory>(2 * kLayers);
    for (auto& t : tensors)
      TIERKV_RETURN_IF_ERROR(t.allocate(uint64_t{blocks} * kBlockSize * kRowBytes));
    for (uint32_t l = 0; l < kLayers; ++l) {
      k.push_back(tensors[2 * l].data());
      v.push_back(tensors[2 * l + 1].data());
    }
    return Status::Ok();
  }
  [[nodiscard]] kernels::PagedKvView view() const {
    return {.k_layers = k,
            .v_layers = v,
            .block_size = kBlockSize,
            .num_blocks = num_blocks,
            .num_kv_heads = kHeads,
            .head_dim = kHeadDim,
            .elem_bytes = kElemBytes};
  }
  // Fills every tensor from `pattern` (pinned), each from its own offset: not zeros, not equal.
  Status fill(const PinnedMemory& pattern, uint64_t pattern_bytes) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const uint64_t off = (i * 4099) % (pattern_bytes / 2);
      for (uint64_t done = 0; done < tensors[i].size();) {
        const uint64_t n = std::min(tensors[i].size() - done, pattern_bytes - off);
        BENCH_CUDA(
            cudaMemcpy(tensors[i].data() + done, pattern.data() + off, n, cudaMemcpyHostToDevice),
            "fill cache");
        done += n;
      }
    }
    return Status::Ok();
  }
};

// `used` distinct blocks of [0, num_blocks), shuffled.
std::vector<int32_t> shuffled_table(uint32_t used, uint32_t num_blocks, uint64_t seed) {
  std::vector<int32_t> t(num_blocks);
  std::iota(t.begin(), t.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(t.begin(), t.end(), rng);
  t.resize(used);
  return t;
}

class GpuBench : public BenchCommand {
 public:
  GpuBench() { daemon_.host_capacity_gib = 8; }
  [[nodiscard]] std::string name() const override { return "gpu"; }
  [[nodiscard]] std::string summary() const override {
    return "GPU path: kernels vs device copy, 32k-token load/store vs PCIe copy";
  }
  void add_options(CLI::App& app) override {
    add_daemon_options(app, daemon_);
    app.add_option("--device", device_, "CUDA device to measure")->check(CLI::NonNegativeNumber);
    app.add_option("--prefix-tokens", prefix_tokens_,
                   "tokens of the prefix stored and loaded (a multiple of 256)")
        ->check(CLI::Range(uint64_t{256}, uint64_t{1} << 20));
    app.add_option("--gpu-tier-gib", gpu_tier_gib_,
                   "GPU tier of the second daemon, for the load from the GPU tier (0 = skip that "
                   "part; default: the prefix's size, rounded up, plus 1 GiB)");
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  DaemonOptions daemon_;
  int device_ = 0;
  uint64_t prefix_tokens_ = 32768;
  int64_t gpu_tier_gib_ = -1;  // -1: sized to the prefix
};

struct CopyFigures {
  double h2d_GBps = 0;
  double h2d_1MiB_GBps = 0;  // the same bytes as back-to-back copies of 1 MiB
  double h2d_4MiB_GBps = 0;
  double d2h_GBps = 0;
  double d2d_GBps = 0;  // bytes read + written
};

Result<CopyFigures> measure_copies(const Settings& s, const PinnedMemory& host,
                                   cudaStream_t stream) {
  DeviceMemory a;
  DeviceMemory b;
  TIERKV_RETURN_IF_ERROR(a.allocate(s.copy_bytes));
  TIERKV_RETURN_IF_ERROR(b.allocate(s.copy_bytes));
  const double bytes = static_cast<double>(s.copy_bytes);
  CopyFigures f;
  auto h2d = time_copy(stream, s.copy_runs, a.data(), host.data(), s.copy_bytes,
                       cudaMemcpyHostToDevice, "H2D copy");
  if (!h2d.ok()) return h2d.status();
  f.h2d_GBps = bytes / *h2d / 1e9;
  for (uint64_t piece : {kMiB, 4 * kMiB}) {
    auto t = time_on_stream(stream, s.copy_runs, [&]() -> Status {
      for (uint64_t off = 0; off < s.copy_bytes; off += piece) {
        BENCH_CUDA(cudaMemcpyAsync(a.data() + off, host.data() + off, piece, cudaMemcpyHostToDevice,
                                   stream),
                   "H2D copy");
      }
      return Status::Ok();
    });
    if (!t.ok()) return t.status();
    (piece == kMiB ? f.h2d_1MiB_GBps : f.h2d_4MiB_GBps) = bytes / *t / 1e9;
  }
  auto d2h = time_copy(stream, s.copy_runs, host.data(), a.data(), s.copy_bytes,
                       cudaMemcpyDeviceToHost, "D2H copy");
  if (!d2h.ok()) return d2h.status();
  f.d2h_GBps = bytes / *d2h / 1e9;
  auto d2d = time_copy(stream, s.copy_runs * 2, b.data(), a.data(), s.copy_bytes,
                       cudaMemcpyDeviceToDevice, "D2D copy");
  if (!d2d.ok()) return d2d.status();
  f.d2d_GBps = 2 * bytes / *d2d / 1e9;
  return f;
}

struct KernelFigures {
  double scatter_GBps = 0;  // bytes read + written
  double gather_GBps = 0;
  double flat_scatter_GBps = 0;
  double flat_gather_GBps = 0;
  uint32_t vector_bytes = 0;
};

// One launch moves `chunks` whole chunks (32 MiB each) between a chunk buffer and the cache.
Result<KernelFigures> measure_kernels(const Settings& s, const PinnedMemory& pattern,
                                      uint64_t pattern_bytes, cudaStream_t stream, int device) {
  const uint32_t chunks = s.kernel_chunks;
  const uint32_t tokens = chunks * kChunkTokens;
  const uint64_t chunk_bytes = 2 * uint64_t{kLayers} * kChunkTokens * kRowBytes;
  const uint64_t moved = 2 * uint64_t{chunks} * chunk_bytes;  // read + written
  DeviceMemory buffer;
  TIERKV_RETURN_IF_ERROR(buffer.allocate(uint64_t{chunks} * chunk_bytes));
  BENCH_CUDA(cudaMemset(buffer.data(), 0x5A, buffer.size()), "cudaMemset");
  const kernels::cuda::CopyRange range{
      .first_token = 0, .chunk_tokens = kChunkTokens, .num_chunks = chunks};
  // Times the scatter and the gather launch over `cache`: bandwidth moved, read + written.
  const auto time_launches = [&](const kernels::cuda::DeviceKvCache& cache,
                                 kernels::cuda::DeviceBlockTable table, double& scatter_GBps,
                                 double& gather_GBps) -> Status {
    auto sc = time_on_stream(stream, s.kernel_runs, [&] {
      return kernels::cuda::scatter(cache, table, range, {buffer.data()}, stream);
    });
    if (!sc.ok()) return sc.status();
    auto ga = time_on_stream(stream, s.kernel_runs, [&] {
      return kernels::cuda::gather(cache, table, range, {buffer.data()}, stream);
    });
    if (!ga.ok()) return ga.status();
    scatter_GBps = static_cast<double>(moved) / *sc / 1e9;
    gather_GBps = static_cast<double>(moved) / *ga / 1e9;
    return Status::Ok();
  };
  KernelFigures f;
  {
    // Twice the blocks the chunks need, so the table scatters them over the whole cache.
    PagedCache cache;
    TIERKV_RETURN_IF_ERROR(cache.allocate(2 * tokens / kBlockSize));
    TIERKV_RETURN_IF_ERROR(cache.fill(pattern, pattern_bytes));
    const std::vector<int32_t> table = shuffled_table(tokens / kBlockSize, cache.num_blocks, 7);
    DeviceMemory table_dev;
    TIERKV_RETURN_IF_ERROR(table_dev.allocate(table.size() * sizeof(int32_t)));
    BENCH_CUDA(cudaMemcpy(table_dev.data(), table.data(), table_dev.size(), cudaMemcpyHostToDevice),
               "upload block table");
    auto dev = kernels::cuda::DeviceKvCache::create_paged(cache.view(), device);
    if (!dev.ok()) return context(dev.status(), "register paged cache");
    f.vector_bytes = dev->vector_bytes();
    const kernels::cuda::DeviceBlockTable dt{reinterpret_cast<const int32_t*>(table_dev.data()),
                                             table.size()};
    TIERKV_RETURN_IF_ERROR(time_launches(*dev, dt, f.scatter_GBps, f.gather_GBps));
  }
  {
    // A flat head-major cache ([heads][tokens][dim] per layer, as transformers keeps it).
    std::vector<DeviceMemory> tensors(2 * kLayers);
    std::vector<std::byte*> k, v;
    for (uint32_t l = 0; l < kLayers; ++l) {
      TIERKV_RETURN_IF_ERROR(tensors[2 * l].allocate(uint64_t{tokens} * kRowBytes));
      TIERKV_RETURN_IF_ERROR(tensors[2 * l + 1].allocate(uint64_t{tokens} * kRowBytes));
      k.push_back(tensors[2 * l].data());
      v.push_back(tensors[2 * l + 1].data());
    }
    const kernels::FlatKvView view{.k_layers = k,
                                   .v_layers = v,
                                   .capacity_tokens = tokens,
                                   .num_kv_heads = kHeads,
                                   .head_dim = kHeadDim,
                                   .elem_bytes = kElemBytes,
                                   .token_stride = uint64_t{kHeadDim} * kElemBytes,
                                   .head_stride = uint64_t{tokens} * kHeadDim * kElemBytes};
    auto dev = kernels::cuda::DeviceKvCache::create_flat(view, device);
    if (!dev.ok()) return context(dev.status(), "register flat cache");
    TIERKV_RETURN_IF_ERROR(time_launches(*dev, {}, f.flat_scatter_GBps, f.flat_gather_GBps));
  }
  return f;
}

struct CodecFigures {
  const char* name;
  double quantize_GBps = 0;          // input bytes per second
  double dequantize_GBps = 0;        // output bytes per second
  double dequantize_moved_GBps = 0;  // encoded bytes read + output bytes written, per second
};

// Quantizes and dequantizes `slabs` bf16 slabs of 256 tokens x 8 heads x 128 (a chunk's K or V
// of one layer) in one launch each, with typical (Gaussian) values.
Result<std::vector<CodecFigures>> measure_codecs(const Settings& s, cudaStream_t stream) {
  using kernels::QuantScheme;
  using kernels::QuantSpec;
  using kernels::SlabShape;
  const SlabShape shape{kChunkTokens, kHeads, kHeadDim};
  const uint64_t slab_bytes = shape.elements() * kElemBytes;
  const auto slabs = static_cast<uint32_t>(s.copy_bytes / slab_bytes);
  DeviceMemory floats;
  TIERKV_RETURN_IF_ERROR(floats.allocate(uint64_t{slabs} * slab_bytes));
  {
    std::vector<std::byte> slab(slab_bytes);
    std::mt19937_64 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (uint64_t i = 0; i < shape.elements(); ++i) {
      kernels::store_from_f32(DType::kBFloat16, slab.data(), i, normal(rng));
    }
    for (uint32_t i = 0; i < slabs; ++i) {
      BENCH_CUDA(cudaMemcpy(floats.data() + i * slab_bytes, slab.data(), slab_bytes,
                            cudaMemcpyHostToDevice),
                 "fill slabs");
    }
  }
  const std::pair<const char*, QuantSpec> schemes[] = {
      {"fp8", {QuantScheme::kFp8E4M3, 0}},
      {"fp8_auto", {QuantScheme::kFp8Auto, 0}},
      {"int8", {QuantScheme::kInt8, 0}},
      {"int4_key", {QuantScheme::kInt4Key, 32}},
      {"int4_value", {QuantScheme::kInt4Value, 32}}};
  std::vector<CodecFigures> out;
  for (const auto& [name, spec] : schemes) {
    const uint64_t enc_bytes = kernels::quant_sizes(spec, shape).total();
    DeviceMemory encoded;
    DeviceMemory scratch;
    TIERKV_RETURN_IF_ERROR(encoded.allocate(uint64_t{slabs} * enc_bytes));
    TIERKV_RETURN_IF_ERROR(scratch.allocate(
        4 * std::max<uint64_t>(1, kernels::cuda::quantize_scratch_floats(spec, shape, slabs))));
    const kernels::cuda::SlabBatch batch{slabs, 0, 0};
    auto q = time_on_stream(stream, s.kernel_runs, [&] {
      return kernels::cuda::quantize_slabs(spec, shape, DType::kBFloat16, floats.data(),
                                           encoded.data(), batch,
                                           reinterpret_cast<float*>(scratch.data()), stream);
    });
    if (!q.ok()) return q.status();
    auto d = time_on_stream(stream, s.kernel_runs, [&] {
      return kernels::cuda::dequantize_slabs(spec, shape, encoded.data(), DType::kBFloat16,
                                             floats.data(), batch, stream);
    });
    if (!d.ok()) return d.status();
    const double out_bytes = static_cast<double>(floats.size());
    CodecFigures f{name};
    f.quantize_GBps = out_bytes / *q / 1e9;
    f.dequantize_GBps = out_bytes / *d / 1e9;
    f.dequantize_moved_GBps = (out_bytes + static_cast<double>(encoded.size())) / *d / 1e9;
    out.push_back(f);
  }
  return out;
}

struct LoadFigures {
  double GBps = 0;
  double first_layer_us = 0;  // from the call to the first layer group in the cache
  double submit_us = 0;       // how long load() kept the calling thread
};

struct PrefixFigures {
  double store_GBps = 0;
  LoadFigures load;              // default options
  LoadFigures load_4MiB_groups;  // layer groups of >= 4 MiB per chunk, batched copies
  LoadFigures load_unbatched;    // default groups, one copy call per chunk
  double shm_h2d_GBps = 0;       // raw copy from the registered pool
  double pin_seconds = 0;
  uint64_t prefix_bytes = 0;
  uint32_t runs = 0;
};

// Gathers chunk i of `cache` on the device and compares it with `want` on the host.
Status verify_chunk(const kernels::cuda::DeviceKvCache& cache,
                    kernels::cuda::DeviceBlockTable table, uint64_t chunk,
                    const DeviceMemory& scratch, const PinnedMemory& host,
                    std::span<const std::byte> want, cudaStream_t stream, const char* what) {
  const kernels::cuda::CopyRange range{.first_token = chunk * kChunkTokens,
                                       .chunk_tokens = kChunkTokens};
  TIERKV_RETURN_IF_ERROR(kernels::cuda::gather(cache, table, range, {scratch.data()}, stream));
  BENCH_CUDA(
      cudaMemcpyAsync(host.data(), scratch.data(), want.size(), cudaMemcpyDeviceToHost, stream),
      "verify copy");
  BENCH_CUDA(cudaStreamSynchronize(stream), "verify");
  if (std::memcmp(host.data(), want.data(), want.size()) != 0) {
    return Status::Internal(std::string(what) + ": chunk " + std::to_string(chunk) +
                            " differs from the bytes in its host slot");
  }
  return Status::Ok();
}

Result<PrefixFigures> measure_prefix(const Settings& s, Client& client,
                                     const std::shared_ptr<Client>& shared, uint64_t prefix_tokens,
                                     const PinnedMemory& pattern, uint64_t pattern_bytes,
                                     cudaStream_t stream, int device,
                                     const std::function<void(const std::string&)>& progress) {
  Layout layout;
  layout.num_layers = kLayers;
  layout.num_kv_heads = kHeads;
  layout.head_dim = kHeadDim;
  layout.dtype = DType::kBFloat16;
  layout.chunk_tokens = kChunkTokens;
  auto ns = client.register_layout(layout, kTenant);
  if (!ns.ok()) return context(ns.status(), "register_layout");
  const uint64_t chunks = prefix_tokens / kChunkTokens;
  const uint32_t used_blocks = static_cast<uint32_t>(prefix_tokens / kBlockSize);
  PrefixFigures f;
  f.prefix_bytes = chunks * ns->chunk_bytes();

  progress("pinning the daemon's host pool");
  auto pool = PinnedHostPool::pin(shared);
  if (!pool.ok()) return context(pool.status(), "pin host pool");
  f.pin_seconds = (*pool)->pin_seconds();

  // Two caches with room to spare, each with its own shuffled table.
  PagedCache src;
  PagedCache dst;
  TIERKV_RETURN_IF_ERROR(src.allocate(used_blocks + used_blocks / 16));
  TIERKV_RETURN_IF_ERROR(dst.allocate(used_blocks + used_blocks / 16));
  TIERKV_RETURN_IF_ERROR(src.fill(pattern, pattern_bytes));
  const std::vector<int32_t> src_table = shuffled_table(used_blocks, src.num_blocks, 11);
  const std::vector<int32_t> dst_table = shuffled_table(used_blocks, dst.num_blocks, 13);
  auto src_x = GpuTransfer::create_paged(*pool, *ns, src.view(), device);
  if (!src_x.ok()) return context(src_x.status(), "GpuTransfer for the source cache");
  auto dst_x = GpuTransfer::create_paged(*pool, *ns, dst.view(), device);
  if (!dst_x.ok()) return context(dst_x.status(), "GpuTransfer for the target cache");

  // Store once (timed: gather + D2H into the leased slots, then commit).
  progress("store of a " + std::to_string(prefix_tokens) + "-token prefix");
  std::mt19937_64 rng(17);
  const std::vector<TokenId> tokens = random_tokens(rng, prefix_tokens);
  {
    const auto t0 = Clock::now();
    auto put = client.begin_put(*ns, tokens);
    if (!put.ok()) return context(put.status(), "begin_put");
    for (size_t i = 0; i < put->chunks(); ++i) {
      if (!put->needs_write(i)) {
        return Status::ResourceExhausted("chunk " + std::to_string(i) +
                                         " of the prefix got no slot (host tier too small? use "
                                         "--host-capacity-gib)");
      }
    }
    TIERKV_RETURN_IF_ERROR((*src_x)->store(*put, src_table, stream));
    TIERKV_RETURN_IF_ERROR((*src_x)->synchronize());
    auto committed = put->commit();
    if (!committed.ok()) return context(committed.status(), "commit");
    f.store_GBps = static_cast<double>(f.prefix_bytes) / seconds_since(t0) / 1e9;
  }

  // Raw H2D from the registered pool itself, for reference: one large copy.
  {
    const std::span<std::byte> region = (*pool)->region();
    const uint64_t bytes = std::min<uint64_t>(s.copy_bytes, region.size());
    DeviceMemory d;
    TIERKV_RETURN_IF_ERROR(d.allocate(bytes));
    auto t = time_copy(stream, s.copy_runs, d.data(), region.data(), bytes, cudaMemcpyHostToDevice,
                       "H2D from the pool");
    if (!t.ok()) return t.status();
    f.shm_h2d_GBps = static_cast<double>(bytes) / *t / 1e9;
  }

  // Untimed check, once: after a load the target cache holds exactly the slots' bytes, and the
  // slots hold exactly the source cache's.
  {
    progress("verifying a load of the prefix");
    auto lease = client.load(*ns, tokens);
    if (!lease.ok()) return context(lease.status(), "load");
    if (lease->chunks() != chunks) {
      return Status::FailedPrecondition("load leased " + std::to_string(lease->chunks()) + " of " +
                                        std::to_string(chunks) + " chunks: evicted?");
    }
    TIERKV_RETURN_IF_ERROR((*dst_x)->load(*lease, 0, chunks, dst_table, stream));
    TIERKV_RETURN_IF_ERROR((*dst_x)->synchronize());
    auto src_dev = kernels::cuda::DeviceKvCache::create_paged(src.view(), device);
    auto dst_dev = kernels::cuda::DeviceKvCache::create_paged(dst.view(), device);
    if (!src_dev.ok() || !dst_dev.ok()) return Status::Internal("register caches for the check");
    DeviceMemory tables;
    TIERKV_RETURN_IF_ERROR(tables.allocate(2 * used_blocks * sizeof(int32_t)));
    BENCH_CUDA(cudaMemcpy(tables.data(), src_table.data(), used_blocks * sizeof(int32_t),
                          cudaMemcpyHostToDevice),
               "upload table");
    BENCH_CUDA(cudaMemcpy(tables.data() + used_blocks * sizeof(int32_t), dst_table.data(),
                          used_blocks * sizeof(int32_t), cudaMemcpyHostToDevice),
               "upload table");
    const auto* t = reinterpret_cast<const int32_t*>(tables.data());
    DeviceMemory scratch;
    PinnedMemory host;
    TIERKV_RETURN_IF_ERROR(scratch.allocate(ns->chunk_bytes()));
    TIERKV_RETURN_IF_ERROR(host.allocate(ns->chunk_bytes()));
    for (uint64_t i = 0; i < chunks; ++i) {
      TIERKV_RETURN_IF_ERROR(verify_chunk(*src_dev, {t, used_blocks}, i, scratch, host,
                                          lease->chunk(i), stream, "store"));
      TIERKV_RETURN_IF_ERROR(verify_chunk(*dst_dev, {t + used_blocks, used_blocks}, i, scratch,
                                          host, lease->chunk(i), stream, "load"));
    }
  }

  // Timed loads: lease, submit, wait for the first layer group and for the whole prefix.
  const auto measure_load = [&](GpuTransfer& x, uint32_t runs) -> Result<LoadFigures> {
    std::vector<double> gbps;
    std::vector<double> first_us;
    std::vector<double> submit_us;
    for (uint32_t r = 0; r <= runs; ++r) {  // run 0 warms up
      const auto t0 = Clock::now();
      auto lease = client.load(*ns, tokens);
      if (!lease.ok()) return context(lease.status(), "load");
      if (lease->chunks() != chunks) return Status::FailedPrecondition("prefix evicted");
      const auto t1 = Clock::now();
      TIERKV_RETURN_IF_ERROR(x.load(*lease, 0, chunks, dst_table, stream));
      const double submit = seconds_since(t1);
      BENCH_CUDA(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(x.layer_event(0))),
                 "first layer");
      const double first = seconds_since(t0);
      TIERKV_RETURN_IF_ERROR(x.synchronize());
      const double seconds = seconds_since(t0);
      if (r == 0) continue;
      gbps.push_back(static_cast<double>(f.prefix_bytes) / seconds / 1e9);
      first_us.push_back(first * 1e6);
      submit_us.push_back(submit * 1e6);
    }
    return LoadFigures{median(gbps), median(first_us), median(submit_us)};
  };
  progress("load of a " + std::to_string(prefix_tokens) + "-token prefix, " +
           std::to_string(s.load_runs) + " times");
  auto load = measure_load(**dst_x, s.load_runs);
  if (!load.ok()) return load.status();
  f.load = *load;
  f.runs = s.load_runs;
  // What the defaults buy: larger layer groups, and copies not batched.
  for (bool batched : {true, false}) {
    GpuTransferOptions o;
    o.min_copy_bytes = batched ? 4 * kMiB : o.min_copy_bytes;
    o.batch_copies = batched;
    auto x = GpuTransfer::create_paged(*pool, *ns, dst.view(), device, o);
    if (!x.ok()) return context(x.status(), "GpuTransfer, other options");
    auto l = measure_load(**x, std::max<uint32_t>(1, s.load_runs / 2));
    if (!l.ok()) return l.status();
    (batched ? f.load_4MiB_groups : f.load_unbatched) = *l;
  }
  (void)client.remove_namespace(ns->id);
  return f;
}

struct GpuTierFigures {
  bool measured = false;
  std::string skipped;         // why not, if not
  double GBps = 0;             // prefix bytes / (gpu_load lease + D2D scatter), median
  double transfer_GBps = 0;    // prefix bytes / (submit to synchronize): the scatter alone
  double first_layer_us = 0;   // from the lease request to the first layer group in the cache
  double lease_us = 0;         // the gpu_load round trip
  double promote_seconds = 0;  // from the first load until every chunk was in tier GPU
  uint64_t gpu_chunks = 0;
};

// Stores the prefix into the daemon (from a paged cache on the GPU), loads it until the daemon has
// promoted every chunk to its GPU tier, then times loads through the daemon's GPU pool into
// another paged cache, verified byte for byte once against the chunks in host RAM.
Result<GpuTierFigures> measure_gpu_tier(const Settings& s, Client& client,
                                        const std::shared_ptr<Client>& shared,
                                        uint64_t prefix_tokens, const PinnedMemory& pattern,
                                        uint64_t pattern_bytes, cudaStream_t stream, int device,
                                        const std::function<void(const std::string&)>& progress) {
  GpuTierFigures f;
  auto gpu = DaemonGpuPool::attach(shared);
  if (!gpu.ok()) {
    f.skipped = gpu.status().message();
    return f;
  }
  if ((*gpu)->device() != device) {
    f.skipped = "the daemon's GPU tier is on device " + std::to_string((*gpu)->device()) +
                ", not the measured device " + std::to_string(device);
    return f;
  }
  Layout layout;
  layout.num_layers = kLayers;
  layout.num_kv_heads = kHeads;
  layout.head_dim = kHeadDim;
  layout.dtype = DType::kBFloat16;
  layout.chunk_tokens = kChunkTokens;
  auto ns = client.register_layout(layout, std::string(kTenant) + "-gpu-tier");
  if (!ns.ok()) return context(ns.status(), "register_layout");
  const uint64_t chunks = prefix_tokens / kChunkTokens;
  const uint64_t prefix_bytes = chunks * ns->chunk_bytes();
  const auto used_blocks = static_cast<uint32_t>(prefix_tokens / kBlockSize);
  auto pinned = PinnedHostPool::pin(shared);
  if (!pinned.ok()) return context(pinned.status(), "pin host pool");
  PagedCache src;
  PagedCache dst;
  TIERKV_RETURN_IF_ERROR(src.allocate(used_blocks + used_blocks / 16));
  TIERKV_RETURN_IF_ERROR(dst.allocate(used_blocks + used_blocks / 16));
  TIERKV_RETURN_IF_ERROR(src.fill(pattern, pattern_bytes));
  const std::vector<int32_t> src_table = shuffled_table(used_blocks, src.num_blocks, 21);
  const std::vector<int32_t> dst_table = shuffled_table(used_blocks, dst.num_blocks, 23);
  std::mt19937_64 rng(29);
  const std::vector<TokenId> tokens = random_tokens(rng, prefix_tokens);
  {
    progress("GPU tier: storing the prefix");
    auto x = GpuTransfer::create_paged(*pinned, *ns, src.view(), device);
    if (!x.ok()) return context(x.status(), "GpuTransfer for the source cache");
    auto put = client.begin_put(*ns, tokens);
    if (!put.ok()) return context(put.status(), "begin_put");
    for (size_t i = 0; i < put->chunks(); ++i) {
      if (!put->needs_write(i)) {
        return Status::ResourceExhausted("GPU tier: chunk " + std::to_string(i) +
                                         " of the prefix got no host slot");
      }
    }
    TIERKV_RETURN_IF_ERROR((*x)->store(*put, src_table, stream));
    TIERKV_RETURN_IF_ERROR((*x)->synchronize());
    auto committed = put->commit();
    if (!committed.ok()) return context(committed.status(), "commit");
  }
  {
    // Loads count towards promotion; the copies run in the daemon, off its request path.
    progress("GPU tier: loading the prefix until the daemon has promoted it");
    const auto t0 = Clock::now();
    for (;;) {
      auto look = client.lookup(*ns, tokens);
      if (!look.ok()) return context(look.status(), "lookup");
      f.gpu_chunks =
          static_cast<uint64_t>(std::count(look->tiers.begin(), look->tiers.end(), Tier::kGpu));
      if (f.gpu_chunks == chunks) break;
      if (seconds_since(t0) > 60) {
        auto st = client.stats();
        return Status::Unavailable("GPU tier: after 60 s only " + std::to_string(f.gpu_chunks) +
                                   " of " + std::to_string(chunks) + " chunks were promoted (" +
                                   (st.ok() ? st->gpu_status + ", " +
                                                  std::to_string(st->gpu.promotion_failures) +
                                                  " failed promotions"
                                            : st.status().message()) +
                                   "); is --gpu-tier-gib large enough?");
      }
      auto lease = client.load(*ns, tokens);
      if (!lease.ok()) return context(lease.status(), "load");
      TIERKV_RETURN_IF_ERROR(lease->release());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    f.promote_seconds = seconds_since(t0);
  }
  auto x = GpuTransfer::create_paged(*pinned, *ns, dst.view(), device);
  if (!x.ok()) return context(x.status(), "GpuTransfer for the target cache");
  TIERKV_RETURN_IF_ERROR((*x)->use_gpu_tier(*gpu));
  {
    // Untimed check, once: every chunk loaded from the GPU tier equals its bytes in host RAM.
    progress("GPU tier: verifying a load of the prefix");
    auto lease = (*gpu)->load(*ns, tokens);
    if (!lease.ok()) return context(lease.status(), "gpu_load");
    if (lease->chunks() != chunks || lease->gpu_chunks() != chunks) {
      return Status::FailedPrecondition("gpu_load leased " + std::to_string(lease->gpu_chunks()) +
                                        " of " + std::to_string(chunks) + " chunks on the GPU");
    }
    TIERKV_RETURN_IF_ERROR((*x)->load(*lease, 0, chunks, dst_table, stream));
    TIERKV_RETURN_IF_ERROR((*x)->synchronize());
    auto host = client.load(*ns, tokens);
    if (!host.ok()) return context(host.status(), "load");
    auto dst_dev = kernels::cuda::DeviceKvCache::create_paged(dst.view(), device);
    if (!dst_dev.ok()) return context(dst_dev.status(), "register the cache for the check");
    DeviceMemory table;
    TIERKV_RETURN_IF_ERROR(table.allocate(used_blocks * sizeof(int32_t)));
    BENCH_CUDA(cudaMemcpy(table.data(), dst_table.data(), used_blocks * sizeof(int32_t),
                          cudaMemcpyHostToDevice),
               "upload table");
    DeviceMemory scratch;
    PinnedMemory check;
    TIERKV_RETURN_IF_ERROR(scratch.allocate(ns->chunk_bytes()));
    TIERKV_RETURN_IF_ERROR(check.allocate(ns->chunk_bytes()));
    for (uint64_t i = 0; i < chunks; ++i) {
      TIERKV_RETURN_IF_ERROR(
          verify_chunk(*dst_dev, {reinterpret_cast<const int32_t*>(table.data()), used_blocks}, i,
                       scratch, check, host->chunk(i), stream, "load from the GPU tier"));
    }
  }
  progress("GPU tier: load of the prefix, " + std::to_string(s.load_runs) + " times");
  std::vector<double> gbps, transfer_gbps, first_us, lease_us;
  for (uint32_t r = 0; r <= s.load_runs; ++r) {  // run 0 warms up
    const auto t0 = Clock::now();
    auto lease = (*gpu)->load(*ns, tokens);
    if (!lease.ok()) return context(lease.status(), "gpu_load");
    if (lease->gpu_chunks() != chunks) return Status::FailedPrecondition("prefix left the GPU");
    const auto t1 = Clock::now();
    TIERKV_RETURN_IF_ERROR((*x)->load(*lease, 0, chunks, dst_table, stream));
    BENCH_CUDA(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>((*x)->layer_event(0))),
               "first layer");
    const double first = seconds_since(t0);
    TIERKV_RETURN_IF_ERROR((*x)->synchronize());
    const double total = seconds_since(t0);
    const double transfer = seconds_since(t1);
    if (r == 0) continue;
    gbps.push_back(static_cast<double>(prefix_bytes) / total / 1e9);
    transfer_gbps.push_back(static_cast<double>(prefix_bytes) / transfer / 1e9);
    first_us.push_back(first * 1e6);
    lease_us.push_back((total - transfer) * 1e6);
  }
  f.GBps = median(gbps);
  f.transfer_GBps = median(transfer_gbps);
  f.first_layer_us = median(first_us);
  f.lease_us = median(lease_us);
  f.measured = true;
  (void)client.remove_namespace(ns->id);
  return f;
}

Result<BenchReport> GpuBench::run(const CommonOptions& common) {
  const Settings& s = common.quick ? kQuick : kFull;
  const auto progress = [&](const std::string& line) {
    if (!common.json) std::fprintf(stderr, "tierkv-bench gpu: %s\n", line.c_str());
  };
  if (Status gpu = kernels::cuda::device_available(); !gpu.ok()) {
    return Status::Unavailable("this bench needs a GPU: " + gpu.message());
  }
  if (prefix_tokens_ % kChunkTokens != 0) {
    return Status::InvalidArgument("--prefix-tokens " + std::to_string(prefix_tokens_) +
                                   " is not a multiple of " + std::to_string(kChunkTokens));
  }
  BENCH_CUDA(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")");
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
  int driver = 0;
  int runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  cudaStream_t stream = nullptr;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { (void)cudaStreamDestroy(s); }
  } stream_guard{stream};

  progress("pinned copies, " + std::to_string(s.copy_bytes / kMiB) + " MiB");
  PinnedMemory pattern;
  TIERKV_RETURN_IF_ERROR(pattern.allocate(s.copy_bytes));
  fill_pattern(pattern.span(), 42);
  auto copies = measure_copies(s, pattern, stream);
  if (!copies.ok()) return copies.status();

  progress("gather/scatter kernels, " + std::to_string(s.kernel_chunks) + " chunks per launch");
  auto kernels = measure_kernels(s, pattern, s.copy_bytes, stream, device_);
  if (!kernels.ok()) return kernels.status();

  progress("quantize/dequantize kernels, " + std::to_string(s.copy_bytes / kMiB) + " MiB of bf16");
  auto codecs = measure_codecs(s, stream);
  if (!codecs.ok()) return codecs.status();

  auto daemon = BenchDaemon::start(daemon_);
  if (!daemon.ok()) return daemon.status();
  if ((*daemon)->owned()) {
    progress("started " + (*daemon)->binary() + " with a " +
             std::to_string(daemon_.host_capacity_gib) + " GiB host tier");
  }
  auto connected = tools::connect_daemon((*daemon)->socket_path(), "tierkv-bench", true);
  if (!connected.ok()) return connected.status();
  auto prefix = measure_prefix(s, **connected, *connected, prefix_tokens_, pattern, s.copy_bytes,
                               stream, device_, progress);
  if (!prefix.ok()) return prefix.status();
  const std::string daemon_version = (*connected)->daemon_version();
  connected->reset();
  const bool owned = (*daemon)->owned();
  if (Status stopped = (*daemon)->stop(); !stopped.ok()) return stopped;

  // The GPU tier: a daemon of its own (so that promotion copies never overlap the host-tier
  // figures above), or the borrowed one, whose GPU tier is used if it has one.
  Result<GpuTierFigures> gpu_tier = GpuTierFigures{};
  const uint64_t prefix_gib = (prefix->prefix_bytes + kGiB - 1) / kGiB;
  const uint64_t tier_gib = gpu_tier_gib_ < 0 ? prefix_gib + 1 : uint64_t(gpu_tier_gib_);
  if (tier_gib == 0) {
    gpu_tier->skipped = "--gpu-tier-gib 0";
  } else {
    DaemonOptions o = daemon_;
    o.host_capacity_gib = prefix_gib + 1;  // the prefix, and room to spare
    const std::string toml = "[gpu]\ndevice = " + std::to_string(device_) + "\ncapacity = \"" +
                             std::to_string(tier_gib) + "GiB\"\npromote_after_loads = 1\n";
    auto tier_daemon = BenchDaemon::start(o, toml);
    if (!tier_daemon.ok()) return tier_daemon.status();
    auto tier_client = tools::connect_daemon((*tier_daemon)->socket_path(), "tierkv-bench", true);
    if (!tier_client.ok()) return tier_client.status();
    gpu_tier = measure_gpu_tier(s, **tier_client, *tier_client, prefix_tokens_, pattern,
                                s.copy_bytes, stream, device_, progress);
    tier_client->reset();
    if (Status stopped = (*tier_daemon)->stop(); !stopped.ok()) return stopped;
    if (!gpu_tier.ok()) return gpu_tier.status();
  }

  BenchReport r("gpu");
  r.add_info("device", std::string(prop.name));
  r.add_info("device_index", uint64_t(device_));
  r.add_info("multiprocessors", uint64_t(prop.multiProcessorCount));
  r.add_info("l2_bytes", uint64_t(prop.l2CacheSize));
  r.add_info("cuda_driver", uint64_t(driver));
  r.add_info("cuda_runtime", uint64_t(runtime));
  r.add_info("daemon_version", daemon_version);
  r.add_info("daemon", owned ? "started by the bench: " + (*daemon)->binary()
                             : "running at " + (*daemon)->socket_path());
  r.add_info("quick", common.quick);
  r.add_info("layout", std::string("32 layers x 8 kv heads x 128 dim bf16, 256 tokens/chunk, "
                                   "paged block_size 16"));
  r.add_info("copy_bytes", s.copy_bytes);
  r.add_info("kernel_bytes_per_launch",
             uint64_t{s.kernel_chunks} * 2 * kLayers * kChunkTokens * kRowBytes);
  r.add_info("kernel_vector_bytes", uint64_t{kernels->vector_bytes});
  r.add_info("prefix_tokens", prefix_tokens_);
  r.add_info("prefix_bytes", prefix->prefix_bytes);
  r.add_info("load_runs", uint64_t{prefix->runs});
  r.add_info("load_verified", true);
  r.add_info("host_pool_pin_ms", static_cast<uint64_t>(prefix->pin_seconds * 1e3));

  const double h2d = copies->h2d_GBps;
  const double d2d = copies->d2d_GBps;
  r.add_figure("h2d_pinned_GBps", "H2D copy, pinned, one large transfer", h2d, Unit::kGBps);
  r.add_figure("d2h_pinned_GBps", "D2H copy, pinned, one large transfer", copies->d2h_GBps,
               Unit::kGBps);
  r.add_figure("h2d_shm_pool_GBps", "H2D copy from the registered shm pool", prefix->shm_h2d_GBps,
               Unit::kGBps);
  r.add_figure("d2d_GBps", "D2D copy (read + written)", d2d, Unit::kGBps);
  r.add_figure("load_32k_GBps", "load of the prefix, host tier -> paged cache", prefix->load.GBps,
               Unit::kGBps);
  r.add_figure("load_32k_vs_h2d", "load / pinned H2D", prefix->load.GBps / h2d, Unit::kRatio);
  r.add_target("load_32k_vs_h2d", true, kLoadVsH2dTarget);
  r.add_figure("load_32k_first_layer_us", "load: first layer group ready",
               prefix->load.first_layer_us, Unit::kMicros);
  r.add_figure("load_32k_submit_us", "load: time load() holds the caller", prefix->load.submit_us,
               Unit::kMicros);
  r.add_figure("load_32k_4MiB_groups_vs_h2d", "load / H2D, 4-layer groups (4 MiB copies)",
               prefix->load_4MiB_groups.GBps / h2d, Unit::kRatio);
  r.add_figure("load_32k_4MiB_groups_first_layer_us", "load, 4-layer groups: first group ready",
               prefix->load_4MiB_groups.first_layer_us, Unit::kMicros);
  r.add_figure("load_32k_unbatched_vs_h2d", "load / H2D, a copy call per chunk and layer",
               prefix->load_unbatched.GBps / h2d, Unit::kRatio);
  r.add_figure("h2d_pinned_GBps_1MiB_copies", "H2D copy, pinned, 1 MiB copies",
               copies->h2d_1MiB_GBps, Unit::kGBps);
  r.add_figure("h2d_pinned_GBps_4MiB_copies", "H2D copy, pinned, 4 MiB copies",
               copies->h2d_4MiB_GBps, Unit::kGBps);
  r.add_figure("store_32k_GBps", "store of the prefix, paged cache -> host tier",
               prefix->store_GBps, Unit::kGBps);
  r.add_figure("store_32k_vs_d2h", "store / pinned D2H", prefix->store_GBps / copies->d2h_GBps,
               Unit::kRatio);
  r.add_figure("scatter_GBps", "scatter kernel, paged (read + written)", kernels->scatter_GBps,
               Unit::kGBps);
  r.add_figure("scatter_vs_d2d", "scatter / D2D copy", kernels->scatter_GBps / d2d, Unit::kRatio);
  r.add_target("scatter_vs_d2d", true, kKernelVsD2dTarget);
  r.add_figure("gather_GBps", "gather kernel, paged (read + written)", kernels->gather_GBps,
               Unit::kGBps);
  r.add_figure("gather_vs_d2d", "gather / D2D copy", kernels->gather_GBps / d2d, Unit::kRatio);
  r.add_target("gather_vs_d2d", true, kKernelVsD2dTarget);
  for (const CodecFigures& c : *codecs) {
    const std::string n = c.name;
    r.add_figure("dequant_" + n + "_GBps", "dequantize " + n + " -> bf16 (output)",
                 c.dequantize_GBps, Unit::kGBps);
    r.add_figure("dequant_" + n + "_vs_d2d", "dequantize " + n + ", read + written / D2D",
                 c.dequantize_moved_GBps / d2d, Unit::kRatio);
    r.add_figure("quant_" + n + "_GBps", "quantize bf16 -> " + n + " (input)", c.quantize_GBps,
                 Unit::kGBps);
  }
  r.add_figure("flat_scatter_vs_d2d", "scatter / D2D copy, flat head-major",
               kernels->flat_scatter_GBps / d2d, Unit::kRatio);
  r.add_figure("flat_gather_vs_d2d", "gather / D2D copy, flat head-major",
               kernels->flat_gather_GBps / d2d, Unit::kRatio);
  if (gpu_tier->measured) {
    const GpuTierFigures& g = *gpu_tier;
    r.add_info("gpu_tier_verified", true);
    r.add_info("gpu_tier_promote_ms", static_cast<uint64_t>(g.promote_seconds * 1e3));
    r.add_figure("load_32k_gpu_tier_GBps", "load of the prefix, GPU tier -> paged cache (D2D)",
                 g.GBps, Unit::kGBps);
    r.add_figure("load_32k_gpu_tier_vs_host_tier", "load from the GPU tier / from host RAM",
                 g.GBps / prefix->load.GBps, Unit::kRatio);
    r.add_figure("load_32k_gpu_tier_vs_d2d", "load from the GPU tier, read + written / D2D copy",
                 2 * g.GBps / d2d, Unit::kRatio);
    r.add_figure("load_32k_gpu_tier_scatter_vs_d2d",
                 "the same, scatter alone (no lease round trip) / D2D copy",
                 2 * g.transfer_GBps / d2d, Unit::kRatio);
    r.add_figure("load_32k_gpu_tier_first_layer_us", "load from the GPU tier: first layer ready",
                 g.first_layer_us, Unit::kMicros);
    r.add_figure("load_32k_gpu_tier_lease_us", "gpu_load round trip (lease the prefix)", g.lease_us,
                 Unit::kMicros);
  } else {
    r.add_info("gpu_tier_skipped", gpu_tier->skipped);
  }
  return r;
}

}  // namespace

std::unique_ptr<BenchCommand> make_gpu_bench() { return std::make_unique<GpuBench>(); }

}  // namespace tierkv::bench
