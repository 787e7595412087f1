// Wire messages of co-scheduled prefill ("Cake"): opcodes kPrefillBegin .. kPrefillEnd.
//
// A session: the engine sends the prompt's chunk keys (prefill_begin); the daemon finds the cached
// prefix (n chunks), plans where computing from the front and loading from the back should meet,
// hands over chunks already in host RAM, and starts loading the others from chunk n-1 down. The
// engine then loops: compute a chunk it has been granted, report it (prefill_computed), or wait for
// loaded chunks (prefill_poll with a timeout); every reply is a PrefillProgress with the chunks
// that became ready since the last reply, the loads that failed (the engine computes those), how
// far the engine may compute, and whether every prefix chunk is covered ("met"). prefill_end
// releases everything (and cancels what is still running).
//
// Who computes what: the engine may compute a chunk below `grant_end` that it has not received,
// or a chunk named in `failed`; every other prefix chunk is the loader's and arrives in `ready`.
// The daemon never starts a load below grant_end, so no chunk is both loaded and computed.
//
// Message structs are plain values; see protocol.h for framing and conventions.
#pragma once

#include <cstdint>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/protocol.h"
#include "tierkv/status.h"
#include "tierkv/wire.h"

namespace tierkv::proto {

// meeting_point value that lets the daemon decide (the default).
inline constexpr uint32_t kAutoMeetingPoint = UINT32_MAX;
// Longest a prefill_poll may wait (a waiting poll holds its connection: keep waits short).
inline constexpr uint32_t kMaxPrefillWaitUs = 1'000'000;
inline constexpr uint32_t kMaxProfilePoints = 4096;

struct PrefillBeginRequest {
  NamespaceId ns = 0;
  // Tokens in the whole prompt, partial last chunk included (0: just the full chunks of `keys`).
  // Only for the predicted TTFT, which counts computing what follows the cached prefix.
  uint64_t prompt_tokens = 0;
  // Chunks the engine may hold granted at once (>= 1): more for an engine that computes several
  // chunks per step.
  uint32_t compute_lookahead = 1;
  // kAutoMeetingPoint: the daemon decides and adapts. Otherwise load exactly the non-resident
  // chunks at or past this index and grant the engine everything below it (baselines, tests).
  uint32_t meeting_point = kAutoMeetingPoint;
  std::vector<ChunkKey> keys;  // the prompt's full chunks, in order
};

// One chunk delivered to the engine.
struct PrefillReady {
  uint32_t chunk = 0;
  uint32_t reserved = 0;
  SlotRef slot;
  // Microseconds since the session began: when its read was submitted and when the tier finished
  // (both 0 for a chunk handed over from host RAM).
  uint64_t submitted_us = 0;
  uint64_t completed_us = 0;
};
static_assert(sizeof(PrefillReady) == 48);

struct PrefillProgress {
  uint32_t grant_end = 0;   // the engine may compute chunks below this that it has not received
  uint32_t load_front = 0;  // lowest chunk the loader has claimed (n when none)
  uint8_t met = 0;          // every prefix chunk is computed or delivered
  std::vector<PrefillReady> ready;  // delivered since the previous reply
  std::vector<uint32_t> failed;     // loads that failed since the previous reply: compute these
};

struct PrefillPlanInfo {
  uint32_t meeting_point = 0;    // planned: compute [0, m), load [m, n)
  uint32_t load_chunks = 0;      // reads planned (non-resident chunks past m)
  uint32_t resident_chunks = 0;  // handed over from host RAM
  uint32_t queue_depth = 0;      // reads in flight that keep the tier busy
  uint8_t loading_helps = 0;     // 0: loading from the slow tier would not be faster; nothing read
  uint8_t reserved[7] = {};
  // Predicted time to first token, ms.
  double compute_only_ms = 0;
  double load_only_ms = 0;
  double bidir_ms = 0;
};
static_assert(sizeof(PrefillPlanInfo) == 48);

struct PrefillBeginReply {
  uint64_t session = 0;        // 0 when nothing is cached (met at once; nothing to end)
  uint32_t total_chunks = 0;   // keys given
  uint32_t cached_chunks = 0;  // n
  std::vector<Tier> tiers;     // of each cached chunk
  PrefillPlanInfo plan;
  PrefillProgress progress;  // handed-over chunks and the first grant
};

// Registers how long the engine takes per chunk, for one namespace.
enum class ProfileKind : uint8_t {
  kModel = 0,  // t(L, c) = a*c + b*c*(L + c/2) ms
  kTable = 1,  // chunk_ms at prefix_tokens, for chunks of table_chunk_tokens tokens
  kLearn = 2,  // forget any registered profile; learn from the engine's computed reports
};
struct ProfilePoint {
  double prefix_tokens = 0;
  double chunk_ms = 0;
};
struct PrefillProfileRequest {
  NamespaceId ns = 0;
  ProfileKind kind = ProfileKind::kModel;
  double a_ms_per_token = 0;
  double b_ms_per_token2 = 0;
  uint32_t table_chunk_tokens = 0;
  std::vector<ProfilePoint> table;
};

struct PrefillComputedRequest {
  uint64_t session = 0;
  uint32_t chunk = 0;
  std::vector<uint32_t> release;  // delivered chunks the engine is done reading
};

struct PrefillPollRequest {
  uint64_t session = 0;
  uint32_t timeout_us = 0;  // 0: answer at once; else when there is news or the time is up
  std::vector<uint32_t> release;
};

struct PrefillEndRequest {
  uint64_t session = 0;
  uint8_t cancel = 0;  // 1: the engine gives up (also implied when the prefix is not covered)
};

struct PrefillSummary {
  uint32_t chunks = 0;
  uint32_t handed_over = 0;  // resident chunks
  uint32_t loaded = 0;       // read from a slower tier
  uint32_t computed = 0;
  uint32_t failed = 0;  // loads that failed (then computed)
  uint32_t planned_meeting_point = 0;
  uint32_t actual_meeting_point = 0;  // lowest chunk read from a slower tier (n if none)
  uint8_t met = 0;
  uint8_t cancelled = 0;
  uint8_t reserved[2] = {};
  uint64_t elapsed_us = 0;  // begin to end
  uint64_t met_us = 0;      // begin to met (0 if not met)
};
static_assert(sizeof(PrefillSummary) == 48);

void encode(wire::ByteWriter& w, const PrefillBeginRequest& m);
void encode(wire::ByteWriter& w, const PrefillBeginReply& m);
void encode(wire::ByteWriter& w, const PrefillProgress& m);
void encode(wire::ByteWriter& w, const PrefillProfileRequest& m);
void encode(wire::ByteWriter& w, const PrefillComputedRequest& m);
void encode(wire::ByteWriter& w, const PrefillPollRequest& m);
void encode(wire::ByteWriter& w, const PrefillEndRequest& m);
void encode(wire::ByteWriter& w, const PrefillSummary& m);

Status decode(wire::ByteReader& r, PrefillBeginRequest& m);
Status decode(wire::ByteReader& r, PrefillBeginReply& m);
Status decode(wire::ByteReader& r, PrefillProgress& m);
Status decode(wire::ByteReader& r, PrefillProfileRequest& m);
Status decode(wire::ByteReader& r, PrefillComputedRequest& m);
Status decode(wire::ByteReader& r, PrefillPollRequest& m);
Status decode(wire::ByteReader& r, PrefillEndRequest& m);
Status decode(wire::ByteReader& r, PrefillSummary& m);

}  // namespace tierkv::proto
