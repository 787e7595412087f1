// Chunk codecs: how a tier stores a chunk's bytes — raw, lossless (zstd), quantized (fp8, int8,
// int4) or jointly encoded with similar blocks of other chunks (fused).
//
// Every encoded chunk is self-describing: an 80-byte header (below) names the codec and its
// parameters, the layout the chunk was encoded for, its logical size, and xxh3-64 checksums of
// the header and the payload. Decoding reads only the header, never the current config, so a
// chunk stored under one config decodes correctly after the config changes; ChunkDecoder decodes
// a chunk of any codec. A corrupt, truncated or foreign input is rejected with a Status — never a
// crash, never an out-of-bounds access.
//
// Encoded chunk layout (little-endian):
//   off size
//     0    4  magic "TKVC"
//     4    2  format version (kChunkFormatVersion)
//     6    1  codec id (CodecId)
//     7    1  layout dtype (tierkv::DType)
//     8   16  layout: num_layers, num_kv_heads, head_dim, chunk_tokens (uint32 each)
//    24    8  layout fingerprint (Layout::fingerprint() of the fields above; checked)
//    32    8  logical bytes (= layout.chunk_bytes(); checked)
//    40    8  payload bytes (= encoded size - 80; checked)
//    48   16  codec parameters (per codec, zero-padded; see CodecConfig)
//    64    8  xxh3-64 of the payload
//    72    8  xxh3-64 of header bytes [0, 72)
//    80       payload (per codec; each storage/src/codec/*_codec.cc file documents its own)
//
// Threading: a ChunkCodec (and a ChunkDecoder) owns reusable scratch (zstd contexts, plane
// buffers) and is used by one thread at a time: each encode/decode worker thread owns its own,
// made from the shared config. Nothing is allocated per chunk once the scratch has grown to the
// largest chunk seen, except by the fused encoder for each new representative it stores. The
// fused codec shares a RepresentativeStore, which is thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/status.h"

namespace tierkv::storage {

class RepresentativeStore;

inline constexpr uint32_t kChunkMagic = 0x43564b54;  // "TKVC" little-endian
inline constexpr uint16_t kChunkFormatVersion = 1;
inline constexpr size_t kChunkHeaderBytes = 80;
inline constexpr uint32_t kMaxInt8KeyGroup = 65536;

// Wire-stable: recorded in every encoded chunk.
enum class CodecId : uint8_t {
  kRaw = 1,
  kZstd = 2,
  kFp8 = 3,
  kInt8 = 4,
  kInt4 = 5,
  kFused = 6,
};

std::string_view codec_name(CodecId id);

// How the zstd codec reorders the bytes of 16/32-bit floats before compressing.
enum class PlaneMode : uint8_t {
  kNone = 0,   // elements as they are
  kBytes = 1,  // byte planes: all low bytes, then all high bytes (fp32: 4 planes)
  kBits = 2,   // bit planes: bit b of every element together (16 or 32 planes)
};

// The 8-bit float scheme of the fp8 codec. Wire-stable: an fp8 chunk's params record it (chunks
// written before kAuto existed have 0 there, so they decode as the e4m3 they are).
enum class Fp8Format : uint8_t {
  kE4M3 = 0,  // OCP e4m3, power-of-two scale per token and head (kernels::QuantScheme::kFp8E4M3)
  kAuto = 1,  // a format per token and head, E4M3 to E1M6 (kernels::QuantScheme::kFp8Auto)
};

// What the fused codec stores for a new representative block, and for a reference's residual.
enum class BlockFormat : uint8_t {
  kNone = 0,  // (residual only) no residual: the reference alone
  kRaw = 1,   // the layout's dtype as it is
  kFp8 = 2,   // fp8 e4m3, per-token scale (kernels::QuantScheme::kFp8E4M3)
  kInt8 = 3,  // int8, per-token scale
  kInt4 = 4,  // int4, groups of channels per token (kernels::QuantScheme::kInt4Value)
};

// A parsed codec config. The config string grammar (as in the daemon's config files):
//   raw
//   zstd[:LEVEL][:bytes|bits|none]            LEVEL in [-7, 19], default 1; planes default bytes
//        (on real KV, level 1 with byte planes compresses within 0.3% of level 3 and encodes
//        faster; bit planes compress less and decode 7x slower: `tierkv-bench codec` shows them)
//   fp8[:auto|e4m3]                           8-bit floats with a scale per token and head.
//        auto (default): each token-head row picks the split of its 7 magnitude bits between
//        exponent and mantissa (e4m3, e3m4, e2m5 or e1m6) with the least squared error, and a
//        14-bit scale. Rows of real KV span few binades, so most take 5 or 6 mantissa bits: on
//        real KV its attention-output error is about a quarter of e4m3's, at 1 + 2/head_dim bytes
//        an element. e4m3: OCP e4m3 with a power-of-two scale (1 + 1/head_dim bytes), whose 3
//        mantissa bits cost real KV ~2.6% relative L2 error and about 3x int8's attention-output
//        error; for consumers that read e4m3 natively. tierkv-bench codec shows both.
//   int8[:kGROUP]                             keys per channel (asymmetric, KIVI's keys) over
//        groups of GROUP tokens, GROUP in [0, 65536], default 256 (a whole default chunk);
//        k0: keys per token like values (the scheme before per-channel keys)
//   int4[:gGROUP]                             group size in [1, 4096], default 32
//   fused[:THRESHOLD][:bBLOCK][:rep=FMT][:res=FMT][:rope=BASE][:window=N]
//        THRESHOLD: cosine similarity in [-1, 1] a block needs to become a reference (default
//        0.95); BLOCK: tokens per block (default 16); rep: raw|fp8|int8 (default int8: fp8
//        keys cost too much attention accuracy, see tierkv-bench codec); res:
//        none|fp8|int8|int4 (default int4); rope: the model's RoPE base (theta) if its keys are
//        stored rotated (rotate-half style), so keys are compared position-free; 0 (default)
//        compares keys as stored; window: representatives of earlier batches each encoder keeps
//        searchable per (layer, head, K/V) (default 16). Each searchable representative costs
//        the encoder (BLOCK + 1) * head_dim * 4 bytes, so an encoder holds about
//        (window + blocks of the current batch) * layers * 2 * kv_heads * (BLOCK + 1) * head_dim
//        * 4 bytes: for a 30-layer, 3-head, 64-dim model at the defaults, 12.5 MB for the window
//        and up to 12.5 MB more per 256-token chunk of the current batch.
// to_string() gives the canonical form, which parse() accepts.
struct CodecConfig {
  CodecId id = CodecId::kRaw;
  int zstd_level = 1;
  PlaneMode planes = PlaneMode::kBytes;
  uint32_t int4_group = 32;
  uint32_t int8_key_group = 256;
  Fp8Format fp8_format = Fp8Format::kAuto;
  float fused_threshold = 0.95f;
  uint32_t fused_block_tokens = 16;
  BlockFormat fused_rep = BlockFormat::kInt8;
  BlockFormat fused_residual = BlockFormat::kInt4;
  float fused_rope_theta = 0.0f;
  uint32_t fused_window = 16;

