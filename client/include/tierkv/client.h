// libtierkv: the engine-side client of tierkvd.
//
// An engine connects once per process (Client::connect) and shares the Client between its
// threads: every method is thread-safe. Requests from different threads are pipelined on the one
// connection (each thread waits for its own reply, not for the others' round trips), and the
// daemon answers them in order. The daemon's host pool is mapped into this process at connect time,
// so chunk data is written and read in place in shared memory: PutLease::slot() is where the engine
// writes a chunk, LoadLease::chunk() is where it reads one. Nothing is copied on the host side.
//
// Lifetimes: a lease keeps its Client alive. A PutLease that is neither committed nor aborted is
// aborted when destroyed; a LoadLease is released when destroyed. If this process dies, the daemon
// reclaims its leases and discards what it had not committed.
//
// Errors: every call returns a Status or Result<T>; messages name the bad field and value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"
#include "tierkv/protocol.h"
#include "tierkv/status.h"

namespace tierkv {

using proto::Tier;

inline constexpr const char* kDefaultSocketPath = "/run/tierkv/tierkvd.sock";

struct ClientOptions {
  // The daemon's socket; empty = $TIERKV_SOCKET if set, else kDefaultSocketPath.
  std::string socket_path;
  // Shown in the daemon's logs.
  std::string client_name = "libtierkv";
  // Pre-populate page tables of the shared host pool at connect, so the first write into a slot
  // does not page-fault. Costs a few ms per GiB at connect time.
  bool populate = true;
};

class Client;
struct PrefillWire;  // co-scheduled prefill's requests (prefill.h, prefill.cc)
struct GpuWire;      // the GPU tier's requests (gpu_pool.h, gpu_pool.cc)

struct LookupResult {
  size_t total_chunks = 0;   // full chunks in the prompt
  size_t cached_chunks = 0;  // leading chunks cached; lookup stops at the first gap
  std::vector<Tier> tiers;   // tier of each cached chunk
};

struct PutResult {
  size_t total_chunks = 0;
  size_t written = 0;         // chunks this call stored
  size_t already_cached = 0;  // chunks that were cached before
  size_t in_progress = 0;     // chunks another client was storing at the same time
  size_t no_space = 0;        // chunks for which no slot could be had (every slot leased)
};

// Slots leased for writing one prompt's chunks. Write every chunk for which needs_write(i), then
// commit(). Move-only; not thread-safe by itself.
class PutLease {
 public:
  PutLease(PutLease&&) noexcept;
  PutLease& operator=(PutLease&&) noexcept;
  ~PutLease();

  size_t chunks() const { return slots_.size(); }
  bool needs_write(size_t i) const;
  // Where chunk i goes: chunk_bytes of shared memory, or empty if !needs_write(i).
  std::span<std::byte> slot(size_t i) const;
  // Copies chunk i's bytes (exactly chunk_bytes) from `src` into its slot, with streaming stores:
  // the chunk goes to shared memory for later readers, so the copy neither reads the slot's old
  // lines in (no read-for-ownership) nor evicts the engine's working set from the cache. As fast
  // as the machine's best large memcpy, also for chunks far smaller than the last-level cache.
  Status write(size_t i, std::span<const std::byte> src);
  proto::PutDisposition disposition(size_t i) const { return slots_[i].disposition; }
  // Makes every written chunk visible to lookups at once (each chunk is whole or absent).
  Result<size_t> commit();
  Status abort();

 private:
  friend class Client;
  PutLease(std::shared_ptr<Client> client, std::vector<proto::PutSlot> slots, uint64_t chunk_bytes);
  Status finish(proto::Op op, size_t* count);

  std::shared_ptr<Client> client_;
  std::vector<proto::PutSlot> slots_;
  uint64_t chunk_bytes_ = 0;
};

// Read leases on a prompt's leading cached chunks. While held, the chunks are neither evicted nor
// reused. A lease from DaemonGpuPool::load (gpu_pool.h) may hold chunks in the daemon's GPU pool
// (on_gpu(i)) beside chunks in the host pool. Move-only; not thread-safe by itself.
class LoadLease {
 public:
  LoadLease(LoadLease&&) noexcept;
  LoadLease& operator=(LoadLease&&) noexcept;
  ~LoadLease();

  size_t chunks() const { return slots_.size(); }
  // Chunk i's bytes, in shared memory. Valid until release(). Empty for a chunk on_gpu(i).
  std::span<const std::byte> chunk(size_t i) const;
  // Whether chunk i lies in the daemon's GPU pool; then gpu_offset(i) is its byte offset there
  // (DaemonGpuPool::data() + gpu_offset(i) in this process) and chunk_bytes(i) its size.
  bool on_gpu(size_t i) const { return slots_[i].pool == proto::kGpuPool; }
  uint64_t gpu_offset(size_t i) const { return slots_[i].offset; }
  uint64_t chunk_bytes(size_t i) const { return slots_[i].bytes; }
  size_t gpu_chunks() const;
  Status release();

 private:
  friend class Client;
  friend struct GpuWire;
  LoadLease(std::shared_ptr<Client> client, std::vector<proto::SlotRef> slots);

