#include "chunk_format.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "tierkv/kernels/half.h"

namespace tierkv::storage {

namespace ci = codec_internal;

std::string_view codec_name(CodecId id) {
  switch (id) {
    case CodecId::kRaw:
      return "raw";
    case CodecId::kZstd:
      return "zstd";
    case CodecId::kFp8:
      return "fp8";
    case CodecId::kInt8:
      return "int8";
    case CodecId::kInt4:
      return "int4";
    case CodecId::kFused:
      return "fused";
  }
  return "unknown";
}

std::span<std::byte> EncodeBuffer::resize(size_t n) {
  if (external_ != nullptr) {
    if (n <= external_bytes_) {
      size_ = n;
      return {external_, n};
    }
    // Outgrown: what the caller's memory holds moves here.
    if (buf_.size() < n) buf_.resize(n);
    std::memcpy(buf_.data(), external_, std::min(size_, n));
    external_ = nullptr;
    external_bytes_ = 0;
    spilled_ = true;
  }
  if (buf_.size() < n) buf_.resize(n);
  size_ = n;
  return {buf_.data(), n};
}

void EncodeBuffer::use_memory(std::span<std::byte> memory) {
  external_ = memory.data();
  external_bytes_ = memory.size();
  size_ = 0;
  spilled_ = false;
}

void EncodeBuffer::use_own_memory() {
  external_ = nullptr;
  external_bytes_ = 0;
  size_ = 0;
  spilled_ = false;
}

namespace {

constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffCodec = 6;
constexpr size_t kOffDtype = 7;
constexpr size_t kOffLayout = 8;
constexpr size_t kOffFingerprint = 24;
constexpr size_t kOffLogical = 32;
constexpr size_t kOffPayload = 40;
constexpr size_t kOffParams = 48;
constexpr size_t kOffPayloadHash = 64;
constexpr size_t kOffHeaderHash = 72;
static_assert(kOffHeaderHash + 8 == kChunkHeaderBytes);

bool known_codec(uint8_t id) { return id >= 1 && id <= 6; }

}  // namespace

Result<EncodedChunkInfo> inspect_chunk(std::span<const std::byte> encoded) {
  if (encoded.size() < kChunkHeaderBytes) {
    return Status::InvalidArgument("encoded chunk is " + std::to_string(encoded.size()) +
                                   " bytes, shorter than its " + std::to_string(kChunkHeaderBytes) +
                                   "-byte header");
  }
  const std::byte* h = encoded.data();
  const auto magic = ci::load_le<uint32_t>(h + kOffMagic);
  if (magic != kChunkMagic) {
    return Status::InvalidArgument("encoded chunk magic is 0x" + [&] {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "%08x", magic);
      return std::string(buf);
    }() + ", not a tierkv chunk");
  }
  const uint64_t header_hash = XXH3_64bits(h, kOffHeaderHash);
  if (header_hash != ci::load_le<uint64_t>(h + kOffHeaderHash)) {
    return Status::InvalidArgument("encoded chunk header checksum mismatch (corrupt header)");
  }
  const auto version = ci::load_le<uint16_t>(h + kOffVersion);
  if (version != kChunkFormatVersion) {
    return Status::InvalidArgument("encoded chunk format version " + std::to_string(version) +
                                   " is not supported (this build reads version " +
                                   std::to_string(kChunkFormatVersion) + ")");
  }
  const auto codec = ci::load_le<uint8_t>(h + kOffCodec);
  if (!known_codec(codec)) {
    return Status::InvalidArgument("encoded chunk codec id " + std::to_string(codec) +
                                   " is not a known codec");
  }
  EncodedChunkInfo info;
  info.codec = static_cast<CodecId>(codec);
  info.layout.dtype = static_cast<DType>(ci::load_le<uint8_t>(h + kOffDtype));
  info.layout.num_layers = ci::load_le<uint32_t>(h + kOffLayout);
  info.layout.num_kv_heads = ci::load_le<uint32_t>(h + kOffLayout + 4);
  info.layout.head_dim = ci::load_le<uint32_t>(h + kOffLayout + 8);
  info.layout.chunk_tokens = ci::load_le<uint32_t>(h + kOffLayout + 12);
  if (Status s = info.layout.validate(); !s.ok()) {
    return Status::InvalidArgument("encoded chunk header: " + s.message());
  }
  if (info.layout.fingerprint() != ci::load_le<uint64_t>(h + kOffFingerprint)) {
    return Status::InvalidArgument("encoded chunk layout fingerprint does not match its layout " +
                                   info.layout.to_string());
  }
  info.logical_bytes = ci::load_le<uint64_t>(h + kOffLogical);
  if (info.logical_bytes != info.layout.chunk_bytes()) {
    return Status::InvalidArgument(
        "encoded chunk logical size " + std::to_string(info.logical_bytes) +
        " differs from its layout's " + std::to_string(info.layout.chunk_bytes()));
  }
  info.payload_bytes = ci::load_le<uint64_t>(h + kOffPayload);
  if (info.payload_bytes != encoded.size() - kChunkHeaderBytes) {
    return Status::InvalidArgument(
        "encoded chunk payload is " + std::to_string(encoded.size() - kChunkHeaderBytes) +
        " bytes, its header says " + std::to_string(info.payload_bytes) + " (truncated or padded)");
  }
  std::memcpy(info.params.data(), h + kOffParams, info.params.size());
  return info;
}

