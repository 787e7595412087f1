// Private: the factories of each codec (codec_registry.cc dispatches on CodecConfig::id).
#pragma once

#include <memory>

#include "chunk_format.h"
#include "tierkv/storage/codec.h"

namespace tierkv::storage::codec_internal {

std::unique_ptr<ChunkCodec> make_raw_codec(const CodecConfig& config);
std::unique_ptr<ChunkCodec> make_zstd_codec(const CodecConfig& config);
std::unique_ptr<ChunkCodec> make_quant_codec(const CodecConfig& config);  // fp8, int8, int4
Result<std::unique_ptr<ChunkCodec>> make_fused_codec(const CodecConfig& config,
                                                     RepresentativeStore* reps);

}  // namespace tierkv::storage::codec_internal