  std::shared_ptr<Client> client_;
  std::vector<proto::SlotRef> slots_;
};

class Client : public std::enable_shared_from_this<Client> {
 public:
  // Connects, performs the version handshake, and maps the daemon's host pool.
  static Result<std::shared_ptr<Client>> connect(const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Registers (or finds) the namespace for a layout, tenant and optional salt. layout.chunk_tokens
  // 0 takes the daemon's default; the returned Namespace carries the resolved layout.
  Result<Namespace> register_layout(const Layout& layout, std::string_view tenant,
                                    std::string_view salt = {});

  // The prompt's chunk keys (full chunks only). Pure computation; no daemon round trip.
  static std::vector<ChunkKey> keys(const Namespace& ns, std::span<const TokenId> tokens);

  // How many leading chunks of the prompt are cached, and where. Moves no data.
  Result<LookupResult> lookup(const Namespace& ns, std::span<const TokenId> tokens);
  Result<LookupResult> lookup(NamespaceId ns, std::span<const ChunkKey> keys);

  // Leases slots for the prompt's full chunks that are not cached yet.
  Result<PutLease> begin_put(const Namespace& ns, std::span<const TokenId> tokens);
  Result<PutLease> begin_put(const Namespace& ns, std::span<const ChunkKey> keys,
                             const ChunkKey& parent = kRootKey);
  // Stores a prompt's KV given chunk after chunk (ns.chunk_bytes() per full chunk; bytes past the
  // last full chunk are ignored): begin_put, copy, commit.
  Result<PutResult> put(const Namespace& ns, std::span<const TokenId> tokens,
                        std::span<const std::byte> kv);

  // Leases the prompt's leading cached chunks (at most max_chunks) for reading in place.
  Result<LoadLease> load(const Namespace& ns, std::span<const TokenId> tokens,
                         size_t max_chunks = std::numeric_limits<size_t>::max());
  Result<LoadLease> load(NamespaceId ns, std::span<const ChunkKey> keys);

  // Starts reading the prompt's leading cached chunks that lie only on NVMe up into host RAM,
  // ahead of a load; answers at once with how many are in RAM and how many are on their way.
  Result<proto::PrefetchReply> prefetch(const Namespace& ns, std::span<const TokenId> tokens);
  Result<proto::PrefetchReply> prefetch(NamespaceId ns, std::span<const ChunkKey> keys);

  // Admin: starts writing every host chunk bound for NVMe down and reports progress (repeat until
  // dirty_chunks and writes_in_flight are 0); scrubs NVMe chunks from `cursor` on, at most
  // max_chunks per call, removing damaged ones (repeat from next_cursor until done).
  Result<proto::FlushReply> flush();
  Result<proto::VerifyReply> verify(uint64_t cursor, uint32_t max_chunks);

  // Evict drops chunks from the memory tiers; delete drops them everywhere. By prompt (its full
  // chunks) or by whole namespace. Leased chunks stay readable by their holders until released.
  // Both return the number of chunks removed.
  Result<uint64_t> evict(NamespaceId ns, std::span<const ChunkKey> keys);
  Result<uint64_t> evict_namespace(NamespaceId ns);
  Result<uint64_t> remove(NamespaceId ns, std::span<const ChunkKey> keys);
  Result<uint64_t> remove_namespace(NamespaceId ns);

  Result<proto::StatsReply> stats();
  Result<proto::ListNamespacesReply> list_namespaces();

  // The daemon's host pool as mapped into this process: every PutLease slot and LoadLease chunk
  // lies inside it. Valid for the Client's lifetime (GpuTransfer pins it for DMA).
  std::span<std::byte> host_pool() const { return {base_, region_bytes_}; }

  const std::string& socket_path() const { return socket_path_; }
  const std::string& daemon_version() const { return daemon_version_; }
  uint32_t default_chunk_tokens() const { return default_chunk_tokens_; }

 private:
  friend class PutLease;
  friend class LoadLease;
  friend struct PrefillWire;
  friend struct GpuWire;
  Client() = default;

  // One request and its reply, pipelined with other threads' requests (defined in client.cc).
  template <typename Request, typename Reply>
  Status call(proto::Op op, const Request& req, Reply& reply);
  Status release_slots(proto::Op op, std::span<const uint32_t> slots, uint64_t* count);
  Result<uint64_t> drop(proto::Op op, NamespaceId ns, proto::Scope scope,
                        std::span<const ChunkKey> keys);
  std::byte* at(uint64_t offset) const { return base_ + offset; }
  // call() for messages encoded and decoded in another file: one round trip, no allocation.
  using EncodeFn = void (*)(wire::ByteWriter&, const void*);
  using DecodeFn = Status (*)(wire::ByteReader&, void*);
  Status call_erased(proto::Op op, const void* req, EncodeFn encode, void* reply, DecodeFn decode);

  struct Connection;
  std::unique_ptr<Connection> conn_;
  std::string socket_path_;
  std::string daemon_version_;
  uint32_t default_chunk_tokens_ = 0;
  std::byte* base_ = nullptr;
  uint64_t region_bytes_ = 0;
};

}  // namespace tierkv
