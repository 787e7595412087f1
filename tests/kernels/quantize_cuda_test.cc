// The CUDA quantize/dequantize kernels (tierkv/kernels/quantize_cuda.h) against the CPU reference
// (quantize.h), on batches of slabs at padded strides and misaligned encoded addresses:
//   - quantize: the encoded bytes equal the reference's, byte for byte, and the padding between
//     slabs keeps its poison (each run twice under two poisons, so an unwritten byte fails);
//   - dequantize: every output equals the reference's bit for bit, or both are NaN.
// Inputs: typical KV values (Gaussian, with all-zero and all-NaN rows), and raw random bit
// patterns (NaN, infinities, subnormals, signed zeros, extremes) for the float side, and random
// bytes for the encoded side. Skips, saying why, without a GPU.
#include "tierkv/kernels/quantize_cuda.h"

#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tierkv/kernels/half.h"
#include "tierkv/kernels/quantize.h"

namespace tierkv::kernels::cuda {
namespace {

using ::testing::HasSubstr;

#define ASSERT_CUDA(expr)                                                                    \
  do {                                                                                       \
    const cudaError_t cuda_error_ = (expr);                                                  \
    ASSERT_EQ(cuda_error_, cudaSuccess) << #expr << ": " << cudaGetErrorString(cuda_error_); \
  } while (0)

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&p_, bytes == 0 ? 1 : bytes) != cudaSuccess) p_ = nullptr;
  }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  [[nodiscard]] std::byte* data() const { return static_cast<std::byte*>(p_); }
  [[nodiscard]] size_t size() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

enum class Values { kTypical, kRawBits };

struct QuantCase {
  QuantScheme scheme;
  uint32_t group;
  SlabShape shape;
  DType dtype;
  uint32_t count;
  uint64_t float_pad;   // bytes between slabs' float sides beyond their size
  uint64_t enc_pad;     // bytes between encoded slabs beyond their size
  uint32_t enc_offset;  // the encoded buffer starts this far past an aligned address
};

std::string case_string(const QuantCase& c) {
  std::ostringstream o;
  const char* scheme[] = {"", "fp8", "int8", "int4k", "int4v", "int8k", "fp8auto"};
  o << scheme[static_cast<int>(c.scheme)];
  if (c.scheme == QuantScheme::kInt4Key || c.scheme == QuantScheme::kInt4Value ||
      c.scheme == QuantScheme::kInt8Key) {
    o << "g" << c.group;
  }
  o << "_" << dtype_name(c.dtype) << "_" << c.shape.tokens << "x" << c.shape.heads << "x"
    << c.shape.head_dim << "_n" << c.count << "_fpad" << c.float_pad << "_epad" << c.enc_pad
    << "_off" << c.enc_offset;
  return o.str();
}
void PrintTo(const QuantCase& c, std::ostream* os) { *os << case_string(c); }

void store_value(DType dtype, std::byte* base, size_t i, float v) {
  store_from_f32(dtype, base, i, v);
}

// Fills slab-sized regions of `host` (count slabs at `stride`) with float-side values.
void fill_floats(const QuantCase& c, Values kind, uint64_t stride, std::vector<std::byte>& host,
                 std::mt19937_64& rng) {
  const uint64_t n = c.shape.elements();
  const uint32_t eb = dtype_bytes(c.dtype);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (uint32_t s = 0; s < c.count; ++s) {
    std::byte* base = host.data() + s * stride;
    if (kind == Values::kRawBits) {
      for (uint64_t i = 0; i < n * eb; ++i) base[i] = static_cast<std::byte>(rng() & 0xFF);
      continue;
    }
    // Per row a scale spanning many orders of magnitude, as real K and V have.
    const float row_scale = std::ldexp(1.0f, static_cast<int>(rng() % 24) - 12);
    for (uint64_t i = 0; i < n; ++i) store_value(c.dtype, base, i, normal(rng) * row_scale);
    // An all-zero row and an all-NaN row (the first two of the slab, if it has two).
    const uint32_t d = c.shape.head_dim;
    for (uint32_t j = 0; j < d && j < n; ++j) store_value(c.dtype, base, j, 0.0f);
    if (n >= 2 * uint64_t{d}) {
      for (uint32_t j = 0; j < d; ++j) store_value(c.dtype, base, d + j, std::nanf(""));
    }
  }
}

// The output of `dtype` at index i, as bits, and whether it is a NaN.
uint32_t bits_at(DType dtype, const std::byte* base, size_t i, bool* nan) {
  uint32_t b = 0;
  std::memcpy(&b, base + i * dtype_bytes(dtype), dtype_bytes(dtype));
  *nan = std::isnan(load_as_f32(dtype, base, i));
  return b;
}

