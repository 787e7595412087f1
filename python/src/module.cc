// The Python module `tierkv`: libtierkv's client API for engines written in Python.
//
//   import tierkv
//   client = tierkv.connect()                                   # $TIERKV_SOCKET or the default
//   ns = client.register_layout(layers=32, kv_heads=8, head_dim=128, dtype="bf16")
//   result = client.store(ns, tokens, kv)                       # kv: [chunks, layers, 2, ...]
//   cached, tiers = client.lookup(ns, tokens)
//   n = client.load(ns, tokens, into)                           # copies the cached prefix
//   with client.load_lease(ns, tokens) as lease:                # or reads it in place
//       k0 = lease.array(0)[0, 0]                               # layer 0's K of chunk 0
//
// Arrays are passed by reference (buffers.h); chunk data is laid out as in tierkv/layout.h. See
// python/README.md for the whole API.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "binding.h"
#include "buffers.h"
#include "errors.h"
#include "tierkv/chunk_key.h"
#include "tierkv/client.h"
#include "tierkv/layout.h"
#include "tierkv/protocol.h"

namespace tierkv::python {

namespace {

std::string disposition_name(proto::PutDisposition d) {
  switch (d) {
    case proto::PutDisposition::kWrite:
      return "write";
    case proto::PutDisposition::kCached:
      return "cached";
    case proto::PutDisposition::kInProgress:
      return "in_progress";
    case proto::PutDisposition::kNoSpace:
      return "no_space";
  }
  return "unknown";
}

void check_index(size_t i, size_t n, const char* what) {
  if (i >= n) {
    throw py::index_error(std::string(what) + " " + std::to_string(i) + " out of range (" +
                          std::to_string(n) + " chunks)");
  }
}

uint32_t u32_arg(int64_t v, const char* name) {
  if (v < 0 || v > int64_t{std::numeric_limits<uint32_t>::max()}) {
    invalid_argument(std::string(name) + " = " + std::to_string(v) + " is out of range");
  }
  return static_cast<uint32_t>(v);
}

uint64_t full_chunks(const Namespace& ns, size_t tokens) { return tokens / ns.layout.chunk_tokens; }

py::list tier_names(const std::vector<Tier>& tiers) {
  py::list out;
  for (Tier t : tiers) out.append(std::string(proto::tier_name(t)));
  return out;
}

py::dict tier_stats_dict(const proto::TierStats& t) {
  py::dict d;
  d["enabled"] = t.enabled != 0;
  d["capacity_bytes"] = t.capacity_bytes;
  d["used_bytes"] = t.used_bytes;
  d["chunks"] = t.chunks;
  d["hits"] = t.hits;
  d["misses"] = t.misses;
  d["evictions"] = t.evictions;
  d["bytes_in"] = t.bytes_in;
  d["bytes_out"] = t.bytes_out;
  return d;
}

py::dict stats_dict(const proto::StatsReply& s) {
  py::dict d;
  d["daemon_version"] = s.daemon_version;
  d["pid"] = s.pid;
  d["uptime_ms"] = s.uptime_ms;
  d["sessions"] = s.sessions;
  d["namespaces"] = s.namespaces;
  d["read_leases"] = s.read_leases;
  d["pending_writes"] = s.pending_writes;
  d["requests"] = s.requests;
  d["request_errors"] = s.request_errors;
  py::dict tiers;
  for (const proto::TierStats& t : s.tiers) {
    tiers[py::str(std::string(proto::tier_name(t.tier)))] = tier_stats_dict(t);
  }
  d["tiers"] = tiers;
  const proto::NvmeStats& n = s.nvme;
  py::dict nvme;
  nvme["admitting"] = n.admitting != 0;
  nvme["write_through"] = n.write_through != 0;
  nvme["dirty_chunks"] = n.dirty_chunks;
  nvme["writes_in_flight"] = n.writes_in_flight;
  nvme["reads_in_flight"] = n.reads_in_flight;
  nvme["read_errors"] = n.read_errors;
  nvme["write_errors"] = n.write_errors;
  nvme["checksum_failures"] = n.checksum_failures;
  nvme["dropped_unwritten"] = n.dropped_unwritten;
  nvme["recovered_chunks"] = n.recovered_chunks;
  nvme["recovery_ms"] = n.recovery_ms;
  nvme["logical_bytes"] = n.logical_bytes;
  nvme["stored_bytes"] = n.stored_bytes;
  d["nvme"] = nvme;
  const proto::GpuStats& g = s.gpu;
  py::dict gpu;
  gpu["status"] = s.gpu_status;
  gpu["device"] = g.device;
  gpu["promotions"] = g.promotions;
  gpu["promotions_in_flight"] = g.promotions_in_flight;
  gpu["promotions_queued"] = g.promotions_queued;
  gpu["promotion_failures"] = g.promotion_failures;
  gpu["leases"] = g.leases;
  gpu["attached_clients"] = g.attached_clients;
  gpu["dropped_with_host"] = g.dropped_with_host;
  d["gpu"] = gpu;
#if TIERKV_PYTHON_PREFILL
  const proto::PrefillStats& p = s.prefill;
  py::dict prefill;
  prefill["sessions_started"] = p.sessions_started;
  prefill["sessions_active"] = p.sessions_active;
  prefill["sessions_met"] = p.sessions_met;
  prefill["sessions_cancelled"] = p.sessions_cancelled;
  prefill["chunks_handed_over"] = p.chunks_handed_over;
  prefill["chunks_loaded"] = p.chunks_loaded;
  prefill["chunks_computed"] = p.chunks_computed;
  prefill["load_failures"] = p.load_failures;
  prefill["wasted_loads"] = p.wasted_loads;
  d["prefill"] = prefill;
#endif
  return d;
}

// LoadLease.release(): gives the slots back now if nothing else holds them, else when the last
// view (or GPU transfer) of them goes.
void release_load(PyLoadLease& self) {
  if (self.box == nullptr) return;
  std::shared_ptr<LoadBox> box = std::move(self.box);
  if (box.use_count() > 1) return;  // views alive: released with the last of them
  Status st;
  {
    py::gil_scoped_release nogil;
    std::lock_guard lock(box->mu);
    st = box->lease.release();
  }
  check(st);
}

size_t commit_put(PyPutLease& self) {
  PutBox& box = self.open();
  if (self.box.use_count() > 1) {
    throw py::buffer_error(
        std::to_string(self.box.use_count() - 1) +
        " views (or GPU stores) of this put lease's slots are still alive: drop them (del, "
        "memoryview.release()) or synchronize the GPU transfer before commit()");
  }
  // Closed for other threads before the GIL goes: the commit ends the lease, failed or not.
  std::shared_ptr<PutBox> held = std::move(self.box);
  Result<size_t> committed = Status::Internal("not run");
  {
    py::gil_scoped_release nogil;
    std::lock_guard lock(box.mu);
    committed = box.lease.commit();
  }
  return take(std::move(committed));
}

void abort_put(PyPutLease& self) {
  if (self.box == nullptr) return;
  std::shared_ptr<PutBox> box = std::move(self.box);
  if (box.use_count() > 1) return;  // views alive: aborted with the last of them
  Status st;
  {
    py::gil_scoped_release nogil;
    std::lock_guard lock(box->mu);
    st = box->lease.abort();
  }
  check(st);
}

}  // namespace

// --- helpers shared with the other parts ---------------------------------------------------------

size_t max_chunks_arg(const py::object& v) {
  if (v.is_none()) return std::numeric_limits<size_t>::max();
  const auto n = v.cast<int64_t>();
  if (n < 0) invalid_argument("max_chunks = " + std::to_string(n) + " is negative");
  return static_cast<size_t>(n);
}

std::span<const std::byte> PyLoadLease::host_chunk(size_t i) const {
  LoadBox& b = open();
  check_index(i, chunks, "chunk");
  if (b.lease.on_gpu(i)) {
    throw StatusError(Status::FailedPrecondition(
        "chunk " + std::to_string(i) +
        " lies in the daemon's GPU pool (device memory), not in host RAM: load it into the cache "
        "with a GpuTransfer that use_gpu_tier()"));
  }
  return b.lease.chunk(i);
}

PyLoadLease wrap_load_lease(PyClient& client, const Namespace& ns, LoadLease lease) {
  PyLoadLease out;
  out.chunks = lease.chunks();
  out.layout = ns.layout;
  out.box = make_box(
      std::unique_ptr<LoadBox>(new LoadBox{client.shared_from_this(), ns, std::move(lease), {}}));
  return out;
}

py::memoryview chunk_view(std::shared_ptr<void> keep, std::byte* data, size_t size, bool writable,
                          uint32_t* live) {
  py::object exporter =
      py::cast(std::make_unique<ChunkBuffer>(std::move(keep), data, size, writable, live));
  return py::memoryview(exporter);
}

std::string numpy_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "uint16";
    case DType::kFloat32:
      return "float32";
    case DType::kFloat8E4M3:
      return "uint8";
    case DType::kInt8:
      return "int8";
  }
  return "uint8";
}

