// The daemon's GPU pool in a libtierkv built without CUDA: it cannot be opened, and says why.
#include "gpu_ipc.h"

namespace tierkv::detail {

Result<OpenedGpuPool> open_gpu_pool(const proto::GpuAttachReply&) {
  return Status::FailedPrecondition(
      "this libtierkv was built without CUDA (no CUDA toolkit found at build time), so it cannot "
      "open the daemon's GPU pool; rebuild it on a machine with the toolkit");
}

void close_gpu_pool(const OpenedGpuPool&) {}

}  // namespace tierkv::detail
