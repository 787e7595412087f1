// Opening the daemon's GPU pool with CUDA IPC (built only when the toolkit is found).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "gpu_ipc.h"

namespace tierkv::detail {
namespace {

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

std::string uuid_text(const std::array<uint8_t, 16>& u) {
  char buf[48];
  std::snprintf(buf, sizeof(buf),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                u[14], u[15]);
  return buf;
}

}  // namespace

Result<OpenedGpuPool> open_gpu_pool(const proto::GpuAttachReply& attach) {
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::Unavailable(
        "cannot open the daemon's GPU pool: no usable CUDA device in this "
        "process: " +
        cuda_text(e));
  }
  OpenedGpuPool pool;
  for (int d = 0; d < count && pool.device < 0; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    if (std::memcmp(prop.uuid.bytes, attach.device_uuid.data(), attach.device_uuid.size()) == 0) {
      pool.device = d;
    }
  }
  if (pool.device < 0) {
    return Status::FailedPrecondition(
        "the daemon's GPU pool lies on " + uuid_text(attach.device_uuid) + " (its device " +
        std::to_string(attach.device) + "), which is not among the " + std::to_string(count) +
        " CUDA devices this process sees (check CUDA_VISIBLE_DEVICES)");
  }
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  cudaError_t e = cudaSetDevice(pool.device);
  cudaIpcMemHandle_t handle{};
  static_assert(sizeof(handle) == sizeof(attach.ipc_handle));
  std::memcpy(&handle, attach.ipc_handle.data(), sizeof(handle));
  void* p = nullptr;
  if (e == cudaSuccess) e = cudaIpcOpenMemHandle(&p, handle, cudaIpcMemLazyEnablePeerAccess);
  if (previous >= 0 && previous != pool.device) (void)cudaSetDevice(previous);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::Unavailable("cudaIpcOpenMemHandle of the daemon's GPU pool on device " +
                               std::to_string(pool.device) + ": " + cuda_text(e) +
                               " (the daemon and this process must share the GPU; not in the "
                               "same process)");
  }
  pool.data = static_cast<std::byte*>(p);
  return pool;
}

void close_gpu_pool(const OpenedGpuPool& pool) {
  if (pool.data == nullptr) return;
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  if (cudaSetDevice(pool.device) == cudaSuccess) (void)cudaIpcCloseMemHandle(pool.data);
  if (previous >= 0 && previous != pool.device) (void)cudaSetDevice(previous);
}

}  // namespace tierkv::detail