py::tuple chunk_shape(const Layout& l) {
  return py::make_tuple(l.num_layers, 2, l.chunk_tokens, l.num_kv_heads, l.head_dim);
}

py::object chunk_array(const py::memoryview& view, const Layout& layout) {
  py::module_ np = py::module_::import("numpy");
  return np.attr("frombuffer")(view, py::arg("dtype") = numpy_dtype_name(layout.dtype))
      .attr("reshape")(chunk_shape(layout));
}

void check_kv_array(const ArrayRef& array, const Namespace& ns, uint64_t chunks, const char* what) {
  const uint32_t elem = dtype_bytes(ns.layout.dtype);
  if (array.itemsize() != 1 && array.itemsize() != elem) {
    invalid_argument(std::string(what) + " has " + std::to_string(array.itemsize()) +
                     "-byte elements, but the layout's dtype " +
                     std::string(dtype_name(ns.layout.dtype)) + " has " + std::to_string(elem) +
                     "-byte elements (pass a matching array, or its bytes as uint8)");
  }
  const uint64_t cb = ns.chunk_bytes();
  if (array.nbytes() < chunks * cb) {
    invalid_argument(std::string(what) + " holds " + std::to_string(array.nbytes()) + " bytes; " +
                     std::to_string(chunks) + " full chunks of " + std::to_string(cb) + " bytes (" +
                     ns.layout.to_string() + ") need " + std::to_string(chunks * cb));
  }
}

