// GpuTransfer and PinnedHostPool with CUDA (this file is built only when the toolkit is found;
// cuda_transfer_stub.cc stands in otherwise).
//
// The pipeline, for a load of n chunks: pieces of (a group of k layers, up to G chunks) in layer
// order, each through one staging slot of a ring:
//   copy stream:   wait slot_free[s]; one H2D per chunk (those layers' K and V rows, contiguous in
//                  the chunk), batched into one call; record slot_full[s]
//   kernel stream: wait slot_full[s]; one scatter launch for the piece; record slot_free[s];
//                  after a layer group's last piece, record layer_ready[] of its layers
// A store runs the ring the other way (gather, then D2H into the slots), chunk-major.
// Chunks of a lease that lie in the daemon's GPU pool (use_gpu_tier) skip the ring: per layer
// group, one scatter launch reads them straight from the pool, named by a table of pool offsets
// uploaded with the block table (kSkipChunk for the chunks that come from host RAM).
//
// The calling thread validates an operation, records its start on the caller's stream, stages
// and uploads the block table, and hands the rest to the worker thread, which submits the pieces
// (a long load blocks in CUDA's stream queue; the caller must not). One operation is submitted at
// a time: the caller waits for the worker to go idle before preparing the next, which is what
// lets the staged block table and the events be reused without a race.
#include "tierkv/cuda_transfer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tierkv/gpu_pool.h"
#include "tierkv/kernels/cuda_device.h"
#include "tierkv/kernels/kv_cuda.h"

namespace tierkv {
namespace {

using kernels::cuda::cuda_error;
using kernels::cuda::DeviceScope;

#define TIERKV_CUDA_RETURN(expr, what)                                                  \
  do {                                                                                  \
    const cudaError_t tierkv_cuda_error_ = (expr);                                      \
    if (tierkv_cuda_error_ != cudaSuccess) return cuda_error(tierkv_cuda_error_, what); \
  } while (0)

cudaStream_t to_cuda(GpuStream s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace

bool gpu_transfer_built() { return true; }

// --- PinnedHostPool
// -------------------------------------------------------------------------------

Result<std::shared_ptr<PinnedHostPool>> PinnedHostPool::pin(std::shared_ptr<Client> client) {
  if (client == nullptr) return Status::InvalidArgument("client is null");
  TIERKV_RETURN_IF_ERROR(kernels::cuda::device_available());
  std::shared_ptr<PinnedHostPool> pool(new PinnedHostPool());
  pool->region_ = client->host_pool();
  pool->client_ = std::move(client);
  if (pool->region_.empty())
    return Status::FailedPrecondition("the client has no host pool mapped");
  const auto t0 = std::chrono::steady_clock::now();
  const cudaError_t e =
      cudaHostRegister(pool->region_.data(), pool->region_.size(), cudaHostRegisterPortable);
  pool->pin_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (e == cudaErrorHostMemoryAlreadyRegistered) {
    (void)cudaGetLastError();  // someone else in this process pinned it; they unpin it
  } else if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return cuda_error(e, "cudaHostRegister of the " + std::to_string(pool->region_.size()) +
                             "-byte host pool (is the memlock limit, ulimit -l, too low?)");
  } else {
    pool->registered_ = true;
  }
  return pool;
}

PinnedHostPool::~PinnedHostPool() {
  if (registered_) (void)cudaHostUnregister(region_.data());
}

bool PinnedHostPool::contains(const std::byte* p, uint64_t bytes) const {
  const auto* begin = region_.data();
  if (p < begin || p > begin + region_.size()) return false;
  return bytes <= static_cast<uint64_t>(begin + region_.size() - p);
}

// --- GpuTransfer
// ----------------------------------------------------------------------------------

struct GpuTransfer::Impl {
  std::shared_ptr<PinnedHostPool> pool;
  kernels::cuda::DeviceKvCache cache;
  int device = 0;
  uint32_t layers = 0;
  uint32_t chunk_tokens = 0;
  uint64_t chunk_bytes = 0;
  uint64_t layer_chunk_bytes = 0;  // one layer of one chunk: K rows then V rows, contiguous
  uint32_t load_group = 1;         // layers per load piece
  GpuTransferOptions options;

  // Staging ring: `slots` slots of `slot_bytes` at `staging`.
  std::byte* staging = nullptr;
  uint64_t slot_bytes = 0;
  uint32_t slots = 0;
  uint64_t next_slot = 0;  // worker only

  // Block table of the current operation: the entries it covers, staged in pinned memory and
  // uploaded on the kernel stream ahead of its kernels.
  int32_t* table_host = nullptr;
  int32_t* table_dev = nullptr;
  uint64_t table_capacity = 0;
  std::vector<uint64_t> seen_blocks;  // bitmap over block ids, for duplicate detection

  // The daemon's GPU pool (use_gpu_tier) and the current load's chunk offsets into it, staged in
  // pinned memory and uploaded with the block table; kSkipChunk for chunks from host RAM.
  std::shared_ptr<DaemonGpuPool> gpu_pool;
  uint64_t* offsets_host = nullptr;
  uint64_t* offsets_dev = nullptr;
  uint64_t offsets_capacity = 0;
  cudaEvent_t offsets_uploaded = nullptr;

  cudaStream_t copy = nullptr;
  cudaStream_t kernel = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t copies_done = nullptr;
  cudaEvent_t kernels_done = nullptr;
  cudaEvent_t table_uploaded = nullptr;
  std::vector<cudaEvent_t> slot_full;
  std::vector<cudaEvent_t> slot_free;
  std::vector<cudaEvent_t> layer_ready;

