// GpuMemory with CUDA (built only when the toolkit is found; gpu_memory_stub.cc stands in
// otherwise).
//
// One cudaMalloc'd pool, exported with cudaIpcGetMemHandle. Copies go on one non-blocking stream:
// cudaMemcpyAsync from the registered (pinned) host region, then an event per copy (from a ring
// of max_copies events) and a host function that writes the eventfd. The host function runs on
// a CUDA driver thread and makes no CUDA call, as CUDA requires; reap() asks the events, oldest
// first, with cudaEventQuery, which never blocks.
#include <cuda_runtime.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <vector>

#include "tierkv/storage/gpu_memory.h"

namespace tierkv::storage {
namespace {

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

Status cuda_error(cudaError_t e, const std::string& what) {
  (void)cudaGetLastError();  // clear a non-sticky error so later calls start clean
  return Status::Unavailable(what + ": " + cuda_text(e));
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  return buf;
}

class CudaGpuMemory final : public GpuMemory {
 public:
  ~CudaGpuMemory() override {
    if (stream_ != nullptr) {
      // Copies still running read the host region and write the pool: let them finish (at
      // shutdown only) before either goes, and before the host function's eventfd is closed.
      (void)cudaStreamSynchronize(stream_);
      (void)cudaStreamDestroy(stream_);
    }
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
    if (registered_ != nullptr) (void)cudaHostUnregister(registered_);
    if (base_ != nullptr) (void)cudaFree(base_);
    if (fd_ >= 0) ::close(fd_);
  }

  Status open(const GpuMemoryOptions& o, std::span<std::byte> host_region) {
    int count = 0;
    if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
      return cuda_error(e, "no CUDA device: cudaGetDeviceCount");
    }
    if (count == 0) return Status::Unavailable("no CUDA device is visible to tierkvd");
    if (o.device < 0 || o.device >= count) {
      return Status::InvalidArgument("gpu.device = " + std::to_string(o.device) +
                                     " does not exist (tierkvd sees " + std::to_string(count) +
                                     " CUDA devices, 0 to " + std::to_string(count - 1) + ")");
    }
    if (o.max_copies == 0) return Status::InvalidArgument("max_copies must be at least 1");
    device_ = o.device;
    // The daemon's server thread is the only thread that calls CUDA: make the device current.
    if (const cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      return cuda_error(e, "cudaSetDevice(" + std::to_string(device_) + ")");
    }
    cudaDeviceProp prop{};
    if (const cudaError_t e = cudaGetDeviceProperties(&prop, device_); e != cudaSuccess) {
      return cuda_error(e, "cudaGetDeviceProperties");
    }
    std::memcpy(uuid_.data(), prop.uuid.bytes, uuid_.size());
    description_ = std::string(prop.name) + " (device " + std::to_string(device_) + ", " +
                   gib(prop.totalGlobalMem) + ")";
    if (const cudaError_t e = cudaMalloc(&base_, o.bytes); e != cudaSuccess) {
      base_ = nullptr;
      size_t free_bytes = 0;
      size_t total_bytes = 0;
      (void)cudaGetLastError();
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      return cuda_error(e, "cudaMalloc of gpu.capacity = " + std::to_string(o.bytes) +
                               " bytes on " + description_ + ", which has " + gib(free_bytes) +
                               " free");
    }
    bytes_ = o.bytes;
    cudaIpcMemHandle_t handle{};
    if (const cudaError_t e = cudaIpcGetMemHandle(&handle, base_); e != cudaSuccess) {
      return cuda_error(e, "cudaIpcGetMemHandle of the GPU pool");
    }
    static_assert(sizeof(handle) == 64);
    std::memcpy(handle_.data(), &handle, handle_.size());
    if (!host_region.empty()) {
      const cudaError_t e =
          cudaHostRegister(host_region.data(), host_region.size(), cudaHostRegisterPortable);
      if (e == cudaErrorHostMemoryAlreadyRegistered) {
        (void)cudaGetLastError();
      } else if (e != cudaSuccess) {
        return cuda_error(e, "cudaHostRegister of the " + std::to_string(host_region.size()) +
                                 "-byte host pool (copies to the GPU need it pinned)");
      } else {
        registered_ = host_region.data();
      }
      host_ = host_region;
    }
    if (const cudaError_t e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
        e != cudaSuccess) {
      stream_ = nullptr;
      return cuda_error(e, "cudaStreamCreate");
    }
    events_.resize(o.max_copies, nullptr);
    for (cudaEvent_t& ev : events_) {
      if (const cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
          e != cudaSuccess) {
        ev = nullptr;
        return cuda_error(e, "cudaEventCreate");
      }
    }
    fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) return Status::FromErrno("eventfd for GPU copy completions", errno);
    return Status::Ok();
  }

