// Types the parts of the Python module share (module.cc, prefill_binding.cc, gpu_binding.cc).
//
// Ownership: every Python object that reads or writes shared memory holds a shared_ptr to the
// Client, so the daemon's host pool stays mapped while any of them lives. Leases live in "boxes"
// (LoadBox, PutBox) shared by the Python lease object and by every view exported from it
// (ChunkBuffer, wrapped in a memoryview) and every GPU transfer in flight on it, so the slots a
// view shows stay leased while the view lives.
//
// Thread safety: the Python objects are used with the GIL held; methods that block (socket round
// trips, copies) release it and take the box's mutex instead, so two threads calling into one
// lease serialize while the rest of Python runs.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "buffers.h"
#include "errors.h"
#include "tierkv/client.h"
#include "tierkv/protocol.h"

namespace tierkv::python {

namespace py = pybind11;

// The Python tierkv.Client.
struct PyClient : std::enable_shared_from_this<PyClient> {
  std::shared_ptr<Client> client;
  // The host pool pinned for CUDA copies, made on first GPU use (a PinnedHostPool in builds with
  // the GPU transfer path). Guarded by gpu_mu.
  std::mutex gpu_mu;
  std::shared_ptr<void> pinned;
};

// Destroys a box with the GIL released where the caller holds it: a lease's destructor releases
// its slots with a round trip to the daemon.
template <typename Box>
std::shared_ptr<Box> make_box(std::unique_ptr<Box> box) {
  return std::shared_ptr<Box>(box.release(), [](Box* b) {
    if (Py_IsInitialized() != 0 && PyGILState_Check() != 0) {
      py::gil_scoped_release nogil;
      delete b;
    } else {
      delete b;
    }
  });
}

struct LoadBox {
  std::shared_ptr<PyClient> owner;
  Namespace ns;
  LoadLease lease;
  std::mutex mu;
};

struct PutBox {
  std::shared_ptr<PyClient> owner;
  Namespace ns;
  PutLease lease;
  std::mutex mu;
};

// The Python tierkv.LoadLease and tierkv.PutLease: a box while open, null after.
struct PyLoadLease {
  std::shared_ptr<LoadBox> box;  // null once released
  size_t chunks = 0;
  Layout layout;

  LoadBox& open() const {
    if (box == nullptr) {
      throw StatusError(Status::FailedPrecondition("the load lease was released"));
    }
    return *box;
  }
  // Chunk i's bytes in the host pool; raises if i is out of range or the chunk lies in the
  // daemon's GPU pool (a lease from DaemonGpuPool.load_lease), which only a GpuTransfer reads.
  std::span<const std::byte> host_chunk(size_t i) const;
};

// A max_chunks argument: None is no limit; raises on a negative count.
size_t max_chunks_arg(const py::object& v);

// Wraps a LoadLease the caller's `client` got (Client::load, DaemonGpuPool::load) for Python.
PyLoadLease wrap_load_lease(PyClient& client, const Namespace& ns, LoadLease lease);

struct PyPutLease {
  std::shared_ptr<PutBox> box;  // null once committed or aborted
  size_t chunks = 0;
  Layout layout;
  std::vector<proto::PutDisposition> dispositions;

  PutBox& open() const {
    if (box == nullptr) {
      throw StatusError(Status::FailedPrecondition("the put lease was committed or aborted"));
    }
    return *box;
  }
};

// The exporter behind every memoryview of shared memory the module hands out. Holds `keep` (the
// box the memory belongs to) for as long as any view of it lives; `live` (when set) counts the
// views of one chunk, for owners that must refuse to give a chunk back while it is viewed.
struct ChunkBuffer {
  ChunkBuffer(std::shared_ptr<void> keep_in, std::byte* data_in, size_t size_in, bool writable_in,
              uint32_t* live_in)
      : keep(std::move(keep_in)),
        data(data_in),
        size(size_in),
        writable(writable_in),
        live(live_in) {
    if (live != nullptr) ++*live;
  }
  ~ChunkBuffer() {
    if (live != nullptr) --*live;
  }
  ChunkBuffer(const ChunkBuffer&) = delete;
  ChunkBuffer& operator=(const ChunkBuffer&) = delete;

