// GpuMemory: the GPU tier's device memory and the copy engine that fills it — one allocation on
// one CUDA device, exported to other processes with a CUDA IPC memory handle, and copies into it
// from the daemon's host region on a CUDA stream of its own.
//
// Like IoBackend for the NVMe tier, it is the one interface the GPU tier goes through, so that
// the daemon builds and links without CUDA (open_cuda_gpu_memory() then says why it cannot) and
// the tier's bookkeeping is tested on machines without a GPU (tests use a host-memory stand-in).
//
// Copies are asynchronous: copy_in() enqueues and returns; a finished copy is reaped with reap(),
// never delivered by callback, so the owner decides when to act on it. completion_fd() (an
// eventfd) becomes readable when a copy may have finished: the daemon's event loop watches it,
// and nothing ever waits on the device. Source ownership: from copy_in() until its completion is
// reaped, the copy reads `src`; the caller must keep it from being rewritten or freed.
//
// Thread safety: none; one owner thread (the daemon's server thread).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tierkv/status.h"

namespace tierkv::storage {

struct GpuMemoryOptions {
  int device = 0;            // CUDA device index, as this process numbers them
  uint64_t bytes = 0;        // size of the one allocation
  uint32_t max_copies = 16;  // copies in flight at once, at most
};

struct GpuCopyDone {
  uint64_t token = 0;
  bool ok = false;  // false: the copy failed (a CUDA error); the bytes at its target are garbage
};

class GpuMemory {
 public:
  virtual ~GpuMemory() = default;

  [[nodiscard]] virtual uint64_t bytes() const = 0;
  [[nodiscard]] virtual int device() const = 0;
  // "NVIDIA H100 80GB HBM3 (device 0, 79.1 GiB)": for logs and stats.
  [[nodiscard]] virtual std::string description() const = 0;
  // cudaDeviceProp::uuid: names the device in every process, whatever CUDA_VISIBLE_DEVICES says.
  [[nodiscard]] virtual std::array<uint8_t, 16> device_uuid() const = 0;
  // The allocation's cudaIpcMemHandle_t, which another process opens with cudaIpcOpenMemHandle.
  [[nodiscard]] virtual std::array<uint8_t, 64> ipc_handle() const = 0;

  // Readable when a copy may have finished; then call reap(). Drain it before reaping.
  [[nodiscard]] virtual int completion_fd() const = 0;
  [[nodiscard]] virtual uint32_t max_copies() const = 0;
  [[nodiscard]] virtual uint32_t copies_in_flight() const = 0;
  // Enqueues a copy of `bytes` from `src` (host memory inside the region given at open) to byte
  // `offset` of the allocation; `token` comes back with its completion. Fails, enqueueing
  // nothing, when max_copies are in flight or the range is outside the allocation.
  virtual Status copy_in(uint64_t offset, const std::byte* src, uint64_t bytes, uint64_t token) = 0;
  // Finished copies, in the order they were enqueued, without blocking; returns how many were
  // written to `out`.
  virtual size_t reap(std::span<GpuCopyDone> out) = 0;
};

// True if this build has CUDA (the real GpuMemory); says nothing about whether a GPU is present.
bool cuda_gpu_memory_built();

// Allocates `options.bytes` on `options.device` (cudaMalloc), exports it (cudaIpcGetMemHandle),
// and registers `host_region` with the driver (cudaHostRegister) so that copies from it go by
// DMA without blocking the caller. Fails, saying why, when the build has no CUDA, no device is
// visible, the device index is out of range, or the memory cannot be had.
Result<std::unique_ptr<GpuMemory>> open_cuda_gpu_memory(const GpuMemoryOptions& options,
                                                        std::span<std::byte> host_region);

}  // namespace tierkv::storage
