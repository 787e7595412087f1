// DaemonGpuPool: the GPU tier's requests (gpu_attach, gpu_load) and the pool's mapping, whose
// CUDA side lives in gpu_ipc_cuda.cc (or gpu_ipc_stub.cc).
#include "tierkv/gpu_pool.h"

#include "gpu_ipc.h"

namespace tierkv {

// gpu_attach's request is empty.
namespace {
struct EmptyRequest {};
}  // namespace
namespace proto {
inline void encode(wire::ByteWriter&, const EmptyRequest&) {}
}  // namespace proto

// What DaemonGpuPool needs of Client's and LoadLease's internals.
struct GpuWire {
  template <typename Req, typename Rep>
  static Status call(Client& c, proto::Op op, const Req& req, Rep& rep) {
    return c.call_erased(
        op, &req,
        [](wire::ByteWriter& w, const void* m) { proto::encode(w, *static_cast<const Req*>(m)); },
        &rep, [](wire::ByteReader& r, void* m) { return proto::decode(r, *static_cast<Rep*>(m)); });
  }
  static uint64_t host_bytes(const Client& c) { return c.region_bytes_; }
  static LoadLease lease(std::shared_ptr<Client> c, std::vector<proto::SlotRef> slots) {
    return LoadLease(std::move(c), std::move(slots));
  }
};

Result<std::shared_ptr<DaemonGpuPool>> DaemonGpuPool::attach(std::shared_ptr<Client> client) {
  if (client == nullptr) return Status::InvalidArgument("client is null");
  proto::GpuAttachReply rep;
  TIERKV_RETURN_IF_ERROR(GpuWire::call(*client, proto::Op::kGpuAttach, EmptyRequest{}, rep));
  if (rep.pool_bytes == 0 || rep.slot_align == 0) {
    return Status::ProtocolError("gpu_attach reply: an empty pool (" +
                                 std::to_string(rep.pool_bytes) + " bytes, slot alignment " +
                                 std::to_string(rep.slot_align) + ")");
  }
  auto opened = detail::open_gpu_pool(rep);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<DaemonGpuPool> pool(new DaemonGpuPool());
  pool->client_ = std::move(client);
  pool->device_ = opened->device;
  pool->data_ = opened->data;
  pool->bytes_ = rep.pool_bytes;
  pool->slot_align_ = rep.slot_align;
  return pool;
}

DaemonGpuPool::~DaemonGpuPool() { detail::close_gpu_pool({device_, data_}); }

Result<LoadLease> DaemonGpuPool::load(const Namespace& ns, std::span<const TokenId> tokens,
                                      size_t max_chunks) {
  std::vector<ChunkKey> k = Client::keys(ns, tokens);
  if (k.size() > max_chunks) k.resize(max_chunks);
  return load(ns.id, k);
}

Result<LoadLease> DaemonGpuPool::load(NamespaceId ns, std::span<const ChunkKey> keys) {
  proto::KeysRequest req{ns, std::vector<ChunkKey>(keys.begin(), keys.end())};
  proto::LoadReply rep;
  TIERKV_RETURN_IF_ERROR(GpuWire::call(*client_, proto::Op::kGpuLoad, req, rep));
  // Take ownership of the leases first, so that they are released whatever is wrong below.
  LoadLease lease = GpuWire::lease(client_, rep.slots);
  const uint64_t host = GpuWire::host_bytes(*client_);
  for (const proto::SlotRef& s : rep.slots) {
    const bool inside =
        s.pool == proto::kGpuPool
            ? contains(s.offset, s.bytes) && s.offset % slot_align_ == 0
            : s.pool == proto::kHostPool && s.offset <= host && host - s.offset >= s.bytes;
    if (!inside) {
      return Status::ProtocolError("gpu_load reply: slot " + std::to_string(s.slot) + " of pool " +
                                   std::to_string(s.pool) + " lies outside it");
    }
  }
  return lease;
}

}  // namespace tierkv