  // One piece's batched copies (worker only); sized at init, so submission allocates nothing.
  std::vector<void*> batch_dst;
  std::vector<const void*> batch_src;
  std::vector<size_t> batch_size;
  size_t batch_count = 0;
  bool batch = true;

  // The operation handed to the worker. Its vectors keep their capacity between operations.
  struct Job {
    bool load = true;
    std::vector<const std::byte*> sources;  // load: chunk i's slot
    std::vector<std::byte*> targets;        // store: chunk i's slot, or null to skip it
    uint64_t first_token = 0;               // relative to the staged block table
    uint64_t gpu_chunks = 0;                // load: chunks in the GPU pool (null in sources)
  };
  Job job;  // written by the caller while idle, read by the worker while busy

  std::mutex mu;  // guards the fields below
  std::condition_variable cv;
  bool busy = false;  // a job is queued or being submitted
  bool stopping = false;
  uint32_t layers_submitted = 0;  // of the latest load: layer_ready[l] recorded for l below this
  Status worker_error;            // the first submission failure, reported once
  std::thread worker;

  explicit Impl(kernels::cuda::DeviceKvCache c) : cache(std::move(c)) {}
  ~Impl();
  // Takes the namespace's sizes and allocates everything an operation will need; starts the
  // worker.
  Status init(std::shared_ptr<PinnedHostPool> host_pool, const Namespace& ns, int dev,
              const GpuTransferOptions& opts);

  // Checks the operation's tokens against the table (paged) or capacity (flat) and, for a paged
  // cache, stages the covered entries; *first_token_out is then relative to the staged table.
  Status prepare_table(std::span<const int32_t> table, uint64_t first_token, uint64_t tokens,
                       bool reject_repeats, uint64_t* first_token_out, uint64_t* entries_out);
  Status check_chunks(std::span<const std::byte* const> chunks) const;
  // Waits until the worker is idle; returns (and clears) any error it hit.
  Status wait_idle();
  // Records the start on the caller's stream, uploads the staged table and hands `job` over.
  Status submit(GpuStream stream, uint64_t table_entries);

  void run_worker();
  Status run_job();
  Status copy_batch(cudaMemcpyKind kind);
  Status submit_load(std::span<const std::byte* const> chunks, uint64_t first_token);
  Status scatter_from_gpu_pool(uint64_t n, uint64_t first_token, uint32_t l0, uint32_t nl);
  Status submit_store(std::span<std::byte* const> chunks, uint64_t first_token);
};

GpuTransfer::Impl::~Impl() {
  {
    std::lock_guard lock(mu);
    stopping = true;
  }
  cv.notify_all();
  if (worker.joinable()) worker.join();
  DeviceScope scope(device);
  // Nothing may still read or write what is freed below.
  if (copy != nullptr) (void)cudaStreamSynchronize(copy);
  if (kernel != nullptr) (void)cudaStreamSynchronize(kernel);
  for (cudaEvent_t e : slot_full) (void)cudaEventDestroy(e);
  for (cudaEvent_t e : slot_free) (void)cudaEventDestroy(e);
  for (cudaEvent_t e : layer_ready) (void)cudaEventDestroy(e);
  for (cudaEvent_t e : {start, copies_done, kernels_done, table_uploaded, offsets_uploaded}) {
    if (e != nullptr) (void)cudaEventDestroy(e);
  }
  (void)cudaFree(offsets_dev);
  (void)cudaFreeHost(offsets_host);
  if (copy != nullptr) (void)cudaStreamDestroy(copy);
  if (kernel != nullptr) (void)cudaStreamDestroy(kernel);
  (void)cudaFree(staging);
  (void)cudaFree(table_dev);
  (void)cudaFreeHost(table_host);
}

Status GpuTransfer::Impl::init(std::shared_ptr<PinnedHostPool> host_pool, const Namespace& ns,
                               int dev, const GpuTransferOptions& opts) {
  pool = std::move(host_pool);
  device = dev;
  layers = ns.layout.num_layers;
  chunk_tokens = ns.layout.chunk_tokens;
  chunk_bytes = ns.chunk_bytes();
  layer_chunk_bytes = 2 * uint64_t{chunk_tokens} * cache.row_bytes();
  options = opts;
  batch = opts.batch_copies;
  if (opts.staging_slots < 2 || opts.staging_slots > 1024) {
    return Status::InvalidArgument("staging_slots " + std::to_string(opts.staging_slots) +
                                   " is out of range [2, 1024]");
  }
  if (opts.max_tokens == 0 || opts.max_tokens > (uint64_t{1} << 31)) {
    return Status::InvalidArgument("max_tokens " + std::to_string(opts.max_tokens) +
                                   " is out of range [1, 2^31]");
  }
  load_group = static_cast<uint32_t>(std::clamp<uint64_t>(
      (opts.min_copy_bytes + layer_chunk_bytes - 1) / layer_chunk_bytes, 1, layers));
  DeviceScope scope(device);
  TIERKV_CUDA_RETURN(scope.status(), "cudaSetDevice(" + std::to_string(device) + ")");
  slots = opts.staging_slots;
  slot_bytes = std::max(opts.staging_bytes / slots, load_group * layer_chunk_bytes);
  slot_bytes = (slot_bytes + 255) / 256 * 256;  // every slot 256-byte aligned
  TIERKV_CUDA_RETURN(cudaMalloc(&staging, slot_bytes * slots),
                     "cudaMalloc of " + std::to_string(slot_bytes * slots) + " staging bytes");
  if (cache.paged()) {
    table_capacity = opts.max_tokens / cache.block_size() + 2;
    TIERKV_CUDA_RETURN(
        cudaHostAlloc(&table_host, table_capacity * sizeof(int32_t), cudaHostAllocDefault),
        "cudaHostAlloc(block table)");
    TIERKV_CUDA_RETURN(cudaMalloc(&table_dev, table_capacity * sizeof(int32_t)),
                       "cudaMalloc(block table)");
    seen_blocks.assign((uint64_t{cache.num_blocks()} + 63) / 64, 0);
  }
  TIERKV_CUDA_RETURN(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking), "create stream");
  TIERKV_CUDA_RETURN(cudaStreamCreateWithFlags(&kernel, cudaStreamNonBlocking), "create stream");
  auto make_event = [](cudaEvent_t* e) {
    return cudaEventCreateWithFlags(e, cudaEventDisableTiming);
  };
  for (cudaEvent_t* e : {&start, &copies_done, &kernels_done, &table_uploaded}) {
    TIERKV_CUDA_RETURN(make_event(e), "create event");
  }
  for (auto* list : {&slot_full, &slot_free}) {
    list->resize(slots, nullptr);
    for (cudaEvent_t& e : *list) TIERKV_CUDA_RETURN(make_event(&e), "create event");
  }
  layer_ready.resize(layers, nullptr);
  for (cudaEvent_t& e : layer_ready) TIERKV_CUDA_RETURN(make_event(&e), "create event");
  // A piece holds at most this many chunks; every chunk is one copy.
  const uint64_t max_piece_chunks =
      std::min<uint64_t>(opts.max_tokens / chunk_tokens + 1, slot_bytes / layer_chunk_bytes);
  batch_dst.resize(max_piece_chunks);
  batch_src.resize(max_piece_chunks);
  batch_size.resize(max_piece_chunks);
  job.sources.reserve(opts.max_tokens / chunk_tokens + 1);
  job.targets.reserve(opts.max_tokens / chunk_tokens + 1);
  layers_submitted = layers;  // no load yet: nothing to wait for
  worker = std::thread([this] { run_worker(); });
  return Status::Ok();
}

Status GpuTransfer::Impl::check_chunks(std::span<const std::byte* const> chunks) const {
  if (uint64_t{chunks.size()} * chunk_tokens > options.max_tokens) {
    return Status::InvalidArgument(std::to_string(chunks.size()) + " chunks of " +
                                   std::to_string(chunk_tokens) + " tokens exceed max_tokens " +
                                   std::to_string(options.max_tokens) +
                                   " (GpuTransferOptions); split the operation");
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i] != nullptr && !pool->contains(chunks[i], chunk_bytes)) {
      return Status::InvalidArgument("chunk " + std::to_string(i) + ": " +
                                     std::to_string(chunk_bytes) +
                                     " bytes do not lie inside the pinned host pool");
    }
  }
  return Status::Ok();
}

