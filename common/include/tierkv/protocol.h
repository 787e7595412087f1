// The control protocol between libtierkv and tierkvd over a Unix stream socket.
//
// Every message is one frame: a 16-byte FrameHeader, then `payload_bytes` of payload encoded with
// wire::ByteWriter. Every request gets exactly one reply frame with the same opcode and request
// id. A client may send further requests before the replies come (libtierkv does, from several
// threads): the daemon answers each connection's requests one at a time, in the order they
// arrived, and clients rely on that order. `status` in a reply is a StatusCode, and a non-OK
// reply's payload is the error message (a u32-length string). Data never crosses the socket: the
// Hello reply carries the host pool's memfd (SCM_RIGHTS) and later messages name slots by index
// and byte offset into it.
//
// Message structs below are plain values; encode() appends the payload, decode() parses it and
// names the bad field on failure. Decoders reuse the vectors they are given (no allocation once
// they have grown to the working size).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"
#include "tierkv/status.h"
#include "tierkv/wire.h"

namespace tierkv::proto {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kHeaderBytes = 16;
// Largest payload either side accepts; a header announcing more is rejected before any read.
inline constexpr uint32_t kMaxPayloadBytes = 16u << 20;
// Most chunks one request may name (a 16M-token prompt at 256 tokens per chunk).
inline constexpr uint32_t kMaxChunksPerRequest = 65536;
inline constexpr uint32_t kMaxNameBytes = 256;

// Wire-stable values: never renumber.
enum class Op : uint16_t {
  kHello = 1,
  kRegisterLayout = 2,
  kLookup = 3,
  kPutBegin = 4,
  kPutCommit = 5,
  kPutAbort = 6,
  kLoad = 7,
  kRelease = 8,
  kEvict = 9,
  kDelete = 10,
  kStats = 11,
  kListNamespaces = 12,
  // 13..19: NVMe tier. 20..29: co-scheduled prefill (prefill_protocol.h).
  kPrefetch = 13,
  kFlush = 14,
  kVerify = 15,
  kPrefillBegin = 20,
  kPrefillProfile = 21,
  kPrefillComputed = 22,
  kPrefillPoll = 23,
  kPrefillEnd = 24,
  // 30..39: GPU tier.
  kGpuAttach = 30,
  kGpuLoad = 31,
  kGpuRelease = 32,
};
std::string_view op_name(Op op);  // "lookup", ...; "unknown" otherwise
bool is_known_op(uint16_t op);
bool is_prefill_op(uint16_t op);

struct FrameHeader {
  uint32_t payload_bytes = 0;
  uint16_t op = 0;
  uint16_t status = 0;  // StatusCode in replies, 0 in requests
  uint32_t request_id = 0;
  uint32_t reserved = 0;  // must be 0
};
static_assert(sizeof(FrameHeader) == kHeaderBytes);

// Parses and validates a header: length within kMaxPayloadBytes, reserved zero. The opcode is
// checked by the dispatcher so that an unknown one gets a reply rather than a dropped connection.
Result<FrameHeader> parse_header(std::span<const uint8_t, kHeaderBytes> bytes);
// Appends header + payload. `payload` is written by `fill` into the same buffer (no copy).
void begin_frame(std::vector<uint8_t>& buf, Op op, uint32_t request_id, StatusCode status);
Status end_frame(std::vector<uint8_t>& buf);  // patches payload_bytes; fails if too large
// An error reply: header with `status.code()` and the message as payload.
void error_frame(std::vector<uint8_t>& buf, uint16_t op, uint32_t request_id, const Status& status);
// Decodes a non-OK reply's payload back into a Status.
Status decode_error(StatusCode code, std::span<const uint8_t> payload);

// Where a chunk lies. Wire-stable.
enum class Tier : uint8_t { kNone = 0, kGpu = 1, kHost = 2, kNvme = 3, kRemote = 4 };
std::string_view tier_name(Tier tier);

// --- hello ---------------------------------------------------------------------------------------
struct HelloRequest {
  uint32_t protocol_version = kProtocolVersion;
  std::string client_name;
};
struct HelloReply {  // the reply frame carries the host pool memfd
  uint32_t protocol_version = kProtocolVersion;
  std::string daemon_version;
  uint64_t host_region_bytes = 0;
  uint32_t default_chunk_tokens = 0;
};

// --- namespaces ----------------------------------------------------------------------------------
struct RegisterLayoutRequest {
  Layout layout;  // chunk_tokens 0 = daemon default
  std::string tenant;
  std::string salt;
};
struct RegisterLayoutReply {
  NamespaceId ns = 0;
  Layout layout;  // as resolved
};

// --- lookup / load ------------------------------------------------------------------------------
// Lookup and Load name a prompt by its chunk keys, in order.
struct KeysRequest {
  NamespaceId ns = 0;
  std::vector<ChunkKey> keys;
};
// The same message over keys the sender already holds (no copy into a vector); its encoding is a
// KeysRequest's, byte for byte.
struct KeysRequestView {
  NamespaceId ns = 0;
  std::span<const ChunkKey> keys;
};
struct LookupReply {
  std::vector<Tier> tiers;  // one per leading cached chunk; size() = cached prefix length
};
// Which pool a SlotRef names (SlotRef::pool). Wire-stable.
inline constexpr uint32_t kHostPool = 0;  // the shared host region
inline constexpr uint32_t kGpuPool = 1;   // the daemon's GPU pool (gpu_load replies only)
struct SlotRef {
  uint32_t slot = 0;  // slot id within its pool
  uint32_t pool = kHostPool;
  uint64_t offset = 0;  // byte offset in the pool (the host region, or the GPU pool)
  uint64_t bytes = 0;   // valid bytes (the namespace's chunk size)
};
static_assert(sizeof(SlotRef) == 24);
struct LoadReply {
  std::vector<SlotRef> slots;  // leased for reading, one per leading cached chunk
};

// --- GPU tier (gpu_attach: empty request; gpu_load: a KeysRequest; gpu_release: SlotsRequest) --
// gpu_attach hands the client the daemon's GPU pool: a CUDA IPC memory handle the client opens
// once (cudaIpcOpenMemHandle) on the device whose UUID matches, and lets this session gpu_load.
// gpu_load is load, except that chunks with a copy in the GPU tier come as GPU-pool leases
// (SlotRef::pool = kGpuPool, offset into the pool); gpu_release releases those (a load's host
// leases go back with release, as ever).
struct GpuAttachReply {
  int32_t device = -1;      // the daemon's CUDA device index (in the daemon's own numbering)
  uint32_t slot_align = 0;  // every GPU slot offset is a multiple of this
  uint64_t pool_bytes = 0;
  std::array<uint8_t, 16> device_uuid{};  // cudaDeviceProp::uuid: names the device in any process
  std::array<uint8_t, 64> ipc_handle{};   // cudaIpcMemHandle_t of the pool's allocation
};
static_assert(sizeof(GpuAttachReply) == 96);

// --- put -----------------------------------------------------------------------------------------
enum class PutDisposition : uint8_t {
  kWrite = 0,       // write the chunk into `slot`, then commit or abort it
  kCached = 1,      // already cached: nothing to do
  kInProgress = 2,  // another client is writing it now: skip
  kNoSpace = 3,     // no slot could be had (every evictable slot is leased): skip
};
struct PutBeginRequest {
  NamespaceId ns = 0;
  ChunkKey parent;         // key of the chunk before keys[0]; kRootKey when keys[0] is chunk 0
  uint64_t chunk_bytes = 0;  // must equal the namespace's chunk size
  std::vector<ChunkKey> keys;
};
struct PutSlot {
  PutDisposition disposition = PutDisposition::kCached;
  uint8_t pad[3] = {};
  uint32_t slot = 0;
  uint64_t offset = 0;
};
static_assert(sizeof(PutSlot) == 16);
struct PutBeginReply {
  std::vector<PutSlot> slots;  // one per key, same order
};
// Commit, abort and release name slots this session holds.
struct SlotsRequest {
  std::vector<uint32_t> slots;
};
struct CountReply {
  uint64_t count = 0;
};

// --- prefetch (a KeysRequest) --------------------------------------------------------------------
// Starts bringing a prompt's leading cached chunks up into host RAM and answers at once.
struct PrefetchReply {
  uint64_t in_host = 0;   // leading chunks already in host RAM
  uint64_t fetching = 0;  // leading chunks now being read up from NVMe
};

// --- flush (empty request) -----------------------------------------------------------------------
// Queues every host chunk not yet on NVMe for writing down and reports progress; the caller
// repeats it until dirty_chunks and writes_in_flight are both 0.
struct FlushReply {
  uint64_t dirty_chunks = 0;      // host chunks that belong on NVMe and are not there yet
  uint64_t writes_in_flight = 0;
  uint64_t written_total = 0;     // chunks written down since the daemon started
  uint64_t unwritable = 0;        // dirty chunks that cannot go down now (disk full, no room)
};

// --- verify --------------------------------------------------------------------------------------
// Scrubs NVMe chunks in slot order: reads up to max_chunks from `cursor` on and checks each one's
// checksum; a damaged chunk is removed. The caller repeats from next_cursor until done.
struct VerifyRequest {
  uint64_t cursor = 0;
  uint32_t max_chunks = 0;
};
struct VerifyReply {
  uint64_t next_cursor = 0;
  uint64_t cursor_end = 0;  // cursors run over [0, cursor_end): for a progress bar
  uint64_t checked = 0;
  uint64_t corrupt = 0;     // checksum mismatch: removed
  uint64_t unreadable = 0;  // I/O error: removed
  uint8_t done = 0;
};

// --- evict / delete -----------------------------------------------------------------------------
enum class Scope : uint8_t { kNamespace = 0, kKeys = 1 };
struct DropRequest {
  NamespaceId ns = 0;
  Scope scope = Scope::kKeys;
  std::vector<ChunkKey> keys;  // kKeys: these chunks (a prompt's keys); kNamespace: empty
};

// --- stats ---------------------------------------------------------------------------------------
struct TierStats {
  Tier tier = Tier::kNone;
  uint8_t enabled = 0;
  uint8_t pad[6] = {};
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t chunks = 0;
  uint64_t hits = 0;       // chunks found by lookup or load
  uint64_t misses = 0;     // chunks asked for and not found
  uint64_t evictions = 0;  // chunks removed to make room
  uint64_t bytes_in = 0;   // bytes committed into the tier
  uint64_t bytes_out = 0;  // bytes leased out for loading
};
static_assert(sizeof(TierStats) == 72);
// What only the NVMe tier has.
struct NvmeStats {
  uint8_t admitting = 0;        // 0 after disk full (ENOSPC) until space is found again
  uint8_t write_through = 0;
  uint8_t pad[6] = {};
  uint64_t dirty_chunks = 0;    // host chunks bound for NVMe and not written yet
  uint64_t writes_in_flight = 0;
  uint64_t reads_in_flight = 0;
  uint64_t read_errors = 0;     // reads that failed (EIO, short read): chunk dropped
  uint64_t write_errors = 0;    // writes that failed: chunk stays in host, not on NVMe
  uint64_t checksum_failures = 0;  // chunks read back damaged: dropped, never served
  uint64_t dropped_unwritten = 0;  // host chunks evicted before they could be written down
  uint64_t recovered_chunks = 0;   // chunks found in the index at start-up
  uint64_t recovery_ms = 0;
  uint64_t logical_bytes = 0;   // chunk bytes the tier holds, as clients see them
  uint64_t stored_bytes = 0;    // bytes those chunks take on disk
};
static_assert(sizeof(NvmeStats) == 96);
// Where the NVMe tier's time goes, summed since the daemon started: tells a starved I/O queue
// from a slow disk (tierkv-bench nvme reports these per measurement).
struct NvmeIoStats {
  uint64_t submits = 0;             // io_uring submissions (system calls)
  uint64_t submit_ns = 0;           // server-thread time spent in them
  uint64_t busy_ns = 0;             // time with at least one read or write in the queue
  uint64_t depth_ns = 0;            // reads and writes in the queue integrated over time: the mean
                                    // queue depth while busy is depth_ns / busy_ns
  uint64_t polls = 0;               // completion rounds the server thread ran
  uint64_t poll_ns = 0;             // server-thread time spent in them (verification included)
  uint64_t reads_verified = 0;      // chunks read from NVMe whose checksum was checked
  uint64_t verified_inline = 0;     // of those, checked on the server thread (no worker free)
  uint64_t inline_hash_ns = 0;      // server-thread time spent hashing (inline checks, write-downs)
  uint64_t worker_hash_ns = 0;      // verify workers' time spent hashing, summed over them
  uint32_t verify_threads = 0;      // [nvme] verify_threads
  uint32_t verifies_in_flight = 0;  // chunks read and handed to a worker, not yet checked
};
static_assert(sizeof(NvmeIoStats) == 88);
// What only the GPU tier has (its TierStats row holds capacity, used, chunks, hits, evictions).
struct GpuStats {
  int32_t device = -1;  // the daemon's CUDA device index; -1 when the tier is off
  uint32_t pad = 0;
  uint64_t promotions = 0;            // chunks copied up from host RAM
  uint64_t promotions_in_flight = 0;  // copies on the daemon's CUDA stream now
  uint64_t promotions_queued = 0;     // hot chunks waiting for a copy slot
  uint64_t promotion_failures = 0;    // copies that failed (CUDA error) or found no room
  uint64_t leases = 0;                // outstanding GPU read leases, all sessions
  uint64_t attached_clients = 0;      // sessions that opened the pool (gpu_attach)
  uint64_t dropped_with_host = 0;     // GPU copies dropped because their host chunk left RAM
};
static_assert(sizeof(GpuStats) == 64);
// Co-scheduled prefill, since the daemon started.
struct PrefillStats {
  uint64_t sessions_started = 0;
  uint64_t sessions_active = 0;
  uint64_t sessions_met = 0;        // ended with every prefix chunk covered
  uint64_t sessions_cancelled = 0;  // ended early, by the engine or its death
  uint64_t chunks_handed_over = 0;  // resident in host RAM
  uint64_t chunks_loaded = 0;       // read from a slower tier
  uint64_t chunks_computed = 0;     // reported by engines
  uint64_t load_failures = 0;       // reads that failed (the engine computed those chunks)
  uint64_t wasted_loads = 0;        // chunks both loaded and computed: 0 by design
  uint32_t last_planned_meeting_point = 0;
  uint32_t last_chunks = 0;  // n of the last session begun
};
static_assert(sizeof(PrefillStats) == 80);
// A tier's read cost as the co-scheduler measures it (moving averages; priors until measured).
struct TierBandwidth {
  Tier tier = Tier::kNone;
  uint8_t resident = 0;  // handed over without I/O
  uint8_t pad[6] = {};
  double read_GBps = 0;
  double latency_us = 0;
  uint64_t samples = 0;
};
static_assert(sizeof(TierBandwidth) == 32);
// One recent prefill session.
struct PrefillRecord {
  uint64_t session = 0;
  uint32_t chunks = 0;
  uint32_t handed_over = 0;
  uint32_t loaded = 0;
  uint32_t computed = 0;
  uint32_t failed = 0;
  uint32_t planned_meeting_point = 0;
  uint32_t actual_meeting_point = 0;
  uint8_t met = 0;
  uint8_t pad[3] = {};
  double predicted_compute_only_ms = 0;
  double predicted_load_only_ms = 0;
  double predicted_bidir_ms = 0;
  double actual_ms = 0;  // begin to every prefix chunk covered (or to the end, if cancelled)
  double saved_ms = 0;   // predicted compute-only prefix time minus actual_ms
};
static_assert(sizeof(PrefillRecord) == 80);
// A tier's chunks as clients see them (logical) and as the tier holds them (stored, after its
// codec): logical / stored is the compression the operator gets.
struct TierCodecStats {
  Tier tier = Tier::kNone;
  uint8_t pad[7] = {};
  uint64_t logical_bytes = 0;
  uint64_t stored_bytes = 0;    // the encoded bytes (slots round them up: see TierStats used_bytes)
  uint64_t encoded_chunks = 0;  // chunks held under a codec other than raw
};
static_assert(sizeof(TierCodecStats) == 32);
// One stage of the NVMe tier's codec pipeline ("encode" before write-down, "decode" after a
// read), as StagePipeline reports it.
struct CodecStageStats {
  char name[16] = {};  // NUL-padded
  uint64_t queue_depth = 0;
  uint64_t max_queue_depth = 0;
  uint64_t queue_capacity = 0;
  uint32_t batch_size = 0;  // the current adaptive batch size
  uint32_t workers = 0;
  uint64_t batches = 0;
  uint64_t items = 0;
  uint64_t rejected = 0;  // jobs refused because the queue was full (the engine waits and retries)
  double last_batch_items = 0;
  double last_latency_us = 0;  // of the last batch
  double mean_latency_us = 0;  // exponentially weighted over batches
};
static_assert(sizeof(CodecStageStats) == 96);
// The NVMe tier's encoded-chunk machinery.
struct CodecCounters {
  uint64_t encodes_in_flight = 0;  // chunks being encoded for write-down
  uint64_t decodes_in_flight = 0;  // chunks read up and being decoded
  uint64_t encode_errors = 0;      // chunks a codec refused (written down as they are instead)
  uint64_t staging_capacity_bytes = 0;
  uint64_t staging_used_bytes = 0;
  uint64_t staged_reads_waiting = 0;  // reads waiting for staging memory
  // Times write-down waited for staging memory or room in the encode queue (backpressure).
  uint64_t encode_waits = 0;
  uint64_t fused_representatives = 0;  // representative blocks fused chunks refer to
  uint64_t fused_representative_bytes = 0;
};
static_assert(sizeof(CodecCounters) == 72);
struct StatsReply {
  std::string daemon_version;
  uint32_t pid = 0;
  uint64_t uptime_ms = 0;
  uint32_t sessions = 0;
  uint32_t namespaces = 0;
  uint64_t read_leases = 0;      // outstanding read leases, all sessions
  uint64_t pending_writes = 0;   // slots leased for writing and not yet committed
  uint64_t requests = 0;
  uint64_t request_errors = 0;
  std::vector<TierStats> tiers;  // gpu, host, nvme, remote
  NvmeStats nvme;
  PrefillStats prefill;
  std::vector<TierBandwidth> tier_bandwidth;   // gpu, host, nvme, remote
  std::vector<PrefillRecord> recent_prefills;  // oldest first
  // Encoded chunks: per tier logical vs stored bytes, the NVMe tier's codec (its default, and
  // per tenant overrides as "tenant=codec"), its encode and decode stages.
  std::vector<TierCodecStats> tier_codecs;  // host, nvme
  std::string nvme_codec;
  std::vector<CodecStageStats> codec_stages;  // encode, decode; empty when no codec runs
  CodecCounters codec;
  GpuStats gpu;
  std::string gpu_status;  // "on: <device>" or "off (<why>)"
  NvmeIoStats nvme_io;
};
struct NamespaceInfo {
  Namespace ns;
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};
struct ListNamespacesReply {
  std::vector<NamespaceInfo> namespaces;
};

void encode(wire::ByteWriter& w, const HelloRequest& m);
void encode(wire::ByteWriter& w, const HelloReply& m);
void encode(wire::ByteWriter& w, const RegisterLayoutRequest& m);
void encode(wire::ByteWriter& w, const RegisterLayoutReply& m);
void encode(wire::ByteWriter& w, const KeysRequest& m);
void encode(wire::ByteWriter& w, const KeysRequestView& m);
void encode(wire::ByteWriter& w, const LookupReply& m);
void encode(wire::ByteWriter& w, const LoadReply& m);
void encode(wire::ByteWriter& w, const PutBeginRequest& m);
void encode(wire::ByteWriter& w, const PutBeginReply& m);
void encode(wire::ByteWriter& w, const SlotsRequest& m);
void encode(wire::ByteWriter& w, const CountReply& m);
void encode(wire::ByteWriter& w, const DropRequest& m);
void encode(wire::ByteWriter& w, const StatsReply& m);
void encode(wire::ByteWriter& w, const ListNamespacesReply& m);
void encode(wire::ByteWriter& w, const PrefetchReply& m);
void encode(wire::ByteWriter& w, const FlushReply& m);
void encode(wire::ByteWriter& w, const VerifyRequest& m);
void encode(wire::ByteWriter& w, const VerifyReply& m);
void encode(wire::ByteWriter& w, const GpuAttachReply& m);

Status decode(wire::ByteReader& r, HelloRequest& m);
Status decode(wire::ByteReader& r, HelloReply& m);
Status decode(wire::ByteReader& r, RegisterLayoutRequest& m);
Status decode(wire::ByteReader& r, RegisterLayoutReply& m);
Status decode(wire::ByteReader& r, KeysRequest& m);
Status decode(wire::ByteReader& r, LookupReply& m);
Status decode(wire::ByteReader& r, LoadReply& m);
Status decode(wire::ByteReader& r, PutBeginRequest& m);
Status decode(wire::ByteReader& r, PutBeginReply& m);
Status decode(wire::ByteReader& r, SlotsRequest& m);
Status decode(wire::ByteReader& r, CountReply& m);
Status decode(wire::ByteReader& r, DropRequest& m);
Status decode(wire::ByteReader& r, StatsReply& m);
Status decode(wire::ByteReader& r, ListNamespacesReply& m);
Status decode(wire::ByteReader& r, PrefetchReply& m);
Status decode(wire::ByteReader& r, FlushReply& m);
Status decode(wire::ByteReader& r, VerifyRequest& m);
Status decode(wire::ByteReader& r, VerifyReply& m);
Status decode(wire::ByteReader& r, GpuAttachReply& m);

}  // namespace tierkv::proto
