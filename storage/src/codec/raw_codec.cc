// raw: the payload is the chunk's bytes as they are.
#include <cstring>

#include "codecs.h"

namespace tierkv::storage::codec_internal {

namespace {

class RawCodec final : public ChunkCodec {
 public:
  explicit RawCodec(const CodecConfig& config) : config_(config) {}
  const CodecConfig& config() const override { return config_; }

  Status encode(const Layout& layout, std::span<const std::byte> chunk,
                EncodeBuffer& out) override {
    TIERKV_RETURN_IF_ERROR(check_encode_input(layout, chunk, /*need_float=*/false));
    auto buf = out.resize(kChunkHeaderBytes + chunk.size());
    std::memcpy(buf.data() + kChunkHeaderBytes, chunk.data(), chunk.size());
    write_header(buf, CodecId::kRaw, layout, Params{});
    return Status::Ok();
  }

  Status decode(std::span<const std::byte> encoded, std::span<std::byte> out) override {
    auto info = check_decode_input(encoded, CodecId::kRaw, out);
    if (!info.ok()) return info.status();
    if (info->payload_bytes != info->logical_bytes) {
      return Status::InvalidArgument("raw chunk payload is " + std::to_string(info->payload_bytes) +
                                     " bytes, expected " + std::to_string(info->logical_bytes));
    }
    std::memcpy(out.data(), encoded.data() + kChunkHeaderBytes, out.size());
    return Status::Ok();
  }

 private:
  CodecConfig config_;
};

}  // namespace

std::unique_ptr<ChunkCodec> make_raw_codec(const CodecConfig& config) {
  return std::make_unique<RawCodec>(config);
}

}  // namespace tierkv::storage::codec_internal
