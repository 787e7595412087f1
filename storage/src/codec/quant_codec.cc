// fp8, int8, int4: each layer's K slab and V slab quantized by the kernels' reference
// (tierkv/kernels/quantize.h documents the byte layout and error bound of each scheme).
//
// Params: [0, 4) one uint32. int4: the group size. int8: the key group size G, 0 for keys per
// token (chunks written before keys were quantized per channel have all-zero params, so they
// decode as they were written). fp8: the Fp8Format, 0 for e4m3 (as chunks written before the
// auto format have).
// Payload: for each layer: encoded K slab, then encoded V slab (quantize.h's encoded-slab layout,
// metadata then payload), slab shape [chunk_tokens][num_kv_heads][head_dim].
//   fp8:  K and V kFp8Auto (a format and scale per token and head), or kFp8E4M3
//         (per-token-per-head power-of-two scale)
//   int8: K kInt8Key (asymmetric, per channel over groups of G tokens: KIVI's keys) when G > 0,
//         else kInt8 (per-token-per-head scale); V kInt8 (per-token-per-head scale). On real KV
//         per-channel keys cut the attention-output error about 2x at the same size
//         (tierkv-bench codec shows int8 and int8:k0).
//   int4: K kInt4Key (groups of G tokens per channel), V kInt4Value (groups of G channels per
//         token), as KIVI does.
// Decoding writes the layout's dtype (rounded to nearest even, saturating).
#include <vector>

#include "codecs.h"
#include "tierkv/kernels/half.h"
#include "tierkv/kernels/quantize.h"

namespace tierkv::storage::codec_internal {

namespace {

using kernels::QuantScheme;
using kernels::QuantSpec;
using kernels::SlabShape;

struct Schemes {
  QuantSpec k;
  QuantSpec v;
};

// `param` is the chunk's params word: a group size, or for fp8 its Fp8Format.
Schemes schemes_for(CodecId id, uint32_t param) {
  const uint32_t group = param;
  switch (id) {
    case CodecId::kInt8:
      if (group > 0) return {{QuantScheme::kInt8Key, group}, {QuantScheme::kInt8, 0}};
      return {{QuantScheme::kInt8, 0}, {QuantScheme::kInt8, 0}};
    case CodecId::kInt4:
      return {{QuantScheme::kInt4Key, group}, {QuantScheme::kInt4Value, group}};
    default: {
      const QuantScheme fp8 = param == static_cast<uint32_t>(Fp8Format::kAuto)
                                  ? QuantScheme::kFp8Auto
                                  : QuantScheme::kFp8E4M3;
      return {{fp8, 0}, {fp8, 0}};
    }
  }
}

SlabShape slab_shape(const Layout& layout) {
  return {layout.chunk_tokens, layout.num_kv_heads, layout.head_dim};
}

class QuantCodec final : public ChunkCodec {
 public:
  explicit QuantCodec(const CodecConfig& config) : config_(config) {}
  const CodecConfig& config() const override { return config_; }

  Status encode(const Layout& layout, std::span<const std::byte> chunk,
                EncodeBuffer& out) override {
    TIERKV_RETURN_IF_ERROR(check_encode_input(layout, chunk, /*need_float=*/true));
    const Schemes s = schemes_for(config_.id, param());
    const SlabShape shape = slab_shape(layout);
    TIERKV_RETURN_IF_ERROR(kernels::validate_quant(s.k, shape));
    TIERKV_RETURN_IF_ERROR(kernels::validate_quant(s.v, shape));
    const uint64_t kq = kernels::quant_sizes(s.k, shape).total();
    const uint64_t vq = kernels::quant_sizes(s.v, shape).total();
    const uint64_t need = std::max(kernels::quant_scratch_floats(s.k, shape),
                                   kernels::quant_scratch_floats(s.v, shape));
    if (scratch_.size() < need) scratch_.resize(need);
    auto buf = out.resize(kChunkHeaderBytes + layout.num_layers * (kq + vq));
    const uint64_t slab = chunk.size() / (2 * uint64_t{layout.num_layers});
    std::byte* o = buf.data() + kChunkHeaderBytes;
    for (uint32_t l = 0; l < layout.num_layers; ++l) {
      const std::byte* k = chunk.data() + 2 * l * slab;
      TIERKV_RETURN_IF_ERROR(
          kernels::quantize_slab(s.k, shape, layout.dtype, {k, slab}, {o, kq}, scratch_));
      o += kq;
      TIERKV_RETURN_IF_ERROR(
          kernels::quantize_slab(s.v, shape, layout.dtype, {k + slab, slab}, {o, vq}, scratch_));
      o += vq;
    }
    Params params{};
    store_le<uint32_t>(params.data(), param());
    write_header(buf, config_.id, layout, params);
    return Status::Ok();
  }

