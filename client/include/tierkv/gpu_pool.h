// The daemon's GPU tier, seen from an engine process.
//
// tierkvd can own a pool of GPU memory ([gpu] in its configuration) holding copies of the chunks
// loaded most. An engine opens that pool once, on the same GPU, and then loads those chunks with
// a device-to-device copy instead of over PCIe:
//
//   auto pinned = PinnedHostPool::pin(client);                 // host chunks, by DMA
//   auto gpu = DaemonGpuPool::attach(client);                  // the daemon's pool (CUDA IPC)
//   auto xfer = GpuTransfer::create_paged(*pinned, ns, cache, gpu->device());
//   xfer->use_gpu_tier(*gpu);
//   auto lease = gpu->load(ns, tokens);    // GPU-slot leases where the daemon has a copy there
//   xfer->load(*lease, 0, lease->chunks(), block_table, stream);  // D2D, and H2D for the rest
//   xfer->synchronize(); lease->release();
//
// attach() asks the daemon for the pool (gpu_attach: a CUDA IPC memory handle and the device's
// UUID), finds the device with that UUID among this process's devices, and opens the handle there
// (cudaIpcOpenMemHandle, which needs, and makes current, a CUDA context on that device). The
// mapping is closed when the DaemonGpuPool is destroyed; it keeps the Client (the connection)
// alive, and the daemon keeps a leased GPU slot from eviction until the lease is released, or the
// client disconnects or dies.
//
// Thread safety: immutable after attach(); load() may be called from any thread (requests are
// serialized on the Client's connection). In a libtierkv built without CUDA, attach() fails
// saying so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>

#include "tierkv/client.h"
#include "tierkv/status.h"

namespace tierkv {

class DaemonGpuPool {
 public:
  static Result<std::shared_ptr<DaemonGpuPool>> attach(std::shared_ptr<Client> client);
  ~DaemonGpuPool();
  DaemonGpuPool(const DaemonGpuPool&) = delete;
  DaemonGpuPool& operator=(const DaemonGpuPool&) = delete;

  [[nodiscard]] const std::shared_ptr<Client>& client() const { return client_; }
  // This process's index of the daemon's GPU.
  [[nodiscard]] int device() const { return device_; }
  // The pool's first byte, a device pointer valid in this process on device().
  [[nodiscard]] std::byte* data() const { return data_; }
  [[nodiscard]] uint64_t size() const { return bytes_; }
  // True if [offset, offset + bytes) lies in the pool.
  [[nodiscard]] bool contains(uint64_t offset, uint64_t bytes) const {
    return offset <= bytes_ && bytes <= bytes_ - offset;
  }

  // Leases the prompt's leading cached chunks (at most max_chunks), as Client::load does, except
  // that chunks with a copy in the daemon's GPU tier come as GPU-pool leases (LoadLease::on_gpu).
  Result<LoadLease> load(const Namespace& ns, std::span<const TokenId> tokens,
                         size_t max_chunks = std::numeric_limits<size_t>::max());
  Result<LoadLease> load(NamespaceId ns, std::span<const ChunkKey> keys);

 private:
  DaemonGpuPool() = default;
  std::shared_ptr<Client> client_;
  int device_ = -1;
  std::byte* data_ = nullptr;
  uint64_t bytes_ = 0;
  uint32_t slot_align_ = 1;
};

}  // namespace tierkv