Status GpuTransfer::Impl::prepare_table(std::span<const int32_t> table, uint64_t first_token,
                                        uint64_t tokens, bool reject_repeats,
                                        uint64_t* first_token_out, uint64_t* entries_out) {
  *first_token_out = first_token;
  *entries_out = 0;
  if (!cache.paged()) {
    if (first_token > cache.capacity_tokens() || tokens > cache.capacity_tokens() - first_token) {
      return Status::InvalidArgument(
          "tokens [" + std::to_string(first_token) + ", " + std::to_string(first_token + tokens) +
          ") exceed the cache's capacity_tokens " + std::to_string(cache.capacity_tokens()));
    }
    return Status::Ok();
  }
  const uint32_t bs = cache.block_size();
  uint64_t covered = 0;
  if (__builtin_mul_overflow(uint64_t{table.size()}, uint64_t{bs}, &covered)) covered = UINT64_MAX;
  if (first_token > covered || tokens > covered - first_token) {
    return Status::InvalidArgument(
        "tokens [" + std::to_string(first_token) + ", " + std::to_string(first_token + tokens) +
        ") are not covered by a block table of " + std::to_string(table.size()) + " blocks of " +
        std::to_string(bs) + " tokens");
  }
  const uint64_t e0 = first_token / bs;
  const uint64_t n = (first_token + tokens + bs - 1) / bs - e0;
  if (n > table_capacity) {
    return Status::InvalidArgument("the operation covers " + std::to_string(n) +
                                   " block table entries; at most " +
                                   std::to_string(table_capacity) + " (max_tokens)");
  }
  Status bad;
  uint64_t checked = 0;
  for (; checked < n; ++checked) {
    const int32_t b = table[e0 + checked];
    if (b < 0 || static_cast<uint32_t>(b) >= cache.num_blocks()) {
      bad = Status::InvalidArgument("block_table[" + std::to_string(e0 + checked) +
                                    "] = " + std::to_string(b) + " is out of range [0, " +
                                    std::to_string(cache.num_blocks()) + ")");
      break;
    }
    if (reject_repeats) {
      uint64_t& word = seen_blocks[static_cast<uint32_t>(b) / 64];
      const uint64_t bit = uint64_t{1} << (static_cast<uint32_t>(b) % 64);
      if ((word & bit) != 0) {
        const auto first = std::find(table.begin() + static_cast<int64_t>(e0),
                                     table.begin() + static_cast<int64_t>(e0 + checked), b);
        bad = Status::InvalidArgument("block_table[" + std::to_string(first - table.begin()) +
                                      "] and block_table[" + std::to_string(e0 + checked) +
                                      "] both name block " + std::to_string(b));
        break;
      }
      word |= bit;
    }
  }
  if (reject_repeats) {
    for (uint64_t i = 0; i < checked; ++i) {
      const auto b = static_cast<uint32_t>(table[e0 + i]);
      seen_blocks[b / 64] &= ~(uint64_t{1} << (b % 64));
    }
  }
  TIERKV_RETURN_IF_ERROR(bad);
  // The previous operation's upload must have read the pinned staging table before it is
  // rewritten; it was submitted long ago, so this wait normally returns at once.
  TIERKV_CUDA_RETURN(cudaEventSynchronize(table_uploaded), "wait for block table upload");
  std::copy_n(table.begin() + static_cast<int64_t>(e0), n, table_host);
  *first_token_out = first_token - e0 * bs;
  *entries_out = n;
  return Status::Ok();
}