namespace {

PutResult store(PyClient& self, const Namespace& ns, py::handle tokens_obj, py::handle kv_obj,
                py::handle stream_obj) {
  Tokens tokens(tokens_obj);
  ArrayRef kv(kv_obj, "kv", /*writable=*/false);
  check_kv_array(kv, ns, full_chunks(ns, tokens.size()), "kv");
  if (kv.kind() == MemoryKind::kCuda) {
    const uintptr_t stream = stream_obj.is_none() ? kv.stream() : stream_from(stream_obj);
    return gpu_store(self, ns, tokens.span(), kv, stream);
  }
  Result<PutResult> r = Status::Internal("not run");
  {
    py::gil_scoped_release nogil;
    r = self.client->put(ns, tokens.span(), {kv.data(), kv.nbytes()});
  }
  return take(std::move(r));
}

size_t load_into(PyClient& self, const Namespace& ns, py::handle tokens_obj, py::handle into_obj,
                 const py::object& max_chunks_obj, py::handle stream_obj) {
  Tokens tokens(tokens_obj);
  ArrayRef into(into_obj, "into", /*writable=*/true);
  const size_t limit =
      std::min<uint64_t>(max_chunks_arg(max_chunks_obj), full_chunks(ns, tokens.size()));
  check_kv_array(into, ns, limit, "into");
  if (into.kind() == MemoryKind::kCuda) {
    const uintptr_t stream = stream_obj.is_none() ? into.stream() : stream_from(stream_obj);
    return gpu_load(self, ns, tokens.span(), into, limit, stream);
  }
  Status st;
  size_t loaded = 0;
  {
    py::gil_scoped_release nogil;
    st = load_chunks(
        *self.client, ns, tokens.span(), limit, loaded,
        [&](size_t i, std::span<const std::byte> chunk) {
          std::memcpy(into.data() + i * chunk.size(), chunk.data(), chunk.size());
          return Status::Ok();
        },
        [] { return Status::Ok(); });
  }
  check(st);
  return loaded;
}

PyLoadLease load_lease(PyClient& self, const Namespace& ns, py::handle tokens_obj,
                       const py::object& max_chunks_obj) {
  Tokens tokens(tokens_obj);
  const size_t limit = max_chunks_arg(max_chunks_obj);
  Result<LoadLease> r = Status::Internal("not run");
  {
    py::gil_scoped_release nogil;
    r = self.client->load(ns, tokens.span(), limit);
  }
  return wrap_load_lease(self, ns, take(std::move(r)));
}

PyPutLease put_lease(PyClient& self, const Namespace& ns, py::handle tokens_obj) {
  Tokens tokens(tokens_obj);
  Result<PutLease> r = Status::Internal("not run");
  {
    py::gil_scoped_release nogil;
    r = self.client->begin_put(ns, tokens.span());
  }
  PutLease lease = take(std::move(r));
  PyPutLease out;
  out.chunks = lease.chunks();
  out.layout = ns.layout;
  for (size_t i = 0; i < lease.chunks(); ++i) out.dispositions.push_back(lease.disposition(i));
  out.box = make_box(
      std::unique_ptr<PutBox>(new PutBox{self.shared_from_this(), ns, std::move(lease), {}}));
  return out;
}

std::vector<ChunkKey> keys_of(const Namespace& ns, py::handle tokens_obj) {
  Tokens tokens(tokens_obj);
  return Client::keys(ns, tokens.span());
}

uint64_t evict_or_delete(PyClient& self, const Namespace& ns, const py::object& tokens_obj,
                         bool remove) {
  Result<uint64_t> r = Status::Internal("not run");
  if (tokens_obj.is_none()) {
    py::gil_scoped_release nogil;
    r = remove ? self.client->remove_namespace(ns.id) : self.client->evict_namespace(ns.id);
  } else {
    const std::vector<ChunkKey> keys = keys_of(ns, tokens_obj);
    py::gil_scoped_release nogil;
    r = remove ? self.client->remove(ns.id, keys) : self.client->evict(ns.id, keys);
  }
  return take(std::move(r));
}

std::shared_ptr<PyClient> connect(const py::object& socket, const std::string& name,
                                  bool populate) {
  ClientOptions options;
  if (!socket.is_none()) options.socket_path = py::str(socket);
  options.client_name = name;
  options.populate = populate;
  Result<std::shared_ptr<Client>> r = Status::Internal("not run");
  {
    py::gil_scoped_release nogil;
    r = Client::connect(options);
  }
  auto out = std::make_shared<PyClient>();
  out->client = take(std::move(r));
  return out;
}

}  // namespace

}  // namespace tierkv::python