class QuantizeCudaTest : public ::testing::TestWithParam<QuantCase> {
 protected:
  void SetUp() override {
    const Status s = device_available();
    if (!s.ok()) GTEST_SKIP() << "no GPU: " << s.message();
  }
};

TEST_P(QuantizeCudaTest, QuantizeMatchesCpuByteForByte) {
  const QuantCase c = GetParam();
  const QuantSpec spec{c.scheme, c.group};
  const uint64_t float_bytes = c.shape.elements() * dtype_bytes(c.dtype);
  const uint64_t enc_bytes = quant_sizes(spec, c.shape).total();
  const uint64_t fstride = float_bytes + c.float_pad;
  const uint64_t estride = enc_bytes + c.enc_pad;
  const SlabBatch batch{c.count, c.float_pad == 0 ? 0 : fstride, c.enc_pad == 0 ? 0 : estride};
  DeviceBuffer floats(fstride * c.count);
  DeviceBuffer encoded(c.enc_offset + estride * c.count);
  DeviceBuffer scratch(sizeof(float) * quantize_scratch_floats(spec, c.shape, c.count));
  ASSERT_NE(floats.data(), nullptr);
  ASSERT_NE(encoded.data(), nullptr);
  std::mt19937_64 rng(std::hash<std::string>{}(case_string(c)));

  for (Values kind : {Values::kTypical, Values::kRawBits}) {
    std::vector<std::byte> in(floats.size());
    fill_floats(c, kind, fstride, in, rng);
    ASSERT_CUDA(cudaMemcpy(floats.data(), in.data(), in.size(), cudaMemcpyHostToDevice));
    for (std::byte poison : {std::byte{0xCD}, std::byte{0x3A}}) {
      ASSERT_CUDA(cudaMemset(encoded.data(), static_cast<int>(poison), encoded.size()));
      const Status s =
          quantize_slabs(spec, c.shape, c.dtype, floats.data(), encoded.data() + c.enc_offset,
                         batch, reinterpret_cast<float*>(scratch.data()), nullptr);
      ASSERT_TRUE(s.ok()) << s.to_string();
      ASSERT_CUDA(cudaDeviceSynchronize());
      std::vector<std::byte> got(encoded.size());
      ASSERT_CUDA(cudaMemcpy(got.data(), encoded.data(), got.size(), cudaMemcpyDeviceToHost));
      std::vector<std::byte> want(got.size(), poison);
      for (uint32_t i = 0; i < c.count; ++i) {
        const Status r = quantize_slab(
            spec, c.shape, c.dtype,
            std::span<const std::byte>(in.data() + i * fstride, float_bytes),
            std::span<std::byte>(want.data() + c.enc_offset + i * estride, enc_bytes));
        ASSERT_TRUE(r.ok()) << r.to_string();
      }
      const auto m = std::mismatch(got.begin(), got.end(), want.begin());
      ASSERT_TRUE(m.first == got.end())
          << (kind == Values::kTypical ? "typical" : "raw-bit") << " input: encoded byte "
          << (m.first - got.begin()) << " is 0x" << std::hex << static_cast<int>(*m.first)
          << ", the CPU reference's is 0x" << static_cast<int>(*m.second) << " (poison 0x"
          << static_cast<int>(poison) << ")";
    }
  }
}