Status GpuTransfer::Impl::wait_idle() {
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return !busy; });
  return std::exchange(worker_error, Status::Ok());
}

Status GpuTransfer::Impl::submit(GpuStream stream, uint64_t table_entries) {
  // The worker is idle (the caller waited), so what is enqueued here lands between the previous
  // operation's work and this one's, on every stream.
  TIERKV_CUDA_RETURN(cudaEventRecord(start, to_cuda(stream)), "record on the caller's stream");
  if (table_entries > 0) {
    TIERKV_CUDA_RETURN(cudaStreamWaitEvent(kernel, start, 0), "cudaStreamWaitEvent");
    TIERKV_CUDA_RETURN(cudaMemcpyAsync(table_dev, table_host, table_entries * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, kernel),
                       "upload block table");
    TIERKV_CUDA_RETURN(cudaEventRecord(table_uploaded, kernel), "cudaEventRecord");
  }
  if (job.load && job.gpu_chunks > 0) {
    TIERKV_CUDA_RETURN(cudaStreamWaitEvent(kernel, start, 0), "cudaStreamWaitEvent");
    TIERKV_CUDA_RETURN(
        cudaMemcpyAsync(offsets_dev, offsets_host, job.sources.size() * sizeof(uint64_t),
                        cudaMemcpyHostToDevice, kernel),
        "upload GPU pool offsets");
    TIERKV_CUDA_RETURN(cudaEventRecord(offsets_uploaded, kernel), "cudaEventRecord");
  }
  {
    std::lock_guard lock(mu);
    busy = true;
    if (job.load) layers_submitted = 0;
  }
  cv.notify_all();
  return Status::Ok();
}

void GpuTransfer::Impl::run_worker() {
  (void)cudaSetDevice(device);
  std::unique_lock lock(mu);
  while (true) {
    cv.wait(lock, [&] { return busy || stopping; });
    if (stopping) return;
    lock.unlock();
    Status s = run_job();
    lock.lock();
    if (!s.ok() && worker_error.ok()) worker_error = s;
    layers_submitted = layers;  // whatever happened, waiting for more would never end
    busy = false;
    cv.notify_all();
  }
}

Status GpuTransfer::Impl::run_job() {
  // Both sides start after what the engine had enqueued when it called: attention still reading
  // blocks a load will overwrite, or the prefill writing blocks a store reads.
  TIERKV_CUDA_RETURN(cudaStreamWaitEvent(copy, start, 0), "cudaStreamWaitEvent");
  TIERKV_CUDA_RETURN(cudaStreamWaitEvent(kernel, start, 0), "cudaStreamWaitEvent");
  if (job.load) {
    TIERKV_RETURN_IF_ERROR(submit_load(job.sources, job.first_token));
  } else {
    // Runs of consecutive chunks to write; chunks cached already are skipped.
    const std::vector<std::byte*>& t = job.targets;
    for (size_t i = 0; i < t.size();) {
      if (t[i] == nullptr) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < t.size() && t[j] != nullptr) ++j;
      TIERKV_RETURN_IF_ERROR(submit_store(std::span<std::byte* const>(t.data() + i, j - i),
                                          job.first_token + uint64_t{i} * chunk_tokens));
      i = j;
    }
  }
  TIERKV_CUDA_RETURN(cudaEventRecord(copies_done, copy), "cudaEventRecord");
  TIERKV_CUDA_RETURN(cudaEventRecord(kernels_done, kernel), "cudaEventRecord");
  return Status::Ok();
}

// Submits the `n` copies staged in batch_* on the copy stream: one batched call where the driver
// takes it, else one call per copy.
Status GpuTransfer::Impl::copy_batch(cudaMemcpyKind kind) {
  const size_t n = batch_count;
#if CUDART_VERSION >= 12080
  if (batch && n > 1) {
    cudaMemcpyAttributes attr{};
    attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    size_t first = 0;
#if CUDART_VERSION >= 13000
    const cudaError_t e = cudaMemcpyBatchAsync(batch_dst.data(), batch_src.data(),
                                               batch_size.data(), n, &attr, &first, 1, copy);
#else
    // CUDA 12.8 and 12.9 also report the index of a failed copy.
    size_t failed = 0;
    const cudaError_t e =
        cudaMemcpyBatchAsync(batch_dst.data(), const_cast<void**>(batch_src.data()),
                             batch_size.data(), n, &attr, &first, 1, &failed, copy);
#endif
    if (e == cudaSuccess) return Status::Ok();
    // Refused (an older driver, or a platform without batches): per-copy from now on.
    (void)cudaGetLastError();
    batch = false;
  }
#endif
  for (size_t i = 0; i < n; ++i) {
    TIERKV_CUDA_RETURN(cudaMemcpyAsync(batch_dst[i], batch_src[i], batch_size[i], kind, copy),
                       kind == cudaMemcpyHostToDevice ? "H2D copy" : "D2H copy");
  }
  return Status::Ok();
}

