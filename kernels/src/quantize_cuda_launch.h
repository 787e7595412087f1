// Private: the launch parameters the host side of quantize_cuda (quantize_cuda.cc) hands the
// kernels (quantize_cuda_kernels.cu), validated before they get here. C++17: nvcc compiles it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "fast_divmod.h"

namespace tierkv::kernels::cuda::detail {

// Scheme and float type as plain numbers (the values of QuantScheme and DType).
inline constexpr uint32_t kSchemeFp8 = 1;
inline constexpr uint32_t kSchemeInt8 = 2;
inline constexpr uint32_t kSchemeInt4Key = 3;
inline constexpr uint32_t kSchemeInt4Value = 4;
inline constexpr uint32_t kSchemeInt8Key = 5;
inline constexpr uint32_t kSchemeFp8Auto = 6;
inline constexpr uint32_t kDtypeFp16 = 1;
inline constexpr uint32_t kDtypeBf16 = 2;
inline constexpr uint32_t kDtypeFp32 = 3;

struct QuantParams {
  uint32_t scheme = 0;
  uint32_t dtype = 0;  // of the float side (quantize input, dequantize output)
  uint32_t tokens = 0;
  uint32_t heads = 0;
  uint32_t head_dim = 0;
  uint32_t group = 1;           // int4 / int8 key group size
  uint32_t n = 0;               // elements per slab (< 2^31)
  uint32_t rows = 0;            // tokens * heads
  uint32_t channels = 0;        // heads * head_dim
  uint32_t groups = 0;          // metadata groups per slab (rows for fp8 and int8)
  uint32_t groups_per_row = 0;  // int4 value: ceil(head_dim / group)
  uint64_t min_offset = 0;      // int4, int8 key: where the mins start in an encoded slab
  uint64_t payload_offset = 0;  // where the payload starts in an encoded slab
  FastDivmod div_row;           // by head_dim: element -> row
  FastDivmod div_channels;      // by heads * head_dim: element -> token (int4 key)
  FastDivmod div_group;         // by group
  // Slab i: float side at floats + i * float_stride, encoded side at encoded + i * enc_stride.
  std::byte* floats = nullptr;
  uint64_t float_stride = 0;
  std::byte* encoded = nullptr;
  uint64_t enc_stride = 0;
  uint32_t count = 0;
  float* scratch = nullptr;  // quantize: per slab `groups` inverse steps (not fp8 e4m3)
  // Every run of 8 elements starting at a multiple of 8 lies in one row and one group (fp8,
  // int8, int4 value), or in one token (int4 key, int8 key): metadata once per 8 elements.
  bool uniform = false;
};

cudaError_t launch_quantize(const QuantParams& p, cudaStream_t stream);
cudaError_t launch_dequantize(const QuantParams& p, cudaStream_t stream);

}  // namespace tierkv::kernels::cuda::detail
