// Private to libtierkv: opening and closing the daemon's GPU pool in this process (CUDA IPC).
// gpu_ipc_cuda.cc is the real one; gpu_ipc_stub.cc, in a build without CUDA, says why it cannot.
#pragma once

#include <cstddef>

#include "tierkv/protocol.h"
#include "tierkv/status.h"

namespace tierkv::detail {

struct OpenedGpuPool {
  int device = -1;  // this process's index of the daemon's device
  std::byte* data = nullptr;
};

// Finds the local device whose UUID is the daemon's and opens the IPC handle there.
Result<OpenedGpuPool> open_gpu_pool(const proto::GpuAttachReply& attach);
void close_gpu_pool(const OpenedGpuPool& pool);

}  // namespace tierkv::detail
