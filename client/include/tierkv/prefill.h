// Co-scheduled prefill from the engine's side ("Cake"): compute a prompt's cached prefix from the
// front while tierkvd loads it from the back, and stop where they meet.
//
// PrefillSession is shaped for an engine's chunked-prefill loop; it needs no thread of its own:
//
//   auto s = PrefillSession::begin(client, ns, tokens);          // plan + first grant
//   for (;;) {
//     for (uint32_t i : (*s)->take_ready()) scatter(i, (*s)->chunk(i)), (*s)->release(i);
//     auto next = (*s)->next();
//     if (next.action == PrefillSession::Action::kDone) break;   // the fronts met
//     if (next.action == PrefillSession::Action::kCompute) {
//       compute_chunk(next.chunk);                               // the engine's forward pass
//       (*s)->computed(next.chunk);                              // report, get news back
//     } else {
//       (*s)->wait_ready(std::chrono::milliseconds(5));          // loads still coming
//     }
//   }
//   (*s)->end();                                                 // then compute the suffix
//
// next() says what to do from what the daemon has said so far: compute the lowest missing chunk if
// the daemon granted it to the engine (or its load failed), wait if it is being loaded, or stop
// when every prefix chunk is computed or delivered. The daemon never loads a chunk it granted, so
// following next() no chunk is ever both computed and loaded. Delivered chunks are read in place in
// shared memory (chunk(i)) until release(i) or end().
//
// Lifetimes: a session keeps its Client alive; destroying one that was not ended cancels it (the
// daemon releases everything). If the process dies, the daemon cancels its sessions.
// Thread safety: a session is driven by one thread; the Client underneath stays thread-safe, but a
// wait_ready() holds the connection for up to its timeout, so keep timeouts short where other
// threads share the Client.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tierkv/client.h"
#include "tierkv/prefill_protocol.h"

namespace tierkv {

struct PrefillOptions {
  // Chunks the engine may be granted at once: 1 for a loop that computes one chunk per step, more
  // for an engine that batches several chunks into one forward pass.
  uint32_t compute_lookahead = 1;
  // Tokens in the whole prompt (the token-based begin() fills it in); only for the predicted TTFT.
  uint64_t prompt_tokens = 0;
  // proto::kAutoMeetingPoint (default): the daemon plans and adapts. Otherwise the daemon loads
  // exactly the chunks from here on and the engine computes the rest (baselines, experiments).
  uint32_t meeting_point = proto::kAutoMeetingPoint;
};

// How long this engine takes per chunk, for the daemon's planner (per namespace). Without one,
// the daemon uses its configured default and then what it learns from computed() reports.
Status set_compute_profile(Client& client, NamespaceId ns, double a_ms_per_token,
                           double b_ms_per_token2);
Status set_compute_profile_table(Client& client, NamespaceId ns, uint32_t table_chunk_tokens,
                                 std::span<const proto::ProfilePoint> table);
Status learn_compute_profile(Client& client, NamespaceId ns);

class PrefillSession {
 public:
  enum class Action { kCompute, kWait, kDone };
  struct Next {
    Action action = Action::kDone;
    uint32_t chunk = 0;  // kCompute: the chunk; kWait: the chunk being waited for
  };

  static Result<std::unique_ptr<PrefillSession>> begin(std::shared_ptr<Client> client,
                                                       const Namespace& ns,
                                                       std::span<const TokenId> tokens,
                                                       PrefillOptions options = {});
  static Result<std::unique_ptr<PrefillSession>> begin(std::shared_ptr<Client> client,
                                                       const Namespace& ns,
                                                       std::span<const ChunkKey> keys,
                                                       PrefillOptions options = {});
  ~PrefillSession();
  PrefillSession(const PrefillSession&) = delete;
  PrefillSession& operator=(const PrefillSession&) = delete;

  uint32_t total_chunks() const { return total_; }
  uint32_t cached_chunks() const { return n_; }  // the prefix this session covers
  std::span<const Tier> tiers() const { return tiers_; }
  const proto::PrefillPlanInfo& plan() const { return plan_; }
  uint32_t meeting_point() const { return plan_.meeting_point; }  // as planned

  Next next() const;
  // Reports chunk `chunk` computed; the reply's news (ready chunks, failures, grants) is applied.
  Status computed(uint32_t chunk);
  // Fetches news without waiting.
  Status poll();
  // Waits up to `timeout` (at most proto::kMaxPrefillWaitUs) for news.
  Status wait_ready(std::chrono::microseconds timeout);

  // Chunks delivered since the last call, in arrival order (valid until the next call).
  std::span<const uint32_t> take_ready();
  // A delivered chunk's bytes in shared memory; empty if not delivered, released, or ended.
  std::span<const std::byte> chunk(uint32_t i) const;
  // When the daemon submitted and finished chunk i's read (us since begin; 0 for handed over).
  const proto::PrefillReady* ready_info(uint32_t i) const;
  bool load_failed(uint32_t i) const { return i < n_ && failed_[i]; }
  // Done reading chunk i: its slot goes back with the next request.
  void release(uint32_t i);

  bool met() const { return missing_ == 0; }
  // Ends the session (cancelled if the prefix is not covered) and releases every chunk.
  Result<proto::PrefillSummary> end();
  Status cancel();

 private:
  PrefillSession(std::shared_ptr<Client> client, const proto::PrefillBeginReply& reply);
  void apply(const proto::PrefillProgress& p);
  Status finish(bool cancel, proto::PrefillSummary* out);

  enum : uint8_t { kMissing = 0, kReady = 1, kComputed = 2, kReleased = 3 };
  std::shared_ptr<Client> client_;
  uint64_t id_ = 0;  // 0: nothing cached, nothing to talk about
  uint32_t total_ = 0;
  uint32_t n_ = 0;
  std::vector<Tier> tiers_;
  proto::PrefillPlanInfo plan_;
  std::vector<uint8_t> state_;
  std::vector<uint8_t> failed_;
  std::vector<proto::PrefillReady> ready_;  // per chunk, valid when delivered
  std::vector<uint32_t> fresh_, taken_;
  std::vector<uint32_t> to_release_;
  uint32_t grant_end_ = 0;
  uint32_t missing_ = 0;
  uint32_t front_ = 0;  // every chunk below is ready, computed or released
  bool ended_ = false;
  proto::PrefillComputedRequest computed_req_;
  proto::PrefillPollRequest poll_req_;
  proto::PrefillProgress progress_;
};

}  // namespace tierkv
