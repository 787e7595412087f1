// The GPU side of the Python module.
//
// Two things, both only where libtierkv has its GPU transfer path (tierkv/cuda_transfer.h) and was
// built with CUDA; elsewhere every entry point raises tierkv.FailedPrecondition saying so:
//   - store()/load()/copy_into()/write() with CUDA arrays (contiguous, in the chunk layout): one
//     cudaMemcpyAsync per chunk between the device array and its shared-memory slot, on the
//     caller's stream (so after the work that produced the data), from the host pool pinned once
//     per Client (PinnedHostPool), then a wait for that stream;
//   - tierkv.GpuTransfer: the client library's engine path between the host pool and a paged
//     (vLLM) or flat per-layer KV cache on the GPU, layer by layer, asynchronous on the caller's
//     stream. It holds the leases its pending operations read or write until synchronize() or
//     done(), so releasing or committing them early cannot hand a slot back while DMA uses it;
//   - tierkv.DaemonGpuPool: the daemon's GPU tier (tierkv/gpu_pool.h), opened with CUDA IPC on the
//     daemon's GPU; its load_lease() leases chunks with a copy there as GPU-pool chunks, which a
//     GpuTransfer that use_gpu_tier() scatters device to device (the rest as ever from host RAM).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "binding.h"

#if TIERKV_PYTHON_GPU_TRANSFER
#include "tierkv/cuda_transfer.h"
#include "tierkv/gpu_pool.h"
#endif
#if TIERKV_PYTHON_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tierkv::python {

namespace {

[[noreturn, maybe_unused]] void no_gpu_path(const char* what) {
  throw StatusError(Status::FailedPrecondition(
      std::string(what) +
#if TIERKV_PYTHON_GPU_TRANSFER
      " needs CUDA, but this libtierkv was built without it (no CUDA toolkit at build time): "
      "pass host memory, or rebuild on a machine with the CUDA toolkit"
#else
      " needs the GPU transfer path, which this libtierkv does not have: pass host memory"
#endif
      ));
}

#if TIERKV_PYTHON_CUDA

Status cuda_error(cudaError_t e, const std::string& what) {
  return Status::Internal(what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw StatusError(cuda_error(e, what));
}

// The device a pointer belongs to (the array's own word if it gave one).
int device_of(const ArrayRef& a) {
  if (a.device() >= 0) return a.device();
  cudaPointerAttributes attr{};
  check_cuda(cudaPointerGetAttributes(&attr, a.data()), "cudaPointerGetAttributes");
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    invalid_argument("the array's __cuda_array_interface__ pointer is not device memory");
  }
  return attr.device;
}

// Makes `device` current for this thread while alive.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

#endif  // TIERKV_PYTHON_CUDA

#if TIERKV_PYTHON_GPU_TRANSFER

std::shared_ptr<PinnedHostPool> pinned_pool(PyClient& c) {
  std::lock_guard lock(c.gpu_mu);
  if (c.pinned == nullptr) {
    Result<std::shared_ptr<PinnedHostPool>> pool = Status::Internal("not run");
    {
      py::gil_scoped_release nogil;
      pool = PinnedHostPool::pin(c.client);
    }
    c.pinned = take(std::move(pool));
  }
  return std::static_pointer_cast<PinnedHostPool>(c.pinned);
}

// A block table: int32 entries (padding such as -1 allowed past the sequence).
std::vector<int32_t> block_table_from(py::handle obj) {
  std::vector<int32_t> out;
  if (obj.is_none()) return out;
  py::object holder = py::reinterpret_borrow<py::object>(obj);
  if (!PyObject_CheckBuffer(obj.ptr()) && py::hasattr(obj, "numpy") && py::hasattr(obj, "cpu")) {
    holder = obj.attr("detach")().attr("cpu")().attr("numpy")();
  }
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(
      PyObject_CheckBuffer(holder.ptr()) != 0 ? py::object(py::memoryview(holder).attr("tolist")())
                                              : holder);
  out.reserve(seq.size());
  for (py::handle v : seq) {
    const auto x = v.cast<int64_t>();
    if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max()) {
      invalid_argument("block_table entry " + std::to_string(x) + " does not fit in int32");
    }
    out.push_back(static_cast<int32_t>(x));
  }
  return out;
}

