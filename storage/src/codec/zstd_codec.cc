// zstd: lossless. The chunk's bytes are first regrouped into planes (codec.h, PlaneMode) so the
// slowly varying sign/exponent bytes of the floats sit together and compress, instead of being
// interleaved with near-random mantissa bytes; then one zstd frame holds the planes.
//
// Params: [0] int8 zstd level, [1] PlaneMode actually used (kNone for 1-byte dtypes), [2] the
// mask of byte planes stored raw (kBytes only; bit j: plane j), [3] how the high plane of a
// 2-byte dtype is coded: 0 bytes, 1 nibble pairs (below). [2] and [3] are 0 in chunks written
// before they existed, which decode as they always did.
// Payload: the raw byte planes (those in the mask, in plane order, N bytes each); with nibble
// pairs, the pair header (below); then one zstd frame whose content is the other planes in plane
// order, or the pair stream (kNone: the chunk's bytes as they are).
//   kBytes: for E-byte elements (E = 2 or 4), plane j (j < E) = byte j of every element. A plane
//           of near-random bytes (the low mantissa byte of fp16/bf16) gains nothing from zstd
//           and is stored raw: decoding reads it in place instead of through zstd and a scratch
//           buffer.
//   Nibble pairs (E = 2, plane 0 raw): the high byte (sign and exponent) of real KV takes few
//           values: a table of the 15 most frequent gives each element a 4-bit rank (15 =
//           escape), and the ranks of elements 2k and 2k+1 make byte k of the pair stream (low
//           nibble first; an odd N pads rank 0). zstd's entropy stage then decodes one symbol per
//           two elements instead of one per element, which is most of zstd's decoding time, at
//           the same ratio. Pair header: uint32 X = escaped elements, uint8 table[16] (table[15]
//           unused), uint8 escaped high bytes[X] in element order.
//   kBits:  the elements are taken 8 at a time (a trailing group is padded with zero elements);
//           for each byte j of the element and each bit b, plane 8j + b holds, per group, one
//           byte whose bit k is bit b of byte j of element k of the group. Planes are
//           ceil(N / 8) bytes each, so the content is E * 8 * ceil(N / 8) bytes.
#include <zstd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <tmmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "codecs.h"

namespace tierkv::storage::codec_internal {

namespace {

// Transposes an 8x8 bit matrix held as 8 bytes (byte k = row k): bit j of byte k moves to bit k
// of byte j. Its own inverse.
inline uint64_t transpose8(uint64_t x) {
  uint64_t t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
  x = x ^ t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
  x = x ^ t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
  x = x ^ t ^ (t << 28);
  return x;
}

// Byte planes <-> elements. planes[j] is plane j (n bytes); SSE2 (baseline x86-64) unpack and
// pack moves 16 elements per step.
void split_planes(const std::byte* in, uint64_t n, uint32_t e, std::byte* const* planes) {
  auto* const* p = reinterpret_cast<uint8_t* const*>(planes);
  const auto* src = reinterpret_cast<const uint8_t*>(in);
  uint64_t i = 0;
#if defined(__SSE2__)
  if (e == 2) {
    const __m128i lo_mask = _mm_set1_epi16(0x00ff);
    for (; i + 16 <= n; i += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16));
      const __m128i lo = _mm_packus_epi16(_mm_and_si128(a, lo_mask), _mm_and_si128(b, lo_mask));
      const __m128i hi = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p[0] + i), lo);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p[1] + i), hi);
    }
  }
#endif
  for (; i < n; ++i) {
    for (uint32_t j = 0; j < e; ++j) p[j][i] = src[i * e + j];
  }
}

