#include "tierkv/kernels/flat_kv.h"

#include <cstring>
#include <string>

#include "kv_view_checks.h"

namespace tierkv::kernels {
namespace {

// a * b + c, or false on overflow.
bool mul_add(uint64_t a, uint64_t b, uint64_t c, uint64_t* out) {
  uint64_t p = 0;
  return !__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(p, c, out);
}

Status validate_call(const FlatKvView& cache, uint64_t first_token, uint32_t chunk_tokens,
                     size_t chunk_size, const char* chunk_name) {
  TIERKV_RETURN_IF_ERROR(cache.validate());
  TIERKV_RETURN_IF_ERROR(detail::check_chunk_tokens(chunk_tokens));
  if (first_token > cache.capacity_tokens || chunk_tokens > cache.capacity_tokens - first_token) {
    return Status::InvalidArgument("tokens [" + std::to_string(first_token) + ", " +
                                   std::to_string(first_token + chunk_tokens) +
                                   ") exceed the cache's capacity_tokens " +
                                   std::to_string(cache.capacity_tokens));
  }
  TIERKV_RETURN_IF_ERROR(detail::check_chunk_size(
      chunk_name, chunk_size, cache.chunk_bytes(chunk_tokens), chunk_tokens, cache.num_layers()));
  return Status::Ok();
}

// Calls copy(cache address, chunk offset, bytes) for every contiguous run: a whole token row when
// heads are packed, else one head of one token. Arguments must have passed validate_call().
template <typename CopyRun>
void for_each_run(const FlatKvView& cache, uint64_t first_token, uint32_t chunk_tokens,
                  CopyRun copy) {
  const uint64_t head_bytes = cache.head_bytes();
  const uint64_t token_stride = cache.token_stride_bytes();
  const uint64_t head_stride = cache.head_stride_bytes();
  const bool packed_heads = head_stride == head_bytes;
  uint64_t chunk_offset = 0;
  for (uint32_t layer = 0; layer < cache.num_layers(); ++layer) {
    for (std::byte* base : {cache.k_layers[layer], cache.v_layers[layer]}) {
      for (uint64_t t = first_token; t < first_token + chunk_tokens; ++t) {
        std::byte* row = base + t * token_stride;
        if (packed_heads) {
          copy(row, chunk_offset, cache.row_bytes());
          chunk_offset += cache.row_bytes();
          continue;
        }
        for (uint32_t h = 0; h < cache.num_kv_heads; ++h) {
          copy(row + h * head_stride, chunk_offset, head_bytes);
          chunk_offset += head_bytes;
        }
      }
    }
  }
}

}  // namespace

uint64_t FlatKvView::layer_bytes() const {
  // Only meaningful after validate(), which checks that this does not overflow.
  return (capacity_tokens - 1) * token_stride_bytes() +
         (uint64_t{num_kv_heads} - 1) * head_stride_bytes() + head_bytes();
}

Status FlatKvView::validate() const {
  TIERKV_RETURN_IF_ERROR(detail::check_layer_pointers("flat", k_layers, v_layers));
  if (capacity_tokens == 0) {
    return detail::out_of_range("capacity_tokens", capacity_tokens, UINT64_MAX);
  }
  TIERKV_RETURN_IF_ERROR(detail::check_row_shape(num_kv_heads, head_dim, elem_bytes));
  const uint64_t ts = token_stride_bytes();
  const uint64_t hs = head_stride_bytes();
  const uint64_t heads = num_kv_heads;
  // Token-major: heads inside a token. Head-major: tokens inside a head. Products saturate, so an
  // overflowing stride product simply fails the nesting test.
  auto sat_mul = [](uint64_t a, uint64_t b) {
    uint64_t p = 0;
    return __builtin_mul_overflow(a, b, &p) ? UINT64_MAX : p;
  };
  const bool token_major = hs >= head_bytes() && ts >= sat_mul(heads, hs);
  const bool head_major = ts >= head_bytes() && hs >= sat_mul(capacity_tokens, ts);
  if (!token_major && !head_major) {
    return Status::InvalidArgument("strides token_stride " + std::to_string(ts) +
                                   " and head_stride " + std::to_string(hs) + " overlap rows of " +
                                   std::to_string(head_bytes()) +
                                   " bytes: need head_stride >= " + std::to_string(head_bytes()) +
                                   " and token_stride >= num_kv_heads x head_stride, or " +
                                   "token_stride >= " + std::to_string(head_bytes()) +
                                   " and head_stride >= capacity_tokens x token_stride");
  }
  uint64_t extent = 0;
  if (!mul_add(capacity_tokens - 1, ts, head_bytes(), &extent) ||
      !mul_add(heads - 1, hs, extent, &extent)) {
    return Status::InvalidArgument("flat KV cache of " + std::to_string(capacity_tokens) +
                                   " tokens with token_stride " + std::to_string(ts) +
                                   " and head_stride " + std::to_string(hs) + " overflows 64 bits");
  }
  return Status::Ok();
}

Status gather_chunk_flat(const FlatKvView& cache, uint64_t first_token, uint32_t chunk_tokens,
                         std::span<std::byte> chunk_out) {
  TIERKV_RETURN_IF_ERROR(
      validate_call(cache, first_token, chunk_tokens, chunk_out.size(), "chunk_out"));
  std::byte* out = chunk_out.data();
  for_each_run(cache, first_token, chunk_tokens,
               [out](const std::byte* rows, uint64_t offset, uint64_t bytes) {
                 std::memcpy(out + offset, rows, bytes);
               });
  return Status::Ok();
}

Status scatter_chunk_flat(const FlatKvView& cache, uint64_t first_token, uint32_t chunk_tokens,
                          std::span<const std::byte> chunk_in) {
  TIERKV_RETURN_IF_ERROR(
      validate_call(cache, first_token, chunk_tokens, chunk_in.size(), "chunk_in"));
  const std::byte* in = chunk_in.data();
  for_each_run(cache, first_token, chunk_tokens,
               [in](std::byte* rows, uint64_t offset, uint64_t bytes) {
                 std::memcpy(rows, in + offset, bytes);
               });
  return Status::Ok();
}

}  // namespace tierkv::kernels