struct PyGpuTransfer {
  std::shared_ptr<PyClient> owner;
  Namespace ns;
  std::vector<std::byte*> k_layers, v_layers;    // the view's spans point here
  py::list tensors;                              // keeps the engine's cache alive
  std::vector<std::shared_ptr<void>> in_flight;  // leases pending operations use
  std::unique_ptr<GpuTransfer> xfer;             // declared after in_flight: goes first
  std::mutex mu;

  PyGpuTransfer() = default;
  PyGpuTransfer(const PyGpuTransfer&) = delete;
  PyGpuTransfer& operator=(const PyGpuTransfer&) = delete;
  // The leases in flight go back only after the copies that use them are done.
  ~PyGpuTransfer() {
    if (xfer != nullptr) (void)xfer->synchronize();
  }

  GpuTransfer& get() {
    if (xfer == nullptr) throw StatusError(Status::FailedPrecondition("the GpuTransfer is closed"));
    return *xfer;
  }

  // Runs op(transfer) -> Status, which enqueues an operation on `lease`'s slots, with the GIL
  // released and `mu` held; raises on failure, else holds the lease while the operation runs.
  template <typename Op>
  void enqueue(const std::shared_ptr<void>& lease, Op op) {
    GpuTransfer& x = get();
    Status st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard lock(mu);
      st = op(x);
    }
    check(st);
    in_flight.push_back(lease);
  }
};

struct CacheLayers {
  std::vector<std::byte*> k, v;
  uint64_t min_bytes = std::numeric_limits<uint64_t>::max();
  int device = -1;
};

CacheLayers cache_layers(const py::sequence& k_layers, const py::sequence& v_layers,
                         const Namespace& ns) {
  if (k_layers.size() != ns.layout.num_layers || v_layers.size() != ns.layout.num_layers) {
    invalid_argument("k_layers and v_layers must hold one tensor per layer (" +
                     std::to_string(ns.layout.num_layers) + "); got " +
                     std::to_string(k_layers.size()) + " and " + std::to_string(v_layers.size()));
  }
  CacheLayers out;
  for (const py::sequence* seq : {&k_layers, &v_layers}) {
    for (size_t i = 0; i < seq->size(); ++i) {
      ArrayRef a((*seq)[i], seq == &k_layers ? "k_layers[i]" : "v_layers[i]", true);
      if (a.kind() != MemoryKind::kCuda) {
        invalid_argument(std::string(seq == &k_layers ? "k_layers[" : "v_layers[") +
                         std::to_string(i) + "] is not CUDA device memory");
      }
      (seq == &k_layers ? out.k : out.v).push_back(a.data());
      out.min_bytes = std::min(out.min_bytes, a.nbytes());
      if (out.device < 0 && a.device() >= 0) out.device = a.device();
    }
  }
  return out;
}

// What GpuTransfer.paged() and .flat() share: the pinned pool (taken first: it says at once when
// there is no GPU path), the new transfer object holding the engine's tensors and their layer
// pointers, the view's layout fields, and the creation without the GIL on the device asked for
// (else the tensors', else 0).
struct NewTransfer {
  NewTransfer(PyClient& c, const Namespace& ns, const py::sequence& k_layers,
              const py::sequence& v_layers, py::object device)
      : pool(pinned_pool(c)), self(std::make_unique<PyGpuTransfer>()), device_(std::move(device)) {
    self->owner = c.shared_from_this();
    self->ns = ns;
    CacheLayers layers = cache_layers(k_layers, v_layers, ns);
    self->k_layers = std::move(layers.k);
    self->v_layers = std::move(layers.v);
    self->tensors.append(k_layers);
    self->tensors.append(v_layers);
    min_layer_bytes = layers.min_bytes;
    tensors_device_ = layers.device;
  }

  // A PagedKvView or FlatKvView with the layer pointers and the layout's row shape set.
  template <typename View>
  View view() const {
    View v;
    v.k_layers = self->k_layers;
    v.v_layers = self->v_layers;
    v.num_kv_heads = self->ns.layout.num_kv_heads;
    v.head_dim = self->ns.layout.head_dim;
    v.elem_bytes = dtype_bytes(self->ns.layout.dtype);
    return v;
  }