PYBIND11_MODULE(tierkv, m) {
  using namespace tierkv;
  using namespace tierkv::python;
  namespace py = pybind11;

  m.doc() =
      "tierkv: the engine-side client of tierkvd, the KV-cache tiering daemon.\n\n"
      "Chunk data is laid out as tierkv/layout.h says: a chunk is the KV of chunk_tokens tokens "
      "for all layers, K then V, i.e. a C-contiguous [layers, 2, chunk_tokens, kv_heads, "
      "head_dim] array of the layout's dtype; a prompt's KV is [chunks, layers, 2, chunk_tokens, "
      "kv_heads, head_dim]. Arrays are passed by reference (their data pointer), never copied "
      "into temporaries.";
  m.attr("__version__") = TIERKV_VERSION_STRING;
  register_errors(m);

  py::module_ collections = py::module_::import("collections");
  py::object lookup_type =
      collections.attr("namedtuple")("LookupResult", py::make_tuple("cached_chunks", "tiers"));
  lookup_type.attr("__module__") = "tierkv";
  m.attr("LookupResult") = lookup_type;
  py::object prefetch_type =
      collections.attr("namedtuple")("PrefetchResult", py::make_tuple("in_host", "fetching"));
  prefetch_type.attr("__module__") = "tierkv";
  m.attr("PrefetchResult") = prefetch_type;

  py::class_<ChunkBuffer>(m, "_ChunkBuffer", py::buffer_protocol()).def_buffer([](ChunkBuffer& b) {
    return py::buffer_info(b.data, 1, py::format_descriptor<uint8_t>::format(), 1,
                           {static_cast<py::ssize_t>(b.size)}, {py::ssize_t{1}},
                           /*readonly=*/!b.writable);
  });

  py::class_<Namespace>(m, "Namespace",
                        "A registered namespace: a layout (as the daemon resolved it), a tenant "
                        "and a salt. Immutable.")
      .def_property_readonly("id", [](const Namespace& n) { return n.id; })
      .def_property_readonly("layers", [](const Namespace& n) { return n.layout.num_layers; })
      .def_property_readonly("kv_heads", [](const Namespace& n) { return n.layout.num_kv_heads; })
      .def_property_readonly("head_dim", [](const Namespace& n) { return n.layout.head_dim; })
      .def_property_readonly(
          "dtype", [](const Namespace& n) { return std::string(dtype_name(n.layout.dtype)); })
      .def_property_readonly(
          "numpy_dtype", [](const Namespace& n) { return numpy_dtype_name(n.layout.dtype); },
          "numpy dtype name of one element (bf16 and fp8 as uint16 / uint8)")
      .def_property_readonly("chunk_tokens",
                             [](const Namespace& n) { return n.layout.chunk_tokens; })
      .def_property_readonly("chunk_bytes", [](const Namespace& n) { return n.chunk_bytes(); })
      .def_property_readonly("bytes_per_token",
                             [](const Namespace& n) { return n.layout.bytes_per_token(); })
      .def_property_readonly(
          "chunk_shape", [](const Namespace& n) { return chunk_shape(n.layout); },
          "(layers, 2, chunk_tokens, kv_heads, head_dim)")
      .def_property_readonly("tenant", [](const Namespace& n) { return n.tenant; })
      .def_property_readonly("salt", [](const Namespace& n) { return n.salt; })
      .def(
          "chunks",
          [](const Namespace& n, py::handle tokens) {
            return Tokens(tokens).size() / n.layout.chunk_tokens;
          },
          py::arg("tokens"),
          "Number of full chunks in `tokens` (a trailing partial one is never stored).")
      .def(
          "keys",
          [](const Namespace& n, py::handle tokens) {
            py::list out;
            for (const ChunkKey& k : keys_of(n, tokens)) out.append(k.to_hex());
            return out;
          },
          py::arg("tokens"),
          "The prompt's chunk keys (full chunks only), as 32 hex digits each. Pure computation.")
      .def("__eq__", [](const Namespace& a,
                        const Namespace& b) { return a.id == b.id && a.layout == b.layout; })
      .def("__hash__", [](const Namespace& n) { return static_cast<py::ssize_t>(n.id >> 1); })
      .def("__repr__", [](const Namespace& n) {
        return "<tierkv.Namespace " + std::to_string(n.id) + ": " + n.layout.to_string() +
               ", tenant '" + n.tenant + "'>";
      });

  py::class_<PutResult>(m, "PutResult", "What store() did with each full chunk of the prompt.")
      .def_readonly("total_chunks", &PutResult::total_chunks)
      .def_readonly("written", &PutResult::written)
      .def_readonly("already_cached", &PutResult::already_cached)
      .def_readonly("in_progress", &PutResult::in_progress)
      .def_readonly("no_space", &PutResult::no_space)
      .def("__repr__", [](const PutResult& r) {
        return "PutResult(total_chunks=" + std::to_string(r.total_chunks) +
               ", written=" + std::to_string(r.written) +
               ", already_cached=" + std::to_string(r.already_cached) +
               ", in_progress=" + std::to_string(r.in_progress) +
               ", no_space=" + std::to_string(r.no_space) + ")";
      });

  py::class_<PyLoadLease>(
      m, "LoadLease",
      "Read leases on a prompt's leading cached chunks, read in place in shared memory. While "
      "the lease (or any view of its chunks) lives, the chunks are neither evicted nor reused. "
      "Use as a context manager; release() (or leaving the block) gives the slots back at once, "
      "or, while views of them are still alive, when the last view goes.")
      .def("__len__", [](const PyLoadLease& l) { return l.chunks; })
      .def_property_readonly("chunks", [](const PyLoadLease& l) { return l.chunks; })
      .def_property_readonly("released", [](const PyLoadLease& l) { return l.box == nullptr; })
      .def(
          "chunk",
          [](const PyLoadLease& l, size_t i) {
            const std::span<const std::byte> c = l.host_chunk(i);
            return chunk_view(l.box, const_cast<std::byte*>(c.data()), c.size(), false);
          },
          py::arg("i"),
          "Chunk i's bytes: a read-only memoryview of shared memory (no copy). A chunk in the "
          "daemon's GPU pool (on_gpu(i)) has none: tierkv.FailedPrecondition.")
      .def(
          "array",
          [](const PyLoadLease& l, size_t i) {
            const std::span<const std::byte> c = l.host_chunk(i);
            return chunk_array(chunk_view(l.box, const_cast<std::byte*>(c.data()), c.size(), false),
                               l.layout);
          },
          py::arg("i"),
          "Chunk i as a read-only numpy array [layers, 2, chunk_tokens, kv_heads, head_dim] "
          "over shared memory (no copy); bf16 / fp8 elements as uint16 / uint8.")
      .def(
          "copy_into",
          [](const PyLoadLease& l, py::handle into_obj, size_t first_chunk, py::handle stream_obj) {
            LoadBox& box = l.open();
            ArrayRef into(into_obj, "into", /*writable=*/true);
            if (first_chunk > l.chunks) check_index(first_chunk, l.chunks, "first_chunk");
            const size_t n = l.chunks - first_chunk;
            check_kv_array(into, box.ns, n, "into");
            for (size_t i = first_chunk; i < l.chunks; ++i) (void)l.host_chunk(i);
            const uint64_t cb = box.ns.chunk_bytes();
            if (into.kind() == MemoryKind::kCuda) {
              const uintptr_t stream =
                  stream_obj.is_none() ? into.stream() : stream_from(stream_obj);
              for (size_t i = 0; i < n; ++i) {
                gpu_copy_from_host(*box.owner, into, i * cb,
                                   box.lease.chunk(first_chunk + i).data(), cb, stream);
              }
              return n;
            }
            py::gil_scoped_release nogil;
            for (size_t i = 0; i < n; ++i) {
              std::memcpy(into.data() + i * cb, box.lease.chunk(first_chunk + i).data(), cb);
            }
            return n;
          },
          py::arg("into"), py::arg("first_chunk") = 0, py::arg("stream") = py::none(),
          "Copies chunks [first_chunk, chunks) into `into` (contiguous, host or CUDA); returns "
          "the count. Host chunks only: a lease with chunks in the daemon's GPU pool goes "
          "through GpuTransfer.load().")
      .def(
          "on_gpu",
          [](const PyLoadLease& l, size_t i) {
            LoadBox& box = l.open();
            check_index(i, l.chunks, "chunk");
            return box.lease.on_gpu(i);
          },
          py::arg("i"),
          "Whether chunk i lies in the daemon's GPU pool (leases from DaemonGpuPool.load_lease) "
          "rather than in host RAM.")
      .def_property_readonly(
          "gpu_chunks", [](const PyLoadLease& l) { return l.open().lease.gpu_chunks(); },
          "How many chunks lie in the daemon's GPU pool.")
      .def("release", &release_load, "Gives the slots back (see the class doc).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyLoadLease& l, py::handle, py::handle, py::handle) {
             release_load(l);
             return false;
           })
      .def("__repr__", [](const PyLoadLease& l) {
        if (l.box == nullptr) {
          return "<tierkv.LoadLease " + std::to_string(l.chunks) + " chunks, released>";
        }
        const size_t gpu = l.box->lease.gpu_chunks();
        return "<tierkv.LoadLease " + std::to_string(l.chunks) + " chunks" +
               (gpu > 0 ? ", " + std::to_string(gpu) + " on the GPU>" : ">");
      });

  py::class_<PyPutLease>(
      m, "PutLease",
      "Slots leased for writing a prompt's chunks that are not cached yet, in shared memory. "
      "Write every chunk for which needs_write(i) (write(i, src), or in place through slot(i) / "
      "array(i)), then commit(). As a context manager it commits on success and aborts on an "
      "exception. commit() refuses while views of the slots are alive (BufferError).")
      .def("__len__", [](const PyPutLease& l) { return l.chunks; })
      .def_property_readonly("chunks", [](const PyPutLease& l) { return l.chunks; })
      .def_property_readonly("closed", [](const PyPutLease& l) { return l.box == nullptr; })
      .def(
          "needs_write",
          [](const PyPutLease& l, size_t i) {
            check_index(i, l.chunks, "chunk");
            return l.dispositions[i] == proto::PutDisposition::kWrite;
          },
          py::arg("i"))
      .def(
          "disposition",
          [](const PyPutLease& l, size_t i) {
            check_index(i, l.chunks, "chunk");
            return disposition_name(l.dispositions[i]);
          },
          py::arg("i"), "'write', 'cached', 'in_progress' or 'no_space'.")
      .def(
          "slot",
          [](const PyPutLease& l, size_t i) -> py::object {
            PutBox& box = l.open();
            check_index(i, l.chunks, "chunk");
            const std::span<std::byte> s = box.lease.slot(i);
            if (s.empty()) return py::none();
            return chunk_view(l.box, s.data(), s.size(), true);
          },
          py::arg("i"),
          "Where chunk i goes: a writable memoryview of shared memory, or None if it needs no "
          "write.")
      .def(
          "array",
          [](const PyPutLease& l, size_t i) -> py::object {
            PutBox& box = l.open();
            check_index(i, l.chunks, "chunk");
            const std::span<std::byte> s = box.lease.slot(i);
            if (s.empty()) return py::none();
            return chunk_array(chunk_view(l.box, s.data(), s.size(), true), l.layout);
          },
          py::arg("i"), "slot(i) as a writable numpy array in the chunk shape, or None.")
      .def(
          "write",
          [](const PyPutLease& l, size_t i, py::handle src_obj, py::handle stream_obj) {
            PutBox& box = l.open();
            check_index(i, l.chunks, "chunk");
            const std::span<std::byte> s = box.lease.slot(i);
            if (s.empty()) {
              throw StatusError(
                  Status::FailedPrecondition("chunk " + std::to_string(i) + " needs no write (" +
                                             disposition_name(l.dispositions[i]) + ")"));
            }
            ArrayRef src(src_obj, "src", /*writable=*/false);
            check_kv_array(src, box.ns, 1, "src");
            if (src.kind() == MemoryKind::kCuda) {
              const uintptr_t stream =
                  stream_obj.is_none() ? src.stream() : stream_from(stream_obj);
              gpu_copy_to_host(*box.owner, s.data(), src, s.size(), stream);
              return;
            }
            py::gil_scoped_release nogil;
            std::memcpy(s.data(), src.data(), s.size());
          },
          py::arg("i"), py::arg("src"), py::arg("stream") = py::none(),
          "Copies one chunk (its first chunk_bytes bytes) from `src` (host or CUDA) into slot i.")
      .def("commit", &commit_put,
           "Makes every written chunk visible to lookups at once; returns how many were committed.")
      .def("abort", &abort_put, "Gives the slots back unwritten.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyPutLease& l, py::handle type, py::handle, py::handle) {
             if (l.box == nullptr) return false;
             if (type.is_none()) {
               commit_put(l);
             } else {
               abort_put(l);
             }
             return false;
           })
      .def("__repr__", [](const PyPutLease& l) {
        size_t writes = 0;
        for (auto d : l.dispositions) writes += d == proto::PutDisposition::kWrite ? 1 : 0;
        return "<tierkv.PutLease " + std::to_string(l.chunks) + " chunks, " +
               std::to_string(writes) + " to write" + (l.box == nullptr ? ", closed>" : ">");
      });

  py::class_<PyClient, std::shared_ptr<PyClient>>(
      m, "Client",
      "A connection to tierkvd with its host pool mapped. Thread-safe: share one per process; "
      "calls release the GIL while they wait on the daemon or copy data.")
      .def_property_readonly("socket_path",
                             [](const PyClient& c) { return c.client->socket_path(); })
      .def_property_readonly("daemon_version",
                             [](const PyClient& c) { return c.client->daemon_version(); })
      .def_property_readonly("default_chunk_tokens",
                             [](const PyClient& c) { return c.client->default_chunk_tokens(); })
      .def(
          "register_layout",
          [](PyClient& c, int64_t layers, int64_t kv_heads, int64_t head_dim,
             const std::string& dtype, int64_t chunk_tokens, const std::string& tenant,
             const std::string& salt) {
            Layout layout;
            layout.num_layers = u32_arg(layers, "layers");
            layout.num_kv_heads = u32_arg(kv_heads, "kv_heads");
            layout.head_dim = u32_arg(head_dim, "head_dim");
            layout.dtype = take(parse_dtype(dtype));
            layout.chunk_tokens = u32_arg(chunk_tokens, "chunk_tokens");
            Result<Namespace> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = c.client->register_layout(layout, tenant, salt);
            }
            return take(std::move(r));
          },
          py::arg("layers"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("dtype") = "bf16",
          py::arg("chunk_tokens") = 0, py::arg("tenant") = "default", py::arg("salt") = "",
          "Registers (or finds) the namespace of a layout, tenant and salt. dtype: 'fp16', "
          "'bf16', 'fp32', 'fp8_e4m3' or 'int8'; chunk_tokens 0 takes the daemon's default.")
      .def(
          "keys",
          [](const PyClient&, const Namespace& ns, py::handle tokens) {
            py::list out;
            for (const ChunkKey& k : keys_of(ns, tokens)) out.append(k.to_hex());
            return out;
          },
          py::arg("ns"), py::arg("tokens"), "Same as ns.keys(tokens).")
      .def(
          "lookup",
          [lookup_type](PyClient& c, const Namespace& ns, py::handle tokens_obj) {
            Tokens tokens(tokens_obj);
            Result<LookupResult> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = c.client->lookup(ns, tokens.span());
            }
            LookupResult res = take(std::move(r));
            return lookup_type(res.cached_chunks, tier_names(res.tiers));
          },
          py::arg("ns"), py::arg("tokens"),
          "How many leading full chunks of the prompt are cached, and the tier of each "
          "('gpu', 'host', 'nvme', 'remote'): LookupResult(cached_chunks, tiers). Moves no data.")
      .def("store", &store, py::arg("ns"), py::arg("tokens"), py::arg("kv"),
           py::arg("stream") = py::none(),
           "Stores the prompt's full chunks from `kv`: a C-contiguous array (numpy, torch, "
           "buffer; or CUDA memory in builds with the GPU path) holding [chunks, layers, 2, "
           "chunk_tokens, kv_heads, head_dim] elements of the layout's dtype (or those bytes as "
           "uint8); bytes past the last full chunk are ignored. Chunks already cached are "
           "skipped. Returns a PutResult.")
      .def("load", &load_into, py::arg("ns"), py::arg("tokens"), py::arg("into"),
           py::arg("max_chunks") = py::none(), py::arg("stream") = py::none(),
           "Copies the prompt's leading cached chunks (at most max_chunks) into `into` (writable, "
           "C-contiguous, room for every full chunk of `tokens` up to max_chunks, laid out as "
           "for store()); returns how many chunks were loaded. The rest of `into` is untouched.")
      .def("load_lease", &load_lease, py::arg("ns"), py::arg("tokens"),
           py::arg("max_chunks") = py::none(),
           "Leases the prompt's leading cached chunks (at most max_chunks) for reading in "
           "place: a LoadLease.")
      .def("put_lease", &put_lease, py::arg("ns"), py::arg("tokens"),
           "Leases slots for the prompt's full chunks that are not cached yet, to be written in "
           "place: a PutLease.")
      .def(
          "prefetch",
          [prefetch_type](PyClient& c, const Namespace& ns, py::handle tokens_obj) {
            Tokens tokens(tokens_obj);
            Result<proto::PrefetchReply> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = c.client->prefetch(ns, tokens.span());
            }
            const proto::PrefetchReply rep = take(std::move(r));
            return prefetch_type(rep.in_host, rep.fetching);
          },
          py::arg("ns"), py::arg("tokens"),
          "Starts reading the prompt's leading cached chunks that lie only on NVMe up into host "
          "RAM; answers at once: PrefetchResult(in_host, fetching).")
      .def(
          "evict",
          [](PyClient& c, const Namespace& ns, const py::object& tokens) {
            return evict_or_delete(c, ns, tokens, false);
          },
          py::arg("ns"), py::arg("tokens") = py::none(),
          "Drops the prompt's chunks (or, without tokens, the whole namespace's) from the memory "
          "tiers; returns how many were removed.")
      .def(
          "delete",
          [](PyClient& c, const Namespace& ns, const py::object& tokens) {
            return evict_or_delete(c, ns, tokens, true);
          },
          py::arg("ns"), py::arg("tokens") = py::none(),
          "Drops the prompt's chunks (or the whole namespace's) from every tier; returns how many "
          "were removed.")
      .def(
          "stats",
          [](PyClient& c) {
            Result<proto::StatsReply> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = c.client->stats();
            }
            return stats_dict(take(std::move(r)));
          },
          "The daemon's counters as a dict (tiers by name, nvme, ...).")
      .def(
          "namespaces",
          [](PyClient& c) {
            Result<proto::ListNamespacesReply> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = c.client->list_namespaces();
            }
            py::list out;
            for (const proto::NamespaceInfo& info : take(std::move(r)).namespaces) {
              py::dict d;
              d["namespace"] = info.ns;
              d["chunks"] = info.chunks;
              d["bytes"] = info.bytes;
              out.append(d);
            }
            return out;
          },
          "Every namespace the daemon knows, with its chunk count and bytes.")
      .def(
          "flush",
          [](PyClient& c) {
            Result<proto::FlushReply> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = c.client->flush();
            }
            const proto::FlushReply rep = take(std::move(r));
            py::dict d;
            d["dirty_chunks"] = rep.dirty_chunks;
            d["writes_in_flight"] = rep.writes_in_flight;
            d["written_total"] = rep.written_total;
            d["unwritable"] = rep.unwritable;
            return d;
          },
          "Admin: starts writing every host chunk bound for NVMe down; repeat until dirty_chunks "
          "and writes_in_flight are 0.")
      .def("__repr__", [](const PyClient& c) {
        return "<tierkv.Client " + c.client->socket_path() + ", tierkvd " +
               c.client->daemon_version() + ">";
      });

  m.def("connect", &connect, py::arg("socket") = py::none(), py::arg("name") = "python",
        py::arg("populate") = true,
        "Connects to tierkvd at `socket` (default: $TIERKV_SOCKET, else "
        "/run/tierkv/tierkvd.sock) and maps its host pool. Raises tierkv.Unavailable if no "
        "daemon listens there.");
  m.attr("DTYPES") = py::make_tuple("fp16", "bf16", "fp32", "fp8_e4m3", "int8");

  bind_gpu(m);
  bind_prefill(m);
}