Result<EncodedChunkInfo> verify_chunk(std::span<const std::byte> encoded) {
  auto info = inspect_chunk(encoded);
  if (!info.ok()) return info;
  const uint64_t hash = XXH3_64bits(encoded.data() + kChunkHeaderBytes, info->payload_bytes);
  if (hash != ci::load_le<uint64_t>(encoded.data() + kOffPayloadHash)) {
    return Status::InvalidArgument("encoded chunk payload checksum mismatch (corrupt payload)");
  }
  return info;
}

namespace codec_internal {

void write_header(std::span<std::byte> out, CodecId codec, const Layout& layout,
                  const Params& params) {
  std::byte* h = out.data();
  std::memset(h, 0, kChunkHeaderBytes);
  store_le<uint32_t>(h + kOffMagic, kChunkMagic);
  store_le<uint16_t>(h + kOffVersion, kChunkFormatVersion);
  store_le<uint8_t>(h + kOffCodec, static_cast<uint8_t>(codec));
  store_le<uint8_t>(h + kOffDtype, static_cast<uint8_t>(layout.dtype));
  store_le<uint32_t>(h + kOffLayout, layout.num_layers);
  store_le<uint32_t>(h + kOffLayout + 4, layout.num_kv_heads);
  store_le<uint32_t>(h + kOffLayout + 8, layout.head_dim);
  store_le<uint32_t>(h + kOffLayout + 12, layout.chunk_tokens);
  store_le<uint64_t>(h + kOffFingerprint, layout.fingerprint());
  store_le<uint64_t>(h + kOffLogical, layout.chunk_bytes());
  const uint64_t payload = out.size() - kChunkHeaderBytes;
  store_le<uint64_t>(h + kOffPayload, payload);
  std::memcpy(h + kOffParams, params.data(), params.size());
  store_le<uint64_t>(h + kOffPayloadHash, XXH3_64bits(h + kChunkHeaderBytes, payload));
  store_le<uint64_t>(h + kOffHeaderHash, XXH3_64bits(h, kOffHeaderHash));
}

Status check_encode_input(const Layout& layout, std::span<const std::byte> chunk, bool need_float) {
  TIERKV_RETURN_IF_ERROR(layout.validate());
  if (chunk.size() != layout.chunk_bytes()) {
    return Status::InvalidArgument("chunk is " + std::to_string(chunk.size()) + " bytes, layout " +
                                   layout.to_string() + " needs " +
                                   std::to_string(layout.chunk_bytes()));
  }
  if (need_float && !kernels::is_float_kv_dtype(layout.dtype)) {
    return Status::InvalidArgument("layout dtype " + std::string(dtype_name(layout.dtype)) +
                                   " cannot be quantized or fused: only fp16, bf16, fp32 can");
  }
  return Status::Ok();
}

Result<EncodedChunkInfo> check_decode_input(std::span<const std::byte> encoded, CodecId expected,
                                            std::span<std::byte> out) {
  auto info = verify_chunk(encoded);
  if (!info.ok()) return info;
  if (info->codec != expected) {
    return Status::InvalidArgument("encoded chunk is " + std::string(codec_name(info->codec)) +
                                   ", this decoder is " + std::string(codec_name(expected)));
  }
  if (out.size() != info->logical_bytes) {
    return Status::InvalidArgument("decode output is " + std::to_string(out.size()) +
                                   " bytes, the chunk's logical size is " +
                                   std::to_string(info->logical_bytes));
  }
  return info;
}

}  // namespace codec_internal

}  // namespace tierkv::storage