  Status decode(std::span<const std::byte> encoded, std::span<std::byte> out) override {
    auto info = check_decode_input(encoded, config_.id, out);
    if (!info.ok()) return info.status();
    const Layout& layout = info->layout;
    if (!kernels::is_float_kv_dtype(layout.dtype)) {
      return Status::InvalidArgument("quantized chunk has non-float dtype " +
                                     std::string(dtype_name(layout.dtype)));
    }
    const uint32_t param = load_le<uint32_t>(info->params.data());
    const uint32_t group = param;
    if (config_.id == CodecId::kInt4 && (group == 0 || group > 4096)) {
      return Status::InvalidArgument("int4 chunk group size " + std::to_string(group) +
                                     " is out of range [1, 4096]");
    }
    if (config_.id == CodecId::kInt8 && group > kMaxInt8KeyGroup) {
      return Status::InvalidArgument("int8 chunk key group size " + std::to_string(group) +
                                     " is out of range [0, " + std::to_string(kMaxInt8KeyGroup) +
                                     "]");
    }
    if (config_.id == CodecId::kFp8 && param != static_cast<uint32_t>(Fp8Format::kE4M3) &&
        param != static_cast<uint32_t>(Fp8Format::kAuto)) {
      return Status::InvalidArgument("fp8 chunk has unknown format " + std::to_string(param));
    }
    const Schemes s = schemes_for(config_.id, param);
    const SlabShape shape = slab_shape(layout);
    const uint64_t kq = kernels::quant_sizes(s.k, shape).total();
    const uint64_t vq = kernels::quant_sizes(s.v, shape).total();
    if (info->payload_bytes != layout.num_layers * (kq + vq)) {
      return Status::InvalidArgument(std::string(codec_name(config_.id)) + " chunk payload is " +
                                     std::to_string(info->payload_bytes) + " bytes, expected " +
                                     std::to_string(layout.num_layers * (kq + vq)));
    }
    const uint64_t slab = out.size() / (2 * uint64_t{layout.num_layers});
    const std::byte* in = encoded.data() + kChunkHeaderBytes;
    for (uint32_t l = 0; l < layout.num_layers; ++l) {
      std::byte* k = out.data() + 2 * l * slab;
      TIERKV_RETURN_IF_ERROR(
          kernels::dequantize_slab(s.k, shape, {in, kq}, layout.dtype, {k, slab}));
      in += kq;
      TIERKV_RETURN_IF_ERROR(
          kernels::dequantize_slab(s.v, shape, {in, vq}, layout.dtype, {k + slab, slab}));
      in += vq;
    }
    return Status::Ok();
  }

 private:
  // The word the chunk's params record: the group size, or fp8's format.
  [[nodiscard]] uint32_t param() const {
    switch (config_.id) {
      case CodecId::kInt4:
        return config_.int4_group;
      case CodecId::kInt8:
        return config_.int8_key_group;
      default:
        return static_cast<uint32_t>(config_.fp8_format);
    }
  }

  CodecConfig config_;
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<ChunkCodec> make_quant_codec(const CodecConfig& config) {
  return std::make_unique<QuantCodec>(config);
}

}  // namespace tierkv::storage::codec_internal
