#include "tierkv/kernels/quantize_cuda.h"

#include <cuda_runtime.h>

#include <string>

#include "quantize_cuda_launch.h"
#include "tierkv/kernels/half.h"

namespace tierkv::kernels::cuda {
namespace {

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

const char* scheme_name(QuantScheme s) {
  switch (s) {
    case QuantScheme::kFp8E4M3:
      return "fp8";
    case QuantScheme::kFp8Auto:
      return "fp8 (a format per row)";
    case QuantScheme::kInt8:
      return "int8";
    case QuantScheme::kInt4Key:
      return "int4 (key)";
    case QuantScheme::kInt4Value:
      return "int4 (value)";
    case QuantScheme::kInt8Key:
      return "int8 (key)";
  }
  return "?";
}

uint64_t metadata_groups(const QuantSpec& spec, const SlabShape& shape) {
  const uint64_t meta = quant_sizes(spec, shape).metadata;
  switch (spec.scheme) {
    case QuantScheme::kFp8E4M3:
      return meta;
    case QuantScheme::kFp8Auto:
      return meta / 2;
    case QuantScheme::kInt8:
      return meta / 4;
    default:
      return meta / 8;
  }
}

// Validates a batch and fills the launch parameters (all but the pointers).
Status prepare(const QuantSpec& spec, const SlabShape& shape, DType dtype, const SlabBatch& batch,
               const void* floats, const void* encoded, detail::QuantParams* p) {
  TIERKV_RETURN_IF_ERROR(validate_quant(spec, shape));
  if (!is_float_kv_dtype(dtype)) {
    return Status::InvalidArgument("dtype " + std::string(dtype_name(dtype)) +
                                   " is not a float KV dtype: only fp16, bf16 and fp32");
  }
  if (floats == nullptr || encoded == nullptr) {
    return Status::InvalidArgument(floats == nullptr ? "floats is null" : "encoded is null");
  }
  if (batch.count == 0 || batch.count > 65535) {
    return Status::InvalidArgument("batch count " + std::to_string(batch.count) +
                                   " is out of range [1, 65535]");
  }
  const uint64_t n = shape.elements();
  const uint64_t rows = uint64_t{shape.tokens} * shape.heads;
  // Elements are indexed in 32 bits, and fp8/int8 statistics run a warp per row.
  if (n >= (uint64_t{1} << 31) || rows >= (uint64_t{1} << 26)) {
    return Status::InvalidArgument("slab of " + std::to_string(n) +
                                   " elements is too large for one launch (at most 2^31 - 1 "
                                   "elements and 2^26 - 1 rows)");
  }
  const uint64_t elem = dtype_bytes(dtype);
  const uint64_t float_bytes = n * elem;
  const uint64_t enc_bytes = quant_sizes(spec, shape).total();
  const uint64_t float_stride = batch.float_stride == 0 ? float_bytes : batch.float_stride;
  const uint64_t enc_stride = batch.encoded_stride == 0 ? enc_bytes : batch.encoded_stride;
  if (float_stride < float_bytes) {
    return Status::InvalidArgument("float_stride " + std::to_string(float_stride) +
                                   " is less than a slab's " + std::to_string(float_bytes) +
                                   " bytes");
  }
  if (enc_stride < enc_bytes) {
    return Status::InvalidArgument("encoded_stride " + std::to_string(enc_stride) +
                                   " is less than an encoded slab's " + std::to_string(enc_bytes) +
                                   " bytes");
  }
  if (reinterpret_cast<uintptr_t>(floats) % elem != 0 || float_stride % elem != 0) {
    return Status::InvalidArgument("the float side (address and stride) must be aligned to " +
                                   std::to_string(elem) + " bytes");
  }
  p->scheme = static_cast<uint32_t>(spec.scheme);
  p->dtype = static_cast<uint32_t>(dtype);
  p->tokens = shape.tokens;
  p->heads = shape.heads;
  p->head_dim = shape.head_dim;
  p->n = static_cast<uint32_t>(n);
  p->rows = static_cast<uint32_t>(rows);
  p->channels = shape.heads * shape.head_dim;
  p->groups = static_cast<uint32_t>(metadata_groups(spec, shape));
  const bool grouped = spec.scheme == QuantScheme::kInt4Key ||
                       spec.scheme == QuantScheme::kInt4Value ||
                       spec.scheme == QuantScheme::kInt8Key;
  // group_size means something (and is >= 1, validate_quant says) for the grouped schemes only.
  const uint32_t group = grouped ? spec.group_size : 1;
  p->group = group;
  p->groups_per_row = static_cast<uint32_t>(ceil_div(shape.head_dim, group));
  p->min_offset = 4 * uint64_t{p->groups};
  p->payload_offset = quant_sizes(spec, shape).metadata;
  p->div_row = FastDivmod(shape.head_dim);
  p->div_channels = FastDivmod(p->channels);
  p->div_group = FastDivmod(group);
  switch (spec.scheme) {
    case QuantScheme::kInt4Key:
    case QuantScheme::kInt8Key:
      p->uniform = p->channels % 8 == 0;
      break;
    case QuantScheme::kInt4Value:
      p->uniform = shape.head_dim % 8 == 0 && group % 8 == 0;
      break;
    default:
      p->uniform = shape.head_dim % 8 == 0;
      break;
  }
  p->float_stride = float_stride;
  p->enc_stride = enc_stride;
  p->count = batch.count;
  return Status::Ok();
}

Status launch_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Status::Internal(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                          cudaGetErrorString(e) + ")");
}

}  // namespace

uint64_t quantize_scratch_floats(const QuantSpec& spec, const SlabShape& shape, uint32_t count) {
  if (spec.scheme == QuantScheme::kFp8E4M3) return 0;
  return metadata_groups(spec, shape) * count;
}

Status quantize_slabs(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                      const std::byte* floats, std::byte* encoded, const SlabBatch& batch,
                      float* scratch, Stream stream) {
  detail::QuantParams p;
  TIERKV_RETURN_IF_ERROR(prepare(spec, shape, dtype, batch, floats, encoded, &p));
  if (scratch == nullptr && quantize_scratch_floats(spec, shape, batch.count) > 0) {
    return Status::InvalidArgument(
        "scratch is null; " + std::string(scheme_name(spec.scheme)) + " needs " +
        std::to_string(quantize_scratch_floats(spec, shape, batch.count)) + " floats");
  }
  p.floats = const_cast<std::byte*>(floats);  // read only by the quantize kernels
  p.encoded = encoded;
  p.scratch = scratch;
  return launch_status(detail::launch_quantize(p, reinterpret_cast<cudaStream_t>(stream)),
                       "quantize launch");
}

Status dequantize_slabs(const QuantSpec& spec, const SlabShape& shape, const std::byte* encoded,
                        DType dtype, std::byte* floats, const SlabBatch& batch, Stream stream) {
  detail::QuantParams p;
  TIERKV_RETURN_IF_ERROR(prepare(spec, shape, dtype, batch, floats, encoded, &p));
  p.floats = floats;
  p.encoded = const_cast<std::byte*>(encoded);  // read only by the dequantize kernel
  return launch_status(detail::launch_dequantize(p, reinterpret_cast<cudaStream_t>(stream)),
                       "dequantize launch");
}

}  // namespace tierkv::kernels::cuda
