// Config strings, the codec factory, ChunkDecoder and CodecRegistry.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <vector>

#include "codecs.h"

namespace tierkv::storage {

namespace ci = codec_internal;

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// 'text', built by appending (GCC 12 warns falsely on "'" + std::string(...)).
std::string quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '\'';
  out += text;
  out += '\'';
  return out;
}

Status bad(std::string_view spec, const std::string& why) {
  return Status::InvalidArgument("codec '" + std::string(spec) + "': " + why);
}

std::string_view block_format_name(BlockFormat f) {
  switch (f) {
    case BlockFormat::kNone:
      return "none";
    case BlockFormat::kRaw:
      return "raw";
    case BlockFormat::kFp8:
      return "fp8";
    case BlockFormat::kInt8:
      return "int8";
    case BlockFormat::kInt4:
      return "int4";
  }
  return "?";
}

bool parse_block_format(std::string_view s, BlockFormat& out) {
  for (BlockFormat f : {BlockFormat::kNone, BlockFormat::kRaw, BlockFormat::kFp8,
                        BlockFormat::kInt8, BlockFormat::kInt4}) {
    if (block_format_name(f) == s) {
      out = f;
      return true;
    }
  }
  return false;
}

std::string format_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v));
  return buf;
}

}  // namespace

Result<CodecConfig> CodecConfig::parse(std::string_view spec) {
  const auto parts = split(spec, ':');
  CodecConfig c;
  const std::string_view name = parts[0];
  if (name == "raw") {
    if (parts.size() > 1) return bad(spec, "raw takes no parameters");
    return c;
  }
  if (name == "fp8") {
    c.id = CodecId::kFp8;
    if (parts.size() > 2 || (parts.size() == 2 && parts[1] != "auto" && parts[1] != "e4m3")) {
      return bad(spec, "fp8 takes one parameter at most: auto or e4m3");
    }
    if (parts.size() == 2 && parts[1] == "e4m3") c.fp8_format = Fp8Format::kE4M3;
    return c;
  }
  if (name == "int8") {
    c.id = CodecId::kInt8;
    for (size_t i = 1; i < parts.size(); ++i) {
      const auto p = parts[i];
      if (p.size() < 2 || p[0] != 'k' || !parse_number(p.substr(1), c.int8_key_group) ||
          c.int8_key_group > kMaxInt8KeyGroup) {
        return bad(spec, quoted(p) + " is not a key group size kN with N in [0, " +
                             std::to_string(kMaxInt8KeyGroup) + "]");
      }
    }
    return c;
  }
  if (name == "zstd") {
    c.id = CodecId::kZstd;
    for (size_t i = 1; i < parts.size(); ++i) {
      const auto p = parts[i];
      if (p == "bytes" || p == "bits" || p == "none") {
        c.planes = p == "bytes"  ? PlaneMode::kBytes
                   : p == "bits" ? PlaneMode::kBits
                                 : PlaneMode::kNone;
      } else if (!parse_number(p, c.zstd_level) || c.zstd_level < -7 || c.zstd_level > 19) {
        return bad(spec, quoted(p) + " is neither a level in [-7, 19] nor bytes|bits|none");
      }
    }
    return c;
  }
  if (name == "int4") {
    c.id = CodecId::kInt4;
    for (size_t i = 1; i < parts.size(); ++i) {
      const auto p = parts[i];
      if (p.size() < 2 || p[0] != 'g' || !parse_number(p.substr(1), c.int4_group) ||
          c.int4_group == 0 || c.int4_group > 4096) {
        return bad(spec, quoted(p) + " is not a group size gN with N in [1, 4096]");
      }
    }
    return c;
  }
  if (name == "fused") {
    c.id = CodecId::kFused;
    for (size_t i = 1; i < parts.size(); ++i) {
      const auto p = parts[i];
      const size_t eq = p.find('=');
      if (eq != std::string_view::npos) {
        const auto key = p.substr(0, eq);
        const auto val = p.substr(eq + 1);
        if (key == "rep") {
          if (!parse_block_format(val, c.fused_rep) || c.fused_rep == BlockFormat::kNone ||
              c.fused_rep == BlockFormat::kInt4) {
            return bad(spec, "rep=" + std::string(val) + " is not one of raw, fp8, int8");
          }
        } else if (key == "res") {
          if (!parse_block_format(val, c.fused_residual) || c.fused_residual == BlockFormat::kRaw) {
            return bad(spec, "res=" + std::string(val) + " is not one of none, fp8, int8, int4");
          }
        } else if (key == "rope") {
          if (!parse_number(val, c.fused_rope_theta) || !(c.fused_rope_theta >= 0) ||
              !std::isfinite(c.fused_rope_theta)) {
            return bad(spec, "rope=" + std::string(val) + " is not a RoPE base >= 0");
          }
        } else if (key == "window") {
          if (!parse_number(val, c.fused_window) || c.fused_window > 65536) {
            return bad(spec, "window=" + std::string(val) + " is not in [0, 65536]");
          }
        } else {
          return bad(spec, "unknown parameter '" + std::string(key) + "'");
        }
      } else if (p[0] == 'b') {
        if (!parse_number(p.substr(1), c.fused_block_tokens) || c.fused_block_tokens == 0 ||
            c.fused_block_tokens > 4096) {
          return bad(spec, quoted(p) + " is not a block size bN with N in [1, 4096]");
        }
      } else if (!parse_number(p, c.fused_threshold) || !(c.fused_threshold >= -1.0f) ||
                 !(c.fused_threshold <= 1.0f)) {
        return bad(spec, quoted(p) + " is not a similarity threshold in [-1, 1]");
      }
    }
    return c;
  }
  return bad(spec, "unknown codec '" + std::string(name) + "' (raw, zstd, fp8, int8, int4, fused)");
}