void join_planes(const std::byte* const* planes, uint64_t n, uint32_t e, std::byte* out) {
  const auto* const* p = reinterpret_cast<const uint8_t* const*>(planes);
  auto* dst = reinterpret_cast<uint8_t*>(out);
  uint64_t i = 0;
#if defined(__SSE2__)
  if (e == 2) {
    for (; i + 16 <= n; i += 16) {
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0] + i));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1] + i));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i), _mm_unpacklo_epi8(lo, hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i + 16), _mm_unpackhi_epi8(lo, hi));
    }
  } else if (e == 4) {
    for (; i + 16 <= n; i += 16) {
      const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0] + i));
      const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1] + i));
      const __m128i b2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[2] + i));
      const __m128i b3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[3] + i));
      const __m128i l01 = _mm_unpacklo_epi8(b0, b1), h01 = _mm_unpackhi_epi8(b0, b1);
      const __m128i l23 = _mm_unpacklo_epi8(b2, b3), h23 = _mm_unpackhi_epi8(b2, b3);
      auto* o = reinterpret_cast<__m128i*>(dst + 4 * i);
      _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(l01, l23));
      _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(l01, l23));
      _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(h01, h23));
      _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(h01, h23));
    }
  }
#endif
  for (; i < n; ++i) {
    for (uint32_t j = 0; j < e; ++j) dst[i * e + j] = p[j][i];
  }
}

// Whether byte plane j of the n e-byte elements at `in` looks incompressible: the order-0 entropy
// of a sample of its bytes is within 0.1 bit of 8 (zstd would store it nearly as it is, at the
// cost of a pass through it when decoding).
bool looks_random(const std::byte* in, uint64_t n, uint32_t e, uint32_t j) {
  constexpr uint64_t kSample = 65536;
  const uint64_t step = n > kSample ? n / kSample : 1;
  uint32_t hist[256] = {};
  uint64_t count = 0;
  for (uint64_t i = 0; i < n; i += step, ++count) ++hist[std::to_integer<uint8_t>(in[i * e + j])];
  if (count < 4096) return false;  // too few to tell; small chunks go through zstd
  double bits = 0;
  for (uint32_t h : hist) {
    if (h == 0) continue;
    const double q = double(h) / double(count);
    bits -= q * std::log2(q);
  }
  return bits > 7.9;
}

uint64_t bit_plane_bytes(uint64_t n, uint32_t e) { return uint64_t{e} * 8 * ((n + 7) / 8); }

void to_bit_planes(const std::byte* in, uint64_t n, uint32_t e, std::byte* out) {
  const uint64_t groups = (n + 7) / 8;
  for (uint64_t g = 0; g < groups; ++g) {
    for (uint32_t j = 0; j < e; ++j) {
      uint64_t rows = 0;
      for (uint32_t k = 0; k < 8; ++k) {
        const uint64_t i = g * 8 + k;
        const uint64_t byte = i < n ? std::to_integer<uint64_t>(in[i * e + j]) : 0;
        rows |= byte << (8 * k);
      }
      const uint64_t cols = transpose8(rows);
      for (uint32_t b = 0; b < 8; ++b) {
        out[(8 * j + b) * groups + g] = static_cast<std::byte>(cols >> (8 * b));
      }
    }
  }
}

void from_bit_planes(const std::byte* in, uint64_t n, uint32_t e, std::byte* out) {
  const uint64_t groups = (n + 7) / 8;
  for (uint64_t g = 0; g < groups; ++g) {
    for (uint32_t j = 0; j < e; ++j) {
      uint64_t cols = 0;
      for (uint32_t b = 0; b < 8; ++b) {
        cols |= std::to_integer<uint64_t>(in[(8 * j + b) * groups + g]) << (8 * b);
      }
      const uint64_t rows = transpose8(cols);
      for (uint32_t k = 0; k < 8; ++k) {
        const uint64_t i = g * 8 + k;
        if (i < n) out[i * e + j] = static_cast<std::byte>(rows >> (8 * k));
      }
    }
  }
}

uint32_t popcount8(uint8_t m) { return static_cast<uint32_t>(__builtin_popcount(m)); }

// ---- nibble pairs ----------------------------------------------------------------------------

constexpr uint64_t kPairHeader = 4 + 16;
constexpr uint8_t kEscape = 15;