  static Result<CodecConfig> parse(std::string_view spec);
  [[nodiscard]] std::string to_string() const;
  friend bool operator==(const CodecConfig&, const CodecConfig&) = default;
};

// A growable output buffer that keeps its capacity across uses, so encoding chunk after chunk
// into the same buffer allocates only while it grows. Owned by one thread.
//
// It can also write into memory the caller owns (use_memory()): an encoder then writes its output
// straight into, say, an I/O staging buffer. Should the output grow past that memory, what it
// holds moves into the buffer's own storage and spilled() says so; the caller copies it back if
// the final size fits.
class EncodeBuffer {
 public:
  // Makes the buffer `n` bytes long and returns it; the first min(old size, n) bytes keep their
  // contents, the rest are unspecified.
  std::span<std::byte> resize(size_t n);
  [[nodiscard]] std::span<const std::byte> bytes() const {
    return {external_ ? external_ : buf_.data(), size_};
  }
  [[nodiscard]] std::span<std::byte> mutable_bytes() {
    return {external_ ? external_ : buf_.data(), size_};
  }
  [[nodiscard]] size_t size() const { return size_; }
  void clear() { size_ = 0; }

  // Empties the buffer and makes it write into `memory` (caller-owned, must outlive the use)
  // until a resize() outgrows it or use_own_memory() is called.
  void use_memory(std::span<std::byte> memory);
  void use_own_memory();
  // True when the last use_memory() was outgrown: the bytes now lie in the buffer's own storage.
  [[nodiscard]] bool spilled() const { return spilled_; }

