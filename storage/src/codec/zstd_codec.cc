// zstd: lossless. The chunk's bytes are first regrouped into planes (codec.h, PlaneMode) so the
// slowly varying sign/exponent bytes of the floats sit together and compress, instead of being
// interleaved with near-random mantissa bytes; then one zstd frame holds the planes.
//
// Params: [0] int8 zstd level, [1] PlaneMode actually used (kNone for 1-byte dtypes).
// Payload: one zstd frame whose content is the plane-ordered bytes (exactly the logical size).
//   kBytes: for E-byte elements (E = 2 or 4), plane j (j < E) = byte j of every element.
//   kBits:  the elements are taken 8 at a time (a trailing group is padded with zero elements);
//           for each byte j of the element and each bit b, plane 8j + b holds, per group, one
//           byte whose bit k is bit b of byte j of element k of the group. Planes are
//           ceil(N / 8) bytes each, so the content is E * 8 * ceil(N / 8) bytes.
#include <zstd.h>

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

void to_byte_planes(const std::byte* in, uint64_t n, uint32_t e, std::byte* out) {
  if (e == 2) {
    auto* lo = reinterpret_cast<uint8_t*>(out);
    auto* hi = lo + n;
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, in + 2 * i, 2);
      lo[i] = static_cast<uint8_t>(v);
      hi[i] = static_cast<uint8_t>(v >> 8);
    }
    return;
  }
  for (uint32_t j = 0; j < e; ++j) {
    for (uint64_t i = 0; i < n; ++i) out[j * n + i] = in[i * e + j];
  }
}

void from_byte_planes(const std::byte* in, uint64_t n, uint32_t e, std::byte* out) {
  if (e == 2) {
    const auto* lo = reinterpret_cast<const uint8_t*>(in);
    const auto* hi = lo + n;
    auto* o = reinterpret_cast<uint8_t*>(out);
    for (uint64_t i = 0; i < n; ++i) {
      o[2 * i] = lo[i];
      o[2 * i + 1] = hi[i];
    }
    return;
  }
  for (uint32_t j = 0; j < e; ++j) {
    for (uint64_t i = 0; i < n; ++i) out[i * e + j] = in[j * n + i];
  }
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

uint64_t content_bytes(PlaneMode mode, uint64_t logical, uint32_t e) {
  return mode == PlaneMode::kBits ? bit_plane_bytes(logical / e, e) : logical;
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
    if (mode != PlaneMode::kNone) {
      const uint64_t bytes = content_bytes(mode, chunk.size(), e);
      if (planes_.size() < bytes) planes_.resize(bytes);
      if (mode == PlaneMode::kBytes) {
        to_byte_planes(chunk.data(), n, e, planes_.data());
      } else {
        to_bit_planes(chunk.data(), n, e, planes_.data());
      }
      content = {planes_.data(), bytes};
    }
    const size_t bound = ZSTD_compressBound(content.size());
    auto buf = out.resize(kChunkHeaderBytes + bound);
    ZSTD_CCtx_reset(cctx_, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, config_.zstd_level);
    const size_t written = ZSTD_compress2(cctx_, buf.data() + kChunkHeaderBytes, bound,
                                          content.data(), content.size());
    if (ZSTD_isError(written)) {
      return Status::Internal(std::string("zstd compression failed: ") +
                              ZSTD_getErrorName(written));
    }
    buf = out.resize(kChunkHeaderBytes + written);
    Params params{};
    params[0] = static_cast<std::byte>(static_cast<int8_t>(config_.zstd_level));
    params[1] = static_cast<std::byte>(mode);
    write_header(buf, CodecId::kZstd, layout, params);
    return Status::Ok();
  }

  Status decode(std::span<const std::byte> encoded, std::span<std::byte> out) override {
    auto info = check_decode_input(encoded, CodecId::kZstd, out);
    if (!info.ok()) return info.status();
    if (dctx_ == nullptr) return Status::Internal("zstd: could not create a decompression context");
    const uint32_t e = dtype_bytes(info->layout.dtype);
    const auto mode = static_cast<PlaneMode>(info->params[1]);
    if (mode != PlaneMode::kNone && mode != PlaneMode::kBytes && mode != PlaneMode::kBits) {
      return Status::InvalidArgument("zstd chunk plane mode " +
                                     std::to_string(static_cast<int>(mode)) + " is unknown");
    }
    if (mode != PlaneMode::kNone && e == 1) {
      return Status::InvalidArgument("zstd chunk uses planes on a 1-byte dtype");
    }
    const uint64_t expect = content_bytes(mode, out.size(), e);
    std::byte* dst = out.data();
    if (mode != PlaneMode::kNone) {
      if (planes_.size() < expect) planes_.resize(expect);
      dst = planes_.data();
    }
    const std::byte* src = encoded.data() + kChunkHeaderBytes;
    const size_t got = ZSTD_decompressDCtx(dctx_, dst, expect, src, info->payload_bytes);
    if (ZSTD_isError(got)) {
      return Status::InvalidArgument(std::string("zstd chunk payload does not decompress: ") +
                                     ZSTD_getErrorName(got));
    }
    if (got != expect) {
      return Status::InvalidArgument("zstd chunk decompressed to " + std::to_string(got) +
                                     " bytes, expected " + std::to_string(expect));
    }
    const uint64_t n = out.size() / e;
    if (mode == PlaneMode::kBytes) from_byte_planes(planes_.data(), n, e, out.data());
    if (mode == PlaneMode::kBits) from_bit_planes(planes_.data(), n, e, out.data());
    return Status::Ok();
  }

 private:
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