// The high-plane table: the 15 most frequent byte values (ties to the smaller value), and the
// number of elements whose value is not among them.
struct PairTable {
  uint8_t value[16] = {};
  uint8_t rank[256];
  uint64_t escapes = 0;
};

PairTable make_pair_table(const uint8_t* hi, uint64_t n) {
  uint64_t hist[256] = {};
  for (uint64_t i = 0; i < n; ++i) ++hist[hi[i]];
  uint32_t order[256];
  for (uint32_t v = 0; v < 256; ++v) order[v] = v;
  std::stable_sort(order, order + 256, [&](uint32_t a, uint32_t b) { return hist[a] > hist[b]; });
  PairTable t;
  std::memset(t.rank, kEscape, sizeof(t.rank));
  t.escapes = n;
  for (uint32_t r = 0; r < kEscape; ++r) {
    t.value[r] = static_cast<uint8_t>(order[r]);
    t.rank[order[r]] = static_cast<uint8_t>(r);
    t.escapes -= hist[order[r]];
  }
  return t;
}

// Element i's high byte from the pair stream, escapes taken in order from `escaped`.
inline uint8_t pair_value(const uint8_t* pairs, const uint8_t* table, const uint8_t* escaped,
                          uint64_t escapes, uint64_t i, uint64_t& used) {
  const uint32_t q = (pairs[i >> 1] >> ((i & 1) * 4)) & 0xfu;
  if (q != kEscape) return table[q];
  const uint8_t v = used < escapes ? escaped[used] : 0;
  ++used;
  return v;
}

uint64_t join_pairs_scalar(const uint8_t* lo, const uint8_t* pairs, const uint8_t* table,
                           const uint8_t* escaped, uint64_t escapes, uint64_t i0, uint64_t i1,
                           uint64_t used, uint8_t* out) {
  for (uint64_t i = i0; i < i1; ++i) {
    out[2 * i] = lo[i];
    out[2 * i + 1] = pair_value(pairs, table, escaped, escapes, i, used);
  }
  return used;
}

#if defined(__x86_64__)
// 32 elements per step: their 16 pair bytes become 32 high bytes by two table shuffles, which
// are interleaved with the low bytes. A step with an escape falls back to the scalar loop.
__attribute__((target("ssse3"))) uint64_t join_pairs_ssse3(const uint8_t* lo, const uint8_t* pairs,
                                                           const uint8_t* table,
                                                           const uint8_t* escaped, uint64_t escapes,
                                                           uint64_t n, uint8_t* out) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(table));
  const __m128i nib = _mm_set1_epi8(0x0f);
  const __m128i esc = _mm_set1_epi8(static_cast<char>(kEscape));
  uint64_t used = 0;
  uint64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pairs + i / 2));
    const __m128i a = _mm_and_si128(v, nib);
    const __m128i b = _mm_and_si128(_mm_srli_epi16(v, 4), nib);
    if (_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(a, esc), _mm_cmpeq_epi8(b, esc))) != 0) {
      used = join_pairs_scalar(lo, pairs, table, escaped, escapes, i, i + 32, used, out);
      continue;
    }
    const __m128i ha = _mm_shuffle_epi8(t, a);  // elements 2k
    const __m128i hb = _mm_shuffle_epi8(t, b);  // elements 2k + 1
    const __m128i h0 = _mm_unpacklo_epi8(ha, hb);
    const __m128i h1 = _mm_unpackhi_epi8(ha, hb);
    const __m128i l0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + i));
    const __m128i l1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + i + 16));
    auto* o = reinterpret_cast<__m128i*>(out + 2 * i);
    _mm_storeu_si128(o + 0, _mm_unpacklo_epi8(l0, h0));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi8(l0, h0));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi8(l1, h1));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi8(l1, h1));
  }
  return join_pairs_scalar(lo, pairs, table, escaped, escapes, i, n, used, out);
}
#endif

