// CUDA quantize/dequantize of KV slabs: the GPU counterparts of quantize_slab and dequantize_slab
// (quantize.h), same schemes, same byte layouts.
//
// Quantize produces encoded slabs byte-identical to the CPU reference. Dequantize produces the
// reference's output bit for bit wherever it is not a NaN; where the reference gives a NaN (only
// from NaN inputs or corrupt metadata), so does the GPU, possibly with another sign or payload
// (GPUs produce a canonical NaN where x86 propagates the operand's).
//
// One launch (two for quantize) handles a batch of slabs of one shape at regular strides, e.g.
// the K (or V) slabs of every layer of a chunk, so the launch count does not grow with layers.
// The float side of each slab must be aligned to its element size; the encoded side may have any
// alignment (vector accesses are used where the addresses allow).
//
// Only built with CUDA (target tierkv::kernels_cuda). Thread safety: pure functions of their
// arguments; launches on different streams writing the same bytes race.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tierkv/kernels/kv_cuda.h"
#include "tierkv/kernels/quantize.h"
#include "tierkv/layout.h"
#include "tierkv/status.h"

namespace tierkv::kernels::cuda {

// `count` slabs: slab i's float side at floats + i * float_stride and its encoded form at
// encoded + i * encoded_stride (device memory). A stride of 0 means packed: the slab's size
// (shape.elements() x the dtype's size, or quant_sizes(spec, shape).total()).
struct SlabBatch {
  uint32_t count = 1;
  uint64_t float_stride = 0;
  uint64_t encoded_stride = 0;
};

// Device scratch (floats) quantize_slabs needs for a batch: one per metadata group per slab
// (0 for fp8).
uint64_t quantize_scratch_floats(const QuantSpec& spec, const SlabShape& shape, uint32_t count);

// Quantizes `batch.count` slabs of `dtype` (fp16, bf16 or fp32) at `floats` into `encoded`, using
// `scratch` (quantize_scratch_floats(...) floats of device memory, or null when that is 0).
// Asynchronous on `stream`; arguments are validated before anything is launched.
Status quantize_slabs(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                      const std::byte* floats, std::byte* encoded, const SlabBatch& batch,
                      float* scratch, Stream stream);

// The inverse: decodes `batch.count` encoded slabs into elements of `dtype`. Any bytes decode to
// some values, never to an out-of-bounds access.
Status dequantize_slabs(const QuantSpec& spec, const SlabShape& shape, const std::byte* encoded,
                        DType dtype, std::byte* floats, const SlabBatch& batch, Stream stream);

}  // namespace tierkv::kernels::cuda
