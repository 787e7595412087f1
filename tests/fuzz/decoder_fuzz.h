// A libFuzzer-style target for one chunk decoder (LLVMFuzzerTestOneInput), shared by the
// fuzz_decode_<codec>.cc files. Each input is decoded twice: as it is (the header and payload
// checksums must reject almost every mutation) and with its checksums recomputed, so the fuzzer
// reaches the codec's own parsing of parameters and payload. Decoding must return a Status —
// never crash, never read or write out of bounds (the ASan/UBSan build checks).
//
// Seeds: valid encodings of small KV-like chunks (fuzz_seeds()); the fused target's seeds refer
// to representatives in a store that lives for the whole run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "tierkv/kernels/half.h"
#include "tierkv/storage/codec.h"
#include "tierkv/storage/representative_store.h"

namespace tierkv::fuzz {

using Bytes = std::vector<uint8_t>;

// Largest logical chunk a fuzz input may claim; bigger claims are decoded no further than the
// header check (inspect_chunk), which is what a tier does with a slot of bounded size.
inline constexpr uint64_t kMaxLogical = 8u << 20;

struct DecoderFuzz {
  storage::RepresentativeStore reps;
  std::unique_ptr<storage::ChunkCodec> codec;
  std::vector<Bytes> seeds;
};

inline void recompute_checksums(Bytes& b) {
  if (b.size() < storage::kChunkHeaderBytes) return;
  const uint64_t payload =
      XXH3_64bits(b.data() + storage::kChunkHeaderBytes, b.size() - storage::kChunkHeaderBytes);
  std::memcpy(b.data() + 64, &payload, 8);
  const uint64_t header = XXH3_64bits(b.data(), 72);
  std::memcpy(b.data() + 72, &header, 8);
}

inline std::vector<std::byte> kv_chunk(const Layout& layout, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> v(layout.chunk_bytes() / dtype_bytes(layout.dtype));
  for (auto& x : v) x = n(rng) * ((rng() % 8 == 0) ? 5.0f : 1.0f);
  std::vector<std::byte> out(layout.chunk_bytes());
  kernels::convert_from_f32(layout.dtype, v.data(), v.size(), out.data());
  return out;
}

// The target's state, made once: the codec under test and its seed encodings.
inline DecoderFuzz& state(const char* spec) {
  static DecoderFuzz* s = [spec] {
    auto* f = new DecoderFuzz;
    f->codec = std::move(storage::make_codec(spec, &f->reps)).value();
    for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
      Layout layout;
      layout.num_layers = 2;
      layout.num_kv_heads = 2;
      layout.head_dim = 16;
      layout.dtype = dtype;
      layout.chunk_tokens = 16;
      // Two similar chunks and a copy, committed together, so fused seeds hold references.
      const auto a = kv_chunk(layout, 1);
      const auto b = kv_chunk(layout, 2);
      const storage::ChunkInput in[] = {{a, 0}, {b, 16}, {a, 32}};
      storage::EncodeBuffer out[3];
      if (!f->codec->encode_batch(layout, in, out).ok()) continue;
      for (const auto& o : out) {
        const auto bytes = o.bytes();
        f->seeds.emplace_back(reinterpret_cast<const uint8_t*>(bytes.data()),
                              reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size());
      }
    }
    // One chunk large enough for the formats only big chunks use (zstd's raw planes and nibble
    // pairs): 4 layers x 4 heads x 64 x 32 bf16, its low bytes random, its high bytes few.
    Layout big;
    big.num_layers = 4;
    big.num_kv_heads = 4;
    big.head_dim = 64;
    big.dtype = DType::kBFloat16;
    big.chunk_tokens = 32;
    std::vector<std::byte> chunk(big.chunk_bytes());
    std::mt19937 rng(7);
    for (size_t i = 0; i < chunk.size(); i += 2) {
      chunk[i] = static_cast<std::byte>(rng());
      chunk[i + 1] =
          static_cast<std::byte>(rng() % 200 == 0 ? 0x90 + rng() % 16 : 0x38 + rng() % 8);
    }
    storage::EncodeBuffer out;
    if (f->codec->encode(big, chunk, out).ok()) {
      const auto bytes = out.bytes();
      f->seeds.emplace_back(reinterpret_cast<const uint8_t*>(bytes.data()),
                            reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size());
    }
    return f;
  }();
  return *s;
}

inline void decode_one(DecoderFuzz& f, const uint8_t* data, size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  auto info = storage::inspect_chunk(in);
  if (!info.ok() || info->logical_bytes > kMaxLogical) return;
  std::vector<std::byte> out(info->logical_bytes);
  (void)f.codec->decode(in, out);
  storage::ChunkDecoder decoder(&f.reps);
  (void)decoder.decode(in, out);
}

inline int test_one_input(const char* spec, const uint8_t* data, size_t size) {
  DecoderFuzz& f = state(spec);
  // As it is: checksums reject it unless it is intact.
  {
    const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
    std::vector<std::byte> out(4096);
    (void)f.codec->decode(in, out);
  }
  decode_one(f, data, size);
  Bytes fixed(data, data + size);
  recompute_checksums(fixed);
  decode_one(f, fixed.data(), fixed.size());
  return 0;
}

}  // namespace tierkv::fuzz

// Seeds for the deterministic driver (fuzz_driver.cc).
std::vector<std::vector<uint8_t>> tierkv_fuzz_seeds();

#define TIERKV_DECODER_FUZZ_TARGET(spec)                                    \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { \
    return ::tierkv::fuzz::test_one_input(spec, data, size);                \
  }                                                                         \
  std::vector<std::vector<uint8_t>> tierkv_fuzz_seeds() {                   \
    return ::tierkv::fuzz::state(spec).seeds;                               \
  }