  [[nodiscard]] uint64_t bytes() const override { return bytes_; }
  [[nodiscard]] int device() const override { return device_; }
  [[nodiscard]] std::string description() const override { return description_; }
  [[nodiscard]] std::array<uint8_t, 16> device_uuid() const override { return uuid_; }
  [[nodiscard]] std::array<uint8_t, 64> ipc_handle() const override { return handle_; }
  [[nodiscard]] int completion_fd() const override { return fd_; }
  [[nodiscard]] uint32_t max_copies() const override {
    return static_cast<uint32_t>(events_.size());
  }
  [[nodiscard]] uint32_t copies_in_flight() const override {
    return static_cast<uint32_t>(in_flight_.size());
  }

  Status copy_in(uint64_t offset, const std::byte* src, uint64_t bytes, uint64_t token) override {
    if (in_flight_.size() >= events_.size()) {
      return Status::ResourceExhausted(std::to_string(in_flight_.size()) +
                                       " GPU copies are in flight already, the most at once");
    }
    if (offset > bytes_ || bytes > bytes_ - offset) {
      return Status::InvalidArgument("GPU copy to [" + std::to_string(offset) + ", " +
                                     std::to_string(offset + bytes) + ") is outside the " +
                                     std::to_string(bytes_) + "-byte pool");
    }
    // A source outside the pinned region would make cudaMemcpyAsync a synchronous staged copy,
    // blocking the server thread: refuse it.
    if (src < host_.data() || src > host_.data() + host_.size() ||
        bytes > static_cast<uint64_t>(host_.data() + host_.size() - src)) {
      return Status::InvalidArgument("GPU copy source lies outside the registered host region");
    }
    cudaEvent_t ev = events_[next_event_ % events_.size()];
    cudaError_t e = cudaMemcpyAsync(static_cast<std::byte*>(base_) + offset, src, bytes,
                                    cudaMemcpyHostToDevice, stream_);
    if (e == cudaSuccess) e = cudaEventRecord(ev, stream_);
    if (e == cudaSuccess) e = cudaLaunchHostFunc(stream_, &CudaGpuMemory::notify, this);
    if (e != cudaSuccess) return cuda_error(e, "enqueue a copy to the GPU tier");
    ++next_event_;
    in_flight_.push_back({token, ev});
    return Status::Ok();
  }

  size_t reap(std::span<GpuCopyDone> out) override {
    size_t n = 0;
    while (n < out.size() && !in_flight_.empty()) {
      const cudaError_t e = cudaEventQuery(in_flight_.front().event);
      if (e == cudaErrorNotReady) break;
      if (e != cudaSuccess) (void)cudaGetLastError();
      out[n++] = GpuCopyDone{in_flight_.front().token, e == cudaSuccess};
      in_flight_.pop_front();
    }
    return n;
  }

 private:
  struct Copy {
    uint64_t token;
    cudaEvent_t event;
  };

  static void CUDART_CB notify(void* self) {
    const uint64_t one = 1;
    // Nothing to do on failure: the counter only saturates, and a reap finds the copy anyway.
    (void)!::write(static_cast<CudaGpuMemory*>(self)->fd_, &one, sizeof(one));
  }

  int device_ = 0;
  void* base_ = nullptr;
  uint64_t bytes_ = 0;
  std::string description_;
  std::array<uint8_t, 16> uuid_{};
  std::array<uint8_t, 64> handle_{};
  std::span<std::byte> host_;
  std::byte* registered_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;
  uint64_t next_event_ = 0;
  std::deque<Copy> in_flight_;
  int fd_ = -1;
};

}  // namespace

bool cuda_gpu_memory_built() { return true; }

Result<std::unique_ptr<GpuMemory>> open_cuda_gpu_memory(const GpuMemoryOptions& options,
                                                        std::span<std::byte> host_region) {
  auto memory = std::make_unique<CudaGpuMemory>();
  TIERKV_RETURN_IF_ERROR(memory->open(options, host_region));
  return std::unique_ptr<GpuMemory>(std::move(memory));
}

}  // namespace tierkv::storage
