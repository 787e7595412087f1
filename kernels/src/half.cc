#include "tierkv/kernels/half.h"

namespace tierkv::kernels {

void convert_to_f32(DType dtype, const std::byte* in, size_t n, float* out) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(out, in, n * 4);
      return;
    case DType::kFloat16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = fp16_to_f32(h);
      }
      return;
    case DType::kBFloat16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    default:
      return;
  }
}

void convert_from_f32(DType dtype, const float* in, size_t n, std::byte* out) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(out, in, n * 4);
      return;
    case DType::kFloat16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_fp16(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case DType::kBFloat16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    default:
      return;
  }
}

}  // namespace tierkv::kernels
