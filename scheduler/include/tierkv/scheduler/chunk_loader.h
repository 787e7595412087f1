// ChunkLoader: what a co-scheduled prefill session drives to bring chunks of one prompt's cached
// prefix into host slots the engine can read in place.
//
// One loader serves one session and knows that session's chunks (namespace, keys, tiers) from its
// construction; chunks are named by their position in the prefix. The session decides which chunk
// to load and when (backwards from the end, never one the engine may be computing); the loader only
// moves bytes: from the host tier by leasing the slot a chunk already lies in, from NVMe or a
// remote store by reading it into a leased slot and verifying its checksum.
//
// Contract:
//  - submit(i) starts a read; its outcome comes later through LoadSink::on_loaded, exactly once,
//    on the owning thread, never from inside submit(). A failure (I/O error, checksum mismatch,
//    chunk gone) carries a Status; the session then has the engine compute that chunk.
//  - hand_over(i) leases a chunk that is already in host RAM at once (no I/O).
//  - A delivered chunk's slot stays leased until release(i, slot).
//  - cancel_all() stops every read in flight: no completion arrives after it returns, and the
//    loader frees whatever those reads held.
// Threads: owned by the session's thread (the daemon's server thread); no locks.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"
#include "tierkv/protocol.h"
#include "tierkv/status.h"

namespace tierkv::scheduler {

// Receives the outcome of each submitted read.
class LoadSink {
 public:
  virtual ~LoadSink() = default;
  // `chunk`'s read finished at `completed_ns` (Clock time; when the device finished it or, if
  // that is unknown, when its completion was reaped): the slot it lies in (leased for reading),
  // or why not. The time measures the tier; deliveries may come later, and in bursts.
  virtual void on_loaded(uint32_t chunk, const Result<proto::SlotRef>& slot,
                         int64_t completed_ns) = 0;
};

class ChunkLoader {
 public:
  virtual ~ChunkLoader() = default;
  // Where completions go. Set once, before the first submit().
  virtual void bind(LoadSink* sink) = 0;
  // Starts reading chunk `chunk` into a host slot.
  virtual void submit(uint32_t chunk) = 0;
  // Leases a chunk that is already in host RAM, synchronously.
  virtual Result<proto::SlotRef> hand_over(uint32_t chunk) = 0;
  // Gives back a delivered chunk's slot.
  virtual void release(uint32_t chunk, const proto::SlotRef& slot) = 0;
  // Stops every read in flight; no completion after this returns.
  virtual void cancel_all() = 0;
};

using SessionId = uint64_t;  // an engine session (CacheEngine::open_session)

// What a ChunkLoaderFactory gets to build one session's loader.
struct LoaderContext {
  SessionId lease_session = 0;  // lease every slot under this engine session
  const Namespace* ns = nullptr;
  std::span<const ChunkKey> keys;  // the cached prefix's keys
  std::span<const proto::Tier> tiers;
};

// Builds the loader of each prefill session (PrefillService).
class ChunkLoaderFactory {
 public:
  virtual ~ChunkLoaderFactory() = default;
  virtual std::unique_ptr<ChunkLoader> make(const LoaderContext& context) = 0;
};

}  // namespace tierkv::scheduler