Status GpuTransfer::Impl::submit_load(std::span<const std::byte* const> chunks,
                                      uint64_t first_token) {
  const kernels::cuda::DeviceBlockTable table{table_dev, table_capacity};
  const uint64_t n = chunks.size();
  for (uint32_t l0 = 0; l0 < layers; l0 += load_group) {
    const uint32_t nl = std::min(load_group, layers - l0);
    const uint64_t part = nl * layer_chunk_bytes;  // one chunk's rows of these layers
    const uint64_t per_piece = std::max<uint64_t>(1, slot_bytes / part);
    // Chunks in the daemon's GPU pool first: no copy to wait for.
    if (job.gpu_chunks > 0) TIERKV_RETURN_IF_ERROR(scatter_from_gpu_pool(n, first_token, l0, nl));
    // Then pieces of consecutive chunks from host RAM (a null source lies in the GPU pool).
    for (uint64_t c0 = 0; c0 < n;) {
      if (chunks[c0] == nullptr) {
        ++c0;
        continue;
      }
      uint64_t count = 0;
      while (count < per_piece && c0 + count < n && chunks[c0 + count] != nullptr) ++count;
      const auto s = static_cast<uint32_t>(next_slot++ % slots);
      std::byte* slot = staging + s * slot_bytes;
      TIERKV_CUDA_RETURN(cudaStreamWaitEvent(copy, slot_free[s], 0), "cudaStreamWaitEvent");
      batch_count = count;
      for (uint64_t j = 0; j < count; ++j) {
        batch_dst[j] = slot + j * part;
        batch_src[j] = chunks[c0 + j] + l0 * layer_chunk_bytes;
        batch_size[j] = part;
      }
      TIERKV_RETURN_IF_ERROR(copy_batch(cudaMemcpyHostToDevice));
      TIERKV_CUDA_RETURN(cudaEventRecord(slot_full[s], copy), "cudaEventRecord");
      TIERKV_CUDA_RETURN(cudaStreamWaitEvent(kernel, slot_full[s], 0), "cudaStreamWaitEvent");
      const kernels::cuda::CopyRange range{.first_token = first_token + c0 * chunk_tokens,
                                           .chunk_tokens = chunk_tokens,
                                           .num_chunks = static_cast<uint32_t>(count),
                                           .layer_begin = l0,
                                           .layer_end = l0 + nl};
      TIERKV_RETURN_IF_ERROR(kernels::cuda::scatter(cache, table, range, {slot, part},
                                                    reinterpret_cast<GpuStream>(kernel)));
      TIERKV_CUDA_RETURN(cudaEventRecord(slot_free[s], kernel), "cudaEventRecord");
      c0 += count;
    }
    for (uint32_t l = l0; l < l0 + nl; ++l) {
      TIERKV_CUDA_RETURN(cudaEventRecord(layer_ready[l], kernel), "cudaEventRecord");
    }
    {
      std::lock_guard lock(mu);
      layers_submitted = l0 + nl;
    }
    cv.notify_all();
  }
  return Status::Ok();
}

Status GpuTransfer::Impl::scatter_from_gpu_pool(uint64_t n, uint64_t first_token, uint32_t l0,
                                                uint32_t nl) {
  // Layers [l0, l0 + nl) of a whole chunk in a pool slot start l0 layers into it, packed.
  const kernels::cuda::DeviceBlockTable table{table_dev, table_capacity};
  std::byte* rows = gpu_pool->data() + uint64_t{l0} * layer_chunk_bytes;
  constexpr uint64_t kMaxChunksPerLaunch = 65535;  // the kernel's grid z
  for (uint64_t c0 = 0; c0 < n; c0 += kMaxChunksPerLaunch) {
    const uint64_t count = std::min(kMaxChunksPerLaunch, n - c0);
    const kernels::cuda::CopyRange range{.first_token = first_token + c0 * chunk_tokens,
                                         .chunk_tokens = chunk_tokens,
                                         .num_chunks = static_cast<uint32_t>(count),
                                         .layer_begin = l0,
                                         .layer_end = l0 + nl};
    TIERKV_RETURN_IF_ERROR(kernels::cuda::scatter(
        cache, table, range,
        kernels::cuda::ChunkBuffer{.data = rows, .chunk_offsets = offsets_dev + c0},
        reinterpret_cast<GpuStream>(kernel)));
  }
  return Status::Ok();
}

