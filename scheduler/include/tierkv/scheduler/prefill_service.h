// PrefillService: the daemon's co-scheduled prefill sessions ("Cake"), per client.
//
// It turns the prefill_* requests (tierkv/prefill_protocol.h) into PrefillSessions: finds a
// prompt's cached prefix through the CacheEngine, builds the session's ChunkLoader (from a
// ChunkLoaderFactory; by default a TierChunkLoader, which serves the host and NVMe tiers), and
// keeps what the sessions learn: each tier's read bandwidth and latency (TierCostModel, shared by
// all sessions), and per namespace the engine's compute profile — registered by the client, or
// fitted from its reports — and how much slower or faster than that profile the engine last ran.
//
// Leases: each session holds its chunks under an engine session of its own, closed when the
// session ends, so nothing a session leased outlives it. A client that disconnects has every one
// of its sessions cancelled (close_client).
//
// Threads: the daemon's server thread owns the service, the CacheEngine and the Clock; no locks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "tierkv/prefill_protocol.h"
#include "tierkv/scheduler/cache_engine.h"
#include "tierkv/scheduler/chunk_loader.h"
#include "tierkv/scheduler/clock.h"
#include "tierkv/scheduler/prefill_planner.h"
#include "tierkv/scheduler/prefill_session.h"
#include "tierkv/scheduler/tier_chunk_loader.h"

namespace tierkv::scheduler {

struct PrefillOptions {
  uint32_t queue_depth = 8;  // reads in flight per session, at most
  uint32_t max_sessions_per_client = 16;
  uint32_t max_lookahead = 64;     // largest compute_lookahead a client may ask for
  uint32_t recent_sessions = 16;   // kept for stats
  ComputeProfile default_profile;  // until a client registers one or enough is learned
  TierCostOptions tier_costs;      // priors, until reads are measured
  // For benchmarks and tests of the schedule (see TierChunkLoader). host_throttle: host chunks
  // are read through an emulated tier of this bandwidth and latency instead of being handed over
  // at once. nvme_throttle: NVMe reads (real ones still) are paced to this bandwidth.
  ReadThrottle host_throttle;
  ReadThrottle nvme_throttle;
};

class PrefillService {
 public:
  // `factory` may be null: then every session gets a TierChunkLoader with the options' throttles.
  PrefillService(CacheEngine& engine, Clock& clock, const PrefillOptions& options,
                 ChunkLoaderFactory* factory = nullptr);
  ~PrefillService();
  PrefillService(const PrefillService&) = delete;
  PrefillService& operator=(const PrefillService&) = delete;

  Status begin(SessionId client, const proto::PrefillBeginRequest& req,
               proto::PrefillBeginReply& reply);
  Status set_profile(SessionId client, const proto::PrefillProfileRequest& req);
  Status computed(SessionId client, const proto::PrefillComputedRequest& req,
                  proto::PrefillProgress& out);
  // Releases what the request names; then, when there is news or req.timeout_us is 0, fills
  // `out` and returns true. Otherwise returns false and calls `wake` once, when news arrives (the
  // caller then answers with take()); cancel_wait() drops it.
  Result<bool> poll(SessionId client, const proto::PrefillPollRequest& req,
                    proto::PrefillProgress& out, std::function<void()> wake);
  Status take(SessionId client, uint64_t session, proto::PrefillProgress& out);
  void cancel_wait(SessionId client, uint64_t session);
  Status end(SessionId client, const proto::PrefillEndRequest& req, proto::PrefillSummary& out);
  // The client is gone: cancels its sessions, releasing everything. Returns how many.
  size_t close_client(SessionId client);

  // Fills stats.prefill, stats.tier_bandwidth and stats.recent_prefills.
  void fill_stats(proto::StatsReply& stats) const;

  TierCostModel& costs() { return costs_; }
  size_t active_sessions() const { return live_.size(); }

 private:
  struct Live {
    SessionId client = 0;
    SessionId lease_session = 0;
    NamespaceId ns = 0;
    uint32_t profile_version = 0;
    std::vector<ChunkKey> keys;
    std::vector<proto::Tier> tiers;
    std::unique_ptr<ChunkLoader> loader;
    std::unique_ptr<PrefillSession> session;  // destroyed before the loader
  };
  struct NamespaceProfile {
    bool registered = false;  // the client gave the profile
    bool learned = false;     // the profile is fitted from reports
    ComputeProfile profile;
    ComputeProfileFitter fitter;
    uint32_t version = 0;        // bumped when the profile in use changes
    double compute_scale = 1.0;  // the engine over the profile, as the last session measured
    uint32_t scale_version = 0;  // the profile version compute_scale was measured against
  };

  Result<Live*> find(SessionId client, uint64_t session, const char* op);
  NamespaceProfile& profile_of(NamespaceId ns);
  // The profile sessions of `ns` plan with now.
  const ComputeProfile& current_profile(NamespaceProfile& p);
  void release_chunks(PrefillSession& s, std::span<const uint32_t> chunks, Status& first_error);
  // Ends the session, records it, and forgets it.
  proto::PrefillSummary finish(uint64_t id, bool cancel);

  CacheEngine& engine_;
  Clock& clock_;
  PrefillOptions options_;
  ChunkLoaderFactory* factory_;
  TierCostModel costs_;
  std::unordered_map<uint64_t, std::unique_ptr<Live>> live_;
  std::unordered_map<NamespaceId, NamespaceProfile> profiles_;
  std::deque<proto::PrefillRecord> recent_;
  uint64_t next_id_ = 1;
  proto::PrefillStats stats_;
};

}  // namespace tierkv::scheduler