 private:
  std::vector<std::byte> buf_;
  size_t size_ = 0;
  std::byte* external_ = nullptr;
  size_t external_bytes_ = 0;
  bool spilled_ = false;
};

// What an encoded chunk's header says, after its checks passed.
struct EncodedChunkInfo {
  CodecId codec = CodecId::kRaw;
  Layout layout;
  uint64_t logical_bytes = 0;
  uint64_t payload_bytes = 0;
  std::array<std::byte, 16> params{};
};

// Parses and checks the header of `encoded`: magic, version, known codec, valid layout whose
// fingerprint and size match, payload size equal to what follows the header, header checksum.
// Does not verify the payload checksum (verify_chunk does).
Result<EncodedChunkInfo> inspect_chunk(std::span<const std::byte> encoded);
// inspect_chunk plus the payload checksum.
Result<EncodedChunkInfo> verify_chunk(std::span<const std::byte> encoded);

// One chunk to encode: its bytes in the canonical layout and the absolute position of its first
// token in its prompt (chunk index * chunk_tokens). Only the fused codec uses the position (to
// compare RoPE-rotated keys position-free); a wrong position costs compression, never
// correctness.
struct ChunkInput {
  std::span<const std::byte> bytes;
  uint64_t first_token = 0;
};

// One codec, configured. Not thread-safe: one owner thread (it holds scratch).
class ChunkCodec {
 public:
  virtual ~ChunkCodec() = default;
  [[nodiscard]] virtual const CodecConfig& config() const = 0;

  // Encodes `chunk` (exactly layout.chunk_bytes() bytes in the canonical layout, dtype fp16, bf16
  // or fp32 for the lossy codecs) into `out`, header included. The layout must validate().
  virtual Status encode(const Layout& layout, std::span<const std::byte> chunk,
                        EncodeBuffer& out) = 0;

  // Encodes several chunks committed together. The fused codec matches blocks across all of
  // them (batched fusion) and, within a request, across its chunks (chunked fusion); the others
  // encode one by one. outs.size() == chunks.size(). On error no output is valid and the fused
  // codec holds no reference for any of them.
  virtual Status encode_batch(const Layout& layout, std::span<const ChunkInput> chunks,
                              std::span<EncodeBuffer> outs);

  // Decodes an encoded chunk of this codec into `out` (exactly its logical size), verifying its
  // header and checksum first.
  virtual Status decode(std::span<const std::byte> encoded, std::span<std::byte> out) = 0;

  // Drops what a stored chunk holds beyond its own bytes (the fused codec's references to
  // representatives) when the chunk is deleted. An encoded chunk holds one set of references:
  // a second stored copy of the same bytes (another tier) takes its own with retain(), and each
  // copy releases once. No-ops for the other codecs. On error (a reference already gone) the
  // other references are still dropped.
  virtual Status release(std::span<const std::byte> encoded);
  // Takes another set of the references `encoded` holds (for a copy of it). All or nothing.
  virtual Status retain(std::span<const std::byte> encoded);
};

// Makes a codec. The fused codec needs `reps` (shared, must outlive the codec); the others ignore
// it.
Result<std::unique_ptr<ChunkCodec>> make_codec(const CodecConfig& config,
                                               RepresentativeStore* reps = nullptr);
Result<std::unique_ptr<ChunkCodec>> make_codec(std::string_view spec,
                                               RepresentativeStore* reps = nullptr);

// Decodes a chunk of any codec, choosing by its header; keeps one codec instance per codec id
// for its scratch. Not thread-safe: one per thread.
class ChunkDecoder {
 public:
  explicit ChunkDecoder(RepresentativeStore* reps = nullptr) : reps_(reps) {}
  Status decode(std::span<const std::byte> encoded, std::span<std::byte> out);
  // Releases / retains what the chunk holds in the representative store (see ChunkCodec).
  Status release(std::span<const std::byte> encoded);
  Status retain(std::span<const std::byte> encoded);

 private:
  Result<ChunkCodec*> codec_for(std::span<const std::byte> encoded);
  RepresentativeStore* reps_;
  std::unique_ptr<ChunkCodec> codecs_[8];
};

// The codecs of a tier: the config it encodes new chunks with (which may change at any time)
// and a decoder for chunks encoded under any config. Thread safety: set_default() and
// make_encoder() may race (a mutex guards the default); each thread makes its own encoder and
// decoder.
class CodecRegistry {
 public:
  explicit CodecRegistry(RepresentativeStore* reps = nullptr);
  // Validates and installs the config new chunks are encoded with.
  Status set_default(std::string_view spec);
  [[nodiscard]] CodecConfig default_config() const;
  Result<std::unique_ptr<ChunkCodec>> make_encoder() const;
  [[nodiscard]] ChunkDecoder make_decoder() const { return ChunkDecoder(reps_); }

 private:
  RepresentativeStore* reps_;
  mutable std::mutex mu_;
  CodecConfig default_;  // guarded by mu_
};

}  // namespace tierkv::storage