std::string CodecConfig::to_string() const {
  switch (id) {
    case CodecId::kRaw:
      return "raw";
    case CodecId::kFp8:
      return fp8_format == Fp8Format::kE4M3 ? "fp8:e4m3" : "fp8";
    case CodecId::kInt8:
      return "int8:k" + std::to_string(int8_key_group);
    case CodecId::kZstd:
      return "zstd:" + std::to_string(zstd_level) + ":" +
             (planes == PlaneMode::kBytes  ? "bytes"
              : planes == PlaneMode::kBits ? "bits"
                                           : "none");
    case CodecId::kInt4:
      return "int4:g" + std::to_string(int4_group);
    case CodecId::kFused:
      return "fused:" + format_float(fused_threshold) + ":b" + std::to_string(fused_block_tokens) +
             ":rep=" + std::string(block_format_name(fused_rep)) +
             ":res=" + std::string(block_format_name(fused_residual)) +
             ":rope=" + format_float(fused_rope_theta) + ":window=" + std::to_string(fused_window);
  }
  return "?";
}

Status ChunkCodec::encode_batch(const Layout& layout, std::span<const ChunkInput> chunks,
                                std::span<EncodeBuffer> outs) {
  if (chunks.size() != outs.size()) {
    return Status::InvalidArgument("encode_batch: " + std::to_string(chunks.size()) +
                                   " chunks but " + std::to_string(outs.size()) + " outputs");
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    TIERKV_RETURN_IF_ERROR(encode(layout, chunks[i].bytes, outs[i]));
  }
  return Status::Ok();
}

Status ChunkCodec::release(std::span<const std::byte> /*encoded*/) { return Status::Ok(); }
Status ChunkCodec::retain(std::span<const std::byte> /*encoded*/) { return Status::Ok(); }

Result<std::unique_ptr<ChunkCodec>> make_codec(const CodecConfig& config,
                                               RepresentativeStore* reps) {
  switch (config.id) {
    case CodecId::kRaw:
      return ci::make_raw_codec(config);
    case CodecId::kZstd:
      return ci::make_zstd_codec(config);
    case CodecId::kFp8:
    case CodecId::kInt8:
    case CodecId::kInt4:
      return ci::make_quant_codec(config);
    case CodecId::kFused:
      return ci::make_fused_codec(config, reps);
  }
  return Status::InvalidArgument("codec id " + std::to_string(static_cast<int>(config.id)) +
                                 " is unknown");
}

Result<std::unique_ptr<ChunkCodec>> make_codec(std::string_view spec, RepresentativeStore* reps) {
  auto config = CodecConfig::parse(spec);
  if (!config.ok()) return config.status();
  return make_codec(*config, reps);
}

Result<ChunkCodec*> ChunkDecoder::codec_for(std::span<const std::byte> encoded) {
  auto info = inspect_chunk(encoded);
  if (!info.ok()) return info.status();
  auto& slot = codecs_[static_cast<size_t>(info->codec)];
  if (!slot) {
    // Decoding reads every parameter from the chunk's header; the config only picks the class.
    CodecConfig config;
    config.id = info->codec;
    auto codec = make_codec(config, reps_);
    if (!codec.ok()) return codec.status();
    slot = std::move(codec).value();
  }
  return slot.get();
}

Status ChunkDecoder::decode(std::span<const std::byte> encoded, std::span<std::byte> out) {
  auto codec = codec_for(encoded);
  if (!codec.ok()) return codec.status();
  return (*codec)->decode(encoded, out);
}

Status ChunkDecoder::release(std::span<const std::byte> encoded) {
  auto codec = codec_for(encoded);
  if (!codec.ok()) return codec.status();
  return (*codec)->release(encoded);
}

Status ChunkDecoder::retain(std::span<const std::byte> encoded) {
  auto codec = codec_for(encoded);
  if (!codec.ok()) return codec.status();
  return (*codec)->retain(encoded);
}

CodecRegistry::CodecRegistry(RepresentativeStore* reps) : reps_(reps) {}

Status CodecRegistry::set_default(std::string_view spec) {
  auto config = CodecConfig::parse(spec);
  if (!config.ok()) return config.status();
  if (config->id == CodecId::kFused && reps_ == nullptr) {
    return Status::InvalidArgument("codec '" + std::string(spec) +
                                   "': fused needs a representative store");
  }
  std::lock_guard lock(mu_);
  default_ = *config;
  return Status::Ok();
}

CodecConfig CodecRegistry::default_config() const {
  std::lock_guard lock(mu_);
  return default_;
}

Result<std::unique_ptr<ChunkCodec>> CodecRegistry::make_encoder() const {
  return make_codec(default_config(), reps_);
}

}  // namespace tierkv::storage
