// Private helpers shared by the codecs: the encoded-chunk header (codec.h documents its layout),
// little-endian field access, and input checks.
#pragma once

#include <array>
#include <cstring>
#include <span>

#include "tierkv/storage/codec.h"

namespace tierkv::storage::codec_internal {

using Params = std::array<std::byte, 16>;

template <typename T>
inline T load_le(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
inline void store_le(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

// Fills the header in out[0, 80) for the payload already written at out[80, 80 + payload_bytes)
// (out must be exactly that long), checksums included.
void write_header(std::span<std::byte> out, CodecId codec, const Layout& layout,
                  const Params& params);

// Checks that `layout` is valid and `chunk` is exactly its chunk size; if `need_float`, that its
// dtype is fp16, bf16 or fp32.
Status check_encode_input(const Layout& layout, std::span<const std::byte> chunk, bool need_float);

// verify_chunk() plus: the codec is `expected` and `out` is exactly the logical size.
Result<EncodedChunkInfo> check_decode_input(std::span<const std::byte> encoded, CodecId expected,
                                            std::span<std::byte> out);

}  // namespace tierkv::storage::codec_internal