TEST_P(QuantizeCudaTest, DequantizeMatchesCpu) {
  const QuantCase c = GetParam();
  const QuantSpec spec{c.scheme, c.group};
  const uint64_t n = c.shape.elements();
  const uint64_t float_bytes = n * dtype_bytes(c.dtype);
  const uint64_t enc_bytes = quant_sizes(spec, c.shape).total();
  const uint64_t fstride = float_bytes + c.float_pad;
  const uint64_t estride = enc_bytes + c.enc_pad;
  const SlabBatch batch{c.count, c.float_pad == 0 ? 0 : fstride, c.enc_pad == 0 ? 0 : estride};
  DeviceBuffer floats(fstride * c.count);
  DeviceBuffer encoded(c.enc_offset + estride * c.count);
  ASSERT_NE(floats.data(), nullptr);
  ASSERT_NE(encoded.data(), nullptr);
  std::mt19937_64 rng(std::hash<std::string>{}(case_string(c)) + 1);

  for (Values kind : {Values::kTypical, Values::kRawBits}) {
    // Encoded input: the CPU's encoding of typical values, or random bytes.
    std::vector<std::byte> enc(encoded.size(), std::byte{0});
    if (kind == Values::kTypical) {
      std::vector<std::byte> in(fstride * c.count);
      fill_floats(c, kind, fstride, in, rng);
      for (uint32_t i = 0; i < c.count; ++i) {
        ASSERT_TRUE(
            quantize_slab(spec, c.shape, c.dtype,
                          std::span<const std::byte>(in.data() + i * fstride, float_bytes),
                          std::span<std::byte>(enc.data() + c.enc_offset + i * estride, enc_bytes))
                .ok());
      }
    } else {
      for (std::byte& b : enc) b = static_cast<std::byte>(rng() & 0xFF);
    }
    ASSERT_CUDA(cudaMemcpy(encoded.data(), enc.data(), enc.size(), cudaMemcpyHostToDevice));
    for (std::byte poison : {std::byte{0xCD}, std::byte{0x3A}}) {
      ASSERT_CUDA(cudaMemset(floats.data(), static_cast<int>(poison), floats.size()));
      const Status s = dequantize_slabs(spec, c.shape, encoded.data() + c.enc_offset, c.dtype,
                                        floats.data(), batch, nullptr);
      ASSERT_TRUE(s.ok()) << s.to_string();
      ASSERT_CUDA(cudaDeviceSynchronize());
      std::vector<std::byte> got(floats.size());
      ASSERT_CUDA(cudaMemcpy(got.data(), floats.data(), got.size(), cudaMemcpyDeviceToHost));
      std::vector<std::byte> want(got.size(), poison);
      for (uint32_t i = 0; i < c.count; ++i) {
        ASSERT_TRUE(
            dequantize_slab(
                spec, c.shape,
                std::span<const std::byte>(enc.data() + c.enc_offset + i * estride, enc_bytes),
                c.dtype, std::span<std::byte>(want.data() + i * fstride, float_bytes))
                .ok());
      }
      uint64_t bad = 0;
      for (uint32_t i = 0; i < c.count; ++i) {
        for (uint64_t e = 0; e < n; ++e) {
          bool gn = false;
          bool wn = false;
          const uint32_t g = bits_at(c.dtype, got.data() + i * fstride, e, &gn);
          const uint32_t w = bits_at(c.dtype, want.data() + i * fstride, e, &wn);
          if ((g != w && !(gn && wn)) && ++bad <= 5) {
            ADD_FAILURE() << (kind == Values::kTypical ? "typical" : "random") << " encoding, slab "
                          << i << " element " << e << ": GPU bits 0x" << std::hex << g << ", CPU 0x"
                          << w;
          }
        }
        // Padding after the slab keeps the poison.
        for (uint64_t b = float_bytes; b < fstride; ++b) {
          ASSERT_EQ(got[i * fstride + b], poison) << "padding byte " << b << " of slab " << i;
        }
      }
      ASSERT_EQ(bad, 0u);
    }
  }
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(
    Cases, QuantizeCudaTest,
    ::testing::Values(
        // 8B-class slabs (256 tokens x 8 heads x 128), as a chunk's K or V of four layers.
        QuantCase{QuantScheme::kFp8E4M3, 0, {256, 8, 128}, DType::kBFloat16, 4, 0, 0, 0},
        QuantCase{QuantScheme::kInt8, 0, {256, 8, 128}, DType::kFloat16, 3, 0, 0, 0},
        QuantCase{QuantScheme::kInt4Key, 32, {256, 8, 128}, DType::kBFloat16, 2, 0, 0, 0},
        QuantCase{QuantScheme::kInt4Value, 32, {256, 8, 128}, DType::kBFloat16, 2, 0, 0, 0},
        QuantCase{QuantScheme::kInt8Key, 256, {256, 8, 128}, DType::kBFloat16, 4, 0, 0, 0},
        QuantCase{QuantScheme::kInt8Key, 256, {256, 3, 64}, DType::kFloat16, 3, 0, 0, 0},
        // Tokens not a multiple of the group, head_dim 64, padded strides.
        QuantCase{QuantScheme::kInt4Key, 32, {100, 2, 64}, DType::kFloat16, 3, 64, 5, 0},
        QuantCase{QuantScheme::kInt4Value, 48, {33, 4, 64}, DType::kFloat32, 2, 16, 3, 2},
        QuantCase{QuantScheme::kInt8Key, 32, {100, 2, 64}, DType::kBFloat16, 3, 64, 5, 0},
        // Odd everything: odd element counts (a trailing nibble), groups of 3, misaligned
        // encoded slabs.
        QuantCase{QuantScheme::kInt4Key, 3, {7, 3, 5}, DType::kFloat32, 3, 4, 1, 1},
        QuantCase{QuantScheme::kInt4Value, 3, {5, 1, 7}, DType::kBFloat16, 4, 2, 3, 3},
        QuantCase{QuantScheme::kInt8Key, 3, {7, 3, 5}, DType::kFloat32, 3, 4, 1, 1},
        QuantCase{QuantScheme::kInt8, 0, {7, 3, 5}, DType::kFloat16, 3, 2, 1, 1},
        QuantCase{QuantScheme::kFp8E4M3, 0, {9, 2, 5}, DType::kFloat16, 2, 6, 7, 3},
        QuantCase{QuantScheme::kFp8E4M3, 0, {1, 1, 1}, DType::kFloat32, 1, 0, 0, 0},
        // Rows longer than a warp's stride, misaligned int8 metadata.
        QuantCase{QuantScheme::kInt8, 0, {16, 8, 160}, DType::kBFloat16, 2, 0, 2, 1},
        QuantCase{QuantScheme::kFp8E4M3, 0, {64, 4, 256}, DType::kFloat32, 2, 0, 0, 0},
        // fp8 with a format per row: chunk-sized slabs, odd shapes, misaligned metadata, rows
        // longer than a warp's stride.
        QuantCase{QuantScheme::kFp8Auto, 0, {256, 8, 128}, DType::kBFloat16, 4, 0, 0, 0},
        QuantCase{QuantScheme::kFp8Auto, 0, {256, 3, 64}, DType::kFloat16, 3, 0, 0, 0},
        QuantCase{QuantScheme::kFp8Auto, 0, {9, 2, 5}, DType::kFloat16, 2, 6, 7, 3},
        QuantCase{QuantScheme::kFp8Auto, 0, {16, 8, 160}, DType::kBFloat16, 2, 0, 2, 1},
        QuantCase{QuantScheme::kFp8Auto, 0, {64, 4, 256}, DType::kFloat32, 2, 0, 0, 0}),
    [](const ::testing::TestParamInfo<QuantCase>& info) { return case_string(info.param); });
// clang-format on

TEST(QuantizeCudaValidationTest, RejectsBadArguments) {
  if (!device_available().ok()) GTEST_SKIP() << "no GPU";
  DeviceBuffer buf(1 << 20);
  const SlabShape shape{16, 2, 8};
  const QuantSpec int8{QuantScheme::kInt8, 0};
  EXPECT_THAT(
      quantize_slabs(int8, shape, DType::kBFloat16, buf.data(), buf.data(), {}, nullptr, nullptr)
          .message(),
      HasSubstr("scratch is null"));
  EXPECT_THAT(
      dequantize_slabs(int8, shape, buf.data(), DType::kInt8, buf.data(), {}, nullptr).message(),
      HasSubstr("not a float KV dtype"));
  EXPECT_THAT(
      dequantize_slabs(int8, shape, buf.data(), DType::kBFloat16, buf.data() + 1, {}, nullptr)
          .message(),
      HasSubstr("aligned to 2 bytes"));
  EXPECT_THAT(dequantize_slabs(int8, shape, buf.data(), DType::kBFloat16, buf.data(),
                               SlabBatch{2, 10, 0}, nullptr)
                  .message(),
              HasSubstr("float_stride 10 is less than"));
  EXPECT_THAT(dequantize_slabs(int8, shape, buf.data(), DType::kBFloat16, buf.data(),
                               SlabBatch{0, 0, 0}, nullptr)
                  .message(),
              HasSubstr("batch count 0"));
  EXPECT_THAT(dequantize_slabs({QuantScheme::kInt4Key, 0}, shape, buf.data(), DType::kBFloat16,
                               buf.data(), {}, nullptr)
                  .message(),
              HasSubstr("group_size"));
}

// The host-side checks run before any CUDA call, so they are exercised on every machine: a
// valid call on a machine without a GPU fails at the launch with a Status, never a crash (an
// fp8 or int8 spec's unused group_size of 0 once divided by zero here).
TEST(QuantizeCudaValidationTest, HostChecksWithoutGpu) {
  if (device_available().ok()) GTEST_SKIP() << "a GPU is present: the tests above cover it";
  alignas(16) static std::byte fake[64];
  for (QuantScheme scheme : {QuantScheme::kFp8E4M3, QuantScheme::kInt8}) {
    const QuantSpec spec{scheme, 0};
    const Status d = dequantize_slabs(spec, {4, 2, 8}, fake, DType::kBFloat16, fake, {}, nullptr);
    EXPECT_FALSE(d.ok());
    EXPECT_THAT(d.message(), HasSubstr("dequantize launch"));
  }
  EXPECT_THAT(dequantize_slabs({QuantScheme::kInt8, 0}, {4, 2, 8}, fake, DType::kFloat32, fake + 2,
                               {}, nullptr)
                  .message(),
              HasSubstr("aligned to 4 bytes"));
}

}  // namespace
}  // namespace tierkv::kernels::cuda
