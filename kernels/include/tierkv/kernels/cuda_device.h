// Host-side helpers for code that calls the CUDA runtime itself (the CUDA kernels' wrappers, the
// client's GPU transfer path, tierkv-bench's GPU subcommands): a runtime error as a Status, and a
// scope that makes a device current. Unlike the other headers here, this one needs the CUDA
// runtime's headers: include it only from code built with the toolkit (TIERKV_HAVE_CUDA), which
// links tierkv_kernels_cuda or CUDA::cudart_static.
// Thread safety: DeviceScope changes the calling thread's current device for its lifetime.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "tierkv/status.h"

namespace tierkv::kernels::cuda {

// `what` failed with `e`: Internal("<what>: <error name> (<error text>)").
inline Status cuda_error(cudaError_t e, const std::string& what) {
  return Status::Internal(what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

// Sets the calling thread's device to `device` for the scope, restoring the previous one after,
// so that a call never changes which device the caller's own CUDA calls go to.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) status_ = cudaSetDevice(device);
  }
  ~DeviceScope() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  // cudaSuccess, or why the device could not be made current.
  [[nodiscard]] cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  cudaError_t status_ = cudaSuccess;
};

}  // namespace tierkv::kernels::cuda