  // Runs create(device) -> Result<std::unique_ptr<GpuTransfer>> with the GIL released; the
  // transfer object with it, or raises.
  template <typename Create>
  std::unique_ptr<PyGpuTransfer> finish(Create create) {
    const int device = device_.is_none() ? std::max(tensors_device_, 0) : device_.cast<int>();
    Result<std::unique_ptr<GpuTransfer>> r = Status::Internal("not run");
    {
      py::gil_scoped_release nogil;
      r = create(device);
    }
    self->xfer = take(std::move(r));
    return std::move(self);
  }

  std::shared_ptr<PinnedHostPool> pool;
  std::unique_ptr<PyGpuTransfer> self;
  uint64_t min_layer_bytes = 0;  // of the smallest tensor

 private:
  py::object device_;
  int tensors_device_ = -1;
};

GpuTransferOptions transfer_options(uint64_t staging_bytes, uint32_t staging_slots,
                                    uint64_t min_copy_bytes, uint64_t max_tokens) {
  GpuTransferOptions o;
  o.staging_bytes = staging_bytes;
  o.staging_slots = staging_slots;
  o.min_copy_bytes = min_copy_bytes;
  o.max_tokens = max_tokens;
  return o;
}

// The Python tierkv.DaemonGpuPool: the daemon's GPU pool, mapped into this process. close() drops
// this object's hold on the mapping; a GpuTransfer that use_gpu_tier() it keeps its own, so the
// mapping is closed (cudaIpcCloseMemHandle) when the last of them goes.
struct PyDaemonGpuPool {
  std::shared_ptr<PyClient> owner;
  std::shared_ptr<DaemonGpuPool> pool;  // null once closed

  const std::shared_ptr<DaemonGpuPool>& get() const {
    if (pool == nullptr) {
      throw StatusError(Status::FailedPrecondition("the DaemonGpuPool is closed"));
    }
    return pool;
  }
};

std::unique_ptr<PyDaemonGpuPool> attach_gpu_pool(PyClient& c) {
  if (!cuda_built()) {
    throw StatusError(Status::FailedPrecondition(
        "DaemonGpuPool.attach: opening the daemon's GPU pool needs CUDA, but this libtierkv was "
        "built without it (no CUDA toolkit at build time); rebuild it on a machine with the "
        "toolkit, or load through the host tier (Client.load_lease)"));
  }
  Result<std::shared_ptr<DaemonGpuPool>> r = Status::Internal("not run");
  {
    py::gil_scoped_release nogil;
    r = DaemonGpuPool::attach(c.client);
  }
  auto out = std::make_unique<PyDaemonGpuPool>();
  out->owner = c.shared_from_this();
  out->pool = take(std::move(r));
  return out;
}

#endif  // TIERKV_PYTHON_GPU_TRANSFER

}  // namespace

bool cuda_built() {
#if TIERKV_PYTHON_CUDA
  return true;
#else
  return false;
#endif
}

#if TIERKV_PYTHON_CUDA

PutResult gpu_store(PyClient& c, const Namespace& ns, std::span<const TokenId> tokens,
                    const ArrayRef& kv, uintptr_t stream_id) {
  (void)pinned_pool(c);
  const int device = device_of(kv);
  PutResult result;
  Status st;
  {
    py::gil_scoped_release nogil;
    DeviceGuard guard(device);
    auto* stream = reinterpret_cast<cudaStream_t>(stream_id);
    Result<PutLease> lease = c.client->begin_put(ns, tokens);
    if (!lease.ok()) {
      st = lease.status();
    } else {
      const uint64_t cb = ns.chunk_bytes();
      result.total_chunks = lease->chunks();
      for (size_t i = 0; i < lease->chunks() && st.ok(); ++i) {
        switch (lease->disposition(i)) {
          case proto::PutDisposition::kWrite: {
            const cudaError_t e = cudaMemcpyAsync(lease->slot(i).data(), kv.data() + i * cb, cb,
                                                  cudaMemcpyDeviceToHost, stream);
            if (e != cudaSuccess)
              st = cuda_error(e, "chunk " + std::to_string(i) + ": cudaMemcpyAsync");
            ++result.written;
            break;
          }
          case proto::PutDisposition::kCached:
            ++result.already_cached;
            break;
          case proto::PutDisposition::kInProgress:
            ++result.in_progress;
            break;
          case proto::PutDisposition::kNoSpace:
            ++result.no_space;
            break;
        }
      }
      // Wait for every copy even after an error: the slots go back only once DMA is done.
      const cudaError_t e = cudaStreamSynchronize(stream);
      if (st.ok() && e != cudaSuccess) st = cuda_error(e, "cudaStreamSynchronize");
      if (st.ok()) {
        Result<size_t> committed = lease->commit();
        if (!committed.ok()) st = committed.status();
      } else {
        (void)lease->abort();
      }
    }
  }
  check(st);
  return result;
}