Status GpuTransfer::Impl::submit_store(std::span<std::byte* const> chunks, uint64_t first_token) {
  const kernels::cuda::DeviceBlockTable table{table_dev, table_capacity};
  // Whole chunks per piece where a slot holds one, else groups of layers of one chunk.
  const uint64_t chunks_per_piece = slot_bytes / chunk_bytes;
  const uint32_t layers_per_piece =
      chunks_per_piece > 0
          ? layers
          : static_cast<uint32_t>(std::min<uint64_t>(layers, slot_bytes / layer_chunk_bytes));
  const uint64_t step = std::max<uint64_t>(1, chunks_per_piece);
  const uint64_t n = chunks.size();
  for (uint64_t c0 = 0; c0 < n; c0 += step) {
    const uint64_t count = std::min(step, n - c0);
    for (uint32_t l0 = 0; l0 < layers; l0 += layers_per_piece) {
      const uint32_t nl = std::min(layers_per_piece, layers - l0);
      const uint64_t part = nl * layer_chunk_bytes;
      const auto s = static_cast<uint32_t>(next_slot++ % slots);
      std::byte* slot = staging + s * slot_bytes;
      TIERKV_CUDA_RETURN(cudaStreamWaitEvent(kernel, slot_free[s], 0), "cudaStreamWaitEvent");
      const kernels::cuda::CopyRange range{.first_token = first_token + c0 * chunk_tokens,
                                           .chunk_tokens = chunk_tokens,
                                           .num_chunks = static_cast<uint32_t>(count),
                                           .layer_begin = l0,
                                           .layer_end = l0 + nl};
      TIERKV_RETURN_IF_ERROR(kernels::cuda::gather(cache, table, range, {slot, part},
                                                   reinterpret_cast<GpuStream>(kernel)));
      TIERKV_CUDA_RETURN(cudaEventRecord(slot_full[s], kernel), "cudaEventRecord");
      TIERKV_CUDA_RETURN(cudaStreamWaitEvent(copy, slot_full[s], 0), "cudaStreamWaitEvent");
      batch_count = count;
      for (uint64_t j = 0; j < count; ++j) {
        batch_dst[j] = chunks[c0 + j] + l0 * layer_chunk_bytes;
        batch_src[j] = slot + j * part;
        batch_size[j] = part;
      }
      TIERKV_RETURN_IF_ERROR(copy_batch(cudaMemcpyDeviceToHost));
      TIERKV_CUDA_RETURN(cudaEventRecord(slot_free[s], copy), "cudaEventRecord");
    }
  }
  return Status::Ok();
}

GpuTransfer::GpuTransfer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuTransfer::~GpuTransfer() = default;

