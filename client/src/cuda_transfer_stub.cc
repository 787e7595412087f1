// GpuTransfer and PinnedHostPool in a libtierkv built without CUDA: the API links, every create
// says why it cannot work. (cuda_transfer.cc is the real one.)
#include "tierkv/cuda_transfer.h"

namespace tierkv {
namespace {

Status not_built() {
  return Status::FailedPrecondition(
      "this libtierkv was built without CUDA (no CUDA toolkit found at build time); rebuild it on "
      "a machine with the toolkit for the GPU transfer path");
}

}  // namespace

bool gpu_transfer_built() { return false; }

Result<std::shared_ptr<PinnedHostPool>> PinnedHostPool::pin(std::shared_ptr<Client>) {
  return not_built();
}
PinnedHostPool::~PinnedHostPool() = default;
bool PinnedHostPool::contains(const std::byte*, uint64_t) const { return false; }

struct GpuTransfer::Impl {};

Result<std::unique_ptr<GpuTransfer>> GpuTransfer::create_paged(std::shared_ptr<PinnedHostPool>,
                                                               const Namespace&,
                                                               const kernels::PagedKvView&, int,
                                                               const GpuTransferOptions&) {
  return not_built();
}
Result<std::unique_ptr<GpuTransfer>> GpuTransfer::create_flat(std::shared_ptr<PinnedHostPool>,
                                                              const Namespace&,
                                                              const kernels::FlatKvView&, int,
                                                              const GpuTransferOptions&) {
  return not_built();
}

// No GpuTransfer can exist in this build; these only satisfy the linker.
GpuTransfer::GpuTransfer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuTransfer::~GpuTransfer() = default;
Status GpuTransfer::load(const LoadLease&, size_t, size_t, std::span<const int32_t>, GpuStream) {
  return not_built();
}
Status GpuTransfer::load_chunks(std::span<const std::byte* const>, std::span<const int32_t>,
                                uint64_t, GpuStream) {
  return not_built();
}
Status GpuTransfer::store(const PutLease&, std::span<const int32_t>, GpuStream) {
  return not_built();
}
Status GpuTransfer::store_chunks(std::span<std::byte* const>, std::span<const int32_t>, uint64_t,
                                 GpuStream) {
  return not_built();
}
Status GpuTransfer::use_gpu_tier(std::shared_ptr<DaemonGpuPool>) { return not_built(); }
Status GpuTransfer::wait_layer(uint32_t, GpuStream) const { return not_built(); }
Status GpuTransfer::wait_all(GpuStream) const { return not_built(); }
bool GpuTransfer::layer_ready(uint32_t) const { return false; }
GpuEvent GpuTransfer::layer_event(uint32_t) const { return nullptr; }
Status GpuTransfer::synchronize() { return not_built(); }
bool GpuTransfer::done() const { return true; }
uint32_t GpuTransfer::num_layers() const { return 0; }
int GpuTransfer::device() const { return -1; }

}  // namespace tierkv