  std::shared_ptr<void> keep;
  std::byte* data;
  size_t size;
  bool writable;
  uint32_t* live;
};

// A memoryview (1-D, unsigned bytes) of [data, data + size) that keeps `keep` alive.
py::memoryview chunk_view(std::shared_ptr<void> keep, std::byte* data, size_t size, bool writable,
                          uint32_t* live = nullptr);
// numpy.frombuffer(view, <the layout's dtype>).reshape(layers, 2, chunk_tokens, kv_heads,
// head_dim): bf16 and fp8 elements come as uint16 / uint8 (numpy has no such types).
py::object chunk_array(const py::memoryview& view, const Layout& layout);
// (layers, 2, chunk_tokens, kv_heads, head_dim)
py::tuple chunk_shape(const Layout& layout);
std::string numpy_dtype_name(DType dtype);

// Checks that `array` holds at least `chunks` whole chunks of the namespace and that its element
// size fits the layout's dtype (1-byte elements are taken as raw bytes).
void check_kv_array(const ArrayRef& array, const Namespace& ns, uint64_t chunks, const char* what);

// Loads the leading cached chunks of `tokens` (at most max_chunks) through a LoadLease: calls
// copy(i, chunk) -> Status for each chunk in order until one fails, then drain() -> Status (which
// waits for copies still running, so that none reads a slot after the release), then releases
// the lease. Counts the chunks copied in `loaded`; the first failure wins. Call without the GIL.
template <typename Copy, typename Drain>
Status load_chunks(Client& client, const Namespace& ns, std::span<const TokenId> tokens,
                   size_t max_chunks, size_t& loaded, Copy copy, Drain drain) {
  Result<LoadLease> lease = client.load(ns, tokens, max_chunks);
  if (!lease.ok()) return lease.status();
  Status st;
  const uint64_t cb = ns.chunk_bytes();
  for (size_t i = 0; i < lease->chunks() && st.ok(); ++i) {
    const std::span<const std::byte> chunk = lease->chunk(i);
    if (chunk.size() != cb) {
      st = Status::Internal("chunk " + std::to_string(i) + " has " + std::to_string(chunk.size()) +
                            " bytes, the layout " + std::to_string(cb));
      break;
    }
    st = copy(i, chunk);
    if (st.ok()) ++loaded;
  }
  const Status drained = drain();
  if (st.ok()) st = drained;
  const Status released = lease->release();
  if (st.ok()) st = released;
  return st;
}

// --- the GPU side (gpu_binding.cc): contiguous device arrays <-> shared-memory slots -------------

// Whether this module was built with CUDA copies (and so the GPU transfer path).
bool cuda_built();
// Stores the full chunks of `tokens` from device memory `kv` (chunk layout, contiguous).
PutResult gpu_store(PyClient& client, const Namespace& ns, std::span<const TokenId> tokens,
                    const ArrayRef& kv, uintptr_t stream);
// Loads the leading cached chunks (at most max_chunks) into device memory `into`; returns the
// count.
size_t gpu_load(PyClient& client, const Namespace& ns, std::span<const TokenId> tokens,
                const ArrayRef& into, size_t max_chunks, uintptr_t stream);
// Copies `bytes` between a device array and a host pointer in the shared pool, and waits.
void gpu_copy_to_host(PyClient& client, std::byte* dst, const ArrayRef& src, size_t bytes,
                      uintptr_t stream);
void gpu_copy_from_host(PyClient& client, const ArrayRef& dst, size_t dst_offset,
                        const std::byte* src, size_t bytes, uintptr_t stream);

void bind_gpu(py::module_& m);
void bind_prefill(py::module_& m);

}  // namespace tierkv::python