namespace {

// The cache's shape against the namespace's layout.
Status check_shape(const Layout& layout, uint32_t layers, uint32_t heads, uint32_t head_dim,
                   uint32_t elem_bytes) {
  auto mismatch = [&](const char* field, uint64_t got, uint64_t want) {
    return Status::InvalidArgument("cache " + std::string(field) + " " + std::to_string(got) +
                                   " does not match the namespace's layout (" + layout.to_string() +
                                   "): " + std::to_string(want));
  };
  if (layers != layout.num_layers) return mismatch("num_layers", layers, layout.num_layers);
  if (heads != layout.num_kv_heads) return mismatch("num_kv_heads", heads, layout.num_kv_heads);
  if (head_dim != layout.head_dim) return mismatch("head_dim", head_dim, layout.head_dim);
  if (elem_bytes != dtype_bytes(layout.dtype)) {
    return mismatch("elem_bytes", elem_bytes, dtype_bytes(layout.dtype));
  }
  if (layout.chunk_tokens == 0) {
    return Status::InvalidArgument("namespace layout has chunk_tokens 0: register_layout first");
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<GpuTransfer>> GpuTransfer::create_paged(std::shared_ptr<PinnedHostPool> pool,
                                                               const Namespace& ns,
                                                               const kernels::PagedKvView& cache,
                                                               int device,
                                                               const GpuTransferOptions& options) {
  if (pool == nullptr) return Status::InvalidArgument("pinned host pool is null");
  TIERKV_RETURN_IF_ERROR(check_shape(ns.layout, cache.num_layers(), cache.num_kv_heads,
                                     cache.head_dim, cache.elem_bytes));
  auto dev = kernels::cuda::DeviceKvCache::create_paged(cache, device);
  if (!dev.ok()) return dev.status();
  auto impl = std::make_unique<Impl>(std::move(*dev));
  TIERKV_RETURN_IF_ERROR(impl->init(std::move(pool), ns, device, options));
  return std::unique_ptr<GpuTransfer>(new GpuTransfer(std::move(impl)));
}

Result<std::unique_ptr<GpuTransfer>> GpuTransfer::create_flat(std::shared_ptr<PinnedHostPool> pool,
                                                              const Namespace& ns,
                                                              const kernels::FlatKvView& cache,
                                                              int device,
                                                              const GpuTransferOptions& options) {
  if (pool == nullptr) return Status::InvalidArgument("pinned host pool is null");
  TIERKV_RETURN_IF_ERROR(check_shape(ns.layout, cache.num_layers(), cache.num_kv_heads,
                                     cache.head_dim, cache.elem_bytes));
  auto dev = kernels::cuda::DeviceKvCache::create_flat(cache, device);
  if (!dev.ok()) return dev.status();
  auto impl = std::make_unique<Impl>(std::move(*dev));
  TIERKV_RETURN_IF_ERROR(impl->init(std::move(pool), ns, device, options));
  return std::unique_ptr<GpuTransfer>(new GpuTransfer(std::move(impl)));
}

Status GpuTransfer::load_chunks(std::span<const std::byte* const> chunks,
                                std::span<const int32_t> block_table, uint64_t first_token,
                                GpuStream stream) {
  Impl& m = *impl_;
  TIERKV_RETURN_IF_ERROR(m.wait_idle());
  if (chunks.size() > 0 && chunks.data() == m.job.sources.data()) {
    return Status::InvalidArgument("load_chunks: chunks alias the transfer's own list");
  }
  for (const std::byte* c : chunks) {
    if (c == nullptr) return Status::InvalidArgument("load_chunks: a chunk pointer is null");
  }
  TIERKV_RETURN_IF_ERROR(m.check_chunks(chunks));
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(scope.status(), "cudaSetDevice");
  uint64_t relative_first = 0;
  uint64_t entries = 0;
  TIERKV_RETURN_IF_ERROR(m.prepare_table(block_table, first_token,
                                         uint64_t{chunks.size()} * m.chunk_tokens, true,
                                         &relative_first, &entries));
  m.job.load = true;
  m.job.sources.assign(chunks.begin(), chunks.end());
  m.job.gpu_chunks = 0;
  m.job.first_token = relative_first;
  return m.submit(stream, entries);
}

Status GpuTransfer::load(const LoadLease& lease, size_t first_chunk, size_t count,
                         std::span<const int32_t> block_table, GpuStream stream) {
  Impl& m = *impl_;
  TIERKV_RETURN_IF_ERROR(m.wait_idle());
  if (first_chunk > lease.chunks() || count > lease.chunks() - first_chunk) {
    return Status::InvalidArgument("chunks [" + std::to_string(first_chunk) + ", " +
                                   std::to_string(first_chunk + count) + ") exceed the lease's " +
                                   std::to_string(lease.chunks()) + " chunks");
  }
  if (uint64_t{count} * m.chunk_tokens > m.options.max_tokens) {
    return Status::InvalidArgument(std::to_string(count) + " chunks exceed max_tokens " +
                                   std::to_string(m.options.max_tokens) +
                                   " (GpuTransferOptions); split the operation");
  }
  m.job.sources.clear();
  m.job.gpu_chunks = 0;
  for (size_t i = first_chunk; i < first_chunk + count; ++i) {
    if (lease.on_gpu(i)) {
      // In the daemon's GPU pool: scattered from there (offsets staged below).
      if (m.gpu_pool == nullptr) {
        return Status::FailedPrecondition("lease chunk " + std::to_string(i) +
                                          " lies in the daemon's GPU pool: call use_gpu_tier() "
                                          "first");
      }
      if (lease.chunk_bytes(i) != m.chunk_bytes ||
          !m.gpu_pool->contains(lease.gpu_offset(i), m.chunk_bytes) ||
          lease.gpu_offset(i) % 16 != 0) {
        return Status::InvalidArgument("lease chunk " + std::to_string(i) + ": " +
                                       std::to_string(lease.chunk_bytes(i)) + " bytes at GPU " +
                                       "pool offset " + std::to_string(lease.gpu_offset(i)) +
                                       " are not a chunk of this cache inside the pool");
      }
      m.job.sources.push_back(nullptr);
      ++m.job.gpu_chunks;
      continue;
    }
    const std::span<const std::byte> c = lease.chunk(i);
    if (c.size() != m.chunk_bytes) {
      return Status::InvalidArgument("lease chunk " + std::to_string(i) + " holds " +
                                     std::to_string(c.size()) + " bytes; the cache's chunks are " +
                                     std::to_string(m.chunk_bytes) +
                                     " (a lease of another namespace, or released?)");
    }
    m.job.sources.push_back(c.data());
  }
  TIERKV_RETURN_IF_ERROR(m.check_chunks(m.job.sources));
  if (m.job.gpu_chunks > 0) {
    // The previous load's upload must have read the staged offsets before they are rewritten.
    DeviceScope offsets_scope(m.device);
    TIERKV_CUDA_RETURN(cudaEventSynchronize(m.offsets_uploaded), "wait for offsets upload");
    for (size_t i = 0; i < count; ++i) {
      m.offsets_host[i] = lease.on_gpu(first_chunk + i) ? lease.gpu_offset(first_chunk + i)
                                                        : kernels::cuda::kSkipChunk;
    }
  }
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(scope.status(), "cudaSetDevice");
  uint64_t relative_first = 0;
  uint64_t entries = 0;
  TIERKV_RETURN_IF_ERROR(m.prepare_table(block_table, uint64_t{first_chunk} * m.chunk_tokens,
                                         uint64_t{count} * m.chunk_tokens, true, &relative_first,
                                         &entries));
  m.job.load = true;
  m.job.first_token = relative_first;
  return m.submit(stream, entries);
}

Status GpuTransfer::store_chunks(std::span<std::byte* const> chunks,
                                 std::span<const int32_t> block_table, uint64_t first_token,
                                 GpuStream stream) {
  Impl& m = *impl_;
  TIERKV_RETURN_IF_ERROR(m.wait_idle());
  for (const std::byte* c : chunks) {
    if (c == nullptr) return Status::InvalidArgument("store_chunks: a chunk pointer is null");
  }
  TIERKV_RETURN_IF_ERROR(m.check_chunks({chunks.data(), chunks.size()}));
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(scope.status(), "cudaSetDevice");
  uint64_t relative_first = 0;
  uint64_t entries = 0;
  TIERKV_RETURN_IF_ERROR(m.prepare_table(block_table, first_token,
                                         uint64_t{chunks.size()} * m.chunk_tokens, false,
                                         &relative_first, &entries));
  m.job.load = false;
  m.job.targets.assign(chunks.begin(), chunks.end());
  m.job.first_token = relative_first;
  return m.submit(stream, entries);
}

Status GpuTransfer::store(const PutLease& lease, std::span<const int32_t> block_table,
                          GpuStream stream) {
  Impl& m = *impl_;
  TIERKV_RETURN_IF_ERROR(m.wait_idle());
  // The chunks to write span [first, last); chunks cached already in between are skipped.
  size_t first = lease.chunks();
  size_t last = 0;
  for (size_t i = 0; i < lease.chunks(); ++i) {
    if (!lease.needs_write(i)) continue;
    first = std::min(first, i);
    last = i + 1;
  }
  if (first >= last) return Status::Ok();  // nothing to write
  if (uint64_t{last - first} * m.chunk_tokens > m.options.max_tokens) {
    return Status::InvalidArgument(std::to_string(last - first) + " chunks exceed max_tokens " +
                                   std::to_string(m.options.max_tokens) +
                                   " (GpuTransferOptions); split the operation");
  }
  m.job.targets.clear();
  for (size_t i = first; i < last; ++i) {
    m.job.targets.push_back(lease.needs_write(i) ? lease.slot(i).data() : nullptr);
  }
  TIERKV_RETURN_IF_ERROR(m.check_chunks(
      {const_cast<const std::byte* const*>(m.job.targets.data()), m.job.targets.size()}));
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(scope.status(), "cudaSetDevice");
  uint64_t relative_first = 0;
  uint64_t entries = 0;
  TIERKV_RETURN_IF_ERROR(m.prepare_table(block_table, uint64_t{first} * m.chunk_tokens,
                                         uint64_t{last - first} * m.chunk_tokens, false,
                                         &relative_first, &entries));
  m.job.load = false;
  m.job.first_token = relative_first;
  return m.submit(stream, entries);
}

Status GpuTransfer::wait_layer(uint32_t layer, GpuStream stream) const {
  Impl& m = *impl_;
  if (layer >= m.layers) {
    return Status::InvalidArgument("layer " + std::to_string(layer) + " is out of range [0, " +
                                   std::to_string(m.layers) + ")");
  }
  {
    // Until the worker has recorded this layer's event, a wait would bind to the previous
    // operation's record of it.
    std::unique_lock lock(m.mu);
    m.cv.wait(lock, [&] { return m.layers_submitted > layer; });
    if (!m.worker_error.ok()) return m.worker_error;
  }
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(cudaStreamWaitEvent(to_cuda(stream), m.layer_ready[layer], 0),
                     "cudaStreamWaitEvent");
  return Status::Ok();
}

Status GpuTransfer::wait_all(GpuStream stream) const {
  Impl& m = *impl_;
  {
    std::unique_lock lock(m.mu);
    m.cv.wait(lock, [&] { return !m.busy; });
    if (!m.worker_error.ok()) return m.worker_error;
  }
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(cudaStreamWaitEvent(to_cuda(stream), m.copies_done, 0), "cudaStreamWaitEvent");
  TIERKV_CUDA_RETURN(cudaStreamWaitEvent(to_cuda(stream), m.kernels_done, 0),
                     "cudaStreamWaitEvent");
  return Status::Ok();
}

bool GpuTransfer::layer_ready(uint32_t layer) const {
  Impl& m = *impl_;
  if (layer >= m.layers) return false;
  {
    std::lock_guard lock(m.mu);
    if (m.layers_submitted <= layer) return false;
  }
  return cudaEventQuery(m.layer_ready[layer]) == cudaSuccess;
}

GpuEvent GpuTransfer::layer_event(uint32_t layer) const {
  Impl& m = *impl_;
  if (layer >= m.layers) return nullptr;
  std::unique_lock lock(m.mu);
  m.cv.wait(lock, [&] { return m.layers_submitted > layer; });
  return reinterpret_cast<GpuEvent>(m.layer_ready[layer]);
}

Status GpuTransfer::synchronize() {
  Impl& m = *impl_;
  TIERKV_RETURN_IF_ERROR(m.wait_idle());
  DeviceScope scope(m.device);
  TIERKV_CUDA_RETURN(cudaEventSynchronize(m.copies_done), "transfer copies");
  TIERKV_CUDA_RETURN(cudaEventSynchronize(m.kernels_done), "transfer kernels");
  auto bad = m.cache.take_bad_rows(reinterpret_cast<GpuStream>(m.kernel));
  if (!bad.ok()) return bad.status();
  if (*bad != 0) {
    return Status::Internal(std::to_string(*bad) +
                            " row accesses named a block outside the cache and were skipped");
  }
  return Status::Ok();
}

bool GpuTransfer::done() const {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    if (m.busy) return false;
  }
  return cudaEventQuery(m.copies_done) == cudaSuccess &&
         cudaEventQuery(m.kernels_done) == cudaSuccess;
}

Status GpuTransfer::use_gpu_tier(std::shared_ptr<DaemonGpuPool> pool) {
  Impl& m = *impl_;
  if (pool == nullptr) return Status::InvalidArgument("GPU pool is null");
  if (pool->device() != m.device) {
    return Status::InvalidArgument("the daemon's GPU pool is on device " +
                                   std::to_string(pool->device()) + ", this transfer's cache on " +
                                   std::to_string(m.device));
  }
  TIERKV_RETURN_IF_ERROR(m.wait_idle());
  if (m.offsets_dev == nullptr) {
    DeviceScope scope(m.device);
    TIERKV_CUDA_RETURN(scope.status(), "cudaSetDevice");
    const uint64_t n = m.options.max_tokens / m.chunk_tokens + 1;
    TIERKV_CUDA_RETURN(cudaHostAlloc(&m.offsets_host, n * sizeof(uint64_t), cudaHostAllocDefault),
                       "cudaHostAlloc(GPU pool offsets)");
    TIERKV_CUDA_RETURN(cudaMalloc(&m.offsets_dev, n * sizeof(uint64_t)),
                       "cudaMalloc(GPU pool offsets)");
    TIERKV_CUDA_RETURN(cudaEventCreateWithFlags(&m.offsets_uploaded, cudaEventDisableTiming),
                       "create event");
    m.offsets_capacity = n;
  }
  m.gpu_pool = std::move(pool);
  return Status::Ok();
}

uint32_t GpuTransfer::num_layers() const { return impl_->layers; }
int GpuTransfer::device() const { return impl_->device; }

}  // namespace tierkv