size_t gpu_load(PyClient& c, const Namespace& ns, std::span<const TokenId> tokens,
                const ArrayRef& into, size_t max_chunks, uintptr_t stream_id) {
  (void)pinned_pool(c);
  const int device = device_of(into);
  size_t loaded = 0;
  Status st;
  {
    py::gil_scoped_release nogil;
    DeviceGuard guard(device);
    auto* stream = reinterpret_cast<cudaStream_t>(stream_id);
    st = load_chunks(
        *c.client, ns, tokens, max_chunks, loaded,
        [&](size_t i, std::span<const std::byte> chunk) {
          const cudaError_t e = cudaMemcpyAsync(into.data() + i * chunk.size(), chunk.data(),
                                                chunk.size(), cudaMemcpyHostToDevice, stream);
          return e == cudaSuccess
                     ? Status::Ok()
                     : cuda_error(e, "chunk " + std::to_string(i) + ": cudaMemcpyAsync");
        },
        [&] {
          const cudaError_t e = cudaStreamSynchronize(stream);
          return e == cudaSuccess ? Status::Ok() : cuda_error(e, "cudaStreamSynchronize");
        });
  }
  check(st);
  return loaded;
}

namespace {

// One cudaMemcpyAsync on the caller's stream, on the device of `device_array`, and a wait for the
// stream; raises `what` on failure.
void copy_and_wait(PyClient& c, const ArrayRef& device_array, void* dst, const void* src,
                   size_t bytes, cudaMemcpyKind kind, uintptr_t stream_id, const char* what) {
  (void)pinned_pool(c);
  const int device = device_of(device_array);
  Status st;
  {
    py::gil_scoped_release nogil;
    DeviceGuard guard(device);
    auto* stream = reinterpret_cast<cudaStream_t>(stream_id);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream);
    const cudaError_t s = cudaStreamSynchronize(stream);
    if (e == cudaSuccess) e = s;
    if (e != cudaSuccess) st = cuda_error(e, what);
  }
  check(st);
}

}  // namespace

void gpu_copy_to_host(PyClient& c, std::byte* dst, const ArrayRef& src, size_t bytes,
                      uintptr_t stream_id) {
  copy_and_wait(c, src, dst, src.data(), bytes, cudaMemcpyDeviceToHost, stream_id,
                "copy from the device");
}

void gpu_copy_from_host(PyClient& c, const ArrayRef& dst, size_t dst_offset, const std::byte* src,
                        size_t bytes, uintptr_t stream_id) {
  copy_and_wait(c, dst, dst.data() + dst_offset, src, bytes, cudaMemcpyHostToDevice, stream_id,
                "copy to the device");
}

#else  // !TIERKV_PYTHON_CUDA

PutResult gpu_store(PyClient&, const Namespace&, std::span<const TokenId>, const ArrayRef&,
                    uintptr_t) {
  no_gpu_path("kv is CUDA device memory; storing from it");
}
size_t gpu_load(PyClient&, const Namespace&, std::span<const TokenId>, const ArrayRef&, size_t,
                uintptr_t) {
  no_gpu_path("into is CUDA device memory; loading into it");
}
void gpu_copy_to_host(PyClient&, std::byte*, const ArrayRef&, size_t, uintptr_t) {
  no_gpu_path("src is CUDA device memory; copying from it");
}
void gpu_copy_from_host(PyClient&, const ArrayRef&, size_t, const std::byte*, size_t, uintptr_t) {
  no_gpu_path("into is CUDA device memory; copying into it");
}

#endif  // TIERKV_PYTHON_CUDA