// Writes the n 2-byte elements from the low plane and the pair stream; returns the number of
// escapes the stream holds (the caller checks it against the header's: a mismatch is corrupt
// input, and reads never go past `escapes`).
uint64_t join_pairs(const uint8_t* lo, const uint8_t* pairs, const uint8_t* table,
                    const uint8_t* escaped, uint64_t escapes, uint64_t n, uint8_t* out) {
#if defined(__x86_64__)
  static const bool ssse3 = __builtin_cpu_supports("ssse3");
  if (ssse3) return join_pairs_ssse3(lo, pairs, table, escaped, escapes, n, out);
#endif
  return join_pairs_scalar(lo, pairs, table, escaped, escapes, 0, n, 0, out);
}

class ZstdCodec final : public ChunkCodec {
 public:
  explicit ZstdCodec(const CodecConfig& config)
      : config_(config), cctx_(ZSTD_createCCtx()), dctx_(ZSTD_createDCtx()) {}
  ~ZstdCodec() override {
    ZSTD_freeCCtx(cctx_);
    ZSTD_freeDCtx(dctx_);
  }
  ZstdCodec(const ZstdCodec&) = delete;
  ZstdCodec& operator=(const ZstdCodec&) = delete;

  const CodecConfig& config() const override { return config_; }

  Status encode(const Layout& layout, std::span<const std::byte> chunk,
                EncodeBuffer& out) override {
    TIERKV_RETURN_IF_ERROR(check_encode_input(layout, chunk, /*need_float=*/false));
    if (cctx_ == nullptr) return Status::Internal("zstd: could not create a compression context");
    const uint32_t e = dtype_bytes(layout.dtype);
    const PlaneMode mode = e == 1 ? PlaneMode::kNone : config_.planes;
    const uint64_t n = chunk.size() / e;
    std::span<const std::byte> content = chunk;
    uint8_t raw_mask = 0;
    if (mode == PlaneMode::kBytes) {
      for (uint32_t j = 0; j < e; ++j) {
        if (looks_random(chunk.data(), n, e, j)) raw_mask |= static_cast<uint8_t>(1u << j);
      }
    }
    const uint64_t raw_bytes = popcount8(raw_mask) * n;
    const uint64_t content_size = mode == PlaneMode::kBits    ? bit_plane_bytes(n, e)
                                  : mode == PlaneMode::kBytes ? chunk.size() - raw_bytes
                                                              : chunk.size();
    if (mode != PlaneMode::kNone && planes_.size() < content_size) planes_.resize(content_size);
    size_t bound = ZSTD_compressBound(content_size);
    auto buf = out.resize(kChunkHeaderBytes + raw_bytes + bound);
    if (mode == PlaneMode::kBytes) {
      // One pass: raw planes straight into the payload's front, the others side by side in
      // planes_ (zstd's content).
      std::byte* p[4];
      uint64_t raw_at = kChunkHeaderBytes, zstd_at = 0;
      for (uint32_t j = 0; j < e; ++j) {
        if ((raw_mask >> j) & 1u) {
          p[j] = buf.data() + raw_at;
          raw_at += n;
        } else {
          p[j] = planes_.data() + zstd_at;
          zstd_at += n;
        }
      }
      split_planes(chunk.data(), n, e, p);
      content = {planes_.data(), content_size};
    } else if (mode == PlaneMode::kBits) {
      to_bit_planes(chunk.data(), n, e, planes_.data());
      content = {planes_.data(), content_size};
    }
    // Bytes before the zstd frame: the raw planes, and the pair header if the high plane is
    // coded as nibble pairs (when at most 1/64 of its elements escape the table).
    uint64_t prefix = raw_bytes;
    bool pairs = false;
    if (mode == PlaneMode::kBytes && e == 2 && raw_mask == 1) {
      const auto* hi = reinterpret_cast<const uint8_t*>(planes_.data());
      const PairTable t = make_pair_table(hi, n);
      if (t.escapes * 64 <= n) {
        pairs = true;
        const uint64_t npairs = (n + 1) / 2;
        planes_.resize(n + npairs);
        hi = reinterpret_cast<const uint8_t*>(planes_.data());
        auto* stream = reinterpret_cast<uint8_t*>(planes_.data() + n);
        const size_t pair_bound = ZSTD_compressBound(npairs);
        buf = out.resize(kChunkHeaderBytes + raw_bytes + kPairHeader + t.escapes + pair_bound);
        std::byte* h = buf.data() + kChunkHeaderBytes + raw_bytes;
        store_le<uint32_t>(h, static_cast<uint32_t>(t.escapes));
        std::memcpy(h + 4, t.value, 16);
        auto* escaped = reinterpret_cast<uint8_t*>(h + kPairHeader);
        uint64_t x = 0;
        for (uint64_t k = 0; k < npairs; ++k) {
          const uint64_t i = 2 * k;
          const uint8_t a = t.rank[hi[i]];
          const uint8_t b = i + 1 < n ? t.rank[hi[i + 1]] : 0;
          if (a == kEscape) escaped[x++] = hi[i];
          if (b == kEscape) escaped[x++] = hi[i + 1];
          stream[k] = static_cast<uint8_t>(a | (b << 4));
        }
        prefix = raw_bytes + kPairHeader + t.escapes;
        content = {planes_.data() + n, npairs};
        bound = pair_bound;
      }
    }
    ZSTD_CCtx_reset(cctx_, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, config_.zstd_level);
    const size_t written = ZSTD_compress2(cctx_, buf.data() + kChunkHeaderBytes + prefix, bound,
                                          content.data(), content.size());
    if (ZSTD_isError(written)) {
      return Status::Internal(std::string("zstd compression failed: ") +
                              ZSTD_getErrorName(written));
    }
    buf = out.resize(kChunkHeaderBytes + prefix + written);
    Params params{};
    params[0] = static_cast<std::byte>(static_cast<int8_t>(config_.zstd_level));
    params[1] = static_cast<std::byte>(mode);
    params[3] = static_cast<std::byte>(pairs ? 1 : 0);
    params[2] = static_cast<std::byte>(raw_mask);
    write_header(buf, CodecId::kZstd, layout, params);
    return Status::Ok();
  }

