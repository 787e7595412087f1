// GpuMemory in a build without CUDA: the GPU tier cannot be opened, and says why.
// (gpu_memory_cuda.cc is the real one.)
#include "tierkv/storage/gpu_memory.h"

namespace tierkv::storage {

bool cuda_gpu_memory_built() { return false; }

Result<std::unique_ptr<GpuMemory>> open_cuda_gpu_memory(const GpuMemoryOptions&,
                                                        std::span<std::byte>) {
  return Status::FailedPrecondition(
      "tierkvd was built without CUDA (no CUDA toolkit found at build time)");
}

}  // namespace tierkv::storage