void bind_gpu(py::module_& m) {
  m.attr("CUDA_BUILT") = cuda_built();
#if TIERKV_PYTHON_GPU_TRANSFER
  m.attr("GPU_TRANSFER") = gpu_transfer_built();
  // Registered before GpuTransfer, whose use_gpu_tier() signature names it.
  py::class_<PyDaemonGpuPool>(
      m, "DaemonGpuPool",
      "The daemon's GPU tier ([gpu] capacity in tierkvd's configuration) opened in this process "
      "(libtierkv's tierkv/gpu_pool.h): a pool of memory on the daemon's GPU, mapped here with "
      "CUDA IPC, holding copies of the chunks loaded most. Open with DaemonGpuPool.attach(client); "
      "load_lease() leases a prompt's cached chunks, those with a copy in the pool as GPU-pool "
      "chunks (LoadLease.on_gpu(i)), which a GpuTransfer on the same device loads device to device "
      "after use_gpu_tier(pool). Use as a context manager, or close(); a GpuTransfer using it "
      "keeps the mapping open until it goes.")
      .def_static("attach", &attach_gpu_pool, py::arg("client"),
                  "Opens the daemon's GPU pool on the GPU the daemon uses, found among this "
                  "process's CUDA devices by its UUID (CUDA_VISIBLE_DEVICES applies; the device "
                  "becomes current for a moment). Raises tierkv.FailedPrecondition with the "
                  "daemon's reason when its GPU tier is off, or when this process does not see "
                  "that GPU or the module was built without CUDA; tierkv.Unavailable when CUDA "
                  "cannot open the pool here.")
      .def_property_readonly(
          "device", [](const PyDaemonGpuPool& p) { return p.get()->device(); },
          "This process's CUDA device index of the daemon's GPU: make the GpuTransfer there.")
      .def_property_readonly(
          "size", [](const PyDaemonGpuPool& p) { return p.get()->size(); },
          "The pool's size in bytes (the daemon's [gpu] capacity, in whole slabs).")
      .def_property_readonly("closed", [](const PyDaemonGpuPool& p) { return p.pool == nullptr; })
      .def(
          "load_lease",
          [](const PyDaemonGpuPool& p, const Namespace& ns, py::handle tokens_obj,
             const py::object& max_chunks_obj) {
            std::shared_ptr<DaemonGpuPool> pool = p.get();
            Tokens tokens(tokens_obj);
            const size_t limit = max_chunks_arg(max_chunks_obj);
            Result<LoadLease> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = pool->load(ns, tokens.span(), limit);
            }
            return wrap_load_lease(*p.owner, ns, take(std::move(r)));
          },
          py::arg("ns"), py::arg("tokens"), py::arg("max_chunks") = py::none(),
          "Leases the prompt's leading cached chunks (at most max_chunks) as Client.load_lease "
          "does, except that chunks with a copy in the daemon's GPU tier come as GPU-pool "
          "chunks (on_gpu(i); no host bytes): a LoadLease for GpuTransfer.load(). The daemon "
          "keeps a leased GPU copy until the lease is released.")
      .def(
          "close", [](PyDaemonGpuPool& p) { p.pool.reset(); },
          "Drops this object's hold on the mapping (a GpuTransfer using the pool keeps its own). "
          "Leases already taken stay valid until released.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyDaemonGpuPool& p, py::handle, py::handle, py::handle) {
             p.pool.reset();
             return false;
           })
      .def("__repr__", [](const PyDaemonGpuPool& p) {
        if (p.pool == nullptr) return std::string("<tierkv.DaemonGpuPool closed>");
        return "<tierkv.DaemonGpuPool " + std::to_string(p.pool->size()) + " bytes on device " +
               std::to_string(p.pool->device()) + ">";
      });

  py::class_<PyGpuTransfer>(
      m, "GpuTransfer",
      "Moves a namespace's chunks between tierkv's pinned host pool and one engine KV cache on "
      "a GPU, without a host-side copy (libtierkv's tierkv/cuda_transfer.h). Create with "
      "GpuTransfer.paged() or GpuTransfer.flat(). Operations are asynchronous: they start after "
      "the work already on `stream` and run on the transfer's own streams; wait_layer() / "
      "wait_all() make `stream` wait, synchronize() blocks. Leases used by pending operations "
      "are held until synchronize() (or done() returns True).")
      .def_static(
          "paged",
          [](PyClient& c, const Namespace& ns, const py::sequence& k_layers,
             const py::sequence& v_layers, uint32_t block_size, py::object device,
             uint64_t staging_bytes, uint32_t staging_slots, uint64_t min_copy_bytes,
             uint64_t max_tokens) {
            NewTransfer t(c, ns, k_layers, v_layers, device);
            auto view = t.view<kernels::PagedKvView>();
            view.block_size = block_size;
            const uint64_t block_bytes = uint64_t{block_size} * view.row_bytes();
            if (block_bytes == 0) invalid_argument("block_size must be positive");
            view.num_blocks = static_cast<uint32_t>(t.min_layer_bytes / block_bytes);
            const GpuTransferOptions options =
                transfer_options(staging_bytes, staging_slots, min_copy_bytes, max_tokens);
            return t.finish(
                [&](int dev) { return GpuTransfer::create_paged(t.pool, ns, view, dev, options); });
          },
          py::arg("client"), py::arg("ns"), py::arg("k_layers"), py::arg("v_layers"),
          py::arg("block_size"), py::arg("device") = py::none(),
          py::arg("staging_bytes") = uint64_t{256} << 20, py::arg("staging_slots") = 8,
          py::arg("min_copy_bytes") = uint64_t{2} << 20, py::arg("max_tokens") = uint64_t{1} << 20,
          "A transfer for vLLM's paged layout: per layer one K and one V tensor "
          "[num_blocks, block_size, kv_heads, head_dim] (contiguous, CUDA) of the layout's "
          "dtype; num_blocks is read off the tensors' size.")
      .def_static(
          "flat",
          [](PyClient& c, const Namespace& ns, const py::sequence& k_layers,
             const py::sequence& v_layers, py::object capacity_tokens, uint64_t token_stride,
             uint64_t head_stride, py::object device, uint64_t staging_bytes,
             uint32_t staging_slots, uint64_t min_copy_bytes, uint64_t max_tokens) {
            NewTransfer t(c, ns, k_layers, v_layers, device);
            auto view = t.view<kernels::FlatKvView>();
            view.token_stride = token_stride;
            view.head_stride = head_stride;
            view.capacity_tokens = capacity_tokens.is_none()
                                       ? t.min_layer_bytes / view.token_stride_bytes()
                                       : capacity_tokens.cast<uint64_t>();
            const GpuTransferOptions options =
                transfer_options(staging_bytes, staging_slots, min_copy_bytes, max_tokens);
            return t.finish(
                [&](int dev) { return GpuTransfer::create_flat(t.pool, ns, view, dev, options); });
          },
          py::arg("client"), py::arg("ns"), py::arg("k_layers"), py::arg("v_layers"),
          py::arg("capacity_tokens") = py::none(), py::arg("token_stride") = 0,
          py::arg("head_stride") = 0, py::arg("device") = py::none(),
          py::arg("staging_bytes") = uint64_t{256} << 20, py::arg("staging_slots") = 8,
          py::arg("min_copy_bytes") = uint64_t{2} << 20, py::arg("max_tokens") = uint64_t{1} << 20,
          "A transfer for a flat per-layer cache: per layer one K and one V tensor indexed by "
          "token position; strides in bytes (0 = packed [tokens, kv_heads, head_dim]; for "
          "transformers' [1, heads, tokens, dim] pass token_stride=head_dim*elem, "
          "head_stride=capacity*token_stride).")
      .def(
          "use_gpu_tier",
          [](PyGpuTransfer& self, const PyDaemonGpuPool& pool) {
            std::shared_ptr<DaemonGpuPool> p = pool.get();
            GpuTransfer& x = self.get();
            Status st;
            {
              py::gil_scoped_release nogil;
              std::lock_guard lock(self.mu);
              st = x.use_gpu_tier(std::move(p));
            }
            check(st);
          },
          py::arg("pool"),
          "Lets load() take leases from pool.load_lease(): their chunks in the daemon's GPU tier "
          "are scattered straight from its pool (device to device), the rest come from host RAM "
          "as ever. The pool must lie on this transfer's device (else tierkv.InvalidArgument); "
          "the transfer keeps it open, also after pool.close().")
      .def(
          "load",
          [](PyGpuTransfer& self, const PyLoadLease& lease, size_t first_chunk, py::object count,
             py::handle block_table, py::handle stream) {
            LoadBox& box = lease.open();
            const size_t n = count.is_none() ? lease.chunks - std::min(first_chunk, lease.chunks)
                                             : count.cast<size_t>();
            const std::vector<int32_t> table = block_table_from(block_table);
            const auto s = reinterpret_cast<GpuStream>(stream_from(stream));
            self.enqueue(lease.box, [&](GpuTransfer& x) {
              return x.load(box.lease, first_chunk, n, table, s);
            });
          },
          py::arg("lease"), py::arg("first_chunk") = 0, py::arg("count") = py::none(),
          py::arg("block_table") = py::none(), py::arg("stream") = py::none(),
          "Enqueues loading chunks [first_chunk, first_chunk + count) of a LoadLease into the "
          "sequence's tokens from first_chunk * chunk_tokens on (block_table lists its blocks "
          "from token 0; a flat cache takes None). A lease with chunks in the daemon's GPU pool "
          "(DaemonGpuPool.load_lease) needs use_gpu_tier() first, else "
          "tierkv.FailedPrecondition.")
      .def(
          "store",
          [](PyGpuTransfer& self, const PyPutLease& lease, py::handle block_table,
             py::handle stream) {
            PutBox& box = lease.open();
            const std::vector<int32_t> table = block_table_from(block_table);
            const auto s = reinterpret_cast<GpuStream>(stream_from(stream));
            self.enqueue(lease.box, [&](GpuTransfer& x) { return x.store(box.lease, table, s); });
          },
          py::arg("lease"), py::arg("block_table") = py::none(), py::arg("stream") = py::none(),
          "Enqueues storing the sequence's tokens into every slot of a PutLease that needs a "
          "write; synchronize() before the lease's commit().")
      .def(
          "wait_layer",
          [](PyGpuTransfer& self, uint32_t layer, py::handle stream) {
            const uintptr_t s = stream_from(stream);
            Status st;
            {
              py::gil_scoped_release nogil;
              st = self.get().wait_layer(layer, reinterpret_cast<GpuStream>(s));
            }
            check(st);
          },
          py::arg("layer"), py::arg("stream") = py::none(),
          "Makes `stream`'s later work wait until layer `layer` of the latest load is in the "
          "cache.")
      .def(
          "wait_all",
          [](PyGpuTransfer& self, py::handle stream) {
            const uintptr_t s = stream_from(stream);
            check(self.get().wait_all(reinterpret_cast<GpuStream>(s)));
          },
          py::arg("stream") = py::none())
      .def(
          "layer_ready",
          [](PyGpuTransfer& self, uint32_t layer) { return self.get().layer_ready(layer); },
          py::arg("layer"))
      .def(
          "synchronize",
          [](PyGpuTransfer& self) {
            Status st;
            {
              py::gil_scoped_release nogil;
              std::lock_guard lock(self.mu);
              st = self.get().synchronize();
            }
            check(st);
            self.in_flight.clear();
          },
          "Blocks until every operation so far is complete; then the leases may be released or "
          "committed.")
      .def("done",
           [](PyGpuTransfer& self) {
             const bool d = self.get().done();
             if (d) self.in_flight.clear();
             return d;
           })
      .def_property_readonly("num_layers",
                             [](PyGpuTransfer& self) { return self.get().num_layers(); })
      .def_property_readonly("device", [](PyGpuTransfer& self) { return self.get().device(); })
      .def(
          "close",
          [](PyGpuTransfer& self) {
            if (self.xfer == nullptr) return;
            Status st;
            {
              py::gil_scoped_release nogil;
              std::lock_guard lock(self.mu);
              st = self.xfer->synchronize();
              self.xfer.reset();
            }
            self.in_flight.clear();
            check(st);
          },
          "Waits for pending operations and frees the transfer's device memory.");
#else
  m.attr("GPU_TRANSFER") = false;
  struct NoGpuTransfer {};
  py::class_<NoGpuTransfer>(m, "GpuTransfer",
                            "Not available: this libtierkv has no GPU transfer path.")
      .def_static("paged", [](py::args, py::kwargs) { no_gpu_path("GpuTransfer.paged"); })
      .def_static("flat", [](py::args, py::kwargs) { no_gpu_path("GpuTransfer.flat"); });
  struct NoDaemonGpuPool {};
  py::class_<NoDaemonGpuPool>(m, "DaemonGpuPool",
                              "Not available: this libtierkv has no GPU transfer path.")
      .def_static("attach", [](py::args, py::kwargs) { no_gpu_path("DaemonGpuPool.attach"); });
#endif
}

}  // namespace tierkv::python