  Status decode(std::span<const std::byte> encoded, std::span<std::byte> out) override {
    auto info = check_decode_input(encoded, CodecId::kZstd, out);
    if (!info.ok()) return info.status();
    if (dctx_ == nullptr) return Status::Internal("zstd: could not create a decompression context");
    const uint32_t e = dtype_bytes(info->layout.dtype);
    const auto mode = static_cast<PlaneMode>(info->params[1]);
    const auto raw_mask = std::to_integer<uint8_t>(info->params[2]);
    if (mode != PlaneMode::kNone && mode != PlaneMode::kBytes && mode != PlaneMode::kBits) {
      return Status::InvalidArgument("zstd chunk plane mode " +
                                     std::to_string(static_cast<int>(mode)) + " is unknown");
    }
    if (mode != PlaneMode::kNone && e == 1) {
      return Status::InvalidArgument("zstd chunk uses planes on a 1-byte dtype");
    }
    if (raw_mask != 0 && (mode != PlaneMode::kBytes || (raw_mask >> e) != 0)) {
      return Status::InvalidArgument("zstd chunk raw-plane mask " + std::to_string(raw_mask) +
                                     " does not fit its " + std::to_string(e) + "-byte planes");
    }
    const uint64_t n = out.size() / e;
    const uint64_t raw_bytes = popcount8(raw_mask) * n;
    const uint64_t expect =
        mode == PlaneMode::kBits ? bit_plane_bytes(n, e) : out.size() - raw_bytes;
    if (info->payload_bytes < raw_bytes) {
      return Status::InvalidArgument("zstd chunk payload of " +
                                     std::to_string(info->payload_bytes) +
                                     " bytes is shorter than its raw planes");
    }
    const std::byte* payload = encoded.data() + kChunkHeaderBytes;
    std::span<const std::byte> frame(payload + raw_bytes, info->payload_bytes - raw_bytes);
    const auto high = std::to_integer<uint8_t>(info->params[3]);
    if (high > 1 || (high == 1 && (mode != PlaneMode::kBytes || e != 2 || raw_mask != 1))) {
      return Status::InvalidArgument("zstd chunk high-plane coding " + std::to_string(high) +
                                     " does not fit its planes");
    }
    if (high == 1) return decode_pairs(frame, payload, n, out);
    std::byte* dst = out.data();
    if (mode != PlaneMode::kNone) {
      if (planes_.size() < expect) planes_.resize(expect);
      dst = planes_.data();
    }
    const size_t got = ZSTD_decompressDCtx(dctx_, dst, expect, frame.data(), frame.size());
    if (ZSTD_isError(got)) {
      return Status::InvalidArgument(std::string("zstd chunk payload does not decompress: ") +
                                     ZSTD_getErrorName(got));
    }
    if (got != expect) {
      return Status::InvalidArgument("zstd chunk decompressed to " + std::to_string(got) +
                                     " bytes, expected " + std::to_string(expect));
    }
    if (mode == PlaneMode::kBytes) {
      const std::byte* p[4];
      uint64_t raw_at = 0, zstd_at = 0;
      for (uint32_t j = 0; j < e; ++j) {
        if ((raw_mask >> j) & 1u) {
          p[j] = payload + raw_at;
          raw_at += n;
        } else {
          p[j] = planes_.data() + zstd_at;
          zstd_at += n;
        }
      }
      join_planes(p, n, e, out.data());
    }
    if (mode == PlaneMode::kBits) from_bit_planes(planes_.data(), n, e, out.data());
    return Status::Ok();
  }

 private:
  // Decodes a nibble-pair chunk: `rest` is the payload after the raw low plane `lo`.
  Status decode_pairs(std::span<const std::byte> rest, const std::byte* lo, uint64_t n,
                      std::span<std::byte> out) {
    if (rest.size() < kPairHeader) {
      return Status::InvalidArgument("zstd chunk payload is too short for its pair table");
    }
    const uint64_t escapes = load_le<uint32_t>(rest.data());
    if (escapes > n || rest.size() - kPairHeader < escapes) {
      return Status::InvalidArgument("zstd chunk says " + std::to_string(escapes) +
                                     " escaped elements, more than it holds");
    }
    const auto* table = reinterpret_cast<const uint8_t*>(rest.data() + 4);
    const auto* escaped = reinterpret_cast<const uint8_t*>(rest.data() + kPairHeader);
    const std::span<const std::byte> frame = rest.subspan(kPairHeader + escapes);
    const uint64_t pairs = (n + 1) / 2;
    if (planes_.size() < pairs) planes_.resize(pairs);
    const size_t got =
        ZSTD_decompressDCtx(dctx_, planes_.data(), pairs, frame.data(), frame.size());
    if (ZSTD_isError(got)) {
      return Status::InvalidArgument(std::string("zstd chunk payload does not decompress: ") +
                                     ZSTD_getErrorName(got));
    }
    if (got != pairs) {
      return Status::InvalidArgument("zstd chunk decompressed to " + std::to_string(got) +
                                     " pair bytes, expected " + std::to_string(pairs));
    }
    const uint64_t used = join_pairs(reinterpret_cast<const uint8_t*>(lo),
                                     reinterpret_cast<const uint8_t*>(planes_.data()), table,
                                     escaped, escapes, n, reinterpret_cast<uint8_t*>(out.data()));
    if (used != escapes) {
      return Status::InvalidArgument("zstd chunk's pair stream escapes " + std::to_string(used) +
                                     " elements, its header says " + std::to_string(escapes));
    }
    return Status::Ok();
  }

  CodecConfig config_;
  ZSTD_CCtx* cctx_;
  ZSTD_DCtx* dctx_;
  std::vector<std::byte> planes_;  // scratch: the plane-ordered content
};

}  // namespace

std::unique_ptr<ChunkCodec> make_zstd_codec(const CodecConfig& config) {
  return std::make_unique<ZstdCodec>(config);
}

}  // namespace tierkv::storage::codec_internal
